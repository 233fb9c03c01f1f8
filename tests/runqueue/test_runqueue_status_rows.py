"""`status --json`: exit_code of a done run and of a run waiting to retry
(DESIGN.md §5 lists exit_code for every row; no test looks at it outside failed rows)."""

from __future__ import annotations

import re
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

    by_hand = make_run(root, "c/param_A/by_hand")  # failed once, then marked done by hand
    state = PersistedState()
    state.phase, state.attempt, state.device_uuid, state.exit_code = Phase.RETRY_WAIT, 1, "GPU-a", 3
    save_state(RunPaths(by_hand), state)
    (by_hand / "lfads.done").touch()
    row = run_row(FoundRun(by_hand, root, True, False), [GPU], [], PlacementPolicy())
    assert (row.state, row.exit_code, row.device, row.attempt) == ("done", None, None, None)

    retry = make_run(root, "c/param_A/retry")
    state = PersistedState()
    state.phase, state.attempt, state.step, state.resume_step = Phase.RETRY_WAIT, 1, "lfads_train.sh", "lfads_train.sh"
    state.exit_code, state.reason, state.retry_after = 3, "exit_status", time.time() + 600
    save_state(RunPaths(retry), state)
    row = run_row(FoundRun(retry, root, False, False), [GPU], [], PlacementPolicy())
    assert (row.state, row.exit_code, row.attempt, row.step) == ("pending", 3, 1, "lfads_train.sh")
    assert row.reason is not None and row.reason.startswith("retry after exit_status (attempt 1 failed)")


def test_a_retry_days_away_shows_its_date_and_one_past_the_clocks_range_no_traceback(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    reasons = {}
    for name, wait in (("soon", 600.0), ("days", 3 * 86400.0), ("never", 1e300)):  # a hand-edited state.json
        run = make_run(root, f"c/param_A/{name}")
        state = PersistedState()
        state.phase, state.attempt, state.resume_step = Phase.RETRY_WAIT, 1, "lfads_train.sh"
        state.reason, state.retry_after = "exit_status", time.time() + wait
        save_state(RunPaths(run), state)
        reasons[name] = run_row(FoundRun(run, root, False, False), [GPU], [], PlacementPolicy()).reason or ""
    assert re.search(r"; not before \d\d:\d\d:\d\d$", reasons["soon"]), reasons["soon"]
    assert re.search(r"; not before \d{4}-\d\d-\d\d \d\d:\d\d:\d\d$", reasons["days"]), reasons["days"]
    assert reasons["never"].endswith("not before a time too far ahead to show (see state.json's retry_after)")


def test_pending_runs_are_judged_in_turn_so_only_those_that_would_start_are_ready(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    found = [FoundRun(make_run(root, f"c/param_A/r{index}"), root, False, False) for index in range(3)]
    charged: list = []
    reasons = [run_row(run, [GPU], charged, PlacementPolicy(max_per_gpu=2)).reason for run in found]
    assert reasons == ["ready: fits GPU-a", "ready: fits GPU-a", "waiting: GPU-a has 2 run(s), max-per-gpu 2"]
    big = FoundRun(make_run(root, "c/param_A/big", resources={"memory_mb": 13000}), root, False, False)
    reason = run_row(big, [GPU], [], PlacementPolicy(max_per_gpu=4)).reason
    assert reason == "ready: fits GPU-a"
    reason = run_row(big, [GPU], charged, PlacementPolicy(max_per_gpu=4)).reason  # 2 x 2000 MB charged already
    assert reason is not None and reason.startswith("waiting: GPU-a") and "MB" in reason, reason
