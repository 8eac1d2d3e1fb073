"""Array ops beyond the core: more creation, reductions, ordering, shape
manipulation, gathers along an axis, and batched matrix products."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from . import kernels
from .errors import IndexOutOfRange, InvalidInput, ShapeError, echo
from .ops import (
    AXIS,
    DT,
    EXCLUDE,
    FORWARD_STYPE,
    KEEPDIMS,
    SHAPE,
    _getitem_infer,
    _reduction,
    _spread,
    accumulator,
    at_least_1d,
    broadcast_shapes,
    check_shape,
    dense_only,
    draw_dtype,
    no_bool_arithmetic,
    norm_axes,
    parse_key,
    same_dtype,
    unbroadcast,
)
from .optable import DEFAULT_DTYPE, FLOAT_DTYPES, OPS, REQUIRED, ZERO_VJPS, Attr, Spec, defop, prod
from .tape import Patch

# --------------------------------------------------------------------------
# creation


def _linspace_infer(at: dict) -> Spec:
    if at["num"] < 0:
        raise InvalidInput("linspace: num must not be negative")
    return Spec((at["num"],), at["dtype"] or DEFAULT_DTYPE)


@defop(
    "linspace",
    (),
    (
        Attr("start", "float", REQUIRED),
        Attr("stop", "float", REQUIRED),
        Attr("num", "int", REQUIRED),
        Attr("endpoint", "bool", True),
        DT,
    ),
    infer=_linspace_infer,
    scratch=lambda at: 16 * max(at["num"], 0),  # (numpy's: float64 steps, then the dtype's copy)
)
def _linspace(cx, at):
    """``num`` evenly spaced values from start to stop."""
    r = cx.xp.linspace(at["start"], at["stop"], at["num"], endpoint=at["endpoint"])
    return r.astype(at["dtype"] or DEFAULT_DTYPE)


def _eye_infer(at: dict) -> Spec:
    n, m = at["N"], at["M"] or at["N"]
    return Spec(check_shape("eye", (n, m)), at["dtype"] or DEFAULT_DTYPE)


@defop(
    "eye",
    (),
    (Attr("N", "int", REQUIRED), Attr("M", "int", 0), Attr("k", "int", 0), DT),
    infer=_eye_infer,
)
def _eye(cx, at):
    """A 2-D array with ones on the k-th diagonal."""
    return cx.xp.eye(at["N"], at["M"] or at["N"], at["k"], dtype=at["dtype"] or DEFAULT_DTYPE)


def _randint_infer(at: dict) -> Spec:
    if at["low"] >= at["high"]:
        raise InvalidInput(f"random_randint: low {at['low']} must be below high {at['high']}")
    dt = at["dtype"] or "int32"
    if dt not in ("int32", "int64"):  # (as MXNet's)
        raise InvalidInput(f"random_randint: dtype must be int32 or int64, got {dt}")
    return Spec(check_shape("random_randint", at["shape"]), dt)


@defop(
    "random_randint",
    (),
    (Attr("low", "int", REQUIRED), Attr("high", "int", REQUIRED), Attr("shape", "shape", (1,)), DT),
    infer=_randint_infer,
    random=True,
)
def _random_randint(cx, at):
    """Integers in [low, high) from the session's generator (int32 by default)."""
    return cx.rng.integers(at["low"], at["high"], at["shape"]).astype(at["dtype"] or "int32")


# MXNet's samplers with scalar parameters: float32 by default, and float16/32/64 only (MXNet
# refuses an integer dtype for these, the counts of poisson and the negative binomials too)
DRAW_SHAPE = Attr("shape", "shape", (1,))


def _sampler_infer(name: str, checks: tuple[tuple[str, str, Any], ...]):
    """The inference of a sampler: its shape, a float dtype, each parameter within its range
    (``checks``: the parameter, what it must be, and the test)."""

    def infer(at: dict) -> Spec:
        for param, what, ok in checks:
            if not ok(at[param]):
                raise InvalidInput(f"{name}: {param} must be {what}, got {at[param]}")
        return Spec(check_shape(name, at["shape"]), draw_dtype(name, at))

    return infer


def _positive(v: float) -> bool:
    return v > 0 and v < float("inf")


def _non_negative(v: float) -> bool:
    return v >= 0 and v < float("inf")


def _drawn(name: str, draw: Any, *args: Any) -> Any:
    """``draw(*args)``, numpy's refusal of a parameter past what it can draw from (a poisson
    rate of 1e30) said as the sampler's."""
    try:
        return draw(*args)
    except ValueError as e:
        raise InvalidInput(f"{name}: a parameter is too large to draw from ({e})") from None


def _sampler(name: str, params: tuple[tuple[str, float, str, Any], ...], draw: Any, doc: str) -> None:
    """A sampler op: ``params`` (name, default, what it must be, test), ``draw(rng, at, shape)``."""
    attrs = tuple(Attr(p, "float", d) for p, d, _, _ in params) + (DRAW_SHAPE, DT)

    def forward(cx, at):
        return cx.xp.asarray(_drawn(name, draw, cx.rng, at, at["shape"])).astype(at["dtype"] or DEFAULT_DTYPE)

    forward.__doc__ = doc
    checks = tuple((p, what, ok) for p, _, what, ok in params)
    defop(name, (), attrs, infer=_sampler_infer(name, checks), random=True)(forward)


def _generalized_negative_binomial(rng: np.random.Generator, at: dict, shape: tuple[int, ...]) -> np.ndarray:
    """Poisson draws whose rate is gamma distributed: mean mu, variance mu + alpha mu^2 (MXNet's
    parametrisation; alpha 0 is a plain poisson)."""
    mu, alpha = at["mu"], at["alpha"]
    if alpha == 0:
        return rng.poisson(mu, shape)
    return rng.poisson(rng.gamma(1 / alpha, alpha * mu, shape))


_POSITIVE = ("positive and finite", _positive)
_NON_NEGATIVE = ("non-negative and finite", _non_negative)
_sampler(
    "random_exponential",
    (("lam", 1.0, "positive", lambda v: v > 0),),  # (an infinite rate: zeros, as MXNet's)
    lambda rng, at, shape: rng.exponential(1 / at["lam"], shape),
    "Exponential draws of rate ``lam`` (mean 1/lam, as MXNet's op; nd.random.exponential takes the "
    "scale, the mean) from the session's generator.",
)
_sampler(
    "random_poisson",
    (("lam", 1.0, *_NON_NEGATIVE),),
    lambda rng, at, shape: rng.poisson(at["lam"], shape),
    "Poisson counts of rate ``lam`` (as floats, as MXNet's) from the session's generator.",
)
_sampler(
    "random_gamma",
    (("alpha", 1.0, *_POSITIVE), ("beta", 1.0, *_POSITIVE)),
    lambda rng, at, shape: rng.gamma(at["alpha"], at["beta"], shape),
    "Gamma draws of shape ``alpha`` and scale ``beta`` (mean alpha * beta) from the session's generator.",
)
_sampler(
    "random_negative_binomial",
    (("k", 1.0, *_POSITIVE), ("p", 1.0, "in (0, 1]", lambda v: 0 < v <= 1)),
    lambda rng, at, shape: rng.negative_binomial(at["k"], at["p"], shape),
    "Failures before the k-th success of trials of success probability ``p`` (as floats), "
    "from the session's generator.",
)
_sampler(
    "random_generalized_negative_binomial",
    (("mu", 1.0, *_NON_NEGATIVE), ("alpha", 1.0, *_NON_NEGATIVE)),
    _generalized_negative_binomial,
    "Counts of mean ``mu`` and variance mu + alpha mu^2 (as floats), from the session's generator.",
)


# MXNet's samplers with NDArray parameters (nd.sample_normal, and nd.random.normal(loc=array)):
# every parameter array of one shape, and ``shape`` draws for each element of it, so the result
# is param.shape + shape; float32 whatever the parameters' dtype (float16/32/64 by ``dtype``).
# Their gradient is zero for every parameter, as MXNet's (no reparametrisation).


def _param_sampler_infer(name: str, params: tuple[str, ...]):
    def infer(at: dict, *ps: Spec) -> Spec:
        first = ps[0]
        for p, spec in zip(params[1:], ps[1:]):
            if spec.shape != first.shape:
                raise ShapeError(
                    f"{name}: the parameters must have one shape: {params[0]} has {first.shape}, {p} has {spec.shape}"
                )
            if spec.dtype != first.dtype:
                raise InvalidInput(
                    f"{name}: the parameters must have one dtype: {params[0]} is {first.dtype}, {p} is {spec.dtype}"
                )
        return Spec(check_shape(name, first.shape + check_shape(name, at["shape"])), draw_dtype(name, at))

    return infer


def _zero_grads(F, at, g, y, *ps):
    """A zero gradient for each parameter of a sampler (MXNet's)."""
    return tuple(F.zeros_like(p) for p in ps)


ZERO_VJPS.add(_zero_grads)


def _param_sampler(
    name: str, params: tuple[tuple[str, str, Any], ...], draw: Any, doc: str, temporaries: int = 0
) -> None:
    """A sampler with array parameters: ``params`` (input, what it must be, test on a float64
    array), ``draw(rng, size, *params)`` with the parameters broadcast to ``size``;
    ``temporaries``: the float64 arrays of the output's size it makes (default: one per
    parameter and the draws)."""
    names = tuple(p for p, _, _ in params)
    arrays = temporaries or len(params) + 1

    def forward(cx, at, *ps):
        shape = tuple(ps[0].shape) + at["shape"]
        expand = (slice(None),) * ps[0].ndim + (None,) * len(at["shape"])
        vs = []
        for (p, what, ok), v in zip(params, ps):
            v = np.asarray(v, dtype=np.float64)
            bad = ~ok(v)
            if bad.any():
                i = tuple(int(j) for j in np.unravel_index(int(np.argmax(bad)), v.shape))
                raise InvalidInput(f"{name}: {p} must be {what}, got {v[i]} at index {list(i)}")
            vs.append(np.broadcast_to(v[expand], shape))
        return cx.xp.asarray(_drawn(name, draw, cx.rng, shape, *vs)).astype(at["dtype"] or DEFAULT_DTYPE)

    forward.__doc__ = doc
    defop(
        name,
        names,
        (Attr("shape", "shape", ()), DT),
        infer=_param_sampler_infer(name, names),
        vjp=_zero_grads,
        random=True,
        scratch=lambda at, *ps: 8 * arrays * prod(ps[0].shape + at["shape"]),
    )(forward)


