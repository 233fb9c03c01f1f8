"""Simulated GPUs end to end: the real queue places real processes; each run reports what it saw.

Every step script below records, under flock, how many runs were running on its device when it
started, and can wait at a barrier until a given number of runs have started: so "two runs fit on
one GPU at once" is shown by the barrier passing, and "never more than two" by the record.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
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


def _counting_script(state: Path, *, barrier: int = 0, hold_s: float = 0.3) -> str:
    """bash: count runs per device, optionally wait until `barrier` runs started, hold, uncount."""
    return f"""
state={state}
dev="${{CUDA_VISIBLE_DEVICES:-cpu}}"
exec 9>"$state/lock"
flock 9
now=$(( $(cat "$state/running.$dev" 2>/dev/null || echo 0) + 1 )); echo $now > "$state/running.$dev"
started=$(( $(cat "$state/started" 2>/dev/null || echo 0) + 1 )); echo $started > "$state/started"
echo "$dev $now $CUDA_DEVICE_ORDER $TF_FORCE_GPU_ALLOW_GROWTH $RUNQUEUE_RUN_DIR" >> "$state/log"
flock -u 9
if [ {barrier} -gt 0 ] && [ $started -le {barrier} ]; then
  for i in $(seq 400); do [ "$(cat "$state/started")" -ge {barrier} ] && break; sleep 0.05; done
  [ "$(cat "$state/started")" -ge {barrier} ] || {{ echo "barrier of {barrier} never reached"; exit 9; }}
fi
sleep {hold_s}
flock 9
echo $(( $(cat "$state/running.$dev") - 1 )) > "$state/running.$dev"
"""


def _records(state: Path) -> list[tuple[str, int]]:
    return [(line.split()[0], int(line.split()[1])) for line in (state / "log").read_text().splitlines()]


def test_runqueue_each_job_sees_its_own_gpu_uuid(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    uuids = [f"GPU-{letter * 8}" for letter in "abcd"]
    sim = write_gpus(tmp_path / "gpus.json", [gpu(uuid) for uuid in uuids])
    for index in range(4):
        make_run(tmp_path / "runs", f"c/param_P/r{index}", _counting_script(state, barrier=4))
    result = run_queue(queue_env(tmp_path), "run", tmp_path / "runs", "--simulate-gpus", sim, "--quiet")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = (state / "log").read_text().splitlines()
    # All four ran at once (the barrier passed), each on a different GPU, named by UUID, with
    # the PCI order and allow-growth settings of DESIGN.md §4.
    assert sorted(line.split()[0] for line in lines) == uuids
    assert all(line.split()[1:4] == ["1", "PCI_BUS_ID", "true"] for line in lines)
    for line in lines:
        run_dir = Path(line.split()[4])
        uuid = line.split()[0]
        # Both names of the card: its UUID, and the index nvidia-smi lists it by.
        assert f"device={uuid} (Sim GPU, index {uuids.index(uuid)})" in step_headers((run_dir / "lfads.out").read_text())[0]
        done = read_json(run_dir / "lfads.done")
        assert (done["device"], done["device_index"], done["exit_code"]) == (uuid, uuids.index(uuid), 0)
        assert done["started"] <= done["finished"]
    assert f"started on {uuids[0]} (Sim GPU, index 0)" in result.stdout


@pytest.mark.parametrize(
    ("device", "flags", "resources"),
    [
        # Packing by memory: 8000 MB holds two runs of 3000 MB, whatever max-per-gpu allows.
        (gpu("GPU-pack", total=8000), ["--max-per-gpu", "4"], {"memory_mb": 3000}),
        # Packing by count: plenty of memory, but at most two runs per GPU.
        (gpu("GPU-count", total=80000), ["--max-per-gpu", "2"], None),
    ],
    ids=["memory", "max-per-gpu"],
)
def test_runqueue_packs_runs_on_one_gpu_up_to_memory_and_count(tmp_path: Path, device: dict, flags: list[str], resources: dict | None) -> None:
    state = tmp_path / "state"
    state.mkdir()
    sim = write_gpus(tmp_path / "gpus.json", [device])
    for index in range(4):
        make_run(tmp_path / "runs", f"c/param_K/r{index}", _counting_script(state, barrier=2), resources=resources)
    result = run_queue(queue_env(tmp_path), "run", tmp_path / "runs", "--simulate-gpus", sim, "--quiet", *flags)
    assert result.returncode == 0, result.stdout + result.stderr
    records = _records(state)
    assert len(records) == 4
    # Never more than two at once; the barrier passing proves two did run together. The simulated
    # file keeps showing 0 MB used: launched runs are charged their declared memory until they exit.
    assert max(count for _, count in records) == 2


def test_runqueue_foreign_process_and_too_full_gpu_are_avoided(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    # Someone else's process (another session) computes on GPU-foreign; GPU-full has 1000 MB left.
    stranger = subprocess.Popen(["sleep", "120"], start_new_session=True)
    try:
        devices = [
            gpu("GPU-foreign", total=80000, used=500, processes=[{"pid": stranger.pid, "used_mb": 500}]),
            gpu("GPU-full", total=8000, used=7000),
            gpu("GPU-free", total=8000),
        ]
        sim = write_gpus(tmp_path / "gpus.json", devices)
        for index in range(3):
            make_run(tmp_path / "runs", f"c/param_F/r{index}", _counting_script(state, hold_s=0.05))
        result = run_queue(queue_env(tmp_path), "run", tmp_path / "runs", "--simulate-gpus", sim, "--quiet", "--max-per-gpu", "3")
        assert result.returncode == 0, result.stdout + result.stderr
        assert {dev for dev, _ in _records(state)} == {"GPU-free"}
        # With --foreign share the stranger's GPU takes runs when its memory allows.
        write_gpus(sim, devices[:1])
        make_run(tmp_path / "runs2", "c/param_S/r0", _counting_script(state, hold_s=0.05))
        shared = run_queue(queue_env(tmp_path), "run", tmp_path / "runs2", "--simulate-gpus", sim, "--quiet", "--foreign", "share")
        assert shared.returncode == 0, shared.stdout + shared.stderr
        assert _records(state)[-1][0] == "GPU-foreign"
    finally:
        stranger.kill()
        stranger.wait()


def test_runqueue_cuda_oom_is_retried_on_a_gpu_with_more_free_memory(tmp_path: Path) -> None:
    small = gpu("GPU-small", total=6000)
    big_busy = gpu("GPU-big", total=24000, used=23000)  # too full at first: the run lands on GPU-small
    sim = write_gpus(tmp_path / "gpus.json", [small, big_busy])
    freed = tmp_path / "freed.json"
    write_gpus(freed, [small, gpu("GPU-big", total=24000)])
    run = make_run(
        tmp_path / "runs",
        "c/param_O/r0",
        f"""echo "on $CUDA_VISIBLE_DEVICES"
