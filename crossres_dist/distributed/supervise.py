"""A deadline on torchrun's agent: ``launch/multinode_torchrun.sh`` runs torchrun under this.

The workers' watchdog ends a rank within ``dist.watchdog_s`` of a loss (watchdog.py), but the
agent that launched it lives on. Its rendezvous state is in the store that one node's agent
serves, and torch's store client waits in ``recv`` whatever its timeout when that host is cut
off or frozen (torch 2.14): an agent on a host that can no longer reach the store then never
ends, and the job's processes are left running. So the supervisor asks the store a question
every ``interval`` seconds, in a thread with a deadline (watchdog.bounded), and once the store
has answered at least once, a store silent for ``lost_after`` seconds ends the agent and every
process under it, with one line. A node that merely waits for a lost peer is left to the agent:
its store answers, and torchrun's ``join_timeout`` (which the launcher sets) bounds the wait.

It also forwards SIGTERM and SIGINT to the agent (scancel, ^C), and exits with the agent's code.
"""

from __future__ import annotations

import argparse
import datetime
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch.distributed as dist

from crossres_dist.distributed.watchdog import EXIT_HUNG, bounded

# A key nobody writes: `check` on it is the cheapest question the store answers.
PROBE_KEY = "crossres/supervisor/probe"


# The probe's own failures are the finding, said once: torch's store client would log each failed
# connect with a C++ stack. Its log level is read when torch loads, before this module runs, so
# the launcher starts the supervisor with TORCH_CPP_LOG_LEVEL=FATAL and the caller's own level in
# this variable, which the agent and its workers get back.
CALLER_LOG_LEVEL = "CROSSRES_CALLER_CPP_LOG_LEVEL"


def agent_env(env) -> dict[str, str]:
    """The environment the agent runs in: the caller's, with its C++ log level back."""
    env = dict(env)
    if CALLER_LOG_LEVEL in env:
        level = env.pop(CALLER_LOG_LEVEL)
        if level:
            env["TORCH_CPP_LOG_LEVEL"] = level
        else:
            env.pop("TORCH_CPP_LOG_LEVEL", None)
    return env


def descendants(pid: int) -> list[int]:
    """Every live process under `pid` (torchrun starts its workers in sessions of their own, so
    a process group would miss them): read from /proc, children before grandchildren."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # The field after the command (which may hold spaces) in parentheses.
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # ended while being read
        parents.setdefault(ppid, []).append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        for child in parents.get(queue.pop(0), []):
            found.append(child)
            queue.append(child)
    return found


def end_tree(proc: subprocess.Popen, grace_s: float = 3.0) -> None:
    """SIGTERM to the agent and everything under it, SIGKILL to what is left after `grace_s`
    (a stopped process is killed too: SIGKILL needs no SIGCONT)."""
    tree = [proc.pid, *descendants(proc.pid)]
    for pid in tree:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    for pid in [*tree, *descendants(proc.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


class StoreProbe:
    """One client of the rendezvous store, asked `check` with a deadline; remade after an
    error (the agent that serves it may have restarted it)."""

    def __init__(self, host: str, port: int, deadline_s: float) -> None:
        self.host, self.port, self.deadline_s = host, port, deadline_s
        self.client = None

    def _ask(self) -> None:
        if self.client is None:
            self.client = dist.TCPStore(
                self.host,
                self.port,
                is_master=False,
                timeout=datetime.timedelta(seconds=self.deadline_s),
                wait_for_workers=False,
            )
        self.client.check([PROBE_KEY])

    def answers(self) -> bool:
        try:
            bounded(self._ask, self.deadline_s, "the rendezvous store")
            return True
        except Exception:  # silent, refused or reset: the next probe starts a new client
            self.client = None
            return False


def supervise(cmd: list[str], host: str, port: int, lost_after: float, interval: float) -> int:
    """Run `cmd` (torchrun); its exit code, or EXIT_HUNG when the store at host:port went
    silent for `lost_after` seconds after it had answered."""
    proc = subprocess.Popen(cmd, env=agent_env(os.environ))

    def forward(signum, _frame) -> None:
        if proc.poll() is None:
            proc.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    probe = StoreProbe(host, port, deadline_s=max(2.0, interval))
    answered_at = None  # judged only once the store has been up
    while proc.poll() is None:
        time.sleep(interval)
        if probe.answers():
            answered_at = time.monotonic()
        elif answered_at is not None and time.monotonic() - answered_at > lost_after:
            if proc.poll() is not None:
                break
            silent = time.monotonic() - answered_at
            print(
                f"launch: the rendezvous store {host}:{port} has not answered for {silent:.0f} s "
                f"(its host is lost, or this host, {socket.gethostname()}, is cut off from it); "
                f"ending this host's agent and workers (exit {EXIT_HUNG})",
                file=sys.stderr,
                flush=True,
            )
            end_tree(proc)
            return EXIT_HUNG
    code = proc.returncode
    return 128 - code if code < 0 else code  # killed by a signal: the shell's convention


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m crossres_dist.distributed supervise",
        description="Run torchrun's agent with a deadline on its rendezvous store.",
        usage="%(prog)s HOST:PORT [--lost-after S] [--interval S] -- torchrun ...",
    )
    parser.add_argument("endpoint", help="HOST:PORT of the rendezvous store")
    parser.add_argument(
        "--lost-after",
        type=float,
        default=60.0,
        help="seconds of silence from a store that had answered before the agent is ended",
    )
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between probes")
    # Everything after `--` is the agent's command line, never this parser's.
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    cmd = argv[split + 1 :]
    host, _, port = args.endpoint.rpartition(":")
    if not cmd or not host or not port.isdigit():
        parser.error("needs HOST:PORT and a command after --")
    if args.lost_after <= 0 or args.interval <= 0:
        parser.error("--lost-after and --interval must be positive")
    return supervise(cmd, host, int(port), args.lost_after, args.interval)
