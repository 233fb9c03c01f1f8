"""posterior_sample_and_average, posterior_push_mean and prior_sample (reference §5).

The original filled a batch with K = batch_size copies of one trial and made one session call
per trial. Here each call takes n trials: every trial is encoded once (the encoders are
deterministic at keep_prob 1), its encodings are tiled K times, and the K·n samples are
decoded together and averaged inside the compiled function. The noise of trial i comes from
its own seed (run seed, dataset, split, i), so results do not depend on how trials are
grouped; `average_per_trial` is the original's one-call-per-trial method, kept as the
reference the vectorised path is tested and benchmarked against.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from lfads.build import RunContext
from lfads.costs import correlation_per_trial, l2_cost, ramp_weight, trial_terms
from lfads.files.model_runs import model_runs_name, prior_sample_name, write_model_runs
from lfads.model.lfads_model import MEAN, RNG_ALG, SAMPLE, ModelOutput, Noise

# Largest per-call workload, in float elements of the per-sample time series (bounds memory).
ELEMENT_BUDGET = 2**25
SPLITS = ("train", "valid")
# Per-sample outputs that model_runs stores as per-trial averages.
AVERAGED = ("gen_ics", "gen_states", "factors", "output_dist_params", "controller_outputs",
            "post_g0_mean", "post_g0_logvar", "prior_g0_mean", "prior_g0_logvar")


class SplitKey(NamedTuple):
    dataset: int
    split: int  # 0 train, 1 valid


def trial_seeds(base_seed: int, key: SplitKey, trials: np.ndarray) -> np.ndarray:
    """(n, 2) int64 seeds, one per trial, independent of batching."""
    uid = (np.int64(key.dataset) * 2 + key.split) * np.int64(1 << 32) + trials.astype(np.int64)
    return np.stack([np.full_like(uid, base_seed), uid], axis=1)


def per_sample_elements(ctx: RunContext, dataset: int) -> int:
    cfg = ctx.cfg
    out_dim = cfg.datasets[dataset].data_dim * (2 if cfg.output_dist == "gaussian" else 1)
    return cfg.num_steps * (cfg.gen_dim + cfg.factors_dim + cfg.con_dim * cfg.use_controller
                            + 3 * cfg.co_dim + 3 * out_dim)


def trials_per_call(ctx: RunContext, dataset: int, samples: int, total: int) -> int:
    return int(max(1, min(total, ELEMENT_BUDGET // max(1, samples * per_sample_elements(ctx, dataset)))))


# Splits of one dataset share one call size, so one compiled function serves both (a compile can
# take longer than the sampling itself, above all with XLA); below this many trials a smaller split
# is padded up rather than cutting the larger one into many small calls.
SHARED_CALL_FLOOR = 64


def shared_trials_per_call(ctx: RunContext, dataset: int, samples: int, totals: list[int]) -> int:
    """One call size for all of a dataset's splits: the smallest split's size (at least
    SHARED_CALL_FLOOR), within the memory budget."""
    smallest = min(total for total in totals if total > 0)
    return trials_per_call(ctx, dataset, samples, max(smallest, min(SHARED_CALL_FLOOR, max(totals))))


class Sampler:
    """Compiled posterior passes, cached per (dataset, trials per call, samples, mode)."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self._cache: dict[tuple[object, ...], Callable[..., dict[str, tf.Tensor]]] = {}

    def _noise(self, seeds: tf.Tensor, samples: int) -> Noise:
        cfg = self.ctx.cfg
        spec = (tf.TensorSpec((samples, cfg.ic_dim), tf.float32),
                tf.TensorSpec((samples, cfg.num_steps, cfg.co_dim), tf.float32))

        def one_trial(seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            g0_seed, u_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2, alg=RNG_ALG))
            return (tf.random.stateless_normal(spec[0].shape, g0_seed, alg=RNG_ALG),
                    tf.random.stateless_normal(spec[1].shape, u_seed, alg=RNG_ALG))

        g0, u = tf.map_fn(one_trial, seeds, fn_output_signature=spec)
        n = seeds.shape[0] * samples
        return Noise(tf.reshape(g0, (n, cfg.ic_dim)) if cfg.ic_dim > 0 else None,
                     tf.reshape(u, (n, cfg.num_steps, cfg.co_dim)) if cfg.co_dim > 0 else None)

    def _outputs(self, out: ModelOutput, data: tf.Tensor) -> dict[str, tf.Tensor]:
        """Per-sample values of everything model_runs stores."""
        ctx = self.ctx
        model, state = ctx.built.model, ctx.built.state
        terms = trial_terms(model, out, data, ctx.costs)
        values = {
            "gen_ics": out.gen_ics, "gen_states": out.gen_states, "factors": out.factors,
            "output_dist_params": model.obs.dist_params(out.logits),
            "log_p": terms.log_p, "kl_ic": terms.kl_ic, "kl_co": terms.kl_co,
            "kl_weight": ramp_weight(state.global_step, ctx.costs.kl_start_step, ctx.costs.kl_increase_steps),
            "l2_weight": ramp_weight(state.global_step, ctx.costs.l2_start_step, ctx.costs.l2_increase_steps),
            "l2": l2_cost(model, ctx.costs),
        }
        if out.u is not None:
            values["controller_outputs"] = out.u
        if out.co_post is not None and ctx.costs.co_mean_corr_scale > 0.0:
            values["corr"] = ctx.costs.co_mean_corr_scale * correlation_per_trial(out.co_post.mean)
        if out.ic_post is not None and out.ic_prior is not None:
            values["post_g0_mean"], values["post_g0_logvar"] = out.ic_post.mean, out.ic_post.logvar
            batch = tf.shape(out.ic_post.mean)[0]
            values["prior_g0_mean"] = tf.tile(out.ic_prior.mean, tf.stack([batch, 1]))
            values["prior_g0_logvar"] = tf.tile(out.ic_prior.logvar, tf.stack([batch, 1]))
        return values

    def function(self, dataset: int, trials: int, samples: int, mode: str,
                 encode_each_sample: bool = False) -> Callable[..., dict[str, tf.Tensor]]:
        """f(data (n,T,D), ext, seeds (n,2)) -> per-sample outputs, batch n·samples, trial-major."""
        key = (dataset, trials, samples, mode, encode_each_sample)
        if key not in self._cache:
            model = self.ctx.built.model

            @tf.function(jit_compile=self.ctx.jit, autograph=False)
            def run(data: tf.Tensor, ext: tf.Tensor | None, seeds: tf.Tensor) -> dict[str, tf.Tensor]:
                noise = self._noise(seeds, samples) if mode == SAMPLE else Noise(None, None)
                tiled = tf.repeat(data, samples, axis=0)
                tiled_ext = None if ext is None else tf.repeat(ext, samples, axis=0)
                if encode_each_sample:  # the original: K copies of the trial through the whole model
                    return self._outputs(model(dataset, tiled, tiled_ext, noise, None, mode), tiled)
                values = self._outputs(model(dataset, data, ext, noise, None, mode, repeats=samples), tiled)
                for name in AVERAGED:  # average on the device; only per-trial arrays leave it
                    if name in values:
                        x = values[name]
                        values[name] = tf.reduce_mean(tf.reshape(x, [trials, samples, *x.shape[1:]]), axis=1)
                return values

            self._cache[key] = run
        return self._cache[key]


