"""The Lorenz generator: reproducible, the documented layout, and the original's recipe."""

from __future__ import annotations

import numpy as np

from manager.lorenz import generate_lorenz_datasets, lorenz_trajectories
from manager.matfile import read_mat

TINY = {"n_conditions": 4, "min_trials_per_condition": 3, "max_trials_per_condition": 5, "n_time": 60}


def test_same_seed_gives_same_bytes_and_dataset_k_does_not_depend_on_count(tmp_path):
    first = generate_lorenz_datasets(tmp_path / "a", n_datasets=2, seed=3, **TINY)
    second = generate_lorenz_datasets(tmp_path / "b", n_datasets=3, seed=3, **TINY)
    assert [p.name for p in second] == ["dataset001.mat", "dataset002.mat", "dataset003.mat"]
    assert first[0].read_bytes() == second[0].read_bytes()
    assert first[1].read_bytes() == second[1].read_bytes()
    other_seed = generate_lorenz_datasets(tmp_path / "c", n_datasets=1, seed=4, **TINY)
    assert other_seed[0].read_bytes() != first[0].read_bytes()


def test_every_condition_of_a_dataset_has_its_trials_per_condition(tmp_path):
    # generateDemoDatasets draws one count per dataset (nTrialsCByDataset), so a dataset has n_conditions x n trials.
    paths = generate_lorenz_datasets(tmp_path, n_datasets=6, seed=1, **{**TINY, "min_trials_per_condition": 3,
                                                                         "max_trials_per_condition": 9})
    per_dataset = []
    for path in paths:
        counts = np.unique(read_mat(path)["conditionId"].ravel(), return_counts=True)[1]
        assert counts.size == 4 and len(set(counts)) == 1, counts  # balanced conditions
        per_dataset.append(int(counts[0]))
    assert all(3 <= n <= 9 for n in per_dataset) and len(set(per_dataset)) > 1, per_dataset


def test_fields_follow_the_recipe(tmp_path):
    (path,) = generate_lorenz_datasets(tmp_path, n_datasets=1, seed=0, **TINY)
    fields = read_mat(path)
    spikes, condition_id = fields["spikes"], fields["conditionId"].ravel()
    n_trials, n_channels, n_time = spikes.shape
    assert n_time == 60 and 25 <= n_channels <= 35 and 12 <= n_trials <= 20
    assert set(np.unique(spikes)) <= {0, 1}
    assert set(condition_id) == {1, 2, 3, 4}
    loading = fields["W"]
    assert np.all(np.diff(loading[:, 0]) >= 0)  # rows sorted by column 1
    assert np.all((np.abs(loading) >= 1) & (np.abs(loading) < 2))
    trajectories = fields["lorenz_trajectories"]
    rates = np.exp(np.clip(np.einsum("nk,ktc->cnt", loading, trajectories) + fields["b"].reshape(1, -1, 1), -20, 20))
    # the truth is the expected count of the stored (binarised) spikes, not the Poisson rate
    np.testing.assert_allclose(fields["true_rates_by_condition"], 1.0 - np.exp(-rates), rtol=1e-6)
    assert fields["true_rates_by_condition"].max() <= 1.0


def test_only_missing_keeps_existing_files(tmp_path):
    paths = generate_lorenz_datasets(tmp_path, n_datasets=2, **TINY)
    before = paths[0].stat().st_mtime_ns
    paths[1].unlink()
    generate_lorenz_datasets(tmp_path, n_datasets=2, only_missing=True, **TINY)
    assert paths[0].stat().st_mtime_ns == before and paths[1].exists()


def test_trajectories_are_normalised_lorenz():
    trajectories = lorenz_trajectories(3, 400, 500, 0.006, np.random.default_rng(0))
    assert trajectories.shape == (3, 400, 3)
    np.testing.assert_allclose(trajectories.mean(axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(trajectories.max(axis=1), 1)


def test_coarser_bins_sum_the_one_ms_draws(tmp_path):
    (fine,) = generate_lorenz_datasets(tmp_path / "fine", n_datasets=1, **TINY)
    (coarse,) = generate_lorenz_datasets(tmp_path / "coarse", n_datasets=1, bin_ms=5, **TINY)
    fine_fields, coarse_fields = read_mat(fine), read_mat(coarse)
    # Same random stream, so the 5 ms counts are the 1 ms spikes summed in groups of five.
    summed = fine_fields["spikes"].reshape(*fine_fields["spikes"].shape[:2], 12, 5).sum(axis=3)
    np.testing.assert_array_equal(coarse_fields["spikes"], summed)
    np.testing.assert_array_equal(coarse_fields["timeMs"].ravel(), np.arange(0, 60, 5))
    truth = fine_fields["true_rates_by_condition"].astype(np.float64).reshape(4, -1, 12, 5).sum(axis=3)
    np.testing.assert_allclose(coarse_fields["true_rates_by_condition"], truth, rtol=1e-5)
