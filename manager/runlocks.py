"""The run locks prepare() takes while it rewrites runs' inputs.

A queue starts a run only after taking its run lock (a write lock), so a read lock held from before
prepare loads the data until every export and run folder is written keeps every queue from starting
a run whose export changes on old or half-written inputs; it needs only read access to a lock file
another user's queue made, and `runqueue status` tells it from a running run. A run that is running
must not get new inputs at all: LFADS would sample and write parameters from other data than it
trained on.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import shlex
from collections.abc import Iterator, Sequence
from pathlib import Path

from manager.errors import ManagerError, disk_fix
from runqueue import runlock
from runqueue.layout import RunPaths

_SPARE_FILES = 256  # descriptors left for everything else prepare opens


def refuse_running(running: Sequence[Path]) -> None:
    """ManagerError naming the first of the running runs whose inputs would change, if any."""
    if running:
        more = f" (and {len(running) - 1} more running run(s) of this collection)" if len(running) > 1 else ""
        shown = " ".join(shlex.quote(str(path)) for path in running[:5]) + (" …" if len(running) > 5 else "")
        raise ManagerError(running[0], f"is running, and this prepare would change its inputs{more}",
                           f"let it finish, or stop it with `runqueue cancel {shown}`; then prepare again")


@contextlib.contextmanager
def holding_runs(run_dirs: Sequence[Path]) -> Iterator[list[Path]]:
    """Hold a read lock on each existing run in `run_dirs`; yields those that are running (their
    supervisor or steps hold the write lock), for the caller to judge with `refuse_running`."""
    _allow_open_files(len(run_dirs) + _SPARE_FILES)
    taken: list[int] = []
    running: list[Path] = []
    try:
        for run_dir in run_dirs:
            paths = RunPaths(run_dir)
            if not paths.train_script.is_file():
                continue  # not on disk yet: no queue can start it
            try:
                fd = runlock.try_hold_shared(paths.lock)
            except OSError as error:
                if error.errno in (errno.EMFILE, errno.ENFILE):
                    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
                    raise ManagerError(paths.lock, f"cannot lock the {len(run_dirs)} runs whose export changes at once"
                                       f" (open-file limit {soft})", "raise it, e.g. `ulimit -n 65536`, then prepare"
                                       " again") from None
                raise ManagerError(paths.lock, f"cannot take the run lock ({error.strerror})",
                                   disk_fix(error, "make the run folder's .runqueue/ readable by you")) from None
            if fd is None:
                running.append(run_dir)
            else:
                taken.append(fd)
        yield running
    finally:
        for fd in taken:
            os.close(fd)


def _allow_open_files(count: int) -> None:
    """Raise the soft open-file limit towards `count` (up to the hard limit) for the runs' locks."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= count:
        return
    wanted = count if hard == resource.RLIM_INFINITY else min(count, hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
