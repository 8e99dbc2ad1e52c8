"""The recipe study: which settings of the student stage keep full resolution while gaining at
low resolution, over seeds, on any face set.

    python bench/recipe_study.py --data DIR [--variants recipe recipe-l0 ...] [--seeds 0 1 2]

1. The teacher: the demo's first stage (configs/demo_teacher.yaml) on DIR, once; or --teacher,
   a file or a packaged network (dlib's face ResNet: ``--teacher
   dlib_face_recognition_resnet_model_v1 --config configs/dlib_recipe.yaml``).
2. Every variant (a named list of overrides of --config, configs/demo.yaml by default) x seed
   trains a student on DIR.
   The split is drawn with data.split_seed, never with run.seed: every run of the study trains on
   the same images and none of them ever sees the test images.
3. Every student and the teacher are evaluated by crossres_dist.evaluate on the test split:
   classifier top-1 at 8 px, 16 px and full resolution, and cross-resolution matching (an 8 px
   probe against a full-resolution gallery of one image per identity, rank-1).
4. A table of mean (standard deviation) over seeds, with the targets checked, in OUT/study.md
   and OUT/study.json.
5. With ``--open-set FOLDER`` (people the networks never trained on, e.g. the LFW 2-9 people),
   open-set verification as well: 600 LFW-style pairs made once from FOLDER with seed 0 (ten
   folds of disjoint people, half same-person pairs) in insightface's .bin layout, the probe side
   at 8, 12, 16, 24, 32 px and full against a full-resolution face; 10-fold accuracy and
   TAR at FAR 1e-2 (``crossres_dist.evaluate --protocol verification``).

6. With ``--open-set-only`` (variants that train on other faces than --data, so no closed-set
   test split is common to them), only the open-set verification; with ``--gallery-teacher``,
   also every student's probes against the pairs' first faces as the teacher embeds them (a
   gallery the teacher enrolled, kept as it is): 'gallery acc R'. ``--inputs DIR...`` names the
   further data the variants read (their digests key the stored runs and the provenance).

Runs are single-process (``--parallel`` of them at a time) and are reused when their settings
have not changed, so the grid can grow without retraining what is done, and a study that stops
(a session's end, a killed job) continues where it stopped: every finished run is on disk.
Each variant's overrides are in VARIANTS below; ``--variant NAME=key=value,key=value`` adds one.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# This tree's package, also when the script runs from a snapshot (a worktree) of the repository.
sys.path.insert(0, str(REPO))

from pipelines.degradations import condition_label, parse_condition  # noqa: E402
from tools import published  # noqa: E402

# What the study's figures depend on besides the code's behaviour (the golden files) and the data.
STUDY_INPUTS = ("configs/demo.yaml", "configs/demo_teacher.yaml")
# The student stage's config (--config); the variants override it.
CONFIG = ["configs/demo.yaml"]
# Threads of each run (--threads): one per run when --parallel runs share the cores.
THREADS = [1]


def data_reference(data: str) -> str:
    """The data set as the README names it: embedded:orl, or a path relative to the repo."""
    if data.startswith("embedded:"):
        return data
    try:
        return os.path.relpath(Path(data).resolve(), REPO)
    except ValueError:
        return str(Path(data).resolve())


def study_fingerprint(data: list[str]) -> str:
    """The key of a stored run: the behaviour of the code (the golden files' digests, so a
    refactor keeps every stored run), the configs and the data's contents."""
    folders = [d if d == "embedded:orl" else REPO / d for d in data]
    inputs = STUDY_INPUTS if CONFIG[0] in STUDY_INPUTS else (*STUDY_INPUTS, CONFIG[0])
    return published.inputs_key(inputs, folders)


