"""`runqueue`: run, serve, status, requeue, cancel, gpus (DESIGN.md §5).

Never imports TensorFlow or the model (tests/runqueue/test_runqueue_cli.py checks it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from runqueue.config import LOCAL_DEVICE_KEYS, ServiceConfig, load_service_config
from runqueue.durations import LONGEST_GRACE_S, LONGEST_S, parse_duration, parse_wait
from runqueue.errors import RunqueueError
from runqueue.layout import DEFAULT_MEMORY_MB

if TYPE_CHECKING:
    from runqueue.scheduler import QueueOptions
    from runqueue.slurm.options import SlurmOptions


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _seconds_or_duration(text: str, longest: float = LONGEST_S) -> float:
    """0 or more seconds, written as a number or a duration (10, 10s, 1m)."""
    try:
        return parse_wait(text, longest)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _grace(text: str) -> float:
    """A wait before SIGKILL: at most a day (the supervisor's own bound on a cancel's grace)."""
    return _seconds_or_duration(text, LONGEST_GRACE_S)


def _path(text: str) -> Path:
    """A folder argument; '' is refused (Path('') is the current folder: `requeue "$UNSET"` would
    otherwise requeue or cancel every run below it)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty path (an unset shell variable?)")
    return Path(text)


def _bounded(convert: Callable[[str], Any], minimum: float, noun: str) -> Callable[[str], Any]:
    """An argparse type: `convert(text)`, refused below `minimum` with a one-line reason."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {noun}") from None
        if not math.isfinite(value):  # float() accepts "inf" and "nan"
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite {noun}")
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} must be {minimum:g} or more")
        return value

    return parse


_positive_int = _bounded(int, 1, "whole number")
_non_negative_int = _bounded(int, 0, "whole number")


def _add_device_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gpus", metavar="LIST", help="use only these GPUs: indices or UUIDs, e.g. 0,1; `none` = CPU slots only")
    parser.add_argument("--simulate-gpus", metavar="FILE", help="simulated inventory file (format: docs/devices.md, 'The simulated inventory file'; also $RUNQUEUE_SIMULATE_GPUS)")
    parser.add_argument("--cpu-slots", type=_non_negative_int, metavar="N", help="CPU slots offered when there is no GPU (default 1)")


def _add_placement_flags(parser: argparse.ArgumentParser, *, defaults: bool = True) -> None:
    """`defaults=False` leaves unset flags None, so a config file can fill them (status --config)."""
    parser.add_argument("--max-per-gpu", type=_positive_int, default=1 if defaults else None, metavar="N", help="runs per GPU, packed by declared memory (default 1)")
    parser.add_argument("--foreign", choices=("block", "share"), default="block" if defaults else None, help="GPUs with other users' processes: block (default) or share when memory fits")
    parser.add_argument("--memory-per-run", type=_non_negative_int, default=DEFAULT_MEMORY_MB if defaults else None, metavar="MB", help=f"GPU memory a run declares unless its runqueue.json says otherwise (default {DEFAULT_MEMORY_MB})")


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
    _add_device_flags(parser)
    _add_placement_flags(parser)
    parser.add_argument("--retries", type=_non_negative_int, default=1, metavar="N", help="attempts after the first failure, each from the failed step (default 1)")
    parser.add_argument("--retry-backoff", type=_seconds_or_duration, default=10.0, metavar="DURATION", help="wait before the first retry, doubled for each further one up to 10 minutes (or this, if longer) (default 10s)")
    parser.add_argument("--time-limit", type=_duration, metavar="DURATION", help="stop a run's attempt after e.g. 90s, 45m, 2h, 1h30m (default: none; a time_limit in the run's runqueue.json wins)")
    parser.add_argument("--kill-grace", type=_grace, default=10.0, metavar="DURATION", help="between SIGTERM and SIGKILL when stopping a run (default 10s)")
    parser.add_argument("--executor", choices=("local", "slurm"), default="local", help="where runs execute: local (default) or slurm (one sbatch job per run; docs/slurm.md)")
    parser.add_argument("--poll-interval", type=_duration, default=5.0, metavar="DURATION", help="rescan the roots this often (default 5s)")
    parser.add_argument("--quiet", action="store_true", help="do not echo the runs' output (events and status still show)")
    parser.add_argument("--stop-runs", action="store_true", help="on Ctrl-C/SIGTERM also stop the running runs (recorded as interrupted)")


def _slurm_time(text: str) -> float:
    from runqueue.slurm.options import parse_slurm_time

    try:
        return parse_slurm_time(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _add_slurm_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("SLURM (with --executor slurm; see docs/slurm.md)")
    group.add_argument("--slurm-gpus", type=_non_negative_int, metavar="N", help="GPUs per job, as --gres=gpu:N (default 1; 0 = CPU-only jobs)")
    group.add_argument("--slurm-partition", metavar="P", help="partition to submit to (default: the cluster's)")
    group.add_argument("--slurm-time", type=_slurm_time, metavar="TIME", help="sbatch --time, e.g. 2:00:00 (default: the run's time limit plus a margin)")
    group.add_argument("--slurm-mem", type=_positive_int, metavar="MB", help="host memory per job (sbatch --mem)")
    group.add_argument("--slurm-cpus", type=_positive_int, metavar="N", help="CPUs per job (sbatch --cpus-per-task)")
    group.add_argument("--slurm-extra", metavar="ARGS", help='more sbatch arguments; write it with = as they start with a dash: --slurm-extra="--account=lab --qos=long"')
    group.add_argument("--max-submitted", type=_positive_int, metavar="N", help="at most N jobs of this queue in SLURM at once (default: no limit)")


_SLURM_FLAGS = ("slurm_gpus", "slurm_partition", "slurm_time", "slurm_mem", "slurm_cpus", "slurm_extra", "max_submitted")


def _slurm_options(args: argparse.Namespace) -> SlurmOptions:
    from runqueue.slurm.options import SlurmOptions, split_extra

    given = [name for name in _SLURM_FLAGS if getattr(args, name, None) is not None]
    if given and args.executor != "slurm":
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise RunqueueError(None, f"{flags} only apply to SLURM jobs", "add --executor slurm, or drop them")
    local = [flag for flag, value, default in (("--gpus", args.gpus, None), ("--simulate-gpus", args.simulate_gpus, None),
                                                ("--cpu-slots", args.cpu_slots, None), ("--max-per-gpu", args.max_per_gpu, 1),
                                                ("--foreign", args.foreign, "block"),
                                                ("--memory-per-run", args.memory_per_run, DEFAULT_MEMORY_MB)) if value != default]
    if local and args.executor == "slurm":
        raise RunqueueError(None, f"{', '.join(local)} only {'applies' if len(local) == 1 else 'apply'} to this machine's devices, and SLURM picks the"
                            " devices of its jobs", "drop them, or ask SLURM through --slurm-gpus and --slurm-extra")
    return SlurmOptions(
        gpus=1 if args.slurm_gpus is None else args.slurm_gpus,
        partition=args.slurm_partition,
        time_s=args.slurm_time,
        mem_mb=args.slurm_mem,
        cpus=args.slurm_cpus,
        extra=() if args.slurm_extra is None else split_extra(args.slurm_extra),
        max_submitted=args.max_submitted,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="runqueue", description="The LFADS Run Queue: train every pending run on the free GPUs.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run every pending run under ROOT; return when none is pending or running")
    run.add_argument("roots", nargs="+", metavar="ROOT", type=_path,
                     help="folders searched at any depth for runs (a run: a folder holding lfads_train.sh)")
    run.add_argument("--watch", action="store_true", help="keep watching for new and requeued runs")
    _add_run_flags(run)
    _add_slurm_flags(run)

    serve = commands.add_parser("serve", help="the long-running service: watch roots forever",
                                description="The queue as a service (systemd Type=notify). Every `run` setting"
                                " (max_per_gpu, memory_per_run, time_limit, …) goes in the --config file, with"
                                " underscores: docs/devices.md, 'Installing the service'.")
    serve.add_argument("--config", metavar="FILE", type=Path, help="TOML service configuration (roots and the `run` knobs)")
    serve.add_argument("roots", nargs="*", metavar="ROOT", type=_path, help="roots to watch (instead of, or besides, the config's)")

    status = commands.add_parser("status", help="runs (pending/running/done/failed), devices, claims")
    status.add_argument("roots", nargs="*", metavar="ROOT", type=_path, help="folders searched at any depth for runs")
    status.add_argument("--json", action="store_true", help="one JSON object: runs and devices (keys: docs/runqueue.md, 'status --json')")
    status.add_argument("--config", type=_path, metavar="FILE", help="judge waiting runs by a service's settings: roots, devices,"
                        " placement and claims_dir from its TOML (flags given here win)")
    _add_device_flags(status)
    _add_placement_flags(status, defaults=False)

    requeue = commands.add_parser("requeue", help="clear done/failed markers so the run goes again")
    requeue.add_argument("runs", nargs="+", metavar="RUN", type=_path, help="run folders, or folders holding runs")
    requeue.add_argument("--yes", action="store_true", help="act on every run in a folder without asking (needed off a terminal)")

    cancel = commands.add_parser("cancel", help="stop a running run (every process of it) and mark it failed (cancelled);"
                                 " a pending run is marked the same, so no queue starts it")
    cancel.add_argument("runs", nargs="+", metavar="RUN", type=_path, help="run folders, or folders holding runs")
    cancel.add_argument("--grace", type=_grace, default=15.0, metavar="DURATION", help="wait this long for the run to stop before killing it (default 15s)")
    cancel.add_argument("--yes", action="store_true", help="act on every run in a folder without asking (needed off a terminal)")

    commands.add_parser("gpus", help="what the inventory sees", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _dispatch(list(sys.argv[1:] if argv is None else argv))
    except BrokenPipeError:
        # `runqueue status | head`: the reader left. Quietly, like any Unix tool (no traceback, and
        # none at interpreter exit when the buffered rest is flushed).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def _dispatch(arguments: list[str]) -> int:
    if arguments[:1] == ["gpus"]:
        from runqueue.devices.report import gpus_command

        return gpus_command(arguments[1:])
    args = _parser().parse_args(arguments)
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "serve":
            return _serve(args)
        if args.command == "status":
            return _status(args)
        if args.command == "requeue":
            return _requeue(args)
        if args.command == "cancel":
            return _cancel(args)
    except (RunqueueError, ValueError, RuntimeError) as error:
        # InventoryError is a ValueError and ClaimError a RuntimeError: both are one-line, user-facing.
        print(f"runqueue {args.command}: error: {error}", file=sys.stderr)
        return 2
    raise AssertionError(args.command)


def _options_from_args(args: argparse.Namespace, roots: list[Path]) -> QueueOptions:
    from runqueue.scheduler import QueueOptions

    return QueueOptions(
        roots=roots,
        watch=getattr(args, "watch", False),
        gpus=args.gpus,
        simulate_gpus=args.simulate_gpus,
        cpu_slots=args.cpu_slots,
        max_per_gpu=args.max_per_gpu,
        foreign=args.foreign,
        memory_per_run=args.memory_per_run,
        retries=args.retries,
        retry_backoff_s=args.retry_backoff,
        time_limit_s=args.time_limit,
        kill_grace_s=args.kill_grace,
        executor=args.executor,
        poll_interval_s=args.poll_interval,
        quiet=args.quiet,
        stop_runs=args.stop_runs,
        slurm=_slurm_options(args),
    )


def _check_roots(roots: Sequence[Path]) -> None:
    for root in roots:
        if not root.is_dir():
            raise RunqueueError(root, "is not a directory", "give a runs folder, a collection or a run folder")


def _run(args: argparse.Namespace) -> int:
    from runqueue.scheduler import Scheduler

    _check_roots(args.roots)
    options = _options_from_args(args, args.roots)
    return Scheduler(options).run()


def _serve(args: argparse.Namespace) -> int:
    from runqueue.serve import serve

    return serve(args.config, list(args.roots))


# The device and placement settings `status` judges waiting runs by (its flags of those names).
_JUDGING_FLAGS = LOCAL_DEVICE_KEYS


def _status_settings(args: argparse.Namespace) -> ServiceConfig:
    """What `status` judges by: flags, else the --config file, else the queue's defaults."""
    base = load_service_config(args.config) if args.config else ServiceConfig(roots=())
    chosen = {name: getattr(args, name) for name in _JUDGING_FLAGS}
    if args.gpus is not None:
        base = dataclasses.replace(base, simulate_gpus=None)  # a device flag given here replaces the file's devices
    settings = dataclasses.replace(base, **{name: value for name, value in chosen.items() if value is not None})
    if args.roots:
        settings = dataclasses.replace(settings, roots=tuple(args.roots))
    if not settings.roots:
        print("runqueue status: error: give at least one ROOT, or --config FILE with roots", file=sys.stderr)
        raise SystemExit(2)
    return settings


