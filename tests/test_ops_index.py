"""The ops of engine/ops_index.py against MXNet 1.9.1: batch_take, khatri_rao,
ravel_multi_index, unravel_index, scatter_nd, all_finite and the densities random_pdf_*.

Every expected value, dtype, shape and refusal here is what MXNet 1.9.1 gave for the same
call (recorded as literals: MXNet is not needed to run these), except where a test says that
gradserve differs on purpose: MXNet reads or writes past an array there, divides by zero, or
wraps an int32. The table-driven checks (forward against a numpy reference, inference, VJPs
against finite differences, second order, edge inputs) are the cases in tests/test_ops.py.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from gradserve import autograd, nd
from gradserve.engine import Session
from gradserve.engine.dispatch import Context
from gradserve.engine.errors import DTypeError, IndexOutOfRange, InvalidInput, MXNetError, ShapeError
from gradserve.engine.optable import OPS, Spec

from .test_quota import check_working_arrays

F32, F64, F16, I32 = "float32", "float64", "float16", "int32"
NAN, INF = float("nan"), float("inf")


def run(name: str, at: dict, *xs: np.ndarray) -> np.ndarray:
    """The op's forward on ``xs`` as a batch runs it (floating point flags ignored), checked
    against what its inference promises."""
    op = OPS[name]
    parsed = op.parse_attrs(at)
    spec = op.infer(parsed, *[Spec(tuple(x.shape), x.dtype.name) for x in xs])
    with np.errstate(all="ignore"):
        y = op.forward(Context(0), dict(parsed), *[x.copy() for x in xs])
    assert (y.shape, y.dtype.name) == spec, f"{name}: infer says {spec}, forward gives {y.shape} {y.dtype}"
    return y


def arrays(*pairs: tuple) -> list[np.ndarray]:
    return [np.array(v, dtype=d) for v, d in pairs]


def refused(name: str, at: dict, *xs: np.ndarray) -> MXNetError:
    """The error the op gives (at inference or in its forward)."""
    with pytest.raises(MXNetError) as e:
        run(name, at, *xs)
    assert str(e.value).startswith(name), str(e.value)
    return e.value


# --------------------------------------------------------------------------
# batch_take

X = [[1, 2], [3, 4], [5, 6]]


@pytest.mark.parametrize(
    "a, dtype, idx, want",
    [
        (X, F32, [0, 1, 0], [1, 4, 5]),
        (X, F32, [2, -1, 5], [2, 3, 6]),  # clipped to the row, not refused
        (X, F32, [[0], [1], [0]], [[1], [4], [5]]),  # the result has the indices' shape
        (X, I32, [0, 1, 0], [1, 4, 5]),
        (X, F64, [0, 1, 0], [1, 4, 5]),
        (X, F16, [0, 1, 0], [1, 4, 5]),
        (X, "uint8", [0, 1, 0], [1, 4, 5]),
        ([[1, 2]], F32, [1], [2]),
        (np.arange(6).reshape(3, 1, 2).tolist(), F32, [1, 0, 1], [1, 2, 5]),  # middle axes of length 1
        (np.arange(6).reshape(2, 1, 1, 3).tolist(), F32, [[2], [-4]], [[2], [3]]),
    ],
)
def test_batch_take_as_mxnet(a, dtype, idx, want):
    """MXNet takes int32 indices only; gradserve takes any numbers (floats truncated)."""
    for idx_dtype in (I32, F32):
        y = run("batch_take", {}, np.array(a, dtype), np.array(idx, idx_dtype))
        assert y.dtype == np.dtype(dtype) and y.tolist() == want
    y = run("batch_take", {}, np.array(X, F32), np.array([0.7, 1.9, -0.5], F32))
    assert y.tolist() == [1, 4, 5]


@pytest.mark.parametrize(
    "a, idx, error, match",
    [
        ((3, 2), (2,), ShapeError, "size"),  # MXNet: "Index array's size must be the same as ..."
        ((3, 2), (4,), ShapeError, "size"),
        ((2, 3, 4), (2,), ShapeError, "size"),
        ((3,), (3,), ShapeError, "at least 2 dimensions"),  # MXNet: "Data array must have at least 2 dimensional"
        # MXNet 1.9.1 passes its shape check here and reads past the data (garbage values): refused
        ((2, 3, 4), (6,), ShapeError, "reads past"),
        ((2, 3, 4), (2, 3), ShapeError, "reads past"),
        ((2, 0), (2,), IndexOutOfRange, "length 0"),
    ],
)
def test_batch_take_refusals(a, idx, error, match):
    with pytest.raises(error, match=match):
        run("batch_take", {}, np.zeros(a, np.float32), np.zeros(idx, np.int32))


def test_batch_take_refuses_bool_indices_and_takes_from_empty_data():
    """MXNet: "Type inconsistent, Provided = unknown, inferred type = int32" for bool indices."""
    with pytest.raises(DTypeError, match="bool"):
        run("batch_take", {}, np.zeros((1, 2), np.float32), np.array([True]))
    assert run("batch_take", {}, np.zeros((0, 3), np.float32), np.zeros(0, np.int32)).shape == (0,)


@pytest.mark.parametrize("name", ["batch_take", "khatri_rao", "all_finite"])
def test_ops_mxnet_does_not_differentiate_are_not_differentiable(name):
    """MXNet: "Operator batch_take is non-differentiable because it didn't register FGradient
    attribute" (khatri_rao and all_finite too): a backward through one is refused."""
    assert not OPS[name].differentiable
    x = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    extra = {"batch_take": [np.array([1, 0], np.int32)], "khatri_rao": [x], "all_finite": []}[name]
    ops = [{"op": "array", "out": [1], "at": {"value": x}}, {"op": "attach_grad", "in": [1]}]
    ops += [{"op": "array", "out": [2 + i], "at": {"value": v}} for i, v in enumerate(extra)]
    ops += [
        {"op": name, "in": [1] + [2 + i for i in range(len(extra))], "out": [10], "mode": 3},
        {"op": "backward", "in": [10], "mode": 2},
    ]
    reply = Session("t").run_batch({"ops": ops})
    assert reply["error"]["op"] == "backward", reply


# --------------------------------------------------------------------------
# khatri_rao

A = [[1, -1], [2, -3]]
B = [[1, 4], [2, 5], [3, 6]]


@pytest.mark.parametrize(
    "mats, dtype, at, want",
    [
        ([A, B], F32, {}, [[1, -4], [2, -5], [3, -6], [2, -12], [4, -15], [6, -18]]),  # MXNet's example
        ([A, B], F64, {"num_args": 2}, [[1, -4], [2, -5], [3, -6], [2, -12], [4, -15], [6, -18]]),
        ([A, B, [[1, 2]]], F32, {}, [[1, -8], [2, -10], [3, -12], [2, -24], [4, -30], [6, -36]]),
        ([A], F32, {}, A),
        ([[[1, 2, 3]], [[4, 5, 6]]], F32, {}, [[4, 10, 18]]),
    ],
)
def test_khatri_rao_as_mxnet(mats, dtype, at, want):
    y = run("khatri_rao", at, *[np.array(m, dtype) for m in mats])
    assert y.dtype == np.dtype(dtype) and y.tolist() == want


@pytest.mark.parametrize(
    "mats, at, error, match",
    [
        ([(2, 2), (1, 3)], {}, ShapeError, "columns"),  # MXNet: "Check failed: (num_columns) == ..."
        ([(2,), (2,)], {}, ShapeError, "2-D"),
        ([(2, 2, 2), (2, 2)], {}, ShapeError, "2-D"),
        ([(2, 2), (3, 2)], {"num_args": 3}, InvalidInput, "num_args"),  # MXNet: "expects 3 inputs, but got 2"
        ([], {}, InvalidInput, "at least one"),  # MXNet: "value 0 for Parameter num_args should be greater equal to 1"
    ],
)
def test_khatri_rao_refusals(mats, at, error, match):
    with pytest.raises(error, match=match):
        run("khatri_rao", at, *[np.ones(s, np.float32) for s in mats])


@pytest.mark.parametrize("dtypes", [(I32, I32), (F16, F16), (F64, F32)])
def test_khatri_rao_takes_float32_or_float64_matrices_of_one_dtype(dtypes):
    """MXNet: "Not implmented!" for int32 and float16; "Incompatible attr" for mixed dtypes."""
    with pytest.raises(DTypeError):
        run("khatri_rao", {}, *[np.ones((2, 2), d) for d in dtypes])


