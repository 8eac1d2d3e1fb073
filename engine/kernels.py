"""Compiled kernels where a benchmark shows they beat numpy (bench/kernels.py),
each with the numpy code it replaces as the fallback. numba is optional
(``pip install 'gradserve[fast]'``); without it, or with ``GRADSERVE_NUMBA=0``,
the numpy lines run. Both give the same results (tests/test_kernels.py).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np


def _numba() -> Any:
    if os.environ.get("GRADSERVE_NUMBA", "1") == "0":
        return None  # disabled
    try:
        import numba
    except ImportError:
        return None
    return numba


numba = _numba()

HAVE_NUMBA = numba is not None


def scatter_add_rows_numpy(out: np.ndarray, idx: np.ndarray, g: np.ndarray) -> None:
    """out[idx[i]] += g[i] for every i (repeated rows add up)."""
    np.add.at(out, idx, g)


def _clip(x: Any, bound: float) -> Any:
    """x clipped to [-bound, bound] where bound >= 0 (MXNet's clip_gradient and clip_weights:
    -1 is off, 0 clips to 0)."""
    return np.clip(x, -bound, bound) if bound >= 0 else x


def typed(x: float, dtype: np.dtype) -> Any:
    """A hyperparameter as MXNet's optimizer ops take it: a float32 (their parameters' type),
    then the weight's dtype."""
    return dtype.type(np.float32(x))


def _hyper(dtype: np.dtype) -> Callable[[float], Any]:
    """``typed`` for one dtype."""
    return lambda x: typed(x, dtype)


def _rescaled(g: np.ndarray, rescale: float, clip: float) -> np.ndarray:
    """clip(rescale * g), in the gradient's dtype (the gradient the optimizers read)."""
    return _clip(g * typed(rescale, g.dtype) if rescale != 1.0 else g, typed(clip, g.dtype))


def _sgd_step(w: np.ndarray, g: np.ndarray, wd: float, rescale: float, clip: float) -> np.ndarray:
    """clip(rescale * g) + wd * w, in the weight's dtype (MXNet's SGD gradient: the decay
    after the clip; at wd 0 too, as MXNet's, a NaN weight makes a NaN step)."""
    return _rescaled(g, rescale, clip) + typed(wd, w.dtype) * w


def _decayed_step(w: np.ndarray, g: np.ndarray, wd: float, rescale: float, clip: float) -> np.ndarray:
    """clip(rescale * g + wd * w), in the weight's dtype (the gradient of MXNet's Adam, RMSProp
    and FTML: the decay before the clip)."""
    return _rescaled(g * typed(rescale, w.dtype) + typed(wd, w.dtype) * w, 1.0, clip)


def _sign(x: np.ndarray) -> np.ndarray:
    """1, -1 or 0 in x's dtype, as MXNet's (x > 0) - (x < 0): NaN gives 0 (numpy's sign, NaN)."""
    return np.subtract(x > 0, x < 0, dtype=x.dtype)


def _moving_average(avg: np.ndarray, x: np.ndarray, decay: float, times: np.ndarray | None = None) -> None:
    """avg = decay * avg + (1 - decay) * x, in place; with ``times``, x * times as MXNet's
    ``(1 - decay) * x * times`` rounds it."""
    t = _hyper(avg.dtype)
    avg *= t(decay)
    part = (t(1) - t(decay)) * x
    avg += part if times is None else part * times


def sgd_update_numpy(w: np.ndarray, g: np.ndarray, lr: float, wd: float, rescale: float, clip: float) -> None:
    """w -= lr * (clip(rescale * g) + wd * w), in place."""
    w -= typed(lr, w.dtype) * _sgd_step(w, g, wd, rescale, clip)


def sgd_mom_update_numpy(
    w: np.ndarray, g: np.ndarray, mom: np.ndarray, lr: float, momentum: float, wd: float, rescale: float, clip: float
) -> None:
    """mom = momentum * mom - lr * (clip(rescale * g) + wd * w); w += mom, in place (MXNet's
    sgd_mom_update, in the weight's dtype)."""
    t = _hyper(w.dtype)
    step = _sgd_step(w, g, wd, rescale, clip)
    mom *= t(momentum)
    mom -= t(lr) * step
    w += mom


