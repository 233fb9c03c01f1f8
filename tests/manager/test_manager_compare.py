"""`lfads-manager compare`: the runs of a sweep side by side, from their files alone."""

from __future__ import annotations

import csv
import io
import json

import h5py
import pytest
from manager_test_helpers import run_manager_cli, write_fake_posterior, write_npz_dataset

from manager.collection import RunCollection
from manager.compare import compare_runs
from manager.datasets import DatasetCollection
from manager.errors import ManagerError
from manager.params import RunParams
from manager.report import r_squared
from manager.runspec import RunSpec
from manager.summary import read_summary_params


def _fitlog(valid_costs: list[float], ramped_from: int = 1) -> str:
    """fitlog.csv rows whose KL/L2 ramps are complete from row `ramped_from` on."""
    rows = []
    for epoch, valid in enumerate(valid_costs):
        weight = "1.00" if epoch >= ramped_from else "0.50"
        rows.append(f"epoch,{epoch}, step,{8 * (epoch + 1)}, total,{valid - 5:.2f},{valid:.2f},       recon,{valid - 30:.2f},"
                    f"{valid - 20:.2f}, kl,10.00,20.00, l2,0.30000,       klweight,{weight}, l2weight,{weight}")
    return "\n".join(rows) + "\n"


@pytest.fixture
def sweep(tmp_path) -> RunCollection:
    """Three generator sizes x one run spec, prepared; no run has trained yet."""
    (tmp_path / "datasets").mkdir()
    write_npz_dataset(tmp_path / "datasets" / "ds.npz", n_trials=37, n_time=20)
    datasets = DatasetCollection(tmp_path / "datasets")
    datasets.add_files(["ds.npz"])
    collection = RunCollection(tmp_path / "runs", "sweep", datasets)
    collection.add_params(RunParams(c_batch_size=4, c_factors_dim=3, spikeBinMs=2).sweep(c_gen_dim=[16, 32, 64]))
    collection.add_run_spec(RunSpec("single_ds", datasets, ["ds"]))
    collection.prepare()
    return collection


def _train(run, valid_costs: list[float], *, done: bool = True, scale: float | None = None) -> None:
    (run.path / "lfadsOutput").mkdir(exist_ok=True)
    (run.path / "lfadsOutput" / "fitlog.csv").write_text(_fitlog(valid_costs))
    if scale is not None:
        write_fake_posterior(run, scale=scale)
    if done:
        (run.path / "lfads.done").write_text("")


def _valid_r2(run, scale: float) -> float:
    with h5py.File(run.path / "lfadsInput" / "lfads_ds.h5", "r") as inputs:
        truth = inputs["valid_truth"][()]
    return r_squared(truth * scale, truth)


def test_runs_come_best_first_with_their_figures_and_the_swept_parameter(sweep):
    small, medium, large = sweep.runs  # c_gen_dim 16, 32, 64
    _train(small, [950, 800, 760, 770], scale=0.5)
    _train(medium, [940, 720, 700, 705], scale=0.9)
    (large.path / "lfads.failed").write_text('{"reason": "time_limit"}')

    comparison = compare_runs(sweep.path)

    assert [run.path for run in comparison.runs] == [medium.path, small.path, large.path]
    best, second, failed = comparison.runs
    assert comparison.varying == ["c_gen_dim"]  # the only parameter the sweep changed
    assert [run.params["c_gen_dim"] for run in comparison.runs] == ["32", "16", "64"]
    assert best.params["spikeBinMs"] == "2"  # every property of summary.txt, not only the flags
    assert (best.state, best.epochs, best.steps) == ("done", 4, 32)
    assert (best.best_valid, best.best_valid_recon, best.best_epoch) == (700.0, 680.0, 2)
    assert best.r2 == pytest.approx({"ds": _valid_r2(medium, 0.9)})
    assert second.r2 == pytest.approx({"ds": _valid_r2(small, 0.5)}) and second.r2["ds"] < best.r2["ds"]
    assert (failed.state, failed.failure, failed.best_valid, failed.r2) == ("failed", "time_limit", None, {})
    assert best.name == f"{medium.path.parent.name}/single_ds"
    assert not any(run.notes for run in comparison.runs)
    assert comparison.counts() == {"done": 2, "failed": 1}


