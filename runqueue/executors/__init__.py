"""Where a run's supervisor executes: here (local) now, inside a SLURM job later."""

from __future__ import annotations

from runqueue.errors import RunqueueError
from runqueue.executors.base import Executor

EXECUTOR_NAMES = ("local", "slurm")


def make_executor(name: str) -> Executor:
    if name == "local":
        from runqueue.executors.local import LocalExecutor

        return LocalExecutor()
    if name == "slurm":
        raise RunqueueError(None, "--executor slurm is not implemented yet", "use --executor local (the default)")
    raise RunqueueError(None, f"unknown executor {name!r}", f"choose one of {', '.join(EXECUTOR_NAMES)}")
