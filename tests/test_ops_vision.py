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


# --------------------------------------------------------------------------
# GridGenerator, BilinearSampler, SpatialTransformer

THETA = np.array([[1, 0.2, 0.1, 0.3, 0.9, -0.2], [0.5, -0.3, 0.7, 1.1, 0.4, 0.25]], F32)
FLOW = (np.arange(24, dtype=F32).reshape(1, 2, 3, 4) * F32(0.1) - F32(1)).astype(F32)


def test_grid_generator_values_and_gradients_are_mxnets():
    """MXNet 1.9.1: the affine grid (x on channel 0, y on 1) of two matrices on a 2 x 3 target,
    the warp of a flow (normalised by (W - 1) / 2 and (H - 1) / 2), and their gradients."""
    at = {"transform_type": "affine", "target_shape": [2, 3]}
    assert_mx(
        run("GridGenerator", at, THETA),
        [
            [[[-1.1, -0.1, 0.9], [-0.7, 0.3, 1.3000001]], [[-1.4000001, -1.1, -0.8], [0.4, 0.7, 1.0]]],
            [[[0.5, 1.0, 1.5], [-0.1, 0.4, 0.9]], [[-1.25, -0.15, 0.95], [-0.45, 0.65, 1.75]]],
        ],
    )
    g = np.linspace(-1, 1, 24).reshape(2, 2, 2, 3).astype(F32)
    (gt,) = grads("GridGenerator", at, g, THETA)
    assert gt.dtype == np.float32
    assert_mx(
        gt,
        [
            [0.3478261, 0.7826086, -4.6956525, 0.3478261, 0.7826086, -1.5652173],
            [0.3478261, 0.7826087, 1.5652174, 0.3478261, 0.7826087, 4.695652],
        ],
    )
    at = {"transform_type": "warp"}
    assert_mx(
        run("GridGenerator", at, FLOW),
        [
            [
                [[-1.6666667, -0.9333333, -0.2, 0.5333333], [-1.4, -0.6666666, 0.0666667, 0.8000001]]
                + [[-1.1333333, -0.4, 0.3333334, 1.0666666]],
                [[-0.8, -0.6999999, -0.6, -0.5], [0.6, 0.7, 0.8000001, 0.9], [2.0, 2.1000001, 2.2, 2.3]],
            ]
        ],
    )
    (gf,) = grads("GridGenerator", at, np.linspace(-1, 1, 24).reshape(1, 2, 3, 4).astype(F32), FLOW)
    assert_mx(
        gf,
        [
            [
                [[-0.6666667, -0.6086957, -0.5507246, -0.4927536], [-0.4347826, -0.3768116, -0.3188406, -0.2608696]]
                + [[-0.2028985, -0.1449275, -0.0869565, -0.0289855]],
                [[0.0434783, 0.1304348, 0.2173913, 0.3043478], [0.3913043, 0.4782609, 0.5652174, 0.6521739]]
                + [[0.7391304, 0.8260869, 0.9130435, 1.0]],
            ]
        ],
    )


def test_grid_generator_warp_keeps_the_flows_shape_and_float64():
    """A warp's grid has the flow's shape whatever target_shape says (MXNet's); float64 is
    computed too (MXNet 1.9.1 refuses all but float32: "Other DTypes are not supported!")."""
    y = run("GridGenerator", {"transform_type": "warp", "target_shape": [5, 5]}, FLOW.astype(np.float64))
    assert y.shape == (1, 2, 3, 4) and y.dtype == np.float64
    assert_mx(y[0, 0, 0], [-1.6666667, -0.9333333, -0.2, 0.5333333])
    y = run("GridGenerator", {"transform_type": "affine", "target_shape": [2, 3]}, THETA.astype(np.float64))
    assert_mx(y[1, 1, 1], [-0.45, 0.65, 1.75])


@pytest.mark.parametrize(
    "at, specs, kind, words",
    [
        ({}, [((1, 6), "float32")], InvalidInput, "missing required attribute 'transform_type'"),
        ({"transform_type": "foo"}, [((1, 6), "float32")], InvalidInput, "affine or warp, got 'foo'"),
        ({"transform_type": "affine"}, [((1, 6), "float32")], InvalidInput, "at least (2, 2)"),  # (default (0, 0))
        ({"transform_type": "affine", "target_shape": [1, 3]}, [((1, 6), "float32")], InvalidInput, "at least"),
        ({"transform_type": "affine", "target_shape": [2, 2, 3]}, [((1, 6), "float32")], InvalidInput, "(H, W)"),
        ({"transform_type": "affine", "target_shape": [2, 3]}, [((1, 5), "float32")], ShapeError, "(N, 6)"),
        ({"transform_type": "affine", "target_shape": [2, 3]}, [((1, 2, 3), "float32")], ShapeError, "(N, 6)"),
        ({"transform_type": "affine", "target_shape": [2, 3]}, [((1, 6), "float16")], DTypeError, "float16"),
        ({"transform_type": "affine", "target_shape": [2, 3]}, [((1, 6), "int32")], DTypeError, "floating point"),
        ({"transform_type": "warp"}, [((1, 3, 2, 2), "float32")], ShapeError, "(N, 2, H, W)"),
        ({"transform_type": "warp"}, [((1, 2, 2), "float32")], ShapeError, "(N, 2, H, W)"),
        ({"transform_type": "warp"}, [((1, 2, 1, 3), "float32")], ShapeError, "at least 2 x 2"),  # (MXNet's: inf)
        ({"transform_type": "warp"}, [((1, 2, 2, 2), "float16")], DTypeError, "float16"),
    ],
)
def test_grid_generator_refuses_what_mxnet_refuses(at, specs, kind, words):
    e = refused("GridGenerator", at, *specs)
    assert isinstance(e, kind) and words in str(e) and "GridGenerator" in str(e), e


BS_X = np.linspace(-1, 2, 24).reshape(1, 2, 3, 4).astype(F32)
BS_GRID = np.array([-1, 1, 0.3, -1.2, 1.5, 0.9, -1, 1, -0.4, 0.2, -0.9, 1.4], F32).reshape(1, 2, 2, 3)
BS_G = np.linspace(0.5, -1, 12).reshape(1, 2, 2, 3).astype(F32)


