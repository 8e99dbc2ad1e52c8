"""The benchmark protocols, by the name ``--protocol`` takes. One more protocol is one more
module here with a ``Protocol`` subclass, and one more line in PROTOCOLS."""

from .base import Protocol
from .folder import Folder
from .ijb import IJBB, IJBC
from .survface import SurvFace
from .tinyface import TinyFace

PROTOCOLS: dict[str, type[Protocol]] = {p.name: p for p in (Folder, IJBB, IJBC, TinyFace, SurvFace)}

__all__ = ["PROTOCOLS", "Protocol"]
