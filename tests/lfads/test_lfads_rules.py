"""The model's equations, dropout positions and training rules, each pinned against a closed form or the reference.

Found by mutation testing: each test fails under the change of the code its docstring names
(and passed, unnoticed, before these tests).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import h5py
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from lfads import posterior  # noqa: E402
from lfads.costs import trial_terms  # noqa: E402
from lfads.flags import parse_flags  # noqa: E402
from lfads.model.lfads_model import MEAN, SAMPLE, Masks, Noise  # noqa: E402
from lfads.model.priors import DiagGaussian, kl_diag_gaussians  # noqa: E402
from lfads.run import prepare  # noqa: E402
from lfads.train import EpochCosts, Trainer  # noqa: E402

STEPS, NEURONS, TRIALS = 8, 4, 20


def _write_dataset(path: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    counts = rng.poisson(2.0, size=(TRIALS, STEPS, NEURONS)).astype(np.int64)
    valid = np.arange(0, TRIALS, 5)
    train = np.setdiff1d(np.arange(TRIALS), valid)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as h5:
        h5["train_data"], h5["valid_data"] = counts[train], counts[valid]
        h5["train_inds"], h5["valid_inds"] = train + 1.0, valid + 1.0


def _context(root: Path, *extra: str):
    _write_dataset(root / "in" / "lfads_ds.h5")
    flags = parse_flags([f"--data_dir={root / 'in'}", "--data_filename_stem=lfads", f"--lfads_save_dir={root / 'out'}",
                         "--device=/cpu:0", "--batch_size=4", "--factors_dim=3", "--gen_dim=6", "--ic_dim=2",
                         "--ic_enc_dim=4", "--ci_enc_dim=3", "--con_dim=4", "--seed=0", *extra])
    return prepare(flags)


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    return _context(tmp_path_factory.mktemp("ctl"), "--co_dim=1")


# ---- costs ------------------------------------------------------------------------------------

def test_kl_ic_is_the_analytic_kl_of_diagonal_gaussians() -> None:
    """Mutation kl_ic_swap (priors.py: ratio = exp(p.logvar - q.logvar)) survives the suite."""
    rng = np.random.default_rng(0)
    mq, mp = rng.normal(size=(3, 4)), rng.normal(size=(1, 4))
    lq, lp = rng.normal(size=(3, 4)) * 0.7, rng.normal(size=(1, 4)) * 0.7
    got = kl_diag_gaussians(DiagGaussian(tf.constant(mq, tf.float32), tf.constant(lq, tf.float32)),
                            DiagGaussian(tf.constant(mp, tf.float32), tf.constant(lp, tf.float32))).numpy()
    vq, vp = np.exp(lq), np.exp(lp)
    expected = 0.5 * np.sum(np.log(vp / vq) + vq / vp + (mq - mp) ** 2 / vp - 1.0, axis=1)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_poisson_log_p_is_the_full_likelihood_summed_over_time_and_channels(ctx) -> None:
    """Mutations no_lgamma (recons.py) and logp_mean (costs.py: mean over time) survive the suite."""
    model, ds = ctx.built.model, ctx.datasets[0]
    data = ds.train_data[:4]
    out = model(0, data, None, Noise(None, None), None, MEAN)
    got = trial_terms(model, out, data, ctx.costs).log_p.numpy()
    logr = out.logits.numpy().astype(np.float64)
    lgam = np.vectorize(math.lgamma)(data + 1.0)
    expected = np.sum(data * logr - np.exp(logr) - lgam, axis=(1, 2))
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_kl_weights_multiply_their_kl_terms(ctx) -> None:
    """Mutations kl_ic_weight_ignored / kl_co_weight_ignored (costs.py) survive the suite."""
    model, ds = ctx.built.model, ctx.datasets[0]
    data = ds.train_data[:4]
    noise = model.make_noise(4, tf.constant([1, 2], tf.int64))
    out = model(0, data, None, noise, None, SAMPLE)
    base = trial_terms(model, out, data, ctx.costs)
    weighted = trial_terms(model, out, data, dataclasses.replace(ctx.costs, kl_ic_weight=3.0, kl_co_weight=5.0))
    assert np.all(np.abs(base.kl_ic.numpy()) > 0) and np.all(np.abs(base.kl_co.numpy()) > 0)
    np.testing.assert_allclose(weighted.kl_ic.numpy(), 3.0 * base.kl_ic.numpy(), rtol=1e-5)
    np.testing.assert_allclose(weighted.kl_co.numpy(), 5.0 * base.kl_co.numpy(), rtol=1e-5)


def test_iwae_of_identical_samples_equals_the_vae_bound() -> None:
    """Mutation iwae_sign (posterior.py: logsumexp + log K) survives: iwae <= vae still holds."""
    bound = np.full((2, 7), -3.25)
    vae, iwae = posterior.nll_bounds_np(bound)
    np.testing.assert_allclose(vae, 3.25)
    np.testing.assert_allclose(iwae, 3.25)


# ---- dropout positions (reference §2) ----------------------------------------------------------

def test_dropout_hits_the_generator_output_and_ic_encoding_never_the_generator_state(tmp_path: Path) -> None:
    """Mutations gen_state_dropout / no_gen_out_dropout (decoder.py) and no_ic_enc_dropout (lfads_model.py)."""
    ctx0 = _context(tmp_path, "--co_dim=0")
    model, ds = ctx0.built.model, ctx0.datasets[0]
    data = ds.train_data[:4]
    ones = Masks(data=tf.ones((4, STEPS, NEURONS)), ext=None, ic_enc=tf.ones((4, 8)), con_in=None,
                 gen=tf.ones((STEPS, 4, 6)))
    ref = model(0, data, None, Noise(None, None), ones, MEAN)
    no_gen = model(0, data, None, Noise(None, None), ones._replace(gen=tf.zeros((STEPS, 4, 6))), MEAN)
    np.testing.assert_allclose(no_gen.gen_states.numpy(), ref.gen_states.numpy(), rtol=1e-6)  # state untouched
    np.testing.assert_array_equal(no_gen.factors.numpy(), 0.0)  # output dropped before the factor read-out
    no_ic = model(0, data, None, Noise(None, None), ones._replace(ic_enc=tf.zeros((4, 8))), MEAN)
    assert not np.allclose(no_ic.ic_post.mean.numpy(), ref.ic_post.mean.numpy())
    np.testing.assert_allclose(no_ic.ic_post.mean.numpy(), np.tile(model.ic_post.mean.b.numpy(), (4, 1)), atol=1e-6)


def test_dropout_hits_the_input_data_the_external_inputs_and_the_controller_input(tmp_path: Path) -> None:
    """Removing the data, external-input or controller-input mask (lfads_model.py encode, decoder.py
    _controller_setup) survived the suite."""
    _write_dataset(tmp_path / "in" / "lfads_ds.h5")
    with h5py.File(tmp_path / "in" / "lfads_ds.h5", "a") as h5:
        rng = np.random.default_rng(1)
        h5["train_ext_input"] = rng.normal(size=(TRIALS - TRIALS // 5, STEPS, 2))
        h5["valid_ext_input"] = rng.normal(size=(TRIALS // 5, STEPS, 2))
    c = prepare(parse_flags([f"--data_dir={tmp_path / 'in'}", "--data_filename_stem=lfads",
                             f"--lfads_save_dir={tmp_path / 'out'}", "--device=/cpu:0", "--batch_size=4",
                             "--factors_dim=3", "--gen_dim=6", "--ic_dim=2", "--ic_enc_dim=4", "--ci_enc_dim=3",
                             "--con_dim=4", "--seed=0", "--co_dim=1", "--ext_input_dim=2"]))
    model = c.built.model
    data, ext = c.datasets[0].split("train")
    assert ext is not None
    data, ext = tf.constant(data[:4], tf.float32), tf.constant(ext[:4], tf.float32)
    ones = model.make_masks(0, 4, tf.constant([0, 1], tf.int64), 1.0)  # keep_prob 1: all ones
    none = Noise(None, None)

    def run(d: tf.Tensor, e: tf.Tensor, masks: Masks) -> np.ndarray:
        return model(0, d, e, none, masks, MEAN).factors.numpy()

    ref = run(data, ext, ones)
    dropped_data = run(data, ext, ones._replace(data=tf.zeros_like(ones.data)))
    np.testing.assert_allclose(dropped_data, run(tf.zeros_like(data), ext, ones), rtol=1e-5, atol=1e-6)
    assert not np.allclose(dropped_data, ref)
    dropped_ext = run(data, ext, ones._replace(ext=tf.zeros_like(ones.ext)))
    np.testing.assert_allclose(dropped_ext, run(data, tf.zeros_like(ext), ones), rtol=1e-5, atol=1e-6)
    assert not np.allclose(dropped_ext, ref)
    ci_dim = model.decoder.ci_dim  # the encodings part of the controller input (the rest: fed-back factors)
    feedback_kept = tf.concat([tf.zeros_like(ones.con_in[..., :ci_dim]), ones.con_in[..., ci_dim:]], axis=-1)
    out = model(0, data, ext, none, ones._replace(con_in=feedback_kept), MEAN)
    ref_out = model(0, data, ext, none, ones, MEAN)
    assert not np.allclose(out.co_post.mean.numpy(), ref_out.co_post.mean.numpy())
    feedback_dropped = tf.concat([ones.con_in[..., :ci_dim], tf.zeros_like(ones.con_in[..., ci_dim:])], axis=-1)
    out_fb = model(0, data, ext, none, ones._replace(con_in=feedback_dropped), MEAN)
    assert not np.allclose(out_fb.co_post.mean.numpy(), ref_out.co_post.mean.numpy())
    np.testing.assert_allclose(out.ic_post.mean.numpy(), ref_out.ic_post.mean.numpy(), rtol=1e-6)  # encoders untouched


def test_the_ic_posterior_variance_has_its_floor(tmp_path: Path) -> None:
    """Mutation ic_post_var_min_off (priors.py) survives the suite."""
    ctx1 = _context(tmp_path, "--co_dim=0", "--ic_post_var_min=50.0")
    out = ctx1.built.model(0, ctx1.datasets[0].train_data[:4], None, Noise(None, None), None, MEAN)
    assert np.all(np.exp(out.ic_post.logvar.numpy()) >= 50.0)


# ---- encoder timing ------------------------------------------------------------------------------

def test_controller_lag_and_ic_window_see_the_right_time_steps(tmp_path: Path) -> None:
    """Mutations lag_reversed and gen_ic_steps_ignored (encoder.py) survive the suite."""
    ctx2 = _context(tmp_path, "--co_dim=1", "--controller_input_lag=1", "--num_steps_for_gen_ic=3")
    encoder = ctx2.built.model.encoder
    x = tf.constant(np.random.default_rng(0).normal(size=(STEPS, 2, NEURONS)), tf.float32)
    bumped = x.numpy().copy()
    bumped[4] += 3.0
    a, b = encoder(x), encoder(tf.constant(bumped))
    changed_fwd = [not np.allclose(a.ci_fwd[t], b.ci_fwd[t]) for t in range(STEPS)]
    changed_rev = [not np.allclose(a.ci_rev[t], b.ci_rev[t]) for t in range(STEPS)]
    assert changed_fwd == [t >= 5 for t in range(STEPS)]  # fwd encoder at t - lag
    assert changed_rev == [t <= 3 for t in range(STEPS)]  # rev encoder at t + lag
    np.testing.assert_array_equal(a.ic_enc.numpy(), b.ic_enc.numpy())  # step 4 is outside the IC window
    early = x.numpy().copy()
    early[2] += 3.0
    assert not np.allclose(encoder(tf.constant(early)).ic_enc.numpy(), a.ic_enc.numpy())


# ---- training loop -------------------------------------------------------------------------------

def _epoch(kl_w: float = 1.0, l2_w: float = 1.0) -> EpochCosts:
    return EpochCosts(1.0, 1.0, 1.0, 0.0, kl_w, l2_w, 0.0, 0.0, 0)


def test_lve_checkpoint_only_on_a_new_lowest_valid_cost_after_the_ramps(ctx, monkeypatch) -> None:
    """Mutations lve_no_lowest_update and lve_during_ramp (train.py)."""
    trainer = Trainer(ctx)
    saved: list[int] = []
    monkeypatch.setattr(trainer, "save",
                        lambda lve, valid_cost=None: saved.append(len(trainer.valid_costs)) if lve else None)
    monkeypatch.setattr("lfads.files.checkpoints.clear_lve_stand_in", lambda *_: None)
    trainer._maybe_save_lve(_epoch(kl_w=0.5), 1.0)  # ramp not done: never, however low
    trainer._maybe_save_lve(_epoch(kl_w=0.5), 0.5)
    assert saved == []
    for cost in (5.0, 4.0, 6.0, 4.5, 3.0):
        trainer._maybe_save_lve(_epoch(), cost)
    assert saved == [3, 4, 7]  # 5.0 (first after the ramp), 4.0, then 3.0; not 6.0 or 4.5 (above 4.0)


def test_a_continued_run_keeps_its_lve_checkpoint_until_a_lower_validation_cost(tmp_path: Path) -> None:
    """The lowest validation cost is stored with the LVE checkpoint: after a stop and resume, a worse
    epoch no longer replaces the best model (the original started afresh), and a better first epoch counts."""
    ctx = _context(tmp_path, "--co_dim=1", "--max_ckpt_to_keep_lve=1")
    first = Trainer(ctx)
    for cost in (5.0, 4.0):
        first._maybe_save_lve(_epoch(), cost)
    lve_state = ctx.save_dir / "checkpoint_lve"
    best = lve_state.read_text()
    ctx.built.state.global_step.assign_add(10)  # the resumed run trains on

    resumed = Trainer(ctx)
    assert resumed.lowest_valid == pytest.approx(4.0)
    resumed._maybe_save_lve(_epoch(), 4.5)  # its first epoch, worse than the stored best
    resumed._maybe_save_lve(_epoch(), 4.2)
    assert lve_state.read_text() == best
    resumed._maybe_save_lve(_epoch(), 3.9)
    assert lve_state.read_text() != best
    assert Trainer(ctx).lowest_valid == pytest.approx(3.9)

    ctx.built.state.global_step.assign_add(10)
    first_epoch_best = Trainer(ctx)
    first_epoch_best._maybe_save_lve(_epoch(), 3.0)  # a first epoch may count once there is a cost to beat
    assert Trainer(ctx).lowest_valid == pytest.approx(3.0)


def test_a_final_weights_stand_in_or_an_lve_checkpoint_without_its_cost_is_there_to_be_replaced(tmp_path: Path) -> None:
    from lfads.files import checkpoints

    ctx = _context(tmp_path, "--co_dim=1")
    checkpoints.save(ctx.save_dir, ctx.built.variables, "lfads_vae", 7, True, 5)  # as the original wrote it
    assert Trainer(ctx).lowest_valid == math.inf
    checkpoints.save(ctx.save_dir, ctx.built.variables, "lfads_vae", 8, True, 5, {checkpoints.LVE_COST_TENSOR: 2.0})
    assert Trainer(ctx).lowest_valid == pytest.approx(2.0)
    checkpoints.mark_lve_stand_in(ctx.save_dir, 8)
    assert Trainer(ctx).lowest_valid == math.inf


def test_a_seeded_run_continued_from_a_checkpoint_does_not_replay_the_first_runs_random_stream(ctx) -> None:
    state = ctx.built.state
    state.global_step.assign(0)
    fresh = Trainer(ctx).rng.integers(0, 2**31, size=4)
    assert list(fresh) == list(np.random.default_rng([0, 1]).integers(0, 2**31, size=4))  # as before: same figures
    state.global_step.assign(120)
    continued = Trainer(ctx).rng.integers(0, 2**31, size=4)
    state.global_step.assign(0)
    assert list(continued) != list(fresh)
    state.global_step.assign(120)
    assert list(Trainer(ctx).rng.integers(0, 2**31, size=4)) == list(continued)  # and still reproducible
    state.global_step.assign(0)


def test_learning_rate_plateau_needs_more_than_n_costs_and_compares_the_last_n(ctx) -> None:
    """Mutations lr_window_len (>= window) and lr_window_wider (last n+1 costs) in train.py."""
    ctx3 = ctx._replace(flags=dataclasses.replace(ctx.flags, learning_rate_n_to_compare=2,
                                                  learning_rate_decay_factor=0.5))
    state = ctx3.built.state
    state.learning_rate.assign(0.01)
    trainer = Trainer(ctx3)
    lr = 0.01
    for cost in (10.0, 11.0, 12.0):  # the third cost has only 2 before it: not "more than n"
        lr = trainer._manage_learning_rate(cost, lr)
    assert lr == pytest.approx(0.01)
    trainer = Trainer(ctx3)
    for cost in (10.0, 5.0, 6.0, 7.0):  # 7 > max(5, 6): decay (the 10 is outside the window)
        lr = trainer._manage_learning_rate(cost, lr)
    assert lr == pytest.approx(0.005)
    state.learning_rate.assign(ctx.flags.learning_rate_init)


def test_the_validation_pass_reads_validation_trials_without_dropout(ctx, monkeypatch) -> None:
    """Mutations valid_on_train and valid_dropout (train.py / steps.py)."""
    from lfads import train as train_mod
    from lfads.costs import batch_costs

    trainer = Trainer(ctx)
    ds = ctx.datasets[0]
    seen: list[np.ndarray] = []
    real_eval = trainer.steps.evaluate(0)

    def spy(data, ext, seed):
        seen.append(np.asarray(data))
        return real_eval(data, ext, seed)

    monkeypatch.setattr(trainer.steps, "evaluate", lambda index: spy)
    train_mod.valid_epoch(ctx, trainer.steps, np.random.default_rng(0))
    valid_rows = {r.tobytes() for r in ds.valid_data}
    assert seen and all(row.tobytes() in valid_rows for batch in seen for row in batch)
    # keep_prob=1 in validation: the compiled step equals the model called without dropout masks
    model, seed = ctx.built.model, tf.constant([4, 5], tf.int64)
    data = ds.valid_data[:4]
    got = real_eval(data, None, seed)
    out = model(0, data, None, model.make_noise(4, seed), None, SAMPLE)
    expected = batch_costs(model, out, data, ctx.built.state.global_step, ctx.costs)[0]
    assert float(got.total) == pytest.approx(float(expected.total), rel=1e-5)


# ---- stopping rule and posterior trial count ---------------------------------------------------------

def test_training_stops_once_the_learning_rate_is_below_learning_rate_stop(tmp_path: Path, capsys) -> None:
    """Mutation lr_stop_ignored (train.py): every test run stops by --max_epochs, so none sees this.
    RM's queue counts a run as done only on this exact line."""
    from lfads.files.fitlog import read_fitlog

    ctx4 = _context(tmp_path, "--co_dim=0", "--learning_rate_init=0.01", "--learning_rate_stop=0.02",
                    "--max_epochs=3", "--kl_increase_steps=1", "--l2_increase_steps=1")
    Trainer(ctx4).run()
    assert "Stopping optimization based on learning rate criteria." in capsys.readouterr().out
    assert len(read_fitlog(ctx4.save_dir / "fitlog.csv")) == 1


