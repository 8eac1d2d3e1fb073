"""The backward pass's helper threads (engine/parallel.py): same gradients with and
without them, jobs taken back when no helper started them, errors handed over; and the
gradients a pass computes straight into their buffers (``GradSinks``), with the matrix
product they are deferred as (``ops.matrix_product``)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from gradserve.engine import parallel, tape
from gradserve.engine.backprop import GradSinks
from gradserve.engine.ops import matrix_product
from gradserve.engine.optable import OPS
from gradserve.engine.session import Session


@pytest.fixture
def one_helper():
    before = parallel.count()
    parallel.set_helpers(1)
    yield parallel.helpers()
    parallel.set_helpers(before)


def _net(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Data and weights of a two-layer net whose first dot has two costly gradients."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((128, 256), dtype=np.float32)
    w1 = rng.standard_normal((256, 256), dtype=np.float32) / 16
    w2 = rng.standard_normal((256, 8), dtype=np.float32) / 16
    return x, w1, w2


def _mlp_grads(s: Session, seed: int, op: str = "dot") -> list[np.ndarray]:
    """The net's gradients through the engine, its products ``dot`` or ``FullyConnected`` (whose
    weights are the transposes: their gradients are given transposed back)."""
    x, w1, w2 = _net(seed)
    fc = op == "FullyConnected"
    if fc:
        w1, w2 = w1.T.copy(), w2.T.copy()
    up = [{"op": "array", "out": [h], "at": {"value": a}} for h, a in ((1, x), (2, w1), (3, w2))]

    def product(a: int, w: int, out: int, n: int) -> dict:
        if fc:
            return {"op": op, "in": [a, w], "out": [out], "mode": 3, "at": {"num_hidden": n, "no_bias": True}}
        return {"op": op, "in": [a, w], "out": [out], "mode": 3}

    ops = [
        *up,
        {"op": "attach_grad", "in": [1]},
        {"op": "attach_grad", "in": [2]},
        {"op": "attach_grad", "in": [3]},
        product(1, 2, 4, 256),
        {"op": "tanh", "in": [4], "out": [5], "mode": 3},
        product(5, 3, 6, 8),
        {"op": "sum", "in": [6], "out": [7], "mode": 3},
        {"op": "backward", "in": [7], "mode": 2},
        {"op": "grad", "in": [1], "out": [8]},
        {"op": "grad", "in": [2], "out": [9]},
        {"op": "grad", "in": [3], "out": [10]},
        {"op": "read", "in": [8, 9, 10]},
    ]
    reply = s.run_batch({"ops": ops})
    assert "error" not in reply, reply
    gx, g1, g2 = (np.array(v) for v in reply["values"])
    return [gx, g1.T, g2.T] if fc else [gx, g1, g2]


def _all_back(helpers: parallel.Helpers) -> None:
    """Every helper back in the free list, none lost: one whose job was taken back returns
    once its thread wakes and sees that, a moment after the pass that took it ended."""
    deadline = time.monotonic() + 10
    while sorted(map(id, helpers.free)) != sorted(map(id, helpers.all)) and time.monotonic() < deadline:
        time.sleep(0.001)
    assert sorted(map(id, helpers.free)) == sorted(map(id, helpers.all))


def _by_hand(seed: int) -> list[np.ndarray]:
    x, w1, w2 = _net(seed)
    h = np.tanh(x @ w1)
    dh = np.ones((128, 8), np.float32) @ w2.T * (1 - h * h)
    return [dh @ w1.T, x.T @ dh, h.T @ np.ones((128, 8), np.float32)]


@pytest.mark.parametrize("op", ["dot", "FullyConnected"])
def test_the_gradients_are_the_same_with_a_helper_and_it_ran(one_helper, op):
    helper = one_helper.all[0]
    runs = []
    for _ in range(50):  # a helper that has not started when the caller is done is not waited for
        runs.append(_mlp_grads(Session("a"), 0, op))
        if helper.ran:
            break
    assert helper.ran >= 1  # the first product's two gradients went side by side
    parallel.set_helpers(0)
    alone = _mlp_grads(Session("b"), 0, op)
    for with_helper in runs:
        for a, b, c in zip(with_helper, alone, _by_hand(0)):
            np.testing.assert_array_equal(a, b)
            np.testing.assert_allclose(a, c, rtol=1e-4, atol=1e-4)


def test_small_products_stay_in_the_callers_thread(one_helper):
    s = Session("t")
    ops = [
        {"op": "ones", "out": [1], "at": {"shape": [8, 8]}},
        {"op": "ones", "out": [2], "at": {"shape": [8, 8]}},
        {"op": "attach_grad", "in": [1]},
        {"op": "attach_grad", "in": [2]},
        {"op": "dot", "in": [1, 2], "out": [3], "mode": 3},
        {"op": "backward", "in": [3], "mode": 2},
        {"op": "grad", "in": [1], "out": [4]},
        {"op": "read", "in": [4]},
    ]
    reply = s.run_batch({"ops": ops})
    assert reply["values"][0].tolist() == [[8.0] * 8] * 8
    assert one_helper.all[0].ran == 0  # 512 multiply-adds: not worth a hand-off


def test_a_job_no_helper_started_is_run_by_the_caller():
    free: list[parallel.Helper] = []
    h = parallel.Helper(free, start=False)  # its thread never runs: the job stays queued
    who: list[int] = []
    h.give(lambda: who.append(threading.get_ident()) or 42)
    assert h.take() == 42
    assert who == [threading.get_ident()]
    assert h.ran == 0


def test_a_helpers_error_is_raised_by_the_caller(one_helper):
    h = one_helper.pick()
    assert h is not None

    started = threading.Event()

    def fails():
        started.set()
        raise ValueError("in the helper")

    h.give(fails)
    assert started.wait(10)  # the helper runs it (a job not started yet would be taken back)
    with pytest.raises(ValueError, match="in the helper"):
        h.take()
    assert h.ran == 1
    assert one_helper.free == [h]  # back for the next job
    h2 = one_helper.pick()
    h2.give(lambda: 7)
    assert h2.take() == 7


def test_with_every_helper_busy_the_pass_computes_alone(one_helper):
    busy = one_helper.pick()
    assert one_helper.pick() is None
    grads = _mlp_grads(Session("t"), 1)
    assert busy.ran == 0
    for a, c in zip(grads, _by_hand(1)):
        np.testing.assert_allclose(a, c, rtol=1e-4, atol=1e-4)
    one_helper.free.append(busy)


def test_sessions_in_many_threads_share_a_helper(one_helper):
    want = _by_hand(2)
    errors: list[BaseException] = []

    def work():
        try:
            for _ in range(3):
                for a, c in zip(_mlp_grads(Session("t"), 2), want):
                    np.testing.assert_allclose(a, c, rtol=1e-4, atol=1e-4)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    _all_back(one_helper)


def test_the_number_of_helpers_comes_from_the_environment(monkeypatch):
    before = parallel.count()
    try:
        monkeypatch.setenv("GRADSERVE_HELPERS", "0")
        parallel._count = None
        parallel._helpers = None
        assert parallel.helpers() is None and parallel.count() == 0
        monkeypatch.setenv("GRADSERVE_HELPERS", "two")
        parallel._count = None
        with pytest.raises(ValueError, match="GRADSERVE_HELPERS"):
            parallel.helpers()
        monkeypatch.setenv("GRADSERVE_HELPERS", "-1")  # (refused, as the server's settings refuse it)
        parallel._count = None
        with pytest.raises(ValueError, match="0 or more"):
            parallel.helpers()
        monkeypatch.setenv("GRADSERVE_HELPERS", "+2")  # (taken, as the settings take it)
        assert parallel.set_helpers(None) is None and parallel.count() == 2
        assert parallel.set_helpers(3) == 2
        with pytest.raises(ValueError):
            parallel.set_helpers(-1)
    finally:
        parallel.set_helpers(before)


def test_helpers_can_be_turned_off_and_on_without_stopping_them(one_helper):
    parallel.enable(False)
    try:
        assert parallel.helpers() is None
        _mlp_grads(Session("t"), 3)
        assert one_helper.all[0].ran == 0
    finally:
        parallel.enable(True)
    assert parallel.helpers() is one_helper and one_helper.all[0].thread.is_alive()


def test_deferred_cotangents_are_computed_once_needed():
    calls: list[int] = []
    d = tape.Deferred(lambda a, b: calls.append(1) or a + b, (2, 3), 1)
    assert calls == [] and d() == 5 and calls == [1]


def test_a_weight_used_twice_gets_both_gradients(one_helper):
    """The outer dot's weight gradient goes to a helper (a variable's: wanted only at the
    end); the inner dot's is added to it once both are there."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((128, 256), dtype=np.float32)
    w = rng.standard_normal((256, 256), dtype=np.float32) / 16
    h = np.tanh(x @ w)
    dh = np.ones((128, 256), np.float32) @ w.T * (1 - h * h)
    want = h.T @ np.ones((128, 256), np.float32) + x.T @ dh
    ops = [
        {"op": "array", "out": [1], "at": {"value": x}},
        {"op": "array", "out": [2], "at": {"value": w}},
        {"op": "attach_grad", "in": [2]},
        {"op": "dot", "in": [1, 2], "out": [3], "mode": 3},
        {"op": "tanh", "in": [3], "out": [4], "mode": 3},
        {"op": "dot", "in": [4, 2], "out": [5], "mode": 3},
        {"op": "backward", "in": [5], "mode": 2},
        {"op": "grad", "in": [2], "out": [6]},
        {"op": "read", "in": [6]},
    ]
    for _ in range(50):
        reply = Session("t").run_batch({"ops": ops})
        np.testing.assert_allclose(reply["values"][0], want, rtol=1e-4, atol=1e-3)
        if one_helper.all[0].ran:
            break
    assert one_helper.all[0].ran >= 1
    _all_back(one_helper)


