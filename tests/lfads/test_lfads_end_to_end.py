"""`python -m lfads` as the queue runs it: train, restore, every inference kind, every output file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import h5py
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from lfads.files.fitlog import read_fitlog  # noqa: E402

Runner = Callable[..., subprocess.CompletedProcess[str]]
EPOCHS = 6


class Trained(NamedTuple):
    data_dir: Path
    out: Path
    flags: list[str]  # model flags, to pass again to every kind (the original's rule)
    stdout: str
    arrays: dict[str, np.ndarray]


def _io_flags(data_dir: Path, out: Path) -> list[str]:
    return [f"--data_dir={data_dir}", "--data_filename_stem=lfads", f"--lfads_save_dir={out}"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, dataset_factory: Callable[..., dict[str, np.ndarray]],
            tiny_flags: list[str], run_lfads: Runner) -> Trained:
    root = tmp_path_factory.mktemp("e2e")
    arrays = dataset_factory(root / "in" / "lfads_dataset001.h5", trials=40, steps=12, neurons=6)
    proc = run_lfads(["--kind=train", *_io_flags(root / "in", root / "out"), *tiny_flags, f"--max_epochs={EPOCHS}"])
    return Trained(root / "in", root / "out", tiny_flags, proc.stdout, arrays)


def test_training_lowers_the_cost_and_writes_the_original_files(trained: Trained) -> None:
    out = trained.out
    rows = read_fitlog(out / "fitlog.csv")
    assert [int(r["epoch"][0]) for r in rows] == list(range(EPOCHS))
    assert all(len(line.split(",")) == 19 for line in (out / "fitlog.csv").read_text().splitlines())
    assert rows[-1]["recon"][0] < rows[0]["recon"][0] - 5.0  # train reconstruction cost went down
    assert rows[-1]["step"][0] == EPOCHS * 4  # 32 train trials / batch 8 = 4 steps per epoch
    # periodic checkpoint at epoch 0 and at the end; LVE ones once the 4-step ramps are done
    assert (out / "checkpoint").read_text().startswith('model_checkpoint_path: "lfads_vae.ckpt-24"')
    assert (out / "lfads_vae.ckpt-4.index").exists() and (out / "lfads_vae.ckpt-24.data-00000-of-00001").exists()
    assert (out / "checkpoint_lve").read_text().startswith('model_checkpoint_path: "lfads_vae_lve.ckpt-')
    hps = json.loads((out / "hyperparameters-0.txt").read_text())
    assert hps["kind"] == "train" and hps["dataset_names"] == ["dataset001.h5"]
    assert hps["dataset_dims"] == {"dataset001.h5": 6} and hps["num_steps"] == 12 and hps["ndatasets"] == 1
    assert hps["num_steps_for_gen_ic"] == 12 and hps["do_train_readin"] == "true"
    assert list((out / "lfads_log").glob("events.out.tfevents.*"))
    assert "No GPU 0 visible" in trained.stdout and "running on /cpu:0" in trained.stdout
    assert f"Stopping optimization: reached --max_epochs={EPOCHS}." in trained.stdout
    assert "Epoch:5, step:24 (TRAIN, VALID): total:" in trained.stdout


def test_tensorboard_logs_the_ramp_weights_of_the_step_each_epoch_reached(trained: Trained) -> None:
    # TF1 evaluated them at the global step after the epoch: with 4-step ramps and 4 steps per
    # epoch, fully on from the first epoch's end (the last batch of that epoch had 0.75).
    logged: dict[str, dict[int, float]] = {"LFADS/KL_weight": {}, "LFADS/L2_weight": {}}
    for events in (trained.out / "lfads_log").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(events)):
            for value in event.summary.value:
                if value.tag in logged:
                    logged[value.tag][event.step] = value.simple_value
    for tag, by_step in logged.items():
        assert by_step == {step: min(step / 4, 1.0) for step in range(4, EPOCHS * 4 + 1, 4)}, tag


def test_training_again_restores_and_continues_the_step_count(trained: Trained, tmp_path: Path,
                                                              run_lfads: Runner) -> None:
    out = tmp_path / "out"
    shutil.copytree(trained.out, out)
    proc = run_lfads(["--kind=train", *_io_flags(trained.data_dir, out), *trained.flags, f"--max_epochs={EPOCHS + 2}"])
    assert f"Restoring parameters from {out}/lfads_vae.ckpt-24" in proc.stdout
    rows = read_fitlog(out / "fitlog.csv")
    assert [int(r["epoch"][0]) for r in rows] == list(range(EPOCHS + 2))
    assert [int(r["step"][0]) for r in rows[-3:]] == [24, 28, 32]
    assert (out / "hyperparameters-24.txt").exists()
    assert (out / "checkpoint").read_text().startswith('model_checkpoint_path: "lfads_vae.ckpt-32"')


def _read(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as h5:
        return {key: h5[key][()] for key in h5}


def test_posterior_sample_and_average_writes_every_key_and_shape(trained: Trained, tmp_path: Path,
                                                                 run_lfads: Runner) -> None:
    out = tmp_path / "out"
    shutil.copytree(trained.out, out)
    run_lfads(["--kind=posterior_sample_and_average", *_io_flags(trained.data_dir, out), *trained.flags,
               "--batch_size=6", "--checkpoint_pb_load_name=checkpoint_lve"])
    lve_step = int((out / "checkpoint_lve").read_text().split('"')[1].rsplit("-", 1)[1])
    assert (out / f"hyperparameters-{lve_step}.txt").exists()
    for split, count in (("train", 32), ("valid", 8)):
        runs = _read(out / f"model_runs_dataset001.h5_{split}_posterior_sample_and_average")
        expected = {
            "prior_g0_mean": (count, 4), "prior_g0_logvar": (count, 4), "post_g0_mean": (count, 4),
            "post_g0_logvar": (count, 4), "gen_ics": (count, 8), "gen_states": (count, 12, 8),
            "factors": (count, 12, 3), "controller_outputs": (count, 12, 1), "output_dist_params": (count, 12, 6),
            "costs": (count,), "nll_bound_vaes": (count,), "nll_bound_iwaes": (count,), "train_steps": (count,),
        }
        assert {k: v.shape for k, v in runs.items()} == expected
        assert all(v.dtype == np.float64 and np.all(np.isfinite(v)) for v in runs.values())
        assert np.all(runs["output_dist_params"] > 0) and np.all(runs["train_steps"] == lve_step)
        # IWAE is a tighter bound than the VAE average of the same samples
        assert np.all(runs["nll_bound_iwaes"] <= runs["nll_bound_vaes"] + 1e-6)
        np.testing.assert_allclose(runs["prior_g0_logvar"], np.log(0.1), rtol=1e-5)
        with h5py.File(out / f"model_runs_dataset001.h5_{split}_posterior_sample_and_average", "r") as h5:
            assert {h5[key].compression for key in h5} == {"gzip"}  # as the original wrote them


def test_push_mean_prior_sample_and_model_params(trained: Trained, tmp_path: Path, run_lfads: Runner) -> None:
    out = tmp_path / "out"
    shutil.copytree(trained.out, out)
    io = _io_flags(trained.data_dir, out)
    run_lfads(["--kind=posterior_push_mean", *io, *trained.flags, "--checkpoint_pb_load_name=checkpoint_lve"])
    runs = _read(out / "model_runs_dataset001.h5_valid_posterior_push_mean")
    assert runs["factors"].shape == (8, 12, 3) and runs["controller_outputs"].shape == (8, 12, 1)
    run_lfads(["--kind=prior_sample", *io, *trained.flags, "--batch_size=5"])
    prior = _read(out / "model_runs_prior_sample")
    assert {k: v.shape for k, v in prior.items()} == {
        "gen_ics": (5, 8), "gen_states": (5, 12, 8), "factors": (5, 12, 3), "output_dist_params": (5, 12, 6),
        "costs": (1,), "prior_g0_mean": (5, 4), "prior_g0_logvar": (5, 4), "prior_zs_ar_con": (5, 12, 1),
    }
    run_lfads(["--kind=write_model_params", *io, *trained.flags, "--checkpoint_pb_load_name=checkpoint_lve"])
    params = _read(out / "model_params")
    # the names MATLAB's LFADS.ModelTrainedParams and Run.loadReadoutMatricesByDataset read
    assert params["LFADS_glm_fac_2_logrates_dataset001.h5_W:0"].shape == (3, 6)
    assert params["LFADS_glm_fac_2_logrates_dataset001.h5_b:0"].shape == (1, 6)
    assert params["LFADS_gen_gen_2_fac_W:0"].shape == (8, 3)
    for key in ("LFADS_ic_enc_fwd_GRU_Gates_xh_2_ru_W:0", "LFADS_z_ic_enc_2_post_g0_mean_W:0",
                "LFADS_con_GenGRU_Gates_h_2_ru_b:0", "LFADS_z_u_prior_ar1_logatau:0", "LFADS_con_c0:0",
                "LFADS_gen_GenGRU_Candidate_rh_2_c_W:0", "LFADS_gen_gen_2_fac_W_Adam:0", "LFADS_global_step:0"):
        assert key in params
    assert "LFADS_x_2_infac_dataset001.h5_W:0" not in params  # single session, no alignment: identity read-in


def test_compiled_sampling_runs_with_xla_gpu_autotuning_off_and_keeps_the_users_xla_flags(
        trained: Trained, tmp_path: Path, run_lfads: Runner, monkeypatch: pytest.MonkeyPatch) -> None:
    """XLA stops the process on a flag it does not know and writes the options it compiled with
    next to its dump: the run finishing and the dump saying level 0 show that XLA took ours."""
    out, dump = tmp_path / "out", tmp_path / "xla_dump"
    shutil.copytree(trained.out, out)
    monkeypatch.setenv("XLA_FLAGS", f"--xla_dump_to={dump}")
    run_lfads(["--kind=posterior_sample_and_average", *_io_flags(trained.data_dir, out), *trained.flags,
               "--batch_size=6", "--checkpoint_pb_load_name=checkpoint_lve", "--jit_compile=true"])
    assert (out / "model_runs_dataset001.h5_valid_posterior_sample_and_average").exists()
    options = [path.read_text() for path in dump.glob("*.debug_options")]
    assert options, f"XLA wrote no dump into {dump}: the user's XLA_FLAGS were lost"
    assert all("xla_gpu_autotune_level: 0" in text.splitlines() for text in options)


def test_a_posterior_step_without_an_lve_checkpoint_names_the_missing_file(trained: Trained, tmp_path: Path,
                                                                          run_lfads: Runner) -> None:
    proc = run_lfads(["--kind=posterior_sample_and_average", *_io_flags(trained.data_dir, tmp_path / "empty"),
                      *trained.flags, "--checkpoint_pb_load_name=checkpoint_lve"], check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith(f"lfads: error: {tmp_path}/empty/checkpoint_lve not found")
    # A trained run and a mistyped list name: a typo, not "run --kind=train first".
    proc = run_lfads(["--kind=posterior_sample_and_average", *_io_flags(trained.data_dir, trained.out),
                      *trained.flags, "--checkpoint_pb_load_name=checkpoint_lvee"], check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        f"lfads: error: {trained.out}/checkpoint_lvee not found: --checkpoint_pb_load_name=checkpoint_lvee names no"
        " checkpoint list here; use one of checkpoint, checkpoint_lve")
    # Stopped before any LVE checkpoint: the default name is no typo.
    stopped = tmp_path / "stopped"
    shutil.copytree(trained.out, stopped)
    (stopped / "checkpoint_lve").unlink()
    proc = run_lfads(["--kind=posterior_sample_and_average", *_io_flags(trained.data_dir, stopped),
                      *trained.flags, "--checkpoint_pb_load_name=checkpoint_lve"], check=False)
    assert proc.returncode == 1 and "no trained model to load" in proc.stderr.strip().splitlines()[-1], proc.stderr


@pytest.mark.parametrize("rate", ["1e12", "1e39"])  # 1e39 overflows float32: the first update ruins the weights
def test_a_non_finite_cost_stops_cleanly_with_a_message(trained: Trained, tmp_path: Path, run_lfads: Runner,
                                                       rate: str) -> None:
    proc = run_lfads(["--kind=train", *_io_flags(trained.data_dir, tmp_path / "out"), *trained.flags,
                      f"--learning_rate_init={rate}", "--max_grad_norm=1e12", "--max_epochs=20"], check=False)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("lfads: error:") and "non-finite" in last and "--learning_rate_init" in last
    assert "Traceback" not in proc.stderr
    # Whatever is saved is finite: an update with a finite gradient can still overflow the weights.
    for prefix in (tmp_path / "out").glob("lfads_vae*.ckpt-*.index"):
        reader = tf.train.load_checkpoint(str(prefix.with_suffix("")))
        for name in reader.get_variable_to_shape_map():
            assert np.all(np.isfinite(reader.get_tensor(name))), (prefix.name, name)
    if "the last finite weights are saved as " in last:
        saved = last.split("the last finite weights are saved as ")[1].split(".ckpt-")
        assert (tmp_path / "out" / f"{saved[0]}.ckpt-{saved[1].split('.')[0]}.index").exists()
    else:
        assert "the weights became non-finite by step" in last and "no checkpoint of them was written" in last, last


def test_non_finite_or_non_numeric_flag_values_are_refused(tmp_path: Path, run_lfads: Runner) -> None:
    for flag, says in (("--learning_rate_init=nan", "expected a finite number, got 'nan'"),
                       ("--max_grad_norm=inf", "expected a finite number, got 'inf'"),
                       ("--seed=abc", "expected a whole number, got 'abc'")):
        proc = run_lfads(["--kind=train", f"--data_dir={tmp_path}", f"--lfads_save_dir={tmp_path / 'out'}", flag],
                         check=False)
        assert proc.returncode == 2 and says in proc.stderr, proc.stderr


def test_output_files_follow_the_umask(trained: Trained, tmp_path: Path, run_lfads: Runner) -> None:
    # A lab group shares run trees: what the model writes must be readable as the umask allows.
    out = tmp_path / "out"
    shutil.copytree(trained.out, out)
    run_lfads(["--kind=posterior_push_mean", *_io_flags(trained.data_dir, out), *trained.flags,
               "--checkpoint_pb_load_name=checkpoint_lve"])
    umask = os.umask(0o022)
    os.umask(umask)
    # (copytree keeps the modes training gave the checkpoint state files)
    for name in ("model_runs_dataset001.h5_valid_posterior_push_mean", "checkpoint", "checkpoint_lve",
                 "hyperparameters-0.txt"):
        assert (out / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_a_group_writable_umask_reaches_the_tensorboard_folder_too(trained: Trained, tmp_path: Path,
                                                                    run_lfads: Runner) -> None:
    out = tmp_path / "out"
    previous = os.umask(0o002)  # a lab group's shared run tree
    try:
        run_lfads(["--kind=train", *_io_flags(trained.data_dir, out), *trained.flags, "--max_epochs=1"])
    finally:
        os.umask(previous)
    assert (out / "lfads_log").stat().st_mode & 0o777 == 0o775  # TensorFlow alone makes it 0755
    assert (out / "checkpoint").stat().st_mode & 0o777 == 0o664


def test_a_continued_run_refreshes_a_stand_in_lve_checkpoint(trained: Trained, tmp_path: Path, run_lfads: Runner) -> None:
    # Ramps far longer than the run: no real LVE, so checkpoint_lve stands in with the final weights,
    # and must follow the weights when the run is continued (the chained steps load it).
    out = tmp_path / "out"
    flags = [*trained.flags, "--kl_increase_steps=1000"]
    run_lfads(["--kind=train", *_io_flags(trained.data_dir, out), *flags, "--max_epochs=1"])
    assert (out / "checkpoint_lve").read_text().startswith('model_checkpoint_path: "lfads_vae_lve.ckpt-4"')
    proc = run_lfads(["--kind=train", *_io_flags(trained.data_dir, out), *flags, "--max_epochs=2"])
    assert "saving the final weights as the LVE checkpoint" in proc.stdout
    assert (out / "checkpoint_lve").read_text().startswith('model_checkpoint_path: "lfads_vae_lve.ckpt-8"')


def test_a_stand_in_lve_checkpoint_is_refreshed_also_once_the_ramps_are_done(trained: Trained, tmp_path: Path,
                                                                           run_lfads: Runner) -> None:
    # Ramps done within the first epoch, but one epoch of validation history is too little for a real
    # LVE in either run: the stand-in must follow the weights, not pass for a real LVE checkpoint.
    out = tmp_path / "out"
    flags = [*trained.flags, "--kl_increase_steps=1", "--l2_increase_steps=1"]
    run_lfads(["--kind=train", *_io_flags(trained.data_dir, out), *flags, "--max_epochs=1"])
    assert (out / "checkpoint_lve").read_text().startswith('model_checkpoint_path: "lfads_vae_lve.ckpt-4"')
    proc = run_lfads(["--kind=train", *_io_flags(trained.data_dir, out), *flags, "--max_epochs=2"])
    assert "saving the final weights as the LVE checkpoint" in proc.stdout
    assert (out / "checkpoint_lve").read_text().startswith('model_checkpoint_path: "lfads_vae_lve.ckpt-8"')
    # A third run long enough for a real LVE checkpoint replaces the stand-in for good.
    proc = run_lfads(["--kind=train", *_io_flags(trained.data_dir, out), *flags, "--max_epochs=4"])
    assert "saving the final weights as the LVE checkpoint" not in proc.stdout
    assert not (out / "checkpoint_lve.final_weights").exists()


def test_rerunning_a_finished_training_keeps_its_real_lve_checkpoint(trained: Trained, tmp_path: Path,
                                                                    run_lfads: Runner) -> None:
    # A queue retry or a second `bash lfads_train.sh` trains no epoch (max_epochs reached): the best
    # validation checkpoint must stay what the chained steps load, not become the final weights.
    out = tmp_path / "out"
    shutil.copytree(trained.out, out)
    before = (out / "checkpoint_lve").read_text()
    proc = run_lfads(["--kind=train", *_io_flags(trained.data_dir, out), *trained.flags, f"--max_epochs={EPOCHS}"])
    assert f"Stopping optimization: reached --max_epochs={EPOCHS}." in proc.stdout
    assert "saving the final weights as the LVE checkpoint" not in proc.stdout
    assert (out / "checkpoint_lve").read_text() == before


def test_sampling_with_flags_that_drop_trained_parts_is_refused(trained: Trained, tmp_path: Path,
                                                                 run_lfads: Runner) -> None:
    out = tmp_path / "out"
    shutil.copytree(trained.out, out)
    proc = run_lfads(["--kind=posterior_push_mean", *_io_flags(trained.data_dir, out), *trained.flags, "--co_dim=0",
                      "--checkpoint_pb_load_name=checkpoint_lve"], check=False)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert "which these flags do not build; pass the same model flags as in training" in last and "LFADS/" in last
    assert not list(out.glob("model_runs_*"))


def test_sampling_a_renamed_input_file_names_the_trained_datasets(trained: Trained, tmp_path: Path,
                                                                  run_lfads: Runner) -> None:
    out, data = tmp_path / "out", tmp_path / "in"
    shutil.copytree(trained.out, out)
    data.mkdir()
    shutil.copy(trained.data_dir / "lfads_dataset001.h5", data / "lfads_renamed.h5")
    proc = run_lfads(["--kind=posterior_push_mean", *_io_flags(data, out), *trained.flags,
                      "--checkpoint_pb_load_name=checkpoint_lve"], check=False)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert "was trained on dataset(s) dataset001.h5, not renamed.h5; dataset names come from the input file names" in last
    assert not list(out.glob("model_runs_*"))


def test_a_truncated_checkpoint_is_named_and_the_previous_one_listed_is_used(trained: Trained, tmp_path: Path,
                                                                                run_lfads: Runner) -> None:
    out = tmp_path / "out"
    shutil.copytree(trained.out, out)
    data = out / "lfads_vae.ckpt-24.data-00000-of-00001"
    with data.open("r+b") as handle:
        handle.truncate(100)  # an interrupted copy of the run folder, or a crash while it was rewritten
    older = [p for p in read_state_paths(out / "checkpoint") if p != "lfads_vae.ckpt-24"]
    assert older, "the trained fixture lists an older periodic checkpoint"
    proc = run_lfads(["--kind=train", *_io_flags(trained.data_dir, out), *trained.flags, f"--max_epochs={EPOCHS + 1}"],
                     check=False)
    assert proc.returncode == 0, proc.stderr
    assert f"Cannot read {out}/lfads_vae.ckpt-24 (" in proc.stdout
    assert f"Restoring parameters from {out}/{older[-1]}" in proc.stdout
    # With nothing older listed, the error names the torn one and the fix.
    shutil.rmtree(out)
    shutil.copytree(trained.out, out)
    with data.open("r+b") as handle:
        handle.truncate(100)
    (out / "checkpoint").write_text('model_checkpoint_path: "lfads_vae.ckpt-24"\n'
                                    'all_model_checkpoint_paths: "lfads_vae.ckpt-24"\n')
    proc = run_lfads(["--kind=train", *_io_flags(trained.data_dir, out), *trained.flags, f"--max_epochs={EPOCHS + 1}"],
                     check=False)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"lfads: error: {out}/lfads_vae.ckpt-24: cannot read checkpoint (") and "delete it" in last


def read_state_paths(state: Path) -> list[str]:
    from lfads.files.checkpoints import read_state

    parsed = read_state(state)
    return [] if parsed is None else list(parsed.all_paths)


@pytest.mark.parametrize("bias", [0.0, 0.5])
def test_a_zero_bias_of_a_map_built_without_one_is_no_reason_to_refuse_a_checkpoint(trained: Trained, tmp_path: Path,
                                                                                     bias: float) -> None:
    # Some copies of the original's init_linear saved an all-zero `<map>/b` for maps without a bias.
    import tensorflow as tf

    from lfads.errors import LfadsError
    from lfads.files.checkpoints import restore

    reader = tf.train.load_checkpoint(str(trained.out / "lfads_vae.ckpt-24"))
    names = [n for n in reader.get_variable_to_shape_map() if n.startswith("LFADS/") and not n.endswith(("/Adam", "/Adam_1"))]
    variables = {n: tf.Variable(reader.get_tensor(n)) for n in names}
    extra = "LFADS/gen/gen_2_fac/b"
    assert extra not in variables and "LFADS/gen/gen_2_fac/W" in variables
    prefix = tmp_path / "copy.ckpt-24"
    tensors = [reader.get_tensor(n) for n in names] + [np.full((1, 3), bias, np.float32)]
    tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=[*names, extra], shape_and_slices=[""] * (len(names) + 1),
                      tensors=tensors)
    if bias == 0.0:
        assert restore(prefix, variables, set(names)) == []
    else:
        with pytest.raises(LfadsError, match="holds LFADS/gen/gen_2_fac/b, which these flags do not build"):
            restore(prefix, variables, set(names))


def test_adams_beta_powers_carry_the_originals_scope_and_older_checkpoints_still_restore(trained: Trained,
                                                                                         tmp_path: Path) -> None:
    # run_lfads.py built the model, optimiser included, inside tf.variable_scope("LFADS"): TF1's
    # AdamOptimizer named its accumulators LFADS/beta1_power and LFADS/beta2_power there.
    import tensorflow as tf

    from lfads.files.checkpoints import restore

    reader = tf.train.load_checkpoint(str(trained.out / "lfads_vae.ckpt-24"))
    stored = reader.get_variable_to_shape_map()
    assert {"LFADS/beta1_power", "LFADS/beta2_power"} <= set(stored) and "beta1_power" not in stored
    # A checkpoint of this port before the names matched ("beta1_power") restores into the new names.
    names = [n for n in stored if n.startswith("LFADS/") and "beta" not in n]
    prefix = tmp_path / "older.ckpt-24"
    tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=[*names, "beta1_power", "beta2_power"],
                      shape_and_slices=[""] * (len(names) + 2),
                      tensors=[*(reader.get_tensor(n) for n in names), np.float32(0.25), np.float32(0.5)])
    variables = {n: tf.Variable(reader.get_tensor(n)) for n in names}
    variables.update({"LFADS/beta1_power": tf.Variable(np.float32(0.9)), "LFADS/beta2_power": tf.Variable(np.float32(0.999))})
    assert restore(prefix, variables, set(names)) == []
    assert (float(variables["LFADS/beta1_power"].numpy()), float(variables["LFADS/beta2_power"].numpy())) == (0.25, 0.5)


def test_sigterm_saves_the_step_it_stopped_at_and_training_again_goes_on_from_it(
        trained: Trained, tmp_path: Path, run_lfads: Runner, lfads_training: Callable[..., Any]) -> None:
    import signal

    out = tmp_path / "out"
    train = ["--kind=train", *_io_flags(trained.data_dir, out), *trained.flags, "--max_epochs=100000"]
    # Two epochs logged: the periodic checkpoint (every 10 epochs) is at step 4, well behind.
    with lfads_training(train, out / "fitlog.csv", epochs=2) as proc:
        proc.send_signal(signal.SIGTERM)
        stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, stdout[-2000:]
    step = int((out / "checkpoint").read_text().split('"')[1].rsplit("-", 1)[1])
    assert step >= 8, step  # past epoch 1: the step it stopped at, not the last periodic checkpoint (4)
    assert f"Stopped by SIGTERM: saved lfads_vae.ckpt-{step}; training this run again continues from it." in stdout
    assert (out / f"lfads_vae.ckpt-{step}.index").exists()
    epochs_done = len(read_fitlog(out / "fitlog.csv"))
    again = run_lfads(["--kind=train", *_io_flags(trained.data_dir, out), *trained.flags, f"--max_epochs={epochs_done + 1}"])
    assert f"Restoring parameters from {out}/lfads_vae.ckpt-{step}" in again.stdout
    rows = read_fitlog(out / "fitlog.csv")
    assert [int(r["epoch"][0]) for r in rows] == list(range(epochs_done + 1))  # the cut epoch: trained again, logged once
    assert int(rows[-1]["step"][0]) == step + 4


@pytest.mark.parametrize("reset", [False, True])
def test_do_reset_learning_rate_sets_the_restored_rate_back_to_learning_rate_init(
        trained: Trained, tmp_path: Path, run_lfads: Runner, reset: bool) -> None:
    import tensorflow as tf

    out = tmp_path / "out"
    shutil.copytree(trained.out, out)
    restored = float(tf.train.load_checkpoint(str(out / "lfads_vae.ckpt-24")).get_tensor("LFADS/learning_rate"))
    flags = [flag for flag in trained.flags if not flag.startswith("--learning_rate_init=")]
    run_lfads(["--kind=train", *_io_flags(trained.data_dir, out), *flags, "--learning_rate_init=0.003",
               f"--do_reset_learning_rate={'true' if reset else 'false'}", f"--max_epochs={EPOCHS + 1}"])
    rate = float(tf.train.load_checkpoint(str(out / "lfads_vae.ckpt-28")).get_tensor("LFADS/learning_rate"))
    # One epoch is too short for the plateau rule to decay it: the rate it started that epoch with.
    assert rate == pytest.approx(0.003 if reset else restored), (rate, restored)


def test_sigterm_to_a_pipeline_into_tee_still_saves_and_exits_143(trained: Trained, tmp_path: Path) -> None:
    """MATLAB-written scripts pipe LFADS into tee; the queue signals the whole group, so the reader dies
    first and the next print fails (with --debug_print_each_step, right after the step in flight)."""
    import signal
    import sys
    import time

    repo = Path(__file__).resolve().parents[2]
    out = tmp_path / "out"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1"}
    read_end, write_end = os.pipe()
    tee = subprocess.Popen(["cat"], stdin=read_end, stdout=subprocess.DEVNULL, process_group=0)
    lfads = subprocess.Popen([sys.executable, "-m", "lfads", "--kind=train", *_io_flags(trained.data_dir, out),
                              *trained.flags, "--max_epochs=100000", "--debug_print_each_step=true"],
                             cwd=repo, env=env, stdout=write_end, stderr=subprocess.PIPE, text=True,
                             process_group=tee.pid)
    os.close(read_end)
    os.close(write_end)
    try:
        deadline = time.monotonic() + 240
        while not (out / "fitlog.csv").exists() or len((out / "fitlog.csv").read_text().splitlines()) < 2:
            assert lfads.poll() is None and time.monotonic() < deadline, "training did not get going"
            time.sleep(0.05)
        os.killpg(tee.pid, signal.SIGTERM)
        _, stderr = lfads.communicate(timeout=60)
    finally:
        for process in (lfads, tee):
            if process.poll() is None:
                process.kill()
        tee.wait()
    assert lfads.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    step = int((out / "checkpoint").read_text().split('"')[1].rsplit("-", 1)[1])
    assert step >= 8, step  # the step it stopped at, not the periodic checkpoint of epoch 0 (step 4)
