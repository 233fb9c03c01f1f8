"""The queue on real GPUs through NVML (runs only where an NVIDIA driver answers)."""

from __future__ import annotations

from pathlib import Path

import pytest
from runqueue_testkit import make_run, queue_env, read_json, run_queue


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
