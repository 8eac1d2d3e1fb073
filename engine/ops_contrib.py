"""MXNet's ``contrib`` ops of plain arrays: ``isfinite``, ``isinf``, ``isnan``, ``allclose``,
``arange_like``, ``index_array``, ``index_copy``, ``div_sqrt_dim``, ``quadratic``,
``gradientmultiplier``, ``round_ste``, ``sign_ste``, ``box_iou``, ``box_nms`` and ``ROIAlign``.

Each op is ``contrib_<name>`` in the table (MXNet's ``_contrib_<name>``) and
``nd.contrib.<name>`` in the client, with MXNet 1.9.1's attributes, dtypes and gradients.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .errors import DTypeError, IndexOutOfRange, InvalidInput, ShapeError
from .ops import int_cast, sign_of
from .ops_math import _round
from .ops_vision import _roi_check
from .optable import FLOAT_DTYPES, REQUIRED, ZERO_VJPS, Attr, Spec, defop, like_infer, prod


def _zero_vjp(F, at, g, y, x):
    """A zero gradient, as MXNet's (its output does not move with its input's values)."""
    return (F.zeros_like(x),)


ZERO_VJPS.add(_zero_vjp)


def _in_dtype(r: Any, dt: np.dtype) -> np.ndarray:
    """A float result in the input's dtype: truncated as MXNet's C cast for an integer one."""
    return int_cast(r, dt) if dt.kind in "iub" else np.asarray(r).astype(dt, copy=False)


# --------------------------------------------------------------------------
# isfinite, isinf, isnan


def _test(name: str, test: Any, what: str) -> None:
    def forward(cx, at, x):
        if x.dtype.kind != "f":  # (integers and bools are finite numbers)
            return (np.ones if name == "isfinite" else np.zeros)(x.shape, x.dtype)
        return test(x).astype(x.dtype)

    forward.__doc__ = f"1 where x is {what}, else 0, in x's dtype; a zero gradient."
    defop(
        f"contrib_{name}",
        ("data",),
        infer=like_infer,
        vjp=_zero_vjp,
        scratch=lambda at, x: prod(x.shape),  # (the test's bools)
    )(forward)


_test("isfinite", np.isfinite, "finite")
_test("isinf", np.isinf, "infinite")
_test("isnan", np.isnan, "NaN")


# --------------------------------------------------------------------------
# allclose

ALLCLOSE = (Attr("rtol", "float", 1e-5), Attr("atol", "float", 1e-8), Attr("equal_nan", "bool", True))


def _allclose_infer(at: dict, a: Spec, b: Spec) -> Spec:
    if a.shape != b.shape:
        raise ShapeError(f"allclose: a {a.shape} and b {b.shape} must have one shape (no broadcasting, as MXNet's)")
    if a.dtype != b.dtype:
        raise DTypeError(f"allclose: a is {a.dtype} and b {b.dtype}: they must be one dtype")
    return Spec((), "uint8")


@defop(
    "contrib_allclose",
    ("a", "b"),
    ALLCLOSE,
    infer=_allclose_infer,
    scratch=lambda at, a, b: 4 * 8 * prod(a.shape),  # (both in float64, the difference and the bound)
)
def _allclose(cx, at, a, b):
    """1 (a uint8 of rank 0) when every ``|a - b| <= atol + rtol * |b|``, else 0; NaNs are
    equal where ``equal_nan``. Not differentiable, as MXNet's. An infinity is close to itself
    only (MXNet's takes inf and -inf as close)."""
    close = np.isclose(a, b, rtol=at["rtol"], atol=at["atol"], equal_nan=at["equal_nan"])
    return np.array(bool(close.all()), np.uint8)


# --------------------------------------------------------------------------
# arange_like

ARANGE_LIKE = (
    Attr("start", "float", 0.0),
    Attr("step", "float", 1.0),
    Attr("repeat", "int", 1),
    Attr("ctx", "str", ""),
    Attr("axis", "int", None),
)


def _arange_like_infer(at: dict, x: Spec) -> Spec:
    if at["repeat"] < 1:
        raise InvalidInput(f"arange_like: repeat must be at least 1, got {at['repeat']}")
    if at["axis"] is None:
        return x
    nd = len(x.shape)
    if not -nd <= at["axis"] < nd:
        raise ShapeError(f"arange_like: axis {at['axis']} is out of range for data of rank {nd}")
    return Spec((x.shape[at["axis"]],), x.dtype)


@defop(
    "contrib_arange_like",
    ("data",),
    ARANGE_LIKE,
    infer=_arange_like_infer,
    vjp=_zero_vjp,
    scratch=lambda at, x: 3 * 8 * prod(_arange_like_infer(at, x).shape),  # (the positions and values, float64)
)
def _arange_like(cx, at, x):
    """``start, start + step, ...`` in data's shape (row-major) and dtype, or along ``axis``
    (1-D, of that axis' length); each value ``repeat`` times. ``start`` and ``step`` are taken
    in the dtype first and each value rounded to it, as MXNet's. A zero gradient."""
    shape = _arange_like_infer(at, Spec(x.shape, x.dtype.name)).shape
    dt = x.dtype
    start, step = (np.asarray(v).astype(dt).astype(np.float64) for v in (at["start"], at["step"]))
    values = start + (np.arange(prod(shape), dtype=np.float64) // at["repeat"]) * step
    return _in_dtype(values, dt).reshape(shape)


# --------------------------------------------------------------------------
# index_array


def _axes(at: dict, ndim: int) -> tuple[int, ...]:
    if at["axes"] is None:
        return tuple(range(ndim))
    axes = tuple(at["axes"])
    for a in axes:
        if not -ndim <= a < ndim:
            raise ShapeError(f"index_array: axis {a} is out of range for data of rank {ndim}")
    return tuple(a % ndim for a in axes)


def _index_array_infer(at: dict, x: Spec) -> Spec:
    return Spec(x.shape + (len(_axes(at, len(x.shape))),), "int64")


@defop("contrib_index_array", ("data",), (Attr("axes", "shape", None),), infer=_index_array_infer, vjp=_zero_vjp)
def _index_array(cx, at, x):
    """Each element's position (int64): data's shape plus a last axis holding its index along
    each of ``axes`` (every axis unless given), in their order. A zero gradient."""
    axes = _axes(at, x.ndim)
    out = np.empty(x.shape + (len(axes),), np.int64)
    for j, a in enumerate(axes):  # (each axis' positions broadcast into their column)
        out[..., j] = np.arange(x.shape[a]).reshape((-1,) + (1,) * (x.ndim - 1 - a))
    return out


# --------------------------------------------------------------------------
# index_copy


def _index_copy_infer(at: dict, old: Spec, idx: Spec, new: Spec) -> Spec:
    if len(idx.shape) != 1:
        raise ShapeError(f"index_copy: index_vector must be 1-D, got shape {idx.shape}")
    if idx.dtype == "bool":
        raise DTypeError("index_copy: index_vector must be numbers, not bool")
    if not old.shape:
        raise ShapeError("index_copy: old_tensor must have at least 1 dimension, got rank 0")
    if new.shape != idx.shape + old.shape[1:]:
        raise ShapeError(
            f"index_copy: new_tensor {new.shape} must be ({idx.shape[0]},) + old_tensor's rows {old.shape[1:]} "
            f"(one row per index)"
        )
    if new.dtype != old.dtype:
        raise DTypeError(f"index_copy: new_tensor is {new.dtype}, old_tensor {old.dtype}: they must be one dtype")
    return old


def _rows(idx: np.ndarray, n: int) -> np.ndarray:
    """The indices as int64 rows (truncated, as MXNet's cast), each in range and once."""
    with np.errstate(invalid="ignore"):
        rows = int_cast(idx, np.dtype(np.int64)) if idx.dtype.kind == "f" else idx.astype(np.int64)
    bad = (rows < 0) | (rows >= n)
    if bad.any():
        raise IndexOutOfRange(f"index_copy: index {idx[bad][0]} is out of range for old_tensor's {n} rows")
    if len(np.unique(rows)) != len(rows):
        values, counts = np.unique(rows, return_counts=True)
        raise InvalidInput(f"index_copy: index {values[counts > 1][0]} is given twice (each row is written once)")
    return rows


def _index_copy_vjp(F, at, g, y, old, idx, new):
    return (F.contrib_index_copy(g, idx, F.zeros_like(new)), None, F.take(g, idx, axis=0))


@defop(
    "contrib_index_copy",
    ("old_tensor", "index_vector", "new_tensor"),
    infer=_index_copy_infer,
    vjp=_index_copy_vjp,
    scratch=lambda at, old, idx, new: 5 * 8 * prod(idx.shape),  # (the rows as int64, their test and np.unique's)
)
def _index_copy(cx, at, old, idx, new):
    """old_tensor with its rows ``index_vector`` replaced by new_tensor's rows, in order (a new
    array). Indices are truncated to integers, must lie in range and be distinct (MXNet skips
    one out of range and crashes on one given twice). Gradients: old_tensor's, the output's
    but at those rows; new_tensor's, the output's rows at the indices."""
    out = old.copy()
    out[_rows(idx, old.shape[0])] = new
    return out


# --------------------------------------------------------------------------
# div_sqrt_dim


def _sqrt_dim(x: Any) -> Any:
    """sqrt of the last axis' length as MXNet divides by it: computed in float64 for float64,
    else in float32 (float16 too: a length past 65504 is no infinity), then in the dtype; for
    an integer dtype the root truncated to an integer (MXNet's cast of it: 1 for 3)."""
    d = x.shape[-1]
    dt = np.dtype(x.dtype)
    if dt.kind != "f":
        return int(math.sqrt(d))
    return dt.type(np.sqrt(np.float64(d) if dt == np.float64 else np.float32(d)))


def _dsd_infer(at: dict, x: Spec) -> Spec:
    if not x.shape:
        raise ShapeError("div_sqrt_dim: data must have at least 1 dimension, got rank 0")
    if x.dtype == "bool":
        raise DTypeError("div_sqrt_dim: bool arrays take no arithmetic, as MXNet's NDArrays")
    return x


@defop(
    "contrib_div_sqrt_dim",
    ("data",),
    infer=_dsd_infer,
    vjp=lambda F, at, g, y, x: (F.div_scalar(g, scalar=float(_sqrt_dim(x))),),
    eager_vjp=lambda at, g, y, x: (g / _sqrt_dim(x),) if g.dtype.kind == "f" else None,
    scratch=lambda at, x: prod(x.shape) * (np.dtype(x.dtype).itemsize + 1) if np.dtype(x.dtype).kind != "f" else 0,
    vjp_scratch=lambda at, x: 24 * prod(x.shape) if np.dtype(x.dtype).kind != "f" else 0,  # (div_scalar's)
)
def _div_sqrt_dim(cx, at, x):
    """x divided by the square root of its last axis' length (attention's scaling); an
    integer array's quotient truncated, as MXNet's."""
    root = _sqrt_dim(x)
    if x.dtype.kind == "f":
        return x / root
    q = np.abs(x) // root  # (C's integer division: truncated toward zero, exact for any integer)
    return np.negative(q, out=q, where=x < 0) if x.dtype.kind == "i" else q


# --------------------------------------------------------------------------
# quadratic

QUADRATIC = (Attr("a", "float", 0.0), Attr("b", "float", 0.0), Attr("c", "float", 0.0))


def _arith_infer(name: str) -> Any:
    def infer(at: dict, x: Spec) -> Spec:
        if x.dtype == "bool":
            raise DTypeError(f"{name}: bool arrays take no arithmetic, as MXNet's NDArrays")
        return x

    return infer


def _quadratic_vjp(F, at, g, y, x):
    slope = F.add_scalar(F.mul_scalar(x, scalar=2.0 * at["a"]), scalar=at["b"])
    return (F.mul(g, slope),)


@defop(
    "contrib_quadratic",
    ("data",),
    QUADRATIC,
    infer=_arith_infer("quadratic"),
    vjp=_quadratic_vjp,
    scratch=lambda at, x: 3 * (4 if x.dtype == "float16" else 8) * prod(x.shape),
)
def _quadratic(cx, at, x):
    """a * x^2 + b * x + c; float16 computed in float32 and an integer array in float64, then
    rounded (truncated) to its dtype, as MXNet's float coefficients make it. Gradient: the
    output's times 2 * a * x + b."""
    dt = x.dtype
    if dt == np.float16:
        wide = x.astype(np.float32)
    elif dt.kind == "f":
        wide = x
    else:
        wide = x.astype(np.float64)
    t = wide.dtype.type
    return _in_dtype(wide * wide * t(at["a"]) + wide * t(at["b"]) + t(at["c"]), dt)


# --------------------------------------------------------------------------
# gradientmultiplier, round_ste, sign_ste


@defop(
    "contrib_gradientmultiplier",
    ("data",),
    (Attr("scalar", "float", REQUIRED),),
    infer=_arith_infer("gradientmultiplier"),
    vjp=lambda F, at, g, y, x: (F.mul_scalar(g, scalar=at["scalar"]),),
)
def _gradientmultiplier(cx, at, x):
    """x as it is; its gradient the output's times ``scalar`` (a gradient reversal layer with
    -1)."""
    return x.copy()


def _straight_through(name: str, fwd: Any, what: str) -> None:
    def forward(cx, at, x):
        return fwd(x)

    forward.__doc__ = f"{what}; the output's gradient passed straight through (the identity's)."
    defop(
        f"contrib_{name}",
        ("data",),
        infer=_arith_infer(name),
        vjp=lambda F, at, g, y, x: (g,),
        scratch=lambda at, x: 3 * x.nbytes if x.dtype in FLOAT_DTYPES else 0,  # (round's temporaries)
    )(forward)


_straight_through(
    "round_ste", lambda x: _round(np, x) if x.dtype.kind == "f" else x.copy(), "x rounded half away from zero"
)
_straight_through("sign_ste", lambda x: sign_of(np, x), "The sign of x (-1, 0 or 1; 0 for NaN, as sign's)")


# --------------------------------------------------------------------------
# BilinearResize2D and AdaptiveAvgPooling2D: linear maps of the last two axes, one axis at a time
#
# Along each axis, an output of bilinear resizing blends two inputs (``lo``, ``hi``, by
# ``frac``) and one of adaptive pooling averages a window (``lo`` to ``hi``, summed member by
# member: as many passes as the longest window, each over the outputs): in float64, rounded once
# at the end. The gradients are the transposed maps, ops of their own whose gradients are the
# forwards again (all are linear); they gather by index lists that never decrease along the
# axis, so their sums are numpy's reduceat.


def _image(name: str, x: Spec) -> None:
    if len(x.shape) != 4:
        raise ShapeError(f"{name}: data must be 4-D (N, C, H, W), got shape {x.shape}")
    if x.dtype not in FLOAT_DTYPES:
        raise DTypeError(f"{name}: takes floating point arrays only, got {x.dtype}")


def _from_empty(name: str, n_in: tuple[int, ...], n_out: tuple[int, ...]) -> None:
    """Refuse to make outputs from an axis of no inputs."""
    for a, b in zip(n_in, n_out):
        if a == 0 and b > 0:
            raise ShapeError(f"{name}: cannot make {b} values from an axis of length 0 (sizes {n_in} to {n_out})")


def _bilinear_axis(n_in: int, n_out: int, align_corners: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear interpolation from ``n_in`` points to ``n_out``: output i is ``(1 - frac) *
    x[lo] + frac * x[hi]`` at source ``i * (n_in - 1) / (n_out - 1)`` (align_corners) or ``(i +
    0.5) * n_in / n_out - 0.5`` clamped at 0 (PyTorch's); a single output samples 0, as MXNet's."""
    i = np.arange(n_out, dtype=np.float64)
    if n_out == 1:
        src = np.zeros(1)
    elif align_corners:
        src = i * ((n_in - 1) / (n_out - 1))
    else:
        src = np.maximum((i + 0.5) * (n_in / n_out) - 0.5, 0.0)
    lo = np.minimum(np.floor(src).astype(np.int64), max(n_in - 1, 0))
    return lo, np.minimum(lo + 1, max(n_in - 1, 0)), src - lo


def _adaptive_axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Adaptive average pooling from ``n_in`` points to ``n_out``: output i averages the inputs
    from ``lo = floor(i * n_in / n_out)`` to ``hi = ceil((i + 1) * n_in / n_out)``."""
    i = np.arange(n_out, dtype=np.int64)
    return (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)


def _along(v: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    """A per-position vector shaped to broadcast along ``axis`` of an array of rank ``ndim``."""
    return v.reshape((-1,) + (1,) * (ndim - 1 - axis))


def _sum_into(n: int, idx: np.ndarray, vals: np.ndarray) -> np.ndarray:
    """out[k] = the sum of vals[j] (along axis 0) over the j with idx[j] == k; idx never
    decreases (numpy's reduceat over its runs)."""
    out = np.zeros((n,) + vals.shape[1:], vals.dtype)
    if len(idx):
        starts = np.flatnonzero(np.r_[True, idx[1:] != idx[:-1]])
        out[idx[starts]] = np.add.reduceat(vals, starts, axis=0)
    return out


def _resize_along(x: np.ndarray, axis: int, n_out: int, align: bool) -> np.ndarray:
    lo, hi, frac = _bilinear_axis(x.shape[axis], n_out, align)
    f = _along(frac, axis, x.ndim)
    out = x.take(lo, axis) * (1 - f)
    out += x.take(hi, axis) * f
    return out


def _resize_back(g: np.ndarray, axis: int, n_in: int, align: bool) -> np.ndarray:
    lo, hi, frac = _bilinear_axis(n_in, g.shape[axis], align)
    gm = np.moveaxis(g, axis, 0)
    f = _along(frac, 0, gm.ndim)
    out = _sum_into(n_in, lo, gm * (1 - f))
    out += _sum_into(n_in, hi, gm * f)
    return np.moveaxis(out, 0, axis)


def _pool_along(x: np.ndarray, axis: int, n_out: int) -> np.ndarray:
    lo, hi = _adaptive_axis(x.shape[axis], n_out)
    size = hi - lo
    out = np.zeros(x.shape[:axis] + (n_out,) + x.shape[axis + 1 :], x.dtype)
    for j in range(int(size.max(initial=0))):  # (the j-th member of every window: exact sums, an inf kept in its own)
        has = np.flatnonzero(size > j)
        out[(slice(None),) * axis + (has,)] += x.take(lo[has] + j, axis)
    out /= _along(size.astype(np.float64), axis, x.ndim)
    return out


def _pool_back(g: np.ndarray, axis: int, n_in: int) -> np.ndarray:
    lo, hi = _adaptive_axis(n_in, g.shape[axis])
    size = hi - lo
    gm = np.moveaxis(g, axis, 0) / _along(size.astype(np.float64), 0, g.ndim)
    out = np.zeros((n_in,) + gm.shape[1:], gm.dtype)
    for j in range(int(size.max(initial=0))):  # (each window's share to its j-th member)
        has = np.flatnonzero(size > j)
        out += _sum_into(n_in, lo[has] + j, gm[has])
    return np.moveaxis(out, 0, axis)


def _both_axes(x: np.ndarray, along: Any, sizes: tuple[int, int], *extra: Any) -> np.ndarray:
    """``along`` (a map of one axis) over axis 2, then axis 3, in float64; the result in x's dtype."""
    y = along(x.astype(np.float64, copy=False), 2, sizes[0], *extra)
    return along(y, 3, sizes[1], *extra).astype(x.dtype, copy=False)


def _maps_scratch(x: Spec, oh: int, ow: int) -> int:
    """The float64 working arrays of ``_both_axes``: the input's copy, and for each axis its
    takes, blend or cumulative sums (four arrays of the larger of that axis' input and output),
    then the result before it is rounded."""
    n, c, h, w = x.shape
    first = 4 * n * c * (max(h, oh) + 1) * w
    second = 4 * n * c * oh * (max(w, ow) + 1)
    return 8 * (n * c * h * w + max(first, n * c * oh * w + second) + n * c * oh * ow)


RESIZE = (
    Attr("height", "int", 1),
    Attr("width", "int", 1),
    Attr("scale_height", "float", None),
    Attr("scale_width", "float", None),
    Attr("mode", "str", "size"),
    Attr("align_corners", "bool", True),
)
_RESIZE_MODES = ("size", "like", "odd_scale", "to_even_down", "to_even_up", "to_odd_down", "to_odd_up")


def _resize_to(at: dict, x: Spec, like: tuple[Spec, ...]) -> tuple[int, int]:
    """The output's (height, width), by ``mode`` (MXNet's rules)."""
    mode, (h, w) = at["mode"], x.shape[2:]
    if mode not in _RESIZE_MODES:
        raise InvalidInput(f"BilinearResize2D: mode must be one of {', '.join(_RESIZE_MODES)}, got {mode!r}")
    if (mode == "like") != bool(like):
        raise InvalidInput(
            f"BilinearResize2D: mode 'like' takes a second input (its size), other modes none; got mode "
            f"{mode!r} with {len(like)}"
        )
    if mode == "like":
        if len(like[0].shape) < 2:
            raise ShapeError(f"BilinearResize2D: like must have at least 2 dimensions, got shape {like[0].shape}")
        return like[0].shape[-2], like[0].shape[-1]
    scales = (at["scale_height"], at["scale_width"])
    if mode == "size":
        for name, s in zip(("height", "width"), (at["height"], at["width"])):
            if s < 1:
                raise InvalidInput(f"BilinearResize2D: {name} must be at least 1, got {s}")
        sizes = [at["height"], at["width"]]
        for k, (n, s) in enumerate(zip((h, w), scales)):
            if s is not None:
                if not 0 < s < math.inf:
                    raise InvalidInput(f"BilinearResize2D: scales must be positive and finite, got {s}")
                sizes[k] = int(n * s)
        return sizes[0], sizes[1]
    if mode == "odd_scale":
        if None in scales or not all(0 < v < math.inf for v in scales):  # type: ignore[operator]
            raise InvalidInput(
                f"BilinearResize2D: mode 'odd_scale' needs positive scale_height and scale_width, got {scales}"
            )
        return tuple(int((n - 1) * s) + 1 if n % 2 else int(n * s) for n, s in zip((h, w), scales))  # type: ignore[return-value]
    step = 1 if mode.endswith("up") else -1
    odd = 1 if "odd" in mode else 0
    return tuple(n if n % 2 == odd else n + step for n in (h, w))  # type: ignore[return-value]


def _resize_infer(at: dict, x: Spec, *like: Spec) -> Spec:
    _image("BilinearResize2D", x)
    if len(like) > 1:
        raise InvalidInput(f"BilinearResize2D: takes data and at most one like input, got {1 + len(like)} inputs")
    oh, ow = _resize_to(at, x, like)
    if oh < 0 or ow < 0:
        raise ShapeError(f"BilinearResize2D: the output size ({oh}, {ow}) is negative")
    _from_empty("BilinearResize2D", x.shape[2:], (oh, ow))
    return Spec(x.shape[:2] + (oh, ow), x.dtype)


def _resize_vjp(F, at, g, y, x, *like):
    h, w = x.shape[2:]
    back = F.contrib_BilinearResize2D_grad(g, height=h, width=w, align_corners=at["align_corners"])
    return (back, *(None for _ in like))


@defop(
    "contrib_BilinearResize2D",
    ("data", "*like"),
    RESIZE,
    most=2,
    infer=_resize_infer,
    vjp=_resize_vjp,
    scratch=lambda at, x, *like: _maps_scratch(x, *_resize_infer(at, x, *like).shape[2:]),
    vjp_scratch=lambda at, x, *like: _maps_scratch(_resize_infer(at, x, *like), *x.shape[2:]),
)
def _bilinear_resize(cx, at, x, *like):
    """Each (N, C) image resized to the output's height and width by bilinear interpolation
    (MXNet's modes: ``size`` (``height``, ``width``, or the input's times ``scale_height``,
    ``scale_width``), ``like`` (a second input's last two axes), ``odd_scale``,
    ``to_even_down``, ``to_even_up``, ``to_odd_down``, ``to_odd_up``; ``align_corners``). The
    like input gets no gradient."""
    oh, ow = _resize_infer(at, Spec(x.shape, x.dtype.name), *(Spec(v.shape, v.dtype.name) for v in like)).shape[2:]
    return _both_axes(x, _resize_along, (oh, ow), at["align_corners"])


def _back_to_input(name: str) -> Any:
    """The inference of a resizer's gradient op: the gradient taken back to the input's
    ``height`` and ``width``."""

    def infer(at: dict, g: Spec) -> Spec:
        _image(name, g)
        if at["height"] < 0 or at["width"] < 0:
            raise InvalidInput(f"{name}: height and width must not be negative, got {at['height']}, {at['width']}")
        _from_empty(name, (at["height"], at["width"]), g.shape[2:])
        return Spec(g.shape[:2] + (at["height"], at["width"]), g.dtype)

    return infer


_resize_grad_infer = _back_to_input("BilinearResize2D_grad")


@defop(
    "contrib_BilinearResize2D_grad",
    ("data",),
    (Attr("height", "int", REQUIRED), Attr("width", "int", REQUIRED), Attr("align_corners", "bool", True)),
    infer=_resize_grad_infer,
    vjp=lambda F, at, g, y, x: (
        F.contrib_BilinearResize2D(g, height=x.shape[2], width=x.shape[3], align_corners=at["align_corners"]),
    ),
    scratch=lambda at, g: _maps_scratch(g, at["height"], at["width"]),
    vjp_scratch=lambda at, g: _maps_scratch(_resize_grad_infer(at, g), *g.shape[2:]),
)
def _bilinear_resize_grad(cx, at, g):
    """BilinearResize2D's gradient: an output's gradient ``data`` taken back to the input's
    ``height`` and ``width`` (the transposed interpolation)."""
    return _both_axes(g, _resize_back, (at["height"], at["width"]), at["align_corners"])


def _output_size(at: dict) -> tuple[int, int]:
    size = tuple(at["output_size"] or (1,))
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) < 0:
        raise InvalidInput(
            f"AdaptiveAvgPooling2D: output_size must be one size or (height, width), got {at['output_size']}"
        )
    return size[0], size[1]


def _adaptive_infer(at: dict, x: Spec) -> Spec:
    _image("AdaptiveAvgPooling2D", x)
    _from_empty("AdaptiveAvgPooling2D", x.shape[2:], _output_size(at))
    return Spec(x.shape[:2] + _output_size(at), x.dtype)


@defop(
    "contrib_AdaptiveAvgPooling2D",
    ("data",),
    (Attr("output_size", "shape", ()),),
    infer=_adaptive_infer,
    vjp=lambda F, at, g, y, x: (F.contrib_AdaptiveAvgPooling2D_grad(g, height=x.shape[2], width=x.shape[3]),),
    scratch=lambda at, x: _maps_scratch(x, *_output_size(at)),
    vjp_scratch=lambda at, x: _maps_scratch(_adaptive_infer(at, x), *x.shape[2:]),
)
def _adaptive_avg_pooling(cx, at, x):
    """Each (N, C) image averaged over windows that tile it into ``output_size`` (one size for
    both axes, or (height, width); 1 when not given): output (i, j) averages rows
    ``floor(i * H / OH)`` to ``ceil((i + 1) * H / OH)`` and the columns alike."""
    return _both_axes(x, _pool_along, _output_size(at))


_adaptive_grad_infer = _back_to_input("AdaptiveAvgPooling2D_grad")


@defop(
    "contrib_AdaptiveAvgPooling2D_grad",
    ("data",),
    (Attr("height", "int", REQUIRED), Attr("width", "int", REQUIRED)),
    infer=_adaptive_grad_infer,
    vjp=lambda F, at, g, y, x: (F.contrib_AdaptiveAvgPooling2D(g, output_size=tuple(x.shape[2:])),),
    scratch=lambda at, g: _maps_scratch(g, at["height"], at["width"]),
    vjp_scratch=lambda at, g: _maps_scratch(_adaptive_grad_infer(at, g), *g.shape[2:]),
)
def _adaptive_avg_pooling_grad(cx, at, g):
    """AdaptiveAvgPooling2D's gradient: an output's gradient ``data`` spread back over the
    input's ``height`` and ``width``, each window's share divided by its size."""
    return _both_axes(g, _pool_back, (at["height"], at["width"]))


# --------------------------------------------------------------------------
# box_iou, box_nms

BOX_FORMATS = ("corner", "center")


def _box_format(name: str, what: str, fmt: str) -> str:
    if fmt not in BOX_FORMATS:
        raise InvalidInput(f"{name}: {what} must be 'corner' or 'center', got {fmt!r}")
    return fmt


def _corners(b: Any, fmt: str) -> tuple[Any, Any, Any, Any]:
    """(xmin, ymin, xmax, ymax) of boxes on the last axis: [xmin, ymin, xmax, ymax] as they
    are, or [x, y, width, height] about their centers."""
    if fmt == "corner":
        return b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    half_w, half_h = b[..., 2] / 2, b[..., 3] / 2
    return b[..., 0] - half_w, b[..., 1] - half_h, b[..., 0] + half_w, b[..., 1] + half_h


def _iou(a: Any, b: Any, fmt: str) -> Any:
    """Intersection over union of boxes ``a`` (..., 4) and ``b`` (..., 4), broadcast: 0 where
    the union is empty (MXNet's: no width is added to a box)."""
    ax0, ay0, ax1, ay1 = _corners(a, fmt)
    bx0, by0, bx1, by1 = _corners(b, fmt)
    w = np.maximum(np.minimum(ax1, bx1) - np.maximum(ax0, bx0), 0)
    h = np.maximum(np.minimum(ay1, by1) - np.maximum(ay0, by0), 0)
    inter = w * h
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1), 0)


def _box_iou_infer(at: dict, lhs: Spec, rhs: Spec) -> Spec:
    _box_format("box_iou", "format", at["format"])
    for what, s in (("lhs", lhs), ("rhs", rhs)):
        if not s.shape or s.shape[-1] != 4:
            raise ShapeError(f"box_iou: {what} must have boxes of 4 on its last axis, got shape {s.shape}")
        if s.dtype not in FLOAT_DTYPES:
            raise DTypeError(f"box_iou: {what} must be a float array, got {s.dtype}")
    if lhs.dtype != rhs.dtype:
        raise DTypeError(f"box_iou: lhs is {lhs.dtype} and rhs {rhs.dtype}: they must be one dtype")
    return Spec(lhs.shape[:-1] + rhs.shape[:-1], lhs.dtype)


def _box_iou_zero_vjp(F, at, g, y, lhs, rhs):
    """Zeros for both, as MXNet's ("zero gradients are back-propagated in this op")."""
    return (F.zeros_like(lhs), F.zeros_like(rhs))


ZERO_VJPS.add(_box_iou_zero_vjp)


@defop(
    "contrib_box_iou",
    ("lhs", "rhs"),
    (Attr("format", "str", "corner"),),
    infer=_box_iou_infer,
    vjp=_box_iou_zero_vjp,
    scratch=lambda at, lhs, rhs: 12 * prod(lhs.shape[:-1]) * prod(rhs.shape[:-1]) * np.dtype(lhs.dtype).itemsize,
)
def _box_iou(cx, at, lhs, rhs):
    """The intersection over union of every box of ``lhs`` (..., 4) with every box of ``rhs``
    (..., 4): shape lhs.shape[:-1] + rhs.shape[:-1]. ``format``: boxes as [xmin, ymin, xmax,
    ymax] (corner) or [x, y, width, height] (center). A zero gradient, as MXNet's."""
    a = lhs.reshape(lhs.shape[:-1] + (1,) * (rhs.ndim - 1) + (4,))
    return _iou(a, rhs, at["format"]).astype(lhs.dtype, copy=False)


BOX_NMS = (
    Attr("overlap_thresh", "float", 0.5),
    Attr("valid_thresh", "float", 0.0),
    Attr("topk", "int", -1),
    Attr("coord_start", "int", 2),
    Attr("score_index", "int", 1),
    Attr("id_index", "int", -1),
    Attr("background_id", "int", -1),
    Attr("force_suppress", "bool", False),
    Attr("in_format", "str", "corner"),
    Attr("out_format", "str", "corner"),
)


def _box_nms_infer(at: dict, x: Spec) -> Spec:
    name = "box_nms"
    _box_format(name, "in_format", at["in_format"])
    _box_format(name, "out_format", at["out_format"])
    if len(x.shape) < 2:
        raise ShapeError(f"{name}: data must be (..., n, k): boxes of k values, got shape {x.shape}")
    if x.dtype not in FLOAT_DTYPES:
        raise DTypeError(f"{name}: data must be a float array, got {x.dtype}")
    k = x.shape[-1]
    if not 0 <= at["coord_start"] <= k - 4:
        raise InvalidInput(f"{name}: coord_start {at['coord_start']} leaves no 4 coordinates in boxes of {k} values")
    if not 0 <= at["score_index"] < k:
        raise InvalidInput(f"{name}: score_index {at['score_index']} is not in boxes of {k} values")
    if not -1 <= at["id_index"] < k:
        raise InvalidInput(f"{name}: id_index {at['id_index']} is not -1 or in boxes of {k} values")
    return x


def _nms_order(at: dict, x: np.ndarray) -> np.ndarray:
    """For each box batch of ``x`` (..., n, k) flattened to (B, n, k): the input row of each
    output row, -1 for the rows filled with -1 (B, n). Rows of valid boxes (score above
    ``valid_thresh``, not of ``background_id`` where there are classes) by score, highest first
    (ties in input order), the ``topk`` first of them, then greedily: a box is kept unless one kept before it overlaps
    it by more than ``overlap_thresh`` (of its class, unless ``force_suppress`` or no
    ``id_index``)."""
    n, k = x.shape[-2], x.shape[-1]
    boxes = x.reshape(-1, n, k)
    order = np.full((boxes.shape[0], n), -1, dtype=np.int64)
    c0, si, ii = at["coord_start"], at["score_index"], at["id_index"]
    by_class = ii >= 0 and not at["force_suppress"]
    for b, rows in enumerate(boxes):
        score = rows[:, si]
        valid = score > at["valid_thresh"]
        if ii >= 0:  # (the default background_id -1 too: a row of class -1 is padding, as MXNet's)
            valid &= rows[:, ii] != at["background_id"]
        idx = np.flatnonzero(valid)
        idx = idx[np.argsort(-score[idx], kind="stable")]
        if at["topk"] > 0:
            idx = idx[: at["topk"]]
        coords = rows[idx, c0 : c0 + 4]
        overlap = _iou(coords[:, None, :], coords[None, :, :], at["in_format"]) > at["overlap_thresh"]
        if by_class:  # (classes compared as integers, as MXNet's: 1.2 and 1.9 are one)
            ids = rows[idx, ii].astype(np.int64)
            overlap &= ids[:, None] == ids[None, :]
        alive = np.ones(len(idx), dtype=bool)
        kept = []
        for i in range(len(idx)):
            if alive[i]:
                kept.append(idx[i])
                alive[i + 1 :] &= ~overlap[i, i + 1 :]
        order[b, : len(kept)] = kept
    return order


def _to_format(coords: np.ndarray, src: str, dst: str) -> np.ndarray:
    """Boxes (..., 4) from format ``src`` to ``dst``."""
    if src == dst:
        return coords
    if dst == "center":
        x0, y0, x1, y1 = _corners(coords, "corner")
        return np.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], axis=-1)
    return np.stack(_corners(coords, "center"), axis=-1)


