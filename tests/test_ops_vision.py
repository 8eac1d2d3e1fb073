"""MXNet 1.9.1 parity of the image and normalization ops (``engine/ops_vision.py``): values,
gradients, defaults, shapes, dtypes and the inputs refused, each recorded from MXNet as a
literal (the tests do not need MXNet). tests/test_ops.py holds their finite-difference cases."""

from __future__ import annotations

import numpy as np
import pytest

from gradserve import autograd, nd
from gradserve.engine import OPS, Session
from gradserve.engine.dispatch import Context, Eager
from gradserve.engine.errors import DTypeError, InvalidInput, MXNetError, ShapeError
from gradserve.engine.optable import Spec
from gradserve.engine.tape import resolve

F32 = np.float32


def run(name: str, at: dict, *xs: np.ndarray) -> np.ndarray:
    """The op's forward, its result checked against its inference."""
    op = OPS[name]
    parsed = op.parse_attrs(at)
    spec = op.infer(parsed, *[Spec(x.shape, x.dtype.name) for x in xs])
    y = op.forward(Context(), dict(parsed), *xs)
    assert (y.shape, y.dtype.name) == spec, f"{name}: infer says {spec}, forward gives {y.shape} {y.dtype}"
    return y


def grads(name: str, at: dict, g: np.ndarray, *xs: np.ndarray) -> tuple:
    """The op's cotangents for head gradient ``g`` (None for an input that takes none)."""
    op = OPS[name]
    parsed = op.parse_attrs(at)
    node_at = dict(parsed)
    y = op.forward(Context(), node_at, *xs)
    return tuple(resolve(c) for c in op.vjp(Eager(Context()), node_at, g, y, *xs))


def refused(name: str, at: dict, *specs: tuple) -> MXNetError:
    """The error the op's inference (the client's and the server's) gives these inputs."""
    op = OPS[name]
    with pytest.raises(MXNetError) as e:
        op.infer(op.parse_attrs(at), *[Spec(s, d) for s, d in specs])
    return e.value


def assert_mx(got: np.ndarray, want, rtol: float = 2e-6, atol: float = 1e-6) -> None:
    np.testing.assert_allclose(got.astype(np.float64), np.asarray(want, np.float64), rtol=rtol, atol=atol)


# --------------------------------------------------------------------------
# LRN

LRN_X = np.linspace(-1, 1, 16).reshape(2, 4, 1, 2).astype(F32)
LRN_G = np.linspace(0.5, -0.5, 16).reshape(2, 4, 1, 2).astype(F32)


@pytest.mark.parametrize(
    "nsize, y0, gx0",
    [  # MXNet 1.9.1 (alpha 0.5, beta 0.75, knorm 1.5): sample 0, y and x.grad
        (
            3,
            [
                [-0.6554683, -0.5859578],
                [-0.4733586, -0.4023516],
                [-0.32310852, -0.23661304],
                [-0.14446525, -0.04871748],
            ],
            [[0.25687698, 0.24498211], [0.17625117, 0.1642016], [0.1437783, 0.11023246], [0.06945552, 0.02392474]],
        ),
        (  # even: the channel and one either side, divided by 2
            2,
            [
                [-0.6572362, -0.5852827],
                [-0.50731045, -0.42374387],
                [-0.3352165, -0.24256806],
                [-0.14682408, -0.04915856],
            ],
            [[0.25819993, 0.24380356], [0.22235787, 0.19388281], [0.15880252, 0.11797629], [0.07268278, 0.02455199]],
        ),
    ],
)
def test_lrn_values_and_gradient_are_mxnets(nsize, y0, gx0):
    at = {"nsize": nsize, "alpha": 0.5, "beta": 0.75, "knorm": 1.5}
    y = run("LRN", at, LRN_X)
    assert_mx(y[0, :, 0], y0)
    assert_mx(-y[1, ::-1, 0, ::-1], y0)  # (odd in x, and the data is)
    (gx,) = grads("LRN", at, LRN_G, LRN_X)
    assert gx.dtype == F32
    assert_mx(gx[0, :, 0], gx0)


def test_lrn_defaults_and_ranks():
    """alpha 1e-4, beta 0.75, knorm 2 (nsize is required); (N, C) data too, as MXNet's CPU
    kernel; 3-D and 5-D data fail in MXNet's (its check dim == ndim()), refused here."""
    assert OPS["LRN"].parse_attrs({"nsize": 3}) == {"alpha": 1e-4, "beta": 0.75, "knorm": 2.0, "nsize": 3}
    x = (np.arange(40).reshape(2, 5, 2, 2) / 10.0 - 1).astype(F32)
    assert_mx(run("LRN", {"nsize": 3}, x)[0, :, 0, 0], [-0.5945934, -0.35675588, -0.11892005, 0.11892005, 0.35676035])
    assert run("LRN", {"nsize": 3}, np.ones((2, 5), F32)).shape == (2, 5)
    with pytest.raises(InvalidInput, match="nsize"):
        OPS["LRN"].parse_attrs({})
    for shape in [(5,), (2, 5, 3), (2, 5, 2, 2, 2)]:
        assert isinstance(refused("LRN", {"nsize": 3}, (shape, "float32")), ShapeError)
    assert "nsize must be at least 1" in str(refused("LRN", {"nsize": 0}, ((2, 5, 2, 2), "float32")))
    assert "floating point" in str(refused("LRN", {"nsize": 3}, ((2, 5, 2, 2), "int32")))


