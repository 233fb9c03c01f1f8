"""The SLURM job watcher thread against a scripted stand-in for squeue: it outlives a bad pass, and a
job SLURM requeued after its supervisor returned is not polled every 0.2 s while it lives; a held job is said."""

from __future__ import annotations

import os
import select
import time
from pathlib import Path

import pytest

from runqueue.slurm.commands import JobInfo
from runqueue.slurm.paths import SlurmPaths
from runqueue.slurm.records import JobReport, save_job_report
from runqueue.slurm.watcher import JobWatcher

TOKEN = "t0ken"


class ScriptedSlurm:
    """squeue's answers, set by the test; every query is counted."""

    def __init__(self) -> None:
        self.state = "RUNNING"
        self.reason = ""
        self.queries: list[float] = []
        self.explode_once = False

    def query(self, job_ids: list[int]) -> dict[int, JobInfo]:
        self.queries.append(time.monotonic())
        if self.explode_once:
            self.explode_once = False
            raise RuntimeError("an answer nobody expected")
        return {job_id: JobInfo(job_id, self.state, reason=self.reason) for job_id in job_ids}

    def show_job(self, job_id: int) -> JobInfo | None:
        return None

    def from_jobcomp(self, job_id: int, submitted_at: float) -> JobInfo | None:
        return None

    def find_by_comment(self, comment: str) -> JobInfo | None:
        return None

    def cancel(self, job_id: int) -> None:
        pass


def _ended(fd: int, timeout: float) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


def test_the_watcher_outlives_a_pass_that_raises_and_still_sees_the_job_end(tmp_path: Path) -> None:
    slurm = ScriptedSlurm()
    problems: list[str] = []
    watcher = JobWatcher(slurm, min_interval_s=0.1, max_interval_s=0.2, report_problem=problems.append)  # type: ignore[arg-type]
    try:
        slurm.explode_once = True
        _key, fd = watcher.add(tmp_path, 42, TOKEN, time.time())
        deadline = time.monotonic() + 10
        while not problems and time.monotonic() < deadline:
            time.sleep(0.05)
        assert problems == ["SLURM job watcher: RuntimeError: an answer nobody expected; it goes on"]
        slurm.state = "COMPLETED"
        assert _ended(fd, 10), "the job's end was never seen: the watcher thread died"
        os.close(fd)
    finally:
        watcher.close()


def test_a_job_slurm_requeued_after_its_supervisor_returned_is_not_polled_at_full_speed(tmp_path: Path) -> None:
    slurm = ScriptedSlurm()
    watcher = JobWatcher(slurm, min_interval_s=0.5, max_interval_s=1.0)  # type: ignore[arg-type]
    try:
        _key, fd = watcher.add(tmp_path, 7, TOKEN, time.time())
        time.sleep(0.5)  # seen RUNNING
        # The first run's supervisor returned (its report says so), then a node failure: SLURM requeues the job.
        save_job_report(SlurmPaths.of(tmp_path), JobReport(7, TOKEN, "node1", time.time() - 5, "cpu-0", "cpu", None,
                                                           ended_at=time.time(), exit_status=143))
        time.sleep(0.8)  # the watcher reads the report and asks SLURM at once
        slurm.state = "PENDING"
        time.sleep(1.0)
        counted_from = len(slurm.queries)
        time.sleep(3.0)
        # Backing off to its 1 s cap (at most ~4 queries), not one every 0.2 s (~15).
        assert len(slurm.queries) - counted_from <= 6, slurm.queries
        slurm.state = "COMPLETED"
        assert _ended(fd, 10)
        os.close(fd)
    finally:
        watcher.close()


@pytest.mark.parametrize(("state", "reason", "said"), [("PENDING", "JobHeldUser", "JobHeldUser"),
                                                      ("REQUEUE_HOLD", "", "REQUEUE_HOLD")])  # scontrol requeuehold
def test_a_held_job_is_said_once_with_how_to_release_it(tmp_path: Path, state: str, reason: str, said: str) -> None:
    slurm = ScriptedSlurm()
    slurm.state, slurm.reason = state, reason
    problems: list[str] = []
    watcher = JobWatcher(slurm, min_interval_s=0.1, max_interval_s=0.2, report_problem=problems.append)  # type: ignore[arg-type]
    try:
        _key, fd = watcher.add(tmp_path, 9, TOKEN, time.time())
        time.sleep(1.0)
        assert problems == [f"{tmp_path}: SLURM job 9 is held ({said}) and waits until released: `scontrol release 9`,"
                            " or `runqueue cancel` the run"]
        os.close(fd)
    finally:
        watcher.close()


