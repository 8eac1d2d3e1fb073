"""More elementwise ops: logs, trigonometry, rounding, clipping, ``where``, and the special
functions (erf, erfinv, gamma, gammaln, polygamma)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import kernels
from .errors import InvalidInput, ShapeError
from .ops import (
    _binary,
    _binary_infer_for,
    _unary,
    _zero_grad,
    broadcast_shapes,
    cast,
    floats_only,
    int_cast,
    no_bool_arithmetic,
    typed_scalar,
    unbroadcast,
)
from .optable import FLOAT_DTYPES, REQUIRED, Attr, Spec, defop, like_infer, prod

_unary(
    "log1p",
    lambda xp, x: xp.log1p(x),
    lambda F, at, g, y, x: (F.div(g, F.add_scalar(x, scalar=1.0)),),
    "log(1 + x), accurate near 0.",
)
_unary(
    "expm1",
    lambda xp, x: xp.expm1(x),
    lambda F, at, g, y, x: (F.mul(g, F.exp(x)),),  # (not y + 1: far left of 0, y + 1 rounds to 0)
    "exp(x) - 1, accurate near 0.",
)
_unary(
    "rsqrt",
    lambda xp, x: 1.0 / xp.sqrt(x),
    lambda F, at, g, y, x: (F.mul(g, F.mul_scalar(F.pow_scalar(y, scalar=3.0), scalar=-0.5)),),
    "1 / sqrt(x).",
    half=True,
)
_unary(
    "reciprocal",
    lambda xp, x: 1.0 / x,
    lambda F, at, g, y, x: (F.negative(F.mul(g, F.square(y))),),
    "1 / x.",
)
_unary("sin", lambda xp, x: xp.sin(x), lambda F, at, g, y, x: (F.mul(g, F.cos(x)),), "The sine of x.")
_unary("cos", lambda xp, x: xp.cos(x), lambda F, at, g, y, x: (F.negative(F.mul(g, F.sin(x))),), "The cosine of x.")
_unary(
    "tan",
    lambda xp, x: xp.tan(x),
    lambda F, at, g, y, x: (F.mul(g, F.add_scalar(F.square(y), scalar=1.0)),),
    "The tangent of x.",
)
_unary(
    "softrelu",
    lambda xp, x: xp.logaddexp(0, x),
    lambda F, at, g, y, x: (F.mul(g, F.sigmoid(x)),),
    "log(1 + exp(x)), computed without overflow.",
    eager=floats_only(lambda at, g, y, x: (g * (1.0 / (1.0 + np.exp(-x))),)),
)
_unary(
    "softsign",
    lambda xp, x: x / (1 + xp.abs(x)),
    lambda F, at, g, y, x: (F.div(g, F.square(F.add_scalar(F.abs(x), scalar=1.0))),),
    "x / (1 + |x|).",
    eager=floats_only(lambda at, g, y, x: (g / np.square(np.abs(x) + 1.0),)),
    half=True,
)
_LN2 = float(np.log(2.0))
_LN10 = float(np.log(10.0))
_unary(
    "log2",
    lambda xp, x: xp.log2(x),
    lambda F, at, g, y, x: (F.div(g, F.mul_scalar(x, scalar=_LN2)),),
    "The base-2 logarithm of x.",
)
_unary(
    "log10",
    lambda xp, x: xp.log10(x),
    lambda F, at, g, y, x: (F.div(g, F.mul_scalar(x, scalar=_LN10)),),
    "The base-10 logarithm of x.",
)
_unary(
    "cbrt",
    lambda xp, x: xp.cbrt(x),
    lambda F, at, g, y, x: (F.div(g, F.mul_scalar(F.square(y), scalar=3.0)),),
    "The cube root of x.",
)
_unary(
    "rcbrt",
    lambda xp, x: 1.0 / xp.cbrt(x),
    lambda F, at, g, y, x: (F.mul(g, F.div(F.mul_scalar(y, scalar=-1.0 / 3.0), x)),),
    "1 / cbrt(x).",
    half=True,
)
_unary(
    "arcsin",
    lambda xp, x: xp.arcsin(x),
    lambda F, at, g, y, x: (F.mul(g, F.rsqrt(F.rsub_scalar(F.square(x), scalar=1.0))),),
    "The inverse sine of x (NaN outside [-1, 1]).",
)
_unary(
    "arccos",
    lambda xp, x: xp.arccos(x),
    lambda F, at, g, y, x: (F.negative(F.mul(g, F.rsqrt(F.rsub_scalar(F.square(x), scalar=1.0)))),),
    "The inverse cosine of x (NaN outside [-1, 1]).",
)
_unary(
    "arctan",
    lambda xp, x: xp.arctan(x),
    lambda F, at, g, y, x: (F.div(g, F.add_scalar(F.square(x), scalar=1.0)),),
    "The inverse tangent of x.",
)
_unary("sinh", lambda xp, x: xp.sinh(x), lambda F, at, g, y, x: (F.mul(g, F.cosh(x)),), "The hyperbolic sine of x.")
_unary("cosh", lambda xp, x: xp.cosh(x), lambda F, at, g, y, x: (F.mul(g, F.sinh(x)),), "The hyperbolic cosine of x.")
_unary(
    "arcsinh",
    lambda xp, x: xp.arcsinh(x),
    lambda F, at, g, y, x: (F.mul(g, F.rsqrt(F.add_scalar(F.square(x), scalar=1.0))),),
    "The inverse hyperbolic sine of x.",
)
_unary(
    "arccosh",
    lambda xp, x: xp.arccosh(x),
    lambda F, at, g, y, x: (F.mul(g, F.rsqrt(F.sub_scalar(F.square(x), scalar=1.0))),),
    "The inverse hyperbolic cosine of x (NaN below 1).",
)
_unary(
    "arctanh",
    lambda xp, x: xp.arctanh(x),
    lambda F, at, g, y, x: (F.div(g, F.rsub_scalar(F.square(x), scalar=1.0)),),
    "The inverse hyperbolic tangent of x (NaN outside [-1, 1]).",
)
_unary(
    "degrees",
    lambda xp, x: xp.degrees(x),
    lambda F, at, g, y, x: (F.mul_scalar(g, scalar=180.0 / np.pi),),
    "x in radians, converted to degrees.",
    ints="float32",  # (MXNet's integer degrees and radians are in float32)
)
_unary(
    "radians",
    lambda xp, x: xp.radians(x),
    lambda F, at, g, y, x: (F.mul_scalar(g, scalar=np.pi / 180.0),),
    "x in degrees, converted to radians.",
    ints="float32",
)
# (the rounding ops take integers through float64 too, as MXNet's: int64's 2**53 + 1 is 2**53)
_unary("floor", lambda xp, x: xp.floor(x), _zero_grad, "The largest integer <= x; zero gradient.")
_unary("ceil", lambda xp, x: xp.ceil(x), _zero_grad, "The smallest integer >= x; zero gradient.")


def _round(xp, x):
    """Half away from zero, exactly: ``x - trunc(x)`` is exact in floating point, where
    ``floor(x + 0.5)`` rounds the sum first (0.49999997 + 0.5 is 1 in float32)."""
    if x.dtype.kind != "f":
        return x  # (the executor gives a result that is its input an array of its own)
    t = xp.trunc(x)
    return xp.where(xp.abs(x - t) >= 0.5, t + xp.sign(x), t)


_unary("round", _round, _zero_grad, "x rounded half away from zero (as MXNet); zero gradient.")


def _rint(xp, x):
    """MXNet's rint: the nearer integer, a half toward minus infinity (0.5 is 0, -0.5 is -1)."""
    if x.dtype.kind != "f":
        return x
    a = xp.abs(x)
    lo, hi = xp.floor(a), xp.ceil(a)
    return xp.where(x >= 0, xp.where(hi - a >= a - lo, lo, hi), -xp.where(hi - a > a - lo, lo, hi))


