"""Controller -> inferred input u_t -> generator -> factors, unrolled with one tf.scan.

Per step t (reference §2): con_t = ConGRU(dropout([ci_fwd[t-lag], ci_rev[t+lag], f_{t-1}]));
q(u_t) = N(W con_t); u_t is a sample, the mean, or given (prior sampling); gen_t =
GenGRU([u_t, ext_t]); f_t = dropout(gen_t) · Wf with column-normalised Wf. Everything that
does not depend on the recurrence (encoder and external-input projections) is computed for
all steps before the scan.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf

from lfads.config import ModelConfig
from lfads.model.linear import Linear
from lfads.model.priors import GaussianFromInput
from lfads.model.recurrent import GenGRU

SAMPLE, MEAN, GIVEN = "sample", "mean", "given"


class DecoderInputs(NamedTuple):
    """Time-major (T, B, ·) tensors; None where the model or mode does not use them."""

    gen_ics: tf.Tensor  # (B, gen_dim)
    ci: tf.Tensor | None  # [ci_fwd, ci_rev] lagged, before dropout
    ext: tf.Tensor | None  # external inputs injected into the generator (already dropped out)
    u_eps: tf.Tensor | None  # standard normals for sampling u (mode SAMPLE)
    u_given: tf.Tensor | None  # inferred inputs to use as they are (mode GIVEN)
    con_mask: tf.Tensor | None  # dropout mask of the controller input
    gen_mask: tf.Tensor | None  # dropout mask of the generator output


class DecoderOutputs(NamedTuple):
    gen_states: tf.Tensor  # (T, B, gen_dim)
    factors: tf.Tensor  # (T, B, factors_dim)
    u: tf.Tensor | None  # (T, B, co_dim)
    co_mean: tf.Tensor | None
    co_logvar: tf.Tensor | None


class Decoder(tf.Module):
    def __init__(self, cfg: ModelConfig, rng: np.random.Generator) -> None:
        super().__init__(name=None)
        self.co_dim, self.gen_dim, self.con_dim = cfg.co_dim, cfg.gen_dim, cfg.con_dim
        self.con: GenGRU | None = None
        self.ci_dim = self.feedback_dim = 0
        if cfg.use_controller:
            self.ci_dim = cfg.ci_enc_dim * (1 if cfg.do_causal_controller else 2)
            if cfg.do_feed_factors_to_controller:
                self.feedback_dim = cfg.datasets[0].data_dim if cfg.feedback_rates else cfg.factors_dim
            self.con = GenGRU("LFADS/con/GenGRU", self.ci_dim + self.feedback_dim, cfg.con_dim,
                              cfg.cell_weight_scale, cfg.cell_weight_scale, cfg.cell_clip_value, rng)
            self.c0 = tf.Variable(np.zeros((1, cfg.con_dim), np.float32), name="LFADS/con/c0")
            self.co_post = GaussianFromInput("LFADS/con/con_to_post_co", cfg.con_dim, cfg.co_dim, rng)
        self.gen = GenGRU("LFADS/gen/GenGRU", cfg.generator_input_dim, cfg.gen_dim,
                          cfg.gen_cell_input_weight_scale, cfg.gen_cell_rec_weight_scale, cfg.cell_clip_value, rng)
        self.fac = Linear("LFADS/gen/gen_2_fac", cfg.gen_dim, cfg.factors_dim, rng, use_bias=False,
                          normalized=True)

    def initial_factors(self, gen_ics: tf.Tensor) -> tf.Tensor:
        """f_{-1}, from the generator's initial state without dropout."""
        return tf.matmul(gen_ics, self.fac.weight())

    def __call__(self, inputs: DecoderInputs, mode: str,
                 feedback_fn: Callable[[tf.Tensor], tf.Tensor]) -> DecoderOutputs:
        run_controller = self.con is not None and mode != GIVEN
        steps = self._num_steps(inputs)
        elems: dict[str, tf.Tensor] = {"t": tf.range(steps)}
        w_fac = self.fac.weight()
        gen_x_all = self._known_generator_input(inputs, run_controller)
        if gen_x_all is not None:
            elems["gen_x"] = tf.tensordot(gen_x_all[0], gen_x_all[1], 1)
        if inputs.gen_mask is not None:
            elems["gen_mask"] = inputs.gen_mask
        batch = tf.shape(inputs.gen_ics)[0]
        carry: dict[str, tf.Tensor] = {"gen": inputs.gen_ics, "f": self.initial_factors(inputs.gen_ics)}
        con_parts = None
        if run_controller:
            con_parts = self._controller_setup(inputs, mode, elems)
            zeros_co = tf.zeros(tf.stack([batch, self.co_dim]))
            carry.update(con=tf.tile(self.c0, tf.stack([batch, 1])), u=zeros_co, mean=zeros_co, logvar=zeros_co)
        gen_step = self.gen.step_fn()
        units = self.gen_dim
        w_gen_u = self.gen.input_weights(slice(0, self.co_dim)) if run_controller else None

        def step(prev: dict[str, tf.Tensor], e: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
            out: dict[str, tf.Tensor] = {}
            gen_x = e.get("gen_x")
            if con_parts is not None and w_gen_u is not None:
                out = self._controller_step(prev, e, con_parts, mode, feedback_fn)
                u_proj = tf.matmul(out["u"], w_gen_u)
                gen_x = u_proj if gen_x is None else gen_x + u_proj
            x_ru, x_c = (0.0, 0.0) if gen_x is None else (gen_x[:, : 2 * units], gen_x[:, 2 * units :])
            gen_h = gen_step(x_ru, x_c, prev["gen"])
            gen_out = gen_h * e["gen_mask"] if "gen_mask" in e else gen_h
            out.update(gen=gen_h, f=tf.matmul(gen_out, w_fac))
            return out

        states = tf.scan(step, elems, initializer=carry)
        if run_controller:
            return DecoderOutputs(states["gen"], states["f"], states["u"], states["mean"], states["logvar"])
        return DecoderOutputs(states["gen"], states["f"], inputs.u_given, None, None)

    def _num_steps(self, inputs: DecoderInputs) -> int:
        for tensor in (inputs.ci, inputs.ext, inputs.u_eps, inputs.u_given, inputs.gen_mask):
            if tensor is not None:
                return int(tensor.shape[0])
        raise ValueError("decoder needs at least one time-major input to know the number of steps")

    def _known_generator_input(self, inputs: DecoderInputs,
                               run_controller: bool) -> tuple[tf.Tensor, tf.Tensor] | None:
        """(x, W) for the generator-input part known before the loop, or None."""
        if self.gen.input_dim == 0:
            return None
        if run_controller:
            if inputs.ext is None:
                return None
            return inputs.ext, self.gen.input_weights(slice(self.co_dim, None))
        parts = [p for p in (inputs.u_given if self.con is not None else None, inputs.ext) if p is not None]
        return tf.concat(parts, axis=-1), self.gen.input_weights()

    def _controller_setup(self, inputs: DecoderInputs, mode: str, elems: dict[str, tf.Tensor]) -> dict[str, Any]:
        assert self.con is not None and inputs.ci is not None
        w_con_x = self.con.input_weights()
        ci = inputs.ci
        if inputs.con_mask is not None:
            ci = ci * inputs.con_mask[..., : self.ci_dim]
            if self.feedback_dim:
                elems["fb_mask"] = inputs.con_mask[..., self.ci_dim :]
        elems["con_x"] = tf.tensordot(ci, w_con_x[: self.ci_dim], 1)
        if mode == SAMPLE:
            if inputs.u_eps is None:
                raise ValueError("sampling the inferred inputs needs u_eps")
            elems["eps"] = inputs.u_eps
        w_post, b_post = self.co_post.fused()
        return {"w_fb": w_con_x[self.ci_dim :], "w_post": w_post, "b_post": b_post, "step": self.con.step_fn()}

    def _controller_step(self, prev: dict[str, tf.Tensor], e: dict[str, tf.Tensor], parts: dict[str, Any],
                         mode: str, feedback_fn: Callable[[tf.Tensor], tf.Tensor]) -> dict[str, tf.Tensor]:
        assert self.con is not None
        x = e["con_x"]
        if self.feedback_dim:
            fb = feedback_fn(prev["f"])
            if "fb_mask" in e:
                fb = fb * e["fb_mask"]
            x = x + tf.matmul(fb, parts["w_fb"])
        units = self.con_dim
        con_h = parts["step"](x[:, : 2 * units], x[:, 2 * units :], prev["con"])
        post = self.co_post.from_fused(tf.matmul(con_h, parts["w_post"]) + parts["b_post"])
        u = post.mean if mode == MEAN else post.sample(e["eps"])
        return {"con": con_h, "u": u, "mean": post.mean, "logvar": post.logvar}
