"""NVML: the thin pynvml layer (MIG slots, call fall-backs) with a
fake driver, and the recovery/back-off of NvmlInventory after the library stops answering."""

from __future__ import annotations

from types import SimpleNamespace

import pynvml
import pytest

from runqueue.devices import nvml
from runqueue.devices.nvml import NvmlCallError, NvmlInventory, RawDevice, RawMemory, RawReading

MIB = 1 << 20


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _healthy() -> RawReading:
    return RawReading("550.54", (RawDevice(index=0, uuid="GPU-aaaa", name="A40", memory=RawMemory(46068 * MIB, 0, "v2")),))


class ReloadingDriver:
    """NVML calls whose library stops answering once (driver upgraded), then works after a new init."""

    def __init__(self, fail_inits: int = 0) -> None:
        self.initialised = False
        self.inits = 0
        self.fail_inits = fail_inits
        self.broken_once = False

    def init(self) -> None:
        self.inits += 1
        if self.fail_inits:
            self.fail_inits -= 1
            raise NvmlCallError("DriverNotLoaded")
        self.initialised = True

    def shutdown(self) -> None:
        self.initialised = False

    def read(self) -> RawReading:
        if not self.initialised:
            raise NvmlCallError("Uninitialized")
        if not self.broken_once:
            self.broken_once = True
            raise NvmlCallError("LibRmVersionMismatch")
        return _healthy()


def test_a_library_that_stops_answering_is_initialised_again_after_the_backoff_and_recovers() -> None:
    clock = Clock()
    inventory = NvmlInventory(clock=clock)
    driver = ReloadingDriver()
    inventory._calls = driver  # type: ignore[assignment]
    first = inventory.read()
    assert first.paused and first.devices == () and "reload the nvidia modules" in first.status
    clock.now += 31  # past the first back-off: NVML is initialised again, and the GPU is offered again
    again = inventory.read()
    assert [d.uuid for d in again.devices] == ["GPU-aaaa"], again.status
    assert driver.inits == 2


def test_init_backoff_is_capped_at_five_minutes_and_reset_after_success() -> None:
    clock = Clock()
    inventory = NvmlInventory(clock=clock)
    driver = ReloadingDriver(fail_inits=8)
    driver.broken_once = True  # once initialised, it reads fine
    inventory._calls = driver  # type: ignore[assignment]
    waits = []
    for _ in range(8):
        status = inventory.read().status
        waits.append(int(status.rsplit("retrying in ", 1)[1].split(" s")[0]))
        clock.now += waits[-1] + 0.5
    assert waits == [30, 60, 120, 240, 300, 300, 300, 300]  # a driver installed later is seen within 5 min
    assert [d.uuid for d in inventory.read().devices] == ["GPU-aaaa"]
    driver.fail_inits, driver.broken_once = 1, False  # the library stops answering, and the next init fails
    inventory.read()  # fails: back-off starts again at 30 s, not at 300
    status = inventory.read().status
    assert "retrying in 30 s" in status, status


# --- the thin pynvml layer, with a fake driver -----------------------------------------------------


def _raise(name: str) -> None:
    # NVMLError(code) gives the code's subclass (NVMLError_NotFound, …) in old and new bindings alike.
    raise pynvml.NVMLError(getattr(pynvml, {
        "NotFound": "NVML_ERROR_NOT_FOUND",
        "ArgumentVersionMismatch": "NVML_ERROR_ARGUMENT_VERSION_MISMATCH",
        "FunctionNotFound": "NVML_ERROR_FUNCTION_NOT_FOUND",
        "GpuIsLost": "NVML_ERROR_GPU_IS_LOST",
    }[name]))


