"""Model pieces against plain numpy versions of the original's equations (reference §2-§3)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from lfads.augment import jitter_spikes  # noqa: E402
from lfads.build import RunContext  # noqa: E402
from lfads.costs import correlation_per_trial, l2_cost, ramp_weight  # noqa: E402
from lfads.flags import parse_flags  # noqa: E402
from lfads.model.priors import AR1Prior, DiagGaussian  # noqa: E402
from lfads.model.recurrent import EncoderGRU, GenGRU  # noqa: E402
from lfads.run import prepare  # noqa: E402
from lfads.steps import CompiledSteps  # noqa: E402


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def test_encoder_gru_step_is_the_original_equation() -> None:
    cell = EncoderGRU("T/enc", 3, 4, weight_scale=1.0, clip_value=0.5, rng=np.random.default_rng(0))
    x = np.random.default_rng(1).normal(size=(2, 3)).astype(np.float32)
    h = np.random.default_rng(2).normal(size=(2, 4)).astype(np.float32) * 0.3
    got = cell.step_fn()(cell.project_inputs(x), h).numpy()
    w_g, b_g, w_c, b_c = (v.numpy() for v in (cell.gates.W, cell.gates.b, cell.candidate.W, cell.candidate.b))
    r, u = np.split(np.concatenate([x, h], 1) @ w_g + b_g, 2, axis=1)
    r, u = _sigmoid(r), _sigmoid(u + 1.0)  # forget bias on the update gate only
    c = np.tanh(np.concatenate([x, r * h], 1) @ w_c + b_c)
    np.testing.assert_allclose(got, np.clip(u * h + (1 - u) * c, -0.5, 0.5), rtol=1e-5, atol=1e-6)


def test_gen_gru_step_has_separate_input_and_recurrent_weights() -> None:
    cell = GenGRU("T/gen", 2, 3, 1.0, 1.0, clip_value=5.0, rng=np.random.default_rng(0))
    x = np.random.default_rng(1).normal(size=(4, 2)).astype(np.float32)
    h = np.random.default_rng(2).normal(size=(4, 3)).astype(np.float32)
    proj = tf.matmul(x, cell.input_weights())
    got = cell.step_fn()(proj[:, :6], proj[:, 6:], h).numpy()
    assert cell.x_2_ru is not None and cell.x_2_c is not None and cell.x_2_ru.b is None  # no input bias
    ru = x @ cell.x_2_ru.W.numpy() + h @ cell.h_2_ru.W.numpy() + cell.h_2_ru.b.numpy()
    r, u = _sigmoid(ru[:, :3]), _sigmoid(ru[:, 3:] + 1.0)
    c = np.tanh(x @ cell.x_2_c.W.numpy() + (r * h) @ cell.rh_2_c.W.numpy() + cell.rh_2_c.b.numpy())
    np.testing.assert_allclose(got, u * h + (1 - u) * c, rtol=1e-5, atol=1e-6)
    assert len(cell.recurrent_variables) == 4  # what goes into the L2 collection


def test_ar1_kl_is_the_fixed_form_conditioned_on_the_previous_sample() -> None:
    prior = AR1Prior("T/ar", 2, tau=5.0, noise_var=0.2, train_tau=True, train_noise_var=True)
    rng = np.random.default_rng(0)
    u = rng.normal(size=(3, 6, 2)).astype(np.float32)
    mean, logvar = rng.normal(size=(3, 6, 2)).astype(np.float32), rng.normal(size=(3, 6, 2)).astype(np.float32) * 0.1
    got = prior.kl_sampled(tf.constant(u), DiagGaussian(tf.constant(mean), tf.constant(logvar))).numpy()

    def log_n(x: np.ndarray, m: np.ndarray, var: np.ndarray) -> np.ndarray:
        return -0.5 * (np.log(2 * np.pi * var) + (x - m) ** 2 / var)

    phi, evar = np.exp(-1 / 5.0), 0.2
    pvar = evar / (1 - phi**2)
    log_p = np.concatenate([log_n(u[:, :1], 0.0, pvar), log_n(u[:, 1:], phi * u[:, :-1], evar)], axis=1)
    expected = (log_n(u, mean, np.exp(logvar)) - log_p).sum(axis=(1, 2))
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    samples = prior.sample(tf.random.stateless_normal((200, 4000, 2), [1, 2])).numpy()
    np.testing.assert_allclose(samples.var(axis=1).mean(), pvar, rtol=0.05)  # stationary from t=0


def test_a_fixed_zero_time_constant_is_white_noise_as_the_originals_log_0() -> None:
    prior = AR1Prior("T/ar0", 2, tau=0.0, noise_var=0.2, train_tau=False, train_noise_var=True)
    assert prior.phi().numpy().tolist() == [[0.0, 0.0]]
    u = tf.constant(np.random.default_rng(1).normal(size=(3, 6, 2)).astype(np.float32))
    kl = prior.kl_sampled(u, DiagGaussian(tf.zeros_like(u), tf.zeros_like(u))).numpy()
    assert np.isfinite(kl).all()
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(prior.kl_sampled(u, DiagGaussian(tf.zeros_like(u), tf.zeros_like(u))))
    (grad,) = tape.gradient(loss, prior.trainable_variables)
    assert np.isfinite(grad.numpy()).all()


def test_ramps_are_linear_in_steps() -> None:
    weights = [float(ramp_weight(tf.constant(s, tf.int64), 2, 4)) for s in (0, 2, 4, 6, 9)]
    assert weights == [0.0, 0.0, 0.5, 1.0, 1.0]
    assert float(ramp_weight(tf.constant(0, tf.int64), 0, 0)) == 1.0


@pytest.fixture(scope="module")
def make_context(tmp_path_factory: pytest.TempPathFactory,
                 dataset_factory: Callable[..., dict[str, np.ndarray]]) -> Callable[..., RunContext]:
    def make(name: str, extra: list[str], per_dataset: list[dict[str, Any]] | None = None,
             **data_kwargs: Any) -> RunContext:
        root = tmp_path_factory.mktemp(name)
        for index, kwargs in enumerate(per_dataset or [{}]):
            dataset_factory(root / "in" / f"lfads_ds{index}.h5", seed=index, **{**data_kwargs, **kwargs})
        flags = parse_flags([f"--data_dir={root / 'in'}", "--data_filename_stem=lfads",
                             f"--lfads_save_dir={root / 'out'}", "--device=/cpu:0", "--batch_size=4",
                             "--factors_dim=3", "--gen_dim=6", "--ic_dim=2", "--ic_enc_dim=4", "--ci_enc_dim=3",
                             "--con_dim=4", "--seed=0", *extra])
        return prepare(flags)

    return make


def test_stitching_read_ins_start_from_the_alignment_matrices(make_context: Callable[..., RunContext]) -> None:
    ctx = make_context("stitch", [], trials=20, steps=8, per_dataset=[
        {"neurons": 5, "alignment_factors": 3}, {"neurons": 7, "alignment_factors": 3}])
    model = ctx.built.model
    for readin, readout, ds in zip(model.readins, model.readouts, ctx.datasets, strict=True):
        np.testing.assert_allclose(readin.W.numpy(), ds.alignment_matrix_cxf, rtol=1e-6)
        np.testing.assert_allclose(readin.b.numpy(), -ds.alignment_bias_c[None] @ ds.alignment_matrix_cxf, rtol=1e-5)
        np.testing.assert_allclose(readout.main.W.numpy(), ds.alignment_matrix_cxf.T, rtol=1e-6)
        assert readin.W.name.startswith(f"LFADS/x_2_infac_{ds.name}/W")
    factors = tf.nn.l2_normalize(model.decoder.fac.W, axis=0).numpy()
    np.testing.assert_allclose(np.linalg.norm(model.decoder.fac.weight().numpy(), axis=0), 1.0, rtol=1e-5)
    np.testing.assert_allclose(model.decoder.fac.weight().numpy(), factors)


@pytest.mark.parametrize("inject", ["true", "false"])
def test_external_inputs_train_whether_encoded_or_injected(make_context: Callable[..., RunContext], inject: str) -> None:
    ctx = make_context(f"ext_{inject}", ["--ext_input_dim=2", f"--inject_ext_input_to_gen={inject}"],
                       trials=20, steps=8, neurons=4, ext_dim=2)
    steps = CompiledSteps(ctx.built, ctx.costs, 0.9, jit_compile=False)
    ds = ctx.datasets[0]
    rows = np.arange(4)
    before = [v.numpy().copy() for v in ctx.built.train_vars]
    result = steps.train(0)(ds.train_data[rows], ds.train_ext_input[rows], np.array([1, 2], np.int64))
    assert bool(result.applied) and np.isfinite(float(result.costs.total))
    static = {v.name for b, v in zip(before, ctx.built.train_vars, strict=True) if np.array_equal(b, v.numpy())}
    # at step 0 the KL ramp weight is 0, so only the priors (reached through the KL alone) stay put
    assert static == {"LFADS/z/u_prior_ar1/logatau:0", "LFADS/z/u_prior_ar1/logevars:0", "LFADS/z/prior_g0/mean:0"}
    gen_inputs = ctx.built.model.decoder.gen.input_dim
    assert gen_inputs == (1 + 2 if inject == "true" else 1)


def test_l2_cost_is_divided_by_the_number_of_regularised_parameters(make_context: Callable[..., RunContext]) -> None:
    ctx = make_context("l2", ["--l2_gen_scale=3.0", "--l2_con_scale=0.0"], trials=20, steps=8, neurons=4)
    model = ctx.built.model
    gen, con = model.l2_groups()
    numel = sum(int(np.prod(v.shape)) for v in gen + con)
    expected = sum(0.5 * 3.0 * float(np.sum(v.numpy() ** 2)) for v in gen) / numel
    assert float(l2_cost(model, ctx.costs)) == pytest.approx(expected, rel=1e-5)


def test_spike_jitter_moves_spikes_but_keeps_every_one(tmp_path: Path) -> None:
    counts = np.random.default_rng(0).poisson(1.0, size=(5, 20, 3))
    moved = jitter_spikes(counts, 2, np.random.default_rng(1))
    np.testing.assert_array_equal(moved.sum(axis=1), counts.sum(axis=1))
    assert not np.array_equal(moved, counts) and moved.min() >= 0


def test_adam_is_tf1s_with_epsilon_0_1_and_skips_non_finite_steps() -> None:
    from lfads.optimizer import Adam, TrainState

    var = tf.Variable(np.array([1.0, -2.0, 3.0], np.float32), name="T/w")
    state = TrainState(learning_rate=0.5)
    adam = Adam([var], max_grad_norm=1.0)
    x, m, v = var.numpy().astype(np.float64), np.zeros(3), np.zeros(3)
    for t, grad in enumerate([np.array([3.0, 0.0, 4.0]), np.array([0.1, -0.2, 0.3])], start=1):
        norm, applied = adam.apply([tf.constant(grad, tf.float32)], state, tf.constant(1.0))
        assert bool(applied) and float(norm) == pytest.approx(np.linalg.norm(grad), rel=1e-6)
        g = grad * min(1.0, 1.0 / np.linalg.norm(grad))  # global-norm clip at 1
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        x -= 0.5 * np.sqrt(1 - 0.999**t) / (1 - 0.9**t) * m / (np.sqrt(v) + 0.1)
        np.testing.assert_allclose(var.numpy(), x, rtol=1e-5)
    _, applied = adam.apply([tf.constant([np.nan, 0.0, 0.0], tf.float32)], state, tf.constant(1.0))
    assert not bool(applied) and int(state.global_step.numpy()) == 2
    np.testing.assert_allclose(var.numpy(), x, rtol=1e-5)


def test_learning_rate_decays_on_a_plateau_of_the_training_cost(make_context: Callable[..., RunContext],
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    from lfads.train import Trainer

    ctx = make_context("schedule", ["--learning_rate_n_to_compare=2", "--learning_rate_decay_factor=0.5",
                                    "--learning_rate_init=0.01"], trials=20, steps=8, neurons=4)
    trainer = Trainer(ctx)
    lr = 0.01
    for cost in (10.0, 9.0, 8.0, 8.5, 9.5):  # only 9.5 is above the max of the 2 costs before it
        lr = trainer._manage_learning_rate(cost, lr)
    assert lr == pytest.approx(0.005) and trainer.train_costs[-1] == float("inf")
    assert "     Decreasing learning rate to 0.005000." in capsys.readouterr().out
    for cost in (1.0, 0.5):  # the inf forces `n_to_compare` epochs at the new rate, however good they are
        lr = trainer._manage_learning_rate(cost, lr)
    assert lr == pytest.approx(0.005)
    assert float(ctx.built.state.learning_rate.numpy()) == pytest.approx(0.005)


def test_a_trainable_ic_prior_variance_is_the_originals_sigmoid_of_bounds() -> None:
    from lfads.model.priors import LearnableDiagonalGaussian

    prior = LearnableDiagonalGaussian("T/prior_g0", 2, var_min=0.01, var_init=0.1, var_max=1.0)
    with tf.GradientTape() as tape:
        var = tf.exp(prior().logvar)
        total = tf.reduce_sum(var)
    # distributions.py: var = sigmoid(exp(z))·(max − min) + min, with z starting at log(var_init)
    np.testing.assert_allclose(var.numpy(), _sigmoid(np.exp(np.log(0.1))) * 0.99 + 0.01, rtol=1e-6)
    assert prior.logvar.trainable and np.all(tape.gradient(total, prior.logvar).numpy() > 0)
    prior.logvar.assign(np.full((1, 2), 30.0, np.float32))  # far past any bound: still inside, still finite
    assert 0.01 < float(tf.exp(prior().logvar)[0, 0]) <= 1.0
    fixed = LearnableDiagonalGaussian("T/fixed", 2, var_min=0.1, var_init=0.1, var_max=0.1)
    assert not fixed.logvar.trainable
    np.testing.assert_allclose(tf.exp(fixed().logvar).numpy(), 0.1, rtol=1e-6)


def test_a_causal_controller_still_gets_the_factors_fed_back(make_context: Callable[..., RunContext]) -> None:
    # The original's causal branch drops only the reverse encoder; factors[t-1] are appended after
    # it whenever do_feed_factors_to_controller is set (so its checkpoints have those input rows).
    ctx = make_context("causal", ["--co_dim=1", "--do_causal_controller=true"], trials=20, steps=8, neurons=4)
    weights = {v.name: v.shape for v in ctx.built.model.trainable_variables}
    assert weights["LFADS/con/GenGRU/Gates/x_2_ru/W:0"][0] == 3 + 3  # ci_enc_dim (forward only) + factors_dim


def test_the_correlation_cost_is_half_the_squared_time_sum_of_each_pair_of_inferred_inputs() -> None:
    means = np.random.default_rng(0).normal(size=(3, 6, 3)).astype(np.float32)  # trials x time x co_dim
    expected = [np.mean([0.5 * np.sum(trial[:, i] * trial[:, j]) ** 2 for i in range(3) for j in range(i + 1, 3)])
                for trial in means]
    np.testing.assert_allclose(correlation_per_trial(tf.constant(means)).numpy(), expected, rtol=1e-5)
    assert np.all(correlation_per_trial(tf.constant(means[..., :1])).numpy() == 0)  # one input has no pair


@pytest.mark.parametrize("scale", [0.0, 2.0])
def test_co_mean_corr_scale_adds_the_correlation_cost_to_the_total(make_context: Callable[..., RunContext], scale: float) -> None:
    ctx = make_context(f"corr_{scale:g}", ["--co_dim=2", f"--co_mean_corr_scale={scale}"], trials=20, steps=8, neurons=4)
    steps = CompiledSteps(ctx.built, ctx.costs, 0.9, jit_compile=False)
    ds = ctx.datasets[0]
    result = steps.train(0)(ds.train_data[np.arange(4)], None, np.array([3, 4], np.int64))
    costs = result.costs
    corr = float(costs.corr)
    assert (corr > 0) if scale else (corr == 0)
    expected_total = float(costs.recon) + float(costs.kl_weight) * float(costs.kl) + float(costs.l2_weight) * float(costs.l2) + corr
    assert float(costs.total) == pytest.approx(expected_total, rel=1e-5)

