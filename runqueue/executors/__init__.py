"""Where a run's supervisor executes: here (local), or inside a SLURM job (slurm)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from runqueue.errors import RunqueueError
from runqueue.executors.base import Executor

if TYPE_CHECKING:
    from runqueue.slurm.options import SlurmOptions

EXECUTOR_NAMES = ("local", "slurm")


def make_executor(name: str, *, slurm: SlurmOptions | None = None, kill_grace_s: float = 10.0) -> Executor:
    if name == "local":
        from runqueue.executors.local import LocalExecutor

        return LocalExecutor()
    if name == "slurm":
        from runqueue.executors.slurm import SlurmExecutor

        return SlurmExecutor(slurm, kill_grace_s=kill_grace_s)
    raise RunqueueError(None, f"unknown executor {name!r}", f"choose one of {', '.join(EXECUTOR_NAMES)}")
