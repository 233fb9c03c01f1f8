"""Runs as SLURM jobs: one sbatch job per attempt, whose payload is the run's own supervisor.

The same supervision as locally (runqueue.supervisor: steps, lfads.out headers, retries from the
failed step, markers) executes inside the job, so nothing depends on SLURM's accounting; the job
writes the markers itself and the queue never decides "done" from SLURM's state.

Exactly once: a run is submitted only under its per-run submission lock, after checking its
markers, its run lock and `.runqueue/slurm.json`; the new submission's token is recorded *before*
sbatch (the job refuses to run if slurm.json names another token) and its job id right after.
Another queue, or this one restarted, finds the record and watches that job instead of
submitting again. Retries are new submissions, made by the queue when the retry comes due.

Watching: one JobWatcher thread (batched squeue with back-off) per executor; a job's end makes a
pipe readable, which the scheduler's selector treats like a local supervisor's pidfd.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import runqueue
from runqueue import runlock
from runqueue.atomicio import atomic_write_bytes
from runqueue.devices.model import Device
from runqueue.errors import RunqueueError
from runqueue.executors.base import Executor, PendingStart, RunHandle
from runqueue.procinfo import live_started_at, open_file_limit
from runqueue.runstate import Phase, Reason, load_state
from runqueue.slurm.commands import SlurmCommands, SlurmError
from runqueue.slurm.jobscript import JobScriptInputs, render_job_script
from runqueue.slurm.options import SlurmOptions, job_time_limits
from runqueue.slurm.outcome import settle_job_end
from runqueue.slurm.paths import SlurmPaths
from runqueue.slurm.records import (
    STOP_CANCEL,
    STOP_INTERRUPT,
    SubmissionRecord,
    active_submission,
    load_job_report,
    load_submission,
    save_submission,
    submission_lock,
)
from runqueue.slurm.watcher import JobWatcher
from runqueue.supervisor_spec import SupervisorSpec

_PACKAGE_PARENT = str(Path(runqueue.__file__).resolve().parent.parent)
_FDS_PER_JOB = 3  # its watch's pipe (two ends) and the queue's handle on its run folder
_FD_MARGIN = 256  # sbatch's pipes, the claims, inotify, logs: what the queue needs besides
_SBATCH_PAUSE_S = 5.0  # after sbatch failed: defer further submissions this long, not one timeout per run
# After an sbatch with no answer (slurmctld hung or swamped): a full command timeout, so a hung
# controller holds the queue's loop at most about half of the time, not nearly all of it.
_SBATCH_PAUSE_AFTER_NO_ANSWER_S = 60.0
_ESCALATE_AFTER_S = 30.0  # beyond the kill grace: a job whose supervisor ignores a stop gets scancel


@dataclass
class _Job:
    job_id: int | None
    token: str
    submitted_at: float
    key: int = 0  # the watcher's


class SlurmExecutor(Executor):
    name = "slurm"

    def __init__(self, options: SlurmOptions | None = None, *, kill_grace_s: float = 10.0, commands: SlurmCommands | None = None) -> None:
        self.options = options or SlurmOptions()
        self.kill_grace_s = kill_grace_s
        self.commands = commands or SlurmCommands()
        self.commands.check_available()
        self.python = os.path.abspath(sys.executable)
        self.watcher = JobWatcher(self.commands, report_problem=self._report)
        self._sbatch_paused_until = 0.0
        self._sbatch_error = ""

    # ------------------------------------------------------------------ scheduler hooks
    def placement_device(self) -> Device:
        gpus = self.options.gpus
        name = f"SLURM job, {gpus} GPU{'s' * (gpus != 1)}" if gpus else "SLURM job, CPU only"
        return Device(uuid="slurm", index=0, name=name, is_gpu=gpus > 0)

    def capacity(self, watched: int) -> int | None:
        # Each watched job holds a pipe, and the queue a handle on its folder: never more jobs than
        # descriptors (what is left once a margin for everything else is kept).
        fits = max(0, (open_file_limit() - _FD_MARGIN) // _FDS_PER_JOB - watched)
        limit = self.options.max_submitted
        return fits if limit is None else max(0, min(limit - watched, fits))

    def submitted(self, run_dir: Path) -> bool:
        return active_submission(SlurmPaths.of(run_dir)) is not None

    def waiting(self, handle: RunHandle) -> bool:
        info = self.watcher.last_seen(handle.native.key)
        if info is not None:
            return info.state == "PENDING"
        # Not asked SLURM yet (just submitted, or re-adopted after a restart): a job that has
        # started says so in its report.
        report = load_job_report(SlurmPaths.of(handle.run_dir))
        return report is None or report.token != handle.native.token

    def started_text(self, handle: RunHandle, device: Device) -> str:
        job = handle.native.job_id
        if job is None:
            return "given to sbatch, which did not answer in time; its job is looked for by its --comment"
        return f"submitted as SLURM job {job}"

    def adopted_text(self, handle: RunHandle) -> str:
        job = handle.native.job_id
        return f"SLURM job {job}" if job is not None else "a submission whose SLURM job id was not recorded"

    def first_stop_text(self, running: int) -> str:
        return (
            f"stopping: no more jobs are submitted; waiting for {running} submitted run(s). They keep running in "
            "SLURM even if this queue goes away (a later `runqueue run` picks them up). Press Ctrl-C again to "
            "scancel them (recorded as interrupted; they go again next time), or `runqueue cancel RUN` to cancel one."
        )

    # ------------------------------------------------------------------ starting
    def launch(self, spec: SupervisorSpec) -> PendingStart:
        run_dir = Path(spec.run_dir)
        paths = SlurmPaths.of(run_dir)
        if not paths.run.train_script.is_file():  # deleted or moved meanwhile: no job may recreate it
            return PendingStart(run_dir, spec, {"status": "error", "reason": Reason.FOLDER_VANISHED, "final": True,
                                                "message": f"{run_dir} is gone (deleted, or moved); not submitted"})
        if time.monotonic() < self._sbatch_paused_until:
            return PendingStart(run_dir, spec, {"status": "deferred", "message": self._sbatch_error})
        try:
            with submission_lock(paths):
                return self._submit_locked(spec, paths)
        except OSError as error:
            return PendingStart(run_dir, spec, {"status": "error", "message": f"cannot write {paths.run.runtime_dir}: {error.strerror}"})
        except RunqueueError as error:  # this run's folder cannot be given to sbatch: it alone waits
            return PendingStart(run_dir, spec, {"status": "error", "final": True, "message": str(error)})

    def _submit_locked(self, spec: SupervisorSpec, paths: SlurmPaths) -> PendingStart:
        run_dir = paths.run.root
        if os.path.lexists(paths.run.done_marker) or os.path.lexists(paths.run.failed_marker):
            return PendingStart(run_dir, spec, {"status": "finished"})
        previous = load_submission(paths)
        if runlock.is_held(paths.run.lock) or (previous is not None and previous.active):
            return PendingStart(run_dir, spec, {"status": "busy"})  # the scheduler adopts it instead
        limits = job_time_limits(spec.time_limit_s, self.options.time_s, spec.kill_grace_s)
        # The device is whatever SLURM gives the job; runqueue.slurm.job fills it in there.
        spec = replace(spec, time_limit_s=limits.supervisor_s, device_uuid="slurm", device_name="assigned by SLURM",
                       device_env={}, device_free_mb=None)
        token = secrets.token_hex(8)
        script = render_job_script(
            JobScriptInputs(
                run_dir=run_dir,
                token=token,
                spec_json=spec.to_argv_json(),
                options=self.options,
                sbatch_minutes=limits.sbatch_minutes,
                python=self.python,
                package_parent=_PACKAGE_PARENT,
            )
        )
        atomic_write_bytes(paths.job_script, script.encode(), durable=False)
        # The token goes on record before sbatch: the job checks it, so a job submitted by a
        # queue that died before recording the id still runs (and is found by its comment).
        record = SubmissionRecord(token=token, job_id=None, queue_id=spec.queue_id, submitted_at=time.time(),
                                  lost=0 if previous is None else previous.lost)
        save_submission(paths, record)
        job_id: int | None
        try:
            job_id = self.commands.sbatch(paths.job_script, self.options.extra)
        except SlurmError as error:
            if not _maybe_accepted(str(error)):
                return self._not_submitted(run_dir, spec, paths, previous, error)
            # A busy slurmctld may have taken the job without answering: it is not submitted twice.
            # The watcher's thread looks for it by its comment (recording its id), or finds that it
            # never reached SLURM and the run is pending again; asking here could hold the loop
            # for another command timeout.
            job_id = None
            self._sbatch_paused_until = time.monotonic() + _SBATCH_PAUSE_AFTER_NO_ANSWER_S
            self._sbatch_error = f"not submitted, trying again later: {error}"
        else:
            record = replace(record, job_id=job_id)
            save_submission(paths, record)
        state = load_state(paths.run)
        attempt, resume = _next_attempt(state.phase, state.attempt, state.resume_step, state.step)
        reply = {"status": "submitted", "job_id": job_id, "attempt": attempt, "resume_step": resume}
        return PendingStart(run_dir, spec, reply, native=_Job(job_id, token, record.submitted_at))

    def _not_submitted(self, run_dir: Path, spec: SupervisorSpec, paths: SlurmPaths, previous: SubmissionRecord | None,
                       error: SlurmError) -> PendingStart:
        """Put the record back as it was, and say whether to try again later or give up."""
        if previous is not None:
            save_submission(paths, previous)
        else:
            with contextlib.suppress(FileNotFoundError):
                paths.submission.unlink()
        if not _is_transient(str(error)):
            # SLURM refuses this job as asked (partition, GPUs, time…): asking again will not help.
            message = (f"SLURM refused the job: {error}; asked for {self.options.asked()}: check them against"
                       " `sinfo` and your account's limits (`sacctmgr show assoc user=$USER`)")
            return PendingStart(run_dir, spec, {"status": "error", "message": message, "final": True})
        self._sbatch_paused_until = time.monotonic() + _SBATCH_PAUSE_S
        self._sbatch_error = f"not submitted, trying again later: {error}"
        return PendingStart(run_dir, spec, {"status": "deferred", "message": self._sbatch_error})

    def await_replies(self, pending: list[PendingStart], timeout_s: float) -> None:
        pass  # sbatch answered in launch(); the job itself starts whenever SLURM decides

    def confirm(self, pending: PendingStart) -> RunHandle:
        job: _Job = pending.native
        job.key, wait_fd = self.watcher.add(pending.run_dir, job.job_id, job.token, job.submitted_at)
        attempt = pending.reply.get("attempt")
        return RunHandle(pending.run_dir, 0, None, None, False, wait_fd, attempt=attempt if isinstance(attempt, int) else None, native=job)

    def abandon(self, pending: PendingStart) -> None:
        job: _Job | None = pending.native
        if job is None or job.job_id is None:
            return
        self.commands.cancel(job.job_id)
        paths = SlurmPaths.of(pending.run_dir)
        with contextlib.suppress(OSError), submission_lock(paths):
            record = load_submission(paths)
            if record is not None and record.token == job.token:
                save_submission(paths, record.settle("abandoned by the queue before it was watched"))

    def adopt(self, run_dir: Path) -> RunHandle | None:
        paths = SlurmPaths.of(run_dir)
        record = load_submission(paths)
        if record is None or not record.active:
            return None
        job = _Job(record.job_id, record.token, record.submitted_at)
        job.key, wait_fd = self.watcher.add(run_dir, job.job_id, job.token, job.submitted_at)
        report = load_job_report(paths)
        device = report.device_uuid if report is not None and report.token == record.token else None
        attempt = load_state(paths.run).attempt or None
        return RunHandle(run_dir, 0, None, device, True, wait_fd, attempt=attempt, native=job)

    def run_by_another_queue(self, handle: RunHandle) -> str | None:
        """An adopted job submitted by another queue that is still alive (its record's "host:pid",
        started before the submission: a reused pid is newer) is that queue's to wait for and to
        stop. A queue on another host cannot be asked whether it lives: its jobs are watched as ours
        (output, time limit), as the local executor does with another host's runs."""
        if not handle.adopted:
            return None
        record = load_submission(SlurmPaths.of(handle.run_dir))
        if record is None:
            return None
        host, _, pid_text = record.queue_id.rpartition(":")
        if host != socket.gethostname() or not pid_text.isdigit():
            return None
        pid = int(pid_text)
        started = None if pid == os.getpid() else live_started_at(pid)
        if started is None or started > record.submitted_at + 1.0:  # a tick of slack on both clocks
            return None
        return f"queue pid {pid}"

    # ------------------------------------------------------------------ ending
    def collect(self, handle: RunHandle) -> int | None:
        job: _Job = handle.native
        info = self.watcher.remove(job.key)
        with contextlib.suppress(OSError):
            os.close(handle.wait_fd)
        handle.wait_fd = -1
        if info is None:
            return None
        paths = SlurmPaths.of(handle.run_dir)
        if not paths.run.root.is_dir():
            return None  # the scheduler drops a vanished run
        try:
            with submission_lock(paths):
                record = load_submission(paths)
                if record is None or record.token != job.token or not record.active:
                    return None  # another queue settled this job already
                if record.job_id is None and info.job_id:
                    record = replace(record, job_id=info.job_id)
                ending = settle_job_end(paths, record, info)
                save_submission(paths, replace(record.settle(ending.text), lost=ending.lost))
        except OSError as error:
            self._report(f"{handle.run_dir}: cannot record how SLURM job {job.job_id} ended: {error.strerror}")
        return None

    def interrupt(self, handle: RunHandle) -> None:
        self._stop(handle, STOP_INTERRUPT)

    def cancel(self, handle: RunHandle) -> None:
        self._stop(handle, STOP_CANCEL)

    def _stop(self, handle: RunHandle, how: str) -> None:
        job: _Job = handle.native
        paths = SlurmPaths.of(handle.run_dir)
        with contextlib.suppress(OSError), submission_lock(paths):
            record = load_submission(paths)
            if record is not None and record.token == job.token and record.active:
                # The watcher finds by its comment a job whose sbatch never reported its id.
                job.job_id = job.job_id or record.job_id or self.watcher.job_id(job.key)
                save_submission(paths, replace(record, stop_requested=how, job_id=record.job_id or job.job_id))
        # Running: the supervisor (the job's batch process) stops the steps and records it
        # (USR1 = cancel, TERM = interrupt). Pending: SLURM drops the job. Sent by the watcher's
        # thread: SLURM's commands may take a minute each when slurmctld hangs.
        self.watcher.request_stop(job.key, "USR1" if how == STOP_CANCEL else "TERM",
                                  escalate_after_s=self.kill_grace_s + _ESCALATE_AFTER_S)

    def close(self) -> None:
        self.watcher.close()

    @staticmethod
    def _report(text: str) -> None:
        # From the watcher thread too: one plain line on stderr (the console is the main thread's).
        # A closed stderr (`runqueue run … | head`) must not end the watcher thread with it.
        with contextlib.suppress(OSError, ValueError):
            print(f"runqueue: {text}", file=sys.stderr, flush=True)


# sbatch errors that pass by themselves (controller busy or restarting, submit limits reached).
_TRANSIENT = ("unable to contact", "timed out", "socket", "connection refused", "try again", "temporarily",
              "maxsubmit", "job submit limit", "grpsubmit", "did not answer", "slurm_persist", "zero bytes were transmitted")


# Of those, the ones where slurmctld may have taken the job all the same (it did not answer in time).
_NO_ANSWER = ("timed out", "did not answer", "zero bytes were transmitted")


def _is_transient(message: str) -> bool:
    lowered = message.lower()
    return any(marker in lowered for marker in _TRANSIENT)


def _maybe_accepted(message: str) -> bool:
    lowered = message.lower()
    return any(marker in lowered for marker in _NO_ANSWER)


def _next_attempt(phase: str | None, attempt: int, resume: str | None, step: str | None) -> tuple[int, str | None]:
    """The attempt number and first step the job's supervisor will use (as Supervisor._begin_attempt decides)."""
    if phase == Phase.RETRY_WAIT:
        return attempt + 1, resume
    if phase in (Phase.INTERRUPTED, Phase.RUNNING):
        return max(1, attempt), resume or step
    return 1, None
