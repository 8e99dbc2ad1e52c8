"""Bad data, as a new user meets it: a truncated JPEG that passes the header check and fails to
decode mid-run (both backends, 2 ranks), more kinds of bad file named before the run, images in
other modes counted, and a manifest that spares training a second check."""

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from crossres_dist.checkpointing.manager import load_checkpoint
from crossres_dist.data.check import Manifest, check_dataset, default_manifest
from pipelines.sources import SplitSpec, load_splits
from tests.conftest import (
    ORL,
    error_lines,
    needs_dali,
    results,
    run_cmd,
    tiny_args,
    train_cmd,
)

BACKENDS = [
    pytest.param(
        "dali",
        marks=needs_dali,
    ),
    "torchvision",
]


def _copy_orl(root):
    for identity in sorted(ORL.glob("s*")):
        (root / identity.name).mkdir(parents=True)
        for image in sorted(identity.glob("*.png")):
            (root / identity.name / image.name).write_bytes(image.read_bytes())
    return root


def _truncated_jpeg(png, target):
    buffer = io.BytesIO()
    Image.open(png).convert("RGB").save(buffer, format="JPEG", quality=90)
    data = buffer.getvalue()
    target.write_bytes(data[: int(len(data) * 0.6)])  # the header survives, the scan does not


@pytest.fixture(scope="module")
def faces_with_a_truncated_jpeg(tmp_path_factory):
    """ORL with one training image (in the tiny config's split) replaced by a truncated JPEG."""
    root = _copy_orl(tmp_path_factory.mktemp("faces"))
    train = load_splits(SplitSpec(str(root), "split:2")).train.samples
    victim = next(s.path for s in train if "/s7/" in s.path)
    bad = Path(victim).with_suffix(".jpg")  # sorts where the .png did: the split does not move
    _truncated_jpeg(victim, bad)
    os.remove(victim)
    assert bad.as_posix() in {
        s.path for s in load_splits(SplitSpec(str(root), "split:2")).train.samples
    }
    return root, bad


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.launch
def test_truncated_jpeg_mid_run_is_named_excluded_and_the_order_is_rank_free(
    tmp_path, tiny_teacher, faces_with_a_truncated_jpeg, backend
):
    """The file passes data.check=header and fails in the decoder. The run names it, leaves it
    out and completes. Two ranks (micro-batch 4) and one rank (micro-batch 16) meet it at
    different times and in different processes, and still end with the same weights: the
    replacement is a function of the plan, not of who found the file."""
    root, bad = faces_with_a_truncated_jpeg
    common = (
        f"data.train={root}",
        "data.check=header",
        f"data.backend={backend}",
        # No random view choices and BatchNorm on running statistics: the only difference
        # between the two runs is how each step's 16 images are split over ranks.
        "method.p=0",
        "data.grayscale_p=0",
        "data.crop=32",
        "model.bn_mode=frozen",
        "method.lambda_feat=0",  # the random tiny teacher's features diverge over 24 steps
        "optim.lr=0.01",
        "optim.global_batch=16",
        "train.max_steps=24",  # 320 training images: more than one epoch
        "val.every=100",
        "checkpoint.every=100",
    )
    two, one = tmp_path / "two", tmp_path / "one"
    out_two = run_cmd(train_cmd(2, *tiny_args(two, tiny_teacher, *common, "data.micro_batch=4")))
    out_one = run_cmd(train_cmd(1, *tiny_args(one, tiny_teacher, *common, "data.micro_batch=16")))
    for out, run_dir in ((out_two, two), (out_one, one)):
        assert f"data: {bad} cannot be decoded" in out.stdout + out.stderr
        res = results(run_dir)
        assert res["step"] == 24 and res["ranks_agree"]
        assert res["excluded_during_run"] == [str(bad)]
    a = load_checkpoint(two / "checkpoints" / "step_00000024.pt")["student"]
    b = load_checkpoint(one / "checkpoints" / "step_00000024.pt")["student"]
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-5), key


