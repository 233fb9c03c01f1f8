"""Input HDF5 files: the original stem rule (reference §8) and the checks it did with asserts.

Every file in `data_dir` whose name starts with the stem is one dataset; its key is the file
name minus `<stem>_`. Files may be plain HDF5 (any h5py filter, gzip included) or a whole
HDF5 file gzip-wrapped.
"""

from __future__ import annotations

import gzip
import io
import os
from pathlib import Path
from typing import NamedTuple

import h5py
import numpy as np

from lfads.errors import LfadsError

GZIP_MAGIC = b"\x1f\x8b"


class Dataset(NamedTuple):
    """One recording session. Arrays are E×T×D; optional parts are None."""

    name: str
    path: Path
    train_data: np.ndarray
    valid_data: np.ndarray | None
    train_ext_input: np.ndarray | None
    valid_ext_input: np.ndarray | None
    alignment_matrix_cxf: np.ndarray | None
    alignment_bias_c: np.ndarray | None
    train_truth: np.ndarray | None
    valid_truth: np.ndarray | None
    conversion_factor: float | None

    @property
    def data_dim(self) -> int:
        return int(self.train_data.shape[2])

    @property
    def num_steps(self) -> int:
        return int(self.train_data.shape[1])

    def split(self, which: str) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(data, ext_input) of 'train' or 'valid'."""
        if which == "train":
            return self.train_data, self.train_ext_input
        return self.valid_data, self.valid_ext_input


def dataset_files(data_dir: Path, stem: str) -> list[Path]:
    if not data_dir.is_dir():
        raise LfadsError(f"{data_dir}: data folder not found; pass --data_dir=<folder with the input .h5 files>")
    named = sorted(p for p in data_dir.iterdir() if p.name.startswith(stem))
    for path in named:
        # A dangling link (the manager's lfadsInput/ links into data_<hash>/) must not silently
        # drop a session from a stitched model: the original opened every matching name.
        if path.is_symlink() and not path.exists():
            raise LfadsError(
                f"{path}: broken link to {os.readlink(path)}; re-run the manager's prepare (it re-exports"
                " the data) or restore the linked file"
            )
    files = [p for p in named if p.is_file()]
    if not files:
        raise LfadsError(
            f"{data_dir}: no file name starts with '{stem}'; check --data_filename_stem (the manager uses 'lfads')"
        )
    return files


def dataset_key(path: Path, stem: str) -> str:
    # The original slices len(stem)+1 characters off, so 'lfads_dataset001.h5' -> 'dataset001.h5'.
    key = path.name[len(stem) + 1 :]
    return key if key else path.name


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        with path.open("rb") as handle:
            wrapped = handle.read(2) == GZIP_MAGIC
        source: io.BytesIO | Path = io.BytesIO(gzip.decompress(path.read_bytes())) if wrapped else path
        with h5py.File(source, "r") as h5:
            return {key: np.asarray(h5[key][()]) for key in h5 if isinstance(h5[key], h5py.Dataset)}
    except (OSError, gzip.BadGzipFile, EOFError) as err:
        raise LfadsError(f"{path}: cannot be read as HDF5 ({err}); every file whose name starts with"
                         " --data_filename_stem is read as a dataset (as the original did): move it out of"
                         " the folder if it is not one, or export the dataset again") from None


_INT32_MAX = np.iinfo(np.int32).max


def _non_finite(array: np.ndarray) -> int:
    return int(np.size(array) - np.count_nonzero(np.isfinite(array)))


def _as_poisson_counts(array: np.ndarray, path: Path, key: str) -> np.ndarray:
    if array.dtype == np.bool_:  # binary spike trains: 0/1 counts
        return array.astype(np.int32)
    bad = _non_finite(array) if np.issubdtype(array.dtype, np.floating) else 0
    if bad:
        raise LfadsError(f"{path}: '{key}' has {bad} NaN or infinite value(s); spike counts must be finite - fill or"
                         " drop the affected trials before export")
    whole = np.issubdtype(array.dtype, np.integer) or (
        np.issubdtype(array.dtype, np.floating) and np.all(array == np.round(array))
    )
    if not whole:
        raise LfadsError(
            f"{path}: '{key}' holds non-integer values ({array.dtype}); poisson output needs spike counts"
            " - store integer counts, or pass --output_dist=gaussian"
        )
    # Checked here, not left to the model: a bad count shows up only as a non-finite cost later.
    if array.size and array.min() < 0:
        raise LfadsError(f"{path}: '{key}' has negative counts (min {array.min()}); spike counts must be >= 0 - fix the export")
    if array.size and array.max() > _INT32_MAX:
        raise LfadsError(f"{path}: '{key}' has counts above {_INT32_MAX} (max {array.max()}); these are not spike counts - check the export")
    return array.astype(np.int32)


def _as_float(array: np.ndarray, path: Path, key: str) -> np.ndarray:
    if not np.issubdtype(array.dtype, np.number):
        raise LfadsError(f"{path}: '{key}' is not numeric ({array.dtype})")
    bad = _non_finite(array)
    if bad:
        raise LfadsError(f"{path}: '{key}' has {bad} NaN or infinite value(s); fill or drop them before export")
    return array.astype(np.float32)


def _optional(arrays: dict[str, np.ndarray], key: str) -> np.ndarray | None:
    return arrays.get(key)


def load_dataset(path: Path, name: str, output_dist: str, ext_input_dim: int) -> Dataset:
    arrays = _read_arrays(path)
    if "train_data" not in arrays:
        raise LfadsError(f"{path}: no 'train_data' dataset; an LFADS input file needs train_data and valid_data")
    convert = _as_poisson_counts if output_dist == "poisson" else _as_float
    train = convert(arrays["train_data"], path, "train_data")
    valid = convert(arrays["valid_data"], path, "valid_data") if "valid_data" in arrays else None
    for key, array in (("train_data", train), ("valid_data", valid)):
        if array is not None and array.ndim != 3:
            raise LfadsError(f"{path}: '{key}' has shape {array.shape}; expected trials × time × neurons")
    if train.shape[0] == 0:
        raise LfadsError(f"{path}: train_data holds no trials; export the dataset again with trials in its training split")
    if 0 in train.shape[1:]:
        what = "time bins" if train.shape[1] == 0 else "neurons"
        raise LfadsError(f"{path}: train_data has shape {train.shape} (trials × time × neurons), so no {what};"
                         " export the dataset again with at least one time bin and one neuron")
    if valid is not None and valid.shape[0] == 0:
        valid = None  # as if the key were absent: training goes on without a validation set
    if valid is not None and valid.shape[1:] != train.shape[1:]:
        raise LfadsError(f"{path}: valid_data {valid.shape} and train_data {train.shape} differ in time or neurons;"
                         " export both splits from one dataset again")
    ext = {split: _optional(arrays, f"{split}_ext_input") for split in ("train", "valid")}
    if ext_input_dim > 0:
        for split, data in (("train", train), ("valid", valid)):
            if data is None:
                continue
            ext_array = ext[split]
            if ext_array is None:
                raise LfadsError(f"{path}: --ext_input_dim={ext_input_dim} but no '{split}_ext_input' in the file")
            if ext_array.shape != (data.shape[0], data.shape[1], ext_input_dim):
                raise LfadsError(
                    f"{path}: '{split}_ext_input' has shape {ext_array.shape}, expected "
                    f"{(data.shape[0], data.shape[1], ext_input_dim)}; fix the file or --ext_input_dim"
                )
            ext[split] = _as_float(ext_array, path, f"{split}_ext_input")  # NaN inputs would train to NaN
    else:
        ext = {"train": None, "valid": None}
    factor = _optional(arrays, "conversion_factor")
    return Dataset(
        name=name,
        path=path,
        train_data=train,
        valid_data=valid,
        train_ext_input=ext["train"],
        valid_ext_input=ext["valid"],
        alignment_matrix_cxf=_optional(arrays, "alignment_matrix_cxf"),
        alignment_bias_c=_optional(arrays, "alignment_bias_c"),
        train_truth=_optional(arrays, "train_truth"),
        valid_truth=_optional(arrays, "valid_truth"),
        conversion_factor=float(np.ravel(factor)[0]) if factor is not None else None,
    )


def load_datasets(
    data_dir: Path, stem: str, output_dist: str, ext_input_dim: int, reduce_timesteps_to: int = 0
) -> list[Dataset]:
    """All datasets of a run, sorted by key, with the cross-file checks."""
    datasets = [
        load_dataset(path, dataset_key(path, stem), output_dist, ext_input_dim)
        for path in dataset_files(data_dir, stem)
    ]
    by_key: dict[str, Path] = {}
    for ds in datasets:
        other = by_key.setdefault(ds.name, ds.path)
        if other != ds.path:  # their read-in/read-out weights would share one name
            raise LfadsError(
                f"{ds.path}: gives the dataset name '{ds.name}' (the file name after the stem '{stem}' and one more"
                f" character), as {other.name} does; rename one of the files"
            )
    if reduce_timesteps_to > 0:
        datasets = [_truncate_time(ds, reduce_timesteps_to) for ds in datasets]
    first = datasets[0]
    for ds in datasets[1:]:
        if ds.num_steps != first.num_steps:
            raise LfadsError(
                f"{ds.path}: {ds.num_steps} time steps, but {first.path} has {first.num_steps};"
                " every dataset of a run must use the same number of time bins"
            )
    return datasets


def _truncate_time(ds: Dataset, steps: int) -> Dataset:
    def cut(array: np.ndarray | None) -> np.ndarray | None:
        return None if array is None else array[:, :steps]

    return ds._replace(
        train_data=ds.train_data[:, :steps], valid_data=cut(ds.valid_data),
        train_ext_input=cut(ds.train_ext_input), valid_ext_input=cut(ds.valid_ext_input),
        train_truth=cut(ds.train_truth), valid_truth=cut(ds.valid_truth),
    )


def check_alignment(datasets: list[Dataset], factors_dim: int) -> None:
    for ds in datasets:
        matrix, bias = ds.alignment_matrix_cxf, ds.alignment_bias_c
        if matrix is not None and matrix.shape != (ds.data_dim, factors_dim):
            raise LfadsError(
                f"{ds.path}: alignment_matrix_cxf is {matrix.shape}, expected {(ds.data_dim, factors_dim)}"
                " (neurons × factors_dim); re-export with the run's c_factors_dim"
            )
        if bias is not None and np.ravel(bias).shape != (ds.data_dim,):
            raise LfadsError(f"{ds.path}: alignment_bias_c has {np.size(bias)} entries, expected {ds.data_dim}"
                             " (one per neuron); export the dataset again")


def check_trial_counts(datasets: list[Dataset], batch_size: int) -> None:
    """Training cuts every split into batches of batch_size trials (the original asserted this)."""
    for ds in datasets:
        for split in ("train", "valid"):
            data, _ = ds.split(split)
            if data is not None and data.shape[0] < batch_size:
                raise LfadsError(
                    f"{ds.path}: {data.shape[0]} {split} trials, fewer than --batch_size={batch_size};"
                    f" lower --batch_size to at most {data.shape[0]}"
                )
