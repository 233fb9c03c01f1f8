"""inotify as a latency hint for discovery: which listed folders may have changed since.

The queue polls run trees (that is the truth, and the only thing that sees changes made on another
NFS client). This module lets it also react at once to changes made on this machine: a deleted
`lfads.done` (requeue), a new run folder, a new `lfads_train.sh`. A folder is *clean* while it is
watched and no event that could change its listing arrived since it was last listed; a scan that
the hint triggers re-lists only the folders that are not clean.

Only names that change a listing count (folders, symlinks, `lfads_train.sh`, the done and failed markers), so
a run's log writes, locks and state files do not wake the queue. Linux only, through libc with
ctypes; anywhere it cannot work (another OS, no inotify, the watch limit reached) the affected
folders are simply never clean, and polling does all the work.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import sys

from runqueue.layout import DONE_MARKER, FAILED_MARKER, REQUEUE_NUDGE, TRAIN_SCRIPT

IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

# No IN_MODIFY: a run's log writes never reach us.
_MASK = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR
_LISTING_NAMES = frozenset(name.encode() for name in (TRAIN_SCRIPT, DONE_MARKER, FAILED_MARKER, REQUEUE_NUDGE))
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of NUL-padded name


def _is_link(directory: str, name: bytes) -> bool:
    return os.path.islink(os.path.join(os.fsencode(directory), name))


class DirectoryWatcher:
    """One inotify instance; `fileno()` goes into the queue's selector."""

    def __init__(self, fd: int, libc: ctypes.CDLL) -> None:
        self._fd = fd
        self._libc = libc
        self._wd_of: dict[str, int] = {}
        self._path_of: dict[int, str] = {}
        self._clean: set[str] = set()
        self.limit_reached = False

    @classmethod
    def create(cls) -> DirectoryWatcher | None:
        """A watcher, or None where inotify is not available (then the queue just polls)."""
        if not sys.platform.startswith("linux") or os.environ.get("RUNQUEUE_NO_INOTIFY"):
            return None
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            init = libc.inotify_init1
        except (OSError, AttributeError):
            return None
        fd = init(IN_NONBLOCK | IN_CLOEXEC)
        return None if fd < 0 else cls(fd, libc)

    def fileno(self) -> int:
        return self._fd

    def before_listing(self, directory: str) -> None:
        """Call before listing `directory`: events from now on mark it dirty, so nothing that
        changes during or after the listing is missed."""
        self._clean.discard(directory)
        if directory in self._wd_of or self.limit_reached:
            return
        wd = self._libc.inotify_add_watch(self._fd, os.fsencode(directory), _MASK)
        if wd < 0:
            if ctypes.get_errno() == errno.ENOSPC:
                self.limit_reached = True  # fs.inotify.max_user_watches: the rest is polled
            return
        stale = self._path_of.get(wd)
        if stale is not None and stale != directory:  # same inode reached by a new path (renamed)
            self._wd_of.pop(stale, None)
            self._clean.discard(stale)
        self._wd_of[directory] = wd
        self._path_of[wd] = directory

    def listed(self, directory: str) -> None:
        """`directory` was just listed; it stays clean until an event says otherwise."""
        if directory in self._wd_of:
            self._clean.add(directory)

    def is_clean(self, directory: str) -> bool:
        return directory in self._clean

    def forget(self, directory: str) -> None:
        """The scanner no longer sees `directory` (gone, or no longer under a root)."""
        self._clean.discard(directory)
        wd = self._wd_of.pop(directory, None)
        if wd is not None:
            self._path_of.pop(wd, None)
            self._libc.inotify_rm_watch(self._fd, wd)

    def read_events(self) -> bool:
        """Drain pending events; True when a listing may have changed (a hinted scan is worth it)."""
        changed = False
        while True:
            try:
                data = os.read(self._fd, 65536)
            except OSError:  # BlockingIOError: drained
                return changed
            if not data:
                return changed
            changed = self._apply(data) or changed

    def _apply(self, data: bytes) -> bool:
        changed = False
        offset = 0
        while offset + _EVENT.size <= len(data):
            wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
            name = data[offset + _EVENT.size : offset + _EVENT.size + length].rstrip(b"\0")
            offset += _EVENT.size + length
            if mask & IN_Q_OVERFLOW:
                self._clean.clear()  # events were lost: trust no listing
                changed = True
                continue
            path = self._path_of.get(wd)
            if path is None:
                continue
            if mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF):
                self._drop_under(path)
                changed = True
            elif mask & IN_ISDIR or name in _LISTING_NAMES or (mask & (IN_CREATE | IN_MOVED_TO) and _is_link(path, name)):
                # A symlink may lead to a run folder kept elsewhere: its event has no IN_ISDIR.
                self._clean.discard(path)
                changed = True
        return changed

    def _drop_under(self, path: str) -> None:
        """The watched folder went away or moved: every watch at or below it now has a stale path."""
        prefix = path + "/"
        for directory in [d for d in self._wd_of if d == path or d.startswith(prefix)]:
            self._clean.discard(directory)
            wd = self._wd_of.pop(directory)
            self._path_of.pop(wd, None)

    @property
    def watched(self) -> int:
        return len(self._wd_of)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