# Overrides of configs/demo.yaml (whose settings are the recipe). "demo-0" is the demo as it
# was before the study; every "recipe-*" changes one thing of the recipe.
BEFORE = [
    "method.lambda_feat=0.1",
    "method.feature_loss=mse",
    "method.p=0.5",
    "method.paired=false",
    "model.bn_mode=batch",
    "model.bn_momentum=0.0",
    "val.bn_recalibrate=off",
    "optim.lr=0.01",
    "train.epochs=40",
]
VARIANTS: dict[str, list[str]] = {
    "demo-0": BEFORE,
    "recipe": [],
    # The feature term: off (lambda = 0), the paper's MSE at its lambda, stronger.
    "recipe-l0": ["method.lambda_feat=0"],
    "recipe-mse": ["method.feature_loss=mse", "method.lambda_feat=0.1"],
    "recipe-cos30": ["method.lambda_feat=30"],
    # Each face once per batch, degraded with probability p (the paper), not both views.
    "recipe-unpaired": ["method.paired=false"],
    "recipe-unpaired-l0": ["method.paired=false", "method.lambda_feat=0"],
    # BatchNorm: stale running statistics (the teacher's), running statistics that follow the
    # batches, statistics of the training mixture, frozen to the teacher's in training too.
    "recipe-stale-bn": ["val.bn_recalibrate=off"],
    "recipe-bn-momentum": ["val.bn_recalibrate=off", "model.bn_momentum=0.1"],
    "recipe-bn-mixed": ["val.bn_recalibrate=mixed"],
    "recipe-bn-frozen": ["val.bn_recalibrate=off", "model.bn_mode=frozen", "optim.lr=0.003"],
    # Degradation probability: the paper's curriculum (0.1, +0.1 every 500 images), p = 1.
    "recipe-curriculum": ["method.curriculum=true", "method.curriculum_step=500"],
    "recipe-p1": ["method.p=1.0"],
    # Fine-tuning: the paper's learning rate; 12 epochs instead of 40.
    "recipe-lr0.001": ["optim.lr=0.001"],
    "recipe-e12": ["train.epochs=12"],
    # Realistic low quality: blur and JPEG besides down-sampling (issue 16's comparison).
    "recipe-realistic": ["method.degradations=[downsample, gaussian_blur:0.5, jpeg:0.5]"],
    # Motion blur (issue 56) on half the degraded views, its length the step's default [3, 9].
    "recipe-motion": ["method.degradations=[downsample, motion_blur:0.5]"],
    # The relational feature term (the teacher's similarities, not its features), alone and
    # with ArcFace: a feature term that does not pull the student toward a weak teacher's errors.
    "recipe-rel": ["method.feature_loss=relational"],
    "recipe-arcface-rel": ["head.name=arcface", "method.feature_loss=relational"],
    # The cosine term weighed by the teacher's reliability on each full-resolution face: its
    # probability of the true identity, or 1 where it is right and 0 where it is wrong.
    "recipe-conf": ["method.feature_weight=teacher_confidence"],
    "recipe-correct": ["method.feature_weight=teacher_correct"],
    # Issue 55, with configs/dlib_faces.yaml (its data: the LFW sample and CelebA labelled, the
    # LFW people with one image and UTKFace unlabelled, all screened against the test people):
    # every face; the labelled ones alone, with and without the feature term; each source left
    # out; no labelled source at all (the feature term alone, validated on the LFW sample); and
    # ArcFace's head.
    "faces-all": [],
    "faces-labelled": ["data.unlabelled=[]"],
    # Without the feature term nothing trains toward the teacher, so best.pt follows what the
    # run trains: identity (top-1 at 8 px), not the teacher's cosine (the starting network).
    "faces-labelled-l0": ["data.unlabelled=[]", "method.lambda_feat=0", "val.select_by=top1"],
    "faces-all-no-celeba": ["data.train=[runs/aligned/lfw_10to19]"],
    "faces-all-no-lfw1": ["data.unlabelled=[runs/screened/utkface.txt]"],
    "faces-all-no-utkface": ["data.unlabelled=[runs/screened/lfw_1.txt]"],
    "faces-distill": [
        "data.train=",
        "data.unlabelled=[runs/screened/celeba.txt,runs/screened/lfw_1.txt,"
        "runs/screened/utkface.txt]",
        "data.val=runs/aligned/lfw_10to19",
        "data.test=",
    ],
    "faces-all-arcface": ["head.name=arcface"],
    # Margin heads (crossres_dist/heads/) at their papers' settings, with and without the
    # feature term: does a margin, and AdaFace's quality-adaptive one in particular, add to the
    # cross-resolution method?
    **{
        f"recipe-{head}{suffix}": [f"head.name={head}", *extra]
        for head in ("cosface", "arcface", "adaface")
        for suffix, extra in (("", []), ("-l0", ["method.lambda_feat=0"]))
    },
}