def mp_sgd_update_numpy(
    w: np.ndarray, g: np.ndarray, w32: np.ndarray, lr: float, wd: float, rescale: float, clip: float
) -> None:
    """MXNet's mp_sgd_update: sgd_update's step on the float32 master copy w32 (the gradient
    read in float32), then w = w32 in the weight's dtype; all in place."""
    sgd_update_numpy(w32, g.astype(np.float32), lr, wd, rescale, clip)
    w[...] = w32


def mp_sgd_mom_update_numpy(
    w: np.ndarray,
    g: np.ndarray,
    mom: np.ndarray,
    w32: np.ndarray,
    lr: float,
    momentum: float,
    wd: float,
    rescale: float,
    clip: float,
) -> None:
    """MXNet's mp_sgd_mom_update: sgd_mom_update's step on the float32 master copy w32 and
    the float32 momentum, then w = w32 in the weight's dtype; all in place."""
    sgd_mom_update_numpy(w32, g.astype(np.float32), mom, lr, momentum, wd, rescale, clip)
    w[...] = w32


def nag_mom_update_numpy(
    w: np.ndarray,
    g: np.ndarray,
    mom: np.ndarray,
    lr: float,
    momentum: float,
    wd: float,
    rescale: float,
    clip: float,
    out_is_weight: bool = True,
) -> None:
    """MXNet's nag_mom_update (Nesterov momentum), in place, in the weight's dtype: with
    step(w) = lr * (clip(rescale * g) + wd * w) and mom = momentum * mom,
    w = w - mom + (momentum + 1) * (mom - step(w)), then mom -= step(w). MXNet's kernel reads
    the weight for that last step after writing its output: with out=weight (``out_is_weight``)
    the step is of the new weight, else of the weight before the update."""
    t = _hyper(w.dtype)
    mom *= t(momentum)
    step = t(lr) * _sgd_step(w, g, wd, rescale, clip)
    w[...] = w - mom + (t(momentum) + t(1)) * (mom - step)
    mom -= t(lr) * _sgd_step(w, g, wd, rescale, clip) if out_is_weight else step


def rmsprop_update_numpy(
    w: np.ndarray,
    g: np.ndarray,
    n: np.ndarray,
    lr: float,
    gamma1: float,
    epsilon: float,
    wd: float,
    rescale: float,
    clip: float,
    clip_weights: float,
) -> None:
    """MXNet's rmsprop_update (Tieleman and Hinton), in place, in the weight's dtype: with
    g' = clip(rescale * g + wd * w), n the moving average of g'^2 (gamma1),
    w = clip_weights(w - lr * g' / sqrt(n + epsilon))."""
    t = _hyper(w.dtype)
    step = _decayed_step(w, g, wd, rescale, clip)
    _moving_average(n, np.square(step), gamma1)
    w[...] = _clip(w - t(lr) * (step / np.sqrt(n + t(epsilon))), t(clip_weights))


def rmspropalex_update_numpy(
    w: np.ndarray,
    g: np.ndarray,
    n: np.ndarray,
    gs: np.ndarray,
    delta: np.ndarray,
    lr: float,
    gamma1: float,
    gamma2: float,
    epsilon: float,
    wd: float,
    rescale: float,
    clip: float,
    clip_weights: float,
) -> None:
    """MXNet's rmspropalex_update (Graves' RMSProp), in place, in the weight's dtype: with
    g' = clip(rescale * g + wd * w), n and gs the moving averages of g'^2 and g' (gamma1),
    delta = gamma2 * delta - lr * g' / sqrt(n - gs^2 + epsilon), w = clip_weights(w + delta)."""
    t = _hyper(w.dtype)
    step = _decayed_step(w, g, wd, rescale, clip)
    _moving_average(n, step, gamma1, step)
    _moving_average(gs, step, gamma1)
    delta *= t(gamma2)
    delta -= t(lr) * step / np.sqrt(n - np.square(gs) + t(epsilon))
    w[...] = _clip(w + delta, t(clip_weights))


def signsgd_update_numpy(w: np.ndarray, g: np.ndarray, lr: float, wd: float, rescale: float, clip: float) -> None:
    """MXNet's signsgd_update, in place: w = (1 - lr * wd) * w - lr * sign(g) (as in MXNet,
    rescale and clip change nothing: the sign is the gradient's)."""
    t = _hyper(w.dtype)
    w *= t(1) - t(lr) * t(wd)
    w -= t(lr) * _sign(g)


