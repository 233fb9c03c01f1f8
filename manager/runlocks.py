"""The run locks prepare() holds while it rewrites runs' inputs.

A queue starts a run only after taking its lock, so holding it keeps every queue from starting
the run on half-written inputs; a lock that cannot be taken means the run is running, and its
inputs must not change under it (LFADS would sample and write parameters from other data than
it trained on).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from manager.errors import ManagerError
from runqueue import runlock
from runqueue.layout import RunPaths


@contextlib.contextmanager
def hold_run_locks(run_dirs: Iterable[Path]) -> Iterator[list[Path]]:
    """Hold the lock of each existing run in `run_dirs`; yields the runs whose lock is held
    elsewhere (running), for the caller to judge with `refuse_running`."""
    taken: list[int] = []
    running: list[Path] = []
    try:
        for run_dir in run_dirs:
            paths = RunPaths(run_dir)
            if not paths.train_script.is_file():
                continue  # not on disk yet: no queue can start it
            try:
                fd = runlock.try_acquire(paths.lock)
            except OSError as error:
                raise ManagerError(paths.lock, f"cannot take the run lock ({error.strerror})",
                                   "check the run folder's permissions") from None
            if fd is None:
                running.append(run_dir)
            else:
                taken.append(fd)
        yield running
    finally:
        for fd in taken:
            os.close(fd)


def refuse_running(running: list[Path]) -> None:
    """ManagerError naming the first of the running runs whose inputs would change, if any."""
    if running:
        more = f" (and {len(running) - 1} more running run(s) of this collection)" if len(running) > 1 else ""
        raise ManagerError(running[0], f"is running, and this prepare would change its inputs{more}",
                           "let it finish, or stop it with `runqueue cancel RUN`; then prepare again")