def test_epochs_logged_again_after_a_restart_count_once(sweep):
    # Killed after epoch 3, restarted from the checkpoint after epoch 1: epochs 2 and 3 are trained
    # (and logged) again, with the same steps, before training goes on to epoch 4.
    run = sweep.runs[0]
    _train(run, [950, 800, 760, 770, 750])
    fitlog = run.path / "lfadsOutput" / "fitlog.csv"
    rows = fitlog.read_text().splitlines()
    fitlog.write_text("\n".join([*rows[:4], *rows[2:]]) + "\n")
    (result,) = [result for result in compare_runs(sweep.path).runs if result.path == run.path]
    assert (result.epochs, result.steps) == (5, 40)


def test_the_r2_is_the_one_the_report_writes(sweep):
    run = sweep.runs[0]
    _train(run, [900, 800], scale=0.8)
    result = run_manager_cli("report", str(run.path))
    assert result.returncode == 0, result.stderr
    reported = float((run.path / "report" / "r2.txt").read_text().split("=")[1])
    (compared,) = [entry for entry in compare_runs(sweep.path).runs if entry.path == run.path]
    assert compared.r2["ds"] == pytest.approx(reported, abs=1e-6)


def test_parameters_come_from_the_flags_when_summary_txt_does_not_list_the_run(sweep):
    small, medium, _ = sweep.runs
    _train(small, [900, 800])
    _train(medium, [900, 700])
    (sweep.path / "summary.txt").unlink()  # e.g. a param set pruned from the experiment, or a copied tree
    comparison = compare_runs(sweep.path)
    assert comparison.varying == ["c_gen_dim"]
    assert [run.params["c_gen_dim"] for run in comparison.runs] == ["32", "16", "64"]
    assert "c_data_dir" not in comparison.runs[0].params and "c_kind" not in comparison.runs[0].params


def test_flags_of_a_matlab_chained_script_are_the_training_commands(tmp_path):
    # lfads_train.sh as the MATLAB tool writes it: train && posterior (its own --batch_size) && params, in ( ) | tee.
    run = tmp_path / "exampleRun" / "param_YOs74u" / "single_dataset001"
    run.mkdir(parents=True)
    common = f"--data_dir={run}/lfadsInput --data_filename_stem=lfads --lfads_save_dir={run}/lfadsOutput"
    (run / "lfads_train.sh").write_text(
        f"(python $(which run_lfads.py) --kind=train {common} --batch_size=150 --factors_dim=8"
        f" && python $(which run_lfads.py) --kind=posterior_sample_and_average {common} --batch_size=512 --factors_dim=8"
        f" && python $(which run_lfads.py) --kind=write_model_params {common} --factors_dim=8) 2>&1 | tee {run}/lfads.out\n")
    (params,) = [r.params for r in compare_runs(tmp_path / "exampleRun", with_r2=False).runs]
    assert params == {"c_batch_size": "150", "c_factors_dim": "8"}


def test_a_run_whose_files_cannot_be_read_gets_a_note_and_the_others_are_still_compared(sweep):
    small, medium, large = sweep.runs
    _train(small, [900, 800], scale=0.9)
    (small.path / "lfadsOutput" / "model_runs_ds.h5_valid_posterior_sample_and_average").write_bytes(b"not hdf5")
    _train(medium, [900, 700])
    (large.path / "lfadsOutput").mkdir()
    (large.path / "lfadsOutput" / "fitlog.csv").write_text("this is not, a fit log\n")
    comparison = compare_runs(sweep.path)
    by_path = {run.path: run for run in comparison.runs}
    assert by_path[medium.path].best_valid == 700.0 and by_path[small.path].best_valid == 800.0
    assert by_path[small.path].r2 == {} and "cannot read this HDF5 file" in by_path[small.path].notes[0]
    assert by_path[large.path].best_valid is None and by_path[large.path].state == "pending"
    assert "no 'epoch,N, step,N, ...' rows in fitlog.csv" in by_path[large.path].notes[0]

    # A fitlog.csv that cannot be read at all (here a folder) is a note too, not a traceback.
    fitlog = large.path / "lfadsOutput" / "fitlog.csv"
    fitlog.unlink()
    fitlog.mkdir()
    (noted,) = [run for run in compare_runs(sweep.path).runs if run.path == large.path]
    assert noted.notes == [f"cannot read {fitlog}: Is a directory"]


