"""Input files: the original stem rule, and one-line errors that name the file and the fix."""

from __future__ import annotations

import gzip
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from lfads.data import check_alignment, check_trial_counts, load_datasets
from lfads.errors import LfadsError

MakeDataset = Callable[..., dict[str, np.ndarray]]


def test_every_file_starting_with_the_stem_is_a_dataset_keyed_by_its_name(
    tmp_path: Path, dataset_factory: MakeDataset
) -> None:
    dataset_factory(tmp_path / "lfads_dataset002.h5", neurons=5, seed=1)
    arrays = dataset_factory(tmp_path / "lfads_dataset001.h5", neurons=7)
    (tmp_path / "inputInfo_dataset001.mat").write_bytes(b"not for lfads")
    datasets = load_datasets(tmp_path, "lfads", "poisson", 0)
    assert [d.name for d in datasets] == ["dataset001.h5", "dataset002.h5"]
    first = datasets[0]
    assert first.train_data.dtype == np.int32 and first.data_dim == 7
    np.testing.assert_array_equal(first.train_data, arrays["train_data"])
    assert first.valid_data is not None and first.valid_data.shape == arrays["valid_data"].shape
    assert first.conversion_factor == 1.0


def test_a_gzip_wrapped_h5_file_is_read(tmp_path: Path, dataset_factory: MakeDataset) -> None:
    plain = tmp_path / "plain" / "lfads_a.h5"
    arrays = dataset_factory(plain)
    wrapped = tmp_path / "wrapped"
    wrapped.mkdir()
    (wrapped / "lfads_a.h5").write_bytes(gzip.compress(plain.read_bytes()))
    (dataset,) = load_datasets(wrapped, "lfads", "poisson", 0)
    np.testing.assert_array_equal(dataset.train_data, arrays["train_data"])


def test_non_integer_counts_for_poisson_name_the_file_and_the_fix(tmp_path: Path, dataset_factory: MakeDataset) -> None:
    path = tmp_path / "lfads_x.h5"
    dataset_factory(path)
    with h5py.File(path, "a") as h5:
        data = h5["train_data"][()].astype(np.float64) + 0.5
        del h5["train_data"]
        h5["train_data"] = data
    with pytest.raises(LfadsError, match=r"lfads_x\.h5: 'train_data' holds non-integer.*--output_dist=gaussian"):
        load_datasets(tmp_path, "lfads", "poisson", 0)


def test_whole_number_floats_are_accepted_as_counts(tmp_path: Path, dataset_factory: MakeDataset) -> None:
    path = tmp_path / "lfads_x.h5"
    arrays = dataset_factory(path)
    with h5py.File(path, "a") as h5:
        del h5["train_data"]
        h5["train_data"] = arrays["train_data"].astype(np.float64)
    (dataset,) = load_datasets(tmp_path, "lfads", "poisson", 0)
    np.testing.assert_array_equal(dataset.train_data, arrays["train_data"])


def test_binary_spikes_stored_as_bool_are_counts_and_nan_counts_are_named_as_nan(tmp_path: Path,
                                                                                 dataset_factory: MakeDataset) -> None:
    path = tmp_path / "lfads_x.h5"
    arrays = dataset_factory(path)
    with h5py.File(path, "a") as h5:
        del h5["train_data"]
        h5["train_data"] = arrays["train_data"] > 0
    (dataset,) = load_datasets(tmp_path, "lfads", "poisson", 0)
    np.testing.assert_array_equal(dataset.train_data, (arrays["train_data"] > 0).astype(np.int32))
    with h5py.File(path, "a") as h5:
        del h5["train_data"]
        h5["train_data"] = np.where(arrays["train_data"] > 1, np.nan, arrays["train_data"])
    with pytest.raises(LfadsError, match=r"lfads_x\.h5: 'train_data' has \d+ NaN or infinite value\(s\); spike counts must be finite"):
        load_datasets(tmp_path, "lfads", "poisson", 0)


def test_two_files_that_give_one_dataset_name_are_named(tmp_path: Path, dataset_factory: MakeDataset) -> None:
    dataset_factory(tmp_path / "lfads_a.h5")
    dataset_factory(tmp_path / "lfadsXa.h5", seed=1)  # the original's rule drops the stem and one more character
    with pytest.raises(LfadsError, match=r"lfads_a\.h5: gives the dataset name 'a\.h5' .* as lfadsXa\.h5 does; rename one"):
        load_datasets(tmp_path, "lfads", "poisson", 0)


