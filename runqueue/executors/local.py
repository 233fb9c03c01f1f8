"""Supervisors as processes on this machine, each the leader of its own session.

They are forked by a fork server (forkserver.py) started with `python -S` and an explicit import
path, so neither interpreter start-up nor imports sit between one run's end and the next run's
start. `supervisor_command` is the equivalent stand-alone command line (what a SLURM job runs).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import selectors
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import runqueue
from runqueue import runlock
from runqueue.executors.base import Executor, PendingStart, RunHandle
from runqueue.layout import RunPaths
from runqueue.procinfo import is_alive, is_stopped, live_start_time, process_start_time
from runqueue.runstate import load_state
from runqueue.slurm.job import QUEUE_ID_PREFIX as SLURM_QUEUE_ID_PREFIX
from runqueue.slurm.paths import SlurmPaths
from runqueue.slurm.records import active_submission, load_job_report
from runqueue.supervisor_spec import SupervisorSpec

_ABANDON_WAIT_S = 2.0  # a supervisor told "no" (or that said why it cannot start) exits in milliseconds
_PACKAGE_PARENT = str(Path(runqueue.__file__).resolve().parent.parent)
_BOOTSTRAP = (
    f"import sys; sys.path.insert(0, {_PACKAGE_PARENT!r}); "
    "from runqueue.supervisor import main; sys.exit(main())"
)


def supervisor_command(spec: SupervisorSpec, control_fd: int | None) -> list[str]:
    """The command line of a supervisor (also what a SLURM job script would run)."""
    argv = [sys.executable, "-S", "-c", _BOOTSTRAP, "--spec", spec.to_argv_json()]
    if control_fd is not None:
        argv += ["--control-fd", str(control_fd)]
    return argv


_FORKSERVER_BOOTSTRAP = (
    f"import sys; sys.path.insert(0, {_PACKAGE_PARENT!r}); "
    "from runqueue.executors.forkserver import main; sys.exit(main())"
)


class LocalExecutor(Executor):
    """Supervisors forked by a fork server (see forkserver.py) on this machine."""

    name = "local"

    def __init__(self) -> None:
        self._server: subprocess.Popen[bytes] | None = None
        self._link: socket.socket | None = None

    def _ensure_server(self) -> socket.socket:
        if self._link is not None and self._server is not None and self._server.poll() is None:
            return self._link
        self.close()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._server = subprocess.Popen(
                [sys.executable, "-S", "-c", _FORKSERVER_BOOTSTRAP, str(theirs.fileno())],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                start_new_session=True,
            )
        finally:
            theirs.close()
        self._link = ours
        return ours

    def launch(self, spec: SupervisorSpec) -> PendingStart:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            link = self._ensure_server()
            socket.send_fds(link, [spec.to_argv_json().encode()], [theirs.fileno()])
            answer = json.loads(link.recv(4096) or b"{}")
        except (OSError, ValueError) as error:
            ours.close()
            self.close()
            return PendingStart(Path(spec.run_dir), spec, {"status": "error", "message": f"cannot start a supervisor: {error}"})
        finally:
            theirs.close()
        pid = answer.get("pid")
        if not isinstance(pid, int):
            ours.close()
            return PendingStart(Path(spec.run_dir), spec, {"status": "error", "message": str(answer.get("error", "fork server gave no pid"))})
        # Opened now, while the supervisor cannot have finished (it waits for our go), so the
        # pidfd is surely this process; it may already be gone if it failed at once.
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            pidfd = _already_ended_fd()
        return PendingStart(Path(spec.run_dir), spec, native=_Launched(pid, pidfd, ours, bytearray()))

    def await_replies(self, pending: list[PendingStart], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        with selectors.DefaultSelector() as selector:
            for start in pending:
                if start.native is not None and not start.reply:
                    selector.register(start.native.control, selectors.EVENT_READ, start)
            while selector.get_map():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                for key, _ in selector.select(remaining):
                    start = key.data
                    launched: _Launched = start.native
                    chunk = b""
                    with contextlib.suppress(OSError):
                        chunk = launched.control.recv(4096)
                    launched.buffer += chunk
                    if b"\n" in launched.buffer or not chunk:
                        selector.unregister(launched.control)
                        start.reply = _parse_reply(bytes(launched.buffer))
        for start in pending:
            if not start.reply:
                start.reply = {"status": "error", "message": f"supervisor did not answer within {timeout_s:g}s"}

    def confirm(self, pending: PendingStart) -> RunHandle:
        launched: _Launched = pending.native
        with contextlib.suppress(OSError):
            launched.control.sendall(b"go\n")
        launched.control.close()
        attempt = pending.reply.get("attempt")
        return RunHandle(
            run_dir=pending.run_dir,
            pid=launched.pid,
            start_time=process_start_time(launched.pid),
            device_uuid=pending.spec.device_uuid,
            adopted=False,
            wait_fd=launched.pidfd,
            attempt=attempt if isinstance(attempt, int) else None,
        )

    def abandon(self, pending: PendingStart) -> None:
        launched: _Launched | None = pending.native
        if launched is None:
            return
        with contextlib.suppress(OSError):
            launched.control.sendall(b"no\n")
        launched.control.close()
        # It lets go of the run lock as it exits, at once: waited for (briefly), so that the next
        # look at the run does not take it for running elsewhere.
        poller = select.poll()  # not select.select: the queue's descriptors may number past 1024
        poller.register(launched.pidfd, select.POLLIN)
        with contextlib.suppress(OSError):
            poller.poll(int(_ABANDON_WAIT_S * 1000))
        os.close(launched.pidfd)

    def submitted(self, run_dir: Path) -> bool:
        # A SLURM queue on the same tree handed this run to a job: that job runs it, not us.
        return active_submission(SlurmPaths.of(run_dir)) is not None

    def elsewhere_text(self, run_dir: Path) -> str:
        record = active_submission(SlurmPaths.of(run_dir))
        if record is None:
            return super().elsewhere_text(run_dir)
        job = f"SLURM job {record.job_id}" if record.job_id is not None else "a SLURM job (id not recorded yet)"
        report = load_job_report(SlurmPaths.of(run_dir))
        if report is not None and report.job_id == record.job_id and report.ended:
            # Its supervisor returned, but only a SLURM queue settles the submission (a retry, an interruption).
            return (f"was run by {job}, which has ended; only `runqueue run --executor slurm` on this tree records how"
                    f" and goes on with it (if that cluster is gone for good, delete {SlurmPaths.of(run_dir).submission}"
                    " and this queue runs it)")
        return (f"is handed to {job} by a SLURM queue; left to SLURM (`runqueue cancel` stops it there; if that "
                f"cluster is gone for good, delete {SlurmPaths.of(run_dir).submission} and this queue runs it)")

    def adopt(self, run_dir: Path) -> RunHandle | None:
        paths = RunPaths(run_dir)
        state = load_state(paths)
        if self.submitted(run_dir) or (state.queue_id or "").startswith(SLURM_QUEUE_ID_PREFIX):
            # A SLURM job's supervisor (this host may be a SLURM node): that job and its queue own
            # the run; a local queue must never stop it, only see it end.
            return None
        live = runlock.live_supervisor(paths.lock, state.supervisor_pid, state.supervisor_start_time)
        if live is None:
            return None
        pid, start_time = live
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            return None
        if not is_alive(pid, start_time):  # gone (and maybe reused) between the check and the open
            os.close(pidfd)
            return None
        return RunHandle(run_dir, pid, start_time, state.device_uuid, True, pidfd, attempt=state.attempt or None,
                         queue_id=state.queue_id)

    def run_by_another_queue(self, handle: RunHandle) -> str | None:
        # queue_id is "host:pid" of the queue that launched the supervisor. That queue is alive if
        # a process with that pid started no later than the supervisor (a reused pid is newer).
        # Read afresh when state.json is this supervisor's: at adoption it may not have written it yet.
        state = load_state(RunPaths(handle.run_dir))
        queue_id = state.queue_id if state.supervisor_pid == handle.pid else handle.queue_id
        host, _, pid_text = (queue_id or "").rpartition(":")
        if host != socket.gethostname() or not pid_text.isdigit() or int(pid_text) == os.getpid():
            return None
        started = live_start_time(int(pid_text))
        if started is None or handle.start_time is None or started > handle.start_time:
            return None
        return f"queue pid {pid_text}"

    def collect(self, handle: RunHandle) -> int | None:
        # Supervisors are not our children (the fork server's, reaped by the kernel): their
        # outcome is in the run folder, which is where the scheduler looks.
        with contextlib.suppress(OSError):
            os.close(handle.wait_fd)
        handle.wait_fd = -1
        return None

    def continue_stopped(self, handle: RunHandle) -> bool:
        if not is_stopped(handle.pid) or not is_alive(handle.pid, handle.start_time):
            return False
        self._signal(handle, signal.SIGCONT)
        return True

    def interrupt(self, handle: RunHandle) -> None:
        self._signal(handle, signal.SIGTERM)

    def cancel(self, handle: RunHandle) -> None:
        self._signal(handle, signal.SIGUSR1)

    @staticmethod
    def _signal(handle: RunHandle, signum: int) -> None:
        # Through the pidfd: never a reused pid.
        with contextlib.suppress(ProcessLookupError, OSError):
            signal.pidfd_send_signal(handle.wait_fd, signum)

    def close(self) -> None:
        if self._link is not None:
            self._link.close()
            self._link = None
        if self._server is not None:
            try:
                self._server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._server.kill()
                self._server.wait()
            self._server = None


@dataclass
class _Launched:
    pid: int
    pidfd: int
    control: socket.socket
    buffer: bytearray


def _parse_reply(raw: bytes) -> dict[str, object]:
    line = raw.split(b"\n", 1)[0]
    if line:
        with contextlib.suppress(ValueError):
            reply = json.loads(line)
            if isinstance(reply, dict):
                return reply
    return {"status": "error", "message": "supervisor ended before taking the lock"}


def _already_ended_fd() -> int:
    """A descriptor that is readable at once, standing in for the pidfd of a process already gone."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    os.close(write_end)
    return read_end