_unary(
    "rint",
    _rint,
    _zero_grad,
    "x rounded to the nearer integer, a half toward minus infinity (as MXNet); zero gradient.",
)
_unary("trunc", lambda xp, x: xp.trunc(x), _zero_grad, "x rounded toward zero; zero gradient.", ("fix",))
_unary(
    "logical_not",
    lambda xp, x: x == 0,
    lambda F, at, g, y, x: (None,),
    "1 where x is 0, else 0 (a zero gradient, as MXNet's).",
    ints=None,
)


def _logical_forward(fn):
    def forward(xp, a, b):
        return fn(a != 0, b != 0)

    return forward


for _name, _fn in (("and", np.logical_and), ("or", np.logical_or), ("xor", np.logical_xor)):
    _binary(
        f"logical_{_name}",
        _logical_forward(_fn),
        lambda F, at, g, y, a, b: (None, None),
        f"1 where a {_name} b (non-zero is true), else 0, in the inputs' dtype; no gradient.",
        (f"broadcast_logical_{_name}",),
    )


def _masked(F, mask, g):
    """g where mask is non-zero, else +0: MXNet's masked gradients print 0., where g * mask gives
    -0. for a negative g (relu's, max's and maximum's are g * mask in MXNet too: they stay so)."""
    return F.where(mask, g, F.zeros_like(g))


