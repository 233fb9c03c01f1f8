"""What the queue prints: run output prefixed by run name, events, one status line, a summary.

On a terminal the status line is redrawn in place at the bottom; elsewhere (a pipe, a log, the
journal) it is printed as an ordinary line, at most every `quiet_status_every_s` seconds.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Console:
    def __init__(self, *, quiet: bool = False, stream: TextIO | None = None, status_every_s: float = 30.0) -> None:
        self.quiet = quiet
        self.stream = stream if stream is not None else sys.stdout
        self.tty = self.stream.isatty()
        self.status_every_s = status_every_s
        self._status = ""
        self._status_shown = False
        self._last_status_print = 0.0
        self._said_once: set[str] = set()

    def run_output(self, name: str, lines: list[str]) -> None:
        """Lines a run printed (hidden with --quiet)."""
        if self.quiet or not lines:
            return
        self._write("".join(f"[{name}] {line}\n" for line in lines))

    def event(self, text: str) -> None:
        """Something happened to a run or the queue; always shown."""
        self._write(f"runqueue: {text}\n")

    def event_once(self, text: str) -> None:
        """A problem that may recur at every look (a bad claims directory, an unreadable folder): said once."""
        if text not in self._said_once:
            self._said_once.add(text)
            self.event(text)

    def status(self, text: str, *, force: bool = False) -> None:
        if self.tty:
            if text != self._status or force:
                self._status = text
                self._redraw_status()
            return
        now = time.monotonic()
        due = force or now - self._last_status_print >= self.status_every_s
        if text != self._status and due:
            self._status = text
            self._last_status_print = now
            self._write(f"runqueue: {text}\n")

    def _write(self, text: str) -> None:
        try:
            if self.tty and self._status_shown:
                self.stream.write("\r\x1b[K")
                self._status_shown = False
            self.stream.write(text)
            if self.tty and self._status:
                self._redraw_status(flush=False)
            self.stream.flush()
        except (OSError, ValueError):
            pass  # the terminal or pipe went away (EPIPE, or EIO after a hang-up); the runs do not care

    def _redraw_status(self, *, flush: bool = True) -> None:
        try:
            self.stream.write(f"\r\x1b[K{self._status}")
            self._status_shown = True
            if flush:
                self.stream.flush()
        except (OSError, ValueError):
            pass  # the terminal went away (EIO after a hang-up); the runs do not care

    def close(self) -> None:
        """End the status line; what is written after (the summary) is never followed by it again."""
        self._status = ""
        if self.tty and self._status_shown:
            self._status_shown = False
            try:
                self.stream.write("\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass
