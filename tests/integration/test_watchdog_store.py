"""The heartbeat watchdog and the lost-peer line never wait on a store that cannot answer
(crossres_dist/distributed/watchdog.py): a real TCPStore server in a process of its own, frozen
with SIGSTOP (torch's check() and get() then block in recv whatever the client's timeout) or
killed, and the watchers' decisions checked against their bounds."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from crossres_dist.distributed import watchdog as wd
from tests.conftest import child_env, free_port

SERVER = (
    "import sys, time, torch.distributed as dist\n"
    "store = dist.TCPStore('127.0.0.1', int(sys.argv[1]), is_master=True, wait_for_workers=False)\n"
    "print('up', flush=True)\n"
    "time.sleep(300)\n"
)
TIMEOUT_S = 3.0
pytestmark = [pytest.mark.launch, pytest.mark.timed]


@pytest.fixture
def store_server():
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(port)], stdout=subprocess.PIPE, env=child_env()
    )
    assert server.stdout.readline().strip() == b"up"
    yield server, port
    server.send_signal(signal.SIGCONT)
    server.kill()
    server.wait(timeout=30)


class Fired:
    def __init__(self) -> None:
        self.event, self.code, self.at = threading.Event(), None, None

    def __call__(self, code: int) -> None:
        self.code, self.at = code, time.monotonic()
        self.event.set()


def two_ranks(port: int):
    fired = [Fired(), Fired()]
    dogs = [wd.Watchdog(r, 2, "127.0.0.1", port, TIMEOUT_S, fired[r]) for r in (0, 1)]
    for dog in dogs:
        dog.start()
    time.sleep(3 * dogs[0].interval)  # both beat, and each has read who the other is
    return dogs, fired


def test_a_frozen_store_ends_every_watcher_within_its_bound(store_server, caplog):
    server, port = store_server
    dogs, fired = two_ranks(port)
    assert not any(f.event.is_set() for f in fired)
    caplog.set_level(logging.ERROR)
    frozen_at = time.monotonic()
    server.send_signal(signal.SIGSTOP)
    # The bound: dist.watchdog_s, plus a beat's interval and a store call's deadline.
    bound = TIMEOUT_S + dogs[0].interval + dogs[0].deadline_s
    for f in fired:
        assert f.event.wait(bound + 5), "a watcher waited on the frozen store"
        assert f.code == wd.EXIT_HUNG and f.at - frozen_at <= bound + 1.0
    assert "it serves the rendezvous store, which does not answer" in caplog.text
    assert "host " in caplog.text and "host unknown" not in caplog.text


def test_the_lost_peer_line_returns_when_the_store_is_frozen_or_killed(
    store_server, caplog, monkeypatch
):
    server, port = store_server
    dogs, _ = two_ranks(port)
    monkeypatch.setattr(wd.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(wd.dist, "get_world_size", lambda: 2)
    address = "[10.11.12.13]:45678"
    err = RuntimeError(
        "[../third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:81] Timed out waiting "
        + "x" * 300
        + f" for recv operation to complete: Connection closed by peer {address}"
    )
    caplog.set_level(logging.ERROR)
    server.send_signal(signal.SIGSTOP)
    started = time.monotonic()
    assert wd.report_lost_peers(err, dogs[1], 6)
    took = time.monotonic() - started
    assert took <= 2.5 * dogs[1].interval + 3 * dogs[1].deadline_s + 1.0
    line = [r.getMessage() for r in caplog.records if r.getMessage().startswith("lost ")][-1]
    assert "rank 0 (host" in line and "rendezvous store" in line
    assert address in line and "gloo" in line and " ... " in line  # cut from the middle
    server.send_signal(signal.SIGCONT)
    server.kill()
    server.wait(timeout=30)
    # Killed: the connection is refused or reset at once, and the line still comes, no traceback.
    caplog.clear()
    assert wd.report_lost_peers(err, dogs[0], 6)
    assert any("rank 0 (host" in r.getMessage() for r in caplog.records)


def test_bounded_gives_up_on_a_call_that_never_returns():
    never = threading.Event()
    started = time.monotonic()
    with pytest.raises(wd.StoreSilent, match="had no answer in 0.5 s"):
        wd.bounded(never.wait, 0.5)
    assert time.monotonic() - started < 2.0
    assert wd.bounded(lambda: 7, 1.0) == 7
    with pytest.raises(KeyError):
        wd.bounded(lambda: {}["x"], 1.0)


def supervisor(port: int, *cmd: str, lost_after: float = 3.0) -> subprocess.Popen:
    """`python -m crossres_dist.distributed supervise` over `cmd`, as the launcher starts it."""
    return subprocess.Popen(
        [sys.executable, "-m", "crossres_dist.distributed", "supervise", f"127.0.0.1:{port}"]
        + ["--lost-after", str(lost_after), "--interval", "0.5", "--", *cmd],
        env=child_env(TORCH_CPP_LOG_LEVEL="FATAL", CROSSRES_CALLER_CPP_LOG_LEVEL="WARNING"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_the_supervisor_ends_the_agent_and_its_children_when_the_store_goes_silent(
    store_server,
):
    """The launcher's supervisor (supervise.py) over an 'agent' with a child of its own, in a
    session of its own as torchrun starts its workers: a frozen store ends both, in one line,
    within --lost-after plus a probe's interval and deadline and the 3 s grace; the agent got
    the caller's C++ log level back."""
    server, port = store_server
    agent = (
        "import os, subprocess, sys, time\n"
        "print(os.environ.get('TORCH_CPP_LOG_LEVEL'), flush=True)\n"
        "child = subprocess.Popen(['sleep', '300'], start_new_session=True)\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(300)\n"
    )
    watched = supervisor(port, sys.executable, "-c", agent)
    assert watched.stdout.readline().strip() == "WARNING"
    grandchild = int(watched.stdout.readline())
    time.sleep(2.0)  # the store answers: nothing happens
    assert watched.poll() is None
    server.send_signal(signal.SIGSTOP)
    frozen_at = time.monotonic()
    code = watched.wait(timeout=30)
    took = time.monotonic() - frozen_at
    assert code == wd.EXIT_HUNG and took <= 3.0 + 2 * 2.0 + 3.0 + 1.0, took
    lines = watched.stderr.read().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"launch: the rendezvous store 127.0.0.1:{port} has not answered for "
    ), lines
    assert not running(grandchild)


def running(pid: int) -> bool:
    """Alive and not a zombie (killed, its parent gone, nobody has reaped it yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_the_supervisor_passes_the_agents_exit_code_and_waits_for_a_store_that_never_was():
    """Before the store has answered once (the agent on the store's host not up yet), its
    silence is torchrun's own join_timeout's to judge, not the supervisor's."""
    done = supervisor(free_port(), "sh", "-c", "sleep 2; exit 3", lost_after=0.5)
    assert done.wait(timeout=30) == 3
    assert "launch:" not in done.stderr.read()
