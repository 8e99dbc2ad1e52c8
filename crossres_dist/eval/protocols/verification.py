"""insightface's verification sets (``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin``, ``calfw.bin``,
``cplfw.bin``, or sets of one's own from ``crossres-pack --pairs``), at every probe resolution.

ROOT is a folder of ``*.bin`` files (every one is scored) or one ``.bin`` file. Each pair's
second image is the probe, degraded to r px; its first image stays at full resolution
(``--verification-degrade both`` degrades both). Reported as insightface reports them: 10-fold
accuracy (mean and standard deviation), ``val`` (TAR) at FAR 1e-3, and XNorm, with each image's
embedding summed with its mirror image's (crossres_dist/verification/metric.py).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from crossres_dist.data.check import refuse_undecodable
from crossres_dist.data.settings import DataConfig
from crossres_dist.eval.protocols.base import (
    Features,
    Protocol,
    fmt,
    provenance_lines,
    table,
    unique,
)
from crossres_dist.verification import (
    VerificationSuite,
    find_bins,
    image_namer,
    images_of,
    load_sets,
    score_pairs,
)
from pipelines.sources import DataError, Sample


class Verification(Protocol):
    name = "verification"
    summary = "insightface's .bin pair sets (lfw, cfp_fp, agedb_30 ...): 10-fold accuracy"
    mirror = "separate"  # each image's features and its mirror image's, for XNorm
    takes_gallery = True  # the first face of each pair, with --gallery

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument_group("verification (.bin sets)").add_argument(
            "--verification-degrade",
            choices=["probe", "both"],
            default="probe",
            help="which side of a pair is degraded: the second image (the probe, default) or both",
        )

    def __init__(self, args, data_cfg: DataConfig, source: str) -> None:
        super().__init__(args, data_cfg, source)
        root = Path(args.root)
        paths = [root] if root.suffix == ".bin" and root.is_file() else find_bins(root)
        if not root.exists():
            raise DataError(f"{root}: verification sets not found")
        if not paths:
            raise DataError(f"{root}: no *.bin verification set in this folder")
        self.data_name = f"the verification sets in {root}"
        # Read and checked here, before any network; their images are decoded in check().
        self.sets = load_sets(paths, 0, 1, Path(args.out) / "cache" / "bins")
        self.degrade = args.verification_degrade
        self.suite = VerificationSuite(self.sets, [], self.degrade)
        self.samples = [Sample(p, 0) for s in self.sets for p in s.images]

    def refuse_unreadable(self, rank: int, world: int, threads: int) -> None:
        """Every image decoded before any network runs; a bad one named by set and index."""
        refuse_undecodable(
            images_of(self.sets),
            rank,
            world,
            threads,
            image_namer(self.sets),
            "images of the verification sets",
        )

    def samples_at(self, condition) -> list[Sample]:
        return [s for vset in self.sets for s in self.suite.samples(vset, condition)]

    def conditions(self, requested: list) -> list:
        return unique([None, *requested])

    def score(self, checkpoint: str, features: Features) -> dict:
        by_set: dict[str, dict] = {}
        offsets = {label: 0 for label in features}
        for vset in self.sets:
            rows = {}
            for label, (feats, _) in features.items():
                count = len(self.suite.samples(vset, _condition(label)))
                rows[label] = feats[offsets[label] : offsets[label] + count]
                offsets[label] += count
            gallery = rows.pop("gallery", None)  # --gallery: another network's first faces
            by_set[vset.name] = {
                label: _without_thresholds(
                    score_pairs(
                        vset, rows["full"], rows[label], _condition(label), self.degrade, gallery
                    )
                )
                for label in rows
            }
        return {"verification": by_set}

    def markdown(self, report: dict) -> str:
        labels = report["conditions"]
        side = "both images" if self.degrade == "both" else "the probe (second image)"
        lines = [
            f"{report['data']}: {len(self.sets)} set(s), {sum(s.pairs for s in self.sets)} "
            f"pairs; {side} at r px, the other at full resolution; 10-fold accuracy (mean ± "
            "std), each embedding summed with its mirror image's.",
            *provenance_lines(report),
            "",
        ]
        models = report["models"]
        for vset in self.sets:
            lines += [
                f"{vset.name} ({vset.pairs} pairs): accuracy by probe resolution",
                "",
                *table(
                    ["model", *labels],
                    [
                        [n, *(_cell(m["verification"][vset.name][r]) for r in labels)]
                        for n, m in models.items()
                    ],
                ),
                "",
                f"{vset.name}: val (TAR) at FAR 1e-3, and XNorm at full resolution",
                "",
                *table(
                    ["model", *labels, "XNorm"],
                    [
                        [
                            n,
                            *(
                                fmt(m["verification"][vset.name][r]["val@far=0.001"])
                                for r in labels
                            ),
                            fmt(m["verification"][vset.name]["full"]["xnorm"]),
                        ]
                        for n, m in models.items()
                    ],
                ),
                "",
            ]
        return "\n".join(lines)

    def plots(self, out: Path, report: dict) -> list[Path]:
        from crossres_dist.eval.report import pyplot, save

        plt = pyplot()
        labels = report["conditions"]
        fig, axes = plt.subplots(
            1, len(self.sets), figsize=(4.2 * len(self.sets), 3.6), squeeze=False
        )
        for ax, vset in zip(axes[0], self.sets):
            for name, model in report["models"].items():
                scores = [model["verification"][vset.name][r]["accuracy"] for r in labels]
                ax.plot(labels, scores, "o-", label=name)
            ax.set(
                title=f"{vset.name}: probe at r px",
                xlabel="probe resolution (px)",
                ylabel="10-fold accuracy",
                ylim=(0.45, 1.01),
            )
            ax.grid(alpha=0.3)
        axes[0][0].legend()
        return [save(plt, fig, out / "verification_vs_resolution.png")]


def _cell(scores: dict) -> str:
    return f"{scores['accuracy']:.3f} ± {scores['accuracy_std']:.3f}"


def _without_thresholds(scores: dict) -> dict:
    return {k: v for k, v in scores.items() if k != "best_thresholds"}


def _condition(label: str) -> str | None:
    # Which images a condition embeds depends only on whether it degrades: its label will do
    # (the gallery network's are every image at full resolution).
    return None if label in ("full", "gallery") else label
