"""The queue: find pending runs, place them on free devices, start their supervisors, watch them end.

One thread, one `selectors` loop. It wakes when a supervisor ends (its pidfd becomes readable, so
the next run starts at once), when a signal arrives (handlers only record), or on a timer
(rescans, retries coming due, console output). Named phases: `_reap_finished`, `_discover`,
`_place_and_start`.

Exactly once: a run is started only inside the host-wide claim transaction, by a supervisor that
must first take the run's lock (and re-check its markers under it); the claim is recorded before
the supervisor is told to go. Two queues on one tree therefore never run one run twice, and a
queue that dies loses nothing: on start it re-adopts every run whose supervisor still lives.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from runqueue import runlock
from runqueue.candidates import Candidate, sift_pending
from runqueue.console import Console
from runqueue.devices.claims import Claim, ClaimStore, ClaimTransaction
from runqueue.devices.errors import ClaimError, InventoryError
from runqueue.devices.inventory import make_inventory
from runqueue.devices.model import Device, Inventory
from runqueue.devices.nvml import without_retry_note
from runqueue.devices.placement import (
    PlacementPolicy,
    PlacementRequest,
    free_memory_mb,
    never_fits,
    place,
    place_with_oom_fallback,
    provisional_claim,
    why_not_placed,
)
from runqueue.discovery import RunScanner
from runqueue.diskspace import disk_is_full
from runqueue.durations import format_duration
from runqueue.executors import make_executor
from runqueue.executors.base import Executor, PendingStart, RunHandle
from runqueue.fswatch import DirectoryWatcher
from runqueue.layout import DEFAULT_MEMORY_MB, RETIRED_TRAIN_SCRIPT, TRAIN_SCRIPT, folder_identity
from runqueue.logtail import LogTail
from runqueue.naming import run_identity
from runqueue.orphans import (
    Orphan,
    Reaper,
    find_orphan,
    steps_in_deleted_folders_under,
    steps_of,
    steps_of_deleted,
)
from runqueue.outlog import append_queue_line
from runqueue.runstate import (
    Phase,
    Reason,
    RunState,
    load_state,
    marker_state,
    now_iso,
    read_failure,
    state_stamp,
)
from runqueue.slurm.options import SlurmOptions
from runqueue.supervisor import EXIT_VANISHED, HEADER_PREFIX
from runqueue.supervisor_spec import SupervisorSpec
from runqueue.tracked import RunCounts, TrackedRun, count_runs, status_text, summary_lines

_TAIL_INTERVAL_S = 0.25
_ELSEWHERE_PROBE_S = 2.0
_OVERDUE_MARGIN_S = 5.0  # a supervisor this long past its run's time limit + kill grace is looked at
_MAINTENANCE_RETRY_S = 1.0  # a run whose inputs lfads-manager rewrites: tried again this soon
_FULL_RESCAN_EVERY = 12  # rescans; the others use the mtime hint
_RESCAN_BUDGET_FACTOR = 200.0  # wait at least 200x what the last rescan cost: <= 0.5 % of a core
_REPLY_TIMEOUT_S = 30.0
_MAX_CRASHES = 3
_BLOCKED_START_RECHECK_S = 60.0
_WAITING_NOTE_EVERY_S = 60.0
_QUEUED_REFRESH_S = 2.0
_HINT_SETTLE_S = 0.05  # after an inotify event, wait this long for the rest of a burst
# Running runs a queue does not answer for when it stops.
_NOT_OURS = "another queue's, a SLURM job's, or steps that outlived their supervisor"
_SUBMIT_BATCH = 50  # runs handed to a batch system per loop turn (signals are looked at in between)


@dataclass
class QueueOptions:
    """Everything `runqueue run` / `serve` can be told (DESIGN.md §5)."""

    roots: list[Path]
    watch: bool = False
    gpus: str | None = None
    simulate_gpus: str | None = None
    cpu_slots: int | None = None
    max_per_gpu: int = 1
    foreign: str = "block"
    memory_per_run: int = DEFAULT_MEMORY_MB
    retries: int = 1
    retry_backoff_s: float = 10.0
    time_limit_s: float | None = None
    kill_grace_s: float = 10.0
    executor: str = "local"
    slurm: SlurmOptions = field(default_factory=SlurmOptions)  # --slurm-* (only with executor "slurm")
    poll_interval_s: float = 5.0
    quiet: bool = False
    stop_runs: bool = False  # first Ctrl-C/SIGTERM also stops the running runs
    detach_on_stop: bool = False  # serve: on stop, leave runs to their supervisors (re-adopted later)


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
        self.console = console or Console(quiet=options.quiet)
        self.policy = PlacementPolicy(max_per_gpu=options.max_per_gpu, foreign=options.foreign)  # type: ignore[arg-type]
        self.inventory = inventory or make_inventory(gpus=options.gpus, simulate_gpus=options.simulate_gpus, cpu_slots=options.cpu_slots)
        self.executor = executor or make_executor(options.executor, slurm=options.slurm, kill_grace_s=options.kill_grace_s)
        self.claims = claims or ClaimStore()
        self.hooks = hooks or LoopHooks()
        self.last_status = ""
        self.queue_id = f"{socket.gethostname()}:{os.getpid()}"
        self.watcher = DirectoryWatcher.create()  # None: no inotify here, polling alone
        self.scanner = RunScanner(options.roots, watcher=self.watcher)
        self.next_hinted_rescan: float | None = None  # an inotify event asked for a quick look
        self.runs: dict[Path, TrackedRun] = {}
        self.selector = selectors.DefaultSelector()
        self.stop_level = 0  # 1: stop placing; 2: stop the runs; 3: leave now
        self.signals: list[int] = []
        self.rescans = 0
        self.next_rescan = 0.0
        self.next_probe = 0.0
        self.reaper = Reaper()  # steps left by a dead supervisor, being stopped
        self.next_waiting_note = 0.0
        self.next_placement_retry: float | None = None  # runs wait for a device that may free up by itself
        self.waiting_for_manager: set[Path] = set()  # runs whose wait for lfads-manager was announced
        self.hung_up = False  # left on SIGHUP (not asked to stop): a service wants restarting then
        self.placement_dirty = True  # something changed that may allow a placement
        self.last_devices: tuple[Device, ...] = ()
        self.inventory_status = ""
        self.problems_shown: set[str] = set()
        # `run` (not --watch) cannot place anything and nothing runs: waiting would be forever.
        self.cannot_place: str | None = None

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
        try:
            self._discover(full=True)
            self._adopt_running()
            self._stop_steps_left_in_deleted_folders()
            self._drop_stale_claims()
            self.hooks.ready(self.status_line())
            while True:
                self._act_on_signals()
                if self.stop_level >= 3:
                    break
                self._reap_finished()
                if self.stop_level == 0:
                    if time.monotonic() >= self.next_rescan:
                        self._discover()
                    elif self.next_hinted_rescan is not None and time.monotonic() >= self.next_hinted_rescan:
                        self._discover(hinted=True)
                    if time.monotonic() >= self.next_probe:
                        self._probe_elsewhere()
                    if self.next_placement_retry is not None and time.monotonic() >= self.next_placement_retry:
                        self.next_placement_retry = None
                        self.placement_dirty = True
                    self._place_and_start()
                self._check_overdue()
                self.reaper.tick()
                self._tail_logs()
                self._show_status()
                self.hooks.tick()
                if self._finished():
                    break
                self._wait(wake_r)
        finally:
            self.reaper.finish_all()
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

    def _record_signal(self, signum: int, _frame: object) -> None:
        self.signals.append(signum)

    def _act_on_signals(self) -> None:
        while self.signals:
            signum = self.signals.pop(0)
            self.stop_level += 1
            watched = self._ours()
            others = self._others(watched)
            others_text = "" if not others else (
                f" (the {others} other running run(s) are {_NOT_OURS}: they keep going, and"
                " this queue neither waits for nor stops them)")
            if signum == signal.SIGHUP and self.stop_level < 3:
                self.hung_up = True
                # The terminal is gone (or someone asked for a restart): nobody is left to watch,
                # so leave at once like a service; the runs do not depend on us.
                self.hooks.stopping(self.status_line())
                self.console.event(f"hang-up: leaving; {len(watched)} started run(s) keep going under their supervisors"
                                   f" and are re-adopted on the next start{others_text}")
                self.stop_level = 3
            elif self.stop_level == 1 and self.options.detach_on_stop:
                self.hooks.stopping(self.status_line())
                self.console.event(f"stopping; {len(watched)} started run(s) keep going under their supervisors and are"
                                   f" re-adopted on the next start{others_text}")
                self.stop_level = 3
            elif self.stop_level == 1 and not watched and others:
                # Nothing running is ours to wait for (or to stop on a second Ctrl-C): leave now.
                self.console.event(f"stopping: no new runs start; leaving now: the {others} running run(s) are {_NOT_OURS};"
                                   " this queue neither waits for nor stops them")
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
        if self.cannot_place is not None and not watched:
            return True
        return not any(
            run.blocked is None and run.state in (RunState.PENDING, RunState.RUNNING) for run in self.runs.values()
        )

    def _wait(self, wake_r: int) -> None:
        now = time.monotonic()
        deadlines = []
        if self.stop_level == 0:  # stopping: no rescans, probes or placements are due any more
            deadlines.append(self.next_rescan)
            if any(run.elsewhere for run in self.runs.values()):
                deadlines.append(self.next_probe)
            if self.next_placement_retry is not None:
                deadlines.append(self.next_placement_retry)
            if self.next_hinted_rescan is not None:
                deadlines.append(self.next_hinted_rescan)
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
        reaper_due = self.reaper.next_due()
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
        timeout = max(0.0, min(deadlines) - now) if deadlines else None
        for key, _ in self.selector.select(timeout):
            if key.data is None:
                with contextlib.suppress(BlockingIOError):
                    while os.read(wake_r, 64):
                        pass
            elif key.data is self.watcher and self.watcher.read_events() and self.next_hinted_rescan is None:
                # A short delay gathers a burst (a whole new collection being written) into one scan.
                self.next_hinted_rescan = time.monotonic() + _HINT_SETTLE_S

    # ================================================================ discovery
    def _discover(self, *, full: bool = False, hinted: bool = False) -> None:
        """`hinted`: an inotify event's quick look (changed folders only); it leaves the periodic
        rescan's schedule alone, since only that one sees changes made on other NFS clients."""
        self.next_hinted_rescan = None
        if not hinted:
            self.rescans += 1
            full = full or self.rescans % _FULL_RESCAN_EVERY == 0
        began = time.monotonic()
        found = self.scanner.scan(full=full, hinted=hinted)
        cost = time.monotonic() - began
        for problem in self.scanner.problems:
            self._problem_once(problem)
        if self.watcher is not None and self.watcher.limit_reached:
            self._problem_once(
                f"inotify watch limit reached after {self.watcher.watched} folders (sysctl fs.inotify.max_user_watches);"
                " changes in the other folders are seen at the next --poll-interval rescan"
            )
        present = set()
        for item in found:
            present.add(item.path)
            run = self.runs.get(item.path)
            if run is None:
                collection, name = run_identity(item.path, item.root)
                state = RunState.DONE if item.has_done else RunState.FAILED if item.has_failed else RunState.PENDING
                self.runs[item.path] = TrackedRun(item.path, collection, name, state)
                if state == RunState.PENDING:
                    self.placement_dirty = True
                continue
            if run.handle is not None:
                continue  # its supervisor's end tells us what happened
            if (run.blocked is not None and run.recheck_block and time.monotonic() >= run.recheck_after
                    and not (run.needs_space and disk_is_full(run.paths.root))):
                run.blocked = None  # placed or blocked again at the next placement
                run.needs_space = False
                self.placement_dirty = True
            if run.state_stamp is not None and (run.blocked is not None or run.retry_after is not None):
                self._notice_requeue(run)
            if item.has_done:
                run.state = RunState.DONE
            elif item.has_failed:
                run.state = RunState.FAILED
            elif run.state in (RunState.DONE, RunState.FAILED):
                run.state = RunState.PENDING
                run.retry_after = None
                run.blocked = None
                run.crashes = 0
                self.placement_dirty = True
                self.console.event(f"[{run.name}] requeued (its marker was removed)")
        for path in [path for path, run in self.runs.items() if path not in present and run.handle is None]:
            run = self.runs.pop(path)
            if run.state in (RunState.PENDING, RunState.RUNNING):
                if (path / RETIRED_TRAIN_SCRIPT).exists():
                    what = f"was retired by lfads-manager prepare (its param set or run spec left the experiment; see {RETIRED_TRAIN_SCRIPT})"
                elif path.is_dir():
                    what = f"is no longer a run (its {TRAIN_SCRIPT} is gone)"
                else:
                    what = "is gone"
                self.console.event(f"[{run.name}] {path} {what}; dropped")
            if run.state == RunState.RUNNING:
                self._stop_steps_in_deleted_folder(run)
        # Rescans may use at most ~0.5 % of a core: a huge tree on a slow (NFS) disk is rescanned
        # less often than --poll-interval asks, a small one exactly as often.
        if not hinted:
            self.next_rescan = time.monotonic() + max(self.options.poll_interval_s, cost * _RESCAN_BUDGET_FACTOR)

    def _notice_requeue(self, run: TrackedRun) -> None:
        """`runqueue requeue` of a run that waits out a back-off or was blocked here replaces its
        state.json: it goes now (a run that is still backing off is found so again by the next sift)."""
        if state_stamp(run.paths) == run.state_stamp:
            return
        was_blocked = run.blocked is not None and not run.recheck_block
        run.state_stamp = None
        run.retry_after = None
        if was_blocked:
            run.blocked = None
            run.last_block_message = None
            run.crashes = 0
            self.console.event(f"[{run.name}] requeued")
        self.placement_dirty = True

    def _adopt_running(self) -> None:
        """On start: watch every run whose supervisor lives (started by an earlier or another queue)."""
        for run in self.runs.values():
            if run.state == RunState.PENDING and (runlock.is_running(run.paths.lock) or self.executor.submitted(run.path)):
                self._watch_running_elsewhere(run, announce=True)

    def _drop_stale_claims(self) -> None:
        """Claims of runs that ended while no queue watched them (their process is gone): removed
        now, not only when some later run is placed (a queue with nothing to place never would)."""
        if self.executor.placement_device() is not None:
            return  # a batch system places the runs: no host-wide claims
        with contextlib.suppress(ClaimError, OSError), self.claims.transaction() as txn:
            txn.live_claims()

    def _watch_running_elsewhere(self, run: TrackedRun, *, announce: bool = False) -> None:
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
        self._start_watching(run, handle, log_offset=None)
        owner = self.executor.run_by_another_queue(handle)
        if owner is not None or not announce:
            run.tail = None  # the queue that started it shows its output
        if announce and owner is not None:
            self.console.event(f"[{run.name}] running under another queue ({owner}); watching it, leaving it to that queue")
        elif announce:
            self.console.event(f"[{run.name}] re-adopted ({self.executor.adopted_text(handle)})")
        if owner is None:
            state = load_state(run.paths)
            run.overdue_at = _overdue_at(state.started_at, state.time_limit_s, state.kill_grace_s or 0.0)

    def _probe_elsewhere(self) -> None:
        """Runs held by a process we cannot watch: see whether they have ended."""
        self.next_probe = time.monotonic() + _ELSEWHERE_PROBE_S
        for run in list(self.runs.values()):  # _settle drops vanished runs
            if not run.elsewhere or run.handle is not None or self.executor.submitted(run.path):
                continue
            if not runlock.is_held(run.paths.lock):
                run.elsewhere = False
                self._settle(run, exit_code=None)
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
        overdue_at = _overdue_at(orphan.started_at, orphan.time_limit_s, orphan.kill_grace_s or 0.0)
        if overdue_at is None or time.monotonic() < overdue_at:
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

    def _stop_steps_in_deleted_folder(self, run: TrackedRun) -> None:
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

    def _stop_steps_left_in_deleted_folders(self) -> None:
        """At start: run folders deleted while no queue watched, under steps whose supervisor is gone."""
        if self.executor.placement_device() is not None:
            return  # a batch system's jobs: their processes are its business
        stopped = self.reaper.stop(lambda: steps_in_deleted_folders_under(self.options.roots), self.options.kill_grace_s)
        if stopped:
            self.console.event(f"stopped steps left running in deleted run folders under the roots (pids"
                               f" {', '.join(map(str, stopped))}): their supervisors are gone")

    def _check_overdue(self) -> None:
        """The supervisor enforces a run's time limit; one stopped with SIGSTOP cannot. Let it go on."""
        now = time.monotonic()
        for run in self.runs.values():
            if run.handle is None or run.overdue_at is None or now < run.overdue_at:
                continue
            run.overdue_at = now + _OVERDUE_MARGIN_S  # and look again later, in case it is stopped again
            if self.executor.continue_stopped(run.handle):
                self.console.event(f"[{run.name}] its supervisor was stopped (SIGSTOP) past the run's time limit;"
                                   " continued it so that it stops the run")

    def _start_watching(self, run: TrackedRun, handle: RunHandle, log_offset: int | None) -> None:
        run.handle = handle
        run.folder_id = folder_identity(run.path)
        run.overdue_at = None
        run.state = RunState.RUNNING
        run.tail = None if self.options.quiet else LogTail(run.paths.out_log, log_offset)
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
            if not runlock.is_held(run.paths.lock):
                with contextlib.suppress(ClaimError, OSError):
                    self.claims.remove(str(run.path))
            if run.tail is not None:
                self.console.run_output(run.name, run.tail.read_lines(final=True))
                run.tail = None
            self._settle(run, code)

    def _settle(self, run: TrackedRun, exit_code: int | None) -> None:
        """A run's supervisor ended: its markers, lock and state.json say what happened."""
        paths = run.paths
        run.ended_here = True
        self.placement_dirty = True  # its device is free, and the run itself may be pending again
        if exit_code != EXIT_VANISHED and run.folder_id is not None and folder_identity(run.path) != run.folder_id:
            # Deleted (or deleted and made again) under steps its supervisor left: they run on in
            # the old folder. (A supervisor that saw its folder vanish stopped its steps itself.)
            self._stop_steps_in_deleted_folder(run)
        if exit_code == EXIT_VANISHED or not paths.root.is_dir():
            if exit_code == EXIT_VANISHED:
                self.console.event(f"[{run.name}] {run.path} vanished while running; dropped")
            elif exit_code is not None:  # its supervisor followed the folder and recorded the outcome there
                self.console.event(f"[{run.name}] {run.path} was moved while running; it finished where it went"
                                   " (see its lfads.out there); dropped here")
            else:  # the local executor cannot tell which
                self.console.event(f"[{run.name}] {run.path} is gone (deleted, or moved: a moved run finishes where"
                                   " it went, see its lfads.out there); dropped here")
            self.runs.pop(run.path, None)
            self.next_rescan = 0.0  # a move within the roots shows up at once
            return
        if os.path.lexists(paths.done_marker):
            run.state = RunState.DONE
            self.console.event(f"[{run.name}] done")
            return
        failure = read_failure(paths)
        if failure is not None:
            run.state = RunState.FAILED
            self.console.event(f"[{run.name}] failed ({failure.get('reason')}): {failure.get('message', '')} — see {paths.out_log}")
            return
        if runlock.is_running(paths.lock):
            # The supervisor is gone but something of the run still holds it (a step that
            # outlived it, or is still stopping): not startable until that ends.
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
                f"retrying from {state.resume_step} in {format_duration(wait)}"
            )
        elif state.phase == Phase.INTERRUPTED:
            self.console.event(f"[{run.name}] interrupted during {state.resume_step}; it goes again next time")
        elif state.phase == Phase.RUNNING and run.ended_here:
            # It ended without recording an outcome: killed (kill -9, out of memory), crashed, or
            # it could not write one. A full disk is said as such and waits for space (rescans
            # re-check it), rather than being restarted into the same wall.
            if disk_is_full(paths.root):
                reason = (f"the disk of {paths.root} is full, so the run could not record its outcome; free space"
                          " there (the run goes again once there is some)")
                self._block(run, reason, recheck=True, event=f"stopped: {reason}")
                run.needs_space = True
                return
            run.crashes += 1
            how = f"exit status {exit_code}" if exit_code is not None else "no outcome recorded"
            self.console.event(f"[{run.name}] supervisor ended unexpectedly ({how}); see {paths.out_log}")
            if run.crashes >= _MAX_CRASHES:
                run.state_stamp = state_stamp(paths)
                reason = f"its supervisor ended unexpectedly {run.crashes} times"
                self._block(run, reason, recheck=False,
                            event=f"not started again: {reason}; see {paths.out_log}, then `runqueue requeue` it")

    # ================================================================ placement
    def _place_and_start(self) -> None:
        if not self.placement_dirty and not self._retry_due():
            return
        for _round in range(5):  # another round when a supervisor found its run taken meanwhile
            if not self._place_round():
                break

    def _retry_due(self) -> bool:
        wall = time.time()
        return any(
            run.retry_after is not None and run.retry_after <= wall and run.state == RunState.PENDING and run.blocked is None
            for run in self.runs.values()
        )

    def _place_round(self) -> bool:
        """Place and start what fits; True when another round may place more."""
        self.placement_dirty = False
        batch_device = self.executor.placement_device()
        if batch_device is not None:
            return self._submit_round(batch_device)
        page = self._sift_limit()
        candidates = self._candidates(page)
        if not candidates:
            return False
        try:
            with self.claims.transaction() as txn:
                self.cannot_place = None  # the claims directory works (again)
                reading = self.inventory.read()
                self._note_inventory(reading.status, reading.problems)
                self.last_devices = reading.devices
                if reading.paused:
                    # GPUs exist but cannot be read (e.g. driver upgraded under us): place nothing, look again.
                    self.next_placement_retry = time.monotonic() + self.options.poll_interval_s
                    return False
                if not reading.devices and not self.options.watch:
                    # No GPU found and no CPU slots (--cpu-slots 0): a batch run would wait forever.
                    self.cannot_place = (f"no device to run on ({without_retry_note(reading.status)}); see `runqueue gpus`,"
                                         " or give --cpu-slots 1 or more")
                    return False
                live = txn.live_claims()
                placements = self._decide(candidates, reading.devices, live)
                while not placements and len(candidates) == page and self._room_left(reading.devices, live):
                    # None of this page fits, yet a device has room: runs further on may fit it.
                    later = self._candidates(page, after=candidates[-1].run.path)
                    if not later:
                        break
                    candidates = later
                    placements = self._decide(candidates, reading.devices, live)
                if not placements:
                    self._note_waiting(candidates, reading.devices, live)
                    # Foreign processes end and NVML memory frees without any event of ours:
                    # look again after a while.
                    self.next_placement_retry = time.monotonic() + self.options.poll_interval_s
                    return False
                return self._start(placements, live, txn)
        except (InventoryError, ClaimError) as error:
            self._problem_once(str(error))
            if isinstance(error, ClaimError) and not self.options.watch:
                # A claims directory that is no directory or not writable does not mend itself; a
                # watching queue keeps trying (a service outlives the fix), a batch one stops.
                self.cannot_place = str(error)
            self.next_placement_retry = time.monotonic() + self.options.poll_interval_s
            return False

    def _submit_round(self, device: Device) -> bool:
        """A batch system places the runs: hand it every candidate (up to the executor's capacity)."""
        watched = sum(1 for run in self.runs.values() if run.handle is not None)
        room = self.executor.capacity(watched)
        batch = _SUBMIT_BATCH if room is None else min(room, _SUBMIT_BATCH)
        if batch <= 0:
            return False
        candidates = self._candidates(limit=batch)
        if not candidates:
            return False
        again = self._start([(candidate, device) for candidate in candidates], [], None)
        if len(candidates) == batch and self.next_placement_retry is None:
            self.placement_dirty = True  # more next turn, after a look at signals and ended runs
        return again

    def _sift_limit(self) -> int:
        """Candidates looked at per page: enough to fill every slot several times over."""
        return 4 * max(1, len(self.last_devices) or 1) * self.options.max_per_gpu + 16

    def _room_left(self, devices: tuple[Device, ...], live: list[Claim]) -> bool:
        """Whether some device would take a run that needs no memory (a free slot, no foreign block)."""
        return bool(place([PlacementRequest(run_dir="", memory_mb=0)], devices, live, self.policy))

    def _candidates(self, limit: int | None = None, after: Path | None = None) -> list[Candidate]:
        """Pending runs that may start now, in path order, fresh from disk (another queue may have moved)."""
        sifted = sift_pending(
            self.runs.values(),
            limit=limit or self._sift_limit(),
            memory_per_run=self.options.memory_per_run,
            time_limit_s=self.options.time_limit_s,
            submitted=self.executor.submitted,
            after=after,
        )
        if sifted.maintained and self.next_placement_retry is None:
            self.next_placement_retry = time.monotonic() + _MAINTENANCE_RETRY_S
        self._announce_maintenance(sifted.maintained, [candidate.run for candidate in sifted.ready])
        for run in sifted.elsewhere:
            self._watch_running_elsewhere(run)
        for run, error in sifted.refused:
            self._block(run, error, recheck=True, event=f"not started: {error}")
        return sifted.ready

    def _announce_maintenance(self, held: list[TrackedRun], ready: list[TrackedRun]) -> None:
        """Say once when a run starts waiting for lfads-manager, so a quiet console is explained."""
        for run in held:
            if run.path not in self.waiting_for_manager:
                self.console.event(f"[{run.name}] waiting: lfads-manager is rewriting its inputs; it starts when that ends")
        self.waiting_for_manager.difference_update(run.path for run in ready)
        self.waiting_for_manager.update(run.path for run in held)

    def _decide(self, candidates: list[Candidate], devices: tuple[Device, ...], live: list[Claim]) -> list[tuple[Candidate, Device]]:
        by_dir = {candidate.request.run_dir: candidate for candidate in candidates}
        placed: list[tuple[Candidate, Device]] = []
        for request, device in place_with_oom_fallback([c.request for c in candidates], devices, live, self.policy):
            candidate = by_dir[request.run_dir]
            candidate.request = request  # an out-of-memory retry may have been relaxed to an ordinary one
            placed.append((candidate, device))
        # A request nothing could ever hold (more memory than any device has) would wait forever.
        if not placed:
            for candidate in candidates:
                largest = never_fits(candidate.request, devices, self.options.max_per_gpu)
                if largest is not None:
                    reason = (
                        f"it declares {candidate.request.memory_mb} MB and the largest device has {largest} MB; "
                        f"lower memory_mb in {candidate.run.paths.resources.name} or pass a smaller --memory-per-run"
                    )
                    self._block(candidate.run, reason, recheck=True, event=f"cannot be placed: {reason}")
        return placed

    def _start(self, placements: list[tuple[Candidate, Device]], live: list[Claim], txn: ClaimTransaction | None) -> bool:
        """Launch supervisors, wait until each holds its run lock, claim, then let them go.

        `txn` None: a batch system places the runs (no host-wide claim; "launched" means submitted)."""
        launches: list[tuple[Candidate, Device, PendingStart]] = []
        charged = list(live)
        for candidate, device in placements:
            spec = SupervisorSpec(
                run_dir=candidate.request.run_dir,
                device_uuid=device.uuid,
                device_name=device.name,
                device_env=device.job_environment(),
                max_attempts=self.options.retries + 1,
                retry_backoff_s=self.options.retry_backoff_s,
                time_limit_s=candidate.resources.time_limit_s,
                kill_grace_s=self.options.kill_grace_s,
                queue_id=self.queue_id,
                device_free_mb=free_memory_mb(device, charged),
                claims_dir=None if txn is None else str(self.claims.directory),
            )
            charged.append(provisional_claim(candidate.request, device, self.queue_id))
            offset = _file_size(candidate.run.paths.out_log)
            pending = self.executor.launch(spec)
            self.hooks.tick()  # a launch may be a slow sbatch: keep systemd's watchdog fed between them
            launches.append((candidate, device, pending))
            candidate.run.tail = None if self.options.quiet else LogTail(candidate.run.paths.out_log, offset)
        self.executor.await_replies([pending for _, _, pending in launches], _REPLY_TIMEOUT_S)
        again = False
        for candidate, device, pending in launches:
            run = candidate.run
            if not pending.started:
                self.executor.abandon(pending)
                run.tail = None
                again = again or pending.reply.get("status") != "deferred"
                self._not_started(run, pending)
                continue
            if txn is not None:
                pid = int(pending.reply["pid"])
                try:
                    txn.add(Claim(str(run.path), device.uuid, candidate.request.memory_mb, pid, pid, self.queue_id, time.time()))
                except ClaimError as error:
                    self.executor.abandon(pending)  # never run unclaimed
                    run.tail = None
                    self._problem_once(str(error))
                    continue
            handle = self.executor.confirm(pending)
            tail = run.tail
            self._start_watching(run, handle, log_offset=None)
            run.tail = tail
            run.overdue_at = _overdue_at(time.time(), candidate.resources.time_limit_s, self.options.kill_grace_s)
            run.ended_here = False
            attempt = pending.reply.get("attempt")
            resume = pending.reply.get("resume_step")
            more = f", resuming at {resume}" if resume else ""
            where = self.executor.started_text(handle, device)
            self.console.event(f"[{run.name}] {where}, attempt {attempt}/{max(self.options.retries + 1, int(attempt or 1))}{more}")
        return again

    def _block(self, run: TrackedRun, reason: str, *, recheck: bool, event: str, recheck_after_s: float = 0.0) -> None:
        run.blocked = reason
        run.recheck_block = recheck
        run.recheck_after = time.monotonic() + recheck_after_s
        if reason != run.last_block_message:  # a re-check that finds the same problem stays quiet
            run.last_block_message = reason
            self.console.event(f"[{run.name}] {event}")

    def _not_started(self, run: TrackedRun, pending: PendingStart) -> None:
        status = pending.reply.get("status")
        if status == "busy":
            self._watch_running_elsewhere(run)
        elif status == "finished":
            paths = run.paths
            run.state = RunState.DONE if os.path.lexists(paths.done_marker) else RunState.FAILED
        elif status == "deferred":
            # The batch system refused for now (controller down, submit limit): try again later,
            # without counting it against the run.
            self._problem_once(str(pending.reply.get("message", "not submitted")))
            self.next_placement_retry = time.monotonic() + self.options.poll_interval_s
        else:
            run.crashes += 1
            message = str(pending.reply.get("message", "unknown error"))
            if run.crashes >= _MAX_CRASHES or pending.reply.get("reason") == Reason.FOLDER_VANISHED or pending.reply.get("final"):
                # A watching queue tries again now and then (the folder may have been fixed): one
                # supervisor start a minute, and silence while the problem stays the same.
                self._block(run, message, recheck=self.options.watch, event=f"could not start: {message}",
                            recheck_after_s=_BLOCKED_START_RECHECK_S)
            else:
                self.console.event(f"[{run.name}] could not start: {message}")
                self.placement_dirty = True  # try again on the next turn, until it starts or is blocked

    def _note_waiting(self, candidates: list[Candidate], devices: tuple[Device, ...], live: list[Claim]) -> None:
        """Say why nothing starts, now and then, so a queue never waits in silence."""
        if time.monotonic() < self.next_waiting_note or not candidates:
            return
        self.next_waiting_note = time.monotonic() + _WAITING_NOTE_EVERY_S
        running_here = any(run.handle is not None for run in self.runs.values())
        waiting = [candidate for candidate in candidates if candidate.run.blocked is None]
        if running_here or not waiting:
            return  # a run ending will make room; nothing surprising
        first = waiting[0]
        self.console.event(f"[{first.run.name}] {why_not_placed(first.request, devices, live, self.policy)}")

    # ================================================================ console
    def _tail_logs(self) -> None:
        for run in self.runs.values():
            if run.handle is not None and run.tail is not None:
                self.console.run_output(run.name, run.tail.read_lines())

    def counts(self) -> RunCounts:
        return count_runs(self.runs.values(), self.executor.waiting)

    def status_line(self) -> str:
        return status_text(self.counts(), stopping=bool(self.stop_level))

    def _show_status(self) -> None:
        line = self.status_line()
        self.console.status(line)
        if line != self.last_status:
            self.last_status = line
            self.hooks.status(line)

    def _note_inventory(self, status: str, problems: tuple[str, ...]) -> None:
        # The NVML retry countdown changes at every reading: it alone is no news.
        settled = without_retry_note(status)
        if settled != self.inventory_status:
            self.inventory_status = settled
            # A batch queue on a machine without a driver starts on the CPU at once: the countdown to
            # the next NVML attempt only matters to a watching queue (a driver installed meanwhile).
            self.console.event(f"devices: {status if self.options.watch else settled}")
        for problem in problems:
            self._problem_once(problem)

    def _problem_once(self, text: str) -> None:
        if text not in self.problems_shown:
            self.problems_shown.add(text)
            self.console.event(text)

    def _recheck_ended(self) -> None:
        """Markers of ended runs, read again: while stopping no rescan sees a requeue or another queue's end."""
        for run in self.runs.values():
            if run.state in (RunState.DONE, RunState.FAILED) and run.handle is None:
                run.state = marker_state(run.paths)

    def _summarize(self) -> int:
        self._recheck_ended()
        self.console.status(self.status_line(), force=True)
        self.console.close()
        counts = self.counts()
        for line in summary_lines(list(self.runs.values()), counts):
            self.console.event(line)
        if self.cannot_place is not None and (counts.pending or counts.running):
            self.console.event(f"stopped: runs cannot be started: {self.cannot_place}")
            return 2
        if counts.failed or counts.blocked:
            return 1
        if self.stop_level and (counts.pending or counts.running):
            return 130
        return 0


def _overdue_at(started_at: float | None, time_limit_s: float | None, kill_grace_s: float) -> float | None:
    """Monotonic time by which a supervisor that started its attempt at `started_at` (wall clock)
    should have stopped it for its time limit; None without a limit."""
    if started_at is None or time_limit_s is None:
        return None
    return time.monotonic() + started_at + time_limit_s + kill_grace_s + _OVERDUE_MARGIN_S - time.time()


def _file_size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
