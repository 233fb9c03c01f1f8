"""The batch script of one run's job: #SBATCH lines, then `exec` of the run's supervisor.

Generated text (golden-file tested in tests/runqueue/test_slurm_jobscript.py). The script runs
the queue's own interpreter by absolute path, so the job finds the same runqueue the queue runs
(the path must be visible on the compute nodes: a shared software or home file system).
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from runqueue.errors import RunqueueError
from runqueue.naming import run_identity
from runqueue.slurm.options import SlurmOptions, format_sbatch_time
from runqueue.slurm.paths import SlurmPaths

COMMENT_PREFIX = "runqueue:"
_JOB_NAME_MAX = 100
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._/+-]")


@dataclass(frozen=True)
class JobScriptInputs:
    run_dir: Path  # absolute
    token: str
    spec_json: str  # SupervisorSpec.to_argv_json(); the job fills in the device SLURM gave it
    options: SlurmOptions
    sbatch_minutes: int | None
    python: str  # absolute interpreter
    package_parent: str  # the folder holding the runqueue package (put first on sys.path)


def job_name(run_dir: Path) -> str:
    """`lfads-<param>/<spec>` (the run's queue name), with anything odd replaced by `_`."""
    _collection, name = run_identity(run_dir)
    return _UNSAFE_NAME.sub("_", f"lfads-{name}")[:_JOB_NAME_MAX]


def render_job_script(inputs: JobScriptInputs) -> str:
    paths = SlurmPaths.of(inputs.run_dir)
    options = inputs.options
    directives = [
        f"--job-name={job_name(inputs.run_dir)}",
        f"--chdir={_directive_path(inputs.run_dir)}",
        f"--output={_output_directive(paths)}",
        "--open-mode=append",
        f"--comment={COMMENT_PREFIX}{inputs.token}",
    ]
    if options.gpus > 0:
        directives.append(f"--gres=gpu:{options.gpus}")
    if options.cpus is not None:
        directives.append(f"--cpus-per-task={options.cpus}")
    if options.mem_mb is not None:
        directives.append(f"--mem={options.mem_mb}")
    if inputs.sbatch_minutes is not None:
        directives.append(f"--time={format_sbatch_time(inputs.sbatch_minutes)}")
    if options.partition is not None:
        directives.append(f"--partition={options.partition}")
    bootstrap = (
        f"import sys; sys.path.insert(0, {json.dumps(inputs.package_parent)}); "
        "from runqueue.slurm.job import main; sys.exit(main())"
    )
    command = [inputs.python, "-c", bootstrap, "--token", inputs.token, "--spec", inputs.spec_json]
    lines = [
        "#!/bin/bash",
        "# One LFADS run, submitted by `runqueue run --executor slurm` (generated; resubmitting rewrites it).",
        "# The payload is the run's supervisor: it takes the run lock, runs the step scripts, appends",
        "# their output to lfads.out and writes lfads.done / lfads.failed itself. This file (SLURM's",
        "# own output goes to .runqueue/slurm-<jobid>.out) is only the envelope.",
        *(f"#SBATCH {directive}" for directive in directives),
        "exec " + " ".join(shlex.quote(part) for part in command),
        "",
    ]
    return "\n".join(lines)


def _directive_path(path: Path, text: str | None = None) -> str:
    """A path for an #SBATCH line: sbatch splits those lines at blanks unless double-quoted. A
    backslash would turn off SLURM's %-patterns in --output (the job could not open its file)."""
    text = str(path) if text is None else text
    if any(char in text for char in '"\n\r\\'):
        raise RunqueueError(
            path, "cannot be given to sbatch (the path holds a double quote, a backslash or a line break)", "rename the folder"
        )
    return f'"{text}"' if any(char.isspace() for char in text) else text


def _output_directive(paths: SlurmPaths) -> str:
    """--output: SLURM expands %j, %x, … in it, so a % of the run folder's own name is written %%."""
    pattern = paths.job_output_pattern
    escaped = str(pattern.parent).replace("%", "%%") + "/" + pattern.name
    return _directive_path(pattern, escaped)
