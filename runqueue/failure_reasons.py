"""Why a run's attempt failed, in words the user can act on, and whether a retry could help.

The supervisor decides *when* an attempt has failed; this module decides what to call it: the
reason recorded in state.json / lfads.failed (which also steers retries, e.g. `cuda_oom` goes to a
GPU with more free memory) and the one-line message that names the fix.
"""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

from runqueue.devices.model import CPU_SLOT_PREFIX
from runqueue.diskspace import disk_is_full
from runqueue.outlog import NotARegularFile
from runqueue.procinfo import account_name, signal_name
from runqueue.runstate import Reason
from runqueue.steps import looks_like_cuda_oom, looks_like_disk_full


def reason_for(error: OSError) -> Reason:
    """The reason for an OSError met while writing the run's own files."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return Reason.DISK_FULL
    if error.errno == errno.ENOENT:
        return Reason.FOLDER_VANISHED
    return Reason.INTERNAL_ERROR


def step_failure(step: str, exit_code: int | None, signum: int | None, tail: bytes, device_uuid: str | None,
                 run_root: Path) -> tuple[Reason, str]:
    """A step that ended badly by itself: what its last output, the disk and its end say."""
    if looks_like_cuda_oom(tail):
        if (device_uuid or "").startswith(CPU_SLOT_PREFIX):  # TensorFlow's OOM on a CPU slot is host memory
            return Reason.EXIT_STATUS, (f"{step} ran out of host memory on {device_uuid} (its last lines say so); run"
                                        " fewer runs at once (--cpu-slots) or lower the model's size or batch size")
        return Reason.CUDA_OOM, f"CUDA out of memory on {device_uuid}"
    if disk_is_full(run_root):
        return Reason.DISK_FULL, f"the disk holding {run_root} is (or was) full"
    if looks_like_disk_full(tail):  # the run folder's disk has room: the step wrote somewhere else
        return Reason.DISK_FULL, (f"{step} ran out of disk space (its last lines say so); the disk of {run_root}"
                                  " has room now, so look at the other disks it writes to (e.g. /tmp)")
    if signum is not None:
        hint = " (the kernel's out-of-memory killer sends SIGKILL: check host memory)" if signum == signal.SIGKILL else ""
        return Reason.SIGNAL, f"{step} killed by {signal_name(signum)}{hint}"
    if exit_code == 126:  # bash: found but not executable, typically a path the queue's account may not enter
        denied = [line for line in tail.decode("utf-8", "replace").splitlines() if "Permission denied" in line]
        if denied:
            return Reason.EXIT_STATUS, (f"{step} exited with status 126: {denied[-1].strip()}; the queue runs it as"
                                        f" {account_name()}, who must be able to run that program (a virtualenv in a"
                                        " private home folder is not reachable: see docs/devices.md)")
    return Reason.EXIT_STATUS, f"{step} exited with status {exit_code}"


def log_open_problem(log: Path, error: OSError) -> tuple[Reason, str]:
    """Why lfads.out could not be opened, and what the user does about it. (A folder that is gone
    is told apart by the supervisor, which looks at the folder itself.)"""
    cannot = f"cannot open {log}: {error.strerror}"
    if error.errno == errno.ENOENT and log.is_symlink():
        return Reason.INTERNAL_ERROR, f"{log} is a link to {os.readlink(log)}, which cannot be created; remove the link, or create the folder it points into"
    if error.errno == errno.EISDIR:
        return Reason.INTERNAL_ERROR, f"{cannot}; rename or remove that folder (the run's log goes there)"
    if isinstance(error, NotARegularFile):
        return Reason.INTERNAL_ERROR, f"{log} is not a regular file (a fifo, socket or device); rename or remove it (the run's log goes there)"
    reason = reason_for(error)
    if reason is Reason.INTERNAL_ERROR:
        return reason, f"{cannot}; make it writable by the queue's user, or remove it"
    return reason, cannot


def needs_the_user(error: OSError, log: Path) -> bool:
    """An lfads.out that no retry can open: a folder, a fifo or device, a dangling link, no permission,
    a read-only file system. Passing trouble (EMFILE, EIO, ENOMEM, …) and a full disk are retried."""
    if isinstance(error, NotARegularFile) or error.errno in (errno.EISDIR, errno.EACCES, errno.EPERM, errno.EROFS):
        return True
    return error.errno == errno.ENOENT and log.is_symlink()
