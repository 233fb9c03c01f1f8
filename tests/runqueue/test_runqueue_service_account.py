"""The queue as a service account on a shared box: what it writes in a lab's run tree stays usable
by the run's owner, and systemd's per-unit variables stay with the queue."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from runqueue_testkit import make_run, queue_env, run_queue

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