def _settings_of_a_running_queue(args: argparse.Namespace, settings: ServiceConfig) -> tuple[ServiceConfig, str | None, int | None, int | None]:
    """With no device or placement flag and no --config, a local queue running over these roots
    knows best how waiting runs will be placed: judge them by its settings, and say so. A SLURM queue
    over them (its pid is returned third) submits them instead: this machine's devices do not apply.
    Last, the account such a queue runs as (whatever the flags): whether it can write a run decides
    whether the run can start at all."""
    from runqueue.devices.claims import ClaimStore
    from runqueue.queue_record import live_records

    roots = [root.resolve() for root in settings.roots]
    queues = [record for record in live_records(ClaimStore(settings.claims_dir).directory)
              if any(record.covers(root) for root in roots)]
    if not queues:
        return settings, None, None, None
    chosen = queues[0]
    if args.config or any(getattr(args, name) is not None for name in _JUDGING_FLAGS):
        return settings, None, None, chosen.uid
    if chosen.executor == "slurm":
        return settings, (f"note: a SLURM queue (pid {chosen.pid}) runs over these roots: it submits their pending runs"
                          " to SLURM, so this machine's devices below do not run them"), chosen.pid, chosen.uid
    simulate = None if chosen.simulate_gpus is None else Path(chosen.simulate_gpus)
    foreign: Literal["block", "share"] = "share" if chosen.foreign == "share" else "block"
    settings = dataclasses.replace(settings, gpus=chosen.gpus, simulate_gpus=simulate, cpu_slots=chosen.cpu_slots,
                                   max_per_gpu=chosen.max_per_gpu, foreign=foreign, memory_per_run=chosen.memory_per_run)
    more = f" (and {len(queues) - 1} other queue(s))" if len(queues) > 1 else ""
    return settings, (f"note: waiting runs and devices are judged as the queue running as pid {chosen.pid}{more} sees them:"
                      f" {chosen.flags() or 'its defaults'}; give device or placement flags to judge by others"), None, chosen.uid


