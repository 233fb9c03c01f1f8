"""Alignment details no other test pins down."""

from __future__ import annotations

import numpy as np
import pytest
from manager_test_helpers import small_collection, write_npz_dataset

from manager import ManagerError, RunSpec
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


@pytest.mark.parametrize("order", [["num1", "num2", "text"], ["text", "num1", "num2"]])
def test_unshared_conditions_name_the_dataset_at_fault_and_show_conditions(tmp_path, order):
    folder = tmp_path / "datasets"
    folder.mkdir()
    write_npz_dataset(folder / "num1.npz", seed=1)  # conditions 1..4
    write_npz_dataset(folder / "num2.npz", seed=2)
    write_npz_dataset(folder / "text.npz", seed=3, conditionId=np.array(["a", "b", "c", "d", "e"] * 8))
    collection = small_collection(tmp_path, ["num1.npz", "num2.npz", "text.npz"], useAlignmentMatrix=True)
    collection.add_run_spec(RunSpec("all", collection.dataset_collection, order))
    with pytest.raises(ManagerError) as error:
        collection.prepare()
    message = str(error.value)
    assert message.startswith(f"{folder / 'text.npz'}: only 0 condition(s) are in every dataset of the run spec")
    assert "text.npz shares the fewest conditions with the others" in message
    assert "'a', 'b', 'c', 'd', …" in message and "num1.npz: 1, 2, 3, 4" in message
    assert "numbers never match text labels" in message


def test_two_datasets_with_no_shared_condition_are_both_named(tmp_path):
    folder = tmp_path / "datasets"
    folder.mkdir()
    write_npz_dataset(folder / "num.npz", seed=1)
    write_npz_dataset(folder / "text.npz", seed=3, conditionId=np.array(["a", "b"] * 20))
    collection = small_collection(tmp_path, ["num.npz", "text.npz"], useAlignmentMatrix=True)
    collection.add_run_spec(RunSpec("both", collection.dataset_collection, ["text", "num"]))
    with pytest.raises(ManagerError, match=r"these datasets share the fewest conditions with the others \(text.npz, num.npz\)"):
        collection.prepare()
