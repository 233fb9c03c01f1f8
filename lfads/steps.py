"""Compiled training and evaluation steps, one tf.function per dataset (its read-in/out differ).

Randomness enters as a 2-int seed per call, so a run with --seed is reproducible and the
compiled step stays pure. (XLA draws other numbers from the same seeds than plain TensorFlow:
reproducible means at the same --jit_compile.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import tensorflow as tf

from lfads.build import Built
from lfads.config import CostConfig
from lfads.costs import Costs, batch_costs
from lfads.model.lfads_model import RNG_ALG, SAMPLE


class StepResult(NamedTuple):
    costs: Costs
    grad_norm: tf.Tensor
    applied: tf.Tensor  # False when the cost or gradient was non-finite and the update was skipped


class CompiledSteps:
    def __init__(self, built: Built, cost_cfg: CostConfig, keep_prob: float, jit_compile: bool) -> None:
        self.built, self.cost_cfg, self.keep_prob, self.jit = built, cost_cfg, keep_prob, jit_compile
        self._train: dict[int, Callable[..., StepResult]] = {}
        self._eval: dict[int, Callable[..., Costs]] = {}

    def train(self, dataset: int) -> Callable[..., StepResult]:
        if dataset not in self._train:
            self._train[dataset] = self._make_train(dataset)
        return self._train[dataset]

    def evaluate(self, dataset: int) -> Callable[..., Costs]:
        if dataset not in self._eval:
            self._eval[dataset] = self._make_eval(dataset)
        return self._eval[dataset]

    def _make_train(self, dataset: int) -> Callable[..., StepResult]:
        model, state, optimizer = self.built.model, self.built.state, self.built.optimizer
        assert optimizer is not None
        train_vars, cost_cfg, keep_prob = self.built.train_vars, self.cost_cfg, self.keep_prob

        @tf.function(jit_compile=self.jit, autograph=False)
        def step(data: tf.Tensor, ext: tf.Tensor | None, seed: tf.Tensor) -> StepResult:
            batch = data.shape[0]
            noise_seed, mask_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2, alg=RNG_ALG))
            noise = model.make_noise(batch, noise_seed)
            masks = model.make_masks(dataset, batch, mask_seed, keep_prob) if keep_prob < 1.0 else None
            with tf.GradientTape() as tape:
                out = model(dataset, data, ext, noise, masks, SAMPLE)
                costs, _ = batch_costs(model, out, data, state.global_step, cost_cfg)
            grads = tape.gradient(costs.total, train_vars)
            # Other datasets' read-in/out get zero gradients, as tf.case gave them in the original.
            grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, train_vars, strict=True)]
            norm, applied = optimizer.apply(grads, state, costs.total)
            return StepResult(costs, norm, applied)

        return step

    def _make_eval(self, dataset: int) -> Callable[..., Costs]:
        model, state, cost_cfg = self.built.model, self.built.state, self.cost_cfg

        @tf.function(jit_compile=self.jit, autograph=False)
        def evaluate(data: tf.Tensor, ext: tf.Tensor | None, seed: tf.Tensor) -> Costs:
            # keep_prob = 1, posterior still sampled: the original's validation pass.
            noise = model.make_noise(data.shape[0], seed)
            out = model(dataset, data, ext, noise, None, SAMPLE)
            return batch_costs(model, out, data, state.global_step, cost_cfg)[0]

        return evaluate
