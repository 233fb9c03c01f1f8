"""`lfads-manager`: demo, prepare (from a TOML experiment file) and report."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from manager.errors import ManagerError


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
    demo.add_argument("directory", type=Path)
    demo.add_argument("--profile", default="quick", help="quick (default: trains in minutes on CPU) or seed (the original's tree)")
    demo.add_argument("--print-collection", action="store_true", help="print only the collection folder to stdout")
    demo.add_argument("--lorenz", action="append", type=_knob, default=[], metavar="KNOB=VALUE",
                      help="override a Lorenz size knob, e.g. --lorenz n_conditions=10 (repeatable)")

    prepare = commands.add_parser("prepare", help="build the run tree an EXPERIMENT.toml describes")
    prepare.add_argument("experiment", type=Path)
    prepare.add_argument("--regenerate", action="store_true", help="export the data again even when it is up to date")
    prepare.add_argument("--print-collection", action="store_true", help="print only the collection folder to stdout")

    report = commands.add_parser("report", help="plots of a finished run into RUN_DIR/report/")
    report.add_argument("run_dir", type=Path)
    return parser


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
            collection.prepare(regenerate=args.regenerate, progress=_progress)
            if args.print_collection:
                print(collection.path)
        elif args.command == "report":
            from manager.report import write_report

            for line in write_report(args.run_dir):
                print(line)
    except ManagerError as error:
        print(f"lfads-manager: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # e.g. a read-only or full disk: say which file, not a traceback
        where = f"{error.filename}: " if error.filename else ""
        print(f"lfads-manager: error: {where}{error.strerror or error}; check the path and its permissions", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