def _smooth_l1_bound(at: dict) -> tuple[float, float]:
    """scalar^2 and 1/scalar^2, where the quadratic part ends (everywhere for scalar 0)."""
    s2 = at["scalar"] ** 2
    return s2, (1.0 / s2 if s2 else float("inf"))


def _smooth_l1_vjp(F, at, g, y, x):
    s2, bound = _smooth_l1_bound(at)
    if not s2:  # 0.5 * 0 * x^2 everywhere: g * (0 * x), MXNet's (the zeros take x's sign and g's)
        return (F.mul(g, F.mul_scalar(x, scalar=0.0)),)
    inside = F.lesser_scalar(F.abs(x), scalar=bound)
    return (F.mul(g, F.where(inside, F.mul_scalar(x, scalar=s2), F.sign(x))),)


def _smooth_l1_scratch(at: dict, x: Spec) -> int:
    """|x|, the test, x * x and its terms in the dtype computed in (float32 for integers, and
    the integers' copy in it)."""
    n = prod(x.shape)
    k = np.dtype(x.dtype).itemsize if x.dtype in FLOAT_DTYPES else 4
    return n * (5 * k + (0 if x.dtype in FLOAT_DTYPES else 4))


@defop(
    "smooth_l1",
    ("data",),
    (Attr("scalar", "float", 1.0),),
    infer=like_infer,
    no_bools=True,  # (as MXNet's)
    vjp=_smooth_l1_vjp,
    scratch=_smooth_l1_scratch,
    vjp_scratch=_smooth_l1_scratch,
)
def _smooth_l1(cx, at, x):
    """0.5 (s x)^2 where |x| < 1/s^2, else |x| - 0.5/s^2 (s: ``scalar``)."""
    dt = x.dtype
    if dt.kind == "b":
        raise no_bool_arithmetic("smooth_l1")
    if dt.kind in "iu":  # in float32, cast back, as MXNet's
        x = x.astype(np.float32)
    s2, bound = _smooth_l1_bound(at)
    a = cx.xp.abs(x)
    r = cx.xp.where(a < bound, 0.5 * s2 * x * x, a - 0.5 * bound)
    return int_cast(r, dt) if dt.kind in "iu" else cast(r, dt)


def _hard_sigmoid_vjp(F, at, g, y, x):
    z = F.add_scalar(F.mul_scalar(x, scalar=at["alpha"]), scalar=at["beta"])
    inside = F.mul(F.greater_scalar(z, scalar=0.0), F.lesser_scalar(z, scalar=1.0))
    return (_masked(F, inside, F.mul_scalar(g, scalar=at["alpha"])),)


