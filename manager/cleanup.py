"""Deleting a run's LFADS output so that the queue trains it again from scratch.

The run lock is held (a read lock, as prepare takes it) while deleting: a queue cannot start the
run half-way through, and a run that is training (its supervisor holds the lock) is refused instead
of having its checkpoints pulled from under it. So is an `lfads` started by hand on lfadsOutput (it
holds a flock on that folder, lfads/files/folder_lock.py; this takes the same lock while deleting).

A deletion can fail half-way (a read-only subfolder, another account's file). So the markers are
retired first: lfads.done and an earlier lfads.failed are parked in `.runqueue/`, and the checkpoint
lists go before the rest, so a half-deleted run is never taken for done and no queue resumes what is
left of its model. While deleting, the run lock keeps every queue from starting the run (it waits
for lfads-manager, as for prepare); a deletion that stops half-way leaves an lfads.failed (reason
output_half_deleted) so that none starts it afterwards either. (No such marker is written up front:
a queue running meanwhile would take it for the run's end and leave the run untrained.) A deletion
killed midway (kill -9, SIGTERM, Ctrl-C) leaves `.runqueue/delete-output.started`, written before
anything goes: queues refuse the run until delete-output runs again and finishes. If nothing
could be deleted at all, the parked markers are put back as they were.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shlex
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from manager.errors import ManagerError
from manager.report import REPORT_DIR, report_files
from runqueue import runlock
from runqueue.atomicio import atomic_write_json
from runqueue.layout import DONE_MARKER, FAILED_MARKER, LFADS_OUTPUT, OUT_LOG, TRAIN_SCRIPT, RunPaths
from runqueue.runstate import FailureRecord, PersistedState, Reason, load_state, now_iso, save_state


def check_run_folder(run_dir: Path) -> None:
    """ManagerError unless `run_dir` is a run folder (it holds lfads_train.sh)."""
    if not os.path.lexists(run_dir):
        raise ManagerError(run_dir, "does not exist", "check the path; give the run folder that holds lfads_train.sh")
    if not RunPaths(run_dir).train_script.is_file():
        raise ManagerError(run_dir, f"not a run folder (no {TRAIN_SCRIPT})", "give the folder that holds lfads_train.sh")


def delete_run_output(run_dir: Path) -> list[Path]:
    """Delete lfadsOutput/, lfads.out and the done/failed markers of one run; the paths removed."""
    paths = RunPaths(run_dir)
    check_run_folder(run_dir)
    try:
        lock_fd = runlock.try_hold_shared(paths.lock)  # keeps supervisors out; status says why
    except OSError as error:
        raise ManagerError(paths.lock, f"cannot take the run lock ({error.strerror})", "check the folder's permissions") from None
    if lock_fd is None:
        raise ManagerError(run_dir, "the run is running", f"stop it first with `runqueue cancel {shlex.quote(str(run_dir))}`, then delete its output")
    try:
        return _delete(run_dir)
    finally:
        os.close(lock_fd)


# Deleted first: with the checkpoint state files gone, what a failure leaves can never be resumed
# (lfads trains a fresh model), and a fresh model's fitlog does not follow the old one's rows.
_FIRST = ("checkpoint", "checkpoint_lve", "checkpoint_lve.final_weights", "fitlog.csv")
PARKED_SUFFIX = ".before-delete-output"
_FIX = "fix its permissions or the file system, then delete the output again"


@dataclass
class _Removal:
    """What deleting a folder tree did: how many entries went, and each (path, reason) that did not."""

    removed: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)


def _delete(run_dir: Path) -> list[Path]:
    paths = RunPaths(run_dir)
    output = run_dir / LFADS_OUTPUT
    if output.is_symlink():
        raise ManagerError(output, "is a symbolic link; its target is left alone",
                           "delete the files it points to yourself, or remove the link")
    if os.path.lexists(output) and not output.is_dir():
        raise ManagerError(output, "cannot delete (not a folder: lfads writes a folder here); nothing was deleted",
                           "move it away or delete it yourself")
    with _no_lfads_writing(output):
        parked = _retire_markers(paths)  # and writes the deletion record
        try:
            done = _remove_tree(output, _FIRST) if output.is_dir() else _Removal()
            if done.failed and done.removed == 0:
                _restore_markers(paths, parked)
                where, reason = done.failed[0]
                raise ManagerError(where, f"cannot delete ({reason}); nothing was deleted", _FIX)
            removed = _finish(run_dir, paths, output, parked, done)
        except ManagerError:
            _end_deletion_record(paths)  # an ending that left the run as it says (lfads.failed where half-deleted)
            raise
        # Killed or interrupted (anything but the ManagerError above): the record stays, and queues
        # refuse the run until delete-output runs again.
        _end_deletion_record(paths)
        return removed


def _finish(run_dir: Path, paths: RunPaths, output: Path, parked: dict[str, Path], done: _Removal) -> list[Path]:
    removed = [output] if done.removed and not os.path.lexists(output) else []
    # With the model gone, the queue's record must not resume an interrupted or retrying run at
    # its posterior step: start again at training, attempt 1 (as `runqueue requeue`).
    try:
        if paths.state.exists():
            save_state(paths, PersistedState(history=load_state(paths).history))
    except OSError as error:
        _mark_half_deleted(paths, f"lfads-manager delete-output could not reset {paths.state}: {error.strerror}")
        _drop_parked(paths)
        raise ManagerError(paths.state, f"cannot reset the queue's record of the run ({error.strerror}); {done.removed}"
                           f" files and folders of {output} were deleted, {FAILED_MARKER} marks the run as half-deleted",
                           _FIX) from None
    if done.failed:
        # Kept, until a deletion that works: lfads.out and the report, the record of the model partly gone.
        where, reason = done.failed[0]
        more = f", {len(done.failed) - 1} more could not be" if len(done.failed) > 1 else ""
        problem = (f"cannot delete ({reason}); partly deleted: {done.removed} files and folders of {output} removed,"
                   f" this one not{more}; {FAILED_MARKER} marks the run as half-deleted, so no queue starts it;"
                   f" {OUT_LOG} and the report are kept")
        _mark_half_deleted(paths, f"lfads-manager delete-output stopped half-way: {where}: {problem}")
        _drop_parked(paths)
        raise ManagerError(where, problem, _FIX)
    if os.path.lexists(paths.out_log):
        removed.append(_unlink_after_the_model(paths, paths.out_log))
    removed += [run_dir / name for name in (DONE_MARKER, FAILED_MARKER) if name in parked]  # parked, dropped below
    # The report's plots and R² describe the deleted model (the one trained on data since changed,
    # often): they go too; other files in report/ are the user's and stay.
    removed += [_unlink_after_the_model(paths, path) for path in report_files(run_dir)]
    with contextlib.suppress(OSError):
        (run_dir / REPORT_DIR).rmdir()  # only if nothing else is in it
    try:
        paths.failed_marker.unlink(missing_ok=True)  # ours, if any: the run is pending again, for a fresh start
    except OSError as error:
        raise ManagerError(paths.failed_marker, f"cannot delete ({error.strerror}); everything else was deleted",
                           _FIX) from None
    _drop_parked(paths)
    return removed


def _unlink_after_the_model(paths: RunPaths, path: Path) -> Path:
    """Delete one file that goes after the model; if it cannot go, the run is marked half-deleted."""
    try:
        path.unlink()
    except OSError as error:
        _mark_half_deleted(paths, f"lfads-manager delete-output could not delete {path}: {error.strerror}")
        raise ManagerError(path, f"cannot delete ({error.strerror}); the model and results were deleted,"
                           f" {FAILED_MARKER} marks the run until this is deleted too", _FIX) from None
    return path


@contextlib.contextmanager
def _no_lfads_writing(output: Path) -> Iterator[None]:
    """Hold lfads's own lock on lfadsOutput (a flock on the folder) while deleting; refuse when held.

    Where the folder cannot be opened or locked (not there, NFS) go on: the run lock still keeps
    the queue out."""
    try:
        fd = os.open(output, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise ManagerError(output, "an lfads process is writing it (a step script started by hand, or another"
                                   " account's queue); nothing was deleted",
                                   "wait for it to end or stop it, then delete the output again") from None
        yield
    finally:
        os.close(fd)


def _retire_markers(paths: RunPaths) -> dict[str, Path]:
    """Park lfads.done and lfads.failed in .runqueue/; -> {marker name: where it is parked}. Nothing is
    deleted yet."""
    parked: dict[str, Path] = {}
    try:
        paths.runtime_dir.mkdir(exist_ok=True)
        atomic_write_json(paths.deletion_record, {"pid": os.getpid(), "started": now_iso()})
        for marker in (paths.failed_marker, paths.done_marker):
            if os.path.lexists(marker):
                aside = paths.runtime_dir / (marker.name + PARKED_SUFFIX)
                os.rename(marker, aside)
                parked[marker.name] = aside
    except OSError as error:
        where = Path(error.filename) if error.filename else paths.root
        _restore_markers(paths, parked)
        _end_deletion_record(paths)
        raise ManagerError(where, f"cannot retire the run's markers ({error.strerror}); nothing was deleted", _FIX) from None
    return parked


def _end_deletion_record(paths: RunPaths) -> None:
    with contextlib.suppress(OSError):
        paths.deletion_record.unlink(missing_ok=True)


def _mark_half_deleted(paths: RunPaths, message: str) -> None:
    """lfads.failed (reason output_half_deleted): no queue starts a run whose output is half gone."""
    record = FailureRecord(step=None, exit_code=None, signal=None, attempt=0, time=now_iso(),
                           reason=str(Reason.OUTPUT_HALF_DELETED), message=message, last_lines=[])
    with contextlib.suppress(OSError):  # the error raised next says what went wrong in any case
        atomic_write_json(paths.failed_marker, record.to_json())


def _restore_markers(paths: RunPaths, parked: dict[str, Path]) -> None:
    """Put parked markers back as they were (a rename keeps their contents and times)."""
    for name, aside in parked.items():
        with contextlib.suppress(OSError):
            os.rename(aside, paths.root / name)


def _drop_parked(paths: RunPaths) -> None:
    """Delete the parked markers, also those a killed delete-output left (the user asked for both gone)."""
    for name in (DONE_MARKER, FAILED_MARKER):
        aside = paths.runtime_dir / (name + PARKED_SUFFIX)
        if not os.path.lexists(aside):
            continue
        with contextlib.suppress(OSError):
            if aside.is_dir() and not aside.is_symlink():
                shutil.rmtree(aside)
            else:
                aside.unlink()


def _remove_tree(folder: Path, first: tuple[str, ...] = (), result: _Removal | None = None) -> _Removal:
    """Delete `folder` and everything in it, going on past what cannot be deleted (and recording it).
    The names in `first` (top level) go before the rest; symbolic links are removed, never followed.
    A folder is removed only when everything in it went."""
    result = _Removal() if result is None else result
    failed_before = len(result.failed)
    try:
        names = sorted(os.listdir(folder), key=lambda name: (name not in first, name))
    except OSError as error:
        result.failed.append((folder, error.strerror or str(error)))
        return result
    for name in names:
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            _remove_tree(path, (), result)
            continue
        try:
            path.unlink()
            result.removed += 1
        except OSError as error:
            result.failed.append((path, error.strerror or str(error)))
    if len(result.failed) == failed_before:
        try:
            folder.rmdir()
            result.removed += 1
        except OSError as error:
            result.failed.append((folder, error.strerror or str(error)))
    return result
