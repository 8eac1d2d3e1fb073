"""``nd.contrib``: MXNet 1.9.1's contrib ops of plain arrays and its control flow (foreach,
while_loop, cond), in-process and over HTTP. The expected values were printed by MXNet 1.9.1
(written here; the tests do not need it)."""

from __future__ import annotations

import numpy as np
import pytest

import gradserve
from gradserve import MXNetError, autograd, nd
from gradserve.engine.errors import DTypeError, InvalidInput, ShapeError

INF, NAN = float("inf"), float("nan")


def test_the_namespace_lists_mxnets_names():
    assert {"foreach", "while_loop", "cond", "isnan", "index_copy", "arange_like", "round_ste"} <= set(dir(nd.contrib))
    assert not hasattr(nd, "contrib_isnan")  # (nd.contrib.isnan, as MXNet)


def test_tests_of_values_keep_the_dtype_and_have_no_gradient(mode):
    x = nd.array([[1.5, -INF, NAN], [0.0, 2.5, -0.5]])
    assert nd.contrib.isfinite(x).asnumpy().tolist() == [[1, 0, 0], [1, 1, 1]]
    assert nd.contrib.isinf(x).asnumpy().tolist() == [[0, 1, 0], [0, 0, 0]]
    assert nd.contrib.isnan(x).asnumpy().tolist() == [[0, 0, 1], [0, 0, 0]]
    assert nd.contrib.isnan(x.astype("float16")).dtype == np.float16
    ints = nd.array([1, 2], dtype="int32")
    assert nd.contrib.isnan(ints).asnumpy().tolist() == [0, 0] and nd.contrib.isnan(ints).dtype == np.int32
    assert nd.contrib.isfinite(ints).asnumpy().tolist() == [1, 1]
    v = nd.array([1.0, 2.0])
    v.attach_grad()
    with autograd.record():
        y = nd.contrib.isinf(v) * 3
    y.backward()
    assert v.grad.asnumpy().tolist() == [0.0, 0.0]


def test_allclose_is_a_uint8_of_rank_0(mode):
    a = nd.array([1.0, 2.0])
    close = nd.contrib.allclose(a, nd.array([1.0, 2.00001]))
    assert close.dtype == np.uint8 and close.shape == () and close.asscalar() == 1
    assert nd.contrib.allclose(a, nd.array([1.0, 2.00001]), rtol=0, atol=0).asscalar() == 0
    assert nd.contrib.allclose(a, nd.array([1.0, 2.001]), rtol=1e-3, atol=0).asscalar() == 1
    assert nd.contrib.allclose(nd.array([1e10]), nd.array([1.00001e10])).asscalar() == 0
    assert nd.contrib.allclose(nd.array([NAN]), nd.array([NAN])).asscalar() == 1
    assert nd.contrib.allclose(nd.array([NAN]), nd.array([NAN]), equal_nan=False).asscalar() == 0
    assert nd.contrib.allclose(nd.array([INF]), nd.array([INF])).asscalar() == 1
    assert nd.contrib.allclose(nd.array([INF]), nd.array([-INF])).asscalar() == 0  # (MXNet: 1)
    ints = nd.array([1, 2], dtype="int32")
    assert nd.contrib.allclose(ints, ints).asscalar() == 1
    with pytest.raises(MXNetError, match=r"allclose: a \(2,\) and b \(1, 2\) must have one shape"):
        nd.contrib.allclose(a, nd.array([[1.0, 2.0]])).wait_to_read()
    with pytest.raises(MXNetError, match="a is float32 and b float64"):
        nd.contrib.allclose(a, a.astype("float64")).wait_to_read()


def test_arange_like_rounds_each_value_to_the_dtype(mode):
    d = nd.zeros((2, 3), dtype="float16")
    r = nd.contrib.arange_like(d)
    assert r.dtype == np.float16 and r.asnumpy().tolist() == [[0, 1, 2], [3, 4, 5]]
    assert nd.contrib.arange_like(d, start=1, step=2, axis=1).asnumpy().tolist() == [1, 3, 5]
    assert nd.contrib.arange_like(d, repeat=2).asnumpy().tolist() == [[0, 0, 1], [1, 2, 2]]
    assert nd.contrib.arange_like(d, axis=-1).asnumpy().tolist() == [0, 1, 2]
    assert nd.contrib.arange_like(nd.zeros((4,)), step=0.5, start=1, repeat=3).asnumpy().tolist() == [1, 1, 1, 1.5]
    assert nd.contrib.arange_like(d, start=2049).asnumpy().tolist() == [[2048, 2048, 2050], [2052, 2052, 2052]]
    big = nd.contrib.arange_like(nd.zeros((2, 3)), start=2**25).asnumpy().tolist()
    assert big == [[33554432, 33554432, 33554432], [33554436, 33554436, 33554436]]
    assert nd.contrib.arange_like(nd.zeros((2, 3), dtype="int32"), start=0.5).asnumpy().tolist() == [
        [0, 1, 2],
        [3, 4, 5],
    ]
    with pytest.raises(MXNetError, match="axis 2 is out of range for data of rank 2"):
        nd.contrib.arange_like(d, axis=2).wait_to_read()
    with pytest.raises(MXNetError, match="repeat must be at least 1, got 0"):  # (MXNet's process dies)
        nd.contrib.arange_like(d, repeat=0).wait_to_read()


