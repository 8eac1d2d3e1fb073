"""``hybridize``: a traced function run again as one ``call`` of a defined program, in
both modes; the engine's ``define``/``call``/``forget`` commands and their errors."""

from __future__ import annotations

import contextlib
import copy
import gc
import json
import pickle
import weakref

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gradserve
from gradserve import autograd, hybridize, nd
from gradserve.engine import snapshot
from gradserve.engine.errors import AutogradError, InvalidInput, MXNetError, QuotaExceeded, UnknownHandle
from gradserve.engine.session import Limits, Session

from .test_server import batch, http, sid, tensor  # noqa: F401  (the JSON route's fixtures)


def mlp(seed: int = 0):
    """A small MLP: its data, its parameters and its training step (written for nd)."""
    rng = np.random.default_rng(seed)
    x = nd.array(rng.standard_normal((64, 8)).astype("float32"))
    y = nd.array(rng.integers(0, 3, 64).astype("float32"))
    params = [nd.array((rng.standard_normal(s) * 0.3).astype("float32")) for s in [(8, 16), (16,), (16, 3), (3,)]]
    for p in params:
        p.attach_grad()

    def step(X, Y):
        W1, b1, W2, b2 = params
        with autograd.record():
            loss = nd.softmax_cross_entropy(nd.dot(nd.relu(nd.dot(X, W1) + b1), W2) + b2, Y) / X.shape[0]
        loss.backward()
        for p in params:
            p -= 0.5 * p.grad
        return loss

    return x, y, params, step


def test_a_hybridized_training_step_computes_what_the_eager_one_does(mode):
    x, y, eager_params, eager = mlp()
    _, _, params, step = mlp()
    fast = hybridize(step)
    for i in range(0, 64, 16):
        a = eager(x[i : i + 16], y[i : i + 16]).asscalar()
        b = fast(x[i : i + 16], y[i : i + 16]).asscalar()
        assert a == b
    for p, q in zip(eager_params, params):
        assert np.array_equal(p.asnumpy(), q.asnumpy())
        assert np.array_equal(p.grad.asnumpy(), q.grad.asnumpy())
    assert fast.traces == 1
    session = getattr(mode.transport, "session", None)
    if session is not None:  # each p -= 0.5 * p.grad ran as one pass over p
        (prog,) = session.programs.values()
        fused = [e for e in prog.plan if not isinstance(e, tuple)]
        assert len(fused) == len(params) and all(e.from_grad for e in fused)


def test_a_hybridized_step_costs_one_request_when_it_reads_the_loss_and_none_otherwise(mode):
    x, y, _, step = mlp()
    fast = hybridize(step)
    first = fast(x[:16], y[:16]).asscalar()
    for _epoch in range(3):
        before = mode.transport.requests
        for i in range(0, 48, 16):
            fast(x[i : i + 16], y[i : i + 16])
        assert mode.transport.requests == before
        loss = fast(x[48:64], y[48:64]).asscalar()
        assert mode.transport.requests == before + 1
    assert loss < first
    assert fast.traces == 1


def test_each_signature_is_traced_once(mode):
    calls = []

    @hybridize
    def f(a, k):
        calls.append(1)
        return a * k + 1

    assert f(nd.ones((2,)), 3).asnumpy().tolist() == [4, 4]
    assert f(nd.ones((2,)) * 2, 3).asnumpy().tolist() == [7, 7]  # same shapes and constant: no Python
    assert f(nd.ones((3,)), 3).asnumpy().tolist() == [4, 4, 4]  # another shape
    assert f(nd.ones((2,)), 5).asnumpy().tolist() == [6, 6]  # another constant
    assert f(nd.ones((2,), dtype="float64"), 5).dtype == np.float64  # another dtype
    with autograd.record():  # other autograd flags
        f(nd.ones((2,)), 5)
    assert len(calls) == f.traces == 5
    assert repr(f).startswith("<hybridized test_each_signature_is_traced_once.<locals>.f: 5 traces")


def test_gradients_flow_through_a_hybridized_function_called_while_recording(mode):
    w = nd.array([[0.5, -1.0], [2.0, 0.25]])
    w.attach_grad()
    f = hybridize(lambda a: nd.tanh(nd.dot(a, w)) * a)
    xs = [nd.array([[1.0, 2.0]]), nd.array([[-0.5, 0.3]])]
    for x in xs:
        x.attach_grad()
        with autograd.record():
            out = f(x)
        out.backward(nd.array([[1.0, 3.0]]))
        # against the same function run eagerly, and against finite differences
        xv, wv, head = x.asnumpy().astype("float64"), w.asnumpy().astype("float64"), np.array([[1.0, 3.0]])

        def loss(xv=xv, wv=wv, head=head):
            return float((np.tanh(xv @ wv) * xv * head).sum())

        eps = 1e-6
        num = np.zeros_like(xv)
        for j in range(xv.shape[1]):
            d = np.zeros_like(xv)
            d[0, j] = eps
            num[0, j] = (loss(xv + d) - loss(xv - d)) / (2 * eps)
        np.testing.assert_allclose(x.grad.asnumpy(), num, rtol=1e-4, atol=1e-5)
        numw = np.zeros_like(wv)
        for i in range(2):
            for j in range(2):
                d = np.zeros_like(wv)
                d[i, j] = eps
                numw[i, j] = (loss(wv=wv + d) - loss(wv=wv - d)) / (2 * eps)
        np.testing.assert_allclose(w.grad.asnumpy(), numw, rtol=1e-4, atol=1e-5)
    assert f.traces == 1


def test_a_call_outside_record_gives_an_array_outside_the_graph(mode):
    w = nd.ones((2,))
    w.attach_grad()
    f = hybridize(lambda a: a * w)
    f(nd.ones((2,)))
    out = f(nd.ones((2,)))
    with pytest.raises(MXNetError, match="graph"):
        out.backward()


def test_a_function_that_reads_a_value_cannot_be_hybridized_and_changes_nothing(mode):
    x = nd.array([1.0, -2.0])

    @hybridize
    def f(a):
        b = a * 2
        if b.sum().asscalar() > 0:  # control flow on data
            return b
        return -b

    with pytest.raises(MXNetError, match="cannot read array values"):
        f(x)
    assert (x + 1).asnumpy().tolist() == [2, -1]  # nothing of the trace was queued
    assert f.traces == 0


@pytest.mark.parametrize(
    "fn, words",
    [
        (lambda a: a + nd.array([1.0, 2.0]), "uploads an array"),
        (lambda a: 3.0, "returns an NDArray"),
        (lambda a: [a, 1], "returns an NDArray.*got list holding int"),
        (lambda a: ((a, a), a), "got tuple holding tuple .call it without hybridize, or return its arrays flat"),
    ],
)
def test_what_cannot_be_traced_says_why(mode, fn, words):
    with pytest.raises(InvalidInput, match=words):
        hybridize(fn)(nd.ones((2,)))
    assert nd.ones((2,)).asnumpy().tolist() == [1, 1]


def test_a_branch_that_queues_no_op_gives_back_what_it_returned_at_every_call(mode):
    """README: an output that is an argument or a parameter is that array itself at every call,
    and a function that returns nothing returns None. A trace that queued no instruction (an
    optional step switched off) was refused: "nothing to run again"."""
    w = nd.array([5.0])
    x = nd.array([1.0, 2.0])
    w.attach_grad()

    @hybridize
    def maybe(a, double=False):
        return a * 2 if double else a

    @hybridize
    def nothing(a):
        pass

    @hybridize
    def outside(a):
        return w, a

    for _ in range(2):  # the trace, then the call of it
        assert maybe(x) is x and nothing(x) is None
        got = outside(x)
        assert type(got) is tuple and got[0] is w and got[1] is x
        assert maybe(x, True).asnumpy().tolist() == [2.0, 4.0]
    assert (maybe.traces, nothing.traces, outside.traces) == (2, 1, 1)
    with autograd.record():  # recorded: the argument itself, in its graph
        y = maybe(w)
        loss = (y * 3).sum()
    loss.backward()
    assert y is w and w.grad.asnumpy().tolist() == [3.0]
    assert x.asnumpy().tolist() == [1.0, 2.0]


class _Double(autograd.Function):
    def forward(self, x):
        return x * 2

    def backward(self, dy):
        return dy * 2


def test_an_autograd_function_inside_cannot_be_traced(mode):
    x = nd.ones((2,))
    x.attach_grad()
    with pytest.raises(InvalidInput, match="autograd.Function"), autograd.record():
        hybridize(lambda a: _Double()(a))(x)
    with autograd.record():
        y = _Double()(x)  # called plainly it records as before
    y.backward()
    assert x.grad.asnumpy().tolist() == [2, 2]


