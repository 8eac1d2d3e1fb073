"""Table-driven tests of the whole engine op table.

Every op of ``OPS`` has a case in ``CASES``: its input shapes, the domain its
inputs are drawn from (away from poles, kinks and ties where the gradient
check needs it), its attributes and a numpy reference. Each op is checked for

* forward against the reference, in float32 and float64;
* ``op.infer`` against the shape and dtype forward actually gives;
* its VJP against central differences in float64, along one random direction
  and projected on one random cotangent (HIPS autograd's ``check_vjp``).

Focused tests follow for broadcasting (hypothesis), reductions, indexing
keys, MXNet's reshape codes, dot, transpose, broadcast_to / sum_to, creation
ops, and a whole backward pass through a Session.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from gradserve.engine import ops as _ops  # noqa: F401  (fills the table)
from gradserve.engine.errors import MXNetError
from gradserve.engine.optable import OPS, Op, Spec
from gradserve.engine.session import Context, Eager, Session
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import mutually_broadcastable_shapes

# --------------------------------------------------------------------------
# input domains: (rng, shape) -> float64 array


def U(lo: float = -2.0, hi: float = 2.0) -> Callable:
    """Uniform in [lo, hi)."""
    return lambda rng, shape: rng.uniform(lo, hi, shape)


def AWAY(gap: float = 0.2, hi: float = 2.0) -> Callable:
    """Uniform in [-hi, -gap] u [gap, hi]: no zeros (kinks of abs, relu, 1/x)."""
    return lambda rng, shape: rng.uniform(gap, hi, shape) * rng.choice([-1.0, 1.0], shape)


def GRID(offset: float = 0.0) -> Callable:
    """Multiples of 1/4 (plus offset): ties among GRID(0) draws, none with GRID(1/8)."""
    return lambda rng, shape: rng.integers(-8, 9, shape) * 0.25 + offset


def DISTINCT(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Distinct values, none near 0 (max/min without ties, the L1 norm without kinks)."""
    n = int(np.prod(shape))
    mags = (rng.permutation(n) + 1.0) * (2.0 / max(n, 1))
    return (mags * rng.choice([-1.0, 1.0], n)).reshape(shape)


POS = U(0.5, 2.0)  # log, sqrt, pow's base, ...
SMOOTH = U()


# --------------------------------------------------------------------------
# the table


@dataclass(frozen=True)
class Case:
    ref: Callable[..., Any] | None  # numpy reference on the inputs (None: random op)
    shapes: tuple[tuple[int, ...], ...] = ((2, 3),)  # one shape per input
    at: dict[str, Any] = field(default_factory=dict)
    dom: Callable | tuple[Callable, ...] = SMOOTH  # one domain, or one per input
    out: str | None = None  # output dtype when it is not the input's
    no_grad: bool = False  # the VJP gives None for every input


def C(ref, *shapes, dom=SMOOTH, out=None, no_grad=False, **at) -> Case:
    return Case(ref, tuple(shapes) or ((2, 3),), at, dom, out, no_grad)


def mx1d(r: Any) -> np.ndarray:
    """MXNet's legacy rule: no rank-0 results, a scalar comes back as shape (1,)."""
    r = np.asarray(r)
    return r.reshape(1) if r.ndim == 0 else r


def as_np_key(key: list) -> tuple:
    """The wire key format (ops.py) as a numpy index, written independently of parse_key."""
    out: list[Any] = []
    for k in key:
        if k is None:
            out.append(None)
        elif k == "...":
            out.append(Ellipsis)
        elif isinstance(k, list):
            out.append(slice(*k))
        else:
            out.append(k)
    return tuple(out)


def scatter_ref(shape, key):
    def ref(g):
        z = np.zeros(shape, g.dtype)
        z[as_np_key(key)] = g.reshape(z[as_np_key(key)].shape)
        return z

    return ref


S = 1.5  # the scalar of the *_scalar ops
BIN = ((2, 1, 3), (4, 1))  # binary ops: broadcasting both ways
X3 = (2, 3, 4)
KEY = [1, [None, None, 2], None, "..."]  # x[1, ::2, None, ...]
ARR = np.arange(6, dtype=np.float32).reshape(2, 3)