def variant_overrides(spec: str) -> tuple[str, list[str]]:
    name, _, rest = spec.partition("=")
    if not rest:
        raise argparse.ArgumentTypeError(f"--variant {spec!r}: expected NAME=key=value,...")
    return name, rest.split(",")


def run(cmd: list[str], log: Path, threads: int) -> None:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "PYTHONWARNINGS": "ignore",
        "PYTHONPATH": str(REPO),
    }
    with open(log, "w") as out:
        code = subprocess.run(
            cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env
        ).returncode
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])} ... exited {code}; see {log}")


def train(config: str, run_dir: Path, overrides: list[str], nproc: int) -> None:
    launcher = (
        [sys.executable]
        if nproc == 1
        else [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
        ]
    )
    run(
        [
            *launcher,
            "-m",
            "crossres_dist.train",
            "--config",
            config,
            f"run.output_dir={run_dir.parent}",
            f"run.name={run_dir.name}",
            "train.progress_bar=false",
            *overrides,
        ],
        run_dir.parent / f"{run_dir.name}.log",
        THREADS[0],
    )


# Extra probe conditions (--probe-degrade), e.g. jpeg:15: a column "top1 jpeg15" each.
PROBE_DEGRADE: list[str] = []
# The open-set pairs (--open-set): the .bin every model is verified on, once made.
OPEN_SET: list[Path] = []
OPEN_RESOLUTIONS = ("8", "12", "16", "24", "32", "full")
OPEN_PAIRS = 600
# --open-set-only: no closed-set evaluation; --gallery-teacher: the teacher that enrolls the
# gallery side of the pairs for 'gallery acc R'.
OPEN_ONLY: list[bool] = [False]
GALLERY: list[str] = []


def evaluate_command(checkpoint: Path, out: Path, overrides: list[str], *protocol: str):
    """crossres_dist.evaluate of one model, named m, with the study's config, without plots."""
    return [
        sys.executable, "-m", "crossres_dist.evaluate", "--config", CONFIG[0],
        *overrides, "--checkpoint", str(checkpoint), "--name", "m", *protocol, "--no-plots",
        "--out", str(out),
    ]  # fmt: skip


def open_set_bin(people: Path, out: Path) -> Path:
    """The study's open-set pairs of `people`, made once with seed 0 (their JPEGs as they are)."""
    from crossres_dist.verification import write_bin
    from crossres_dist.verification.pairs import lfw_style_pairs

    path = out / "open-set" / f"pairs-{OPEN_PAIRS}-seed0.bin"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        pairs = lfw_style_pairs(people, OPEN_PAIRS, seed=0)
        images = [Path(p).read_bytes() for a, b, _ in pairs for p in (a, b)]
        write_bin(path, images, [same for _, _, same in pairs])
    return path


def open_set_evaluate(
    checkpoint: Path, out: Path, overrides: list[str], gallery: str = "", key: str = "open"
) -> dict:
    """Open-set verification of one model on the study's pairs: 'open acc R' and 'open tar R'
    (TAR at FAR 1e-2) for every probe resolution R; with `gallery`, the pairs' first faces
    embedded by that network instead ('gallery acc R', ...)."""
    extra = ["--gallery", gallery] if gallery else []
    run(
        evaluate_command(
            checkpoint,
            out,
            overrides,
            "--protocol",
            "verification",
            "--root",
            str(OPEN_SET[0]),
            "--resolutions",
            *OPEN_RESOLUTIONS,
            *extra,
        ),
        out.with_suffix(".log"),
        THREADS[0],
    )
    model = json.loads((out / "results.json").read_text())["models"]["m"]
    (scores,) = model["verification"].values()
    metrics = {}
    for r in OPEN_RESOLUTIONS:
        metrics[f"{key} acc {r}"] = scores[r]["accuracy"]
        metrics[f"{key} tar {r}"] = scores[r]["tar@far=0.01"]
    return metrics