def test_lrn_float16_is_computed_in_float32():
    """float16 data gives float16, the float32 result rounded once. (MXNet 1.9.1's CPU LRN
    fails on float16 and float64 data: its kernel reads them as float32.)"""
    x = (np.arange(40).reshape(2, 5, 2, 2) / 10.0 - 1).astype(np.float16)
    at = {"nsize": 3, "alpha": 0.5, "knorm": 1.0}
    y = run("LRN", at, x)
    assert y.dtype == np.float16
    np.testing.assert_array_equal(y, run("LRN", at, x.astype(F32)).astype(np.float16))
    (gx,) = grads("LRN", at, np.ones(x.shape, np.float16), x)
    (want,) = grads("LRN", at, np.ones(x.shape, F32), x.astype(F32))
    assert gx.dtype == np.float16
    np.testing.assert_array_equal(gx, want.astype(np.float16))


def test_lrn_declares_its_window_work():
    op = OPS["LRN"]
    spec = Spec((2, 8, 4, 4), "float32")
    assert op.work(op.parse_attrs({"nsize": 5}), spec) == 256 * 5
    assert op.work(op.parse_attrs({"nsize": 101}), spec) == 256 * 15  # (the window: all 8 channels either side)
    assert op.scratch(op.parse_attrs({"nsize": 5}), Spec((2, 8, 4, 4), "float16")) > 0


# --------------------------------------------------------------------------
# UpSampling

UP_A = np.linspace(-1, 1, 8).reshape(1, 2, 2, 2).astype(F32)


def test_upsampling_nearest_is_mxnets():
    x = np.arange(12.0).reshape(1, 2, 2, 3).astype(F32)
    y = run("UpSampling", {"scale": 2, "sample_type": "nearest"}, x)
    assert y.shape == (1, 2, 4, 6)
    np.testing.assert_array_equal(y[0, 1], [[6, 6, 7, 7, 8, 8]] * 2 + [[9, 9, 10, 10, 11, 11]] * 2)
    # each further input scaled to the first's output by a whole factor of its own (sum: added)
    b = np.linspace(2, 3, 2).reshape(1, 2, 1, 1).astype(F32)
    c = np.linspace(-3, 3, 32).reshape(1, 2, 4, 4).astype(F32)
    at = {"scale": 2, "sample_type": "nearest", "multi_input_mode": "sum"}
    y = run("UpSampling", at, UP_A, b, c)
    assert_mx(y[0, 1, :2], [[3.2396312, 3.4331796, 3.9124424, 4.105991], [4.013825, 4.207373, 4.686636, 4.880184]])
    g = (np.arange(32).reshape(1, 2, 4, 4) / 10).astype(F32)
    ga, gb, gc = grads("UpSampling", at, g, UP_A, b, c)
    assert_mx(ga, [[[[1.0, 1.8], [4.2, 5.0]], [[7.4, 8.2], [10.6, 11.4]]]])
    assert_mx(gb, np.reshape([12.0, 37.6], (1, 2, 1, 1)))
    np.testing.assert_array_equal(gc, g)
    # concat (the default): joined on the channels
    five = np.full((1, 1, 1, 1), 5.0, F32)
    at = {"scale": 2, "sample_type": "nearest", "num_args": 2}
    y = run("UpSampling", at, UP_A, five)
    assert y.shape == (1, 3, 4, 4) and (y[0, 2] == 5).all()
    g = (np.arange(48).reshape(1, 3, 4, 4) / 10).astype(F32)
    ga, gb = grads("UpSampling", at, g, UP_A, five)
    assert_mx(ga, [[[[1.0, 1.8], [4.2, 5.0]], [[7.4, 8.2], [10.6, 11.4]]]])
    assert_mx(gb, [[[[63.2]]]])


def test_upsampling_bilinear_is_mxnets_deconvolution():
    """MXNet 1.9.1's values: the Deconvolution of each channel with its own (k, k) filter."""
    x = np.arange(8.0).reshape(1, 2, 2, 2).astype(F32)
    w = np.linspace(0, 1, 50).reshape(2, 1, 5, 5).astype(F32)
    y = run("UpSampling", {"scale": 3, "sample_type": "bilinear", "num_filter": 2}, x, w)
    assert y.shape == (1, 2, 6, 6)
    assert_mx(y[0, 1, 2], [6.530612, 6.7346935, 14.591837, 15.040816, 8.142857, 8.387754])
    assert_mx(y[0, 1, 5], [5.020408, 5.142857, 10.979591, 11.244898, 6.0, 6.142857])
    a = np.linspace(-1, 1, 12).reshape(1, 2, 2, 3).astype(F32)
    w = np.linspace(-1, 1, 32).reshape(2, 1, 4, 4).astype(F32)
    at = {"scale": 2, "sample_type": "bilinear", "num_filter": 2}
    y = run("UpSampling", at, a, w)
    assert_mx(y[0, 0, 0], [0.67741936, 1.2199414, 1.1026393, 0.97360706, 0.8797654, 0.39002934])
    ga, gw = grads("UpSampling", at, (np.arange(48).reshape(1, 2, 4, 6) / 10).astype(F32), a, w)
    assert_mx(ga[0, 0], [[-1.2677419, -2.612903, -2.8064516], [-6.203225, -9.890323, -8.787097]])
    assert_mx(ga[0, 1], [[19.86774, 26.496777, 19.72258], [14.932259, 19.219357, 13.741936]], rtol=1e-5)
    assert_mx(gw[1, 0, 0], [5.836364, 7.927273, 8.172728, 4.818182])
    assert_mx(gw[0, 0, 3], [-2.0181818, -3.3636363, -3.6090908, -2.709091])
    # its cost is the Deconvolution's
    specs = (Spec(a.shape, "float32"), Spec(w.shape, "float32"))
    deconv = OPS["Deconvolution"].parse_attrs(
        {"kernel": (4, 4), "stride": (2, 2), "pad": (1, 1), "num_filter": 2, "num_group": 2}
    )
    op = OPS["UpSampling"]
    assert op.work(op.parse_attrs(at), *specs) == OPS["Deconvolution"].work(deconv, *specs) == 192
    assert op.scratch(op.parse_attrs(at), *specs) == OPS["Deconvolution"].scratch(deconv, *specs)


