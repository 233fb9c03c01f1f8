"""The queue's settings, in a module of their own so that every part of the queue can read them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from runqueue.layout import DEFAULT_MEMORY_MB
from runqueue.slurm.options import SlurmOptions


@dataclass
class QueueOptions:
    """Everything `runqueue run` / `serve` can be told (DESIGN.md §5)."""

    roots: list[Path]
    watch: bool = False
    gpus: str | None = None
    simulate_gpus: str | None = None
    cpu_slots: int | None = None
    max_per_gpu: int = 1
    foreign: str = "block"
    memory_per_run: int = DEFAULT_MEMORY_MB
    retries: int = 1
    retry_backoff_s: float = 10.0
    time_limit_s: float | None = None
    kill_grace_s: float = 10.0
    executor: str = "local"
    slurm: SlurmOptions = field(default_factory=SlurmOptions)  # --slurm-* (only with executor "slurm")
    poll_interval_s: float = 5.0
    quiet: bool = False
    stop_runs: bool = False  # first Ctrl-C/SIGTERM also stops the running runs
    detach_on_stop: bool = False  # serve: on stop, leave runs to their supervisors (re-adopted later)
