"""The SLURM executor's pure parts: the generated job script (golden file), time limits, options, parsing.

No cluster needed; the end-to-end behaviour on a real SLURM is in test_slurm_queue.py.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from runqueue_testkit import make_run, queue_env, run_queue

from runqueue.slurm.commands import _parse_query, parse_scontrol_job
from runqueue.slurm.job import job_device
from runqueue.slurm.jobscript import JobScriptInputs, job_name, render_job_script
from runqueue.slurm.options import (
    SlurmOptions,
    format_sbatch_time,
    job_time_limits,
    parse_slurm_time,
    split_extra,
)
from runqueue.supervisor_spec import SupervisorSpec

GOLDEN = Path(__file__).parent / "slurm_golden"
SEED_RUN = Path("/data/lfads/runs/exampleRun/param_Qr2PeG/all")


def _inputs(run_dir: Path = SEED_RUN, options: SlurmOptions | None = None) -> JobScriptInputs:
    options = options or SlurmOptions(gpus=1, partition="gpu", mem_mb=16000, cpus=4)
    limits = job_time_limits(7200.0, options.time_s, 10.0)
    spec = SupervisorSpec(
        run_dir=str(run_dir), device_uuid="slurm", device_name="assigned by SLURM", device_env={},
        max_attempts=2, time_limit_s=limits.supervisor_s, queue_id="login1:4242",
    )
    return JobScriptInputs(
        run_dir=run_dir, token="0123456789abcdef", spec_json=spec.to_argv_json(), options=options,
        sbatch_minutes=limits.sbatch_minutes, python="/opt/lfads/venv/bin/python", package_parent="/opt/lfads/src",
    )


def test_slurm_job_script_matches_golden() -> None:
    text = render_job_script(_inputs())
    golden = GOLDEN / "job_script.sh"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(text)
    assert golden.exists(), f"{golden} missing: run UPDATE_GOLDEN=1 pytest {__file__} to create it"
    assert text == golden.read_text(), f"the job script changed; if intended, accept it with UPDATE_GOLDEN=1 pytest {__file__}"


def test_slurm_job_script_quotes_blanks_and_omits_what_was_not_asked(tmp_path: Path) -> None:
    run = tmp_path / "my runs" / "c" / "param_X" / "all"
    text = render_job_script(_inputs(run, SlurmOptions(gpus=0)))
    assert f'#SBATCH --chdir="{run}"' in text
    assert f'#SBATCH --output="{run}/.runqueue/slurm-%j.out"' in text
    for absent in ("--gres", "--partition", "--mem", "--cpus-per-task"):
        assert absent not in text
    assert "#SBATCH --time=2:01:00" in text  # 2 h + kill grace + margin, rounded up to the minute
    for bad in ('bad"name', "bad\\name"):
        with pytest.raises(Exception, match="double quote, a backslash or a line break"):
            render_job_script(_inputs(tmp_path / bad / "r"))
    # SLURM expands %j, %x … in --output: a % of the folder's own name is doubled, the pattern's %j kept.
    percent = tmp_path / "50%done" / "r"
    text = render_job_script(_inputs(percent, SlurmOptions(gpus=0)))
    assert f"#SBATCH --output={tmp_path}/50%%done/r/.runqueue/slurm-%j.out" in text
    assert f"#SBATCH --chdir={percent}" in text


def test_slurm_job_name_is_the_run_name_sanitised() -> None:
    assert job_name(SEED_RUN) == "lfads-param_Qr2PeG/all"
    assert job_name(Path("/x/c/param_A/spec with space;rm")) == "lfads-param_A/spec_with_space_rm"


@pytest.mark.parametrize(
    ("run_limit", "slurm_time", "minutes", "supervisor"),
    [
        (None, None, None, None),  # nothing asked: the partition's default, no supervisor limit
        (7200.0, None, 121, 7200.0),  # the run's limit exactly; SLURM's a margin later
        (None, 7200.0, 120, 7160.0),  # SLURM's limit; the supervisor stops the margin before
        (90.0, 3600.0, 60, 90.0),  # both: the smaller for the supervisor
        (None, 30.0, 1, 20.0),  # seconds round up to a minute; still stops before SLURM
    ],
)
def test_slurm_time_limits_let_the_supervisor_stop_first(run_limit: float | None, slurm_time: float | None, minutes: int | None, supervisor: float | None) -> None:
    limits = job_time_limits(run_limit, slurm_time, kill_grace_s=10.0)
    assert (limits.sbatch_minutes, limits.supervisor_s) == (minutes, supervisor)
    if minutes is not None and supervisor is not None:
        assert supervisor + 10.0 < minutes * 60


@pytest.mark.parametrize(("text", "seconds"), [("90", 5400), ("1:30", 90), ("2:00:00", 7200), ("1-0", 86400), ("1-2:30", 95400), ("2h", 7200), ("45m", 2700)])
def test_slurm_time_accepts_slurm_forms_and_durations(text: str, seconds: float) -> None:
    assert parse_slurm_time(text) == seconds


def test_slurm_time_rejects_nonsense_and_formats_back() -> None:
    with pytest.raises(ValueError, match="invalid --slurm-time 'soon'"):
        parse_slurm_time("soon")
    assert (format_sbatch_time(121), format_sbatch_time(1500)) == ("2:01:00", "1-01:00:00")


def test_slurm_options_refuse_what_the_executor_sets_itself() -> None:
    assert split_extra("--account=lab --qos 'long one'") == ("--account=lab", "--qos", "long one")
    SlurmOptions(extra=("--account=lab", "--qos", "long"))
    # sbatch takes unambiguous prefixes too: --out= is --output=, --comm= is --comment=.
    for extra in (("--chdir=/x",), ("-o", "out"), ("--comment=mine",), ("-Dsomewhere",), ("--out=/x",), ("--comm=x",),
                  ("-so/tmp/x",), ("-Qo", "x"), ("-Ho", "x"), ("--quiet",), ("-Q",), ("-e", "/tmp/err"), ("--test-only",)):
        with pytest.raises(ValueError, match="remove it from --slurm-extra"):
            SlurmOptions(extra=extra)
    # Each option is refused with its own reason: what the queue sets it to, or what it would break.
    reasons = {
        ("--chdir=/x",): "runqueue sets --chdir itself, to the run folder",
        ("-Dsomewhere",): "-D is --chdir: runqueue sets --chdir itself, to the run folder",
        ("--out=/x",): "--out is short for --output: runqueue sets --output itself, to <run>/.runqueue/slurm-%j.out",
        ("-e", "/tmp/err"): "-e is --error: runqueue leaves the job's stderr with --output, in <run>/.runqueue/slurm-%j.out",
        ("--open-mode=truncate",): "runqueue sets --open-mode itself, to append",
        ("--comm=x",): "--comm is short for --comment: runqueue sets --comment itself, to runqueue:<token>",
        ("--parsable",): "runqueue passes --parsable itself, to read the job id",
        ("--wrap=hostname",): "runqueue submits its own batch script (<run>/.runqueue/slurm-job.sh",
        ("--array=0-3",): "runqueue submits one job per attempt of a run",
        ("-Q",): "-Q is --quiet: runqueue reads the job id sbatch prints; --quiet hides it",
        ("--test-only",): "--test-only submits nothing",
        ("--o=x",): "--o is short for --output or --open-mode: ",
        ("--time=1",): "give the job's time with --slurm-time: runqueue sets --time from it with a margin",
        ("-t", "5"): "-t is --time: give the job's time with --slurm-time",
        ("--wait",): "with --wait sbatch would not return until the job ends",
        ("-sW",): "-W is --wait: runqueue watches its jobs itself",
        ("--clusters=gpu2",): "a job on another cluster would be taken for lost",
        ("-M", "gpu2"): "-M is --clusters: runqueue asks squeue, scontrol and scancel",
    }
    messages = set()
    for extra, reason in reasons.items():
        with pytest.raises(ValueError) as refused:
            SlurmOptions(extra=extra)
        assert reason in str(refused.value) and str(refused.value).startswith(f"--slurm-extra {extra[0]!r}: "), refused.value
        messages.add(str(refused.value).split(": ", 1)[1])
    assert len(messages) == len(reasons)  # not one reason for all
    # The message names the reserved option in a group, not the group's first letter.
    with pytest.raises(ValueError, match="-o is --output: runqueue sets --output itself"):
        SlurmOptions(extra=("-so/tmp/x",))
    # Letters after one that takes an argument are that argument: -pgpu_o is partition "gpu_o".
    SlurmOptions(extra=("-pgpu_o", "-N", "1", "-s"))
    with pytest.raises(ValueError, match="must be 0 or more"):
        SlurmOptions(gpus=-1)


def test_slurm_flags_without_the_slurm_executor_are_a_clear_error(tmp_path: Path) -> None:
    make_run(tmp_path / "runs", "r")
    result = run_queue(queue_env(tmp_path), "run", tmp_path / "runs", "--slurm-gpus", "2", "--max-submitted", "3")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "runqueue run: error: --slurm-gpus, --max-submitted only apply to SLURM jobs (add --executor slurm, or drop them)"
    )
    result = run_queue(queue_env(tmp_path), "run", tmp_path / "runs", "--executor", "slurm", "--slurm-extra=--output=x.log")
    assert result.returncode == 2 and "runqueue sets --output itself" in result.stderr
    # And the other way round: this machine's device flags mean nothing to SLURM jobs.
    result = run_queue(queue_env(tmp_path), "run", tmp_path / "runs", "--executor", "slurm", "--gpus", "0", "--max-per-gpu", "3")
    assert result.returncode == 2
    assert "runqueue run: error: --gpus, --max-per-gpu only apply to this machine's devices" in result.stderr
    result = run_queue(queue_env(tmp_path), "run", tmp_path / "runs", "--executor", "slurm", "--memory-per-run", "9000")
    assert result.returncode == 2
    assert "runqueue run: error: --memory-per-run only applies to this machine's devices" in result.stderr
    assert not (tmp_path / "runs" / "r" / "lfads.out").exists()


def test_slurm_job_device_is_what_slurm_set() -> None:
    cpu = job_device({}, 7)
    assert (cpu.uuid, cpu.env) == ("cpu-slurm", {"CUDA_VISIBLE_DEVICES": ""})  # no GPU granted: none used
    assert job_device({"CUDA_VISIBLE_DEVICES": ""}, 7).uuid == "cpu-slurm"
    # Indices NVML cannot resolve here (no such GPUs): SLURM's index is kept, in the header and the environment.
    gpus = job_device({"CUDA_VISIBLE_DEVICES": "97,98"}, 7)
    assert (gpus.uuid, gpus.name) == ("97,98", "SLURM GPU 97,98")
    assert gpus.env == {"CUDA_VISIBLE_DEVICES": "97,98", "CUDA_DEVICE_ORDER": "PCI_BUS_ID", "TF_FORCE_GPU_ALLOW_GROWTH": "true"}


def test_slurm_parses_squeue_and_scontrol_as_slurm_22_prints_them() -> None:
    # Captured from the test cluster (squeue -O ..., scontrol show job -o).
    jobs = _parse_query("3|CANCELLED|JobHeldUser|0||(null)|\n2|FAILED|NonZeroExitCode|1024|vm|runqueue:tok123|\n12_3|RUNNING|None|0|vm||\n")
    assert [(j.job_id, j.state, j.exit_code, j.signal, j.comment) for j in jobs] == [
        (3, "CANCELLED", 0, None, "(null)"), (2, "FAILED", 4, None, "runqueue:tok123")]
    assert jobs[1].finished and jobs[1].describe() == "FAILED (NonZeroExitCode, exit 4)"
    line = ("JobId=2 JobName=lfads-param_X/all UserId=root(0) JobState=CANCELLED Reason=None Dependency=(null) "
            "ExitCode=0:15 NodeList=vm WorkDir=/tmp/sl/a b Comment=runqueue:tok123  StdErr=/tmp/x")
    info = parse_scontrol_job(line)
    assert info is not None
    assert (info.job_id, info.state, info.exit_code, info.signal, info.comment) == (2, "CANCELLED", 0, 15, "runqueue:tok123")


def test_a_run_folder_gone_before_submission_is_not_submitted_nor_recreated(tmp_path: Path) -> None:
    from runqueue.executors.slurm import SlurmExecutor
    from runqueue.runstate import Reason

    class NoCluster:  # every sbatch would be a test failure: nothing may be submitted
        def check_available(self) -> None:
            pass

        def sbatch(self, *args: object, **kwargs: object) -> int:
            raise AssertionError("submitted a job for a vanished run folder")

    run = tmp_path / "runs" / "c" / "param_V" / "gone"
    spec = SupervisorSpec(run_dir=str(run), device_uuid="slurm", device_name="x", device_env={}, max_attempts=1,
                          time_limit_s=None, queue_id="q:1")
    pending = SlurmExecutor(commands=NoCluster()).launch(spec)  # type: ignore[arg-type]
    assert pending.reply["status"] == "error" and pending.reply["reason"] == Reason.FOLDER_VANISHED
    assert not (tmp_path / "runs").exists()


def test_cancel_says_so_when_scancel_fails(tmp_path: Path) -> None:
    import pytest

    from runqueue.control import CancelRefused
    from runqueue.layout import RunPaths
    from runqueue.slurm.control import cancel_if_submitted
    from runqueue.slurm.paths import SlurmPaths
    from runqueue.slurm.records import STOP_CANCEL, SubmissionRecord, load_submission, save_submission

    class Unreachable:  # slurmctld down: every command fails
        def check_available(self) -> None:
            pass

        def signal_batch(self, job_id: int, signal_name: str) -> bool:
            return False

        def cancel(self, job_id: int) -> bool:
            return False

    run = tmp_path / "runs" / "c" / "param_U" / "r"
    run.mkdir(parents=True)
    (run / "lfads_train.sh").write_text("echo\n")
    paths = SlurmPaths.of(run)
    save_submission(paths, SubmissionRecord(token="t", job_id=77, queue_id="q:1", submitted_at=0.0))
    with pytest.raises(CancelRefused, match=r"cancel recorded, but `scancel 77` failed"):
        cancel_if_submitted(RunPaths(run), 0.1, commands=Unreachable())  # type: ignore[arg-type]
    record = load_submission(paths)
    assert record is not None and record.stop_requested == STOP_CANCEL  # a job that starts later runs nothing


def test_an_adopted_job_of_another_live_queue_is_left_to_it(tmp_path: Path) -> None:
    import os
    import socket
    import subprocess
    import time

    from runqueue.executors.base import RunHandle
    from runqueue.executors.slurm import SlurmExecutor
    from runqueue.slurm.paths import SlurmPaths
    from runqueue.slurm.records import SubmissionRecord, save_submission

    class Idle:
        def check_available(self) -> None:
            pass

    run = tmp_path / "runs" / "c" / "param_Q" / "r"
    run.mkdir(parents=True)
    executor = SlurmExecutor(commands=Idle())  # type: ignore[arg-type]
    other = subprocess.Popen(["sleep", "30"])  # stands in for the queue that submitted the job
    try:
        time.sleep(0.05)
        host = socket.gethostname()
        cases = {
            f"{host}:{other.pid}": f"queue pid {other.pid}",  # alive, started before it submitted
            f"{host}:{os.getpid()}": None,  # this queue's own
            "login2:4242": None,  # another host: whether it lives cannot be told from here
            "no-pid": None,
        }
        for queue_id, expected in cases.items():
            save_submission(SlurmPaths.of(run), SubmissionRecord(token="t", job_id=5, queue_id=queue_id,
                                                                 submitted_at=time.time()))
            adopted = RunHandle(run, 0, None, None, True, -1)
            assert executor.run_by_another_queue(adopted) == expected, queue_id
        assert executor.run_by_another_queue(RunHandle(run, 0, None, None, False, -1)) is None  # launched here
        save_submission(SlurmPaths.of(run), SubmissionRecord(token="t", job_id=5, queue_id=f"{host}:{other.pid}",
                                                             submitted_at=time.time() - 3600))
        assert executor.run_by_another_queue(RunHandle(run, 0, None, None, True, -1)) is None  # its pid is newer: reused
        other.kill()
        other.wait()
        save_submission(SlurmPaths.of(run), SubmissionRecord(token="t", job_id=5, queue_id=f"{host}:{other.pid}",
                                                             submitted_at=time.time()))
        assert executor.run_by_another_queue(RunHandle(run, 0, None, None, True, -1)) is None  # that queue is gone
    finally:
        other.kill()
        other.wait()


def test_cancel_finds_a_job_whose_id_was_never_recorded_by_its_comment(tmp_path: Path) -> None:
    from runqueue.layout import RunPaths
    from runqueue.slurm.commands import JobInfo
    from runqueue.slurm.control import cancel_if_submitted
    from runqueue.slurm.paths import SlurmPaths
    from runqueue.slurm.records import SubmissionRecord, load_submission, save_submission

    class QueueDiedDuringSbatch:  # the job exists in SLURM, slurm.json never got its id
        def __init__(self) -> None:
            self.cancelled: list[int] = []

        def check_available(self) -> None:
            pass

        def find_by_comment(self, comment: str) -> JobInfo | None:
            return JobInfo(909, "PENDING", comment=comment) if comment == "runqueue:tok" else None

        def signal_batch(self, job_id: int, signal_name: str) -> bool:
            return False  # pending: no batch shell to signal

        def cancel(self, job_id: int) -> bool:
            self.cancelled.append(job_id)
            return True

        def query(self, job_ids: list[int]) -> dict[int, JobInfo]:
            return {job_id: JobInfo(job_id, "CANCELLED") for job_id in job_ids if job_id in self.cancelled}

    run = tmp_path / "runs" / "c" / "param_U" / "r"
    run.mkdir(parents=True)
    (run / "lfads_train.sh").write_text("echo\n")
    paths = SlurmPaths.of(run)
    save_submission(paths, SubmissionRecord(token="tok", job_id=None, queue_id="q:1", submitted_at=0.0))
    slurm = QueueDiedDuringSbatch()
    said = cancel_if_submitted(RunPaths(run), 0.1, commands=slurm)  # type: ignore[arg-type]
    assert said == "cancelled (SLURM job 909 scancelled)" and slurm.cancelled == [909]
    record = load_submission(paths)
    assert record is not None and record.job_id == 909 and not record.active
    assert (run / "lfads.failed").exists()


@pytest.mark.parametrize("accepted", [True, False])
def test_an_sbatch_that_timed_out_but_was_accepted_is_not_submitted_twice(tmp_path: Path, accepted: bool) -> None:
    import time

    from runqueue.executors.slurm import SlurmExecutor
    from runqueue.slurm.commands import JobInfo, SlurmError
    from runqueue.slurm.paths import SlurmPaths
    from runqueue.slurm.records import load_submission

    class BusyController:  # slurmctld took the job (or not), but sbatch gave up waiting for its answer
        def __init__(self) -> None:
            self.sbatches = 0
            self.lookups = 0

        def check_available(self) -> None:
            pass

        def sbatch(self, *args: object, **kwargs: object) -> int:
            self.sbatches += 1
            raise SlurmError("sbatch: error: Socket timed out on send/recv operation")

        def find_by_comment(self, comment: str) -> JobInfo | None:
            self.lookups += 1
            return JobInfo(555, "PENDING", comment=comment) if accepted else None

        def query(self, job_ids: list[int]) -> dict[int, JobInfo]:
            return {job_id: JobInfo(job_id, "PENDING") for job_id in job_ids}

    run = make_run(tmp_path / "runs", "c/param_T/r")
    spec = SupervisorSpec(run_dir=str(run), device_uuid="slurm", device_name="x", device_env={}, max_attempts=1,
                          time_limit_s=None, queue_id="q:1")
    slurm = BusyController()
    executor = SlurmExecutor(commands=slurm)  # type: ignore[arg-type]
    executor.watcher.min_interval_s = executor.watcher.max_interval_s = 0.05
    try:
        pending = executor.launch(spec)
        # Not asked in the scheduler's loop (a hung slurmctld would hold it for another timeout):
        assert slurm.lookups == 0 and pending.reply["status"] == "submitted" and pending.reply["job_id"] is None
        record = load_submission(SlurmPaths.of(run))
        assert record is not None and record.job_id is None and record.active  # the token stays on record
        other = make_run(tmp_path / "runs", "c/param_T/other")
        deferred = executor.launch(SupervisorSpec(run_dir=str(other), device_uuid="slurm", device_name="x", device_env={},
                                                  max_attempts=1, time_limit_s=None, queue_id="q:1"))
        assert deferred.reply["status"] == "deferred" and slurm.sbatches == 1  # no sbatch until the pause ends
        handle = executor.confirm(pending)
        assert "did not answer in time" in executor.started_text(handle, executor.placement_device())
        def settled() -> bool:
            if accepted:
                found = load_submission(SlurmPaths.of(run))
                return found is not None and found.job_id is not None
            seen = executor.watcher.last_seen(handle.native.key)
            return seen is not None and seen.source == "lost"

        deadline = time.monotonic() + 20
        while not settled() and time.monotonic() < deadline:
            time.sleep(0.05)
        record = load_submission(SlurmPaths.of(run))
        if accepted:
            assert record is not None and record.job_id == 555 and record.active  # found by its comment: one job
            assert executor.watcher.job_id(handle.native.key) == 555
        else:
            seen = executor.watcher.last_seen(handle.native.key)
            assert seen is not None and seen.reason == "never submitted", seen
            executor.collect(handle)
            record = load_submission(SlurmPaths.of(run))
            assert record is not None and not record.active and record.ending is not None
            assert "never reached SLURM; the run is pending again" in record.ending
    finally:
        executor.close()


def _fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **scripts: str) -> None:
    """sbatch, squeue, scontrol and scancel on PATH as bash snippets (exit 0 when not given)."""
    folder = tmp_path / "fake-slurm"
    folder.mkdir(exist_ok=True)
    for name in ("sbatch", "squeue", "scontrol", "scancel"):
        (folder / name).write_text("#!/bin/bash\n" + scripts.get(name, "exit 0\n"))
        (folder / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")


def test_a_submit_limit_is_waited_out_not_a_blocked_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from runqueue.executors.slurm import SlurmExecutor

    # What sbatch prints at a QOS's per-user submit limit: the reason first, then the generic line.
    _fake_slurm(tmp_path, monkeypatch, sbatch="echo 'sbatch: error: QOSMaxSubmitJobPerUserLimit' >&2\n"
                "echo 'sbatch: error: Batch job submission failed: Job violates accounting/QOS policy"
                " (job submit limit, user'\"'\"'s size and/or time limits)' >&2\nexit 1\n")
    run = make_run(tmp_path / "runs", "c/param_M/r")
    spec = SupervisorSpec(run_dir=str(run), device_uuid="slurm", device_name="x", device_env={}, max_attempts=1,
                          time_limit_s=None, queue_id="q:1")
    pending = SlurmExecutor().launch(spec)
    assert pending.reply["status"] == "deferred", pending.reply
    assert "QOSMaxSubmitJobPerUserLimit" in pending.reply["message"]


def test_a_run_folder_sbatch_cannot_take_is_refused_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from runqueue.executors.slurm import SlurmExecutor

    _fake_slurm(tmp_path, monkeypatch, sbatch="echo submitted >> \"$0.calls\"; echo 7\n")
    run = make_run(tmp_path / "runs", "c/param_B/bad\\name")
    spec = SupervisorSpec(run_dir=str(run), device_uuid="slurm", device_name="x", device_env={}, max_attempts=1,
                          time_limit_s=None, queue_id="q:1")
    pending = SlurmExecutor().launch(spec)  # raised out of launch before, and ended the whole queue
    assert pending.reply["status"] == "error" and pending.reply["final"] is True
    assert "cannot be given to sbatch" in pending.reply["message"]
    assert not (tmp_path / "fake-slurm" / "sbatch.calls").exists()


def test_job_states_are_asked_in_chunks_a_command_line_can_hold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from runqueue.slurm.commands import SlurmCommands

    calls = tmp_path / "squeue.calls"
    # Knows every job whose id ends in 7; reports each as RUNNING, as squeue -O with our fields prints.
    _fake_slurm(tmp_path, monkeypatch, squeue=(
        'while [ $# -gt 0 ]; do [ "$1" = -j ] && ids=$2; shift; done\n'
        f'echo "$ids" | tr , "\\n" | wc -l >> {calls}\n'
        'for id in $(echo "$ids" | tr , " "); do case $id in *7) echo "$id|RUNNING|None|0:0|node1|runqueue:t|";; esac; done\n'))
    found = SlurmCommands().query(range(100_000, 102_500))
    assert [int(n) for n in calls.read_text().split()] == [1000, 1000, 500]
    assert sorted(found) == [job for job in range(100_000, 102_500) if job % 10 == 7]
    assert {info.state for info in found.values()} == {"RUNNING"}


def test_cancel_of_a_running_job_slurm_cannot_name_asks_its_supervisor_instead_of_only_marking_it(tmp_path: Path) -> None:
    import subprocess
    import sys

    from runqueue.layout import RunPaths
    from runqueue.slurm.control import cancel_if_submitted
    from runqueue.slurm.paths import SlurmPaths
    from runqueue.slurm.records import SubmissionRecord, save_submission

    class SlurmSilent:  # squeue fails, or the job is another account's: no job by that comment
        def check_available(self) -> None:
            pass

        def find_by_comment(self, comment: str) -> None:
            return None

    run = make_run(tmp_path / "runs", "c/param_S/r")
    paths = RunPaths(run)
    save_submission(SlurmPaths.of(run), SubmissionRecord(token="tok", job_id=None, queue_id="q:1", submitted_at=0.0))
    # The job's supervisor, as far as cancel can see: it holds the run lock, and on the written request
    # (cancel.json naming its submission's token) stops and records the cancel.
    supervisor = subprocess.Popen([sys.executable, "-c", (
        "import json, os, sys, time\n"
        "from pathlib import Path\n"
        "from runqueue import runlock\n"
        f"run = Path({str(run)!r})\n"
        "(run / '.runqueue').mkdir(exist_ok=True)\n"
        "fd = runlock.try_acquire(run / '.runqueue' / 'lock')\n"
        "print('held', flush=True)\n"
        "while not (run / '.runqueue' / 'cancel.json').exists(): time.sleep(0.05)\n"
        "assert json.loads((run / '.runqueue' / 'cancel.json').read_text())['batch_token'] == 'tok'\n"
        "(run / 'lfads.failed').write_text(json.dumps({'reason': 'cancelled'}))\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert supervisor.stdout is not None and supervisor.stdout.readline().strip() == "held"
        said = cancel_if_submitted(paths, 0.1, commands=SlurmSilent())  # type: ignore[arg-type]
    finally:
        supervisor.wait(timeout=30)
    assert said == "cancelled (its SLURM job's supervisor stopped the run)"
    assert json.loads((run / "lfads.failed").read_text())["reason"] == "cancelled"  # the supervisor's, not ours


def test_cancel_of_a_slurm_run_without_the_slurm_tools_refuses_that_run_and_goes_on(tmp_path: Path) -> None:
    from runqueue.slurm.paths import SlurmPaths
    from runqueue.slurm.records import SubmissionRecord, save_submission

    slurm_run = make_run(tmp_path / "runs", "c/param_C/a")
    save_submission(SlurmPaths.of(slurm_run), SubmissionRecord(token="tok", job_id=42, queue_id="q:1", submitted_at=0.0))
    local_run = make_run(tmp_path / "runs", "c/param_C/b")
    env = {**queue_env(tmp_path), "PATH": str(Path(sys.executable).parent)}  # no squeue, scancel here
    result = run_queue(env, "cancel", slurm_run, local_run)
    assert result.returncode == 2
    assert f"{slurm_run}: it is a SLURM job and the SLURM tools (squeue, scancel) are not on PATH here" in result.stderr
    assert f"{local_run}: " in result.stdout  # the next run was still cancelled
    assert (local_run / "lfads.failed").exists() and not (slurm_run / "lfads.failed").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="what root does with links a user planted: needs root")
def test_root_cancelling_a_users_slurm_run_follows_no_link_the_user_planted(tmp_path: Path) -> None:
    import pwd

    from runqueue.layout import RunPaths
    from runqueue.slurm.control import cancel_if_submitted
    from runqueue.slurm.paths import SlurmPaths
    from runqueue.slurm.records import SubmissionRecord, save_submission

    class SlurmSilent:
        def check_available(self) -> None:
            pass

        def find_by_comment(self, comment: str) -> None:
            return None

    nobody = pwd.getpwnam("nobody")
    secret, created = tmp_path / "root_secret", tmp_path / "created_by_root"
    secret.write_text("root's secret line\n")
    secret.chmod(0o600)
    run = make_run(tmp_path / "runs", "c/param_R/r")
    save_submission(SlurmPaths.of(run), SubmissionRecord(token="tok", job_id=None, queue_id="q:1", submitted_at=0.0))
    (run / "lfads.out").symlink_to(secret)
    for path in (run, run / ".runqueue", *(run / ".runqueue").iterdir(), run / "lfads_train.sh"):
        os.chown(path, nobody.pw_uid, nobody.pw_gid, follow_symlinks=False)
    lock = run / ".runqueue" / "slurm.lock"
    lock.unlink(missing_ok=True)
    lock.symlink_to(created)
    with pytest.raises(OSError):  # the lock at a link: refused, nothing made where it points
        cancel_if_submitted(RunPaths(run), 0.1, commands=SlurmSilent())  # type: ignore[arg-type]
    assert not created.exists()
    lock.unlink()
    said = cancel_if_submitted(RunPaths(run), 0.1, commands=SlurmSilent())  # type: ignore[arg-type]
    assert said is not None and "marked failed (cancelled)" in said
    assert secret.read_text() == "root's secret line\n"  # not appended to
    failed = run / "lfads.failed"
    assert "secret" not in failed.read_text()  # nor copied into the run's lfads.failed
    assert (failed.stat().st_uid, lock.stat().st_uid) == (nobody.pw_uid, nobody.pw_uid)  # the user's files


def test_a_job_whose_sbatch_never_answered_records_its_own_id(tmp_path: Path) -> None:
    """The job entry point as SLURM's batch script runs it, for a submission on record without an id."""
    import subprocess
    import sys

    from runqueue.slurm.paths import SlurmPaths
    from runqueue.slurm.records import SubmissionRecord, load_submission, save_submission

    run = make_run(tmp_path / "runs", "c/param_J/r")
    paths = SlurmPaths.of(run)
    save_submission(paths, SubmissionRecord(token="tok", job_id=None, queue_id="q:1", submitted_at=0.0))
    spec = SupervisorSpec(run_dir=str(run), device_uuid="slurm", device_name="x", device_env={}, max_attempts=1,
                          time_limit_s=None, queue_id="q:1")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SLURM_", "RUNQUEUE_"))}
    env.update(SLURM_JOB_ID="4242", CUDA_VISIBLE_DEVICES="", RUNQUEUE_CLAIMS_DIR=str(tmp_path / "claims"))
    result = subprocess.run([sys.executable, "-m", "runqueue.slurm.job", "--token", "tok", "--spec", spec.to_argv_json()],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    record = load_submission(paths)
    assert record is not None and record.job_id == 4242 and record.token == "tok"
    assert (run / "lfads.done").exists()
