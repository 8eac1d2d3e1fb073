"""Sequence losses: CTCLoss.

MXNet 1.9.1's connectionist temporal classification loss, with its shapes, defaults and
checks. The loss is computed in log space (the alpha-beta recursions of Graves et al.), in
float64 whatever the data's dtype, vectorised over the batch and the label positions, a step
of time at a time: long sequences neither underflow nor overflow. The first-order gradient
is computed on plain arrays (``eager_vjp``); the table VJP runs the same recursions with the
table's ops, so a gradient can be differentiated again.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .errors import DTypeError, InvalidInput, ShapeError
from .ops_math import STEP_WORK
from .ops_nn import floating
from .optable import Attr, Spec, defop, prod

CTC_ATTRS = (
    Attr("use_data_lengths", "bool", False),
    Attr("use_label_lengths", "bool", False),
    Attr("blank_label", "str", "first"),
)

NEG = -1e100
"""log 0 in the table VJP's recursions: finite, so no difference of two of them is NaN (their
exponentials are 0 all the same, in float64)."""


def _blank(at: dict, classes: int) -> int:
    """The blank's class: 0 (``first``) or the last (``last``)."""
    return 0 if at["blank_label"] == "first" else classes - 1


def _ctc_infer(at: dict, data: Spec, label: Spec, *lengths: Spec) -> Spec:
    if at["blank_label"] not in ("first", "last"):
        raise InvalidInput(f"CTCLoss: blank_label must be first or last, got {at['blank_label']!r}")
    want = 2 + at["use_data_lengths"] + at["use_label_lengths"]
    if 2 + len(lengths) != want:  # (MXNet's check: the inputs its flags ask for)
        raise InvalidInput(
            f"CTCLoss: expects {want} inputs (data, label"
            + (", data_lengths" if at["use_data_lengths"] else "")
            + (", label_lengths" if at["use_label_lengths"] else "")
            + f"), but got {2 + len(lengths)}"
        )
    floating("CTCLoss", data)
    for name, s in (("label", label),) + tuple(zip(_length_names(at), lengths)):
        if s.dtype == "bool":
            raise DTypeError(f"CTCLoss: {name} must be numbers, not bool")
    if len(data.shape) != 3:
        raise ShapeError(f"CTCLoss: data must be 3-D (sequence length, batch, alphabet), got shape {data.shape}")
    if len(label.shape) != 2:
        raise ShapeError(f"CTCLoss: label must be 2-D (batch, label length), got shape {label.shape}")
    t, n, c = data.shape
    if c == 0:  # (MXNet 1.9.1 fails on an empty array)
        raise ShapeError(f"CTCLoss: data must have at least one class (the blank) on its last axis, got {data.shape}")
    if label.shape[0] != n:
        raise ShapeError(f"CTCLoss: the batch sizes of data {data.shape} and label {label.shape} differ")
    for name, s in zip(_length_names(at), lengths):
        if s.shape != (n,):
            raise ShapeError(f"CTCLoss: {name} must be a vector of the batch size ({n},), got shape {s.shape}")
    if label.shape[1] > t:  # (MXNet's check)
        raise ShapeError(f"CTCLoss: the labels' length {label.shape[1]} cannot exceed the data's sequence length {t}")
    return Spec((n,), data.dtype)


def _length_names(at: dict) -> tuple[str, ...]:
    return ("data_lengths",) * at["use_data_lengths"] + ("label_lengths",) * at["use_label_lengths"]


def _rounded(v: np.ndarray) -> np.ndarray:
    """Integers as MXNet 1.9.1's CTCLoss reads labels and lengths: to the nearest, halves away
    from zero (2.5 is 3, 1.2 is 1), as int64; NaN or infinite values are refused by the caller."""
    if v.dtype.kind in "iu":
        return v.astype(np.int64)
    f = v.astype(np.float64)
    return np.trunc(f + np.copysign(0.5, f)).astype(np.int64)


def _finite_ints(name: str, v: np.ndarray) -> np.ndarray:
    if v.dtype.kind == "f" and v.size:
        if not np.isfinite(v).all():
            raise InvalidInput(f"CTCLoss: {name} must be finite, got {v[~np.isfinite(v)].flat[0]}")
        huge = np.abs(v) >= 2.0**62 if v.dtype.itemsize > 2 else np.zeros(v.shape, bool)  # (float16: < 65504)
        if huge.any():  # (past int64 once rounded: named as given, not as wrapped)
            raise InvalidInput(f"CTCLoss: {name} {v[huge].flat[0]} is out of range")
    return _rounded(v)


