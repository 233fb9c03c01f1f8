"""A failure's reason comes from this step's own output, never from what lfads.out held before it."""

from __future__ import annotations

from pathlib import Path

from runqueue_testkit import make_run, queue_env, read_json, run_queue

from runqueue.steps import read_region_tail


def test_the_region_tail_starts_at_the_steps_own_output(tmp_path: Path) -> None:
    log = tmp_path / "lfads.out"
    earlier = b"an earlier attempt: CUDA out of memory\n"
    log.write_bytes(earlier + b"this attempt: Traceback\n")
    assert read_region_tail(log, len(earlier), 1 << 20) == b"this attempt: Traceback\n"
    assert read_region_tail(log, log.stat().st_size, 1 << 20) == b""


def test_an_earlier_attempts_oom_or_full_disk_in_the_log_does_not_name_a_later_failure(tmp_path: Path) -> None:
    run = make_run(tmp_path / "runs", "c/param_T/r0", "echo 'ValueError: bad flag'; exit 3\n")
    (run / "lfads.out").write_text("W tensorflow: OOM when allocating tensor\nOSError: [Errno 28] No space left on device\n")
    result = run_queue(queue_env(tmp_path), "run", tmp_path / "runs", "--cpu-slots", "1", "--retries", "0")
    assert result.returncode == 1, result.stdout + result.stderr
    failure = read_json(run / "lfads.failed")
    assert (failure["reason"], failure["exit_code"]) == ("exit_status", 3), failure


def test_a_step_out_of_space_on_another_disk_is_disk_full_without_blaming_the_run_folders_disk(tmp_path: Path) -> None:
    run = make_run(tmp_path / "runs", "c/param_T/r1", "echo 'OSError: [Errno 28] No space left on device: /scratch/x'; exit 1\n")
    result = run_queue(queue_env(tmp_path), "run", tmp_path / "runs", "--cpu-slots", "1", "--retries", "0")
    assert result.returncode == 1, result.stdout + result.stderr
    failure = read_json(run / "lfads.failed")
    assert failure["reason"] == "disk_full"
    assert "ran out of disk space" in failure["message"] and "has room now" in failure["message"]
    assert "is (or was) full" not in failure["message"]
