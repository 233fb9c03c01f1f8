"""Training state and the original's optimiser: Adam (β1 0.9, β2 0.999, ε 0.1), global-norm clip.

Written out rather than taken from Keras so the slot variables carry TF1 names
(`<var>/Adam`, `<var>/Adam_1`, `LFADS/beta1_power`, `LFADS/beta2_power`: the original built its
optimiser inside run_lfads.py's `LFADS` variable scope) in checkpoints and model_params,
and so a non-finite step can be skipped inside the compiled function.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

BETA1, BETA2, EPSILON = 0.9, 0.999, 0.1
BETA_POWERS = ("LFADS/beta1_power", "LFADS/beta2_power")
# Names this port used before it matched the original's, still read from its older checkpoints.
FORMER_NAMES = {"LFADS/beta1_power": "beta1_power", "LFADS/beta2_power": "beta2_power"}


def base_name(var: tf.Variable) -> str:
    return var.name.split(":")[0]


class TrainState(tf.Module):
    """Saved with the weights: global step, learning rate and (added by this port) the epoch count."""

    def __init__(self, learning_rate: float) -> None:
        super().__init__(name=None)
        self.global_step = tf.Variable(np.int64(0), name="LFADS/global_step", trainable=False)
        self.learning_rate = tf.Variable(np.float32(learning_rate), name="LFADS/learning_rate", trainable=False)
        self.epoch = tf.Variable(np.int64(0), name="LFADS/epoch", trainable=False)


class Adam(tf.Module):
    def __init__(self, variables: list[tf.Variable], max_grad_norm: float) -> None:
        super().__init__(name=None)
        self.targets = list(variables)
        self.max_grad_norm = max_grad_norm
        self.m = [tf.Variable(tf.zeros_like(v), name=f"{base_name(v)}/Adam", trainable=False) for v in variables]
        self.v = [tf.Variable(tf.zeros_like(v), name=f"{base_name(v)}/Adam_1", trainable=False) for v in variables]
        self.beta1_power = tf.Variable(np.float32(BETA1), name=BETA_POWERS[0], trainable=False)
        self.beta2_power = tf.Variable(np.float32(BETA2), name=BETA_POWERS[1], trainable=False)

    def apply(self, grads: list[tf.Tensor], state: TrainState, cost: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Clip, then update unless the cost or gradient is non-finite. -> (global norm, applied)."""
        clipped, norm = tf.clip_by_global_norm(grads, self.max_grad_norm)
        finite = tf.logical_and(tf.math.is_finite(norm), tf.math.is_finite(cost))

        def update() -> tf.Tensor:
            # ResourceApplyAdam is the kernel TF1's AdamOptimizer ran: lr·sqrt(1-β2^t)/(1-β1^t) step.
            lr = tf.cast(state.learning_rate, tf.float32)
            for var, g, m, v in zip(self.targets, clipped, self.m, self.v, strict=True):
                tf.raw_ops.ResourceApplyAdam(var=var.handle, m=m.handle, v=v.handle, beta1_power=self.beta1_power,
                                             beta2_power=self.beta2_power, lr=lr, beta1=BETA1, beta2=BETA2,
                                             epsilon=EPSILON, grad=g)
            with tf.control_dependencies([var.read_value() for var in self.targets]):
                self.beta1_power.assign(self.beta1_power * BETA1)
                self.beta2_power.assign(self.beta2_power * BETA2)
                state.global_step.assign_add(1)
            return tf.constant(True)

        applied = tf.cond(finite, update, lambda: tf.constant(False))
        return norm, applied