def test_ps_nexamples_to_process_limits_the_trials_written(tmp_path: Path) -> None:
    """Mutation ps_nexamples_ignored (posterior.py) survives the suite."""
    ctx5 = _context(tmp_path, "--co_dim=0")
    flags = dataclasses.replace(ctx5.flags, kind="posterior_sample_and_average", ps_nexamples_to_process=3,
                                batch_size=2)
    posterior.write_posterior(ctx5._replace(flags=flags), push_mean=False, base_seed=1)
    for split in ("train", "valid"):
        with h5py.File(ctx5.save_dir / f"model_runs_ds.h5_{split}_posterior_sample_and_average", "r") as h5:
            assert h5["factors"].shape[0] == 3 and h5["costs"].shape == (3,)


# ---- read-out, Gaussian output, trainable selection ---------------------------------------------------

def test_gaussian_output_params_are_means_then_variances() -> None:
    """Mutation gauss_var_not_exp (recons.py): the Gaussian variant test only checks params > 0,
    which log-variances near their init of 1 also pass."""
    from lfads.model.recons import Gaussian

    logits = tf.constant([[[0.5, -1.0, -2.0, 0.3]]], tf.float32)  # means (0.5, -1), logvars (-2, 0.3)
    np.testing.assert_allclose(Gaussian().dist_params(logits).numpy(), [[[0.5, -1.0, np.exp(-2.0), np.exp(0.3)]]],
                               rtol=1e-6)


