"""Where a run went whose folder left its path while it ran.

The queue holds an O_PATH descriptor on each running run's folder. When the path is gone at the
run's end, that descriptor still names the folder: moved, its supervisor followed it and wrote
its markers there; deleted, nothing is left in it. So the summary can say which, and count a
moved run that finished as no failure, without asking the (not child) supervisor for its exit status.
"""

from __future__ import annotations

import contextlib
import enum
import os
from pathlib import Path

from runqueue.layout import DONE_MARKER, FAILED_MARKER


class Fate(enum.Enum):
    # How the queue says it, after the run folder's old path.
    FINISHED_ELSEWHERE = "was moved while running; it finished where it went"
    FAILED_ELSEWHERE = "was moved while running; it failed where it went (see its lfads.failed there)"
    ENDED_ELSEWHERE = "was moved while running; it ended there without lfads.done (see its lfads.out there)"
    DELETED = "vanished while running (deleted)"
    UNKNOWN = "is gone (deleted, or moved: a moved run finishes where it went, see its lfads.out there)"

    @property
    def lost(self) -> bool:
        """Its work did not end in lfads.done: a failure, as far as this queue's exit status goes."""
        return self is not Fate.FINISHED_ELSEWHERE


def hold_folder(path: Path) -> int | None:
    """A descriptor on the folder itself (not its name); None where it cannot be opened."""
    try:
        return os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None


def release_folder(fd: int | None) -> None:
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


def fate_of(fd: int | None) -> Fate:
    """What became of the folder `fd` holds, its path being gone."""
    if fd is None:
        return Fate.UNKNOWN
    try:
        if _exists(fd, DONE_MARKER):
            return Fate.FINISHED_ELSEWHERE
        if _exists(fd, FAILED_MARKER):
            return Fate.FAILED_ELSEWHERE
        # A removed folder has no links left (rm -rf empties it first, so no marker either).
        return Fate.DELETED if os.fstat(fd).st_nlink == 0 else Fate.ENDED_ELSEWHERE
    except OSError:
        return Fate.UNKNOWN


def _exists(fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True