@defop(
    "hard_sigmoid",
    ("data",),
    (Attr("alpha", "float", 0.2), Attr("beta", "float", 0.5)),
    infer=like_infer,
    vjp=_hard_sigmoid_vjp,
)
def _hard_sigmoid(cx, at, x):
    """clip(alpha x + beta, 0, 1), rounded as MXNet's: alpha and beta in float32 (a float64
    x sees 0.2f, not 0.2), alpha x rounded to x's dtype, the sum rounded once more (a float16
    x's in float32)."""
    alpha, beta = np.float32(at["alpha"]), np.float32(at["beta"])
    return cast(cx.xp.clip(cast(alpha * x, x.dtype) + beta, 0.0, 1.0), x.dtype)


@defop(
    "clip",
    ("data",),
    (Attr("a_min", "float", REQUIRED), Attr("a_max", "float", REQUIRED)),
    infer=like_infer,
    no_bools=True,  # (as MXNet's)
    vjp=lambda F, at, g, y, x: (
        _masked(
            F, F.mul(F.greater_equal_scalar(x, scalar=at["a_min"]), F.lesser_equal_scalar(x, scalar=at["a_max"])), g
        ),
    ),
)
def _clip(cx, at, x):
    """x limited to [a_min, a_max]; the gradient passes only inside the range. With a_min
    above a_max, as MXNet's: a_max where x > a_max, else a_min where x < a_min (and a zero
    gradient everywhere)."""
    if x.dtype.kind == "b":
        raise no_bool_arithmetic("clip")
    a_min, a_max = _clip_bounds(at["a_min"], at["a_max"], x.dtype)
    lo, hi = typed_scalar(a_min, x.dtype), typed_scalar(a_max, x.dtype)
    if a_min > a_max:
        return cast(cx.xp.where(x > hi, hi, cx.xp.where(x < lo, lo, x)), x.dtype)
    return cast(cx.xp.clip(x, lo, hi), x.dtype)


def _clip_bounds(a_min: float, a_max: float, dtype: np.dtype) -> tuple[float, float]:
    """The bounds as MXNet compares with them: a NaN one is no bound, and for an integer
    dtype one past its range is its end (cast as it is, inf or 1e10 wrapped to INT_MIN:
    ``clip(x, 0, inf)`` of int32 gave INT_MIN everywhere)."""
    if a_min != a_min:
        a_min = -math.inf
    if a_max != a_max:
        a_max = math.inf
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        a_min = min(max(a_min, info.min), info.max)
        a_max = min(max(a_max, info.min), info.max)
    return a_min, a_max


def _row_condition(cond: tuple[int, ...], out: tuple[int, ...]) -> tuple[int, ...]:
    """The shape a condition acts as: a vector for an array of more dimensions picks rows
    (its length is the first axis's, as in MXNet); any other, its own (broadcast)."""
    if len(cond) == 1 and len(out) > 1 and cond[0] != 1:  # (one value: for all, broadcast)
        if cond[0] != out[0]:
            raise ShapeError(f"where: a condition of shape {cond} picks rows of {out}: its length must be {out[0]}")
        return (cond[0],) + (1,) * (len(out) - 1)
    return cond


def _where_infer(at: dict, cond: Spec, x: Spec, y: Spec) -> Spec:
    out = _binary_infer_for("where")(at, x, y)
    if broadcast_shapes("where", _row_condition(cond.shape, out.shape), out.shape) != out.shape:
        raise ShapeError(f"where: condition shape {cond.shape} does not fit {out.shape}")
    return out


def _where_vjp(F, at, g, out, cond, x, y):
    rows = _row_condition(tuple(cond.shape), tuple(g.shape))
    if rows != tuple(cond.shape):
        cond = F.reshape(cond, shape=rows)
    # where, not g * mask and g - that: each side's masked entries are +0, as MXNet's
    zero = F.zeros_like(g)
    gx = F.where(cond, g, zero)
    gy = F.where(cond, zero, g)
    return None, unbroadcast(F, gx, tuple(x.shape)), unbroadcast(F, gy, tuple(y.shape))


