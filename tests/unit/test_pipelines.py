"""The data path on real faces: DALI (CPU operators, device_id=None), the torchvision twin, plans."""

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines import DALI_AVAILABLE, Loader, TrainPlanner, ViewSettings, eval_plans
from pipelines.dali_pipeline import MEAN_BGR, DaliViews
from pipelines.sources import SplitSpec, load_source, load_splits
from tests.conftest import LFW, needs_dali, needs_lfw

BACKENDS = ["dali", "torchvision"]


@pytest.fixture(scope="module")
def lfw():
    return load_source(str(LFW))


def _first(backend, plans, views, batch):
    stream = Loader(backend, views, batch, torch.device("cpu"), 1, 0)(iter(plans))
    return next(stream)


@needs_lfw
@pytest.mark.parametrize("backend", BACKENDS)
def test_shapes_types_ranges(lfw, backend):
    views = ViewSettings(64, 56, 0.5, [8, 16])
    planner = TrainPlanner(lfw.samples, views, 8, 0, 1, seed=1, p_of_images=lambda n: 0.5)
    batch = _first(backend, [planner.plan(0)], views, 8)
    for key in ("teacher_view", "student_view"):
        assert batch[key].shape == (8, 3, 56, 56) and batch[key].dtype == torch.float32
        # BGR 0..255 minus the mean: within [-mean, 255 - mean] per channel.
        for c, mean in enumerate(MEAN_BGR):
            channel = batch[key][:, c]
            assert channel.min() >= -mean - 1e-3 and channel.max() <= 255 - mean + 1e-3
    assert batch["labels"].dtype == torch.int64
    assert set(batch["resolution"].tolist()) <= {0.0, 8.0, 16.0}


@needs_lfw
@pytest.mark.parametrize("backend", BACKENDS)
def test_p_zero_gives_identical_views(lfw, backend):
    views = ViewSettings(64, 56, 0.5, [8])
    planner = TrainPlanner(lfw.samples, views, 8, 0, 1, seed=2, p_of_images=lambda n: 0.0)
    batch = _first(backend, [planner.plan(0)], views, 8)
    assert torch.equal(batch["teacher_view"], batch["student_view"])
    assert (batch["resolution"] == 0).all()


@needs_lfw
@pytest.mark.parametrize("backend", BACKENDS)
def test_flip_mirrors_both_views_of_the_drawn_images(lfw, backend):
    views = ViewSettings(64, 56, 0.0, [8], hflip_p=0.5)
    planner = TrainPlanner(lfw.samples, views, 8, 0, 1, seed=5, p_of_images=lambda n: 0.5)
    plan = planner.plan(0)
    assert 0 < plan.flip.sum() < 8  # some drawn, some not, from the plan's own stream
    unflipped = dataclasses.replace(plan, flip=np.zeros(8, bool))
    got = _first(backend, [plan], views, 8)
    plain = _first(backend, [unflipped], views, 8)
    for key in ("teacher_view", "student_view"):
        mirrored = torch.where(
            torch.from_numpy(plan.flip)[:, None, None, None], plain[key].flip(3), plain[key]
        )
        assert torch.allclose(got[key], mirrored, atol=1e-4), key


def _high_frequency_energy(images: torch.Tensor, cutoff: float) -> torch.Tensor:
    n = images.shape[-1]
    gray = images.mean(1)
    gray = gray - gray.mean((-2, -1), keepdim=True)
    # A Hann window: the FFT's wrap-around edge would otherwise add high frequencies of its own.
    window = torch.hann_window(n, periodic=False)
    spectrum = (
        torch.fft.fftshift(
            torch.fft.fft2(gray * window[:, None] * window[None, :]), dim=(-2, -1)
        ).abs()
        ** 2
    )
    freq = torch.fft.fftshift(torch.fft.fftfreq(n))
    radius = torch.sqrt(freq[:, None] ** 2 + freq[None, :] ** 2)
    return spectrum[:, radius > cutoff].sum(-1) / spectrum.sum((-2, -1))


