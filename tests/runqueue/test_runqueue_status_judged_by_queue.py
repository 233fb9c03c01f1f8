"""`status` with no device or placement flag judges waiting runs by the settings of the local queue
running over those roots (recorded beside the claims), not by its own defaults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from runqueue_testkit import finish, gpu, make_run, queue_env, run_queue, start_queue, wait_for, write_gpus


@pytest.mark.parametrize("given_by", ["flag", "environment"])
def test_status_judges_waiting_runs_as_the_running_queue_does_and_says_so(tmp_path: Path, given_by: str) -> None:
    sim = write_gpus(tmp_path / "gpus.json", [gpu("GPU-only", total=16000)])
    root = tmp_path / "runs"
    flag = tmp_path / "release"
    busy = make_run(root, "c/param_S/a_busy", f'while [ ! -e "{flag}" ]; do sleep 0.05; done\n')
    waiting = make_run(root, "c/param_S/b_waiting")
    env = queue_env(tmp_path)
    # The queue's inventory file by --simulate-gpus or by $RUNQUEUE_SIMULATE_GPUS; status has neither.
    how = ("--simulate-gpus", str(sim)) if given_by == "flag" else ()
    queue_env_here = env if given_by == "flag" else {**env, "RUNQUEUE_SIMULATE_GPUS": str(sim)}
    queue = start_queue(queue_env_here, "run", root, *how, "--max-per-gpu", "1", "--quiet", log=tmp_path / "q.log")
    try:
        wait_for(lambda: (busy / ".runqueue" / "state.json").exists(), what="the first run to start")
        status = run_queue(env, "status", "--json", root)
        assert status.returncode == 0, status.stderr
        rows = {row["name"]: row for row in json.loads(status.stdout)["runs"]}
        # By its own defaults (one CPU slot, nothing on it) status would say "ready: fits cpu-0".
        assert "GPU-only" in rows["param_S/b_waiting"]["reason"], rows
        assert [d["uuid"] for d in json.loads(status.stdout)["devices"]] == ["GPU-only"]
        assert f"judged as the queue running as pid {queue.pid} sees them: --simulate-gpus {sim}" in status.stderr
        # Flags: judged by this command's own inventory (--gpus none: where NVML answers it would list the real GPUs).
        own = run_queue(env, "status", "--json", "--gpus", "none", "--cpu-slots", "1", root)
        assert "judged as the queue" not in own.stderr
        # Its own inventory (one CPU slot), plus the queue's claim on a device it does not list.
        assert [(d["uuid"], d["index"]) for d in json.loads(own.stdout)["devices"]] == [("cpu-0", 0), ("GPU-only", None)]
    finally:
        flag.touch()  # the queue then runs the waiting run and leaves by itself
        finish(queue)
    assert (waiting / "lfads.done").exists()
    assert not list((tmp_path / "claims").glob("queue-*.json"))  # removed when the queue left
    after = run_queue(env, "status", root)
    assert "judged as the queue" not in after.stderr
