"""`lfads-manager prepare EXPERIMENT.toml`: values cast to MATLAB types, sweeps, run specs, queue resources."""

from __future__ import annotations

import json

from manager_test_helpers import run_manager_cli, write_npz_dataset

from manager.experiment import load_experiment
from manager.lorenz import generate_lorenz_datasets

STITCHING_HASHES = {"param_7I6XSW", "param_O4V73g", "param_ngqEhM", "param_Qr2PeG"}


def test_toml_sweep_reproduces_the_documented_folders(tmp_path):
    generate_lorenz_datasets(tmp_path / "data", n_datasets=2, n_conditions=10, min_trials_per_condition=8,
                             max_trials_per_condition=9, n_time=20)
    toml = tmp_path / "experiment.toml"
    toml.write_text("""
[collection]
root = "runs"
name = "lorenzSweep"

[datasets]
folder = "data"
glob = "dataset*.mat"
single_runs = true

[params]
spikeBinMs = 2            # an integer in TOML, a double in MATLAB
c_co_dim = 0
c_batch_size = 150
c_gen_dim = 64
c_ic_enc_dim = 64
c_learning_rate_stop = 1e-3
useAlignmentMatrix = true

[sweep]
c_factors_dim = [2, 4, 6, 8]

[[runspec]]
name = "all"
datasets = ["dataset001", "dataset002"]

[queue]
memory_mb = 4000
time_limit = "2h"
""")
    collection = load_experiment(toml)
    assert {p.param_hash_name for p in collection.params} == STITCHING_HASHES
    assert [s.name for s in collection.run_specs] == ["all", "single_dataset001", "single_dataset002"]
    # Batch size 150 needs 750 trials; these tiny datasets are for the names only.
    collection.params = [p.copy(c_batch_size=2) for p in collection.params]
    collection.run_specs = collection.run_specs[:1]
    collection.prepare()
    folders = {p.name for p in collection.path.iterdir() if p.is_dir()}
    assert {f for f in folders if f.startswith("param_")} == {p.param_hash_name for p in collection.params}
    assert len([f for f in folders if f.startswith("data_")]) == 4  # c_factors_dim is in the data hash
    for run in collection.runs:
        assert json.loads(run.paths.resources.read_text()) == {"memory_mb": 4000, "time_limit": "2h",
                                                                  "written_by": "lfads-manager prepare"}


def test_cli_prepare_prints_the_collection_and_writes_no_resources_by_default(tmp_path):
    generate_lorenz_datasets(tmp_path / "data", n_datasets=1, n_conditions=4, min_trials_per_condition=5,
                             max_trials_per_condition=5, n_time=20)
    toml = tmp_path / "exp.toml"
    toml.write_text("""
[collection]
root = "runs"
name = "one"
[datasets]
folder = "data"
files = ["dataset001.mat"]
single_runs = true
[params]
c_batch_size = 2
c_factors_dim = 4
""")
    result = run_manager_cli("prepare", str(toml), "--print-collection")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{tmp_path / 'runs' / 'one'}\n"
    (run_dir,) = (tmp_path / "runs" / "one").glob("param_*/single_dataset001")
    assert (run_dir / "lfads_train.sh").exists() and not (run_dir / "runqueue.json").exists()


