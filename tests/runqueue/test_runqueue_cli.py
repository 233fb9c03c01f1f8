"""The `runqueue` command line: boundaries and one-line errors."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from runqueue_testkit import finish, make_run, queue_env, run_queue, start_queue, wait_for


def test_runqueue_cli_never_imports_tensorflow_or_the_model() -> None:
    code = (
        "import sys, runqueue.cli, runqueue.scheduler, runqueue.supervisor, runqueue.serve, runqueue.status\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n"
        "assert 'lfads' not in sys.modules, 'lfads imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_runqueue_python_dash_m_is_the_console_script(tmp_path: Path) -> None:
    result = run_queue(queue_env(tmp_path), "--help")
    assert result.returncode == 0
    for command in ("run", "serve", "status", "requeue", "cancel", "gpus"):
        assert command in result.stdout


def test_runqueue_bad_root_and_bad_flags_are_one_line_errors(tmp_path: Path) -> None:
    env = queue_env(tmp_path)
    missing = run_queue(env, "run", tmp_path / "nowhere")
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"runqueue run: error: {tmp_path / 'nowhere'}: is not a directory (give a runs folder, a collection or a run folder)"
    bad_limit = run_queue(env, "run", tmp_path, "--time-limit", "soon")
    assert bad_limit.returncode == 2 and "use e.g. 90s, 45m, 2h, 1h30m" in bad_limit.stderr
    bad_sim = run_queue(env, "run", tmp_path, "--simulate-gpus", tmp_path / "missing.json")
    assert bad_sim.returncode == 2 and len(bad_sim.stderr.strip().splitlines()) == 1 and "missing.json" in bad_sim.stderr


def test_cancel_and_requeue_of_a_run_whose_queue_folder_is_a_file(tmp_path: Path) -> None:
    run = make_run(tmp_path / "runs", "c/param_X/a")
    (run / ".runqueue").write_text("not the queue's folder")
    env = queue_env(tmp_path)
    (run / "lfads.failed").write_text("{}")
    # No supervisor can run it (it cannot make its lock) and none holds it: the markers are ours to change.
    requeued = run_queue(env, "requeue", run)
    assert requeued.returncode == 0 and "requeued (removed lfads.failed)" in requeued.stdout, requeued.stderr
    cancelled = run_queue(env, "cancel", run)
    assert cancelled.returncode == 0 and "was not running" in cancelled.stdout, cancelled.stderr


def test_runqueue_gpus_subcommand_delegates_to_the_inventory(tmp_path: Path) -> None:
    sim = tmp_path / "gpus.json"
    sim.write_text('[{"uuid": "GPU-cli", "name": "Sim", "memory_total_mb": 1000, "memory_used_mb": 10, "processes": []}]')
    result = run_queue(queue_env(tmp_path), "gpus", "--json", "--simulate-gpus", sim)
    assert result.returncode == 0 and "GPU-cli" in result.stdout


def test_status_judges_waiting_runs_by_the_service_config(tmp_path: Path) -> None:
    import json
    import time

    from runqueue_testkit import gpu, make_run, write_gpus

    from runqueue.layout import RunPaths
    from runqueue.runstate import PersistedState, Phase, save_state

    root = tmp_path / "runs"
    make_run(root, "c/param_B/big", resources={"memory_mb": 50000})
    retry = make_run(root, "c/param_B/retry")
    save_state(RunPaths(retry), PersistedState(phase=Phase.RETRY_WAIT, attempt=1, reason="exit_status", retry_after=time.time() - 60))
    write_gpus(tmp_path / "gpus.json", [gpu("GPU-c1", total=10000)])
    config = tmp_path / "serve.toml"
    config.write_text(f'roots = ["runs"]\nsimulate_gpus = "gpus.json"\nmax_per_gpu = 2\nclaims_dir = "{tmp_path / "claims"}"\n')
    result = run_queue(queue_env(tmp_path), "status", "--config", config, "--json")
    assert result.returncode == 0, result.stderr
    reasons = {row["name"]: row["reason"] for row in json.loads(result.stdout)["runs"]}
    assert reasons["param_B/big"].startswith("cannot be placed: it declares 50000 MB and the largest device has 10000 MB")
    assert reasons["param_B/retry"].startswith("retry due after exit_status (attempt 1 failed); ")
    assert "not before" not in reasons["param_B/retry"]  # its back-off is over: it waits like any run

    flags_win = run_queue(queue_env(tmp_path), "status", "--config", config, "--gpus", "0", "--max-per-gpu", "1")
    assert "simulated" not in flags_win.stdout  # --gpus replaces the file's simulated inventory

    no_roots = run_queue(queue_env(tmp_path), "status")
    assert no_roots.returncode == 2 and "give at least one ROOT, or --config FILE" in no_roots.stderr


def test_a_root_without_runs_is_said_and_a_run_cancelled_before_it_started_points_at_its_marker(tmp_path: Path) -> None:
    env = queue_env(tmp_path)
    (tmp_path / "empty").mkdir()
    result = run_queue(env, "run", tmp_path / "empty")
    assert result.returncode == 2, result.stderr  # a mistyped root is no success
    assert f"no run folders (folders holding lfads_train.sh) under {tmp_path / 'empty'}; check the path" in result.stdout
    run = make_run(tmp_path / "runs", "c/param_C/never")
    assert run_queue(env, "cancel", run).returncode == 0
    result = run_queue(env, "run", tmp_path / "runs", "--quiet")
    assert result.returncode == 1
    assert "failed  param_C/never: cancelled — " in result.stdout and f"({run / 'lfads.failed'})" in result.stdout
    assert "no run folders" not in result.stdout and not (run / "lfads.out").exists()


def test_requeue_of_a_run_that_never_ran_leaves_its_folder_untouched(tmp_path: Path) -> None:
    run = make_run(tmp_path / "runs", "c/param_P/fresh")
    before = sorted(path.relative_to(run) for path in run.rglob("*"))
    result = run_queue(queue_env(tmp_path), "requeue", run)
    assert result.returncode == 0 and "already pending" in result.stdout, result.stderr
    assert sorted(path.relative_to(run) for path in run.rglob("*")) == before  # no .runqueue/lock made


def test_durations_past_a_year_and_graces_past_a_day_are_refused_not_a_crash_later(tmp_path: Path) -> None:
    env = queue_env(tmp_path)
    make_run(tmp_path / "runs", "c/param_X/a")
    for flag, value, says in (("--poll-interval", "400d", "invalid duration '400d': must be at most 365d"),
                              ("--time-limit", "1e300", "invalid duration '1e300': must be at most 365d"),
                              ("--retry-backoff", "1e300", "invalid duration '1e300': must be at most 365d"),
                              ("--kill-grace", "2d", "invalid duration '2d': must be at most 1d")):
        result = run_queue(env, "run", tmp_path / "runs", flag, value)
        assert result.returncode == 2 and says in result.stderr and "Traceback" not in result.stderr, result.stderr
    cancel = run_queue(env, "cancel", tmp_path / "runs" / "c/param_X/a", "--grace", "1e300")
    assert cancel.returncode == 2 and "must be at most 1d" in cancel.stderr
    assert not (tmp_path / "runs" / "c/param_X/a" / "lfads.out").exists()  # nothing ran


def test_waits_longer_than_epoll_takes_wait_as_asked(tmp_path: Path) -> None:
    """epoll refuses a timeout over ~25 days: a 30-day poll interval, or a 25-day time limit's
    overdue check once the queue is stopping, crashed the queue with OverflowError."""
    env = queue_env(tmp_path)
    run = make_run(tmp_path / "runs", "c/param_X/a", "sleep 1; echo trained\n")
    result = run_queue(env, "run", tmp_path / "runs", "--poll-interval", "30d", "--quiet")
    assert result.returncode == 0 and (run / "lfads.done").exists(), result.stdout + result.stderr
    second = make_run(tmp_path / "runs", "c/param_X/b", "touch started; sleep 2; echo trained\n")
    queue = start_queue(env, "run", tmp_path / "runs", "--time-limit", "25d", "--quiet", log=tmp_path / "q.log")
    wait_for((second / "started").exists, what="run b to start")
    queue.send_signal(signal.SIGINT)  # stop placing; wait for b, whose overdue check is 25 days away
    assert finish(queue) == 0, (tmp_path / "q.log").read_text()  # nothing was left undone
    assert (second / "lfads.done").exists() and "Traceback" not in (tmp_path / "q.log").read_text()