def test_an_alignment_bias_starts_the_readout_bias(tmp_path: Path) -> None:
    """Mutation readout_bias_dropped (readin_readout.py); the stitching test checks the read-out W only."""
    _write_dataset(tmp_path / "in" / "lfads_ds.h5")
    rng = np.random.default_rng(1)
    matrix, bias = rng.normal(size=(NEURONS, 3)), rng.uniform(1, 2, size=NEURONS)
    with h5py.File(tmp_path / "in" / "lfads_ds.h5", "a") as h5:
        h5["alignment_matrix_cxf"], h5["alignment_bias_c"] = matrix, bias
    flags = parse_flags([f"--data_dir={tmp_path / 'in'}", "--data_filename_stem=lfads",
                         f"--lfads_save_dir={tmp_path / 'out'}", "--device=/cpu:0", "--batch_size=4",
                         "--factors_dim=3", "--gen_dim=6", "--ic_dim=2", "--ic_enc_dim=4", "--co_dim=0", "--seed=0"])
    readout = prepare(flags).built.model.readouts[0]
    np.testing.assert_allclose(readout.main.W.numpy(), matrix.T, rtol=1e-6)
    np.testing.assert_allclose(np.ravel(readout.main.b.numpy()), bias, rtol=1e-6)


def test_do_train_io_only_trains_only_the_read_in_and_read_out(tmp_path: Path) -> None:
    """Mutation io_only_ignored (build.py): no test passes --do_train_io_only."""
    ctx6 = _context(tmp_path, "--co_dim=0", "--do_train_io_only=true")
    names = {v.name for v in ctx6.built.train_vars}
    assert names and all(n.startswith(("LFADS/glm/", "LFADS/x_2_infac_")) for n in names), names


