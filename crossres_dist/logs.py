"""Logging: rank 0 talks (console, a log file, TensorBoard); the other ranks print only errors."""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s [rank %(rank)s] %(message)s"


def setup(rank: int, log_file: Path | None = None, stream=None) -> None:
    """Rank 0 logs INFO and up, the other ranks errors only, to `stream` (stdout by default:
    training; evaluation passes stderr so that its tables alone are on stdout)."""
    # A log file on a full disk must not bury the one-line error in logging's own tracebacks.
    logging.raiseExceptions = False
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    old_factory = logging.getLogRecordFactory()

    def factory(*args, **kwargs):
        record = old_factory(*args, **kwargs)
        record.rank = rank
        return record

    logging.setLogRecordFactory(factory)
    console = logging.StreamHandler(stream or sys.stdout)
    console.setFormatter(logging.Formatter(FORMAT, "%H:%M:%S"))
    console.setLevel(logging.INFO if rank == 0 else logging.ERROR)
    root.addHandler(console)
    root.setLevel(logging.INFO)
    if log_file is not None and rank == 0:
        add_file(log_file)


def add_file(log_file: Path) -> None:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter(FORMAT))
    logging.getLogger().addHandler(handler)


def _quiet_writer_thread(previous):
    """A threading.excepthook that keeps TensorBoard's writer thread's OSError (a full disk)
    out of the log: the writer raises it again on its next call, and Scalars says so in one
    line. Every other thread's exception goes to the hook that was there."""

    def hook(args):
        if type(args.thread).__name__ == "_AsyncWriterThread" and issubclass(
            args.exc_type, OSError
        ):
            return
        previous(args)

    hook.quiets_tensorboard = True
    return hook


class Scalars:
    """TensorBoard scalars on rank 0; a no-op elsewhere or where tensorboard is missing."""

    def __init__(self, log_dir: Path | None) -> None:
        self.writer = None
        if log_dir is not None and not getattr(threading.excepthook, "quiets_tensorboard", False):
            threading.excepthook = _quiet_writer_thread(threading.excepthook)
        if log_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                logging.getLogger(__name__).warning("tensorboard is not installed: no scalars")
                return
            try:
                self.writer = SummaryWriter(str(log_dir))
            except (OSError, RuntimeError) as err:
                self._give_up(err)

    def add(self, values: dict[str, float], step: int) -> None:
        if self.writer is not None:
            try:
                for key, value in values.items():
                    self.writer.add_scalar(key, value, step)
            except (OSError, RuntimeError) as err:
                self._give_up(err)

    def close(self) -> None:
        if self.writer is not None:
            try:
                self.writer.close()
            except (OSError, RuntimeError) as err:
                self._give_up(err)

    def _give_up(self, err: BaseException) -> None:
        # Scalars are a convenience: a full disk or a lost mount must not end a run here (the
        # checkpoint writer reports a full disk, in one line, when it matters).
        logging.getLogger(__name__).warning(
            "tensorboard: cannot write scalars any more (%s); training goes on without them", err
        )
        self.writer = None


def progress_bar(total: int, initial: int, enabled: bool):
    """A tqdm bar of optimizer steps on stderr (sparse when stderr is a file), or None when it
    is disabled or tqdm is not installed."""
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(
        total=total,
        initial=initial,
        unit="step",
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=1.0 if sys.stderr.isatty() else 30.0,
    )
