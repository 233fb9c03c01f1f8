"""The original training loop (reference §4) plus --max_epochs, a clean stop on a non-finite cost,
and a checkpoint at the step where SIGTERM/SIGINT stopped it (lfads/stop_request.py).

Epoch: every dataset's trials permuted and padded to whole batches, all (dataset, batch) pairs
shuffled together. After each epoch: a validation pass, the LVE checkpoint rule, TensorBoard,
fitlog.csv, the console line, and the learning-rate plateau rule on the training cost.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from lfads.augment import jitter_spikes
from lfads.build import RunContext
from lfads.costs import ramp_weight
from lfads.data import Dataset
from lfads.errors import LfadsError
from lfads.files import checkpoints
from lfads.files.fitlog import EpochSummary, append_fitlog, console_line
from lfads.files.tensorboard import TensorBoardLog
from lfads.steps import CompiledSteps
from lfads.stop_request import StopRequest, TrainingStopped, quiet_stdout

SAVE_EVERY_EPOCHS = 10
SEED_HIGH = 2**62


class EpochCosts(NamedTuple):
    total: float
    recon: float
    kl: float
    l2: float
    kl_weight: float
    l2_weight: float
    grad_norm: float
    corr: float
    skipped: int


def epoch_batches(datasets: list[Dataset], split: str, batch_size: int,
                  rng: np.random.Generator) -> list[tuple[int, np.ndarray]]:
    """[(dataset index, trial indices)], the original's randomize_example_idxs_mod_batch_size."""
    pairs: list[tuple[int, np.ndarray]] = []
    for index, ds in enumerate(datasets):
        data, _ = ds.split(split)
        if data is None:
            continue
        count = data.shape[0]
        extra = (-count) % batch_size
        padding = rng.choice(count, size=extra, replace=False) if extra else np.zeros(0, np.int64)
        order = rng.permutation(np.concatenate([np.arange(count), padding]))
        pairs.extend((index, row) for row in order.reshape(-1, batch_size))
    return [pairs[i] for i in rng.permutation(len(pairs))]


def _seed(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, SEED_HIGH, size=2, dtype=np.int64)


