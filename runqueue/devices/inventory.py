"""Which devices exist right now: one factory over the simulated file, a static list, NVML, CPU slots.

`make_inventory` picks the source (DESIGN.md §4). Every inventory's `read()` returns a fresh
`InventoryReading`; none raises for "no GPU" (that is a state, shown in `.status`). Only a source
that cannot work as given raises `InventoryError` (e.g. a malformed simulated file).
"""

from __future__ import annotations

import os
from pathlib import Path

from runqueue.devices.errors import InventoryError
from runqueue.devices.model import CPU_SLOT_PREFIX, Device, Inventory, InventoryReading
from runqueue.devices.simulated import SimulatedInventory

__all__ = [
    "CpuFallbackInventory",
    "Inventory",
    "InventoryError",
    "SimulatedInventory",
    "StaticInventory",
    "cpu_slot_devices",
    "make_inventory",
]

SIMULATE_ENV = "RUNQUEUE_SIMULATE_GPUS"
# TensorFlow already spreads one training over every core, so by default one run at a time.
DEFAULT_CPU_SLOTS = 1


def cpu_slot_devices(count: int) -> tuple[Device, ...]:
    """`count` CPU slots, each taking one run (`CUDA_VISIBLE_DEVICES=` empty)."""
    return tuple(Device(uuid=f"{CPU_SLOT_PREFIX}{i}", index=i, name=f"CPU slot {i}", is_gpu=False) for i in range(count))


NO_GPUS = "none"  # `--gpus none`: CPU slots only, even where GPUs are


def parse_gpu_list(spec: str) -> tuple[str, ...]:
    """`--gpus 0,1` or `--gpus GPU-…,MIG-…` as a tuple of ids; () for `none`; InventoryError on
    an empty, repeated or malformed id (without NVML nothing else would catch a typo)."""
    if spec.strip().lower() == NO_GPUS:
        return ()
    ids = tuple(part.strip() for part in spec.split(","))
    if not ids or any(not part for part in ids):
        raise InventoryError(f"--gpus {spec!r}: expected a comma-separated list such as '0,1' or 'GPU-…,GPU-…'")
    for part in ids:
        if not (part.isdigit() or part.startswith(("GPU-", "MIG-"))):
            raise InventoryError(f"--gpus {spec!r}: {part!r} is neither a GPU index nor a GPU-…/MIG-… UUID; give ids"
                                 " that `runqueue gpus` lists, or `--gpus none` for CPU slots only")
    if len(set(ids)) != len(ids):
        raise InventoryError(f"--gpus {spec!r}: a GPU is listed twice; list each once")
    return ids


class NoGpuInventory:
    """`--gpus none`: never a GPU (the CPU fallback around it offers the CPU slots)."""

    status = "no GPUs (--gpus none)"

    def read(self) -> InventoryReading:
        return InventoryReading(devices=(), status=self.status)


class StaticInventory:
    """A fixed list of GPU ids whose memory nobody tracks: placement goes by run count alone.

    Used when NVML cannot be read; ids are passed to jobs as given (indices are meant in
    PCI bus order, which is why every GPU job also gets `CUDA_DEVICE_ORDER=PCI_BUS_ID`).
    """

    def __init__(self, ids: tuple[str, ...], reason: str = "") -> None:
        self.devices = tuple(
            Device(uuid=gpu_id, index=int(gpu_id) if gpu_id.isdigit() else position, name=f"GPU {gpu_id}", is_gpu=True)
            for position, gpu_id in enumerate(ids)
        )
        suffix = f" ({reason})" if reason else ""
        self.status = f"static: {len(ids)} GPU{'s' * (len(ids) != 1)} from --gpus, memory not tracked{suffix}"

    def read(self) -> InventoryReading:
        return InventoryReading(devices=self.devices, status=self.status)


