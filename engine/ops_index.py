"""Densities of the random distributions (``random_pdf_*``, random_pdf_dirichlet's of vectors)
and index ops: batch_take, khatri_rao, ravel_multi_index, unravel_index, scatter_nd,
all_finite, multi_all_finite, histogram and its edges."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from . import kernels
from .errors import DTypeError, IndexOutOfRange, InvalidInput, ShapeError
from .ops import SHAPE, check_shape, same_dtype
from .ops_array import NUM_ARGS, _gather_nd_infer, _nd_index, _no_gradient
from .ops_math import CHUNK, POLYGAMMA_ARRAYS, float64_scratch
from .optable import FLOAT_DTYPES, REQUIRED, Attr, Spec, defop, prod

UFUNC_BUFFER = 8192
"""Elements of each operand numpy buffers when a ufunc cannot run over its arrays in one
strided sweep, or casts one as it goes (numpy's default buffer size): an op that adds into a
strided slice, or a row of another dtype, declares them."""

# --------------------------------------------------------------------------
# batch_take


def _batch_take_infer(at: dict, a: Spec, idx: Spec) -> Spec:
    if len(a.shape) < 2:
        raise ShapeError(f"batch_take: data must have at least 2 dimensions, got shape {a.shape}")
    if idx.dtype == "bool":
        raise DTypeError("batch_take: indices must be numbers, not bool (MXNet's are int32)")
    n, rows = prod(idx.shape), prod(a.shape[:-1])
    if n != rows:  # (MXNet's check)
        raise ShapeError(
            f"batch_take: indices have {n} elements, data {a.shape} has {rows} rows of its last axis: "
            "the index array's size must be the data's size over its last axis"
        )
    if n > a.shape[0]:  # (MXNet 1.9.1 takes from rows of prod(shape[1:]): it reads past the data's end)
        raise ShapeError(
            f"batch_take: data {a.shape} has axes of length other than 1 between its first and last: "
            "MXNet 1.9.1 reads past its end for such a shape; use pick"
        )
    if n and a.shape[-1] == 0:
        raise IndexOutOfRange(f"batch_take: cannot take indices from rows of length 0 (data {a.shape})")
    return Spec(idx.shape, a.dtype)


@defop(
    "batch_take",
    ("a", "indices"),
    infer=_batch_take_infer,
    scratch=lambda at, a, idx: 16 * prod(idx.shape),  # (the indices as int64, clipped in place; the rows')
)
def _batch_take(cx, at, a, idx):
    """``a[i, indices[i]]`` for each row i of ``a`` (2-D, or with axes of length 1 between its
    first and last), indices truncated to integers and clipped to the row; the result has the
    indices' shape. Not differentiable, as MXNet's (deprecated there: use ``pick``)."""
    rows = a.shape[0]
    m = prod(a.shape[1:])
    i = idx.reshape(-1).astype(np.int64)  # (a new array: truncated, then clipped in place)
    cx.xp.maximum(i, 0, out=i)
    cx.xp.minimum(i, m - 1, out=i)
    r = a.reshape(rows, m)[cx.xp.arange(i.size), i]
    return r.reshape(idx.shape)


# --------------------------------------------------------------------------
# khatri_rao


def _khatri_rao_infer(at: dict, *xs: Spec) -> Spec:
    if not xs:
        raise InvalidInput("khatri_rao: needs at least one matrix")
    if at["num_args"] is not None and at["num_args"] != len(xs):  # (MXNet's check)
        raise InvalidInput(f"khatri_rao: num_args is {at['num_args']}, but {len(xs)} arrays were given")
    dt = same_dtype("khatri_rao", *xs)
    if dt not in ("float32", "float64"):  # (MXNet's: "Not implemented" for the others)
        raise DTypeError(f"khatri_rao: takes float32 or float64 matrices, got {dt}")
    for s in xs:
        if len(s.shape) != 2:
            raise ShapeError(f"khatri_rao: each input must be a matrix (2-D), got shape {s.shape}")
        if s.shape[1] != xs[0].shape[1]:
            raise ShapeError(
                f"khatri_rao: the matrices must have one number of columns, got {xs[0].shape} and {s.shape}"
            )
    return Spec((prod(tuple(s.shape[0] for s in xs)), xs[0].shape[1]), dt)


def _khatri_rao_scratch(at: dict, *xs: Spec) -> int:
    """The products before the last (each step's result and the one before it at once)."""
    if len(xs) < 2 or len(xs[0].shape) != 2:
        return 0
    return 2 * np.dtype(xs[0].dtype).itemsize * xs[0].shape[1] * prod(tuple(s.shape[0] for s in xs[:-1]))


@defop("khatri_rao", ("*args",), (NUM_ARGS,), infer=_khatri_rao_infer, scratch=_khatri_rao_scratch)
def _khatri_rao(cx, at, *xs):
    """The column-wise Khatri-Rao product of matrices (M_i, N): (M_1 ... M_n, N), whose k-th
    column is the outer product of the matrices' k-th columns (the first's index slowest). Not
    differentiable, as MXNet's."""
    if len(xs) == 1:
        return xs[0].copy()
    r, n = xs[0], xs[0].shape[1]
    for x in xs[1:]:
        r = (r[:, None, :] * x[None, :, :]).reshape(r.shape[0] * x.shape[0], n)
    return r


# --------------------------------------------------------------------------
# ravel_multi_index, unravel_index


def _ravel_shape(name: str, at: dict) -> tuple[int, ...]:
    shape = at["shape"]
    if not shape:
        raise InvalidInput(f"{name}: empty shape parameter")
    first_ok = shape[0] == -1 or 0 < shape[0] < 2**63  # (-1: MXNet's placeholder; the first is not used)
    if not first_ok or not all(0 < d < 2**63 for d in shape[1:]):
        raise InvalidInput(f"{name}: the dimensions of shape must be positive (the first may be -1), got {shape}")
    return shape


def _index_number_dtype(name: str, dt: str) -> None:
    if dt == "bool":
        raise DTypeError(f"{name}: takes numbers, not bool")


def _ravel_infer(at: dict, x: Spec) -> Spec:
    shape = _ravel_shape("ravel_multi_index", at)
    _index_number_dtype("ravel_multi_index", x.dtype)
    if len(x.shape) != 2:
        raise ShapeError(f"ravel_multi_index: data must be 2-D (one row per axis), got shape {x.shape}")
    if x.shape[0] != len(shape):
        raise ShapeError(f"ravel_multi_index: data has {x.shape[0]} rows, shape {shape} has {len(shape)} axes")
    return Spec((x.shape[1],), x.dtype)


@defop(
    "ravel_multi_index",
    ("data",),
    (Attr("shape", "shape", REQUIRED),),
    infer=_ravel_infer,
    vjp=_no_gradient,
    scratch=lambda at, x: 8 * (x.shape[1] if len(x.shape) == 2 else 0) + 8 * UFUNC_BUFFER,
)
def _ravel_multi_index(cx, at, x):
    """The flat index of each column of data (one row per axis of ``shape``; the first
    dimension may be -1), in data's dtype, as MXNet computes it: ``r = r * shape[j] + data[j]``
    for each row j, no index checked against its axis (numbers, not a refusal, past the ends);
    a float truncated toward zero at each step. Integers are computed in int64 and cast to
    data's dtype (MXNet 1.9.1 computes in int32: a flat index past its range wrapped there);
    a zero gradient."""
    shape = at["shape"]
    if x.dtype.kind == "f":  # (each step in place: one float64 array, x's rows cast as they are added)
        r = np.zeros(x.shape[1], np.float64)
        for j, d in enumerate(shape):
            r *= float(d)
            r += x[j]
            np.trunc(r, out=r)
        r += 0.0  # (no -0, as MXNet's integer steps give none)
        return r.astype(x.dtype)
    r = np.zeros(x.shape[1], np.int64)
    for j, d in enumerate(shape):
        r *= np.int64(d)
        np.add(r, x[j], out=r, casting="unsafe")  # (x's row as astype(int64) gives it, uint64 too)
    return r.astype(x.dtype)


def _unravel_infer(at: dict, x: Spec) -> Spec:
    shape = _ravel_shape("unravel_index", at)
    _index_number_dtype("unravel_index", x.dtype)
    return Spec(check_shape("unravel_index", (len(shape),) + x.shape), x.dtype)


@defop(
    "unravel_index",
    ("data",),
    (Attr("shape", "shape", REQUIRED),),
    infer=_unravel_infer,
    vjp=_no_gradient,
    scratch=lambda at, x: 16 * prod(x.shape),  # (the indices left and the remainders, 8 bytes each)
)
def _unravel_index(cx, at, x):
    """The index on each axis of ``shape`` of each flat index of data: one row per axis, the
    result (len(shape),) + data.shape, in data's dtype. As MXNet: a float truncated toward zero
    first; then C's division and remainder from the last axis on (a negative index gives
    negative ones), what is left on the first (so the first dimension, which may be -1, is
    not used and no index is checked); a zero gradient."""
    shape = at["shape"]
    out = np.empty((len(shape),) + x.shape, x.dtype)
    r = x.astype(np.float64 if x.dtype.kind == "f" else np.int64)  # (each step in place on it)
    if r.dtype.kind == "f":
        np.trunc(r, out=r)
        r += 0.0  # (no -0)
    rem = np.empty_like(r)
    for j in range(len(shape) - 1, 0, -1):
        d = r.dtype.type(shape[j])
        np.fmod(r, d, out=rem)  # (the dividend's sign, as C's %)
        out[j] = rem
        r -= rem
        if r.dtype.kind == "f":
            r /= d
        else:
            r //= d
    out[0] = r
    return out


# --------------------------------------------------------------------------
# scatter_nd


def _scatter_nd_infer(at: dict, data: Spec, idx: Spec) -> Spec:
    shape = check_shape("scatter_nd", at["shape"])
    want = _gather_nd_infer(at, Spec(shape, data.dtype), idx, "scatter_nd")
    if want.shape != data.shape:
        raise ShapeError(
            f"scatter_nd: data shape {data.shape} should be {want.shape} for indices {idx.shape} and shape {shape}"
        )
    return Spec(shape, data.dtype)


@defop(
    "scatter_nd",
    ("data", "indices"),
    (SHAPE,),
    infer=_scatter_nd_infer,
    vjp=lambda F, at, g, y, data, idx: (F.gather_nd(g, idx), None),
    scratch=lambda at, data, idx: 8 * prod(idx.shape),  # (the indices as int64: _nd_index)
    vjp_scratch=lambda at, data, idx: 8 * prod(idx.shape),  # (gather_nd's, as the forward's)
)
def _scatter_nd(cx, at, data, idx):
    """Zeros of ``shape`` with ``data`` written at ``indices`` (gather_nd's layout: indices
    (M, ...) address the first M axes; data is indices.shape[1:] + shape[M:]). Negative indices
    count from the end and indices out of range are refused (as gather_nd's; MXNet 1.9.1 writes
    past the result there). Of repeated indices the last is written (MXNet: undefined). The
    gradient of data is gather_nd of the cotangent."""
    z = cx.xp.zeros(at["shape"], data.dtype)
    z[_nd_index(cx, idx, z.shape, "scatter_nd")] = data
    return z


# --------------------------------------------------------------------------
# all_finite


def _all_finite_infer(at: dict, x: Spec) -> Spec:
    if x.dtype not in FLOAT_DTYPES:
        raise DTypeError(f"all_finite: takes floating point arrays only, got {x.dtype}")
    return Spec((1,), "float32")


@defop(
    "all_finite",
    ("data",),
    (Attr("init_output", "bool", True),),
    infer=_all_finite_infer,
    scratch=lambda at, x: min(prod(x.shape), CHUNK),
)
def _all_finite(cx, at, x):
    """[1.] (float32) when every element of data is finite, else [0.]; not differentiable, as
    MXNet's. ``init_output=False`` (MXNet's: the output is not set to 1 first, so it keeps what
    it held unless an element is not finite) gives a new array here, so 1 as well when all are
    finite."""
    return np.array([1.0 if _finite(x) else 0.0], np.float32)


def _finite(x: np.ndarray) -> bool:
    """Whether every element of x is finite (a chunk at a time: no mask of x's size)."""
    flat = x.reshape(-1)
    return all(np.isfinite(flat[i : i + CHUNK]).all() for i in range(0, flat.size, CHUNK))


def _multi_all_finite_infer(at: dict, *xs: Spec) -> Spec:
    name = "multi_all_finite"
    if at["num_arrays"] != len(xs):  # (MXNet's check; with no arrays at all it crashes)
        raise InvalidInput(f"{name}: expects {at['num_arrays']} arrays (num_arrays), but got {len(xs)}")
    if not xs:
        raise InvalidInput(f"{name}: needs at least one array")
    for x in xs:
        if x.dtype not in FLOAT_DTYPES:
            raise DTypeError(f"{name}: takes floating point arrays only, got {x.dtype}")
    same_dtype(name, *xs)  # (MXNet 1.9.1: "data type do not match specified type")
    return Spec((1,), "float32")


@defop(
    "multi_all_finite",
    ("*data",),
    (Attr("num_arrays", "int", 1), Attr("init_output", "bool", True)),
    infer=_multi_all_finite_infer,
    scratch=lambda at, *xs: min(max((prod(x.shape) for x in xs), default=0), CHUNK),
)
def _multi_all_finite(cx, at, *xs):
    """[1.] (float32) when every element of every array (``num_arrays`` of them, of one
    floating point dtype) is finite, else [0.]; not differentiable, as MXNet's (its check of
    the gradients of a mixed precision step). ``init_output=False`` gives a new array here, as
    all_finite's: 1 as well when all are finite (MXNet 1.9.1 leaves its output as it was, which
    gave 0 for finite arrays)."""
    return np.array([1.0 if all(_finite(x) for x in xs) else 0.0], np.float32)


# --------------------------------------------------------------------------
# the densities: random_pdf_*
#
# sample has the parameters' shape and extra trailing axes (sample.shape[:p] == param.shape):
# element i of the parameters is the distribution of sample[i, ...]. As MXNet's, the formulas
# are applied as they are, nothing checked: a sample outside the support or a parameter outside
# its range gives what the formula gives (uniform's density outside [low, high) is 1/(high -
# low), a poisson count of 1.5 has the density of the formula's lgamma, a sigma of 0 is NaN).
# Computed in float64 a chunk at a time, rounded to the inputs' dtype (float16, float32 or
# float64, one for all). Gradients are MXNet's: each parameter's summed over the sample's
# extra axes; the sample's for the normal, gamma and exponential densities, none (MXNet's
# zero) for uniform's, constant in the sample, and for the counts of poisson and the negative
# binomials.

IS_LOG = Attr("is_log", "bool", False)


def _lgamma(v: np.ndarray) -> np.ndarray:
    return kernels.special("lgamma", v)


def _uniform_pdf(x, low, high, log):
    w = high - low
    return -np.log(w) if log else 1.0 / w


def _normal_pdf(x, mu, sigma, log):
    e = -0.5 * (x - mu) ** 2 / (sigma * sigma)
    norm = math.sqrt(2.0 * math.pi) * sigma
    return e - np.log(norm) if log else np.exp(e) / norm


def _gamma_pdf(x, alpha, beta, log):
    lp = alpha * np.log(beta) + (alpha - 1.0) * np.log(x) - beta * x - _lgamma(alpha)
    return lp if log else np.exp(lp)


def _exponential_pdf(x, lam, log):
    return np.log(lam) - lam * x if log else lam * np.exp(-lam * x)


def _poisson_pdf(x, lam, log):
    lp = x * np.log(lam) - _lgamma(x + 1.0) - lam
    return lp if log else np.exp(lp)


def _nb_lpdf(x, k, p):
    return (_lgamma(x + k) - _lgamma(x + 1.0) - _lgamma(k)) + k * np.log(p) + x * np.log(1.0 - p)


def _negative_binomial_pdf(x, k, p, log):
    lp = _nb_lpdf(x, k, p)
    return lp if log else np.exp(lp)


def _generalized_negative_binomial_pdf(x, mu, alpha, log):
    lp = _nb_lpdf(x, 1.0 / alpha, 1.0 / (mu * alpha + 1.0))
    return lp if log else np.exp(lp)


class _Parts:
    """What a density's VJP is written with: the sample's extra axes, the scaled cotangent
    (g, or g times the density: d pdf = pdf d log pdf), a parameter broadcast along the extra
    axes (``e``) and a sample-shaped cotangent summed back to the parameters' shape (``r``)."""

    def __init__(self, F: Any, at: dict, g: Any, y: Any, x: Any, p: Any) -> None:
        self.F = F
        self.pshape = tuple(p.shape)
        self.k = x.ndim - p.ndim
        self.axes = tuple(range(p.ndim, x.ndim))
        self.s = g if at["is_log"] else F.mul(g, y)

    def e(self, p: Any) -> Any:
        return self.F.reshape(p, shape=self.pshape + (1,) * self.k) if self.k else p

    def r(self, c: Any) -> Any:
        return self.F.reshape(self.F.sum(c, axis=self.axes), shape=self.pshape) if self.k else c


def _uniform_vjp(F, at, g, y, x, low, high):
    t = _Parts(F, at, g, y, x, low)
    gl = F.div(t.r(t.s), F.sub(high, low))
    return None, gl, F.negative(gl)


def _normal_vjp(F, at, g, y, x, mu, sigma):
    t = _Parts(F, at, g, y, x, mu)
    d = F.sub(x, t.e(mu))
    v = t.e(F.square(sigma))
    sd = F.div(F.mul(t.s, d), v)  # (the mean's, per sample)
    gs = F.div(F.mul(t.s, F.sub_scalar(F.div(F.square(d), v), scalar=1.0)), t.e(sigma))
    return F.negative(sd), t.r(sd), t.r(gs)


def _gamma_vjp(F, at, g, y, x, alpha, beta):
    t = _Parts(F, at, g, y, x, alpha)
    gx = F.mul(t.s, F.sub(F.div(t.e(F.sub_scalar(alpha, scalar=1.0)), x), t.e(beta)))
    ga = F.mul(t.s, F.add(F.log(x), t.e(F.sub(F.log(beta), F.polygamma(alpha)))))
    gb = F.mul(t.s, F.sub(t.e(F.div(alpha, beta)), x))
    return gx, t.r(ga), t.r(gb)


def _exponential_vjp(F, at, g, y, x, lam):
    t = _Parts(F, at, g, y, x, lam)
    gx = F.negative(F.mul(t.s, t.e(lam)))
    gl = F.mul(t.s, F.sub(t.e(F.reciprocal(lam)), x))
    return gx, t.r(gl)


def _poisson_vjp(F, at, g, y, x, lam):
    t = _Parts(F, at, g, y, x, lam)
    return None, t.r(F.mul(t.s, F.sub_scalar(F.div(x, t.e(lam)), scalar=1.0)))


def _nb_grads(F: Any, t: _Parts, x: Any, k: Any, p: Any) -> tuple[Any, Any]:
    """The sample-shaped cotangents of k and p (MXNet's LPDF_GRAD)."""
    gk = F.mul(t.s, F.add(F.polygamma(F.add(x, t.e(k))), t.e(F.sub(F.log(p), F.polygamma(k)))))
    gp = F.mul(t.s, F.sub(t.e(F.div(k, p)), F.div(x, t.e(F.rsub_scalar(p, scalar=1.0)))))
    return gk, gp


def _negative_binomial_vjp(F, at, g, y, x, k, p):
    t = _Parts(F, at, g, y, x, k)
    gk, gp = _nb_grads(F, t, x, k, p)
    return None, t.r(gk), t.r(gp)


def _generalized_negative_binomial_vjp(F, at, g, y, x, mu, alpha):
    t = _Parts(F, at, g, y, x, mu)
    den = F.add_scalar(F.mul(mu, alpha), scalar=1.0)  # k = 1 / alpha, p = 1 / den
    gk, gp = _nb_grads(F, t, x, F.reciprocal(alpha), F.reciprocal(den))
    gk, gp = t.r(gk), t.r(gp)
    d2 = F.square(den)
    g_mu = F.negative(F.mul(gp, F.div(alpha, d2)))
    g_alpha = F.negative(F.add(F.div(gk, F.square(alpha)), F.mul(gp, F.div(mu, d2))))
    return None, g_mu, g_alpha


def _pdf_infer(name: str, params: tuple[str, ...]) -> Callable[..., Spec]:
    def infer(at: dict, x: Spec, *ps: Spec) -> Spec:
        dt = same_dtype(name, x, *ps)
        if dt not in FLOAT_DTYPES:
            raise DTypeError(f"{name}: takes floating point arrays only (float16, float32, float64), got {dt}")
        first = ps[0].shape
        for p, spec in zip(params[1:], ps[1:]):
            if spec.shape != first:
                raise ShapeError(
                    f"{name}: the parameters must have one shape: {params[0]} has {first}, {p} has {spec.shape}"
                )
        if len(x.shape) < len(first) or x.shape[: len(first)] != first:
            raise ShapeError(
                f"{name}: sample {x.shape} must have the parameters' shape {first} as its leading axes "
                "(then any number of axes of samples)"
            )
        return Spec(x.shape, dt)

    return infer


def _pdf_forward(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    def forward(cx, at, x, *ps):
        out = np.empty(x.shape, x.dtype)
        n, m = x.size, ps[0].size
        if n == 0:
            return out
        per = n // m  # samples per distribution
        xf, of = x.reshape(-1), out.reshape(-1)
        pf = [p.reshape(-1) for p in ps]
        log = at["is_log"]
        with np.errstate(all="ignore"):  # (outside the support, a parameter out of range: the formula's NaN, inf)
            for i in range(0, n, CHUNK):
                end = min(i + CHUNK, n)
                if per == 1:
                    vs = [np.asarray(p[i:end], np.float64) for p in pf]
                else:
                    j = np.arange(i, end) // per
                    vs = [p[j].astype(np.float64) for p in pf]
                of[i:end] = fn(np.asarray(xf[i:end], np.float64), *vs, log)
        return out

    return forward


PDF_ARRAYS = 12  # (float64 temporaries of a chunk at once: the parameters gathered, the formula's steps)


def _pdf(name: str, params: tuple[str, ...], fn: Callable[..., np.ndarray], vjp: Any, arrays: int, doc: str) -> None:
    """A density op: inputs sample and ``params``; ``arrays``: the sample-shaped arrays its VJP
    makes at once (and polygamma's chunks, for those that call it)."""
    forward = _pdf_forward(fn)
    forward.__doc__ = doc

    def vjp_scratch(at: dict, x: Spec, *ps: Spec) -> int:
        n = prod(x.shape)
        return arrays * n * np.dtype(x.dtype).itemsize + float64_scratch(POLYGAMMA_ARRAYS)(at, x)

    defop(
        name,
        ("sample", *params),
        (IS_LOG,),
        infer=_pdf_infer(name, params),
        vjp=vjp,
        scratch=float64_scratch(PDF_ARRAYS),
        vjp_scratch=vjp_scratch,
    )(forward)


_SHAPES = (
    " ``sample`` has the parameters' shape and any trailing axes (the samples of each "
    "distribution); the result has sample's shape. ``is_log``: the log-density."
)
_pdf(
    "random_pdf_uniform",
    ("low", "high"),
    _uniform_pdf,
    _uniform_vjp,
    2,
    "The density of uniform distributions on [low, high): 1 / (high - low), as MXNet's wherever the "
    "sample is (its support is not checked); the sample's gradient is zero." + _SHAPES,
)
_pdf(
    "random_pdf_normal",
    ("mu", "sigma"),
    _normal_pdf,
    _normal_vjp,
    6,
    "The density of normal distributions of means ``mu`` and standard deviations ``sigma``." + _SHAPES,
)
_pdf(
    "random_pdf_gamma",
    ("alpha", "beta"),
    _gamma_pdf,
    _gamma_vjp,
    6,
    "The density of gamma distributions of shapes ``alpha`` and rates ``beta`` (MXNet's: "
    "beta^alpha x^(alpha - 1) exp(-beta x) / gamma(alpha); its sampler's beta is a scale)." + _SHAPES,
)
_pdf(
    "random_pdf_exponential",
    ("lam",),
    _exponential_pdf,
    _exponential_vjp,
    4,
    "The density of exponential distributions of rates ``lam``: lam exp(-lam x)." + _SHAPES,
)
_pdf(
    "random_pdf_poisson",
    ("lam",),
    _poisson_pdf,
    _poisson_vjp,
    4,
    "The probability of counts (sample) of poisson distributions of rates ``lam``: "
    "exp(x log lam - lgamma(x + 1) - lam), a non-integer x too; no gradient for the sample "
    "(MXNet's: zero)." + _SHAPES,
)
_pdf(
    "random_pdf_negative_binomial",
    ("k", "p"),
    _negative_binomial_pdf,
    _negative_binomial_vjp,
    6,
    "The probability of x failures (sample) before the k-th success of trials of success "
    "probability ``p`` (k may be real): gamma(x + k) / (x! gamma(k)) p^k (1 - p)^x; no gradient "
    "for the sample (MXNet's: zero)." + _SHAPES,
)
_pdf(
    "random_pdf_generalized_negative_binomial",
    ("mu", "alpha"),
    _generalized_negative_binomial_pdf,
    _generalized_negative_binomial_vjp,
    6,
    "The probability of counts (sample) of mean ``mu`` and dispersion ``alpha``: the negative "
    "binomial of k = 1 / alpha, p = 1 / (mu alpha + 1) (alpha 0 is NaN, as MXNet's); no gradient "
    "for the sample (MXNet's: zero)." + _SHAPES,
)


# --------------------------------------------------------------------------
# random_pdf_dirichlet: a density of vectors (the categories on the last axis)


def _dirichlet_infer(at: dict, x: Spec, alpha: Spec) -> Spec:
    name = "random_pdf_dirichlet"
    dt = same_dtype(name, x, alpha)
    if dt not in FLOAT_DTYPES:
        raise DTypeError(f"{name}: takes floating point arrays only (float16, float32, float64), got {dt}")
    if not alpha.shape or alpha.shape[-1] == 0:
        raise ShapeError(
            f"{name}: alpha must have a last axis of the categories (at least one), got shape {alpha.shape}"
        )
    if len(x.shape) < len(alpha.shape):  # (MXNet's check)
        raise ShapeError(
            f"{name}: sample {x.shape} must have at least the rank of alpha {alpha.shape} (the distributions' shape)"
        )
    lead = alpha.shape[:-1]
    if x.shape[: len(lead)] != lead or x.shape[-1] != alpha.shape[-1]:
        raise ShapeError(
            f"{name}: sample {x.shape} must be alpha's leading axes {lead}, any axes of samples, then its "
            f"{alpha.shape[-1]} categories"
        )
    return Spec(x.shape[:-1] or (1,), dt)


def _dirichlet_rows(x: Any, alpha: Any) -> tuple[int, int, int]:
    """(distributions, samples of each, categories)."""
    k = int(alpha.shape[-1])
    m = prod(tuple(alpha.shape[:-1]))
    rows = prod(tuple(x.shape[:-1]))
    return m, rows // m if m else 0, k


DIRICHLET_ARRAYS = 4
"""float64 temporaries of a chunk at once: the sample, its log, the parameters gathered, the sum."""


def _dirichlet_scratch(at: dict, x: Spec, alpha: Spec) -> int:
    """``DIRICHLET_ARRAYS`` float64 arrays of a chunk of the sample (whole rows of it) and the
    parameters' own float64 copies: alpha, its lgamma and each distribution's constant."""
    n, k = prod(x.shape), alpha.shape[-1] if alpha.shape else 1
    chunk = min(n, max(CHUNK // max(k, 1), 1) * k)
    return 8 * (DIRICHLET_ARRAYS * chunk + 3 * prod(alpha.shape))


def _dirichlet_vjp(F, at, g, y, x, alpha):
    """d log pdf / d x_j = (alpha_j - 1) / x_j and d log pdf / d alpha_j = log x_j +
    digamma(sum alpha) - digamma(alpha_j), times the density (is_log: 1) and the head
    gradient; alpha's summed over the samples of its distribution (MXNet's)."""
    lead, k = tuple(alpha.shape[:-1]), int(alpha.shape[-1])
    extra = x.ndim - alpha.ndim
    axes = tuple(range(len(lead), len(lead) + extra))
    s = F.reshape(g if at["is_log"] else F.mul(g, y), shape=tuple(x.shape[:-1]) + (1,))
    ae = F.reshape(alpha, shape=lead + (1,) * extra + (k,)) if extra else alpha
    gx = F.mul(s, F.div(F.sub_scalar(ae, scalar=1.0), x))
    dig = F.sub(F.polygamma(F.sum(alpha, axis=-1, keepdims=True)), F.polygamma(alpha))
    de = F.reshape(dig, shape=lead + (1,) * extra + (k,)) if extra else dig
    # (each sample's log x + digamma terms first, then times its density: at x_j = 0 with
    # alpha_j < 1, -inf times inf, where the two apart would add inf and -inf to NaN; MXNet's)
    ga = F.mul(s, F.broadcast_add(F.log(x), de))
    return gx, F.sum(ga, axis=axes) if extra else ga


def _dirichlet_vjp_scratch(at: dict, x: Spec, alpha: Spec) -> int:
    """Sample-sized arrays of its dtype at once: alpha - 1 over x, the head gradient times it,
    log x, times the head gradient (and its sum), and numpy's broadcast of the head gradient
    along the categories: 5 (4 measured); polygamma's chunks."""
    return 5 * prod(x.shape) * np.dtype(x.dtype).itemsize + float64_scratch(POLYGAMMA_ARRAYS, 2)(at, alpha)


@defop(
    "random_pdf_dirichlet",
    ("sample", "alpha"),
    (IS_LOG,),
    infer=_dirichlet_infer,
    vjp=_dirichlet_vjp,
    scratch=_dirichlet_scratch,
    vjp_scratch=_dirichlet_vjp_scratch,
)
def _pdf_dirichlet(cx, at, x, alpha):
    """The density of Dirichlet distributions of concentrations ``alpha`` (..., k) at vectors
    of ``sample`` (alpha's leading axes, any axes of samples, then the k categories):
    gamma(sum alpha) / prod gamma(alpha_j) * prod x_j^(alpha_j - 1), the result of sample's
    shape less its last axis. As MXNet's, the formula as it is: a sample off the simplex has
    the formula's value, one outside (0, 1) the formula's NaN or 0. Computed in float64 a chunk
    at a time, rounded to the inputs' dtype. ``is_log``: the log-density."""
    m, per, k = _dirichlet_rows(x, alpha)
    out = np.empty(x.shape[:-1] or (1,), x.dtype)
    rows = m * per
    if rows == 0:
        return out
    a = alpha.reshape(m, k).astype(np.float64)
    with np.errstate(all="ignore"):  # (a sample at 0 or below, an alpha at 0 or below: inf, NaN)
        const = _lgamma(a.sum(axis=1)) - _lgamma(a).sum(axis=1)
        a -= 1.0
        xf, of = x.reshape(rows, k), out.reshape(-1)
        step = max(CHUNK // k, 1)
        for i in range(0, rows, step):
            end = min(i + step, rows)
            j = np.arange(i, end) // per
            lx = np.log(xf[i:end].astype(np.float64))
            lx *= a[j]
            lp = lx.sum(axis=1)
            lp += const[j]
            of[i:end] = lp if at["is_log"] else np.exp(lp)
    return out


# --------------------------------------------------------------------------
# histogram: MXNet's two outputs as two ops, the counts and the bin edges


HISTOGRAM = (Attr("bin_cnt", "int", None), Attr("range", "floats", None))


def _histogram_check(name: str, at: dict, data: Spec, bins: tuple[Spec, ...]) -> None:
    if data.dtype == "bool":
        raise DTypeError(f"{name}: data must be numbers, not bool")
    if len(bins) > 1:
        raise InvalidInput(f"{name}: takes one array of bin edges at most, got {len(bins)}")
    if bins:  # (bin_cnt and range are not read, as MXNet's)
        if len(bins[0].shape) != 1 or bins[0].shape[0] < 2:
            raise ShapeError(f"{name}: the bin edges must be one vector of at least 2 values, got {bins[0].shape}")
        if bins[0].dtype == "bool":
            raise DTypeError(f"{name}: the bin edges must be numbers, not bool")
        return
    if at["bin_cnt"] is None:
        raise InvalidInput(f"{name}: needs bin_cnt, or an array of bin edges")
    if at["bin_cnt"] < 1:
        raise InvalidInput(f"{name}: bin_cnt must be at least 1, got {at['bin_cnt']}")
    r = at["range"]
    if r is not None and (len(r) != 2 or not math.isfinite(r[1] - r[0]) or r[0] > r[1]):
        raise InvalidInput(f"{name}: range must be two finite numbers a finite width apart, min <= max; got {list(r)}")


def _widened(lo: float, hi: float) -> tuple[float, float]:
    """A range of equal ends widened by 0.5 each way (numpy's rule; MXNet's divides by zero)."""
    return (lo - 0.5, hi + 0.5) if lo == hi else (lo, hi)


def _histogram_range(at: dict) -> tuple[float, float]:
    """The range of equal bins, ``range`` as given (widened when its ends are equal)."""
    lo, hi = at["range"]
    return _widened(lo, hi)


def _histogram_edges_of(at: dict, x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """The edges of equal bins over [lo, hi], MXNet's: (hi * i + (n - i) * lo) / n in float64,
    then in the data's dtype (an integer dtype's truncated, as a C cast)."""
    n = at["bin_cnt"]
    i = np.arange(n + 1, dtype=np.float64)
    edges = (hi * i + (n - i) * lo) / n
    if x.dtype.kind in "iu":  # (a C cast: toward zero, then wrapped into the type, as MXNet's)
        return np.trunc(edges).astype(np.int64).astype(x.dtype)
    return edges.astype(x.dtype)


def _equal_bins(at: dict, x: np.ndarray) -> np.ndarray:
    """MXNet's counting in equal bins: a value in [lo, hi] (in float64) goes to bin
    (v - lo) * n / (hi - lo), the last at most, then one down or up where the edges in the
    data's dtype say it lies past that bin's."""
    lo, hi = _histogram_range(at)
    n = at["bin_cnt"]
    bounds = _histogram_edges_of(at, x, lo, hi).astype(np.float64)
    v = x.astype(np.float64)
    v = v[(v >= lo) & (v <= hi)]
    target = np.minimum(((v - lo) * n / (hi - lo)).astype(np.int64), n - 1)
    target -= v < bounds[target]
    np.maximum(target, 0, out=target)
    target += (v >= bounds[target + 1]) & (target != n - 1)
    return np.bincount(target, minlength=n)


def _by_numpy(at: dict, bins: tuple) -> bool:
    """Equal bins over the data's own range: MXNet falls back to numpy's ``histogram`` there,
    and gives its counts and edges in float32."""
    return not bins and at["range"] is None


def _numpy_edges(name: str, at: dict, flat: np.ndarray) -> np.ndarray:
    """numpy's edges of ``bin_cnt`` equal bins over the data's least and greatest values, as
    MXNet 1.9.1's numpy (1.23) gives them: computed in float64, then in the data's float dtype
    (float64 for integers). A range of NaN or of infinite width is refused, naming the op."""
    lo, hi = (float(flat.min()), float(flat.max())) if flat.size else (0.0, 1.0)
    if not math.isfinite(hi - lo):
        raise InvalidInput(f"{name}: the data's range [{lo}, {hi}] is not finite, or too wide: give range")
    lo, hi = _widened(lo, hi)
    return np.linspace(lo, hi, at["bin_cnt"] + 1).astype(flat.dtype if flat.dtype.kind == "f" else np.float64)


def _histogram_infer(at: dict, data: Spec, *bins: Spec) -> Spec:
    _histogram_check("histogram", at, data, bins)
    return Spec((bins[0].shape[0] - 1 if bins else at["bin_cnt"],), "float32" if _by_numpy(at, bins) else "int64")


def _histogram_scratch(at: dict, x: Spec, *bins: Spec) -> int:
    """The values in float64, their bins and tests (or numpy's sorted copy of them); per bin,
    the counts, the edges in float64 and our int64 counts."""
    n = bins[0].shape[0] if bins else at["bin_cnt"] + 1
    return 40 * prod(x.shape) + 40 * n


@defop("histogram", ("data", "*bins"), HISTOGRAM, infer=_histogram_infer, scratch=_histogram_scratch, most=2)
def _histogram(cx, at, x, *bins):
    """The counts of ``data``'s values (flattened) in ``bin_cnt`` equal bins over ``range``
    (the data's least and greatest values when not given), or in the bins between the values
    of a ``bins`` array of edges (increasing; ``bin_cnt`` and ``range`` are then not read):
    each bin holds its left edge, the last its right edge too; values outside the bins and
    NaN are not counted. Equal bins count as MXNet's: each value's bin from its place in the
    range, moved by one where the edges ``histogram_edges`` gives (in the data's dtype) say it
    lies past that bin. int64; without ``range``, numpy's ``histogram`` of the data, in float32
    (MXNet's fallback to numpy there). Not differentiable."""
    flat = x.reshape(-1)
    if _by_numpy(at, bins):  # (each value in the bin its edges say)
        return np.histogram(flat, bins=_numpy_edges("histogram", at, flat))[0].astype(np.float32)
    if not bins:
        return _equal_bins(at, flat).astype(np.int64, copy=False)
    edges = bins[0].astype(np.float64)
    if np.isnan(edges).any() or (np.diff(edges) < 0).any():
        raise InvalidInput("histogram: the bin edges must increase (and not be NaN)")
    counts, _ = np.histogram(flat.astype(np.float64), bins=edges)  # (compared in float64, as MXNet's)
    return counts.astype(np.int64, copy=False)


def _histogram_edges_infer(at: dict, data: Spec) -> Spec:
    _histogram_check("histogram_edges", at, data, ())
    return Spec((at["bin_cnt"] + 1,), "float32" if _by_numpy(at, ()) else data.dtype)


@defop(
    "histogram_edges",
    ("data",),
    HISTOGRAM,
    infer=_histogram_edges_infer,
    scratch=lambda at, x: 48 * (at["bin_cnt"] + 1),  # (the places, the edges and their terms in float64)
)
def _histogram_edges(cx, at, x):
    """The ``bin_cnt + 1`` edges of ``histogram``'s equal bins over ``range``, in the data's
    dtype (truncated for an integer one, as MXNet's); without ``range``, numpy's edges over the
    data's least and greatest values, in float32 (MXNet's fallback to numpy there). Not
    differentiable."""
    flat = x.reshape(-1)
    if _by_numpy(at, ()):
        return _numpy_edges("histogram_edges", at, flat).astype(np.float32)
    return _histogram_edges_of(at, flat, *_histogram_range(at))
