"""A queue running as root runs each run's steps as root: it must not run what another account
could have written (reference gpu-queues.md §4.3). Until steps run as their folder's owner
(DESIGN.md §6), such runs are refused with the fix, and the shipped service runs as `lfads`."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from runqueue.layout import RunPaths
from runqueue.procinfo import account_name


def unsafe_as_root(paths: RunPaths, euid: int | None = None) -> str | None:
    """Why running this run as root would hand root to another account; None when the queue is not
    root or the run folder and its step scripts are root's alone."""
    if (os.geteuid() if euid is None else euid) != 0:
        return None
    for path in (paths.root, *paths.step_scripts):
        try:
            info = os.stat(path)  # a link: what it points to is what bash reads
        except OSError:
            continue  # missing or unreadable: the step's own check says so
        problem = _not_roots_alone(path, info)
        if problem is not None:
            return problem
    return None


def _not_roots_alone(path: Path, info: os.stat_result) -> str | None:
    if info.st_uid != 0:
        owner = account_name(info.st_uid)
        return (f"{path} belongs to {owner} and the queue runs as root, so its steps would run as root; run the queue"
                f" as {owner} (runuser -u {owner} -- runqueue run …), or chown it to root")
    # Group root is root's own; another group's members could change what root runs.
    if info.st_mode & stat.S_IWOTH or (info.st_mode & stat.S_IWGRP and info.st_gid != 0):
        return (f"{path} is writable by other accounts and the queue runs as root, so they could run code as root;"
                f" chmod go-w {path}, or run the queue as an ordinary account")
    return None
