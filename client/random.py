"""Random draws from the session's own generator (``nd.random``).

Each session is seeded on its own, so one user's ``seed`` never changes the
draws of another.
"""

from __future__ import annotations

from typing import Any

from .engine.errors import InvalidInput
from .engine.optable import FLOAT_DTYPES, OPS, prod
from .ndarray import NDArray, check_into, context_of, invoke, write_into
from .runtime import RNG_KEY, current
from .transport import seed_value


def _shape(shape: Any) -> Any:
    return (1,) if shape is None else shape


def _out(name: str, kwargs: dict[str, Any]) -> NDArray | None:
    """``out=`` from a sampler's keyword arguments; any other but ``name`` (MXNet's symbol
    name: nothing to name here) is refused, as MXNet refuses it."""
    out = kwargs.pop("out", None)
    kwargs.pop("name", None)
    if kwargs:
        raise InvalidInput(f"random.{name}: unknown argument {next(iter(kwargs))!r}")
    if out is not None and not isinstance(out, NDArray):
        raise TypeError(f"random.{name}: out must be an NDArray, got {type(out).__name__}")
    return out


def _into(name: str, drawn: NDArray, out: NDArray | None) -> NDArray:
    """``drawn``, or, with ``out=``, written into ``out``, which is returned (MXNet's)."""
    return drawn if out is None else write_into(out, drawn, f"random.{name}")


def normal(
    loc: float = 0.0, scale: float = 1.0, shape: Any = None, dtype: Any = None, ctx: Any = None, **kwargs: Any
) -> NDArray:
    """Draws from N(loc, scale**2); shape (1,) when none is given, as MXNet. With NDArray
    ``loc`` and ``scale`` (one shape), ``shape`` draws for each pair: loc.shape + shape."""
    return _draw("random_normal", {"loc": loc, "scale": scale}, shape, dtype, ctx, kwargs)


def uniform(
    low: float = 0.0, high: float = 1.0, shape: Any = None, dtype: Any = None, ctx: Any = None, **kwargs: Any
) -> NDArray:
    """Draws from U[low, high); shape (1,) when none is given, as MXNet. With NDArray ``low``
    and ``high`` (one shape), ``shape`` draws for each pair: low.shape + shape."""
    return _draw("random_uniform", {"low": low, "high": high}, shape, dtype, ctx, kwargs)


def randint(low: int, high: int, shape: Any = None, dtype: Any = None, ctx: Any = None, **kwargs: Any) -> NDArray:
    """Integers in [low, high) (int32 unless ``dtype`` says otherwise); numbers only, as MXNet's."""
    for name, v in (("low", low), ("high", high)):
        if isinstance(v, NDArray):
            raise InvalidInput(f"random.randint: {name} must be a number; NDArray bounds are not taken (nor by MXNet)")
    out = _out("randint", kwargs)
    if out is not None:
        shape = out.shape if shape is None else shape
        dtype = out._spec.dtype if dtype is None else dtype
    drawn = invoke(
        OPS["random_randint"],
        (),
        {"low": low, "high": high, "shape": _shape(shape), "dtype": dtype},
        ctx=context_of(ctx),
    )
    return _into("randint", drawn, out)


# the op drawing with NDArray parameters for each sampler of number parameters (MXNet's pairs)
_SAMPLERS = {
    "random_normal": "sample_normal",
    "random_uniform": "sample_uniform",
    "random_exponential": "sample_exponential",
    "random_poisson": "sample_poisson",
    "random_gamma": "sample_gamma",
    "random_negative_binomial": "sample_negative_binomial",
    "random_generalized_negative_binomial": "sample_generalized_negative_binomial",
}


def _draw(op: str, params: dict[str, Any], shape: Any, dtype: Any, ctx: Any, kwargs: dict[str, Any]) -> NDArray:
    """Numbers: ``op`` draws ``shape`` ((1,) when none is given, out's with ``out=``).
    NDArrays (all of them, of one shape): its sampler draws ``shape`` for each element,
    param.shape + shape, in their context. ``kwargs``: ``out=`` (the draws written into it)."""
    out = _out(op[7:], kwargs)
    if out is not None:
        dtype = out._spec.dtype if dtype is None else dtype
        if shape is None and not any(isinstance(v, NDArray) for v in params.values()):
            shape = out.shape
    return _into(op[7:], _drawn(op, params, shape, dtype, ctx), out)


