"""Run folders written by the MATLAB lfads-run-manager (DESIGN.md §3, last point).

Their `lfads_train.sh` chains train && posterior && write-params inside `( … ) 2>&1 | tee lfads.out`:
tee truncates the log we append to, and without pipefail the script's exit status is tee's, so a
crashed training looks like success. We run such a script (a) with a `tee` shim first on PATH that
drops the `lfads.out` argument (the queue already appends the step's output to lfads.out, so the
log stays whole and keeps our headers) and passes any other tee target to the real tee, and (b)
under `bash -o pipefail`, so a failing chain fails the step; after it succeeds, the files the
chained commands write must be in lfadsOutput before the run counts as done. (c) Their
`python $(which run_lfads.py)` must reach this installation's LFADS also when the queue was started
by its full path with no virtualenv active (the systemd unit): a `python` shim beside the tee shim
runs the queue's own interpreter, and the queue's bin folder (holding `run_lfads.py`) ends PATH, so
a `run_lfads.py` of the user's own PATH still comes first.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from pathlib import Path

from runqueue.layout import OUT_LOG, POSTERIOR_SCRIPT, WRITE_PARAMS_SCRIPT, RunPaths

_PIPE_INTO_TEE = re.compile(r"\|\s*tee\b")
_TEE_INTO_LOG = re.compile(r"\|\s*tee\b[^\n]*\b" + re.escape(OUT_LOG) + r"\b")
_POSTERIOR_KINDS = ("posterior_sample_and_average", "posterior_push_mean")
_WRITE_PARAMS_KIND = "write_model_params"
SHIM_DIR_NAME = "legacy-bin"


def pipes_into_tee(text: str) -> bool:
    """A script with `… | tee FILE`: without pipefail its exit status would be tee's (the MATLAB
    posterior and write-params scripts may tee into files of their own), so it runs with pipefail."""
    return _PIPE_INTO_TEE.search(text) is not None


def is_legacy_script(text: str) -> bool:
    """A step script that pipes its own output into lfads.out with tee."""
    return _TEE_INTO_LOG.search(text) is not None


def chained_steps(train_text: str) -> frozenset[str]:
    """Step scripts whose work a legacy lfads_train.sh already does (so they are not run again)."""
    chained = set()
    if any(f"--kind={kind}" in train_text for kind in _POSTERIOR_KINDS):
        chained.add(POSTERIOR_SCRIPT)
    if f"--kind={_WRITE_PARAMS_KIND}" in train_text:
        chained.add(WRITE_PARAMS_SCRIPT)
    return frozenset(chained)


def missing_outputs(paths: RunPaths, script_text: str) -> list[str]:
    """What a successful legacy script should have left in lfadsOutput but did not."""
    output = paths.lfads_output
    missing = []
    for kind in _POSTERIOR_KINDS:
        if f"--kind={kind}" in script_text and not any(output.glob(f"model_runs_*_{kind}")):
            missing.append(f"{output.name}/model_runs_*_{kind}")
    if f"--kind={_WRITE_PARAMS_KIND}" in script_text and not (output / "model_params").exists():
        missing.append(f"{output.name}/model_params")
    return missing


def write_shims(directory: Path, search_path: str, interpreter: str) -> Path:
    """Create `directory/tee` and `directory/python` (the shims described above); return the directory."""
    directory.mkdir(parents=True, exist_ok=True)
    real_tee = shutil.which("tee", path=search_path)
    target = f'exec {real_tee} "${{keep[@]}}"' if real_tee else "exec cat"
    _write_script(directory / "tee", (
        "#!/bin/bash\n"
        "# lfads-runqueue: the queue appends this step's output to lfads.out itself, so a legacy\n"
        "# script's `tee lfads.out` (which would truncate it) is dropped; other targets are kept.\n"
        "keep=()\n"
        'for arg in "$@"; do\n'
        f'  case "${{arg##*/}}" in {OUT_LOG}) ;; *) keep+=("$arg") ;; esac\n'
        "done\n"
        f"{target}\n"
    ))
    ours = os.path.join(os.path.dirname(interpreter), "run_lfads.py")
    users = shutil.which("python", path=search_path) or interpreter
    _write_script(directory / "python", (
        "#!/bin/bash\n"
        "# lfads-runqueue: `python $(which run_lfads.py)` runs this installation's LFADS with the interpreter\n"
        "# it is installed in; anything else (a run_lfads.py of the user's own) with the user's python.\n"
        f'[ -e "$1" ] && [ "$1" -ef {shlex.quote(ours)} ] && exec {shlex.quote(interpreter)} "$@"\n'
        f'exec {shlex.quote(users)} "$@"\n'
    ))
    return directory


def _write_script(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.chmod(0o755)
        tmp.replace(path)
