"""The behaviour gate (tests/golden.py): every golden file is what this code computes, and the
message of a failure names the file, how to regenerate it and which published results it makes
stale."""

import json

import pytest
import torch

from tests.golden import GOLDEN, RTOL, compare, golden_values
from tools import published as results

FILES = golden_values()


@pytest.mark.parametrize("name", sorted(FILES))
def test_behaviour_matches_the_golden_file(name):
    path = GOLDEN / name
    assert path.is_file(), f"{path} is missing: run `make golden` and commit tests/assets/golden/"
    differences = compare(json.loads(path.read_text()), json.loads(json.dumps(FILES[name]())))
    affected = results.affected_by(name)
    assert not differences, (
        f"the behaviour recorded in {path.relative_to(GOLDEN.parent.parent.parent)} moved "
        f"({len(differences)} values; first: {'; '.join(differences[:3])}). If the change is "
        f"meant, run `make golden` and commit the file; the published results made with the old "
        f"behaviour are then stale: {', '.join(affected) or 'none'} (`make stale` lists how to "
        "regenerate each)"
    )


def test_compare_catches_a_one_percent_change_and_ignores_float_noise():
    trace = {"loss": [4.4, 4.35], "param_checksum": 115.5, "what": "x"}
    assert compare(trace, {**trace, "param_checksum": 115.5 * (1 + 1e-7)}) == []
    moved = compare(trace, {**trace, "loss": [4.4 * 1.01, 4.35]})
    assert moved == [f".loss[0]: 4.4 -> {4.4 * 1.01!r}"]
    assert compare(trace, {"loss": [4.4], "param_checksum": 115.5}) == [
        ".loss: 2 entries, now 1",
        ".what: present in only one of them",
    ]


def test_every_result_names_the_golden_files_it_was_made_with():
    for name in results.names():
        _, prov = results.load(name)
        assert isinstance(prov["golden"], dict) and set(prov["golden"]) <= set(FILES), name


def test_a_checkpoint_written_before_the_components_refactor_resumes_exactly(tmp_path):
    """tests/assets/checkpoint-f555069: step 3 of a tiny crossres run (tests/tiny.yaml, the
    twin, fp32), written by commit f555069, before the trainer became components (TrainState,
    Validator, the degradation and model registries). Resumed by today's code, it finishes
    where an uninterrupted run of today's code does, to the bit."""
    import shutil

    from crossres_dist.checkpointing.manager import load_checkpoint
    from tests.conftest import REPO
    from tests.golden import train_in_process

    assets = REPO / "tests" / "assets" / "checkpoint-f555069"
    shutil.copy(assets / "teacher.pt", tmp_path / "teacher.pt")
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    shutil.copy(assets / "step_00000003.pt", tmp_path / "run" / "checkpoints")
    common = [
        f"teacher.checkpoint={tmp_path / 'teacher.pt'}",
        "data.backend=torchvision",
        "train.precision=fp32",
        "train.device=cpu",
    ]
    resumed, rows = train_in_process(common, tmp_path / "run")
    uninterrupted, _ = train_in_process(common, tmp_path / "fresh")
    assert resumed["step"] == 6 and rows[0]["step"] == 6  # it resumed: no step before 4 logged
    # Resuming is exact: a second resume from the asset gives the same bits.
    (tmp_path / "again" / "checkpoints").mkdir(parents=True)
    shutil.copy(assets / "step_00000003.pt", tmp_path / "again" / "checkpoints")
    again, _ = train_in_process(common, tmp_path / "again")
    assert again["param_checksum_per_rank"] == resumed["param_checksum_per_rank"]
    assert again["final"] == resumed["final"]
    # Against an uninterrupted run of today's code: to the bit where this CPU computes the first
    # three steps as the asset's machine did; elsewhere (another vector unit sums in another
    # order, 1e-8 apart at step 3) within the golden files' tolerance.
    asset = load_checkpoint(assets / "step_00000003.pt")["student"]
    fresh = load_checkpoint(tmp_path / "fresh" / "checkpoints" / "step_00000003.pt")["student"]
    if all(torch.equal(asset[k], fresh[k]) for k in asset):
        assert resumed["param_checksum_per_rank"] == uninterrupted["param_checksum_per_rank"]
        assert resumed["final"] == uninterrupted["final"]
    else:
        assert resumed["param_checksum_per_rank"] == pytest.approx(
            uninterrupted["param_checksum_per_rank"], rel=RTOL
        )
        for key, value in uninterrupted["final"].items():
            if isinstance(value, float):
                assert resumed["final"][key] == pytest.approx(value, rel=RTOL, abs=1e-6), key
