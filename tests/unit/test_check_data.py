"""The data checker finds every planted bad file, with its path."""

from crossres_dist.data.check import check_dataset
from tests.conftest import ORL
from tests.fixtures.check_data import (
    plant,
)


def test_checker_finds_every_planted_problem(tmp_path):
    planted = plant(tmp_path / "faces")
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
