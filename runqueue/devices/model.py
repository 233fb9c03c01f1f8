"""What every inventory returns and what placement consumes: plain, frozen data.

The single contract between inventories (NVML, static list, simulated file, CPU slots),
the pure placement function and the scheduler.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

# The uuid of CPU slot N is f"{CPU_SLOT_PREFIX}{N}".
CPU_SLOT_PREFIX = "cpu-"


@dataclass(frozen=True)
class GpuProcess:
    """A compute process NVML (or the simulated file) reports on a device."""

    pid: int
    used_mb: int | None  # None: the driver did not say
    # Session id of the pid as seen from this host, filled in by the inventory at read time so
    # that placement stays pure; None when the pid is gone or lives in another PID namespace.
    sid: int | None = None
    # The claimed run whose lock it holds although it left that run's session (a step's `setsid`
    # worker): filled in by devices.attribution; such a process is the run's own, not foreign.
    run_dir: str | None = None


def device_label(name: str, listed_index: int | None) -> str:
    """How logs name a device beside its UUID: "NVIDIA H100, index 0" (the index nvidia-smi shows)."""
    return name if listed_index is None else f"{name}, index {listed_index}"


@dataclass(frozen=True)
class Device:
    """One place a run can execute: a GPU, a MIG instance, or a CPU slot.

    `memory_total_mb is None` means memory is not tracked for this device (a static
    `--gpus` entry or a CPU slot): placement then goes by run count alone.
    """

    uuid: str  # "GPU-…", "MIG-…", a static id such as "0", or "cpu-0"
    index: int
    name: str
    is_gpu: bool
    memory_total_mb: int | None = None
    memory_used_mb: int | None = None
    processes: tuple[GpuProcess, ...] = ()

    @property
    def listed_index(self) -> int | None:
        """The index nvidia-smi lists the GPU by (a MIG instance: its GPU's), where the inventory read it;
        None for CPU slots and static `--gpus` entries, whose index is only their place in the list."""
        return self.index if self.is_gpu and self.memory_total_mb is not None else None

    def job_environment(self) -> dict[str, str]:
        """Environment a step placed here gets (DESIGN.md §4)."""
        if not self.is_gpu:
            return {"CUDA_VISIBLE_DEVICES": ""}
        return {
            "CUDA_VISIBLE_DEVICES": self.uuid,
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
            "TF_FORCE_GPU_ALLOW_GROWTH": "true",
        }


@dataclass(frozen=True)
class InventoryReading:
    """One fresh look at the devices, plus a one-line human description of the source."""

    devices: tuple[Device, ...]
    status: str  # e.g. "nvml: 2 GPUs, driver 550.54" or "no GPUs (NVML library not found); 1 CPU slot"
    problems: tuple[str, ...] = field(default=())  # per-device errors worth showing in `status`
    # True when GPUs exist but cannot be read right now (e.g. driver upgraded under us): place
    # nothing and do not fall back to CPU slots, which would silently run GPU work on the CPU.
    paused: bool = False


class Inventory(Protocol):
    """Anything that can say which devices exist right now. Never raises for 'no GPU'."""

    def read(self) -> InventoryReading: ...
