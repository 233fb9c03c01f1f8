"""One error type for everything the user can fix: path, what we were doing, and the fix, on one line."""

from __future__ import annotations

from pathlib import Path


class RunqueueError(Exception):
    """A problem the user can act on; `str()` is the one line the CLI prints."""

    def __init__(self, path: str | Path | None, action: str, hint: str = "") -> None:
        self.path = str(path) if path is not None else None
        self.action = action
        self.hint = hint
        super().__init__(self.render())

    def render(self) -> str:
        where = f"{self.path}: " if self.path else ""
        fix = f" ({self.hint})" if self.hint else ""
        return f"{where}{self.action}{fix}"


def without_fix(message: str) -> str:
    """A `problem; fix` message's problem alone: for a status line, or to give a fix of one's own."""
    return message.split("; ", 1)[0]