@pytest.mark.parametrize(
    "at, specs, kind, words",
    [
        ({"scale": 2}, [(1, 2, 2, 2)], InvalidInput, "sample_type"),
        ({"sample_type": "nearest"}, [(1, 2, 2, 2)], InvalidInput, "scale"),
        ({"scale": 0, "sample_type": "nearest"}, [(1, 2, 2, 2)], InvalidInput, "scale must be at least 1"),
        ({"scale": 2, "sample_type": "linear"}, [(1, 2, 2, 2)], InvalidInput, "nearest or bilinear"),
        ({"scale": 2, "sample_type": "nearest", "multi_input_mode": "max"}, [(1, 2, 2, 2)], InvalidInput, "concat"),
        ({"scale": 2, "sample_type": "nearest", "num_args": 2}, [(1, 2, 2, 2)], InvalidInput, "num_args"),
        ({"scale": 2, "sample_type": "nearest"}, [(2, 3)], ShapeError, "4-D"),
        ({"scale": 2, "sample_type": "nearest"}, [(1, 2, 2, 2, 2)], ShapeError, "4-D"),
        # (MXNet: "input width of 4 does not divide output width of 6", or its Assignment check)
        ({"scale": 2, "sample_type": "nearest"}, [(1, 2, 2, 3), (1, 1, 1, 2)], ShapeError, "one whole factor"),
        ({"scale": 2, "sample_type": "nearest"}, [(1, 2, 2, 3), (1, 1, 3, 3)], ShapeError, "one whole factor"),
        ({"scale": 2, "sample_type": "nearest"}, [(1, 2, 2, 3), (2, 1, 4, 6)], ShapeError, "samples"),
        (
            {"scale": 2, "sample_type": "nearest", "multi_input_mode": "sum"},
            [(1, 2, 2, 2), (1, 1, 1, 1)],
            ShapeError,
            "one channel count",
        ),
        # bilinear: num_filter must be the channels (MXNet's 0, its default, kills the process)
        ({"scale": 2, "sample_type": "bilinear"}, [(1, 2, 2, 3), (2, 1, 4, 4)], InvalidInput, "num_filter"),
        ({"scale": 2, "sample_type": "bilinear", "num_filter": 3}, [(1, 2, 2, 3), (2, 1, 4, 4)], InvalidInput, "(2)"),
        (
            {"scale": 3, "sample_type": "bilinear", "num_filter": 2},
            [(1, 2, 2, 3), (2, 1, 4, 4)],
            ShapeError,
            "(2, 1, 5, 5)",
        ),
        ({"scale": 2, "sample_type": "bilinear", "num_filter": 2}, [(1, 2, 2, 3), (2, 2, 4, 4)], ShapeError, "weight"),
        ({"scale": 2, "sample_type": "bilinear", "num_filter": 2}, [(1, 2, 2, 3)], InvalidInput, "2 inputs"),
    ],
)
def test_upsampling_refuses_what_mxnet_refuses(at, specs, kind, words):
    e = refused("UpSampling", at, *[(s, "float32") for s in specs])
    assert isinstance(e, kind) and words in str(e), str(e)


def test_upsampling_dtypes():
    """Floating data only, of one dtype (MXNet's "This layer requires uniform type"); float16
    nearest as MXNet's. (A float16 bilinear one, which MXNet 1.9.1's CPU refuses, "FP16 gemm on
    cpu not implemented", is computed here as float16 Deconvolution is.)"""
    at = {"scale": 2, "sample_type": "nearest"}
    assert "floating point" in str(refused("UpSampling", at, ((1, 1, 2, 2), "int32")))
    assert isinstance(refused("UpSampling", at, ((1, 1, 2, 2), "float32"), ((1, 1, 2, 2), "float64")), DTypeError)
    x = np.arange(4).reshape(1, 1, 2, 2).astype(np.float16)
    y = run("UpSampling", {**at, "multi_input_mode": "sum"}, x, np.full((1, 1, 1, 1), 0.1, np.float16))
    assert y.dtype == np.float16
    np.testing.assert_array_equal(y[0, 0, ::2, ::2], np.array([[0.1, 1.1], [2.1, 3.1]], np.float16))
    w = np.ones((1, 1, 4, 4), np.float16)
    assert run("UpSampling", {"scale": 2, "sample_type": "bilinear", "num_filter": 1}, x, w).dtype == np.float16


