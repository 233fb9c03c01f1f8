"""NVML, the only module that imports `pynvml` (nvidia-ml-py): init, errors, version fallbacks.

Two layers, so that every error path is testable without a GPU:
- thin calls (`_NvmlCalls`) turn the driver's answers into plain `RawReading` data, catching
  per-device errors as names ("GpuIsLost", "NotSupported") instead of raising;
- pure functions (`devices_from_raw`, `init_failure`) turn that data into `Device`s, problems and
  the status line.
`NvmlInventory` ties them together: lazy init, a "no GPUs" state with a hint when the library or
driver is missing (retried with back-off, never a crash), and a paused state when GPUs exist but
cannot be read (driver upgraded under us: LibRmVersionMismatch).
"""

from __future__ import annotations

import atexit
import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

try:
    import pynvml
except ImportError:  # nvidia-ml-py is a dependency; without it (a copied tree, a broken venv) NVML is unavailable
    pynvml = None

from runqueue.devices.model import Device, GpuProcess, InventoryReading
from runqueue.procinfo import session_id

log = logging.getLogger(__name__)

RETRY_FIRST_S = 30.0
RETRY_MAX_S = 300.0
_MIB = 1 << 20
# Errors after which a device (not the whole NVML) is unusable.
_DEVICE_FATAL = frozenset({"GpuIsLost", "Unknown", "ResetRequired", "CorruptedInforom", "GpuNotFound"})
# Errors that mean "this call does not exist or apply here": try the older call.
_FALL_BACK = frozenset({"FunctionNotFound", "NotSupported", "ArgumentVersionMismatch"})


def error_name(err: BaseException) -> str:
    """`NVMLError_GpuIsLost` -> "GpuIsLost"; anything else by its class name."""
    name = type(err).__name__
    return name.removeprefix("NVMLError_")


# --- plain readings ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RawMemory:
    total_bytes: int
    used_bytes: int
    api: str  # "v2" (reserved memory reported apart from used) or "v1" (older drivers: folded into used)
    # v2 only. The driver's reservation is never allocatable (seen on an H200: CUDA's capacity is
    # NVML's total minus it), so placement counts it as used, as v1 did.
    reserved_bytes: int = 0


@dataclass(frozen=True)
class RawProcess:
    pid: int
    used_bytes: int | None


@dataclass(frozen=True)
class RawDevice:
    """What NVML said about one physical GPU or MIG instance; errors kept as names."""

    index: int
    uuid: str | None = None
    name: str | None = None
    memory: RawMemory | None = None
    memory_error: str | None = None
    processes: tuple[RawProcess, ...] = ()
    processes_error: str | None = None
    error: str | None = None  # device-level failure: the device is not offered
    mig_enabled: bool = False
    mig_children: tuple[RawDevice, ...] = ()


@dataclass(frozen=True)
class RawReading:
    driver_version: str
    devices: tuple[RawDevice, ...]


# --- pure mapping --------------------------------------------------------------------------------


@dataclass(frozen=True)
class InitFailure:
    status: str
    paused: bool


_RETRY_NOTE = re.compile(r"; retrying in \d+ s")


def without_retry_note(status: str) -> str:
    """The status line without its "; retrying in N s": for one-shot commands, where nothing
    retries, and for telling a real change of status from the countdown ticking."""
    return _RETRY_NOTE.sub("", status)


def init_failure(name: str, had_gpus: bool, retry_in_s: float, detail: str = "") -> InitFailure:
    """Status line for an NVML that cannot be used, and whether placing must pause.

    Pause (offer no device, not even CPU slots) when GPUs are known to exist: after a driver
    upgrade, or when GPUs that worked disappear. Otherwise it is a machine without NVIDIA GPUs.
    """
    retry = f"retrying in {retry_in_s:.0f} s"
    if name == "LibRmVersionMismatch":
        return InitFailure(
            "paused: NVIDIA driver and kernel module versions differ (driver upgraded without reloading "
            f"it); reboot or reload the nvidia modules; {retry}",
            paused=True,
        )
    hints = {
        "LibraryNotFound": "NVML library libnvidia-ml.so.1 not found: no NVIDIA driver here; install it to use GPUs",
        "DriverNotLoaded": "NVIDIA driver not loaded: check `nvidia-smi` and load the nvidia kernel module",
        "NoPermission": "no permission to open /dev/nvidia*: fix the device permissions or the user's groups",
        "ModuleNotFound": "Python module pynvml not found: install nvidia-ml-py into this Python to use GPUs",
        "BindingError": f"the pynvml module is not a usable nvidia-ml-py ({detail}); uninstall the old pynvml and"
                        " nvidia-ml-py3 packages, then install nvidia-ml-py again",
    }
    reason = hints.get(name, f"NVML error {name}")
    if name == "BindingError":  # it cannot tell whether GPUs exist: pause rather than train GPU work in a CPU slot
        return InitFailure(f"paused: NVML cannot be read ({reason}); {retry}", paused=True)
    if had_gpus:
        return InitFailure(f"paused: GPUs were seen but NVML now fails ({reason}); {retry}", paused=True)
    return InitFailure(f"no GPUs ({reason}); {retry}", paused=False)


