"""`runqueue requeue` and `runqueue cancel`: act on runs through their markers, lock and supervisor."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from runqueue import runlock
from runqueue.atomicio import atomic_write_json
from runqueue.layout import RunPaths
from runqueue.procinfo import file_holders, is_alive, session_members
from runqueue.runstate import FailureRecord, PersistedState, Reason, load_state, now_iso, save_state


class RequeueRefused(Exception):
    """The run cannot be requeued now (the message says why and what to do)."""


class CancelRefused(Exception):
    """The run cannot be cancelled now (the message says why and what to do)."""


def requeue(paths: RunPaths) -> str:
    """Clear lfads.done / lfads.failed and the attempt count; returns what was done, in words."""
    if runlock.is_maintained(paths.lock):
        raise RequeueRefused("its inputs are being rewritten (lfads-manager prepare or delete-output); try again when that is done")
    if runlock.is_held(paths.lock):
        raise RequeueRefused("is running; not requeued (`runqueue cancel` it first)")
    removed = []
    for marker in (paths.done_marker, paths.failed_marker):
        with contextlib.suppress(FileNotFoundError):
            marker.unlink()
            removed.append(marker.name)
    previous = load_state(paths)
    if paths.state.exists():
        save_state(paths, PersistedState(history=previous.history))
    if removed:
        return f"requeued (removed {', '.join(removed)})"
    return "requeued (attempt count reset)" if previous.attempt else "already pending"


def cancel(paths: RunPaths, grace_s: float = 15.0) -> str:
    """Stop a run's whole session and mark it failed(cancelled); returns what was done, in words."""
    if os.path.lexists(paths.done_marker):
        return "already done; nothing to cancel"
    if os.path.lexists(paths.failed_marker):
        return "already failed; nothing to cancel"
    if runlock.is_maintained(paths.lock):
        raise CancelRefused("is not running: lfads-manager (prepare or delete-output) is rewriting its inputs; "
                            "cancel it when that is done")
    if not runlock.is_held(paths.lock):
        _write_cancelled(paths, None, "cancelled before it started")
        return "was not running; marked failed (cancelled) so it does not start"
    state = load_state(paths)
    pid, start = state.supervisor_pid, state.supervisor_start_time
    if is_alive(pid, start):
        assert pid is not None
        if _ask_supervisor(pid, start, grace_s) and os.path.lexists(paths.failed_marker):
            return f"cancelled (supervisor pid {pid} stopped it)"
    # No supervisor to ask (it died and left steps running), or it did not answer: stop its
    # session ourselves (the supervisor led it, so its pid is the session id), and steps that left
    # it (setsid). Only processes of this run, never a session that a reused pid now leads: in the
    # session, those holding the run lock (every step inherits it, wherever the folder moved) or
    # carrying the run's RUNQUEUE_RUN_DIR; outside it, runqueue steps holding the run lock.
    sid = pid or 0
    hung = {sid} if sid and is_alive(sid, start) else set()  # a supervisor that did not answer (identity checked)

    def members() -> list[int]:
        holders = set(file_holders(paths.lock))
        in_session = ({member for member in session_members(sid) if member in holders or _carries_run_dir(member, paths)}
                      if sid else set())
        alive = {member for member in hung if is_alive(member, start)}
        return sorted((in_session | alive | set(_run_steps_holding_lock(paths))) - {os.getpid()})

    if not members():
        raise CancelRefused("is held by a process that is not one of its steps (its supervisor is gone); "
                            f"nothing stopped — see {paths.out_log}, and try again in a moment")
    _terminate(members, grace_s)
    _write_cancelled(paths, state.step, "cancelled with `runqueue cancel`; the queue stopped the processes itself")
    return "cancelled (processes stopped by `runqueue cancel`)"


def _ask_supervisor(pid: int, start: int | None, grace_s: float) -> bool:
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return False
    try:
        if not is_alive(pid, start):
            return False
        signal.pidfd_send_signal(pidfd, signal.SIGUSR1)
        ready, _, _ = select.select([pidfd], [], [], grace_s + 10.0)
        return bool(ready)
    except OSError:
        return False
    finally:
        os.close(pidfd)


def _terminate(members: Callable[[], list[int]], grace_s: float) -> None:
    """TERM every process `members()` lists, wait up to `grace_s` for them to go, KILL the rest."""

    def send(signum: int) -> None:
        for pid in members():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signum)

    send(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and members():
        time.sleep(0.05)
    send(signal.SIGKILL)


def _run_steps_holding_lock(paths: RunPaths) -> list[int]:
    """Holders of the run lock that are runqueue steps (they carry a RUNQUEUE_RUN_DIR, perhaps the
    folder's old name): never a queue that has the lock file open for a moment to test it."""
    return [pid for pid in file_holders(paths.lock) if _run_dir_of(pid) is not None]


def _carries_run_dir(pid: int, paths: RunPaths) -> bool:
    """The process carries this run's RUNQUEUE_RUN_DIR (as every step and its children do)."""
    run_dir = _run_dir_of(pid)
    try:
        return run_dir is not None and os.path.samefile(run_dir, paths.root)
    except OSError:
        return False


def _run_dir_of(pid: int) -> str | None:
    prefix = b"RUNQUEUE_RUN_DIR="
    try:
        with open(f"/proc/{pid}/environ", "rb") as environ:
            values = [item[len(prefix):] for item in environ.read().split(b"\0") if item.startswith(prefix)]
    except OSError:
        return None
    return os.fsdecode(values[-1]) if values else None


def _write_cancelled(paths: RunPaths, step: str | None, message: str) -> None:
    state = load_state(paths)
    record = FailureRecord(
        step=step,
        exit_code=None,
        signal=None,
        attempt=state.attempt,
        time=now_iso(),
        reason=str(Reason.CANCELLED),
        message=message,
        last_lines=[],
        device=state.device_uuid,
    )
    atomic_write_json(paths.failed_marker, record.to_json())


def resolve_runs(arguments: Sequence[str | Path]) -> tuple[list[Path], list[str]]:
    """Run folders named by `arguments` (a run, or a folder holding runs); plus one error per bad argument."""
    from runqueue.discovery import find_runs

    runs: list[Path] = []
    errors: list[str] = []
    for argument in arguments:
        path = Path(argument)
        if not path.exists():
            errors.append(f"{argument}: no such file or directory")
            continue
        found = find_runs([path])
        if not found:
            errors.append(f"{argument}: no run folder (a folder with lfads_train.sh) here or below")
        runs.extend(item.path for item in found)
    return runs, errors
