"""Where a run's posterior-sampling step spends its wall time, phase by phase.

    .venv/bin/python bench/lfads_posterior_phases.py RUN_DIR [--jit_compile auto|true|false] [--device gpu:0]

Runs the command line of RUN_DIR's own `lfads_posterior_mean_sample.sh` in this process (from the
run folder, as the script does; the run needs a checkpoint) and splits its wall time into:
parsing the flags and importing TensorFlow; start-up (data, model build, device set-up, checkpoint restore), up to
the first compiled call; the first call (trace, XLA compile where on, and its own work); the other
calls; writing the model_runs files; the rest. The model_runs files are rewritten in lfadsOutput,
as the script would. Nothing here asserts; run it once per setting and compare the lines.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# The repository first; bench/ last, so that its queue.py does not shadow the standard library's.
sys.path[0] = str(REPO)
sys.path.append(str(REPO / "bench"))

from lfads_lorenz import script_flags  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--jit_compile", choices=("auto", "true", "false"), default="auto")
    parser.add_argument("--device", default=None, help="e.g. gpu:0 or cpu:0 (default: the script's own)")
    args = parser.parse_args()
    run_dir = args.run_dir.resolve()
    flags = [*script_flags(run_dir / "lfads_posterior_mean_sample.sh"), f"--jit_compile={args.jit_compile}"]
    if args.device:
        flags.append(f"--device=/{args.device}")
    os.chdir(run_dir)

    import lfads.cli as cli  # no TensorFlow yet: the CLI settles XLA_FLAGS first, then imports it

    calls: list[float] = []
    first_call_at: list[float] = []
    writing: list[float] = []
    imported: list[float] = []
    quiet_import = cli._import_tensorflow_quietly

    def timed_import() -> None:
        quiet_import()
        imported.append(time.perf_counter())
        _time_posterior_calls(calls, first_call_at, writing)

    cli._import_tensorflow_quietly = timed_import
    began = time.perf_counter()
    status = cli.main(flags)
    ended = time.perf_counter()
    if status != 0 or not calls or not imported:
        print(f"lfads_posterior_phases: the posterior step failed (exit {status}); see its output above", file=sys.stderr)
        return 1
    rest = calls[1:]
    tf_loaded = imported[0]
    accounted = (tf_loaded - began) + (first_call_at[0] - tf_loaded) + sum(calls) + sum(writing)
    print(f"posterior step of {run_dir.name}, --jit_compile={args.jit_compile}, {len(calls)} calls:")
    print(f"  flags, import tf       {tf_loaded - began:7.2f} s")
    print(f"  start-up to 1st call   {first_call_at[0] - tf_loaded:7.2f} s  (data, model, device, restore)")
    print(f"  1st call               {calls[0]:7.2f} s  (trace, compile, run)")
    print(f"  other calls            {sum(rest):7.2f} s  ({len(rest)} calls, median"
          f" {1000 * statistics.median(rest) if rest else 0.0:.1f} ms)")
    print(f"  writing model_runs     {sum(writing):7.2f} s  ({len(writing)} files)")
    print(f"  the rest               {ended - began - accounted:7.2f} s")
    print(f"  total                  {ended - began:7.2f} s")
    return 0


def _time_posterior_calls(calls: list[float], first_call_at: list[float], writing: list[float]) -> None:
    """Wrap lfads.posterior's compiled calls and file writes with timers (TensorFlow is loaded)."""
    import lfads.posterior as posterior

    original_function = posterior.Sampler.function
    original_write = posterior.write_model_runs

    def timed_function(self: posterior.Sampler, *f_args: Any, **f_kwargs: Any) -> Callable[..., Any]:
        compiled = original_function(self, *f_args, **f_kwargs)

        def call(*c_args: Any) -> Any:
            start = time.perf_counter()
            first_call_at.append(start)
            out = compiled(*c_args)
            out["log_p"].numpy()  # waits for the call: all its outputs come from one executed function
            calls.append(time.perf_counter() - start)
            return out

        return call

    def timed_write(*w_args: Any, **w_kwargs: Any) -> None:
        start = time.perf_counter()
        original_write(*w_args, **w_kwargs)
        writing.append(time.perf_counter() - start)

    posterior.Sampler.function = timed_function  # type: ignore[method-assign]
    posterior.write_model_runs = timed_write


if __name__ == "__main__":
    raise SystemExit(main())
