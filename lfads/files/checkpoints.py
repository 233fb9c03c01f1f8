"""Name-based TF checkpoints (`lfads_vae.ckpt-N`, `lfads_vae_lve.ckpt-N`) and their state files.

Tensors are saved under the variables' TF1-style names (`LFADS/gen/GenGRU/...`), in the V2
bundle format (`.index` + `.data-00000-of-00001`), so `tf.train.load_checkpoint` reads them by
name. The state files `checkpoint` / `checkpoint_lve` are the CheckpointState text proto. A
save writes the bundle under a temporary prefix, renames it into place, and only then
rewrites the state file, so a crash never leaves the state pointing at half a checkpoint.
No `.meta` graph file is written: TensorFlow 2 has no graph to store.
"""

from __future__ import annotations

import math
import os
import re
import uuid
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf

from lfads.errors import LfadsError
from lfads.files.atomic import fsync_dir, fsync_path, write_text_atomic
from lfads.optimizer import BETA_POWERS, FORMER_NAMES

PERIODIC_STATE = "checkpoint"
LVE_STATE = "checkpoint_lve"
# Present while checkpoint_lve names final weights saved in place of a real lowest-validation-error
# checkpoint (none was written): a later, longer run then refreshes it rather than taking it for real.
LVE_STAND_IN = "checkpoint_lve.final_weights"
# Stored in each lowest-validation-error bundle (outside the LFADS/ scope, so restoring ignores it):
# the validation cost it was chosen by, so a continued run never replaces it with a worse model.
LVE_COST_TENSOR = "lve_valid_cost"
DATA_SUFFIX = ".data-00000-of-00001"
INDEX_SUFFIX = ".index"
_LINE = re.compile(r'^\s*(model_checkpoint_path|all_model_checkpoint_paths)\s*:\s*"(.*)"\s*$')


class UnreadableCheckpoint(LfadsError):
    """A checkpoint bundle that cannot be read (torn by a crash, truncated, corrupt)."""


class CheckpointState(NamedTuple):
    latest: str  # as written in the state file (relative to its folder, or absolute)
    all_paths: list[str]


def prefix_name(checkpoint_name: str, lve: bool, step: int) -> str:
    return f"{checkpoint_name}{'_lve' if lve else ''}.ckpt-{step}"


def step_of(prefix: str) -> int:
    """The global step in a checkpoint path (`-[0-9]+$`), 0 if none, as the original parses it."""
    match = re.search(r"-([0-9]+)$", prefix)
    return int(match.group(1)) if match else 0


def read_state(path: Path) -> CheckpointState | None:
    if not path.exists():
        return None
    latest, all_paths = "", []
    try:
        text = path.read_text()
    except (UnicodeDecodeError, OSError) as error:
        raise LfadsError(f"{path}: cannot read the checkpoint list ({type(error).__name__}); delete the file to start"
                         " over, or restore it") from None
    for line in text.splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        if match.group(1) == "model_checkpoint_path":
            latest = match.group(2)
        else:
            all_paths.append(match.group(2))
    if not latest:
        raise LfadsError(f"{path}: no model_checkpoint_path line; delete the file to start over")
    return CheckpointState(latest, all_paths or [latest])


def write_state(path: Path, state: CheckpointState) -> None:
    lines = [f'model_checkpoint_path: "{state.latest}"']
    lines += [f'all_model_checkpoint_paths: "{p}"' for p in state.all_paths]
    write_text_atomic(path, "\n".join(lines) + "\n")


def resolve(save_dir: Path, prefix: str) -> Path:
    path = Path(prefix)
    if not path.is_absolute():
        return save_dir / path
    # TF1 wrote absolute paths: in a folder copied or moved since, the bundle beside the list is its own.
    local = save_dir / path.name
    if path.parent != save_dir and Path(str(local) + INDEX_SUFFIX).exists():
        return local
    return path


def _is_in(folder: Path, bundle: Path) -> bool:
    try:
        return os.path.samefile(bundle.parent, folder)
    except OSError:
        return False