def _box_nms_vjp(F, at, g, y, x):
    return (F.contrib_box_nms_grad(g, x, **at),)


def _box_nms_scratch(at: dict, x: Spec) -> int:
    """Its order (int64 per box), a batch's overlaps (bools of n x n, and their float IoUs)."""
    n = x.shape[-2]
    return 8 * prod(x.shape[:-1]) + 9 * n * n + np.dtype(x.dtype).itemsize * prod(x.shape)


@defop(
    "contrib_box_nms",
    ("data",),
    BOX_NMS,
    infer=_box_nms_infer,
    vjp=_box_nms_vjp,
    aliases=("contrib_box_non_maximum_suppression",),
    scratch=_box_nms_scratch,
    vjp_scratch=_box_nms_scratch,
)
def _box_nms(cx, at, x):
    """Non-maximum suppression of boxes (..., n, k), each [id, score, xmin, ymin, xmax, ymax,
    ...] by default (``id_index``, ``score_index``, ``coord_start``): the boxes kept, by score,
    highest first, then rows of -1 (see ``_nms_order``); the coordinates in ``out_format``. Its
    gradient goes back to each kept box's row, 0 to the others, as MXNet's. ``topk`` 0: the
    data as it is (MXNet's); no boxes too (MXNet refuses an empty box axis)."""
    if at["topk"] == 0 or x.size == 0:
        return x.copy()
    order = _nms_order(at, x)
    n, k = x.shape[-2], x.shape[-1]
    rows = x.reshape(-1, n, k)
    out = np.full(rows.shape, -1, dtype=x.dtype)
    c0 = at["coord_start"]
    for b in range(rows.shape[0]):
        kept = order[b][order[b] >= 0]
        out[b, : len(kept)] = rows[b, kept]
        out[b, : len(kept), c0 : c0 + 4] = _to_format(rows[b, kept, c0 : c0 + 4], at["in_format"], at["out_format"])
    return out.reshape(x.shape)


