"""RunCollection: a grid of runs (run specs x param sets) under `<root>/<name>/`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from manager.cleanup import delete_run_output
from manager.datasets import DatasetCollection
from manager.errors import ManagerError
from manager.params import RunParams
from manager.prepare import PrepareReport, prepare_collection, write_collection_files
from manager.run import Run
from manager.runspec import RunSpec
from runqueue.discovery import SKIPPED_FOLDERS_TEXT, searched_folder_name
from runqueue.durations import parse_duration
from runqueue.layout import DEFAULT_MEMORY_MB

Progress = Callable[[str], None]


class StaleResultsWarning(UserWarning):
    """A trained run's data changed after its training started; its results no longer match."""


def check_time_limit(time_limit: str | int | float) -> None:
    """ManagerError (without a path) unless the queue can read `time_limit` from runqueue.json:
    otherwise every run would be blocked there, far from where the value was written."""
    try:
        parse_duration(time_limit)  # refuses zero, negative, NaN and infinite values too
    except (ValueError, TypeError):
        raise ManagerError(None, f"time_limit {time_limit!r} is not a positive duration",
                           'write it like "2h", "90m", "1h30m" or a positive number of seconds') from None


_NOTED_ELSEWHERE: set[str] = set()  # interpreters of another machine already mentioned


def interpreter_path(python: str, base: Path | str = ".") -> str:
    """The absolute path the step scripts will exec: a bare name is looked up on PATH (as a shell
    would), a path is taken relative to `base`. The queue runs steps from the run folder, so a
    relative or missing interpreter would fail every run, and only then; ManagerError without a
    path (callers name the file the value came from)."""
    if os.sep not in python and not python.startswith("~"):
        found = shutil.which(python)
        if found is None:
            raise ManagerError(None, f"python {python!r} is not on PATH", "give the interpreter's absolute path")
        candidate = Path(found)
    else:
        candidate = Path(python).expanduser()
        if candidate.is_absolute() and not os.path.lexists(candidate):
            # Prepared here for another machine (the cluster's interpreter): trusted as written.
            if str(candidate) not in _NOTED_ELSEWHERE:  # an experiment resolves it twice: say it once
                _NOTED_ELSEWHERE.add(str(candidate))
                print(f"note: python {str(candidate)!r} does not exist on this machine; the step scripts and"
                      " run_lfads.py will need it where they run", file=sys.stderr)
            return str(candidate)
        candidate = candidate if candidate.is_absolute() else Path(base) / candidate
    # abspath, not resolve(): a virtualenv's python is a symlink that must stay one
    candidate = Path(os.path.abspath(candidate))
    if not candidate.is_file() or not os.access(candidate, os.X_OK):
        raise ManagerError(None, f"python {str(candidate)!r} is not an executable file",
                           "give the path of an existing Python interpreter (e.g. a virtualenv's bin/python)")
    return str(candidate)


# What the step scripts (lfads) and run_lfads.py (runqueue) import with the collection's interpreter.
NEEDED_MODULES = ("lfads", "runqueue")
_PROBE = ("import importlib.util, sys\n"
          "missing = [m for m in sys.argv[1:] if importlib.util.find_spec(m) is None]\n"
          "print('lfads-manager-probe:', ' '.join(missing))")
_PROBED: dict[str, list[str] | None] = {}  # interpreter -> modules it lacks (None: not known), asked once


def check_interpreter_modules(python: str) -> None:
    """ManagerError (without a path) when `python`, another interpreter than this one, cannot import
    the queue and the model: every run would fail at its first step, and run_lfads.py at once."""
    if os.path.abspath(python) == os.path.abspath(sys.executable) or not os.path.exists(python):
        return  # this interpreter has them (it runs this code); a missing one is another machine's
    if python not in _PROBED:
        _PROBED[python] = _missing_modules(python)
    missing = _PROBED[python]
    if missing:
        raise ManagerError(None, f"python {python!r} cannot import {', '.join(missing)}, which the step scripts and"
                                 " run_lfads.py need",
                           f"install this package into it ({python} -m pip install 'lfads-runqueue[model]'), or give"
                           " the interpreter where it is installed (leave python out: the one running prepare)")