class _Fake:
    """An op for tape-level tests: its eager VJP gives what ``cts`` returns."""

    name = "fake"
    vjp = None

    def __init__(self, cts):
        self.eager_vjp = lambda at, g, y, *xs: cts()


def test_a_pass_that_fails_gets_its_helpers_back_first(one_helper):
    big = tape.PARALLEL_COST
    started = threading.Event()

    def slow():
        started.set()
        return np.ones(2)

    def fails(at, g, y, *xs):
        assert started.wait(10)
        raise ValueError("this op's gradient failed")

    v = tape.Node(grad=np.zeros(2))
    leaf = tape.Node(grad=np.zeros(2))
    middle = tape.Node(_Fake(lambda: None), parents=(leaf,), xs=(np.ones(2),), y=np.ones(2))
    middle.op.eager_vjp = fails
    head = tape.Node(
        _Fake(lambda: (tape.Deferred(slow, (), big), tape.Deferred(np.ones, (2,), big))),
        parents=(v, middle),
        xs=(np.ones(2), np.ones(2)),
        y=np.ones(2),
    )
    with pytest.raises(ValueError, match="this op's gradient failed"):
        tape.backward(None, [head], [np.ones(2)], np.add, eager=True, helpers=one_helper)
    _all_back(one_helper)  # the helper's job was taken before the error left