@needs_lfw
@pytest.mark.parametrize("backend", BACKENDS)
def test_degraded_view_has_little_energy_above_its_nyquist(lfw, backend):
    """A view degraded to r px (shorter side) cannot carry frequencies above r/2 cycles per
    shorter side; the undegraded view does."""
    views = ViewSettings(128, 128, 0.0, [16])
    plans = [p for _, p in eval_plans(lfw.samples[:16], views, 16, [16])]
    batch = _first(backend, plans, views, 16)
    cutoff = 16 / 2 / 128 * 1.5  # cycles per pixel, with a margin for the bilinear kernel
    high_t = _high_frequency_energy(batch["teacher_view"], cutoff)
    high_s = _high_frequency_energy(batch["student_view"], cutoff)
    assert (high_s < 0.1 * high_t).all(), high_s / high_t


def test_two_ranks_cover_every_sample_once_per_epoch():
    samples = load_source("embedded:orl").samples[:96]  # 96 = 2 ranks x 8 x 6 batches
    views = ViewSettings(32, 28, 0.2, [8])
    seen = []
    for rank in range(2):
        planner = TrainPlanner(samples, views, 8, rank, 2, seed=3, p_of_images=lambda n: 0.1)
        assert planner.batches_per_epoch == 6
        for k in range(6):
            plan = planner.plan(k)
            assert plan.valid.all()
            seen += plan.paths
    assert sorted(seen) == sorted(s.path for s in samples)


def test_uneven_split_pads_equally_and_marks_padding():
    samples = load_source("embedded:orl").samples[:90]
    views = ViewSettings(32, 28, 0.2, [8])
    counts, valid_paths = [], []
    for rank in range(2):
        planner = TrainPlanner(samples, views, 8, rank, 2, seed=3, p_of_images=lambda n: 0.1)
        plans = [planner.plan(k) for k in range(planner.batches_per_epoch)]
        counts.append(sum(len(p) for p in plans))
        valid_paths += [path for p in plans for path, ok in zip(p.paths, p.valid) if ok]
    assert counts[0] == counts[1] == 48
    assert sorted(valid_paths) == sorted(s.path for s in samples)


def test_an_optimizer_step_sees_the_same_images_on_any_number_of_ranks():
    """An elastic job resumed on fewer or more ranks (docs/operations.md) keeps the run's order:
    with the global batch kept by accumulation, each optimizer step covers the same images and
    draws whatever the ranks, epoch after epoch, also when the epoch is not a whole number of
    micro-batches on every rank count (37 images, global batch 16)."""
    samples = load_source("embedded:orl").samples[:37]
    views = ViewSettings(32, 28, 0.2, [8])

    def steps(world: int) -> list[list[tuple]]:
        accumulation = 16 // (4 * world)
        planners = [
            TrainPlanner(samples, views, 4, r, world, 5, lambda n: 0.5, accumulation)
            for r in range(world)
        ]
        out = []
        for step in range(9):  # 3 epochs of 3 steps
            images = []
            for micro in range(accumulation):
                for planner in planners:
                    plan = planner.plan(step * accumulation + micro)
                    images += zip(plan.paths, plan.valid, plan.crop_x, plan.flip, strict=True)
            out.append(sorted(images))
        return out

    one = steps(1)
    assert steps(2) == one and steps(4) == one
    for epoch in range(3):  # every image once per epoch, the padding marked
        valid = [path for step in one[epoch * 3 : epoch * 3 + 3] for path, ok, *_ in step if ok]
        assert sorted(valid) == sorted(s.path for s in samples)