def summarise(values: dict[str, np.ndarray], trials: int, samples: int, step: int) -> dict[str, np.ndarray]:
    """Average per-sample values over each trial's samples; per-trial costs and NLL bounds."""
    def per_trial(x: np.ndarray) -> np.ndarray:
        return x.reshape(trials, samples, *x.shape[1:])

    averaged = {k: (per_trial(values[k]).mean(axis=1) if values[k].shape[0] != trials else values[k])
                for k in AVERAGED if k in values}
    log_p, kl_ic, kl_co = (per_trial(values[k]) for k in ("log_p", "kl_ic", "kl_co"))
    recon = -log_p.mean(axis=1)
    kl = (kl_ic + kl_co).mean(axis=1)
    corr = per_trial(values["corr"]).mean(axis=1) if "corr" in values else 0.0
    averaged["costs"] = recon + float(values["kl_weight"]) * kl + float(values["l2_weight"]) * float(values["l2"]) + corr
    bound = log_p - kl_ic - kl_co
    vae, iwae = nll_bounds_np(bound)
    averaged["nll_bound_vaes"], averaged["nll_bound_iwaes"] = vae, iwae
    averaged["train_steps"] = np.full(trials, float(step))
    return averaged


def nll_bounds_np(bound: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    peak = bound.max(axis=1, keepdims=True)
    logsumexp = (peak + np.log(np.exp(bound - peak).sum(axis=1, keepdims=True)))[:, 0]
    return -bound.mean(axis=1), -(logsumexp - np.log(bound.shape[1]))


def _numpy(values: dict[str, tf.Tensor]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v.numpy(), dtype=np.float64) for k, v in values.items()}


