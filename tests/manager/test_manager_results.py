"""Loading results: posterior means back in trial order, fitlog.csv, and `lfads-manager report`."""

from __future__ import annotations

import dataclasses
import re

import h5py
import numpy as np
import pytest
from manager_test_helpers import run_manager_cli, small_collection, write_fake_posterior, write_npz_dataset

from manager.collection import RunCollection
from manager.datasets import DatasetCollection
from manager.errors import ManagerError
from manager.matfile import read_mat, write_mat
from manager.params import RunParams
from manager.results import fit_log, load_posterior_means
from manager.runspec import RunSpec

FACTORS, GEN = 3, 5
FITLOG = [
    "epoch,0, step,8, total,900.00,950.00,       recon,880.00,940.00, kl,20.00,10.00, l2,0.50000,       klweight,0.50, l2weight,0.50",
    "epoch,1, step,16, total,700.00,720.00,       recon,690.00,700.00, kl,10.00,20.00, l2,0.40000,       klweight,1.00, l2weight,1.00",
    "epoch,2, step,24, total,650.00,710.00,       recon,640.00,690.00, kl,10.00,20.00, l2,0.30000,       klweight,1.00, l2weight,1.00",
    "epoch,3, step,32, total,600.00,715.00,       recon,590.00,695.00, kl,10.00,20.00, l2,0.20000,       klweight,1.00, l2weight,1.00",
]


@pytest.fixture
def trained_run(tmp_path):
    """A prepared run whose lfadsOutput holds files shaped like the model's (written here with h5py)."""
    (tmp_path / "datasets").mkdir()
    write_npz_dataset(tmp_path / "datasets" / "ds.npz", n_trials=37, n_time=20)
    collection = small_collection(tmp_path, ["ds.npz"], spikeBinMs=2)
    collection.prepare()
    (run,) = collection.runs
    with h5py.File(run.path / "lfadsInput" / "lfads_ds.h5", "r") as inputs:
        for split in ("train", "valid"):
            inds = inputs[f"{split}_inds"][()].astype(int) - 1
            truth = inputs[f"{split}_truth"][()]
            n, t, _ = truth.shape
            out = run.path / "lfadsOutput" / f"model_runs_ds.h5_{split}_posterior_sample_and_average"
            out.parent.mkdir(exist_ok=True)
            with h5py.File(out, "w") as handle:
                handle["output_dist_params"] = truth * 0.9  # counts per bin
                handle["factors"] = np.broadcast_to(inds[:, None, None], (n, t, FACTORS)).astype(float)
                handle["gen_states"] = np.zeros((n, t, GEN))
                handle["gen_ics"] = np.repeat(inds[:, None], GEN, axis=1).astype(float)
                handle["post_g0_mean"] = np.zeros((n, 4))
                handle["costs"] = inds.astype(float)
    (run.path / "lfadsOutput" / "fitlog.csv").write_text("\n".join(FITLOG) + "\n")
    return run


def test_posterior_means_come_back_in_the_original_trial_order(trained_run):
    (means,) = load_posterior_means(trained_run).values()
    n_trials = 37
    np.testing.assert_array_equal(means.factors[:, 0, 0], np.arange(n_trials))
    np.testing.assert_array_equal(means.generator_ics[:, 0], np.arange(n_trials))
    np.testing.assert_array_equal(means.costs, np.arange(n_trials))
    assert means.controller_outputs is None  # no controller in these files
    np.testing.assert_array_equal(means.valid_inds, np.arange(0, n_trials, 5))
    np.testing.assert_allclose(means.rates, means.rates_per_bin * 1000 / 2)  # Hz with 2 ms bins
    np.testing.assert_array_equal(means.time_ms, np.arange(0, 20, 2.0))
    assert means.rates.shape == (n_trials, 10, 6)
    # The same from a bare run folder (what the report command has).
    (by_path,) = load_posterior_means(trained_run.path).values()
    np.testing.assert_array_equal(by_path.rates, means.rates)


def test_fit_log_reads_the_original_format(trained_run):
    log = fit_log(trained_run)
    np.testing.assert_array_equal(log.epoch, [0, 1, 2, 3])
    np.testing.assert_array_equal(log.total_valid, [950, 720, 710, 715])
    np.testing.assert_array_equal(log.l2, [0.5, 0.4, 0.3, 0.2])
    assert log.lve_index == 2  # lowest valid cost once both weights reached 1


