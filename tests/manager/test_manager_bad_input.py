"""Bad input: one clear line naming the file and the fix, exit status 2, and nothing written."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from manager_test_helpers import file_states, run_manager_cli, run_manager_cli_in_process, write_npz_dataset


def experiment(tmp_path: Path, params: str = "c_batch_size = 4\nc_factors_dim = 3", extra: str = "",
               runspec: str = '[[runspec]]\nname = "both"\ndatasets = ["good", "bad"]') -> Path:
    path = tmp_path / "experiment.toml"
    path.write_text(f"""
[collection]
root = "runs"
name = "trial"

[datasets]
folder = "datasets"
glob = "*.npz"

[params]
{params}

{runspec}
{extra}
""")
    return path


def fails(tmp_path: Path, toml: Path, *, names: Path, says: str, in_process: bool = False) -> None:
    if in_process:
        returncode, stderr = run_manager_cli_in_process("prepare", str(toml))
    else:
        result = run_manager_cli("prepare", str(toml))
        returncode, stderr = result.returncode, result.stdout + result.stderr
    assert returncode == 2, stderr
    assert "Traceback" not in stderr
    message = stderr.strip().splitlines()[-1]  # earlier lines are progress
    assert message.startswith(f"lfads-manager: error: {names}: ")
    assert says in message, message
    assert not (tmp_path / "runs").exists()  # nothing half-written


@pytest.fixture
def datasets(tmp_path: Path) -> Path:
    folder = tmp_path / "datasets"
    folder.mkdir()
    write_npz_dataset(folder / "good.npz")
    return folder


def test_too_few_trials_for_the_batch_size(tmp_path, datasets):
    write_npz_dataset(datasets / "bad.npz", n_trials=12)  # every 5th is validation: 9 + 3, and 3 < 4
    fails(tmp_path, experiment(tmp_path), names=datasets / "bad.npz",
          says="12 trials are too few for c_batch_size=4 with trainToTestRatio=4: they split into 9 training and 3"
               " validation trials")


def test_too_few_trials_names_the_dataset_with_fewest_and_a_batch_size_that_suits_them_all(tmp_path, datasets):
    write_npz_dataset(datasets / "bad.npz", n_trials=30)  # 24 + 6 < 8
    write_npz_dataset(datasets / "worse.npz", n_trials=20)  # 16 + 4
    toml = experiment(tmp_path, params="c_batch_size = 8\nc_factors_dim = 3",
                      runspec='[[runspec]]\nname = "all"\ndatasets = ["good", "bad", "worse"]')
    fails(tmp_path, toml, names=datasets / "worse.npz",
          says="split into 16 training and 4 validation trials, and each split must hold a batch (run param_HXp8Q5/all;"
               " bad too); lower c_batch_size to at most 4")


def test_trials_enough_for_a_batch_in_each_split_are_accepted(tmp_path, datasets):
    # 16 trials split into 12 + 4: a batch of 4 fits each, though the original's rule asked for 4 × 5 = 20.
    write_npz_dataset(datasets / "bad.npz", n_trials=16)
    result = run_manager_cli("prepare", str(experiment(tmp_path)))
    assert result.returncode == 0, result.stdout + result.stderr


def test_inconsistent_bin_widths(tmp_path, datasets):
    write_npz_dataset(datasets / "bad.npz", timeVecMs=np.r_[np.arange(10), np.arange(10, 30, 2)].astype(float))
    fails(tmp_path, experiment(tmp_path), names=datasets / "bad.npz", says="inconsistent bin widths")


def test_spike_bin_not_a_multiple_of_the_input_bin(tmp_path, datasets):
    write_npz_dataset(datasets / "bad.npz", timeVecMs=np.arange(0, 40, 2.0))  # 2 ms bins
    toml = experiment(tmp_path, params="c_batch_size = 4\nc_factors_dim = 3\nspikeBinMs = 3")
    fails(tmp_path, toml, names=datasets / "bad.npz", says="spikeBinMs=3 is not a whole multiple of the data's 2 ms bins")


@pytest.mark.parametrize(("value", "says"), [(np.nan, "NaN in spike counts"), (-1.0, "negative spike counts"),
                                             (0.5, "not whole numbers")])
def test_nan_negative_or_fractional_counts(tmp_path, datasets, value, says):
    counts = np.ones((40, 6, 20))
    counts[3, 2, 1] = value
    write_npz_dataset(datasets / "bad.npz", counts=counts)
    fails(tmp_path, experiment(tmp_path), names=datasets / "bad.npz", says=says)


@pytest.mark.parametrize("field", ["truth", "externalInputs"])
def test_nan_in_truth_or_external_inputs(tmp_path, datasets, field):
    values = np.ones((40, 6 if field == "truth" else 2, 20))
    values[5, 1, 3] = np.nan
    write_npz_dataset(datasets / "bad.npz", **{field: values})
    fails(tmp_path, experiment(tmp_path), names=datasets / "bad.npz", says=f"NaN or inf in {field} (1 values, the first in trial 6)")


def test_run_spec_naming_an_unknown_dataset(tmp_path, datasets):
    toml = experiment(tmp_path, runspec='[[runspec]]\nname = "x"\ndatasets = ["good", "gooood"]')
    fails(tmp_path, toml, names=toml, says="run spec 'x' names unknown dataset 'gooood' (known: good)")


def test_unknown_parameter_name(tmp_path, datasets):
    toml = experiment(tmp_path, params="c_batch_size = 4\nc_factor_dim = 3")
    fails(tmp_path, toml, names=toml, says="unknown parameter 'c_factor_dim'; did you mean 'c_factors_dim'?")


@pytest.mark.parametrize(("line", "says"), [('c_factors_dim = "8"', "c_factors_dim must be a whole number (uint16)"),
                                            ("useAlignmentMatrix = 2", "useAlignmentMatrix must be true or false"),
                                            ("c_learning_rate_stop = true", "c_learning_rate_stop must be a number")])
def test_value_of_the_wrong_type(tmp_path, datasets, line, says):
    toml = experiment(tmp_path, params=f"c_batch_size = 4\n{line}")
    fails(tmp_path, toml, names=toml, says=says)


def test_bad_sweep_and_unknown_table(tmp_path, datasets):
    fails(tmp_path, experiment(tmp_path, extra="[sweep]\nc_gen_dim = [16, 2.5]"), names=tmp_path / "experiment.toml",
          says="[sweep] c_gen_dim must be a whole number")
    fails(tmp_path, experiment(tmp_path, extra="[sweep]\nc_gen_dim = [16, 32, 16]"), names=tmp_path / "experiment.toml",
          says="[sweep] c_gen_dim lists 16 more than once; list each value once")
    fails(tmp_path, experiment(tmp_path, extra="[queues]\nmemory_mb = 3"), names=tmp_path / "experiment.toml",
          says="unknown table(s) ['queues']")


def test_existing_file_in_the_way_of_a_symlink(tmp_path, datasets):
    toml = experiment(tmp_path, runspec='[[runspec]]\nname = "one"\ndatasets = ["good"]')
    assert run_manager_cli("prepare", str(toml)).returncode == 0
    (run_dir,) = (tmp_path / "runs" / "trial").glob("param_*/one")
    in_the_way = run_dir / "lfadsInput" / "lfads_good.h5"
    in_the_way.unlink()
    in_the_way.write_text("my own notes")
    before = file_states(tmp_path / "runs")
    result = run_manager_cli("prepare", str(toml), "--regenerate")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (f"lfads-manager: error: {in_the_way}: an existing file is in the way of the "
                                      "lfadsInput symlink; move it away or delete it, then prepare again")
    assert in_the_way.read_text() == "my own notes"
    assert file_states(tmp_path / "runs") == before


@pytest.mark.parametrize("where", ["summary.txt", "param_*/one/lfads_train.sh", "data_*/one/lfads_good.h5",
                                   "data_*/one/.export_stamp.json"])
def test_a_folder_in_the_way_of_a_file_is_refused_before_anything_is_written(tmp_path, datasets, where):
    toml = experiment(tmp_path, runspec='[[runspec]]\nname = "one"\ndatasets = ["good"]')
    assert run_manager_cli("prepare", str(toml)).returncode == 0
    collection = tmp_path / "runs" / "trial"
    (in_the_way,) = collection.glob(where)
    in_the_way.unlink()
    in_the_way.mkdir()
    (in_the_way / "mine.txt").write_text("my own notes")
    before = file_states(tmp_path / "runs")
    result = run_manager_cli("prepare", str(toml), "--regenerate")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (f"lfads-manager: error: {in_the_way}: a folder is in the way of a file "
                                                      "the run tree needs; move it away or delete it")
    assert file_states(tmp_path / "runs") == before


@pytest.mark.parametrize("where", ["param_*", "data_*", "param_*/one", "data_*/one", "param_*/one/lfadsInput"])
def test_a_file_in_the_way_of_a_folder_is_refused_before_anything_is_written(tmp_path, datasets, where):
    toml = experiment(tmp_path, runspec='[[runspec]]\nname = "one"\ndatasets = ["good"]')
    assert run_manager_cli("prepare", str(toml)).returncode == 0
    collection = tmp_path / "runs" / "trial"
    (folder,) = collection.glob(where)
    shutil.rmtree(collection)  # a fresh tree: the export must not be written first and left behind
    folder.parent.mkdir(parents=True, exist_ok=True)
    folder.write_text("my own notes")
    before = file_states(tmp_path / "runs")
    result = run_manager_cli("prepare", str(toml))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (f"lfads-manager: error: {folder}: a file is in the way of a folder "
                                                      "the run tree needs; move it away or delete it")
    assert folder.read_text() == "my own notes"
    assert file_states(tmp_path / "runs") == before


def datasets_toml(tmp_path: Path, selection: str) -> Path:
    toml = tmp_path / "experiment.toml"
    toml.write_text(f'[collection]\nroot = "runs"\nname = "x"\n[datasets]\nfolder = "datasets"\n{selection}\n'
                    "single_runs = true\n[params]\nc_batch_size = 4\n")
    return toml


@pytest.mark.parametrize(("selection", "says"), [
    ('glob = "**/*.npz"', "[datasets] monkeyA/day1.npz and monkeyB/day1.npz both give dataset name 'day1'"),
    ('files = ["s,1.npz", "s_1.npz"]', "[datasets] s,1.npz and s_1.npz both give dataset name 's_1'"),
    ('files = ["s_1.npz", "s_1.npz"]', "[datasets] s_1.npz is listed twice; list it once in [datasets] files"),
    ('files = ["x.npz", "x.mat"]', "[datasets] x.npz and x.mat both give dataset name 'x'"),
])
def test_files_that_give_one_dataset_name_are_refused(tmp_path, selection, says):
    for rel in ("monkeyA/day1.npz", "monkeyB/day1.npz", "s,1.npz", "s_1.npz", "x.npz"):
        (tmp_path / "datasets" / rel).parent.mkdir(parents=True, exist_ok=True)
        write_npz_dataset(tmp_path / "datasets" / rel)
    (tmp_path / "datasets" / "x.mat").write_bytes(b"")  # refused by its name, before it is read
    toml = datasets_toml(tmp_path, selection)
    fails(tmp_path, toml, names=toml, says=says, in_process=True)


def test_the_api_refuses_one_name_twice_in_one_list(tmp_path):
    from manager import DatasetCollection, ManagerError

    collection = DatasetCollection(tmp_path)
    with pytest.raises(ManagerError, match=r"a/d\.npz and b/d\.npz both give dataset name 'd'"):
        collection.add_files(["a/d.npz", "b/d.npz"])
    assert len(collection) == 0


def _ragged_cell_mat(path: Path) -> None:
    import scipy.io

    counts = np.random.default_rng(0).poisson(0.2, (40, 6, 20)).astype(float)
    cell = np.empty((40, 1), dtype=object)
    for trial in range(40):
        cell[trial, 0] = counts[trial][:, : 20 - trial % 3]  # per-trial cell, ragged lengths
    scipy.io.savemat(path, {"counts": cell})


def _mat(path: Path, **fields: object) -> None:
    import scipy.io

    scipy.io.savemat(path, {"counts": np.ones((40, 6, 20)), **fields})


UNREADABLE = {
    "empty.mat": (lambda p: p.write_bytes(b""), "cannot read MATLAB file (MatReadError"),
    "corrupt.npz": (lambda p: p.write_text("not a zip"), "not a complete .npz file (no zip archive in it)"),
    "truncated.npz": (lambda p: p.write_bytes(write_npz_dataset(p).read_bytes()[:300]), "not a complete .npz file"),
    "corrupt.h5": (lambda p: p.write_text("not hdf5"), "cannot read the file (OSError: Unable to "),  # h5py < 3.10 omits "synchronously"
    "ragged.mat": (_ragged_cell_mat, "counts is not one array (trials of different lengths?); store counts as one trials"),
    "timestr.mat": (lambda p: _mat(p, timeMs="ms"), "timeMs must be numbers, got 'ms'; store timeMs as the time of each bin"),
    "reversed.mat": (lambda p: _mat(p, timeMs=-np.arange(20.0)),
                     "the time vector does not increase (steps from -1 to -1 ms); store the bin times in increasing order"),
    "tbc.npz": (lambda p: np.savez(p, counts=np.ones((40, 6, 20)), conditionId=np.array(["a", "b"] * 20),
                                   true_rates_by_condition=np.zeros((2, 6, 20))),
                "true_rates_by_condition needs whole-number conditionId, got 'a'"),
    "tbc0.npz": (lambda p: np.savez(p, counts=np.ones((40, 6, 20)), conditionId=np.arange(40) % 4,
                                    true_rates_by_condition=np.zeros((4, 6, 20))),
                 "true_rates_by_condition needs 1-based conditionId (row 1 is condition 1), but conditionId has 0 (0-based?);"
                 " add 1 to conditionId"),
    "tbcmax.npz": (lambda p: np.savez(p, counts=np.ones((40, 6, 20)), conditionId=np.arange(40) % 5 + 1,
                                      true_rates_by_condition=np.zeros((4, 6, 20))),
                   "conditionId goes up to 5 but true_rates_by_condition has 4 conditions"),
    "nochannels.npz": (lambda p: np.savez(p, counts=np.ones((40, 0, 20))), "counts of shape (40, 0, 20) (trials x channels x time) have no channels"),
    "inf.npz": (lambda p: np.savez(p, counts=np.full((40, 6, 20), np.inf)), "inf in spike counts; replace the infinite values"),
    "clock.npz": (lambda p: np.savez(p, counts=np.ones((40, 6, 20)), timeMs=1e8 + np.r_[np.arange(19.0), 19.5]),
                  "inconsistent bin widths in the time vector (from 1 to 1.5 ms)"),
}


@pytest.mark.parametrize("name", sorted(UNREADABLE))
def test_unreadable_or_oddly_shaped_files_name_themselves(tmp_path, name):
    from manager import DatasetCollection, ManagerError

    make, says = UNREADABLE[name]
    make(tmp_path / name)
    (dataset,) = DatasetCollection(tmp_path).add_files([name])
    with pytest.raises(ManagerError) as raised:
        dataset.load_counts()
    message = str(raised.value)
    assert message.startswith(f"{tmp_path / name}: ") and says in message and "\n" not in message


def test_unreadable_file_from_the_cli(tmp_path, datasets):
    (datasets / "corrupt.h5").write_text("not hdf5")
    toml = datasets_toml(tmp_path, 'files = ["good.npz", "corrupt.h5"]')
    fails(tmp_path, toml, names=datasets / "corrupt.h5", says="cannot read the file (OSError: Unable to ")


@pytest.mark.parametrize(("line", "says"), [
    ("spikeBinMs = nan", "[params] spikeBinMs must not be NaN, got nan"),
    ("spikeBinMs = inf", "[params] spikeBinMs must be a positive, finite number of ms, got inf"),
    ("spikeBinMs = -2", "[params] spikeBinMs must be a positive, finite number of ms, got -2.0"),
    ("c_factors_dim = 0", "[params] c_factors_dim must be a whole number of at least 1, got 0"),
    ("c_batch_size = 0", "[params] c_batch_size must be a whole number of at least 1, got 0"),
    ("trainToTestRatio = 0", "[params] trainToTestRatio must be a whole number of at least 1, got 0"),
    ("num_samples_posterior = 0", "[params] num_samples_posterior must be a whole number of at least 1"),
    ('posterior_mean_kind = "bogus"', "[params] posterior_mean_kind must be one of 'posterior_sample_and_average', "
                                      "'posterior_push_mean', got 'bogus'"),
    ('alignmentApproach = "pca"', "[params] alignmentApproach must be one of 'regressGlobalPCs'"),
    ('alignmentExtraArgs = ["foo", 1]', "[params] alignmentExtraArgs: unknown option 'foo'; known: ridgeNormalizeEach"),
    ('alignmentExtraArgs = ["ridgeNormalizeEach", "false"]', "[params] alignmentExtraArgs: ridgeNormalizeEach must be true or"
                                                            " false, got 'false'"),
    ('c_output_dist = "Poisson"', "[params] c_output_dist must be one of 'poisson', 'gaussian', got 'Poisson'"),
    ('c_feedback_factors_or_rates = "rate"', "[params] c_feedback_factors_or_rates must be one of 'factors', 'rates'"),
    ("c_keep_prob = 1.5", "[params] c_keep_prob must be in (0, 1], got 1.5"),
    ("c_gen_dim = 0", "[params] c_gen_dim must be a whole number of at least 1, got 0"),
    ('c_co_prior_var_scale = "abc"', "[params] c_co_prior_var_scale must be a positive, finite number, got 'abc'"),
    ("c_co_prior_var_scale = -0.1", "[params] c_co_prior_var_scale must be a positive, finite number, got -0.1"),
    ("c_co_prior_var_scale = true", "[params] c_co_prior_var_scale must be a positive, finite number, got True"),
    ("c_debug_reduce_timesteps_to = 2.5", "[params] c_debug_reduce_timesteps_to must be a whole number of at least 1"
                                          " (or left out), got 2.5"),
    ('c_debug_reduce_timesteps_to = "x"', "[params] c_debug_reduce_timesteps_to must be a whole number of at least 1"),
    ("c_ic_prior_var_scale = 0.5", "[params] c_ic_prior_var_scale=0.5 must be positive and within [c_ic_prior_var_min=0.1,"
                                   " c_ic_prior_var_max=0.1]"),
    ("c_ic_enc_dim = 0", "[params] c_ic_enc_dim must be at least 1 when c_ic_dim=64 (or set c_ic_dim = 0)"),
    ("c_ci_enc_dim = 0", "[params] c_ci_enc_dim must be at least 1 when c_co_dim=4 (or set c_co_dim = 0)"),
    ("c_con_dim = 0", "[params] c_con_dim must be at least 1 when c_co_dim=4"),
    ("c_prior_ar_nvar = 0", "[params] c_prior_ar_nvar=0 must be positive (the AR(1) innovation variance"),
    ("c_prior_ar_atau = 0", "[params] c_prior_ar_atau=0 must be positive (the AR(1) time constant in bins; 0, white noise,"
                            " only with c_do_train_prior_ar_atau = false)"),
    ("c_prior_ar_atau = -1", "[params] c_prior_ar_atau=-1 must be positive"),
    ('c_device = "cuda:0"', "[params] c_device='cuda:0' is not a TensorFlow device; give /gpu:0 or /cpu:0"),
    ("c_debug_verbose = 0.5", "[params] c_debug_verbose must be true or false, got 0.5"),
])
def test_values_of_the_right_type_that_no_run_can_use(tmp_path, datasets, line, says):
    batch = "" if line.startswith("c_batch_size") else "c_batch_size = 4\n"
    toml = experiment(tmp_path, params=f"{batch}useAlignmentMatrix = true\n{line}",
                      runspec='[[runspec]]\nname = "one"\ndatasets = ["good"]')
    fails(tmp_path, toml, names=toml, says=says, in_process=True)


def test_a_bin_longer_than_the_trials(tmp_path, datasets):
    toml = experiment(tmp_path, params="c_batch_size = 4\nspikeBinMs = 1e308", runspec='[[runspec]]\nname = "one"\ndatasets = ["good"]')
    fails(tmp_path, toml, names=datasets / "good.npz", says="trials are shorter than one 1e+308 ms bin (counts read as"
          " trials×channels×time = (40, 6, 20): 20 bin(s) of 1 ms); lower spikeBinMs")


def test_trials_shorter_than_a_bin_name_the_dataset_at_fault_and_spot_seconds_and_2d_counts(tmp_path, datasets):
    write_npz_dataset(datasets / "secs.npz", timeVecMs=np.arange(20) * 0.01)  # seconds, not ms
    toml = experiment(tmp_path, params="c_batch_size = 4\nspikeBinMs = 2",
                      runspec='[[runspec]]\nname = "both"\ndatasets = ["good", "secs"]')
    fails(tmp_path, toml, names=datasets / "secs.npz", in_process=True,
          says="trials are shorter than one 2 ms bin (counts read as trials×channels×time = (40, 6, 20): 20 bin(s) of 0.01 ms);"
               " is the time vector in seconds (it steps by 0.01)? store it in ms")
    (datasets / "secs.npz").unlink()
    write_npz_dataset(datasets / "flat.npz", counts=np.ones((40, 6)), timeVecMs=None, truth=None)
    toml = experiment(tmp_path, params="c_batch_size = 4\nspikeBinMs = 2",
                      runspec='[[runspec]]\nname = "both"\ndatasets = ["good", "flat"]')
    fails(tmp_path, toml, names=datasets / "flat.npz", in_process=True,
          says="(40, 6, 1): 1 bin(s) of 1 ms); store the counts as trials×channels×time with each trial's bins")


def mat_experiment(tmp_path: Path) -> Path:
    toml = experiment(tmp_path)
    toml.write_text(toml.read_text().replace('glob = "*.npz"', 'glob = "*.*"'))
    return toml


def test_counts_in_matlab_order_in_a_v5_mat_name_the_reading_and_the_permutation(tmp_path, datasets):
    import scipy.io

    rng = np.random.default_rng(0)
    scipy.io.savemat(datasets / "bad.mat", {"counts": rng.poisson(1, (6, 20, 40)).astype(float),  # channels×time×trials
                                            "conditionId": np.arange(40) % 4 + 1.0})
    fails(tmp_path, mat_experiment(tmp_path), names=datasets / "bad.mat", in_process=True,
          says="conditionId has 40 entries for 6 trials (counts read as trials×channels×time = (6, 20, 40));"
               " are the counts channels×time×trials (numpy: counts.transpose(2, 0, 1), MATLAB: permute(counts, [3 1 2]))")


def test_a_v73_mat_written_with_h5py_in_numpy_order_gets_the_reversal_hint(tmp_path, datasets):
    import h5py

    rng = np.random.default_rng(0)
    with h5py.File(datasets / "bad.mat", "w", userblock_size=512) as handle:
        handle["counts"] = rng.poisson(1, (40, 6, 20)).astype(float)  # numpy order: read reversed, (20, 6, 40)
        handle["timeVecMs"] = np.arange(20.0)
    with open(datasets / "bad.mat", "r+b") as handle:
        handle.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64".ljust(116) + bytes(8) + b"\x00\x02IM")
    fails(tmp_path, mat_experiment(tmp_path), names=datasets / "bad.mat", in_process=True,
          says="time vector of shape (20,) does not match 40 time bins (counts read as trials×channels×time = (20, 6, 40));"
               " are the counts time×trials×channels")
    fails(tmp_path, mat_experiment(tmp_path), names=datasets / "bad.mat", in_process=True,
          says="or time×channels×trials (numpy: counts.T, MATLAB: permute(counts, [3 2 1]))? store them as"
               " trials×channels×time; .mat files are read in MATLAB's order, so a v7.3 file written with h5py must hold"
               " the reversed array, counts.T")


def test_no_counts_lists_the_variables_and_struct_fields(tmp_path, datasets):
    import scipy.io

    scipy.io.savemat(datasets / "bad.mat", {"data": {"counts": np.ones((40, 6, 20)), "timeMs": np.arange(20.0)},
                                            "conditionId": np.arange(40) % 4 + 1.0})
    fails(tmp_path, mat_experiment(tmp_path), names=datasets / "bad.mat", in_process=True,
          says="no spike counts found (looked for counts, spikes; the file has struct 'data' with fields counts, timeMs,"
               " 'conditionId'); save the counts as 'counts' (trials x channels x time) (the fields of struct 'data' go in"
               " as variables with MATLAB's save(file, '-struct', 'data'))")


def python_toml(tmp_path: Path, python: str) -> Path:
    toml = tmp_path / "experiment.toml"
    toml.write_text(f'[collection]\nroot = "runs"\nname = "x"\npython = "{python}"\n[datasets]\nfolder = "datasets"\n'
                    'files = ["good.npz"]\nsingle_runs = true\n[params]\nc_batch_size = 4\n')
    return toml


def test_a_relative_python_is_relative_to_the_toml_file(tmp_path, datasets, monkeypatch):
    import sys

    if sys.prefix != sys.base_prefix:  # a virtualenv: its python is one only inside its folder
        (tmp_path / "venv").symlink_to(sys.prefix)
        assert (tmp_path / "venv" / "bin" / "python").exists()
    else:
        (tmp_path / "venv" / "bin").mkdir(parents=True)
        (tmp_path / "venv" / "bin" / "python").symlink_to(sys.executable)
    monkeypatch.chdir(datasets)  # not the TOML's folder
    result = run_manager_cli("prepare", str(python_toml(tmp_path, "venv/bin/python")))
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "runs" / "x").glob("param_*/single_good")
    python = tmp_path / "venv" / "bin" / "python"  # absolute, and the venv's link is kept as is
    assert f"exec {python} -m lfads" in (run_dir / "lfads_train.sh").read_text()
    assert repr(str(python)) in (tmp_path / "runs" / "x" / "run_lfads.py").read_text()


@pytest.mark.parametrize(("python", "says"), [
    ("venv/bin/python", "[collection] python '{tmp}/venv/bin/python' is not an executable file; give the path of an "
                        "existing Python interpreter (e.g. a virtualenv's bin/python); a relative path is relative to this file"),
    ("datasets/good.npz", "[collection] python '{tmp}/datasets/good.npz' is not an executable file"),
    ("no-such-python-here", "[collection] python 'no-such-python-here' is not on PATH"),
])
def test_a_missing_python_is_refused(tmp_path, datasets, python, says):
    toml = python_toml(tmp_path, python)
    fails(tmp_path, toml, names=toml, says=says.format(tmp=tmp_path), in_process=True)


def test_a_python_that_cannot_import_the_queue_and_the_model_is_refused(tmp_path, datasets):
    import sys

    bare = tmp_path / "bare-python"  # isolated, no site-packages: the standard library only
    bare.write_text(f'#!/bin/sh\nexec {sys.executable} -I -S "$@"\n')
    bare.chmod(0o755)
    toml = python_toml(tmp_path, str(bare))
    fails(tmp_path, toml, names=toml, in_process=True,
          says=f"[collection] python '{bare}' cannot import lfads, runqueue, which the step scripts and run_lfads.py need;"
               f" install this package into it ({bare} -m pip install 'lfads-runqueue[model]')")
    wrapped = tmp_path / "wrapped-python"  # another path, the same environment: accepted
    wrapped.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    wrapped.chmod(0o755)
    status, stderr = run_manager_cli_in_process("prepare", str(python_toml(tmp_path, str(wrapped))))
    assert status == 0, stderr


def test_an_absolute_python_missing_here_is_kept_with_a_note(tmp_path, datasets):
    # Prepared on a laptop for the cluster's interpreter: written as given, with a note.
    result = run_manager_cli("prepare", str(python_toml(tmp_path, "/opt/cluster/venv/bin/python")))
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("note: python '/opt/cluster/venv/bin/python' does not exist on this machine") == 1
    (run_dir,) = (tmp_path / "runs" / "x").glob("param_*/single_good")
    assert "exec /opt/cluster/venv/bin/python -m lfads" in (run_dir / "lfads_train.sh").read_text()


def test_a_bare_python_name_is_looked_up_on_path(tmp_path, monkeypatch):
    import os
    import shutil
    import sys

    from manager import DatasetCollection, ManagerError, RunCollection

    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))
    name = Path(sys.executable).name
    collection = RunCollection(tmp_path, "x", DatasetCollection(tmp_path), python=name)
    assert collection.python == os.path.abspath(shutil.which(name))
    with pytest.raises(ManagerError, match=re.escape(f"python '{Path.cwd()}/relative/python' is not")):
        RunCollection(tmp_path, "x", DatasetCollection(tmp_path), python="relative/python")


@pytest.mark.parametrize("value", ['"two hours"', "-5", "0", '""', "nan", "inf", "true"])
def test_a_time_limit_the_queue_cannot_read_is_refused(tmp_path, datasets, value):
    toml = experiment(tmp_path, runspec='[[runspec]]\nname = "one"\ndatasets = ["good"]', extra=f"[queue]\ntime_limit = {value}")
    fails(tmp_path, toml, names=toml, says="[queue] time_limit ", in_process=True)


def test_the_api_refuses_a_time_limit_the_queue_cannot_read(tmp_path):
    from manager import DatasetCollection, ManagerError, RunCollection

    with pytest.raises(ManagerError, match="time_limit 'two hours' is not a positive duration"):
        RunCollection(tmp_path, "x", DatasetCollection(tmp_path), time_limit="two hours")
    assert RunCollection(tmp_path, "x", DatasetCollection(tmp_path), time_limit="1h30m").time_limit == "1h30m"


@pytest.mark.parametrize(("collection", "runspec", "says"), [
    ('name = "a/b"', "", "[collection] collection name 'a/b' cannot be a folder name; use a plain folder name"),
    ('name = "x"', '[[runspec]]\nname = "single_good"\ndatasets = ["good", "other"]',
     "run spec 'single_good' already exists with datasets ['good', 'other']; give one of them another name"),
    ('name = "x"', '[[runspec]]\nname = "r"\ndatasets = ["good"]\n[[runspec]]\nname = "r"\ndatasets = ["other"]',
     "run spec 'r' already exists with datasets ['good']; give one of them another name"),
    # Folders the queue's discovery skips: such runs would be prepared and never trained.
    ('name = "x"', '[[runspec]]\nname = "lfadsOutput"\ndatasets = ["good"]',
     "run spec name 'lfadsOutput' names a folder the queue never looks into (names starting with '.', data_<6"
     " characters>, param_<6 characters>, and __pycache__, lfadsInput, lfadsOutput, node_modules), so its runs would"
     " never be trained; choose another name"),
    ('name = "x"', '[[runspec]]\nname = "data_abcdef"\ndatasets = ["good"]',
     "run spec name 'data_abcdef' names a folder the queue never looks"),
    ('name = "x"', '[[runspec]]\nname = ".x"\ndatasets = ["good"]', "run spec name '.x' names a folder the queue never looks"),
    ('name = ".coll"', "", "[collection] collection name '.coll' names a folder the queue never looks into"),
    ("", "", '[collection] has no name; write name = "..."'),
    ('name = ""', "", "[collection] name must be a non-empty string, got ''; write"),  # once, not "[collection] [collection]"
    ('name = "x"\npython = ""', "", "[collection] python must be a non-empty string, got ''"),
    ('name = "x"', '[[runspec]]\ndatasets = ["good"]', '[[runspec]] #1 has no name; write name = "..."'),
])
def test_collection_and_run_spec_names_name_the_toml(tmp_path, datasets, collection, runspec, says):
    write_npz_dataset(datasets / "other.npz")
    toml = tmp_path / "experiment.toml"
    toml.write_text(f'[collection]\nroot = "runs"\n{collection}\n[datasets]\nfolder = "datasets"\nglob = "*.npz"\n'
                    f'single_runs = true\n[params]\nc_batch_size = 4\n{runspec}\n')
    fails(tmp_path, toml, names=toml, says=says, in_process=True)
    _, stderr = run_manager_cli_in_process("prepare", str(toml))
    assert stderr.count("[collection]") <= 1 and "[[runspec] #" not in stderr, stderr


def test_a_dataset_collection_name_that_is_not_text(tmp_path, datasets):
    toml = datasets_toml(tmp_path, 'files = ["good.npz"]\nname = 5')
    fails(tmp_path, toml, names=toml, says='[datasets] name must be a string, got 5; write name = "..." or leave it out')


def test_a_file_name_that_cannot_make_a_single_run_folder(tmp_path, datasets):
    write_npz_dataset(datasets / "my session.npz")
    toml = datasets_toml(tmp_path, 'glob = "*.npz"')
    fails(tmp_path, toml, names=toml, says="[datasets] single_runs: run spec name 'single_my session' cannot be a folder "
          "name (from the file my session.npz); rename the file (letters, digits and _ . + -) or set single_runs = false")


def test_a_sweep_over_parameters_outside_the_hash_is_refused(tmp_path, datasets):
    toml = experiment(tmp_path, extra='[sweep]\nposterior_mean_kind = ["posterior_sample_and_average", "posterior_push_mean"]',
                      runspec='[[runspec]]\nname = "one"\ndatasets = ["good"]')
    fails(tmp_path, toml, names=toml, says="[sweep] posterior_mean_kind do(es) not change the param hash", in_process=True)


def test_an_old_version_sharing_one_alignment_export_across_factor_counts_is_refused(tmp_path, datasets):
    toml = experiment(tmp_path, params="c_batch_size = 4\nversion = 20170101\nuseSingleDatasetAlignmentMatrix = true",
                      extra="[sweep]\nc_factors_dim = [3, 4]", runspec='[[runspec]]\nname = "one"\ndatasets = ["good"]')
    fails(tmp_path, toml, names=tmp_path / "runs" / "trial", says="differ in c_factors_dim (3 vs 4)", in_process=True)


def test_python_objects_in_an_npz_are_named_with_the_fix(tmp_path, datasets):
    labels = np.array(["left", "right"] * 20, dtype=object)
    write_npz_dataset(datasets / "bad.npz", conditionId=labels)
    fails(tmp_path, experiment(tmp_path), names=datasets / "bad.npz",
          says="'conditionId' holds Python objects (dtype=object), which are not loaded")


def test_an_absolute_glob_is_a_one_line_error(tmp_path, datasets):
    result = run_manager_cli("prepare", str(datasets_toml(tmp_path, f'glob = "{datasets}/*.npz"')))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "is not relative to [datasets] folder" in result.stderr


def test_a_link_that_cannot_be_made_names_the_link_not_its_target(tmp_path):
    from manager.prepare import _link

    entry = tmp_path / "gone" / "lfads_dataset001.h5"  # its folder is missing: os.symlink fails
    with pytest.raises(FileNotFoundError) as failure:
        _link(entry, "../../data_x/lfads_dataset001.h5", force=False)
    assert failure.value.filename == str(entry)
    assert not any(tmp_path.rglob("*.link-tmp"))


def test_a_stitched_dataset_without_condition_ids_is_named(tmp_path):
    from manager_test_helpers import small_collection

    from manager import RunSpec

    (tmp_path / "datasets").mkdir()
    write_npz_dataset(tmp_path / "datasets" / "a.npz", seed=1)
    write_npz_dataset(tmp_path / "datasets" / "b.npz", seed=2, conditionId=None)
    collection = small_collection(tmp_path, ["a.npz", "b.npz"], useAlignmentMatrix=True)
    collection.add_run_spec(RunSpec("both", collection.dataset_collection, ["a", "b"]))
    with pytest.raises(Exception, match=re.escape(f"{tmp_path / 'datasets' / 'b.npz'}: has no conditionId")):
        collection.prepare()


def test_an_experiment_file_that_is_not_utf8_or_is_a_folder(tmp_path, datasets):
    toml = datasets_toml(tmp_path, 'files = ["good.npz"]')
    toml.write_bytes(toml.read_bytes().replace(b'"good.npz"', b'"good.npz"  # caf\xe9'))
    fails(tmp_path, toml, names=toml, says="not UTF-8 text (byte ")
    folder = tmp_path / "experiment.toml.d"
    folder.mkdir()
    fails(tmp_path, folder, names=folder, says="is a folder, not an experiment file; give the path of the .toml file")


def test_bin_times_on_a_session_clock_converted_from_seconds_have_one_width(tmp_path):
    from manager.sequence import sequence_from_fields

    starts_s = np.random.default_rng(0).random(40) * 1e5  # trial starts up to ~28 h into the session
    time_ms = (starts_s[:, None] + np.arange(20)[None, :] * 0.001) * 1000  # rounding error ~1e-8 ms
    data = sequence_from_fields({"counts": np.ones((40, 6, 20)), "timeMs": time_ms}, tmp_path / "clock.npz")
    assert data.bin_width_ms == pytest.approx(1.0, rel=1e-6)


def test_a_single_dataset_alignment_without_condition_ids_names_its_own_switch(tmp_path):
    from manager_test_helpers import small_collection

    (tmp_path / "datasets").mkdir()
    write_npz_dataset(tmp_path / "datasets" / "a.npz", conditionId=None)
    collection = small_collection(tmp_path, ["a.npz"], useSingleDatasetAlignmentMatrix=True)
    with pytest.raises(Exception, match=r"has no conditionId.*or set useSingleDatasetAlignmentMatrix = false$"):
        collection.prepare()


def layout_toml(tmp_path: Path, root: str, name: str, folder: str, glob: str = "*.npz") -> Path:
    toml = tmp_path / "experiment.toml"
    toml.write_text(f'[collection]\nroot = "{root}"\nname = "{name}"\n[datasets]\nfolder = "{folder}"\nglob = "{glob}"\n'
                    'single_runs = true\n[params]\nc_batch_size = 4\n')
    return toml


def test_a_collection_folder_that_is_or_holds_the_datasets_folder_is_refused(tmp_path):
    (tmp_path / "exp" / "data").mkdir(parents=True)
    write_npz_dataset(tmp_path / "exp" / "data" / "good.npz")
    before = file_states(tmp_path)
    toml = layout_toml(tmp_path, ".", "exp", "exp/data")
    status, stderr = run_manager_cli_in_process("prepare", str(toml))
    assert status == 2 and stderr.strip() == (
        f"lfads-manager: error: {toml}: [collection] the datasets folder {tmp_path}/exp/data is inside the collection"
        f" folder {tmp_path}/exp, so the run tree would be written around the raw data; put the collection elsewhere"
        ' (e.g. root = "runs" beside the datasets folder)')
    toml = layout_toml(tmp_path, "exp", "data", "exp/data")
    status, stderr = run_manager_cli_in_process("prepare", str(toml))
    assert status == 2 and f"[collection] the collection folder {tmp_path}/exp/data is the datasets folder" in stderr
    assert file_states(tmp_path) == {**before, "experiment.toml": file_states(tmp_path)["experiment.toml"]}


def test_a_collection_inside_the_datasets_folder_is_refused_only_when_it_holds_a_selected_file(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    write_npz_dataset(folder / "good.npz")
    status, stderr = run_manager_cli_in_process("prepare", str(layout_toml(tmp_path, "data", "runs", "data")))
    assert status == 0, stderr  # data/runs/ beside the data files, which a flat glob never reaches
    write_npz_dataset(folder / "runs" / "copy.npz")
    toml = layout_toml(tmp_path, "data", "runs", "data", glob="**/*.npz")
    status, stderr = run_manager_cli_in_process("prepare", str(toml))
    assert status == 2 and f"[collection] dataset file {folder}/runs/copy.npz is inside the collection folder" in stderr


_GOOD_TABLES = {
    "collection": 'root = "runs"\nname = "trial"',
    "datasets": 'folder = "datasets"\nglob = "*.npz"',
    "params": "c_batch_size = 4\nc_factors_dim = 3",
}


def _experiment_text(tables: dict[str, str | None], tail: str) -> str:
    """The good experiment with some tables replaced (a None value leaves the table out)."""
    merged = {**_GOOD_TABLES, **tables}
    return "".join(f"[{name}]\n{body}\n\n" for name, body in merged.items() if body is not None) + tail


_RUNSPEC = '[[runspec]]\nname = "one"\ndatasets = ["good"]\n'


@pytest.mark.parametrize(("tables", "tail", "says"), [
    ({"collection": None}, _RUNSPEC, "missing [collection] table; add a [collection] table"),
    ({"datasets": 'folder = "datasets"\nglob = "*.npz"\nfolders = "x"'}, _RUNSPEC, "unknown key(s) ['folders'] in [datasets]"),
    ({"datasets": 'folder = "nowhere"\nglob = "*.npz"'}, _RUNSPEC, "dataset folder"),
    ({"datasets": 'folder = "datasets"\nglob = "*.npz"\nfiles = ["good.npz"]'}, _RUNSPEC,
     '[datasets] needs exactly one of files = [...] or glob = "..."'),
    ({"datasets": 'folder = "datasets"\nfiles = []'}, _RUNSPEC, "[datasets] files must be a non-empty list of file names"),
    ({"datasets": 'folder = "datasets"\nglob = "*.mat"'}, _RUNSPEC, "[datasets] glob '*.mat' matches no file in"),
    ({"datasets": 'folder = "datasets"\nfiles = ["gone.npz"]'}, _RUNSPEC, "dataset file"),
    ({"datasets": 'folder = "datasets"\nglob = "*.npz"\nsingle_runs = "yes"'}, _RUNSPEC, "[datasets] single_runs must be true or false"),
    ({"sweep": "c_gen_dim = 16"}, _RUNSPEC, "[sweep] c_gen_dim must be a non-empty list of values; write c_gen_dim = [value, value, ...]"),
    ({"queue": "memory_mb = -5"}, _RUNSPEC, "[queue] memory_mb must be a positive whole number of MB, got -5"),
    ({}, '[runspec]\nname = "one"\ndatasets = ["good"]\n', "runspec entries must be written as [[runspec]] tables"),
    ({}, '[[runspec]]\nname = "one"\ndatasets = ["good"]\nsessions = 2\n', "unknown key(s) ['sessions'] in [[runspec]] #1"),
    ({}, '[[runspec]]\nname = "one"\ndatasets = []\n', "[[runspec]] 'one': datasets must be a non-empty list of dataset names"),
    ({}, "", "no run specs; add [[runspec]] entries or set single_runs = true in [datasets]"),
    ({}, "[[runspec]\n", "not valid TOML ("),
], ids=["no-collection", "unknown-key", "no-folder", "files-and-glob", "empty-files", "glob-matches-nothing",
        "missing-file", "single-runs-not-bool", "sweep-not-a-list", "bad-memory", "runspec-single-brackets",
        "runspec-unknown-key", "runspec-no-datasets", "no-runspecs", "bad-toml"])
def test_an_experiment_file_of_the_wrong_shape_names_itself_and_the_fix(tmp_path, datasets, tables, tail, says):
    toml = tmp_path / "experiment.toml"
    toml.write_text(_experiment_text(tables, tail))
    fails(tmp_path, toml, names=toml, says=says, in_process=True)


def test_a_missing_experiment_file(tmp_path):
    fails(tmp_path, tmp_path / "nope.toml", names=tmp_path / "nope.toml", says="experiment file not found; check the path", in_process=True)


@pytest.mark.parametrize("pattern", ["s**.npz", "."])
def test_a_glob_pathlib_cannot_read_is_a_one_line_error(tmp_path, datasets, pattern):
    toml = experiment(tmp_path)
    toml.write_text(toml.read_text().replace('glob = "*.npz"', f'glob = "{pattern}"'))
    fails(tmp_path, toml, names=toml, says=f"[datasets] glob {pattern!r} is not a valid pattern", in_process=True)
