"""Alignment details no other test pins down."""

from __future__ import annotations

import numpy as np

from manager.alignment import _condition_list, _pca


def test_pca_loadings_have_matlabs_sign_convention():
    # MATLAB's pca makes each component's largest-magnitude loading positive; eigh's signs are arbitrary
    # (they differ between LAPACK builds), so without this the exported read-in matrices would too.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 40))
    loadings = _pca(x - x.mean(axis=1, keepdims=True), 3)
    lead = loadings[np.argmax(np.abs(loadings), axis=0), np.arange(3)]
    assert (lead > 0).all(), lead


def test_trials_without_a_condition_do_not_form_a_condition_of_their_own():
    class Fake:
        def __init__(self, labels):
            self.condition_id = np.asarray(labels)

    assert _condition_list([Fake(["a", "", "b", "a"])]) == ["a", "b"]
    assert _condition_list([Fake([1.0, np.nan, 2.0])]) == [1.0, 2.0]
