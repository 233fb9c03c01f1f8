"""Bad input: one clear line naming the file and the fix, exit status 2, and nothing written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from manager_test_helpers import file_states, run_manager_cli, write_npz_dataset


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


def fails(tmp_path: Path, toml: Path, *, names: Path, says: str) -> None:
    result = run_manager_cli("prepare", str(toml))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]  # earlier lines are progress
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
    write_npz_dataset(datasets / "bad.npz", n_trials=12)
    fails(tmp_path, experiment(tmp_path), names=datasets / "bad.npz", says="12 trials are too few for c_batch_size=4")


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
