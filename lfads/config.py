"""What the model and the costs need, derived once from the flags and the datasets.

Layers receive only the dimensions they use; this is where the original's derived values
(num_steps_for_gen_ic capped at T, read-in width, use of the controller) are computed, once.
"""

from __future__ import annotations

from dataclasses import dataclass

from lfads.data import Dataset
from lfads.errors import LfadsError
from lfads.flags import Flags


@dataclass(frozen=True)
class ReadSpec:
    """Per-dataset read-in / read-out layout."""

    name: str
    data_dim: int
    readin_identity: bool  # single session without an alignment matrix: encoders see raw channels
    readout_identity: bool  # single session with factors_dim == data_dim (poisson only)


@dataclass(frozen=True)
class ModelConfig:
    datasets: tuple[ReadSpec, ...]
    num_steps: int
    output_dist: str
    in_factors_dim: int  # width of the read-in output the encoders see
    ic_dim: int
    co_dim: int
    ext_input_dim: int
    inject_ext_input_to_gen: bool
    factors_dim: int
    gen_dim: int
    ic_enc_dim: int
    ci_enc_dim: int
    con_dim: int
    num_steps_for_gen_ic: int
    do_causal_controller: bool
    do_feed_factors_to_controller: bool
    feedback_rates: bool
    controller_input_lag: int
    cell_weight_scale: float
    gen_cell_input_weight_scale: float
    gen_cell_rec_weight_scale: float
    cell_clip_value: float
    ic_prior_var_min: float
    ic_prior_var_scale: float
    ic_prior_var_max: float
    ic_post_var_min: float
    prior_ar_atau: float
    prior_ar_nvar: float
    do_train_prior_ar_atau: bool
    do_train_prior_ar_nvar: bool
    do_train_readin: bool
    keep_prob: float

    @property
    def use_controller(self) -> bool:
        return self.co_dim > 0

    @property
    def encoder_ext_dim(self) -> int:
        return self.ext_input_dim if not self.inject_ext_input_to_gen else 0

    @property
    def generator_input_dim(self) -> int:
        injected = self.ext_input_dim if self.inject_ext_input_to_gen else 0
        return self.co_dim + injected


@dataclass(frozen=True)
class CostConfig:
    kl_ic_weight: float
    kl_co_weight: float
    kl_start_step: int
    kl_increase_steps: int
    l2_start_step: int
    l2_increase_steps: int
    l2_gen_scale: float
    l2_con_scale: float
    co_mean_corr_scale: float


def model_config(flags: Flags, datasets: list[Dataset]) -> ModelConfig:
    single = len(datasets) == 1
    if flags.feedback_factors_or_rates == "rates" and not single:
        raise LfadsError("--feedback_factors_or_rates=rates works with one dataset only; use factors")
    specs = tuple(
        ReadSpec(
            name=ds.name,
            data_dim=ds.data_dim,
            readin_identity=single and ds.alignment_matrix_cxf is None,
            readout_identity=single and flags.output_dist == "poisson" and flags.factors_dim == ds.data_dim,
        )
        for ds in datasets
    )
    num_steps = datasets[0].num_steps
    return ModelConfig(
        datasets=specs,
        num_steps=num_steps,
        output_dist=flags.output_dist,
        in_factors_dim=specs[0].data_dim if specs[0].readin_identity else flags.factors_dim,
        ic_dim=flags.ic_dim,
        co_dim=flags.co_dim,
        ext_input_dim=flags.ext_input_dim,
        inject_ext_input_to_gen=flags.inject_ext_input_to_gen,
        factors_dim=flags.factors_dim,
        gen_dim=flags.gen_dim,
        ic_enc_dim=flags.ic_enc_dim,
        ci_enc_dim=flags.ci_enc_dim,
        con_dim=flags.con_dim,
        num_steps_for_gen_ic=min(flags.num_steps_for_gen_ic, num_steps),
        do_causal_controller=flags.do_causal_controller,
        # The original feeds factors[t-1] back in causal mode too (its comment says it should not).
        do_feed_factors_to_controller=flags.do_feed_factors_to_controller,
        feedback_rates=flags.feedback_factors_or_rates == "rates",
        controller_input_lag=flags.controller_input_lag,
        cell_weight_scale=flags.cell_weight_scale,
        gen_cell_input_weight_scale=flags.gen_cell_input_weight_scale,
        gen_cell_rec_weight_scale=flags.gen_cell_rec_weight_scale,
        cell_clip_value=flags.cell_clip_value,
        ic_prior_var_min=flags.ic_prior_var_min,
        ic_prior_var_scale=flags.ic_prior_var_scale,
        ic_prior_var_max=flags.ic_prior_var_max,
        ic_post_var_min=flags.ic_post_var_min,
        prior_ar_atau=flags.prior_ar_atau,
        prior_ar_nvar=flags.prior_ar_nvar,
        do_train_prior_ar_atau=flags.do_train_prior_ar_atau,
        do_train_prior_ar_nvar=flags.do_train_prior_ar_nvar,
        do_train_readin=flags.do_train_readin,
        keep_prob=flags.keep_prob,
    )


def cost_config(flags: Flags) -> CostConfig:
    return CostConfig(
        kl_ic_weight=flags.kl_ic_weight,
        kl_co_weight=flags.kl_co_weight,
        kl_start_step=flags.kl_start_step,
        kl_increase_steps=flags.kl_increase_steps,
        l2_start_step=flags.l2_start_step,
        l2_increase_steps=flags.l2_increase_steps,
        l2_gen_scale=flags.l2_gen_scale,
        l2_con_scale=flags.l2_con_scale,
        co_mean_corr_scale=flags.co_mean_corr_scale,
    )
