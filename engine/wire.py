"""Tensors and messages on the wire: JSON and msgpack, never pickle.

A tensor is ``{"dtype": str, "shape": [int], "data": ...}`` with row-major
``data``: a flat list of numbers in JSON, raw little-endian bytes in msgpack.
"""

from __future__ import annotations

import binascii
import importlib
import struct
import sys
from typing import Any

import msgpack
import numpy as np
import orjson

from .errors import InvalidInput, QuotaExceeded, echo
from .optable import DTYPES, MAX_NDIM, NON_FINITE, PARSERS, dtype_name, prod


def _std_b64decode(s: str) -> bytearray:
    return bytearray(binascii.a2b_base64(s, strict_mode=True))  # checks in C: b64decode's validate is a regex


def _std_b64encode(b: Any) -> str:
    return binascii.b2a_base64(b, newline=False).decode("ascii")


try:  # SIMD base64 (the server extra installs it): 4 to 6 times the standard library's speed
    import pybase64
except ImportError:  # pragma: no cover - where pybase64 is not installed
    _b64decode, _b64encode = _std_b64decode, _std_b64encode
else:

    def _b64decode(s: str) -> bytearray:
        return pybase64.b64decode_as_bytearray(s, validate=True)

    def _b64encode(b: Any) -> str:
        return pybase64.b64encode_as_string(b)


def _optional(name: str) -> Any:
    """A module, or None where it is not installed (typed so for mypy either way: mypyc's
    build type-checks these sources before the server extra is installed)."""
    try:
        return importlib.import_module(name)
    except ImportError:  # pragma: no cover - where it is not installed
        return None


simdjson: Any = _optional("simdjson")  # SIMD JSON (the server extra installs it): number lists straight into arrays


JSON = "application/json"
MSGPACK = "application/msgpack"
FRAMES = "application/vnd.gradserve.frames"
"""msgpack with the tensors' bytes out of band: ``<u4 header length> <msgpack header>
<buffers>``, each tensor's ``data`` an ext (code 1) holding ``<u8 offset> <u8 length>``
into the buffers, each buffer starting on a 64-byte boundary. Both sides read and
write tensors straight from and into numpy memory, without a bytes copy in between."""

_FRAME_EXT = 1
ALIGN = 64
"""Where each tensor's frame starts: on a multiple of this (the client counts a batch's bytes by it)."""
_HEAD = struct.Struct("<I")
_REF = struct.Struct("<QQ")


