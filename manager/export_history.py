"""Which export a trained run learned from, so results are never paired with other data.

An export's *content digest* covers what the model sees: every array of every `lfads_<ds>.h5`
of the run spec, with the dataset names. The export stamp keeps the history of digests with the
time each became current. A run is *stale* when the digest current when its training started is
not the digest now: its posterior means belong to other trials, another order or other datasets.

Touching, copying or re-exporting identical data changes nothing (the digest is of content, not
of files or times), and the check needs no record in the run folder, so deleting `lfadsOutput/`
by hand and retraining clears it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shlex
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from runqueue.layout import DONE_MARKER, LFADS_INPUT, LFADS_OUTPUT

EXPORT_STAMP_FILE = ".export_stamp.json"  # in data_<hash>/<spec>/: the sources, counts and history
HISTORY_KEY = "content_history"  # [[digest, unix time it became current], ...], oldest first
_MAX_HISTORY = 50
# The history entry of an export being written: its files are in flux until the final stamp. An
# export killed midway keeps it (and no `source`), so the next prepare exports again, and runs
# trained or sampled in that window are stale whatever the export then holds.
IN_PROGRESS = "export in progress"


def read_stamp(data_dir: Path) -> dict[str, Any] | None:
    try:
        stamp = json.loads((data_dir / EXPORT_STAMP_FILE).read_text())
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) else None


def stamp_of_input(input_file: Path) -> dict[str, Any] | None:
    """The export stamp next to the file an lfadsInput/ link points at."""
    try:
        return read_stamp(input_file.resolve(strict=True).parent)
    except OSError:
        return None


def arrays_digest(per_dataset: Mapping[str, Mapping[str, np.ndarray]]) -> str:
    """sha256 of the datasets' arrays: names, keys, dtypes, shapes and bytes, in sorted order."""
    digest = hashlib.sha256()
    for name in sorted(per_dataset):
        digest.update(f"dataset {name}\n".encode())
        arrays = per_dataset[name]
        for key in sorted(arrays):
            value = np.ascontiguousarray(arrays[key])
            digest.update(f"{key} {value.dtype.str} {value.shape}\n".encode())
            digest.update(value.tobytes())
    return digest.hexdigest()


def digest_of_files(paths: Mapping[str, Path]) -> str | None:
    """The digest of exported h5 files already on disk (dataset name -> path); None if unreadable."""
    per_dataset: dict[str, dict[str, np.ndarray]] = {}
    try:
        for name, path in paths.items():
            with h5py.File(path, "r") as handle:
                per_dataset[name] = {key: np.asarray(node[()]) for key, node in handle.items() if isinstance(node, h5py.Dataset)}
    except (OSError, ValueError):
        return None
    return arrays_digest(per_dataset)


def _entries(history: Any) -> list[list[Any]]:
    """A stamp's history as a fresh list of [digest, time] pairs (anything else in it is dropped)."""
    return [list(entry) for entry in history or [] if isinstance(entry, list) and len(entry) == 2]


def updated_history(previous: list[list[Any]] | None, digest: str, on_disk: str | None, now: float) -> list[list[Any]]:
    """The history after exporting `digest` at `now`. `on_disk`: the digest of the files replaced,
    consulted only when there is no history yet (an export older than this record, or none)."""
    history = _entries(previous)
    if not history:
        # What was there before counts as current since forever (nothing there, or unreadable:
        # nothing is known, so no run is judged); different new content is current as of now.
        if on_disk is None or on_disk == digest:
            return [[digest, 0.0]]
        return [[on_disk, 0.0], [digest, now]]
    if history[-1][0] != digest:
        history.append([digest, now])
    return history[-_MAX_HISTORY:]


def in_progress_stamp(previous: Mapping[str, Any] | None, datasets: Mapping[str, Any], on_disk: str | None,
                      now: float) -> dict[str, Any]:
    """The stamp written before an export touches its files: not current (no `source`), naming the
    datasets of the old and the new export (their files are the folder's own), its history ending in
    IN_PROGRESS (after the replaced files' digest when there was no history yet)."""
    stamp = {key: value for key, value in (previous or {}).items() if key != "source"}
    old_datasets = stamp.get("datasets")
    stamp["datasets"] = {**(old_datasets if isinstance(old_datasets, dict) else {}), **datasets}
    history = _entries(stamp.get(HISTORY_KEY))
    if not history and on_disk is not None:
        history = [[on_disk, 0.0]]
    stamp[HISTORY_KEY] = [*history, [IN_PROGRESS, now]][-_MAX_HISTORY:]
    return stamp


