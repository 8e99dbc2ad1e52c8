"""bench/study_compare.py: paired differences of published recipe studies, pooled over teachers,
on studies written here with numbers whose differences are worked by hand."""

import json

import pytest

from bench import study_compare


def write_study(results, name, runs, teacher_overrides=None):
    folder = results / name
    folder.mkdir(parents=True)
    (folder / "result.json").write_text(json.dumps({"runs": runs, "teacher": {}, "variants": {}}))
    command = "python bench/recipe_study.py --data D --name x --readme"
    if teacher_overrides:
        command += " --teacher-overrides " + teacher_overrides + " --variants a b"
    provenance = {"command": command, "hardware": {"cpu": "AMD EPYC", "cpus": 2}}
    (folder / "provenance.json").write_text(json.dumps(provenance))


def seeds(*values):
    return [{"open acc 8": v} for v in values]


@pytest.fixture
def results(tmp_path):
    # Teacher 0: A - B = +0.02, +0.03, +0.04; teacher 1: +0.01, +0.03, +0.05 (pooled mean 0.03,
    # sd 0.0141); C only in the first study, C - B = -0.05, -0.06, -0.04.
    write_study(
        tmp_path,
        "s0",
        {"a": seeds(0.62, 0.63, 0.64), "b": seeds(0.60, 0.60, 0.60), "c": seeds(0.55, 0.54, 0.56)},
    )
    write_study(
        tmp_path,
        "s1",
        {"a": seeds(0.71, 0.73, 0.75), "b": seeds(0.70, 0.70, 0.70)},
        teacher_overrides="run.seed=1",
    )
    return tmp_path


def test_pooled_paired_differences_and_verdicts(results):
    text, rows = study_compare.report(results, ["s0", "s1"], ["a:b", "c:b"], ["open acc 8"])
    ab, cb = rows
    assert ab["per_study"]["s0"] == pytest.approx([0.02, 0.03, 0.04])
    assert ab["mean"] == pytest.approx(0.03)
    assert ab["sd"] == pytest.approx(0.0141421, rel=1e-4)
    assert (ab["favouring_a"], ab["pairs"], ab["verdict"]) == (6, 6, "`a` ahead")
    # The study without C adds no pairs and shows a dash.
    assert cb["per_study"]["s1"] is None and cb["pairs"] == 3
    assert cb["mean"] == pytest.approx(-0.05) and cb["verdict"] == "`b` ahead"
    assert "| `c` - `b` | open acc 8 | -0.050 | - | -0.050 (0.010) | 0/3 | `b` ahead |" in text
    assert "`s1`: teacher configs/demo_teacher.yaml with run.seed=1, on AMD EPYC, 3 seeds" in text
    assert "`s0`: teacher configs/demo_teacher.yaml as it is, on AMD EPYC" in text


def test_studies_that_disagree_in_sign_are_level():
    # Pooled mean +0.033 over sd 0.026, but the third study favours B.
    per_study = [[0.05, 0.05, 0.05], [0.05, 0.05, 0.05], [0.0, -0.001, -0.002]]
    mean, sd, favour, pairs, said = study_compare.verdict(per_study, "a", "b")
    assert mean > sd and (favour, pairs, said) == (6, 9, "level")
    # The same signs with a spread larger than the mean.
    assert study_compare.verdict([[0.05, -0.04, 0.02]], "a", "b")[4] == "level"


@pytest.mark.parametrize(
    "studies, comparison, metric, message",
    [
        (["missing"], "a:b", "open acc 8", "missing/result.json: not a published recipe study"),
        (["s0"], "a:z", "open acc 8", "no study ran both 'a' and 'z'"),
        (["s0"], "a", "open acc 8", "--compare 'a': expected A:B"),
        (["s0"], "a:b", "open tar 8", "s0: no metric 'open tar 8'"),
    ],
)
def test_bad_requests_are_named_in_one_line(results, capsys, studies, comparison, metric, message):
    with pytest.raises(SystemExit) as stop:
        study_compare.main(
            [
                "--results",
                str(results),
                "--studies",
                *studies,
                "--compare",
                comparison,
                "--metrics",
                metric,
            ]
        )
    assert message in str(stop.value) and "\n" not in str(stop.value)
