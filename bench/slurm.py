"""Benchmarks of the SLURM executor on a real cluster, each printed against a baseline measured in this run.

    sudo python bench/slurm.py [--runs 24] [--keep DIR] [--hung]   (needs SLURM; start one with scripts/slurm/start-slurm.sh)

1. throughput: N trivial runs (one GPU each) through `runqueue run --executor slurm`, against the
   same number of bare `sbatch --wrap` jobs submitted in a loop and awaited with a 0.1 s squeue loop;
2. end-to-end latency: one 2 s run, from its lfads.done to the queue's exit, against a bare job
   awaited the way a backed-off squeue poller (1, 2, 4 … s) would notice it;
3. with --hung: slurmctld stopped for 150 s under a queue with runs to submit: the longest gap
   between its watchdog pings against systemd's WatchdogSec, and how long a stop waits.

Holds the test cluster's session lock (as tests/runqueue/slurm_testkit.py does), so a test session
and the benchmark do not share the 4 GPUs. Timings are noisy on a shared machine: read the ratios.
"""

from __future__ import annotations

import argparse
import fcntl
import itertools
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


def hung_controller(work: Path, hang_s: float = 150.0) -> None:
    """slurmctld stopped (SIGSTOP) while `runqueue serve` under a systemd-style watchdog
    (WatchdogSec=120, its notify socket ours) has runs to submit, then a SIGTERM (systemctl stop):
    the longest gap between the queue's WATCHDOG=1 pings, against WatchdogSec (systemd kills the
    service past 1.0), and how long the stop took to be acted on."""
    import signal
    import socket

    watchdog_s = 120.0
    make_runs(work / "runs", 3, "sleep 1\n", prefix="H")
    notify_path = work / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify_path))
    listener.settimeout(0.5)
    controller = int((Path(os.environ.get("SLURM_TMP", "/tmp/slurm-ci")) / "slurmctld.pid").read_text())
    env = dict(queue_env(work), NOTIFY_SOCKET=str(notify_path), WATCHDOG_USEC=str(int(watchdog_s * 1e6)))
    config = work / "runqueue.toml"
    config.write_text(f'roots = ["{work / "runs"}"]\nexecutor = "slurm"\n')
    command = f'export WATCHDOG_PID=$$; exec "{sys.executable}" -m runqueue serve --config "{config}"'
    log = (work / "queue.log").open("w")
    os.kill(controller, signal.SIGSTOP)
    try:
        queue = subprocess.Popen(["sh", "-c", command], env=env, stdout=log, stderr=subprocess.STDOUT)
        pings: list[float] = [time.monotonic()]
        asked_at = None
        stopping_seen = None
        deadline = time.monotonic() + hang_s
        while time.monotonic() < deadline or (asked_at is not None and stopping_seen is None and time.monotonic() < deadline + 120):
            try:
                message = listener.recv(4096).decode()
            except TimeoutError:
                message = ""
            now = time.monotonic()
            if "WATCHDOG=1" in message:
                pings.append(now)
            if asked_at is None and now > deadline - 30:
                queue.send_signal(signal.SIGTERM)  # systemctl stop
                asked_at = now
            if asked_at is not None and stopping_seen is None and "stopping" in (work / "queue.log").read_text():
                stopping_seen = now
    finally:
        os.kill(controller, signal.SIGCONT)
    pings.append(time.monotonic())
    try:
        queue.wait(timeout=300)
    except subprocess.TimeoutExpired:
        queue.kill()
    listener.close()
    gap = max(later - earlier for earlier, later in itertools.pairwise(pings))
    reaction = "never" if stopping_seen is None or asked_at is None else f"{stopping_seen - asked_at:.1f} s"
    print(f"hung slurmctld for {hang_s:.0f} s: longest gap between watchdog pings {gap:.1f} s | WatchdogSec {watchdog_s:.0f} s"
          f" | ratio {gap / watchdog_s:.2f} (systemd kills at 1.0); SIGTERM acted on after {reaction}; exit {queue.returncode}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=24)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    parser.add_argument("--hung", action="store_true", help="also stop slurmctld for 150 s under a queue (watchdog gaps)")
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
        if args.hung:
            hung_controller(work / "h")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
        os.close(lock)
    return 0


if __name__ == "__main__":
    sys.exit(main())