def test_the_command_prints_a_table_csv_and_json(sweep):
    small, medium, large = sweep.runs
    _train(small, [900, 800], scale=0.5)
    _train(medium, [900, 700], scale=0.9)

    table = run_manager_cli("compare", str(sweep.path))
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].startswith(f"{sweep.path}: 3 run(s) (2 done, 1 pending)")
    assert lines[1].split() == ["run", "state", "epochs", "best_valid", "valid_recon", "at_epoch", "r2", "c_gen_dim"]
    assert lines[2].split()[:2] == [f"{medium.path.parent.name}/single_ds", "done"] and lines[2].split()[-1] == "32"
    assert lines[4].split() == [f"{large.path.parent.name}/single_ds", "pending", "-", "-", "-", "-", "-", "64"]

    rows = list(csv.DictReader(io.StringIO(run_manager_cli("compare", "--csv", str(sweep.path)).stdout)))
    assert [row["c_gen_dim"] for row in rows] == ["32", "16", "64"]
    assert float(rows[0]["r2"]) == pytest.approx(_valid_r2(medium, 0.9)) and rows[2]["best_valid"] == ""
    assert rows[0]["path"] == str(medium.path)

    document = json.loads(run_manager_cli("compare", "--json", "--no-r2", str(sweep.path)).stdout)
    assert document["varying"] == ["c_gen_dim"] and document["root"] == str(sweep.path)
    first = document["runs"][0]
    assert (first["path"], first["best_valid"], first["r2"], first["varying"]) == (str(medium.path), 700.0, {}, {"c_gen_dim": "32"})
    assert first["params"]["c_factors_dim"] == "3"


def test_runs_can_be_sorted_by_r2_a_figure_or_a_parameter_in_numeric_order(sweep, tmp_path):
    small, medium, large = sweep.runs  # c_gen_dim 16, 32, 64
    _train(small, [950, 700], scale=0.95)  # the best R² but not the lowest validation cost
    _train(medium, [940, 720, 710], scale=0.5)
    (large.path / "lfads.failed").write_text('{"reason": "time_limit"}')

    def order(key: str) -> list:
        return [run.path for run in compare_runs(sweep.path, sort=key).runs]

    assert order("best_valid") == [small.path, medium.path, large.path]
    assert order("r2") == [small.path, medium.path, large.path]  # highest first; the run without one last
    _train(small, [950, 700], scale=0.3)
    assert order("r2") == [medium.path, small.path, large.path]
    assert order("epochs") == [medium.path, small.path, large.path]  # most first
    assert [run.state for run in compare_runs(sweep.path, sort="state").runs] == ["done", "done", "failed"]
    assert order("c_gen_dim") == [small.path, medium.path, large.path]

    # Numbers in numeric order: 8 < 16 < 128, where the text would give "128" < "16" < "8".
    sizes = RunCollection(tmp_path / "runs", "sizes", sweep.dataset_collection)
    sizes.add_params(RunParams(c_batch_size=4, c_factors_dim=3, spikeBinMs=2).sweep(c_gen_dim=[128, 8, 16]))
    sizes.add_run_spec(RunSpec("single_ds", sweep.dataset_collection, ["ds"]))
    sizes.prepare()
    comparison = compare_runs(sizes.path, sort="c_gen_dim")
    assert [run.params["c_gen_dim"] for run in comparison.runs] == ["8", "16", "128"]
    assert comparison.order == "c_gen_dim"

    table = run_manager_cli("compare", "--sort", "r2", str(sweep.path))
    assert table.returncode == 0, table.stderr
    assert "sorted by r2 (highest first)" in table.stdout.splitlines()[0]
    assert table.stdout.splitlines()[2].split()[0] == f"{medium.path.parent.name}/single_ds"
    document = json.loads(run_manager_cli("compare", "--json", "--sort", "c_gen_dim", str(sizes.path)).stdout)
    assert document["sorted_by"] == "c_gen_dim"
    assert [run["varying"]["c_gen_dim"] for run in document["runs"]] == ["8", "16", "128"]


