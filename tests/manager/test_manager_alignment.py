"""Stitching: each dataset's alignment matrix maps its condition averages onto the global PCs."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from manager.collection import RunCollection
from manager.datasets import DatasetCollection
from manager.lorenz import generate_lorenz_datasets
from manager.matfile import read_mat
from manager.params import RunParams
from manager.runspec import RunSpec

N_DATASETS, BIN = 3, 10


def stitched_export(tmp_path, approach):
    paths = generate_lorenz_datasets(tmp_path / "datasets", n_datasets=N_DATASETS, n_conditions=20,
                                     min_trials_per_condition=12, max_trials_per_condition=14, n_time=300)
    datasets = DatasetCollection(tmp_path / "datasets")
    datasets.add_files([p.name for p in paths])
    collection = RunCollection(tmp_path / "runs", "stitch", datasets)
    collection.add_params(RunParams(spikeBinMs=BIN, c_batch_size=10, c_factors_dim=8, useAlignmentMatrix=True,
                                    alignmentApproach=approach))
    collection.add_run_spec(RunSpec("all", datasets, None))
    collection.prepare()
    (run,) = collection.runs
    return run


def condition_averages(h5_path):
    """Channels x (time*condition) trial averages, computed here from the exported data."""
    with h5py.File(h5_path, "r") as handle:
        data = np.empty((handle["train_data"].shape[0] + handle["valid_data"].shape[0], *handle["train_data"].shape[1:]))
        data[handle["train_inds"][()].astype(int) - 1] = handle["train_data"][()]
        data[handle["valid_inds"][()].astype(int) - 1] = handle["valid_data"][()]
        matrix, bias = handle["alignment_matrix_cxf"][()], handle["alignment_bias_c"][()]
    return data, matrix, bias


@pytest.mark.parametrize("approach", ["regressGlobalPCs", "ridgeRegressGlobalPCs"])
def test_alignment_reconstructs_the_global_pcs(tmp_path, approach):
    run = stitched_export(tmp_path, approach)
    averages, matrices, biases = [], [], []
    for name in run.dataset_names:
        data, matrix, bias = condition_averages(run.path_common_data / f"lfads_{name}.h5")
        labels = read_mat(run.spec.datasets[run.dataset_names.index(name)].path)["conditionId"].ravel()
        conditions = np.unique(labels)
        avg = np.stack([data[labels == c].mean(axis=0).T for c in conditions], axis=2)  # C x T x K
        averages.append(avg.reshape(avg.shape[0], -1))
        matrices.append(matrix)
        biases.append(bias)
    stacked = np.vstack(averages)
    centered = stacked - stacked.mean(axis=1, keepdims=True)
    u, _s, _vt = np.linalg.svd(centered, full_matrices=False)
    global_pcs = u[:, :3].T @ centered  # the three leading global PCs, time*condition samples
    for avg, matrix, bias in zip(averages, matrices, biases, strict=True):
        assert matrix.shape == (avg.shape[0], 8)
        np.testing.assert_allclose(bias, avg.mean(axis=1), rtol=1e-9)  # positive per-channel mean
        reconstruction = matrix.T @ (avg - bias[:, None])
        for pc in range(3):
            truth, guess = global_pcs[pc], reconstruction[pc]
            sign = np.sign(np.dot(truth, guess))  # PCs are defined up to sign
            r2 = 1 - np.sum((sign * guess - truth) ** 2) / np.sum((truth - truth.mean()) ** 2)
            assert r2 > 0.9, f"{approach}: PC{pc + 1} reconstructed with R²={r2:.3f}"
    assert (run.path_common_data / "alignment_reconstruction.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("normalize_each", [False, True])
def test_ridge_alignment_is_ridge_cv_and_does_not_depend_on_the_units_of_the_counts(normalize_each):
    from manager.alignment import _ridge_fit

    rng = np.random.default_rng(0)
    x = rng.poisson(3.0, size=(60, 5)).astype(float)
    x -= x.mean(axis=0)
    y = x @ rng.normal(size=(5, 2)) + rng.normal(scale=2.0, size=(60, 2))
    y -= y.mean(axis=0)
    w = _ridge_fit(x, y, normalize_each)
    # ridge_cv divides the inputs by their std before choosing λ: counts in other units (another
    # bin width, say) give the same map in those units.
    np.testing.assert_allclose(_ridge_fit(10.0 * x, y, normalize_each), w / 10.0, rtol=1e-9, atol=1e-12)
    # Shrunk toward zero against least squares, as a ridge fit is.
    assert np.linalg.norm(w) < np.linalg.norm(np.linalg.lstsq(x, y, rcond=None)[0])


def test_ridge_alignment_sees_the_samples_in_matlabs_order(monkeypatch):
    # ridge_cv's folds interleave rows, so the λ it picks depends on the order of the samples: MATLAB's
    # all_data_tensor(:, :) has time fastest, then condition.
    import manager.alignment as alignment
    from manager.sequence import SequenceData

    rng = np.random.default_rng(1)
    n_time, conditions = 6, np.array([0, 1, 2, 0, 1, 2, 0, 1, 2])
    datasets = [SequenceData(rng.poisson(2.0, size=(9, channels, n_time)), np.arange(n_time, dtype=float), 1.0,
                             condition_id=conditions) for channels in (4, 5)]
    seen: list[np.ndarray] = []
    real_fit = alignment._ridge_fit
    monkeypatch.setattr(alignment, "_ridge_fit", lambda x, y, each: seen.append(x) or real_fit(x, y, each))
    result = alignment.compute_alignment(datasets, [1, 1], 3, "ridgeRegressGlobalPCs")
    for data, x in zip(datasets, seen, strict=True):
        averages = np.stack([data.counts[conditions == c].mean(axis=0) for c in (0, 1, 2)], axis=2)  # C x T x K
        matlab_order = averages.reshape(averages.shape[0], -1, order="F").T  # (T·K) x C, time fastest
        np.testing.assert_allclose(x, matlab_order - matlab_order.mean(axis=0))
    assert result.pc_avg_all.shape == (3, n_time, 3)
    # The global PCs and reconstructions come back as PC x time x condition.
    recon = result.reconstruction_by_dataset[0]
    bias = result.alignments[0].bias_c
    averages = np.stack([datasets[0].counts[conditions == c].mean(axis=0) for c in (0, 1, 2)], axis=2)
    expected = np.einsum("cf,ctk->ftk", result.alignments[0].matrix_cxf[:, :3], averages - bias[:, None, None])
    np.testing.assert_allclose(recon, expected, atol=1e-10)