def _left_to_slurm(reason: str, pid: int) -> str:
    """A pending run's local placement verdict (after any retry or resume prefix), as SLURM's to make."""
    for verdict in ("ready:", "waiting:"):
        at = reason.find(verdict)
        if at >= 0:
            return f"{reason[:at]}to be submitted to SLURM by the queue running as pid {pid}"
    return reason


def _status(args: argparse.Namespace) -> int:
    from runqueue.devices.attribution import attribute_processes
    from runqueue.devices.claims import ClaimStore
    from runqueue.devices.errors import ClaimError, InventoryError
    from runqueue.devices.inventory import make_inventory
    from runqueue.devices.nvml import without_retry_note
    from runqueue.devices.placement import PlacementPolicy
    from runqueue.devices.report import devices_json
    from runqueue.devices.report import render_table as render_devices
    from runqueue.discovery import RunScanner
    from runqueue.queue_record import non_root_queue_over
    from runqueue.status import render_table, run_row

    settings = _status_settings(args)
    _check_roots(settings.roots)
    problems: list[str] = []
    settings, judged_by, slurm_queue, queue_uid = _settings_of_a_running_queue(args, settings)
    if judged_by:
        problems.append(judged_by)
    try:
        simulate = None if settings.simulate_gpus is None else str(settings.simulate_gpus)
        reading = make_inventory(gpus=settings.gpus, simulate_gpus=simulate, cpu_slots=settings.cpu_slots).read()
    except InventoryError as error:
        from runqueue.devices.model import InventoryReading

        reading = InventoryReading(devices=(), status=f"inventory unavailable: {error}")
        problems.append(str(error))
    reading = dataclasses.replace(reading, status=without_retry_note(reading.status))  # one look, no retries
    store = ClaimStore(settings.claims_dir)
    try:
        claims = store.claims()
    except ClaimError as error:
        claims = []
        problems.append(str(error))
    reading = dataclasses.replace(reading, devices=attribute_processes(reading.devices, claims))
    scanner = RunScanner(settings.roots)
    policy = PlacementPolicy(max_per_gpu=settings.max_per_gpu, foreign=settings.foreign)  # type: ignore[arg-type]
    charged = list(claims)  # plus the runs status finds ready, in order (the devices below show real claims only)
    # Runs a root queue would refuse are judged so only when no queue of another account runs them.
    queue_is_root = None
    if os.geteuid() == 0 and non_root_queue_over(store.directory, [root.resolve() for root in settings.roots]):
        queue_is_root = False
    rows = [run_row(found, reading.devices, charged, policy, settings.memory_per_run, queue_is_root,
                    os.geteuid() if queue_uid is None else queue_uid)
            for found in scanner.scan(full=True)]
    problems += scanner.problems  # unreadable folders: their runs are missing from the table
    from runqueue.slurm.control import annotate_rows

    rows, slurm_problems = annotate_rows(rows)
    problems += slurm_problems
    if slurm_queue is not None:  # placed by SLURM, not on this machine's devices
        rows = [dataclasses.replace(row, reason=_left_to_slurm(row.reason, slurm_queue)) if row.reason else row for row in rows]
    if args.json:
        print(json.dumps({"runs": [row.to_json() for row in rows], "devices": devices_json(reading, claims)}, indent=1))
    else:
        print(render_table(rows, ["", *render_devices(reading, claims).splitlines()]))
    for problem in problems:
        print(f"runqueue status: {problem}", file=sys.stderr)
    return 0


