"""Every flag of the original run_lfads.py, with its default, plus the few this port adds.

The `Flags` dataclass is the single source: absl flags are defined from its fields, and the
parsed values come back as a frozen `Flags`. No TensorFlow here, so `lfads --help` and flag
errors are instant.
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from absl import flags as absl_flags

from lfads.app_flags import AppFlags, app_flags_from, define_app_flags, usage_lines

KINDS: tuple[str, ...] = (
    "train",
    "posterior_sample_and_average",
    "posterior_push_mean",
    "prior_sample",
    "write_model_params",
)
MAX_INT = sys.maxsize


def _flag(default: Any, help_text: str) -> Any:
    return field(default=default, metadata={"help": help_text})


@dataclass(frozen=True)
class Flags:
    """Parsed command line; field names and defaults are the original's (reference §1)."""

    kind: str = _flag("train", "one of: " + ", ".join(KINDS))
    output_dist: str = _flag("poisson", "poisson (integer counts) or gaussian (float data)")
    allow_gpu_growth: bool = _flag(False, "let TensorFlow grow GPU memory instead of taking it all")
    data_dir: str = _flag("/tmp/rnn_synth_data_v1.0/", "folder holding the input HDF5 files")
    data_filename_stem: str = _flag(
        "chaotic_rnn_inputs_g1p5", "every file in data_dir starting with this stem is one dataset"
    )
    lfads_save_dir: str = _flag("/tmp/lfads_chaotic_rnn_inputs_g1p5/", "where every output goes")
    checkpoint_pb_load_name: str = _flag(
        "checkpoint", "checkpoint state file to restore from: checkpoint or checkpoint_lve"
    )
    checkpoint_name: str = _flag("lfads_vae", "checkpoint file prefix")
    output_filename_stem: str = _flag("", "prefix of model_runs/model_params files")
    device: str = _flag("gpu:0", "TensorFlow device, e.g. /gpu:0 or /cpu:0 (falls back to CPU)")
    csv_log: str = _flag("fitlog", "per-epoch CSV log name (.csv appended); empty disables it")
    max_ckpt_to_keep: int = _flag(5, "periodic checkpoints to keep")
    max_ckpt_to_keep_lve: int = _flag(5, "lowest-validation-error checkpoints to keep")
    ps_nexamples_to_process: int = _flag(MAX_INT, "trials per split processed by posterior kinds")
    ext_input_dim: int = _flag(0, "dimension of the known external inputs")
    num_steps_for_gen_ic: int = _flag(MAX_INT, "the IC encoder sees only the first N time steps")
    inject_ext_input_to_gen: bool = _flag(False, "feed external inputs to the generator, not encoders")
    cell_weight_scale: float = _flag(1.0, "init scale of encoder and controller GRU weights")
    ic_dim: int = _flag(64, "dimension of the initial condition g0 (0: learned constant)")
    factors_dim: int = _flag(50, "number of factors")
    ic_enc_dim: int = _flag(128, "IC encoder GRU size, each direction")
    gen_dim: int = _flag(200, "generator GRU size")
    gen_cell_input_weight_scale: float = _flag(1.0, "generator input weight init scale")
    gen_cell_rec_weight_scale: float = _flag(1.0, "generator recurrent weight init scale")
    ic_prior_var_min: float = _flag(0.1, "IC prior variance lower bound")
    ic_prior_var_scale: float = _flag(0.1, "IC prior initial variance")
    ic_prior_var_max: float = _flag(0.1, "IC prior variance upper bound (== min: not trained)")
    ic_post_var_min: float = _flag(0.0001, "floor added to the IC posterior variance")
    co_prior_var_scale: float = _flag(0.1, "kept for compatibility; unused, as in the original")
    prior_ar_atau: float = _flag(10.0, "initial AR(1) autocorrelation time of the input prior (bins)")
    prior_ar_nvar: float = _flag(0.1, "initial AR(1) innovation variance of the input prior")
    do_train_prior_ar_atau: bool = _flag(True, "train the AR(1) time constant")
    do_train_prior_ar_nvar: bool = _flag(True, "train the AR(1) innovation variance")
    co_dim: int = _flag(1, "dimension of the inferred inputs (0: no controller)")
    do_causal_controller: bool = _flag(False, "controller sees only the forward encoder")
    do_feed_factors_to_controller: bool = _flag(True, "feed factors[t-1] to the controller")
    feedback_factors_or_rates: str = _flag("factors", "factors or rates (single dataset only)")
    controller_input_lag: int = _flag(1, "controller lag on the CI encodings")
    ci_enc_dim: int = _flag(128, "CI encoder GRU size, each direction")
    con_dim: int = _flag(128, "controller GRU size")
    batch_size: int = _flag(128, "training batch; posterior_sample_and_average: samples per trial")
    learning_rate_init: float = _flag(0.01, "initial learning rate")
    learning_rate_decay_factor: float = _flag(0.95, "learning rate multiplier on a plateau")
    learning_rate_stop: float = _flag(0.00001, "training stops once the learning rate is below this")
    learning_rate_n_to_compare: int = _flag(6, "plateau window, in epochs")
    max_grad_norm: float = _flag(200.0, "global-norm gradient clip")
    cell_clip_value: float = _flag(5.0, "GRU states are clipped to +/- this")
    do_train_io_only: bool = _flag(False, "train only read-in (if trainable) and read-out matrices")
    do_train_encoder_only: bool = _flag(False, "train only the IC encoder and its posterior")
    do_reset_learning_rate: bool = _flag(False, "after a restore, reset the learning rate")
    do_train_readin: bool = _flag(True, "alignment-initialised read-in matrices are trainable")
    keep_prob: float = _flag(0.95, "dropout keep probability")
    temporal_spike_jitter_width: int = _flag(0, "move spikes by up to +/- this many bins (poisson)")
    l2_gen_scale: float = _flag(2000.0, "L2 weight on the generator recurrent weights")
    l2_con_scale: float = _flag(0.0, "L2 weight on the controller recurrent weights")
    co_mean_corr_scale: float = _flag(0.0, "penalty on correlated inferred-input means")
    kl_ic_weight: float = _flag(1.0, "weight of the IC KL term")
    kl_co_weight: float = _flag(1.0, "weight of the inferred-input KL term")
    kl_start_step: int = _flag(0, "KL ramp start, in training steps")
    kl_increase_steps: int = _flag(2000, "KL ramp length, in training steps")
    l2_start_step: int = _flag(0, "L2 ramp start, in training steps")
    l2_increase_steps: int = _flag(2000, "L2 ramp length, in training steps")
    # Flags the MATLAB run manager always emits (fork of run_lfads.py); accepted, mostly inert.
    tf_debug_cli: bool = _flag(False, "accepted for compatibility; no effect in TensorFlow 2")
    tf_debug_tensorboard: bool = _flag(False, "accepted for compatibility; no effect in TensorFlow 2")
    tf_debug_tensorboard_hostport: str = _flag("localhost:6064", "accepted for compatibility")
    tf_debug_dump_root: str = _flag("", "accepted for compatibility; no effect")
    debug_verbose: bool = _flag(False, "show TensorFlow's own log lines")
    debug_print_each_step: bool = _flag(False, "print the costs of every training step")
    debug_reduce_timesteps_to: int = _flag(0, "if > 0, keep only the first N time steps (debugging)")
    in_factors_dim: int = _flag(50, "retired in the original; accepted and ignored")
    # Added by this port (docs/lfads.md); the defaults keep the original behaviour.
    max_epochs: int = _flag(0, "stop after this many epochs in total (0: no limit)")
    seed: int = _flag(-1, "seed for initialisation, batching, dropout and sampling (-1: unseeded)")
    jit_compile: str = _flag("auto", "XLA-compile the training and sampling steps: auto (on a GPU only), true, false")


