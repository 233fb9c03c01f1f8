"""The export: h5 keys/dtypes/shapes, split, rebinning, inputInfo, loaders, and idempotent prepare."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import scipy.io
from manager_test_helpers import file_states, small_collection, write_npz_dataset

from manager import ManagerError, RunSpec
from manager.datasets import register_loader
from manager.matfile import mat_v5_bytes, read_mat


def h5_contents(path):
    with h5py.File(path, "r") as handle:
        return {key: handle[key][()] for key in handle}


def test_h5_and_input_info_follow_the_original_layout(seed_demo):
    collection = seed_demo.path
    source = read_mat(seed_demo.dataset_collection[1].path)  # dataset002
    spikes = source["spikes"]  # trials x channels x 1 ms bins
    n_trials, n_channels, n_time = spikes.shape
    valid = np.arange(0, n_trials, 5)
    train = np.setdiff1d(np.arange(n_trials), valid)

    stitched = h5_contents(collection / "data_RE1kuL/all/lfads_dataset002.h5")
    assert set(stitched) == {"train_data", "valid_data", "train_truth", "valid_truth", "conversion_factor",
                             "alignment_matrix_cxf", "alignment_bias_c", "train_inds", "valid_inds"}
    T = n_time // 2  # spikeBinMs=2 on 1 ms bins
    assert stitched["train_data"].dtype == np.int64 and stitched["train_data"].shape == (train.size, T, n_channels)
    assert stitched["valid_data"].shape == (valid.size, T, n_channels)
    assert stitched["train_truth"].dtype == np.float64 and stitched["valid_truth"].shape == (valid.size, T, n_channels)
    assert stitched["alignment_matrix_cxf"].shape == (n_channels, 8) and stitched["alignment_bias_c"].shape == (n_channels,)
    assert stitched["conversion_factor"].shape == (1,) and stitched["conversion_factor"][0] == 0.5
    assert stitched["train_inds"].dtype == np.float64
    np.testing.assert_array_equal(stitched["valid_inds"], valid + 1.0)
    np.testing.assert_array_equal(stitched["train_inds"], train + 1.0)
    # Rebinning sums pairs of 1 ms bins; the layout is trials x time x channels.
    summed = spikes.reshape(n_trials, n_channels, T, 2).sum(axis=3).transpose(0, 2, 1)
    np.testing.assert_array_equal(stitched["train_data"], summed[train])
    np.testing.assert_array_equal(stitched["valid_data"], summed[valid])
    truth_by_condition = source["true_rates_by_condition"].astype(np.float64)
    expected_truth = truth_by_condition[source["conditionId"].ravel().astype(int) - 1]
    expected_truth = expected_truth.reshape(n_trials, n_channels, T, 2).sum(axis=3).transpose(0, 2, 1)
    np.testing.assert_allclose(stitched["valid_truth"], expected_truth[valid], rtol=1e-12)

    single = h5_contents(collection / "data_RE1kuL/single_dataset002/lfads_dataset002.h5")
    assert "alignment_matrix_cxf" not in single  # one dataset and no useSingleDatasetAlignmentMatrix
    np.testing.assert_array_equal(single["train_data"], stitched["train_data"])

    info = read_mat(collection / "data_RE1kuL/all/inputInfo_dataset002.mat")
    np.testing.assert_array_equal(info["trainInds"], (train + 1.0).reshape(1, -1))
    np.testing.assert_array_equal(info["validInds"], (valid + 1.0).reshape(1, -1))
    assert info["paramInputDataHash"] == "RE1kuL" and float(info["seq_binSizeMs"][0, 0]) == 1.0
    assert info["seq_timeVector"].shape == (1, n_time)
    np.testing.assert_array_equal(info["counts"], spikes.transpose(1, 2, 0))  # C x T x trials, input bins
    # The whole truth tensor, every trial (the original kept only trial 1).
    assert info["truth"].shape == (n_channels, n_time, n_trials)
    np.testing.assert_allclose(info["truth"][:, :, -1], truth_by_condition[int(source["conditionId"][-1, 0]) - 1], rtol=1e-6)
    np.testing.assert_array_equal(info["conditionId"].ravel(), source["conditionId"].ravel())


def test_prepare_again_rewrites_nothing_and_regenerate_rewrites(seed_demo):
    before = file_states(seed_demo.path)
    report = seed_demo.prepare()
    assert report.files_written == [] and report.exported == []
    assert file_states(seed_demo.path) == before

    h5 = "data_RE1kuL/all/lfads_dataset001.h5"
    link = "param_Qr2PeG/all/lfadsInput/lfads_dataset001.h5"
    old_bytes = (seed_demo.path / h5).read_bytes()
    report = seed_demo.prepare(regenerate=True)
    after = file_states(seed_demo.path)
    assert after[h5][0] != before[h5][0] and after[link][0] != before[link][0]
    assert len(report.exported) == 4
    assert (seed_demo.path / h5).read_bytes() == old_bytes  # same data, same bytes
    assert after["param_Qr2PeG/all/lfads_train.sh"] == before["param_Qr2PeG/all/lfads_train.sh"]


def test_regeneration_is_keyed_by_dataset_name(seed_demo):
    missing = seed_demo.path / "data_RE1kuL/all/lfads_dataset002.h5"
    reference = {name: (seed_demo.path / "data_RE1kuL/all" / name).read_bytes()
                 for name in ("lfads_dataset001.h5", "lfads_dataset002.h5", "lfads_dataset003.h5")}
    before = file_states(seed_demo.path)
    missing.unlink()
    seed_demo.prepare()
    after = file_states(seed_demo.path)
    changed = {path for path in after if after[path] != before.get(path)}
    # And the export's stamp, which said "export in progress" while the file was made again.
    assert changed == {"data_RE1kuL/all/lfads_dataset002.h5", "data_RE1kuL/all/.export_stamp.json"}
    for name, content in reference.items():
        assert (seed_demo.path / "data_RE1kuL/all" / name).read_bytes() == content


def test_touched_source_is_reread_but_identical_output_is_kept(seed_demo):
    before = file_states(seed_demo.path)
    source = seed_demo.dataset_collection[0].path
    source.touch()
    report = seed_demo.prepare()
    assert len(report.exported) == 2  # 'all' and 'single_dataset001' use dataset001
    after = file_states(seed_demo.path)
    assert {p for p in after if after[p] != before[p]} == {
        "data_RE1kuL/all/.export_stamp.json", "data_RE1kuL/single_dataset001/.export_stamp.json"}


def write_mat73(path, fields):
    """A MATLAB v7.3 file as MATLAB writes it: HDF5 with a 512-byte header and reversed dimensions."""
    with h5py.File(path, "w", userblock_size=512) as handle:
        for key, value in fields.items():
            array = np.asarray(value)
            array = array.reshape(-1, 1) if array.ndim == 1 else array
            node = handle.create_dataset(key, data=array.T)
            node.attrs["MATLAB_class"] = np.bytes_({"f": "double", "u": "uint8"}[array.dtype.kind])
    with open(path, "r+b") as handle:
        handle.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64".ljust(116) + bytes(8) + b"\x00\x02IM")


def test_every_loader_gives_the_same_export(tmp_path):
    datasets = tmp_path / "datasets"
    datasets.mkdir()
    npz = write_npz_dataset(datasets / "a.npz", n_trials=30)
    with np.load(npz) as archive:
        fields = {key: archive[key] for key in archive.files}
    (datasets / "b.mat").write_bytes(mat_v5_bytes(fields))
    write_mat73(datasets / "c.mat", fields)
    with h5py.File(datasets / "d.h5", "w") as handle:
        for key, value in fields.items():
            handle[key] = value
    (datasets / "e.custom").write_text("30")
    register_loader(".custom", lambda path: {**fields, "counts": fields["counts"][: int(path.read_text())]})

    collection = small_collection(tmp_path, ["a.npz", "b.mat", "c.mat", "d.h5", "e.custom"])
    collection.prepare()
    exports = {name: h5_contents(next(collection.path.glob(f"data_*/single_{name}/lfads_{name}.h5"))) for name in "abcde"}
    for name in "bcde":
        assert exports[name].keys() == exports["a"].keys()
        for key in exports["a"]:
            np.testing.assert_array_equal(exports[name][key], exports["a"][key], err_msg=f"{name}:{key}")


@pytest.mark.parametrize(("spike_bin", "n_bins"), [(1, 20), (3, 6), (5, 4)])
def test_rebinning_drops_a_trailing_partial_bin(tmp_path, spike_bin, n_bins):
    write_npz_dataset((tmp_path / "datasets").mkdir() or tmp_path / "datasets" / "x.npz", n_time=20)
    collection = small_collection(tmp_path, ["x.npz"], spikeBinMs=spike_bin)
    collection.prepare()
    (h5,) = collection.path.glob("data_*/single_x/lfads_x.h5")
    data = h5_contents(h5)
    assert data["train_data"].shape[1] == n_bins
    assert data["conversion_factor"][0] == pytest.approx(1 / spike_bin)


def test_text_condition_labels_in_a_char_matrix_are_one_label_per_trial(tmp_path):
    # MATLAB's char(...) and scipy's savemat of a list of str both store a space-padded char matrix.
    import scipy.io

    from manager.matfile import read_mat

    labels = ["left", "right", "up", "down"]
    scipy.io.savemat(tmp_path / "v5.mat", {"conditionId": labels})
    codes = np.array([[ord(c) for c in label.ljust(5)] for label in labels], dtype=np.uint16)  # 4 x 5 char
    with h5py.File(tmp_path / "v73.mat", "w", userblock_size=512) as handle:
        node = handle.create_dataset("conditionId", data=codes.T)  # HDF5 holds MATLAB's dims reversed
        node.attrs["MATLAB_class"] = np.bytes_("char")
        title = handle.create_dataset("title", data=np.array([[ord(c)] for c in "one row"], dtype=np.uint16))
        title.attrs["MATLAB_class"] = np.bytes_("char")
    with open(tmp_path / "v73.mat", "r+b") as handle:
        handle.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64".ljust(116) + bytes(8) + b"\x00\x02IM")
    assert read_mat(tmp_path / "v5.mat")["conditionId"] == labels
    v73 = read_mat(tmp_path / "v73.mat")
    assert v73["conditionId"] == labels and v73["title"] == "one row"


def test_a_loader_registered_for_a_suffix_is_part_of_the_export_stamp(tmp_path, monkeypatch):
    from manager import datasets as dataset_module

    (tmp_path / "datasets").mkdir()
    write_npz_dataset(tmp_path / "datasets" / "x.npz")
    collection = small_collection(tmp_path, ["x.npz"])
    collection.prepare()
    (h5,) = collection.path.glob("data_*/single_x/lfads_x.h5")
    before = h5_contents(h5)["train_data"].sum()

    def doubled(path):
        with np.load(path) as archive:
            return {**{key: archive[key] for key in archive.files}, "counts": archive["counts"] * 2}

    monkeypatch.setitem(dataset_module.LOADERS, ".npz", doubled)  # as register_loader(".npz", doubled)
    report = small_collection(tmp_path, ["x.npz"]).prepare()
    assert report.exported and h5_contents(h5)["train_data"].sum() == 2 * before
    assert not small_collection(tmp_path, ["x.npz"]).prepare().exported  # and then it is current


def test_a_partial_or_callable_object_as_loader_prepares(tmp_path, monkeypatch):
    import functools

    from manager import datasets as dataset_module

    (tmp_path / "datasets").mkdir()
    write_npz_dataset(tmp_path / "datasets" / "x.npz")

    def scaled(path, factor):
        with np.load(path) as archive:
            return {**{key: archive[key] for key in archive.files}, "counts": archive["counts"] * factor}

    monkeypatch.setitem(dataset_module.LOADERS, ".npz", functools.partial(scaled, factor=1))
    assert small_collection(tmp_path, ["x.npz"]).prepare().exported
    monkeypatch.setitem(dataset_module.LOADERS, ".npz", functools.partial(scaled, factor=3))  # other arguments
    assert small_collection(tmp_path, ["x.npz"]).prepare().exported


@pytest.mark.parametrize("stored", ["variable-length", "fixed-length"])
def test_text_condition_labels_in_an_h5_are_text_like_those_of_an_npz(tmp_path, stored):
    from manager.datasets import LOADERS

    labels = np.array(["left", "right", "up", "down"] * 10)
    write_npz_dataset((tmp_path / "datasets").mkdir() or tmp_path / "datasets" / "a.npz", conditionId=labels)
    with h5py.File(tmp_path / "datasets" / "b.h5", "w") as handle, np.load(tmp_path / "datasets" / "a.npz") as archive:
        for key in archive.files:
            handle[key] = archive[key] if key != "conditionId" else (
                labels.astype(h5py.string_dtype()) if stored == "variable-length" else labels.astype("S"))
    from_h5 = LOADERS[".h5"](tmp_path / "datasets" / "b.h5")["conditionId"]
    assert list(from_h5) == list(labels)  # 'left', not b'left' (nor the text "b'left'")
    # So an .h5 and an .npz with the same labels share their conditions when stitched.
    collection = small_collection(tmp_path, ["a.npz", "b.h5"], useAlignmentMatrix=True)
    collection.add_run_spec(RunSpec("both", collection.dataset_collection, ["a", "b"]))
    collection.prepare()
    assert list(collection.path.glob("data_*/both/lfads_b.h5"))


def test_a_cell_array_of_numbers_as_condition_ids_is_numeric(tmp_path):
    # MATLAB's num2cell(conditionId) saves a cell of 1x1 doubles; an empty cell is a trial without a condition.
    import scipy.io

    from manager.sequence import sequence_from_fields

    cells = np.empty((6, 1), dtype=object)
    for trial, value in enumerate([1.0, 2.0, 3.0, 1.0, 2.0, np.zeros((0, 0))]):
        cells[trial, 0] = value
    scipy.io.savemat(tmp_path / "cells.mat", {"spikes": np.ones((6, 2, 4)), "conditionId": cells,
                                              "true_rates_by_condition": np.ones((3, 2, 4))})
    fields = read_mat(tmp_path / "cells.mat")
    with pytest.raises(Exception, match=r"needs whole-number conditionId, got nan \(trial 6\)"):
        sequence_from_fields(fields, tmp_path / "cells.mat")  # truth cannot be looked up without a condition
    data = sequence_from_fields({**fields, "true_rates_by_condition": None}, tmp_path / "cells.mat")
    np.testing.assert_array_equal(data.condition_id, [1.0, 2.0, 3.0, 1.0, 2.0, np.nan])
    fields["conditionId"] = [*fields["conditionId"][:5], 3.0]
    truth = sequence_from_fields(fields, tmp_path / "cells.mat").truth
    assert truth is not None and truth.shape == (6, 2, 4)


@pytest.mark.parametrize("returned", [None, np.zeros((3, 4, 5))])
def test_a_loader_that_returns_no_mapping_is_named_with_the_file(tmp_path, monkeypatch, returned):
    from manager import ManagerError
    from manager import datasets as dataset_module

    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "x.pkl").write_text("whatever")

    def arrays_only(path):
        return returned

    monkeypatch.setitem(dataset_module.LOADERS, ".pkl", arrays_only)
    collection = small_collection(tmp_path, ["x.pkl"])
    with pytest.raises(ManagerError) as raised:
        collection.prepare()
    assert raised.value.path == tmp_path / "datasets" / "x.pkl"
    assert f"loader {arrays_only.__qualname__} returned {type(returned).__name__}, not the file's variables" in str(raised.value)
    assert not collection.path.exists() or not any(collection.path.glob("data_*"))


def test_a_variable_too_large_for_a_v5_mat_is_a_one_line_error_naming_the_file(tmp_path, monkeypatch):
    # Past 4 GiB per variable scipy refuses; faked here, as CI cannot hold such a truth tensor.
    (tmp_path / "datasets").mkdir()
    write_npz_dataset(tmp_path / "datasets" / "big.npz")
    collection = small_collection(tmp_path, ["big.npz"])
    real_savemat = scipy.io.savemat

    def savemat(file, variables, **options):
        if "truth" in variables:
            raise scipy.io.matlab.MatWriteError("Matrix too large to save with Matlab 5 format")
        return real_savemat(file, variables, **options)

    monkeypatch.setattr(scipy.io, "savemat", savemat)
    with pytest.raises(ManagerError) as error:
        collection.prepare()
    assert str(error.value).startswith(f"{collection.path}/data_")
    assert "inputInfo_big.mat: variable 'truth' is too large for a v5 .mat file" in str(error.value)
    assert str(error.value).endswith("use fewer trials or channels per dataset (v5 holds up to 4 GiB per variable)")
    monkeypatch.undo()
    collection.prepare()  # the next prepare exports again and succeeds
    assert "truth" in read_mat(next(collection.path.glob("data_*/*/inputInfo_big.mat")))