def _box_nms_grad_infer(at: dict, g: Spec, x: Spec) -> Spec:
    _box_nms_infer(at, x)
    if g.shape != x.shape:
        raise ShapeError(f"box_nms_grad: the gradient {g.shape} must have the data's shape {x.shape}")
    return Spec(x.shape, g.dtype)


def _box_nms_grad_vjp(F, at, gg, y, g, x):
    """The op is linear in ``ograd``: its VJP there is its transpose (``gather`` the other way);
    none to the data, whose order only picks the rows."""
    return (F.contrib_box_nms_grad(gg, x, **{**at, "gather": not at["gather"]}), F.zeros_like(x))


@defop(
    "contrib_box_nms_grad",
    ("ograd", "data"),
    (*BOX_NMS, Attr("gather", "bool", False)),
    infer=_box_nms_grad_infer,
    vjp=_box_nms_grad_vjp,
    scratch=lambda at, g, x: _box_nms_scratch(at, x),
)
def _box_nms_grad(cx, at, g, x):
    """box_nms's gradient: each output row's gradient ``ograd`` at the input row of its box,
    0 at the rows not kept (the order found again from ``data``). With ``gather``, the
    transpose, its own gradient: each kept box's row of ``ograd`` at its output row, 0 below."""
    if at["topk"] == 0 or x.size == 0:  # (the forward gave the data as it is)
        return g.copy()
    order = _nms_order(at, x)
    n, k = x.shape[-2], x.shape[-1]
    grows = g.reshape(-1, n, k)
    out = np.zeros(grows.shape, dtype=g.dtype)
    for b in range(grows.shape[0]):
        m = order[b] >= 0
        if at["gather"]:
            out[b, np.flatnonzero(m)] = grows[b, order[b][m]]
        else:
            out[b, order[b][m]] = grows[b, np.flatnonzero(m)]
    return out.reshape(x.shape)


