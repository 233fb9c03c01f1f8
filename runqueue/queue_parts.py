"""What every part of the queue's loop shares (oversight, placer, rescanner): its settings, its
console, the runs it tracks, where runs execute and the host-wide claims."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from runqueue.console import Console
from runqueue.devices.claims import ClaimStore
from runqueue.executors.base import Executor
from runqueue.queue_options import QueueOptions
from runqueue.tracked import TrackedRun


@dataclass(frozen=True)
class QueueParts:
    options: QueueOptions
    console: Console
    runs: dict[Path, TrackedRun]  # shared and mutated by every part: the loop's one table of runs
    executor: Executor
    claims: ClaimStore


class QueuePart:
    """Base of the loop's parts: the shared pieces as attributes."""

    def __init__(self, parts: QueueParts) -> None:
        self.options = parts.options
        self.console = parts.console
        self.runs = parts.runs
        self.executor = parts.executor
        self.claims = parts.claims
