"""`runqueue requeue` and `runqueue cancel`: act on runs through their markers, lock and supervisor."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from runqueue import runlock
from runqueue.atomicio import atomic_write_json
from runqueue.durations import LONGEST_GRACE_S
from runqueue.layout import REQUEUE_NUDGE, SUPERVISOR_LOOKS_EVERY_S, TRAIN_SCRIPT, RunPaths
from runqueue.procinfo import (
    account_name,
    file_holders,
    is_alive,
    processes_with_env,
    session_members,
)
from runqueue.runstate import FailureRecord, PersistedState, Reason, load_state, now_iso, save_state
from runqueue.stopping import Stopping


class RequeueRefused(Exception):
    """The run cannot be requeued now (the message says why and what to do)."""


class CancelRefused(Exception):
    """The run cannot be cancelled now (the message says why and what to do)."""


def requeue(paths: RunPaths) -> str:
    """Clear lfads.done / lfads.failed and the attempt count; returns what was done, in words."""
    holder = runlock.held_by(paths.lock)
    if holder is runlock.HeldBy.MANAGER:
        raise RequeueRefused("its inputs are being rewritten (lfads-manager prepare or delete-output); try again when that is done")
    if not any(os.path.lexists(path) for path in (paths.done_marker, paths.failed_marker, paths.state)):
        return "already pending"  # nothing to clear: leave the folder as it is (no lock file made in it)
    removed = []
    # Held for reading while the markers and state change: a supervisor starting now (it needs the
    # write lock) waits for us, then sees the result, and never has its fresh state.json overwritten.
    with _holding_unstarted(paths) as held:
        if not held:
            raise RequeueRefused("is running; not requeued (`runqueue cancel` it first)")
        for marker in (paths.done_marker, paths.failed_marker):
            with contextlib.suppress(FileNotFoundError):
                marker.unlink()
                removed.append(marker.name)
        previous = load_state(paths)
        if paths.state.exists():
            save_state(paths, PersistedState(history=previous.history))
            runlock.give_to_run_owner(paths.state, paths.root)
    if not removed:
        _nudge_watching_queues(paths)  # removing a marker is heard by itself
    if removed:
        return f"requeued (removed {', '.join(removed)})"
    return "requeued (attempt count reset)" if previous.attempt else "already pending"


def _nudge_watching_queues(paths: RunPaths) -> None:
    """A file made and removed in the run folder: a queue watching it (inotify) looks at the run now
    instead of at its next rescan. Without write access, that rescan still finds the requeue."""
    nudge = paths.root / REQUEUE_NUDGE
    with contextlib.suppress(OSError):
        os.close(os.open(nudge, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600))
        os.unlink(nudge)


def cancel(paths: RunPaths, grace_s: float = 15.0) -> str:
    """Stop a run's whole session and mark it failed(cancelled); returns what was done, in words."""
    if os.path.lexists(paths.done_marker):
        return "already done; nothing to cancel"
    if os.path.lexists(paths.failed_marker):
        return "already failed; nothing to cancel"
    holder = runlock.held_by(paths.lock)
    if holder is runlock.HeldBy.MANAGER:
        raise CancelRefused("is not running: lfads-manager (prepare or delete-output) is rewriting its inputs; "
                            "cancel it when that is done")
    if holder is runlock.HeldBy.NOBODY:
        with _holding_unstarted(paths) as held:
            # Under the lock, so no supervisor can be between its marker check and its first step.
            if held and os.path.lexists(paths.done_marker):
                return "already done; nothing to cancel"
            if held:
                _write_cancelled(paths, None, "cancelled before it started")
                return "was not running; marked failed (cancelled) so it does not start"
        # A supervisor took the run meanwhile: stop it like any running run.
    state = load_state(paths)
    pid, start = state.supervisor_pid, state.supervisor_start_time
    # Anyone who can write the run folder can write state.json: its pid must prove to be the run's.
    supervisor = runlock.is_run_process(paths.lock, pid, start)
    if supervisor:
        assert pid is not None
        leave_grace(paths, grace_s, supervisor_pid=pid)
        if _ask_supervisor(paths, pid, start, grace_s) and os.path.lexists(paths.failed_marker):
            return f"cancelled (supervisor pid {pid} stopped it)"
    # No supervisor to ask (it died and left steps running), or it did not answer: stop every process
    # of the run ourselves, and nothing else (see processes_of_run).
    members = processes_of_run(paths, pid, supervisor)
    if not members:
        raise CancelRefused("is held by a process that is not one of its steps (its supervisor is gone); "
                            f"nothing stopped — see {paths.out_log}, and try again in a moment")
    _refuse_others_processes(members)
    _terminate(lambda: processes_of_run(paths, pid, supervisor), grace_s)
    deadline = time.monotonic() + 2.0  # killed processes let go of the lock as they exit
    while runlock.is_running(paths.lock) and time.monotonic() < deadline:
        time.sleep(0.05)
    # Under the lock: a queue that saw the run's processes go may be starting it again right now.
    with _holding_unstarted(paths) as held:
        if held:
            _write_cancelled(paths, state.step, "cancelled with `runqueue cancel`, which stopped the processes itself")
            return "cancelled (processes stopped by `runqueue cancel`)"
    again = load_state(paths)
    if (again.supervisor_pid != pid
            and runlock.is_run_process(paths.lock, again.supervisor_pid, again.supervisor_start_time)):
        assert again.supervisor_pid is not None
        leave_grace(paths, grace_s, supervisor_pid=again.supervisor_pid)
        if _ask_supervisor(paths, again.supervisor_pid, again.supervisor_start_time, grace_s) \
                and os.path.lexists(paths.failed_marker):
            return (f"cancelled (its processes were stopped by `runqueue cancel`; it had started again meanwhile, "
                    f"and its new supervisor pid {again.supervisor_pid} stopped that attempt)")
    holders = ", ".join(str(holder) for holder in file_holders(paths.lock, write_locked=True))
    raise CancelRefused(f"processes {holders or '(not visible to you)'} still hold its run lock after SIGKILL;"
                        " stop them by hand (or ask their owner), then cancel again")


