"""A run whose inputs lfads-manager rewrites (a read lock on its run lock) is not a running run,
and `runqueue cancel` stops only processes of the run itself."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from runqueue_testkit import (
    finish,
    kill_processes,
    make_run,
    pid_alive,
    queue_env,
    run_queue,
    start_queue,
    wait_for,
)

from runqueue import runlock
from runqueue.layout import RunPaths


def test_a_run_being_prepared_waits_and_is_neither_running_nor_cancellable(tmp_path: Path) -> None:
    run = make_run(tmp_path / "runs", "c/param_M/r0", "echo trained\n")
    env = queue_env(tmp_path)
    hold = runlock.try_hold_shared(RunPaths(run).lock)  # as lfads-manager prepare holds it
    assert hold is not None
    released = False
    queue = start_queue(env, "run", tmp_path / "runs", "--gpus", "none", log=tmp_path / "q.log")
    try:
        (row,) = json.loads(run_queue(env, "status", tmp_path / "runs", "--json").stdout)["runs"]
        assert row["state"] == "pending" and row["reason"].startswith("its inputs are being rewritten")
        requeued = run_queue(env, "requeue", run)
        assert requeued.returncode == 2 and "its inputs are being rewritten" in requeued.stderr
        cancelled = run_queue(env, "cancel", run)
        assert cancelled.returncode == 2 and "lfads-manager (prepare or delete-output) is rewriting its inputs" in cancelled.stderr
        assert not (run / "lfads.failed").exists()
        time.sleep(1.5)
        assert not (run / "lfads.out").exists()  # the queue waits
        os.close(hold)
        released = True
        assert finish(queue) == 0, (tmp_path / "q.log").read_text()
    finally:
        if not released:
            os.close(hold)
        if queue.poll() is None:
            queue.kill()
    assert (run / "lfads.done").exists()
    console = (tmp_path / "q.log").read_text()
    assert "not visible from here" not in console
    # Said once, though the queue looked again every second while it waited.
    assert console.count("waiting: lfads-manager is rewriting its inputs") == 1, console


def test_cancel_never_stops_a_session_that_only_reuses_the_dead_supervisors_pid(tmp_path: Path) -> None:
    run = make_run(tmp_path / "runs", "c/param_N/r0", "echo never\n")
    paths = RunPaths(run)
    stranger = subprocess.Popen(["setsid", "sleep", "60"])  # leads its own session, like a reused pid would
    # A step of the run, left by its dead supervisor: it holds the run lock (the write lock).
    step = subprocess.Popen([sys.executable, "-c", "import sys, time; from runqueue import runlock; from pathlib import Path;"
                             " fd = runlock.try_acquire(Path(sys.argv[1])); print(fd is not None, flush=True); time.sleep(60)",
                             str(paths.lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert step.stdout is not None and step.stdout.readline().strip() == "True"
        wait_for(lambda: os.getsid(stranger.pid) == stranger.pid, what="the stranger's session")
        # state.json names a supervisor whose pid the stranger now has (another start time).
        paths.state.write_text(json.dumps({"phase": "running", "attempt": 1, "step": "lfads_train.sh",
                                           "supervisor_pid": stranger.pid, "supervisor_start_time": 1}))
        result = run_queue(queue_env(tmp_path), "cancel", "--grace", "1", run)
        assert result.returncode == 0 and "cancelled" in result.stdout, result.stdout + result.stderr
        assert step.wait(timeout=10) != 0  # the run's own process was stopped ...
        assert pid_alive(stranger.pid)  # ... the stranger's session was not
        assert (run / "lfads.failed").exists()
    finally:
        kill_processes(stranger, step)


def test_cancel_stops_every_process_of_a_moved_run_whose_supervisor_died(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = (f'sleep 200 & echo $! >> {pids}\nenv -i sleep 201 & echo $! >> {pids}\n'
              f'setsid sleep 202 & echo $! >> {pids}\necho $$ >> {pids}\nwait\n')
    run = make_run(tmp_path / "runs", "c/param_O/r0", script)
    queue = start_queue(queue_env(tmp_path), "run", tmp_path / "runs", "--gpus", "none", "--quiet", log=tmp_path / "q.log")
    state = run / ".runqueue" / "state.json"
    wait_for(lambda: pids.exists() and len(pids.read_text().split()) == 4 and state.exists(), what="the steps")
    supervisor = json.loads(state.read_text())["supervisor_pid"]
    queue.kill()
    queue.wait()
    os.kill(supervisor, 9)
    moved = tmp_path / "runs" / "c" / "param_O" / "r0-moved"
    os.rename(run, moved)  # the steps still carry the old RUNQUEUE_RUN_DIR
    steps = [int(pid) for pid in pids.read_text().split()]
    try:
        result = run_queue(queue_env(tmp_path), "cancel", "--grace", "1", moved)
        assert result.returncode == 0 and "cancelled" in result.stdout, result.stdout + result.stderr
        wait_for(lambda: not any(pid_alive(pid) for pid in steps), timeout=15, what="every step to be stopped")
        assert (moved / "lfads.failed").exists() and not runlock.is_held(RunPaths(moved).lock)
    finally:
        for pid in steps:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)


def test_cancel_stops_steps_that_left_the_session_with_or_without_the_lock(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    detach = ("import subprocess, sys; p = subprocess.Popen(['sleep', '203'], start_new_session=True);"  # close_fds: no lock
              f" open({str(pids)!r}, 'a').write(f'{{p.pid}}\\n')")
    script = (f'setsid env -i sleep 204 & echo $! >> {pids}\n'  # keeps the lock, drops RUNQUEUE_RUN_DIR
              f'{shlex.quote(sys.executable)} -c {shlex.quote(detach)}\n'  # keeps RUNQUEUE_RUN_DIR, drops the lock
              f'echo $$ >> {pids}\nwait\n')
    run = make_run(tmp_path / "runs", "c/param_P/r0", script)
    queue = start_queue(queue_env(tmp_path), "run", tmp_path / "runs", "--gpus", "none", "--quiet", log=tmp_path / "q.log")
    state = run / ".runqueue" / "state.json"
    wait_for(lambda: pids.exists() and len(pids.read_text().split()) == 3 and state.exists(), what="the steps")
    queue.kill()
    queue.wait()
    os.kill(json.loads(state.read_text())["supervisor_pid"], 9)
    steps = [int(pid) for pid in pids.read_text().split()]
    try:
        result = run_queue(queue_env(tmp_path), "cancel", "--grace", "1", run)
        assert result.returncode == 0 and "cancelled" in result.stdout, result.stdout + result.stderr
        wait_for(lambda: not any(pid_alive(pid) for pid in steps), timeout=15, what="every process of the run to stop")
        assert not runlock.is_held(RunPaths(run).lock)
    finally:
        for pid in steps:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
