"""What a dataset hands to the export: counts, time, conditions, truth (`generateCountsForDataset`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from manager.errors import ManagerError

COUNT_KEYS = ("counts", "spikes")
TIME_KEYS = ("timeVecMs", "timeMs", "time_ms")
CONDITION_KEYS = ("conditionId", "condition_id")
TRUTH_KEYS = ("truth", "true_rates")
TRUTH_BY_CONDITION_KEY = "true_rates_by_condition"
EXT_INPUT_KEYS = ("externalInputs", "external_inputs")
# A scalar bin width, for files without a time vector (also read from an HDF5 file's root attributes).
BIN_WIDTH_KEYS = ("binWidthMs", "binSizeMs", "dtMs")
# Read by Dataset.load_info, so not "unused" either.
INFO_KEYS = ("subject", "datetime")


@dataclass(frozen=True)
class SequenceData:
    """One dataset's trials at the input binning.

    counts:          nTrials x nChannels x nTime spike counts (whole numbers, no NaN, >= 0)
    time_ms:         nTime, the time of each input bin (ms); the bin width is its step
    condition_id:    nTrials numbers or strings, or None (only used for alignment)
    truth:           nTrials x nChannels x nTime true rates per input bin, or None
    external_inputs: nTrials x nExt x nTime, or None
    """

    counts: np.ndarray
    time_ms: np.ndarray
    bin_width_ms: float
    condition_id: np.ndarray | None = None
    truth: np.ndarray | None = None
    external_inputs: np.ndarray | None = None
    notes: tuple[str, ...] = ()  # what the user must hear about how the file was read (prepare prints them)

    @property
    def n_trials(self) -> int:
        return int(self.counts.shape[0])

    @property
    def n_channels(self) -> int:
        return int(self.counts.shape[1])

    @property
    def n_time(self) -> int:
        return int(self.counts.shape[2])


def _first(fields: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    return _first_item(fields, keys)[1]


def _first_item(fields: Mapping[str, Any], keys: tuple[str, ...]) -> tuple[str, Any]:
    for key in keys:
        if key in fields:
            return key, fields[key]
    return keys[0], None


def _numbers(raw: Any, key: str, path: Path, what: str, dtype: type | None = None) -> np.ndarray:
    """`raw` as a numeric array, or a one-line error naming the field (strings, ragged cells, ...)."""
    try:
        array = np.asarray(raw, dtype=dtype)
    except (ValueError, TypeError) as error:
        ragged = "inhomogeneous" in str(error)
        problem = f"{key} is not one array (trials of different lengths?)" if ragged else f"{key} must be numbers, got {_short(raw)}"
        raise ManagerError(path, problem, f"store {key} as {what}") from None
    if array.dtype.kind not in "biuf":
        raise ManagerError(path, f"{key} must be numbers, got {_short(raw)}", f"store {key} as {what}")
    return array


def _short(value: Any) -> str:
    if isinstance(value, str):
        return repr(value[:40])
    if isinstance(value, np.ndarray):
        return f"an array of dtype {value.dtype}"
    return "a cell array" if isinstance(value, list) else type(value).__name__


def _cell_label(item: Any) -> str | float:
    """One cell of a conditionId cell array: text stays text, a 1x1 number is that number, an
    empty cell is the empty label ("no condition")."""
    if isinstance(item, str):
        return item
    array = np.asarray(item)
    if array.size == 0:
        return ""
    if array.size == 1 and array.dtype.kind in "biuf":
        return float(array.item())
    return str(item)


def read_as(shape: tuple[int, ...]) -> str:
    """How the counts were understood, for messages about their shape."""
    return f"counts read as trials×channels×time = {tuple(shape)}"


_AXES = ("trials", "channels", "time")


def orientation_fix(path: Path, shape: tuple[int, ...], axis: int, length: int) -> str | None:
    """When `length` entries (of conditionId or the time vector) belong on counts axis `axis` but match
    another axis: the transposition(s) that put that one there, and how each format is oriented."""
    found = [other for other in range(len(shape)) if other != axis and shape[other] == length]
    if len(shape) != 3 or not found:
        return None
    source = max(found, key=lambda other: abs(other - axis))  # (12, 60, 60) with 60 trials: channels×time×trials
    moved = [other for other in range(3) if other != source]
    moved.insert(axis, source)
    orders = [tuple(moved)]
    if {axis, source} == {0, 2}:
        orders.append((2, 1, 0))  # all reversed: MATLAB's order seen from numpy, or the other way round
    matlab = path.suffix.lower() == ".mat"
    guesses = " or ".join(
        f"{'×'.join(_AXES[order.index(p)] for p in range(3))} (numpy: {'counts.T' if order == (2, 1, 0) else f'counts.transpose{order}'}"
        + (f", MATLAB: permute(counts, [{' '.join(str(p + 1) for p in order)}])" if matlab else "") + ")" for order in orders)
    where = (".mat files are read in MATLAB's order, so a v7.3 file written with h5py must hold the reversed array, counts.T"
             if matlab else f"{path.suffix or 'such'} files are read in numpy order"
             + (" (MATLAB's h5write reverses the dimensions)" if path.suffix.lower() in (".h5", ".hdf5") else ""))
    return f"are the counts {guesses}? store them as trials×channels×time; {where}"


def _condition_vector(raw: Any, n_trials: int, path: Path, shape: tuple[int, ...] = ()) -> np.ndarray | None:
    if raw is None:
        return None
    if isinstance(raw, list):
        labels = [_cell_label(item) for item in raw]
        # A cell of numbers (num2cell(ids)) holds numeric conditions, not text labels; its empty
        # cells become NaN, the numeric "no condition".
        if any(isinstance(label, float) for label in labels) and all(isinstance(label, float) or label == "" for label in labels):
            values = np.array([np.nan if label == "" else label for label in labels], dtype=np.float64)
        else:
            values = np.array(labels, dtype=object)
    else:
        values = np.asarray(raw).ravel()
    if values.size != n_trials:
        read = f" ({read_as(shape)})" if shape else ""
        raise ManagerError(path, f"conditionId has {values.size} entries for {n_trials} trials{read}",
                           (orientation_fix(path, shape, 0, values.size) if shape else None) or "give one condition per trial")
    return values


def _bin_width(time: np.ndarray, n_time: int, path: Path, shape: tuple[int, ...] = (),
               given_width: float | None = None) -> tuple[np.ndarray, float]:
    """The first trial's time vector and the one bin width every trial must share. With one bin
    per trial the times say nothing about the width: the given one holds, else 1 ms."""
    if time.size == n_time:
        rows = time.reshape(1, n_time)
    elif time.ndim == 2 and time.shape[1] == n_time:
        rows = time  # one time vector per trial
    elif time.ndim == 2 and time.shape[0] == n_time:
        rows = time.T
    else:
        read = f" ({read_as(shape)})" if shape else ""
        fix = orientation_fix(path, shape, 2, time.shape[-1]) if shape and time.ndim else None
        raise ManagerError(path, f"time vector of shape {time.shape} does not match {n_time} time bins{read}",
                           fix or "store one time per bin")
    if n_time < 2:
        return rows[0].astype(np.float64), given_width or 1.0
    steps = np.diff(rows.astype(np.float64), axis=-1)
    if not np.isfinite(steps).all():
        raise ManagerError(path, "NaN or inf in the time vector", "store the time of every bin in ms")
    if steps.min() <= 0:
        raise ManagerError(path, f"the time vector does not increase (steps from {steps.min():g} to {steps.max():g} ms)",
                           "store the bin times in increasing order")
    width = float(steps.flat[0])
    # Relative: times far from zero (a session clock in ms, converted from seconds) carry rounding
    # error far above any absolute tolerance, yet their bins are one width.
    if not np.allclose(steps, width, rtol=1e-6, atol=0.0):
        raise ManagerError(
            path, f"inconsistent bin widths in the time vector (from {steps.min():.9g} to {steps.max():.9g} ms)",
            "resample every trial to one common bin width",
        )
    return rows[0].astype(np.float64), width


def sequence_from_fields(fields: Mapping[str, Any], path: Path) -> SequenceData:
    """Map loaded variables to SequenceData and refuse data the export cannot use."""
    counts_key, counts_raw = _first_item(fields, COUNT_KEYS)
    if counts_raw is None:
        raise ManagerError(path, f"no spike counts found (looked for {', '.join(COUNT_KEYS)}; the file has {_contents(fields)})",
                           "save the counts as 'counts' (trials x channels x time)" + _struct_fix(fields))
    counts = _numbers(counts_raw, counts_key, path, "one trials x channels x time array, every trial the same length")
    notes: list[str] = []
    if counts.ndim == 2:
        if counts.shape[0]:
            notes.append(f"note: {path}: {counts_key} is 2-D {counts.shape}, read as trials×channels with one time bin each;"
                         " store trials×channels×time if the trials have more bins")
        counts = counts[:, :, None] if counts.shape[0] else counts.reshape(0, 0, 0)
    if counts.ndim != 3 or counts.shape[0] == 0:
        raise ManagerError(path, f"counts must be a non-empty trials x channels x time array, got shape {counts.shape}", "reshape the counts")
    if 0 in counts.shape[1:]:
        what = "channels" if counts.shape[1] == 0 else "time bins"
        raise ManagerError(path, f"counts of shape {counts.shape} (trials x channels x time) have no {what}",
                           "keep at least one channel and one time bin per trial (were all units filtered out?)")
    check_counts(counts, path)
    n_trials, _, n_time = counts.shape
    time_key, time_raw = _first_item(fields, TIME_KEYS)
    width_key, width_raw = _first_item(fields, BIN_WIDTH_KEYS)
    given_width = None if width_raw is None else _scalar_width(width_raw, width_key, path)
    if time_raw is None:
        time = np.arange(1, n_time + 1, dtype=np.float64) * (given_width or 1.0)
        if given_width is None:
            unused = unused_fields(fields)
            notes.append(f"note: {path}: no time vector ({', '.join(TIME_KEYS)}) nor bin width ({', '.join(BIN_WIDTH_KEYS)}),"
                         " so its bins are taken to be 1 ms wide" + (f"; variables not used: {', '.join(unused)}" if unused else "")
                         + "; store binWidthMs (or a time vector) if they are not")
    else:
        time = _numbers(time_raw, time_key, path, "the time of each bin in ms", np.float64)
        if n_time == 1 and given_width is None:
            notes.append(f"note: {path}: one time bin per trial, so {time_key} cannot tell the bin width; it is taken"
                         f" to be 1 ms; store binWidthMs if it is not")
    time_ms, width = _bin_width(time, n_time, path, counts.shape, given_width)
    if given_width is not None and time_raw is not None and n_time > 1 and not np.isclose(width, given_width, rtol=1e-6, atol=0.0):
        raise ManagerError(path, f"{width_key} = {given_width:g} but {time_key} steps by {width:g} ms",
                           f"make them agree, or drop one of {width_key} and {time_key}")
    condition_id = _condition_vector(_first(fields, CONDITION_KEYS), n_trials, path, counts.shape)
    truth = _truth(fields, counts.shape, condition_id, path)
    ext_key, ext = _first_item(fields, EXT_INPUT_KEYS)
    if ext is not None:
        ext = _numbers(ext, ext_key, path, "trials x inputs x time numbers", np.float64)
        if ext.ndim == 2:
            ext = ext[:, None, :]
        if ext.shape[0] != n_trials or ext.shape[2] != n_time:
            raise ManagerError(path, f"externalInputs shape {ext.shape} does not match counts {counts.shape}", "store trials x inputs x time")
        _require_finite(ext, ext_key or "externalInputs", path)
    return SequenceData(counts, time_ms, width, condition_id, truth, ext, tuple(notes))


def _contents(fields: Mapping[str, Any]) -> str:
    """The file's variables, a struct's fields included: what to look at when the counts are missing."""
    if not fields:
        return "no variables"
    described = []
    for key, value in fields.items():
        names = _struct_fields(value)
        described.append(f"struct {key!r} with fields {', '.join(names)}" if names else repr(key))
    return ", ".join(described)


def _struct_fields(value: Any) -> tuple[str, ...]:
    """The field names of a MATLAB struct as scipy loads it (a record array); () for anything else."""
    return getattr(getattr(value, "dtype", None), "names", None) or ()


def _struct_fix(fields: Mapping[str, Any]) -> str:
    for key, value in fields.items():
        names = _struct_fields(value)
        if any(name in COUNT_KEYS for name in names):
            return f" (the fields of struct {key!r} go in as variables with MATLAB's save(file, '-struct', {key!r}))"
    return ""


def unused_fields(fields: Mapping[str, Any]) -> list[str]:
    """The file's variables that the export does not read (sorted)."""
    known = {*COUNT_KEYS, *TIME_KEYS, *CONDITION_KEYS, *TRUTH_KEYS, TRUTH_BY_CONDITION_KEY, *EXT_INPUT_KEYS,
             *BIN_WIDTH_KEYS, *INFO_KEYS}
    return sorted(key for key in fields if key not in known)


