"""The run lock: "running" means an open-file-description lock on `.runqueue/lock` is held.

Why OFD locks (fcntl F_OFD_SETLK) and not flock: F_OFD_GETLK asks "is it held?" without
taking the lock, so `status` and the scheduler can probe a run while its supervisor is starting
without ever making the supervisor's own non-blocking attempt fail. OFD locks belong to the open
file (not the process), so the supervisor can hand the descriptor to its step processes: a step
that outlives a killed supervisor still holds the run, and no queue starts it twice. On NFS they
become ordinary POSIX locks held by the server, so they also work across hosts.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import fcntl
import json
import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

from runqueue.atomicio import parse_json, read_small_file, take_folder_group
from runqueue.procinfo import holds_write_lock_on, is_alive, process_start_time

# struct flock: short l_type, short l_whence, off_t l_start, off_t l_len, pid_t l_pid (+ padding).
_FLOCK = "hhqqi4x"


def _flock_bytes(lock_type: int) -> bytes:
    return struct.pack(_FLOCK, lock_type, os.SEEK_SET, 0, 0, 0)


@dataclass(frozen=True)
class LockHolder:
    """What the holder wrote into the lock file: enough to find and verify it."""

    pid: int | None
    start_time: int | None
    host: str | None


def try_acquire(lock_path: Path) -> int | None:
    """Take the run lock without waiting; the open descriptor (keep it open), or None when held.

    Creates `.runqueue/` and the lock file if needed. The descriptor is inheritable on purpose
    (see the module doc); callers pass it to their steps explicitly.
    """
    _make_runtime_dir(lock_path.parent)
    # Never through a link: a run folder's owner could point it at another run's lock or any path.
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)  # the umask decides: group-writable in a shared tree
    give_to_run_owner(lock_path, lock_path.parent.parent)
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _flock_bytes(fcntl.F_WRLCK))
    except OSError:
        os.close(fd)
        return None
    _readable_by_all(fd)
    return fd


def give_to_run_owner(path: Path, run_root: Path) -> None:
    """Root (an admin's `runqueue cancel`, a root queue) makes a run's files its owner's: a root-owned
    `.runqueue/` or lock would lock the run's own user out of the run. Another account (a service)
    gives them their folder's group when it is a member (take_folder_group)."""
    if os.geteuid() != 0:
        take_folder_group(path)
        return
    with contextlib.suppress(OSError):
        owner = os.stat(run_root)
        os.chown(path, owner.st_uid, owner.st_gid, follow_symlinks=False)


def _make_runtime_dir(directory: Path) -> None:
    """`.runqueue/`, which every account must be able to pass through to probe the lock (a umask of
    077 would make it 0700); what is inside keeps the modes the umask gives it."""
    try:
        directory.mkdir()
        give_to_run_owner(directory, directory.parent)
    except FileExistsError:
        refuse_a_link(directory)
        return
    with contextlib.suppress(OSError):
        os.chmod(directory, (os.stat(directory).st_mode & 0o7777) | 0o111)


def refuse_a_link(directory: Path) -> None:
    """A link where the queue keeps its own folder in a run (`.runqueue`, its shims): a queue run as
    root or as a service must not write where it points."""
    if directory.is_symlink():
        raise OSError(errno.ELOOP, "a symbolic link, not the queue's folder (the queue never follows one there)", str(directory))


def _readable_by_all(fd: int) -> None:
    """Every account's queue and `status` must be able to probe the lock (a umask of 077 would hide
    a running run from them); it holds only a pid and a host name."""
    with contextlib.suppress(OSError):
        info = os.fstat(fd)
        if info.st_uid == os.geteuid() and info.st_mode & 0o444 != 0o444:
            os.fchmod(fd, (info.st_mode & 0o7777) | 0o444)


def write_holder(fd: int) -> None:
    """Record who holds the lock (pid + start time survive pid reuse) inside the lock file."""
    pid = os.getpid()
    record = {"pid": pid, "start_time": process_start_time(pid), "host": socket.gethostname()}
    data = json.dumps(record).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def try_hold_shared(lock_path: Path) -> int | None:
    """A read lock on the run lock, for the manager's maintenance (prepare, delete-output): it keeps
    every supervisor (which needs the write lock) from starting the run, needs only read access to
    a lock file another user's queue created, and `held_by` tells it apart from a running run.
    The open descriptor (close it to let go), or None while a supervisor or its steps hold the run."""
    refuse_a_link(lock_path.parent)
    try:  # a fifo there must not hang us; a link is never followed
        fd = os.open(lock_path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        _make_runtime_dir(lock_path.parent)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o666)
        _readable_by_all(fd)
        give_to_run_owner(lock_path, lock_path.parent.parent)
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _flock_bytes(fcntl.F_RDLCK))
    except OSError:
        os.close(fd)
        return None
    return fd


