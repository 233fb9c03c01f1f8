"""One prepare() at a time per collection, and the temp files of a killed one removed by the next.

prepare writes every file through a temp file next to it (`.NAME.XXXXXXXX.tmp` from the atomic
writer, `.NAME.PID.HEX.link-tmp` for symlinks) and renames it into place, so a prepare killed
with -9 leaves its temp file behind, perhaps a partial copy of a large export. The next prepare
removes those, but only temp files of names prepare itself writes (never a running LFADS's or
queue's own), and all of them only while it holds the collection's lock; where the file system
cannot lock a folder, only those older than an hour, which no live prepare is still writing.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from manager.errors import ManagerError, disk_fix

_TEMP = re.compile(r"^\.(?P<name>.+)\.(?:[A-Za-z0-9_]{8}\.tmp|\d+\.[0-9a-f]{8}\.link-tmp)$")
_UNLOCKED_MIN_AGE_S = 3600.0


@contextlib.contextmanager
def collection_lock(folder: Path) -> Iterator[bool]:
    """flock on the collection folder itself (no extra file in the tree); yields whether it is held.

    ManagerError when another prepare holds it; False where the file system cannot lock folders.
    A first prepare makes the folder to lock it, and removes what it made if it fails while holding
    the lock: a prepare that lost the race for it found the folder missing too, but it is the
    winner's."""
    made = []
    ancestor = folder
    while not ancestor.exists():
        made.append(ancestor)
        ancestor = ancestor.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ManagerError(folder, f"cannot create the collection folder ({error.strerror})",
                           disk_fix(error, "choose a root you can write to")) from None
    with _flocked(folder) as held:
        try:
            yield held
        except BaseException:
            if held:
                _remove_empty(made)
            raise


def _remove_empty(folders: list[Path]) -> None:
    for path in folders:  # deepest first; only while still empty: nothing half-written stays
        try:
            path.rmdir()
        except OSError:
            break


@contextlib.contextmanager
def _flocked(folder: Path) -> Iterator[bool]:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held = True
        except OSError as error:
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise ManagerError(folder, "another `lfads-manager prepare` is writing this collection",
                                   "wait until it has finished, then prepare again") from None
            held = False  # e.g. NFS, where flock on a folder is not supported
        yield held
    finally:
        os.close(fd)  # closing releases the lock


def remove_temp_files(folders: Iterable[tuple[Path, Callable[[str], bool]]], locked: bool) -> list[Path]:
    """Remove the temp files in each folder whose final name `ours(name)` says prepare writes."""
    removed = []
    oldest = time.time() - _UNLOCKED_MIN_AGE_S
    for folder, ours in folders:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue  # not there (yet): nothing left in it
        for entry in entries:
            match = _TEMP.match(entry.name)
            if match is None or not ours(match.group("name")):
                continue
            try:
                if not locked and entry.stat(follow_symlinks=False).st_mtime > oldest:
                    continue
                os.unlink(entry.path)
            except OSError:
                continue
            removed.append(Path(entry.path))
    return removed