CASES: dict[str, Case] = {
    # creation: no inputs
    "array": C(lambda: ARR, value=ARR),
    "zeros": C(lambda: np.zeros((2, 3), np.float32), shape=[2, 3]),
    "ones": C(lambda: np.ones((4,), np.float64), shape=4, dtype="float64"),
    "full": C(lambda: np.full((2, 3), 2.5, np.float32), shape=[2, 3], val=2.5),
    "arange": C(lambda: np.repeat(np.arange(1, 7, 1.5), 2).astype(np.float32), start=1, stop=7, step=1.5, repeat=2),
    "random_normal": C(None, shape=[3, 4]),
    "random_uniform": C(None, shape=[3, 4], low=-1.0, high=2.0),
    # like
    "zeros_like": C(np.zeros_like, no_grad=True),
    "ones_like": C(np.ones_like, no_grad=True),
    # unary
    "negative": C(np.negative),
    "copy": C(np.copy),
    "abs": C(np.abs, dom=AWAY()),
    "sign": C(np.sign, dom=AWAY()),
    "square": C(np.square),
    "sqrt": C(np.sqrt, dom=POS),
    "exp": C(np.exp),
    "log": C(np.log, dom=POS),
    "tanh": C(np.tanh, dom=U(-3, 3)),
    "sigmoid": C(lambda x: 1 / (1 + np.exp(-x)), dom=U(-5, 5)),
    "relu": C(lambda x: np.maximum(x, 0), dom=AWAY()),
    "astype": C(lambda x: x.astype(np.float64), dtype="float64", out="float64"),
    # binary, broadcasting
    "add": C(np.add, *BIN),
    "sub": C(np.subtract, *BIN),
    "mul": C(np.multiply, *BIN),
    "div": C(np.divide, *BIN, dom=(SMOOTH, AWAY(0.5))),
    "pow": C(np.power, *BIN, dom=(POS, U())),
    "maximum": C(np.maximum, *BIN, dom=(GRID(0), GRID(0.125))),
    "minimum": C(np.minimum, *BIN, dom=(GRID(0), GRID(0.125))),
    "equal": C(np.equal, *BIN, dom=GRID(), no_grad=True),
    "not_equal": C(np.not_equal, *BIN, dom=GRID(), no_grad=True),
    "greater": C(np.greater, *BIN, dom=GRID(), no_grad=True),
    "greater_equal": C(np.greater_equal, *BIN, dom=GRID(), no_grad=True),
    "lesser": C(np.less, *BIN, dom=GRID(), no_grad=True),
    "lesser_equal": C(np.less_equal, *BIN, dom=GRID(), no_grad=True),
    # with a scalar
    "add_scalar": C(lambda x: x + S, scalar=S),
    "sub_scalar": C(lambda x: x - S, scalar=S),
    "rsub_scalar": C(lambda x: S - x, scalar=S),
    "mul_scalar": C(lambda x: x * S, scalar=S),
    "div_scalar": C(lambda x: x / S, scalar=S),
    "rdiv_scalar": C(lambda x: S / x, dom=AWAY(0.5), scalar=S),
    "pow_scalar": C(lambda x: x**S, dom=POS, scalar=S),
    "rpow_scalar": C(lambda x: S**x, scalar=S),
    "maximum_scalar": C(lambda x: np.maximum(x, 0.125), dom=GRID(), scalar=0.125),
    "minimum_scalar": C(lambda x: np.minimum(x, 0.125), dom=GRID(), scalar=0.125),
    "equal_scalar": C(lambda x: x == 0.5, dom=GRID(), no_grad=True, scalar=0.5),
    "not_equal_scalar": C(lambda x: x != 0.5, dom=GRID(), no_grad=True, scalar=0.5),
    "greater_scalar": C(lambda x: x > 0.5, dom=GRID(), no_grad=True, scalar=0.5),
    "greater_equal_scalar": C(lambda x: x >= 0.5, dom=GRID(), no_grad=True, scalar=0.5),
    "lesser_scalar": C(lambda x: x < 0.5, dom=GRID(), no_grad=True, scalar=0.5),
    "lesser_equal_scalar": C(lambda x: x <= 0.5, dom=GRID(), no_grad=True, scalar=0.5),
    # reductions (more in test_reduction)
    "sum": C(lambda x: x.sum(axis=1), X3, axis=1),
    "mean": C(lambda x: x.mean(axis=(0, 2), keepdims=True), X3, axis=[0, 2], keepdims=True),
    "max": C(lambda x: mx1d(x.max()), X3, dom=DISTINCT),
    "min": C(lambda x: x.min(axis=-1), X3, dom=DISTINCT, axis=-1),
    "norm": C(lambda x: np.sqrt((x * x).sum(axis=0)), X3, dom=DISTINCT, axis=0),
    # shape
    "sum_to": C(lambda x: x.sum(axis=(0, 2)).reshape(3, 1), X3, shape=[3, 1]),
    "broadcast_to": C(lambda x: np.broadcast_to(x, X3), (3, 1), shape=list(X3)),
    "reshape": C(lambda x: x.reshape(6, 4), X3, shape=[-3, -1]),
    "transpose": C(lambda x: x.transpose(1, 2, 0), X3, axes=[1, 2, 0]),
    "expand_dims": C(lambda x: x[:, None], X3, axis=1),
    # indexing
    "getitem": C(lambda x: x[as_np_key(KEY)], (3, 4, 5), key=KEY),
    "scatter_key": C(scatter_ref((3, 4, 5), KEY), (2, 1, 5), shape=[3, 4, 5], key=KEY),
    # linear algebra
    "dot": C(np.dot, (2, 3), (3, 4)),
}

