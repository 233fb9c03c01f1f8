"""Which pending run goes on which device: pure functions over one inventory reading and the claims.

No I/O: every fact (NVML memory, processes and their sessions, host-wide claims) comes in as
data, so the rules of DESIGN.md §4 are tested with plain values.

Free memory of a GPU = total − what NVML shows used − for each of our claims on it, the part of
its declared memory that its session does not use yet. So a run just launched (NVML still shows
it at 0 MB) is charged in full, a run that grew past its declaration is charged what NVML sees,
and a GPU that NVML shows too full is never used, whatever our bookkeeping says.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from runqueue.devices.attribution import is_ours
from runqueue.devices.claims import Claim
from runqueue.devices.model import Device

ForeignPolicy = Literal["block", "share"]


@dataclass(frozen=True)
class PlacementPolicy:
    """`max_per_gpu`: our runs per GPU (1 like the original `oneTaskPerGPU`; more packs by memory).
    `foreign`: "block" keeps runs off a GPU where someone else computes; "share" allows it when memory fits."""

    max_per_gpu: int = 1
    foreign: ForeignPolicy = "block"

    def __post_init__(self) -> None:
        if self.max_per_gpu < 1:
            raise ValueError(f"--max-per-gpu {self.max_per_gpu}: must be 1 or more")
        if self.foreign not in ("block", "share"):
            raise ValueError(f"foreign policy {self.foreign!r}: must be 'block' or 'share'")


@dataclass(frozen=True)
class PlacementRequest:
    """A pending run. `exclude` and `min_free_mb` serve the retry after a CUDA out-of-memory failure:
    avoid the device that ran out, and need at least `min_free_mb` free (more than it had there)."""

    run_dir: str
    memory_mb: int
    exclude: frozenset[str] = frozenset()
    min_free_mb: int = 0

    @property
    def needed_mb(self) -> int:
        return max(self.memory_mb, self.min_free_mb)


@dataclass
class _Load:
    """A device as placement sees it, updated as runs are placed during one `place` call."""

    device: Device
    runs: int
    free_mb: int | None  # None: not tracked (static id, CPU slot) or unknown
    foreign_pids: tuple[int, ...]
    holders: tuple[Claim, ...] = ()

    @property
    def tracked(self) -> bool:
        return self.device.memory_total_mb is not None


def free_memory_mb(device: Device, claims: Sequence[Claim]) -> int | None:
    """Memory a new run could get on `device` (never below 0), or None when it is not known."""
    total, used = device.memory_total_mb, device.memory_used_mb
    if total is None or used is None:
        return None
    outstanding = sum(
        max(0, claim.memory_mb - _session_usage_mb(device, claim)) for claim in claims if claim.device_uuid == device.uuid
    )
    return max(0, total - used - outstanding)


def _session_usage_mb(device: Device, claim: Claim) -> int:
    return sum(p.used_mb or 0 for p in device.processes if is_ours(p, (claim,)))


def _foreign_pids(device: Device, claims: Sequence[Claim]) -> tuple[int, ...]:
    # A pid whose session cannot be resolved (gone, or in another PID namespace) counts as foreign:
    # wrongly waiting is better than over-booking someone's GPU.
    return tuple(p.pid for p in device.processes if not is_ours(p, claims))


def _loads(devices: Sequence[Device], claims: Sequence[Claim]) -> list[_Load]:
    loads = []
    for device in devices:
        holders = tuple(claim for claim in claims if claim.device_uuid == device.uuid)
        loads.append(_Load(device=device, runs=len(holders), free_mb=free_memory_mb(device, claims),
                           foreign_pids=_foreign_pids(device, claims) if device.is_gpu else (), holders=holders))
    return loads


def device_label(device: Device) -> str:
    """Short name for one-line explanations: `GPU-ab12cdef`, `MIG-1a2b3c4d`, `GPU 0`, `cpu-0`."""
    uuid = device.uuid
    if uuid.isdigit():
        return f"GPU {uuid}"
    return uuid[:12]


def _refusal(load: _Load, request: PlacementRequest, policy: PlacementPolicy) -> str | None:
    """Why `load` cannot take `request` now, or None when it can."""
    device, label = load.device, device_label(load.device)
    if device.uuid in request.exclude:
        return f"{label} excluded for this run"
    limit = policy.max_per_gpu if device.is_gpu else 1
    if load.runs >= limit:
        return _busy_with(label, load.holders) if not device.is_gpu else f"{label} has {load.runs} run(s), max-per-gpu {limit}"
    if load.foreign_pids and policy.foreign == "block":
        pids = load.foreign_pids
        shown = ", ".join(map(str, pids[:3])) + ("…" if len(pids) > 3 else "")
        return f"{label} has a foreign process (pid {shown})" if len(pids) == 1 else f"{label} has foreign processes (pids {shown})"
    if not load.tracked:
        return None
    if load.free_mb is None:
        return f"{label} memory use unknown"
    if load.free_mb < request.needed_mb:
        what = "declared" if request.memory_mb >= request.min_free_mb else "needed after an out-of-memory failure"
        return f"{label} has {load.free_mb} MB free < {request.needed_mb} MB {what}"
    return None


def _busy_with(label: str, holders: Sequence[Claim]) -> str:
    """`cpu-0 runs …/param_A/x`, or, for a placement decided a moment ago (no pid yet), that it is next."""
    if not holders:
        return f"{label} is busy"
    holder = holders[0]
    where = "/".join(Path(holder.run_dir).parts[-2:])
    if holder.pid < 0:
        return f"{label} goes to {where}, ahead of this run"
    return f"{label} runs {where} (queue {holder.queue_id})" if holder.queue_id else f"{label} runs {where}"


def _best(candidates: list[_Load]) -> _Load:
    # Most free memory first, then fewest runs, then PCI order: spreads runs so each keeps headroom.
    return min(candidates, key=lambda load: (-(load.free_mb or 0), load.runs, load.device.index))


def place(
    requests: Sequence[PlacementRequest],
    devices: Sequence[Device],
    claims: Sequence[Claim],
    policy: PlacementPolicy,
) -> list[tuple[PlacementRequest, Device]]:
    """Placements for as many `requests` as fit, decided in request order.

    Each accepted placement is charged (its declared memory, one run) before the next decision.
    A request whose run already holds a claim, or that repeats an earlier request, is skipped.
    """
    loads = _loads(devices, claims)
    taken = {claim.run_dir for claim in claims}
    placed: list[tuple[PlacementRequest, Device]] = []
    for request in requests:
        if request.run_dir in taken:
            continue
        candidates = [load for load in loads if _refusal(load, request, policy) is None]
        if not candidates:
            continue
        chosen = _best(candidates)
        chosen.runs += 1
        if chosen.free_mb is not None:
            chosen.free_mb -= request.memory_mb
        taken.add(request.run_dir)
        placed.append((request, chosen.device))
    return placed


def placement_verdict(
    request: PlacementRequest,
    devices: Sequence[Device],
    claims: Sequence[Claim],
    policy: PlacementPolicy,
) -> tuple[str, Device | None]:
    """One line for `status`: why `request` waits (or where it would go / where it runs); and the
    device it would go to now, when it would."""
    holder = next((claim for claim in claims if claim.run_dir == request.run_dir), None)
    labels = {device.uuid: device_label(device) for device in devices}
    if holder is not None:
        where = labels.get(holder.device_uuid, holder.device_uuid[:12])
        return f"running: claimed on {where} by queue {holder.queue_id} (pid {holder.pid})", None
    if not devices:
        return "waiting: no devices available (see `runqueue gpus`)", None
    loads = _loads(devices, claims)
    refusals = [_refusal(load, request, policy) for load in loads]
    fitting = [load for load, refusal in zip(loads, refusals, strict=True) if refusal is None]
    if fitting:
        best = _best(fitting).device
        return f"ready: fits {device_label(best)}", best
    return "waiting: " + "; ".join(refusal for refusal in refusals if refusal is not None), None


def why_not_placed(
    request: PlacementRequest,
    devices: Sequence[Device],
    claims: Sequence[Claim],
    policy: PlacementPolicy,
) -> str:
    """placement_verdict's line alone."""
    return placement_verdict(request, devices, claims, policy)[0]


