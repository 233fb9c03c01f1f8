"""SLURM outcomes and time limits, no cluster needed: time limits where the run's own limit is
longer than SLURM's, D-HH:MM:SS, and what a finished job's SLURM state records in the run folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runqueue.runstate import PersistedState, Phase, load_state, save_state
from runqueue.slurm.commands import LOST, JobInfo
from runqueue.slurm.options import job_time_limits, parse_slurm_time
from runqueue.slurm.outcome import MAX_LOST_IN_A_ROW, settle_job_end
from runqueue.slurm.paths import SlurmPaths
from runqueue.slurm.records import JobReport, SubmissionRecord, save_job_report


@pytest.mark.parametrize(
    ("run_limit", "slurm_time", "grace", "minutes", "supervisor"),
    [
        (7200.0, 3600.0, 10.0, 60, 3560.0),  # the run may take 2 h, SLURM gives 1 h: the supervisor stops first
        (None, 60.0, 30.0, 1, 30.0),  # no room for the margin: the supervisor still stops well before SLURM
    ],
)
def test_the_supervisor_stops_before_slurm_whatever_the_run_limit(run_limit: float | None, slurm_time: float, grace: float,
                                                                  minutes: int, supervisor: float) -> None:
    limits = job_time_limits(run_limit, slurm_time, kill_grace_s=grace)
    assert (limits.sbatch_minutes, limits.supervisor_s) == (minutes, supervisor)
    assert limits.supervisor_s < minutes * 60


@pytest.mark.parametrize(("text", "seconds"), [("1-12:30:00", 131400), ("0-00:45:10", 2710), ("2-3", 183600)])
def test_slurm_time_with_days_and_seconds(text: str, seconds: float) -> None:
    assert parse_slurm_time(text) == seconds


def _ran_job(tmp_path: Path, job: int = 77, lost: int = 0) -> tuple[SlurmPaths, SubmissionRecord]:
    run = tmp_path / "c" / "param_A" / "r0"
    run.mkdir(parents=True)
    paths = SlurmPaths.of(run)
    state = PersistedState()
    state.phase, state.step, state.attempt, state.device_uuid = Phase.RUNNING, "train", 1, "GPU-node1"
    save_state(paths.run, state)
    save_job_report(paths, JobReport(job_id=job, token="tok", host="node1", started_at=1.0, device_uuid="GPU-node1",
                                     device_name="A40", cuda_visible_devices="0"))
    return paths, SubmissionRecord(token="tok", job_id=job, queue_id="q", submitted_at=0.0, lost=lost)


def test_a_job_killed_for_host_memory_is_recorded_as_slurm_out_of_memory(tmp_path: Path) -> None:
    paths, record = _ran_job(tmp_path)
    settle_job_end(paths, record, JobInfo(job_id=77, state="OUT_OF_MEMORY", source="scontrol"))
    failed = json.loads(paths.run.failed_marker.read_text())
    assert failed["reason"] == "slurm_out_of_memory" and "raise --slurm-mem" in failed["message"]
    assert failed["device"] == "GPU-node1"


@pytest.mark.parametrize("state", ["NODE_FAIL", "PREEMPTED", LOST])
def test_a_lost_job_goes_again_until_three_in_a_row_then_fails(tmp_path: Path, state: str) -> None:
    paths, record = _ran_job(tmp_path)
    ending = settle_job_end(paths, record, JobInfo(job_id=77, state=state, source="scontrol"))
    assert ending.lost == 1 and not paths.run.failed_marker.exists()
    assert load_state(paths.run).phase == Phase.INTERRUPTED  # not counted as an attempt; resumes at its step
    again = SubmissionRecord(token="tok", job_id=77, queue_id="q", submitted_at=0.0, lost=MAX_LOST_IN_A_ROW - 1)
    ending = settle_job_end(paths, again, JobInfo(job_id=77, state=state, source="scontrol"))
    assert ending.lost == MAX_LOST_IN_A_ROW
    assert json.loads(paths.run.failed_marker.read_text())["reason"] == "slurm_lost"  # not resubmitted forever


def test_a_job_that_failed_before_its_supervisor_started_points_at_slurms_output(tmp_path: Path) -> None:
    run = tmp_path / "c" / "param_B" / "r0"
    run.mkdir(parents=True)
    paths = SlurmPaths.of(run)
    record = SubmissionRecord(token="tok", job_id=91, queue_id="q", submitted_at=0.0)
    paths.run.runtime_dir.mkdir()
    paths.job_output(91).write_text("slurmstepd: error: execve(): python: No such file or directory\n")
    settle_job_end(paths, record, JobInfo(job_id=91, state="FAILED", exit_code=1, source="scontrol"))
    failed = json.loads(paths.run.failed_marker.read_text())
    assert failed["reason"] == "slurm_job_failed" and f"; see {paths.job_output(91)}" in failed["message"]
    # A job that could not even open that file (a folder the node cannot write) says where else to look.
    paths.run.failed_marker.unlink()
    paths.job_output(91).unlink()
    settle_job_end(paths, record, JobInfo(job_id=91, state="FAILED", exit_code=1, node="node7", source="scontrol"))
    failed = json.loads(paths.run.failed_marker.read_text())
    assert f"it left no slurm-91.out (the node could not write {paths.run.runtime_dir}?); see the slurmd log on node7" in failed["message"]


def test_a_stale_report_of_an_earlier_submission_does_not_count_as_this_job_having_run(tmp_path: Path) -> None:
    paths, _ = _ran_job(tmp_path, job=77)  # the report of the earlier job 77 (same id reused by another cluster reset)
    record = SubmissionRecord(token="newer", job_id=77, queue_id="q", submitted_at=0.0)
    settle_job_end(paths, record, JobInfo(job_id=77, state="FAILED", exit_code=1, source="scontrol"))
    assert json.loads(paths.run.failed_marker.read_text())["reason"] == "slurm_job_failed"