def test_missing_outputs_are_explained(trained_run):
    for path in (trained_run.path / "lfadsOutput").glob("model_runs_*"):
        path.unlink()
    with pytest.raises(ManagerError, match=re.escape("no posterior means for ds; run lfads_posterior_mean_sample.sh")):
        load_posterior_means(trained_run)


def test_missing_outputs_of_a_failed_run_point_at_its_failure_not_at_sampling(trained_run):
    for path in (trained_run.path / "lfadsOutput").glob("model_runs_*"):
        path.unlink()
    (trained_run.path / "lfads.failed").write_text('{"reason": "time_limit"}')
    with pytest.raises(ManagerError, match=re.escape(f"no posterior means for ds; the run failed (see {trained_run.path / 'lfads.failed'}")):
        load_posterior_means(trained_run)


def test_report_writes_plots_and_prints_r2(trained_run):
    result = run_manager_cli("report", str(trained_run.path))
    assert result.returncode == 0, result.stderr
    with h5py.File(trained_run.path / "lfadsInput" / "lfads_ds.h5", "r") as inputs:
        truth = inputs["valid_truth"][()]
    flat = truth.reshape(-1, truth.shape[-1])  # per channel over trials x time, then averaged
    expected = np.mean(1 - np.sum((0.1 * flat) ** 2, axis=0) / np.sum((flat - flat.mean(axis=0)) ** 2, axis=0))
    assert f"ds: valid-trial rate R² vs truth = {expected:.3f}" in result.stdout
    for name in ("training_curves.png", "rates_vs_truth_ds.png"):
        assert (trained_run.path / "report" / name).read_bytes()[:4] == b"\x89PNG"


def test_report_refuses_a_fitlog_it_cannot_read(trained_run):
    fitlog = trained_run.path / "lfadsOutput" / "fitlog.csv"
    fitlog.write_text("this is not, a fit log\n")
    result = run_manager_cli("report", str(trained_run.path))  # the posterior means still give their plot
    assert result.returncode == 0, result.stderr
    assert f"skipped the training curves: {fitlog}: no 'epoch,N, step,N, ...' rows in fitlog.csv" in result.stdout
    assert not (trained_run.path / "report" / "training_curves.png").exists()
    for path in (trained_run.path / "lfadsOutput").glob("model_runs_*"):
        path.unlink()
    result = run_manager_cli("report", str(trained_run.path))
    assert result.returncode == 2
    assert result.stderr.startswith(f"lfads-manager: error: {fitlog}: no 'epoch,N, step,N, ...' rows in fitlog.csv")


def test_report_on_something_that_is_not_a_run(tmp_path, trained_run):
    result = run_manager_cli("report", str(tmp_path / "nonexistent"))
    assert result.returncode == 2 and result.stderr.startswith(f"lfads-manager: error: {tmp_path / 'nonexistent'}: no such folder; ")
    a_file = trained_run.path / "lfads_train.sh"
    result = run_manager_cli("report", str(a_file))
    assert result.returncode == 2 and result.stderr.startswith(f"lfads-manager: error: {a_file}: a file, not a run folder; ")
    collection_dir = trained_run.collection.path
    result = run_manager_cli("report", str(collection_dir))
    assert result.returncode == 2
    assert result.stderr.startswith(f"lfads-manager: error: {collection_dir}: not a run folder (it has no lfads_train.sh); ")


def test_r_squared_leaves_out_channels_whose_truth_is_constant():
    import numpy as np

    from manager.report import r_squared

    rng = np.random.default_rng(0)
    truth = rng.random((24, 20, 10))
    truth[..., 9] = 0.6  # a constant non-zero rate: its float mean is inexact, its variance ~1e-28
    predicted = truth + 0.01 * rng.standard_normal(truth.shape)
    expected = r_squared(predicted[..., :9], truth[..., :9])
    assert 0.99 < expected < 1.0
    assert r_squared(predicted, truth) == expected


def test_report_plots_trials_without_a_condition_as_their_own_group(trained_run):
    from manager.report import rates_png

    (means,) = load_posterior_means(trained_run).values()
    labels = np.array([1.0, 2.0] * 20)[: means.rates.shape[0]]
    labels[means.valid_inds[:3]] = np.nan  # MATLAB's missing condition
    truth = means.rates_per_bin / 0.9
    png = rates_png(dataclasses.replace(means, condition_id=labels), truth)
    assert png[:4] == b"\x89PNG"