def _png_bomb(path, side=40000):
    """A valid PNG whose header claims side x side pixels (a decompression bomb)."""

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def _plant_more(root):
    """Bad files that used to crash the checker or the trainer, or pass unnoticed."""
    rgb = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    planted = {
        "too_large": root / "s1" / "bomb.png",
        "unsupported_format_GIF": root / "s2" / "animated.jpg",
        "dangling_symlink": root / "s3" / "moved.png",
        "not_an_image": root / "s4" / "page.jpg",
        "zero_byte": root / "s5" / "empty.png",
    }
    _png_bomb(planted["too_large"])
    Image.fromarray(rgb).save(planted["unsupported_format_GIF"], format="GIF")
    os.symlink(root / "gone" / "moved.png", planted["dangling_symlink"])
    planted["not_an_image"].write_text("<html>404 not found</html>")
    planted["zero_byte"].write_bytes(b"")
    modes = {
        "unsupported_mode_CMYK": root / "s6" / "cmyk.jpg",
        "unsupported_mode_P": root / "s6" / "palette.png",
        "unsupported_mode_I;16": root / "s6" / "deep.png",
    }
    Image.fromarray(rgb).convert("CMYK").save(modes["unsupported_mode_CMYK"])
    Image.fromarray(rgb).convert("P").save(modes["unsupported_mode_P"])
    Image.fromarray(np.full((64, 64), 40000, np.uint16)).save(modes["unsupported_mode_I;16"])
    return planted, modes


@pytest.mark.launch
def test_checker_and_trainer_name_every_planted_kind(tmp_path, tiny_teacher):
    root = _copy_orl(tmp_path / "faces")
    planted, modes = _plant_more(root)
    report = check_dataset(str(root), min_side=16, min_images=2)  # no exception, no traceback
    for kind, path in {**planted, **modes}.items():
        assert str(path) in report.problems[kind], (kind, report.problems.get(kind))
    assert report.bad_files == {str(p) for p in planted.values()}

    args = tiny_args(tmp_path / "run", tiny_teacher, f"data.train={root}", "train.max_steps=2")
    refused = run_cmd(train_cmd(1, *args), check=False)
    assert refused.returncode == 2
    error = error_lines(refused.stderr)
    assert len(error) == 1 and "data: 5 unusable image(s) (dangling_symlink 1," in error[0]
    assert "too_large 1, unsupported_format_GIF 1, zero_byte 1)" in error[0]
    trained = run_cmd(train_cmd(1, *args, "data.skip_bad_files=true"))
    assert "skipping 5 unusable image(s)" in trained.stdout
    assert "3 image(s) in other modes (" in trained.stdout and "CMYK 1" in trained.stdout
    skipped = results(tmp_path / "run")["skipped_before_run"]
    assert sorted(skipped) == sorted(str(p) for p in planted.values())


@pytest.mark.launch
def test_manifest_spares_the_second_check_and_catches_changed_files(tmp_path, tiny_teacher):
    root = _copy_orl(tmp_path / "faces")
    manifest = default_manifest(str(root))
    check_dataset(str(root), manifest=manifest)
    recorded = Manifest.load(manifest)
    assert len(recorded.entries) == 400 and recorded.recorded(str(root / "s1" / "1.png")) == []
    # A file changed after the check (same name, truncated) is checked again.
    changed = root / "s9" / "3.png"
    changed.write_bytes(changed.read_bytes()[:300])
    assert recorded.recorded(str(changed)) is None
    args = tiny_args(tmp_path / "run", tiny_teacher, f"data.train={root}", "train.max_steps=1")
    out = run_cmd(train_cmd(1, *args), check=False)
    assert "of 400 files verified by the manifest" in out.stdout
    assert f"first {changed} (truncated)" in out.stderr


@pytest.mark.launch
def test_micro_batch_larger_than_the_training_set_is_refused(tmp_path, tiny_teacher):
    root = tmp_path / "few"
    for identity in ("s1", "s2"):
        (root / identity).mkdir(parents=True)
        for image in sorted((ORL / identity).glob("*.png"))[:4]:
            (root / identity / image.name).write_bytes(image.read_bytes())
    args = tiny_args(
        tmp_path / "run",
        tiny_teacher,
        f"data.train={root}",
        "data.val=split:1",
        "val.min_images=2",
        "student.replace_classifier=true",
        "data.micro_batch=8",
    )
    out = run_cmd(train_cmd(1, *args), check=False)
    assert out.returncode == 2
    assert "8 x 1 rank(s) = 8 images per micro-step, more than the 6 training images" in out.stderr


@pytest.mark.launch
def test_validation_that_shrinks_below_the_minimum_is_refused(tmp_path, tiny_teacher):
    args = tiny_args(tmp_path / "run", tiny_teacher, "val.every_nth=30")
    out = run_cmd(train_cmd(1, *args), check=False)
    assert out.returncode == 2
    error = error_lines(out.stderr)[0]
    assert "data.val: 3 validation image(s) (80 held out by data.val=split:2, every 30th" in error
    assert "lower val.every_nth" in error
    assert "\n" not in error
