"""`status` with no device or placement flag judges waiting runs by the settings of the local queue
running over those roots (recorded beside the claims), not by its own defaults."""

from __future__ import annotations

import json
import os
import pwd
from pathlib import Path

import pytest
from runqueue_testkit import finish, gpu, make_run, queue_env, run_queue, start_queue, wait_for, write_gpus

from runqueue.procinfo import process_start_time


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


def _service_record(claims: Path, root: Path, uid: int) -> None:
    """A live queue record written by another account (a service's): this test process stands in for it."""
    claims.mkdir(exist_ok=True)
    record = {"pid": os.getpid(), "start_time": process_start_time(os.getpid()), "roots": [str(root.resolve())], "gpus": "none",
              "simulate_gpus": None, "cpu_slots": 2, "max_per_gpu": 1, "foreign": "block", "memory_per_run": 2000}
    path = claims / f"queue-{os.uname().nodename}-{os.getpid()}.json"
    path.write_text(json.dumps(record))
    os.chown(path, uid, -1)


@pytest.mark.skipif(os.geteuid() != 0, reason="writing a record as another account needs root")
def test_status_believes_a_service_accounts_record_and_calls_runs_it_cannot_write_blocked(tmp_path: Path) -> None:
    daemon = pwd.getpwnam("daemon")  # a system account, as `lfads` of the unit is
    root = tmp_path / "runs"
    private = make_run(root, "c/param_S/a_private")  # root's, 0755: the service cannot write it
    shared = make_run(root, "c/param_S/b_shared")
    os.chown(shared, 0, daemon.pw_gid)
    shared.chmod(0o775)
    _service_record(tmp_path / "claims", root, daemon.pw_uid)
    status = run_queue(queue_env(tmp_path), "status", "--json", root)
    rows = {row["name"]: row["reason"] for row in json.loads(status.stdout)["runs"]}
    assert f"judged as the queue running as pid {os.getpid()}" in status.stderr
    assert rows["param_S/a_private"].startswith(f"blocked: {private} is not writable by daemon, the account the queue runs as")
    assert rows["param_S/b_shared"] == "ready: fits cpu-0"  # the blocked run was not charged to a device


@pytest.mark.skipif(os.geteuid() != 0, reason="writing a record as another account needs root")
def test_status_ignores_a_record_of_an_ordinary_other_account(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    make_run(root, "c/param_S/a")
    _service_record(tmp_path / "claims", root, 54321)  # anyone may write in the shared directory
    status = run_queue(queue_env(tmp_path), "status", "--json", root)
    assert "judged as the queue" not in status.stderr
    assert json.loads(status.stdout)["runs"][0]["reason"] == "ready: fits cpu-0"