def devices_from_raw(
    raw: RawReading,
    session_of: Callable[[int], int | None] = session_id,
) -> tuple[tuple[Device, ...], tuple[str, ...]]:
    """Placeable devices and one-line problems from one NVML reading.

    A MIG-enabled GPU is replaced by its MIG instances (CUDA sees one MIG device per process, by
    its `MIG-` UUID). A lost GPU, or one whose UUID or memory cannot be read, is left out with a
    problem line: free memory that is not known is never offered.
    """
    devices: list[Device] = []
    problems: list[str] = []
    for gpu in raw.devices:
        where = f"GPU {gpu.index}" + (f" ({gpu.uuid})" if gpu.uuid else "")
        if gpu.error is not None:
            problems.append(f"{where}: unusable (NVML {gpu.error}); it needs a reset or a reboot")
            continue
        if gpu.mig_enabled:
            if not gpu.mig_children:
                problems.append(f"{where}: MIG is enabled but has no instances; create them (nvidia-smi mig -cgi … -C)")
            for child in gpu.mig_children:
                _add_device(child, gpu.index, f"{where} MIG {child.index}", devices, problems, session_of)
            continue
        _add_device(gpu, gpu.index, where, devices, problems, session_of)
    hidden = sum(1 for device in devices for process in device.processes if process.sid is None)
    if hidden:
        problems.append(
            f"{hidden} GPU process(es) are not visible in this PID namespace (a container without --pid=host?) "
            "and count as foreign"
        )
    return tuple(devices), tuple(problems)


def _add_device(
    raw: RawDevice,
    index: int,
    where: str,
    devices: list[Device],
    problems: list[str],
    session_of: Callable[[int], int | None],
) -> None:
    if raw.error is not None:
        problems.append(f"{where}: unusable (NVML {raw.error})")
        return
    if not raw.uuid:
        problems.append(f"{where}: UUID unreadable, not used (devices are addressed by UUID)")
        return
    if raw.memory is None:
        problems.append(f"{where}: memory unreadable (NVML {raw.memory_error}), not used")
        return
    if raw.processes_error is not None:
        problems.append(f"{where}: process list unreadable (NVML {raw.processes_error}); other users' processes are not seen")
    processes = tuple(
        GpuProcess(
            pid=p.pid,
            used_mb=None if p.used_bytes is None else math.ceil(p.used_bytes / _MIB),
            sid=session_of(p.pid),
        )
        for p in raw.processes
    )
    devices.append(
        Device(
            uuid=raw.uuid,
            index=index,
            name=raw.name or "NVIDIA GPU",
            is_gpu=True,
            memory_total_mb=raw.memory.total_bytes // _MIB,
            # Round used up, total down: placement may under-, never over-estimate what is free.
            memory_used_mb=math.ceil((raw.memory.used_bytes + raw.memory.reserved_bytes) / _MIB),
            processes=processes,
        )
    )


def select_devices(devices: Sequence[Device], wanted: Sequence[str]) -> tuple[tuple[Device, ...], tuple[str, ...]]:
    """The devices a `--gpus` list names (index in PCI order, GPU-/MIG- UUID), in NVML order.

    An index names a whole GPU, so with MIG it selects all of that GPU's instances.
    """
    chosen = [d for d in devices if d.uuid in wanted or str(d.index) in wanted]
    known = {d.uuid for d in devices} | {str(d.index) for d in devices}
    problems = tuple(
        f"--gpus {item}: no such GPU (NVML sees {', '.join(sorted({str(d.index) for d in devices})) or 'none'})"
        for item in wanted
        if item not in known
    )
    return tuple(chosen), problems


# --- thin NVML calls -----------------------------------------------------------------------------


class NvmlCallError(Exception):
    """An NVML call failed for the whole library (not one device); `.name` is the error name,
    `.detail` what the status line should add (the binding's own error)."""

    def __init__(self, name: str, detail: str = "") -> None:
        super().__init__(name)
        self.name = name
        self.detail = detail


def _binding_error(err: Exception) -> NvmlCallError:
    """A pynvml that raises something other than NVMLError is not the nvidia-ml-py we were written
    for: an old `pynvml`/`nvidia-ml-py3` package shadowing it (reference gpu-queues §3.1)."""
    where = getattr(pynvml, "__file__", None) or "pynvml"
    return NvmlCallError("BindingError", f"{where}: {type(err).__name__}: {err}")