# --------------------------------------------------------------------------
# GroupNorm


def test_group_norm_values_and_gradients_are_mxnets():
    a = (np.linspace(-1, 1, 24).reshape(2, 4, 3) ** 3).astype(F32)
    gamma, beta = np.array([1.5, -0.5], F32), np.array([0.2, 0.3], F32)
    g = np.cos(np.arange(24)).reshape(2, 4, 3).astype(F32)
    at = {"num_groups": 2, "eps": 1e-3}
    y = run("GroupNorm", at, a, gamma, beta)
    assert_mx(  # MXNet 1.9.1: y, and the gradients of data, gamma and beta for head gradient g
        y,
        [
            [
                [-2.2781553, -1.015838, 0.02754989],
                [0.87285936, 1.5409404, 2.0526438],
                [1.0411785, 0.5481515, 0.23202449],
                [0.05348648, -0.02677372, -0.04806724],
            ],
            [
                [-0.84420174, -0.7803212, -0.5395406],
                [-0.00392653, 0.9444545, 2.4235353],
                [0.91754794, 0.74698013, 0.52428645],
                [0.24251664, -0.10527936, -0.52605176],
            ],
        ],
        rtol=1e-5,
    )
    ga, gg, gb = grads("GroupNorm", at, g, a, gamma, beta)
    assert_mx(
        ga,
        [
            [
                [1.5341408, 1.1210586, -2.2671514],
                [-3.9496684, -1.1047947, 4.666415],
                [-2.9398541, -5.489024, 0.52070504],
                [6.482443, 5.014834, -3.5891047],
            ],
            [
                [18.713268, 21.044552, -0.37301874],
                [-23.562864, -23.093227, 7.2712865],
                [0.1485169, -0.7942305, -0.24686953],
                [0.835318, 0.8893536, -0.8320884],
            ],
        ],
        rtol=1e-4,
        atol=1e-5,
    )
    assert_mx(gg, [-4.748082, -6.4480286], rtol=1e-5)
    assert_mx(gb, [-0.34029126, -0.2006233], rtol=1e-5)


GN_X = (np.linspace(-1, 1, 24).reshape(2, 4, 3) ** 2).astype(F32)
GN_Y2 = [  # MXNet 1.9.1: GN_X in 2 groups, gamma 1 and beta 0
    [
        [1.5669887, 0.85373867, 0.2053296],
        [-0.37823847, -0.8969658, -1.3508521],
        [1.7370185, 0.7895538, 0.03158216],
        [-0.53689665, -0.9158825, -1.1053754],
    ],
    [
        [-1.1053754, -0.9158825, -0.53689665],
        [0.03158216, 0.7895538, 1.7370185],
        [-1.3508521, -0.8969658, -0.37823847],
        [0.2053296, 0.85373867, 1.5669887],
    ],
]


def test_group_norm_defaults_and_gamma_per_group():
    """One group by default; gamma and beta have one value per group (MXNet 1.9.1's, not one
    per channel); the channels must split evenly; data of rank 3 or more."""
    y = run("GroupNorm", {}, GN_X, np.ones(1, F32), np.zeros(1, F32))
    assert_mx(y[0, 0], [1.9727987, 1.4581556, 0.9902982], rtol=1e-5)
    assert_mx(y[1, 3], [0.9902982, 1.4581556, 1.9727987], rtol=1e-5)
    assert_mx(run("GroupNorm", {"num_groups": 2}, GN_X, np.ones(2, F32), np.zeros(2, F32)), GN_Y2, rtol=1e-5)
    y = run("GroupNorm", {"num_groups": 2, "eps": 0.5}, GN_X, np.ones(2, F32), np.zeros(2, F32))
    assert_mx(y[0, 0], [0.49084547, 0.26742613, 0.0643177], rtol=1e-5)
    assert run("GroupNorm", {"num_groups": 4}, GN_X, np.ones(4, F32), np.zeros(4, F32)).shape == (2, 4, 3)
    for shape in [(2, 4, 3, 2), (2, 4, 1, 1, 2)]:
        x = np.arange(np.prod(shape), dtype=F32).reshape(shape)
        assert run("GroupNorm", {"num_groups": 2}, x, np.ones(2, F32), np.zeros(2, F32)).shape == shape
    s = ((2, 4, 3), "float32")
    e = refused("GroupNorm", {"num_groups": 2}, s, ((4,), "float32"), ((4,), "float32"))
    assert isinstance(e, ShapeError) and "one value per group" in str(e)
    e = refused("GroupNorm", {"num_groups": 3}, s, ((3,), "float32"), ((3,), "float32"))
    assert isinstance(e, ShapeError) and "multiple of num_groups" in str(e)
    for grp in (0, -2):
        assert "positive" in str(refused("GroupNorm", {"num_groups": grp}, s, ((1,), "float32"), ((1,), "float32")))
    for shape in [(4,), (2, 4)]:
        e = refused("GroupNorm", {"num_groups": 2}, (shape, "float32"), ((2,), "float32"), ((2,), "float32"))
        assert isinstance(e, ShapeError)
    e = refused("GroupNorm", {"num_groups": 2, "output_mean_var": True}, s, ((2,), "float32"), ((2,), "float32"))
    assert "output_mean_var" in str(e)


