"""The ops: one stanza each (inputs, attributes, inference, forward, VJP).

Forward functions take ``(cx, at, *xs)``: ``cx`` gives the array module
(``cx.xp``), the session's random generator (``cx.rng``) and the training
flag; ``at`` holds the parsed attributes. VJPs take ``(F, at, g, y, *xs)`` and
return one cotangent per input (``None`` for none); ``F`` calls ops of this
same table, so the backward pass can itself be recorded.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Final

import numpy as np

from . import kernels
from .errors import BooleanIndexError, DTypeError, IndexOutOfRange, InvalidInput, ShapeError, echo
from .optable import DEFAULT_DTYPE, FLOAT_DTYPES, MAX_NDIM, REQUIRED, ZERO_VJPS, Attr, Spec, defop, like_infer, prod
from .tape import Deferred, Patch

# --------------------------------------------------------------------------
# inference helpers


def broadcast_shapes(name: str, a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    """numpy's broadcasting of two shapes (``np.broadcast_shapes`` builds arrays to find it: 6 us)."""
    if a == b:
        return a
    if len(a) != len(b):
        if len(a) < len(b):
            a = (1,) * (len(b) - len(a)) + tuple(a)
        else:
            b = (1,) * (len(a) - len(b)) + tuple(b)
    out = []
    for x, y in zip(a, b):
        if x == y or y == 1:
            out.append(x)
        elif x == 1:
            out.append(y)
        else:
            raise ShapeError(f"{name}: operands could not be broadcast together with shapes {a} {b}")
    return tuple(out)


def same_dtype(name: str, *specs: Spec) -> str:
    dt = specs[0].dtype
    for s in specs[1:]:
        if s.dtype != dt:
            raise DTypeError(f"{name}: inputs must have the same dtype, got " + " and ".join(s.dtype for s in specs))
    return dt


def norm_axes(name: str, axis: tuple[int, ...] | int | None, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, int):  # VJPs call ops with unparsed attributes
        axis = (axis,)
    out = []
    for a in axis:
        if not -ndim <= a < max(ndim, 1):
            raise ShapeError(f"{name}: axis {a} is out of range for an array of rank {ndim}")
        out.append(a % ndim if ndim else 0)
    if len(set(out)) != len(out):
        raise ShapeError(f"{name}: repeated axis in {axis}")
    return tuple(sorted(out))


def at_least_1d(shape: tuple[int, ...]) -> tuple[int, ...]:
    """MXNet's legacy arrays have no rank 0 results: a full reduction is (1,)."""
    return shape if shape else (1,)


def cast(r: Any, dtype: Any) -> Any:
    if type(r) is not np.ndarray:
        r = np.asarray(r)  # ufuncs on rank-0 arrays give numpy scalars, not arrays
    return r if r.dtype == dtype else r.astype(dtype)


def int_cast(r: Any, dt: np.dtype) -> np.ndarray:
    """A float result in the integer dtype ``dt`` as MXNet's C cast gives it (on x86): truncated
    toward zero; NaN, infinities and values past int32's range (int64's for int64) that type's
    minimum; a 1-byte type the int32's low byte (uint8's exp(20) is 139: 485165195 mod 256).
    numpy leaves the cast of those undefined, so they are replaced before it."""
    lim = 2.0**63 if dt.itemsize == 8 else 2.0**31
    r = np.asarray(r)
    with np.errstate(invalid="ignore"):
        fits = (r >= -lim) & (r < lim)  # (false for NaN)
    r = np.where(fits, r, -lim).astype(np.int64 if dt.itemsize == 8 else np.int32)
    return r if r.dtype == dt else r.astype(dt)


def unbroadcast(F: Any, g: Any, shape: tuple[int, ...]) -> Any:
    """Sum a broadcast cotangent back down to an input's shape."""
    return g if tuple(g.shape) == shape else F.sum_to(g, shape=shape)


