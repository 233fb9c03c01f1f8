"""The two small files that tie a run folder to its SLURM job; each has exactly one writer.

`.runqueue/slurm.json` (SubmissionRecord) is written by queues, always under the run's
submission lock: the current submission's token and job id, whether a queue asked it to stop,
and whether its end has been settled (recorded) already. It is what makes a restarted queue, or
a second queue, see the run as submitted instead of submitting it again.

`.runqueue/slurm-job.json` (JobReport) is written by the job itself: that it started (job id,
host, device) and, if its supervisor returned, how. The queue reads it to tell "the supervisor
recorded the outcome" from "the job died before or while it ran".
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from runqueue.atomicio import atomic_write_json, read_json_object
from runqueue.runlock import give_to_run_owner, refuse_a_link
from runqueue.slurm.paths import SlurmPaths

STOP_CANCEL = "cancel"  # `runqueue cancel`: the run ends failed(cancelled)
STOP_INTERRUPT = "interrupt"  # second Ctrl-C / --stop-runs: the run goes again next time


@dataclass(frozen=True)
class SubmissionRecord:
    token: str  # also in the job's --comment and its command line: the job checks it is current
    job_id: int | None  # None only between writing the record and sbatch answering
    queue_id: str
    submitted_at: float
    stop_requested: str | None = None
    settled: bool = False  # the job's end has been looked at and recorded (by some queue)
    ending: str | None = None  # what the settling queue found, in words
    lost: int = 0  # jobs of this run lost in a row (node failure, vanished); carried over

    @property
    def active(self) -> bool:
        """A submission no queue has settled yet: the run counts as submitted."""
        return not self.settled

    def settle(self, ending: str) -> SubmissionRecord:
        return replace(self, settled=True, ending=ending)


@dataclass(frozen=True)
class JobReport:
    job_id: int
    token: str
    host: str
    started_at: float
    device_uuid: str
    device_name: str
    cuda_visible_devices: str | None
    ended_at: float | None = None
    exit_status: int | None = None  # the supervisor's (runqueue.supervisor EXIT_*)

    @property
    def ended(self) -> bool:
        return self.exit_status is not None


def _from_record(cls: type, record: dict[str, Any] | None) -> Any:
    if record is None:
        return None
    names = {spec.name for spec in fields(cls)}
    try:
        return cls(**{key: value for key, value in record.items() if key in names})
    except TypeError:
        return None  # a required key is missing: treat like no file


def load_submission(paths: SlurmPaths) -> SubmissionRecord | None:
    record: SubmissionRecord | None = _from_record(SubmissionRecord, read_json_object(paths.submission))
    if record is not None and not (record.job_id is None or isinstance(record.job_id, int)):
        return None
    return record


def active_submission(paths: SlurmPaths) -> SubmissionRecord | None:
    """The run's SLURM submission while it is under way: not settled, and no marker says the run is over."""
    record = load_submission(paths)
    if record is None or not record.active:
        return None
    if os.path.lexists(paths.run.done_marker) or os.path.lexists(paths.run.failed_marker):
        return None
    return record


def save_submission(paths: SlurmPaths, record: SubmissionRecord) -> None:
    paths.run.runtime_dir.mkdir(parents=True, exist_ok=True)
    # Durable: this file is what keeps a queue that restarts after a crash from submitting twice.
    atomic_write_json(paths.submission, asdict(record))
    give_to_run_owner(paths.submission, paths.run.root)


def load_job_report(paths: SlurmPaths) -> JobReport | None:
    report: JobReport | None = _from_record(JobReport, read_json_object(paths.job_report))
    return report


def save_job_report(paths: SlurmPaths, report: JobReport) -> None:
    paths.run.runtime_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(paths.job_report, asdict(report))


def record_found_job_id(paths: SlurmPaths, token: str, job_id: int) -> None:
    """Put the id of a job found by its comment on the record whose sbatch never reported it (the
    queue died during sbatch), so that `cancel`, `status` and a stopping queue can name the job."""
    with submission_lock(paths):
        record = load_submission(paths)
        if record is not None and record.token == token and record.job_id is None:
            save_submission(paths, replace(record, job_id=job_id))


@contextlib.contextmanager
def submission_lock(paths: SlurmPaths) -> Iterator[None]:
    """Exclusive per-run lock for check + submit + record (and for settling a job's end).

    flock, which Linux maps onto POSIX locks on NFS, so queues on two login nodes exclude each
    other too. Held for one sbatch call at most.
    """
    paths.run.runtime_dir.mkdir(exist_ok=True)  # never its parents: a vanished run folder stays gone
    refuse_a_link(paths.run.runtime_dir)  # a queue or `cancel` run as root must not write where a link points
    fd = os.open(paths.submission_lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o666)
    give_to_run_owner(paths.submission_lock, paths.run.root)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
