"""autograd beyond the tutorial, in both modes: higher-order gradients through
autograd.grad, custom Functions (traced, so they run remotely), mark_variables,
detach, grad_req, and MXNet's misuse errors at the call."""

from __future__ import annotations

import numpy as np
import pytest

from gradserve import MXNetError, autograd, nd
from gradserve.engine.errors import AutogradError


def test_third_derivative_through_nested_grad(mode):
    x = nd.array([0.5, 1.0, 2.0])
    x.attach_grad()
    with autograd.record():
        y = (x**3).sum()
        (d1,) = autograd.grad(y, [x], create_graph=True)
        (d2,) = autograd.grad(d1.sum(), [x], create_graph=True)
        d3_head = d2.sum()
    d3_head.backward()
    np.testing.assert_allclose(d1.asnumpy(), 3 * np.array([0.5, 1, 2]) ** 2)
    np.testing.assert_allclose(d2.asnumpy(), 6 * np.array([0.5, 1, 2]))
    np.testing.assert_allclose(x.grad.asnumpy(), [6, 6, 6])


@pytest.mark.parametrize("inside", [True, False], ids=["grad-recorded", "grad-after"])
def test_a_recorded_gradient_outlives_the_graph_its_pass_let_go_where_mxnets_does(mode, inside):
    """MXNet 1.9.1: grad(create_graph=True, retain_graph=False) of sin(x) gives cos(x) * 1,
    whose graph reaches x outside the freed one: differentiated again, -sin(x). (It was refused
    with "no inputs": the client's record of the gradient hung on the freed heads alone.)"""
    x = nd.array([1.0, 2.0])
    x.attach_grad()
    with autograd.record():
        y = nd.sin(x)
        if inside:
            (gx,) = autograd.grad(y, [x], create_graph=True, retain_graph=False)
    if not inside:
        with autograd.record():
            (gx,) = autograd.grad(y, [x], create_graph=True, retain_graph=False)
    with autograd.record():
        s = gx.sum()
    s.backward()
    np.testing.assert_allclose(x.grad.asnumpy(), -np.sin([1.0, 2.0]), rtol=1e-6)
    np.testing.assert_allclose(gx.asnumpy(), np.cos([1.0, 2.0]), rtol=1e-6)


def test_a_recorded_gradient_that_reaches_x_only_through_the_freed_graph_has_no_inputs(mode):
    """exp's gradient is g * exp(x), the freed forward's own output: MXNet's "no inputs"."""
    x = nd.array([1.0, 2.0])
    x.attach_grad()
    with autograd.record():
        y = nd.exp(x)
        (gx,) = autograd.grad(y, [x], create_graph=True, retain_graph=False)
        s = gx.sum()
    s.backward()
    with pytest.raises(AutogradError, match="no inputs"):
        x.grad.asnumpy()


@pytest.mark.parametrize("second_order", [False, True])
def test_a_pass_through_a_part_an_earlier_backward_freed_is_refused_as_in_mxnet(mode, second_order):
    """z = sin(x) * w; y.backward() frees sin's node; z.backward() would reach x only through it.
    It gave w's gradient and left x's as it was, with no error: MXNet 1.9.1 raises. So does a
    recorded gradient of x * x * x, whose graph reads the freed x * x. The refused pass writes
    no gradient, and the graph kept by retain_graph=True takes the pass."""
    x = nd.array([1.0, 2.0])
    w = nd.array([3.0])
    x.attach_grad()
    w.attach_grad()
    if second_order:
        with autograd.record():
            (gx,) = autograd.grad(x * x * x, [x], create_graph=True, retain_graph=False)
            z = gx.sum() * w
    else:
        with autograd.record():
            y = nd.sin(x)
            z = y * w
        y.backward()
    before = x.grad.asnumpy().tolist()
    z.backward()
    with pytest.raises(AutogradError, match="earlier backward freed"):
        w.grad.asnumpy()
    assert x.grad.asnumpy().tolist() == before and w.grad.asnumpy().tolist() == [0.0]
    with autograd.record():  # the same with the graph kept: the pass goes through
        y = x * x * x if second_order else nd.sin(x)
        if second_order:
            (gx,) = autograd.grad(y, [x], create_graph=True)
            z = gx.sum() * w
        else:
            z = y * w
    if not second_order:
        y.backward(retain_graph=True)
    z.backward()
    want = [18.0, 36.0] if second_order else np.cos([1.0, 2.0]) * 3
    np.testing.assert_allclose(x.grad.asnumpy(), want, rtol=1e-6)


def test_a_refused_pass_through_a_freed_part_leaves_batchnorms_statistics_as_they_were(mode):
    """BatchNorm's VJP changes its moving statistics in place: a pass refused for reaching a
    freed part ran it first, and every retry moved them again. MXNet 1.9.1 leaves them."""
    gamma, beta = nd.ones((3,)), nd.zeros((3,))
    gamma.attach_grad()
    x = nd.array(np.arange(12, dtype=np.float32).reshape(4, 3))
    x.attach_grad()
    mean, var = nd.zeros((3,)), nd.ones((3,))
    with autograd.record():
        y = x * 2
        a = y.sum()
        b = nd.BatchNorm(y, gamma, beta, mean, var).sum()
    a.backward()
    for _ in range(2):
        b.backward()
        with pytest.raises(AutogradError, match="earlier backward freed"):
            nd.waitall()
    assert mean.asnumpy().tolist() == [0, 0, 0] and var.asnumpy().tolist() == [1, 1, 1]
    assert gamma.grad.asnumpy().tolist() == [0, 0, 0]


def test_second_derivative_of_a_network_expression(mode):
    x = nd.array([[0.3, -0.2], [0.1, 0.4]])
    w = nd.array([[1.0, -1.0], [0.5, 2.0]])
    x.attach_grad()
    with autograd.record():
        y = nd.tanh(nd.dot(x, w)).sum()
        (gx,) = autograd.grad(y, [x], create_graph=True)
        z = (gx * gx).sum()
    z.backward()

    # reference: finite differences of z(x) computed with first-order grads
    def z_of(xv):
        xa = nd.array(xv)
        xa.attach_grad()
        with autograd.record():
            yy = nd.tanh(nd.dot(xa, w)).sum()
        yy.backward()
        return float((xa.grad.asnumpy().astype(np.float64) ** 2).sum())

    x0 = x.asnumpy().astype(np.float64)
    eps = 1e-2
    num = np.zeros_like(x0)
    for i in np.ndindex(x0.shape):
        d = np.zeros_like(x0)
        d[i] = eps
        num[i] = (z_of(x0 + d) - z_of(x0 - d)) / (2 * eps)
    np.testing.assert_allclose(x.grad.asnumpy(), num, rtol=2e-2, atol=2e-3)


def test_grad_without_create_graph_frees_the_graph(mode):
    x = nd.array([1.0, 2.0])
    x.attach_grad()
    with autograd.record():
        y = (x * x).sum()
    (g,) = autograd.grad(y, [x])
    assert g.asnumpy().tolist() == [2, 4]
    assert x.grad.asnumpy().tolist() == [0, 0]  # autograd.grad leaves .grad alone
    with pytest.raises(MXNetError, match="retain_graph"):
        autograd.grad(y, [x])


class Sigmoid(autograd.Function):
    def forward(self, x):
        y = 1 / (1 + nd.exp(-x))
        self.save_for_backward(y)
        return y

    def backward(self, dy):
        (y,) = self.saved_tensors
        return dy * y * (1 - y)


