"""`runqueue serve`: the queue as a service, watching its roots forever (systemd Type=notify).

On SIGTERM it stops placing and leaves at once: running runs stay with their supervisors (each in
its own session, and the unit uses KillMode=process) and the next start re-adopts them.

On SIGHUP (`systemctl reload`) it reads its config again; when that reads well it tells systemd
RELOADING=1, lets go of everything as on SIGTERM and starts itself again in the same process, which
re-adopts the running runs and says READY=1. A config that does not read well is reported and the
queue goes on with the settings it has, so a typo never takes the service down. (A `serve` whose
console is a terminal takes SIGHUP as the terminal going away, and leaves, as `runqueue run` does.)
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from runqueue import sdnotify
from runqueue.config import ConfigError, load_service_config
from runqueue.devices.claims import CLAIMS_DIR_ENV, ClaimStore
from runqueue.devices.errors import ClaimError, InventoryError
from runqueue.devices.inventory import check_inventory_settings
from runqueue.errors import RunqueueError, without_fix
from runqueue.procinfo import account_name
from runqueue.scheduler import LoopHooks, QueueOptions, Scheduler
from runqueue.slurm.commands import SlurmCommands


class SystemdHooks(LoopHooks):
    """Forwards the loop's milestones to systemd, and judges a reload (SIGHUP, `systemctl reload`)
    by reading the config again before the queue lets go of anything."""

    def __init__(self, config_path: Path | None, roots: list[Path]) -> None:
        self.pinger = sdnotify.WatchdogPinger()
        self.config_path = config_path
        self.roots = roots
        # On a terminal, SIGHUP says the terminal is gone: leave (a queue started again in place
        # would write into a dead terminal). Under systemd, or with the console in a file, reload.
        self.reloads_on_hangup = not any(_is_terminal(stream) for stream in (sys.stdout, sys.stderr))

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

    def reload_refusal(self) -> str | None:
        """Why the edited settings cannot serve, asked before starting again with them: the file's
        values, and what starting makes of them (the device list, the SLURM tools)."""
        try:
            options, _ = service_options(self.config_path, self.roots)
            if options.executor == "slurm":
                SlurmCommands().check_available()
            else:
                check_inventory_settings(gpus=options.gpus, simulate_gpus=options.simulate_gpus, cpu_slots=options.cpu_slots)
        except (RunqueueError, InventoryError) as error:
            return str(error)
        return None

    def reloading(self, status: str) -> None:
        sdnotify.reloading(status)


def _is_terminal(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError, OSError):  # None (no stream) or closed
        return False


def service_options(config_path: Path | None, roots: list[Path]) -> tuple[QueueOptions, Path | None]:
    """The queue's settings from the config file plus `roots`, and the claims directory the config
    names; ConfigError or RunqueueError when they cannot serve. Changes nothing, so a reload can
    ask it first and keep going as it is when the edited file is wrong."""
    options = QueueOptions(roots=list(roots), watch=True, detach_on_stop=True)
    claims_dir = None
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
            claims_dir = config.claims_dir
            _check_claims_dir(config_path, claims_dir)
    if not options.roots:
        raise RunqueueError(None, "no roots to watch", "pass --config FILE (with roots = [...]) or ROOT folders")
    if not any(root.is_dir() for root in options.roots):
        raise RunqueueError(options.roots[0], "is not a directory", "create or mount it, or remove it from the roots")
    return options, claims_dir


def serve(config_path: Path | None, roots: list[Path]) -> int:
    inherited_claims_dir = os.environ.get(CLAIMS_DIR_ENV)  # what a reload starts from again
    options, claims_dir = service_options(config_path, roots)
    if claims_dir is not None:
        os.environ[CLAIMS_DIR_ENV] = str(claims_dir)  # for the supervisors and steps too
    scheduler = Scheduler(options, hooks=SystemdHooks(config_path, roots))
    scheduler.run()
    if scheduler.reload_due():
        return _start_again_in_place(config_path, roots, inherited_claims_dir)
    # A service that stops when asked has succeeded, whatever its runs did (they have their own
    # markers), a reload overtaken by a stop included. A hang-up while stopping is no such request
    # (the unit restarts either way: Restart=always).
    # A hang-up that came as the loop ended is still in `signals`.
    return 130 if scheduler.hung_up or signal.SIGHUP in scheduler.signals else 0


def _start_again_in_place(config_path: Path | None, roots: list[Path], inherited_claims_dir: str | None) -> int:
    """A reload: the same process (systemd's MainPID, the watchdog's) runs `runqueue serve` afresh,
    which reads the config, re-adopts the running runs and says READY=1, exactly as a restart
    would but without the restart delay. The environment is the one this queue started with: a
    claims_dir the new config no longer names must not stay in force."""
    environment = dict(os.environ)
    if inherited_claims_dir is None:
        environment.pop(CLAIMS_DIR_ENV, None)
    else:
        environment[CLAIMS_DIR_ENV] = inherited_claims_dir
    argv = [sys.executable, "-m", "runqueue", "serve", *(["--config", str(config_path)] if config_path else []), *map(str, roots)]
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, argv, environment)
    except OSError as error:
        print(f"runqueue serve: cannot start again to reload ({error.strerror}: {sys.executable}); leaving, so that"
              " systemd starts it afresh", file=sys.stderr)
    return 1


def _check_claims_dir(config_path: Path, claims_dir: Path) -> None:
    """A claims_dir the config names and that cannot serve is the config's fault: say so at the start,
    naming the key, rather than run without ever placing a run."""
    try:
        ClaimStore(claims_dir).ensure_directory()
    except ClaimError as error:
        raise ConfigError(config_path, f"claims_dir: {without_fix(str(error))}",
                          f"make that folder usable by {account_name()}, or choose another claims_dir") from None
