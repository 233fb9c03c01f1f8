"""Diagonal Gaussians: the IC prior and posterior, the controller posterior, and the AR(1) input prior.

KL terms follow reference §3: analytic for g0, a one-sample estimate for u. The AR(1) KL is
the fixed form (reference §0): t = 0 against the stationary N(0, pvar), then each u_t against
N(phi·u_{t-1}, evar), conditioning on the previous *sample*.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from lfads.model.linear import Linear

LOG_2PI = math.log(2.0 * math.pi)


class DiagGaussian(NamedTuple):
    mean: tf.Tensor
    logvar: tf.Tensor

    def sample(self, eps: tf.Tensor) -> tf.Tensor:
        return self.mean + tf.exp(0.5 * self.logvar) * eps


def log_density(x: tf.Tensor, mean: tf.Tensor, logvar: tf.Tensor) -> tf.Tensor:
    """Elementwise log N(x; mean, exp(logvar))."""
    return -0.5 * (LOG_2PI + logvar + tf.square(x - mean) * tf.exp(-logvar))


def kl_diag_gaussians(q: DiagGaussian, p: DiagGaussian) -> tf.Tensor:
    """KL(q || p) summed over the last axis."""
    ratio = tf.exp(q.logvar - p.logvar)
    term = p.logvar - q.logvar + ratio + tf.square(q.mean - p.mean) * tf.exp(-p.logvar) - 1.0
    return 0.5 * tf.reduce_sum(term, axis=-1)


class LearnableDiagonalGaussian(tf.Module):
    """`LFADS/z/prior_g0`: learned mean (init 0) and, when var_max > var_min, learned variance.

    As the original (distributions.py): the variable `logvar` starts at log(var_init); when
    trainable, the variance is sigmoid(exp(logvar))·(var_max − var_min) + var_min, so it stays
    inside the bounds with a gradient everywhere (and, since exp(·) > 0, in their upper half:
    the original's choice, kept so its checkpoints mean the same here). With var_min == var_max
    (the default) the variable is the constant log-variance itself.
    """

    def __init__(self, scope: str, dim: int, var_min: float, var_init: float, var_max: float) -> None:
        super().__init__(name=None)
        if not (var_init > 0.0 and var_min <= var_init <= var_max):
            raise ValueError(f"IC prior variance: need 0 < init {var_init} and min {var_min} <= init <= max {var_max}")
        self.var_min, self.var_max = var_min, var_max
        self.trainable_var = var_max > var_min
        self.mean = tf.Variable(np.zeros((1, dim), np.float32), name=f"{scope}/mean")
        self.logvar = tf.Variable(np.full((1, dim), math.log(var_init), np.float32), name=f"{scope}/logvar",
                                  trainable=self.trainable_var)

    def __call__(self) -> DiagGaussian:
        logvar = tf.convert_to_tensor(self.logvar)
        if self.trainable_var:
            logvar = tf.math.log(tf.sigmoid(tf.exp(logvar)) * (self.var_max - self.var_min) + self.var_min)
        return DiagGaussian(tf.convert_to_tensor(self.mean), logvar)


class GaussianFromInput(tf.Module):
    """mean and logvar as linear maps of the input (`<scope>/mean`, `<scope>/logvar`)."""

    def __init__(self, scope: str, in_dim: int, dim: int, rng: np.random.Generator, var_min: float = 0.0) -> None:
        super().__init__(name=None)
        self.mean = Linear(f"{scope}/mean", in_dim, dim, rng)
        self.logvar = Linear(f"{scope}/logvar", in_dim, dim, rng)
        self.var_min = var_min

    def fused(self) -> tuple[tf.Tensor, tf.Tensor]:
        """(W, b) of [mean | logvar] for use inside a time loop."""
        assert self.mean.b is not None and self.logvar.b is not None
        return (tf.concat([self.mean.W, self.logvar.W], axis=1),
                tf.concat([self.mean.b[0], self.logvar.b[0]], axis=0))

    def from_fused(self, out: tf.Tensor) -> DiagGaussian:
        mean, logvar = tf.split(out, 2, axis=-1)
        if self.var_min > 0.0:
            logvar = tf.math.log(tf.exp(logvar) + self.var_min)
        return DiagGaussian(mean, logvar)

    def __call__(self, x: tf.Tensor) -> DiagGaussian:
        w, b = self.fused()
        return self.from_fused(tf.matmul(x, w) + b)


class AR1Prior(tf.Module):
    """`LFADS/z/u_prior_ar1`: per-dimension AR(1) process with learnable tau and innovation variance."""

    def __init__(self, scope: str, dim: int, tau: float, noise_var: float, train_tau: bool,
                 train_noise_var: bool) -> None:
        super().__init__(name=None)
        with np.errstate(divide="ignore"):  # tau = 0 (kept fixed): log -inf, so phi = 0, white noise, as the original
            log_tau = np.log(np.float32(tau))
        self.logatau = tf.Variable(np.full((1, dim), log_tau, np.float32), name=f"{scope}/logatau", trainable=train_tau)
        self.logevars = tf.Variable(np.full((1, dim), math.log(noise_var), np.float32),
                                    name=f"{scope}/logevars", trainable=train_noise_var)

    def phi(self) -> tf.Tensor:
        return tf.exp(-1.0 / tf.exp(self.logatau))

    def log_process_var(self) -> tf.Tensor:
        """log(evar / (1 - phi²)), the stationary variance."""
        return self.logevars - tf.math.log(1.0 - tf.square(self.phi()))

    def kl_sampled(self, u: tf.Tensor, q: DiagGaussian) -> tf.Tensor:
        """Σ_t Σ_c [log q(u_t) − log p(u_t | u_{t−1})] for (B, T, C) samples; returns (B,)."""
        phi = self.phi()
        log_q = log_density(u, q.mean, q.logvar)
        first = log_density(u[:, :1], 0.0, self.log_process_var())
        rest = log_density(u[:, 1:], phi * u[:, :-1], self.logevars)
        log_p = tf.concat([first, rest], axis=1)
        return tf.reduce_sum(log_q - log_p, axis=[1, 2])

    def sample(self, eps_tm: tf.Tensor) -> tf.Tensor:
        """(T, B, C) standard normals -> (T, B, C) samples of the process."""
        phi = self.phi()
        noise_std = tf.exp(0.5 * self.logevars)
        u0 = eps_tm[0] * tf.exp(0.5 * self.log_process_var())
        rest = tf.scan(lambda u, e: phi * u + noise_std * e, eps_tm[1:], initializer=u0)
        return tf.concat([u0[tf.newaxis], rest], axis=0)