def decode_tensor(obj: Any, max_bytes: int | None = None) -> np.ndarray:
    """A numpy array from a wire tensor (or an array handed over in-process)."""
    if isinstance(obj, np.ndarray):
        return obj
    if not isinstance(obj, dict):
        raise InvalidInput(f"a tensor must be an object with dtype, shape and data, got {type(obj).__name__}")
    try:
        dtype, shape, data = obj["dtype"], obj["shape"], obj["data"]
    except KeyError as e:
        raise InvalidInput(f"tensor is missing {echo(e.args[0])}") from None
    if len(obj) != 3:
        extra = sorted(str(k) for k in obj if k not in ("dtype", "shape", "data"))
        raise InvalidInput(f"tensor has unknown fields {extra}: a tensor is {{dtype, shape, data}}")
    if type(dtype) is not str or dtype not in DTYPES:
        raise InvalidInput(f"tensor dtype {echo(dtype)} is not one of {sorted(DTYPES)}")
    if (
        not isinstance(shape, (list, tuple))
        or len(shape) > MAX_NDIM
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise InvalidInput(f"tensor shape {echo(shape)} must be a list of at most {MAX_NDIM} non-negative ints")
    n = prod(tuple(shape))
    dt = np.dtype(dtype).newbyteorder("<")
    if max_bytes is not None and n * dt.itemsize > max_bytes:
        raise QuotaExceeded(f"tensor of {n * dt.itemsize} bytes is over the limit of {max_bytes}")
    if isinstance(data, str):  # base64 of the raw bytes: large tensors in JSON
        try:
            data = memoryview(_b64decode(data))  # writable and ours alone: the array is a view of it
        except (binascii.Error, ValueError):
            raise InvalidInput("tensor data given as a string must be base64 of its little-endian bytes") from None
    if isinstance(data, (bytes, bytearray, memoryview)):
        if len(data) != n * dt.itemsize:
            raise InvalidInput(
                f"tensor data has {len(data)} bytes; shape {list(shape)} of {dtype} needs {n * dt.itemsize}"
            )
        arr = np.frombuffer(data, dtype=dt)
        if isinstance(data, memoryview) and not data.readonly and sys.byteorder == "little":
            return arr.reshape(shape)  # a view of a receive buffer that nothing else uses: no copy
        return arr.astype(dtype).reshape(shape)
    if isinstance(data, np.ndarray):  # a list of numbers that ``loads`` read straight into an array
        arr = _cast(data, dt, data)
        if arr.size != n:
            raise InvalidInput(f"tensor data has {arr.size} values; shape {list(shape)} needs {n}")
        return arr.reshape(shape)
    if isinstance(data, (list, tuple)):
        arr = _from_numbers(data, dt)
        if arr.size != n:
            raise InvalidInput(f"tensor data has {arr.size} values; shape {list(shape)} needs {n}")
        # (a client's mistake in one or the other; no data says nothing of the axes past an empty one)
        if arr.ndim > 1 and arr.size and arr.shape != tuple(shape):
            raise InvalidInput(
                f"tensor data is nested as {list(arr.shape)}, not as its shape {list(shape)} (send it flat, or nested "
                "as the shape)"
            )
        return arr.reshape(shape)
    if isinstance(data, (int, float)) and n == 1:
        return np.array(data, dtype=dtype).reshape(shape)
    raise InvalidInput("tensor data must be a flat list of numbers (JSON) or bytes (msgpack)")


def _from_numbers(data: list | tuple, dt: np.dtype) -> np.ndarray:
    """A list of numbers (nested lists too: row-major) as an array of ``dt``; for a float
    dtype the strings of ``NON_FINITE`` too. Anything else (null, another string) is refused,
    and so is an integer out of the dtype's range."""
    try:
        arr = np.array(data)  # numbers alone give a numeric array; null or a string, another kind
    except (TypeError, ValueError, OverflowError) as e:
        raise InvalidInput(f"tensor data is not a list of numbers: {e}") from None
    if arr.dtype.kind not in "biuf":
        flat = _flat(data)  # (the values as sent: numpy made numbers among strings strings)
        if dt.kind == "f" and all(type(v) in (int, float, bool) or (type(v) is str and v in NON_FINITE) for v in flat):
            with np.errstate(over="ignore"):
                arr = np.array([NON_FINITE[v] if type(v) is str else v for v in flat], dtype=dt).reshape(arr.shape)
        else:
            bad = [v for v in flat if type(v) not in (int, float, bool)][:1]
            if not bad:  # integers past 64 bits (in range of uint64, say)
                try:
                    return np.array(data, dtype=dt)
                except (OverflowError, ValueError):
                    raise InvalidInput(f"tensor data holds values out of the range of {dt.name}") from None
            allowed = f" (or {', '.join(map(repr, NON_FINITE))})" if dt.kind == "f" else ""
            raise InvalidInput(f"tensor data holds {echo(bad[0])}: its values are numbers{allowed}")
    return _cast(arr, dt, data)


def _cast(arr: np.ndarray, dt: np.dtype, data: Any) -> np.ndarray:
    """The numbers of ``arr`` (as numpy read them from ``data``) as ``dt``, each exactly or refused."""
    if dt.kind in "iu" and arr.size:
        if arr.dtype.kind in "iu":
            info = np.iinfo(dt)
            if arr.min() < info.min or arr.max() > info.max:
                raise InvalidInput(f"tensor data holds values out of the range of {dt.name}")
        elif arr.dtype.kind == "f":  # floats among them: each value converted on its own, exactly
            try:
                return np.array(data, dtype=dt)
            except (OverflowError, ValueError) as e:
                raise InvalidInput(f"tensor data holds values {dt.name} cannot hold: {e}") from None
    if dt.kind == "b" and arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise InvalidInput("tensor data holds values that are not finite for a bool tensor")
    with np.errstate(over="ignore"):  # a float past the dtype's range is its infinity, as in numpy and MXNet
        return arr.astype(dt, copy=False)


def _flat(data: Any) -> list:
    out: list = []
    stack = [iter(data)]
    while stack:
        for v in stack[-1]:
            if type(v) in (list, tuple):
                stack.append(iter(v))
                break
            out.append(v)
        else:
            stack.pop()
    return out


def _json_list(arr: np.ndarray) -> Any:
    """An array's values as a JSON list, as orjson writes them (float32 shortest, float16 as
    the float64 it is), a non-finite float as the strings of ``NON_FINITE``. A chunk at a time:
    orjson reserves about 32 bytes an element as it writes (a token per element of the whole
    array, as this once split it, took 37 times the array's size)."""
    flat = np.ascontiguousarray(arr).ravel()
    if flat.dtype == np.float16:  # (orjson writes no float16 arrays)
        flat = flat.astype(np.float64)
    floats = flat.dtype.kind == "f"
    words = {"nan": b'"NaN"', "inf": b'"Infinity"', "-inf": b'"-Infinity"'}
    parts: list[bytes] = []
    for lo in range(0, flat.size, _LIST_CHUNK):
        part = flat[lo : lo + _LIST_CHUNK]
        finite = np.isfinite(part) if floats else None
        if finite is None or finite.all():
            parts.append(orjson.dumps(part, option=_ORJSON_OPTS)[1:-1])
            continue
        tokens = orjson.dumps(np.where(finite, part, 0), option=_ORJSON_OPTS)[1:-1].split(b",")
        for i in np.flatnonzero(~finite).tolist():
            tokens[i] = words[repr(float(part[i]))]
        parts.append(b",".join(tokens))
    return orjson.Fragment(b"[" + b",".join(parts) + b"]")


_LIST_CHUNK = 1 << 16


TENSOR_FORMS = ("bytes", "list", "base64")


def encode_tensor(arr: np.ndarray, form: str) -> dict[str, Any]:
    """A wire tensor. ``form`` "bytes": raw little-endian bytes for msgpack (a
    view of the array's memory, read without a copy); "list": the array itself,
    which orjson writes as a flat list of numbers; "base64": those bytes as a
    base64 string, the fast way to carry a large tensor in JSON."""
    arr = np.asarray(arr)
    if form == "bytes":
        data: Any = _raw(arr)
    elif form == "base64":
        data = _b64encode(_raw(arr))
    elif arr.size > _LIST_CHUNK or arr.dtype.kind == "f":  # (a float may be NaN or float16)
        data = _json_list(arr)
    else:
        data = np.ascontiguousarray(arr).ravel()  # (orjson writes it)
    return {"dtype": dtype_name(arr.dtype), "shape": list(arr.shape), "data": data}


def _raw(arr: np.ndarray) -> memoryview:
    """The array's bytes, little-endian and row-major, as a flat byte view (a copy only when needed)."""
    arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
    return arr.reshape(-1).view(np.uint8).data if arr.size else memoryview(b"")


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return encode_tensor(obj, "bytes")
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    if isinstance(obj, tuple):
        return list(obj)
    return _unencodable(obj)


def _unencodable(obj: Any) -> Any:
    if type(obj) is int:  # (msgpack hands the default what its 64 bits cannot hold)
        raise OverflowError(f"the integer {obj} is outside what a message carries (-2**63 to 2**64 - 1)")
    raise TypeError(f"cannot encode {type(obj).__name__}")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return encode_tensor(obj, "list")
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    return _unencodable(obj)


def pack(msg: Any) -> bytes:
    """msgpack bytes; numpy arrays become binary tensors."""
    return msgpack.packb(msg, default=_default, use_bin_type=True)


MAX_CONTAINERS = 1 << 20
"""The lists and maps a body may hold (a batch of 100,000 instructions has about 400,000): an
empty one is a byte on the wire and some 64 in memory, so a body of nothing else would take
64 times its size to decode (32 MiB of them took 2.4 GiB and held the server for seconds)."""
COUNTED_BYTES = 1 << 20
"""A body this large or larger has its lists and maps counted as it is decoded."""


def _too_many_containers() -> InvalidInput:
    return InvalidInput(
        f"body holds more than {MAX_CONTAINERS} lists and maps (send a large array as one flat "
        "list, bytes or base64, not a list per row)"
    )


def _counting() -> dict[str, Any]:
    """msgpack hooks that refuse a body past ``MAX_CONTAINERS`` lists and maps, as they are made."""
    made = 0

    def count(x: Any) -> Any:
        nonlocal made
        made += 1
        if made > MAX_CONTAINERS:
            raise _too_many_containers()
        return x

    return {"list_hook": count, "object_hook": count}


def _not_msgpack(what: str, e: Exception) -> InvalidInput:
    """The refusal of bytes msgpack could not decode, saying why (two of its errors say nothing)."""
    if isinstance(e, msgpack.StackError):
        why = "nested too deeply"
    elif isinstance(e, msgpack.FormatError):
        why = "a byte that starts no msgpack value (0xc1, never used)"
    else:
        why = str(e) or type(e).__name__
    return InvalidInput(f"{what} is not valid msgpack: {why}")


def unpack(data: bytes) -> Any:
    hooks = _counting() if len(data) >= COUNTED_BYTES else {}
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False, **hooks)
    except (ValueError, TypeError) as e:  # (TypeError: a map key that is itself a list or a map)
        raise _not_msgpack("body", e) from None


