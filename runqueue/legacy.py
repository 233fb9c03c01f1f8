"""Run folders written by the MATLAB lfads-run-manager (DESIGN.md §3, last point).

Their `lfads_train.sh` chains train && posterior && write-params inside `( … ) 2>&1 | tee lfads.out`:
tee truncates the log we append to, and without pipefail the script's exit status is tee's, so a
crashed training looks like success. We run such a script (a) with a `tee` shim first on PATH that
drops the `lfads.out` argument (the queue already appends the step's output to lfads.out, so the
log stays whole and keeps our headers) and passes any other tee target to the real tee, and (b)
under `bash -o pipefail`, so a failing chain fails the step; after it succeeds, the files the
chained commands write must be in lfadsOutput before the run counts as done. (c) Their
`python $(which run_lfads.py)` must reach this installation's LFADS in every script that calls it
(with or without tee), also when the queue was started by its full path with no virtualenv active
(the systemd unit): a `python` shim beside the tee shim runs the queue's own interpreter, and a
folder holding a `run_lfads.py` of ours ends PATH, so a `run_lfads.py` of the user's own PATH still
comes first. Ours re-executes the queue's interpreter whichever `python` starts it, so a `source
activate ENV` in the script (which puts the env's python before the shim) does not matter.
(d) A few things such scripts may hold would defeat the queue, and the run is refused with the
reason instead (`refusal`): absolute paths into another run folder (a copied tree), the `2&>1`
typo of old versions, a CUDA_VISIBLE_DEVICES of their own, a detached tmux session.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from pathlib import Path

from runqueue.atomicio import atomic_write_bytes
from runqueue.layout import OUT_LOG, POSTERIOR_SCRIPT, WRITE_PARAMS_SCRIPT, RunPaths
from runqueue.runlock import refuse_a_link

# `| tee`, `|& tee`, `| /usr/bin/tee`; its arguments may go on after a `\` line continuation.
_PIPE_INTO_TEE = re.compile(r"\|&?\s*(?P<path>[\w.~/-]*/)?tee\b")
_TEE_INTO_LOG = re.compile(_PIPE_INTO_TEE.pattern + r"(?:[^\n]|\\\n)*?\b" + re.escape(OUT_LOG) + r"(?![\w.-])")
_CALLS_RUN_LFADS = re.compile(r"\brun_lfads\.py\b")
_FOLDER_FLAG = re.compile(r"""--(lfads_save_dir|data_dir)=("[^"]*"|'[^']*'|[^\s;&|)]+)""")
_STDERR_TYPO = re.compile(r"(?<![>&\w])2&>1\b")
_OWN_DEVICES = re.compile(r"\bCUDA_VISIBLE_DEVICES=['\"]?[0-9]")
_SINGLE_QUOTED = re.compile(r"'[^'\n]*'")
_DETACHED_TMUX = re.compile(r"\btmux\s+(new-session|new)\b[^\n]*\s-d\b")
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


def calls_run_lfads(text: str) -> bool:
    """A script of the original's kind (`python $(which run_lfads.py) …`): it needs the shims (c)."""
    return _CALLS_RUN_LFADS.search(_without_comments(text)) is not None


def refusal(paths: RunPaths, step: str, text: str) -> str | None:
    """Why the queue must not run this legacy step script as it is (see (d)), or None. Comments do not
    count, nor single-quoted text (an `echo '… 2&>1 …'`) for the typo and device checks."""
    code = _without_comments(text)
    for flag, value in _folder_flags(code):
        if not _inside(paths.root, value):
            return (f"{step} gives --{flag}={value}, outside this run folder (a copy of a collection keeps the"
                    f" MATLAB scripts' absolute paths), so it would train another run's model; prepare the"
                    f" collection again here, or change the paths in {step} to this folder's")
    unquoted = _SINGLE_QUOTED.sub("''", code)
    into_log = _TEE_INTO_LOG.search(unquoted)
    if into_log is not None and into_log.group("path"):
        return (f"{step} pipes into {into_log.group('path')}tee {OUT_LOG}, which would truncate the log the queue"
                f" appends to (the queue stands in for a plain `tee` only); write `tee {OUT_LOG}` without the path,"
                " or drop the tee: the queue writes the step's output to lfads.out itself")
    if _STDERR_TYPO.search(unquoted):
        return (f"{step} holds `2&>1`, a typo of old lfads-run-manager versions (bash passes '2' to run_lfads.py"
                " and sends the output to a file named 1); change it to `2>&1`")
    if _OWN_DEVICES.search(unquoted):
        return (f"{step} sets CUDA_VISIBLE_DEVICES itself (MATLAB's cuda_visible_devices argument), which would"
                " override the device the queue placed the run on; remove that assignment")
    if _DETACHED_TMUX.search(code):
        return (f"{step} starts its command in a detached tmux session, which returns at once and which the"
                " queue cannot supervise; remove the tmux wrapper (MATLAB: useTmuxSession=false)")
    return None


