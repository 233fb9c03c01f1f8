"""Which pending runs may start now, each re-read from disk: another queue may have moved it.

The scheduler's view of a run (TrackedRun) can be seconds old; a run's markers, lock, retry
back-off and resource file are what decide. Runs found finished are updated in place; runs found
running elsewhere and runs whose resource file is bad are handed back for the scheduler to act on.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from runqueue import runlock
from runqueue.devices.placement import PlacementRequest
from runqueue.errors import RunqueueError
from runqueue.layout import RunPaths
from runqueue.resources import RunResources, load_resources
from runqueue.root_safety import unsafe_as_root
from runqueue.runstate import Phase, Reason, RunState, load_state, state_stamp
from runqueue.steps import script_problem
from runqueue.tracked import TrackedRun

# A train script younger than this may still be being written (the MATLAB run manager's fprintf
# calls, `cp -r`, a generator echoing line by line): bash would run the part already there, exit 0,
# and the run would be marked done untrained. lfads-manager writes it whole (a rename), and a
# requeued run's script is old, so in practice only runs copied or written in right now wait.
SCRIPT_SETTLE_S = 1.0


@dataclass
class Candidate:
    run: TrackedRun
    request: PlacementRequest
    resources: RunResources


@dataclass
class Sifted:
    ready: list[Candidate] = field(default_factory=list)  # in path order
    elsewhere: list[TrackedRun] = field(default_factory=list)  # held by another supervisor or batch job
    refused: list[tuple[TrackedRun, str]] = field(default_factory=list)  # a bad runqueue.json, unsafe as root: why
    maintained: list[TrackedRun] = field(default_factory=list)  # held by lfads-manager (prepare, delete-output) now
    settles_at: float | None = None  # wall time the first train script still settling may be run


def sift_pending(
    runs: Iterable[TrackedRun],
    *,
    limit: int,
    memory_per_run: int,
    time_limit_s: float | None,
    submitted: Callable[[Path], bool],
    after: Path | None = None,
) -> Sifted:
    """Pending runs that may start now (at most `limit`, after the path `after`), fresh from disk."""
    wall = time.time()
    sifted = Sifted()
    for run in sorted(runs, key=lambda tracked: tracked.path):
        if run.state != RunState.PENDING or run.blocked is not None or run.handle is not None:
            continue
        if after is not None and run.path <= after:
            continue
        if run.retry_after is not None and run.retry_after > wall:
            continue
        paths = run.paths
        if os.path.lexists(paths.done_marker):
            run.state = RunState.DONE
            continue
        if os.path.lexists(paths.failed_marker):
            run.state = RunState.FAILED
            continue
        holder = runlock.held_by(paths.lock)
        if holder is runlock.HeldBy.MANAGER:
            sifted.maintained.append(run)  # the manager rewrites its inputs for a moment: look again soon
            continue
        if holder is runlock.HeldBy.RUN or submitted(run.path):
            sifted.elsewhere.append(run)
            continue
        written = _written_at(paths.train_script)
        if written is not None and 0.0 <= wall - written < SCRIPT_SETTLE_S:
            settles = written + SCRIPT_SETTLE_S
            sifted.settles_at = settles if sifted.settles_at is None else min(sifted.settles_at, settles)
            continue
        state = load_state(paths)
        if state.phase == Phase.RETRY_WAIT and state.retry_after is not None and state.retry_after > wall:
            run.retry_after = state.retry_after
            run.state_stamp = state_stamp(paths)
            continue
        run.retry_after = None
        run.state_stamp = None
        try:
            resources = load_resources(paths, memory_per_run, time_limit_s)
        except RunqueueError as error:
            sifted.refused.append((run, str(error)))
            continue
        unsafe = unsafe_as_root(paths)
        if unsafe is not None:
            sifted.refused.append((run, unsafe))
            continue
        refusal = train_script_reason(paths) or interrupted_deletion_reason(paths)
        if refusal is not None:
            sifted.refused.append((run, refusal))
            continue
        request = PlacementRequest(run_dir=str(run.path), memory_mb=resources.memory_mb)
        if state.phase == Phase.RETRY_WAIT and state.reason == Reason.CUDA_OOM and state.failed_device_uuid:
            # Out of GPU memory last time: another device, with more free memory than that one had.
            request = dataclasses.replace(
                request,
                exclude=frozenset({state.failed_device_uuid}),
                min_free_mb=(state.device_free_mb or resources.memory_mb) + 1,
            )
        sifted.ready.append(Candidate(run, request, resources))
        if len(sifted.ready) >= limit:
            break
    return sifted


def _written_at(path: Path) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None  # missing or unreadable: the supervisor fails the run with the reason


def train_script_reason(paths: RunPaths) -> str | None:
    """Why a run is not started for what its train script holds: no command (bash would exit 0:
    "done"), Windows line endings or a byte-order mark. The supervisor checks every step's script again."""
    return script_problem(paths.train_script)


def interrupted_deletion_reason(paths: RunPaths) -> str | None:
    """Why a run whose `lfads-manager delete-output` was killed midway is not started: what is left of
    its output is neither the old model nor nothing."""
    if not os.path.lexists(paths.deletion_record):
        return None
    return (f"lfads-manager delete-output was interrupted while deleting {paths.lfads_output} (see {paths.deletion_record});"
            f" run `lfads-manager delete-output {paths.root}` again to finish it")
