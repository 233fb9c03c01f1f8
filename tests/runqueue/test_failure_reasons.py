"""What a failed step is called, and the fix its message names (runqueue.failure_reasons)."""

from __future__ import annotations

import signal
from pathlib import Path

from runqueue.failure_reasons import step_failure
from runqueue.procinfo import account_name
from runqueue.runstate import Reason

TF_OOM = b"ResourceExhaustedError: OOM when allocating tensor with shape[512,512]\n"


def test_out_of_memory_is_cuda_on_a_gpu_and_host_memory_on_a_cpu_slot(tmp_path: Path) -> None:
    assert step_failure("lfads_train.sh", 1, None, TF_OOM, "GPU-1234", tmp_path) == (
        Reason.CUDA_OOM, "CUDA out of memory on GPU-1234")
    reason, message = step_failure("lfads_train.sh", 1, None, TF_OOM, "cpu-0", tmp_path)
    assert reason is Reason.EXIT_STATUS
    assert "ran out of host memory on cpu-0" in message and "--cpu-slots" in message


def test_disk_full_said_by_the_step_points_at_other_disks_when_the_run_folder_has_room(tmp_path: Path) -> None:
    reason, message = step_failure("lfads_train.sh", 1, None, b"OSError: [Errno 28] No space left on device\n",
                                   "GPU-1", tmp_path)
    assert reason is Reason.DISK_FULL and f"the disk of {tmp_path} has room now" in message


def test_signals_and_exit_statuses(tmp_path: Path) -> None:
    reason, message = step_failure("lfads_train.sh", None, signal.SIGKILL, b"", "GPU-1", tmp_path)
    assert reason is Reason.SIGNAL and "killed by SIGKILL" in message and "out-of-memory killer" in message
    reason, message = step_failure("lfads_train.sh", None, signal.SIGSEGV, b"", "GPU-1", tmp_path)
    assert reason is Reason.SIGNAL and message == "lfads_train.sh killed by SIGSEGV"
    assert step_failure("x.sh", 3, None, b"plain error\n", "GPU-1", tmp_path) == (
        Reason.EXIT_STATUS, "x.sh exited with status 3")


def test_a_program_the_queues_account_may_not_run_is_named_with_the_account(tmp_path: Path) -> None:
    tail = b"lfads_train.sh: line 3: /home/alice/venv/bin/python: Permission denied\n"
    reason, message = step_failure("lfads_train.sh", 126, None, tail, "GPU-1", tmp_path)
    assert reason is Reason.EXIT_STATUS
    assert message.startswith("lfads_train.sh exited with status 126: lfads_train.sh: line 3: /home/alice/venv/bin/python:"
                              f" Permission denied; the queue runs it as {account_name()}")
    assert step_failure("x.sh", 126, None, b"something else\n", "GPU-1", tmp_path)[1] == "x.sh exited with status 126"