def _missing_modules(python: str) -> list[str] | None:
    try:
        # From /, so a checkout in the current folder does not stand in for an installed package.
        result = subprocess.run([python, "-c", _PROBE, *NEEDED_MODULES], capture_output=True, text=True, timeout=60, cwd="/")
    except (OSError, subprocess.TimeoutExpired):
        return None  # could not ask it: the run's own log will say why
    for line in result.stdout.splitlines():
        if line.startswith("lfads-manager-probe:"):
            return line.split(":", 1)[1].split()
    return None  # not a Python that answers (a wrapper script): not judged


def check_layout(collection_path: Path, datasets: DatasetCollection) -> None:
    """ManagerError (without a path) when the run tree would be written among the raw data: the
    collection folder is the datasets folder, holds it, or (inside it) holds a dataset file. (Datasets
    beside the collection, e.g. root/datasets and root/runs/<name>, are the usual layout.)"""
    tree, data = Path(os.path.realpath(collection_path)), Path(os.path.realpath(datasets.path))
    fix = "put the collection elsewhere (e.g. root = \"runs\" beside the datasets folder)"
    if tree == data:
        raise ManagerError(None, f"the collection folder {collection_path} is the datasets folder, so the run tree would be"
                                 " written among the raw data", fix)
    if tree in data.parents:
        raise ManagerError(None, f"the datasets folder {datasets.path} is inside the collection folder {collection_path},"
                                 " so the run tree would be written around the raw data", fix)
    if data in tree.parents:
        inside = [d for d in datasets if tree in Path(os.path.realpath(d.path)).parents]
        if inside:
            raise ManagerError(None, f"dataset file {inside[0].path} is inside the collection folder {collection_path}",
                               f"{fix}, or select only the raw data files in the datasets folder")


