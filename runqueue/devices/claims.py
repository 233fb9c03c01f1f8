"""Host-wide claims: which run holds which device, shared by every queue on this machine.

Two queues (two users, or `run_lfads.py` next to the service) must never over-book a GPU or
start one run twice. Each claim is a small JSON file in one directory shared by all users
(mode 1777 like /tmp: anyone can add a claim, only its writer can delete it). Decisions are
made under an exclusive flock on `<dir>/.lock`, held by `with store.transaction() as txn:`.

A claim lives as long as its process: the pid is stored with its start time and the boot id,
so a dead supervisor's claim, or one whose pid was reused by an unrelated process, is dropped,
unless steps of that run still hold its run lock (they outlived a killed supervisor).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import stat
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from runqueue import runlock
from runqueue.devices.errors import ClaimError, ClaimsBusy
from runqueue.layout import RunPaths
from runqueue.procinfo import boot_id, exists_unseen, live_start_time, steps_started_for

CLAIMS_DIR_ENV = "RUNQUEUE_CLAIMS_DIR"
DEFAULT_CLAIMS_DIR = Path("/tmp/lfads-runqueue-claims")
_LOCK_NAME = ".lock"
_SUFFIX = ".claim.json"
# Said wherever the fix may be another claims directory: a queue with a private one cannot see the
# others' claims, and books their GPUs twice.
_SHARED_NOTE = "to one every queue on this host shares (a private one lets queues book a GPU twice)"
_SHARED_DIR_MODE = 0o1777
# Decisions hold the lock for milliseconds. Any account can take it (the directory is shared), so a
# queue never waits on it without end: a stuck or hostile holder must not freeze every queue.
LOCK_WAIT_S = 10.0


@dataclass(frozen=True)
class Claim:
    """One run holding one device, charged `memory_mb` until `pid` exits."""

    run_dir: str
    device_uuid: str
    memory_mb: int
    pid: int  # the run's supervisor
    sid: int  # its session: every step process of the run is in it (how NVML pids are recognised)
    queue_id: str
    created: float


@dataclass(frozen=True)
class _StoredClaim:
    claim: Claim
    path: Path
    pid_start: int | None
    boot: str

    def is_live(self, this_boot: str) -> bool:
        if self.pid_start is None or self.boot != this_boot:
            return False
        if live_start_time(self.claim.pid) == self.pid_start:
            return True
        if exists_unseen(self.claim.pid):
            # /proc hides other accounts' processes (hidepid): a claim whose process exists counts,
            # better a device held a little too long than booked twice.
            return True
        # The supervisor is gone (kill -9), but steps it left running inherit the run lock, and
        # they still use the device: the claim lives until the last of them ends. Found by their
        # RUNQUEUE_RUN_DIR too, should the lock have been deleted or the folder moved meanwhile.
        return runlock.is_held(RunPaths(Path(self.claim.run_dir)).lock) or _steps_run(self.claim.run_dir)


_STEPS_SEEN_FOR_S = 2.0
_steps_seen: dict[str, tuple[float, bool]] = {}


def _steps_run(run_dir: str) -> bool:
    """steps_started_for, remembered a moment: it reads every process's environment, and another
    account's stale claim (which the sticky bit keeps us from removing) is looked at on every pass."""
    now = time.monotonic()
    seen = _steps_seen.get(run_dir)
    if seen is None or now - seen[0] > _STEPS_SEEN_FOR_S:
        if len(_steps_seen) > 1024:
            _steps_seen.clear()
        seen = _steps_seen[run_dir] = (now, bool(steps_started_for(run_dir)))
    return seen[1]


def _run_key(run_dir: str) -> str:
    return hashlib.sha256(os.fsencode(run_dir)).hexdigest()[:32]  # names need not be UTF-8


def claim_file_name(run_dir: str, uid: int, variant: str = "") -> str:
    """One file per run folder and writer: whatever characters the path holds, and so that a stale
    claim left by another user (undeletable in a sticky directory) never blocks this user's claim.
    `variant`: when another account took this very name first (see ClaimTransaction.add)."""
    return f"{_run_key(run_dir)}-u{uid}{'-' + variant if variant else ''}{_SUFFIX}"


def _owner(path: Path) -> int | None:
    try:
        return path.lstat().st_uid
    except OSError:
        return None


def _writer_uid(name: str) -> int | None:
    """The uid a claim file's name says wrote it."""
    tail = name.removesuffix(_SUFFIX).partition("-u")[2].split("-")[0]
    return int(tail) if tail.isdigit() else None


