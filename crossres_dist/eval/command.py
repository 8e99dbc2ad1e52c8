"""Evaluate checkpoints on a benchmark, at full and at low resolution.

    python -m crossres_dist.evaluate --protocol folder --config configs/demo.yaml \\
        --checkpoint runs/a/checkpoints/best.pt [--checkpoint ...] --resolutions 8 16 32 full
    python -m crossres_dist.evaluate --protocol ijbc --root /data/IJBC --config CONFIG \\
        --checkpoint best.pt --resolutions 8 16 24 32 64 full
    python -m crossres_dist.evaluate --protocol tinyface --root /data/tinyface ...
    python -m crossres_dist.evaluate --protocol survface --root /data/QMUL-SurvFace ...
    python -m crossres_dist.evaluate --protocol verification --root /data/ms1m-retinaface ...
    python -m crossres_dist.evaluate --protocol scface --root /data/SCface ...

The protocols are those registered in crossres_dist/eval/protocols/ (``--help`` lists them;
``folder``, the config's test split, is the default). Runs on one process or many (torchrun, srun, mpirun): every rank extracts its
shard of the images, rank 0 gathers them and computes the metrics. Features are cached per
checkpoint, images and condition in ``OUT/cache`` and an interrupted extraction resumes there.
Bad input stops with a one-line error before any network runs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from crossres_dist import distributed, logs
from crossres_dist.arithmetic import pin as pin_arithmetic
from crossres_dist.config import Config, load_config
from crossres_dist.data.views import view_settings
from crossres_dist.errors import ConfigError, CrossresError
from crossres_dist.eval.features import (
    Extractor,
    cache_path,
    extract_cached,
    feature_settings,
    load_model,
)
from crossres_dist.eval.protocols import PROTOCOLS
from crossres_dist.eval.protocols import describe as describe_protocols
from crossres_dist.eval.protocols.base import Protocol
from crossres_dist.eval.protocols.folder import parse_resolution
from crossres_dist.eval.report import write
from crossres_dist.precision import autocast_for, resolve_precision
from crossres_dist.weights import resolve_path
from pipelines.degradations import condition_label, parse_condition
from pipelines.degradations import describe as describe_steps
from pipelines.sources import DataError

log = logging.getLogger(__name__)
DEFAULT_RESOLUTIONS = [8, 12, 16, 24, 32, None]


@dataclass
class Plan:
    """What an evaluation will do, every input read and checked: the protocol with its files,
    the networks by name, the conditions, each network's provenance."""

    cfg: Config
    protocol: Protocol
    networks: list[tuple[str, str]]  # (checkpoint, name)
    conditions: list
    provenance: dict[str, dict]
    gallery: str = ""  # --gallery: the network that embeds the reference side


def plan(args, may_run_again: bool = False) -> Plan:
    """Every check before any network runs: the config, the checkpoints and their names, the
    protocol's files, the conditions."""
    cfg = load_config(args.config, args.overrides, purpose="evaluation")
    pin_arithmetic(cfg.run.reproducible, may_run_again)  # features as the run computed them
    protocol_class = PROTOCOLS[args.protocol]
    if protocol_class.needs_root and not args.root:
        raise ConfigError(f"--protocol {args.protocol} needs --root, the release's folder")
    # A path, or the short name of a network a package ships (dlib's), resolved once here.
    args.checkpoint = [str(resolve_path(path)) for path in args.checkpoint]
    names = args.name or [Path(p).parent.parent.name or Path(p).stem for p in args.checkpoint]
    if len(names) != len(args.checkpoint):
        raise ConfigError("give one --name per --checkpoint")
    protocol = protocol_class(args, cfg.data, cfg.source)
    if protocol.native_resolution and args.resolutions != DEFAULT_RESOLUTIONS:
        log.warning(
            "--protocol %s: its images are low-resolution already and are evaluated as they are; "
            "--resolutions %s is not used",
            args.protocol,
            " ".join(condition_label(r) for r in args.resolutions),
        )
    conditions = list(dict.fromkeys(args.resolutions))
    conditions += [parse_condition(text) for text in args.degrade]
    gallery = ""
    if args.gallery:
        if not protocol.takes_gallery:
            raise ConfigError(
                f"--gallery: --protocol {args.protocol} embeds its reference side with the network "
                "it evaluates; --gallery is for --protocol verification"
            )
        if getattr(args, "verification_degrade", "probe") == "both":
            raise ConfigError(
                "--gallery: the gallery is enrolled at full resolution; it does not go with "
                "--verification-degrade both"
            )
        gallery = str(resolve_path(args.gallery))
    return Plan(
        cfg,
        protocol,
        list(zip(args.checkpoint, names)),
        protocol.conditions(conditions),
        {n: protocol.provenance(p) for p, n in zip(args.checkpoint, names)},
        gallery,
    )


