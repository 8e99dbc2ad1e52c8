"""Paired differences between the variants of published recipe studies, pooled over teachers.

    python bench/study_compare.py --studies study-lfw-open study-lfw-open-teacher1 \
        --compare recipe:recipe-l0 recipe-arcface:recipe

A study's spread is over students only: every student of `results/study-NAME/` follows one
teacher, and which teacher a study draws moves all of its students together. So a choice (a head,
a feature term) is read here over several studies of the same grid with different teachers.

Within a study, variant A and variant B trained with the same seed see the same faces in the same
order against the same teacher: their difference, seed by seed, is paired. This prints, for each
comparison A:B and metric, the mean paired difference A - B in each study, then over every
(teacher, seed) pair: its mean, its standard deviation and how many pairs favour A. The verdict is
"A ahead" only where the pooled mean exceeds that standard deviation and every study's mean has the
same sign, "B ahead" in the mirror case, "level" otherwise. A study that did not run both variants
shows "-" and adds no pairs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

COMPARISONS = (
    "recipe:recipe-l0",
    "recipe-arcface:recipe",
    "recipe-cosface:recipe",
    "recipe-arcface:recipe-arcface-l0",
    "recipe-arcface-l0:recipe-l0",
    "recipe-rel:recipe-l0",
    "recipe-conf:recipe-l0",
    "recipe-unpaired:recipe-unpaired-l0",
    "recipe-unpaired:recipe",
    "recipe-adaface:recipe",
)
METRICS = ("open acc 8", "open acc 16", "open acc full", "open tar 8", "rank1 8>full", "top1 8")


class StudyError(ValueError):
    """A study, a variant or a metric the comparison asks for is not there."""


def load_runs(results: Path, study: str) -> dict[str, list[dict]]:
    path = results / study / "result.json"
    try:
        return json.loads(path.read_text())["runs"]
    except (OSError, ValueError, KeyError) as err:
        raise StudyError(f"{path}: not a published recipe study ({err})") from None


def teacher_of(results: Path, study: str) -> str:
    """How the study's teacher was pretrained (its --teacher-overrides, or the default) and on
    which CPU: the same code rounds differently on another CPU, and 40 epochs amplify it."""
    try:
        provenance = json.loads((results / study / "provenance.json").read_text())
        command = provenance["command"]
    except (OSError, ValueError, KeyError):
        return "unknown"
    words = command.split()
    overrides = []
    if "--teacher-overrides" in words:
        for word in words[words.index("--teacher-overrides") + 1 :]:
            if word.startswith("--"):
                break
            overrides.append(word)
    teacher = "configs/demo_teacher.yaml " + (
        "with " + " ".join(overrides) if overrides else "as it is"
    )
    cpu = provenance.get("hardware", {}).get("cpu")
    return teacher + (f", on {cpu}" if cpu else "")


def paired(
    runs: dict[str, list[dict]], study: str, a: str, b: str, metric: str
) -> list[float] | None:
    """A - B seed by seed (both variants' runs are listed in the study's seed order); None where
    the study did not run both."""
    if a not in runs or b not in runs:
        return None
    if len(runs[a]) != len(runs[b]):
        raise StudyError(f"{study}: {a!r} and {b!r} ran different numbers of seeds")
    try:
        return [x[metric] - y[metric] for x, y in zip(runs[a], runs[b])]
    except KeyError:
        raise StudyError(f"{study}: no metric {metric!r} in the runs of {a!r} or {b!r}") from None


def verdict(per_study: list[list[float]], a: str, b: str) -> tuple[float, float, int, int, str]:
    """(pooled mean, its standard deviation, pairs favouring A, pairs, the verdict)."""
    pooled = [d for differences in per_study for d in differences]
    mean = statistics.mean(pooled)
    sd = statistics.stdev(pooled) if len(pooled) > 1 else 0.0
    means = [statistics.mean(d) for d in per_study]
    if mean > sd and all(m > 0 for m in means):
        said = f"`{a}` ahead"
    elif -mean > sd and all(m < 0 for m in means):
        said = f"`{b}` ahead"
    else:
        said = "level"
    return mean, sd, sum(d > 0 for d in pooled), len(pooled), said


def report(
    results: Path, studies: list[str], comparisons: list[str], metrics: list[str]
) -> tuple[str, list[dict]]:
    runs = {study: load_runs(results, study) for study in studies}
    lines = [
        "Paired differences A - B: within a study, the two students of one seed (same faces, same "
        "order, same teacher); pooled over every (teacher, seed) pair. Verdict: ahead where the "
        "pooled mean exceeds the pairs' standard deviation and every study agrees in sign; - where a "
        "study did not run both variants.",
        "",
        *(
            f"- `{s}`: teacher {teacher_of(results, s)}, {len(next(iter(runs[s].values())))} seeds"
            for s in studies
        ),
        "",
        "| A - B | metric | "
        + " | ".join(f"`{s}`" for s in studies)
        + " | pooled mean (sd) | pairs favouring A | verdict |",
        "|---|---|" + "---|" * (len(studies) + 3),
    ]
    payload = []
    for comparison in comparisons:
        a, _, b = comparison.partition(":")
        if not a or not b:
            raise StudyError(f"--compare {comparison!r}: expected A:B (two variant names)")
        for metric in metrics:
            per_study = [paired(runs[s], s, a, b, metric) for s in studies]
            ran = [d for d in per_study if d is not None]
            if not ran:
                raise StudyError(f"--compare {comparison}: no study ran both {a!r} and {b!r}")
            mean, sd, favour, pairs, said = verdict(ran, a, b)
            cells = " | ".join(
                "-" if d is None else f"{statistics.mean(d):+.3f}" for d in per_study
            )
            lines.append(
                f"| `{a}` - `{b}` | {metric} | {cells} | {mean:+.3f} ({sd:.3f}) | "
                f"{favour}/{pairs} | {said} |"
            )
            payload.append(
                {
                    "a": a,
                    "b": b,
                    "metric": metric,
                    "per_study": dict(zip(studies, per_study)),
                    "mean": mean,
                    "sd": sd,
                    "favouring_a": favour,
                    "pairs": pairs,
                    "verdict": said,
                }
            )
    return "\n".join(lines), payload


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", nargs="+", required=True, help="names under results/")
    parser.add_argument("--compare", nargs="+", default=list(COMPARISONS), metavar="A:B")
    parser.add_argument("--metrics", nargs="+", default=list(METRICS))
    parser.add_argument("--results", type=Path, default=REPO / "results")
    args = parser.parse_args(argv)
    try:
        text, _ = report(args.results, args.studies, args.compare, args.metrics)
    except StudyError as err:
        sys.exit(f"error: {err}")
    print(text)


if __name__ == "__main__":
    main()
