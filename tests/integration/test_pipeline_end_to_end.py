"""The whole product, once, with every part real: the manager prepares a tiny Lorenz collection
(stitched + single-session runs), the queue runs it on CPU slots, the TensorFlow model trains,
samples the posterior and writes its parameters, and the manager loads the results back.

Each part has its own thorough tests; this one checks that the contracts between them hold
(file names, flags, markers, the tee'd log) when nothing is faked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from manager import DatasetCollection, RunCollection, RunParams, RunSpec
from manager.lorenz import generate_lorenz_datasets
from manager.results import fit_log, load_posterior_means
from runqueue.layout import DONE_MARKER, FAILED_MARKER, OUT_LOG, RunPaths

pytestmark = [pytest.mark.slow, pytest.mark.tf]  # the real model runs here

TINY_PARAMS = {
    "spikeBinMs": 20,
    "c_co_dim": 0,
    "c_batch_size": 8,
    "c_factors_dim": 4,
    "c_gen_dim": 16,
    "c_ic_enc_dim": 16,
    "c_ic_dim": 8,
    "c_kl_increase_steps": 4,
    "c_l2_increase_steps": 4,
    "c_max_epochs": 3,
    "c_seed": 1,
    "useAlignmentMatrix": True,
    "num_samples_posterior": 6,
}


def _prepare_tiny_collection(root: Path) -> RunCollection:
    generate_lorenz_datasets(
        root / "datasets", n_datasets=2, seed=3,
        n_conditions=6, min_trials_per_condition=8, max_trials_per_condition=9,
        min_channels=6, max_channels=8, n_time=200, burn_in=50, bin_ms=5,
    )
    datasets = DatasetCollection(root / "datasets", name="lorenz_tiny")
    datasets.add_files(["dataset001.mat", "dataset002.mat"])
    collection = RunCollection(root / "runs", "tinyRun", datasets)
    collection.add_params(RunParams(**TINY_PARAMS))
    collection.add_run_spec(RunSpec("all", datasets, ["dataset001", "dataset002"]))
    collection.add_run_spec(RunSpec("single_dataset001", datasets, ["dataset001"]))
    collection.prepare()
    return collection


def test_manager_queue_and_model_run_a_collection_end_to_end(tmp_path: Path) -> None:
    collection = _prepare_tiny_collection(tmp_path)
    collection_dir = tmp_path / "runs" / "tinyRun"
    env = {**os.environ, "RUNQUEUE_CLAIMS_DIR": str(tmp_path / "claims"), "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("RUNQUEUE_SIMULATE_GPUS", None)

    # `python run_lfads.py` is how users start the queue over one collection.
    finished = subprocess.run(
        [sys.executable, str(collection_dir / "run_lfads.py"), "--cpu-slots", "2", "--retries", "0"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]

    status = subprocess.run(
        [sys.executable, "-m", "runqueue", "status", str(collection_dir), "--json"],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )
    runs = {run["name"]: run for run in json.loads(status.stdout)["runs"]}
    assert sorted(runs) == sorted(f"{p.name}/{spec}" for p in collection_dir.glob("param_*")
                                  for spec in ("all", "single_dataset001"))
    assert {run["state"] for run in runs.values()} == {"done"}

    for run in collection.runs:
        paths = RunPaths(Path(run.path))
        assert paths.done_marker.exists() and not (paths.root / FAILED_MARKER).exists()
        log = (paths.root / OUT_LOG).read_text()
        # one header per step, in order, and the model's own epoch lines in between
        headers = [line for line in log.splitlines() if line.startswith("### runqueue") and "step=" in line]
        assert [h.split("step=")[1].split()[0] for h in headers] == [
            "lfads_train.sh", "lfads_posterior_mean_sample.sh", "lfads_write_model_params.sh"]
        assert "Epoch:2," in log

        output = paths.lfads_output
        assert (output / "checkpoint").exists() and (output / "checkpoint_lve").exists()
        with h5py.File(output / "model_params", "r") as params:
            assert any("fac_2_logrates" in key for key in params)

        log_rows = fit_log(Path(run.path))
        assert len(log_rows.epoch) == 3
        means = load_posterior_means(run)
        for name, dataset_means in means.items():
            with h5py.File(paths.lfads_input / f"lfads_{name}.h5", "r") as data:
                n_trials = data["train_data"].shape[0] + data["valid_data"].shape[0]
                n_steps, n_channels = data["train_data"].shape[1:]
            assert dataset_means.rates.shape == (n_trials, n_steps, n_channels)
            assert np.all(np.isfinite(dataset_means.rates)) and np.all(dataset_means.rates > 0)
            assert dataset_means.time_ms.shape == (n_steps,)

    # The stitched run really saw both datasets, each with its own read-in from the alignment matrices.
    stitched = next(run for run in collection.runs if run.spec.name == "all")
    assert sorted(load_posterior_means(stitched)) == ["dataset001", "dataset002"]

    # The sweep overview reads what the model wrote: figures for every run, R² from the Lorenz truth.
    compared = subprocess.run([sys.executable, "-m", "manager", "compare", "--json", str(collection_dir)],
                              env=env, capture_output=True, text=True, timeout=120, check=True)
    overview = json.loads(compared.stdout)
    assert sorted(entry["name"] for entry in overview["runs"]) == sorted(runs)
    for entry in overview["runs"]:
        assert entry["state"] == "done" and entry["epochs"] == 3 and entry["notes"] == [], entry
        assert entry["best_valid"] is not None and entry["best_valid"] > 0
        assert set(entry["r2"]) == ({"dataset001", "dataset002"} if entry["name"].endswith("/all") else {"dataset001"})
        assert entry["params"]["c_gen_dim"] == "16" and entry["params"]["spikeBinMs"] == "20"

    # Finished runs stay finished: a second pass over the tree starts nothing.
    again = subprocess.run(
        [sys.executable, str(collection_dir / "run_lfads.py"), "--cpu-slots", "2"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert again.returncode == 0
    for run in collection.runs:
        assert (Path(run.path) / OUT_LOG).read_text().count("step=lfads_train.sh") == 1
    assert all((Path(run.path) / DONE_MARKER).exists() for run in collection.runs)


def _names_in_order(document: str) -> list[str]:
    return [entry["name"] for entry in json.loads(document)["runs"]]


def _matlab_flags(values: dict[str, object]) -> str:
    """Flags as the MATLAB run manager formats them: %i integers, %f doubles, true/false logicals."""
    parts = []
    for name, value in values.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, float):
            text = f"{value:f}"
        else:
            text = str(value)
        parts.append(f"--{name}={text}")
    return " ".join(parts)


def test_a_folder_written_by_the_matlab_run_manager_runs_on_the_real_model(tmp_path: Path) -> None:
    """The shape of lfads_train.sh that writeShellScriptRunQueue generates (reference run-manager.md
    §6.3): train && posterior && write-params chained in a subshell piped through a truncating
    `tee lfads.out`, run_lfads.py found on PATH, every flag with MATLAB's formatting."""
    collection = _prepare_tiny_collection(tmp_path)
    exported = next(run for run in collection.runs if run.spec.name == "single_dataset001")
    run_dir = tmp_path / "legacy" / "lfads_example" / "param_legacy" / "single_dataset001"
    (run_dir / "lfadsInput").mkdir(parents=True)
    for source in RunPaths(Path(exported.path)).lfads_input.iterdir():
        (run_dir / "lfadsInput" / source.name).symlink_to(source.resolve())
    common = (f"--data_dir={run_dir}/lfadsInput --data_filename_stem=lfads --lfads_save_dir={run_dir}/lfadsOutput "
              + _matlab_flags({
                  "allow_gpu_growth": True, "device": "/gpu:0", "learning_rate_init": 0.01,
                  "learning_rate_stop": 0.00001, "max_grad_norm": 200.0, "keep_prob": 0.95,
                  "factors_dim": 4, "gen_dim": 16, "ic_enc_dim": 16, "ic_dim": 8, "co_dim": 0,
                  "kl_increase_steps": 4, "l2_increase_steps": 4, "l2_gen_scale": 500.0,
                  "tf_debug_cli": False, "tf_debug_tensorboard": False,
                  "tf_debug_tensorboard_hostport": "localhost:6064", "debug_verbose": False,
                  "debug_print_each_step": False}))
    # The one addition a MATLAB script would not carry: a bound on training, so the test ends.
    train = f"python $(which run_lfads.py) {common} --batch_size=8 --temporal_spike_jitter_width=0 --max_epochs=3"
    posterior = (f"python $(which run_lfads.py) --kind=posterior_sample_and_average --batch_size=6 "
                 f"--checkpoint_pb_load_name=checkpoint_lve {common}")
    write_params = f"python $(which run_lfads.py) --kind=write_model_params --checkpoint_pb_load_name=checkpoint_lve {common}"
    (run_dir / "lfads_train.sh").write_text(
        "#!/bin/bash\n\n"
        "path_to_run_lfads=$(which run_lfads.py)\n"
        'if [ ! -n "$path_to_run_lfads" ]; then\n'
        '    echo "Error: run_lfads.py not found on PATH. Ensure you add LFADS to your system PATH."\n'
        "    exit 1\nfi\n\n"
        f"({train} && {posterior} && {write_params}) 2>&1 | tee {run_dir}/lfads.out\n"
    )
    (run_dir / "lfads_train.sh").chmod(0o755)
    # An earlier attempt's log must survive: MATLAB's tee would have truncated it.
    (run_dir / OUT_LOG).write_text("log line from an earlier attempt\n")

    # PATH without the venv, as under the systemd unit: the queue must lead `python $(which
    # run_lfads.py)` to this installation by itself.
    env = {**os.environ, "PATH": "/usr/bin:/bin",
           "RUNQUEUE_CLAIMS_DIR": str(tmp_path / "claims"), "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("RUNQUEUE_SIMULATE_GPUS", None)
    finished = subprocess.run([sys.executable, "-m", "runqueue", "run", str(tmp_path / "legacy"), "--retries", "0"],
                              env=env, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    assert (run_dir / DONE_MARKER).exists()
    log = (run_dir / OUT_LOG).read_text()
    assert log.startswith("log line from an earlier attempt\n")
    assert "Epoch:2," in log and log.count("### runqueue") >= 2
    assert any((run_dir / "lfadsOutput").glob("model_runs_*_posterior_sample_and_average"))
    assert (run_dir / "lfadsOutput" / "model_params").exists()

    # A legacy chain whose training crashes is not marked done, although tee exits 0.
    broken = run_dir.parent / "single_broken"
    (broken / "lfadsInput").mkdir(parents=True)
    (broken / "lfads_train.sh").write_text(
        (run_dir / "lfads_train.sh").read_text().replace(str(run_dir), str(broken)).replace("--factors_dim=4", "--factors_dim=x"))
    crashed = subprocess.run([sys.executable, "-m", "runqueue", "run", str(broken), "--retries", "0"],
                             env=env, capture_output=True, text=True, timeout=300)
    assert crashed.returncode != 0
    assert not (broken / DONE_MARKER).exists()
    failure = json.loads((broken / FAILED_MARKER).read_text())
    assert failure["step"] == "lfads_train.sh"

    # The overview of a MATLAB tree without summary.txt takes the parameters from the flags.
    compared = subprocess.run([sys.executable, "-m", "manager", "compare", "--json", "--no-r2", str(tmp_path / "legacy")],
                              env=env, capture_output=True, text=True, timeout=120, check=True)
    overview = {entry["name"]: entry for entry in json.loads(compared.stdout)["runs"]}
    done, failed = (overview[f"lfads_example/param_legacy/{name}"] for name in ("single_dataset001", "single_broken"))
    assert done["state"] == "done" and done["epochs"] == 3 and done["params"]["c_gen_dim"] == "16"
    assert failed["state"] == "failed" and failed["best_valid"] is None
    assert _names_in_order(compared.stdout) == ["lfads_example/param_legacy/single_dataset001", "lfads_example/param_legacy/single_broken"]
    assert json.loads(compared.stdout)["varying"] == ["c_factors_dim"]  # 4 against the broken run's x
