"""Benchmarks of the SLURM executor on a real cluster, each printed against a baseline measured in this run.

    sudo python bench/slurm.py [--runs 24] [--keep DIR]      (needs SLURM; start one with scripts/slurm/start-slurm.sh)

1. throughput: N trivial runs (one GPU each) through `runqueue run --executor slurm`, against the
   same number of bare `sbatch --wrap` jobs submitted in a loop and awaited with a 0.1 s squeue loop;
2. end-to-end latency: one 2 s run, from its lfads.done to the queue's exit, against a bare job
   awaited the way a backed-off squeue poller (1, 2, 4 … s) would notice it.

Holds the test cluster's session lock (as tests/runqueue/slurm_testkit.py does), so a test session
and the benchmark do not share the 4 GPUs. Timings are noisy on a shared machine: read the ratios.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchkit import make_runs, queue_env

SESSION_LOCK = Path("/tmp/lfads-runqueue-slurm-tests.lock")


def _active(job_ids: list[str]) -> int:
    out = subprocess.run(["squeue", "-h", "-j", ",".join(job_ids), "-o", "%i"], capture_output=True, text=True).stdout
    return len(out.split())


def _bare_jobs(work: Path, count: int) -> float:
    work.mkdir(parents=True)
    began = time.monotonic()
    jobs = [
        subprocess.run(["sbatch", "--parsable", "--gres=gpu:1", f"--chdir={work}", "-o", "/dev/null", "--wrap", f"echo trained > out{i}"],
                       capture_output=True, text=True, check=True).stdout.strip()
        for i in range(count)
    ]
    while _active(jobs):
        time.sleep(0.1)
    return time.monotonic() - began


def throughput(work: Path, count: int) -> None:
    bare = _bare_jobs(work / "bare", count)
    runs = make_runs(work / "runs", count, "echo trained\n", prefix="B")
    began = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "runqueue", "run", str(work / "runs"), "--executor", "slurm", "--quiet"],
                            env=queue_env(work), capture_output=True, text=True, timeout=900)
    ours = time.monotonic() - began
    assert result.returncode == 0 and all((run / "lfads.done").exists() for run in runs), result.stdout + result.stderr
    print(f"throughput: {count} runs in {ours:.1f} s ({count / ours:.1f} runs/s) | bare sbatch + squeue loop: "
          f"{bare:.1f} s ({count / bare:.1f} jobs/s) | ratio {ours / bare:.2f}x")


def latency(work: Path) -> None:
    # Baseline: a bare 2 s job, noticed by an squeue poller backing off 1, 2, 4 … s (no folder hint).
    (work / "lat-bare").mkdir(parents=True)
    done = work / "lat-bare" / "done"
    job = subprocess.run(["sbatch", "--parsable", "--gres=gpu:1", f"--chdir={work / 'lat-bare'}", "-o", "/dev/null",
                          "--wrap", f"sleep 2; touch {done}"], capture_output=True, text=True, check=True).stdout.strip()
    delay = 1.0
    while _active([job]):
        time.sleep(delay)
        delay = min(delay * 2, 30.0)
    bare = time.time() - done.stat().st_mtime
    run, = make_runs(work / "lat", 1, "sleep 2\n", prefix="B")
    subprocess.run([sys.executable, "-m", "runqueue", "run", str(work / "lat"), "--executor", "slurm", "--quiet"],
                   env=queue_env(work), capture_output=True, text=True, timeout=300, check=True)
    ours = time.time() - (run / "lfads.done").stat().st_mtime
    print(f"end of a 2 s run -> queue returns: {ours:.2f} s | bare job noticed by a 1,2,4 s back-off poller: {bare:.2f} s "
          f"| ratio {ours / bare:.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=24)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = parser.parse_args()
    if shutil.which("sbatch") is None:
        print("bench/slurm.py: sbatch not found; start a cluster with scripts/slurm/start-slurm.sh", file=sys.stderr)
        return 2
    lock = os.open(SESSION_LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    fcntl.flock(lock, fcntl.LOCK_EX)
    work = args.keep or Path(tempfile.mkdtemp(prefix="slurm-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        throughput(work / "t", args.runs)
        latency(work / "l")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
        os.close(lock)
    return 0


if __name__ == "__main__":
    sys.exit(main())
