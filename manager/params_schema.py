"""Every RunParams property: its MATLAB class, its class-definition default, and how it is used.

The single source for defaults, type casting, hashing, flags and summary.txt (reference §4).
Order is the order of `src/+LFADS/RunParams.m`; it only matters for summary.txt and flag order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# MATLAB classes used by RunParams; `None` means the property is declared without a type and takes
# the class of whatever is assigned (a number is a double, as a MATLAB literal would be).
UNTYPED = None

INTEGER_RANGES: dict[str, tuple[int, int]] = {
    "uint8": (0, 2**8 - 1),
    "uint16": (0, 2**16 - 1),
    "uint32": (0, 2**32 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "int32": (-(2**31), 2**31 - 1),
}


@dataclass(frozen=True)
class Prop:
    name: str
    matlab_class: str | None
    default: Any
    hidden: bool = False
    # Added by this port (not in the MATLAB class): emitted as a flag only when non-default.
    added: bool = False
    doc: str = ""

    @property
    def is_flag(self) -> bool:
        return self.name.startswith("c_")

    @property
    def flag_name(self) -> str:
        return self.name[2:]


def _p(name: str, matlab_class: str | None, default: Any, doc: str = "", **kw: Any) -> Prop:
    return Prop(name, matlab_class, default, doc=doc, **kw)


PROPERTIES: tuple[Prop, ...] = (
    _p("name", "char", "", "label only; not hashed"),
    _p("version", "uint32", 20171107, "behaviour date; not hashed"),
    _p("spikeBinMs", "double", 2.0, "output bin width in ms; a whole multiple of the input bin"),
    _p("c_allow_gpu_growth", "logical", True),
    _p("c_max_ckpt_to_keep", "uint16", 5),
    _p("c_max_ckpt_to_keep_lve", "uint16", 5),
    _p("c_device", "char", "/gpu:0"),
    _p("c_learning_rate_init", "double", 0.01),
    _p("c_learning_rate_decay_factor", "double", 0.98),
    _p("c_learning_rate_n_to_compare", "uint16", 6),
    _p("c_learning_rate_stop", "double", 0.00001, "training stops when the learning rate reaches this"),
    _p("c_max_grad_norm", "double", 200.0),
    _p("trainToTestRatio", "uint16", 4, "every (trainToTestRatio+1)-th trial is a validation trial"),
    _p("c_batch_size", "uint16", 256),
    _p("c_cell_clip_value", "double", 5.0),
    _p("c_temporal_spike_jitter_width", "uint16", 0),
    _p("c_keep_prob", "double", 0.95),
    _p("c_l2_gen_scale", "double", 500.0),
    _p("c_l2_con_scale", "double", 500.0),
    _p("c_co_mean_corr_scale", "double", 0.0),
    _p("c_kl_ic_weight", "double", 1.0),
    _p("c_kl_co_weight", "double", 1.0),
    _p("c_kl_start_step", "uint32", 0, "x nDatasets when scaleStartStepWithDatasets"),
    _p("c_kl_increase_steps", "uint32", 900, "x nDatasets when scaleIncreaseStepsWithDatasets"),
    _p("c_l2_start_step", "uint32", 0, "x nDatasets when scaleStartStepWithDatasets"),
    _p("c_l2_increase_steps", "uint32", 900, "x nDatasets when scaleIncreaseStepsWithDatasets"),
    _p("scaleIncreaseStepsWithDatasets", "logical", True),
    _p("scaleStartStepWithDatasets", "logical", True),
    _p("c_ext_input_dim", "uint16", 0),
    _p("c_inject_ext_input_to_gen", "logical", False),
    _p("c_co_dim", "uint16", 4, "0 = no controller"),
    _p("c_prior_ar_atau", "double", 10.0),
    _p("c_do_train_prior_ar_atau", "logical", True),
    _p("c_prior_ar_nvar", "double", 0.1),
    _p("c_do_train_prior_ar_nvar", "logical", True),
    _p("c_do_causal_controller", "logical", False),
    _p("c_do_feed_factors_to_controller", "logical", True),
    _p("c_feedback_factors_or_rates", "char", "factors"),
    _p("c_controller_input_lag", "uint16", 1),
    _p("c_ci_enc_dim", "uint16", 128),
    _p("c_con_dim", "uint16", 128),
    _p("c_co_prior_var_scale", UNTYPED, 0.1),
    _p("c_num_steps_for_gen_ic", "uint32", 2**32 - 1),
    _p("c_ic_dim", "uint16", 64),
    _p("c_ic_enc_dim", "uint16", 128),
    _p("c_ic_prior_var_min", "double", 0.1),
    _p("c_ic_prior_var_scale", "double", 0.1),
    _p("c_ic_prior_var_max", "double", 0.1),
    _p("c_ic_post_var_min", "double", 0.0001),
    _p("c_cell_weight_scale", "double", 1.0),
    _p("c_gen_dim", "uint16", 100),
    _p("c_gen_cell_input_weight_scale", "double", 1.0),
    _p("c_gen_cell_rec_weight_scale", "double", 1.0),
    _p("c_factors_dim", "uint16", 50, "the only c_* property in the data hash (it shapes the alignment)"),
    _p("c_output_dist", "char", "poisson"),
    _p("c_do_train_readin", "logical", True),
    _p("useAlignmentMatrix", "logical", False, "stitching: PCR alignment matrices for multi-dataset runs"),
    _p("useSingleDatasetAlignmentMatrix", "logical", False, "PCA read-in for single-dataset runs"),
    _p("alignmentApproach", "char", "regressGlobalPCs", "or 'ridgeRegressGlobalPCs'"),
    _p("alignmentExtraArgs", "cell", (), "name/value pairs for the alignment (e.g. ridgeNormalizeEach)"),
    _p("posterior_mean_kind", "char", "posterior_sample_and_average", "or 'posterior_push_mean'"),
    _p("num_samples_posterior", UNTYPED, 512.0, "--batch_size of the posterior-mean step"),
    _p("c_tf_debug_cli", "logical", False),
    _p("c_tf_debug_tensorboard", "logical", False),
    _p("c_tf_debug_tensorboard_hostport", "char", "localhost:6064"),
    _p("c_tf_debug_dump_root", UNTYPED, ""),
    _p("c_debug_verbose", UNTYPED, False),
    _p("c_debug_reduce_timesteps_to", UNTYPED, None),
    _p("c_debug_print_each_step", UNTYPED, False),
    _p("c_max_epochs", "uint32", 0, "added: stop after this many epochs (0 = no limit)", added=True),
    _p("c_seed", "int32", -1, "added: random seed of the model (-1 = unseeded)", added=True),
    _p("c_in_factors_dim", "uint16", 50, "retired", hidden=True),
    _p("setInFactorsMatchDataForSingleDataset", "logical", False, "retired", hidden=True),
)

# Values a property's MATLAB class can hold but no run can use (a division by zero, an empty training
# set, a flag LFADS refuses): refused on assignment, so a TOML file or script hears about them at once
# instead of from a traceback during export or a failed run in the queue.
AT_LEAST_ONE: frozenset[str] = frozenset({
    "c_batch_size", "c_factors_dim", "trainToTestRatio", "num_samples_posterior", "c_gen_dim",
    "c_learning_rate_n_to_compare", "c_num_steps_for_gen_ic",
})
POSITIVE_FINITE: frozenset[str] = frozenset({"spikeBinMs", "c_co_prior_var_scale"})
# None (the flag is left out) or a whole number of at least 1.
OPTIONAL_AT_LEAST_ONE: frozenset[str] = frozenset({"c_debug_reduce_timesteps_to"})
CHOICES: dict[str, tuple[str, ...]] = {
    "posterior_mean_kind": ("posterior_sample_and_average", "posterior_push_mean"),
    "alignmentApproach": ("regressGlobalPCs", "ridgeRegressGlobalPCs"),
    "c_output_dist": ("poisson", "gaussian"),
    "c_feedback_factors_or_rates": ("factors", "rates"),
}
# Untyped in MATLAB, but LFADS takes only true/false (or 1/0).
SWITCHES: frozenset[str] = frozenset({"c_debug_verbose", "c_debug_print_each_step"})
# What TF1's tf.device took, as lfads/flags.py checks it (the parts share no code, only files).
DEVICE = re.compile(r"(/job:[^/]+)?(/replica:\d+)?(/task:\d+)?/?(device:)?(cpu|gpu)(:\d+)?", re.IGNORECASE)
# (0, 1]: the fraction of units dropout keeps.
FRACTIONS: frozenset[str] = frozenset({"c_keep_prob"})
# alignmentExtraArgs names the alignment understands (MATLAB's inputParser refuses others too).
ALIGNMENT_OPTIONS: tuple[str, ...] = ("ridgeNormalizeEach",)

# Never hashed (RunParams.getListPropertiesNotAffectingHash, plus name and version).
NOT_AFFECTING_HASH: frozenset[str] = frozenset(
    {
        "name",
        "version",
        "num_samples_posterior",
        "posterior_mean_kind",
        "c_tf_debug_cli",
        "c_tf_debug_tensorboard",
        "c_tf_debug_tensorboard_hostport",
        "c_tf_debug_dump_root",
        "c_debug_verbose",
        "c_debug_reduce_timesteps_to",
        "c_debug_print_each_step",
    }
)

# c_* names declared by the root class leave the data hash, except c_factors_dim; a subclass's own
# properties (even c_* ones) stay in it, as in the original.
ROOT_NAMES: frozenset[str] = frozenset(prop.name for prop in PROPERTIES)

# params.version below this leaves c_factors_dim out of the data hash (the pre-20171107 layout).
DATA_HASH_VERSION_CUTOFF = 20171107