def test_going_back_to_the_default_resources_removes_the_runqueue_json_prepare_wrote(tmp_path):
    datasets = tmp_path / "datasets"
    datasets.mkdir()
    write_npz_dataset(datasets / "good.npz")
    toml = tmp_path / "q.toml"
    base = f'[collection]\nroot = "runs"\nname = "q"\n[datasets]\nfolder = "{datasets}"\nfiles = ["good.npz"]\nsingle_runs = true\n[params]\nc_batch_size = 4\n'
    toml.write_text(base + '[queue]\nmemory_mb = 4000\ntime_limit = "2h"\n')
    assert run_manager_cli("prepare", str(toml)).returncode == 0
    (run_dir,) = (tmp_path / "runs" / "q").glob("param_*/*")
    assert json.loads((run_dir / "runqueue.json").read_text()) == {"memory_mb": 4000, "time_limit": "2h",
                                                                  "written_by": "lfads-manager prepare"}
    toml.write_text(base + "[queue]\nmemory_mb = 2000\n")  # the defaults, given explicitly
    assert run_manager_cli("prepare", str(toml)).returncode == 0
    assert not (run_dir / "runqueue.json").exists()
    (run_dir / "runqueue.json").write_text('{"time_limit": "2h"}\n')  # written by hand: kept, and said
    prepared = run_manager_cli("prepare", str(toml))
    assert prepared.returncode == 0 and "runqueue.json has no mark of prepare's" in prepared.stdout + prepared.stderr
    assert json.loads((run_dir / "runqueue.json").read_text()) == {"time_limit": "2h"}

    toml.write_text(base + "[queue]\nmemory_mb = 3000\n")  # other values asked for: the hand-written file still wins
    prepared = run_manager_cli("prepare", str(toml))
    assert prepared.returncode == 0 and "asks for other values ([queue])" in prepared.stdout + prepared.stderr
    assert json.loads((run_dir / "runqueue.json").read_text()) == {"time_limit": "2h"}

    (run_dir / "runqueue.json").write_text('{"memory": 4000}\n')  # a key the queue does not know: it applies nothing
    prepared = run_manager_cli("prepare", str(toml))
    said = prepared.stdout + prepared.stderr
    assert prepared.returncode == 0 and "still declares" not in said
    assert (f"{run_dir / 'runqueue.json'} has no mark of prepare's (written by hand, or by a version before the mark) and is"
            " kept, but the queue refuses it and will not start the run (unknown key(s) memory); fix it (valid keys:") in said


def test_a_users_file_where_prepare_writes_a_collection_file_is_kept_aside_not_overwritten(tmp_path):
    datasets = tmp_path / "datasets"
    datasets.mkdir()
    write_npz_dataset(datasets / "good.npz")
    toml = tmp_path / "q.toml"
    toml.write_text(f'[collection]\nroot = "runs"\nname = "q"\n[datasets]\nfolder = "{datasets}"\nfiles = ["good.npz"]\n'
                    'single_runs = true\n[params]\nc_batch_size = 4\n')
    collection = tmp_path / "runs" / "q"
    collection.mkdir(parents=True)
    mine = {"summary.txt": "my notes on these fits\n", "run_lfads.py": "print('my own driver')\n",
            "launch_tensorboard.sh": "#!/bin/sh\necho mine\n"}
    for name, text in mine.items():
        (collection / name).write_text(text)
    (collection / "summary.txt.orig").write_text("an older copy\n")
    prepared = run_manager_cli("prepare", str(toml))
    assert prepared.returncode == 0, prepared.stderr
    for name, text in mine.items():
        aside = collection / (name + (".orig.1" if name == "summary.txt" else ".orig"))
        assert aside.read_text() == text
        assert f"{collection / name} was not written by lfads-manager; it is kept as {aside.name}" in prepared.stdout + prepared.stderr
        assert (collection / name).read_text() != text
    assert (collection / "summary.txt.orig").read_text() == "an older copy\n"
    again = run_manager_cli("prepare", str(toml))  # its own files are replaced quietly
    assert again.returncode == 0 and "not written by lfads-manager" not in again.stdout + again.stderr
    assert sorted(p.name for p in collection.glob("*.orig*")) == [
        "launch_tensorboard.sh.orig", "run_lfads.py.orig", "summary.txt.orig", "summary.txt.orig.1"]


def test_a_glob_skips_hidden_files_unless_its_pattern_asks_for_them(tmp_path):
    # macOS leaves `._name.mat` beside each file copied to a foreign disk: not a dataset, and no shell
    # glob would match it; an editor's swap folder `.old/` neither.
    (tmp_path / "data" / ".old").mkdir(parents=True)
    for name in ("a.npz", "b.npz", "._a.npz", ".old/c.npz"):
        write_npz_dataset(tmp_path / "data" / name, n_trials=12, n_time=10)
    toml = tmp_path / "experiment.toml"
    body = '[collection]\nroot = "runs"\nname = "c"\n[datasets]\nfolder = "data"\nglob = "{}"\nsingle_runs = true\n[params]\nc_batch_size = 4\n'
    toml.write_text(body.format("**/*.npz"))
    assert [dataset.name for dataset in load_experiment(toml).dataset_collection] == ["a", "b"]
    toml.write_text(body.format(".old/*.npz"))
    assert [dataset.name for dataset in load_experiment(toml).dataset_collection] == ["c"]