def test_group_norm_dtypes_and_float16_in_float32():
    """float16 and float64 as MXNet's; float16 computed in float32 and rounded once (MXNet's
    float16 sums of squares overflow to NaN where the float32 ones do not)."""
    h = GN_X.astype(np.float16)
    y = run("GroupNorm", {"num_groups": 2}, h, np.ones(2, np.float16), np.zeros(2, np.float16))
    assert y.dtype == np.float16
    assert_mx(y[0], np.array(GN_Y2[0], F32).astype(np.float16), rtol=2e-3, atol=2e-3)
    y = run("GroupNorm", {"num_groups": 2}, GN_X.astype(np.float64), np.ones(2), np.zeros(2))
    assert y.dtype == np.float64
    assert_mx(y[0, 0], [1.56698859, 0.85373857, 0.20532952], rtol=1e-6)
    xh = np.array([[[100.0, 101, 102, 103], [200, 201, 202, 203]]], np.float16)
    y = run("GroupNorm", {}, xh, np.ones(1, np.float16), np.zeros(1, np.float16))
    assert_mx(y, [[[-1.03, -1.01, -0.99, -0.97], [0.97, 0.99, 1.01, 1.03]]], rtol=1e-3)  # (MXNet's, within 1 ulp)
    xh = np.array([[[1000.0, 1001, 1002, 1003], [-3000, 201, 202, 203]]], np.float16)
    y = run("GroupNorm", {}, xh, np.ones(1, np.float16), np.zeros(1, np.float16))
    assert np.isfinite(y).all()  # (MXNet 1.9.1: NaN)
    x32 = xh.astype(F32)
    want = (x32 - x32.mean()) / np.sqrt(((x32 - x32.mean()) ** 2).mean() + F32(1e-5))
    assert_mx(y, want.astype(np.float16), rtol=2e-3, atol=2e-3)
    s = ((2, 4, 3), "int32")
    assert isinstance(refused("GroupNorm", {}, s, ((1,), "int32"), ((1,), "int32")), DTypeError)
    e = refused("GroupNorm", {}, ((2, 4, 3), "float16"), ((1,), "float32"), ((1,), "float32"))
    assert isinstance(e, DTypeError)


# --------------------------------------------------------------------------
# Crop

CROP_X = np.arange(80.0).reshape(2, 2, 4, 5).astype(F32)


@pytest.mark.parametrize(
    "at, like, want",
    [  # MXNet 1.9.1: (top, left, height, width) of the crop of CROP_X (2, 2, 4, 5)
        ({"h_w": [2, 3]}, None, (0, 0, 2, 3)),
        ({"h_w": [2, 3], "offset": [1, 2]}, None, (1, 2, 2, 3)),
        ({"h_w": [2, 3], "offset": [2, 2]}, None, (2, 2, 2, 3)),
        ({"h_w": [2, 3], "center_crop": True}, None, (1, 1, 2, 3)),
        ({"h_w": [3, 2], "center_crop": True}, None, (0, 1, 3, 2)),
        ({"h_w": [3, 2], "offset": [1, 1], "center_crop": True}, None, (0, 1, 3, 2)),  # (the offset unused)
        ({"h_w": [4, 5]}, None, (0, 0, 4, 5)),
        ({}, (7, 9, 2, 3), (0, 0, 2, 3)),
        ({"offset": [1, 1]}, (7, 9, 2, 3), (1, 1, 2, 3)),
        ({"center_crop": True}, (7, 9, 3, 3), (0, 1, 3, 3)),
        ({"h_w": [1, 1]}, (7, 9, 2, 3), (0, 0, 2, 3)),  # (crop_like's size, not h_w)
    ],
)
def test_crop_is_mxnets(at, like, want):
    top, left, h, w = want
    xs = (CROP_X,) if like is None else (CROP_X, np.ones(like, F32))
    y = run("Crop", at, *xs)
    np.testing.assert_array_equal(y, CROP_X[:, :, top : top + h, left : left + w])
    assert y.flags.c_contiguous and not np.shares_memory(y, CROP_X)


def test_crop_gradient_is_mxnets():
    a = np.arange(24.0).reshape(2, 1, 3, 4).astype(F32)
    b = np.ones((1, 1, 2, 2), F32)
    g = (np.arange(8).reshape(2, 1, 2, 2) + 1.0).astype(F32)
    ga, gb = grads("Crop", {"offset": [1, 1]}, g, a, b)
    np.testing.assert_array_equal(  # MXNet 1.9.1's (crop_like's gradient: none here, zeros there)
        ga,
        [
            [[[0, 0, 0, 0], [0, 1, 2, 0], [0, 3, 4, 0]]],
            [[[0, 0, 0, 0], [0, 5, 6, 0], [0, 7, 8, 0]]],
        ],
    )
    assert gb is None
    (gc,) = grads("Crop", {"h_w": [2, 3], "center_crop": True}, np.ones((2, 2, 2, 3), F32), CROP_X)
    want = np.zeros(CROP_X.shape, F32)
    want[:, :, 1:3, 1:4] = 1
    np.testing.assert_array_equal(gc, want)


X4 = ((2, 2, 4, 5), "float32")