OP_NAMES = [op.name for op in OPS.ops()]
DIFFERENTIABLE = [op.name for op in OPS.ops() if op.vjp is not None]
BINARY = ["add", "sub", "mul", "div", "pow", "maximum", "minimum",
          "equal", "not_equal", "greater", "greater_equal", "lesser", "lesser_equal"]


def test_every_op_has_a_case():
    """Adding an op to the table without a case here fails CI."""
    missing = sorted(set(OP_NAMES) - set(CASES))
    stale = sorted(set(CASES) - set(OP_NAMES))
    assert not missing, f"ops without a test case in tests/test_ops.py: {missing}"
    assert not stale, f"cases for ops that are not in the table: {stale}"


def test_aliases_are_the_same_op():
    for op in OPS.ops():
        for alias in op.aliases:
            assert OPS[alias] is op


def test_binary_list_is_every_two_input_elementwise_op():
    two = {op.name for op in OPS.ops() if len(op.inputs) == 2 and op.name != "dot"}
    assert two == set(BINARY)


# --------------------------------------------------------------------------
# helpers


def make_inputs(case: Case, dtype: str, rng: np.random.Generator, shapes=None) -> list[np.ndarray]:
    shapes = case.shapes if shapes is None else shapes
    doms = case.dom if isinstance(case.dom, tuple) else (case.dom,) * len(shapes)
    return [np.asarray(d(rng, s)).astype(dtype) for d, s in zip(doms, shapes)]


def tol(dtype) -> dict[str, float]:
    return {"rtol": 1e-12, "atol": 1e-12} if np.dtype(dtype) == np.float64 else {"rtol": 2e-6, "atol": 1e-6}


def check_forward(op: Op, at: dict, xs: list[np.ndarray], want: Any, out_dtype: str | None = None) -> np.ndarray:
    """Forward against the reference; infer against what forward gives."""
    at = op.parse_attrs(at)
    spec = op.infer(at, *[Spec(tuple(x.shape), x.dtype.name) for x in xs])
    y = op.forward(Context(0), at, *xs)
    want = np.asarray(want)
    if out_dtype is None:
        out_dtype = xs[0].dtype.name if xs else want.dtype.name
    assert isinstance(y, np.ndarray), f"{op.name} returned a {type(y).__name__}, not an ndarray"
    assert y.dtype.name == out_dtype
    assert y.shape == want.shape
    assert spec == (y.shape, y.dtype.name), f"{op.name}: infer says {spec}, forward gives {y.shape} {y.dtype}"
    np.testing.assert_allclose(y.astype(np.float64), want.astype(np.float64), **tol(y.dtype))
    return y


def check_grads(op: Op, at: dict, xs: list[np.ndarray], rng: np.random.Generator,
                no_grad: bool = False, eps: float = 1e-5) -> None:
    """<vjp(g), v> against <(f(x + eps v) - f(x - eps v)) / 2 eps, g> (float64)."""
    assert all(x.dtype == np.float64 for x in xs)
    at = op.parse_attrs(at)
    cx = Context(0)
    y = op.forward(cx, at, *xs)
    g = rng.standard_normal(y.shape)
    cts = op.vjp(Eager(cx), at, g, y, *xs)
    assert len(cts) == len(xs)
    if no_grad:
        assert all(ct is None for ct in cts), f"{op.name} should give no gradient"
        return
    for x, ct in zip(xs, cts):
        assert ct is not None
        assert (ct.shape, ct.dtype) == (x.shape, x.dtype), f"{op.name}: cotangent {ct.shape} {ct.dtype} for {x.shape}"
    vs = [rng.standard_normal(x.shape) for x in xs]
    analytic = sum(float(np.vdot(ct, v)) for ct, v in zip(cts, vs))
    fp = op.forward(cx, at, *[x + eps * v for x, v in zip(xs, vs)])
    fm = op.forward(cx, at, *[x - eps * v for x, v in zip(xs, vs)])
    numeric = float(np.vdot((fp - fm) / (2 * eps), g))
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-7, err_msg=op.name)


# --------------------------------------------------------------------------
# every op


# ops with inputs run in float32 and float64; creation ops take their dtype from attributes
FORWARD = [(op.name, dt) for op in OPS.ops() for dt in (("float32", "float64") if op.inputs else (None,))]


