"""Reading and writing MATLAB .mat files (v5 through scipy, v7.3 through h5py).

Writes are byte-reproducible: scipy stamps the creation time into the 116-byte text header, which
would make every re-export look changed, so the header text is replaced by a fixed one.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import scipy.io

from manager.atomicio import write_bytes_atomic, write_if_changed
from manager.errors import ManagerError, describe

_HEADER_BYTES = 128
_HEADER_TEXT_BYTES = 116
_FIXED_HEADER = b"MATLAB 5.0 MAT-file, written by lfads-manager"
# Large float arrays (e.g. true rates) barely shrink under zlib but dominate export time.
_UNCOMPRESSED_FLOAT_BYTES = 1 << 20


def _compress(value: Any) -> bool:
    return not (isinstance(value, np.ndarray) and value.dtype.kind == "f" and value.nbytes > _UNCOMPRESSED_FLOAT_BYTES)


class MatVariableTooLarge(Exception):
    def __init__(self, name: str, error: Exception) -> None:
        super().__init__(f"variable {name!r} is too large for a v5 .mat file ({describe(error)})")


def mat_v5_bytes(fields: Mapping[str, Any]) -> bytes:
    """The bytes of a v5 .mat file holding `fields`, without a timestamp.

    A v5 file is a 128-byte header followed by one element per variable, so each variable is
    written on its own and compressed only where that pays off."""
    parts = []
    for name, value in fields.items():
        buffer = io.BytesIO()
        try:
            scipy.io.savemat(buffer, {name: value}, do_compression=_compress(value), oned_as="column")
        except scipy.io.matlab.MatWriteError as error:  # a v5 variable cannot hold more than 4 GiB
            raise MatVariableTooLarge(name, error) from error
        parts.append(buffer.getvalue())
    header = bytearray(parts[0][:_HEADER_BYTES] if parts else _empty_header())
    header[:_HEADER_TEXT_BYTES] = _FIXED_HEADER.ljust(_HEADER_TEXT_BYTES, b" ")
    return bytes(header) + b"".join(part[_HEADER_BYTES:] for part in parts)


def _empty_header() -> bytes:
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {})
    return buffer.getvalue()[:_HEADER_BYTES]


def write_mat(path: Path, fields: Mapping[str, Any], force: bool = False) -> bool:
    """Atomically write a v5 .mat file; returns False when the file already held these bytes
    (unless `force`)."""
    try:
        data = mat_v5_bytes(fields)
    except MatVariableTooLarge as error:
        raise ManagerError(path, str(error), "use fewer trials or channels per dataset (v5 holds up to 4 GiB per variable)") from None
    if force:
        write_bytes_atomic(path, data)
        return True
    return write_if_changed(path, data)


def is_mat_v73(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(19) == b"MATLAB 7.3 MAT-file" or h5py.is_hdf5(path)


_READ_FIX = "copy the file again if it is truncated, or save it with save(..., '-v7') or '-v7.3'"


def read_mat(path: Path, fix: str = _READ_FIX) -> dict[str, Any]:
    """Top-level variables of a .mat file, arrays in MATLAB's dimension order. `fix` is the advice
    when it cannot be read: the default suits a user's data file, not one prepare wrote."""
    path = Path(path)
    try:
        if is_mat_v73(path):
            return _read_mat_v73(path)
        raw = scipy.io.loadmat(path, squeeze_me=False, mat_dtype=False)
    except Exception as error:  # scipy's MatReadError, zlib, h5py, ...: any of them means an unreadable file
        raise ManagerError(path, f"cannot read MATLAB file ({describe(error)})", fix) from error
    return {key: _from_v5(value) for key, value in raw.items() if not key.startswith("__")}


def _from_v5(value: Any) -> Any:
    if isinstance(value, np.ndarray) and value.dtype.kind == "U":
        # A char matrix (one label per row, space-padded: MATLAB's char(...) or savemat of a list
        # of str) is its rows; a plain char row is one string.
        rows = value.ravel().tolist()
        return [row.rstrip() for row in rows] if len(rows) > 1 else (rows[0] if rows else "")
    if isinstance(value, np.ndarray) and value.dtype == object:
        return [_from_v5(item) for item in value.ravel(order="F")]
    return value


def _read_mat_v73(path: Path) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    with h5py.File(path, "r") as handle:
        for key, node in handle.items():
            if key.startswith("#") or not isinstance(node, h5py.Dataset):
                continue
            fields[key] = _from_v73(handle, node)
    return fields


def _from_v73(handle: h5py.File, node: h5py.Dataset) -> Any:
    matlab_class = node.attrs.get("MATLAB_class", b"double")
    if isinstance(matlab_class, bytes):
        matlab_class = matlab_class.decode()
    if node.attrs.get("MATLAB_empty", 0):
        return np.zeros((0, 0))
    # HDF5 stores MATLAB's column-major arrays with the dimensions reversed.
    data = np.asarray(node[()]).T
    if matlab_class == "char":
        if data.ndim == 2 and data.shape[0] > 1:  # a char matrix: one space-padded string per row
            return ["".join(chr(code) for code in row).rstrip() for row in data]
        return "".join(chr(code) for code in data.ravel(order="F"))
    if matlab_class == "logical":
        return data.astype(bool)
    if matlab_class == "cell":
        return [_from_v73(handle, handle[ref]) for ref in data.ravel(order="F")]
    return data