def test_a_job_found_by_its_comment_gets_its_id_recorded_for_cancel_and_status(tmp_path: Path) -> None:
    from runqueue.slurm.jobscript import COMMENT_PREFIX
    from runqueue.slurm.records import SubmissionRecord, load_submission, save_submission

    class FoundByComment(ScriptedSlurm):
        def find_by_comment(self, comment: str) -> JobInfo | None:
            # a site's plugin appended to the comment: still ours, the token is in it
            return JobInfo(314, "RUNNING", comment=f"{comment} [site:acct=lab]") if comment == COMMENT_PREFIX + TOKEN else None

    run = tmp_path / "run"
    run.mkdir()
    paths = SlurmPaths.of(run)
    save_submission(paths, SubmissionRecord(token=TOKEN, job_id=None, queue_id="q:1", submitted_at=time.time()))
    slurm = FoundByComment()
    watcher = JobWatcher(slurm, min_interval_s=0.05, max_interval_s=0.1, report_problem=lambda line: None)  # type: ignore[arg-type]
    try:
        key, _fd = watcher.add(run, None, TOKEN, time.time())
        deadline = time.monotonic() + 10
        while (load_submission(paths) or SubmissionRecord("", None, "", 0)).job_id is None and time.monotonic() < deadline:
            time.sleep(0.05)
        record = load_submission(paths)
        assert record is not None and record.job_id == 314 and record.token == TOKEN
        assert watcher.job_id(key) == 314
    finally:
        watcher.close()


def test_a_jobcomp_line_of_someone_elses_job_with_our_id_is_not_taken_for_ours(tmp_path: Path) -> None:
    from runqueue.slurm.jobscript import COMMENT_PREFIX

    class Forgotten(ScriptedSlurm):
        """squeue and scontrol forgot job 5; the jobcomp file holds a line for id 5 with this comment."""

        comment = "runqueue:another-token"

        def query(self, job_ids: list[int]) -> dict[int, JobInfo]:
            self.queries.append(time.monotonic())
            return {}

        def from_jobcomp(self, job_id: int, submitted_at: float) -> JobInfo | None:
            return JobInfo(job_id, "COMPLETED", comment=self.comment, source="jobcomp")

    slurm = Forgotten()
    watcher = JobWatcher(slurm, min_interval_s=0.05, max_interval_s=0.1)  # type: ignore[arg-type]
    try:
        key, fd = watcher.add(tmp_path, 5, TOKEN, time.time())
        assert _ended(fd, 20)  # after its misses: lost, not another job's COMPLETED
        final = watcher.remove(key)
        assert final is not None and final.source == "lost", final
        os.close(fd)
        slurm.comment = f"{COMMENT_PREFIX}{TOKEN}"
        key, fd = watcher.add(tmp_path, 5, TOKEN, time.time())
        assert _ended(fd, 10)
        final = watcher.remove(key)
        assert final is not None and (final.state, final.source) == ("COMPLETED", "jobcomp"), final
        os.close(fd)
    finally:
        watcher.close()


class HungSlurm(ScriptedSlurm):
    """slurmctld hangs: every stop command takes `hang_s` and fails, until `hung` is cleared."""

    def __init__(self, hang_s: float) -> None:
        super().__init__()
        self.hang_s = hang_s
        self.hung = True
        self.calls: list[tuple[str, int]] = []

    def check_available(self) -> None:
        pass

    def _answer(self, what: str, job_id: int) -> bool:
        self.calls.append((what, job_id))
        if self.hung:
            time.sleep(self.hang_s)
            return False
        return True

    def signal_batch(self, job_id: int, signal_name: str) -> bool:
        return self._answer(signal_name, job_id)

    def cancel(self, job_id: int) -> bool:  # type: ignore[override]
        return self._answer("scancel", job_id)


