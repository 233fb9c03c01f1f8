"""The data hook: Dataset.load_counts(run, mode), the original's generateCountsForDataset(run, dataset, mode)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import h5py
import numpy as np
import pytest
from manager_test_helpers import write_npz_dataset

from manager import Dataset, DatasetCollection, ManagerError, RunCollection, RunParams, RunSpec
from manager.params_schema import PROPERTIES, Prop
from manager.sequence import SequenceData, sequence_from_fields


class WindowParams(RunParams):
    PROPERTIES = (*PROPERTIES, Prop("windowBins", "double", 0.0))  # the user's data-shaping parameter


class WindowedDataset(Dataset):
    calls: ClassVar[list[tuple[str, str]]] = []

    def load_counts(self, run=None, mode="export") -> SequenceData:
        WindowedDataset.calls.append((run.params.data_hash, mode))
        fields = dict(self.load_data())
        keep = fields["counts"].shape[2] - int(run.params.windowBins)
        fields["counts"], fields["truth"] = fields["counts"][:, :, :keep], fields["truth"][:, :, :keep]
        fields["timeVecMs"] = fields["timeVecMs"][:keep]
        if mode == "alignment":
            fields["counts"] = fields["counts"] * 2  # stands for other data, kept for alignment only
        return sequence_from_fields(fields, self.path)

    def uses_different_data_for_alignment(self, run) -> bool:
        return True


def _collection(tmp_path: Path, dataset_class: type[Dataset]) -> RunCollection:
    folder = tmp_path / "datasets"
    folder.mkdir(parents=True)
    datasets = DatasetCollection(folder)
    for index in (1, 2):
        write_npz_dataset(folder / f"s{index}.npz", seed=index)
        dataset_class(datasets, f"s{index}.npz")
    collection = RunCollection(tmp_path / "runs", "hook", datasets)
    collection.add_run_spec(RunSpec("both", datasets, None))
    return collection


def test_the_hook_gets_the_run_and_mode_and_each_data_hash_gets_its_own_export(tmp_path: Path) -> None:
    WindowedDataset.calls = []
    collection = _collection(tmp_path, WindowedDataset)
    for window in (0.0, 4.0):
        for gen_dim in (16, 32):  # two params per data hash: the hook runs once per data hash and mode
            collection.add_params(WindowParams(windowBins=window, c_batch_size=4, c_factors_dim=3, c_gen_dim=gen_dim,
                                               useAlignmentMatrix=True))
    collection.prepare()
    hashes = {p.data_hash for p in collection.params}
    assert len(hashes) == 2
    assert sorted(WindowedDataset.calls) == sorted((h, m) for h in hashes for m in ("export", "alignment") for _ in (1, 2))
    lengths = set()
    for run in collection.runs:
        with h5py.File(run.path_common_data / "lfads_s1.h5", "r") as handle:
            lengths.add((run.params.data_hash, handle["train_data"].shape[1]))
    assert {length for _, length in lengths} == {10, 8}  # 20 and 16 input bins at spikeBinMs=2: the window shaped each export


def test_alignment_uses_the_alignment_data_when_the_hook_says_so(tmp_path: Path) -> None:
    # Counts doubled for alignment only: same loadings, matrices halved against the export's own data.
    WindowedDataset.calls = []
    different = _collection(tmp_path / "a", WindowedDataset)
    plain = _collection(tmp_path / "b", Dataset)
    for collection in (different, plain):
        collection.add_params(WindowParams(c_batch_size=4, c_factors_dim=3, useAlignmentMatrix=True))
        collection.prepare()
    (ours,), (theirs,) = different.runs, plain.runs
    with h5py.File(ours.path_common_data / "lfads_s1.h5", "r") as a, h5py.File(theirs.path_common_data / "lfads_s1.h5", "r") as b:
        np.testing.assert_array_equal(a["train_data"][()], b["train_data"][()])  # the export is not doubled
        np.testing.assert_allclose(a["alignment_bias_c"][()], 2 * b["alignment_bias_c"][()])


def test_an_override_without_parameters_still_works(tmp_path: Path) -> None:
    class OldStyle(Dataset):
        def load_counts(self) -> SequenceData:
            return sequence_from_fields(self.load_data(), self.path)

    collection = _collection(tmp_path, OldStyle)
    collection.add_params(RunParams(c_batch_size=4))
    collection.prepare()
    assert (collection.runs[0].path_common_data / "lfads_s1.h5").is_file()


def test_an_override_taking_the_run_alone_gets_it(tmp_path: Path) -> None:
    seen: list[str] = []

    class RunOnly(Dataset):
        def load_counts(self, run) -> SequenceData:
            seen.append(run.params.data_hash)
            return sequence_from_fields(self.load_data(), self.path)

    collection = _collection(tmp_path, RunOnly)
    collection.add_params(RunParams(c_batch_size=4))
    collection.prepare()
    assert seen == [collection.params[0].data_hash] * 2  # two datasets, one data hash


def test_an_override_returning_the_fields_is_checked_like_a_file_and_anything_else_is_named(tmp_path: Path) -> None:
    import pytest

    from manager.errors import ManagerError

    class ReturnsFields(Dataset):
        def load_counts(self) -> SequenceData:
            return dict(self.load_data())  # type: ignore[return-value]  # the loaded fields, not SequenceData

    collection = _collection(tmp_path / "fields", ReturnsFields)
    collection.add_params(RunParams(c_batch_size=4))
    collection.prepare()
    assert (collection.runs[0].path_common_data / "lfads_s1.h5").is_file()

    class ReturnsArray(Dataset):
        def load_counts(self) -> SequenceData:
            return self.load_data()["counts"]  # type: ignore[return-value]

    collection = _collection(tmp_path / "array", ReturnsArray)
    collection.add_params(RunParams(c_batch_size=4))
    with pytest.raises(ManagerError, match=r"s1.npz: ReturnsArray.load_counts returned ndarray, not SequenceData; return sequence_from_fields"):
        collection.prepare()


class FewerChannelsForAlignment(Dataset):
    def load_counts(self, run=None, mode="export") -> SequenceData:
        fields = dict(self.load_data())
        if mode == "alignment":
            fields["counts"], fields["truth"] = fields["counts"][:, :4], fields["truth"][:, :4]
        return sequence_from_fields(fields, self.path)

    def uses_different_data_for_alignment(self, run) -> bool:
        return True


def test_alignment_data_with_other_channels_than_the_export_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    collection = _collection(tmp_path, FewerChannelsForAlignment)
    collection.add_params(RunParams(c_batch_size=4, c_factors_dim=3, useAlignmentMatrix=True))
    with pytest.raises(ManagerError, match=r"s1\.npz: its alignment data has 4 channels but its exported data 6"):
        collection.prepare()
    assert not list((tmp_path / "runs").glob("**/lfads_*.h5"))  # no alignment matrix that fits no export
