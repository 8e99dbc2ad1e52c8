"""The benchmark protocols, by the name ``--protocol`` takes. One more protocol is one more
module here with a ``Protocol`` subclass, and one more line in PROTOCOLS."""

from crossres_dist.eval.protocols.base import Protocol
from crossres_dist.eval.protocols.folder import Folder
from crossres_dist.eval.protocols.ijb import IJBB, IJBC
from crossres_dist.eval.protocols.scface import SCface
from crossres_dist.eval.protocols.survface import SurvFace
from crossres_dist.eval.protocols.tinyface import TinyFace
from crossres_dist.eval.protocols.verification import Verification

PROTOCOLS: dict[str, type[Protocol]] = {
    p.name: p for p in (Folder, IJBB, IJBC, TinyFace, SurvFace, SCface, Verification)
}

__all__ = ["PROTOCOLS", "Protocol"]