def evaluate(checkpoint: Path, out: Path, overrides: list[str], student: bool = True) -> dict:
    """The closed-set figures on --data's test split (not with --open-set-only) and the
    open-set ones; with --gallery-teacher, a student's against the teacher's gallery too."""
    metrics = {} if OPEN_ONLY[0] else closed_set_evaluate(checkpoint, out, overrides)
    if OPEN_SET:
        open_out = out.with_name(out.name + "-open")
        metrics.update(open_set_evaluate(checkpoint, open_out, overrides))
        if GALLERY and student:
            gallery_out = out.with_name(out.name + "-gallery")
            metrics.update(
                open_set_evaluate(checkpoint, gallery_out, overrides, GALLERY[0], "gallery")
            )
    return metrics


def closed_set_evaluate(checkpoint: Path, out: Path, overrides: list[str]) -> dict:
    extra = [arg for text in PROBE_DEGRADE for arg in ("--degrade", text)]
    run(
        evaluate_command(
            checkpoint,
            out,
            overrides,
            "--split",
            "test",
            "--resolutions",
            "8",
            "16",
            "full",
            "--tsne-identities",
            "0",
            *extra,
        ),
        out.with_suffix(".log"),
        THREADS[0],
    )
    model = json.loads((out / "results.json").read_text())["models"]["m"]
    rows = model["probe_vs_full_gallery"]
    # A released network (dlib's) has no classifier over these identities: no top-1 for it.
    top1 = model.get("classifier_top1")
    metrics = {}
    if top1 is not None:
        metrics.update({"top1 8": top1["8"], "top1 16": top1["16"], "top1 full": top1["full"]})
    metrics["rank1 8>full"] = rows["8"]["identification"]["rank1"]
    for text in PROBE_DEGRADE if top1 is not None else []:
        label = condition_label(parse_condition(text))
        metrics[f"top1 {label}"] = top1[label]
    return metrics


def done(run_dir: Path, overrides: list[str]) -> dict | None:
    """The stored result of a run made from the same inputs (the fingerprint of the code,
    configs and this script) with the same overrides; None otherwise."""
    record = run_dir / "study-run.json"
    if record.is_file():
        stored = json.loads(record.read_text())
        if stored["overrides"] == overrides and stored.get("inputs") == INPUTS[0]:
            return stored["metrics"]
    return None


# The fingerprint of the study's inputs (set in main, with the data set's).
INPUTS: list[str] = [""]


def _same(record_file: Path, record: dict) -> bool:
    try:
        return json.loads(record_file.read_text()) == record
    except (OSError, ValueError):  # cut short while written: not the same run
        return False


def student_point(out: Path, name: str, seed: int, overrides: list[str], data_args: list[str]):
    run_dir = out / name / f"seed{seed}"
    full = [*data_args, *overrides, f"run.seed={seed}"]
    cached = done(run_dir, full)
    wanted = [f"top1 {condition_label(parse_condition(t))}" for t in PROBE_DEGRADE]
    wanted += [f"open acc {r}" for r in OPEN_RESOLUTIONS] if OPEN_SET else []
    wanted += [f"gallery acc {r}" for r in OPEN_RESOLUTIONS] if OPEN_SET and GALLERY else []
    if cached is not None and all(k in cached for k in wanted):
        return cached
    best = run_dir / "checkpoints" / "best.pt"
    if cached is not None and best.is_file():  # trained already: only the new probes
        cached.update(evaluate(best, run_dir / "eval", data_args))
        (run_dir / "study-run.json").write_text(
            json.dumps({"overrides": full, "inputs": INPUTS[0], "metrics": cached}, indent=1)
        )
        return cached
    trained = run_dir / "study-trained.json"  # training finished, with these inputs
    record = {"overrides": full, "inputs": INPUTS[0]}
    start = time.perf_counter()
    if not (best.is_file() and trained.is_file() and json.loads(trained.read_text()) == record):
        # A run stopped midway with this same definition goes on from its newest checkpoint (the
        # trainer's auto-resume); any other earlier run is an older definition: train it again.
        started = run_dir / "study-started.json"
        if run_dir.exists() and not (started.is_file() and _same(started, record)):
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        started.write_text(json.dumps(record, indent=1))
        train(CONFIG[0], run_dir, full, 1)
        # Said before the evaluation: one that fails costs its evaluation, not the training.
        trained.write_text(json.dumps(record, indent=1))
    metrics = evaluate(run_dir / "checkpoints" / "best.pt", run_dir / "eval", data_args)
    results = json.loads((run_dir / "results.json").read_text())
    final = results["final"]
    for key, label in (
        ("val/8px/top1", "val top1 8 (last)"),
        ("val/full/top1", "val top1 full (last)"),
        ("val/teacher_cos", "val teacher cos (last)"),
    ):
        if key in final:  # no top-1 without a labelled source; no cosine unless selected by it
            metrics[label] = final[key]
    # method.feature_weight: the teacher's mean weight over the last logged window of training.
    weights = re.findall(r"teacher weight ([0-9.]+)", (out / f"{name}/seed{seed}.log").read_text())
    if weights:
        metrics["teacher weight (last)"] = float(weights[-1])
    metrics["seconds"] = time.perf_counter() - start
    (run_dir / "study-run.json").write_text(
        json.dumps({"overrides": full, "inputs": INPUTS[0], "metrics": metrics}, indent=1)
    )
    print(f"{name} seed {seed}: " + json.dumps({k: round(v, 3) for k, v in metrics.items()}))
    return metrics


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


