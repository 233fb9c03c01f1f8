"""Helpers for the queue tests: fake run folders, simulated GPUs, the real queue as a subprocess.

Every queue a test starts gets its own claims directory (RUNQUEUE_CLAIMS_DIR under tmp_path),
so tests never see each other's claims, nor a real service's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

QUEUE_TIMEOUT_S = 120


def make_run(
    root: Path,
    relative: str,
    train: str = "echo trained\n",
    *,
    posterior: str | None = None,
    write_params: str | None = None,
    resources: dict[str, Any] | None = None,
) -> Path:
    """A fake run folder whose step scripts are the given bash snippets."""
    run = root / relative
    run.mkdir(parents=True, exist_ok=True)
    (run / "lfads_train.sh").write_text("#!/bin/bash\n" + train)
    if posterior is not None:
        (run / "lfads_posterior_mean_sample.sh").write_text("#!/bin/bash\n" + posterior)
    if write_params is not None:
        (run / "lfads_write_model_params.sh").write_text("#!/bin/bash\n" + write_params)
    if resources is not None:
        (run / "runqueue.json").write_text(json.dumps(resources))
    # As if prepared a while ago: the queue lets a train script younger than SCRIPT_SETTLE_S settle
    # first (test_a_train_script_still_being_written_waits_until_it_settles covers that wait).
    prepared = time.time() - 10
    os.utime(run / "lfads_train.sh", (prepared, prepared))
    return run


def gpu(uuid: str, total: int = 8000, used: int = 0, processes: list[dict[str, int]] | None = None, name: str = "Sim GPU") -> dict[str, Any]:
    return {"uuid": uuid, "name": name, "memory_total_mb": total, "memory_used_mb": used, "processes": processes or []}


def write_gpus(path: Path, devices: list[dict[str, Any]]) -> Path:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(devices))
    tmp.replace(path)  # the queue re-reads this file at every placement: never let it see half a file
    return path


def queue_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("RUNQUEUE_")}
    env["RUNQUEUE_CLAIMS_DIR"] = str(tmp_path / "claims")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', os.defpath)}"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def queue_command(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "runqueue", *map(str, args)]


def run_queue(env: dict[str, str], *args: str | Path, timeout: float = QUEUE_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """`runqueue ARGS` to completion; stdout and stderr captured as text."""
    return subprocess.run(queue_command(*args), env=env, capture_output=True, text=True, timeout=timeout)


def start_queue(env: dict[str, str], *args: str | Path, log: Path) -> subprocess.Popen[bytes]:
    """`runqueue ARGS` in the background, its console going to `log`."""
    with open(log, "wb") as out:
        return subprocess.Popen(queue_command(*args), env=env, stdout=out, stderr=subprocess.STDOUT)


def wait_for(predicate: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def finish(process: subprocess.Popen[bytes], timeout: float = QUEUE_TIMEOUT_S) -> int:
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


def kill_processes(*processes: subprocess.Popen[Any] | None) -> None:
    """A test's clean-up: kill and reap those of its own processes still running."""
    for process in processes:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def kill_session(sid: int) -> None:
    """Clean-up for tests that leave a run's session behind on failure."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == sid:
                    os.kill(int(entry), signal.SIGKILL)
            except OSError:
                pass


def wait_until_released(flag: Path, started: Path) -> str:
    """bash: say it started (touch `started`), then wait (up to a minute) for `flag` to appear."""
    return f"touch {started}\nfor i in $(seq 1200); do [ -e {flag} ] && break; sleep 0.05; done\necho released\n"


def step_headers(log_text: str) -> list[str]:
    """The per-step header lines the supervisor wrote into lfads.out."""
    return [line for line in log_text.splitlines() if line.startswith("### runqueue") and " step=" in line]