def _sample_gnb(rng: np.random.Generator, shape: tuple[int, ...], mu: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The generalized negative binomial's draws, elementwise (alpha 0: a plain poisson)."""
    lam = np.array(mu)
    mixed = alpha > 0
    lam[mixed] = rng.gamma(1 / alpha[mixed], alpha[mixed] * mu[mixed])
    return rng.poisson(lam)


def _finite(v: np.ndarray) -> np.ndarray:
    return np.isfinite(v)


_ARR_POSITIVE = ("positive and finite", lambda v: (v > 0) & np.isfinite(v))
_ARR_NON_NEGATIVE = ("non-negative and finite", lambda v: (v >= 0) & np.isfinite(v))
_param_sampler(
    "sample_normal",
    (("mu", "finite", _finite), ("sigma", *_ARR_NON_NEGATIVE)),
    lambda rng, shape, mu, sigma: rng.normal(mu, sigma, shape),
    "Normal draws of means ``mu`` and standard deviations ``sigma`` (arrays of one shape), "
    "``shape`` for each: param.shape + shape, from the session's generator.",
)
_param_sampler(
    "sample_uniform",
    (("low", "finite", _finite), ("high", "finite", _finite)),
    lambda rng, shape, low, high: rng.uniform(low, high, shape),
    "Uniform draws in [low, high) (arrays of one shape), ``shape`` for each: param.shape + shape.",
)
_param_sampler(
    "sample_exponential",
    (("lam", "positive", lambda v: v > 0),),  # (an infinite rate: zeros, as MXNet's scale 0)
    lambda rng, shape, lam: rng.exponential(1 / lam, shape),
    "Exponential draws of rates ``lam`` (mean 1/lam, MXNet's sample_exponential), ``shape`` for each.",
)
_param_sampler(
    "sample_poisson",
    (("lam", "non-negative and below 1e18", lambda v: (v >= 0) & (v < 1e18)),),
    lambda rng, shape, lam: rng.poisson(lam, shape),
    "Poisson counts of rates ``lam`` (as floats), ``shape`` for each: param.shape + shape.",
)
_param_sampler(
    "sample_gamma",
    (("alpha", *_ARR_POSITIVE), ("beta", *_ARR_POSITIVE)),
    lambda rng, shape, alpha, beta: rng.gamma(alpha, beta, shape),
    "Gamma draws of shapes ``alpha`` and scales ``beta`` (mean alpha * beta), ``shape`` for each.",
)
_param_sampler(
    "sample_negative_binomial",
    (("k", *_ARR_POSITIVE), ("p", "in (0, 1]", lambda v: (v > 0) & (v <= 1))),
    lambda rng, shape, k, p: rng.negative_binomial(k, p, shape),
    "Failures before the k-th success of trials of success probability ``p`` (as floats), "
    "``shape`` for each element of the parameters.",
)
_param_sampler(
    "sample_generalized_negative_binomial",
    (("mu", *_ARR_NON_NEGATIVE), ("alpha", *_ARR_NON_NEGATIVE)),
    _sample_gnb,
    "Counts of means ``mu`` and variances mu + alpha mu^2 (as floats), ``shape`` for each.",
    temporaries=6,  # (the rates, their mask and masked copies, the draws: measured)
)


# multinomial: indices drawn from the categorical distributions on data's last axis
MULTINOMIAL_DTYPES = {"float16": 2049, "float32": 1 << 24, "float64": 1 << 53, "int32": 1 << 31, "uint8": 256}


def _multinomial_shape(at: dict, x: Spec) -> tuple[int, ...]:
    if len(x.shape) == 1:  # MXNet's: one draw of a 1-D distribution is shape (1,)
        return at["shape"] or (1,)
    return x.shape[:-1] + at["shape"]


def _multinomial_infer(at: dict, x: Spec) -> Spec:
    if not x.shape:
        raise ShapeError("sample_multinomial: data must have an axis of probabilities, got a 0-d array")
    if x.dtype not in FLOAT_DTYPES:
        raise InvalidInput(f"sample_multinomial: data must be float16, float32 or float64, got {x.dtype}")
    k = x.shape[-1]
    if k == 0:
        raise ShapeError(f"sample_multinomial: data's last axis is empty (shape {x.shape}): no categories")
    dt = at["dtype"]
    if dt not in MULTINOMIAL_DTYPES:
        raise InvalidInput(f"sample_multinomial: dtype must be one of {', '.join(MULTINOMIAL_DTYPES)}, got {dt}")
    if k > MULTINOMIAL_DTYPES[dt]:
        raise InvalidInput(f"sample_multinomial: {k} categories do not fit dtype {dt}")
    check_shape("sample_multinomial", at["shape"])
    return Spec(_multinomial_shape(at, x), dt)


@defop(
    "sample_multinomial",
    ("data",),
    (Attr("shape", "shape", ()), Attr("dtype", "dtype", "int32")),
    infer=_multinomial_infer,
    vjp=_zero_grads,
    random=True,
    # four float64 arrays of data's size at once (the probabilities, their sums, normalised,
    # laid end to end) and a mask; five of the draws' size (measured)
    scratch=lambda at, x: 40 * prod(x.shape) + 40 * prod(x.shape[:-1] + at["shape"]),
)
def _sample_multinomial(cx, at, x):
    """Indices drawn from the distributions on data's last axis (each must sum to 1), ``shape``
    for each: data.shape[:-1] + shape (shape (1,) for one 1-D distribution), from the session's
    generator. The gradient is zero (the log-probabilities of the draws carry one)."""
    k = x.shape[-1]
    p = np.asarray(x, dtype=np.float64).reshape(-1, k)
    bad = ~(np.isfinite(p) & (p >= 0))
    if bad.any():
        r, c = divmod(int(np.argmax(bad)), k)
        raise InvalidInput(f"sample_multinomial: probabilities must be non-negative and finite, got {p[r, c]}")
    cdf = np.cumsum(p, axis=1)
    tol = 1e-2 if x.dtype == np.float16 else 1e-4
    off = np.abs(cdf[:, -1] - 1) > tol
    if off.any():
        r = int(np.argmax(off))
        raise InvalidInput(
            f"sample_multinomial: the probabilities on the last axis must sum to 1, got {cdf[r, -1]:.6g} "
            f"(distribution {r})"
        )
    m = prod(at["shape"]) if len(x.shape) > 1 or at["shape"] else 1
    rows = np.arange(cdf.shape[0], dtype=np.float64)[:, None]
    # u in (0, 1]: the first category whose cumulative probability reaches u, never one of
    # probability 0; the rows laid end to end (row r's within [r, r + 1]) for one search
    u = 1.0 - cx.rng.random((cdf.shape[0], m))
    flat = (cdf / cdf[:, -1:] + rows).ravel()  # (cdf[:, -1] is 1 within tol: never 0)
    idx = np.searchsorted(flat, (u + rows).ravel(), side="left").reshape(u.shape) - (rows * k).astype(np.int64)
    idx = np.clip(idx, 0, k - 1)
    cdf /= cdf[:, -1:]
    r = np.arange(cdf.shape[0])[:, None]
    while True:  # exactly the first reaching u (the offsets' rounding may miss by one near a tie)
        low = cdf[r, idx] < u
        idx[low] += 1
        high = (idx > 0) & (cdf[r, np.maximum(idx - 1, 0)] >= u)
        idx[high] -= 1
        if not (low.any() or high.any()):
            break
    return cx.xp.asarray(idx.reshape(_multinomial_shape(at, Spec(tuple(x.shape), "")))).astype(at["dtype"])


@defop("shuffle", ("data",), infer=lambda at, x: x, random=True)
def _shuffle(cx, at, x):
    """A copy of x with its first axis in a random order."""
    return cx.rng.permutation(x)


def _no_gradient(F, at, g, y, x):
    """A zero gradient for the input: MXNet's for the ops whose result does not change with
    it smoothly (an index, a stopped gradient), so a backward from one gives zeros (MXNet's)
    rather than an error."""
    return (F.zeros_like(x),)


ZERO_VJPS.add(_no_gradient)


@defop("stop_gradient", ("data",), infer=lambda at, x: x, aliases=("BlockGrad",), vjp=_no_gradient)
def _stop_gradient(cx, at, x):
    """x, cut from the graph: no gradient flows through it (a zero one, as MXNet's)."""
    return x.copy()


# --------------------------------------------------------------------------
# reductions and ordering


def _prod_vjp(F, at, g, y, x):
    return (F.mul(_spread(F, "prod", at, g, x), F.div(_spread(F, "prod", at, y, x), x)),)


_reduction(
    "prod",
    lambda xp, x, axes, at: xp.prod(x, axis=axes, keepdims=at["keepdims"]),
    _prod_vjp,
    "The product over ``axis`` (with ``exclude``, all but ``axis``; gradient y/x: defined where x is not 0).",
    (EXCLUDE,),
)


def _nanprod_vjp(F, at, g, y, x):
    number = F.equal(x, x)  # 0 where x is NaN (NaN counts as 1 in the product: no gradient)
    d = F.mul(_spread(F, "nanprod", at, g, x), F.div(_spread(F, "nanprod", at, y, x), x))
    return (F.where(number, d, F.zeros_like(x)),)


_reduction(
    "nansum",
    lambda xp, x, axes, at: xp.nansum(x, axis=axes, keepdims=at["keepdims"], dtype=accumulator(xp, x)),
    lambda F, at, g, y, x: (F.mul(_spread(F, "nansum", at, g, x), F.equal(x, x)),),
    "The sum over ``axis`` with NaN counted as 0 (and no gradient there).",
    (EXCLUDE,),
)
_reduction(
    "nanprod",
    lambda xp, x, axes, at: xp.nanprod(x, axis=axes, keepdims=at["keepdims"]),
    _nanprod_vjp,
    "The product over ``axis`` with NaN counted as 1 (and no gradient there).",
    (EXCLUDE,),
)


def _one_axis(name: str, axis: int, ndim: int) -> int:
    if not -ndim <= axis < ndim:
        raise ShapeError(f"{name}: axis {axis} is out of range for an array of rank {ndim}")
    return axis % ndim


def _arg_infer_for(name: str):
    def infer(at: dict, x: Spec) -> Spec:
        if at["axis"] is None:
            if prod(x.shape) == 0:
                raise ShapeError(f"{name}: an empty array has no {name[3:]} (shape {x.shape})")
            return Spec((1,) * len(x.shape) if at["keepdims"] and x.shape else (1,), _index_dtype(x.dtype))
        ax = _one_axis(name, at["axis"], len(x.shape))
        if x.shape[ax] == 0:
            raise ShapeError(f"{name}: cannot reduce an axis of length 0 (shape {x.shape})")
        shape = (
            tuple(1 if i == ax else d for i, d in enumerate(x.shape))
            if at["keepdims"]
            else (x.shape[:ax] + x.shape[ax + 1 :])
        )
        return Spec(at_least_1d(shape), _index_dtype(x.dtype))

    return infer


def _index_dtype(dtype: str) -> str:
    """argmax's and argmin's: the data's own, as MXNet's (float32 for bool data)."""
    return "float32" if dtype == "bool" else dtype


def _arg(name: str, fn: Any) -> None:
    def forward(cx, at, x):
        dt = _index_dtype(x.dtype.name)
        if at["axis"] is None:  # (keepdims: as many axes of 1 as the data's, as MXNet's)
            return cx.xp.array(fn(x), dtype=dt).reshape((1,) * x.ndim if at["keepdims"] and x.ndim else (1,))
        r = fn(x, axis=at["axis"], keepdims=at["keepdims"])
        return cx.xp.array(r, dtype=dt, ndmin=1)

    forward.__doc__ = (
        f"Indices of the {name[3:]}ima along ``axis`` (all axes, flattened, when None), in the data's dtype (as MXNet)."
    )
    defop(name, ("data",), (Attr("axis", "int", None), KEEPDIMS), infer=_arg_infer_for(name), vjp=_no_gradient)(forward)


_arg("argmax", np.argmax)
_arg("argmin", np.argmin)


_CHANNELS = {"axis": 1, "keepdims": False}


@defop(
    "argmax_channel",
    ("data",),
    infer=lambda at, x: OPS["argmax"].infer(_CHANNELS, x),
    vjp=None,  # (MXNet's registers no gradient: a backward through it is refused, not zeros)
)
def _argmax_channel(cx, at, x):
    """argmax along axis 1, the channels (MXNet's argmax_channel; not differentiable)."""
    return OPS["argmax"].forward(cx, _CHANNELS, x)


# axis None: the array flattened first, as MXNet's sort, argsort and topk take it
ORDER_AXIS = Attr("axis", "int", -1, nullable=True)
ORDER = (ORDER_AXIS, Attr("is_ascend", "bool", True))


def _order(cx, x, axis, ascend):
    """The indices that sort ``x`` along ``axis``, equal values in their order either way (as
    MXNet's on axes of up to 16: a descending sort's tie is not reversed, so topk takes the
    first of equals; on longer ones MXNet's sort is not stable, and its ties come in no
    order this one follows)."""
    xp = cx.xp
    if ascend:
        return xp.argsort(x, axis=axis, kind="stable")
    backwards = xp.argsort(xp.flip(x, axis=axis), axis=axis, kind="stable")
    return (x.shape[axis] - 1) - xp.flip(backwards, axis=axis)


def _flat(x: Any, axis: int | None) -> tuple[Any, int]:
    """``x`` and the axis to order along: flattened, along 0, when ``axis`` is None."""
    return (x.reshape(-1), 0) if axis is None else (x, axis)


def _ordered_shape(name: str, axis: int | None, x: Spec) -> tuple[tuple[int, ...], int]:
    """The shape ordered along (flattened for axis None) and the axis, checked."""
    if axis is None:
        return (prod(x.shape),), 0
    return x.shape, _one_axis(name, axis, len(x.shape))


def _sort_infer(at: dict, x: Spec) -> Spec:
    shape, _ = _ordered_shape("sort", at["axis"], x)
    return Spec(shape, x.dtype)


def _sort_vjp(F, at, g, y, x):
    """The cotangent put back where each value came from (flattened first for axis None)."""
    axis = at["axis"]
    idx = F.argsort(x, axis=axis, is_ascend=at["is_ascend"], dtype="int64")
    if axis is None:
        return (F.reshape(F.scatter_axis(g, idx, axis=0, shape=tuple(g.shape)), shape=tuple(x.shape)),)
    return (F.scatter_axis(g, idx, axis=axis, shape=tuple(x.shape)),)


def _order_bytes(per_element: int) -> Any:
    """The working arrays of a sort's int64 order (and, in its VJP, the cotangent put back):
    ``per_element`` bytes an input element, measured (a float16 sort's backward: 36)."""
    return lambda at, x, *rest: per_element * prod(x.shape)


@defop(
    "sort",
    ("data",),
    ORDER,
    infer=_sort_infer,
    vjp=_sort_vjp,
    scratch=_order_bytes(16),
    vjp_scratch=_order_bytes(40),
)
def _sort(cx, at, x):
    """x sorted along ``axis`` (None: flattened)."""
    x, axis = _flat(x, at["axis"])
    idx = _order(cx, x, axis, at["is_ascend"])
    return cx.xp.take_along_axis(x, idx, axis=axis)


def _argsort_infer(at: dict, x: Spec) -> Spec:
    shape, _ = _ordered_shape("argsort", at["axis"], x)
    return Spec(shape, at["dtype"] or "float32")


@defop("argsort", ("data",), (*ORDER, DT), infer=_argsort_infer, vjp=_no_gradient, scratch=_order_bytes(16))
def _argsort(cx, at, x):
    """The indices that sort x along ``axis`` (None: flattened; float32 by default, as MXNet)."""
    x, axis = _flat(x, at["axis"])
    return _order(cx, x, axis, at["is_ascend"]).astype(at["dtype"] or "float32")


TOPK = (
    ORDER_AXIS,
    Attr("k", "int", 1),
    Attr("ret_typ", "str", "indices"),
    Attr("is_ascend", "bool", False),
    DT,
)


def _topk_k(k: int, n: int) -> int:
    """MXNet's k: below 1, the whole axis (a full sort)."""
    return n if k < 1 else k


def _topk_infer(at: dict, x: Spec) -> Spec:
    shape, ax = _ordered_shape("topk", at["axis"], x)
    k = _topk_k(at["k"], shape[ax])
    if k > shape[ax]:
        where = "the flattened array" if at["axis"] is None else f"axis {ax}"
        raise ShapeError(f"topk: k={k} is out of range for {where} of length {shape[ax]}")
    if at["ret_typ"] not in ("indices", "value", "mask"):
        raise InvalidInput(f"topk: ret_typ must be indices, value or mask (both: call twice), got {at['ret_typ']!r}")
    if at["ret_typ"] == "mask":
        return x
    shape = tuple(k if i == ax else d for i, d in enumerate(shape))
    return Spec(shape, x.dtype if at["ret_typ"] == "value" else at["dtype"] or "float32")


def _topk_indices(cx, at, x, axis):
    idx = _order(cx, x, axis, at["is_ascend"])
    return cx.xp.take(idx, cx.xp.arange(_topk_k(at["k"], x.shape[axis])), axis=axis)


def _topk_vjp(F, at, g, y, x):
    if at["ret_typ"] != "value":
        return (None,)
    idx = F.topk(x, **{**at, "ret_typ": "indices", "dtype": "int64"})
    if at["axis"] is None:
        flat = F.scatter_axis(g, idx, axis=0, shape=(int(np.prod(x.shape)),))
        return (F.reshape(flat, shape=tuple(x.shape)),)
    return (F.scatter_axis(g, idx, axis=at["axis"], shape=tuple(x.shape)),)


@defop(
    "topk",
    ("data",),
    TOPK,
    infer=_topk_infer,
    vjp=_topk_vjp,
    scratch=_order_bytes(24),
    # (a sort's order, and the int64 indices of the k taken: at most 32 bytes an element)
    vjp_scratch=lambda at, x: 32 * prod(x.shape) if at["ret_typ"] == "value" else 0,
)
def _topk(cx, at, x):
    """The k largest (``is_ascend``: smallest) along ``axis`` (None: of the flattened array; k
    below 1: all of them): their indices, values, or a 0/1 mask of the input's shape."""
    xf, axis = _flat(x, at["axis"])
    axis %= max(xf.ndim, 1)
    idx = _topk_indices(cx, at, xf, axis)
    if at["ret_typ"] == "indices":
        return idx.astype(at["dtype"] or "float32")
    if at["ret_typ"] == "value":
        return cx.xp.take_along_axis(xf, idx, axis=axis)
    mask = cx.xp.zeros_like(xf)
    cx.xp.put_along_axis(mask, idx, 1, axis=axis)
    return mask.reshape(x.shape)


# gather / scatter along an axis: pick, sort and topk's gradients


def _gather_infer(at: dict, x: Spec, idx: Spec) -> Spec:
    ax = _one_axis("gather_axis", at["axis"], len(x.shape))
    if len(idx.shape) != len(x.shape) or any(i != ax and a != b for i, (a, b) in enumerate(zip(idx.shape, x.shape))):
        raise ShapeError(f"gather_axis: index shape {idx.shape} does not fit data {x.shape} on axis {ax}")
    return Spec(idx.shape, x.dtype)


def _index_scratch(k: int) -> Callable[..., int]:
    """The working arrays of an op that reads input ``k`` as indices: int64 copies of them,
    clipped (two more), about 24 bytes an index whatever their dtype (``scratch``)."""

    def hook(at: dict, *specs: Spec) -> int:
        return 24 * prod(specs[k].shape)

    return hook


def _clip_index(cx, idx, n: int, mode: str):
    i = idx.astype(np.int64)
    if n == 0 and i.size:
        raise IndexOutOfRange("cannot take indices from an axis of length 0")
    if mode == "wrap":
        return cx.xp.mod(i, n)
    if mode == "raise":  # (MXNet's: out of [0, n - 1] as they are, -0.5 and 2.9 of 3 too)
        if i.size and (idx.min() < 0 or idx.max() > n - 1):
            raise IndexOutOfRange(f"index out of range for axis of length {n}")
        return i
    return cx.xp.minimum(cx.xp.maximum(i, 0), n - 1)  # np.clip costs 3 us more


@defop(
    "gather_axis",
    ("data", "index"),
    (Attr("axis", "int", -1),),
    infer=_gather_infer,
    scratch=_index_scratch(1),
    vjp_scratch=_index_scratch(1),  # (its gradient reads them the same way)
    vjp=lambda F, at, g, y, x, idx: (F.scatter_axis(g, idx, axis=at["axis"], shape=tuple(x.shape)), None),
)
def _gather_axis(cx, at, x, idx):
    """Values of x at ``index`` along ``axis`` (numpy's take_along_axis; indices clipped)."""
    ax = at["axis"] % x.ndim
    return cx.xp.take_along_axis(x, _clip_index(cx, idx, x.shape[ax], "clip"), axis=ax)


def _scatter_axis_infer(at: dict, g: Spec, idx: Spec) -> Spec:
    shape = at["shape"]
    _gather_infer({"axis": at["axis"]}, Spec(shape, g.dtype), idx)
    if g.shape != idx.shape:
        raise ShapeError(f"scatter_axis: data shape {g.shape} differs from index shape {idx.shape}")
    return Spec(shape, g.dtype)


@defop(
    "scatter_axis",
    ("data", "index"),
    (Attr("axis", "int", -1), SHAPE),
    infer=_scatter_axis_infer,
    vjp=lambda F, at, gg, y, g, idx: (F.gather_axis(gg, idx, axis=at["axis"]), None),
)
def _scatter_axis(cx, at, g, idx):
    """Zeros of ``shape`` with ``data`` added at ``index`` along ``axis`` (gather_axis's gradient)."""
    shape = at["shape"]
    ax = at["axis"] % len(shape)
    z = cx.xp.zeros(shape, g.dtype)
    i = _clip_index(cx, idx, shape[ax], "clip")
    grids = list(np.ix_(*[np.arange(d) for d in i.shape]))
    grids[ax] = i
    cx.xp.add.at(z, tuple(grids), g)
    return z


PICK = (Attr("axis", "int", -1), KEEPDIMS, Attr("mode", "str", "clip"))


def _pick_infer(at: dict, x: Spec, idx: Spec) -> Spec:
    ax = _one_axis("pick", at["axis"], len(x.shape))
    want = x.shape[:ax] + x.shape[ax + 1 :]
    kept = x.shape[:ax] + (1,) + x.shape[ax + 1 :]
    if idx.shape not in (want, kept, at_least_1d(want)):
        raise ShapeError(f"pick: index shape {idx.shape} should be {want} for data {x.shape} on axis {ax}")
    if at["mode"] not in ("clip", "wrap"):
        raise InvalidInput(f"pick: mode must be clip or wrap, got {at['mode']!r}")
    return Spec(kept if at["keepdims"] else at_least_1d(want), x.dtype)


def _pick_vjp(F, at, g, y, x, idx):
    ax = at["axis"] % x.ndim
    kept = tuple(x.shape[:ax]) + (1,) + tuple(x.shape[ax + 1 :])
    i = F.reshape(idx, shape=kept)
    if at["mode"] == "wrap":
        i = F.wrap_index(i, n=int(x.shape[ax]))
    return F.scatter_axis(F.reshape(g, shape=kept), i, axis=ax, shape=tuple(x.shape)), None


@defop("pick", ("data", "index"), PICK, infer=_pick_infer, vjp=_pick_vjp)
def _pick(cx, at, x, idx):
    """One element along ``axis`` for each position: x[..., index[...], ...]."""
    ax = at["axis"] % x.ndim
    kept = x.shape[:ax] + (1,) + x.shape[ax + 1 :]
    i = _clip_index(cx, idx.reshape(kept), x.shape[ax], at["mode"])
    r = cx.xp.take_along_axis(x, i, axis=ax)
    return r if at["keepdims"] else r.reshape(at_least_1d(r.shape[:ax] + r.shape[ax + 1 :]))


@defop("wrap_index", ("data",), (Attr("n", "int", REQUIRED),), infer=lambda at, x: x)
def _wrap_index(cx, at, x):
    """Indices taken modulo n (pick's ``wrap`` mode)."""
    return cx.xp.mod(x, at["n"]).astype(x.dtype)


TAKE = (Attr("axis", "int", 0), Attr("mode", "str", "clip"))


def _take_infer(at: dict, a: Spec, idx: Spec) -> Spec:
    ax = _one_axis("take", at["axis"], len(a.shape))
    if at["mode"] not in ("clip", "wrap", "raise"):
        raise InvalidInput(f"take: mode must be clip, wrap or raise, got {at['mode']!r}")
    return Spec(a.shape[:ax] + idx.shape + a.shape[ax + 1 :], a.dtype)


def _take_vjp(F, at, g, y, a, idx):
    return F.take_grad(g, idx, axis=at["axis"], mode=at["mode"], shape=tuple(a.shape)), None


@defop(
    "take",
    ("a", "indices"),
    TAKE,
    infer=_take_infer,
    vjp=_take_vjp,
    scratch=_index_scratch(1),
    vjp_scratch=_index_scratch(1),  # (its gradient reads them the same way)
)
def _take(cx, at, a, idx):
    """Slices of ``a`` at ``indices`` along ``axis`` (indices clipped or wrapped)."""
    ax = at["axis"] % a.ndim
    return cx.xp.take(a, _clip_index(cx, idx, a.shape[ax], at["mode"]), axis=ax)


def _scatter_infer(name: str, gather_infer: Any) -> Any:
    """The inference of a gather's gradient op (``name``: data of the gather's output shape
    put back into zeros of ``shape``): data must have the shape the gather of ``shape`` gives."""

    def infer(at: dict, g: Spec, idx: Spec) -> Spec:
        want = gather_infer(at, Spec(at["shape"], g.dtype), idx)
        if want.shape != g.shape:
            raise ShapeError(f"{name}: data shape {g.shape} should be {want.shape}")
        return Spec(at["shape"], g.dtype)

    return infer


@defop(
    "take_grad",
    ("data", "indices"),
    (*TAKE, SHAPE),
    infer=_scatter_infer("take_grad", _take_infer),
    vjp=lambda F, at, gg, y, g, idx: (F.take(gg, idx, axis=at["axis"], mode=at["mode"]), None),
)
def _take_grad(cx, at, g, idx):
    """Zeros of ``shape`` with ``data`` added at ``indices`` along ``axis`` (take's gradient)."""
    shape = at["shape"]
    ax = at["axis"] % len(shape)
    z = cx.xp.zeros(shape, g.dtype)
    i = _clip_index(cx, idx, shape[ax], at["mode"])
    if ax == 0:  # the common case (embedding lookups, minibatch rows): a compiled kernel when there is one
        kernels.scatter_add_rows(z, i.reshape(-1), g.reshape((i.size,) + shape[1:]))
        return z
    zt = cx.xp.moveaxis(z, ax, 0)
    gt = cx.xp.moveaxis(
        g.reshape(shape[:ax] + i.shape + shape[ax + 1 :]), tuple(range(ax, ax + i.ndim)), tuple(range(i.ndim))
    )
    cx.xp.add.at(zt, i, gt)
    return z


EMBEDDING = (
    Attr("input_dim", "int", REQUIRED),
    Attr("output_dim", "int", REQUIRED),
    Attr("dtype", "dtype", "float32"),
    Attr("sparse_grad", "bool", False),
)


def _embedding_infer(at: dict, data: Spec, weight: Spec) -> Spec:
    n, d = at["input_dim"], at["output_dim"]
    if n < 1 or d < 1:
        raise InvalidInput(f"Embedding: input_dim and output_dim must be positive, got {n} and {d}")
    if weight.shape != (n, d):
        raise ShapeError(f"Embedding: weight shape {weight.shape} should be ({n}, {d}) (input_dim, output_dim)")
    return Spec(data.shape + (d,), weight.dtype)


@defop(
    "Embedding",
    ("data", "weight"),
    EMBEDDING,
    infer=_embedding_infer,
    scratch=_index_scratch(0),
    vjp_scratch=_index_scratch(0),  # (its gradient reads them the same way)
    vjp=lambda F, at, g, y, data, w: (
        None,
        F.take_grad(g, data, axis=0, mode="clip", shape=tuple(w.shape)),
    ),
)
def _embedding(cx, at, data, weight):
    """Rows of ``weight`` at the indices in ``data`` (truncated to integers, clipped to
    [0, input_dim)): a lookup table. ``dtype`` and ``sparse_grad`` are accepted and change
    nothing (the result has the weight's dtype; its gradient is dense)."""
    return cx.xp.take(weight, _clip_index(cx, data, at["input_dim"], "clip"), axis=0)


def _gather_nd_infer(at: dict, data: Spec, idx: Spec, name: str = "gather_nd") -> Spec:
    if len(idx.shape) < 2:
        raise ShapeError(f"{name}: indices must have at least 2 dimensions, got shape {idx.shape}")
    m = idx.shape[0]
    if m > len(data.shape) or m == 0:
        raise ShapeError(f"{name}: indices address {m} axes of an array of rank {len(data.shape)}")
    return Spec(idx.shape[1:] + data.shape[m:], data.dtype)


def _nd_index_scratch(at: dict, x: Spec, idx: Spec) -> int:
    """``_nd_index``'s working arrays: the indices in int64, and the range tests."""
    return 12 * prod(idx.shape)


def _nd_index(cx, idx, shape: tuple[int, ...], name: str) -> tuple:
    """gather_nd's indices (one row per leading axis) as a numpy index; negative ones count
    from the end (float ones truncated), out of range ones raise, named as they were given
    (a float past int64, NaN or an infinity too, checked before the cast would wrap them)."""
    for m in range(idx.shape[0]):
        n = shape[m]
        row = idx[m]
        if row.size:
            out = (row <= -n - 1) | (row >= n) if row.dtype.kind == "f" else (row < -n) | (row >= n)
            if row.dtype.kind == "f":
                out |= np.isnan(row)
            if out.any():
                bad = row[out].flat[0].item()
                if isinstance(bad, float) and bad.is_integer() and abs(bad) < 2**53:
                    bad = int(bad)  # (indices travel as floats: 5.0 is the 5 given)
                raise IndexOutOfRange(f"{name}: index {bad} is out of bounds for axis {m} with size {n}")
    return tuple(idx.astype(np.int64))


@defop(
    "gather_nd",
    ("data", "indices"),
    infer=_gather_nd_infer,
    scratch=_nd_index_scratch,
    vjp_scratch=_nd_index_scratch,
    vjp=lambda F, at, g, y, x, idx: (F.gather_nd_grad(g, idx, shape=tuple(x.shape)), None),
)
def _gather_nd(cx, at, x, idx):
    """``data[indices[0], indices[1], ...]``: indices of shape (M, ...) pick elements (or
    slices, when M < data's rank) of data's first M axes; the result has shape
    indices.shape[1:] + data.shape[M:]."""
    return x[_nd_index(cx, idx, x.shape, "gather_nd")]


@defop(
    "gather_nd_grad",
    ("data", "indices"),
    (SHAPE,),
    infer=_scatter_infer("gather_nd_grad", lambda at, x, i: _gather_nd_infer(at, x, i, "gather_nd_grad")),
    vjp=lambda F, at, gg, y, g, idx: (F.gather_nd(gg, idx), None),
)
def _gather_nd_grad(cx, at, g, idx):
    """Zeros of ``shape`` with ``data`` added at ``indices`` (gather_nd's gradient:
    repeated indices add up)."""
    z = cx.xp.zeros(at["shape"], g.dtype)
    cx.xp.add.at(z, _nd_index(cx, idx, z.shape, "gather_nd_grad"), g)
    return z


def _one_hot_infer(at: dict, idx: Spec) -> Spec:
    if at["depth"] < 0:  # (0: an empty last axis, as MXNet's)
        raise InvalidInput(f"one_hot: depth must not be negative, got {at['depth']}")
    return Spec(idx.shape + (at["depth"],), at["dtype"] or DEFAULT_DTYPE)


@defop(
    "one_hot",
    ("indices",),
    (Attr("depth", "int", REQUIRED), Attr("on_value", "float", 1.0), Attr("off_value", "float", 0.0), DT),
    infer=_one_hot_infer,
    # the indices in int64, the tests, and where they hold: an int64 array an axis and one more
    scratch=lambda at, idx: (8 * (len(idx.shape) + 2) + 16) * prod(idx.shape),
    vjp=_no_gradient,
)
def _one_hot(cx, at, idx):
    """on_value at each index along a new last axis of length ``depth``, off_value elsewhere
    (written in the result's dtype: no working array of the result's size)."""
    xp, depth = cx.xp, at["depth"]
    dt = np.dtype(at["dtype"] or DEFAULT_DTYPE)
    with np.errstate(invalid="ignore"):  # (the values cast as a float64 array is: -1 in uint8 is 255)
        on, off = np.array([at["on_value"], at["off_value"]]).astype(dt)
    out = xp.full(idx.shape + (depth,), off, dtype=dt)
    if out.size:
        i = idx.astype(np.int64)
        where = xp.nonzero((i >= 0) & (i < depth))
        out[where + (i[where],)] = on
    return out


# --------------------------------------------------------------------------
# shape


def _squeeze_shape(at: dict, shape: tuple[int, ...]) -> tuple[int, ...]:
    if at["axis"] is None:
        out = tuple(d for d in shape if d != 1)
    else:
        axes = norm_axes("squeeze", at["axis"], len(shape))
        for a in axes:
            if shape[a] != 1:
                raise ShapeError(f"squeeze: axis {a} has length {shape[a]}, not 1")
        out = tuple(d for i, d in enumerate(shape) if i not in axes)
    return at_least_1d(out)


@defop(
    "squeeze",
    ("data",),
    (AXIS,),
    infer=lambda at, x: Spec(_squeeze_shape(at, x.shape), x.dtype),
    vjp=lambda F, at, g, y, x: (F.reshape(g, shape=tuple(x.shape)),),
)
def _squeeze(cx, at, x):
    """x without its axes of length 1 (those of ``axis``, or all)."""
    return x.reshape(_squeeze_shape(at, x.shape)).copy()  # a copy, as MXNet's


def _flatten_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (shape[0] if shape else 1, prod(shape[1:]))


@defop(
    "flatten",
    ("data",),
    infer=lambda at, x: Spec(_flatten_shape(x.shape), x.dtype),
    vjp=lambda F, at, g, y, x: (F.reshape(g, shape=tuple(x.shape)),),
    aliases=("Flatten",),
)
def _flatten(cx, at, x):
    """x as 2-D: its first axis, and all the others folded into one."""
    return x.reshape(_flatten_shape(x.shape)).copy()  # a copy, as MXNet's (only x.reshape shares)


def _swap_infer(at: dict, x: Spec) -> Spec:
    n = len(x.shape)
    a, b = _one_axis("swapaxes", at["dim1"], n), _one_axis("swapaxes", at["dim2"], n)
    s = list(x.shape)
    s[a], s[b] = s[b], s[a]
    return Spec(tuple(s), x.dtype)


@defop(
    "swapaxes",
    ("data",),
    (Attr("dim1", "int", 0), Attr("dim2", "int", 0)),
    infer=_swap_infer,
    vjp=lambda F, at, g, y, x: (F.swapaxes(g, dim1=at["dim1"], dim2=at["dim2"]),),
    aliases=("SwapAxis",),
)
def _swapaxes(cx, at, x):
    """x with two axes exchanged."""
    return cx.xp.array(cx.xp.swapaxes(x, at["dim1"], at["dim2"]), order="C")  # a copy, as MXNet's


def _broadcast_like_shape(at: dict, a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    """lhs's shape broadcast to rhs's (all of it), or at ``lhs_axes`` to rhs's ``rhs_axes``."""
    la, ra = at["lhs_axes"], at["rhs_axes"]
    if la is None and ra is None:
        if broadcast_shapes("broadcast_like", a, b) != b:
            raise ShapeError(f"broadcast_like: cannot broadcast {a} to {b}")
        return b
    if la is None or ra is None or len(la) != len(ra):
        raise InvalidInput(f"broadcast_like: lhs_axes and rhs_axes go together, as many of each; got {la} and {ra}")
    out = list(a)
    for i, j in zip(la, ra):
        if not (-len(a) <= i < len(a) and -len(b) <= j < len(b)):
            raise ShapeError(f"broadcast_like: axes {i} of {a} and {j} of {b}: out of range")
        if a[i] != 1 and a[i] != b[j]:
            raise ShapeError(f"broadcast_like: axis {i} of {a} has length {a[i]}, not 1 or {b[j]} (axis {j} of {b})")
        out[i] = b[j]
    return tuple(out)


@defop(
    "broadcast_like",
    ("lhs", "like"),
    (Attr("lhs_axes", "axis", None), Attr("rhs_axes", "axis", None)),
    infer=lambda at, a, b: Spec(_broadcast_like_shape(at, a.shape, b.shape), a.dtype),
    vjp=lambda F, at, g, y, a, b: (unbroadcast(F, g, tuple(a.shape)), None),
)
def _broadcast_like(cx, at, a, b):
    """lhs broadcast to the shape of rhs; or with ``lhs_axes`` and ``rhs_axes``, lhs's axes
    broadcast to the lengths of rhs's (``lhs_axes=(0,), rhs_axes=(-1,)``: (1, 2) like (3, 4)
    is (4, 2))."""
    return cx.xp.array(cx.xp.broadcast_to(a, _broadcast_like_shape(at, a.shape, b.shape)))


def _tile_shape(at: dict, shape: tuple[int, ...]) -> tuple[int, ...]:
    reps = at["reps"]
    n = max(len(reps), len(shape))
    s = (1,) * (n - len(shape)) + shape
    r = (1,) * (n - len(reps)) + reps
    if any(v < 0 for v in r):
        raise ShapeError(f"tile: negative repetition in {reps}")
    return tuple(a * b for a, b in zip(s, r))


def _tile_vjp(F, at, g, y, x):
    reps = at["reps"]
    n = max(len(reps), x.ndim)
    s = (1,) * (n - x.ndim) + tuple(x.shape)
    r = (1,) * (n - len(reps)) + tuple(reps)
    inter = tuple(v for pair in zip(r, s) for v in pair)  # (r0, s0, r1, s1, ...)
    summed = F.sum(F.reshape(g, shape=inter), axis=tuple(range(0, 2 * n, 2)))
    return (F.reshape(summed, shape=tuple(x.shape)),)


@defop(
    "tile",
    ("data",),
    (Attr("reps", "shape", REQUIRED),),
    infer=lambda at, x: Spec(_tile_shape(at, x.shape), x.dtype),
    vjp=_tile_vjp,
)
def _tile(cx, at, x):
    """x repeated ``reps`` times along each axis."""
    if x.size == 0 or 0 in at["reps"]:  # (numpy's loop would go over every repetition of nothing)
        return cx.xp.empty(_tile_shape(at, x.shape), x.dtype)
    return cx.xp.tile(x, at["reps"])


def _repeat_shape(at: dict, shape: tuple[int, ...]) -> tuple[int, ...]:
    r = at["repeats"]
    if r < 0:
        raise ShapeError("repeat: repeats must not be negative")
    if at["axis"] is None:
        return (prod(shape) * r,)
    ax = _one_axis("repeat", at["axis"], len(shape))
    return tuple(d * r if i == ax else d for i, d in enumerate(shape))


def _repeat_vjp(F, at, g, y, x):
    r = at["repeats"]
    if at["axis"] is None:
        return (F.reshape(F.sum(F.reshape(g, shape=(prod(tuple(x.shape)), r)), axis=1), shape=tuple(x.shape)),)
    ax = at["axis"] % x.ndim
    split = tuple(x.shape[: ax + 1]) + (r,) + tuple(x.shape[ax + 1 :])
    return (F.sum(F.reshape(g, shape=split), axis=ax + 1),)


@defop(
    "repeat",
    ("data",),
    (Attr("repeats", "int", REQUIRED), Attr("axis", "int", None)),
    infer=lambda at, x: Spec(_repeat_shape(at, x.shape), x.dtype),
    vjp=_repeat_vjp,
)
def _repeat(cx, at, x):
    """Each element repeated ``repeats`` times along ``axis`` (flattened when None)."""
    if x.size == 0 or at["repeats"] == 0:  # (numpy's loop would go over every repetition of nothing)
        return cx.xp.empty(_repeat_shape(at, x.shape), x.dtype)
    return cx.xp.repeat(x, at["repeats"], axis=at["axis"])


NUM_ARGS = Attr("num_args", "int", None)  # (MXNet's: the number of arrays, checked when given)


def _join_infer(name: str, axis_attr: str, new_axis: bool):
    def infer(at: dict, *xs: Spec) -> Spec:
        if not xs:
            raise InvalidInput(f"{name}: needs at least one array")
        if at["num_args"] is not None and at["num_args"] != len(xs):  # (MXNet's check)
            raise InvalidInput(f"{name}: num_args is {at['num_args']}, but {len(xs)} arrays were given")
        dt = same_dtype(name, *xs)
        first = xs[0].shape
        n = len(first) + new_axis
        ax = _one_axis(name, at[axis_attr], n)
        for s in xs[1:]:
            if len(s.shape) != len(first) or any(
                a != b for i, (a, b) in enumerate(zip(s.shape, first)) if new_axis or i != ax
            ):
                raise ShapeError(f"{name}: shapes {first} and {s.shape} cannot be joined on axis {ax}")
        if new_axis:
            return Spec(first[:ax] + (len(xs),) + first[ax:], dt)
        return Spec(first[:ax] + (sum(s.shape[ax] for s in xs),) + first[ax + 1 :], dt)

    return infer


def _concat_vjp(F, at, g, y, *xs):
    ax = at["dim"] % g.ndim
    out, start = [], 0
    for x in xs:
        end = start + int(x.shape[ax])
        out.append(F.slice_axis(g, axis=ax, begin=start, end=end))
        start = end
    return tuple(out)


@defop(
    "concat",
    ("*data",),
    (Attr("dim", "int", 1), NUM_ARGS),
    infer=_join_infer("concat", "dim", False),
    vjp=_concat_vjp,
    aliases=("Concat",),
)
def _concat(cx, at, *xs):
    """The arrays joined along axis ``dim``."""
    return cx.xp.concatenate(xs, axis=at["dim"])


def _reshape_like_shape(at: dict, a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    """lhs's axes [lhs_begin, lhs_end) replaced by rhs's [rhs_begin, rhs_end) (all of each by
    default; negative ends count from the last axis, as Python's)."""

    def span(begin: Any, end: Any, n: int, side: str) -> tuple[int, int]:
        lo, hi = 0 if begin is None else begin, n if end is None else end
        lo, hi = lo + n if lo < 0 else lo, hi + n if hi < 0 else hi
        if not 0 <= lo <= hi <= n:
            raise ShapeError(f"reshape_like: {side}_begin {begin} and {side}_end {end} are no range of {n} axes")
        return lo, hi

    lb, le = span(at["lhs_begin"], at["lhs_end"], len(a), "lhs")
    rb, re = span(at["rhs_begin"], at["rhs_end"], len(b), "rhs")
    out = a[:lb] + b[rb:re] + a[le:]
    if prod(out) != prod(a):
        raise ShapeError(f"reshape_like: cannot reshape {a} ({prod(a)} elements) to {out}")
    return out


@defop(
    "reshape_like",
    ("lhs", "rhs"),
    (
        Attr("lhs_begin", "int", None),
        Attr("lhs_end", "int", None),
        Attr("rhs_begin", "int", None),
        Attr("rhs_end", "int", None),
    ),
    infer=lambda at, a, b: Spec(_reshape_like_shape(at, a.shape, b.shape), a.dtype),
    vjp=lambda F, at, g, y, a, b: (F.reshape(g, shape=tuple(a.shape)), None),
)
def _reshape_like(cx, at, a, b):
    """lhs with rhs's shape (the same number of elements); or lhs's axes [lhs_begin,
    lhs_end) replaced by rhs's [rhs_begin, rhs_end) (``(30, 7)`` like ``(15, 2, 4)`` with
    lhs 0 to 1 and rhs 0 to 2: ``(15, 2, 7)``)."""
    return a.reshape(_reshape_like_shape(at, a.shape, b.shape)).copy()


@defop(
    "shape_array",
    ("data",),
    infer=lambda at, x: Spec((len(x.shape),), "int64"),
    vjp=lambda F, at, g, y, x: (None,),  # (a zero gradient, as MXNet's)
)
def _shape_array(cx, at, x):
    """The shape of data, as an int64 array."""
    return cx.xp.asarray(x.shape, dtype=np.int64)


@defop("size_array", ("data",), infer=lambda at, x: Spec((1,), "int64"), vjp=lambda F, at, g, y, x: (None,))
def _size_array(cx, at, x):
    """The number of elements of data, as an int64 array of one element."""
    return cx.xp.asarray([x.size], dtype=np.int64)


def _broadcast_axis_target(at: dict, shape: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    axes = norm_axes("broadcast_axis", at["axis"], len(shape)) if at["axis"] is not None else ()
    size = at["size"]
    if len(axes) != len(size):
        raise InvalidInput(f"broadcast_axis: {len(axes)} axes but {len(size)} sizes")
    out = list(shape)
    for a, n in zip(axes, size):
        if shape[a] != 1:
            raise ShapeError(f"broadcast_axis: axis {a} has length {shape[a]}, not 1: it cannot be broadcast")
        if n < 0:
            raise InvalidInput(f"broadcast_axis: size must not be negative, got {n}")
        out[a] = n
    return axes, tuple(out)


@defop(
    "broadcast_axis",
    ("data",),
    (Attr("axis", "axis", ()), Attr("size", "shape", ())),
    infer=lambda at, x: Spec(_broadcast_axis_target(at, x.shape)[1], x.dtype),
    vjp=lambda F, at, g, y, x: (F.sum(g, axis=_broadcast_axis_target(at, tuple(x.shape))[0], keepdims=True),),
    aliases=("broadcast_axes",),
)
def _broadcast_axis(cx, at, x):
    """data repeated along axes of length 1 (``axis``) to the lengths in ``size``."""
    return cx.xp.array(cx.xp.broadcast_to(x, _broadcast_axis_target(at, x.shape)[1]))  # writable, its own


def _moveaxis_axes(at: dict, ndim: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """source and destination in range and in their given order (which pairs them)."""
    src = tuple(_one_axis("moveaxis", a, ndim) for a in at["source"])
    dst = tuple(_one_axis("moveaxis", a, ndim) for a in at["destination"])
    if len(src) != len(dst):
        raise InvalidInput(f"moveaxis: {len(src)} source axes but {len(dst)} destinations")
    if len(set(src)) != len(src) or len(set(dst)) != len(dst):
        raise InvalidInput("moveaxis: repeated axes in source or destination")
    return src, dst


def _moveaxis_infer(at: dict, x: Spec) -> Spec:
    src, dst = _moveaxis_axes(at, len(x.shape))
    order = [i for i in range(len(x.shape)) if i not in src]
    for d, s in sorted(zip(dst, src)):
        order.insert(d, s)
    return Spec(tuple(x.shape[i] for i in order), x.dtype)


@defop(
    "moveaxis",
    ("tensor",),
    (Attr("source", "axis", REQUIRED), Attr("destination", "axis", REQUIRED)),
    infer=_moveaxis_infer,
    vjp=lambda F, at, g, y, x: (F.moveaxis(g, source=at["destination"], destination=at["source"]),),
)
def _moveaxis(cx, at, x):
    """tensor with the ``source`` axes moved to ``destination`` (the others keep their order)."""
    src, dst = _moveaxis_axes(at, x.ndim)
    return cx.xp.array(cx.xp.moveaxis(x, src, dst), order="C")  # a copy, as MXNet's


def _cumsum_infer(at: dict, x: Spec) -> Spec:
    if at["axis"] is not None:
        _one_axis("cumsum", at["axis"], len(x.shape))
    shape = (prod(x.shape),) if at["axis"] is None else x.shape
    return Spec(shape, _cumsum_dtype(at, x.dtype))


def _cumsum_dtype(at: dict, dtype: str) -> str:
    """``dtype``, else the data's; a bool array's counts are int64, as MXNet's (and numpy's)."""
    return at["dtype"] or ("int64" if dtype == "bool" else dtype)


def _cumsum_vjp(F, at, g, y, x):
    if at["axis"] is None:  # the flattened input's: a reversed cumulative sum, reshaped back
        r = F.flip(F.cumsum(F.flip(g, axis=0), axis=0), axis=0)
        return (F.reshape(r, shape=tuple(x.shape)),)
    ax = at["axis"]
    return (F.flip(F.cumsum(F.flip(g, axis=ax), axis=ax), axis=ax),)


@defop(
    "cumsum",
    ("a",),
    (Attr("axis", "int", None), Attr("dtype", "dtype", None)),
    infer=_cumsum_infer,
    vjp=_cumsum_vjp,
)
def _cumsum(cx, at, a):
    """Running sums along ``axis`` (of the flattened array when None), in ``dtype`` if given
    (else the data's; a bool array's in int64, as MXNet's)."""
    dt = _cumsum_dtype(at, a.dtype.name)
    x = a.reshape(-1) if at["axis"] is None else a
    return cx.xp.cumsum(x, axis=0 if at["axis"] is None else at["axis"], dtype=dt)


DIAG = (Attr("k", "int", 0), Attr("axis1", "int", 0), Attr("axis2", "int", 1))


def _diag_axes(at: dict, ndim: int, name: str = "diag") -> tuple[int, int]:
    a1, a2 = _one_axis(name, at["axis1"], ndim), _one_axis(name, at["axis2"], ndim)
    if a1 == a2:
        raise InvalidInput(f"{name}: axis1 and axis2 must differ, got {a1} and {a2}")
    return a1, a2


def _diag_len(k: int, n1: int, n2: int) -> int:
    return max(0, min(n1 + min(k, 0), n2 - max(k, 0)))


def _diag_infer(at: dict, x: Spec) -> Spec:
    k = at["k"]
    if len(x.shape) == 1:
        n = x.shape[0] + abs(k)
        return Spec((n, n), x.dtype)
    if len(x.shape) == 0:
        raise ShapeError("diag: data must have at least one axis")
    a1, a2 = _diag_axes(at, len(x.shape))
    n = _diag_len(k, x.shape[a1], x.shape[a2])
    if n == 0:
        raise ShapeError(f"diag: diagonal {k} of a {x.shape[a1]} x {x.shape[a2]} matrix is empty")
    rest = tuple(d for i, d in enumerate(x.shape) if i not in (a1, a2))
    return Spec(rest + (n,), x.dtype)


def _diag_vjp(F, at, g, y, x):
    if x.ndim == 1:
        return (F.diag(g, k=at["k"]),)
    return (F.diag_grad(g, k=at["k"], axis1=at["axis1"], axis2=at["axis2"], shape=tuple(x.shape)),)


@defop("diag", ("data",), DIAG, infer=_diag_infer, vjp=_diag_vjp)
def _diag(cx, at, x):
    """A 1-D array as the ``k``-th diagonal of a square matrix; or the ``k``-th diagonal
    of the matrices on axes ``axis1`` and ``axis2`` (as the last axis)."""
    if x.ndim == 1:
        return cx.xp.diag(x, at["k"])
    a1, a2 = _diag_axes(at, x.ndim)
    return cx.xp.diagonal(x, at["k"], a1, a2).copy()


def _diag_grad_infer(at: dict, g: Spec) -> Spec:
    want = _diag_infer(at, Spec(at["shape"], g.dtype))
    if len(at["shape"]) < 2 or want.shape != g.shape:
        raise ShapeError(f"diag_grad: data shape {g.shape} does not fit a diagonal of {at['shape']}")
    return Spec(at["shape"], g.dtype)


@defop(
    "diag_grad",
    ("data",),
    (*DIAG, SHAPE),
    infer=_diag_grad_infer,
    vjp=lambda F, at, gg, y, g: (F.diag(gg, k=at["k"], axis1=at["axis1"], axis2=at["axis2"]),),
)
def _diag_grad(cx, at, g):
    """Zeros of ``shape`` with data on the ``k``-th diagonal of axes ``axis1`` and ``axis2``
    (diag's gradient)."""
    z = cx.xp.zeros(at["shape"], g.dtype)
    a1, a2 = _diag_axes(at, z.ndim, "diag_grad")
    zt = cx.xp.moveaxis(z, (a1, a2), (-2, -1))  # a view: writes land in z
    k, i = at["k"], cx.xp.arange(g.shape[-1])
    zt[..., i + max(-k, 0), i + max(k, 0)] = g
    return z


def _add_n_infer(at: dict, *xs: Spec) -> Spec:
    if not xs:
        raise InvalidInput("add_n: needs at least one array")
    dt = same_dtype("add_n", *xs)
    if dt == "bool":  # (as MXNet's: a sum is arithmetic)
        raise no_bool_arithmetic("add_n")
    for s in xs[1:]:
        if s.shape != xs[0].shape:
            raise ShapeError(f"add_n: all arrays must have one shape, got {xs[0].shape} and {s.shape}")
    return Spec(xs[0].shape, dt)


@defop(
    "add_n",
    ("*args",),
    infer=_add_n_infer,
    vjp=lambda F, at, g, y, *xs: tuple(g for _ in xs),
    aliases=("ElementWiseSum",),
)
def _add_n(cx, at, *xs):
    """The elementwise sum of arrays of one shape and dtype."""
    out = xs[0].copy()
    for x in xs[1:]:
        out += x
    return out


def _stack_vjp(F, at, g, y, *xs):
    ax = at["axis"] % g.ndim
    return tuple(
        F.reshape(F.slice_axis(g, axis=ax, begin=i, end=i + 1), shape=tuple(x.shape)) for i, x in enumerate(xs)
    )


@defop(
    "stack", ("*data",), (Attr("axis", "int", 0), NUM_ARGS), infer=_join_infer("stack", "axis", True), vjp=_stack_vjp
)
def _stack(cx, at, *xs):
    """The arrays stacked along a new axis."""
    return cx.xp.stack(xs, axis=at["axis"])


def _slice_axis_bounds(at: dict, shape: tuple[int, ...]) -> tuple[int, slice]:
    """MXNet's bounds: a negative one counts from the end; past the axis, or a begin past the
    end, is refused (not clipped, as a Python slice's; begin == end is an empty array here)."""
    ax = _one_axis("slice_axis", at["axis"], len(shape))
    n = shape[ax]
    begin, end = at["begin"], at["end"]
    b = begin + n if begin < 0 else begin
    e = n if end is None else end + n if end < 0 else end
    if not 0 <= b <= n:
        raise IndexOutOfRange(f"slice_axis: begin {begin} is out of range for axis {ax} of length {n}")
    if not 0 <= e <= n:
        raise IndexOutOfRange(f"slice_axis: end {end} is out of range for axis {ax} of length {n}")
    if b > e:
        raise IndexOutOfRange(f"slice_axis: begin {begin} is past end {end} on axis {ax} of length {n}")
    return ax, slice(b, e)


def _slice_axis_infer(at: dict, x: Spec) -> Spec:
    ax, s = _slice_axis_bounds(at, x.shape)
    return Spec(tuple(s.stop - s.start if i == ax else d for i, d in enumerate(x.shape)), x.dtype)


def _slice_axis_eager_vjp(at, g, y, x):
    ax, s = _slice_axis_bounds(at, x.shape)
    return (Patch(tuple(x.shape), (slice(None),) * ax + (s,), g),)


def _slice_axis_key(at: dict, ndim: int) -> list:
    return [[None, None, None]] * (at["axis"] % ndim) + [[at["begin"], at["end"], None]]


@defop(
    "slice_axis",
    ("data",),
    (Attr("axis", "int", REQUIRED), Attr("begin", "int", REQUIRED), Attr("end", "int", None)),
    infer=_slice_axis_infer,
    vjp=lambda F, at, g, y, x: (F.scatter_key(g, shape=tuple(x.shape), key=_slice_axis_key(at, x.ndim)),),
    eager_vjp=_slice_axis_eager_vjp,
)
def _slice_axis(cx, at, x):
    """x[..., begin:end, ...] on one axis."""
    ax, s = _slice_axis_bounds(at, x.shape)
    return cx.xp.array(x[(slice(None),) * ax + (s,)])


def _slice_like_axes(at: dict, x: Spec | Any, like: Spec | Any) -> tuple[int, ...]:
    nd, nl = len(x.shape), len(like.shape)
    if not at["axes"]:
        if nl != nd:
            raise ShapeError(f"slice_like: shape_like {tuple(like.shape)} must have the rank of data {tuple(x.shape)}")
        return tuple(range(nd))
    axes = tuple(_one_axis("slice_like", a, nd) for a in at["axes"])
    for a in axes:
        if a >= nl:
            raise ShapeError(f"slice_like: axis {a} is past shape_like {tuple(like.shape)}")
    return axes


def _slice_like_key(at: dict, x: Any, like: Any) -> list:
    axes = _slice_like_axes(at, x, like)
    return [[0, int(like.shape[i]), None] if i in axes else [None, None, None] for i in range(len(x.shape))]


def _slice_like_infer(at: dict, x: Spec, like: Spec) -> Spec:
    axes = _slice_like_axes(at, x, like)
    for a in axes:
        if like.shape[a] > x.shape[a]:
            raise ShapeError(f"slice_like: axis {a} of shape_like {like.shape} is longer than data's {x.shape}")
    return Spec(tuple(like.shape[i] if i in axes else d for i, d in enumerate(x.shape)), x.dtype)


@defop(
    "slice_like",
    ("data", "shape_like"),
    (Attr("axes", "ints", ()),),
    infer=_slice_like_infer,
    vjp=lambda F, at, g, y, x, like: (
        F.scatter_key(g, shape=tuple(x.shape), key=_slice_like_key(at, x, like)),
        None,
    ),
)
def _slice_like(cx, at, x, like):
    """``data`` cut to the length of ``shape_like`` on ``axes`` (all when empty), from the start."""
    key = _slice_like_key(at, x, like)
    return cx.xp.array(x[tuple(slice(b, e) for b, e, _ in key)])


def _space_depth_check(name: str, at: dict, x: Spec) -> int:
    b = at["block_size"]
    if len(x.shape) != 4 or b < 1:
        raise ShapeError(f"{name}: needs data (N, C, H, W) and block_size >= 1, got {x.shape} and {b}")
    return b


def _depth_to_space_infer(at: dict, x: Spec) -> Spec:
    b = _space_depth_check("depth_to_space", at, x)
    n, c, h, w = x.shape
    if c % (b * b):
        raise ShapeError(f"depth_to_space: channels ({c}) must be a multiple of block_size squared ({b * b})")
    return Spec((n, c // (b * b), h * b, w * b), x.dtype)


def _space_to_depth_infer(at: dict, x: Spec) -> Spec:
    b = _space_depth_check("space_to_depth", at, x)
    n, c, h, w = x.shape
    if h % b or w % b:
        raise ShapeError(f"space_to_depth: height and width ({h}, {w}) must be multiples of block_size ({b})")
    return Spec((n, c * b * b, h // b, w // b), x.dtype)


@defop(
    "depth_to_space",
    ("data",),
    (Attr("block_size", "int", REQUIRED),),
    infer=_depth_to_space_infer,
    vjp=lambda F, at, g, y, x: (F.space_to_depth(g, block_size=at["block_size"]),),
)
def _depth_to_space(cx, at, x):
    """Channels moved into blocks of block_size x block_size pixels (MXNet's, DCR order)."""
    b = at["block_size"]
    n, c, h, w = x.shape
    y = x.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
    return cx.xp.ascontiguousarray(y).reshape(n, c // (b * b), h * b, w * b)


@defop(
    "space_to_depth",
    ("data",),
    (Attr("block_size", "int", REQUIRED),),
    infer=_space_to_depth_infer,
    vjp=lambda F, at, g, y, x: (F.depth_to_space(g, block_size=at["block_size"]),),
)
def _space_to_depth(cx, at, x):
    """Blocks of block_size x block_size pixels moved into channels (depth_to_space undone)."""
    b = at["block_size"]
    n, c, h, w = x.shape
    y = x.reshape(n, c, h // b, b, w // b, b).transpose(0, 3, 5, 1, 2, 4)
    return cx.xp.ascontiguousarray(y).reshape(n, c * b * b, h // b, w // b)


def _slice_entry(e: Any) -> bool:
    return e is None or isinstance(e, (int, np.integer)) and not isinstance(e, (bool, np.bool_))


def _slice_entries(name: str, v: Any) -> tuple:
    """``begin``, ``end`` or ``step`` of slice: a list of integers or None (MXNet's tuple), or
    one integer, a list of one (as MXNet reads ``begin=1``); numpy's integers too."""
    if isinstance(v, (list, tuple)) and all(_slice_entry(e) for e in v):
        return tuple(None if e is None else int(e) for e in v)
    if v is not None and _slice_entry(v):
        return (int(v),)
    raise InvalidInput(f"slice: {name} must be a list of integers or None, got {echo(v)}")


def _slice_key(at: dict, ndim: int) -> list:
    begin, end = _slice_entries("begin", at["begin"]), _slice_entries("end", at["end"])
    step = _slice_entries("step", at["step"]) if at["step"] is not None else ()
    step = step or (None,) * len(begin)
    if len(begin) != len(end) or len(step) != len(begin) or len(begin) > ndim:
        raise ShapeError(f"slice: begin {begin}, end {end} and step {step} must have one entry per axis")
    return [[b, e, s] for b, e, s in zip(begin, end, step)]


SLICE = (Attr("begin", "key", REQUIRED), Attr("end", "key", REQUIRED), Attr("step", "key", None))


def _slice_infer(at: dict, x: Spec) -> Spec:
    return _getitem_infer({"key": _slice_key(at, len(x.shape))}, x)


@defop(
    "slice",
    ("data",),
    SLICE,
    infer=_slice_infer,
    vjp=lambda F, at, g, y, x: (F.scatter_key(g, shape=tuple(x.shape), key=_slice_key(at, x.ndim)),),
    eager_vjp=lambda at, g, y, x: (Patch(tuple(x.shape), parse_key("slice", _slice_key(at, x.ndim)), g),),
    aliases=("crop",),
)
def _slice(cx, at, x):
    """x[begin[0]:end[0]:step[0], begin[1]:end[1]:step[1], ...] (None for open ends)."""
    return cx.xp.array(x[parse_key("slice", _slice_key(at, x.ndim))])


def _flip_axes(at: dict, ndim: int) -> tuple[int, ...]:
    return norm_axes("flip", at["axis"], ndim)


@defop(
    "flip",
    ("data",),
    (Attr("axis", "axis", REQUIRED),),
    infer=lambda at, x: (_flip_axes(at, len(x.shape)), x)[1],
    vjp=lambda F, at, g, y, x: (F.flip(g, axis=at["axis"]),),
    aliases=("reverse",),
)
def _flip(cx, at, x):
    """x with the order of elements reversed along ``axis``."""
    return cx.xp.array(cx.xp.flip(x, axis=_flip_axes(at, x.ndim)), order="C")  # a copy, as MXNet's


# --------------------------------------------------------------------------
# batched matrix products


def _bmm_shapes(name: str, at: dict, a: Spec, b: Spec) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if len(a.shape) < 2 or len(b.shape) < 2 or len(a.shape) != len(b.shape):
        raise ShapeError(f"{name}: needs operands of the same rank >= 2, got {a.shape} and {b.shape}")
    sa, sb = list(a.shape), list(b.shape)
    if at["transpose_a"]:
        sa[-1], sa[-2] = sa[-2], sa[-1]
    if at["transpose_b"]:
        sb[-1], sb[-2] = sb[-2], sb[-1]
    if sa[:-2] != sb[:-2] or sa[-1] != sb[-2]:
        raise ShapeError(f"{name}: shapes {tuple(sa)} and {tuple(sb)} do not fit a batched product")
    return tuple(sa), tuple(sb)


def _bmm_infer_for(name: str):
    def infer(at: dict, a: Spec, b: Spec) -> Spec:
        if "forward_stype" in at:
            dense_only(name, at)
        dt = same_dtype(name, a, b)
        if dt == "bool":  # (as MXNet's: a product is arithmetic)
            raise no_bool_arithmetic(name)
        sa, sb = _bmm_shapes(name, at, a, b)
        return Spec(sa[:-1] + (sb[-1],), dt)

    return infer


def _t(xp, x):
    return xp.swapaxes(x, -1, -2)


def _bmm(cx, at, a, b):
    xp = cx.xp
    a = _t(xp, a) if at["transpose_a"] else a
    b = _t(xp, b) if at["transpose_b"] else b
    r = xp.matmul(a, b)
    return r * r.dtype.type(at["alpha"]) if at.get("alpha", 1.0) != 1.0 else r


def _bmm_vjp_for(name: str):
    def vjp(F, at, g, y, a, b):
        op = getattr(F, name)
        alpha = at.get("alpha", 1.0)
        ta, tb = at["transpose_a"], at["transpose_b"]
        extra = {"alpha": alpha} if name == "linalg_gemm2" else {}

        # C = op(A) op(B); dA' = g op(B)^T, dB' = op(A)^T g, then undo the transposes
        def ga():  # lazy, as dot's
            if ta:
                return op(b, g, transpose_a=tb, transpose_b=True, **extra)
            return op(g, b, transpose_a=False, transpose_b=not tb, **extra)

        def gb():
            if tb:
                return op(g, a, transpose_a=True, transpose_b=ta, **extra)
            return op(a, g, transpose_a=not ta, transpose_b=False, **extra)

        return ga, gb

    return vjp


TRANSPOSES = (Attr("transpose_a", "bool", False), Attr("transpose_b", "bool", False))
BMM = (*TRANSPOSES, FORWARD_STYPE)


def _bmm_work(at: dict, a: Spec, b: Spec) -> int:
    return prod(a.shape) * (b.shape[-2] if at["transpose_b"] else b.shape[-1]) if len(b.shape) >= 2 else 0


@defop(
    "batch_dot",
    ("lhs", "rhs"),
    BMM,
    infer=_bmm_infer_for("batch_dot"),
    vjp=_bmm_vjp_for("batch_dot"),
    work=_bmm_work,
)
def _batch_dot(cx, at, a, b):
    """Matrix products of the last two axes, batched over the leading ones."""
    return _bmm(cx, at, a, b)
