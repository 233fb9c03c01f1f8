"""Compare-before-write file output for the manager, on the queue's atomic writer.

Every important file is written to a temp file in the same folder, fsynced, then renamed over the
target (`runqueue.atomicio`), so a crash never leaves a half-written file under the real name.
Writing only when the content differs keeps mtimes stable, which is what makes `prepare()`
idempotent.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from runqueue import atomicio


@contextlib.contextmanager
def atomic_path(path: Path, mode: int = 0o644, durable: bool = True) -> Iterator[Path]:
    """Yield a temp path next to `path` (its folder created if needed); on success it replaces `path`.

    `durable=False` skips the fsyncs (still atomic): for files that prepare() regenerates anyway,
    where a crash can at worst leave an outdated file that the next prepare() rewrites.
    """
    with atomicio.atomic_path(path, mode=mode, durable=durable, make_parents=True) as tmp:
        yield tmp


def write_bytes_atomic(path: Path, data: bytes, mode: int = 0o644, durable: bool = True) -> None:
    atomicio.atomic_write_bytes(path, data, mode=mode, durable=durable, make_parents=True)


def write_if_changed(path: Path, data: bytes | str, mode: int = 0o644, durable: bool = True, force: bool = False,
                     before_write: Callable[[], None] | None = None) -> bool:
    """Write `data` atomically unless `path` already holds exactly it (and has `mode`) and not `force`.
    `before_write` runs only when the file is about to be (re)written.

    Returns True when the file was (re)written.
    """
    payload = data.encode() if isinstance(data, str) else data
    path = Path(path)
    wanted_mode = mode & ~atomicio.current_umask()  # what a fresh write gets
    try:
        if not force and not path.is_symlink() and path.stat().st_size == len(payload) and path.read_bytes() == payload:
            if (path.stat().st_mode & 0o7777) != wanted_mode:
                os.chmod(path, wanted_mode)
            return False
    except FileNotFoundError:
        pass
    if before_write is not None:
        before_write()
    write_bytes_atomic(path, payload, mode, durable)
    return True