def test_posterior_costs_are_recon_plus_weighted_kl_plus_weighted_l2_per_trial() -> None:
    """Dropping the L2 term (or a weight) from posterior.summarise's `costs` survived the suite: the
    per-trial reference shares summarise, so only a closed form catches it."""
    trials, samples = 2, 3
    rng = np.random.default_rng(0)
    log_p, kl_ic, kl_co = (rng.normal(size=trials * samples) for _ in range(3))
    values = {"log_p": log_p, "kl_ic": kl_ic, "kl_co": kl_co, "kl_weight": np.float64(0.5),
              "l2_weight": np.float64(0.25), "l2": np.float64(8.0)}
    costs = posterior.summarise(values, trials, samples, step=7)["costs"]
    per_trial = lambda x: x.reshape(trials, samples).mean(axis=1)  # noqa: E731
    expected = -per_trial(log_p) + 0.5 * per_trial(kl_ic + kl_co) + 0.25 * 8.0
    np.testing.assert_allclose(costs, expected)


def test_fitlog_and_console_lines_keep_the_originals_layout_to_the_space() -> None:
    """The original continued its format strings over source lines with backslashes, so its lines hold
    runs of spaces (reference §7); only the comma count was tested, so a changed gap survived."""
    from lfads.files.fitlog import EpochSummary, console_line, csv_line

    both = EpochSummary(3, 40, 512.345, 500.1, 12.25, 530.5, 515.25, 15.25, 0.123456, 0.5, 0.25)
    train = both._replace(valid_total=None, valid_recon=None, valid_kl=None)
    assert csv_line(both) == ("epoch,3, step,40, total,512.35,530.50,       recon,500.10,515.25, kl,12.25,15.25,"
                              " l2,0.12346,       klweight,0.50, l2weight,0.25\n")
    assert csv_line(train) == ("epoch,3, step,40, total,512.35, recon,500.10, kl,12.25,       l2,0.12346,"
                               " klweight,0.50, l2weight,0.25\n")
    assert console_line(both) == ("Epoch:3, step:40 (TRAIN, VALID): total: 512.35, 530.50      recon: 500.10, 515.25,"
                                  "     kl: 12.25, 15.25,     l2: 0.12346,      kl weight: 0.50, l2 weight: 0.25")
    assert console_line(train) == ("Epoch:3, step:40 TRAIN: total: 512.35     recon: 500.10, kl: 12.25,      l2: 0.12346,"
                                   "    kl weight: 0.50, l2 weight: 0.25")


