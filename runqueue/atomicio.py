"""Crash-safe small-file writes (temp file + fsync + rename) and tolerant JSON reads."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: Path, *, mode: int = 0o666, durable: bool = True, make_parents: bool = False) -> Iterator[Path]:
    """Yield a temp path next to `path`; when the block succeeds, fsync it and rename it onto `path`.

    Readers see the old file or the new one, never a partial one; on any exception the temp file
    is removed and `path` is left as it was. `durable=False` skips the fsyncs (still atomic): for
    files whose loss on power failure costs only a hint or a regeneration, never for markers the
    user relies on. The parent is not created unless asked: a run folder that vanished must fail
    the write, not be silently recreated.
    """
    path = Path(path)
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise _naming(error, path) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if durable:
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        os.chmod(tmp, mode & ~current_umask())  # mkstemp made it 0600; the umask decides, as for open()
        take_folder_group(tmp)
        os.replace(tmp, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if error.filename in (None, tmp_name, str(tmp)):
            raise _naming(error, path) from None
        raise
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if durable:
        _fsync_directory(path.parent)


def take_folder_group(path: Path | str, fd: int | None = None) -> None:
    """Give a file we just created its folder's group, as a setgid folder would, when that group is
    one of ours but not our own: a service account (a member of the lab's group) writing in a run
    tree without the setgid bit would otherwise leave files the run's owner cannot rewrite (the log,
    the markers, the state), so the owner could no longer run the run themselves."""
    with contextlib.suppress(OSError):
        folder_gid = os.stat(os.path.dirname(os.path.abspath(path))).st_gid
        if folder_gid == os.getegid() or folder_gid not in os.getgroups():
            return
        info = os.fstat(fd) if fd is not None else os.lstat(path)
        if fd is not None:
            named = os.lstat(path)  # the descriptor must be that very name's file, not a link's target
            if not stat.S_ISREG(named.st_mode) or (named.st_dev, named.st_ino) != (info.st_dev, info.st_ino):
                return
        if info.st_uid == os.geteuid() and info.st_gid != folder_gid:
            if fd is not None:
                os.fchown(fd, -1, folder_gid)
            else:
                os.chown(path, -1, folder_gid, follow_symlinks=False)


def _naming(error: OSError, path: Path) -> OSError:
    """The same error about the file the caller asked for, not our temp file (gone by now)."""
    if error.errno is None:
        return error
    return type(error)(error.errno, error.strerror, str(path))


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (threads may be writing)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes, *, mode: int = 0o666, durable: bool = True,
                       make_parents: bool = False) -> None:
    """Replace `path` with `data` atomically (see `atomic_path`)."""
    with atomic_path(path, mode=mode, durable=durable, make_parents=make_parents) as tmp:
        tmp.write_bytes(data)


def atomic_write_json(path: Path, value: Any, *, durable: bool = True) -> None:
    atomic_write_bytes(path, (json.dumps(value, indent=1, sort_keys=True) + "\n").encode(), durable=durable)


# The queue's own small files (markers, state, resources, the lock) are a few kB; anything larger
# was not written by us and is refused rather than read into memory.
SMALL_FILE_LIMIT = 1 << 20


class NotAPlainFile(OSError):
    """A path that should hold one of our small files holds something else (a fifo, a device, a
    directory) or something far too large."""


def read_small_file(path: Path, limit: int = SMALL_FILE_LIMIT) -> bytes:
    """The bytes of the plain file at `path` (symlinks followed), never blocking.

    Anyone who can write a run folder can put a fifo where a marker belongs; a plain read would
    hang every queue and `status` on it, past SIGTERM. So: open without blocking, accept regular
    files only, and at most `limit` bytes. Raises OSError (NotAPlainFile for the refusals).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotAPlainFile(errno.EINVAL, "not a regular file", str(path))
        chunks = []
        remaining = limit + 1  # one byte over the limit is enough to tell a file too large
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:
        raise NotAPlainFile(errno.EFBIG, f"larger than {limit // 1024} kB, so not a file the queue wrote", str(path))
    return data


def parse_json(raw: bytes) -> Any:
    """json.loads, with every way bytes can fail to be JSON as one ValueError (deep nesting raises
    RecursionError, which is no ValueError)."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def read_json_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`, or None when it is missing, empty, unreadable or not an object.

    Runtime files may be cut short by a power loss (written without fsync) or be touched by
    hand; a bad one must never stop the queue.
    """
    try:
        value = parse_json(read_small_file(path))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the rename is still atomic
    finally:
        os.close(fd)
