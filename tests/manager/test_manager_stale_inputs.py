"""Changing a run spec's datasets: lfadsInput/ and the export hold exactly the spec's datasets afterwards."""

from __future__ import annotations

from pathlib import Path

import pytest
from manager_test_helpers import file_states, run_manager_cli, write_npz_dataset

from manager import DatasetCollection, RunCollection, RunParams, RunSpec


def experiment(tmp_path: Path, datasets: list[str]) -> Path:
    toml = tmp_path / "e.toml"
    toml.write_text(f"""
[collection]
root = "runs"
name = "exp"
[datasets]
folder = "data"
glob = "*.npz"
[params]
c_batch_size = 4
c_factors_dim = 3
useAlignmentMatrix = true
[[runspec]]
name = "all"
datasets = {datasets!r}
""".replace("'", '"'))
    return toml


@pytest.fixture
def data(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    for seed, name in enumerate(("ds001", "ds002", "ds003")):
        write_npz_dataset(folder / f"{name}.npz", seed=seed)
    return folder


def lfads_loads(run_dir: Path) -> list[str]:
    """What LFADS opens: every name in lfadsInput/ that starts with its --data_filename_stem."""
    return sorted(p.name for p in (run_dir / "lfadsInput").iterdir() if p.name.startswith("lfads"))


@pytest.mark.parametrize("regenerate", [False, True])
def test_dropping_a_dataset_removes_its_links_and_export(tmp_path, data, regenerate):
    assert run_manager_cli("prepare", str(experiment(tmp_path, ["ds001", "ds002", "ds003"]))).returncode == 0
    toml = experiment(tmp_path, ["ds001", "ds002"])
    result = run_manager_cli("prepare", str(toml), *(["--regenerate"] if regenerate else []))
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "runs" / "exp").glob("param_*/all")
    (data_dir,) = (tmp_path / "runs" / "exp").glob("data_*/all")
    assert lfads_loads(run_dir) == ["lfads_ds001.h5", "lfads_ds002.h5"]
    assert sorted(p.name for p in (run_dir / "lfadsInput").iterdir()) == [
        "inputInfo_ds001.mat", "inputInfo_ds002.mat", "lfads_ds001.h5", "lfads_ds002.h5"]
    assert sorted(p.name for p in data_dir.iterdir()) == [
        ".export_stamp.json", "alignment_reconstruction.png", "inputInfo_ds001.mat", "inputInfo_ds002.mat",
        "lfads_ds001.h5", "lfads_ds002.h5"]
    # and a further prepare finds nothing to do
    before = file_states(tmp_path / "runs")
    assert run_manager_cli("prepare", str(toml)).returncode == 0
    assert file_states(tmp_path / "runs") == before


def test_renamed_dataset_and_single_dataset_spec_without_alignment(tmp_path, data):
    datasets = DatasetCollection(data)
    datasets.add_files(["ds001.npz", "ds002.npz", "ds003.npz"])
    collection = RunCollection(tmp_path / "runs", "api", datasets)
    collection.add_params(RunParams(c_batch_size=4, c_factors_dim=3, useAlignmentMatrix=True))
    collection.add_run_spec(RunSpec("s", datasets, ["ds001", "ds002"]))
    collection.prepare()
    (run,) = collection.runs
    user_notes = [run.path_common_data / "notes.txt", run.paths.lfads_input / "notes.txt"]
    for note in user_notes:
        note.write_text("mine")
    run.paths.done_marker.write_text("")  # trained on the old pair
    collection.run_specs = [RunSpec("s", datasets, ["ds003"])]  # same folder, another dataset
    said: list[str] = []
    report = collection.prepare(progress=said.append)
    assert f"note: {run.path} was trained with other datasets than ds003; delete its lfadsOutput/ and lfads.done" in "\n".join(said)
    assert run.paths.done_marker.exists()  # the user decides
    assert lfads_loads(run.path) == ["lfads_ds003.h5"]
    assert {p.name for p in report.files_removed} == {
        "lfads_ds001.h5", "lfads_ds002.h5", "inputInfo_ds001.mat", "inputInfo_ds002.mat", "alignment_reconstruction.png"}
    assert sorted(p.name for p in run.path_common_data.iterdir()) == [
        ".export_stamp.json", "inputInfo_ds003.mat", "lfads_ds003.h5", "notes.txt"]
    assert all(note.read_text() == "mine" for note in user_notes)  # never a file the user put there


def test_a_file_lfads_would_load_that_prepare_did_not_make_is_refused(tmp_path, data):
    assert run_manager_cli("prepare", str(experiment(tmp_path, ["ds001", "ds002", "ds003"]))).returncode == 0
    (run_dir,) = (tmp_path / "runs" / "exp").glob("param_*/all")
    foreign = run_dir / "lfadsInput" / "lfads_extra.h5"
    foreign.write_text("a user's file")
    before = file_states(tmp_path / "runs")
    result = run_manager_cli("prepare", str(experiment(tmp_path, ["ds001", "ds002"])))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"lfads-manager: error: {foreign}: LFADS would load this as a dataset, but run spec 'all' has only "
        "ds001, ds002; move it out of lfadsInput/, then prepare again")
    assert foreign.read_text() == "a user's file"
    assert file_states(tmp_path / "runs") == before  # refused before anything was written


def test_changed_source_data_under_a_trained_run_gets_a_note(tmp_path, data):
    toml = experiment(tmp_path, ["ds001", "ds002"])
    assert run_manager_cli("prepare", str(toml)).returncode == 0
    (run_dir,) = (tmp_path / "runs" / "exp").glob("param_*/all")
    (run_dir / "lfadsOutput").mkdir()  # trained (as far as prepare can tell)
    (run_dir / "lfads.done").write_text("{}")
    unchanged = run_manager_cli("prepare", str(toml))
    assert unchanged.returncode == 0 and "note:" not in unchanged.stderr
    write_npz_dataset(data / "ds002.npz", seed=7)  # the recording was re-sorted, say
    result = run_manager_cli("prepare", str(toml))
    assert result.returncode == 0, result.stderr
    assert f"note: {run_dir} was trained on an earlier export of its data; delete its lfadsOutput/" in result.stderr
    assert (run_dir / "lfadsOutput").is_dir() and (run_dir / "lfads.done").exists()  # never deleted for the user
