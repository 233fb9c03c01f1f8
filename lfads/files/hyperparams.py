"""`hyperparameters-N.txt`: one-line JSON of the hps dict, booleans as "true"/"false" strings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lfads.config import ModelConfig
from lfads.files.atomic import write_text_atomic
from lfads.flags import Flags, as_dict


def hyperparameter_dict(flags: Flags, cfg: ModelConfig) -> dict[str, Any]:
    hps: dict[str, Any] = {}
    for key, value in as_dict(flags).items():
        hps[key] = ("true" if value else "false") if isinstance(value, bool) else value
    hps["num_steps_for_gen_ic"] = cfg.num_steps_for_gen_ic
    hps["dataset_names"] = [spec.name for spec in cfg.datasets]
    hps["dataset_dims"] = {spec.name: spec.data_dim for spec in cfg.datasets}
    hps["num_steps"] = cfg.num_steps
    hps["ndatasets"] = len(cfg.datasets)
    return hps


def write_hyperparameters(save_dir: Path, flags: Flags, cfg: ModelConfig, step: int) -> Path:
    path = save_dir / f"hyperparameters-{step}.txt"
    write_text_atomic(path, json.dumps(hyperparameter_dict(flags, cfg)))
    return path