class RunCollection:
    """`RunCollection(root, name, datasets)`; add params and run specs, then `prepare()`.

    `python` is the interpreter the step scripts call (default: the one running now).
    `gpu_memory_mb` (default 2000, MATLAB's gpuMemoryRequired) and `time_limit` ("2h", "90m" or
    seconds) go into each run's runqueue.json when set to something other than the default.
    """

    def __init__(
        self,
        root: Path | str,
        name: str,
        datasets: DatasetCollection,
        python: str | None = None,
        gpu_memory_mb: int = DEFAULT_MEMORY_MB,
        time_limit: str | int | float | None = None,
    ) -> None:
        if not name or "/" in name or name in (".", ".."):
            raise ManagerError(None, f"collection name {name!r} cannot be a folder name", "use a plain folder name")
        if not searched_folder_name(name):
            raise ManagerError(None, f"collection name {name!r} names a folder the queue never looks into"
                                     f" ({SKIPPED_FOLDERS_TEXT}), so `runqueue run` over its root would miss it",
                               "choose another name")
        self.root = Path(os.path.abspath(Path(root).expanduser()))
        self.name = name
        self.dataset_collection = datasets
        check_layout(self.path, datasets)
        self.python = interpreter_path(python) if python else os.path.abspath(sys.executable)
        check_interpreter_modules(self.python)
        self.gpu_memory_mb = int(gpu_memory_mb)
        if time_limit not in (None, ""):
            check_time_limit(time_limit)
        self.time_limit = time_limit
        self.params: list[RunParams] = []
        self.run_specs: list[RunSpec] = []

    def __repr__(self) -> str:
        return f"RunCollection({self.name!r}, {len(self.run_specs)} specs x {len(self.params)} params)"

    @property
    def path(self) -> Path:
        return self.root / self.name

    # ---- building the grid -----------------------------------------------------------------
    def add_params(self, params: RunParams | Iterable[RunParams]) -> None:
        """Add copies of one or many param sets (MATLAB's RunParams is a value: changing yours later
        changes nothing here); one with the same param hash replaces the existing entry."""
        for given in [params] if isinstance(params, RunParams) else list(params):
            given.check_consistent()
            item = given.copy()
            for index, existing in enumerate(self.params):
                if existing.param_hash == item.param_hash:
                    self.params[index] = item
                    break
            else:
                self.params.append(item)

    def add_run_spec(self, spec: RunSpec) -> None:
        """Add a run spec; one with the same name and datasets replaces the existing entry."""
        for index, existing in enumerate(self.run_specs):
            if existing.same_as(spec):
                self.run_specs[index] = spec
                return
            if existing.name == spec.name:
                raise ManagerError(None, f"run spec {spec.name!r} already exists with datasets {existing.dataset_names}",
                                   "give the new run spec another name")
        self.run_specs.append(spec)

    @property
    def runs(self) -> list[Run]:
        """Every run, param set by param set (the original's column-major order of runs(iSpec, iParam))."""
        return [Run(self, spec, params) for params in self.params for spec in self.run_specs]

    def find_runs(self, spec: str | int | None = None, params: str | int | None = None) -> list[Run]:
        """Runs matching a spec (name or 0-based index) and a param set (0-based index,
        'param_HASH' or 'HASH'); None matches all."""
        specs = self.run_specs if spec is None else [self._spec(spec)]
        param_sets = self.params if params is None else [self._params(params)]
        return [Run(self, s, p) for p in param_sets for s in specs]

    def _by_index(self, items: list[Any], key: int, what: str) -> Any:
        """0-based, as documented: a negative or too large index is an error, not Python's wrap-around."""
        if not 0 <= key < len(items):
            raise ManagerError(self.path, f"no {what} at index {key}", f"use 0 to {len(items) - 1}, or a name")
        return items[key]

    def _spec(self, key: str | int) -> RunSpec:
        if isinstance(key, int):
            return self._by_index(self.run_specs, key, "run spec")
        for spec in self.run_specs:
            if spec.name == key:
                return spec
        raise ManagerError(self.path, f"no run spec named {key!r}", f"use one of {[s.name for s in self.run_specs]}")

    def _params(self, key: str | int) -> RunParams:
        if isinstance(key, int):
            return self._by_index(self.params, key, "param set")
        wanted = key.removeprefix("param_")
        for params in self.params:
            if params.param_hash == wanted:
                return params
        raise ManagerError(self.path, f"no param set {key!r}", f"use one of {[p.param_hash_name for p in self.params]}")

    # ---- writing ---------------------------------------------------------------------------
    def prepare(self, regenerate: bool = False, progress: Progress | None = None, prune: bool = False) -> PrepareReport:
        """Export data, link it into every run, write scripts, summary.txt and the collection scripts.

        Nothing is rewritten when nothing changed; `regenerate=True` re-exports and re-links all.
        Unfinished run folders (not done, not failed) of param sets or run specs no longer in the
        collection are named in a note (a queue over the collection would still train them);
        `prune=True` retires them.
        """
        try:
            check_layout(self.path, self.dataset_collection)  # again: datasets may have been added since
        except ManagerError as error:
            raise ManagerError(self.path, error.problem, error.fix) from None
        report = prepare_collection(self, regenerate=regenerate, progress=progress, prune=prune)
        if progress is None:  # nobody listens to progress: the notes must still reach the user
            for note in report.notes:
                warnings.warn(note, StaleResultsWarning, stacklevel=2)
        return report

    def write_summary(self) -> bool:
        return write_collection_files(self, only_summary=True)

    def delete_lfads_output(self, run: Run | Path | str, confirm: bool = False) -> None:
        """Delete a run's lfadsOutput/, lfads.out and the done/failed markers (the run goes again).

        Without `confirm=True` it asks you to type "yes", like the original. A running run is
        refused (see manager.cleanup).
        """
        run_dir = run.path if isinstance(run, Run) else Path(run)
        if not confirm:
            try:
                answer = input(f"Delete LFADS output of {run_dir}? Type yes to confirm: ")
            except EOFError:
                answer = ""  # no terminal to ask: not confirmed
            if answer.strip() != "yes":
                raise ManagerError(run_dir, "deletion not confirmed", "type yes, or pass confirm=True")
        delete_run_output(run_dir)

