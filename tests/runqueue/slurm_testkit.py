"""A real single-node SLURM for the SLURM executor's tests, and helpers to look at its jobs.

`slurm_cluster` (session-wide) starts the cluster with scripts/slurm/start-slurm.sh (4 fake GPUs,
8 CPUs) when running as root with apt (or SLURM already installed); otherwise the tests are skipped
with the reason. The cluster is one machine-wide resource: a session holds an flock on it for as
long as it uses it, so two test sessions (several engineers on one machine) take turns instead of
competing for its 4 GPUs. A cluster that was running before the session is left running; one the
session started is stopped at its end.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from runqueue_testkit import queue_env

REPO = Path(__file__).resolve().parents[2]
START_SCRIPT = REPO / "scripts" / "slurm" / "start-slurm.sh"
STOP_SCRIPT = REPO / "scripts" / "slurm" / "stop-slurm.sh"
SLURM_TMP = Path(os.environ.get("SLURM_TMP", "/tmp/slurm-ci"))
SESSION_LOCK = Path("/tmp/lfads-runqueue-slurm-tests.lock")
SESSION_LOCK_TIMEOUT_S = 900.0
POLL_MAX_S = "2"  # the watcher's back-off cap: short, so pending jobs cancelled behind our back show quickly


@dataclass
class SlurmCluster:
    started_here: bool

    def jobs_under(self, folder: Path, *, active_only: bool = False) -> dict[int, tuple[str, str]]:
        """Job id -> (state, work dir) of every job SLURM remembers whose work dir is under `folder`."""
        result = subprocess.run(
            ["squeue", "-h", "-t", "all", "-O", "JobID:|,State:|,WorkDir:|"], capture_output=True, text=True, check=True
        )
        jobs = {}
        prefix = str(folder).rstrip("/") + "/"
        for line in result.stdout.splitlines():
            job, state, workdir = [*line.split("|"), "", ""][:3]
            if not job.strip().isdigit() or not (workdir + "/").startswith(prefix):
                continue
            if not active_only or state in ("PENDING", "RUNNING", "COMPLETING", "CONFIGURING"):
                jobs[int(job)] = (state, workdir)
        return jobs

    def cancel_under(self, folder: Path) -> None:
        active = self.jobs_under(folder, active_only=True)
        if active:
            subprocess.run(["scancel", *map(str, active)], capture_output=True)

    def show_job(self, job_id: int) -> str:
        return subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], capture_output=True, text=True).stdout


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "the SLURM tests start a throw-away cluster (scripts/slurm/start-slurm.sh) and need root"
    if not shutil.which("sbatch") and not shutil.which("apt-get"):
        return "SLURM is not installed and apt-get is not available to install it"
    return None


def _alive(pid_file: Path) -> bool:
    try:
        os.kill(int(pid_file.read_text().strip()), 0)
    except (OSError, ValueError):
        return False
    return True


_lease: tuple[int, SlurmCluster] | None = None  # one per process, whichever module asks first


def _take_cluster() -> SlurmCluster:
    global _lease
    if _lease is not None:
        return _lease[1]
    fd = os.open(SESSION_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    deadline = time.monotonic() + SESSION_LOCK_TIMEOUT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                pytest.fail(f"another test session held {SESSION_LOCK} (the test SLURM cluster) for {SESSION_LOCK_TIMEOUT_S:g}s")
            time.sleep(0.5)
    running = _alive(SLURM_TMP / "slurmctld.pid") and _alive(SLURM_TMP / "slurmd.pid")
    env = dict(os.environ, NGPU="4", NCPU="8", SLURM_TMP=str(SLURM_TMP))
    result = subprocess.run(["bash", str(START_SCRIPT)], env=env, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        os.close(fd)
        pytest.fail(f"{START_SCRIPT} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    _lease = (fd, SlurmCluster(started_here=not running))
    return _lease[1]


def _give_back_cluster() -> None:
    global _lease
    if _lease is None:
        return
    fd, cluster = _lease
    _lease = None
    if cluster.started_here:
        subprocess.run(["bash", str(STOP_SCRIPT)], env=dict(os.environ, SLURM_TMP=str(SLURM_TMP)), capture_output=True, timeout=120)
    os.close(fd)


@pytest.fixture(scope="session")
def slurm_cluster(request: pytest.FixtureRequest) -> SlurmCluster:
    reason = _skip_reason()
    if reason is not None:
        pytest.skip(reason)
    fresh = _lease is None
    cluster = _take_cluster()
    if fresh:
        request.addfinalizer(_give_back_cluster)
    return cluster


@pytest.fixture
def slurm_env(tmp_path: Path, slurm_cluster: SlurmCluster) -> Iterator[dict[str, str]]:
    """A queue environment for one test (own claims dir, short poll cap); its jobs are scancelled afterwards."""
    yield queue_env(tmp_path, RUNQUEUE_SLURM_POLL_MAX_S=POLL_MAX_S)
    slurm_cluster.cancel_under(tmp_path)


def wait_until_released(release: Path, started: Path) -> str:
    """A step that says it started, then waits (up to 2 min) for `release` to appear."""
    return f'touch "{started}"\nfor i in $(seq 1200); do [ -e "{release}" ] && break; sleep 0.1; done\necho released\n'


def submitted_job(run: Path) -> int | None:
    """The job id the run's .runqueue/slurm.json records."""
    try:
        record = json.loads((run / ".runqueue" / "slurm.json").read_text())
    except (OSError, ValueError):
        return None
    job = record.get("job_id")
    return job if isinstance(job, int) else None