@pytest.mark.parametrize("name, dtype", FORWARD, ids=[f"{n}-{d}" if d else n for n, d in FORWARD])
def test_forward_and_infer(name, dtype):
    op, case = OPS[name], CASES[name]
    if op.random:  # no reference: infer agrees, and a seed repeats the draws (more in test_random_ops)
        at = op.parse_attrs(case.at)
        y = op.forward(Context(5), at)
        assert isinstance(y, np.ndarray) and op.infer(at) == (y.shape, y.dtype.name)
        assert np.array_equal(y, op.forward(Context(5), at))
        return
    if not op.inputs:
        check_forward(op, case.at, [], case.ref(), case.out)
        return
    xs = make_inputs(case, dtype, np.random.default_rng(0))
    check_forward(op, case.at, xs, case.ref(*xs), case.out)


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_grad(name):
    op, case = OPS[name], CASES[name]
    rng = np.random.default_rng(1)
    check_grads(op, case.at, make_inputs(case, "float64", rng), rng, case.no_grad)


def test_astype_cotangent_keeps_input_dtype():
    op = OPS["astype"]
    x = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
    at = op.parse_attrs({"dtype": "float64"})
    y = op.forward(Context(), at, x)
    (ct,) = op.vjp(Eager(Context()), at, np.ones_like(y), y, x)
    assert (y.dtype, ct.dtype, ct.shape) == (np.float64, np.float32, x.shape)
    check_forward(op, {"dtype": "int32"}, [x * 3], (x * 3).astype(np.int32), "int32")


@pytest.mark.parametrize("name, a, b, want", [
    ("div", [7, -7, 7, -7], [2, 2, -2, -2], [3, -3, -3, 3]),
    ("div_scalar", [7, -7, 5, -5], 2, [3, -3, 2, -2]),
    ("rdiv_scalar", [2, -2, 3, -4], 7, [3, -3, 2, -1]),
])
def test_integer_division_truncates(name, a, b, want):
    op = OPS[name]
    xs = [np.array(a, np.int32)] + ([np.array(b, np.int32)] if name == "div" else [])
    at = {} if name == "div" else {"scalar": b}
    check_forward(op, at, xs, np.array(want, np.int32))


# --------------------------------------------------------------------------
# broadcasting


SHAPES = mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, min_side=1, max_side=4)


@pytest.mark.parametrize("name", BINARY)
@settings(max_examples=25, deadline=None, database=None)
@given(shapes=SHAPES.map(lambda s: s.input_shapes), seed=st.integers(0, 2**32 - 1))
@example(shapes=((3, 1), (1, 4)), seed=0)
@example(shapes=((2, 3, 4), (4,)), seed=0)
@example(shapes=((4,), (2, 3, 4)), seed=0)
@example(shapes=((1,), ()), seed=0)
def test_broadcasting(name, shapes, seed):
    op, case = OPS[name], CASES[name]
    rng = np.random.default_rng(seed)
    xs = make_inputs(case, "float32", rng, shapes)
    y = check_forward(op, {}, xs, case.ref(*xs))
    assert y.shape == np.broadcast_shapes(*shapes)
    check_grads(op, {}, make_inputs(case, "float64", rng, shapes), rng, case.no_grad)


@pytest.mark.parametrize("name", ["add", "mul", "equal"])
def test_binary_rejects_mismatched_shapes_and_dtypes(name):
    op = OPS[name]
    with pytest.raises(MXNetError, match="broadcast"):
        op.infer({}, Spec((2, 3), "float32"), Spec((4,), "float32"))
    with pytest.raises(MXNetError, match="dtype"):
        op.infer({}, Spec((2, 3), "float32"), Spec((2, 3), "float64"))


# --------------------------------------------------------------------------
# reductions


def reduce_ref(name: str, ord_: int, x: np.ndarray, axis, keepdims: bool) -> np.ndarray:
    ax = tuple(axis) if isinstance(axis, list) else axis
    if name == "norm":
        r = np.abs(x).sum(ax, keepdims=keepdims) if ord_ == 1 else np.sqrt((x * x).sum(ax, keepdims=keepdims))
    else:
        r = getattr(np, name)(x, axis=ax, keepdims=keepdims)
    return mx1d(r)


REDUCTIONS = [("sum", 0), ("mean", 0), ("max", 0), ("min", 0), ("norm", 1), ("norm", 2)]


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axis", [None, 0, -1, [1], [0, 2], [2, 0], [0, 1, 2]])
@pytest.mark.parametrize("name, ord_", REDUCTIONS)
def test_reduction(name, ord_, axis, keepdims):
    op = OPS[name]
    at = {"axis": axis, "keepdims": keepdims, **({"ord": ord_} if name == "norm" else {})}
    rng = np.random.default_rng(2)
    x = DISTINCT(rng, X3)
    check_forward(op, at, [x.astype(np.float32)], reduce_ref(name, ord_, x.astype(np.float32), axis, keepdims))
    check_grads(op, at, [x], rng)


