"""Bidirectional GRU encoders: IC encoder -> E_ic, CI encoder -> lagged controller inputs."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import tensorflow as tf

from lfads.model.recurrent import EncoderGRU, run_bidirectional


class Encoded(NamedTuple):
    ic_enc: tf.Tensor | None  # (B, 2·ic_enc_dim): [h_fwd at the last IC step, h_rev at step 0]
    ci_fwd: tf.Tensor | None  # (T, B, ci_enc_dim), shifted by the controller lag (zeros before)
    ci_rev: tf.Tensor | None  # (T, B, ci_enc_dim), shifted the other way; None if causal


class BidirectionalEncoder(tf.Module):
    def __init__(self, prefix: str, input_dim: int, units: int, weight_scale: float, clip_value: float,
                 rng: np.random.Generator, with_reverse: bool = True) -> None:
        super().__init__(name=None)
        self.fwd = EncoderGRU(f"LFADS/{prefix}_enc_fwd", input_dim, units, weight_scale, clip_value, rng)
        self.h0_fwd = tf.Variable(np.zeros((1, units), np.float32), name=f"LFADS/{prefix}_enc_fwd/{prefix}_enc_t0_fwd")
        self.rev: EncoderGRU | None = None
        if with_reverse:
            self.rev = EncoderGRU(f"LFADS/{prefix}_enc_rev", input_dim, units, weight_scale, clip_value, rng)
            self.h0_rev = tf.Variable(np.zeros((1, units), np.float32),
                                      name=f"LFADS/{prefix}_enc_rev/{prefix}_enc_t0_rev")

    def _initial(self, h0: tf.Variable, batch: tf.Tensor) -> tf.Tensor:
        return tf.tile(h0, tf.stack([batch, 1]))

    def __call__(self, inputs_tm: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor | None]:
        batch = tf.shape(inputs_tm)[1]
        if self.rev is None:
            proj = self.fwd.project_inputs(inputs_tm)
            step = self.fwd.step_fn()
            outs_f = tf.scan(lambda h, x: step(x, h), proj, initializer=self._initial(self.h0_fwd, batch))
            return outs_f, None
        return run_bidirectional(self.fwd, self.rev, inputs_tm, self._initial(self.h0_fwd, batch),
                                 self._initial(self.h0_rev, batch))


def shift_time(x_tm: tf.Tensor, lag: int) -> tf.Tensor:
    """out[t] = x[t - lag] (lag > 0) or x[t + |lag|] (lag < 0), zeros where out of range."""
    if lag == 0:
        return x_tm
    steps = x_tm.shape[0]
    pad = tf.zeros_like(x_tm[: min(abs(lag), steps)])
    if abs(lag) >= steps:
        return tf.zeros_like(x_tm)
    if lag > 0:
        return tf.concat([pad, x_tm[: steps - lag]], axis=0)
    return tf.concat([x_tm[-lag:], pad], axis=0)


class Encoder(tf.Module):
    """Both encoders over the same dropped-out, read-in data (the original shares one mask)."""

    def __init__(self, input_dim: int, ic_dim: int, ic_enc_dim: int, co_dim: int, ci_enc_dim: int,
                 causal: bool, lag: int, num_steps_for_gen_ic: int, weight_scale: float, clip_value: float,
                 rng: np.random.Generator) -> None:
        super().__init__(name=None)
        self.lag, self.num_steps_for_gen_ic = lag, num_steps_for_gen_ic
        self.ic: BidirectionalEncoder | None = None
        self.ci: BidirectionalEncoder | None = None
        if ic_dim > 0:
            self.ic = BidirectionalEncoder("ic", input_dim, ic_enc_dim, weight_scale, clip_value, rng)
        if co_dim > 0:
            self.ci = BidirectionalEncoder("ci", input_dim, ci_enc_dim, weight_scale, clip_value, rng,
                                           with_reverse=not causal)

    def __call__(self, inputs_tm: tf.Tensor) -> Encoded:
        ic_enc = ci_fwd = ci_rev = None
        if self.ic is not None:
            outs_f, outs_r = self.ic(inputs_tm[: self.num_steps_for_gen_ic])
            assert outs_r is not None
            ic_enc = tf.concat([outs_f[-1], outs_r[0]], axis=1)
        if self.ci is not None:
            outs_f, outs_r = self.ci(inputs_tm)
            ci_fwd = shift_time(outs_f, self.lag)
            ci_rev = shift_time(outs_r, -self.lag) if outs_r is not None else None
        return Encoded(ic_enc=ic_enc, ci_fwd=ci_fwd, ci_rev=ci_rev)
