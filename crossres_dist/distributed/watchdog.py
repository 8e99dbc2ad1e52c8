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

No liveness decision waits on a call that can block for ever. torch's ``TCPStore.check`` and
``get`` block in ``recv`` and ignore the client's timeout when the server's host is frozen or cut
off (torch 2.14), so every store call here runs in a daemon thread of its own and is given up
after a deadline (``bounded``): a call that has not answered by then means the store, and so rank
0's host, is gone or out of reach; the stuck thread is left behind and dies with the process.
A thread rather than a socket of our own with ``SO_RCVTIMEO``: the store's wire protocol is
torch's private business, and a thread bounds any call, whatever the version does inside it.
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
from functools import partial
from pathlib import Path

import torch.distributed as dist

from crossres_dist.distributed import bootstrap

log = logging.getLogger(__name__)

EXIT_HUNG = 5


class StoreSilent(RuntimeError):
    """The rendezvous store did not answer within the deadline (its host is frozen or lost)."""


def bounded(call: Callable, seconds: float, what: str = "a store call"):
    """`call()`'s result, or StoreSilent when it has not returned within `seconds`; its own
    exception as it is. The call runs in a daemon thread: a call that never returns is
    abandoned, never waited on."""
    box: dict = {}
    done = threading.Event()

    def run() -> None:
        try:
            box["value"] = call()
        except BaseException as err:  # handed to the caller
            box["error"] = err
        done.set()

    threading.Thread(target=run, name="crossres-store-call", daemon=True).start()
    if not done.wait(seconds):
        raise StoreSilent(f"{what} had no answer in {seconds:.1f} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def mark_lost(line: str) -> None:
    """Tell a launcher script (slurm/train.sh) that this rank ended because another was lost, in
    $CROSSRES_LOST_FILE: srun's exit code is the highest of its tasks' (the ranks it killed
    afterwards), not the one that says why. The script then requeues the job."""
    marker = os.environ.get("CROSSRES_LOST_FILE")
    if marker:
        try:
            Path(marker).parent.mkdir(parents=True, exist_ok=True)
            Path(marker).write_text(line + "\n")
        except OSError as err:  # the line itself is already in the log
            log.error("could not write %s: %s", marker, err)


def cut_middle(text: str, keep: int = 200) -> str:
    """`text` shortened from the middle: gloo names the peer's address at the end and the
    operation at the start, and both are worth a line."""
    if len(text) <= keep:
        return text
    half = (keep - 5) // 2
    return f"{text[:half]} ... {text[-half:]}"


class Watchdog:
    def __init__(
        self,
        rank: int,
        world: int,
        master_addr: str,
        master_port: int,
        timeout_s: float,
        exit_process: Callable[[int], None] = os._exit,
        hosts: list[str] | None = None,
    ) -> None:
        self.rank, self.world = rank, world
        self.timeout_s = timeout_s
        self.interval = max(0.5, min(5.0, timeout_s / 10))
        self.exit_process = exit_process
        # A client connection of its own: the main thread's collectives never wait on it.
        client = dist.TCPStore(
            master_addr,
            master_port,
            is_master=False,
            timeout=datetime.timedelta(seconds=self.interval * 2),
            wait_for_workers=False,
        )
        self.store = dist.PrefixStore(f"{bootstrap.store_prefix()}watchdog/", client)
        self.host = socket.gethostname()
        # Every store call's deadline: a live store answers in milliseconds.
        self.deadline_s = max(2.0, self.interval * 2)
        # Who each rank is (its host from the group's first meeting until its record is read):
        # named even when the store is gone.
        self.hosts = list(hosts or [])
        self.who: dict[int, str] = {}  # rank -> "host H, pid P", as each rank recorded it
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
                current = bounded(partial(self._beat, beats, list(last_seen)), self.deadline_s)
                for r, value in current.items():
                    if value != last_seen[r][0]:
                        last_seen[r] = (value, now)
                silent = [r for r, (_, since) in last_seen.items() if now - since > self.timeout_s]
                if silent:
                    since = min(last_seen[r][1] for r in silent)
                    self._fire(self.describe(silent), now - since, silent)
                    return
                store_ok = now
            except Exception:  # no answer, or a refused connection: its host may be gone
                if time.monotonic() - store_ok > self.timeout_s:
                    self._fire(self.store_lost(), time.monotonic() - store_ok)
                    return

    def _beat(self, beats: int, peers) -> dict[int, str | None]:
        """Publish this rank's beat and read the others' (one bounded call), and learn who
        the ranks not yet known are."""
        self.store.set(f"beat/{self.rank}", str(beats))
        for r in [r for r in range(self.world) if r not in self.who]:
            record = self._read(f"who/{r}")
            if record is not None:
                self.who[r] = record
        return {r: self._read(f"beat/{r}") for r in peers}

    def store_lost(self) -> str:
        host = self.host_pid(0)[0]
        return (
            f"rank 0 (host {host}: it serves the rendezvous store, which does not answer; or "
            f"this host, {self.host}, is cut off from it)"
        )

    def host_pid(self, rank: int) -> tuple[str, str]:
        """A rank's host and pid from its own record; its host from the group's first meeting
        when the record was never read."""
        if rank in self.who:
            host, _, pid = self.who[rank].removeprefix("host ").partition(", pid ")
            return host, pid
        return (self.hosts[rank] if rank < len(self.hosts) else "unknown"), "unknown"

    def describe(self, ranks: list[int]) -> str:
        """'ranks 2, 3 (host node2)': the silent ranks grouped by the host they ran on."""
        by_host: dict[str, list[tuple[int, str]]] = {}
        for r in ranks:
            host, pid = self.host_pid(r)
            by_host.setdefault(host, []).append((r, pid))
        parts = []
        for host, found in by_host.items():
            many = "s" if len(found) > 1 else ""
            rs, pids = (", ".join(x) for x in zip(*((str(r), p) for r, p in found)))
            parts.append(f"rank{many} {rs} (host {host}, pid{many} {pids})")
        return "; ".join(parts)

    def silent_ranks(self, wait_s: float) -> list[int] | None:
        """The ranks whose heartbeat does not move for `wait_s` (after a collective failed:
        which peers are gone); None when the store itself does not answer (rank 0's host is
        gone, or this one is cut off). The watcher thread is stopped first: one reader of the
        store. Returns within about `wait_s` plus two store deadlines, whatever the store does."""
        self.stop()
        peers = [r for r in range(self.world) if r != self.rank]
        try:
            first = bounded(lambda: {r: self._read(f"beat/{r}") for r in peers}, self.deadline_s)
            deadline = time.monotonic() + wait_s
            moved: set[int] = set()
            while time.monotonic() < deadline and len(moved) < len(first):
                time.sleep(self.interval)
                now = bounded(lambda: {r: self._read(f"beat/{r}") for r in peers}, self.deadline_s)
                moved |= {r for r, v in first.items() if now[r] != v}
        except Exception:  # no answer, or the connection refused: the store's host is gone
            return None
        return [r for r in first if r not in moved]

    def _read(self, key: str) -> str | None:
        if not self.store.check([key]):
            return None
        return self.store.get(key).decode()

    def _fire(self, who: str, silent_s: float, ranks: list[int] = ()) -> None:
        line = (
            f"watchdog: {who} {'have' if len(ranks) > 1 else 'has'} had no heartbeat for "
            f"{silent_s:.0f} s (frozen, or the node is lost); ending this rank so that the "
            "launcher restarts the job from its last checkpoint"
        )
        log.error("%s", line)
        mark_lost(line)
        # A frozen process on this host is killed too: a stopped process ignores the launcher's
        # SIGTERM, and torchrun would wait out its grace period (30 s) before the restart.
        for r in ranks:
            host, pid = self.host_pid(r)
            if host != self.host or not pid.isdigit():
                continue
            pid = int(pid)
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
    hosts = bootstrap.RANK_HOSTS
    return Watchdog(
        info.rank, world, info.master_addr, info.master_port, seconds, hosts=hosts
    ).start()


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
    reason = cut_middle(str(err).strip().splitlines()[0])
    who = "a peer (no watchdog to say which: dist.watchdog_s)"
    if watchdog is not None:
        # A live peer beats every interval: two and a half of them tell the gone from the slow,
        # in seconds, whatever dist.watchdog_s is.
        gone = watchdog.silent_ranks(min(watchdog.timeout_s, 2.5 * watchdog.interval))
        who = watchdog.store_lost() if gone is None else watchdog.describe(gone) or who
    line = (
        f"lost {who}: a collective failed ({reason}); this rank ends (exit {code}), and a "
        "relaunch or SLURM's requeue resumes from the newest complete checkpoint"
    )
    log.error("%s", line)
    mark_lost(line)
    return True
