"""One `lfads` at a time per --lfads_save_dir: an exclusive flock on the folder itself.

Two processes on one output folder (a step script run by hand next to the queue, two users, two
queues) would append to the same fitlog.csv and write the same checkpoint names, each replacing the
other's. The lock is taken on a descriptor of the folder (no lock file in the tree), without
waiting, and is released by the kernel when the process ends however it ends: nothing stale is left.
The descriptor is close-on-exec, so a program LFADS (or TensorFlow) starts never carries the lock on.

It is independent of the queue's run lock (an OFD lock on `.runqueue/lock`, another file), so a step
the queue runs takes it as any other `lfads` does. Where the file system cannot lock a folder (NFS
maps flock onto byte-range locks, which a read-only descriptor cannot hold: EBADF, or ENOLCK without
a lock daemon) LFADS goes on without it, as the original did, rather than refuse to run.
`lfads-manager delete-output` takes the same lock while it deletes (manager/cleanup.py).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from lfads.errors import LfadsError


@contextlib.contextmanager
def hold_output_folder(save_dir: Path) -> Iterator[bool]:
    """Hold the folder's lock while the block runs; yields whether it is held (False: cannot lock here).

    LfadsError, naming the folder, when another process holds it."""
    try:
        fd = os.open(save_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        raise LfadsError(f"{save_dir}: cannot open the output folder ({err.strerror}); check --lfads_save_dir") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held = True
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                held = False  # NFS and the like: no folder locks there
            else:
                holder = _holder(fd)
                by = f" (pid {holder})" if holder else ""
                raise LfadsError(
                    f"{save_dir}: another process{by} is using this output folder (a second lfads on the same"
                    " --lfads_save_dir, or lfads-manager delete-output); wait for it to end or stop it,"
                    " or give this one another --lfads_save_dir") from None
        yield held
    finally:
        os.close(fd)  # closing releases the lock


def _holder(fd: int) -> int | None:
    """The pid /proc/locks gives for the flock on this folder (best effort: None if not found)."""
    info = os.fstat(fd)
    device = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    try:
        with open("/proc/locks") as locks:
            for line in locks:
                fields = line.split()
                # "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF" ("->" marks a waiter: none here)
                if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == device and fields[4].isdigit():
                    pid = int(fields[4])
                    return pid if pid > 0 else None
    except OSError:
        pass
    return None