# --------------------------------------------------------------------------
# ravel_multi_index, unravel_index


@pytest.mark.parametrize(
    "data, dtype, shape, want",
    [
        ([[3, 6, 6], [4, 5, 1]], F32, [7, 6], [22, 41, 37]),  # MXNet's example
        ([[3, 6, 6], [4, 5, 1]], F32, [-1, 6], [22, 41, 37]),
        ([[3, 6, 6], [4, 5, 1]], I32, [7, 6], [22, 41, 37]),
        ([[3, 6, 6], [4, 5, 1]], "int64", [7, 6], [22, 41, 37]),
        ([[3, 6, 6], [4, 5, 1]], F64, [7, 6], [22, 41, 37]),
        ([[3, 6, 6], [4, 5, 1]], F16, [7, 6], [22, 41, 37]),
        ([[3, 6, 6], [4, 5, 1]], "uint8", [7, 6], [22, 41, 37]),
        ([[9, -1], [7, 8]], F32, [7, 6], [61, 2]),  # past the axes: MXNet's arithmetic, not a refusal
        ([[1.7, -0.5], [2.2, 2.9]], F32, [7, 6], [8, 2]),  # truncated at each step
        ([[1, 2], [0, 1], [3, 3]], F32, [2, 3, 4], [15, 31]),
        ([[3, 4, 5]], F32, [7], [3, 4, 5]),
        ([[1000], [1000]], F32, [5000, 5000], [5001000]),
        ([[200], [100]], "uint8", [300, 300], [196]),  # cast as C casts: the low byte
        ([[20], [100]], "int8", [300, 300], [-44]),
        ([[200], [100]], F16, [300, 300], [60096]),  # 60100 in float16
    ],
)
def test_ravel_multi_index_as_mxnet(data, dtype, shape, want):
    y = run("ravel_multi_index", {"shape": shape}, np.array(data, dtype))
    assert y.dtype == np.dtype(dtype) and y.tolist() == want


def test_ravel_multi_index_past_int32_is_exact_where_mxnet_wraps():
    """MXNet 1.9.1 computes flat indices in int32: 100000 * 200000 + 100000 was -1474736480
    (float64 and int64 alike). gradserve computes in float64 or int64: the index itself."""
    for dtype in (F64, "int64"):
        y = run("ravel_multi_index", {"shape": [200000, 200000]}, np.array([[100000], [100000]], dtype))
        assert y.tolist() == [20000100000]


@pytest.mark.parametrize(
    "data, dtype, shape, want",
    [
        ([22, 41, 37], F32, [7, 6], [[3, 6, 6], [4, 5, 1]]),  # MXNet's example
        ([22, 41, 37], F32, [-1, 6], [[3, 6, 6], [4, 5, 1]]),
        ([22, 41, 37], I32, [7, 6], [[3, 6, 6], [4, 5, 1]]),
        ([22, 41, 37], F64, [7, 6], [[3, 6, 6], [4, 5, 1]]),
        ([22, 41, 37], F16, [7, 6], [[3, 6, 6], [4, 5, 1]]),
        ([42, 100, -1, -7], F32, [7, 6], [[7, 16, 0, -1], [0, 4, -1, -1]]),  # C's / and %, nothing checked
        ([42, 100, -1, -7], I32, [7, 6], [[7, 16, 0, -1], [0, 4, -1, -1]]),
        ([1.7, -0.5, 7.9], F32, [7, 6], [[0, 0, 1], [1, 0, 1]]),  # truncated first
        ([[1, 2], [8, 9]], F32, [7, 6], [[[0, 0], [1, 1]], [[1, 2], [2, 3]]]),
        ([17, 23, 5], F32, [2, 3, 4], [[1, 1, 0], [1, 2, 1], [1, 3, 1]]),
        ([5], F32, [5], [[5]]),
        ([100], F32, [-1, 6], [[16], [4]]),
        ([100], "int8", [3, 30], [[3], [10]]),
        ([200], "uint8", [3, 100], [[2], [0]]),
    ],
)
def test_unravel_index_as_mxnet(data, dtype, shape, want):
    y = run("unravel_index", {"shape": shape}, np.array(data, dtype))
    assert y.dtype == np.dtype(dtype) and y.tolist() == want
    assert all(math.copysign(1, v) == 1 for v in y.ravel().tolist() if v == 0)  # no -0 (MXNet's are integers)


@pytest.mark.parametrize("name", ["ravel_multi_index", "unravel_index"])
def test_ravel_and_unravel_refusals(name):
    data = np.array([[3, 6, 6], [4, 5, 1]], np.float32) if name == "ravel_multi_index" else np.array([22.0], np.float32)
    with pytest.raises(InvalidInput, match="missing required attribute 'shape'"):  # MXNet: "Empty shape parameter"
        run(name, {}, data)
    with pytest.raises(InvalidInput, match="empty shape"):
        run(name, {"shape": []}, data)
    # MXNet 1.9.1 divides by a zero dimension in unravel_index (the process dies) and gives
    # numbers of no meaning for other dimensions below 1: gradserve refuses them (only a
    # leading -1, MXNet's placeholder)
    for shape in ([7, 0], [7, -1], [7, -6], [0, 6], [-2, 6]):
        with pytest.raises(InvalidInput, match="must be positive"):
            run(name, {"shape": shape}, data)
    with pytest.raises(DTypeError, match="bool"):  # MXNet: "Unknown type enum 7"
        run(name, {"shape": [2, 2]}, data.astype(bool))


@pytest.mark.parametrize(
    "shape, data, match",
    [
        ([7, 6, 2], (2, 3), "rows"),  # MXNet: "First dimension of input of ravel operator does not match"
        ([7, 6], (2,), "2-D"),  # MXNet: "Input to ravel operator must be two-dimensional."
        ([7, 6], (2, 1, 2), "2-D"),
    ],
)
def test_ravel_multi_index_refuses_data_that_does_not_fit_shape(shape, data, match):
    with pytest.raises(ShapeError, match=match):
        run("ravel_multi_index", {"shape": shape}, np.zeros(data, np.float32))


@pytest.mark.parametrize("name, data", [("ravel_multi_index", [[3, 6, 6], [4, 5, 1]]), ("unravel_index", [22, 41, 37])])
def test_ravel_and_unravel_give_zero_gradients_as_mxnet(mode, name, data):
    x = nd.array(data)
    x.attach_grad()
    with autograd.record():
        y = getattr(nd, name)(x, shape=(7, 6))
    y.backward()
    assert x.grad.asnumpy().tolist() == np.zeros_like(np.array(data, np.float32)).tolist()


# --------------------------------------------------------------------------
# scatter_nd


@pytest.mark.parametrize(
    "data, ddtype, idx, idtype, shape, want",
    [
        ([2, 3, 0], F32, [[1, 1, 0], [0, 1, 0]], F32, [2, 2], [[0, 0], [2, 3]]),  # MXNet's first example
        (
            [[[1, 2], [3, 4]], [[5, 6], [7, 8]]],
            F32,
            [[0, 1], [1, 1]],
            F32,
            [2, 2, 2, 2],
            [[[[0, 0], [0, 0]], [[1, 2], [3, 4]]], [[[0, 0], [0, 0]], [[5, 6], [7, 8]]]],
        ),
        ([2, 3, 0], F32, [[1, 1, 0], [0, 1, 0]], I32, [2, 2], [[0, 0], [2, 3]]),
        ([2, 3, 0], I32, [[1, 1, 0], [0, 1, 0]], I32, [2, 2], [[0, 0], [2, 3]]),
        ([2, 3, 0], F64, [[1, 1, 0], [0, 1, 0]], F32, [2, 2], [[0, 0], [2, 3]]),
        ([2, 3, 0], F16, [[1, 1, 0], [0, 1, 0]], F32, [2, 2], [[0, 0], [2, 3]]),
        ([2, 3], "int64", [[0, 1]], F32, [3], [2, 3, 0]),
        ([2, 3], "uint8", [[0, 1]], "int64", [3], [2, 3, 0]),
        ([2, 3, 7], F32, [[0.7, 1.2, 0], [0, 1.9, 0]], F32, [2, 2], [[7, 0], [0, 3]]),  # truncated; the last written
        ([2, 3, 7], F32, [[1, 1, 1], [1, 1, 1]], F32, [2, 2], [[0, 0], [0, 7]]),  # repeated: the last written
        ([2, 5], F32, [[1, 0]], F32, [3], [5, 2, 0]),
        ([[2, 5], [1, 1]], F32, [[1, 0]], F32, [3, 2], [[1, 1], [2, 5], [0, 0]]),  # rows
        ([[1, 2], [3, 4]], F32, [[[0, 1], [1, 0]]], F32, [2], [4, 3]),
        ([2], F32, [[0]], "uint8", [1], [2]),
    ],
)
def test_scatter_nd_as_mxnet(data, ddtype, idx, idtype, shape, want):
    y = run("scatter_nd", {"shape": shape}, np.array(data, ddtype), np.array(idx, idtype))
    assert y.dtype == np.dtype(ddtype) and y.tolist() == want


