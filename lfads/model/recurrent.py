"""The two GRU flavours of the original, written so input projections leave the time loop.

`EncoderGRU` (scope `GRU`): one weight over [x, h] for the gates and one over [x, r∘h] for the
candidate, gate weights scaled by `weight_scale`. `GenGRU` (generator and controller):
separate input (no bias) and recurrent (with bias, L2-regularised) weights. Both add 1.0 to
the update gate ("forget bias") and clip the state. Since x W is linear, the x part of every
matmul is computed for all time steps at once; only h-dependent work stays in the scan.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

from lfads.model.linear import Linear

FORGET_BIAS = 1.0
StepFn = Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tf.Tensor]


def gru_update(x_ru: tf.Tensor, x_c: tf.Tensor, h: tf.Tensor, w_h_ru: tf.Tensor, b_ru: tf.Tensor,
               w_rh_c: tf.Tensor, b_c: tf.Tensor, clip_value: float) -> tf.Tensor:
    """One reset-before-matmul GRU step given the input parts of the gate/candidate pre-activations."""
    ru = x_ru + tf.matmul(h, w_h_ru) + b_ru
    r, u = tf.split(ru, 2, axis=-1)
    r = tf.sigmoid(r)
    u = tf.sigmoid(u + FORGET_BIAS)
    c = tf.tanh(x_c + tf.matmul(r * h, w_rh_c) + b_c)
    new_h = u * h + (1.0 - u) * c
    return tf.clip_by_value(new_h, -clip_value, clip_value)


class EncoderGRU(tf.Module):
    def __init__(self, scope: str, input_dim: int, units: int, weight_scale: float, clip_value: float,
                 rng: np.random.Generator) -> None:
        super().__init__(name=None)
        self.input_dim, self.units, self.clip_value = input_dim, units, clip_value
        self.gates = Linear(f"{scope}/GRU/Gates/xh_2_ru", input_dim + units, 2 * units, rng, alpha=weight_scale)
        self.candidate = Linear(f"{scope}/GRU/Candidate/xrh_2_c", input_dim + units, units, rng, alpha=1.0)

    def project_inputs(self, x: tf.Tensor) -> tf.Tensor:
        """(..., input_dim) -> (..., 3·units): x parts of [gates | candidate]."""
        w_x = tf.concat([self.gates.W[: self.input_dim], self.candidate.W[: self.input_dim]], axis=1)
        return tf.tensordot(x, w_x, 1)

    def step_fn(self) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
        n, units = self.input_dim, self.units
        w_h_ru, b_ru = self.gates.W[n:], self.gates.bias_row()
        w_rh_c, b_c = self.candidate.W[n:], self.candidate.bias_row()

        def step(x_proj: tf.Tensor, h: tf.Tensor) -> tf.Tensor:
            return gru_update(x_proj[:, : 2 * units], x_proj[:, 2 * units :], h, w_h_ru, b_ru, w_rh_c, b_c,
                              self.clip_value)

        return step


class GenGRU(tf.Module):
    def __init__(self, scope: str, input_dim: int, units: int, input_weight_scale: float,
                 rec_weight_scale: float, clip_value: float, rng: np.random.Generator) -> None:
        super().__init__(name=None)
        self.input_dim, self.units, self.clip_value = input_dim, units, clip_value
        self.x_2_ru: Linear | None = None
        self.x_2_c: Linear | None = None
        if input_dim > 0:
            self.x_2_ru = Linear(f"{scope}/Gates/x_2_ru", input_dim, 2 * units, rng,
                                 alpha=input_weight_scale, use_bias=False)
        self.h_2_ru = Linear(f"{scope}/Gates/h_2_ru", units, 2 * units, rng, alpha=rec_weight_scale)
        if input_dim > 0:
            self.x_2_c = Linear(f"{scope}/Candidate/x_2_c", input_dim, units, rng,
                                alpha=input_weight_scale, use_bias=False)
        self.rh_2_c = Linear(f"{scope}/Candidate/rh_2_c", units, units, rng, alpha=rec_weight_scale)

    @property
    def recurrent_variables(self) -> list[tf.Variable]:
        """What the original put in the l2_gen_reg / l2_con_reg collections."""
        return [self.h_2_ru.W, self.h_2_ru.b, self.rh_2_c.W, self.rh_2_c.b]

    def input_weights(self, rows: slice | None = None) -> tf.Tensor:
        """[x_2_ru | x_2_c] as one (input_dim, 3·units) matrix, optionally a row range of it."""
        if self.x_2_ru is None or self.x_2_c is None:
            raise ValueError("this GenGRU has no inputs")
        w = tf.concat([self.x_2_ru.W, self.x_2_c.W], axis=1)
        return w if rows is None else w[rows]

    def step_fn(self) -> StepFn:
        """step(x_ru, x_c, h); pass zeros-free tensors (scalars 0.0 work) when there is no input."""
        w_h_ru, b_ru = self.h_2_ru.W, self.h_2_ru.bias_row()
        w_rh_c, b_c = self.rh_2_c.W, self.rh_2_c.bias_row()

        def step(x_ru: tf.Tensor, x_c: tf.Tensor, h: tf.Tensor) -> tf.Tensor:
            return gru_update(x_ru, x_c, h, w_h_ru, b_ru, w_rh_c, b_c, self.clip_value)

        return step


def run_bidirectional(fwd: EncoderGRU, rev: EncoderGRU, inputs_tm: tf.Tensor, h0_fwd: tf.Tensor,
                      h0_rev: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Both directions in one scan over time-major inputs; outputs (T, B, H) aligned to input time."""
    proj_f = fwd.project_inputs(inputs_tm)
    proj_r = tf.reverse(rev.project_inputs(inputs_tm), axis=[0])
    step_f, step_r = fwd.step_fn(), rev.step_fn()

    def step(carry: tuple[tf.Tensor, tf.Tensor], elems: tuple[tf.Tensor, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        return step_f(elems[0], carry[0]), step_r(elems[1], carry[1])

    outs_f, outs_r = tf.scan(step, (proj_f, proj_r), initializer=(h0_fwd, h0_rev))
    return outs_f, tf.reverse(outs_r, axis=[0])