@contextlib.contextmanager
def _holding_unstarted(paths: RunPaths) -> Iterator[bool]:
    """A read lock on the run lock while markers change: True if held (no supervisor or step holds
    the run, and none can start until we let go), False if the run is running after all."""
    try:
        fd = runlock.try_hold_shared(paths.lock)
    except (NotADirectoryError, FileExistsError):
        yield True  # .runqueue is no folder: no supervisor can hold, or take, a lock that cannot exist
        return
    try:
        yield fd is not None
    finally:
        if fd is not None:
            os.close(fd)


def leave_grace(paths: RunPaths, grace_s: float, *, supervisor_pid: int | None = None, batch_token: str | None = None) -> None:
    """Ask the supervisor (by its pid, or inside a SLURM job by its submission's token) to cancel, and
    tell it how long its steps get between SIGTERM and SIGKILL. It reads this when our signal comes,
    or, when we may not signal it (it runs as the service's account), at its next look at the folder
    (every few seconds). Not writable here: it uses the queue's --kill-grace, and only a signal stops it."""
    with contextlib.suppress(OSError):
        atomic_write_json(paths.cancel_request, {"supervisor_pid": supervisor_pid, "batch_token": batch_token,
                                                 "grace_s": grace_s, "requested_at": time.time()}, durable=False)
        runlock.give_to_run_owner(paths.cancel_request, paths.root)


def _ask_supervisor(paths: RunPaths, pid: int, start: int | None, grace_s: float) -> bool:
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return False
    try:
        if not is_alive(pid, start):
            return False
        wait_s = grace_s + 10.0
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGUSR1)
        except PermissionError:
            # Another account's supervisor (the service's): it finds our cancel.json at its next look
            # at the run folder, if we could write it there.
            if not os.path.lexists(paths.cancel_request):
                return False
            wait_s += SUPERVISOR_LOOKS_EVERY_S
        ready, _, _ = select.select([pidfd], [], [], min(wait_s, 2 * LONGEST_GRACE_S))
        return bool(ready)
    except OSError:
        return False
    finally:
        os.close(pidfd)