def test_index_array_gives_each_position(mode):
    x = nd.zeros((2, 3))
    r = nd.contrib.index_array(x)
    assert r.dtype == np.int64 and r.shape == (2, 3, 2)
    assert r.asnumpy().tolist() == [[[0, 0], [0, 1], [0, 2]], [[1, 0], [1, 1], [1, 2]]]
    assert nd.contrib.index_array(x, axes=(1,)).asnumpy().tolist() == [[[0], [1], [2]], [[0], [1], [2]]]
    both = nd.contrib.index_array(x, axes=(-1, 0)).asnumpy().tolist()
    assert both == [[[0, 0], [1, 0], [2, 0]], [[0, 1], [1, 1], [2, 1]]]
    assert nd.contrib.index_array(nd.zeros((0, 3))).shape == (0, 3, 2)  # (MXNet fails on empty data)
    with pytest.raises(MXNetError, match="axis 2 is out of range for data of rank 2"):
        nd.contrib.index_array(x, axes=(2,)).wait_to_read()


def test_index_copy_and_its_gradients(mode):
    old, new = nd.zeros((4, 2)), nd.array([[1.0, 2.0], [3.0, 4.0]])
    old.attach_grad()
    new.attach_grad()
    with autograd.record():
        r = nd.contrib.index_copy(old, nd.array([2, 0]), new)
    r.backward(nd.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]]))
    assert r.asnumpy().tolist() == [[3, 4], [0, 0], [1, 2], [0, 0]]
    assert old.grad.asnumpy().tolist() == [[0, 0], [3, 4], [0, 0], [7, 8]]
    assert new.grad.asnumpy().tolist() == [[5, 6], [1, 2]]
    truncated = nd.contrib.index_copy(nd.zeros((4, 2)), nd.array([1.7, 0.2]), new)
    assert truncated.asnumpy().tolist() == [[3, 4], [1, 2], [0, 0], [0, 0]]
    assert nd.contrib.index_copy(nd.zeros((4,)), nd.array([1, 0]), nd.array([5.0, 6.0])).asnumpy().tolist() == [
        6,
        5,
        0,
        0,
    ]


def test_index_copy_refuses_what_mxnet_skips_or_crashes_on(mode):
    old, new = nd.zeros((4, 2)), nd.array([[1.0, 2.0], [3.0, 4.0]])
    for idx, message in (
        ([5, 0], "index 5.0 is out of range for old_tensor's 4 rows"),
        ([-1, 0], r"index -1.0 is out of range"),
        ([1, 1], "index 1 is given twice"),
        ([NAN, 0], "index nan is out of range"),
    ):
        with pytest.raises(MXNetError, match=message):
            nd.contrib.index_copy(old, nd.array(idx), new).wait_to_read()
    for args, message in (
        ((old, nd.array([1]), new), r"new_tensor \(2, 2\) must be \(1,\) \+ old_tensor's rows \(2,\)"),
        ((old, nd.array([[1, 0]]), new), r"index_vector must be 1-D, got shape \(1, 2\)"),
        ((old, nd.array([1, 0]), new.astype("float64")), "new_tensor is float64, old_tensor float32"),
        ((old, nd.array([1, 0]), nd.ones((2, 3))), r"new_tensor \(2, 3\) must be"),
    ):
        with pytest.raises(MXNetError, match=message):
            nd.contrib.index_copy(*args).wait_to_read()
    assert old.asnumpy().tolist() == [[0, 0]] * 4