@pytest.fixture
def fake_driver(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """One MIG GPU with 7 instance slots, 2 of them used; processes_v3 too new for the driver."""
    calls = {"v3": 0, "v2": 0, "memory_v2": 0}
    mig = {0: "MIG-zero", 3: "MIG-three"}

    def memory(handle: object, version: object = None) -> SimpleNamespace:
        if version is not None:
            calls["memory_v2"] += 1
            _raise("FunctionNotFound")
        return SimpleNamespace(total=10240 * MIB, used=100 * MIB)

    def mig_handle(parent: object, slot: int) -> str:
        if slot not in mig:
            _raise("NotFound")
        return mig[slot]

    def v3(handle: object) -> list:
        calls["v3"] += 1
        _raise("ArgumentVersionMismatch")

    def v2(handle: object) -> list:
        calls["v2"] += 1
        return [SimpleNamespace(pid=4242, usedGpuMemory=50 * MIB)]

    for name, function in {
        "nvmlDeviceGetCount": lambda: 1,
        "nvmlSystemGetDriverVersion": lambda: "470.1",
        "nvmlDeviceGetHandleByIndex": lambda index: "gpu0",
        "nvmlDeviceGetMigMode": lambda handle: [pynvml.NVML_DEVICE_MIG_ENABLE, pynvml.NVML_DEVICE_MIG_ENABLE],
        "nvmlDeviceGetMaxMigDeviceCount": lambda handle: 7,
        "nvmlDeviceGetMigDeviceHandleByIndex": mig_handle,
        "nvmlDeviceGetUUID": lambda handle: {"gpu0": "GPU-parent"}.get(handle, handle),
        "nvmlDeviceGetName": lambda handle: "NVIDIA A100 MIG 1g.10gb",
        "nvmlDeviceGetMemoryInfo": memory,
        "nvmlDeviceGetComputeRunningProcesses_v3": v3,
        "nvmlDeviceGetComputeRunningProcesses_v2": v2,
    }.items():
        monkeypatch.setattr(pynvml, name, function, raising=False)  # older bindings lack the _v2 name
    return calls


def test_mig_instances_are_read_and_empty_slots_are_no_problem(fake_driver: dict[str, int]) -> None:
    raw = nvml._NvmlCalls().read()
    devices, problems = nvml.devices_from_raw(raw, session_of=lambda pid: None)
    assert [(d.uuid, d.index) for d in devices] == [("MIG-zero", 0), ("MIG-three", 0)]
    assert not any("unusable" in p for p in problems), problems  # 5 free slots are not 5 broken devices


def test_an_older_driver_falls_back_to_older_process_and_memory_calls_and_remembers(fake_driver: dict[str, int]) -> None:
    calls = nvml._NvmlCalls()
    raw = calls.read()
    devices, problems = nvml.devices_from_raw(raw, session_of=lambda pid: None)
    # other users' processes are still seen through the v2 call (a v3 ArgumentVersionMismatch is no reason to go blind)
    assert [(p.pid, p.used_mb) for p in devices[0].processes] == [(4242, 50)]
    assert devices[0].memory_used_mb == 100
    assert not any("process list unreadable" in p for p in problems), problems
    calls.read()
    assert fake_driver["v3"] == 1 and fake_driver["memory_v2"] == 1  # the newer calls are not retried on every read


class MismatchedDriver:
    def init(self) -> None:
        raise NvmlCallError("LibRmVersionMismatch")

    def shutdown(self) -> None:
        pass

    def read(self) -> RawReading:
        raise AssertionError("never read without init")


def test_gpus_list_while_the_driver_is_mismatched_pauses_instead_of_untracked_static_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    from runqueue.devices.inventory import make_inventory

    monkeypatch.delenv("RUNQUEUE_SIMULATE_GPUS", raising=False)
    monkeypatch.setattr(nvml, "_NvmlCalls", MismatchedDriver)
    reading = make_inventory(gpus="0", simulate_gpus=None, cpu_slots=1).read()
    # GPUs exist but NVML cannot read them: nothing is placed (not GPU "0" untracked, not a CPU slot)
    assert reading.paused and reading.devices == (), reading
    assert "reload the nvidia modules" in reading.status


def test_a_binding_without_memory_v2_falls_back_to_v1(fake_driver: dict[str, int], monkeypatch: pytest.MonkeyPatch) -> None:
    # The old pynvml / nvidia-ml-py3 packages: no nvmlMemory_v2, and nvmlDeviceGetMemoryInfo(handle) only.
    monkeypatch.delattr(pynvml, "nvmlMemory_v2", raising=False)
    raw = nvml._NvmlCalls().read()
    assert {child.memory.api for child in raw.devices[0].mig_children} == {"v1"}
    assert fake_driver["memory_v2"] == 0
    monkeypatch.setattr(pynvml, "nvmlMemory_v2", object(), raising=False)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetMemoryInfo", lambda handle: SimpleNamespace(total=10240 * MIB, used=MIB))
    raw = nvml._NvmlCalls().read()  # a `version` keyword it does not take: a TypeError, not a crash
    assert {child.memory.api for child in raw.devices[0].mig_children} == {"v1"}


def test_a_binding_that_lacks_a_call_pauses_placing_with_a_line_naming_the_module(
        fake_driver: dict[str, int], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(pynvml, "nvmlDeviceGetMigMode")
    monkeypatch.setattr(pynvml, "nvmlInit", lambda: None)
    monkeypatch.delattr(pynvml, "nvmlShutdown")  # what the queue calls after a failed read: must not crash either
    clock = Clock()
    inventory = NvmlInventory(clock=clock)
    reading = inventory.read()  # never an AttributeError out of the queue
    assert reading.paused and reading.devices == ()
    assert reading.status.startswith("paused: NVML cannot be read (the pynvml module")
    assert f"the pynvml module is not a usable nvidia-ml-py ({pynvml.__file__}: AttributeError:" in reading.status
    assert "uninstall the old pynvml and nvidia-ml-py3 packages, then install nvidia-ml-py again" in reading.status
    assert "retrying in 30 s" in reading.status


def test_a_binding_with_only_the_unsuffixed_process_call_still_sees_other_processes(
        fake_driver: dict[str, int], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(pynvml, "nvmlDeviceGetComputeRunningProcesses_v3", raising=False)
    monkeypatch.delattr(pynvml, "nvmlDeviceGetComputeRunningProcesses_v2", raising=False)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetComputeRunningProcesses",
                        lambda handle: [SimpleNamespace(pid=77, usedGpuMemory=10 * MIB)])
    devices, problems = nvml.devices_from_raw(nvml._NvmlCalls().read(), session_of=lambda pid: None)
    assert [(p.pid, p.used_mb) for p in devices[0].processes] == [(77, 10)]
    assert not any("process list unreadable" in p for p in problems), problems
