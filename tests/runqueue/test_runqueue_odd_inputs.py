"""Odd but real inputs: names that are not UTF-8, empty arguments, markers in the way, a broken claims
directory, linked run folders, non-finite numbers, train scripts empty or still being written. One bad
thing never stops the rest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from runqueue_testkit import finish, make_run, queue_command, queue_env, run_queue, start_queue, wait_for

from runqueue.discovery import find_runs


def test_a_folder_name_that_is_not_utf8_does_not_stop_the_other_runs(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    odd = Path(os.fsdecode(os.fsencode(str(root)) + b"/b\xe9"))  # Latin-1 é: not valid UTF-8
    make_run(odd.parent, odd.name)
    after = make_run(root, "zz")
    # The console shows the name's bytes as they are (like ls), so read it leniently.
    result = subprocess.run(queue_command("run", root, "--cpu-slots", "1", "--quiet"), env=queue_env(tmp_path),
                            capture_output=True, text=True, errors="replace", timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (odd / "lfads.done").exists() and (after / "lfads.done").exists()


@pytest.mark.parametrize("command", ["requeue", "cancel", "status", "run"])
def test_an_empty_path_argument_is_refused_not_taken_as_the_current_folder(tmp_path: Path, command: str) -> None:
    run = make_run(tmp_path, "c/param_E/r0")
    (run / "lfads.done").write_text("{}")
    # From the folder holding the run: `runqueue requeue "$UNSET"` there must not touch it.
    result = subprocess.run(queue_command(command, ""), env=queue_env(tmp_path), cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "empty path (an unset shell variable?)" in result.stderr
    assert (run / "lfads.done").exists() and not (run / "lfads.failed").exists()


def test_requeue_reports_a_marker_it_cannot_remove_and_goes_on(tmp_path: Path) -> None:
    stuck = make_run(tmp_path, "c/param_M/a")
    (stuck / "lfads.done").mkdir()  # something odd in the way of the marker
    fine = make_run(tmp_path, "c/param_M/b")
    (fine / "lfads.done").write_text("{}")
    result = run_queue(queue_env(tmp_path), "requeue", stuck, fine)
    assert result.returncode == 2
    assert f"{stuck}: cannot requeue (" in result.stderr and "remove that by hand" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (fine / "lfads.done").exists()  # the other run was requeued all the same


def test_a_claims_directory_that_cannot_work_ends_a_batch_run_instead_of_waiting(tmp_path: Path) -> None:
    make_run(tmp_path / "runs", "c/param_C/r0")
    (tmp_path / "claims-file").write_text("not a directory")
    env = {**queue_env(tmp_path), "RUNQUEUE_CLAIMS_DIR": str(tmp_path / "claims-file")}
    result = run_queue(env, "run", tmp_path / "runs", "--cpu-slots", "1", timeout=60)
    assert result.returncode == 2
    assert "stopped: runs cannot be started:" in result.stdout and "claims directory is not a directory" in result.stdout


def test_linked_run_folders_and_collections_are_found_once_and_links_cannot_loop(tmp_path: Path) -> None:
    store = tmp_path / "store"
    elsewhere = make_run(store, "r1")
    deep = make_run(store, "notrun/deep/r2")  # reachable only through a link to a non-run folder
    (store / "notrun" / "deep" / "back").symlink_to("..")  # a loop outside the roots
    (store / "notrun" / "again").symlink_to(store / "notrun")  # the same collection by a second link
    collection = tmp_path / "runs" / "coll"
    make_run(collection, "param_real/r3")
    collection.mkdir(parents=True, exist_ok=True)
    (collection / "param_abc").symlink_to(elsewhere)
    (collection / "other").symlink_to(store / "notrun")  # a collection kept on a scratch disk
    (collection / "loop").symlink_to("../..")  # above the root: would walk all of tmp_path
    (collection / "inside").symlink_to(collection / "param_real")  # into the root: found at its own path
    found = sorted(str(run.path.relative_to(tmp_path / "runs")) for run in find_runs([tmp_path / "runs"]))
    assert found == ["coll/other/deep/r2", "coll/param_abc", "coll/param_real/r3"]
    result = run_queue(queue_env(tmp_path), "run", tmp_path / "runs", "--cpu-slots", "1", "--quiet")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "summary: 3 run(s): 3 done" in result.stdout
    assert (elsewhere / "lfads.done").exists() and (deep / "lfads.done").exists()


@pytest.mark.parametrize(("flag", "value"), [("--time-limit", "nan"), ("--poll-interval", "inf"), ("--retry-backoff", "nan")])
def test_non_finite_numbers_are_refused_at_the_command_line(tmp_path: Path, flag: str, value: str) -> None:
    make_run(tmp_path / "runs", "c/param_N/r0")
    result = run_queue(queue_env(tmp_path), "run", tmp_path / "runs", "--cpu-slots", "1", flag, value)
    assert result.returncode == 2 and flag in result.stderr and "finite" in result.stderr
    assert not (tmp_path / "runs/c/param_N/r0/lfads.out").exists()


@pytest.mark.parametrize("command", ["requeue", "cancel"])
def test_a_folder_of_several_runs_named_on_a_terminal_is_listed_and_asked_about(tmp_path: Path, command: str) -> None:
    import pty

    runs = [make_run(tmp_path / "runs", f"c/param_Y/r{index}") for index in range(3)]
    for run in runs:
        (run / "lfads.done").write_text("{}")
    controller, terminal = pty.openpty()
    try:
        os.write(controller, b"n\n")
        declined = subprocess.run(queue_command(command, tmp_path / "runs"), env=queue_env(tmp_path), stdin=terminal,
                                  capture_output=True, text=True, timeout=60)
    finally:
        os.close(terminal)
        os.close(controller)
    assert declined.returncode == 1, declined.stdout + declined.stderr
    assert f"runqueue {command}: 3 runs:" in declined.stdout and f"{command} all 3? [y/N]" in declined.stdout
    assert "nothing done" in declined.stdout
    assert all((run / "lfads.done").exists() and not (run / "lfads.failed").exists() for run in runs)
    # Without a terminal nobody can answer: refused without --yes (`runqueue requeue /tmp` in a script
    # once cleared the markers of every run below /tmp).
    scripted = subprocess.run(queue_command(command, tmp_path / "runs"), env=queue_env(tmp_path),
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert scripted.returncode == 2, scripted.stdout + scripted.stderr
    assert scripted.stderr.strip() == (f"runqueue {command}: error: {tmp_path / 'runs'} holds 3 runs; name the run"
                                       f" folders, or pass --yes to {command} all 3")
    assert all((run / "lfads.done").exists() and not (run / "lfads.failed").exists() for run in runs)
    # A run named beside its folder counts once, and the other arguments' errors are still said.
    mixed = subprocess.run(queue_command(command, tmp_path / "runs", runs[0], tmp_path / "nowhere"),
                           env=queue_env(tmp_path), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert mixed.returncode == 2
    assert f"{tmp_path / 'nowhere'}: no such file or directory" in mixed.stderr
    assert f"{tmp_path / 'runs'} holds 3 runs" in mixed.stderr, mixed.stderr
    # With --yes it goes ahead.
    agreed = subprocess.run(queue_command(command, "--yes", tmp_path / "runs"), env=queue_env(tmp_path),
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert agreed.returncode == 0, agreed.stderr
    if command == "requeue":
        assert not any((run / "lfads.done").exists() for run in runs)


def test_a_train_script_still_being_written_waits_until_it_settles(tmp_path: Path) -> None:
    # A writer that is not lfads-manager (MATLAB's fprintf calls, cp -r, a generator) writes the
    # script in pieces; run early, bash would run the first piece, exit 0 and the run would be "done".
    (tmp_path / "runs").mkdir()
    log = tmp_path / "q.log"
    queue = start_queue(queue_env(tmp_path), "run", "--watch", tmp_path / "runs", "--cpu-slots", "1", log=log)
    try:
        wait_for(lambda: "0 running" in log.read_text(), what="the queue to start")
        run = tmp_path / "runs" / "c" / "param_W" / "r"
        run.mkdir(parents=True)
        with open(run / "lfads_train.sh", "w") as script:
            script.write("#!/bin/bash\necho first piece\n")
            script.flush()
            time.sleep(0.5)  # the queue hears of the new folder within ~50 ms
            script.write("touch \"$RUNQUEUE_RUN_DIR/second-piece-ran\"\n")
        wait_for((run / "lfads.done").exists, what="the run to finish")
        assert (run / "second-piece-ran").exists()
    finally:
        queue.send_signal(signal.SIGINT)
        finish(queue)


def test_scripts_with_windows_line_endings_are_not_run_and_say_how_to_convert_them(tmp_path: Path) -> None:
    # A tree prepared by MATLAB on Windows and copied over: bash would take each \r as part of a word.
    root = tmp_path / "runs"
    train = make_run(root, "c/param_W/train", "touch ran\r\n")
    (train / "lfads_train.sh").write_bytes(b"#!/bin/bash\r\ntouch ran\r\n")
    os.utime(train / "lfads_train.sh", (time.time() - 10, time.time() - 10))
    posterior = make_run(root, "c/param_W/posterior", posterior="touch sampled\r\n")
    result = run_queue(queue_env(tmp_path), "run", root, "--cpu-slots", "1", "--retries", "0")
    output = result.stdout + result.stderr
    script = train / "lfads_train.sh"
    assert (f"blocked param_W/train: {script} has Windows line endings (CRLF), which bash would pass on as part of"
            f" each line's last word; convert it: sed -i 's/\\r$//' {script} (or dos2unix)") in output
    assert not (train / "ran").exists() and not (train / "ran\r").exists()
    failed = json.loads((posterior / "lfads.failed").read_text())  # caught again before each later step
    assert failed["step"] == "lfads_posterior_mean_sample.sh" and "Windows line endings (CRLF)" in failed["message"]
    assert not any(name.startswith("sampled") for name in os.listdir(posterior))
    subprocess.run(["sed", "-i", "s/\\r$//", str(script)], check=True)  # the fix the message gives
    os.utime(script, (time.time() - 10, time.time() - 10))
    result = run_queue(queue_env(tmp_path), "run", root, "--cpu-slots", "1")
    assert (train / "lfads.done").exists() and (train / "ran").exists(), result.stdout + result.stderr


def test_an_empty_train_script_is_not_run_and_says_why(tmp_path: Path) -> None:
    run = make_run(tmp_path / "runs", "c/param_E/r", train="# to be written\n")
    result = run_queue(queue_env(tmp_path), "run", tmp_path / "runs", "--cpu-slots", "1")
    reason = f"{run / 'lfads_train.sh'} has no commands (empty, or only comments); write the step's command into it"
    assert result.returncode == 1 and f"blocked param_E/r: {reason}" in result.stdout + result.stderr
    assert sorted(os.listdir(run)) == ["lfads_train.sh"]  # no marker: it runs once it holds a command
    status = run_queue(queue_env(tmp_path), "status", tmp_path / "runs")
    assert reason in status.stdout