class _NvmlCalls:
    """Thin wrappers over pynvml. Each per-device getter returns (value, error name)."""

    def __init__(self) -> None:
        self._missing_logged: set[str] = set()
        # Newest first; the unsuffixed name is all the old pynvml / nvidia-ml-py3 bindings have.
        self._process_calls = ["nvmlDeviceGetComputeRunningProcesses_v3", "nvmlDeviceGetComputeRunningProcesses_v2",
                               "nvmlDeviceGetComputeRunningProcesses"]
        self._memory_v2 = True
        self._shutdown_registered = False

    def init(self) -> None:
        if pynvml is None:
            raise NvmlCallError("ModuleNotFound")
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as err:
            raise NvmlCallError(error_name(err)) from None
        except Exception as err:  # the binding itself is broken: say so, never crash
            raise _binding_error(err) from None
        if not self._shutdown_registered:
            atexit.register(self.shutdown)
            self._shutdown_registered = True

    def shutdown(self) -> None:
        try:
            pynvml.nvmlShutdown()
        except Exception:  # nothing to release, or a binding too broken to say so (BindingError): go on
            pass

    def read(self) -> RawReading:
        try:
            count = pynvml.nvmlDeviceGetCount()
            driver = _text(pynvml.nvmlSystemGetDriverVersion())
            return RawReading(driver_version=driver, devices=tuple(self._read_gpu(i) for i in range(count)))
        except pynvml.NVMLError as err:
            raise NvmlCallError(error_name(err)) from None
        except Exception as err:  # a binding without a call or constant we use
            raise _binding_error(err) from None

    def _read_gpu(self, index: int) -> RawDevice:
        handle, error = _query(pynvml.nvmlDeviceGetHandleByIndex, index)
        if error is not None:
            return RawDevice(index=index, error=error)
        mig_mode, _ = _query(pynvml.nvmlDeviceGetMigMode, handle)
        if mig_mode is not None and mig_mode[0] == pynvml.NVML_DEVICE_MIG_ENABLE:
            uuid, _ = _query(pynvml.nvmlDeviceGetUUID, handle)
            return RawDevice(index=index, uuid=_opt_text(uuid), mig_enabled=True,
                             mig_children=tuple(self._read_mig_children(handle)))
        return self._read_handle(handle, index)

    def _read_mig_children(self, parent: Any) -> list[RawDevice]:
        count, error = _query(pynvml.nvmlDeviceGetMaxMigDeviceCount, parent)
        children: list[RawDevice] = []
        for slot in range(count or 0):
            handle, error = _query(pynvml.nvmlDeviceGetMigDeviceHandleByIndex, parent, slot)
            if error == "NotFound":  # an empty slot: fewer instances than the maximum
                continue
            if error is not None:
                children.append(RawDevice(index=slot, error=error))
                continue
            children.append(self._read_handle(handle, slot))
        return children

    def _read_handle(self, handle: Any, index: int) -> RawDevice:
        uuid, error = _query(pynvml.nvmlDeviceGetUUID, handle)
        if error in _DEVICE_FATAL:
            return RawDevice(index=index, error=error)
        name, _ = _query(pynvml.nvmlDeviceGetName, handle)
        memory, memory_error = self._memory(handle)
        if memory_error in _DEVICE_FATAL:
            return RawDevice(index=index, uuid=_opt_text(uuid), error=memory_error)
        processes, processes_error = self._processes(handle)
        return RawDevice(
            index=index, uuid=_opt_text(uuid), name=_opt_text(name), memory=memory, memory_error=memory_error,
            processes=processes, processes_error=processes_error,
        )

    def _memory(self, handle: Any) -> tuple[RawMemory | None, str | None]:
        if self._memory_v2:
            info, error = self._memory_v2_call(handle)
            if error is None:
                return RawMemory(int(info.total), int(info.used), "v2", int(info.reserved)), None
            if error not in _FALL_BACK:
                return None, error
            # v1 folds reserved memory into "used", which is what placement wants anyway.
            self._memory_v2 = False
            self._log_missing("nvmlDeviceGetMemoryInfo_v2", error)
        info, error = _query(pynvml.nvmlDeviceGetMemoryInfo, handle)
        if error is not None:
            return None, error
        return RawMemory(int(info.total), int(info.used), "v1"), None

    @staticmethod
    def _memory_v2_call(handle: Any) -> tuple[Any, str | None]:
        """The v2 memory call; "FunctionNotFound" where the binding predates it (no nvmlMemory_v2, or a
        nvmlDeviceGetMemoryInfo without `version`, as in the old pynvml / nvidia-ml-py3 packages)."""
        version = getattr(pynvml, "nvmlMemory_v2", None)
        if version is None:
            return None, "FunctionNotFound"
        try:
            return _query(pynvml.nvmlDeviceGetMemoryInfo, handle, version=version)
        except TypeError:  # unexpected keyword argument 'version'
            return None, "FunctionNotFound"

    def _processes(self, handle: Any) -> tuple[tuple[RawProcess, ...], str | None]:
        error = "FunctionNotFound"
        while self._process_calls:
            call = getattr(pynvml, self._process_calls[0], None)
            if call is None:
                error = "FunctionNotFound"
            else:
                found, failure = _query(call, handle)
                if failure is None:
                    return tuple(RawProcess(int(p.pid), _opt_int(p.usedGpuMemory)) for p in found), None
                error = failure
                if error not in ("FunctionNotFound", "ArgumentVersionMismatch"):
                    return (), error
            # Older driver: remember and use the previous struct version from now on.
            self._log_missing(self._process_calls.pop(0), error)
        return (), error

    def _log_missing(self, function: str, error: str) -> None:
        if function not in self._missing_logged:
            self._missing_logged.add(function)
            log.info("NVML %s unavailable (%s); using an older call (driver older than the binding?)", function, error)


