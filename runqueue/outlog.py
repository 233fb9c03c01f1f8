"""lfads.out is shared by a run's steps and the queue: the queue's own lines start on a line of their own,
also after a step that stopped mid-line (a progress bar, a kill)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

from runqueue.atomicio import take_folder_group


def ends_mid_line(fd: int) -> bool:
    """Whether the file open on `fd` (readable) ends in something other than a newline."""
    try:
        size = os.fstat(fd).st_size
        return size > 0 and os.pread(fd, 1, size - 1) != b"\n"
    except OSError:  # not readable: assume a clean end
        return False


class NotARegularFile(OSError):
    """lfads.out is a fifo, socket or device: writes to it could block or vanish."""


def _regular_or_refused(fd: int, path: Path) -> int:
    """`fd` made blocking again if it is a regular file; else closed, and NotARegularFile."""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotARegularFile(errno.EINVAL, "not a regular file", str(path))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_for_append(path: Path) -> int:
    """An O_APPEND descriptor on `path` (created if missing), readable where allowed (to see whether
    it ends mid-line). Anything but a regular file is refused: a fifo would take the run's log
    away (or block a writer once its buffer is full)."""
    flags = os.O_APPEND | os.O_CLOEXEC | os.O_NONBLOCK  # opening a fifo must not wait for a reader
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | flags, 0o666)
        take_folder_group(path, fd)
    except PermissionError as denied:
        try:  # a log we may append to but not read
            fd = os.open(path, os.O_WRONLY | flags)
        except FileNotFoundError:
            raise denied from None  # no log, and the folder is not ours to write: say that, not "vanished"
    return _regular_or_refused(fd, path)


def open_for_reading(path: Path, folder_fd: int | None = None) -> BinaryIO:
    """`path` opened to read, refused (NotARegularFile) unless a regular file: opening a fifo to
    read would wait for a writer, and stall the queue. With `folder_fd` (a descriptor on the run
    folder), `path.name` in that folder, wherever it has been moved to."""
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK
    fd = os.open(path, flags) if folder_fd is None else os.open(path.name, flags, dir_fd=folder_fd)
    return os.fdopen(_regular_or_refused(fd, path), "rb")


def append_queue_line(path: Path, line: str) -> None:
    """Append one line of the queue's (ending in a newline) to `path`; OSError when that fails."""
    fd = open_for_append(path)
    try:
        data = (("\n" if ends_mid_line(fd) else "") + line).encode("utf-8", "replace")
        while data:
            data = data[os.write(fd, data) :]
    finally:
        os.close(fd)