def provisional_claim(request: PlacementRequest, device: Device, queue_id: str = "") -> Claim:
    """A placement decided but not launched yet, charged like a claim (no pid: its session is unknown)."""
    return Claim(request.run_dir, device.uuid, request.memory_mb, -1, -1, queue_id, 0.0)


def place_with_oom_fallback(
    requests: Sequence[PlacementRequest],
    devices: Sequence[Device],
    claims: Sequence[Claim],
    policy: PlacementPolicy,
) -> list[tuple[PlacementRequest, Device]]:
    """`place`, then a CUDA-OOM retry that no device with more free memory could take is placed like
    an ordinary retry (its exclusion and minimum dropped), after everything placed in the first pass.
    The result is in run-folder order."""
    placed = place(requests, devices, claims, policy)
    placed_dirs = {request.run_dir for request, _ in placed}
    relaxed = [
        replace(request, exclude=frozenset(), min_free_mb=0)
        for request in requests
        if request.run_dir not in placed_dirs and (request.exclude or request.min_free_mb)
    ]
    if relaxed:
        charged = [*claims, *(provisional_claim(request, device) for request, device in placed)]
        placed += place(relaxed, devices, charged, policy)
    return sorted(placed, key=lambda item: item[0].run_dir)


def never_fits(request: PlacementRequest, devices: Sequence[Device], max_per_gpu: int) -> int | None:
    """The largest device's memory when `request` could not be placed even on idle, empty devices
    (it would wait forever); None when it fits one, or when there are no devices to judge by."""
    if not devices:
        return None
    empty = [
        replace(device, memory_used_mb=0 if device.memory_total_mb is not None else None, processes=())
        for device in devices
    ]
    relaxed = replace(request, exclude=frozenset(), min_free_mb=0)
    if place([relaxed], empty, [], PlacementPolicy(max_per_gpu=max_per_gpu, foreign="share")):
        return None
    return max((device.memory_total_mb or 0) for device in devices)
