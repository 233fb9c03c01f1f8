"""The input bin width: a time vector, or a scalar binWidthMs (a variable, or an HDF5 attribute), or 1 ms
with a note that says so."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from manager_test_helpers import small_collection, write_npz_dataset

from manager.errors import ManagerError


def _exported_bins(collection, name: str) -> int:
    (h5,) = collection.path.glob(f"data_*/single_{name}/lfads_{name}.h5")
    with h5py.File(h5, "r") as handle:
        return int(handle["train_data"].shape[1])


def test_a_scalar_bin_width_as_a_variable_or_an_h5_attribute_sets_the_input_bins(tmp_path):
    folder = tmp_path / "datasets"
    folder.mkdir()
    write_npz_dataset(folder / "var.npz", n_time=50, timeVecMs=None, binWidthMs=10)
    with np.load(folder / "var.npz") as archive, h5py.File(folder / "attr.h5", "w") as handle:
        for key in archive.files:
            if key != "binWidthMs":
                handle[key] = archive[key]
        handle.attrs["binWidthMs"] = 10
    lines: list[str] = []
    collection = small_collection(tmp_path, ["var.npz", "attr.h5"], spikeBinMs=20)
    collection.prepare(progress=lines.append)
    assert _exported_bins(collection, "var") == _exported_bins(collection, "attr") == 25  # 50 bins of 10 ms
    assert not [line for line in lines if "1 ms" in line]


def test_no_time_vector_nor_bin_width_is_1_ms_with_a_note_naming_the_unused_variables(tmp_path):
    folder = tmp_path / "datasets"
    folder.mkdir()
    write_npz_dataset(folder / "x.npz", n_time=50, timeVecMs=None, dt=10, units=np.arange(6))
    lines: list[str] = []
    collection = small_collection(tmp_path, ["x.npz"], spikeBinMs=10)
    report = collection.prepare(progress=lines.append)
    assert _exported_bins(collection, "x") == 5
    (note,) = [n for n in report.notes if "1 ms" in n]
    assert note in lines
    assert note.startswith(f"note: {folder / 'x.npz'}: no time vector (timeVecMs, timeMs, time_ms) nor bin width")
    assert "variables not used: dt, units" in note and "store binWidthMs" in note
    assert not small_collection(tmp_path, ["x.npz"], spikeBinMs=10).prepare().notes  # said when the data is read


@pytest.mark.parametrize(("width", "says"), [(2.0, "binWidthMs = 2 but timeVecMs steps by 1 ms"),
                                             (0, "binWidthMs must be one positive number of ms, got [0"),
                                             (np.array([1.0, 2.0]), "binWidthMs must be one positive number of ms")])
def test_a_bin_width_that_disagrees_with_the_time_vector_or_is_not_one_positive_number_is_refused(tmp_path, width, says):
    folder = tmp_path / "datasets"
    folder.mkdir()
    write_npz_dataset(folder / "x.npz", binWidthMs=width)
    with pytest.raises(ManagerError, match=r"x\.npz: ") as error:
        small_collection(tmp_path, ["x.npz"]).prepare()
    assert says in str(error.value)


@pytest.mark.parametrize("time_vector", [None, np.array([10.0])])
def test_one_bin_per_trial_takes_its_width_from_bin_width_not_from_the_time_vector(tmp_path, time_vector):
    folder = tmp_path / "datasets"
    folder.mkdir()
    write_npz_dataset(folder / "x.npz", counts=np.ones((40, 3, 1)), timeVecMs=time_vector, truth=None, binWidthMs=10)
    collection = small_collection(tmp_path, ["x.npz"], spikeBinMs=10)
    report = collection.prepare()
    assert _exported_bins(collection, "x") == 1  # one 10 ms bin, not "shorter than one 10 ms bin"
    assert not [note for note in report.notes if "1 ms" in note]


def test_one_bin_per_trial_without_a_bin_width_is_1_ms_with_a_note(tmp_path):
    folder = tmp_path / "datasets"
    folder.mkdir()
    write_npz_dataset(folder / "x.npz", counts=np.ones((40, 3, 1)), timeVecMs=np.array([10.0]), truth=None)
    with pytest.raises(ManagerError, match=r"shorter than one 10 ms bin") as error:
        small_collection(tmp_path, ["x.npz"], spikeBinMs=10).prepare()
    assert "x.npz" in str(error.value)
    lines: list[str] = []
    report = small_collection(tmp_path, ["x.npz"], spikeBinMs=1).prepare(progress=lines.append)
    (note,) = [n for n in report.notes if "1 ms" in n]
    assert note in lines
    assert "one time bin per trial" in note and "store binWidthMs" in note