def test_arguments_must_be_arrays_or_hashable_constants(mode):
    with pytest.raises(InvalidInput, match="hashable"):
        hybridize(lambda a, b: a * 2)(nd.ones((1,)), {1, 2})
    with pytest.raises(InvalidInput, match="hashable"):
        hybridize(lambda a, b: a * 2)(nd.ones((1,)), np.array([1, 2]))
    f = hybridize(lambda a, axes: nd.transpose(a, axes=axes))  # (a list: a constant by its contents)
    assert f(nd.ones((2, 3)), [1, 0]).shape == (3, 2) and f(nd.ones((2, 3)), [1, 0]).shape == (3, 2)
    with pytest.raises(InvalidInput, match="not inside a tuple"):  # (an array in a list: fixed into a trace for good)
        hybridize(lambda a, ys: a + ys[0])(nd.ones((2,)), [nd.ones((2,))])


def test_a_call_that_failed_part_way_leaves_its_parameters_refused_in_later_calls(mode):
    """A call that fails at a step after one that updates a parameter has updated it on the
    server: the client marks it lost, saying it may be applied in part (it said "never
    applied"), and a later call, which reads it by handle, is refused as the parameter's own
    read is (it ran on the stale value)."""
    from gradserve.engine.errors import IndexOutOfRange
    from gradserve.runtime import ChangeLost

    w = nd.ones((4,))

    def f(x, idx):
        w[:] = w + 1
        return x[idx] * w

    g = hybridize(f)
    x = nd.arange(8).reshape((2, 4))
    assert g(x, nd.array([0])).asnumpy().tolist() == [[0, 2, 4, 6]]
    out = g(x, nd.array([7]))
    with pytest.raises(IndexOutOfRange):
        out.asnumpy()
    with pytest.raises(ChangeLost, match="may have been applied in part: it failed part way"):
        w.asnumpy()
    with pytest.raises(ChangeLost):
        g(x, nd.array([1]))


def test_outputs_keep_their_context_at_every_call(mode):
    """A result in a creation's or a parameter's context kept it at the first call only (then
    cpu(0)); one in its argument's follows the argument's, as an op's result does."""
    cpu = gradserve.cpu
    f = hybridize(lambda x: nd.ones((3, 4), ctx=cpu(1)) + x)
    assert [str(f(nd.ones((3, 4))).context) for _ in range(3)] == ["cpu(1)"] * 3
    g = hybridize(lambda: nd.ones((2,), ctx=cpu(3)) * 2)
    assert [str(g().context) for _ in range(3)] == ["cpu(3)"] * 3
    k = hybridize(lambda x: x * 2)
    assert [str(k(nd.ones((2,), ctx=cpu(i))).context) for i in range(3)] == ["cpu(0)", "cpu(1)", "cpu(2)"]
    p = nd.ones((2,), ctx=cpu(0))  # a parameter, and a creation, in the context the first argument has
    m = hybridize(lambda x: (p + x, nd.zeros((2,), ctx=cpu(0))))
    for i in (0, 3, 3):
        assert [str(o.context) for o in m(nd.ones((2,), ctx=cpu(i)))] == ["cpu(0)", "cpu(0)"]


def test_constants_that_compare_equal_but_differ_are_traced_apart(mode):
    """(0.0,) == (-0.0,) and (1,) == (True,): keyed by ==, a tuple constant reused the other's
    trace (1 / -0.0 gave +inf; True, which a shape refuses, gave a shape of 1)."""
    from gradserve.engine.errors import MXNetError

    f = hybridize(lambda x, c: x / nd.full(x.shape, c[0]))
    x = nd.ones((2,))
    assert f(x, (0.0,)).asnumpy().tolist() == [np.inf] * 2
    assert f(x, (-0.0,)).asnumpy().tolist() == [-np.inf] * 2
    assert f(x, (np.float64(-0.0),)).asnumpy().tolist() == [-np.inf] * 2
    g = hybridize(lambda x, c: x + nd.ones((c[0],)))
    assert g(x, (1,)).asnumpy().tolist() == [2.0, 2.0]
    with pytest.raises(MXNetError, match="expected an integer, got True"):
        g(x, (True,))


def test_a_trace_given_up_leaves_the_arrays_as_they_were(mode):
    """A function refused as it is traced (it reads a value, or uploads an array) queues
    nothing: what the client noted for its dropped steps goes too. A gradient proxy made in it
    named a handle never made (UnknownHandle at every later read), and an attach_grad in it
    left a variable the server never had."""
    from gradserve.engine.errors import AutogradError
    from gradserve.runtime import NotTraceable

    w = nd.ones((4,))
    w.attach_grad()

    def reads(x):
        y = x * w.grad
        y.sum().asscalar()
        return y

    with pytest.raises(NotTraceable):
        hybridize(reads)(nd.ones((4,)))
    assert w.grad.asnumpy().tolist() == [0.0] * 4
    v = nd.ones((2,))

    def uploads(x):
        v.attach_grad()
        return x * v.grad + nd.array([1, 2])

    with pytest.raises(InvalidInput, match="uploads an array"):
        hybridize(uploads)(nd.ones((2,)))
    assert v.grad is None  # (never a variable: the attach_grad was not sent)
    with autograd.record():
        z = (v * 3).sum()
    with pytest.raises(AutogradError, match="not in a computational graph"):
        z.backward()
    v.attach_grad()
    with autograd.record():
        z = (v * 3).sum()
    z.backward()
    assert v.grad.asnumpy().tolist() == [3.0, 3.0]


def test_an_error_in_a_replayed_call_names_the_program_step_and_the_callers_line(mode):
    state = {"w": nd.ones((2, 2))}
    f = hybridize(lambda a: nd.dot(a, state["w"]))
    assert f(nd.ones((1, 2))).asnumpy().tolist() == [[2, 2]]
    state["w"] = nd.zeros((2, 2))  # rebound, not changed in place: the program reads the old handle
    gc.collect()
    nd.waitall()  # the old array's free goes to the session
    out = f(nd.ones((1, 2)))
    with pytest.raises(UnknownHandle, match=r"program \d+, step 0 \(dot\).*queued at .*test_hybrid.py"):
        out.asnumpy()
    with pytest.raises(UnknownHandle):
        out.asnumpy()  # its handle is dead with the same error
    assert (nd.ones((1,)) * 3).asnumpy().tolist() == [3]


def test_a_hybridized_function_inside_another_trace_is_inlined(mode):
    inner = hybridize(lambda a: a * 2)
    outer = hybridize(lambda a: inner(a) + 1)
    assert outer(nd.ones((2,))).asnumpy().tolist() == [3, 3]
    assert outer(nd.ones((2,))).asnumpy().tolist() == [3, 3]
    assert outer.traces == 1 and inner.traces == 0


def test_outputs_may_be_a_tuple_with_repeats_and_arguments(mode):
    f = hybridize(lambda a, b: (a + b, a, a + b))
    for k in (1.0, 2.0):
        s, a, s2 = f(nd.ones((2,)) * k, nd.ones((2,)))
        assert s.asnumpy().tolist() == [k + 1] * 2 and a.asnumpy().tolist() == [k] * 2
        assert s2.asnumpy().tolist() == [k + 1] * 2


def test_a_dropped_function_drops_its_programs(mode):
    f = hybridize(lambda a: a + 1)
    f(nd.ones((2,)))
    f(nd.ones((3,)))
    mode.flush()
    session = getattr(mode.transport, "session", None)
    if session is not None:
        assert len(session.programs) == 2
    del f
    gc.collect()
    mode.flush()
    if session is not None:
        assert session.programs == {}
    assert mode._forgets == []


def test_a_function_keeps_a_bounded_number_of_traces_and_says_why_it_made_so_many(mode, monkeypatch):
    """A Python number that changes at every call (a decaying learning rate) makes a trace per
    value: past MAX_TRACES the least recently used goes, with its program in the session (it
    filled the session with programs until its quota refused the step)."""
    from gradserve import hybrid

    monkeypatch.setattr(hybrid, "MAX_TRACES", 4)
    x = nd.ones((2,))
    ran = []

    @hybridize
    def f(a, lr):
        ran.append(lr)  # (runs at a trace only)
        return a * lr

    with pytest.warns(RuntimeWarning, match=r"nd\.array\(\[lr\]\)") as warned:
        for i in range(12):
            assert f(x, 0.5 * 0.9**i).asnumpy().tolist() == [np.float32(0.5 * 0.9**i)] * 2
            if i == 3:
                f(x, 0.5)  # the first one, used again: the next trace drops the second
            if i == 4:
                assert f(x, 0.5).asnumpy().tolist() == [0.5, 0.5] and ran.count(0.5) == 1  # still kept
    assert len(warned) == 1 and f.traces == 4
    gc.collect()
    mode.flush()
    session = getattr(mode.transport, "session", None)
    if session is not None:
        assert len(session.programs) == 4
    f(x, 0.5 * 0.9**11)  # the last one: no new trace
    f(x, 0.5)  # dropped long since: traced again
    assert len(ran) == 13


# -- the engine's commands, as any client sends them -------------------------------------


def run(s: Session, *ops):
    return s.run_batch({"ops": list(ops)})


