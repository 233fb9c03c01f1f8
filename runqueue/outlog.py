"""lfads.out is shared by a run's steps and the queue: the queue's own lines start on a line of their own,
also after a step that stopped mid-line (a progress bar, a kill)."""

from __future__ import annotations

import os
from pathlib import Path


def ends_mid_line(fd: int) -> bool:
    """Whether the file open on `fd` (readable) ends in something other than a newline."""
    try:
        size = os.fstat(fd).st_size
        return size > 0 and os.pread(fd, 1, size - 1) != b"\n"
    except OSError:  # not readable: assume a clean end
        return False


def append_queue_line(path: Path, line: str) -> None:
    """Append one line of the queue's (ending in a newline) to `path`; OSError when that fails."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except PermissionError:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    try:
        data = (("\n" if ends_mid_line(fd) else "") + line).encode("utf-8", "replace")
        while data:
            data = data[os.write(fd, data) :]
    finally:
        os.close(fd)
