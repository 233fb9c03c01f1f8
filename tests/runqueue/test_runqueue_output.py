"""A run's output reaches lfads.out whole, in order, after our header; the console is never flooded."""

from __future__ import annotations

import hashlib
from pathlib import Path

from runqueue_testkit import gpu, make_run, queue_env, run_queue, write_gpus

LINES = 12_000_000  # about 100 MB


def test_runqueue_100_mb_of_output_arrives_whole(tmp_path: Path) -> None:
    run = make_run(tmp_path / "runs", "c/param_O/big", f"seq 1 {LINES}\necho stderr-line >&2\n", posterior="echo second-step\n")
    sim = write_gpus(tmp_path / "gpus.json", [gpu("GPU-o")])
    result = run_queue(queue_env(tmp_path), "run", tmp_path / "runs", "--simulate-gpus", sim)
    assert result.returncode == 0, result.stderr
    with open(run / "lfads.out", "rb") as log:
        header = log.readline()
        assert header.startswith(b"### runqueue ") and b"step=lfads_train.sh" in header
        digest = hashlib.sha256()
        for _ in range(LINES):
            digest.update(log.readline())
        rest = log.read().decode().splitlines()
    expected = hashlib.sha256()
    for start in range(1, LINES + 1, 1_000_000):
        expected.update("".join(f"{number}\n" for number in range(start, min(start + 1_000_000, LINES + 1))).encode())
    assert digest.hexdigest() == expected.hexdigest()
    assert rest[0] == "stderr-line"
    assert "step=lfads_posterior_mean_sample.sh" in rest[1] and rest[2] == "second-step"
    assert len(result.stdout) < 20_000_000  # the console skipped ahead instead of echoing 100 MB
    assert "[param_O/big] second-step" in result.stdout


def test_queue_lines_start_on_their_own_line_after_output_that_stopped_mid_line(tmp_path: Path) -> None:
    run = make_run(tmp_path / "runs", "c/param_L/a", "printf 'epoch 3: 42%%'\nexit 1\n")  # a progress line, then a crash
    result = run_queue(queue_env(tmp_path), "run", tmp_path / "runs", "--gpus", "none", "--retries", "1",
                       "--retry-backoff", "0.1", "--quiet")
    assert result.returncode == 1
    log = (run / "lfads.out").read_text()
    ours = [line for line in log.splitlines() if "### runqueue" in line]
    assert len(ours) == 4 and all(line.startswith("### runqueue") for line in ours), log  # 2 headers, 2 outcomes
    assert log.count("epoch 3: 42%\n") == 2


def test_the_queues_files_follow_the_umask_and_its_lock_stays_readable(tmp_path: Path) -> None:
    import os
    import stat

    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    for umask, group_tree in ((0o002, True), (0o077, False)):
        run = make_run(tmp_path / f"runs{umask:o}", "c/param_U/a")
        previous = os.umask(umask)  # 002: a lab group's shared tree; 077: a private user
        try:
            assert run_queue(queue_env(tmp_path), "run", run.parent, "--gpus", "none").returncode == 0
        finally:
            os.umask(previous)
        files = [run / "lfads.out", run / "lfads.done", run / ".runqueue" / "state.json"]
        assert [mode(path) for path in files] == [0o666 & ~umask] * 3
        # Every account's queue and status must see whether the run is running.
        assert mode(run / ".runqueue" / "lock") == (0o664 if group_tree else 0o644)


def test_the_queue_folder_can_be_passed_through_by_every_account_under_a_private_umask(tmp_path: Path) -> None:
    import os
    import stat

    run = make_run(tmp_path / "runs", "c/param_P/a")
    previous = os.umask(0o077)
    try:
        assert run_queue(queue_env(tmp_path), "run", run.parent, "--gpus", "none").returncode == 0
    finally:
        os.umask(previous)
    assert stat.S_IMODE((run / ".runqueue").stat().st_mode) == 0o711  # others reach the lock, list nothing


def test_a_queue_folder_that_is_a_broken_link_is_named(tmp_path: Path) -> None:
    run = make_run(tmp_path / "runs", "c/param_P/b")
    (run / ".runqueue").symlink_to(tmp_path / "nowhere")
    result = run_queue(queue_env(tmp_path), "run", run.parent, "--gpus", "none")
    assert result.returncode == 1 and f"{run / '.runqueue'} is a broken link, not the queue's folder" in result.stdout
    status = run_queue(queue_env(tmp_path), "status", run.parent, "--gpus", "none")
    assert "is a broken link, not the queue's folder; remove or rename it" in status.stdout, status.stdout


def test_runs_of_two_collections_with_one_grid_are_told_apart_on_the_console(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    for collection in ("collA", "collB"):
        make_run(root, f"{collection}/param_Q/all", "echo from $RUNQUEUE_RUN_DIR\n")
    make_run(root, "collA/param_Q/single")
    result = run_queue(queue_env(tmp_path), "run", root, "--cpu-slots", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    for collection in ("collA", "collB"):
        assert f"[{collection}/param_Q/all] from {root / collection / 'param_Q/all'}" in result.stdout
        assert f"[{collection}/param_Q/all] done" in result.stdout
    assert "[param_Q/single] done" in result.stdout  # a name no other run has stays short
    assert "[param_Q/all]" not in result.stdout
