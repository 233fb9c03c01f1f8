"""A watched job is over: say what happened to the run, in its folder, when the job could not.

The supervisor inside the job records every ending it lives to see (lfads.done, lfads.failed,
state.json). This module handles the rest, using SLURM's word for the job only as the reason:
a job cancelled or timed out by SLURM, a job that died before or while its supervisor ran, a job
SLURM lost. Called under the run's submission lock by whichever queue settles the job first.

| SLURM says / the folder says                | recorded                                             |
|---------------------------------------------|------------------------------------------------------|
| any, and lfads.done / lfads.failed exists   | nothing (the markers are the truth)                  |
| a queue asked to cancel (`runqueue cancel`) | lfads.failed, reason `cancelled`                     |
| a queue asked to interrupt (2nd Ctrl-C)     | state.json `interrupted` if the supervisor could not |
| CANCELLED (scancel outside runqueue)        | lfads.failed, reason `cancelled`                     |
| TIMEOUT (SLURM's limit came first)          | lfads.failed, reason `time_limit`                    |
| the supervisor returned (slurm-job.json)    | nothing (it recorded the outcome)                    |
| OUT_OF_MEMORY                               | lfads.failed, reason `slurm_out_of_memory`           |
| NODE_FAIL, PREEMPTED, BOOT_FAIL, lost       | interrupted (goes again); failed `slurm_lost` after 3 in a row |
| supervisor started, then died               | nothing: state.json still says running, and the queue treats it as a crash, as locally |
| ended before the supervisor started         | lfads.failed, reason `slurm_job_failed` (see .runqueue/slurm-<id>.out) |
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass

from runqueue import runlock
from runqueue.atomicio import atomic_write_json
from runqueue.layout import RunPaths
from runqueue.outlog import append_queue_line
from runqueue.runstate import FailureRecord, Phase, Reason, load_state, now_iso, save_state
from runqueue.slurm.commands import LOST, JobInfo
from runqueue.slurm.paths import SlurmPaths
from runqueue.slurm.records import STOP_CANCEL, STOP_INTERRUPT, SubmissionRecord, load_job_report
from runqueue.steps import last_lines, read_region_tail
from runqueue.supervisor import HEADER_PREFIX

MAX_LOST_IN_A_ROW = 3
REASON_OUT_OF_MEMORY = "slurm_out_of_memory"
REASON_LOST = "slurm_lost"
REASON_JOB_FAILED = "slurm_job_failed"
_NOT_THE_RUNS_FAULT = frozenset({"NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "REVOKED", LOST})
_TAIL_LINES = 30


@dataclass(frozen=True)
class Ending:
    text: str  # for slurm.json's `ending` and the console
    lost: int  # jobs of this run lost in a row, after this one


def settle_job_end(paths: SlurmPaths, record: SubmissionRecord, info: JobInfo) -> Ending:
    """Record what the job's end means for the run, if the job could not; the caller holds the submission lock."""
    run = paths.run
    job = record.job_id
    what = f"SLURM job {job} ended {info.describe()}" if job else "its submission never reached SLURM"
    if os.path.lexists(run.done_marker) or os.path.lexists(run.failed_marker):
        return Ending(f"{what}; the run's markers say how it went", 0)
    if runlock.is_held(run.lock):
        return Ending(f"{what}; the run is held by another process", record.lost)
    if job is None:
        return Ending(f"{what}; the run is pending again", record.lost)
    report = load_job_report(paths)
    ran = report is not None and report.job_id == job and report.token == record.token
    returned = ran and report is not None and report.ended
    if record.stop_requested == STOP_CANCEL:
        _write_failed(run, Reason.CANCELLED, f"cancelled with `runqueue cancel` ({what})", info, report_device(paths, ran))
        return Ending(f"{what}; cancelled", 0)
    if record.stop_requested == STOP_INTERRUPT:
        if ran and not returned:
            _mark_interrupted(run, f"interrupted by the queue ({what})")
        return Ending(f"{what}; interrupted by the queue, it goes again", record.lost)
    if info.state == "CANCELLED":
        _write_failed(
            run, Reason.CANCELLED,
            f"{what}: cancelled outside runqueue (scancel, or an administrator)",
            info, report_device(paths, ran),
        )
        return Ending(f"{what}; recorded as cancelled", 0)
    if info.state == "TIMEOUT":
        _write_failed(
            run, Reason.TIME_LIMIT,
            f"{what}: SLURM's time limit stopped it before the supervisor's own; give more --slurm-time or a shorter time limit",
            info, report_device(paths, ran),
        )
        return Ending(f"{what}; recorded as time_limit", 0)
    if returned:
        return Ending(f"{what}; the supervisor recorded the outcome", 0)
    if info.state == "OUT_OF_MEMORY":
        _write_failed(run, REASON_OUT_OF_MEMORY, f"{what}: it used more host memory than it asked for; raise --slurm-mem", info, report_device(paths, ran))
        return Ending(f"{what}; recorded as {REASON_OUT_OF_MEMORY}", 0)
    if info.state in _NOT_THE_RUNS_FAULT:
        lost = record.lost + 1
        if lost >= MAX_LOST_IN_A_ROW:
            _write_failed(run, REASON_LOST, f"{what}; {lost} jobs of this run in a row were lost, giving up", info, report_device(paths, ran))
            return Ending(f"{what}; recorded as {REASON_LOST}", lost)
        if ran:
            _mark_interrupted(run, f"{what}; not the run's fault, it goes again")
        return Ending(f"{what}; not the run's fault, it goes again ({lost} lost in a row)", lost)
    if ran:
        # The supervisor started and died without a word (killed on the node): state.json still
        # says running, which the queue treats like a local supervisor crash (it goes again, and
        # a run whose supervisor keeps dying is held back after three).
        return Ending(f"{what}; its supervisor died without recording an outcome", record.lost)
    output = paths.job_output(job)
    # A job that could not even open its output file (a folder the node cannot write or does not see)
    # leaves none: then only the node's slurmd log knows why.
    where = (f"see {output}" if output.exists() else
             f"it left no {output.name} (the node could not write {output.parent}?); see the slurmd log on {info.node or 'its node'}")
    _write_failed(run, REASON_JOB_FAILED, f"{what} before the run's supervisor started; {where}", info, None)
    return Ending(f"{what}; recorded as {REASON_JOB_FAILED}", record.lost)


