"""sd_notify over a real AF_UNIX datagram socket (path and abstract), and the no-op without systemd."""

from __future__ import annotations

import itertools
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from runqueue import sdnotify


@pytest.fixture
def systemd_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """What systemd listens on for a Type=notify service."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        server.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        yield server


def test_messages_arrive_as_datagrams(systemd_socket: socket.socket) -> None:
    assert sdnotify.ready("2 GPUs, 0 running")
    assert systemd_socket.recv(4096) == b"READY=1\nSTATUS=2 GPUs, 0 running"
    assert sdnotify.status("3 running,\n12 pending")
    assert systemd_socket.recv(4096) == b"STATUS=3 running, 12 pending"  # one line, always
    assert sdnotify.watchdog()
    assert systemd_socket.recv(4096) == b"WATCHDOG=1"
    assert sdnotify.stopping()
    assert systemd_socket.recv(4096) == b"STOPPING=1"


def test_abstract_socket_address(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"lfads-runqueue-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        server.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.ready()
        assert server.recv(4096) == b"READY=1"


def test_no_op_without_systemd_or_with_a_dead_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.ready() is False
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    assert sdnotify.status("x") is False  # no exception: the service keeps working


def test_watchdog_pings_are_never_more_than_half_the_interval_apart(
    systemd_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "60000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    now = [100.0]
    pinger = sdnotify.WatchdogPinger(clock=lambda: now[0])
    assert pinger.interval_s == 60.0 and pinger.wake_every_s == 15.0
    pings = []
    for turn in range(40):  # the worst case: each turn sleeps just short of the longest it may
        now[0] = 100.0 + turn * (pinger.wake_every_s - 0.001)
        if pinger.maybe_ping():
            pings.append(now[0])
            assert systemd_socket.recv(64) == b"WATCHDOG=1"  # (a datagram queue holds only ~10)
    assert max(b - a for a, b in itertools.pairwise(pings)) <= 30.0  # systemd restarts after 60 s of silence
    assert len(pings) < 40 / 1.5  # and it does not ping on every turn
    monkeypatch.setenv("WATCHDOG_PID", "1")  # meant for another process
    assert sdnotify.WatchdogPinger().maybe_ping() is False
