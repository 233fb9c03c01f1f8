"""External inputs in lfads_<ds>.h5: keys, dtype, shape and rebinning."""

from __future__ import annotations

import h5py
import numpy as np
from manager_test_helpers import small_collection, write_npz_dataset


def test_external_inputs_are_exported_as_float64_trials_time_inputs(tmp_path):
    (tmp_path / "datasets").mkdir()
    ext = np.random.default_rng(1).normal(size=(40, 2, 20))  # trials x inputs x 1 ms bins
    write_npz_dataset(tmp_path / "datasets" / "ds.npz", externalInputs=ext)
    collection = small_collection(tmp_path, ["ds.npz"], spikeBinMs=2, c_ext_input_dim=2)
    collection.prepare()
    (run,) = collection.runs
    with h5py.File(run.path / "lfadsInput" / "lfads_ds.h5", "r") as handle:
        valid = handle["valid_inds"][()].astype(int) - 1
        for split in ("train", "valid"):
            data = handle[f"{split}_ext_input"]
            assert data.dtype == np.float64 and data.shape == (handle[f"{split}_data"].shape[0], 10, 2)
        summed = ext.reshape(40, 2, 10, 2).sum(axis=3).transpose(0, 2, 1)
        np.testing.assert_allclose(handle["valid_ext_input"][()], summed[valid], rtol=1e-12)
        assert handle["conversion_factor"][()].tolist() == [0.5]
