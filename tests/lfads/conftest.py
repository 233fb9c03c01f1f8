"""Small synthetic datasets in the run-manager layout (lfads_<ds>.h5) and a CLI runner."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


def make_dataset(path: Path, *, trials: int = 40, steps: int = 12, neurons: int = 6, seed: int = 0,
                 ext_dim: int = 0, gaussian: bool = False, alignment_factors: int = 0) -> dict[str, np.ndarray]:
    """Trials of a 2-D rotation with random phase, read out to `neurons` log-rates, then Poisson
    counts (or Gaussian values). Split as the manager does: every 5th trial is validation."""
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi, size=trials)
    t = np.arange(steps) * 0.5
    latent = np.stack([np.cos(phase[:, None] + t), np.sin(phase[:, None] + t)], axis=-1)  # (E, T, 2)
    weights = rng.normal(0, 1.0, size=(2, neurons))
    log_rates = latent @ weights + np.log(1.5)
    truth = np.exp(log_rates)
    ext = rng.normal(size=(trials, steps, ext_dim)) if ext_dim else None
    if gaussian:
        data = truth + rng.normal(0, 0.3, size=truth.shape)
    else:
        data = rng.poisson(truth).astype(np.int64)
    valid = np.arange(0, trials, 5)
    train = np.setdiff1d(np.arange(trials), valid)
    arrays: dict[str, np.ndarray] = {
        "train_data": data[train], "valid_data": data[valid],
        "train_truth": truth[train], "valid_truth": truth[valid],
        "conversion_factor": np.array([1.0]),
        "train_inds": (train + 1).astype(np.float64), "valid_inds": (valid + 1).astype(np.float64),
    }
    if ext is not None:
        arrays["train_ext_input"], arrays["valid_ext_input"] = ext[train], ext[valid]
    if alignment_factors:
        arrays["alignment_matrix_cxf"] = rng.normal(0, 0.3, size=(neurons, alignment_factors))
        arrays["alignment_bias_c"] = data[train].mean(axis=(0, 1)).astype(np.float64)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as h5:
        for key, value in arrays.items():
            h5.create_dataset(key, data=value, compression="gzip" if value.ndim > 1 else None)
    return arrays


# Tiny model flags shared by the tests; every test adds its own kind/paths.
TINY_FLAGS = [
    "--factors_dim=3", "--gen_dim=8", "--ic_dim=4", "--ic_enc_dim=6", "--co_dim=1", "--ci_enc_dim=4",
    "--con_dim=5", "--batch_size=8", "--kl_increase_steps=4", "--l2_increase_steps=4",
    "--learning_rate_init=0.02", "--seed=3", "--device=/gpu:0",
]


# Session-scoped (they hold no state) so module-scoped fixtures can use them too.
@pytest.fixture(scope="session")
def dataset_factory() -> Callable[..., dict[str, np.ndarray]]:
    return make_dataset


@pytest.fixture(scope="session")
def tiny_flags() -> list[str]:
    return list(TINY_FLAGS)


@pytest.fixture(scope="session")
def run_lfads(model_installed: None) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run `python -m lfads` as the queue does: a real subprocess, CPU only."""

    def run(args: list[str], check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1"}
        proc = subprocess.run([sys.executable, "-m", "lfads", *args], capture_output=True, text=True,
                              env=env, cwd=REPO, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"lfads exited {proc.returncode}\nSTDOUT:\n{proc.stdout}\nSTDERR:\n{proc.stderr}")
        return proc

    return run


@pytest.fixture(scope="session")
def lfads_training(model_installed: None) -> Callable[..., contextlib.AbstractContextManager[subprocess.Popen[str]]]:
    """`python -m lfads ARGS` in the background (CPU only, output captured), handed over once `fitlog`
    holds `epochs` rows; killed on the way out if it still runs."""

    @contextlib.contextmanager
    def start(args: list[str], fitlog: Path, epochs: int = 1) -> Iterator[subprocess.Popen[str]]:
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen([sys.executable, "-m", "lfads", *args], cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 240
            while not fitlog.exists() or len(fitlog.read_text().splitlines()) < epochs:
                assert proc.poll() is None and time.monotonic() < deadline, "training did not get going"
                time.sleep(0.05)
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    return start
