"""Several queues, killed queues, signals and cancel: no run twice, none lost, none over-booked."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

from runqueue_testkit import (
    finish,
    gpu,
    kill_session,
    make_run,
    pid_alive,
    queue_command,
    queue_env,
    read_json,
    run_queue,
    start_queue,
    step_headers,
    wait_for,
    wait_until_released,
    write_gpus,
)

# Appends its run and device to a shared record; fails if its GPU already had a run of ours.
EXCLUSIVE = """exec 9>"{state}/lock"; flock 9
dev="$CUDA_VISIBLE_DEVICES"
[ -e "{state}/busy.$dev" ] && {{ echo "$RUNQUEUE_RUN_DIR over-booked $dev" >> "{state}/errors"; }}
touch "{state}/busy.$dev"; echo "$RUNQUEUE_RUN_DIR $dev" >> "{state}/record"; flock -u 9
sleep 0.1
flock 9; rm -f "{state}/busy.$dev"
"""



def test_runqueue_two_queues_on_one_tree_run_each_run_exactly_once(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    sim = write_gpus(tmp_path / "gpus.json", [gpu("GPU-x1"), gpu("GPU-x2"), gpu("GPU-x3")])
    runs = [make_run(tmp_path / "runs", f"c/param_E/r{index:02d}", EXCLUSIVE.format(state=state)) for index in range(16)]
    env = queue_env(tmp_path)
    queues = [start_queue(env, "run", tmp_path / "runs", "--simulate-gpus", sim, "--quiet", log=tmp_path / f"q{n}.log") for n in range(2)]
    codes = [finish(queue) for queue in queues]
    assert codes == [0, 0], [(tmp_path / f"q{n}.log").read_text() for n in range(2)]
    record = (state / "record").read_text().splitlines()
    assert sorted(line.split()[0] for line in record) == sorted(str(run) for run in runs)  # each exactly once
    assert not (state / "errors").exists(), (state / "errors").read_text()
    for run in runs:
        assert len(step_headers((run / "lfads.out").read_text())) == 1
    logs = [(tmp_path / f"q{n}.log").read_text() for n in range(2)]
    assert all("summary: 16 run(s): 16 done" in log for log in logs)


def test_runqueue_sigkilled_queue_loses_nothing_and_a_restart_re_adopts(tmp_path: Path) -> None:
    sim = write_gpus(tmp_path / "gpus.json", [gpu("GPU-k")])
    release, started = tmp_path / "release", tmp_path / "started"
    run = make_run(tmp_path / "runs", "c/param_K/long", wait_until_released(release, started) + "echo after-release\n")
    waiting = make_run(tmp_path / "runs", "c/param_K/next", "echo second\n")
    env = queue_env(tmp_path)
    first = start_queue(env, "run", tmp_path / "runs", "--simulate-gpus", sim, log=tmp_path / "q1.log")
    supervisor = None
    try:
        wait_for(started.exists, what="the run to start")
        first.send_signal(signal.SIGKILL)
        first.wait()
        status = json.loads(run_queue(env, "status", tmp_path / "runs", "--json", "--simulate-gpus", sim).stdout)
        live = next(entry for entry in status["runs"] if entry["name"] == "param_K/long")
        supervisor = live["pid"]
        assert live["state"] == "running" and pid_alive(supervisor)
        # Its claim outlives the queue: the GPU still counts as taken by it.
        assert status["devices"][0]["runs"] == [str(run)]
        second = start_queue(env, "run", tmp_path / "runs", "--simulate-gpus", sim, log=tmp_path / "q2.log")
        wait_for(lambda: "re-adopted" in (tmp_path / "q2.log").read_text(), what="re-adoption")
        time.sleep(0.3)
        assert not (waiting / "lfads.out").exists()  # the one GPU is still taken: nothing else started
        release.touch()
        assert finish(second) == 0, (tmp_path / "q2.log").read_text()
    finally:
        if supervisor:
            kill_session(supervisor)
    log = (run / "lfads.out").read_text()
    assert len(step_headers(log)) == 1 and "after-release" in log
    assert (run / "lfads.done").exists() and (waiting / "lfads.done").exists()
    console = (tmp_path / "q2.log").read_text()
    assert "[param_K/long] re-adopted" in console
    assert "[param_K/long] after-release" in console  # the adopted run's output is followed too


def test_a_restart_with_another_claims_directory_claims_the_adopted_runs_device_there(tmp_path: Path) -> None:
    """The adopted run's claim is in the old directory, which the new queue does not read: without
    claiming its device again, the next run went onto the same GPU on top of it."""
    sim = write_gpus(tmp_path / "gpus.json", [gpu("GPU-m")])
    release, started = tmp_path / "release", tmp_path / "started"
    run = make_run(tmp_path / "runs", "c/param_M/long", wait_until_released(release, started))
    waiting = make_run(tmp_path / "runs", "c/param_M/next", "echo second\n")
    first = start_queue(queue_env(tmp_path), "run", tmp_path / "runs", "--simulate-gpus", sim, log=tmp_path / "q1.log")
    supervisor = None
    try:
        wait_for(started.exists, what="the run to start")
        supervisor = read_json(run / ".runqueue" / "state.json")["supervisor_pid"]
        first.send_signal(signal.SIGKILL)
        first.wait()
        env = queue_env(tmp_path, RUNQUEUE_CLAIMS_DIR=str(tmp_path / "other-claims"))
        second = start_queue(env, "run", tmp_path / "runs", "--simulate-gpus", sim, log=tmp_path / "q2.log")
        wait_for(lambda: "claimed GPU-m there again" in (tmp_path / "q2.log").read_text(), what="the claim")
        time.sleep(0.5)
        assert not (waiting / "lfads.out").exists(), (tmp_path / "q2.log").read_text()  # the GPU is still taken
        (claim,) = (tmp_path / "other-claims").glob("*.claim.json")
        assert (read_json(claim)["run_dir"], read_json(claim)["pid"]) == (str(run), supervisor)
        release.touch()
        assert finish(second) == 0, (tmp_path / "q2.log").read_text()
    finally:
        if supervisor:
            kill_session(supervisor)
    assert (run / "lfads.done").exists() and (waiting / "lfads.done").exists()
    console = (tmp_path / "q2.log").read_text()
    assert f"its device claim was not in {tmp_path / 'other-claims'}" in console, console


def test_status_and_re_adoption_without_state_json(tmp_path: Path) -> None:
    # state.json deleted by hand while the run runs: the lock file still names the supervisor and the
    # claim its device, so status must not call the supervisor gone, nor re-adoption say "device None".
    sim = write_gpus(tmp_path / "gpus.json", [gpu("GPU-j")])
    release, started = tmp_path / "release", tmp_path / "started"
    run = make_run(tmp_path / "runs", "c/param_J/r0", wait_until_released(release, started))
    env = queue_env(tmp_path)
    first = start_queue(env, "run", tmp_path / "runs", "--simulate-gpus", sim, log=tmp_path / "q1.log")
    supervisor = None
    try:
        wait_for(started.exists, what="the run to start")
        supervisor = read_json(run / ".runqueue" / "state.json")["supervisor_pid"]
        (run / ".runqueue" / "state.json").unlink()
        first.send_signal(signal.SIGKILL)
        first.wait()
        status = json.loads(run_queue(env, "status", tmp_path / "runs", "--json", "--simulate-gpus", sim).stdout)
        (row,) = status["runs"]
        assert (row["state"], row["pid"], row["device"], row["reason"]) == ("running", supervisor, "GPU-j", None), row
        second = start_queue(env, "run", tmp_path / "runs", "--simulate-gpus", sim, log=tmp_path / "q2.log")
        wait_for(lambda: "re-adopted" in (tmp_path / "q2.log").read_text(), what="re-adoption")
        release.touch()
        assert finish(second) == 0, (tmp_path / "q2.log").read_text()
    finally:
        if supervisor:
            kill_session(supervisor)
    console = (tmp_path / "q2.log").read_text()
    assert f"re-adopted (supervisor pid {supervisor}, device not recorded" in console, console
    assert (run / "lfads.done").exists()


def test_runqueue_ctrl_c_waits_then_second_ctrl_c_interrupts(tmp_path: Path) -> None:
    sim = write_gpus(tmp_path / "gpus.json", [gpu("GPU-s")])
    release, started = tmp_path / "release", tmp_path / "started"
    first = make_run(tmp_path / "runs", "c/param_S/a", wait_until_released(release, started))
    second_started = tmp_path / "second-started"
    second = make_run(tmp_path / "runs", "c/param_S/b", "echo b-train\n", posterior=wait_until_released(tmp_path / "never", second_started))
    env = queue_env(tmp_path)

    # First Ctrl-C: stop placing, wait for the running run, leave the other pending.
    queue = start_queue(env, "run", tmp_path / "runs", "--simulate-gpus", sim, log=tmp_path / "q1.log")
    wait_for(started.exists, what="run a to start")
    queue.send_signal(signal.SIGINT)
    wait_for(lambda: "Press Ctrl-C again" in (tmp_path / "q1.log").read_text(), what="the stop message")
    release.touch()
    assert finish(queue) == 130
    assert (first / "lfads.done").exists()
    assert not (second / "lfads.out").exists()

    # Second Ctrl-C: the running run is stopped and recorded as interrupted, not failed.
    queue = start_queue(env, "run", tmp_path / "runs", "--simulate-gpus", sim, "--kill-grace", "1", log=tmp_path / "q2.log")
    wait_for(second_started.exists, what="run b's posterior step")
    queue.send_signal(signal.SIGINT)
    wait_for(lambda: "Press Ctrl-C again" in (tmp_path / "q2.log").read_text(), what="the stop message")
    queue.send_signal(signal.SIGINT)
    assert finish(queue) == 130
    assert not (second / "lfads.failed").exists() and not (second / "lfads.done").exists()
    state = read_json(second / ".runqueue/state.json")
    assert (state["phase"], state["resume_step"], state["attempt"]) == ("interrupted", "lfads_posterior_mean_sample.sh", 1)
    assert "interrupted during lfads_posterior_mean_sample.sh" in (tmp_path / "q2.log").read_text()

    # Next time it goes again from the interrupted step, and the interruption did not use an attempt.
    (tmp_path / "never").touch()
    assert run_queue(env, "run", tmp_path / "runs", "--simulate-gpus", sim, "--retries", "0", "--quiet").returncode == 0
    log = (second / "lfads.out").read_text()
    assert log.count("b-train") == 1
    assert [h.split(" attempt=")[1].split()[0] for h in step_headers(log)] == ["1/2", "1/2", "1/1"]  # same attempt, this time with --retries 0


def test_runqueue_stop_runs_flag_and_sigterm(tmp_path: Path) -> None:
    sim = write_gpus(tmp_path / "gpus.json", [gpu("GPU-t")])
    started = tmp_path / "started"
    run = make_run(tmp_path / "runs", "c/param_T/a", wait_until_released(tmp_path / "never", started))
    queue = start_queue(queue_env(tmp_path), "run", tmp_path / "runs", "--simulate-gpus", sim, "--stop-runs", "--kill-grace", "1", log=tmp_path / "q.log")
    wait_for(started.exists, what="the run to start")
    queue.send_signal(signal.SIGTERM)
    assert finish(queue) == 130
    assert read_json(run / ".runqueue/state.json")["phase"] == "interrupted"
    assert not (run / "lfads.failed").exists()


def test_a_hang_up_leaves_at_once_and_the_run_goes_on(tmp_path: Path) -> None:
    sim = write_gpus(tmp_path / "gpus.json", [gpu("GPU-h")])
    release, started = tmp_path / "release", tmp_path / "started"
    run = make_run(tmp_path / "runs", "c/param_H/a", wait_until_released(release, started))
    queue = start_queue(queue_env(tmp_path), "run", "--watch", tmp_path / "runs", "--simulate-gpus", sim, log=tmp_path / "q.log")
    wait_for(started.exists, what="the run to start")
    queue.send_signal(signal.SIGHUP)  # the terminal closed
    assert finish(queue) == 130
    assert "hang-up: leaving; 1 started run(s) keep going" in (tmp_path / "q.log").read_text()
    release.touch()
    wait_for((run / "lfads.done").exists, what="the run to finish without its queue")


def test_a_queue_started_under_nohup_outlives_a_hang_up(tmp_path: Path) -> None:
    sim = write_gpus(tmp_path / "gpus.json", [gpu("GPU-n")])
    (tmp_path / "runs").mkdir()
    log = tmp_path / "q.log"
    with open(log, "wb") as out:
        queue = subprocess.Popen(["nohup", *queue_command("run", "--watch", tmp_path / "runs", "--simulate-gpus", sim)],
                                 env=queue_env(tmp_path), stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "0 running" in log.read_text(), what="the queue to start")
        queue.send_signal(signal.SIGHUP)  # ignored, as nohup asked
        late = make_run(tmp_path / "runs", "c/param_N/late")  # still picked up afterwards
        wait_for((late / "lfads.done").exists, what="the queue to run a run made after the hang-up")
        assert queue.poll() is None and "hang-up" not in log.read_text()
    finally:
        queue.terminate()
        queue.wait(timeout=30)


def test_runqueue_cancel_stops_the_run_and_marks_it_cancelled(tmp_path: Path) -> None:
    sim = write_gpus(tmp_path / "gpus.json", [gpu("GPU-c")])
    started, child = tmp_path / "started", tmp_path / "child"
    run = make_run(tmp_path / "runs", "c/param_C/a", f"sleep 300 & echo $! > {child}\n" + wait_until_released(tmp_path / "never", started))
    pending = make_run(tmp_path / "runs", "c/param_C/b")
    env = queue_env(tmp_path)
    queue = start_queue(env, "run", tmp_path / "runs", "--simulate-gpus", sim, "--quiet", log=tmp_path / "q.log")
    wait_for(started.exists, what="the run to start")
    result = run_queue(env, "cancel", run, "--grace", "2")
    assert result.returncode == 0 and "cancelled (supervisor pid" in result.stdout, result.stdout + result.stderr
    assert finish(queue) == 1
    failure = read_json(run / "lfads.failed")
    assert failure["reason"] == "cancelled"
    wait_for(lambda: not pid_alive(int(child.read_text())), timeout=10, what="the run's background child to stop")
    assert (pending / "lfads.done").exists()  # the queue carried on with the next run
    assert "[param_C/a] failed (cancelled)" in (tmp_path / "q.log").read_text()
    # Cancelling a run that is not running keeps it from starting; a done run is left alone.
    other = make_run(tmp_path / "runs2", "c/param_C/later")
    assert "was not running; marked failed (cancelled)" in run_queue(env, "cancel", other).stdout
    assert "already done" in run_queue(env, "cancel", pending).stdout


def test_runqueue_cancel_without_supervisor_stops_orphaned_steps(tmp_path: Path) -> None:
    """A supervisor killed with -9 leaves its step running (and holding the run): cancel still stops it."""
    sim = write_gpus(tmp_path / "gpus.json", [gpu("GPU-o")])
    started = tmp_path / "started"
    run = make_run(tmp_path / "runs", "c/param_O/a", wait_until_released(tmp_path / "never", started))
    env = queue_env(tmp_path)
    queue = start_queue(env, "run", tmp_path / "runs", "--simulate-gpus", sim, "--quiet", log=tmp_path / "q.log")
    wait_for(started.exists, what="the run to start")
    supervisor = read_json(run / ".runqueue/state.json")["supervisor_pid"]
    try:
        queue.send_signal(signal.SIGKILL)
        queue.wait()
        subprocess.run(["kill", "-9", str(supervisor)], check=True)
        wait_for(lambda: not pid_alive(supervisor), what="the supervisor to die")
        status = json.loads(run_queue(env, "status", run, "--json", "--simulate-gpus", sim).stdout)
        assert status["runs"][0]["state"] == "running"  # the step still holds the run lock
        result = run_queue(env, "cancel", run, "--grace", "1")
        assert "processes stopped by `runqueue cancel`" in result.stdout, result.stdout + result.stderr
        assert read_json(run / "lfads.failed")["reason"] == "cancelled"
        status = json.loads(run_queue(env, "status", run, "--json", "--simulate-gpus", sim).stdout)
        assert status["runs"][0]["state"] == "failed"
    finally:
        kill_session(supervisor)
