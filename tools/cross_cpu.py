"""``make cross-cpu``: does run.reproducible=cross_cpu give the same bits on this CPU as where
the recorded digest was made (tests/assets/cross_cpu_digest.json)?

A short tiny pretraining run (tests/tiny.yaml, 1 process, 1 thread, the torchvision pipeline)
with the pins, and its final weights' digest. The first run records the digest; a later run on
another CPU kind compares and, where it holds, adds the kind to the record. The same run again
with this CPU's wider paths switched off (MKL held to AVX2, NumPy's AVX512 dispatch off) must give
the same digest: the pins, not this CPU's features, decide the arithmetic. The record is published
as results/cross-cpu/ (which CPU kinds it has held on); tests/integration/test_cross_cpu.py checks
it in make test.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from crossres_dist.checkpointing.manager import load_checkpoint
from tools import published as results

REPO = Path(__file__).resolve().parent.parent
RECORD = REPO / "tests" / "assets" / "cross_cpu_digest.json"
RUN = (
    "run.stage=pretrain",
    "teacher.checkpoint=",
    "run.reproducible=cross_cpu",
    "train.max_steps=6",
    "val.every=100",
    "data.backend=torchvision",
)
# This CPU's wider paths closed: what a CPU without them would run, where the pins leave a choice.
CAPPED = {
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "NPY_DISABLE_CPU_FEATURES": "AVX512F AVX512CD AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL",
}


def cpu_kind() -> str:
    return str(results.hardware()["cpu"])


def weights_digest(checkpoint: Path) -> str:
    """sha256 over the student's tensors, name and bytes, in name order."""
    state = load_checkpoint(checkpoint)["student"]
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


def command(run_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "crossres_dist.train",
        "--config",
        str(REPO / "tests" / "tiny.yaml"),
        f"run.output_dir={run_dir.parent}",
        f"run.name={run_dir.name}",
        *RUN,
    ]


def run_once(extra_env: dict[str, str] | None = None) -> str:
    """The run's final digest (a fresh folder each time)."""
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = Path(scratch) / "run"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **(extra_env or {})}
        subprocess.run(command(run_dir), cwd=REPO, env=env, check=True, capture_output=True)
        return weights_digest(run_dir / "checkpoints" / "step_00000006.pt")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--allow-dirty", action="store_true", help="see tools/published.py")
    args = parser.parse_args(argv)
    try:
        provenance = results.capture("make cross-cpu", [], args.allow_dirty)
    except results.DirtyTree as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    here, found = cpu_kind(), run_once()
    capped = run_once(CAPPED)
    if capped != found:
        print(
            f"error: with this CPU's wider paths off the digest differs ({capped[:16]} against "
            f"{found[:16]}): the pins do not decide the arithmetic here",
            file=sys.stderr,
        )
        return 1
    record = json.loads(RECORD.read_text()) if RECORD.is_file() else None
    if record is None or record["versions"] != results.versions():
        record = {
            "digest": found,
            "made_on": here,
            "held_on": [here],
            "versions": results.versions(),
        }
    elif found != record["digest"]:
        print(
            f"cross_cpu gives {found[:16]} on {here}, {record['digest'][:16]} on "
            f"{record['made_on']}: not the same bits; the record is left as it is"
        )
        return 1
    elif here not in record["held_on"]:
        record["held_on"].append(here)
    RECORD.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    text = "\n".join(
        [
            "run.reproducible=cross_cpu: a 6-step tiny run's final weights (sha256 "
            f"`{record['digest'][:16]}`), the same on every CPU kind below, at torch "
            f"{record['versions']['torch']}, 1 thread. On each, the same run with the CPU's wider "
            "paths switched off (MKL held to AVX2, NumPy's AVX512 dispatch off) gave the same digest.",
            "",
            "| CPU kind | same bits |",
            "|---|---|",
            *[
                f"| {kind} | yes{' (made here)' if kind == record['made_on'] else ''} |"
                for kind in record["held_on"]
            ],
        ]
    )
    print(text)
    folder = results.publish("cross-cpu", text, record, provenance)
    print(f"wrote {RECORD.relative_to(REPO)} and {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