KEYS = ["top1 8", "top1 16", "top1 full", "rank1 8>full"]


def table(
    teacher: dict, rows: dict[str, list[dict]], title: str, prefix: tuple = ("top1", "rank1")
) -> str:
    first = next(iter(rows.values()))[0] if rows else {}
    keys = [k for k in dict.fromkeys([*teacher, *first]) if k.startswith(prefix)]
    lines = [
        title,
        "",
        "| model | " + " | ".join(keys) + " | vs teacher: 8 / 16 / full |",
        "|---|" + "---|" * (len(keys) + 1),
        "| teacher | " + " | ".join(_cell(teacher.get(k)) for k in keys) + " | |",
    ]
    for name, runs in rows.items():
        cells = []
        for k in keys:
            m, sd = mean_sd([r[k] for r in runs])
            cells.append(f"{m:.3f} ({sd:.3f})")
        compared = (
            KEYS[:3] if prefix[0] == "top1" else [f"{prefix[0]} {r}" for r in ("8", "16", "full")]
        )
        deltas = [
            mean_sd([r[k] for r in runs])[0] - teacher[k] if k in teacher else None
            for k in compared
        ]
        cells.append(" / ".join("-" if d is None else f"{d:+.3f}" for d in deltas))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(teacher: dict, rows: dict[str, list[dict]], chosen: str, without: str | None) -> str:
    """The issue's targets for the chosen variant: +20 points at 8 and 16 px, at most 2 points
    lost at full resolution, and the feature term's effect on cross-resolution matching larger
    than the spread over seeds."""
    runs = rows[chosen]
    means = {k: mean_sd([r[k] for r in runs])[0] for k in KEYS}
    lines = [f"Targets for `{chosen}` (means over {len(runs)} seeds, test split):"]
    for k, need in (("top1 8", 0.20), ("top1 16", 0.20)):
        gain = means[k] - teacher[k]
        lines.append(
            f"- {k}: {gain:+.3f} vs the teacher (need >= +{need:.2f}): {_ok(gain >= need)}"
        )
    drop = means["top1 full"] - teacher["top1 full"]
    lines.append(f"- top1 full: {drop:+.3f} vs the teacher (need >= -0.02): {_ok(drop >= -0.02)}")
    if without and without in rows:
        a = [r["rank1 8>full"] for r in runs]
        b = [r["rank1 8>full"] for r in rows[without]]
        gap = statistics.mean(a) - statistics.mean(b)
        spread = max(mean_sd(a)[1], mean_sd(b)[1])
        lines.append(
            f"- rank1 8>full against `{without}` (lambda = 0): {gap:+.3f}, spread over seeds "
            f"{spread:.3f}: {_ok(gap > spread)}"
        )
    return "\n".join(lines)


