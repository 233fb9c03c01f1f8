"""Posterior sampling: deterministic under a seed, independent of batching, equal to the per-trial method."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from lfads import posterior  # noqa: E402
from lfads.build import RunContext  # noqa: E402
from lfads.flags import parse_flags  # noqa: E402
from lfads.model.lfads_model import MEAN, SAMPLE  # noqa: E402
from lfads.run import prepare  # noqa: E402

SAMPLES = 5


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory, dataset_factory: Callable[..., dict[str, np.ndarray]],
            tiny_flags: list[str]) -> RunContext:
    root = tmp_path_factory.mktemp("posterior")
    dataset_factory(root / "in" / "lfads_d.h5", trials=30, steps=10, neurons=5, ext_dim=1)
    # external inputs injected into the generator, so they are tiled with the samples too
    flags = parse_flags([f"--data_dir={root / 'in'}", "--data_filename_stem=lfads", f"--lfads_save_dir={root / 'out'}",
                         *tiny_flags, "--device=/cpu:0", "--batch_size=4", "--ext_input_dim=1",
                         "--inject_ext_input_to_gen=true"])
    return prepare(flags)  # a fresh model: sampling semantics do not need training


def _valid(ctx: RunContext) -> tuple[np.ndarray, np.ndarray]:
    data, ext = ctx.datasets[0].split("valid")
    assert data is not None and ext is not None
    return data, ext


def test_vectorised_averages_match_the_original_per_trial_method(context: RunContext,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    sampler = posterior.Sampler(context)
    key = posterior.SplitKey(0, 1)
    # A small budget splits the 6 trials into calls of 4 (the last one padded).
    per_sample = posterior.per_sample_elements(context, 0)
    monkeypatch.setattr(posterior, "ELEMENT_BUDGET", 4 * SAMPLES * per_sample)
    assert posterior.trials_per_call(context, 0, SAMPLES, 6) == 4
    fast = posterior.average_split(sampler, key, *_valid(context), SAMPLES, base_seed=5)
    slow = posterior.average_per_trial(sampler, key, *_valid(context), SAMPLES, base_seed=5)
    assert fast.keys() == slow.keys()
    for name in fast:
        np.testing.assert_allclose(fast[name], slow[name], rtol=2e-4, atol=2e-4, err_msg=name)
    # averages really are over distinct samples: the controller outputs vary across trials and seeds
    other_seed = posterior.average_split(sampler, key, *_valid(context), SAMPLES, base_seed=6)
    assert not np.allclose(fast["controller_outputs"], other_seed["controller_outputs"])


def test_sampling_is_deterministic_under_a_seed_whatever_the_grouping(context: RunContext,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    sampler = posterior.Sampler(context)
    key = posterior.SplitKey(0, 1)
    first = posterior.average_split(sampler, key, *_valid(context), SAMPLES, base_seed=9)
    again = posterior.average_split(sampler, key, *_valid(context), SAMPLES, base_seed=9)
    monkeypatch.setattr(posterior, "ELEMENT_BUDGET", 1)  # one trial per call
    one_by_one = posterior.average_split(sampler, key, *_valid(context), SAMPLES, base_seed=9)
    for name in first:
        np.testing.assert_array_equal(first[name], again[name], err_msg=name)
        np.testing.assert_allclose(first[name], one_by_one[name], rtol=1e-5, atol=1e-5, err_msg=name)


def test_push_mean_is_noise_free_and_iwae_never_exceeds_vae(context: RunContext) -> None:
    sampler = posterior.Sampler(context)
    key = posterior.SplitKey(0, 1)
    a = posterior.average_split(sampler, key, *_valid(context), 1, base_seed=1, mode=MEAN)
    b = posterior.average_split(sampler, key, *_valid(context), 1, base_seed=2, mode=MEAN)
    np.testing.assert_array_equal(a["output_dist_params"], b["output_dist_params"])
    sampled = posterior.average_split(sampler, key, *_valid(context), SAMPLES, base_seed=1, mode=SAMPLE)
    assert np.all(sampled["nll_bound_iwaes"] <= sampled["nll_bound_vaes"] + 1e-4)


def test_trial_seeds_depend_on_dataset_split_and_trial_only(tmp_path: Path) -> None:
    seeds = posterior.trial_seeds(3, posterior.SplitKey(1, 0), np.array([0, 7]))
    assert seeds.tolist() == [[3, 2 << 32], [3, (2 << 32) + 7]]
    assert not np.array_equal(seeds, posterior.trial_seeds(3, posterior.SplitKey(1, 1), np.array([0, 7])))