# --------------------------------------------------------------------------
# ROIAlign

ROI_ALIGN = (
    Attr("pooled_size", "shape", REQUIRED),
    Attr("spatial_scale", "float", REQUIRED),
    Attr("sample_ratio", "int", -1),
    Attr("position_sensitive", "bool", False),
    Attr("aligned", "bool", False),
)


def _roi_align_infer(at: dict, x: Spec, rois: Spec) -> Spec:
    """ROIPooling's checks (MXNet's: float data, rois (R, 5) of its dtype, pooled_size and
    spatial_scale), and R-FCN's position-sensitive pooling refused."""
    if at["position_sensitive"]:
        raise InvalidInput("ROIAlign: position_sensitive (R-FCN's pooling) is not supported")
    ph, pw = _roi_check("ROIAlign", at, x, rois)
    return Spec((rois.shape[0], x.shape[1], ph, pw), x.dtype)


def _axis_weights(start: float, size: float, bins: int, grid: int, n: int) -> np.ndarray:
    """The (bins, n) matrix that takes an axis of n pixels to a region's bins along it: each
    bin's ``grid`` samples (evenly inside it) read by linear interpolation, summed. A sample
    past the axis by more than a pixel reads 0; one near its ends reads the end pixel."""
    step = size / bins
    at = start + np.arange(bins)[:, None] * step + (np.arange(grid)[None, :] + 0.5) * step / grid  # (bins, grid)
    inside = (at >= -1.0) & (at <= n)
    at = np.clip(at, 0.0, None)
    low = np.floor(at).astype(np.int64)
    last = low >= n - 1
    low = np.where(last, n - 1, low)
    at = np.where(last, low.astype(at.dtype), at)
    high = np.where(last, low, low + 1)
    frac = at - low
    m = np.zeros((bins, n))
    rows = np.repeat(np.arange(bins), grid)
    np.add.at(m, (rows, low.ravel()), ((1 - frac) * inside).ravel())
    np.add.at(m, (rows, high.ravel()), (frac * inside).ravel())
    return m