_ORJSON_OPTS = orjson.OPT_SERIALIZE_NUMPY


def dumps(msg: Any) -> bytes:
    """JSON bytes; numpy arrays become list tensors (flat arrays are written by orjson itself)."""
    return orjson.dumps(msg, default=_json_default, option=_ORJSON_OPTS)


def loads(data: bytes | bytearray | memoryview) -> Any:
    """A JSON body's value. In a large body, a tensor's flat list of numbers becomes an
    array at once (``_NumbersFirst``) instead of a Python float or int per number."""
    if len(data) >= COUNTED_BYTES:  # (a bracket inside a string counts too: at worst refused sooner)
        opened = np.frombuffer(data, np.uint8)
        if np.count_nonzero(opened == ord("[")) + np.count_nonzero(opened == ord("{")) > MAX_CONTAINERS:
            raise _too_many_containers()
    if simdjson is not None and len(data) >= NUMBERS_FIRST_BYTES and _mostly_numbers(data):
        got = _NumbersFirst(data if isinstance(data, (bytes, bytearray)) else bytes(data)).value()
        if got is not _NumbersFirst:
            return got
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise InvalidInput(f"body is not valid JSON: {e}") from None


NUMBERS_FIRST_BYTES = 16 << 10
"""A JSON body this large or larger that is mostly numbers is read by ``_NumbersFirst``: from
about a thousand float32 (11 KB) it takes half the time of orjson's path, from ten thousand
two fifths; for a hundred, half as much again."""


