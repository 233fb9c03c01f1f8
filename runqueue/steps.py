"""What the supervisor needs to know about steps: which to run, whether a script can run, why one failed."""

from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from runqueue import legacy
from runqueue.atomicio import read_small_file
from runqueue.layout import STEP_SCRIPTS, TRAIN_SCRIPT, RunPaths
from runqueue.outlog import open_for_reading
from runqueue.procinfo import account_name
from runqueue.runstate import Reason

# Messages TensorFlow, CUDA and cuDNN print when a device runs out of memory.
_CUDA_OOM = re.compile(
    rb"CUDA out of memory|ResourceExhaustedError|CUDA_ERROR_OUT_OF_MEMORY|OOM when allocating"
    rb"|out of memory trying to allocate|CUBLAS_STATUS_ALLOC_FAILED"
)


_DISK_FULL = re.compile(rb"No space left on device|Disk quota exceeded")


class StepScriptError(Exception):
    """A step script that cannot be run; `reason` goes to lfads.failed, the message to the log."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class StepPlan:
    script: str
    legacy: bool  # run with the tee shim and pipefail; check outputs afterwards
    text: str


def check_step_script(path: Path) -> str:
    """The script's text, or StepScriptError saying in one sentence why `bash <path>` cannot run it."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise StepScriptError(Reason.SCRIPT_MISSING, f"{path} does not exist; re-create the run folder") from None
    except OSError as error:
        raise StepScriptError(Reason.SCRIPT_UNREADABLE, f"cannot stat {path}: {error.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise StepScriptError(Reason.SCRIPT_UNREADABLE, f"{path} is not a regular file; replace it with the step script")
    try:
        raw = path.read_bytes()
    except OSError as error:
        if error.errno != errno.EACCES:
            hint = "check the file"
        elif info.st_uid == os.geteuid():
            hint = "make it readable (chmod u+r)"
        else:  # the queue runs as another account than the script's owner (a service)
            hint = f"make it readable by {account_name()} (chmod g+r for a shared group, or a+r)"
        raise StepScriptError(Reason.SCRIPT_UNREADABLE, f"cannot read {path}: {error.strerror}; {hint}") from None
    if b"\0" in raw[:4096]:
        raise StepScriptError(Reason.SCRIPT_UNREADABLE, f"{path} is not a shell script (binary content)")
    text = raw.decode("utf-8", "replace")
    problem = script_text_problem(path, text)
    if problem is not None:
        raise StepScriptError(Reason.SCRIPT_UNREADABLE, problem)
    return text


def script_text_problem(path: Path, text: str) -> str | None:
    """Why a script that reads fine cannot be run as a step, in one sentence with the fix; None if it can."""
    if not has_commands(text):  # bash would exit 0 and the step would count as done
        return (f"{path} has no commands (empty, or only comments); write the step's command into it"
                " (lfads-manager prepare writes the whole script)")
    if "\r\n" in text:
        # Written on Windows (MATLAB's fopen 'wt' there) and copied over: bash takes each line's
        # carriage return as part of its last word (--batch_size=50\r, $'\r': command not found).
        return (f"{path} has Windows line endings (CRLF), which bash would pass on as part of each line's last word;"
                f" convert it: sed -i 's/\\r$//' {path} (or dos2unix)")
    if text.startswith("\ufeff"):
        # Saved as "UTF-8 with BOM": bash takes the mark as part of the first word, so a first line
        # `set -euo pipefail` becomes a command not found, and the script runs on without it.
        return (f"{path} starts with a byte-order mark (saved as UTF-8 with BOM), which bash would take as part of"
                f" its first command; remove it: sed -i '1s/^\\xEF\\xBB\\xBF//' {path}")
    return None


def has_commands(text: str) -> bool:
    """Whether a shell script holds anything but blank lines and comments (a shebang is one)."""
    return any(line.strip() and not line.lstrip().startswith("#") for line in text.splitlines())


def script_problem(path: Path) -> str | None:
    """`script_text_problem` of the script at `path`; what cannot be read (a fifo, which a plain
    open would hang on, a folder, …) is the supervisor's to report."""
    try:
        head = read_small_file(path)
    except OSError:  # also NotAPlainFile: a fifo or device, or a script too long to check here
        return None
    return script_text_problem(path, head.decode("utf-8", "replace"))


def plan_steps(paths: RunPaths, resume_step: str | None) -> list[str]:
    """Step scripts to run this attempt, in order, from `resume_step` (DESIGN.md §3).

    The train step is always planned (a missing one fails with a clear reason); the other two
    run when present, except those a legacy train script already chains.
    """
    chained: frozenset[str] = frozenset()
    try:  # never a plain read: a fifo in its place would hang the supervisor
        chained = legacy.chained_steps(read_small_file(paths.train_script, 1 << 20).decode("utf-8", "replace"))
    except OSError:
        pass
    planned = [
        name
        for name in STEP_SCRIPTS
        if name == TRAIN_SCRIPT or (name not in chained and os.path.lexists(paths.root / name))
    ]
    if resume_step in planned:
        return planned[planned.index(resume_step) :]
    if resume_step in STEP_SCRIPTS:
        # Its script was removed since: go on with the steps after it, never back to training.
        later = STEP_SCRIPTS[STEP_SCRIPTS.index(resume_step) + 1 :]
        return [name for name in planned if name in later]
    return planned


def looks_like_cuda_oom(output_tail: bytes) -> bool:
    # TensorFlow says ResourceExhaustedError for a full disk too; that is no reason to move GPUs.
    return _CUDA_OOM.search(output_tail) is not None and not looks_like_disk_full(output_tail)


def looks_like_disk_full(output_tail: bytes) -> bool:
    return _DISK_FULL.search(output_tail) is not None


def read_region_tail(path: Path, start: int, max_bytes: int) -> bytes:
    """The last `max_bytes` of `path` written at or after offset `start` (a step's own output)."""
    try:
        with open_for_reading(path) as log:
            end = log.seek(0, os.SEEK_END)
            begin = max(start, end - max_bytes)
            if begin >= end:
                return b""
            log.seek(begin)
            return log.read(end - begin)
    except OSError:
        return b""


def last_lines(data: bytes, count: int) -> list[str]:
    lines = data.decode("utf-8", "replace").splitlines()
    return [line[-500:] for line in lines[-count:]]