@pytest.mark.parametrize(
    "dtype, tol, y, gx, ggrid",
    [  # MXNet 1.9.1 (flat): corners on the first and last pixels, points a little and far outside
        (
            "float32",
            2e-6,
            [-1.0, 0.4347826, -0.4326087, -0.2617391, -0.1391304, 0.2491304]
            + [0.5652174, 2.0, 1.1326088, 0.833913, 0.2521739, 1.1882607],
            [0.5, 0.0045455, 0.0863636, -0.0102273, 0.0509091, 0.0068182, 0.1295455, -0.0011364]
            + [0.0127273, 0.0, -0.0163636, 0.2709091, -0.3181818, -0.0118182, -0.2245454, -0.1943182]
            + [-0.4072727, -0.0177273, -0.3368182, -0.0215909, -0.1018182, 0.0, -0.09, -0.9645453],
            [0.0355732, 1.1264822, -0.0711463, -1.3505929, 1.2687746, -0.1387351]
            + [0.0948617, 0.7509882, -0.1897233, -0.232411, -0.1185771, 2.0559289],
        ),
        (  # (MXNet computes float16 in float16 at each step; here in float32, rounded once)
            "float16",
            3e-3,
            [-1.0, 0.4348145, -0.4326172, -0.2614746, -0.1391602, 0.2491455]
            + [0.5654297, 2.0, 1.1328125, 0.8330078, 0.2521973, 1.1875],
            [0.5, 0.0046158, 0.0862427, -0.0102234, 0.0508728, 0.0069237, 0.1293945, -0.0011368]
            + [0.0127258, 0.0, -0.0161743, 0.270752, -0.3181152, -0.012001, -0.2243652, -0.1943359]
            + [-0.4069824, -0.0180054, -0.3364258, -0.0216217, -0.1018066, 0.0, -0.0889893, -0.965332],
            [0.0357971, 1.1269531, -0.0705566, -1.3505859, 1.2695312, -0.1390381]
            + [0.0949707, 0.7509766, -0.1894531, -0.2319336, -0.1186523, 2.0566406],
        ),
    ],
)
def test_bilinear_sampler_values_and_gradients_are_mxnets(dtype, tol, y, gx, ggrid):
    """Outside the image reads 0: a point 0.3 pixel left of the first column is 0.7 of it,
    one past the second pixel outside is 0; the gradients flow to data and grid."""
    x, grid, g = BS_X.astype(dtype), BS_GRID.astype(dtype), BS_G.astype(dtype)
    for at in ({}, {"cudnn_off": True}, {"cudnn_off": None}):  # (MXNet's default: None)
        out = run("BilinearSampler", at, x, grid)
        assert out.dtype == dtype and out.shape == (1, 2, 2, 3)
        assert_mx(out.ravel(), y, rtol=tol, atol=tol)
        cx, cg = grads("BilinearSampler", at, g, x, grid)
        assert (cx.dtype, cx.shape, cg.dtype, cg.shape) == (dtype, x.shape, dtype, grid.shape)
        assert_mx(cx.ravel(), gx, rtol=tol, atol=tol)
        assert_mx(cg.ravel(), ggrid, rtol=tol, atol=tol)


def test_bilinear_sampler_float64_and_non_finite_grids():
    """float64 gives MXNet's values; a grid of NaN or infinity gives NaN (MXNet's), a point
    far outside 0, and the data's gradient of such points is 0 (no NaN scattered)."""
    y = run("BilinearSampler", {}, BS_X.astype(np.float64), BS_GRID.astype(np.float64))
    assert_mx(y[0, 1], [[0.5652174, 2.0, 1.1326087], [0.8339129, 0.2521739, 1.1882609]], rtol=1e-7, atol=1e-7)
    grid = np.array([np.nan, np.inf, -np.inf, 1e30, 0, 0, 0, 0], F32).reshape(1, 2, 2, 2)
    x = np.ones((1, 1, 2, 2), F32)
    y = run("BilinearSampler", {}, x, grid)
    assert np.isnan(y.ravel()[:3]).all() and y.ravel()[3] == 0
    with np.errstate(all="ignore"):  # (as a backward pass runs)
        cx, _ = grads("BilinearSampler", {}, np.ones((1, 1, 2, 2), F32), x, grid)
    assert cx.tolist() == [[[[0.0, 0.0], [0.0, 0.0]]]]


def test_bilinear_sampler_of_one_pixel_reads_it_at_any_point_inside():
    """An image of one pixel: (W - 1) / 2 is 0, every point is its pixel (MXNet's)."""
    y = run("BilinearSampler", {}, np.full((1, 1, 1, 1), 3, F32), np.zeros((1, 2, 2, 2), F32))
    assert y.tolist() == [[[[3.0, 3.0], [3.0, 3.0]]]]


@pytest.mark.parametrize(
    "specs, kind, words",
    [
        ([((1, 1, 2, 3), "float32"), ((1, 2, 2), "float32")], ShapeError, "grid must be (N, 2, H, W)"),
        ([((1, 2, 3), "float32"), ((1, 2, 2, 2), "float32")], ShapeError, "data must be 4-D"),
        ([((1, 1, 2, 3), "float32"), ((1, 3, 2, 2), "float32")], ShapeError, "grid must be (N, 2, H, W)"),
        ([((2, 1, 2, 3), "float32"), ((1, 2, 2, 2), "float32")], ShapeError, "the grid has 1 samples, the data 2"),
        ([((1, 1, 2, 3), "float32"), ((1, 2, 2, 2), "float64")], DTypeError, "same dtype"),
        ([((1, 1, 2, 3), "int32"), ((1, 2, 2, 2), "int32")], DTypeError, "floating point"),
        ([((1, 1, 0, 3), "float32"), ((1, 2, 2, 2), "float32")], ShapeError, "no pixels"),
    ],
)
def test_bilinear_sampler_refuses_what_mxnet_refuses(specs, kind, words):
    e = refused("BilinearSampler", {}, *specs)
    assert isinstance(e, kind) and words in str(e) and "BilinearSampler" in str(e), e


