"""run.reproducible=cross_cpu (crossres_dist/arithmetic.py): a short tiny run's final weights
have the digest kept in tests/assets/cross_cpu_digest.json, made on the CPU kind it names, at the
versions it names; and on the CPU kinds listed there as held. The run sets its pins itself (it
runs itself again with them), and says so in its log."""

from __future__ import annotations

import hashlib
import json
import platform

import pytest
import torch

from crossres_dist.checkpointing.manager import load_checkpoint
from tests.conftest import REPO, run_cmd, tiny_args, train_cmd

pytestmark = pytest.mark.launch

EXPECTED = REPO / "tests" / "assets" / "cross_cpu_digest.json"
RUN = (
    "run.reproducible=cross_cpu",
    "train.max_steps=6",
    "val.every=100",
    "data.backend=torchvision",
)


def cpu_kind() -> str:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def weights_digest(checkpoint) -> str:
    """sha256 over the student's tensors, name and bytes, in name order."""
    state = load_checkpoint(checkpoint)["student"]
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


def test_a_cross_cpu_run_ends_on_the_recorded_bits(tmp_path, tiny_teacher):
    expected = json.loads(EXPECTED.read_text())
    if torch.__version__ != expected["versions"]["torch"]:
        pytest.skip(
            f"the digest was made with torch {expected['versions']['torch']}, this is "
            f"{torch.__version__}: bits are kept per version (make cross-cpu-digest)"
        )
    run_dir = tmp_path / "run"
    done = run_cmd(train_cmd(1, *tiny_args(run_dir, tiny_teacher, *RUN)))
    assert "arithmetic cross_cpu (ATen AVX2, oneDNN off, MKL_CBWR COMPATIBLE" in done.stdout
    found = weights_digest(run_dir / "checkpoints" / "step_00000006.pt")
    here = cpu_kind()
    where = f"made on {expected['made_on']}; held on {', '.join(expected['held_on'])}"
    if here not in expected["held_on"] and found != expected["digest"]:
        pytest.skip(
            f"cross_cpu gives {found[:16]} on {here}, {expected['digest'][:16]} where it was "
            f"{where}: this CPU kind is not yet covered (results/cross-cpu/)"
        )
    assert found == expected["digest"], f"{found} on {here}; the recorded digest was {where}"
