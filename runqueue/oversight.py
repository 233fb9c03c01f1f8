"""Runs whose supervisor cannot do its whole job, and steps that no supervisor looks after.

- a run held by a process this queue cannot watch (another queue's supervisor, a SLURM job, steps
  that outlived their supervisor): probed every couple of seconds until it ends;
- steps whose supervisor is gone: stopped once past their run's time limit, or once their run
  folder is deleted under them (nobody else would);
- a supervisor stopped (SIGSTOP) past its run's time limit: continued, so that it stops the run;
- at start-up: runs whose supervisor still lives are re-adopted, and claims of runs that ended
  while no queue watched are dropped.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable

from runqueue import runlock
from runqueue.devices.claims import Claim
from runqueue.devices.errors import ClaimError
from runqueue.durations import format_duration
from runqueue.errors import RunqueueError
from runqueue.executors.base import RunHandle
from runqueue.layout import folder_identity
from runqueue.orphans import (
    Orphan,
    Reaper,
    find_orphan,
    steps_in_deleted_folders_under,
    steps_left_unlocked,
    steps_of,
    steps_of_deleted,
)
from runqueue.outlog import append_queue_line
from runqueue.queue_parts import QueuePart, QueueParts
from runqueue.resources import load_resources
from runqueue.runstate import PersistedState, RunState, load_state, now_iso
from runqueue.supervisor import HEADER_PREFIX
from runqueue.tracked import TrackedRun

_ELSEWHERE_PROBE_S = 2.0
_OVERDUE_MARGIN_S = 5.0  # a supervisor this long past its run's time limit + kill grace is looked at


def overdue_at(started_at: float | None, time_limit_s: float | None, kill_grace_s: float) -> float | None:
    """Monotonic time by which a supervisor that started its attempt at `started_at` (wall clock)
    should have stopped it for its time limit; None without a limit."""
    if started_at is None or time_limit_s is None:
        return None
    return time.monotonic() + started_at + time_limit_s + kill_grace_s + _OVERDUE_MARGIN_S - time.time()


class Oversight(QueuePart):
    """Looks after runs held elsewhere and after steps that no supervisor looks after.

    `start_watching` hands a run with a handle to the loop (its end wakes it); `settle` is how the
    loop reads what a run's end left behind (here: a run held elsewhere that let go of its lock)."""

    def __init__(
        self,
        parts: QueueParts,
        *,
        start_watching: Callable[[TrackedRun, RunHandle], None],
        settle: Callable[[TrackedRun, int | None], None],
    ) -> None:
        super().__init__(parts)
        self.start_watching = start_watching
        self.settle = settle
        self.reaper = Reaper()  # steps left by a dead supervisor, being stopped
        self.next_probe = 0.0

    # ================================================================ at start-up
    def adopt_running(self) -> None:
        """On start: watch every run whose supervisor lives (started by an earlier or another queue)."""
        for run in self.runs.values():
            if run.state == RunState.PENDING and (runlock.is_running(run.paths.lock) or self.executor.submitted(run.path)):
                self.watch_running_elsewhere(run, announce=True)

    def drop_stale_claims(self) -> None:
        """Claims of runs that ended while no queue watched them (their process is gone): removed
        now, not only when some later run is placed (a queue with nothing to place never would)."""
        if self.executor.placement_device() is not None:
            return  # a batch system places the runs: no host-wide claims
        # Housekeeping: skipped when the lock is busy (the next placement prunes them as well).
        with contextlib.suppress(ClaimError, OSError), self.claims.transaction(wait_s=0.5) as txn:
            txn.live_claims()

    def stop_steps_left_in_deleted_folders(self) -> None:
        """At start: run folders deleted while no queue watched, under steps whose supervisor is gone."""
        if self.executor.placement_device() is not None:
            return  # a batch system's jobs: their processes are its business
        stopped = self.reaper.stop(lambda: steps_in_deleted_folders_under(self.options.roots), self.options.kill_grace_s)
        if stopped:
            self.console.event(f"stopped steps left running in deleted run folders under the roots (pids"
                               f" {', '.join(map(str, stopped))}): their supervisors are gone")

    # ================================================================ runs held elsewhere
    def watch_running_elsewhere(self, run: TrackedRun, *, announce: bool = False) -> None:
        """Watch a run some other supervisor holds. `announce`: adopted at start-up (ours from an
        earlier queue): say so and follow its output; otherwise another live queue runs it."""
        run.state = RunState.RUNNING
        handle = self.executor.adopt(run.path)
        if handle is None:
            run.elsewhere = True
            run.folder_id = folder_identity(run.path)
            self.next_probe = min(self.next_probe, time.monotonic() + _ELSEWHERE_PROBE_S) if self.next_probe else time.monotonic() + _ELSEWHERE_PROBE_S
            if announce or self.executor.submitted(run.path):
                self.console.event(f"[{run.name}] {self.executor.elsewhere_text(run.path)}; checking every {_ELSEWHERE_PROBE_S:g}s")
            return
        run.elsewhere = False
        self.start_watching(run, handle)
        owner = self.executor.run_by_another_queue(handle)
        if owner is not None or not announce:
            run.tail = None  # the queue that started it shows its output
        if announce and owner is not None:
            self.console.event(f"[{run.name}] running under another queue ({owner}); watching it, leaving it to that queue")
        if owner is None:
            state = load_state(run.paths)
            if announce:
                self.console.event(f"[{run.name}] re-adopted ({self.executor.adopted_text(handle)})")
                self._claim_adopted(run, handle, state)
            run.overdue_at = overdue_at(state.started_at, state.time_limit_s, state.kill_grace_s or 0.0)

    def _claim_adopted(self, run: TrackedRun, handle: RunHandle, state: PersistedState) -> None:
        """A run re-adopted from an earlier queue of ours keeps its device claim. When the claims
        directory changed in between (a reload or a restart with another claims_dir), its claim is
        in the old one, which this queue does not read: claim its device here again, so that no run
        is put on it on top of this one."""
        if self.executor.placement_device() is not None:
            return  # a batch system places the runs: no host-wide claims
        if not state.device_uuid or state.supervisor_pid != handle.pid:
            return  # no device recorded, or recorded by an earlier supervisor: nothing sure to claim
        try:
            memory_mb = load_resources(run.paths, self.options.memory_per_run, None).memory_mb
        except RunqueueError:
            memory_mb = self.options.memory_per_run  # its runqueue.json broke after it started: charge the default
        try:
            with self.claims.transaction() as txn:
                if txn.claim_for(str(run.path)) is None:
                    txn.add(Claim(str(run.path), state.device_uuid, memory_mb, handle.pid, handle.pid,
                                  state.queue_id or "", time.time()))
                    self.console.event(f"[{run.name}] its device claim was not in {self.claims.directory}"
                                       f" (another claims directory before?); claimed {state.device_uuid} there again")
        except ClaimError as error:
            self.console.event_once(str(error))

    def probe_elsewhere(self) -> None:
        """Runs held by a process we cannot watch: see whether they have ended."""
        self.next_probe = time.monotonic() + _ELSEWHERE_PROBE_S
        for run in list(self.runs.values()):  # settle drops vanished runs
            if not run.elsewhere or run.handle is not None or self.executor.submitted(run.path):
                continue
            # (A deleted folder's steps are stopped by settle, not waited for.)
            if not runlock.is_held(run.paths.lock) and not (os.path.isdir(run.path) and steps_left_unlocked(run.paths)):
                run.elsewhere = False
                self.settle(run, None)
            else:
                self._mind_orphan(run)

    def _mind_orphan(self, run: TrackedRun) -> None:
        """Steps whose supervisor is gone: nobody else enforces their time limit, so stop them once
        it has passed (seen the same on two looks in a row: a new supervisor taking the run writes
        its own state.json at once)."""
        orphan = find_orphan(run.paths)
        seen_before, run.orphan = run.orphan, orphan
        if orphan is None or orphan != seen_before or orphan == run.orphan_stopped:
            return
        due = overdue_at(orphan.started_at, orphan.time_limit_s, orphan.kill_grace_s or 0.0)
        if due is None or time.monotonic() < due:
            return
        stopped = self.reaper.stop(steps_of(run.paths, orphan), self._grace_for(orphan))
        if not stopped:
            return  # none visible or none ours to signal: looked at again on the next probe
        run.orphan_stopped = orphan
        assert orphan.time_limit_s is not None
        text = (f"its supervisor is gone and its steps ran past the time limit ({format_duration(orphan.time_limit_s)});"
                f" stopped them (pids {', '.join(map(str, stopped))})")
        self.console.event(f"[{run.name}] {text}")
        with contextlib.suppress(OSError):
            append_queue_line(run.paths.out_log, f"{HEADER_PREFIX} {now_iso()} {text}\n")

    # ================================================================ deleted folders, stopped supervisors
    def stop_steps_in_deleted_folder(self, run: TrackedRun) -> None:
        """Steps whose supervisor is gone, left running in the run's deleted folder: they would run on
        for nothing (and keep the device). A live supervisor stops its own when its folder goes."""
        if self.executor.submitted(run.path) or run.folder_id is None:
            return
        stopped = self.reaper.stop(steps_of_deleted(run.folder_id), self._grace_for(run.orphan))
        if stopped:
            self.console.event(f"[{run.name}] its folder was deleted under steps whose supervisor is gone;"
                               f" stopped them (pids {', '.join(map(str, stopped))})")

    def _grace_for(self, orphan: Orphan | None) -> float:
        """The kill grace the orphan's own attempt had (state.json), else this queue's."""
        return orphan.kill_grace_s if orphan is not None and orphan.kill_grace_s is not None else self.options.kill_grace_s

    def check_overdue(self) -> None:
        """The supervisor enforces a run's time limit; one stopped with SIGSTOP cannot. Let it go on."""
        now = time.monotonic()
        for run in self.runs.values():
            if run.handle is None or run.overdue_at is None or now < run.overdue_at:
                continue
            run.overdue_at = now + _OVERDUE_MARGIN_S  # and look again later, in case it is stopped again
            if self.executor.continue_stopped(run.handle):
                self.console.event(f"[{run.name}] its supervisor was stopped (SIGSTOP) past the run's time limit;"
                                   " continued it so that it stops the run")
