"""`runqueue status`: every run under the roots with its state, and the devices (DESIGN.md §5)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from runqueue import runlock
from runqueue.access import not_writable_by
from runqueue.candidates import interrupted_deletion_reason, train_script_reason
from runqueue.devices.claims import Claim
from runqueue.devices.model import Device
from runqueue.devices.placement import (
    PlacementPolicy,
    PlacementRequest,
    never_fits,
    placement_verdict,
    provisional_claim,
)
from runqueue.discovery import FoundRun
from runqueue.diskspace import disk_is_full
from runqueue.errors import RunqueueError
from runqueue.layout import DEFAULT_MEMORY_MB, RunPaths
from runqueue.naming import run_identity
from runqueue.resources import load_resources
from runqueue.root_safety import unsafe_as_root
from runqueue.runstate import CONTINUING_PHASES, Phase, RunState, load_state, read_failure, resume_point


@dataclass(frozen=True)
class RunRow:
    """One `runs` entry of `status --json`, exactly the keys of DESIGN.md §5."""

    path: str
    collection: str
    name: str
    state: str
    step: str | None
    attempt: int | None
    device: str | None
    pid: int | None
    exit_code: int | None
    reason: str | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def run_row(found: FoundRun, devices: Sequence[Device], claims: list[Claim], policy: PlacementPolicy,
            memory_per_run: int = DEFAULT_MEMORY_MB, queue_is_root: bool | None = None, queue_uid: int | None = None) -> RunRow:
    """One run's row. A pending run that would start now is charged to `claims` (a provisional
    claim), so the rows after it see the devices as the queue would after placing it: with one GPU
    and --max-per-gpu 1, one run is ready and the others wait."""
    paths = RunPaths(found.path)
    collection, name = run_identity(found.path, found.root)
    state = load_state(paths)
    attempt = state.attempt or None
    base = {"path": str(found.path), "collection": collection, "name": name}
    if found.has_done:
        # Finished by a queue, or made by hand (then state.json, if any, is of an earlier attempt).
        finished = state.phase == Phase.SUCCEEDED
        return RunRow(**base, state=RunState.DONE, step=None, attempt=attempt if finished else None,
                      device=state.device_uuid if finished else None, pid=None, exit_code=0 if finished else None, reason=None)
    if found.has_failed:
        failure = read_failure(paths) or {}
        return RunRow(
            **base,
            state=RunState.FAILED,
            step=_str(failure.get("step")),
            attempt=_int(failure.get("attempt")),
            device=_str(failure.get("device")),
            pid=None,
            exit_code=_int(failure.get("exit_code")),
            reason=_str(failure.get("reason")),
        )
    holder = runlock.held_by(paths.lock)
    if holder is runlock.HeldBy.MANAGER:
        return RunRow(**base, state=RunState.PENDING, step=resume_point(state), attempt=None, device=None, pid=None, exit_code=None,
                      reason="its inputs are being rewritten (lfads-manager prepare or delete-output); it can start when that is done")
    if holder is runlock.HeldBy.RUN:
        live = runlock.live_supervisor(paths.lock, state.supervisor_pid, state.supervisor_start_time)
        pid = None if live is None else live[0]
        device = state.device_uuid or next((c.device_uuid for c in claims if c.run_dir == str(found.path)), None)
        return RunRow(**base, state=RunState.RUNNING, step=state.step, attempt=attempt, device=device, pid=pid, exit_code=None, reason=None if pid else "held by a process whose supervisor is gone")
    # Where the supervisor will start it: a requeued run (marker deleted) afresh, with no old attempt.
    goes_on = state.phase in CONTINUING_PHASES
    return RunRow(**base, state=RunState.PENDING, step=resume_point(state), attempt=attempt if goes_on else None, device=None, pid=None, exit_code=state.exit_code if state.phase == Phase.RETRY_WAIT else None, reason=_pending_reason(paths, state, devices, claims, policy, memory_per_run, queue_is_root, queue_uid))


def _clock(when: float) -> str:
    """A local time of the next day or so as the clock shows it, a later one with its date."""
    try:
        local = time.localtime(when)
    except (OverflowError, OSError, ValueError):  # past what the platform's time_t holds
        return "a time too far ahead to show (see state.json's retry_after)"
    return time.strftime("%H:%M:%S" if when - time.time() < 86400 else "%Y-%m-%d %H:%M:%S", local)


def _pending_reason(paths: RunPaths, state: Any, devices: Sequence[Device], claims: list[Claim], policy: PlacementPolicy,
                    memory_per_run: int, queue_is_root: bool | None = None, queue_uid: int | None = None) -> str | None:
    prefix = ""
    if state.phase == Phase.RETRY_WAIT:
        if state.retry_after and state.retry_after > time.time():
            return f"retry after {state.reason} (attempt {state.attempt} failed); not before {_clock(state.retry_after)}"
        prefix = f"retry due after {state.reason} (attempt {state.attempt} failed); "  # then it waits like any run
    if state.phase == Phase.INTERRUPTED:
        prefix = f"interrupted; resumes at {state.resume_step}; "
    obstacle = paths.runtime_dir_obstacle() or (None if queue_uid is None else not_writable_by(paths, queue_uid))
    if obstacle is not None:
        return obstacle  # not charged to a device: it cannot start
    if disk_is_full(paths.root):
        # A supervisor could not record how it ended, or could not even write its lock and state:
        # queues wait for space rather than start it.
        return f"its disk is full ({paths.root}); free space there and it goes again"
    try:
        memory = load_resources(paths, memory_per_run, None).memory_mb
    except RunqueueError as error:
        return str(error)
    unsafe = unsafe_as_root(paths, queue_is_root)  # None: judged by this command's own uid
    if unsafe is not None:
        return unsafe
    refusal = train_script_reason(paths) or interrupted_deletion_reason(paths)
    if refusal is not None:
        return refusal
    request = PlacementRequest(str(paths.root), memory)
    largest = never_fits(request, devices, policy.max_per_gpu)
    if largest is not None:
        return (f"{prefix}cannot be placed: it declares {memory} MB and the largest device has {largest} MB;"
                f" lower memory_mb in {paths.resources.name} or the queue's --memory-per-run")
    reason, device = placement_verdict(request, devices, claims, policy)
    if device is not None:
        claims.append(provisional_claim(request, device))
    return prefix + reason


def render_table(rows: Sequence[RunRow], device_lines: Sequence[str]) -> str:
    """The human `status`: one line per run, a count line, then the devices."""
    header = ("STATE", "ATTEMPT", "STEP", "DEVICE", "RUN", "REASON")
    table = [header] + [
        (
            row.state,
            "-" if row.attempt is None else str(row.attempt),
            row.step or "-",
            row.device or "-",
            f"{row.collection}/{row.name}" if row.collection else row.name,
            row.reason or "",
        )
        for row in rows
    ]
    widths = [max(len(line[column]) for line in table) for column in range(len(header) - 1)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line[:-1], widths, strict=True)) + ("  " + line[-1] if line[-1] else "") for line in table]
    counts = {state: sum(1 for row in rows if row.state == state) for state in RunState}
    lines.append(", ".join(f"{counts[state]} {state}" for state in RunState) + f" ({len(rows)} runs)")
    lines.extend(device_lines)
    return "\n".join(line.rstrip() for line in lines)


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


__all__ = ["RunRow", "render_table", "run_row"]
