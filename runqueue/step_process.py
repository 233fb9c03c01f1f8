"""A step's processes: start `bash <step>` in the run folder, in its own process group, with the
run's environment and identity; stop every process of the run (TERM, a grace period, then KILL)."""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import sys
import time

from runqueue import legacy
from runqueue.layout import RunPaths
from runqueue.procinfo import reap_orphans, run_processes, signal_group
from runqueue.supervisor_spec import SupervisorSpec

# systemd's per-unit variables describe the queue's own process (its notify socket, its watchdog):
# a step that speaks sd_notify (a nested service, some libraries) would talk to the unit in its name.
SERVICE_MANAGER_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


def spawn_step(paths: RunPaths, spec: SupervisorSpec, attempt: int, step: str, legacy_shims: bool, pipefail: bool,
               log_fd: int, lock_fd: int) -> subprocess.Popen[bytes]:
    """`bash [-o pipefail] STEP` in the run folder, its output into the run's log."""
    env = {key: value for key, value in os.environ.items() if key not in SERVICE_MANAGER_VARIABLES}
    env.update(spec.extra_env)
    env.update(spec.device_env)
    env["RUNQUEUE_RUN_DIR"] = str(paths.root)
    env["RUNQUEUE_ATTEMPT"] = str(attempt)
    env["RUNQUEUE_STEP"] = step
    env.setdefault("PYTHONUNBUFFERED", "1")  # so the log and the console see lines as they come
    bash = shutil.which("bash", path=env.get("PATH")) or "/bin/bash"
    argv = [bash, "-o", "pipefail", step] if pipefail else [bash, step]
    if legacy_shims:
        search_path = env.get("PATH", os.defpath)
        first, last = legacy.write_shims(paths.runtime_dir / legacy.SHIM_DIR_NAME, search_path, sys.executable)
        env["PATH"] = os.pathsep.join([str(first), search_path, str(last)])
    who = spec.identity
    if who is not None and who.uid == os.geteuid() and who.gid == os.getegid():
        who = None  # already that identity: switching would need privileges for nothing
    return subprocess.Popen(
        argv,
        cwd=paths.root,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log_fd,
        stderr=subprocess.STDOUT,
        process_group=0,  # the step's own group: a time limit stops all of it at once
        pass_fds=(lock_fd,),  # see runlock: a step that outlives us still holds the run
        user=None if who is None else who.uid,
        group=None if who is None else who.gid,
        extra_groups=None if who is None else list(who.groups),
    )


class RunProcesses:
    """Every process of the run. When the supervisor's session is its own (as the executors start
    it) that is everything in the session or below it: a script may have used setsid or setpgid.
    Started by hand from a shell, the session is the user's and only the step's group is ours."""

    def __init__(self, own_session: bool) -> None:
        self.own_session = own_session

    def alive(self, process: subprocess.Popen[bytes]) -> list[int]:
        if self.own_session:
            return run_processes(os.getpid())
        if process.poll() is None:
            return [process.pid]
        try:  # started by hand: only the step's process group is ours to look at
            os.killpg(process.pid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [process.pid]

    def send_signal(self, process: subprocess.Popen[bytes], signum: int) -> None:
        signal_group(process.pid, signum)
        if not self.own_session:
            return
        for pid in run_processes(os.getpid()):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if os.getpgid(pid) != process.pid:  # the step's group had it already: a trap must run once
                    os.kill(pid, signum)

    def stop(self, process: subprocess.Popen[bytes], pidfd: int, grace_s: float) -> bool:
        """TERM every process of the run, then KILL what is left after the grace period; True when
        something was left to kill."""
        self.send_signal(process, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and self.alive(process):
            if process.poll() is None:
                select.select([pidfd], [], [], 0.05)  # wakes as soon as the step itself ends
            else:
                time.sleep(0.05)  # the pidfd stays readable once the step has ended
                # Never wait(-1) before the step itself is collected: its exit status would be lost.
                reap_orphans()
        if not self.alive(process):
            return False
        self.send_signal(process, signal.SIGKILL)
        return True
