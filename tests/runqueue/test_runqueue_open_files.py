"""Open files: a queue lifts its own soft limit (a SLURM sweep holds descriptors per job), its steps
keep the limit the queue found, and a SLURM queue never submits more jobs than it has descriptors for."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest
from runqueue_testkit import finish, make_run, queue_command, queue_env, wait_for

_HARD = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
pytestmark = pytest.mark.skipif(_HARD != resource.RLIM_INFINITY and _HARD <= 1024,
                                reason=f"the hard limit on open files here is {_HARD}: nothing to lift")


def _soft_1024() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, _HARD))


def _soft_limit_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError(f"no open-file limit for {pid}")


def test_the_queue_lifts_its_soft_limit_and_its_steps_keep_the_one_it_found(tmp_path: Path) -> None:
    run = make_run(tmp_path / "runs", "c/param_L/r", 'ulimit -n > "$RUNQUEUE_RUN_DIR/steps-limit"\n'
                                                      'while [ ! -e "$RUNQUEUE_RUN_DIR/go" ]; do sleep 0.05; done\n')
    with open(tmp_path / "q.log", "wb") as log:
        queue = subprocess.Popen(queue_command("run", tmp_path / "runs", "--cpu-slots", "1", "--quiet"),
                                 env=queue_env(tmp_path), stdout=log, stderr=subprocess.STDOUT, preexec_fn=_soft_1024)
    try:
        wait_for((run / "steps-limit").exists, what="the step")
        assert _soft_limit_of(queue.pid) > 1024
        (run / "go").touch()
        assert finish(queue) == 0, (tmp_path / "q.log").read_text()
    finally:
        (run / "go").touch()
        if queue.poll() is None:
            queue.kill()
    assert (run / "steps-limit").read_text().strip() == "1024"


def test_a_slurm_queue_submits_no_more_jobs_than_it_has_descriptors_for() -> None:
    code = (
        "import resource\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (1024, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))\n"
        "from runqueue.executors.slurm import SlurmExecutor\n"
        "from runqueue.slurm.options import SlurmOptions\n"
        "class NoCluster:\n"
        "    def check_available(self): pass\n"
        "unlimited = SlurmExecutor(commands=NoCluster())\n"
        "capped = SlurmExecutor(SlurmOptions(max_submitted=50), commands=NoCluster())\n"
        "print(unlimited.capacity(0), unlimited.capacity(250), capped.capacity(0), capped.capacity(250))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["256", "6", "50", "0"]  # (1024 - 256 kept) // 3 per job
