"""The queue's small parts on real files: durations, naming, discovery, run lock, state, legacy detection."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from runqueue_testkit import kill_processes, make_run

from runqueue import legacy, runlock
from runqueue.atomicio import atomic_write_bytes
from runqueue.discovery import RunScanner, find_runs
from runqueue.durations import parse_duration, parse_wait
from runqueue.errors import RunqueueError
from runqueue.layout import RunPaths
from runqueue.logtail import LogTail
from runqueue.naming import run_identity
from runqueue.resources import load_resources
from runqueue.runstate import PersistedState, Phase, RunState, load_state, marker_state, read_failure
from runqueue.steps import looks_like_cuda_oom, looks_like_disk_full, plan_steps, script_problem
from runqueue.supervisor import retry_backoff

DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("2h", 7200), ("1h30m", 5400), ("45m", 2700), ("1d", 86400), ("12", 12), ("0.5", 0.5), (30, 30)])
def test_runqueue_durations_parse(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "1x", "2h-3m", "-5", "0", "1h 30", "m30"])
def test_runqueue_durations_reject_with_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError, match=r"invalid duration|must be positive"):
        parse_duration(text)


def test_durations_stop_at_a_year() -> None:
    assert parse_duration("365d") == 365 * 86400
    for text in ("366d", 1e300, "99999999h"):
        with pytest.raises(ValueError, match=r"must be at most 365d"):
            parse_duration(text)


@pytest.mark.parametrize(("value", "seconds"), [(0, 0), (0.0, 0), ("0", 0), (" 0 ", 0), ("0s", 0), ("30s", 30), (12, 12), ("1.5", 1.5)])
def test_a_wait_may_be_zero_in_any_spelling(value: str | int | float, seconds: float) -> None:
    assert parse_wait(value) == seconds


@pytest.mark.parametrize("value", [-1, "-1", "nan", float("inf"), True, "soon", "", [30]])
def test_a_wait_refuses_what_is_not_zero_or_a_duration(value: object) -> None:
    with pytest.raises(ValueError, match=r'must be 0 or a duration such as "30s" or a finite number of seconds'):
        parse_wait(value)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"must be at most 1d"):
        parse_wait("25h", longest=86400)


def test_retry_backoff_doubles_up_to_its_cap_and_never_overflows() -> None:
    assert [retry_backoff(10.0, attempt) for attempt in (1, 2, 3, 7, 8, 1025, 10**9)] == [10, 20, 40, 600, 600, 600, 600]
    assert retry_backoff(3600.0, 5000) == 3600.0 and retry_backoff(0.0, 5000) == 0.0


def test_an_lfads_failed_that_cannot_be_read_says_why_not_that_it_is_not_json(tmp_path: Path) -> None:
    paths = RunPaths(make_run(tmp_path, "c/param_F/r"))
    paths.failed_marker.write_text("{garbled")
    assert read_failure(paths) == {"reason": "unknown", "message": "lfads.failed is not JSON"}
    paths.failed_marker.unlink()
    os.mkfifo(paths.failed_marker)  # opened without blocking, refused: never a hang
    assert read_failure(paths) == {"reason": "unknown", "message": "lfads.failed cannot be read (not a regular file)"}
    assert marker_state(paths) is RunState.FAILED  # still failed: any file at that path is
    paths.failed_marker.unlink()
    paths.failed_marker.write_text('{"reason": "exit_status", "message": "exit 3"}')
    if os.geteuid() != 0:  # root reads past the mode bits
        paths.failed_marker.chmod(0)
        assert read_failure(paths) == {"reason": "unknown", "message": "lfads.failed cannot be read (Permission denied)"}


def test_runqueue_naming_seed_layout_and_other_trees(tmp_path: Path) -> None:
    seed = tmp_path / "runs" / "exampleRun" / "param_Qr2PeG" / "all"
    assert run_identity(seed, tmp_path / "runs") == ("exampleRun", "param_Qr2PeG/all")
    assert run_identity(tmp_path / "sweep" / "a" / "b", tmp_path / "sweep") == ("sweep", "a/b")
    assert run_identity(tmp_path / "lonely", tmp_path / "lonely") == (tmp_path.name, "lonely")


def test_runqueue_discovery_finds_runs_at_any_depth_and_skips_data_folders(tmp_path: Path) -> None:
    make_run(tmp_path, "c1/param_AAAAAA/all")
    make_run(tmp_path, "c1/param_AAAAAA/single")
    make_run(tmp_path, "deep/er/still/run")
    # Inside folders the queue must not descend into: a run there is not a run.
    make_run(tmp_path, "c1/data_XYZ-_1/all")  # a collection's export folder, beside its param_ folder
    make_run(tmp_path, "c1/param_AAAAAA/all/lfadsOutput/nested")
    make_run(tmp_path, ".hidden/run")
    # Named data_... by the user (a collection, a run spec): walked like any other folder.
    make_run(tmp_path, "data_monkey/param_BBBBBB/all")
    make_run(tmp_path, "c2/param_CCCCCC/data_all")
    (tmp_path / "c1/param_AAAAAA/single/lfads.done").touch()
    found = find_runs([tmp_path])
    names = [item.path.relative_to(tmp_path).as_posix() for item in found]
    assert names == ["c1/param_AAAAAA/all", "c1/param_AAAAAA/single", "c2/param_CCCCCC/data_all",
                     "data_monkey/param_BBBBBB/all", "deep/er/still/run"]
    assert [item.has_done for item in found] == [False, True, False, False, False]
    # A run folder given as the root is found too; overlapping roots give each run once.
    assert [item.path for item in find_runs([tmp_path / "deep/er/still/run", tmp_path / "deep"])] == [tmp_path / "deep/er/still/run"]


def test_runqueue_discovery_rescan_sees_markers_and_new_runs(tmp_path: Path) -> None:
    run = make_run(tmp_path, "c/param_A/x")
    scanner = RunScanner([tmp_path])
    assert not scanner.scan()[0].has_done
    (run / "lfads.done").touch()
    assert scanner.scan()[0].has_done
    make_run(tmp_path, "c/param_B/y")
    assert len(scanner.scan()) == 2
    # Listings older than the racy window are reused, yet a marker change still shows: the
    # folder's mtime moves when lfads.done is deleted.
    old = time.time() - 10
    for folder in (tmp_path, tmp_path / "c", tmp_path / "c/param_A", run):
        os.utime(folder, (old, old))
    scanner.scan(full=True)
    (run / "lfads.done").unlink()
    assert not scanner.scan()[0].has_done
    shutil.rmtree(run)
    assert [item.path.name for item in scanner.scan()] == ["y"]


def test_runqueue_run_lock_probe_never_takes_the_lock(tmp_path: Path) -> None:
    paths = RunPaths(make_run(tmp_path, "r"))
    assert not runlock.is_held(paths.lock)
    fd = runlock.try_acquire(paths.lock)
    assert fd is not None
    runlock.write_holder(fd)
    assert runlock.is_held(paths.lock)
    assert runlock.try_acquire(paths.lock) is None  # a second open file cannot take it, even here
    holder = runlock.read_holder(paths.lock)
    assert holder is not None and holder.pid == os.getpid()
    # A child that inherits the descriptor keeps the run held after we let go of ours.
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], pass_fds=(fd,))
    try:
        os.close(fd)
        assert runlock.is_held(paths.lock)
        assert marker_state(paths) == RunState.RUNNING
    finally:
        child.kill()
        child.wait()
    assert not runlock.is_held(paths.lock)
    # While a prober looks, acquiring still succeeds (the probe holds nothing).
    probe = subprocess.Popen(
        [sys.executable, "-c", f"from runqueue import runlock\nfrom pathlib import Path\nfor _ in range(3000): runlock.is_held(Path({str(paths.lock)!r}))"]
    )
    try:
        for _ in range(200):
            fd = runlock.try_acquire(paths.lock)
            assert fd is not None
            os.close(fd)
    finally:
        probe.wait()


def test_runqueue_markers_decide_state(tmp_path: Path) -> None:
    paths = RunPaths(make_run(tmp_path, "r"))
    assert marker_state(paths) == RunState.PENDING
    paths.failed_marker.write_text("not json at all")
    assert marker_state(paths) == RunState.FAILED
    paths.done_marker.touch()  # an empty file a user touched means done
    assert marker_state(paths) == RunState.DONE


def test_runqueue_old_state_file_keeps_loading(tmp_path: Path) -> None:
    paths = RunPaths(make_run(tmp_path, "r"))
    paths.runtime_dir.mkdir()
    shutil.copy(DATA / "state_v1.json", paths.state)
    state = load_state(paths)
    assert state.phase == Phase.RETRY_WAIT
    assert (state.attempt, state.resume_step, state.reason, state.device_free_mb) == (1, "lfads_posterior_mean_sample.sh", "cuda_oom", 7000)
    assert state.history[0]["reason"] == "cuda_oom"
    # Garbage or a wrong type never stops the queue: defaults instead.
    paths.state.write_text('{"attempt": "three", "phase": 5, "resume_step": "rm -rf /"}')
    assert load_state(paths) == PersistedState()
    paths.state.write_text("")
    assert load_state(paths) == PersistedState()


def test_runqueue_plan_resumes_at_the_failed_step_and_skips_absent_ones(tmp_path: Path) -> None:
    paths = RunPaths(make_run(tmp_path, "r", write_params="true\n"))
    assert plan_steps(paths, None) == ["lfads_train.sh", "lfads_write_model_params.sh"]
    assert plan_steps(paths, "lfads_write_model_params.sh") == ["lfads_write_model_params.sh"]
    # The failed step's script removed before the retry: the steps after it, never training again.
    assert plan_steps(paths, "lfads_posterior_mean_sample.sh") == ["lfads_write_model_params.sh"]
    (paths.root / "lfads_write_model_params.sh").unlink()
    assert plan_steps(paths, "lfads_posterior_mean_sample.sh") == []
    assert plan_steps(paths, "not a step") == ["lfads_train.sh"]


def test_runqueue_legacy_detection_and_chained_steps(tmp_path: Path) -> None:
    matlab = (
        "#!/bin/bash\n(DISPLAY=:0 python $(which run_lfads.py) --data_dir=/x && python $(which run_lfads.py)"
        " --kind=posterior_sample_and_average && python $(which run_lfads.py) --kind=write_model_params)"
        " 2>&1 | tee /abs/run/lfads.out\n"
    )
    assert legacy.is_legacy_script(matlab)
    assert not legacy.is_legacy_script("python $(which run_lfads.py) --data_dir=/x\n")
    assert not legacy.is_legacy_script("echo hi | tee other.log\n")
    paths = RunPaths(make_run(tmp_path, "r", matlab, posterior="true\n", write_params="true\n"))
    # The chained steps are not run a second time from their own scripts.
    assert plan_steps(paths, None) == ["lfads_train.sh"]
    assert legacy.missing_outputs(paths, matlab) == ["lfadsOutput/model_runs_*_posterior_sample_and_average", "lfadsOutput/model_params"]


def test_runqueue_legacy_tee_shim_writes_no_file_when_the_log_is_among_its_targets(tmp_path: Path) -> None:
    shim, _ = legacy.write_shims(tmp_path / "bin", os.environ["PATH"], sys.executable)
    (tmp_path / "sp").write_text("a file of the user's")

    def tee(arguments: str) -> str:
        return subprocess.run(["bash", "-c", f"echo hello | {shim}/tee {arguments}"], capture_output=True, text=True,
                              check=True).stdout

    assert tee("-a /somewhere/lfads.out") == "hello\n"
    assert not Path("/somewhere/lfads.out").exists()
    # MATLAB's unquoted `tee /x/sp ace/…/lfads.out`: the first piece must not be truncated.
    assert tee(f"{tmp_path}/sp ace/run/lfads.out") == "hello\n"
    assert (tmp_path / "sp").read_text() == "a file of the user's"
    assert tee(f"{tmp_path}/copy.txt") == "hello\n"  # a tee of the script's own: the real one
    assert (tmp_path / "copy.txt").read_text() == "hello\n"


@pytest.mark.parametrize(("line", "refused"), [
    ("python $(which run_lfads.py) --data_dir={run}/lfadsInput --lfads_save_dir={run}/lfadsOutput", None),
    ("python $(which run_lfads.py) --data_dir=lfadsInput --lfads_save_dir=lfadsOutput", None),
    ('python $(which run_lfads.py) --lfads_save_dir="$OUT"', None),
    ("python $(which run_lfads.py) --lfads_save_dir={elsewhere}/lfadsOutput", "--lfads_save_dir="),
    ('python $(which run_lfads.py) --data_dir="{elsewhere}/lfadsInput"', "outside this run folder"),
    ("python $(which run_lfads.py) --kind=train 2&>1 | tee lfads.out", "`2&>1`"),
    ("python $(which run_lfads.py) --kind=train 2>&1 | tee lfads.out", None),
    ("CUDA_VISIBLE_DEVICES=1 python $(which run_lfads.py)", "sets CUDA_VISIBLE_DEVICES itself"),
    ('CMD="python $(which run_lfads.py)"\nTMUX= tmux new-session -d -s "run" "$CMD; read -n 1"', "detached tmux session"),
    # Comments and quoted notes are no commands: none of them refuses a run.
    ("# MATLAB wrote CUDA_VISIBLE_DEVICES=0 here once\npython $(which run_lfads.py)", None),
    ("python $(which run_lfads.py)  # copied from --lfads_save_dir={elsewhere}/lfadsOutput", None),
    ("echo 'note: the 2&>1 typo is fixed' && python $(which run_lfads.py)", None),
    # A save folder below an lfadsOutput linked to a scratch disk is still this run's.
    ("python $(which run_lfads.py) --lfads_save_dir={run}/scratch_out/model", None),
])
def test_legacy_scripts_that_would_defeat_the_queue_are_refused_with_the_line_to_change(
        tmp_path: Path, line: str, refused: str | None) -> None:
    run = make_run(tmp_path, "copy/run")
    (tmp_path / "orig/run/lfadsOutput").mkdir(parents=True)
    (run / "lfadsOutput").mkdir()
    (tmp_path / "scratch").mkdir()
    (run / "scratch_out").symlink_to(tmp_path / "scratch")
    text = "#!/bin/bash\n" + line.format(run=run, elsewhere=tmp_path / "orig/run") + "\n"
    reason = legacy.refusal(RunPaths(run), "lfads_train.sh", text)
    if refused is None:
        assert reason is None
    else:
        assert reason is not None and refused in reason and reason.startswith("lfads_train.sh ")


def test_runqueue_cuda_oom_patterns() -> None:
    assert looks_like_cuda_oom(b"...\ntensorflow.python.framework.errors_impl.ResourceExhaustedError: OOM when allocating tensor")
    assert looks_like_cuda_oom(b"RuntimeError: CUDA out of memory. Tried to allocate")
    assert looks_like_cuda_oom(b"failed to alloc: CUDA_ERROR_OUT_OF_MEMORY")
    assert not looks_like_cuda_oom(b"step 100: loss 3.2\nStopping optimization\n")
    # TensorFlow's word for a full disk while saving a checkpoint is the same exception class.
    full = b"ResourceExhaustedError: lfadsOutput/.tmp.ckpt.tempstate123; No space left on device [Op:SaveV2]"
    assert not looks_like_cuda_oom(full) and looks_like_disk_full(full)


def test_an_atomic_write_that_fails_names_the_file_asked_for_not_its_temp_file(tmp_path: Path) -> None:
    in_the_way = tmp_path / "summary.txt"
    in_the_way.mkdir()
    with pytest.raises(OSError) as failure:
        atomic_write_bytes(in_the_way, b"text")
    assert failure.value.filename == str(in_the_way)
    assert [entry.name for entry in tmp_path.iterdir()] == ["summary.txt"]  # no temp file left


def test_runqueue_resources_file_errors_name_the_file_and_fix(tmp_path: Path) -> None:
    paths = RunPaths(make_run(tmp_path, "r", resources={"memory_mb": 4000, "time_limit": "1h30m"}))
    resources = load_resources(paths, 2000, None)
    assert (resources.memory_mb, resources.time_limit_s) == (4000, 5400)
    paths.resources.write_text('{"memory": 4000}')
    with pytest.raises(RunqueueError, match=r"runqueue.json: unknown key\(s\) memory \(valid keys: memory_mb, time_limit \(and written_by, which the queue ignores\)\)"):
        load_resources(paths, 2000, None)
    paths.resources.write_text('{"memory_mb": "lots"}')
    with pytest.raises(RunqueueError, match="memory_mb must be a non-negative integer"):
        load_resources(paths, 2000, None)
    paths.resources.write_text('{"memory_mb": 4000')
    with pytest.raises(RunqueueError, match=r"runqueue.json: is not valid JSON at line 1 column 19 \(write e.g."):
        load_resources(paths, 2000, None)
    paths.resources.write_text("[4000]")
    with pytest.raises(RunqueueError, match="is not a JSON object"):
        load_resources(paths, 2000, None)
    paths.resources.unlink()
    assert load_resources(paths, 2000, 60.0).time_limit_s == 60.0


def test_a_queue_line_appended_after_an_unfinished_line_starts_its_own(tmp_path: Path) -> None:
    from runqueue.outlog import append_queue_line

    log = tmp_path / "lfads.out"
    append_queue_line(log, "### runqueue first\n")  # a new file
    with log.open("a") as out:
        out.write("epoch 3 [#####     ")  # a job killed mid-line (what SLURM's outcome is written after)
    append_queue_line(log, "### runqueue failed (out_of_memory)\n")
    append_queue_line(log, "### runqueue again\n")
    assert log.read_text() == ("### runqueue first\nepoch 3 [#####     \n### runqueue failed (out_of_memory)\n"
                               "### runqueue again\n")


def test_the_console_tail_skips_a_flood_and_says_how_much_it_did_not_show(tmp_path: Path) -> None:
    log = tmp_path / "lfads.out"
    log.write_bytes(b"")
    tail = LogTail(log, offset=0, max_bytes=1000)
    with log.open("ab") as out:
        out.write(b"".join(b"line %06d\n" % i for i in range(30_000)))  # 360 kB
    lines = tail.read_lines()
    assert lines[0] == "… 0.4 MB of output not shown here (see lfads.out)", lines[:2]
    assert lines[-1] == "line 029999" and all(line.startswith("line ") for line in lines[1:])
    assert len(lines) - 1 <= 1000 // len("line 000000\n")


def test_the_console_tail_shows_progress_bars_as_a_terminal_would_and_stays_bounded(tmp_path: Path) -> None:
    log = tmp_path / "lfads.out"
    log.write_bytes(b"")
    tail = LogTail(log, offset=0, max_bytes=2048)

    def write(data: bytes) -> list[str]:
        with log.open("ab") as out:
            out.write(data)
        return tail.read_lines()

    assert write(b"epoch 1\n 10%\r 20%\r") == ["epoch 1"]
    assert tail.partial == b" 20%\r"  # the drawn-over 10 % is gone
    assert write(b" 30%\r100%\r\nepoch 2\n") == ["100%", "epoch 2"]
    for _ in range(50):  # a bar redrawn without end, far more than max_bytes in all
        assert write(b"".join(b"%5d/99999\r" % i for i in range(100))) == []
        assert len(tail.partial) <= len(b"99999/99999\r")
    # A line that grows past max_bytes without a carriage return or an end is dropped, once noted.
    assert write(b"x" * 2000) == [] and write(b"x" * 100) == ["… a line of over 2 KB without an end, not shown here (see lfads.out)"]
    assert write(b"y" * 500) == [] and tail.partial == b""
    assert write(b"zz\nafter\n") == ["after"]
    assert write(b"last") == [] and tail.read_lines(final=True) == ["last"]


def test_state_json_times_that_are_not_finite_are_unknown() -> None:
    """json reads NaN and Infinity; a hand-edited state.json must not make a deadline of them."""
    state = PersistedState.from_json({"time_limit_s": float("nan"), "started_at": float("inf"), "retry_after": 5.0})
    assert (state.time_limit_s, state.started_at, state.retry_after) == (None, None, 5.0)


def test_the_status_line_is_not_drawn_again_after_the_console_closes() -> None:
    import io

    from runqueue.console import Console

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    console = Console(stream=terminal)
    console.status("1 running, 0 pending")
    console.event("[r] done")
    console.close()
    console.event("summary: 1 run(s): 1 done")
    assert terminal.getvalue().endswith("\nrunqueue: summary: 1 run(s): 1 done\n"), repr(terminal.getvalue())


def test_durations_shown_keep_a_sub_second_back_off() -> None:
    from runqueue.durations import format_duration

    assert [format_duration(s) for s in (0.2, 2.5, 1.0, 59, 75, 3700)] == ["0.2s", "2.5s", "1s", "59s", "1m15s", "1h01m"]


def test_a_script_naming_run_lfads_py_only_in_a_comment_is_no_legacy_script() -> None:
    assert not legacy.calls_run_lfads("#!/bin/bash\n# was: python $(which run_lfads.py)\nexec python -m lfads --kind=train\n")
    assert legacy.calls_run_lfads("#!/bin/bash\npython $(which run_lfads.py) --kind=train  # the original\n")


def test_legacy_outputs_are_looked_for_in_the_save_folder_the_script_names(tmp_path: Path) -> None:
    script = "python $(which run_lfads.py) --lfads_save_dir=output --kind=write_model_params\n"
    paths = RunPaths(make_run(tmp_path, "r", script))
    assert legacy.missing_outputs(paths, script) == ["output/model_params"]
    (paths.root / "output").mkdir()
    (paths.root / "output/model_params").write_text("")
    assert legacy.missing_outputs(paths, script) == []


def test_steps_of_a_run_are_found_in_its_folder_or_below_not_in_a_moved_runs(tmp_path: Path) -> None:
    from runqueue.procinfo import steps_started_for

    run = tmp_path / "run"
    (run / "lfadsOutput").mkdir(parents=True)
    moved = tmp_path / "moved"
    moved.mkdir()
    env = {**os.environ, "RUNQUEUE_RUN_DIR": str(run)}
    below = subprocess.Popen(["sleep", "30"], cwd=run / "lfadsOutput", env=env)
    elsewhere = subprocess.Popen(["sleep", "30"], cwd=moved, env=env)  # a run moved away: its old path, another folder
    try:
        found = steps_started_for(str(run))
        assert below.pid in found and elsewhere.pid not in found
    finally:
        kill_processes(below, elsewhere)


def test_legacy_shims_are_never_written_through_a_planted_link(tmp_path: Path) -> None:
    elsewhere = tmp_path / "service-home"
    elsewhere.mkdir()
    (tmp_path / "legacy-bin").symlink_to(elsewhere)
    with pytest.raises(OSError, match="symbolic link"):
        legacy.write_shims(tmp_path / "legacy-bin", os.environ["PATH"], sys.executable)
    assert list(elsewhere.iterdir()) == []
    shims = tmp_path / "shims"
    shims.mkdir()
    (shims / "tee").symlink_to(elsewhere / "tee")  # a link in place of a shim is replaced, not followed
    legacy.write_shims(shims, os.environ["PATH"], sys.executable)
    assert not (elsewhere / "tee").exists() and not (shims / "tee").is_symlink()


@pytest.mark.parametrize(("wall_s", "cpu_s", "gap_s"), [
    (0.01, 0.01, 5.0),  # a small tree: every --poll-interval
    (0.05, 0.05, 10.0),  # 50 ms of CPU: 0.5 % of a core
    (1.5, 0.12, 24.0),  # NFS: mostly waiting, the CPU budget rules
    (4.0, 0.05, 40.0),  # a slow disk: at most 10 % of the time waiting on it
    (60.0, 2.0, 60.0),  # a huge tree on a slow server: still within a minute
])
def test_rescans_space_out_by_their_cost_but_come_within_a_minute(wall_s: float, cpu_s: float, gap_s: float) -> None:
    from runqueue.rescanner import rescan_gap

    assert rescan_gap(5.0, wall_s, cpu_s) == pytest.approx(gap_s)
    assert rescan_gap(120.0, wall_s, cpu_s) == 120.0  # a longer --poll-interval is the user's to choose


def test_a_change_the_mtime_hint_misses_is_seen_within_a_cycle_of_periodic_scans(tmp_path: Path) -> None:
    from runqueue.discovery import REFRESH_SHARES

    runs = [make_run(tmp_path / "runs", f"c/param_R/r{index:02d}") for index in range(30)]
    old = time.time() - 60
    for folder in [tmp_path / "runs", tmp_path / "runs/c", tmp_path / "runs/c/param_R", *runs]:
        os.utime(folder, (old, old))
    scanner = RunScanner([tmp_path / "runs"])
    scanner.scan(full=True)
    for run in runs:  # a marker whose folder mtime did not move (a coarse clock, an NFS attribute cache)
        (run / "lfads.done").write_text("{}")
        os.utime(run, (old, old))
    seen_after = {}
    for scan in range(1, REFRESH_SHARES + 1):
        for found in scanner.scan():
            if found.has_done:
                seen_after.setdefault(found.path, scan)
    assert sorted(seen_after) == runs  # every one within a cycle of scans, without a full pass
    assert len(set(seen_after.values())) > 1  # spread over the scans, not all at once


@pytest.mark.parametrize(("content", "said"), [
    (b"#!/bin/bash\r\nset -euo pipefail\r\necho ok\r\n", "Windows line endings (CRLF)"),
    (b"\xef\xbb\xbfset -euo pipefail\necho ok\n", "byte-order mark"),
])
def test_scripts_saved_by_windows_editors_are_refused_with_a_fix_that_works(tmp_path: Path, content: bytes, said: str) -> None:
    import shlex
    import subprocess

    script = tmp_path / "lfads_train.sh"
    script.write_bytes(content)
    problem = script_problem(script) or ""
    assert said in problem, problem
    fix = problem.split("; remove it: ")[-1].split("; convert it: ")[-1].removesuffix(" (or dos2unix)")
    subprocess.run(shlex.split(fix), check=True)  # the command the message gives, as a user would paste it
    assert script_problem(script) is None
    assert subprocess.run(["bash", str(script)], capture_output=True, text=True).stdout == "ok\n"
