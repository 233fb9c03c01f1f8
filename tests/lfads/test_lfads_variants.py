"""Stitching several datasets, and Gaussian observations, through the command line."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

from lfads.files.fitlog import read_fitlog

Runner = Callable[..., subprocess.CompletedProcess[str]]
MakeDataset = Callable[..., dict[str, np.ndarray]]


def _io(data_dir: Path, out: Path) -> list[str]:
    return [f"--data_dir={data_dir}", "--data_filename_stem=lfads", f"--lfads_save_dir={out}"]


def test_two_datasets_are_stitched_and_trained(tmp_path: Path, dataset_factory: MakeDataset, tiny_flags: list[str],
                                               run_lfads: Runner) -> None:
    dataset_factory(tmp_path / "in" / "lfads_session_a.h5", neurons=5, seed=1, alignment_factors=3)
    dataset_factory(tmp_path / "in" / "lfads_session_b.h5", neurons=7, seed=2, alignment_factors=3)
    out = tmp_path / "out"
    flags = [*tiny_flags, "--co_dim=0"]  # stitching is about the read-in/out; no controller keeps it quick
    proc = run_lfads(["--kind=train", *_io(tmp_path / "in", out), *flags, "--max_epochs=5"])
    assert "Epoch:4, step:40 " in proc.stdout  # 2 datasets x 4 batches per epoch
    rows = read_fitlog(out / "fitlog.csv")
    assert rows[-1]["recon"][0] < rows[0]["recon"][0]
    run_lfads(["--kind=posterior_sample_and_average", *_io(tmp_path / "in", out), *flags, "--batch_size=3",
               "--checkpoint_pb_load_name=checkpoint_lve"])
    for name, neurons in (("session_a.h5", 5), ("session_b.h5", 7)):
        with h5py.File(out / f"model_runs_{name}_valid_posterior_sample_and_average") as h5:
            assert h5["output_dist_params"].shape == (8, 12, neurons)
            assert h5["factors"].shape == (8, 12, 3)  # one shared factor space


def test_gaussian_observations_train_and_give_means_and_variances(tmp_path: Path, dataset_factory: MakeDataset,
                                                                 tiny_flags: list[str], run_lfads: Runner) -> None:
    dataset_factory(tmp_path / "in" / "lfads_g.h5", gaussian=True, neurons=4)
    out = tmp_path / "out"
    # No controller keeps the XLA compile short; this is the test of the XLA path (the CPU default is off).
    flags = [*tiny_flags, "--output_dist=gaussian", "--co_dim=0", "--jit_compile=true"]
    run_lfads(["--kind=train", *_io(tmp_path / "in", out), *flags, "--max_epochs=5"])
    rows = read_fitlog(out / "fitlog.csv")
    assert rows[-1]["recon"][0] < rows[0]["recon"][0]
    run_lfads(["--kind=posterior_sample_and_average", *_io(tmp_path / "in", out), *flags, "--batch_size=3",
               "--checkpoint_pb_load_name=checkpoint_lve"])
    with h5py.File(out / "model_runs_g.h5_valid_posterior_sample_and_average") as h5:
        params = h5["output_dist_params"][()]
    assert params.shape == (8, 12, 8)  # means of the 4 channels, then their variances
    assert np.all(params[..., 4:] > 0)
