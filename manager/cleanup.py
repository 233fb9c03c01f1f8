"""Deleting a run's LFADS output so that the queue trains it again from scratch.

The run lock is held (a read lock, as prepare takes it) while deleting: a queue cannot start the
run half-way through, and a run that is training (its supervisor holds the lock) is refused instead
of having its checkpoints pulled from under it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from manager.errors import ManagerError
from manager.report import REPORT_DIR, report_files
from runqueue import runlock
from runqueue.layout import DONE_MARKER, FAILED_MARKER, LFADS_OUTPUT, OUT_LOG, TRAIN_SCRIPT, RunPaths
from runqueue.runstate import PersistedState, load_state, save_state


def delete_run_output(run_dir: Path) -> list[Path]:
    """Delete lfadsOutput/, lfads.out and the done/failed markers of one run; the paths removed."""
    paths = RunPaths(run_dir)
    if not paths.train_script.is_file():
        raise ManagerError(run_dir, f"not a run folder (no {TRAIN_SCRIPT})", "give the folder that holds lfads_train.sh")
    try:
        lock_fd = runlock.try_hold_shared(paths.lock)  # keeps supervisors out; status says why
    except OSError as error:
        raise ManagerError(paths.lock, f"cannot take the run lock ({error.strerror})", "check the folder's permissions") from None
    if lock_fd is None:
        raise ManagerError(run_dir, "the run is running", "stop it first with `runqueue cancel RUN`, then delete its output")
    try:
        return _delete(run_dir)
    finally:
        os.close(lock_fd)


def _delete(run_dir: Path) -> list[Path]:
    output = run_dir / LFADS_OUTPUT
    if output.is_symlink():
        raise ManagerError(output, "is a symbolic link; its target is left alone",
                           "delete the files it points to yourself, or remove the link")
    removed: list[Path] = []
    try:
        if output.exists():
            # Errors are not ignored: markers removed over a half-deleted checkpoint would make
            # the queue continue the old model instead of starting afresh.
            shutil.rmtree(output)
            removed.append(output)
        # With the model gone, the queue's record must not resume an interrupted or retrying run at
        # its posterior step: start again at training, attempt 1 (as `runqueue requeue`).
        paths = RunPaths(run_dir)
        if paths.state.exists():
            save_state(paths, PersistedState(history=load_state(paths).history))
        for name in (OUT_LOG, DONE_MARKER, FAILED_MARKER):
            path = run_dir / name
            if os.path.lexists(path):
                path.unlink()
                removed.append(path)
        # The report's plots and R² describe the deleted model (the one trained on data since changed,
        # often): they go too; other files in report/ are the user's and stay.
        for path in report_files(run_dir):
            path.unlink()
            removed.append(path)
        with contextlib.suppress(OSError):
            (run_dir / REPORT_DIR).rmdir()  # only if nothing else is in it
    except OSError as error:
        where = Path(error.filename) if error.filename else run_dir
        done = f"; already deleted: {', '.join(p.name for p in removed)}" if removed else "; nothing was deleted"
        raise ManagerError(where, f"cannot delete ({error.strerror}){done}",
                           "fix its permissions or the file system, then delete the output again") from None
    return removed
