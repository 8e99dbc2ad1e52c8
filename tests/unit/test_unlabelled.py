"""Faces without identity labels as training data (issue 55): several labelled sources kept apart,
unlabelled sources trained with the feature term alone, a run with no labelled source at all,
checkpoint selection by the cosine to the teacher, and the teacher's features cached."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from crossres_dist.checkpointing.manager import load_checkpoint
from crossres_dist.config import ConfigError, load_config
from crossres_dist.training.objective import CrossResolutionObjective
from pipelines.sources import (
    UNLABELLED,
    DataError,
    SplitSpec,
    load_labelled,
    load_splits,
    load_unlabelled,
    sample_key,
    seen_by,
)
from tests.conftest import LFW, ORL, TINY, needs_lfw
from tests.golden import tiny_teacher, train_in_process


@needs_lfw
def test_labelled_sources_keep_their_identities_apart_and_in_order():
    merged = load_labelled(["embedded:orl", str(LFW)])
    orl = load_labelled("embedded:orl")
    assert len(merged.identities) == 40 + 96
    # The first source's people first, each named after its source; labels follow that order.
    assert merged.identities["orl/s1"] == orl.identities["s1"]
    assert min(v for k, v in merged.identities.items() if k.startswith("lfw_")) == 40
    assert all(name.split("/")[0] in ("orl", LFW.name) for name in merged.identities)
    # The label map a checkpoint records gives the same labels back.
    again = load_labelled(["embedded:orl", str(LFW)], identities=merged.identities)
    assert again.samples == merged.samples
    with pytest.raises(DataError, match="two sources are named 'orl_att_faces'"):
        load_labelled([str(ORL), str(ORL)])


def test_unlabelled_faces_are_every_image_under_a_folder_with_no_label(tmp_path):
    faces = load_unlabelled([str(ORL)])
    assert len(faces) == 400 and {s.label for s in faces} == {UNLABELLED}
    with pytest.raises(DataError, match="data.unlabelled: .*missing: not found"):
        load_unlabelled([str(tmp_path / "missing")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        load_unlabelled([str(tmp_path / "empty")])


@needs_lfw
def test_the_split_record_names_unlabelled_faces_only_when_there_are_some():
    plain = SplitSpec("embedded:orl", "split:2", "split:3")
    assert "unlabelled" not in plain.as_dict()  # the records of earlier runs stay as they were
    spec = SplitSpec("embedded:orl", "split:2", "split:3", unlabelled=(str(LFW),))
    record = {**load_splits(spec).describe(), **spec.as_dict()}
    assert record["counts"]["unlabelled"] == 1301 and record["unlabelled"] == [str(LFW)]
    # What a checkpoint trained on includes its unlabelled faces: the evaluator refuses them.
    seen = seen_by(record)
    lfw_face = next(p for p in sorted(LFW.rglob("*.jpg")))
    assert sample_key(str(lfw_face)) in seen.train


def test_unlabelled_faces_get_the_feature_term_only():
    torch.manual_seed(0)
    features = torch.randn(6, 8, requires_grad=True)
    logits = torch.randn(6, 5, requires_grad=True)
    teacher = torch.randn(6, 8)
    labels = torch.tensor([0, 3, UNLABELLED, 1, UNLABELLED, 4])
    objective = CrossResolutionObjective(lambda_feat=2.0, feature_loss="cosine", unlabelled=True)
    losses = objective(features, logits, labels, teacher)
    known = labels >= 0
    expected_ce = F.cross_entropy(logits[known], labels[known], reduction="sum") / 6
    assert torch.allclose(losses["ce"], expected_ce)
    expected_feat = (1 - F.cosine_similarity(features, teacher, dim=1)).mean()
    assert torch.allclose(losses["loss"], expected_ce + 2.0 * expected_feat)
    losses["ce"].backward()
    assert torch.all(logits.grad[~known] == 0) and torch.any(logits.grad[known] != 0)
    # A batch of labelled faces alone: the same cross-entropy as a run without unlabelled data.
    plain = CrossResolutionObjective(lambda_feat=2.0, feature_loss="cosine")
    all_known = torch.tensor([0, 3, 2, 1, 0, 4])
    masked = objective(features, logits, all_known, teacher)["ce"]
    assert torch.allclose(masked, plain(features, logits, all_known, teacher)["ce"])
    # No classifier (no labelled source): no cross-entropy, the feature term alone.
    alone = objective(features, logits[:, :0], torch.full((6,), UNLABELLED), teacher)
    assert alone["ce"] == 0 and torch.allclose(alone["loss"], 2.0 * expected_feat)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["data.unlabelled=[x]", "method.lambda_feat=0"], "data.unlabelled: .*read for nothing"),
        (["data.unlabelled=[x]", "head.name=arcface", "head.partial_fc=true"], "partial_fc"),
        (["data.unlabelled=[x]", "method.feature_weight=teacher_correct"], "feature_weight"),
        (["data.train=", "data.unlabelled=[x]", "data.val=y"], "val.select_by: top1 needs"),
        (["data.train=", "data.unlabelled=[x]"], "data.val: split:2 holds out"),
        (["data.train=", "data.val=y"], "data.train: names no faces"),
        (["val.select_by=feature", "run.stage=pretrain"], "val.select_by: feature"),
        # lambda = 0 trains nothing toward the teacher: the closest checkpoint is the start.
        (["val.select_by=feature", "method.lambda_feat=0"], "needs .*method.lambda_feat > 0"),
        (["teacher.feature_cache=auto", "method.feature_weight=teacher_correct"], "feature_cache"),
    ],
)
def test_what_unlabelled_faces_cannot_be_combined_with_is_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_config(TINY, ["teacher.checkpoint=t.pt", *overrides])
    assert "\n" not in str(err.value)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    return tiny_teacher(tmp_path_factory.mktemp("teacher") / "teacher.pt")


@pytest.fixture(scope="module")
def lfw_people(tmp_path_factory) -> Path:
    """A list file of every face of the LFW sample's first 20 people (square faces)."""
    if not LFW.is_dir():
        pytest.skip(f"{LFW} is absent; runs wherever ../shared holds the LFW sample (CI does)")
    people = sorted(p for p in LFW.iterdir() if p.is_dir())[:20]
    lines = [f"{face} {person.name}" for person in people for face in sorted(person.glob("*.jpg"))]
    path = tmp_path_factory.mktemp("lfw") / "lfw_people.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def common(teacher: Path) -> list[str]:
    return [f"teacher.checkpoint={teacher}", "train.device=cpu", "train.precision=fp32"]


