"""A run's state: what the markers say (the truth any queue agrees on) plus `.runqueue/state.json`.

state.json holds data only (no pids to trust blindly, no handles): which attempt, which step to
resume from, when a retry may start, what the last failure was. Loading is tolerant: unknown
keys are ignored and missing ones take defaults, so a state file from an older version keeps
loading (tests/runqueue/data/ holds one).
"""

from __future__ import annotations

import math
import os
import socket
import time
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any

from runqueue import runlock
from runqueue.atomicio import atomic_write_json, parse_json, read_json_object, read_small_file
from runqueue.layout import STEP_SCRIPTS, RunPaths

STATE_VERSION = 1


class RunState(StrEnum):
    """The four states of DESIGN.md §5, derived from the markers and the lock."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class Phase(StrEnum):
    """Where the last supervisor left the run (persisted in state.json)."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    RETRY_WAIT = "retry_wait"  # a step failed, attempts remain: go again from `resume_step`
    FAILED = "failed"  # attempts used up; lfads.failed written
    INTERRUPTED = "interrupted"  # stopped by the queue (second Ctrl-C): goes again, not counted
    CANCELLED = "cancelled"


class Reason(StrEnum):
    """Why a step failed: the `reason` of lfads.failed and of `runqueue status`."""

    EXIT_STATUS = "exit_status"
    SIGNAL = "signal"
    TIME_LIMIT = "time_limit"
    CUDA_OOM = "cuda_oom"
    DISK_FULL = "disk_full"
    SCRIPT_MISSING = "script_missing"
    SCRIPT_UNREADABLE = "script_unreadable"
    SPAWN_FAILED = "spawn_failed"
    UNSAFE_AS_ROOT = "unsafe_as_root"  # a root queue would run what another account can change
    LEGACY_OUTPUT_MISSING = "legacy_output_missing"
    LEGACY_SCRIPT_REFUSED = "legacy_script_refused"  # it would defeat the queue (legacy.refusal); not retried
    FOLDER_VANISHED = "folder_vanished"
    CANCELLED = "cancelled"
    OUTPUT_HALF_DELETED = "output_half_deleted"  # written by lfads-manager delete-output, not the queue
    INTERNAL_ERROR = "internal_error"


@dataclass
class PersistedState:
    """Contents of `.runqueue/state.json` (flat on purpose: easy to read by hand and to evolve)."""

    version: int = STATE_VERSION
    phase: str | None = None
    attempt: int = 0  # number of the current (or last) counted attempt, 1-based
    step: str | None = None  # the step running now, or the one that ended the attempt
    resume_step: str | None = None  # where the next attempt starts
    retry_after: float | None = None  # epoch seconds; no queue starts the run before
    device_uuid: str | None = None
    device_name: str | None = None
    device_free_mb: int | None = None  # free memory the placement saw; a CUDA-OOM retry wants more
    supervisor_pid: int | None = None
    supervisor_start_time: int | None = None
    host: str | None = None
    queue_id: str | None = None
    started_at: float | None = None
    time_limit_s: float | None = None  # what this attempt's supervisor enforces (a queue adopting it checks it too)
    kill_grace_s: float | None = None
    ended_at: float | None = None
    exit_code: int | None = None
    signal: int | None = None
    reason: str | None = None
    message: str | None = None
    failed_device_uuid: str | None = None  # device of the last failed attempt (for cuda_oom)
    history: list[dict[str, Any]] = field(default_factory=list)  # one entry per ended attempt

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> PersistedState:
        state = cls()
        for spec in fields(cls):
            if spec.name not in record:
                continue
            value = record[spec.name]
            default = getattr(state, spec.name)
            if _type_fits(value, default, spec.type):
                setattr(state, spec.name, value)
        if state.resume_step not in STEP_SCRIPTS:
            state.resume_step = None
        return state

    def to_json(self) -> dict[str, Any]:
        record = asdict(self)
        record["history"] = record["history"][-20:]  # bounded: a long-lived run must not grow it forever
        return record


# A run in one of these phases, without a marker, goes on where it was (a retry, or a run stopped by
# the queue or whose supervisor was lost); in any other it was requeued and starts afresh.
CONTINUING_PHASES = frozenset({Phase.RETRY_WAIT, Phase.INTERRUPTED, Phase.RUNNING})


def resume_point(state: PersistedState) -> str | None:
    """The step the next attempt starts at; None: the first step."""
    if state.phase == Phase.RETRY_WAIT:
        return state.resume_step
    if state.phase in CONTINUING_PHASES:
        return state.resume_step or state.step
    return None


def _type_fits(value: Any, default: Any, annotation: Any) -> bool:
    text = str(annotation)
    if value is None:
        return "None" in text
    if isinstance(value, bool):
        return "bool" in text
    if text.startswith("list"):
        return isinstance(value, list) and all(isinstance(item, dict) for item in value)
    if "float" in text:  # NaN and infinities (json reads them) are no time anyone meant
        return isinstance(value, int | float) and math.isfinite(value)
    if "int" in text:
        return isinstance(value, int)
    if "str" in text:
        return isinstance(value, str)
    return isinstance(value, type(default))


def load_state(paths: RunPaths) -> PersistedState:
    record = read_json_object(paths.state)
    return PersistedState.from_json(record) if record is not None else PersistedState()


def state_stamp(paths: RunPaths) -> tuple[int, int, int] | None:
    """Identity of state.json as it is now (each save replaces the file): tells that it changed."""
    try:
        info = os.stat(paths.state)
    except OSError:
        return None
    return info.st_ino, info.st_mtime_ns, info.st_size


def save_state(paths: RunPaths, state: PersistedState) -> None:
    paths.runtime_dir.mkdir(exist_ok=True)
    # Not fsynced: state.json is a runtime hint; the markers are the durable truth.
    atomic_write_json(paths.state, state.to_json(), durable=False)


@dataclass(frozen=True)
class FailureRecord:
    """Contents of lfads.failed (DESIGN.md §3)."""

    step: str | None
    exit_code: int | None
    signal: int | None
    attempt: int
    time: str
    reason: str
    message: str
    last_lines: list[str]
    device: str | None = None
    host: str = field(default_factory=socket.gethostname)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def read_failure(paths: RunPaths) -> dict[str, Any] | None:
    """lfads.failed as a dict; a hand-made or garbled file still counts as failed (reason unknown)."""
    if not os.path.lexists(paths.failed_marker):
        return None
    try:
        record = parse_json(read_small_file(paths.failed_marker))
    except OSError as error:  # a permission, a fifo, a file too large: say which, not "not JSON"
        detail = error.strerror or str(error)
        return {"reason": "unknown", "message": f"lfads.failed cannot be read ({detail})"}
    except ValueError:
        record = None
    return record if isinstance(record, dict) else {"reason": "unknown", "message": "lfads.failed is not JSON"}


def marker_state(paths: RunPaths) -> RunState:
    """State from markers and lock only: what every queue and every restart agrees on."""
    if os.path.lexists(paths.done_marker):
        return RunState.DONE
    if os.path.lexists(paths.failed_marker):
        return RunState.FAILED
    if runlock.is_running(paths.lock):
        return RunState.RUNNING
    return RunState.PENDING


_ISO_FORMAT = "%Y-%m-%dT%H:%M:%S%z"


def now_iso() -> str:
    return time.strftime(_ISO_FORMAT)


def iso_time(seconds: float | None) -> str | None:
    """A wall-clock time (time.time()) in now_iso's format."""
    return None if seconds is None else time.strftime(_ISO_FORMAT, time.localtime(seconds))
