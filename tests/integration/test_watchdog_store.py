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
pytestmark = pytest.mark.launch


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