def _confirmed(verb: str, args: argparse.Namespace, runs: list[Path], folders: list[Path]) -> bool:
    """A folder may hold more runs than its user had in mind (`runqueue requeue /tmp`): on a terminal,
    list them and ask; elsewhere (a script, a pipe) refuse without --yes, since nobody can answer."""
    if args.yes or not folders:
        return True
    if not sys.stdin.isatty():
        named = ", ".join(map(str, folders))
        print(f"runqueue {verb}: error: {named} {'holds' if len(folders) == 1 else 'hold'} {len(runs)} runs; name"
              f" the run folders, or pass --yes to {verb} all {len(runs)}", file=sys.stderr)
        raise SystemExit(2)  # a usage error, like the command's others (1: the user said no)
    shown = [f"  {run}" for run in runs[:10]] + ([f"  … and {len(runs) - 10} more"] if len(runs) > 10 else [])
    print("\n".join([f"runqueue {verb}: {len(runs)} runs:", *shown]))
    try:
        answer = input(f"{verb} all {len(runs)}? [y/N] ")
    except EOFError:
        answer = ""
    if answer.strip().lower() in ("y", "yes"):
        return True
    print(f"runqueue {verb}: nothing done (name single run folders, or pass --yes)")
    return False


def _runs_to_act_on(verb: str, args: argparse.Namespace) -> tuple[list[Path], bool] | None:
    """The runs the arguments name, each once, and whether an argument was bad (said here, before a
    refusal could hide it); None when a folder of several runs is not confirmed."""
    from runqueue.control import resolve_runs

    runs, errors, folders = resolve_runs(args.runs)
    for message in errors:
        print(f"runqueue {verb}: error: {message}", file=sys.stderr)
    if not _confirmed(verb, args, runs, folders):
        return None
    return runs, bool(errors)