@defop("where", ("condition", "x", "y"), infer=_where_infer, vjp=_where_vjp)
def _where(cx, at, cond, x, y):
    """x where condition is non-zero, else y (a vector condition for arrays of more
    dimensions picks their rows, as in MXNet)."""
    out = broadcast_shapes("where", x.shape, y.shape)
    return cast(cx.xp.where((cond != 0).reshape(_row_condition(cond.shape, out)), x, y), x.dtype)


# --------------------------------------------------------------------------
# special functions: erf, erfinv, gamma, gammaln and the polygamma functions of their gradients.
# Each is computed in float64 and rounded to the input's dtype (an integer one truncates, as
# MXNet's: erf of int32 1 is 0); erf, erfc, gamma and lgamma come from kernels.special (numba,
# or Python's math module), erfinv and the polygamma functions are written here.

_SQRT_PI = float(np.sqrt(np.pi))


STEP_WORK = 1 << 16
"""The work (multiply-adds, the unit of an op's ``work``) to count for one step of an op's
Python loop of numpy calls: about 5 us, what 65,536 multiply-adds take. An op whose time goes
to such steps (a loop over time steps, bins or displacements) declares them, so a server does
not start a long one in a slice of its event loop."""


CHUNK = 1 << 14
"""Elements a special function computes at a time: its float64 temporaries (up to a dozen
arrays of the chunk, erfinv's Newton steps) stay within a couple of MiB whatever the input's
size, where the whole array's took 50 times the result."""


def in_float64(fn: Any, x: np.ndarray) -> np.ndarray:
    """``fn`` (float64 in, float64 out, elementwise) over ``x`` a chunk at a time, the
    result rounded to x's dtype (``_rounded``)."""
    out = np.empty(x.shape, x.dtype)
    flat = out.reshape(-1)
    with np.errstate(all="ignore"):  # (poles and overflows are the answers: inf, NaN)
        for i in range(0, flat.size, CHUNK):
            flat[i : i + CHUNK] = _rounded(fn(np.asarray(x.flat[i : i + CHUNK], np.float64)), x.dtype)
    return out


def float64_scratch(arrays: int, results: int = 0) -> Any:
    """The working memory of ``in_float64`` (``scratch``): ``arrays`` float64 temporaries of a
    chunk at once, and ``results`` arrays of the result's size (a VJP's products, each a
    table op's result)."""

    def hook(at: dict, x: Spec, *rest: Spec) -> int:
        n = math.prod(x.shape)
        return min(n, CHUNK) * 8 * arrays + results * n * np.dtype(x.dtype).itemsize

    return hook


def _special(name: str, xp: Any, x: Any) -> Any:
    return in_float64(lambda v: kernels.special(name, v), x)


def _rounded(r: np.ndarray, dt: np.dtype) -> np.ndarray:
    """A float64 result in the input's dtype: an integer one as MXNet casts it (``int_cast``:
    gamma of int32 0 is its minimum)."""
    if dt.kind in "iu":
        return int_cast(r, dt)
    with np.errstate(all="ignore"):
        return r.astype(dt)


# erfinv's first guess: Giles' single-precision approximation ("Approximating the erfinv
# function", GPU Computing Gems, 2011), for w = -log((1 - y)(1 + y)) below 5 and above
_GILES_CENTRAL = (
    2.81022636e-08,
    3.43273939e-07,
    -3.5233877e-06,
    -4.39150654e-06,
    0.00021858087,
    -0.00125372503,
    -0.00417768164,
    0.246640727,
    1.50140941,
)
_GILES_TAIL = (
    -0.000200214257,
    0.000100950558,
    0.00134934322,
    -0.00367342844,
    0.00573950773,
    -0.0076224613,
    0.00943887047,
    1.00167406,
    2.83297682,
)