def _drawn(op: str, params: dict[str, Any], shape: Any, dtype: Any, ctx: Any) -> NDArray:
    arrays = [isinstance(v, NDArray) for v in params.values()]
    if any(arrays):
        if not all(arrays):
            kinds = ", ".join(f"{n} {type(v).__name__}" for n, v in params.items())
            raise InvalidInput(
                f"random.{op[7:]}: the distribution parameters must be all NDArrays or all numbers, got {kinds}"
            )
        return invoke(
            OPS[_SAMPLERS[op]], tuple(params.values()), {"shape": () if shape is None else shape, "dtype": dtype}
        )
    return invoke(OPS[op], (), {**params, "shape": _shape(shape), "dtype": dtype}, ctx=context_of(ctx))


def randn(
    *shape: Any, loc: float = 0.0, scale: float = 1.0, dtype: Any = None, ctx: Any = None, **kwargs: Any
) -> NDArray:
    """Draws from N(loc, scale**2) of the shape given positionally (``randn(2, 3)``), as MXNet's."""
    if not shape and not isinstance(loc, NDArray):
        raise InvalidInput("random.randn: give the shape, as randn(2, 3)")
    return _draw("random_normal", {"loc": loc, "scale": scale}, shape, dtype, ctx, kwargs)


def exponential(scale: float = 1.0, shape: Any = None, dtype: Any = None, ctx: Any = None, **kwargs: Any) -> NDArray:
    """Exponential draws of mean ``scale``; shape (1,) when none is given, as MXNet. As
    MXNet's, it draws with the rate 1/scale (the ops' ``lam``): a scale of 0 raises
    ZeroDivisionError, an infinite or negative one is refused by the op."""
    return _draw("random_exponential", {"lam": 1.0 / scale}, shape, dtype, ctx, kwargs)


def poisson(lam: float = 1.0, shape: Any = None, dtype: Any = None, ctx: Any = None, **kwargs: Any) -> NDArray:
    """Poisson counts of rate ``lam``, as floats (float32 unless ``dtype`` says otherwise)."""
    return _draw("random_poisson", {"lam": lam}, shape, dtype, ctx, kwargs)


def gamma(
    alpha: float = 1.0, beta: float = 1.0, shape: Any = None, dtype: Any = None, ctx: Any = None, **kwargs: Any
) -> NDArray:
    """Gamma draws of shape ``alpha`` and scale ``beta``."""
    return _draw("random_gamma", {"alpha": alpha, "beta": beta}, shape, dtype, ctx, kwargs)


def negative_binomial(
    k: float = 1, p: float = 1, shape: Any = None, dtype: Any = None, ctx: Any = None, **kwargs: Any
) -> NDArray:
    """Failures before the k-th success, trials of success probability ``p`` (as floats)."""
    return _draw("random_negative_binomial", {"k": k, "p": p}, shape, dtype, ctx, kwargs)


def generalized_negative_binomial(
    mu: float = 1, alpha: float = 1, shape: Any = None, dtype: Any = None, ctx: Any = None, **kwargs: Any
) -> NDArray:
    """Counts of mean ``mu`` and variance ``mu + alpha * mu**2`` (as floats)."""
    return _draw("random_generalized_negative_binomial", {"mu": mu, "alpha": alpha}, shape, dtype, ctx, kwargs)


def _like(name: str, op: str, data: Any, params: dict[str, Any], out: Any, kwargs: dict[str, Any]) -> NDArray:
    """Draws of ``data``'s shape and dtype, in its context (MXNet's ``*_like`` samplers)."""
    out = _out(name, {**kwargs, "out": out})
    if not isinstance(data, NDArray):
        raise InvalidInput(f"random.{name}: data must be an NDArray, got {type(data).__name__}")
    if not data.shape:
        raise InvalidInput(f"random.{name}: data must have at least one axis (MXNet refuses a 0-d array)")
    if data._spec.dtype not in FLOAT_DTYPES:
        raise InvalidInput(f"random.{name}: data must be float16, float32 or float64, got {data._spec.dtype}")
    for k, v in params.items():
        if isinstance(v, NDArray):
            raise InvalidInput(f"random.{name}: {k} must be a number, got an NDArray")
    at = {**params, "shape": data.shape, "dtype": data._spec.dtype}
    return _into(name, invoke(OPS[op], (), at, ctx=data.context), out)


def normal_like(data: Any = None, loc: float = 0.0, scale: float = 1.0, out: Any = None, **kwargs: Any) -> NDArray:
    """N(loc, scale**2) draws of ``data``'s shape and dtype."""
    return _like("normal_like", "random_normal", data, {"loc": loc, "scale": scale}, out, kwargs)


def uniform_like(data: Any = None, low: float = 0.0, high: float = 1.0, out: Any = None, **kwargs: Any) -> NDArray:
    """U[low, high) draws of ``data``'s shape and dtype."""
    return _like("uniform_like", "random_uniform", data, {"low": low, "high": high}, out, kwargs)


