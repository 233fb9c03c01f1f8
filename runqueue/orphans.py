"""Steps that outlived their supervisor (killed by the OOM killer, or `kill -9`): they still hold the
run and its device, and nobody enforces their time limit any more. The queue watching such a run
stops them when their supervisor would have — past the run's time limit and kill grace — and when
their run folder was deleted under them (a moved run goes on where it went)."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from runqueue import runlock
from runqueue.control import processes_of_run
from runqueue.layout import RunPaths
from runqueue.procinfo import (
    cwd_identity,
    file_holders,
    has_env,
    is_alive,
    processes_with_env,
    session_id,
    steps_started_for,
)
from runqueue.runstate import Phase, load_state
from runqueue.slurm.job import QUEUE_ID_PREFIX as SLURM_QUEUE_ID_PREFIX
from runqueue.stopping import Stopping


@dataclass(frozen=True)
class Orphan:
    """What state.json says of the attempt whose steps are left: the same values on two looks in a
    row mean no new supervisor is taking the run (it writes them right after taking the lock)."""

    supervisor_pid: int | None
    started_at: float | None
    time_limit_s: float | None
    kill_grace_s: float | None


def find_orphan(paths: RunPaths) -> Orphan | None:
    """The run's attempt when its steps run on with its supervisor gone, on this host and not in a
    SLURM job (SLURM stops a job's processes itself); None otherwise. Its steps hold the run lock,
    or, where the lock was deleted under them, state.json still says the attempt is running and
    steps naming the run are alive. (With state.json deleted too, nothing says when the attempt
    began or what its limit was: such steps keep the run, unlimited, until they end or are cancelled.)"""
    state = load_state(paths)
    if state.host not in (None, socket.gethostname()) or (state.queue_id or "").startswith(SLURM_QUEUE_ID_PREFIX):
        return None
    if runlock.is_running(paths.lock):
        if runlock.live_supervisor(paths.lock, state.supervisor_pid, state.supervisor_start_time) is not None:
            return None
        # Steps carry RUNQUEUE_RUN_DIR and a supervisor does not: one holding the lock is a new attempt's
        # supervisor that has not written state.json or the lock file yet, never an orphan.
        if any(has_env(pid, "RUNQUEUE_RUN_DIR") is False for pid in file_holders(paths.lock, write_locked=True)):
            return None
    elif state.phase != Phase.RUNNING or not steps_started_for(str(paths.root)):
        return None
    elif is_alive(state.supervisor_pid, state.supervisor_start_time):
        return None  # the lock deleted under a live supervisor, which keeps the time limit itself
    return Orphan(state.supervisor_pid, state.started_at, state.time_limit_s, state.kill_grace_s)


def steps_left_unlocked(paths: RunPaths) -> bool:
    """Steps of an attempt whose supervisor never recorded its end (killed), still running although
    the run lock no longer shows it (deleted, or the folder moved away). The process table is read
    only then: a supervisor that ended normally recorded its phase, and took its steps with it."""
    if load_state(paths).phase not in (None, Phase.RUNNING):
        return False
    return bool(steps_started_for(str(paths.root)))


def steps_of(paths: RunPaths, orphan: Orphan) -> Callable[[], list[int]]:
    """The run's processes (lock holders, its RUNQUEUE_RUN_DIR, its dead supervisor's session)."""
    return lambda: processes_of_run(paths, orphan.supervisor_pid, supervisor_proven=False)


def steps_of_deleted(folder: tuple[int, int]) -> Callable[[], list[int]]:
    """Run steps working in `folder` (device, inode) after it was deleted, whose supervisor is gone.
    Matched by the folder itself, not by a path (the same path may name another folder now, and a
    root may be spelled through a symlink). A live supervisor stops its own steps when its folder
    goes, and a SLURM job's are SLURM's: steps of a session whose leader lives are left alone."""
    return lambda: _deleted_folder_steps(lambda identity: identity == folder)


def steps_in_deleted_folders_under(roots: list[Path]) -> list[int]:
    """At a queue's start: steps whose supervisor is gone, started for a run under one of `roots`
    whose folder no longer exists, working in a deleted folder (a queue that was not running when
    the folder went never saw it go). A live run's helper working in a scratch folder it removed is
    not one: its run folder is still there."""
    prefixes = {os.path.join(spelling, "") for root in roots for spelling in (str(root), os.path.realpath(root))}

    def under_roots(value: str) -> bool:
        return not os.path.lexists(value) and any(
            spelling.startswith(prefix) for spelling in (value, os.path.realpath(value)) for prefix in prefixes)

    return _deleted_folder_steps(lambda _identity: True, under_roots)


def _deleted_folder_steps(folder_matches: Callable[[tuple[int, int]], bool],
                          run_dir_matches: Callable[[str], bool] = lambda _value: True) -> list[int]:
    found = []
    for pid in processes_with_env("RUNQUEUE_RUN_DIR", run_dir_matches):
        cwd = cwd_identity(pid)
        if pid == os.getpid() or cwd is None or not cwd[2] or not folder_matches(cwd[:2]):
            continue
        sid = session_id(pid)
        if sid == pid or (sid is not None and not os.path.exists(f"/proc/{sid}")):
            found.append(pid)
    return found


class Reaper:
    """TERM now, KILL after the grace period (see runqueue.stopping), without holding up the loop
    that asks."""

    def __init__(self) -> None:
        self._due: list[tuple[float, Stopping]] = []

    def stop(self, members: Callable[[], list[int]], grace_s: float) -> list[int]:
        """Send SIGTERM to `members()`; returns the pids signalled (another account's are skipped)."""
        stopping = Stopping.begin(members)
        if stopping.signalled:
            self._due.append((time.monotonic() + grace_s, stopping))
        return stopping.pids

    def tick(self) -> None:
        now = time.monotonic()
        for _, stopping in [entry for entry in self._due if entry[0] <= now]:
            stopping.finish()
        self._due = [entry for entry in self._due if entry[0] > now]

    def finish_all(self) -> None:
        """Before the queue exits: see every stop through, waiting out its grace unless its processes
        went first (a queue with nothing else to do must not leave a KILL unsent)."""
        for due, stopping in self._due:
            while time.monotonic() < due and stopping.left():
                time.sleep(0.05)
            stopping.finish()
        self._due = []

    def next_due(self) -> float | None:
        return min((due for due, _ in self._due), default=None)