@pytest.mark.parametrize("shape, axis, keepdims, want", [
    ((2, 3, 4), None, False, (1,)),  # MXNet: no rank-0 results
    ((2, 3, 4), None, True, (1, 1, 1)),
    ((2, 3, 4), [0, 1, 2], False, (1,)),
    ((2, 3, 4), [0, 2], False, (3,)),
    ((2, 3, 4), [0, 2], True, (1, 3, 1)),
    ((2, 3, 4), -2, False, (2, 4)),
    ((5,), None, False, (1,)),
    ((5,), 0, True, (1,)),
])
@pytest.mark.parametrize("name", ["sum", "mean", "max", "min", "norm"])
def test_reduction_shapes(name, shape, axis, keepdims, want):
    op = OPS[name]
    at = op.parse_attrs({"axis": axis, "keepdims": keepdims})
    assert op.infer(at, Spec(shape, "float32")) == (want, "float32")
    assert op.forward(Context(), at, np.ones(shape, np.float32)).shape == want


@pytest.mark.parametrize("axis", [3, -4, [0, 0], [1, -2]])
def test_reduction_rejects_bad_axes(axis):
    op = OPS["sum"]
    with pytest.raises(MXNetError):
        op.infer(op.parse_attrs({"axis": axis}), Spec(X3, "float32"))


# --------------------------------------------------------------------------
# indexing

KEYS = [
    [1],
    [-1, 2],
    [0, 1, 2],  # every axis: a rank-0 result, returned as (1,)
    [[None, None, 2]],
    [[1, None, None], [None, None, -1]],
    [[None, None, -2], 0, [1, 4, None]],
    [None, 0],
    ["...", 1],
    [1, "...", [0, 3, 2]],
    [[-2, None, None], None, 3],
    ["...", None],
    [],
]


@pytest.mark.parametrize("key", KEYS, ids=str)
def test_getitem_and_scatter_key(key):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 4, 5))
    want = mx1d(x[as_np_key(key)])
    y = check_forward(OPS["getitem"], {"key": key}, [x], want)
    check_grads(OPS["getitem"], {"key": key}, [x], rng)
    scatter = {"shape": [3, 4, 5], "key": key}
    check_forward(OPS["scatter_key"], scatter, [y], scatter_ref((3, 4, 5), key)(y))
    check_grads(OPS["scatter_key"], scatter, [y], rng)


BAD_KEYS = [[3], [0, 0, 0, 0], [0, -6], ["...", "..."], [1.5], "0", [[0, 1]], [[0, 1, 0]]]


@pytest.mark.parametrize("key", BAD_KEYS, ids=str)
def test_getitem_rejects_bad_keys(key):
    op = OPS["getitem"]
    with pytest.raises(MXNetError):
        op.infer(op.parse_attrs({"key": key}), Spec((3, 4, 5), "float32"))


# --------------------------------------------------------------------------
# shape ops


@pytest.mark.parametrize("src, target, reverse, want", [
    # examples of MXNet's reshape documentation
    ((2, 3, 4), [4, 0, 2], False, (4, 3, 2)),
    ((2, 3, 4), [2, 0, 0], False, (2, 3, 4)),
    ((2, 3, 4), [6, 1, -1], False, (6, 1, 4)),
    ((2, 3, 4), [3, -1, 8], False, (3, 1, 8)),
    ((2, 3, 4), [-1], False, (24,)),
    ((2, 3, 4), [-2], False, (2, 3, 4)),
    ((2, 3, 4), [2, -2], False, (2, 3, 4)),
    ((2, 3, 4), [-2, 1, 1], False, (2, 3, 4, 1, 1)),
    ((2, 3, 4), [-3, 4], False, (6, 4)),
    ((2, 3, 4, 5), [-3, -3], False, (6, 20)),
    ((2, 3, 4), [0, -3], False, (2, 12)),
    ((2, 3, 4), [-3, -2], False, (6, 4)),
    ((2, 3, 4), [-4, 1, 2, -2], False, (1, 2, 3, 4)),
    ((2, 3, 4), [2, -4, -1, 3, -2], False, (2, 1, 3, 4)),
    ((10, 5, 4), [-1, 0], False, (40, 5)),
    ((10, 5, 4), [-1, 0], True, (50, 4)),
    ((6, 4), [-4, 2, -1, 0], False, (2, 3, 4)),
    ((2, 3, 4), [4, 6], False, (4, 6)),
])
def test_reshape_special_values(src, target, reverse, want):
    x = np.arange(np.prod(src), dtype=np.float32).reshape(src)
    check_forward(OPS["reshape"], {"shape": target, "reverse": reverse}, [x], x.reshape(want))