def signum_update_numpy(
    w: np.ndarray,
    g: np.ndarray,
    mom: np.ndarray,
    lr: float,
    momentum: float,
    wd: float,
    rescale: float,
    clip: float,
    wd_lh: float,
) -> None:
    """MXNet's signum_update, in place, in the weight's dtype: mom the moving average of
    -(clip(rescale * g) + wd * w) (momentum), w = (1 - lr * wd_lh) * w + lr * sign(mom)."""
    t = _hyper(w.dtype)
    k = t(1) - t(momentum)
    mom *= t(momentum)
    mom -= k * t(wd) * w
    mom -= k * _rescaled(g, rescale, clip) if clip >= 0 else k * t(rescale) * g
    w *= t(1) - t(lr) * t(wd_lh)
    w += t(lr) * _sign(mom)


def ftrl_update_numpy(
    w: np.ndarray,
    g: np.ndarray,
    z: np.ndarray,
    n: np.ndarray,
    lr: float,
    lamda1: float,
    beta: float,
    wd: float,
    rescale: float,
    clip: float,
) -> None:
    """MXNet's ftrl_update (FTRL-Proximal), in place, in the weight's dtype: with
    g' = clip(rescale * g), z += g' - (sqrt(n + g'^2) - sqrt(n)) * w / lr, n += g'^2,
    w = (sign(z) * lamda1 - z) / ((beta + sqrt(n)) / lr + wd) where |z| > lamda1, else 0."""
    t = _hyper(w.dtype)
    step = _rescaled(g, rescale, clip)
    z += step - (np.sqrt(n + np.square(step)) - np.sqrt(n)) * w / t(lr)
    n += np.square(step)
    w[...] = (_sign(z) * t(lamda1) - z) / ((t(beta) + np.sqrt(n)) / t(lr) + t(wd)) * (np.abs(z) > t(lamda1))


FTML_EPSILON = float(np.float32(1e-8))
"""ftml_update's default epsilon: MXNet declares it a double, with the float32 1e-8 as its default."""


def ftml_update_numpy(
    w: np.ndarray,
    g: np.ndarray,
    d: np.ndarray,
    v: np.ndarray,
    z: np.ndarray,
    lr: float,
    beta1: float,
    beta2: float,
    epsilon: float,
    t: int,
    wd: float,
    rescale: float,
    clip: float,
) -> None:
    """MXNet's ftml_update (Follow the Moving Leader) at step t, in place, in the weight's
    dtype: with g' = clip(rescale * g + wd * w), v the moving average of g'^2 (beta2),
    d_t = (1 - beta1^t) / lr * (sqrt(v / (1 - beta2^t)) + epsilon),
    z = beta1 * z + (1 - beta1) * g' - (d_t - beta1 * d) * w, d = d_t, w = -z / d_t."""
    f = _hyper(w.dtype)
    step = _decayed_step(w, g, wd, rescale, clip)
    _moving_average(v, np.square(step), beta2)
    n = w.dtype.type(t)  # (epsilon is a double in MXNet's FTML, t an int: both straight to the dtype)
    d_t = (f(1) - f(beta1) ** n) / f(lr) * (np.sqrt(v / (f(1) - f(beta2) ** n)) + w.dtype.type(epsilon))
    _moving_average(z, step, beta1)
    z -= (d_t - f(beta1) * d) * w
    d[...] = d_t
    w[...] = -z / d_t


def adam_update_numpy(
    w: np.ndarray,
    g: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    lr: float,
    beta1: float,
    beta2: float,
    epsilon: float,
    wd: float,
    rescale: float,
    clip: float,
) -> None:
    """MXNet's adam_update, in place, in the weight's dtype: g' = clip(rescale * g + wd * w)
    (the decay before the clip, as MXNet's), mean and var their moving averages of g' and
    g'^2, w -= lr * mean / (sqrt(var) + epsilon). No bias correction: MXNet's optimizer
    folds it into lr."""
    t = _hyper(w.dtype)
    step = _decayed_step(w, g, wd, rescale, clip)
    _moving_average(mean, step, beta1)
    _moving_average(var, step, beta2, step)
    w -= t(lr) * mean / (np.sqrt(var) + t(epsilon))


