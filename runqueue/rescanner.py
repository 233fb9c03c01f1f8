"""Keeping the queue's runs in step with the run folders under its roots: what rescans find.

New folders become pending runs; a removed lfads.done or lfads.failed requeues its run; a
`runqueue requeue` of a run waiting here lets it go at once; a folder that is gone (or retired, or no
longer a run) is dropped. Rescans come every --poll-interval (less often when a pass is costly),
and sooner, looking at changed folders only, after an inotify event.
"""

from __future__ import annotations

import time

from runqueue.discovery import RunScanner
from runqueue.diskspace import disk_is_full
from runqueue.fswatch import DirectoryWatcher
from runqueue.layout import RETIRED_TRAIN_SCRIPT, TRAIN_SCRIPT
from runqueue.naming import disambiguate_names, run_identity
from runqueue.oversight import Oversight
from runqueue.placer import Placer
from runqueue.queue_parts import QueuePart, QueueParts
from runqueue.runstate import RunState, state_stamp
from runqueue.tracked import TrackedRun

_CPU_BUDGET_FACTOR = 200.0  # wait at least 200x the CPU the last rescan took: <= 0.5 % of a core
_WAIT_BUDGET_FACTOR = 10.0  # and 10x its wall time: <= 10 % of the time spent waiting on a (NFS) disk
_RESCAN_GAP_MAX_S = 60.0  # but never longer: only the rescan sees other NFS clients' changes
_HINT_SETTLE_S = 0.05  # after an inotify event, wait this long for the rest of a burst


class Rescanner(QueuePart):
    """`next_rescan`: the periodic rescan is due (0.0: at once); `next_hinted_rescan`: an inotify
    event asked for a quick look, None when none did."""

    def __init__(
        self,
        parts: QueueParts,
        *,
        watcher: DirectoryWatcher | None,
        placer: Placer,
        oversight: Oversight,
    ) -> None:
        super().__init__(parts)
        self.watcher = watcher
        self.placer = placer
        self.oversight = oversight
        self.scanner = RunScanner(parts.options.roots, watcher=watcher)
        self.next_rescan = 0.0
        self.next_hinted_rescan: float | None = None

    def heard_changes(self) -> None:
        """The watcher's file descriptor is readable: schedule a quick look at what changed."""
        assert self.watcher is not None
        if self.watcher.read_events() and self.next_hinted_rescan is None:
            # A short delay gathers a burst (a whole new collection being written) into one scan.
            self.next_hinted_rescan = time.monotonic() + _HINT_SETTLE_S

    def rescan(self, *, full: bool = False, hinted: bool = False) -> None:
        """`hinted`: an inotify event's quick look (changed folders only); it leaves the periodic
        rescan's schedule alone, since only that one sees changes made on other NFS clients."""
        self.next_hinted_rescan = None
        began, began_cpu = time.monotonic(), time.thread_time()
        # A periodic scan also lists a share of the folders again (discovery.REFRESH_SHARES), so
        # what the mtime hint missed (coarse timestamps, NFS attribute caches) is seen within 24.
        found = self.scanner.scan(full=full, hinted=hinted)
        wall, cpu = time.monotonic() - began, time.thread_time() - began_cpu
        for problem in self.scanner.problems:
            self.console.event_once(problem)
        if self.watcher is not None and self.watcher.limit_reached:
            self.console.event_once(
                f"inotify watch limit reached after {self.watcher.watched} folders (sysctl fs.inotify.max_user_watches);"
                " changes in the other folders are seen at the next --poll-interval rescan"
            )
        present = set()
        membership_changed = False  # a run added or removed: names are made unambiguous again
        for item in found:
            present.add(item.path)
            run = self.runs.get(item.path)
            if run is None:
                collection, name = run_identity(item.path, item.root)
                state = RunState.DONE if item.has_done else RunState.FAILED if item.has_failed else RunState.PENDING
                self.runs[item.path] = TrackedRun(item.path, collection, name, state)
                membership_changed = True
                if state == RunState.PENDING:
                    self.placer.dirty = True
                continue
            if run.handle is not None:
                continue  # its supervisor's end tells us what happened
            if (run.blocked is not None and run.recheck_block and time.monotonic() >= run.recheck_after
                    and not (run.needs_space and disk_is_full(run.paths.root))):
                run.blocked = None  # placed or blocked again at the next placement
                run.needs_space = False
                self.placer.dirty = True
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
                self.placer.dirty = True
                self.console.event(f"[{run.name}] requeued (its marker was removed)")
        for path in [path for path, run in self.runs.items() if path not in present and run.handle is None]:
            run = self.runs.pop(path)
            membership_changed = True  # a name it shared may be short again
            if run.state in (RunState.PENDING, RunState.RUNNING):
                if (path / RETIRED_TRAIN_SCRIPT).exists():
                    what = f"was retired by lfads-manager prepare (its param set or run spec left the experiment; see {RETIRED_TRAIN_SCRIPT})"
                elif path.is_dir():
                    what = f"is no longer a run (its {TRAIN_SCRIPT} is gone)"
                else:
                    what = "is gone"
                self.console.event(f"[{run.name}] {path} {what}; dropped")
            if run.state == RunState.RUNNING:
                self.oversight.stop_steps_in_deleted_folder(run)
        if membership_changed:
            disambiguate_names(self.runs.values())
        if not hinted:
            self.next_rescan = time.monotonic() + rescan_gap(self.options.poll_interval_s, wall, cpu)

    def _notice_requeue(self, run: TrackedRun) -> None:
        """`runqueue requeue` of a run that waits out a back-off or was blocked here replaces its
        state.json: it goes now (a run that is still backing off is found so again by the next sift)."""
        if state_stamp(run.paths) == run.state_stamp:
            return
        was_blocked = run.blocked is not None and not run.recheck_block
        was_backing_off = run.retry_after is not None and run.retry_after > time.time()
        run.state_stamp = None
        run.retry_after = None
        if was_blocked:
            run.blocked = None
            run.last_block_message = None
            run.crashes = 0
        if was_blocked or was_backing_off:
            self.console.event(f"[{run.name}] requeued")
        self.placer.dirty = True


def rescan_gap(poll_interval_s: float, wall_s: float, cpu_s: float) -> float:
    """Seconds until the next periodic rescan. A huge tree is rescanned less often than
    --poll-interval asks (at most ~0.5 % of a core, ~10 % of the time waiting on its disk), a small one
    exactly as often; but within a minute, whatever the cost: a slow NFS server's round trips must not
    push a requeue made on another client out by many minutes."""
    budget = max(cpu_s * _CPU_BUDGET_FACTOR, wall_s * _WAIT_BUDGET_FACTOR)
    return max(poll_interval_s, min(budget, _RESCAN_GAP_MAX_S))