def _batch(ds: Dataset, split: str, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    data, ext = ds.split(split)
    assert data is not None
    return data[rows], None if ext is None else ext[rows]


def train_epoch(ctx: RunContext, steps: CompiledSteps, rng: np.random.Generator,
                stop: StopRequest | None = None) -> EpochCosts:
    flags = ctx.flags
    results = []
    for index, rows in epoch_batches(ctx.datasets, "train", flags.batch_size, rng):
        if stop is not None:
            stop.check()
        data, ext = _batch(ctx.datasets[index], "train", rows)
        if flags.output_dist == "poisson" and flags.temporal_spike_jitter_width > 0:
            data = jitter_spikes(data, flags.temporal_spike_jitter_width, rng)
        result = steps.train(index)(data, ext, _seed(rng))
        if flags.debug_print_each_step:
            c = result.costs
            print(f"  step:{int(ctx.built.state.global_step.numpy())} total:{float(c.total):.3f} "
                  f"recon:{float(c.recon):.3f} kl:{float(c.kl):.3f}", flush=True)
        results.append(result)
    totals = np.array([float(r.costs.total) for r in results])
    applied = np.array([bool(r.applied) for r in results])
    last = results[-1]
    return EpochCosts(
        total=float(np.mean(totals)),
        recon=float(np.mean([float(r.costs.recon) for r in results])),
        kl=float(np.mean([float(r.costs.kl) for r in results])),
        l2=float(last.costs.l2), kl_weight=float(last.costs.kl_weight), l2_weight=float(last.costs.l2_weight),
        grad_norm=float(last.grad_norm), corr=float(last.costs.corr), skipped=int(np.sum(~applied)),
    )


def valid_epoch(ctx: RunContext, steps: CompiledSteps, rng: np.random.Generator) -> tuple[float, float, float]:
    totals, recons, kls = [], [], []
    for index, rows in epoch_batches(ctx.datasets, "valid", ctx.flags.batch_size, rng):
        data, ext = _batch(ctx.datasets[index], "valid", rows)
        costs = steps.evaluate(index)(data, ext, _seed(rng))
        totals.append(float(costs.total))
        recons.append(float(costs.recon))
        kls.append(float(costs.kl))
    return float(np.mean(totals)), float(np.mean(recons)), float(np.mean(kls))


def ar_prior_readings(ctx: RunContext) -> tuple[list[float], list[float]]:
    ar1 = ctx.built.model.ar1
    if ar1 is None:
        return [], []
    taus = np.exp(ar1.logatau.numpy()).ravel().tolist()
    pvars = np.exp(ar1.log_process_var().numpy()).ravel().tolist()
    return taus, pvars


class Trainer:
    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        flags = ctx.flags
        restored_step = int(ctx.built.state.global_step.numpy())
        # A continued run draws on from where it restarts: seeded as the first run, it would replay the
        # first run's batch order, dropout and noise. (A fresh run keeps the stream it always had.)
        entropy = [flags.seed, 1] if restored_step == 0 else [flags.seed, 1, restored_step]
        self.rng = np.random.default_rng(None if flags.seed < 0 else entropy)
        self.steps = CompiledSteps(ctx.built, ctx.costs, flags.keep_prob, ctx.jit)
        self.has_valid = any(ds.valid_data is not None for ds in ctx.datasets)
        self.train_costs: list[float] = []
        self.valid_costs: list[float] = []
        # Carried over from the LVE checkpoint a continued run already has (the original started
        # afresh, so after a stop and resume a worse epoch replaced the best model).
        self.lowest_valid = checkpoints.lve_valid_cost(ctx.save_dir)
        self.saved_step = -1
        self.saved_real_lve = False  # this process wrote an LVE checkpoint by the validation rule
        self.stop = StopRequest()
        # At the last step trained (also by an earlier run this one continues), KL and L2 weights had
        # reached 1: a rerun that trains no epoch must not take a real LVE checkpoint for a stand-in.
        self.ramps_done = self._ramps_done_at(restored_step - 1)

    def save(self, lve: bool, valid_cost: float | None = None) -> None:
        ctx, flags = self.ctx, self.ctx.flags
        step = int(ctx.built.state.global_step.numpy())
        if not _all_finite(ctx.built.variables):
            # An update with a finite gradient can still overflow the weights (a huge learning
            # rate): such weights are never saved, so the last checkpoint stays the one to resume.
            raise LfadsError(
                f"{ctx.save_dir}: the weights became non-finite by step {step} (an update overflowed them);"
                " training stopped and no checkpoint of them was written. Lower --learning_rate_init or --max_grad_norm"
            )
        keep = flags.max_ckpt_to_keep_lve if lve else flags.max_ckpt_to_keep
        extra = None if valid_cost is None else {checkpoints.LVE_COST_TENSOR: valid_cost}
        checkpoints.save(ctx.save_dir, ctx.built.variables, flags.checkpoint_name, step, lve, keep, extra)
        if not lve:
            self.saved_step = step

    def run(self) -> None:
        ctx, state = self.ctx, self.ctx.built.state
        board = TensorBoardLog(ctx.save_dir)
        try:
            with self.stop.listening():  # also while saving: a second signal must not cut the save short
                try:
                    self._loop(board)
                except TrainingStopped as stopped:
                    self._save_on_stop(stopped)
                    raise SystemExit(128 + stopped.signum) from None
                except BrokenPipeError:
                    # Signalled as a group, a `| tee` of the run's script died first: the next print
                    # fails before the stop is seen. It is the same stop; the output is gone anyway.
                    if self.stop.signum is None:
                        raise
                    quiet_stdout()
                    self._save_on_stop(TrainingStopped(self.stop.signum))
                    raise SystemExit(128 + self.stop.signum) from None
        finally:
            board.close()
        if int(state.global_step.numpy()) != self.saved_step:
            self.save(lve=False)
        # The chained steps load checkpoint_lve. Without a real one, it holds the final weights: also
        # when an earlier, shorter run left such a stand-in (refreshed here, never left stale).
        missing = checkpoints.read_state(ctx.save_dir / checkpoints.LVE_STATE) is None
        stand_in = checkpoints.lve_is_stand_in(ctx.save_dir)
        if not self.saved_real_lve and (missing or stand_in or not self.ramps_done):
            print("No lowest-validation-error checkpoint was written (the KL/L2 ramps did not finish, or"
                  " there is no validation set); saving the final weights as the LVE checkpoint.", flush=True)
            self.save(lve=True)
            checkpoints.mark_lve_stand_in(ctx.save_dir, int(state.global_step.numpy()))

    def _save_on_stop(self, stopped: TrainingStopped) -> None:
        """The weights of the last step, so that training again goes on from there (the epoch that was
        cut short is trained again in full, and logged once). The LVE checkpoint is left as it is."""
        step = int(self.ctx.built.state.global_step.numpy())
        if step != self.saved_step:
            self.save(lve=False)
        try:
            print(f"Stopped by {stopped}: saved {self.ctx.flags.checkpoint_name}.ckpt-{step}; training this run again"
                  " continues from it.", flush=True)
        except BrokenPipeError:
            quiet_stdout()

    def _loop(self, board: TensorBoardLog) -> None:
        ctx, flags, state = self.ctx, self.ctx.flags, self.ctx.built.state
        lr = float(state.learning_rate.numpy())
        if flags.learning_rate_stop <= 0:
            # MATLAB's `%f` writes a stop below 5e-7 as 0.000000: such a run would go on until killed.
            print(f"Note: --learning_rate_stop={flags.learning_rate_stop:g} never stops training; it stops "
                  + (f"at --max_epochs={flags.max_epochs}." if flags.max_epochs else "only when stopped (no --max_epochs)."),
                  flush=True)
        while True:
            epoch = int(state.epoch.numpy())
            # Checked before each epoch but the first (a fresh run trains one, as the original did): a run
            # restored after it stopped on this rule (requeued, a retried chain) is finished, and must not
            # train on nor replace its LVE model.
            if epoch > 0 and lr < flags.learning_rate_stop:
                print("Stopping optimization based on learning rate criteria.", flush=True)
                return
            if flags.max_epochs and epoch >= flags.max_epochs:
                print(f"Stopping optimization: reached --max_epochs={flags.max_epochs}.", flush=True)
                return
            tr = train_epoch(ctx, self.steps, self.rng, self.stop)
            step = int(state.global_step.numpy())
            if tr.skipped:
                self.save(lve=False)  # the skipped steps changed nothing: these are the last finite weights
                raise LfadsError(
                    f"{ctx.save_dir}: non-finite cost or gradient in epoch {epoch} ({tr.skipped} steps skipped);"
                    f" training stopped, the last finite weights are saved as {ctx.flags.checkpoint_name}.ckpt-{step}."
                    " Lower --learning_rate_init or --max_grad_norm"
                )
            state.epoch.assign(epoch + 1)
            if epoch % SAVE_EVERY_EPOCHS == 0:
                self.save(lve=False)
            valid: tuple[float, float, float] | None = None
            if self.has_valid:
                valid = valid_epoch(ctx, self.steps, self.rng)
                self._maybe_save_lve(tr, valid[0])
            valid_total, valid_recon, valid_kl = valid if valid is not None else (None, None, None)
            summary = EpochSummary(epoch, step, tr.total, tr.recon, tr.kl, valid_total, valid_recon, valid_kl,
                                   tr.l2, tr.kl_weight, tr.l2_weight)
            taus, pvars = ar_prior_readings(ctx)
            # TensorBoard's weights are those of the step the epoch reached, as TF1 logged them (the
            # fitlog's are the last batch's, as there too).
            costs = ctx.costs
            board.epoch(summary._replace(kl_weight=float(ramp_weight(step, costs.kl_start_step, costs.kl_increase_steps)),
                                         l2_weight=float(ramp_weight(step, costs.l2_start_step, costs.l2_increase_steps))),
                        lr, tr.grad_norm, tr.corr, taus, pvars)
            if flags.csv_log:
                append_fitlog(ctx.save_dir / f"{flags.csv_log}.csv", summary)
            print(console_line(summary), flush=True)
            lr = self._manage_learning_rate(tr.total, lr)
            self.stop.check()  # also between epochs (a signal during validation), before any normal end

    def _ramps_done_at(self, step: int) -> bool:
        costs = self.ctx.costs
        return step >= 0 and _ramp_full(step, costs.kl_start_step, costs.kl_increase_steps) and (
            _ramp_full(step, costs.l2_start_step, costs.l2_increase_steps) or self._no_l2())

    def _no_l2(self) -> bool:
        return self.ctx.flags.l2_gen_scale == 0.0 and self.ctx.flags.l2_con_scale == 0.0

    def _maybe_save_lve(self, tr: EpochCosts, valid_total: float) -> None:
        self.valid_costs.append(valid_total)
        ramps_done = tr.kl_weight >= 1.0 and (tr.l2_weight >= 1.0 or self._no_l2())
        self.ramps_done = ramps_done
        # The original let no first epoch count; a continued run has its LVE cost to beat instead.
        eligible = len(self.valid_costs) > 1 or math.isfinite(self.lowest_valid)
        if ramps_done and eligible and valid_total < self.lowest_valid:
            self.lowest_valid = valid_total
            self.save(lve=True, valid_cost=valid_total)
            checkpoints.clear_lve_stand_in(self.ctx.save_dir)
            self.saved_real_lve = True

    def _manage_learning_rate(self, train_total: float, lr: float) -> float:
        flags, state = self.ctx.flags, self.ctx.built.state
        window = flags.learning_rate_n_to_compare
        if len(self.train_costs) > window and train_total > max(self.train_costs[-window:]):
            state.learning_rate.assign(lr * flags.learning_rate_decay_factor)
            lr = float(state.learning_rate.numpy())
            print(f"     Decreasing learning rate to {lr:f}.", flush=True)
            self.train_costs.append(math.inf)  # forces at least `window` epochs at the new rate
        else:
            self.train_costs.append(train_total)
        return lr


def _all_finite(variables: dict[str, Any]) -> bool:
    return all(bool(np.all(np.isfinite(var.numpy()))) for var in variables.values())


def _ramp_full(step: int, start: int, increase: int) -> bool:
    """costs.ramp_weight(step, start, increase) == 1, in plain integers."""
    return step >= start + max(increase, 0)


def train(ctx: RunContext) -> None:
    Trainer(ctx).run()
