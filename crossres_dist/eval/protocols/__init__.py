"""The benchmark protocols, by the name ``--protocol`` takes: this registry is the one list of
them. One more protocol is one more module here with a ``Protocol`` subclass, and one more
``register`` line below; ``--help`` and docs/benchmarks.md's listing are made from the registry."""

from crossres_dist.eval.protocols.base import Protocol
from crossres_dist.eval.protocols.folder import Folder
from crossres_dist.eval.protocols.ijb import IJBB, IJBC
from crossres_dist.eval.protocols.scface import SCface
from crossres_dist.eval.protocols.survface import SurvFace
from crossres_dist.eval.protocols.tinyface import TinyFace
from crossres_dist.eval.protocols.verification import Verification

PROTOCOLS: dict[str, type[Protocol]] = {}


def register(protocol: type[Protocol]) -> type[Protocol]:
    """Add a protocol under its name; refused if the name is taken or it has no summary."""
    if not protocol.name or not protocol.summary:
        raise ValueError(f"protocol {protocol.__name__}: needs a name and a one-line summary")
    if protocol.name in PROTOCOLS:
        raise ValueError(f"protocol {protocol.name!r} is registered already")
    PROTOCOLS[protocol.name] = protocol
    return protocol


def unregister(name: str) -> None:
    PROTOCOLS.pop(name, None)


def describe() -> str:
    """The protocols, as --protocol's help lists them."""
    return "; ".join(f"{name}: {p.summary}" for name, p in PROTOCOLS.items())


def protocols_table() -> str:
    """The protocols as docs/benchmarks.md lists them."""
    lines = ["| `--protocol` | what it evaluates | needs `--root` |", "|---|---|---|"]
    for name, p in PROTOCOLS.items():
        lines.append(f"| `{name}` | {p.summary} | {'yes' if p.needs_root else 'no'} |")
    return "\n".join(lines)


register(Folder)
register(IJBB)
register(IJBC)
register(TinyFace)
register(SurvFace)
register(SCface)
register(Verification)

__all__ = ["PROTOCOLS", "Protocol", "describe", "protocols_table", "register", "unregister"]
