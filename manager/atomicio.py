"""Atomic, compare-before-write file output.

Every important file goes through here: written to a temp file in the same folder, fsynced, then
renamed over the target, so a crash never leaves a half-written file under the real name. Writing
only when the content differs keeps mtimes stable, which is what makes `prepare()` idempotent.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: Path, mode: int = 0o644, durable: bool = True) -> Iterator[Path]:
    """Yield a temp path next to `path`; on success fsync it and rename it onto `path`.

    On any exception the temp file is removed and `path` is left exactly as it was.
    `durable=False` skips the fsyncs (still atomic): for files that prepare() regenerates anyway,
    where a crash can at worst leave an outdated file that the next prepare() rewrites.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if durable:
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        if durable:
            _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_bytes_atomic(path: Path, data: bytes, mode: int = 0o644, durable: bool = True) -> None:
    with atomic_path(path, mode, durable) as tmp:
        tmp.write_bytes(data)


def write_if_changed(path: Path, data: bytes | str, mode: int = 0o644, durable: bool = True) -> bool:
    """Write `data` atomically unless `path` already holds exactly it (and has `mode`).

    Returns True when the file was (re)written.
    """
    payload = data.encode() if isinstance(data, str) else data
    path = Path(path)
    try:
        if not path.is_symlink() and path.stat().st_size == len(payload) and path.read_bytes() == payload:
            if (path.stat().st_mode & 0o7777) != mode:
                os.chmod(path, mode)
            return False
    except FileNotFoundError:
        pass
    write_bytes_atomic(path, payload, mode, durable)
    return True