def _requeue(args: argparse.Namespace) -> int:
    from runqueue.control import RequeueRefused, requeue
    from runqueue.layout import RunPaths

    return _act_on_runs(
        "requeue", args, lambda run: requeue(RunPaths(run)), RequeueRefused,
        denied=lambda error: f"not allowed to requeue this run ({error.strerror}: {error.filename}); ask its owner or run as root",
        failed=lambda error: f"cannot requeue ({error.strerror}: {error.filename}); remove that by hand",  # a marker that is a directory
    )


def _cancel(args: argparse.Namespace) -> int:
    from runqueue.control import CancelRefused, cancel
    from runqueue.layout import RunPaths
    from runqueue.slurm.control import cancel_if_submitted

    def stop(run: Path) -> str:
        # A run handed to SLURM is stopped through SLURM; any other through its supervisor.
        return cancel_if_submitted(RunPaths(run), args.grace) or cancel(RunPaths(run), args.grace)

    return _act_on_runs(
        "cancel", args, stop, CancelRefused,
        denied=lambda error: f"not allowed to stop this run ({error.strerror}); ask its owner or run as root",
        # .runqueue that is a file, a read-only file system
        failed=lambda error: f"cannot cancel ({error.strerror}: {error.filename}); fix that by hand, then cancel again",
    )


def _act_on_runs(verb: str, args: argparse.Namespace, act: Callable[[Path], str], refused: type[Exception], *,
                 denied: Callable[[OSError], str], failed: Callable[[OSError], str]) -> int:
    """`act` on every run named (after the confirmation a big set needs): one line per run on stdout,
    errors together on stderr; exit status 2 if any run or argument failed, 1 when not confirmed."""
    chosen = _runs_to_act_on(verb, args)
    if chosen is None:
        return 1
    runs, bad_arguments = chosen
    errors: list[str] = []
    for run in runs:
        try:
            print(f"{run}: {act(run)}")
        except refused as refusal:
            errors.append(f"{run}: {refusal}")
        except PermissionError as error:
            errors.append(f"{run}: {denied(error)}")
        except OSError as error:
            errors.append(f"{run}: {failed(error)}")
    for message in errors:
        print(f"runqueue {verb}: error: {message}", file=sys.stderr)
    return 2 if errors or bad_arguments else 0


if __name__ == "__main__":
    sys.exit(main())
