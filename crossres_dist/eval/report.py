"""Reports: the JSON and markdown every protocol writes, and the plots.

JSON (``results.json``) is the record: every metric, the ROC points, the provenance of each
checkpoint. Markdown (``results.md``) is what a person reads; each protocol writes its own
tables. Plots are PNGs drawn with matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import torch.nn.functional as F

from crossres_dist.checkpointing import run_directory as rundir

log = logging.getLogger(__name__)


def pyplot():
    import matplotlib

    if not list(Path(matplotlib.get_cachedir()).glob("fontlist-*.json")):
        log.info("matplotlib is building its font cache (once per machine; a minute or two)")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(plt, fig, path: Path) -> Path:
    """A finished figure as a PNG at the reports' resolution; the figure is closed."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def numeric_order(node):
    """Metric keys that end in a number (tar@far=1e-06, tpir@fpir=0.1, rank5) in numeric order,
    the others as they were, at every level: a reader sees 1e-06 before 0.001 before 0.1."""
    if isinstance(node, list):
        return [numeric_order(v) for v in node]
    if not isinstance(node, dict):
        return node

    def key(item):
        name = item[0]
        match = re.fullmatch(r"(\D*?)=?(\d[\d.e+-]*)", name) if isinstance(name, str) else None
        if match is None:
            return (1, "", 0.0, "")
        try:
            return (0, match[1], float(match[2]), name)
        except ValueError:
            return (1, "", 0.0, "")

    numbered = sorted((i for i in node.items() if key(i)[0] == 0), key=key)
    others = [i for i in node.items() if key(i)[0] == 1]
    return {k: numeric_order(v) for k, v in [*others, *numbered]}


def write(out: Path, report: dict, markdown: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    # Not write_json's sorted keys: those would put tar@far=0.1 before tar@far=1e-06.
    rundir.write_text(out / "results.json", json.dumps(numeric_order(report), indent=1) + "\n")
    rundir.write_text(out / "results.md", markdown)


def _rocs(node, path=()):
    """Every (where, roc) under a report's model entry."""
    if isinstance(node, dict):
        if "roc" in node and isinstance(node["roc"], dict):
            yield path, node["roc"]
        for key, value in node.items():
            yield from _rocs(value, (*path, key))


def plot_rocs(out: Path, report: dict, kind: str) -> list[Path]:
    """One ROC panel per condition (resolution), a curve per model, log FAR axis."""
    plt = pyplot()
    panels: dict[str, list] = {}
    for name, model in report["models"].items():
        for where, roc in _rocs(model):
            if kind in where:
                label = " ".join(w for w in where if w not in (kind, "by_resolution"))
                panels.setdefault(label or "full", []).append((name, roc))
    if not panels:
        return []
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4), squeeze=False)
    for ax, (label, curves) in zip(axes[0], panels.items()):
        for name, roc in curves:
            ax.plot(np.maximum(roc["fpr"], 1e-7), roc["tpr"], label=name)
        ax.set(xscale="log", xlim=(1e-6, 1), ylim=(0, 1.02), title=f"ROC, {label}", xlabel="FAR")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("TAR")
    axes[0][0].legend()
    return [save(plt, fig, out / "roc.png")]


def plot_folder(out: Path, report: dict, tsne_inputs: dict | None) -> list[Path]:
    """Rank-1 and TAR against probe resolution, ROCs, and a t-SNE of the features."""
    plt = pyplot()

    written = []
    names = list(report["models"])
    labels = report["conditions"]
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
    written.append(save(plt, fig, out / "accuracy_vs_resolution.png"))

    fig, axes = plt.subplots(1, len(labels), figsize=(3.2 * len(labels), 3.2), squeeze=False)
    for ax, r in zip(axes[0], labels):
        for name in names:
            roc = report["models"][name]["probe_vs_full_gallery"][r]["verification"]["roc"]
            ax.plot(roc["fpr"], roc["tpr"], label=name)
        ax.set(xscale="log", xlim=(1e-3, 1), ylim=(0, 1.02), title=f"ROC, probe {r}", xlabel="FAR")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("TAR")
    axes[0][0].legend()
    written.append(save(plt, fig, out / "roc.png"))

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
        written.append(save(plt, fig, out / "tsne.png"))
    return written
