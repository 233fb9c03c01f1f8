"""What the devices layer needs to know about a pid: is it the same process, which session.

Linux /proc based. Tolerates pids that vanish between two calls, and pids of other users.
"""

from __future__ import annotations

import os
from pathlib import Path

_BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")


def process_start_ticks(pid: int) -> int | None:
    """Start time of a live process in clock ticks since boot, or None if it is gone.

    Together with the pid this identifies a process across pid reuse. Zombies count as gone:
    they hold no GPU memory and their pid is about to be reused.
    """
    if pid <= 0:
        return None
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    rest = raw[raw.rfind(b")") + 2 :].split()
    if len(rest) < 20 or rest[0] in (b"Z", b"X"):
        return None
    return int(rest[19])  # field 22 of proc(5) is the 20th after the command name


def session_id(pid: int) -> int | None:
    """Session id of `pid`, or None when the pid does not exist in this PID namespace."""
    if pid <= 0:
        return None
    try:
        return os.getsid(pid)
    except OSError:
        return None


def boot_id() -> str:
    """This boot's id: a claim written before a reboot is stale whatever its pid says."""
    try:
        return _BOOT_ID_PATH.read_text().strip()
    except OSError:
        return ""