def _refuse_others_processes(pids: list[int]) -> None:
    """Fail at once, naming them, when processes of the run belong to an account we cannot signal."""
    refused = []
    for pid in pids:
        try:
            os.kill(pid, 0)
        except PermissionError:
            refused.append(f"{pid} ({_process_owner(pid)})")
        except ProcessLookupError:
            pass
    if refused:
        raise CancelRefused(f"its processes {', '.join(refused)} belong to another account; ask their owner, or cancel"
                            " it with sudo")


def _process_owner(pid: int) -> str:
    try:
        return account_name(os.stat(f"/proc/{pid}").st_uid)
    except OSError:
        return "owner unknown"


def _terminate(members: Callable[[], list[int]], grace_s: float) -> None:
    """TERM every process `members()` lists, wait up to `grace_s` for them to go, KILL the rest (and
    only them: see runqueue.stopping)."""
    stopping = Stopping.begin(members)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and stopping.left():
        time.sleep(0.05)
    stopping.finish()


def processes_of_run(paths: RunPaths, sid: int | None, supervisor_proven: bool) -> list[int]:
    """Every process of the run, and nothing else.

    - wherever they went (setsid, another session) and whatever their folder is called now: the
      processes holding the run lock's write lock (every step inherits it), and those carrying the
      run's RUNQUEUE_RUN_DIR, unless they work in another run's folder (the path alone may now name
      this folder while they belong to a run moved away, which keeps the old path in its environment);
    - the session its supervisor led (sid = the supervisor's pid), all of it, but only while that
      session is the run's: its leader proven to be the run's supervisor, or, the leader gone (a pid
      is not handed out again while its session has members), a member proven as above.
    """
    found: set[int] = set(file_holders(paths.lock, write_locked=True))
    found.update(pid for pid in processes_with_env("RUNQUEUE_RUN_DIR", lambda value: _same_folder(value, paths.root))
                 if not _works_in_another_run(pid, paths.root))
    if sid:
        session = set(session_members(sid))
        if supervisor_proven or (not os.path.exists(f"/proc/{sid}") and session & found):
            found |= session
    found.discard(os.getpid())
    return sorted(found)


def _works_in_another_run(pid: int, root: Path) -> bool:
    """Whether `pid` works in (or below) a run folder other than `root`: the steps of a run moved away
    keep its old path in RUNQUEUE_RUN_DIR, which may name this run's folder now. A helper of this run
    that went to work elsewhere (a scratch folder, /tmp) still counts as this run's."""
    try:
        where = Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return False
    for folder in (where, *where.parents):
        if (folder / TRAIN_SCRIPT).exists():
            return not _same_folder(str(folder), root)
    return False


def _same_folder(path: str, root: Path) -> bool:
    try:
        return os.path.samefile(path, root)
    except OSError:
        return False


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
    runlock.give_to_run_owner(paths.failed_marker, paths.root)


def resolve_runs(arguments: Sequence[str | Path]) -> tuple[list[Path], list[str], list[Path]]:
    """Run folders named by `arguments` (a run, or a folder holding runs), each once; one error per bad
    argument; and the arguments that are folders holding more than one run (to confirm)."""
    from runqueue.discovery import find_runs

    runs: list[Path] = []
    errors: list[str] = []
    folders: list[Path] = []
    for argument in arguments:
        path = Path(argument)
        if not path.exists():
            errors.append(f"{argument}: no such file or directory")
            continue
        found = find_runs([path])
        if not found:
            errors.append(f"{argument}: no run folder (a folder with lfads_train.sh) here or below")
        if len(found) > 1:
            folders.append(path)
        runs.extend(item.path for item in found)
    return list(dict.fromkeys(runs)), errors, folders  # each once, in the order first named