@pytest.mark.parametrize(
    "data, idx, shape, match",
    [
        ((3,), (2, 3), [2, 2, 3], "data shape"),  # MXNet: "Invalid data, indices, and output shape combination"
        ((2,), (2, 3), [2, 2], "data shape"),
        ((2, 3), (1, 2), [3, 2], "data shape"),
        ((3,), (3, 3), [2, 2], "address 3 axes"),  # MXNet: "Number of indices exceeds output dimension"
        ((1,), (1,), [2], "at least 2 dimensions"),  # MXNet: "requires index tensor to have at least 2 dimensions"
        ((1,), (1, 1), [1, -1], "negative"),
    ],
)
def test_scatter_nd_refuses_shapes_that_do_not_fit(data, idx, shape, match):
    with pytest.raises(ShapeError, match=match):
        run("scatter_nd", {"shape": shape}, np.ones(data, np.float32), np.zeros(idx, np.float32))
    with pytest.raises(InvalidInput, match="missing required attribute 'shape'"):
        run("scatter_nd", {}, np.ones(data, np.float32), np.zeros(idx, np.float32))


def test_scatter_nd_indices_past_the_result_are_refused_and_negative_ones_count_from_the_end():
    """MXNet 1.9.1 writes past its result for these (a (5, 0) into (2, 2) was lost, a negative
    one corrupted the heap: "double free or corruption"); gradserve takes indices as gather_nd,
    its gradient, does: negative ones from the end, those out of range refused."""
    data, shape = np.array([2.0, 3, 7], np.float32), {"shape": [2, 2]}
    e = refused("scatter_nd", shape, data, np.array([[5, 1, 0], [0, 1, 0]], np.float32))
    assert isinstance(e, IndexOutOfRange) and "index 5 is out of bounds for axis 0 with size 2" in str(e)
    refused("scatter_nd", shape, data, np.array([[0, 1, 0], [0, 1, -3]], np.float32))
    y = run("scatter_nd", shape, data, np.array([[-1, 1, 0], [-2, 1, -1]], np.float32))
    assert y.tolist() == [[0, 7], [2, 3]]


def test_scatter_nd_gradient_is_gather_nd_as_mxnet(mode):
    """MXNet: data's gradient [3, 4, 1] for this head, the indices' zero."""
    data, idx = nd.array([2, 3, 0]), nd.array([[1, 1, 0], [0, 1, 0]])
    data.attach_grad()
    idx.attach_grad()
    with autograd.record():
        y = nd.scatter_nd(data, idx, shape=(2, 2))
    y.backward(nd.array([[1, 2], [3, 4]]))
    assert data.grad.asnumpy().tolist() == [3, 4, 1]
    assert idx.grad.asnumpy().tolist() == [[0, 0, 0], [0, 0, 0]]


# --------------------------------------------------------------------------
# all_finite


@pytest.mark.parametrize(
    "x, dtype, at, want",
    [
        ([1, 2, 3], F32, {}, 1),
        ([1, NAN, 3], F32, {}, 0),
        ([1, -INF, 3], F32, {}, 0),
        ([1, 2, 3], F64, {}, 1),
        ([1, NAN, 3], F64, {}, 0),
        ([1, INF, 3], F16, {}, 0),
        ([[1, 1, 1], [1, 1, 1]], F32, {}, 1),
        ([1, NAN, 3], F32, {"init_output": False}, 0),
        ([], F32, {}, 1),
    ],
)
def test_all_finite_as_mxnet(x, dtype, at, want):
    """One float32 element whatever the data's dtype and shape."""
    y = run("all_finite", at, np.array(x, dtype))
    assert y.dtype == np.float32 and y.tolist() == [want]


def test_all_finite_without_init_output_gives_a_new_array():
    """MXNet's init_output=False leaves its output as it was when every element is finite (an
    uninitialised new array printed -276617792.0; an out= array kept its value): gradserve's
    result is an array of its own, 1 there (so out=res is set to 1, not kept as it was)."""
    assert run("all_finite", {"init_output": False}, np.array([1.0, 2.0], np.float32)).tolist() == [1]


@pytest.mark.parametrize("dtype", [I32, "int64", "uint8", "bool"])
def test_all_finite_takes_floats_only(dtype):
    """MXNet: "This operation only support floating point types, not int32" ("Unknown type enum
    7" for bool)."""
    with pytest.raises(DTypeError, match="floating point"):
        run("all_finite", {}, np.ones(3, dtype))


# --------------------------------------------------------------------------
# the densities

PDFS = [
    "random_pdf_uniform",
    "random_pdf_normal",
    "random_pdf_gamma",
    "random_pdf_exponential",
    "random_pdf_poisson",
    "random_pdf_negative_binomial",
    "random_pdf_generalized_negative_binomial",
]


def test_densities_have_mxnets_inputs_and_attribute_and_draw_nothing():
    params = [("low", "high"), ("mu", "sigma"), ("alpha", "beta"), ("lam",), ("lam",), ("k", "p"), ("mu", "alpha")]
    for name, ps in zip(PDFS, params):
        op = OPS[name]
        assert op.inputs == ("sample", *ps) and not op.random and op.differentiable, name
        assert [(a.name, a.default) for a in op.attrs] == [("is_log", False)], name