@pytest.mark.parametrize("src, target", [
    ((2, 3, 4), [5, -1]),
    ((2, 3, 4), [-1, -1]),
    ((2, 3, 4), [7]),
    ((2, 3, 4), [-4, 3, -1, -2]),
    ((2, 3, 4), [0, 0, 0, 0]),
    ((2, 3, 4), [-3, -3]),
    ((2, 3, 4), [-5]),
])
def test_reshape_rejects(src, target):
    op = OPS["reshape"]
    with pytest.raises(MXNetError):
        op.infer(op.parse_attrs({"shape": target}), Spec(src, "float32"))


@pytest.mark.parametrize("axes", [[], [0, 1, 2], [1, 0, 2], [2, 0, 1], [-1, 0, 1]], ids=str)
def test_transpose(axes):
    rng = np.random.default_rng(4)
    x = rng.standard_normal(X3)
    check_forward(OPS["transpose"], {"axes": axes}, [x], np.transpose(x, axes or None))
    check_grads(OPS["transpose"], {"axes": axes}, [x], rng)


@pytest.mark.parametrize("axes", [[0, 1], [0, 0, 1], [0, 1, 3], [0, 1, 5], [0, 1, -4], [0, 1, 2, 3]], ids=str)
def test_transpose_rejects_non_permutations(axes):
    op = OPS["transpose"]
    with pytest.raises(MXNetError):
        op.infer(op.parse_attrs({"axes": axes}), Spec(X3, "float32"))


@pytest.mark.parametrize("src, shape, want", [
    ((3, 1), [2, 3, 4], (2, 3, 4)),
    ((1,), [5], (5,)),
    ((4,), [2, 3, 4], (2, 3, 4)),
    ((2, 1, 4), [0, 3, 0], (2, 3, 4)),  # MXNet: 0 keeps the input's dimension
    ((2, 3), [2, 3], (2, 3)),
])
def test_broadcast_to(src, shape, want):
    rng = np.random.default_rng(5)
    x = rng.standard_normal(src)
    check_forward(OPS["broadcast_to"], {"shape": shape}, [x], np.broadcast_to(x, want))
    check_grads(OPS["broadcast_to"], {"shape": shape}, [x], rng)


@pytest.mark.parametrize("src, shape", [((2, 3), [3, 3]), ((2, 3), [3]), ((2, 3), [2, 1])])
def test_broadcast_to_rejects(src, shape):
    op = OPS["broadcast_to"]
    with pytest.raises(MXNetError):
        op.infer(op.parse_attrs({"shape": shape}), Spec(src, "float32"))


@pytest.mark.parametrize("src, shape, axes", [
    ((2, 3, 4), [3, 1], (0, 2)),
    ((2, 3, 4), [1, 1, 4], (0, 1)),
    ((2, 3, 4), [4], (0, 1)),
    ((2, 3, 4), [1], (0, 1, 2)),
    ((2, 3, 4), [2, 3, 4], ()),
    ((2, 1, 4), [1, 4], (0,)),
])
def test_sum_to(src, shape, axes):
    rng = np.random.default_rng(6)
    x = rng.standard_normal(src)
    check_forward(OPS["sum_to"], {"shape": shape}, [x], x.sum(axis=axes).reshape(shape))
    check_grads(OPS["sum_to"], {"shape": shape}, [x], rng)


@pytest.mark.parametrize("src, shape", [((2, 3), [4, 3]), ((1, 3), [4, 3]), ((3,), [2, 3]), ((2, 3), [2])])
def test_sum_to_rejects_shapes_the_input_does_not_broadcast_from(src, shape):
    op = OPS["sum_to"]
    with pytest.raises(MXNetError):
        op.infer(op.parse_attrs({"shape": shape}), Spec(src, "float32"))


@pytest.mark.parametrize("axis", [0, 1, 3, -1, -4])
def test_expand_dims(axis):
    x = np.random.default_rng(7).standard_normal(X3)
    check_forward(OPS["expand_dims"], {"axis": axis}, [x], np.expand_dims(x, axis))


# --------------------------------------------------------------------------
# dot


