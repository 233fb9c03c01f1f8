"""Follows a run's lfads.out for the console: new complete lines since the last look.

Reads at most `max_bytes` per look; a run that prints faster than anyone can read is skipped
ahead (the file keeps everything), so a chatty run never slows the queue. A carriage return
redraws a line (progress bars): only what a terminal would show is kept, and a line that grows
past `max_bytes` without ending is dropped with a note, so memory stays bounded.
"""

from __future__ import annotations

import os
from pathlib import Path

from runqueue.outlog import open_for_reading


class LogTail:
    def __init__(self, path: Path, offset: int | None = None, max_bytes: int = 256 * 1024) -> None:
        self.path = path
        self.offset = offset
        self.max_bytes = max_bytes
        self.partial = b""
        self.overlong = False  # dropping the rest of a line that grew past max_bytes

    def read_lines(self, *, final: bool = False, folder_fd: int | None = None) -> list[str]:
        """Complete new lines; with `final`, also an unterminated last line. With `folder_fd` (the
        queue's descriptor on the run folder), read through it: a folder renamed while its run goes
        on is still followed."""
        try:
            with open_for_reading(self.path, folder_fd) as log:
                size = os.fstat(log.fileno()).st_size
                if self.offset is None:
                    self.offset = size  # adopted run: do not replay its history
                if size < self.offset:
                    self.offset = 0  # truncated or replaced by hand
                    self.partial, self.overlong = b"", False
                lines: list[str] = []
                if size - self.offset > self.max_bytes:
                    skipped = size - self.max_bytes - self.offset
                    lines.append(f"… {skipped / 1e6:.1f} MB of output not shown here (see {self.path.name})")
                    self.offset = size - self.max_bytes
                    self.partial, self.overlong = b"", False
                    log.seek(self.offset)
                    log.readline()  # resynchronise on a line boundary
                    self.offset = log.tell()
                else:
                    log.seek(self.offset)
                data = log.read(size - self.offset)
        except OSError:
            return []
        self.offset += len(data)
        data = self.partial + data
        *complete, partial = data.split(b"\n")
        if self.overlong:
            if complete:
                complete.pop(0)  # the overlong line's end
                self.overlong = False
            else:
                partial = b""
        partial = _redrawn(partial)
        if len(partial) > self.max_bytes:
            complete.append(f"… a line of over {self.max_bytes // 1024} KB without an end, not shown here (see {self.path.name})".encode())
            partial, self.overlong = b"", True
        self.partial = partial
        if final and self.partial:
            complete.append(self.partial)
            self.partial = b""
        lines.extend(_visible(line) for line in complete)
        return lines


def _redrawn(partial: bytes) -> bytes:
    """An unfinished line from its last carriage return on: the earlier text was drawn over."""
    start = partial.rstrip(b"\r").rfind(b"\r")
    return partial[start + 1 :] if start >= 0 else partial


def _visible(line: bytes) -> str:
    """What a terminal shows of a line: its last non-empty carriage-return segment."""
    segments = [segment for segment in line.split(b"\r") if segment]
    return segments[-1].decode("utf-8", "replace") if segments else ""