def latest_checkpoint(save_dir: Path, state_name: str) -> Path | None:
    """Prefix the state file points at, or None if there is no state file; error if it is dangling."""
    state_path = save_dir / state_name
    state = read_state(state_path)
    if state is None:
        return None
    prefix = resolve(save_dir, state.latest)
    if not Path(str(prefix) + INDEX_SUFFIX).exists():
        raise LfadsError(
            f"{state_path} points at {prefix}, whose {INDEX_SUFFIX} file is missing;"
            f" restore the checkpoint files or delete {state_path}"
        )
    return prefix


def listed_checkpoints(save_dir: Path, state_name: str) -> list[Path]:
    """Every checkpoint the state file lists, newest first (its latest, then the others backwards)."""
    state = read_state(save_dir / state_name)
    if state is None:
        return []
    names = [state.latest, *reversed(state.all_paths)]
    return [resolve(save_dir, name) for index, name in enumerate(names) if name not in names[:index]]


def _remove_bundle(prefix: Path) -> None:
    for suffix in (INDEX_SUFFIX, DATA_SUFFIX, ".meta"):
        Path(str(prefix) + suffix).unlink(missing_ok=True)


def save(save_dir: Path, variables: dict[str, tf.Variable], checkpoint_name: str, step: int, lve: bool,
         max_to_keep: int, extra: dict[str, float] | None = None) -> Path:
    """Write a checkpoint and record it in `checkpoint` / `checkpoint_lve`; prune beyond max_to_keep.
    `extra` holds scalars stored beside the variables (never restored into them)."""
    save_dir.mkdir(parents=True, exist_ok=True)
    name = prefix_name(checkpoint_name, lve, step)
    final = save_dir / name
    tmp = save_dir / f".tmp-{uuid.uuid4().hex}.ckpt"
    tensors = {n: v.read_value() for n, v in variables.items()}
    tensors.update({n: tf.constant(value, tf.float32) for n, value in (extra or {}).items()})
    names = sorted(tensors)
    try:
        tf.raw_ops.SaveV2(prefix=str(tmp), tensor_names=names, shape_and_slices=[""] * len(names),
                          tensors=[tensors[n] for n in names])
        for suffix in (DATA_SUFFIX, INDEX_SUFFIX):  # index last: it is what readers look for
            fsync_path(Path(str(tmp) + suffix))
            os.replace(str(tmp) + suffix, str(final) + suffix)
        fsync_dir(save_dir)
    finally:
        _remove_bundle(tmp)
    state_path = save_dir / (LVE_STATE if lve else PERIODIC_STATE)
    old = read_state(state_path)
    kept = [p for p in (old.all_paths if old else []) if p != name and resolve(save_dir, p) != final] + [name]
    stale = kept[:-max_to_keep] if max_to_keep > 0 else []
    kept = kept[len(stale):]
    # The state moves to the new bundle before any old one goes: a crash in between leaves an
    # unlisted old bundle behind, never a state file that names a deleted one.
    write_state(state_path, CheckpointState(name, kept))
    for prefix in stale:
        bundle = resolve(save_dir, prefix)
        if _is_in(save_dir, bundle):  # an absolute entry into another folder (copied from there) is not ours
            _remove_bundle(bundle)
    return final


def lve_valid_cost(save_dir: Path) -> float:
    """The validation cost the current LVE checkpoint was chosen by; inf when there is none to beat
    (no LVE checkpoint, a final-weights stand-in, or one written without the cost, as the original's)."""
    if lve_is_stand_in(save_dir):
        return math.inf
    try:
        prefix = latest_checkpoint(save_dir, LVE_STATE)
        if prefix is None:
            return math.inf
        reader = tf.train.load_checkpoint(str(prefix))
        if not reader.has_tensor(LVE_COST_TENSOR):
            return math.inf
        cost = float(reader.get_tensor(LVE_COST_TENSOR))
    except (LfadsError, tf.errors.OpError, ValueError):
        return math.inf  # an unreadable LVE checkpoint is replaced by the next good epoch
    return cost if math.isfinite(cost) else math.inf


_PER_DATASET_SCOPES = ("LFADS/x_2_infac_", "LFADS/glm/")


# The dataset a per-dataset read-in or read-out belongs to (reference §8: named after its input file).
_DATASET_OF_VARIABLE = re.compile(r"LFADS/(?:x_2_infac_|glm/fac_2_(?:logrates|means|logvars)_)(?P<dataset>.+)/[Wb]")