def test_an_unknown_sort_key_is_refused_with_the_keys_it_could_be(sweep):
    result = run_manager_cli("compare", "--sort", "c_gen_dimm", str(sweep.path))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (f"lfads-manager: error: {sweep.path}: cannot sort by 'c_gen_dimm': no run has that figure or"
                             " parameter; use one of best_valid, r2, epochs, run, state or a parameter name, e.g. c_gen_dim\n")


def test_runs_of_several_collections_are_named_from_the_folder_given(sweep, tmp_path):
    other = RunCollection(tmp_path / "runs", "again", sweep.dataset_collection)
    other.add_params(RunParams(c_batch_size=4, c_factors_dim=3, spikeBinMs=2, c_gen_dim=16))
    other.add_run_spec(RunSpec("single_ds", sweep.dataset_collection, ["ds"]))
    other.prepare()
    names = [run.name for run in compare_runs(tmp_path / "runs").runs]
    # The same param_<hash>/single_ds in both collections, told apart by the collection.
    assert sorted(names) == sorted([f"again/{other.runs[0].path.parent.name}/single_ds",
                                    *(f"sweep/{run.path.parent.name}/single_ds" for run in sweep.runs)])
    assert other.runs[0].path.parent.name == sweep.runs[0].path.parent.name
    (only,) = compare_runs(other.runs[0].path).runs  # a run folder itself
    assert only.name == f"{other.runs[0].path.parent.name}/single_ds"


def test_no_runs_under_the_folder_is_a_clear_error(tmp_path, sweep):
    with pytest.raises(ManagerError, match="no run folders under it"):
        compare_runs(tmp_path / "datasets")
    result = run_manager_cli("compare", str(tmp_path / "missing"))
    assert result.returncode == 2 and result.stderr == f"lfads-manager: error: {tmp_path / 'missing'}: no such folder; give a collection folder, e.g. runs/<collection>\n"


MATLAB_SUMMARY = """LorenzExperiment.RunCollection "exampleRun" (4 runs total)
  Path: /data/runs/exampleRun
  Dataset Collection "lorenz_example" (3 datasets) in /data/datasets

  ------------------------
  2 Run Specifications:

    [runSpec 1] LorenzExperiment.RunSpec "all" (3 datasets)
      [ds 1] LorenzExperiment.Dataset "dataset001"
  ------------------------
  2 Parameter Settings:

    [1 param_Qr2PeG data_RE1kuL] LorenzExperiment.RunParams "first"
      c_factors_dim=8 c_ic_enc_dim=64

      spikeBinMs: 2
      c_device: /gpu:0
      c_factors_dim: 8

    [2 param_YOs74u data_4MaTKO] LorenzExperiment.RunParams ""
      default

      spikeBinMs: 2
      c_device: /gpu:0
      c_factors_dim: 40
"""


def test_summary_txt_of_the_matlab_tool_is_read_back(tmp_path):
    path = tmp_path / "summary.txt"
    path.write_text(MATLAB_SUMMARY)
    settings = read_summary_params(path)
    assert list(settings) == ["param_Qr2PeG", "param_YOs74u"]
    assert settings["param_Qr2PeG"].name == "first"
    assert settings["param_Qr2PeG"].values == {"spikeBinMs": "2", "c_device": "/gpu:0", "c_factors_dim": "8"}
    assert settings["param_YOs74u"].values["c_factors_dim"] == "40"
    assert read_summary_params(tmp_path / "missing.txt") == {}


def test_a_summary_txt_this_package_wrote_reads_back_as_the_params(sweep):
    settings = read_summary_params(sweep.path / "summary.txt")
    for params in sweep.params:
        values = settings[params.param_hash_name].values
        assert values["c_gen_dim"] == str(params.c_gen_dim) and values["spikeBinMs"] == "2"
