"""Build the model, its training state and optimiser, and the name -> variable map checkpoints use."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from lfads.config import CostConfig, ModelConfig
from lfads.data import Dataset
from lfads.errors import LfadsError
from lfads.flags import Flags
from lfads.model.lfads_model import LfadsModel
from lfads.optimizer import Adam, TrainState, base_name


class Built(NamedTuple):
    model: LfadsModel
    state: TrainState
    optimizer: Adam | None
    train_vars: list[tf.Variable]
    variables: dict[str, tf.Variable]  # every saved variable, by TF1-style name
    required: set[str]  # names a checkpoint must contain for these flags


class RunContext(NamedTuple):
    flags: Flags
    datasets: list[Dataset]
    cfg: ModelConfig
    costs: CostConfig
    built: Built
    save_dir: Path
    device: str  # tf.device string everything runs under
    jit: bool  # XLA-compile the steps


def trainable_selection(flags: Flags, model: LfadsModel) -> list[tf.Variable]:
    if flags.do_train_io_only:
        chosen = model.io_variables()
        what = "--do_train_io_only"
    elif flags.do_train_encoder_only:
        prefixes = ("LFADS/ic_enc_", "LFADS/z/ic_enc_")
        chosen = [v for v in model.trainable_variables if base_name(v).startswith(prefixes)]
        what = "--do_train_encoder_only"
    else:
        chosen = list(model.trainable_variables)
        what = "these flags"
    if not chosen:
        raise LfadsError(f"{what} leave no variable to train; drop the flag or change the model dims")
    return chosen


def build(flags: Flags, datasets: list[Dataset], cfg: ModelConfig, with_optimizer: bool) -> Built:
    rng = np.random.default_rng(flags.seed if flags.seed >= 0 else None)
    model = LfadsModel(cfg, datasets, rng)
    state = TrainState(flags.learning_rate_init)
    train_vars = trainable_selection(flags, model)
    optimizer = Adam(train_vars, flags.max_grad_norm) if with_optimizer else None
    variables: dict[str, tf.Variable] = {}
    modules: list[tf.Module] = [model, state] + ([optimizer] if optimizer is not None else [])
    for module in modules:
        for var in module.variables:
            name = base_name(var)
            if name in variables and variables[name] is not var:
                raise RuntimeError(f"two variables named {name}")  # a bug, not a user error
            variables[name] = var
    required = {base_name(v) for v in model.variables} | {base_name(state.global_step)}
    return Built(model, state, optimizer, train_vars, variables, required)
