"""`runqueue cancel` and `runqueue status` for runs handed to SLURM (the CLI's side of the executor)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Sequence
from pathlib import Path

from runqueue import runlock
from runqueue.control import CancelRefused, leave_grace
from runqueue.errors import RunqueueError
from runqueue.layout import SUPERVISOR_LOOKS_EVERY_S, RunPaths
from runqueue.runstate import RunState, load_state
from runqueue.slurm.commands import JobInfo, SlurmCommands, SlurmError, job_with_token
from runqueue.slurm.outcome import write_cancelled
from runqueue.slurm.paths import SlurmPaths
from runqueue.slurm.records import (
    STOP_CANCEL,
    SubmissionRecord,
    load_submission,
    record_found_job_id,
    save_submission,
    submission_lock,
)
from runqueue.status import RunRow

_POLL_S = 0.2


def cancel_if_submitted(paths: RunPaths, grace_s: float, commands: SlurmCommands | None = None) -> str | None:
    """Cancel a run whose current submission is a SLURM job; None when it has none (cancel it locally).

    Running job: the supervisor gets SIGUSR1 (scancel --batch), stops the steps and writes
    lfads.failed(cancelled) itself; if it has not ended within `grace_s` + 10 s, scancel.
    Pending job: scancel, and lfads.failed(cancelled) written here.
    """
    slurm_paths = SlurmPaths(paths)
    if os.path.lexists(paths.done_marker) or os.path.lexists(paths.failed_marker):
        return None  # the local cancel says "already done/failed"
    record = load_submission(slurm_paths)
    if record is None or not record.active:
        return None
    commands = commands or SlurmCommands()
    try:
        commands.check_available()
    except RunqueueError:
        raise CancelRefused("it is a SLURM job and the SLURM tools (squeue, scancel) are not on PATH here; cancel it"
                            " where they are (a login node, or after `module load slurm`)") from None
    with submission_lock(slurm_paths):
        record = load_submission(slurm_paths)
        if record is None or not record.active:
            return None
        save_submission(slurm_paths, dataclasses.replace(record, stop_requested=STOP_CANCEL))
    job = record.job_id if record.job_id is not None else _job_by_comment(commands, slurm_paths, record.token)
    if job is None and runlock.is_held(paths.lock):
        # SLURM did not name the job (squeue failing, or another account's job), yet its supervisor
        # runs: ask it in writing, as for another account's local run, and wait for it to stop.
        leave_grace(paths, grace_s, batch_token=record.token)
        _wait_for_end(commands, paths, None, grace_s + SUPERVISOR_LOOKS_EVERY_S + 10.0)
        if os.path.lexists(paths.failed_marker):
            return "cancelled (its SLURM job's supervisor stopped the run)"
        raise CancelRefused("cancel recorded, but SLURM did not name the job and its supervisor has not stopped yet;"
                            " run `runqueue cancel` again when SLURM answers")
    if job is None:
        write_cancelled(paths, "cancelled with `runqueue cancel` while its submission to SLURM was in flight")
        return "marked failed (cancelled); its SLURM submission was still in flight"
    leave_grace(paths, grace_s, batch_token=record.token)
    stopped = commands.signal_batch(job, "USR1") and _wait_for_end(commands, paths, job, grace_s + 10.0)
    if stopped and os.path.lexists(paths.failed_marker):
        _settle(slurm_paths, record.token, f"SLURM job {job} cancelled with `runqueue cancel`; its supervisor stopped the run")
        return f"cancelled (SLURM job {job}: its supervisor stopped the run)"
    if not commands.cancel(job):
        # Recorded as asked to stop: a job that starts later runs nothing, and the queue that settles it
        # writes lfads.failed(cancelled). But SLURM did not confirm, so say it.
        raise CancelRefused(f"cancel recorded, but `scancel {job}` failed (SLURM unreachable?): the job may still be"
                            " queued or running; run `runqueue cancel` again when SLURM answers")
    # scancel only asks: a supervisor that was running (the job started after the look above, or
    # USR1 could not be sent) takes SLURM's SIGTERM, stops the steps and writes lfads.out's last
    # lines. Wait for that before writing ours, so that the log's last word is the cancel.
    _wait_for_end(commands, paths, job, max(grace_s, _kill_grace(paths)) + 10.0)
    if not os.path.lexists(paths.failed_marker):
        write_cancelled(paths, f"cancelled with `runqueue cancel` (SLURM job {job} scancelled)")
    _settle(slurm_paths, record.token, f"SLURM job {job} scancelled with `runqueue cancel`")
    return f"cancelled (SLURM job {job} scancelled)"


def _job_by_comment(commands: SlurmCommands, paths: SlurmPaths, token: str) -> int | None:
    """The job of a submission whose id never reached slurm.json (its queue died during sbatch), by
    the comment it was submitted with; recorded when found. None while SLURM has none (in flight)."""
    job = job_with_token(commands, token)
    if job is not None:
        with contextlib.suppress(OSError):
            record_found_job_id(paths, token, job)
    return job


def _wait_for_end(commands: SlurmCommands, paths: RunPaths, job: int | None, timeout_s: float) -> bool:
    """Until the job is over in SLURM (`job` None: SLURM cannot name it) and nothing of the run holds
    its lock; False on time-out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            info = None if job is None else commands.query([job]).get(job)
        except SlurmError:
            info = None
        if (info is None or info.finished or info.state == "COMPLETING") and not runlock.is_held(paths.lock):
            return True
        time.sleep(_POLL_S)
    return False


def _kill_grace(paths: RunPaths) -> float:
    """How long the run's supervisor gives the steps to stop (state.json, as the queue set it)."""
    return max(0.0, load_state(paths).kill_grace_s or 0.0)  # load_state keeps only finite numbers


def _settle(paths: SlurmPaths, token: str, ending: str) -> None:
    with submission_lock(paths):
        record = load_submission(paths)
        if record is not None and record.token == token and record.active:
            save_submission(paths, record.settle(ending))


def annotate_rows(rows: Sequence[RunRow], commands: SlurmCommands | None = None) -> tuple[list[RunRow], list[str]]:
    """`runqueue status`: pending/running rows whose run is a SLURM job get the job id and state as reason.

    One squeue call for all of them. Returns the rows and problems (e.g. squeue unavailable).
    """
    submitted: dict[int, tuple[SubmissionRecord, RunRow]] = {}
    unrecorded: list[int] = []
    for index, row in enumerate(rows):
        if row.state not in (RunState.PENDING, RunState.RUNNING):
            continue
        record = load_submission(SlurmPaths.of(Path(row.path)))
        if record is not None and record.active:
            submitted[index] = (record, row)
            if record.job_id is None:
                unrecorded.append(index)
    if not submitted:
        return list(rows), []
    problems: list[str] = []
    known: dict[int, JobInfo] = {}
    try:
        commands = commands or SlurmCommands()
        known = commands.query([record.job_id for record, _ in submitted.values() if record.job_id is not None])
    except (SlurmError, RunqueueError) as error:
        problems.append(f"SLURM job states unknown: {error}")
    result = list(rows)
    for index, (record, row) in submitted.items():
        if record.job_id is None:
            text = "submitted to SLURM; job id not recorded yet"
        else:
            info = known.get(record.job_id)
            state = info.describe() if info is not None else ("state unknown" if problems else "no longer known to SLURM")
            text = f"SLURM job {record.job_id}: {state}"
            if info is not None and info.finished:
                text += "; the next `runqueue run --executor slurm` records how it ended"
        result[index] = dataclasses.replace(row, reason=text)
    return result, problems