def test_a_refused_report_leaves_no_folder_and_old_plots_of_dropped_datasets_go(trained_run):
    report = trained_run.path / "report"
    fitlog = trained_run.path / "lfadsOutput" / "fitlog.csv"
    posterior = sorted((trained_run.path / "lfadsOutput").glob("model_runs_*"))
    kept = {path: path.read_bytes() for path in posterior}
    for path in posterior:
        path.unlink()
    fitlog.write_text("")
    assert run_manager_cli("report", str(trained_run.path)).returncode == 2
    assert not report.exists()

    for path, data in kept.items():
        path.write_bytes(data)
    report.mkdir()
    (report / "rates_vs_truth_gone.png").write_bytes(b"\x89PNG old")  # of a dataset the spec dropped
    (report / "my_notes.txt").write_text("mine")
    assert run_manager_cli("report", str(trained_run.path)).returncode == 0
    assert sorted(path.name for path in report.iterdir()) == ["my_notes.txt", "r2.txt", "rates_vs_truth_ds.png"]


def test_a_run_folder_without_truth_knows_its_bin_width(tmp_path):
    # 1000 1-ms bins at 60 ms: 16 output bins, and 1000 // 16 = 62 would be a wrong guess.
    (tmp_path / "datasets").mkdir()
    counts = np.random.default_rng(0).poisson(0.05, size=(40, 4, 1000)).astype(float)
    write_npz_dataset(tmp_path / "datasets" / "ds.npz", counts=counts, timeVecMs=np.arange(1000.0), truth=None)
    collection = small_collection(tmp_path, ["ds.npz"], spikeBinMs=60)
    collection.prepare()
    (run,) = collection.runs
    write_fake_posterior(run)
    by_run, by_folder = (load_posterior_means(r)["ds"] for r in (run, run.path))
    assert by_run.spike_bin_ms == by_folder.spike_bin_ms == 60.0
    np.testing.assert_array_equal(by_folder.time_ms, np.arange(16) * 60.0)
    np.testing.assert_array_equal(by_folder.raw_counts, np.transpose(counts, (0, 2, 1)))  # trials x time x channels
    # A folder from before inputInfo held spikeBinMs: the counts pin the rebinning down.
    info = run.path / "lfadsInput" / "inputInfo_ds.mat"
    fields = read_mat(info)
    del fields["spikeBinMs"]
    info.unlink()
    write_mat(info, fields)
    assert load_posterior_means(run.path)["ds"].spike_bin_ms == 60.0


def test_text_condition_labels_load_one_per_trial_and_the_report_plots_them(tmp_path):
    (tmp_path / "datasets").mkdir()
    labels = np.array(["left", "right", "up"])[np.arange(40) % 3]
    write_npz_dataset(tmp_path / "datasets" / "ds.npz", conditionId=labels)
    collection = small_collection(tmp_path, ["ds.npz"], spikeBinMs=2)
    collection.prepare()
    (run,) = collection.runs
    write_fake_posterior(run)
    means = load_posterior_means(run.path)["ds"]
    assert means.condition_id.tolist() == labels.tolist()
    result = run_manager_cli("report", str(run.path))
    assert result.returncode == 0, result.stderr
    assert (run.path / "report" / "rates_vs_truth_ds.png").exists()


def test_gaussian_outputs_split_means_from_variances(tmp_path):
    (tmp_path / "datasets").mkdir()
    write_npz_dataset(tmp_path / "datasets" / "ds.npz")
    collection = small_collection(tmp_path, ["ds.npz"], spikeBinMs=2, c_output_dist="gaussian")
    collection.prepare()
    (run,) = collection.runs
    write_fake_posterior(run, gaussian=True)
    means = load_posterior_means(run)["ds"]
    assert means.rates.shape == (40, 10, 6) and means.output_variances.shape == (40, 10, 6)
    np.testing.assert_array_equal(means.output_variances, 0.25)
    assert run_manager_cli("report", str(run.path)).returncode == 0


def test_the_kind_the_posterior_script_writes_is_the_one_read(trained_run):
    write_fake_posterior(trained_run, kind="posterior_push_mean", scale=0.5)
    script = trained_run.path / "lfads_posterior_mean_sample.sh"
    script.write_text(script.read_text().replace("--kind=posterior_sample_and_average", "--kind=posterior_push_mean"))
    (truth_scaled,) = load_posterior_means(trained_run.path).values()
    (older,) = load_posterior_means(trained_run.path, "posterior_sample_and_average").values()
    np.testing.assert_allclose(truth_scaled.rates_per_bin, older.rates_per_bin * 0.5 / 0.9)