def erfinv64(y: np.ndarray) -> np.ndarray:
    """The inverse of erf on float64: Giles' approximation refined by Newton steps on erf
    (|y| <= 0.5) or on log(erfc) (above, where 1 - |y| is exact and erfc keeps the tail's
    digits; in logs, where Giles' fit, made for float32, starts far below the root as 1 - |y|
    nears float64's last step, each step goes most of the way, where one on erfc went
    1 / (2x)); +-inf at +-1, NaN outside [-1, 1]."""
    y = np.asarray(y, np.float64)
    a = np.abs(y)
    inside = a < 1.0  # (NaN is not)
    t = np.where(inside, a, 0.0)
    with np.errstate(all="ignore"):
        w = -np.log((1.0 - t) * (1.0 + t))
        central = w < 5.0
        u = np.where(central, w - 2.5, np.sqrt(w) - 3.0)
        p = np.where(central, _GILES_CENTRAL[0], _GILES_TAIL[0])
        for c, d in zip(_GILES_CENTRAL[1:], _GILES_TAIL[1:]):
            p = np.where(central, c, d) + p * u
        x = p * t
        small = t <= 0.5
        rest = 1.0 - t
        log_rest = np.log(np.where(small, 1.0, rest))
        for _ in range(4):
            slope = (2.0 / _SQRT_PI) * np.exp(-x * x)  # erf's
            tail = kernels.special("erfc", x)
            # erf(x) - t, and in the tail (log erfc(x) - log(1 - t)) * erfc(x): over erf's slope, the step
            diff = np.where(small, kernels.special("erf", x) - t, (log_rest - np.log(tail)) * tail)
            x = x - diff / slope
    x = np.where(inside, x, np.where(a == 1.0, np.inf, np.nan))
    return np.copysign(x, y)


_BERNOULLI = (1 / 6, -1 / 30, 1 / 42, -1 / 30, 5 / 66, -691 / 2730, 7 / 6)  # B2, B4, ..., B14


def _cot_derivative(n: int) -> np.ndarray:
    """The coefficients (ascending) of P_n, the polynomial in c = cot(u) that is the n-th
    derivative of cot(u): P_0 = c, P_(k+1) = -(1 + c^2) P_k'(c)."""
    p = np.array([0.0, 1.0])
    for _ in range(n):
        p = -np.polynomial.polynomial.polymul([1.0, 0.0, 1.0], np.polynomial.polynomial.polyder(p))
    return p


def polygamma64(n: int, x: np.ndarray) -> np.ndarray:
    """psi^(n)(x), the n-th derivative of digamma (n = 0: digamma itself), on float64.

    x > 0 is carried up to 10 or more by psi^(n)(x) = psi^(n)(x + 1) - (-1)^n n! / x^(n+1),
    where the asymptotic series (Bernoulli numbers to B14) is good to float64's precision;
    x < 0 is reflected to 1 - x: psi^(n)(x) = (-1)^n psi^(n)(1 - x) - pi^(n+1) P_n(cot(pi x)).
    At the poles (0 and the negative integers), inf as MXNet's digamma (NaN for even n >= 2,
    where the sign depends on the side)."""
    x = np.asarray(x, np.float64)
    with np.errstate(all="ignore"):
        pole = (x <= 0) & (x == np.floor(x)) & np.isfinite(x)
        neg = (x < 0) & ~pole & np.isfinite(x)
        z = np.where(neg, 1.0 - x, np.where(pole | (x == -np.inf), 1.0, x))
        acc = np.zeros_like(z)
        for _ in range(11):  # z > 0: at most 10 steps to reach 10
            low = z < 10.0
            acc += np.where(low, z ** -(n + 1.0), 0.0)
            z = np.where(low, z + 1.0, z)
        fact = float(math.factorial(n))
        # the asymptotic series at z >= 10
        series = np.zeros_like(z)
        for k, b in enumerate(_BERNOULLI, start=1):
            series += b * math.factorial(2 * k + n - 1) / math.factorial(2 * k) * z ** -(2.0 * k + n)
        if n == 0:
            r = np.log(z) - 0.5 / z - series - acc
        else:
            r = (-1.0) ** (n + 1) * (math.factorial(n - 1) / z**n + fact / (2.0 * z ** (n + 1)) + series)
            r = r - (-1.0) ** n * fact * acc
        r = np.where(np.isinf(x), np.where(x > 0, 0.0 if n else np.inf, np.nan), r)
        if neg.any():
            c = 1.0 / np.tan(np.pi * x)
            cot_n = np.polynomial.polynomial.polyval(c, _cot_derivative(n))
            r = np.where(neg, (-1.0) ** n * r - np.pi ** (n + 1) * cot_n, r)
        return np.where(pole, np.nan if n >= 2 and n % 2 == 0 else np.inf, r)