class MulAdd(autograd.Function):
    """Two inputs, two outputs."""

    def forward(self, a, b):
        self.save_for_backward(a, b)
        return a * b, a + b

    def backward(self, d_prod, d_sum):
        a, b = self.saved_tensors
        return d_prod * b + d_sum, d_prod * a + d_sum


def test_custom_function_gradient(mode):
    x = nd.array([-1.0, 0.0, 2.0])
    x.attach_grad()
    with autograd.record():
        z = (Sigmoid()(x) * 3).sum()
    z.backward()
    s = 1 / (1 + np.exp(-np.array([-1.0, 0.0, 2.0])))
    np.testing.assert_allclose(x.grad.asnumpy(), 3 * s * (1 - s), rtol=1e-6)


def test_custom_function_with_two_inputs_and_outputs(mode):
    a, b = nd.array([1.0, 2.0]), nd.array([3.0, 5.0])
    a.attach_grad()
    b.attach_grad()
    with autograd.record():
        p, s = MulAdd()(a, b)
        loss = (p * 2 + s * s).sum()
    loss.backward()
    # dloss/da = 2b + 2(a+b), dloss/db = 2a + 2(a+b)
    assert a.grad.asnumpy().tolist() == [2 * 3 + 2 * 4, 2 * 5 + 2 * 7]
    assert b.grad.asnumpy().tolist() == [2 * 1 + 2 * 4, 2 * 2 + 2 * 7]


def test_a_functions_gradient_of_a_shape_that_broadcasts_is_broadcast_as_in_mxnet(mode):
    """MXNet writes a Function's gradient with ``igrad[:] = ret``, which broadcasts (it was
    refused as a shape mismatch); one that does not broadcast is still refused."""
    from gradserve.engine.errors import ShapeError

    class Sum(autograd.Function):
        def forward(self, x):
            return x.sum()

        def backward(self, dy):
            return dy  # shape (1,): the input's is (2,)

    class Wrong(Sum):
        def backward(self, dy):
            return nd.ones((3,))

    class Wide(Sum):
        def backward(self, dy):
            return nd.ones((1, 2)) * 5  # (1, 2) for (2,): a leading axis of length 1 dropped

    x = nd.array([1.0, 2.0])
    x.attach_grad()
    with autograd.record():
        y = Sum()(x) * 3
    y.backward()
    assert x.grad.asnumpy().tolist() == [3.0, 3.0]
    with autograd.record():
        y = Wide()(x)
    y.backward()
    assert x.grad.asnumpy().tolist() == [5.0, 5.0]
    with autograd.record(), pytest.raises(ShapeError, match=r"gradient shape \(3,\) does not match"):
        Wrong()(x)


def test_custom_function_backward_cannot_read_values(mode):
    class Peek(autograd.Function):
        def forward(self, x):
            return x * 1

        def backward(self, dy):
            dy.asnumpy()
            return dy

    x = nd.ones(2)
    x.attach_grad()
    with autograd.record(), pytest.raises(MXNetError, match="cannot read values"):
        Peek()(x)


def test_a_function_giving_back_an_array_of_the_graph_is_refused_as_in_mxnet(mode):
    """Its output would become the Function's: a variable given back would lose its own node
    (and its gradient with it, silently)."""

    class Same(autograd.Function):
        def forward(self, x):
            return x

        def backward(self, dy):
            return dy * 5

    x = nd.array([1.0, 2.0])
    x.attach_grad()
    with autograd.record(), pytest.raises(MXNetError, match="already in a computational graph"):
        Same()(x)
    with autograd.record():
        y = (x * 2).sum()
    y.backward()
    assert x.grad.asnumpy().tolist() == [2, 2]  # still a variable
    c = nd.array([3.0, 4.0])  # an input in no graph: given back, it becomes the Function's output
    with autograd.record():
        z = (Same()(c) * x).sum()
    z.backward()
    assert x.grad.asnumpy().tolist() == [3, 4]


def test_mark_variables_detach_and_grad_req(mode):
    x = nd.array([1.0, 2.0])
    gbuf = nd.zeros(2)
    autograd.mark_variables([x], [gbuf])
    with autograd.record():
        y = (x * x + x.detach() * 10).sum()
    y.backward()
    assert gbuf.asnumpy().tolist() == [2, 4]
    assert x.grad.asnumpy().tolist() == [2, 4]
    w = nd.ones(2)
    w.attach_grad(grad_req="null")
    with autograd.record():
        head = (w * 5).sum()
        with pytest.raises(MXNetError, match="no inputs in computation graph that require gradients"):
            head.backward()  # as MXNet: at the call, nothing sent
    assert w.grad.asnumpy().tolist() == [0, 0]
    with autograd.record():
        v = nd.stop_gradient(x * 2) * x
    v.backward()
    assert x.grad.asnumpy().tolist() == [2, 4]  # only the direct path
    with pytest.raises(AttributeError):
        x.grad = nd.ones(2)


def test_predict_and_train_modes_reach_the_engine(mode):
    x = nd.ones((200, 50))
    with autograd.train_mode():
        dropped = nd.Dropout(x, p=0.5)
    with autograd.predict_mode():
        kept = nd.Dropout(x, p=0.5)
    frac = float((dropped == 0).mean().asscalar())
    assert 0.4 < frac < 0.6
    assert set(np.unique(dropped.asnumpy())) <= {0.0, 2.0}
    assert kept.asnumpy().sum() == x.size


def test_variables_the_gradient_does_not_reach_get_zeros_and_misuse_is_mxnets(mode):
    """MXNet 1.9.1, checked with the reference install: a variable in the graph that no gradient
    reaches is written 0; backward on a graph whose way to the variables was freed, and grad for a
    variable the heads do not depend on, raise at the call."""
    x = nd.array([1.0, -2.0])
    x.attach_grad()
    x.grad[:] = 5
    with autograd.record():
        c = (x > 0) * 1
    c.backward()
    assert x.grad.asnumpy().tolist() == [0, 0]

    with autograd.record():
        b = x * 2
        c = b * 3
        d = b * 4
    d.backward()
    assert x.grad.asnumpy().tolist() == [8, 8]
    with pytest.raises(MXNetError, match="no inputs in computation graph"):
        c.backward()

    y, z = nd.array([1.0, 2.0]), nd.array([3.0, 4.0])
    y.attach_grad()
    z.attach_grad()
    with autograd.record():
        e = y * 2
    with pytest.raises(MXNetError, match="2-th variable because it is unreachable"):
        autograd.grad(e, [y, z])
    assert [g.asnumpy().tolist() for g in autograd.grad(e, [y])] == [[2, 2]]


