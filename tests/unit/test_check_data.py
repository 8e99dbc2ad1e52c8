"""The data checker finds every planted bad file, with its path."""

import numpy as np
from PIL import Image

from crossres_dist.data.check import check_dataset
from tests.conftest import ORL


def _plant(root):
    good = sorted((ORL / "s1").glob("*.png"))
    for identity in ("alice", "bob", "carol"):
        (root / identity).mkdir(parents=True)
        for i, src in enumerate(good[:4]):
            (root / identity / f"{i}.png").write_bytes(src.read_bytes())
    rgb = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(root / "alice" / "ok.jpg", quality=90)
    planted = {
        "zero_byte": root / "alice" / "empty.jpg",
        "truncated": root / "alice" / "cut.jpg",
        "not_an_image": root / "bob" / "notes.jpg",
        "unsupported_mode_CMYK": root / "bob" / "cmyk.jpg",
        "unsupported_mode_P": root / "bob" / "palette.png",
        "unsupported_mode_RGBA": root / "carol" / "alpha.png",
        "unsupported_mode_I;16": root / "carol" / "deep.png",
        "smaller_than_16px": root / "carol" / "tiny.png",
    }
    planted["zero_byte"].write_bytes(b"")
    data = (root / "alice" / "ok.jpg").read_bytes()
    planted["truncated"].write_bytes(data[: len(data) // 2])
    planted["not_an_image"].write_text("this is not a JPEG")
    Image.fromarray(rgb).convert("CMYK").save(planted["unsupported_mode_CMYK"])
    Image.fromarray(rgb).convert("P").save(planted["unsupported_mode_P"])
    Image.fromarray(rgb).convert("RGBA").save(planted["unsupported_mode_RGBA"])
    Image.fromarray(np.full((32, 32), 40000, np.uint16)).save(planted["unsupported_mode_I;16"])
    Image.fromarray(rgb[:8, :8]).save(planted["smaller_than_16px"])
    (root / "dave").mkdir()
    (root / "dave" / "only.png").write_bytes(good[0].read_bytes())  # too few, and a duplicate
    return planted


def test_checker_finds_every_planted_problem(tmp_path):
    planted = _plant(tmp_path / "faces")
    report = check_dataset(str(tmp_path / "faces"), min_side=16, min_images=2)
    for kind, path in planted.items():
        assert str(path) in report.problems[kind], (kind, report.problems.get(kind))
    assert report.problems["identity_with_fewer_than_2_images"] == ["dave (1)"]
    duplicates = report.problems["duplicate"]
    assert any(str(tmp_path / "faces" / "dave" / "only.png") in d for d in duplicates)
    assert report.bad_files == {str(planted[k]) for k in ("zero_byte", "truncated", "not_an_image")}


def test_clean_dataset_passes():
    report = check_dataset(str(ORL), min_side=16, min_images=2)
    assert report.files == 400 and report.identities == 40
    assert not report.problems
