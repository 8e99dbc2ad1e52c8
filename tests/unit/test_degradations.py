"""Degradation steps: each in both backends against an independent reference, drawn from its own
streams (resume- and world-size-exact), and configurable for training and evaluation.

Measured on 16 LFW faces resized to 128 px, centre crop 112 (absolute difference, 0..255 scale):
- gaussian_blur (sigma 0.8 and 2.0) against SciPy's gaussian_filter (mirrored borders, the same
  window): twin mean 0.04-0.10, max 0.6; DALI mean 0.25-0.26, max 1.2 (it rounds to 8 bits
  between steps).
- jpeg (quality 20 and 70), twin against DALI: mean 0.011-0.015, 99th percentile 0, max 15-21
  (a few 8x8 blocks quantised differently after a one-level rounding difference). Against PIL on
  PIL-resized input both differ alike (mean 2-4): JPEG magnifies the resampling difference, so
  the twin's encoder is checked against PIL on the same 8-bit image instead (exactly equal).
- downsample 16 + blur 1.0 + jpeg 50, twin against DALI: mean 0.77, 99th percentile 6, max 19.
- noise: the same function in torch for both backends; exactly a NumPy re-implementation.
"""

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from pipelines import DALI_AVAILABLE, TrainPlanner, ViewSettings
from pipelines.degradations import (
    Degradations,
    condition_label,
    gaussian_field,
    parse_condition,
    parse_steps,
)
from pipelines.plans import MEAN_BGR
from pipelines.sources import load_source
from pipelines.torchvision_twin import jpeg
from tests.conftest import needs_dali, needs_lfw
from tests.fixtures.views import degraded_views, reference_view


def _blur_reference(path, sigma):
    """SciPy's Gaussian (mirrored borders, radius ceil(3 sigma)) on PIL's resize, cropped."""
    radius = math.ceil(3 * sigma)
    return reference_view(
        path,
        lambda channel: ndimage.gaussian_filter(
            channel, sigma, mode="mirror", truncate=radius / sigma
        ),
    )


@needs_lfw
@pytest.mark.parametrize("sigma", [0.8, 2.0])
def test_gaussian_blur_matches_scipy_in_both_backends(faces, sigma):
    reference = torch.stack([_blur_reference(s.path, sigma) for s in faces])
    twin = degraded_views("torchvision", faces, {"blur_sigma": sigma})
    diff = (twin["student_view"] - reference).abs()
    assert diff.mean() < 0.25 and diff.max() < 1.5, (diff.mean(), diff.max())
    assert torch.equal(
        twin["teacher_view"], degraded_views("torchvision", faces, None)["teacher_view"]
    )
    if DALI_AVAILABLE:
        diff = (
            degraded_views("dali", faces, {"blur_sigma": sigma})["student_view"] - reference
        ).abs()
        assert diff.mean() < 0.5 and diff.max() < 2.5, (diff.mean(), diff.max())


def test_twin_jpeg_is_pils_encoder():
    rng = np.random.default_rng(0)
    array = ndimage.gaussian_filter(rng.random((64, 48, 3)) * 255, 2).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=35)
    expected = np.asarray(Image.open(buffer), np.float32)
    got = jpeg(torch.from_numpy(array.astype(np.float32)).permute(2, 0, 1), 35)
    assert torch.equal(got.permute(1, 2, 0), torch.from_numpy(expected))


@needs_lfw
@needs_dali
@pytest.mark.parametrize(
    "condition, mean_tol, p99_tol",
    [
        ({"jpeg_quality": 20}, 0.1, 1.0),
        ({"jpeg_quality": 70}, 0.1, 1.0),
        ({"resolution": 16, "blur_sigma": 1.0, "jpeg_quality": 50}, 1.5, 10.0),
    ],
)
def test_jpeg_and_the_whole_chain_agree_between_dali_and_the_twin(
    faces, condition, mean_tol, p99_tol
):
    twin = degraded_views("torchvision", faces, condition)["student_view"]
    dali = degraded_views("dali", faces, condition)["student_view"]
    diff = (twin - dali).abs()
    assert diff.mean() < mean_tol and diff.flatten().quantile(0.99) < p99_tol
    # And it did degrade: a lower JPEG quality moves the view further from the clean one.
    clean = degraded_views("torchvision", faces, None)["student_view"]
    assert (twin - clean).abs().mean() > 0.5