def test_div_sqrt_dim_quadratic_and_their_gradients(mode):
    x = nd.array([[1.0, 4.0]])
    x.attach_grad()
    with autograd.record():
        y = nd.contrib.div_sqrt_dim(x)
    y.backward()
    np.testing.assert_allclose(y.asnumpy(), [[0.70710677, 2.828427]], rtol=1e-7)
    np.testing.assert_allclose(x.grad.asnumpy(), [[0.70710677, 0.70710677]], rtol=1e-7)
    assert nd.contrib.div_sqrt_dim(nd.array([[1, 2, 3, 4]], dtype="int32")).asnumpy().tolist() == [[0, 1, 1, 2]]
    # (an integer array is divided by the root truncated, as MXNet's: 1 for 3, 2 for 8)
    assert nd.contrib.div_sqrt_dim(nd.array([[7, 9, -30]], dtype="int32")).asnumpy().tolist() == [[7, 9, -30]]
    eight = nd.contrib.div_sqrt_dim(nd.array([[7, 9, -30, 1, 1, 1, 1, 1]], dtype="int64")).asnumpy().tolist()
    assert eight == [[3, 4, -15, 0, 0, 0, 0, 0]]
    wide = nd.contrib.div_sqrt_dim(nd.ones((1, 70000), dtype="float16")).asnumpy()  # (past float16's 65504)
    assert wide[0, 0] == np.float16(1 / np.float16(np.sqrt(np.float32(70000))))
    half = nd.contrib.div_sqrt_dim(nd.array([[1, 2, 3]], dtype="float16")).asnumpy().tolist()
    assert half == [[0.5771484375, 1.154296875, 1.7314453125]]
    with pytest.raises(MXNetError, match="at least 1 dimension"):
        nd.contrib.div_sqrt_dim(nd.array(np.float32(2.0))).wait_to_read()

    x = nd.array([1.0, -2.0])
    x.attach_grad()
    with autograd.record():
        y = nd.contrib.quadratic(x, a=2, b=3, c=4)
    y.backward()
    assert y.asnumpy().tolist() == [9, 6] and x.grad.asnumpy().tolist() == [7, -5]
    ints = nd.contrib.quadratic(nd.array([1, 2], dtype="int32"), a=1.5, b=1, c=0.5)
    assert ints.dtype == np.int32 and ints.asnumpy().tolist() == [3, 8]
    assert nd.contrib.quadratic(nd.array([2.5], dtype="float16"), a=1, b=1, c=1).asnumpy().tolist() == [9.75]


def test_straight_through_estimators_and_the_gradient_multiplier(mode):
    x = nd.array([1.5, -2.5, 0.4, -0.6, 0.0])
    w = nd.array([1.0, 2.0, 3.0, 4.0, 5.0])
    x.attach_grad()
    with autograd.record():
        y = nd.contrib.round_ste(x) * w
    y.backward()
    assert y.asnumpy().tolist() == [2, -6, 0, -4, 0] and x.grad.asnumpy().tolist() == [1, 2, 3, 4, 5]
    with autograd.record():
        y = nd.contrib.sign_ste(x) * w
    y.backward()
    assert y.asnumpy().tolist() == [1, -2, 3, -4, 0] and x.grad.asnumpy().tolist() == [1, 2, 3, 4, 5]
    assert nd.contrib.round_ste(nd.array([2.5, -0.5], dtype="float16")).asnumpy().tolist() == [3, -1]
    ints = nd.array([-3, 0, 5], dtype="int32")
    assert nd.contrib.sign_ste(ints).asnumpy().tolist() == [-1, 0, 1] and nd.contrib.sign_ste(ints).dtype == np.int32
    assert nd.contrib.round_ste(ints).asnumpy().tolist() == [-3, 0, 5]
    v = nd.array([1.0, -2.0])
    v.attach_grad()
    with autograd.record():
        y = nd.contrib.gradientmultiplier(v, scalar=-3)
    y.backward()
    assert y.asnumpy().tolist() == [1, -2] and v.grad.asnumpy().tolist() == [-3, -3]


