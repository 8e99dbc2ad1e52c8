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
from tests.conftest import LFW, SHARED, needs_dlib, needs_lfw

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


UTKFACE = SHARED / "data" / "utkface_crop_part1" / "unlabeled"
# Tightly cropped faces of UTKFace that dlib's detector finds only with some context around them
# (runs/aligned/utkface's report: 313 of 9,780 were found only when padded).
TIGHT = ("16_0_4_20170103233832570.jpg.chip.jpg", "49_1_0_20170104184759926.jpg.chip.jpg")


@pytest.mark.skipif(
    not UTKFACE.is_dir(),
    reason=f"{UTKFACE} is absent; runs wherever ../shared holds UTKFace's part 1 (CI does)",
)
def test_a_tight_crop_is_found_in_the_padded_image_and_the_report_says_so(tmp_path, capsys):
    raw = tmp_path / "raw" / "unlabeled"
    raw.mkdir(parents=True)
    for name in TIGHT:
        (raw / name).write_bytes((UTKFACE / name).read_bytes())
    assert align_set(str(raw.parent), tmp_path / "plain", "dlib150", workers=1) == {"no_face": 2}
    counts = align_set(str(raw.parent), tmp_path / "padded", "dlib150", workers=1, pad=0.25)
    assert counts == {"aligned": 2, "aligned_padded": 2}
    rows = report(tmp_path / "padded")
    assert all(r["detail"] == "found in the image padded by 0.25" for r in rows)
    # A rerun keeps the chips and what was found of them.
    again = align_set(str(raw.parent), tmp_path / "padded", "dlib150", workers=1, pad=0.25)
    assert again == counts and report(tmp_path / "padded") == rows
    assert all(Image.open(tmp_path / "padded" / r["chip"]).size == (150, 150) for r in rows)
    assert main([str(raw.parent), str(tmp_path / "o"), "--pad", "2"]) == 2
    assert "error: --pad: 2.0 is not a fraction" in capsys.readouterr().err