def test_files_of_the_older_posterior_sample_name_load_through_a_run(trained_run):
    out = trained_run.path / "lfadsOutput"
    for split in ("train", "valid"):
        old = out / f"model_runs_ds.h5_{split}_posterior_sample_and_average"
        old.rename(out / f"model_runs_ds.h5_{split}_posterior_sample")
    assert load_posterior_means(trained_run)["ds"].rates.shape == (37, 10, 6)


def test_trials_the_posterior_step_left_out_are_nan(trained_run):
    write_fake_posterior(trained_run, limit=3)
    means = load_posterior_means(trained_run)["ds"]
    sampled = np.concatenate([means.train_inds[:3], means.valid_inds[:3]])
    assert np.isfinite(means.rates[sampled]).all()
    rest = np.setdiff1d(np.arange(37), sampled)
    assert np.isnan(means.rates[rest]).all()
    result = run_manager_cli("report", str(trained_run.path))
    assert result.returncode == 0, result.stderr


def test_datasets_come_back_in_the_run_specs_order(tmp_path):
    (tmp_path / "datasets").mkdir()
    for name in ("zeta", "alpha"):
        write_npz_dataset(tmp_path / "datasets" / f"{name}.npz")
    datasets = DatasetCollection(tmp_path / "datasets")
    datasets.add_files(["zeta.npz", "alpha.npz"])
    collection = RunCollection(tmp_path / "runs", "two", datasets)
    collection.add_params(RunParams(c_batch_size=4, c_factors_dim=3))
    collection.add_run_spec(RunSpec("both", datasets, ["zeta", "alpha"]))
    collection.prepare()
    (run,) = collection.runs
    write_fake_posterior(run)
    assert list(load_posterior_means(run)) == ["zeta", "alpha"]


def test_fit_log_keeps_the_epochs_a_killed_run_logged_again_so_the_lve_row_is_the_lve_checkpoints(trained_run):
    """A killed run resumes at its last periodic checkpoint and logs those epochs again. The rows it
    logged past that checkpoint stay: one of them may be the LVE checkpoint a resumed run keeps."""
    row = ("epoch,{e}, step,{s}, total,{c:.2f},{c:.2f},       recon,1.00,1.00, kl,1.00,1.00, l2,0.10000,"
           "       klweight,1.00, l2weight,1.00")
    killed = [row.format(e=e, s=8 * (e + 1), c=100 - e) for e in range(6)]  # its best: epoch 5 (step 48)
    resumed = [row.format(e=e, s=8 * (e + 1), c=99) for e in range(4, 8)]  # from the checkpoint at step 32
    (trained_run.path / "lfadsOutput" / "fitlog.csv").write_text("\n".join(killed + resumed) + "\n")
    log = fit_log(trained_run)
    np.testing.assert_array_equal(log.epoch, [0, 1, 2, 3, 4, 5, 4, 5, 6, 7])
    assert (log.lve_index, log.lve_epoch, log.step[log.lve_index]) == (5, 5, 48)


def test_a_truncated_posterior_or_input_file_is_named_with_its_fix(trained_run):
    posterior = trained_run.path / "lfadsOutput" / "model_runs_ds.h5_valid_posterior_sample_and_average"
    posterior.write_bytes(posterior.read_bytes()[:600])
    with pytest.raises(ManagerError, match=re.escape(f"{posterior}: cannot read this HDF5 file")) as error:
        load_posterior_means(trained_run)
    assert "run lfads_posterior_mean_sample.sh again" in str(error.value)
    result = run_manager_cli("report", str(trained_run.path))
    assert result.returncode == 2
    assert result.stderr.startswith(f"lfads-manager: error: {posterior}: cannot read this HDF5 file"), result.stderr


def test_a_missing_input_info_file_points_at_prepare_not_at_the_users_matlab(trained_run):
    info = trained_run.path / "lfadsInput" / "inputInfo_ds.mat"
    info.unlink()
    with pytest.raises(ManagerError, match=re.escape(f"{info}: cannot read MATLAB file (FileNotFoundError")) as error:
        load_posterior_means(trained_run)
    assert str(error.value).endswith("prepare the collection again with --regenerate (it rewrites the exported inputs)")
