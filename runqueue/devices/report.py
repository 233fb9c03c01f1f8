"""What the inventory sees, for people (`runqueue gpus`) and for `status --json` (`devices_json`)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from typing import Any

from runqueue.devices.attribution import attribute_processes, is_ours
from runqueue.devices.claims import Claim, ClaimStore
from runqueue.devices.errors import ClaimError, InventoryError
from runqueue.devices.inventory import make_inventory
from runqueue.devices.model import Device, InventoryReading
from runqueue.devices.nvml import without_retry_note
from runqueue.devices.placement import free_memory_mb

UNSEEN_DEVICE = "not in this inventory: claimed by a queue that sees other devices"


def unseen_claims(reading: InventoryReading, claims: Sequence[Claim]) -> dict[str, list[Claim]]:
    """Claims on devices this reading does not list (another queue's CPU slots, GPUs a --gpus filter
    leaves out), by device: every queue's claims must show, not only those on our devices."""
    seen = {device.uuid for device in reading.devices}
    unseen: dict[str, list[Claim]] = {}
    for claim in claims:
        if claim.device_uuid not in seen:
            unseen.setdefault(claim.device_uuid, []).append(claim)
    return dict(sorted(unseen.items()))


def devices_json(reading: InventoryReading, claims: Sequence[Claim]) -> list[dict[str, Any]]:
    """DESIGN.md §5 `devices` entries: uuid, index, name, memory_total_mb, memory_used_mb, runs; then
    one entry (index null) per device only other queues' claims name."""
    entries = [
        {
            "uuid": device.uuid,
            "index": device.index,
            "name": device.name,
            "memory_total_mb": device.memory_total_mb,
            "memory_used_mb": device.memory_used_mb,
            "runs": sorted(claim.run_dir for claim in claims if claim.device_uuid == device.uuid),
        }
        for device in reading.devices
    ]
    entries += [
        {"uuid": uuid, "index": None, "name": UNSEEN_DEVICE, "memory_total_mb": None, "memory_used_mb": None,
         "runs": sorted(claim.run_dir for claim in held)}
        for uuid, held in unseen_claims(reading, claims).items()
    ]
    return entries


def _detailed_json(reading: InventoryReading, claims: Sequence[Claim]) -> dict[str, Any]:
    entries = devices_json(reading, claims)
    for entry in entries[len(reading.devices):]:
        entry.update(is_gpu=None, free_mb=None, processes=[])
    for entry, device in zip(entries, reading.devices, strict=False):
        entry["is_gpu"] = device.is_gpu
        entry["free_mb"] = free_memory_mb(device, claims)
        entry["processes"] = [
            {"pid": p.pid, "used_mb": p.used_mb, "ours": is_ours(p, claims)}
            for p in device.processes
        ]
    return {"status": reading.status, "paused": reading.paused, "problems": list(reading.problems), "devices": entries}


def _memory_text(device: Device, claims: Sequence[Claim]) -> str:
    if device.memory_total_mb is None:
        return "not tracked" if device.is_gpu else "-"
    used = "?" if device.memory_used_mb is None else str(device.memory_used_mb)
    free = free_memory_mb(device, claims)
    return f"{used}/{device.memory_total_mb} MB used, {'?' if free is None else free} MB free"


def render_table(reading: InventoryReading, claims: Sequence[Claim]) -> str:
    """A few lines per device: identity, memory, processes, our runs."""
    lines = [reading.status]
    for device in reading.devices:
        lines.append(f"  [{device.index}] {device.uuid}  {device.name}  {_memory_text(device, claims)}")
        if device.processes:
            shown = ", ".join(
                f"{p.pid} ({'ours' if is_ours(p, claims) else 'foreign'}"
                f"{'' if p.used_mb is None else f', {p.used_mb} MB'})"
                for p in device.processes
            )
            lines.append(f"      processes: {shown}")
        for claim in sorted(claims, key=lambda c: c.run_dir):
            if claim.device_uuid == device.uuid:
                lines.append(f"      run: {claim.run_dir} ({claim.memory_mb} MB declared, pid {claim.pid})")
    for uuid, held in unseen_claims(reading, claims).items():
        lines.append(f"  [-] {uuid}  {UNSEEN_DEVICE}")
        lines.extend(f"      run: {claim.run_dir} ({claim.memory_mb} MB declared, pid {claim.pid})"
                     for claim in sorted(held, key=lambda c: c.run_dir))
    lines.extend(f"  problem: {problem}" for problem in reading.problems)
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="runqueue gpus", description="Show the devices the queue would use.")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--gpus", metavar="LIST", help="use only these GPUs: indices or UUIDs, e.g. 0,1 (with NVML, a filter on what it finds); `none` = CPU slots only")
    parser.add_argument("--simulate-gpus", metavar="FILE", help="simulated inventory file (format: docs/devices.md, 'The simulated inventory file')")
    parser.add_argument("--cpu-slots", type=int, metavar="N", help="CPU slots offered when there is no GPU (default 1)")
    return parser


def gpus_command(argv: list[str]) -> int:
    """`runqueue gpus [--json] [--gpus …] [--simulate-gpus …] [--cpu-slots N]`; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        reading = make_inventory(gpus=args.gpus, simulate_gpus=args.simulate_gpus, cpu_slots=args.cpu_slots).read()
    except InventoryError as err:
        print(f"runqueue gpus: error: {err}", file=sys.stderr)
        return 2
    reading = dataclasses.replace(reading, status=without_retry_note(reading.status))  # one look, no retries
    try:
        claims = ClaimStore().claims()
    except ClaimError as err:
        claims = []
        reading = InventoryReading(reading.devices, reading.status, (*reading.problems, str(err)), reading.paused)
    reading = dataclasses.replace(reading, devices=attribute_processes(reading.devices, claims))
    if args.json:
        print(json.dumps(_detailed_json(reading, claims), indent=2))
    else:
        print(render_table(reading, claims))
    return 0