class CpuFallbackInventory:
    """Wraps a GPU inventory: when it sees no GPU (and is not paused), offer CPU slots instead."""

    def __init__(self, inner: Inventory, cpu_slots: int) -> None:
        self.inner = inner
        self.cpu_slots = cpu_slots

    def read(self) -> InventoryReading:
        reading = self.inner.read()
        if reading.paused or any(device.is_gpu for device in reading.devices):
            return reading
        slots = self.cpu_slots
        return InventoryReading(
            devices=cpu_slot_devices(slots),
            status=f"{reading.status}; {slots} CPU slot{'s' * (slots != 1)}",
            problems=reading.problems,
        )


def simulated_inventory_path(simulate_gpus: str | None) -> str | None:
    """The simulated inventory file in effect: --simulate-gpus, else $RUNQUEUE_SIMULATE_GPUS."""
    return simulate_gpus or os.environ.get(SIMULATE_ENV) or None


def make_inventory(*, gpus: str | None, simulate_gpus: str | None, cpu_slots: int | None) -> Inventory:
    """The inventory DESIGN.md §4 asks for, by precedence.

    `simulate_gpus` argument, else env RUNQUEUE_SIMULATE_GPUS, else the static `gpus` list
    (resolved to UUIDs through NVML when NVML works), else NVML with MIG instances as their own
    devices; whichever it is, a reading without any GPU offers `cpu_slots` CPU slots (default 1).
    A simulated file is read once here so that a bad path fails at start, not at first placement.
    """
    slots, simulated, ids = check_inventory_settings(gpus=gpus, simulate_gpus=simulate_gpus, cpu_slots=cpu_slots)
    inner: Inventory
    if ids == ():
        inner = NoGpuInventory()
    elif simulated is not None:
        inner = simulated
    elif ids:
        inner = _static_inventory(ids)
    else:
        inner = _nvml_inventory()
    return CpuFallbackInventory(inner, slots)


def check_inventory_settings(*, gpus: str | None, simulate_gpus: str | None, cpu_slots: int | None
                             ) -> tuple[int, SimulatedInventory | None, tuple[str, ...] | None]:
    """InventoryError for settings no inventory can be made of, without asking NVML (a service's
    reload asks this before it starts again with them); else the CPU slots, the simulated
    inventory (read once) and the chosen GPU ids."""
    slots = DEFAULT_CPU_SLOTS if cpu_slots is None else cpu_slots
    if slots < 0:
        raise InventoryError(f"--cpu-slots {slots}: must be 0 or more (0 = never run on the CPU)")
    simulated_path = simulated_inventory_path(simulate_gpus)
    ids = parse_gpu_list(gpus) if gpus else None
    if ids == () and slots == 0:
        raise InventoryError("--gpus none with --cpu-slots 0 leaves no device to run on; give --cpu-slots 1 or more")
    simulated = None
    if simulated_path and ids != ():  # `--gpus` picks among the simulated GPUs, as among real ones
        simulated = SimulatedInventory(Path(simulated_path), ids or ())
        simulated.check_chosen()
    return slots, simulated, ids


def _static_inventory(ids: tuple[str, ...]) -> Inventory:
    """NVML restricted to `ids` when NVML works (UUIDs, memory, processes); else untracked ids.

    Decided once, at start: switching later would key the same GPU by two names in the claims.
    """
    from runqueue.devices.nvml import NvmlInventory  # loads pynvml only when NVML is wanted

    nvml = NvmlInventory(only=ids)
    first = nvml.read()
    if nvml.available and not first.devices and any(problem.startswith("--gpus ") for problem in first.problems):
        # A typo, not a state that mends itself: say so now rather than wait for a GPU that is not there.
        raise InventoryError(f"{'; '.join(first.problems)}; give indices or UUIDs that `runqueue gpus` lists")
    if nvml.available or first.paused:
        return nvml
    return StaticInventory(ids, reason="NVML unavailable")


def _nvml_inventory() -> Inventory:
    from runqueue.devices.nvml import NvmlInventory

    return NvmlInventory()
