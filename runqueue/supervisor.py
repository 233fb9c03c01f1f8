"""The per-run supervisor: one small process per run that owns the run while it executes.

It takes the run lock, runs the steps in order (`bash <script>` in the run folder), appends their
output to lfads.out with a header per step and attempt, keeps `.runqueue/state.json` current and
writes lfads.done / lfads.failed. It runs in its own session, so a queue that dies or restarts loses
no run; the queue only decides *where* it runs (the executor) and watches it end.

Start-up handshake with the queue (optional, over `--control-fd`, a socket): after taking the lock
and re-checking the markers the supervisor sends one JSON line (`{"status": "locked", ...}`, or
`busy` / `finished` / `error`), then waits for the queue's `go` line, which the queue sends after
recording its host-wide claim. If the queue vanishes before that, the supervisor lets go of the run
without running anything, so no run ever executes unclaimed.

Exit status: see the EXIT_* constants; the markers and state.json remain the truth.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from runqueue import legacy, runlock
from runqueue.atomicio import atomic_write_json, read_json_object
from runqueue.devices.claims import ClaimStore
from runqueue.devices.errors import ClaimError
from runqueue.devices.model import device_label
from runqueue.durations import LONGEST_GRACE_S
from runqueue.failure_reasons import log_open_problem, needs_the_user, reason_for, step_failure
from runqueue.layout import SUPERVISOR_LOOKS_EVERY_S, RunPaths, folder_identity
from runqueue.outlog import ends_mid_line, open_for_append
from runqueue.procinfo import (
    account_name,
    become_subreaper,
    process_start_time,
    reap_orphans,
    restore_open_file_limit,
    steps_started_for,
)
from runqueue.root_safety import unsafe_as_root
from runqueue.runstate import (
    CONTINUING_PHASES,
    FailureRecord,
    PersistedState,
    Phase,
    Reason,
    iso_time,
    load_state,
    now_iso,
    resume_point,
    save_state,
)
from runqueue.slurm.paths import SlurmPaths
from runqueue.slurm.records import STOP_CANCEL, active_submission, load_submission
from runqueue.step_process import RunProcesses, spawn_step
from runqueue.steps import (
    StepScriptError,
    check_step_script,
    last_lines,
    plan_steps,
    read_region_tail,
)
from runqueue.supervisor_spec import SupervisorSpec

EXIT_SUCCEEDED = 0
EXIT_FAILED = 1  # attempts used up: lfads.failed written
EXIT_RETRY = 2  # failed, attempts remain (state.json says from which step and when)
EXIT_INTERRUPTED = 3
EXIT_CANCELLED = 4
EXIT_NOT_STARTED = 5  # lock held elsewhere, already finished, or the queue went away first
EXIT_VANISHED = 6  # the run folder disappeared
EXIT_ERROR = 7

HEADER_PREFIX = "### runqueue"
# How an attempt's last line in lfads.out reads when its supervisor ended it (see _fail, _succeed, ...).
_ENDINGS = (" failed (", " done: ", " interrupted by the queue", " cancelled during")
_OOM_SCAN_BYTES = 1 << 20
_FOLDER_CHECK_MS = int(SUPERVISOR_LOOKS_EVERY_S * 1000)  # folder still there? a cancel.json for us?
_FAILED_TAIL_LINES = 30
_MAX_BACKOFF_S = 600.0
_GO_TIMEOUT_S = 60.0
_OWN_SIGNAL_WAIT_S = 1.0  # after a step killed by a signal: how long ours may trail it


def retry_backoff(first_s: float, attempt: int) -> float:
    """The wait after failed attempt `attempt` (1, 2, ...): `first_s` doubled for each attempt after
    the first, up to 10 minutes or `first_s` if that is longer. The exponent stops where the cap has
    long been reached, so --retries 2000 cannot overflow a float."""
    return min(max(_MAX_BACKOFF_S, first_s), first_s * 2.0 ** min(max(attempt - 1, 0), 64))


def _swallow_signal(_signum: int, _frame: object) -> None:
    pass


class _DiskFull(Exception):
    pass


class _Vanished(Exception):
    pass


class Supervisor:
    def __init__(self, spec: SupervisorSpec, control: socket.socket | None) -> None:
        self.spec = spec
        self.paths = RunPaths(Path(spec.run_dir))
        self.control = control
        self.lock_fd = -1
        self.log_fd = -1
        self.steps: list[str] = []  # this attempt's step scripts, from where it resumes
        self.state = PersistedState()
        self.max_attempts = max(1, spec.max_attempts)
        self.started = time.monotonic()
        self.deadline = None if spec.time_limit_s is None else self.started + spec.time_limit_s
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.pending_signals: list[int] = []
        self.previous = PersistedState()
        self.processes = RunProcesses(own_session=False)  # until run() knows whose session it is
        self.folder_id: tuple[int, int] | None = None  # (st_dev, st_ino) of the run folder we locked
        self.lost = False  # the last supervisor ended without a word (see _begin_attempt)
        self.stop_grace_s = spec.kill_grace_s  # SIGTERM to SIGKILL; `runqueue cancel --grace` may ask another

    # ----------------------------------------------------------------- start-up
    def run(self) -> int:
        restore_open_file_limit()  # the steps get the limit the queue found, not the one it raised for itself
        self._install_signal_handlers()
        own_session = os.getsid(0) == os.getpid()
        self.processes = RunProcesses(own_session)
        if own_session:
            become_subreaper()
        if not self.paths.root.is_dir():
            self._tell({"status": "error", "reason": Reason.FOLDER_VANISHED, "message": "run folder is gone"})
            return EXIT_VANISHED
        try:
            fd = runlock.try_acquire(self.paths.lock)
        except OSError as error:
            fix = ""
            if isinstance(error, PermissionError):
                fix = f"the queue writes its lock, state and log in the run folder: make it writable by {account_name()}"
            elif error.errno == errno.EROFS:
                fix = "the queue writes its lock, state and log in the run folder: remount it read-write"
            verb = "cannot write" if self.paths.lock.exists() else "cannot create"
            # Permissions and a read-only mount do not fix themselves within a second: no quick retries
            # (a watching queue still looks again now and then).
            return self._cannot_write("lock", self.paths.lock, error, verb=verb, otherwise=fix, final=bool(fix))
        if fd is None:
            self._tell({"status": "busy"})
            return EXIT_NOT_STARTED
        self.lock_fd = fd
        self.folder_id = folder_identity(self.paths.root)
        # Markers are re-checked under the lock: another queue may have finished the run
        # between our caller's scan and now.
        if os.path.lexists(self.paths.done_marker) or os.path.lexists(self.paths.failed_marker):
            self._tell({"status": "finished"})
            return EXIT_NOT_STARTED
        # A SLURM queue on the same tree handed this run to a job (checked under our lock, so a
        # submission made just before is seen): that job runs it, not us.
        submission = active_submission(SlurmPaths(self.paths))
        if submission is not None and submission.token != self.spec.batch_token:
            self._tell({"status": "busy", "slurm_job_id": submission.job_id})
            return EXIT_NOT_STARTED
        if self._steps_of_a_lost_lock():
            os.close(fd)
            self.lock_fd = -1
            self._tell({"status": "busy"})
            return EXIT_NOT_STARTED
        try:
            runlock.write_holder(fd)
        except OSError as error:
            return self._cannot_write("lock", self.paths.lock, error, otherwise="remove it")
        try:
            self._begin_attempt()
            self.steps = plan_steps(self.paths, self.state.resume_step)  # told to the queue, then run
        except OSError as error:
            return self._cannot_write("state", self.paths.state, error)
        if not self._handshake():
            self._undo_begin()
            return EXIT_NOT_STARTED
        try:
            return self._run_attempt()
        except _Vanished:
            return EXIT_VANISHED

    def _cannot_write(self, reason: str, path: Path, error: OSError, *, verb: str = "cannot write",
                      otherwise: str = "", final: bool = False) -> int:
        """Tell the queue that the run cannot start because `path` cannot be written (the fix: free
        space when the disk is full, else `otherwise`); `final`: not worth a quick retry."""
        fix = "free space on that disk" if reason_for(error) is Reason.DISK_FULL else otherwise
        message = self.paths.runtime_dir_obstacle() or f"{verb} {path}: {error.strerror}" + (f"; {fix}" if fix else "")
        self._tell({"status": "error", "reason": reason, "message": message, "final": final})
        return EXIT_ERROR

    def _steps_of_a_lost_lock(self) -> bool:
        """Steps of an earlier attempt still running although we could take the lock: their supervisor
        was killed and then the lock (or all of `.runqueue/`) deleted, so they hold a lock nobody can
        see. Starting now would run the run twice at once. Only a run that ran before (it has a log)
        is looked for, so a fresh run's start costs no scan of the process table."""
        return os.path.lexists(self.paths.out_log) and bool(steps_started_for(str(self.paths.root)))

    def _install_signal_handlers(self) -> None:
        # Handlers only record; the wait loop acts (the wake-up pipe ends its poll at once).
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
            signal.signal(signum, self._record_signal)
        # A hang-up is not for us, but is swallowed by a handler rather than ignored: an ignored
        # signal stays ignored across exec, and the steps (and whatever they start) should keep the
        # default. SIGPIPE's default comes back for them through Popen's restore_signals.
        signal.signal(signal.SIGHUP, _swallow_signal)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)

    def _record_signal(self, signum: int, _frame: object) -> None:
        self.pending_signals.append(signum)

    def _begin_attempt(self) -> None:
        previous = load_state(self.paths)
        resume = resume_point(previous)
        attempt = 1
        history = previous.history
        if previous.phase == Phase.RETRY_WAIT:
            attempt = previous.attempt + 1
        elif previous.phase in CONTINUING_PHASES:
            # Stopped by the queue, or its supervisor was lost (reboot, kill -9): not the run's
            # fault, so the attempt is not counted; it resumes where it stopped.
            attempt = max(1, previous.attempt)
        # Any other phase with no marker means the user requeued the run: start afresh.
        self.max_attempts = max(self.max_attempts, attempt)
        pid = os.getpid()
        self.previous = previous
        self.lost = previous.phase == Phase.RUNNING and not _ended_with_a_word(self.paths.out_log)
        self.state = PersistedState(
            phase=Phase.RUNNING,
            attempt=attempt,
            step=None,
            resume_step=resume,
            device_uuid=self.spec.device_uuid,
            device_name=self.spec.device_name,
            device_free_mb=self.spec.device_free_mb,
            supervisor_pid=pid,
            supervisor_start_time=process_start_time(pid),
            host=socket.gethostname(),
            queue_id=self.spec.queue_id,
            started_at=time.time(),
            time_limit_s=self.spec.time_limit_s,
            kill_grace_s=self.spec.kill_grace_s,
            history=history,
        )
        save_state(self.paths, self.state)

    def _undo_begin(self) -> None:
        try:
            save_state(self.paths, self.previous)
        except OSError:
            pass

    def _tell(self, message: dict[str, object]) -> None:
        if self.control is None:
            return
        try:
            self.control.sendall((json.dumps(message) + "\n").encode())
        except OSError:
            pass

    def _handshake(self) -> bool:
        """Report the lock to the queue and wait for its claim; True when the run may start."""
        if self.control is None:
            return True
        self._tell(
            {
                "status": "locked",
                "pid": os.getpid(),
                "attempt": self.state.attempt,
                "resume_step": next(iter(self.steps), None) if self.state.resume_step else None,
                "supervisor_lost": self.lost,
            }
        )
        self.control.settimeout(_GO_TIMEOUT_S)
        try:
            answer = self.control.recv(64)
        except OSError:
            answer = b""
        self.control.close()
        self.control = None
        return answer.startswith(b"go")

    # ----------------------------------------------------------------- the attempt
    def _run_attempt(self) -> int:
        try:  # readable where allowed: a header must not be glued to a line a step left unfinished
            self.log_fd = open_for_append(self.paths.out_log)
        except OSError as error:
            reason, message = log_open_problem(self.paths.out_log, error)
            # What only the user can mend fails at once: a retry would meet the same folder, fifo or
            # permissions. Passing trouble (EMFILE, EIO, ENOMEM, …) and a full disk are retried.
            return self._fail(None, None, None, reason, message, retry=not needs_the_user(error, self.paths.out_log))
        # Our own tracebacks belong in the run's log, not in a terminal that may be gone.
        os.dup2(self.log_fd, 2)
        steps = self.steps
        resume = self.state.resume_step
        if self.lost:  # never resumed silently: the log says what happened
            self._log_line(f"{HEADER_PREFIX} {now_iso()} the last supervisor (pid {self.previous.supervisor_pid} on"
                           f" {self.previous.host}) is gone while it ran {self.previous.step or 'the run'} (killed,"
                           " crashed, or the machine restarted); going on from where it was, attempt not counted\n")
        if resume is not None and steps[:1] != [resume]:
            going_on = f"going on with {steps[0]}" if steps else "no step after it is left"
            self._log_line(f"{HEADER_PREFIX} {now_iso()} {resume}, where the last attempt stopped, is gone; {going_on}\n")
        for step in steps:
            outcome = self._run_step(step)
            if outcome is not None:
                return outcome
        return self._succeed()

    def _run_step(self, step: str) -> int | None:
        """Run one step; None when it succeeded, else the supervisor's exit status."""
        self.state.step = step
        self.state.resume_step = step
        self._save()
        script = self.paths.root / step
        try:
            text = check_step_script(script)
        except StepScriptError as error:
            self._log_line(f"{self._header(step)}\n")
            return self._fail(step, None, None, error.reason, str(error))
        # Checked by the queue before it placed the run; again here, just before the step, as root.
        unsafe = unsafe_as_root(self.paths)
        if unsafe is not None:
            self._log_line(f"{self._header(step)}\n")
            return self._fail(step, None, None, Reason.UNSAFE_AS_ROOT, unsafe, retry=False)
        is_legacy = legacy.is_legacy_script(text)
        legacy_shims = is_legacy or legacy.calls_run_lfads(text)
        refused = legacy.refusal(self.paths, step, text) if legacy_shims else None
        if refused is not None:
            self._log_line(f"{self._header(step)}\n")
            return self._fail(step, None, None, Reason.LEGACY_SCRIPT_REFUSED, refused, retry=False)
        pipefail = is_legacy or legacy.pipes_into_tee(text)
        note = (" (legacy script: tee shim, pipefail)" if is_legacy else " (pipes into tee: pipefail)" if pipefail
                else " (legacy script: run_lfads.py shim)" if legacy_shims else "")
        try:
            self._write_log(f"{self._header(step)}{note}\n")
        except _DiskFull:
            return self._fail(step, None, None, Reason.DISK_FULL, f"cannot write {self.paths.out_log}: no space left")
        start_offset = os.fstat(self.log_fd).st_size
        stop = self._stop_requested()  # asked to stop between two steps: do not start the next
        if stop == "interrupt":
            return self._interrupted(step)
        if stop == "cancel":
            return self._cancelled(step, None, None)
        try:
            process = spawn_step(self.paths, self.spec, self.state.attempt, step, legacy_shims, pipefail,
                                 self.log_fd, self.lock_fd)
        except OSError as error:
            return self._fail(step, None, None, Reason.SPAWN_FAILED, f"cannot start bash {step}: {error.strerror}")
        stop = self._wait(process)
        code = process.returncode
        exit_code = code if code is not None and code >= 0 else None
        signum = -code if code is not None and code < 0 else None
        if stop == "interrupt":
            return self._interrupted(step)
        if stop == "cancel":
            return self._cancelled(step, exit_code, signum)
        if not self._folder_is_ours():
            self._vanished()
        if stop == "time_limit":
            limit = self.spec.time_limit_s or 0
            return self._fail(step, exit_code, signum, Reason.TIME_LIMIT, f"time limit of {limit:g}s exceeded; every process of the run was stopped")
        if code == 0:
            if is_legacy:
                missing = legacy.missing_outputs(self.paths, text)
                if missing:
                    return self._fail(step, 0, None, Reason.LEGACY_OUTPUT_MISSING, "legacy script exited 0 but did not write " + ", ".join(missing))
            return None
        tail = read_region_tail(self.paths.out_log, start_offset, _OOM_SCAN_BYTES)
        reason, message = step_failure(step, exit_code, signum, tail, self.spec.device_uuid, self.paths.root)
        return self._fail(step, exit_code, signum, reason, message, tail)

    def _wait(self, process: subprocess.Popen[bytes]) -> str | None:
        """Wait for the step; returns None, "interrupt", "cancel", "time_limit" or "vanished"."""
        pidfd = os.pidfd_open(process.pid)
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        poller.register(self.wake_r, select.POLLIN)
        stop: str | None = None
        try:
            while True:
                stop = self._stop_requested()
                if stop is not None:
                    break
                # A look at the folder every few seconds: deleted under a running step, the step
                # would otherwise hold the device claim and the run lock until it ends by itself.
                timeout_ms = _FOLDER_CHECK_MS
                if self.deadline is not None:
                    remaining = self.deadline - time.monotonic()
                    if remaining <= 0:
                        stop = "time_limit"
                        break
                    timeout_ms = min(int(remaining * 1000) + 1, timeout_ms)
                ready = {fd for fd, _ in poller.poll(timeout_ms)}
                if not ready and not self._folder_unreadable() and not self._folder_is_ours():
                    stop = "vanished"
                    break
                if not ready and self._cancel_asked_in_writing():
                    self._take_cancel_grace()
                    stop = "cancel"
                    break
                if self.wake_r in ready:
                    self._drain_wake()
                if pidfd in ready:
                    stop = self._stop_that_came_with_the_end(process)
                    break
            # Stopped: every process of the run. Ended: whatever the step left running, which would
            # keep the GPU, the run lock and so the device claim.
            if self.processes.stop(process, pidfd, self.stop_grace_s) and stop is None:
                self._log_line(f"{HEADER_PREFIX} {now_iso()} processes the step left behind ignored SIGTERM for"
                               f" {self.stop_grace_s:g}s; killed\n")
        finally:
            os.close(pidfd)
        process.wait()
        reap_orphans()
        return stop

    def _stop_that_came_with_the_end(self, process: subprocess.Popen[bytes]) -> str | None:
        """A step killed by SIGTERM/SIGINT/SIGKILL while we are being stopped too (SLURM signals every
        process of a job it ends or moves off a failed node; a system shutdown): our own signal may
        land a moment after the step's end. Waited for briefly, it makes this an interruption that
        goes again, not a failed attempt."""
        stop = self._stop_requested()
        code = process.poll()
        if stop is None and code is not None and -code in (signal.SIGTERM, signal.SIGINT, signal.SIGKILL):
            if select.select([self.wake_r], [], [], _OWN_SIGNAL_WAIT_S)[0]:
                self._drain_wake()
            stop = self._stop_requested()
        return stop

    def _drain_wake(self) -> None:
        try:
            while os.read(self.wake_r, 64):
                pass
        except BlockingIOError:
            pass

    def _stop_requested(self) -> str | None:
        while self.pending_signals:
            signum = self.pending_signals.pop(0)
            if signum == signal.SIGUSR1:
                self._take_cancel_grace()
                return "cancel"
            if signum in (signal.SIGTERM, signal.SIGINT):
                if self._cancel_recorded():
                    self._take_cancel_grace()
                    return "cancel"
                return "interrupt"
        return None

    def _take_cancel_grace(self) -> None:
        """`runqueue cancel --grace` leaves its grace for us (and only us: our pid, or our SLURM submission's token)."""
        request = self._cancel_request_for_us()
        with contextlib.suppress(OSError):
            self.paths.cancel_request.unlink()
        grace = None if request is None else request.get("grace_s")
        if isinstance(grace, int | float) and not isinstance(grace, bool) and 0 <= grace <= LONGEST_GRACE_S:
            self.stop_grace_s = float(grace)

    def _cancel_asked_in_writing(self) -> bool:
        """`runqueue cancel` by an account that may not signal us (a lab member, the queue being the
        service's): its cancel.json names us, and was written after this attempt began (one a refused
        cancel left before it is stale)."""
        if not os.path.lexists(self.paths.cancel_request):
            return False
        request = self._cancel_request_for_us()
        asked = None if request is None else request.get("requested_at")
        return isinstance(asked, int | float) and asked >= (self.state.started_at or 0.0)

    def _cancel_request_for_us(self) -> dict[str, object] | None:
        request = None
        with contextlib.suppress(OSError, ValueError):
            request = read_json_object(self.paths.cancel_request)
        if request is None or not (request.get("supervisor_pid") == os.getpid() or (
                self.spec.batch_token is not None and request.get("batch_token") == self.spec.batch_token)):
            return None
        return request

    def _cancel_recorded(self) -> bool:
        """Inside a SLURM job: `runqueue cancel` records the cancel in .runqueue/slurm.json before it
        signals, and when it cannot send USR1 (the job was not RUNNING yet at its look) it scancels:
        SLURM's SIGTERM then means this cancel, not an interruption that goes again."""
        if self.spec.batch_token is None:
            return False
        record = load_submission(SlurmPaths(self.paths))
        return record is not None and record.token == self.spec.batch_token and record.stop_requested == STOP_CANCEL

    # ----------------------------------------------------------------- endings
    def _succeed(self) -> int:
        if not self._folder_is_ours():
            self._vanished()
        record: dict[str, object] = {
            "finished": now_iso(),
            "started": iso_time(self.state.started_at),  # this attempt's start
            "host": self.state.host,
            "attempt": self.state.attempt,
            "device": self.spec.device_uuid,
            "seconds": round(time.monotonic() - self.started, 3),
            "exit_code": 0,
        }
        if self.spec.device_index is not None:
            record["device_index"] = self.spec.device_index
        try:
            atomic_write_json(self.paths.done_marker, record)
        except OSError as error:
            return self._fail(self.state.step, 0, None, reason_for(error), f"cannot write {self.paths.done_marker}: {error.strerror}")
        self.state.phase = Phase.SUCCEEDED
        self.state.resume_step = None
        self.state.exit_code = 0
        self._end_attempt(None)
        self._log_line(f"{HEADER_PREFIX} {now_iso()} done: every step succeeded (attempt {self.state.attempt})\n")
        return EXIT_SUCCEEDED

    def _fail(self, step: str | None, exit_code: int | None, signum: int | None, reason: Reason, message: str,
              tail: bytes | None = None, retry: bool = True) -> int:
        if not self._folder_is_ours():
            self._vanished()
        if tail is None:
            tail = read_region_tail(self.paths.out_log, 0, 64 * 1024)
        self.state.exit_code = exit_code
        self.state.signal = signum
        self.state.reason = reason
        self.state.message = message
        self.state.failed_device_uuid = self.spec.device_uuid
        attempt = self.state.attempt
        if retry and attempt < self.max_attempts:
            # Doubling stops at 10 minutes, or at the back-off asked for if that is longer.
            backoff = retry_backoff(self.spec.retry_backoff_s, attempt)
            self.state.phase = Phase.RETRY_WAIT
            self.state.resume_step = step
            self.state.retry_after = time.time() + backoff
            self._end_attempt(reason)
            self._log_line(f"{HEADER_PREFIX} {now_iso()} attempt {attempt}/{self.max_attempts} failed ({reason}): {message}; retrying from {step or 'the first step'} in {backoff:g}s\n")
            return EXIT_RETRY
        record = FailureRecord(
            step=step,
            exit_code=exit_code,
            signal=signum,
            attempt=attempt,
            time=now_iso(),
            reason=str(reason),
            message=message,
            last_lines=last_lines(tail, _FAILED_TAIL_LINES),
            device=self.spec.device_uuid,
        )
        marked = self._write_failed(record)
        self.state.phase = Phase.FAILED
        self.state.resume_step = step
        self._end_attempt(reason)
        if marked:
            outcome = "giving up (see lfads.failed; `runqueue requeue` to run again)"
        else:  # the queue then waits for space, or holds the run back until the folder is mended
            outcome = ("lfads.failed could not be written (a full disk: the run goes again once there is space;"
                       " or a folder this account cannot write: the queue holds it back)")
        self._log_line(f"{HEADER_PREFIX} {now_iso()} attempt {attempt}/{self.max_attempts} failed ({reason}): {message}; {outcome}\n")
        return EXIT_FAILED

    def _interrupted(self, step: str) -> int:
        self.state.phase = Phase.INTERRUPTED
        self.state.resume_step = step
        self.state.reason = "interrupted"
        self._end_attempt("interrupted")
        # In a SLURM job the SIGTERM may be SLURM's (time limit, scancel, a node going down): the
        # queue that settles the job adds what SLURM says.
        who = "the queue" if self.spec.batch_token is None else "a SIGTERM (the queue's or SLURM's)"
        self._log_line(f"{HEADER_PREFIX} {now_iso()} interrupted by {who} during {step}; it goes again from this step next time\n")
        return EXIT_INTERRUPTED

    def _cancelled(self, step: str, exit_code: int | None, signum: int | None) -> int:
        if not self._folder_is_ours():
            self._vanished()
        tail = read_region_tail(self.paths.out_log, 0, 64 * 1024)
        record = FailureRecord(
            step=step,
            exit_code=exit_code,
            signal=signum,
            attempt=self.state.attempt,
            time=now_iso(),
            reason=str(Reason.CANCELLED),
            message="cancelled with `runqueue cancel`",
            last_lines=last_lines(tail, _FAILED_TAIL_LINES),
            device=self.spec.device_uuid,
        )
        self._write_failed(record)
        self.state.phase = Phase.CANCELLED
        self.state.reason = Reason.CANCELLED
        self._end_attempt(Reason.CANCELLED)
        self._log_line(f"{HEADER_PREFIX} {now_iso()} cancelled during {step}\n")
        return EXIT_CANCELLED

    def _folder_unreadable(self) -> bool:
        """The folder cannot be looked at just now (a permission changed, an NFS hiccup): that is no
        sign it is gone, and the periodic look must not stop a healthy step for it."""
        try:
            os.stat(self.paths.root)
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError:
            return True
        return False

    def _folder_is_ours(self) -> bool:
        """Is the run folder still the one we locked? A folder deleted and made again under the same
        name is another run. A renamed one is followed: our open lfads.out knows where it went."""
        if self.folder_id is None or folder_identity(self.paths.root) == self.folder_id:
            return True
        if self.log_fd < 0:
            return False
        try:
            log_path = os.readlink(f"/proc/self/fd/{self.log_fd}")
        except OSError:
            return False
        folder = Path(log_path).parent
        if log_path.endswith(" (deleted)") or folder_identity(folder) != self.folder_id:
            return False
        self._log_line(f"{HEADER_PREFIX} {now_iso()} the run folder moved from {self.paths.root} to {folder}; following it\n")
        self._move_claim(self.paths.root, folder)
        self.paths = RunPaths(folder)
        return True

    def _move_claim(self, old: Path, new: Path) -> None:
        """The queue's device claim names the folder: move it along, so that it still counts
        (through the run lock at the new place) should this supervisor be killed."""
        if not self.spec.claims_dir:
            return
        with contextlib.suppress(ClaimError, OSError), ClaimStore(Path(self.spec.claims_dir)).transaction() as txn:
            claim = txn.claim_for(str(old))
            if claim is not None:
                txn.add(dataclasses.replace(claim, run_dir=str(new)))
                txn.remove(str(old))

    def _vanished(self) -> None:
        print(f"runqueue: {self.paths.root} vanished while it was running; dropping the run", file=sys.__stderr__)
        raise _Vanished

    def _write_failed(self, record: FailureRecord) -> bool:
        """Write lfads.failed; False when not even a short one fitted (a full disk)."""
        try:
            atomic_write_json(self.paths.failed_marker, record.to_json())
            return True
        except OSError:
            # A full disk may still take a tiny file; a marker without details beats none.
            try:
                with open(self.paths.failed_marker, "w") as marker:
                    marker.write(json.dumps({"reason": record.reason, "step": record.step, "attempt": record.attempt}))
                return True
            except OSError:
                # Not even that fitted: an empty marker would say "failed, reason unknown" for ever;
                # without one the queue sees the full disk and waits for space.
                with contextlib.suppress(OSError):
                    self.paths.failed_marker.unlink()
                return False

    def _end_attempt(self, reason: str | None) -> None:
        self.state.ended_at = time.time()
        self.state.history.append(
            {
                "attempt": self.state.attempt,
                "step": self.state.step,
                "device": self.spec.device_uuid,
                "reason": reason,
                "exit_code": self.state.exit_code,
                "signal": self.state.signal,
                "ended_at": self.state.ended_at,
            }
        )
        self._save()

    # ----------------------------------------------------------------- helpers
    def _header(self, step: str) -> str:
        return (
            f"{HEADER_PREFIX} {now_iso()} host={self.state.host} attempt={self.state.attempt}/{self.max_attempts}"
            f" step={step} device={self.spec.device_uuid} ({device_label(self.spec.device_name, self.spec.device_index)})"
        )

    def _write_log(self, text: str) -> None:
        data = text.encode()
        if text.startswith(HEADER_PREFIX) and ends_mid_line(self.log_fd):
            data = b"\n" + data  # a step that stopped mid-line (a progress bar, a kill): our line on its own
        try:
            while data:
                data = data[os.write(self.log_fd, data) :]
        except OSError as error:
            if reason_for(error) is Reason.DISK_FULL:
                raise _DiskFull from None
            raise

    def _log_line(self, text: str) -> None:
        if self.log_fd < 0:
            return
        try:
            self._write_log(text)
        except (OSError, _DiskFull):
            pass

    def _save(self) -> None:
        if not self._folder_is_ours():
            self._vanished()  # never write into a new folder that took the old one's name
        try:
            save_state(self.paths, self.state)
        except FileNotFoundError:
            if not self._folder_is_ours():
                self._vanished()
        except OSError:
            pass  # a full disk must not stop the run; the markers still decide


def _ended_with_a_word(log: Path) -> bool:
    """Whether lfads.out's last line of ours ends an attempt: state.json may still say `running`
    although its supervisor said how the attempt ended (on a full disk it could not save its state)."""
    tail = read_region_tail(log, 0, 64 * 1024).decode("utf-8", "replace")
    ours = [line for line in tail.splitlines() if line.startswith(HEADER_PREFIX)]
    return bool(ours) and any(ending in ours[-1] for ending in _ENDINGS)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    spec_text = None
    control_fd = None
    while args:
        flag = args.pop(0)
        if flag == "--spec" and args:
            spec_text = args.pop(0)
        elif flag == "--control-fd" and args:
            control_fd = int(args.pop(0))
        else:
            print(f"usage: python -m runqueue.supervisor --spec JSON [--control-fd N] (got {flag!r})", file=sys.stderr)
            return EXIT_ERROR
    if spec_text is None:
        print("usage: python -m runqueue.supervisor --spec JSON [--control-fd N]", file=sys.stderr)
        return EXIT_ERROR
    spec = SupervisorSpec.from_json(spec_text)
    control = socket.socket(fileno=control_fd) if control_fd is not None else None
    return Supervisor(spec, control).run()


if __name__ == "__main__":
    sys.exit(main())
