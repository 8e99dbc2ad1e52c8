"""Cross-resolution evaluation of one or more checkpoints.

    python -m crossres_dist.evaluate --checkpoint runs/a/checkpoints/best.pt --name student \\
        [--checkpoint ... --name teacher] --config configs/demo.yaml \\
        [--data DIR_OR_LIST] [--pairs pairs.txt] --resolutions 8 12 16 24 32 full --out DIR

Probes are degraded to each resolution and matched against a gallery at full resolution
(the paper's protocol); ``--cross`` adds the whole probe x gallery resolution matrix. Runs on one
process or many (torchrun, srun, mpirun): every rank extracts the features of its shard, rank 0
gathers them (padding removed), computes the metrics with scikit-learn and draws the plots.
Features are cached per checkpoint, data and resolution in ``OUT/cache``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from pipelines import Loader, ViewSettings, eval_plans
from pipelines.degradations import condition_label, parse_condition
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

from . import distributed, logs, rundir
from .checkpoint import load_checkpoint
from .config import ConfigError, load_config
from .models import build_model
from .trainer import autocast_for, resolve_precision
from .weights import WeightsError, lineage_of, read_state

log = logging.getLogger(__name__)
FARS = (1e-1, 1e-2, 1e-3)


def res_label(condition: int | dict | None) -> str:
    """A condition's name: 'full', a resolution ('8'), or degradation steps ('jpeg20')."""
    return condition_label(condition)


# ----------------------------------------------------------------------------- data
def read_pairs(path: Path, root: Path) -> tuple[list[Sample], list[tuple[int, int, bool]]]:
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