@pytest.mark.parametrize(
    "at, specs, kind, words",
    [
        ({"h_w": [5, 2]}, [X4], ShapeError, "larger than"),
        ({"h_w": [0, 2]}, [X4], InvalidInput, "at least (1, 1)"),
        ({"h_w": [-1, 3]}, [X4], InvalidInput, "at least (1, 1)"),
        ({}, [X4], InvalidInput, "at least (1, 1)"),
        ({"h_w": [2]}, [X4], InvalidInput, "2 values"),
        ({"h_w": [2, 3, 4]}, [X4], InvalidInput, "2 values"),
        ({"h_w": [2, 3], "offset": [1]}, [X4], InvalidInput, "2 values"),
        ({"h_w": [2, 3], "offset": [3, 2]}, [X4], ShapeError, "outside"),
        ({"h_w": [2, 3], "offset": [-1, 0]}, [X4], ShapeError, "outside"),
        ({}, [X4, ((7, 9, 5, 3), "float32")], ShapeError, "larger than"),
        ({}, [X4, ((2, 3), "float32")], ShapeError, "4 axes or more"),
        ({}, [X4, ((7, 9, 2, 3), "float32"), ((7, 9, 2, 3), "float32")], InvalidInput, "1 or 2 inputs"),
        ({"h_w": [2, 3], "num_args": 2}, [X4], InvalidInput, "num_args is 2"),
        ({"num_args": 1}, [X4, ((7, 9, 2, 3), "float32")], InvalidInput, "num_args is 1"),
        ({"h_w": [2, 3]}, [((4, 5), "float32")], ShapeError, "4-D"),
        ({"h_w": [2, 3]}, [((1, 2, 2, 4, 5), "float32")], ShapeError, "4-D"),
    ],
)
def test_crop_refuses_what_mxnet_refuses(at, specs, kind, words):
    e = refused("Crop", at, *specs)
    assert isinstance(e, kind) and words in str(e), str(e)


def test_crop_dtypes():
    """Floating data, crop_like of its dtype (MXNet 1.9.1 takes float32 alone: the others
    are computed here as float32 is, a copy of the window)."""
    for dt in (np.float16, np.float64):
        y = run("Crop", {"h_w": [2, 3], "offset": [1, 2]}, CROP_X.astype(dt))
        assert y.dtype == dt
        np.testing.assert_array_equal(y, CROP_X[:, :, 1:3, 2:5].astype(dt))
    assert isinstance(refused("Crop", {"h_w": [2, 3]}, ((2, 2, 4, 5), "int32")), DTypeError)
    assert isinstance(refused("Crop", {}, X4, ((7, 9, 2, 3), "float64")), DTypeError)


# --------------------------------------------------------------------------
# SoftmaxActivation


def test_softmax_activation_values_are_mxnets():
    x = np.linspace(-2, 2, 24).reshape(2, 3, 4).astype(F32)
    y = run("SoftmaxActivation", {}, x)  # instance: along the last axis
    for row in y.reshape(-1, 4):
        assert_mx(row, [0.189004, 0.22490568, 0.26762703, 0.31846333], rtol=1e-6)
    y = run("SoftmaxActivation", {"mode": "channel"}, x)  # along axis 1
    for n in range(2):
        assert_mx(y[n].T, [[0.14234659, 0.28540725, 0.57224613]] * 4, rtol=1e-6)
    for shape in [(5,), (2, 5), (2, 3, 2, 2)]:
        assert run("SoftmaxActivation", {}, np.ones(shape, F32)).shape == shape
    assert run("SoftmaxActivation", {"mode": "channel"}, np.ones((2, 3, 2, 2), F32)).shape == (2, 3, 2, 2)


def test_softmax_activation_gradients():
    a = np.linspace(-1, 1, 12).reshape(2, 3, 2).astype(F32)
    g = np.cos(np.arange(12)).reshape(2, 3, 2).astype(F32)
    # instance, of rows (MXNet 1.9.1's, which for data of rank 3 sums g y over axis 1 instead:
    # here the last axis's softmax gradient whatever the rank)
    x2 = np.linspace(-1, 1, 20).reshape(4, 5).astype(F32)
    g2 = np.cos(np.arange(20)).reshape(4, 5).astype(F32)
    y2 = run("SoftmaxActivation", {}, x2)
    (gi,) = grads("SoftmaxActivation", {"mode": "instance"}, g2, x2)
    assert_mx(gi, y2 * (g2 - (g2 * y2).sum(axis=1, keepdims=True)), rtol=1e-5)
    (gi,) = grads("SoftmaxActivation", {"mode": "instance"}, g, a)
    y = run("SoftmaxActivation", {}, a)
    assert_mx(gi, y * (g - (g * y).sum(axis=-1, keepdims=True)), rtol=1e-5)
    (gc,) = grads("SoftmaxActivation", {"mode": "channel"}, g, a)
    assert_mx(
        gc,
        [
            [[0.2686413, 0.13446122], [-0.06545538, -0.29490626], [-0.20318593, 0.16044502]],
            [[0.26148984, 0.19418587], [0.0233337, -0.25198576], [-0.28482354, 0.0577999]],
        ],
        rtol=1e-5,
    )
    assert_mx(run("SoftmaxActivation", {"mode": "channel"}, a)[0, :, 0], [0.22182883, 0.31911212, 0.45905903])