def test_foreach_steps_a_body_and_its_gradients_go_through(mode):
    """MXNet 1.9.1 printed these outputs, states and gradients."""
    data, s0 = nd.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]), nd.array([0.5, -1.0])
    data.attach_grad()
    s0.attach_grad()

    def body(x, states):
        s = states[0] * x + 1
        return [x * 2, s.sum()], [s]

    with autograd.record():
        outs, states = nd.contrib.foreach(body, data, [s0])
        loss = outs[0].sum() + outs[1].sum() + states[0].sum()
    loss.backward()
    assert outs[0].asnumpy().tolist() == [[2, 4], [6, 8], [10, 12]]
    assert outs[1].asnumpy().tolist() == [[0.5], [2.5], [11.5]]
    assert states[0].asnumpy().tolist() == [28.5, -17]
    assert data.grad.asnumpy().tolist() == [[19, -51], [18.5, -11], [13, -4]]
    assert s0.grad.asnumpy().tolist() == [34, 106]

    outs, state = nd.contrib.foreach(lambda x, s: (x + s, x), data, nd.zeros(2))
    assert outs.asnumpy().tolist() == [[1, 2], [4, 6], [8, 10]] and state.asnumpy().tolist() == [5, 6]
    pairs, _ = nd.contrib.foreach(lambda xs, s: (xs[0] * xs[1], s), [data, data], nd.zeros(1))
    assert pairs.asnumpy().tolist() == [[1, 4], [9, 16], [25, 36]]
    assert nd.contrib.foreach(lambda x, s: (x, s), nd.zeros((0, 2)), nd.zeros(1))[0] == []
    with pytest.raises(MXNetError, match="must share a first axis"):
        nd.contrib.foreach(lambda xs, s: (xs[0], s), [data, nd.zeros((2, 2))], nd.zeros(1))
    with pytest.raises(MXNetError, match="foreach's init_states must be an NDArray or a nested list"):
        nd.contrib.foreach(lambda x, s: (x, s), data, 3.0)


def test_while_loop_pads_its_outputs_to_max_iterations(mode):
    with autograd.record():
        outs, (i, acc) = nd.contrib.while_loop(
            lambda i, a: i < 3,
            lambda i, a: ([a * 2], [i + 1, a * 2]),
            [nd.array([0.0]), nd.array([1.0])],
            max_iterations=5,
        )
    assert outs[0].asnumpy().tolist() == [[2], [4], [8], [0], [0]]  # (MXNet leaves the last two unset)
    assert i.asnumpy().tolist() == [3] and acc.asnumpy().tolist() == [8]
    outs, last = nd.contrib.while_loop(lambda i: i < 2, lambda i: (None, i + 1), nd.array([0.0]), max_iterations=4)
    assert outs == [] and last.asnumpy().tolist() == [2]
    x = nd.array([1.5])
    x.attach_grad()
    with autograd.record():
        _, y = nd.contrib.while_loop(lambda v: v < 10, lambda v: (None, v * x), x, max_iterations=10)
    y.backward()  # (1.5, 2.25, 3.375, 5.0625, 7.59375, 11.390625: y = x^6)
    np.testing.assert_allclose(y.asnumpy(), [1.5**6], rtol=1e-6)
    np.testing.assert_allclose(x.grad.asnumpy(), [6 * 1.5**5], rtol=1e-6)
    # (max_iterations an NDArray, or a float, truncated: MXNet's int() of it)
    for limit in (nd.array([2]), 2.5):
        outs, last = nd.contrib.while_loop(lambda i: i < 3, lambda i: (i, i + 1), nd.zeros(1), max_iterations=limit)
        assert outs.asnumpy().tolist() == [[0], [1]] and last.asnumpy().tolist() == [2]
    with pytest.raises(MXNetError, match="max_iterations must be given"):
        nd.contrib.while_loop(lambda v: v < 1, lambda v: (None, v), x)
    with pytest.raises(MXNetError, match="func gave 2 loop variables for 1"):
        nd.contrib.while_loop(lambda v: v < 10, lambda v: (None, [v, v]), x, max_iterations=3)
    with pytest.raises(MXNetError, match="cond must be one value"):
        nd.contrib.while_loop(lambda v: v, lambda v: (None, v), nd.ones(2), max_iterations=3)


def test_cond_takes_a_branch_by_a_value(mode):
    x = nd.array([2.0])
    x.attach_grad()
    with autograd.record():
        y = nd.contrib.cond(x.sum() > 1, lambda: x * 3, lambda: x * 5)
    y.backward()
    assert y.asnumpy().tolist() == [6] and x.grad.asnumpy().tolist() == [3]
    assert nd.contrib.cond(False, lambda: 1, lambda: 2) == 2


IMAGE = np.arange(20.0).reshape(1, 1, 4, 5)


