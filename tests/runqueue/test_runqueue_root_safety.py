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
    assert unsafe_as_root(RunPaths(run), as_root=False) is None


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


@needs_root
def test_root_refuses_a_run_below_a_folder_another_account_can_change(tmp_path: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, nobody.pw_uid, nobody.pw_gid)  # they could rename the run away and put their own there
    run = make_run(theirs, "c/param_A/r")
    problem = unsafe_as_root(RunPaths(run)) or ""
    assert problem.startswith(f"{theirs}, above the run folder, can be changed by nobody"), problem


@needs_root
def test_root_refuses_a_runqueue_folder_of_another_account(tmp_path: Path) -> None:
    # Its legacy-bin goes first on PATH for old scripts: whoever owns it chooses what `which` runs.
    run = make_run(tmp_path / "runs", "c/param_Q/r")
    (run / ".runqueue" / "legacy-bin").mkdir(parents=True)
    planted = run / ".runqueue" / "legacy-bin" / "which"
    planted.write_text("#!/bin/sh\nid -u > /tmp/pwned\n")
    os.chown(planted, pwd.getpwnam("nobody").pw_uid, 0)
    assert (unsafe_as_root(RunPaths(run)) or "").startswith(f"{planted} belongs to nobody")


@needs_root
def test_the_supervisor_checks_again_just_before_the_step(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    from runqueue.supervisor_spec import SupervisorSpec

    run = make_run(tmp_path / "runs", "c/param_S/r", f"touch {tmp_path / 'ran'}\n")
    (run / "lfads_train.sh").chmod(0o666)  # made writable after the queue's look
    spec = SupervisorSpec(run_dir=str(run), device_uuid="cpu-0", device_name="CPU slot 0", device_env={})
    subprocess.run([sys.executable, "-m", "runqueue.supervisor", "--spec", spec.to_argv_json()], timeout=60)
    failed = json.loads((run / "lfads.failed").read_text())
    assert failed["reason"] == "unsafe_as_root" and "is writable by other accounts" in failed["message"]
    assert not (tmp_path / "ran").exists()


@needs_root
def test_status_as_root_does_not_call_runs_refused_when_another_accounts_queue_runs_them(tmp_path: Path) -> None:
    import json
    import socket
    from dataclasses import asdict

    from runqueue.procinfo import process_start_time
    from runqueue.queue_record import QueueRecord

    nobody = pwd.getpwnam("nobody")
    root = tmp_path / "runs"
    run = make_run(root, "c/param_T/r")
    os.chown(run, nobody.pw_uid, nobody.pw_gid)
    env = queue_env(tmp_path)
    assert "belongs to nobody" in run_queue(env, "status", root).stdout  # as a root queue would judge it
    claims = tmp_path / "claims"
    claims.mkdir(mode=0o1777, exist_ok=True)
    record = claims / f"queue-{socket.gethostname()}-{os.getpid()}.json"  # the service's queue, as `nobody`
    record.write_text(json.dumps(asdict(QueueRecord(
        pid=os.getpid(), start_time=process_start_time(os.getpid()), roots=(str(root.resolve()),), gpus=None,
        simulate_gpus=None, cpu_slots=None, max_per_gpu=1, foreign="block", memory_per_run=2000))))  # as a queue writes it
    os.chown(record, nobody.pw_uid, nobody.pw_gid)
    assert "belongs to nobody" not in run_queue(env, "status", root).stdout


@needs_root
def test_a_linked_step_script_of_another_account_is_named_with_its_target_and_the_chown_that_fixes_it(tmp_path: Path) -> None:
    # chown -R on the run folder leaves a link's target alone: the advice must name the target.
    run = make_run(tmp_path / "runs", "c/param_L/r")
    shared = tmp_path / "shared_train.sh"
    shared.write_text("#!/bin/bash\necho trained\n")
    os.chown(shared, pwd.getpwnam("nobody").pw_uid, 0)
    script = run / "lfads_train.sh"
    script.unlink()
    script.symlink_to(shared)
    problem = unsafe_as_root(RunPaths(run)) or ""
    assert problem.startswith(f"{script} (a link to {shared}) belongs to nobody"), problem
    assert problem.endswith(f"or chown root {shared}") and "chown -R" not in problem
