"""NVML: the real library failing on this GPU-less machine, the pure mapping from raw readings to
devices (lost GPUs, MIG, unreadable fields, hidden pids), and one real-NVML test where a GPU exists."""

from __future__ import annotations

import pynvml
import pytest

from runqueue.devices.inventory import CpuFallbackInventory, make_inventory
from runqueue.devices.model import InventoryReading
from runqueue.devices.nvml import (
    NvmlInventory,
    RawDevice,
    RawMemory,
    RawProcess,
    RawReading,
    devices_from_raw,
    init_failure,
    select_devices,
)

MIB = 1 << 20


def nvml_works() -> bool:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


HAS_NVML = nvml_works()
needs_no_nvml = pytest.mark.skipif(HAS_NVML, reason="NVML initialises here, so its absence cannot be observed")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_missing_python_module_is_a_no_gpu_state_naming_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    import runqueue.devices.nvml as nvml

    monkeypatch.setattr(nvml, "pynvml", None)  # what the guarded import leaves when nvidia-ml-py is absent
    reading = NvmlInventory(clock=Clock()).read()
    assert reading.devices == () and not reading.paused
    assert reading.status.startswith("no GPUs (Python module pynvml not found: install nvidia-ml-py")
    fallback = CpuFallbackInventory(NvmlInventory(clock=Clock()), 1).read()
    assert [device.uuid for device in fallback.devices] == ["cpu-0"]
    assert "install nvidia-ml-py" in fallback.status


@needs_no_nvml
def test_missing_library_is_a_no_gpu_state_retried_with_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    inventory = NvmlInventory(clock=clock)
    reading = inventory.read()  # real nvmlInit: libnvidia-ml.so.1 is not installed on this machine
    assert reading.devices == ()
    assert not reading.paused
    assert reading.status.startswith("no GPUs (NVML library libnvidia-ml.so.1 not found")
    assert "retrying in 30 s" in reading.status
    assert inventory.init_attempts == 1
    clock.now += 10
    assert "retrying in 20 s" in inventory.read().status
    assert inventory.init_attempts == 1  # not retried on every read
    clock.now += 21
    inventory.read()
    assert inventory.init_attempts == 2
    clock.now += 59  # the second wait is 60 s
    inventory.read()
    assert inventory.init_attempts == 2
    clock.now += 2
    inventory.read()
    assert inventory.init_attempts == 3

    monkeypatch.delenv("RUNQUEUE_SIMULATE_GPUS", raising=False)
    fallback = make_inventory(gpus=None, simulate_gpus=None, cpu_slots=2).read()
    assert [d.uuid for d in fallback.devices] == ["cpu-0", "cpu-1"]
    assert "install it to use GPUs" in fallback.status and fallback.status.endswith("2 CPU slots")


class FixedReading:
    def __init__(self, reading: InventoryReading) -> None:
        self.reading = reading

    def read(self) -> InventoryReading:
        return self.reading


def test_paused_reading_gets_no_cpu_slots_but_a_no_gpu_one_does() -> None:
    mismatch = init_failure("LibRmVersionMismatch", had_gpus=False, retry_in_s=30)
    assert mismatch.paused and "reboot or reload the nvidia modules" in mismatch.status
    paused = CpuFallbackInventory(FixedReading(InventoryReading((), mismatch.status, paused=True)), 4).read()
    assert paused.devices == () and paused.paused
    missing = init_failure("DriverNotLoaded", had_gpus=False, retry_in_s=30)
    assert not missing.paused and "load the nvidia kernel module" in missing.status
    offered = CpuFallbackInventory(FixedReading(InventoryReading((), missing.status)), 1).read()
    assert [d.uuid for d in offered.devices] == ["cpu-0"]
    # GPUs that worked and vanish pause placing instead of moving GPU work onto the CPU
    assert init_failure("DriverNotLoaded", had_gpus=True, retry_in_s=30).paused


