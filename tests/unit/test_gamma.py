"""The gamma step (pipelines/degradations/gamma.py): an illumination change added as one module
and one registry line, checked against an independent spelling in both backends, drawn from
streams of its own, configured through method.ranges, and trained with.

Gamma is a pointwise operation, so the twin's degraded view must be exactly the gamma of its
own clean view (the crop commutes with it); DALI rounds to 8 bits after it and resizes the whole
image rather than the crop window, so it is compared with tolerances (measured on these 16 LFW
faces against the twin: gamma 2, mean 0.32 levels, 99th percentile 1.0, max 1.4; gamma 0.5, mean
0.41, 99th percentile 2.0, max 11 in the darkest pixels, where gamma < 1 is steepest).
"""

import numpy as np
import pytest
import torch

from crossres_dist.config import ConfigError, load_config
from crossres_dist.data import view_settings
from crossres_dist.models import spec_from_config
from pipelines import DALI_AVAILABLE, TrainPlanner, ViewSettings
from pipelines.degradations import (
    STEPS,
    Degradations,
    condition_label,
    parse_condition,
    parse_steps,
)
from pipelines.plans import MEAN_BGR
from pipelines.sources import load_source
from tests.conftest import REPO, needs_lfw
from tests.fixtures.views import degraded_views
from tests.golden import train_in_process

TINY = str(REPO / "tests" / "tiny.yaml")


def _config(overrides: list[str]):
    return load_config(TINY, ["teacher.checkpoint=unused.pt", *overrides])


def _gamma_of(view: torch.Tensor, gamma: float) -> torch.Tensor:
    """The normalised view back on 0..255, raised to `gamma` on 0..1, normalised again."""
    mean = torch.tensor(MEAN_BGR).view(1, 3, 1, 1)
    levels = (view + mean).clamp(0, 255).double() / 255
    return (levels**gamma * 255 - mean).float()


@needs_lfw
@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_gamma_is_the_power_of_the_clean_view_in_both_backends(faces, gamma):
    twin = degraded_views("torchvision", faces, {"gamma": gamma})
    assert torch.allclose(twin["student_view"], _gamma_of(twin["teacher_view"], gamma), atol=5e-3)
    # It changed the view, in the direction gamma says (darker above 1, brighter below).
    change = (twin["student_view"] - twin["teacher_view"]).mean()
    assert change < -5 if gamma > 1 else change > 5
    if DALI_AVAILABLE:
        dali = degraded_views("dali", faces, {"gamma": gamma})
        diff = (dali["student_view"] - twin["student_view"]).abs()
        assert diff.mean() < 1.0 and diff.flatten().quantile(0.99) < 4, (diff.mean(), diff.max())


def test_gamma_is_drawn_log_uniformly_from_streams_of_its_own():
    samples = load_source("embedded:orl").samples
    with_gamma = ViewSettings(
        32,
        28,
        0.2,
        [8, 16],
        degradations=Degradations(
            steps=parse_steps(["downsample", "gamma:0.5"]), resolutions=(8, 16)
        ),
    )

    def plans(views, rank=0, world=1, micro=16):
        planner = TrainPlanner(
            samples, views, micro, rank, world, seed=3, p_of_images=lambda n: 1.0
        )
        return [planner.plan(k) for k in range(20)]

    gamma_plans = plans(with_gamma)
    values = np.concatenate([p.gamma for p in gamma_plans])
    drawn = values[values > 0]
    assert 0.35 < len(drawn) / len(values) < 0.65  # gamma:0.5 of the degraded (all, p = 1)
    assert drawn.min() >= 0.5 and drawn.max() <= 2.0
    assert abs(np.log(drawn).mean()) < 0.1  # log-uniform: darkening and brightening alike
    # Adding the step leaves downsample's draws (and so every earlier run) unchanged ...
    plain = plans(ViewSettings(32, 28, 0.2, [8, 16]))
    for a, b in zip(plain, gamma_plans):
        assert np.array_equal(a.resolution, b.resolution) and np.array_equal(a.crop_x, b.crop_x)
    # ... and its own draws are the same whatever the number of ranks.
    halves = [plans(with_gamma, r, 2, 8)[3] for r in range(2)]
    assert np.array_equal(np.concatenate([h.gamma for h in halves]), gamma_plans[3].gamma)
    assert all(p.degrade.all() for p in gamma_plans)


def test_gamma_range_comes_from_method_ranges_and_is_checked():
    cfg = _config(["method.degradations=[downsample, gamma:0.3]", "method.ranges.gamma=[0.7, 1.5]"])
    assert cfg.method.ranges_by_key()["ranges.gamma"] == [0.7, 1.5]
    spec = spec_from_config(cfg.model, 40, input_size=cfg.data.crop)
    degradations = view_settings(cfg.data, cfg.method, spec).degradations
    assert degradations.range_of(STEPS["gamma"]) == (0.7, 1.5)
    assert degradations.steps == (("gamma", 0.3), ("downsample", 1.0))  # the registry's order
    with pytest.raises(
        ConfigError,
        match=r"method\.ranges\.gamma: \[0\.0, 2\.0\]: needs \[low, high\] within \[0\.1, 10\]",
    ):
        _config(["method.ranges.gamma=[0, 2]"])  # refused with the configuration, before any work
    # The known keys are the registry's (no list here: a new step must not break this test).
    known = ", ".join(name for name, step in STEPS.items() if step.range_key.startswith("ranges."))
    with pytest.raises(
        ConfigError,
        match=rf"method\.ranges\.shake: no registered step has this range \(known: {known}\)",
    ):
        _config(["method.ranges.shake=[1, 2]"])  # refused with the configuration, before any work
    with pytest.raises(
        ConfigError,
        match=r"method\.ranges\.jpeg: \[0\.0, 50\.0\]: needs \[low, high\] within \[1, 100\]",
    ):
        _config(["method.ranges.jpeg=[0, 50]"])  # refused with the configuration, before any work


def test_gamma_is_an_evaluation_condition():
    assert parse_condition("gamma:2") == {"gamma": 2.0}
    assert condition_label({"gamma": 2.0}) == "gamma2"
    assert condition_label({"gamma": 0.5, "resolution": 16.0}) == "gamma0.5+16"


def test_a_run_trains_with_gamma(tmp_path, tiny_teacher):
    result, rows = train_in_process(
        [
            f"teacher.checkpoint={tiny_teacher}",
            "method.degradations=[downsample, gamma:0.5]",
            "data.backend=torchvision",
            "train.precision=fp32",
            "train.device=cpu",
        ],
        tmp_path / "run",
    )
    assert result["step"] == 6 and result["ranks_agree"]
    assert all(np.isfinite(row["train/loss"]) for row in rows if "train/loss" in row)
