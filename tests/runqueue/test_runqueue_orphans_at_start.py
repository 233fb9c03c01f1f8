"""A queue that starts stops the steps left in *deleted* run folders, and only those: steps whose
supervisor died but whose folder is still there go on (until the run's time limit)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from runqueue_testkit import (
    finish,
    gpu,
    kill_processes,
    make_run,
    pid_alive,
    queue_env,
    read_json,
    start_queue,
    wait_for,
    write_gpus,
)


def test_a_starting_queue_leaves_orphaned_steps_in_a_living_folder_alone(tmp_path: Path) -> None:
    step_pid = tmp_path / "step.pid"
    run = make_run(tmp_path / "runs", "c/param_D/r0", f"echo $$ > {step_pid}\nexec sleep 120\n")
    env = queue_env(tmp_path)
    first = start_queue(env, "run", "--watch", tmp_path / "runs", "--cpu-slots", "1", log=tmp_path / "q1.log")
    second = None
    try:
        wait_for(lambda: step_pid.exists() and step_pid.read_text().strip() != "", what="the step")
        os.kill(int(read_json(run / ".runqueue" / "state.json")["supervisor_pid"]), signal.SIGKILL)
        first.kill()
        first.wait()
        second = start_queue(env, "run", "--watch", tmp_path / "runs", "--cpu-slots", "1", log=tmp_path / "q2.log")
        time.sleep(3)  # well past the queue's start-up sweep
        log = (tmp_path / "q2.log").read_text()
        assert "stopped steps left running in deleted run folders" not in log, log
        assert pid_alive(int(step_pid.read_text())), "the orphaned step of a run whose folder exists was stopped"
    finally:
        for queue in (first, second):
            if queue is not None and queue.poll() is None:
                queue.kill()
                queue.wait()
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(step_pid.read_text()), signal.SIGKILL)


@pytest.mark.parametrize("deleted", [".runqueue", ".runqueue/lock"])
def test_deleting_the_lock_under_an_orphaned_step_does_not_start_the_run_twice(tmp_path: Path, deleted: str) -> None:
    # A supervisor killed with -9 leaves its step holding the run lock; a user "cleaning a stale lock"
    # then removes it. The step still runs: no queue, this one or another, may start the run again
    # (nor give its device away) until it ends.
    starts, release = tmp_path / "starts", tmp_path / "release"
    train = (f'echo "start $$" >> {starts}\n'
             f'if [ "$(wc -l < {starts})" = 1 ]; then while [ ! -e {release} ]; do sleep 0.05; done; fi\n')
    run = make_run(tmp_path / "runs", "c/param_L/r", train)
    gpus = write_gpus(tmp_path / "gpus.json", [gpu("GPU-only", total=3000)])
    queue = start_queue(queue_env(tmp_path), "run", tmp_path / "runs", "--simulate-gpus", gpus, log=tmp_path / "q.log")
    other = None
    try:
        wait_for(starts.exists, what="the first start")
        os.kill(int(read_json(run / ".runqueue/state.json")["supervisor_pid"]), signal.SIGKILL)
        time.sleep(1)
        subprocess.run(["rm", "-rf", str(run / deleted)], check=True)
        other_run = make_run(tmp_path / "runs", "c/param_L/s")  # 2000 MB more would over-book the 3000 MB GPU
        other = start_queue(queue_env(tmp_path), "run", tmp_path / "runs", "--simulate-gpus", gpus, log=tmp_path / "q2.log")
        time.sleep(4)  # a few placement rounds and probes of both queues
        assert starts.read_text().count("start") == 1, (tmp_path / "q.log").read_text()
        assert not (other_run / "lfads.out").exists(), (tmp_path / "q2.log").read_text()
        release.touch()  # the orphan ends: the run goes again (its supervisor was lost), once
        assert finish(queue, timeout=60) == 0, (tmp_path / "q.log").read_text()
        assert finish(other, timeout=60) == 0, (tmp_path / "q2.log").read_text()
        assert starts.read_text().count("start") == 2 and (run / "lfads.done").exists()
    finally:
        release.touch()
        kill_processes(queue, other)


def test_a_moved_run_whose_supervisor_was_killed_keeps_its_device_while_its_step_runs(tmp_path: Path) -> None:
    started, release = tmp_path / "started", tmp_path / "release"
    run = make_run(tmp_path / "runs", "c/param_M/a", f'touch {started}\nwhile [ ! -e {release} ]; do sleep 0.05; done\n')
    gpus = write_gpus(tmp_path / "gpus.json", [gpu("GPU-only", total=3000)])
    queue = start_queue(queue_env(tmp_path), "run", "--watch", tmp_path / "runs", "--simulate-gpus", gpus,
                        "--poll-interval", "0.5", log=tmp_path / "q.log")
    try:
        wait_for(started.exists, what="the first run to start")
        os.kill(int(read_json(run / ".runqueue/state.json")["supervisor_pid"]), signal.SIGKILL)
        run.rename(run.with_name("a_moved"))
        second = make_run(tmp_path / "runs", "c/param_M/b")  # 2000 MB more would over-book the 3000 MB GPU
        time.sleep(4)
        assert not (second / "lfads.out").exists(), (tmp_path / "q.log").read_text()
        release.touch()
        wait_for((second / "lfads.done").exists, what="the second run once the orphan ended")
    finally:
        release.touch()
        queue.send_signal(signal.SIGINT)
        finish(queue, timeout=30)