class Plan(NamedTuple):
    """What the recursions need of the labels and lengths (no data): ``ext`` (N, S) the labels
    with blanks around and between them (S = 2 L + 1 of the longest; the rest blanks), ``skip``
    (N, S) where a path may jump two positions (onto a label other than the blank and the label
    two before), ``final`` (N, S) the positions a path may end at, ``lens`` (N,) the data
    lengths, ``ok`` (N,) the samples whose loss is computed (the others' is 0, or inf for a
    sample of length 0)."""

    ext: np.ndarray
    skip: np.ndarray
    final: np.ndarray
    lens: np.ndarray
    ok: np.ndarray


def _plan(at: dict, shape: tuple[int, ...], label: np.ndarray, lengths: tuple[np.ndarray, ...]) -> Plan:
    t, n, c = shape
    blank = _blank(at, c)
    lab = _finite_ints("label", label)
    k = 0
    if at["use_data_lengths"]:
        lens = _finite_ints("data_lengths", lengths[0])
        k = 1
        bad = (lens < 0) | (lens > t)
        if bad.any():  # (MXNet 1.9.1 reads past the data, or crashes)
            raise InvalidInput(
                f"CTCLoss: data_lengths must be in [0, {t}] (the data's sequence length), got {lens[bad][0]}"
            )
    else:
        lens = np.full(n, t, np.int64)
    width = label.shape[1]
    if at["use_label_lengths"]:
        lls = _finite_ints("label_lengths", lengths[k])
        bad = (lls < 0) | (lls > width)
        if bad.any():  # (MXNet 1.9.1 reads the next sample's labels, or crashes)
            raise InvalidInput(
                f"CTCLoss: label_lengths must be in [0, {width}] (the label array's width), got {lls[bad][0]}"
            )
    else:  # up to the first padding value: 0 with the blank first, -1 with it last (MXNet's)
        pad = lab == (0 if at["blank_label"] == "first" else -1)
        lls = np.where(pad.any(axis=1), pad.argmax(axis=1), width) if n and width else np.zeros(n, np.int64)
    labels = [lab[i, : lls[i]] for i in range(n)]
    for i, row in enumerate(labels):
        if row.size and (row.min() < 0 or row.max() >= c):
            bad_label = row[(row < 0) | (row >= c)][0]
            raise InvalidInput(
                f"CTCLoss: label {bad_label} of sample {i} is outside the alphabet [0, {c}) "
                f"(data has {c} classes, the blank {blank})"
            )
    s = 2 * (int(lls.max()) if n else 0) + 1
    ext = np.full((n, s), blank, np.int64)
    used = np.arange(width)[None, :] < lls[:, None]
    ext[:, 1 : 2 * width + 1 : 2] = np.where(used, lab, blank)[:, : (s - 1) // 2]
    skip = np.zeros((n, s), bool)
    if s > 2:
        skip[:, 2:] = (ext[:, 2:] != blank) & (ext[:, 2:] != ext[:, :-2])
    final = np.zeros((n, s), bool)
    rows = np.arange(n)
    final[rows, 2 * lls] = True
    final[rows[lls > 0], 2 * lls[lls > 0] - 1] = True
    repeats = np.array([int((r[1:] == r[:-1]).sum()) for r in labels], np.int64)
    # MXNet's: a label that needs more steps than the data has (with a blank between repeats)
    # has a loss and a gradient of 0; so has a sample of length 0 (its empty label's probability
    # is 1: MXNet's loss there is inf)
    ok = (lls + repeats <= lens) & (lens > 0)
    return Plan(ext, skip, final, lens, ok)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    """log softmax over the classes, in float64 (a new array)."""
    lp = x.astype(np.float64)  # (a copy: shifted and normalised in place)
    lp -= lp.max(axis=-1, keepdims=True)
    e = np.exp(lp)
    lp -= np.log(e.sum(axis=-1, keepdims=True))
    return lp


def _lse3(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """log(exp a + exp b + exp c), elementwise; -inf where all three are."""
    m = np.maximum(np.maximum(a, b), c)
    m[np.isneginf(m)] = 0.0
    r = np.exp(a - m)
    r += np.exp(b - m)
    r += np.exp(c - m)
    with np.errstate(divide="ignore"):
        np.log(r, out=r)
    r += m
    return r


def _shift(v: np.ndarray, k: int, fill: float) -> np.ndarray:
    """v moved k positions along its last axis (right for k > 0, left for k < 0), ``fill`` in."""
    out = np.full_like(v, fill)
    if k > 0:
        out[:, k:] = v[:, :-k]
    else:
        out[:, :k] = v[:, -k:]
    return out


def _alphas(lp: np.ndarray, p: Plan, keep: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """The forward recursion: the last alphas (N, S), log P(the first s extended labels in the
    first t steps) and, with ``keep``, every step's (T, N, S)."""
    t_len, n, _ = lp.shape
    rows = np.arange(n)[:, None]
    s = p.ext.shape[1]
    alpha = np.full((n, s), -np.inf)
    if t_len:
        alpha[:, :2] = lp[0][rows, p.ext[:, :2]]
    kept = np.empty((t_len, n, s)) if keep else None
    if kept is not None and t_len:
        kept[0] = alpha
    neg_skip = ~p.skip
    shortest = int(p.lens.min()) if n else 0  # (every sample takes the steps before it)
    for t in range(1, t_len):
        a2 = _shift(alpha, 2, -np.inf)
        a2[neg_skip] = -np.inf
        new = _lse3(alpha, _shift(alpha, 1, -np.inf), a2)
        new += lp[t][rows, p.ext]
        alpha = new if t < shortest else np.where((t < p.lens)[:, None], new, alpha)
        if kept is not None:
            kept[t] = alpha
    return alpha, kept


def _log_likelihood(alpha: np.ndarray, p: Plan) -> np.ndarray:
    """log P(label | data) of each sample, from its last alphas (those at its final positions)."""
    z = np.where(p.final, alpha, -np.inf)
    m = z.max(axis=1) if z.shape[1] else np.zeros(z.shape[0])
    m = np.where(np.isneginf(m), 0.0, m)
    with np.errstate(divide="ignore"):
        return m + np.log(np.exp(z - m[:, None]).sum(axis=1))


def _ctc(lp: np.ndarray, p: Plan) -> np.ndarray:
    """The losses (N,), float64: -log P(label | data); 0 where not ``ok``."""
    alpha, _ = _alphas(lp, p, keep=False)
    loss = -_log_likelihood(alpha, p)
    loss[~p.ok] = 0.0
    return loss


def _ctc_grad(lp: np.ndarray, p: Plan) -> np.ndarray:
    """d loss / d data (T, N, C), float64: softmax(data) less each class's share of the paths
    at each step (alpha beta / P), zero past a sample's length and for samples not ``ok`` (or
    whose loss is inf). P is taken from the alphas in float64 (not from the rounded loss)."""
    t_len, n, c = lp.shape
    last, alphas = _alphas(lp, p, keep=True)
    assert alphas is not None
    log_z = _log_likelihood(last, p)
    ok = p.ok & np.isfinite(log_z)
    log_z[~ok] = 0.0
    rows = np.arange(n)[:, None]
    s = p.ext.shape[1]
    init = np.where(p.final, 0.0, -np.inf)
    neg_skip = ~_shift(p.skip, -2, False)  # (a jump from s to s + 2 is allowed where skip[s + 2] is)
    beta = np.full((n, s), -np.inf)  # log P(the rest of the labels in the steps after t | at s at t)
    for t in range(t_len - 1, -1, -1):
        if t < t_len - 1:
            b = beta + lp[t + 1][rows, p.ext]
            b2 = _shift(b, -2, -np.inf)
            b2[neg_skip] = -np.inf
            beta = _lse3(b, _shift(b, -1, -np.inf), b2)
        last = np.equal(p.lens - 1, t)[:, None]
        beta = np.where(last, init, np.where((t < p.lens - 1)[:, None], beta, -np.inf))
        gamma = alphas[t]  # (in place: the paths' share at each position)
        gamma += beta
        gamma -= log_z[:, None]
        np.exp(gamma, out=gamma)
    grad = np.exp(lp)
    occ = np.zeros_like(grad)
    blank = int(p.ext[0, 0]) if n else 0
    occ[:, :, blank] = alphas[:, :, 0::2].sum(axis=2)
    nidx = np.arange(n)
    for j in range((s - 1) // 2):  # (one label position at a time: no class twice in a row of it)
        occ[:, nidx, p.ext[:, 2 * j + 1]] += alphas[:, :, 2 * j + 1]
    grad -= occ
    valid = (np.arange(t_len)[:, None] < p.lens[None, :]) & ok[None, :]
    grad *= valid[:, :, None]
    return grad


def _values(*xs: Any) -> list[np.ndarray]:
    """The arrays of a VJP's inputs (Traced ones' values, in a recorded pass)."""
    return [getattr(x, "value", x) for x in xs]


def _ctc_eager_vjp(at, g, y, data, label, *lengths):
    p = _plan(at, data.shape, label, tuple(lengths))
    lp = _log_softmax(data)
    grad = _ctc_grad(lp, p)
    del lp
    grad *= g.astype(np.float64)[None, :, None]
    return (grad.astype(data.dtype), None) + (None,) * len(lengths)


def _lse3_f(F: Any, a: Any, b: Any, c: Any) -> Any:
    m = F.maximum(F.maximum(a, b), c)
    s = F.add(F.add(F.exp(F.sub(a, m)), F.exp(F.sub(b, m))), F.exp(F.sub(c, m)))
    return F.add(m, F.log(s))


def _shift_f(F: Any, v: Any, k: int, n: int, s: int) -> Any:
    """``_shift`` with the table's ops, NEG in."""
    edge = np.full((n, min(abs(k), s)), NEG)
    if abs(k) >= s:
        return np.full((n, s), NEG)
    if k > 0:
        return F.concat(edge, F.slice_axis(v, axis=1, begin=0, end=s - k), dim=1)
    return F.concat(F.slice_axis(v, axis=1, begin=-k, end=s), edge, dim=1)


def _ctc_vjp(F, at, g, y, data, label, *lengths):
    """The eager VJP's recursions with the table's ops, in float64 (NEG for log 0), so the
    gradient can itself be differentiated."""
    xv, lv = _values(data, label)
    p = _plan(at, tuple(xv.shape), lv, tuple(_values(*lengths)))
    t_len, n, c = (int(d) for d in xv.shape)
    if not t_len or not n:
        return (F.zeros_like(data), None) + (None,) * len(lengths)
    s = p.ext.shape[1]
    x64 = data if data.dtype == np.float64 else F.astype(data, dtype="float64")
    lp = F.log_softmax(x64, axis=-1)
    idx = np.broadcast_to(p.ext[None], (t_len, n, s))
    e = F.gather_axis(lp, idx, axis=2)  # (T, N, S): each step's log probability of each position
    steps = [F.reshape(F.slice_axis(e, axis=0, begin=t, end=t + 1), shape=(n, s)) for t in range(t_len)]
    skip = p.skip.astype(np.float64)
    skip_neg = np.where(p.skip, 0.0, NEG)
    first = np.zeros((n, s))
    first[:, :2] = 1.0
    alpha = F.add(F.mul(steps[0], first), np.where(first > 0, 0.0, NEG))
    alphas = [alpha]
    for t in range(1, t_len):
        a2 = F.add(F.mul(_shift_f(F, alpha, 2, n, s), skip), skip_neg)
        new = F.add(_lse3_f(F, alpha, _shift_f(F, alpha, 1, n, s), a2), steps[t])
        act = (t < p.lens).astype(np.float64)[:, None]
        alpha = F.add(F.mul(new, act), F.mul(alpha, 1.0 - act))
        alphas.append(alpha)
    fin_neg = np.where(p.final, 0.0, NEG)
    z = F.add(alpha, fin_neg)
    m = F.max(z, axis=1, keepdims=True)
    log_z = F.add(m, F.log(F.sum(F.exp(F.sub(z, m)), axis=1, keepdims=True)))  # (N, 1)
    z_value = _values(log_z)[0][:, 0]
    ok = p.ok & np.isfinite(z_value) & (z_value > NEG / 2)  # (as the eager VJP's: no path, no gradient)
    log_z = F.mul(log_z, ok.astype(np.float64)[:, None])
    skip2 = _shift(p.skip, -2, False)
    skip2_f, skip2_neg = skip2.astype(np.float64), np.where(skip2, 0.0, NEG)
    betas = [None] * t_len
    beta = None
    for t in range(t_len - 1, -1, -1):
        init = np.equal(p.lens - 1, t)[:, None]
        none = np.less(p.lens - 1, t)[:, None]
        fixed = np.where(init, fin_neg, 0.0) + np.where(none, NEG, 0.0)
        if beta is None:
            beta = np.broadcast_to(fixed, (n, s)).copy()
        else:
            b = F.add(beta, steps[t + 1])
            b2 = F.add(F.mul(_shift_f(F, b, -2, n, s), skip2_f), skip2_neg)
            rec = _lse3_f(F, b, _shift_f(F, b, -1, n, s), b2)
            beta = F.add(F.mul(rec, (t < p.lens - 1).astype(np.float64)[:, None]), fixed)
        betas[t] = beta
    gamma = F.exp(F.sub(F.add(F.stack(*alphas, axis=0), F.stack(*betas, axis=0)), F.reshape(log_z, shape=(1, n, 1))))
    occ = F.scatter_axis(gamma, idx, axis=2, shape=(t_len, n, c))
    valid = ((np.arange(t_len)[:, None] < p.lens[None, :]) & ok[None, :]).astype(np.float64)[:, :, None]
    g64 = g if g.dtype == np.float64 else F.astype(g, dtype="float64")
    scale = F.mul(valid, F.reshape(g64, shape=(1, n, 1)))
    gx = F.mul(F.sub(F.exp(lp), occ), scale)
    if data.dtype != np.float64:
        gx = F.astype(gx, dtype=data.dtype.name)
    return (gx, None) + (None,) * len(lengths)


def _ctc_vjp_shape(data: Spec, label: Spec) -> tuple[int, int, int, int]:
    t, n, c = data.shape
    return t, n, c, 2 * label.shape[1] + 1


def _ctc_scratch(at: dict, data: Spec, label: Spec, *lengths: Spec) -> int:
    """The log probabilities (T, N, C) and their exponentials, in float64; the plan's arrays
    (N, S) and the recursion's, a dozen of them (S = 2 L + 1 of the label array's width L)."""
    t, n, c, s = _ctc_vjp_shape(data, label)
    return 8 * (2 * t * n * c + 24 * n * s + 4 * prod(label.shape))


def _ctc_vjp_scratch(at: dict, data: Spec, label: Spec, *lengths: Spec) -> int:
    """The eager VJP's: every step's alphas (T, N, S), and the log probabilities, the
    probabilities (the gradient, made in place), the paths' shares and a softmax's exponentials
    (T, N, C), in float64; the plan's and the recursion's arrays (N, S). (A recorded pass,
    create_graph, keeps every table op of the recursions: about 55 float64 arrays (N, S) a step
    and 5 (T, N, C), measured; more than the twice this the session allows it.)"""
    t, n, c, s = _ctc_vjp_shape(data, label)
    return 8 * (4 * t * n * c + t * n * s + 24 * n * s + 4 * prod(label.shape))


def _ctc_work(at: dict, data: Spec, label: Spec, *lengths: Spec) -> int:
    """The recursions' arithmetic, and their Python steps: a dozen numpy calls a time step."""
    t, n, c, s = _ctc_vjp_shape(data, label)
    return t * n * (4 * c + 16 * s) + 12 * t * STEP_WORK


@defop(
    "CTCLoss",
    ("data", "label", "*lengths"),
    CTC_ATTRS,
    most=4,
    infer=_ctc_infer,
    vjp=_ctc_vjp,
    eager_vjp=_ctc_eager_vjp,
    aliases=("ctc_loss", "contrib_CTCLoss", "contrib_ctc_loss"),  # (nd.contrib.CTCLoss: MXNet has both)
    scratch=_ctc_scratch,
    vjp_scratch=_ctc_vjp_scratch,
    work=_ctc_work,
)
def _ctc_loss(cx, at, data, label, *lengths):
    """The connectionist temporal classification loss of each sample, (N,): -log of the
    probability of its label sequence summed over every alignment of it to the data (T, N, C)
    (activations: softmax is applied over the C classes), blanks between and around the labels.
    ``label`` (N, L): class indices, the blank's (``blank_label``: ``first``, class 0, or
    ``last``, class C - 1) excluded; with ``use_label_lengths`` a ``label_lengths`` input (N,)
    gives each sample's count, else a sample's labels end at the first padding value (0 with the
    blank first, -1 with it last). With ``use_data_lengths`` a ``data_lengths`` input (N,) gives
    each sample's steps (the gradient past them is zero). Labels and lengths are rounded to
    integers (halves away from zero, as MXNet's). As MXNet's, a label sequence longer than its
    data allows (with a blank between repeats) has a loss of 0, and its gradient is 0; so has a
    sample of length 0 (MXNet gives inf where its label is empty too, whose probability is 1).
    No gradient for the labels and lengths."""
    _ctc_infer(at, *(Spec(tuple(a.shape), a.dtype.name) for a in (data, label, *lengths)))
    p = _plan(at, data.shape, label, tuple(lengths))
    return _ctc(_log_softmax(data), p).astype(data.dtype)
