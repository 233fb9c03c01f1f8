"""A tiny client for systemd's notification socket ($NOTIFY_SOCKET): READY, STATUS, WATCHDOG, STOPPING,
RELOADING.

No-op (returns False) when not started by systemd with Type=notify, so `runqueue serve` calls it
unconditionally. One datagram per message; never raises for a missing or closed socket.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"


def _address(raw: str) -> str | None:
    if raw.startswith("@"):
        return "\0" + raw[1:]  # Linux abstract namespace
    if raw.startswith("/"):
        return raw
    return None  # e.g. "vsock:…" (VMs): not used for a host daemon


def notify(*assignments: str) -> bool:
    """Send `KEY=value` lines in one datagram; True when systemd's socket took it."""
    raw = os.environ.get(NOTIFY_SOCKET_ENV)
    address = _address(raw) if raw else None
    if address is None or not assignments:
        return False
    payload = "\n".join(line.replace("\n", " ") for line in assignments).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(payload)
    except OSError:
        return False
    return True


def ready(status: str | None = None) -> bool:
    """Startup done (config read, inventory probed, running runs re-adopted)."""
    return notify("READY=1", *([f"STATUS={status}"] if status else []))


def status(text: str) -> bool:
    """The one line `systemctl status` shows, e.g. "3 running, 12 pending, 2 GPUs"."""
    return notify(f"STATUS={text}")


def watchdog() -> bool:
    return notify("WATCHDOG=1")


def stopping(status: str | None = None) -> bool:
    return notify("STOPPING=1", *([f"STATUS={status}"] if status else []))


def reloading(status: str | None = None) -> bool:
    """A reload has begun; the READY=1 of the queue started again in place ends it. MONOTONIC_USEC
    is what Type=notify-reload (systemd 253+) also asks for; older systemd ignores it."""
    now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify("RELOADING=1", f"MONOTONIC_USEC={now_usec}", *([f"STATUS={status}"] if status else []))


def watchdog_interval_s() -> float | None:
    """WatchdogSec= of the unit, in seconds, when it is meant for this process; else None."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        seconds = int(usec) / 1_000_000
    except ValueError:
        return None
    return seconds if seconds > 0 else None


class WatchdogPinger:
    """Call `maybe_ping()` from every turn of the scheduling loop (not from a side thread, so that a
    hung loop really gets restarted), and let the loop sleep at most `wake_every_s`: it sends
    WATCHDOG=1 at most every quarter interval, so two pings are never more than half an interval
    apart (a turn just short of the quarter skips its ping; the next comes a quarter later at most)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = watchdog_interval_s()
        self._clock = clock
        self._last = -float("inf")

    @property
    def wake_every_s(self) -> float | None:
        return None if self.interval_s is None else self.interval_s / 4

    def maybe_ping(self) -> bool:
        if self.interval_s is None:
            return False
        now = self._clock()
        if now - self._last < self.interval_s / 4:
            return False
        self._last = now
        return watchdog()