def _missing_variable_problem(prefix: Path, name: str, shapes: dict[str, Any]) -> str:
    """Why `name` is not in the checkpoint: another dataset name (the input files were renamed, or
    another --data_filename_stem), else other model flags."""
    wanted = _DATASET_OF_VARIABLE.fullmatch(name)
    trained = sorted({match["dataset"] for stored in shapes if (match := _DATASET_OF_VARIABLE.fullmatch(stored))})
    if wanted is not None and trained and wanted["dataset"] not in trained:
        return (f"{prefix}: was trained on dataset(s) {', '.join(trained)}, not {wanted['dataset']}; dataset names come"
                " from the input file names, so pass the --data_dir and --data_filename_stem of training (or give the"
                " files their training names again)")
    return (f"{prefix}: has no variable {name}; pass the same model flags as in training"
            " (the README of LFADS: every training flag must be passed again)")


def restore(prefix: Path, variables: dict[str, tf.Variable], required: set[str]) -> list[str]:
    """Assign every variable found in the checkpoint; -> names that were not in it.

    A missing or mis-shaped variable in `required` means the flags differ from training's.
    """
    try:
        reader = tf.train.load_checkpoint(str(prefix))
    except (tf.errors.OpError, ValueError) as err:
        raise UnreadableCheckpoint(f"{prefix}: cannot read checkpoint ({err}); delete it or restore the files") from None
    shapes = reader.get_variable_to_shape_map()
    # TF1's Saver ignored checkpoint variables the graph lacked, so a controller model sampled with
    # --co_dim=0 silently lost its controller. Per-dataset read-in/out may differ (a subset of the
    # stitched datasets), optimizer slots are not built outside training; anything else means other flags.
    unbuilt = sorted(
        name for name in shapes
        if name.startswith("LFADS/") and name not in variables
        and not name.endswith(("/Adam", "/Adam_1")) and name not in BETA_POWERS and not name.startswith(_PER_DATASET_SCOPES)
        and not _zero_bias_of_a_map_without_one(reader, name, variables)
    )
    if unbuilt:
        more = f" (and {len(unbuilt) - 1} more)" if len(unbuilt) > 1 else ""
        raise LfadsError(
            f"{prefix}: holds {unbuilt[0]}{more}, which these flags do not build; pass the same model flags"
            " as in training (e.g. --co_dim, --ci_enc_dim, --ic_dim)"
        )
    missing = []
    for name, var in variables.items():
        stored = name if name in shapes else FORMER_NAMES.get(name, name)
        if stored not in shapes:
            if name in required:
                raise LfadsError(_missing_variable_problem(prefix, name, shapes))
            missing.append(name)
            continue
        if list(shapes[stored]) != var.shape.as_list():
            raise LfadsError(
                f"{prefix}: {name} has shape {shapes[stored]} but these flags and data build {var.shape.as_list()};"
                " pass the same model flags as in training, or, if the data changed (another number of neurons,"
                " time steps or datasets), train afresh: delete the output (lfads-manager delete-output RUN)"
            )
        try:
            var.assign(reader.get_tensor(stored))
        except (tf.errors.OpError, IndexError, ValueError) as err:  # a truncated or corrupt data file
            raise UnreadableCheckpoint(
                f"{prefix}: cannot read checkpoint ({type(err).__name__}: {err}); delete it or restore the files"
            ) from None
    return missing


def _zero_bias_of_a_map_without_one(reader: tf.train.CheckpointReader, name: str,
                                    variables: dict[str, tf.Variable]) -> bool:
    """Some copies of the original's init_linear made an all-zero `<map>/b` for maps without a bias
    (x_2_ru, x_2_c, gen_2_fac): harmless to leave out, so their checkpoints load here too."""
    if not name.endswith("/b") or f"{name[:-2]}/W" not in variables:
        return False
    try:
        return not np.any(reader.get_tensor(name))
    except (tf.errors.OpError, IndexError, ValueError):
        return False


def mark_lve_stand_in(save_dir: Path, step: int) -> None:
    write_text_atomic(save_dir / LVE_STAND_IN, f"{step}\n")


def clear_lve_stand_in(save_dir: Path) -> None:
    (save_dir / LVE_STAND_IN).unlink(missing_ok=True)


def lve_is_stand_in(save_dir: Path) -> bool:
    return (save_dir / LVE_STAND_IN).exists()
