"""The simulated inventory file (DESIGN.md §4): GPUs described in JSON, re-read on every call.

Format: a JSON list of
`{"uuid", "name", "memory_total_mb", "memory_used_mb", "processes": [{"pid", "used_mb"}]}`.
Only `uuid` is required; `memory_total_mb: null` makes a device whose memory is not tracked.
Pids may be real (their session decides whether they are ours) or made up (foreign).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from runqueue.devices.errors import InventoryError
from runqueue.devices.model import Device, GpuProcess, InventoryReading
from runqueue.procinfo import session_id

_DEVICE_KEYS = ("uuid", "name", "memory_total_mb", "memory_used_mb", "processes", "index")
_PROCESS_KEYS = ("pid", "used_mb")
_FIX = "fix the file (format: docs/devices.md, 'The simulated inventory file'; e.g. [{\"uuid\": \"GPU-0\", \"memory_total_mb\": 16000}])"
# A writer that rewrites the file in place can be caught half-way; one short retry hides that.
_TORN_READ_RETRY_S = 0.05


def parse_simulated_devices(text: str, path: Path) -> tuple[Device, ...]:
    """Devices described by the simulated file's `text`; InventoryError naming `path` if malformed."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise InventoryError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}); {_FIX}") from None
    except RecursionError:
        raise InventoryError(f"{path}: not valid JSON (nested too deeply); {_FIX}") from None
    if not isinstance(data, list):
        raise InventoryError(f"{path}: expected a JSON list of GPUs, got {type(data).__name__}; {_FIX}")
    devices = [_parse_device(entry, position, path) for position, entry in enumerate(data)]
    seen: set[str] = set()
    for device in devices:
        if device.uuid in seen:
            raise InventoryError(f"{path}: uuid {device.uuid!r} appears twice; give each GPU its own uuid")
        seen.add(device.uuid)
    return tuple(devices)


def _parse_device(entry: Any, position: int, path: Path) -> Device:
    where = f"{path}: GPU entry {position}"
    if not isinstance(entry, dict):
        raise InventoryError(f"{where} must be a JSON object, got {type(entry).__name__}; {_FIX}")
    _reject_unknown_keys(entry, _DEVICE_KEYS, where)
    uuid = entry.get("uuid")
    if not isinstance(uuid, str) or not uuid.strip():
        raise InventoryError(f"{where}: 'uuid' must be a non-empty string; {_FIX}")
    name = entry.get("name", "Simulated GPU")
    if not isinstance(name, str):
        raise InventoryError(f"{where}: 'name' must be a string; {_FIX}")
    total = _optional_mb(entry, "memory_total_mb", where)
    used = _optional_mb(entry, "memory_used_mb", where) if "memory_used_mb" in entry else 0
    if total is not None and used is not None and used > total:
        raise InventoryError(f"{where}: memory_used_mb {used} exceeds memory_total_mb {total}; {_FIX}")
    index = entry.get("index", position)
    if not _is_int(index) or index < 0:
        raise InventoryError(f"{where}: 'index' must be a non-negative integer; {_FIX}")
    processes_raw = entry.get("processes", [])
    if not isinstance(processes_raw, list):
        raise InventoryError(f"{where}: 'processes' must be a list of {{pid, used_mb}}; {_FIX}")
    processes = tuple(_parse_process(p, f"{where} process {i}") for i, p in enumerate(processes_raw))
    return Device(
        uuid=uuid,
        index=index,
        name=name,
        is_gpu=True,
        memory_total_mb=total,
        memory_used_mb=used if total is not None else None,
        processes=processes,
    )


_PID_MAX = 2**31 - 1  # what a pid_t holds (made-up pids beyond pid_max are fine: they never exist)


def _parse_process(entry: Any, where: str) -> GpuProcess:
    if not isinstance(entry, dict):
        raise InventoryError(f"{where} must be a JSON object {{pid, used_mb}}; {_FIX}")
    _reject_unknown_keys(entry, _PROCESS_KEYS, where)
    pid = entry.get("pid")
    if not isinstance(pid, int) or not _is_int(pid) or not 0 < pid <= _PID_MAX:
        raise InventoryError(f"{where}: 'pid' must be a whole number from 1 to {_PID_MAX}, got {pid!r}; {_FIX}")
    used = _optional_mb(entry, "used_mb", where) if "used_mb" in entry else None
    return GpuProcess(pid=pid, used_mb=used, sid=session_id(pid))


def _optional_mb(entry: dict[str, Any], key: str, where: str) -> int | None:
    value = entry.get(key)
    if value is None:
        return None
    if not _is_int(value) or value < 0:
        raise InventoryError(f"{where}: {key!r} must be a whole number of MB >= 0 or null, got {value!r}; {_FIX}")
    return int(value)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _reject_unknown_keys(entry: dict[str, Any], valid: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(entry) - set(valid))
    if unknown:
        raise InventoryError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; valid keys: {', '.join(valid)}")


class SimulatedInventory:
    """GPUs from a JSON file that tests and demos edit while a queue runs: re-read on every call."""

    def __init__(self, path: Path, only: tuple[str, ...] = ()) -> None:
        self.path = path
        self.only = only  # `--gpus`: these indices or UUIDs of the file's GPUs; () for all

    def read(self) -> InventoryReading:
        devices = parse_simulated_devices(self._read_text(), self.path)
        if self.only:
            devices = tuple(device for device in devices if device.uuid in self.only or str(device.index) in self.only)
        count = len(devices)
        chosen = f" (--gpus {','.join(self.only)})" if self.only else ""
        return InventoryReading(devices=devices, status=f"simulated: {count} GPU{'s' * (count != 1)} from {self.path}{chosen}")

    def check_chosen(self) -> None:
        """Every `--gpus` id names a GPU of the file: a typo is refused at start, not waited on."""
        devices = parse_simulated_devices(self._read_text(), self.path)
        known = {device.uuid for device in devices} | {str(device.index) for device in devices}
        for gpu in self.only:
            if gpu not in known:
                raise InventoryError(f"--gpus {gpu!r} is not a GPU of the simulated inventory {self.path}; give ids"
                                     " that `runqueue gpus` lists")

    def _read_text(self) -> str:
        for attempt in range(2):
            try:
                text = self.path.read_text(encoding="utf-8")
            except FileNotFoundError:
                raise InventoryError(
                    f"{self.path}: simulated inventory file not found; create it or drop --simulate-gpus / RUNQUEUE_SIMULATE_GPUS"
                ) from None
            except (OSError, UnicodeDecodeError) as err:
                raise InventoryError(f"{self.path}: cannot read simulated inventory file ({err}); check its permissions") from None
            if attempt == 0 and not _looks_complete(text):
                time.sleep(_TORN_READ_RETRY_S)
                continue
            return text
        return text


def _looks_complete(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True
