"""`lfads-manager prepare EXPERIMENT.toml`: a RunCollection from a declarative file.

    [collection]  root, name, python (optional)
    [datasets]    folder, files = [...] or glob = "...", name (optional), single_runs (optional)
    [params]      base parameters, original names (c_factors_dim, spikeBinMs, ...)
    [sweep]       name = [values...]: one param set per combination
    [[runspec]]   name, datasets = [dataset names]
    [queue]       memory_mb, time_limit (written to each run's runqueue.json)
Relative paths are relative to the TOML file. See docs/manager.md.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from manager.collection import RunCollection, check_time_limit, interpreter_path
from manager.datasets import DatasetCollection
from manager.errors import ManagerError
from manager.matlab_values import ParamValueError
from manager.params import RunParams
from manager.runspec import RunSpec
from runqueue.layout import DEFAULT_MEMORY_MB

_TABLES: dict[str, set[str]] = {
    "collection": {"root", "name", "python"},
    "datasets": {"folder", "files", "glob", "name", "single_runs"},
    "params": set(),
    "sweep": set(),
    "runspec": {"name", "datasets"},
    "queue": {"memory_mb", "time_limit"},
}


def _fail(path: Path, problem: str, fix: str) -> ManagerError:
    return ManagerError(path, problem, fix)


def _table(path: Path, doc: Mapping[str, Any], name: str, required: bool = False) -> dict[str, Any]:
    table = doc.get(name, {})
    if required and name not in doc:
        raise _fail(path, f"missing [{name}] table", f"add a [{name}] table (see docs/manager.md)")
    if not isinstance(table, dict):
        raise _fail(path, f"[{name}] must be a table", f"write it as [{name}] followed by key = value lines")
    allowed = _TABLES[name]
    if allowed:
        unknown = sorted(set(table) - allowed)
        if unknown:
            raise _fail(path, f"unknown key(s) {unknown} in [{name}]", f"valid keys are {sorted(allowed)}")
    return table


def _string(path: Path, table: str, key: str, value: Any) -> str:
    """`value` of `key` in `table` (shown as written, e.g. "[collection]"); None: the key is missing."""
    if value is None:
        raise _fail(path, f"{table} has no {key}", f'write {key} = "..."')
    if not isinstance(value, str) or not value:
        raise _fail(path, f"{table} {key} must be a non-empty string, got {value!r}", f'write {key} = "..."')
    return value


def _resolve(base: Path, text: str) -> Path:
    candidate = Path(text).expanduser()
    return candidate if candidate.is_absolute() else base / candidate


def _datasets(path: Path, table: dict[str, Any]) -> DatasetCollection:
    folder = _resolve(path.parent, _string(path, "[datasets]", "folder", table.get("folder")))
    if not folder.is_dir():
        raise _fail(path, f"dataset folder {folder} does not exist", "fix [datasets] folder")
    label = table.get("name", "")
    if not isinstance(label, str):
        raise _fail(path, f"[datasets] name must be a string, got {label!r}", 'write name = "..." or leave it out')
    collection = DatasetCollection(folder, name=label)
    if ("files" in table) == ("glob" in table):
        raise _fail(path, "[datasets] needs exactly one of files = [...] or glob = \"...\"", "list the files or give a pattern")
    if "files" in table:
        files = table["files"]
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files) or not files:
            raise _fail(path, "[datasets] files must be a non-empty list of file names", 'write files = ["a.mat", "b.mat"]')
    else:
        pattern = _string(path, "[datasets]", "glob", table["glob"])
        if Path(pattern).is_absolute() or pattern.startswith("~"):
            raise _fail(path, f"[datasets] glob {pattern!r} is not relative to [datasets] folder",
                        f"give the folder as folder = and a pattern within it, e.g. glob = {Path(pattern).name!r}")
        try:
            matches = [p.relative_to(folder) for p in folder.glob(pattern) if p.is_file()]
        except (ValueError, IndexError) as error:  # pathlib's ways of refusing a pattern, e.g. 's**.npz' or '.'
            detail = f" ({error})" if isinstance(error, ValueError) else ""
            raise _fail(path, f"[datasets] glob {pattern!r} is not a valid pattern{detail}",
                        "use * within a name and ** only as a whole path part, e.g. glob = \"*.mat\" or \"**/*.mat\"") from None
        # As a shell's glob: a hidden name (macOS's `._dataset001.mat`, an editor's `.x.mat.swp`) is
        # matched only by a pattern part that starts with a dot itself.
        if not any(part.startswith(".") for part in Path(pattern).parts):
            matches = [match for match in matches if not any(part.startswith(".") for part in match.parts)]
        files = sorted(str(match) for match in matches)
        if not files:
            raise _fail(path, f"[datasets] glob {pattern!r} matches no file in {folder}", "fix the pattern or the folder")
    for name in files:
        if not (folder / name).is_file():
            raise _fail(path, f"dataset file {folder / name} does not exist", "fix [datasets] files")
    try:
        collection.add_files(files)  # refuses two files that give one dataset name
    except ManagerError as error:
        fix = "list it once in [datasets] files" if "listed twice" in error.problem else \
            "rename one of the files, or select only one of them in [datasets]"
        raise _fail(path, f"[datasets] {error.problem}", fix) from None
    return collection


def _params(path: Path, base: dict[str, Any], sweep: dict[str, Any]) -> list[RunParams]:
    try:
        params = RunParams(**base)
    except ParamValueError as error:
        raise _fail(path, f"[params] {error}", "fix the value in [params] (see docs/manager.md for names and types)") from error
    for key, values in sweep.items():
        if not isinstance(values, list) or not values:
            raise _fail(path, f"[sweep] {key} must be a non-empty list of values", f"write {key} = [value, value, ...]")
        repeated = next((value for number, value in enumerate(values) if value in values[:number]), None)
        if repeated is not None:
            raise _fail(path, f"[sweep] {key} lists {repeated!r} more than once", "list each value once")
    try:
        grid = params.sweep(**sweep) if sweep else [params]
        for item in grid:
            item.check_consistent()
    except ParamValueError as error:
        where = "[sweep]" if sweep else "[params]"
        raise _fail(path, f"{where} {error}", f"fix the values in {where}") from error
    by_hash: dict[str, RunParams] = {}
    for item in grid:
        twin = by_hash.setdefault(item.param_hash, item)
        if twin is not item:  # MATLAB warned; here the grid would silently lose runs
            differ = sorted(name for name in sweep if getattr(twin, name) != getattr(item, name))
            raise _fail(path, f"[sweep] {', '.join(differ)} do(es) not change the param hash, so these combinations would"
                        " share one param_<hash> folder", "sweep only parameters that change the model or its data")
    return grid


def _run_specs(path: Path, doc: Mapping[str, Any], datasets: DatasetCollection, single_runs: bool) -> list[RunSpec]:
    entries = doc.get("runspec", [])
    if not isinstance(entries, list):
        raise _fail(path, "runspec entries must be written as [[runspec]] tables", "use [[runspec]] (two brackets)")
    specs = []
    for number, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict):
            raise _fail(path, f"[[runspec]] #{number} must be a table", 'write [[runspec]] followed by name = "..." and datasets = [...]')
        unknown = sorted(set(entry) - _TABLES["runspec"])
        if unknown:
            raise _fail(path, f"unknown key(s) {unknown} in [[runspec]] #{number}", "valid keys are ['datasets', 'name']")
        name = _string(path, f"[[runspec]] #{number}", "name", entry.get("name"))
        names = entry.get("datasets")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise _fail(path, f"[[runspec]] {name!r}: datasets must be a non-empty list of dataset names", 'write datasets = ["dataset001"]')
        try:
            specs.append(RunSpec(name, datasets, names))
        except ManagerError as error:
            raise _fail(path, error.problem, error.fix) from error
    for dataset in datasets if single_runs else []:
        try:
            specs.append(RunSpec(dataset.single_run_name, datasets, [dataset.name]))
        except ManagerError as error:  # the name comes from the file, so the fix is there
            raise _fail(path, f"[datasets] single_runs: {error.problem} (from the file {dataset.rel_path})",
                        "rename the file (letters, digits and _ . + -) or set single_runs = false") from error
    if not specs:
        raise _fail(path, "no run specs", "add [[runspec]] entries or set single_runs = true in [datasets]")
    return specs


def load_experiment(path: Path | str) -> RunCollection:
    """Parse and check an experiment file; nothing is written until `prepare()`."""
    path = Path(path).absolute()
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError as error:
        raise _fail(path, "experiment file not found", "check the path") from error
    except tomllib.TOMLDecodeError as error:
        raise _fail(path, f"not valid TOML ({error})", "fix the syntax") from error
    except UnicodeDecodeError as error:
        raise _fail(path, f"not UTF-8 text (byte {error.start})", "save the file as UTF-8 (TOML requires it)") from None
    except IsADirectoryError:
        raise _fail(path, "is a folder, not an experiment file", "give the path of the .toml file") from None
    unknown = sorted(set(doc) - set(_TABLES))
    if unknown:
        raise _fail(path, f"unknown table(s) {unknown}", f"valid tables are {sorted(_TABLES)}")
    collection_table = _table(path, doc, "collection", required=True)
    datasets_table = _table(path, doc, "datasets", required=True)
    queue = _table(path, doc, "queue")
    datasets = _datasets(path, datasets_table)
    memory = queue.get("memory_mb", DEFAULT_MEMORY_MB)
    if not isinstance(memory, int) or isinstance(memory, bool) or memory <= 0:
        raise _fail(path, f"[queue] memory_mb must be a positive whole number of MB, got {memory!r}", "write memory_mb = 4000")
    time_limit = queue.get("time_limit")
    if time_limit is not None:
        if isinstance(time_limit, bool) or not isinstance(time_limit, str | int | float):
            raise _fail(path, f"[queue] time_limit must be like \"2h\", \"90m\" or seconds, got {time_limit!r}", 'write time_limit = "2h"')
        try:
            check_time_limit(time_limit)
        except ManagerError as error:
            raise _fail(path, f"[queue] {error.problem}", 'write time_limit = "2h", or leave it out for no limit') from None
    single_runs = datasets_table.get("single_runs", False)
    if not isinstance(single_runs, bool):
        raise _fail(path, "[datasets] single_runs must be true or false", "write single_runs = true")
    python = None
    if "python" in collection_table:
        python_text = _string(path, "[collection]", "python", collection_table["python"])
        try:
            python = interpreter_path(python_text, path.parent)
        except ManagerError as error:
            raise _fail(path, f"[collection] {error.problem}", f"{error.fix}; a relative path is relative to this file") from None
    root = _resolve(path.parent, _string(path, "[collection]", "root", collection_table.get("root")))
    name = _string(path, "[collection]", "name", collection_table.get("name"))
    try:
        collection = RunCollection(
            root,
            name,
            datasets,
            python=python,
            gpu_memory_mb=memory,
            time_limit=time_limit,
        )
    except ManagerError as error:
        raise _fail(path, f"[collection] {error.problem}", error.fix) from error
    collection.add_params(_params(path, _table(path, doc, "params"), _table(path, doc, "sweep")))
    for spec in _run_specs(path, doc, datasets, single_runs):
        try:
            collection.add_run_spec(spec)
        except ManagerError as error:
            raise _fail(path, error.problem, "give one of them another name (single_runs = true adds single_<dataset>)") from error
    return collection
