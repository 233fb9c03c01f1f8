"""The files the SLURM executor adds to a run's `.runqueue/` (next to layout.RunPaths' lock and state)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from runqueue.layout import RunPaths

SUBMISSION_FILE = "slurm.json"  # written by the queue: which job is the run's current submission
JOB_REPORT_FILE = "slurm-job.json"  # written by that job: it started, on which device, how it ended
SUBMISSION_LOCK_FILE = "slurm.lock"  # flock held while checking + submitting + recording
JOB_SCRIPT_FILE = "slurm-job.sh"  # the last script submitted, kept for reading (and sbatch by hand)
JOB_OUTPUT_PATTERN = "slurm-%j.out"  # SLURM's own output (not lfads.out); %j is the job id


@dataclass(frozen=True)
class SlurmPaths:
    run: RunPaths

    @classmethod
    def of(cls, run_dir: Path) -> SlurmPaths:
        return cls(RunPaths(run_dir))

    @property
    def submission(self) -> Path:
        return self.run.runtime_dir / SUBMISSION_FILE

    @property
    def job_report(self) -> Path:
        return self.run.runtime_dir / JOB_REPORT_FILE

    @property
    def submission_lock(self) -> Path:
        return self.run.runtime_dir / SUBMISSION_LOCK_FILE

    @property
    def job_script(self) -> Path:
        return self.run.runtime_dir / JOB_SCRIPT_FILE

    @property
    def job_output_pattern(self) -> Path:
        return self.run.runtime_dir / JOB_OUTPUT_PATTERN

    def job_output(self, job_id: int) -> Path:
        return self.run.runtime_dir / JOB_OUTPUT_PATTERN.replace("%j", str(job_id))