def test_an_error_says_whether_its_instruction_took_effect_in_part():
    """A call that fails at its first step changed nothing; one that fails after a step ran,
    or a backward pass that may have computed a gradient into its buffer, says so
    (``partial``), and the client marks what it changes lost only then."""
    s = Session("partial")
    ones = {"op": "ones", "out": [1], "at": {"shape": [4]}}
    step = {"op": "update", "in": [1], "at": {"fn": "add", "scalar": 1.0}}  # w += 1, in place
    bad = {"op": "getitem", "in": [-1], "out": [-2], "at": {"key": [9]}}  # out of range
    define = {"op": "define", "at": {"id": 1, "nargs": 1, "program": [bad, step], "outputs": []}}
    reply = run(s, ones, define, {"op": "call", "in": [1], "out": [], "at": {"id": 1}})
    assert reply["error"]["index"] == 2 and "partial" not in reply["error"]
    define = {"op": "define", "at": {"id": 2, "nargs": 1, "program": [step, bad], "outputs": []}}
    reply = run(s, define, {"op": "call", "in": [1], "out": [], "at": {"id": 2}})
    assert reply["error"]["index"] == 1 and reply["error"]["partial"] is True
    assert s.get(1).tolist() == [2.0] * 4  # its first step ran
    reply = run(s, {"op": "backward", "in": [1]})  # refused before the pass: not in a graph
    assert "not in a computational graph" in reply["error"]["message"] and "partial" not in reply["error"]


def test_an_error_of_any_kind_after_a_pass_or_a_call_changed_state_says_so(monkeypatch):
    """A backward pass that computes a weight's gradient into its buffer, or a call whose first
    step ran, then fails with an error that is not an MXNetError (no memory left: the executor
    makes it a QuotaExceeded), was not said partial: the client read a half-applied pass."""
    from gradserve.engine import ops_nn

    def no_memory(*args):
        raise MemoryError

    s = Session("partial-any")
    ln = {"op": "LayerNorm", "in": [1, 2, 3], "out": [5], "mode": 3}
    ok = run(
        s,
        {"op": "ones", "out": [1], "at": {"shape": [2, 3]}},
        {"op": "ones", "out": [2], "at": {"shape": [3]}},
        {"op": "zeros", "out": [3], "at": {"shape": [3]}},
        {"op": "ones", "out": [4], "at": {"shape": [3, 2]}},
        {"op": "attach_grad", "in": [1]},
        {"op": "attach_grad", "in": [4]},
        ln,
        {"op": "dot", "in": [5, 4], "out": [6], "mode": 3},
        {"op": "sum", "in": [6], "out": [7], "mode": 3},
    )
    assert "error" not in ok
    monkeypatch.setattr(ops_nn, "_normalized_vjp", no_memory)  # (after dot's VJP, in the pass)
    reply = run(s, {"op": "backward", "in": [7], "at": {"retain_graph": True}})
    assert reply["error"]["kind"] == "QuotaExceeded" and reply["error"]["partial"] is True
    monkeypatch.undo()
    step = {"op": "update", "in": [4], "at": {"fn": "add", "scalar": 1.0}}
    norm = {"op": "LayerNorm", "in": [-1, 2, 3], "out": [-2]}
    define = {"op": "define", "at": {"id": 3, "nargs": 1, "program": [step, norm], "outputs": [-2]}}
    assert "error" not in run(s, define)
    monkeypatch.setattr(np, "sqrt", no_memory)  # (LayerNorm's forward, the call's second step)
    reply = run(s, {"op": "call", "in": [1], "out": [8], "at": {"id": 3}})
    monkeypatch.undo()
    assert reply["error"]["kind"] == "QuotaExceeded" and reply["error"]["partial"] is True
    assert s.get(4).tolist() == [[2.0, 2.0]] * 3  # its first step ran
    define = {"op": "define", "at": {"id": 4, "nargs": 1, "program": [norm, step], "outputs": [-2]}}
    monkeypatch.setattr(np, "sqrt", no_memory)
    reply = run(s, define, {"op": "call", "in": [1], "out": [8], "at": {"id": 4}})
    monkeypatch.undo()
    assert reply["error"]["kind"] == "QuotaExceeded" and "partial" not in reply["error"]  # (at its first step)
    reply = run(s, {"op": "backward", "in": [2]})  # refused before the pass: not in a graph
    assert reply["error"]["kind"] == "AutogradError" and "partial" not in reply["error"]


def saxpy_program(pid: int = 1):
    # out = a * 2 + w, where w is the session's handle 1 and a the call's argument
    return {
        "op": "define",
        "at": {
            "id": pid,
            "nargs": 1,
            "program": [
                {"op": "mul_scalar", "in": [-1], "out": [-2], "at": {"scalar": 2.0}},
                {"op": "add", "in": [-2, 1], "out": [-3]},
            ],
            "outputs": [-3],
        },
    }


def session_with_w() -> Session:
    s = Session("t")
    run(s, {"op": "array", "out": [1], "at": {"value": np.array([1.0, 2.0], np.float32)}})
    run(s, {"op": "array", "out": [2], "at": {"value": np.array([10.0, 20.0], np.float32)}})
    return s


def test_define_then_call_runs_the_program_and_frees_its_slots():
    s = session_with_w()
    before = s.nbytes
    reply = run(s, saxpy_program(), {"op": "call", "in": [2], "out": [3], "at": {"id": 1}}, {"op": "read", "in": [3]})
    assert reply["values"][0].tolist() == [21, 42]
    assert sorted(s.arrays) == [1, 2, 3] and s.nbytes == before + 8 and not s.aliases


@pytest.mark.parametrize(
    "ins, words",
    [
        ({"op": "define", "at": {"id": 2, "nargs": 0, "program": [], "outputs": []}}, "at least one"),
        (
            {"op": "define", "at": {"id": 2, "nargs": 0, "program": [{"op": "read", "in": [1]}], "outputs": []}},
            "read cannot be part",
        ),
        (
            {
                "op": "define",
                "at": {"id": 2, "nargs": 1, "program": [{"op": "negative", "in": [-2], "out": [-3]}], "outputs": []},
            },
            "before it is made",
        ),
        (
            {
                "op": "define",
                "at": {"id": 2, "nargs": 0, "program": [{"op": "negative", "in": [1], "out": [5]}], "outputs": []},
            },
            "must make slots",
        ),
        (
            {"op": "define", "at": {"id": 2, "nargs": 0, "program": [{"op": "nope", "out": [-1]}], "outputs": []}},
            "nope",
        ),
        (
            {
                "op": "define",
                "at": {"id": 1, "nargs": 2, "program": [{"op": "negative", "in": [-1], "out": [-3]}], "outputs": [-3]},
            },
            "already defined",
        ),
        (
            {
                "op": "define",
                "at": {
                    "id": 2,
                    "nargs": 0,
                    "program": [{"op": "ones", "out": [-(10**9)], "at": {"shape": [1]}}],
                    "outputs": [],
                },
            },
            "number made slots from -1 down",
        ),
        (
            {"op": "define", "at": {"id": 2, "nargs": 10**12, "program": [{"op": "ones", "out": [-1]}], "outputs": []}},
            "nargs must be from 0",
        ),
        (
            {
                "op": "define",
                "at": {"id": 2, "nargs": 1, "program": [{"op": "negative", "in": [-1], "out": [-1]}], "outputs": []},
            },
            "an argument's or made before",
        ),
        ({"op": "call", "in": [2], "out": [5], "at": {"id": 9}}, "no program 9"),
        ({"op": "call", "in": [], "out": [5], "at": {"id": 1}}, "takes 1 arguments"),
        ({"op": "call", "in": [2], "out": [], "at": {"id": 1}}, "makes 1 outputs"),
        ({"op": "call", "in": [2], "out": [1], "at": {"id": 1}}, "not a free"),
        ({"op": "call", "in": [2], "out": [-4], "at": {"id": 1}}, "not a free"),
        ({"op": "negative", "in": [2], "out": [-4]}, "from 0 to 2**63 - 1"),
    ],
)
def test_bad_programs_and_calls_are_refused_and_change_nothing(ins, words):
    s = session_with_w()
    run(s, saxpy_program())
    arrays, nbytes = dict(s.arrays), s.nbytes
    reply = run(s, ins, {"op": "ones", "out": [7], "at": {"shape": [1]}})
    assert reply["error"]["index"] == 0 and words in reply["error"]["message"], reply["error"]
    assert s.arrays == arrays and s.nbytes == nbytes and set(s.programs) == {1}


def test_a_failing_step_stops_the_call_keeps_what_ran_and_frees_the_slots():
    s = session_with_w()
    prog = {
        "op": "define",
        "at": {
            "id": 5,
            "nargs": 1,
            "program": [
                {"op": "update", "in": [1, -1], "at": {"fn": "add"}},  # runs: w += a
                {"op": "dot", "in": [-1, 1], "out": [-2]},
                {"op": "reshape", "in": [-2], "out": [-3], "at": {"shape": [7]}},  # fails
            ],
            "outputs": [-3],
        },
    }
    reply = run(s, prog, {"op": "call", "in": [2], "out": [3], "at": {"id": 5}})
    assert reply["error"]["index"] == 1 and "program 5, step 2 (reshape)" in reply["error"]["message"]
    assert s.arrays[1].tolist() == [11, 22] and sorted(s.arrays) == [1, 2] and not s.aliases


