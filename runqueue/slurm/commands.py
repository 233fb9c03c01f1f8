"""SLURM's command-line tools, called and parsed in one place: sbatch, squeue, scontrol, scancel.

No accounting database is assumed (no sacct): a job's state comes from `squeue -t all` while
slurmctld remembers it (MinJobAge), then from `scontrol show job`, then from the jobcomp text
file when the cluster writes one. The run folder stays the truth; these only explain endings.

Every command runs in a session of its own, so a Ctrl-C meant for the queue cannot kill an sbatch
halfway through a submission.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from runqueue.errors import RunqueueError
from runqueue.slurm.jobscript import COMMENT_PREFIX

_COMMAND_TIMEOUT_S = 60.0
_SIGNAL_TIMEOUT_S = 15.0  # a running job's signal is delivered at once; a stuck one falls back to scancel
_QUERY_FIELDS = "JobID:|,State:|,Reason:|,exit_code:|,NodeList:|,Comment:|"
_INVALID_JOB_ID = "Invalid job id specified"
_IDS_PER_QUERY = 1000  # job ids per squeue call
_JOBCOMP_TAIL_BYTES = 8 << 20

# States in which a job is over. Anything else (PENDING, RUNNING, COMPLETING, REQUEUED, SUSPENDED,
# a state a newer SLURM adds…) counts as not over yet; the run folder can still end the wait.
FINISHED_STATES = frozenset(
    {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE", "OUT_OF_MEMORY", "REVOKED"}
)
LOST = "LOST"  # our own state name: SLURM does not know the job (any more) and no file says how it ended


class SlurmError(RuntimeError):
    """A SLURM command failed; str() is one line with the command and its last error line."""


@dataclass(frozen=True)
class JobInfo:
    job_id: int
    state: str  # SLURM's name (PENDING, RUNNING, COMPLETED, CANCELLED, TIMEOUT, …) or LOST
    reason: str = ""
    exit_code: int | None = None
    signal: int | None = None
    node: str = ""
    comment: str = ""
    source: str = "squeue"  # squeue, scontrol, jobcomp, or lost

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES or self.state == LOST

    @property
    def running(self) -> bool:
        return self.state in ("RUNNING", "COMPLETING", "SUSPENDED")

    def describe(self) -> str:
        """E.g. "PENDING (Resources)", "FAILED (exit 3)", "CANCELLED (signal 15)"."""
        details = []
        if self.reason and self.reason not in ("None", "(null)"):
            details.append(self.reason)
        if self.finished and self.exit_code:
            details.append(f"exit {self.exit_code}")
        if self.finished and self.signal:
            details.append(f"signal {self.signal}")
        if self.running and self.node:
            details.append(f"on {self.node}")
        return f"{self.state} ({', '.join(details)})" if details else self.state


class SlurmCommands:
    """The SLURM client tools on PATH (or under `bin_dir`)."""

    def __init__(self, bin_dir: str | None = None) -> None:
        self.bin_dir = bin_dir
        self._jobcomp_file: Path | bool | None = False  # False: not looked up yet

    def tool(self, name: str) -> str:
        found = shutil.which(name, path=self.bin_dir) if self.bin_dir else shutil.which(name)
        if found is None:
            raise RunqueueError(
                None, f"--executor slurm: `{name}` is not on PATH", "run the queue on a SLURM login node, or load the slurm module"
            )
        return found

    def check_available(self) -> None:
        for name in ("sbatch", "squeue", "scancel", "scontrol"):
            self.tool(name)

    # ------------------------------------------------------------------ submitting
    def sbatch(self, script: Path, extra: Sequence[str] = ()) -> int:
        """Submit `script`; the job id. `extra` comes after the script's #SBATCH lines and wins."""
        result = self._run(["sbatch", "--parsable", *extra, str(script)])
        text = result.stdout.strip().splitlines()[-1:] or [""]
        job = text[0].split(";", 1)[0]  # "12" or "12;cluster"
        if not job.isdigit():
            raise SlurmError(f"sbatch printed {result.stdout.strip()!r} instead of a job id")
        return int(job)

    # ------------------------------------------------------------------ asking
    def query(self, job_ids: Iterable[int]) -> dict[int, JobInfo]:
        """One squeue call for every id (finished ones too, while slurmctld remembers them).

        Ids SLURM does not know are absent from the answer. SlurmError when squeue itself fails.
        """
        ids = sorted(set(job_ids))
        found: dict[int, JobInfo] = {}
        # In chunks: one argument of every id of a big sweep would pass the kernel's 128 KiB per argument.
        for start in range(0, len(ids), _IDS_PER_QUERY):
            chunk = ids[start:start + _IDS_PER_QUERY]
            try:
                result = self._run(["squeue", "-h", "-t", "all", "-j", ",".join(map(str, chunk)), "-O", _QUERY_FIELDS])
            except SlurmError as error:
                if _INVALID_JOB_ID in str(error):
                    continue  # none of these is known any more (squeue fails only when all are unknown)
                raise
            found.update((info.job_id, info) for info in _parse_query(result.stdout))
        return found

    def find_by_comment(self, comment: str) -> JobInfo | None:
        """The job of this user whose --comment is `comment` (to find a submission whose id was never recorded)."""
        result = self._run(["squeue", "-h", "-t", "all", "-u", str(os.getuid()), "-O", _QUERY_FIELDS])
        matches = [info for info in _parse_query(result.stdout) if comment in info.comment]  # a site may add to it
        return max(matches, key=lambda info: info.job_id) if matches else None

    def show_job(self, job_id: int) -> JobInfo | None:
        """`scontrol show job` (has the exit code and the time limit); None when slurmctld forgot the job."""
        try:
            result = self._run(["scontrol", "show", "job", "-o", str(job_id)])
        except SlurmError as error:
            if _INVALID_JOB_ID in str(error):
                return None
            raise
        return parse_scontrol_job(result.stdout)

    def show_job_fields(self, job_id: int) -> dict[str, str]:
        """`scontrol show job` as KEY -> value (values without spaces only; enough for TimeLimit, NodeList…)."""
        try:
            result = self._run(["scontrol", "show", "job", "-o", str(job_id)])
        except SlurmError:
            return {}
        return dict(re.findall(r"(?:^|\s)([A-Za-z/:]+)=(\S*)", result.stdout))

    def from_jobcomp(self, job_id: int, submitted_after: float) -> JobInfo | None:
        """The job's line in the jobcomp text file, if the cluster writes one and we can read it.

        Job ids restart when a cluster's state is wiped: only a line submitted after
        `submitted_after` (epoch seconds, less a minute for clock skew) counts.
        """
        path = self._jobcomp_path()
        if path is None:
            return None
        try:
            with open(path, "rb") as handle:
                size = handle.seek(0, os.SEEK_END)
                handle.seek(max(0, size - _JOBCOMP_TAIL_BYTES))
                text = handle.read().decode("utf-8", "replace")
        except OSError:
            return None
        found = None
        prefix = f"JobId={job_id} "
        for line in text.splitlines():
            if not line.startswith(prefix):
                continue
            submitted = _epoch(_field(line, "SubmitTime"))
            if submitted is not None and submitted < submitted_after - 60:
                continue
            found = line
        if found is None:
            return None
        info = parse_scontrol_job(found)
        return None if info is None else replace(info, source="jobcomp")

    # ------------------------------------------------------------------ stopping
    def signal_batch(self, job_id: int, signal_name: str) -> bool:
        """Send a signal to the job's batch script only (our supervisor); False when the job is not running.

        Asked first: on a pending job `scancel --batch --signal` retries "Job can not be altered now"
        for minutes (each stop would cost the command timeout), where a plain scancel drops it at once."""
        try:
            info = self.query([job_id]).get(job_id)
        except SlurmError:
            info = None
        if info is None or info.state != "RUNNING":
            return False
        try:
            self._run(["scancel", "--batch", f"--signal={signal_name}", str(job_id)], timeout_s=_SIGNAL_TIMEOUT_S)
        except SlurmError:
            return False
        return True

    def cancel(self, job_id: int) -> bool:
        """scancel: SLURM signals every process of the job (TERM, KILL after KillWait), or drops it if pending."""
        try:
            self._run(["scancel", str(job_id)])
        except SlurmError:
            return False
        return True

    # ------------------------------------------------------------------ plumbing
    def _jobcomp_path(self) -> Path | None:
        if self._jobcomp_file is False:
            self._jobcomp_file = None
            try:
                config = self._run(["scontrol", "show", "config"]).stdout
            except SlurmError:
                config = ""
            settings = dict(re.findall(r"^(\w+)\s*=\s*(.*?)\s*$", config, flags=re.MULTILINE))
            if settings.get("JobCompType") == "jobcomp/filetxt" and settings.get("JobCompLoc", "").startswith("/"):
                self._jobcomp_file = Path(settings["JobCompLoc"])
        return self._jobcomp_file if isinstance(self._jobcomp_file, Path) else None

    def _run(self, argv: list[str], timeout_s: float = _COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        argv = [self.tool(argv[0]), *argv[1:]]
        try:
            result = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except subprocess.TimeoutExpired:
            raise SlurmError(f"{Path(argv[0]).name} did not answer within {timeout_s:g}s") from None
        except OSError as error:
            raise SlurmError(f"cannot run {argv[0]}: {error.strerror}") from None
        if result.returncode != 0:
            lines = [line.strip() for line in (result.stderr or result.stdout).splitlines() if line.strip()]
            # The last line says what failed; an earlier one may name why (QOSMaxSubmitJobPerUserLimit).
            text = "; ".join(lines[-3:]) if lines else f"exit status {result.returncode}"
            raise SlurmError(f"{Path(argv[0]).name} failed: {text}")
        return result


def _parse_query(text: str) -> list[JobInfo]:
    jobs = []
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) < 6 or not parts[0].strip().isdigit():
            continue  # an array or het-job line (123_4, 5+1): never ours
        raw = parts[3].strip()
        status = int(raw) if raw.isdigit() else None
        jobs.append(
            JobInfo(
                job_id=int(parts[0]),
                state=_base_state(parts[1]),
                reason=parts[2].strip(),
                exit_code=None if status is None else status >> 8,
                signal=None if status is None else (status & 0x7F) or None,
                node=parts[4].strip(),
                comment="|".join(parts[5:-1] if parts[-1] == "" else parts[5:]).strip(),
            )
        )
    return jobs


