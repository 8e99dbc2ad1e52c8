"""A training run as a process: the Trainer built and run, and how it ended turned into the exit
code a launcher script acts on (slurm/train.sh requeues a preempted job; torchrun restarts a
worker that lost its peers)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from crossres_dist import distributed
from crossres_dist.checkpointing import run_directory as rundir
from crossres_dist.distributed.watchdog import report_lost_peers
from crossres_dist.training.step_control import NonFiniteLoss, Preempted
from crossres_dist.training.trainer import Trainer

if TYPE_CHECKING:  # for the reader only: config.py composes this package's sections
    from crossres_dist.config import Config

log = logging.getLogger(__name__)

# Exit codes a launcher script can act on.
EXIT_PREEMPTED = 3
EXIT_NONFINITE = 4
EXIT_PEER_LOST = 6  # a collective failed because ranks are gone (their node, their processes)


def run(cfg: Config) -> int:
    """Train; return the process exit code (0, EXIT_PREEMPTED or EXIT_NONFINITE)."""
    trainer = None
    graceful = False
    try:
        trainer = Trainer(cfg)
        trainer.train()
        graceful = True
        return 0
    except Preempted:
        graceful = True
        return EXIT_PREEMPTED
    except NonFiniteLoss as err:
        log.error("%s", err)
        graceful = True  # every rank saw the same non-finite gradient and stops here
        return EXIT_NONFINITE
    except distributed.PeerStopped:
        graceful = True
        raise
    except rundir.DiskFullError as err:
        graceful = getattr(err, "agreed", False)
        raise
    except RuntimeError as err:  # a collective that failed: are peers gone?
        if not report_lost_peers(err, trainer and trainer.watchdog, EXIT_PEER_LOST):
            raise
        return EXIT_PEER_LOST
    finally:
        if trainer is not None:
            trainer.close()
        distributed.shutdown(graceful)
