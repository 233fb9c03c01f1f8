"""The executor seam: the scheduler starts, watches, stops and re-adopts supervisors only through it.

What a run *does* (steps, log, markers) is the supervisor's business and the same everywhere;
an executor only decides where that supervisor process runs. Starting is two-phase so the
scheduler can record its host-wide claim between "the supervisor holds the run lock" and
"the supervisor may run the steps" (see runqueue.supervisor).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runqueue.devices.model import Device, device_label
from runqueue.supervisor_spec import SupervisorSpec


@dataclass
class RunHandle:
    """A supervisor we watch: one we started, or one adopted after a restart."""

    run_dir: Path
    pid: int
    start_time: int | None
    device_uuid: str | None
    adopted: bool
    wait_fd: int  # becomes readable when the supervisor has ended (a pidfd for local runs)
    attempt: int | None = None
    native: Any = None  # executor-specific (the Popen of a local child)
    queue_id: str | None = None  # adopted: the queue that started it, as its state.json says


@dataclass
class PendingStart:
    """A supervisor launched but not yet allowed to run its steps."""

    run_dir: Path
    spec: SupervisorSpec
    reply: dict[str, Any] = field(default_factory=dict)  # the supervisor's first message
    native: Any = None

    @property
    def locked(self) -> bool:
        return self.reply.get("status") == "locked"

    @property
    def started(self) -> bool:
        """Locked by a local supervisor, or submitted to a batch system: either way, it is under way."""
        return self.reply.get("status") in ("locked", "submitted")


class Executor(ABC):
    name: str = "abstract"

    @abstractmethod
    def launch(self, spec: SupervisorSpec) -> PendingStart:
        """Start a supervisor for `spec.run_dir`; it takes the lock and waits for `confirm`."""

    @abstractmethod
    def await_replies(self, pending: list[PendingStart], timeout_s: float) -> None:
        """Fill each `reply` (locked / busy / finished / error) or mark it as timed out."""

    @abstractmethod
    def confirm(self, pending: PendingStart) -> RunHandle:
        """Let a locked supervisor run its steps; the returned handle is watched until it ends."""

    @abstractmethod
    def abandon(self, pending: PendingStart) -> None:
        """Make a launched supervisor go away without running anything."""

    @abstractmethod
    def adopt(self, run_dir: Path) -> RunHandle | None:
        """Watch a supervisor someone else started (earlier queue, other queue); None if none lives."""

    @abstractmethod
    def collect(self, handle: RunHandle) -> int | None:
        """After `wait_fd` fired: release resources; the supervisor's exit status when known."""

    @abstractmethod
    def interrupt(self, handle: RunHandle) -> None:
        """Stop the run and record it as interrupted (it goes again next time)."""

    @abstractmethod
    def cancel(self, handle: RunHandle) -> None:
        """Stop the run and mark it failed(cancelled)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release whatever the executor holds."""

    # ---- hooks with local defaults; a batch-system executor (slurm.py) overrides them
    def placement_device(self) -> Device | None:
        """None: the scheduler places runs on this machine's devices and claims them host-wide.
        A device: every run is handed to the executor as is (the batch system places it)."""
        return None

    def capacity(self, watched: int) -> int | None:
        """How many more runs may be launched now, given `watched` watched ones; None for no limit."""
        return None

    def submitted(self, run_dir: Path) -> bool:
        """True when the run is handed to a batch system and not over yet (adopt it, never start it again)."""
        return False

    def elsewhere_text(self, run_dir: Path) -> str:
        """Why a run under way cannot be watched from here (the console says it once)."""
        return "is running but its supervisor is not visible from here"

    def run_by_another_queue(self, handle: RunHandle) -> str | None:
        """Which other live queue started this adopted run (it stops it, not us), in words; None if
        the run is ours: started by us, or by a queue that is gone."""
        return None

    def continue_stopped(self, handle: RunHandle) -> bool:
        """The run overran its time limit with its supervisor still there: if that supervisor is
        stopped (SIGSTOP), let it go on so it enforces the limit; True if it was stopped."""
        return False

    def waiting(self, handle: RunHandle) -> bool:
        """True while a watched run still waits for the batch system to start it."""
        return False

    def started_text(self, handle: RunHandle, device: Device) -> str:
        return f"started on {device.uuid} ({device_label(device.name, device.listed_index)})"

    def adopted_text(self, handle: RunHandle) -> str:
        device = handle.device_uuid or "not recorded (its .runqueue/state.json is gone or unreadable)"
        return f"supervisor pid {handle.pid}, device {device}"

    def first_stop_text(self, running: int) -> str:
        return (
            f"stopping: no new runs start; waiting for {running} running run(s). "
            "Press Ctrl-C again to stop them too (they go again next time), or `runqueue cancel RUN` to cancel one."
        )