_NAN_REGION: Any = object()
"""A plan's region of NaN coordinates: its output is NaN, its gradient none (MXNet's)."""

MAX_ROI_SAMPLES = 1 << 16
"""The most samples a region's bins take along an axis (a region of 1e8 pixels would take 1e8
without ``sample_ratio``: MXNet's loop runs on for minutes)."""


def _roi_align_plan(at: dict, shape: tuple[int, ...], rois: np.ndarray) -> list[Any]:
    """Per region: None (a negative batch index: zeros), ``_NAN_REGION`` (NaN coordinates), or
    (its sample's index, the rows and columns its samples read, and their (ph, rows) and
    (pw, columns) weights, divided by the samples' count between them)."""
    _, _, h, w = shape
    ph, pw = tuple(at["pooled_size"])
    scale, ratio = at["spatial_scale"], at["sample_ratio"]
    offset = 0.5 if at["aligned"] else 0.0
    plans: list[Any] = []
    for b, x1, y1, x2, y2 in rois.astype(np.float64):
        if not np.isfinite(b) or int(b) < 0:  # (truncated, as MXNet's: -0.5 is sample 0)
            plans.append(None)
            continue
        if not int(b) < shape[0]:
            raise IndexOutOfRange(f"ROIAlign: batch index {b} is not a sample of data of {shape[0]}")
        if not np.isfinite([x1, y1, x2, y2]).all():
            plans.append(_NAN_REGION)
            continue
        sx, sy = x1 * scale - offset, y1 * scale - offset
        rw, rh = x2 * scale - offset - sx, y2 * scale - offset - sy
        if not at["aligned"]:  # (a malformed region is taken as 1 x 1, as MXNet's)
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        gh = ratio if ratio > 0 else max(1, math.ceil(rh / ph))
        gw = ratio if ratio > 0 else max(1, math.ceil(rw / pw))
        if max(gh * ph, gw * pw) > MAX_ROI_SAMPLES:
            raise InvalidInput(
                f"ROIAlign: region {[float(v) for v in (x1, y1, x2, y2)]} takes {gh * ph} x {gw * pw} samples, "
                f"over {MAX_ROI_SAMPLES} along an axis: give a sample_ratio"
            )
        wy = _axis_weights(sy, rh, ph, gh, h) / (gh * gw)
        wx = _axis_weights(sx, rw, pw, gw, w)
        rows, cols = _span(wy), _span(wx)  # (the pixels a region reads: its products take only those)
        plans.append((int(b), rows, cols, wy[:, rows], wx[:, cols]))
    return plans