def test_softmax_activation_checks_and_float16():
    """mode instance or channel (rank 3 or more); floating data; float16 computed in float32
    and rounded once (MXNet 1.9.1's CPU kernel fails on float16)."""
    assert "instance or channel" in str(refused("SoftmaxActivation", {"mode": "foo"}, ((2, 3), "float32")))
    for shape in [(5,), (2, 5)]:
        e = refused("SoftmaxActivation", {"mode": "channel"}, (shape, "float32"))
        assert isinstance(e, ShapeError) and "rank 3 or more" in str(e)
    assert isinstance(refused("SoftmaxActivation", {}, ((2, 3), "int32")), DTypeError)
    xh = np.array([[1000.0, -1000, 3], [0, 0.5, 1]], np.float16)
    y = run("SoftmaxActivation", {}, xh)
    assert y.dtype == np.float16
    e = np.exp(np.array([0, 0.5, 1], F32) - 1)
    np.testing.assert_array_equal(y[0], [1, 0, 0])
    np.testing.assert_array_equal(y[1], (e / e.sum()).astype(np.float16))
    y = run("SoftmaxActivation", {}, np.zeros((0, 3), np.float16))
    assert y.shape == (0, 3) and y.dtype == np.float16
    y = run("SoftmaxActivation", {}, np.arange(6.0).reshape(2, 3))
    assert y.dtype == np.float64 and np.allclose(y.sum(axis=1), 1)


# --------------------------------------------------------------------------
# SVMOutput

SVM_X = np.array([[0.5, -0.3, 1.2, 0.1], [-1.0, 0.8, 0.2, -0.4], [0.3, 0.3, -0.9, 2.0]], F32)


@pytest.mark.parametrize(
    "at, label, want",
    [  # MXNet 1.9.1's gradients (its head gradient, 7 everywhere, not used)
        (
            {},
            [2.0, 1.0, 3.0],
            [[3.0, 1.4, -0.0, 2.2], [-0.0, -0.39999998, 2.4, 1.2], [2.6, 2.6, 0.20000005, -0.0]],
        ),
        ({"use_linear": True}, [2.0, 1.0, 3.0], [[1, 1, -0.0, 1], [0, -1, 1, 1], [1, 1, 1, -0.0]]),
        (
            {"margin": 0.5, "regularization_coefficient": 2.0},
            [2.0, 1.0, 3.0],
            [[4.0, 0.79999995, -0.0, 2.4], [-0.0, -0.0, 2.8, 0.39999998], [3.2, 3.2, -0.0, -0.0]],
        ),
        (
            {"margin": 0.5, "regularization_coefficient": 2.0, "use_linear": True},
            [2.0, 1.0, 3.0],
            [[2, 2, -0.0, 2], [0, -0.0, 2, 2], [2, 2, 0, -0.0]],
        ),
        (  # labels out of range (no class of their own) and fractional (truncated)
            {},
            [-1.0, 4.0, 1.7],
            [[3.0, 1.4, 4.4, 2.2], [-0.0, 3.6, 2.4, 1.2], [2.6, -1.4, 0.20000005, 6.0]],
        ),
        ({"use_linear": True}, [-1.0, 4.0, 1.7], [[1, 1, 1, 1], [0, 1, 1, 1], [1, -1, 1, 1]]),
        ({}, [5.0, 2.5, 2.2], [[3.0, 1.4, 4.4, 2.2], [-0.0, 3.6, -1.6, 1.2], [2.6, 2.6, -3.8, 6.0]]),
    ],
)
def test_svm_output_gradient_is_mxnets(at, label, want):
    gx, gl = grads("SVMOutput", at, np.full(SVM_X.shape, 7.0, F32), SVM_X, np.array(label, F32))
    assert_mx(gx, want, rtol=1e-6)
    np.testing.assert_array_equal(np.signbit(gx), np.signbit(np.array(want, F32)))  # (MXNet's -0s)
    assert gl is None


def test_svm_output_backward_in_a_session():
    """The prediction is the data; a backward pass through it gives the hinge loss's gradient,
    whatever the head gradient."""
    s = Session("svm")
    reply = s.run_batch(
        {
            "ops": [
                {"op": "array", "out": [1], "at": {"value": SVM_X}},
                {"op": "array", "out": [2], "at": {"value": np.array([2.0, 1.0, 3.0], F32)}},
                {"op": "attach_grad", "in": [1]},
                {"op": "SVMOutput", "in": [1, 2], "out": [3], "mode": 3},
                {"op": "sum", "in": [3], "out": [4], "mode": 3},
                {"op": "backward", "in": [4], "mode": 2},
                {"op": "read", "in": [3]},
                {"op": "read", "in": [1], "at": {"grad": True}},
            ]
        }
    )
    assert "error" not in reply, reply
    y, gx = reply["values"]
    np.testing.assert_array_equal(y, SVM_X)
    assert_mx(gx, [[3.0, 1.4, -0.0, 2.2], [-0.0, -0.39999998, 2.4, 1.2], [2.6, 2.6, 0.20000005, -0.0]])