def _mostly_numbers(data: bytes | bytearray | memoryview) -> bool:
    """Whether a body looks like lists of numbers at a quarter, half or three quarters of its
    length: 1 KiB of a comma every few bytes and no quote or colon. A body that is mostly a
    base64 string (simdjson would copy it once more, for nothing) or mostly instructions
    (walked object by object in Python: orjson is quicker) is orjson's."""
    n = len(data)
    for k in (1, 2, 3):
        window = bytes(data[k * n // 4 : k * n // 4 + 1024])
        if window.count(b",") >= 32 and b'"' not in window and b":" not in window:
            return True
    return False


class _NumbersFirst:
    """A JSON body read by simdjson, the flat list of numbers of each tensor where a tensor
    goes (``ROLES``) straight into an array of float64, int64 or uint64 as its dtype's kind
    asks: 0.75 s for 16 M float32 against 1.9 s for orjson's floats made into an array.

    Anything else goes back to orjson (``value`` returns the class itself): a list of
    numbers that holds anything but numbers of that kind (``"NaN"``, null, a float for an
    integer dtype, an integer past 64 bits), one with lists in it (simdjson would flatten
    them; orjson's path refuses a ragged one), numbers past 2**53 for a float dtype narrower
    than float64 (an integer would be rounded twice, through float64), a body simdjson
    refuses or that starts with a byte order mark (simdjson takes it, orjson refuses it), an
    object with a key twice, more than ``MAX_NODES`` objects and lists, or a list that long
    outside a tensor's numbers.

    Lists in a tensor's data are found by counting: each list of the body is one ``[``
    outside its strings, so the body has exactly as many as the lists walked (a string that
    holds a ``[`` sends the body back to orjson)."""

    MAX_NODES = 4096
    ROLES: dict[str, dict[str, str]] = {
        # where a tensor may be, by the role of the object or list that holds it: the body (an
        # upload), the values of a reply, an op's attributes (``at``: its "value") in a batch
        # (for the ops whose value is a tensor) or in the one op of the REST op route
        "body": {"at": "attrs", "ops": "ops", "values": "tensors"},
        "attrs": {"value": "tensor"},
        "op": {"at": "attrs"},
    }
    TENSOR_VALUE_OPS = frozenset({"array"})

    def __init__(self, data: bytes | bytearray) -> None:
        self.data = data
        self.lists = 0
        self.nodes = 0

    def value(self) -> Any:
        if self.data.startswith(b"\xef\xbb\xbf"):
            return _NumbersFirst
        try:
            doc = simdjson.Parser().parse(bytes(self.data) if not isinstance(self.data, bytes) else self.data)
            out = self._walk(doc, "body")
        except (_Fallback, ValueError, TypeError, RuntimeError, KeyError):
            return _NumbersFirst
        if self.data.count(b"[") != self.lists:
            return _NumbersFirst
        return out

    def _walk(self, v: Any, role: str = "") -> Any:
        if not isinstance(v, (simdjson.Object, simdjson.Array)):
            if type(v) is str and "[" in v:
                raise _Fallback
            return v
        self.nodes += 1
        if self.nodes > self.MAX_NODES:
            raise _Fallback
        if isinstance(v, simdjson.Array):
            if len(v) > self.MAX_NODES:  # (a long list of anything but a tensor's numbers: orjson is quicker)
                raise _Fallback
            self.lists += 1
            inner = "tensor" if role == "tensors" else "op" if role == "ops" else ""
            return [self._walk(x, inner) for x in v]
        keys = list(v.keys())
        out: dict[str, Any] = {k: v[k] for k in keys}
        if len(out) != len(keys) or any("[" in k for k in keys):  # (a key twice: simdjson's first, orjson's last)
            raise _Fallback
        if role in ("body", "tensor") and len(out) == 3 and "shape" in out:
            data, dtype = out.get("data"), out.get("dtype")
            if isinstance(data, simdjson.Array) and dtype in _NUMBER_BUFFERS:
                return self._tensor(out, data, dtype)
        roles = self.ROLES.get(role, {})
        if role == "op" and out.get("op") not in self.TENSOR_VALUE_OPS:
            roles = {}
        return {k: self._walk(x, roles.get(k, "")) for k, x in out.items()}

    def _tensor(self, out: dict[str, Any], data: Any, dtype: str) -> dict[str, Any]:
        self.lists += 1
        for k in ("dtype", "shape"):
            out[k] = self._walk(out[k])
        code = _NUMBER_BUFFERS[dtype]
        arr = np.frombuffer(data.as_buffer(of_type=code), dtype=_BUFFER_DTYPES[code])
        if code == "d" and dtype != "float64" and arr.size and np.abs(arr).max() >= 2.0**53:
            raise _Fallback
        out["data"] = arr
        return out


class _Fallback(Exception):
    pass


_BUFFER_DTYPES = {"d": np.float64, "i": np.int64, "u": np.uint64}
_NUMBER_BUFFERS: dict[str, Any] = {
    name: {"f": "d", "i": "i", "u": "u"}[np.dtype(name).kind] for name in DTYPES if np.dtype(name).kind in "fiu"
}


# -- frames: msgpack with out-of-band tensor bytes -------------------------------


def pack_frames(msg: Any) -> tuple[list[Any], int]:
    """The frames of ``msg`` (header first, then buffers and padding) and their total length.

    numpy arrays anywhere in ``msg`` travel as tensors whose bytes are views of
    the arrays' own memory; nothing is copied until the socket reads them.
    """
    bufs: list[memoryview] = []
    offset = 0

    def default(obj: Any) -> Any:
        nonlocal offset
        if isinstance(obj, np.ndarray):
            raw = _raw(obj)
            start = -(-offset // ALIGN) * ALIGN
            bufs.append(raw)
            offset = start + raw.nbytes
            return {
                "dtype": dtype_name(obj.dtype),
                "shape": list(obj.shape),
                "data": msgpack.ExtType(_FRAME_EXT, _REF.pack(start, raw.nbytes)),
            }
        return _default(obj)

    head = msgpack.packb(msg, default=default, use_bin_type=True)
    first = -(-(_HEAD.size + len(head)) // ALIGN) * ALIGN
    parts: list[Any] = [_HEAD.pack(len(head)) + head + bytes(first - _HEAD.size - len(head))]
    pos = 0
    for raw in bufs:
        pad = -pos % ALIGN
        if pad:
            parts.append(bytes(pad))
        parts.append(raw)
        pos += pad + raw.nbytes
    return parts, first + pos


def frames_header_size(body: bytes | bytearray | memoryview) -> int:
    """The length of a frames body's msgpack header (what decoding it costs), 0 if it has none."""
    return _HEAD.unpack_from(body)[0] if len(body) >= _HEAD.size else 0


def unpack_frames(body: bytes | bytearray | memoryview) -> Any:
    """The message of a frames body; tensor data become views of ``body`` (writable
    when ``body`` is a bytearray, so large arrays are used in place)."""
    view = memoryview(body)
    if len(view) < _HEAD.size:
        raise InvalidInput("frames body is shorter than its header length")
    (n,) = _HEAD.unpack_from(view)
    if _HEAD.size + n > len(view):
        raise InvalidInput(f"frames header of {n} bytes is longer than the body")
    base = -(-(_HEAD.size + n) // ALIGN) * ALIGN
    size = len(view)
    refs: list[tuple[int, int]] = []

    def ext_hook(code: int, data: bytes) -> Any:
        if code != _FRAME_EXT or len(data) != _REF.size:
            raise InvalidInput(f"unknown msgpack extension {code}")
        off, length = _REF.unpack(data)
        if base + off + length > size:
            raise InvalidInput("a tensor's bytes run past the end of the body")
        if length:
            refs.append((off, length))
        part = view[base + off : base + off + length]
        # a view keeps the whole body alive: only for a tensor that is most of it
        return part if 2 * length >= size else bytes(part)

    hooks = _counting() if n >= COUNTED_BYTES else {}
    try:
        head = view[_HEAD.size : _HEAD.size + n]
        msg = msgpack.unpackb(head, raw=False, strict_map_key=False, ext_hook=ext_hook, **hooks)
    except (ValueError, TypeError) as e:
        raise _not_msgpack("frames header", e) from None
    if len(refs) > 1:  # tensors used in place must not share bytes (one's update would change the other)
        refs.sort()
        for (off, length), (nxt, _) in zip(refs, refs[1:]):
            if off + length > nxt:
                raise InvalidInput(
                    f"two tensors' bytes overlap (at offsets {off} and {nxt}): each has bytes of its own"
                )
    return msg


PARSERS["tensor"] = decode_tensor
