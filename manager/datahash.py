"""A port of the DataHash that lfads-run-manager names its folders with (reference §3.2).

MATLAB values are modelled as `MValue(matlab_class, data)`:
  numeric/logical: a numpy array with MATLAB's (at least 2-D) shape
  char:            a Python str (a 1 x n row; '' is 0 x 0)
  cell:            a tuple of MValue (a 1 x n row; () is 0 x 0)
  struct:          a dict name -> MValue (a 1 x 1 struct)
The digest feeds, for every value, its class name and `uint64([ndims, size...])`, then its content;
struct fields in sorted order, each preceded by its name. Integers are auto-downsized first.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

_NUMPY_DTYPE = {
    "double": np.float64,
    "single": np.float32,
    "logical": np.uint8,
    "uint8": np.uint8,
    "uint16": np.uint16,
    "uint32": np.uint32,
    "uint64": np.uint64,
    "int8": np.int8,
    "int16": np.int16,
    "int32": np.int32,
    "int64": np.int64,
}


@dataclass(frozen=True)
class MValue:
    matlab_class: str
    data: Any

    def shape(self) -> tuple[int, ...]:
        if self.matlab_class == "char":  # MATLAB chars are UTF-16 code units: a character beyond the BMP is two
            return (1, len(self.data.encode("utf-16-le")) // 2) if self.data else (0, 0)
        if self.matlab_class == "cell":
            return (1, len(self.data)) if self.data else (0, 0)
        if self.matlab_class == "struct":
            return (1, 1)
        shape = np.shape(self.data)
        return tuple(shape) if len(shape) >= 2 else (1, *shape) if shape else (1, 1)


def downsized_class(value: MValue) -> str:
    """AutoDownsizeIntegers: 32/64-bit integers that fit are hashed as 16-bit (never smaller)."""
    cls = value.matlab_class
    array = np.asarray(value.data)
    if cls not in ("uint32", "uint64", "int32", "int64") or array.size == 0:
        return cls
    if cls.startswith("u"):
        top = int(array.max())
        if top <= np.iinfo(np.uint16).max:
            return "uint16"
        return "uint32" if top <= np.iinfo(np.uint32).max else cls
    low, high = int(array.min()), int(array.max())
    if np.iinfo(np.int16).min <= low and high <= np.iinfo(np.int16).max:
        return "int16"
    return "int32" if np.iinfo(np.int32).min <= low and high <= np.iinfo(np.int32).max else cls


def _feed(engine: Any, value: MValue) -> None:
    cls = downsized_class(value)
    shape = value.shape()
    engine.update(cls.encode("ascii") + np.array([len(shape), *shape], dtype="<u8").tobytes())
    if cls == "struct":
        for name in sorted(value.data):
            engine.update(name.encode("ascii"))
            _feed(engine, value.data[name])
    elif cls == "cell":
        for item in value.data:
            _feed(engine, item)
    elif cls == "char":
        engine.update(value.data.encode("utf-16-le"))
    else:
        array = np.asarray(value.data)
        if array.size:
            # MATLAB's data(:) is column-major.
            engine.update(np.ravel(array, order="F").astype(np.dtype(_NUMPY_DTYPE[cls]).newbyteorder("<")).tobytes())


def datahash_digest(value: MValue) -> bytes:
    engine = hashlib.md5()
    _feed(engine, value)
    return engine.digest()


def short_hash(value: MValue, length: int = 6) -> str:
    """DataHash in 'base64' format with `/`→`_`, `+`→`-`, cut to `length` characters."""
    text = base64.b64encode(datahash_digest(value)).decode("ascii").rstrip("=")
    return text.replace("/", "_").replace("+", "-")[:length]
