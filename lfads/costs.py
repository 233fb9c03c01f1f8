"""The LFADS objective (reference §3): summed NLL, ramped KL and L2, optional input-correlation cost.

Reconstruction and KL are summed over time and channels and averaged over the batch; the L2
term is divided by the number of regularised parameters; ramps are linear in training steps.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from lfads.config import CostConfig
from lfads.model.lfads_model import LfadsModel, ModelOutput
from lfads.model.priors import kl_diag_gaussians


class TrialTerms(NamedTuple):
    """Per-trial pieces (B,); KL already multiplied by kl_ic_weight / kl_co_weight."""

    log_p: tf.Tensor
    kl_ic: tf.Tensor
    kl_co: tf.Tensor


class Costs(NamedTuple):
    total: tf.Tensor
    recon: tf.Tensor
    kl: tf.Tensor
    l2: tf.Tensor
    kl_weight: tf.Tensor
    l2_weight: tf.Tensor
    corr: tf.Tensor  # already multiplied by co_mean_corr_scale


def ramp_weight(step: tf.Tensor, start: int, increase: int) -> tf.Tensor:
    """min(max(step - start, 0) / increase, 1); a zero-length ramp is fully on from `start`."""
    elapsed = tf.cast(tf.maximum(step - start, 0), tf.float32)
    if increase <= 0:
        return tf.cast(step >= start, tf.float32)
    return tf.minimum(elapsed / float(increase), 1.0)


def trial_terms(model: LfadsModel, out: ModelOutput, data: tf.Tensor, cfg: CostConfig) -> TrialTerms:
    log_p = tf.reduce_sum(model.obs.log_likelihood(tf.cast(data, tf.float32), out.logits), axis=[1, 2])
    zeros = tf.zeros_like(log_p)
    kl_ic = zeros
    if out.ic_post is not None and out.ic_prior is not None:
        kl_ic = cfg.kl_ic_weight * kl_diag_gaussians(out.ic_post, out.ic_prior)
    kl_co = zeros
    if model.ar1 is not None and out.co_post is not None and out.u is not None:
        kl_co = cfg.kl_co_weight * model.ar1.kl_sampled(out.u, out.co_post)
    return TrialTerms(log_p, kl_ic, kl_co)


def l2_cost(model: LfadsModel, cfg: CostConfig) -> tf.Tensor:
    if cfg.l2_gen_scale <= 0.0 and cfg.l2_con_scale <= 0.0:
        return tf.constant(0.0)
    weighted, numel = [], 0
    for group, scale in zip(model.l2_groups(), (cfg.l2_gen_scale, cfg.l2_con_scale), strict=True):
        for var in group:
            numel += int(var.shape.num_elements())
            weighted.append(0.5 * scale * tf.reduce_sum(tf.square(var)))
    return tf.add_n(weighted) / float(numel)


def correlation_per_trial(co_mean: tf.Tensor) -> tf.Tensor:
    """(B,): mean over dimension pairs i<j of 0.5·(Σ_t m_i m_j)²; the batch mean is the original's cost."""
    dims = int(co_mean.shape[-1])
    if dims < 2:
        return tf.zeros(tf.shape(co_mean)[:1])
    sums = tf.einsum("bti,btj->ijb", co_mean, co_mean)
    pairs = tf.gather_nd(sums, [[i, j] for i in range(dims) for j in range(i + 1, dims)])
    return tf.reduce_mean(0.5 * tf.square(pairs), axis=0)


def batch_costs(model: LfadsModel, out: ModelOutput, data: tf.Tensor, step: tf.Tensor,
                cfg: CostConfig) -> tuple[Costs, TrialTerms]:
    terms = trial_terms(model, out, data, cfg)
    recon = -tf.reduce_mean(terms.log_p)
    kl = tf.reduce_mean(terms.kl_ic + terms.kl_co)
    l2 = l2_cost(model, cfg)
    kl_w = ramp_weight(step, cfg.kl_start_step, cfg.kl_increase_steps)
    l2_w = ramp_weight(step, cfg.l2_start_step, cfg.l2_increase_steps)
    corr = tf.constant(0.0)
    if cfg.co_mean_corr_scale > 0.0 and out.co_post is not None:
        corr = cfg.co_mean_corr_scale * tf.reduce_mean(correlation_per_trial(out.co_post.mean))
    total = recon + kl_w * kl + l2_w * l2 + corr
    return Costs(total, recon, kl, l2, kl_w, l2_w, corr), terms
