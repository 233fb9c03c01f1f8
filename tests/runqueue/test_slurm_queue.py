"""`runqueue run --executor slurm` on a real single-node SLURM (4 fake GPUs), started by the test setup.

Every run is one sbatch job per attempt whose payload is the run's supervisor; the tests look
only at what users see: markers, lfads.out, the console, `runqueue status`, SLURM's job list.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

from runqueue_testkit import finish, make_run, read_json, run_queue, start_queue, step_headers, wait_for
from slurm_testkit import SlurmCluster, slurm_cluster, slurm_env, submitted_job, wait_until_released

__all__ = ["slurm_cluster", "slurm_env"]  # fixtures used by name

SLURM = ("--executor", "slurm")

# Counts the runs executing at once (and the peak), records what each saw from SLURM, and notes
# a GPU handed to two jobs at the same time.
BEGIN = """exec 9>>"{s}/lock"; flock 9
n=$(( $(cat "{s}/count" 2>/dev/null || echo 0) + 1 )); echo $n > "{s}/count"
[ "$n" -gt "$(cat "{s}/peak" 2>/dev/null || echo 0)" ] && echo $n > "{s}/peak"
[ -e "{s}/busy.$CUDA_VISIBLE_DEVICES" ] && echo "$RUNQUEUE_RUN_DIR shares GPU $CUDA_VISIBLE_DEVICES" >> "{s}/errors"
touch "{s}/busy.$CUDA_VISIBLE_DEVICES"
echo "$(basename $RUNQUEUE_RUN_DIR) $CUDA_VISIBLE_DEVICES $SLURM_JOB_GPUS $SLURM_JOB_ID $RUNQUEUE_ATTEMPT" >> "{s}/seen"
flock -u 9
"""
END = """flock 9; rm -f "{s}/busy.$CUDA_VISIBLE_DEVICES"; echo $(( $(cat "{s}/count") - 1 )) > "{s}/count"; flock -u 9
"""
# Holds its GPU until four runs have been executing at once (or 60 s have passed).
UNTIL_FOUR = """for i in $(seq 600); do [ "$(cat "{s}/peak")" -ge 4 ] && break; sleep 0.1; done
"""


def _names_gpu(device: str, visible: str) -> bool:
    """The header/state names the job's GPUs by SLURM's index, or by UUID where NVML on the node
    resolves the index (a test machine with real GPUs under the fake ones)."""
    count = len(visible.split(","))
    uuids = device.split()[0].split(",")
    if device.split()[0] == visible:
        return device in (visible, f"{visible} (SLURM GPU {visible})")
    return len(uuids) == count and all(uuid.startswith("GPU-") for uuid in uuids)


def _seen(state: Path) -> dict[str, list[list[str]]]:
    seen: dict[str, list[list[str]]] = {}
    for line in (state / "seen").read_text().splitlines():
        name, *rest = line.split()
        seen.setdefault(name, []).append(rest)
    return seen


def test_slurm_runs_execute_as_jobs_retry_fail_and_respect_time_limits(tmp_path: Path, slurm_env: dict[str, str], slurm_cluster: SlurmCluster) -> None:
    state = tmp_path / "state"
    state.mkdir()
    runs = tmp_path / "runs"
    gpu_runs = [
        make_run(runs, f"c/param_A/g{index}", BEGIN.format(s=state) + UNTIL_FOUR.format(s=state) + END.format(s=state), posterior="echo posterior\n")
        for index in range(5)
    ]
    failing = make_run(runs, "c/param_B/fail", BEGIN.format(s=state) + END.format(s=state) + "echo doomed; exit 3\n")
    slow = make_run(runs, "c/param_C/slow", "echo $CUDA_VISIBLE_DEVICES > cvd; sleep 60\n", resources={"time_limit": "2s"})

    result = run_queue(slurm_env, "run", runs, *SLURM, "--retries", "1", "--retry-backoff", "0.5", "--kill-grace", "1")

    console = result.stdout
    assert result.returncode == 1, console + result.stderr
    assert "summary: 7 run(s): 5 done, 2 failed" in console
    seen = _seen(state)
    for run in gpu_runs:
        assert (run / "lfads.done").exists()
        (cvd, job_gpus, job_id, _attempt), = seen[run.name]
        assert cvd == job_gpus and cvd in {"0", "1", "2", "3"}  # the GPU slurmd gave this job
        headers = step_headers((run / "lfads.out").read_text())
        assert [h.split(" step=")[1].split()[0] for h in headers] == ["lfads_train.sh", "lfads_posterior_mean_sample.sh"]
        assert all(_names_gpu(h.split(" device=")[1], cvd) for h in headers), headers
        assert f"supervising {run}" in (run / f".runqueue/slurm-{job_id}.out").read_text()
        assert f"[{run.parent.name}/{run.name}] submitted as SLURM job {job_id}, attempt 1/2" in console
    # SLURM ran four one-GPU jobs at once on its four GPUs, never more, never two on one GPU.
    assert (state / "peak").read_text().strip() == "4"
    assert not (state / "errors").exists(), (state / "errors").read_text()

    # A failing step: retried once (as a new job), then lfads.failed.
    failure = read_json(failing / "lfads.failed")
    assert (failure["reason"], failure["exit_code"], failure["attempt"], failure["step"]) == ("exit_status", 3, 2, "lfads_train.sh")
    attempts = seen["fail"]
    assert [attempt for *_, attempt in attempts] == ["1", "2"] and attempts[0][2] != attempts[1][2]
    assert [h.split(" attempt=")[1].split()[0] for h in step_headers((failing / "lfads.out").read_text())] == ["1/2", "2/2"]

    # The run's 2 s limit is the supervisor's; SLURM got that plus a margin, in whole minutes.
    failure = read_json(slow / "lfads.failed")
    assert (failure["reason"], failure["attempt"]) == ("time_limit", 2)
    assert "TimeLimit=00:01:00" in slurm_cluster.show_job(submitted_job(slow) or 0)
    assert slurm_cluster.jobs_under(tmp_path, active_only=True) == {}


def test_slurm_two_queues_submit_each_run_exactly_once(tmp_path: Path, slurm_env: dict[str, str], slurm_cluster: SlurmCluster) -> None:
    record = tmp_path / "record"
    runs = [
        make_run(tmp_path / "runs", f"c/param_E/r{index}", f'flock "{record}" -c "echo $RUNQUEUE_RUN_DIR $SLURM_JOB_ID >> {record}"\nsleep 0.3\n')
        for index in range(8)
    ]
    queues = [start_queue(slurm_env, "run", tmp_path / "runs", *SLURM, "--quiet", log=tmp_path / f"q{n}.log") for n in range(2)]
    codes = [finish(queue) for queue in queues]
    logs = [(tmp_path / f"q{n}.log").read_text() for n in range(2)]
    assert codes == [0, 0], logs
    lines = record.read_text().splitlines()
    assert sorted(line.split()[0] for line in lines) == sorted(str(run) for run in runs)  # each run ran once
    jobs = slurm_cluster.jobs_under(tmp_path / "runs")
    assert sorted(workdir for _state, workdir in jobs.values()) == sorted(str(run) for run in runs)  # each submitted once
    for run in runs:
        assert len(step_headers((run / "lfads.out").read_text())) == 1
    assert all("summary: 8 run(s): 8 done" in log for log in logs)
    assert sum(log.count("submitted as SLURM job") for log in logs) == 8


def test_slurm_sigkilled_queue_restarts_and_waits_for_its_jobs(tmp_path: Path, slurm_env: dict[str, str], slurm_cluster: SlurmCluster) -> None:
    release, started = tmp_path / "release", tmp_path / "started"
    holder = make_run(tmp_path / "runs", "c/param_K/a", wait_until_released(release, started))
    waiting = make_run(tmp_path / "runs", "c/param_K/b", "echo second\n")
    options = (*SLURM, "--slurm-gpus", "4")  # each job takes every GPU: b waits in SLURM while a runs
    first = start_queue(slurm_env, "run", tmp_path / "runs", *options, log=tmp_path / "q1.log")
    wait_for(started.exists, what="run a to start in its job")
    wait_for(lambda: submitted_job(waiting) is not None, what="run b to be submitted")
    first.send_signal(signal.SIGKILL)
    first.wait()
    jobs = {run.name: submitted_job(run) for run in (holder, waiting)}

    status = json.loads(run_queue(slurm_env, "status", tmp_path / "runs", "--json").stdout)
    rows = {row["name"]: row for row in status["runs"]}
    assert rows["param_K/a"]["state"] == "running" and _names_gpu(rows["param_K/a"]["device"], "0,1,2,3")
    assert rows["param_K/a"]["reason"] == f"SLURM job {jobs['a']}: RUNNING (on {slurm_cluster.show_job(jobs['a'] or 0).split('BatchHost=')[1].split()[0]})"
    assert rows["param_K/b"]["state"] == "pending"
    # "(Resources)" or "(Priority)" once slurmctld's scheduler has looked at the job; bare before that.
    assert re.fullmatch(rf"SLURM job {jobs['b']}: PENDING( \(\w+\))?", rows["param_K/b"]["reason"]), rows["param_K/b"]

    second = start_queue(slurm_env, "run", tmp_path / "runs", *options, log=tmp_path / "q2.log")
    wait_for(lambda: (tmp_path / "q2.log").read_text().count("re-adopted") == 2, what="both jobs re-adopted")
    release.touch()
    assert finish(second) == 0, (tmp_path / "q2.log").read_text()
    console = (tmp_path / "q2.log").read_text()
    assert f"[param_K/a] re-adopted (SLURM job {jobs['a']})" in console
    assert f"[param_K/b] re-adopted (SLURM job {jobs['b']})" in console
    assert "runqueue: 1 running, 1 queued, 0 pending" in console  # a's job had started, b's had not
    assert "[param_K/a] released" in console  # the adopted run's output is followed
    assert "submitted as" not in console  # nothing submitted a second time
    for run in (holder, waiting):
        assert (run / "lfads.done").exists()
        assert len(step_headers((run / "lfads.out").read_text())) == 1
    assert len(slurm_cluster.jobs_under(tmp_path / "runs")) == 2


def test_a_local_queue_leaves_a_run_pending_in_slurm_to_its_job(tmp_path: Path, slurm_env: dict[str, str], slurm_cluster: SlurmCluster) -> None:
    release, started = tmp_path / "release", tmp_path / "started"
    holder = make_run(tmp_path / "runs", "c/param_L/a", wait_until_released(release, started))
    waiting = make_run(tmp_path / "runs", "c/param_L/b", 'echo "b ran in job ${SLURM_JOB_ID:-none}"\n')
    slurm_queue = start_queue(slurm_env, "run", tmp_path / "runs", *SLURM, "--slurm-gpus", "4", log=tmp_path / "slurm.log")
    wait_for(started.exists, what="run a to start in its job")
    wait_for(lambda: submitted_job(waiting) is not None, what="run b to be submitted (it waits in SLURM)")
    job = submitted_job(waiting)
    # A local queue on the same tree (a workstation's, say) must not run b behind its SLURM job's back.
    local = start_queue(slurm_env, "run", tmp_path / "runs", "--gpus", "none", "--cpu-slots", "2", log=tmp_path / "local.log")
    wait_for(lambda: f"[param_L/b] is handed to SLURM job {job} by a SLURM queue" in (tmp_path / "local.log").read_text(),
             what="the local queue to leave b to SLURM")
    time.sleep(2.0)  # a few placement turns: b must still be untouched
    assert not (waiting / "lfads.out").exists()
    release.touch()
    assert finish(slurm_queue) == 0, (tmp_path / "slurm.log").read_text()
    assert finish(local) == 0, (tmp_path / "local.log").read_text()
    log = (waiting / "lfads.out").read_text()
    assert f"b ran in job {job}" in log and len(step_headers(log)) == 1
    assert len(step_headers((holder / "lfads.out").read_text())) == 1
    local_console = (tmp_path / "local.log").read_text()
    assert "started on" not in local_console and "summary: 2 run(s): 2 done" in local_console


def test_status_says_slurm_takes_the_pending_runs_of_a_tree_a_slurm_queue_runs(tmp_path: Path, slurm_env: dict[str, str], slurm_cluster: SlurmCluster) -> None:
    release, started = tmp_path / "release", tmp_path / "started"
    make_run(tmp_path / "runs", "c/param_T/a", wait_until_released(release, started))
    make_run(tmp_path / "runs", "c/param_T/b")
    queue = start_queue(slurm_env, "run", tmp_path / "runs", *SLURM, "--max-submitted", "1", log=tmp_path / "q.log")
    try:
        wait_for(started.exists, what="run a to start in its job")
        status = run_queue(slurm_env, "status", "--json", tmp_path / "runs")
        rows = {row["name"]: row for row in json.loads(status.stdout)["runs"]}
        # Not "ready: fits cpu-0": this machine's devices do not run it, SLURM does once a job slot frees.
        assert rows["param_T/b"]["reason"] == f"to be submitted to SLURM by the queue running as pid {queue.pid}", rows
        assert f"note: a SLURM queue (pid {queue.pid}) runs over these roots" in status.stderr
    finally:
        release.touch()
        assert finish(queue) == 0, (tmp_path / "q.log").read_text()


def test_slurm_cancel_and_scancel_behind_our_back_are_recorded(tmp_path: Path, slurm_env: dict[str, str], slurm_cluster: SlurmCluster) -> None:
    runs = tmp_path / "runs"
    forever = "touch started\nwhile :; do sleep 0.1; done\n"
    cancelled, scancelled, never = (make_run(runs, f"c/param_X/{name}", forever) for name in ("a", "b", "c"))
    queue = start_queue(slurm_env, "run", runs, *SLURM, "--slurm-gpus", "2", "--kill-grace", "1", log=tmp_path / "q.log")
    wait_for(lambda: (cancelled / "started").exists() and (scancelled / "started").exists(), what="two jobs running")
    wait_for(lambda: submitted_job(never) is not None, what="the third job submitted")

    result = run_queue(slurm_env, "cancel", cancelled)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{cancelled}: cancelled (SLURM job {submitted_job(cancelled)}: its supervisor stopped the run)"

    subprocess.run(["scancel", str(submitted_job(scancelled))], check=True)  # behind the queue's back

    # The third job may have started on the freed GPUs meanwhile; either way it ends cancelled.
    result = run_queue(slurm_env, "cancel", never)
    assert result.returncode == 0 and f"SLURM job {submitted_job(never)}" in result.stdout, result.stdout + result.stderr

    assert finish(queue) == 1, (tmp_path / "q.log").read_text()
    first = read_json(cancelled / "lfads.failed")
    assert (first["reason"], first["message"]) == ("cancelled", "cancelled with `runqueue cancel`")
    second = read_json(scancelled / "lfads.failed")
    assert second["reason"] == "cancelled"
    assert "cancelled outside runqueue" in second["message"] and f"SLURM job {submitted_job(scancelled)} ended CANCELLED" in second["message"]
    last = (scancelled / "lfads.out").read_text().splitlines()[-1]  # not "it goes again": it does not
    assert last.startswith("### runqueue") and "failed (cancelled)" in last and last.count("runqueue requeue") == 1
    assert "it does not go again by itself, whatever a line above says" in last
    assert read_json(never / "lfads.failed")["reason"] == "cancelled"
    console = (tmp_path / "q.log").read_text()
    assert "summary: 3 run(s): 0 done, 3 failed" in console
    assert "[param_X/b] failed (cancelled)" in console
    assert slurm_cluster.jobs_under(tmp_path, active_only=True) == {}


def test_slurm_cancel_that_has_to_scancel_a_running_job_ends_its_log_with_the_cancel(tmp_path: Path, slurm_env: dict[str, str], slurm_cluster: SlurmCluster) -> None:
    """`runqueue cancel` looks at the job before it signals the supervisor; a job that started after
    that look is scancelled instead, and its supervisor gets SLURM's SIGTERM. Here squeue, as the
    cancel finds it on PATH, still says PENDING for the running job. The cancel is on record, so the
    supervisor must not call it an interruption ("it goes again"), and lfads.out's last line must be
    the cancel, as lfads.failed says (it was the supervisor's "interrupted" line, written last)."""
    tools = tmp_path / "bin"
    tools.mkdir()
    real = subprocess.run(["which", "squeue"], capture_output=True, text=True, check=True).stdout.strip()
    (tools / "squeue").write_text(f'#!/bin/bash\nset -o pipefail\n{real} "$@" | sed "s/|RUNNING|/|PENDING|/"\n')
    (tools / "squeue").chmod(0o755)
    # The step ignores SIGTERM: the supervisor's last lines come a kill grace (2 s) after scancel.
    run = make_run(tmp_path / "runs", "c/param_Y/a", 'trap "" TERM\ntouch started\nwhile :; do sleep 0.1; done\n')
    queue = start_queue(slurm_env, "run", tmp_path / "runs", *SLURM, "--kill-grace", "2", log=tmp_path / "q.log")
    try:
        wait_for((run / "started").exists, what="the run to start in its job")
        job = submitted_job(run)
        result = run_queue(dict(slurm_env, PATH=f"{tools}:{slurm_env['PATH']}"), "cancel", run)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"SLURM job {job}" in result.stdout
        assert finish(queue) == 1, (tmp_path / "q.log").read_text()
    finally:
        if queue.poll() is None:
            queue.kill()
    assert read_json(run / "lfads.failed")["reason"] == "cancelled"
    log = (run / "lfads.out").read_text()
    last = log.splitlines()[-1]
    assert last.startswith("### runqueue") and "cancelled" in last, log
    assert "goes again" not in log, log
    assert read_json(run / ".runqueue/state.json")["phase"] == "cancelled"
    assert slurm_cluster.jobs_under(tmp_path, active_only=True) == {}


def test_a_local_queue_stopping_next_to_a_slurm_job_says_it_does_not_wait_for_it(tmp_path: Path, slurm_env: dict[str, str], slurm_cluster: SlurmCluster) -> None:
    """A local queue's status line counts a run a SLURM job holds as running; on Ctrl-C it neither
    waits for that run nor stops it, and its stop line must say so (it said "waiting for 0 running
    run(s). Press Ctrl-C again to stop them too", then left at once)."""
    release, started = tmp_path / "release", tmp_path / "started"
    make_run(tmp_path / "runs", "c/param_Z/a", wait_until_released(release, started))
    slurm_queue = start_queue(slurm_env, "run", tmp_path / "runs", *SLURM, log=tmp_path / "slurm.log")
    local: subprocess.Popen[bytes] | None = None
    try:
        wait_for(started.exists, what="the run to start in its job")
        local = start_queue(slurm_env, "run", tmp_path / "runs", "--gpus", "none", "--cpu-slots", "1", log=tmp_path / "local.log")
        wait_for(lambda: "runqueue: 1 running" in (tmp_path / "local.log").read_text(), what="the local queue to see the run running")
        local.send_signal(signal.SIGINT)
        assert finish(local, timeout=30) == 130, (tmp_path / "local.log").read_text()
        release.touch()
        assert finish(slurm_queue) == 0, (tmp_path / "slurm.log").read_text()
    finally:
        release.touch()
        for queue in (slurm_queue, local):
            if queue is not None and queue.poll() is None:
                queue.kill()
    console = (tmp_path / "local.log").read_text()
    assert "waiting for 0" not in console and "Press Ctrl-C again" not in console, console
    assert ("stopping: no new runs start; leaving now: the 1 running run(s) are another queue's, a SLURM job's, or"
            " steps that outlived their supervisor; this queue neither waits for nor stops them") in console, console


def test_slurm_ctrl_c_keeps_jobs_then_second_ctrl_c_scancels_them_as_interrupted(tmp_path: Path, slurm_env: dict[str, str], slurm_cluster: SlurmCluster) -> None:
    release, started = tmp_path / "release", tmp_path / "started"
    running = make_run(tmp_path / "runs", "c/param_S/a", "echo first\n", posterior=wait_until_released(release, started))
    queued = make_run(tmp_path / "runs", "c/param_S/b", "echo never\n")
    queue = start_queue(slurm_env, "run", tmp_path / "runs", *SLURM, "--slurm-gpus", "4", "--kill-grace", "1", log=tmp_path / "q.log")
    wait_for(started.exists, what="run a's posterior step")
    wait_for(lambda: submitted_job(queued) is not None, what="run b submitted")
    queue.send_signal(signal.SIGINT)
    wait_for(lambda: "keep running in SLURM" in (tmp_path / "q.log").read_text(), what="the first stop message")
    assert len(slurm_cluster.jobs_under(tmp_path, active_only=True)) == 2  # nothing was cancelled
    queue.send_signal(signal.SIGINT)
    assert finish(queue) == 130, (tmp_path / "q.log").read_text()
    assert slurm_cluster.jobs_under(tmp_path, active_only=True) == {}
    for run in (running, queued):
        assert not (run / "lfads.failed").exists() and not (run / "lfads.done").exists()
    state = read_json(running / ".runqueue/state.json")
    assert (state["phase"], state["resume_step"], state["attempt"]) == ("interrupted", "lfads_posterior_mean_sample.sh", 1)
    assert read_json(queued / ".runqueue/slurm.json")["settled"] is True  # dropped from SLURM, pending here

    # Next time both go again; a resumes at the step it was in.
    release.touch()
    result = run_queue(slurm_env, "run", tmp_path / "runs", *SLURM)
    assert result.returncode == 0, result.stdout + result.stderr
    headers = [h.split(" step=")[1].split()[0] for h in step_headers((running / "lfads.out").read_text())]
    assert headers == ["lfads_train.sh", "lfads_posterior_mean_sample.sh", "lfads_posterior_mean_sample.sh"]
    assert (queued / "lfads.done").exists()


def test_slurm_job_unknown_to_slurm_is_recorded_and_run_again(tmp_path: Path, slurm_env: dict[str, str], slurm_cluster: SlurmCluster) -> None:
    """A job that vanished (node crash, the cluster's state wiped) while its supervisor ran: not lost."""
    run = make_run(tmp_path / "runs", "c/param_L/lost", "echo ran\n")
    runtime = run / ".runqueue"
    runtime.mkdir()
    # What such a run folder holds: a submission, a job that started, a supervisor that never returned.
    (runtime / "slurm.json").write_text(json.dumps({"token": "feedfeedfeedfeed", "job_id": 987654, "queue_id": "gone:1", "submitted_at": 0}))
    (runtime / "slurm-job.json").write_text(json.dumps({"job_id": 987654, "token": "feedfeedfeedfeed", "host": "node9", "started_at": 0,
                                                        "device_uuid": "2", "device_name": "SLURM GPU 2", "cuda_visible_devices": "2"}))
    (runtime / "state.json").write_text(json.dumps({"phase": "running", "attempt": 1, "step": "lfads_train.sh", "resume_step": "lfads_train.sh"}))
    result = run_queue(slurm_env, "run", tmp_path / "runs", *SLURM)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[param_L/lost] re-adopted (SLURM job 987654)" in result.stdout
    assert "[param_L/lost] interrupted during lfads_train.sh; it goes again next time" in result.stdout
    assert (run / "lfads.done").exists()
    state = read_json(runtime / "state.json")
    lost = [entry for entry in state["history"] if entry["reason"] == "interrupted"]
    assert len(lost) == 1
    assert read_json(runtime / "slurm.json")["job_id"] != 987654  # a new submission ran it


def test_slurm_max_submitted_caps_jobs_in_slurm_and_cpu_jobs_see_no_gpu(tmp_path: Path, slurm_env: dict[str, str], slurm_cluster: SlurmCluster) -> None:
    runs = tmp_path / "runs"
    # Each job notes how many jobs of this test SLURM holds right now, and what GPU it was given.
    probe = f'squeue -h -t PD,R,CG,CF -o %Z | grep -c "^{runs}/" > in_slurm\necho "[$CUDA_VISIBLE_DEVICES]" > gpu\n'
    made = [make_run(runs, f"c/param_M/r{index}", probe) for index in range(3)]
    result = run_queue(slurm_env, "run", runs, *SLURM, "--max-submitted", "1", "--slurm-gpus", "0")
    assert result.returncode == 0, result.stdout + result.stderr
    for run in made:
        assert (run / "in_slurm").read_text().strip() == "1"  # never more than one of ours in SLURM
        assert (run / "gpu").read_text().strip() == "[]"  # a CPU-only job: no GPU visible
        assert "device=cpu-slurm (CPU, SLURM job" in step_headers((run / "lfads.out").read_text())[0]
    assert len(slurm_cluster.jobs_under(runs)) == 3


def test_slurm_refused_submission_blocks_the_run_with_slurms_reason(tmp_path: Path, slurm_env: dict[str, str], slurm_cluster: SlurmCluster) -> None:
    run = make_run(tmp_path / "runs", "c/param_P/r", "echo never\n")
    result = run_queue(slurm_env, "run", tmp_path / "runs", *SLURM, "--slurm-partition", "nosuch")
    assert result.returncode == 1, result.stdout + result.stderr
    # sbatch's lines up to its last: the reason before the generic failure, as a submit limit names itself.
    assert "[param_P/r] could not start: SLURM refused the job: sbatch failed: sbatch: error: invalid partition specified:" \
           " nosuch; sbatch: error: Batch job submission failed: Invalid partition name specified" in result.stdout
    assert "blocked param_P/r: SLURM refused the job" in result.stdout
    assert "asked for --slurm-gpus 1, --slurm-partition nosuch: check them against `sinfo`" in result.stdout  # what to change
    assert not (run / ".runqueue" / "slurm.json").exists() and not (run / "lfads.out").exists()
    assert slurm_cluster.jobs_under(tmp_path) == {}


def test_slurm_failing_squeue_is_reported_once_and_the_job_still_settles(tmp_path: Path, slurm_env: dict[str, str], slurm_cluster: SlurmCluster) -> None:
    # squeue, as the queue finds it on PATH, fails while `broken` exists (the controller unreachable).
    broken = tmp_path / "broken"
    tools = tmp_path / "bin"
    tools.mkdir()
    real = subprocess.run(["which", "squeue"], capture_output=True, text=True, check=True).stdout.strip()
    (tools / "squeue").write_text(
        f'#!/bin/bash\n[ -e "{broken}" ] && {{ echo "squeue: error: Unable to contact slurm controller (connect failure)" >&2; exit 1; }}\n'
        f'exec {real} "$@"\n'
    )
    (tools / "squeue").chmod(0o755)
    env = dict(slurm_env, PATH=f"{tools}:{slurm_env['PATH']}")
    release, started = tmp_path / "release", tmp_path / "started"
    run = make_run(tmp_path / "runs", "c/param_Q/r", wait_until_released(release, started))
    queue = start_queue(env, "run", tmp_path / "runs", *SLURM, log=tmp_path / "q.log")
    wait_for(started.exists, what="the run to start")
    broken.touch()
    wait_for(lambda: "SLURM job states may be out of date" in (tmp_path / "q.log").read_text(), what="the squeue failure")
    release.touch()
    wait_for((run / "lfads.done").exists, what="the job's supervisor to finish the run")
    time.sleep(2)  # squeue keeps failing meanwhile (asked every 0.2 s now): the queue waits, it does not guess
    assert queue.poll() is None
    broken.unlink()
    assert finish(queue) == 0
    console = (tmp_path / "q.log").read_text()
    assert console.count("SLURM job states may be out of date") == 1
    assert "Unable to contact slurm controller" in console and "squeue answers again" in console
    assert "[param_Q/r] done" in console


def test_slurm_cancel_of_a_pending_job_does_not_wait_out_scancel_retries(tmp_path: Path, slurm_env: dict[str, str], slurm_cluster: SlurmCluster) -> None:
    # More CPUs than the node has: the job stays PENDING. `scancel --batch --signal` on a pending job
    # retries for minutes; the cancel must see the job is pending and drop it at once.
    run = make_run(tmp_path / "runs", "c/param_P/a", "echo never\n")
    queue = start_queue(slurm_env, "run", tmp_path / "runs", *SLURM, "--slurm-cpus", "64", log=tmp_path / "q.log")
    try:
        wait_for(lambda: submitted_job(run) is not None, what="the job submitted")
        # SLURM accepted it but it can never start here: the queue says so rather than wait in silence.
        wait_for(lambda: "does not clear by itself" in (tmp_path / "q.log").read_text(), timeout=30,
                 what="the stuck pending reason on the console")
        result = run_queue(slurm_env, "cancel", run, timeout=30)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"SLURM job {submitted_job(run)}" in result.stdout
        assert finish(queue, timeout=60) == 1, (tmp_path / "q.log").read_text()
    finally:
        if queue.poll() is None:
            queue.kill()
    assert read_json(run / "lfads.failed")["reason"] == "cancelled"
    assert slurm_cluster.jobs_under(tmp_path, active_only=True) == {}
