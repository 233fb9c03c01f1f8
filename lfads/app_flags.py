"""The flags absl.app and absl.logging added to the original's command line, and what they do here.

The original ran under `tf.app.run`, that is `absl.app.run`, which also accepted absl's own flags:
`--only_check_args`, `--run_with_pdb`, `--pdb_post_mortem` (`--pdb`), `--run_with_profiling`,
`--profile_file`, `--use_cprofile_for_profiling`, and absl.logging's `--logtostderr`,
`--alsologtostderr`, `--log_dir`, `--verbosity` (`-v`), `--stderrthreshold`, `--showprefixforinfo`,
`--logger_levels`. A script or habit that passes them keeps working. The app flags act as they did
under absl; the logging ones configured absl's logger, which the original did not use (it logged
through `tf.logging` and `print`), so here too they are accepted and change nothing.

Defined on a private FlagValues, never on absl's global FLAGS: parsing twice in one process (the
tests) must not carry one command line's values into the next.
"""

from __future__ import annotations

import dataclasses
import pdb
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from absl import flags as absl_flags


@dataclass(frozen=True)
class AppFlags:
    only_check_args: bool = False
    run_with_pdb: bool = False
    pdb_post_mortem: bool = False
    run_with_profiling: bool = False
    profile_file: str = ""
    use_cprofile_for_profiling: bool = True


APP_FLAG_HELP = {
    "only_check_args": "check the flags and exit (status 0) without running",
    "run_with_pdb": "run under the Python debugger",
    "pdb_post_mortem": "open the Python debugger on an unexpected error (only on a terminal, as absl does)",
    "run_with_profiling": "profile the run; stats go to --profile_file or are printed at the end",
    "profile_file": "write the profile (pstats format) here; implies --run_with_profiling",
    "use_cprofile_for_profiling": "profile with cProfile (false: the pure-Python `profile` module)",
}
LOGGING_FLAG_NAMES = ("logtostderr", "alsologtostderr", "log_dir", "verbosity", "stderrthreshold",
                      "showprefixforinfo", "logger_levels")
_ACCEPTED = "absl.logging's flag, accepted as the original did; no effect (it logged through tf.logging)"


def define_app_flags(values: absl_flags.FlagValues) -> None:
    for spec in dataclasses.fields(AppFlags):
        help_text = APP_FLAG_HELP[spec.name]
        default: Any = spec.default  # every field has one
        if isinstance(default, bool):
            absl_flags.DEFINE_boolean(spec.name, default, help_text, flag_values=values)
        else:
            absl_flags.DEFINE_string(spec.name, default, help_text, flag_values=values)
    absl_flags.DEFINE_alias("pdb", "pdb_post_mortem", flag_values=values)
    for name in ("logtostderr", "alsologtostderr", "showprefixforinfo"):
        absl_flags.DEFINE_boolean(name, name == "showprefixforinfo", _ACCEPTED, flag_values=values)
    absl_flags.DEFINE_integer("verbosity", -1, _ACCEPTED, short_name="v", flag_values=values)
    for name, default in (("stderrthreshold", "fatal"), ("log_dir", ""), ("logger_levels", "")):
        absl_flags.DEFINE_string(name, default, _ACCEPTED, flag_values=values)


def app_flags_from(values: absl_flags.FlagValues) -> AppFlags:
    parsed: dict[str, Any] = {spec.name: values[spec.name].value for spec in dataclasses.fields(AppFlags)}
    return AppFlags(**parsed)


def usage_lines() -> list[str]:
    lines = ["", "absl's own flags (the original's tf.app.run accepted them):"]
    lines += [f"  --{name}  {text}" for name, text in APP_FLAG_HELP.items()]
    lines.append(f"  --{', --'.join(LOGGING_FLAG_NAMES)}, -v: accepted, no effect (as in the original)")
    return lines


def run_as_asked(call: Callable[[], Any], app: AppFlags) -> None:
    """`call()`, under the profiler or the debugger when the command line asks, as absl.app.run did."""
    if app.run_with_pdb:
        pdb.runcall(call)
    elif app.run_with_profiling or app.profile_file:
        _profiled(call, app)
    else:
        call()


def _profiled(call: Callable[[], Any], app: AppFlags) -> None:
    if app.use_cprofile_for_profiling:
        import cProfile as profile_module
    else:
        import profile as profile_module  # type: ignore[no-redef]
    profiler = profile_module.Profile()
    try:
        profiler.runcall(call)
    finally:  # a failed run's profile is the one most worth reading
        if app.profile_file:
            profiler.dump_stats(app.profile_file)
            print(f"profile written to {app.profile_file} (read it with python -m pstats)", file=sys.stderr)
        else:
            profiler.print_stats(sort="cumulative")


def post_mortem_if_asked(app: AppFlags) -> None:
    """absl opened the debugger only when a person could use it; under the queue (output teed to
    lfads.out, no terminal) a debugger prompt would hang the run."""
    if app.pdb_post_mortem and sys.stdin.isatty() and sys.stdout.isatty():
        pdb.post_mortem(sys.exc_info()[2])