def _span(m: np.ndarray) -> slice:
    """The columns of ``m`` that hold a nonzero weight, as one slice (empty if none)."""
    used = np.flatnonzero(m.any(axis=0))
    return slice(int(used[0]), int(used[-1]) + 1) if used.size else slice(0, 0)


def _roi_align_scratch(at: dict, x: Spec, rois: Spec) -> int:
    """A region's two weight matrices and its product's float64 middle (at most image-sized)."""
    _, c, h, w = x.shape
    ph, pw = tuple(at["pooled_size"])
    return 8 * (ph * h + pw * w + c * ph * w)


def _roi_align_vjp(F, at, g, y, x, rois):
    """To the pixels the samples read; rois get none (MXNet's: zeros)."""
    return (F.contrib_ROIAlign_grad(g, rois, shape=tuple(int(d) for d in x.shape), **at), None)


@defop(
    "contrib_ROIAlign",
    ("data", "rois"),
    ROI_ALIGN,
    infer=_roi_align_infer,
    vjp=_roi_align_vjp,
    scratch=_roi_align_scratch,
    vjp_scratch=_roi_align_scratch,
)
def _roi_align(cx, at, x, rois):
    """Mask R-CNN's region pooling without rounding, (R, C, ph, pw): each row of rois (R, 5),
    (batch index, x1, y1, x2, y2) in the image's pixels, scaled by ``spatial_scale`` (less half
    a pixel with ``aligned``; else at least 1 x 1) and split into ``pooled_size`` bins, each the
    mean of ``sample_ratio`` x ``sample_ratio`` samples (or as many as the bin is pixels wide,
    rounded up) read by bilinear interpolation. A negative batch index gives zeros. The
    gradient goes to the pixels the samples read; none to rois (MXNet's)."""
    out = np.zeros((rois.shape[0], x.shape[1]) + tuple(at["pooled_size"]), x.dtype)
    for r, plan in enumerate(_roi_align_plan(at, x.shape, rois)):
        if plan is _NAN_REGION:
            out[r] = np.nan
        elif plan is not None:
            b, rows, cols, wy, wx = plan
            out[r] = wy @ x[b, :, rows, cols].astype(np.float64) @ wx.T  # (C, ph, pw)
    return out


