"""``--help``'s list of settings: every section.key with its type, default and meaning, the
meaning read from the comment above the field in the module that owns its section (config.py
for ``run``, a package's settings.py for the others): the one place each setting is
documented."""

from __future__ import annotations

import ast
import inspect
import sys
import textwrap
import typing
from typing import Any, Literal

from crossres_dist.config import SECTIONS, Config, TeacherConfig, shipped_configs


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return "|".join(str(a) for a in typing.get_args(hint))
    if origin is list:
        return f"list[{typing.get_args(hint)[0].__name__}]"
    return getattr(hint, "__name__", str(hint))


def settings_help() -> list[tuple[str, str, Any, str]]:
    """(section.key, type, default, meaning) for every setting."""
    comments: dict[tuple[str, str], str] = {}
    for module in {cls.__module__ for cls in SECTIONS.values()}:
        source = inspect.getsource(sys.modules[module])
        lines = source.splitlines()
        for node in ast.parse(source).body:
            if not isinstance(node, ast.ClassDef):
                continue
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    above, i = [], item.lineno - 2
                    while i >= 0 and lines[i].strip().startswith("#"):
                        above.insert(0, lines[i].strip()[1:].strip())
                        i -= 1
                    comments[(node.name, item.target.id)] = " ".join(above)
    defaults = Config(
        teacher=TeacherConfig(checkpoint="(required for run.stage=crossres)")
    ).to_dict()
    rows = []
    for section, cls in SECTIONS.items():
        # A section whose key takes a registered name lists the registry's entries after the
        # comment (help_listings), so that no comment lists them by hand.
        listings = cls.help_listings() if hasattr(cls, "help_listings") else {}
        for key, hint in typing.get_type_hints(cls).items():
            meaning = comments.get((cls.__name__, key), "")
            if key in listings:
                meaning = f"{meaning} {listings[key]}".strip()
            rows.append((f"{section}.{key}", _type_name(hint), defaults[section][key], meaning))
    return rows


def format_settings_help() -> str:
    out = [
        f"shipped configs (--config NAME): {', '.join(shipped_configs())}",
        "",
        "settings (in the YAML file as section: {key: value}, or on the command line as",
        "section.key=value; the command line wins):",
    ]
    section = None
    for name, kind, default, meaning in settings_help():
        if name.split(".")[0] != section:
            section = name.split(".")[0]
            out.append("")
        out.append(f"  {name} ({kind}, default {default!r})")
        out += textwrap.wrap(meaning, 92, initial_indent="      ", subsequent_indent="      ")
    return "\n".join(out)
