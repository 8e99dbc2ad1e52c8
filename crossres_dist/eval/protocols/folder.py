"""ImageFolder trees, list files, LFW-style pairs files, or a training config's held-out split.

Probes are degraded to each resolution (or other condition) and matched against a gallery at full
resolution, the paper's protocol: closed-set CMC and verification over all probe x gallery pairs
(or the pairs file's pairs); optionally the probe x gallery resolution matrix (``--cross``) and
open-set identification (``--unmated-fraction``: that share of identities leaves the gallery, and
their probes become non-mated). Checkpoints with a classifier over these identities also report
its top-1. The images a checkpoint trained on are refused before any extraction.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from crossres_dist.checkpointing.manager import load_checkpoint
from crossres_dist.data.settings import DataConfig
from crossres_dist.errors import ConfigError
from crossres_dist.eval.metrics import cosine, identification, open_set, verification
from crossres_dist.eval.protocols.base import Features, Protocol, unique
from crossres_dist.weights import lineage_of
from pipelines.degradations import condition_label
from pipelines.sources import (
    DataError,
    Dataset,
    Sample,
    SplitSpec,
    load_source,
    load_splits,
    sample_key,
    seen_by,
)

log = logging.getLogger(__name__)
FPIRS = (0.01, 0.1)


def read_lfw_pairs(path: Path, root: Path) -> tuple[list[Sample], list[tuple[int, int, bool]]]:
    """An LFW-style pairs file: ``name i j`` (same person) or ``name1 i name2 j`` (different);
    images at ``root/name/name_{i:04d}.jpg``. A first line of one or two integers is a header."""
    if not path.is_file():
        raise DataError(f"{path}: pairs file not found")
    index: dict[str, int] = {}
    samples: list[Sample] = []
    pairs = []
    identities: dict[str, int] = {}

    def image(name: str, number: str, line: int) -> int:
        file = root / name / f"{name}_{int(number):04d}.jpg"
        if not file.is_file():
            raise DataError(f"{path}:{line}: image {file} not found")
        key = str(file)
        if key not in index:
            identities.setdefault(name, len(identities))
            index[key] = len(samples)
            samples.append(Sample(key, identities[name]))
        return index[key]

    for number, text in enumerate(path.read_text().splitlines(), 1):
        parts = text.split()
        if not parts or (number == 1 and all(p.isdigit() for p in parts)):
            continue
        if len(parts) == 3:
            pairs.append(
                (image(parts[0], parts[1], number), image(parts[0], parts[2], number), True)
            )
        elif len(parts) == 4:
            pairs.append(
                (image(parts[0], parts[1], number), image(parts[2], parts[3], number), False)
            )
        else:
            raise DataError(
                f"{path}:{number}: expected 'name i j' or 'name1 i name2 j', got {text!r}"
            )
    return samples, pairs


def gallery_split(samples: list[Sample], per_identity: int) -> tuple[np.ndarray, np.ndarray]:
    """Closed set: the first `per_identity` images of each identity form the gallery, the rest
    are probes; identities with no probe left are not used."""
    seen: dict[int, int] = {}
    gallery, probe = [], []
    counts = np.bincount([s.label for s in samples])
    for i, s in enumerate(samples):
        if counts[s.label] <= per_identity:
            continue
        if seen.get(s.label, 0) < per_identity:
            gallery.append(i)
            seen[s.label] = seen.get(s.label, 0) + 1
        else:
            probe.append(i)
    return np.array(gallery, int), np.array(probe, int)


def config_split(data_cfg: DataConfig, source: str, part: str | None) -> tuple[Dataset, str]:
    """The images of the config's test split (the default when it has one) or validation split.
    The validation split chose best.pt, so numbers on it are optimistic: said in a warning."""
    spec = SplitSpec.from_config(data_cfg)
    splits = load_splits(spec)
    part = part or ("test" if splits.test is not None else "val")
    if part == "test" and splits.test is None:
        raise ConfigError(
            f"{source}: data.test is empty: there is no test split to evaluate; set "
            "data.test=split:K (and train with it), or evaluate on --data DIR"
        )
    if part == "val":
        log.warning(
            "evaluating on the validation split, which chose best.pt: these numbers are "
            "optimistic; report on a test split (data.test=split:K) or another data set"
        )
    return (
        splits.part(part),
        f"{part} split ({getattr(spec, part)}, split_seed {spec.seed}) of {spec.train}",
    )


class OverlapError(DataError):
    """A checkpoint was trained on images it is asked to be evaluated on."""


def check_unseen(checkpoint: str, samples: list[Sample], allow: bool) -> dict:
    """What the checkpoint (and the checkpoints it started from) trained and selected on, against
    the evaluation images. Training overlap is refused unless `allow`; selection (validation)
    overlap is only reported. Files that record no split (released weights) are 'unknown'."""
    lineage = lineage_of(checkpoint)
    if not lineage:
        return {"training_data": "unknown (the file records no split)"}
    keys = {sample_key(s.path) for s in samples}
    trained, selected, stale = set(), set(), False
    for record in lineage:
        seen = seen_by(record)
        trained |= keys & seen.train
        selected |= keys & seen.val
        stale |= not seen.matches_record
    if stale:
        log.warning(
            "%s: the data on disk no longer gives the split it was trained on; the overlap "
            "check uses the data as it is now",
            checkpoint,
        )
    if trained and not allow:
        record = lineage[0]
        raise OverlapError(
            f"{checkpoint}: {len(trained)} of the {len(keys)} evaluation images (e.g. "
            f"{sorted(trained)[0]}) are training images of this checkpoint or the one it started "
            f"from (data.train={record['train']}, split_seed={record['split_seed']}); evaluate "
            "on its test split, or pass --allow-overlap to report leaking numbers anyway"
        )
    if selected:
        log.warning(
            "%s: %d evaluation images chose this checkpoint (its validation split): optimistic",
            checkpoint,
            len(selected),
        )
    return {
        "training_data": [
            {k: r[k] for k in ("train", "val", "test", "split_seed")} for r in lineage
        ],
        "overlap_with_training": len(trained),
        "overlap_with_selection": len(selected),
    }


def classifier_labels(
    checkpoint: str, samples: list[Sample], identities: dict[str, int] | None
) -> np.ndarray | None:
    """The samples' labels in the checkpoint's label map, when every evaluated identity is one
    the checkpoint's classifier was trained on (None otherwise: only matching applies)."""
    if identities is None:
        return None
    try:
        trained = load_checkpoint(Path(checkpoint)).get("identities")
    except Exception:
        return None
    if not isinstance(trained, dict):
        return None
    names = {label: name for name, label in identities.items()}
    if not all(names[s.label] in trained for s in samples):
        return None
    return np.array([trained[names[s.label]] for s in samples])


