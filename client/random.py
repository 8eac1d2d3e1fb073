"""Random draws from the session's own generator (``nd.random``).

Each session is seeded on its own, so one user's ``seed`` never changes the
draws of another.
"""

from __future__ import annotations

from typing import Any

from .engine.errors import InvalidInput
from .engine.optable import OPS
from .ndarray import NDArray, context_of, invoke
from .runtime import RNG_KEY, current


def _shape(shape: Any) -> Any:
    return (1,) if shape is None else shape


def normal(
    loc: float = 0.0, scale: float = 1.0, shape: Any = None, dtype: Any = None, ctx: Any = None, **kwargs: Any
) -> NDArray:
    """Draws from N(loc, scale**2); shape (1,) when none is given, as MXNet."""
    return invoke(
        OPS["random_normal"],
        (),
        {"loc": loc, "scale": scale, "shape": _shape(shape), "dtype": dtype},
        ctx=context_of(ctx),
    )


def uniform(
    low: float = 0.0, high: float = 1.0, shape: Any = None, dtype: Any = None, ctx: Any = None, **kwargs: Any
) -> NDArray:
    """Draws from U[low, high); shape (1,) when none is given, as MXNet."""
    return invoke(
        OPS["random_uniform"],
        (),
        {"low": low, "high": high, "shape": _shape(shape), "dtype": dtype},
        ctx=context_of(ctx),
    )


def randint(low: int, high: int, shape: Any = None, dtype: Any = None, ctx: Any = None, **kwargs: Any) -> NDArray:
    """Integers in [low, high) (int32 unless ``dtype`` says otherwise)."""
    return invoke(
        OPS["random_randint"],
        (),
        {"low": low, "high": high, "shape": _shape(shape), "dtype": dtype},
        ctx=context_of(ctx),
    )


def _draw(op: str, params: dict[str, Any], shape: Any, dtype: Any, ctx: Any) -> NDArray:
    for name, v in params.items():
        if isinstance(v, NDArray):  # MXNet draws shape + param.shape then: not here (yet)
            raise InvalidInput(
                f"random.{op[7:]}: NDArray parameters ({name}) are not supported; pass a number "
                "(or draw with a number per call)"
            )
    return invoke(OPS[op], (), {**params, "shape": _shape(shape), "dtype": dtype}, ctx=context_of(ctx))


def randn(
    *shape: Any, loc: float = 0.0, scale: float = 1.0, dtype: Any = None, ctx: Any = None, **kwargs: Any
) -> NDArray:
    """Draws from N(loc, scale**2) of the shape given positionally (``randn(2, 3)``), as MXNet's."""
    if not shape:
        raise InvalidInput("random.randn: give the shape, as randn(2, 3)")
    return _draw("random_normal", {"loc": loc, "scale": scale}, shape, dtype, ctx)


def exponential(scale: float = 1.0, shape: Any = None, dtype: Any = None, ctx: Any = None, **kwargs: Any) -> NDArray:
    """Exponential draws of mean ``scale``; shape (1,) when none is given, as MXNet."""
    return _draw("random_exponential", {"scale": scale}, shape, dtype, ctx)


def poisson(lam: float = 1.0, shape: Any = None, dtype: Any = None, ctx: Any = None, **kwargs: Any) -> NDArray:
    """Poisson counts of rate ``lam``, as floats (float32 unless ``dtype`` says otherwise)."""
    return _draw("random_poisson", {"lam": lam}, shape, dtype, ctx)


def gamma(
    alpha: float = 1.0, beta: float = 1.0, shape: Any = None, dtype: Any = None, ctx: Any = None, **kwargs: Any
) -> NDArray:
    """Gamma draws of shape ``alpha`` and scale ``beta``."""
    return _draw("random_gamma", {"alpha": alpha, "beta": beta}, shape, dtype, ctx)


def negative_binomial(
    k: float = 1, p: float = 1, shape: Any = None, dtype: Any = None, ctx: Any = None, **kwargs: Any
) -> NDArray:
    """Failures before the k-th success, trials of success probability ``p`` (as floats)."""
    return _draw("random_negative_binomial", {"k": k, "p": p}, shape, dtype, ctx)


def generalized_negative_binomial(
    mu: float = 1, alpha: float = 1, shape: Any = None, dtype: Any = None, ctx: Any = None, **kwargs: Any
) -> NDArray:
    """Counts of mean ``mu`` and variance ``mu + alpha * mu**2`` (as floats)."""
    return _draw("random_generalized_negative_binomial", {"mu": mu, "alpha": alpha}, shape, dtype, ctx)


def shuffle(data: NDArray, **kwargs: Any) -> NDArray:
    """A copy of ``data`` with its first axis in random order."""
    return invoke(OPS["shuffle"], (data,))


def seed(seed_state: int, ctx: Any = "all") -> None:
    """Reseed the current session's generator."""
    c = current()
    c.enqueue({"op": "seed", "at": {"seed": int(seed_state)}})
    c._dead.pop(RNG_KEY, None)  # seeded again: the draws are the program's again