def parse_scontrol_job(text: str) -> JobInfo | None:
    """A JobInfo from one `scontrol show job -o` line (or a jobcomp line: same KEY=value form)."""
    job = _field(text, "JobId")
    state = _field(text, "JobState")
    if job is None or not job.isdigit() or state is None:
        return None
    exit_code = signal = None
    exit_text = _field(text, "ExitCode")
    if exit_text and re.fullmatch(r"\d+:\d+", exit_text):
        code, sig = (int(part) for part in exit_text.split(":"))
        exit_code, signal = code, sig or None
    comment = re.search(r"(?:^|\s)Comment=(.*?)(?=\s+\w+=|\s*$)", text)
    return JobInfo(
        job_id=int(job),
        state=_base_state(state),
        reason=_field(text, "Reason") or "",
        exit_code=exit_code,
        signal=signal,
        node=_field(text, "NodeList") or "",
        comment=comment.group(1).strip() if comment else "",
        source="scontrol",
    )


def _field(text: str, key: str) -> str | None:
    match = re.search(rf"(?:^|\s){re.escape(key)}=(\S*)", text)
    return match.group(1) if match else None


def _base_state(state: str) -> str:
    # "CANCELLED by 0" in some outputs; flags like "RUNNING+" are not used by squeue -O State.
    return state.strip().split()[0].rstrip("+") if state.strip() else "UNKNOWN"


def _epoch(stamp: str | None) -> float | None:
    if not stamp:
        return None
    try:
        return time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None


def job_with_token(commands: SlurmCommands, token: str) -> int | None:
    """The id of the job submitted with this token (in its --comment), when SLURM lists one; None
    when it lists none or does not answer. For a submission whose sbatch never reported its id."""
    try:
        info = commands.find_by_comment(COMMENT_PREFIX + token)
    except SlurmError:
        return None
    return info.job_id if info is not None and info.job_id else None