class ClaimStore:
    """The shared claims directory (default: $RUNQUEUE_CLAIMS_DIR, else /tmp/lfads-runqueue-claims)."""

    def __init__(self, directory: Path | None = None) -> None:
        if directory is None:
            directory = Path(os.environ.get(CLAIMS_DIR_ENV) or DEFAULT_CLAIMS_DIR)
        self.directory = Path(directory)

    @contextlib.contextmanager
    def transaction(self, wait_s: float | None = None) -> Iterator[ClaimTransaction]:
        """Hold the host-wide lock: read live claims, decide, add; nobody else decides meanwhile.
        `wait_s` (default LOCK_WAIT_S) bounds the wait for it; then ClaimsBusy."""
        self._ensure_directory()
        fd = self._open_lock()
        try:
            self._lock(fd, LOCK_WAIT_S if wait_s is None else wait_s)
            yield ClaimTransaction(self)
        finally:
            os.close(fd)  # closing releases the flock

    def _lock(self, fd: int, wait_s: float) -> None:
        """The exclusive lock, tried without blocking until `wait_s` has passed (signals are
        handled meanwhile), then ClaimsBusy naming the lock: the caller places nothing this round."""
        deadline = time.monotonic() + wait_s
        pause = 0.005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    path = self.directory / _LOCK_NAME
                    raise ClaimsBusy(f"{path}: the host-wide claims lock has been held by another process for over"
                                     f" {wait_s:g}s; nothing is placed until it is let go (`fuser -v {path}`"
                                     " names the holder)") from None
                time.sleep(pause)
                pause = min(pause * 2, 0.1)

    def claims(self) -> list[Claim]:
        """Live claims, read without the lock and without removing anything (for `status`)."""
        this_boot = boot_id()
        return [stored.claim for stored in self._stored() if stored.is_live(this_boot)]

    def remove(self, run_dir: str) -> None:
        """Drop the claims of `run_dir` (its run ended). Unlink is atomic: no lock needed.

        Other users' claim files of the same run are left alone when the sticky bit protects
        them; they stop counting as soon as their process exits.
        """
        for path in self.directory.glob(f"{_run_key(run_dir)}-u*{_SUFFIX}"):
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except PermissionError:
                if _owner(path) == os.geteuid():
                    raise ClaimError(f"{path}: cannot remove own claim file; check the permissions of "
                                     f"{self.directory}") from None

    def ensure_directory(self) -> Path:
        """The directory, made (shared, sticky) if missing; ClaimError when it cannot serve."""
        self._ensure_directory()
        return self.directory

    # --- files -------------------------------------------------------------------------------------

    def _ensure_directory(self) -> None:
        try:
            self.directory.mkdir(parents=True, mode=_SHARED_DIR_MODE)
        except FileExistsError:
            pass
        except OSError as err:
            blocking = next((parent for parent in self.directory.parents if parent.exists()), self.directory.parent)
            raise ClaimError(f"{self.directory}: cannot create the claims directory ({err.strerror} in {blocking}); fix"
                             f" the permissions of {blocking} (as its owner), or set {CLAIMS_DIR_ENV} {_SHARED_NOTE}") from None
        else:
            # mkdir's mode is filtered by the umask; every user must be able to add claims.
            with contextlib.suppress(PermissionError):
                os.chmod(self.directory, _SHARED_DIR_MODE)
        info = os.lstat(self.directory)
        if not stat.S_ISDIR(info.st_mode):
            raise self._not_a_directory()
        if info.st_mode & stat.S_IWOTH and not info.st_mode & stat.S_ISVTX:
            raise ClaimError(f"{self.directory}: world-writable claims directory without the sticky bit lets "
                             f"anyone delete claims; fix: chmod 1777 {self.directory}")
        if not os.access(self.directory, os.W_OK | os.X_OK):
            raise ClaimError(f"{self.directory}: claims directory is not writable by uid {os.getuid()}; "
                             f"fix: chmod 1777 {self.directory} (as its owner), or set {CLAIMS_DIR_ENV} {_SHARED_NOTE}")

    def _open_lock(self) -> int:
        path = self.directory / _LOCK_NAME
        try:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
            except PermissionError:
                # Created by another user without group/other write: flock works on a read-only fd too.
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as err:  # a symlink (ELOOP), a directory (EISDIR), ...: never follow or use it
            raise ClaimError(f"{path}: cannot open the claims lock ({err.strerror}); it must be a plain file: "
                             f"remove it (it is made again), or set {CLAIMS_DIR_ENV} to another folder") from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise ClaimError(f"{path}: the claims lock is not a plain file; remove it (it is made again), "
                             f"or set {CLAIMS_DIR_ENV} to another folder")
        if info.st_uid == os.geteuid() and info.st_mode & 0o777 != 0o666:
            with contextlib.suppress(OSError):
                os.fchmod(fd, 0o666)  # so other users can open it read-write as well
        return fd

    def _not_a_directory(self) -> ClaimError:
        return ClaimError(f"{self.directory}: claims directory is not a directory (a symlink or file?); "
                          f"remove it or set {CLAIMS_DIR_ENV}")

    def _stored(self) -> list[_StoredClaim]:
        try:  # what the queues refuse to use, status does not read either
            if not stat.S_ISDIR(os.lstat(self.directory).st_mode):
                raise self._not_a_directory()
            names = [entry.name for entry in os.scandir(self.directory)
                     if entry.name.endswith(_SUFFIX) and entry.is_file(follow_symlinks=False)]
        except FileNotFoundError:
            return []
        except OSError as err:
            raise ClaimError(f"{self.directory}: cannot list the claims directory ({err.strerror}); every queue must"
                             f" see every claim: fix: chmod 1777 {self.directory} (as its owner), or set {CLAIMS_DIR_ENV} {_SHARED_NOTE}") from None
        stored = (_load(self.directory / name) for name in names if not name.startswith("."))
        return [item for item in stored if item is not None]


