"""Casting Python values to a property's MATLAB class, MATLAB `isequal`, and MATLAB-style text.

Values are kept as plain Python (int, float, bool, str, tuple, None for `[]`) so users can do
arithmetic on them; the MATLAB class is applied when hashing (`to_mvalue`) and formatting.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from manager.datahash import MValue
from manager.params_schema import INTEGER_RANGES, Prop


class ParamValueError(ValueError):
    """A value that the property's MATLAB class cannot hold; the message says what is expected."""


def is_number(value: Any) -> bool:
    """A real number (Python or numpy), not a boolean."""
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool | np.bool_)


def _refuse_nan(prop: Prop, value: Any) -> None:
    """NaN has more than one bit pattern (MATLAB's is fff8000000000000, numpy's 7ff8000000000000), so
    its hash would not be MATLAB's; and no run parameter means anything as NaN."""
    values = value if isinstance(value, Sequence) and not isinstance(value, str) else [value]
    flat = [x for item in values for x in (item if isinstance(item, Sequence) and not isinstance(item, str) else [item])]
    if any(is_number(x) and math.isnan(float(x)) for x in flat):
        raise ParamValueError(f"{prop.name} must not be NaN, got {value!r}")


def cast_value(prop: Prop, value: Any) -> Any:
    """`value` as the Python value that `prop`'s MATLAB class would hold, or ParamValueError."""
    _refuse_nan(prop, value)
    cls = prop.matlab_class
    if cls is None:
        return _cast_untyped(prop, value)
    if cls in INTEGER_RANGES:
        low, high = INTEGER_RANGES[cls]
        if not is_number(value) or not math.isfinite(float(value)) or float(value) != int(value):
            raise ParamValueError(f"{prop.name} must be a whole number ({cls}), got {value!r}")
        if not low <= int(value) <= high:
            raise ParamValueError(f"{prop.name} must be between {low} and {high} ({cls}), got {value!r}")
        return int(value)
    if cls == "double":
        if not is_number(value):
            raise ParamValueError(f"{prop.name} must be a number (double), got {value!r}")
        return float(value)
    if cls == "logical":
        if isinstance(value, bool | np.bool_) or (is_number(value) and value in (0, 1)):
            return bool(value)
        raise ParamValueError(f"{prop.name} must be true or false (logical), got {value!r}")
    if cls == "char":
        if not isinstance(value, str):
            raise ParamValueError(f"{prop.name} must be a string (char), got {value!r}")
        return value
    if cls == "cell":
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise ParamValueError(f"{prop.name} must be a list (cell), got {value!r}")
        return tuple(_cast_cell_item(prop, item) for item in value)
    raise ParamValueError(f"{prop.name}: unsupported MATLAB class {cls}")


def _cast_untyped(prop: Prop, value: Any) -> Any:
    if value is None or isinstance(value, bool | str):
        return value
    if is_number(value):
        return float(value)
    if isinstance(value, Sequence) and all(is_number(item) for item in value):
        return tuple(float(item) for item in value) if value else None
    raise ParamValueError(f"{prop.name} must be a number, true/false, a string or a list of numbers, got {value!r}")


def _cast_cell_item(prop: Prop, item: Any) -> Any:
    if isinstance(item, bool | str) or is_number(item):
        return float(item) if is_number(item) else item
    if isinstance(item, Sequence) and all(is_number(x) for x in item):
        return tuple(float(x) for x in item)
    raise ParamValueError(f"{prop.name}: cell entries must be numbers, strings or true/false, got {item!r}")


def _untyped_mvalue(value: Any) -> MValue:
    if value is None:
        return MValue("double", np.zeros((0, 0)))
    if isinstance(value, bool):
        return MValue("logical", np.array([[value]]))
    if isinstance(value, str):
        return MValue("char", value)
    if isinstance(value, tuple):
        if not value:
            return MValue("double", np.zeros((0, 0)))  # MATLAB's [] is 0x0, not 1x0
        return MValue("double", np.array([value], dtype=np.float64).reshape(1, -1))
    return MValue("double", np.array([[float(value)]]))


def to_mvalue(prop: Prop, value: Any) -> MValue:
    """The MATLAB value a property holds, for hashing and comparison."""
    cls = prop.matlab_class
    if cls is None:
        return _untyped_mvalue(value)
    if cls == "char":
        return MValue("char", value)
    if cls == "cell":
        return MValue("cell", tuple(_untyped_mvalue(item) for item in value))
    if cls == "logical":
        return MValue("logical", np.array([[bool(value)]]))
    return MValue(cls, np.array([[value]]))


def matlab_isequal(a: MValue, b: MValue) -> bool:
    """MATLAB isequal: compares values, not classes (uint16(5) equals 5; '' equals [])."""
    if a.shape() != b.shape():
        return False
    if a.matlab_class == "cell" or b.matlab_class == "cell":
        if a.matlab_class != b.matlab_class:
            return not a.data and not b.data
        return all(matlab_isequal(x, y) for x, y in zip(a.data, b.data, strict=True))
    return bool(np.array_equal(_as_numbers(a), _as_numbers(b)))


def _as_numbers(value: MValue) -> np.ndarray:
    if value.matlab_class == "char":
        return np.array([ord(ch) for ch in value.data], dtype=np.float64)
    return np.asarray(value.data, dtype=np.float64).ravel(order="F")


def format_double(value: float) -> str:
    """Shortest text that reads back as the same double; whole numbers without '.0'.

    The original's `%f` turned 1e-7 into 0.000000; this never loses a digit.
    """
    if math.isfinite(value) and value == int(value) and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def format_flag_value(prop: Prop, value: Any) -> str | None:
    """The text after `--flag=`; None for an empty value (the original skips those)."""
    if value is None or value == "" or value == ():
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format_double(value)
    if isinstance(value, tuple):
        return ",".join(format_flag_value(prop, item) or "" for item in value)
    return str(value)


def format_g(value: float) -> str:
    return "%g" % value  # noqa: UP031 - MATLAB's %g is C's %g


def format_summary_value(value: Any) -> str:
    """`serializePropertyValue`: %i, %g, true/false, char as is, {a, b} cells, [...] for long vectors."""
    if value is None:
        return "[]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format_g(value)
    if isinstance(value, tuple):
        if all(isinstance(item, float) for item in value) and value:
            return "[...]" if len(value) >= 6 else "[" + " ".join(format_g(item) for item in value) + "]"
        return "{" + ", ".join(format_summary_value(item) for item in value) + "}"
    return str(value)