def extract_and_score(work: Plan, args, rank: int, device, out: Path) -> dict:
    """Each network's features under every condition (from the cache when it holds them), and
    on rank 0 the protocol's scores of them: {name: its part of the report}."""
    cfg, protocol = work.cfg, work.protocol
    autocast = autocast_for(resolve_precision("auto", device), device)
    cache = out / "cache"
    if rank == 0:
        cache.mkdir(parents=True, exist_ok=True)
    models = {}

    def extractor_of(checkpoint: str) -> Extractor:
        model = load_model(checkpoint, device)
        # The config's geometry, the network's own normalisation: training's views, undrawn.
        views = view_settings(cfg.data, cfg.method, model.spec, evaluation=True)
        protocol.prepare(out, views)
        return Extractor(
            model,
            views,
            cfg.data.micro_batch,
            args.backend,
            device,
            cfg.data.num_threads,
            autocast,
            cfg.method.interpolation,
            args.flip,
            protocol.mirror,
        )

    gallery = None
    if work.gallery:  # the reference side, at full resolution, once for every network
        samples = protocol.samples_at(None)
        gallery = extract_cached(
            extractor_of(work.gallery), work.gallery, samples, None, cache, "gallery"
        )
    for checkpoint, name in work.networks:
        extractor = extractor_of(checkpoint)
        features, files = {}, {}
        for condition in work.conditions:
            samples = protocol.samples_at(condition)
            label = condition_label(condition)
            files[label] = str(cache_path(extractor, checkpoint, samples, condition, cache))
            extracted = extract_cached(extractor, checkpoint, samples, condition, cache, name)
            if extracted is not None:
                features[label] = extracted
        if gallery is not None:
            features["gallery"] = gallery
        if rank == 0:
            models[name] = {
                "checkpoint": str(Path(checkpoint).resolve()),
                **({"gallery": work.gallery} if work.gallery else {}),
                "feature_settings": feature_settings(extractor),
                "provenance": work.provenance[name],
                "feature_cache": files,
                **protocol.score(checkpoint, features),
            }
    return models


def publish(work: Plan, args, models: dict, out: Path) -> dict:
    """The report (rank 0): written to OUT with its table and plots, the table printed."""
    protocol = work.protocol
    report = {
        "protocol": args.protocol,
        "data": protocol.data_name,
        "conditions": [condition_label(c) for c in work.conditions],
        "flip": args.flip,
        "models": models,
        **protocol.report_settings(),
        "images": len(protocol.samples),
    }
    table = protocol.markdown(report)
    write(out, report, table)
    plots = protocol.plots(out, report) if args.plots else []
    print("\n" + table)
    log.info("evaluation written to %s (%s)", out, ", ".join(p.name for p in plots) or "no plots")
    return report


def evaluate(args, may_run_again: bool = False) -> dict | None:
    """Plan (every check before any network), extract and score, report; the report on rank 0,
    None on the others."""
    info = distributed.detect()
    # Log lines on stderr from here on (the protocols' warnings too); the tables go to stdout.
    logs.setup(info.rank, stream=sys.stderr)
    work = plan(args, may_run_again)
    device = distributed.pick_device(args.device, info.local_rank)
    distributed.init(info, device, "auto", 1800)
    finished = False
    try:
        work.protocol.refuse_unreadable(
            info.rank, distributed.world_size(), work.cfg.data.num_threads
        )
        out = Path(args.out)
        models = extract_and_score(work, args, info.rank, device, out)
        report = publish(work, args, models, out) if info.rank == 0 else None
        finished = True
        return report
    finally:
        # After a failure the ranks do not meet again: one may be gone.
        distributed.shutdown(graceful=finished)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="crossres-eval", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--protocol",
        choices=sorted(PROTOCOLS),
        default="folder",
        help="the benchmark (default: folder). " + describe_protocols(),
    )
    p.add_argument("--root", help="the benchmark release's folder (all protocols but folder)")
    p.add_argument(
        "--checkpoint",
        action="append",
        required=True,
        help="a checkpoint or weights file to evaluate (repeat for several; the architecture "
        "comes from the file)",
    )
    p.add_argument(
        "--name",
        action="append",
        help="its name in the tables and plots, one per --checkpoint (default: the run's name)",
    )
    p.add_argument(
        "--gallery",
        metavar="CHECKPOINT",
        help="embed the reference side (each pair's first face, at full resolution) with this "
        "network instead of the one evaluated: probes of a student against a gallery its "
        "teacher enrolled (--protocol verification)",
    )
    p.add_argument("--config", required=True, help="the training config (views, data split)")
    p.add_argument(
        "--resolutions",
        nargs="+",
        type=parse_resolution,
        default=DEFAULT_RESOLUTIONS,
        help="probe resolutions in px, and 'full' (native low-resolution benchmarks ignore it)",
    )
    p.add_argument(
        "--degrade",
        action="append",
        default=[],
        metavar="STEP:VALUE",
        help="also probes degraded by one training step (repeat for several; the gallery stays "
        "at full resolution), e.g. jpeg:20 or gaussian_blur:2. " + describe_steps(),
    )
    p.add_argument(
        "--open-set-rank",
        type=positive_int,
        metavar="K",
        help="open-set identification counts a mated probe found when its mate is within the "
        "top K (default: the protocol's own, 20 for survface, 1 otherwise)",
    )
    p.add_argument(
        "--flip", action="store_true", help="add the features of the mirrored face to each image's"
    )
    p.add_argument(
        "--plots",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="draw the PNG plots (--no-plots: tables and JSON only, faster)",
    )
    p.add_argument("--backend", default="auto", choices=["auto", "dali", "torchvision"])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--out", required=True)
    p.add_argument("overrides", nargs="*", help="config overrides section.key=value")
    # Each protocol's own options, once per module (IJB-B and IJB-C share theirs).
    for add_arguments in dict.fromkeys(c.add_arguments.__func__ for c in PROTOCOLS.values()):
        add_arguments(None, p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_intermixed_args(argv)
    try:
        for text in args.degrade:
            try:
                parse_condition(text)  # a bad --degrade is refused before any work
            except ValueError as err:
                raise ConfigError(str(err)) from None
        evaluate(args, may_run_again=argv is None)
    except (CrossresError, DataError) as err:
        if _is_rank_zero():  # every rank refuses alike; one says why
            print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _is_rank_zero() -> bool:
    try:
        return distributed.detect().rank == 0
    except Exception:  # a half-set launcher environment: say it anyway
        return True


if __name__ == "__main__":
    sys.exit(main())
