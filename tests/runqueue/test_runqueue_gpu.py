"""The queue on real GPUs through NVML (runs only where an NVIDIA driver answers)."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from runqueue_testkit import finish, make_run, queue_env, read_json, run_queue, start_queue, wait_for

from runqueue.devices.model import Device
from runqueue.devices.nvml import NvmlInventory


def _gpu_count() -> tuple[int, str]:
    try:
        import pynvml
    except ImportError as error:
        return 0, f"nvidia-ml-py not importable ({error})"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as error:
        return 0, f"NVML unavailable on this machine ({error})"
    try:
        return pynvml.nvmlDeviceGetCount(), "no GPU visible to NVML"
    finally:
        pynvml.nvmlShutdown()


@pytest.mark.gpu
def test_runqueue_real_gpu_run_gets_a_uuid_and_the_gpu_settings(tmp_path: Path) -> None:
    count, reason = _gpu_count()
    if count == 0:
        pytest.skip(reason)
    record = tmp_path / "seen"
    run = make_run(
        tmp_path / "runs", "c/param_G/r0",
        f'echo "$CUDA_VISIBLE_DEVICES $CUDA_DEVICE_ORDER $TF_FORCE_GPU_ALLOW_GROWTH" > {record}\n'
        f"nvidia-smi -L >> {record} 2>&1 || true\n",
    )
    # Declare little memory and share with whatever else runs there: the point is the path through NVML.
    result = run_queue(queue_env(tmp_path), "run", tmp_path / "runs", "--memory-per-run", "100", "--foreign", "share")
    assert result.returncode == 0, result.stdout + result.stderr
    visible, order, growth = record.read_text().splitlines()[0].split()
    assert visible.startswith(("GPU-", "MIG-")) and (order, growth) == ("PCI_BUS_ID", "true")
    assert read_json(run / "lfads.done")["device"] == visible


# --- real jobs holding real GPU memory (torch, cupy or tensorflow does the allocating) ---

HOLD = Path(__file__).parent / "data" / "gpu_hold.py"


def _first_gpu_or_skip() -> Device:
    count, reason = _gpu_count()
    if count == 0:
        pytest.skip(reason)
    if not any(importlib.util.find_spec(name) for name in ("torch", "cupy", "tensorflow")):
        pytest.skip("none of torch, cupy, tensorflow is importable: nothing to allocate GPU memory with")
    reading = NvmlInventory().read()
    tracked = [d for d in reading.devices if d.memory_total_mb and d.memory_used_mb is not None]
    if not tracked:
        pytest.skip(f"NVML reports no GPU with readable memory: {reading.status}")
    return tracked[0]


def _hold_command(record: Path, megabytes: int, seconds: float, delay: float = 0.0) -> str:
    return f"exec {sys.executable} {HOLD} {record} {megabytes} {seconds} {delay}\n"


def _most_at_once(records: list[dict[str, float]]) -> int:
    """Largest number of the jobs' [started_at, released_at] intervals that overlap."""
    edges = sorted([(r["started_at"], 1) for r in records] + [(r["released_at"], -1) for r in records])
    running = most = 0
    for _, change in edges:
        running += change
        most = max(most, running)
    return most