def test_a_pending_cotangent_is_taken_once():
    calls: list[int] = []

    class OneShot:
        def take(self):
            calls.append(1)
            raise ValueError("once")

    p = tape.Pending(OneShot())
    with pytest.raises(ValueError):
        p.take()
    assert p.take() is None and calls == [1]


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="no fork here")
def test_a_forked_child_starts_its_own_helpers(one_helper):
    """A child forked while the parent has helpers gets none of their threads: it must not
    hand jobs to them (they would never run, or wait on a lock held at the fork)."""
    import os

    parent_helpers = parallel.helpers()
    _mlp_grads(Session("t"), 5)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave without running the parent's atexit handlers
        ok = 0
        try:
            ok = int(parallel.helpers() is not parent_helpers)
            grads = _mlp_grads(Session("c"), 5)
            for a, c in zip(grads, _by_hand(5)):
                np.testing.assert_allclose(a, c, rtol=1e-4, atol=1e-4)
            ok += 2 * int(parallel.helpers().all[0].thread.is_alive())
        finally:
            os.write(w, bytes([ok]))
            os._exit(0)
    os.close(w)
    got = os.read(r, 1)
    os.waitpid(pid, 0)
    assert got == bytes([3])  # its own helpers, alive, and the right gradients


def test_stopped_helpers_end_idle_or_once_their_job_is_taken():
    helpers = parallel.Helpers(2)
    busy = helpers.pick()
    started, go_on = threading.Event(), threading.Event()

    def job():
        started.set()
        go_on.wait(10)
        return 1

    busy.give(job)
    assert started.wait(10)
    helpers.stop()
    idle = helpers.all[0] if helpers.all[0] is not busy else helpers.all[1]
    idle.thread.join(10)
    assert not idle.thread.is_alive()  # idle: ended at once
    assert busy.thread.is_alive()  # still running its job
    go_on.set()
    assert busy.take() == 1
    busy.thread.join(10)
    assert not busy.thread.is_alive()  # let go once its job was taken
    assert helpers.free == []


