"""Placement rules of DESIGN.md §4 as pure data: devices, claims and requests in, placements out."""

from __future__ import annotations

import pytest

from runqueue.devices.claims import Claim
from runqueue.devices.inventory import cpu_slot_devices
from runqueue.devices.model import Device, GpuProcess
from runqueue.devices.placement import (
    PlacementPolicy,
    PlacementRequest,
    free_memory_mb,
    never_fits,
    place,
    place_with_oom_fallback,
    provisional_claim,
    why_not_placed,
)


def gpu(uuid: str, index: int, total: int | None = 16000, used: int | None = 0, *procs: GpuProcess) -> Device:
    return Device(uuid=uuid, index=index, name="Test GPU", is_gpu=True, memory_total_mb=total,
                  memory_used_mb=used if total is not None else None, processes=tuple(procs))


def claim(run_dir: str, device: str, memory_mb: int = 2000, sid: int = 7000) -> Claim:
    return Claim(run_dir=run_dir, device_uuid=device, memory_mb=memory_mb, pid=sid, sid=sid, queue_id="q", created=0.0)


def req(run_dir: str, memory_mb: int = 2000, **kwargs: object) -> PlacementRequest:
    return PlacementRequest(run_dir=run_dir, memory_mb=memory_mb, **kwargs)  # type: ignore[arg-type]


def where(placements: list[tuple[PlacementRequest, Device]]) -> dict[str, str]:
    return {request.run_dir: device.uuid for request, device in placements}


PACK = PlacementPolicy(max_per_gpu=8)


def test_default_policy_is_one_run_per_gpu_in_request_order() -> None:
    devices = [gpu("GPU-a", 0), gpu("GPU-b", 1)]
    assert where(place([req("r1"), req("r2"), req("r3")], devices, [], PlacementPolicy())) == {
        "r1": "GPU-a", "r2": "GPU-b"}
    # a GPU that already holds one of our runs (any queue on this host) is full at max-per-gpu 1
    assert where(place([req("r3")], devices, [claim("r1", "GPU-a")], PlacementPolicy())) == {"r3": "GPU-b"}


def test_memory_packing_charges_each_placement_before_the_next() -> None:
    devices = [gpu("GPU-a", 0, total=10000, used=1000), gpu("GPU-b", 1, total=6000, used=0)]
    requests = [req("r1", 4000), req("r2", 4000), req("r3", 4000), req("r4", 1000)]
    # a has 9000 free -> r1 (5000 left); b's 6000 is now the most -> r2 (2000 left); a -> r3 (1000 left);
    # r4 (1000) fits both, b has more free -> b.
    assert where(place(requests, devices, [], PACK)) == {"r1": "GPU-a", "r2": "GPU-b", "r3": "GPU-a", "r4": "GPU-b"}
    assert where(place([req("big", 9001)], devices, [], PACK)) == {}


def test_max_per_gpu_caps_runs_even_when_memory_fits() -> None:
    devices = [gpu("GPU-a", 0, total=80000)]
    placed = place([req(f"r{i}", 1000) for i in range(5)], devices, [claim("old", "GPU-a", 1000)],
                   PlacementPolicy(max_per_gpu=3))
    assert list(where(placed)) == ["r0", "r1"]


def test_launched_run_showing_zero_mb_is_still_charged_its_declared_memory() -> None:
    # Our run on GPU-a started a moment ago: NVML lists its process (our session) at 0 MB.
    ours = GpuProcess(pid=7001, used_mb=0, sid=7000)
    devices = [gpu("GPU-a", 0, 8000, 0, ours)]
    claims = [claim("running", "GPU-a", 6000, sid=7000)]
    assert free_memory_mb(devices[0], claims) == 2000
    assert where(place([req("next", 3000)], devices, claims, PACK)) == {}
    # Once its session really uses 5000 MB, only the 1000 MB it still may grow are charged on top.
    grown = [gpu("GPU-a", 0, 8000, 5000, GpuProcess(pid=7001, used_mb=5000, sid=7000))]
    assert free_memory_mb(grown[0], claims) == 2000
    # And a run that outgrew its declaration is charged what NVML sees, not less.
    outgrown = [gpu("GPU-a", 0, 8000, 7000, GpuProcess(pid=7001, used_mb=7000, sid=7000))]
    assert free_memory_mb(outgrown[0], claims) == 1000