def test_raw_reading_maps_to_devices_and_problems() -> None:
    sessions = {100: 100, 101: 100, 200: 200}  # pid -> sid as this host sees it; 300 is not visible
    raw = RawReading(
        driver_version="550.54.15",
        devices=(
            RawDevice(index=0, uuid="GPU-aaaa", name="NVIDIA A40",
                      memory=RawMemory(total_bytes=46068 * MIB + 5, used_bytes=1000 * MIB + 1, api="v2",
                                       reserved_bytes=616 * MIB),
                      processes=(RawProcess(101, 900 * MIB), RawProcess(300, None))),
            RawDevice(index=1, uuid="GPU-bbbb", error="GpuIsLost"),
            RawDevice(index=2, uuid="GPU-cccc", mig_enabled=True, mig_children=(
                RawDevice(index=0, uuid="MIG-c0", name="NVIDIA A100 MIG 3g.20gb",
                          memory=RawMemory(20 * 1024 * MIB, 0, "v1"), processes=(RawProcess(200, 10 * MIB),)),
                RawDevice(index=1, error="Unknown"),
                RawDevice(index=2, uuid="MIG-c2", memory=RawMemory(10 * 1024 * MIB, 0, "v2"),
                          processes_error="NoPermission"),
            )),
            RawDevice(index=3, uuid="GPU-dddd", mig_enabled=True),
            RawDevice(index=4, uuid="GPU-eeee", memory_error="NotSupported"),
            RawDevice(index=5, uuid=None, memory=RawMemory(MIB, 0, "v2")),
        ),
    )
    devices, problems = devices_from_raw(raw, session_of=sessions.get)
    assert [(d.uuid, d.index, d.memory_total_mb, d.memory_used_mb) for d in devices] == [
        ("GPU-aaaa", 0, 46068, 1617),  # total rounded down, used (with the driver's reservation) up
        ("MIG-c0", 2, 20480, 0),  # MIG instances stand in for their GPU, with its index
        ("MIG-c2", 2, 10240, 0),
    ]
    assert [(p.pid, p.used_mb, p.sid) for p in devices[0].processes] == [(101, 900, 100), (300, None, None)]
    assert devices[1].name == "NVIDIA A100 MIG 3g.20gb" and devices[2].name == "NVIDIA GPU"
    assert devices[1].job_environment()["CUDA_VISIBLE_DEVICES"] == "MIG-c0"
    assert problems == (
        "GPU 1 (GPU-bbbb): unusable (NVML GpuIsLost); it needs a reset or a reboot",
        "GPU 2 (GPU-cccc) MIG 1: unusable (NVML Unknown)",
        "GPU 2 (GPU-cccc) MIG 2: process list unreadable (NVML NoPermission); other users' processes are not seen",
        "GPU 3 (GPU-dddd): MIG is enabled but has no instances; create them (nvidia-smi mig -cgi … -C)",
        "GPU 4 (GPU-eeee): memory unreadable (NVML NotSupported), not used",
        "GPU 5: UUID unreadable, not used (devices are addressed by UUID)",
        "1 GPU process(es) are not visible in this PID namespace (a container without --pid=host?) and count as foreign",
    )


def test_gpus_list_selects_by_index_or_uuid_and_names_unknown_ids() -> None:
    raw = RawReading("1", (
        RawDevice(index=0, uuid="GPU-a", memory=RawMemory(MIB, 0, "v2")),
        RawDevice(index=1, uuid="GPU-b", mig_enabled=True, mig_children=(
            RawDevice(index=0, uuid="MIG-b0", memory=RawMemory(MIB, 0, "v2")),
            RawDevice(index=1, uuid="MIG-b1", memory=RawMemory(MIB, 0, "v2")),
        )),
    ))
    devices, _ = devices_from_raw(raw, session_of=lambda pid: None)
    chosen, problems = select_devices(devices, ["1"])
    assert [d.uuid for d in chosen] == ["MIG-b0", "MIG-b1"]
    chosen, problems = select_devices(devices, ["MIG-b1", "GPU-a", "7"])
    assert [d.uuid for d in chosen] == ["GPU-a", "MIG-b1"]  # NVML order, not the list's
    assert problems == ("--gpus 7: no such GPU (NVML sees 0, 1)",)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_NVML, reason="needs a real NVIDIA driver: nvmlInit() fails on this machine")