def all_pair_scores(probe, probe_labels, gallery, gallery_labels):
    scores = cosine(probe, gallery)
    genuine = np.asarray(probe_labels)[:, None] == np.asarray(gallery_labels)[None, :]
    return scores.reshape(-1), genuine.reshape(-1)


def unmated_identities(labels: np.ndarray, fraction: float) -> np.ndarray:
    """A `fraction` of the identities, spread evenly over their order."""
    identities = np.unique(labels)
    position = np.arange(len(identities))
    return identities[np.floor((position + 1) * fraction) > np.floor(position * fraction)]


class Folder(Protocol):
    name = "folder"
    summary = "an ImageFolder, list file or LFW pairs file, or the config's test split"
    needs_root = False

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("folder (ImageFolder, list file, pairs, config split)")
        group.add_argument(
            "--data",
            help="an ImageFolder or list file instead of the config's held-out split; "
            "with --pairs, the image root",
        )
        group.add_argument("--pairs", help="an LFW-style pairs file")
        group.add_argument(
            "--split",
            choices=["test", "val"],
            help="without --data: which held-out part of the config's data to evaluate "
            "(default: test when the config has data.test, else val, with a warning)",
        )
        group.add_argument(
            "--allow-overlap",
            action="store_true",
            help="evaluate even if a checkpoint trained on some of the images (the report says so)",
        )
        group.add_argument("--gallery-per-identity", type=int, default=1)
        group.add_argument(
            "--cross", action="store_true", help="also the probe x gallery resolution matrix"
        )
        group.add_argument(
            "--unmated-fraction",
            type=float,
            default=0.0,
            help="open-set identification: this share of identities leaves the gallery and "
            "their probes are non-mated; reports TPIR at FPIR 0.1 and 0.01 at --open-set-rank "
            "(default 0: off)",
        )
        group.add_argument("--tsne-identities", type=int, default=8)
        group.add_argument("--tsne-resolution", type=parse_resolution, default=16)

    def __init__(self, args, data_cfg: DataConfig, source: str) -> None:
        super().__init__(args, data_cfg, source)
        self.pairs = None
        self.identities = None
        if args.pairs:
            self.samples, self.pairs = read_lfw_pairs(Path(args.pairs), Path(args.data or "."))
            self.data_name = args.pairs
        elif args.data:
            dataset = load_source(args.data, data_cfg.root)
            self.samples, self.identities = dataset.samples, dataset.identities
            self.data_name = args.data
        else:
            dataset, self.data_name = config_split(data_cfg, source, args.split)
            self.samples, self.identities = dataset.samples, dataset.identities
        if not self.samples:
            raise DataError(f"{self.data_name}: no images to evaluate")
        if not 0 <= args.unmated_fraction < 1:
            raise ConfigError(f"--unmated-fraction {args.unmated_fraction} must be in [0, 1)")
        self.labels = np.array([s.label for s in self.samples])
        self.gallery_idx, self.probe_idx = gallery_split(self.samples, args.gallery_per_identity)
        self.tsne: dict[str, tuple[torch.Tensor, np.ndarray]] = {}

    def conditions(self, requested: list) -> list:
        extra = [self.args.tsne_resolution] if self.args.tsne_identities else []
        return unique([*requested, *extra])

    def provenance(self, checkpoint: str) -> dict:
        return check_unseen(checkpoint, self.samples, self.args.allow_overlap)

    def score(self, checkpoint: str, features: Features) -> dict:
        args, labels = self.args, self.labels
        g, p = self.gallery_idx, self.probe_idx
        result: dict = {"probe_vs_full_gallery": {}}
        classes = classifier_labels(checkpoint, self.samples, self.identities)
        if classes is not None:
            # The classifier's own answer (closed set: the identities it was trained on).
            result["classifier_top1"] = {
                r: float((logits.argmax(1).numpy() == classes).mean())
                for r, (_, logits) in features.items()
            }
        full = features.get("full", (None,))[0]
        for r, (probes, _) in features.items():
            gallery = full if full is not None else probes
            row = {"identification": identification(probes[p], labels[p], gallery[g], labels[g])}
            if self.pairs is None:
                scores, genuine = all_pair_scores(probes[p], labels[p], gallery[g], labels[g])
            else:
                a = torch.tensor([x[0] for x in self.pairs])
                b = torch.tensor([x[1] for x in self.pairs])
                scores = F.cosine_similarity(probes[a], gallery[b]).numpy()
                genuine = np.array([x[2] for x in self.pairs])
            row["verification"] = verification(scores, genuine)
            if args.unmated_fraction > 0:
                keep = ~np.isin(labels[g], unmated_identities(labels, args.unmated_fraction))
                row["open_set"] = open_set(
                    cosine(probes[p], gallery[g][torch.from_numpy(keep)]),
                    labels[p],
                    labels[g][keep],
                    FPIRS,
                    self.open_set_rank,
                )
            result["probe_vs_full_gallery"][r] = row
        if args.cross:
            result["cross_matrix_rank1"] = {
                r1: {
                    r2: identification(f1[p], labels[p], f2[g], labels[g])["rank1"]
                    for r2, (f2, _) in features.items()
                }
                for r1, (f1, _) in features.items()
            }
        if args.tsne_identities > 0:
            keep = np.isin(labels, np.unique(labels)[: args.tsne_identities])
            self.tsne[checkpoint] = (
                features[condition_label(args.tsne_resolution)][0][torch.from_numpy(keep)],
                labels[keep],
            )
        return result

    def report_settings(self) -> dict:
        return {"tsne_resolution": condition_label(self.args.tsne_resolution)}

    def markdown(self, report: dict) -> str:
        return markdown(report)

    def plots(self, out: Path, report: dict) -> list[Path]:
        from crossres_dist.eval.report import plot_folder

        tsne = {
            n: self.tsne[m["checkpoint"]]
            for n, m in report["models"].items()
            if m["checkpoint"] in self.tsne
        }
        return plot_folder(out, report, tsne)