def mp_nag_mom_update_numpy(
    w: np.ndarray,
    g: np.ndarray,
    mom: np.ndarray,
    w32: np.ndarray,
    lr: float,
    momentum: float,
    wd: float,
    rescale: float,
    clip: float,
) -> None:
    """MXNet's mp_nag_mom_update: nag_mom_update's step on the float32 master copy w32 and the
    float32 momentum (the gradient read in float32), then w = w32 in the weight's dtype; all
    in place. MXNet's kernel takes the momentum's last step of w32 as it stands after the
    update, whatever ``out`` is (w32 is not its output)."""
    nag_mom_update_numpy(w32, g.astype(np.float32), mom, lr, momentum, wd, rescale, clip)
    w[...] = w32


def _bias_corrected(avg: np.ndarray, beta: float, t: int) -> np.ndarray:
    """avg / (1 - beta^t) as MXNet's LAMB computes it (``avg / (1. - pow(beta, t))`` in C++):
    beta^t in the dtype (float16's in float32, rounded), then 1 - beta^t and the quotient in
    double, rounded to the dtype, but for float16, whose arithmetic with a double stays in
    float16."""
    dt = avg.dtype
    if dt == np.float64:
        power = float(np.float32(beta)) ** t
    else:
        power = float(dt.type(np.float32(beta) ** np.float32(t)))
    if dt == np.float16:
        return avg / np.float16(1.0 - power)
    return (avg.astype(np.float64) / (1.0 - power)).astype(dt)


def lamb_update_phase1_numpy(
    w: np.ndarray,
    g: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    beta1: float,
    beta2: float,
    epsilon: float,
    t: int,
    bias_correction: bool,
    wd: float,
    rescale: float,
    clip: float,
) -> None:
    """MXNet's lamb_update_phase1, in the weight's dtype: with g' = clip(rescale * g), mean and
    var the moving averages of g' and g'^2 (beta1, beta2, in place), and (bias_correction)
    mean and var divided by 1 - beta1^t and 1 - beta2^t, ``w`` becomes the update direction
    mean / (sqrt(var) + epsilon) + wd * w (it holds the weight on entry: the command's output,
    a copy of the weight unless it is the weight)."""
    f = _hyper(w.dtype)
    step = _rescaled(g, rescale, clip)
    _moving_average(mean, step, beta1)
    _moving_average(var, step, beta2, step)
    m, v = mean, var
    if bias_correction:
        m, v = _bias_corrected(mean, beta1, t), _bias_corrected(var, beta2, t)
    d = m / (np.sqrt(v) + f(epsilon))
    d += f(wd) * w
    w[...] = d


def lamb_update_phase2_numpy(
    w: np.ndarray, g: np.ndarray, r1: Any, r2: Any, lr: float, lower: float, upper: float
) -> np.ndarray:
    """MXNet's lamb_update_phase2, all in the weight's dtype: r1 raised to ``lower`` and cut to
    ``upper`` where they are not negative, lr' = lr * r1 / r2 (lr where r1 or r2 is 0), and
    the new weight w - lr' * g (a new array)."""
    f = _hyper(w.dtype)
    if lower >= 0:
        r1 = max(r1, f(lower))
    if upper >= 0:
        r1 = min(r1, f(upper))
    rate = f(lr) if r1 == 0 or r2 == 0 else f(lr) * r1 / r2
    return w - rate * g


def adamw_update_numpy(
    w: np.ndarray,
    g: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    rescale: np.ndarray,
    lr: float,
    beta1: float,
    beta2: float,
    epsilon: float,
    wd: float,
    eta: float,
    clip: float,
) -> None:
    """MXNet's contrib.adamw_update, in place, in the weight's dtype: g' = clip(rescale * g),
    mean and var its moving averages of g' and (g'^2), w -= eta * (lr * mean / (sqrt(var) +
    epsilon) + wd * w); nothing changes where ``rescale`` (an array of one value: a dynamic
    loss scale's) is 0, NaN or infinite. Float16 arrays step in float32, rounded once (nearer
    the exact step than MXNet's float16 values and numpy's float16 arithmetic)."""
    r = float(rescale.reshape(-1)[0])
    if r == 0 or not math.isfinite(r):
        return
    if w.dtype == np.float16:
        wide = [a.astype(np.float32) for a in (w, mean, var)]
        adamw_update_numpy(
            wide[0], g.astype(np.float32), wide[1], wide[2], rescale, lr, beta1, beta2, epsilon, wd, eta, clip
        )
        for a, v in zip((w, mean, var), wide):
            a[...] = v
        return
    t = _hyper(w.dtype)
    step = _rescaled(g, r, clip)
    mean *= t(beta1)
    mean += (t(1) - t(beta1)) * step
    var *= t(beta2)
    var += (t(1) - t(beta2)) * np.square(step)  # (g'^2 first, as MXNet's (1 - beta2) * (g * g))
    w -= t(eta) * (t(lr) * mean / (np.sqrt(var) + t(epsilon)) + t(wd) * w)