def _roi_align_grad_infer(at: dict, g: Spec, rois: Spec) -> Spec:
    shape = tuple(at["shape"])
    want = _roi_align_infer(at, Spec(shape, g.dtype), rois)
    if g.shape != want.shape:
        raise ShapeError(f"ROIAlign_grad: the gradient {g.shape} must have the output's shape {want.shape}")
    return Spec(shape, g.dtype)


@defop(
    "contrib_ROIAlign_grad",
    ("ograd", "rois"),
    (*ROI_ALIGN, Attr("shape", "shape", REQUIRED)),
    infer=_roi_align_grad_infer,
    # (linear in ograd: its VJP there is ROIAlign itself; none to rois)
    vjp=lambda F, at, gg, y, g, rois: (
        F.contrib_ROIAlign(gg, rois, **{k: v for k, v in at.items() if k != "shape"}),
        None,
    ),
    scratch=lambda at, g, rois: _roi_align_scratch(at, Spec(tuple(at["shape"]), g.dtype), rois),
)
def _roi_align_grad(cx, at, g, rois):
    """ROIAlign's gradient for data of ``shape``: each region's output gradient ``ograd``
    spread back over the pixels its samples read, with their weights."""
    shape = tuple(at["shape"])
    out = np.zeros(shape, np.float64)
    for r, plan in enumerate(_roi_align_plan(at, shape, rois)):
        if plan is not None and plan is not _NAN_REGION:
            b, rows, cols, wy, wx = plan
            out[b, :, rows, cols] += wy.T @ g[r].astype(np.float64) @ wx  # (C, rows, cols)
    return out.astype(g.dtype)