@pytest.mark.parametrize(
    "at, want",
    [
        (
            {"height": 3, "width": 7},
            [
                [0.0, 0.66667, 1.33333, 2.0, 2.66667, 3.33333, 4.0],
                [7.5, 8.16667, 8.83333, 9.5, 10.16667, 10.83333, 11.5],
                [15.0, 15.66667, 16.33333, 17.0, 17.66667, 18.33333, 19.0],
            ],
        ),
        (
            {"height": 3, "width": 7, "align_corners": False},
            [
                [0.83333, 1.40476, 2.11905, 2.83333, 3.54762, 4.26191, 4.83333],
                [7.5, 8.07143, 8.78571, 9.5, 10.21429, 10.92857, 11.5],
                [14.16667, 14.7381, 15.45238, 16.16667, 16.88096, 17.59524, 18.16667],
            ],
        ),
        (
            {"height": 6, "width": 2, "align_corners": False},
            [[0.75, 3.25], [3.25, 5.75], [6.58333, 9.08333], [9.91667, 12.41667], [13.25, 15.75], [15.75, 18.25]],
        ),
        ({"scale_height": 1.5, "scale_width": 0.5}, [[0, 4], [3, 7], [6, 10], [9, 13], [12, 16], [15, 19]]),
        ({"mode": "to_odd_down"}, [[0, 1, 2, 3, 4], [7.5, 8.5, 9.5, 10.5, 11.5], [15, 16, 17, 18, 19]]),
        ({"height": 1, "width": 1, "align_corners": False}, [[0.0]]),
    ],
)
def test_bilinear_resize_as_mxnet(mode, at, want):
    got = nd.contrib.BilinearResize2D(nd.array(IMAGE), **at)
    np.testing.assert_allclose(got.asnumpy()[0, 0], want, atol=1e-5)


def test_bilinear_resize_modes_sizes_and_gradients(mode):
    x = nd.array(IMAGE)
    assert nd.contrib.BilinearResize2D(x, mode="odd_scale", scale_height=2, scale_width=0.5).shape == (1, 1, 8, 3)
    assert nd.contrib.BilinearResize2D(x, mode="to_even_up").shape == (1, 1, 4, 6)
    assert nd.contrib.BilinearResize2D(x, nd.zeros((1, 1, 2, 3)), mode="like").shape == (1, 1, 2, 3)
    like = nd.zeros((1, 1, 2, 3))
    x.attach_grad()
    like.attach_grad()
    with autograd.record():
        y = nd.contrib.BilinearResize2D(x, height=3, width=7, align_corners=False)
    y.backward(nd.array(np.arange(21.0).reshape(1, 1, 3, 7)))
    want = [
        [0.35714, 1.66667, 3.92857, 4.7619, 6.78571],
        [5.28571, 5.83333, 8.64286, 8.30952, 10.42857],
        [8.61904, 8.83333, 12.30952, 11.30952, 13.7619],
        [17.02381, 16.66667, 22.26191, 19.76191, 23.45238],
    ]
    np.testing.assert_allclose(x.grad.asnumpy()[0, 0], want, atol=2e-5)
    with autograd.record():
        y = nd.contrib.BilinearResize2D(x, like, mode="like")
    y.backward()
    assert x.grad.asnumpy()[0, 0].tolist() == [[1, 0, 1, 0, 1], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [1, 0, 1, 0, 1]]
    half = nd.contrib.BilinearResize2D(x.astype("float16"), height=2, width=2)
    assert half.dtype == np.float16 and half.asnumpy()[0, 0].tolist() == [[0, 4], [15, 19]]
    for at, message in (
        ({"height": 0, "width": 2}, "height must be at least 1, got 0"),
        ({"mode": "like"}, "mode 'like' takes a second input"),
        ({"mode": "odd_scale"}, "mode 'odd_scale' needs positive scale_height and scale_width"),
        ({"scale_height": -1.0, "scale_width": 1.0}, "scales must be positive and finite, got -1.0"),
        ({"scale_height": float("nan"), "scale_width": 1.0}, "scales must be positive and finite, got nan"),
        ({"mode": "odd_scale", "scale_height": float("inf"), "scale_width": 1.0}, "positive scale_height"),
        ({"mode": "bogus"}, "mode must be one of size, like"),
    ):
        with pytest.raises(MXNetError, match=message):
            nd.contrib.BilinearResize2D(x, **at).wait_to_read()
    with pytest.raises(MXNetError, match=r"data must be 4-D \(N, C, H, W\), got shape \(2, 3\)"):
        nd.contrib.BilinearResize2D(nd.zeros((2, 3)), height=2, width=2).wait_to_read()
    with pytest.raises(MXNetError, match="floating point arrays only, got int32"):  # (MXNet's process fails at exit)
        nd.contrib.BilinearResize2D(x.astype("int32"), height=2, width=2).wait_to_read()