def mp_adamw_update_numpy(
    w: np.ndarray,
    g: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    w32: np.ndarray,
    rescale: np.ndarray,
    *hyper: float,
) -> None:
    """MXNet's contrib.mp_adamw_update: adamw_update's step on the float32 master copy w32 with
    float32 mean and var (the gradient read in float32), then w = w32 in the weight's dtype."""
    r = float(rescale.reshape(-1)[0])
    if r == 0 or not math.isfinite(r):
        return
    adamw_update_numpy(w32, g.astype(np.float32), mean, var, rescale, *hyper)
    w[...] = w32


def relu_grad_numpy(g: np.ndarray, x: np.ndarray) -> np.ndarray:
    """g where x > 0, else 0 (as g * (x > 0): a NaN in g stays NaN)."""
    return g * (x > 0)


def softmax_ce_loss_numpy(x: np.ndarray, idx: np.ndarray, cap: float = math.inf) -> float:
    """The summed cross-entropy of softmax(x) (N, C) against labels idx (N,) in range, each
    sample's at most ``cap``."""
    z = x - x.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(np.minimum(-np.take_along_axis(logp, idx[:, None], axis=1), cap).sum())


def softmax_ce_grad_numpy(x: np.ndarray, idx: np.ndarray, g: Any) -> np.ndarray:
    """(softmax(x) - one_hot(idx)) * g for logits x (N, C), labels idx (N,) in range."""
    p = np.exp(x - x.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(x.shape[0]), idx] -= 1
    p *= g
    return p


if numba is not None:
    # nogil: as numpy's ufuncs, the kernels let other threads (other sessions' batches) run
    # while they work on arrays that their session's lock keeps to them

    @numba.njit(cache=True, nogil=True)
    def _relu_grad(gf, xf, of):  # pragma: no cover (compiled)
        for i in range(gf.size):
            of[i] = gf[i] * (1.0 if xf[i] > 0 else 0.0)

    @numba.njit(cache=True, nogil=True)
    def _row_max_sumexp(x, i):  # pragma: no cover (compiled)
        k = x.shape[1]
        m = x[i, 0]
        for j in range(1, k):
            m = max(m, x[i, j])
        s = 0.0
        for j in range(k):
            s += np.exp(x[i, j] - m)
        return m, s

    @numba.njit(cache=True, nogil=True)
    def _softmax_ce_loss(x, idx, cap):  # pragma: no cover (compiled)
        total = 0.0
        for i in range(x.shape[0]):
            m, s = _row_max_sumexp(x, i)
            total += min(np.log(s) + m - x[i, idx[i]], cap)
        return total

    @numba.njit(cache=True, nogil=True)
    def _softmax_ce_grad(x, idx, g, out):  # pragma: no cover (compiled)
        for i in range(x.shape[0]):
            m, s = _row_max_sumexp(x, i)
            for j in range(x.shape[1]):
                out[i, j] = np.exp(x[i, j] - m) / s * g
            out[i, idx[i]] -= g

    @numba.njit(cache=True, nogil=True)
    def _scatter_rows(out2, idx, g2):  # pragma: no cover (compiled)
        n, m = g2.shape
        rows = out2.shape[0]
        for i in range(n):
            r = idx[i]
            if r < 0:
                r += rows
            for j in range(m):
                out2[r, j] += g2[i, j]

    @numba.njit(cache=True, nogil=True)
    def _scaled_sub(w, g, a):  # pragma: no cover (compiled)
        wf, gf = w.reshape(w.size), g.reshape(g.size)  # C-contiguous: views
        for i in range(wf.size):
            wf[i] -= a * gf[i]

    @numba.njit(cache=True, nogil=True)
    def _sgd(wf, gf, lr, wd, rescale, clip):  # pragma: no cover (compiled)
        for i in range(wf.size):
            s = gf[i] * rescale
            if clip >= 0:
                if s > clip:
                    s = clip
                elif s < -clip:
                    s = -clip
            wf[i] -= lr * (s + wd * wf[i])

    # the special functions, elementwise on float64 (erf and erfc never fail; gamma and lgamma
    # give their poles and overflows as the numpy fallback's _gamma and _lgamma do)

    @numba.njit(cache=True, nogil=True)
    def _erf_loop(xf, of):  # pragma: no cover (compiled)
        for i in range(xf.size):
            of[i] = math.erf(xf[i])

    @numba.njit(cache=True, nogil=True)
    def _erfc_loop(xf, of):  # pragma: no cover (compiled)
        for i in range(xf.size):
            of[i] = math.erfc(xf[i])

    @numba.njit(cache=True, nogil=True)
    def _gamma_loop(xf, of):  # pragma: no cover (compiled)
        for i in range(xf.size):
            v = xf[i]
            if v == 0.0:
                of[i] = math.copysign(math.inf, v)
            elif v < 0.0 and v == math.floor(v):  # a pole (-inf too)
                of[i] = math.nan
            elif v > 171.7:  # past float64's range (inf stays inf)
                of[i] = math.inf
            else:
                of[i] = math.gamma(v)

    @numba.njit(cache=True, nogil=True)
    def _lgamma_loop(xf, of):  # pragma: no cover (compiled)
        for i in range(xf.size):
            v = xf[i]
            if v <= 0.0 and v == math.floor(v):  # a pole (-inf too)
                of[i] = math.inf
            else:
                of[i] = math.lgamma(v)

    _SPECIAL_LOOPS = {"erf": _erf_loop, "erfc": _erfc_loop, "gamma": _gamma_loop, "lgamma": _lgamma_loop}