def test_a_second_define_of_the_same_program_is_harmless():
    s = session_with_w()
    run(s, saxpy_program())
    assert "error" not in run(s, saxpy_program())
    assert s.program_steps == 2


def test_calls_count_their_programs_against_the_batch_limit():
    s = Session("t", limits=Limits(max_batch_steps=10))
    run(s, {"op": "array", "out": [1], "at": {"value": np.ones(2, np.float32)}})
    run(s, saxpy_program())
    calls = [{"op": "call", "in": [1], "out": [10 + i], "at": {"id": 1}} for i in range(4)]
    with pytest.raises(QuotaExceeded, match="12 instructions"):  # refused whole: none of it ran
        run(s, *calls)
    assert sorted(s.arrays) == [1]
    assert "error" not in run(s, *calls[:3])  # 3 + 3 x 2 = 9 instructions
    assert sorted(s.arrays) == [1, 10, 11, 12]
    with pytest.raises(QuotaExceeded):
        s.limits.max_program_steps = 3
        s.execute(
            {
                "op": "define",
                "at": {
                    "id": 2,
                    "nargs": 1,
                    "program": [{"op": "negative", "in": [-1], "out": [-2]}] * 2,
                    "outputs": [],
                },
            },
            [],
        )
    s.limits.max_program_steps = 100
    # a batch that defines the id again is judged by the new program as its calls come
    one = {"op": "negative", "in": [-1], "out": [-2]}
    again = {"op": "define", "at": {"id": 1, "nargs": 1, "program": [one], "outputs": [-2]}}
    redo = [{"op": "forget", "at": {"ids": [1]}}, again, *[{**c, "out": [20 + i]} for i, c in enumerate(calls)]]
    assert "error" not in run(s, *redo)  # 6 + 4 x 1 = 10 (the old program counted: 14)
    assert sorted(s.arrays) == [1, 10, 11, 12, 20, 21, 22, 23]


def test_snapshots_keep_programs(tmp_path):
    s = session_with_w()
    run(s, saxpy_program())
    snapshot.save(s, tmp_path / "s.npz")
    t = snapshot.load(tmp_path / "s.npz")
    reply = run(t, {"op": "call", "in": [2], "out": [3], "at": {"id": 1}}, {"op": "read", "in": [3]})
    assert reply["values"][0].tolist() == [21, 42] and t.program_steps == 2
    assert "error" not in run(t, {"op": "forget", "at": {"ids": [1, 99]}}) and t.programs == {}


def test_the_json_route_defines_and_calls_programs(batch):  # noqa: F811
    assert batch.post([{"op": "array", "out": [1], "at": {"value": tensor([1, 2], [2])}}]).status_code == 200
    assert batch.post([{"op": "array", "out": [2], "at": {"value": tensor([10, 20], [2])}}]).status_code == 200
    r = batch.post([saxpy_program(), {"op": "call", "in": [2], "out": [3], "at": {"id": 1}}])
    assert r.status_code == 200, r.text
    assert batch.read(3) == [[21, 42]]
    r = batch.post([{"op": "call", "in": [2], "out": [4], "at": {"id": 2}}])
    assert r.status_code == 400 and "no program 2" in r.json()["error"]["message"]


def test_a_call_runs_its_checks_again_when_a_shape_it_was_checked_with_changes():
    s = session_with_w()
    run(s, saxpy_program())
    for k in range(3):  # the first call checks every step; the next ones run the checked plan
        reply = run(s, {"op": "call", "in": [2], "out": [10 + k], "at": {"id": 1}}, {"op": "read", "in": [10 + k]})
        assert reply["values"][0].tolist() == [21, 42]
    assert s.programs[1].plan is not None
    run(s, {"op": "free", "in": [1]}, {"op": "array", "out": [1], "at": {"value": np.ones(3, np.float32)}})
    reply = run(s, {"op": "call", "in": [2], "out": [20], "at": {"id": 1}})
    assert reply["error"]["kind"] == "ShapeError" and "program 1, step 1 (add)" in reply["error"]["message"]
    run(s, {"op": "free", "in": [1]})
    reply = run(s, {"op": "call", "in": [2], "out": [20], "at": {"id": 1}})
    assert reply["error"]["kind"] == "UnknownHandle"
    assert 20 not in s.arrays and not s.aliases


def test_a_checked_call_still_keeps_to_the_byte_quota():
    s = session_with_w()
    run(s, saxpy_program())
    for k in range(2):
        assert "error" not in run(s, {"op": "call", "in": [2], "out": [10 + k], "at": {"id": 1}})
    s.limits.max_session_bytes = s.held_bytes() + 8  # room for the output, not for the temporary as well
    reply = run(s, {"op": "call", "in": [2], "out": [20], "at": {"id": 1}})
    assert reply["error"]["kind"] == "QuotaExceeded" and "step 1 (add)" in reply["error"]["message"]
    assert 20 not in s.arrays


def test_a_kept_program_counts_against_the_byte_quota_until_it_is_forgotten():
    """A program costs the server what its definition holds (an attribute of megabytes, a list of
    outputs as long as the batch allows): it counts as held bytes from its define to its forget,
    and a definition past the session's room is refused."""
    from gradserve.engine.programs import PROGRAM_BYTES_PER_CHAR
    from gradserve.engine.session import Limits, Session

    s = Session("programs", limits=Limits(max_session_bytes=1 << 20))
    step = {"op": "mul_scalar", "in": [-1], "out": [-2], "at": {"scalar": 2.0}}
    small = {"op": "define", "at": {"id": 1, "nargs": 1, "program": [step], "outputs": [-2]}}
    assert "error" not in run(s, small)
    text = json.dumps(small["at"], separators=(",", ":"))
    assert s.program_bytes == PROGRAM_BYTES_PER_CHAR * len(text) == s.held_bytes()
    wide = {"op": "define", "at": {"id": 2, "nargs": 1, "program": [step], "outputs": [-2] * 60_000}}
    reply = run(s, wide)
    assert reply["error"]["kind"] == "QuotaExceeded" and 2 not in s.programs
    assert s.program_bytes == PROGRAM_BYTES_PER_CHAR * len(text)
    assert "error" not in run(s, {"op": "forget", "at": {"ids": [1]}})
    assert s.program_bytes == 0 == s.held_bytes()
    junk = {"op": "mul_scalar", "in": [-1], "out": [-2], "at": {"scalar": 2.0, "junk": "x" * 100}}
    reply = run(s, {"op": "define", "at": {"id": 3, "nargs": 1, "program": [junk], "outputs": [-2]}})
    assert reply["error"]["kind"] == "InvalidInput" and "step 0 (mul_scalar)" in reply["error"]["message"]
    assert "junk" in reply["error"]["message"] and 3 not in s.programs and s.program_bytes == 0
    bad = {"op": "backward", "in": [-1], "at": {"retain_graph": "yes"}}
    reply = run(s, {"op": "define", "at": {"id": 4, "nargs": 1, "program": [bad], "outputs": []}})
    assert reply["error"]["kind"] == "InvalidInput" and "step 0 (backward)" in reply["error"]["message"]


def test_a_servers_step_limit_applies_to_calls():
    """The server counts a call's program's instructions against its batch limit; the client,
    told that limit when the session opens, sends a long queue of calls as several batches."""
    from gradserve.engine.session import Session as EngineSession
    from gradserve.server import Settings

    from .conftest import LiveServer

    with LiveServer(Settings(max_batch_steps=40)) as srv:
        client = gradserve.connect(srv.url)
        try:
            f = hybridize(lambda a: ((a + 1) * 2 - 3) / 4)  # a program of 4 instructions
            x = nd.ones((2,))
            assert f(x).asnumpy().tolist() == [0.25, 0.25]
            before = client.transport.requests
            outs = [f(x) for _ in range(12)]  # 12 calls of 4: past 40 in one batch
            nd.waitall()
            assert client.transport.requests - before == 2
            assert [o.asnumpy().tolist() for o in outs] == [[0.25, 0.25]] * 12
        finally:
            gradserve.set_current(None)
            client.close()
    s = EngineSession("t")
    s.limits.max_batch_steps = 40
    prog = [{"op": "add_scalar", "in": [-1 - i], "out": [-2 - i], "at": {"scalar": 1.0}} for i in range(4)]
    define = {"op": "define", "at": {"id": 1, "nargs": 1, "program": prog, "outputs": [-5]}}
    calls = [{"op": "call", "in": [1], "out": [10 + k], "at": {"id": 1}} for k in range(12)]
    reply = s.run_batch({"ops": [{"op": "ones", "out": [1], "at": {"shape": [2]}}, define, *calls]})
    assert reply["error"]["kind"] == "QuotaExceeded" and "over the limit of 40" in reply["error"]["message"]