def _inside(root: Path, value: str) -> bool:
    """Whether the folder a flag names lies in the run folder: by name first (an lfadsOutput linked to a
    scratch disk is still the run's), else by where it really is (lfadsInput itself links out)."""
    folder = os.path.normpath(os.path.join(root, value))
    if folder.startswith(os.path.normpath(root) + os.sep):
        return True
    real_root = os.path.realpath(root)
    parent = os.path.realpath(os.path.dirname(folder))
    return parent == real_root or parent.startswith(real_root + os.sep)


def _without_comments(text: str) -> str:
    """The script with its `# …` comments cut (a `#` that starts a word, outside quotes), line by line."""
    kept = []
    for line in text.splitlines():
        quote, cut = "", len(line)
        for index, char in enumerate(line):
            if quote:
                if char == quote:
                    quote = ""
            elif char in "'\"":
                quote = char
            elif char == "#" and (index == 0 or line[index - 1] in " \t;(|&"):
                cut = index
                break
        kept.append(line[:cut])
    return "\n".join(kept)


def chained_steps(train_text: str) -> frozenset[str]:
    """Step scripts whose work a legacy lfads_train.sh already does (so they are not run again)."""
    chained = set()
    if any(f"--kind={kind}" in train_text for kind in _POSTERIOR_KINDS):
        chained.add(POSTERIOR_SCRIPT)
    if f"--kind={_WRITE_PARAMS_KIND}" in train_text:
        chained.add(WRITE_PARAMS_SCRIPT)
    return frozenset(chained)


def _save_dir(paths: RunPaths, script_text: str) -> Path:
    """The folder the script's LFADS writes into: its --lfads_save_dir, else lfadsOutput."""
    for flag, value in _folder_flags(_without_comments(script_text)):
        if flag == "lfads_save_dir":
            return Path(os.path.normpath(os.path.join(paths.root, value)))
    return paths.lfads_output


def _folder_flags(text: str) -> list[tuple[str, str]]:
    """The script's --data_dir/--lfads_save_dir values, unquoted; a shell variable's is left out (only
    bash knows where it points)."""
    pairs = [(flag, raw.strip("\"'")) for flag, raw in _FOLDER_FLAG.findall(text)]
    return [(flag, value) for flag, value in pairs if "$" not in value]


def missing_outputs(paths: RunPaths, script_text: str) -> list[str]:
    """What a successful legacy script should have left in its save folder but did not."""
    output = _save_dir(paths, script_text)
    missing = []
    for kind in _POSTERIOR_KINDS:
        if f"--kind={kind}" in script_text and not any(output.glob(f"model_runs_*_{kind}")):
            missing.append(f"{output.name}/model_runs_*_{kind}")
    if f"--kind={_WRITE_PARAMS_KIND}" in script_text and not (output / "model_params").exists():
        missing.append(f"{output.name}/model_params")
    return missing


def write_shims(directory: Path, search_path: str, interpreter: str) -> tuple[Path, Path]:
    """Create `directory/tee`, `directory/python` and `directory/last/run_lfads.py` (the shims
    described above); return the folder to put first on PATH and the one to put last."""
    last = directory / "last"
    for folder in (directory, last):  # in the run folder: a link planted there must not be written through
        refuse_a_link(folder)
        folder.mkdir(exist_ok=True)
    real_tee = shutil.which("tee", path=search_path)
    target = f'exec {real_tee} "$@"' if real_tee else "exec cat"
    _write_script(directory / "tee", (
        "#!/bin/bash\n"
        "# lfads-runqueue: the queue appends this step's output to lfads.out itself, so a legacy\n"
        "# script's `tee lfads.out` (which would truncate it) becomes a plain copy to stdout, with no\n"
        "# other file either: MATLAB wrote only lfads.out there, so any other argument is a piece of its\n"
        "# path split at a space (it never quoted paths). A tee into other files runs the real tee.\n"
        'for arg in "$@"; do\n'
        f'  case "${{arg##*/}}" in {OUT_LOG}) exec cat ;; esac\n'
        "done\n"
        f"{target}\n"
    ))
    ours = str(last / "run_lfads.py")
    # Any python that starts it hands over to the queue's own interpreter at once.
    _write_script(Path(ours), (
        f"#!{interpreter}\n"
        "# lfads-runqueue: this installation's LFADS, whichever python runs this file.\n"
        "import os, sys\n"
        f"os.execv({interpreter!r}, [{interpreter!r}, '-m', 'lfads'] + sys.argv[1:])\n"
    ))
    users = shutil.which("python", path=search_path) or interpreter
    _write_script(directory / "python", (
        "#!/bin/bash\n"
        "# lfads-runqueue: `python $(which run_lfads.py)` runs this installation's LFADS with the interpreter\n"
        "# it is installed in; anything else (a run_lfads.py of the user's own) with the user's python.\n"
        f'[ -e "$1" ] && [ "$1" -ef {shlex.quote(ours)} ] && exec {shlex.quote(interpreter)} "$@"\n'
        f'exec {shlex.quote(users)} "$@"\n'
    ))
    return directory, last


def _write_script(path: Path, text: str) -> None:
    if path.is_symlink() or not path.exists() or path.read_text() != text:
        # A fresh temp file renamed into place: a link planted at `path` is replaced, never written through.
        atomic_write_bytes(path, text.encode(), mode=0o755, durable=False)
