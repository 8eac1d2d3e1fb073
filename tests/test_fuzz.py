"""Arbitrary batches, well-formed or not, never crash the engine or the server:
each gets a reply or a 4xx error that says what was wrong, and a failing batch
leaves nothing of itself behind after the failing instruction."""

from __future__ import annotations

import json
import math

import httpx
import msgpack
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gradserve.engine.errors import ERRORS, MXNetError
from gradserve.engine.optable import OPS
from gradserve.engine.session import COMMANDS, Limits, Session

NAMES = sorted({op.name for op in OPS.ops()} | set(COMMANDS)) + ["", "nope", "__class__"]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=8,
)
ATTR_NAMES = st.sampled_from(
    [
        "shape",
        "axis",
        "scalar",
        "key",
        "dtype",
        "value",
        "start",
        "stop",
        "step",
        "k",
        "depth",
        "kernel",
        "num_hidden",
        "reps",
        "axes",
        "begin",
        "end",
        "grad_req",
        "head_grads",
        "variables",
        "fn",
        "lr",
        "p",
        "input_dim",
        "output_dim",
        "exclude",
        "source",
        "destination",
        "size",
        "mode",
        "eps",
        "axis1",
        "axis2",
    ]
)
HANDLES = st.one_of(st.integers(-2, 6), st.text(max_size=2), st.none(), st.floats(), st.booleans())


@st.composite
def instruction(draw):
    ins = {"op": draw(st.one_of(st.sampled_from(NAMES), VALUES))}  # (VALUES: lists and maps too)
    if draw(st.booleans()):
        ins["in"] = draw(st.one_of(st.lists(HANDLES, max_size=4), HANDLES))
    if draw(st.booleans()):
        ins["out"] = draw(st.one_of(st.lists(HANDLES, max_size=2), HANDLES))
    if draw(st.booleans()):
        ins["at"] = draw(st.one_of(st.dictionaries(ATTR_NAMES, VALUES, max_size=3), VALUES))
    if draw(st.booleans()):
        ins["mode"] = draw(st.one_of(st.integers(-1, 4), SCALARS))
    return ins if draw(st.integers(0, 20)) else draw(VALUES)


SETUP = [
    {"op": "array", "out": [1], "at": {"value": np.arange(6, dtype=np.float32).reshape(2, 3)}},
    {"op": "attach_grad", "in": [1]},
    {"op": "ones", "out": [2], "at": {"shape": [3]}},
]


def _run_sliced(s: Session, batch: dict) -> dict:
    """A batch as a server runs it: its start in a slice with a deadline, the rest after."""
    import time

    from gradserve.engine.session import BatchRun

    job = s.begin(batch)
    assert isinstance(job, BatchRun)
    if not job.run(deadline=time.perf_counter() + 60):
        job.run()
    return job.finish()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(instruction(), min_size=1, max_size=6), st.booleans())
def test_the_engine_answers_any_batch_with_a_reply_or_an_mxnet_error(ops, sliced):
    s = Session("fuzz", limits=Limits(max_array_bytes=1 << 20, max_session_bytes=1 << 22))
    s.run_batch({"seq": 1, "ops": SETUP})
    before = set(s.arrays)
    try:
        reply = _run_sliced(s, {"seq": 2, "ops": ops}) if sliced else s.run_batch({"seq": 2, "ops": ops})
    except MXNetError:
        assert set(s.arrays) == before  # refused whole: nothing ran
        return
    err = reply.get("error")
    if err is not None:
        assert err["kind"] in ERRORS and err["kind"] != "InternalError" and err["message"], err
        made_after = set()
        for ins in ops[err["index"] :]:
            out = ins.get("out") if isinstance(ins, dict) else None
            if isinstance(out, list):
                made_after |= {h for h in out if isinstance(h, int) and not isinstance(h, bool)}
        assert not (made_after - before) & set(s.arrays)