POLYGAMMA_ARRAYS = 10  # (float64 temporaries of a chunk at once in polygamma64: 7.5 measured)


def _erf_vjp(F, at, g, y, x):
    return (F.mul(g, F.mul_scalar(F.exp(F.negative(F.square(x))), scalar=2.0 / _SQRT_PI)),)


def _erfinv_int(v: np.ndarray) -> np.ndarray:
    """erfinv for an integer input: past +-1 it is 0, MXNet's (a NaN of an integer type);
    +-1 is +-inf, cast as any other infinity."""
    r = erfinv64(v)
    return np.where(np.isnan(r), 0.0, r)


def _erfinv_vjp(F, at, g, y, x):
    return (F.mul(g, F.mul_scalar(F.exp(F.square(y)), scalar=_SQRT_PI / 2.0)),)


_unary(
    "erf",
    lambda xp, x: _special("erf", xp, x),
    _erf_vjp,
    "The Gauss error function, 2/sqrt(pi) times the integral of exp(-t^2) from 0 to x.",
    scratch=float64_scratch(4),
    vjp_scratch=float64_scratch(0, 5),
    ints=None,  # (each special function: in float64 a chunk at a time, integers too)
)
_unary(
    "erfinv",
    lambda xp, x: in_float64(erfinv64 if x.dtype.kind == "f" else _erfinv_int, x),
    _erfinv_vjp,
    "The inverse of erf: +-inf at +-1, NaN outside [-1, 1].",
    scratch=float64_scratch(16),
    vjp_scratch=float64_scratch(0, 4),
    ints=None,
)
_unary(
    "gamma",
    lambda xp, x: _special("gamma", xp, x),
    lambda F, at, g, y, x: (F.mul(g, F.mul(y, F.polygamma(x, n=0))),),
    "The gamma function (NaN at the negative integers, +-inf at +-0).",
    scratch=float64_scratch(4),
    vjp_scratch=float64_scratch(POLYGAMMA_ARRAYS, 3),
    ints=None,
)
_unary(
    "gammaln",
    lambda xp, x: _special("lgamma", xp, x),
    lambda F, at, g, y, x: (F.mul(g, F.polygamma(x, n=0)),),
    "log |gamma(x)| (inf at 0 and the negative integers).",
    scratch=float64_scratch(4),
    vjp_scratch=float64_scratch(POLYGAMMA_ARRAYS, 2),
    ints=None,
)


def _polygamma_infer(at: dict, x: Spec) -> Spec:
    if not 0 <= at["n"] <= 16:
        raise InvalidInput(f"polygamma: n must be in [0, 16], got {at['n']}")
    return x


@defop(
    "polygamma",
    ("data",),
    (Attr("n", "int", 0),),
    infer=_polygamma_infer,
    vjp=lambda F, at, g, y, x: (F.mul(g, F.polygamma(x, n=at["n"] + 1)),),
    aliases=("digamma",),
    scratch=float64_scratch(POLYGAMMA_ARRAYS),
    vjp_scratch=float64_scratch(POLYGAMMA_ARRAYS, 2),
)
def _polygamma(cx, at, x):
    """The n-th derivative of digamma, the logarithmic derivative of gamma (n = 0, the default:
    digamma itself; the gradient of gammaln). Not in MXNet 1.9.1's nd: the gradients of gamma
    and gammaln are written with it."""
    if x.dtype.kind == "b":
        raise no_bool_arithmetic("polygamma")
    n = at["n"]
    return in_float64(lambda v: polygamma64(n, v), x)