@pytest.mark.parametrize("dtype", ["float32", "int32"])
def test_a_scaled_update_runs_as_one_step_where_it_can_with_the_same_result(dtype):
    s = Session("t")
    w0 = (np.arange(6) * 7 % 5).astype(dtype)
    run(s, {"op": "array", "out": [1], "at": {"value": w0.copy()}})
    run(s, {"op": "array", "out": [2], "at": {"value": np.arange(6).astype(dtype)}})
    prog = {
        "op": "define",
        "at": {
            "id": 1,
            "nargs": 1,
            "program": [
                {"op": "mul_scalar", "in": [-1], "out": [-2], "at": {"scalar": 0.3}},
                {"op": "update", "in": [1, -2], "at": {"fn": "sub"}},  # w -= 0.3 * a
                {"op": "mul_scalar", "in": [-1], "out": [-3], "at": {"scalar": 2.0}},
                {"op": "update", "in": [1, -3], "at": {"fn": "sub"}},  # w -= 2 * a ...
                {"op": "add", "in": [-3, -1], "out": [-4]},  # ... whose product is read again: not fused
            ],
            "outputs": [-4],
        },
    }
    run(s, prog)
    want = w0.copy()
    a = np.arange(6).astype(dtype)
    for k in range(3):
        reply = run(s, {"op": "call", "in": [2], "out": [10 + k], "at": {"id": 1}}, {"op": "read", "in": [1, 10 + k]})
        step1 = a * np.asarray(0.3, dtype) if dtype == "float32" else a * np.asarray(0, dtype)
        want -= step1
        want -= a * np.asarray(2, dtype)
        assert np.array_equal(reply["values"][0], want) and reply["values"][1].tolist() == (a * 3).tolist()
    kinds = [e[0] if isinstance(e, tuple) else type(e).__name__ for e in s.programs[1].plan]
    assert kinds == ["ScaledUpdate", 0, 1, 0]  # the first pair fused; the second kept apart
    assert sorted(s.arrays) == [1, 2, 10, 11, 12] and not s.aliases


def test_an_array_passed_twice_and_lists_returned(mode):
    f = hybridize(lambda a, b: [a * b, a + b])
    x = nd.array([1.0, 2.0])
    for _ in range(3):
        out = f(x, x)
        assert isinstance(out, list) and [o.asnumpy().tolist() for o in out] == [[1, 4], [2, 4]]
    assert f.traces == 1


@pytest.mark.parametrize("where", ["inprocess", "http"])
def test_the_training_example_learns_with_one_trace(where, live_server):
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if k != "GRADSERVE_URL"}
    if where == "http":
        env["GRADSERVE_URL"] = live_server.url
    script = Path(__file__).resolve().parent.parent / "examples" / "train_mlp.py"
    out = subprocess.run(
        [sys.executable, str(script), "600"], capture_output=True, text=True, env=env, timeout=120, check=True
    ).stdout
    losses = [float(line.split("loss")[1]) for line in out.splitlines() if line.startswith("step")]
    assert len(losses) == 3 and losses[-1] < losses[0] / 4
    accuracy = float(out.split("training accuracy")[1].split(",")[0])
    assert accuracy > 0.9 and "traced 1 time(s)" in out


@st.composite
def programs(draw):
    """A random program of elementwise ops over two arguments and one session array (handle 1),
    possibly ending with scaled updates of handle 1."""
    n = draw(st.integers(1, 8))
    steps, live = [], [-1, -2, 1]
    for i in range(n):
        out = -3 - i
        kind = draw(st.sampled_from(["add", "mul", "sub", "tanh", "relu", "mul_scalar", "negative"]))
        if kind in ("add", "mul", "sub"):
            ins = [draw(st.sampled_from(live)), draw(st.sampled_from(live))]
            steps.append({"op": kind, "in": ins, "out": [out]})
        elif kind == "mul_scalar":
            scalar = draw(st.sampled_from([0.5, -2.0, 0.1]))
            steps.append({"op": kind, "in": [draw(st.sampled_from(live))], "out": [out], "at": {"scalar": scalar}})
            if draw(st.booleans()):
                steps.append({"op": "update", "in": [1, out], "at": {"fn": "sub"}})
        else:
            steps.append({"op": kind, "in": [draw(st.sampled_from(live))], "out": [out]})
        live.append(out)
    return steps, live[-1]


@settings(max_examples=60, deadline=None)
@given(programs())
def test_a_program_called_again_and_again_computes_what_its_steps_do(prog):
    steps, result = prog
    rng = np.random.default_rng(0)
    w0, a, b = (rng.standard_normal((2, 3)).astype(np.float32) for _ in range(3))
    eager, called = Session("e"), Session("c")
    for s in (eager, called):
        run(s, {"op": "array", "out": [1], "at": {"value": w0.copy()}})
    run(called, {"op": "define", "at": {"id": 1, "nargs": 2, "program": steps, "outputs": [result]}})
    for k in range(3):  # checked, then from the plan
        base = 100 * (k + 1)
        run(eager, {"op": "array", "out": [base + 1], "at": {"value": a * (k + 1)}})
        run(eager, {"op": "array", "out": [base + 2], "at": {"value": b}})
        names = {-1: base + 1, -2: base + 2, 1: 1}
        for i, st_ in enumerate(steps):
            ins = {**st_, "in": [names[h] for h in st_["in"]]}
            if "out" in st_:
                names[st_["out"][0]] = base + 10 + i
                ins["out"] = [base + 10 + i]
            assert "error" not in run(eager, ins)
        want = run(eager, {"op": "read", "in": [names[result], 1]})["values"]
        run(called, {"op": "array", "out": [base + 1], "at": {"value": a * (k + 1)}})
        run(called, {"op": "array", "out": [base + 2], "at": {"value": b}})
        reply = run(
            called,
            {"op": "call", "in": [base + 1, base + 2], "out": [base + 3], "at": {"id": 1}},
            {"op": "read", "in": [base + 3, 1]},
        )
        assert "error" not in reply, reply
        for x, y in zip(reply["values"], want):
            assert np.array_equal(x, y, equal_nan=True)
    assert called.programs[1].plan is not None
    assert not [h for h in called.arrays if h < 0] and not called.aliases


def test_methods_and_keyword_constants_are_traced_per_instance_and_value(mode):
    class Scale:
        def __init__(self, k):
            self.w = nd.ones((2,)) * k

        @hybridize
        def apply(self, x, *, shift=0.0):
            return x * self.w + shift

    a, b = Scale(2.0), Scale(3.0)
    x = nd.array([1.0, 2.0])
    for _ in range(2):
        assert a.apply(x).asnumpy().tolist() == [2, 4]
        assert b.apply(x).asnumpy().tolist() == [3, 6]
        assert a.apply(x, shift=1.0).asnumpy().tolist() == [3, 5]
    assert a.apply.traces == 2 and b.apply.traces == 1 and Scale.apply.traces == 0
    gone = weakref.ref(b)
    del b
    gc.collect()
    assert gone() is None  # an instance's traces do not keep it alive
    with pytest.raises(InvalidInput, match="positional"):
        a.apply(x, shift=nd.ones((2,)))


def test_a_hybridized_method_is_the_methods_own_for_subclasses_copies_and_late_assignments(mode):
    """A method's bound function was kept in the instance's __dict__ under the method's name:
    from the second call a subclass's override was hidden behind it (the base's ran), a copy
    of the instance ran the original's (reading its parameters), the instance no longer
    pickled, and a method assigned after the class was made (``Cls.f = hybridize(Cls.f)``)
    took its instance as a constant, holding it alive."""
    x = nd.ones((2,))

    class Base:
        def __init__(self, k=3.0):
            self.w = nd.ones((2,)) * k
            self.k = 2

        @hybridize
        def fwd(self, a):
            return a * self.w

    class Child(Base):
        def fwd(self, a):
            return super().fwd(a) + 1

    class Hybrid(Base):
        @hybridize
        def fwd(self, a):
            return super().fwd(a) + 10

    assert [Child().fwd(x).asnumpy().tolist() for _ in range(2)] == [[4, 4]] * 2
    c, h = Child(), Hybrid()
    assert [c.fwd(x).asnumpy().tolist() for _ in range(3)] == [[4, 4]] * 3
    assert [h.fwd(x).asnumpy().tolist() for _ in range(3)] == [[13, 13]] * 3
    a = Base()
    a.fwd(x)
    a.fwd(x)
    deep = copy.deepcopy(a)
    deep.w[:] = 5
    shallow = copy.copy(a)
    shallow.w = nd.ones((2,)) * 7
    assert deep.fwd(x).asnumpy().tolist() == [5, 5] and shallow.fwd(x).asnumpy().tolist() == [7, 7]
    assert a.fwd(x).asnumpy().tolist() == [3, 3]
    assert pickle.loads(pickle.dumps(vars(a)))["w"].asnumpy().tolist() == [3, 3]  # (no trace in its state)
    bound = Base().fwd  # (a bound method holds its instance, as Python's do)
    gc.collect()
    assert [bound(x).asnumpy().tolist() for _ in range(2)] == [[3, 3]] * 2 and bound.traces == 1
    assert [y.asnumpy().tolist() for y in map(Base(5.0).fwd, [x, x])] == [[5, 5]] * 2
    # and compares, hashes, copies and is documented as Python's bound methods are
    assert a.fwd == a.fwd and hash(a.fwd) == hash(a.fwd) and a.fwd != deep.fwd and len({a.fwd, a.fwd}) == 1
    assert a.fwd.__doc__ == Base.fwd.__doc__ and weakref.ref(a.fwd) is not None
    a.step = a.fwd
    twin = copy.deepcopy(a)
    twin.w[:] = 9
    assert twin.step.__self__ is twin and twin.step(x).asnumpy().tolist() == [9, 9]
    assert copy.copy(a.fwd) == a.fwd

    class Late:
        def __init__(self):
            self.w = nd.ones((1000,))

        def fwd(self, a):
            return a * 1

    Late.fwd = hybridize(Late.fwd)
    late = Late()
    late.fwd(x)
    gone = weakref.ref(late)
    del late
    gc.collect()
    assert gone() is None


