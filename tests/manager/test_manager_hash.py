"""Param and data hashes against every vector printed in lfads-run-manager's docs."""

from __future__ import annotations

import pytest

from manager.datahash import MValue, short_hash
from manager.matlab_values import ParamValueError, to_mvalue
from manager.params import RunParams
from manager.params_schema import NOT_AFFECTING_HASH, PROPERTIES, Prop

# docs/index.md and docs/multisession.md: c_factors_dim swept over 2, 4, 6, 8
SINGLE_SESSION = {2: ("Z1-4Ne", "cq1HAe"), 4: ("UEvXAB", "QcdNGf"), 6: ("m8Dk5i", "y3K_k3"), 8: ("YOs74u", "4MaTKO")}
STITCHING = {2: ("7I6XSW", "cgrfui"), 4: ("O4V73g", "2_zdvC"), 6: ("ngqEhM", "GeiefE"), 8: ("Qr2PeG", "RE1kuL")}


def docs_base(**extra: object) -> RunParams:
    return RunParams(
        spikeBinMs=2, c_co_dim=0, c_batch_size=150, c_gen_dim=64, c_ic_enc_dim=64, c_learning_rate_stop=1e-3, **extra
    )


@pytest.mark.parametrize(("extra", "vectors"), [({}, SINGLE_SESSION), ({"useAlignmentMatrix": True}, STITCHING)])
def test_every_documented_hash(extra, vectors):
    swept = docs_base(**extra).sweep(c_factors_dim=sorted(vectors))
    got = {p.c_factors_dim: (p.param_hash, p.data_hash) for p in swept}
    assert got == vectors
    assert swept[-1].param_hash_name == f"param_{vectors[8][0]}" and swept[-1].data_hash_name == f"data_{vectors[8][1]}"


def test_all_defaults_is_the_empty_struct():
    assert RunParams().param_hash == RunParams().data_hash == short_hash(MValue("struct", {})) == "T4MzIi"


def test_field_order_types_and_excluded_properties():
    params = docs_base(c_factors_dim=8)
    # Order of assignment does not matter; int vs float literal does not matter for typed props.
    same = RunParams(c_factors_dim=8.0, c_learning_rate_stop=0.001, c_gen_dim=64, c_ic_enc_dim=64, c_batch_size=150, c_co_dim=0)
    assert same.param_hash == params.param_hash
    # Not-hashed properties change neither hash.
    unhashed = params.copy(name="x", num_samples_posterior=64, posterior_mean_kind="posterior_push_mean", c_debug_verbose=True)
    assert (unhashed.param_hash, unhashed.data_hash) == (params.param_hash, params.data_hash)
    # An LFADS-only property changes the param hash only; a data property changes both.
    gen = params.copy(c_gen_dim=100 + 1)
    assert gen.param_hash != params.param_hash and gen.data_hash == params.data_hash
    split = params.copy(trainToTestRatio=3)
    assert split.param_hash != params.param_hash and split.data_hash != params.data_hash


def test_added_properties_are_hashed_only_when_not_default():
    params = docs_base(c_factors_dim=8)
    assert params.copy(c_max_epochs=0, c_seed=-1).param_hash == "YOs74u"
    assert params.copy(c_max_epochs=60).param_hash != "YOs74u"
    assert params.copy(c_seed=0).data_hash == "4MaTKO"


def test_auto_downsized_integers_match_declared_16_bit():
    # uint32 values that fit in 16 bits hash like uint16 (AutoDownsizeIntegers).
    assert short_hash(MValue("struct", {"a": MValue("uint32", [[7]])})) == short_hash(
        MValue("struct", {"a": MValue("uint16", [[7]])})
    )
    assert short_hash(MValue("struct", {"a": MValue("uint32", [[70000]])})) != short_hash(
        MValue("struct", {"a": MValue("uint16", [[70000 % 65536]])})
    )


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("c_factors_dim", 8.5, "whole number"),
        ("c_factors_dim", -1, "between 0 and 65535"),
        ("c_factors_dim", True, "whole number"),
        ("c_learning_rate_stop", "1e-3", "number"),
        ("useAlignmentMatrix", "yes", "true or false"),
        ("c_output_dist", 3, "string"),
        ("c_factor_dim", 8, "did you mean 'c_factors_dim'"),
    ],
)
def test_bad_values_are_refused_with_a_reason(name, value, message):
    with pytest.raises(ParamValueError, match=message):
        RunParams(**{name: value})


def test_sweep_varies_the_first_name_fastest():
    grid = RunParams().sweep(c_factors_dim=[2, 4], c_gen_dim=[10, 20, 30])
    assert [(p.c_factors_dim, p.c_gen_dim) for p in grid] == [(2, 10), (4, 10), (2, 20), (4, 20), (2, 30), (4, 30)]


