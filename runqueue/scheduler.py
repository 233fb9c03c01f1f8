"""The queue's loop: find pending runs, start them, watch them end, answer signals, show status.

One thread, one `selectors` loop. It wakes when a supervisor ends (its pidfd becomes readable, so
the next run starts at once), when a signal arrives (handlers only record), or on a timer
(rescans, retries coming due, console output). Each turn: `_reap_finished` (ends of runs),
`Rescanner.rescan` (rescanner.py), `Placer.place_and_start` (placer.py), and `Oversight`'s looks at
runs held elsewhere and at steps no supervisor looks after (oversight.py).

Exactly once: a run is started only inside the host-wide claim transaction, by a supervisor that
must first take the run's lock (and re-check its markers under it); the claim is recorded before
the supervisor is told to go (placer.py). Two queues on one tree therefore never run one run twice,
and a queue that dies loses nothing: on start it re-adopts every run whose supervisor still lives.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import time
from pathlib import Path

from runqueue import runlock
from runqueue.console import Console
from runqueue.departed import Fate, fate_of, hold_folder, release_folder
from runqueue.devices.claims import ClaimStore
from runqueue.devices.errors import ClaimError
from runqueue.devices.inventory import make_inventory
from runqueue.devices.model import Inventory
from runqueue.devices.placement import PlacementPolicy
from runqueue.durations import format_duration
from runqueue.executors import make_executor
from runqueue.executors.base import Executor, RunHandle
from runqueue.fswatch import DirectoryWatcher
from runqueue.layout import FAILED_MARKER, TRAIN_SCRIPT, folder_identity
from runqueue.logtail import LogTail
from runqueue.orphans import steps_left_unlocked
from runqueue.oversight import Oversight
from runqueue.placer import MAX_CRASHES, Placer
from runqueue.procinfo import account_name, raise_open_file_limit
from runqueue.queue_options import QueueOptions
from runqueue.queue_parts import QueueParts
from runqueue.queue_record import record_of, remove_record, write_record
from runqueue.rescanner import Rescanner
from runqueue.runstate import (
    Phase,
    RunState,
    load_state,
    marker_state,
    read_failure,
    state_stamp,
)
from runqueue.supervisor import EXIT_VANISHED
from runqueue.tracked import Dropped, RunCounts, TrackedRun, count_runs, status_text, summary_lines

__all__ = ["LoopHooks", "QueueOptions", "RunCounts", "Scheduler"]  # QueueOptions, RunCounts: imported from here too

_TAIL_INTERVAL_S = 0.25
_QUEUED_REFRESH_S = 2.0
_LONGEST_WAIT_S = 3600.0
# Running runs a queue does not answer for when it stops.
_NOT_OURS = "another queue's, a SLURM job's, or steps that outlived their supervisor"


class LoopHooks:
    """Called by the loop at its milestones; `runqueue serve` forwards them to systemd."""

    def ready(self, status: str) -> None:
        """Start-up done: roots scanned, running runs re-adopted."""

    def status(self, line: str) -> None:
        """The status line changed."""

    def tick(self) -> None:
        """Every turn of the loop (a watchdog ping belongs here, not in a side thread)."""

    def tick_interval_s(self) -> float | None:
        """Longest the loop may sleep between ticks; None for no limit."""
        return None

    def stopping(self, status: str) -> None:
        """The queue is about to stop."""

    # SIGHUP: a plain queue leaves (its terminal is gone); a service reloads instead.
    reloads_on_hangup = False

    def reload_refusal(self) -> str | None:
        """Why the settings cannot be reloaded now (the queue then goes on as it is); None: reload."""
        return None

    def reloading(self, status: str) -> None:
        """The queue leaves its loop to start again in place with the new settings."""


class Scheduler:
    def __init__(
        self,
        options: QueueOptions,
        console: Console | None = None,
        *,
        inventory: Inventory | None = None,
        executor: Executor | None = None,
        claims: ClaimStore | None = None,
        hooks: LoopHooks | None = None,
    ) -> None:
        self.options = options
        raise_open_file_limit()  # before the executor forks anything: a big SLURM sweep holds many descriptors
        self.console = console or Console(quiet=options.quiet)
        policy = PlacementPolicy(max_per_gpu=options.max_per_gpu, foreign=options.foreign)  # type: ignore[arg-type]
        inventory = inventory or make_inventory(gpus=options.gpus, simulate_gpus=options.simulate_gpus, cpu_slots=options.cpu_slots)
        self.executor = executor or make_executor(options.executor, slurm=options.slurm, kill_grace_s=options.kill_grace_s)
        self.claims = claims or ClaimStore()
        self.hooks = hooks or LoopHooks()
        self.last_status = ""
        self.watcher = DirectoryWatcher.create()  # None: no inotify here, polling alone
        self.runs: dict[Path, TrackedRun] = {}
        # Runs whose folder went while they ran: name, what happened, whether their work is lost.
        self.dropped: dict[Path, Dropped] = {}
        self.selector = selectors.DefaultSelector()
        self.stop_level = 0  # 1: stop placing; 2: stop the runs; 3: leave now
        self.signals: list[int] = []
        self.hung_up = False  # left on SIGHUP (not asked to stop): a service wants restarting then
        self.reloading = False  # left on SIGHUP to start again in place with new settings (runqueue serve)
        parts = QueueParts(options, self.console, self.runs, self.executor, self.claims)
        self.oversight = Oversight(parts, start_watching=self._start_watching, settle=self._settle)
        self.placer = Placer(
            parts, inventory=inventory, policy=policy, queue_id=f"{socket.gethostname()}:{os.getpid()}",
            oversight=self.oversight, start_watching=self._start_watching, tick=self.hooks.tick,
        )
        self.rescanner = Rescanner(parts, watcher=self.watcher, placer=self.placer, oversight=self.oversight)

    # ================================================================ main loop
    def run(self) -> int:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.selector.register(wake_r, selectors.EVENT_READ, None)
        if self.watcher is not None:
            self.selector.register(self.watcher.fileno(), selectors.EVENT_READ, self.watcher)
        old_wakeup = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        # SIGHUP left ignored when it was (nohup, trap '' HUP): the user asked to outlive the terminal.
        handled = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGHUP] if signal.getsignal(signal.SIGHUP) != signal.SIG_IGN else [])
        old_handlers = {signum: signal.signal(signum, self._record_signal) for signum in handled}
        record = None
        # So that `status` judges waiting runs by our settings (or knows SLURM takes them).
        with contextlib.suppress(ClaimError):  # the placer reports a claims directory that cannot serve
            record = write_record(self.claims.ensure_directory(), record_of(self.options))
        try:
            self.rescanner.rescan(full=True)
            self.oversight.adopt_running()
            self.oversight.stop_steps_left_in_deleted_folders()
            self.oversight.drop_stale_claims()
            self.hooks.ready(self.status_line())
            while True:
                self._act_on_signals()
                if self.stop_level >= 3:
                    break
                self._reap_finished()
                if self.stop_level == 0:
                    if time.monotonic() >= self.rescanner.next_rescan:
                        self.rescanner.rescan()
                    elif self.rescanner.next_hinted_rescan is not None and time.monotonic() >= self.rescanner.next_hinted_rescan:
                        self.rescanner.rescan(hinted=True)
                    if time.monotonic() >= self.oversight.next_probe:
                        self.oversight.probe_elsewhere()
                    self.placer.place_and_start()
                self.oversight.check_overdue()
                self.oversight.reaper.tick()
                self._tail_logs()
                self._show_status()
                self.hooks.tick()
                if self._finished():
                    break
                self._wait(wake_r)
        finally:
            self.oversight.reaper.finish_all()
            remove_record(record)
            signal.set_wakeup_fd(old_wakeup)
            for signum, handler in old_handlers.items():
                signal.signal(signum, handler)
            self.selector.close()
            self.executor.close()
            if self.watcher is not None:
                self.watcher.close()
            os.close(wake_r)
            os.close(wake_w)
        return self._summarize()

    def reload_due(self) -> bool:
        """Left the loop to reload, and no stop request came after that (one that arrived as the
        loop ended is still in `signals`): the caller may start the queue again in place."""
        return self.reloading and not any(signum != signal.SIGHUP for signum in self.signals)

    def _record_signal(self, signum: int, _frame: object) -> None:
        self.signals.append(signum)

    def _act_on_signals(self) -> None:
        while self.signals:
            signum = self.signals.pop(0)
            if signum == signal.SIGHUP and self.stop_level >= 3 and not self.reloading:
                self.hung_up = True  # a hang-up while leaving on a stop: no longer a clean stop
                continue
            if self.reloading and signum != signal.SIGHUP:
                self.reloading = False  # asked to stop before the reload happened: a stop wins
                self.hooks.stopping(self.status_line())
                self.console.event("stopping instead of reloading: asked to stop meanwhile")
                continue
            self.stop_level += 1
            watched = self._ours()
            others = self._others(watched)
            others_text = "" if not others else (
                f" (the {others} other running run(s) are {_NOT_OURS}: they keep going, and"
                " this queue neither waits for nor stops them)")
            if signum == signal.SIGHUP and self.stop_level == 1 and self.hooks.reloads_on_hangup:
                refusal = self.hooks.reload_refusal()
                if refusal is not None:
                    self.stop_level = 0  # not a stop: the queue goes on with the settings it has
                    self.console.event(f"reload refused, going on with the settings it has: {refusal}")
                    continue
                self.reloading = True
                self.hooks.reloading(self.status_line())
                self.console.event(f"reloading: starting again in place with the new settings; {len(watched)} started"
                                   f" run(s) keep going under their supervisors and are re-adopted{others_text}")
                self.stop_level = 3
            elif signum == signal.SIGHUP and self.stop_level < 3:
                self.hung_up = True
                # The terminal is gone (or someone asked for a restart): nobody is left to watch,
                # so leave at once like a service; the runs do not depend on us.
                self.hooks.stopping(self.status_line())
                self.console.event(f"hang-up: leaving; {len(watched)} started run(s) keep going under their supervisors"
                                   f" and are re-adopted on the next start{others_text}")
                self.stop_level = 3
            elif self.stop_level == 1 and self.options.detach_on_stop:
                self.hooks.stopping(self.status_line())
                if watched:
                    self.console.event(f"stopping; {len(watched)} started run(s) keep going under their supervisors and"
                                       f" are re-adopted on the next start{others_text}")
                else:
                    self.console.event(f"stopping; no run of ours is running{others_text}")
                self.stop_level = 3
            elif self.stop_level == 1 and not watched and others:
                # Nothing running is ours to wait for (or to stop on a second Ctrl-C): leave now.
                self.console.event(f"stopping: no new runs start; leaving now: the {others} running run(s) are {_NOT_OURS};"
                                   " this queue neither waits for nor stops them")
            elif self.stop_level == 1 and not watched and not others:
                self.console.event("stopping: no new runs start; nothing is running, so the queue leaves now")
            elif self.stop_level == 1 and not self.options.stop_runs:
                self.console.event(self.executor.first_stop_text(len(watched)) + others_text)
            elif self.stop_level <= 2:
                self.stop_level = 2
                self.console.event(f"stopping {len(watched)} started run(s); they are recorded as interrupted and go again next time{others_text}")
                for run in watched:
                    assert run.handle is not None
                    self.executor.interrupt(run.handle)
            else:
                self.console.event("leaving now; runs still stopping finish on their own")

    def _others(self, ours: list[TrackedRun]) -> int:
        """Running runs this queue does not answer for (another live queue's, a SLURM job's, held by a
        process it cannot watch): its status line counts them as running, so its stop message must
        say that it neither waits for them nor stops them."""
        mine = {id(run) for run in ours}
        return sum(1 for run in self.runs.values() if run.state == RunState.RUNNING and id(run) not in mine)

    def _ours(self) -> list[TrackedRun]:
        """Watched runs this queue answers for on stopping: not those another live queue started
        (asked now, since that queue may have gone meanwhile, leaving them to us)."""
        return [run for run in self.runs.values()
                if run.handle is not None and self.executor.run_by_another_queue(run.handle) is None]

    def _finished(self) -> bool:
        watched = any(run.handle is not None for run in self.runs.values())
        if self.stop_level >= 1:
            return not self._ours()
        if self.options.watch:
            return False
        if self.placer.cannot_place is not None and not watched:
            return True
        return not any(
            run.blocked is None and run.state in (RunState.PENDING, RunState.RUNNING) for run in self.runs.values()
        )

    def _wait(self, wake_r: int) -> None:
        now = time.monotonic()
        deadlines = []
        if self.stop_level == 0:  # stopping: no rescans, probes or placements are due any more
            deadlines.append(self.rescanner.next_rescan)
            if any(run.elsewhere for run in self.runs.values()):
                deadlines.append(self.oversight.next_probe)
            if self.placer.next_retry is not None:
                deadlines.append(self.placer.next_retry)
            if self.rescanner.next_hinted_rescan is not None:
                deadlines.append(self.rescanner.next_hinted_rescan)
            wall = time.time()
            # Only retries still to come: one already due was tried by this turn's placement.
            retries = [
                run.retry_after
                for run in self.runs.values()
                if run.retry_after is not None and run.retry_after > wall and run.state == RunState.PENDING and run.blocked is None
            ]
            if retries:
                deadlines.append(now + min(retries) - wall)
        if any(run.handle is not None and run.tail is not None for run in self.runs.values()):
            deadlines.append(now + _TAIL_INTERVAL_S)
        deadlines.extend(run.overdue_at for run in self.runs.values() if run.handle is not None and run.overdue_at is not None)
        reaper_due = self.oversight.reaper.next_due()
        if reaper_due is not None:
            deadlines.append(reaper_due)
        if any(run.handle is not None and self.executor.waiting(run.handle) for run in self.runs.values()):
            # A batch system starts queued runs without telling this loop: refresh the status line.
            deadlines.append(now + _QUEUED_REFRESH_S)
        if self.console.tty:
            deadlines.append(now + 1.0)
        tick = self.hooks.tick_interval_s()
        if tick is not None:
            deadlines.append(now + tick)
        # Capped: epoll refuses a wait over ~25 days, and a far deadline (a long time limit's
        # overdue check while stopping) is simply looked at again.
        timeout = min(max(0.0, min(deadlines) - now), _LONGEST_WAIT_S) if deadlines else None
        for key, _ in self.selector.select(timeout):
            if key.data is None:
                with contextlib.suppress(BlockingIOError):
                    while os.read(wake_r, 64):
                        pass
            elif key.data is self.watcher:
                self.rescanner.heard_changes()

    def _start_watching(self, run: TrackedRun, handle: RunHandle) -> None:
        """Follow a run's supervisor: its end makes the loop's selector readable."""
        run.handle = handle
        run.folder_id = folder_identity(run.path)
        release_folder(run.folder_fd)
        run.folder_fd = hold_folder(run.path)
        run.overdue_at = None
        run.state = RunState.RUNNING
        run.tail = None if self.options.quiet else LogTail(run.paths.out_log)
        self.selector.register(handle.wait_fd, selectors.EVENT_READ, run)

    # ================================================================ ends of runs
    def _reap_finished(self) -> None:
        ready = [key.data for key, _ in self.selector.select(0) if isinstance(key.data, TrackedRun)]
        for run in ready:
            handle = run.handle
            assert handle is not None
            self.selector.unregister(handle.wait_fd)
            code = self.executor.collect(handle)
            run.handle = None
            # Steps that outlived their supervisor hold the run lock and still use the device:
            # their claim stays, and lapses by itself when the last of them ends.
            if not runlock.is_held(run.paths.lock) and not steps_left_unlocked(run.paths):
                with contextlib.suppress(ClaimError, OSError):
                    self.claims.remove(str(run.path))
            if run.tail is not None:
                self.console.run_output(run.name, run.tail.read_lines(final=True, folder_fd=run.folder_fd))
                run.tail = None
            try:
                self._settle(run, code)
            finally:
                release_folder(run.folder_fd)
                run.folder_fd = None

    def _settle(self, run: TrackedRun, exit_code: int | None) -> None:
        """A run's supervisor ended: its markers, lock and state.json say what happened."""
        paths = run.paths
        run.ended_here = True
        self.placer.dirty = True  # its device is free, and the run itself may be pending again
        if exit_code != EXIT_VANISHED and run.folder_id is not None and folder_identity(run.path) != run.folder_id:
            # Deleted (or deleted and made again) under steps its supervisor left: they run on in
            # the old folder. (A supervisor that saw its folder vanish stopped its steps itself.)
            self.oversight.stop_steps_in_deleted_folder(run)
        if exit_code == EXIT_VANISHED or not os.path.isdir(paths.root):  # (Path.is_dir raises on EACCES)
            fate = Fate.DELETED if exit_code == EXIT_VANISHED else fate_of(run.folder_fd)
            dropped = Dropped(run.name, f"{run.path} {fate.value}", fate.lost, run.folder_id)
            self.console.event(f"[{run.name}] {dropped.what}; dropped")
            self.dropped[run.path] = dropped
            self.runs.pop(run.path, None)
            self.rescanner.next_rescan = 0.0  # a move within the roots shows up at once
            return
        # The markers may have been written on another machine (a SLURM node): on NFS a lookup can
        # answer from a cached "no such file" for up to a minute, and the run would be taken for
        # pending and started again. Listing the folder makes the client look again.
        with contextlib.suppress(OSError):
            os.listdir(paths.root)
        if os.path.lexists(paths.done_marker):
            run.state = RunState.DONE
            self.console.event(f"[{run.name}] done")
            return
        failure = read_failure(paths)
        if failure is not None:
            run.state = RunState.FAILED
            self.console.event(f"[{run.name}] failed ({failure.get('reason')}): {failure.get('message', '')} — see {paths.out_log}")
            return
        if runlock.is_running(paths.lock) or steps_left_unlocked(paths):
            # The supervisor is gone but something of the run still holds it (a step that
            # outlived it, or is still stopping; also when its lock was deleted meanwhile):
            # not startable until that ends.
            run.state = RunState.RUNNING
            run.elsewhere = True
            return
        run.state = RunState.PENDING
        state = load_state(paths)
        if state.phase == Phase.RETRY_WAIT:
            run.retry_after = state.retry_after
            run.state_stamp = state_stamp(paths)
            wait = max(0.0, (state.retry_after or 0) - time.time())
            self.console.event(
                f"[{run.name}] attempt {state.attempt} failed ({state.reason}): {state.message}; "
                f"retrying from {state.resume_step or 'the first step'} in {format_duration(wait)}"
            )
        elif state.phase == Phase.INTERRUPTED:
            self.console.event(f"[{run.name}] interrupted during {state.resume_step}; it goes again next time")
        elif state.phase == Phase.RUNNING and run.ended_here:
            # It ended without recording an outcome: killed (kill -9, out of memory), crashed, or
            # it could not write one. A full disk is said as such and waits for space (rescans
            # re-check it), rather than being restarted into the same wall.
            if self.placer.waits_for_space(run, "the run could not record its outcome"):
                return
            run.crashes += 1
            how = f"exit status {exit_code}" if exit_code is not None else "no outcome recorded"
            self.console.event(f"[{run.name}] supervisor ended unexpectedly ({how}); see {paths.out_log}")
            if run.crashes >= MAX_CRASHES:
                run.state_stamp = state_stamp(paths)
                reason = f"its supervisor ended unexpectedly {run.crashes} times"
                self.placer.block(run, reason, recheck=False,
                                  event=f"not started again: {reason}; see {paths.out_log}, then `runqueue requeue` it")
        elif state.phase == Phase.FAILED and run.ended_here:
            # Given up, but lfads.failed could not be written: a full disk waits for space; anything
            # else (a folder this account cannot write) would fail the same way at every start.
            if self.placer.waits_for_space(run, f"it failed and {FAILED_MARKER} could not be written"):
                return
            run.state_stamp = state_stamp(paths)
            reason = (f"it failed ({state.reason}: {state.message}) and {FAILED_MARKER} could not be written in"
                      f" {paths.root}; make the folder writable by {account_name()}, then `runqueue requeue` it")
            self.placer.block(run, reason, recheck=False, event=f"not started again: {reason}")

    # ================================================================ console
    def _tail_logs(self) -> None:
        for run in self.runs.values():
            if run.handle is not None and run.tail is not None:
                self.console.run_output(run.name, run.tail.read_lines(folder_fd=run.folder_fd))

    def counts(self) -> RunCounts:
        return count_runs(self.runs.values(), self.executor.waiting)

    def status_line(self) -> str:
        counts = self.counts()
        line = status_text(counts, stopping=bool(self.stop_level))
        if self.placer.placing_paused is not None and counts.pending:
            line += f"; placing paused: {self.placer.placing_paused}"
        return line

    def _show_status(self) -> None:
        line = self.status_line()
        self.console.status(line)
        if line != self.last_status:
            self.last_status = line
            self.hooks.status(line)

    def _recheck_ended(self) -> None:
        """Markers of ended runs, read again: while stopping no rescan sees a requeue or another queue's end."""
        for run in self.runs.values():
            if run.state in (RunState.DONE, RunState.FAILED) and run.handle is None:
                run.state = marker_state(run.paths)

    def _still_gone(self) -> list[Dropped]:
        """Dropped runs not found again since: at their path (made again) or elsewhere (moved within the roots)."""
        if not self.dropped:
            return []
        found_ids = {folder_identity(path) for path in self.runs} - {None}
        return [gone for path, gone in self.dropped.items() if path not in self.runs and gone.folder_id not in found_ids]

    def _summarize(self) -> int:
        self._recheck_ended()
        self.console.status(self.status_line(), force=True)
        self.console.close()
        counts = self.counts()
        dropped = self._still_gone()
        for line in summary_lines(list(self.runs.values()), counts, dropped):
            self.console.event(line)
        if not self.runs and not dropped:  # a mistyped root would otherwise look like success, to a script or cron too
            roots = ", ".join(map(str, self.options.roots))
            self.console.event(f"no run folders (folders holding {TRAIN_SCRIPT}) under {roots}; check the path")
            if not self.options.watch:
                return 2
        if self.placer.cannot_place is not None and (counts.pending or counts.running):
            self.console.event(f"stopped: runs cannot be started: {self.placer.cannot_place}")
            return 2
        if counts.failed or counts.blocked or any(gone.lost for gone in dropped):
            return 1
        if self.stop_level and (counts.pending or counts.running):
            return 130
        return 0
