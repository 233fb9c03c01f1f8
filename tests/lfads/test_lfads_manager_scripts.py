"""The three step scripts lfads-manager writes run unchanged, and the manager loads what they produce."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from manager.demo import build_demo
from manager.results import fit_log, load_posterior_means

pytestmark = pytest.mark.tf  # the generated scripts run the real model

TINY_PROFILE = {
    "n_datasets": 1,
    "lorenz": {"n_conditions": 4, "min_trials_per_condition": 10, "max_trials_per_condition": 10,
               "min_channels": 6, "max_channels": 6, "n_time": 200, "burn_in": 100, "bin_ms": 10},
    "collection": "tiny",
    "run_specs": {"single_dataset001": [1]},
    "params": {
        "spikeBinMs": 20, "c_co_dim": 1, "c_batch_size": 8, "c_factors_dim": 3, "c_gen_dim": 8,
        "c_ic_enc_dim": 6, "c_ic_dim": 4, "c_ci_enc_dim": 4, "c_con_dim": 5, "c_kl_increase_steps": 4,
        "c_l2_increase_steps": 4, "c_max_epochs": 3, "c_seed": 1, "num_samples_posterior": 4,
    },
}
STEPS = ("lfads_train.sh", "lfads_posterior_mean_sample.sh", "lfads_write_model_params.sh")


def test_manager_step_scripts_run_and_their_outputs_load(tmp_path: Path) -> None:
    collection = build_demo(tmp_path, TINY_PROFILE)
    (run,) = collection.find_runs(spec="single_dataset001")
    # a CPU slot as the queue gives it; the scripts still say --device=/gpu:0
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    outputs = []
    for step in STEPS:
        proc = subprocess.run(["bash", step], cwd=run.path, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{step} failed:\n{proc.stdout}\n{proc.stderr}"
        outputs.append(proc.stdout)
    assert "Stopping optimization: reached --max_epochs=3." in outputs[0]
    means = load_posterior_means(run.path)["dataset001"]
    assert means.rates.shape == (40, 10, 6) and np.all(means.rates > 0)
    assert means.factors is not None and means.factors.shape == (40, 10, 3)
    assert means.controller_outputs is not None and means.controller_outputs.shape == (40, 10, 1)
    log = fit_log(run.path)
    assert log.epoch.tolist() == [0, 1, 2] and log.step.tolist() == [4, 8, 12]  # 32 train trials, batch 8
    assert log.lve_index is not None and np.all(np.isfinite(log.total_valid))
    assert (run.path / "lfadsOutput" / "model_params").exists()
