"""crossres-dist: distributed cross-resolution training for low-resolution face recognition."""

__version__ = "0.1.0"
