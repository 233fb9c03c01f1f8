"""Follows a run's lfads.out for the console: new complete lines since the last look.

Reads at most `max_bytes` per look; a run that prints faster than anyone can read is skipped
ahead (the file keeps everything), so a chatty run never slows the queue.
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

    def read_lines(self, *, final: bool = False) -> list[str]:
        """Complete new lines; with `final`, also an unterminated last line."""
        try:
            with open_for_reading(self.path) as log:
                size = os.fstat(log.fileno()).st_size
                if self.offset is None:
                    self.offset = size  # adopted run: do not replay its history
                if size < self.offset:
                    self.offset = 0  # truncated or replaced by hand
                    self.partial = b""
                lines: list[str] = []
                if size - self.offset > self.max_bytes:
                    skipped = size - self.max_bytes - self.offset
                    lines.append(f"… {skipped / 1e6:.1f} MB of output not shown here (see {self.path.name})")
                    self.offset = size - self.max_bytes
                    self.partial = b""
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
        *complete, self.partial = data.split(b"\n")
        if final and self.partial:
            complete.append(self.partial)
            self.partial = b""
        lines.extend(line.decode("utf-8", "replace").rstrip("\r") for line in complete)
        return lines
