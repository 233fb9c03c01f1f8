"""A queue running as root runs nothing another account could have written (gpu-queues.md §4.3)."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest
from runqueue_testkit import make_run, queue_env, run_queue

from runqueue.layout import RunPaths
from runqueue.root_safety import unsafe_as_root

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the check applies to a queue running as root")


def test_an_ordinary_account_is_never_refused(tmp_path: Path) -> None:
    run = make_run(tmp_path, "c/param_A/r")
    (run / "lfads_train.sh").chmod(0o666)
    assert unsafe_as_root(RunPaths(run), euid=1000) is None


@needs_root
def test_root_refuses_a_run_owned_by_another_account_and_says_how_to_run_it(tmp_path: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    root = tmp_path / "runs"
    flag = tmp_path / "ran-as-root"
    theirs = make_run(root, "c/param_A/theirs", f"touch {flag}\n")
    os.chown(theirs, nobody.pw_uid, nobody.pw_gid)
    ours = make_run(root, "c/param_A/ours")
    result = run_queue(queue_env(tmp_path), "run", root, "--cpu-slots", "1")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"not started: {theirs} belongs to nobody and the queue runs as root" in result.stdout
    assert "runuser -u nobody -- runqueue run" in result.stdout
    assert not flag.exists() and not (theirs / "lfads.done").exists()
    assert (ours / "lfads.done").exists()  # the others go on
    status = run_queue(queue_env(tmp_path), "status", root)
    assert f"{theirs} belongs to nobody" in status.stdout


@needs_root
def test_root_refuses_a_script_others_can_write_until_it_is_made_roots_alone(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    run = make_run(root, "c/param_W/r")
    script = run / "lfads_train.sh"
    script.chmod(0o666)
    result = run_queue(queue_env(tmp_path), "run", root, "--cpu-slots", "1")
    assert result.returncode == 1 and f"{script} is writable by other accounts" in result.stdout, result.stdout
    assert f"chmod go-w {script}" in result.stdout
    script.chmod(0o664)  # group root is root's own
    os.chown(script, 0, 0)
    result = run_queue(queue_env(tmp_path), "run", root, "--cpu-slots", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (run / "lfads.done").exists()


@needs_root
def test_a_group_writable_folder_of_another_group_is_refused(tmp_path: Path) -> None:
    run = make_run(tmp_path / "runs", "c/param_G/r")
    run.chmod(0o775)
    os.chown(run, 0, pwd.getpwnam("nobody").pw_gid)
    assert f"{run} is writable by other accounts" in (unsafe_as_root(RunPaths(run)) or "")
