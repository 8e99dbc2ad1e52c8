"""run.reproducible=cross_cpu (crossres_dist/arithmetic.py): a short tiny run's final weights
have the digest recorded in tests/assets/cross_cpu_digest.json (by `make cross-cpu`, which names
the CPU kind it was made on and those it has held on since). The run sets its pins itself (it
runs itself again with them) and its log says which arithmetic ran."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import run_cmd
from tools.cross_cpu import RECORD, command, cpu_kind, weights_digest

pytestmark = pytest.mark.launch


def test_a_cross_cpu_run_ends_on_the_recorded_bits(tmp_path):
    record = json.loads(RECORD.read_text())
    if torch.__version__ != record["versions"]["torch"]:
        pytest.skip(
            f"the digest was recorded with torch {record['versions']['torch']}, this is "
            f"{torch.__version__}: the bits are kept per version (make cross-cpu records them)"
        )
    run_dir = tmp_path / "run"
    done = run_cmd(command(run_dir))
    assert "arithmetic cross_cpu (ATen AVX2, oneDNN AVX2, MKL_CBWR COMPATIBLE" in (
        done.stdout + done.stderr
    )
    found = weights_digest(run_dir / "checkpoints" / "step_00000006.pt")
    here = cpu_kind()
    where = f"made on {record['made_on']}, held on {', '.join(record['held_on'])}"
    if here not in record["held_on"] and found != record["digest"]:
        pytest.skip(
            f"cross_cpu gives {found[:16]} on {here}, {record['digest'][:16]} where it was "
            f"{where}: the pins do not hold on this CPU kind yet (results/cross-cpu/)"
        )
    assert found == record["digest"], f"{found} on {here}; the recorded digest was {where}"