def _scalar_width(raw: Any, key: str, path: Path) -> float:
    """A bin width given as one positive number of ms."""
    value = _numbers(raw, key, path, "one number (the bin width in ms)", np.float64)
    if value.size != 1 or not np.isfinite(value).all() or float(value.ravel()[0]) <= 0:
        raise ManagerError(path, f"{key} must be one positive number of ms, got {value.ravel()[:4].tolist()}",
                           f"store {key} as the bin width in ms, e.g. 10")
    return float(value.ravel()[0])


def _require_finite(values: np.ndarray, key: str, path: Path) -> None:
    """The original (seq_to_lfads) stopped on NaN truth or inputs: LFADS would train on NaN."""
    bad = ~np.isfinite(values)
    if bad.any():
        trial = int(np.argwhere(bad)[0][0]) + 1
        raise ManagerError(path, f"NaN or inf in {key} ({int(bad.sum())} values, the first in trial {trial})",
                           "replace them (or drop those trials) before preparing")


def _truth(fields: Mapping[str, Any], shape: tuple[int, ...], condition_id: np.ndarray | None, path: Path) -> np.ndarray | None:
    truth_key, truth = _first_item(fields, TRUTH_KEYS)
    if truth is not None:
        truth = _numbers(truth, truth_key, path, "numbers with the counts' shape")
        if truth.shape != shape:
            raise ManagerError(path, f"truth shape {truth.shape} differs from counts {shape}", "store truth with the counts' shape")
        _require_finite(truth, truth_key or "truth", path)
        return truth
    by_condition = fields.get(TRUTH_BY_CONDITION_KEY)
    if by_condition is None:
        return None
    by_condition = _numbers(by_condition, TRUTH_BY_CONDITION_KEY, path, "conditions x channels x time numbers")
    if condition_id is None:
        raise ManagerError(path, f"{TRUTH_BY_CONDITION_KEY} needs conditionId", "store conditionId (1-based) next to it")
    try:
        numbers = condition_id.astype(np.float64)
    except (ValueError, TypeError):
        numbers = np.array([np.nan])
    bad = ~np.isfinite(numbers) | (numbers != np.round(numbers))
    if bad.any():
        first = int(np.flatnonzero(bad)[0]) if bad.size == condition_id.size else 0
        raise ManagerError(path, f"{TRUTH_BY_CONDITION_KEY} needs whole-number conditionId, got {condition_id.tolist()[first]!r}"
                           f" (trial {first + 1})",
                           "store conditionId as 1-based condition numbers, or store per-trial truth instead")
    index = numbers.astype(np.int64) - 1
    if by_condition.shape[1:] != shape[1:]:
        raise ManagerError(path, f"{TRUTH_BY_CONDITION_KEY} shape {by_condition.shape} does not fit conditionId and counts {shape}",
                           "store conditions x channels x time with 1-based conditionId")
    if index.size and index.min() < 0:
        lowest = int(numbers.min())
        raise ManagerError(path, f"{TRUTH_BY_CONDITION_KEY} needs 1-based conditionId (row 1 is condition 1), but conditionId"
                           f" has {lowest}{' (0-based?)' if lowest == 0 else ''}",
                           "add 1 to conditionId, or store per-trial truth instead")
    if index.size and index.max() >= by_condition.shape[0]:
        raise ManagerError(path, f"conditionId goes up to {int(numbers.max())} but {TRUTH_BY_CONDITION_KEY} has"
                           f" {by_condition.shape[0]} conditions", "store one row of truth per condition, 1 to the highest conditionId")
    truth = by_condition[index]
    _require_finite(truth, TRUTH_BY_CONDITION_KEY, path)
    return truth


def check_counts(counts: np.ndarray, path: Path) -> None:
    if counts.dtype.kind in "iub":
        if counts.dtype.kind == "i" and counts.size and counts.min() < 0:
            raise ManagerError(path, "negative spike counts", "counts must be >= 0 (spike counts, not rates)")
        return
    if counts.dtype.kind != "f":
        raise ManagerError(path, f"counts have dtype {counts.dtype}", "store spike counts as integers or doubles")
    if np.isnan(counts).any():
        raise ManagerError(path, "NaN in spike counts", "replace NaNs (e.g. drop the affected trials) before preparing")
    if (counts < 0).any():
        raise ManagerError(path, "negative spike counts", "counts must be >= 0 (spike counts, not rates)")
    if not np.isfinite(counts).all():
        raise ManagerError(path, "inf in spike counts", "replace the infinite values (e.g. drop the affected trials) before preparing")
    if (counts != np.round(counts)).any():
        raise ManagerError(path, "spike counts that are not whole numbers", "export counts per bin, not rates")