def parse_resolution(text: str):
    if text == "full":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"resolution {text!r} is neither an integer nor 'full'"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"resolution {value} must be >= 1")
    return value


def markdown(report: dict) -> str:
    """The folder protocol's tables: what was evaluated and how far it leaks, then classifier
    top-1, rank-1, verification, open-set and the probe x gallery matrix, each where present."""
    labels = report["conditions"]
    lines = [f"Evaluated on the {report['data']}: {report['images']} images.", ""]
    lines += overlap_notes(report["models"])
    lines += classifier_table(report["models"], labels)
    lines += rank1_table(report["models"], labels)
    lines += verification_table(report["models"], labels)
    lines += open_set_tables(report["models"], labels)
    lines += cross_matrices(report["models"], labels)
    return "\n".join(lines) + "\n"


def header(labels: list[str]) -> list[str]:
    return ["| model | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]


def overlap_notes(models: dict) -> list[str]:
    lines = []
    for name, m in models.items():
        trained = m["provenance"].get("overlap_with_training", 0)
        selected = m["provenance"].get("overlap_with_selection", 0)
        if trained:
            lines.append(
                f"**{name} trained on {trained} of these images (--allow-overlap): its numbers "
                "leak.**"
            )
        if selected:
            lines.append(f"{name} was chosen on {selected} of these images: optimistic.")
    return lines


def classifier_table(models: dict, labels: list[str]) -> list[str]:
    with_classifier = [n for n, m in models.items() if "classifier_top1" in m]
    if not with_classifier:
        return []
    lines = ["Classifier top-1, images at r px:", "", *header(labels)]
    for name in with_classifier:
        top1 = models[name]["classifier_top1"]
        lines.append(f"| {name} | " + " | ".join(f"{top1[r]:.3f}" for r in labels) + " |")
    return [*lines, ""]


def rank1_table(models: dict, labels: list[str]) -> list[str]:
    lines = [
        "Rank-1 identification, probe at r px vs full-resolution gallery:",
        "",
        *header(labels),
    ]
    for name, m in models.items():
        rows = m["probe_vs_full_gallery"]
        lines.append(
            f"| {name} | "
            + " | ".join(f"{rows[r]['identification']['rank1']:.3f}" for r in labels)
            + " |"
        )
    return lines


def verification_table(models: dict, labels: list[str]) -> list[str]:
    lines = [
        "",
        "Verification, probe at r px vs full-resolution gallery (AUC / EER / TAR@FAR=1e-2):",
        "",
        *header(labels),
    ]
    for name, m in models.items():
        rows = m["probe_vs_full_gallery"]
        cells = []
        for r in labels:
            v = rows[r]["verification"]
            tar = v.get("tar@far=0.01")
            cells.append(
                f"{v['auc']:.3f} / {v['eer']:.3f} / {'n/a' if tar is None else f'{tar:.3f}'}"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def open_set_tables(models: dict, labels: list[str]) -> list[str]:
    lines = []
    for name, m in models.items():
        rows = m["probe_vs_full_gallery"]
        if "open_set" not in rows[labels[0]]:
            continue
        first = rows[labels[0]]["open_set"]
        lines += [
            "",
            f"{name}: open-set identification at rank {first['rank']}, probe at r px vs "
            f"full-resolution gallery ({first['mated_probes']} mated, "
            f"{first['nonmated_probes']} non-mated probes), TPIR at FPIR:",
            "",
            "| FPIR | " + " | ".join(labels) + " |",
            "|---|" + "---|" * len(labels),
        ]
        for fpir in FPIRS:
            key = f"tpir@fpir={fpir:g}"
            cells = [rows[r]["open_set"][key] for r in labels]
            lines.append(
                f"| {fpir:g} | "
                + " | ".join("n/a" if c is None else f"{c:.3f}" for c in cells)
                + " |"
            )
    return lines


def cross_matrices(models: dict, labels: list[str]) -> list[str]:
    lines = []
    for name, m in models.items():
        if "cross_matrix_rank1" not in m:
            continue
        lines += [
            "",
            f"{name}: rank-1, probe resolution (rows) x gallery resolution (columns):",
            "",
            "| probe \\ gallery | " + " | ".join(labels) + " |",
            "|---|" + "---|" * len(labels),
        ]
        for r1 in labels:
            lines.append(
                f"| {r1} | "
                + " | ".join(f"{m['cross_matrix_rank1'][r1][r2]:.3f}" for r2 in labels)
                + " |"
            )
    return lines
