"""Which inputs a result came from, so that a figure in the README cannot outlive its code.

A fingerprint hashes the contents of every file that can change a result (the package, the
pipelines, the configs it ran with, the requirements) and, for data, every file's name and size.
Generated README blocks carry it; tests/test_readme.py recomputes it and fails on a stale block.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# What can change a trained network or its evaluation.
CODE = ("crossres_dist", "pipelines", "requirements.txt")


def _files(paths: list[Path]) -> list[Path]:
    out = []
    for path in paths:
        if path.is_dir():
            out += sorted(
                p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts
            )
        elif path.is_file():
            out.append(path)
    return out


def fingerprint(extra: tuple[str, ...] = (), data: tuple[str, ...] = ()) -> str:
    """Code (CODE and `extra`, relative to the repository) by content, `data` folders by the
    names and sizes of their files."""
    digest = hashlib.sha1()
    for path in _files([REPO / p for p in (*CODE, *extra)]):
        digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes() + b"\0")
    for root in data:
        base = Path(root)
        for path in _files([base]):
            digest.update(f"{path.relative_to(base)}:{path.stat().st_size}\n".encode())
    return digest.hexdigest()[:12]


def marker(name: str, value: str) -> str:
    return f"<!-- {name}: generated from inputs {value}; regenerate, do not edit -->"


def block(text: str, name: str) -> tuple[str, str] | None:
    """The block between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` and its fingerprint."""
    found = re.search(rf"<!-- {name}:start -->\n(.*?)<!-- {name}:end -->", text, flags=re.DOTALL)
    if found is None:
        return None
    stamp = re.search(rf"<!-- {name}: generated from inputs (\w+);", found[1])
    return found[1], stamp[1] if stamp else ""


def replace_block(text: str, name: str, content: str) -> str:
    start, end = f"<!-- {name}:start -->\n", f"<!-- {name}:end -->"
    if start not in text or end not in text:
        raise ValueError(f"README has no {start.strip()} ... {end} block")
    before, rest = text.split(start, 1)
    _, after = rest.split(end, 1)
    return before + start + content.rstrip("\n") + "\n" + end + after