def test_every_caller_gets_its_own_jobs_result(one_helper):
    """Many threads giving jobs to one helper and taking them (or taking them back): each
    gets its own job's result, never another's."""
    wrong: list[tuple[int, object]] = []

    def work(me: int) -> None:
        for i in range(1500):
            h = one_helper.pick()
            if h is None:
                continue
            token = (me, i)
            h.give(lambda token=token: token)
            got = h.take()
            if got != token:
                wrong.append((me, got))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not wrong, wrong[:5]
    _all_back(one_helper)


class _Op:
    name = "op"


def test_a_dots_gradients_are_deferred_as_the_product_the_buffers_take():
    """dot's eager VJP defers both gradients as ``matrix_product``, the form GradSinks writes
    into a variable's buffer, for every pair of transposes."""
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((3, 4), dtype=np.float32), rng.standard_normal((4, 2), dtype=np.float32)
    g = rng.standard_normal((3, 2), dtype=np.float32)
    for ta in (False, True):
        for tb in (False, True):
            at = {"transpose_a": ta, "transpose_b": tb, "forward_stype": None}
            ga, gb = OPS["dot"].eager_vjp(at, g, None, a.T.copy() if ta else a, b.T.copy() if tb else b)
            assert ga.fn is matrix_product and gb.fn is matrix_product
            np.testing.assert_allclose(ga(), (g @ b.T).T if ta else g @ b.T, rtol=1e-5)
            np.testing.assert_allclose(gb(), (a.T @ g).T if tb else a.T @ g, rtol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.int32])
@pytest.mark.parametrize("layout", ["C", "F", "strided", "mixed"])
def test_matrix_product_is_np_dot(dtype, layout):
    """``np.matmul`` where BLAS reads both operands as they lie, ``np.dot`` elsewhere: the same
    product either way, with and without ``out``, for every layout."""
    rng = np.random.default_rng(3)
    a = (rng.standard_normal((10, 12)) * 4).astype(dtype)
    b = (rng.standard_normal((12, 6)) * 4).astype(dtype)
    if layout == "F":
        a, b = np.asfortranarray(a), np.asfortranarray(b)
    elif layout == "strided":
        a, b = np.repeat(a, 2, axis=1)[:, ::2], np.repeat(b, 2, axis=0)[::2]
        assert not (a.flags.c_contiguous or a.flags.f_contiguous)
    elif layout == "mixed":
        a = np.asfortranarray(a)
    want = np.dot(a, b)
    got = matrix_product(a, b)
    assert got.dtype == want.dtype and got.shape == want.shape
    tol = 1e-2 if dtype == np.float16 else 1e-5
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    out = np.empty_like(want)
    assert matrix_product(a, b, out) is out
    np.testing.assert_allclose(out, want, rtol=tol, atol=tol)


def test_matrix_product_takes_matmul_where_blas_reads_the_operands(monkeypatch):
    """The point of ``matrix_product``: ``np.matmul`` (no zeroing of the output first) for
    float32 and float64 operands BLAS reads as they lie, ``np.dot`` for the others."""
    used: list[str] = []
    matmul, dot = np.matmul, np.dot
    monkeypatch.setattr(np, "matmul", lambda *a, **k: used.append("matmul") or matmul(*a, **k))
    monkeypatch.setattr(np, "dot", lambda *a, **k: used.append("dot") or dot(*a, **k))
    a = np.ones((4, 6), np.float32)
    b = np.ones((6, 3), np.float32)
    for x, y, want in (
        (a, b, "matmul"),
        (a.T.copy().T, b, "matmul"),  # F-contiguous
        (a.astype(np.float64), b.astype(np.float64), "matmul"),
        (a[:, ::2], b[::2], "dot"),  # strided
        (a.astype(np.float16), b.astype(np.float16), "dot"),
        (a, b.astype(np.float64), "dot"),  # mixed dtypes
    ):
        used.clear()
        np.testing.assert_array_equal(matrix_product(x, y), dot(x, y))
        assert used == [want], (x.dtype, y.dtype, x.strides, used)