def test_fewer_trials_than_the_batch_is_a_clear_error(tmp_path: Path, dataset_factory: MakeDataset) -> None:
    dataset_factory(tmp_path / "lfads_small.h5", trials=20)  # 16 train, 4 valid
    datasets = load_datasets(tmp_path, "lfads", "poisson", 0)
    check_trial_counts(datasets, 4)
    with pytest.raises(LfadsError, match=r"lfads_small\.h5: 4 valid trials, fewer than --batch_size=8.*at most 4"):
        check_trial_counts(datasets, 8)


def test_datasets_with_different_time_steps_are_refused(tmp_path: Path, dataset_factory: MakeDataset) -> None:
    dataset_factory(tmp_path / "lfads_a.h5", steps=12)
    dataset_factory(tmp_path / "lfads_b.h5", steps=10)
    with pytest.raises(LfadsError, match=r"lfads_b\.h5: 10 time steps, but .*lfads_a\.h5 has 12"):
        load_datasets(tmp_path, "lfads", "poisson", 0)


def test_missing_ext_inputs_and_bad_alignment_are_named(tmp_path: Path, dataset_factory: MakeDataset) -> None:
    dataset_factory(tmp_path / "lfads_a.h5", alignment_factors=3)
    with pytest.raises(LfadsError, match=r"--ext_input_dim=2 but no 'train_ext_input'"):
        load_datasets(tmp_path, "lfads", "poisson", 2)
    datasets = load_datasets(tmp_path, "lfads", "poisson", 0)
    check_alignment(datasets, 3)
    with pytest.raises(LfadsError, match=r"alignment_matrix_cxf is \(6, 3\), expected \(6, 4\)"):
        check_alignment(datasets, 4)


def test_no_matching_file_names_the_folder_and_the_stem(tmp_path: Path, dataset_factory: MakeDataset) -> None:
    dataset_factory(tmp_path / "lfads_a.h5")
    with pytest.raises(LfadsError, match=r"no file name starts with 'chaotic'"):
        load_datasets(tmp_path, "chaotic", "poisson", 0)
    shutil.rmtree(tmp_path)
    with pytest.raises(LfadsError, match=r"data folder not found"):
        load_datasets(tmp_path, "lfads", "poisson", 0)


def test_a_broken_link_is_an_error_not_a_dropped_session(tmp_path: Path, dataset_factory: MakeDataset) -> None:
    dataset_factory(tmp_path / "data" / "lfads_a.h5")
    inputs = tmp_path / "lfadsInput"
    inputs.mkdir()
    (inputs / "lfads_a.h5").symlink_to("../data/lfads_a.h5")
    (inputs / "lfads_b.h5").symlink_to("../data/lfads_b_moved.h5")  # its data folder was moved away
    with pytest.raises(LfadsError, match=r"lfadsInput/lfads_b\.h5: broken link to \.\./data/lfads_b_moved\.h5; re-run"):
        load_datasets(inputs, "lfads", "poisson", 0)


@pytest.mark.parametrize(
    ("value", "dist", "needle"),
    [
        (-1, "poisson", r"'train_data' has negative counts \(min -1\)"),
        (2**40, "poisson", r"'train_data' has counts above 2147483647"),
        (np.nan, "gaussian", r"'train_data' has 1 NaN or infinite value\(s\)"),
        (np.inf, "gaussian", r"'train_data' has 1 NaN or infinite value\(s\)"),
    ],
)
def test_values_no_model_can_fit_are_refused_at_load_naming_the_file(
    tmp_path: Path, dataset_factory: MakeDataset, value: float, dist: str, needle: str
) -> None:
    path = tmp_path / "lfads_x.h5"
    dataset_factory(path, gaussian=dist == "gaussian")
    with h5py.File(path, "a") as h5:
        data = h5["train_data"][()].astype(np.float64 if dist == "gaussian" else np.int64)
        data[0, 0, 0] = value
        del h5["train_data"]
        h5["train_data"] = data
    with pytest.raises(LfadsError, match=r"lfads_x\.h5: " + needle):
        load_datasets(tmp_path, "lfads", dist, 0)