def _query(function: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, str | None]:
    try:
        return function(*args, **kwargs), None
    except pynvml.NVMLError as err:
        return None, error_name(err)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _opt_text(value: str | bytes | None) -> str | None:
    return None if value is None else _text(value)


def _opt_int(value: object) -> int | None:
    return value if isinstance(value, int) else None


# --- the inventory -------------------------------------------------------------------------------


class NvmlInventory:
    """GPUs (and MIG instances) as NVML sees them right now.

    Init is lazy; when it fails the reading is "no GPUs" (or "paused") with the reason, and init is
    tried again only after a back-off (30 s, doubling to 5 min), not on every read.
    `only`: the `--gpus` ids to offer (indices or UUIDs), None for all.
    """

    def __init__(
        self,
        *,
        only: Sequence[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        retry_first_s: float = RETRY_FIRST_S,
        retry_max_s: float = RETRY_MAX_S,
    ) -> None:
        self.only = tuple(only) if only is not None else None
        self._clock = clock
        self._retry_first_s = retry_first_s
        self._retry_max_s = retry_max_s
        self._calls = _NvmlCalls()
        self._initialized = False
        self._had_gpus = False
        self._retry_delay_s = retry_first_s
        self._next_attempt = -math.inf
        self._failure: NvmlCallError | None = None  # what stopped the last attempt
        self.init_attempts = 0

    @property
    def available(self) -> bool:
        """True when NVML is initialised and answered the last read."""
        return self._initialized and self._failure is None

    def read(self) -> InventoryReading:
        if not self._initialized and not self._try_init():
            return self._failed_reading()
        try:
            raw = self._calls.read()
        except NvmlCallError as err:
            # The whole library stopped answering (e.g. driver upgraded): start over after a back-off.
            self._initialized = False
            self._calls.shutdown()
            self._fail(err)
            return self._failed_reading()
        devices, problems = devices_from_raw(raw)
        if self.only is not None:
            devices, unknown = select_devices(devices, self.only)
            problems += unknown
        count = len(devices)
        status = f"nvml: {count} GPU{'s' * (count != 1)}, driver {raw.driver_version}"
        if self.only is not None:
            status += f", restricted by --gpus {','.join(self.only)}"
        if not devices and (raw.devices or self._had_gpus or self.only is not None):
            # GPUs exist (or were asked for) but none can be used now (lost, needs a reset, MIG without
            # instances, --gpus naming none): pause rather than run GPU work in a CPU slot.
            why = "; ".join(problems) or "the GPUs seen before are gone"
            return InventoryReading(devices=(), status=f"paused: no usable GPU ({why}); {status}",
                                    problems=problems, paused=True)
        self._had_gpus = self._had_gpus or bool(devices)
        return InventoryReading(devices=devices, status=status, problems=problems)

    def _try_init(self) -> bool:
        now = self._clock()
        if now < self._next_attempt:
            return False
        self.init_attempts += 1
        try:
            self._calls.init()
        except NvmlCallError as err:
            self._fail(err)
            return False
        self._initialized = True
        self._failure = None
        self._retry_delay_s = self._retry_first_s
        return True

    def _fail(self, error: NvmlCallError) -> None:
        delay = self._retry_delay_s
        self._next_attempt = self._clock() + delay
        self._retry_delay_s = min(delay * 2, self._retry_max_s)
        self._failure = error

    def _failed_reading(self) -> InventoryReading:
        retry_in = max(0.0, self._next_attempt - self._clock())
        error = self._failure or NvmlCallError("Uninitialized")
        failure = init_failure(error.name, self._had_gpus, retry_in, error.detail)
        return InventoryReading(devices=(), status=failure.status, paused=failure.paused)