@pytest.mark.parametrize("sa, sb, ta, tb, want", [
    ((3,), (3,), False, False, (1,)),
    ((2, 3), (3,), False, False, (2,)),
    ((3,), (3, 4), False, False, (4,)),
    ((2, 3), (3, 4), False, False, (2, 4)),
    ((3, 2), (3, 4), True, False, (2, 4)),
    ((2, 3), (4, 3), False, True, (2, 4)),
    ((3, 2), (4, 3), True, True, (2, 4)),
    ((3,), (3,), True, True, (1,)),
    ((2, 3), (5, 4, 3), False, True, (2, 4, 5)),
    ((2, 3, 4), (4, 5), False, False, (2, 3, 5)),
    ((2, 3, 4), (4, 5, 6), False, False, (2, 3, 5, 6)),
    ((4,), (4, 2, 3), False, False, (2, 3)),
    ((4, 3, 2), (4, 5), True, False, (2, 3, 5)),
    ((2, 3, 4), (5, 4), False, True, (2, 3, 5)),
])
def test_dot(sa, sb, ta, tb, want):
    rng = np.random.default_rng(8)
    a, b = rng.standard_normal(sa), rng.standard_normal(sb)
    at = {"transpose_a": ta, "transpose_b": tb}
    ref = mx1d(np.tensordot(a.T if ta else a, b.T if tb else b, axes=1))
    assert ref.shape == want
    check_forward(OPS["dot"], at, [a, b], ref)
    check_forward(OPS["dot"], at, [a.astype(np.float32), b.astype(np.float32)], ref)
    check_grads(OPS["dot"], at, [a, b], rng)


@pytest.mark.parametrize("sa, sb, ta, tb", [((2, 3), (2, 3), False, False), ((3, 2), (3, 4), False, False),
                                            ((2, 3), (3, 4), True, False), ((2, 3), (3, 4), False, True)])
def test_dot_rejects_unaligned(sa, sb, ta, tb):
    op = OPS["dot"]
    with pytest.raises(MXNetError, match="aligned"):
        op.infer(op.parse_attrs({"transpose_a": ta, "transpose_b": tb}), Spec(sa, "float32"), Spec(sb, "float32"))


# --------------------------------------------------------------------------
# creation


@pytest.mark.parametrize("name, at, want", [
    ("zeros", {"shape": [2, 0, 3], "dtype": "int32"}, np.zeros((2, 0, 3), np.int32)),
    ("ones", {"shape": [3], "dtype": "bool"}, np.ones(3, bool)),
    ("full", {"shape": 2, "val": -1.5, "dtype": "float64"}, np.full(2, -1.5)),
    ("full", {"shape": [2, 2], "val": 7, "dtype": "uint8"}, np.full((2, 2), 7, np.uint8)),
    ("arange", {"start": 5}, np.arange(5, dtype=np.float32)),
    ("arange", {"start": 5, "stop": 1, "step": -1.5}, np.arange(5, 1, -1.5, dtype=np.float32)),
    ("arange", {"start": 0, "stop": 1, "step": 0.1, "dtype": "float64"}, np.arange(0, 1, 0.1)),
    ("arange", {"start": 3, "stop": 1}, np.zeros(0, np.float32)),
    ("arange", {"start": 0, "stop": 6, "step": 2, "dtype": "int32"}, np.array([0, 2, 4], np.int32)),
    ("array", {"value": np.arange(4, dtype=np.int64), "dtype": "float64"}, np.arange(4.0)),
    ("array", {"value": {"dtype": "int8", "shape": [2], "data": [1, -2]}}, np.array([1, -2], np.int8)),
])
def test_creation(name, at, want):
    check_forward(OPS[name], at, [], want)


@pytest.mark.parametrize("name", ["random_normal", "random_uniform"])
def test_random_ops(name):
    op, case = OPS[name], CASES[name]

    def draw(seed, **extra):
        at = op.parse_attrs({**case.at, **extra})
        y = op.forward(Context(seed), at)
        assert op.infer(at) == (y.shape, y.dtype.name)
        return y

    y = draw(42)
    assert (y.shape, y.dtype) == ((3, 4), np.float32)
    assert np.array_equal(y, draw(42)), "same seed, same draws"
    assert not np.array_equal(y, draw(43))
    assert draw(0, dtype="float64").dtype == np.float64
    assert draw(0, shape=[5]).shape == (5,)
    assert op.infer(op.parse_attrs({})) == ((1,), "float32")
    big = draw(1, shape=[20000], dtype="float64")
    if name == "random_uniform":
        assert big.min() >= -1.0 and big.max() < 2.0
        assert abs(big.mean() - 0.5) < 0.05
    else:
        assert abs(big.mean()) < 0.05 and abs(big.std() - 1.0) < 0.05
        shifted = draw(1, shape=[20000], dtype="float64", loc=3.0, scale=0.5)
        np.testing.assert_allclose(shifted, 3.0 + 0.5 * big)


def test_random_ops_continue_one_stream():
    """Two draws from one context differ; the pair repeats with the seed."""
    op = OPS["random_uniform"]
    at = op.parse_attrs({"shape": [4]})
    cx1, cx2 = Context(7), Context(7)
    a1, b1 = op.forward(cx1, at), op.forward(cx1, at)
    a2, b2 = op.forward(cx2, at), op.forward(cx2, at)
    assert not np.array_equal(a1, b1)
    assert np.array_equal(a1, a2) and np.array_equal(b1, b2)


