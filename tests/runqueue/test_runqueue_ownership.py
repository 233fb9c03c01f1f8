"""Whose run is it: a queue stops only runs it answers for, `cancel` and `requeue` never race a
starting supervisor, and a requeue reaches a watching queue that backs off or blocked the run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from runqueue_testkit import (
    finish,
    kill_processes,
    kill_session,
    make_run,
    pid_alive,
    queue_env,
    read_json,
    run_queue,
    start_queue,
    step_headers,
    wait_for,
    wait_until_released,
)

from runqueue import control, runlock
from runqueue.layout import RunPaths
from runqueue.procinfo import session_members


def test_a_second_queue_watches_but_never_stops_a_live_queues_run(tmp_path: Path) -> None:
    release, started = tmp_path / "release", tmp_path / "started"
    run = make_run(tmp_path / "runs", "c/param_A/x", wait_until_released(release, started))
    env = queue_env(tmp_path)
    service = start_queue(env, "run", "--watch", tmp_path / "runs", "--gpus", "none", log=tmp_path / "service.log")
    try:
        wait_for(started.exists, what="the service's run to start")
        mine = start_queue(env, "run", tmp_path / "runs", "--gpus", "none", "--stop-runs", log=tmp_path / "mine.log")
        wait_for(lambda: "running under another queue" in (tmp_path / "mine.log").read_text(), what="the second queue to see it")
        mine.send_signal(signal.SIGINT)  # with --stop-runs: stop the runs it answers for, and none of the service's
        assert finish(mine, timeout=30) == 130, (tmp_path / "mine.log").read_text()
        assert "re-adopted" not in (tmp_path / "mine.log").read_text()
        assert "interrupted" not in (run / "lfads.out").read_text()
        release.touch()
        wait_for((run / "lfads.done").exists, what="the service to finish its run")
        assert len(step_headers((run / "lfads.out").read_text())) == 1
    finally:
        service.send_signal(signal.SIGINT)
        finish(service, timeout=30)


def test_a_queue_restarted_after_its_predecessor_died_re_adopts_and_stops_the_run(tmp_path: Path) -> None:
    started = tmp_path / "started"
    run = make_run(tmp_path / "runs", "c/param_B/x", wait_until_released(tmp_path / "never", started))
    env = queue_env(tmp_path)
    first = start_queue(env, "run", tmp_path / "runs", "--gpus", "none", log=tmp_path / "q1.log")
    wait_for(started.exists, what="the run to start")
    first.kill()
    first.wait()
    second = start_queue(env, "run", tmp_path / "runs", "--gpus", "none", "--stop-runs", "--kill-grace", "1", log=tmp_path / "q2.log")
    try:
        wait_for(lambda: "re-adopted" in (tmp_path / "q2.log").read_text(), what="re-adoption")
        second.send_signal(signal.SIGINT)
        assert finish(second, timeout=30) == 130
    finally:
        if second.poll() is None:
            second.kill()
    assert read_json(run / ".runqueue/state.json")["phase"] == "interrupted"


def _hold_write_lock(run: Path) -> subprocess.Popen[bytes]:
    """A process holding the run's write lock, like a supervisor that has just taken the run."""
    code = ("import sys, time; from pathlib import Path; from runqueue import runlock\n"
            "fd = runlock.try_acquire(Path(sys.argv[1])); print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(RunPaths(run).lock)], stdout=subprocess.PIPE,
                              env={**os.environ, "RUNQUEUE_RUN_DIR": str(run)})
    assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
    return holder


def test_cancel_that_loses_the_race_to_a_starting_supervisor_stops_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run(tmp_path / "runs", "c/param_C/x")
    holder = _hold_write_lock(run)
    try:
        # cancel looked just before the supervisor took the lock: it must not mark a run that runs.
        monkeypatch.setattr(control.runlock, "held_by", lambda _path: runlock.HeldBy.NOBODY)
        outcome = control.cancel(RunPaths(run), grace_s=1.0)
        assert outcome == "cancelled (processes stopped by `runqueue cancel`)"
        assert holder.wait(timeout=10) != 0
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert read_json(run / "lfads.failed")["reason"] == "cancelled"


