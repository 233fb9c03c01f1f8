"""A collection renamed while LFADS trains one of its runs: the run finishes where the folder went.

Real queue, real TensorFlow on CPU. The step scripts run in their folder with relative paths, so
the training process keeps writing into the moved folder; with absolute paths it recreated the old
folder's lfadsOutput and the moved run was sampled from an early checkpoint.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from manager import DatasetCollection, RunCollection, RunParams, RunSpec
from manager.lorenz import generate_lorenz_datasets

pytestmark = [pytest.mark.slow, pytest.mark.tf]  # the real model runs here

EPOCHS = 150


def _epochs_logged(fitlog: Path) -> int:
    try:
        return sum(1 for line in fitlog.read_text().splitlines() if line.startswith("epoch,"))
    except FileNotFoundError:
        return 0


def test_a_collection_renamed_while_training_finishes_in_its_new_place(tmp_path: Path) -> None:
    generate_lorenz_datasets(tmp_path / "datasets", n_datasets=1, seed=5, n_conditions=4, min_trials_per_condition=12,
                             max_trials_per_condition=12, min_channels=6, max_channels=6, n_time=100, burn_in=20, bin_ms=10)
    datasets = DatasetCollection(tmp_path / "datasets")
    datasets.add_files(["dataset001.mat"])
    collection = RunCollection(tmp_path / "runs", "before", datasets)
    collection.add_params(RunParams(spikeBinMs=10, c_co_dim=0, c_batch_size=8, c_factors_dim=3, c_gen_dim=8, c_ic_enc_dim=8, c_ic_dim=4,
                                    c_max_epochs=EPOCHS, c_seed=2, num_samples_posterior=4))
    collection.add_run_spec(RunSpec("one", datasets, ["dataset001"]))
    collection.prepare()
    (run,) = collection.runs
    relative = run.path.relative_to(tmp_path / "runs" / "before")
    env = {**os.environ, "RUNQUEUE_CLAIMS_DIR": str(tmp_path / "claims"), "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("RUNQUEUE_SIMULATE_GPUS", None)
    queue = subprocess.Popen([sys.executable, "-m", "runqueue", "run", str(tmp_path / "runs"), "--cpu-slots", "1",
                              "--retries", "0"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while _epochs_logged(run.path / "lfadsOutput" / "fitlog.csv") < 3:
            assert queue.poll() is None and time.monotonic() < deadline, "training did not get going"
            time.sleep(0.05)
        os.rename(tmp_path / "runs" / "before", tmp_path / "runs" / "after")
        output, _ = queue.communicate(timeout=600)
    finally:
        if queue.poll() is None:
            queue.kill()
    assert queue.returncode == 0, output[-3000:]
    moved = tmp_path / "runs" / "after" / relative
    assert (moved / "lfads.done").exists(), output[-3000:]
    assert not (tmp_path / "runs" / "before").exists()  # nothing recreated under the old name
    assert _epochs_logged(moved / "lfadsOutput" / "fitlog.csv") == EPOCHS  # the whole training landed here
    assert (moved / "lfadsOutput" / "model_params").exists()
    assert any((moved / "lfadsOutput").glob("model_runs_*_posterior_sample_and_average"))