def test_a_call_failing_at_its_first_step_loses_what_the_function_changes_after_it(mode):
    """A replayed call that failed at its first step was taken to have changed nothing: the
    function's in-place update after the failing op read its old value, silently, where the
    plain function's update is lost (ChangeLost) until the array is written whole."""
    v = nd.zeros((1,))

    @hybridize
    def step(x, idx):
        y = nd.take(x, idx, mode="raise")
        v[:] = v + 1
        return y

    x, good, bad = nd.array([1, 2, 3]), nd.array([0, 1]), nd.array([0, 7])
    step(x, good)
    step(x, good)
    r = step(x, bad)
    with pytest.raises(IndexError):
        r.asnumpy()
    with pytest.raises(gradserve.ChangeLost, match="the call failed at its first step"):
        v.asnumpy()
    with pytest.raises(gradserve.ChangeLost):
        step(x, good)  # (it reads v)
    v[:] = 0
    assert step(x, good).asnumpy().tolist() == [1, 2] and v.asnumpy().tolist() == [1]


def test_a_replayed_backward_lets_its_arguments_graph_go_as_the_plain_functions_does(mode):
    """A backward pass (or autograd.grad) of a hybridized function lets its argument's graph go
    at each call, as the plain function's: a replayed call did not, so a second backward of
    the argument was taken at its call and failed later, in the engine, taking the batch down
    (w.grad raised where it holds [2, 4])."""
    w = nd.array([1.0, 2.0])
    w.attach_grad()

    @hybridize
    def bw(y):
        y.backward()

    @hybridize
    def gr(y):
        return autograd.grad(y, [w])[0]

    for _ in range(3):
        with autograd.record():
            y = (w * w).sum()
        bw(y)
        with pytest.raises(AutogradError):
            y.backward()
        assert w.grad.asnumpy().tolist() == [2, 4]
        with autograd.record():
            y = (w * w * w).sum()
        assert gr(y).asnumpy().tolist() == [3, 12]
        with pytest.raises(AutogradError):
            y.backward()
    assert bw.traces == 1 and gr.traces == 1


def test_a_trace_whose_program_was_refused_is_traced_again():
    client = gradserve.Client(gradserve.InProcess(limits=Limits(max_program_steps=2)))
    client.max_program_steps = None  # (as from a server that does not say its limit: its define is refused)
    gradserve.set_current(client)
    try:
        f = hybridize(lambda a: ((a + 1) * 2) - 1)  # three instructions: over the limit of 2
        x = nd.ones((2,))
        with pytest.raises(QuotaExceeded, match="define"):
            f(x).asnumpy()
        client.transport.session.limits.max_program_steps = 10
        assert f(x).asnumpy().tolist() == [3, 3]  # traced again, defined this time
        assert f(x).asnumpy().tolist() == [3, 3]
        assert f.traces == 1 and len(client.transport.session.programs) == 1
    finally:
        gradserve.set_current(None)
        client.close()


@pytest.mark.parametrize("where", ["inprocess", "http"])
def test_a_trace_the_session_cannot_keep_runs_unhybridized(where):
    """A trace whose program would pass the session's max_program_steps (which the server says
    when the session opens) is not defined: the define was refused, and the batch with it, so
    every call raised QuotaExceeded. The function now runs as written, with one warning."""
    from gradserve.server import Settings

    from .conftest import LiveServer

    with contextlib.ExitStack() as stack:
        if where == "http":
            srv = stack.enter_context(LiveServer(Settings(max_program_steps=4)))
            client = gradserve.connect(srv.url)
        else:
            client = gradserve.Client(gradserve.InProcess(limits=Limits(max_program_steps=4)))
        stack.callback(client.close)
        stack.callback(gradserve.set_current, None)
        gradserve.set_current(client)
        _runs_unkept_unhybridized(client)


def _runs_unkept_unhybridized(client: gradserve.Client) -> None:
    def programs() -> int:
        """The session's programs' instructions (remote: 0 or not, from the bytes they hold)."""
        if isinstance(client.transport, gradserve.InProcess):
            return client.transport.session.program_steps
        return client.info()["program_bytes"]

    small = hybridize(lambda a: (a + 1) * 2)
    big = hybridize(lambda a: ((a + 1) * 2) - 1)
    x = nd.ones((2,))
    assert small(x).asnumpy().tolist() == [4, 4]  # two instructions kept: two left
    kept = programs()
    assert kept
    with pytest.warns(RuntimeWarning, match="trace of 3 instructions would pass the 4") as seen:
        assert big(x).asnumpy().tolist() == [3, 3]
        assert big(x * 2).asnumpy().tolist() == [5, 5]  # (the next calls: the function's Python)
        y = nd.ones((2,))
        y.attach_grad()
        with autograd.record():
            z = big(y)
        z.backward()
        assert y.grad.asnumpy().tolist() == [2, 2]
    assert len(seen) == 1 and programs() == kept
    del small
    gc.collect()  # (the forget of small's program is queued: it goes before bigger's define)
    bigger = hybridize(lambda a: (((a + 1) * 2) - 1) * 3)  # four: room now
    assert bigger(x).asnumpy().tolist() == [9, 9] and bigger(x).asnumpy().tolist() == [9, 9]
    assert programs() and bigger.traces == 1
    del bigger
    gc.collect()
    for _ in range(3):  # a hybridized method of a new instance each time: the old one's program goes first

        class Net:
            @hybridize
            def __call__(self, a):
                return (((a + 1) * 2) - 1) * 4

        net = Net()
        assert net(x).asnumpy().tolist() == [12, 12]
        del net, Net
        gc.collect()
    if isinstance(client.transport, gradserve.InProcess):
        assert client.transport.session.program_steps == 4


