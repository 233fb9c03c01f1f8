"""Supervisors as processes on this machine, each the leader of its own session.

The supervisor is started with `python -S` and an explicit import path: skipping site-packages
setup halves interpreter start-up, which is most of the time between one run's end and the
next run's start.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import runqueue
from runqueue import runlock
from runqueue.executors.base import Executor, PendingStart, RunHandle
from runqueue.layout import RunPaths
from runqueue.procinfo import is_alive, process_start_time
from runqueue.runstate import load_state
from runqueue.supervisor_spec import SupervisorSpec

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


class LocalExecutor(Executor):
    name = "local"

    def launch(self, spec: SupervisorSpec) -> PendingStart:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            process = subprocess.Popen(
                supervisor_command(spec, theirs.fileno()),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,  # start-up crashes only; later output goes to lfads.out
                pass_fds=(theirs.fileno(),),
                start_new_session=True,  # survives the queue, its terminal and its Ctrl-C
            )
        except OSError as error:
            ours.close()
            return PendingStart(Path(spec.run_dir), spec, {"status": "error", "message": f"cannot start a supervisor: {error}"})
        finally:
            theirs.close()
        return PendingStart(Path(spec.run_dir), spec, native=(process, ours, bytearray()))

    def await_replies(self, pending: list[PendingStart], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        with selectors.DefaultSelector() as selector:
            for start in pending:
                if start.native is not None and not start.reply:
                    selector.register(start.native[1], selectors.EVENT_READ, start)
            while selector.get_map():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                for key, _ in selector.select(remaining):
                    start = key.data
                    _, sock, buffer = start.native
                    chunk = b""
                    with contextlib.suppress(OSError):
                        chunk = sock.recv(4096)
                    buffer += chunk
                    if b"\n" in buffer or not chunk:
                        selector.unregister(sock)
                        start.reply = self._parse_reply(start, bytes(buffer))
        for start in pending:
            if not start.reply:
                start.reply = {"status": "error", "message": f"supervisor did not answer within {timeout_s:g}s"}

    @staticmethod
    def _parse_reply(start: PendingStart, raw: bytes) -> dict[str, object]:
        import json

        line = raw.split(b"\n", 1)[0]
        if line:
            with contextlib.suppress(ValueError):
                reply = json.loads(line)
                if isinstance(reply, dict):
                    return reply
        process = start.native[0]
        try:
            code = process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        stderr = b""
        with contextlib.suppress(OSError, ValueError):
            stderr = process.stderr.read() if code is not None else b""
        detail = stderr.decode(errors="replace").strip().splitlines()
        return {
            "status": "error",
            "message": f"supervisor exited with status {code} before taking the lock"
            + (f": {detail[-1]}" if detail else ""),
        }

    def confirm(self, pending: PendingStart) -> RunHandle:
        process, sock, _ = pending.native
        with contextlib.suppress(OSError):
            sock.sendall(b"go\n")
        sock.close()
        if process.stderr is not None:
            process.stderr.close()
        return RunHandle(
            run_dir=pending.run_dir,
            pid=process.pid,
            start_time=process_start_time(process.pid),
            device_uuid=pending.spec.device_uuid,
            adopted=False,
            wait_fd=os.pidfd_open(process.pid),
            attempt=pending.reply.get("attempt") if isinstance(pending.reply.get("attempt"), int) else None,
            native=process,
        )

    def abandon(self, pending: PendingStart) -> None:
        if pending.native is None:
            return
        process, sock, _ = pending.native
        with contextlib.suppress(OSError):
            sock.sendall(b"no\n")
        sock.close()
        if process.stderr is not None:
            process.stderr.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def adopt(self, run_dir: Path) -> RunHandle | None:
        paths = RunPaths(run_dir)
        state = load_state(paths)
        pid, start_time = state.supervisor_pid, state.supervisor_start_time
        if not is_alive(pid, start_time):
            holder = runlock.read_holder(paths.lock)
            if holder is None or not is_alive(holder.pid, holder.start_time):
                return None
            pid, start_time = holder.pid, holder.start_time
        assert pid is not None
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            return None
        if not is_alive(pid, start_time):  # gone (and maybe reused) between the check and the open
            os.close(pidfd)
            return None
        return RunHandle(run_dir, pid, start_time, state.device_uuid, True, pidfd, attempt=state.attempt or None)

    def collect(self, handle: RunHandle) -> int | None:
        code = None
        if handle.native is not None:
            code = handle.native.wait()
        with contextlib.suppress(OSError):
            os.close(handle.wait_fd)
        handle.wait_fd = -1
        return code

    def interrupt(self, handle: RunHandle) -> None:
        self._signal(handle, signal.SIGTERM)

    def cancel(self, handle: RunHandle) -> None:
        self._signal(handle, signal.SIGUSR1)

    @staticmethod
    def _signal(handle: RunHandle, signum: int) -> None:
        # Through the pidfd: never a reused pid.
        with contextlib.suppress(ProcessLookupError, OSError):
            signal.pidfd_send_signal(handle.wait_fd, signum)
