"""Facts about processes from /proc: identity that survives pid reuse, and session members.

A pid alone is not an identity (pids are reused); pid + kernel start time is.
"""

from __future__ import annotations

import os
import pwd
import resource
import signal
import time
from collections.abc import Callable
from pathlib import Path

_BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            raw = stat_file.read()
    except OSError:
        return None
    # The command name may contain spaces and parentheses; the fields start after the last ')'.
    return raw[raw.rfind(b")") + 2 :].decode("ascii", "replace").split()


def process_start_time(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot, or None when there is no such process."""
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 20:
        return None
    return int(fields[19])  # field 22 of proc(5); fields[0] is field 3


def live_start_time(pid: int) -> int | None:
    """Start time of a live process, None when it is gone or a zombie (it holds no GPU memory and
    its pid is about to be reused): pid + this value identify a process across pid reuse."""
    fields = _stat_fields(pid) if pid > 0 else None
    if fields is None or len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def live_started_at(pid: int) -> float | None:
    """Wall-clock time (time.time()) a live process started, to about a clock tick; None when gone."""
    ticks = live_start_time(pid)
    if ticks is None:
        return None
    try:
        uptime_s = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return time.time() - uptime_s + ticks / os.sysconf("SC_CLK_TCK")


def session_id(pid: int) -> int | None:
    """Session id of `pid`, or None when the pid does not exist in this PID namespace."""
    if pid <= 0:
        return None
    try:
        return os.getsid(pid)
    except (OSError, OverflowError):  # OverflowError: no pid_t can hold it, so no such process
        return None


def boot_id() -> str:
    """This boot's id: anything recorded before a reboot is stale whatever its pid says."""
    try:
        return _BOOT_ID_PATH.read_text().strip()
    except OSError:
        return ""


def account_name(uid: int | None = None) -> str:
    """The user name of `uid` (default: ours), or "uid N" where it has none."""
    uid = os.geteuid() if uid is None else uid
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def is_stopped(pid: int) -> bool:
    """True while `pid` is stopped by a signal (SIGSTOP, SIGTSTP: state T)."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] == "T"


def is_zombie(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] in ("Z", "X")


def exists_unseen(pid: int) -> bool:
    """A process this account cannot see in /proc (mounted hidepid=1/2: another account's) but that
    exists: kill(pid, 0) says EPERM, not ESRCH. Its start time cannot be checked."""
    if pid <= 0 or _stat_fields(pid) is not None:
        return False
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def is_alive(pid: int | None, start_time: int | None) -> bool:
    """True when `pid` runs and is the process that started at `start_time` (if given)."""
    if not pid or pid <= 0:
        return False
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    return start_time is None or int(fields[19]) == start_time


def _all_processes() -> dict[int, tuple[str, int, int]]:
    """pid -> (state, parent pid, session id) for every process we can see."""
    table: dict[int, tuple[str, int, int]] = {}
    try:
        entries = os.scandir("/proc")
    except OSError:
        return table
    with entries:
        for entry in entries:
            if entry.name.isdigit():
                fields = _stat_fields(int(entry.name))
                # fields[0] state (field 3), fields[1] ppid (field 4), fields[3] session (field 6)
                if fields is not None and len(fields) > 3:
                    table[int(entry.name)] = (fields[0], int(fields[1]), int(fields[3]))
    return table


def run_processes(leader: int) -> list[int]:
    """Live processes belonging to the run whose supervisor is `leader` (not counting it).

    That is its session (it is the session leader), plus its descendants: with the supervisor as
    child subreaper, a step's process that escaped with setsid is re-parented to it, not to init.
    """
    table = _all_processes()
    found = []
    for pid, (state, _, sid) in table.items():
        if pid == leader or state in ("Z", "X"):
            continue
        if sid == leader:
            found.append(pid)
            continue
        ancestor, hops = table[pid][1], 0
        while ancestor > 1 and ancestor != leader and hops < 64:
            ancestor, hops = (table[ancestor][1] if ancestor in table else 0), hops + 1
        if ancestor == leader:
            found.append(pid)
    return found


def become_subreaper() -> bool:
    """Orphaned descendants are re-parented to us instead of init (Linux prctl PR_SET_CHILD_SUBREAPER)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(36, 1, 0, 0, 0) == 0  # 36 = PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def reap_orphans() -> None:
    """Collect exited children we inherited as subreaper, so none stays a zombie."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def session_members(sid: int) -> list[int]:
    """Pids of every live process in session `sid` (the steps of one run, and its supervisor)."""
    members: list[int] = []
    try:
        entries = os.scandir("/proc")
    except OSError:
        return members
    with entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            fields = _stat_fields(int(entry.name))
            # fields[3] is the session id (field 6), fields[0] the state.
            if fields is not None and len(fields) > 3 and fields[0] not in ("Z", "X") and int(fields[3]) == sid:
                members.append(int(entry.name))
    return members


def file_holders(path: Path | str, *, write_locked: bool = False) -> list[int]:
    """Pids of live processes with an open descriptor on `path`'s file (by device and inode);
    `write_locked`: only through a descriptor that holds an OFD write lock on it.

    The run lock is passed to every step, so its write-lock holders are the run's processes wherever
    they went (a step that left the session, or its folder moved), and never a queue or `status`
    that opens the lock file for a moment to test it."""
    try:
        target = os.stat(path)
    except OSError:
        return []
    me = os.getpid()
    return [pid for pid in _all_processes() if pid != me and _holds(pid, target, write_locked) is True]


def holds_write_lock_on(pid: int, path: Path | str) -> bool | None:
    """Whether `pid` holds an OFD write lock on `path` (a run's supervisor and steps do); None when
    its descriptors cannot be read (another account's process, for anyone but root)."""
    try:
        target = os.lstat(path)  # a link in the lock's place (to another run's lock) is no lock of this run
    except OSError:
        return False
    return _holds(pid, target, write_locked=True)


def _holds(pid: int, target: os.stat_result, write_locked: bool) -> bool | None:
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except PermissionError:
        return None
    except OSError:
        return False
    for name in names:
        try:
            found = os.stat(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if (found.st_dev, found.st_ino) == (target.st_dev, target.st_ino) and (
                not write_locked or _holds_write_lock(pid, name)):
            return True
    return False


def _holds_write_lock(pid: int, fd_name: str) -> bool:
    try:
        with open(f"/proc/{pid}/fdinfo/{fd_name}") as info:
            return any(line.startswith("lock:") and "OFDLCK" in line and "WRITE" in line for line in info)
    except OSError:
        return False


def cwd_identity(pid: int) -> tuple[int, int, bool] | None:
    """(device, inode, deleted) of the folder `pid` works in: the folder itself, whatever it is
    called now (moved) or whether it still has a name at all (deleted); None when unreadable."""
    try:
        info = os.stat(f"/proc/{pid}/cwd")
    except OSError:
        return None
    return info.st_dev, info.st_ino, info.st_nlink == 0


def has_env(pid: int, name: str) -> bool | None:
    """Whether `pid`'s environment sets `name`; None when it cannot be read."""
    prefix = f"{name}=".encode()
    try:
        with open(f"/proc/{pid}/environ", "rb") as environ:
            return any(item.startswith(prefix) for item in environ.read().split(b"\0"))
    except OSError:
        return None


def processes_with_env(name: str, accept: Callable[[str], bool]) -> list[int]:
    """Pids of live processes whose environment sets `name` to a value `accept` takes."""
    prefix = f"{name}=".encode()
    found = []
    for pid in _all_processes():
        try:
            with open(f"/proc/{pid}/environ", "rb") as environ:
                values = [item[len(prefix):] for item in environ.read().split(b"\0") if item.startswith(prefix)]
        except OSError:
            continue
        if values and accept(os.fsdecode(values[-1])):
            found.append(pid)
    return found


def steps_started_for(run_dir: str) -> list[int]:
    """Live processes started as steps of the run at `run_dir` (their RUNQUEUE_RUN_DIR names it) that
    work in that very folder or below it, the folder told by identity: a run moved away keeps its old path in its steps'
    environment, and a new run may live there now. With nothing at `run_dir` any more (moved away,
    deleted) every process naming it counts. The last word on whether a run whose lock is gone still
    runs: a user who deletes `.runqueue/` (or its lock) under an orphaned step must not get the run
    started twice, nor its device given away."""
    try:
        here = os.stat(run_dir)
        folder: tuple[int, int] | None = (here.st_dev, here.st_ino)
    except OSError:
        folder = None
    own = os.path.realpath(run_dir)
    found = []
    for pid in processes_with_env("RUNQUEUE_RUN_DIR", lambda value: value == run_dir or os.path.realpath(value) == own):
        if pid != os.getpid() and (folder is None or _works_in(pid, folder, own)):
            found.append(pid)
    return found


def _works_in(pid: int, folder: tuple[int, int], real_path: str) -> bool:
    """Whether `pid` works in `folder` or below it (a step may `cd lfadsOutput`)."""
    cwd = cwd_identity(pid)
    if cwd is not None and cwd[:2] == folder:
        return True
    try:
        return os.path.realpath(f"/proc/{pid}/cwd").startswith(real_path + os.sep)
    except OSError:
        return False


def signal_session(sid: int, signum: int, *, spare: frozenset[int] = frozenset()) -> int:
    """Send `signum` to every process of session `sid` except `spare`; returns how many were signalled.

    Catches step processes that left their process group (setsid/setpgid in a script).
    """
    count = 0
    for pid in session_members(sid):
        if pid in spare:
            continue
        try:
            os.kill(pid, signum)
            count += 1
        except (ProcessLookupError, PermissionError):
            pass
    return count


Identified = tuple[int, int]  # (pid, kernel start time): a process, not just a number that may be reused


def identify(pids: list[int]) -> list[Identified]:
    """The live processes among `pids`, each with its start time."""
    return [(pid, start) for pid in pids if (start := live_start_time(pid)) is not None]


def signal_identified(targets: list[Identified], signum: int) -> list[Identified]:
    """Send `signum` to each process of `targets` that is still that process (not a gone one whose pid
    went to someone else); returns those signalled (another account's are skipped)."""
    sent = []
    for pid, start in targets:
        if not is_alive(pid, start):
            continue
        try:
            os.kill(pid, signum)
        except (ProcessLookupError, PermissionError):
            continue
        sent.append((pid, start))
    return sent


def signal_group(pgid: int, signum: int) -> bool:
    try:
        os.killpg(pgid, signum)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


_STEPS_NOFILE_ENV = "RUNQUEUE_STEPS_NOFILE"  # the soft limit the queue found: what its steps run with
_MOST_OPEN_FILES = 1 << 20


def raise_open_file_limit() -> None:
    """Lift the queue's soft limit on open files to its hard one, and note the old soft limit for
    the steps (restore_open_file_limit), which keep it: programs that use select() need the usual 1024.

    A queue holds a few descriptors per running run (a pidfd or a SLURM watch's pipe, a handle on
    its folder), so a sweep of hundreds of SLURM jobs would run out at a soft limit of 1024. The
    queue process waits with epoll and poll, never select(), so descriptors past 1024 are fine."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _MOST_OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, _MOST_OPEN_FILES)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return  # some containers refuse: the soft limit stays
    os.environ.setdefault(_STEPS_NOFILE_ENV, str(soft))  # a queue started by a queue keeps the first's


def restore_open_file_limit() -> None:
    """In a supervisor: put back the soft limit the queue found, for the steps it starts."""
    try:
        soft = int(os.environ.pop(_STEPS_NOFILE_ENV, ""))
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    except (ValueError, OSError):
        pass  # not started by a queue that raised it, or a value the system refuses: keep what there is


def open_file_limit() -> int:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return _MOST_OPEN_FILES if soft == resource.RLIM_INFINITY else soft
