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

pytestmark = pytest.mark.slow

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

    # Finished runs stay finished: a second pass over the tree starts nothing.
    again = subprocess.run(
        [sys.executable, str(collection_dir / "run_lfads.py"), "--cpu-slots", "2"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert again.returncode == 0
    for run in collection.runs:
        assert (Path(run.path) / OUT_LOG).read_text().count("step=lfads_train.sh") == 1
    assert all((Path(run.path) / DONE_MARKER).exists() for run in collection.runs)
