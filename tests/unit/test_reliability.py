"""Bad data and full disks with the shipped configs: every reader of training and validation
images excludes what it cannot decode, file names that are not UTF-8 train, and a full disk ends a
run in one line (in process where one rank shows it; 2 ranks under torchrun where it takes two)."""

import json
import os
import shutil

import pytest
import torch

from crossres_dist.config import load_config
from crossres_dist.data import check as check_data
from crossres_dist.models import ModelSpec, build_model
from pipelines.sources import SplitSpec, load_splits
from tests.conftest import (
    LFW,
    ORL,
    REPO,
    needs_lfw,
)
from tests.golden import train_in_process

# configs/demo.yaml (BatchNorm re-estimated before every validation) on a few LFW identities,
# shortened; the re-estimation reads 128 views, more than the training split holds.
DEMO = str(REPO / "configs" / "demo.yaml")
SHORT = [
    "train.epochs=0",
    "train.max_steps=3",
    "val.every=3",
    "checkpoint.every=3",
    "train.log_every=1",
    "data.micro_batch=8",
    "optim.global_batch=16",
    "optim.warmup_steps=0",
    "val.bn_recalibrate_images=128",
    "train.progress_bar=false",
    "val.min_images=1",
    # As configs/vggface2_senet50.yaml: headers only before the run (3.3M files), so a truncated
    # JPEG is met by the readers themselves.
    "data.check=header",
]


def pretrain_on(faces, *extra: str) -> list[str]:
    """tests/tiny.yaml's teacher pretraining on a small folder of a few identities."""
    return [
        f"data.train={faces}",
        "run.stage=pretrain",
        "teacher.checkpoint=",
        "data.min_images_per_identity=1",
        "val.min_images=1",
        *extra,
    ]


def lfw_subset(root, identities: int = 5):
    root.mkdir(parents=True)
    for folder in sorted(LFW.iterdir())[:identities]:
        shutil.copytree(folder, root / folder.name)
    return root


def demo_teacher(path, classes: int):
    """A random teacher of configs/demo.yaml's architecture for `classes` identities."""
    torch.manual_seed(0)
    spec = ModelSpec(layers=(1, 1, 1, 1), width=16, se_reduction=4, num_classes=classes)
    torch.save(build_model(spec).state_dict(), path)
    return path


