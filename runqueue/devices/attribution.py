"""Which of the processes NVML lists on a device belong to our runs.

A claim names its supervisor's pid and session: a run's steps share that session. A step may leave
it (`setsid` in a script), yet it still holds the run lock that every step inherits, and nobody
else can hold that lock while the run runs. Such a process is marked with its run here, so that
placement neither calls it foreign (which would keep runs off the device under --foreign block)
nor counts its memory twice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

from runqueue.devices.claims import Claim
from runqueue.devices.model import Device, GpuProcess
from runqueue.layout import RunPaths
from runqueue.procinfo import holds_write_lock_on


def is_ours(process: GpuProcess, claims: Sequence[Claim]) -> bool:
    """The process is a claimed run's: its supervisor, in its session, or holding its run lock."""
    return any(process.pid == claim.pid or (process.sid is not None and process.sid == claim.sid)
               or (process.run_dir is not None and process.run_dir == claim.run_dir) for claim in claims)


def attribute_processes(devices: Sequence[Device], claims: Sequence[Claim],
                        holds: Callable[[int, Path], bool | None] = holds_write_lock_on) -> tuple[Device, ...]:
    """`devices` with each process that holds the lock of a run claimed on its device marked as that run's."""
    attributed = []
    for device in devices:
        here = [claim for claim in claims if claim.device_uuid == device.uuid]
        if not here or not any(not is_ours(p, here) for p in device.processes):
            attributed.append(device)
            continue
        processes = []
        for process in device.processes:
            if not is_ours(process, here):
                owner = next((claim.run_dir for claim in here if holds(process.pid, RunPaths(Path(claim.run_dir)).lock)), None)
                if owner is not None:
                    process = dataclasses.replace(process, run_dir=owner)
            processes.append(process)
        attributed.append(dataclasses.replace(device, processes=tuple(processes)))
    return tuple(attributed)