@pytest.mark.gpu
def test_real_gpu_runs_are_packed_by_declared_memory_and_charged_before_they_allocate(tmp_path: Path) -> None:
    device = _first_gpu_or_skip()
    free_mb = device.memory_total_mb - device.memory_used_mb
    declared = int(free_mb * 0.4)  # two fit, a third does not
    records = [tmp_path / f"r{i}.json" for i in range(4)]
    for i, record in enumerate(records):
        # Each job shows 0 MB to NVML for its first 2 s (then half its declaration): only the queue's
        # charge of the declared memory keeps a third one off the GPU in that window.
        make_run(tmp_path / "runs", f"c/param_P/r{i}", _hold_command(record, declared // 2, 3.0, delay=2.0))
    # --gpus pins the queue to this one GPU so the arithmetic holds on a multi-GPU machine too. The
    # default --foreign block also proves NVML's pids are matched to our runs: were the first run's
    # process taken for someone else's, the second would never join it.
    result = run_queue(
        queue_env(tmp_path), "run", tmp_path / "runs", "--gpus", device.uuid,
        "--memory-per-run", str(declared), "--max-per-gpu", "4", "--quiet",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    seen = [read_json(record) for record in records]
    for i, record in enumerate(seen):
        done = read_json(tmp_path / "runs" / f"c/param_P/r{i}" / "lfads.done")
        assert record["visible"] == done["device"] == device.uuid
        assert record["device_count"] == 1  # the UUID in CUDA_VISIBLE_DEVICES is honoured by CUDA
        assert record["cuda_uuid"].lower() in device.uuid.lower()
    assert _most_at_once(seen) == 2, seen


@pytest.mark.gpu
@pytest.mark.parametrize("policy", ["block", "share"])
def test_real_gpu_other_process_keeps_runs_off_until_it_exits(tmp_path: Path, policy: str) -> None:
    # block: any foreign compute process keeps our runs off. share: only when NVML shows the GPU too
    # full for the run's declaration — so the foreign job takes all but 4 GB of what NVML calls free
    # (CUDA can allocate less than that: the driver reserves some, and each context takes ~0.5 GB).
    device = _first_gpu_or_skip()
    free_mb = device.memory_total_mb - device.memory_used_mb
    foreign_mb = 256 if policy == "block" else free_mb - 4000
    foreign_record = tmp_path / "foreign.json"
    # Growth on: with tensorflow as the allocator it would otherwise take the whole card at once.
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": device.uuid, "TF_FORCE_GPU_ALLOW_GROWTH": "true"}
    foreign = subprocess.Popen([sys.executable, str(HOLD), str(foreign_record), str(foreign_mb), "8"], env=env)
    try:
        wait_for(lambda: _nvml_shows_pid(device.uuid, foreign.pid), timeout=60, what="NVML to list the foreign process")
        run_record = tmp_path / "run.json"
        make_run(tmp_path / "runs", "c/param_F/r0", _hold_command(run_record, 100, 0.5))
        result = run_queue(
            queue_env(tmp_path), "run", tmp_path / "runs", "--gpus", device.uuid,
            "--memory-per-run", "8000", "--foreign", policy, "--quiet", "--poll-interval", "1s",
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert foreign.wait(timeout=60) == 0
    finally:
        if foreign.poll() is None:
            foreign.kill()
    held_until = read_json(foreign_record)["released_at"]
    assert read_json(run_record)["started_at"] >= held_until, "the run started while the other process held the GPU"


def _nvml_shows_pid(uuid: str, pid: int) -> bool:
    reading = NvmlInventory().read()
    return any(p.pid == pid for d in reading.devices if d.uuid == uuid for p in d.processes)


@pytest.mark.gpu
def test_real_cuda_out_of_memory_is_recognised_and_ends_as_cuda_oom(tmp_path: Path) -> None:
    # The run under-declares and asks CUDA for twice the card: the real allocator's message, tee'd
    # into lfads.out, must be read as an out-of-memory failure (one GPU: the retry lands there again).
    device = _first_gpu_or_skip()
    run = make_run(tmp_path / "runs", "c/param_M/r0", _hold_command(tmp_path / "never.json", 2 * device.memory_total_mb, 0))
    result = run_queue(
        queue_env(tmp_path), "run", tmp_path / "runs", "--gpus", device.uuid, "--memory-per-run", "100",
        "--retries", "1", "--retry-backoff", "0",
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "attempt 1 failed (cuda_oom)" in result.stdout
    failed = read_json(run / "lfads.failed")
    assert failed["reason"] == "cuda_oom", failed
    assert not (tmp_path / "never.json").exists()


@pytest.mark.gpu
def test_real_gpu_step_orphaned_by_a_killed_supervisor_keeps_its_device(tmp_path: Path) -> None:
    # The step outlives its supervisor (kill -9) and still holds GPU memory: its claim must stay live
    # while it holds the run lock, so with --max-per-gpu 1 the next run waits for it to let go.
    device = _first_gpu_or_skip()
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    pid_file = tmp_path / "first.pid"
    run = make_run(tmp_path / "runs", "c/param_O/r0",
                   '[ -e "$RUNQUEUE_RUN_DIR/again" ] && exit 0\ntouch "$RUNQUEUE_RUN_DIR/again"\n'
                   f"echo $$ > {pid_file}\n" + _hold_command(first, 512, 6.0))
    make_run(tmp_path / "runs", "c/param_O/r1", _hold_command(second, 100, 0.5))
    log = tmp_path / "queue.log"
    queue = start_queue(queue_env(tmp_path), "run", tmp_path / "runs", "--gpus", device.uuid,
                        "--memory-per-run", "1000", "--max-per-gpu", "1", log=log)
    try:
        wait_for(lambda: pid_file.exists() and pid_file.read_text().strip() != "", what="the first run's step")
        hold_pid = int(pid_file.read_text())
        wait_for(lambda: _nvml_shows_pid(device.uuid, hold_pid), what="NVML to list the first run's step")
        state = read_json(run / ".runqueue" / "state.json")
        os.kill(int(state["supervisor_pid"]), signal.SIGKILL)
        assert finish(queue, timeout=120) == 0, log.read_text()
    finally:
        if queue.poll() is None:
            queue.kill()
    assert read_json(second)["started_at"] >= read_json(first)["released_at"], (
        "the second run was put on the GPU while the orphaned step still held it")
    assert (run / "lfads.done").exists() and (tmp_path / "runs/c/param_O/r1/lfads.done").exists()