def test_nan_external_inputs_name_the_file(tmp_path: Path, dataset_factory: MakeDataset) -> None:
    path = tmp_path / "lfads_e.h5"
    arrays = dataset_factory(path, ext_dim=2)
    with h5py.File(path, "a") as h5:
        ext = arrays["valid_ext_input"].copy()
        ext[0, 3, 1] = np.nan
        del h5["valid_ext_input"]
        h5["valid_ext_input"] = ext
    with pytest.raises(LfadsError, match=r"lfads_e\.h5: 'valid_ext_input' has 1 NaN or infinite value"):
        load_datasets(tmp_path, "lfads", "poisson", 2)


def test_an_empty_validation_split_trains_without_one_and_an_empty_training_split_is_named(
        tmp_path: Path, dataset_factory: MakeDataset) -> None:
    arrays = dataset_factory(tmp_path / "lfads_ds.h5")
    with h5py.File(tmp_path / "lfads_ds.h5", "r+") as h5:  # "lower --batch_size to at most 0" before
        del h5["valid_data"]
        h5["valid_data"] = np.zeros((0, *arrays["valid_data"].shape[1:]), np.int64)
    (dataset,) = load_datasets(tmp_path, "lfads", "poisson", 0)
    assert dataset.valid_data is None
    check_trial_counts([dataset], 4)
    with h5py.File(tmp_path / "lfads_ds.h5", "r+") as h5:
        del h5["train_data"]
        h5["train_data"] = np.zeros((0, *arrays["train_data"].shape[1:]), np.int64)
    with pytest.raises(LfadsError, match=r"lfads_ds\.h5: train_data holds no trials; export the dataset again"):
        load_datasets(tmp_path, "lfads", "poisson", 0)


@pytest.mark.parametrize(("shape", "says"), [((40, 0, 6), "(40, 0, 6) (trials × time × neurons), so no time bins"),
                                            ((40, 10, 0), "(40, 10, 0) (trials × time × neurons), so no neurons")])
def test_training_data_without_time_bins_or_neurons_is_named(tmp_path: Path, dataset_factory: MakeDataset,
                                                            shape: tuple[int, int, int], says: str) -> None:
    dataset_factory(tmp_path / "lfads_ds.h5")
    _replace(tmp_path / "lfads_ds.h5", "train_data", np.zeros(shape, np.int64))
    _replace(tmp_path / "lfads_ds.h5", "valid_data", np.zeros((20, *shape[1:]), np.int64))
    with pytest.raises(LfadsError, match=re.escape(f"lfads_ds.h5: train_data has shape {says}; export the dataset")):
        load_datasets(tmp_path, "lfads", "poisson", 0)


def test_a_file_that_only_shares_the_stem_is_named_with_the_stem_rule(tmp_path: Path, dataset_factory: MakeDataset) -> None:
    dataset_factory(tmp_path / "lfads_ds.h5")
    (tmp_path / "lfads_notes.txt").write_text("my notes")  # the stem rule reads it as a dataset
    with pytest.raises(LfadsError, match=r"lfads_notes\.txt: cannot be read as HDF5 .*every file whose name starts with"
                                         r" --data_filename_stem is read as a dataset .*move it out of the folder"):
        load_datasets(tmp_path, "lfads", "poisson", 0)


def _replace(path: Path, key: str, value: np.ndarray | None) -> None:
    with h5py.File(path, "a") as h5:
        del h5[key]
        if value is not None:
            h5[key] = value


@pytest.mark.parametrize(("key", "value", "dist", "needle"), [
    ("train_data", None, "poisson", r"no 'train_data' dataset; an LFADS input file needs train_data and valid_data"),
    ("train_data", np.array([b"spikes"]), "gaussian", r"'train_data' is not numeric \(\|S6\)"),
    ("valid_data", np.zeros((4, 12), np.int64), "poisson", r"'valid_data' has shape \(4, 12\); expected trials × time × neurons"),
    ("valid_data", np.zeros((4, 12, 5), np.int64), "poisson",
     r"valid_data \(4, 12, 5\) and train_data \(\d+, 12, 6\) differ in time or neurons; export both splits from one dataset again"),
], ids=["no-train-data", "text-data", "two-dimensional", "splits-differ"])
def test_input_files_of_the_wrong_shape_name_the_file_and_the_fix(
    tmp_path: Path, dataset_factory: MakeDataset, key: str, value: np.ndarray | None, dist: str, needle: str
) -> None:
    path = tmp_path / "lfads_x.h5"
    dataset_factory(path, neurons=6, gaussian=dist == "gaussian")
    _replace(path, key, value)
    with pytest.raises(LfadsError, match=r"lfads_x\.h5: " + needle):
        load_datasets(tmp_path, "lfads", dist, 0)