def sum_to(g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``unbroadcast`` on plain arrays, for eager VJPs (the ``sum_to`` op's forward)."""
    if g.shape == shape:
        return g if type(g) is np.ndarray else np.asarray(g)  # numpy gives scalars for rank-0 arithmetic
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(i + lead for i, d in enumerate(shape) if d == 1 and g.shape[i + lead] != 1)
    # the ufunc's reduce itself: np.sum reaches it through Python-level dispatch (2 us a call)
    return np.add.reduce(g, axis=axes, keepdims=True, dtype=g.dtype).reshape(shape)


def floats_only(vjp: Any) -> Any:
    """An eager VJP for float arrays; integer ones take the table's VJP (MXNet's integer rules)."""

    def call(at, g, y, *xs):
        return vjp(at, g, y, *xs) if g.dtype.kind == "f" else None

    return call


def check_shape(name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    if any(d < 0 for d in shape):
        raise ShapeError(f"{name}: negative dimension in shape {shape}")
    if len(shape) > MAX_NDIM:
        raise ShapeError(f"{name}: rank {len(shape)} is over the limit of {MAX_NDIM}")
    if 0 in shape and _axes_product(shape) >= 1 << 60:  # (empty, but numpy refuses it; a full one: the quotas)
        raise ShapeError(f"{name}: shape {shape} is too large for an array, even an empty one")
    return shape


def _axes_product(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        if d:
            n *= d
    return n


# --------------------------------------------------------------------------
# creation

DT = Attr("dtype", "dtype", None)


def _creation_infer(at: dict, *_: Spec) -> Spec:
    return Spec(check_shape("creation", at["shape"]), at["dtype"] or DEFAULT_DTYPE)


def _array_infer(at: dict) -> Spec:
    v = at["value"]
    if not isinstance(v, np.ndarray):
        raise InvalidInput("array: 'value' must be a tensor")
    return Spec(tuple(v.shape), at["dtype"] or v.dtype.name)


@defop("array", (), (Attr("value", "tensor", REQUIRED), DT), infer=_array_infer)
def _array(cx, at):
    """An array from data sent by the client (decoded into memory of its own)."""
    v = at["value"]
    return cx.xp.asarray(v, dtype=at["dtype"] or v.dtype)


SHAPE = Attr("shape", "shape", REQUIRED)


@defop("zeros", (), (SHAPE, DT), infer=_creation_infer)
def _zeros(cx, at):
    """An array of zeros."""
    return cx.xp.zeros(at["shape"], at["dtype"] or DEFAULT_DTYPE)


@defop("ones", (), (SHAPE, DT), infer=_creation_infer)
def _ones(cx, at):
    """An array of ones."""
    return cx.xp.ones(at["shape"], at["dtype"] or DEFAULT_DTYPE)


@defop("full", (), (SHAPE, Attr("val", "float", REQUIRED), DT), infer=_creation_infer)
def _full(cx, at):
    """An array filled with ``val``."""
    return cx.xp.full(at["shape"], at["val"], at["dtype"] or DEFAULT_DTYPE)


def _arange_len(at: dict) -> int:
    start, stop, step = at["start"], at["stop"], at["step"]
    if stop is None:
        start, stop = 0.0, start
    if not all(math.isfinite(v) for v in (start, stop, step)):
        raise InvalidInput(f"arange: start, stop and step must be finite, got {start}, {stop}, {step}")
    if step == 0:
        raise InvalidInput("arange: step must not be 0")
    n = int(np.ceil((stop - start) / step))
    return max(n, 0) * at["repeat"]


def _arange_infer(at: dict) -> Spec:
    if at["repeat"] < 1:
        raise InvalidInput("arange: repeat must be at least 1")
    return Spec((_arange_len(at),), at["dtype"] or DEFAULT_DTYPE)


@defop(
    "arange",
    (),
    (
        Attr("start", "float", REQUIRED),
        Attr("stop", "float", None),
        Attr("step", "float", 1.0),
        Attr("repeat", "int", 1),
        DT,
    ),
    infer=_arange_infer,
    # (at most: integers count in int64, and a repeated result is made once before it repeats)
    scratch=lambda at: (8 + np.dtype(at["dtype"] or DEFAULT_DTYPE).itemsize) * (_arange_len(at) // at["repeat"]),
)
def _arange(cx, at):
    """Evenly spaced values in [start, stop), each repeated ``repeat`` times."""
    start, stop = at["start"], at["stop"]
    if stop is None:
        start, stop = 0.0, start
    n = _arange_len(at) // at["repeat"]
    dt = np.dtype(at["dtype"] or DEFAULT_DTYPE)
    # start + i * step in the dtype, as MXNet's (0.1 * 9 is 0.90000004); float16 in float32,
    # rounded once (MXNet's float16 arange gives zeros); integers in int64, start and step
    # truncated first, as MXNet's (a step of 0.5 is 0)
    wide = dt if dt.kind == "f" and dt.itemsize >= 4 else np.dtype(np.float32 if dt.kind == "f" else np.int64)
    r = cx.xp.arange(n, dtype=wide)
    r *= wide.type(at["step"])
    r += wide.type(start)
    r = r.astype(dt, copy=False)
    if at["repeat"] > 1:
        r = cx.xp.repeat(r, at["repeat"])
    return r


def draw_dtype(name: str, at: dict) -> str:
    """A sampler's dtype: float32 unless ``dtype`` says, and a float one (MXNet's draws are)."""
    dt = at["dtype"] or DEFAULT_DTYPE
    if dt not in FLOAT_DTYPES:
        raise InvalidInput(f"{name}: dtype must be one of {', '.join(FLOAT_DTYPES)}, got {dt}")
    return dt


def _random_infer(at: dict, name: str) -> Spec:
    return Spec(check_shape(name, at["shape"]), draw_dtype(name, at))


def _normal_infer(at: dict) -> Spec:
    if not (0.0 < at["scale"] < float("inf")) or not abs(at["loc"]) < float("inf"):  # (NaN fails too)
        loc, scale = at["loc"], at["scale"]
        raise InvalidInput(f"random_normal: scale must be positive, loc and scale finite, got {loc}, {scale}")
    return _random_infer(at, "random_normal")


def _uniform_infer(at: dict) -> Spec:
    low, high = at["low"], at["high"]
    if not (abs(low) < float("inf") and abs(high) < float("inf") and low <= high):
        raise InvalidInput(f"random_uniform: low and high must be finite, with low <= high, got {low}, {high}")
    return _random_infer(at, "random_uniform")


@defop(
    "random_normal",
    (),
    (Attr("loc", "float", 0.0), Attr("scale", "float", 1.0), Attr("shape", "shape", (1,)), DT),
    infer=_normal_infer,
    random=True,
    aliases=("normal",),
)
def _random_normal(cx, at):
    """Normal draws from the session's own generator."""
    r = cx.rng.normal(at["loc"], at["scale"], at["shape"])
    return r.astype(at["dtype"] or DEFAULT_DTYPE)


@defop(
    "random_uniform",
    (),
    (Attr("low", "float", 0.0), Attr("high", "float", 1.0), Attr("shape", "shape", (1,)), DT),
    infer=_uniform_infer,
    random=True,
    aliases=("uniform",),
)
def _random_uniform(cx, at):
    """Uniform draws in [low, high) from the session's own generator."""
    r = cx.rng.uniform(at["low"], at["high"], at["shape"])
    return r.astype(at["dtype"] or DEFAULT_DTYPE)


def _filled_like_infer(name: str) -> Any:
    def infer(at: dict, x: Spec) -> Spec:
        dt = at["dtype"]
        if dt is not None and dt != x.dtype:  # (MXNet 1.9.1 takes dtype and gives x's all the same)
            raise DTypeError(f"{name}: the result has the data's dtype {x.dtype}, not {dt}: use zeros or ones")
        return x

    return infer


# ``dtype``: MXNet's generated functions take it (and keep the data's): taken where it is the data's
@defop("zeros_like", ("data",), (DT,), infer=_filled_like_infer("zeros_like"), vjp=lambda F, at, g, y, x: (None,))
def _zeros_like(cx, at, x):
    """Zeros of ``x``'s shape and dtype."""
    return cx.xp.zeros_like(x)


@defop("ones_like", ("data",), (DT,), infer=_filled_like_infer("ones_like"), vjp=lambda F, at, g, y, x: (None,))
def _ones_like(cx, at, x):
    """Ones of ``x``'s shape and dtype."""
    return cx.xp.ones_like(x)


# --------------------------------------------------------------------------
# elementwise: unary


def no_bool_arithmetic(name: str) -> DTypeError:
    """The refusal of arithmetic on a bool array: MXNet's NDArrays refuse it (numpy's message
    for some, a bool result for others, would be neither MXNet's nor clear)."""
    return DTypeError(f"{name}: bool arrays take no arithmetic, as MXNet's NDArrays (cast them with astype first)")


_BOOL_UNARY = ("copy", "logical_not")  # (the unary ops a bool array takes)


def _unary(
    name: str,
    fwd: Any,
    vjp: Any,
    doc: str,
    aliases: tuple[str, ...] = (),
    eager: Any = None,
    scratch: Any = None,
    vjp_scratch: Any = None,
    ints: str | None = "float64",
    half: bool = False,
) -> None:
    """An elementwise op of one array. ``ints``: the dtype MXNet computes an integer input in,
    cast back as its C cast does (``int_cast``); numpy would compute a 1-byte one in float16
    (uint8's tanh(7) was 1, its sigmoid(100) 0). None: ``fwd`` takes integers as they are (the
    exact integer ops, and the special functions, in float64 a chunk at a time). ``half``:
    float16 computed in float32 and rounded once, as MXNet's (numpy rounds each step of a
    composite: float16 sigmoid(2) was 0.8804, MXNet's 0.8809)."""
    arithmetic = name not in _BOOL_UNARY
    wide = np.dtype(ints) if ints else None

    def forward(cx, at, x):
        dt = x.dtype
        if dt.kind == "f":
            if half and dt.itemsize == 2:  # (float16)
                return cast(fwd(cx.xp, x.astype(np.float32)), dt)
            return cast(fwd(cx.xp, x), dt)
        if arithmetic and dt.kind == "b":
            raise no_bool_arithmetic(name)
        if wide is not None and dt.kind in "iu":
            return int_cast(fwd(cx.xp, x.astype(wide)), dt)
        return cast(fwd(cx.xp, x), dt)

    if scratch is None and wide is not None:
        scratch = _widened_bytes(wide)
    forward.__doc__ = doc
    defop(
        name,
        ("data",),
        infer=like_infer,
        no_bools=arithmetic,
        vjp=vjp,
        aliases=aliases,
        eager_vjp=eager,
        scratch=scratch,
        vjp_scratch=vjp_scratch,
    )(forward)


def _widened_bytes(wide: np.dtype, count: int = 3) -> Any:
    """The ``scratch`` of a unary op on an integer input computed in ``wide``: the input's copy,
    the result and a temporary of a composite (sigmoid's), ``count`` arrays of ``wide`` at once."""

    def hook(at: dict, x: Spec) -> int:
        return count * wide.itemsize * prod(x.shape) if np.dtype(x.dtype).kind in "iu" else 0

    return hook


def _zero_grad(F, at, g, y, x):
    return (F.zeros_like(g),)


ZERO_VJPS.add(_zero_grad)


_unary(
    "negative",
    lambda xp, x: -x,
    lambda F, at, g, y, x: (F.negative(g),),
    "-x.",
    eager=lambda at, g, y, x: (-g,),
    ints=None,
)
_unary(
    "copy",
    lambda xp, x: x.copy(),
    lambda F, at, g, y, x: (g,),
    "A copy of x.",
    ("identity",),
    eager=lambda at, g, y, x: (g,),
    ints=None,
)
_unary(
    "abs",
    lambda xp, x: xp.abs(x),
    lambda F, at, g, y, x: (F.mul(g, F.sign(x)),),
    "|x|.",
    eager=lambda at, g, y, x: (g * np.sign(x),),  # (integers in float64, as MXNet's: int64 past 2**53 rounds)
)


def sign_of(xp: Any, x: Any) -> Any:
    """-1, 0 or 1; 0 for NaN, as MXNet's (its test: > 0, < 0, else 0)."""
    s = xp.sign(x)
    if s.dtype.kind == "f":
        s[s != s] = 0
    return s


_unary(
    "sign",
    sign_of,
    lambda F, at, g, y, x: (F.mul_scalar(g, scalar=0.0),),  # (g * 0, MXNet's: -0 where g < 0)
    "The sign of x (-1, 0 or 1; 0 for NaN, as MXNet's); zero gradient.",
    ints=None,
)
_unary(
    "square",
    lambda xp, x: xp.square(x),
    lambda F, at, g, y, x: (F.mul(g, F.mul_scalar(x, scalar=2.0)),),
    "x squared.",
    eager=lambda at, g, y, x: (g * (x + x),),
    ints="float32",  # (MXNet's: int32 46341 squared is past int32, its minimum)
)
_unary(
    "sqrt",
    lambda xp, x: xp.sqrt(x),
    lambda F, at, g, y, x: (F.div(g, F.mul_scalar(y, scalar=2.0)),),
    "The square root of x.",
    eager=floats_only(lambda at, g, y, x: (g / (y + y),)),
)
_unary(
    "exp",
    lambda xp, x: xp.exp(x),
    lambda F, at, g, y, x: (F.mul(g, y),),
    "e to the x.",
    eager=lambda at, g, y, x: (g * y,),
)
_unary(
    "log",
    lambda xp, x: xp.log(x),
    lambda F, at, g, y, x: (F.div(g, x),),
    "The natural log of x.",
    eager=floats_only(lambda at, g, y, x: (g / x,)),
)
_unary(
    "tanh",
    lambda xp, x: xp.tanh(x),
    lambda F, at, g, y, x: (F.mul(g, F.rsub_scalar(F.square(y), scalar=1.0)),),
    "The hyperbolic tangent of x.",
    eager=floats_only(lambda at, g, y, x: (g * (1.0 - y * y),)),
)
_unary(
    "sigmoid",
    lambda xp, x: 1.0 / (1.0 + xp.exp(-x)),
    lambda F, at, g, y, x: (F.mul(g, F.mul(y, F.rsub_scalar(y, scalar=1.0))),),
    "The logistic sigmoid of x.",
    eager=floats_only(lambda at, g, y, x: (g * (y * (1.0 - y)),)),
    half=True,
)
_unary(
    "relu",
    lambda xp, x: xp.maximum(x, 0),
    lambda F, at, g, y, x: (F.mul(g, F.greater_scalar(x, scalar=0.0)),),
    "max(x, 0).",
    eager=lambda at, g, y, x: (kernels.relu_grad(g, x),),
    ints=None,
)


def _astype_infer(at: dict, x: Spec) -> Spec:
    return Spec(x.shape, at["dtype"])


@defop(
    "astype",
    ("data",),
    (Attr("dtype", "dtype", REQUIRED),),
    infer=_astype_infer,
    vjp=lambda F, at, g, y, x: (F.astype(g, dtype=x.dtype.name),),
    aliases=("cast", "Cast"),
)
def _astype(cx, at, x):
    """``x`` converted to ``dtype`` (a copy)."""
    return x.astype(at["dtype"])


# --------------------------------------------------------------------------
# elementwise: binary, broadcasting


def _binary_infer_for(name: str):
    def infer(at: dict, a: Spec, b: Spec) -> Spec:
        dt = same_dtype(name, a, b)
        if dt == "bool":
            raise no_bool_arithmetic(name)
        return Spec(broadcast_shapes(name, a.shape, b.shape), dt)

    return infer


def _same_shape_infer_for(name: str):
    broadcasting = _binary_infer_for(name)

    def infer(at: dict, a: Spec, b: Spec) -> Spec:
        if a.shape != b.shape:  # (MXNet's elemwise ops: its "+" is the broadcasting one)
            raise ShapeError(f"{name}: the arrays must have one shape, got {a.shape} and {b.shape}")
        return broadcasting(at, a, b)

    return infer


def _binary(
    name: str,
    fwd: Any,
    vjp: Any,
    doc: str,
    aliases: tuple[str, ...] = (),
    eager: Any = None,
    scratch: Any = None,
    vjp_scratch: Any = None,
    elemwise: str | None = None,
) -> None:
    """A broadcasting op of two arrays; ``elemwise``: the name of its twin that takes arrays of
    one shape only (MXNet's ``elemwise_add``...)."""

    def forward(cx, at, a, b):
        return cast(fwd(cx.xp, a, b), a.dtype)

    forward.__doc__ = doc

    def define(op_name: str, infer: Any, names: tuple[str, ...]) -> None:
        defop(
            op_name,
            ("lhs", "rhs"),
            infer=infer,
            vjp=vjp,
            aliases=names,
            eager_vjp=eager,
            scratch=scratch,
            vjp_scratch=vjp_scratch,
        )(forward)

    define(name, _binary_infer_for(name), aliases)
    if elemwise:
        define(elemwise, _same_shape_infer_for(elemwise), ())


def _in_float64_bytes(count: int, kinds: str) -> Any:
    """The ``vjp_scratch`` of a VJP that computes in float64 for inputs of these dtype kinds
    (MXNet's integer gradients; mod's quotient): ``count`` float64 arrays of the output's size
    at once, measured (a uint8 pow's backward held 19 x its graph, unchecked)."""

    def hook(at: dict, *xs: Spec) -> int:
        if np.dtype(xs[0].dtype).kind not in kinds or (xs[0].dtype == "float64" and "f" not in kinds):
            return 0
        shape = xs[0].shape if len(xs) == 1 else broadcast_shapes("backward", xs[0].shape, xs[1].shape)
        return count * 8 * prod(shape)

    return hook


def _int_div(xp, a, b):
    """Division with MXNet's integer rule: truncate toward zero."""
    if (a.dtype if hasattr(a, "dtype") else b.dtype).kind in "iu":  # one side may be a Python scalar
        with np.errstate(divide="ignore", invalid="ignore"):
            return xp.trunc(xp.true_divide(a, b))
    return xp.true_divide(a, b)


def _add_vjp(F, at, g, y, a, b):
    return unbroadcast(F, g, a.shape), unbroadcast(F, g, b.shape)


def _sub_vjp(F, at, g, y, a, b):
    return unbroadcast(F, g, a.shape), unbroadcast(F, F.negative(g), b.shape)


def _mul_vjp(F, at, g, y, a, b):
    return unbroadcast(F, F.mul(g, b), a.shape), unbroadcast(F, F.mul(g, a), b.shape)


def _in_float64(F, *xs: Any) -> list[Any]:
    """Integer arrays as float64: MXNet computes an integer op's gradient in floating point
    and truncates it (``_to_dtype``), where integer arithmetic would lose it (5 / 9 is 0)."""
    return [F.astype(x, dtype="float64") for x in xs]


def _to_dtype(F, dtype: Any, *xs: Any) -> tuple[Any, ...]:
    return tuple(F.astype(x, dtype=dtype.name) for x in xs)


def _div_vjp(F, at, g, y, a, b):
    if a.dtype.kind in "iu":  # -a / b**2 in floating point, truncated: MXNet's (it was 0)
        g64, a64, b64 = _in_float64(F, g, a, b)
        ga, gb = _to_dtype(F, a.dtype, F.div(g64, b64), F.negative(F.div(F.mul(g64, a64), F.square(b64))))
        return unbroadcast(F, ga, a.shape), unbroadcast(F, gb, b.shape)
    ga = F.div(g, b)
    return unbroadcast(F, ga, a.shape), unbroadcast(F, F.negative(F.mul(ga, y)), b.shape)


def _int_pow(xp, a, b):
    """a ** b; integers as MXNet computes them: in floating point, truncated (2 ** -1 is 0)."""
    if (a.dtype if hasattr(a, "dtype") else b.dtype).kind in "iu":
        with np.errstate(all="ignore"):
            return xp.trunc(xp.power(xp.asarray(a, dtype=np.float64), xp.asarray(b, dtype=np.float64)))
    return xp.power(a, b)


def _add_eager(at, g, y, a, b):
    return sum_to(g, a.shape), sum_to(g, b.shape)


def _sub_eager(at, g, y, a, b):
    return sum_to(g, a.shape), sum_to(-g, b.shape)


def _mul_eager(at, g, y, a, b):
    # lazy: a constant factor (data, a mask) gets no cotangent computed
    return (lambda: sum_to(g * b, a.shape)), (lambda: sum_to(g * a, b.shape))


@floats_only
def _div_eager(at, g, y, a, b):
    ga = g / b
    return sum_to(ga, a.shape), (lambda: sum_to(-(ga * y), b.shape))


def _pow_vjp(F, at, g, y, a, b):
    if a.dtype.kind in "iu":  # in floating point, truncated: MXNet's (125 * log 5 is 201, not 125 * 1)
        g64, a64, b64 = _in_float64(F, g, a, b)
        ga = F.mul(g64, F.mul(b64, F.pow(a64, F.sub_scalar(b64, scalar=1.0))))
        gb = F.mul(g64, F.mul(F.pow(a64, b64), F.log(a64)))
        ga, gb = _to_dtype(F, a.dtype, ga, gb)
        return unbroadcast(F, ga, a.shape), unbroadcast(F, gb, b.shape)
    ga = F.mul(g, F.mul(b, F.pow(a, F.sub_scalar(b, scalar=1.0))))
    gb = F.mul(g, F.mul(y, F.log(a)))
    return unbroadcast(F, ga, a.shape), unbroadcast(F, gb, b.shape)


def _mod(xp, a, b):
    """a mod b as MXNet computes it: in float64 whatever the dtype, with the divisor's sign
    (Python's ``%``), 0 where b is 0 (numpy gives NaN), and a zero result negative only where
    a and b are both negative (or a is -0 and b positive): numpy's zero takes b's sign."""
    a = xp.asarray(a, dtype=np.float64)
    b = xp.asarray(b, dtype=np.float64)
    with np.errstate(all="ignore"):
        r = xp.fmod(a, b)  # a's sign, |r| < |b|
        r = xp.where((r != 0) & ((r < 0) != (b < 0)), r + b, r)
        neg0 = ((a < 0) & (b < 0)) | ((a == 0) & xp.signbit(a) & (b > 0))
        return xp.where(b == 0, 0.0, xp.where((r == 0) & ~neg0, 0.0, r))


def _floor_quotient(F, a, b):
    """floor(a / b) in float64 (as MXNet's mod gradient computes it), in a's dtype."""
    if a.dtype.name == "float64":
        return F.floor(F.div(a, b))
    return _to_dtype(F, a.dtype, F.floor(F.div(*_in_float64(F, a, b))))[0]


def _mod_vjp(F, at, g, y, a, b):
    """d/da = 1, d/db = -floor(a / b); an integer mod has zero gradients (MXNet's)."""
    if a.dtype.kind != "f":
        return F.zeros_like(a), F.zeros_like(b)
    gb = F.negative(F.mul(g, _floor_quotient(F, a, b)))
    return unbroadcast(F, g, a.shape), unbroadcast(F, gb, b.shape)


def _minmax_vjp(pick_a: str):
    def vjp(F, at, g, y, a, b):
        ma = getattr(F, pick_a)(a, b)  # 1 where a is the one picked (ties go to a)
        mb = F.rsub_scalar(ma, scalar=1.0)
        return unbroadcast(F, F.mul(g, ma), a.shape), unbroadcast(F, F.mul(g, mb), b.shape)

    return vjp


_binary(
    "add",
    lambda xp, a, b: a + b,
    _add_vjp,
    "a + b, broadcasting.",
    ("broadcast_add", "broadcast_plus"),
    _add_eager,
    elemwise="elemwise_add",
)
_binary(
    "sub",
    lambda xp, a, b: a - b,
    _sub_vjp,
    "a - b, broadcasting.",
    ("broadcast_sub", "broadcast_minus", "subtract"),
    _sub_eager,
    elemwise="elemwise_sub",
)
_binary(
    "mul",
    lambda xp, a, b: a * b,
    _mul_vjp,
    "a * b, broadcasting.",
    ("broadcast_mul", "multiply"),
    _mul_eager,
    elemwise="elemwise_mul",
)
_binary(
    "div",
    _int_div,
    _div_vjp,
    "a / b, broadcasting (integers truncate).",
    ("broadcast_div", "divide", "true_divide"),
    _div_eager,
    scratch=_in_float64_bytes(2, "iu"),  # (integers: in float64, truncated)
    vjp_scratch=_in_float64_bytes(5, "iu"),
    elemwise="elemwise_div",
)
_binary(
    "pow",
    _int_pow,
    _pow_vjp,
    "a ** b, broadcasting.",
    ("broadcast_power", "power"),
    scratch=_in_float64_bytes(3, "iu"),  # (integers: in float64, truncated)
    vjp_scratch=_in_float64_bytes(6, "iu"),
)
_binary(
    "mod",
    _mod,
    _mod_vjp,
    "a mod b, broadcasting, with b's sign as Python's % (0 where b is 0, as MXNet).",
    ("broadcast_mod", "modulo"),
    scratch=_in_float64_bytes(6, "iuf"),  # (in float64 whatever the dtype, as MXNet's)
    vjp_scratch=_in_float64_bytes(4, "f"),
)
_binary(
    "maximum",
    lambda xp, a, b: xp.maximum(a, b),
    _minmax_vjp("greater_equal"),
    "The larger of a and b.",
    ("broadcast_maximum",),
)
_binary(
    "minimum",
    lambda xp, a, b: xp.minimum(a, b),
    _minmax_vjp("lesser_equal"),
    "The smaller of a and b.",
    ("broadcast_minimum",),
)


def _hypot_vjp(F, at, g, y, a, b):
    # d/da sqrt(a^2 + b^2) = a / y; 0 where y is (both 0: MXNet gives NaN there)
    over = F.div(g, F.add(y, F.astype(F.equal_scalar(y, scalar=0.0), dtype=y.dtype.name)))
    return unbroadcast(F, F.mul(over, a), a.shape), unbroadcast(F, F.mul(over, b), b.shape)


_binary(
    "broadcast_hypot",
    lambda xp, a, b: xp.hypot(a, b),
    _hypot_vjp,
    "sqrt(a ** 2 + b ** 2), broadcasting, without overflow in the squares.",
)

_COMPARE = {
    "equal": ("==", np.equal),
    "not_equal": ("!=", np.not_equal),
    "greater": (">", np.greater),
    "greater_equal": (">=", np.greater_equal),
    "lesser": ("<", np.less),
    "lesser_equal": ("<=", np.less_equal),
}


def _compare_forward(uf: Any) -> Any:
    """The forward of a comparison: its ufunc, called on the two operands."""

    def forward(xp, a, b):
        return uf(a, b)

    return forward


for _name, (_sym, _uf) in _COMPARE.items():
    _binary(
        _name,
        _compare_forward(_uf),
        lambda F, at, g, y, a, b: (None, None),
        f"1 where a {_sym} b, else 0, in the inputs' dtype.",
        (f"broadcast_{_name}",),
    )


# --------------------------------------------------------------------------
# elementwise with a scalar (MXNet casts the scalar to the array's dtype)

SCALAR = (Attr("scalar", "float", REQUIRED),)


_SCALARS: defaultdict[np.dtype, dict[float, np.ndarray]] = defaultdict(dict)


def typed_scalar(s: float, dt: np.dtype) -> Any:
    """``s`` as a scalar of dtype ``dt``, cast as C casts (MXNet casts a scalar operand to the
    array's dtype so): an integer type truncates, and NaN, infinities and values out of its
    range give what the machine gives (its minimum on x86), never an error."""
    if dt.kind in "iub":
        with np.errstate(invalid="ignore", over="ignore"):
            return np.array(s, np.float64).astype(dt)[()]
    with np.errstate(over="ignore"):  # past a float type's range: inf
        return dt.type(s)


def scalar_array(s: float, dt: np.dtype) -> Any:
    """``s`` as a read-only rank-0 array of the float dtype ``dt``, as a scalar op's operand.

    numpy gives ``x * s`` the dtype of ``x`` for a Python float by working out its promotion
    rules on every call; with ``s`` already cast to ``x``'s dtype the same product (the cast is
    the one numpy makes) takes half the time on small arrays. Cached per dtype and value; the
    signed zeros (equal as keys) and NaN (unequal to itself) are not cached."""
    cache = _SCALARS[dt]
    a = cache.get(s)
    if a is None:
        if s == 0.0 or s != s:
            return s
        with np.errstate(over="ignore"):  # a value past the dtype's range is inf, as in the op
            a = np.array(s, dt)
        a.flags.writeable = False
        if len(cache) >= 4096:
            cache.clear()
        cache[s] = a
    return a


def _scalar(
    name: str,
    fwd: Any,
    vjp: Any,
    doc: str,
    eager: Any = None,
    ufunc: Any = None,
    scratch: Any = None,
    vjp_scratch: Any = None,
) -> None:
    """A scalar op; ``ufunc(x, s)``, where given, is ``fwd`` for float arrays, called at once."""

    def forward(cx, at, x):
        dt = x.dtype
        if dt.kind == "f":  # a Python float keeps a float array's dtype
            s = at["scalar"]
            if cx.xp is np:
                s = scalar_array(s, dt)
                r = fwd(np, x, s) if ufunc is None else ufunc(x, s)
            else:
                r = fwd(cx.xp, x, s)
            return r if type(r) is np.ndarray and r.dtype is dt else cast(r, dt)  # builtin dtypes are singletons
        if dt.kind == "b":
            raise no_bool_arithmetic(name)
        # an integer array takes the scalar cast to its own dtype first, as MXNet does
        # (x * 2.5 on int32 multiplies by 2)
        return cast(fwd(cx.xp, x, typed_scalar(at["scalar"], dt)), dt)

    forward.__doc__ = doc
    defop(
        name,
        ("data",),
        SCALAR,
        infer=like_infer,
        no_bools=True,
        vjp=vjp,
        eager_vjp=eager,
        scratch=scratch,
        vjp_scratch=vjp_scratch,
    )(forward)


def _mul_scalar_eager(at, g, y, x):
    # a Python float keeps a float array's dtype (an integer one takes the table's VJP)
    dt = g.dtype
    return (g * scalar_array(at["scalar"], dt),) if dt.kind == "f" else None


def _div_scalar_eager(at, g, y, x):
    dt = g.dtype
    return (g / scalar_array(at["scalar"], dt),) if dt.kind == "f" else None


_scalar(
    "add_scalar", lambda xp, x, s: x + s, lambda F, at, g, y, x: (g,), "x + scalar.", lambda at, g, y, x: (g,), np.add
)
_scalar(
    "sub_scalar",
    lambda xp, x, s: x - s,
    lambda F, at, g, y, x: (g,),
    "x - scalar.",
    lambda at, g, y, x: (g,),
    np.subtract,
)
_scalar(
    "rsub_scalar",
    lambda xp, x, s: s - x,
    lambda F, at, g, y, x: (F.negative(g),),
    "scalar - x.",
    lambda at, g, y, x: (-g,),
)
_scalar(
    "mul_scalar",
    lambda xp, x, s: x * s,
    lambda F, at, g, y, x: (F.mul_scalar(g, scalar=at["scalar"]),),
    "x * scalar.",
    _mul_scalar_eager,
    np.multiply,
)
_scalar(
    "div_scalar",
    lambda xp, x, s: _int_div(xp, x, s),
    lambda F, at, g, y, x: (F.div_scalar(g, scalar=at["scalar"]),),
    "x / scalar.",
    _div_scalar_eager,
    np.true_divide,
    scratch=_in_float64_bytes(3, "iu"),  # (integers: in float64, truncated; their VJPs too)
    vjp_scratch=_in_float64_bytes(3, "iu"),
)
_scalar(
    "rdiv_scalar",
    lambda xp, x, s: _int_div(xp, s, x),
    lambda F, at, g, y, x: (F.negative(F.div(F.mul(g, y), x)),),
    "scalar / x.",
    scratch=_in_float64_bytes(3, "iu"),
    vjp_scratch=_in_float64_bytes(3, "iu"),
)
_scalar(
    "pow_scalar",
    lambda xp, x, s: _int_pow(xp, x, s),
    lambda F, at, g, y, x: (F.mul(g, F.mul_scalar(F.pow_scalar(x, scalar=at["scalar"] - 1.0), scalar=at["scalar"])),),
    "x ** scalar.",
    scratch=_in_float64_bytes(3, "iu"),
    vjp_scratch=_in_float64_bytes(3, "iu"),
)
_scalar(
    "rpow_scalar",
    lambda xp, x, s: _int_pow(xp, s, x),
    lambda F, at, g, y, x: (
        _to_dtype(F, x.dtype, F.mul_scalar(F.mul(*_in_float64(F, g, y)), scalar=float(np.log(at["scalar"]))))
        if x.dtype.kind in "iu"  # (log 3 as an integer was 1: MXNet's is in floating point, truncated)
        else (F.mul_scalar(F.mul(g, y), scalar=float(np.log(at["scalar"]))),)
    ),
    "scalar ** x.",
    scratch=_in_float64_bytes(3, "iu"),
    vjp_scratch=_in_float64_bytes(3, "iu"),
)


def _mod_scalar_vjp(F, at, g, y, x):
    return (g if x.dtype.kind == "f" else F.zeros_like(x),)


def _rmod_scalar_vjp(F, at, g, y, x):
    """d/dx (s mod x) = -floor(s / x), in float64 with s cast to x's dtype (MXNet's)."""
    dt = x.dtype
    if dt.kind != "f":
        return (F.zeros_like(x),)
    s = float(typed_scalar(at["scalar"], dt))
    if dt.name == "float64":
        q = F.floor(F.rdiv_scalar(x, scalar=s))
    else:
        (q,) = _to_dtype(F, dt, F.floor(F.rdiv_scalar(*_in_float64(F, x), scalar=s)))
    return (F.negative(F.mul(g, q)),)


_scalar(
    "mod_scalar",
    _mod,
    _mod_scalar_vjp,
    "x mod scalar (the scalar's sign, as Python's %; 0 for 0).",
    scratch=_in_float64_bytes(5, "iuf"),  # (in float64 whatever the dtype, as MXNet's)
)
_scalar(
    "rmod_scalar",
    lambda xp, x, s: _mod(xp, s, x),
    _rmod_scalar_vjp,
    "scalar mod x (x's sign; 0 where x is 0).",
    scratch=_in_float64_bytes(5, "iuf"),
    vjp_scratch=_in_float64_bytes(3, "f"),
)
_scalar(
    "maximum_scalar",
    lambda xp, x, s: xp.maximum(x, s),
    lambda F, at, g, y, x: (F.mul(g, F.greater_equal_scalar(x, scalar=at["scalar"])),),
    "max(x, scalar).",
)
_scalar(
    "minimum_scalar",
    lambda xp, x, s: xp.minimum(x, s),
    lambda F, at, g, y, x: (F.mul(g, F.lesser_equal_scalar(x, scalar=at["scalar"])),),
    "min(x, scalar).",
)
for _name, (_sym, _uf) in _COMPARE.items():
    _scalar(
        f"{_name}_scalar",
        _compare_forward(_uf),
        lambda F, at, g, y, x: (None,),
        f"1 where x {_sym} scalar, else 0, in x's dtype.",
    )


# --------------------------------------------------------------------------
# reductions

AXIS = Attr("axis", "axis", None)
REDUCE_AXIS = Attr("axis", "reduce_axis", None)  # (an empty list is all axes too, as MXNet's reductions)
KEEPDIMS = Attr("keepdims", "bool", False)
EXCLUDE = Attr("exclude", "bool", False)


def reduce_axes(name: str, at: dict, ndim: int) -> tuple[int, ...]:
    """The axes a reduction runs over: ``axis`` (all when None), or with ``exclude`` every
    axis but those (MXNet's reductions; without ``axis`` it reduces all the same)."""
    axes = norm_axes(name, at["axis"], ndim)
    if at.get("exclude") and at["axis"] is not None:
        return tuple(i for i in range(ndim) if i not in axes)
    return axes


def _reduced_shape(name: str, at: dict, shape: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    axes = reduce_axes(name, at, len(shape))
    if at["keepdims"]:
        out = tuple(1 if i in axes else d for i, d in enumerate(shape))
    else:
        out = tuple(d for i, d in enumerate(shape) if i not in axes)
    return axes, at_least_1d(out)


_NO_IDENTITY = ("max", "min")  # reductions with no value for an empty axis


def _reduce_infer_for(name: str):
    def infer(at: dict, x: Spec) -> Spec:
        axes, shape = _reduced_shape(name, at, x.shape)
        if name in _NO_IDENTITY and any(x.shape[a] == 0 for a in axes):
            raise ShapeError(f"{name}: cannot reduce an axis of length 0 (shape {x.shape})")
        return Spec(shape, x.dtype)

    return infer


def _kept(name: str, at: dict, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The output shape with reduced axes kept as 1, for broadcasting back."""
    axes = reduce_axes(name, at, len(shape))
    return tuple(1 if i in axes else d for i, d in enumerate(shape))


def _spread(F, name: str, at: dict, g: Any, x: Any) -> Any:
    """A reduction's cotangent, broadcast back to the input's shape."""
    kept = _kept(name, at, tuple(x.shape))
    return F.broadcast_to(F.reshape(g, shape=kept), shape=tuple(x.shape))


def _spread_np(name: str, at: dict, g: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``_spread`` on plain arrays: a new array of the input's shape."""
    out = np.empty_like(x, dtype=g.dtype)
    out[...] = g.reshape(_kept(name, at, x.shape))
    return out


def _reduction(
    name: str,
    fwd: Any,
    vjp: Any,
    doc: str,
    extra: tuple[Attr, ...] = (),
    eager: Any = None,
    aliases: tuple[str, ...] = (),
    first: tuple[Attr, ...] = (),
    check: Any = None,
    scratch: Any = None,
    vjp_scratch: Any = None,
    middle: tuple[Attr, ...] = (),
) -> None:
    """A reduction over ``axis``; its attributes ``first``, axis, ``middle``, keepdims, ``extra``
    (the order of MXNet's positional arguments); ``check(at, x)`` refuses attributes before it runs;
    ``scratch``, ``vjp_scratch``: the op table's hooks of its working arrays."""
    infer = _reduce_infer_for(name)
    if check is not None:
        plain = infer

        def infer(at: dict, x: Spec) -> Spec:
            check(at, x)
            return plain(at, x)

    def forward(cx, at, x):
        axes = reduce_axes(name, at, x.ndim)
        r = fwd(cx.xp, x, axes, at)
        if not at["keepdims"] and r.ndim == 0:
            r = r.reshape(1)
        elif at["keepdims"] and r.ndim == 0:
            r = r.reshape((1,) * max(x.ndim, 1))
        return cast(cx.xp.asarray(r), x.dtype)

    forward.__doc__ = doc
    defop(
        name,
        ("data",),
        (*first, REDUCE_AXIS, *middle, KEEPDIMS, *extra),
        infer=infer,
        vjp=vjp,
        eager_vjp=eager,
        aliases=aliases,
        scratch=scratch,
        vjp_scratch=vjp_scratch,
    )(forward)


def _count(name: str, at: dict, shape: tuple[int, ...]) -> int:
    return prod(tuple(shape[i] for i in reduce_axes(name, at, len(shape))))


def accumulator(xp: Any, x: Any) -> Any:
    """The dtype a sum of ``x`` accumulates in: float64 for float32, float32 for float16 (None:
    its own). MXNet sums float32 with a compensated (Kahan) sum; numpy's float32 sum along an
    axis adds one after another (0.1 * arange(100) summed down the columns of a 10 x 10 gives
    47.000004 where MXNet gives 47). Summed in float64 and rounded once, the values are MXNet's
    far more often (all of the tutorials' cases): about twice the time of a float32 sum. MXNet
    adds float16 in float32 along every axis; numpy does only along the last (contiguous) one
    (the columns of [[1.82], [-0.14], [0.92]] summed to 2.6016, MXNet's 2.5996)."""
    dt = x.dtype
    return xp.float64 if dt == xp.float32 else xp.float32 if dt == xp.float16 else None


def _mean(xp: Any, x: Any, axes: Any, keepdims: bool) -> Any:
    """MXNet's mean: the sum (see ``accumulator``) in the array's dtype, then divided by the count
    in that dtype (float32's 4.5 / 10 is 0.44999998, where numpy's float64 mean rounds to 0.45000002)."""
    if x.dtype != xp.float32:
        return xp.mean(x, axis=axes, keepdims=keepdims)
    total = xp.sum(x, axis=axes, keepdims=keepdims, dtype=xp.float64).astype(xp.float32)
    count = prod(tuple(x.shape[i] for i in axes)) if axes is not None else x.size
    return total / xp.float32(count)


_reduction(
    "sum",
    lambda xp, x, axes, at: xp.sum(x, axis=axes, keepdims=at["keepdims"], dtype=accumulator(xp, x)),
    lambda F, at, g, y, x: (_spread(F, "sum", at, g, x),),
    "The sum over ``axis`` (all axes when None; with ``exclude``, all but ``axis``).",
    (EXCLUDE,),
    eager=lambda at, g, y, x: (_spread_np("sum", at, g, x),),
    aliases=("sum_axis",),
)
_reduction(
    "mean",
    lambda xp, x, axes, at: _mean(xp, x, axes, at["keepdims"]),
    lambda F, at, g, y, x: (
        F.div_scalar(_spread(F, "mean", at, g, x), scalar=float(max(_count("mean", at, tuple(x.shape)), 1))),
    ),
    "The mean over ``axis`` (all axes when None; with ``exclude``, all but ``axis``).",
    (EXCLUDE,),
    eager=floats_only(lambda at, g, y, x: (_spread_np("mean", at, g / float(max(_count("mean", at, x.shape), 1)), x),)),
)


def _extreme_vjp(name: str):
    def vjp(F, at, g, y, x):
        yb = _spread(F, name, at, y, x)
        mask = F.equal(x, yb)
        return (F.mul(_spread(F, name, at, g, x), mask),)

    return vjp


_reduction(
    "max",
    lambda xp, x, axes, at: xp.max(x, axis=axes, keepdims=at["keepdims"]),
    _extreme_vjp("max"),
    "The maximum over ``axis`` (with ``exclude``, all but ``axis``).",
    (EXCLUDE,),
    aliases=("max_axis",),
)
_reduction(
    "min",
    lambda xp, x, axes, at: xp.min(x, axis=axes, keepdims=at["keepdims"]),
    _extreme_vjp("min"),
    "The minimum over ``axis`` (with ``exclude``, all but ``axis``).",
    (EXCLUDE,),
    aliases=("min_axis",),
)


# the L2 norms whose plain sum of squares is exact enough: from sqrt(tiny) to the largest float
_NORM_FITS = {np.dtype(t): (math.sqrt(float(np.finfo(t).tiny)), float(np.finfo(t).max)) for t in ("float32", "float64")}


def _norm_fwd(xp, x, axes, at):
    """ord 1: the sum of |x|. ord 2: sqrt(sum(x**2)) with no overflow or underflow of the
    squares where the norm itself is representable, as MXNet's: float16 squares summed in
    float32, and float32/64 ones recomputed, scaled by the largest |x| of their slice, for the
    slices whose plain result came out infinite or below sqrt(tiny) (1e20 and 1e-30 in float32)."""
    keepdims = at["keepdims"]
    if at["ord"] == 1:  # (float16 added in float32, as the sum)
        return xp.sum(xp.abs(x), axis=axes, keepdims=keepdims, dtype=np.float32 if x.dtype == np.float16 else None)
    if x.dtype == np.float16:
        return xp.sqrt(xp.sum(xp.square(x, dtype=np.float32), axis=axes, keepdims=keepdims))
    y = xp.sqrt(xp.sum(xp.square(x), axis=axes, keepdims=keepdims))
    fits = _NORM_FITS.get(x.dtype)
    if fits is None or x.size == 0:  # (integers: MXNet's squares wrap in the dtype, as ours)
        return y
    if y.ndim == 0:  # (the usual whole norm: compared as a Python float)
        v = float(y)
        if fits[0] <= v <= fits[1] or v != v:
            return y
    bad = (y < fits[0]) | (y > fits[1])  # zero or subnormal squares, or infinite (not NaN)
    if not bad.any():
        return y
    big = xp.max(xp.abs(x), axis=axes, keepdims=True)
    scale = xp.where((big > 0) & xp.isfinite(big), big, xp.ones_like(big))
    with np.errstate(over="ignore"):  # (a norm past the dtype's range is inf, as MXNet's)
        scaled = xp.divide(x, scale)
        xp.square(scaled, out=scaled)
        z = xp.sqrt(xp.sum(scaled, axis=axes, keepdims=keepdims))
        z *= scale if keepdims else scale.reshape(z.shape)
    return xp.where(bad, z, y)


def _norm_vjp(F, at, g, y, x):
    gb = _spread(F, "norm", at, g, x)
    if at["ord"] == 1:
        return (F.mul(gb, F.sign(x)),)
    return (F.mul(gb, F.div(x, _spread(F, "norm", at, y, x))),)


def _norm_scratch(at: dict, x: Spec) -> int:
    """|x| or x**2, of the input's size (float16's squares in float32: twice its bytes)."""
    return prod(x.shape) * (4 if x.dtype == "float16" and at["ord"] == 2 else np.dtype(x.dtype).itemsize)


def _norm_check(at: dict, x: Spec) -> None:
    if at["ord"] not in (1, 2):
        raise InvalidInput(f"norm: ord must be 1 or 2, got {at['ord']}")
    od = at["out_dtype"]
    if od is not None and od != x.dtype:  # (MXNet 1.9.1's fails inside for any other)
        raise DTypeError(f"norm: out_dtype {od} is not the data's dtype {x.dtype}: the norm is computed in the data's")


_reduction(
    "norm",
    _norm_fwd,
    _norm_vjp,
    "The L2 (``ord=2``) or L1 (``ord=1``) norm over ``axis`` (MXNet's order: ``norm(x, ord, axis, out_dtype, "
    "keepdims)``; ``out_dtype``: the data's dtype, or None).",
    first=(Attr("ord", "int", 2),),
    middle=(Attr("out_dtype", "dtype", None),),
    check=_norm_check,
    scratch=_norm_scratch,
    # the cotangent and the norm spread to the input's shape (measured: 3 x the input with the result)
    vjp_scratch=lambda at, x: 2 * prod(x.shape) * np.dtype(x.dtype).itemsize,
)


# --------------------------------------------------------------------------
# shape


def _sum_to_infer(at: dict, x: Spec) -> Spec:
    shape = at["shape"]
    if broadcast_shapes("sum_to", shape, x.shape) != x.shape:
        raise ShapeError(f"sum_to: cannot sum shape {x.shape} to {shape}: {shape} does not broadcast to {x.shape}")
    return Spec(shape, x.dtype)


def _sum_to_fwd(cx, at, x):
    """Sum ``x`` down to ``shape`` (the inverse of broadcasting)."""
    shape = at["shape"]
    lead = x.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(i + lead for i, d in enumerate(shape) if d == 1 and x.shape[i + lead] != 1)
    if not axes:
        return x.reshape(shape).copy()  # (its own array, as every op's but reshape's and getitem's)
    return cx.xp.sum(x, axis=axes, keepdims=True, dtype=x.dtype).reshape(shape)  # (ints: numpy would widen)


defop(
    "sum_to",
    ("data",),
    (SHAPE,),
    infer=_sum_to_infer,
    vjp=lambda F, at, g, y, x: (F.broadcast_to(g, shape=tuple(x.shape)),),
)(_sum_to_fwd)


def _broadcast_to_infer(at: dict, x: Spec) -> Spec:
    shape = at["shape"]
    # MXNet: 0 in the target shape keeps the input's dimension
    if len(shape) == len(x.shape):
        shape = tuple(x.shape[i] if d == 0 else d for i, d in enumerate(shape))
    if broadcast_shapes("broadcast_to", x.shape, shape) != shape:
        raise ShapeError(f"broadcast_to: cannot broadcast shape {x.shape} to {at['shape']}")
    return Spec(shape, x.dtype)


@defop(
    "broadcast_to",
    ("data",),
    (SHAPE,),
    infer=_broadcast_to_infer,
    vjp=lambda F, at, g, y, x: (unbroadcast(F, g, tuple(x.shape)),),
)
def _broadcast_to(cx, at, x):
    """``x`` broadcast to ``shape``."""
    shape = _broadcast_to_infer(at, Spec(x.shape, x.dtype.name)).shape
    return cx.xp.array(cx.xp.broadcast_to(x, shape))


def reshape_shape(src: tuple[int, ...], target: tuple[int, ...], reverse: bool = False) -> tuple[int, ...]:
    """MXNet's reshape rule, with its special values 0, -1, -2, -3 and -4."""
    if reverse:
        return tuple(reversed(reshape_shape(tuple(reversed(src)), tuple(reversed(target)))))
    out: list[int] = []
    i = 0  # position in src
    j = 0
    infer_at = -1
    t = list(target)
    while j < len(t):
        d = t[j]
        if d == 0:
            if i >= len(src):
                raise ShapeError(f"reshape: 0 in {target} has no input dimension to copy from {src}")
            out.append(src[i])
            i += 1
        elif d == -1:
            if infer_at >= 0:
                raise ShapeError(f"reshape: more than one -1 in {target}")
            infer_at = len(out)
            out.append(1)
            i += 1
        elif d == -2:
            out.extend(src[i:])
            i = len(src)
        elif d == -3:
            if i + 1 >= len(src):
                raise ShapeError(f"reshape: -3 in {target} needs two input dimensions of {src}")
            out.append(src[i] * src[i + 1])
            i += 2
        elif d == -4:
            if j + 2 >= len(t) or i >= len(src):
                raise ShapeError(f"reshape: -4 in {target} needs two values after it")
            d1, d2 = t[j + 1], t[j + 2]
            if d1 == -1 and d2 > 0:
                d1 = src[i] // d2
            elif d2 == -1 and d1 > 0:
                d2 = src[i] // d1
            if d1 * d2 != src[i]:
                raise ShapeError(f"reshape: -4 split {d1}x{d2} does not match dimension {src[i]}")
            out.extend((d1, d2))
            i += 1
            j += 2
        elif d > 0:
            out.append(d)
            i += 1
        else:
            raise ShapeError(f"reshape: invalid value {d} in shape {target}")
        j += 1
    total = prod(src)
    if infer_at >= 0:
        rest = prod(tuple(out)) // 1
        if rest == 0 or total % rest:
            raise ShapeError(f"reshape: cannot infer -1 reshaping {src} to {target}")
        out[infer_at] = total // rest
    if prod(tuple(out)) != total:
        raise ShapeError(
            f"reshape: cannot reshape array of shape {src} into shape {target} "
            f"(sizes {total} and {prod(tuple(out))} differ)"
        )
    return tuple(out)


def target_shape(src: tuple[int, ...], target: tuple[int, ...], keep_highest: bool) -> tuple[int, ...]:
    """MXNet's deprecated ``target_shape``: its one 0 is inferred from the size, and with
    ``keep_highest`` the first axis is the input's whatever the target's first value. (MXNet
    1.9.1 gives shapes of another size where the size does not divide; they are refused here.)"""
    out = list(target)
    if keep_highest:
        if not src:
            raise ShapeError("reshape: keep_highest needs an input of at least one axis")
        out[0] = src[0]
    if out.count(0) > 1 or any(d < 0 for d in out):
        raise ShapeError(f"reshape: target_shape {target} may hold one 0 (inferred) and no negative values")
    total = prod(src)
    if 0 in out:
        rest = prod(tuple(d for d in out if d))
        if rest == 0 or total % rest:
            raise ShapeError(f"reshape: cannot infer the 0 of target_shape {target} reshaping {src}")
        out[out.index(0)] = total // rest
    if prod(tuple(out)) != total:
        raise ShapeError(
            f"reshape: cannot reshape array of shape {src} into target_shape {target} "
            f"(sizes {total} and {prod(tuple(out))} differ)"
        )
    return tuple(out)


def _reshape_to(at: dict, src: tuple[int, ...]) -> tuple[int, ...]:
    """``shape`` (MXNet's special values allowed), or where it is empty a ``target_shape``."""
    if not at["shape"] and at["target_shape"]:
        return target_shape(src, at["target_shape"], at["keep_highest"])
    return reshape_shape(src, at["shape"], at["reverse"])


def _reshape_infer(at: dict, x: Spec) -> Spec:
    return Spec(_reshape_to(at, x.shape), x.dtype)


@defop(
    "reshape",
    ("data",),
    (
        Attr("shape", "shape", ()),
        Attr("reverse", "bool", False),
        Attr("target_shape", "shape", ()),
        Attr("keep_highest", "bool", False),
    ),
    infer=_reshape_infer,
    vjp=lambda F, at, g, y, x: (F.reshape(g, shape=tuple(x.shape)),),
    view=True,
    aliases=("Reshape",),
)
def _reshape(cx, at, x):
    """``x`` with a new shape of the same size (MXNet's special values allowed). MXNet's
    deprecated ``target_shape`` (one 0 inferred; ``keep_highest``: the first axis kept) is
    read where ``shape`` is empty."""
    return x.reshape(_reshape_to(at, x.shape))


def _perm(at: dict, ndim: int) -> tuple[int, ...]:
    axes = at["axes"]
    if not axes:
        return tuple(reversed(range(ndim)))
    if (
        len(axes) != ndim
        or not all(-ndim <= a < ndim for a in axes)
        or sorted(a % ndim for a in axes) != list(range(ndim))
    ):
        raise ShapeError(f"transpose: axes {axes} are not a permutation of {ndim} axes")
    return tuple(a % ndim for a in axes)


def _transpose_infer(at: dict, x: Spec) -> Spec:
    p = _perm(at, len(x.shape))
    return Spec(tuple(x.shape[i] for i in p), x.dtype)


def _transpose_vjp(F, at, g, y, x):
    p = _perm(at, x.ndim)
    inv = tuple(int(i) for i in np.argsort(p))
    return (F.transpose(g, axes=inv),)


@defop("transpose", ("data",), (Attr("axes", "ints", ()),), infer=_transpose_infer, vjp=_transpose_vjp)
def _transpose(cx, at, x):
    """``x`` with its axes permuted (reversed when ``axes`` is empty)."""
    return cx.xp.array(cx.xp.transpose(x, _perm(at, x.ndim)), order="C")  # a copy, as MXNet's


def _expand_dims_infer(at: dict, x: Spec) -> Spec:
    n = len(x.shape) + 1
    a = at["axis"]
    if not -n <= a < n:
        raise ShapeError(f"expand_dims: axis {a} is out of range for rank {len(x.shape)}")
    a %= n
    return Spec(x.shape[:a] + (1,) + x.shape[a:], x.dtype)


@defop(
    "expand_dims",
    ("data",),
    (Attr("axis", "int", REQUIRED),),
    infer=_expand_dims_infer,
    vjp=lambda F, at, g, y, x: (F.reshape(g, shape=tuple(x.shape)),),
)
def _expand_dims(cx, at, x):
    """``x`` with a new axis of length 1 at ``axis``."""
    return cx.xp.array(cx.xp.expand_dims(x, at["axis"]))  # a copy, as MXNet's (only x.reshape shares)


# --------------------------------------------------------------------------
# indexing
#
# A key travels as a list with one item per index: an integer, a slice as
# [start, stop, step] (null for omitted), null for a new axis, "...", or
# {"array": i} for the i-th index array (the op's inputs after the data).


class IndexArray:
    """Where an index array of the op's inputs goes in a parsed key."""

    __slots__ = ("i",)

    def __init__(self, i: int) -> None:
        self.i = i


def _is_int(v: Any) -> bool:
    if type(v) is int:  # (the common case first: the check below is a tuple's isinstance)
        return True
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _bound(v: Any) -> bool:
    return v is None or type(v) is int or _is_int(v)


def parse_key(name: str, key: Any, n_arrays: int = 0) -> tuple:
    if not isinstance(key, (list, tuple)):
        raise InvalidInput(f"{name}: key must be a list of indices, got {echo(key)}")
    out: list[Any] = []
    arrays = 0
    for k in key:
        if type(k) is int:
            out.append(k)
        elif k is None:
            out.append(None)
        elif isinstance(k, (list, tuple)) and len(k) == 3 and _bound(k[0]) and _bound(k[1]) and _bound(k[2]):
            if k[2] == 0:
                raise InvalidInput(f"{name}: slice step cannot be zero")
            out.append(slice(*k))
        elif k == "...":
            if Ellipsis in out:
                raise InvalidInput(f"{name}: a key holds at most one ... (ellipsis)")
            out.append(Ellipsis)
        elif _is_int(k):
            out.append(int(k))
        elif isinstance(k, dict) and set(k) == {"array"} and _is_int(k["array"]) and 0 <= k["array"] < n_arrays:
            out.append(IndexArray(int(k["array"])))
            arrays += 1
        else:
            raise InvalidInput(f"{name}: invalid index {echo(k)} in key")
    if arrays or n_arrays:
        used = sorted(k.i for k in out if isinstance(k, IndexArray))
        if used != list(range(n_arrays)):
            raise InvalidInput(f"{name}: the key must use each of its {n_arrays} index arrays once")
    return tuple(out)


def check_index_dtypes(name: str, dtypes: Any) -> None:
    """Refuse a boolean index array, as MXNet 1.9.1's NDArrays do (a mask's 0s and 1s read as
    integer indices would be a wrong result, not an error)."""
    for dt in dtypes:
        if dt == "bool" or dt == np.bool_:
            raise BooleanIndexError(
                f"{name}: cannot index with a boolean array: MXNet's NDArrays refuse boolean indexing "
                "('Cannot perform boolean indexing in legacy mode'); index with integers, such as "
                "numpy's np.nonzero(mask), or use nd.where(mask, x, y)"
            )


def bind_key(key: tuple, arrays: tuple) -> tuple:
    """A numpy key: index arrays put in their places, as integers."""
    if not arrays:
        return key
    check_index_dtypes("index", (a.dtype for a in arrays))
    return tuple(arrays[k.i].astype(np.int64) if isinstance(k, IndexArray) else k for k in key)


def key_shape(name: str, shape: tuple[int, ...], key: tuple, index_shapes: tuple = ()) -> tuple[int, ...]:
    """The shape ``x[key]`` would have, found without data."""
    if not index_shapes and len(key) <= len(shape) and all(type(k) is int or type(k) is slice for k in key):
        out: list[int] = []  # ints and slices: arithmetic (the probe below costs 10 us)
        for axis, (d, k) in enumerate(zip(shape, key)):
            if type(k) is slice:
                out.append(len(range(*k.indices(d))))
            elif not -d <= k < d:
                raise IndexOutOfRange(f"{name}: index {k} is out of bounds for axis {axis} with size {d}")
        return (*out, *shape[len(key) :])
    if len(index_shapes) > 1:  # (MXNet's ValueError: numpy's IndexError says "shape mismatch" too)
        try:
            np.broadcast_shapes(*index_shapes)
        except ValueError:
            shapes = " ".join(str(tuple(s)) for s in index_shapes)
            raise ShapeError(f"{name}: index arrays of shapes {shapes} do not broadcast together") from None
    probe = np.broadcast_to(np.empty((), dtype=bool), shape)
    idx = tuple(np.zeros(s, dtype=np.int64) for s in index_shapes)
    try:
        return tuple(probe[bind_key(key, idx)].shape)
    except IndexError as e:
        raise IndexOutOfRange(f"{name}: {e}") from None


def is_view_key(key: tuple, shape: tuple[int, ...]) -> bool:
    """MXNet's basic indexing that shares memory (1.9's ``_basic_indexing_sliced_is_contiguous``):
    a key of integers, slices, new axes and an ellipsis that selects one contiguous block of an
    array of ``shape``: one element on each axis up to some axis, a step-1 range on that one,
    and every axis after it whole. (Index arrays, and any other key, give a copy.)"""
    if len(key) > len(shape):
        return general_view_key(key, shape)
    for k in key:  # integers and slices (a minibatch's rows): no axis added or implied
        if type(k) is not int and type(k) is not slice:
            return general_view_key(key, shape)
    return _one_block(key, shape)


def general_view_key(key: tuple, shape: tuple[int, ...]) -> bool:
    """``is_view_key`` for any key (its quick path takes keys of integers and slices)."""
    axes = [k for k in key if k is not None]  # (new axes move no element)
    for k in axes:
        if not (_is_int(k) or isinstance(k, slice) or k is Ellipsis):
            return False
    if axes.count(Ellipsis) > 1 or len(axes) - (Ellipsis in axes) > len(shape):
        return False  # (refused by the indexing itself)
    if Ellipsis in axes:
        i = axes.index(Ellipsis)
        axes[i : i + 1] = [slice(None)] * (len(shape) - len(axes) + 1)
    return _one_block(axes, shape)


def _one_block(axes: Sequence[Any], shape: tuple[int, ...]) -> bool:
    """Whether integers and slices, one per leading axis of ``shape`` (the axes after them
    whole), select one contiguous block (see ``is_view_key``)."""
    ranged = False  # past the axis of the step-1 range: every axis must be whole
    for k, d in zip(axes, shape):
        if isinstance(k, slice):
            start, stop, step = k.indices(d)
            count = len(range(start, stop, step))
        else:
            count, step = 1, 1
        if ranged:
            if count != d or (step != 1 and d > 1):
                return False
        elif count == 0:
            return False
        elif count > 1:
            if step != 1:
                return False
            ranged = True
    if not ranged:  # the whole axes after them, as the loop would take them
        for d in shape[len(axes) :]:
            if d == 0:
                return False
            if d > 1:
                break
    return True


def is_whole_key(key: tuple) -> bool:
    """``x[:]``, ``x[...]``, ``x[:, :]``: the whole array, in order (MXNet's ``x[:] = v``
    while recording is a recorded copy of v; any other in-place write of a recorded value
    is refused)."""
    return all(k is Ellipsis or (isinstance(k, slice) and k == slice(None)) for k in key)


def broadcastable(value: tuple[int, ...], region: tuple[int, ...]) -> bool:
    """Whether ``value`` broadcasts to exactly ``region``."""
    try:
        return broadcast_shapes("", value, region) == region
    except ShapeError:
        return False


def assignable(value: tuple[int, ...], region: tuple[int, ...]) -> bool:
    """Whether a value can be written into a region, by numpy's rule for ``x[key] = v`` and
    MXNet 1.9.1's (checked with it): it broadcasts to the region, leading axes of length 1
    past the region's rank dropped ((1, 3, 4) into (3, 4)). A value of the region's size
    and another shape ((12,) into (3, 4), (2, 2) into (4,)) is refused, as MXNet refuses it."""
    extra = len(value) - len(region)
    if extra > 0:
        if any(d != 1 for d in value[:extra]):
            return False
        value = value[extra:]
    return broadcastable(value, region)


def not_assignable(name: str, value: tuple[int, ...], region: tuple[int, ...]) -> ShapeError:
    """The refusal of a value ``assignable`` refuses, in numpy's and MXNet's words."""
    return ShapeError(
        f"{name}: operands could not be broadcast together: a value of shape {value} cannot be "
        f"assigned to a region of shape {region}"
    )


def _getitem_infer(at: dict, x: Spec, *idx: Spec) -> Spec:
    key = parse_key("getitem", at["key"], len(idx))
    check_index_dtypes("getitem", (i.dtype for i in idx))
    return Spec(_indexed(key, x.shape, key_shape("getitem", x.shape, key, tuple(i.shape for i in idx))), x.dtype)


def _indexed(key: tuple, shape: tuple[int, ...], sub: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of ``x[key]`` (``sub``, numpy's) as MXNet's: (1,) for one element, but a 0-d
    array's ``x[()]`` is itself."""
    return sub if not key and not shape else at_least_1d(sub)


def _getitem_vjp(F, at, g, y, x, *idx):
    return (F.scatter_key(g, *idx, shape=tuple(x.shape), key=at["key"]),) + (None,) * len(idx)


def _getitem_eager_vjp(at, g, y, x, *idx):
    """A key without index arrays: the gradient's block (``tape.Patch``), added where it goes."""
    if idx:
        return None
    return (Patch(tuple(x.shape), bind_key(parse_key("getitem", at["key"]), ()), g),)


@defop(
    "getitem",
    ("data", "*indices"),
    (Attr("key", "key", REQUIRED),),
    infer=_getitem_infer,
    vjp=_getitem_vjp,
    eager_vjp=_getitem_eager_vjp,
    view=True,  # for a view key (is_view_key)
)
def _getitem(cx, at, x, *idx):
    """``x[key]``: integers, slices, new axes, an ellipsis and integer index arrays.

    As in MXNet, a key without index arrays that selects one contiguous block (``x[1]``,
    ``x[1:3]``, ``x[1, 2]``, ``x[1, 1:3]``, ``x[:]``: see ``is_view_key``) gives a view that
    shares memory with ``x``; every other key gives a copy."""
    key = parse_key("getitem", at["key"], len(idx))
    try:
        r = x[bind_key(key, idx)]
    except IndexError as e:
        raise IndexOutOfRange(f"getitem: {e}") from None
    if not key and not x.shape:  # a 0-d array's x[()]: itself, as MXNet's
        return x.view()
    if not idx and is_view_key(key, x.shape):
        if type(r) is not np.ndarray:  # one element by integers alone: (1,), still a view as in MXNet
            return x[key + (None,)]  # (a new axis after them: numpy's view of the element)
        return r.reshape(at_least_1d(r.shape))
    return cx.xp.array(r, ndmin=1)


def _scatter_infer(at: dict, g: Spec, *idx: Spec) -> Spec:
    key = parse_key("scatter_key", at["key"], len(idx))
    check_index_dtypes("scatter_key", (i.dtype for i in idx))
    sub = _indexed(key, tuple(at["shape"]), key_shape("scatter_key", at["shape"], key, tuple(i.shape for i in idx)))
    if sub != g.shape:
        raise ShapeError(f"scatter_key: data shape {g.shape} does not match {sub}")
    return Spec(at["shape"], g.dtype)


@defop(
    "scatter_key",
    ("data", "*indices"),
    (SHAPE, Attr("key", "key", REQUIRED)),
    infer=_scatter_infer,
    vjp=lambda F, at, gg, y, g, *idx: (F.getitem(gg, *idx, key=at["key"]),) + (None,) * len(idx),
)
def _scatter_key(cx, at, g, *idx):
    """Zeros of ``shape`` with ``data`` added at ``key`` (getitem's gradient;
    repeated indices add up)."""
    shape = at["shape"]
    z = cx.xp.zeros(shape, g.dtype)
    parsed = parse_key("scatter_key", at["key"], len(idx))
    check_index_dtypes("scatter_key", (i.dtype for i in idx))
    if len(parsed) == 1 and len(idx) == 1:  # x[index_array]: rows, through a compiled kernel when there is one
        i = idx[0].astype(np.int64).reshape(-1)
        if i.size and (i.min() < -shape[0] or i.max() >= shape[0]):
            raise IndexOutOfRange(f"scatter_key: index out of bounds for axis 0 with size {shape[0]}")
        kernels.scatter_add_rows(z, i, g.reshape((i.size,) + tuple(shape[1:])))
        return z
    key = bind_key(parsed, idx)
    if idx:
        cx.xp.add.at(z, key, g.reshape(z[key].shape))
    else:
        z[key] = g.reshape(z[key].shape)
    return z


# --------------------------------------------------------------------------
# linear algebra


def _lhs(s: tuple[int, ...], t: bool) -> tuple[int, ...]:
    """The shape of ``dot``'s lhs as multiplied: transposed, MXNet's (the array as the matrix
    (its first axis, all the others), transposed): its first axis moved last."""
    return s[1:] + s[:1] if t else s


def _rhs(s: tuple[int, ...], t: bool) -> tuple[int, ...]:
    """The shape of ``dot``'s rhs as multiplied: transposed, MXNet's (the array as the matrix
    (all axes but the last, the last), transposed): its last axis moved first."""
    return s[-1:] + s[:-1] if t else s


FORWARD_STYPE = Attr("forward_stype", "str", None)
"""MXNet's storage type asked of a product's result: dense ("default", or None) is the one here."""


def dense_only(name: str, at: dict) -> None:
    """Refuse a sparse ``forward_stype`` (gradserve's arrays are dense)."""
    stype = at["forward_stype"]
    if stype is not None and stype != "default":
        raise InvalidInput(f"{name}: forward_stype {stype!r} is sparse storage, which gradserve has not (use default)")


def _dot_infer(at: dict, a: Spec, b: Spec) -> Spec:
    dense_only("dot", at)
    dt = same_dtype("dot", a, b)
    if dt == "bool":  # (as MXNet's: a product is arithmetic)
        raise no_bool_arithmetic("dot")
    sa = _lhs(a.shape, at["transpose_a"])
    sb = _rhs(b.shape, at["transpose_b"])
    if not sa or not sb or sa[-1] != sb[0]:
        raise ShapeError(f"dot: shapes {sa} and {sb} are not aligned (inner dimensions differ)")
    return Spec(at_least_1d(sa[:-1] + sb[1:]), dt)


def _matrix(F, x, t: bool, rows: int, cols: int):
    """``op(x)`` as a (rows, cols) matrix: a view, and whether dot is to transpose it (MXNet's
    transpose of an N-D operand is its matrix's: see ``_lhs`` and ``_rhs``)."""
    if not t:
        return F.reshape(x, shape=(rows, cols)), False
    return F.reshape(x, shape=(cols, rows)), True


def _rotated(F, x, first_to_last: bool):
    """``x`` with its first axis moved last, or its last first (undoing ``_rhs``, ``_lhs``)."""
    n = len(x.shape)
    if n <= 2:
        return F.transpose(x)
    axes = (*range(1, n), 0) if first_to_last else (n - 1, *range(n - 1))
    return F.transpose(x, axes=axes)


def _dot_vjp(F, at, g, y, a, b):
    ta, tb = at["transpose_a"], at["transpose_b"]
    sa = _lhs(tuple(a.shape), ta)
    sb = _rhs(tuple(b.shape), tb)
    m, k, n = prod(sa[:-1]), sa[-1], prod(sb[1:])

    def ga():  # lazy: the tape asks only when lhs leads to a variable
        bm, bt = _matrix(F, b, tb, k, n)
        r = F.reshape(F.dot(F.reshape(g, shape=(m, n)), bm, transpose_b=not bt), shape=sa)
        return _rotated(F, r, False) if ta else r

    def gb():
        am, at_ = _matrix(F, a, ta, m, k)
        r = F.reshape(F.dot(am, F.reshape(g, shape=(m, n)), transpose_a=not at_), shape=sb)
        return _rotated(F, r, True) if tb else r

    return ga, gb


_BLAS_FLOATS: Final = (np.dtype(np.float32), np.dtype(np.float64))


def matrix_product(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``a @ b`` of two matrices (into ``out``, C-contiguous, when given). ``np.matmul`` where
    BLAS reads both as they lie (float32 or float64, each C- or F-contiguous): ``np.dot`` zeroes
    its output before BLAS writes it, a pass over the product's memory that BLAS makes again
    (1.3 to 1.6 % of the benchmark MLP's step, measured with numpy's step by hand written either
    way). Elsewhere ``np.dot``, which copies an operand BLAS cannot read, where ``np.matmul``
    would take its own loop (many times slower)."""
    dt = a.dtype
    if (
        a.ndim == 2
        and b.ndim == 2
        and b.dtype == dt
        and dt in _BLAS_FLOATS
        and (a.flags.c_contiguous or a.flags.f_contiguous)
        and (b.flags.c_contiguous or b.flags.f_contiguous)
    ):
        if out is None:
            return np.matmul(a, b)
        return np.matmul(a, b, out=out)
    if out is None:
        return np.dot(a, b)
    return np.dot(a, b, out)


def _dot_eager(at, g, y, a, b):
    """The 2-D cases on arrays, deferred (only the gradients that lead to a variable are
    computed; two costly ones side by side, see engine/parallel.py); others go to the table."""
    if a.ndim != 2 or b.ndim != 2:
        return None
    ta, tb = at["transpose_a"], at["transpose_b"]
    cost = g.size * (a.shape[0] if ta else a.shape[1])  # multiply-adds of each gradient
    dot = matrix_product
    if not ta and not tb:
        return Deferred(dot, (g, b.T), cost), Deferred(dot, (a.T, g), cost)
    if ta and not tb:
        return Deferred(dot, (b, g.T), cost), Deferred(dot, (a, g), cost)
    if tb and not ta:
        return Deferred(dot, (g, b), cost), Deferred(dot, (g.T, a), cost)
    return Deferred(dot, (b.T, g.T), cost), Deferred(dot, (g.T, a.T), cost)


def _dot_work(at: dict, a: Spec, b: Spec) -> int:
    sa = _lhs(a.shape, at["transpose_a"])
    return prod(sa) * prod(b.shape) // max(sa[-1], 1) if sa else 0


@defop(
    "dot",
    ("lhs", "rhs"),
    (Attr("transpose_a", "bool", False), Attr("transpose_b", "bool", False), FORWARD_STYPE),
    infer=_dot_infer,
    vjp=_dot_vjp,
    eager_vjp=_dot_eager,
    work=_dot_work,
)
def _dot(cx, at, a, b):
    """The dot product: the last axis of ``lhs`` with the first of ``rhs``. ``transpose_a``
    and ``transpose_b`` transpose an operand as MXNet's do: an N-D one as the matrix of its
    first axis by the others (lhs) or of its other axes by its last (rhs), so that lhs's first
    axis or rhs's last is the one multiplied, the others kept in their order."""
    xp = cx.xp
    ta, tb = at["transpose_a"], at["transpose_b"]
    if a.ndim == 2 and b.ndim == 2:
        return matrix_product(a.T if ta else a, b.T if tb else b)
    if a.ndim <= 2 and b.ndim <= 2:
        r = xp.dot(a.T if ta else a, b.T if tb else b)
        return xp.asarray(r).reshape(at_least_1d(r.shape))
    sa, sb = _lhs(a.shape, ta), _rhs(b.shape, tb)
    m, k, n = prod(sa[:-1]), sa[-1], prod(sb[1:])
    am = a.reshape(k, m).T if ta else a.reshape(m, k)
    bm = b.reshape(n, k).T if tb else b.reshape(k, n)
    return matrix_product(am, bm).reshape(at_least_1d(sa[:-1] + sb[1:]))