def _numpy_gaussian_field(seeds, count):
    """The noise hash and Box-Muller in NumPy uint64 arithmetic (an independent spelling)."""
    m = np.uint64(0xFFFFFFFFFFFFFFFF)

    def mix(x):
        x = x ^ (x >> np.uint64(30))
        x = (x * np.uint64(0xBF58476D1CE4E5B9)) & m
        x = x ^ (x >> np.uint64(27))
        x = (x * np.uint64(0x94D049BB133111EB)) & m
        return x ^ (x >> np.uint64(31))

    with np.errstate(over="ignore"):
        index = np.arange(count, dtype=np.uint64)
        base = (np.asarray(seeds, np.uint64) * np.uint64(0x9E3779B9))[:, None] + np.uint64(
            2
        ) * index
        u1 = (((mix(base) >> np.uint64(40)) & np.uint64(0xFFFFFF)).astype(np.float64) + 1) / (
            2**24 + 1
        )
        u2 = ((mix(base + np.uint64(1)) >> np.uint64(40)) & np.uint64(0xFFFFFF)).astype(
            np.float64
        ) / 2**24
    return np.sqrt(-2 * np.log(u1)) * np.cos(2 * np.pi * u2)


def test_noise_is_a_pure_function_of_seed_and_pixel():
    seeds = torch.tensor([0, 7, 123456789, 2**31 - 1])
    field = gaussian_field(seeds, (3, 16, 16))
    expected = _numpy_gaussian_field(seeds.numpy(), 3 * 16 * 16).reshape(4, 3, 16, 16)
    assert np.allclose(field.numpy(), expected, atol=1e-4)
    assert abs(field.mean()) < 0.1 and abs(field.std() - 1) < 0.05
    assert torch.equal(field, gaussian_field(seeds, (3, 16, 16)))  # no hidden state


@needs_lfw
@pytest.mark.parametrize("backend", ["torchvision", pytest.param("dali", marks=needs_dali)])
def test_noise_has_its_sigma_and_is_the_same_in_both_backends(faces, backend):
    condition = parse_condition("noise:8")
    noisy = degraded_views(backend, faces, condition)["student_view"]
    clean = degraded_views(backend, faces, None)["student_view"]
    added = noisy - clean
    inside = (clean > -MEAN_BGR[0] + 30) & (clean < 255 - MEAN_BGR[2] - 30)  # far from clipping
    assert abs(added[inside].std() - 8) < 0.4
    if backend == "dali":
        twin = degraded_views("torchvision", faces, condition)
        twin_added = (
            twin["student_view"] - degraded_views("torchvision", faces, None)["student_view"]
        )
        assert torch.allclose(added[inside], twin_added[inside], atol=1e-3)


def test_steps_draw_from_their_own_streams_whatever_the_world_size():
    samples = load_source("embedded:orl").samples
    views = ViewSettings(
        32,
        28,
        0.2,
        [8, 16],
        degradations=Degradations(
            steps=parse_steps(["downsample:0.7", "gaussian_blur:0.5", "jpeg:0.5", "noise:0.5"]),
            resolutions=(8, 16),
        ),
    )
    fields = ("resolution", "blur_sigma", "jpeg_quality", "noise_sigma", "noise_seed", "degrade")

    def plan(rank, world, micro, k):
        planner = TrainPlanner(
            samples, views, micro, rank, world, seed=3, p_of_images=lambda n: 0.8
        )
        return planner.plan(k)

    one = plan(0, 1, 16, 2)
    halves = [plan(r, 2, 8, 2) for r in range(2)]
    for name in fields:
        joined = np.concatenate([getattr(h, name) for h in halves])
        assert np.array_equal(getattr(one, name), joined), name
    assert (
        (one.blur_sigma > 0).any() and (one.jpeg_quality > 0).any() and (one.noise_sigma > 0).any()
    )
    assert ((one.jpeg_quality == 0) | ((one.jpeg_quality >= 20) & (one.jpeg_quality <= 80))).all()
    # Adding steps leaves downsample's own draws (and so earlier runs) unchanged.
    plain = TrainPlanner(
        samples, ViewSettings(32, 28, 0.2, [8, 16]), 16, 0, 1, seed=3, p_of_images=lambda n: 0.8
    ).plan(2)
    downsampled = one.resolution > 0
    assert np.array_equal(plain.resolution[downsampled], one.resolution[downsampled])
    # downsample:0.7 skipped some of the degraded samples that plain downsample took.
    assert 0 < downsampled.sum() < (plain.resolution > 0).sum()


def test_conditions_are_parsed_and_named():
    assert parse_condition("jpeg:20") == {"jpeg_quality": 20.0}
    assert condition_label({"jpeg_quality": 20.0}) == "jpeg20"
    assert condition_label({"blur_sigma": 2.0}) == "blur2"
    assert condition_label(8) == "8" and condition_label(None) == "full"
    with pytest.raises(ValueError, match="expected STEP:VALUE"):
        parse_condition("shake:3")
    # Several steps in one condition, named in the registry's order whatever the order given.
    both = parse_condition("jpeg:20+downsample:16")
    assert both == {"jpeg_quality": 20.0, "resolution": 16.0}
    assert condition_label(both) == "16+jpeg20"
    with pytest.raises(ValueError, match=r"--degrade 'jpeg:20\+': expected STEP:VALUE"):
        parse_condition("jpeg:20+")