def test_svm_output_shapes_and_dtypes():
    s = ((3, 4), "float32")
    for label in [(3, 1), (2,), (3, 4), (4,)]:
        assert isinstance(refused("SVMOutput", {}, s, (label, "float32")), ShapeError)
    for data, label in [((5,), (1,)), ((2, 3, 4), (2,)), ((2, 3, 4), (6,)), ((2, 3, 2, 2), (2, 2, 2))]:
        assert isinstance(refused("SVMOutput", {}, (data, "float32"), (label, "float32")), ShapeError)
    for data, label in [((2, 3, 4), (2, 3)), ((2, 3, 2, 2), (2, 3, 2))]:
        assert run("SVMOutput", {}, np.ones(data, F32), np.zeros(label, F32)).shape == data
    for dt in (np.float16, np.float64):
        y = run("SVMOutput", {}, SVM_X.astype(dt), np.array([0.0, 3, 1], dt))
        assert y.dtype == dt and not np.shares_memory(y, SVM_X)
    assert isinstance(refused("SVMOutput", {}, ((3, 4), "int32"), ((3,), "int32")), DTypeError)
    e = refused("SVMOutput", {}, s, ((3,), "int32"))
    assert isinstance(e, DTypeError)
    assert isinstance(refused("SVMOutput", {}, ((3, 4), "float64"), ((3,), "float32")), DTypeError)


# --------------------------------------------------------------------------
# the forwards made in place


def test_the_forwards_made_in_place_give_the_plain_formulas_bit_for_bit():
    """LRN, GroupNorm, SoftmaxActivation and nearest UpSampling write their results into one
    array of their own (their working memory declared to the quota): the values are those of
    the formulas computed array by array, and no result shares an input's memory."""
    rng = np.random.default_rng(3)
    x = (rng.random((2, 5, 3, 4)) * 4 - 2).astype(F32)
    d = x * x
    w = d.copy()
    for k in (1, 2):
        w[:, k:] += d[:, :-k]
        w[:, :-k] += d[:, k:]
    want = x * (F32(2.0) + w * F32(1e-4 / 5)) ** F32(-0.75)
    np.testing.assert_array_equal(run("LRN", {"nsize": 5}, x), want)
    gamma, beta = np.array([1.5, -0.5], F32), np.array([0.25, 1.0], F32)
    xg = (rng.random((2, 6, 3, 4)) * 4 - 2).astype(F32)
    x3 = xg.reshape(2, 2, -1)
    xc = x3 - x3.mean(axis=2, keepdims=True)
    var = (xc * xc).mean(axis=2, keepdims=True)
    want = xc / np.sqrt(var + F32(1e-5)) * gamma.reshape(1, 2, 1) + beta.reshape(1, 2, 1)
    np.testing.assert_array_equal(run("GroupNorm", {"num_groups": 2}, xg, gamma, beta), want.reshape(xg.shape))
    for mode, axis in (("instance", -1), ("channel", 1)):
        e = np.exp(x - x.max(axis=axis, keepdims=True))
        np.testing.assert_array_equal(run("SoftmaxActivation", {"mode": mode}, x), e / e.sum(axis=axis, keepdims=True))
    a = rng.random((2, 3, 4, 4)).astype(np.float16)
    b, c = rng.random((2, 3, 2, 2)).astype(np.float16), rng.random((2, 3, 8, 8)).astype(np.float16)

    def up(v: np.ndarray, s: int) -> np.ndarray:
        return v.repeat(s, axis=2).repeat(s, axis=3)

    at = {"scale": 2, "sample_type": "nearest", "multi_input_mode": "sum", "num_args": 3}
    np.testing.assert_array_equal(run("UpSampling", at, a, b, c), up(a, 2) + up(b, 4) + up(c, 1))
    at = {"scale": 2, "sample_type": "nearest", "num_args": 3}
    np.testing.assert_array_equal(
        run("UpSampling", at, a, b, c), np.concatenate([up(a, 2), up(b, 4), up(c, 1)], axis=1)
    )
    y = run("UpSampling", {"scale": 1, "sample_type": "nearest"}, a)
    np.testing.assert_array_equal(y, a)
    assert not np.shares_memory(y, a)


@pytest.mark.parametrize("group", [1, 3])
def test_an_empty_batch_goes_through_grouped_convolutions_and_bilinear_upsampling(group):
    """Grouped (de)convolutions reshaped an empty batch to shapes holding a 0, which the
    table's reshape reads as MXNet's "this axis as it is", and im2col asked numpy to infer an
    axis of an empty array: bilinear UpSampling (a grouped Deconvolution) of an empty batch
    failed with a reshape's error."""
    for op, x, w, at, want in [
        (nd.Deconvolution, (0, 3, 2, 2), (3, 3 // group, 4, 4), {"stride": (2, 2), "pad": (1, 1)}, (0, 3, 4, 4)),
        (nd.Convolution, (0, 3, 4, 4), (3, 3 // group, 2, 2), {}, (0, 3, 3, 3)),
    ]:
        xs, ws = nd.zeros(x), nd.ones(w)
        xs.attach_grad()
        ws.attach_grad()
        with autograd.record():
            y = op(xs, ws, kernel=w[2:], num_filter=3, num_group=group, no_bias=True, **at)
        y.backward()
        assert y.asnumpy().shape == want
        assert xs.grad.asnumpy().shape == x and ws.grad.asnumpy().tolist() == np.zeros(w).tolist()
    up = nd.UpSampling(nd.zeros((0, 3, 2, 2)), nd.ones((3, 1, 4, 4)), scale=2, sample_type="bilinear", num_filter=3)
    assert up.asnumpy().shape == (0, 3, 4, 4)