def test_gpu_nvml_shows_too_full_is_never_used_even_if_bookkeeping_fits() -> None:
    # No claims at all (bookkeeping says empty) but NVML reports 15000 of 16000 MB used by our own
    # earlier-started session that has no claim any more, e.g. a run finishing its teardown.
    devices = [gpu("GPU-a", 0, 16000, 15000, GpuProcess(pid=7001, used_mb=15000, sid=7000))]
    policy = PlacementPolicy(max_per_gpu=4, foreign="share")
    assert where(place([req("r", 2000)], devices, [], policy)) == {}
    assert "GPU-a has 1000 MB free < 2000 MB declared" in why_not_placed(req("r", 2000), devices, [], policy)


def test_foreign_process_blocks_unless_policy_shares() -> None:
    stranger = GpuProcess(pid=4242, used_mb=3000, sid=4242)
    vanished = GpuProcess(pid=999_999_999, used_mb=None, sid=None)  # unresolvable: treated as foreign
    ours = GpuProcess(pid=7001, used_mb=100, sid=7000)
    devices = [gpu("GPU-a", 0, 16000, 3000, stranger), gpu("GPU-b", 1, 16000, 100, ours), gpu("GPU-c", 2, 16000, 0, vanished)]
    claims = [claim("mine", "GPU-b", 2000, sid=7000)]
    block = PlacementPolicy(max_per_gpu=2)
    assert where(place([req("r1"), req("r2")], devices, claims, block)) == {"r1": "GPU-b"}
    line = why_not_placed(req("r2"), devices, claims, PlacementPolicy(max_per_gpu=1))
    assert line == ("waiting: GPU-a has a foreign process (pid 4242); GPU-b has 1 run(s), max-per-gpu 1; "
                    "GPU-c has a foreign process (pid 999999999)")
    share = PlacementPolicy(max_per_gpu=2, foreign="share")
    # share: free a 13000, b 16000 − 100 − our outstanding 1900 = 14000, c 16000; most free wins,
    # ties go to fewer runs then PCI order, and the foreign GPU-a is used once the others are full.
    assert where(place([req("r1"), req("r2"), req("r3"), req("r4")], devices, claims, share)) == {
        "r1": "GPU-c", "r2": "GPU-b", "r3": "GPU-c", "r4": "GPU-a"}


def test_untracked_memory_goes_by_run_count_only() -> None:
    devices = [gpu("0", 0, total=None), gpu("1", 1, total=None)]
    assert free_memory_mb(devices[0], []) is None
    placed = place([req(f"r{i}", 50_000) for i in range(5)], devices, [claim("old", "0")], PlacementPolicy(max_per_gpu=2))
    assert where(placed) == {"r0": "1", "r1": "0", "r2": "1"}
    # known total but unknown use (NVML could not read it) is never placeable
    unknown = [Device(uuid="GPU-u", index=0, name="x", is_gpu=True, memory_total_mb=16000, memory_used_mb=None)]
    assert place([req("r")], unknown, [], PACK) == []
    assert why_not_placed(req("r"), unknown, [], PACK) == "waiting: GPU-u memory use unknown"


def test_cpu_slots_take_one_run_each_whatever_max_per_gpu() -> None:
    slots = cpu_slot_devices(2)
    placed = place([req("r1"), req("r2"), req("r3")], slots, [], PlacementPolicy(max_per_gpu=4))
    assert where(placed) == {"r1": "cpu-0", "r2": "cpu-1"}
    claims = [claim("r1", "cpu-0"), claim("r2", "cpu-1")]
    assert why_not_placed(req("r3"), slots, claims, PACK) == "waiting: cpu-0 runs r1 (queue q); cpu-1 runs r2 (queue q)"
    # A run placed a moment ago (status charges the rows above): the slot is named as taken by it.
    ahead = [provisional_claim(req("/runs/c/param_A/r1"), slots[0]), claim("/runs/c/param_A/r2", "cpu-1")]
    assert why_not_placed(req("r3"), slots, ahead, PACK) == (
        "waiting: cpu-0 goes to param_A/r1, ahead of this run; cpu-1 runs param_A/r2 (queue q)")


def test_oom_retry_excludes_the_device_and_needs_more_free_memory() -> None:
    devices = [gpu("GPU-a", 0, 24000, 0), gpu("GPU-b", 1, 12000, 0), gpu("GPU-c", 2, 16000, 0)]
    retry = req("r", 2000, exclude=frozenset({"GPU-a"}), min_free_mb=14000)
    assert where(place([retry], devices, [], PACK)) == {"r": "GPU-c"}
    assert why_not_placed(retry, devices[:2], [], PACK) == (
        "waiting: GPU-a excluded for this run; GPU-b has 12000 MB free < 14000 MB needed after an out-of-memory failure")