class HeldBy(enum.Enum):
    NOBODY = "nobody"
    RUN = "run"  # a supervisor or a step of the run: the write lock
    MANAGER = "manager"  # lfads-manager's maintenance (prepare, delete-output): a read lock


def held_by(lock_path: Path) -> HeldBy:
    """Who holds the run lock now, in one look. Never takes it."""
    try:  # a fifo there must not hang us; a link (to another run's lock) is no lock of this run
        fd = os.open(lock_path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return HeldBy.NOBODY  # no lock file: never run, or the folder is gone
    try:
        answer = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, _flock_bytes(fcntl.F_WRLCK))
    except OSError:
        return HeldBy.NOBODY
    finally:
        os.close(fd)
    lock_type = struct.unpack(_FLOCK, answer)[0]
    return {fcntl.F_WRLCK: HeldBy.RUN, fcntl.F_RDLCK: HeldBy.MANAGER}.get(lock_type, HeldBy.NOBODY)


def is_held(lock_path: Path) -> bool:
    """True while some live process holds the run lock (a run, or the manager's maintenance). Never takes it."""
    return held_by(lock_path) is not HeldBy.NOBODY


def is_running(lock_path: Path) -> bool:
    """True while a supervisor or a step of the run holds it (the write lock)."""
    return held_by(lock_path) is HeldBy.RUN


def read_holder(lock_path: Path) -> LockHolder | None:
    try:
        raw = read_small_file(lock_path)
    except OSError:
        return None
    with contextlib.suppress(ValueError):
        record = parse_json(raw)
        if isinstance(record, dict):
            return LockHolder(
                pid=_int_or_none(record.get("pid")),
                start_time=_int_or_none(record.get("start_time")),
                host=record.get("host") if isinstance(record.get("host"), str) else None,
            )
    return None


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def live_supervisor(lock_path: Path, pid: int | None, start_time: int | None) -> tuple[int, int | None] | None:
    """(pid, start time) of the run's live supervisor: the one state.json records (`pid`,
    `start_time`), else the holder the lock file names (state.json deleted by hand); None if gone."""
    for candidate, start in ((pid, start_time), *_lock_file_holder(lock_path)):
        if is_run_process(lock_path, candidate, start):
            assert candidate is not None
            return candidate, start
    return None


def _lock_file_holder(lock_path: Path) -> list[tuple[int | None, int | None]]:
    holder = read_holder(lock_path)
    return [] if holder is None else [(holder.pid, holder.start_time)]


def is_run_process(lock_path: Path, pid: int | None, start_time: int | None) -> bool:
    """Whether `pid` (started at `start_time`) is a live process of this run. state.json and the
    lock file can be written by anyone who can write the run folder, so a pid they name is proof of
    nothing: it must also hold the run's write lock, as every supervisor and step does (when its
    descriptors cannot be read, another account's process, the start time must match)."""
    if pid is None or start_time is None or not is_alive(pid, start_time):
        return False
    return holds_write_lock_on(pid, lock_path) is not False