def test_non_finite_and_huge_numbers_are_clear_errors():
    s = Session("edge", limits=Limits(max_array_bytes=1 << 20))
    for at in ({"start": 0.0, "stop": math.inf}, {"start": math.nan}, {"start": 0.0, "stop": 1e300, "step": 1e-300}):
        reply = s.run_batch({"ops": [{"op": "arange", "out": [1], "at": at}]})
        assert reply["error"]["kind"] in ("InvalidInput", "QuotaExceeded"), reply
    reply = s.run_batch({"ops": [{"op": "zeros", "out": [1], "at": {"shape": [10**12, 10**12]}}]})
    assert reply["error"]["kind"] == "QuotaExceeded"


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(st.lists(instruction(), min_size=1, max_size=4), st.booleans())
def test_the_server_answers_any_batch_with_json_or_a_4xx(live_server, ops, as_msgpack):
    with httpx.Client(base_url=live_server.url) as http:
        sid = http.post("/v1/sessions").json()["id"]
        try:
            if as_msgpack:
                try:
                    body = msgpack.packb({"ops": ops})
                except (TypeError, ValueError, OverflowError):
                    return  # not encodable: nothing to send
                r = http.post(
                    f"/v1/sessions/{sid}/batch", content=body, headers={"content-type": "application/msgpack"}
                )
            else:
                body = json.dumps({"ops": ops}).encode()  # NaN and Infinity too, which JSON parsers refuse
                r = http.post(f"/v1/sessions/{sid}/batch", content=body, headers={"content-type": "application/json"})
        finally:
            http.delete(f"/v1/sessions/{sid}")
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        body = r.json()  # replies are JSON unless the request accepts msgpack
        assert body["error"]["kind"] in ERRORS


@st.composite
def plausible(draw):
    """A real op on real handles with its own attribute names, given odd values."""
    op = draw(st.sampled_from(OPS.ops()))
    n = draw(st.integers(0, 3))
    at = {}
    for a in op.attrs:
        if draw(st.booleans()):
            at[a.name] = draw(st.one_of(VALUES, st.integers(-3, 5), st.lists(st.integers(-3, 5), max_size=4)))
    return {
        "op": op.name,
        "in": draw(st.lists(st.sampled_from([1, 2, 3]), min_size=n, max_size=n)),
        "out": [draw(st.integers(10, 12))],
        "at": at,
        "mode": draw(st.sampled_from([0, 1, 2, 3])),
    }


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(plausible(), min_size=1, max_size=4))
def test_real_ops_with_odd_attributes_fail_cleanly(ops):
    s = Session("fuzz", limits=Limits(max_array_bytes=1 << 20, max_session_bytes=1 << 22))
    s.run_batch({"seq": 1, "ops": SETUP + [{"op": "arange", "out": [3], "at": {"start": 4}}]})
    reply = s.run_batch({"seq": 2, "ops": ops})
    err = reply.get("error")
    if err is not None:
        assert err["kind"] in ERRORS and err["kind"] != "InternalError" and err["message"], err


@st.composite
def plausible_batch(draw):
    """Ops on the SETUP arrays and on what earlier ops made, some of them wrong."""
    ops: list = []
    live = [1, 2]
    for h in range(10, 10 + draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["add_scalar", "relu", "mul", "sum", "bad", "free", "update"]))
        a = draw(st.sampled_from(live))
        if kind == "add_scalar":
            ops.append({"op": kind, "in": [a], "out": [h], "at": {"scalar": draw(st.floats(-3, 3))}, "mode": 3})
        elif kind in ("relu", "sum"):
            ops.append({"op": kind, "in": [a], "out": [h], "mode": draw(st.sampled_from([0, 3]))})
        elif kind == "mul":
            ops.append({"op": "mul", "in": [a, draw(st.sampled_from(live))], "out": [h], "mode": 3})
        elif kind == "update":
            ops.append({"op": "update", "in": [a], "at": {"fn": "add", "scalar": 1.0}})
            continue
        elif kind == "free":
            ops.append({"op": "free", "in": [a]})
            continue
        else:
            ops.append({"op": "relu", "in": [99], "out": [h]})  # an unknown handle
        live.append(h)
    return [*ops, {"op": "read", "in": [draw(st.sampled_from(live))]}]


@settings(max_examples=200, deadline=None)
@given(plausible_batch())
def test_a_batch_run_in_slices_ends_as_the_batch_run_at_once(ops):
    """One instruction per slice (a deadline already past) gives the same reply and session."""
    from gradserve.engine.session import BatchRun

    whole, sliced = Session("w"), Session("s")
    for s in (whole, sliced):  # each its own copy of the setup's array (the engine keeps what it is given)
        setup = [{**ins, "at": {"value": ins["at"]["value"].copy()}} if ins["op"] == "array" else ins for ins in SETUP]
        s.run_batch({"seq": 1, "ops": setup})
    want = whole.run_batch({"seq": 2, "ops": ops}, copy_reads=False)
    job = sliced.begin({"seq": 2, "ops": ops}, copy_reads=False)
    assert isinstance(job, BatchRun)
    while not job.run(deadline=0.0):
        pass
    got = job.finish()
    assert got.get("error") == want.get("error")
    assert [v.tolist() for v in got["values"]] == [v.tolist() for v in want["values"]]
    assert sorted(sliced.arrays) == sorted(whole.arrays) and sliced.seq == whole.seq == 2
    for h in whole.arrays:
        np.testing.assert_array_equal(sliced.arrays[h], whole.arrays[h])