PDF_VALUES = [  # name, inputs (sample first), dtype, is_log, MXNet's values (7 decimals)
    (
        "random_pdf_normal",
        [[[-2, -1, 0, 1, 2]], [0], [1]],
        F32,
        False,
        [[0.053991, 0.2419707, 0.3989423, 0.2419707, 0.053991]],
    ),
    (
        "random_pdf_normal",
        [[[-2, -1, 0, 1, 2], [-2, -1, 0, 1, 2]], [0, 0], [1, 2]],
        F32,
        True,
        [
            [-2.9189386, -1.4189385, -0.9189385, -1.4189385, -2.9189386],
            [-2.1120858, -1.7370857, -1.6120857, -1.7370857, -2.1120858],
        ],
    ),
    ("random_pdf_normal", [[0.5, -1], [0, 1], [1, 2]], F64, False, [0.3520653, 0.1209854]),
    ("random_pdf_normal", [[0, 1, 2], [0, 0, 0], [0, -1, 1]], F32, False, [NAN, -0.2419707, 0.053991]),  # sigma 0, < 0
    # the support is not checked: 1 / (high - low) everywhere, negative for high < low
    ("random_pdf_uniform", [[[1, 2, 3, 4, -1, 11]], [0], [10]], F32, False, [[0.1] * 6]),
    ("random_pdf_uniform", [[[1, 2], [3, 4]], [0, 2], [10, 2.5]], F32, True, [[-2.3025851] * 2, [0.6931472] * 2]),
    ("random_pdf_uniform", [[[1]], [10], [0]], F32, False, [[-0.1]]),
    # beta is the rate (the sampler's is a scale)
    (
        "random_pdf_gamma",
        [[[1, 2, 3, 4, 5]], [5], [1]],
        F32,
        False,
        [[0.0153283, 0.0902235, 0.1680313, 0.1953668, 0.1754674]],
    ),
    (
        "random_pdf_gamma",
        [[[1, 2], [0.5, 3]], [2, 0.7], [2, 1.5]],
        F32,
        False,
        [[0.5413411, 0.1465251], [0.5950574, 0.0081754]],
    ),
    (
        "random_pdf_gamma",
        [[[1, 2], [0.5, 3]], [2, 0.7], [2, 1.5]],
        F64,
        True,
        [[-0.6137056, -1.9205585], [-0.5190975, -4.8066254]],
    ),
    ("random_pdf_gamma", [[[-1, 0, 0]], [2], [2]], F32, False, [[NAN, 0, 0]]),
    ("random_pdf_gamma", [[0, 0], [1, 0.5], [2, 2]], F32, False, [NAN, INF]),  # (alpha - 1) log 0: 0 * -inf
    ("random_pdf_exponential", [[[1, 2, 3, -1]], [1]], F32, False, [[0.3678795, 0.1353353, 0.0497871, 2.7182817]]),
    (
        "random_pdf_exponential",
        [[[1, 2, 3], [1, 2, 3], [1, 2, 3]], [1, 0.5, 0.25]],
        F32,
        False,
        [[0.3678795, 0.1353353, 0.0497871], [0.3032653, 0.1839397, 0.1115651], [0.1947002, 0.1516327, 0.1180916]],
    ),
    ("random_pdf_exponential", [[1, 2], [1, 2]], F32, True, [-1.0, -3.3068528]),
    # a count of 1.5 has the formula's value (lgamma), -1 a probability of 0
    (
        "random_pdf_poisson",
        [[[0, 1, 2, 3, 1.5, -1]], [1]],
        F32,
        False,
        [[0.3678795, 0.3678795, 0.1839397, 0.0613132, 0.2767383, 0.0]],
    ),
    (
        "random_pdf_poisson",
        [[[0, 1, 2, 3, 1.5, -1]], [1]],
        F32,
        True,
        [[-1.0, -1.0, -1.6931472, -2.7917595, -1.2846829, -INF]],
    ),
    (
        "random_pdf_poisson",
        [[[0, 1, 2, 3], [0, 1, 2, 3]], [2, 0.5]],
        F64,
        False,
        [[0.1353353, 0.2706706, 0.2706706, 0.180447], [0.6065307, 0.3032653, 0.0758163, 0.0126361]],
    ),
    ("random_pdf_negative_binomial", [[[1, 2, 3, 4]], [1], [0.5]], F32, False, [[0.25, 0.125, 0.0625, 0.03125]]),
    (
        "random_pdf_negative_binomial",
        [[[1, 2, 3, 4, 0, 1.5]], [1.5], [0.3]],
        F32,
        False,
        [[0.1725326, 0.150966, 0.1232889, 0.09709, 0.1643168, 0.1633721]],
    ),
    (
        "random_pdf_negative_binomial",
        [[[1, 2, 3, 4, 0, 1.5]], [1.5], [0.3]],
        F64,
        True,
        [[-1.757169, -1.8907004, -2.0932247, -2.3321166, -1.8059592, -1.8117251]],
    ),
    (
        "random_pdf_generalized_negative_binomial",
        [[[1, 2, 3, 4]], [1], [1]],
        F32,
        False,
        [[0.25, 0.125, 0.0625, 0.03125]],
    ),
    (
        "random_pdf_generalized_negative_binomial",
        [[[1, 2, 3, 4, 0]], [1.5], [0.6666]],
        F32,
        False,
        [[0.2651706, 0.1657333, 0.0966771, 0.0543799, 0.3535432]],
    ),
    (
        "random_pdf_generalized_negative_binomial",
        [[[1, 2, 3, 4, 0]], [1.5], [0.6666]],
        F32,
        True,
        [[-1.3273817, -1.7973753, -2.3363791, -2.9117599, -1.0397497]],
    ),
    ("random_pdf_generalized_negative_binomial", [[[1, 2]], [1.5], [0]], F32, False, [[NAN, NAN]]),  # alpha 0
]


@pytest.mark.parametrize(
    "name, xs, dtype, is_log, want", PDF_VALUES, ids=[f"{v[0]}-{i}" for i, v in enumerate(PDF_VALUES)]
)
def test_densities_as_mxnet(name, xs, dtype, is_log, want):
    y = run(name, {"is_log": is_log}, *[np.array(x, dtype) for x in xs])
    assert y.dtype == np.dtype(dtype) and y.shape == np.array(want).shape
    np.testing.assert_allclose(y.astype(np.float64), want, rtol=1e-6, atol=1e-7)


def test_float16_densities_are_computed_in_float64_and_rounded_once():
    """MXNet 1.9.1 computes float16 in its half type step by step ([0.3522949, 0.1210327] for
    the normal, [0.5415039, 0.1466064] for the gamma); gradserve rounds the float64 density
    once, within one float16 step of those."""
    y = run("random_pdf_normal", {}, *[np.array(v, F16) for v in ([0.5, -1], [0, 1], [1, 2])])
    np.testing.assert_allclose(y.astype(np.float64), [0.3522949, 0.1210327], rtol=1e-3)
    y = run("random_pdf_gamma", {}, *[np.array(v, F16) for v in ([[1, 2]], [2], [2])])
    np.testing.assert_allclose(y.astype(np.float64), [[0.5415039, 0.1466064]], rtol=1e-3)


@pytest.mark.parametrize("name", PDFS)
def test_density_refusals(name):
    """MXNet: "Shape inconsistent" (a sample whose leading axes are not the parameters', or
    parameters of two shapes), "dimension of input samples (1) must be at least dimension of
    distribution parameters (2)", "Incompatible attr ... expected float64, got float32" and
    "This operation only support floating point types, not int32"."""
    n = len(OPS[name].inputs) - 1
    f32 = np.float32

    def call(sample, *params, dtype=f32):
        return run(name, {}, np.ones(sample, dtype), *[np.ones(p, dtype) for p in params])

    with pytest.raises(ShapeError, match="leading axes"):
        call((3, 2), *[(2,)] * n)
    with pytest.raises(ShapeError, match="leading axes"):
        call((2,), *[(2, 3)] * n)
    if n == 2:
        with pytest.raises(ShapeError, match="one shape"):
            call((2, 3), (2,), (3,))
    with pytest.raises(DTypeError, match="same dtype"):
        run(name, {}, np.ones(2, np.float64), *[np.ones(2, f32)] * n)
    for dtype in (np.int32, bool):
        with pytest.raises(DTypeError):
            call((2,), *[(2,)] * n, dtype=dtype)
    assert call((2, 3, 4), *[(2, 3)] * n).shape == (2, 3, 4)
    assert call((2, 3), *[(2, 3)] * n).shape == (2, 3)


S = [[0.5, 1.5, 2.0], [0.3, 1.0, 2.5]]
COUNTS = [[0, 1, 2], [3, 1, 4]]
HEAD = [[1, 2, 3], [-1, 0.5, 2]]
PDF_GRADS = [  # name, inputs, is_log, MXNet's gradients of each input for the head HEAD
    ("random_pdf_uniform", [S, [0, 0.2], [3, 2.7]], False, [0, [0.6666666, 0.24], [-0.6666666, -0.24]]),
    (
        "random_pdf_normal",
        [S, [0.5, -0.2], [1.5, 0.7]],
        False,
        [
            [[0.0, -0.1893025, -0.3226276], [0.4506056, -0.1605536, -0.0036931]],
            [0.5119301, -0.2863589],
            [-0.3350598, 0.5038525],
        ],
    ),
    (
        "random_pdf_gamma",
        [S, [1.5, 2.2], [0.8, 1.7]],
        False,
        [
            [[0.0765398, -0.2779835, -0.3803801], [-0.9498762, -0.1332058, -0.3048247]],
            [0.0220589, 0.7247580],
            [0.6631406, -0.6335013],
        ],
    ),
    (
        "random_pdf_exponential",
        [S, [1.5, 0.7]],
        False,
        [[[-1.0628247, -0.4742965, -0.3360627], [0.3971863, -0.1216634, -0.1702985]], [-0.4441288, -0.8265347]],
    ),
    ("random_pdf_poisson", [COUNTS, [1.5, 2.7]], False, [0, [-0.1952388, 0.0616829]]),
    (
        "random_pdf_negative_binomial",
        [COUNTS, [1.5, 2.2], [0.3, 0.6]],
        False,
        [0, [-0.4454241, 0.0144808], [3.0244558, -0.1154030]],
    ),
    (
        "random_pdf_generalized_negative_binomial",
        [COUNTS, [1.5, 2.2], [0.3, 0.6]],
        False,
        [0, [-0.1986775, 0.0109038], [-0.3899624, -0.0244728]],
    ),
    ("random_pdf_uniform", [S, [0, 0.2], [3, 2.7]], True, [0, [2.0, 0.6], [-2.0, -0.6]]),
    (
        "random_pdf_normal",
        [S, [0.5, -0.2], [1.5, 0.7]],
        True,
        [
            [[0.0, -0.8888889, -2.0], [1.0204082, -1.2244899, -11.0204086]],
            [2.8888888, 11.2244902],
            [-1.4074074, 41.7346992],
        ],
    ),
    (
        "random_pdf_gamma",
        [S, [1.5, 2.2], [0.8, 1.7]],
        True,
        [[[0.2, -0.9333333, -1.65], [-2.3, -0.25, -2.44]], [0.6394238, 3.0160565], [1.75, -3.2588234]],
    ),
    (
        "random_pdf_exponential",
        [S, [1.5, 0.7]],
        True,
        [[[-1.5, -3.0, -4.5], [0.7, -0.35, -1.4]], [-5.4999995, -3.0571427]],
    ),
    ("random_pdf_poisson", [COUNTS, [1.5, 2.7]], True, [0, [-0.6666665, 0.537037]]),
    (
        "random_pdf_negative_binomial",
        [COUNTS, [1.5, 2.2], [0.3, 0.6]],
        True,
        [0, [-2.6905024, 0.8507901], [18.5714283, -8.2500019]],
    ),
    (
        "random_pdf_generalized_negative_binomial",
        [COUNTS, [1.5, 2.2], [0.3, 0.6]],
        True,
        [0, [-0.4597697, 0.4310344], [-1.8869194, -0.4027297]],
    ),
]


