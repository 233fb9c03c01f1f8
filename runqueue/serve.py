"""`runqueue serve`: the queue as a service, watching its roots forever (systemd Type=notify).

On SIGTERM it stops placing and leaves at once: running runs stay with their supervisors (each in
its own session, and the unit uses KillMode=process) and the next start re-adopts them.
"""

from __future__ import annotations

import os
from pathlib import Path

from runqueue import sdnotify
from runqueue.config import ConfigError, load_service_config
from runqueue.devices.claims import ClaimStore
from runqueue.devices.errors import ClaimError
from runqueue.errors import RunqueueError, without_fix
from runqueue.procinfo import account_name
from runqueue.scheduler import LoopHooks, QueueOptions, Scheduler


class SystemdHooks(LoopHooks):
    def __init__(self) -> None:
        self.pinger = sdnotify.WatchdogPinger()

    def ready(self, status: str) -> None:
        sdnotify.ready(status)

    def status(self, line: str) -> None:
        sdnotify.status(line)

    def tick(self) -> None:
        self.pinger.maybe_ping()

    def tick_interval_s(self) -> float | None:
        return self.pinger.wake_every_s

    def stopping(self, status: str) -> None:
        sdnotify.stopping(status)


def serve(config_path: Path | None, roots: list[Path]) -> int:
    options = QueueOptions(roots=list(roots), watch=True, detach_on_stop=True)
    if config_path is not None:
        config = load_service_config(config_path)
        options.roots = [*config.roots, *roots]
        options.gpus = config.gpus
        options.simulate_gpus = None if config.simulate_gpus is None else str(config.simulate_gpus)
        options.cpu_slots = config.cpu_slots
        options.max_per_gpu = config.max_per_gpu
        options.memory_per_run = config.memory_per_run
        options.retries = config.retries
        if config.retry_backoff is not None:
            options.retry_backoff_s = config.retry_backoff
        if config.kill_grace is not None:
            options.kill_grace_s = config.kill_grace
        options.time_limit_s = config.time_limit
        options.foreign = config.foreign
        options.executor = config.executor
        if config.slurm is not None:
            options.slurm = config.slurm
        options.quiet = config.quiet
        if config.poll_interval is not None:
            options.poll_interval_s = config.poll_interval
        if config.claims_dir is not None:
            os.environ["RUNQUEUE_CLAIMS_DIR"] = str(config.claims_dir)
            _check_claims_dir(config_path)
    if not options.roots:
        raise RunqueueError(None, "no roots to watch", "pass --config FILE (with roots = [...]) or ROOT folders")
    if not any(root.is_dir() for root in options.roots):
        raise RunqueueError(options.roots[0], "is not a directory", "create or mount it, or remove it from the roots")
    scheduler = Scheduler(options, hooks=SystemdHooks())
    scheduler.run()
    # A service that stops when asked has succeeded, whatever its runs did (they have their own
    # markers). A hang-up is no such request (the unit restarts either way: Restart=always).
    return 130 if scheduler.hung_up else 0


def _check_claims_dir(config_path: Path) -> None:
    """A claims_dir the config names and that cannot serve is the config's fault: say so at the start,
    naming the key, rather than run without ever placing a run."""
    try:
        ClaimStore().ensure_directory()
    except ClaimError as error:
        raise ConfigError(config_path, f"claims_dir: {without_fix(str(error))}",
                          f"make that folder usable by {account_name()}, or choose another claims_dir") from None
