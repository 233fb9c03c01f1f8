"""The real queue over fake run folders: steps in order, markers, logs, CPU slots, status, requeue."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from runqueue_testkit import (
    finish,
    gpu,
    make_run,
    queue_env,
    read_json,
    run_queue,
    start_queue,
    step_headers,
    wait_for,
    write_gpus,
)

from runqueue.devices.claims import Claim, ClaimStore

GOLDEN = Path(__file__).parent / "golden"

# Each step appends "<step> <attempt> <device>" to a shared file, so tests see order and placement.
RECORD = 'echo "$RUNQUEUE_STEP $RUNQUEUE_ATTEMPT [${CUDA_VISIBLE_DEVICES-unset}] $CUDA_DEVICE_ORDER $TF_FORCE_GPU_ALLOW_GROWTH" >> "$RECORD_FILE"\n'


def test_runqueue_runs_every_step_in_order_on_cpu_slots_without_gpus(tmp_path: Path) -> None:
    sim = write_gpus(tmp_path / "none.json", [])  # no GPU at all: CPU slots
    record = tmp_path / "record.txt"
    runs = [
        make_run(tmp_path / "runs", f"coll/param_A/r{i}", RECORD + "echo training $RUNQUEUE_RUN_DIR\n", posterior=RECORD, write_params=RECORD)
        for i in range(3)
    ]
    result = run_queue(queue_env(tmp_path, RECORD_FILE=str(record)), "run", tmp_path / "runs", "--simulate-gpus", sim, "--cpu-slots", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = record.read_text().splitlines()
    assert len(lines) == 9
    assert all(line.endswith("[]  ") for line in lines)  # CUDA_VISIBLE_DEVICES set and empty on a CPU slot
    for run in runs:
        assert (run / "lfads.done").exists()
        log = (run / "lfads.out").read_text()
        assert [header.split(" step=")[1].split()[0] for header in step_headers(log)] == [
            "lfads_train.sh", "lfads_posterior_mean_sample.sh", "lfads_write_model_params.sh"
        ]
        assert f"training {run}" in log
        assert read_json(run / "lfads.done")["attempt"] == 1
    # Console: the run's own lines prefixed with its name, a summary, and nothing failed.
    assert "[param_A/r0] training" in result.stdout
    assert "summary: 3 run(s): 3 done, 0 failed" in result.stdout
    # A second queue finds nothing to do, and drops the claim of a run that ended while no queue
    # watched it (here: written by a process that has exited).
    ended = subprocess.Popen(["true"])
    ended.wait()
    with ClaimStore(tmp_path / "claims").transaction() as txn:
        txn.add(Claim(run_dir=str(runs[0]), device_uuid="cpu-0", memory_mb=0, pid=ended.pid, sid=ended.pid,
                      queue_id="gone", created=0.0))
    assert list((tmp_path / "claims").glob("*.claim.json"))
    again = run_queue(queue_env(tmp_path, RECORD_FILE=str(record)), "run", tmp_path / "runs", "--simulate-gpus", sim, "--quiet")
    assert again.returncode == 0
    assert len(record.read_text().splitlines()) == 9
    assert list((tmp_path / "claims").glob("*.claim.json")) == []


def test_runqueue_quiet_hides_run_output_but_not_events(tmp_path: Path) -> None:
    sim = write_gpus(tmp_path / "gpus.json", [gpu("GPU-q")])
    make_run(tmp_path / "runs", "c/param_Q/only", "echo secret-line\n")
    result = run_queue(queue_env(tmp_path), "run", tmp_path / "runs", "--simulate-gpus", sim, "--quiet")
    assert result.returncode == 0
    assert "secret-line" not in result.stdout
    assert "[param_Q/only] done" in result.stdout


def test_runqueue_watch_picks_up_new_runs_and_requeued_ones(tmp_path: Path) -> None:
    sim = write_gpus(tmp_path / "gpus.json", [gpu("GPU-w")])
    record = tmp_path / "record.txt"
    first = make_run(tmp_path / "runs", "c/param_W/first", RECORD)
    env = queue_env(tmp_path, RECORD_FILE=str(record))
    queue = start_queue(env, "run", "--watch", tmp_path / "runs", "--simulate-gpus", sim, "--poll-interval", "0.2", log=tmp_path / "queue.log")
    try:
        wait_for(lambda: (first / "lfads.done").exists(), what="first run done")
        second = make_run(tmp_path / "runs", "c/param_W/second", RECORD)
        wait_for(lambda: (second / "lfads.done").exists(), what="a run added while watching")
        (first / "lfads.done").unlink()  # the documented way to requeue
        wait_for(lambda: (first / "lfads.done").exists(), what="the requeued run done again")
    finally:
        queue.send_signal(2)
        finish(queue)
    assert record.read_text().count("lfads_train.sh") == 3
    assert "requeued (its marker was removed)" in (tmp_path / "queue.log").read_text()


def test_a_watching_queue_with_nothing_running_leaves_on_the_first_ctrl_c_and_says_so(tmp_path: Path) -> None:
    done = make_run(tmp_path / "runs", "c/param_I/done")
    (done / "lfads.done").write_text("")
    log = tmp_path / "queue.log"
    queue = start_queue(queue_env(tmp_path), "run", "--watch", tmp_path / "runs", "--cpu-slots", "1", "--poll-interval", "0.2", log=log)
    try:
        wait_for(lambda: "1 done" in log.read_text(), what="the queue to look at the tree")
    finally:
        queue.send_signal(2)
        finish(queue)
    text = log.read_text()
    assert "nothing is running, so the queue leaves now" in text
    assert "waiting for 0 running" not in text


def test_runqueue_requeue_command_clears_markers_and_attempts(tmp_path: Path) -> None:
    sim = write_gpus(tmp_path / "gpus.json", [gpu("GPU-r")])
    flag = tmp_path / "fixed"
    run = make_run(tmp_path / "runs", "c/param_R/x", f'[ -e {flag} ] || exit 4\necho fine\n')
    env = queue_env(tmp_path)
    failed = run_queue(env, "run", tmp_path / "runs", "--simulate-gpus", sim, "--retries", "0")
    assert failed.returncode == 1
    assert read_json(run / "lfads.failed")["reason"] == "exit_status"
    flag.touch()
    requeued = run_queue(env, "requeue", run)
    assert requeued.returncode == 0 and "requeued (removed lfads.failed)" in requeued.stdout
    assert not (run / "lfads.failed").exists()
    again = run_queue(env, "run", tmp_path / "runs", "--simulate-gpus", sim, "--retries", "0")
    assert again.returncode == 0
    assert read_json(run / "lfads.done")["attempt"] == 1  # attempts start afresh after a requeue
    missing = run_queue(env, "requeue", tmp_path / "nowhere")
    assert missing.returncode == 2 and "no such file or directory" in missing.stderr


def test_status_of_a_run_whose_marker_was_deleted_shows_a_fresh_start(tmp_path: Path) -> None:
    # rm lfads.failed is a requeue: the next start is attempt 1 at the first step, as status must say.
    sim = write_gpus(tmp_path / "gpus.json", [gpu("GPU-m")])
    run = make_run(tmp_path / "runs", "c/param_M/x", "exit 4\n")
    env = queue_env(tmp_path)
    assert run_queue(env, "run", tmp_path / "runs", "--simulate-gpus", sim, "--retries", "1", "--retry-backoff", "0").returncode == 1
    (run / "lfads.failed").unlink()
    (row,) = json.loads(run_queue(env, "status", tmp_path / "runs", "--json", "--simulate-gpus", sim).stdout)["runs"]
    assert (row["state"], row["attempt"], row["step"], row["exit_code"]) == ("pending", None, None, None), row


def _status_tree(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    root = tmp_path / "runs"
    done = make_run(root, "exampleRun/param_Qr2PeG/all")
    (done / "lfads.done").touch()
    failed = make_run(root, "exampleRun/param_Qr2PeG/single_dataset001")
    (failed / "lfads.failed").write_text(json.dumps({
        "step": "lfads_train.sh", "exit_code": 3, "signal": None, "attempt": 2, "time": "2026-01-01T00:00:00+0000",
        "reason": "exit_status", "message": "lfads_train.sh exited with status 3", "last_lines": [], "device": "GPU-s1",
    }))
    make_run(root, "exampleRun/param_YOs74u/single_dataset001", resources={"memory_mb": 3000})
    make_run(root, "other/sweep/lr_0.01")
    sim = write_gpus(tmp_path / "gpus.json", [gpu("GPU-s1", total=8000, used=6000), gpu("GPU-s2", total=8000, used=500, processes=[{"pid": 999999, "used_mb": 500}])])
    return root, sim, queue_env(tmp_path)


def test_runqueue_status_json_schema(tmp_path: Path) -> None:
    root, sim, env = _status_tree(tmp_path)
    running = make_run(root, "exampleRun/param_Qr2PeG/single_dataset002", f"touch {tmp_path}/started\nsleep 60\n")
    queue = start_queue(env, "run", running, "--simulate-gpus", write_gpus(tmp_path / "free.json", [gpu("GPU-s3")]), log=tmp_path / "q.log")
    try:
        wait_for(lambda: (tmp_path / "started").exists(), what="the running run")
        result = run_queue(env, "status", root, "--json", "--simulate-gpus", sim)
    finally:
        run_queue(env, "cancel", running, "--grace", "5")
        finish(queue)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) == {"runs", "devices"}
    keys = {"path", "collection", "name", "state", "step", "attempt", "device", "pid", "exit_code", "reason"}
    assert all(set(entry) == keys for entry in report["runs"])
    by_name = {(entry["collection"], entry["name"]): entry for entry in report["runs"]}
    assert set(by_name) == {
        ("exampleRun", "param_Qr2PeG/all"), ("exampleRun", "param_Qr2PeG/single_dataset001"),
        ("exampleRun", "param_Qr2PeG/single_dataset002"), ("exampleRun", "param_YOs74u/single_dataset001"),
        ("runs", "other/sweep/lr_0.01"),
    }
    assert by_name["exampleRun", "param_Qr2PeG/all"]["state"] == "done"
    failed = by_name["exampleRun", "param_Qr2PeG/single_dataset001"]
    assert (failed["state"], failed["exit_code"], failed["reason"], failed["attempt"], failed["step"]) == ("failed", 3, "exit_status", 2, "lfads_train.sh")
    live = by_name["exampleRun", "param_Qr2PeG/single_dataset002"]
    assert (live["state"], live["device"], live["step"], live["attempt"]) == ("running", "GPU-s3", "lfads_train.sh", 1)
    assert isinstance(live["pid"], int) and live["pid"] > 1
    pending = by_name["exampleRun", "param_YOs74u/single_dataset001"]
    assert pending["state"] == "pending" and pending["pid"] is None
    assert "GPU-s1 has 2000 MB free < 3000 MB declared" in pending["reason"]
    assert "GPU-s2 has a foreign process (pid 999999)" in pending["reason"]
    # The running run's device is not in this command's inventory: its claim still shows (index null).
    assert [(device["uuid"], device["index"]) for device in report["devices"]] == [("GPU-s1", 0), ("GPU-s2", 1), ("GPU-s3", None)]
    assert report["devices"][2]["runs"] == [str(running)]
    assert set(report["devices"][0]) == {"uuid", "index", "name", "memory_total_mb", "memory_used_mb", "runs"}
    assert report["devices"][0]["memory_used_mb"] == 6000


def test_runqueue_status_table_matches_golden(tmp_path: Path) -> None:
    root, sim, env = _status_tree(tmp_path)
    result = run_queue(env, "status", root, "--simulate-gpus", sim)
    assert result.returncode == 0, result.stderr
    text = result.stdout.replace(str(tmp_path), "TMP")
    golden = GOLDEN / "status_table.txt"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(text)
    assert golden.exists(), f"{golden} missing: run UPDATE_GOLDEN=1 pytest {__file__} to create it"
    assert text == golden.read_text(), f"status table changed; if intended, accept it with UPDATE_GOLDEN=1 pytest {__file__}"


def test_runqueue_slurm_executor_without_slurm_is_a_clear_error(tmp_path: Path) -> None:
    make_run(tmp_path / "runs", "r")
    env = queue_env(tmp_path, PATH=str(Path(sys.executable).parent))  # no SLURM tools on this PATH
    result = run_queue(env, "run", tmp_path / "runs", "--executor", "slurm")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "runqueue run: error: --executor slurm: `sbatch` is not on PATH (run the queue on a SLURM login node, or load the slurm module)"
    )
    assert not (tmp_path / "runs" / "r" / "lfads.out").exists()


def test_a_run_retired_by_the_manager_is_said_to_be_retired_not_gone(tmp_path: Path) -> None:
    sim = write_gpus(tmp_path / "gpus.json", [gpu("GPU-r", total=8000, used=7900)])  # nothing fits: it waits
    run = make_run(tmp_path / "runs", "c/param_R/r0", "echo never\n")
    queue = start_queue(queue_env(tmp_path), "run", "--watch", tmp_path / "runs", "--simulate-gpus", sim,
                        "--poll-interval", "0.2s", log=tmp_path / "q.log")
    try:
        wait_for(lambda: "1 pending" in (tmp_path / "q.log").read_text(), what="the run to wait")
        (run / "lfads_train.sh").rename(run / "lfads_train.sh.retired")  # what lfads-manager prepare does
        wait_for(lambda: "dropped" in (tmp_path / "q.log").read_text(), what="the run to be dropped")
    finally:
        queue.send_signal(2)
        finish(queue)
    console = (tmp_path / "q.log").read_text()
    assert "was retired by lfads-manager prepare" in console and "is gone" not in console, console