def test_real_nvml_reports_gpus_by_uuid_with_memory() -> None:
    inventory = NvmlInventory()
    reading = inventory.read()
    assert reading.status.startswith("nvml: "), reading.status
    assert reading.devices, reading.problems
    for device in reading.devices:
        assert device.uuid.startswith(("GPU-", "MIG-"))
        assert device.memory_total_mb and device.memory_total_mb > 0
        assert device.memory_used_mb is not None and 0 <= device.memory_used_mb <= device.memory_total_mb
    first = reading.devices[0]
    by_uuid = make_inventory(gpus=first.uuid, simulate_gpus=None, cpu_slots=None).read()
    assert [d.uuid for d in by_uuid.devices] == [first.uuid]


class FakeCalls:
    """Stands in for the NVML library calls: each read returns the next prepared raw reading."""

    def __init__(self, *readings: RawReading) -> None:
        self.readings = list(readings)

    def init(self) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def read(self) -> RawReading:
        return self.readings.pop(0)


def _healthy(uuid: str = "GPU-aaaa") -> RawDevice:
    return RawDevice(index=0, uuid=uuid, name="NVIDIA A40", memory=RawMemory(46068 * MIB, 0, "v2"))


@pytest.mark.parametrize(("raw", "only", "says"), [
    (RawReading("550.54", (RawDevice(index=0, uuid="GPU-aaaa", error="GpuIsLost"),)), None, "unusable (NVML GpuIsLost)"),
    (RawReading("550.54", (RawDevice(index=0, uuid="GPU-aaaa", mig_enabled=True),)), None, "MIG is enabled but has no instances"),
    (RawReading("550.54", (_healthy(),)), ("GPU-typo",), "--gpus GPU-typo: no such GPU"),
])
def test_gpus_that_exist_but_cannot_be_used_pause_instead_of_offering_cpu_slots(raw: RawReading, only: tuple[str, ...] | None,
                                                                                says: str) -> None:
    inventory = NvmlInventory(only=only)
    inventory._calls = FakeCalls(raw)  # type: ignore[assignment]
    reading = CpuFallbackInventory(inventory, 2).read()
    assert reading.paused and reading.devices == (), reading
    assert says in reading.status


def test_gpus_that_vanish_after_being_seen_pause_and_a_gpu_less_machine_gets_cpu_slots() -> None:
    inventory = NvmlInventory()
    inventory._calls = FakeCalls(RawReading("550.54", (_healthy(),)), RawReading("550.54", ()), RawReading("550.54", (_healthy(),)))  # type: ignore[assignment]
    wrapped = CpuFallbackInventory(inventory, 2)
    assert [d.uuid for d in wrapped.read().devices] == ["GPU-aaaa"]
    gone = wrapped.read()
    assert gone.paused and "the GPUs seen before are gone" in gone.status
    assert [d.uuid for d in wrapped.read().devices] == ["GPU-aaaa"]  # back: placed again
    never = NvmlInventory()
    never._calls = FakeCalls(RawReading("550.54", ()))  # type: ignore[assignment]
    assert [d.uuid for d in CpuFallbackInventory(never, 2).read().devices] == ["cpu-0", "cpu-1"]


def test_a_gpus_list_naming_no_gpu_is_refused_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    import runqueue.devices.nvml as nvml
    from runqueue.devices.errors import InventoryError

    monkeypatch.delenv("RUNQUEUE_SIMULATE_GPUS", raising=False)
    monkeypatch.setattr(nvml, "_NvmlCalls", lambda: FakeCalls(*[RawReading("550.54", (_healthy(),))] * 3))
    with pytest.raises(InventoryError, match=r"--gpus GPU-typo: no such GPU \(NVML sees 0\); give indices or UUIDs"):
        make_inventory(gpus="GPU-typo", simulate_gpus=None, cpu_slots=1)
    assert [d.uuid for d in make_inventory(gpus="0", simulate_gpus=None, cpu_slots=1).read().devices] == ["GPU-aaaa"]
