"""Failures end as lfads.failed with their reason after the retries, and the queue carries on."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from runqueue_testkit import (
    finish,
    gpu,
    kill_processes,
    make_run,
    pid_alive,
    queue_env,
    read_json,
    run_queue,
    start_queue,
    step_headers,
    wait_for,
    write_gpus,
)


def _sim(tmp_path: Path) -> Path:
    return write_gpus(tmp_path / "gpus.json", [gpu("GPU-f1"), gpu("GPU-f2")])


def test_runqueue_retries_from_the_failed_step_then_writes_lfads_failed(tmp_path: Path) -> None:
    counter = tmp_path / "posterior_calls"
    # Training succeeds; the posterior step fails every time: retried from that step only.
    bad = make_run(tmp_path / "runs", "c/param_X/bad", "echo train-ran\n", posterior=f"echo x >> {counter}\necho 'about to fail'\nexit 7\n")
    # Fails once, then succeeds: a retry rescues it.
    flaky_flag = tmp_path / "flaky"
    flaky = make_run(tmp_path / "runs", "c/param_X/flaky", f"[ -e {flaky_flag} ] || {{ touch {flaky_flag}; exit 3; }}\necho ok\n")
    good = make_run(tmp_path / "runs", "c/param_X/good", "echo fine\n")
    result = run_queue(queue_env(tmp_path), "run", tmp_path / "runs", "--simulate-gpus", _sim(tmp_path), "--retries", "2", "--retry-backoff", "0.2")
    assert result.returncode == 1, result.stdout
    failure = read_json(bad / "lfads.failed")
    assert failure["reason"] == "exit_status"
    assert (failure["step"], failure["exit_code"], failure["signal"], failure["attempt"]) == ("lfads_posterior_mean_sample.sh", 7, None, 3)
    assert failure["last_lines"][-1] == "about to fail"
    assert failure["time"] and failure["message"] == "lfads_posterior_mean_sample.sh exited with status 7"
    assert counter.read_text().count("x") == 3
    log = (bad / "lfads.out").read_text()
    assert log.count("train-ran") == 1  # not retried from the start
    steps = [(h.split(" attempt=")[1].split()[0], h.split(" step=")[1].split()[0]) for h in step_headers(log)]
    assert steps == [("1/3", "lfads_train.sh"), ("1/3", "lfads_posterior_mean_sample.sh"), ("2/3", "lfads_posterior_mean_sample.sh"), ("3/3", "lfads_posterior_mean_sample.sh")]
    assert not (bad / "lfads.done").exists()
    assert read_json(flaky / "lfads.done")["attempt"] == 2
    assert (good / "lfads.done").exists()
    assert "failed  param_X/bad: exit_status" in result.stdout
    # A failed run is not started again until requeued.
    again = run_queue(queue_env(tmp_path), "run", tmp_path / "runs", "--simulate-gpus", _sim(tmp_path), "--quiet")
    assert again.returncode == 1
    assert counter.read_text().count("x") == 3


def test_runqueue_time_limit_stops_the_whole_process_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    run = make_run(
        tmp_path / "runs",
        "c/param_T/slow",
        # A child in the background, one that ignores SIGTERM, and one that left the process group.
        f"sleep 300 & echo $! >> {pids}\n"
        f"bash -c 'trap \"\" TERM; sleep 300' & echo $! >> {pids}\n"
        f"setsid sleep 300 & echo $! >> {pids}\n"
        "echo started; sleep 300\n",
    )
    start = time.monotonic()
    result = run_queue(
        queue_env(tmp_path), "run", tmp_path / "runs", "--simulate-gpus", _sim(tmp_path),
        "--time-limit", "1.5s", "--retries", "0", "--kill-grace", "0.5",
    )
    assert time.monotonic() - start < 60
    assert result.returncode == 1
    failure = read_json(run / "lfads.failed")
    assert failure["reason"] == "time_limit"
    assert failure["signal"] in (15, 9)
    children = [int(pid) for pid in pids.read_text().split()]
    assert len(children) == 3
    for pid in children:
        deadline = time.monotonic() + 10
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not pid_alive(pid), f"pid {pid} survived the time limit"


def test_runqueue_time_limit_from_runqueue_json(tmp_path: Path) -> None:
    run = make_run(tmp_path / "runs", "c/param_T/declared", "sleep 300\n", resources={"time_limit": "1s"})
    result = run_queue(queue_env(tmp_path), "run", tmp_path / "runs", "--simulate-gpus", _sim(tmp_path), "--retries", "0", "--kill-grace", "0.5",
                       "--time-limit", "1h")
    assert result.returncode == 1
    assert read_json(run / "lfads.failed")["reason"] == "time_limit"
    # The file wins over the flag: the start line says which limit holds, and where it comes from.
    assert "attempt 1/1, time limit 1s (from its runqueue.json)" in result.stdout


def test_runqueue_missing_unreadable_and_device_log_have_reasons(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    missing = root / "c/param_M/missing"
    missing.mkdir(parents=True)
    (missing / "lfads_train.sh").symlink_to(tmp_path / "deleted.sh")  # the script the run names is gone
    unreadable = make_run(root, "c/param_M/unreadable")
    (unreadable / "lfads_posterior_mean_sample.sh").mkdir()  # not a script at all
    full = make_run(root, "c/param_M/full")
    # A device is no log (/dev/full took every write with ENOSPC; a fifo lost them): refused as such.
    # A really full disk is in test_a_full_disk_is_named_and_the_log_is_kept (a small tmpfs).
    (full / "lfads.out").symlink_to("/dev/full")
    fine = make_run(root, "c/param_M/fine")
    result = run_queue(queue_env(tmp_path), "run", root, "--simulate-gpus", _sim(tmp_path), "--retries", "0", "--quiet")
    assert result.returncode == 1
    assert read_json(missing / "lfads.failed")["reason"] == "script_missing"
    assert "does not exist" in read_json(missing / "lfads.failed")["message"]
    assert read_json(unreadable / "lfads.failed")["reason"] == "script_unreadable"
    assert read_json(unreadable / "lfads.failed")["step"] == "lfads_posterior_mean_sample.sh"
    failed = read_json(full / "lfads.failed")
    assert failed["reason"] == "internal_error" and "is not a regular file (a fifo, socket or device)" in failed["message"]
    assert (fine / "lfads.done").exists()  # and the queue carried on


def test_runqueue_vanished_run_folder_is_dropped_and_the_queue_carries_on(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    make_run(root, "c/param_V/gone", 'rm -rf "$RUNQUEUE_RUN_DIR"\nexit 1\n')
    fine = make_run(root, "c/param_V/zfine")
    result = run_queue(queue_env(tmp_path), "run", root, "--simulate-gpus", _sim(tmp_path), "--quiet")
    assert "[param_V/gone]" in result.stdout and "/c/param_V/gone vanished while running (deleted); dropped" in result.stdout
    assert (fine / "lfads.done").exists()
    assert not (root / "c/param_V/gone").exists()
    # Its work is lost: the summary names it and the exit status says a run failed.
    assert "summary: 2 run(s): 1 done, 0 failed, 0 running, 0 pending, 1 gone" in result.stdout
    assert "  gone    param_V/gone: " in result.stdout
    assert result.returncode == 1


@pytest.mark.parametrize(("ending", "code", "says"), [
    ("echo trained", 0, "was moved while running; it finished where it went"),
    ("exit 3", 1, "was moved while running; it failed where it went (see its lfads.failed there)"),
])
def test_a_run_moved_out_of_the_roots_while_running_ends_there_and_counts_by_its_markers(
        tmp_path: Path, ending: str, code: int, says: str) -> None:
    root = tmp_path / "runs"
    run = make_run(root, "c/param_M/moved", f"touch started; sleep 2; {ending}\n")
    log = tmp_path / "queue.log"
    queue = start_queue(queue_env(tmp_path), "run", root, "--cpu-slots", "1", "--retries", "0", "--quiet", log=log)
    try:
        wait_for((run / "started").exists, what="the step")
        (tmp_path / "elsewhere").mkdir()
        run.rename(tmp_path / "elsewhere" / "moved")
        exit_status = finish(queue)
    finally:
        kill_processes(queue)
    console = log.read_text()
    assert exit_status == code, console  # never "no run folders under runs; check the path" (2)
    marker = "lfads.done" if code == 0 else "lfads.failed"
    assert (tmp_path / "elsewhere" / "moved" / marker).exists()
    assert "summary: 1 run(s): 0 done, 0 failed, 0 running, 0 pending, 1 gone" in console
    assert f"  gone    param_M/moved: {run} {says}" in console and "no run folders" not in console


def test_a_run_folder_deleted_under_a_running_step_stops_the_step_and_frees_its_device(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    pid_file = tmp_path / "step.pid"
    doomed = make_run(root, "c/param_V/adoomed", f'echo $$ > {pid_file}\nexec sleep 300\n')
    after = make_run(root, "c/param_V/zafter")
    log = tmp_path / "queue.log"
    queue = start_queue(queue_env(tmp_path), "run", root, "--cpu-slots", "1", "--kill-grace", "2", "--quiet", log=log)
    try:
        wait_for(lambda: pid_file.exists() and pid_file.read_text().strip() != "", what="the step")
        step = int(pid_file.read_text())
        shutil.rmtree(doomed)
        wait_for(lambda: not pid_alive(step), timeout=15, what="the step of the deleted folder to be stopped")
        wait_for((after / "lfads.done").exists, timeout=30, what="the next run on the freed slot")
    finally:
        if queue.poll() is None:
            queue.send_signal(signal.SIGINT)
        finish(queue)
    assert "param_V/adoomed" in log.read_text() and not doomed.exists()


def test_runqueue_bad_runqueue_json_blocks_only_that_run(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    bad = make_run(root, "c/param_B/bad")
    (bad / "runqueue.json").write_text('{"memory_mb": -5}')
    fine = make_run(root, "c/param_B/fine")
    result = run_queue(queue_env(tmp_path), "run", root, "--simulate-gpus", _sim(tmp_path), "--quiet")
    assert result.returncode == 1
    assert f"not started: {bad / 'runqueue.json'}: memory_mb must be a non-negative integer (MB), got -5" in result.stdout
    assert (fine / "lfads.done").exists()
    assert not os.path.exists(bad / "lfads.failed")  # the user fixes the file; nothing to requeue


def test_runqueue_watching_queue_starts_a_run_once_its_runqueue_json_is_fixed(tmp_path: Path) -> None:
    bad = make_run(tmp_path / "runs", "c/param_B/bad")
    (bad / "runqueue.json").write_text('{"memory_mb": "lots"}')
    log = tmp_path / "queue.log"
    queue = start_queue(queue_env(tmp_path), "run", "--watch", tmp_path / "runs", "--simulate-gpus", _sim(tmp_path), "--poll-interval", "0.2", log=log)
    try:
        wait_for(lambda: "memory_mb must be a non-negative integer" in log.read_text(), what="the complaint")
        (bad / "runqueue.json").write_text('{"memory_mb": 1000}')
        wait_for(lambda: (bad / "lfads.done").exists(), what="the fixed run to run")
    finally:
        queue.send_signal(2)
        finish(queue)
    assert log.read_text().count("memory_mb must be a non-negative integer") == 1  # said once, not every rescan


def test_a_run_whose_supervisor_was_killed_is_placed_again_once_its_step_ends(tmp_path: Path) -> None:
    sim = write_gpus(tmp_path / "gpus.json", [gpu("GPU-k")])
    run = make_run(tmp_path / "runs", "c/param_K/r0",
                   'echo "step $RUNQUEUE_ATTEMPT"; [ -e "$RUNQUEUE_RUN_DIR/again" ] || { echo sleeping; sleep 3; }\n')
    queue = start_queue(queue_env(tmp_path), "run", tmp_path / "runs", "--simulate-gpus", sim, log=tmp_path / "q.log")
    try:
        state = run / ".runqueue" / "state.json"
        # Killed only once its step runs (state.json names the supervisor a moment before the step
        # starts: killed then, there is no step to resume at).
        wait_for(lambda: (run / "lfads.out").exists() and "sleeping" in (run / "lfads.out").read_text(), what="the step")
        (run / "again").touch()  # the next attempt finishes at once
        os.kill(int(read_json(state)["supervisor_pid"]), signal.SIGKILL)  # its step goes on, orphaned
        assert finish(queue, timeout=60) == 0, (tmp_path / "q.log").read_text()
    finally:
        if queue.poll() is None:
            queue.kill()
    assert (run / "lfads.done").exists()
    console = (tmp_path / "q.log").read_text()
    assert "supervisor ended unexpectedly" in console
    # Not resumed silently: the console and the run's log say why it goes again.
    assert "resuming at lfads_train.sh (its last supervisor was lost: killed, crashed or the machine restarted)" in console
    log = (run / "lfads.out").read_text()
    assert "is gone while it ran lfads_train.sh (killed, crashed, or the machine restarted); going on" in log


def test_a_time_limit_beyond_what_poll_can_wait_works(tmp_path: Path) -> None:
    sim = write_gpus(tmp_path / "gpus.json", [gpu("GPU-l")])
    run = make_run(tmp_path / "runs", "c/param_L/r0", "echo long allowed\n")
    result = run_queue(queue_env(tmp_path), "run", tmp_path / "runs", "--simulate-gpus", sim, "--time-limit", "600h")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OverflowError" not in (run / "lfads.out").read_text()


@pytest.fixture
def small(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB file system (a tmpfs), to fill up."""
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip()}); needs root")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_full_disk_is_named_and_the_log_is_kept(tmp_path: Path, small: Path) -> None:
    run = make_run(small, "c/param_D/r0", 'for i in $(seq 1 100000); do echo "line $i padding padding padding padding padding padding"; done\n')
    result = run_queue(queue_env(tmp_path), "run", small, "--cpu-slots", "1", "--retries", "1", "--retry-backoff", "0",
                       "--quiet", timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"the disk of {run} is full" in result.stdout
    log = (run / "lfads.out").read_text()
    assert log.startswith("### runqueue") and "line 1 padding" in log  # what was written is kept
    assert not (run / "lfads.done").exists()
    (row,) = json.loads(run_queue(queue_env(tmp_path), "status", small, "--json").stdout)["runs"]
    assert row["state"] == "pending" and row["reason"] == f"its disk is full ({run}); free space there and it goes again"


def test_runs_on_a_full_disk_wait_for_space_without_being_started(tmp_path: Path, small: Path) -> None:
    runs = [make_run(small, f"c/param_F/{name}") for name in ("a", "b")]
    filler = small / "filler"
    with contextlib.suppress(OSError), open(filler, "wb") as fill:  # every byte of it: state.json cannot be written
        while True:
            fill.write(b"x" * 4096)
            fill.flush()
    result = run_queue(queue_env(tmp_path), "run", small, "--cpu-slots", "1", timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr  # blocked: a batch run says so and ends
    for run in runs:  # both, though one CPU slot: the first's wait leaves the slot to the next
        assert f"[param_F/{run.name}] waits: the disk of {run} is full, so it is not started; free space there" in result.stdout
    counts = [line for line in result.stdout.splitlines() if line.startswith("runqueue: ") and " running, " in line]
    assert counts and not any(line.startswith(("runqueue: 1 running", "runqueue: 2 running")) for line in counts), counts
    assert not any((run / "lfads.done").exists() or (run / "lfads.out").exists() for run in runs)  # never started
    # status says what the queue does: they wait for space (not "ready" on a device)
    rows = json.loads(run_queue(queue_env(tmp_path), "status", small, "--json").stdout)["runs"]
    assert sorted(row["reason"] for row in rows) == [f"its disk is full ({run}); free space there and it goes again"
                                                     for run in runs], rows


def test_a_watching_queue_starts_a_run_again_as_soon_as_its_full_disk_has_space(tmp_path: Path, small: Path) -> None:
    queue = None
    try:
        (small / "filler").write_bytes(b"x" * 1_500_000)
        run = make_run(small, "c/param_D/r0", '[ -e "$RUNQUEUE_RUN_DIR/../space" ] && { echo fine; exit 0; }\n'
                       'for i in $(seq 1 100000); do echo "line $i padding padding padding padding padding"; done\n')
        log = tmp_path / "q.log"
        queue = start_queue(queue_env(tmp_path), "run", "--watch", small, "--cpu-slots", "1", "--retries", "0",
                            "--poll-interval", "1s", "--quiet", log=log)
        wait_for(lambda: f"the disk of {run} is full" in log.read_text(), timeout=60, what="the full disk")
        time.sleep(3)  # rescans meanwhile must not start it into the same full disk
        (small / "filler").unlink()
        (run.parent / "space").touch()
        freed = time.monotonic()
        wait_for((run / "lfads.done").exists, timeout=30, what="the run to go again")
        assert time.monotonic() - freed < 10, log.read_text()  # at the next rescan, not after failed starts
    finally:
        if queue is not None:
            queue.send_signal(signal.SIGINT)
            finish(queue, timeout=30)


def test_cancel_after_the_supervisor_died_stops_steps_that_left_the_session(tmp_path: Path) -> None:
    sim = write_gpus(tmp_path / "gpus.json", [gpu("GPU-c")])
    escaped = tmp_path / "escaped.pid"
    run = make_run(tmp_path / "runs", "c/param_S/r0",
                   f'trap "" TERM\nsetsid bash -c \'trap "" TERM; echo $$ > {escaped}; sleep 200\' &\nsleep 201\n')
    queue = start_queue(queue_env(tmp_path), "run", tmp_path / "runs", "--simulate-gpus", sim, "--quiet", log=tmp_path / "q.log")
    try:
        state = run / ".runqueue" / "state.json"
        wait_for(lambda: escaped.exists() and escaped.read_text().strip() != "" and state.exists(), what="the escaped step")
        os.kill(int(read_json(state)["supervisor_pid"]), signal.SIGKILL)
        cancelled = run_queue(queue_env(tmp_path), "cancel", "--grace", "1", run)
        assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout, cancelled.stdout + cancelled.stderr
        wait_for(lambda: not pid_alive(int(escaped.read_text())), timeout=10, what="the escaped step to be stopped")
        assert finish(queue, timeout=60) == 1
        requeued = run_queue(queue_env(tmp_path), "requeue", run)  # nothing holds the run any more
        assert requeued.returncode == 0 and "requeued" in requeued.stdout, requeued.stderr
    finally:
        if queue.poll() is None:
            queue.kill()


def test_requeue_of_a_running_run_is_refused_with_a_non_zero_status(tmp_path: Path) -> None:
    sim = write_gpus(tmp_path / "gpus.json", [gpu("GPU-q")])
    release = tmp_path / "release"
    run = make_run(tmp_path / "runs", "c/param_Q/r0", f"while [ ! -e {release} ]; do sleep 0.1; done\n")
    queue = start_queue(queue_env(tmp_path), "run", tmp_path / "runs", "--simulate-gpus", sim, "--quiet", log=tmp_path / "q.log")
    try:
        wait_for(lambda: (run / ".runqueue" / "state.json").exists(), what="the run to start")
        refused = run_queue(queue_env(tmp_path), "requeue", run)
        assert refused.returncode == 2 and "is running; not requeued" in refused.stderr
    finally:
        release.touch()
        finish(queue)


def _wait_for_go(folder: Path) -> str:
    """A step that says it started, then waits for `folder`/go (paths that survive a rename of the run)."""
    return f'touch "{folder}/started"\nwhile [ ! -e "{folder}/go" ]; do sleep 0.05; done\necho old-step-finished\n'


def test_a_run_folder_deleted_and_made_again_while_running_is_a_new_run(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    run = make_run(root, "c/param_D/r", _wait_for_go(root / "c/param_D"))
    queue = start_queue(queue_env(tmp_path), "run", root, "--simulate-gpus", _sim(tmp_path), log=tmp_path / "q.log")
    try:
        wait_for((run.parent / "started").exists, what="the old run's step")
        shutil.rmtree(run)
        make_run(root, "c/param_D/r", 'touch "$RUNQUEUE_RUN_DIR/new-ran"\n')
        (run.parent / "go").touch()
        assert finish(queue, timeout=60) == 0, (tmp_path / "q.log").read_text()
    finally:
        (run.parent / "go").touch()  # a failed test must not leave a step waiting for ever
        if queue.poll() is None:
            queue.kill()
    # The old supervisor wrote nothing into the new folder: the new script ran and made the marker.
    assert (run / "new-ran").exists() and (run / "lfads.done").exists()
    assert "old-step-finished" not in (run / "lfads.out").read_text()


def test_a_run_folder_renamed_while_running_finishes_where_it_went(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    run = make_run(root, "c/param_M/r", _wait_for_go(root / "c/param_M"), posterior='echo "posterior in $PWD"\n')
    queue = start_queue(queue_env(tmp_path), "run", root, "--simulate-gpus", _sim(tmp_path), log=tmp_path / "q.log")
    moved = run.parent / "renamed"
    try:
        wait_for((run.parent / "started").exists, what="the step")
        run.rename(moved)
        (run.parent / "go").touch()
        assert finish(queue, timeout=60) == 0, (tmp_path / "q.log").read_text()
    finally:
        (run.parent / "go").touch()  # a failed test must not leave a step waiting for ever
        if queue.poll() is None:
            queue.kill()
    log = (moved / "lfads.out").read_text()
    assert (moved / "lfads.done").exists() and not run.exists()
    assert log.count("old-step-finished") == 1  # the training step ran once
    assert f"the run folder moved from {run} to {moved}; following it" in log
    assert f"posterior in {moved}" in log  # the next step ran in the folder's new place
    console = (tmp_path / "q.log").read_text()
    assert f"{run} was moved while running; it finished where it went; dropped" in console
    assert f"[param_M/r] posterior in {moved}\n" in console  # its output is still echoed, through the folder's descriptor
    assert "summary: 1 run(s): 1 done, 0 failed, 0 running, 0 pending\n" in console  # found again, counted once
    assert read_json(moved / ".runqueue" / "state.json")["phase"] == "succeeded"


def test_steps_left_by_a_killed_supervisor_still_hold_their_device(tmp_path: Path) -> None:
    sim = write_gpus(tmp_path / "gpus.json", [gpu("GPU-one")])  # one run at a time on it
    root = tmp_path / "runs"
    marks = root / "c"
    first = make_run(root, "c/param_O/r0", f'[ -e "{marks}/r0-end" ] && exit 0\nsleep 2\ndate +%s.%N >> "{marks}/r0-end"\n')
    make_run(root, "c/param_O/r1", f'date +%s.%N >> "{marks}/r1-start"\n')
    queue = start_queue(queue_env(tmp_path), "run", root, "--simulate-gpus", sim, log=tmp_path / "q.log")
    try:
        state = first / ".runqueue" / "state.json"
        wait_for(lambda: state.exists() and "supervisor_pid" in state.read_text(), what="the first run's supervisor")
        os.kill(int(read_json(state)["supervisor_pid"]), signal.SIGKILL)  # its sleep goes on, orphaned
        assert finish(queue, timeout=60) == 0, (tmp_path / "q.log").read_text()
    finally:
        if queue.poll() is None:
            queue.kill()
    r0_end = float((marks / "r0-end").read_text().split()[0])
    r1_start = float((marks / "r1-start").read_text().split()[0])
    assert r1_start >= r0_end, "the second run was put on the device while the first one's step still ran"


def test_runs_that_cannot_even_start_end_blocked_and_the_queue_returns(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    for name in ("a", "b", "c"):
        run = make_run(root, f"c/param_U/{name}")
        (run / ".runqueue").write_text("a file where the queue's folder goes")
    result = run_queue(queue_env(tmp_path), "run", root, "--cpu-slots", "1", "--quiet", timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "0 pending, 0 done, 0 failed, 3 blocked" in result.stdout
    assert result.stdout.count("blocked param_U/") == 3
    assert f"{root / 'c/param_U/a/.runqueue'} is a file, not the queue's folder; remove or rename it" in result.stdout


def test_a_run_on_a_read_only_mount_is_blocked_at_the_first_refusal(tmp_path: Path, small: Path) -> None:
    run = make_run(small, "c/param_R/r")
    remounted = subprocess.run(["mount", "-o", "remount,ro", str(small)], capture_output=True, text=True)
    if remounted.returncode != 0:
        pytest.skip(f"cannot remount the tmpfs read-only here ({remounted.stderr.strip()})")
    result = run_queue(queue_env(tmp_path), "run", small, "--cpu-slots", "1", timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    # A read-only mount does not fix itself within a second: one refusal, not three quick retries.
    assert result.stdout.count("could not start") == 1, result.stdout
    assert f"cannot create {run / '.runqueue'}" in result.stdout or "remount it read-write" in result.stdout, result.stdout
    assert "1 blocked" in result.stdout


def test_a_process_the_step_left_behind_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    leftover = tmp_path / "leftover.pid"
    # The pid is written once the trap is set, and the step waits for it: no race with the TERM.
    run = make_run(root, "c/param_L/r", f'( trap "" TERM; echo $BASHPID > "{leftover}"; sleep 60 ) &\n'
                   f'while [ ! -s "{leftover}" ]; do sleep 0.01; done\necho trained\n')
    started = time.monotonic()
    result = run_queue(queue_env(tmp_path), "run", root, "--simulate-gpus", _sim(tmp_path), "--kill-grace", "1", "--quiet", timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert time.monotonic() - started < 30
    assert (run / "lfads.done").exists()
    wait_for(lambda: not pid_alive(int(leftover.read_text())), timeout=10, what="the leftover to be gone")
    assert "processes the step left behind ignored SIGTERM for 1s; killed" in (run / "lfads.out").read_text()


def test_a_renamed_run_keeps_its_device_claim_when_its_supervisor_is_killed(tmp_path: Path) -> None:
    sim = write_gpus(tmp_path / "gpus.json", [gpu("GPU-one")])  # one run at a time on it
    root = tmp_path / "runs"
    marks = root / "c"
    wait_for_file = 'while [ ! -e "{0}" ]; do sleep 0.05; done\n'
    first = make_run(root, "c/param_R/r0", f'touch "{marks}/training"\n' + wait_for_file.format(marks / "go-train"),
                     posterior=f'touch "{marks}/sampling"\n' + wait_for_file.format(marks / "go-sample")
                     + f'date +%s.%N >> "{marks}/r0-end"\n')
    make_run(root, "c/param_R/r1", f'date +%s.%N >> "{marks}/r1-start"\n')
    moved = first.parent / "r0-moved"
    queue = start_queue(queue_env(tmp_path), "run", root, "--simulate-gpus", sim, log=tmp_path / "q.log")
    try:
        state = first / ".runqueue" / "state.json"
        wait_for(lambda: state.exists() and "supervisor_pid" in state.read_text(), what="the first run's supervisor")
        supervisor = int(read_json(state)["supervisor_pid"])
        wait_for((marks / "training").exists, what="the training step")  # its log is open: the move is followed
        first.rename(moved)
        (marks / "go-train").touch()
        wait_for((marks / "sampling").exists, what="the sampling step in the moved folder")
        os.kill(supervisor, signal.SIGKILL)  # the sampling step goes on, orphaned, in the moved folder
        time.sleep(1.5)
        assert not (marks / "r1-start").exists(), "the second run was put on the device of the orphaned step"
        (marks / "go-sample").touch()
        assert finish(queue, timeout=60) == 0, (tmp_path / "q.log").read_text()
    finally:
        for name in ("go-train", "go-sample"):  # a failed test must not leave steps waiting for ever
            (marks / name).touch()
        if queue.poll() is None:
            queue.kill()
    assert float((marks / "r1-start").read_text().split()[0]) >= float((marks / "r0-end").read_text().split()[0])


def test_a_step_killed_together_with_its_supervisor_is_interrupted_not_failed(tmp_path: Path) -> None:
    # SLURM moving a job off a failed node (or a shutdown) sends SIGTERM to every process at once:
    # the step dies a moment before the supervisor hears its own signal. No attempt may be used up.
    run = make_run(tmp_path / "runs", "c/param_S/r0",
                   'if [ ! -e "$RUNQUEUE_RUN_DIR/once" ]; then touch "$RUNQUEUE_RUN_DIR/once"; sup=$PPID\n'
                   # the supervisor's own SIGTERM trails the step's death by a moment
                   '  (sleep 0.3; kill -TERM $sup) & kill -TERM $$; sleep 5; fi\n'
                   'echo "fine on attempt $RUNQUEUE_ATTEMPT"\n')
    result = run_queue(queue_env(tmp_path), "run", tmp_path / "runs", "--cpu-slots", "1", "--retries", "0")
    assert result.returncode == 0, result.stdout + result.stderr
    log = (run / "lfads.out").read_text()
    assert "interrupted" in log and "fine on attempt 1" in log and not (run / "lfads.failed").exists()


def test_a_back_off_longer_than_ten_minutes_is_kept(tmp_path: Path) -> None:
    run = make_run(tmp_path / "runs", "c/param_B/r0", "exit 3\n")
    queue = start_queue(queue_env(tmp_path), "run", "--watch", tmp_path / "runs", "--gpus", "none",
                        "--retry-backoff", "3600", log=tmp_path / "q.log")
    state = run / ".runqueue" / "state.json"
    try:
        wait_for(lambda: state.exists() and read_json(state).get("phase") == "retry_wait", what="the back-off")
        assert read_json(state)["retry_after"] - time.time() > 3500  # not cut to 10 minutes
    finally:
        queue.send_signal(signal.SIGINT)
        finish(queue, timeout=30)


@pytest.mark.parametrize("lock", ["kept", "deleted"])
def test_steps_left_by_a_killed_supervisor_are_stopped_at_the_time_limit(tmp_path: Path, lock: str) -> None:
    """Nobody else enforces the time limit of steps whose supervisor died (the OOM killer, kill -9):
    the queue watching the run stops them once the limit and the kill grace have passed (SIGTERM,
    then SIGKILL after the grace: this step ignores SIGTERM). Also with the lock deleted under them
    (a user cleaning up): the steps still keep the run (their RUNQUEUE_RUN_DIR), and state.json still
    says when their attempt began and its limit; they were kept but never stopped."""
    step_pid = tmp_path / "step.pid"
    run = make_run(tmp_path / "runs", "c/param_O/r0",
                   f'if [ "$RUNQUEUE_ATTEMPT" = 1 ] && [ ! -e {step_pid} ]; then trap "" TERM; echo $$ > {step_pid};'
                   ' while :; do sleep 0.2; done; fi\necho "second go"\n')
    queue = start_queue(queue_env(tmp_path), "run", tmp_path / "runs", "--cpu-slots", "1", "--time-limit", "2s",
                        "--kill-grace", "1", log=tmp_path / "q.log")
    try:
        state = run / ".runqueue" / "state.json"
        wait_for(lambda: step_pid.exists() and step_pid.read_text().strip() != "", what="the step")
        os.kill(int(read_json(state)["supervisor_pid"]), signal.SIGKILL)  # its step goes on, orphaned
        if lock == "deleted":
            (run / ".runqueue" / "lock").unlink()
        assert finish(queue, timeout=60) == 0, (tmp_path / "q.log").read_text()
    finally:
        if queue.poll() is None:
            queue.kill()
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(step_pid.read_text()), signal.SIGKILL)
    assert not pid_alive(int(step_pid.read_text()))
    console, log = (tmp_path / "q.log").read_text(), (run / "lfads.out").read_text()
    assert "its supervisor is gone and its steps ran past the time limit (2s); stopped them" in console, console
    assert log.index("its supervisor is gone and its steps ran past the time limit") < log.index("second go"), log
    assert (run / "lfads.done").exists()


def test_deleting_a_run_held_by_steps_of_a_killed_supervisor_stops_them_and_the_queue_goes_on(tmp_path: Path) -> None:
    """The queue's look at such runs dropped the deleted one while iterating its runs (the queue died
    with "dictionary changed size during iteration"); and the steps ran on in the deleted folder."""
    step_pid = tmp_path / "step.pid"
    run = make_run(tmp_path / "runs", "c/param_O/gone", f"echo $$ > {step_pid}\nexec sleep 120\n")
    other = make_run(tmp_path / "runs", "c/param_O/later", f'while [ ! -e "{tmp_path}/go" ]; do sleep 0.05; done\necho later\n')
    # No inotify: the probe of held runs, not a hinted rescan, sees the deletion first.
    env = queue_env(tmp_path, RUNQUEUE_NO_INOTIFY="1")
    queue = start_queue(env, "run", "--watch", tmp_path / "runs", "--cpu-slots", "2", "--poll-interval", "60s",
                        log=tmp_path / "q.log")
    try:
        state = run / ".runqueue" / "state.json"
        wait_for(lambda: step_pid.exists() and step_pid.read_text().strip() != "", what="the step")
        os.kill(int(read_json(state)["supervisor_pid"]), signal.SIGKILL)
        time.sleep(0.3)  # deleted before any look of the queue found the step orphaned
        shutil.rmtree(run)
        wait_for(lambda: not pid_alive(int(step_pid.read_text())), timeout=30, what="the orphaned step to be stopped")
        (tmp_path / "go").touch()
        wait_for((other / "lfads.done").exists, what="the other run to finish")
        assert queue.poll() is None, (tmp_path / "q.log").read_text()
    finally:
        (tmp_path / "go").touch()
        if queue.poll() is None:
            queue.send_signal(signal.SIGINT)
            finish(queue, timeout=30)
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(step_pid.read_text()), signal.SIGKILL)
    console = (tmp_path / "q.log").read_text()
    assert "dictionary changed size" not in console and "its folder was deleted under steps whose supervisor is gone" in console, console


def test_a_restarted_queue_keeps_the_back_off_recorded_in_state_json(tmp_path: Path) -> None:
    run = make_run(tmp_path / "runs", "c/param_B/r1", "exit 3\n")
    env = queue_env(tmp_path)
    state = run / ".runqueue" / "state.json"
    args = ("run", "--watch", tmp_path / "runs", "--gpus", "none", "--retries", "2", "--retry-backoff", "3600")
    first = start_queue(env, *args, log=tmp_path / "q1.log")
    try:
        wait_for(lambda: state.exists() and read_json(state).get("phase") == "retry_wait", what="the back-off")
    finally:
        first.send_signal(signal.SIGINT)
        finish(first, timeout=30)
    second = start_queue(env, *args, log=tmp_path / "q2.log")  # it did not see the failure
    try:
        time.sleep(3)
        assert (read_json(state)["attempt"], read_json(state)["phase"]) == (1, "retry_wait"), (tmp_path / "q2.log").read_text()
    finally:
        second.send_signal(signal.SIGINT)
        finish(second, timeout=30)


def test_the_back_off_starts_at_the_value_given_and_doubles(tmp_path: Path) -> None:
    run = make_run(tmp_path / "runs", "c/param_B/r2", "exit 3\n")
    result = run_queue(queue_env(tmp_path), "run", tmp_path / "runs", "--gpus", "none", "--retries", "2",
                       "--retry-backoff", "1")
    assert result.returncode == 1, result.stdout + result.stderr
    waits = [line.rsplit(" in ", 1)[1] for line in (run / "lfads.out").read_text().splitlines() if "retrying from" in line]
    assert waits == ["1s", "2s"], waits


def test_the_queue_kills_only_the_orphaned_steps_it_stopped_and_stops_each_later_orphan(tmp_path: Path) -> None:
    """Attempts 1 and 2 are orphaned (their supervisors killed) and stopped at the time limit; the
    SIGKILL that follows the grace must spare the next attempt, started meanwhile (it holds the
    lock, so "the run's processes" now names it)."""
    starts = tmp_path / "starts"
    run = make_run(tmp_path / "runs", "c/param_O/r1",
                   f'n=$(cat {starts} 2>/dev/null | wc -l); echo $$ >> {starts}\n'
                   'if [ "$n" -lt 2 ]; then exec sleep 120; fi\nsleep 3\necho "third start finished"\n')
    queue = start_queue(queue_env(tmp_path), "run", tmp_path / "runs", "--cpu-slots", "1", "--time-limit", "4s",
                        "--kill-grace", "4", log=tmp_path / "q.log")
    state = run / ".runqueue" / "state.json"

    def started(count: int) -> bool:
        return starts.exists() and len(starts.read_text().split()) >= count

    try:
        for count in (1, 2):
            wait_for(lambda count=count: started(count) and read_json(state).get("phase") == "running", what=f"start {count}")
            os.kill(int(read_json(state)["supervisor_pid"]), signal.SIGKILL)
        assert finish(queue, timeout=90) == 0, (tmp_path / "q.log").read_text()
    finally:
        if queue.poll() is None:
            queue.kill()
        for pid in starts.read_text().split() if starts.exists() else []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
    log = (run / "lfads.out").read_text()
    assert log.count("its supervisor is gone and its steps ran past the time limit") == 2, log
    assert "third start finished" in log and (run / "lfads.done").exists(), log


def test_steps_left_in_a_run_folder_deleted_and_made_again_are_stopped(tmp_path: Path) -> None:
    """The old steps run on in the deleted folder; the new folder at the same path is a new run."""
    step_pid = tmp_path / "step.pid"
    run = make_run(tmp_path / "runs", "c/param_O/again", f"echo $$ > {step_pid}\nexec sleep 120\n")
    queue = start_queue(queue_env(tmp_path), "run", "--watch", tmp_path / "runs", "--cpu-slots", "1",
                        "--poll-interval", "60s", log=tmp_path / "q.log")
    try:
        wait_for(lambda: step_pid.exists() and step_pid.read_text().strip() != "", what="the step")
        os.kill(int(read_json(run / ".runqueue" / "state.json")["supervisor_pid"]), signal.SIGKILL)
        shutil.rmtree(run)
        make_run(tmp_path / "runs", "c/param_O/again", "echo the new run\n")
        wait_for(lambda: not pid_alive(int(step_pid.read_text())), timeout=30, what="the old step to be stopped")
        wait_for((run / "lfads.done").exists, what="the new run")
    finally:
        if queue.poll() is None:
            queue.send_signal(signal.SIGINT)
            finish(queue, timeout=30)
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(step_pid.read_text()), signal.SIGKILL)
    assert "its folder was deleted under steps whose supervisor is gone" in (tmp_path / "q.log").read_text()


def test_stopping_an_orphan_spares_the_steps_of_a_run_moved_away_from_its_path(tmp_path: Path) -> None:
    """Run X moved away keeps its old path in its steps' RUNQUEUE_RUN_DIR; run Y now lives at that
    path. Stopping Y's orphaned steps at its time limit must not touch X's (the path named both)."""
    root = tmp_path / "runs"
    x_pid, y_pid = tmp_path / "x.pid", tmp_path / "y.pid"
    first = make_run(root, "c/param_M/r0", f"echo $$ > {x_pid}\nexec sleep 120\n")
    queue = start_queue(queue_env(tmp_path), "run", "--watch", root, "--cpu-slots", "2", "--kill-grace", "1",
                        log=tmp_path / "q.log")
    try:
        wait_for(lambda: x_pid.exists() and x_pid.read_text().strip() != "", what="X's step")
        os.kill(int(read_json(first / ".runqueue" / "state.json")["supervisor_pid"]), signal.SIGKILL)
        first.rename(first.parent / "moved")
        second = make_run(root, "c/param_M/r0", f"echo $$ > {y_pid}\nexec sleep 120\n")
        (second / "runqueue.json").write_text('{"time_limit": "2s"}')
        wait_for(lambda: y_pid.exists() and y_pid.read_text().strip() != "", what="Y's step")
        os.kill(int(read_json(second / ".runqueue" / "state.json")["supervisor_pid"]), signal.SIGKILL)
        wait_for(lambda: "ran past the time limit" in (tmp_path / "q.log").read_text(), what="Y's orphan to be stopped")
        wait_for(lambda: not pid_alive(int(y_pid.read_text())), what="Y's step to end")
        assert pid_alive(int(x_pid.read_text())), (tmp_path / "q.log").read_text()
    finally:
        if queue.poll() is None:
            queue.send_signal(signal.SIGINT)  # twice: Y's next attempt is stopped too
            time.sleep(0.5)
            queue.send_signal(signal.SIGINT)
            finish(queue, timeout=30)
        for pid_file in (x_pid, y_pid):
            with contextlib.suppress(ProcessLookupError, ValueError, FileNotFoundError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)


@pytest.mark.parametrize("ignores_term", [False, True], ids=["step-stops-on-TERM", "step-ignores-TERM"])
def test_a_queue_started_after_a_run_folder_was_deleted_stops_the_steps_left_in_it(tmp_path: Path, ignores_term: bool) -> None:
    step_pid = tmp_path / "step.pid"
    run = make_run(tmp_path / "runs", "c/param_D/r0",
                   ("trap '' TERM\n" if ignores_term else "") + f"echo $$ > {step_pid}\nexec sleep 120\n")
    env = queue_env(tmp_path)
    queue = start_queue(env, "run", "--watch", tmp_path / "runs", "--cpu-slots", "1", log=tmp_path / "q1.log")
    try:
        wait_for(lambda: step_pid.exists() and step_pid.read_text().strip() != "", what="the step")
        os.kill(int(read_json(run / ".runqueue" / "state.json")["supervisor_pid"]), signal.SIGKILL)
        queue.kill()
        queue.wait()
        shutil.rmtree(run)  # nobody watching
        # Nothing pending: this queue is done at once, but not before the step's kill grace is out.
        result = run_queue(env, "run", tmp_path / "runs", "--cpu-slots", "1", "--kill-grace", "1")
        assert "stopped steps left running in deleted run folders under the roots" in result.stdout + result.stderr
        wait_for(lambda: not pid_alive(int(step_pid.read_text())), timeout=2, what="the step to end")
    finally:
        if queue.poll() is None:
            queue.kill()
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(step_pid.read_text()), signal.SIGKILL)


def _helper_script(pid_file: Path, cwd: str) -> str:
    """bash: start a helper in its own session that closes the inherited lock (Python's default), works in `cwd`."""
    return (f'{sys.executable} -c "import subprocess, sys; subprocess.Popen([sys.executable, \'-c\', \'import time;'
            f' time.sleep(600)\'], cwd=\'{cwd}\', start_new_session=True).pid and open(\'{pid_file}\', \'w\').write(\'x\')"\n')


def test_a_restarted_queue_leaves_a_live_runs_helper_in_a_removed_scratch_folder_alone(tmp_path: Path) -> None:
    helper, release = tmp_path / "helper.started", tmp_path / "release"
    run = make_run(tmp_path / "runs", "c/param_H/r0",
                   'mkdir -p scratch\n' + _helper_script(helper, "scratch")
                   + f'sleep 0.5; rmdir scratch\nwhile [ ! -e {release} ]; do sleep 0.05; done\n')
    env = queue_env(tmp_path)
    first = start_queue(env, "run", tmp_path / "runs", "--cpu-slots", "1", log=tmp_path / "q1.log")
    try:
        wait_for(helper.exists, what="the helper")
        time.sleep(1)  # the scratch folder is removed
        first.send_signal(signal.SIGHUP)  # the queue leaves; the run goes on under its supervisor
        finish(first, timeout=30)
        second = start_queue(env, "run", tmp_path / "runs", "--cpu-slots", "1", log=tmp_path / "q2.log")
        wait_for(lambda: "re-adopted" in (tmp_path / "q2.log").read_text(), what="the re-adoption")
        time.sleep(1)
        assert _helpers_of(run), (tmp_path / "q2.log").read_text()
        release.touch()
        assert finish(second, timeout=60) == 0
        assert "stopped steps left running in deleted run folders" not in (tmp_path / "q2.log").read_text()
    finally:
        release.touch()
        _kill_helpers(run)


def test_cancel_stops_a_helper_that_left_the_session_and_works_elsewhere(tmp_path: Path) -> None:
    helper = tmp_path / "helper.started"
    run = make_run(tmp_path / "runs", "c/param_H/r1", _helper_script(helper, "/tmp") + "exec sleep 600\n")
    env = queue_env(tmp_path)
    queue = start_queue(env, "run", tmp_path / "runs", "--cpu-slots", "1", log=tmp_path / "q.log")
    try:
        wait_for(helper.exists, what="the helper")
        os.kill(int(read_json(run / ".runqueue" / "state.json")["supervisor_pid"]), signal.SIGKILL)
        queue.send_signal(signal.SIGHUP)
        finish(queue, timeout=30)
        assert _helpers_of(run)
        result = run_queue(env, "cancel", run)
        assert result.returncode == 0, result.stdout + result.stderr
        wait_for(lambda: not _helpers_of(run), timeout=15, what="the helper to be stopped")
    finally:
        _kill_helpers(run)


def _helpers_of(run: Path) -> list[int]:
    found = []
    for pid in subprocess.run(["pgrep", "-f", r"time\.sleep\(600\)"], capture_output=True, text=True).stdout.split():
        with contextlib.suppress(OSError):
            if f"RUNQUEUE_RUN_DIR={run}\0".encode() in Path(f"/proc/{pid}/environ").read_bytes():
                found.append(int(pid))
    return found


def _kill_helpers(run: Path) -> None:
    for pid in _helpers_of(run):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# A step that saves for 3 s after SIGTERM (as training saves a checkpoint), then exits.
_SAVES_ON_TERM = ('trap \'echo saving; sleep 3; echo saved > "$RUNQUEUE_RUN_DIR/saved"; exit 143\' TERM\n'
                  'touch "$RUNQUEUE_RUN_DIR/started"\nwhile true; do sleep 0.1; done\n')


@pytest.mark.parametrize(("kill_grace", "cancel_grace", "saved"), [("1", "8", True), ("30", "1", False)])
def test_cancel_grace_is_the_time_the_step_gets_to_save(tmp_path: Path, kill_grace: str, cancel_grace: str,
                                                        saved: bool) -> None:
    # `cancel --grace` is what the step gets between SIGTERM and SIGKILL, whatever the queue's --kill-grace.
    run = make_run(tmp_path / "runs", "c/param_G/r", _SAVES_ON_TERM)
    env = queue_env(tmp_path)
    queue = start_queue(env, "run", run, "--cpu-slots", "1", "--kill-grace", kill_grace, log=tmp_path / "q.log")
    try:
        wait_for(lambda: (run / "started").exists(), what="the step")
        started = time.monotonic()
        result = run_queue(env, "cancel", run, "--grace", cancel_grace)
        took = time.monotonic() - started
    finally:
        finish(queue)
    assert result.returncode == 0 and "cancelled (supervisor pid" in result.stdout, result.stdout + result.stderr
    assert (run / "saved").exists() == saved
    assert (run / "lfads.out").read_text().count("saving") == 1  # one SIGTERM: its trap ran once
    assert took < (8 if saved else 6), took
    assert read_json(run / "lfads.failed")["reason"] == "cancelled"
    assert not (run / ".runqueue" / "cancel.json").exists()


def test_an_attempt_that_ended_with_a_word_but_no_state_is_not_called_lost(tmp_path: Path) -> None:
    # A supervisor that failed on a full disk wrote its last line but could not save state.json: the
    # next attempt must not say that supervisor was killed or crashed.
    from runqueue.layout import RunPaths
    from runqueue.runstate import PersistedState, Phase, save_state

    run = make_run(tmp_path / "runs", "c/param_E/r")
    save_state(RunPaths(run), PersistedState(phase=Phase.RUNNING, attempt=1, step="lfads_train.sh",
                                             resume_step="lfads_train.sh", supervisor_pid=999_999, host="vm"))
    (run / "lfads.out").write_text(
        "### runqueue 2026-11-27T08:00:00+0000 host=vm attempt=1/2 step=lfads_train.sh device=cpu-0 (CPU slot 0)\n"
        "OSError: [Errno 28] No space left on device\n"
        "### runqueue 2026-11-27T08:00:01+0000 attempt 1/2 failed (disk_full): the disk holding x is (or was) full;"
        " retrying from lfads_train.sh in 0s\n")
    result = run_queue(queue_env(tmp_path), "run", tmp_path / "runs", "--cpu-slots", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "last supervisor was lost" not in result.stdout
    assert "is gone while it ran" not in (run / "lfads.out").read_text()
