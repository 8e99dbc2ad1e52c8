"""The one rule several configuration sections share, below every package that owns a section
(data.settings, training.settings) so that none imports another for it."""

from __future__ import annotations


def first_not_probability(section, name: str, keys: tuple[str, ...]) -> str | None:
    """``name.key: value is not a probability in [0, 1]`` for the first of `keys` outside it."""
    for key in keys:
        value = getattr(section, key)
        if not 0.0 <= value <= 1.0:
            return f"{name}.{key}: {value} is not a probability in [0, 1]"
    return None
