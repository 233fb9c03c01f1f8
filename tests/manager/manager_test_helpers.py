"""Helpers shared by the manager tests (a uniquely named module: `conftest` is ambiguous across test folders)."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np

from manager.collection import RunCollection
from manager.datasets import DatasetCollection
from manager.params import RunParams
from manager.run import Run
from manager.runspec import RunSpec

# Enough trials for the seed's c_batch_size=150 (needs 750), tiny in every other way.
SEED_TINY = {"n_conditions": 25, "min_trials_per_condition": 30, "max_trials_per_condition": 32, "n_time": 40}


def run_manager_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The real `lfads-manager` entry point in a child process."""
    return subprocess.run([sys.executable, "-m", "manager", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def run_manager_cli_in_process(*args: str) -> tuple[int, str]:
    """(exit status, stderr) of `lfads-manager ARGS` through the same entry point, without the ~0.3 s
    of a new interpreter; for the many one-line-error cases (a traceback fails the test)."""
    from manager.cli import main

    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        status = main(list(args))
    return status, stderr.getvalue()


def file_states(root: Path) -> dict[str, tuple[int, int]]:
    """rel path -> (mtime_ns, size) of every file and symlink under root (symlinks not followed).

    Runs' `.runqueue/` folders are the queue's (prepare takes the run lock in there), not prepare's output."""
    states = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [name for name in dirs if name != ".runqueue"]
        for name in files:
            path = Path(folder) / name
            stat = path.lstat()
            states[str(path.relative_to(root))] = (stat.st_mtime_ns, stat.st_size)
    return states


def write_npz_dataset(path: Path, n_trials: int = 40, n_channels: int = 6, n_time: int = 20, seed: int = 0,
                      **overrides: object) -> Path:
    """A small .npz dataset with counts, time, conditions and truth; `overrides` replace fields."""
    rng = np.random.default_rng(seed)
    truth = rng.uniform(0.05, 0.5, size=(n_trials, n_channels, n_time))
    fields: dict[str, object] = {
        "counts": rng.poisson(truth).astype(np.float64),
        "timeVecMs": np.arange(n_time, dtype=np.float64),
        "conditionId": np.arange(n_trials) % 4 + 1.0,
        "truth": truth,
    }
    fields.update(overrides)
    np.savez(path, **{k: v for k, v in fields.items() if v is not None})
    return path


def small_collection(root: Path, files: list[str], batch_size: int = 4, **params: object) -> RunCollection:
    """A collection with one single-dataset spec per file and one param set."""
    datasets = DatasetCollection(root / "datasets")
    datasets.add_files(files)
    collection = RunCollection(root / "runs", "small", datasets)
    collection.add_params(RunParams(c_batch_size=batch_size, c_factors_dim=3, **params))
    for dataset in datasets:
        collection.add_run_spec(RunSpec(dataset.single_run_name, datasets, [dataset.name]))
    return collection


def write_fake_posterior(run: Run, kind: str = "posterior_sample_and_average", limit: int | None = None, scale: float = 0.9,
                         gaussian: bool = False) -> None:
    """model_runs files for every dataset of `run`, as the posterior step writes them: truth x scale
    (or counts + 0.5 without truth), `limit` trials per split."""
    for name in run.dataset_names:
        with h5py.File(run.path / "lfadsInput" / f"lfads_{name}.h5", "r") as inputs:
            for split in ("train", "valid"):
                values = inputs[f"{split}_truth"][()] if f"{split}_truth" in inputs else inputs[f"{split}_data"][()] + 0.5
                values = values[:limit] * scale
                if gaussian:
                    values = np.concatenate([values, np.full_like(values, 0.25)], axis=2)
                out = run.path / "lfadsOutput" / f"model_runs_{name}.h5_{split}_{kind}"
                out.parent.mkdir(exist_ok=True)
                with h5py.File(out, "w") as handle:
                    handle["output_dist_params"] = values
