"""A queue that starts stops the steps left in *deleted* run folders, and only those: steps whose
supervisor died but whose folder is still there go on (until the run's time limit)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from runqueue_testkit import make_run, pid_alive, queue_env, read_json, start_queue, wait_for


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
