"""Affine maps with the original initialisation and variable names (`<scope>/W`, `<scope>/b`)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def scaled_normal(rng: np.random.Generator, in_dim: int, out_dim: int, alpha: float) -> np.ndarray:
    """W ~ N(0, (alpha / sqrt(fan_in))^2), as utils.init_linear."""
    return rng.normal(0.0, alpha / np.sqrt(float(in_dim)), size=(in_dim, out_dim)).astype(np.float32)


class Linear(tf.Module):
    """y = x W + b. `normalized` divides each column of W by its L2 norm (the factor read-out)."""

    def __init__(
        self,
        scope: str,
        in_dim: int,
        out_dim: int,
        rng: np.random.Generator,
        *,
        alpha: float = 1.0,
        use_bias: bool = True,
        normalized: bool = False,
        trainable: bool = True,
        w_init: np.ndarray | None = None,
        b_init: np.ndarray | None = None,
    ) -> None:
        super().__init__(name=None)
        weights = scaled_normal(rng, in_dim, out_dim, alpha) if w_init is None else w_init.astype(np.float32)
        self.W = tf.Variable(weights, name=f"{scope}/W", trainable=trainable)
        self.b: tf.Variable | None = None
        if use_bias:
            bias = np.zeros((1, out_dim), np.float32) if b_init is None else np.reshape(b_init, (1, out_dim))
            self.b = tf.Variable(bias.astype(np.float32), name=f"{scope}/b", trainable=trainable)
        self.normalized = normalized

    def bias_row(self) -> tf.Tensor:
        """b as a vector (the maps that have one: every GRU gate and candidate)."""
        if self.b is None:
            raise ValueError(f"{self.W.name} has no bias")
        return self.b[0]

    def weight(self) -> tf.Tensor:
        if self.normalized:
            return tf.nn.l2_normalize(self.W, axis=0)
        return tf.convert_to_tensor(self.W)

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        y = tf.matmul(x, self.weight()) if x.shape.rank == 2 else tf.tensordot(x, self.weight(), 1)
        if self.b is not None:
            y = y + self.b[0]
        return y


class Identity(tf.Module):
    """The original's `identity_if_possible`: a constant identity map with no variables."""

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        return x