# --------------------------------------------------------------------------
# a whole backward pass through a Session


class Batches:
    """A Session fed one batch at a time, failing on any error reply."""

    def __init__(self) -> None:
        self.s = Session("t", seed=0)
        self.seq = 0

    def __call__(self, *ops: dict) -> list[np.ndarray]:
        self.seq += 1
        reply = self.s.run_batch({"seq": self.seq, "ops": list(ops)})
        assert "error" not in reply, reply.get("error")
        return reply["values"]


def graph(x: int, w: int, base: int, mode: int) -> list[dict]:
    """f(x, w) = sum(x * x + tanh(x) * w) / 2, as instructions: x fans out three times."""
    h = base
    return [
        {"op": "mul", "in": [x, x], "out": [h + 1], "mode": mode},
        {"op": "tanh", "in": [x], "out": [h + 2], "mode": mode},
        {"op": "mul", "in": [h + 2, w], "out": [h + 3], "mode": mode},
        {"op": "add", "in": [h + 1, h + 3], "out": [h + 4], "mode": mode},
        {"op": "sum", "in": [h + 4], "out": [h + 5], "mode": mode},
        {"op": "mul_scalar", "in": [h + 5], "out": [h + 6], "at": {"scalar": 0.5}, "mode": mode},
    ]


def session_f(x: np.ndarray, w: np.ndarray) -> float:
    run = Batches()
    (y,) = run(
        {"op": "array", "in": [], "out": [1], "at": {"value": x}},
        {"op": "array", "in": [], "out": [2], "at": {"value": w}},
        *graph(1, 2, 10, mode=0),
        {"op": "read", "in": [16]},
    )
    assert y.shape == (1,)
    return float(y[0])


def numeric_grad(f: Callable[[np.ndarray], float], x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    out = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = eps
        out[i] = (f(x + e) - f(x - e)) / (2 * eps)
    return out


def test_session_backward_fan_out_and_grad_req_add():
    rng = np.random.default_rng(9)
    x, w = rng.uniform(-1, 1, (2, 3)), rng.uniform(-1, 1, (2, 3))
    run = Batches()
    run(
        {"op": "array", "in": [], "out": [1], "at": {"value": x}},
        {"op": "array", "in": [], "out": [2], "at": {"value": w}},
        {"op": "attach_grad", "in": [1]},  # grad_req "write"
        {"op": "attach_grad", "in": [2], "at": {"grad_req": "add"}},
    )
    read_grads = {"op": "read", "in": [1, 2], "at": {"grad": True}}
    gx, gw = run(*graph(1, 2, 10, mode=1), {"op": "backward", "in": [16]}, read_grads)

    want_gx = numeric_grad(lambda v: session_f(v, w), x)
    want_gw = numeric_grad(lambda v: session_f(x, v), w)
    np.testing.assert_allclose(gx, want_gx, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gw, want_gw, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gx, x + 0.5 * (1 - np.tanh(x) ** 2) * w, rtol=1e-12)  # and by hand

    # record the same graph again: "write" overwrites, "add" accumulates
    gx2, gw2 = run(*graph(1, 2, 20, mode=1), {"op": "backward", "in": [26]}, read_grads)
    np.testing.assert_allclose(gx2, gx, rtol=1e-12)
    np.testing.assert_allclose(gw2, 2 * gw, rtol=1e-12)

    # the graph is freed after backward
    reply = run.s.run_batch({"seq": run.seq + 1, "ops": [{"op": "backward", "in": [26]}]})
    assert reply["error"]["kind"] == "AutogradError"


def test_session_backward_with_head_grads():
    """backward(y, head_grads=h) gives the VJP of h; unrecorded ops stay out of the graph."""
    rng = np.random.default_rng(10)
    x, hg = rng.uniform(0.5, 2, (3,)), rng.standard_normal(3)
    run = Batches()
    (gx,) = run(
        {"op": "array", "in": [], "out": [1], "at": {"value": x}},
        {"op": "array", "in": [], "out": [2], "at": {"value": hg}},
        {"op": "attach_grad", "in": [1]},
        {"op": "log", "in": [1], "out": [3], "mode": 1},
        {"op": "exp", "in": [1], "out": [4], "mode": 0},  # not recorded
        {"op": "mul", "in": [3, 4], "out": [5], "mode": 1},  # log(x) * const
        {"op": "backward", "in": [5], "at": {"head_grads": [2]}},
        {"op": "read", "in": [1], "at": {"grad": True}},
    )
    np.testing.assert_allclose(gx, hg * np.exp(x) / x, rtol=1e-12)