def open_set_lines(rows: dict[str, list[dict]], without: str | None) -> str:
    """Each variant against lambda = 0 in open-set 8 px -> full verification, and at full
    resolution, with the spread over seeds."""
    if not without or without not in rows:
        return ""
    lines = [f"Open-set verification against `{without}` (lambda = 0), means over seeds:"]
    for name, runs in rows.items():
        if name == without:
            continue
        parts = []
        for k in ("open acc 8", "open acc full"):
            a, b = [r[k] for r in runs], [r[k] for r in rows[without]]
            gap = statistics.mean(a) - statistics.mean(b)
            spread = max(mean_sd(a)[1], mean_sd(b)[1])
            parts.append(f"{k.removeprefix('open ')} {gap:+.3f} (spread {spread:.3f})")
        lines.append(f"- `{name}`: " + ", ".join(parts))
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def open_targets(teacher: dict, rows: dict[str, list[dict]], chosen: str, without: str) -> str:
    """Issue 46's targets with a real teacher, open-set (means over seeds): 8 px accuracy at
    least the teacher's + 15 points, 16 px at least 0.96, full resolution within 0.5 point of
    the teacher; the feature term against lambda = 0 at 8 and 16 px, against the spread."""
    runs = rows[chosen]
    mean = {k: mean_sd([r[k] for r in runs])[0] for k in runs[0]}
    lines = [f"Targets for `{chosen}` (open-set accuracy, means over {len(runs)} seeds):"]
    gain = mean["open acc 8"] - teacher["open acc 8"]
    lines.append(f"- 8 px: {gain:+.3f} vs the teacher (need >= +0.15): {_ok(gain >= 0.15)}")
    lines.append(
        f"- 16 px: {mean['open acc 16']:.3f} (need >= 0.96): {_ok(mean['open acc 16'] >= 0.96)}"
    )
    drop = mean["open acc full"] - teacher["open acc full"]
    lines.append(f"- full: {drop:+.3f} vs the teacher (need >= -0.005): {_ok(drop >= -0.005)}")
    if without in rows:
        for r in ("8", "16"):
            a = [x[f"open acc {r}"] for x in runs]
            b = [x[f"open acc {r}"] for x in rows[without]]
            gap = statistics.mean(a) - statistics.mean(b)
            spread = max(mean_sd(a)[1], mean_sd(b)[1])
            verdict = (
                "ahead by more than the spread"
                if gap > spread
                else "**not** ahead by more than the spread"
            )
            lines.append(
                f"- {r} px against `{without}` (lambda = 0): {gap:+.3f}, spread {spread:.3f}: {verdict}"
            )
    return "\n".join(lines)


def faces_targets(teacher: dict, rows: dict[str, list[dict]], chosen: str, without: str) -> str:
    """Issue 55's targets (open-set accuracy, means over seeds): 8 px >= 0.85, 12 px >= 0.93,
    16 px >= 0.96; 24 px, 32 px and full never more than 0.5 point below the teacher; the
    feature term ahead of lambda = 0 at 8 and 16 px by more than the spread; the student's
    probes against the teacher's gallery within 0.5 point of the teacher at full resolution,
    and at 8 px at least the student against itself."""
    runs = rows[chosen]
    mean = {k: mean_sd([r[k] for r in runs])[0] for k in runs[0]}
    lines = [f"Targets for `{chosen}` (open-set accuracy, means over {len(runs)} seeds):"]
    for r, need in (("8", 0.85), ("12", 0.93), ("16", 0.96)):
        value = mean[f"open acc {r}"]
        lines.append(f"- {r} px: {value:.3f} (need >= {need:.2f}): {_ok(value >= need)}")
    for r in ("24", "32", "full"):
        gap = mean[f"open acc {r}"] - teacher[f"open acc {r}"]
        lines.append(f"- {r}: {gap:+.3f} vs the teacher (need >= -0.005): {_ok(gap >= -0.005)}")
    if without in rows:
        for r in ("8", "16"):
            a = [x[f"open acc {r}"] for x in runs]
            b = [x[f"open acc {r}"] for x in rows[without]]
            gap, spread = statistics.mean(a) - statistics.mean(b), max(mean_sd(a)[1], mean_sd(b)[1])
            lines.append(
                f"- {r} px against `{without}` (lambda = 0): {gap:+.3f}, spread {spread:.3f}: "
                f"{_ok(gap > spread)}"
            )
    if "gallery acc full" in mean:
        gap = mean["gallery acc full"] - teacher["open acc full"]
        lines.append(
            f"- against the teacher's gallery, full: {gap:+.3f} vs the teacher's own "
            f"(need >= -0.005): {_ok(gap >= -0.005)}"
        )
        gap = mean["gallery acc 8"] - mean["open acc 8"]
        lines.append(
            f"- against the teacher's gallery, 8 px: {gap:+.3f} vs the student against itself "
            f"(need >= 0): {_ok(gap >= 0)}"
        )
    return "\n".join(lines)


