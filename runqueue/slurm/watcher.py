"""One poller for every SLURM job a queue watches (submitit's InfoWatcher idea, our own code).

A thread makes one batched `squeue` call per refresh for all job ids, backing off 1, 2, 4 … s
to a cap while nothing changes and starting again at 1 s on any change. A failing squeue is
reported once and the last known states are kept. Between refreshes it looks at the run folders
of running jobs (cheap: a lock probe and a small JSON file): when the job's supervisor has ended
(or died), it asks SLURM at once instead of waiting for the next refresh, so a finished run is
seen within a fraction of a second even when the back-off has grown.

A job's watch ends when SLURM calls it finished (not while COMPLETING, which hides whether it was
cancelled or timed out). The scheduler learns this through a pipe per job (readable = ended), which sits
in its selector next to the pidfds of local runs. What the ending means is decided from the run
folder by the executor (outcome.py), never from SLURM's state alone.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from runqueue.slurm.commands import LOST, JobInfo, SlurmCommands, SlurmError
from runqueue.slurm.jobscript import COMMENT_PREFIX
from runqueue.slurm.paths import SlurmPaths
from runqueue.slurm.records import load_job_report, load_submission, record_found_job_id

DEFAULT_MAX_INTERVAL_S = 30.0
MAX_INTERVAL_ENV = "RUNQUEUE_SLURM_POLL_MAX_S"
_FOLDER_INTERVAL_S = 0.5
_SOON_S = 0.2
_MISSES_BEFORE_LOST = 2  # refreshes in a row in which nobody knows the job
_MISSES_BEFORE_UNSUBMITTED = 3  # same, for a submission whose job id was never recorded
# squeue says COMPLETING (hiding CANCELLED, TIMEOUT…) until the job's processes are gone, which
# takes well under a second; a job stuck there this long after its supervisor returned is taken as over.
_COMPLETING_PATIENCE_S = 30.0
# A job still RUNNING this long after its supervisor returned was requeued by SLURM and runs again.
_REQUEUED_AFTER_S = 10.0
# Pending reasons that no other job's end will clear (with EnforcePartLimits=NO, SLURM accepts such a
# job and keeps it pending for ever): said once per job, so a queue never waits in silence.
STUCK_REASONS = frozenset({
    "PartitionConfig", "PartitionTimeLimit", "PartitionNodeLimit", "BadConstraints", "InvalidAccount",
    "InvalidQOS", "QOSMaxWallDurationPerJobLimit", "AssocMaxWallDurationPerJobLimit", "QOSMaxCpuPerJobLimit",
    "AssocMaxCpuPerJobLimit", "QOSMaxGRESPerJob", "QOSMaxMemoryPerJob", "QOSMaxNodePerJobLimit",
    "AssocMaxNodesPerJobLimit", "QOSMinGRES", "QOSMinCpuNotSatisfied",
})


HELD_REASONS = frozenset({"JobHeldUser", "JobHeldAdmin"})  # --hold, or `scontrol hold`: said once as well
HELD_STATES = frozenset({"REQUEUE_HOLD", "SPECIAL_EXIT"})  # requeued held (`scontrol requeuehold`): waits, said once


@dataclass
class _Watch:
    key: int
    run_dir: Path
    job_id: int | None
    token: str
    submitted_at: float
    notify_w: int
    info: JobInfo | None = None  # last seen
    final: JobInfo | None = None
    misses: int = 0
    folder_ended_at: float | None = None  # monotonic: when slurm-job.json said the supervisor returned
    ended_report: float | None = None  # that report's started_at: after a SLURM requeue it is old news
    escalate_at: float | None = None  # monotonic: scancel if still not over by then
    stop_signal: str | None = None  # a stop to deliver (request_stop), until SLURM takes it
    stop_escalate_after_s: float = 0.0


class JobWatcher:
    def __init__(
        self,
        commands: SlurmCommands,
        *,
        min_interval_s: float = 1.0,
        max_interval_s: float | None = None,
        report_problem: Callable[[str], None] | None = None,
    ) -> None:
        self.commands = commands
        self.min_interval_s = min_interval_s
        if max_interval_s is None:
            max_interval_s = float(os.environ.get(MAX_INTERVAL_ENV) or DEFAULT_MAX_INTERVAL_S)
        self.max_interval_s = max(min_interval_s, max_interval_s)
        self.report_problem = report_problem or (lambda _text: None)
        self._watches: dict[int, _Watch] = {}
        self._keys = itertools.count(1)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = False
        self._interval = min_interval_s
        self._next_query = 0.0
        self._failing: str | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ the executor's side
    def add(self, run_dir: Path, job_id: int | None, token: str, submitted_at: float) -> tuple[int, int]:
        """Watch a job; (key, fd that becomes readable when the job is over)."""
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        with self._lock:
            key = next(self._keys)
            self._watches[key] = _Watch(key, run_dir, job_id, token, submitted_at, write_fd)
            self._next_query = min(self._next_query, time.monotonic() + _SOON_S)
            self._interval = self.min_interval_s
        self._ensure_thread()
        self._wake.set()
        return key, read_fd

    def remove(self, key: int) -> JobInfo | None:
        """Stop watching; the job's final JobInfo (None if it was not over)."""
        with self._lock:
            watch = self._watches.pop(key, None)
            if watch is None:
                return None
            self._close_notify(watch)  # under the lock: _finish never writes to a closed (reused) fd
        return watch.final

    def last_seen(self, key: int) -> JobInfo | None:
        with self._lock:
            watch = self._watches.get(key)
            return None if watch is None else (watch.final or watch.info)

    def job_id(self, key: int) -> int | None:
        with self._lock:
            watch = self._watches.get(key)
            return None if watch is None else watch.job_id

    def request_stop(self, key: int, signal_name: str, *, escalate_after_s: float) -> None:
        """Stop the job, from this thread: `signal_name` to its batch script (our supervisor) while it
        runs, scancel while it pends, and scancel if it is not over `escalate_after_s` after the
        signal. Tried again every pass until SLURM takes it, so the scheduler never waits on a hung
        slurmctld (its loop must still answer a third Ctrl-C and feed systemd's watchdog), and a stop
        for a job whose id is still being looked for (by its comment) is sent once it is found."""
        with self._lock:
            watch = self._watches.get(key)
            if watch is None:
                return
            watch.stop_signal = signal_name
            watch.stop_escalate_after_s = escalate_after_s
            self._next_query = min(self._next_query, time.monotonic() + _SOON_S)
            self._interval = self.min_interval_s
        self._wake.set()

    def close(self) -> None:
        self._stopped = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        with self._lock:
            for watch in self._watches.values():
                self._close_notify(watch)
            self._watches.clear()

    # ------------------------------------------------------------------ the thread
    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stopped = False
            self._thread = threading.Thread(target=self._loop, name="slurm-watcher", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stopped:
            try:
                self._one_pass()
            except Exception as error:  # one bad pass must not end the watch of every job
                with contextlib.suppress(Exception):
                    self.report_problem(f"SLURM job watcher: {type(error).__name__}: {error}; it goes on")
                self._wake.wait(self.min_interval_s)
                self._wake.clear()

    def _one_pass(self) -> None:
        with self._lock:
            open_watches = [watch for watch in self._watches.values() if watch.final is None]
        if not open_watches:
            self._wake.wait()
            self._wake.clear()
            return
        self._look_at_folders(open_watches)
        self._deliver_stops(open_watches)
        self._escalate(open_watches)
        if time.monotonic() >= self._next_query:
            self._refresh(open_watches)
        with self._lock:
            timeout = min(self._next_query, time.monotonic() + _FOLDER_INTERVAL_S) - time.monotonic()
        self._wake.wait(max(0.0, timeout))
        self._wake.clear()

    def _refresh(self, watches: list[_Watch]) -> None:
        try:
            known = self.commands.query([watch.job_id for watch in watches if watch.job_id is not None])
        except SlurmError as error:
            self._problem(f"SLURM job states may be out of date: {error}; keeping the last known states")
            self._schedule(changed=False)
            return
        self._recovered()
        changed = found = False
        for watch in watches:
            if watch.job_id is None:
                # Its state comes with the next refresh, which asks squeue for the id found now.
                found = self._find_unrecorded(watch) or found
                changed = True if watch.final is not None else changed
                continue
            info = known.get(watch.job_id)
            if info is not None and not _is_ours(info, watch):
                info = None  # the same id now belongs to another job (the cluster's state was wiped)
            if info is None:
                info = self._look_elsewhere(watch)
                if info is None:
                    continue
            watch.misses = 0  # "in a row": a job SLURM knows again starts counting afresh
            if (watch.folder_ended_at is not None and info.state != "COMPLETING" and not info.finished
                    and (info.state == "PENDING" or time.monotonic() - watch.folder_ended_at > _REQUEUED_AFTER_S)):
                # Its supervisor returned, yet the job goes on: SLURM requeued it (node failure,
                # preemption, scontrol requeue). That report is the last run's; wait for the next.
                watch.folder_ended_at = None
            if info.finished or (info.state == "COMPLETING" and watch.folder_ended_at is not None
                                 and time.monotonic() - watch.folder_ended_at > _COMPLETING_PATIENCE_S):
                self._finish(watch, info)
                changed = True
            elif watch.info is None or (info.state, info.reason) != (watch.info.state, watch.info.reason):
                changed = True
                if (info.state == "PENDING" and info.reason in HELD_REASONS) or info.state in HELD_STATES:
                    self.report_problem(
                        f"{watch.run_dir}: SLURM job {info.job_id} is held ({info.reason or info.state}) and waits until released:"
                        f" `scontrol release {info.job_id}`, or `runqueue cancel` the run"
                    )
                elif info.state == "PENDING" and info.reason in STUCK_REASONS:
                    self.report_problem(
                        f"{watch.run_dir}: SLURM job {info.job_id} is pending ({info.reason}), which does not clear"
                        " by itself: the job asks for more than its partition, account or QOS allows; `runqueue"
                        " cancel` it and lower --slurm-time/--slurm-cpus/--slurm-mem/--slurm-gpus"
                    )
            watch.info = info
        self._schedule(changed=changed, soon=found or any(watch.folder_ended_at is not None and watch.final is None for watch in watches))

    def _find_unrecorded(self, watch: _Watch) -> bool:
        """A submission whose job id never reached slurm.json (the queue died during sbatch, or sbatch
        did not answer): the job records its own id there once it starts; else find it by comment."""
        with contextlib.suppress(OSError, ValueError):
            record = load_submission(SlurmPaths.of(watch.run_dir))
            if record is not None and record.token == watch.token and record.job_id is not None:
                watch.job_id, watch.misses = record.job_id, 0
                return True
        try:
            info = self.commands.find_by_comment(COMMENT_PREFIX + watch.token)
        except SlurmError:
            return False
        if info is not None:
            watch.job_id, watch.misses = info.job_id, 0
            with contextlib.suppress(OSError):  # the watch has it anyway; the record is for the others
                record_found_job_id(SlurmPaths.of(watch.run_dir), watch.token, info.job_id)
            return True
        watch.misses += 1
        if watch.misses >= _MISSES_BEFORE_UNSUBMITTED:
            self._finish(watch, JobInfo(0, LOST, reason="never submitted", source="lost"))
        return False

    def _look_elsewhere(self, watch: _Watch) -> JobInfo | None:
        """squeue did not list the job: scontrol, then the jobcomp file; LOST after repeated misses."""
        assert watch.job_id is not None
        try:
            info = self.commands.show_job(watch.job_id)
        except SlurmError:
            info = None
        if info is None or not _is_ours(info, watch):
            info = self.commands.from_jobcomp(watch.job_id, watch.submitted_at)
        if info is not None and not _is_ours(info, watch):
            info = None  # the id is another job's (ids restart when a cluster's state is wiped)
        if info is not None:
            watch.misses = 0
            return info
        watch.misses += 1
        if watch.misses >= _MISSES_BEFORE_LOST:
            self._finish(watch, JobInfo(watch.job_id, LOST, reason="unknown to squeue, scontrol and the jobcomp file", source="lost"))
        return None

    def _look_at_folders(self, watches: list[_Watch]) -> None:
        soon = False
        for watch in watches:
            if watch.job_id is None or watch.folder_ended_at is not None:
                continue
            if watch.info is not None and not watch.info.running:
                continue  # pending: its folder cannot have news yet
            report = load_job_report(SlurmPaths.of(watch.run_dir))
            if report is None or report.job_id != watch.job_id or report.token != watch.token or not report.ended:
                continue
            if report.started_at == watch.ended_report:
                continue  # the run before a SLURM requeue
            watch.ended_report = report.started_at
            # The supervisor has returned: ask SLURM now how the job ended, not at the next refresh.
            # (A supervisor that died says nothing here; SLURM's refresh finds that job over.)
            watch.folder_ended_at = time.monotonic()
            soon = True
        if soon:
            with self._lock:
                self._next_query = min(self._next_query, time.monotonic() + _SOON_S)

    def _deliver_stops(self, watches: list[_Watch]) -> None:
        for watch in watches:
            with self._lock:
                signal_name, job_id = watch.stop_signal, watch.job_id
            if signal_name is None or job_id is None:
                continue
            if self.commands.signal_batch(job_id, signal_name):
                escalate_at: float | None = time.monotonic() + watch.stop_escalate_after_s
            elif self.commands.cancel(job_id):  # pending (or between states): SLURM drops it
                escalate_at = None
            else:
                # SLURM took neither (slurmctld down or hung, or the job is over): again next pass,
                # after asking SLURM soon how the job is. The other stops wait for it, so a hung
                # slurmctld costs one command timeout per pass, not one per job.
                with self._lock:
                    self._next_query = min(self._next_query, time.monotonic() + _SOON_S)
                return
            with self._lock:
                if watch.stop_signal == signal_name:
                    watch.stop_signal = None
                watch.escalate_at = escalate_at
                self._next_query = min(self._next_query, time.monotonic() + _SOON_S)
                self._interval = self.min_interval_s

    def _escalate(self, watches: list[_Watch]) -> None:
        now = time.monotonic()
        for watch in watches:
            if watch.escalate_at is not None and now >= watch.escalate_at and watch.job_id is not None:
                watch.escalate_at = None
                self.commands.cancel(watch.job_id)  # it did not stop when asked: SLURM's own kill

    def _finish(self, watch: _Watch, info: JobInfo) -> None:
        with self._lock:
            watch.final = info
            if watch.notify_w >= 0:
                with contextlib.suppress(OSError):
                    os.write(watch.notify_w, b"!")

    def _schedule(self, *, changed: bool, soon: bool = False) -> None:
        with self._lock:
            self._interval = self.min_interval_s if changed else min(self._interval * 2, self.max_interval_s)
            # A supervisor that has returned: its job is about to be over; look again shortly.
            self._next_query = time.monotonic() + (_SOON_S if soon else self._interval)

    def _problem(self, text: str) -> None:
        if self._failing is None:
            self.report_problem(text)
        self._failing = text

    def _recovered(self) -> None:
        if self._failing is not None:
            self._failing = None
            self.report_problem("squeue answers again")

    @staticmethod
    def _close_notify(watch: _Watch) -> None:
        with contextlib.suppress(OSError):
            os.close(watch.notify_w)
        watch.notify_w = -1


def _is_ours(info: JobInfo, watch: _Watch) -> bool:
    # Our jobs carry --comment=runqueue:<token>. A job without any comment is given the benefit of
    # the doubt (some sites clear comments), and one whose comment a site's plugin extended is ours
    # while it holds the token (random: no other job's can); any other comment is someone else's.
    return info.comment in ("", "(null)") or COMMENT_PREFIX + watch.token in info.comment
