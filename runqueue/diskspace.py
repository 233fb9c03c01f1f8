"""One rule for "the run's disk is full", shared by the supervisor, the scheduler and status."""

from __future__ import annotations

import os
from pathlib import Path

FULL_BELOW_BYTES = 1 << 20  # less free than this: nothing useful (a marker, a log line, a checkpoint) fits


def disk_is_full(path: Path) -> bool:
    """False when it cannot be told (the folder is gone, statvfs fails)."""
    try:
        info = os.statvfs(path)
    except OSError:
        return False
    return info.f_bavail * info.f_frsize < FULL_BELOW_BYTES