def export_interrupted(stamp: Mapping[str, Any] | None) -> bool:
    history = (stamp or {}).get(HISTORY_KEY)
    return isinstance(history, list) and bool(history) and isinstance(history[-1], list) and history[-1][:1] == [IN_PROGRESS]


def digest_at(history: list[list[Any]], moment: float) -> str | None:
    """The digest that was current at `moment`; None when the history does not reach back that far."""
    current = None
    for digest, since in history:
        if float(since) <= moment:
            current = digest
    return current


def training_started(run_dir: Path) -> float | None:
    """When the run's current model was created; None for a run never trained.

    LFADS writes hyperparameters-0.txt whenever it starts a model from scratch (a continuation
    writes hyperparameters-N.txt), so its mtime dates the current model even after a first attempt
    died before its first checkpoint. TensorBoard event files carry their creation time in their
    name (events.out.tfevents.<unix time>.<host>...), which survives copies that reset mtimes
    (cp -r, scp): the newest one not after that mtime is the start. Without hyperparameters-0.txt:
    the oldest event file, else the oldest output file, else lfads.done.
    """
    output = run_dir / LFADS_OUTPUT
    named = sorted(_event_file_times(output / "lfads_log"))
    fresh = _mtime(output / "hyperparameters-0.txt")
    if fresh is not None:
        before = [moment for moment in named if moment <= fresh + 1.0]  # names hold whole seconds
        if not named or (before and fresh - before[-1] <= _START_SLACK_S):
            # The name's whole second may fall just before the export the model started on (same
            # second): within a second of hyperparameters-0.txt, that file's mtime is the finer time.
            return before[-1] if before and fresh - before[-1] >= 1.0 else fresh
        # No event file was made when hyperparameters-0.txt was written: its mtime is a copy's (cp -r),
        # and the newest earlier event file may be a later restart's. delete-output empties lfads_log,
        # so its oldest event file is this model's first start.
    if named:
        return named[0]
    try:
        times = [moment for entry in output.iterdir() if entry.is_file() and (moment := _mtime(entry)) is not None]
    except OSError:
        times = []
    return min(times) if times else _mtime(run_dir / DONE_MARKER)


# A start from scratch writes hyperparameters-0.txt and opens its TensorBoard event file within this.
_START_SLACK_S = 120.0


def _event_file_times(log_dir: Path) -> list[float]:
    times = []
    with contextlib.suppress(OSError):
        for event_file in log_dir.glob("events.out.tfevents.*"):
            stamp = event_file.name.split(".")[3]
            if stamp.isdigit():
                times.append(float(stamp))
    return times


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def run_input_stamp(run_dir: Path) -> dict[str, Any] | None:
    """The export stamp of a run folder's input, found through its lfadsInput/ links."""
    try:
        links = sorted(entry for entry in (run_dir / LFADS_INPUT).iterdir() if entry.name.startswith("lfads_"))
    except OSError:
        return None
    for link in links:
        stamp = stamp_of_input(link)
        if stamp is not None:
            return stamp
    return None


def stale_since(run_dir: Path, stamp: Mapping[str, Any] | None) -> float | None:
    """If the run was trained on an export whose content has changed since, when it changed."""
    history = (stamp or {}).get(HISTORY_KEY)
    if not isinstance(history, list) or not history:
        return None  # an export from before this record: nothing known
    started = training_started(run_dir)
    if started is None:
        return None
    current = history[-1][0]
    if digest_at(history, started) != current:
        return float(history[-1][1])
    # Trained on today's data, but posterior files sampled while other data was current (a stale run
    # requeued, then the old data put back) hold other trials' rates.
    for sampled in sorted((run_dir / LFADS_OUTPUT).glob("model_runs_*")):
        written = _mtime(sampled)
        if written is not None and written > started and digest_at(history, written) != current:
            return float(history[-1][1])
    return None


def retrain_hint(run_dir: Path) -> str:
    """What to do about a run whose results do not match its input."""
    retrain = f"lfads-manager delete-output {shlex.quote(str(run_dir))}, then run the queue"
    try:
        dangling = sorted(entry.name for entry in (run_dir / LFADS_INPUT).iterdir()
                          if entry.is_symlink() and not entry.exists())
    except OSError:
        dangling = []
    if dangling:  # a run left from an earlier experiment: prepare no longer keeps its inputs
        return (f"first put its param set and run spec back in the experiment and run lfads-manager prepare"
                f" (its inputs {', '.join(dangling)} are gone), then {retrain}")
    return retrain


def describe_time(moment: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(moment))
