"""The whole LFADS model: read-in -> encoders -> g0 and u -> generator -> factors -> read-out.

Randomness is an input: `Noise` (standard normals for g0 and u) and `Masks` (dropout) are
passed in, so training draws them from a seed inside the compiled step while posterior
sampling draws them per trial and gets the same numbers however trials are batched.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import tensorflow as tf

from lfads.config import ModelConfig
from lfads.data import Dataset
from lfads.model.decoder import GIVEN, MEAN, SAMPLE, Decoder, DecoderInputs
from lfads.model.encoder import Encoded, Encoder
from lfads.model.linear import Identity, Linear
from lfads.model.priors import AR1Prior, DiagGaussian, GaussianFromInput, LearnableDiagonalGaussian
from lfads.model.readin_readout import ReadOut, make_readin
from lfads.model.recons import observation_model

# One stateless algorithm everywhere, so draws depend only on the seeds. Compiled (XLA) and plain
# runs still draw different numbers (TensorFlow's XLA kernels differ): a seed reproduces a run at a
# fixed --jit_compile only.
RNG_ALG = "philox"

__all__ = ["GIVEN", "MEAN", "SAMPLE", "LfadsModel", "Masks", "ModelOutput", "Noise"]


class Noise(NamedTuple):
    g0: tf.Tensor | None  # (B, ic_dim)
    u: tf.Tensor | None  # (B, T, co_dim)


class Masks(NamedTuple):
    """Dropout masks, already divided by keep_prob."""

    data: tf.Tensor  # (B, T, D) on the raw data, before the read-in
    ext: tf.Tensor | None  # (B, T, E)
    ic_enc: tf.Tensor | None  # (B, 2·ic_enc_dim)
    con_in: tf.Tensor | None  # (T, B, controller input dim)
    gen: tf.Tensor  # (T, B, gen_dim) on the generator output


class ModelOutput(NamedTuple):
    ic_prior: DiagGaussian | None  # (1, ic_dim)
    ic_post: DiagGaussian | None  # (B, ic_dim)
    gen_ics: tf.Tensor  # (B, gen_dim)
    gen_states: tf.Tensor  # (B, T, gen_dim)
    factors: tf.Tensor  # (B, T, factors_dim)
    logits: tf.Tensor  # (B, T, D) log-rates, or (B, T, 2D) [means | logvars]
    u: tf.Tensor | None  # (B, T, co_dim) inferred inputs used
    co_post: DiagGaussian | None  # (B, T, co_dim)


def _batch_major(x: tf.Tensor | None) -> tf.Tensor | None:
    return None if x is None else tf.transpose(x, [1, 0, 2])


def _repeat(x: tf.Tensor | None, times: int, axis: int) -> tf.Tensor | None:
    return None if x is None or times == 1 else tf.repeat(x, times, axis=axis)


class LfadsModel(tf.Module):
    def __init__(self, cfg: ModelConfig, datasets: list[Dataset], rng: np.random.Generator) -> None:
        super().__init__(name=None)
        self.cfg = cfg
        self.obs = observation_model(cfg.output_dist)
        self.readins = [
            make_readin(spec, cfg.factors_dim, cfg.do_train_readin, ds.alignment_matrix_cxf, ds.alignment_bias_c, rng)
            for spec, ds in zip(cfg.datasets, datasets, strict=True)
        ]
        self.readouts = [
            ReadOut(spec, cfg.factors_dim, cfg.output_dist, ds.alignment_matrix_cxf, ds.alignment_bias_c, rng)
            for spec, ds in zip(cfg.datasets, datasets, strict=True)
        ]
        self.encoder = Encoder(cfg.in_factors_dim + cfg.encoder_ext_dim, cfg.ic_dim, cfg.ic_enc_dim, cfg.co_dim,
                               cfg.ci_enc_dim, cfg.do_causal_controller, cfg.controller_input_lag,
                               cfg.num_steps_for_gen_ic, cfg.cell_weight_scale, cfg.cell_clip_value, rng)
        self.ic_prior: LearnableDiagonalGaussian | None = None
        self.ic_post: GaussianFromInput | None = None
        if cfg.ic_dim > 0:
            self.ic_prior = LearnableDiagonalGaussian("LFADS/z/prior_g0", cfg.ic_dim, cfg.ic_prior_var_min,
                                                      cfg.ic_prior_var_scale, cfg.ic_prior_var_max)
            self.ic_post = GaussianFromInput("LFADS/z/ic_enc_2_post_g0", 2 * cfg.ic_enc_dim, cfg.ic_dim, rng,
                                             var_min=cfg.ic_post_var_min)
        self.ar1: AR1Prior | None = None
        if cfg.co_dim > 0:
            self.ar1 = AR1Prior("LFADS/z/u_prior_ar1", cfg.co_dim, cfg.prior_ar_atau, cfg.prior_ar_nvar,
                                cfg.do_train_prior_ar_atau, cfg.do_train_prior_ar_nvar)
        self.decoder = Decoder(cfg, rng)
        if cfg.ic_dim > 0:
            self.g0_2_gen_ic: tf.Module = (
                Identity() if cfg.ic_dim == cfg.gen_dim
                else Linear("LFADS/gen/g0_2_gen_ic", cfg.ic_dim, cfg.gen_dim, rng)
            )
        else:
            self.g0_const = tf.Variable(np.zeros((1, cfg.gen_dim), np.float32), name="LFADS/gen/g0")

    # ---- randomness -------------------------------------------------------------------
    def controller_input_dim(self) -> int:
        return self.decoder.ci_dim + self.decoder.feedback_dim

    def make_noise(self, batch: int, seed: tf.Tensor) -> Noise:
        cfg = self.cfg
        seeds = tf.random.experimental.stateless_split(seed, 2, alg=RNG_ALG)
        g0 = tf.random.stateless_normal((batch, cfg.ic_dim), seeds[0], alg=RNG_ALG) if cfg.ic_dim > 0 else None
        u = tf.random.stateless_normal((batch, cfg.num_steps, cfg.co_dim), seeds[1], alg=RNG_ALG) if cfg.co_dim > 0 else None
        return Noise(g0, u)

    def make_masks(self, dataset: int, batch: int, seed: tf.Tensor, keep_prob: float) -> Masks:
        cfg = self.cfg
        seeds = tf.random.experimental.stateless_split(seed, 5, alg=RNG_ALG)

        def mask(shape: tuple[int, ...], index: int) -> tf.Tensor:
            uniform = tf.random.stateless_uniform(shape, seeds[index], alg=RNG_ALG)
            return tf.floor(keep_prob + uniform) / keep_prob

        steps = cfg.num_steps
        return Masks(
            data=mask((batch, steps, cfg.datasets[dataset].data_dim), 0),
            ext=mask((batch, steps, cfg.ext_input_dim), 1) if cfg.ext_input_dim > 0 else None,
            ic_enc=mask((batch, 2 * cfg.ic_enc_dim), 2) if cfg.ic_dim > 0 else None,
            con_in=mask((steps, batch, self.controller_input_dim()), 3) if cfg.co_dim > 0 else None,
            gen=mask((steps, batch, cfg.gen_dim), 4),
        )

    # ---- forward ----------------------------------------------------------------------
    def encode(self, dataset: int, data: tf.Tensor, ext: tf.Tensor | None,
               masks: Masks | None) -> tuple[Encoded, DiagGaussian | None, tf.Tensor | None]:
        """-> (encodings, q(g0|x), dropped-out external inputs time-major)."""
        x = tf.cast(data, tf.float32)
        if masks is not None:
            x = x * masks.data
            if ext is not None and masks.ext is not None:
                ext = ext * masks.ext
        enc_in = self.readins[dataset](x)
        if ext is not None and self.cfg.encoder_ext_dim > 0:
            enc_in = tf.concat([enc_in, ext], axis=-1)
        encoded = self.encoder(tf.transpose(enc_in, [1, 0, 2]))
        ic_post = None
        if self.ic_post is not None and encoded.ic_enc is not None:
            ic_enc = encoded.ic_enc if masks is None or masks.ic_enc is None else encoded.ic_enc * masks.ic_enc
            ic_post = self.ic_post(ic_enc)
        ext_tm = None if ext is None else tf.transpose(ext, [1, 0, 2])
        return encoded, ic_post, ext_tm

    def __call__(self, dataset: int, data: tf.Tensor, ext: tf.Tensor | None, noise: Noise,
                 masks: Masks | None, mode: str, repeats: int = 1) -> ModelOutput:
        """Posterior pass. With repeats=K, each of the B trials is encoded once and decoded K
        times (output batch B·K, trial-major), which is posterior sampling without redundant work."""
        encoded, ic_post, ext_tm = self.encode(dataset, data, ext, masks)
        if repeats > 1:
            encoded = Encoded(_repeat(encoded.ic_enc, repeats, 0), _repeat(encoded.ci_fwd, repeats, 1),
                              _repeat(encoded.ci_rev, repeats, 1))
            if ic_post is not None:
                ic_post = DiagGaussian(tf.repeat(ic_post.mean, repeats, 0), tf.repeat(ic_post.logvar, repeats, 0))
            ext_tm = _repeat(ext_tm, repeats, 1)
        batch = tf.shape(data)[0] * repeats
        g0 = None
        if ic_post is not None:
            if mode == SAMPLE:
                assert noise.g0 is not None
                g0 = ic_post.sample(noise.g0)
            else:
                g0 = ic_post.mean
        ci = None
        if encoded.ci_fwd is not None:
            ci = encoded.ci_fwd if encoded.ci_rev is None else tf.concat([encoded.ci_fwd, encoded.ci_rev], axis=-1)
        inputs = DecoderInputs(
            gen_ics=self._gen_ics(g0, batch),
            ci=ci,
            ext=ext_tm if self.cfg.inject_ext_input_to_gen else None,
            u_eps=_batch_major(noise.u) if mode == SAMPLE else None,
            u_given=None,
            con_mask=None if masks is None else masks.con_in,
            gen_mask=None if masks is None else masks.gen,
        )
        if inputs.ci is None and inputs.ext is None and inputs.gen_mask is None:
            inputs = inputs._replace(gen_mask=tf.ones((self.cfg.num_steps, batch, self.cfg.gen_dim)))
        return self._decode(dataset, inputs, mode, ic_post)

    def sample_prior(self, dataset: int, noise: Noise, batch: int, ext: tf.Tensor | None = None) -> ModelOutput:
        """Generate trials from the priors: g0 ~ p(g0), u ~ AR(1); no data involved."""
        prior = self.ic_prior() if self.ic_prior is not None else None
        g0 = None if prior is None or noise.g0 is None else prior.sample(noise.g0)
        u_given = None
        if self.ar1 is not None and noise.u is not None:
            u_given = self.ar1.sample(tf.transpose(noise.u, [1, 0, 2]))
        steps = self.cfg.num_steps
        injected = None
        if self.cfg.inject_ext_input_to_gen and self.cfg.ext_input_dim > 0:
            # No data here, so no external inputs either: the generator gets zeros in their place.
            injected = tf.zeros((steps, batch, self.cfg.ext_input_dim)) if ext is None else tf.transpose(ext, [1, 0, 2])
        inputs = DecoderInputs(
            gen_ics=self._gen_ics(g0, batch), ci=None, ext=injected,
            u_eps=None, u_given=u_given, con_mask=None, gen_mask=tf.ones((steps, batch, self.cfg.gen_dim)),
        )
        return self._decode(dataset, inputs, GIVEN, None)

    def _gen_ics(self, g0: tf.Tensor | None, batch: tf.Tensor | int) -> tf.Tensor:
        if g0 is not None:
            return self.g0_2_gen_ic(g0)
        return tf.tile(self.g0_const, tf.stack([batch, 1]))

    def _decode(self, dataset: int, inputs: DecoderInputs, mode: str, ic_post: DiagGaussian | None) -> ModelOutput:
        readout = self.readouts[dataset]

        def feedback(factors: tf.Tensor) -> tf.Tensor:
            return self.obs.feedback(readout(factors)) if self.cfg.feedback_rates else factors

        out = self.decoder(inputs, mode, feedback)
        factors = _batch_major(out.factors)
        assert factors is not None
        co_post = None
        if out.co_mean is not None and out.co_logvar is not None:
            co_post = DiagGaussian(_batch_major(out.co_mean), _batch_major(out.co_logvar))
        return ModelOutput(
            ic_prior=self.ic_prior() if self.ic_prior is not None else None,
            ic_post=ic_post,
            gen_ics=inputs.gen_ics,
            gen_states=_batch_major(out.gen_states),
            factors=factors,
            logits=readout(factors),
            u=_batch_major(out.u),
            co_post=co_post,
        )

    # ---- variable groups --------------------------------------------------------------
    def io_variables(self) -> list[tf.Variable]:
        """The original's IO_transformations collection: trainable read-ins and all read-outs."""
        found: list[tf.Variable] = []
        for module in [*self.readins, *self.readouts]:
            found.extend(v for v in module.trainable_variables)
        return found

    def l2_groups(self) -> list[list[tf.Variable]]:
        """[generator recurrent weights, controller recurrent weights] (l2_gen_reg, l2_con_reg)."""
        groups = [self.decoder.gen.recurrent_variables]
        groups.append(self.decoder.con.recurrent_variables if self.decoder.con is not None else [])
        return groups