FLAG_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Flags))


class IntegralParser(absl_flags.IntegerParser):
    """Integers that also accept MATLAB's `%f` rendering of whole numbers, e.g. `512.000000`."""

    def convert(self, argument: Any) -> int:
        if isinstance(argument, str):
            text = argument.strip()
            try:
                return int(text, 0)
            except ValueError:
                try:
                    number = float(text)
                except ValueError:
                    raise ValueError(f"expected a whole number, got {argument!r}") from None
                if not number.is_integer():
                    raise ValueError(f"expected a whole number, got {argument!r}") from None
                return int(number)
        return super().convert(argument)


class FiniteFloatParser(absl_flags.FloatParser):
    """Floats, finite ones only: a NaN or infinite rate, scale or clip value trains nothing."""

    def convert(self, argument: Any) -> float:
        try:
            value = float(super().convert(argument))
        except ValueError:
            raise ValueError(f"expected a number, got {argument!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"expected a finite number, got {argument!r}")
        return value


def _define_all(values: absl_flags.FlagValues) -> None:
    for spec in dataclasses.fields(Flags):
        help_text = spec.metadata["help"]
        default: Any = spec.default  # every field has one (_flag)
        kind = spec.type if isinstance(spec.type, str) else spec.type.__name__
        if kind == "bool":
            absl_flags.DEFINE_boolean(spec.name, default, help_text, flag_values=values)
        elif kind == "int":
            absl_flags.DEFINE(
                IntegralParser(), spec.name, default, help_text, flag_values=values,
                serializer=absl_flags.ArgumentSerializer(),
            )
        elif kind == "float":
            absl_flags.DEFINE(FiniteFloatParser(), spec.name, default, help_text, flag_values=values,
                              serializer=absl_flags.ArgumentSerializer())
        else:
            absl_flags.DEFINE_string(spec.name, default, help_text, flag_values=values)


class FlagError(ValueError):
    """A command line that cannot be used; the message is one line for the user."""


def usage() -> str:
    values = absl_flags.FlagValues()
    _define_all(values)
    lines = ["usage: lfads --kind=KIND [--flag=value ...]   (run_lfads.py is the same program)", ""]
    for name in FLAG_NAMES:
        flag = values[name]
        lines.append(f"  --{name}  (default: {flag.default_as_str or repr('')})")
        lines.append(f"      {flag.help}")
    return "\n".join(lines + usage_lines())


def parse_flags(argv: Sequence[str]) -> Flags:
    """Parse `argv` (without the program name) into `Flags`; raise FlagError with one line."""
    return parse_command_line(argv)[0]


def parse_command_line(argv: Sequence[str]) -> tuple[Flags, AppFlags]:
    """`parse_flags`, plus absl.app's own flags (lfads/app_flags.py), which are not LFADS settings."""
    values = absl_flags.FlagValues()
    _define_all(values)
    define_app_flags(values)
    try:
        leftover = values(["lfads", *argv], known_only=False)
    except absl_flags.UnrecognizedFlagError as err:
        raise FlagError(f"unknown flag --{err.flagname}; see `lfads --help` for the accepted flags") from None
    except absl_flags.IllegalFlagValueError as err:
        raise FlagError(str(err).splitlines()[0]) from None
    except absl_flags.Error as err:
        raise FlagError(str(err).splitlines()[0]) from None
    if len(leftover) > 1:
        raise FlagError(f"unexpected argument {leftover[1]!r}; every option is a --flag=value")
    parsed_values: dict[str, Any] = {name: values[name].value for name in FLAG_NAMES}
    parsed = Flags(**parsed_values)
    check_flags(parsed)
    return parsed, app_flags_from(values)


def check_flags(parsed: Flags) -> None:
    """Value checks the original did with asserts, as one-line errors."""
    if parsed.kind not in KINDS:
        raise FlagError(f"--kind={parsed.kind} is not one of: {', '.join(KINDS)}")
    if parsed.output_dist not in ("poisson", "gaussian"):
        raise FlagError(f"--output_dist={parsed.output_dist} must be poisson or gaussian")
    if parsed.feedback_factors_or_rates not in ("factors", "rates"):
        raise FlagError(f"--feedback_factors_or_rates={parsed.feedback_factors_or_rates} must be factors or rates")
    positive = ("batch_size", "factors_dim", "gen_dim", "learning_rate_n_to_compare", "num_steps_for_gen_ic")
    for name in positive:
        if getattr(parsed, name) <= 0:
            raise FlagError(f"--{name} must be positive, got {getattr(parsed, name)}")
    non_negative = (
        "ic_dim", "co_dim", "ext_input_dim", "controller_input_lag", "max_epochs",
        "temporal_spike_jitter_width", "kl_start_step", "kl_increase_steps", "l2_start_step",
        "l2_increase_steps", "max_ckpt_to_keep", "max_ckpt_to_keep_lve",
    )
    for name in non_negative:
        if getattr(parsed, name) < 0:
            raise FlagError(f"--{name} must be >= 0, got {getattr(parsed, name)}")
    if parsed.ic_dim > 0 and parsed.ic_enc_dim <= 0:
        raise FlagError("--ic_enc_dim must be positive when --ic_dim > 0")
    if parsed.co_dim > 0 and (parsed.ci_enc_dim <= 0 or parsed.con_dim <= 0):
        raise FlagError("--ci_enc_dim and --con_dim must be positive when --co_dim > 0")
    if not 0.0 < parsed.keep_prob <= 1.0:
        raise FlagError(f"--keep_prob must be in (0, 1], got {parsed.keep_prob}")
    low, init, high = parsed.ic_prior_var_min, parsed.ic_prior_var_scale, parsed.ic_prior_var_max
    if parsed.ic_dim > 0 and not (init > 0.0 and low <= init <= high):  # the original asserted these building the IC prior
        raise FlagError(f"--ic_prior_var_scale={init:g} (the IC prior's initial variance) must be positive and within"
                        f" [--ic_prior_var_min={low:g}, --ic_prior_var_max={high:g}]")
    if parsed.co_dim > 0:
        _check_ar1_prior(parsed)
    if device_kind_and_index(parsed.device) is None:
        raise FlagError(f"--device={parsed.device} is not a TensorFlow device; give gpu:N or cpu:0 (as /gpu:0, /device:GPU:0)")
    if parsed.jit_compile not in ("auto", "true", "false"):
        raise FlagError(f"--jit_compile={parsed.jit_compile} must be auto, true or false")
    if parsed.checkpoint_pb_load_name in ("", "."):
        raise FlagError("--checkpoint_pb_load_name must name a state file, e.g. checkpoint_lve")


# TF1's tf.device took these (a job/replica/task prefix too); anything else it refused.
_DEVICE = re.compile(r"(/job:[^/]+)?(/replica:\d+)?(/task:\d+)?/?(device:)?(?P<kind>cpu|gpu)(:(?P<index>\d+))?", re.IGNORECASE)


def device_kind_and_index(requested: str) -> tuple[str, int] | None:
    """("cpu"|"gpu", index) of a --device value; None for one TensorFlow would not take."""
    match = _DEVICE.fullmatch(requested.strip())
    if match is None:
        return None
    return match["kind"].lower(), int(match["index"] or 0)


_PERCENT_F_HINT = "MATLAB's %f writes values below 5e-7 as 0.000000: give the value in full"


def _check_ar1_prior(parsed: Flags) -> None:
    """The inferred inputs' AR(1) prior starts from log(nvar) and log(atau): the original took
    log(0) as -inf, which only a fixed time constant survives (phi = 0, white noise)."""
    if not parsed.prior_ar_nvar > 0.0:
        raise FlagError(f"--prior_ar_nvar={parsed.prior_ar_nvar:g} must be positive (the AR(1) innovation variance of"
                        f" the inferred inputs); {_PERCENT_F_HINT}")
    atau = parsed.prior_ar_atau
    if not atau >= 0.0 or (atau == 0.0 and parsed.do_train_prior_ar_atau):
        raise FlagError(f"--prior_ar_atau={atau:g} must be positive (the AR(1) time constant in bins; 0, white noise,"
                        f" only with --do_train_prior_ar_atau=false); {_PERCENT_F_HINT}")


def as_dict(parsed: Flags) -> dict[str, Any]:
    return dataclasses.asdict(parsed)
