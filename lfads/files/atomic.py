"""Write-then-rename: a reader (or a crash) never sees half a file. The queue's writer does the work
(temp file, fsync, mode from the umask, rename); this adds the fsyncs checkpoint bundles need."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from runqueue import atomicio


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems refuse fsync on a directory
        fsync_path(directory)


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path next to `target` (its folder created if needed); on success it is
    fsynced and renamed over `target`, readable as the umask allows (the original's files were)."""
    with atomicio.atomic_path(target, mode=0o666, durable=True, make_parents=True) as tmp:
        yield tmp


def write_text_atomic(target: Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)