@pytest.mark.parametrize("name, xs, is_log, want", PDF_GRADS, ids=[f"{g[0]}-{g[2]}" for g in PDF_GRADS])
def test_density_gradients_as_mxnet(mode, name, xs, is_log, want):
    """Each parameter's gradient summed over its samples; the sample's for the continuous
    densities (zero for uniform's), zero for the counts (MXNet gives zeros there too). Within
    float32's rounding of sums that cancel (the dispersion's, log-density: -0.4597697 in MXNet,
    -0.4597709 here, -0.4597701 in float64)."""
    arrays = [nd.array(x) for x in xs]
    for a in arrays:
        a.attach_grad()
    with autograd.record():
        y = getattr(nd, name)(*arrays, is_log=is_log)
    y.backward(nd.array(HEAD))
    for a, x, w in zip(arrays, xs, want):
        w = np.zeros(np.shape(x)) if isinstance(w, int) else w
        np.testing.assert_allclose(a.grad.asnumpy(), w, rtol=1e-5, atol=1e-6)


def test_density_of_one_sample_each_as_mxnet(mode):
    """The sample of the parameters' own shape: MXNet's gradients for a head [1, -2]."""
    x, mu, sigma = nd.array([0.5, 1.5]), nd.array([0.5, -0.2]), nd.array([1.5, 0.7])
    for a in (x, mu, sigma):
        a.attach_grad()
    with autograd.record():
        y = nd.random_pdf_normal(sample=x, mu=mu, sigma=sigma)
    y.backward(nd.array([1, -2]))
    np.testing.assert_allclose(x.grad.asnumpy(), [0.0, 0.2071902], rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(mu.grad.asnumpy(), [0.0, -0.2071902], rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(sigma.grad.asnumpy(), [-0.1773077, -0.4178626], rtol=2e-6)


# --------------------------------------------------------------------------
# working memory


def _positive(rng, shape):
    return rng.random(shape) + 0.5


def _counts(rng, shape):
    return rng.integers(0, 6, shape).astype(np.float64)


MEASURED = [  # name, attributes, inputs (shape, dtype, domain)
    ("random_pdf_normal", {}, [((300, 400), F32, _positive), ((300,), F32, _positive), ((300,), F32, _positive)]),
    ("random_pdf_gamma", {"is_log": True}, [((300, 400), F16, _positive)] + [((300, 400), F16, _positive)] * 2),
    (
        "random_pdf_uniform",
        {},
        [((300, 400), F64, _positive), ((300,), F64, lambda r, s: -_positive(r, s))] + [((300,), F64, _positive)],
    ),
    ("random_pdf_exponential", {}, [((300, 400), F32, _positive), ((300, 400), F32, _positive)]),
    ("random_pdf_poisson", {}, [((300, 400), F32, _counts), ((300,), F32, _positive)]),
    (
        "random_pdf_negative_binomial",
        {},
        [((300, 400), F32, _counts), ((300,), F32, _positive), ((300,), F32, lambda r, s: r.uniform(0.2, 0.8, s))],
    ),
    (
        "random_pdf_generalized_negative_binomial",
        {},
        [((300, 400), F64, _counts), ((300,), F64, _positive), ((300,), F64, _positive)],
    ),
    ("unravel_index", {"shape": [-1, 7, 9]}, [((300, 400), F32, _counts)]),
    ("ravel_multi_index", {"shape": [-1, 7, 9]}, [((3, 100000), "int8", _counts)]),
    ("all_finite", {}, [((300, 400), F16, _positive)]),
    ("khatri_rao", {}, [((30, 400), F32, _positive), ((40, 400), F32, _positive), ((20, 400), F32, _positive)]),
    ("scatter_nd", {"shape": [300, 400]}, [((300,), F32, _positive), ((2, 300), F32, _counts)]),
    ("scatter_nd", {"shape": [6]}, [((100000,), F32, _positive), ((1, 100000), F32, _counts)]),  # (indices > result)
    ("ravel_multi_index", {"shape": [-1, 7, 9]}, [((3, 100000), F32, _counts)]),
    ("unravel_index", {"shape": [-1, 7, 9]}, [((100000,), "int64", _counts)]),
    ("batch_take", {}, [((100000, 5), F32, _positive), ((100000,), F32, _counts)]),
    ("batch_take", {}, [((100000, 1, 3), "float64", _positive), ((100000,), "int64", _counts)]),
]


@pytest.mark.parametrize("name, at, inputs", MEASURED, ids=[f"{m[0]}-{i}" for i, m in enumerate(MEASURED)])
def test_declared_working_arrays_bound_what_the_ops_make(name, at, inputs):
    """``scratch`` and ``vjp_scratch``, what the quota counts, bound what a forward and a
    backward make besides their results (tests/test_quota.py's measure), on inputs from each
    op's domain, every input a variable."""
    rng = np.random.default_rng(0)
    check_working_arrays(name, at, [d(rng, sh).astype(dt) for sh, dt, d in inputs])


def test_a_float_index_past_any_axis_is_named_as_given():
    """NaN, an infinity and a float past int64 were cast to int64 first, and the error named
    -9223372036854775808, an index nobody gave."""
    for v, said in [(np.nan, "nan"), (np.inf, "inf"), (1e30, "1.0000000150474662e+30")]:
        with pytest.raises(IndexOutOfRange, match=re.escape(f"scatter_nd: index {said} is out of bounds for axis 0")):
            nd.scatter_nd(nd.array([1.0, 2.0]), nd.array([[v, 1.0]]), shape=(3,)).asnumpy()
        with pytest.raises(IndexOutOfRange, match=re.escape(f"gather_nd: index {said} is out of bounds")):
            nd.gather_nd(nd.array([1.0, 2.0, 3.0]), nd.array([[v]])).asnumpy()
    assert nd.gather_nd(nd.array([1.0, 2.0, 3.0]), nd.array([[-3.9, 2.9]])).asnumpy().tolist() == [1.0, 3.0]


# --------------------------------------------------------------------------
# random_pdf_dirichlet

DS = [[0.2, 0.3, 0.5], [0.1, 0.6, 0.3]]  # two vectors of 3 categories
DA = [[1.5, 2.0, 0.7], [3.0, 0.5, 1.2]]  # their distributions' concentrations
DS3 = [  # three vectors of each distribution
    [[0.2, 0.3, 0.5], [0.6, 0.1, 0.3], [0.25, 0.25, 0.5]],
    [[0.1, 0.6, 0.3], [0.3, 0.3, 0.4], [0.5, 0.4, 0.1]],
]

DIRICHLET = [  # sample, alpha, is_log, MXNet's densities
    (DS, DA, False, [1.1137388944625854, 0.048109021037817]),
    (DS, DA, True, [0.10772272944450378, -3.034285545349121]),
    (
        DS3,
        DA,
        False,
        [
            [1.1137388944625854, 0.749509871006012, 1.0376650094985962],
            [0.048109021037817, 0.6485925912857056, 1.182464361190796],
        ],
    ),
    (
        DS3,
        DA,
        True,
        [
            [0.10772272944450378, -0.2883358299732208, 0.03697296604514122],
            [-3.034285545349121, -0.43295052647590637, 0.16760072112083435],
        ],
    ),
    (DS[0], DA[0], False, [1.1137388944625854]),  # one vector: shape (1,)
    ([[1, 2], [2, 3], [3, 4]], [2.5, 2.5], False, [38.413498, 199.60234, 564.56085]),  # (MXNet's docs; off the simplex)
    ([[0.5, 0.5, 0.5], [-0.1, 0.6, 0.5]], DA, False, [2.934959888458252, NAN]),  # the formula as it is
    ([[0.0, 0.5, 0.5], [0.1, 0.6, 0.3]], DA, False, [0.0, 0.048109021037817]),
    (DS, [[0.0, 1, 1], [-1, 1, 1]], False, [0.0, 0.0]),  # alpha <= 0: lgamma's pole
    ([[1.0], [0.5]], [[2.0], [3.0]], False, [1.0, 0.25]),  # one category
    ([[0.3, 0.7]], [[1.0, 1.0]], False, [1.0]),  # the uniform one
]


@pytest.mark.parametrize("x, alpha, is_log, want", DIRICHLET)
def test_random_pdf_dirichlet_as_mxnet(x, alpha, is_log, want):
    y = run("random_pdf_dirichlet", {"is_log": is_log}, *arrays((x, F32), (alpha, F32)))
    assert y.dtype == np.float32
    # (MXNet's float32 sums: its log-densities near 0 within 4e-7 of float64's, 0.10772273 for 0.10772305)
    np.testing.assert_allclose(y, want, rtol=1e-6, atol=5e-7 if is_log else 1e-7)


def test_random_pdf_dirichlet_shapes_as_mxnet():
    """alpha (..., k); sample: alpha's leading axes, any axes of samples, then k; the result
    sample's shape less its last axis ((1,) for one vector)."""
    for xs, a_s, want in [
        ((2, 3), (3,), (2,)),
        ((2, 4, 3), (3,), (2, 4)),
        ((2, 4, 3), (2, 3), (2, 4)),
        ((3,), (3,), (1,)),
    ]:
        op = OPS["random_pdf_dirichlet"]
        assert op.infer(op.parse_attrs({}), Spec(xs, F32), Spec(a_s, F32)) == (want, F32)
    x = np.array([[0.2, 0.3, 0.5], [0.1, 0.6, 0.3]], F64)
    y = run("random_pdf_dirichlet", {}, x, np.array([1.5, 2.0, 0.7]))
    np.testing.assert_allclose(y, [1.1137392210530088, 1.835917394527922], rtol=1e-12)  # (MXNet's, float64)


def test_random_pdf_dirichlet_dtypes():
    """float64 as MXNet's (1.1137392210530088, 0.048109057107831664); float16 computed in
    float64 and rounded once (MXNet 1.9.1 computes it in float16: 0.047882 for 0.048109)."""
    y = run("random_pdf_dirichlet", {}, *arrays((DS, F64), (DA, F64)))
    np.testing.assert_allclose(y, [1.1137392210530088, 0.048109057107831664], rtol=1e-12)
    y = run("random_pdf_dirichlet", {}, *arrays((DS, F16), (DA, F16)))
    assert y.dtype == np.float16
    want = run("random_pdf_dirichlet", {}, *arrays((DS, F16), (DA, F16))).astype(F64)
    np.testing.assert_array_equal(y, want.astype(F16))
    exact = run("random_pdf_dirichlet", {}, np.array(DS, F16).astype(F64), np.array(DA, F16).astype(F64))
    np.testing.assert_array_equal(y, exact.astype(F16))
    assert y.tolist() != [1.11328125, 0.047882080078125]  # (MXNet's float16 sums: 0.047882)


@pytest.mark.parametrize(
    "x, alpha, error, match",
    [
        ([0.2, 0.8], [[1.0, 1.0], [2.0, 2.0]], ShapeError, "at least the rank of alpha"),  # (MXNet's check)
        (DS, [[1.0, 1.0], [2.0, 2.0]], ShapeError, "then its 2 categories"),  # (MXNet: "Shape inconsistent")
        (DS3, [DA[0]], ShapeError, r"alpha's leading axes \(1,\)"),
        ([[]], [[]], ShapeError, "a last axis of the categories"),  # (MXNet fails on empty arrays)
    ],
)
def test_random_pdf_dirichlet_refusals(x, alpha, error, match):
    with pytest.raises(error, match=match):
        run("random_pdf_dirichlet", {}, *arrays((x, F32), (alpha, F32)))


def test_random_pdf_dirichlet_takes_floats_of_one_dtype():
    """MXNet: "This operation only support floating point types, not int32"; float32 with
    float64: "Incompatible attr in node ... expected float32, got float64"."""
    with pytest.raises(DTypeError, match="floating point"):
        run("random_pdf_dirichlet", {}, *arrays((DS, I32), (DA, I32)))
    with pytest.raises(DTypeError, match="same dtype"):
        run("random_pdf_dirichlet", {}, *arrays((DS, F32), (DA, F64)))


DIRICHLET_GRADS = [  # sample, alpha, is_log, head, MXNet's gradients of sample and alpha
    (
        DS,
        DA,
        False,
        [1, 1],
        [
            [2.7843472957611084, 3.712462902069092, -0.6682433485984802],
            [0.9621804356575012, -0.04009084776043892, 0.03207268565893173],
        ],
        [
            [-0.3726447522640228, -0.35129350423812866, 2.0472922325134277],
            [-0.08601631224155426, 0.13904032111167908, 0.02513653226196766],
        ],
    ),
    (
        DS,
        DA,
        True,
        [1, -2],
        [[2.5, 3.3333332538604736, -0.6000000238418579], [-40.0, 1.6666666269302368, -1.3333336114883423]],
        [
            [-0.3345889449119568, -0.31541818380355835, 1.8382155895233154],
            [3.5758912563323975, -5.780218124389648, -1.0449820756912231],
        ],
    ),
    (
        DS3,
        DA,
        False,
        [[1, 2, 3], [-1, 0.5, 2]],
        [
            [
                [2.7843472957611084, 3.712462902069092, -0.6682433485984802],
                [1.2491830587387085, 14.99019718170166, -1.499019742012024],
                [6.225990295410156, 12.451980590820312, -1.8677971363067627],
            ],
            [
                [-0.9621804356575012, 0.04009084776043892, -0.03207268565893173],
                [2.161975145339966, -0.5404937863349915, 0.16214817762374878],
                [9.459714889526367, -2.9561607837677, 4.7298583984375],
            ],
        ],
        [
            [0.4257122278213501, -4.02041482925415, 9.759431838989258],
            [-0.5596898794174194, 6.449432373046875, -1.124886155128479],
        ],
    ),
    (
        DS3,
        DA,
        True,
        [[1, 1, 1], [1, 1, 1]],
        [
            [[2.5, 3.3333333, -0.6], [0.8333333, 10.0, -1.0], [2.0, 4.0, -0.6]],
            [[20.0, -0.8333333, 0.6666668], [6.6666665, -1.6666666, 0.5000001], [4.0, -1.25, 2.0000005]],
        ],
        [
            [0.3179889917373657, -2.2271885871887207, 5.00382137298584],
            [-2.6557865142822266, 7.571714878082275, 0.7565428614616394],
        ],
    ),
    ([[1.0], [0.5]], [[2.0], [3.0]], False, [1, 1], [[1.0], [1.0]], [[0.0], [-0.1732867956161499]]),
    ([[0.3, 0.7]], [[1.0, 1.0]], False, [1], [[0.0, 0.0]], [[-0.20397277176380157, 0.6433250308036804]]),
    # a sample at 0 and alpha at 0 or below: the formula's NaN (0 times an infinity) and zeros
    ([[0.0, 0.5, 0.5]], [DA[0]], False, [1], [[NAN, 0.0, 0.0]], [[NAN, 0.0, 0.0]]),
    ([DS[0]], [[0.0, 1.0, 1.0]], False, [1], [[0.0, 0.0, 0.0]], [[NAN, 0.0, 0.0]]),
]


@pytest.mark.parametrize("x, alpha, is_log, head, gx, ga", DIRICHLET_GRADS)
def test_random_pdf_dirichlet_gradients_as_mxnet(mode, x, alpha, is_log, head, gx, ga):
    """(alpha_j - 1) / x_j for the sample, log x_j + digamma(sum alpha) - digamma(alpha_j) for
    alpha (summed over its distribution's samples), times the density unless is_log."""
    s, a = nd.array(x), nd.array(alpha)
    s.attach_grad()
    a.attach_grad()
    with autograd.record():
        y = nd.random_pdf_dirichlet(s, a, is_log=is_log)
    with np.errstate(all="ignore"):
        y.backward(nd.array(head))
    np.testing.assert_allclose(s.grad.asnumpy(), gx, rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(a.grad.asnumpy(), ga, rtol=2e-6, atol=1e-6)


# --------------------------------------------------------------------------
# multi_all_finite


@pytest.mark.parametrize(
    "xs, dtype, at, want",
    [
        ([[1, 2]], F32, {}, 1),
        ([[1, 2], [2, 4]], F32, {"num_arrays": 2}, 1),
        ([[1, 2], [[1, INF]]], F32, {"num_arrays": 2}, 0),
        ([[1, 2], [1, 2], [NAN]], F32, {"num_arrays": 3}, 0),
        ([[INF]], F16, {}, 0),  # (MXNet's 7e4, past float16: inf)
        ([[1, 2], [NAN]], F64, {"num_arrays": 2}, 0),
        ([[1, 2], [NAN]], F32, {"num_arrays": 2, "init_output": False}, 0),
        ([[], [1.0]], F32, {"num_arrays": 2}, 1),  # (MXNet fails on an empty array)
    ],
)
def test_multi_all_finite_as_mxnet(xs, dtype, at, want):
    y = run("multi_all_finite", at, *[np.array(x, dtype) for x in xs])
    assert y.dtype == np.float32 and y.tolist() == [want]


def test_multi_all_finite_without_init_output_gives_a_new_array():
    """As all_finite's: MXNet 1.9.1 leaves its output as it was (it printed 0. for finite
    arrays); here 1."""
    y = run("multi_all_finite", {"num_arrays": 2, "init_output": False}, *arrays(([1, 2], F32), ([3], F32)))
    assert y.tolist() == [1]


@pytest.mark.parametrize(
    "xs, at, error, match",
    [
        ([([1, 2], F32), ([1], F32)], {}, InvalidInput, r"expects 1 arrays \(num_arrays\), but got 2"),
        ([([1, 2], F32)], {"num_arrays": 2}, InvalidInput, "expects 2 arrays"),
        ([([1, 2], F32)], {"num_arrays": -1}, InvalidInput, "expects -1 arrays"),
        ([], {"num_arrays": 0}, InvalidInput, "needs at least one array"),  # (MXNet 1.9.1 crashes)
        ([([1, 2], I32)], {}, DTypeError, "floating point arrays only, got int32"),
        ([([1, 0], "bool")], {}, DTypeError, "floating point arrays only, got bool"),  # (MXNet: "Unknown type enum 7")
        ([([1, 2], F32), ([1], F16)], {"num_arrays": 2}, DTypeError, "same dtype"),  # (MXNet: "do not match")
        ([([1, 2], F32), ([1], I32)], {"num_arrays": 2}, DTypeError, "floating point"),
    ],
)
def test_multi_all_finite_refusals(xs, at, error, match):
    with pytest.raises(error, match=match):
        run("multi_all_finite", at, *arrays(*xs))


def test_multi_all_finite_is_not_differentiable_and_runs_through_a_session(mode):
    """MXNet registers no gradient for it: recorded, its result takes none."""
    assert not OPS["multi_all_finite"].differentiable
    a, b = nd.array([1.0, 2.0]), nd.array([[3.0, -INF]])
    assert nd.multi_all_finite(a, b, num_arrays=2).asnumpy().tolist() == [0.0]
    assert nd.multi_all_finite(a, a, a, num_arrays=3).asnumpy().tolist() == [1.0]
    x = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    ops = [{"op": "array", "out": [1], "at": {"value": x}}, {"op": "attach_grad", "in": [1]}]
    ops += [
        {"op": "multi_all_finite", "in": [1, 1], "out": [10], "at": {"num_arrays": 2}, "mode": 3},
        {"op": "backward", "in": [10], "mode": 2},
    ]
    reply = Session("t").run_batch({"ops": ops})
    assert reply["error"]["op"] == "backward", reply


MEASURED_REST = [
    ("random_pdf_dirichlet", {}, [((300, 100, 10), F32, _positive), ((300, 10), F32, _positive)]),
    ("random_pdf_dirichlet", {"is_log": True}, [((1000, 4), F64, _positive), ((4,), F64, _positive)]),
    ("multi_all_finite", {"num_arrays": 3}, [((300, 400), F16, _positive)] * 3),
]


@pytest.mark.parametrize("name, at, inputs", MEASURED_REST, ids=[f"{m[0]}-{i}" for i, m in enumerate(MEASURED_REST)])
def test_declared_working_arrays_bound_what_dirichlet_and_multi_all_finite_make(name, at, inputs):
    rng = np.random.default_rng(0)
    check_working_arrays(name, at, [d(rng, sh).astype(dt) for sh, dt, d in inputs])


def test_dirichlet_alpha_gradient_at_a_zero_component_is_mxnets_infinity():
    """x_j = 0 with alpha_j < 1: the density is inf and alpha's gradient -inf or inf (MXNet
    1.9.1's, each sample's terms taken together), not NaN."""
    x = nd.array([[0.5, 0.9, 0.2], [0.0, 0.5, 0.5]])
    a = nd.array([0.446, 1.167, 2.463])
    a.attach_grad()
    with autograd.record():
        y = nd.random_pdf_dirichlet(x, a)
    y.backward()
    assert np.isinf(y.asnumpy()[1]) and a.grad.asnumpy().tolist() == [-np.inf, np.inf, -np.inf]


# --------------------------------------------------------------------------
# histogram (nd.histogram: the ops histogram and histogram_edges)

HIST_DATA = [0.1, 0.5, 0.5, 0.9, 1.0, -1.0, 2.0, NAN]


def test_histogram_counts_and_edges_are_mxnets(mode):
    x = nd.array(HIST_DATA)
    counts, edges = nd.histogram(x, bins=4, range=(0, 1))
    assert counts.dtype == np.int64 and counts.asnumpy().tolist() == [1, 0, 2, 2]
    assert edges.dtype == np.float32 and edges.asnumpy().tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    counts, edges = nd.histogram(x, bins=nd.array([0, 0.5, 1, 3]))
    assert counts.asnumpy().tolist() == [1, 3, 2] and edges.asnumpy().tolist() == [0.0, 0.5, 1.0, 3.0]
    counts, edges = nd.histogram(nd.array([1, 2, 3], dtype=I32), bins=3, range=(0, 3))
    assert counts.asnumpy().tolist() == [0, 1, 2]
    assert edges.dtype == np.int32 and edges.asnumpy().tolist() == [0, 1, 2, 3]
    counts, edges = nd.histogram(nd.array([[0.1, 0.2], [0.3, 0.9]]).astype(F16), bins=2, range=(0, 1))
    assert counts.asnumpy().tolist() == [3, 1] and edges.dtype == np.float16
    assert "<NDArray 4 @cpu(0)>" in repr(nd.histogram(x, bins=4, range=(0, 1))[0])


def test_histogram_without_a_range_is_numpys_in_float32_as_mxnets(mode):
    """MXNet 1.9.1's nd.histogram without range runs numpy's on the data (with a warning) and
    gives its counts and edges as float32 NDArrays, in a tuple; its numpy (1.23) computes the
    edges in float64, then in the data's float dtype (float64 for integers)."""
    v = np.array([0.3, -1.25, 2.0, 0.7, 2.0], np.float32)
    got = nd.histogram(nd.array(v), bins=3)
    assert type(got) is tuple and [a.dtype for a in got] == [np.float32, np.float32]
    want_counts, want_edges = np.histogram(v, bins=np.linspace(-1.25, 2.0, 4).astype(np.float32))
    assert got[0].asnumpy().tolist() == want_counts.tolist()
    assert got[1].asnumpy().tolist() == want_edges.tolist()
    # MXNet's: edges of float32 data rounded once from float64 (numpy 2's own are off in the last place)
    edges = nd.histogram(nd.array([-22.0, 22.0]), bins=3)[1]
    assert edges.asnumpy().tolist() == [-22.0, -7.333333492279053, 7.333333492279053, 22.0]
    counts, edges = nd.histogram(nd.array([1, 2, 2, 8], dtype=I32), bins=3)  # (integers: float64 edges, not cut)
    assert counts.asnumpy().tolist() == [3.0, 0.0, 1.0]
    assert edges.asnumpy().tolist() == [1.0, 3.3333332538604736, 5.666666507720947, 8.0]
    counts, edges = nd.histogram(nd.array([5.0, 5.0]), bins=2)  # (one value: numpy's 0.5 each way)
    assert counts.asnumpy().tolist() == [0, 2] and edges.asnumpy().tolist() == [4.5, 5.0, 5.5]
    counts, edges = nd.histogram(nd.zeros((0,)), bins=2)  # (no values: numpy's (0, 1))
    assert counts.asnumpy().tolist() == [0, 0] and edges.asnumpy().tolist() == [0.0, 0.5, 1.0]
    with pytest.raises(InvalidInput, match=re.escape("range [nan, nan] is not finite, or too wide: give range")):
        nd.histogram(nd.array([NAN, 1.0]), bins=2)[0].asnumpy()
    with pytest.raises(InvalidInput, match="too wide"):
        nd.histogram(nd.array([-1e308, 1e308], dtype="float64"), bins=2)[0].asnumpy()
    assert nd.histogram(nd.array([1.0]), bins=2, range=(0, 2))[0].asnumpy().tolist() == [0, 1]  # (usable after)


@pytest.mark.parametrize(
    "xs, at, error, match",
    [
        ([(HIST_DATA, F32)], {"bin_cnt": 0}, InvalidInput, "bin_cnt must be at least 1, got 0"),
        ([(HIST_DATA, F32)], {}, InvalidInput, "needs bin_cnt, or an array of bin edges"),
        ([(HIST_DATA, F32)], {"bin_cnt": 2, "range": [1, 0]}, InvalidInput, r"min <= max; got \[1.0, 0.0\]"),
        ([(HIST_DATA, F32)], {"bin_cnt": 2, "range": [0, INF]}, InvalidInput, "two finite numbers"),
        ([(HIST_DATA, F32)], {"bin_cnt": 2, "range": [0, 1, 2]}, InvalidInput, "two finite numbers"),
        ([(HIST_DATA, F32), ([0, 1, 0.5], F32)], {}, InvalidInput, "the bin edges must increase"),
        ([(HIST_DATA, F32), ([0, NAN], F32)], {}, InvalidInput, "the bin edges must increase"),
        ([(HIST_DATA, F32), ([[0, 1]], F32)], {}, ShapeError, "one vector of at least 2 values"),
        ([(HIST_DATA, F32), ([0], F32)], {}, ShapeError, "one vector of at least 2 values"),
        ([(HIST_DATA, F32)], {"bin_cnt": 2, "range": [-1e308, 1e308]}, InvalidInput, "a finite width apart"),
        ([([True, False], "bool")], {"bin_cnt": 2}, DTypeError, "not bool"),
    ],
)
def test_histogram_refusals(xs, at, error, match):
    """MXNet 1.9.1 gives empty counts and a NaN edge for bin_cnt 0 and counts of its own making
    for edges that do not increase; numpy (and here) refuse both."""
    with pytest.raises(error, match=match):
        run("histogram", at, *arrays(*xs))


def test_histogram_is_not_differentiable_and_a_rest_client_calls_both_ops():
    assert not OPS["histogram"].differentiable and not OPS["histogram_edges"].differentiable
    x = np.array([0.2, 0.4, 0.9], np.float32)
    ops = [
        {"op": "array", "out": [1], "at": {"value": x}},
        {"op": "histogram", "in": [1], "out": [2], "at": {"bin_cnt": 2, "range": [0, 1]}},
        {"op": "histogram_edges", "in": [1], "out": [3], "at": {"bin_cnt": 2, "range": [0, 1]}},
        {"op": "read", "in": [2]},
        {"op": "read", "in": [3]},
    ]
    reply = Session("t").run_batch({"ops": ops})
    assert [v.tolist() for v in reply["values"]] == [[2, 1], [0.0, 0.5, 1.0]]
    counts, _ = nd.histogram(nd.array(x), bins=nd.array([0.0, 0.5, 1.0]), range=(0, 0.3))  # (range not read)
    assert counts.asnumpy().tolist() == [2, 1]
    assert run("histogram", {"bin_cnt": 7, "range": [0, 0.3]}, x, np.array([0.0, 0.5, 1.0])).tolist() == [2, 1]
    with pytest.raises(InvalidInput, match="bins must be a number of bins or an NDArray"):
        nd.histogram(nd.array(x), bins=[0.0, 1.0])
    with pytest.raises(TypeError, match="rnage"):
        nd.histogram(nd.array(x), bins=2, rnage=(0, 1))


def test_histogram_of_integers_counts_in_the_integer_edges_as_mxnet(mode):
    """MXNet 1.9.1 (recorded; equal to its counts and edges on 400 random cases of every dtype):
    a value in the range (compared in float64: a float32 0.1 is past 0.1) goes to the bin of
    its place in it, moved by one where the edges in the data's dtype (truncated for integers)
    say it lies past that bin."""
    counts, edges = nd.histogram(nd.array([0, 1, 2, 5], dtype=I32), bins=2, range=(0, 5))
    assert counts.asnumpy().tolist() == [2, 2] and edges.asnumpy().tolist() == [0, 2, 5]
    counts, edges = nd.histogram(nd.array(np.arange(13), dtype="int64"), bins=3, range=(0, 10))
    assert counts.asnumpy().tolist() == [3, 3, 5] and edges.asnumpy().tolist() == [0, 3, 6, 10]
    counts, edges = nd.histogram(nd.array([0, 1, 2, 3, 5, 9], dtype=I32), bins=3, range=(0.5, 9.5))
    assert counts.asnumpy().tolist() == [2, 2, 1] and edges.asnumpy().tolist() == [0, 3, 6, 9]  # (0 is out of range)
    counts, _ = nd.histogram(nd.array([0.1, 0.3]), bins=1, range=(0, 0.1))
    assert counts.asnumpy().tolist() == [0]
    # a value equal to an edge in the data's dtype is in the bin it starts, as MXNet counts it
    counts, edges = nd.histogram(nd.array([0.7], dtype=F32), bins=9, range=(0.1, 1.0))
    assert counts.asnumpy().argmax() == 6 and edges.asnumpy()[6] == np.float32(0.7)
    counts, edges = nd.histogram(nd.array([0.2], dtype=F16), bins=9, range=(0.1, 1.0))
    assert counts.asnumpy().argmax() == 1
    _, edges = nd.histogram(nd.array([1, 5], dtype="uint8"), bins=3, range=(-3.5, 7.2))  # (a C cast wraps)
    assert edges.asnumpy().tolist() == [253, 0, 3, 7]


@pytest.mark.parametrize(
    "name, at, inputs",
    [
        ("histogram", {"bin_cnt": 50, "range": [-1, 1]}, [(300, 400)]),
        ("histogram", {}, [(300, 400), (51,)]),
        ("histogram", {"bin_cnt": 400_000, "range": [0, 1]}, [(1000,)]),
        ("histogram", {}, [(1000,), (400_001,)]),
        ("histogram_edges", {"bin_cnt": 400_000, "range": [0, 1]}, [(1000,)]),
    ],
)
def test_declared_working_arrays_bound_what_histogram_makes(name, at, inputs):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(inputs[0]).astype(np.float32)
    edges = [np.sort(rng.standard_normal(shape)).astype(np.float32) for shape in inputs[1:]]
    check_working_arrays(name, at, [x, *edges])
