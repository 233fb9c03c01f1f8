"""One invocation of `lfads --kind=...`: data -> model -> restore -> the kind's work."""

from __future__ import annotations

import contextlib
import secrets
from pathlib import Path

import tensorflow as tf

from lfads import posterior
from lfads.build import RunContext, build
from lfads.config import cost_config, model_config
from lfads.data import check_alignment, check_trial_counts, load_datasets
from lfads.device import configure_device
from lfads.errors import LfadsError
from lfads.files import checkpoints
from lfads.files.folder_lock import hold_output_folder
from lfads.files.hyperparams import write_hyperparameters
from lfads.files.model_runs import model_params_name, write_h5
from lfads.flags import Flags
from lfads.train import train

TRAINING_KINDS = ("train", "write_model_params")  # kinds whose graph holds the optimiser


def use_xla(flags: Flags, device: str) -> bool:
    """`auto` compiles on a GPU only. Measured on 2 CPU cores (bench/lfads_lorenz.py): XLA makes a
    training step ~1.1x and posterior sampling ~1.4x faster, but compiling a model with a controller
    (a scan and its gradient) takes 10-20 s, so on CPU it pays off only for long runs (--jit_compile=true).
    On a GPU it fuses the many small kernels of every time step, where the plain graph is launch-bound."""
    if flags.jit_compile == "auto":
        return device.upper().startswith("/GPU")
    return flags.jit_compile == "true"


def _restore_newest_readable(ctx: RunContext, latest: Path) -> tuple[Path, list[str]]:
    """Restore `latest`, or, when it cannot be read (a crash tore it: a resumed run rewriting a
    checkpoint of the same step), the newest older one the state file lists, saying so."""
    flags, built = ctx.flags, ctx.built
    older = [prefix for prefix in checkpoints.listed_checkpoints(ctx.save_dir, flags.checkpoint_pb_load_name)
             if prefix != latest and Path(f"{prefix}{checkpoints.INDEX_SUFFIX}").exists()]
    first_error: checkpoints.UnreadableCheckpoint | None = None
    for prefix in [latest, *older]:
        print(f"Restoring parameters from {prefix}", flush=True)
        try:
            return prefix, checkpoints.restore(prefix, built.variables, built.required)
        except checkpoints.UnreadableCheckpoint as error:
            first_error = first_error or error
            print(f"Cannot read {prefix} ({error}); trying the previous checkpoint it lists.", flush=True)
    assert first_error is not None
    raise first_error


def restore_or_init(ctx: RunContext) -> int:
    """Restore from the state file --checkpoint_pb_load_name names; -> the step for hyperparameters-N."""
    flags, built = ctx.flags, ctx.built
    state_path = ctx.save_dir / flags.checkpoint_pb_load_name
    prefix = checkpoints.latest_checkpoint(ctx.save_dir, flags.checkpoint_pb_load_name)
    if prefix is None:
        if flags.kind != "train":
            known = [name for name in (checkpoints.PERIODIC_STATE, checkpoints.LVE_STATE) if (ctx.save_dir / name).exists()]
            typo = flags.checkpoint_pb_load_name not in (checkpoints.PERIODIC_STATE, checkpoints.LVE_STATE)
            if known and typo:  # not an untrained run: a name that no step of LFADS writes
                raise LfadsError(f"{state_path} not found: --checkpoint_pb_load_name={flags.checkpoint_pb_load_name}"
                                 f" names no checkpoint list here; use one of {', '.join(known)}")
            raise LfadsError(
                f"{state_path} not found: there is no trained model to load for --kind={flags.kind};"
                " run --kind=train first (it writes checkpoint and checkpoint_lve)"
            )
        print("Created model with fresh parameters.", flush=True)
        return 0
    prefix, missing = _restore_newest_readable(ctx, prefix)
    if missing and flags.kind == "train":
        print(f"Not in the checkpoint, starting fresh: {', '.join(sorted(missing))}", flush=True)
    if flags.kind == "train" and flags.do_reset_learning_rate:
        built.state.learning_rate.assign(flags.learning_rate_init)
    return checkpoints.step_of(prefix.name)


def write_model_params(ctx: RunContext) -> Path:
    path = ctx.save_dir / model_params_name(ctx.flags.output_filename_stem)
    arrays = {f"{name}:0": var.numpy() for name, var in sorted(ctx.built.variables.items())}
    write_h5(path, arrays, filters=None)
    print(f"Wrote {len(arrays)} variables to {path}", flush=True)
    return path


def prepare(flags: Flags, hold: contextlib.ExitStack | None = None) -> RunContext:
    """Load and check the data, pick the device, build the model and restore it; no kind-specific work.

    With `hold`, the output folder's lock is taken before anything is read from it and stays held
    until `hold` closes (see lfads.files.folder_lock)."""
    save_dir = Path(flags.lfads_save_dir)
    datasets = load_datasets(Path(flags.data_dir), flags.data_filename_stem, flags.output_dist,
                             flags.ext_input_dim, flags.debug_reduce_timesteps_to)
    check_alignment(datasets, flags.factors_dim)
    if flags.kind == "train":
        check_trial_counts(datasets, flags.batch_size)
    cfg = model_config(flags, datasets)
    try:
        save_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise LfadsError(f"{save_dir}: cannot create the output folder ({err}); check --lfads_save_dir") from None
    if hold is not None:
        hold.enter_context(hold_output_folder(save_dir))
    device = configure_device(flags.device, flags.allow_gpu_growth)
    with tf.device(device):
        built = build(flags, datasets, cfg, with_optimizer=flags.kind in TRAINING_KINDS)
        ctx = RunContext(flags, datasets, cfg, cost_config(flags), built, save_dir, device, use_xla(flags, device))
        step = restore_or_init(ctx)
    write_hyperparameters(save_dir, flags, cfg, step)
    return ctx


def run(flags: Flags) -> None:
    # Every kind writes into lfads_save_dir (hyperparameters-N.txt at least) and all but training read
    # a checkpoint that a trainer there may be replacing or pruning: one lfads per folder, whatever kind.
    with contextlib.ExitStack() as hold:
        ctx = prepare(flags, hold)
        _run_kind(ctx)


def _run_kind(ctx: RunContext) -> None:
    flags = ctx.flags
    base_seed = flags.seed if flags.seed >= 0 else secrets.randbits(31)
    with tf.device(ctx.device):
        if flags.kind == "train":
            train(ctx)
        elif flags.kind == "posterior_sample_and_average":
            posterior.write_posterior(ctx, push_mean=False, base_seed=base_seed)
        elif flags.kind == "posterior_push_mean":
            posterior.write_posterior(ctx, push_mean=True, base_seed=base_seed)
        elif flags.kind == "prior_sample":
            posterior.write_prior_sample(ctx, base_seed)
        else:
            write_model_params(ctx)
