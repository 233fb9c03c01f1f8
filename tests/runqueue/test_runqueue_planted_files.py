"""Things anyone who can write a run folder can plant where the queue's small files belong: a fifo,
JSON of the wrong shape or nested beyond reason, a huge file. Each may block that run; none may hang
or crash a queue (a root service serves every user), nor `status`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from runqueue_testkit import make_run, queue_env, read_json, run_queue

from runqueue.atomicio import NotAPlainFile, read_json_object, read_small_file

# A stuck read must fail the test, not the suite: every queue command here gets this long.
_SHORT_S = 30.0
_DEEP = "[" * 100_000 + "]" * 100_000


# Named ids: pytest would otherwise put the 200 000-character value into PYTEST_CURRENT_TEST, which
# the queue's subprocesses inherit, and exec refuses one variable over 128 KiB (E2BIG).
@pytest.mark.parametrize("time_limit", ["[]", "{}", '{"h": 2}', "true", _DEEP],
                         ids=["list", "object", "object-of-numbers", "true", "nested-100000-deep"])
def test_a_time_limit_of_the_wrong_json_type_blocks_only_its_run(tmp_path: Path, time_limit: str) -> None:
    root = tmp_path / "runs"
    bad = make_run(root, "c/param_T/bad")
    (bad / "runqueue.json").write_text('{"time_limit": ' + time_limit + "}")
    fine = make_run(root, "c/param_T/fine")
    env = queue_env(tmp_path)
    result = run_queue(env, "run", root, "--cpu-slots", "1", "--quiet", timeout=_SHORT_S)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert f"not started: {bad / 'runqueue.json'}: " in result.stdout
    assert (fine / "lfads.done").exists() and not (bad / "lfads.done").exists()
    status = run_queue(env, "status", root, timeout=_SHORT_S)
    assert status.returncode == 0 and "Traceback" not in status.stderr, status.stderr
    assert str(bad / "runqueue.json") in status.stdout


@pytest.mark.parametrize("planted", ["runqueue.json", ".runqueue/state.json", ".runqueue/lock", "lfads.failed"])
def test_a_fifo_in_place_of_a_queue_file_hangs_nothing(tmp_path: Path, planted: str) -> None:
    root = tmp_path / "runs"
    odd = make_run(root, "c/param_F/odd")
    (odd / planted).parent.mkdir(exist_ok=True)
    os.mkfifo(odd / planted)
    fine = make_run(root, "c/param_F/fine")
    env = queue_env(tmp_path)
    for command in (("status", root), ("status", "--json", root), ("run", root, "--cpu-slots", "1", "--quiet")):
        result = run_queue(env, *command, timeout=_SHORT_S)  # timeout: the old reads blocked here for good
        assert "Traceback" not in result.stderr, result.stderr
    assert (fine / "lfads.done").exists()
    if planted == "runqueue.json":
        assert f"{odd / 'runqueue.json'}: is not a regular file" in result.stdout
    for command in (("requeue", odd), ("cancel", odd)):
        result = run_queue(env, *command, timeout=_SHORT_S)
        assert "Traceback" not in result.stderr, result.stderr


@pytest.mark.parametrize("planted", ["lfads.failed", ".runqueue/state.json", "runqueue.json"])
def test_json_nested_beyond_reason_names_its_file_or_is_ignored(tmp_path: Path, planted: str) -> None:
    root = tmp_path / "runs"
    odd = make_run(root, "c/param_D/odd")
    (odd / planted).parent.mkdir(exist_ok=True)
    (odd / planted).write_text(_DEEP)
    fine = make_run(root, "c/param_D/fine")
    env = queue_env(tmp_path)
    status = run_queue(env, "status", root, timeout=_SHORT_S)
    assert status.returncode == 0, status.stdout + status.stderr
    result = run_queue(env, "run", root, "--cpu-slots", "1", "--quiet", timeout=_SHORT_S)
    assert "recursion" not in (result.stdout + result.stderr)
    assert (fine / "lfads.done").exists()
    if planted == "runqueue.json":
        assert f"{odd / 'runqueue.json'}: is not valid JSON" in result.stdout


def test_the_small_file_reader_refuses_what_the_queue_never_writes(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(NotAPlainFile, match="not a regular file"):
        read_small_file(tmp_path / "fifo")
    with pytest.raises(NotAPlainFile, match="not a regular file"):
        read_small_file(Path("/dev/zero"))
    (tmp_path / "big").write_bytes(b" " * 2049)
    with pytest.raises(NotAPlainFile, match="larger than 2 kB"):
        read_small_file(tmp_path / "big", limit=2048)
    assert read_small_file(tmp_path / "big", limit=4096) == b" " * 2049
    (tmp_path / "deep.json").write_text(_DEEP)
    assert read_json_object(tmp_path / "deep.json") is None
    (tmp_path / "link").symlink_to(tmp_path / "big")  # markers may be links (lfads.out often is)
    assert len(read_small_file(tmp_path / "link")) == 2049


@pytest.mark.parametrize("planted", ["dangling link", "folder", "fifo"])
def test_an_lfads_out_that_cannot_be_opened_says_so_and_how_to_fix_it(tmp_path: Path, planted: str) -> None:
    run = make_run(tmp_path / "runs", "c/param_L/r")
    if planted == "folder":
        (run / "lfads.out").mkdir()
        expected = "rename or remove that folder"
    elif planted == "fifo":  # it was written into and read by nobody: the run was marked done, its log gone
        os.mkfifo(run / "lfads.out")
        expected = f"{run / 'lfads.out'} is not a regular file (a fifo, socket or device); rename or remove it"
    else:
        (run / "lfads.out").symlink_to(tmp_path / "nowhere" / "log")
        expected = f"is a link to {tmp_path / 'nowhere' / 'log'}, which cannot be created; remove the link"
    result = run_queue(queue_env(tmp_path), "run", tmp_path / "runs", "--cpu-slots", "1", "--retry-backoff", "0.2s",
                       "--quiet", timeout=_SHORT_S)
    assert result.returncode == 1
    failed = read_json(run / "lfads.failed")
    assert failed["reason"] == "internal_error", failed  # the folder is there: not folder_vanished
    assert expected in failed["message"]
    assert expected in result.stdout
    # Only the user can mend it: no retry into the same wall (and no "retrying from None").
    assert failed["attempt"] == 1 and "retrying" not in result.stdout, result.stdout


@pytest.mark.parametrize("planted", ["state.json folder", "lock fifo"])
def test_a_folder_or_fifo_where_the_queue_keeps_its_state_is_named_by_status_and_run(tmp_path: Path, planted: str) -> None:
    run = make_run(tmp_path / "runs", "c/param_S/r")
    if planted == "state.json folder":
        (run / ".runqueue" / "state.json").mkdir(parents=True)
        says = f"{run / '.runqueue' / 'state.json'} is a folder, not the queue's file; remove or rename it"
    else:  # the supervisor's lock cannot hold its pid (it blamed state.json)
        (run / ".runqueue").mkdir()
        os.mkfifo(run / ".runqueue" / "lock")
        says = f"{run / '.runqueue' / 'lock'} is not a regular file (a fifo, socket or device), not the queue's file; remove it"
    env = queue_env(tmp_path)
    status = run_queue(env, "status", tmp_path / "runs", timeout=_SHORT_S)  # it said "ready: fits cpu-0"
    assert says in status.stdout, status.stdout
    result = run_queue(env, "run", tmp_path / "runs", "--cpu-slots", "1", "--quiet", timeout=_SHORT_S)
    assert says in result.stdout and not (run / "lfads.done").exists(), result.stdout


def test_only_log_problems_the_user_must_mend_skip_the_retry(tmp_path: Path) -> None:
    import errno

    from runqueue.failure_reasons import needs_the_user
    from runqueue.outlog import NotARegularFile

    log = tmp_path / "lfads.out"
    for code in (errno.EISDIR, errno.EACCES, errno.EPERM, errno.EROFS):
        assert needs_the_user(OSError(code, os.strerror(code)), log)
    assert needs_the_user(NotARegularFile(errno.EINVAL, "not a regular file"), log)
    for code in (errno.EMFILE, errno.ENFILE, errno.EIO, errno.ENOMEM, errno.EINTR, errno.ENOSPC):
        assert not needs_the_user(OSError(code, os.strerror(code)), log)  # passing: retried
    assert not needs_the_user(OSError(errno.ENOENT, "gone"), log)
    log.symlink_to(tmp_path / "nowhere" / "log")
    assert needs_the_user(OSError(errno.ENOENT, "gone"), log)


def test_links_planted_where_the_queue_keeps_its_lock_are_never_followed(tmp_path: Path) -> None:
    # A queue run as root or as a service must not create or write where a run folder's owner points it.
    elsewhere, target = tmp_path / "elsewhere", tmp_path / "made-through-a-link"
    elsewhere.mkdir()
    linked_dir = make_run(tmp_path / "runs", "c/param_L/dir_link")
    (linked_dir / ".runqueue").symlink_to(elsewhere)
    linked_lock = make_run(tmp_path / "runs", "c/param_L/lock_link")
    (linked_lock / ".runqueue").mkdir()
    (linked_lock / ".runqueue" / "lock").symlink_to(target)
    env = queue_env(tmp_path)
    result = run_queue(env, "run", tmp_path / "runs", "--cpu-slots", "1", "--quiet", timeout=_SHORT_S)
    assert result.returncode == 1
    assert f"{linked_dir / '.runqueue'} is a link, not the queue's folder" in result.stdout, result.stdout
    assert f"{linked_lock / '.runqueue' / 'lock'} is a link, not the queue's file" in result.stdout, result.stdout
    for run in (linked_dir, linked_lock):
        (run / "lfads.done").touch()
        requeued = run_queue(env, "requeue", run, timeout=_SHORT_S)
        assert requeued.returncode != 0 and "symbolic link" in requeued.stderr, requeued.stderr
        assert (run / "lfads.done").exists()  # nothing was changed
    assert list(elsewhere.iterdir()) == [] and not os.path.lexists(target) and not target.exists()


def test_a_fifo_as_the_train_script_hangs_neither_status_nor_the_queue(tmp_path: Path) -> None:
    fifo_run = tmp_path / "runs" / "c" / "param_F" / "fifo"
    fifo_run.mkdir(parents=True)
    os.mkfifo(fifo_run / "lfads_train.sh")
    good = make_run(tmp_path / "runs", "c/param_F/good")
    env = queue_env(tmp_path)
    assert run_queue(env, "status", tmp_path / "runs", timeout=_SHORT_S).returncode == 0
    result = run_queue(env, "run", tmp_path / "runs", "--cpu-slots", "1", "--retries", "0", "--quiet", timeout=_SHORT_S)
    assert result.returncode == 1 and (good / "lfads.done").exists()
    failed = read_json(fifo_run / "lfads.failed")
    assert failed["reason"] == "script_unreadable" and "is not a regular file" in failed["message"]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand files to another account")
def test_files_root_makes_in_a_users_run_folder_are_that_users(tmp_path: Path) -> None:
    # An admin's `runqueue cancel` of a user's pending run must not leave a root-owned .runqueue/ or
    # lock behind: the user's own queue could then never take the run lock again.
    run = make_run(tmp_path / "runs", "c/param_O/r")
    for path in (tmp_path / "runs", tmp_path / "runs" / "c", tmp_path / "runs" / "c" / "param_O", run, run / "lfads_train.sh"):
        os.chown(path, 12345, 12345)
    result = run_queue(queue_env(tmp_path), "cancel", run, timeout=_SHORT_S)
    assert result.returncode == 0, result.stdout + result.stderr
    made = [run / ".runqueue", run / ".runqueue" / "lock", run / "lfads.failed"]
    assert all(path.exists() for path in made)
    assert {(path.name, path.stat().st_uid, path.stat().st_gid) for path in made} == {
        (path.name, 12345, 12345) for path in made}


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another account")
def test_a_service_account_gives_what_it_creates_the_run_folders_group(tmp_path: Path) -> None:
    # A group tree without the setgid bit: the service's .runqueue/ and lock would carry its own group,
    # and the folder's owner (a member of the folder's group) could not take the run lock again.
    import shutil
    import subprocess
    import sys
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="rq-group-", dir="/tmp"))  # tmp_path's parents are root's alone
    base.chmod(0o755)
    run = make_run(base / "runs", "c/param_G/r")
    for folder in (base / "runs", base / "runs" / "c", base / "runs" / "c" / "param_G"):
        folder.chmod(0o755)
    os.chown(run, 12345, 4242)
    run.chmod(0o777)
    script = ("import os, sys\nfrom pathlib import Path\nfrom runqueue import runlock\n"
              "os.setgroups([4242]); os.setgid(65534); os.setuid(65534)\n"
              "fd = runlock.try_acquire(Path(sys.argv[1]) / '.runqueue' / 'lock')\nprint(fd is not None)\n")
    repo = Path(__file__).resolve().parents[2]
    try:
        result = subprocess.run([sys.executable, "-c", script, str(run)], capture_output=True, text=True, timeout=30,
                                env={**os.environ, "PYTHONPATH": str(repo)})
        if "Operation not permitted" in result.stderr:
            pytest.skip("cannot act as another account here")
        assert result.stdout.strip() == "True", result.stderr
        for made in (run / ".runqueue", run / ".runqueue" / "lock"):
            assert (made.stat().st_uid, made.stat().st_gid) == (65534, 4242), made
    finally:
        shutil.rmtree(base)
