"""Benchmarks of the run queue, each printed as a ratio against a baseline measured in this same process.

    python bench/queue.py [--only dispatch,throughput,rescan,output] [--keep DIR]

1. dispatch latency: a run's exit to the next run's start (one simulated GPU, runs in a row),
   against a 1-second polling loop (target: median <= 50 ms);
2. throughput: 200 trivial runs over 4 simulated GPUs (target >= 50 runs/s), against a bare
   4-way process pool running the same scripts;
3. rescan of 10,000 run folders (target <= 100 ms) against a naive os.walk + exists pass, and the
   idle CPU and RSS of a queue watching that tree (targets <= 1 %, <= 80 MB);
4. a run printing 1 GB through the queue against the same script writing the file itself
   (target <= 10 % slower);
5. requeue: deleting lfads.done to the run starting again, with the inotify hint against polling
   alone at the default 5 s interval; the rescan bench also times the hinted rescan of 10,000 runs;
6. nvml (only where an NVIDIA driver answers): the cost of one NVML inventory reading against one
   reading of the simulated file, and dispatch latency on the real GPU against the simulated one.

Timings are noisy on a shared machine: read the ratios, run it twice before believing a change.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchkit import make_runs, queue_env

from runqueue.devices.nvml import NvmlInventory
from runqueue.devices.simulated import SimulatedInventory
from runqueue.discovery import REFRESH_SHARES, RunScanner
from runqueue.fswatch import DirectoryWatcher

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _queue(env: dict[str, str], *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runqueue", *map(str, args)], env=env, capture_output=True, text=True, timeout=900)


def _sim(work: Path, count: int) -> Path:
    path = work / "gpus.json"
    path.write_text(json.dumps([
        {"uuid": f"GPU-bench{i}", "name": "Sim", "memory_total_mb": 16000, "memory_used_mb": 0, "processes": []} for i in range(count)
    ]))
    return path


# ------------------------------------------------------------------------------------------ dispatch
STAMP_SCRIPT = 'echo "start $(date +%s%N)" >> "$RUNQUEUE_RUN_DIR/../stamps.$(basename "$RUNQUEUE_RUN_DIR")"\nsleep 0.05\necho "end $(date +%s%N)" >> "$RUNQUEUE_RUN_DIR/../stamps.$(basename "$RUNQUEUE_RUN_DIR")"\n'


def _gaps(stamp_files: list[Path]) -> list[float]:
    events = []
    for path in stamp_files:
        record = dict(line.split() for line in path.read_text().splitlines())
        events.append((int(record["start"]), int(record["end"])))
    events.sort()
    return [(nxt[0] - prev[1]) / 1e6 for prev, nxt in itertools.pairwise(events)]


def bench_dispatch(work: Path, runs: int = 11) -> None:
    root = work / "dispatch"
    made = make_runs(root, runs, STAMP_SCRIPT)
    result = _queue(queue_env(work), "run", root, "--simulate-gpus", _sim(work, 1), "--quiet")
    assert result.returncode == 0, result.stdout + result.stderr
    ours = _gaps(sorted(run.parent / f"stamps.{run.name}" for run in made))

    # Baseline: the classic loop that looks once a second whether the running job has ended.
    base_root = work / "dispatch-base"
    base_runs = make_runs(base_root, runs, STAMP_SCRIPT)
    pending, running = list(base_runs), None
    while pending or running is not None:
        if running is not None and running.poll() is not None:
            running = None
        if running is None and pending:
            run = pending.pop(0)
            running = subprocess.Popen(["bash", "lfads_train.sh"], cwd=run, env={**os.environ, "RUNQUEUE_RUN_DIR": str(run)})
        time.sleep(1.0)
    base = _gaps(sorted(run.parent / f"stamps.{run.name}" for run in base_runs))
    ours_median, base_median = statistics.median(ours), statistics.median(base)
    print(f"dispatch latency: median {ours_median:.1f} ms (max {max(ours):.1f}) over {len(ours)} hand-overs;"
          f" 1 s polling loop {base_median:.0f} ms; ratio {ours_median / base_median:.3f}"
          f" [target <= 50 ms: {'met' if ours_median <= 50 else 'NOT met'}]")


# ------------------------------------------------------------------------------------------ throughput
def bench_throughput(work: Path, runs: int = 200, gpus: int = 4) -> None:
    root = work / "throughput"
    make_runs(root, runs, "true\n")
    start = time.perf_counter()
    result = _queue(queue_env(work), "run", root, "--simulate-gpus", _sim(work, gpus), "--quiet")
    ours = time.perf_counter() - start
    assert result.returncode == 0, result.stdout + result.stderr
    assert sum(1 for _ in root.glob("coll/*/*/lfads.done")) == runs

    # Baseline: the same scripts through a bare pool of `gpus` processes (no markers, no logs).
    base_root = work / "throughput-base"
    base_runs = make_runs(base_root, runs, "true\n")
    start = time.perf_counter()
    pending = list(base_runs)
    running: list[subprocess.Popen[bytes]] = []
    while pending or running:
        while pending and len(running) < gpus:
            running.append(subprocess.Popen(["bash", "lfads_train.sh"], cwd=pending.pop(0)))
        running[0].wait()
        running = [process for process in running if process.poll() is None]
    base = time.perf_counter() - start
    print(f"throughput: {runs / ours:.1f} runs/s ({runs} trivial runs, {gpus} simulated GPUs, {ours:.2f} s including"
          f" queue start-up); bare {gpus}-process pool {runs / base:.1f} runs/s; ratio {ours / base:.2f}x the pool's time"
          f" [target >= 50 runs/s: {'met' if runs / ours >= 50 else 'NOT met'}]")


# ------------------------------------------------------------------------------------------ rescan + idle
def _naive_scan(root: Path) -> int:
    found = 0
    for directory, _dirs, files in os.walk(root):
        if "lfads_train.sh" in files:
            found += 1
            os.path.exists(os.path.join(directory, "lfads.done"))
            os.path.exists(os.path.join(directory, "lfads.failed"))
    return found


def _proc_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _proc_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def bench_rescan(work: Path, runs: int = 10_000, idle_s: float = 120.0) -> None:
    root = work / "rescan"
    for index in range(runs):
        run = root / f"coll{index // 2500}" / f"param_{index // 4:05d}" / f"spec{index % 4}"
        (run / "lfadsInput").mkdir(parents=True)
        (run / "lfadsOutput").mkdir()
        (run / "lfads_train.sh").write_text("true\n")
        (run / "lfads.done" if index % 3 else run / "lfads.failed").write_text("{}")
    old = time.time() - 60  # as on a real tree: nothing changed in the last seconds
    for directory, _dirs, _files in os.walk(root):
        os.utime(directory, (old, old))

    def best_of(function, repeats: int = 5) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            function()
            times.append(time.perf_counter() - start)
        return min(times) * 1000

    scanner = RunScanner([root])
    full = best_of(lambda: scanner.scan(full=True))
    cycle = []  # one whole rolling refresh: each periodic rescan lists another share again
    for _ in range(REFRESH_SHARES):
        start = time.perf_counter()
        scanner.scan()
        cycle.append((time.perf_counter() - start) * 1000)
    incremental, slowest = statistics.median(cycle), max(cycle)
    naive = best_of(lambda: _naive_scan(root))
    assert len(scanner.scan()) == runs and _naive_scan(root) == runs
    print(f"rescan of {runs} runs: {incremental:.1f} ms median, {slowest:.1f} ms slowest of the {REFRESH_SHARES} periodic"
          f" rescans of one cycle (mtime hint plus a rolling 1/{REFRESH_SHARES} listed again), {full:.1f} ms (full pass: queue start-up,"
          f" status); naive os.walk + 2 exists per run {naive:.1f} ms; ratios {incremental / naive:.2f} / {full / naive:.2f}"
          f" [target <= 100 ms: {'met' if slowest <= 100 else 'NOT met'} by every periodic rescan]")
    watcher = DirectoryWatcher.create()
    if watcher is not None:
        watched_scanner = RunScanner([root], watcher=watcher)
        watching = best_of(lambda: watched_scanner.scan(full=True), repeats=1)
        changed = next(run for run in root.glob("coll0/param_00000/spec*") if (run / "lfads.done").exists())

        def requeue_and_look() -> None:
            (changed / "lfads.done").unlink()
            watcher.read_events()
            assert any(not found.has_done and found.path == changed for found in watched_scanner.scan(hinted=True))
            (changed / "lfads.done").write_text("{}")
            watcher.read_events()
            watched_scanner.scan(hinted=True)

        hinted = best_of(requeue_and_look) / 2
        print(f"inotify-hinted rescan of {runs} runs after one requeue: {hinted:.1f} ms; first full pass setting up"
              f" {watcher.watched} watches {watching:.0f} ms; ratio to the mtime rescan {hinted / incremental:.2f}")
        watcher.close()

    # A queue watching that tree with nothing to do (every run done or failed).
    env = queue_env(work)
    queue = subprocess.Popen(
        [sys.executable, "-m", "runqueue", "run", "--watch", str(root), "--simulate-gpus", str(_sim(work, 2)), "--quiet"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(3.0)  # start-up and first scan; the window below spans many rescans
        cpu0, wall0 = _proc_cpu_s(queue.pid), time.monotonic()
        time.sleep(idle_s)
        cpu = (_proc_cpu_s(queue.pid) - cpu0) / (time.monotonic() - wall0) * 100
        rss = _proc_rss_mb(queue.pid)
    finally:
        queue.terminate()
        queue.wait()
    # Baseline: a loop that rescans naively every second (what a simple poller does).
    cpu_start, wall_start = time.process_time(), time.monotonic()
    while time.monotonic() - wall_start < 5.0:
        _naive_scan(root)
        time.sleep(1.0)
    base_cpu = (time.process_time() - cpu_start) / (time.monotonic() - wall_start) * 100
    print(f"idle watching queue over {runs} runs: CPU {cpu:.2f} % over {idle_s:g} s, RSS {rss:.0f} MB;"
          f" naive 1 s polling loop CPU {base_cpu:.2f} %; ratio {cpu / base_cpu if base_cpu else float('nan'):.2f}"
          f" [targets <= 1 %, <= 80 MB: {'met' if cpu <= 1 and rss <= 80 else 'NOT met'}]")


# ------------------------------------------------------------------------------------------ 1 GB output
GIGABYTE_SCRIPT = """began=$(date +%s%N)
yes 'lfads step 000123: loss 1.2345 kl 0.0123 l2 0.0042 learning rate 0.01' | head -c 1000000000
echo $(( $(date +%s%N) - began )) > "$ELAPSED_FILE"
"""


def bench_output(work: Path, rounds: int = 7) -> None:
    root = work / "output"
    run = make_runs(root, 1, GIGABYTE_SCRIPT)[0]
    base_dir = work / "output-base"
    base_dir.mkdir()
    (base_dir / "lfads_train.sh").write_text(GIGABYTE_SCRIPT)
    elapsed_file = work / "elapsed"
    env = {**queue_env(work), "ELAPSED_FILE": str(elapsed_file)}
    header = "#" * 100  # replaced by the queue's own header once a queued round has written one
    times: dict[str, list[float]] = {"base": [], "ours": [], "base_script": [], "ours_script": [], "header_script": []}

    def script_seconds() -> float:
        return int(elapsed_file.read_text()) / 1e9

    # Interleaved rounds, best of each: the page cache and the other users of the disk and the
    # cores disturb single measurements by more than the difference being measured.
    for _ in range(rounds):
        start = time.perf_counter()
        subprocess.run(["bash", "-c", "bash lfads_train.sh > lfads.out"], cwd=base_dir, env=env, check=True)
        times["base"].append(time.perf_counter() - start)
        times["base_script"].append(script_seconds())
        (base_dir / "lfads.out").unlink()

        start = time.perf_counter()
        result = _queue(env, "run", root, "--simulate-gpus", _sim(work, 1))
        times["ours"].append(time.perf_counter() - start)
        times["ours_script"].append(script_seconds())
        assert result.returncode == 0, result.stdout + result.stderr
        assert (run / "lfads.out").stat().st_size >= 1_000_000_000
        with open(run / "lfads.out", "rb") as log:
            header = log.readline().decode().rstrip("\n")
        for name in ("lfads.out", "lfads.done"):
            (run / name).unlink()

        # Where the difference comes from: the same script appending after a line as long as the
        # queue's header, so its writes start off a page boundary as they do under the queue.
        (base_dir / "lfads.out").write_text(header + "\n")
        subprocess.run(["bash", "-c", "bash lfads_train.sh >> lfads.out"], cwd=base_dir, env=env, check=True)
        times["header_script"].append(script_seconds())
        (base_dir / "lfads.out").unlink()
    best = {name: min(values) for name, values in times.items()}
    # Each round's queued run against the plain run just before it: slow drifts of a shared
    # machine (another job, the page cache filling) cancel in these paired ratios.
    paired = statistics.median(ours / base for ours, base in zip(times["ours_script"], times["base_script"], strict=True))
    best_ratio = best["ours_script"] / best["base_script"]
    # Met only when both views agree: on a shared 2-core machine one can straddle the line.
    verdict = "met" if paired <= 1.10 and best_ratio <= 1.10 else "met by the paired median only" if paired <= 1.10 else "NOT met"
    print(f"1 GB of output: the script runs {best['ours_script']:.2f} s under the queue (console echo on) vs"
          f" {best['base_script']:.2f} s writing the file itself (best of {rounds}), ratio {best_ratio:.3f};"
          f" median of the {rounds} paired rounds {paired:.3f} [target <= 1.10: {verdict}];"
          f" end to end incl. the queue's start-up and finish {best['ours']:.2f} s vs {best['base']:.2f} s,"
          f" ratio {best['ours'] / best['base']:.3f}")
    print(f"  the same script appending after a {len(header) + 1}-byte header line (its writes no longer"
          f" page-aligned) takes {best['header_script']:.2f} s: ratio {best['header_script'] / best['base_script']:.3f}"
          f" of the plain file; the queue against it {best['ours_script'] / best['header_script']:.3f}")


# ------------------------------------------------------------------------------------------ requeue
def _requeue_latencies(work: Path, label: str, extra_env: dict[str, str], times: int) -> list[float]:
    """Seconds from deleting lfads.done to the run's script starting, `times` requeues in a row."""
    root = work / f"requeue-{label}"
    (run,) = make_runs(root, 1, 'date +%s.%N >> "$RUNQUEUE_RUN_DIR/../starts"\n')
    starts = run.parent / "starts"
    queue = subprocess.Popen(
        [sys.executable, "-m", "runqueue", "run", "--watch", str(root), "--simulate-gpus", str(_sim(work, 1)), "--quiet"],
        env={**queue_env(work), **extra_env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    latencies = []
    try:
        for attempt in range(times + 1):
            while not (run / "lfads.done").exists() or _line_count(starts) <= attempt:
                time.sleep(0.01)
            if attempt == times:
                break
            time.sleep(0.5)
            removed = time.time()
            (run / "lfads.done").unlink()
            while _line_count(starts) <= attempt + 1:
                time.sleep(0.005)
            latencies.append(float(starts.read_text().split()[-1]) - removed)
    finally:
        queue.terminate()
        queue.wait()
    return latencies


def _line_count(path: Path) -> int:
    try:
        return len(path.read_text().split())
    except FileNotFoundError:
        return 0


def bench_requeue(work: Path, times: int = 6) -> None:
    if DirectoryWatcher.create() is None:
        print("requeue: skipped, inotify is not available here")
        return
    hinted = statistics.median(_requeue_latencies(work, "inotify", {}, times))
    polled = statistics.median(_requeue_latencies(work, "poll", {"RUNQUEUE_NO_INOTIFY": "1"}, times))
    print(f"requeue pickup (delete lfads.done -> the run starts again): {hinted * 1000:.0f} ms median with the inotify"
          f" hint vs {polled * 1000:.0f} ms polling alone (--poll-interval 5s); ratio {hinted / polled:.3f}")


# ------------------------------------------------------------------------------------------ real NVML
def _median_ms(read: Callable[[], object], times: int = 200) -> float:
    samples = []
    for _ in range(times):
        start = time.perf_counter()
        read()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def bench_nvml(work: Path, runs: int = 11) -> None:
    nvml = NvmlInventory()
    reading = nvml.read()
    if not reading.status.startswith("nvml:") or not reading.devices:
        print(f"nvml: skipped, {reading.status}")
        return
    simulated = SimulatedInventory(_sim(work, len(reading.devices)))
    nvml_ms, sim_ms = _median_ms(nvml.read), _median_ms(simulated.read)
    print(f"nvml: one inventory reading {nvml_ms:.2f} ms median ({reading.status}); simulated file {sim_ms:.2f} ms;"
          f" ratio {nvml_ms / sim_ms:.1f}")
    latencies = {}
    for label, inventory_args in (("real GPU", ["--gpus", reading.devices[0].uuid]), ("simulated", ["--simulate-gpus", str(_sim(work, 1))])):
        root = work / f"nvml-{label.replace(' ', '-')}"
        made = make_runs(root, runs, STAMP_SCRIPT)
        result = _queue(queue_env(work), "run", root, *inventory_args, "--foreign", "share", "--memory-per-run", "100", "--quiet")
        assert result.returncode == 0, result.stdout + result.stderr
        latencies[label] = statistics.median(_gaps(sorted(run.parent / f"stamps.{run.name}" for run in made)))
    print(f"nvml: dispatch latency on the real GPU {latencies['real GPU']:.1f} ms median vs simulated"
          f" {latencies['simulated']:.1f} ms; ratio {latencies['real GPU'] / latencies['simulated']:.2f}"
          f" [target <= 50 ms: {'met' if latencies['real GPU'] <= 50 else 'NOT met'}]")


BENCHES = {"dispatch": bench_dispatch, "throughput": bench_throughput, "rescan": bench_rescan, "output": bench_output, "requeue": bench_requeue, "nvml": bench_nvml}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(BENCHES), help="comma-separated subset of " + ",".join(BENCHES))
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="runqueue-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        for name in args.only.split(","):
            BENCHES[name](work)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