def test_stopping_slurm_jobs_never_waits_on_a_hung_slurmctld_and_is_delivered_once_it_answers(tmp_path: Path) -> None:
    from runqueue.executors.slurm import SlurmExecutor
    from runqueue.slurm.records import STOP_INTERRUPT, SubmissionRecord, load_submission, save_submission

    slurm = HungSlurm(hang_s=1.0)
    executor = SlurmExecutor(commands=slurm)  # type: ignore[arg-type]
    executor.watcher.min_interval_s = executor.watcher.max_interval_s = 0.1
    handles = []
    for job_id in (11, 12, 13):
        run = tmp_path / f"run{job_id}"
        run.mkdir()
        save_submission(SlurmPaths.of(run), SubmissionRecord(token=f"tok{job_id}", job_id=job_id, queue_id="elsewhere:1",
                                                             submitted_at=time.time()))
        handle = executor.adopt(run)
        assert handle is not None
        handles.append(handle)
    try:
        started = time.monotonic()
        for handle in handles:
            executor.interrupt(handle)  # the scheduler's second Ctrl-C
        assert time.monotonic() - started < 0.5, "the scheduler's loop waited on SLURM's commands"
        for handle in handles:
            record = load_submission(SlurmPaths.of(handle.run_dir))
            assert record is not None and record.stop_requested == STOP_INTERRUPT  # the supervisor's reading of TERM
        time.sleep(3.0)
        # Hung: one job tried per pass (signal, then scancel), the others wait behind it.
        assert {job_id for _, job_id in slurm.calls} == {11}, slurm.calls
        slurm.hung = False
        deadline = time.monotonic() + 10
        while {job_id for what, job_id in slurm.calls if what == "TERM"} != {11, 12, 13} and time.monotonic() < deadline:
            time.sleep(0.05)
        assert {job_id for what, job_id in slurm.calls if what == "TERM"} == {11, 12, 13}, slurm.calls
        count = len(slurm.calls)
        time.sleep(0.5)
        assert len(slurm.calls) == count, "a stop SLURM took was sent again"
    finally:
        executor.close()


def test_a_job_id_the_job_recorded_itself_is_taken_from_its_submission(tmp_path: Path) -> None:
    from runqueue.slurm.records import SubmissionRecord, record_found_job_id, save_submission

    paths = SlurmPaths.of(tmp_path)
    save_submission(paths, SubmissionRecord(token=TOKEN, job_id=None, queue_id="q:1", submitted_at=time.time()))
    slurm = ScriptedSlurm()  # squeue lists no job with our comment (yet)
    watcher = JobWatcher(slurm, min_interval_s=0.05, max_interval_s=0.1)  # type: ignore[arg-type]
    try:
        key, fd = watcher.add(tmp_path, None, TOKEN, time.time())
        record_found_job_id(paths, TOKEN, 77)  # what runqueue.slurm.job does when the job starts
        deadline = time.monotonic() + 10
        while watcher.job_id(key) is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert watcher.job_id(key) == 77
        slurm.state = "COMPLETED"
        assert _ended(fd, 10)
        final = watcher.remove(key)
        assert final is not None and (final.job_id, final.state) == (77, "COMPLETED")
        os.close(fd)
    finally:
        watcher.close()


def test_a_job_squeue_misses_now_and_then_is_lost_only_after_misses_in_a_row(tmp_path: Path) -> None:
    class Flaky(ScriptedSlurm):
        """squeue leaves the job out of every other answer (a controller restarting, a lagging replica)."""

        def query(self, job_ids: list[int]) -> dict[int, JobInfo]:
            self.queries.append(time.monotonic())
            return {} if len(self.queries) % 2 else {job_id: JobInfo(job_id, self.state) for job_id in job_ids}

    slurm = Flaky()
    watcher = JobWatcher(slurm, min_interval_s=0.05, max_interval_s=0.05)  # type: ignore[arg-type]
    try:
        key, fd = watcher.add(tmp_path, 8, TOKEN, time.time())
        deadline = time.monotonic() + 10
        while len(slurm.queries) < 12 and time.monotonic() < deadline and not _ended(fd, 0):
            time.sleep(0.05)
        assert not _ended(fd, 0), watcher.last_seen(key)  # never two misses in a row: not lost
        slurm.state = "COMPLETED"
        assert _ended(fd, 10)
        final = watcher.remove(key)
        assert final is not None and final.state == "COMPLETED", final
        os.close(fd)
    finally:
        watcher.close()
