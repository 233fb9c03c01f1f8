"""`status --json`: exit_code of a done run and of a run waiting to retry
(DESIGN.md §5 lists exit_code for every row; no test looks at it outside failed rows)."""

from __future__ import annotations

import time
from pathlib import Path

from runqueue_testkit import make_run

from runqueue.devices.model import Device
from runqueue.devices.placement import PlacementPolicy
from runqueue.discovery import FoundRun
from runqueue.layout import RunPaths
from runqueue.runstate import PersistedState, Phase, save_state
from runqueue.status import run_row

GPU = Device(uuid="GPU-a", index=0, name="A40", is_gpu=True, memory_total_mb=16000, memory_used_mb=0)


def test_done_run_shows_exit_code_0_and_a_waiting_retry_shows_the_failed_attempts_code(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    done = make_run(root, "c/param_A/done")
    (done / "lfads.done").touch()
    state = PersistedState()
    state.phase, state.attempt, state.device_uuid = Phase.SUCCEEDED, 1, "GPU-a"
    save_state(RunPaths(done), state)
    row = run_row(FoundRun(done, root, True, False), [GPU], [], PlacementPolicy())
    assert (row.state, row.exit_code, row.device, row.attempt) == ("done", 0, "GPU-a", 1)

    retry = make_run(root, "c/param_A/retry")
    state = PersistedState()
    state.phase, state.attempt, state.step, state.resume_step = Phase.RETRY_WAIT, 1, "lfads_train.sh", "lfads_train.sh"
    state.exit_code, state.reason, state.retry_after = 3, "exit_status", time.time() + 600
    save_state(RunPaths(retry), state)
    row = run_row(FoundRun(retry, root, False, False), [GPU], [], PlacementPolicy())
    assert (row.state, row.exit_code, row.attempt, row.step) == ("pending", 3, 1, "lfads_train.sh")
    assert row.reason is not None and row.reason.startswith("retry after exit_status (attempt 1 failed)")
