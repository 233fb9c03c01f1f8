"""Observation models: log-likelihood summed per element, output parameters, controller feedback."""

from __future__ import annotations

import math

import tensorflow as tf

LOG_2PI = math.log(2.0 * math.pi)


class Poisson:
    """Read-out gives log-rates in counts per bin; the full log-likelihood includes lgamma(k+1)."""

    def log_likelihood(self, data: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        return data * logits - tf.exp(logits) - tf.math.lgamma(data + 1.0)

    def dist_params(self, logits: tf.Tensor) -> tf.Tensor:
        return tf.exp(logits)

    def feedback(self, logits: tf.Tensor) -> tf.Tensor:
        return tf.exp(logits)


class Gaussian:
    """Read-out gives [means | logvars]; the output parameters are [means | variances]."""

    def log_likelihood(self, data: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        mean, logvar = tf.split(logits, 2, axis=-1)
        return -0.5 * (LOG_2PI + logvar + tf.square(data - mean) * tf.exp(-logvar))

    def dist_params(self, logits: tf.Tensor) -> tf.Tensor:
        mean, logvar = tf.split(logits, 2, axis=-1)
        return tf.concat([mean, tf.exp(logvar)], axis=-1)

    def feedback(self, logits: tf.Tensor) -> tf.Tensor:
        return tf.split(logits, 2, axis=-1)[0]


def observation_model(output_dist: str) -> Poisson | Gaussian:
    return Poisson() if output_dist == "poisson" else Gaussian()
