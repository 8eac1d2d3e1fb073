"""Tensors and messages on the wire: JSON and msgpack, never pickle.

A tensor is ``{"dtype": str, "shape": [int], "data": ...}`` with row-major
``data``: a flat list of numbers in JSON, raw little-endian bytes in msgpack.
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np
import orjson

from .errors import InvalidInput, QuotaExceeded
from .optable import DTYPES, MAX_NDIM, PARSERS, prod

JSON = "application/json"
MSGPACK = "application/msgpack"


def decode_tensor(obj: Any, max_bytes: int | None = None) -> np.ndarray:
    """A numpy array from a wire tensor (or an array handed over in-process)."""
    if isinstance(obj, np.ndarray):
        return obj
    if not isinstance(obj, dict):
        raise InvalidInput(f"a tensor must be an object with dtype, shape and data, got {type(obj).__name__}")
    try:
        dtype, shape, data = obj["dtype"], obj["shape"], obj["data"]
    except KeyError as e:
        raise InvalidInput(f"tensor is missing {e.args[0]!r}") from None
    if dtype not in DTYPES:
        raise InvalidInput(f"tensor dtype {dtype!r} is not one of {sorted(DTYPES)}")
    if (
        not isinstance(shape, (list, tuple))
        or len(shape) > MAX_NDIM
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise InvalidInput(f"tensor shape {shape!r} must be a list of at most {MAX_NDIM} non-negative ints")
    n = prod(tuple(shape))
    dt = np.dtype(dtype).newbyteorder("<")
    if max_bytes is not None and n * dt.itemsize > max_bytes:
        raise QuotaExceeded(f"tensor of {n * dt.itemsize} bytes is over the limit of {max_bytes}")
    if isinstance(data, (bytes, bytearray, memoryview)):
        if len(data) != n * dt.itemsize:
            raise InvalidInput(
                f"tensor data has {len(data)} bytes; shape {list(shape)} of {dtype} needs {n * dt.itemsize}"
            )
        return np.frombuffer(data, dtype=dt).astype(dtype).reshape(shape)
    if isinstance(data, (list, tuple)):
        try:
            arr = np.array(data, dtype=dtype)
        except (TypeError, ValueError) as e:
            raise InvalidInput(f"tensor data is not a list of numbers: {e}") from None
        if arr.size != n:
            raise InvalidInput(f"tensor data has {arr.size} values; shape {list(shape)} needs {n}")
        return arr.reshape(shape)
    if isinstance(data, (int, float)) and n == 1:
        return np.array(data, dtype=dtype).reshape(shape)
    raise InvalidInput("tensor data must be a flat list of numbers (JSON) or bytes (msgpack)")


def encode_tensor(arr: np.ndarray, binary: bool) -> dict[str, Any]:
    """A wire tensor: raw little-endian bytes for msgpack, a flat list for JSON."""
    arr = np.asarray(arr)
    if binary:
        data: Any = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
    else:
        data = arr.ravel().tolist()
    return {"dtype": arr.dtype.name, "shape": list(arr.shape), "data": data}


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return encode_tensor(obj, binary=True)
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"cannot encode {type(obj).__name__}")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return encode_tensor(obj, binary=False)
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    raise TypeError(f"cannot encode {type(obj).__name__}")


def pack(msg: Any) -> bytes:
    """msgpack bytes; numpy arrays become binary tensors."""
    return msgpack.packb(msg, default=_default, use_bin_type=True)


def unpack(data: bytes) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as e:
        raise InvalidInput(f"body is not valid msgpack: {e}") from None


def dumps(msg: Any) -> bytes:
    """JSON bytes; numpy arrays become list tensors."""
    return orjson.dumps(msg, default=_json_default)


def loads(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise InvalidInput(f"body is not valid JSON: {e}") from None


PARSERS["tensor"] = decode_tensor
