"""RunParams: one set of LFADS hyperparameters and run-manager settings, with the original hashes."""

from __future__ import annotations

import difflib
import itertools
import math
import numbers
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, ClassVar

import numpy as np

from manager.datahash import MValue, short_hash
from manager.errors import ManagerError
from manager.matlab_values import ParamValueError, cast_value, is_number, matlab_isequal, to_mvalue
from manager.params_schema import (
    ALIGNMENT_OPTIONS,
    AT_LEAST_ONE,
    CHOICES,
    DATA_HASH_VERSION_CUTOFF,
    DEVICE,
    FRACTIONS,
    NOT_AFFECTING_HASH,
    OPTIONAL_AT_LEAST_ONE,
    POSITIVE_FINITE,
    PROPERTIES,
    ROOT_NAMES,
    SWITCHES,
    Prop,
)

HASH_LENGTH = 6


class RunParams:
    """Hyperparameters under their original names (`c_factors_dim`, `spikeBinMs`, …).

    A value object: assigning a property casts it to the property's MATLAB class (so hashes match the
    MATLAB tool) and rejects what that class cannot hold. Subclasses may add properties by extending
    `PROPERTIES`; like the original, their own properties count in both hashes.
    """

    PROPERTIES: ClassVar[tuple[Prop, ...]] = PROPERTIES

    __slots__ = ("_cache", "_values")

    def __init__(self, **values: Any) -> None:
        object.__setattr__(self, "_values", {prop.name: prop.default for prop in self.PROPERTIES})
        object.__setattr__(self, "_cache", {})
        for name, value in values.items():
            setattr(self, name, value)

    # ---- property access -------------------------------------------------------------------
    @classmethod
    def prop_named(cls, name: str) -> Prop:
        props = cls._props_by_name()
        if name not in props:
            close = difflib.get_close_matches(name, props, n=1)
            hint = f"did you mean {close[0]!r}?" if close else "see docs/manager.md for the list of parameters"
            raise ParamValueError(f"unknown parameter {name!r}; {hint}")
        return props[name]

    @classmethod
    def _props_by_name(cls) -> dict[str, Prop]:
        key = "_by_name_" + cls.__qualname__
        cached = cls.__dict__.get(key)
        if cached is None:
            cached = {prop.name: prop for prop in cls.PROPERTIES}
            setattr(cls, key, cached)
        return cached

    def __getattr__(self, name: str) -> Any:
        values = object.__getattribute__(self, "_values")
        if name in values:
            return values[name]
        raise AttributeError(f"RunParams has no parameter {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        prop = self.prop_named(name)
        value = cast_value(prop, value)
        check_usable(name, value)
        self._values[name] = value
        self._cache.clear()

    def __dir__(self) -> Iterable[str]:
        return [*super().__dir__(), *self._values]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunParams) and type(other) is type(self) and self._values == other._values

    def __hash__(self) -> int:
        return hash(self.param_hash)

    def __repr__(self) -> str:
        diffs = ", ".join(f"{k}={v!r}" for k, v in self.non_default().items())
        return f"{type(self).__name__}({diffs})"

    # copy.copy, copy.deepcopy and pickle: the values are the whole state (the cache is rebuilt).
    def __getstate__(self) -> dict[str, Any]:
        return dict(self._values)

    def __setstate__(self, state: dict[str, Any]) -> None:
        object.__setattr__(self, "_values", dict(state))
        object.__setattr__(self, "_cache", {})

    def check_consistent(self) -> None:
        """ParamValueError for values that are usable one by one but not together (LFADS refuses them)."""
        # Checked here, not on assignment: the hash test vectors hold devices no run could use.
        if self.c_device and DEVICE.fullmatch(self.c_device.strip()) is None:
            raise ParamValueError(f"c_device={self.c_device!r} is not a TensorFlow device; give /gpu:0 or /cpu:0 (the queue"
                                  " picks the GPU through CUDA_VISIBLE_DEVICES, so /gpu:0 is right on any GPU)")
        if self.c_ic_dim > 0:
            if self.c_ic_enc_dim == 0:
                raise ParamValueError(f"c_ic_enc_dim must be at least 1 when c_ic_dim={self.c_ic_dim} (or set c_ic_dim = 0)")
            low, init, high = self.c_ic_prior_var_min, self.c_ic_prior_var_scale, self.c_ic_prior_var_max
            if not (init > 0 and low <= init <= high):
                raise ParamValueError(f"c_ic_prior_var_scale={init:g} must be positive and within [c_ic_prior_var_min={low:g},"
                                      f" c_ic_prior_var_max={high:g}]")
        if self.c_co_dim > 0:
            for name in ("c_ci_enc_dim", "c_con_dim"):
                if getattr(self, name) == 0:
                    raise ParamValueError(f"{name} must be at least 1 when c_co_dim={self.c_co_dim} (or set c_co_dim = 0)")
            # The inferred inputs' AR(1) prior starts from log(nvar) and log(atau).
            if not self.c_prior_ar_nvar > 0:
                raise ParamValueError(f"c_prior_ar_nvar={self.c_prior_ar_nvar:g} must be positive (the AR(1) innovation"
                                      " variance of the inferred inputs)")
            atau = self.c_prior_ar_atau
            if not atau >= 0 or (atau == 0 and self.c_do_train_prior_ar_atau):
                raise ParamValueError(f"c_prior_ar_atau={atau:g} must be positive (the AR(1) time constant in bins; 0,"
                                      " white noise, only with c_do_train_prior_ar_atau = false)")

    def copy(self, **changes: Any) -> RunParams:
        clone = type(self).__new__(type(self))
        object.__setattr__(clone, "_values", dict(self._values))
        object.__setattr__(clone, "_cache", {})
        for name, value in changes.items():
            setattr(clone, name, value)
        return clone

    def items(self) -> Iterator[tuple[Prop, Any]]:
        for prop in self.PROPERTIES:
            yield prop, self._values[prop.name]

    def is_default(self, prop: Prop) -> bool:
        return matlab_isequal(to_mvalue(prop, self._values[prop.name]), to_mvalue(prop, prop.default))

    def non_default(self) -> dict[str, Any]:
        return {prop.name: value for prop, value in self.items() if not self.is_default(prop)}

    # ---- hashes ----------------------------------------------------------------------------
    def _hash_struct(self, names: Iterable[str]) -> MValue:
        props = self._props_by_name()
        fields = {}
        for name in names:
            prop = props[name]
            if not self.is_default(prop):
                fields[name] = to_mvalue(prop, self._values[name])
        return MValue("struct", fields)

    def _param_hash_names(self) -> list[str]:
        return [p.name for p in self.PROPERTIES if p.name not in NOT_AFFECTING_HASH]

    def _data_hash_names(self) -> list[str]:
        keep_factors = self._values["version"] >= DATA_HASH_VERSION_CUTOFF
        return [
            name
            for name in self._param_hash_names()
            if not (name in ROOT_NAMES and name.startswith("c_")) or (name == "c_factors_dim" and keep_factors)
        ]

    @property
    def param_hash(self) -> str:
        if "param" not in self._cache:
            self._cache["param"] = short_hash(self._hash_struct(self._param_hash_names()), HASH_LENGTH)
        return self._cache["param"]

    @property
    def data_hash(self) -> str:
        if "data" not in self._cache:
            self._cache["data"] = short_hash(self._hash_struct(self._data_hash_names()), HASH_LENGTH)
        return self._cache["data"]

    @property
    def param_hash_name(self) -> str:
        return f"param_{self.param_hash}"

    @property
    def data_hash_name(self) -> str:
        return f"data_{self.data_hash}"

    # ---- grids -----------------------------------------------------------------------------
    def sweep(self, **grid: Iterable[Any]) -> list[RunParams]:
        """One copy per combination (`generateSweep`), the first named parameter varying fastest,
        which is MATLAB's column-major order of the N-D array."""
        names = list(grid)
        for name in names:
            self.prop_named(name)
        value_lists = [_sweep_values(name, grid[name]) for name in names]
        combos = itertools.product(*reversed(value_lists))
        return [self.copy(**dict(zip(reversed(names), combo, strict=True))) for combo in combos]

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], source: str | None = None) -> RunParams:
        """Build from a plain mapping (e.g. TOML); errors name `source`."""
        try:
            return cls(**dict(values))
        except ParamValueError as error:
            raise ManagerError(source, str(error), "fix the value in [params]") from error