def test_the_splits_of_a_dataset_share_one_compiled_sampling_function(tmp_path: Path, monkeypatch) -> None:
    """16 train and 4 valid trials used to compile two functions (one per call size); a compile can
    take longer than the sampling. The results do not depend on the grouping (per-trial seeds)."""
    ctx6 = _context(tmp_path, "--co_dim=1")
    flags = dataclasses.replace(ctx6.flags, kind="posterior_sample_and_average", batch_size=3)
    made: list[tuple[object, ...]] = []
    original = posterior.Sampler.function

    def recording(self, dataset, trials, samples, mode, encode_each_sample=False):
        made.append((dataset, trials, samples, mode))
        return original(self, dataset, trials, samples, mode, encode_each_sample)

    monkeypatch.setattr(posterior.Sampler, "function", recording)
    posterior.write_posterior(ctx6._replace(flags=flags), push_mean=False, base_seed=1)
    assert len(set(made)) == 1, made
    sampler = posterior.Sampler(ctx6)
    for split_index, split in enumerate(("train", "valid")):
        data = ctx6.datasets[0].split(split)[0]
        alone = posterior.average_split(sampler, posterior.SplitKey(0, split_index), data, None, 3, 1)
        with h5py.File(ctx6.save_dir / f"model_runs_ds.h5_{split}_posterior_sample_and_average", "r") as h5:
            np.testing.assert_allclose(h5["factors"][()], alone["factors"], rtol=1e-5, atol=1e-6)