def config_split(cfg, part: str | None) -> tuple[Dataset, str]:
    """The images of the config's test split (the default when it has one) or validation split.
    The validation split chose best.pt, so numbers on it are optimistic: said in a warning."""
    spec = SplitSpec.from_config(cfg.data)
    splits = load_splits(spec)
    part = part or ("test" if splits.test is not None else "val")
    if part == "test" and splits.test is None:
        raise ConfigError(
            f"{cfg.source}: data.test is empty: there is no test split to evaluate; set "
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


# ----------------------------------------------------------------------------- features
def load_model(path: str, device: torch.device) -> torch.nn.Module:
    state, spec = read_state(path)
    if spec is None:
        raise WeightsError(f"{path}: cannot tell the network's shape from this file")
    model = build_model(spec)
    model.load_state_dict(state, strict=False)
    return model.to(device).eval()


@torch.no_grad()
def extract(
    model,
    samples,
    views,
    resolution,
    batch,
    backend,
    device,
    threads,
    autocast,
    label="",
    interpolation="linear",
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Features and logits of every sample at `resolution` (None = full), in sample order, on
    rank 0 (None elsewhere). Rank 0 shows the progress (images/s, time left)."""
    rank, world = distributed.rank(), distributed.world_size()
    plans = eval_plans(samples, views, batch, [resolution], rank, world)
    stream = Loader(backend, views, batch, device, threads, 0, interpolation)(
        iter(p for _, p in plans)
    )
    bar = None
    if rank == 0:
        from tqdm import tqdm

        bar = tqdm(
            total=len(samples),
            unit="img",
            desc=f"{label} at {res_label(resolution)}",
            file=sys.stderr,
            mininterval=1.0 if sys.stderr.isatty() else 30.0,
        )
    parts = []
    for _, plan in plans:
        views_batch = next(stream)
        with autocast:
            features, logits = model(views_batch["student_view"])
        parts.append(torch.cat([features.float(), logits.float()], 1))
        if bar is not None:
            bar.update(min(int(plan.valid.sum()) * world, bar.total - bar.n))
    if bar is not None:
        bar.close()
    mine = torch.cat(parts)
    if world > 1:
        gathered = [torch.empty_like(mine) for _ in range(world)]
        dist.all_gather(gathered, mine)
        mine = torch.stack(gathered, 1).reshape(-1, mine.shape[1])
    if rank != 0:
        return None
    # Rank r held positions r, r + world, ...; the padding sits at the end once interleaved.
    mine = mine[: len(samples)].cpu()
    dim = model.spec.feature_dim
    return mine[:, :dim].contiguous(), mine[:, dim:].contiguous()


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


def cache_key(checkpoint: str, samples: list[Sample], views: ViewSettings, resolution) -> str:
    stat = Path(checkpoint).stat()
    text = json.dumps(
        [
            str(Path(checkpoint).resolve()),
            stat.st_size,
            stat.st_mtime_ns,
            [s.path for s in samples],
            asdict(views),
            resolution,
        ]
    )
    return hashlib.sha1(text.encode()).hexdigest()[:20]


# ----------------------------------------------------------------------------- metrics
def identification(
    probe: torch.Tensor, probe_labels, gallery: torch.Tensor, gallery_labels
) -> dict:
    """CMC rank-1 and rank-5 with cosine similarity (the best gallery image per identity)."""
    scores = F.normalize(probe, dim=1) @ F.normalize(gallery, dim=1).T
    identities = np.unique(gallery_labels)
    per_identity = torch.stack(
        [scores[:, torch.from_numpy(gallery_labels == i)].max(1).values for i in identities], 1
    )
    order = identities[per_identity.argsort(1, descending=True).numpy()]
    hits = order == np.asarray(probe_labels)[:, None]
    cmc = hits.cumsum(1).clip(max=1).mean(0)
    return {"rank1": float(cmc[0]), "rank5": float(cmc[min(4, len(cmc) - 1)])}


def verification(scores: np.ndarray, genuine: np.ndarray) -> dict:
    from sklearn.metrics import auc, roc_curve

    fpr, tpr, _ = roc_curve(genuine.astype(int), scores)
    eer_index = np.nanargmin(np.abs(fpr - (1 - tpr)))
    impostors = int((~genuine).sum())
    result = {
        "auc": float(auc(fpr, tpr)),
        "eer": float((fpr[eer_index] + 1 - tpr[eer_index]) / 2),
        "genuine_pairs": int(genuine.sum()),
        "impostor_pairs": impostors,
        "roc": {"fpr": fpr.tolist(), "tpr": tpr.tolist()},
    }
    for far in FARS:
        # A FAR below 1 / impostors cannot be measured.
        result[f"tar@far={far:g}"] = (
            float(np.interp(far, fpr, tpr)) if impostors * far >= 1 else None
        )
    return result


def all_pair_scores(probe, probe_labels, gallery, gallery_labels, same_set: bool):
    scores = (F.normalize(probe, dim=1) @ F.normalize(gallery, dim=1).T).numpy()
    genuine = np.asarray(probe_labels)[:, None] == np.asarray(gallery_labels)[None, :]
    mask = np.ones_like(genuine, bool)
    if same_set:
        mask = ~np.eye(len(probe_labels), dtype=bool)
    return scores[mask], genuine[mask]


# ----------------------------------------------------------------------------- plots
def plot_all(out: Path, report: dict, resolutions: list, tsne_inputs: dict | None) -> list[Path]:
    import matplotlib

    if not list(Path(matplotlib.get_cachedir()).glob("fontlist-*.json")):
        log.info("matplotlib is building its font cache (once per machine; a minute or two)")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    names = list(report["models"])
    labels = [res_label(r) for r in resolutions]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name in names:
        rows = report["models"][name]["probe_vs_full_gallery"]
        axes[0].plot(labels, [rows[r]["identification"]["rank1"] for r in labels], "o-", label=name)
        tar = [rows[r]["verification"].get("tar@far=0.01") for r in labels]
        axes[1].plot(labels, [np.nan if t is None else t for t in tar], "o-", label=name)
    axes[0].set(
        title="Identification, probe at r vs full-resolution gallery",
        xlabel="probe resolution (px)",
        ylabel="rank-1",
        ylim=(0, 1.02),
    )
    axes[1].set(
        title="Verification TAR @ FAR = 1e-2",
        xlabel="probe resolution (px)",
        ylabel="TAR",
        ylim=(0, 1.02),
    )
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    written.append(out / "accuracy_vs_resolution.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(labels), figsize=(3.2 * len(labels), 3.2), squeeze=False)
    for ax, r in zip(axes[0], labels):
        for name in names:
            roc = report["models"][name]["probe_vs_full_gallery"][r]["verification"]["roc"]
            ax.plot(roc["fpr"], roc["tpr"], label=name)
        ax.set(xscale="log", xlim=(1e-3, 1), ylim=(0, 1.02), title=f"ROC, probe {r}", xlabel="FAR")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("TAR")
    axes[0][0].legend()
    fig.tight_layout()
    written.append(out / "roc.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    if tsne_inputs:
        from sklearn.manifold import TSNE

        resolution_text = report["tsne_resolution"]
        if resolution_text != "full":
            resolution_text += " px"

        fig, axes = plt.subplots(
            1, len(tsne_inputs), figsize=(5 * len(tsne_inputs), 4.5), squeeze=False
        )
        for ax, (name, (features, labels_)) in zip(axes[0], tsne_inputs.items()):
            perplexity = max(2.0, min(30.0, (len(features) - 1) / 3))
            xy = TSNE(2, perplexity=perplexity, init="pca", random_state=0).fit_transform(
                F.normalize(features, dim=1).numpy()
            )
            ax.scatter(xy[:, 0], xy[:, 1], c=labels_, cmap="tab10", s=18)
            ax.set(title=f"{name}: t-SNE, images at {resolution_text}", xticks=[], yticks=[])
        fig.tight_layout()
        written.append(out / "tsne.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    return written


def markdown(report: dict, resolutions: list) -> str:
    labels = [res_label(r) for r in resolutions]
    header = ["| model | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    lines = [f"Evaluated on the {report['data']}: {report['images']} images.", ""]
    for name, m in report["models"].items():
        trained = m["provenance"].get("overlap_with_training", 0)
        selected = m["provenance"].get("overlap_with_selection", 0)
        if trained:
            lines.append(
                f"**{name} trained on {trained} of these images (--allow-overlap): its numbers "
                "leak.**"
            )
        if selected:
            lines.append(f"{name} was chosen on {selected} of these images: optimistic.")
    with_classifier = [n for n, m in report["models"].items() if "classifier_top1" in m]
    if with_classifier:
        lines += ["Classifier top-1, images at r px:", "", *header]
        for name in with_classifier:
            top1 = report["models"][name]["classifier_top1"]
            lines.append(f"| {name} | " + " | ".join(f"{top1[r]:.3f}" for r in labels) + " |")
        lines.append("")
    lines += ["Rank-1 identification, probe at r px vs full-resolution gallery:", "", *header]
    for name, m in report["models"].items():
        rows = m["probe_vs_full_gallery"]
        lines.append(
            f"| {name} | "
            + " | ".join(f"{rows[r]['identification']['rank1']:.3f}" for r in labels)
            + " |"
        )
    lines += [
        "",
        "Verification, probe at r px vs full-resolution gallery (AUC / EER / TAR@FAR=1e-2):",
        "",
        *header,
    ]
    for name, m in report["models"].items():
        rows = m["probe_vs_full_gallery"]
        cells = []
        for r in labels:
            v = rows[r]["verification"]
            tar = v.get("tar@far=0.01")
            cells.append(
                f"{v['auc']:.3f} / {v['eer']:.3f} / {'n/a' if tar is None else f'{tar:.3f}'}"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for name, m in report["models"].items():
        if "cross_matrix_rank1" in m:
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
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- main
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


def evaluate(args) -> dict | None:
    cfg = load_config(args.config, ["teacher.checkpoint=unused", *args.overrides])
    pairs = None
    data_identities = None
    if args.pairs:
        samples, pairs = read_pairs(Path(args.pairs), Path(args.data or "."))
        data_name = args.pairs
    elif args.data:
        dataset = load_source(args.data, cfg.data.root)
        samples, data_identities, data_name = dataset.samples, dataset.identities, args.data
    else:
        dataset, data_name = config_split(cfg, args.split)
        samples, data_identities = dataset.samples, dataset.identities
    if not samples:
        raise DataError("no images to evaluate")
    for path in args.checkpoint:
        if not Path(path).is_file():
            raise WeightsError(f"{path}: checkpoint not found")
    names = args.name or [Path(p).parent.parent.name or Path(p).stem for p in args.checkpoint]
    if len(names) != len(args.checkpoint):
        raise ConfigError("give one --name per --checkpoint")
    # Before any extraction: refuse a checkpoint that trained on the images it would report.
    provenance = {
        name: check_unseen(path, samples, args.allow_overlap)
        for path, name in zip(args.checkpoint, names)
    }

    info = distributed.detect()
    logs.setup(info.rank)
    device = distributed.pick_device(args.device, info.local_rank)
    distributed.init(info, device, "auto", 1800)
    autocast = autocast_for(resolve_precision("auto", device), device)
    # Conditions: resolutions in pixels, then other degradations (--degrade jpeg:20).
    resolutions = list(dict.fromkeys(args.resolutions))
    resolutions += [parse_condition(text) for text in args.degrade]
    labels = np.array([s.label for s in samples])
    out = Path(args.out)
    cache = out / "cache"
    if info.rank == 0:
        cache.mkdir(parents=True, exist_ok=True)

    report = {
        "data": data_name,
        "images": len(samples),
        "models": {},
        "tsne_resolution": res_label(args.tsne_resolution),
    }
    tsne_inputs = {}
    for checkpoint, name in zip(args.checkpoint, names):
        model = load_model(checkpoint, device)
        spec = model.spec
        # The config's geometry, the network's own normalisation.
        views = ViewSettings(
            cfg.data.resize_shorter,
            cfg.data.crop,
            0.0,
            cfg.method.resolutions,
            channels=spec.channels,
            mean=spec.mean,
            scale=spec.scale,
        )
        features, logits = {}, {}
        for r in resolutions:
            path = cache / f"{cache_key(checkpoint, samples, views, r)}.pt"
            cached = None
            if info.rank == 0:
                cached = rundir.read_or_none(
                    path, lambda f: torch.load(f, weights_only=True), "feature cache"
                )
            if distributed.broadcast_object(cached is not None):
                extracted = cached
            else:
                extracted = extract(
                    model,
                    samples,
                    views,
                    r,
                    cfg.data.micro_batch,
                    args.backend,
                    device,
                    cfg.data.num_threads,
                    autocast,
                    name,
                    cfg.method.interpolation,
                )
                if info.rank == 0:
                    rundir.atomic_write(path, lambda f, x=extracted: torch.save(x, f))
            if info.rank == 0:
                features[res_label(r)], logits[res_label(r)] = extracted
        if info.rank != 0:
            continue
        result = {
            "checkpoint": checkpoint,
            "provenance": provenance[name],
            "probe_vs_full_gallery": {},
        }
        classes = classifier_labels(checkpoint, samples, data_identities)
        if classes is not None:
            # The classifier's own answer (closed set: the identities it was trained on).
            result["classifier_top1"] = {
                res_label(r): float((logits[res_label(r)].argmax(1).numpy() == classes).mean())
                for r in resolutions
            }
        gallery_idx, probe_idx = gallery_split(samples, args.gallery_per_identity)
        full = features.get("full")
        for r in resolutions:
            row = {}
            probes = features[res_label(r)]
            gallery = full if full is not None else probes
            if pairs is None:
                row["identification"] = identification(
                    probes[probe_idx],
                    labels[probe_idx],
                    gallery[gallery_idx],
                    labels[gallery_idx],
                )
                scores, genuine = all_pair_scores(
                    probes[probe_idx],
                    labels[probe_idx],
                    gallery[gallery_idx],
                    labels[gallery_idx],
                    False,
                )
            else:
                a = torch.tensor([p[0] for p in pairs])
                b = torch.tensor([p[1] for p in pairs])
                scores = F.cosine_similarity(probes[a], gallery[b]).numpy()
                genuine = np.array([p[2] for p in pairs])
                row["identification"] = identification(
                    probes[probe_idx],
                    labels[probe_idx],
                    gallery[gallery_idx],
                    labels[gallery_idx],
                )
            row["verification"] = verification(scores, genuine)
            result["probe_vs_full_gallery"][res_label(r)] = row
        if args.cross:
            result["cross_matrix_rank1"] = {
                res_label(r1): {
                    res_label(r2): identification(
                        features[res_label(r1)][probe_idx],
                        labels[probe_idx],
                        features[res_label(r2)][gallery_idx],
                        labels[gallery_idx],
                    )["rank1"]
                    for r2 in resolutions
                }
                for r1 in resolutions
            }
        report["models"][name] = result
        if args.tsne_identities > 0:
            keep = np.isin(labels, np.unique(labels)[: args.tsne_identities])
            tsne_inputs[name] = (
                features[res_label(args.tsne_resolution)][torch.from_numpy(keep)],
                labels[keep],
            )

    if info.rank != 0:
        distributed.shutdown()
        return None
    out.mkdir(parents=True, exist_ok=True)
    table = markdown(report, resolutions)
    rundir.write_json(out / "results.json", report)
    rundir.write_text(out / "results.md", table)
    plots = plot_all(out, report, resolutions, tsne_inputs) if args.plots else []
    print("\n" + table)
    log.info("evaluation written to %s (%s)", out, ", ".join(p.name for p in plots) or "no plots")
    distributed.shutdown()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="crossres-eval", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--checkpoint",
        action="append",
        required=True,
        help="a checkpoint or weights file to evaluate (repeat for several; the architecture "
        "comes from the file)",
    )
    parser.add_argument(
        "--name",
        action="append",
        help="its name in the tables and plots, one per --checkpoint (default: the run's name)",
    )
    parser.add_argument("--config", required=True, help="the training config (views, data split)")
    parser.add_argument(
        "--data",
        help="an ImageFolder or list file instead of the config's validation split; "
        "with --pairs, the image root",
    )
    parser.add_argument("--pairs", help="an LFW-style pairs file")
    parser.add_argument(
        "--split",
        choices=["test", "val"],
        help="without --data: which held-out part of the config's data to evaluate (default: "
        "test when the config has data.test, else val, with a warning)",
    )
    parser.add_argument(
        "--allow-overlap",
        action="store_true",
        help="evaluate even if a checkpoint trained on some of the images (the report says so)",
    )
    parser.add_argument(
        "--resolutions", nargs="+", type=parse_resolution, default=[8, 12, 16, 24, 32, None]
    )
    parser.add_argument(
        "--degrade",
        action="append",
        default=[],
        metavar="STEP:VALUE",
        help="also probes degraded by one training step, e.g. jpeg:20, gaussian_blur:2, "
        "noise:8 (repeat for several); the gallery stays at full resolution",
    )
    parser.add_argument("--gallery-per-identity", type=int, default=1)
    parser.add_argument(
        "--cross", action="store_true", help="also the probe x gallery resolution matrix"
    )
    parser.add_argument("--tsne-identities", type=int, default=8)
    parser.add_argument(
        "--plots",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="draw the PNG plots (--no-plots: tables and JSON only, faster)",
    )
    parser.add_argument("--tsne-resolution", type=parse_resolution, default=16)
    parser.add_argument("--backend", default="auto", choices=["auto", "dali", "torchvision"])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--out", required=True)
    parser.add_argument("overrides", nargs="*", help="config overrides section.key=value")
    args = parser.parse_intermixed_args(argv)
    if args.tsne_identities and args.tsne_resolution not in args.resolutions:
        args.resolutions.append(args.tsne_resolution)
    try:
        for text in args.degrade:
            parse_condition(text)  # a bad --degrade is refused before any work
        evaluate(args)
    except (ConfigError, DataError, WeightsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
