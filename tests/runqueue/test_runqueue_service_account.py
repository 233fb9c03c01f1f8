"""The queue as a service account on a shared box: what it writes in a lab's run tree stays usable
by the run's owner, and systemd's per-unit variables stay with the queue."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from runqueue_testkit import (
    finish,
    make_run,
    queue_command,
    queue_env,
    read_json,
    run_queue,
    start_queue,
    wait_for,
)

from runqueue import control
from runqueue.layout import RunPaths

LAB_GID = 54321  # any group id: membership is what counts, not a name in /etc/group

WRITE_LIKE_A_SUPERVISOR = """
import os, sys
from pathlib import Path
from runqueue.atomicio import atomic_write_json
from runqueue.outlog import open_for_append
run = Path(sys.argv[1])
atomic_write_json(run / "lfads.done", {"attempt": 1})
os.close(open_for_append(run / "lfads.out"))
"""


def _write_as(run: Path, extra_groups: list[int]) -> None:
    subprocess.run([sys.executable, "-c", WRITE_LIKE_A_SUPERVISOR, str(run)], check=True, timeout=60,
                   user=0, group=0, extra_groups=extra_groups)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a process another group needs root")
@pytest.mark.parametrize("member", [True, False])
def test_files_written_in_a_group_run_folder_take_its_group_when_the_queue_is_a_member(tmp_path: Path, member: bool) -> None:
    run = tmp_path / "run"
    run.mkdir()
    os.chown(run, 0, LAB_GID)
    run.chmod(0o775)  # a group tree without the setgid bit
    _write_as(run, [LAB_GID] if member else [])
    expected = LAB_GID if member else 0
    assert {name: (run / name).stat().st_gid for name in ("lfads.done", "lfads.out")} == {
        "lfads.done": expected, "lfads.out": expected}


def test_steps_do_not_inherit_the_units_notify_socket_or_watchdog(tmp_path: Path) -> None:
    run = make_run(tmp_path / "runs", "c/param_A/x", 'echo "socket=${NOTIFY_SOCKET-unset} watchdog=${WATCHDOG_USEC-unset}"\n')
    env = queue_env(tmp_path, NOTIFY_SOCKET=str(tmp_path / "notify.sock"), WATCHDOG_USEC="120000000",
                    WATCHDOG_PID=str(os.getpid()))
    result = run_queue(env, "run", tmp_path / "runs", "--gpus", "none")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "socket=unset watchdog=unset" in (run / "lfads.out").read_text()


def _start_a_long_run(tmp_path: Path) -> tuple[Path, subprocess.Popen[bytes], int]:
    started = tmp_path / "started"
    run = make_run(tmp_path / "runs", "c/param_C/long", f"touch {started}\nsleep 60\n")
    queue = start_queue(queue_env(tmp_path), "run", tmp_path / "runs", "--gpus", "none", log=tmp_path / "queue.log")
    wait_for(started.exists, what="the run to start")
    return run, queue, int(read_json(run / ".runqueue/state.json")["supervisor_pid"])


def test_a_supervisor_cancels_on_a_cancel_request_naming_it_without_any_signal(tmp_path: Path) -> None:
    # What `runqueue cancel` leaves for a supervisor it may not signal (the service's, cancelled by a lab member).
    run, queue, supervisor = _start_a_long_run(tmp_path)
    try:
        request = run / ".runqueue/cancel.json"
        request.write_text(json.dumps({"supervisor_pid": supervisor, "grace_s": 1, "requested_at": time.time() - 3600}))
        time.sleep(2.5)  # more than one look at the folder: a request older than the attempt is stale
        assert not (run / "lfads.failed").exists()
        request.write_text(json.dumps({"supervisor_pid": supervisor, "grace_s": 1, "requested_at": time.time()}))
        wait_for((run / "lfads.failed").exists, timeout=15, what="the supervisor to read the request")
        assert read_json(run / "lfads.failed")["reason"] == "cancelled"
    finally:
        finish(queue, timeout=30)


def test_cancel_of_a_run_whose_supervisor_it_may_not_signal_asks_in_writing(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    run, queue, supervisor = _start_a_long_run(tmp_path)
    try:
        def not_permitted(_pidfd: int, _signum: int) -> None:
            raise PermissionError(1, "Operation not permitted")  # as for the service account's supervisor

        monkeypatch.setattr(control.signal, "pidfd_send_signal", not_permitted)
        assert control.cancel(RunPaths(run), grace_s=1.0) == f"cancelled (supervisor pid {supervisor} stopped it)"
        assert read_json(run / "lfads.failed")["reason"] == "cancelled"
    finally:
        finish(queue, timeout=30)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a process another group needs root")
def test_a_linked_log_s_target_keeps_its_group(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    os.chown(run, 0, LAB_GID)
    run.chmod(0o775)
    private = tmp_path / "service-private.conf"
    private.write_text("the service's own file")
    (run / "lfads.out").symlink_to(private)  # planted by someone who can write the run folder
    subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; from runqueue.outlog import open_for_append;"
                    " open_for_append(Path(sys.argv[1]))", str(run / "lfads.out")],
                   check=True, timeout=60, user=0, group=0, extra_groups=[LAB_GID])
    assert private.stat().st_gid == 0


def test_steps_get_the_default_hang_up_and_pipe_signals_even_under_nohup(tmp_path: Path) -> None:
    # A queue started under nohup (SIGHUP ignored) or any supervisor (it ignores hang-ups itself)
    # must not hand an ignored SIGHUP or SIGPIPE down to the run's programs: exec keeps SIG_IGN.
    run = make_run(tmp_path / "runs", "c/param_A/x", "grep SigIgn /proc/self/status\n")
    command = ["nohup", *queue_command("run", tmp_path / "runs", "--gpus", "none")]
    result = subprocess.run(command, env=queue_env(tmp_path), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    (line,) = [line for line in (run / "lfads.out").read_text().splitlines() if line.startswith("SigIgn:")]
    ignored = int(line.split()[1], 16)
    assert not ignored & (1 << (signal.SIGHUP - 1)) and not ignored & (1 << (signal.SIGPIPE - 1)), line