def truncate_a_training_jpeg(data, overrides) -> str:
    """Cut the first training image of the split in half: its header still reads."""
    cfg = load_config(DEMO, overrides)
    train = load_splits(SplitSpec.from_config(cfg.data)).train.samples
    victim = sorted(s.path for s in train)[0]
    raw = open(victim, "rb").read()
    open(victim, "wb").write(raw[: len(raw) // 2])
    return victim


@needs_lfw
@pytest.mark.parametrize("backend", ["dali", "torchvision"])
def test_truncated_training_jpeg_is_excluded_by_bn_reestimation_too(tmp_path, backend, capsys):
    data = lfw_subset(tmp_path / "faces")
    teacher = demo_teacher(tmp_path / "teacher.pt", 5)
    overrides = [
        f"data.train={data}",
        f"teacher.checkpoint={teacher}",
        f"data.backend={backend}",
        *SHORT,
    ]
    victim = truncate_a_training_jpeg(data, overrides)
    result, _ = train_in_process(overrides, tmp_path / "run", config=DEMO)
    assert result["step"] == 3 and result["final"]
    assert result["excluded_during_run"] == [victim]
    out = capsys.readouterr().out
    assert f"data: {victim} cannot be decoded" in out and "Traceback" not in out


def test_file_names_that_are_not_utf8_train(tmp_path, capsys):
    faces = tmp_path / "faces"
    for folder in [p for p in sorted(ORL.iterdir()) if p.is_dir()][:4]:
        shutil.copytree(folder, faces / folder.name)
    # A Latin-1 name, as a data set that has been through several tools may hold: bytes that are
    # no UTF-8 arrive in Python with surrogate escapes.
    first = sorted((faces / "s1").iterdir())[0]
    os.rename(bytes(first), os.fsencode(faces / "s1") + b"/caf\xe9.png")
    named = os.fsdecode(os.fsencode(faces / "s1") + b"/caf\xe9.png")
    assert check_data.main([str(faces), "--manifest", "none"]) == 0
    result, _ = train_in_process(pretrain_on(faces, "train.precision=fp32"), tmp_path / "run")
    assert result["step"] == 6 and not result["excluded_during_run"]
    splits = json.loads((tmp_path / "run" / "splits.json").read_text())
    images = sum(len(files) for _, _, files in os.walk(faces))
    assert splits["counts"]["train"] + splits["counts"]["val"] == images
    assert os.path.exists(named)
    assert "Traceback" not in capsys.readouterr().out


def test_check_data_names_an_empty_identity_folder_and_the_trainer_warns_of_duplicates(
    tmp_path, capsys
):
    faces = tmp_path / "faces"
    for folder in [p for p in sorted(ORL.iterdir()) if p.is_dir()][:3]:
        shutil.copytree(folder, faces / folder.name)
    (faces / "empty").mkdir()
    first, second = sorted(p for p in faces.iterdir() if p.name != "empty")[:2]
    shutil.copy(sorted(first.iterdir())[0], second / "copied_from_s1.png")
    assert check_data.main([str(faces)]) == 1
    out = capsys.readouterr().out
    assert "empty_identity_folder" in out and "empty (no images)" in out
    assert "duplicate" in out and "copied_from_s1.png" in out
    shutil.rmtree(faces / "empty")  # the trainer refuses an empty identity (min images)
    steps = ("train.max_steps=1", "val.every=1", "checkpoint.every=1")
    train_in_process(pretrain_on(faces, *steps), tmp_path / "run")
    out = capsys.readouterr().out
    assert "1 image(s) have the same contents as another image of the data set" in out


@needs_lfw
def test_truncated_validation_jpeg_is_named_before_the_run_and_left_out_when_allowed(tmp_path):
    """Validation and the teacher's cached validation features read the same held-out files:
    those are decoded before the run whatever data.check says, so a bad one is refused in one
    line naming it, or left out of both with data.skip_bad_files."""
    from crossres_dist.training.trainer import SetupError

    data = lfw_subset(tmp_path / "faces")
    teacher = demo_teacher(tmp_path / "teacher.pt", 5)
    overrides = [f"data.train={data}", f"teacher.checkpoint={teacher}", *SHORT]
    cfg = load_config(DEMO, overrides)
    held_out = load_splits(SplitSpec.from_config(cfg.data)).val.samples
    victim = sorted(s.path for s in held_out)[0]
    raw = open(victim, "rb").read()
    open(victim, "wb").write(raw[: len(raw) // 2])
    with pytest.raises(SetupError, match=rf"unusable image\(s\) \(truncated 1\), first {victim}"):
        train_in_process(overrides, tmp_path / "refused", config=DEMO)
    result, _ = train_in_process(
        [*overrides, "data.skip_bad_files=true"], tmp_path / "run", config=DEMO
    )
    assert result["skipped_before_run"] == [victim] and result["step"] == 3


@needs_lfw
def test_evaluation_refuses_an_unreadable_image_in_one_line_before_any_network(
    tmp_path, tiny_teacher, capsys
):
    from crossres_dist import evaluate

    data = lfw_subset(tmp_path / "faces", identities=3)
    victim = sorted(data.rglob("*.jpg"))[4]
    raw = victim.read_bytes()
    victim.write_bytes(raw[: len(raw) // 2])
    code = evaluate.main(
        [
            "--config",
            str(REPO / "tests" / "tiny.yaml"),
            "--checkpoint",
            str(tiny_teacher),
            "--data",
            str(data),
            "--out",
            str(tmp_path / "eval"),
            "--no-plots",
        ]
    )
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1
    assert errors[0].startswith(f"error: {victim}: this image cannot be read (truncated); 1 of ")
    assert not (tmp_path / "eval" / "cache").exists()  # refused before any extraction


def test_teacher_feature_cache_key_follows_validation_images_replaced_in_place(tmp_path):
    from crossres_dist.training.validation import ValidationData
    from pipelines import Loader, ViewSettings
    from pipelines.sources import Sample

    faces = [p for p in sorted((ORL / "s1").iterdir())][:3]
    copies = []
    for face in faces:
        copies.append(tmp_path / face.name)
        shutil.copy(face, copies[-1])
    loader = Loader("torchvision", ViewSettings(32, 28, 0.0, [8]), 8, torch.device("cpu"), 1, 0)
    data = ValidationData([Sample(str(p), 0) for p in copies], loader)
    before = data.fingerprint()
    assert data.fingerprint() == before
    shutil.copy(faces[0], copies[1])  # another face under the same name
    assert data.fingerprint() != before