def test_a_run_on_labelled_and_unlabelled_faces(teacher, lfw_people, tmp_path):
    result, rows = train_in_process(
        [*common(teacher), f"data.unlabelled=[{lfw_people}]", "val.select_by=feature"],
        tmp_path / "run",
    )
    log = (tmp_path / "run" / "train.log").read_text()
    faces = len(lfw_people.read_text().splitlines())
    assert f"{faces} of the training faces have no identity label" in log
    assert "cosine to the teacher full=" in log
    assert result["step"] == 6 and "val/teacher_cos" in result["final"]
    logged = [r for r in rows if "train/ce" in r]
    assert logged and all(r["train/feat"] > 0 and r["train/ce"] > 0 for r in logged)
    splits = json.loads((tmp_path / "run" / "splits.json").read_text())
    assert splits["counts"]["unlabelled"] == faces and splits["counts"]["train"] == 320


def test_a_run_with_no_labelled_source_has_no_classifier(teacher, lfw_people, tmp_path):
    result, rows = train_in_process(
        [
            *common(teacher),
            "data.train=",
            f"data.unlabelled=[{lfw_people}]",
            "data.val=embedded:orl",
            "val.every_nth=8",
            "val.select_by=feature",
        ],
        tmp_path / "pure",
    )
    final = result["final"]
    assert not any(k.endswith(("top1", "/ce")) for k in final)
    assert 0 < final["val/teacher_cos"] <= 1
    student = load_checkpoint(tmp_path / "pure" / "checkpoints" / "best.pt")
    assert not any(k.startswith("fc.") for k in student["student"])
    assert all(r["train/ce"] == 0 for r in rows if "train/ce" in r)


def test_the_teacher_cache_changes_how_often_the_teacher_runs_not_what_is_learnt(
    teacher, lfw_people, tmp_path
):
    # LFW's square faces with a crop as large as the shorter side: one fixed view each.
    square = [
        *common(teacher),
        f"data.train={lfw_people}",
        "student.replace_classifier=true",
        "data.resize_shorter=28",
        "train.log_every=1",
    ]
    plain, plain_rows = train_in_process(square, tmp_path / "plain")
    store = tmp_path / "store"
    cached, cached_rows = train_in_process(
        [*square, f"teacher.feature_cache={store}"], tmp_path / "cached"
    )
    losses = [r["train/loss"] for r in plain_rows if "train/loss" in r]
    assert losses == pytest.approx([r["train/loss"] for r in cached_rows if "train/loss" in r])
    assert cached["param_checksum_per_rank"] == pytest.approx(plain["param_checksum_per_rank"])
    log = (tmp_path / "cached" / "train.log").read_text()
    assert "24 micro-batches read from it, 0 ran the teacher" in log
    assert len(list(store.glob("teacher-*-grey1-flip0.pt"))) == 1  # data.grayscale_p > 0
    train_in_process([*square, f"teacher.feature_cache={store}"], tmp_path / "again")
    assert "0 images computed now" in (tmp_path / "again" / "train.log").read_text()