def test_adaptive_average_pooling_as_mxnet(mode):
    x = nd.array(IMAGE)
    assert nd.contrib.AdaptiveAvgPooling2D(x, output_size=(2, 3)).asnumpy()[0, 0].tolist() == [
        [3, 4.5, 6],
        [13, 14.5, 16],
    ]
    three = nd.contrib.AdaptiveAvgPooling2D(x, output_size=3).asnumpy()[0, 0].tolist()
    assert three == [[3, 4.5, 6], [8, 9.5, 11], [13, 14.5, 16]]
    assert nd.contrib.AdaptiveAvgPooling2D(x, output_size=(4, 5)).asnumpy().tolist() == IMAGE.tolist()
    assert nd.contrib.AdaptiveAvgPooling2D(x, output_size=(7, 9)).asnumpy()[0, 0, 1].tolist() == [
        2.5, 3, 3.5, 4, 4.5, 5, 5.5, 6, 6.5
    ]  # fmt: skip
    assert nd.contrib.AdaptiveAvgPooling2D(x).asnumpy().tolist() == [[[[9.5]]]]
    x.attach_grad()
    with autograd.record():
        y = nd.contrib.AdaptiveAvgPooling2D(x, output_size=(3, 2))
    y.backward(nd.array(np.arange(6.0).reshape(1, 1, 3, 2)))
    want = [
        [0, 0, 1 / 6, 1 / 6, 1 / 6],
        [1 / 3, 1 / 3, 1, 2 / 3, 2 / 3],
        [1, 1, 7 / 3, 4 / 3, 4 / 3],
        [2 / 3, 2 / 3, 1.5, 5 / 6, 5 / 6],
    ]
    np.testing.assert_allclose(x.grad.asnumpy()[0, 0], want, rtol=1e-6)
    with pytest.raises(MXNetError, match="output_size must be one size or"):
        nd.contrib.AdaptiveAvgPooling2D(x, output_size=(1, 2, 3)).wait_to_read()
    with pytest.raises(MXNetError, match=r"data must be 4-D"):
        nd.contrib.AdaptiveAvgPooling2D(nd.zeros((1, 2, 3)), output_size=2).wait_to_read()
    with pytest.raises(MXNetError, match="cannot make 2 values from an axis of length 0"):
        nd.contrib.AdaptiveAvgPooling2D(nd.zeros((1, 2, 0, 3)), output_size=2).wait_to_read()
    assert nd.contrib.AdaptiveAvgPooling2D(nd.zeros((0, 2, 4, 3)), output_size=2).shape == (0, 2, 2, 2)


def test_adaptive_pooling_sums_each_window_on_its_own(mode):
    """Window sums are not differences of a running total: a huge value or an infinity stays
    in its own windows (MXNet 1.9.1's values)."""
    x = nd.array([[[[1e20, 1, 2, 3], [5, 6, 7, 8]]]])
    assert nd.contrib.AdaptiveAvgPooling2D(x, output_size=(2, 4)).asnumpy().tolist() == x.asnumpy().tolist()
    inf = nd.contrib.AdaptiveAvgPooling2D(nd.array([[[[INF, 1, 2, 3, 4, 5]]]]), output_size=(1, 6))
    assert inf.asnumpy().tolist() == [[[[INF, 1, 2, 3, 4, 5]]]]
    nan = nd.contrib.AdaptiveAvgPooling2D(nd.array([[[[NAN, 1, 2, 3, 4, 5]]]]), output_size=(1, 3)).asnumpy()
    assert np.isnan(nan[0, 0, 0, 0]) and nan[0, 0, 0, 1:].tolist() == [2.5, 4.5]
    v = nd.array(np.arange(6.0).reshape(1, 1, 1, 6))
    v.attach_grad()
    with autograd.record():
        y = nd.contrib.AdaptiveAvgPooling2D(v, output_size=(1, 3))
    y.backward(nd.array([[[[INF, 1, 1]]]]))
    assert v.grad.asnumpy().tolist() == [[[[INF, INF, 0.5, 0.5, 0.5, 0.5]]]]