def _f32(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_a_weights_gradient_lands_in_the_buffer_a_user_holds(mode):
    """A dot's weight gradient is computed into the gradient buffer itself (engine's
    GradSinks): a handle on ``w.grad`` taken before sees every pass, and a weight used
    twice, or twice in one dot, gets the sum."""
    xv, wv, sq = _f32((5, 3), 0), _f32((3, 4), 1), _f32((3, 3), 2)
    x, w, s = nd.array(xv), nd.array(wv), nd.array(sq)
    w.attach_grad()
    s.attach_grad()
    held = w.grad
    for k in (1.0, 2.0):
        with autograd.record():
            y = nd.dot(x * k, w)
        y.backward()
        np.testing.assert_allclose(held.asnumpy(), (xv * k).T @ np.ones((5, 4), np.float32), rtol=1e-5)
    with autograd.record():
        y = nd.dot(x, w) + nd.dot(x * 2, w)
    y.backward()
    np.testing.assert_allclose(held.asnumpy(), 3 * xv.T @ np.ones((5, 4), np.float32), rtol=1e-5)
    with autograd.record():
        z = nd.dot(s, s)
    z.backward()
    ones = np.ones((3, 3), np.float32)
    np.testing.assert_allclose(s.grad.asnumpy(), ones @ sq.T + sq.T @ ones, rtol=1e-5)


def test_a_gradient_buffer_the_graph_reads_is_read_before_it_is_written(mode):
    """Where the graph reads a variable's gradient buffer (as an op's input or as the head
    gradient), the whole pass sees its old values: the new gradient is written after it."""
    wv, gv, xv = _f32((3, 3), 3), _f32((3, 3), 4), _f32((3, 3), 5)
    w, x = nd.array(wv), nd.array(xv)
    w.attach_grad()
    x.attach_grad()
    ones = np.ones((3, 3), np.float32)
    w.grad[:] = nd.array(gv)
    with autograd.record():
        y = nd.dot(x * w.grad, w)  # x's gradient reads the buffer after w's is found
    y.backward()
    np.testing.assert_allclose(w.grad.asnumpy(), (xv * gv).T @ ones, rtol=1e-5)
    np.testing.assert_allclose(x.grad.asnumpy(), (ones @ wv.T) * gv, rtol=1e-5)
    w.grad[:] = nd.array(gv)
    with autograd.record():
        y = nd.dot(x, w) + x
    y.backward(w.grad)  # the head gradient is the buffer: x's gradient is that gradient too
    np.testing.assert_allclose(w.grad.asnumpy(), xv.T @ gv, rtol=1e-5)
    np.testing.assert_allclose(x.grad.asnumpy(), gv @ wv.T + gv, rtol=1e-5)


class _TimesGradOf(autograd.Function):
    """Passes x on; its backward multiplies by ``g`` (a gradient buffer) as it is then."""

    def __init__(self, g):
        super().__init__()
        self.g = g

    def forward(self, x):
        return x * 1

    def backward(self, dy):
        return dy * self.g


def test_a_functions_backward_reads_the_old_gradient_buffer(mode):
    """The dot after the Function runs its backward first; the Function's backward then
    reads ``w.grad``, which must still hold what it held before the pass."""
    xv, wv = _f32((3, 3), 6), _f32((3, 3), 7)
    x, w = nd.array(xv), nd.array(wv)
    x.attach_grad()
    w.attach_grad()
    w.grad[:] = 5
    with autograd.record():
        y = nd.dot(_TimesGradOf(w.grad)(x), w)
    y.backward()
    ones = np.ones((3, 3), np.float32)
    np.testing.assert_allclose(w.grad.asnumpy(), xv.T @ ones, rtol=1e-5)
    np.testing.assert_allclose(x.grad.asnumpy(), 5 * (ones @ wv.T), rtol=1e-5)


def test_variables_sharing_one_gradient_buffer_get_one_whole_gradient(mode):
    """Two variables marked with the same gradient array (``mark_variables``): the array
    ends up holding one of the two gradients whole, as writing them one after the other
    gives, never a mix (a dot computed into the shared buffer must not clobber the other
    variable's partial sum kept there)."""
    av, bv, cv, xv, yv = (_f32((3, 3), s) for s in (8, 9, 10, 11, 12))
    a, b, c, x, y = (nd.array(v) for v in (av, bv, cv, xv, yv))
    g = nd.zeros((3, 3))
    autograd.mark_variables([x, y], [g, g])
    with autograd.record():
        z = nd.dot(a, x) + nd.dot(b, y) + nd.dot(c, x)
    z.backward()
    ones = np.ones((3, 3), np.float32)
    gx, gy = (av + cv).T @ ones, bv.T @ ones
    got = g.asnumpy()
    assert np.allclose(got, gx, rtol=1e-5) or np.allclose(got, gy, rtol=1e-5), got


def test_a_gradient_buffer_that_is_an_ops_output_is_read_before_it_is_written(mode):
    """exp's VJP reads its output: a variable whose gradient buffer is that output (marked
    after it was recorded) gets its gradient after exp's VJP has read the old values."""
    xv, av, wv = _f32((2, 2), 13), _f32((2, 2), 14), _f32((2, 2), 15)
    x, a, w = nd.array(xv), nd.array(av), nd.array(wv)
    x.attach_grad()
    with autograd.record():
        t = nd.exp(x)
    autograd.mark_variables([w], [t])  # w's gradient buffer is t's array
    with autograd.record():
        u = nd.dot(a, w)
    autograd.backward([t, u])  # the dot's VJP runs before exp's
    np.testing.assert_allclose(x.grad.asnumpy(), np.exp(xv), rtol=1e-5)
    np.testing.assert_allclose(t.asnumpy(), av.T @ np.ones((2, 2), np.float32), rtol=1e-5)


def test_writing_a_recorded_value_into_an_array_is_a_copy_or_refused_as_in_mxnet(mode):
    """Inside record(), ``y[:] = v`` (and ``v.copyto(y)``) of a recorded v makes y a recorded
    copy of v, as in MXNet; a part written (``y[0] = v``) or ``y += v`` is refused with
    MXNet's error. (Both used to write the values and lose the gradient.)"""
    from gradserve.engine.errors import AutogradError

    k = nd.ones(2)
    k.attach_grad()
    with autograd.record():
        y = nd.zeros(2)
        y[:] = k * 3
        loss = y.sum() + k.sum()
    loss.backward()
    assert k.grad.asnumpy().tolist() == [4.0, 4.0]
    with autograd.record():
        y = nd.zeros(2)
        k.copyto(y)
        loss = (y * 3).sum()
    loss.backward()
    assert k.grad.asnumpy().tolist() == [3.0, 3.0]
    for write in (
        lambda y: y.__setitem__(0, (k * 3)[0]),
        lambda y: y.__setitem__(slice(0, 1), k[0:1]),
        lambda y: y.__iadd__(k),
    ):
        with autograd.record():
            y = nd.zeros(2)
            with pytest.raises(AutogradError, match="Inplace operations"):
                write(y)
    y = nd.zeros(2)
    y[:] = k  # outside record: a write, nothing recorded
    assert y.asnumpy().tolist() == [1.0, 1.0]


def test_a_recorded_value_that_broadcasts_is_written_whole_as_a_recorded_broadcast(mode):
    """``y[:] = v`` of a recorded v of another shape that broadcasts to y's: MXNet broadcasts
    then copies, both recorded, so the gradient is summed back down (it was refused)."""
    from gradserve.engine.errors import AutogradError

    x = nd.array([1.0, 2.0, 3.0])
    x.attach_grad()
    w = nd.array([[1, 2, 3], [4, 5, 6]])
    for write in (lambda y: y.__setitem__(slice(None), x), lambda y: y.__setitem__(..., x.reshape((1, 3)))):
        with autograd.record():
            y = nd.ones((2, 3))
            write(y)
            z = (y * w).sum()
        z.backward()
        assert x.grad.asnumpy().tolist() == [5.0, 7.0, 9.0]
    s = nd.array([2.0])
    s.attach_grad()
    with autograd.record():
        y = nd.ones((3,))
        y[:] = s * 1
        z = (y * nd.array([1, 2, 3])).sum()
    z.backward()
    assert s.grad.asnumpy().tolist() == [6.0]
    with autograd.record():
        y = nd.ones((2, 3))
        with pytest.raises(AutogradError, match="Inplace operations"):
            y[:] = nd.concat(x, x, dim=0)  # (6,): same size, does not broadcast
    v = nd.array([[[1.0, 2.0, 3.0]]])  # (1, 1, 3) into (1, 3): leading axes of length 1 dropped
    v.attach_grad()
    with autograd.record():
        y = nd.zeros((1, 3))
        y[:] = v * 3
        z = (y * nd.array([[1.0, 2.0, 3.0]])).sum()
    z.backward()
    assert v.grad.asnumpy().tolist() == [[[3.0, 6.0, 9.0]]]  # (MXNet 1.9.1's)


def test_detach_is_the_same_memory_out_of_the_graph_as_in_mxnet(mode):
    """MXNet's detach shares memory and has no place in the graph (it was a recorded copy:
    writes did not reach the other, and a backward from it gave zero gradients)."""
    from gradserve.engine.errors import AutogradError

    x = nd.array([1.0, 2.0])
    d = x.detach()
    x[:] = 9
    assert d.asnumpy().tolist() == [9.0, 9.0]
    d[:] = d * 2
    assert x.asnumpy().tolist() == [18.0, 18.0]
    x.attach_grad()
    with autograd.record():
        y = (x * x).detach()
        z = x * y
    with pytest.raises(AutogradError, match="not in a computational graph"):
        y.backward()
    z.backward()
    assert x.grad.asnumpy().tolist() == [324.0, 324.0]  # y is a constant of the graph
    with autograd.record():
        v = x.detach()
    v[:] = 1  # out of the graph: no in-place refusal
    assert x.asnumpy().tolist() == [1.0, 1.0]


def test_copying_and_pickling_an_array_make_new_arrays_as_in_mxnet(mode):
    """``copy.copy`` made a second proxy of the same handle: freeing the copy freed the
    original's array (UnknownHandle), and a write through it changed the original;
    ``copy.deepcopy`` and ``pickle`` raised TypeError."""
    import copy
    import gc
    import pickle

    import gradserve

    x = nd.array([1.0, 2.0])
    x.attach_grad()
    with autograd.record():
        y = copy.copy(x * 2)
    assert y._node is None  # (out of the graph, as MXNet's copy.copy)
    y = copy.copy(x)
    y[0] = 5
    del y
    gc.collect()
    assert x.asnumpy().tolist() == [1.0, 2.0]
    z = copy.deepcopy([x])[0]
    z[1] = 7
    assert (x.asnumpy().tolist(), z.asnumpy().tolist()) == ([1.0, 2.0], [1.0, 7.0])
    w = pickle.loads(pickle.dumps(nd.array([[1, 2]], dtype="int32", ctx=gradserve.cpu(1))))
    assert (w.asnumpy().tolist(), w.dtype, str(w.context)) == ([[1, 2]], np.int32, "cpu(1)")


def test_backward_of_no_heads_and_grad_of_no_variables_are_mxnets_errors(mode):
    from gradserve.engine.errors import AutogradError

    x = nd.array([1.0, 2.0])
    x.attach_grad()
    with autograd.record():
        y = x * x
    with pytest.raises(AutogradError, match="no inputs in computation graph"):
        autograd.backward([])
    with pytest.raises(AutogradError, match="variables cannot be an empty list"):
        autograd.grad(y, [])
    y.backward()
    assert x.grad.asnumpy().tolist() == [2.0, 4.0]


def test_the_engine_refuses_a_recorded_value_written_into_part_of_an_array():
    """The same rules on the wire: a client in another language gets them too."""
    from gradserve.engine.session import Session

    s = Session("w")
    reply = s.run_batch(
        {
            "ops": [
                {"op": "ones", "out": [1], "at": {"shape": [2]}},
                {"op": "attach_grad", "in": [1]},
                {"op": "zeros", "out": [2], "at": {"shape": [2]}},
                {"op": "mul_scalar", "in": [1], "out": [3], "at": {"scalar": 3.0}, "mode": 1},
                {"op": "setitem", "in": [2, 3], "at": {"key": [[None, None, None]]}, "mode": 1},
                {"op": "sum", "in": [2], "out": [4], "mode": 1},
                {"op": "backward", "in": [4], "mode": 1},
                {"op": "read", "in": [1], "at": {"grad": True}},
            ]
        }
    )
    assert reply["values"][0].tolist() == [3.0, 3.0]
    reply = s.run_batch(
        {
            "ops": [
                {"op": "mul_scalar", "in": [1], "out": [5], "at": {"scalar": 3.0}, "mode": 1},
                {"op": "getitem", "in": [5], "out": [6], "at": {"key": [[0, 1, None]]}, "mode": 1},
                {"op": "setitem", "in": [2, 6], "at": {"key": [[0, 1, None]]}, "mode": 1},
                {"op": "update", "in": [2, 5], "at": {"fn": "add"}, "mode": 1},
            ]
        }
    )
    assert reply["error"]["index"] == 2 and "Inplace operations" in reply["error"]["message"]
    reply = s.run_batch({"ops": [{"op": "update", "in": [2, 5], "at": {"fn": "add"}, "mode": 1}]})
    assert reply["error"]["index"] == 0 and "Inplace operations" in reply["error"]["message"]


def test_a_backward_from_an_index_or_a_stopped_gradient_gives_zeros_as_in_mxnet(mode):
    x = nd.array([[1.0, 3.0, 2.0], [4.0, 0.0, 5.0]])
    x.attach_grad()
    for head in (
        lambda: x.argmax(axis=1),
        lambda: x.argsort(),
        lambda: nd.stop_gradient(x),
        lambda: nd.one_hot(x[0], 5).sum(),
    ):
        x.grad[:] = 7
        with autograd.record():
            y = head()
        y.backward()
        assert x.grad.asnumpy().tolist() == [[0.0] * 3] * 2
    with autograd.record():
        z = (nd.one_hot(x.argmax(axis=1), 3) * x).sum()  # the gradient flows through x alone
    z.backward()
    assert x.grad.asnumpy().tolist() == [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]


def test_a_backward_through_an_op_of_no_gradient_is_refused_as_in_mxnet(mode):
    """An op MXNet gives no gradient (argmax_channel, shuffle, batch_take, khatri_rao) cut the
    graph: a head that reached a variable through it and through another way got the other
    way's gradient alone, silently. MXNet refuses the pass, naming the op; so does it here,
    before any gradient is written, recorded plainly or in a hybridized function."""
    import gradserve
    from gradserve.engine.errors import AutogradError

    x = nd.array([[1.0, 2.0, 3.0]])
    x.attach_grad()
    x.grad[:] = 7
    for name, head in [
        ("argmax_channel", lambda: nd.argmax_channel(x * 2).sum() + (x * 1).sum()),
        ("argmax_channel", lambda: nd.argmax_channel(x * 2)),
        ("shuffle", lambda: nd.random.shuffle(x * 2).sum()),
        ("batch_take", lambda: nd.batch_take(x * 2, nd.array([1])).sum() + x.sum()),
        ("khatri_rao", lambda: nd.khatri_rao(x, x).sum()),
    ]:
        with autograd.record():
            y = head()
        y.backward()
        with pytest.raises(AutogradError, match=f"Operator {name} is non-differentiable because it didn't register"):
            nd.waitall()
        assert x.grad.asnumpy().tolist() == [[7.0] * 3]  # (the pass wrote nothing)

    @gradserve.hybridize
    def step(v):
        with autograd.record():
            z = nd.argmax_channel(v * 2).sum() + (v * 1).sum()
        z.backward()
        return z

    with pytest.raises(AutogradError, match="Operator argmax_channel is non-differentiable"):
        step(x).asnumpy()
    for head, want in [  # indices from it take no gradient: none is needed through it
        (lambda: (x * 2)[0, nd.argmax_channel(x * 3)].sum(), [[0.0, 0.0, 2.0]]),  # (as MXNet)
        (lambda: nd.pick(x * 2, nd.argmax_channel(x * 3), axis=1).sum(), [[0.0, 0.0, 2.0]]),  # (as MXNet)
        (lambda: nd.take(x * 2, nd.argmax_channel(x * 3)).sum(), [[2.0, 2.0, 2.0]]),  # (MXNet refuses it)
    ]:
        with autograd.record():
            y = head()
        y.backward()
        assert x.grad.asnumpy().tolist() == want


def test_a_zero_gradient_through_an_op_of_no_gradient_is_no_gradient_as_in_mxnet(mode):
    """A zero-gradient op (stop_gradient, one_hot, round, ...) still hands its input a zero
    cotangent: given to an op of no gradient, the pass was refused where MXNet (which checks
    for zeros) and gradserve before went on. Such an op's node keeps no array either: a
    prediction kept after the step held the whole of its input (values from MXNet 1.9.1)."""
    x = nd.array([[1.0, 5, 2, 0], [3, 1, 4, 1], [0, 0, 2, 9]])
    x.attach_grad()
    with autograd.record():
        y = x * nd.stop_gradient(nd.argmax_channel(x)).reshape((3, 1))
    y.backward()
    assert x.grad.asnumpy().tolist() == [[1.0] * 4, [2.0] * 4, [3.0] * 4]
    with autograd.record():  # pseudo-labels: the model's own argmax as the target
        loss = -(nd.log_softmax(x) * nd.one_hot(nd.argmax_channel(x), 4)).sum()
    loss.backward()
    want = np.exp(x.asnumpy()) / np.exp(x.asnumpy()).sum(axis=1, keepdims=True) - np.eye(4)[[1, 2, 3]]
    np.testing.assert_allclose(x.grad.asnumpy(), want, rtol=1e-5, atol=1e-6)
    with autograd.record():
        y = (x * nd.round(nd.random.shuffle(x))).sum()
    y.backward()  # (ran: round's zeros reach shuffle)
    x.grad.wait_to_read()

    w = nd.ones((1000, 1000))
    w.attach_grad()
    preds = []
    held = mode.info()["bytes"]
    for _ in range(3):
        with autograd.record():
            out = w * 2
            preds.append(nd.argmax_channel(out))
            loss = out.sum()
        loss.backward()
        del out, loss
    nd.waitall()
    assert mode.info()["bytes"] - held < 3 * 1000 * 4 + 100_000  # (the predictions, not the 4 MB outputs)


def test_sgd_update_into_another_array_inside_record_is_not_recorded(mode):
    w = nd.ones(3)
    w.attach_grad()
    with autograd.record():
        loss = (w * 2).sum()
    loss.backward()
    o = nd.zeros(3)
    with autograd.record():
        nd.sgd_update(w, w.grad, lr=0.5, out=o)
    assert o.asnumpy().tolist() == [0.0, 0.0, 0.0] and w.asnumpy().tolist() == [1.0, 1.0, 1.0]


def test_a_recorded_copy_into_an_array_inside_a_hybridized_function_is_refused(mode):
    import gradserve
    from gradserve.runtime import NotTraceable

    @gradserve.hybridize
    def f(y, x):
        y[:] = x * 5
        return y

    x, y = nd.ones(3), nd.zeros(3)
    x.attach_grad()
    with autograd.record(), pytest.raises(NotTraceable, match="return v instead"):
        f(y, x)


def test_batch_norm_of_float16_data_takes_float32_parameters_as_mxnet(mode):
    """Mixed precision (a float16 net keeps BatchNorm's parameters in float32): computed in
    float32, the output and the data's gradient float16, the parameters' float32. The values
    are MXNet 1.9.1's where its own float16 roundings do not show."""
    from gradserve.engine.errors import DTypeError

    data = np.array([[1, 2], [3, 6], [5, 1]], np.float32)
    x = nd.array(data, dtype="float16")
    g, b, mm, mv = nd.array([1.5, 0.5]), nd.zeros((2,)), nd.zeros((2,)), nd.ones((2,))
    x.attach_grad()
    g.attach_grad()
    head = np.array([[1, 2], [3, 4], [5, 7]], np.float32)
    with autograd.record():
        y = nd.BatchNorm(x, g, b, mm, mv, fix_gamma=False)
        z = (y * nd.array(head, dtype="float16")).sum()
    z.backward()
    assert (y.dtype, x.grad.dtype, g.grad.dtype, mm.dtype) == (np.float16, np.float16, np.float32, np.float32)
    mean, var = data.mean(0), data.var(0)
    xhat = (data - mean) / np.sqrt(var + 1e-3)
    np.testing.assert_array_equal(y.asnumpy(), (xhat * [1.5, 0.5]).astype(np.float16))
    np.testing.assert_allclose(g.grad.asnumpy(), (head * xhat).sum(0), rtol=1e-3)  # MXNet: [4.897784 -1.851382]
    dxhat = head * [1.5, 0.5]
    dx = (dxhat - dxhat.mean(0) - xhat * (dxhat * xhat).mean(0)) / np.sqrt(var + 1e-3)
    np.testing.assert_allclose(x.grad.asnumpy(), dx, atol=2e-3)
    np.testing.assert_allclose(mv.asnumpy(), [1.1666667, 1.3666668], rtol=1e-6)
    with pytest.raises(DTypeError, match="float64 data must be float64, got float32"):
        nd.BatchNorm(x.astype("float64"), g, b, mm, mv)
    with pytest.raises(DTypeError):
        nd.BatchNorm(x, g, b.astype("float16"), mm, mv)  # the four parameters in one dtype


def test_loss_outputs_train_with_their_own_gradient_as_in_mxnet(mode):
    """SoftmaxOutput, the regression outputs and MakeLoss: the forward is the prediction, the
    backward the loss's gradient whatever the head gradient (MXNet's symbolic heads). The
    values are MXNet 1.9.1's."""
    x = nd.array([[1.0, 2.0, 3.0], [1.0, 0.0, -1.0]])
    x.attach_grad()
    label = nd.array([2, 0])
    for kwargs, want in [
        ({}, [[0.09, 0.2447, -0.3348], [-0.3348, 0.2447, 0.09]]),
        ({"grad_scale": 2.0}, [[0.1801, 0.4895, -0.6695], [-0.6695, 0.4895, 0.1801]]),
        ({"normalization": "batch"}, [[0.045, 0.1224, -0.1674], [-0.1674, 0.1224, 0.045]]),
        ({"normalization": "valid", "use_ignore": True, "ignore_label": 0}, [[0.09, 0.2447, -0.3348], [0, 0, 0]]),
    ]:
        with autograd.record():
            y = nd.SoftmaxOutput(x, label, **kwargs)
        y.backward(nd.ones_like(y) * 5)  # (not used)
        np.testing.assert_allclose(y.asnumpy(), [[0.09, 0.2447, 0.6652], [0.6652, 0.2447, 0.09]], atol=1e-4)
        np.testing.assert_allclose(x.grad.asnumpy(), want, atol=1e-4, err_msg=str(kwargs))
    assert nd.Softmax(x, label).shape == (2, 3)  # (MXNet's other name)
    d = nd.array([[1.0, 2.0], [3.0, -1.0]])
    d.attach_grad()
    lab = nd.array([[0.0, 2.5], [1.0, 1.0]])
    for name, out, grad in [
        ("LinearRegressionOutput", [[1, 2], [3, -1]], [[1.5, -0.75], [3, -3]]),
        ("LogisticRegressionOutput", [[0.7311, 0.8808], [0.9526, 0.2689]], [[1.0966, -2.4288], [-0.0711, -1.0966]]),
        ("MAERegressionOutput", [[1, 2], [3, -1]], [[1.5, -1.5], [1.5, -1.5]]),
    ]:
        with autograd.record():
            y = getattr(nd, name)(d, lab, grad_scale=3.0)
        y.backward(nd.ones_like(y) * 7)
        np.testing.assert_allclose(y.asnumpy(), out, atol=1e-4, err_msg=name)
        np.testing.assert_allclose(d.grad.asnumpy(), grad, atol=1e-4, err_msg=name)
    for kwargs, grad in [({}, 1.0), ({"grad_scale": 2.0}, 2.0), ({"normalization": "batch"}, 0.5)]:
        with autograd.record():
            y = nd.MakeLoss(d, **kwargs)
        y.backward(nd.ones_like(y) * 7)
        assert d.grad.asnumpy().tolist() == [[grad, grad], [grad, grad]], kwargs
    with autograd.record():
        y = nd.MakeLoss(d, normalization="valid", valid_thresh=1.5)
    y.backward()
    assert d.grad.asnumpy().tolist() == [[0.5, 0.5], [0.5, 0.5]]  # two elements above 1.5
    for kwargs in ({}, {"grad_scale": 0.5, "normalization": "batch"}):  # MXNet's make_loss: ones, always
        with autograd.record():
            y = nd.make_loss(d * 2, **kwargs)
        y.backward(nd.ones_like(y) * 7)
        assert d.grad.asnumpy().tolist() == [[2.0, 2.0], [2.0, 2.0]], kwargs


def test_loss_outputs_normalise_as_mxnet_does_in_its_corner_cases(mode):
    """MXNet 1.9.1's values: batch normalisation over every row (all axes but the last), valid
    over the labels other than ignore_label with use_ignore or not, the absolute error's
    gradient -1 at a tie, one class smoothed."""
    x = nd.array(np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 10)
    x.attach_grad()
    with autograd.record():
        y = nd.MakeLoss(x, normalization="batch")
    y.backward()
    np.testing.assert_allclose(x.grad.asnumpy(), 1 / 6)
    v = nd.array([1.0, 2, 3, 4])
    v.attach_grad()
    with autograd.record():
        y = nd.MakeLoss(v, normalization="batch")
    y.backward()
    assert v.grad.asnumpy().tolist() == [1, 1, 1, 1]
    with autograd.record():
        y = nd.SoftmaxOutput(x, nd.array([[0, 1, 2], [3, 0, 1]]), preserve_shape=True, normalization="batch")
    y.backward()
    np.testing.assert_allclose(x.grad.asnumpy()[0, 0], [-0.13103, 0.03939, 0.04353, 0.04811], atol=1e-5)
    x2 = nd.array([[1.0, 2, 3], [1, 0, -1], [0, 0, 0]])
    x2.attach_grad()
    with autograd.record():
        y = nd.SoftmaxOutput(x2, nd.array([2, 0, 1]), normalization="valid", ignore_label=1)
    y.backward()
    want = [[0.04502, 0.12236, -0.16738], [-0.16738, 0.12236, 0.04502], [0.16667, -0.33333, 0.16667]]
    np.testing.assert_allclose(x2.grad.asnumpy(), want, atol=1e-5)
    d = nd.array([[1.0, 2, 3]])
    d.attach_grad()
    with autograd.record():
        y = nd.MAERegressionOutput(d, nd.array([[1.0, 0, 5]]))
    y.backward()
    np.testing.assert_allclose(d.grad.asnumpy(), [[-1 / 3, 1 / 3, -1 / 3]], rtol=1e-6)
    c1 = nd.array([[1.0], [2.0]])
    c1.attach_grad()
    with autograd.record():
        y = nd.SoftmaxOutput(c1, nd.array([0, 0]), smooth_alpha=0.1)
    y.backward()
    np.testing.assert_allclose(c1.grad.asnumpy(), [[0.1], [0.1]], rtol=1e-6)


def test_batch_norm_moving_statistics_change_at_backward_as_in_mxnet(mode):
    """MXNet 1.9.1 updates moving_mean and moving_var in BatchNorm's backward pass: not in a
    recorded training forward, not in one without record, not by a backward in prediction mode
    (whose gradient then uses the moving statistics), once per backward pass (retain_graph),
    and from their value at that time. The values are MXNet's (its momentum is a float32)."""
    import gradserve

    x = nd.array([[1, 2], [3, 6], [5, 1]])
    g, b = nd.ones((2,)), nd.zeros((2,))

    def fresh():
        return nd.zeros((2,)), nd.ones((2,))

    x.attach_grad()
    mm, mv = fresh()
    with autograd.record(train_mode=True):
        y = nd.BatchNorm(x, g, b, mm, mv, momentum=0.9)
    assert mm.asnumpy().tolist() == [0, 0] and mv.asnumpy().tolist() == [1, 1]
    y.backward()
    np.testing.assert_allclose(mm.asnumpy(), [0.30000007, 0.30000007], rtol=1e-7)
    np.testing.assert_allclose(mv.asnumpy(), [1.1666667, 1.3666668], rtol=1e-7)
    mm, mv = fresh()
    with autograd.train_mode():
        nd.BatchNorm(x, g, b, mm, mv).wait_to_read()
    with autograd.record(train_mode=False):
        y = nd.BatchNorm(x, g, b, mm, mv)
    y.backward()
    assert mm.asnumpy().tolist() == [0, 0] and mv.asnumpy().tolist() == [1, 1]
    with autograd.record(train_mode=True):
        y = nd.BatchNorm(x, g, b, mm, mv)
    y.backward(train_mode=False)
    assert mm.asnumpy().tolist() == [0, 0] and mv.asnumpy().tolist() == [1, 1]
    np.testing.assert_allclose(x.grad.asnumpy(), np.full((3, 2), 0.9995004), rtol=1e-6)
    with autograd.record(train_mode=True):
        y = nd.BatchNorm(x, g, b, mm, mv, momentum=0.9)
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(mm.asnumpy(), [0.5700002, 0.5700002], rtol=1e-6)
    np.testing.assert_allclose(mv.asnumpy(), [1.3166668, 1.696667], rtol=1e-6)
    mm, mv = fresh()
    with autograd.record(train_mode=True):
        y = nd.BatchNorm(x, g, b, mm, mv, momentum=0.9)
    mm[:] = 5
    autograd.grad(y, [x])
    np.testing.assert_allclose(mm.asnumpy(), [4.8, 4.8], rtol=1e-6)
    mm, mv = fresh()
    with autograd.record(train_mode=True):
        nd.BatchNorm(x, g, b, mm, mv, momentum=0.9)
        z = x * 2
    z.backward()  # (the BatchNorm is not on the way to the head)
    assert mm.asnumpy().tolist() == [0, 0] and mv.asnumpy().tolist() == [1, 1]

    @gradserve.hybridize
    def step(u):
        with autograd.record():
            v = nd.BatchNorm(u, g, b, mm, mv, momentum=0.5)
        v.backward()
        return v

    u = nd.array([[0, 2], [2, 4]])
    u.attach_grad()
    for k in (1, 2):  # traced, then called as a program
        step(u)
        np.testing.assert_allclose(mm.asnumpy(), [1 - 0.5**k, 3 * (1 - 0.5**k)], rtol=1e-6)


@pytest.mark.parametrize(
    "f, want",
    [(lambda x: x * 2, [2.0, 2.0]), (lambda x: x + 1, [1.0, 1.0]), (nd.sum, [1.0, 1.0]), (nd.negative, [-1.0, -1.0])],
)
def test_a_recorded_gradient_that_depends_on_no_variable_has_no_inputs(mode, f, want):
    """autograd.grad(create_graph=True) of a function linear in x gives a constant: in MXNet
    a graph of the head gradient's ops, whose backward finds no input that requires a
    gradient. The error is MXNet's (it was "not in a computational graph"), and the failed
    backward changed nothing: the gradient and x.grad read as they were (x.grad was lost, as
    if the pass had been applied in part)."""
    x = nd.array([1.0, 2.0])
    x.attach_grad()
    with autograd.record():
        (g,) = autograd.grad(f(x), [x], create_graph=True, retain_graph=True)
    g.backward()
    with pytest.raises(MXNetError, match="There are no inputs in computation graph that require gradients"):
        g.wait_to_read()
    assert g.asnumpy().tolist() == want
    assert x.grad.asnumpy().tolist() == [0.0, 0.0]


@pytest.mark.parametrize("name", ["logical_not", "shape_array", "size_array"])
def test_ops_with_a_zero_gradient_backpropagate_zeros(mode, name):
    """MXNet gives these a zero gradient (they were refused as not differentiable, and their
    output was outside the graph)."""
    x = nd.array([[1.0, 0.0, 2.0]])
    x.attach_grad()
    with autograd.record():
        y = getattr(nd, name)(x)
    y.backward()
    assert x.grad.asnumpy().tolist() == [[0.0, 0.0, 0.0]]


def test_a_functions_backward_sees_the_backward_calls_training_flag(mode):
    """MXNet runs a Function's backward at the backward call, in its train_mode; traced at the
    forward call, it saw the forward's flag (record(train_mode=False) then y.backward() gave
    the predict-mode gradient). One that reads the flag is traced in both modes."""

    class Scaled(autograd.Function):
        def forward(self, x):
            return x * 1

        def backward(self, dy):
            return dy * (10 if autograd.is_training() else 1)

    x = nd.array([1.0, 2.0])
    x.attach_grad()
    with autograd.record(train_mode=False):
        y = Scaled()(x)
    y.backward()  # (train_mode=True, MXNet's default)
    assert x.grad.asnumpy().tolist() == [10.0, 10.0]
    with autograd.record():
        y = Scaled()(x)
    y.backward(train_mode=False)
    assert x.grad.asnumpy().tolist() == [1.0, 1.0]
    with autograd.record():
        y = Scaled()(x)
        (g,) = autograd.grad(y, [x], train_mode=False, create_graph=True)
    assert g.asnumpy().tolist() == [1.0, 1.0]


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_slices_gradients_add_up_whatever_order_they_come_in(mode, dtype):
    """A first-order pass adds a slice's gradient (``x[t]``, ``slice_axis``, ``slice``) into the
    sum it holds for the sliced array, in place (engine/tape.py's Patch and Sum): slices alone,
    slices before and after dense gradients, a single element, a reversed slice, slices of an
    op's output (whose VJP then reads the sum) and of a variable, with grad_req 'add'."""
    rng = np.random.default_rng(21)
    xv = rng.standard_normal((5, 4, 3)).astype(dtype)
    a = rng.standard_normal((4, 3)).astype(dtype)
    x = nd.array(xv, dtype=dtype)
    x.attach_grad(grad_req="add")
    for _ in range(2):
        with autograd.record():
            z = x * 1.5
            terms = [
                x[1] * nd.array(a, dtype=dtype),
                (x * 2).sum(axis=0),  # dense, between slices
                x[1:3].sum(axis=0),
                nd.slice_axis(x, axis=2, begin=1, end=3).sum(axis=(0, 2)).reshape((4, 1)),
                x[2, 1, 0].reshape((1, 1)),
                x[::-2][0],
                nd.slice(z, begin=(1, None, 0), end=(4, None, 2)).sum(axis=0).sum(axis=1).reshape((4, 1)),
                z[4] * z[4],
                z[0],
            ]
            y = terms[0]
            for t in terms[1:]:
                y = y + t
        y.backward()
    x64, a64 = xv.astype(np.float64), a.astype(np.float64)
    g = np.zeros((5, 4, 3))
    g[1] += a64
    g += 2
    g[1:3] += 1
    g[:, :, 1:3] += 3  # (each (4, 1) value is broadcast to 3 columns)
    g[2, 1, 0] += 12
    g[4] += 1
    g[1:4, :, 0:2] += 3 * 1.5
    g[4] += 2 * 1.5 * 1.5 * x64[4]
    g[0] += 1.5
    tol = {"float16": 2e-2, "float32": 1e-5, "float64": 1e-12}[dtype]
    np.testing.assert_allclose(x.grad.asnumpy().astype(np.float64), 2 * g, rtol=tol, atol=tol)


def test_a_slices_gradient_leaves_the_head_gradient_it_passes_through_as_it_was(mode):
    """The head gradient reaches ``t`` as it is (add's VJP passes it on), then ``t[1]``'s
    gradient is added: into a copy, not into the caller's array."""
    x = nd.array(np.arange(12.0).reshape(4, 3))
    x.attach_grad()
    with autograd.record():
        t = x * 1.0
        y = t + nd.broadcast_to(t[1].reshape((1, 3)), (4, 3))
    head = nd.array(np.arange(12.0).reshape(4, 3))
    y.backward(head)
    np.testing.assert_array_equal(head.asnumpy(), np.arange(12.0).reshape(4, 3))
    want = np.arange(12.0).reshape(4, 3)
    want[1] += np.arange(12.0).reshape(4, 3).sum(axis=0)
    np.testing.assert_array_equal(x.grad.asnumpy(), want)


def test_a_second_order_pass_through_slices_is_the_table_vjps():
    """create_graph passes use the table's VJPs (scatter_key), recorded: the sums stay out."""
    x = nd.array([1.0, 2.0, 3.0])
    x.attach_grad()
    with autograd.record():
        y = (x[0:2] ** 3).sum() + (x[1:3] ** 2).sum() + x[2] ** 4
        (g,) = autograd.grad([y], [x], create_graph=True, retain_graph=True)
        s = (g * g).sum()
    s.backward()
    xv = np.array([1.0, 2.0, 3.0])
    gv = np.array([3 * xv[0] ** 2, 3 * xv[1] ** 2 + 2 * xv[1], 2 * xv[2] + 4 * xv[2] ** 3])
    np.testing.assert_allclose(g.asnumpy(), gv)
    h = np.array([6 * xv[0], 6 * xv[1] + 2, 2 + 12 * xv[2] ** 2])
    np.testing.assert_allclose(x.grad.asnumpy(), 2 * gv * h)


def test_a_sum_of_cotangents_is_written_only_into_an_array_it_made():
    """tape's Patch and Sum by themselves: the arrays a sum starts from are not written."""
    from gradserve.engine.tape import Patch, Sum, _summed

    base = np.arange(6.0).reshape(2, 3)
    patch = Patch((2, 3), (1, slice(0, 2)), np.array([10.0, 20.0]))
    np.testing.assert_array_equal(patch(), [[0, 0, 0], [10, 20, 0]])
    s = _summed(base, patch)  # a plain array: copied
    assert type(s) is Sum and s.a is not base
    np.testing.assert_array_equal(base, np.arange(6.0).reshape(2, 3))
    a = s.a
    s = _summed(s, Patch((2, 3), (0, 2), np.array([5.0])))  # one element (numpy gives a scalar)
    s = _summed(s, np.ones((2, 3)))
    assert s.a is a  # in place
    np.testing.assert_array_equal(a, [[1, 2, 8], [14, 25, 6]])
    s = _summed(Patch((2, 3), (0,), np.ones(3)), Patch((2, 3), (slice(None, None, -1), 2), np.array([1.0, 2.0])))
    np.testing.assert_array_equal(s.a, [[1, 1, 3], [0, 0, 1]])
    wider = _summed(s, np.ones((2, 3), np.float32) * np.float32(0.5))  # (float32 into float64: float64)
    assert wider.a.dtype == np.float64
    narrow = _summed(Sum(np.zeros((2, 3), np.float32)), np.ones((2, 3)))  # float64 into float32: np.add's result
    assert narrow.a.dtype == np.float64


def test_a_recorded_gradient_of_an_empty_array_has_its_shape(mode):
    """A VJP's reshape or broadcast_to to a shape with an empty axis makes that shape (MXNet's 0
    in a shape would copy the input's axis: (0, 3) from a (1, 1) became (1, 3))."""
    x = nd.zeros((0, 3))
    x.attach_grad()
    with autograd.record():
        (g,) = autograd.grad([x.sum()], [x], create_graph=True)
    assert g.shape == (0, 3) and g.asnumpy().shape == (0, 3)
    w = nd.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    w.attach_grad()
    with autograd.record():
        y = w[1:1].sum() + (w * w).sum() + w[:, 2:2].mean(axis=1).sum()
        (g,) = autograd.grad([y], [w], create_graph=True)
        s = (g * g).sum()
    s.backward()
    np.testing.assert_array_equal(g.asnumpy(), 2 * w.asnumpy())
    np.testing.assert_array_equal(w.grad.asnumpy(), 8 * w.asnumpy())


def test_a_backward_pass_that_did_not_run_can_be_tried_again(mode):
    """The client let a graph go as its backward pass was queued: when the pass did not run
    (an op before it failed) or the engine refused it, the graph was still the session's,
    and a second try raised "not in a computational graph"."""
    bad = nd.array([[1.0, 2.0], [2.0, 1.0]])  # (not positive definite: potrf fails)
    x = nd.array([1.0, 2.0])
    x.attach_grad()
    for pass_ in ("backward", "grad"):
        with autograd.record():
            y = (x * x).sum()
        nd.linalg.potrf(bad)
        if pass_ == "backward":
            y.backward()
        else:
            autograd.grad(y, [x])
        with pytest.raises(MXNetError, match="potrf"):
            nd.waitall()
        if pass_ == "backward":
            y.backward()
            assert x.grad.asnumpy().tolist() == [2.0, 4.0]
        else:
            assert autograd.grad(y, [x])[0].asnumpy().tolist() == [2.0, 4.0]
        with pytest.raises(AutogradError, match="not in a computational graph"):
            y.backward()  # (this time it ran: the graph is gone, as MXNet's)
    with autograd.record():
        y = (nd.argmax_channel(x.reshape((1, 2))) * 2).sum() + (x * x).sum()
    for _ in range(2):  # refused by the engine each time, with MXNet's reason
        y.backward()
        with pytest.raises(AutogradError, match="argmax_channel is non-differentiable"):
            nd.waitall()


def test_a_zero_gradient_sends_nothing_back_as_mxnets(mode):
    """MXNet drops the zero gradient of a stopped gradient, a rounding or an index with the ops
    only it reaches: an infinite derivative before one (sqrt at 0, log at 0, x / 0) gave
    0 * inf, NaN, in the variable's gradient here (MXNet 1.9.1's values)."""
    x = nd.array([0.0, 4.0])
    x.attach_grad()
    y = nd.array([0.0, 1.0])
    cases = [
        (lambda: x * nd.BlockGrad(nd.sqrt(x)), [0.0, 2.0]),
        (lambda: nd.stop_gradient(x / y) + x, [1.0, 1.0]),
        (lambda: nd.round(nd.log(x)) + x, [1.0, 1.0]),
        (lambda: nd.floor(nd.sqrt(x)) * 2 + x, [1.0, 1.0]),
        (lambda: nd.argmax(nd.sqrt(x), axis=0) + x.sum(), [1.0, 1.0]),
        (lambda: nd.stop_gradient(x), [0.0, 0.0]),  # (reached through it alone: zeros written)
    ]
    for f, want in cases:
        with autograd.record():
            z = f()
        z.backward()
        assert x.grad.asnumpy().tolist() == want
    w = nd.array([1.0, 2.0])
    w.attach_grad()
    with autograd.record():
        z = nd.BlockGrad(w) * w
    assert autograd.grad(z, [w])[0].asnumpy().tolist() == [1.0, 2.0]
    with autograd.record():
        z = (nd.BlockGrad(nd.sqrt(w)) * w).sum()
    (gw,) = autograd.grad(z, [w], create_graph=True)
    with autograd.record():
        gg = (gw * gw).sum()
    gg.backward()
    assert w.grad.asnumpy().tolist() == [0.0, 0.0]  # (d/dw of sqrt(w)**2 with sqrt stopped: 0)


def test_a_batchnorm_reached_through_a_zero_gradient_still_updates_its_statistics(mode):
    """MXNet runs BatchNorm's backward (where its moving statistics are updated) on zeros when
    only a zero gradient reaches it (a teacher network under stop_gradient, an argmax of its
    output): a pass that sent nothing through the zero gradient left them stale (MXNet 1.9.1's
    values: mean [0.3, 0.4], var [1.4, 1.4])."""
    for head in (lambda y: nd.stop_gradient(nd.relu(y)).sum(), lambda y: nd.argmax(y, axis=1).sum()):
        x = nd.array(np.arange(8.0).reshape(4, 2))
        gamma, beta, mean, var = nd.ones(2), nd.zeros(2), nd.zeros(2), nd.ones(2)
        z = nd.ones(1)
        z.attach_grad()
        gamma.attach_grad()
        with autograd.record():
            loss = head(nd.BatchNorm(x, gamma, beta, mean, var, fix_gamma=False)) * z
        loss.backward()
        np.testing.assert_allclose(mean.asnumpy(), [0.3, 0.4], rtol=1e-6)
        np.testing.assert_allclose(var.asnumpy(), [1.4, 1.4], rtol=1e-6)
        assert gamma.grad.asnumpy().tolist() == [0.0, 0.0]