if [ "$CUDA_VISIBLE_DEVICES" = GPU-small ]; then
  cp {freed} {sim}.new && mv {sim}.new {sim}   # meanwhile the big GPU became free
  echo "tensorflow.python.framework.errors_impl.ResourceExhaustedError: OOM when allocating tensor with shape[4096,4096]"
  exit 1
fi
echo trained
""",
    )
    result = run_queue(queue_env(tmp_path), "run", tmp_path / "runs", "--simulate-gpus", sim, "--retry-backoff", "0")
    assert result.returncode == 0, result.stdout + result.stderr
    devices = [header.split(" device=")[1].split()[0] for header in step_headers((run / "lfads.out").read_text())]
    assert devices == ["GPU-small", "GPU-big"]
    assert "attempt 1 failed (cuda_oom)" in result.stdout
    assert read_json(run / "lfads.done")["device"] == "GPU-big"


def test_runqueue_run_larger_than_every_gpu_is_reported_not_waited_for(tmp_path: Path) -> None:
    sim = write_gpus(tmp_path / "gpus.json", [gpu("GPU-tiny", total=4000)])
    make_run(tmp_path / "runs", "c/param_L/huge", resources={"memory_mb": 50000})
    make_run(tmp_path / "runs", "c/param_L/fine")
    result = run_queue(queue_env(tmp_path), "run", tmp_path / "runs", "--simulate-gpus", sim, "--quiet")
    assert result.returncode == 1
    assert "[param_L/huge] cannot be placed: it declares 50000 MB and the largest device has 4000 MB" in result.stdout
    assert (tmp_path / "runs/c/param_L/fine/lfads.done").exists()


def test_runqueue_waits_for_a_busy_gpu_to_free_up_and_says_why(tmp_path: Path) -> None:
    stranger = subprocess.Popen(["sleep", "120"], start_new_session=True)
    try:
        sim = write_gpus(tmp_path / "gpus.json", [gpu("GPU-busy", processes=[{"pid": stranger.pid, "used_mb": 100}])])
        run = make_run(tmp_path / "runs", "c/param_W/r0", "echo finally\n")
        log = tmp_path / "queue.log"
        queue = start_queue(queue_env(tmp_path), "run", tmp_path / "runs", "--simulate-gpus", sim, "--poll-interval", "0.2", log=log)
        wait_for(lambda: "waiting: GPU-busy has a foreign process" in log.read_text(), what="the waiting note")
        assert not (run / "lfads.out").exists()
        write_gpus(sim, [gpu("GPU-busy")])  # the other user's job ended; no event of ours says so
        assert finish(queue) == 0
        assert (run / "lfads.done").exists()
    finally:
        stranger.kill()
        stranger.wait()


def test_a_run_that_fits_starts_though_many_runs_ahead_of_it_do_not(tmp_path: Path) -> None:
    sim = write_gpus(tmp_path / "gpus.json", [gpu("GPU-busy", total=8000, used=3000)])
    for index in range(30):  # more than a placement looks at in one go; each fits only an idle GPU
        make_run(tmp_path / "runs", f"c/param_B/big{index:02d}", "echo big\n", resources={"memory_mb": 6000})
    small = make_run(tmp_path / "runs", "c/param_S/small", "echo small\n", resources={"memory_mb": 2000})
    queue = start_queue(queue_env(tmp_path), "run", "--watch", tmp_path / "runs", "--simulate-gpus", sim, log=tmp_path / "q.log")
    try:
        wait_for((small / "lfads.done").exists, timeout=30, what="the small run behind the big ones")
    finally:
        queue.send_signal(signal.SIGINT)
        finish(queue)
    assert not list((tmp_path / "runs").glob("c/param_B/*/lfads.out"))  # the big ones still wait


def test_a_queue_with_no_device_at_all_says_so_instead_of_waiting_forever(tmp_path: Path) -> None:
    make_run(tmp_path / "runs", "c/param_N/r0")
    env = queue_env(tmp_path)
    refused = run_queue(env, "run", tmp_path / "runs", "--gpus", "none", "--cpu-slots", "0", timeout=30)
    assert refused.returncode == 2 and "--gpus none with --cpu-slots 0 leaves no device to run on" in refused.stderr
    no_gpus = write_gpus(tmp_path / "gpus.json", [])  # what NVML says on a machine without GPUs
    stopped = run_queue(env, "run", tmp_path / "runs", "--simulate-gpus", no_gpus, "--cpu-slots", "0", timeout=30)
    assert stopped.returncode == 2, stopped.stdout + stopped.stderr
    assert "runs cannot be started: no device to run on" in stopped.stdout + stopped.stderr


def test_a_cuda_oom_retry_avoids_the_device_that_ran_out_even_when_both_are_equally_free(tmp_path: Path) -> None:
    """GPU-A is chosen first (GPU-B is nearly full); the step frees both and runs out of memory on A.
    Both GPUs are then idle and equal, so only the exclusion of A sends the retry to B."""
    sim = write_gpus(tmp_path / "gpus.json", [gpu("GPU-A", total=24000, used=4000), gpu("GPU-B", total=24000, used=23000)])
    freed = write_gpus(tmp_path / "freed.json", [gpu("GPU-A", total=24000), gpu("GPU-B", total=24000)])
    run = make_run(tmp_path / "runs", "c/param_O/r0",
                   f'if [ "$CUDA_VISIBLE_DEVICES" = GPU-A ]; then\n  cp {freed} {sim}.new && mv {sim}.new {sim}\n'
                   '  echo "ResourceExhaustedError: OOM when allocating tensor"\n  exit 1\nfi\necho trained\n')
    result = run_queue(queue_env(tmp_path), "run", tmp_path / "runs", "--simulate-gpus", sim, "--retry-backoff", "0")
    assert result.returncode == 0, result.stdout + result.stderr
    devices = [header.split(" device=")[1].split()[0] for header in step_headers((run / "lfads.out").read_text())]
    assert devices == ["GPU-A", "GPU-B"]


def test_a_step_orphaned_by_a_killed_supervisor_keeps_its_simulated_gpu(tmp_path: Path) -> None:
    """The device claim lives while the run lock is held (the orphaned step holds it), so the next
    run waits for the step to end: the CPU-only twin of the real-GPU test in test_runqueue_gpu.py."""
    sim = write_gpus(tmp_path / "gpus.json", [gpu("GPU-A", total=24000)])
    pid_file, released, started = tmp_path / "first.pid", tmp_path / "released", tmp_path / "started"
    run = make_run(tmp_path / "runs", "c/param_O/r0",
                   '[ -e "$RUNQUEUE_RUN_DIR/again" ] && exit 0\ntouch "$RUNQUEUE_RUN_DIR/again"\n'
                   f"echo $$ > {pid_file}\nsleep 4\ndate +%s.%N > {released}\n")
    make_run(tmp_path / "runs", "c/param_O/r1", f"date +%s.%N > {started}\n")
    log = tmp_path / "queue.log"
    queue = start_queue(queue_env(tmp_path), "run", tmp_path / "runs", "--simulate-gpus", sim,
                        "--memory-per-run", "1000", "--max-per-gpu", "1", log=log)
    try:
        wait_for(lambda: pid_file.exists() and pid_file.read_text().strip() != "", what="the first run's step")
        os.kill(int(read_json(run / ".runqueue" / "state.json")["supervisor_pid"]), signal.SIGKILL)
        assert finish(queue, timeout=120) == 0, log.read_text()
    finally:
        if queue.poll() is None:
            queue.kill()
    assert float(started.read_text()) >= float(released.read_text()), log.read_text()


def test_tensorflows_out_of_memory_on_a_cpu_slot_is_host_memory_not_cuda(tmp_path: Path) -> None:
    run = make_run(tmp_path / "runs", "c/param_O/cpu", 'echo "ResourceExhaustedError: OOM when allocating tensor"; exit 1\n')
    result = run_queue(queue_env(tmp_path), "run", tmp_path / "runs", "--gpus", "none", "--cpu-slots", "1",
                       "--retries", "0", "--quiet")
    assert result.returncode == 1
    failed = read_json(run / "lfads.failed")
    assert failed["reason"] == "exit_status", failed
    assert failed["message"].startswith("lfads_train.sh ran out of host memory on cpu-0 (its last lines say so)")
    assert "CUDA" not in result.stdout


def test_a_runs_own_worker_in_a_new_session_is_not_foreign(tmp_path: Path) -> None:
    # Run a starts a GPU worker with setsid (another session than its supervisor's), which NVML lists.
    # The worker still holds a's run lock, so it is a's: under --foreign block run b may join the GPU.
    worker_pid, b_started = tmp_path / "worker.pid", tmp_path / "b-started"
    sim = write_gpus(tmp_path / "gpus.json", [gpu("GPU-w", total=16000)])
    root = tmp_path / "runs"
    make_run(root, "c/param_W/a", f'setsid sleep 60 & echo $! > {worker_pid}\n'
             f'for i in $(seq 1 200); do [ -e {b_started} ] && break; sleep 0.1; done\n'
             f'kill $(cat {worker_pid}); [ -e {b_started} ]\n')
    queue = start_queue(queue_env(tmp_path), "run", root, "--simulate-gpus", sim, "--max-per-gpu", "2",
                        "--memory-per-run", "1000", "--poll-interval", "1s", "--retries", "0", log=tmp_path / "q.log")
    try:
        wait_for(lambda: worker_pid.exists() and worker_pid.read_text().strip() != "", what="a's worker")
        pid = int(worker_pid.read_text())
        write_gpus(sim, [gpu("GPU-w", total=16000, used=3000, processes=[{"pid": pid, "used_mb": 3000}])])
        make_run(root, "c/param_W/b", f"touch {b_started}\n")  # pending only now, with the worker listed
        assert finish(queue, timeout=60) == 0, (tmp_path / "q.log").read_text()
    finally:
        if queue.poll() is None:
            queue.kill()
    assert (root / "c/param_W/a/lfads.done").exists() and (root / "c/param_W/b/lfads.done").exists()
