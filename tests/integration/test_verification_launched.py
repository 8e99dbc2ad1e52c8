"""The launched half of tests/unit/test_verification.py: a 2-rank training run on a packed set with
``data.verification: auto`` validates on the .bin sets beside it and chooses best.pt by them, and
the evaluation protocol on 2 ranks gives the numbers of 1 rank."""

import json
import re

import pytest

from crossres_dist.checkpointing.manager import load_checkpoint
from crossres_dist.data.pack import pack
from tests.conftest import LFW, needs_lfw, results, run_cmd, tiny_args, train_cmd
from tests.fixtures.benchmarks import (
    cli,
)
from tests.fixtures.verification import (
    UNSEEN,
    needs_unseen,
)
from tools import benchmark_trees


@needs_lfw
@needs_unseen
@pytest.mark.launch
def test_two_ranks_validate_on_the_bins_beside_a_packed_set_and_choose_best_by_them(tmp_path):
    data = tmp_path / "ms1m-like"
    pack(str(LFW), data, "rec")
    benchmark_trees.verification_bins(UNSEEN, data, 40, 32)  # lfw_style.bin, lfw_style_np.bin
    run_dir = tmp_path / "run"
    run_cmd(
        train_cmd(
            2,
            *tiny_args(
                run_dir,
                None,
                f"data.train={data}",
                "data.verification=auto",
                "val.select_by=verification",
                "train.max_steps=6",
                "data.backend=dali",
            ),
        ),  # fmt: skip
        timeout=400,
    )
    res = results(run_dir)
    assert res["ranks_agree"]
    final = res["final"]
    for name in ("lfw_style", "lfw_style_np"):
        for resolution in ("full", "8px", "16px"):
            assert 0.0 <= final[f"val/verification/{name}/{resolution}/accuracy"] <= 1.0
    log = (run_dir / "train.log").read_text()
    # auto found both, each said once (by rank 0)
    assert log.count("verification set lfw_style:") == log.count("set lfw_style_np:") == 1
    means = [float(m) for m in re.findall(r"verification at step \d+: .*\| mean ([0-9.]+)", log)]
    assert len(means) == 3  # steps 0, 3 and 6
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert best["best_metric"] == pytest.approx(max(means), abs=5e-4)  # the log rounds to 1e-3
    assert best["best_metric"] == pytest.approx(res["best_metric"])


@needs_unseen
@pytest.mark.launch
def test_the_verification_protocol_on_two_ranks_gives_the_numbers_of_one(tmp_path, tiny_teacher):
    bins = tmp_path / "bins"
    benchmark_trees.verification_bins(UNSEEN, bins, 40, 32)
    reports = [
        cli(tmp_path / f"n{n}", tiny_teacher, "verification", bins, "--resolutions", "8", "full",
             "--no-plots", nproc=n)
        for n in (1, 2)
    ]  # fmt: skip
    one, two = (r["models"]["tiny"]["verification"] for r in reports)
    for name in ("lfw_style", "lfw_style_np"):
        for condition in ("8", "full"):
            assert one[name][condition]["accuracy"] == pytest.approx(
                two[name][condition]["accuracy"], abs=1e-9
            )
            assert one[name][condition]["xnorm"] == pytest.approx(
                two[name][condition]["xnorm"], rel=1e-5
            )
    assert json.loads(json.dumps(reports[1]))["images"] == 160
