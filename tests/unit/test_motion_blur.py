"""The motion_blur step (pipelines/degradations/motion_blur.py), added as one module, two rows of
pipelines/streams.py and one registry line: its kernel is a line of the asked length and angle,
both backends agree with an independent reference, its draws come from streams of its own, and
it is configured and evaluated like every other step.

Measured on 16 LFW faces resized to 128 px, centre crop 112 (absolute difference, 0..255 scale),
the twin against DALI: L 3, mean 0.26, max 0.95; L 9, mean 0.25, max 0.84; L 25, mean 0.25,
max 2.8 (DALI rounds to 8 bits after the filter).
"""

import numpy as np
import pytest
import torch
from scipy import ndimage

from crossres_dist.config import ConfigError, load_config
from pipelines import DALI_AVAILABLE, TrainPlanner, ViewSettings
from pipelines.degradations import (
    Degradations,
    condition_label,
    parse_condition,
)
from pipelines.degradations.motion_blur import KERNEL_SIDE, kernel
from pipelines.sources import load_source
from tests.conftest import REPO, needs_lfw
from tests.fixtures.views import degraded_views, reference_view


def _moments(weights: torch.Tensor, angle: float) -> tuple[float, float]:
    """The kernel's variance along the line and across it."""
    half = KERNEL_SIDE // 2
    y, x = torch.meshgrid(
        torch.arange(-half, half + 1.0), torch.arange(-half, half + 1.0), indexing="ij"
    )
    theta = np.radians(angle)
    along = x * np.cos(theta) + y * np.sin(theta)
    across = y * np.cos(theta) - x * np.sin(theta)
    return float((weights * along**2).sum()), float((weights * across**2).sum())


@pytest.mark.parametrize("length", [3.0, 9.0, 25.0])
@pytest.mark.parametrize("angle", [0.0, 30.0, 90.0, 135.0])
def test_kernel_is_a_line_of_that_length_and_angle(length, angle):
    weights = kernel(length, angle)
    assert weights.shape == (KERNEL_SIDE, KERNEL_SIDE)
    assert torch.isclose(weights.sum(), torch.tensor(1.0))
    # Point-symmetric: correlation (DALI's filter, conv2d) and convolution are the same.
    assert torch.allclose(weights, weights.flip(0).flip(1), atol=1e-7)
    along, across = _moments(weights, angle)
    # A uniform segment of length L has variance L^2 / 12 (the ends' partial pixels add a little).
    assert abs(along - length**2 / 12) < 0.1 * length**2 / 12 + 0.2, along
    assert across < 0.25, across


def _reference(path: str, length: float, angle: float) -> torch.Tensor:
    """SciPy's correlation with the kernel (edge pixels repeated) on PIL's resize, cropped."""
    k = kernel(length, angle).double().numpy()
    return reference_view(path, lambda channel: ndimage.correlate(channel, k, mode="nearest"))


@needs_lfw
@pytest.mark.parametrize("length", [3.0, 9.0])
def test_motion_blur_matches_scipy_in_both_backends(faces, length):
    condition = parse_condition(f"motion_blur:{length:g}")
    twin = degraded_views("torchvision", faces, condition)
    # Each probe its own angle, the same at every evaluation.
    angles = twin["motion_angle"].numpy()
    assert len(set(np.round(angles, 3))) == len(faces) and ((0 <= angles) & (angles < 180)).all()
    assert np.array_equal(angles, degraded_views("torchvision", faces, condition)["motion_angle"])
    reference = torch.stack(
        [_reference(s.path, length, float(a)) for s, a in zip(faces, angles, strict=True)]
    )
    diff = (twin["student_view"] - reference).abs()
    assert diff.mean() < 0.25 and diff.max() < 2.0, (diff.mean(), diff.max())
    clean = degraded_views("torchvision", faces, None)["teacher_view"]
    assert torch.equal(twin["teacher_view"], clean)
    assert (twin["student_view"] - clean).abs().mean() > 2.0  # it did blur
    if DALI_AVAILABLE:
        dali = degraded_views("dali", faces, condition)
        diff = (dali["student_view"] - reference).abs()
        assert diff.mean() < 0.5 and diff.max() < 3.0, (diff.mean(), diff.max())


def test_motion_blur_is_an_evaluation_condition():
    assert parse_condition("motion_blur:9")["motion_length"] == 9.0
    assert condition_label(parse_condition("motion_blur:9")) == "motion9"
    assert condition_label({"motion_length": 5.0, "resolution": 16.0}) == "16+motion5"


def _plan(degradations, seed=3):
    samples = load_source("embedded:orl").samples
    views = ViewSettings(32, 28, 0.5, [8, 16], degradations=degradations)
    return TrainPlanner(samples, views, 64, 0, 1, seed=seed, p_of_images=lambda n: 0.8).plan(0)


def test_motion_blur_draws_from_its_own_streams():
    with_it = _plan(
        Degradations(
            (("downsample", 1.0), ("gaussian_blur", 0.5), ("motion_blur", 0.5)),
            resolutions=(8, 16),
            **{"ranges.motion_blur": (4.0, 6.0)},
        )
    )
    without = _plan(
        Degradations((("downsample", 1.0), ("gaussian_blur", 0.5)), resolutions=(8, 16))
    )
    # Adding the step moves no other draw: its streams are its own.
    for name in ("resolution", "blur_sigma"):
        assert np.array_equal(with_it.steps[name], without.steps[name])
    length, angle = with_it.steps["motion_length"], with_it.steps["motion_angle"]
    applied = length > 0
    assert 0 < applied.sum() < with_it.degrade.sum()  # probability 0.5 among the degraded
    assert not (applied & ~with_it.degrade).any()
    assert ((length[applied] >= 4) & (length[applied] <= 6)).all()
    assert ((angle[applied] >= 0) & (angle[applied] < 180)).all() and not angle[~applied].any()


def test_motion_blur_range_is_checked_with_the_configuration():
    tiny = str(REPO / "tests" / "tiny.yaml")
    cfg = load_config(
        tiny,
        [
            "teacher.checkpoint=unused.pt",
            "method.degradations=[downsample, motion_blur:0.3]",
            "method.ranges.motion_blur=[2, 5]",
        ],
    )
    assert cfg.method.ranges_by_key()["ranges.motion_blur"] == [2, 5]
    with pytest.raises(
        ConfigError,
        match=r"method\.ranges\.motion_blur: \[2\.0, 40\.0\]: needs \[low, high\] within \[1, 31\]",
    ):
        load_config(tiny, ["teacher.checkpoint=unused.pt", "method.ranges.motion_blur=[2, 40]"])
