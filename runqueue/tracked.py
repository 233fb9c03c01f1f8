"""What the queue knows about each run it has found, and the counts and summary it shows of them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from runqueue.executors.base import RunHandle
from runqueue.layout import RunPaths
from runqueue.logtail import LogTail
from runqueue.orphans import Orphan
from runqueue.runstate import RunState, read_failure


@dataclass
class TrackedRun:
    path: Path
    collection: str
    name: str  # on the console; the short name, unless another run has it too (naming.disambiguate_names)
    state: RunState
    handle: RunHandle | None = None
    elsewhere: bool = False  # held by a process we cannot watch (another host, a lost supervisor's step)
    retry_after: float | None = None  # wall clock
    blocked: str | None = None  # this queue will not place it, and why
    recheck_block: bool = False  # the block may lift by itself (file fixed, devices changed): re-check on rescans
    recheck_after: float = 0.0  # monotonic; a re-check that costs a start attempt waits this long
    needs_space: bool = False  # blocked by a full disk: re-checked only once its disk has space again
    last_block_message: str | None = None
    crashes: int = 0
    short_name: str = ""  # the name run_identity gave; set from `name` when made
    # state.json when this queue last read a back-off or blocked the run: a requeue replaces it.
    state_stamp: tuple[int, int, int] | None = None
    tail: LogTail | None = None
    overdue_at: float | None = None  # monotonic: past its time limit and kill grace, its supervisor should be gone
    ended_here: bool = False
    # Held by steps whose supervisor is gone (on this host): what state.json said at the last look,
    # and the attempt whose steps the queue has begun stopping.
    orphan: Orphan | None = None
    orphan_stopped: Orphan | None = None
    folder_id: tuple[int, int] | None = None  # the run folder seen running: a new one at its path is another run
    folder_fd: int | None = None  # while running: the folder itself, to tell deleted from moved (departed.py)

    def __post_init__(self) -> None:
        self.short_name = self.short_name or self.name

    @property
    def paths(self) -> RunPaths:
        return RunPaths(self.path)

    @property
    def is_blocked(self) -> bool:
        return self.blocked is not None and self.state == RunState.PENDING


@dataclass
class RunCounts:
    running: int = 0
    queued: int = 0  # of the running: handed to a batch system, not started yet
    pending: int = 0
    done: int = 0
    failed: int = 0
    blocked: int = 0  # pending runs this queue will not place (counted apart from pending)


def count_runs(runs: Iterable[TrackedRun], waiting: Callable[[RunHandle], bool]) -> RunCounts:
    """`waiting(handle)`: the executor says the run is queued elsewhere, not started."""
    counts = RunCounts()
    for run in runs:
        if run.is_blocked:
            counts.blocked += 1
        elif run.state == RunState.RUNNING:
            counts.running += 1
            if run.handle is not None and waiting(run.handle):
                counts.queued += 1
        elif run.state == RunState.PENDING:
            counts.pending += 1
        elif run.state == RunState.DONE:
            counts.done += 1
        else:
            counts.failed += 1
    return counts


def status_text(counts: RunCounts, stopping: bool) -> str:
    """The one status line: `2 running, 1 queued, 5 pending, 3 done, 0 failed, 1 blocked (stopping)`."""
    queued = f", {counts.queued} queued" if counts.queued else ""
    text = f"{counts.running - counts.queued} running{queued}, {counts.pending} pending, {counts.done} done, {counts.failed} failed"
    if counts.blocked:
        text += f", {counts.blocked} blocked"
    return text + (" (stopping)" if stopping else "")


@dataclass(frozen=True)
class Dropped:
    """A run whose folder went while it ran: no markers left here to count it by."""

    name: str
    what: str
    lost: bool  # its work did not end in lfads.done (deleted, or moved and failed): a failure
    folder_id: tuple[int, int] | None  # to know it again if it was moved within the roots


def summary_lines(runs: list[TrackedRun], counts: RunCounts, dropped: Sequence[Dropped] = ()) -> list[str]:
    """The summary printed when `runqueue run` ends: totals, then each failed, blocked and dropped
    run with why."""
    head = (
        f"summary: {len(runs) + len(dropped)} run(s): {counts.done} done, {counts.failed} failed, "
        f"{counts.running} running, {counts.pending} pending"
    )
    lines = [head + (f", {counts.blocked} blocked" if counts.blocked else "") + (f", {len(dropped)} gone" if dropped else "")]
    for run in runs:
        if run.state == RunState.FAILED:
            failure = read_failure(run.paths) or {}
            # A run cancelled before it started has no lfads.out: its lfads.failed says it all.
            where = run.paths.out_log if run.paths.out_log.exists() else run.paths.failed_marker
            lines.append(f"  failed  {run.name}: {failure.get('reason')} — {failure.get('message', '')} ({where})")
    lines.extend(f"  blocked {run.name}: {run.blocked}" for run in runs if run.is_blocked)
    lines.extend(f"  gone    {gone.name}: {gone.what}" for gone in dropped)
    return lines