_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))  # what the compiled kernels take (numba has no float16)


def _compiled_numbers(dt: np.dtype) -> bool:
    return dt in _FLOATS or dt.kind in "iu"


def scatter_add_rows(out: np.ndarray, idx: np.ndarray, g: np.ndarray) -> None:
    """out[idx[i], ...] += g[i, ...]: an indexing gradient along the first axis.

    ``idx`` must be in range (callers clip or check it first)."""
    if (
        numba is not None
        and out.flags.c_contiguous
        and g.dtype == out.dtype
        and _compiled_numbers(out.dtype)
        and out.ndim >= 1
    ):
        m = int(np.prod(out.shape[1:], dtype=np.int64))
        _scatter_rows(
            out.reshape(out.shape[0], m),
            np.ascontiguousarray(idx.reshape(-1), dtype=np.int64),
            np.ascontiguousarray(g).reshape(-1, m),
        )
        return
    scatter_add_rows_numpy(out, idx, g)


def _compiled_pair(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether an elementwise kernel over ``a`` and ``b`` can run compiled: numba is there,
    and they are C-contiguous arrays of one shape and one float dtype."""
    return (
        numba is not None
        and a.shape == b.shape
        and a.dtype == b.dtype
        and a.dtype in _FLOATS
        and a.flags.c_contiguous
        and b.flags.c_contiguous
    )


def sgd_update(
    w: np.ndarray, g: np.ndarray, lr: float, wd: float = 0.0, rescale: float = 1.0, clip: float = -1.0
) -> None:
    """One SGD step on ``w`` in place, one pass over memory when compiled."""
    if _compiled_pair(w, g):
        t = _hyper(w.dtype)
        _sgd(w.reshape(-1), g.reshape(-1), t(lr), t(wd), t(rescale), t(clip))
        return
    sgd_update_numpy(w, g, lr, wd, rescale, clip)


def scaled_sub_ok(w: np.ndarray, g: np.ndarray) -> bool:
    """Whether ``scaled_sub_unchecked`` can take ``w`` and ``g``."""
    return _compiled_pair(w, g) and w.flags.writeable and not np.may_share_memory(w, g)


def scaled_sub_unchecked(w: np.ndarray, g: np.ndarray, a: Any) -> None:
    """``w -= g * a`` for arrays that ``scaled_sub_ok`` took, ``a`` of their dtype."""
    _scaled_sub(w, g, a)


def scaled_sub(w: np.ndarray, g: np.ndarray, a: float) -> bool:
    """``w -= g * a`` in place in one pass, as numpy computes it in two (``a`` cast to the
    dtype first, then the product, then the difference, each rounded: the same bits); False,
    doing nothing, where the kernel cannot take the arrays (the caller runs numpy's way)."""
    if scaled_sub_ok(w, g):
        _scaled_sub(w, g, w.dtype.type(a))
        return True
    return False


def relu_grad(g: np.ndarray, x: np.ndarray) -> np.ndarray:
    """relu's VJP: g where x > 0, else 0, in one pass when compiled."""
    if _compiled_pair(g, x):
        out = np.empty_like(g)
        _relu_grad(g.reshape(-1), x.reshape(-1), out.reshape(-1))
        return out
    return relu_grad_numpy(g, x)


def softmax_ce_loss(x: np.ndarray, idx: np.ndarray, cap: float = math.inf) -> float:
    """The summed softmax cross-entropy of logits x (N, C) against labels idx (N,) in range,
    each sample's at most ``cap``; one pass over the logits when compiled (accumulated in
    float64)."""
    if numba is not None and x.dtype in _FLOATS and x.ndim == 2 and x.shape[1] > 0:
        return float(_softmax_ce_loss(np.ascontiguousarray(x), np.ascontiguousarray(idx, dtype=np.int64), cap))
    return softmax_ce_loss_numpy(x, idx, cap)


def softmax_ce_grad(x: np.ndarray, idx: np.ndarray, g: np.ndarray) -> np.ndarray:
    """The gradient of the summed softmax cross-entropy, times the scalar cotangent ``g``
    (an array of one element), one pass over the logits when compiled."""
    if numba is not None and x.dtype in _FLOATS and x.ndim == 2 and x.shape[1] > 0:
        out = np.empty(x.shape, x.dtype)
        _softmax_ce_grad(
            np.ascontiguousarray(x), np.ascontiguousarray(idx, dtype=np.int64), x.dtype.type(g.reshape(-1)[0]), out
        )
        return out
    return softmax_ce_grad_numpy(x, idx, g.reshape(-1)[0])


def _gamma(v: float) -> float:
    """math.gamma with MXNet's answers where it raises: +-inf at +-0, NaN at the other poles
    (the negative integers, -inf), inf past float64's range."""
    try:
        return math.gamma(v)
    except ValueError:
        return math.copysign(math.inf, v) if v == 0 else math.nan
    except OverflowError:
        return math.inf


def _lgamma(v: float) -> float:
    """math.lgamma (log |gamma|), inf at the poles (0, the negative integers) as MXNet's."""
    try:
        return math.lgamma(v)
    except (ValueError, OverflowError):
        return math.inf


_SPECIAL_NUMPY = {
    "erf": np.frompyfunc(math.erf, 1, 1),
    "erfc": np.frompyfunc(math.erfc, 1, 1),
    "gamma": np.frompyfunc(_gamma, 1, 1),
    "lgamma": np.frompyfunc(_lgamma, 1, 1),
}


def special_numpy(name: str, x: np.ndarray) -> np.ndarray:
    """erf, erfc, gamma or lgamma of each element of a float64 array, through Python's math
    module (numpy has none of them)."""
    with np.errstate(all="ignore"):  # (the floating point flags the math functions leave)
        return np.asarray(_SPECIAL_NUMPY[name](x), dtype=np.float64).reshape(x.shape)


def special(name: str, x: np.ndarray) -> np.ndarray:
    """erf, erfc, gamma or lgamma (log |gamma|) of each element of a float64 array, a new
    float64 array; compiled when numba is there."""
    if numba is None or x.size == 0:
        return special_numpy(name, x)
    out = np.empty(x.shape, np.float64)
    loop = _SPECIAL_LOOPS[name]
    loop(np.ascontiguousarray(x, dtype=np.float64).reshape(-1), out.reshape(-1))
    return out


__all__ = [
    "HAVE_NUMBA",
    "adam_update_numpy",
    "sgd_mom_update_numpy",
    "relu_grad",
    "scaled_sub",
    "scaled_sub_unchecked",
    "scaled_sub_ok",
    "scatter_add_rows",
    "sgd_update",
    "softmax_ce_grad",
    "softmax_ce_loss",
    "special",
    "special_numpy",
]
