"""`lfads-manager demo DIR`: datasets are reused only when made with the same settings; knobs are checked."""

from __future__ import annotations

import pytest
from manager_test_helpers import SEED_TINY, file_states, run_manager_cli, run_manager_cli_in_process

from manager import ManagerError
from manager.demo import build_demo
from manager.matfile import read_mat, write_mat

TINY = {
    "n_datasets": 2,
    "lorenz": {"n_conditions": 4, "min_trials_per_condition": 10, "max_trials_per_condition": 10, "min_channels": 6,
               "max_channels": 6, "n_time": 100, "burn_in": 100, "bin_ms": 5},
    "collection": "tiny",
    "run_specs": {"single_dataset001": [1]},
    "params": {"spikeBinMs": 10, "c_batch_size": 8, "c_factors_dim": 3},
}


def test_the_same_settings_again_change_nothing(tmp_path):
    build_demo(tmp_path, TINY)
    before = file_states(tmp_path)
    build_demo(tmp_path, TINY)
    assert file_states(tmp_path) == before


@pytest.mark.parametrize(("knobs", "seed", "says"), [
    ({"bin_ms": 10}, 0, "was made with other Lorenz settings (bin_ms=5 there, 10 now)"),
    ({"n_conditions": 5}, 0, "was made with other Lorenz settings (n_conditions=4 there, 5 now)"),
    ({}, 1, "was made with other Lorenz settings (seed=0 there, 1 now)"),
])
def test_datasets_made_with_other_settings_are_not_reused(tmp_path, knobs, seed, says):
    build_demo(tmp_path, TINY)
    (tmp_path / "datasets" / "dataset002.mat").unlink()  # a missing file must not be made next to the others
    before = file_states(tmp_path)
    with pytest.raises(ManagerError) as raised:
        build_demo(tmp_path, TINY, lorenz=knobs, seed=seed)
    assert str(raised.value) == (f"{tmp_path}/datasets/dataset001.mat: {says}; use another folder, or delete "
                                 f"{tmp_path}/datasets so that it is generated again")
    assert file_states(tmp_path) == before


def test_a_dataset_without_a_record_of_its_settings_is_not_reused(tmp_path):
    build_demo(tmp_path, TINY)
    path = tmp_path / "datasets" / "dataset001.mat"
    fields = read_mat(path)
    del fields["generator_settings"]  # as an older lfads-manager wrote it
    write_mat(path, fields)
    with pytest.raises(ManagerError, match=r"dataset001\.mat: has no record of the Lorenz settings it was made with"):
        build_demo(tmp_path, TINY)


def test_quick_then_seed_in_one_folder_says_what_to_do(tmp_path):
    quick = [arg for key, value in SEED_TINY.items() for arg in ("--lorenz", f"{key}={value}")]
    assert run_manager_cli("demo", str(tmp_path), *quick).returncode == 0  # the quick profile bins at 5 ms
    before = file_states(tmp_path)
    result = run_manager_cli("demo", str(tmp_path), "--profile", "seed", *quick)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"lfads-manager: error: {tmp_path}/datasets/dataset001.mat: was made with other Lorenz settings (bin_ms=5 there, "
        f"1 now); use another folder, or delete {tmp_path}/datasets so that it is generated again")
    assert file_states(tmp_path) == before


@pytest.mark.parametrize(("knob", "says"), [
    ("bin_ms=0", "Lorenz knob bin_ms must be a whole number >= 1, got 0"),
    ("bin_ms=300", "Lorenz knob bin_ms must be at most 255, got 300"),
    ("n_time=0", "Lorenz knob n_time must be a whole number >= 10 (two bins of bin_ms), got 0"),
    ("max_channels=-1", "Lorenz knob max_channels must be a whole number >= 25, got -1"),
    ("dt=nan", "Lorenz knob dt must be a positive number, got nan"),
    ("dt=0.5", "the Lorenz system diverged with dt=0.5; use a smaller dt"),
    ("bin_ms=3", "demo 'lorenzQuick' bins at spikeBinMs=20 ms, not a multiple of the Lorenz knob bin_ms=3"),
    ("n_conditions=10", "the Lorenz knobs give as few as 200 trials per dataset (n_conditions x min_trials_per_condition), "
                        "but demo 'lorenzQuick' needs 250 (c_batch_size=50, trainToTestRatio=4); raise them, e.g. "
                        "--lorenz min_trials_per_condition=25"),
])
def test_knobs_no_demo_can_use_stop_before_anything_is_written(tmp_path, knob, says):
    returncode, stderr = run_manager_cli_in_process("demo", str(tmp_path / "demo"), "--lorenz", knob)
    assert returncode == 2, stderr
    message = stderr.strip().splitlines()[-1]
    assert message.startswith(f"lfads-manager: error: {says}"), message
    assert not (tmp_path / "demo").exists()


def test_knobs_asking_for_more_memory_than_there_is_get_a_one_line_error(tmp_path):
    returncode, stderr = run_manager_cli_in_process("demo", str(tmp_path / "demo"), "--lorenz", "n_time=1e12")
    assert returncode == 2, stderr
    assert stderr.strip().splitlines()[-1] == (
        f"lfads-manager: error: {tmp_path / 'demo' / 'datasets'}: the Lorenz knobs ask for more memory than this machine"
        " has; lower n_time, n_conditions, the trials per condition or the channels")
    assert not list((tmp_path / "demo").rglob("*.mat"))