def _load(path: Path) -> _StoredClaim | None:
    """A claim file, or None when it vanished or is not ours to understand (it is then ignored)."""
    try:
        # Never blocks (a fifo planted in the shared folder would hang every queue holding the lock).
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_uid != _writer_uid(path.name):
                return None  # no plain file, or made by an account other than its name says: ignored
            data = json.loads(handle.read().decode("utf-8"))
        claim = Claim(
            run_dir=str(data["run_dir"]),
            device_uuid=str(data["device_uuid"]),
            memory_mb=int(data["memory_mb"]),
            pid=int(data["pid"]),
            sid=int(data["sid"]),
            queue_id=str(data["queue_id"]),
            created=float(data["created"]),
        )
        pid_start = data.get("pid_start")
        return _StoredClaim(claim, path, int(pid_start) if pid_start is not None else None, str(data.get("boot", "")))
    except (OSError, ValueError, KeyError, TypeError, RecursionError):  # RecursionError: absurdly nested JSON
        return None


class ClaimTransaction:
    """Claims as seen under the host-wide lock. Only valid inside `store.transaction()`."""

    def __init__(self, store: ClaimStore) -> None:
        self._store = store
        self._boot = boot_id()

    def live_claims(self) -> list[Claim]:
        """Claims whose process still runs; stale ones (dead or reused pid, older boot) are removed."""
        live: list[Claim] = []
        for stored in self._store._stored():
            if stored.is_live(self._boot):
                live.append(stored.claim)
                continue
            # Another user's stale claim cannot be unlinked in a sticky directory; skipping it is enough.
            with contextlib.suppress(OSError):
                stored.path.unlink()
        return live

    def claim_for(self, run_dir: str) -> Claim | None:
        """The live claim of `run_dir`, if any: the run is already running somewhere on this host."""
        return next((claim for claim in self.live_claims() if claim.run_dir == run_dir), None)

    def add(self, claim: Claim) -> None:
        """Record `claim` atomically, replacing this run's previous claim (e.g. to hand it to the supervisor).

        The pid's start time is stored with it; a claim for a pid that is not running is dead at once.
        """
        directory, uid = self._store.directory, os.geteuid()
        path = directory / claim_file_name(claim.run_dir, uid)
        record = asdict(claim) | {"pid_start": live_start_time(claim.pid), "boot": self._boot}
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            os.fchmod(fd, 0o644)  # whatever the umask: every account's queue must read every claim
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(record, handle)
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.replace(tmp, path)
            except PermissionError:
                # Another account made a file of this name first (the sticky bit keeps us from
                # replacing it; it is ignored when read): a name of our own instead.
                path = directory / claim_file_name(claim.run_dir, uid, secrets.token_hex(4))
                os.replace(tmp, path)
        except OSError as err:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise ClaimError(f"{path}: cannot write claim ({err.strerror}); check {self._store.directory}") from None
        for older in directory.glob(f"{_run_key(claim.run_dir)}-u{uid}*{_SUFFIX}"):
            if older != path and _owner(older) == uid:  # this run's previous claim, replaced
                with contextlib.suppress(OSError):
                    older.unlink()

    def remove(self, run_dir: str) -> None:
        self._store.remove(run_dir)