def test_box_iou_and_box_nms_as_mxnet(mode):
    """box_iou and box_nms (box_non_maximum_suppression), values checked with MXNet 1.9.1."""
    boxes = nd.array([[0.5, 0.5, 1.0, 1.0], [0.0, 0.0, 0.5, 0.5]])
    got = nd.contrib.box_iou(boxes, nd.array([[0.25, 0.25, 0.75, 0.75]]))
    np.testing.assert_allclose(got.asnumpy(), [[0.14285715], [0.14285715]], rtol=1e-6)
    a, b = nd.array([[1.0, 1.0, 2.0, 2.0]]), nd.array([[1.5, 1.5, 1.0, 1.0], [0.0, 0.0, 0.2, 0.2]])
    np.testing.assert_allclose(nd.contrib.box_iou(a, b, format="center").asnumpy(), [[0.25, 0.00248139]], rtol=1e-5)
    assert nd.contrib.box_iou(nd.ones((2, 3, 4)), nd.ones((5, 4))).shape == (2, 3, 5)
    x = nd.array(
        [
            [0, 0.5, 0.1, 0.1, 0.2, 0.2],
            [1, 0.4, 0.1, 0.1, 0.2, 0.2],
            [0, 0.3, 0.1, 0.1, 0.14, 0.14],
            [2, 0.6, 0.5, 0.5, 0.7, 0.8],
        ]
    )
    gone = [-1.0] * 6
    nms = nd.contrib.box_nms(x, overlap_thresh=0.1, id_index=0, force_suppress=True)
    np.testing.assert_allclose(nms.asnumpy(), [[2, 0.6, 0.5, 0.5, 0.7, 0.8], [0, 0.5, 0.1, 0.1, 0.2, 0.2], gone, gone])
    by_class = nd.contrib.box_non_maximum_suppression(x, overlap_thresh=0.1, id_index=0)
    np.testing.assert_allclose(
        by_class.asnumpy(),
        [[2, 0.6, 0.5, 0.5, 0.7, 0.8], [0, 0.5, 0.1, 0.1, 0.2, 0.2], [1, 0.4, 0.1, 0.1, 0.2, 0.2], gone],
    )
    centered = nd.contrib.box_nms(x, id_index=0, background_id=2, out_format="center")
    np.testing.assert_allclose(
        centered.asnumpy(),
        [[0, 0.5, 0.15, 0.15, 0.1, 0.1], [1, 0.4, 0.15, 0.15, 0.1, 0.1], [0, 0.3, 0.12, 0.12, 0.04, 0.04], gone],
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        nd.contrib.box_nms(x, topk=2, valid_thresh=0.35).asnumpy(),
        [[2, 0.6, 0.5, 0.5, 0.7, 0.8], [0, 0.5, 0.1, 0.1, 0.2, 0.2], gone, gone],
    )
    x.attach_grad()
    with autograd.record():
        y = nd.contrib.box_nms(x, overlap_thresh=0.1, id_index=0, force_suppress=True, out_format="center")
    y.backward(nd.array([[0.1] * 6, [0.2] * 6, [0.3] * 6, [0.4] * 6]))  # (to the kept rows as they are, as MXNet's)
    np.testing.assert_allclose(x.grad.asnumpy(), [[0.2] * 6, [0] * 6, [0] * 6, [0.1] * 6])
    # a class of -1 is the background by default; classes compare as integers; topk 0 is the data
    padded = nd.array([[-1, 0.9, 0, 0, 1, 1], [-2, 0.8, 2, 2, 3, 3], [3, 0.5, 4, 4, 5, 5], [-1.5, 0.4, 6, 6, 7, 7]])
    kept = nd.contrib.box_nms(padded, id_index=0).asnumpy()
    assert kept[:, 0].tolist() == [-2, 3, -1.5, -1] and kept[3].tolist() == gone
    same = nd.array([[0.2, 0.9, 0, 0, 1, 1], [0.7, 0.8, 0, 0, 1, 1], [1.2, 0.7, 0, 0, 1, 1], [1.9, 0.6, 0, 0, 1, 1]])
    np.testing.assert_allclose(nd.contrib.box_nms(same, id_index=0).asnumpy()[:, 0], [0.2, 1.2, -1, -1], rtol=1e-6)
    x.grad[:] = 0
    with autograd.record():
        y = nd.contrib.box_nms(x, topk=0, out_format="center")
    y.backward(nd.ones_like(x) * 3)
    assert np.array_equal(y.asnumpy(), x.asnumpy()) and x.grad.asnumpy().tolist() == [[3] * 6] * 4
    with pytest.raises(InvalidInput, match="coord_start 3 leaves no 4 coordinates"):
        nd.contrib.box_nms(x, coord_start=3)
    with pytest.raises(InvalidInput, match="in_format must be 'corner' or 'center'"):
        nd.contrib.box_nms(x, in_format="xywh")
    with pytest.raises(DTypeError, match="must be a float array"):
        nd.contrib.box_iou(nd.ones((1, 4), dtype="int32"), nd.ones((1, 4), dtype="int32"))


