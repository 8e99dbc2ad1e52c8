"""crossres-align (crossres_dist/eval/align_faces.py) on real LFW faces: dlib's chips and
ArcFace's template, a row in the report for every image, nothing dropped in silence."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crossres_dist.eval.align_faces import REPORT, AlignError, align_set, main
from tests.conftest import LFW, needs_dlib, needs_lfw

pytestmark = [needs_lfw, needs_dlib]


@pytest.fixture
def raw(tmp_path) -> Path:
    """Two LFW people (3 faces each), a grey picture with no face, a file that is no image."""
    root = tmp_path / "raw"
    for person in sorted(LFW.iterdir())[:2]:
        (root / person.name).mkdir(parents=True)
        for image in sorted(person.glob("*.jpg"))[:3]:
            shutil.copy(image, root / person.name / image.name)
    first = sorted(root.iterdir())[0]
    Image.fromarray(np.full((120, 120, 3), 128, np.uint8)).save(first / "grey.jpg")
    (first / "broken.jpg").write_bytes(b"not a jpeg at all")
    return root


def report(out: Path) -> list[dict]:
    with open(out / REPORT) as f:
        return list(csv.DictReader(f))


def test_dlib_chips_and_a_row_for_every_image(raw, tmp_path, capsys):
    out = tmp_path / "out"
    counts = align_set(str(raw), out, "dlib150", workers=1)
    assert counts == {"aligned": 6, "no_face": 1, "undecodable": 1}
    rows = report(out)
    assert len(rows) == 8
    by_status = {r["source"].rsplit("/", 1)[1]: r["status"] for r in rows}
    assert by_status["grey.jpg"] == "no_face" and by_status["broken.jpg"] == "undecodable"
    chips = sorted(out.rglob("*.png"))
    assert len(chips) == 6
    assert all(Image.open(c).size == (150, 150) for c in chips)
    err = capsys.readouterr().err
    assert "grey.jpg: no_face" in err and "broken.jpg: undecodable" in err
    # A rerun keeps what is there and reports the same.
    again = align_set(str(raw), out, "dlib150", workers=1)
    assert again["aligned"] == 6 and len(report(out)) == 8


def test_arcface_template_chips_hold_a_face(raw, tmp_path, capsys):
    import dlib

    out = tmp_path / "arc"
    counts = align_set(str(raw), out, "arcface112", workers=1)
    assert counts["aligned"] == 6
    assert "arcface112 from dlib's 5 points" in capsys.readouterr().err
    detector = dlib.get_frontal_face_detector()
    for chip in sorted(out.rglob("*.png")):
        image = np.asarray(Image.open(chip))
        assert image.shape == (112, 112, 3)
        faces = detector(np.asarray(Image.fromarray(image).resize((224, 224))), 1)
        assert len(faces) == 1  # the face fills the chip, centred


def test_no_face_anywhere_is_an_error_and_a_bad_template_one_line(tmp_path, capsys):
    empty = tmp_path / "none" / "someone"
    empty.mkdir(parents=True)
    Image.fromarray(np.full((100, 100, 3), 30, np.uint8)).save(empty / "dark.jpg")
    assert main([str(tmp_path / "none"), str(tmp_path / "o"), "--workers", "1"]) == 2
    assert "no face found in any image" in capsys.readouterr().err
    with pytest.raises(AlignError, match="--template: 'vgg' is not one of dlib150, arcface112"):
        align_set(str(tmp_path / "none"), tmp_path / "o2", "vgg")
