"""Export of one dataset for one run spec: `lfads_<ds>.h5` and `inputInfo_<ds>.mat` (reference §5)."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from manager.atomicio import write_bytes_atomic, write_if_changed
from manager.errors import ManagerError
from manager.matfile import write_mat
from manager.sequence import SequenceData

LFADS_FILE_PREFIX = "lfads_"
INPUT_INFO_PREFIX = "inputInfo_"


def lfads_file_name(dataset_name: str) -> str:
    return f"{LFADS_FILE_PREFIX}{dataset_name}.h5"


def input_info_file_name(dataset_name: str) -> str:
    return f"{INPUT_INFO_PREFIX}{dataset_name}.mat"


def split_indices(n_trials: int, train_to_test_ratio: int) -> tuple[np.ndarray, np.ndarray]:
    """0-based (train, valid): every (ratio+1)-th trial from the first is a validation trial."""
    valid = np.arange(0, n_trials, train_to_test_ratio + 1)
    train = np.setdiff1d(np.arange(n_trials), valid)
    return train, valid


def rebin_factor(spike_bin_ms: float, input_bin_ms: float, path: Path) -> int:
    ratio = spike_bin_ms / input_bin_ms
    if not math.isfinite(ratio) or ratio < 1 - 1e-9 or abs(ratio - round(ratio)) > 1e-6:
        raise ManagerError(
            path, f"spikeBinMs={spike_bin_ms:g} is not a whole multiple of the data's {input_bin_ms:g} ms bins",
            f"set spikeBinMs to a multiple of {input_bin_ms:g}",
        )
    return round(ratio)


def rebin_sum(array: np.ndarray, rebin: int) -> np.ndarray:
    """Sum groups of `rebin` bins along the last axis, dropping a trailing partial group."""
    n_out = array.shape[-1] // rebin
    trimmed = array[..., : n_out * rebin]
    return trimmed.reshape(*array.shape[:-1], n_out, rebin).sum(axis=-1)


@dataclass(frozen=True)
class Alignment:
    """Read-in initialisation for one dataset: (x - bias) @ matrix gives the factors."""

    matrix_cxf: np.ndarray  # nChannels x c_factors_dim
    bias_c: np.ndarray  # nChannels


def lfads_arrays(data: SequenceData, rebin: int, train_to_test_ratio: int, alignment: Alignment | None) -> dict[str, np.ndarray]:
    """The datasets of lfads_<ds>.h5 with the original keys, dtypes and (h5py) shapes."""
    train, valid = split_indices(data.n_trials, train_to_test_ratio)

    def trials_time_channels(array: np.ndarray, rows: np.ndarray, dtype: type) -> np.ndarray:
        return np.ascontiguousarray(np.transpose(rebin_sum(array[rows].astype(dtype), rebin), (0, 2, 1)))

    arrays = {
        "train_data": trials_time_channels(data.counts, train, np.int64),
        "valid_data": trials_time_channels(data.counts, valid, np.int64),
    }
    if data.truth is not None:
        arrays["train_truth"] = trials_time_channels(data.truth, train, np.float64)
        arrays["valid_truth"] = trials_time_channels(data.truth, valid, np.float64)
    if data.external_inputs is not None:
        arrays["train_ext_input"] = trials_time_channels(data.external_inputs, train, np.float64)
        arrays["valid_ext_input"] = trials_time_channels(data.external_inputs, valid, np.float64)
    if data.truth is not None or data.external_inputs is not None:
        arrays["conversion_factor"] = np.array([1.0 / rebin])
    if alignment is not None:
        arrays["alignment_matrix_cxf"] = np.asarray(alignment.matrix_cxf, dtype=np.float64)
        arrays["alignment_bias_c"] = np.asarray(alignment.bias_c, dtype=np.float64).ravel()
    arrays["train_inds"] = (train + 1).astype(np.float64)  # 1-based, as MATLAB wrote them
    arrays["valid_inds"] = (valid + 1).astype(np.float64)
    return arrays


def input_info_fields(data: SequenceData, train_to_test_ratio: int, data_hash: str, spike_bin_ms: float) -> dict[str, object]:
    """inputInfo_<ds>.mat; unlike the original it keeps the truth of every trial, not only trial 1, and
    records spikeBinMs (the output bin), so results load from the run folder alone."""
    train, valid = split_indices(data.n_trials, train_to_test_ratio)
    fields: dict[str, object] = {
        "trainInds": (train + 1).astype(np.float64).reshape(1, -1),
        "validInds": (valid + 1).astype(np.float64).reshape(1, -1),
        "paramInputDataHash": data_hash,
        "seq_timeVector": data.time_ms.reshape(1, -1),
        "seq_binSizeMs": float(data.bin_width_ms),
        "spikeBinMs": float(spike_bin_ms),
        # C x T x nTrials at the input binning, in the loaded dtype to keep files small
        "counts": np.transpose(data.counts, (1, 2, 0)),
    }
    if data.condition_id is not None:
        labels = data.condition_id
        if labels.dtype.kind in "USO":  # text labels: a cell array of strings, as MATLAB's cellstr
            labels = np.array([str(label) for label in labels.ravel()], dtype=object)
        fields["conditionId"] = labels.reshape(-1, 1)
    if data.truth is not None:
        fields["truth"] = np.transpose(data.truth, (1, 2, 0))
    if data.external_inputs is not None:
        fields["externalInputs"] = np.transpose(data.external_inputs, (1, 2, 0))
    return fields


def write_lfads_h5(path: Path, arrays: dict[str, np.ndarray], force: bool = False) -> bool:
    """Atomically write the h5 file unless `path` already holds the same bytes (h5py output is
    deterministic) and not `force`; returns True when written. The file is built in memory: HDF5
    that fails a write (a full disk) can crash the process, a failed plain write cannot."""
    image = io.BytesIO()
    with h5py.File(image, "w") as handle:
        for key, value in arrays.items():
            big = value.ndim == 3 and value.size > 4096
            options = {"compression": "gzip", "compression_opts": 1, "shuffle": True} if big else {}
            handle.create_dataset(key, data=value, **options)
    if force:
        write_bytes_atomic(path, image.getvalue())
        return True
    return write_if_changed(path, image.getvalue())


def write_input_info(path: Path, fields: dict[str, object], force: bool = False) -> bool:
    return write_mat(path, fields, force)
