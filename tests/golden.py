"""The behaviour gate: what the code does, recorded in tests/assets/golden/ and checked exactly
(or within a stated tolerance where the order of float operations may differ between machines).

    python -m tests.golden            # (make golden) write every golden file, about a minute

- ``train_<stage>_<backend>.json``: the per-step loss, cross-entropy and feature term and the final
  parameter checksum of a tiny run (1 process, fp32, in process), teacher pretraining and
  cross-resolution training, on each backend;
- ``plans.json``: SHA-256 digests of the first 50 training plans under each degradation set;
- ``metrics.json``: verification, CMC, open-set and IJB template metrics on fixed features.

A comment, a rename or a module split moves none of them; a change to what the code computes
moves at least one, and tests/unit/test_golden.py then names the file and the published results
(results/) that it makes stale.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
GOLDEN = REPO / "tests" / "assets" / "golden"
sys.path.insert(0, str(REPO))

# Relative tolerance for float results: CPU kernels may sum in another order on another CPU;
# a behaviour change (cross-entropy scaled by 1.01, a different draw) moves them far more. The
# files were written on an AMD EPYC; on an Intel Xeon the same code moves them by up to 4.4e-4
# (the validation losses of the 6-step runs, which diverge and so amplify rounding), 1e-5 in the
# training losses: 2e-3 leaves a margin over that and still catches a 1% change.
RTOL = 2e-3
TRAIN_STEPS = 6
BACKENDS = ("torchvision", "dali")
DEGRADATION_SETS = {
    "downsample": ["downsample"],
    "downsample+blur+jpeg+noise": ["downsample:0.7", "gaussian_blur:0.5", "jpeg:0.5", "noise:0.5"],
    "blur": ["gaussian_blur"],
    "jpeg": ["jpeg"],
}


@contextlib.contextmanager
def single_process():
    """One process, no launcher: the trainer's signal handlers are put back afterwards and no
    launcher variables leak in (an in-process trainer runs no watchdog with one rank)."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    from tests.conftest import LAUNCHER_VARIABLES

    hidden = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith(LAUNCHER_VARIABLES)}
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
        os.environ.update(hidden)


class Recorder:
    """Stands in for the trainer's TensorBoard writer and keeps every logged value."""

    def __init__(self, inner) -> None:
        self.inner, self.rows = inner, []

    def add(self, values: dict, step: int) -> None:
        self.rows.append({"step": step, **values})
        self.inner.add(values, step)

    def close(self) -> None:
        self.inner.close()


def tiny_teacher(path: Path) -> Path:
    from crossres_dist.models import build_model
    from tests.conftest import TINY_SPEC

    torch.manual_seed(0)
    torch.save(build_model(TINY_SPEC).state_dict(), path)
    return path


def train_in_process(
    overrides: list[str], run_dir: Path, config: str = str(REPO / "tests" / "tiny.yaml")
) -> tuple[dict, list[dict]]:
    """A run of the real Trainer in this process (tests/tiny.yaml unless `config`):
    (results.json, every logged row). One rank: no watchdog; signal handlers put back."""
    from crossres_dist import distributed
    from crossres_dist.config import load_config
    from crossres_dist.training.trainer import Trainer

    cfg = load_config(
        config, [f"run.output_dir={run_dir.parent}", f"run.name={run_dir.name}", *overrides]
    )
    with single_process():
        trainer = Trainer(cfg)
        trainer.scalars = recorder = Recorder(trainer.scalars)
        try:
            trainer.train()
        finally:
            trainer.close()
            distributed.shutdown(True)
    return json.loads((run_dir / "results.json").read_text()), recorder.rows


def pretrain_in_process(data, run_dir: Path, *extra: str) -> tuple[dict, list[dict]]:
    """Teacher pretraining on `data` (tests/tiny.yaml, fp32, the CPU), in this process."""
    return train_in_process(
        [
            f"data.train={data}",
            "run.stage=pretrain",
            "teacher.checkpoint=",
            "train.precision=fp32",
            "train.device=cpu",
            *extra,
        ],
        run_dir,
    )


def training_trace(stage: str, backend: str, extra: tuple[str, ...] = ()) -> dict:
    # One intra-op thread, whatever the caller uses: the order of float sums is then the same in
    # `make golden` and in the test process.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _training_trace(stage, backend, extra)
    finally:
        torch.set_num_threads(threads)


# The margin heads' traces: each head, and PartialFC (one rank, rate 1) with AdaFace.
HEAD_RUNS = {
    "cosface": ("head.name=cosface",),
    "arcface": ("head.name=arcface",),
    "adaface": ("head.name=adaface",),
    "adaface+partial_fc": ("head.name=adaface", "head.partial_fc=true"),
}


def head_traces() -> dict:
    return {
        name: training_trace("crossres", "torchvision", extra) for name, extra in HEAD_RUNS.items()
    }


def _training_trace(stage: str, backend: str, extra: tuple[str, ...] = ()) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        common = [
            f"data.backend={backend}",
            "train.precision=fp32",
            f"train.max_steps={TRAIN_STEPS}",
            "train.log_every=1",
            "val.every=3",
            "checkpoint.every=3",
            "run.seed=0",
        ]
        if stage == "pretrain":
            common += ["run.stage=pretrain", "teacher.checkpoint="]
        else:
            common += [f"teacher.checkpoint={tiny_teacher(tmp / 'teacher.pt')}"]
        result, rows = train_in_process([*common, *extra], tmp / "run")
    rows = [r for r in rows if "train/loss" in r]  # validation rows are logged too
    return {
        "what": f"tiny {stage} run, 1 process, fp32, {backend} backend, {TRAIN_STEPS} steps",
        "loss": [r["train/loss"] for r in rows],
        "ce": [r["train/ce"] for r in rows],
        "feat": [r["train/feat"] for r in rows],
        "top1": [r["train/top1"] for r in rows],
        "param_checksum": result["param_checksum_per_rank"][0],
        "final": {k: result["final"][k] for k in sorted(result["final"])},
    }