def test_a_large_upload_inside_a_trace_is_traced_as_a_small_one(mode):
    """An upload of 8 MiB or more goes to a server at once (from the caller's memory), which
    sent the queue: inside a trace that is a read, so a hybridized function that uploads one
    said "cannot read array values" (not "it uploads an array") and an autograd.Function whose
    backward uploads one failed against a server alone. Both now go as a small one does."""
    from gradserve.ndarray import SEND_NOW_BYTES

    big = np.full(SEND_NOW_BYTES // 4, 3.0, dtype=np.float32)

    class Times(autograd.Function):
        def forward(self, x):
            return x * 2

        def backward(self, dy):
            return dy * nd.array(big)

    x = nd.ones(big.shape)
    x.attach_grad()
    with autograd.record():
        y = Times()(x)
    y.backward()
    assert x.grad[:3].asnumpy().tolist() == [3, 3, 3]
    h = hybridize(lambda a: a * nd.array(big))
    with pytest.raises(InvalidInput, match="cannot trace <lambda>: it uploads an array"):
        h(x)
    assert (x + 1)[:2].asnumpy().tolist() == [2, 2]  # (nothing of the trace left queued)


def test_an_upload_past_the_servers_request_size_inside_a_trace_says_why_it_is_refused():
    """Such an upload goes in pieces, a request each: no instruction of a trace goes before the
    trace ends, so it is refused, saying so (it said "cannot read array values")."""
    from gradserve.server import Settings

    from .conftest import LiveServer

    with LiveServer(Settings(max_body_bytes=1 << 16)) as srv:
        client = gradserve.connect(srv.url)
        try:

            class Times(autograd.Function):
                def forward(self, x):
                    return x * 2

                def backward(self, dy):
                    return dy * nd.array(np.ones(1 << 15, np.float32))

            x = nd.ones(1 << 15)
            x.attach_grad()
            with (
                pytest.raises(gradserve.NotTraceable, match="past the server.s request size, cannot be part of"),
                autograd.record(),
            ):
                Times()(x)  # (its backward is traced at the call)
            assert nd.array(np.ones(1 << 15, np.float32)).sum().asscalar() == 1 << 15  # (outside one: in pieces)
        finally:
            gradserve.set_current(None)
            client.close()


def test_a_functions_backward_uploads_count_against_the_batch_bound():
    """The uploads an autograd.Function's backward makes travel with its record_function: the
    queue did not count them, so a batch carrying two could pass the server's request size and
    be refused whole (with the attach_grad before it). Counted, they go in batches of their
    own; more than one request carries is refused at the call, saying so."""
    from gradserve.server import Settings

    from .conftest import LiveServer

    big = np.full(3 << 18, 2.0, np.float32)  # 3 MiB

    class Times(autograd.Function):
        def forward(self, x):
            return x * 1

        def backward(self, dy):
            return dy * nd.array(big)

    class Twice(autograd.Function):
        def forward(self, x):
            return x * 1

        def backward(self, dy):
            return dy * nd.array(big) * nd.array(big)

    with LiveServer(Settings(max_body_bytes=5 << 20)) as srv:
        client = gradserve.connect(srv.url)
        try:
            x = nd.ones(big.shape)
            x.attach_grad()
            with autograd.record():
                y = Times()(x) + Times()(x)  # 6 MiB of uploads: over one request
            y.backward()
            assert x.grad[:2].asnumpy().tolist() == [4, 4]
            with pytest.raises(gradserve.NotTraceable, match="its backward uploads 6291456 bytes"), autograd.record():
                Twice()(x)
            assert (x + 1)[:2].asnumpy().tolist() == [2, 2]
        finally:
            gradserve.set_current(None)
            client.close()


def test_float_constants_are_told_apart_by_their_bits(mode):
    f = hybridize(lambda a, k: a * k)
    x = nd.array([1.0])
    for k in (float("nan"), float("nan"), 0.0, -0.0, -0.0):
        got = f(x, k).asnumpy()
        assert np.array_equal(got, np.array([k], np.float32), equal_nan=True) and np.signbit(got[0]) == np.signbit(k)
    assert f.traces == 3


def test_metrics_count_the_instructions_of_the_programs_called(batch, http):  # noqa: F811
    def program_steps() -> float:
        text = http.get("/metrics").text
        return next(
            (float(line.split()[-1]) for line in text.splitlines() if line.startswith("gradserve_program_steps_total")),
            0.0,
        )

    assert batch.post([{"op": "array", "out": [1], "at": {"value": tensor([1, 2], [2])}}]).status_code == 200
    assert batch.post([{"op": "array", "out": [2], "at": {"value": tensor([3, 4], [2])}}]).status_code == 200
    before = program_steps()
    calls = [{"op": "call", "in": [2], "out": [10 + k], "at": {"id": 1}} for k in range(3)]
    assert batch.post([saxpy_program(), *calls]).status_code == 200
    assert program_steps() - before == 6  # three calls of a program of two instructions


def test_autograd_grad_inside_a_hybridized_function(mode):
    @hybridize
    def slope(x):
        with autograd.record():
            y = (x**3).sum()
        (g,) = autograd.grad(y, [x])
        return g

    for v in ([1.0, 2.0], [3.0, -1.0], [0.5, 0.5]):
        x = nd.array(v)
        x.attach_grad()
        np.testing.assert_allclose(slope(x).asnumpy(), [3 * a * a for a in v], rtol=1e-6)
    assert slope.traces == 1


def test_an_argument_is_its_own_slot_however_the_first_call_aliased_it(mode):
    """The trace sees each argument under a name of its own: an array passed twice at the
    first call, or passed and also read directly (a parameter), stays apart in the program."""
    f = hybridize(lambda a, b: a * b + b)
    x, y = nd.array([1.0, 2.0]), nd.array([10.0, 20.0])
    assert f(x, x).asnumpy().tolist() == [2.0, 6.0]
    assert f(x, y).asnumpy().tolist() == [20.0, 60.0] and f.traces == 1
    w = nd.array([1.0, 2.0])
    g = hybridize(lambda a: a + w)
    assert g(w).asnumpy().tolist() == [2.0, 4.0]
    assert g(nd.array([100.0, 100.0])).asnumpy().tolist() == [101.0, 102.0]


def test_a_gradient_read_before_the_trace_is_the_arguments_own_at_every_call(mode):
    def make():
        p1, p2 = nd.array([1.0, 1.0]), nd.array([5.0, 5.0])
        for p in (p1, p2):
            p.attach_grad()
        with autograd.record():
            loss = (p1 * 1 + p2 * 3).sum()
        loss.backward()
        return p1, p2

    def sgd(p):
        p -= 0.5 * p.grad
        return p * 1

    p1, p2 = make()
    assert p1.grad.asnumpy().tolist() == [1.0, 1.0]  # the proxy of p1's gradient, kept by p1
    update = hybridize(sgd)
    update(p1)
    update(p2)
    assert p1.asnumpy().tolist() == [0.5, 0.5] and p2.asnumpy().tolist() == [3.5, 3.5]


def test_alias_is_a_second_name_for_an_array_and_its_place_in_the_graph():
    from gradserve.engine.session import Session

    s = Session("a")
    ops = [
        {"op": "ones", "out": [1], "at": {"shape": [2]}},
        {"op": "attach_grad", "in": [1]},
        {"op": "alias", "in": [1], "out": [2]},
        {"op": "mul_scalar", "in": [2], "out": [3], "at": {"scalar": 3.0}, "mode": 3},
        {"op": "backward", "in": [3], "mode": 2},
        {"op": "update", "in": [2], "at": {"fn": "add", "scalar": 1.0}},
        {"op": "read", "in": [1], "at": {"grad": True}},
        {"op": "read", "in": [1]},
    ]
    assert "error" not in s.run_batch({"ops": ops[:2]})
    before = s.nbytes
    assert "error" not in s.run_batch({"ops": ops[2:3]})
    assert s.nbytes == before  # one memory, counted once while either name holds it
    reply = s.run_batch({"ops": ops[3:]})
    assert "error" not in reply, reply
    assert [v.tolist() for v in reply["values"]] == [[3.0, 3.0], [2.0, 2.0]]  # one array, one graph place
    held = s.nbytes
    s.run_batch({"ops": [{"op": "free", "in": [2]}]})
    assert s.nbytes == held and s.get(1).tolist() == [2.0, 2.0] and s.node(1) is not None
    for bad, kind in (
        ({"op": "alias", "in": [9], "out": [4]}, "UnknownHandle"),
        ({"op": "alias", "in": [1], "out": [1]}, "InvalidInput"),
        ({"op": "alias", "in": [1]}, "InvalidInput"),
        ({"op": "alias", "in": [1, 1], "out": [4]}, "InvalidInput"),
    ):
        reply = s.run_batch({"ops": [bad]})
        assert reply["error"]["kind"] == kind, (bad, reply)


def test_a_call_that_fails_while_giving_its_outputs_gives_none():
    """Outputs placed before a later one fails (quota for a copy, a handle that is gone) are
    taken back with the error: the session holds what it held, less nothing."""
    from gradserve.engine.session import Session

    def run(s, *ops):
        return s.run_batch({"ops": list(ops)})

    s = Session("t")
    run(s, {"op": "array", "out": [1], "at": {"value": np.ones(1000, np.float32)}})
    prog = [{"op": "mul_scalar", "in": [-1], "out": [-2], "at": {"scalar": 2.0}}]
    run(s, {"op": "define", "at": {"id": 1, "nargs": 1, "program": prog, "outputs": [-2, -1]}})
    held = s.nbytes
    s.limits.max_session_bytes = held + 4000 + 100  # room for the made output, not the argument's copy
    reply = run(s, {"op": "call", "in": [1], "out": [20, 21], "at": {"id": 1}})
    assert reply["error"]["kind"] == "QuotaExceeded"
    assert sorted(s.arrays) == [1] and s.nbytes == held
    s2 = Session("u")
    run(s2, *({"op": "array", "out": [h], "at": {"value": np.ones(3, np.float32)}} for h in (1, 2)))
    prog = [{"op": "add", "in": [-1, 2], "out": [-2]}]
    run(s2, {"op": "define", "at": {"id": 1, "nargs": 1, "program": prog, "outputs": [-2, 5]}})
    reply = run(s2, {"op": "call", "in": [1], "out": [20, 21], "at": {"id": 1}})
    assert reply["error"]["kind"] == "UnknownHandle" and sorted(s2.arrays) == [1, 2]


def test_a_call_links_to_the_graph_as_it_is_now(mode):
    """A trace links its outputs to the graph it saw: an argument that was not in a graph then
    but is now, or a parameter made a variable (again) since, makes a new trace."""
    f = hybridize(lambda a: a * 3)
    with autograd.record():
        f(nd.ones((2,)))  # traced with an argument in no graph
    x = nd.ones((2,))
    x.attach_grad()
    with autograd.record():
        y = f(x)
    y.backward()
    assert x.grad.asnumpy().tolist() == [3.0, 3.0]

    w = nd.ones((2,))
    w.attach_grad(grad_req="null")
    g = hybridize(lambda a: a * w)
    with autograd.record():
        g(nd.ones((2,)))
    w.attach_grad()  # now written
    with autograd.record():
        y = g(nd.ones((2,)) * 2)
    y.backward()
    assert w.grad.asnumpy().tolist() == [2.0, 2.0]
    w.attach_grad()  # a new variable node: autograd.grad asks for it
    with autograd.record():
        y = g(nd.ones((2,)) * 5)
    assert autograd.grad(y, [w])[0].asnumpy().tolist() == [5.0, 5.0]
    before = g.traces
    for _ in range(3):  # no change since: the same trace
        with autograd.record():
            g(nd.ones((2,)))
    assert g.traces == before == 1


def test_arrays_inside_a_tuple_argument_are_refused(mode):
    @hybridize
    def f(pair):
        x, y = pair
        return x * y

    with pytest.raises(MXNetError, match="positional arguments, not inside a tuple"):
        f((nd.ones(3), nd.ones(3)))
    assert f.traces == 0


def test_methods_of_slotted_classes_keep_traces_per_instance_and_let_it_go(mode):
    class Layer:
        __slots__ = ("name", "w", "__weakref__")

        def __init__(self, name, k):
            self.name, self.w = name, nd.ones((2,)) * k

        def __eq__(self, other):  # equal by name: two layers must still keep their own traces
            return isinstance(other, Layer) and self.name == other.name

        def __hash__(self):
            return hash(self.name)

        @hybridize
        def apply(self, x):
            return x * self.w

    a, b = Layer("l", 2), Layer("l", 3)
    for _ in range(2):
        assert a.apply(nd.ones((2,))).asnumpy().tolist() == [2.0, 2.0]
        assert b.apply(nd.ones((2,))).asnumpy().tolist() == [3.0, 3.0]
    assert a.apply.traces == 1 and b.apply.traces == 1
    ref = weakref.ref(a)
    del a
    gc.collect()
    assert ref() is None  # the traces do not keep the instance

    class Bare:
        __slots__ = ("w",)

        @hybridize
        def apply(self, x):
            return x

    with pytest.raises(TypeError, match="__weakref__"):
        Bare().apply(nd.ones(2))


def test_a_trace_that_fails_keeps_what_it_queued_before_as_a_plain_call_would(mode):
    w = nd.zeros((2,))

    @hybridize
    def f(x):
        w[:] = w + x  # queued first
        return nd.dot(x, nd.ones((3, 3)))  # a shape error at this line

    with pytest.raises(MXNetError, match="dot"):
        f(nd.ones((2,)))
    assert w.asnumpy().tolist() == [1.0, 1.0] and f.traces == 0


def test_each_call_of_a_program_keeps_its_own_dropout_mask():
    """Two calls on the plan path before one backward: each output's gradient is its own
    mask's (the plan's parsed attributes are shared; Dropout writes its mask there)."""
    from gradserve.engine.session import Session

    s = Session("d", seed=3)
    prog = [{"op": "Dropout", "in": [-1], "out": [-2], "at": {"p": 0.5}, "mode": 3}]
    s.run_batch(
        {
            "ops": [
                {"op": "ones", "out": [1], "at": {"shape": [64]}},
                {"op": "attach_grad", "in": [1]},
                {"op": "define", "at": {"id": 1, "nargs": 1, "outputs": [-2], "program": prog}},
                {"op": "call", "in": [1], "out": [2], "at": {"id": 1}, "mode": 3},
                {"op": "free", "in": [2]},
            ]
        }
    )
    reply = s.run_batch(
        {
            "ops": [
                {"op": "call", "in": [1], "out": [3], "at": {"id": 1}, "mode": 3},
                {"op": "call", "in": [1], "out": [4], "at": {"id": 1}, "mode": 3},
                {"op": "backward", "in": [3], "mode": 3},
                {"op": "read", "in": [3, 4]},
                {"op": "read", "in": [1], "at": {"grad": True}},
            ]
        }
    )
    assert "error" not in reply, reply
    y3, y4, g = reply["values"]
    assert not np.array_equal(y3, y4)
    np.testing.assert_array_equal(g, y3)  # x is ones: the gradient is y3's mask


def test_an_output_that_is_an_argument_or_a_parameter_is_that_array_at_every_call(mode):
    w = nd.ones((2,))

    @hybridize
    def f(x, y):
        return y, x * 2, w

    x, y = nd.ones((2,)), nd.zeros((2,))
    for _ in range(3):
        a, b, c = f(x, y)
        assert a is y and c is w  # as without hybridize: the arrays themselves, not copies
        assert b.asnumpy().tolist() == [2.0, 2.0]
    assert f.traces == 1
    a[:] = 5  # writes y, as it would without hybridize
    assert y.asnumpy().tolist() == [5.0, 5.0]


def test_attach_grad_on_an_argument_inside_a_hybridized_function_is_refused(mode):
    from gradserve.runtime import NotTraceable

    @hybridize
    def f(x):
        x.attach_grad()
        return x * 2

    x = nd.ones((2,))
    with pytest.raises(NotTraceable, match="call it before"):
        f(x)
    x.attach_grad()  # before the call: fine
    f3 = hybridize(lambda x: x * 3)
    for _ in range(2):
        with autograd.record():
            y = f3(x)
        y.backward()
        assert x.grad.asnumpy().tolist() == [3.0, 3.0]


def test_samplers_with_array_parameters_hybridize(mode):
    """A hybridized function drawing with array parameters draws afresh on each call, from the
    session's generator: a seed repeats its calls as it repeats the eager ones."""

    @hybridize
    def f(mu, sigma, p):
        return nd.random.normal(mu, sigma, shape=3) + nd.random.multinomial(p, shape=3).astype("float32")

    mu, sigma, p = nd.array([0.0, 10.0]), nd.array([1.0, 0.5]), nd.array([[0.5, 0.5], [0.0, 1.0]])
    nd.random.seed(4)
    eager = [(nd.random.normal(mu, sigma, shape=3) + nd.random.multinomial(p, shape=3).astype("float32")).asnumpy()]
    eager.append((nd.random.normal(mu, sigma, shape=3) + nd.random.multinomial(p, shape=3).astype("float32")).asnumpy())
    nd.random.seed(4)
    traced = [f(mu, sigma, p).asnumpy(), f(mu, sigma, p).asnumpy()]
    assert traced[0].shape == (2, 3) and not np.array_equal(traced[0], traced[1])
    np.testing.assert_array_equal(traced[0], eager[0])
    np.testing.assert_array_equal(traced[1], eager[1])


def test_a_lost_backward_through_a_hybridized_batchnorm_loses_its_moving_statistics(mode):
    """A hybridized call of a BatchNorm in training: the backward through its output updates
    the moving statistics (MXNet's); lost to an earlier failure in its batch, they raise
    ChangeLost when read, at the trace's call and at a call of its program."""
    from gradserve.runtime import ChangeLost

    gamma, beta = nd.ones((3,)), nd.zeros((3,))
    f = hybridize(lambda x, mm, mv: nd.BatchNorm(x, gamma, beta, mm, mv).sum())
    x = nd.array(np.arange(12, dtype=np.float32).reshape(4, 3))
    x.attach_grad()
    for call in ("trace", "program"):
        mm, mv = nd.zeros((3,)), nd.ones((3,))
        with autograd.record():
            y = f(x, mm, mv)
        assert (y._node.op.name == "call") is (call == "program")
        nd.waitall()
        big = nd.zeros((1 << 33,))  # fails: the backward after it never runs
        y.backward()
        with pytest.raises(QuotaExceeded):
            big.wait_to_read()
        for lost in (mm, mv):
            with pytest.raises(ChangeLost, match="never applied"):
                lost.asnumpy()
    # an output that does not come through the BatchNorm: its backward changes no statistics
    g = hybridize(lambda x, mm, mv: (nd.BatchNorm(x, gamma, beta, mm, mv).sum(), (x * 2).sum()))
    for call in ("trace", "program"):
        mm, mv = nd.zeros((3,)), nd.ones((3,))
        with autograd.record():
            _, y2 = g(x, mm, mv)
        nd.waitall()
        big = nd.zeros((1 << 33,))
        y2.backward()
        with pytest.raises(QuotaExceeded):
            big.wait_to_read()
        assert mm.asnumpy().tolist() == [0, 0, 0], call


def test_a_hybridized_step_that_returns_nothing_updates_at_every_call(mode):
    """A training step written without a return was refused after its first call had been
    traced, and its update dropped (``return ()`` worked)."""
    w = nd.array([1.0, 2.0])
    w.attach_grad()

    @hybridize
    def step(x):
        with autograd.record():
            loss = (w * x).sum()
        loss.backward()
        w[:] -= 0.1 * w.grad

    for _ in range(3):
        assert step(nd.ones(2)) is None
    np.testing.assert_allclose(w.asnumpy(), [0.7, 1.7], rtol=1e-6)
    with pytest.raises(InvalidInput, match="or None; got int"):
        hybridize(lambda x: 3)(nd.ones(2))


def test_a_parameter_rebound_after_its_trace_is_named_as_such(mode):
    """An array a trace reads from outside its arguments must change in place; one rebound is
    freed, and the next call failed with the program's "unknown handle 2" alone."""
    from gradserve.engine.errors import UnknownHandle

    w = nd.ones(2) * 3

    @hybridize
    def f(x):
        return x * w

    x = nd.array([1.0, 2.0])
    assert f(x).asnumpy().tolist() == [3.0, 6.0]
    w = nd.zeros(2)  # noqa: F841  (rebound: the trace's w is freed)
    gc.collect()
    nd.waitall()
    with pytest.raises(UnknownHandle, match="rebound to a new array where it should have changed in place"):
        f(x).asnumpy()