def _ok(flag: bool) -> str:
    return "met" if flag else "**not met**"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data",
        required=True,
        help="an ImageFolder of faces, or embedded:orl; or 'config': the data --config names "
        "(with --open-set-only, --name and --inputs)",
    )
    parser.add_argument(
        "--inputs", nargs="*", default=[], help="further data the variants read (digested)"
    )
    parser.add_argument(
        "--open-set-only", action="store_true", help="no closed-set test split (see 6. above)"
    )
    parser.add_argument(
        "--gallery-teacher",
        action="store_true",
        help="also each student's probes against the teacher's gallery (with --open-set)",
    )
    parser.add_argument(
        "--targets", choices=["46", "55"], default="46", help="which issue's open-set targets"
    )
    parser.add_argument(
        "--face-fraction",
        type=float,
        default=0.0,
        help="the share of r the face spans (dlib's chips: 2/3), said beside the resolutions",
    )
    parser.add_argument("--name", help="a name for the data set (default: the folder's name)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=["demo-0", "recipe", "recipe-l0"])
    parser.add_argument("--variant", action="append", type=variant_overrides, default=[])
    parser.add_argument(
        "--teacher", help="a teacher checkpoint or packaged network (default: train one)"
    )
    parser.add_argument(
        "--config", default=CONFIG[0], help="the student stage's config, which variants override"
    )
    parser.add_argument("--teacher-overrides", nargs="*", default=[])
    parser.add_argument("--chosen", default="recipe", help="the variant the targets are checked on")
    parser.add_argument("--without", default="recipe-l0", help="its lambda = 0 counterpart")
    parser.add_argument("--parallel", type=int, default=2, help="runs at a time")
    parser.add_argument("--threads", type=int, default=1, help="threads of each run")
    parser.add_argument("--out", help="default: runs/study/NAME")
    parser.add_argument(
        "--readme", action="store_true", help="publish as results/study-NAME/ and splice it"
    )
    parser.add_argument("--allow-dirty", action="store_true", help="with --readme")
    parser.add_argument(
        "--open-set",
        metavar="FOLDER",
        help="people never trained on (an ImageFolder): also verify every model on 600 LFW-style "
        "pairs of them, the probe side at 8-32 px and full",
    )
    parser.add_argument(
        "--probe-degrade",
        nargs="*",
        default=[],
        metavar="STEP:VALUE",
        help="also evaluate probes degraded so (jpeg:15, gaussian_blur:1.5): a column each",
    )
    args = parser.parse_args()
    provenance = None
    if args.readme:
        try:
            provenance = published.capture(
                "python bench/recipe_study.py " + " ".join(sys.argv[1:]),
                [
                    *([args.data] if args.data != "config" else []),
                    *args.inputs,
                    *([args.open_set] if args.open_set else []),
                ],
                args.allow_dirty,
            )
        except published.DirtyTree as err:
            sys.exit(f"error: {err}")

    PROBE_DEGRADE.extend(args.probe_degrade)
    CONFIG[0] = args.config
    THREADS[0] = args.threads
    if args.data == "config" and not (args.name and args.open_set_only and args.teacher):
        sys.exit("error: --data config needs --name, --open-set-only and --teacher")
    OPEN_ONLY[0] = args.open_set_only
    INPUTS[0] = study_fingerprint(
        [data_reference(d) for d in ([args.data] if args.data != "config" else []) + args.inputs]
    )
    variants = dict(VARIANTS)
    variants.update(dict(args.variant))
    unknown = [v for v in args.variants if v not in variants]
    if unknown:
        sys.exit(f"error: unknown variant {unknown[0]!r} (known: {', '.join(variants)})")
    name = args.name or Path(args.data).name.replace("embedded:", "")
    out = Path(args.out or REPO / "runs" / "study" / name).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data_args = [f"data.train={args.data}"] if args.data != "config" else []
    if args.open_set:
        OPEN_SET.append(open_set_bin(Path(args.open_set), out))
    if args.gallery_teacher:
        GALLERY.append(str(args.teacher))

    teacher = args.teacher or out / "teacher" / "checkpoints" / "best.pt"
    teacher_overrides = [*data_args, *args.teacher_overrides]
    record = out / "teacher" / "study-run.json"
    if not args.teacher and done(out / "teacher", teacher_overrides) is None:
        if (out / "teacher").exists():
            shutil.rmtree(out / "teacher")
        start = time.perf_counter()
        train("configs/demo_teacher.yaml", out / "teacher", teacher_overrides, 2)
        (out / "teacher").mkdir(exist_ok=True)
        record.write_text(
            json.dumps(
                {
                    "overrides": teacher_overrides,
                    "inputs": INPUTS[0],
                    "metrics": {"seconds": time.perf_counter() - start},
                }
            )
        )
        print(f"teacher trained in {time.perf_counter() - start:.0f} s")
    teacher_metrics = evaluate(teacher, out / "teacher-eval", data_args, student=False)
    data_args.append(f"teacher.checkpoint={teacher}")

    jobs = [(v, seed) for v in args.variants for seed in args.seeds]
    with ThreadPoolExecutor(args.parallel) as pool:
        results = list(
            pool.map(
                lambda job: student_point(out, job[0], job[1], variants[job[0]], data_args), jobs
            )
        )
    rows: dict[str, list[dict]] = {}
    for (variant, _), metrics in zip(jobs, results):
        rows.setdefault(variant, []).append(metrics)

    if GALLERY:  # the teacher against its own gallery is its open-set figure
        teacher_metrics.update(
            {k.replace("open", "gallery", 1): v for k, v in list(teacher_metrics.items())}
        )
    text = ""
    if not OPEN_ONLY[0]:
        reference = data_reference(args.data)
        title = (
            f"data: {reference}; test split (3 images per identity, never trained on or used for "
            f"selection), best.pt of each run, {len(args.seeds)} seeds "
            f"({', '.join(map(str, args.seeds))}); mean (standard deviation)"
        )
        text = table(teacher_metrics, rows, title)
    if args.chosen in rows and "top1 8" in teacher_metrics:
        text += "\n\n" + targets(teacher_metrics, rows, args.chosen, args.without)
    if OPEN_SET:
        people = data_reference(args.open_set)
        measures = [("open acc", "10-fold accuracy"), ("open tar", "TAR at FAR 1e-2")]
        if GALLERY:
            measures.append(
                ("gallery acc", "10-fold accuracy of the student's probe against the first face "
                 "as the teacher embeds it (a gallery the teacher enrolled)")
            )  # fmt: skip
        faces = ""
        if args.face_fraction:
            sizes = ", ".join(
                f"{r} -> {int(r) * args.face_fraction:.0f}" for r in OPEN_RESOLUTIONS if r != "full"
            )
            faces = (
                f" (r is the chip's side; the face spans about {args.face_fraction:.2f} of it: "
                f"{sizes} px)"
            )
        for key, what in measures:
            text += "\n\n" + table(
                teacher_metrics,
                rows,
                f"Open-set verification, {what}: {OPEN_PAIRS} LFW-style pairs of {people} (people "
                "never trained on; ten folds, half same-person pairs, made once with seed 0), the "
                f"probe side at r px{faces} against a full-resolution face; mean (standard "
                "deviation)",
                (key,),
            )
        text += "\n\n" + open_set_lines(rows, args.without)
        if args.chosen in rows:
            check = open_targets if args.targets == "46" else faces_targets
            text += "\n\n" + check(teacher_metrics, rows, args.chosen, args.without)
    text = text.lstrip("\n")
    text += f"\n\nVariants (overrides of {CONFIG[0]}):\n\n" + "\n".join(
        f"- `{v}`: {' '.join(variants[v]) or '(the config as it is)'}" for v in rows
    )
    (out / "study.md").write_text(text + "\n")
    payload = {"teacher": teacher_metrics, "runs": rows, "variants": variants}
    (out / "study.json").write_text(json.dumps(payload, indent=1))
    if provenance is not None:
        print(f"wrote {published.publish(f'study-{name}', text, payload, provenance)}")
    print("\n" + text)


if __name__ == "__main__":
    main()