def plan_digest(plan) -> str:
    digest = hashlib.sha256()
    for path in plan.paths:
        digest.update(Path(path).name.encode("utf-8", "surrogateescape") + b"\0")
    for name in (
        "labels",
        "crop_x",
        "crop_y",
        "gray",
        "degrade",
        "resolution",
        "valid",
        "flip",
        "blur_sigma",
        "jpeg_quality",
        "noise_sigma",
        "noise_seed",
    ):
        digest.update(name.encode() + np.ascontiguousarray(getattr(plan, name)).tobytes())
    return digest.hexdigest()[:16]


def plan_digests() -> dict:
    from pipelines.degradations import Degradations, parse_steps
    from pipelines.plans import TrainPlanner, ViewSettings
    from pipelines.sources import load_source

    samples = load_source("embedded:orl").samples
    out = {"what": "first 50 training plans of the ORL faces, micro-batch 16, seed 3, p 0.8"}
    for name, steps in DEGRADATION_SETS.items():
        views = ViewSettings(
            32,
            28,
            0.2,
            [8, 16],
            hflip_p=0.5,
            degradations=Degradations(steps=parse_steps(steps), resolutions=(8, 16)),
        )
        planner = TrainPlanner(samples, views, 16, 0, 1, seed=3, p_of_images=lambda n: 0.8)
        out[name] = [plan_digest(planner.plan(k)) for k in range(50)]
    return out


def metric_values() -> dict:
    from crossres_dist.eval import metrics
    from crossres_dist.eval.templates import template_features

    rng = np.random.default_rng(0)
    # 40 identities, 3 images each; features = identity centre + noise (fixed by the seed).
    centres = rng.normal(size=(40, 32))
    labels = np.repeat(np.arange(40), 3)
    feats = torch.from_numpy(centres[labels] + 0.9 * rng.normal(size=(120, 32))).float()
    gallery, probe = feats[0::3], torch.cat([feats[1::3], feats[2::3]])
    g_labels, p_labels = labels[0::3], np.concatenate([labels[1::3], labels[2::3]])
    scores = metrics.cosine(probe, gallery)
    genuine = p_labels[:, None] == g_labels[None, :]
    verification = metrics.verification(scores.ravel(), genuine.ravel())
    verification = {k: v for k, v in verification.items() if not isinstance(v, (list, dict))}
    # Open set: the last 10 identities are left out of the gallery.
    keep = g_labels < 30
    open_set = metrics.open_set(
        scores[:, keep], p_labels, g_labels[keep], fpirs=(0.3, 0.1, 0.05), rank=1
    )
    templates = np.repeat(np.arange(30), 4)
    media = np.tile([0, 0, 1, 2], 30)
    ids, pooled = template_features(feats[:120], templates, media)
    return {
        "what": "metrics of fixed random features (seed 0): 40 identities x 3 images",
        "verification": verification,
        "cmc": metrics.cmc(scores, p_labels, g_labels, ranks=(1, 5, 10)),
        "cmc_by_image": metrics.cmc(scores, p_labels, g_labels, ranks=(1, 5), by_image=True),
        "open_set": open_set,
        "templates": {
            "ids": ids.tolist(),
            "pooled_sum": float(pooled.double().sum()),
            "pooled_first": pooled[0, :8].tolist(),
        },
    }


def golden_values() -> dict[str, callable]:
    """Each golden file and the function that computes its content."""
    files = {
        f"train_{stage}_{backend}.json": (lambda s=stage, b=backend: training_trace(s, b))
        for stage in ("pretrain", "crossres")
        for backend in BACKENDS
    }
    files["train_crossres_heads_torchvision.json"] = head_traces
    files["plans.json"] = plan_digests
    files["metrics.json"] = metric_values
    return files


def compare(expected, actual, where: str = "") -> list[str]:
    """Where `actual` differs from `expected`: exact for strings, ints and structure, within
    RTOL for floats."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        out = []
        for key in sorted(set(expected) | set(actual)):
            if key not in expected or key not in actual:
                out.append(f"{where}.{key}: present in only one of them")
            elif key != "what":
                out += compare(expected[key], actual[key], f"{where}.{key}")
        return out
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{where}: {len(expected)} entries, now {len(actual)}"]
        return [
            d
            for i, (e, a) in enumerate(zip(expected, actual))
            for d in compare(e, a, f"{where}[{i}]")
        ]
    if isinstance(expected, float) or isinstance(actual, float):
        if expected is None or actual is None:
            return [] if expected is actual else [f"{where}: {expected} -> {actual}"]
        if np.isclose(actual, expected, rtol=RTOL, atol=1e-12) or (
            np.isnan(expected) and np.isnan(actual)
        ):
            return []
        return [f"{where}: {expected!r} -> {actual!r}"]
    return [] if expected == actual else [f"{where}: {expected!r} -> {actual!r}"]


def write(names: list[str] | None = None) -> None:
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for name, compute in golden_values().items():
        if names and name not in names:
            continue
        (GOLDEN / name).write_text(json.dumps(compute(), indent=1, sort_keys=True) + "\n")
        print(f"wrote {GOLDEN / name}")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    write(sys.argv[1:])
