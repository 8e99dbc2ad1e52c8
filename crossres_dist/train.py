"""Entry point: ``python -m crossres_dist.train --config FILE [section.key=value ...]``.

The same command runs as one process, under torchrun, under srun (one task per device) or
under mpirun; see crossres_dist/distributed/bootstrap.py.
"""

from __future__ import annotations

import argparse
import gc
import sys

from crossres_dist.arithmetic import pin as pin_arithmetic
from crossres_dist.config import load_config
from crossres_dist.distributed import PeerStopped
from crossres_dist.distributed.parallelize import use_compile_cache
from crossres_dist.errors import CrossresError
from crossres_dist.settings_help import format_settings_help
from crossres_dist.training.process import run
from crossres_dist.weights import preflight
from pipelines.sources import DataError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="crossres-train",
        description=__doc__.split("\n\n")[0],
        epilog=format_settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="a YAML file, or the name of a shipped config (below)")
    parser.add_argument("overrides", nargs="*", help="section.key=value")
    args = parser.parse_intermixed_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        pin_arithmetic(cfg.run.reproducible, may_run_again=argv is None)  # before any work
        if cfg.run.stage == "crossres":
            preflight(cfg.teacher.checkpoint)  # a missing or damaged teacher before any data
        use_compile_cache(cfg.compile.cache)  # before anything compiles
        return run(cfg)
    except PeerStopped as err:
        return err.code  # the rank that failed has said why, in one line
    except (CrossresError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    code = main()
    # What a run writes is on disk by now. Freezing the heap spares the interpreter's last
    # garbage collections, which would walk every object torch and DALI made only to find
    # nothing left to do: about a second of every rank's exit, on every start and requeue.
    gc.freeze()
    sys.exit(code)
