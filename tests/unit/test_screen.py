"""crossres-screen (crossres_dist/eval/screen.py): training faces the teacher matches with a test
person are dropped, at a one-against-many threshold calibrated on people known to be others;
with dlib's real network on real LFW faces, aligned by crossres-align."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from crossres_dist.eval.screen import (
    ScreenError,
    best_matches,
    calibrated_threshold,
    main,
    same_person_recall,
)
from tests.conftest import LFW, SHARED, needs_dlib, needs_lfw

TEST_PEOPLE = SHARED / "data" / "lfw_deepfunneled_2to9"


def test_best_matches_in_chunks_are_those_of_the_whole_matrix():
    torch.manual_seed(0)
    queries, gallery = torch.randn(50, 8), torch.randn(30, 8)
    best, where = best_matches(queries, gallery, chunk=7)
    full = (
        torch.nn.functional.normalize(queries, dim=1)
        @ torch.nn.functional.normalize(gallery, dim=1).T
    )
    assert np.allclose(best, full.max(1).values.numpy(), atol=1e-6)
    assert (where == full.argmax(1).numpy()).all()


def test_the_threshold_is_the_cosine_that_the_stated_share_of_strangers_reach():
    strangers = np.linspace(0.80, 0.99, 100)
    threshold = calibrated_threshold(strangers, 0.05)
    assert (strangers >= threshold).mean() <= 0.05 + 1e-9
    assert (strangers >= threshold).sum() == 5
    with pytest.raises(ScreenError, match="--false-match"):
        calibrated_threshold(strangers, 1.5)


def test_same_person_recall_counts_faces_whose_person_has_another_face_over_it():
    features = torch.tensor([[1.0, 0.0], [0.99, 0.14], [0.0, 1.0], [0.6, 0.8], [1.0, 1.0]])
    labels = np.array([0, 0, 1, 1, 2])  # person 2 has one face: not counted
    recall = same_person_recall(features, labels, threshold=0.95)
    assert recall == {"faces": 4, "reached": 2, "recall": 0.5}


def reencoded(path: Path, target: Path) -> None:
    """The same photograph as another site would serve it: 90 % of its size, JPEG quality 80."""
    with Image.open(path) as image:
        smaller = image.resize((round(image.width * 0.9), round(image.height * 0.9)))
    buffer = io.BytesIO()
    smaller.save(buffer, format="JPEG", quality=80)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(buffer.getvalue())


@needs_lfw
@needs_dlib
def test_a_planted_test_person_is_dropped_and_a_stranger_kept(tmp_path, capsys):
    from crossres_dist.eval.align_faces import align_set

    people = [p for p in sorted(TEST_PEOPLE.iterdir()) if p.is_dir()][:3]
    raw_test = tmp_path / "raw_test"
    for person in people:
        for image in sorted(person.glob("*.jpg"))[:2]:
            (raw_test / person.name).mkdir(parents=True, exist_ok=True)
            (raw_test / person.name / image.name).write_bytes(image.read_bytes())
    planted = sorted(people[0].glob("*.jpg"))[0]
    stranger = sorted(next(p for p in sorted(LFW.iterdir()) if p.is_dir()).glob("*.jpg"))
    raw_train, raw_loose = tmp_path / "raw_train", tmp_path / "raw_loose"
    # A labelled source: one identity holds two copies of the test person's photograph and a
    # stranger's face (so all three go: an identity matched twice is that person); another
    # identity is the stranger alone (kept).
    reencoded(planted, raw_train / "mixed" / "copy_a.jpg")
    reencoded(planted, raw_train / "mixed" / "copy_b.jpg")
    reencoded(stranger[0], raw_train / "mixed" / "other.jpg")
    reencoded(stranger[1], raw_train / "stranger" / "face.jpg")
    # An unlabelled source: one copy of the test person among strangers' faces.
    reencoded(planted, raw_loose / "unlabeled" / "copy.jpg")
    reencoded(stranger[2], raw_loose / "unlabeled" / "face.jpg")
    aligned = tmp_path / "aligned"
    for name, raw in (("test", raw_test), ("labelled", raw_train), ("loose", raw_loose)):
        align_set(str(raw), aligned / name, "dlib150", workers=1)
    out = tmp_path / "screened"
    code = main(
        [
            str(aligned / "labelled"),
            "--unlabelled",
            str(aligned / "loose"),
            "--test-people",
            str(aligned / "test"),
            "--threshold",
            "0.96",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    report = json.loads((out / "screen_report.json").read_text())
    labelled = report["sources"]["labelled"]
    assert labelled["identities_dropped_whole"] == {"mixed": people[0].name}
    assert labelled["dropped"] == 3 and labelled["kept"] == 1
    kept = (out / "labelled.txt").read_text().splitlines()
    assert not any("mixed/" in line for line in kept)
    assert any(line.endswith(" stranger") for line in kept)
    loose = report["sources"]["loose"]
    assert loose["dropped"] == 1 and loose["matched_test_people"] == {people[0].name: 1}
    assert "copy" not in (out / "loose.txt").read_text()
    # The lists are read as training reads a list file, relative to their folder.
    from pipelines.sources import load_source

    assert len(load_source(str(out / "labelled.txt")).samples) == 1
    assert "labelled: 3 of 4 dropped (1 identities whole: mixed)" in capsys.readouterr().out


def test_screening_without_a_threshold_or_faces_to_calibrate_on_is_one_line(tmp_path, capsys):
    code = main(["x", "--test-people", str(tmp_path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: --test-people")
