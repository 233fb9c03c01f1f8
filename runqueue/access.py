"""Whether another account (the service's) may write a run's folder, judged from the files' owners and
modes, and which accounts' queue records `status` believes. `status` runs as a lab member while the
queue runs as `lfads`: os.access() answers only for the caller."""

from __future__ import annotations

import contextlib
import functools
import os
import pwd
import stat
from pathlib import Path

from runqueue.layout import RunPaths
from runqueue.procinfo import account_name

_DEFAULT_UID_MIN = 1000  # login.defs' default: below it are system accounts, made by an admin


def is_system_account(uid: int) -> bool:
    """An account below UID_MIN (login.defs), as services run under: only an admin creates one."""
    return 0 < uid < _uid_min()


def _uid_min() -> int:
    with contextlib.suppress(OSError, ValueError), open("/etc/login.defs") as defs:
        for line in defs:
            words = line.split()
            if len(words) >= 2 and words[0] == "UID_MIN":
                return int(words[1])
    return _DEFAULT_UID_MIN


@functools.lru_cache(maxsize=16)
def _groups_of(uid: int) -> frozenset[int]:
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        return frozenset()
    try:
        return frozenset(os.getgrouplist(entry.pw_name, entry.pw_gid))
    except OSError:
        return frozenset({entry.pw_gid})


def _writable(info: os.stat_result, uid: int, groups: frozenset[int]) -> bool:
    if info.st_uid == uid:
        return bool(info.st_mode & stat.S_IWUSR)
    if info.st_gid in groups:
        return bool(info.st_mode & stat.S_IWGRP)
    return bool(info.st_mode & stat.S_IWOTH)


def not_writable_by(paths: RunPaths, uid: int) -> str | None:
    """Why a queue running as `uid` could not take this run (lock, state, log), or None. For our own
    account the kernel answers (ACLs included); for another, the owner, group and mode bits do (an
    ACL granting that account write access is not seen)."""
    if uid == 0:
        return None
    groups = _groups_of(uid)
    needed: list[Path] = [paths.root]
    if paths.runtime_dir.is_dir():
        needed.append(paths.runtime_dir)
        if paths.lock.exists():
            needed.append(paths.lock)
    for path in needed:
        try:
            info = os.stat(path)
        except OSError:
            return None  # gone or unreadable: other checks say so
        if uid == os.geteuid():
            if not os.access(path, os.W_OK):
                return (f"blocked: {path} is not writable by you ({account_name(uid)}), so no queue of yours can take"
                        " it; ask its owner, or make it writable")
        elif not _writable(info, uid, groups):
            who = account_name(uid)
            return (f"blocked: {path} is not writable by {who}, the account the queue runs as; make it writable"
                    f" by {who} (its group with g+w, see docs/devices.md) and the queue takes it within a minute")
    return None