def test_cancel_and_requeue_of_an_unstarted_run_keep_supervisors_out_while_they_write(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run(tmp_path / "runs", "c/param_D/x")
    paths = RunPaths(run)
    could_start: list[bool] = []
    write_cancelled = control._write_cancelled

    def checking(*args: object) -> None:
        fd = runlock.try_acquire(paths.lock)  # what a supervisor does first
        could_start.append(fd is not None)
        if fd is not None:
            os.close(fd)
        write_cancelled(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(control, "_write_cancelled", checking)
    assert control.cancel(paths).startswith("was not running")
    monkeypatch.setattr(control, "save_state", lambda *args: could_start.append(runlock.try_acquire(paths.lock) is not None))
    paths.state.parent.mkdir(exist_ok=True)
    paths.state.write_text('{"version": 1, "phase": "retry_wait", "attempt": 1}')
    assert control.requeue(paths).startswith("requeued")
    assert could_start == [False, False]


def test_a_run_blocked_after_repeated_crashes_goes_again_when_requeued(tmp_path: Path) -> None:
    run = make_run(tmp_path / "runs", "c/param_E/x", 'echo "attempt $RUNQUEUE_ATTEMPT"; [ -e "$RUNQUEUE_RUN_DIR/fixed" ] || sleep 30\n')
    env = queue_env(tmp_path)
    log = tmp_path / "q.log"
    queue = start_queue(env, "run", "--watch", tmp_path / "runs", "--gpus", "none", "--poll-interval", "1s", log=log)
    state = run / ".runqueue" / "state.json"
    try:
        killed: set[int] = set()
        for crash in range(3):  # the whole session killed, as the OOM killer might

            def step_started(n: int = crash) -> bool:
                out = run / "lfads.out"
                started = out.exists() and out.read_text().count("\nattempt ") + out.read_text().startswith("attempt ") > n
                return started and read_json(state).get("supervisor_pid") not in killed

            wait_for(step_started, what=f"start {crash + 1}")
            sid = int(read_json(state)["supervisor_pid"])
            killed.add(sid)
            for pid in session_members(sid):
                os.kill(pid, signal.SIGKILL)
        wait_for(lambda: "not started again: its supervisor ended unexpectedly 3 times" in log.read_text(), what="the block")
        (run / "fixed").touch()
        assert run_queue(env, "requeue", run).returncode == 0
        wait_for((run / "lfads.done").exists, timeout=30, what="the requeued run to finish")
        assert "[param_E/x] requeued" in log.read_text()
    finally:
        queue.send_signal(signal.SIGINT)
        finish(queue, timeout=30)
        if state.exists():
            kill_session(int(read_json(state).get("supervisor_pid") or 0) or -1)


def test_a_requeue_during_a_retry_back_off_starts_the_run_at_once(tmp_path: Path) -> None:
    run = make_run(tmp_path / "runs", "c/param_F/x", '[ -e "$RUNQUEUE_RUN_DIR/fixed" ] || exit 3\n')
    env = queue_env(tmp_path)
    # Rescans every 60 s: the requeue (which changes only .runqueue/state.json) must reach the queue by itself.
    queue = start_queue(env, "run", "--watch", tmp_path / "runs", "--gpus", "none", "--retry-backoff", "300",
                        "--poll-interval", "60s", log=tmp_path / "q.log")
    try:
        wait_for(lambda: "retrying from lfads_train.sh" in (tmp_path / "q.log").read_text(), what="the back-off")
        (run / "fixed").touch()
        requeued_at = time.monotonic()
        assert run_queue(env, "requeue", run).returncode == 0
        wait_for((run / "lfads.done").exists, timeout=30, what="the requeued run to finish")
        assert time.monotonic() - requeued_at < 15  # neither the 300 s back-off nor the next 60 s rescan
        assert "[param_F/x] requeued" in (tmp_path / "q.log").read_text()
    finally:
        queue.send_signal(signal.SIGINT)
        finish(queue, timeout=30)


def test_a_stopped_supervisor_is_continued_so_it_enforces_the_time_limit(tmp_path: Path) -> None:
    run = make_run(tmp_path / "runs", "c/param_G/x", "echo started; sleep 300\n")
    log = tmp_path / "q.log"
    queue = start_queue(queue_env(tmp_path), "run", tmp_path / "runs", "--gpus", "none", "--time-limit", "1s",
                        "--retries", "0", "--kill-grace", "0.5", log=log)
    state = run / ".runqueue" / "state.json"
    try:
        wait_for(lambda: "started" in (run / "lfads.out").read_text() if (run / "lfads.out").exists() else False,
                 what="the step")
        supervisor = int(read_json(state)["supervisor_pid"])
        os.kill(supervisor, signal.SIGSTOP)  # it cannot count down its run's time limit any more
        assert finish(queue, timeout=60) == 1, log.read_text()
    finally:
        if queue.poll() is None:
            queue.kill()
        kill_session(int(read_json(state).get("supervisor_pid") or 0) or -1)
    assert read_json(run / "lfads.failed")["reason"] == "time_limit"
    assert "its supervisor was stopped (SIGSTOP) past the run's time limit" in log.read_text()


def test_cancel_never_signals_a_process_state_json_merely_names(tmp_path: Path) -> None:
    # Anyone who can write the run folder can write state.json; the pid there must prove to be the run's.
    run = make_run(tmp_path / "runs", "c/param_V/x")
    victim = subprocess.Popen(["sleep", "60"], start_new_session=True)  # someone's unrelated session
    holder = _hold_write_lock(run)  # the run's own step, running
    try:
        from runqueue.procinfo import process_start_time
        from runqueue.runstate import PersistedState, save_state

        save_state(RunPaths(run), PersistedState(phase="running", attempt=1, supervisor_pid=victim.pid,
                                                 supervisor_start_time=process_start_time(victim.pid)))
        assert control.cancel(RunPaths(run), grace_s=1.0) == "cancelled (processes stopped by `runqueue cancel`)"
        assert holder.wait(timeout=10) != 0
        assert victim.poll() is None  # neither asked (SIGUSR1) nor stopped with the run's session
    finally:
        kill_processes(victim, holder)


def test_cancel_kills_only_what_it_terminated_and_what_that_forked_never_a_new_attempt(tmp_path: Path) -> None:
    late_pid = tmp_path / "late.pid"
    # The run's step: ignores TERM, and forks a helper when it gets one (same session).
    step = subprocess.Popen(["bash", "-c", f"trap 'sleep 40 & echo $! > {late_pid}' TERM; while :; do sleep 0.05; done"],
                            start_new_session=True)
    newcomer: list[subprocess.Popen[bytes]] = []

    def members() -> list[int]:
        # From the second look on, the run has started again: a new attempt, in its own session.
        if not newcomer:
            newcomer.append(subprocess.Popen(["sleep", "40"], start_new_session=True))
            return [step.pid]
        late = [int(late_pid.read_text())] if late_pid.exists() and late_pid.read_text().strip() else []
        return [step.pid, newcomer[0].pid, *late]

    try:
        time.sleep(0.2)  # bash has set its trap
        control._terminate(members, grace_s=1.0)
        assert step.wait(timeout=10) == -signal.SIGKILL
        late = int(late_pid.read_text())
        wait_for(lambda: not pid_alive(late), timeout=10, what="the helper forked during the grace to be killed")
        assert newcomer[0].poll() is None  # the new attempt is not ours to kill
    finally:
        kill_processes(step, *newcomer)
        kill_session(step.pid)


def test_cancel_of_a_run_that_starts_again_once_its_steps_are_gone_stops_the_new_attempt(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    second = tmp_path / "second"
    run = make_run(tmp_path / "runs", "c/param_W/x", f"touch {second}\nsleep 60\n")
    holder = _hold_write_lock(run)  # a step whose supervisor is gone
    queue: list[subprocess.Popen[bytes]] = []
    terminate = control._terminate

    def and_a_queue_starts_it_again(members: Callable[[], list[int]], grace_s: float) -> None:
        terminate(members, grace_s)
        # A watching queue sees the lock go and no marker yet: it starts the run again.
        queue.append(start_queue(queue_env(tmp_path), "run", tmp_path / "runs", "--gpus", "none", "--quiet",
                                 log=tmp_path / "q.log"))
        wait_for(second.exists, what="the new attempt to start")

    monkeypatch.setattr(control, "_terminate", and_a_queue_starts_it_again)
    try:
        outcome = control.cancel(RunPaths(run), grace_s=2.0)
        assert "it had started again meanwhile" in outcome, outcome
        assert holder.wait(timeout=10) != 0
        assert finish(queue[0], timeout=60) == 1, (tmp_path / "q.log").read_text()
    finally:
        kill_processes(holder, *queue)
    assert read_json(run / "lfads.failed")["reason"] == "cancelled"
    assert (run / "lfads.out").read_text().rstrip().splitlines()[-1].endswith("cancelled during lfads_train.sh")


def test_a_stopped_supervisor_of_an_adopted_run_is_continued_past_its_time_limit(tmp_path: Path) -> None:
    run = make_run(tmp_path / "runs", "c/param_A/x", "echo started; sleep 300\n")
    env = queue_env(tmp_path)
    first = start_queue(env, "run", tmp_path / "runs", "--gpus", "none", "--time-limit", "2s", "--retries", "0",
                        "--kill-grace", "0.5", log=tmp_path / "q1.log")
    state = run / ".runqueue" / "state.json"
    wait_for(lambda: (run / "lfads.out").exists() and "started" in (run / "lfads.out").read_text(), what="the step")
    supervisor = int(read_json(state)["supervisor_pid"])
    os.kill(supervisor, signal.SIGSTOP)
    first.kill()  # the queue that started it is gone; the next one adopts a stopped supervisor
    first.wait()
    second = start_queue(env, "run", tmp_path / "runs", "--gpus", "none", "--retries", "0", log=tmp_path / "q2.log")
    try:
        assert finish(second, timeout=60) == 1, (tmp_path / "q2.log").read_text()
    finally:
        if second.poll() is None:
            second.kill()
        kill_session(supervisor)
    assert read_json(run / "lfads.failed")["reason"] == "time_limit"


def test_a_local_queue_never_adopts_the_supervisor_of_a_slurm_job(tmp_path: Path) -> None:
    # This host may be a SLURM node: a job's supervisor runs here, but that job and its queue own the run.
    from runqueue.executors.local import LocalExecutor
    from runqueue.procinfo import process_start_time
    from runqueue.runstate import PersistedState, save_state

    run = make_run(tmp_path / "runs", "c/param_J/x")
    supervisor = _hold_write_lock(run)  # holds the run lock, as a job's supervisor does
    try:
        for queue_id, adopted in (("slurm-job:41", False), (f"{os.uname().nodename}:1", True)):
            save_state(RunPaths(run), PersistedState(phase="running", attempt=1, supervisor_pid=supervisor.pid,
                                                     supervisor_start_time=process_start_time(supervisor.pid),
                                                     queue_id=queue_id))
            handle = LocalExecutor().adopt(run)
            assert (handle is not None) == adopted, queue_id
            if handle is not None:
                os.close(handle.wait_fd)
    finally:
        supervisor.kill()
        supervisor.wait()


def test_the_summary_reads_the_markers_again_for_runs_requeued_while_the_queue_stopped(tmp_path: Path) -> None:
    release, started = tmp_path / "release", tmp_path / "started"
    failed = make_run(tmp_path / "runs", "c/param_S/a", "exit 3\n")
    make_run(tmp_path / "runs", "c/param_S/b", wait_until_released(release, started))
    env = queue_env(tmp_path)
    log = tmp_path / "q.log"
    queue = start_queue(env, "run", tmp_path / "runs", "--gpus", "none", "--cpu-slots", "2", "--retries", "0", log=log)
    try:
        wait_for(lambda: started.exists() and (failed / "lfads.failed").exists(), what="one run failed, one running")
        queue.send_signal(signal.SIGINT)  # stop: wait for the running one, no rescans any more
        wait_for(lambda: "Press Ctrl-C again" in log.read_text(), what="the stop message")
        assert run_queue(env, "requeue", failed).returncode == 0
        release.touch()
        assert finish(queue, timeout=30) == 130  # a run is pending again
    finally:
        if queue.poll() is None:
            queue.kill()
    summary = log.read_text().split("summary:")[1]
    assert "1 done, 0 failed" in summary and "failed  param_S/a" not in summary, summary