@pytest.mark.parametrize("shape", [(6, 4), (6, 2, 2)])
def test_a_fully_connected_weight_gradient_is_computed_into_the_buffer(shape):
    """FullyConnected's weight gradient takes the form GradSinks writes into the variable's
    buffer (a view of data as a matrix); its data gradient is deferred too."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal(shape, dtype=np.float32)
    w = rng.standard_normal((3, 4), dtype=np.float32)
    g = rng.standard_normal((6, 3), dtype=np.float32)
    at = OPS["FullyConnected"].parse_attrs({"num_hidden": 3, "no_bias": True})
    gx, gw = OPS["FullyConnected"].eager_vjp(at, g, None, x, w)
    assert isinstance(gx, tape.Deferred) and isinstance(gw, tape.Deferred)
    wn = tape.Node(grad=np.zeros((3, 4), np.float32))
    cts = GradSinks([wn], [wn], [])((None, wn), (gx, gw))
    assert cts[1].args[2] is wn.grad and cts[1]() is wn.grad
    np.testing.assert_allclose(wn.grad, g.T @ x.reshape(6, 4), rtol=1e-5)
    np.testing.assert_allclose(gx(), (g @ w).reshape(shape), rtol=1e-5)


def test_a_dots_weight_gradient_is_computed_into_the_buffer_once():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((3, 4), dtype=np.float32), rng.standard_normal((4, 2), dtype=np.float32)
    w = tape.Node(grad=np.zeros((3, 2), np.float32))
    sinks = GradSinks([w], [w], [])
    kept = tape.Deferred(np.add, (1, 2), 1)
    product = tape.Deferred(matrix_product, (a, b), 24)
    cts = sinks((None, w, w), (kept, product, tape.Deferred(matrix_product, (a, b), 24)))
    assert cts[0] is kept  # not a variable's
    assert cts[1].args[2] is w.grad and cts[1]() is w.grad
    np.testing.assert_array_equal(w.grad, a @ b)
    assert len(cts[2].args) == 2  # a buffer takes one gradient: a second is added after
    assert len(sinks((w,), (tape.Deferred(matrix_product, (a, b), 24),))[0].args) == 2


def test_a_buffer_is_left_alone_where_it_cannot_take_the_product():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((3, 4), dtype=np.float32), rng.standard_normal((4, 2), dtype=np.float32)

    def rewritten(w, order=None, head_grads=(), args=(a, b)):
        cts = GradSinks([w], order or [w], list(head_grads))((w,), (tape.Deferred(matrix_product, args, 24),))
        return len(cts[0].args) == 3

    assert rewritten(tape.Node(grad=np.zeros((3, 2), np.float32)))
    assert not rewritten(tape.Node(grad=np.zeros((3, 2), np.float32), grad_req="add"))
    assert not rewritten(tape.Node(grad=np.zeros((3, 2), np.float64)))  # another dtype
    assert not rewritten(tape.Node(grad=np.zeros((2, 3), np.float32).T))  # not C-contiguous
    assert not rewritten(tape.Node(grad=np.zeros((3, 2), np.float32)), args=(a[None], b))  # not 2-D
    buf = np.zeros((3, 2), np.float32)
    assert not rewritten(tape.Node(grad=buf), head_grads=[buf[:1]])  # the pass reads it
    reader = tape.Node(_Op(), None, (), (np.ones(2), buf[1:]), None)
    w = tape.Node(grad=buf)
    assert not rewritten(w, order=[w, reader])
    other = tape.Node(_Op(), None, (), (np.ones((3, 2), np.float32),), None)
    assert rewritten(tape.Node(grad=buf), order=[w, other])
