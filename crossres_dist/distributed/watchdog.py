"""A heartbeat watchdog: a frozen rank ends the job in seconds, not after the collective timeout.

Every rank runs a thread that publishes a heartbeat (a counter) to the rendezvous store every
``interval`` seconds and reads everyone else's. A rank whose counter has not moved for
``timeout_s`` seconds is frozen (SIGSTOP, a hung node, a process stuck holding the GIL), and a
store that does not answer for that long means rank 0 (its host) is. The watcher then logs which
rank, host and pid, and ends its own process with EXIT_HUNG: torchrun (``--max-restarts``) or
srun (``--kill-on-bad-exit``) then tears the job down and the launcher restarts it from its last
checkpoint. Without it, the others would wait in the next collective for ``dist.timeout_s``.

This watches liveness, not progress: a rank that waits in a collective for a slow peer is alive
and beats. A job-wide stall of live ranks is left to ``dist.timeout_s``.
"""

from __future__ import annotations

import datetime
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable

import torch.distributed as dist

log = logging.getLogger(__name__)

EXIT_HUNG = 5


class Watchdog:
    def __init__(
        self,
        rank: int,
        world: int,
        master_addr: str,
        master_port: int,
        timeout_s: float,
        exit_process: Callable[[int], None] = os._exit,
    ) -> None:
        self.rank, self.world = rank, world
        self.timeout_s = timeout_s
        self.interval = max(0.5, min(5.0, timeout_s / 10))
        self.exit_process = exit_process
        restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        # A client connection of its own: the main thread's collectives never wait on it.
        client = dist.TCPStore(
            master_addr,
            master_port,
            is_master=False,
            timeout=datetime.timedelta(seconds=self.interval * 2),
            wait_for_workers=False,
        )
        self.store = dist.PrefixStore(f"crossres/restart{restart}/watchdog/", client)
        self.host = socket.gethostname()
        self.store.set(f"who/{rank}", f"host {self.host}, pid {os.getpid()}")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="crossres-watchdog", daemon=True)

    def start(self) -> Watchdog:
        self._thread.start()
        log.info(
            "watchdog: a rank without a heartbeat for %.0f s ends the job (dist.watchdog_s)",
            self.timeout_s,
        )
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval * 2)

    def _run(self) -> None:
        beats = 0
        now = time.monotonic()
        last_seen = {r: (None, now) for r in range(self.world) if r != self.rank}
        store_ok = now
        while not self._stop.wait(self.interval):
            now = time.monotonic()
            beats += 1
            try:
                self.store.set(f"beat/{self.rank}", str(beats))
                for r, (value, _) in list(last_seen.items()):
                    current = self._read(f"beat/{r}")
                    if current != value:
                        last_seen[r] = (current, now)
                silent = [r for r, (_, since) in last_seen.items() if now - since > self.timeout_s]
                if silent:
                    since = min(last_seen[r][1] for r in silent)
                    self._fire(self.describe(silent), now - since, silent)
                    return
                store_ok = now
            except Exception:  # the store does not answer: its host (rank 0) may be frozen
                if now - store_ok > self.timeout_s:
                    self._fire(
                        "rank 0 (it serves the rendezvous store, which does not answer)",
                        now - store_ok,
                    )
                    return

    def describe(self, ranks: list[int]) -> str:
        """'ranks 2, 3 (host node2)': the silent ranks grouped by the host they ran on."""
        by_host: dict[str, list[tuple[int, str]]] = {}
        for r in ranks:
            who = self._read(f"who/{r}") or "host unknown, pid unknown"
            host, _, pid = who.removeprefix("host ").partition(", pid ")
            by_host.setdefault(host, []).append((r, pid))
        parts = []
        for host, found in by_host.items():
            many = "s" if len(found) > 1 else ""
            rs, pids = (", ".join(x) for x in zip(*((str(r), p) for r, p in found)))
            parts.append(f"rank{many} {rs} (host {host}, pid{many} {pids})")
        return "; ".join(parts)

    def silent_ranks(self, wait_s: float) -> list[int]:
        """The ranks whose heartbeat does not move for `wait_s` (after a collective failed:
        which peers are gone). The watcher thread is stopped first: one reader of the store."""
        self.stop()
        first = {r: self._read(f"beat/{r}") for r in range(self.world) if r != self.rank}
        deadline = time.monotonic() + wait_s
        moved: set[int] = set()
        while time.monotonic() < deadline and len(moved) < len(first):
            time.sleep(self.interval)
            moved |= {r for r, v in first.items() if self._read(f"beat/{r}") != v}
        return [r for r in first if r not in moved]

    def _read(self, key: str) -> str | None:
        if not self.store.check([key]):
            return None
        return self.store.get(key).decode()

    def _fire(self, who: str, silent_s: float, ranks: list[int] = ()) -> None:
        log.error(
            "watchdog: %s %s had no heartbeat for %.0f s (frozen, or the node is lost); ending "
            "this rank so that the launcher restarts the job from its last checkpoint",
            who,
            "have" if len(ranks) > 1 else "has",
            silent_s,
        )
        # A frozen process on this host is killed too: a stopped process ignores the launcher's
        # SIGTERM, and torchrun would wait out its grace period (30 s) before the restart.
        for r in ranks:
            record = self._read(f"who/{r}") or ""
            if not record.startswith(f"host {self.host}, pid "):
                continue
            pid = int(record.rsplit(" ", 1)[1])
            try:
                os.kill(pid, signal.SIGKILL)
                log.error("watchdog: killed the frozen process %d on this host", pid)
            except (ProcessLookupError, PermissionError):
                pass
        for handler in logging.getLogger().handlers:
            handler.flush()
        self.exit_process(EXIT_HUNG)


def start_for_run(info, world: int, seconds: float) -> Watchdog | None:
    """The run's watchdog (dist.watchdog_s), started; None on one rank or when it is off."""
    if world <= 1 or seconds <= 0:
        return None
    return Watchdog(info.rank, world, info.master_addr, info.master_port, seconds).start()


def is_peer_loss(err: RuntimeError) -> bool:
    """A collective that failed because a peer is gone: torch's DistError, or the plain
    RuntimeError that gloo and NCCL raise from their transport."""
    if isinstance(err, dist.DistError):
        return True
    text = str(err)
    return any(
        marker in text
        for marker in ("Connection closed by peer", "Connection reset by peer", "gloo", "NCCL")
    )


def report_lost_peers(err: RuntimeError, watchdog: Watchdog | None, code: int) -> bool:
    """One line for a collective that failed because peers are gone: which ranks and hosts (the
    ones whose heartbeat stopped), and what happens next. No traceback: the error is the peer's
    absence, not a bug of this rank. False (nothing said) for any other error."""
    if not (dist.is_initialized() and dist.get_world_size() > 1 and is_peer_loss(err)):
        return False
    reason = str(err).strip().splitlines()[0][-160:]
    # A live peer beats every interval: two and a half of them tell the gone from the slow,
    # in seconds, whatever dist.watchdog_s is.
    wait_s = min(watchdog.timeout_s, 2.5 * watchdog.interval) if watchdog is not None else 0
    gone = watchdog.silent_ranks(wait_s) if watchdog is not None else []
    who = watchdog.describe(gone) if gone else "a peer (no watchdog to say which: dist.watchdog_s)"
    log.error(
        "lost %s: a collective failed (%s); this rank ends (exit %d), and a relaunch or SLURM's "
        "requeue resumes from the newest complete checkpoint",
        who,
        reason,
        code,
    )
    return True
