"""Random draws from the session's own generator (``nd.random``).

Each session is seeded on its own, so one user's ``seed`` never changes the
draws of another.
"""

from __future__ import annotations

from typing import Any

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


def shuffle(data: NDArray, **kwargs: Any) -> NDArray:
    """A copy of ``data`` with its first axis in random order."""
    return invoke(OPS["shuffle"], (data,))


def seed(seed_state: int, ctx: Any = "all") -> None:
    """Reseed the current session's generator."""
    c = current()
    c.enqueue({"op": "seed", "at": {"seed": int(seed_state)}})
    c._dead.pop(RNG_KEY, None)  # seeded again: the draws are the program's again