def report_device(paths: SlurmPaths, ran: bool) -> str | None:
    report = load_job_report(paths) if ran else None
    return None if report is None else report.device_uuid


def write_cancelled(run: RunPaths, message: str, device: str | None = None) -> None:
    """lfads.failed with reason `cancelled` (for `runqueue cancel` of a run SLURM has not started)."""
    _write_failed(run, Reason.CANCELLED, message, None, device)


def _write_failed(run: RunPaths, reason: str, message: str, info: JobInfo | None, device: str | None) -> None:
    state = load_state(run)
    # Root (an admin's cancel, a root queue settling a user's job) never follows a link at the log:
    # it could point at a file only root may read or write.
    log_is_ours = not (os.geteuid() == 0 and run.out_log.is_symlink())
    tail = read_region_tail(run.out_log, 0, 64 * 1024) if log_is_ours else b""
    record = FailureRecord(
        step=state.step or state.resume_step,
        exit_code=None if info is None else info.exit_code,
        signal=None if info is None else info.signal,
        attempt=max(1, state.attempt),
        time=now_iso(),
        reason=str(reason),
        message=message,
        last_lines=last_lines(tail, _TAIL_LINES),
        device=device or state.device_uuid,
    )
    atomic_write_json(run.failed_marker, record.to_json())
    runlock.give_to_run_owner(run.failed_marker, run.root)  # written by root (an admin's cancel): still the user's
    # The log's last word: the supervisor may have taken SLURM's SIGTERM (scancel, TIMEOUT) for the
    # queue's and said the run goes again; it does not.
    if not log_is_ours:
        return
    with contextlib.suppress(OSError):
        append_queue_line(run.out_log, f"{HEADER_PREFIX} {now_iso()} failed ({reason}): {message}; it does not go"
                          " again by itself, whatever a line above says: see lfads.failed (`runqueue requeue` to run"
                          " again)\n")


def _mark_interrupted(run: RunPaths, message: str) -> None:
    """As the supervisor would have: the attempt is not counted and resumes at the step it was in."""
    state = load_state(run)
    if state.phase != Phase.RUNNING:
        return  # the supervisor recorded something after all
    state.phase = Phase.INTERRUPTED
    state.resume_step = state.step or state.resume_step
    state.reason = "interrupted"
    state.message = message
    state.ended_at = time.time()
    state.history.append({"attempt": state.attempt, "step": state.step, "device": state.device_uuid, "reason": "interrupted",
                          "exit_code": None, "signal": None, "ended_at": state.ended_at})
    try:
        save_state(run, state)
    except OSError:
        pass  # a run folder we cannot write: the queue starts it again from state.json's last word
