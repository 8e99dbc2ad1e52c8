"""Every file in a run directory is written the same way: to a temporary name, flushed to disk,
then renamed into place. A node that loses power or a process killed half-way leaves either the
old file or the new one, never half of one; a full disk leaves neither a traceback nor a ``.tmp``
but one line that says which directory and how much was needed.

Side files that can be rebuilt (the label map, the teacher-feature cache) are read with
``read_or_none``: an unreadable one is reported and rebuilt, never fatal.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from crossres_dist.errors import CrossresError, SetupError

log = logging.getLogger(__name__)


class DiskFullError(CrossresError, OSError):
    """No space left for a run-directory file; the message says where and how much."""

    def __str__(self) -> str:
        return self.strerror


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(
    path: Path, write: Callable[[IO[bytes]], None], on_open: Callable[[IO[bytes]], None] = None
) -> None:
    """Write `path` through `write(file)` atomically. `on_open` is a fault-injection hook called
    after `write` and before the flush (see CheckpointManager)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            if on_open is not None:
                on_open(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as err:
        size = tmp.stat().st_size if tmp.exists() else 0
        tmp.unlink(missing_ok=True)
        if _out_of_space(err, path.parent):
            free = shutil.disk_usage(path.parent).free
            raise DiskFullError(
                getattr(err, "errno", None) or errno.ENOSPC,
                f"disk full: cannot write {path.name} in {path.parent} "
                f"({_size(size)} written before the disk filled, {_size(free)} free); "
                "free some space or move run.output_dir",
            ) from None
        raise


def _out_of_space(err: BaseException, folder: Path) -> bool:
    """ENOSPC or EDQUOT; or what torch.save raises when the disk fills under its zip writer (a
    RuntimeError, "unexpected pos ... vs ...", with no errno) on a disk that is now full."""
    if isinstance(err, OSError):
        return err.errno in (errno.ENOSPC, errno.EDQUOT)
    if isinstance(err, RuntimeError) and ("unexpected pos" in str(err) or "write" in str(err)):
        try:
            return shutil.disk_usage(folder).free < 1 << 20
        except OSError:
            return False
    return False


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8", "surrogateescape")))


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


def read_or_none(path: Path, read: Callable[[Path], Any], what: str) -> Any:
    """`read(path)`, or None (with a warning naming the file) if it is missing or unreadable;
    the caller rebuilds it. An unreadable file is moved aside, not deleted. Call it on the
    writing rank only (and share the result), so that ranks never race to move a file."""
    if not path.is_file():
        return None
    try:
        return read(path)
    except Exception as err:  # truncated, empty, not JSON, not a tensor file ...
        aside = path.with_name(path.name + ".unreadable")
        os.replace(path, aside)
        log.warning("%s %s is unreadable (%s): moved to %s, rebuilding it", what, path, err, aside)
        return None


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


class RunLockedError(CrossresError, RuntimeError):
    """Another live job holds the run directory; the message names it."""


def _job_id() -> str:
    for name in ("SLURM_ARRAY_JOB_ID", "SLURM_JOB_ID", "TORCHELASTIC_RUN_ID"):
        if os.environ.get(name):
            task = os.environ.get("SLURM_ARRAY_TASK_ID")
            return (
                f"{os.environ[name]}_{task}"
                if name == "SLURM_ARRAY_JOB_ID" and task
                else (os.environ[name])
            )
    return "-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """One job per run directory, held by rank 0 for the life of the job.

    ``run.lock`` is locked with ``flock``, which the kernel releases when its holder dies (even
    by SIGKILL), and records the holder (host, pid, job id, start time). Its modification time is
    a heartbeat (``beat``), for holders on another host where ``flock`` may not reach: such a
    lock is honoured while its heartbeat is younger than ``stale_s``. A second job refuses to
    start with one line that names the holder; a lock whose holder is gone is taken over, with a
    log line.
    """

    def __init__(self, run_dir: Path, stale_s: float = 120.0) -> None:
        self.path = Path(run_dir) / "run.lock"
        self.stale_s = stale_s
        self.fd: int | None = None

    def acquire(self) -> None:
        import fcntl
        import socket
        import time

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        previous = self._holder(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunLockedError(self._busy(previous)) from None
        host = socket.gethostname()
        if previous:
            age = time.time() - os.fstat(fd).st_mtime
            other_host = previous.get("host") != host
            if other_host and age < self.stale_s:
                # Its flock may not be visible from here (NFS): trust its heartbeat.
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
                raise RunLockedError(self._busy(previous, f", last heartbeat {age:.0f} s ago"))
            if not other_host and previous.get("pid") != os.getpid():
                state = "gone" if not _pid_alive(previous.get("pid", -1)) else "not holding it"
                log.warning("taking over a stale run lock: %s (%s)", _describe(previous), state)
            elif other_host:
                log.warning(
                    "taking over a stale run lock: %s (no heartbeat for %.0f s)",
                    _describe(previous),
                    age,
                )
        info = {
            "host": host,
            "pid": os.getpid(),
            "job": _job_id(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        # Rewritten in place, not renamed: the lock is this inode.
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        os.fsync(fd)
        self.fd = fd
        self._stop = threading.Event()
        beat = threading.Thread(target=self._beat_until_released, name="run-lock", daemon=True)
        beat.start()

    def _beat_until_released(self) -> None:
        while not self._stop.wait(max(1.0, self.stale_s / 4)):
            self.beat()

    def _holder(self, fd: int) -> dict | None:
        try:
            text = os.pread(fd, 4096, 0).decode()
            return json.loads(text) if text.strip() else None
        except (OSError, ValueError):
            return None

    def _busy(self, holder: dict | None, extra: str = "") -> str:
        who = _describe(holder) if holder else "another process"
        return (
            f"run directory {self.path.parent} is in use by {who}{extra}; wait for that job to "
            f"end or stop it, or choose another run.name (lock: {self.path})"
        )

    def beat(self) -> None:
        fd = self.fd
        if fd is not None:
            try:
                os.utime(fd)
            except OSError:
                pass  # released meanwhile

    def release(self) -> None:
        if self.fd is None:
            return
        import fcntl

        self._stop.set()
        # Emptied, not unlinked: a job waiting on this inode must not lock a deleted file.
        os.ftruncate(self.fd, 0)
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None


def _describe(holder: dict) -> str:
    return (
        f"job {holder.get('job', '-')} (host {holder.get('host', '?')}, pid "
        f"{holder.get('pid', '?')}, started {holder.get('started', '?')})"
    )


def preflight(run_dir: Path, needed_bytes: int) -> None:
    """Before the first step: the run directory is writable and holds two checkpoints."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise SetupError(f"run.output_dir: cannot write to {run_dir}: {err.strerror}") from None
    free = shutil.disk_usage(run_dir).free
    # Two checkpoints may coexist during a save (the new .tmp and the ones kept).
    if free < 2 * needed_bytes:
        raise SetupError(
            f"run.output_dir: {run_dir} has {free / 2**20:.0f} MiB free, a checkpoint needs "
            f"{needed_bytes / 2**20:.0f} MiB (twice that during a save); free some space"
        )


def lock_run(run_dir: Path, stale_s: float, is_main: bool, broadcast) -> RunLock | None:
    """One job per run directory: rank 0 checks the disk and locks the directory before
    anything is written in it; `broadcast` (rank 0's object to every rank) tells the others
    whether it could. Returns rank 0's lock."""
    lock, locked = None, None
    if is_main:
        preflight(run_dir, needed_bytes=0)
        try:
            lock = RunLock(run_dir, stale_s)
            lock.acquire()
        except RunLockedError as err:
            lock, locked = None, str(err)
    locked = broadcast(locked)
    if locked:
        raise SetupError(locked)
    return lock
