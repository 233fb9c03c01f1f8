"""What a running local queue places by, recorded beside the claims, so that `runqueue status` judges
waiting runs as that queue does (`ready: fits GPU-…` from the devices and --max-per-gpu it uses, not
from status's own defaults).

One small JSON file per queue, `queue-<host>-<pid>.json` in the claims directory, written when it
starts and removed when it leaves; a record whose process is gone (killed) is ignored. Only records
written by this account, by root or by a system account (a service's, such as `lfads`: only an admin
makes one) are believed: the directory is shared by every user.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from runqueue.access import is_system_account
from runqueue.atomicio import atomic_write_json, parse_json, read_small_file
from runqueue.devices.inventory import simulated_inventory_path
from runqueue.procinfo import is_alive, process_start_time
from runqueue.queue_options import QueueOptions

_PREFIX = "queue-"
_SUFFIX = ".json"


@dataclass(frozen=True)
class QueueRecord:
    pid: int
    start_time: int | None
    roots: tuple[str, ...]
    gpus: str | None
    simulate_gpus: str | None
    cpu_slots: int | None
    max_per_gpu: int
    foreign: str
    memory_per_run: int
    executor: str = "local"  # "slurm": it submits pending runs to SLURM; the device settings do not apply
    uid: int | None = None  # the account it runs as: the record file's owner, not what the file says

    def covers(self, root: Path) -> bool:
        """Whether this queue looks at runs under `root` (a root of its, below one, or above one)."""
        return any(root.is_relative_to(mine) or Path(mine).is_relative_to(root) for mine in self.roots)

    def flags(self) -> str:
        """The settings as the command-line flags that give them (defaults left out)."""
        given = [("--gpus", self.gpus), ("--simulate-gpus", self.simulate_gpus), ("--cpu-slots", self.cpu_slots),
                 ("--max-per-gpu", None if self.max_per_gpu == 1 else self.max_per_gpu),
                 ("--foreign", None if self.foreign == "block" else self.foreign),
                 ("--memory-per-run", self.memory_per_run)]
        return " ".join(f"{flag} {value}" for flag, value in given if value is not None)


def record_of(options: QueueOptions) -> QueueRecord:
    pid = os.getpid()
    in_effect = simulated_inventory_path(options.simulate_gpus)  # the flag, or the environment's file
    simulate = None if in_effect is None else os.path.abspath(in_effect)
    return QueueRecord(pid=pid, start_time=process_start_time(pid), roots=tuple(str(root.resolve()) for root in options.roots),
                       gpus=options.gpus, simulate_gpus=simulate, cpu_slots=options.cpu_slots,
                       max_per_gpu=options.max_per_gpu, foreign=options.foreign, memory_per_run=options.memory_per_run,
                       executor=options.executor, uid=os.geteuid())


def write_record(directory: Path, record: QueueRecord) -> Path | None:
    """Best effort: a queue that cannot write it still runs (status then judges by its own flags)."""
    path = directory / f"{_PREFIX}{os.uname().nodename}-{record.pid}{_SUFFIX}"
    try:
        atomic_write_json(path, asdict(record), durable=False)
    except OSError:
        return None
    return path


def remove_record(path: Path | None) -> None:
    if path is not None:
        with contextlib.suppress(OSError):
            path.unlink()


def live_records(directory: Path) -> list[QueueRecord]:
    """Records of queues that still run on this host, newest process first."""
    records = []
    for path in _this_hosts_record_files(directory):
        record = _load(path)
        if record is None:
            continue
        if is_alive(record.pid, record.start_time):
            records.append(record)
        else:  # its queue was killed (SIGKILL leaves no time to remove it): tidy up what we may
            with contextlib.suppress(OSError):
                path.unlink()
    return sorted(records, key=lambda record: record.start_time or 0, reverse=True)


def _this_hosts_record_files(directory: Path) -> list[Path]:
    """Record files of queues on this host (another host sharing the directory: its pids mean nothing here)."""
    prefix = f"{_PREFIX}{os.uname().nodename}-"
    try:
        return [Path(entry.path) for entry in os.scandir(directory)
                if entry.name.startswith(prefix) and entry.name.endswith(_SUFFIX)]
    except OSError:
        return []


def _load(path: Path, *, any_owner: bool = False) -> QueueRecord | None:
    try:
        info = path.stat()
        if not any_owner and info.st_uid not in (os.geteuid(), 0) and not is_system_account(info.st_uid):
            return None  # anyone can write in the shared directory: only our own, root's and services' are believed
        data: Any = parse_json(read_small_file(path))
        values = {item.name: data[item.name] for item in fields(QueueRecord) if item.name not in ("executor", "uid")}
        values["executor"] = str(data.get("executor", "local"))  # records of queues started before the field
        values["uid"] = info.st_uid
        values["roots"] = tuple(str(root) for root in values["roots"])
        record = QueueRecord(**values)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(record.pid, int) or not isinstance(record.max_per_gpu, int) or not isinstance(record.memory_per_run, int):
        return None
    return record


def non_root_queue_over(directory: Path, roots: Sequence[Path]) -> bool:
    """Whether a queue not running as root (its record's owner) lives on this host over one of
    `roots`: `status` run as root then does not judge runs by what a root queue would refuse.
    Records of every owner count here; one that lies can only hide that judgement, not change a queue."""
    for path in _this_hosts_record_files(directory):
        try:
            owner = path.lstat().st_uid
        except OSError:
            continue
        record = None if owner == 0 else _load(path, any_owner=True)
        if record is not None and is_alive(record.pid, record.start_time) and any(record.covers(root) for root in roots):
            return True
    return False
