"""JSON bodies: in a large body, tensors' lists of numbers are read straight into arrays
(``wire._NumbersFirst``); what that gives is what orjson's path gives, value for value and
error for error, and anything it cannot read exactly goes to orjson's path."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gradserve.engine import wire
from gradserve.engine.errors import InvalidInput, MXNetError
from gradserve.engine.optable import DTYPES

pytestmark = pytest.mark.skipif(wire.simdjson is None, reason="pysimdjson is not installed")

FALLBACK = wire._NumbersFirst


def _decoded(msg: Any) -> Any:
    """``msg`` with each tensor decoded (or the name of the error decoding it gives)."""
    if isinstance(msg, dict):
        if set(msg) == {"dtype", "shape", "data"}:
            try:
                arr = wire.decode_tensor(msg)
            except MXNetError as e:
                return ("refused", type(e).__name__)
            return ("tensor", arr.dtype.name, arr.shape, arr.tobytes(), arr.flags.writeable)
        return {k: _decoded(v) for k, v in msg.items()}
    if isinstance(msg, list):
        return [_decoded(v) for v in msg]
    return msg


def numbers_first(body: bytes) -> Any:
    return wire._NumbersFirst(body).value()


def test_a_large_upload_is_read_into_an_array_and_decodes_as_orjsons():
    for dtype in sorted(DTYPES - {"bool"}):
        a = (np.random.default_rng(0).standard_normal(300_000) * 100).astype(dtype)
        body = orjson.dumps(
            {"dtype": dtype, "shape": [a.size], "data": a.astype(np.float64) if dtype == "float16" else a},
            option=orjson.OPT_SERIALIZE_NUMPY,
        )
        assert len(body) >= wire.NUMBERS_FIRST_BYTES
        msg = wire.loads(body)
        assert isinstance(msg["data"], np.ndarray), dtype  # the fast path, not orjson's
        assert _decoded(msg) == _decoded(orjson.loads(body)), dtype
        got = wire.decode_tensor(msg)
        assert got.dtype == dtype and np.array_equal(got, a)
        got += 1  # a session's array: writable


@pytest.mark.parametrize(
    "body",
    [
        b'{"dtype": "float32", "shape": [2], "data": [1, "NaN"]}',  # strings for non-finite floats
        b'{"dtype": "float32", "shape": [2], "data": [1, null]}',
        b'{"dtype": "int32", "shape": [2], "data": [1, 2.5]}',  # a float for an integer dtype: exact or refused
        b'{"dtype": "int64", "shape": [1], "data": [123456789012345678901234567890]}',
        b'{"dtype": "float32", "shape": [3], "data": [1, [2], 3]}',  # simdjson flattens lists in lists
        b'{"dtype": "float32", "shape": [3], "data": [1, [], [2, 3]]}',  # (the same count of values)
        b'{"dtype": "float32", "shape": [2, 2], "data": [[1, 2], [3, 4]]}',  # nested lists are orjson's
        b'{"dtype": "float32", "shape": [2], "data": [1, 2], "dtype": "int8"}',  # a key twice: orjson keeps the last
        b'{"dtype": "float32", "shape": [2], "data": [1, 2], "note": "a [ in a string"}',
        b'\xef\xbb\xbf{"dtype": "float32", "shape": [1], "data": [1]}',  # a byte order mark: orjson refuses it
        b'{"dtype": "float32", "shape": [1], "data": [1e400]}',
        b'{"dtype": "bool", "shape": [5000], "data": [' + b", ".join([b"true"] * 5000) + b"]}",
        b"[" + b",".join([b'{"a": 1}'] * (wire._NumbersFirst.MAX_NODES + 1)) + b"]",
    ],
)
def test_what_numbers_first_cannot_read_exactly_goes_to_orjson(body):
    assert numbers_first(body) is FALLBACK
    try:
        expected = _decoded(orjson.loads(body))
    except orjson.JSONDecodeError:
        with pytest.raises(MXNetError):
            wire.loads(body + b" " * wire.NUMBERS_FIRST_BYTES)
        return
    assert _decoded(wire.loads(body + b" " * wire.NUMBERS_FIRST_BYTES)) == expected


def test_tensors_anywhere_in_a_batch_are_read_first():
    a = np.arange(6, dtype=np.float32)
    batch = {
        "seq": 3,
        "ops": [
            {"op": "array", "out": [1], "at": {"value": {"dtype": "float32", "shape": [2, 3], "data": a}}},
            {"op": "array", "out": [2], "at": {"value": {"dtype": "uint8", "shape": [6], "data": a.astype(np.uint8)}}},
            {"op": "add", "in": [1, 2], "out": [3], "at": {}},
        ],
    }
    body = orjson.dumps(batch, option=orjson.OPT_SERIALIZE_NUMPY)
    msg = numbers_first(body)
    assert msg is not FALLBACK and isinstance(msg["ops"][1]["at"]["value"]["data"], np.ndarray)
    assert _decoded(msg) == _decoded(orjson.loads(body))


NUMBER_TEXT = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.from_regex(r"\A-?(0|[1-9][0-9]{0,20})(\.[0-9]{1,20})?([eE][+-]?[0-9]{1,3})?\Z"),
    st.sampled_from(['"NaN"', '"Infinity"', '"-Infinity"', "null", "true", "false", '"1"', "[]", "[1]", "[1, 2]"]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    dtype=st.sampled_from(sorted(DTYPES) + ["float128"]),
    numbers=st.lists(NUMBER_TEXT, max_size=8),
    shape=st.one_of(st.none(), st.lists(st.integers(0, 9), max_size=2)),
    extra=st.sampled_from(["", ', "x": 1', ', "x": "["', ', "data": [1]']),
)
def test_numbers_first_agrees_with_orjson(dtype, numbers, shape, extra):
    dims = [len(numbers)] if shape is None else shape
    tensor = f'{{"dtype": "{dtype}", "shape": {dims}, "data": [{", ".join(numbers)}]{extra}}}'
    body = f'{{"ops": [{{"op": "array", "at": {{"value": {tensor}}}}}]}}'.encode()
    try:
        expected = _decoded(orjson.loads(body))
    except orjson.JSONDecodeError:
        assert numbers_first(body) is FALLBACK
        return
    got = numbers_first(body)
    if got is not FALLBACK:
        assert _decoded(got) == expected, body


def test_a_body_of_base64_or_of_instructions_goes_to_orjson_at_once(monkeypatch):
    """simdjson would copy a long string once more than orjson, and a body of many small
    instructions is walked object by object: neither is read numbers first (its value is the
    same either way)."""
    calls: list[int] = []
    monkeypatch.setattr(wire._NumbersFirst, "value", lambda self: calls.append(1) or FALLBACK)
    raw = np.arange(1 << 19, dtype=np.float32)
    body = orjson.dumps({"dtype": "float32", "shape": [raw.size], "data": wire._b64encode(raw.tobytes())})
    assert len(body) >= wire.NUMBERS_FIRST_BYTES
    assert np.array_equal(wire.decode_tensor(wire.loads(body)), raw) and calls == []
    ops = [{"op": "add", "in": [k, k + 1], "out": [k + 2], "at": {}} for k in range(2000)]
    body = orjson.dumps({"seq": 1, "ops": ops})
    assert len(body) >= wire.NUMBERS_FIRST_BYTES and wire.loads(body)["ops"] == ops and calls == []
    numbers = orjson.dumps({"dtype": "float32", "shape": [raw.size], "data": raw}, option=orjson.OPT_SERIALIZE_NUMPY)
    assert np.array_equal(wire.decode_tensor(wire.loads(numbers)), raw) and calls == [1]


def test_only_where_a_tensor_goes_is_one_read_into_an_array():
    """A ``{dtype, shape, data}`` elsewhere (a note in a program's step, an attribute of an op
    that takes no tensor) stays the plain data orjson gives: a program must be plain data."""
    a = np.arange(300_000, dtype=np.float32)
    note = {"dtype": "float32", "shape": [1], "data": [1.0]}
    step = {"op": "mul_scalar", "in": [-1], "out": [-2], "at": {"scalar": 2.0}, "note": note}
    batch = {
        "ops": [
            {"op": "array", "out": [1], "at": {"value": {"dtype": "float32", "shape": [a.size], "data": a}}},
            {"op": "define", "at": {"id": 7, "nargs": 1, "program": [step], "outputs": [-2]}},
            {"op": "zeros", "out": [2], "at": {"value": note}},
        ]
    }
    body = orjson.dumps(batch, option=orjson.OPT_SERIALIZE_NUMPY)
    msg = wire.loads(body)
    assert isinstance(msg["ops"][0]["at"]["value"]["data"], np.ndarray)
    assert msg["ops"][1] == batch["ops"][1] and msg["ops"][2] == batch["ops"][2]
    reply = {"seq": 1, "values": [{"dtype": "float32", "shape": [a.size], "data": a}, note]}
    got = wire.loads(memoryview(orjson.dumps(reply, option=orjson.OPT_SERIALIZE_NUMPY)))  # (as the client reads)
    assert [isinstance(v["data"], np.ndarray) for v in got["values"]] == [True, True]
    assert np.array_equal(wire.decode_tensor(got["values"][0]), a)


def test_integers_past_2_53_for_float32_are_rounded_once():
    """float32 from an integer goes straight from the integer, as numpy rounds it; through
    float64 some would be rounded twice (an ulp off)."""
    n = 300_000
    body = b'{"dtype": "float32", "shape": [%d], "data": [1152921573326323713, ' % (n + 1)
    body += b", ".join([b"1"] * n) + b"]}"
    assert numbers_first(body) is FALLBACK
    got = wire.decode_tensor(wire.loads(body))
    assert got[0] == np.float32(np.int64(1152921573326323713)) == wire.decode_tensor(orjson.loads(body))[0]


def test_a_body_of_too_many_lists_or_maps_is_refused_before_it_is_all_made(monkeypatch):
    """An empty list is a byte on the wire and some 64 in memory: a large body of them is
    refused as it is decoded (msgpack, the frames header) or before (JSON), not made whole."""
    import struct
    import time

    import msgpack

    monkeypatch.setattr(wire, "MAX_CONTAINERS", 1000)
    monkeypatch.setattr(wire, "COUNTED_BYTES", 1024)
    n = 100_000
    bomb = b"\x81\xa3ops\xdd" + struct.pack(">I", n) + b"\x90" * n
    made: list[int] = []
    real = wire._counting

    def counting() -> dict:
        hooks = real()
        count = hooks["list_hook"]

        def counted(x: Any) -> Any:
            made.append(1)
            return count(x)

        return {"list_hook": counted, "object_hook": counted}

    monkeypatch.setattr(wire, "_counting", counting)
    with pytest.raises(MXNetError, match="more than 1000 lists and maps"):
        wire.unpack(bomb)
    assert len(made) == 1001  # stopped at once
    head = msgpack.packb({"ops": [[]] * 2000})
    with pytest.raises(MXNetError, match="more than 1000 lists and maps"):
        wire.unpack_frames(struct.pack("<I", len(head)) + head)
    start = time.perf_counter()
    with pytest.raises(MXNetError, match="more than 1000 lists and maps"):
        wire.loads(b'{"ops": [' + b"[], " * 2000 + b"[]]}")
    assert time.perf_counter() - start < 1
    # under the bound, or small: decoded as ever
    rows = {"dtype": "float32", "shape": [500, 2], "data": [[1, 2]] * 500}
    assert wire.loads(orjson.dumps({"ops": [{"op": "array", "out": [1], "at": {"value": rows}}]}))["ops"]
    assert wire.unpack(msgpack.packb({"ops": [[]] * 900}))["ops"] == [[]] * 900


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8"])
def test_a_json_list_is_written_in_little_more_than_its_own_size(dtype):
    """A reply's list of numbers, with a NaN or not: no Python object per element (a NaN made
    the whole array a token per element, 37 times its size; float16 a Python float each)."""
    import tracemalloc

    a = (np.arange(1 << 20) % 100).astype(dtype)
    if dtype != "int8":
        a[5] = np.nan
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        text = orjson.dumps(wire.encode_tensor(a, "list"), option=wire._ORJSON_OPTS)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak < 4 * len(text) + 8 * a.size, (peak, len(text))
    data = orjson.loads(text)["data"]
    assert len(data) == a.size and data[4] == 4 and (data[5] == "NaN" if dtype != "int8" else data[5] == 5)
    finite = np.where(np.isfinite(a), a, 0) if dtype != "int8" else a
    assert np.array_equal(np.array([0 if v == "NaN" else v for v in data], dtype), finite)


def test_nested_tensor_data_must_be_nested_as_its_shape():
    """A client's slip in its shape or its nesting was taken whenever the counts agreed."""
    ok = wire.decode_tensor({"dtype": "float32", "shape": [2, 2], "data": [[1, 2], [3, 4]]})
    assert ok.tolist() == [[1, 2], [3, 4]]
    assert wire.decode_tensor({"dtype": "int32", "shape": [2, 2], "data": [1, 2, 3, 4]}).shape == (2, 2)  # (flat)
    empty = wire.decode_tensor({"dtype": "float32", "shape": [2, 0, 3], "data": np.zeros((2, 0, 3)).tolist()})
    assert empty.shape == (2, 0, 3)  # ([[], []]: nothing says the axes past the empty one)
    for shape, data in [([2, 2], [[1], [2], [3], [4]]), ([4], [[1, 2], [3, 4]]), ([2, 2, 1], [[1, 2], [3, 4]])]:
        with pytest.raises(InvalidInput, match=re.escape(f"not as its shape {shape}")):
            wire.decode_tensor({"dtype": "float32", "shape": shape, "data": data})
