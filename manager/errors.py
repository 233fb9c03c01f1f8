"""The one error type of the manager: a sentence that names the file, what went wrong and the fix."""

from __future__ import annotations

import errno
from pathlib import Path


class ManagerError(Exception):
    """Bad input or a state the manager refuses to work with.

    Rendered as one line: ``<path>: <problem>; <fix>`` so the CLI can print it as is.
    """

    def __init__(self, path: Path | str | None, problem: str, fix: str = "") -> None:
        self.path = Path(path) if path is not None else None
        self.problem = problem
        self.fix = fix
        super().__init__(self.render())

    def render(self) -> str:
        where = f"{self.path}: " if self.path is not None else ""
        hint = f"; {self.fix}" if self.fix else ""
        return f"{where}{self.problem}{hint}"


def describe(error: BaseException) -> str:
    """A library exception as one short line (their messages may span lines), for inside a ManagerError."""
    text = " ".join(str(error).split())
    if len(text) > 200:
        text = text[:197] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def disk_fix(error: OSError, otherwise: str) -> str:
    """The fix for a file-system error that the disk, not the path, may be the cause of."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return "free space on that disk, then run it again"
    if error.errno == errno.EROFS:
        return "that file system is mounted read-only; remount it read-write or prepare elsewhere"
    return otherwise