def test_boolean_mask_as_mxnet(mode):
    """boolean_mask: the rows where the index is not 0, gradient to them (values checked with
    MXNet 1.9.1); it reads the index (its shape depends on it), so it cannot be traced."""
    d = nd.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    d.attach_grad()
    with autograd.record():
        y = nd.contrib.boolean_mask(d, nd.array([0, 1, 1]))
    y.backward(nd.ones_like(y) * 2)
    assert y.asnumpy().tolist() == [[4, 5, 6], [7, 8, 9]]
    assert d.grad.asnumpy().tolist() == [[0, 0, 0], [2, 2, 2], [2, 2, 2]]
    assert nd.contrib.boolean_mask(d, nd.array([0, 2.5, -1])).asnumpy().tolist() == [[4, 5, 6], [7, 8, 9]]
    assert nd.contrib.boolean_mask(d, nd.zeros(3)).shape == (0, 3)
    ints = nd.contrib.boolean_mask(nd.arange(6).reshape((3, 2)).astype("int32"), nd.array([1, 0, 1], dtype="int32"))
    assert ints.dtype == np.int32 and ints.asnumpy().tolist() == [[0, 1], [4, 5]]
    with pytest.raises(ShapeError, match="one value per row"):
        nd.contrib.boolean_mask(d, nd.array([0, 1]))
    with pytest.raises(InvalidInput, match="only axis 0"):
        nd.contrib.boolean_mask(d, nd.array([0, 1, 1]), axis=1)
    with pytest.raises(gradserve.NotTraceable):
        gradserve.hybridize(lambda a, i: nd.contrib.boolean_mask(a, i))(d, nd.array([0, 1, 1]))


def test_roi_align_as_mxnet(mode):
    """contrib.ROIAlign (Mask R-CNN's), values checked with MXNet 1.9.1: a region across the
    data and one of less than a pixel, plain and ``aligned``; a negative batch index gives zeros
    (MXNet leaves that output unset); rois get no gradient."""
    rng = np.random.default_rng(1)
    x = nd.array(rng.standard_normal((1, 2, 5, 5))).astype("float64")
    rois = nd.array([[0, 0.5, 0.7, 4.2, 3.9], [0, 2, 2, 2.1, 2.05]]).astype("float64")
    y = nd.contrib.ROIAlign(x, rois, pooled_size=(2, 2), spatial_scale=1.0)
    np.testing.assert_allclose(
        y.asnumpy().ravel(),
        [-0.027391, 0.012255, 0.043383, -0.460005, -0.860372, 0.638383, -0.453544, -0.184048]
        + [-0.548506, -0.394608, -0.459382, -0.571233, -0.968198, -0.396459, -0.516213, -0.616536],
        atol=1e-6,
    )
    y = nd.contrib.ROIAlign(x, rois, pooled_size=(3, 2), spatial_scale=1.0, aligned=True)
    np.testing.assert_allclose(
        y.asnumpy()[1].ravel(),
        [-0.039933, -0.045061, -0.042882, -0.050011, -0.045832, -0.054962]
        + [-0.921114, -0.931884, -0.927496, -0.939823, -0.933878, -0.947762],
        atol=1e-6,
    )
    x.attach_grad()
    rois.attach_grad()
    with autograd.record():
        y = nd.contrib.ROIAlign(
            x,
            nd.concat(rois, nd.array([[-1, 0, 0, 4, 4]], dtype="float64"), dim=0),
            pooled_size=(2, 2),
            spatial_scale=1.0,
        )
    y.backward(nd.ones_like(y))
    assert y[2].asnumpy().tolist() == [[[0, 0], [0, 0]]] * 2
    np.testing.assert_allclose(x.grad.asnumpy().sum(), 2 * 2 * 4)  # (each output's weights sum to 1)
    assert rois.grad.asnumpy().tolist() == [[0.0] * 5] * 2
    with pytest.raises(InvalidInput, match="position_sensitive"):
        nd.contrib.ROIAlign(x, rois, pooled_size=(2, 2), spatial_scale=1.0, position_sensitive=True)
    # a batch index is truncated (-0.5 is sample 0), NaN coordinates give NaN, NaN index zeros (MXNet's)
    img = nd.arange(32).reshape((2, 1, 4, 4))
    odd = nd.array([[-0.5, 0, 0, 3, 3], [0, 0, float("nan"), 3, 3], [float("nan"), 0, 0, 3, 3]])
    got = nd.contrib.ROIAlign(img, odd, pooled_size=(1, 1), spatial_scale=1.0).asnumpy().ravel()
    assert got[0] == 7.5 and np.isnan(got[1]) and got[2] == 0
    with pytest.raises(InvalidInput, match="spatial_scale must be in"):
        nd.contrib.ROIAlign(img, odd, pooled_size=(1, 1), spatial_scale=2.0)  # (MXNet's bound)
    with pytest.raises(InvalidInput, match="give a sample_ratio"):  # (1e8 samples a bin: MXNet runs on for minutes)
        nd.contrib.ROIAlign(img, nd.array([[0, 0, 0, 1e8, 1e8]]), pooled_size=(1, 1), spatial_scale=1.0).asnumpy()
