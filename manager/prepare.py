"""prepare(): the run tree on disk, in phases that never leave a half-written state behind.

1. check what is in the way (a plain file where a symlink or folder must go, or a file in lfadsInput/
   that LFADS would load although the run spec does not have it);
2. for every (data hash, run spec) whose export is missing or stale, load and check its datasets and
   compute the alignment; check every run's batch size against the trial counts;
3. write the exports (once per data hash + run spec; every file atomic and compared before writing);
4. write each run folder: lfadsInput symlinks (removing the ones it made for datasets the run spec no
   longer has), runqueue.json, step scripts, lfads_train.sh last (to a queue it makes the folder a run);
5. write the collection's summary.txt, launch_tensorboard.sh and run_lfads.py.
Errors in 1-2 stop before anything is written.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import os
import secrets
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from manager.alignment import AlignmentResult, compute_alignment, plot_alignment_reconstruction
from manager.atomicio import write_if_changed
from manager.codeprint import RULES as CODEPRINT_RULES
from manager.codeprint import code_fingerprint
from manager.datasets import ALIGNMENT_MODE, EXPORT_MODE, Dataset, registered_loader
from manager.departed import departed_notes, pending_departed_runs, prune_departed, retire
from manager.errors import ManagerError
from manager.export import (
    INPUT_INFO_PREFIX,
    LFADS_FILE_PREFIX,
    input_info_fields,
    input_info_file_name,
    lfads_arrays,
    lfads_file_name,
    rebin_factor,
    split_indices,
    write_input_info,
    write_lfads_h5,
)
from manager.export_history import (
    EXPORT_STAMP_FILE,
    HISTORY_KEY,
    arrays_digest,
    describe_time,
    digest_of_files,
    in_progress_stamp,
    read_stamp,
    retrain_hint,
    stale_since,
    training_started,
    updated_history,
)
from manager.leftovers import collection_lock, remove_temp_files
from manager.params_schema import DATA_HASH_VERSION_CUTOFF
from manager.run import Run
from manager.runlocks import holding_runs, refuse_running
from manager.scripts import (
    LFADS_INPUT_STEM,
    SCRIPT_MODE,
    posterior_mean_script,
    queue_script,
    tensorboard_script,
    train_script,
    write_model_params_script,
)
from manager.sequence import SequenceData, read_as, sequence_from_fields
from manager.summary import summary_text
from manager.written_files import WrittenFiles, set_aside
from runqueue.errors import RunqueueError
from runqueue.layout import (
    COLLECTION_QUEUE_SCRIPT,
    DEFAULT_MEMORY_MB,
    POSTERIOR_SCRIPT,
    RESOURCES_FILE,
    RESOURCES_WRITER,
    RESOURCES_WRITER_KEY,
    RETIRED_TRAIN_SCRIPT,
    SUMMARY_FILE,
    TENSORBOARD_SCRIPT,
    TRAIN_SCRIPT,
    WRITE_PARAMS_SCRIPT,
)
from runqueue.resources import load_resources

if TYPE_CHECKING:
    from manager.collection import RunCollection

ALIGNMENT_PLOT_FILE = "alignment_reconstruction.png"
# (dataset name, data hash or "" when its load_counts ignores the run, mode) -> its counts
_CountsCache = dict[tuple[str, str, str], SequenceData]
# Bump when the export's content changes, so older exports are redone. 2: a file without a time
# vector but with a scalar bin width (binWidthMs, binSizeMs, dtMs) is read at that width, not 1 ms.
EXPORT_FORMAT = 2
LOADER_CODE_KEY = "loader_code"  # in a stamp's source datasets: manager.codeprint of the user's loader
# What a loader fingerprint is comparable with: bytecode differs between Python versions, and
# fingerprints made by other rules (codeprint.RULES) cover other code.
_FINGERPRINT_KIND = f"py{sys.version_info.major}.{sys.version_info.minor}-r{CODEPRINT_RULES}"


@dataclass
class PrepareReport:
    exported: list[Path] = field(default_factory=list)  # data_<h>/<spec> folders (re)exported
    files_written: list[Path] = field(default_factory=list)
    # stale lfadsInput links and exports of datasets a run spec no longer has
    files_removed: list[Path] = field(default_factory=list)
    # trained runs whose export has changed since their training started: their results do not
    # match their input any more (load_posterior_means refuses them)
    stale_runs: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what a user must know, also sent to progress
    export_seconds: float = 0.0
    other_seconds: float = 0.0


@dataclass
class _ExportPlan:
    run: Run  # any run of this (data hash, spec); its params define the export
    sequences: list[SequenceData]
    rebins: list[int]
    alignment: AlignmentResult | None
    alignment_png: bytes | None  # drawn while planning, so a plotting error stops before any write
    stamp: dict[str, Any]
    per_dataset: dict[str, dict[str, np.ndarray]]  # dataset name -> the arrays of its lfads_*.h5
    digest: str  # of per_dataset (export_history.arrays_digest)
    unjudged: bool = False  # rebuilt with nothing known of what it held before: trained runs cannot be judged


def _say(progress: Callable[[str], None] | None, message: str) -> None:
    if progress is not None:
        progress(message)


def _note(report: PrepareReport, progress: Callable[[str], None] | None, note: str) -> None:
    """Something the user must know: kept in the report and said at once."""
    report.notes.append(note)
    _say(progress, note)


# ---- phase 1 ------------------------------------------------------------------------------
def _made_by_prepare(entry: Path) -> bool:
    """A link of the form prepare makes (Run.symlink_targets): ../../../data_<h>/<spec>/<its own name>."""
    try:
        parts = os.readlink(entry).split("/")
    except OSError:  # not a link
        return False
    return len(parts) == 6 and parts[:3] == ["..", "..", ".."] and parts[3].startswith("data_") and parts[5] == entry.name


def _stray_inputs(run: Run) -> tuple[list[Path], list[Path]]:
    """Entries of lfadsInput/ that are not the run's inputs: (links prepare made, which it may
    remove; anything else LFADS would load as a dataset, which it must not touch)."""
    folder = run.paths.lfads_input
    if not folder.is_dir():
        return [], []
    wanted = run.symlink_targets()
    ours, foreign = [], []
    for entry in sorted(folder.iterdir()):
        if entry.name in wanted:
            continue
        if entry.name.startswith((LFADS_FILE_PREFIX, INPUT_INFO_PREFIX)) and _made_by_prepare(entry):
            ours.append(entry)
        elif entry.name.startswith(LFADS_INPUT_STEM):
            foreign.append(entry)
    return ours, foreign


def _file_in_the_way(folder: Path) -> Path | None:
    """The lowest of `folder` and its ancestors that exists but is no folder (a file, a dangling
    link): a file at param_<hash> hides every path below it, so folder.exists() alone misses it."""
    for path in (folder, *folder.parents):
        if path.is_dir():
            return None
        if path.is_symlink() or path.exists():
            return path
    return None


def _check_obstacles(runs: list[Run]) -> None:
    collection = runs[0].collection.path
    files = [collection / name for name in (SUMMARY_FILE, TENSORBOARD_SCRIPT, COLLECTION_QUEUE_SCRIPT)]
    for run in runs:
        files += [run.path / name for name in (TRAIN_SCRIPT, POSTERIOR_SCRIPT, WRITE_PARAMS_SCRIPT, RESOURCES_FILE)]
        files += [run.path_common_data / name for name in (EXPORT_STAMP_FILE, ALIGNMENT_PLOT_FILE)]
        files += [run.path_common_data / name(dataset) for dataset in run.dataset_names
                  for name in (lfads_file_name, input_info_file_name)]
    for path in files:
        if path.is_dir() and not path.is_symlink():
            raise ManagerError(path, "a folder is in the way of a file the run tree needs", "move it away or delete it")
    for run in runs:
        for folder in (run.paths.lfads_input, run.path_common_data):
            obstacle = _file_in_the_way(folder)
            if obstacle is not None:
                raise ManagerError(obstacle, "a file is in the way of a folder the run tree needs", "move it away or delete it")
        for name in run.symlink_targets():
            entry = run.paths.lfads_input / name
            if (entry.exists() or entry.is_dir()) and not entry.is_symlink():
                raise ManagerError(entry, "an existing file is in the way of the lfadsInput symlink",
                                   "move it away or delete it, then prepare again")
        _, foreign = _stray_inputs(run)
        if foreign:
            raise ManagerError(foreign[0], f"LFADS would load this as a dataset, but run spec {run.spec.name!r} has only "
                               f"{', '.join(run.dataset_names)}", "move it out of lfadsInput/, then prepare again")


# ---- phase 2 ------------------------------------------------------------------------------
def _source_stamp(run: Run) -> dict[str, Any]:
    stamp = {
        "format": EXPORT_FORMAT,
        "data_hash": run.params.data_hash,
        "spec": run.spec.name,
        "datasets": [{"name": d.name, **vars(d.source_stamp()), **_loader_stamp(d)} for d in run.spec.datasets],
    }
    if run.uses_alignment and run.params.version < DATA_HASH_VERSION_CUTOFF:
        # Left out of such a data hash, c_factors_dim still sizes the alignment matrices: a new width
        # must be exported again, not served the old one.
        stamp["alignment_width"] = run.params.c_factors_dim
    if run.uses_alignment and run.params.alignmentApproach == "ridgeRegressGlobalPCs":
        # Ridge matrices exported before the samples were put in MATLAB's order (time fastest) can
        # differ: such exports are planned again (only these; other exports did not change).
        stamp["ridge_sample_order"] = "time-major"
    return stamp


def _loader_stamp(dataset: Any) -> dict[str, str]:
    """The loader's name, and a fingerprint of its code when it is the user's (a Dataset subclass's
    methods, a loader function): editing it is how a lab changes its preprocessing, and the export
    must follow."""
    loader = dataset.loader or registered_loader(dataset.path)  # also one installed by register_loader()
    stamp = {"loader": _callable_name(type(dataset)) + (f"/{_callable_name(loader)}" if loader else "")}
    prints = [code_fingerprint(type(dataset), stop_at=Dataset), code_fingerprint(loader) if loader else ""]
    # Always there (empty for the built-in readers), so that a Dataset subclass that gains code is an
    # edit; bytecode differs between Python versions, so the version is part of it, and so are the
    # fingerprint's rules (see _comparable).
    stamp[LOADER_CODE_KEY] = f"{_FINGERPRINT_KIND}:" + "/".join(prints)
    return stamp


def _callable_name(thing: Any) -> str:
    """module.qualname of a function or class; of a partial, its function and arguments; of any
    other callable object, its class."""
    if isinstance(thing, functools.partial):
        return f"partial({_callable_name(thing.func)}, {thing.args!r}, {sorted(thing.keywords.items())!r})"
    named = thing if hasattr(thing, "__qualname__") else type(thing)
    return f"{getattr(named, '__module__', '?')}.{named.__qualname__}"


def _export_is_current(run: Run, source: dict[str, Any]) -> dict[str, Any] | None:
    """The stored stamp when the export matches the current sources and all its files exist."""
    stored = read_stamp(run.path_common_data)
    if stored is None or _comparable(source, stored.get("source")) != _comparable(stored.get("source"), source):
        return None
    for dataset in run.dataset_names:
        for name in (lfads_file_name(dataset), input_info_file_name(dataset)):
            if not (run.path_common_data / name).is_file():
                return None
    return stored


def _comparable(stamp: Any, other: Any) -> Any:
    """`stamp` without the loader fingerprints that cannot be compared with `other`'s: missing on
    either side (a stamp from before them), or made under different Pythons (bytecode differs; a
    workstation and a cluster on two versions would otherwise re-export in turn) or by other rules
    (an upgrade that follows more of the lab's code must not re-export what nobody edited). Such an export
    counts as current, and its stamp then gets this Python's fingerprint, against which the next
    edit is seen."""
    mine = stamp.get("datasets") if isinstance(stamp, dict) else None
    theirs = other.get("datasets") if isinstance(other, dict) else None
    if not isinstance(mine, list) or not isinstance(theirs, list) or len(mine) != len(theirs):
        return stamp

    def python_of(entry: Any) -> str | None:
        code = entry.get(LOADER_CODE_KEY) if isinstance(entry, dict) else None
        return code.split(":", 1)[0] if isinstance(code, str) else None

    datasets = [entry if not isinstance(entry, dict) or (python_of(entry) is not None and python_of(entry) == python_of(twin))
                else {k: v for k, v in entry.items() if k != LOADER_CODE_KEY}
                for entry, twin in zip(mine, theirs, strict=True)]
    return {**stamp, "datasets": datasets}


def _plan_export(run: Run, source: dict[str, Any], cache: _CountsCache) -> _ExportPlan:
    params = run.params
    sequences, rebins = _counts_and_rebins(run, EXPORT_MODE, cache)
    bins = {d.name: s.n_time // r for d, s, r in zip(run.spec.datasets, sequences, rebins, strict=True)}
    if min(bins.values()) == 0:
        index = list(bins.values()).index(0)  # the dataset at fault, not the spec's first
        data = sequences[index]
        problem = (f"trials are shorter than one {params.spikeBinMs:g} ms bin ({read_as(data.counts.shape)}:"
                   f" {data.n_time} bin(s) of {data.bin_width_ms:g} ms)")
        fix = "lower spikeBinMs"
        if data.bin_width_ms < 0.5:  # sub-millisecond input bins are rare; times in seconds are not
            fix = f"is the time vector in seconds (it steps by {data.bin_width_ms:g})? store it in ms, or lower spikeBinMs"
        elif data.n_time == 1:
            fix = "store the counts as trials×channels×time with each trial's bins (one bin per trial was read), or lower spikeBinMs"
        raise ManagerError(run.spec.datasets[index].path, problem, fix)
    if len(set(bins.values())) > 1:
        raise ManagerError(run.spec.datasets[0].path, f"run spec {run.spec.name!r} mixes trial lengths after rebinning {bins}",
                           "trim every dataset of a stitched run to the same duration")
    alignment, png = None, None
    if run.uses_alignment:
        for_alignment, alignment_rebins = sequences, rebins
        if any(dataset.uses_different_data_for_alignment(run) for dataset in run.spec.datasets):
            for_alignment, alignment_rebins = _counts_and_rebins(run, ALIGNMENT_MODE, cache)
            for dataset, exported, aligned in zip(run.spec.datasets, sequences, for_alignment, strict=True):
                if aligned.n_channels != exported.n_channels:  # the read-in maps the exported channels
                    raise ManagerError(dataset.path, f"its alignment data has {aligned.n_channels} channels but its exported"
                                       f" data {exported.n_channels}", "give load_counts(run, 'alignment') the same"
                                       " channels as load_counts(run, 'export'), in the same order")
        alignment = compute_alignment(for_alignment, alignment_rebins, int(params.c_factors_dim), params.alignmentApproach,
                                      params.alignmentExtraArgs, sources=[d.path for d in run.spec.datasets])
        png = plot_alignment_reconstruction(alignment, run.dataset_names)
    counts = {d.name: {"n_trials": s.n_trials, "n_ext": 0 if s.external_inputs is None else int(s.external_inputs.shape[1])}
              for d, s in zip(run.spec.datasets, sequences, strict=True)}
    per_dataset = {}
    for index, (dataset, data, rebin) in enumerate(zip(run.spec.datasets, sequences, rebins, strict=True)):
        matrices = alignment.alignments[index] if alignment else None
        per_dataset[dataset.name] = lfads_arrays(data, rebin, int(params.trainToTestRatio), matrices)
    return _ExportPlan(run, sequences, rebins, alignment, png, {"source": source, "datasets": counts}, per_dataset,
                       arrays_digest(per_dataset))


def _counts_and_rebins(run: Run, mode: str, cache: _CountsCache) -> tuple[list[SequenceData], list[int]]:
    """Each dataset's counts for `mode`, and the factor that sums its input bins into spikeBinMs bins."""
    sequences = [_counts(dataset, run, mode, cache) for dataset in run.spec.datasets]
    rebins = [rebin_factor(run.params.spikeBinMs, data.bin_width_ms, dataset.path)
              for dataset, data in zip(run.spec.datasets, sequences, strict=True)]
    return sequences, rebins


def _counts(dataset: Dataset, run: Run, mode: str, cache: _CountsCache) -> SequenceData:
    """The dataset's counts, loaded once per prepare: once in all when its load_counts ignores the run
    (the default, or an override without parameters), else once per data hash and mode."""
    arguments = _hook_arguments(dataset, run, mode)
    key = (dataset.name, run.params.data_hash if arguments else "", mode if len(arguments) > 1 else EXPORT_MODE)
    if key not in cache:
        cache[key] = _as_sequence(dataset.load_counts(*arguments), dataset)
    return cache[key]


def _as_sequence(loaded: object, dataset: Dataset) -> SequenceData:
    """An override's result: SequenceData, or the loaded fields (a mapping), checked the same way."""
    if isinstance(loaded, SequenceData):
        return loaded
    if isinstance(loaded, Mapping):
        return sequence_from_fields(loaded, dataset.path)
    raise ManagerError(dataset.path, f"{type(dataset).__name__}.load_counts returned {type(loaded).__name__}, not SequenceData",
                       "return sequence_from_fields(fields, self.path) (manager.sequence), or the fields as a dict")


def _hook_arguments(dataset: Dataset, run: Run, mode: str) -> tuple[Any, ...]:
    """What this dataset's load_counts takes of (run, mode): both, the run alone, or nothing."""
    hook = type(dataset).load_counts
    if hook is Dataset.load_counts:
        return ()
    try:
        signature = inspect.signature(dataset.load_counts)
    except (TypeError, ValueError):
        return ()
    for arguments in ((run, mode), (run,), ()):
        try:
            signature.bind(*arguments)
            return arguments
        except TypeError:
            continue
    raise ManagerError(dataset.path, f"{type(dataset).__name__}.load_counts{signature} cannot be called with (run, mode),"
                       " (run) or no arguments", "define it as load_counts(self, run=None, mode='export')")


def _content_unchanged(plan: _ExportPlan) -> bool:
    """The export on disk holds what `plan` would write (same datasets, same arrays)."""
    data_dir = plan.run.path_common_data
    stored = read_stamp(data_dir)
    history = (stored or {}).get(HISTORY_KEY)
    if isinstance(history, list) and history and isinstance(history[-1], list) and history[-1]:
        return bool(history[-1][0] == plan.digest)
    return digest_of_files({name: data_dir / lfads_file_name(name) for name in plan.per_dataset}) == plan.digest


def _check_trials(run: Run, counts: dict[str, dict[str, int]]) -> None:
    params = run.params
    batch, ratio = int(params.c_batch_size), int(params.trainToTestRatio)
    # LFADS cuts each split into batches, so each must hold one. (The original warned below
    # c_batch_size × (trainToTestRatio+1) trials, which can refuse datasets whose splits both do.)
    splits = {d.name: tuple(part.size for part in split_indices(counts[d.name]["n_trials"], ratio)) for d in run.spec.datasets}
    smallest = min(min(split) for split in splits.values())
    if smallest < batch:
        # The dataset with the fewest, and a fix that suits every dataset of the run, not only that one.
        dataset = min(run.spec.datasets, key=lambda d: min(splits[d.name]))
        train, valid = splits[dataset.name]
        others = [d.name for d in run.spec.datasets if d is not dataset and min(splits[d.name]) < batch]
        also = f"; {', '.join(others)} too" if others else ""
        more = "use a dataset with more trials"
        raise ManagerError(
            dataset.path,
            f"{counts[dataset.name]['n_trials']} trials are too few for c_batch_size={batch} with trainToTestRatio={ratio}:"
            f" they split into {train} training and {valid} validation trials, and each split must hold"
            f" a batch (run {run.rel_dir}{also})",
            f"lower c_batch_size to at most {smallest} or {more}" if smallest > 0 else more,
        )
    for dataset in run.spec.datasets:
        info = counts[dataset.name]
        if info["n_ext"] != params.c_ext_input_dim:
            raise ManagerError(dataset.path, f"data has {info['n_ext']} external inputs but c_ext_input_dim={params.c_ext_input_dim}",
                               "set c_ext_input_dim to the number of external inputs")


# ---- phase 3 ------------------------------------------------------------------------------
def _stamped_dataset_names(stamp: dict[str, Any] | None) -> set[str]:
    """Datasets an earlier export of this folder wrote (so their files are ours to remove)."""
    if not isinstance(stamp, dict):
        return set()
    names = set(stamp.get("datasets") or {})
    source = stamp.get("source")
    if isinstance(source, dict):
        names |= {d.get("name") for d in source.get("datasets") or [] if isinstance(d, dict)}
    return {name for name in names if isinstance(name, str)}


def _remove_stale_exports(plan: _ExportPlan, previous: dict[str, Any] | None) -> list[Path]:
    """Files of an earlier export of this folder (its stamp: `previous`) for datasets the run spec no
    longer has (and its alignment plot when alignment is off now); files the stamp does not name are
    left alone."""
    data_dir = plan.run.path_common_data
    if previous is None:
        return []
    stale = [data_dir / name(dataset) for dataset in sorted(_stamped_dataset_names(previous) - set(plan.run.dataset_names))
             for name in (lfads_file_name, input_info_file_name)]
    if plan.alignment is None:
        stale.append(data_dir / ALIGNMENT_PLOT_FILE)
    removed = []
    for path in stale:
        if path.is_file() and not path.is_symlink():
            path.unlink()
            removed.append(path)
    return removed


def _write_export(plan: _ExportPlan, force: bool) -> tuple[list[Path], list[Path]]:
    """(files written, stale files removed)."""
    run = plan.run
    data_dir = run.path_common_data
    data_dir.mkdir(parents=True, exist_ok=True)
    per_dataset = plan.per_dataset
    h5_paths = {name: data_dir / lfads_file_name(name) for name in per_dataset}
    # Read before anything is removed or replaced: without a history, what the old files held
    # (for the datasets the old export had) is what a trained run learned from.
    previous = read_stamp(data_dir)
    history = (previous or {}).get(HISTORY_KEY)
    on_disk = None
    if not history:
        old_names = _stamped_dataset_names(previous) or set(per_dataset)
        on_disk = digest_of_files({name: data_dir / lfads_file_name(name) for name in sorted(old_names)})
        plan.unjudged = on_disk is None
    # Until the final stamp, the folder says an export is under way: one killed midway is then
    # exported again and judged as changed, never taken as current by its old stamp.
    write_if_changed(data_dir / EXPORT_STAMP_FILE,
                     json.dumps(in_progress_stamp(previous, plan.stamp["datasets"], on_disk, time.time()), indent=1, sort_keys=True) + "\n")
    # Before the new stamp is written: the old one is the record of which files were ours.
    removed = _remove_stale_exports(plan, previous)
    written = []
    for dataset, data in zip(run.spec.datasets, plan.sequences, strict=True):
        if write_lfads_h5(h5_paths[dataset.name], per_dataset[dataset.name], force):
            written.append(h5_paths[dataset.name])
        info_path = data_dir / input_info_file_name(dataset.name)
        fields = input_info_fields(data, int(run.params.trainToTestRatio), run.params.data_hash, float(run.params.spikeBinMs))
        if write_input_info(info_path, fields, force):
            written.append(info_path)
    if plan.alignment_png is not None and write_if_changed(data_dir / ALIGNMENT_PLOT_FILE, plan.alignment_png, force=force):
        written.append(data_dir / ALIGNMENT_PLOT_FILE)
    # Times from the file system, the clock that also stamps LFADS's output files. The folder's
    # mtime covers a spec that only lost a dataset (its other files stay as they were).
    since = max(path.stat().st_mtime for path in [data_dir, *h5_paths.values()])
    plan.stamp[HISTORY_KEY] = updated_history(history, plan.digest, on_disk, since)
    write_if_changed(data_dir / EXPORT_STAMP_FILE, json.dumps(plan.stamp, indent=1, sort_keys=True) + "\n")
    return written, removed


# ---- phase 4 ------------------------------------------------------------------------------
def _link(entry: Path, target: str, force: bool) -> bool:
    """Point `entry` at `target` (relative); returns True when it had to be (re)made."""
    if entry.is_symlink() and os.readlink(entry) == target and not force:
        return False
    # A name of our own (pid + random), so two prepare() runs on one tree cannot collide.
    tmp = entry.with_name(f".{entry.name}.{os.getpid()}.{secrets.token_hex(4)}.link-tmp")
    try:
        os.symlink(target, tmp)
        os.replace(tmp, entry)  # atomic: the entry is never missing
    except OSError as error:  # symlink() names the target, not the link being made
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise type(error)(error.errno, error.strerror, str(entry)) from None
    return True


def _written_by_prepare(path: Path) -> bool:
    """A runqueue.json that prepare wrote (it says so); one written by hand is left alone."""
    try:
        declared = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(declared, dict) and declared.get(RESOURCES_WRITER_KEY) == RESOURCES_WRITER


def _resources(collection: RunCollection) -> str | None:
    declared: dict[str, Any] = {}
    if collection.gpu_memory_mb != DEFAULT_MEMORY_MB:
        declared["memory_mb"] = collection.gpu_memory_mb
    if collection.time_limit not in (None, ""):
        declared["time_limit"] = collection.time_limit
    if not declared:
        return None
    return json.dumps(declared | {RESOURCES_WRITER_KEY: RESOURCES_WRITER}, sort_keys=True) + "\n"


_ScriptCache = dict[tuple[str, int], dict[str, str]]


def _step_scripts(run: Run, cache: _ScriptCache) -> dict[str, str]:
    """The three step scripts; the same for every spec with this param set and dataset count."""
    key = (run.params.param_hash, run.n_datasets)
    if key not in cache:
        python, n = run.collection.python, run.n_datasets
        cache[key] = {
            TRAIN_SCRIPT: train_script(run.params, n, python),
            POSTERIOR_SCRIPT: posterior_mean_script(run.params, n, python),
            WRITE_PARAMS_SCRIPT: write_model_params_script(run.params, n, python),
        }
    return cache[key]


def _write_run(run: Run, force_links: bool, resources: str | None, cache: _ScriptCache,
               resources_ours: bool, record: WrittenFiles, on_note: Callable[[str], None]) -> list[Path]:
    """Run-folder files are regenerated from the collection on every prepare(), so they are
    written atomically but without fsync (a crash leaves, at worst, a file prepare() rewrites).
    `resources_ours`: the run's runqueue.json is there and prepare wrote it. A generated file edited
    since prepare wrote it is set aside as `.orig` first (`record`)."""
    def write(path: Path, text: str, mode: int = 0o644) -> bool:
        return record.write(path, text, mode, durable=False, on_note=on_note)

    written = []
    run.paths.lfads_input.mkdir(parents=True, exist_ok=True)
    for name, target in run.symlink_targets().items():
        if _link(run.paths.lfads_input / name, target, force_links):
            written.append(run.paths.lfads_input / name)
    if resources is not None and write(run.paths.resources, resources):
        written.append(run.paths.resources)
    elif resources is None and resources_ours:
        run.paths.resources.unlink()  # back to the defaults: a stale memory or time limit would still apply
        written.append(run.paths.resources)
    # lfads_train.sh last: its appearing is what makes a folder a run to a watching queue, which
    # must then find the inputs, the declared memory and the steps it chains (it plans only the
    # step scripts that exist when the run starts).
    scripts = _step_scripts(run, cache)
    for name in sorted(scripts, key=lambda name: name == TRAIN_SCRIPT):
        if write(run.path / name, scripts[name], SCRIPT_MODE):
            written.append(run.path / name)
    if os.path.lexists(run.path / RETIRED_TRAIN_SCRIPT):  # back in the experiment (an unlink would fail on a read-only disk)
        (run.path / RETIRED_TRAIN_SCRIPT).unlink()
    return written


def _remove_stale_links(run: Run) -> list[Path]:
    """Links prepare made for datasets the run spec no longer has: LFADS loads every lfads* file
    in lfadsInput/, so a leftover link would train the model on a dataset the spec dropped.
    (A trained run is then stale: the spec's export digest changed, see export_history.)"""
    stale, _ = _stray_inputs(run)
    for entry in stale:
        entry.unlink()
    return stale


# ---- phase 5 ------------------------------------------------------------------------------
# What a collection file looks like when prepare may replace it: one it wrote, or the MATLAB tool's.
_GENERATED_SIGNS = {
    SUMMARY_FILE: ('RunCollection "',),
    TENSORBOARD_SCRIPT: ("# TensorBoard over every run of this collection", "tensorboard --logdir="),
    COLLECTION_QUEUE_SCRIPT: ('"""Run every pending LFADS run of this collection',),
}


def _set_aside_foreign(path: Path) -> str | None:
    """A file of the user's where prepare writes one of its own is renamed to `<name>.orig` (the
    first free such name), never overwritten; -> the note saying so."""
    try:
        with open(path, "rb") as existing:
            head = existing.read(4096).decode("utf-8", "replace")
    except OSError:  # absent, or unreadable: writing it says what is wrong
        return None
    if any(sign in head for sign in _GENERATED_SIGNS[path.name]):
        return None
    aside = set_aside(path)
    return f"note: {path} was not written by lfads-manager; it is kept as {aside.name} and replaced by the generated one"


def write_collection_files(collection: RunCollection, only_summary: bool = False,
                           on_note: Callable[[str], None] | None = None, record: WrittenFiles | None = None) -> bool:
    """summary.txt (and launch_tensorboard.sh, run_lfads.py); `record`: prepare's, saved by it (else
    this call keeps its own)."""
    collection.path.mkdir(parents=True, exist_ok=True)
    files = {SUMMARY_FILE: (summary_text(collection), 0o644)}
    if not only_summary:
        rel_dirs = [run.rel_dir for run in collection.runs]
        files[TENSORBOARD_SCRIPT] = (tensorboard_script(rel_dirs, collection.python), SCRIPT_MODE)
        files[COLLECTION_QUEUE_SCRIPT] = (queue_script(collection.python), SCRIPT_MODE)
    changed = False
    notes: list[str] = []
    with contextlib.nullcontext(record) if record is not None else WrittenFiles(collection.path) as writing:
        for name, (text, mode) in files.items():
            changed |= writing.write(collection.path / name, text, mode, on_note=notes.append, foreign=_set_aside_foreign)
    for note in notes:
        if on_note is None:
            warnings.warn(note, UserWarning, stacklevel=3)
        else:
            on_note(note)
    return changed


def prepare_collection(collection: RunCollection, regenerate: bool = False,
                       progress: Callable[[str], None] | None = None, prune: bool = False) -> PrepareReport:
    report = PrepareReport()
    runs = collection.runs
    if not runs:
        raise ManagerError(collection.path, "the collection has no runs", "add at least one param set and one run spec")
    started = time.perf_counter()
    with collection_lock(collection.path) as locked:
        _check_obstacles(runs)
        report.files_removed += remove_temp_files(_prepare_folders(collection), locked)
        export_seconds = _prepare_locked(collection, regenerate, progress, report)
        _handle_departed(collection, prune, progress, report)
    report.export_seconds = export_seconds
    report.other_seconds = time.perf_counter() - started - export_seconds
    _say(progress, f"prepared {len(runs)} runs in {collection.path}")
    return report


def _handle_departed(collection: RunCollection, prune: bool, progress: Callable[[str], None] | None,
                     report: PrepareReport) -> None:
    """Name the unfinished runs that left the experiment (a queue would still train them); retire them
    when asked to prune."""
    pending = pending_departed_runs(collection.path, [run.path for run in collection.runs])
    retired: list[Path] = []
    running: list[Path] = []
    if prune and pending:
        retired, running = prune_departed(pending)
        report.files_written += [folder / RETIRED_TRAIN_SCRIPT for folder in retired]
    for note in departed_notes(collection.path, pending, retired, running, prune):
        _note(report, progress, note)


def _prepare_folders(collection: RunCollection) -> list[tuple[Path, Callable[[str], bool]]]:
    """Each folder prepare writes into, with which of its file names are prepare's."""
    in_collection = {SUMMARY_FILE, TENSORBOARD_SCRIPT, COLLECTION_QUEUE_SCRIPT}
    in_run = {TRAIN_SCRIPT, POSTERIOR_SCRIPT, WRITE_PARAMS_SCRIPT, RESOURCES_FILE}
    folders: list[tuple[Path, Callable[[str], bool]]] = [(collection.path, in_collection.__contains__)]
    for run in collection.runs:
        folders.append((run.path, in_run.__contains__))
        folders.append((run.paths.lfads_input, lambda name: True))  # only prepare writes in there
    for data_dir in {run.path_common_data for run in collection.runs}:
        folders.append((data_dir, lambda name: name.startswith((LFADS_FILE_PREFIX, INPUT_INFO_PREFIX))
                        or name in (EXPORT_STAMP_FILE, ALIGNMENT_PLOT_FILE)))
    return folders


def _prepare_locked(collection: RunCollection, regenerate: bool, progress: Callable[[str], None] | None,
                    report: PrepareReport) -> float:
    """Phases 2-5 under the collection lock; the seconds spent exporting."""
    runs = collection.runs
    groups: dict[tuple[str, str], Run] = {}
    for run in runs:
        first = groups.setdefault(_key(run), run)
        if run.uses_alignment and first.params.c_factors_dim != run.params.c_factors_dim:
            # version < 20171107 leaves c_factors_dim out of the data hash (as MATLAB then did), so
            # one alignment export of one width would serve both; the wider model could not load it.
            raise ManagerError(collection.path, f"{first.params.param_hash_name} and {run.params.param_hash_name} share"
                               f" {run.params.data_hash_name}/{run.spec.name} but differ in c_factors_dim"
                               f" ({first.params.c_factors_dim} vs {run.params.c_factors_dim}), which sizes its"
                               f" alignment matrices (version {run.params.version} keeps it out of the data hash)",
                               "set version = 20171107 or later, or give those param sets one c_factors_dim")
    sources = {key: _source_stamp(run) for key, run in groups.items()}
    stamps = {key: _export_is_current(run, sources[key]) for key, run in groups.items()}
    # No queue may start a run whose export is redone (its sources changed) until prepare is done: a
    # read lock on each (supervisors need the write lock). Those already running must not get new
    # content (LFADS would sample from other data than it trained on); touched or copied files with
    # the same content leave them running.
    changing = set(groups) if regenerate else {key for key, stamp in stamps.items() if stamp is None}
    # Every run folder reading an export: the collection's, and those of param sets that left it but
    # still link there (one export serves every param set with its data hash).
    linked = {key: _run_folders_reading(run) for key, run in groups.items()}  # one look at the tree's links
    readers = {key: {run.path for run in runs if _key(run) == key} | set(linked[key]) for key in changing}
    # Saved on leaving, also after a failure: what was written is recorded, so it is not taken for edited.
    with WrittenFiles(collection.path) as record:
        with holding_runs(sorted(set().union(*readers.values()))) as running:
            plans, counts, export_seconds = _plan_exports(groups, sources, stamps, regenerate, progress)
            for note in dict.fromkeys(note for plan in plans for data in plan.sequences for note in data.notes):
                _note(report, progress, note)  # how a file was read (an assumed bin width): once per file
            new_content = {_key(plan.run) for plan in plans if not _content_unchanged(plan)}
            refuse_running([path for path in running if any(path in readers[key] for key in new_content)])
            for run in runs:
                _check_trials(run, counts[_key(run)])
            for plan in plans:
                export_seconds += _write_export_of(plan, regenerate, progress, report)
            for key, stamp in stamps.items():
                if stamp is not None and not regenerate and stamp.get("source") != sources[key]:
                    # current, but its loader fingerprints were missing or made under another Python
                    # (see _comparable): record this Python's from now on
                    write_if_changed(groups[key].path_common_data / EXPORT_STAMP_FILE,
                                     json.dumps({**stamp, "source": sources[key]}, indent=1, sort_keys=True) + "\n")
            resources = _resources(collection)
            scripts: _ScriptCache = {}
            for run in runs:
                present = run.paths.resources.exists()
                ours = present and _written_by_prepare(run.paths.resources)
                hand_written = present and not ours
                report.files_written += _write_run(run, regenerate, None if hand_written else resources, scripts, ours,
                                                   record, lambda note: _note(report, progress, note))
                report.files_removed += _remove_stale_links(run)
                if hand_written:
                    _note(report, progress, _hand_written_note(run, resources))
            # Run folders of param sets that left the experiment but read an export whose content just
            # changed: their inputs are no longer what they were prepared with (other data, a dropped
            # dataset's link left dangling), so the queue must not train them as they are.
            current = {run.path for run in runs}
            for folder in sorted({path for key in new_content for path in readers[key]} - current):
                if retire(folder, "left the experiment and whose inputs changed"):
                    report.files_written.append(folder / RETIRED_TRAIN_SCRIPT)
                    note = (f"note: {folder} left the experiment and its inputs changed, so it will not be trained: its"
                            f" {TRAIN_SCRIPT} is now {RETIRED_TRAIN_SCRIPT} (add its param set and run spec back to"
                            " prepare it again, or delete the folder)")
                    _note(report, progress, note)
        # Done runs of param sets that left the experiment but still link to one of its exports: their
        # results go stale with it just the same.
        departed = [(folder, key, run.path_common_data) for key, run in groups.items()
                    for folder in linked[key] if folder not in current]
        _note_stale_runs(runs, {_key(plan.run) for plan in plans if plan.unjudged}, progress, report, departed)
        write_collection_files(collection, on_note=lambda note: _note(report, progress, note), record=record)
    return export_seconds


def _hand_written_note(run: Run, resources: str | None) -> str:
    """A runqueue.json prepare did not write is kept; what it does depends on whether the queue reads it."""
    where = f"note: {run.paths.resources} has no mark of prepare's (written by hand, or by a version before the mark) and is kept"
    try:
        load_resources(run.paths, DEFAULT_MEMORY_MB, None)  # the queue's own reading of it
    except RunqueueError as error:
        fix = f" ({error.hint})" if error.hint else ""
        return f"{where}, but the queue refuses it and will not start the run ({error.action}); fix it{fix} or delete it"
    asked = "the defaults" if resources is None else "other values ([queue])"
    return (f"{where}: it still declares the run's memory or time limit while the collection asks for {asked};"
            " delete it if it should not")


def _run_folders_reading(run: Run) -> list[Path]:
    """Run folders of the collection (any param set, present in it or not) whose lfadsInput links
    point into `run`'s export folder."""
    export = os.path.realpath(run.path_common_data) + os.sep
    readers = []
    for folder in sorted(run.collection.path.glob(f"param_*/{run.spec.name}")):
        try:
            entries = list(os.scandir(folder / "lfadsInput"))
        except OSError:
            continue
        if any(entry.is_symlink() and os.path.realpath(entry.path).startswith(export) for entry in entries):
            readers.append(folder)
    return readers


def _key(run: Run) -> tuple[str, str]:
    """Runs with one data hash and run spec share one export."""
    return run.params.data_hash, run.spec.name


def _plan_exports(groups: dict[tuple[str, str], Run], sources: dict[tuple[str, str], dict[str, Any]],
                  stamps: dict[tuple[str, str], dict[str, Any] | None], regenerate: bool,
                  progress: Callable[[str], None] | None,
                  ) -> tuple[list[_ExportPlan], dict[tuple[str, str], dict[str, dict[str, int]]], float]:
    """Phase 2: (exports to write, trial counts per export, seconds spent)."""
    cache: _CountsCache = {}
    plans: list[_ExportPlan] = []
    counts: dict[tuple[str, str], dict[str, dict[str, int]]] = {}
    started = time.perf_counter()
    for key, run in groups.items():
        stamp = stamps[key]
        if stamp is not None and not regenerate:
            counts[key] = stamp["datasets"]
            continue
        _say(progress, f"loading {', '.join(run.dataset_names)} for {run.params.data_hash_name}/{run.spec.name}")
        plan = _plan_export(run, sources[key], cache)
        plans.append(plan)
        counts[key] = plan.stamp["datasets"]
    return plans, counts, time.perf_counter() - started


def _write_export_of(plan: _ExportPlan, regenerate: bool, progress: Callable[[str], None] | None,
                     report: PrepareReport) -> float:
    """Phase 3 for one export; the seconds spent."""
    started = time.perf_counter()
    _say(progress, f"exporting {plan.run.params.data_hash_name}/{plan.run.spec.name}")
    written, removed = _write_export(plan, force=regenerate)
    report.files_written += written
    report.files_removed += removed
    report.exported.append(plan.run.path_common_data)
    return time.perf_counter() - started


def _note_stale_runs(runs: list[Run], unjudged: set[tuple[str, str]], progress: Callable[[str], None] | None,
                     report: PrepareReport, departed: list[tuple[Path, tuple[str, str], Path]]) -> None:
    """The notes on trained runs whose data changed since (or cannot be judged); `departed`: (run
    folder, export key, export folder) of param sets no longer in the collection that read an export."""
    stamps: dict[tuple[str, str], dict[str, Any] | None] = {}
    current = [(run.path, _key(run), run.path_common_data) for run in runs]
    for folder, key, data_dir in current + departed:
        if key in unjudged and (folder, key, data_dir) in current and training_started(folder) is not None:
            note = (f"note: {folder} is trained, but its export was made again with no record of the data it"
                    f" learned from; if that data changed, retrain it: {retrain_hint(folder)}")
            _note(report, progress, note)
        if key not in stamps:  # one export serves every param set with this data hash
            stamps[key] = read_stamp(data_dir)
        changed = stale_since(folder, stamps[key])
        if changed is not None:  # said on every prepare until the run is retrained
            report.stale_runs.append(folder)
            note = (f"note: {folder} was trained before its data changed ({describe_time(changed)}: other trials,"
                    f" values or datasets for spec {key[1]!r}); its results do not match its input. Retrain it:"
                    f" {retrain_hint(folder)}")
            _note(report, progress, note)
