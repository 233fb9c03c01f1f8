"""`lfads-manager`: demo, prepare (from a TOML experiment file), report, compare and delete-output."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from manager.errors import ManagerError, disk_fix


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _knob(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KNOB=VALUE, got {text!r}")
    number = float(value)
    return name, int(number) if number.is_integer() and name != "dt" else number


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lfads-manager", description="Prepare LFADS run trees and look at their results.")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="Lorenz datasets + a run tree under DIR")
    demo.add_argument("directory", type=Path, metavar="DIR", help="where datasets/ and runs/ go (created if missing)")
    demo.add_argument("--profile", default="quick", help="quick (default: trains in minutes on CPU) or seed (the original's tree)")
    demo.add_argument("--print-collection", action="store_true", help="print only the collection folder to stdout")
    demo.add_argument("--lorenz", action="append", type=_knob, default=[], metavar="KNOB=VALUE",
                      help="override a Lorenz size knob, e.g. --lorenz n_conditions=10 (repeatable)")

    prepare = commands.add_parser("prepare", help="build the run tree an EXPERIMENT.toml describes")
    prepare.add_argument("experiment", type=Path, metavar="EXPERIMENT.toml",
                         help="datasets, [params], [sweep] and [[runspec]] entries (docs/manager.md)")
    prepare.add_argument("--regenerate", action="store_true", help="export the data again even when it is up to date")
    prepare.add_argument("--prune", action="store_true",
                         help="retire unfinished runs (not done, not failed) whose param set or run spec left the experiment (their"
                              " lfads_train.sh becomes lfads_train.sh.retired), so no queue trains them")
    prepare.add_argument("--print-collection", action="store_true", help="print only the collection folder to stdout")

    report = commands.add_parser("report", help="plots of a finished run into RUN_DIR/report/")
    report.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a trained run folder (…/param_<hash>/<runspec>)")

    compare = commands.add_parser("compare", help="the runs of a sweep side by side: state, best validation cost, R², differing parameters")
    compare.add_argument("directory", type=Path, metavar="DIR", help="a collection folder (runs/<collection>), or any folder above runs")
    output = compare.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="every figure and every parameter of each run, as JSON")
    output.add_argument("--csv", action="store_true", help="the table as CSV (numbers unrounded, plus each run's path)")
    compare.add_argument("--no-r2", action="store_true", help="do not read posterior means for the R² vs truth (faster on big sweeps)")
    compare.add_argument("--sort", default="best_valid", metavar="KEY",
                         help="order of the runs: best_valid (lowest first, the default), r2 (highest first), epochs, run,"
                              " state, or a parameter such as c_gen_dim (numbers in numeric order); runs without it come last")

    delete = commands.add_parser("delete-output", help="delete runs' lfadsOutput/, lfads.out and markers: the queue trains them afresh")
    delete.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR", help="run folders whose output goes")
    delete.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    return parser


def _delete_output(run_dirs: list[Path], yes: bool) -> int:
    from manager.cleanup import check_run_folder, delete_run_output

    bad = 0
    for run_dir in run_dirs:  # all checked before asking: a collection folder given by mistake deletes nothing
        try:
            check_run_folder(run_dir)
        except ManagerError as error:
            print(f"lfads-manager: error: {error}", file=sys.stderr)
            bad += 1
    if bad:
        print(f"lfads-manager: nothing deleted ({bad} of the {len(run_dirs)} paths are not run folders)", file=sys.stderr)
        return 2
    if not yes:
        listing = "\n  ".join(str(run_dir) for run_dir in run_dirs)
        try:
            answer = input(f"Delete the LFADS output (lfadsOutput/, lfads.out, markers) of:\n  {listing}\nType yes to confirm: ")
        except (EOFError, KeyboardInterrupt):  # no terminal (a script, cron) or Ctrl-C
            print("\nlfads-manager: nothing deleted (no answer; pass --yes to delete without asking)", file=sys.stderr)
            return 1
        if answer.strip() != "yes":
            print("lfads-manager: nothing deleted", file=sys.stderr)
            return 1
    status = 0
    for run_dir in run_dirs:  # one refusal (e.g. a running run) does not stop the others
        try:
            removed = delete_run_output(run_dir)
        except ManagerError as error:
            print(f"lfads-manager: error: {error}", file=sys.stderr)
            status = 2
            continue
        print(f"{run_dir}: {'deleted ' + ', '.join(p.name for p in removed) if removed else 'nothing to delete'}")
    return status


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            from manager.demo import build_demo

            collection = build_demo(args.directory, args.profile, dict(args.lorenz), progress=_progress)
            if args.print_collection:
                print(collection.path)
        elif args.command == "prepare":
            from manager.experiment import load_experiment

            collection = load_experiment(args.experiment)
            collection.prepare(regenerate=args.regenerate, progress=_progress, prune=args.prune)
            if args.print_collection:
                print(collection.path)
        elif args.command == "report":
            from manager.report import write_report

            for line in write_report(args.run_dir):
                print(line)
        elif args.command == "compare":
            from manager.compare import compare_runs, render_csv, render_json, render_table

            comparison = compare_runs(args.directory, with_r2=not args.no_r2, sort=args.sort)
            render = render_json if args.json else render_csv if args.csv else render_table
            sys.stdout.write(render(comparison))
        elif args.command == "delete-output":
            return _delete_output(args.run_dirs, args.yes)
    except ManagerError as error:
        print(f"lfads-manager: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lfads-manager: interrupted; {_AFTER_INTERRUPT.get(args.command, 'nothing more was done')}", file=sys.stderr)
        return 130
    except OSError as error:  # e.g. a read-only or full disk: say which file, not a traceback
        where = f"{error.filename}: " if error.filename else ""
        fix = disk_fix(error, "check the path and its permissions")
        print(f"lfads-manager: error: {where}{error.strerror or error}; {fix}", file=sys.stderr)
        return 2
    return 0


# What an interrupted command left, and what to do (both commands are safe to run again).
_AFTER_INTERRUPT = {
    "prepare": "what it had written stays consistent (files are replaced whole, an unfinished export is"
               " redone): run prepare again",
    "delete-output": "a run whose deletion was under way is held back from every queue: run delete-output"
                     " on it again to finish",
}


if __name__ == "__main__":
    sys.exit(main())
