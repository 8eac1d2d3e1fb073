"""The optimizers' array ops: ``multi_sum_sq``, ``multi_lars`` and ``lamb_update_phase2``.

MXNet 1.9.1's ops that LARS and LAMB steps compute with: each gives a new array and changes
none of its inputs (the updates that change their states in place are the session's
commands, in ``optimizers``). None is differentiable, as in MXNet.
"""

from __future__ import annotations

import numpy as np

from . import kernels
from .errors import DTypeError, InvalidInput, ShapeError
from .ops import same_dtype
from .ops_math import CHUNK
from .optable import FLOAT_DTYPES, REQUIRED, Attr, Spec, defop, prod

# --------------------------------------------------------------------------
# multi_sum_sq


def _sum_sq_infer(at: dict, *xs: Spec) -> Spec:
    if at["num_arrays"] != len(xs):
        raise InvalidInput(f"multi_sum_sq: num_arrays is {at['num_arrays']} but {len(xs)} arrays were given")
    if not xs:
        raise InvalidInput("multi_sum_sq: needs at least one array")
    dt = same_dtype("multi_sum_sq", *xs)
    if dt not in FLOAT_DTYPES:
        raise DTypeError(f"multi_sum_sq: takes floating point arrays only, got {dt}")
    return Spec((len(xs),), "float32")


@defop(
    "multi_sum_sq",
    ("*data",),
    (Attr("num_arrays", "int", REQUIRED),),
    infer=_sum_sq_infer,
    scratch=lambda at, *xs: 16 * min(max((prod(x.shape) for x in xs), default=0), CHUNK),  # (a chunk, and in float64)
)
def _multi_sum_sq(cx, at, *xs):
    """The sum of the squares of each array's elements, one float32 per array (LARS's norms,
    squared). The sums add in float64, a chunk at a time: MXNet's add in float32 and lose
    digits on large arrays (1e6 normal samples: 1000911.1, the sum being 1001347.06)."""
    out = np.empty(len(xs), np.float32)
    buf = np.empty(min(max(x.size for x in xs), CHUNK), np.float64)
    for i, x in enumerate(xs):
        flat = x.reshape(-1) if x.flags.c_contiguous else x.flat  # (a view's chunks copied one at a time)
        total = 0.0
        for k in range(0, x.size, CHUNK):
            part = buf[: min(CHUNK, x.size - k)]
            np.copyto(part, flat[k : k + CHUNK])
            total += float(np.dot(part, part))
        out[i] = total
    return out


# --------------------------------------------------------------------------
# multi_lars

LARS = (
    Attr("eta", "float", REQUIRED),
    Attr("eps", "float", REQUIRED),
    Attr("rescale_grad", "float", 1.0),
)


def _lars_infer(at: dict, lrs: Spec, w2: Spec, g2: Spec, wds: Spec) -> Spec:
    dt = same_dtype("multi_lars", lrs, w2, g2, wds)
    if dt not in FLOAT_DTYPES:
        raise DTypeError(f"multi_lars: takes floating point arrays only, got {dt}")
    for what, s in (("lrs", lrs), ("weights_sum_sq", w2), ("grads_sum_sq", g2), ("wds", wds)):
        if len(s.shape) != 1 or s.shape != lrs.shape:
            raise ShapeError(
                f"multi_lars: lrs, weights_sum_sq, grads_sum_sq and wds must be 1-D arrays of one length, got "
                f"{what} {s.shape} beside lrs {lrs.shape}"
            )
    return lrs


@defop(
    "multi_lars",
    ("lrs", "weights_sum_sq", "grads_sum_sq", "wds"),
    LARS,
    infer=_lars_infer,
    scratch=lambda at, lrs, *rest: 6 * lrs.nbytes,  # (the norms, the products, the denominator and the test)
)
def _multi_lars(cx, at, lrs, w2, g2, wds):
    """Each weight's learning rate scaled by its LARS coefficient: ``lrs * eta * |w| / (|g| *
    rescale_grad + wds * |w| + eps)``, with ``|w| = sqrt(weights_sum_sq)`` and ``|g| =
    sqrt(grads_sum_sq)``; the learning rate as it is where either sum is not above 0 (NaN
    included), as MXNet's. Float16 and float64 arrays are taken too (MXNet's: float32)."""
    f = lrs.dtype.type
    wn, gn = np.sqrt(np.maximum(w2, 0)), np.sqrt(np.maximum(g2, 0))
    scaled = lrs * f(at["eta"]) * wn / (gn * f(at["rescale_grad"]) + wds * wn + f(at["eps"]))
    return np.where((w2 > 0) & (g2 > 0), scaled, lrs)


# --------------------------------------------------------------------------
# lamb_update_phase2


def _one_value(name: str, what: str, s: Spec) -> None:
    if prod(s.shape) != 1:
        raise ShapeError(f"{name}: {what} must hold one value (a norm, as weight.norm() gives), got shape {s.shape}")


def _phase2_infer(at: dict, w: Spec, g: Spec, r1: Spec, r2: Spec) -> Spec:
    if w.dtype not in FLOAT_DTYPES:
        raise DTypeError(f"lamb_update_phase2: takes floating point arrays only, got {w.dtype}")
    for what, s in (("g", g), ("r1", r1), ("r2", r2)):
        if s.dtype != w.dtype:
            raise DTypeError(f"lamb_update_phase2: {what} is {s.dtype}, the weight {w.dtype}: they must be one dtype")
    if g.shape != w.shape:
        raise ShapeError(f"lamb_update_phase2: g {g.shape} does not fit weight {w.shape}")
    _one_value("lamb_update_phase2", "r1", r1)
    _one_value("lamb_update_phase2", "r2", r2)
    return w


@defop(
    "lamb_update_phase2",
    ("weight", "g", "r1", "r2"),
    (Attr("lr", "float", REQUIRED), Attr("lower_bound", "float", -1.0), Attr("upper_bound", "float", -1.0)),
    infer=_phase2_infer,
    scratch=lambda at, w, *rest: w.nbytes,  # (lr * g, before it is taken from the weight)
)
def _lamb_update_phase2(cx, at, w, g, r1, r2):
    """LAMB's step from phase 1's direction ``g``: ``weight - lr * r1 / r2 * g``, with ``r1``
    (the weight's norm) first raised to ``lower_bound`` and cut to ``upper_bound`` where they
    are not negative, and ``lr`` as it is where ``r1`` or ``r2`` is 0; in the weight's dtype,
    as MXNet's. Give ``out=weight`` to update the weight."""
    return kernels.lamb_update_phase2_numpy(
        w, g, r1.reshape(-1)[0], r2.reshape(-1)[0], at["lr"], at["lower_bound"], at["upper_bound"]
    )