def test_order_depends_on_seed_and_epoch_only():
    samples = load_source("embedded:orl").samples
    views = ViewSettings(32, 28, 0.2, [8])

    def order(seed, epoch):
        planner = TrainPlanner(samples, views, 8, 0, 1, seed=seed, p_of_images=lambda n: 0.1)
        k = epoch * planner.batches_per_epoch
        return [p for b in range(3) for p in planner.plan(k + b).paths]

    assert order(0, 0) == order(0, 0)
    assert order(0, 0) != order(1, 0)
    assert order(0, 0) != order(0, 1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_restored_stream_continues_exactly(backend):
    samples = load_source("embedded:orl").samples
    views = ViewSettings(32, 28, 0.5, [8, 16])
    planner = TrainPlanner(samples, views, 8, 0, 1, seed=4, p_of_images=lambda n: 0.5)
    full = Loader(backend, views, 8, torch.device("cpu"), 1, 4)(planner.stream(0))
    uninterrupted = [next(full) for _ in range(5)]
    resumed = Loader(backend, views, 8, torch.device("cpu"), 1, 4)(planner.stream(3))
    for expected in uninterrupted[3:]:
        got = next(resumed)
        for key in ("teacher_view", "student_view", "labels", "resolution"):
            assert torch.equal(got[key], expected[key]), key


@needs_dali
def test_dali_batches_do_not_depend_on_the_number_of_pipelines():
    # The CPU arrangement deals whole batches to single-threaded pipelines in turn; the order,
    # and every pixel, must be those of one pipeline. A finite plan list must end after its
    # last batch whatever pipeline that falls to.
    samples = load_source("embedded:orl").samples
    views = ViewSettings(32, 28, 0.5, [8, 16])
    planner = TrainPlanner(samples, views, 8, 0, 1, seed=6, p_of_images=lambda n: 0.5)
    plans = [planner.plan(k) for k in range(5)]
    cpu = torch.device("cpu")
    one = list(DaliViews(iter(plans), views, 8, cpu, 1, 0, pipelines=1))
    three = list(DaliViews(iter(plans), views, 8, cpu, 2, 0, pipelines=3))
    assert len(one) == len(three) == 5
    for a, b in zip(one, three):
        for key in ("teacher_view", "student_view", "labels", "resolution"):
            assert torch.equal(a[key], b[key]), key
    assert sum(int((b["resolution"] > 0).sum()) for b in three) > 0


@needs_dali
def test_the_graph_takes_two_inputs_and_every_field_comes_back_exactly():
    """The per-sample fields reach DALI as one float64 array (two external-source inputs in
    all, not one per field) and come back bit for bit: labels far above float32's 2**24, the
    float32 crop draws, every degradation step's field in its own dtype."""
    from pipelines.dali_pipeline import _plan_to_arrays, field_inputs

    samples = load_source("embedded:orl").samples
    views = ViewSettings(32, 28, 0.5, [8, 16])
    planner = TrainPlanner(samples, views, 8, 0, 1, seed=3, p_of_images=lambda n: 0.7)
    plan = planner.plan(0)
    plan.labels = np.arange(8, dtype=np.int64) + 2**40 + 1  # a label float32 would round
    plan.crop_x = np.random.default_rng(0).random(8).astype(np.float32)
    inputs = next(_plan_to_arrays([plan]))
    assert len(inputs) == 2 and inputs[1].shape == (8, len(field_inputs()))
    batch = next(DaliViews(iter([plan]), views, 8, torch.device("cpu"), 1, 0))
    assert torch.equal(batch["labels"], torch.from_numpy(plan.labels))
    for name, values in plan.steps.items():
        assert batch[name].dtype == torch.from_numpy(values).dtype, name
        assert torch.equal(batch[name], torch.from_numpy(values)), name
    assert int((batch["resolution"] > 0).sum()) > 0


def test_curriculum_p_reaches_the_pipeline_without_rebuilding():
    samples = load_source("embedded:orl").samples
    views = ViewSettings(32, 28, 0.0, [8])
    planner = TrainPlanner(
        samples, views, 32, 0, 1, seed=5, p_of_images=lambda n: 0.0 if n < 64 else 1.0
    )
    stream = Loader(
        "dali" if DALI_AVAILABLE else "torchvision", views, 32, torch.device("cpu"), 1, 5
    )(planner.stream(0))
    degraded = [int((next(stream)["resolution"] > 0).sum()) for _ in range(4)]
    assert degraded == [0, 0, 32, 32]


def test_eval_plans_count_every_image_once():
    samples = load_source("embedded:orl").samples[:37]
    views = ViewSettings(32, 28, 0.0, [8])
    valid = []
    for rank in range(4):
        for _, plan in eval_plans(samples, views, 5, [None], rank, 4):
            valid += [p for p, ok in zip(plan.paths, plan.valid) if ok]
    assert sorted(valid) == sorted(s.path for s in samples)


def test_splits_and_list_files(tmp_path):
    splits = load_splits(SplitSpec("embedded:orl", "split:3"))
    train, val = splits.train, splits.val
    assert len(train.samples) == 280 and len(val.samples) == 120 and splits.test is None
    assert not {s.path for s in train.samples} & {s.path for s in val.samples}
    listing = tmp_path / "train.txt"
    root = train.samples[0].path.rsplit("/", 2)[0]
    listing.write_text("".join(f"{s.path[len(root) + 1 :]}\n" for s in train.samples[:20]))
    listed = load_source(str(listing), root)
    assert [s.path for s in listed.samples] == [s.path for s in train.samples[:20]]


def _pil_reference(path, resolution, views):
    """What the research code computes: PIL bilinear resize to shorter side S, PIL bilinear
    down to r and back up, centre crop, BGR minus the mean."""
    image = Image.open(path).convert("RGB")
    w, h = image.size
    size, crop = views.resize_shorter, views.crop
    full_w, full_h = (int(np.floor(x * size / min(w, h) + 0.5)) for x in (w, h))
    image = image.resize((full_w, full_h), Image.BILINEAR)
    if resolution:
        small = [max(int(np.floor(x * resolution / size + 0.5)), 1) for x in (full_w, full_h)]
        image = image.resize(small, Image.BILINEAR).resize((full_w, full_h), Image.BILINEAR)
    array = np.asarray(image, np.float32)[:, :, ::-1]
    top, left = (full_h - crop) // 2, (full_w - crop) // 2
    array = array[top : top + crop, left : left + crop] - np.array(MEAN_BGR, np.float32)
    return torch.from_numpy(array.transpose(2, 0, 1).copy())


# Measured on 16 LFW faces at 256/224 (mean / max absolute difference, 0..255 scale):
#   DALI vs PIL: full 0.14/1.0, 32 px 0.23/2.0, 16 px 0.34/13, 8 px 1.80/31 (interior 0.21/2.0)
#   twin vs PIL: 0.27-0.36 / 1.0-1.7 at every resolution
# DALI's 32x down-sampling filter replicates edge pixels where PIL renormalises its weights, so
# at 8 px the outermost small pixels differ; inside a 40 px border they agree within 2 levels.
GOLDEN = {None: (0.5, 2.5), 32: (0.5, 3.0), 16: (0.8, 16.0), 8: (2.5, 40.0)}


@needs_lfw
@pytest.mark.parametrize("resolution", [None, 32, 16, 8])
def test_golden_dali_twin_and_pil_agree(lfw, resolution):
    views = ViewSettings(256, 224, 0.0, [8])
    samples = lfw.samples[::80][:16]
    plans = [p for _, p in eval_plans(samples, views, 16, [resolution])]
    reference = torch.stack([_pil_reference(s.path, resolution, views) for s in samples])
    twin = _first("torchvision", plans, views, 16)["student_view"]
    twin_diff = (twin - reference).abs()
    assert twin_diff.mean() < 0.5 and twin_diff.max() < 2.5
    if DALI_AVAILABLE:
        dali = _first("dali", plans, views, 16)["student_view"]
        mean_tol, max_tol = GOLDEN[resolution]
        diff = (dali - reference).abs()
        assert diff.mean() < mean_tol and diff.max() < max_tol, (diff.mean(), diff.max())
        assert (dali - reference)[:, :, 40:-40, 40:-40].abs().max() <= 2.5
        assert torch.equal(
            _first("dali", plans, views, 16)["labels"], torch.tensor([s.label for s in samples])
        )