def exponential_like(data: Any = None, lam: float = 1.0, out: Any = None, **kwargs: Any) -> NDArray:
    """Exponential draws of rate ``lam`` (mean 1/lam, as MXNet's ``*_like`` takes it)."""
    return _like("exponential_like", "random_exponential", data, {"lam": lam}, out, kwargs)


def poisson_like(data: Any = None, lam: float = 1.0, out: Any = None, **kwargs: Any) -> NDArray:
    """Poisson counts of rate ``lam`` of ``data``'s shape and dtype."""
    return _like("poisson_like", "random_poisson", data, {"lam": lam}, out, kwargs)


def gamma_like(data: Any = None, alpha: float = 1.0, beta: float = 1.0, out: Any = None, **kwargs: Any) -> NDArray:
    """Gamma draws (shape ``alpha``, scale ``beta``) of ``data``'s shape and dtype."""
    return _like("gamma_like", "random_gamma", data, {"alpha": alpha, "beta": beta}, out, kwargs)


def negative_binomial_like(data: Any = None, k: float = 1, p: float = 1, out: Any = None, **kwargs: Any) -> NDArray:
    """Negative binomial counts of ``data``'s shape and dtype."""
    return _like("negative_binomial_like", "random_negative_binomial", data, {"k": k, "p": p}, out, kwargs)


def generalized_negative_binomial_like(
    data: Any = None, mu: float = 1, alpha: float = 1, out: Any = None, **kwargs: Any
) -> NDArray:
    """Generalized negative binomial counts of ``data``'s shape and dtype."""
    return _like(
        "generalized_negative_binomial_like",
        "random_generalized_negative_binomial",
        data,
        {"mu": mu, "alpha": alpha},
        out,
        kwargs,
    )


def multinomial(
    data: NDArray, shape: Any = None, get_prob: bool = False, out: Any = None, dtype: Any = "int32", **kwargs: Any
) -> Any:
    """Indices drawn from the distributions on ``data``'s last axis (each summing to 1),
    ``shape`` for each: data.shape[:-1] + shape ((1,) for one 1-D distribution, no shape), as
    ``dtype`` (int32, uint8 or a float). ``get_prob``: [indices, their log-probabilities], the
    latter differentiable with respect to ``data`` (as MXNet's, for REINFORCE)."""
    if not isinstance(data, NDArray):
        raise InvalidInput(f"random.multinomial: data must be an NDArray, got {type(data).__name__}")
    outs = _multinomial_outs(out, get_prob)
    at = {"shape": () if shape is None else shape, "dtype": dtype}
    idx = invoke(OPS["sample_multinomial"], (data,), at)
    if not get_prob:
        return idx if outs is None else write_into(outs[0], idx, "random.multinomial")
    # log p[..., idx]: the draws of each distribution in a row, picked from it along its last axis
    rows = data.shape[:-1] + (idx.size // max(1, prod(data.shape[:-1])),)
    picked = invoke(OPS["gather_axis"], (data, invoke(OPS["reshape"], (idx,), {"shape": rows})), {"axis": -1})
    made = [idx, invoke(OPS["log"], (invoke(OPS["reshape"], (picked,), {"shape": idx.shape}),))]
    if outs is None:
        return made
    for o, m in zip(outs, made):  # (both checked before either is written)
        check_into(o, m, "random.multinomial")
    for o, m in zip(outs, made):
        o[:] = m
    return outs


def _multinomial_outs(out: Any, get_prob: bool) -> list[NDArray] | None:
    """``out`` as MXNet's multinomial takes it: an array, or with ``get_prob`` a list of two
    (the indices', then the log-probabilities')."""
    if out is None:
        return None
    outs = list(out) if isinstance(out, (list, tuple)) else [out]
    if len(outs) != 1 + bool(get_prob) or not all(isinstance(o, NDArray) for o in outs):
        want = "a list of two NDArrays (indices, log-probabilities)" if get_prob else "an NDArray"
        raise InvalidInput(f"random.multinomial: out must be {want}")
    return outs


def shuffle(data: NDArray, **kwargs: Any) -> NDArray:
    """A copy of ``data`` with its first axis in random order."""
    return invoke(OPS["shuffle"], (data,))


def seed(seed_state: int, ctx: Any = "all") -> None:
    """Reseed the current session's generator (any integer, modulo 2**64)."""
    c = current()
    c.enqueue({"op": "seed", "at": {"seed": seed_value(seed_state, "random.seed")}})
    c._dead.pop(RNG_KEY, None)  # seeded again: the draws are the program's again