def _sweep_values(name: str, values: Any) -> list[Any]:
    """A sweep's values; one value alone (c_factors_dim=8, a text) is a grid of one, as in MATLAB."""
    if isinstance(values, str | bytes | numbers.Number):
        return [values]
    try:
        listed = list(values)
    except TypeError:
        raise ParamValueError(f"sweep {name}: give a list of values, got {values!r}") from None
    if not listed:
        raise ParamValueError(f"sweep {name}: the list of values is empty; give at least one")
    return listed


def check_usable(name: str, value: Any) -> None:
    """ParamValueError for a value of the right type that no run can use (params_schema.AT_LEAST_ONE, ...)."""
    whole_at_least_one = (is_number(value) and math.isfinite(value) and value >= 1 and value == int(value))
    if name in AT_LEAST_ONE and not whole_at_least_one:
        raise ParamValueError(f"{name} must be a whole number of at least 1, got {value!r}")
    if name in OPTIONAL_AT_LEAST_ONE and value is not None and not whole_at_least_one:
        raise ParamValueError(f"{name} must be a whole number of at least 1 (or left out), got {value!r}")
    if name in POSITIVE_FINITE and not (is_number(value) and math.isfinite(value) and value > 0):
        unit = " of ms" if name == "spikeBinMs" else ""
        raise ParamValueError(f"{name} must be a positive, finite number{unit}, got {value!r}")
    if name in FRACTIONS and not (math.isfinite(value) and 0 < value <= 1):
        raise ParamValueError(f"{name} must be in (0, 1], got {value!r}")
    if name in SWITCHES and not (isinstance(value, bool | np.bool_) or value in (0, 1)):
        raise ParamValueError(f"{name} must be true or false, got {value!r}")
    if name in CHOICES and value not in CHOICES[name]:
        raise ParamValueError(f"{name} must be one of {', '.join(map(repr, CHOICES[name]))}, got {value!r}")
    if name == "alignmentExtraArgs":
        if len(value) % 2:
            raise ParamValueError(f"alignmentExtraArgs must be name/value pairs, got {len(value)} entries")
        unknown = [option for option in value[::2] if option not in ALIGNMENT_OPTIONS]
        if unknown:
            raise ParamValueError(f"alignmentExtraArgs: unknown option {unknown[0]!r}; known: {', '.join(ALIGNMENT_OPTIONS)}")
        for option, setting in zip(value[::2], value[1::2], strict=True):
            # MATLAB's inputParser takes only a logical here; bool("false") would be True
            if option == "ridgeNormalizeEach" and not isinstance(setting, bool | np.bool_):
                raise ParamValueError(f"alignmentExtraArgs: ridgeNormalizeEach must be true or false, got {setting!r}")
