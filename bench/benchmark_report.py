"""The README's example benchmark report: every protocol run on the trees of
tools/benchmark_trees.py (real LFW faces in the IJB-C, TinyFace, QMUL-SurvFace and SCface
layouts, and .bin verification sets of LFW-style pairs of the LFW 2-9 people, not LFW's official
pairs), with the demo's teacher and student (``make demo`` first; both trained on ORL).

    python bench/benchmark_report.py [--readme]

The numbers show what the report looks like, not how good a network is: the trees hold 20 to 40
faces of people the demo never saw, and the demo's networks are tiny.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from crossres_dist.eval.features import content_digest  # noqa: E402
from tools import benchmark_trees  # noqa: E402
from tools import published as results  # noqa: E402

LFW = REPO.parent / "shared" / "data" / "lfw_deepfunneled_10to19"
UNSEEN = REPO.parent / "shared" / "data" / "lfw_deepfunneled_2to9"
RUNS = {
    "ijbc": ["--resolutions", "8", "16", "full"],
    "tinyface": [],
    "survface": [],
    "scface": ["--scface-test-subjects", "12"],
    "verification": ["--resolutions", "8", "16", "full"],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lfw", default=str(LFW))
    parser.add_argument("--unseen", default=str(UNSEEN), help="the .bin sets' people")
    parser.add_argument("--demo", default=str(REPO / "runs" / "demo"), help="make demo's output")
    parser.add_argument(
        "--readme", action="store_true", help="publish as results/benchmarks-fixture/ and splice"
    )
    parser.add_argument("--allow-dirty", action="store_true")
    args = parser.parse_args()
    provenance = None
    if args.readme:
        try:
            provenance = results.capture(
                "make benchmarks-readme", ["embedded:orl", args.lfw, args.unseen], args.allow_dirty
            )
        except results.DirtyTree as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    demo = Path(args.demo)
    checkpoints = [demo / n / "checkpoints" / "best.pt" for n in ("teacher", "student")]
    for path in checkpoints:
        if not path.is_file():
            print(f"error: {path} not found: run `make demo` first", file=sys.stderr)
            return 2
    sections = []
    with tempfile.TemporaryDirectory() as work:
        trees = benchmark_trees.build(Path(args.lfw), Path(work) / "trees", Path(args.unseen))
        for protocol, extra in RUNS.items():
            out = Path(work) / protocol
            command = [
                sys.executable, "-m", "crossres_dist.evaluate", "--protocol", protocol,
                "--root", str(trees[protocol]), "--config", "configs/demo.yaml",
                f"teacher.checkpoint={checkpoints[0]}",
                "--checkpoint", str(checkpoints[0]), "--name", "teacher",
                "--checkpoint", str(checkpoints[1]), "--name", "student",
                "--no-plots", "--out", str(out), *extra,
            ]  # fmt: skip
            subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
            text = (out / "results.md").read_text().replace(str(trees[protocol]), "ROOT")
            sections.append(f"`--protocol {protocol}`: {text.strip()}")
    body = "\n\n".join(sections)
    print(body)
    if provenance is not None:
        provenance["demo_checkpoints"] = {
            str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(p): content_digest(str(p))
            for p in checkpoints
        }
        tables = results.markdown_tables(body)
        print(
            f"wrote {results.publish('benchmarks-fixture', body, {'tables': tables}, provenance)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
