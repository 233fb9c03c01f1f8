"""A queue running as root runs each run's steps as root: it must not run what another account
could have written (reference gpu-queues.md §4.3). Until steps run as their folder's owner
(DESIGN.md §6), such runs are refused with the fix, and the shipped service runs as `lfads`."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from runqueue.layout import RunPaths
from runqueue.legacy import SHIM_DIR_NAME
from runqueue.procinfo import account_name


def unsafe_as_root(paths: RunPaths, as_root: bool | None = None) -> str | None:
    """Why running this run as root would hand root to another account; None when the queue is not
    root (`as_root`; None: whether this process is) or the run is root's alone: its folder, the
    folders above it (else the run could be swapped for another), its `.runqueue/` (the legacy shims
    there go first on PATH) and its step scripts."""
    if not (os.geteuid() == 0 if as_root is None else as_root):
        return None
    shims = paths.runtime_dir / SHIM_DIR_NAME
    own = (paths.root, paths.runtime_dir, shims, *_entries(shims), *paths.step_scripts)
    checks = [(path, True) for path in _folders_above(paths.root)] + [(path, False) for path in own]
    for path, above in checks:
        try:
            info = os.stat(path)  # a link: what it points to is what is run (links in root's folders stay put)
        except OSError:
            continue  # missing or unreadable: the step's own check says so
        problem = _not_roots_alone(path, info, above)
        if problem is not None:
            return problem
    return None


def _folders_above(root: Path) -> list[Path]:
    """Every folder above the run, as named and as resolved (a link on the way may point elsewhere)."""
    named = Path(os.path.abspath(root))
    return sorted({*named.parents, *Path(os.path.realpath(root)).parents})


def _entries(folder: Path) -> list[Path]:
    try:
        return [folder / name for name in os.listdir(folder)]
    except OSError:
        return []


def _not_roots_alone(path: Path, info: os.stat_result, above: bool) -> str | None:
    writable = info.st_mode & stat.S_IWOTH or (info.st_mode & stat.S_IWGRP and info.st_gid != 0)
    if above:  # others may own nothing above the run, and write there only where the sticky bit keeps its entries theirs
        if info.st_uid == 0 and (not writable or info.st_mode & stat.S_ISVTX):
            return None
        return (f"{path}, above the run folder, can be changed by {account_name(info.st_uid) if info.st_uid else 'other accounts'},"
                " who could swap the run for one of their own while the queue runs as root; run the queue as"
                f" that account ({_run_as(info.st_uid)}), or keep the runs under folders only root can change")
    if info.st_uid != 0:
        owner = account_name(info.st_uid)
        # chown -R does not follow links: a linked step script is fixed where the link points.
        target = os.path.realpath(path) if os.path.islink(path) else None
        named, fix = (f"{path} (a link to {target})", f"chown root {target}") if target else (str(path), "chown -R it to root")
        return (f"{named} belongs to {owner} and the queue runs as root, so its steps would run as root; run the queue"
                f" as {owner} ({_run_as(info.st_uid)}), or {fix}")
    # Group root is root's own; another group's members could change what root runs.
    if writable:
        return (f"{path} is writable by other accounts and the queue runs as root, so they could run code as root;"
                f" chmod go-w {path}, or run the queue as an ordinary account")
    return None


def _run_as(uid: int) -> str:
    name = account_name(uid)
    if name.startswith("uid "):  # no account name: runuser needs one
        return f"setpriv --reuid={uid} --regid=GID --clear-groups runqueue run …"
    return f"runuser -u {name} -- runqueue run …"