def average_split(sampler: Sampler, key: SplitKey, data: np.ndarray, ext: np.ndarray | None, samples: int,
                  base_seed: int, mode: str = SAMPLE, per_call: int | None = None) -> dict[str, np.ndarray]:
    """Vectorised: n trials per call (`per_call`, else as many as fit), padded to n so one compiled
    shape serves the whole split."""
    total = data.shape[0]
    step = int(sampler.ctx.built.state.global_step.numpy())
    n = per_call or trials_per_call(sampler.ctx, key.dataset, samples, total)
    fn = sampler.function(key.dataset, n, samples, mode)
    pieces: list[dict[str, np.ndarray]] = []
    for start in range(0, total, n):
        rows = np.arange(start, min(start + n, total))
        padded = np.concatenate([rows, np.full(n - rows.size, rows[-1])])
        values = _numpy(fn(data[padded], None if ext is None else ext[padded],
                           trial_seeds(base_seed, key, padded)))
        chunk = summarise(values, n, samples, step)
        pieces.append({k: v[: rows.size] for k, v in chunk.items()})
    return {k: np.concatenate([p[k] for p in pieces]) for k in pieces[0]}


def average_per_trial(sampler: Sampler, key: SplitKey, data: np.ndarray, ext: np.ndarray | None,
                      samples: int, base_seed: int) -> dict[str, np.ndarray]:
    """The original method: one call per trial, K copies through the whole model, numpy averages."""
    step = int(sampler.ctx.built.state.global_step.numpy())
    fn = sampler.function(key.dataset, 1, samples, SAMPLE, encode_each_sample=True)
    pieces = []
    for trial in range(data.shape[0]):
        rows = np.array([trial])
        values = _numpy(fn(data[rows], None if ext is None else ext[rows], trial_seeds(base_seed, key, rows)))
        pieces.append(summarise(values, 1, samples, step))
    return {k: np.concatenate([p[k] for p in pieces]) for k in pieces[0]}


def write_posterior(ctx: RunContext, push_mean: bool, base_seed: int) -> None:
    flags = ctx.flags
    kind = flags.kind
    sampler = Sampler(ctx)
    samples = 1 if push_mean else flags.batch_size
    for index, ds in enumerate(ctx.datasets):
        counts = {split: min(flags.ps_nexamples_to_process, data.shape[0])
                  for split in SPLITS if (data := ds.split(split)[0]) is not None}
        if not any(count > 0 for count in counts.values()):
            continue
        per_call = shared_trials_per_call(ctx, index, samples, list(counts.values()))
        for split_index, split in enumerate(SPLITS):
            data, ext = ds.split(split)
            count = counts.get(split, 0)
            if data is None or count <= 0:
                continue
            print(f"Writing data for {ds.name} {split} data and kind {kind}.", flush=True)
            runs = average_split(sampler, SplitKey(index, split_index), data[:count],
                                 None if ext is None else ext[:count], samples, base_seed,
                                 MEAN if push_mean else SAMPLE, per_call)
            path = ctx.save_dir / model_runs_name(flags.output_filename_stem, ds.name, split, kind)
            write_model_runs(path, runs)
            print(f"Done: {path}", flush=True)


def write_prior_sample(ctx: RunContext, base_seed: int) -> None:
    """batch_size trials from the priors, read out through the first dataset."""
    flags, model = ctx.flags, ctx.built.model
    batch = flags.batch_size
    print(f"Generating {batch} samples", flush=True)
    seed = tf.constant([base_seed, 7], tf.int64)
    noise = model.make_noise(batch, seed)
    out = model.sample_prior(0, noise, batch)
    runs: dict[str, np.ndarray] = {
        "gen_ics": out.gen_ics.numpy(), "gen_states": out.gen_states.numpy(), "factors": out.factors.numpy(),
        "output_dist_params": model.obs.dist_params(out.logits).numpy(),
        # No data, so only the data-free part of the cost exists.
        "costs": np.array([float(ramp_weight(ctx.built.state.global_step, ctx.costs.l2_start_step,
                                             ctx.costs.l2_increase_steps) * l2_cost(model, ctx.costs))]),
    }
    if out.ic_prior is not None:
        runs["prior_g0_mean"] = np.tile(out.ic_prior.mean.numpy(), (batch, 1))
        runs["prior_g0_logvar"] = np.tile(out.ic_prior.logvar.numpy(), (batch, 1))
    if out.u is not None:
        runs["prior_zs_ar_con"] = out.u.numpy()
    path = ctx.save_dir / prior_sample_name(flags.output_filename_stem)
    write_model_runs(path, runs)
    print(f"Done: {path}", flush=True)