def test_runs_already_claimed_or_repeated_are_not_placed_twice() -> None:
    devices = [gpu("GPU-a", 0), gpu("GPU-b", 1)]
    assert where(place([req("r1"), req("r1"), req("r2")], devices, [claim("r2", "GPU-a")], PACK)) == {"r1": "GPU-b"}
    assert why_not_placed(req("r2"), devices, [claim("r2", "GPU-a")], PACK) == "running: claimed on GPU-a by queue q (pid 7000)"


def test_explanations_when_ready_or_nothing_exists() -> None:
    devices = [gpu("GPU-0123456789abcdef", 0, 16000, 14500)]
    assert why_not_placed(req("r", 1000), devices, [], PACK) == "ready: fits GPU-01234567"
    assert why_not_placed(req("r", 2000), devices, [], PACK) == "waiting: GPU-01234567 has 1500 MB free < 2000 MB declared"
    assert why_not_placed(req("r"), [], [], PACK).startswith("waiting: no devices")


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="--max-per-gpu 0"):
        PlacementPolicy(max_per_gpu=0)
    with pytest.raises(ValueError, match="'block' or 'share'"):
        PlacementPolicy(foreign="maybe")  # type: ignore[arg-type]


def test_oom_retry_goes_to_a_gpu_with_more_free_memory_when_one_has_it() -> None:
    devices = [gpu("GPU-a", 0, total=8000), gpu("GPU-b", 1, total=24000)]
    retry = req("/r/oom", 2000, exclude=frozenset({"GPU-a"}), min_free_mb=7001)
    assert where(place_with_oom_fallback([retry], devices, [], PACK)) == {"/r/oom": "GPU-b"}


def test_oom_retry_without_a_bigger_gpu_is_placed_as_an_ordinary_retry_after_the_others() -> None:
    devices = [gpu("GPU-a", 0, total=8000)]
    retry = req("/r/a-oom", 2000, exclude=frozenset({"GPU-a"}), min_free_mb=7001)
    placed = place_with_oom_fallback([retry, req("/r/b", 5000)], devices, [], PACK)
    # /r/b is charged first, so the relaxed retry still has to fit next to it (3000 MB left).
    assert where(placed) == {"/r/a-oom": "GPU-a", "/r/b": "GPU-a"}
    assert [request.run_dir for request, _ in placed] == ["/r/a-oom", "/r/b"]  # run-folder order
    assert placed[0][0].exclude == frozenset() and placed[0][0].min_free_mb == 0
    crowded = place_with_oom_fallback([retry, req("/r/b", 7000)], devices, [], PACK)
    assert where(crowded) == {"/r/b": "GPU-a"}


def test_never_fits_names_the_largest_device_only_when_even_empty_devices_are_too_small() -> None:
    busy = gpu("GPU-a", 0, 16000, 15000, GpuProcess(pid=99, used_mb=15000))
    assert never_fits(req("/r/x", 12000), [busy], max_per_gpu=1) is None  # waits: it fits once the GPU is free
    assert never_fits(req("/r/x", 20000), [busy, gpu("GPU-b", 1, total=8000)], max_per_gpu=1) == 16000
    assert never_fits(req("/r/x", 20000), [], max_per_gpu=1) is None  # no devices yet: nothing to judge by


def test_a_process_holding_a_claimed_runs_lock_is_that_runs_own() -> None:
    from runqueue.devices.attribution import attribute_processes
    from runqueue.devices.placement import free_memory_mb

    worker, stranger = GpuProcess(pid=501, used_mb=3000, sid=501), GpuProcess(pid=777, used_mb=1000, sid=777)
    device = Device("GPU-a", 0, "A", True, memory_total_mb=16000, memory_used_mb=4000, processes=(worker, stranger))
    claim = Claim(run_dir="/runs/a", device_uuid="GPU-a", memory_mb=5000, pid=100, sid=100, queue_id="q", created=0.0)
    holds = {(501, "/runs/a/.runqueue/lock")}
    (seen,) = attribute_processes([device], [claim], holds=lambda pid, lock: (pid, str(lock)) in holds)
    assert [p.run_dir for p in seen.processes] == ["/runs/a", None]  # the stranger stays foreign
    # Its 3000 MB count against the run's 5000 declared, not on top of them: 16000 - 4000 - 2000.
    assert free_memory_mb(seen, [claim]) == 10000 and free_memory_mb(device, [claim]) == 7000
