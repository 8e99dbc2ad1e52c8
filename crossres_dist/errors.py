"""The one base of every error the project refuses with in one line.

Entry points (train, evaluate, check_data, convert, export) catch CrossresError, print
``error: MESSAGE`` and exit 2; anything else is a bug and keeps its traceback. Each error also
keeps the built-in base it had (ValueError, RuntimeError, OSError), so code that caught those
still does. ``pipelines`` sits below this package and cannot import it: its DataError is the one
other class the entry points catch. This module imports nothing, so that every layer may.
"""

from __future__ import annotations


class CrossresError(Exception):
    """An input, setting or environment the run cannot use; the message says what to change."""


class ConfigError(CrossresError, ValueError):
    """A configuration value that cannot be used; the message says what to change."""


class SetupError(CrossresError, RuntimeError):
    """A problem found before the first step; the message names the file, key or value."""


class LaunchError(CrossresError, RuntimeError):
    """The launch environment is incomplete or the rendezvous cannot be reached."""