ST_X = np.linspace(-1, 2, 18).reshape(2, 1, 3, 3).astype(F32)
ST_LOC = np.array([[1.9, 0.1, 0.05, -0.1, 2.1, 0.1], [0.6, -0.2, 0.3, 0.25, 0.7, -0.4]], F32)
ST_AT = {"target_shape": [2, 4], "transform_type": "affine", "sampler_type": "bilinear"}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_spatial_transformer_values_and_gradients_are_mxnets(dtype):
    """MXNet 1.9.1: a zoom out (most points outside the image, read as 0) and a rotation;
    the gradients of data and loc."""
    x, loc = ST_X.astype(dtype), ST_LOC.astype(dtype)
    y = run("SpatialTransformer", ST_AT, x, loc)
    assert y.dtype == dtype
    assert_mx(
        y,
        [
            [[[-0.005, -0.0314707, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]],
            [[[0.4855882, 0.6677452, 0.8734314, 0.9185295], [1.2323529, 1.3911766, 1.5500001, 1.7088234]]],
        ],
    )
    g = np.linspace(1, -1, 16).reshape(2, 1, 2, 4).astype(dtype)
    gx, gl = grads("SpatialTransformer", ST_AT, g, x, loc)
    assert gx.dtype == dtype and gl.dtype == dtype
    assert_mx(
        gx.ravel(),
        [0.0247408, 0.0091482, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
        + [-0.0043333, -0.2516667, -0.6354445, -0.3424445, -1.3111111, -0.5383334, -0.0308889, -0.5555555, -0.4846666],
    )
    assert_mx(
        gl,
        [
            [0.0983008, 0.0949021, -0.0949021, 0.3227451, 0.8682353, -0.8682353],
            [0.395817, -0.9466667, -0.1827451, -0.4520262, -0.9623528, -2.4258823],
        ],
        rtol=1e-5,
    )


def test_spatial_transformer_is_the_sampler_at_the_affine_grid():
    grid = run("GridGenerator", {"transform_type": "affine", "target_shape": [2, 4]}, ST_LOC)
    np.testing.assert_array_equal(
        run("SpatialTransformer", {**ST_AT, "cudnn_off": True}, ST_X, ST_LOC), run("BilinearSampler", {}, ST_X, grid)
    )


@pytest.mark.parametrize(
    "at, specs, kind, words",
    [
        ({**ST_AT, "transform_type": "warp"}, [((1, 1, 2, 3), "float32"), ((1, 6), "float32")], InvalidInput, "affine"),
        (
            {**ST_AT, "sampler_type": "nearest"},
            [((1, 1, 2, 3), "float32"), ((1, 6), "float32")],
            InvalidInput,
            "bilinear",
        ),
        (
            {"target_shape": [2, 2], "transform_type": "affine"},
            [((1, 1, 2, 3), "float32"), ((1, 6), "float32")],
            InvalidInput,
            "sampler_type",
        ),
        (
            {"transform_type": "affine", "sampler_type": "bilinear"},
            [((1, 1, 2, 3), "float32"), ((1, 6), "float32")],
            InvalidInput,
            "at least (2, 2)",
        ),
        (ST_AT, [((1, 1, 2, 3), "float32"), ((1, 5), "float32")], ShapeError, "loc must have shape (N, 6)"),
        (ST_AT, [((1, 1, 2, 3), "float32"), ((1, 2, 3), "float32")], ShapeError, "loc must have shape (N, 6)"),
        (ST_AT, [((1, 1, 2, 3), "float32"), ((2, 6), "float32")], ShapeError, "loc has 2 samples, the data 1"),
        (ST_AT, [((1, 2, 3), "float32"), ((1, 6), "float32")], ShapeError, "data must be 4-D"),
        (ST_AT, [((1, 1, 2, 3), "float32"), ((1, 6), "float64")], DTypeError, "same dtype"),
        (ST_AT, [((1, 1, 2, 3), "float16"), ((1, 6), "float16")], DTypeError, "float16"),  # (MXNet's fails)
        (ST_AT, [((1, 1, 2, 0), "float32"), ((1, 6), "float32")], ShapeError, "no pixels"),
    ],
)
def test_spatial_transformer_refuses_what_mxnet_refuses(at, specs, kind, words):
    e = refused("SpatialTransformer", at, *specs)
    assert isinstance(e, kind) and words in str(e) and "SpatialTransformer" in str(e), e


def test_spatial_transformer_backward_through_the_client_to_second_order():
    """Recorded through nd and autograd: loc's gradient is MXNet's, and the gradient of a
    function of data's gradient flows back to loc (the VJP is made of the table's ops)."""
    x, loc = nd.array(ST_X), nd.array(ST_LOC)
    x.attach_grad()
    loc.attach_grad()
    g = nd.array(np.linspace(1, -1, 16).reshape(2, 1, 2, 4).astype(F32))
    with autograd.record():
        y = nd.SpatialTransformer(x, loc, **ST_AT)
    y.backward(g)
    assert_mx(loc.grad.asnumpy()[0], [0.0983008, 0.0949021, -0.0949021, 0.3227451, 0.8682353, -0.8682353], rtol=1e-5)
    with autograd.record():
        y = nd.SpatialTransformer(x, loc, **ST_AT)
        (dx,) = autograd.grad(nd.sum(y * g), [x], create_graph=True)
        z = nd.sum(dx * dx)
    z.backward()
    # against central differences of sum(dx^2) along a direction of loc (float64, eager VJPs;
    # no sample point crosses a pixel's edge within the step)
    x64, loc64, g64 = ST_X.astype(np.float64), ST_LOC.astype(np.float64), g.asnumpy().astype(np.float64)
    v = np.random.default_rng(0).standard_normal(loc64.shape)

    def z_at(t: float) -> float:
        return float((grads("SpatialTransformer", ST_AT, g64, x64, loc64 + t * v)[0] ** 2).sum())

    numeric = (z_at(1e-6) - z_at(-1e-6)) / 2e-6
    assert abs(numeric) > 1e-3
    np.testing.assert_allclose(float(np.vdot(loc.grad.asnumpy(), v)), numeric, rtol=1e-4)


# --------------------------------------------------------------------------
# ROIPooling

RP_X = ((np.arange(120) * 7 % 23).reshape(2, 2, 5, 6) / 4 - 2).astype(F32)  # (ties: the first maximum is taken)
RP_ROIS = np.array(
    [
        [0, 0, 0, 2, 2],
        [1, 1.4, 0.5, 4.6, 3.5],
        [0, 3, 1, 5, 4],
        [1.9, 0, 0, 0, 0],
        [0, -3, -3, -1, -1],
        [0, 4, 3, 1, 1],
    ],
    F32,
)
RP_AT = {"pooled_size": [2, 3], "spatial_scale": 1.0}
RP_Y = (  # MXNet 1.9.1, flat: a region outside the data is 0; one of x2 < x1 is 1 pixel
    [2.75, -0.25, 1.5, 2.75, 3.5, 0.5, 3.5, 0.5, 2.25, 3.5, -0.5, 1.25]
    + [2.0, 2.75, 1.5, 3.0, 3.5, 3.5, 2.75, 3.5, 2.25, 0.75, 3.25, 3.25]
    + [2.25, 3.0, 0.0, 0.25, 2.0, 2.75, 3.0, -1.0, 0.75, 1.0, 2.75, 3.5]
    + [-0.5] * 6
    + [0.25] * 6
    + [0.0] * 12
    + [2.0] * 6
    + [2.75] * 6
)
RP_GX = {  # MXNet 1.9.1's data gradients for the head gradient linspace(-1, 1), flat, by sample
    "float32": [
        [0.0, -0.971831, -0.943662, 0.0, 0.0, 0.0, -1.915493, 0.0, -0.8591549, -0.3239437, 0.0, -0.2676056]
        + [0.0, -0.8873239, 0.0, 0.0, -0.2957746, 0.0, 0.0, 0.0, 0.0, -0.2394366, 4.3521128, 0.0]
        + [0.0, 0.0, 0.0, 0.0, 0.0, -0.1830986, 0.0, -0.8028169, -0.7746479, 0.0, 0.0, 0.0]
        + [-1.5774648, -0.7183099, -0.6901408, -0.1549296, -0.1267606, -0.0985916, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
        + [0.0, 0.0, 0.0, -0.0704225, 5.5352111, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -0.0140845],
        [0.5070423, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -0.6619718, 0.0, 0.0, -0.6056338]
        + [0.0, 0.0, 0.0, -0.6338028, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0704225, 0.0]
        + [0.0, -0.5774648, 0.0, 0.0, 0.0, 0.0, 1.5211267, 0.0, 0.0, 0.0, 0.0, 0.0]
        + [0.0, 0.0, -0.4929577, 0.0, 0.0, -0.4366197, 0.0, 0.0, 0.0, -0.4647887, 0.0, 0.0]
        + [0.0, 0.0, -0.4084507, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -0.7323943, 0.0],
    ],
    "float16": [
        [0.0, -0.9716797, -0.9438477, 0.0, 0.0, 0.0, -1.9160156, 0.0, -0.859375, -0.3239746, 0.0, -0.2675781]
        + [0.0, -0.887207, 0.0, 0.0, -0.2956543, 0.0, 0.0, 0.0, 0.0, -0.2393799, 4.3515625, 0.0]
        + [0.0, 0.0, 0.0, 0.0, 0.0, -0.1831055, 0.0, -0.8027344, -0.7744141, 0.0, 0.0, 0.0]
        + [-1.578125, -0.7182617, -0.6899414, -0.1549072, -0.126709, -0.0985718, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
        + [0.0, 0.0, 0.0, -0.0704346, 5.5351562, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -0.0140839],
        [0.5068359, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -0.6621094, 0.0, 0.0, -0.6054688]
        + [0.0, 0.0, 0.0, -0.6337891, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0703125, 0.0]
        + [0.0, -0.5776367, 0.0, 0.0, 0.0, 0.0, 1.5214844, 0.0, 0.0, 0.0, 0.0, 0.0]
        + [0.0, 0.0, -0.4929199, 0.0, 0.0, -0.4365234, 0.0, 0.0, 0.0, -0.4648438, 0.0, 0.0]
        + [0.0, 0.0, -0.4084473, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -0.7324219, 0.0],
    ],
}


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_roi_pooling_values_and_gradient_are_mxnets(dtype):
    """Each bin's maximum (the first of ties), 0 for a bin outside the data; the gradient
    added into the maxima's places (several bins' into one), none to rois (MXNet's zeros)."""
    x, rois = RP_X.astype(dtype), RP_ROIS.astype(dtype)
    y = run("ROIPooling", RP_AT, x, rois)
    assert y.dtype == dtype and y.shape == (6, 2, 2, 3)
    assert y.ravel().tolist() == RP_Y
    g = np.linspace(-1, 1, 72).reshape(6, 2, 2, 3).astype(dtype)
    gx, gr = grads("ROIPooling", RP_AT, g, x, rois)
    assert gr is None and gx.dtype == dtype and gx.shape == x.shape
    tol = 2e-3 if dtype == "float16" else 2e-6
    want = RP_GX["float16" if dtype == "float16" else "float32"]
    assert_mx(gx.reshape(2, -1), want, rtol=tol, atol=tol)


@pytest.mark.parametrize(
    "rois, at, want",
    [  # MXNet 1.9.1 on RP_X: corners scaled and rounded half away from zero (0.45 * 2 ... 3.1 / 4)
        (
            [[1, 1, 2, 11, 9], [0, 0.9, 0.9, 3.1, 3.1]],
            {"pooled_size": [3, 2], "spatial_scale": 0.5},
            [2.75, 1.5, 3.0, 3.5, 3.0, 2.5, 3.5, 2.25, 3.5, 3.25, 1.5, 3.25]
            + [-0.25, 1.5, 2.75, 0.5, 3.5, 3.5, 0.5, 2.25, 3.5, 1.25, 2.5, 0.25],
        ),
        (
            [[1, 1, 2, 11, 9], [0, 0.9, 0.9, 3.1, 3.1]],
            {"pooled_size": [3, 2], "spatial_scale": 0.25},
            [0.25, 2.0, 3.25, 2.75, 3.25, 2.75, 1.0, 2.75, 1.0, 3.5, 0.0, 3.5]
            + [-2.0, -0.25, 2.75, -0.25, 2.75, -1.25, -1.25, 0.5, 3.5, 0.5, 3.5, -0.5],
        ),
        (  # (0.5 rounds to 1, 2.5 to 3, 3.5 to 4: C's round, not numpy's)
            [[0, 0.5, 2.5, 1.5, 3.5]],
            {"pooled_size": [3, 3], "spatial_scale": 1.0},
            None,
        ),
    ],
)
def test_roi_pooling_scales_and_rounds_as_mxnet(rois, at, want):
    if want is None:  # MXNet 1.9.1 on arange(60) of (2, 1, 5, 6)
        x = np.arange(60, dtype=F32).reshape(2, 1, 5, 6)
        y = run("ROIPooling", at, x, np.array(rois, F32))
        assert y.ravel().tolist() == [19.0, 20.0, 20.0, 25.0, 26.0, 26.0, 25.0, 26.0, 26.0]
        return
    assert run("ROIPooling", at, RP_X, np.array(rois, F32)).ravel().tolist() == want


def test_roi_pooling_of_nothing_above_minus_flt_max_and_its_argmax():
    """A bin of -inf or NaN alone keeps MXNet's start, -FLT_MAX (-inf in float16), and takes no
    gradient; roi_pooling_argmax gives -1 there and for an empty bin, else the flat index."""
    at = {"pooled_size": [1, 1], "spatial_scale": 1.0}
    rois = np.array([[0, 0, 0, 1, 1]], F32)
    for fill in (-np.inf, np.nan):
        x = np.full((1, 1, 2, 2), fill, F32)
        assert run("ROIPooling", at, x, rois).ravel().tolist() == [float(np.finfo(F32).min)]
        gx, _ = grads("ROIPooling", at, np.ones((1, 1, 1, 1), F32), x, rois)
        assert gx.tolist() == [[[[0.0, 0.0], [0.0, 0.0]]]]
    y = run("ROIPooling", at, np.full((1, 1, 2, 2), -np.inf, np.float16), rois.astype(np.float16))
    assert y.ravel().tolist() == [-np.inf]
    y = run("ROIPooling", at, np.full((1, 1, 2, 2), -np.inf), rois.astype(np.float64))
    assert y.ravel().tolist() == [-3.4028234663852886e38]
    x = np.array([[[[1, np.nan], [3, 2]]]], F32)  # (NaN passed over, as MXNet's comparisons do)
    assert run("ROIPooling", at, x, rois).ravel().tolist() == [3.0]
    four = np.array([[0, 0, 0, 1, 1], [0, 5, 5, 6, 6], [0, 1, 1, 1, 1], [0, 1, 0, 1, 0]], F32)  # (the last: the NaN)
    idx = run("roi_pooling_argmax", at, x, four)
    assert idx.dtype == np.int64 and idx.ravel().tolist() == [2, -1, 3, -1]
    assert run("ROIPooling", at, x, four).ravel().tolist() == [3.0, 0.0, 2.0, float(np.finfo(F32).min)]


@pytest.mark.parametrize(
    "at, specs, kind, words",
    [
        ({"spatial_scale": 1.0}, [((1, 1, 4, 4), "float32"), ((1, 5), "float32")], InvalidInput, "'pooled_size'"),
        ({"pooled_size": [2, 2]}, [((1, 1, 4, 4), "float32"), ((1, 5), "float32")], InvalidInput, "'spatial_scale'"),
        (
            {"pooled_size": [2], "spatial_scale": 1.0},
            [((1, 1, 4, 4), "float32"), ((1, 5), "float32")],
            InvalidInput,
            "2 positive sizes",
        ),
        (
            {"pooled_size": [2, 2, 2], "spatial_scale": 1.0},
            [((1, 1, 4, 4), "float32"), ((1, 5), "float32")],
            InvalidInput,
            "2 positive sizes",
        ),
        (
            {"pooled_size": [0, 2], "spatial_scale": 1.0},
            [((1, 1, 4, 4), "float32"), ((1, 5), "float32")],
            InvalidInput,
            "2 positive sizes",
        ),
        (
            {"pooled_size": [2, 2], "spatial_scale": -1.0},
            [((1, 1, 4, 4), "float32"), ((1, 5), "float32")],
            InvalidInput,
            "in [0, 1]",
        ),
        (
            {"pooled_size": [2, 2], "spatial_scale": 1.5},
            [((1, 1, 4, 4), "float32"), ((1, 5), "float32")],
            InvalidInput,
            "in [0, 1]",
        ),
        (
            {"pooled_size": [2, 2], "spatial_scale": 1.0},
            [((1, 1, 4, 4), "float32"), ((1, 4), "float32")],
            ShapeError,
            "(R, 5)",
        ),
        (
            {"pooled_size": [2, 2], "spatial_scale": 1.0},
            [((1, 1, 4, 4), "float32"), ((5,), "float32")],
            ShapeError,
            "(R, 5)",
        ),
        (
            {"pooled_size": [2, 2], "spatial_scale": 1.0},
            [((1, 4, 4), "float32"), ((1, 5), "float32")],
            ShapeError,
            "4-D",
        ),
        (
            {"pooled_size": [2, 2], "spatial_scale": 1.0},
            [((1, 1, 4, 4), "float32"), ((1, 5), "float64")],
            DTypeError,
            "same dtype",
        ),
        (
            {"pooled_size": [2, 2], "spatial_scale": 1.0},
            [((1, 1, 4, 4), "int32"), ((1, 5), "int32")],
            DTypeError,
            "floating point",
        ),
    ],
)
def test_roi_pooling_refuses_what_mxnet_refuses(at, specs, kind, words):
    e = refused("ROIPooling", at, *specs)
    assert isinstance(e, kind) and words in str(e) and "ROIPooling" in str(e), e


@pytest.mark.parametrize(
    "roi, words",
    [
        ([5, 0, 0, 2, 2], "batch index 5.0, outside the data's 2 samples"),
        ([-1, 0, 0, 2, 2], "batch index -1.0"),
        ([0, 0, 0, np.nan, 2], "not finite"),
        ([np.inf, 0, 0, 1, 2], "not finite"),
    ],
)
def test_roi_pooling_refuses_a_region_of_no_sample(roi, words):
    """MXNet 1.9.1 reads past its data for these (its check is an assert, compiled out): 0s or
    whatever is there; refused here, in a batch as in a call."""
    with pytest.raises(InvalidInput, match="ROIPooling: roi 1 ") as e:
        run("ROIPooling", RP_AT, RP_X, np.array([[0, 0, 0, 1, 1], roi], F32))
    assert words in str(e.value)
    s = Session("t")
    s.arrays[1], s.arrays[2] = RP_X, np.array([roi], F32)
    r = s.run_batch({"ops": [{"op": "ROIPooling", "in": [1, 2], "out": [3], "at": RP_AT}]})
    assert "ROIPooling: roi 0 " in r["error"]["message"] and r["error"]["kind"] != "InternalError"


def test_roi_pooling_backward_through_the_client():
    """Recorded through nd and autograd: MXNet's data gradient; rois' is zeros."""
    x, rois = nd.array(RP_X), nd.array(RP_ROIS)
    x.attach_grad()
    rois.attach_grad()
    with autograd.record():
        y = nd.ROIPooling(x, rois, **RP_AT)
    y.backward(nd.array(np.linspace(-1, 1, 72).reshape(6, 2, 2, 3).astype(F32)))
    assert_mx(x.grad.asnumpy().reshape(2, -1), RP_GX["float32"])
    assert rois.grad.asnumpy().tolist() == np.zeros((6, 5)).tolist()


# --------------------------------------------------------------------------
# Correlation

CR_A = ((np.arange(24) * 5 % 11).reshape(1, 2, 3, 4) / 4 - 1).astype(F32)
CR_B = ((np.arange(24) * 7 % 13).reshape(1, 2, 3, 4) / 4 - 1.5).astype(F32)
CORRELATIONS = {  # MXNet 1.9.1, flat: (attributes, output shape, y, data1's and data2's gradients for linspace(-1, 1))
    "default": (
        {},
        (1, 9, 1, 2),
        [0.1875, 0.5, -0.78125, -0.6875, 0.28125, 0.5625, 0.375, 0.625, -0.59375]
        + [-0.5625, 0.46875, 0.6875, 0.5625, 0.75, -0.40625, -0.4375, 0.65625, 0.8125],
        [0.0] * 5 + [1.2352942, 1.2352942] + [0.0] * 10 + [1.125, 1.0588236] + [0.0] * 5,
        [0.125, -0.3455882, -0.2573529, -0.2058824, 0.0367647, -0.0808824, 0.0073529, 0.1470588]
        + [-0.0514706, 0.1838235, 0.2720588, 0.5, -0.5, -0.1617647, -0.1029412, 0.1029412]
        + [-0.1470588, 0.0147059, 0.0735294, -0.0735294, 0.2058824, 0.1911765, 0.25, -0.25],
    ),
    "absolute, padded": (  # (ties of data1 and data2: a sign of +1 for data1, MXNet's)
        {"is_multiply": False, "pad_size": 1},
        (1, 9, 3, 4),
        [0.625, 0.875, 0.75, 0.625, 0.75, 1.125, 0.875, 0.625, 0.75, 0.125, 0.125, 0.375]
        + [0.625, 0.875, 0.75, 0.625, 1.5, 1.5, 1.5, 1.5, 1.5, 1.5, 1.5, 1.5]
        + [0.625, 0.875, 0.75, 0.625, 1.125, 0.875, 0.625, 0.625, 0.125, 0.125, 0.375, 0.625]
        + [0.625, 1.625, 1.375, 1.125, 0.75, 0.625, 0.375, 0.125, 0.75, 0.375, 0.625, 0.875]
        + [0.375, 1.5, 1.5, 1.5, 1.5, 1.5, 1.5, 1.5, 1.5, 1.5, 1.5, 1.5]
        + [1.5, 1.375, 1.125, 0.625, 0.625, 0.375, 0.125, 0.625, 0.375, 0.625, 0.875, 0.625]
        + [0.625, 1.125, 0.875, 0.625, 0.75, 0.125, 0.125, 0.375, 0.75, 0.625, 0.75, 0.625]
        + [0.125, 1.5, 1.5, 1.5, 1.5, 1.5, 1.5, 1.5, 0.75, 0.625, 0.75, 0.625]
        + [1.5, 0.875, 0.625, 0.625, 0.125, 0.125, 0.375, 0.625, 0.75, 0.625, 0.75, 0.625],
        [0.9299065, -0.9672897, -0.2943924, -0.7897196, -0.1261683, -0.0140187, -1.3224299, -1.1915888]
        + [-0.0607475, -1.5093458, 1.3878504, -0.4626167, -1.0327102, -0.3785046, -0.8364486, -0.2102804]
        + [0.7149534, -0.9299067, -0.8925234, -0.3504672, -0.6121496, 0.546729, -1.1915888, 1.3785048],
        [1.0093458, 0.5887851, 1.0934579, -0.2056075, 0.3925234, -0.0046729, -0.8364487, -0.6728972]
        + [-0.6448598, 0.2242991, -0.5046729, 1.0093459, 0.3084112, 1.1495327, 0.364486, 0.4859813]
        + [0.3084112, 0.0420562, -1.1915888, -0.7570094, 0.046729, -0.9626168, 1.1495327, 0.2056075],
    ),
    "strides": (
        {"max_displacement": 2, "stride1": 2, "stride2": 2, "pad_size": 2, "is_multiply": False},
        (1, 9, 2, 2),
        [0.625, 0.75, 0.75, 1.5, 0.625, 0.75, 1.5, 1.5, 0.625, 0.75, 1.5, 0.75, 0.625, 1.5, 0.75, 1.5, 0.375, 1.5]
        + [1.5, 1.5, 0.125, 0.75, 1.5, 0.75, 0.625, 1.5, 0.75, 0.75, 0.625, 1.5, 0.75, 0.75, 0.875, 0.75, 0.75, 0.75],
        [0.4428571, 0.0, -0.1285713, 0.0, 0.0, 0.0, 0.0, 0.0, 0.1285714, 0.0, 0.3857143, 0.0]
        + [-1.8142858, 0.0, -1.1857142, 0.0, 0.0, 0.0, 0.0, 0.0, -0.1285714, 0.0, -0.3857143, 0.0],
        [0.9142857, 0.0, 0.4571429, 0.0, 0.0, 0.0, 0.0, 0.0, 0.1428572, 0.0, -0.0857143, 0.0]
        + [-0.5714286, 0.0, -0.6, 0.0, 0.0, 0.0, 0.0, 0.0, 0.4571429, 0.0, 0.9142858, 0.0],
    ),
    "kernel 3": (  # (MXNet's CPU kernel: the window runs from each point, right and down)
        {"kernel_size": 3, "max_displacement": 1, "pad_size": 2},
        (1, 9, 3, 4),
        [0.0208333, 0.0763889, 0.1215278, 0.1006944, 0.0763889, 0.2083333, 0.3055556, 0.2291667]
        + [0.0763889, 0.2083333, 0.3055556, 0.2291667, -0.1909722, -0.2673611, -0.2291667, -0.1423611]
        + [-0.3125, -0.4513889, -0.4166667, -0.2708333, -0.3125, -0.4513889, -0.4166667, -0.2708333]
        + [0.0694444, 0.1319444, 0.09375, 0.0625, 0.1944444, 0.3263889, 0.2152778, 0.1319444]
        + [0.1944444, 0.3263889, 0.2152778, 0.1319444, 0.0208333, 0.1111111, 0.1805556, 0.1597222]
        + [0.0694444, 0.2222222, 0.3229167, 0.2534722, 0.0902778, 0.2222222, 0.3055556, 0.2152778]
        + [-0.1805556, -0.3472222, -0.5, -0.3125, -0.3090278, -0.5520833, -0.7291667, -0.4756944]
        + [-0.2708333, -0.4097222, -0.4166667, -0.2847222, 0.0868056, 0.2048611, 0.1736111, 0.1180556]
        + [0.2048611, 0.3784722, 0.2743056, 0.1736111, 0.2361111, 0.3680556, 0.2291667, 0.1319444]
        + [0.0902778, 0.2361111, 0.3472222, 0.2569444, 0.0902778, 0.2361111, 0.3472222, 0.2569444]
        + [0.0625, 0.1458333, 0.2048611, 0.1423611, -0.1041667, -0.2152778, -0.3333333, -0.2152778]
        + [-0.1041667, -0.2152778, -0.3333333, -0.2152778, -0.09375, -0.1423611, -0.1458333, -0.1006944]
        + [0.1631944, 0.3368056, 0.2986111, 0.1736111, 0.1631944, 0.3368056, 0.2986111, 0.1736111]
        + [0.1666667, 0.2569444, 0.1631944, 0.0902778],
        [0.0311526, -0.1323988, 0.2570093, 0.1391485, 0.6214954, 1.1074766, 1.1074765, 0.6214952]
        + [0.1391485, 0.2570094, -0.1323988, 0.0311527, -0.1744548, 0.1090343, -0.1542056, -0.0456906]
        + [0.2336449, 1.0899535, 1.0794396, 0.2803738, -0.0, 0.0, 0.2538941, -0.0872274],
        [-0.1849688, -0.7207943, -0.1273364, -0.0124611, 0.0260903, 0.0027259, 0.5930684, 0.61838]
        + [0.2698598, 0.5159657, 0.1343458, 0.3707165, -0.5342678, -0.0942368, -0.2614226, -0.0589304]
        + [0.0841122, 0.6394081, 0.6902907, 0.2276739, 0.1292835, 0.1674454, 0.4073209, -0.1409657],
    ),
}


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
@pytest.mark.parametrize("case", list(CORRELATIONS))
def test_correlation_values_and_gradients_are_mxnets(case, dtype):
    """MXNet 1.9.1's in float32 and float64; float16 (where MXNet 1.9.1 gives inf for 4.0) is
    computed in float32 and rounded."""
    at, shape, y, ga, gb = CORRELATIONS[case]
    tol = 2e-3 if dtype == "float16" else 2e-6
    a, b = CR_A.astype(dtype), CR_B.astype(dtype)
    out = run("Correlation", at, a, b)
    assert out.shape == shape and out.dtype == dtype
    assert_mx(out.ravel(), y, rtol=tol, atol=tol)
    g = np.linspace(-1, 1, int(np.prod(shape))).reshape(shape).astype(dtype)
    ca, cb = grads("Correlation", at, g, a, b)
    assert ca.dtype == dtype and cb.dtype == dtype
    assert_mx(ca.ravel(), ga, rtol=tol, atol=tol)
    assert_mx(cb.ravel(), gb, rtol=tol, atol=tol)


@pytest.mark.parametrize(
    "at, specs, kind, words",
    [
        ({"kernel_size": 2}, [((1, 2, 5, 6), "float32")] * 2, InvalidInput, "positive odd number, got 2"),
        ({"kernel_size": 0}, [((1, 2, 5, 6), "float32")] * 2, InvalidInput, "positive odd number"),
        ({"kernel_size": -1}, [((1, 2, 5, 6), "float32")] * 2, InvalidInput, "positive odd number"),  # (MXNet: 0s)
        ({"max_displacement": -1}, [((1, 2, 5, 6), "float32")] * 2, InvalidInput, "must not be negative"),
        ({"pad_size": -1}, [((1, 2, 5, 6), "float32")] * 2, InvalidInput, "must not be negative"),  # (MXNet crashes)
        ({"stride1": 0}, [((1, 2, 5, 6), "float32")] * 2, InvalidInput, "at least 1"),
        ({"stride2": 0}, [((1, 2, 5, 6), "float32")] * 2, InvalidInput, "at least 1"),  # (MXNet crashes)
        ({"max_displacement": 3}, [((1, 2, 5, 6), "float32")] * 2, ShapeError, "do not fit"),
        ({}, [((1, 2, 5, 6), "float32"), ((1, 2, 6, 5), "float32")], ShapeError, "one shape"),  # (MXNet reads past)
        ({}, [((2, 2, 5, 6), "float32"), ((1, 2, 5, 6), "float32")], ShapeError, "one shape"),
        ({}, [((2, 30, 6), "float32")] * 2, ShapeError, "4-D"),
        ({}, [((1, 2, 5, 6), "float32"), ((1, 2, 5, 6), "float64")], DTypeError, "same dtype"),
        ({}, [((1, 2, 5, 6), "int32")] * 2, DTypeError, "floating point"),
    ],
)
def test_correlation_refuses_what_mxnet_refuses(at, specs, kind, words):
    e = refused("Correlation", at, *specs)
    assert isinstance(e, kind) and words in str(e) and "Correlation" in str(e), e


def test_correlation_gradient_helpers_check_their_inputs():
    """correlation_grad and correlation_sign_dot (the table's ops of Correlation's gradient and
    of its second order): which is 0 or 1, the head gradient has the Correlation's shape."""
    d = ((1, 2, 5, 6), "float32")
    e = refused("correlation_grad", {"which": 2}, ((1, 9, 3, 4), "float32"), d, d)
    assert isinstance(e, InvalidInput) and "which must be 0 (data1) or 1 (data2), got 2" in str(e)
    e = refused("correlation_grad", {}, ((1, 9, 3, 3), "float32"), d, d)
    assert isinstance(e, ShapeError) and "(1, 9, 3, 4) float32" in str(e)
    e = refused("correlation_sign_dot", {"is_multiply": False}, ((1, 2, 5, 5), "float32"), d, d)
    assert isinstance(e, ShapeError) and "correlation_sign_dot" in str(e)
    e = refused("correlation_sign_dot", {"which": -1}, d, d, d)
    assert isinstance(e, InvalidInput) and "got -1" in str(e)


def test_correlation_second_order_through_the_client():
    """The gradient of a function of data1's gradient flows to data2 and to the head gradient
    (Correlation's VJP is made of the table's ops): d/db of sum(grad_a(g; b)^2) is
    2 grad_b(g; grad_a), checked against the numpy gradients."""
    a, b = nd.array(CR_A), nd.array(CR_B)
    a.attach_grad()
    b.attach_grad()
    g = np.linspace(-1, 1, 18).reshape(1, 9, 1, 2).astype(F32)
    with autograd.record():
        y = nd.Correlation(a, b)
        (da,) = autograd.grad(nd.sum(y * nd.array(g)), [a], create_graph=True)
        z = nd.sum(da * da)
    z.backward()
    ga = grads("Correlation", {}, g, CR_A, CR_B)[0]
    want = 2 * grads("Correlation", {}, g, ga, CR_B)[1]
    assert_mx(b.grad.asnumpy(), want)


@pytest.mark.parametrize(
    "name, at, shapes, out",
    [
        ("BilinearSampler", {}, [(0, 2, 3, 4), (0, 2, 2, 2)], (0, 2, 2, 2)),
        ("BilinearSampler", {}, [(2, 0, 3, 4), (2, 2, 2, 2)], (2, 0, 2, 2)),
        ("BilinearSampler", {}, [(2, 1, 3, 4), (2, 2, 0, 2)], (2, 1, 0, 2)),
        ("GridGenerator", {"transform_type": "affine", "target_shape": [2, 3]}, [(0, 6)], (0, 2, 2, 3)),
        ("GridGenerator", {"transform_type": "warp"}, [(0, 2, 3, 3)], (0, 2, 3, 3)),
        ("SpatialTransformer", {**ST_AT, "target_shape": [2, 3]}, [(0, 1, 3, 3), (0, 6)], (0, 1, 2, 3)),
        ("SpatialTransformer", {**ST_AT, "target_shape": [2, 3]}, [(2, 0, 3, 3), (2, 6)], (2, 0, 2, 3)),
        ("ROIPooling", {"pooled_size": [2, 2], "spatial_scale": 1.0}, [(1, 2, 3, 3), (0, 5)], (0, 2, 2, 2)),
        ("ROIPooling", {"pooled_size": [2, 2], "spatial_scale": 1.0}, [(1, 0, 3, 3), (1, 5)], (1, 0, 2, 2)),
        ("Correlation", {}, [(0, 2, 4, 4), (0, 2, 4, 4)], (0, 9, 2, 2)),
    ],
)
def test_the_spatial_ops_take_empty_batches_and_channels(name, at, shapes, out):
    """No samples, channels, regions or output points: an empty result and a zero gradient
    (the samplers' gradients reshaped a flat array by a shape holding a 0, which the table's
    reshape reads as "this axis as it is")."""
    s = Session("t")
    for i, shape in enumerate(shapes):
        s.arrays[i + 1] = np.zeros(shape, F32)
    ops = [
        {"op": "attach_grad", "in": [1]},
        {"op": name, "in": list(range(1, len(shapes) + 1)), "out": [50], "at": at, "mode": 3},
        {"op": "backward", "in": [50]},
        {"op": "grad", "in": [1], "out": [51]},
        {"op": "read", "in": [50, 51]},
    ]
    r = s.run_batch({"ops": ops})
    assert "error" not in r, r
    assert r["values"][0].shape == out
    assert r["values"][1].shape == shapes[0] and not r["values"][1].any()


def test_correlation_refuses_data_of_no_channels():
    """A mean over no channels (0 / 0: NaN everywhere); MXNet 1.9.1 fails on it."""
    assert "at least one channel" in str(
        refused("Correlation", {"pad_size": 1}, ((1, 0, 4, 4), "float32"), ((1, 0, 4, 4), "float32"))
    )


def test_loops_of_python_steps_count_as_work_a_server_keeps_off_its_event_loop():
    """ROIPooling's bins and Correlation's displacements are steps of a Python loop: 1,500 rois
    of 7 x 7 bins over a 1 x 1 image took 1.6 s, run in a slice of a server's event loop (where
    every other session waited) while its declared work was small. Each step now counts."""
    from gradserve.engine.slices import SLICE_WORK

    roi = OPS["ROIPooling"]
    at = roi.parse_attrs({"pooled_size": (7, 7), "spatial_scale": 1.0})
    assert roi.work(at, Spec((1, 1, 1, 1), "float32"), Spec((1500, 5), "float32")) > 100 * SLICE_WORK
    corr = OPS["Correlation"]
    at = corr.parse_attrs({"max_displacement": 20, "pad_size": 20})
    assert corr.work(at, Spec((1, 1, 1, 1), "float32"), Spec((1, 1, 1, 1), "float32")) > SLICE_WORK
