"""`model_runs_*` and `model_params` HDF5 files (reference §6): names, keys, float64, gzip."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from lfads.files.atomic import atomic_path


def model_runs_name(output_filename_stem: str, dataset: str, split: str, kind: str) -> str:
    # The original: "model_runs_" + name, or the stem glued on with no separator.
    head = output_filename_stem if output_filename_stem else "model_runs_"
    return f"{head}{dataset}_{split}_{kind}"


def prior_sample_name(output_filename_stem: str) -> str:
    return f"{output_filename_stem}model_runs_prior_sample"


def model_params_name(output_filename_stem: str) -> str:
    return f"{output_filename_stem}_model_params" if output_filename_stem else "model_params"


# gzip as the original wrote (any HDF5 reader decodes it); level 1 after the byte shuffle writes the
# quick Lorenz run's 1302 train trials in 0.4 s and 21 MB, where h5py's default level 4 without the
# shuffle took 1.0 s and 27 MB: on a GPU, writing the files had been 2-2.5 s of a 15-17 s posterior step.
MODEL_RUNS_FILTERS: dict[str, Any] = {"compression": "gzip", "compression_opts": 1, "shuffle": True}


def write_h5(path: Path, arrays: Mapping[str, np.ndarray], filters: Mapping[str, Any] | None) -> None:
    """One HDF5 dataset per key ('/' in keys becomes '_', as write_data did); written atomically.

    Built in memory first: HDF5 that fails a write (a full disk) can crash the process when the
    file is closed, while a failed write of plain bytes is an ordinary OSError naming `path`."""
    # HDF5's own in-memory driver, not a Python file object: h5py keeps a Python file object
    # referenced from HDF5's side, and after a failed write (its frame held by the traceback)
    # Python 3.12 crashed collecting it at exit.
    with h5py.File(path.name, "w", driver="core", backing_store=False) as h5:
        for key, value in arrays.items():
            array = np.asarray(value)
            options = filters if filters and array.ndim > 0 else {}  # HDF5 filters need a chunked array
            h5.create_dataset(key.replace("/", "_"), data=array, **options)
        h5.flush()
        image = h5.id.get_file_image()
    with atomic_path(path) as tmp:
        tmp.write_bytes(image)


def write_model_runs(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    write_h5(path, {k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()}, MODEL_RUNS_FILTERS)