def test_weights_an_update_overflowed_are_never_saved(tmp_path: Path) -> None:
    """Also by the periodic save: an overflow on an epoch's last step skipped no step, and the
    every-10-epochs checkpoint stored the broken weights for a requeue to resume."""
    from lfads.errors import LfadsError

    ctx = _context(tmp_path, "--co_dim=1")
    trainer = Trainer(ctx)
    trainer.save(lve=False)
    saved = sorted(p.name for p in ctx.save_dir.iterdir())
    weight = next(var for name, var in ctx.built.variables.items() if name.endswith("/W"))
    weight.assign(tf.fill(weight.shape, np.float32(np.inf)))
    ctx.built.state.global_step.assign_add(5)
    for lve in (False, True):
        with pytest.raises(LfadsError, match=r"the weights became non-finite by step 5 .* no checkpoint of them was written"):
            trainer.save(lve=lve)
    assert sorted(p.name for p in ctx.save_dir.iterdir()) == saved


def test_a_run_restored_after_the_learning_rate_rule_stopped_it_trains_no_further(tmp_path: Path, capsys) -> None:
    """A requeued run that had stopped on learning_rate_stop only samples again (the original trained
    one more epoch, and could replace the LVE model)."""
    ctx = _context(tmp_path, "--co_dim=0", "--learning_rate_init=0.01", "--learning_rate_stop=0.02", "--max_epochs=5")
    Trainer(ctx).run()
    step = int(ctx.built.state.global_step.numpy())
    fitlog = (ctx.save_dir / "fitlog.csv").read_text()
    assert step > 0 and fitlog.count("\n") == 1  # one epoch, then the rule
    again = prepare(ctx.flags)  # restores the checkpoint, as a second `lfads --kind=train` does
    Trainer(again).run()
    assert int(again.built.state.global_step.numpy()) == step
    assert (ctx.save_dir / "fitlog.csv").read_text() == fitlog
    assert capsys.readouterr().out.count("Stopping optimization based on learning rate criteria.") == 2


def test_a_zero_learning_rate_stop_says_the_run_stops_only_at_max_epochs(tmp_path: Path, capsys) -> None:
    ctx = _context(tmp_path, "--co_dim=0", "--learning_rate_stop=0.000000", "--max_epochs=1")
    Trainer(ctx).run()
    assert "Note: --learning_rate_stop=0 never stops training; it stops at --max_epochs=1." in capsys.readouterr().out