def test_sweep_takes_one_value_alone_as_a_grid_of_one_and_refuses_what_is_no_list():
    grid = RunParams().sweep(c_factors_dim=8, alignmentApproach="ridgeRegressGlobalPCs", c_gen_dim=range(10, 30, 10))
    assert [(p.c_factors_dim, p.alignmentApproach, p.c_gen_dim) for p in grid] == [
        (8, "ridgeRegressGlobalPCs", 10), (8, "ridgeRegressGlobalPCs", 20)]
    with pytest.raises(ParamValueError, match=r"sweep c_gen_dim: give a list of values, got None"):
        RunParams().sweep(c_gen_dim=None)
    with pytest.raises(ParamValueError, match=r"sweep c_gen_dim: the list of values is empty"):
        RunParams().sweep(c_gen_dim=[])


# Reference §3.1: getListPropertiesNotAffectingHash, plus `name` (always excluded).
ORIGINAL_NOT_HASHED = {
    "name", "version", "num_samples_posterior", "posterior_mean_kind", "c_tf_debug_cli", "c_tf_debug_tensorboard",
    "c_tf_debug_tensorboard_hostport", "c_tf_debug_dump_root", "c_debug_verbose", "c_debug_reduce_timesteps_to",
    "c_debug_print_each_step",
}
CHOICES = {"c_keep_prob": 0.5, "posterior_mean_kind": "posterior_push_mean", "c_feedback_factors_or_rates": "rates", "c_output_dist": "gaussian",
           "alignmentApproach": "ridgeRegressGlobalPCs", "alignmentExtraArgs": ["ridgeNormalizeEach", True]}


def _other_value(prop: Prop) -> object:
    if prop.name in CHOICES:
        return CHOICES[prop.name]
    if isinstance(prop.default, bool):
        return not prop.default
    if isinstance(prop.default, str):
        return prop.default + "x"
    if prop.default is None:
        return 5
    return 1 if prop.default in (0, 2**32 - 1) else prop.default + 1


def test_every_property_outside_the_original_exclusions_changes_the_param_hash():
    """Two parameter sets differing in any hashed property must get different param_<hash> folders
    (else one run's output overwrites the other's); the excluded ones are exactly the original's."""
    assert set(NOT_AFFECTING_HASH) == ORIGINAL_NOT_HASHED
    base = RunParams()
    for prop in PROPERTIES:
        changed = base.copy(**{prop.name: _other_value(prop)})
        assert (changed.param_hash != base.param_hash) == (prop.name not in ORIGINAL_NOT_HASHED), prop.name


# Not in the original's docs: computed by an independent implementation of reference §3.2 (written
# apart from manager/datahash.py during a review), pinning char, cell and integer values.
@pytest.mark.parametrize(("values", "expected"), [
    ({"c_device": "é/gpu"}, "PR_Hb2"),
    ({"c_device": "/gpu:\U0001F600"}, "BDUf-i"),  # beyond the BMP: two UTF-16 code units, so 1x7
    ({"c_device": ""}, "d1tsGa"),  # '' is 0x0
    ({"alignmentExtraArgs": ("ridgeNormalizeEach", True)}, "b_4LL8"),
    ({"c_seed": 40000}, "k1f1jy"),  # int32 that does not fit int16 is not downsized
])
def test_char_cell_and_integer_values_hash_as_matlab_holds_them(values, expected):
    assert RunParams(**values).param_hash == expected


def test_an_empty_array_in_a_cell_hashes_as_0x0_not_1x0():
    # RunParams refuses [] for ridgeNormalizeEach (MATLAB's inputParser wants a logical), so the
    # struct DataHash sees is built here from the property's own conversion.
    prop = next(prop for prop in PROPERTIES if prop.name == "alignmentExtraArgs")
    value = to_mvalue(prop, ("ridgeNormalizeEach", ()))
    assert short_hash(MValue("struct", {"alignmentExtraArgs": value})) == "96J5_0"


@pytest.mark.parametrize("setting", ["false", 1, [1, 2]])
def test_ridge_normalize_each_takes_only_true_or_false(setting):
    with pytest.raises(ParamValueError, match="ridgeNormalizeEach must be true or false"):
        RunParams(alignmentExtraArgs=["ridgeNormalizeEach", setting])
    assert RunParams(alignmentExtraArgs=["ridgeNormalizeEach", False]).alignmentExtraArgs == ("ridgeNormalizeEach", False)


def test_nan_is_refused_rather_than_hashed_with_a_bit_pattern_matlab_does_not_use():
    with pytest.raises(ParamValueError, match="c_l2_gen_scale must not be NaN"):
        RunParams(c_l2_gen_scale=float("nan"))
    with pytest.raises(ParamValueError, match="must not be NaN"):
        RunParams(alignmentExtraArgs=["ridgeNormalizeEach", float("nan")])
