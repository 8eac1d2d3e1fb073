"""Table-driven tests of the whole engine op table.

Every op of ``OPS`` has a case in ``CASES``: its input shapes, the domain its
inputs are drawn from (away from poles, kinks and ties where the gradient
check needs it), its attributes and a numpy reference. Each op is checked for

* forward against the reference, in float32 and float64;
* ``op.infer`` against the shape and dtype forward actually gives;
* its VJP against central differences in float64, along one random direction
  and projected on one random cotangent (HIPS autograd's ``check_vjp``);
* its second derivatives: the VJP is recorded (the table's ops on Traced
  values), the scalar <vjp(g), v> is differentiated by ``tape.backward`` with
  respect to the inputs and the cotangent g, and compared with central
  differences of the same scalar computed with plain eager VJPs.

``VARIANTS`` adds cases for other attribute settings (modes, transposes,
training, ...), with the same checks. Focused tests follow for broadcasting
(hypothesis), reductions, indexing keys, MXNet's reshape codes, dot,
transpose, broadcast_to / sum_to, creation and random ops, Dropout and
BatchNorm state, variadic arity, a whole backward pass through a Session, and
third derivatives through a Session's ``grad_of`` with ``create_graph``.

Inputs that are indices, labels or lengths are integer-valued floats; their
cotangents must be None (``Case.nondiff``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import mutually_broadcastable_shapes

from gradserve.engine import ops, tape
from gradserve.engine.dispatch import Context, Eager, Recorder, Traced
from gradserve.engine.errors import IndexOutOfRange, InvalidInput, MXNetError, ShapeError
from gradserve.engine.optable import OPS, ZERO_VJPS, Op, Spec
from gradserve.engine.session import Session
from gradserve.engine.tape import Node, resolve

from .test_ops_seq import ctc_ref

# --------------------------------------------------------------------------
# input domains: (rng, shape) -> float64 array


def vjp_of(op):
    """``op.vjp`` with lazy cotangents computed (the tape computes only those it needs)."""

    def call(*args, **kwargs):
        return tuple(resolve(c) for c in op.vjp(*args, **kwargs))

    return call


def U(lo: float = -2.0, hi: float = 2.0) -> Callable:
    """Uniform in [lo, hi)."""
    return lambda rng, shape: rng.uniform(lo, hi, shape)


def AWAY(gap: float = 0.2, hi: float = 2.0) -> Callable:
    """Uniform in [-hi, -gap] u [gap, hi]: no zeros (kinks of abs, relu, 1/x)."""
    return lambda rng, shape: rng.uniform(gap, hi, shape) * rng.choice([-1.0, 1.0], shape)


def GRID(offset: float = 0.0) -> Callable:
    """Multiples of 1/4 (plus offset): ties among GRID(0) draws, none with GRID(1/8).

    GRID(1/8) is also 1/8 away from every integer and half-integer (floor, round, ...)."""
    return lambda rng, shape: rng.integers(-8, 9, shape) * 0.25 + offset


def DISTINCT(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Distinct values, none near 0 (max/min without ties, the L1 norm without kinks)."""
    n = int(np.prod(shape))
    mags = (rng.permutation(n) + 1.0) * (2.0 / max(n, 1))
    return (mags * rng.choice([-1.0, 1.0], n)).reshape(shape)


def IDX(lo: int, hi: int) -> Callable:
    """Integer-valued floats in [lo, hi): indices, labels, lengths (out of range ones on purpose)."""
    return lambda rng, shape: rng.integers(lo, hi, shape).astype(np.float64)


POS = U(0.5, 2.0)  # log, sqrt, pow's base, ...


def DIVISOR(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """+-0.4, 0.7, 1.6 or 2: a GRID(1/8) value or 1.5 over one of these is never within 0.03 of
    an integer (mod's jumps), and one of these mod 1.5 or another never 0."""
    return rng.choice([0.4, 0.7, 1.6, 2.0], shape) * rng.choice([-1.0, 1.0], shape)


SMOOTH = U()


def DISTRIBUTION(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Rows of probabilities on the last axis, each summing to 1."""
    p = rng.uniform(0.1, 1.0, shape)
    return p / p.sum(axis=-1, keepdims=True)


BOOL = IDX(0, 2)


def LA_DOM(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Square matrices with a dominant diagonal: well conditioned in either triangle (the
    other one holds values a triangular op must not read)."""
    return rng.uniform(-1, 1, shape) + shape[-1] * np.eye(shape[-1])


def LA_WIDE(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Matrices of no more rows than columns, of full rank and well conditioned (gelqf's)."""
    return rng.uniform(-1, 1, shape) + shape[-1] * np.eye(shape[-2], shape[-1])


def LA_APART(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Square matrices whose symmetric parts have eigenvalues well apart (syevd's)."""
    return rng.uniform(-1, 1, shape) + np.diag(3.0 * np.arange(shape[-1]))


def gelqf_ref(a: np.ndarray) -> np.ndarray:
    """[Q | L] of A = L Q: the QR of A's transpose, transposed."""
    q, r = np.linalg.qr(np.swapaxes(a, -1, -2))
    return np.concatenate([np.swapaxes(q, -1, -2), np.swapaxes(r, -1, -2)], axis=-1)


def syevd_ref(a: np.ndarray) -> np.ndarray:
    """[U; lam] of (A + A^T) / 2 = U^T diag(lam) U, each row of U's largest entry positive."""
    lam, v = np.linalg.eigh((a + np.swapaxes(a, -1, -2)) / 2)
    u = np.swapaxes(v, -1, -2)
    big = np.take_along_axis(u, np.abs(u).argmax(axis=-1)[..., None], axis=-1)
    return np.concatenate([u * np.sign(big), lam[..., None, :]], axis=-2)


def LA_SPD(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Symmetric positive definite matrices (Cholesky's inputs)."""
    x = rng.uniform(-1, 1, shape)
    return x @ x.swapaxes(-1, -2) + shape[-1] * np.eye(shape[-1])


# --------------------------------------------------------------------------
# the table


@dataclass(frozen=True)
class Case:
    ref: Callable[..., Any] | None  # numpy reference on the inputs (None: random op)
    shapes: tuple[tuple[int, ...], ...] = ((2, 3),)  # one shape per input
    at: dict[str, Any] = field(default_factory=dict)
    dom: Callable | tuple[Callable, ...] = SMOOTH  # one domain, or one per input
    out: str | None = None  # output dtype when it is not the input's
    no_grad: bool = False  # the VJP gives None for every input
    nondiff: tuple[int, ...] = ()  # inputs whose cotangent is None (indices, labels, moving stats)
    training: bool = False  # the Context's training flag
    tol32: dict[str, float] | None = None  # forward tolerance in float32, when not tol()'s
    zero_grad: bool = False  # the VJP gives zeros by design (MXNet's), not the derivative
    designed: Callable[..., Any] | None = None  # the gradient by design (MXNet's loss outputs), from the inputs
    head: float | None = None  # the VJP is the head gradient times this by design (straight-through estimators)


def C(
    ref,
    *shapes,
    dom=SMOOTH,
    out=None,
    no_grad=False,
    nondiff=(),
    training=False,
    tol32=None,
    zero_grad=False,
    designed=None,
    head=None,
    **at,
) -> Case:
    return Case(
        ref,
        tuple(shapes) or ((2, 3),),
        at,
        dom,
        out,
        no_grad,
        tuple(nondiff),
        training,
        tol32,
        zero_grad,
        designed,
        head,
    )


def ROI_ALIGN_ROIS(rng: np.random.Generator, s: tuple[int, ...]) -> np.ndarray:
    return np.array([[0, 1.0, 1.5, 9.2, 7.3], [1, -2.0, -1.0, 5.0, 12.0], [1, 3.3, 2.1, 3.4, 2.2]])


def _bilinear_ref(img: np.ndarray, y: float, x: float) -> np.ndarray:
    """Detectron's bilinear read of img (C, H, W) at (y, x), one sample at a time."""
    h, w = img.shape[1:]
    if y < -1.0 or y > h or x < -1.0 or x > w:
        return np.zeros(img.shape[0])
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(y), int(x)
    if y0 >= h - 1:
        y0 = y1 = h - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= w - 1:
        x0 = x1 = w - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    return (1 - ly) * ((1 - lx) * img[:, y0, x0] + lx * img[:, y0, x1]) + ly * (
        (1 - lx) * img[:, y1, x0] + lx * img[:, y1, x1]
    )


def _roi_samples(r: np.ndarray, pooled: tuple[int, int], scale: float, ratio: int, aligned: bool) -> Any:
    off = 0.5 if aligned else 0.0
    sx, sy = r[1] * scale - off, r[2] * scale - off
    rw, rh = r[3] * scale - off - sx, r[4] * scale - off - sy
    if not aligned:
        rw, rh = max(rw, 1.0), max(rh, 1.0)
    ph, pw = pooled
    gh = ratio if ratio > 0 else max(1, int(np.ceil(rh / ph)))
    gw = ratio if ratio > 0 else max(1, int(np.ceil(rw / pw)))
    for i in range(ph):
        for j in range(pw):
            for a in range(gh):
                for b in range(gw):
                    y = sy + i * rh / ph + (a + 0.5) * rh / ph / gh
                    x = sx + j * rw / pw + (b + 0.5) * rw / pw / gw
                    yield i, j, y, x, 1.0 / (gh * gw)


def roi_align_ref(x, rois, pooled, scale, ratio, aligned):
    out = np.zeros((len(rois), x.shape[1]) + pooled)
    for k, r in enumerate(rois):
        for i, j, y, xx, wt in _roi_samples(r, pooled, scale, ratio, aligned):
            out[k, :, i, j] += wt * _bilinear_ref(x[int(r[0])], y, xx)
    return out


def roi_align_grad_ref(g, rois, shape, pooled, scale, ratio, aligned):
    """ROIAlign's gradient: its forward is linear in the data; its matrix's transpose, by
    columns (each pixel a one-hot image)."""
    out = np.zeros(shape)
    for idx in np.ndindex(*shape):
        e = np.zeros(shape)
        e[idx] = 1.0
        out[idx] = np.vdot(roi_align_ref(e, rois, pooled, scale, ratio, aligned), g)
    return out


def BOXES(rng: np.random.Generator, s: tuple[int, ...]) -> np.ndarray:
    """Boxes [xmin, ymin, xmax, ymax] of width and height 0.5 to 1.5, from the unit square."""
    lo = rng.uniform(0, 1, s[:-1] + (2,))
    return np.concatenate([lo, lo + rng.uniform(0.5, 1.5, s[:-1] + (2,))], axis=-1)


def iou_ref(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of each box of a with each of b, one pair at a time."""
    out = np.zeros(a.shape[:-1] + b.shape[:-1])
    for i in np.ndindex(a.shape[:-1]):
        for j in np.ndindex(b.shape[:-1]):
            p, q = a[i], b[j]
            w = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
            h = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
            union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - w * h
            out[i + j] = w * h / union
    return out


# Two batches of five boxes [id, score, xmin, ymin, xmax, ymax]. In the first: box 1 overlaps box 0
# (IoU 0.68) and box 2 too (0.90), both with lower scores: suppressed; box 3 overlaps nothing;
# box 4's score is under valid_thresh. Kept: 0 then 3. The second holds the same boxes in
# another order, so its rows 3 and 0 are kept, by score. Every IoU is far from 0.5 and every
# score from the others and from 0.1, so a finite difference keeps the same boxes.
_NMS_ROWS = np.array(
    [
        [0, 0.9, 0.0, 0.0, 1.0, 1.0],
        [0, 0.8, 0.1, 0.1, 1.1, 1.1],
        [1, 0.7, 0.05, 0.0, 1.05, 1.0],
        [0, 0.6, 2.0, 2.0, 3.0, 3.0],
        [1, 0.05, 5.0, 5.0, 6.0, 6.0],
    ]
)
NMS_ORDER = [[0, 3], [3, 0]]  # the input rows kept, in output order
NMS_BOXES = np.stack([_NMS_ROWS, _NMS_ROWS[[3, 1, 4, 0, 2]]])
NMS_AT = {"overlap_thresh": 0.5, "valid_thresh": 0.1}


def nms_ref(x: np.ndarray) -> np.ndarray:
    out = -np.ones_like(x)
    for b, rows in enumerate(NMS_ORDER):
        out[b, : len(rows)] = x[b, rows]
    return out


def nms_grad_ref(g: np.ndarray, gather: bool = False) -> np.ndarray:
    out = np.zeros_like(g)
    for b, rows in enumerate(NMS_ORDER):
        if gather:
            out[b, : len(rows)] = g[b, rows]
        else:
            out[b, rows] = g[b, : len(rows)]
    return out


def hyper(w: np.ndarray, *values: float) -> list[Any]:
    """MXNet's float attributes as its optimizer ops take them: float32, then the weight's dtype."""
    return [w.dtype.type(np.float32(v)) for v in values]


def resize_weights(n_in: int, n_out: int, align: bool = True) -> np.ndarray:
    """Bilinear resizing's weights, output by output (MXNet's source positions)."""
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        if n_out == 1:
            src = 0.0
        elif align:
            src = i * (n_in - 1) / (n_out - 1)
        else:
            src = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
        lo = min(int(src), n_in - 1)
        m[i, lo] += 1 - (src - lo)
        m[i, min(lo + 1, n_in - 1)] += src - lo
    return m


def adaptive_weights(n_in: int, n_out: int) -> np.ndarray:
    """Adaptive average pooling's weights: output i averages inputs floor(i*n/m) to ceil((i+1)*n/m)."""
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        lo, hi = math.floor(i * n_in / n_out), math.ceil((i + 1) * n_in / n_out)
        m[i, lo:hi] = 1 / (hi - lo)
    return m


def separable_ref(x: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    return np.einsum("oh,nchw,pw->ncop", rows, x, cols)


def mx1d(r: Any) -> np.ndarray:
    """MXNet's legacy rule: no rank-0 results, a scalar comes back as shape (1,)."""
    r = np.asarray(r)
    return r.reshape(1) if r.ndim == 0 else r


def as_np_key(key: list) -> tuple:
    """The wire key format (ops.py) as a numpy index, written independently of parse_key."""
    out: list[Any] = []
    for k in key:
        if k is None:
            out.append(None)
        elif k == "...":
            out.append(Ellipsis)
        elif isinstance(k, list):
            out.append(slice(*k))
        else:
            out.append(k)
    return tuple(out)


def scatter_ref(shape, key):
    def ref(g):
        z = np.zeros(shape, g.dtype)
        z[as_np_key(key)] = g.reshape(z[as_np_key(key)].shape)
        return z

    return ref


# references of the newer ops, written with loops where numpy has no one-liner


def ERFINV_REF(y):
    """erf inverted by bisection on math.erf."""
    y = np.asarray(y, np.float64)
    lo, hi = np.full(y.shape, -6.0), np.full(y.shape, 6.0)
    erf = np.vectorize(math.erf)
    for _ in range(80):
        mid = (lo + hi) / 2
        below = erf(mid) < y
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return (lo + hi) / 2


def polygamma_ref(x, n):
    """psi^(n)(x) summed directly: psi^(n)(x) = psi^(n)(x + K) - (-1)^n n! sum_k<K (x + k)^-(n+1),
    psi^(n) at x + K (K = 2000) from the first terms of its asymptotic series. No reflection:
    negative x is carried up too."""
    k = 2000
    x = np.asarray(x, np.float64)
    s = ((x[..., None] + np.arange(k)) ** -(n + 1.0)).sum(axis=-1)
    z = x + k
    if n == 0:
        return np.log(z) - 0.5 / z - 1 / (12 * z**2) + 1 / (120 * z**4) - s
    f = math.factorial
    tail = f(n - 1) / z**n + f(n) / (2 * z ** (n + 1))
    tail += f(n + 1) / (12 * z ** (n + 2)) - f(n + 3) / (720 * z ** (n + 4))
    return (-1.0) ** (n + 1) * tail - (-1.0) ** n * f(n) * s


def softmax_ref(x, axis=-1, t=1.0):
    z = x.astype(np.float64) / t
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def softmax_length_ref(x, length, axis, t=1.0):
    """softmax over the first length[...] positions along ``axis``, element by element; 0 past them."""
    xm = np.moveaxis(x.astype(np.float64) / t, axis, -1)
    out = np.zeros_like(xm)
    for pos in np.ndindex(xm.shape[:-1]):
        k = int(length[pos])
        if k:
            e = np.exp(xm[pos][:k] - xm[pos][:k].max())
            out[pos][:k] = e / e.sum()
    return np.moveaxis(out, -1, axis)


def log_softmax_ref(x, axis=-1, t=1.0):
    z = x.astype(np.float64) / t
    z = z - z.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def sce_ref(x, label):
    """Summed cross-entropy, each sample's at most -log(1e-8) (MXNet's); labels out of [0, C)
    are clipped, as the forward documents."""
    lp = log_softmax_ref(x, 1)
    c = x.shape[1]
    cap = -np.log(np.float32(1e-8).astype(np.float64))
    return np.array([sum(min(-lp[i, min(max(int(k), 0), c - 1)], cap) for i, k in enumerate(label))])


def fix_index(i: int, n: int, mode: str) -> int:
    return i % n if mode == "wrap" else min(max(i, 0), n - 1)


def pick_ref(x, idx, axis, keepdims=False, mode="clip"):
    ax = axis % x.ndim
    xm = np.moveaxis(x, ax, -1)
    i = idx.reshape(xm.shape[:-1])
    out = np.empty(xm.shape[:-1], x.dtype)
    for pos in np.ndindex(out.shape):
        out[pos] = xm[pos + (fix_index(int(i[pos]), x.shape[ax], mode),)]
    return np.expand_dims(out, ax) if keepdims else mx1d(out)


def gather_ref(x, idx, axis):
    out = np.empty(idx.shape, x.dtype)
    for pos in np.ndindex(idx.shape):
        src = list(pos)
        src[axis] = fix_index(int(idx[pos]), x.shape[axis], "clip")
        out[pos] = x[tuple(src)]
    return out


def scatter_axis_ref(g, idx, axis, shape):
    z = np.zeros(shape, g.dtype)
    for pos in np.ndindex(idx.shape):
        dst = list(pos)
        dst[axis] = fix_index(int(idx[pos]), shape[axis], "clip")
        z[tuple(dst)] += g[pos]
    return z


def take_ref(a, idx, axis, mode):
    fixed = np.vectorize(lambda i: fix_index(int(i), a.shape[axis], mode), otypes=[np.int64])(idx)
    return np.take(a, fixed, axis=axis)


def diag_grad_ref(g, k, a1, a2, shape):
    """Zeros with g on the k-th diagonal of axes a1, a2, element by element."""
    z = np.zeros(shape, g.dtype)
    rest = [i for i in range(len(shape)) if i not in (a1, a2)]
    for pos in np.ndindex(g.shape):
        *others, d = pos
        idx = [0] * len(shape)
        for axis, v in zip(rest, others):
            idx[axis] = v
        idx[a1], idx[a2] = d + max(-k, 0), d + max(k, 0)
        z[tuple(idx)] = g[pos]
    return z


def gather_nd_ref(x, idx):
    """Element by element: out[p] = x[idx[0][p], idx[1][p], ...] (plus the axes not indexed)."""
    m = idx.shape[0]
    out = np.empty(idx.shape[1:] + x.shape[m:], x.dtype)
    for pos in np.ndindex(idx.shape[1:]):
        out[pos] = x[tuple(int(idx[(k,) + pos]) for k in range(m))]
    return out


def gather_nd_grad_ref(g, idx, shape):
    z = np.zeros(shape, g.dtype)
    m = idx.shape[0]
    for pos in np.ndindex(idx.shape[1:]):
        z[tuple(int(idx[(k,) + pos]) for k in range(m))] += g[pos]
    return z


def take_grad_ref(g, idx, axis, mode, shape):
    z = np.zeros(shape, g.dtype)
    lead = (slice(None),) * axis
    for pos in np.ndindex(idx.shape):
        z[lead + (fix_index(int(idx[pos]), shape[axis], mode),)] += g[lead + pos]
    return z


def one_hot_ref(idx, depth, on, off):
    out = np.full(idx.shape + (depth,), off, np.float32)
    for pos in np.ndindex(idx.shape):
        if 0 <= idx[pos] < depth:
            out[pos + (int(idx[pos]),)] = on
    return out


def topk_ref(x, axis, k, ret_typ, is_ascend):
    order = np.argsort(x if is_ascend else -x, axis=axis, kind="stable")
    idx = np.take(order, np.arange(k), axis=axis)
    if ret_typ == "indices":
        return idx.astype(np.float32)
    if ret_typ == "value":
        return np.take_along_axis(x, idx, axis=axis)
    mask = np.zeros_like(x)
    np.put_along_axis(mask, idx, 1, axis=axis)
    return mask


def padded(x, pad, value=0.0):
    n, c, h, w = x.shape
    z = np.full((n, c, h + 2 * pad[0], w + 2 * pad[1]), value, np.float64)
    z[:, :, pad[0] : pad[0] + h, pad[1] : pad[1] + w] = x
    return z


def out_hw(shape, kernel, stride, pad, dilate=(1, 1)):
    return tuple((shape[2 + d] + 2 * pad[d] - (kernel[d] - 1) * dilate[d] - 1) // stride[d] + 1 for d in (0, 1))


def im2col_ref(x, kernel, stride, pad, pad_value=0.0, dilate=(1, 1)):
    """MXNet's columns: (N, C*kh*kw, OH*OW), element by element."""
    xp = padded(x, pad, pad_value)
    oh, ow = out_hw(x.shape, kernel, stride, pad, dilate)
    out = np.empty(x.shape[:2] + tuple(kernel) + (oh, ow))
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            for a in range(oh):
                for b in range(ow):
                    out[:, :, i, j, a, b] = xp[:, :, a * stride[0] + i * dilate[0], b * stride[1] + j * dilate[1]]
    return out.reshape(x.shape[0], -1, oh * ow).astype(x.dtype)


def col2im_ref(c, shape, kernel, stride, pad, dilate=(1, 1)):
    n, ch, h, w = shape
    oh, ow = out_hw(shape, kernel, stride, pad, dilate)
    c = c.reshape((n, ch) + tuple(kernel) + (oh, ow))
    z = np.zeros((n, ch, h + 2 * pad[0], w + 2 * pad[1]))
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            for a in range(oh):
                for b in range(ow):
                    z[:, :, a * stride[0] + i * dilate[0], b * stride[1] + j * dilate[1]] += c[:, :, i, j, a, b]
    return z[:, :, pad[0] : pad[0] + h, pad[1] : pad[1] + w].astype(c.dtype)


def conv_ref(x, w, b, stride, pad, groups=1, dilate=(1, 1)):
    xp = padded(x, pad)
    kh, kw = w.shape[2:]
    oh, ow = out_hw(x.shape, (kh, kw), stride, pad, dilate)
    out = np.zeros((x.shape[0], w.shape[0], oh, ow))
    cg, fg = x.shape[1] // groups, w.shape[0] // groups
    eh, ew = (kh - 1) * dilate[0] + 1, (kw - 1) * dilate[1] + 1
    for a in range(oh):
        for c in range(ow):
            win = xp[
                :, :, a * stride[0] : a * stride[0] + eh : dilate[0], c * stride[1] : c * stride[1] + ew : dilate[1]
            ]
            for grp in range(groups):  # filters grp*fg.. see channels grp*cg..
                out[:, grp * fg : (grp + 1) * fg, a, c] = np.einsum(
                    "ncij,fcij->nf", win[:, grp * cg : (grp + 1) * cg], w[grp * fg : (grp + 1) * fg].astype(np.float64)
                )
    if b is not None:
        out += b.reshape(1, -1, 1, 1)
    return out.astype(x.dtype)


def deconv_ref(x, w, b, stride, pad, adj=(0, 0), groups=1, dilate=(1, 1)):
    """Each input element scatters its filter (times itself, its taps ``dilate`` apart) into
    the output, at stride."""
    n, c, h, wd = x.shape
    kh, kw = w.shape[2:]
    eh, ew = (kh - 1) * dilate[0] + 1, (kw - 1) * dilate[1] + 1
    cg, fg = c // groups, w.shape[1]
    full = np.zeros((n, fg * groups, (h - 1) * stride[0] + eh + adj[0], (wd - 1) * stride[1] + ew + adj[1]))
    for i in range(h):
        for j in range(wd):
            for ch in range(c):
                grp = ch // cg
                a, b2 = i * stride[0], j * stride[1]
                full[:, grp * fg : (grp + 1) * fg, a : a + eh : dilate[0], b2 : b2 + ew : dilate[1]] += x[
                    :, ch, i, j, None, None, None
                ] * w[ch].astype(np.float64)
    out = full[:, :, pad[0] : full.shape[2] - pad[0], pad[1] : full.shape[3] - pad[1]]
    if b is not None:
        out = out + b.reshape(1, -1, 1, 1)
    return out.astype(x.dtype)


def pool_ref(x, kind, kernel, stride, pad, count_include_pad=True):
    xp = padded(x, pad, -np.inf if kind == "max" else 0.0)
    inside = padded(np.ones((1, 1) + x.shape[2:]), pad)
    oh, ow = out_hw(x.shape, kernel, stride, pad)
    out = np.zeros(x.shape[:2] + (oh, ow))
    for a in range(oh):
        for b in range(ow):
            rows, cols = (
                slice(a * stride[0], a * stride[0] + kernel[0]),
                slice(b * stride[1], b * stride[1] + kernel[1]),
            )
            win = xp[:, :, rows, cols]
            if kind == "max":
                out[:, :, a, b] = win.max(axis=(2, 3))
            elif kind == "sum":
                out[:, :, a, b] = win.sum(axis=(2, 3))
            else:  # MXNet's average of a window all padding is 0
                count = kernel[0] * kernel[1] if count_include_pad else inside[0, 0, rows, cols].sum()
                out[:, :, a, b] = win.sum(axis=(2, 3)) / max(count, 1)
    return out.astype(x.dtype)


def pool_full_ref(x, kind, kernel, stride, pad, count_include_pad=True):
    """Pooling with MXNet's ``full`` convention, any number of spatial axes, one window at a
    time: 1 + ceil((n + 2 pad - k) / s) windows an axis, each cut at the padded data's end; an
    average divides by the window's elements up to there (or inside the data)."""
    out = [1 + -(-(n + 2 * p - k) // s) for n, k, s, p in zip(x.shape[2:], kernel, stride, pad)]
    y = np.zeros(x.shape[:2] + tuple(out))
    for pos in itertools.product(*map(range, out)):
        starts = [o * s - p for o, s, p in zip(pos, stride, pad)]
        ends = [min(a + k, n + p) for a, k, n, p in zip(starts, kernel, x.shape[2:], pad)]
        inside = tuple(slice(max(a, 0), min(b, n)) for a, b, n in zip(starts, ends, x.shape[2:]))
        block = x[(slice(None), slice(None)) + inside].reshape(x.shape[:2] + (-1,))
        if kind == "max":  # (MXNet's max of a window of padding alone: the least finite value)
            y[(slice(None), slice(None)) + pos] = block.max(axis=2) if block.shape[2] else np.finfo(x.dtype).min
        else:
            total = block.sum(axis=2)
            if kind == "avg":
                count = np.prod([b - a for a, b in zip(starts, ends)]) if count_include_pad else block.shape[2]
                total = total / max(count, 1)
            y[(slice(None), slice(None)) + pos] = total
    return y.astype(x.dtype)


def pad_grad_ref(g, mode, pad_width):
    """Pad's gradient written as the transpose of its (linear) map: each element of the padded
    array names the element it came from (np.pad of the indices), the cotangents summed there."""
    shape = tuple(n - pad_width[2 * d] - pad_width[2 * d + 1] for d, n in enumerate(g.shape))
    pairs = [(pad_width[2 * d], pad_width[2 * d + 1]) for d in range(g.ndim)]
    src = np.arange(int(np.prod(shape))).reshape(shape)
    if mode == "constant":
        src = np.pad(src, pairs, mode="constant", constant_values=-1)
    else:
        src = np.pad(src, pairs, mode=mode)
    out = np.zeros(int(np.prod(shape)))
    keep = src.reshape(-1) >= 0
    np.add.at(out, src.reshape(-1)[keep], g.reshape(-1)[keep].astype(np.float64))
    return out.reshape(shape).astype(g.dtype)


def bn_ref(x, gamma, beta, mm, mv, eps=1e-3, fix_gamma=True, train=False, axis=1):
    ax = axis % x.ndim
    axes = tuple(i for i in range(x.ndim) if i != ax)
    bs = tuple(-1 if i == ax else 1 for i in range(x.ndim))
    x64 = x.astype(np.float64)
    mean, var = (x64.mean(axis=axes), x64.var(axis=axes)) if train else (mm, mv)
    gam = np.ones_like(gamma) if fix_gamma else gamma
    y = (x64 - mean.reshape(bs)) / np.sqrt(var.reshape(bs) + eps) * gam.reshape(bs) + beta.reshape(bs)
    return y.astype(x.dtype)


def in_ref(x, gamma, beta, eps=1e-3):
    axes = tuple(range(2, x.ndim))
    bs = (1, -1) + (1,) * (x.ndim - 2)
    x64 = x.astype(np.float64)
    mean, var = x64.mean(axis=axes, keepdims=True), x64.var(axis=axes, keepdims=True)
    return ((x64 - mean) / np.sqrt(var + eps) * gamma.reshape(bs) + beta.reshape(bs)).astype(x.dtype)


def depth_to_space_ref(x, b):
    """Element by element: out[n, c, h*b + i, w*b + j] = x[n, (i*b + j)*C' + c, h, w] (MXNet's DCR)."""
    n, c, h, w = x.shape
    out = np.empty((n, c // (b * b), h * b, w * b), x.dtype)
    for (nn, cc, hh, ww), _ in np.ndenumerate(out):
        i, j = hh % b, ww % b
        out[nn, cc, hh, ww] = x[nn, (i * b + j) * (c // (b * b)) + cc, hh // b, ww // b]
    return out


def space_to_depth_ref(x, b):
    n, c, h, w = x.shape
    out = np.empty((n, c * b * b, h // b, w // b), x.dtype)
    for (nn, cc, hh, ww), _ in np.ndenumerate(out):
        block, c0 = divmod(cc, c)
        i, j = divmod(block, b)
        out[nn, cc, hh, ww] = x[nn, c0, hh * b + i, ww * b + j]
    return out


def seqreverse_ref(x, lengths):
    out = x.copy()
    for k, n in enumerate(np.clip(lengths.astype(int), 0, x.shape[0])):
        out[:n, k] = x[:n, k][::-1]
    return out


def ln_ref(x, gamma, beta, axis=-1, eps=1e-5):
    ax = axis % x.ndim
    bs = tuple(-1 if i == ax else 1 for i in range(x.ndim))
    x64 = x.astype(np.float64)
    mean, var = x64.mean(axis=ax, keepdims=True), x64.var(axis=ax, keepdims=True)
    return ((x64 - mean) / np.sqrt(var + eps) * gamma.reshape(bs) + beta.reshape(bs)).astype(x.dtype)


def bn_case(xshape: tuple[int, ...], ref: dict[str, Any], **at: Any) -> Case:
    """A BatchNorm case: data of ``xshape`` with 3 channels, gamma, beta and the moving mean
    and variance (not differentiated; the variance positive), checked against
    ``bn_ref(**ref)``; ``at`` the op's attributes."""
    return C(
        lambda x, g, b, mm, mv: bn_ref(x, g, b, mm, mv, **ref),
        xshape,
        *[(3,)] * 4,
        dom=(SMOOTH,) * 4 + (POS,),
        nondiff=(3, 4),
        **at,
    )


def seqmask_ref(x, lengths, axis=0, value=0.0):
    y = x.copy()
    for b, n in enumerate(lengths.astype(int)):
        if axis == 0:
            y[n:, b] = value
        else:
            y[b, n:] = value
    return y


def getitem_arrays_ref(x, i, j):
    return x[i.astype(np.int64), :, j.astype(np.int64)]  # numpy's advanced indexing, as MXNet's


def scatter_arrays_ref(g, i, j, shape=(3, 4, 5)):
    z = np.zeros(shape, g.dtype)
    ii, jj = np.broadcast_arrays(i.astype(np.int64), j.astype(np.int64))
    for pos in np.ndindex(ii.shape):  # repeated positions add up
        z[ii[pos], :, jj[pos]] += g[pos]
    return z


ACT_REF = {
    "relu": lambda x: np.maximum(x, 0),
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "tanh": np.tanh,
    "softrelu": lambda x: np.log1p(np.exp(x)),
    "softsign": lambda x: x / (1 + np.abs(x)),
}
SELU = (1.6732632423543772, 1.0507009873554805)
GELU_REF = np.vectorize(lambda x: 0.5 * x * (1 + math.erf(x / math.sqrt(2))))


def prelu_ref(x, gamma, shape):
    return np.where(x > 0, x, gamma.reshape(shape) * x)


S = 1.5  # the scalar of the *_scalar ops
BIN = ((2, 1, 3), (4, 1))  # binary ops: broadcasting both ways
X3 = (2, 3, 4)
IMG = (2, 3, 6, 5)  # N, C, H, W
KEY = [1, [None, None, 2], None, "..."]  # x[1, ::2, None, ...]
AKEY = [{"array": 0}, [None, None, None], {"array": 1}]  # x[i, :, j] with index arrays i, j
ARR = np.arange(6, dtype=np.float32).reshape(2, 3)
LOOSE32 = {"rtol": 1e-5, "atol": 1e-5}  # float32 sums of many products
WIN = {"kernel": [3, 2], "stride": [2, 1], "pad": [1, 0]}

CASES: dict[str, Case] = {
    # creation: no inputs
    "array": C(lambda: ARR, value=ARR),
    "zeros": C(lambda: np.zeros((2, 3), np.float32), shape=[2, 3]),
    "ones": C(lambda: np.ones((4,), np.float64), shape=4, dtype="float64"),
    "full": C(lambda: np.full((2, 3), 2.5, np.float32), shape=[2, 3], val=2.5),
    "arange": C(lambda: np.repeat(np.arange(1, 7, 1.5), 2).astype(np.float32), start=1, stop=7, step=1.5, repeat=2),
    "linspace": C(lambda: np.linspace(-1, 2, 7).astype(np.float32), start=-1, stop=2, num=7),
    "eye": C(lambda: np.eye(3, 4, 1, dtype=np.float32), N=3, M=4, k=1),
    "random_normal": C(None, shape=[3, 4]),
    "random_uniform": C(None, shape=[3, 4], low=-1.0, high=2.0),
    "random_randint": C(None, shape=[3, 4], low=-3, high=5),
    "random_exponential": C(None, shape=[3, 4], lam=0.5),
    "random_poisson": C(None, shape=[3, 4], lam=3.0),
    "random_gamma": C(None, shape=[3, 4], alpha=2.0, beta=0.5),
    "random_negative_binomial": C(None, shape=[3, 4], k=3.0, p=0.4),
    "random_generalized_negative_binomial": C(None, shape=[3, 4], mu=2.0, alpha=0.5),
    "shuffle": C(None, (5, 3)),
    # the samplers with array parameters: a zero gradient for each (MXNet's)
    "sample_normal": C(None, (2, 3), (2, 3), dom=(SMOOTH, POS), zero_grad=True, shape=[4]),
    "sample_uniform": C(None, (3,), (3,), dom=(U(-2, 0), U(1, 2)), zero_grad=True, shape=[2, 2]),
    "sample_exponential": C(None, (3,), dom=POS, zero_grad=True, shape=[5]),
    "sample_poisson": C(None, (3,), dom=POS, zero_grad=True, shape=[5]),
    "sample_gamma": C(None, (2, 2), (2, 2), dom=(POS, POS), zero_grad=True, shape=[3]),
    "sample_negative_binomial": C(None, (3,), (3,), dom=(POS, U(0.2, 0.9)), zero_grad=True, shape=[4]),
    "sample_generalized_negative_binomial": C(None, (3,), (3,), dom=(POS, POS), zero_grad=True, shape=[4]),
    "sample_multinomial": C(None, (2, 4), dom=DISTRIBUTION, zero_grad=True, shape=[3]),
    # like
    "zeros_like": C(np.zeros_like, no_grad=True),
    "ones_like": C(np.ones_like, no_grad=True),
    # unary
    "negative": C(np.negative),
    "copy": C(np.copy),
    "stop_gradient": C(np.copy, zero_grad=True),
    "abs": C(np.abs, dom=AWAY()),
    "sign": C(np.sign, dom=AWAY()),
    "square": C(np.square),
    "sqrt": C(np.sqrt, dom=POS),
    "rsqrt": C(lambda x: 1 / np.sqrt(x), dom=POS),
    "reciprocal": C(lambda x: 1 / x, dom=AWAY(0.5)),
    "exp": C(np.exp),
    "expm1": C(np.expm1),
    "log": C(np.log, dom=POS),
    "log1p": C(np.log1p, dom=U(-0.5, 2)),
    "erf": C(np.vectorize(math.erf)),
    "erfinv": C(lambda x: ERFINV_REF(x), dom=U(-0.9, 0.9)),
    "gamma": C(np.vectorize(math.gamma), dom=U(0.3, 3.0)),
    "gammaln": C(np.vectorize(math.lgamma), dom=U(0.3, 3.0)),
    "polygamma": C(lambda x: polygamma_ref(x, 0), dom=U(0.3, 3.0)),
    "sin": C(np.sin, dom=U(-3, 3)),
    "cos": C(np.cos, dom=U(-3, 3)),
    "tan": C(np.tan, dom=U(-1.2, 1.2)),
    "tanh": C(np.tanh, dom=U(-3, 3)),
    "log2": C(np.log2, dom=POS),
    "log10": C(np.log10, dom=POS),
    "cbrt": C(np.cbrt, dom=AWAY(0.5)),
    "rcbrt": C(lambda x: 1 / np.cbrt(x), dom=AWAY(0.5)),
    "arcsin": C(np.arcsin, dom=U(-0.8, 0.8)),
    "arccos": C(np.arccos, dom=U(-0.8, 0.8)),
    "arctan": C(np.arctan),
    "sinh": C(np.sinh),
    "cosh": C(np.cosh),
    "arcsinh": C(np.arcsinh),
    "arccosh": C(np.arccosh, dom=U(1.2, 3.0)),
    "arctanh": C(np.arctanh, dom=U(-0.8, 0.8)),
    "degrees": C(np.degrees),
    "radians": C(np.radians),
    "sigmoid": C(lambda x: 1 / (1 + np.exp(-x)), dom=U(-5, 5)),
    "relu": C(lambda x: np.maximum(x, 0), dom=AWAY()),
    "softrelu": C(lambda x: np.log1p(np.exp(x)), dom=U(-5, 5)),
    "softsign": C(lambda x: x / (1 + np.abs(x)), dom=AWAY()),
    "floor": C(np.floor, dom=GRID(0.125)),
    "ceil": C(np.ceil, dom=GRID(0.125)),
    "round": C(lambda x: np.sign(x) * np.floor(np.abs(x) + 0.5), dom=GRID(0.125)),
    "rint": C(np.rint, dom=GRID(0.125)),
    "trunc": C(np.trunc, dom=GRID(0.125)),
    "logical_not": C(lambda x: x == 0, dom=GRID(), no_grad=True),
    "clip": C(lambda x: np.clip(x, -1, 0.75), dom=GRID(0.125), a_min=-1.0, a_max=0.75),
    "logical_and": C(lambda a, b: np.logical_and(a, b).astype(a.dtype), *BIN, dom=GRID(), no_grad=True),
    "logical_or": C(lambda a, b: np.logical_or(a, b).astype(a.dtype), *BIN, dom=GRID(), no_grad=True),
    "logical_xor": C(lambda a, b: np.logical_xor(a, b).astype(a.dtype), *BIN, dom=GRID(), no_grad=True),
    # kinks at |x| = 1/scalar^2 = 0.25 and at alpha x + beta in {0, 1}: GRID(1/8) keeps away
    "smooth_l1": C(lambda x: np.where(np.abs(x) < 0.25, 2 * x * x, np.abs(x) - 0.125), dom=GRID(0.125), scalar=2.0),
    "hard_sigmoid": C(  # (alpha and beta in float32, as MXNet's)
        lambda x: np.clip(np.float32(0.3) * x + np.float32(0.4), 0, 1), dom=GRID(0.125), alpha=0.3, beta=0.4
    ),
    "astype": C(lambda x: x.astype(np.float64), dtype="float64", out="float64"),
    # binary, broadcasting
    "add": C(np.add, *BIN),
    "sub": C(np.subtract, *BIN),
    "mul": C(np.multiply, *BIN),
    "div": C(np.divide, *BIN, dom=(SMOOTH, AWAY(0.5))),
    "broadcast_hypot": C(np.hypot, *BIN, dom=(AWAY(), SMOOTH)),
    "elemwise_add": C(np.add, (2, 3), (2, 3)),  # (one shape: the broadcasting ones above)
    "elemwise_sub": C(np.subtract, (2, 3), (2, 3)),
    "elemwise_mul": C(np.multiply, (2, 3), (2, 3)),
    "elemwise_div": C(np.divide, (2, 3), (2, 3), dom=(SMOOTH, AWAY(0.5))),
    "pow": C(np.power, *BIN, dom=(POS, U())),
    "mod": C(np.mod, *BIN, dom=(GRID(0.125), DIVISOR)),
    "maximum": C(np.maximum, *BIN, dom=(GRID(0), GRID(0.125))),
    "minimum": C(np.minimum, *BIN, dom=(GRID(0), GRID(0.125))),
    "equal": C(np.equal, *BIN, dom=GRID(), no_grad=True),
    "not_equal": C(np.not_equal, *BIN, dom=GRID(), no_grad=True),
    "greater": C(np.greater, *BIN, dom=GRID(), no_grad=True),
    "greater_equal": C(np.greater_equal, *BIN, dom=GRID(), no_grad=True),
    "lesser": C(np.less, *BIN, dom=GRID(), no_grad=True),
    "lesser_equal": C(np.less_equal, *BIN, dom=GRID(), no_grad=True),
    "where": C(lambda c, x, y: np.where(c != 0, x, y), (4, 3), *BIN, dom=(BOOL, SMOOTH, SMOOTH), nondiff=(0,)),
    # with a scalar
    "add_scalar": C(lambda x: x + S, scalar=S),
    "sub_scalar": C(lambda x: x - S, scalar=S),
    "rsub_scalar": C(lambda x: S - x, scalar=S),
    "mul_scalar": C(lambda x: x * S, scalar=S),
    "div_scalar": C(lambda x: x / S, scalar=S),
    "rdiv_scalar": C(lambda x: S / x, dom=AWAY(0.5), scalar=S),
    "pow_scalar": C(lambda x: x**S, dom=POS, scalar=S),
    "rpow_scalar": C(lambda x: S**x, scalar=S),
    "mod_scalar": C(lambda x: np.mod(x, S), dom=GRID(0.125), scalar=S),
    "rmod_scalar": C(lambda x: np.mod(S, x), dom=DIVISOR, scalar=S),
    "maximum_scalar": C(lambda x: np.maximum(x, 0.125), dom=GRID(), scalar=0.125),
    "minimum_scalar": C(lambda x: np.minimum(x, 0.125), dom=GRID(), scalar=0.125),
    "equal_scalar": C(lambda x: x == 0.5, dom=GRID(), no_grad=True, scalar=0.5),
    "not_equal_scalar": C(lambda x: x != 0.5, dom=GRID(), no_grad=True, scalar=0.5),
    "greater_scalar": C(lambda x: x > 0.5, dom=GRID(), no_grad=True, scalar=0.5),
    "greater_equal_scalar": C(lambda x: x >= 0.5, dom=GRID(), no_grad=True, scalar=0.5),
    "lesser_scalar": C(lambda x: x < 0.5, dom=GRID(), no_grad=True, scalar=0.5),
    "lesser_equal_scalar": C(lambda x: x <= 0.5, dom=GRID(), no_grad=True, scalar=0.5),
    # reductions (more in test_reduction)
    "sum": C(lambda x: x.sum(axis=1), X3, axis=1),
    "mean": C(lambda x: x.mean(axis=(0, 2), keepdims=True), X3, axis=[0, 2], keepdims=True),
    "prod": C(lambda x: x.prod(axis=1), X3, dom=AWAY(0.5, 1.5), axis=1),
    "nansum": C(lambda x: x.sum(axis=(0, 2)), X3, axis=[0, 2]),
    "nanprod": C(lambda x: x.prod(axis=1, keepdims=True), X3, dom=AWAY(0.5, 1.5), axis=1, keepdims=True),
    "max": C(lambda x: mx1d(x.max()), X3, dom=DISTINCT),
    "min": C(lambda x: x.min(axis=-1), X3, dom=DISTINCT, axis=-1),
    "norm": C(lambda x: np.sqrt((x * x).sum(axis=0)), X3, dom=DISTINCT, axis=0),
    # ordering
    "argmax": C(lambda x: x.argmax(axis=1).astype(x.dtype), X3, dom=DISTINCT, axis=1),  # (the data's dtype, as MXNet)
    "argmin": C(lambda x: mx1d(x.argmin()).astype(x.dtype), X3, dom=DISTINCT),
    "argmax_channel": C(lambda x: x.argmax(axis=1).astype(x.dtype), X3, dom=DISTINCT),
    "sort": C(lambda x: np.flip(np.sort(x, axis=1), axis=1), X3, dom=DISTINCT, axis=1, is_ascend=False),
    "argsort": C(lambda x: np.argsort(x, axis=0).astype(np.float32), X3, dom=DISTINCT, out="float32", axis=0),
    "topk": C(lambda x: topk_ref(x, 1, 2, "value", False), X3, dom=DISTINCT, axis=1, k=2, ret_typ="value"),
    # gathers and scatters along an axis (indices out of range are clipped)
    "gather_axis": C(lambda x, i: gather_ref(x, i, 1), X3, (2, 5, 4), dom=(SMOOTH, IDX(-1, 4)), nondiff=(1,), axis=1),
    "scatter_axis": C(
        lambda g, i: scatter_axis_ref(g, i, 1, X3),
        (2, 5, 4),
        (2, 5, 4),
        dom=(SMOOTH, IDX(-1, 4)),
        nondiff=(1,),
        axis=1,
        shape=list(X3),
    ),
    "pick": C(lambda x, i: pick_ref(x, i, 1), X3, (2, 4), dom=(SMOOTH, IDX(-1, 4)), nondiff=(1,), axis=1),
    "wrap_index": C(lambda x: np.mod(x, 3), dom=IDX(-5, 7), n=3),
    "take": C(
        lambda a, i: take_ref(a, i, 1, "clip"), (3, 4, 2), (2, 3), dom=(SMOOTH, IDX(-1, 5)), nondiff=(1,), axis=1
    ),
    "take_grad": C(
        lambda g, i: take_grad_ref(g, i, 1, "clip", (3, 4, 2)),
        (3, 2, 3, 2),
        (2, 3),
        dom=(SMOOTH, IDX(-1, 5)),
        nondiff=(1,),
        axis=1,
        shape=[3, 4, 2],
    ),
    "Embedding": C(
        lambda d, w: take_ref(w, d, 0, "clip"),
        (2, 3),
        (5, 4),
        dom=(IDX(-1, 7), SMOOTH),
        nondiff=(0,),
        input_dim=5,
        output_dim=4,
    ),
    # indices of shape (2, 3, 2): rows for axes 0 and 1 (both of length 3), negative ones too
    "gather_nd": C(lambda x, i: gather_nd_ref(x, i), (3, 3, 4), (2, 3, 2), dom=(SMOOTH, IDX(-3, 3)), nondiff=(1,)),
    "gather_nd_grad": C(
        lambda g, i: gather_nd_grad_ref(g, i, (3, 3, 4)),
        (3, 2, 4),
        (2, 3, 2),
        dom=(SMOOTH, IDX(-3, 3)),
        nondiff=(1,),
        shape=[3, 3, 4],
    ),
    "one_hot": C(
        lambda i: one_hot_ref(i, 4, 2.0, -1.0),
        (2, 3),
        dom=IDX(-1, 5),
        out="float32",
        zero_grad=True,
        depth=4,
        on_value=2.0,
        off_value=-1.0,
    ),
    # shape
    "sum_to": C(lambda x: x.sum(axis=(0, 2)).reshape(3, 1), X3, shape=[3, 1]),
    "broadcast_to": C(lambda x: np.broadcast_to(x, X3), (3, 1), shape=list(X3)),
    "broadcast_like": C(lambda a, b: np.broadcast_to(a, b.shape), (3, 1), X3, nondiff=(1,)),
    "reshape": C(lambda x: x.reshape(6, 4), X3, shape=[-3, -1]),
    "transpose": C(lambda x: x.transpose(1, 2, 0), X3, axes=[1, 2, 0]),
    "moveaxis": C(lambda x: np.moveaxis(x, [0, 1], [2, 0]), X3, source=[0, 1], destination=[2, 0]),
    "reshape_like": C(lambda a, b: a.reshape(b.shape), X3, (4, 6), nondiff=(1,)),
    "shape_array": C(lambda x: np.array(x.shape, np.int64), X3, out="int64", no_grad=True),
    "size_array": C(lambda x: np.array([x.size], np.int64), X3, out="int64", no_grad=True),
    "broadcast_axis": C(lambda x: np.broadcast_to(x, (2, 3, 4)), (2, 1, 1), axis=[1, 2], size=[3, 4]),
    "cumsum": C(lambda x: np.cumsum(x, axis=1), X3, axis=1),
    "diag": C(lambda x: np.diagonal(x, 1, 0, 2), X3, k=1, axis1=0, axis2=2),
    "diag_grad": C(lambda g: diag_grad_ref(g, 1, 0, 2, X3), (3, 2), k=1, axis1=0, axis2=2, shape=list(X3)),
    "swapaxes": C(lambda x: np.swapaxes(x, 0, 2), X3, dim1=0, dim2=2),
    "expand_dims": C(lambda x: x[:, None], X3, axis=1),
    "squeeze": C(lambda x: x.reshape(2, 3), (2, 1, 3, 1), axis=[1, 3]),
    "flatten": C(lambda x: x.reshape(2, 12), X3),
    "tile": C(lambda x: np.tile(x, (2, 1, 2)), (2, 3), reps=[2, 1, 2]),
    "repeat": C(lambda x: np.repeat(x, 2, axis=1), (2, 3), repeats=2, axis=1),
    "concat": C(lambda *xs: np.concatenate(xs, axis=1), (2, 3), (2, 1), (2, 2), dim=1),
    "stack": C(lambda *xs: np.stack(xs, axis=1), (2, 3), (2, 3), (2, 3), axis=1),
    "add_n": C(lambda *xs: xs[0] + xs[1] + xs[2], X3, X3, X3),
    "slice_axis": C(lambda x: x[:, 1:], X3, axis=1, begin=1, end=None),
    "slice_like": C(lambda x, like: x[:, :2, :3], X3, (1, 2, 3), nondiff=(1,), axes=[1, -1]),
    "depth_to_space": C(lambda x: depth_to_space_ref(x, 2), (2, 8, 2, 3), block_size=2),
    "space_to_depth": C(lambda x: space_to_depth_ref(x, 2), (2, 2, 4, 6), block_size=2),
    "slice": C(lambda x: x[1:, 0:3:2], X3, begin=[1, 0], end=[None, 3], step=[None, 2]),
    "flip": C(lambda x: x[::-1, :, ::-1], X3, axis=[0, 2]),
    # indexing
    "getitem": C(lambda x: x[as_np_key(KEY)], (3, 4, 5), key=KEY),
    "scatter_key": C(scatter_ref((3, 4, 5), KEY), (2, 1, 5), shape=[3, 4, 5], key=KEY),
    # linear algebra
    "dot": C(np.dot, (2, 3), (3, 4)),
    "batch_dot": C(lambda a, b: np.einsum("bij,bjk->bik", a, b), (2, 3, 4), (2, 4, 5)),
    "linalg_gemm2": C(
        lambda a, b: 0.5 * np.einsum("bij,bkj->bik", a, b), (2, 3, 4), (2, 5, 4), transpose_b=True, alpha=0.5
    ),
    # neural networks
    "softmax": C(lambda x: softmax_ref(x, 1, 2.0), X3, axis=1, temperature=2.0),
    "softmin": C(lambda x: softmax_ref(-x, 1, 2.0), X3, axis=1, temperature=2.0),
    "L2Normalization": C(lambda x: x / np.sqrt((x * x).sum(axis=(1, 2), keepdims=True) + 1e-10), X3),
    "log_softmax": C(lambda x: log_softmax_ref(x, -1), X3),
    "softmax_cross_entropy": C(sce_ref, (4, 5), (4,), dom=(SMOOTH, IDX(0, 5)), nondiff=(1,)),
    "SoftmaxOutput": C(
        lambda x, lab: softmax_ref(x, -1),
        (4, 5),
        (4,),
        dom=(SMOOTH, IDX(-1, 6)),  # (labels past the classes: no target, as MXNet)
        nondiff=(1,),
        designed=lambda x, lab: (softmax_ref(x, -1) - one_hot_ref(lab, 5, 1.0, 0.0), None),
    ),
    "LinearRegressionOutput": C(
        lambda x, lab: x, (3, 2), (3, 2), nondiff=(1,), designed=lambda x, lab: ((x - lab) / 2, None)
    ),
    "LogisticRegressionOutput": C(
        lambda x, lab: 1 / (1 + np.exp(-x)),
        (3, 2),
        (3, 2),
        nondiff=(1,),
        designed=lambda x, lab: ((1 / (1 + np.exp(-x)) - lab) / 2, None),
    ),
    "MAERegressionOutput": C(
        lambda x, lab: x,
        (4,),
        (4,),
        nondiff=(1,),
        dom=(AWAY(), SMOOTH),
        designed=lambda x, lab: (np.sign(x - lab), None),
    ),
    "MakeLoss": C(lambda x: x, (2, 3), designed=lambda x: (np.ones_like(x),)),
    "make_loss": C(lambda x: x, (2, 3), designed=lambda x: (np.ones_like(x),)),
    "Activation": C(np.tanh, act_type="tanh"),
    "LeakyReLU": C(lambda x: np.where(x > 0, x, 0.25 * x), dom=AWAY()),
    "FullyConnected": C(lambda x, w, b: x.reshape(2, -1) @ w.T + b, X3, (5, 12), (5,), num_hidden=5, tol32=LOOSE32),
    "im2col": C(lambda x: im2col_ref(x, (3, 2), (2, 1), (1, 0)), (2, 3, 5, 6), **WIN),
    "col2im": C(lambda c: col2im_ref(c, (2, 3, 5, 6), (3, 2), (2, 1), (1, 0)), (2, 18, 15), output_size=[5, 6], **WIN),
    "Convolution": C(
        lambda x, w, b: conv_ref(x, w, b, (2, 1), (1, 1)),
        IMG,
        (4, 3, 3, 3),
        (4,),
        kernel=[3, 3],
        stride=[2, 1],
        pad=[1, 1],
        num_filter=4,
        tol32=LOOSE32,
    ),
    "Deconvolution": C(
        lambda x, w, b: deconv_ref(x, w, b, (2, 1), (1, 1), (1, 0)),
        (2, 4, 3, 2),
        (4, 3, 3, 3),
        (3,),
        kernel=[3, 3],
        stride=[2, 1],
        pad=[1, 1],
        adj=[1, 0],
        num_filter=3,
        no_bias=False,
        tol32=LOOSE32,
    ),
    "Pooling": C(lambda x: pool_ref(x, "max", (3, 2), (2, 1), (1, 0)), IMG, dom=DISTINCT, **WIN),
    "Pad": C(
        lambda x: np.pad(x, ((0, 0), (0, 0), (2, 1), (0, 2)), constant_values=-1.5),
        (2, 3, 3, 4),
        mode="constant",
        pad_width=[0, 0, 0, 0, 2, 1, 0, 2],
        constant_value=-1.5,
    ),
    "pad_grad": C(
        lambda g: pad_grad_ref(g, "reflect", (0, 0, 0, 0, 2, 1, 1, 2)),
        (2, 3, 6, 7),
        mode="reflect",
        pad_width=[0, 0, 0, 0, 2, 1, 1, 2],
    ),
    "Dropout": C(None, (20, 30), training=True, p=0.4),
    "BatchNorm": bn_case((4, 3, 2, 2), {"fix_gamma": False}, fix_gamma=False),
    "LayerNorm": C(ln_ref, X3, (4,), (4,), dom=(DISTINCT, SMOOTH, SMOOTH)),
    "InstanceNorm": C(in_ref, X3, (3,), (3,), dom=(DISTINCT, SMOOTH, SMOOTH)),
    "SequenceLast": C(
        lambda x, n: x[np.clip(n.astype(int) - 1, 0, 3), np.arange(3)],
        (4, 3, 2),
        (3,),
        dom=(SMOOTH, IDX(1, 5)),
        nondiff=(1,),
        use_sequence_length=True,
    ),
    "SequenceReverse": C(
        lambda x, n: seqreverse_ref(x, n),
        (4, 3, 2),
        (3,),
        dom=(SMOOTH, IDX(0, 5)),
        nondiff=(1,),
        use_sequence_length=True,
    ),
    "SequenceMask": C(
        lambda x, n: seqmask_ref(x, n, 0, -1.0),
        (4, 3, 2),
        (3,),
        dom=(SMOOTH, IDX(0, 5)),
        nondiff=(1,),
        use_sequence_length=True,
        value=-1.0,
    ),
    # linear algebra (ops_linalg.py)
    "linalg_gemm": C(
        lambda a, b, c: 0.5 * np.einsum("bij,bjk->bik", a, b) - 2.0 * c,
        (2, 3, 4),
        (2, 4, 5),
        (2, 3, 5),
        alpha=0.5,
        beta=-2.0,
    ),
    "linalg_syrk": C(lambda a: 1.5 * np.einsum("bij,bkj->bik", a, a), (2, 3, 4), alpha=1.5),
    "linalg_potrf": C(
        np.linalg.cholesky,
        (2, 3, 3),
        dom=LA_SPD,
    ),
    "linalg_potri": C(
        lambda a: np.linalg.inv(np.tril(a) @ np.tril(a).swapaxes(-1, -2)),
        (2, 3, 3),
        dom=LA_DOM,
    ),
    "linalg_trsm": C(
        lambda a, b: 2.0 * np.linalg.inv(np.tril(a)) @ b, (2, 3, 3), (2, 3, 4), dom=(LA_DOM, SMOOTH), alpha=2.0
    ),
    "linalg_trmm": C(lambda a, b: -0.5 * np.tril(a) @ b, (2, 3, 3), (2, 3, 4), alpha=-0.5),
    "linalg_sumlogdiag": C(lambda a: np.log(np.diagonal(a, 0, -2, -1)).sum(-1), (2, 3, 3), dom=LA_DOM),
    "linalg_extractdiag": C(lambda a: np.diagonal(a, 1, -2, -1), (2, 4, 4), offset=1),
    "linalg_makediag": C(lambda x: np.apply_along_axis(np.diag, -1, x, -1), (2, 3), offset=-1),
    "linalg_extracttrian": C(lambda a: a.swapaxes(-1, -2)[..., np.tri(4, 4, 0, bool)], (2, 4, 4), lower=False),
    "linalg_maketrian": C(
        lambda x: np.einsum("...t,tij->...ij", x, np.eye(16)[np.tri(4, 4, -1, bool).ravel()].reshape(6, 4, 4)),
        (2, 6),
        offset=-1,
    ),
    "linalg_inverse": C(np.linalg.inv, (2, 3, 3), dom=LA_DOM),
    "linalg_det": C(np.linalg.det, (2, 3, 3), dom=LA_DOM),
    "linalg_slogdet": C(lambda a: np.stack(np.linalg.slogdet(a)), (2, 3, 3), dom=LA_DOM),  # (sign, log |det|)
    "linalg_gelqf": C(lambda a: gelqf_ref(a), (2, 3, 4), dom=LA_WIDE),  # ([Q | L])
    "linalg_syevd": C(lambda a: syevd_ref(a), (2, 3, 3), dom=LA_APART),  # ([U; lam])
    # image and normalization layers (ops_vision.py)
    "LRN": C(
        lambda x: (
            x * (1.5 + 0.5 / 3 * np.stack([(x[:, max(c - 1, 0) : c + 2] ** 2).sum(1) for c in range(4)], 1)) ** -0.75
        ),
        (2, 4, 2, 3),
        nsize=3,
        alpha=0.5,
        knorm=1.5,
    ),
    "UpSampling": C(  # a second input of its own scale (1), joined on the channels
        lambda a, b: np.concatenate([a.repeat(2, 2).repeat(2, 3), b], axis=1),
        (2, 2, 2, 3),
        (2, 1, 4, 6),
        scale=2,
        sample_type="nearest",
        num_args=2,
    ),
    "GroupNorm": C(  # (gamma and beta: one value per group)
        lambda x, gm, bt: (
            (lambda z: (z - z.mean(2, keepdims=True)) / np.sqrt(z.var(2, keepdims=True) + 1e-5))(x.reshape(2, 2, 6))
            * gm[None, :, None]
            + bt[None, :, None]
        ).reshape(x.shape),
        (2, 4, 3),
        (2,),
        (2,),
        dom=(DISTINCT, SMOOTH, SMOOTH),
        num_groups=2,
    ),
    "Crop": C(lambda x: x[:, :, 1:3, 2:5], (2, 3, 5, 6), h_w=[2, 3], offset=[1, 2]),
    "SoftmaxActivation": C(lambda x: softmax_ref(x, -1), (2, 3, 4)),  # (instance: along the last axis)
    "SVMOutput": C(  # (labels past the classes: no class of their own, as MXNet's)
        lambda x, lab: x,
        (4, 3),
        (4,),
        dom=(GRID(1 / 8), IDX(-1, 4)),
        nondiff=(1,),
        designed=lambda x, lab: (
            np.where(one_hot_ref(lab, 3, 1.0, 0.0) == 1, -2 * np.maximum(1 - x, 0), 2 * np.maximum(1 + x, 0)),
            None,
        ),
    ),
    # index ops and densities (ops_index.py)
    # batch_take: a[i, indices[i]], indices clipped to the row (not differentiable, as MXNet's)
    "batch_take": C(
        lambda a, i: np.array([a[r, min(max(int(i[r]), 0), 2)] for r in range(4)], a.dtype),
        (4, 3),
        (4,),
        dom=(SMOOTH, IDX(-1, 5)),
    ),
    "khatri_rao": C(lambda a, b, c: np.einsum("ik,jk,lk->ijlk", a, b, c).reshape(12, 3), (2, 3), (3, 3), (2, 3)),
    # ravel and unravel: MXNet's arithmetic on indices out of range too; a zero gradient
    "ravel_multi_index": C(
        lambda x: (x[0] * 4 + x[1]) * 5 + x[2], (3, 6), dom=IDX(-2, 7), zero_grad=True, shape=[-1, 4, 5]
    ),
    "unravel_index": C(
        lambda x: np.stack([x // 20, x // 5 % 4, x % 5]), (2, 3), dom=IDX(0, 80), zero_grad=True, shape=[-1, 4, 5]
    ),
    # distinct positions (a repeated one is written once: no gradient for the others), negative ones too
    "scatter_nd": C(
        lambda d, i: gather_nd_grad_ref(d, i, (3, 3, 4)),
        (3, 2, 4),
        (2, 3, 2),
        dom=(
            SMOOTH,
            lambda rng, s: (
                (np.stack(np.unravel_index(rng.permutation(9)[:6], (3, 3))) - 3 * rng.integers(0, 2, (2, 6)))
                .reshape(s)
                .astype(np.float64)
            ),
        ),
        nondiff=(1,),
        shape=[3, 3, 4],
    ),
    "all_finite": C(lambda x: np.ones(1, np.float32), (2, 3), out="float32"),
    # the densities: sample (2, 3), the samples of distributions (2,); inside the supports
    "random_pdf_uniform": C(
        lambda x, lo, hi: np.broadcast_to((1 / (hi - lo))[:, None], x.shape),
        (2, 3),
        (2,),
        (2,),
        dom=(U(-1, 1), U(-2, -1), U(1, 2)),
        nondiff=(0,),
    ),
    "random_pdf_normal": C(
        lambda x, m, s: np.exp(-0.5 * ((x - m[:, None]) / s[:, None]) ** 2) / (np.sqrt(2 * np.pi) * s[:, None]),
        (2, 3),
        (2,),
        (2,),
        dom=(SMOOTH, SMOOTH, POS),
    ),
    "random_pdf_gamma": C(
        lambda x, a, b: (b**a / np.vectorize(math.gamma)(a))[:, None] * x ** (a[:, None] - 1) * np.exp(-b[:, None] * x),
        (2, 3),
        (2,),
        (2,),
        dom=(POS, POS, POS),
    ),
    "random_pdf_exponential": C(lambda x, lam: lam[:, None] * np.exp(-lam[:, None] * x), (2, 3), (2,), dom=(POS, POS)),
    "random_pdf_poisson": C(
        lambda x, lam: lam[:, None] ** x * np.exp(-lam[:, None]) / np.vectorize(math.gamma)(x + 1),
        (2, 3),
        (2,),
        dom=(IDX(0, 6), POS),
        nondiff=(0,),
    ),
    "random_pdf_negative_binomial": C(
        lambda x, k, p: (
            np.vectorize(math.gamma)(x + k[:, None])
            / (np.vectorize(math.gamma)(k)[:, None] * np.vectorize(math.gamma)(x + 1))
            * p[:, None] ** k[:, None]
            * (1 - p[:, None]) ** x
        ),
        (2, 3),
        (2,),
        (2,),
        dom=(IDX(0, 6), POS, U(0.2, 0.8)),
        nondiff=(0,),
    ),
    # (a gamma-poisson mixture of mean mu and variance mu + alpha mu^2)
    "random_pdf_generalized_negative_binomial": C(
        lambda x, mu, al: (
            np.vectorize(math.gamma)(x + 1 / al[:, None])
            / (np.vectorize(math.gamma)(1 / al)[:, None] * np.vectorize(math.gamma)(x + 1))
            * (1 / (1 + al * mu))[:, None] ** (1 / al[:, None])
            * (al * mu / (1 + al * mu))[:, None] ** x
        ),
        (2, 3),
        (2,),
        (2,),
        dom=(IDX(0, 6), POS, POS),
        nondiff=(0,),
    ),
    # spatial sampling (ROIPooling, BilinearSampler, GridGenerator, SpatialTransformer, Correlation)
    "GridGenerator": C(  # (x on channel 0, y on 1: the 2 x 3 matrix on the points (x, y, 1) of [-1, 1]^2)
        lambda t: np.einsum(
            "nij,jhw->nihw",
            t.reshape(-1, 2, 3),
            np.stack([*np.meshgrid(np.linspace(-1, 1, 4), np.linspace(-1, 1, 3)), np.ones((3, 4))]),
        ),
        (2, 6),
        transform_type="affine",
        target_shape=[3, 4],
    ),
    "BilinearSampler": C(  # (points up to a pixel outside, none near a pixel's edge: the sampler's kinks)
        lambda x, g: (
            lambda p, xr, yr: sum(
                p[
                    np.arange(len(x))[:, None, None],
                    :,
                    np.clip(np.floor(yr) + dy, -1, x.shape[2]).astype(int) + 1,
                    np.clip(np.floor(xr) + dx, -1, x.shape[3]).astype(int) + 1,
                ].transpose(0, 3, 1, 2)
                * ((1 - abs(xr - np.floor(xr) - dx)) * (1 - abs(yr - np.floor(yr) - dy)))[:, None]
                for dy in (0, 1)
                for dx in (0, 1)
            )
        )(
            np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1))),
            (g[:, 0] + 1) * (x.shape[3] - 1) / 2,
            (g[:, 1] + 1) * (x.shape[2] - 1) / 2,
        ),
        (2, 3, 3, 4),
        (2, 2, 2, 3),
        dom=(
            SMOOTH,
            lambda rng, s: np.stack(
                [
                    (rng.integers(-1, n, (s[0],) + s[2:]) + rng.uniform(0.15, 0.85, (s[0],) + s[2:])) * 2 / (n - 1) - 1
                    for n in (4, 3)
                ],
                axis=1,
            ),
        ),
    ),
    "SpatialTransformer": C(  # (the sampler at the affine grid of loc: a few points outside the image)
        lambda x, t: CASES["BilinearSampler"].ref(x, CASES["GridGenerator"].ref(t)),
        (2, 2, 4, 5),
        (2, 6),
        dom=(SMOOTH, lambda rng, s: np.array([1.1, 0.2, -0.1, -0.15, 0.9, 0.2]) + rng.uniform(-0.3, 0.3, s)),
        transform_type="affine",
        sampler_type="bilinear",
        target_shape=[3, 4],
    ),
    "ROIPooling": C(  # (the bins worked out by hand: a region of 1 pixel's width too; distinct data: no ties)
        lambda x, r: np.stack(
            [
                np.stack([np.stack([x[b, :, h0:h1, w0:w1].max((1, 2)) for w0, w1 in cols], -1) for h0, h1 in rows], -2)
                for b, rows, cols in [
                    (0, [(0, 2), (1, 3)], [(0, 2), (2, 4)]),
                    (1, [(1, 3), (3, 5)], [(1, 3), (3, 5)]),
                    (0, [(1, 3), (2, 4)], [(2, 3), (2, 3)]),
                ]
            ]
        ),
        (2, 2, 5, 6),
        (3, 5),
        dom=(DISTINCT, lambda rng, s: np.array([[0, 0, 0, 3, 2], [1, 1, 1, 4, 4], [0, 2, 1, 2, 3]], float)),
        nondiff=(1,),
        pooled_size=[2, 2],
        spatial_scale=1.0,
    ),
    "roi_pooling_argmax": C(  # (where ROIPooling's maxima are, as flat indices: distinct data)
        lambda x, r: np.vectorize(lambda m: np.flatnonzero(x.ravel() == m)[0])(CASES["ROIPooling"].ref(x, r)),
        (2, 2, 5, 6),
        (3, 5),
        dom=(DISTINCT, lambda rng, s: np.array([[0, 0, 0, 3, 2], [1, 1, 1, 4, 4], [0, 2, 1, 2, 3]], float)),
        out="int64",
        pooled_size=[2, 2],
        spatial_scale=1.0,
    ),
    "Correlation": C(  # (displacements -1..1 on each axis, y-major; each a mean over the channels)
        lambda a, b: np.stack(
            [
                (a[:, :, 1:3, 1:4] * b[:, :, 1 + dy : 3 + dy, 1 + dx : 4 + dx]).mean(1)
                for dy in (-1, 0, 1)
                for dx in (-1, 0, 1)
            ],
            1,
        ),
        (2, 2, 4, 5),
        (2, 2, 4, 5),
    ),
    "correlation_grad": C(  # (data1's: each displacement's g times data2 there, into the window)
        lambda g, a, b: np.pad(
            sum(
                g[:, [3 * dy + dx + 4]] * b[:, :, 1 + dy : 3 + dy, 1 + dx : 4 + dx]
                for dy in (-1, 0, 1)
                for dx in (-1, 0, 1)
            )
            / 2,
            ((0, 0), (0, 0), (1, 1), (1, 1)),
        ),
        (2, 9, 2, 3),
        (2, 2, 4, 5),
        (2, 2, 4, 5),
        nondiff=(1,),  # (data1's gradient does not depend on data1)
    ),
    "correlation_sign_dot": C(  # (absolute differences: u at data1's window times the sign of data1 - data2)
        lambda u, a, b: np.stack(
            [
                (
                    u[:, :, 1:3, 1:4] * np.where(a[:, :, 1:3, 1:4] >= b[:, :, 1 + dy : 3 + dy, 1 + dx : 4 + dx], 1, -1)
                ).mean(1)
                for dy in (-1, 0, 1)
                for dx in (-1, 0, 1)
            ],
            1,
        ),
        (2, 2, 4, 5),
        (2, 2, 4, 5),
        (2, 2, 4, 5),
        nondiff=(1, 2),  # (the signs are constant between the kinks)
        is_multiply=False,
    ),
    # CTCLoss, random_pdf_dirichlet, multi_all_finite
    # CTCLoss: labels in [0, 4) with the blank first (0: padding, so some samples have fewer)
    "CTCLoss": C(
        lambda x, lab: ctc_ref(x, lab)[0],
        (5, 3, 4),
        (3, 2),
        dom=(SMOOTH, IDX(0, 4)),
        nondiff=(1,),
    ),
    # Dirichlet densities: 2 distributions of 4 categories, 3 vectors of each (inside (0, 1))
    "random_pdf_dirichlet": C(
        lambda x, a: np.exp(
            ((a[:, None, :] - 1) * np.log(x)).sum(-1)
            + (np.vectorize(math.lgamma)(a.sum(-1)) - np.vectorize(math.lgamma)(a).sum(-1))[:, None]
        ),
        (2, 3, 4),
        (2, 4),
        dom=(U(0.1, 1.0), POS),
    ),
    "multi_all_finite": C(lambda a, b: np.ones(1, np.float32), (2, 3), (4,), out="float32", num_arrays=2),
    "histogram": C(
        lambda x: np.histogram(x, bins=4, range=(-0.5, 1.0))[0], (3, 5), out="int64", bin_cnt=4, range=[-0.5, 1]
    ),
    "histogram_edges": C(lambda x: np.linspace(x.min(), x.max(), 6), (3, 5), out="float32", bin_cnt=5),
    # nd.contrib's
    "contrib_isfinite": C(lambda x: np.isfinite(x).astype(x.dtype), (2, 3), zero_grad=True),
    "contrib_isinf": C(lambda x: np.isinf(x).astype(x.dtype), (2, 3), zero_grad=True),
    "contrib_isnan": C(lambda x: np.isnan(x).astype(x.dtype), (2, 3), zero_grad=True),
    "contrib_allclose": C(lambda a, b: np.array(0, np.uint8), (2, 3), (2, 3), out="uint8"),
    "contrib_arange_like": C(
        lambda x: np.arange(1.0, 4.0, 0.5).reshape(2, 3), (2, 3), zero_grad=True, start=1.0, step=0.5
    ),
    "contrib_index_array": C(lambda x: np.stack(np.indices(x.shape), axis=-1), (2, 3), out="int64", zero_grad=True),
    "contrib_index_copy": C(
        lambda old, idx, new: np.stack([new[1], old[1], new[0], old[3]]),
        (4, 3),
        (2,),
        (2, 3),
        dom=(SMOOTH, lambda rng, s: np.array([2.0, 0.0]), SMOOTH),
        nondiff=(1,),
    ),
    "contrib_div_sqrt_dim": C(lambda x: x / 2.0, (3, 4)),
    "contrib_quadratic": C(lambda x: 2 * x * x - 3 * x + 0.5, (2, 3), a=2.0, b=-3.0, c=0.5),
    "contrib_gradientmultiplier": C(lambda x: x, (2, 3), head=-2.5, scalar=-2.5),
    "contrib_round_ste": C(lambda x: np.where(x < 0, -np.floor(-x + 0.5), np.floor(x + 0.5)), (2, 3), head=1.0),
    "contrib_sign_ste": C(np.sign, (2, 3), head=1.0),
    "contrib_BilinearResize2D": C(
        lambda x: separable_ref(x, resize_weights(4, 3), resize_weights(5, 7)), (2, 3, 4, 5), height=3, width=7
    ),
    "contrib_BilinearResize2D_grad": C(
        lambda g: separable_ref(g, resize_weights(4, 3).T, resize_weights(5, 7).T), (2, 3, 3, 7), height=4, width=5
    ),
    "contrib_AdaptiveAvgPooling2D": C(
        lambda x: separable_ref(x, adaptive_weights(5, 3), adaptive_weights(7, 2)), (2, 3, 5, 7), output_size=[3, 2]
    ),
    "contrib_AdaptiveAvgPooling2D_grad": C(
        lambda g: separable_ref(g, adaptive_weights(5, 3).T, adaptive_weights(7, 2).T), (2, 3, 3, 2), height=5, width=7
    ),
    "contrib_ROIAlign": C(  # (regions inside, across an edge, and of less than a pixel)
        lambda x, r: roi_align_ref(x, r, (2, 3), 0.5, -1, False),
        (2, 2, 5, 6),
        (3, 5),
        dom=(SMOOTH, ROI_ALIGN_ROIS),
        nondiff=(1,),
        pooled_size=[2, 3],
        spatial_scale=0.5,
    ),
    "contrib_ROIAlign_grad": C(
        lambda g, r: roi_align_grad_ref(g, r, (2, 2, 5, 6), (2, 2), 1.0, 2, True),
        (3, 2, 2, 2),
        (3, 5),
        dom=(SMOOTH, ROI_ALIGN_ROIS),
        nondiff=(1,),
        pooled_size=[2, 2],
        spatial_scale=1.0,
        sample_ratio=2,
        aligned=True,
        shape=[2, 2, 5, 6],
    ),
    "contrib_box_iou": C(lambda a, b: iou_ref(a, b), (2, 3, 4), (5, 4), dom=(BOXES, BOXES), zero_grad=True),
    "contrib_box_nms": C(  # (the boxes kept worked out by hand: see NMS_BOXES)
        lambda x: nms_ref(x), (2, 5, 6), dom=lambda rng, s: NMS_BOXES.copy(), **NMS_AT
    ),
    "contrib_box_nms_grad": C(
        lambda g, x: nms_grad_ref(g), (2, 5, 6), (2, 5, 6), dom=(SMOOTH, lambda rng, s: NMS_BOXES.copy()), **NMS_AT
    ),
    # the optimizers' array ops
    "multi_sum_sq": C(
        lambda a, b: np.array([np.sum(np.square(a, dtype=np.float64)), np.sum(np.square(b, dtype=np.float64))]),
        (2, 3),
        (4,),
        out="float32",
        num_arrays=2,
    ),
    "multi_lars": C(
        lambda lr, w, g, d: np.where(
            (w > 0) & (g > 0),
            lr * 0.5 * np.sqrt(np.abs(w)) / (np.sqrt(np.abs(g)) * 2 + d * np.sqrt(np.abs(w)) + 0.1),
            lr,
        ),
        (6,),
        (6,),
        (6,),
        (6,),
        dom=(POS, U(-0.5, 2.0), U(-0.5, 2.0), POS),
        eta=0.5,
        eps=0.1,
        rescale_grad=2.0,
    ),
    "lamb_update_phase2": C(
        lambda w, g, r1, r2: w - hyper(w, 0.1)[0] * r1[0] / r2[0] * g,
        (2, 3),
        (2, 3),
        (1,),
        (1,),
        dom=(SMOOTH, SMOOTH, POS, POS),
        lr=0.1,
    ),
}

# other attribute settings, modes and input arities: (id, op name, case)
VARIANTS: list[tuple[str, str, Case]] = [
    (
        "linspace-no-endpoint",
        "linspace",
        C(lambda: np.linspace(0, 1, 4, endpoint=False), start=0, stop=1, num=4, endpoint=False, dtype="float64"),
    ),
    ("eye-square-below", "eye", C(lambda: np.eye(3, k=-1, dtype=np.int32), N=3, k=-1, dtype="int32")),
    ("gamma-negative", "gamma", C(np.vectorize(math.gamma), dom=U(-2.9, -2.1))),
    ("gammaln-negative", "gammaln", C(np.vectorize(math.lgamma), dom=U(-1.9, -1.1))),
    ("polygamma-trigamma-negative", "polygamma", C(lambda x: polygamma_ref(x, 1), dom=U(-1.8, -1.2), n=1)),
    ("polygamma-2", "polygamma", C(lambda x: polygamma_ref(x, 2), dom=U(0.5, 12.0), n=2)),
    ("softmax-default", "softmax", C(lambda x: softmax_ref(x, -1), X3)),
    (
        "softmax-length",
        "softmax",
        C(
            lambda x, n: softmax_length_ref(x, n, 1),
            X3,
            (2, 4),
            dom=(SMOOTH, IDX(0, 4)),
            nondiff=(1,),
            axis=1,
            use_length=True,
        ),
    ),
    (
        "softmax-length-last-axis-T",
        "softmax",
        C(
            lambda x, n: softmax_length_ref(x, n, -1, 0.5),
            (3, 5),
            (3,),
            dom=(SMOOTH, IDX(0, 6)),
            nondiff=(1,),
            use_length=True,
            temperature=0.5,
        ),
    ),
    (
        "softmax-dtype",
        "softmax",
        C(lambda x: softmax_ref(x.astype(np.float64), -1), X3, out="float64", dtype="float64"),
    ),
    (
        "log_softmax-dtype",
        "log_softmax",
        C(lambda x: log_softmax_ref(x.astype(np.float64), -1), X3, out="float64", dtype="float64"),
    ),
    ("log_softmax-axis0-T", "log_softmax", C(lambda x: log_softmax_ref(x, 0, 0.5), X3, axis=0, temperature=0.5)),
    (
        "softmax_cross_entropy-labels-out-of-range",
        "softmax_cross_entropy",
        C(sce_ref, (5, 3), (5,), dom=(SMOOTH, IDX(-2, 6)), nondiff=(1,)),
    ),
    *[(f"Activation-{a}", "Activation", C(ACT_REF[a], dom=AWAY(), act_type=a)) for a in ACT_REF],
    (
        "LeakyReLU-elu",
        "LeakyReLU",
        C(lambda x: np.where(x > 0, x, 0.5 * np.expm1(x)), dom=AWAY(), act_type="elu", slope=0.5),
    ),
    (
        "LeakyReLU-selu",
        "LeakyReLU",
        C(lambda x: SELU[1] * np.where(x > 0, x, SELU[0] * np.expm1(x)), dom=AWAY(), act_type="selu"),
    ),
    ("LeakyReLU-gelu", "LeakyReLU", C(GELU_REF, dom=U(-3, 3), act_type="gelu")),
    (
        "LeakyReLU-prelu",
        "LeakyReLU",
        C(lambda x, g: prelu_ref(x, g, (1, 3, 1)), X3, (3,), dom=(AWAY(), U(0.1, 0.9)), act_type="prelu"),
    ),
    (
        "LeakyReLU-prelu-one-slope",
        "LeakyReLU",
        C(lambda x, g: prelu_ref(x, g, (1, 1, 1)), X3, (1,), dom=(AWAY(), U(0.1, 0.9)), act_type="prelu"),
    ),
    (
        "LeakyReLU-prelu-batch-and-channel",
        "LeakyReLU",
        C(lambda x, g: prelu_ref(x, g, (2, 3, 1)), X3, (2, 3), dom=(AWAY(), U(0.1, 0.9)), act_type="prelu"),
    ),
    (
        "LeakyReLU-rrelu-prediction",
        "LeakyReLU",
        C(lambda x: np.where(x > 0, x, 0.3 * x), dom=AWAY(), act_type="rrelu", lower_bound=0.2, upper_bound=0.4),
    ),
    ("LeakyReLU-rrelu-training", "LeakyReLU", C(None, X3, dom=AWAY(), act_type="rrelu", training=True)),
    (
        "FullyConnected-no_bias-no_flatten",
        "FullyConnected",
        C(lambda x, w: x @ w.T, X3, (5, 4), num_hidden=5, no_bias=True, flatten=False, tol32=LOOSE32),
    ),
    (
        "Convolution-no_bias-default-stride",
        "Convolution",
        C(
            lambda x, w: conv_ref(x, w, None, (1, 1), (0, 0)),
            (2, 2, 4, 5),
            (3, 2, 2, 3),
            kernel=[2, 3],
            num_filter=3,
            no_bias=True,
            tol32=LOOSE32,
        ),
    ),
    (
        "im2col-pad_value",
        "im2col",
        C(
            lambda x: im2col_ref(x, (2, 2), (1, 2), (1, 1), -1.5),
            (1, 2, 3, 4),
            kernel=[2],
            stride=[1, 2],
            pad=[1],
            pad_value=-1.5,
        ),
    ),
    (
        "Pooling-avg-pad",
        "Pooling",
        C(
            lambda x: pool_ref(x, "avg", (2, 2), (2, 2), (1, 1)),
            (2, 2, 5, 4),
            kernel=[2, 2],
            stride=[2, 2],
            pad=[1, 1],
            pool_type="avg",
        ),
    ),
    (
        "Convolution-groups",
        "Convolution",
        C(
            lambda x, w, b: conv_ref(x, w, b, (2, 1), (1, 0), groups=2),
            (2, 4, 5, 4),
            (6, 2, 3, 2),
            (6,),
            kernel=[3, 2],
            stride=[2, 1],
            pad=[1, 0],
            num_filter=6,
            num_group=2,
            tol32=LOOSE32,
        ),
    ),
    (
        "Convolution-dilate",
        "Convolution",
        C(
            lambda x, w, b: conv_ref(x, w, b, (1, 2), (2, 1), groups=2, dilate=(2, 3)),
            (2, 4, 7, 8),
            (4, 2, 3, 2),
            (4,),
            kernel=[3, 2],
            stride=[1, 2],
            dilate=[2, 3],
            pad=[2, 1],
            num_filter=4,
            num_group=2,
            tol32=LOOSE32,
        ),
    ),
    (
        "im2col-dilate",
        "im2col",
        C(
            lambda x: im2col_ref(x, (2, 3), (2, 1), (1, 0), dilate=(3, 2)),
            (2, 2, 6, 7),
            kernel=[2, 3],
            stride=[2, 1],
            dilate=[3, 2],
            pad=[1, 0],
        ),
    ),
    (
        "col2im-dilate",
        "col2im",
        C(
            lambda c: col2im_ref(c, (2, 2, 6, 7), (2, 3), (2, 1), (1, 0), dilate=(3, 2)),
            (2, 12, 9),
            output_size=[6, 7],
            kernel=[2, 3],
            stride=[2, 1],
            dilate=[3, 2],
            pad=[1, 0],
        ),
    ),
    (  # 1-D data (N, C, W), as MXNet's: the 2-D op on (N, C, 1, W)
        "Convolution-1d",
        "Convolution",
        C(
            lambda x, w, b: conv_ref(x[:, :, None], w[:, :, None], b, (1, 2), (0, 1), groups=2, dilate=(1, 2))[:, :, 0],
            (2, 4, 11),
            (6, 2, 3),
            (6,),
            kernel=[3],
            stride=[2],
            dilate=[2],
            pad=[1],
            num_filter=6,
            num_group=2,
            tol32=LOOSE32,
        ),
    ),
    (
        "Deconvolution-1d",
        "Deconvolution",
        C(
            lambda x, w: deconv_ref(x[:, :, None], w[:, :, None], None, (1, 2), (0, 1), (0, 1))[:, :, 0],
            (2, 3, 5),
            (3, 2, 3),
            kernel=[3],
            stride=[2],
            pad=[1],
            adj=[1],
            num_filter=2,
            tol32=LOOSE32,
        ),
    ),
    (  # (MXNet's default build's values; its build without MKLDNN computes another forward)
        "Deconvolution-dilate",
        "Deconvolution",
        C(
            lambda x, w, b: deconv_ref(x, w, b, (2, 1), (1, 2), (1, 0), groups=2, dilate=(2, 3)),
            (2, 4, 3, 4),
            (4, 2, 3, 2),
            (4,),
            kernel=[3, 2],
            stride=[2, 1],
            dilate=[2, 3],
            pad=[1, 2],
            adj=[1, 0],
            num_filter=4,
            num_group=2,
            no_bias=False,
            tol32=LOOSE32,
        ),
    ),
    (
        "Pooling-1d-max",
        "Pooling",
        C(
            lambda x: pool_ref(x[:, :, None], "max", (1, 3), (1, 2), (0, 1))[:, :, 0],
            (2, 3, 9),
            dom=DISTINCT,
            kernel=[3],
            stride=[2],
            pad=[1],
        ),
    ),
    (
        "Pooling-1d-avg",
        "Pooling",
        C(
            lambda x: pool_ref(x[:, :, None], "avg", (1, 3), (1, 2), (0, 1), count_include_pad=False)[:, :, 0],
            (2, 3, 9),
            kernel=[3],
            stride=[2],
            pad=[1],
            pool_type="avg",
            count_include_pad=False,
        ),
    ),
    (
        "Pooling-1d-global",
        "Pooling",
        C(lambda x: x.sum(axis=2, keepdims=True), (2, 3, 9), global_pool=True, pool_type="sum"),
    ),
    (
        "im2col-1d",
        "im2col",
        C(
            lambda x: im2col_ref(x[:, :, None], (1, 3), (1, 2), (0, 2), dilate=(1, 2)),
            (2, 3, 9),
            kernel=[3],
            stride=[2],
            dilate=[2],
            pad=[2],
        ),
    ),
    (
        "col2im-1d",
        "col2im",
        C(
            lambda c: col2im_ref(c, (2, 3, 1, 9), (1, 3), (1, 2), (0, 2), dilate=(1, 2))[:, :, 0],
            (2, 9, 5),
            output_size=[9],
            kernel=[3],
            stride=[2],
            dilate=[2],
            pad=[2],
        ),
    ),
    (  # (ours: the windows as im2col's 6-D view of them, which Pooling's gradient hands over)
        "col2im-windows",
        "col2im",
        C(lambda c: col2im_ref(c, (2, 3, 5, 6), (3, 2), (2, 1), (1, 0)), (2, 3, 3, 2, 3, 5), output_size=[5, 6], **WIN),
    ),
    (
        "Convolution-depthwise",
        "Convolution",
        C(
            lambda x, w: conv_ref(x, w, None, (1, 1), (1, 1), groups=3),
            (1, 3, 4, 4),
            (3, 1, 2, 2),
            kernel=[2, 2],
            pad=[1, 1],
            num_filter=3,
            num_group=3,
            no_bias=True,
            tol32=LOOSE32,
        ),
    ),
    (
        "Deconvolution-default-no_bias",
        "Deconvolution",
        C(lambda x, w: deconv_ref(x, w, None, (1, 1), (0, 0)), (2, 3, 3, 4), (3, 2, 2, 3), kernel=[2, 3], num_filter=2),
    ),
    (
        "Deconvolution-groups-target_shape",
        "Deconvolution",
        C(
            # target (6, 8) from (3, 3) at stride (2, 3), kernel (4, 3): of (8, 9), pads (1, 1), adj (0, 1)
            lambda x, w, b: deconv_ref(x, w, b, (2, 3), (1, 1), (0, 1), groups=2),
            (2, 4, 3, 3),
            (4, 3, 4, 3),
            (6,),
            kernel=[4, 3],
            stride=[2, 3],
            pad=[7, 7],
            target_shape=[6, 8],
            num_filter=6,
            num_group=2,
            no_bias=False,
            tol32=LOOSE32,
        ),
    ),
    (
        "Pooling-avg-pad-count_include_pad-false",
        "Pooling",
        C(
            lambda x: pool_ref(x, "avg", (3, 2), (2, 1), (1, 1), count_include_pad=False),
            (2, 2, 5, 4),
            kernel=[3, 2],
            stride=[2, 1],
            pad=[1, 1],
            pool_type="avg",
            count_include_pad=False,
        ),
    ),
    # MXNet's full convention (ceil): windows past the padded data's end are cut there
    (
        "Pooling-full-max",
        "Pooling",
        C(
            lambda x: pool_full_ref(x, "max", (2, 3), (2, 2), (0, 1)),
            (2, 2, 5, 6),
            dom=DISTINCT,
            kernel=[2, 3],
            stride=[2, 2],
            pad=[0, 1],
            pooling_convention="full",
        ),
    ),
    (
        "Pooling-full-avg-pad",
        "Pooling",
        C(
            lambda x: pool_full_ref(x, "avg", (3, 3), (2, 2), (1, 1)),
            (2, 2, 5, 6),
            kernel=[3, 3],
            stride=[2, 2],
            pad=[1, 1],
            pool_type="avg",
            pooling_convention="full",
        ),
    ),
    (
        "Pooling-full-avg-count_include_pad-false",
        "Pooling",
        C(
            lambda x: pool_full_ref(x, "avg", (3, 3), (3, 3), (1, 1), count_include_pad=False),
            (1, 2, 5, 5),
            kernel=[3, 3],
            stride=[3, 3],
            pad=[1, 1],
            pool_type="avg",
            count_include_pad=False,
            pooling_convention="full",
        ),
    ),
    (
        "Pooling-full-1d-avg",
        "Pooling",
        C(
            lambda x: pool_full_ref(x, "avg", (2,), (2,), (0,)),
            (2, 2, 7),
            kernel=[2],
            stride=[2],
            pool_type="avg",
            pooling_convention="full",
        ),
    ),
    (
        "Pooling-full-1d-sum",
        "Pooling",
        C(
            lambda x: pool_full_ref(x, "sum", (3,), (2,), (1,)),
            (2, 2, 6),
            kernel=[3],
            stride=[2],
            pad=[1],
            pool_type="sum",
            pooling_convention="full",
        ),
    ),
    (
        "Pooling-full-3d-avg",
        "Pooling",
        C(
            lambda x: pool_full_ref(x, "avg", (2, 2, 2), (3, 3, 3), (0, 0, 0)),
            (1, 2, 4, 5, 5),
            kernel=[2, 2, 2],
            stride=[3, 3, 3],
            pool_type="avg",
            pooling_convention="full",
        ),
    ),
    (
        "Pooling-full-3d-max",
        "Pooling",
        C(
            lambda x: pool_full_ref(x, "max", (3, 3, 3), (2, 2, 2), (1, 1, 1)),
            (1, 2, 4, 5, 4),
            dom=DISTINCT,
            kernel=[3, 3, 3],
            stride=[2, 2, 2],
            pad=[1, 1, 1],
            pooling_convention="full",
        ),
    ),
    # lp pooling: (sum of x ** p) ** (1 / p), signed for odd p
    (
        "Pooling-lp-1",
        "Pooling",
        C(
            lambda x: pool_ref(x, "sum", (2, 2), (2, 1), (0, 1)),
            IMG,
            kernel=[2, 2],
            stride=[2, 1],
            pad=[0, 1],
            pool_type="lp",
            p_value=1,
        ),
    ),
    (
        "Pooling-lp-2",
        "Pooling",
        C(lambda x: np.sqrt(pool_ref(x**2, "sum", (3, 2), (2, 1), (1, 0))), IMG, pool_type="lp", p_value=2, **WIN),
    ),
    (
        "Pooling-lp-3",
        "Pooling",
        C(
            lambda x: np.cbrt(pool_ref(x**3, "sum", (2, 2), (2, 2), (0, 0))),
            (2, 2, 4, 6),
            dom=U(0.5, 2.0),
            kernel=[2, 2],
            stride=[2, 2],
            pool_type="lp",
            p_value=3,
        ),
    ),
    (
        "Pooling-lp-2-full-1d",
        "Pooling",
        C(
            lambda x: np.sqrt(pool_full_ref(x**2, "sum", (3,), (2,), (1,))),
            (2, 2, 6),
            kernel=[3],
            stride=[2],
            pad=[1],
            pool_type="lp",
            p_value=2,
            pooling_convention="full",
        ),
    ),
    (
        "Pooling-lp-3-3d",
        "Pooling",
        C(
            lambda x: np.cbrt(pool_full_ref(x**3, "sum", (2, 2, 2), (2, 2, 2), (0, 0, 0))),
            (1, 2, 4, 4, 4),
            dom=U(0.5, 2.0),
            kernel=[2, 2, 2],
            stride=[2, 2, 2],
            pool_type="lp",
            p_value=3,
        ),
    ),
    (
        "Pooling-avg-windows-all-padding",
        "Pooling",
        C(
            lambda x: pool_ref(x, "avg", (2, 2), (1, 1), (2, 1), count_include_pad=False),
            (1, 2, 3, 3),
            kernel=[2, 2],
            pad=[2, 1],
            pool_type="avg",
            count_include_pad=False,
        ),
    ),
    (
        "Pad-edge-5d",
        "Pad",
        C(
            lambda x: np.pad(x, ((0, 0), (0, 0), (1, 0), (2, 3), (0, 1)), mode="edge"),
            (1, 2, 2, 2, 3),
            mode="edge",
            pad_width=[0, 0, 0, 0, 1, 0, 2, 3, 0, 1],
        ),
    ),
    (
        "Pad-reflect",
        "Pad",
        C(
            lambda x: np.pad(x, ((0, 0), (0, 0), (2, 1), (3, 2)), mode="reflect"),
            (2, 1, 3, 4),
            mode="reflect",
            pad_width=[0, 0, 0, 0, 2, 1, 3, 2],
        ),
    ),
    (
        "pad_grad-edge-5d",
        "pad_grad",
        C(
            lambda g: pad_grad_ref(g, "edge", (0, 0, 0, 0, 1, 2, 0, 0, 2, 1)),
            (1, 2, 4, 2, 4),
            mode="edge",
            pad_width=[0, 0, 0, 0, 1, 2, 0, 0, 2, 1],
        ),
    ),
    (
        "pad_grad-constant",
        "pad_grad",
        C(lambda g: g[:, :, 1:3, 2:3], (2, 1, 4, 4), mode="constant", pad_width=[0, 0, 0, 0, 1, 1, 2, 1]),
    ),
    (
        "Pooling-sum",
        "Pooling",
        C(
            lambda x: pool_ref(x, "sum", (3, 3), (1, 2), (0, 0)),
            (1, 2, 5, 7),
            kernel=[3],
            stride=[1, 2],
            pool_type="sum",
        ),
    ),
    (
        "Pooling-global-max",
        "Pooling",
        C(lambda x: x.max(axis=(2, 3), keepdims=True), (2, 3, 4, 3), dom=DISTINCT, global_pool=True),
    ),
    (
        "Pooling-global-avg",
        "Pooling",
        C(lambda x: x.mean(axis=(2, 3), keepdims=True), (2, 3, 4, 3), global_pool=True, pool_type="avg"),
    ),
    (
        "LayerNorm-axis1-eps",
        "LayerNorm",
        C(lambda x, g, b: ln_ref(x, g, b, 1, 0.1), X3, (3,), (3,), dom=(DISTINCT, SMOOTH, SMOOTH), axis=1, eps=0.1),
    ),
    ("cumsum-flat", "cumsum", C(lambda x: np.cumsum(x), X3)),
    (
        "cumsum-float64",
        "cumsum",
        C(lambda x: np.cumsum(x, axis=-1, dtype=np.float64), X3, out="float64", axis=-1, dtype="float64"),
    ),
    ("diag-of-a-vector", "diag", C(lambda x: np.diag(x, -2), (3,), k=-2)),
    ("diag-2d-below", "diag", C(lambda x: np.diagonal(x, -1), (4, 3), k=-1)),
    (
        "L2Normalization-channel",
        "L2Normalization",
        C(lambda x: x / np.sqrt((x * x).sum(axis=1, keepdims=True) + 1e-10), X3, mode="channel"),
    ),
    (
        "L2Normalization-spatial",
        "L2Normalization",
        C(lambda x: x / np.sqrt((x * x).sum(axis=(2, 3), keepdims=True) + 0.5), IMG, mode="spatial", eps=0.5),
    ),
    ("LayerNorm-1d", "LayerNorm", C(ln_ref, (5,), (5,), (5,), dom=(DISTINCT, SMOOTH, SMOOTH))),
    (
        "BatchNorm-train",
        "BatchNorm",
        bn_case((4, 3, 2, 2), {"fix_gamma": False, "train": True}, training=True, fix_gamma=False),
    ),
    (
        "BatchNorm-train-fix_gamma-last-axis",
        "BatchNorm",
        bn_case((5, 2, 3), {"eps": 1e-5, "train": True, "axis": -1}, training=True, axis=-1, eps=1e-5),
    ),
    (
        "BatchNorm-use_global_stats",
        "BatchNorm",
        bn_case((4, 3, 2), {"fix_gamma": False}, training=True, fix_gamma=False, use_global_stats=True),
    ),
    ("Dropout-predict", "Dropout", C(np.copy, (4, 5), p=0.5)),
    ("Dropout-p0-training", "Dropout", C(np.copy, (4, 5), training=True, p=0.0)),
    ("Dropout-always-axes", "Dropout", C(None, (6, 4, 3), p=0.5, mode="always", axes=[1])),
    ("sort-ascend", "sort", C(lambda x: np.sort(x, axis=-1), X3, dom=DISTINCT)),
    # axis None: the flattened array, as MXNet's (k below 1: all of it)
    ("sort-axis-none", "sort", C(lambda x: -np.sort(-x.ravel()), X3, dom=DISTINCT, axis=None, is_ascend=False)),
    (
        "argsort-axis-none",
        "argsort",
        C(lambda x: np.argsort(x.ravel()).astype(np.float32), X3, dom=DISTINCT, out="float32", axis=None),
    ),
    (
        "topk-axis-none-value",
        "topk",
        C(lambda x: topk_ref(x.ravel(), 0, 5, "value", False), X3, dom=DISTINCT, axis=None, k=5, ret_typ="value"),
    ),
    (
        "topk-axis-none-all-ascending",
        "topk",
        C(lambda x: np.sort(x.ravel()), X3, dom=DISTINCT, axis=None, k=0, is_ascend=True, ret_typ="value"),
    ),
    (
        "topk-axis-none-mask",
        "topk",
        C(
            lambda x: topk_ref(x.ravel(), 0, 4, "mask", False).reshape(x.shape),
            X3,
            dom=DISTINCT,
            no_grad=True,
            axis=None,
            k=4,
            ret_typ="mask",
        ),
    ),
    (
        "topk-axis-none-indices-int64",
        "topk",
        C(
            lambda x: topk_ref(x.ravel(), 0, 3, "indices", True).astype(np.int64),
            X3,
            dom=DISTINCT,
            out="int64",
            no_grad=True,
            axis=None,
            k=3,
            is_ascend=True,
            dtype="int64",
        ),
    ),
    ("topk-k-below-1-axis", "topk", C(lambda x: -np.sort(-x, axis=1), X3, dom=DISTINCT, axis=1, k=-1, ret_typ="value")),
    (
        "topk-ascend-axis0",
        "topk",
        C(lambda x: topk_ref(x, 0, 1, "value", True), X3, dom=DISTINCT, axis=0, k=1, is_ascend=True, ret_typ="value"),
    ),
    (
        "topk-indices",
        "topk",
        C(lambda x: topk_ref(x, -1, 3, "indices", False), X3, dom=DISTINCT, out="float32", no_grad=True, k=3),
    ),
    (
        "topk-mask",
        "topk",
        C(lambda x: topk_ref(x, 1, 2, "mask", False), X3, dom=DISTINCT, no_grad=True, axis=1, k=2, ret_typ="mask"),
    ),
    (
        "argmax-keepdims",
        "argmax",
        C(lambda x: x.argmax(axis=-1, keepdims=True).astype(x.dtype), X3, dom=DISTINCT, axis=-1, keepdims=True),
    ),
    (
        "argsort-descending-int32",
        "argsort",
        C(
            lambda x: np.argsort(-x, axis=-1).astype(np.int32),
            X3,
            dom=DISTINCT,
            out="int32",
            is_ascend=False,
            dtype="int32",
        ),
    ),
    (
        "pick-wrap-keepdims",
        "pick",
        C(
            lambda x, i: pick_ref(x, i, -1, True, "wrap"),
            X3,
            (2, 3, 1),
            dom=(SMOOTH, IDX(-6, 9)),
            nondiff=(1,),
            axis=-1,
            keepdims=True,
            mode="wrap",
        ),
    ),
    ("pick-1d", "pick", C(lambda x, i: pick_ref(x, i, 0), (4,), (1,), dom=(SMOOTH, IDX(0, 4)), nondiff=(1,), axis=0)),
    (
        "take-wrap-axis0",
        "take",
        C(lambda a, i: take_ref(a, i, 0, "wrap"), (3, 2), (4,), dom=(SMOOTH, IDX(-5, 8)), nondiff=(1,), mode="wrap"),
    ),
    (
        "take_grad-wrap-last-axis",
        "take_grad",
        C(
            lambda g, i: take_grad_ref(g, i, 1, "wrap", (2, 3)),
            (2, 2, 2),
            (2, 2),
            dom=(SMOOTH, IDX(-5, 8)),
            nondiff=(1,),
            axis=1,
            mode="wrap",
            shape=[2, 3],
        ),
    ),
    (
        "getitem-index-arrays",
        "getitem",
        C(getitem_arrays_ref, (3, 4, 5), (2, 3), (3,), dom=(SMOOTH, IDX(-3, 3), IDX(0, 5)), nondiff=(1, 2), key=AKEY),
    ),
    (
        "scatter_key-index-arrays-repeated",
        "scatter_key",
        C(
            scatter_arrays_ref,
            (4, 3, 4),
            (4, 3),
            (3,),
            dom=(SMOOTH, IDX(0, 2), IDX(0, 5)),
            nondiff=(1, 2),
            shape=[3, 4, 5],
            key=AKEY,
        ),
    ),
    (
        "SequenceMask-axis1",
        "SequenceMask",
        C(
            lambda x, n: seqmask_ref(x, n, 1),
            (3, 4),
            (3,),
            dom=(SMOOTH, IDX(0, 5)),
            nondiff=(1,),
            use_sequence_length=True,
            axis=1,
        ),
    ),
    ("SequenceMask-no-lengths", "SequenceMask", C(np.copy, (4, 3), value=5.0)),
    (
        "batch_dot-ta",
        "batch_dot",
        C(lambda a, b: np.einsum("bji,bjk->bik", a, b), (2, 4, 3), (2, 4, 5), transpose_a=True),
    ),
    (
        "batch_dot-ta-tb",
        "batch_dot",
        C(lambda a, b: np.einsum("bji,bkj->bik", a, b), (2, 4, 3), (2, 5, 4), transpose_a=True, transpose_b=True),
    ),
    (
        "linalg_gemm2-ta",
        "linalg_gemm2",
        C(
            lambda a, b: -2 * np.einsum("cbji,cbjk->cbik", a, b),
            (2, 1, 4, 3),
            (2, 1, 4, 2),
            transpose_a=True,
            alpha=-2.0,
        ),
    ),
    ("repeat-flat", "repeat", C(lambda x: np.repeat(x, 3), (2, 3), repeats=3)),
    ("tile-short-reps", "tile", C(lambda x: np.tile(x, 2), X3, reps=[2])),
    ("squeeze-all", "squeeze", C(lambda x: x.reshape(2, 3), (1, 2, 1, 3))),
    ("squeeze-to-1d", "squeeze", C(lambda x: x.reshape(1), (1, 1))),
    ("concat-axis0-two", "concat", C(lambda a, b: np.concatenate([a, b]), (1, 3), (2, 3), dim=0)),
    ("concat-one", "concat", C(np.copy, X3, dim=-1)),
    ("stack-last-axis", "stack", C(lambda a, b: np.stack([a, b], axis=-1), X3, X3, axis=-1)),
    ("slice-negative-steps", "slice", C(lambda x: x[::-1, 2:0:-1], X3, begin=[None, 2], end=[None, 0], step=[-1, -1])),
    ("slice_axis-negative", "slice_axis", C(lambda x: x[..., -3:-1], X3, axis=-1, begin=-3, end=-1)),
    (
        "SoftmaxOutput-multi-batch-smoothed",
        "SoftmaxOutput",
        C(
            lambda x, lab: softmax_ref(x, 1),
            (2, 3, 2, 2),
            (2, 2, 2),
            dom=(SMOOTH, IDX(0, 3)),
            nondiff=(1,),
            multi_output=True,
            normalization="batch",
            smooth_alpha=0.2,  # (not applied with multi_output, as MXNet)
            grad_scale=3.0,
            designed=lambda x, lab: (
                3.0 * (softmax_ref(x, 1) - one_hot_ref(lab, 3, 1.0, 0.0).transpose(0, 3, 1, 2)) / 8,
                None,
            ),
        ),
    ),
    (
        "SoftmaxOutput-probabilities",
        "SoftmaxOutput",
        C(
            lambda x, lab: softmax_ref(x, -1),
            (3, 4),
            (3, 4),
            nondiff=(1,),
            normalization="batch",  # (neither normalised, smoothed nor ignored, as MXNet)
            smooth_alpha=0.1,
            use_ignore=True,
            grad_scale=2.0,
            designed=lambda x, lab: (2.0 * (softmax_ref(x, -1) - lab), None),
        ),
    ),
    (
        "SoftmaxOutput-valid-ignored",
        "SoftmaxOutput",
        C(
            lambda x, lab: softmax_ref(x, -1),
            (2, 4, 3),
            (2, 4),
            dom=(SMOOTH, IDX(0, 3)),
            nondiff=(1,),
            preserve_shape=True,
            use_ignore=True,
            ignore_label=1.0,
            normalization="valid",
            designed=lambda x, lab: (
                np.where((lab != 1)[..., None], softmax_ref(x, -1) - one_hot_ref(lab, 3, 1.0, 0.0), 0.0)
                / max(1, int((lab != 1).sum())),
                None,
            ),
        ),
    ),
    (
        "MAERegressionOutput-scaled",
        "MAERegressionOutput",
        C(
            lambda x, lab: x,
            (2, 5),
            (2, 5),
            dom=(AWAY(), SMOOTH),
            nondiff=(1,),
            grad_scale=2.5,
            designed=lambda x, lab: (2.5 * np.sign(x - lab) / 5, None),
        ),
    ),
    ("SequenceLast-whole-axis1", "SequenceLast", C(lambda x: x[:, -1], (3, 4, 2), axis=1)),
    (  # channels last: each 2 x 2 block's maximum, per channel (distinct data: no ties)
        "Pooling-NHWC",
        "Pooling",
        C(
            lambda x: x.reshape(2, 2, 2, 3, 2, 3).max((2, 4)),
            (2, 4, 6, 3),
            dom=DISTINCT,
            kernel=[2, 2],
            stride=[2, 2],
            layout="NHWC",
        ),
    ),
    (  # a window of 3 about each step, zeros past the ends counted: the sum over 3
        "Pooling-NWC-avg",
        "Pooling",
        C(
            lambda x: (
                (np.pad(x, ((0, 0), (1, 1), (0, 0)))[:, :-2] + x + np.pad(x, ((0, 0), (1, 1), (0, 0)))[:, 2:]) / 3
            ),
            (2, 5, 3),
            kernel=[3],
            pad=[1],
            pool_type="avg",
            layout="NWC",
        ),
    ),
    (
        "contrib_box_nms_grad-gather",
        "contrib_box_nms_grad",
        C(
            lambda g, x: nms_grad_ref(g, gather=True),
            (2, 5, 6),
            (2, 5, 6),
            dom=(SMOOTH, lambda rng, s: NMS_BOXES.copy()),
            gather=True,
            **NMS_AT,
        ),
    ),
    ("SequenceReverse-whole", "SequenceReverse", C(lambda x: x[::-1], (4, 3))),
    ("slice_like-all-axes", "slice_like", C(lambda x, like: x[:1, :2, :2], X3, (1, 2, 2), nondiff=(1,))),
    (
        "MakeLoss-batch",
        "MakeLoss",
        C(lambda x: x, (4, 3), normalization="batch", designed=lambda x: (np.ones_like(x) / 4,)),
    ),
    (
        "MakeLoss-valid",
        "MakeLoss",
        C(
            lambda x: x,
            (4, 3),
            normalization="valid",
            valid_thresh=0.5,
            grad_scale=2.0,
            designed=lambda x: (2.0 * np.ones_like(x) / max(1, int((x > 0.5).sum())),),
        ),
    ),
    (
        "where-scalar-condition",
        "where",
        C(lambda c, x, y: np.where(c != 0, x, y), (1,), (2, 3), (2, 3), dom=(BOOL, SMOOTH, SMOOTH), nondiff=(0,)),
    ),
    # linear algebra
    ("linalg_slogdet-one", "linalg_slogdet", C(lambda a: np.stack(np.linalg.slogdet(a))[:, None], (3, 3), dom=LA_DOM)),
    ("linalg_gelqf-square", "linalg_gelqf", C(lambda a: gelqf_ref(a), (3, 3), dom=LA_WIDE)),
    ("linalg_syevd-one", "linalg_syevd", C(lambda a: syevd_ref(a), (4, 4), dom=LA_APART)),
    (
        "linalg_gemm-ta-tb-rank4",
        "linalg_gemm",
        C(
            lambda a, b, c: np.einsum("xyji,xykj->xyik", a, b) + c,
            (2, 1, 4, 3),
            (2, 1, 5, 4),
            (2, 1, 3, 5),
            transpose_a=True,
            transpose_b=True,
        ),
    ),
    ("linalg_gemm-2d", "linalg_gemm", C(lambda a, b, c: a @ b + c, (3, 4), (4, 2), (3, 2))),
    ("linalg_syrk-transpose", "linalg_syrk", C(lambda a: a.T @ a, (3, 4), transpose=True)),
    ("linalg_potrf-2d", "linalg_potrf", C(np.linalg.cholesky, (4, 4), dom=LA_SPD)),
    (
        "linalg_potri-rank4",
        "linalg_potri",
        C(lambda a: np.linalg.inv(np.tril(a) @ np.tril(a).swapaxes(-1, -2)), (2, 1, 3, 3), dom=LA_DOM),
    ),
    (
        "linalg_trsm-transpose",
        "linalg_trsm",
        C(
            lambda a, b: np.linalg.inv(np.tril(a).swapaxes(-1, -2)) @ b,
            (2, 3, 3),
            (2, 3, 2),
            dom=(LA_DOM, SMOOTH),
            transpose=True,
        ),
    ),
    (
        "linalg_trsm-rightside-upper",
        "linalg_trsm",
        C(
            lambda a, b: -b @ np.linalg.inv(np.triu(a)),
            (2, 3, 3),
            (2, 4, 3),
            dom=(LA_DOM, SMOOTH),
            rightside=True,
            lower=False,
            alpha=-1.0,
        ),
    ),
    (
        "linalg_trsm-rightside-transpose",
        "linalg_trsm",
        C(
            lambda a, b: b @ np.linalg.inv(np.tril(a).T),
            (3, 3),
            (4, 3),
            dom=(LA_DOM, SMOOTH),
            rightside=True,
            transpose=True,
        ),
    ),
    ("linalg_trsm-alpha-0", "linalg_trsm", C(lambda a, b: 0 * b, (3, 3), (3, 2), dom=(LA_DOM, SMOOTH), alpha=0.0)),
    (
        "linalg_trmm-transpose-upper",
        "linalg_trmm",
        C(lambda a, b: np.triu(a).swapaxes(-1, -2) @ b, (2, 3, 3), (2, 3, 2), transpose=True, lower=False),
    ),
    (
        "linalg_trmm-rightside",
        "linalg_trmm",
        C(lambda a, b: 2.0 * b @ np.tril(a), (2, 3, 3), (2, 4, 3), rightside=True, alpha=2.0),
    ),
    (
        "linalg_trmm-rightside-transpose-upper",
        "linalg_trmm",
        C(lambda a, b: b @ np.triu(a).T, (3, 3), (4, 3), rightside=True, transpose=True, lower=False),
    ),
    ("linalg_sumlogdiag-2d", "linalg_sumlogdiag", C(lambda a: mx1d(np.log(np.diagonal(a)).sum()), (3, 3), dom=LA_DOM)),
    ("linalg_extractdiag-below-2d", "linalg_extractdiag", C(lambda a: np.diagonal(a, -2), (4, 4), offset=-2)),
    (
        "linalg_makediag-above",
        "linalg_makediag",
        C(lambda x: np.apply_along_axis(np.diag, -1, x, 2), (2, 1, 3), offset=2),
    ),
    ("linalg_makediag-1d", "linalg_makediag", C(np.diag, (3,))),
    ("linalg_extracttrian-lower", "linalg_extracttrian", C(lambda a: a[..., np.tri(3, 3, 0, bool)], (2, 3, 3))),
    (
        "linalg_extracttrian-below",
        "linalg_extracttrian",
        C(lambda a: a[..., np.tri(4, 4, -2, bool)], (4, 4), offset=-2),
    ),
    (
        "linalg_extracttrian-above",
        "linalg_extracttrian",
        C(lambda a: a.swapaxes(-1, -2)[..., np.tri(4, 4, -1, bool)], (2, 4, 4), offset=1),
    ),
    (
        "linalg_maketrian-upper",
        "linalg_maketrian",
        C(
            lambda x: np.einsum(
                "...t,tij->...ij", x, np.eye(9)[np.tri(3, 3, 0, bool).ravel()].reshape(6, 3, 3)
            ).swapaxes(-1, -2),
            (2, 6),
            lower=False,
        ),
    ),
    (
        "linalg_maketrian-above",
        "linalg_maketrian",
        C(
            lambda x: np.einsum(
                "...t,tij->...ij", x, np.eye(25)[np.tri(5, 5, -2, bool).ravel()].reshape(6, 5, 5)
            ).swapaxes(-1, -2),
            (6,),
            offset=2,
        ),
    ),
    (
        "linalg_maketrian-lower-1d",
        "linalg_maketrian",
        C(lambda x: np.einsum("t,tij->ij", x, np.eye(4)[np.tri(2, 2, 0, bool).ravel()].reshape(3, 2, 2)), (3,)),
    ),
    ("linalg_inverse-2d", "linalg_inverse", C(np.linalg.inv, (4, 4), dom=LA_DOM)),
    ("linalg_det-2d", "linalg_det", C(lambda a: mx1d(np.linalg.det(a)), (3, 3), dom=LA_DOM)),
    (
        "linalg_det-rank4-negative",
        "linalg_det",
        C(np.linalg.det, (2, 2, 3, 3), dom=lambda rng, s: LA_DOM(rng, s)[..., ::-1, :]),
    ),
    # image and normalization layers
    (  # an even nsize sums nsize - 1 channels (MXNet's oneDNN kernel), divided by nsize
        "LRN-even-nsize-2d",
        "LRN",
        C(
            lambda x: (
                x * (1.0 + 2.0 / 4 * np.stack([(x[:, max(c - 1, 0) : c + 2] ** 2).sum(1) for c in range(5)], 1)) ** -0.3
            ),
            (3, 5),
            nsize=4,
            alpha=2.0,
            beta=0.3,
            knorm=1.0,
        ),
    ),
    (  # a window wider than the channels: all of them
        "LRN-window-past-channels",
        "LRN",
        C(lambda x: x * (2.0 + 1.0 / 9 * (x**2).sum(1, keepdims=True)) ** -0.75, (2, 3, 2, 2), nsize=9, alpha=1.0),
    ),
    (
        "UpSampling-nearest-sum-three",
        "UpSampling",
        C(
            lambda a, b, c: a.repeat(2, 2).repeat(2, 3) + b.repeat(4, 2).repeat(4, 3) + c,
            (2, 3, 2, 2),
            (2, 3, 1, 1),
            (2, 3, 4, 4),
            scale=2,
            sample_type="nearest",
            multi_input_mode="sum",
        ),
    ),
    (
        "UpSampling-nearest-one",
        "UpSampling",
        C(lambda x: x.repeat(3, 2).repeat(3, 3), (1, 2, 2, 3), scale=3, sample_type="nearest"),
    ),
    (  # a Deconvolution: a filter per channel, kernel 2 * scale - scale % 2, stride scale, pad ceil((scale - 1) / 2)
        "UpSampling-bilinear",
        "UpSampling",
        C(
            lambda x, w: deconv_ref(x, w, None, (3, 3), (1, 1), groups=2),
            (2, 2, 2, 3),
            (2, 1, 5, 5),
            scale=3,
            sample_type="bilinear",
            num_filter=2,
            tol32=LOOSE32,
        ),
    ),
    (
        "GroupNorm-4d-eps",
        "GroupNorm",
        C(
            lambda x, gm, bt: (
                (lambda z: (z - z.mean(2, keepdims=True)) / np.sqrt(z.var(2, keepdims=True) + 0.1))(x.reshape(2, 3, 8))
                * gm[None, :, None]
                + bt[None, :, None]
            ).reshape(x.shape),
            (2, 6, 2, 2),
            (3,),
            (3,),
            dom=(DISTINCT, SMOOTH, SMOOTH),
            num_groups=3,
            eps=0.1,
        ),
    ),
    (
        "GroupNorm-one-group",
        "GroupNorm",
        C(
            lambda x, gm, bt: (
                (x - x.mean((1, 2), keepdims=True)) / np.sqrt(x.var((1, 2), keepdims=True) + 1e-5) * gm + bt
            ),
            (3, 2, 2),
            (1,),
            (1,),
            dom=(DISTINCT, SMOOTH, SMOOTH),
        ),
    ),
    (  # the size of crop_like's axes 2 and 3, in the middle (rounded down); crop_like takes no gradient
        "Crop-like-center",
        "Crop",
        C(lambda x, like: x[:, :, 1:4, 1:3], (2, 3, 5, 4), (1, 1, 3, 2), nondiff=(1,), center_crop=True, offset=[2, 2]),
    ),
    ("SoftmaxActivation-channel", "SoftmaxActivation", C(lambda x: softmax_ref(x, 1), (2, 3, 2, 2), mode="channel")),
    (
        "SVMOutput-linear-3d",
        "SVMOutput",
        C(
            lambda x, lab: x,
            (2, 3, 4),
            (2, 3),
            dom=(GRID(1 / 8), IDX(0, 4)),
            nondiff=(1,),
            margin=0.5,
            regularization_coefficient=2.0,
            use_linear=True,
            designed=lambda x, lab: (
                np.where(one_hot_ref(lab, 4, 1.0, 0.0) == 1, -2.0 * (x < 0.5), 2.0 * (x > -0.5)),
                None,
            ),
        ),
    ),
    # index ops and densities
    (
        "batch_take-middle-axes-of-1",
        "batch_take",
        C(
            lambda a, i: take_ref(a.reshape(3, 2), i.reshape(3), 1, "clip").diagonal().reshape(3, 1),
            (3, 1, 2),
            (3, 1),
            dom=(SMOOTH, IDX(-1, 3)),
        ),
    ),
    ("khatri_rao-one", "khatri_rao", C(np.copy, (3, 2))),
    (
        "khatri_rao-two",
        "khatri_rao",
        C(lambda a, b: np.einsum("ik,jk->ijk", a, b).reshape(8, 1), (2, 1), (4, 1), num_args=2),
    ),
    (
        "ravel_multi_index-one-axis",
        "ravel_multi_index",
        C(lambda x: x[0], (1, 4), dom=IDX(-3, 9), zero_grad=True, shape=[6]),
    ),
    (
        "unravel_index-rank-2-data",
        "unravel_index",
        C(lambda x: np.stack([x // 7, x % 7]), (2, 2, 3), dom=IDX(0, 40), zero_grad=True, shape=[6, 7]),
    ),
    (
        "unravel_index-one-axis",
        "unravel_index",
        C(lambda x: x[None], (4,), dom=IDX(-3, 9), zero_grad=True, shape=[-1]),
    ),
    # indices of every axis: one element each
    (
        "scatter_nd-all-axes",
        "scatter_nd",
        C(
            lambda d, i: gather_nd_grad_ref(d, i, (3, 4)),
            (5,),
            (2, 5),
            dom=(SMOOTH, lambda rng, s: np.stack(np.unravel_index(rng.permutation(12)[:5], (3, 4))).astype(np.float64)),
            nondiff=(1,),
            shape=[3, 4],
        ),
    ),
    # (one row of indices: slices of the first axis)
    (
        "scatter_nd-rows",
        "scatter_nd",
        C(
            lambda d, i: gather_nd_grad_ref(d, i, (4, 3)),
            (2, 3),
            (1, 2),
            dom=(SMOOTH, lambda rng, s: rng.permutation(4)[:2].reshape(s) - 4.0 * rng.integers(0, 2, s)),
            nondiff=(1,),
            shape=[4, 3],
        ),
    ),
    (
        "all_finite-nan",
        "all_finite",
        C(lambda x: np.zeros(1), (2, 3), out="float32", dom=lambda rng, s: np.where(np.eye(*s), np.nan, 1.0)),
    ),
    (
        "all_finite-inf-no-init",
        "all_finite",
        C(
            lambda x: np.zeros(1),
            (4,),
            out="float32",
            dom=lambda rng, s: np.array([1, -np.inf, 2, 3.0]),
            init_output=False,
        ),
    ),
    ("all_finite-no-init", "all_finite", C(lambda x: np.ones(1), (4,), out="float32", init_output=False)),
    # the log-densities; sample of the parameters' own shape, or with two trailing axes
    (
        "random_pdf_uniform-log-trailing",
        "random_pdf_uniform",
        C(
            lambda x, lo, hi: np.broadcast_to(-np.log(hi - lo)[:, :, None, None], x.shape),
            (2, 1, 3, 2),
            (2, 1),
            (2, 1),
            dom=(U(-1, 1), U(-2, -1), U(1, 2)),
            nondiff=(0,),
            is_log=True,
        ),
    ),
    (
        "random_pdf_uniform-one-shape",
        "random_pdf_uniform",
        C(lambda x, lo, hi: 1 / (hi - lo), (4,), (4,), (4,), dom=(U(-1, 1), U(-2, -1), U(1, 2)), nondiff=(0,)),
    ),
    (
        "random_pdf_normal-log-trailing",
        "random_pdf_normal",
        C(
            lambda x, m, s: (
                -0.5 * ((x - m[..., None, None]) / s[..., None, None]) ** 2
                - np.log(np.sqrt(2 * np.pi) * s[..., None, None])
            ),
            (2, 3, 2, 2),
            (2, 3),
            (2, 3),
            dom=(SMOOTH, SMOOTH, POS),
            is_log=True,
        ),
    ),
    (
        "random_pdf_normal-one-shape",
        "random_pdf_normal",
        C(
            lambda x, m, s: np.exp(-0.5 * ((x - m) / s) ** 2) / (np.sqrt(2 * np.pi) * s),
            (4,),
            (4,),
            (4,),
            dom=(SMOOTH, SMOOTH, POS),
        ),
    ),
    (
        "random_pdf_gamma-log",
        "random_pdf_gamma",
        C(
            lambda x, a, b: a * np.log(b) + (a - 1) * np.log(x) - b * x - np.vectorize(math.lgamma)(a),
            (4,),
            (4,),
            (4,),
            dom=(POS, POS, POS),
            is_log=True,
        ),
    ),
    (
        "random_pdf_exponential-log-trailing",
        "random_pdf_exponential",
        C(
            lambda x, lam: np.log(lam)[:, None, None] - lam[:, None, None] * x,
            (3, 2, 2),
            (3,),
            dom=(POS, POS),
            is_log=True,
        ),
    ),
    (
        "random_pdf_poisson-log",
        "random_pdf_poisson",
        C(
            lambda x, lam: x * np.log(lam) - np.vectorize(math.lgamma)(x + 1) - lam,
            (4,),
            (4,),
            dom=(IDX(0, 6), POS),
            nondiff=(0,),
            is_log=True,
        ),
    ),
    (
        "random_pdf_negative_binomial-log-trailing",
        "random_pdf_negative_binomial",
        C(
            lambda x, k, p: (
                np.vectorize(math.lgamma)(x + k[:, None, None])
                - np.vectorize(math.lgamma)(x + 1)
                - np.vectorize(math.lgamma)(k)[:, None, None]
                + k[:, None, None] * np.log(p)[:, None, None]
                + x * np.log(1 - p)[:, None, None]
            ),
            (2, 2, 3),
            (2,),
            (2,),
            dom=(IDX(0, 6), POS, U(0.2, 0.8)),
            nondiff=(0,),
            is_log=True,
        ),
    ),
    (
        "random_pdf_generalized_negative_binomial-log",
        "random_pdf_generalized_negative_binomial",
        C(
            lambda x, mu, al: (
                np.vectorize(math.lgamma)(x + 1 / al)
                - np.vectorize(math.lgamma)(1 / al)
                - np.vectorize(math.lgamma)(x + 1)
                - np.log(1 + al * mu) / al
                + x * np.log(al * mu / (1 + al * mu))
            ),
            (4,),
            (4,),
            (4,),
            dom=(IDX(0, 6), POS, POS),
            nondiff=(0,),
            is_log=True,
        ),
    ),
    # 3-D windows (Convolution, Deconvolution, Pooling)
    (  # 3-D: each output depth a sum of 2-D convolutions of the data's depth slices
        "Convolution-3d",
        "Convolution",
        C(
            lambda x, w, b: (
                np.stack(
                    [
                        sum(
                            conv_ref(
                                np.pad(x, ((0, 0), (0, 0), (1, 1), (0, 0), (0, 0)))[:, :, o + i],
                                w[:, :, i],
                                None,
                                (2, 1),
                                (1, 0),
                            ).astype(np.float64)
                            for i in range(2)
                        )
                        for o in range(4)
                    ],
                    axis=2,
                )
                + b.reshape(1, -1, 1, 1, 1)
            ).astype(x.dtype),
            (2, 3, 3, 5, 4),
            (4, 3, 2, 3, 2),
            (4,),
            kernel=[2, 3, 2],
            stride=[1, 2, 1],
            pad=[1, 1, 0],
            num_filter=4,
            tol32=LOOSE32,
        ),
    ),
    (
        "Convolution-3d-groups-dilate",
        "Convolution",
        C(
            lambda x, w: np.stack(
                [
                    sum(
                        conv_ref(x[:, :, 2 * o + 2 * i], w[:, :, i], None, (1, 1), (1, 0), 2, (1, 2)).astype(np.float64)
                        for i in range(2)
                    )
                    for o in range(2)
                ],
                axis=2,
            ).astype(x.dtype),
            (1, 4, 5, 4, 5),
            (4, 2, 2, 2, 2),
            kernel=[2, 2, 2],
            stride=[2, 1, 1],
            pad=[0, 1, 0],
            dilate=[2, 1, 2],
            num_filter=4,
            num_group=2,
            no_bias=True,
            tol32=LOOSE32,
        ),
    ),
    (  # 3-D: each input depth slice's 2-D transposed convolution with each filter depth, put at stride
        "Deconvolution-3d",
        "Deconvolution",
        C(
            lambda x, w, b: (
                sum(
                    np.pad(
                        deconv_ref(x[:, :, d], w[:, :, i], None, (1, 2), (1, 0), (0, 1)).astype(np.float64)[:, :, None],
                        ((0, 0), (0, 0), (2 * d + i, 4 - 2 * d - i), (0, 0), (0, 0)),
                    )
                    for d in range(2)
                    for i in range(2)
                )[:, :, 1:4]
                + b.reshape(1, -1, 1, 1, 1)
            ).astype(x.dtype),
            (1, 4, 2, 3, 2),
            (4, 3, 2, 3, 2),
            (3,),
            kernel=[2, 3, 2],
            stride=[2, 1, 2],
            pad=[1, 1, 0],
            adj=[1, 0, 1],
            num_filter=3,
            no_bias=False,
            tol32=LOOSE32,
        ),
    ),
    (  # target_shape (3, 4, 3) of a largest (4, 4, 4): pad (1, 0, 1), adj (1, 0, 1)
        "Deconvolution-3d-groups-target_shape",
        "Deconvolution",
        C(
            lambda x, w: sum(
                np.pad(
                    deconv_ref(x[:, :, d], w[:, :, i], None, (2, 2), (0, 1), (0, 1), 2).astype(np.float64)[:, :, None],
                    ((0, 0), (0, 0), (2 * d + i, 4 - 2 * d - i), (0, 0), (0, 0)),
                )
                for d in range(2)
                for i in range(2)
            )[:, :, 1:4].astype(x.dtype),
            (1, 4, 2, 2, 2),
            (4, 1, 2, 2, 2),
            kernel=[2, 2, 2],
            stride=[2, 2, 2],
            target_shape=[3, 4, 3],
            num_filter=2,
            num_group=2,
            tol32=LOOSE32,
        ),
    ),
    (  # 3-D: the largest of the 2-D maxima of the window's depth slices (padding: -inf)
        "Pooling-3d-max",
        "Pooling",
        C(
            lambda x: np.stack(
                [
                    np.maximum(
                        *(
                            pool_ref(
                                np.pad(x, ((0, 0), (0, 0), (1, 1), (0, 0), (0, 0)), constant_values=-np.inf)[
                                    :, :, 2 * o + i
                                ],
                                "max",
                                (2, 3),
                                (1, 2),
                                (0, 1),
                            )
                            for i in range(2)
                        )
                    )
                    for o in range(3)
                ],
                axis=2,
            ),
            (2, 2, 4, 4, 5),
            dom=DISTINCT,
            kernel=[2, 2, 3],
            stride=[2, 1, 2],
            pad=[1, 0, 1],
        ),
    ),
    (  # the mean of the 2-D means (each over its elements inside) of the depth slices inside
        "Pooling-3d-avg-count_include_pad-false",
        "Pooling",
        C(
            lambda x: np.stack(
                [
                    sum(
                        pool_ref(x[:, :, j], "avg", (2, 3), (1, 2), (0, 1), count_include_pad=False).astype(np.float64)
                        for j in range(max(2 * o - 1, 0), min(2 * o + 1, 4))
                    )
                    / (min(2 * o + 1, 4) - max(2 * o - 1, 0))
                    for o in range(3)
                ],
                axis=2,
            ).astype(x.dtype),
            (2, 2, 4, 4, 5),
            kernel=[2, 2, 3],
            stride=[2, 1, 2],
            pad=[1, 0, 1],
            pool_type="avg",
            count_include_pad=False,
        ),
    ),
    (
        "Pooling-3d-sum",
        "Pooling",
        C(
            lambda x: sum(x[:, :, i : i + 2, :, j : j + 3 : 2] for i in range(2) for j in range(2)).sum(
                axis=3, keepdims=True
            ),
            (1, 2, 3, 2, 5),
            kernel=[2, 2, 2],
            stride=[1, 1, 2],
            pool_type="sum",
        ),
    ),
    (
        "Pooling-3d-global-avg",
        "Pooling",
        C(lambda x: x.mean(axis=(2, 3, 4), keepdims=True), (2, 3, 2, 3, 4), global_pool=True, pool_type="avg"),
    ),
    (
        "Pooling-3d-global-max",
        "Pooling",
        C(lambda x: x.max(axis=(2, 3, 4), keepdims=True), (2, 3, 2, 3, 4), dom=DISTINCT, global_pool=True),
    ),
    (  # (MXNet's 3-D im2col fails: "new and old shape do not match"; these are its 2-D columns' order)
        "im2col-3d",
        "im2col",
        C(
            lambda x: np.stack(
                [
                    np.pad(x, ((0, 0), (0, 0), (0, 0), (1, 1), (1, 1)))[:, :, a + i, 2 * b + j, c + 2 * k]
                    for i in range(2)
                    for j in range(2)
                    for k in range(2)
                    for a in range(2)
                    for b in range(3)
                    for c in range(3)
                ],
                axis=2,
            ).reshape(1, 16, 18),
            (1, 2, 3, 4, 3),
            kernel=[2, 2, 2],
            stride=[1, 2, 1],
            pad=[0, 1, 1],
            dilate=[1, 1, 2],
        ),
    ),
    (  # im2col's transpose: the matrix of im2col-3d's map, from the unit images
        "col2im-3d",
        "col2im",
        C(
            lambda cols: (
                (
                    np.stack(
                        [
                            np.stack(
                                [
                                    np.pad(e, ((0, 0), (0, 0), (0, 0), (1, 1), (1, 1)))[
                                        :, :, a + i, 2 * b + j, c + 2 * k
                                    ]
                                    for i in range(2)
                                    for j in range(2)
                                    for k in range(2)
                                    for a in range(2)
                                    for b in range(3)
                                    for c in range(3)
                                ],
                                axis=2,
                            ).reshape(-1)
                            for e in np.eye(72).reshape(72, 1, 2, 3, 4, 3)
                        ]
                    )
                    @ cols.reshape(-1).astype(np.float64)
                )
                .reshape(1, 2, 3, 4, 3)
                .astype(cols.dtype)
            ),
            (1, 16, 18),
            output_size=[3, 4, 3],
            kernel=[2, 2, 2],
            stride=[1, 2, 1],
            pad=[0, 1, 1],
            dilate=[1, 1, 2],
        ),
    ),
    # spatial sampling (ROIPooling, BilinearSampler, GridGenerator, SpatialTransformer, Correlation)
    (  # (a flow in pixels, added to each pixel's position and normalised by (W - 1) / 2, (H - 1) / 2)
        "GridGenerator-warp",
        "GridGenerator",
        C(
            lambda f: (f + np.stack(np.meshgrid(np.arange(4), np.arange(3)))) / np.array([1.5, 1.0])[:, None, None] - 1,
            (2, 2, 3, 4),
            transform_type="warp",
            target_shape=[7, 7],  # (a warp's output has the flow's shape)
        ),
    ),
    (  # (an image of one row: y is 0 at any grid value, the row below outside)
        "BilinearSampler-one-row",
        "BilinearSampler",
        C(
            CASES["BilinearSampler"].ref,
            (1, 2, 1, 4),
            (1, 2, 3, 2),
            dom=(
                SMOOTH,
                lambda rng, s: np.stack(
                    [
                        (rng.integers(-1, 4, (1, 3, 2)) + rng.uniform(0.15, 0.85, (1, 3, 2))) / 1.5 - 1,
                        rng.uniform(-2, 2, (1, 3, 2)),
                    ],
                    axis=1,
                ),
            ),
            cudnn_off=True,
        ),
    ),
    (  # (points up to twice as far out as the image: most outside, read as 0)
        "SpatialTransformer-zoom-out",
        "SpatialTransformer",
        C(
            CASES["SpatialTransformer"].ref,
            (1, 3, 3, 3),
            (1, 6),
            dom=(SMOOTH, lambda rng, s: np.array([1.9, 0.1, 0.05, -0.1, 2.1, 0.1]) + rng.uniform(-0.1, 0.1, s)),
            transform_type="affine",
            sampler_type="bilinear",
            target_shape=[3, 4],
        ),
    ),
    (  # (scale 0.5 and corners rounded half away from zero: (1, 3, 1, 13, 7) is x 2..7, y 1..4; a bin past the data)
        "ROIPooling-scaled-past-the-edge",
        "ROIPooling",
        C(
            lambda x, r: np.stack(
                [
                    np.stack(
                        [
                            np.stack(
                                [x[1, :, h0:h1, w0:w1].max((1, 2)) for w0, w1 in [(2, 4), (4, 6)]] + [np.zeros(2)], -1
                            )
                            for h0, h1 in [(1, 3), (3, 5)]
                        ],
                        -2,
                    )
                ]
            ),
            (2, 2, 5, 6),
            (1, 5),
            dom=(DISTINCT, lambda rng, s: np.array([[1.2, 3.0, 1.0, 13.0, 7.0]])),
            nondiff=(1,),
            pooled_size=[2, 3],
            spatial_scale=0.5,
        ),
    ),
    (  # (the mean of |data1 - data2| over the channels, data padded by 1: zeros past the edge)
        "Correlation-abs-padded",
        "Correlation",
        C(
            lambda a, b: (
                lambda p, q: np.stack(
                    [
                        np.abs(p[:, :, 1:5, 1:6] - q[:, :, 1 + dy : 5 + dy, 1 + dx : 6 + dx]).mean(1)
                        for dy in (-1, 0, 1)
                        for dx in (-1, 0, 1)
                    ],
                    1,
                )
            )(*(np.pad(v, ((0, 0), (0, 0), (1, 1), (1, 1))) for v in (a, b))),
            (2, 2, 4, 5),
            (2, 2, 4, 5),
            dom=(U(-2, 0), U(0, 2)),  # (data1 below data2 everywhere: no kink of |data1 - data2|)
            pad_size=1,
            is_multiply=False,
        ),
    ),
    (  # (a 3 x 3 window from each point (MXNet's CPU kernel), no displacement, data padded by 1)
        "Correlation-kernel-3",
        "Correlation",
        C(
            lambda a, b: (
                lambda q: (
                    sum(q[:, :, h : h + 4, w : w + 5] for h in range(3) for w in range(3)).sum(1, keepdims=True) / 18
                )
            )(np.pad(a * b, ((0, 0), (0, 0), (1, 1), (1, 1)))),
            (2, 2, 4, 5),
            (2, 2, 4, 5),
            kernel_size=3,
            max_displacement=0,
            pad_size=1,
        ),
    ),
    (  # (displacements -2, 0, 2 every second position: (2, 9, 2, 2) of 5 x 6 data padded by 1)
        "Correlation-strides",
        "Correlation",
        C(
            lambda a, b: (
                lambda p, q: np.stack(
                    [
                        (p[:, :, 2:5:2, 2:5:2] * q[:, :, 2 + dy : 5 + dy : 2, 2 + dx : 5 + dx : 2]).mean(1)
                        for dy in (-2, 0, 2)
                        for dx in (-2, 0, 2)
                    ],
                    1,
                )
            )(*(np.pad(v, ((0, 0), (0, 0), (1, 1), (1, 1))) for v in (a, b))),
            (2, 2, 5, 6),
            (2, 2, 5, 6),
            max_displacement=2,
            stride1=2,
            stride2=2,
            pad_size=1,
        ),
    ),
    (  # (data2's: data1 times g, into data2's displaced windows)
        "correlation_grad-data2",
        "correlation_grad",
        C(
            lambda g, a, b: (
                sum(
                    np.pad(
                        g[:, [3 * dy + dx + 4]] * a[:, :, 1:3, 1:4],
                        ((0, 0), (0, 0), (1 + dy, 1 - dy), (1 + dx, 1 - dx)),
                    )
                    for dy in (-1, 0, 1)
                    for dx in (-1, 0, 1)
                )
                / 2
            ),
            (2, 9, 2, 3),
            (2, 2, 4, 5),
            (2, 2, 4, 5),
            nondiff=(2,),
            which=1,
        ),
    ),
    (  # (absolute differences: g times the sign of data1 - data2, negated for data2)
        "correlation_grad-abs-data2",
        "correlation_grad",
        C(
            lambda g, a, b: (
                -sum(
                    np.pad(
                        g[:, [3 * dy + dx + 4]]
                        * np.where(a[:, :, 1:3, 1:4] >= b[:, :, 1 + dy : 3 + dy, 1 + dx : 4 + dx], 1, -1),
                        ((0, 0), (0, 0), (1 + dy, 1 - dy), (1 + dx, 1 - dx)),
                    )
                    for dy in (-1, 0, 1)
                    for dx in (-1, 0, 1)
                )
                / 2
            ),
            (2, 9, 2, 3),
            (2, 2, 4, 5),
            (2, 2, 4, 5),
            nondiff=(1, 2),
            which=1,
            is_multiply=False,
        ),
    ),
    (
        "correlation_sign_dot-data2",
        "correlation_sign_dot",
        C(
            lambda u, a, b: np.stack(
                [
                    (
                        u[:, :, 1 + dy : 3 + dy, 1 + dx : 4 + dx]
                        * np.where(a[:, :, 1:3, 1:4] >= b[:, :, 1 + dy : 3 + dy, 1 + dx : 4 + dx], 1, -1)
                    ).mean(1)
                    for dy in (-1, 0, 1)
                    for dx in (-1, 0, 1)
                ],
                1,
            ),
            (2, 2, 4, 5),
            (2, 2, 4, 5),
            (2, 2, 4, 5),
            nondiff=(1, 2),
            is_multiply=False,
            which=1,
        ),
    ),
    # CTCLoss, random_pdf_dirichlet, multi_all_finite
    (  # the blank last, both lengths (some labels longer than their data allow: MXNet's 0)
        "CTCLoss-last-lengths",
        "CTCLoss",
        C(
            lambda x, lab, dl, ll: ctc_ref(x, lab, dl, ll, blank="last")[0],
            (6, 4, 5),
            (4, 3),
            (4,),
            (4,),
            dom=(SMOOTH, IDX(0, 4), IDX(2, 7), IDX(0, 4)),
            nondiff=(1, 2, 3),
            use_data_lengths=True,
            use_label_lengths=True,
            blank_label="last",
        ),
    ),
    (
        "CTCLoss-data-lengths",
        "CTCLoss",
        C(
            lambda x, lab, dl: ctc_ref(x, lab, dl)[0],
            (7, 3, 3),
            (3, 4),
            (3,),
            dom=(SMOOTH, IDX(0, 3), IDX(1, 8)),
            nondiff=(1, 2),
            use_data_lengths=True,
        ),
    ),
    (  # one distribution (alpha (3,)) of 2 x 2 vectors, the log-density
        "random_pdf_dirichlet-log-one-alpha",
        "random_pdf_dirichlet",
        C(
            lambda x, a: ((a - 1) * np.log(x)).sum(-1) + math.lgamma(a.sum()) - np.vectorize(math.lgamma)(a).sum(),
            (2, 2, 3),
            (3,),
            dom=(U(0.1, 1.0), POS),
            is_log=True,
        ),
    ),
    (  # a vector of alpha's own shape: one density, shape (1,) (MXNet's)
        "random_pdf_dirichlet-one-vector",
        "random_pdf_dirichlet",
        C(
            lambda x, a: np.exp(
                ((a - 1) * np.log(x)).sum(keepdims=True) + math.lgamma(a.sum()) - np.vectorize(math.lgamma)(a).sum()
            ),
            (4,),
            (4,),
            dom=(U(0.1, 1.0), POS),
        ),
    ),
    (
        "histogram-edges-given",
        "histogram",
        C(
            lambda x, b: np.histogram(x, bins=b)[0],
            (4, 3),
            (5,),
            dom=(SMOOTH, lambda rng, s: np.sort(rng.uniform(-1.5, 1.5, s))),
            out="int64",
        ),
    ),
    (
        "broadcast_like-axes",
        "broadcast_like",
        C(lambda a, b: np.broadcast_to(a, (4, 2)), (1, 2), (3, 4), nondiff=(1,), lhs_axes=[0], rhs_axes=[-1]),
    ),
    (
        "reshape_like-range",
        "reshape_like",
        C(
            lambda a, b: a.reshape(3, 2, 7),
            (6, 7),
            (3, 2, 4),
            nondiff=(1,),
            lhs_begin=0,
            lhs_end=1,
            rhs_begin=0,
            rhs_end=2,
        ),
    ),
    (
        "reshape_like-negative-ends",
        "reshape_like",
        C(lambda a, b: a.reshape(2, 3, 2), (2, 6), (5, 3, 2), nondiff=(1,), lhs_begin=-1, rhs_begin=1),
    ),
    ("histogram-data-range", "histogram", C(lambda x: np.histogram(x, bins=3)[0], (7,), out="float32", bin_cnt=3)),
    (
        "histogram_edges-range",
        "histogram_edges",
        C(lambda x: np.linspace(-2, 3, 4), (2, 2), bin_cnt=3, range=[-2, 3]),
    ),
    (
        "multi_all_finite-nan",
        "multi_all_finite",
        C(
            lambda a, b, c: np.zeros(1, np.float32),
            (2, 3),
            (3,),
            (2, 2),
            dom=(SMOOTH, lambda rng, s: np.where(np.arange(3) == 1, np.nan, 1.0), SMOOTH),
            out="float32",
            num_arrays=3,
        ),
    ),
    # nd.contrib's
    (
        "contrib_isinf-infinities",
        "contrib_isinf",
        C(
            lambda x: np.array([[1, 1, 0], [0, 0, 0]], x.dtype),
            (2, 3),
            dom=lambda rng, s: np.array([[np.inf, -np.inf, np.nan], [0.0, 1.0, -2.0]]),
            zero_grad=True,
        ),
    ),
    (
        "contrib_allclose-close",
        "contrib_allclose",
        C(
            lambda a, b: np.array(1, np.uint8),
            (3,),
            (3,),
            dom=(lambda rng, s: np.array([1.0, np.nan, 1e3]), lambda rng, s: np.array([1.0, np.nan, 1e3 + 5e-3])),
            out="uint8",
            rtol=1e-5,
        ),
    ),
    (
        "contrib_arange_like-axis-repeat",
        "contrib_arange_like",
        C(lambda x: np.array([2.0, 2.0, 1.0]), (2, 3), zero_grad=True, start=2.0, step=-1.0, repeat=2, axis=-1),
    ),
    (
        "contrib_index_array-axes",
        "contrib_index_array",
        C(
            lambda x: np.stack(np.indices(x.shape)[[2, 0]], axis=-1),
            (2, 1, 3),
            out="int64",
            zero_grad=True,
            axes=[-1, 0],
        ),
    ),
    (
        "contrib_BilinearResize2D-unaligned-down",
        "contrib_BilinearResize2D",
        C(
            lambda x: separable_ref(x, resize_weights(6, 4, False), resize_weights(5, 2, False)),
            (1, 2, 6, 5),
            height=4,
            width=2,
            align_corners=False,
        ),
    ),
    (
        "contrib_BilinearResize2D-like",
        "contrib_BilinearResize2D",
        C(
            lambda x, like: separable_ref(x, resize_weights(4, 2), resize_weights(5, 8)),
            (2, 1, 4, 5),
            (3, 2, 8),
            mode="like",
            nondiff=(1,),
        ),
    ),
    (
        "contrib_BilinearResize2D-odd-scale",
        "contrib_BilinearResize2D",
        C(
            lambda x: separable_ref(x, resize_weights(3, 5), resize_weights(4, 2)),
            (1, 2, 3, 4),
            mode="odd_scale",
            scale_height=2.0,
            scale_width=0.5,
        ),
    ),
    (
        "contrib_AdaptiveAvgPooling2D-up-one-size",
        "contrib_AdaptiveAvgPooling2D",
        C(lambda x: separable_ref(x, adaptive_weights(3, 5), adaptive_weights(4, 5)), (1, 2, 3, 4), output_size=[5]),
    ),
    (
        "contrib_AdaptiveAvgPooling2D-global",
        "contrib_AdaptiveAvgPooling2D",
        C(lambda x: x.mean(axis=(2, 3), keepdims=True), (2, 3, 4, 5)),
    ),
    # the optimizers' array ops
    (
        "multi_sum_sq-one",
        "multi_sum_sq",
        C(lambda a: np.sum(np.square(a, dtype=np.float64))[None], (2, 1, 3), out="float32", num_arrays=1),
    ),
    (
        "lamb_update_phase2-bounds",
        "lamb_update_phase2",
        C(
            lambda w, g, r1, r2: w - hyper(w, 0.1)[0] * np.clip(r1[0], *hyper(w, 0.8, 1.2)) / r2[0] * g,
            (5,),
            (5,),
            (1, 1),
            (1,),
            dom=(SMOOTH, SMOOTH, U(0.5, 1.5), POS),
            lr=0.1,
            lower_bound=0.8,
            upper_bound=1.2,
        ),
    ),
]
VARIANT_IDS = [v[0] for v in VARIANTS]

OP_NAMES = [op.name for op in OPS.ops()]
DIFFERENTIABLE = [op.name for op in OPS.ops() if op.vjp is not None]
BINARY = [
    "broadcast_hypot",
    "add",
    "sub",
    "mul",
    "div",
    "pow",
    "mod",
    "maximum",
    "minimum",
    "equal",
    "not_equal",
    "greater",
    "greater_equal",
    "lesser",
    "lesser_equal",
    "logical_and",
    "logical_or",
    "logical_xor",
]


def test_softmax_family_on_empty_arrays_and_smooth_l1_with_scalar_0():
    """Edge cases a batch must answer, not fail on: nothing to normalise, and a zero scale
    (checked against MXNet 1.9.1: 0 everywhere, zero gradient)."""
    s = Session("t")
    ops = [{"op": "zeros", "out": [1], "at": {"shape": [2, 0]}}]
    ops += [{"op": n, "in": [1], "out": [i + 2]} for i, n in enumerate(["softmax", "log_softmax", "softmin"])]
    ops += [
        {"op": "array", "out": [10], "at": {"value": {"dtype": "float32", "shape": [3], "data": [1, -2, 0.5]}}},
        {"op": "attach_grad", "in": [10]},
        {"op": "smooth_l1", "in": [10], "out": [11], "at": {"scalar": 0.0}, "mode": 3},
        {"op": "backward", "in": [11]},
        {"op": "grad", "in": [10], "out": [12]},
        {"op": "read", "in": [2, 3, 4, 11, 12]},
    ]
    r = s.run_batch({"ops": ops})
    assert "error" not in r, r
    assert [v.shape for v in r["values"][:3]] == [(2, 0)] * 3
    assert r["values"][3].tolist() == [0, 0, 0] and r["values"][4].tolist() == [0, 0, 0]


EDGE_INPUTS = {
    "empty": np.zeros((0,), np.float32),
    "empty rows": np.zeros((0, 3), np.float32),
    "vector": np.arange(3, dtype=np.float32),
    "matrix": np.arange(6, dtype=np.float32).reshape(2, 3),
    "rank 3": np.arange(24, dtype=np.float32).reshape(2, 3, 4),
    "int32": np.arange(6, dtype=np.int32).reshape(2, 3),
    "float16": np.ones((2, 3), np.float16),
    "one": np.ones((1,), np.float32),
    "NaN": np.array([np.nan, 1, 2], np.float32),
    "image": np.ones((1, 1, 3, 3), np.float32),
    "bool": np.array([True, False, True]),
}


def _edge_problem(name: str, combo: tuple[str, ...], ops: list[dict]) -> str | None:
    """Run ``ops`` on a session holding the EDGE_INPUTS named in ``combo`` (handles 1, 2, ...):
    None for a result or the op's own error; else what went wrong (an exception out of the
    engine or an InternalError, a 500 from a server; or numpy's message as a malformed
    instruction)."""
    import warnings

    s = Session("t")
    for k, key in enumerate(combo):
        s.arrays[k + 1] = EDGE_INPUTS[key].copy()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy's about empty means: a NaN is an answer
            reply = s.run_batch({"ops": ops})
    except MXNetError:
        return None
    except Exception as e:  # noqa: BLE001 (what these tests look for)
        return f"{name}: {type(e).__name__}: {e}"
    err = reply.get("error")
    bad = err and (err["kind"] == "InternalError" or "malformed" in err["message"])
    return f"{name}: {err['message']}" if bad else None


def test_every_op_answers_edge_inputs_with_a_result_or_a_clear_error():
    """Every op of the table, with each case's attributes, on empty, int32, float16 and NaN
    inputs (every pair for ops of two inputs), recorded with a backward pass and not: the
    batch gives a result or the op's own error, never an exception out of the engine (a 500
    from a server) nor numpy's message as a malformed instruction."""

    problems = {}
    for name, case in [*CASES.items(), *((name, case) for _, name, case in VARIANTS)]:
        op = OPS[name]
        n = op.nin if op.nin >= 0 else len(case.shapes)
        if n == 0:
            continue
        combos = itertools.product(EDGE_INPUTS, repeat=n) if n <= 2 else ((k,) * n for k in EDGE_INPUTS)
        for combo in combos:
            for mode in (0, 3):
                ops = [{"op": "attach_grad", "in": [1]}] if mode else []
                ops.append({"op": name, "in": list(range(1, n + 1)), "out": [50], "at": case.at, "mode": mode})
                if mode:
                    ops.append({"op": "backward", "in": [50]})
                problem = _edge_problem(name, combo, ops)
                if problem:
                    problems.setdefault(problem, (combo, mode))
    assert not problems, "\n".join(f"{k} (inputs {v[0]}, mode {v[1]})" for k, v in problems.items())


EDGE_COMMANDS = [
    ("update", 2, [{"fn": f} for f in ("add", "sub", "mul", "div")]),
    ("update", 1, [{"fn": f, "scalar": v} for f in ("add", "sub", "mul", "div") for v in (0.0, -1.0, float("inf"))]),
    ("setitem", 2, [{"key": k} for k in ([[None, None, None]], [0], [[0, 1, None]], ["..."], [None])]),
    (
        "setitem",
        1,
        [{"key": k, "scalar": v} for k in ([[None, None, None]], [-1], ["..."]) for v in (3.0, float("nan"))],
    ),
    ("sgd_update", 2, [{"lr": 0.1}, {"lr": 0.1, "wd": 0.01, "clip_gradient": 0.5, "rescale_grad": 2.0}]),
    ("sgd_mom_update", 3, [{"lr": 0.1, "momentum": 0.9, "wd": 0.01, "clip_gradient": 0.5}]),
    ("adam_update", 4, [{"lr": 0.1, "wd": 0.01, "clip_gradient": 0.5}]),
    ("nag_mom_update", 3, [{"lr": 0.1, "momentum": 0.9, "wd": 0.01, "clip_gradient": 0.5}]),
    ("rmsprop_update", 3, [{"lr": 0.1, "wd": 0.01, "clip_gradient": 0.5, "clip_weights": 1.0}]),
    ("signsgd_update", 2, [{"lr": 0.1, "wd": 0.01}]),
    ("signum_update", 3, [{"lr": 0.1, "momentum": 0.9, "wd_lh": 0.01, "clip_gradient": 0.5}]),
    ("mp_sgd_update", 3, [{"lr": 0.1, "wd": 0.01, "clip_gradient": 0.5}]),
    ("mp_sgd_mom_update", 4, [{"lr": 0.1, "momentum": 0.9, "wd": 0.01}]),
    ("ftrl_update", 4, [{"lr": 0.1, "lamda1": 0.05, "wd": 0.01}]),
    ("read", 1, [{}, {"grad": True}]),
    ("attach_grad", 1, [{}, {"grad_req": "add"}, {"grad_req": "null"}]),
    ("free", 1, [{}]),
]


def test_every_command_answers_edge_inputs_with_a_result_or_a_clear_error():
    """The commands that are not table ops, on the same edge inputs."""

    problems = {}
    for name, n, ats in EDGE_COMMANDS:
        for at in ats:
            for combo in itertools.product(EDGE_INPUTS, repeat=n):
                problem = _edge_problem(name, combo, [{"op": name, "in": list(range(1, n + 1)), "at": at}])
                if problem:
                    problems.setdefault(problem, (combo, at))
    assert not problems, "\n".join(f"{k} (inputs {v[0]}, {v[1]})" for k, v in problems.items())


def test_every_op_has_a_case():
    """Adding an op to the table without a case here fails CI."""
    missing = sorted(set(OP_NAMES) - set(CASES))
    stale = sorted(set(CASES) - set(OP_NAMES)) + sorted({n for _, n, _ in VARIANTS} - set(OP_NAMES))
    assert not missing, f"ops without a test case in tests/test_ops.py: {missing}"
    assert not stale, f"cases for ops that are not in the table: {stale}"
    assert len(set(VARIANT_IDS)) == len(VARIANT_IDS)


def test_cases_fit_their_ops():
    """Input counts fit each op's arity; index inputs are only declared for differentiable ops."""
    for name, case in [(n, CASES[n]) for n in OP_NAMES] + [(n, c) for _, n, c in VARIANTS]:
        op = OPS[name]
        op.check_arity(len(case.shapes) if op.inputs else 0)
        assert all(0 <= i < len(case.shapes) for i in case.nondiff), name
        assert not case.nondiff or op.differentiable, name


def test_aliases_are_the_same_op():
    for op in OPS.ops():
        for alias in op.aliases:
            assert OPS[alias] is op


def test_binary_list_is_every_two_input_broadcasting_op():
    not_broadcasting = {"dot", "batch_dot", "linalg_gemm2", "reshape_like", "contrib_box_iou"}
    not_broadcasting |= {f"elemwise_{n}" for n in ("add", "sub", "mul", "div")}  # (one shape: in CASES)
    two = {op.name for op in OPS.ops() if op.inputs == ("lhs", "rhs") and op.name not in not_broadcasting}
    assert two == set(BINARY)


def test_variadic_ops_and_arity():
    variadic = {op.name for op in OPS.ops() if op.variadic}
    want = {
        "concat",
        "stack",
        "add_n",
        "FullyConnected",
        "Convolution",
        "Deconvolution",
        "getitem",
        "scatter_key",
        "SequenceMask",
        "SequenceLast",
        "SequenceReverse",
    }
    want |= {"LeakyReLU", "softmax"}  # (prelu's gamma, softmax's length)
    want |= {"khatri_rao", "UpSampling", "Crop"}
    want |= {"CTCLoss", "multi_all_finite", "multi_sum_sq", "contrib_BilinearResize2D"}  # (lengths; arrays; like)
    want |= {"histogram"}  # (its edges)
    assert variadic == want
    OPS["concat"].check_arity(1)
    OPS["concat"].check_arity(5)
    OPS["getitem"].check_arity(1)
    OPS["FullyConnected"].check_arity(2)
    OPS["FullyConnected"].check_arity(3)
    for name, n in [
        ("FullyConnected", 1),
        ("getitem", 0),
        ("exp", 2),
        ("exp", 0),
        ("add", 3),
        ("zeros", 1),
        ("BatchNorm", 4),
    ]:
        with pytest.raises(MXNetError, match="inputs"):
            OPS[name].check_arity(n)
    # an optional input is one at most: more were refused by the inference, blaming another input
    most = {op.name: op.most for op in OPS.ops() if op.variadic and op.most is not None}
    assert most == {
        **dict.fromkeys(("FullyConnected", "Convolution", "Deconvolution"), 3),
        **dict.fromkeys(("LeakyReLU", "softmax", "SequenceMask", "SequenceLast", "SequenceReverse"), 2),
        **dict.fromkeys(("Crop", "contrib_BilinearResize2D", "histogram"), 2),
        "CTCLoss": 4,  # (two lengths)
    }
    for name, n in most.items():
        OPS[name].check_arity(n)
        with pytest.raises(MXNetError, match=rf"{name} takes at most {n} inputs \(.*\), got {n + 1}"):
            OPS[name].check_arity(n + 1)
        assert OPS[name].describe()["max_inputs"] == n
    assert OPS["concat"].describe()["max_inputs"] is None and OPS["exp"].describe()["max_inputs"] == 1
    for name in ("concat", "stack"):  # "*data" is any number of arrays; inference wants one at least
        OPS[name].check_arity(0)
        with pytest.raises(MXNetError, match="at least one"):
            OPS[name].infer(OPS[name].parse_attrs({}))
    # the attributes decide how many optional inputs an op wants
    fc, f32 = OPS["FullyConnected"], "float32"
    with pytest.raises(MXNetError, match="bias"):
        fc.infer(fc.parse_attrs({"num_hidden": 2}), Spec((3, 4), f32), Spec((2, 4), f32))
    with pytest.raises(MXNetError, match="bias"):
        fc.infer(
            fc.parse_attrs({"num_hidden": 2, "no_bias": True}), Spec((3, 4), f32), Spec((2, 4), f32), Spec((2,), f32)
        )
    gi = OPS["getitem"]
    with pytest.raises(MXNetError, match="index arrays"):
        gi.infer(gi.parse_attrs({"key": [{"array": 0}]}), Spec((3,), f32), Spec((2,), f32), Spec((2,), f32))
    with pytest.raises(MXNetError):
        gi.infer(gi.parse_attrs({"key": [{"array": 1}]}), Spec((3,), f32), Spec((2,), f32))
    sm = OPS["SequenceMask"]
    with pytest.raises(MXNetError):
        sm.infer(sm.parse_attrs({}), Spec((3, 2), f32), Spec((2,), f32))
    with pytest.raises(MXNetError):
        sm.infer(sm.parse_attrs({"use_sequence_length": True}), Spec((3, 2), f32))


# --------------------------------------------------------------------------
# helpers


def make_inputs(case: Case, dtype: str, rng: np.random.Generator, shapes=None) -> list[np.ndarray]:
    shapes = case.shapes if shapes is None else shapes
    doms = case.dom if isinstance(case.dom, tuple) else (case.dom,) * len(shapes)
    assert len(doms) == len(shapes)
    return [np.asarray(d(rng, s)).astype(dtype) for d, s in zip(doms, shapes)]


def tol(dtype) -> dict[str, float]:
    return {"rtol": 1e-12, "atol": 1e-12} if np.dtype(dtype) == np.float64 else {"rtol": 2e-6, "atol": 1e-6}


def ctx(seed: int = 0, training: bool = False) -> Context:
    cx = Context(seed)
    cx.training = training
    return cx


def check_forward(
    op: Op,
    at: dict,
    xs: list[np.ndarray],
    want: Any,
    out_dtype: str | None = None,
    training: bool = False,
    tol32: dict | None = None,
) -> np.ndarray:
    """Forward against the reference; infer against what forward gives. The inputs are not changed."""
    at = op.parse_attrs(at)
    spec = op.infer(at, *[Spec(tuple(x.shape), x.dtype.name) for x in xs])
    y = op.forward(ctx(0, training), at, *[x.copy() for x in xs])
    want = np.asarray(want)
    if out_dtype is None:
        out_dtype = xs[0].dtype.name if xs else want.dtype.name
    assert isinstance(y, np.ndarray), f"{op.name} returned a {type(y).__name__}, not an ndarray"
    assert y.dtype.name == out_dtype
    assert y.shape == want.shape
    assert spec == (y.shape, y.dtype.name), f"{op.name}: infer says {spec}, forward gives {y.shape} {y.dtype}"
    t = tol32 if tol32 is not None and y.dtype == np.float32 else tol(y.dtype)
    np.testing.assert_allclose(y.astype(np.float64), want.astype(np.float64), **t)
    return y


def run_forward(op: Op, at: dict, xs: list[np.ndarray], training: bool) -> tuple[np.ndarray, dict]:
    """A forward on copies of the inputs (BatchNorm updates its moving stats in place), with a
    fresh copy of the attributes (where Dropout and BatchNorm leave state for their VJP) and a
    fresh generator (so Dropout draws the same mask every time)."""
    node_at = dict(at)
    return op.forward(ctx(0, training), node_at, *[x.copy() for x in xs]), node_at


def check_grads(
    op: Op,
    at: dict,
    xs: list[np.ndarray],
    rng: np.random.Generator,
    no_grad: bool = False,
    eps: float = 1e-5,
    nondiff: tuple[int, ...] = (),
    training: bool = False,
) -> None:
    """<vjp(g), v> against <(f(x + eps v) - f(x - eps v)) / 2 eps, g> (float64)."""
    assert all(x.dtype == np.float64 for x in xs)
    at = op.parse_attrs(at)
    y, node_at = run_forward(op, at, xs, training)
    g = rng.standard_normal(y.shape)
    cts = vjp_of(op)(Eager(ctx(0, training)), node_at, g, y, *xs)
    assert len(cts) == len(xs)
    if no_grad:
        assert all(ct is None for ct in cts), f"{op.name} should give no gradient"
        return
    for i, (x, ct) in enumerate(zip(xs, cts)):
        if i in nondiff:
            assert ct is None, f"{op.name}: input {i} (indices, labels or state) should get no cotangent"
            continue
        assert ct is not None
        assert (ct.shape, ct.dtype) == (x.shape, x.dtype), f"{op.name}: cotangent {ct.shape} {ct.dtype} for {x.shape}"
    check_eager_vjp(op, node_at, g, y, xs, cts)
    vs = [np.zeros_like(x) if i in nondiff else rng.standard_normal(x.shape) for i, x in enumerate(xs)]
    analytic = sum(float(np.vdot(ct, v)) for ct, v in zip(cts, vs) if ct is not None)
    fp, _ = run_forward(op, at, [x + eps * v for x, v in zip(xs, vs)], training)
    fm, _ = run_forward(op, at, [x - eps * v for x, v in zip(xs, vs)], training)
    numeric = float(np.vdot((fp - fm) / (2 * eps), g))
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-7, err_msg=op.name)


def check_eager_vjp(op: Op, at: dict, g: np.ndarray, y: np.ndarray, xs: list[np.ndarray], cts: tuple) -> None:
    """An op's eager VJP (first-order passes on plain arrays) gives the table VJP's cotangents:
    same dtypes and shapes, same values (so it meets the same finite differences)."""
    if op.eager_vjp is None:
        return
    fast = op.eager_vjp(at, g, y, *xs)
    if fast is None:  # a case left to the table VJP (integer dtypes, ranks it does not cover)
        return
    if fast == () and op.vjp in ZERO_VJPS:  # zeros by design: nothing sent back at all
        assert all(c is None or not c.any() for c in cts), f"{op.name}: its table VJP gives other than zeros"
        return
    fast = tuple(resolve(c) for c in fast)
    assert len(fast) == len(cts), op.name
    for i, (f, c) in enumerate(zip(fast, cts)):
        if c is None or f is None:
            assert f is None and c is None, f"{op.name}: input {i}: eager {f is None}, table {c is None}"
            continue
        assert isinstance(f, np.ndarray) and f.base is not g or f is g, f"{op.name}: eager cotangent {i} is a view"
        assert (f.shape, f.dtype) == (c.shape, c.dtype), f"{op.name}: {f.shape} {f.dtype}, table {c.shape} {c.dtype}"
        np.testing.assert_allclose(f, c, **tol(c.dtype) if c.dtype.kind == "f" else {}, err_msg=f"{op.name} input {i}")


EAGER = [op.name for op in OPS.ops() if op.eager_vjp is not None]


@pytest.mark.parametrize("dtype", ["float32", "int32"])
@pytest.mark.parametrize("name", EAGER)
def test_eager_vjp_matches_the_table_vjp(name, dtype):
    """float32 and integer inputs too (check_grads covers float64 with finite differences)."""
    op, case = OPS[name], CASES[name]
    rng = np.random.default_rng(5)
    xs = make_inputs(case, "float64", rng)
    xs = [(x * 3).round().astype(dtype) if dtype == "int32" else x.astype(dtype) for x in xs]
    at = op.parse_attrs(case.at)
    try:
        y, node_at = run_forward(op, at, xs, case.training)
    except MXNetError:
        pytest.skip(f"{name} refuses {dtype} inputs")
    g = rng.standard_normal(y.shape) * 3
    g = g.round().astype(y.dtype) if y.dtype.kind in "iu" else g.astype(y.dtype)
    cts = vjp_of(op)(Eager(ctx(0, case.training)), node_at, g, y, *xs)
    if dtype == "float32":
        assert op.eager_vjp(node_at, g, y, *xs) is not None, f"{name}: the eager VJP declines its own base case"
    check_eager_vjp(op, node_at, g, y, xs, cts)


def test_first_order_backward_uses_eager_vjps():
    """A recorded chain of ops with eager VJPs backpropagates without one table dispatch."""
    s = Session("t")
    ops = [{"op": "array", "out": [1], "at": {"value": {"dtype": "float32", "shape": [2, 3], "data": list(range(6))}}}]
    ops += [{"op": "attach_grad", "in": [1]}]
    chain = [("mul_scalar", {"scalar": 2.0}), ("relu", {}), ("tanh", {}), ("sum", {"axis": 1})]
    for i, (name, at) in enumerate(chain):
        ops.append({"op": name, "in": [i + 1], "out": [i + 2], "at": at, "mode": 3})
    assert all(OPS[n].eager_vjp is not None for n, _ in chain)
    calls: list[str] = []

    class Spy:
        def __getattr__(self, name):
            calls.append(name)
            return getattr(Eager(s.cx), name)

    s.F = Spy()
    r = s.run_batch({"ops": [*ops, {"op": "backward", "in": [len(chain) + 1]}, {"op": "grad", "in": [1], "out": [99]}]})
    assert "error" not in r, r
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    want = 2 * (1 - np.tanh(2 * x) ** 2) * (x > 0)
    np.testing.assert_allclose(s.get(99), want, rtol=1e-6)
    assert calls == []


def check_second_order(
    op: Op,
    at: dict,
    xs: list[np.ndarray],
    rng: np.random.Generator,
    nondiff: tuple[int, ...] = (),
    training: bool = False,
    eps: float = 1e-5,
) -> None:
    """Second derivatives through the recorded VJP.

    h(x, g) = sum_i <vjp_i(x; g), v_i> is computed with the Recorder (forward and VJP on Traced
    values, x and g variables), its gradient taken by ``tape.backward`` with eager VJPs, and
    <grad h, (u, w)> compared with (h(x + eps u, g + eps w) - h(x - eps u, g - eps w)) / 2 eps,
    h computed with plain eager VJPs. The gradient in x holds the second derivatives; the one in g
    is the JVP, so linear ops are checked too.
    """
    assert all(x.dtype == np.float64 for x in xs)
    at = op.parse_attrs(at)
    diff = [i for i in range(len(xs)) if i not in nondiff]
    R = Recorder(ctx(0, training))
    var = {i: Node(grad=np.zeros_like(xs[i])) for i in diff}
    xt = [Traced(x.copy(), var.get(i)) for i, x in enumerate(xs)]
    yt = getattr(R, op.name)(*xt, **at)
    assert yt.node is not None, f"{op.name}: the recorded forward made no node"
    g = rng.standard_normal(yt.shape)
    g_var = Node(grad=np.zeros_like(g))
    cts = vjp_of(op)(R, yt.node.at, Traced(g, g_var), yt, *xt)
    vs = {i: rng.standard_normal(xs[i].shape) for i in diff}
    h = None
    for i in diff:
        assert cts[i] is not None, f"{op.name}: no cotangent for input {i}"
        term = R.sum(R.mul(cts[i], Traced(vs[i], None)))
        h = term if h is None else R.add(h, term)

    def h_eager(zs: list[np.ndarray], gg: np.ndarray) -> float:
        y, node_at = run_forward(op, at, zs, training)
        cs = vjp_of(op)(Eager(ctx(0, training)), node_at, gg, y, *[z.copy() for z in zs])
        return sum(float(np.vdot(cs[i], vs[i])) for i in diff)

    np.testing.assert_allclose(float(h.value[0]), h_eager(xs, g), rtol=1e-12, atol=1e-12, err_msg=op.name)
    grads: dict[int, np.ndarray] = {}
    if h.node is not None:  # else h does not depend on x or g (e.g. a zero gradient)
        for node, gr in tape.backward(Eager(ctx(0, training)), [h.node], [np.ones(1)], np.add):
            grads[id(node)] = gr
    us = {i: rng.standard_normal(xs[i].shape) for i in diff}
    w = rng.standard_normal(g.shape)
    analytic = 0.0
    for i in diff:
        gr = grads.get(id(var[i]))
        if gr is not None:
            assert gr.shape == xs[i].shape, f"{op.name}: second-order gradient {gr.shape} for {xs[i].shape}"
            analytic += float(np.vdot(gr, us[i]))
    if id(g_var) in grads:
        assert grads[id(g_var)].shape == g.shape
        analytic += float(np.vdot(grads[id(g_var)], w))

    def shifted(s: float) -> list[np.ndarray]:
        return [x + s * eps * us[i] if i in us else x for i, x in enumerate(xs)]

    numeric = (h_eager(shifted(1), g + eps * w) - h_eager(shifted(-1), g - eps * w)) / (2 * eps)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-7, err_msg=op.name)


# --------------------------------------------------------------------------
# every op


# ops with inputs run in float32 and float64; creation ops take their dtype from attributes
FORWARD = [(op.name, dt) for op in OPS.ops() for dt in (("float32", "float64") if op.inputs else (None,))]


def check_random(op: Op, case: Case, xs: list[np.ndarray]) -> np.ndarray:
    """No reference: infer agrees, and a seed repeats the draws (more in the focused tests)."""
    at = op.parse_attrs(case.at)
    y = op.forward(ctx(5, case.training), dict(at), *[x.copy() for x in xs])
    assert isinstance(y, np.ndarray)
    assert op.infer(at, *[Spec(tuple(x.shape), x.dtype.name) for x in xs]) == (y.shape, y.dtype.name)
    assert np.array_equal(y, op.forward(ctx(5, case.training), dict(at), *[x.copy() for x in xs]))
    return y


def check_case_forward(op: Op, case: Case, dtype: str | None) -> None:
    xs = make_inputs(case, dtype, np.random.default_rng(0)) if op.inputs else []
    if case.ref is None:
        assert op.random
        check_random(op, case, xs)
        return
    check_forward(op, case.at, xs, case.ref(*xs), case.out, case.training, case.tol32)


@pytest.mark.parametrize("name, dtype", FORWARD, ids=[f"{n}-{d}" if d else n for n, d in FORWARD])
def test_forward_and_infer(name, dtype):
    check_case_forward(OPS[name], CASES[name], dtype)


def check_case_grads(op: Op, case: Case, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    if case.designed is not None:  # MXNet's loss outputs: the loss's gradient, whatever the head gradient
        xs = make_inputs(case, "float64", rng)
        at = op.parse_attrs(case.at)
        y, node_at = run_forward(op, at, xs, case.training)
        cts = vjp_of(op)(Eager(ctx(0, case.training)), node_at, rng.standard_normal(y.shape), y, *xs)
        want = case.designed(*xs)
        for i, (ct, w) in enumerate(zip(cts, want)):
            if w is None:
                assert ct is None, f"{op.name}: input {i} should get no cotangent"
            else:
                assert (ct.shape, ct.dtype) == (xs[i].shape, xs[i].dtype), op.name
                np.testing.assert_allclose(ct, w, rtol=1e-12, atol=1e-12, err_msg=op.name)
        check_eager_vjp(op, node_at, np.ones(y.shape), y, xs, cts)
        return
    if case.head is not None:  # (round_ste, gradientmultiplier: the head gradient scaled, not the derivative)
        xs = make_inputs(case, "float64", rng)
        at = op.parse_attrs(case.at)
        y, node_at = run_forward(op, at, xs, case.training)
        g = rng.standard_normal(y.shape)
        cts = vjp_of(op)(Eager(ctx(0, case.training)), node_at, g, y, *xs)
        assert len(cts) == 1 and cts[0].dtype == xs[0].dtype, op.name
        np.testing.assert_array_equal(cts[0], g * case.head, err_msg=op.name)
        return
    if case.zero_grad:  # (stop_gradient, one_hot: a zero gradient, as MXNet's, where the derivative is not)
        xs = make_inputs(case, "float64", rng)
        at = op.parse_attrs(case.at)
        y, node_at = run_forward(op, at, xs, case.training)
        cts = vjp_of(op)(Eager(ctx(0, case.training)), node_at, rng.standard_normal(y.shape), y, *xs)
        assert [(ct.shape, ct.dtype, bool(ct.any())) for ct in cts] == [(x.shape, x.dtype, False) for x in xs]
        return
    check_grads(
        op, case.at, make_inputs(case, "float64", rng), rng, case.no_grad, nondiff=case.nondiff, training=case.training
    )


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_grad(name):
    check_case_grads(OPS[name], CASES[name])


# variants MXNet refuses in float32 (its MKL-DNN pooling: a pad as wide as the kernel)
FLOAT32_REFUSED = {"Pooling-avg-windows-all-padding"}


@pytest.mark.parametrize("vid, name, case", VARIANTS, ids=VARIANT_IDS)
def test_variant(vid, name, case):
    op = OPS[name]
    for dtype in ("float32", "float64") if op.inputs else (None,):
        if vid in FLOAT32_REFUSED and dtype == "float32":
            with pytest.raises(InvalidInput, match="pad_l"):
                check_case_forward(op, case, dtype)
            continue
        check_case_forward(op, case, dtype)
    if op.differentiable:
        check_case_grads(op, case)


SECOND = [
    (n, n, CASES[n])
    for n in DIFFERENTIABLE
    if not CASES[n].no_grad and not CASES[n].zero_grad and CASES[n].head is None
] + [v for v in VARIANTS if OPS[v[1]].differentiable and not v[2].no_grad and not v[2].zero_grad and v[2].head is None]


@pytest.mark.parametrize("vid, name, case", SECOND, ids=[s[0] for s in SECOND])
def test_second_order(vid, name, case):
    rng = np.random.default_rng(11)
    check_second_order(OPS[name], case.at, make_inputs(case, "float64", rng), rng, case.nondiff, case.training)


def test_no_grad_ops_give_no_cotangent_to_record():
    """Comparisons and the like: their VJP gives None, so nothing can be recorded past them."""
    for name in DIFFERENTIABLE:
        case = CASES[name]
        if case.no_grad:
            rng = np.random.default_rng(0)
            xs = make_inputs(case, "float64", rng)
            at = OPS[name].parse_attrs(case.at)
            y = OPS[name].forward(ctx(), dict(at), *xs)
            cts = vjp_of(OPS[name])(
                Recorder(ctx()), at, Traced(np.ones_like(y), Node()), Traced(y, None), *[Traced(x, Node()) for x in xs]
            )
            assert all(ct is None for ct in cts), name


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "softmin"])
def test_softmax_in_another_dtype_gives_its_input_a_cotangent_of_its_own_dtype(name):
    """``dtype``: a float16 input's result in float32, computed in it; the cotangent comes back
    in float16, the float32 one rounded (MXNet's dtype attribute)."""
    op = OPS[name]
    x = np.linspace(-2, 2, 12, dtype=np.float16).reshape(3, 4)
    at = op.parse_attrs({"dtype": "float32"})
    assert op.infer(at, Spec(x.shape, "float16")) == (x.shape, "float32")
    y = op.forward(Context(), at, x)
    want = op.forward(Context(), op.parse_attrs({}), x.astype(np.float32))
    assert y.dtype == np.float32 and np.array_equal(y, want)
    g = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    (ct,) = vjp_of(op)(Eager(Context()), at, g, y, x)
    (want_ct,) = vjp_of(op)(Eager(Context()), op.parse_attrs({}), g, want, x.astype(np.float32))
    assert ct.dtype == np.float16 and np.array_equal(ct, want_ct.astype(np.float16))


def test_astype_cotangent_keeps_input_dtype():
    op = OPS["astype"]
    x = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
    at = op.parse_attrs({"dtype": "float64"})
    y = op.forward(Context(), at, x)
    (ct,) = vjp_of(op)(Eager(Context()), at, np.ones_like(y), y, x)
    assert (y.dtype, ct.dtype, ct.shape) == (np.float64, np.float32, x.shape)
    check_forward(op, {"dtype": "int32"}, [x * 3], (x * 3).astype(np.int32), "int32")


@pytest.mark.parametrize(
    "name, a, b, want",
    [
        ("div", [7, -7, 7, -7], [2, 2, -2, -2], [3, -3, -3, 3]),
        ("div_scalar", [7, -7, 5, -5], 2, [3, -3, 2, -2]),
        ("rdiv_scalar", [2, -2, 3, -4], 7, [3, -3, 2, -1]),
    ],
)
def test_integer_division_truncates(name, a, b, want):
    op = OPS[name]
    xs = [np.array(a, np.int32)] + ([np.array(b, np.int32)] if name == "div" else [])
    at = {} if name == "div" else {"scalar": b}
    check_forward(op, at, xs, np.array(want, np.int32))


def _signed(a: np.ndarray) -> list[str]:
    """Values with the sign of their zeros (assert_allclose takes -0 for 0; printing does not)."""
    return [repr(float(v)) for v in np.asarray(a, np.float64).ravel()]


def test_mod_has_mxnets_signs_zeros_and_dtypes():
    """Values MXNet 1.9.1 gave (``a % b``, ``nd.broadcast_mod``): the divisor's sign, as Python's
    %, computed in float64 whatever the dtype; 0 where the divisor is 0 (numpy gives NaN); a zero
    result is -0 only where both operands are negative, or a is -0 and b positive."""
    mod, mod_s, rmod_s = OPS["mod"], OPS["mod_scalar"], OPS["rmod_scalar"]
    f32 = np.float32
    a = np.array([-7, 7, 5.5, -5.5, 3, -3, 0, 1], f32)
    b = np.array([2, -2, 3, -3, 2, -2, 3, -3], f32)
    check_forward(mod, {}, [a, b], np.array([1, -1, 2.5, -2.5, 1, -1, 0, -2], f32))
    a = np.array([-4, 4, -4, 4, 0, -0.0, 0, -0.0, 1, 2], f32)
    b = np.array([2, -2, -2, 2, 2, 2, -2, -2, 0, 0], f32)
    want = [0.0, 0.0, -0.0, 0.0, 0.0, -0.0, 0.0, 0.0, 0.0, 0.0]
    assert _signed(mod.forward(ctx(), {}, a, b)) == _signed(want)
    assert _signed(mod_s.forward(ctx(), {"scalar": 2.0}, a[:8])) == _signed([0, 0, 0, 0, 0, -0.0, 0, -0.0])
    assert _signed(mod_s.forward(ctx(), {"scalar": -2.0}, a[:8])) == _signed([-0.0, 0, -0.0, 0, 0, 0, 0, 0])
    assert _signed(rmod_s.forward(ctx(), {"scalar": -4.0}, np.array([2, -2, 1], f32))) == _signed([0, -0.0, 0])
    inf, nan = np.inf, np.nan
    got = mod.forward(ctx(), {}, np.array([1, -1, inf, -inf, nan, 3], f32), np.array([inf, inf, 2, 2, 2, nan], f32))
    np.testing.assert_array_equal(got, np.array([1, inf, nan, nan, nan, nan], f32))
    np.testing.assert_array_equal(mod_s.forward(ctx(), {"scalar": -inf}, np.array([1, -1], f32)), [-inf, -1])
    # integers: Python's signs, 0 for a zero divisor; a float scalar is cast to the dtype first
    i32 = np.int32
    check_forward(
        mod, {}, [np.array([-7, 7, 5, -5, 3], i32), np.array([2, -2, 3, -3, 0], i32)], np.array([1, -1, 2, -2, 0], i32)
    )
    check_forward(mod_s, {"scalar": 2.5}, [np.array([-7, 7, 5, -5], i32)], np.array([1, 1, 1, 1], i32))
    check_forward(rmod_s, {"scalar": 5}, [np.array([-7, 7, 5, 0], i32)], np.array([-2, 5, 0, 0], i32))
    check_forward(mod, {}, [np.array([200, 7], np.uint8), np.array([7, 0], np.uint8)], np.array([4, 0], np.uint8))
    check_forward(mod, {}, [np.array([-128, 7], np.int8), np.array([-1, -3], np.int8)], np.array([0, -2], np.int8))
    # float16 and float32: the scalar is rounded to the dtype, the remainder taken in float64
    got = mod_s.forward(ctx(), {"scalar": 0.7}, np.array([1.5, 2.5], np.float16))
    assert got.dtype == np.float16 and got.tolist() == [0.099609375, 0.3994140625]
    got = rmod_s.forward(ctx(), {"scalar": 0.7}, np.array([0.3, -0.3], f32))
    assert got.tolist() == [0.09999996423721313, -0.20000004768371582]
    got = mod_s.forward(ctx(), {"scalar": 0.7}, np.array([1.5, 2.5], f32))
    assert got.tolist() == [0.10000002384185791, 0.40000003576278687]


def test_mod_gradients_are_mxnets():
    """d/da = 1 and d/db = -floor(a / b) (infinite or NaN where b is 0), as MXNet's backward
    gives them; integer operands get zero gradients, as in MXNet."""
    mod, rmod_s = OPS["mod"], OPS["rmod_scalar"]
    F = Eager(ctx())
    a = np.array([-7, 7, 5.5, -5.5, 3, 0, -3], np.float32)
    b = np.array([2, -2, 3, -3, 0, 0, 0], np.float32)
    y = mod.forward(ctx(), {}, a, b)
    with np.errstate(all="ignore"):  # (as a session runs ops: x / 0 is inf, as in MXNet)
        ga, gb = vjp_of(mod)(F, {}, np.ones_like(y), y, a, b)
    assert ga.tolist() == [1.0] * 7 and ga.dtype == np.float32
    np.testing.assert_array_equal(gb, np.array([4, 4, -1, -1, -np.inf, np.nan, np.inf], np.float32))
    assert gb.dtype == np.float32
    x = np.array([-7, 7, 5.5, -5.5, 3, -3, 0.5, 1], np.float32)
    at = rmod_s.parse_attrs({"scalar": 2.5})
    (gx,) = vjp_of(rmod_s)(F, at, np.ones_like(x), rmod_s.forward(ctx(), at, x), x)
    assert _signed(gx) == _signed([1, -0.0, -0.0, 1, -0.0, 1, -5, -2])
    i = np.array([-7, 7, 5], np.int32)
    j = np.array([2, -2, 3], np.int32)
    y = mod.forward(ctx(), {}, i, j)
    cts = vjp_of(mod)(F, {}, np.ones_like(y), y, i, j)
    assert [(c.dtype, c.tolist()) for c in cts] == [(np.int32, [0, 0, 0])] * 2
    for name in ("mod_scalar", "rmod_scalar"):
        op = OPS[name]
        at = op.parse_attrs({"scalar": 9})
        (c,) = vjp_of(op)(F, at, np.ones_like(i), op.forward(ctx(), at, i), i)
        assert (c.dtype, c.tolist()) == (np.int32, [0, 0, 0]), name


# --------------------------------------------------------------------------
# broadcasting


SHAPES = mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, min_side=1, max_side=4)


@pytest.mark.parametrize("name", BINARY)
@settings(max_examples=25, deadline=None, database=None)
@given(shapes=SHAPES.map(lambda s: s.input_shapes), seed=st.integers(0, 2**32 - 1))
@example(shapes=((3, 1), (1, 4)), seed=0)
@example(shapes=((2, 3, 4), (4,)), seed=0)
@example(shapes=((4,), (2, 3, 4)), seed=0)
@example(shapes=((1,), ()), seed=0)
def test_broadcasting(name, shapes, seed):
    op, case = OPS[name], CASES[name]
    rng = np.random.default_rng(seed)
    xs = make_inputs(case, "float32", rng, shapes)
    y = check_forward(op, {}, xs, case.ref(*xs))
    assert y.shape == np.broadcast_shapes(*shapes)
    check_grads(op, {}, make_inputs(case, "float64", rng, shapes), rng, case.no_grad)


@pytest.mark.parametrize("name", ["add", "mul", "equal"])
def test_binary_rejects_mismatched_shapes_and_dtypes(name):
    op = OPS[name]
    with pytest.raises(MXNetError, match="broadcast"):
        op.infer({}, Spec((2, 3), "float32"), Spec((4,), "float32"))
    with pytest.raises(MXNetError, match="dtype"):
        op.infer({}, Spec((2, 3), "float32"), Spec((2, 3), "float64"))


# --------------------------------------------------------------------------
# reductions


def reduce_ref(name: str, ord_: int, x: np.ndarray, axis, keepdims: bool) -> np.ndarray:
    ax = tuple(axis) if isinstance(axis, list) else axis
    if name == "norm":
        r = np.abs(x).sum(ax, keepdims=keepdims) if ord_ == 1 else np.sqrt((x * x).sum(ax, keepdims=keepdims))
    else:
        r = getattr(np, name)(x, axis=ax, keepdims=keepdims)
    return mx1d(r)


REDUCTIONS = [("sum", 0), ("mean", 0), ("max", 0), ("min", 0), ("norm", 1), ("norm", 2)]


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axis", [None, 0, -1, [1], [0, 2], [2, 0], [0, 1, 2]])
@pytest.mark.parametrize("name, ord_", REDUCTIONS)
def test_reduction(name, ord_, axis, keepdims):
    op = OPS[name]
    at = {"axis": axis, "keepdims": keepdims, **({"ord": ord_} if name == "norm" else {})}
    rng = np.random.default_rng(2)
    x = DISTINCT(rng, X3)
    check_forward(op, at, [x.astype(np.float32)], reduce_ref(name, ord_, x.astype(np.float32), axis, keepdims))
    check_grads(op, at, [x], rng)


@pytest.mark.parametrize(
    "dtype, x, want",
    [  # checked against MXNet 1.9.1
        ("float16", [10.0] * 1000, 316.2),
        ("float16", [300.0, 300.0], 424.2),
        ("float16", [60000.0, 60000.0], np.inf),  # past float16's range: inf
        ("float32", [1e20, 1e20], 1.4142136e20),
        ("float32", [1e-30, 1e-30], 1.4142136e-30),
        ("float32", [1e-20, 3e-20], 3.1622776e-20),
        ("float32", [3e38, 3e38], np.inf),
        ("float32", [np.inf, 1.0], np.inf),
        ("float32", [np.nan, 1.0], np.nan),
        ("float32", [0.0, 0.0], 0.0),
        ("float64", [1e200, 1e200], 1.41421356e200),
        ("float64", [1e-200, 1e-200], 1.41421356e-200),
    ],
)
def test_l2_norm_neither_overflows_nor_underflows_where_the_norm_fits(dtype, x, want):
    """sqrt(sum(x**2)) squared in the input's dtype gave inf for float16 norms past 256 and
    float32 ones past 1e19, and 0 for float32 ones under 1e-19; MXNet's are right."""
    op = OPS["norm"]
    a = np.array(x, dtype)
    with np.errstate(over="ignore", invalid="ignore"):  # (a session's ops run so: inf and nan as MXNet's)
        y = op.forward(ctx(), op.parse_attrs({}), a)
    assert y.dtype == a.dtype and y.shape == (1,)
    np.testing.assert_allclose(y.astype(np.float64), [want], rtol=2e-3 if dtype == "float16" else 1e-6)


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axis", [None, 0, 1, [0, 1]])
def test_l2_norm_scales_only_the_slices_out_of_range(axis, keepdims):
    """Along axes, each slice on its own: rows of 1e20, of 1e-30 and plain ones (kept bit for
    bit), in float32, with a gradient of x / norm (0.7071 each) that overflows nowhere."""
    op = OPS["norm"]
    x = np.array([[1e20, 1e20, 0.0], [1e-30, 0.0, 1e-30], [3.0, 4.0, 0.0], [0.0, 0.0, 0.0]], np.float32)
    at = op.parse_attrs({"axis": axis, "keepdims": keepdims})
    with np.errstate(over="ignore"):  # (a session's ops run so)
        y = op.forward(ctx(), at, x)
    axes = None if axis is None else tuple(np.atleast_1d(axis))
    want = mx1d(np.sqrt(np.square(x.astype(np.float64)).sum(axis=axes, keepdims=keepdims)))
    np.testing.assert_allclose(y, want.astype(np.float32), rtol=1e-6)
    if axis == 1:
        assert y.reshape(-1)[2] == np.float32(5.0)
    g = np.ones_like(y)
    with np.errstate(invalid="ignore"):  # (the zero row's: NaN, as MXNet's)
        (gx,) = vjp_of(op)(Eager(ctx()), at, g, y, x)
    if axis == 1:
        h = np.float32(np.sqrt(0.5))
        np.testing.assert_allclose(gx[:3], [[h, h, 0], [h, 0, h], [0.6, 0.8, 0]], rtol=1e-6)
    rng = np.random.default_rng(5)
    big = rng.uniform(-2, 2, x.shape) * 1e160  # (float64 squares past its range)
    with np.errstate(over="ignore"):
        check_grads(op, at, [big], rng, eps=1e155)


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axis", [0, -1, [0, 2], [0, 1, 2]])
@pytest.mark.parametrize("name", ["sum", "mean", "max", "min", "prod", "nansum", "nanprod"])
def test_reduction_with_exclude_reduces_the_other_axes(name, axis, keepdims):
    """MXNet's ``exclude``: every axis but ``axis`` (all of them listed: nothing reduced)."""
    op = OPS[name]
    at = {"axis": axis, "keepdims": keepdims, "exclude": True}
    rng = np.random.default_rng(3)
    x = (AWAY(0.5, 1.5) if name in ("prod", "nanprod") else DISTINCT)(rng, X3)
    given = {a % 3 for a in (axis if isinstance(axis, list) else [axis])}
    rest = [a for a in range(3) if a not in given]
    ref = name.removeprefix("nan")  # no NaN here: the plain reduction
    want = x.astype(np.float32) if not rest else reduce_ref(ref, 0, x.astype(np.float32), rest, keepdims)
    check_forward(op, at, [x.astype(np.float32)], want)
    check_grads(op, at, [x], rng)


@pytest.mark.parametrize(("name", "at"), [("max", {}), ("min", {"axis": 0}), ("argmax", {}), ("argmin", {"axis": 0})])
def test_reductions_without_identity_refuse_empty_axes(name, at):
    """A clear error at the call (numpy's would come back as a malformed instruction)."""
    op = OPS[name]
    with pytest.raises(MXNetError, match="length 0|empty array"):
        op.infer(op.parse_attrs(at), Spec((0, 3), "float32"))
    assert op.infer(op.parse_attrs({"axis": 1}), Spec((0, 3), "float32")).shape == (0,)  # other axes may be empty


def test_exclude_without_axis_reduces_everything():
    op = OPS["sum"]
    at = op.parse_attrs({"exclude": True})
    assert op.infer(at, Spec(X3, "float32")) == ((1,), "float32")


@pytest.mark.parametrize("name", ["sum", "mean", "max", "min", "prod", "nansum", "nanprod", "norm"])
@pytest.mark.parametrize("exclude", [False, True])
def test_an_empty_axis_list_reduces_every_axis_as_in_mxnet(name, exclude):
    """MXNet's reductions read ``axis=()`` as all axes (numpy's as none); the VJPs' own calls
    with computed axes, which are not parsed, keep numpy's meaning (a 1-d BatchNorm's)."""
    op = OPS[name]
    x = np.arange(1.0, 7.0).reshape(2, 3)
    at = op.parse_attrs({"axis": [], **({"exclude": exclude} if "exclude" in op.defaults else {})})
    assert at["axis"] is None
    assert op.infer(at, Spec(x.shape, "float64")) == ((1,), "float64")
    np.testing.assert_allclose(op.forward(ctx(), at, x), op.forward(ctx(), op.parse_attrs({}), x))
    keep = op.parse_attrs({"axis": (), "keepdims": True})
    assert op.forward(ctx(), keep, x).shape == (1, 1)
    assert [a for a in op.describe()["attrs"] if a["name"] == "axis"][0]["type"] == "axis"
    assert Eager(ctx()).sum(x, axis=()).shape == x.shape  # (unparsed: no axes)


@pytest.mark.parametrize("name", ["nansum", "nanprod"])
def test_nan_reductions_skip_nan_and_give_it_no_gradient(name):
    """Checked against MXNet 1.9.1: NaN counts as 0 in nansum and 1 in nanprod."""
    s = Session("t")
    x = [[1.0, float("nan")], [3.0, 4.0]]
    ops = [
        {"op": "array", "out": [1], "at": {"value": {"dtype": "float32", "shape": [2, 2], "data": x}}},
        {"op": "attach_grad", "in": [1]},
        {"op": name, "in": [1], "out": [2], "at": {"axis": 1}, "mode": 3},
        {"op": "backward", "in": [2]},
        {"op": "grad", "in": [1], "out": [3]},
        {"op": name, "in": [1], "out": [4]},
        {"op": "read", "in": [2, 3, 4]},
    ]
    r = s.run_batch({"ops": ops})
    assert "error" not in r, r
    y, g, whole = (v.tolist() for v in r["values"])
    if name == "nansum":
        assert (y, g, whole) == ([1.0, 7.0], [[1.0, 0.0], [1.0, 1.0]], [8.0])
    else:
        assert (y, g, whole) == ([1.0, 12.0], [[1.0, 0.0], [4.0, 3.0]], [12.0])


@pytest.mark.parametrize(
    "shape, axis, keepdims, want",
    [
        ((2, 3, 4), None, False, (1,)),  # MXNet: no rank-0 results
        ((2, 3, 4), None, True, (1, 1, 1)),
        ((2, 3, 4), [0, 1, 2], False, (1,)),
        ((2, 3, 4), [0, 2], False, (3,)),
        ((2, 3, 4), [0, 2], True, (1, 3, 1)),
        ((2, 3, 4), -2, False, (2, 4)),
        ((5,), None, False, (1,)),
        ((5,), 0, True, (1,)),
    ],
)
@pytest.mark.parametrize("name", ["sum", "mean", "max", "min", "norm"])
def test_reduction_shapes(name, shape, axis, keepdims, want):
    op = OPS[name]
    at = op.parse_attrs({"axis": axis, "keepdims": keepdims})
    assert op.infer(at, Spec(shape, "float32")) == (want, "float32")
    assert op.forward(Context(), at, np.ones(shape, np.float32)).shape == want


@pytest.mark.parametrize("axis", [3, -4, [0, 0], [1, -2]])
def test_reduction_rejects_bad_axes(axis):
    op = OPS["sum"]
    with pytest.raises(MXNetError):
        op.infer(op.parse_attrs({"axis": axis}), Spec(X3, "float32"))


# --------------------------------------------------------------------------
# indexing

KEYS = [
    [1],
    [-1, 2],
    [0, 1, 2],  # every axis: a rank-0 result, returned as (1,)
    [[None, None, 2]],
    [[1, None, None], [None, None, -1]],
    [[None, None, -2], 0, [1, 4, None]],
    [None, 0],
    ["...", 1],
    [1, "...", [0, 3, 2]],
    [[-2, None, None], None, 3],
    ["...", None],
    [],
]


@pytest.mark.parametrize("key", KEYS, ids=str)
def test_getitem_and_scatter_key(key):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 4, 5))
    want = mx1d(x[as_np_key(key)])
    y = check_forward(OPS["getitem"], {"key": key}, [x], want)
    check_grads(OPS["getitem"], {"key": key}, [x], rng)
    scatter = {"shape": [3, 4, 5], "key": key}
    check_forward(OPS["scatter_key"], scatter, [y], scatter_ref((3, 4, 5), key)(y))
    check_grads(OPS["scatter_key"], scatter, [y], rng)


BAD_KEYS = [[3], [0, 0, 0, 0], [0, -6], ["...", "..."], [1.5], "0", [[0, 1]], [[0, 1, 0]]]


@pytest.mark.parametrize("key", BAD_KEYS, ids=str)
def test_getitem_rejects_bad_keys(key):
    op = OPS["getitem"]
    with pytest.raises(MXNetError):
        op.infer(op.parse_attrs({"key": key}), Spec((3, 4, 5), "float32"))


@pytest.mark.parametrize(
    "key, value, taken",
    [
        ([], np.arange(12.0), False),  # its size, another shape: refused as MXNet refuses it (was reshaped)
        ([1], np.ones((2, 2)), False),
        ([[None, None, None], 1], np.ones((3, 1)), False),
        ([[1, None, None]], np.arange(8.0), False),
        ([], np.ones((1, 3, 4)), True),  # leading axes of length 1 are dropped, as numpy's and MXNet's
        ([1, 2], np.ones((1, 1)), True),
        ([[None, None, None], 1], np.ones((1, 3)), True),
        ([], np.ones((3, 1)), True),
    ],
)
def test_setitem_writes_values_that_broadcast_to_the_region_only(key, value, taken):
    """The session's own check (a client that skips its local one): nothing written when refused."""
    s = Session("t")
    x = np.arange(12.0).reshape(3, 4)
    ops_ = [
        {"op": "array", "out": [1], "at": {"value": x}},
        {"op": "array", "out": [2], "at": {"value": value}},
        {"op": "setitem", "in": [1, 2], "at": {"key": key}},
    ]
    r = s.run_batch({"ops": ops_})
    got = s.arrays[1]
    if taken:
        assert "error" not in r, r
        want = x.copy()
        want[as_np_key(key)] = value.reshape(value.shape[value.ndim - want[as_np_key(key)].ndim :])
        assert got.tolist() == want.tolist()
    else:
        assert r["error"]["kind"] == "ShapeError" and "could not be broadcast" in r["error"]["message"], r
        assert got.tolist() == x.tolist()


# --------------------------------------------------------------------------
# shape ops


@pytest.mark.parametrize(
    "src, target, reverse, want",
    [
        # examples of MXNet's reshape documentation
        ((2, 3, 4), [4, 0, 2], False, (4, 3, 2)),
        ((2, 3, 4), [2, 0, 0], False, (2, 3, 4)),
        ((2, 3, 4), [6, 1, -1], False, (6, 1, 4)),
        ((2, 3, 4), [3, -1, 8], False, (3, 1, 8)),
        ((2, 3, 4), [-1], False, (24,)),
        ((2, 3, 4), [-2], False, (2, 3, 4)),
        ((2, 3, 4), [2, -2], False, (2, 3, 4)),
        ((2, 3, 4), [-2, 1, 1], False, (2, 3, 4, 1, 1)),
        ((2, 3, 4), [-3, 4], False, (6, 4)),
        ((2, 3, 4, 5), [-3, -3], False, (6, 20)),
        ((2, 3, 4), [0, -3], False, (2, 12)),
        ((2, 3, 4), [-3, -2], False, (6, 4)),
        ((2, 3, 4), [-4, 1, 2, -2], False, (1, 2, 3, 4)),
        ((2, 3, 4), [2, -4, -1, 3, -2], False, (2, 1, 3, 4)),
        ((10, 5, 4), [-1, 0], False, (40, 5)),
        ((10, 5, 4), [-1, 0], True, (50, 4)),
        ((6, 4), [-4, 2, -1, 0], False, (2, 3, 4)),
        ((2, 3, 4), [4, 6], False, (4, 6)),
    ],
)
def test_reshape_special_values(src, target, reverse, want):
    x = np.arange(np.prod(src), dtype=np.float32).reshape(src)
    check_forward(OPS["reshape"], {"shape": target, "reverse": reverse}, [x], x.reshape(want))


@pytest.mark.parametrize(
    "src, target",
    [
        ((2, 3, 4), [5, -1]),
        ((2, 3, 4), [-1, -1]),
        ((2, 3, 4), [7]),
        ((2, 3, 4), [-4, 3, -1, -2]),
        ((2, 3, 4), [0, 0, 0, 0]),
        ((2, 3, 4), [-3, -3]),
        ((2, 3, 4), [-5]),
    ],
)
def test_reshape_rejects(src, target):
    op = OPS["reshape"]
    with pytest.raises(MXNetError):
        op.infer(op.parse_attrs({"shape": target}), Spec(src, "float32"))


@pytest.mark.parametrize("axes", [[], [0, 1, 2], [1, 0, 2], [2, 0, 1], [-1, 0, 1]], ids=str)
def test_transpose(axes):
    rng = np.random.default_rng(4)
    x = rng.standard_normal(X3)
    check_forward(OPS["transpose"], {"axes": axes}, [x], np.transpose(x, axes or None))
    check_grads(OPS["transpose"], {"axes": axes}, [x], rng)


@pytest.mark.parametrize("axes", [[0, 1], [0, 0, 1], [0, 1, 3], [0, 1, 5], [0, 1, -4], [0, 1, 2, 3]], ids=str)
def test_transpose_rejects_non_permutations(axes):
    op = OPS["transpose"]
    with pytest.raises(MXNetError):
        op.infer(op.parse_attrs({"axes": axes}), Spec(X3, "float32"))


@pytest.mark.parametrize(
    "src, shape, want",
    [
        ((3, 1), [2, 3, 4], (2, 3, 4)),
        ((1,), [5], (5,)),
        ((4,), [2, 3, 4], (2, 3, 4)),
        ((2, 1, 4), [0, 3, 0], (2, 3, 4)),  # MXNet: 0 keeps the input's dimension
        ((2, 3), [2, 3], (2, 3)),
    ],
)
def test_broadcast_to(src, shape, want):
    rng = np.random.default_rng(5)
    x = rng.standard_normal(src)
    check_forward(OPS["broadcast_to"], {"shape": shape}, [x], np.broadcast_to(x, want))
    check_grads(OPS["broadcast_to"], {"shape": shape}, [x], rng)


@pytest.mark.parametrize("src, shape", [((2, 3), [3, 3]), ((2, 3), [3]), ((2, 3), [2, 1])])
def test_broadcast_to_rejects(src, shape):
    op = OPS["broadcast_to"]
    with pytest.raises(MXNetError):
        op.infer(op.parse_attrs({"shape": shape}), Spec(src, "float32"))


@pytest.mark.parametrize(
    "src, shape, axes",
    [
        ((2, 3, 4), [3, 1], (0, 2)),
        ((2, 3, 4), [1, 1, 4], (0, 1)),
        ((2, 3, 4), [4], (0, 1)),
        ((2, 3, 4), [1], (0, 1, 2)),
        ((2, 3, 4), [2, 3, 4], ()),
        ((2, 1, 4), [1, 4], (0,)),
    ],
)
def test_sum_to(src, shape, axes):
    rng = np.random.default_rng(6)
    x = rng.standard_normal(src)
    check_forward(OPS["sum_to"], {"shape": shape}, [x], x.sum(axis=axes).reshape(shape))
    check_grads(OPS["sum_to"], {"shape": shape}, [x], rng)


@pytest.mark.parametrize("src, shape", [((2, 3), [4, 3]), ((1, 3), [4, 3]), ((3,), [2, 3]), ((2, 3), [2])])
def test_sum_to_rejects_shapes_the_input_does_not_broadcast_from(src, shape):
    op = OPS["sum_to"]
    with pytest.raises(MXNetError):
        op.infer(op.parse_attrs({"shape": shape}), Spec(src, "float32"))


@pytest.mark.parametrize("axis", [0, 1, 3, -1, -4])
def test_expand_dims(axis):
    x = np.random.default_rng(7).standard_normal(X3)
    check_forward(OPS["expand_dims"], {"axis": axis}, [x], np.expand_dims(x, axis))


# --------------------------------------------------------------------------
# dot


@pytest.mark.parametrize(
    "sa, sb, ta, tb, want",
    [
        ((3,), (3,), False, False, (1,)),
        ((2, 3), (3,), False, False, (2,)),
        ((3,), (3, 4), False, False, (4,)),
        ((2, 3), (3, 4), False, False, (2, 4)),
        ((3, 2), (3, 4), True, False, (2, 4)),
        ((2, 3), (4, 3), False, True, (2, 4)),
        ((3, 2), (4, 3), True, True, (2, 4)),
        ((3,), (3,), True, True, (1,)),
        ((2, 3), (5, 4, 3), False, True, (2, 5, 4)),
        ((2, 3, 4), (4, 5), False, False, (2, 3, 5)),
        ((2, 3, 4), (4, 5, 6), False, False, (2, 3, 5, 6)),
        ((4,), (4, 2, 3), False, False, (2, 3)),
        ((4, 3, 2), (4, 5), True, False, (3, 2, 5)),
        ((2, 3, 4), (5, 4), False, True, (2, 3, 5)),
        ((2, 2, 3), (2, 2, 3), False, True, (2, 2, 2, 2)),
        ((3, 2, 4), (2, 5, 3), True, True, (2, 4, 2, 5)),
        ((3, 2, 2), (3, 2, 2), True, False, (2, 2, 2, 2)),
    ],
)
def test_dot(sa, sb, ta, tb, want):
    """MXNet's transposes of N-D operands: lhs as the matrix of its first axis by the others,
    rhs as the matrix of its other axes by its last (so lhs's first axis, or rhs's last, is
    multiplied, the others kept in order; not numpy's .T, which reverses them all). Shapes and
    values as MXNet 1.9.1 gives them."""
    rng = np.random.default_rng(8)
    a, b = rng.standard_normal(sa), rng.standard_normal(sb)
    at = {"transpose_a": ta, "transpose_b": tb}
    ref = mx1d(np.tensordot(np.moveaxis(a, 0, -1) if ta else a, np.moveaxis(b, -1, 0) if tb else b, axes=1))
    assert ref.shape == want
    check_forward(OPS["dot"], at, [a, b], ref)
    check_forward(OPS["dot"], at, [a.astype(np.float32), b.astype(np.float32)], ref)
    check_grads(OPS["dot"], at, [a, b], rng)


@pytest.mark.parametrize(
    "sa, sb, ta, tb",
    [
        ((2, 3), (2, 3), False, False),
        ((3, 2), (3, 4), False, False),
        ((2, 3), (3, 4), True, False),
        ((2, 3), (3, 4), False, True),
    ],
)
def test_dot_rejects_unaligned(sa, sb, ta, tb):
    op = OPS["dot"]
    with pytest.raises(MXNetError, match="aligned"):
        op.infer(op.parse_attrs({"transpose_a": ta, "transpose_b": tb}), Spec(sa, "float32"), Spec(sb, "float32"))


# --------------------------------------------------------------------------
# creation


@pytest.mark.parametrize(
    "name, at, want",
    [
        ("zeros", {"shape": [2, 0, 3], "dtype": "int32"}, np.zeros((2, 0, 3), np.int32)),
        ("ones", {"shape": [3], "dtype": "bool"}, np.ones(3, bool)),
        ("full", {"shape": 2, "val": -1.5, "dtype": "float64"}, np.full(2, -1.5)),
        ("full", {"shape": [2, 2], "val": 7, "dtype": "uint8"}, np.full((2, 2), 7, np.uint8)),
        ("arange", {"start": 5}, np.arange(5, dtype=np.float32)),
        ("arange", {"start": 5, "stop": 1, "step": -1.5}, np.arange(5, 1, -1.5, dtype=np.float32)),
        ("arange", {"start": 0, "stop": 1, "step": 0.1, "dtype": "float64"}, np.arange(0, 1, 0.1)),
        ("arange", {"start": 3, "stop": 1}, np.zeros(0, np.float32)),
        ("arange", {"start": 0, "stop": 6, "step": 2, "dtype": "int32"}, np.array([0, 2, 4], np.int32)),
        ("array", {"value": np.arange(4, dtype=np.int64), "dtype": "float64"}, np.arange(4.0)),
        ("array", {"value": {"dtype": "int8", "shape": [2], "data": [1, -2]}}, np.array([1, -2], np.int8)),
    ],
)
def test_creation(name, at, want):
    check_forward(OPS[name], at, [], want)


@pytest.mark.parametrize("name", ["random_normal", "random_uniform"])
def test_random_ops(name):
    op, case = OPS[name], CASES[name]

    def draw(seed, **extra):
        at = op.parse_attrs({**case.at, **extra})
        y = op.forward(Context(seed), at)
        assert op.infer(at) == (y.shape, y.dtype.name)
        return y

    y = draw(42)
    assert (y.shape, y.dtype) == ((3, 4), np.float32)
    assert np.array_equal(y, draw(42)), "same seed, same draws"
    assert not np.array_equal(y, draw(43))
    assert draw(0, dtype="float64").dtype == np.float64
    assert draw(0, shape=[5]).shape == (5,)
    assert op.infer(op.parse_attrs({})) == ((1,), "float32")
    big = draw(1, shape=[20000], dtype="float64")
    if name == "random_uniform":
        assert big.min() >= -1.0 and big.max() < 2.0
        assert abs(big.mean() - 0.5) < 0.05
    else:
        assert abs(big.mean()) < 0.05 and abs(big.std() - 1.0) < 0.05
        shifted = draw(1, shape=[20000], dtype="float64", loc=3.0, scale=0.5)
        np.testing.assert_allclose(shifted, 3.0 + 0.5 * big)


SAMPLERS = [
    # op, attributes, mean, variance, whether the draws are counts
    ("random_exponential", {"lam": 0.5}, 2.0, 4.0, False),  # (MXNet's op takes the rate)
    ("random_poisson", {"lam": 3.0}, 3.0, 3.0, True),
    ("random_gamma", {"alpha": 2.0, "beta": 0.5}, 1.0, 0.5, False),
    ("random_negative_binomial", {"k": 3.0, "p": 0.4}, 3 * 0.6 / 0.4, 3 * 0.6 / 0.4**2, True),
    ("random_generalized_negative_binomial", {"mu": 2.0, "alpha": 0.5}, 2.0, 2.0 + 0.5 * 4.0, True),
    ("random_generalized_negative_binomial", {"mu": 2.0, "alpha": 0.0}, 2.0, 2.0, True),
]


@pytest.mark.parametrize("name, at, mean, var, counts", SAMPLERS)
def test_samplers_draw_their_distribution(name, at, mean, var, counts):
    """Mean and variance of 40,000 draws with a fixed seed, within loose bounds (about 5
    standard errors); float32 by default, float16/64 on request, counts as whole floats; the
    same seed repeats the draws."""
    op = OPS[name]

    def draw(seed, **extra):
        a = op.parse_attrs({**at, **extra})
        y = op.forward(Context(seed), a)
        assert op.infer(a) == (y.shape, y.dtype.name)
        return y

    y = draw(3, shape=[40000], dtype="float64")
    assert abs(y.mean() - mean) < 5 * np.sqrt(var / y.size)
    assert abs(y.var() / var - 1) < 0.1
    assert y.min() >= 0 and (not counts or np.array_equal(y, np.round(y)))
    assert np.array_equal(y, draw(3, shape=[40000], dtype="float64"))
    small = draw(0, shape=[2, 3])
    assert (small.shape, small.dtype) == ((2, 3), np.float32)
    assert draw(0, dtype="float16").dtype == np.float16
    assert op.infer(op.parse_attrs({})) == ((1,), "float32")


def test_random_exponential_takes_the_rate_as_mxnets_op():
    """MXNet's ``_random_exponential`` (nd.random_exponential) takes ``lam``, a rate: lam 4 has
    mean 0.25 (ours took a scale: mean 4, and refused lam=); an infinite rate draws zeros."""
    op = OPS["random_exponential"]
    assert [a.name for a in op.attrs][:2] == ["lam", "shape"]
    y = op.forward(Context(1), op.parse_attrs({"lam": 4.0, "shape": [100000]}))
    assert abs(y.mean() - 0.25) < 5 * 0.25 / np.sqrt(y.size)
    zeros = op.forward(Context(1), op.parse_attrs({"lam": float("inf"), "shape": [3]}))
    assert zeros.tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    "name, at, words",
    [
        ("random_exponential", {"lam": 0.0}, "lam must be positive"),  # (MXNet 1.9.1's refusals)
        ("random_exponential", {"lam": -2.0}, "lam must be positive"),
        ("random_exponential", {"lam": float("nan")}, "lam must be positive"),
        ("random_exponential", {"scale": 2.0}, "unknown attribute 'scale'"),
        ("random_poisson", {"lam": -1.0}, "lam must be non-negative"),
        ("random_poisson", {"dtype": "int32"}, "dtype must be one of"),
        ("random_gamma", {"beta": -2.0}, "beta must be positive"),
        ("random_negative_binomial", {"p": 1.5}, "p must be in"),
        ("random_negative_binomial", {"p": 0.0}, "p must be in"),
        ("random_generalized_negative_binomial", {"alpha": float("nan")}, "alpha must be non-negative"),
        ("random_gamma", {"shape": [-1]}, "negative dimension"),
    ],
)
def test_samplers_refuse_parameters_out_of_range(name, at, words):
    op = OPS[name]
    with pytest.raises(MXNetError, match=words):
        op.infer(op.parse_attrs(at))


@pytest.mark.parametrize(
    "ins",
    [
        {"op": "random_poisson", "out": [1], "at": {"lam": 1e30, "shape": [2]}},
        {"op": "random_generalized_negative_binomial", "out": [1], "at": {"mu": 1e30, "shape": [2]}},
        {"op": "random_negative_binomial", "out": [1], "at": {"k": 1e30, "p": 0.5, "shape": [2]}},
        {"op": "sample_generalized_negative_binomial", "in": [0, 2], "out": [1], "at": {"shape": [2]}},
    ],
)
def test_a_parameter_past_what_numpy_draws_from_is_the_samplers_refusal(ins):
    """In range but past numpy's limits (MXNet draws -2**31 there): a 400 that names the
    sampler, and nothing made."""
    s = Session("t")
    s.run_batch({"ops": [{"op": "array", "out": [0], "at": {"value": np.array([1e17, 1e30])}}]})
    s.run_batch({"ops": [{"op": "array", "out": [2], "at": {"value": np.zeros(2)}}]})  # (alpha 0: poisson)
    reply = s.run_batch({"ops": [ins]})
    err = reply["error"]
    assert err["kind"] == "InvalidInput" and err["index"] == 0, err
    assert err["message"].startswith(f"{ins['op']}: a parameter is too large to draw from"), err
    assert 1 not in s.arrays


def test_random_ops_continue_one_stream():
    """Two draws from one context differ; the pair repeats with the seed."""
    op = OPS["random_uniform"]
    at = op.parse_attrs({"shape": [4]})
    cx1, cx2 = Context(7), Context(7)
    a1, b1 = op.forward(cx1, at), op.forward(cx1, at)
    a2, b2 = op.forward(cx2, at), op.forward(cx2, at)
    assert not np.array_equal(a1, b1)
    assert np.array_equal(a1, a2) and np.array_equal(b1, b2)


# --------------------------------------------------------------------------
# a whole backward pass through a Session


class Batches:
    """A Session fed one batch at a time, failing on any error reply."""

    def __init__(self) -> None:
        self.s = Session("t", seed=0)
        self.seq = 0

    def __call__(self, *ops: dict) -> list[np.ndarray]:
        self.seq += 1
        reply = self.s.run_batch({"seq": self.seq, "ops": list(ops)})
        assert "error" not in reply, reply.get("error")
        return reply["values"]


def graph(x: int, w: int, base: int, mode: int) -> list[dict]:
    """f(x, w) = sum(x * x + tanh(x) * w) / 2, as instructions: x fans out three times."""
    h = base
    return [
        {"op": "mul", "in": [x, x], "out": [h + 1], "mode": mode},
        {"op": "tanh", "in": [x], "out": [h + 2], "mode": mode},
        {"op": "mul", "in": [h + 2, w], "out": [h + 3], "mode": mode},
        {"op": "add", "in": [h + 1, h + 3], "out": [h + 4], "mode": mode},
        {"op": "sum", "in": [h + 4], "out": [h + 5], "mode": mode},
        {"op": "mul_scalar", "in": [h + 5], "out": [h + 6], "at": {"scalar": 0.5}, "mode": mode},
    ]


def session_f(x: np.ndarray, w: np.ndarray) -> float:
    run = Batches()
    (y,) = run(
        {"op": "array", "in": [], "out": [1], "at": {"value": x}},
        {"op": "array", "in": [], "out": [2], "at": {"value": w}},
        *graph(1, 2, 10, mode=0),
        {"op": "read", "in": [16]},
    )
    assert y.shape == (1,)
    return float(y[0])


def numeric_grad(f: Callable[[np.ndarray], float], x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    out = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = eps
        out[i] = (f(x + e) - f(x - e)) / (2 * eps)
    return out


def test_session_backward_fan_out_and_grad_req_add():
    rng = np.random.default_rng(9)
    x, w = rng.uniform(-1, 1, (2, 3)), rng.uniform(-1, 1, (2, 3))
    run = Batches()
    run(
        {"op": "array", "in": [], "out": [1], "at": {"value": x}},
        {"op": "array", "in": [], "out": [2], "at": {"value": w}},
        {"op": "attach_grad", "in": [1]},  # grad_req "write"
        {"op": "attach_grad", "in": [2], "at": {"grad_req": "add"}},
    )
    read_grads = {"op": "read", "in": [1, 2], "at": {"grad": True}}
    gx, gw = run(*graph(1, 2, 10, mode=1), {"op": "backward", "in": [16]}, read_grads)

    want_gx = numeric_grad(lambda v: session_f(v, w), x)
    want_gw = numeric_grad(lambda v: session_f(x, v), w)
    np.testing.assert_allclose(gx, want_gx, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gw, want_gw, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gx, x + 0.5 * (1 - np.tanh(x) ** 2) * w, rtol=1e-12)  # and by hand

    # record the same graph again: "write" overwrites, "add" accumulates
    gx2, gw2 = run(*graph(1, 2, 20, mode=1), {"op": "backward", "in": [26]}, read_grads)
    np.testing.assert_allclose(gx2, gx, rtol=1e-12)
    np.testing.assert_allclose(gw2, 2 * gw, rtol=1e-12)

    # the graph is freed after backward
    reply = run.s.run_batch({"seq": run.seq + 1, "ops": [{"op": "backward", "in": [26]}]})
    assert reply["error"]["kind"] == "AutogradError"


def test_session_backward_with_head_grads():
    """backward(y, head_grads=h) gives the VJP of h; unrecorded ops stay out of the graph."""
    rng = np.random.default_rng(10)
    x, hg = rng.uniform(0.5, 2, (3,)), rng.standard_normal(3)
    run = Batches()
    (gx,) = run(
        {"op": "array", "in": [], "out": [1], "at": {"value": x}},
        {"op": "array", "in": [], "out": [2], "at": {"value": hg}},
        {"op": "attach_grad", "in": [1]},
        {"op": "log", "in": [1], "out": [3], "mode": 1},
        {"op": "exp", "in": [1], "out": [4], "mode": 0},  # not recorded
        {"op": "mul", "in": [3, 4], "out": [5], "mode": 1},  # log(x) * const
        {"op": "backward", "in": [5], "at": {"head_grads": [2]}},
        {"op": "read", "in": [1], "at": {"grad": True}},
    )
    np.testing.assert_allclose(gx, hg * np.exp(x) / x, rtol=1e-12)
    run.seq += 1
    reply = run.s.run_batch(
        {
            "seq": run.seq,
            "ops": [
                {"op": "array", "out": [6], "at": {"value": hg.astype(np.float32)}},
                {"op": "log", "in": [1], "out": [7], "mode": 1},
                {"op": "backward", "in": [7], "at": {"head_grads": [6]}},
            ],
        }
    )
    assert reply["error"]["kind"] == "DTypeError" and "head gradient dtype float32" in reply["error"]["message"]


# --------------------------------------------------------------------------
# rounding, random ops, Dropout and BatchNorm state, index arrays, bad attributes


def test_rounding_halves():
    """round goes half away from zero, rint a half toward minus infinity (MXNet 1.9.1's)."""
    x = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, -0.4, 0.6, 7.0], np.float32)
    check_forward(OPS["round"], {}, [x], [-3, -2, -1, 1, 2, 3, 0, 1, 7])
    check_forward(OPS["rint"], {}, [x], [-3, -2, -1, 0, 1, 2, 0, 1, 7])
    for name, ref in [("floor", np.floor), ("ceil", np.ceil), ("trunc", np.trunc)]:
        check_forward(OPS[name], {}, [x], ref(x))
    assert OPS["fix"] is OPS["trunc"]


def test_random_randint():
    op = OPS["random_randint"]
    at = op.parse_attrs({"low": -3, "high": 5, "shape": [4000]})
    y = op.forward(ctx(1), at)
    assert (y.dtype, y.shape) == (np.int32, (4000,)) and op.infer(at) == ((4000,), "int32")
    assert (y.min(), y.max()) == (-3, 4)
    assert abs(y.mean() - 0.5) < 0.15
    assert np.array_equal(y, op.forward(ctx(1), at)), "same seed, same draws"
    assert not np.array_equal(y, op.forward(ctx(2), at))
    assert op.forward(ctx(1), op.parse_attrs({"low": 0, "high": 2, "dtype": "float64"})).dtype == np.float64
    assert op.infer(op.parse_attrs({"low": 0, "high": 2})) == ((1,), "int32")


def test_shuffle():
    op = OPS["shuffle"]
    x = np.arange(30.0).reshape(10, 3)
    y = op.forward(ctx(4), {}, x)
    assert y.shape == x.shape and y is not x
    np.testing.assert_array_equal(x, np.arange(30.0).reshape(10, 3))  # the input is left alone
    np.testing.assert_array_equal(np.sort(y[:, 0]), x[:, 0])  # a permutation of whole rows
    np.testing.assert_array_equal(y[:, 1:] - y[:, :1], x[:, 1:] - x[:, :1])
    assert not np.array_equal(y, x)
    assert np.array_equal(y, op.forward(ctx(4), {}, x))
    assert not np.array_equal(y, op.forward(ctx(5), {}, x))


def test_dropout():
    op = OPS["Dropout"]
    rng = np.random.default_rng(13)
    x = rng.uniform(0.5, 1.5, (300, 100)).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    F = Eager(ctx())

    # training: about p of the elements dropped, the rest scaled by 1 / (1 - p)
    at = op.parse_attrs({"p": 0.3})
    y = op.forward(ctx(3, True), at, x)
    mask = at["_kept"]
    kept = y != 0
    assert abs(kept.mean() - 0.7) < 0.01
    np.testing.assert_allclose(y[kept], x[kept] / np.float32(0.7), rtol=1e-6)
    assert y.dtype == np.float32 and set(np.unique(mask)) == {0, np.float32(1) / np.float32(0.7)}
    # the VJP applies the same mask
    (ct,) = vjp_of(op)(F, at, g, y, x)
    np.testing.assert_array_equal(ct, g * mask)
    np.testing.assert_array_equal(ct != 0, kept)
    # the same seed draws the same mask, another seed another
    assert np.array_equal(op.forward(ctx(3, True), op.parse_attrs({"p": 0.3}), x), y)
    assert not np.array_equal(op.forward(ctx(4, True), op.parse_attrs({"p": 0.3}), x), y)

    # prediction, and p = 0: the identity (a copy), and the VJP passes g through
    for training, p in [(False, 0.3), (True, 0.0)]:
        at = op.parse_attrs({"p": p})
        y = op.forward(ctx(3, training), at, x)
        assert y is not x
        np.testing.assert_array_equal(y, x)
        assert vjp_of(op)(F, at, g, y, x)[0] is g
    # mode="always" drops in prediction too
    assert (op.forward(ctx(3), op.parse_attrs({"p": 0.3, "mode": "always"}), x) == 0).any()
    # axes: one mask shared along them
    y = op.forward(ctx(3, True), op.parse_attrs({"p": 0.5, "axes": [0]}), x)
    assert (y == 0).any() and np.array_equal(y[1:] == 0, np.broadcast_to(y[:1] == 0, (299, 100)))


def test_dropout_follows_the_sessions_training_bit():
    run = Batches()
    x = np.ones((50, 40), np.float32)
    pred, train = run(
        {"op": "array", "in": [], "out": [1], "at": {"value": x}},
        {"op": "Dropout", "in": [1], "out": [2], "at": {"p": 0.5}, "mode": 1},
        {"op": "Dropout", "in": [1], "out": [3], "at": {"p": 0.5}, "mode": 3},
        {"op": "read", "in": [2, 3]},
    )
    np.testing.assert_array_equal(pred, x)
    assert set(np.unique(train)) == {0.0, 2.0}


def test_batch_norm_state():
    op = OPS["BatchNorm"]
    rng = np.random.default_rng(12)
    x = rng.standard_normal((8, 3, 2, 2)).astype(np.float32) * 2 + 1
    gamma, beta = rng.uniform(0.5, 2, 3).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    mm, mv = rng.standard_normal(3).astype(np.float32), rng.uniform(0.5, 2, 3).astype(np.float32)
    mm0, mv0 = mm.copy(), mv.copy()
    at = {"momentum": 0.8, "fix_gamma": False}
    t32 = {"rtol": 1e-5, "atol": 1e-5}

    # prediction: the moving statistics normalise, and are left alone
    y = op.forward(ctx(), op.parse_attrs(at), x, gamma, beta, mm, mv)
    np.testing.assert_allclose(y, bn_ref(x, gamma, beta, mm0, mv0, fix_gamma=False), **t32)
    assert np.array_equal(mm, mm0) and np.array_equal(mv, mv0)

    # training: the batch's statistics normalise; the moving ones are left to the backward pass
    at_t = op.parse_attrs(at)
    y = op.forward(ctx(0, True), at_t, x, gamma, beta, mm, mv)
    np.testing.assert_allclose(y, bn_ref(x, gamma, beta, mm0, mv0, fix_gamma=False, train=True), **t32)
    assert np.array_equal(mm, mm0) and np.array_equal(mv, mv0)  # (MXNet's forward leaves them)
    # a backward pass in prediction mode: no update, and the moving statistics' gradient (MXNet's)
    g = rng.standard_normal(y.shape).astype(np.float32)
    cts = vjp_of(op)(Eager(ctx(0, False)), at_t, g, y, x, gamma, beta, mm, mv)
    assert np.array_equal(mm, mm0) and np.array_equal(mv, mv0)
    bs = (1, 3, 1, 1)
    np.testing.assert_allclose(cts[0], g * (gamma / np.sqrt(mv0 + 1e-3)).reshape(bs), **t32)
    # a forward in prediction and a backward pass in training (MXNet's default backward after
    # record(train_mode=False)): the gradient through the statistics, of the moving ones the
    # forward used, and no update (MXNet's values, recorded with its install)
    at_p = op.parse_attrs(at)
    y = op.forward(ctx(0, False), at_p, x, gamma, beta, mm, mv)
    cts = vjp_of(op)(Eager(ctx(0, True)), at_p, g, y, x, gamma, beta, mm, mv)
    assert np.array_equal(mm, mm0) and np.array_equal(mv, mv0)
    axes = (0, 2, 3)
    inv = 1 / np.sqrt(mv0.astype(np.float64) + 1e-3).reshape(bs)
    xhat = (x - mm0.reshape(bs)) * inv
    dxhat = g * gamma.reshape(bs)
    want = inv * (dxhat - dxhat.mean(axis=axes, keepdims=True) - xhat * (dxhat * xhat).mean(axis=axes, keepdims=True))
    np.testing.assert_allclose(cts[0], want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(cts[1], (g * xhat).sum(axis=axes), rtol=1e-4, atol=1e-4)
    x2, g2 = np.array([[1, 2], [3, 5], [0, -1]], np.float32), np.array([[1, 0], [2, 1], [0, 3]], np.float32)
    at2 = op.parse_attrs({"fix_gamma": False})
    m2, v2 = np.array([0.5, 1], np.float32), np.array([2, 4], np.float32)
    y2 = op.forward(ctx(0, False), at2, x2, np.ones(2, np.float32), np.zeros(2, np.float32), m2, v2)
    cts = vjp_of(op)(Eager(ctx(0, True)), at2, g2, y2, x2, np.ones(2, np.float32), np.zeros(2, np.float32), m2, v2)
    mxnet = [[-0.32384777, -0.5832813], [-0.9123086, 0.16656254], [-0.38308233, 0.666625]]
    np.testing.assert_allclose(cts[0], mxnet, rtol=1e-5)
    np.testing.assert_allclose(cts[1], [3.8881156, -0.99987507], rtol=1e-5)

    # in training mode: the update, in place, once per pass
    x64 = x.astype(np.float64)
    m = float(np.float32(0.8))  # (MXNet's momentum is a float32)
    for k in (1, 2):
        vjp_of(op)(Eager(ctx(0, True)), at_t, g, y, x, gamma, beta, mm, mv)
        want_m, want_v = m**k * mm0, m**k * mv0
        for i in range(k):
            want_m = want_m + m**i * (1 - m) * x64.mean(axis=axes)
            want_v = want_v + m**i * (1 - m) * x64.var(axis=axes)
        np.testing.assert_allclose(mm, want_m, **t32)
        np.testing.assert_allclose(mv, want_v, **t32)
    assert (mm.dtype, mv.dtype) == (np.float32, np.float32)

    # use_global_stats: the moving statistics even in training, and no update
    mm1, mv1 = mm.copy(), mv.copy()
    y = op.forward(ctx(0, True), op.parse_attrs({**at, "use_global_stats": True}), x, gamma, beta, mm, mv)
    np.testing.assert_allclose(y, bn_ref(x, gamma, beta, mm1, mv1, fix_gamma=False), **t32)
    assert np.array_equal(mm, mm1) and np.array_equal(mv, mv1)

    # fix_gamma (the default): gamma is taken as 1 and gets a zero gradient; no gradient for the moving stats
    for training in (False, True):
        at_f = op.parse_attrs({})
        y = op.forward(ctx(0, training), at_f, x, gamma, beta, mm.copy(), mv.copy())
        ones = np.ones_like(gamma)
        np.testing.assert_array_equal(
            y, op.forward(ctx(0, training), op.parse_attrs({}), x, ones, beta, mm.copy(), mv.copy())
        )
        cts = vjp_of(op)(Eager(ctx(0, training)), at_f, np.ones_like(y), y, x, gamma, beta, mm, mv)
        np.testing.assert_array_equal(cts[1], np.zeros(3, np.float32))
        np.testing.assert_allclose(cts[2], np.full(3, 32.0), rtol=1e-6)
        assert cts[3] is None and cts[4] is None


def test_batch_norm_follows_the_sessions_training_bit():
    rng = np.random.default_rng(14)
    x = rng.standard_normal((6, 2))
    run = Batches()
    arrays = [x, np.ones(2), np.zeros(2), np.zeros(2), np.ones(2)]
    mm, mv = run(
        *[{"op": "array", "in": [], "out": [i + 1], "at": {"value": a}} for i, a in enumerate(arrays)],
        {"op": "attach_grad", "in": [1]},
        {"op": "BatchNorm", "in": [1, 2, 3, 4, 5], "out": [6], "mode": 1},  # prediction: no update
        {"op": "backward", "in": [6], "mode": 2},
        {"op": "BatchNorm", "in": [1, 2, 3, 4, 5], "out": [7], "mode": 3},  # training: update at backward
        {"op": "read", "in": [4, 5]},
        {"op": "backward", "in": [7], "mode": 0},  # (a backward in prediction mode: none)
        {"op": "BatchNorm", "in": [1, 2, 3, 4, 5], "out": [8], "mode": 3},
        {"op": "backward", "in": [8], "mode": 2},
        {"op": "read", "in": [4, 5]},
    )[:2]
    assert mm.tolist() == [0, 0] and mv.tolist() == [1, 1]
    mm, mv = run(
        {"op": "read", "in": [4, 5]},
    )
    m = float(np.float32(0.9))  # (MXNet's momentum is a float32)
    np.testing.assert_allclose(mm, (1 - m) * x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(mv, m + (1 - m) * x.var(axis=0), rtol=1e-12)


def test_getitem_index_arrays():
    op = OPS["getitem"]
    x = np.arange(12.0).reshape(3, 4)
    at = op.parse_attrs({"key": [{"array": 0}, {"array": 1}]})
    i, j = np.array([0.0, 2.0, -1.0]), np.array([[3.0], [0.0]])
    check_forward(op, at, [x, i, j], x[i.astype(int), j.astype(int)])
    # one index array on the first axis copies, it does not share memory
    y = op.forward(ctx(), op.parse_attrs({"key": [{"array": 0}]}), x, np.array([1.0]))
    assert not np.shares_memory(y, x)
    with pytest.raises(MXNetError):
        op.forward(ctx(), op.parse_attrs({"key": [{"array": 0}]}), x, np.array([3.0]))


def test_boolean_index_arrays_are_refused():
    """MXNet's NDArrays refuse boolean indexing: infer and forward (a server's session runs
    both) refuse a boolean index array rather than read the mask's 0s and 1s as indices."""
    from gradserve.engine.errors import BooleanIndexError

    x, mask = np.arange(6.0).reshape(2, 3), np.array([True, False])
    for name, at, xs in (
        ("getitem", {"key": [{"array": 0}]}, [x, mask]),
        ("scatter_key", {"key": [{"array": 0}], "shape": [2, 3]}, [np.ones((2, 3)), mask]),
    ):
        op = OPS[name]
        at = op.parse_attrs(at)
        with pytest.raises(BooleanIndexError):
            op.infer(at, *[Spec(a.shape, a.dtype.name) for a in xs])
        with pytest.raises(BooleanIndexError):
            op.forward(ctx(), at, *xs)
    check_forward(OPS["getitem"], {"key": [{"array": 0}]}, [x, mask.astype(np.uint8)], x[[1, 0]])


def test_clip_with_a_min_above_a_max_is_mxnets():
    """MXNet's clip tests a_max first: a_max where x > a_max, a_min where x < a_min (it was
    refused); no x is inside, so the gradient is zero."""
    op = OPS["clip"]
    at = op.parse_attrs({"a_min": 2.0, "a_max": 1.0})
    x = np.array([0.0, 1.5, 3.0], np.float32)
    np.testing.assert_array_equal(op.forward(ctx(), at, x), [2.0, 1.0, 1.0])  # (MXNet 1.9.1's)
    (gx,) = vjp_of(op)(Eager(ctx()), at, np.ones(3, np.float32), None, x)
    np.testing.assert_array_equal(gx, [0.0, 0.0, 0.0])


@pytest.mark.parametrize("idx", [[-1.0], [-0.5], [2.9], [3.0]])
def test_take_in_raise_mode_refuses_what_is_outside_0_to_n_minus_1_as_mxnet(idx):
    """MXNet 1.9.1 refuses a negative index in take's raise mode (it took -1 as the last, as
    numpy's), and compares them as they are (-0.5, 2.9 of 3)."""
    op = OPS["take"]
    at = op.parse_attrs({"mode": "raise"})
    with pytest.raises(IndexOutOfRange, match="index out of range"):
        op.forward(ctx(), at, np.array([10.0, 11.0, 12.0], np.float32), np.array(idx, np.float32))
    got = op.forward(ctx(), at, np.array([10.0, 11.0, 12.0], np.float32), np.array([0.0, 2.0], np.float32))
    np.testing.assert_array_equal(got, [10.0, 12.0])


@pytest.mark.parametrize(
    "dtype, x, a_min, a_max, want",
    [  # MXNet 1.9.1's values: it compares with the bounds as they are
        ("int32", [-3, 0, 5, 2], 0, np.inf, [0, 0, 5, 2]),  # (was INT_MIN everywhere: inf cast wraps)
        ("int32", [-3, 0, 5, 2], -1e10, 1e10, [-3, 0, 5, 2]),
        ("uint8", [0, 100, 250], -1, 200, [0, 100, 200]),
        ("uint8", [0, 100, 250], -1, 255, [0, 100, 250]),
        ("int8", [-3, 0, 5, 2], -200, 3, [-3, 0, 3, 2]),
        ("int32", [-3, 0, 5, 2], 0.5, 2.5, [0, 0, 2, 2]),  # (in range: cast toward zero, as before)
        ("float32", [0, 100, 250], np.nan, 200, [0, 100, 200]),  # a NaN bound is none
        ("float32", [0, 100, 250], 10, np.nan, [10, 100, 250]),
    ],
)
def test_clip_compares_with_bounds_past_the_dtype_or_nan_as_mxnet(dtype, x, a_min, a_max, want):
    op = OPS["clip"]
    got = op.forward(ctx(), op.parse_attrs({"a_min": a_min, "a_max": a_max}), np.array(x, dtype))
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, np.array(want, dtype))


@pytest.mark.parametrize(
    "at, want",
    [  # MXNet 1.9.1's values: start + i * step in the dtype; integers truncate start and step first
        ({"start": 0, "stop": 1, "step": 0.1}, np.float32([0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.90000004])),
        (
            {"start": 0, "stop": 1, "step": 0.3, "repeat": 2},
            np.float32([0, 0, 0.3, 0.3, 0.6, 0.6, 0.90000004, 0.90000004]),
        ),
        ({"start": 3, "stop": 0, "step": -0.7}, np.float32([3, 2.3, 1.6, 0.9000001, 0.20000005])),
        ({"start": 0, "stop": 3, "step": 0.5, "dtype": "int32"}, np.int32([0] * 6)),
        ({"start": 0.5, "stop": 7, "step": 1.5, "dtype": "int32"}, np.int32([0, 1, 2, 3, 4])),
        ({"start": 0, "stop": 1, "step": 0.1, "dtype": "float64"}, np.arange(10) * 0.1),
    ],
)
def test_arange_computes_in_its_dtype_as_mxnet(at, want):
    op = OPS["arange"]
    a = op.parse_attrs(at)
    y = op.forward(ctx(), a)
    assert y.dtype == want.dtype and y.shape == op.infer(a).shape
    np.testing.assert_array_equal(y, want)


def test_scatter_key_index_arrays_add_repeats():
    op = OPS["scatter_key"]
    at = {"shape": [4], "key": [{"array": 0}]}
    y = check_forward(op, at, [np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 1.0, 3.0, 1.0])], [0, 7, 0, 3])
    assert y.shape == (4,)


BAD_ATTRS = [
    ("concat", {"num_args": 3}, [(2, 3), (2, 3)]),
    ("stack", {"num_args": 1}, [(2, 3), (2, 3)]),
    ("topk", {"k": 5}, [(2, 4)]),
    ("topk", {"k": 9, "axis": None}, [(2, 4)]),  # (k below 1 is the whole axis, as MXNet's)
    ("argsort", {"axis": 2}, [(2, 4)]),
    ("topk", {"ret_typ": "both"}, [(2, 4)]),
    ("argmax", {"axis": 2}, [(2, 4)]),
    ("sort", {"axis": -3}, [(2, 4)]),
    ("pick", {"mode": "raise"}, [(2, 4), (2,)]),
    ("pick", {}, [(2, 4), (3,)]),
    ("take", {"mode": "nearest"}, [(2, 4), (3,)]),
    ("gather_axis", {"axis": 1}, [(2, 4), (3, 4)]),
    ("scatter_axis", {"axis": 1, "shape": [2, 4]}, [(2, 3), (2, 2)]),
    ("one_hot", {"depth": -1}, [(3,)]),
    ("gather_nd", {}, [(3, 5, 0, 5), (0, 2)]),  # (indices of no axis)
    ("slice_like", {}, [(2, 3, 4), (2, 3)]),  # (all axes: the same rank)
    ("slice_like", {"axes": [2]}, [(2, 3, 4), (2, 3)]),
    ("slice_like", {}, [(2, 3, 4), (2, 4, 4)]),  # longer than the data
    ("depth_to_space", {"block_size": 2}, [(1, 6, 2, 2)]),
    ("space_to_depth", {"block_size": 2}, [(1, 1, 3, 4)]),
    ("SequenceLast", {"axis": 2}, [(4, 3, 2)]),
    ("SequenceReverse", {"axis": 1}, [(4, 3, 2)]),  # (axis 0 only, as MXNet)
    ("SequenceLast", {"use_sequence_length": True}, [(4, 3, 2), (4,)]),
    ("InstanceNorm", {}, [(2, 3), (3,), (3,)]),
    ("SoftmaxOutput", {}, [(2, 3), (2, 1)]),  # (MXNet's label is (N,))
    ("SoftmaxOutput", {}, [(2, 3, 4), (2, 3)]),  # data (N, C) unless multi_output or preserve_shape
    ("SoftmaxOutput", {"multi_output": True}, [(2, 3), (2,)]),
    ("SoftmaxOutput", {"normalization": "all"}, [(2, 3), (2,)]),
    ("SoftmaxOutput", {"out_grad": True}, [(2, 3), (2,)]),
    ("LinearRegressionOutput", {}, [(3, 2), (6,)]),
    ("MakeLoss", {"normalization": "sum"}, [(3, 2)]),
    ("slice_axis", {"axis": 0, "begin": 0, "end": 7}, [(3, 4)]),  # (MXNet's bounds, not clipped)
    ("slice_axis", {"axis": 0, "begin": -7, "end": 2}, [(3, 4)]),
    ("slice_axis", {"axis": 1, "begin": 3, "end": 1}, [(3, 4)]),
    ("slice_axis", {"axis": 1, "begin": 5}, [(3, 4)]),
    ("squeeze", {"axis": 0}, [(2, 1)]),
    ("concat", {"dim": 1}, [(2, 3), (3, 3)]),
    ("stack", {}, [(2, 3), (2, 4)]),
    ("batch_dot", {}, [(2, 3, 4), (4, 5)]),
    ("batch_dot", {}, [(2, 3, 4), (3, 4, 5)]),
    ("linalg_gemm2", {"transpose_b": True}, [(2, 3, 4), (2, 4, 5)]),
    ("where", {}, [(3, 3), (2, 3), (2, 3)]),
    ("broadcast_like", {}, [(2, 3), (3, 3)]),
    ("softmax", {"temperature": 0.0}, [(2, 3)]),
    ("softmax", {"use_length": True}, [(2, 3)]),
    ("softmax", {}, [(2, 3), (2,)]),
    ("softmax", {"use_length": True}, [(2, 3), (3,)]),
    ("softmax", {"use_length": True, "axis": 0}, [(2, 3), (2,)]),
    ("log_softmax", {"axis": 2}, [(2, 3)]),
    ("softmax_cross_entropy", {}, [(2, 3), (3,)]),
    ("Activation", {"act_type": "gelu"}, [(2, 3)]),
    ("LeakyReLU", {"act_type": "prelu"}, [(2, 3)]),
    ("LeakyReLU", {"act_type": "leaky"}, [(2, 3), (3,)]),
    ("LeakyReLU", {"act_type": "prelu"}, [(2, 3, 4), (4,)]),
    ("LeakyReLU", {"act_type": "prelu"}, [(2, 3, 4), (3, 1)]),
    ("LeakyReLU", {"act_type": "bogus"}, [(2, 3)]),
    ("elemwise_add", {}, [(2, 3), (3,)]),
    ("elemwise_mul", {}, [(2, 3), (1, 3)]),
    ("FullyConnected", {"num_hidden": 4}, [(2, 3), (4, 2), (4,)]),
    ("Convolution", {"kernel": [3, 3], "num_filter": 2}, [(1, 2, 5, 5), (2, 3, 3, 3), (2,)]),
    ("Convolution", {"kernel": [3, 3], "num_filter": 2, "dilate": [3, 3]}, [(1, 2, 5, 5), (2, 2, 3, 3), (2,)]),
    ("Convolution", {"kernel": [3, 3], "num_filter": 2}, [(1, 2, 5), (2, 2, 3), (2,)]),  # 1-D data, 2-D kernel
    ("Convolution", {"kernel": [3], "num_filter": 2}, [(1, 2, 5), (2, 2, 1, 3), (2,)]),  # 1-D data, 2-D filters
    ("Convolution", {"kernel": [3], "num_filter": 2, "pad": [1, 1]}, [(1, 2, 5), (2, 2, 3), (2,)]),
    ("Pooling", {"kernel": [2], "stride": [2, 2]}, [(1, 2, 5)]),
    ("Deconvolution", {"kernel": [3], "num_filter": 2, "target_shape": [4, 4]}, [(1, 2, 5), (2, 2, 3)]),
    ("Convolution", {"kernel": [3], "num_filter": 2, "layout": "NCHW"}, [(1, 2, 5), (2, 2, 3), (2,)]),
    ("Convolution", {"kernel": [4], "num_filter": 2}, [(1, 2, 3), (2, 2, 4), (2,)]),  # larger than the data
    ("col2im", {"kernel": [2, 2], "output_size": [3]}, [(1, 4, 4)]),  # a 1-D image, a 2-D kernel
    ("col2im", {"kernel": [2], "output_size": [3]}, [(1, 4, 3)]),  # 3 columns; an image of 3 has 2 windows
    ("im2col", {"kernel": [4]}, [(1, 2, 3)]),
    ("Convolution", {"kernel": [3, 3], "num_filter": 2, "num_group": 2}, [(1, 2, 5, 5), (2, 2, 3, 3), (2,)]),
    ("Convolution", {"kernel": [3, 3], "num_filter": 2, "layout": "NHWC"}, [(1, 2, 5, 5), (2, 2, 3, 3), (2,)]),
    ("Convolution", {"kernel": [3, 3], "num_filter": 2, "cudnn_tune": "x" * 200}, [(1, 2, 5, 5), (2, 2, 3, 3), (2,)]),
    ("Deconvolution", {"kernel": [3, 3], "num_filter": 2, "cudnn_tune": "best"}, [(1, 4, 3, 3), (4, 2, 3, 3)]),
    ("Convolution", {"kernel": [6, 1], "num_filter": 2}, [(1, 2, 5, 5), (2, 2, 6, 1), (2,)]),
    ("Pooling", {"kernel": [2, 2], "pooling_convention": "same"}, [(1, 1, 4, 4)]),
    ("Pooling", {"kernel": [2, 2], "pool_type": "lp"}, [(1, 1, 4, 4)]),
    ("Pooling", {"kernel": [2, 2], "pool_type": "lp", "p_value": 4}, [(1, 1, 4, 4)]),
    ("Pooling", {}, [(1, 1, 4, 4)]),
    ("Pooling", {"kernel": [2, 2]}, [(1, 4, 4)]),
    ("Convolution", {"kernel": [3, 3], "num_filter": 2, "num_group": 2}, [(1, 3, 5, 5), (2, 1, 3, 3), (2,)]),
    ("Convolution", {"kernel": [3, 3], "num_filter": 3, "num_group": 2}, [(1, 2, 5, 5), (3, 1, 3, 3), (3,)]),
    ("Convolution", {"kernel": [3, 3], "num_filter": 2, "num_group": 0}, [(1, 2, 5, 5), (2, 2, 3, 3), (2,)]),
    ("Deconvolution", {"kernel": [3, 3], "num_filter": 2}, [(1, 4, 3, 3), (4, 2, 3, 3), (2,)]),  # no_bias: True
    ("Deconvolution", {"kernel": [3, 3], "num_filter": 2, "no_bias": False}, [(1, 4, 3, 3), (4, 2, 3, 3)]),
    ("Deconvolution", {"kernel": [3, 3], "num_filter": 2}, [(1, 4, 3, 3), (2, 4, 3, 3)]),
    ("Deconvolution", {"kernel": [3, 3], "num_filter": 4, "num_group": 2}, [(1, 4, 3, 3), (4, 4, 3, 3)]),
    ("Deconvolution", {"kernel": [3, 3], "num_filter": 2, "num_group": 3}, [(1, 4, 3, 3), (4, 1, 3, 3)]),
    (
        "Deconvolution",
        {"kernel": [3, 3], "num_filter": 2, "stride": [2, 2], "adj": [2, 2]},
        [(1, 4, 3, 3), (4, 2, 3, 3)],
    ),
    ("Deconvolution", {"kernel": [3, 3], "num_filter": 2, "target_shape": [8, 8]}, [(1, 4, 3, 3), (4, 2, 3, 3)]),
    ("Deconvolution", {"kernel": [3, 3], "num_filter": 2, "target_shape": [4, 4]}, [(1, 4, 3, 3), (4, 2, 3, 3)]),
    ("Deconvolution", {"kernel": [3, 3], "num_filter": 2, "pad": [3, 3]}, [(1, 4, 3, 3), (4, 2, 3, 3)]),
    ("Deconvolution", {"kernel": [3, 3], "num_filter": 2, "dilate": [0, 2]}, [(1, 4, 3, 3), (4, 2, 3, 3)]),
    ("Deconvolution", {"kernel": [3, 3], "num_filter": 2}, [(4, 3, 3), (4, 2, 3, 3)]),
    ("Pad", {"mode": "constant", "pad_width": [1, 1, 1, 1]}, [(3, 4)]),
    ("Pad", {"mode": "constant", "pad_width": [0, 0, 1, 1, 1, 1]}, [(1, 3, 4)]),
    ("Pad", {"mode": "constant", "pad_width": [0, 1, 0, 0, 1, 1, 1, 1]}, [(1, 1, 3, 4)]),
    ("Pad", {"mode": "constant", "pad_width": [0, 0, 1, 0, 1, 1, 1, 1]}, [(1, 1, 3, 4)]),
    ("Pad", {"mode": "constant", "pad_width": [0, 0, 0, 0, 1, 1]}, [(1, 1, 3, 4)]),
    ("Pad", {"mode": "constant", "pad_width": [0, 0, 0, 0, -1, 1, 1, 1]}, [(1, 1, 3, 4)]),
    ("Pad", {"mode": "wrap", "pad_width": [0, 0, 0, 0, 1, 1, 1, 1]}, [(1, 1, 3, 4)]),
    ("Pad", {"mode": "reflect", "pad_width": [0, 0, 0, 0, 3, 0, 0, 0]}, [(1, 1, 3, 4)]),
    ("Pad", {"mode": "edge", "pad_width": [0, 0, 0, 0, 1, 0, 0, 0]}, [(1, 1, 0, 4)]),
    ("Pad", {"pad_width": [0, 0, 0, 0, 1, 1, 1, 1]}, [(1, 1, 3, 4)]),
    ("Pad", {"mode": "constant"}, [(1, 1, 3, 4)]),
    ("pad_grad", {"mode": "constant", "pad_width": [0, 0, 0, 0, 3, 3, 0, 0]}, [(1, 1, 4, 4)]),
    ("Pooling", {"kernel": [2, 2], "layout": "NHWC"}, [(1, 4, 4)]),  # (a layout of another rank)
    ("Pooling", {"kernel": [2, 2], "layout": "NHCW"}, [(1, 4, 4, 3)]),
    ("im2col", {"kernel": [3, 3]}, [(1, 1, 2, 4)]),
    ("im2col", {"kernel": [1, 2, 3]}, [(1, 1, 4, 4)]),
    ("im2col", {"kernel": [2, 2], "dilate": [3, 1]}, [(1, 1, 3, 4)]),  # spans 4 rows of 3
    ("im2col", {"kernel": [2, 2], "dilate": [0, 1]}, [(1, 1, 3, 4)]),
    ("col2im", {"kernel": [2, 2], "output_size": [3, 3]}, [(1, 4, 5)]),  # 4 windows, not 5
    ("col2im", {"kernel": [2, 2], "output_size": [3, 3]}, [(1, 6, 4)]),  # 6 is no C*2*2
    ("col2im", {"kernel": [2, 2], "output_size": [3, 3, 3]}, [(1, 4, 4)]),
    ("col2im", {"kernel": [2, 2], "output_size": [3, 3]}, [(1, 1, 2, 2, 2, 3)]),  # 2x2 windows, not 2x3
    ("col2im", {"kernel": [2, 2], "output_size": [3, 3]}, [(1, 1, 2, 3, 2, 2)]),
    ("Dropout", {"p": 1.0}, [(2, 3)]),
    ("Dropout", {"mode": "sometimes"}, [(2, 3)]),
    ("BatchNorm", {}, [(4, 3), (3,), (3,), (2,), (3,)]),
    ("BatchNorm", {"output_mean_var": True}, [(4, 3), (3,), (3,), (3,), (3,)]),
    ("SequenceMask", {"use_sequence_length": True}, [(4, 3), (4,)]),
    ("SequenceMask", {"axis": 2}, [(4, 3, 2)]),
    ("linspace", {"start": 0, "stop": 1, "num": -1}, []),
    ("random_randint", {"low": 2, "high": 2}, []),
    ("tile", {"reps": [2, -1]}, [(2, 3)]),
    ("repeat", {"repeats": -1}, [(2, 3)]),
    ("sum", {"keepdims": 1.0}, [(2, 3)]),  # (a flag is True, False, 1 or 0: not a float)
    ("sum", {"keepdims": 2}, [(2, 3)]),
    ("sum", {"keepdims": "true"}, [(2, 3)]),
]


@pytest.mark.parametrize("name, at, shapes", BAD_ATTRS, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(BAD_ATTRS)])
def test_rejects_bad_attributes_and_shapes(name, at, shapes):
    op = OPS[name]
    with pytest.raises(MXNetError):
        op.infer(op.parse_attrs(at), *[Spec(s, "float32") for s in shapes])


def test_one_shape_twins_empty_one_hots_and_slice_axis_bounds_as_mxnet():
    a, b = np.ones((2, 3), np.float32), np.arange(6, dtype=np.float32).reshape(2, 3)
    check_forward(OPS["elemwise_add"], {}, [a, b], a + b)
    assert OPS["add"].infer({}, Spec((2, 3), "float32"), Spec((3,), "float32")).shape == (2, 3)  # "+" broadcasts
    check_forward(OPS["one_hot"], {"depth": 0}, [np.array([0.0, 1.0])], np.zeros((2, 0)), "float32")
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    check_forward(OPS["slice_axis"], {"axis": 1, "begin": -3, "end": -1}, [x], x[:, 1:3])
    check_forward(OPS["slice_axis"], {"axis": 0, "begin": 3, "end": None}, [x], x[3:])  # empty (MXNet refuses)


def test_errors_of_1d_windows_say_how_the_data_was_taken():
    """1-D data runs as the 2-D op on (N, C, 1, W): a window that does not fit is reported in
    those terms, with the data's own shape and how it was taken."""
    op = OPS["Pooling"]
    with pytest.raises(ShapeError, match=r"kernel \(1, 7\) .*\(1-D data \(2, 2, 3\) is taken as \(2, 2, 1, 3\)"):
        op.infer(op.parse_attrs({"kernel": [7]}), Spec((2, 2, 3), "float32"))


def test_pooling_stride_defaults_to_one_as_in_mxnet():
    """MXNet's Pooling: 'Stride ... Defaults to 1 for each dimension' (Gluon's pool layers differ)."""
    op = OPS["Pooling"]
    x = DISTINCT(np.random.default_rng(15), (1, 2, 4, 5))
    check_forward(op, {"kernel": [2, 2]}, [x], pool_ref(x, "max", (2, 2), (1, 1), (0, 0)))


def _mx_run(name, at, xs, g=None):
    """An op's output and its inputs' cotangents for ``g`` (ones unless given), as float32."""
    op = OPS[name]
    at = op.parse_attrs(at)
    xs = [np.asarray(x, np.float32) for x in xs]
    y = op.forward(Context(), dict(at), *xs)
    cts = vjp_of(op)(Eager(Context()), dict(at), np.ones_like(y) if g is None else g, y, *xs)
    return y, cts


def test_avg_pooling_without_the_padding_divides_as_mxnet():
    """MXNet 1.9.1 (recorded): count_include_pad=False divides each window's sum by its
    elements inside the data; its gradient so too; a window all padding averages to 0."""
    x = np.arange(1, 26, dtype=np.float32).reshape(1, 1, 5, 5)
    at = {"kernel": [3, 3], "stride": [2, 2], "pad": [1, 1], "pool_type": "avg", "count_include_pad": False}
    y, (gx,) = _mx_run("Pooling", at, [x])
    np.testing.assert_allclose(y[0, 0], [[4, 5.5, 7], [11.5, 13, 14.5], [19, 20.5, 22]])
    corner, edge, mid = 0.25, 1 / 6 + 1 / 4, 1 / 9
    np.testing.assert_allclose(gx[0, 0, 0], [corner, edge, 1 / 6, edge, corner], rtol=1e-6)
    np.testing.assert_allclose(gx[0, 0, 2], [1 / 6, 1 / 9 + 1 / 6, mid, 1 / 9 + 1 / 6, 1 / 6], rtol=1e-6)
    at = {**at, "kernel": [3, 2], "stride": [2, 3]}
    np.testing.assert_allclose(_mx_run("Pooling", at, [x])[0][0, 0], [[3.5, 6], [11, 13.5], [18.5, 21]])
    # windows all padding: float64 (MXNet's float32 pooling refuses a pad as wide as the kernel)
    op, x64 = OPS["Pooling"], x.astype(np.float64)
    at = {"kernel": [2, 2], "pad": [2, 2], "pool_type": "avg", "count_include_pad": False}
    y = op.forward(Context(), op.parse_attrs(at), x64)[0, 0]
    assert y.shape == (8, 8) and not y[0].any() and not y[:, 7].any()
    np.testing.assert_allclose(y[1], [0, 1, 1.5, 2.5, 3.5, 4.5, 5, 0])
    # with count_include_pad (the default) the same windows divide by the kernel's size
    at = {**at, "count_include_pad": True}
    y = op.forward(Context(), op.parse_attrs(at), x64)[0, 0, 1]
    np.testing.assert_allclose(y, [0, 0.25, 0.75, 1.25, 1.75, 2.25, 1.25, 0])


def test_full_pooling_is_mxnets():
    """MXNet 1.9.1 (recorded): the full convention's windows on a 5 x 5 image."""
    x = np.arange(25, dtype=np.float32).reshape(1, 1, 5, 5)
    at = {"kernel": [2, 2], "stride": [2, 2], "pooling_convention": "full"}
    assert _mx_run("Pooling", at, [x])[0][0, 0].tolist() == [[6, 8, 9], [16, 18, 19], [21, 23, 24]]
    y = _mx_run("Pooling", {**at, "pool_type": "avg"}, [x])[0][0, 0]
    assert y.tolist() == [[3, 5, 6.5], [13, 15, 16.5], [20.5, 22.5, 24]]
    y = _mx_run("Pooling", {**at, "pool_type": "sum"}, [x])[0][0, 0]
    assert y.tolist() == [[12, 20, 13], [52, 60, 33], [41, 45, 24]]
    at = {"kernel": [3, 3], "stride": [2, 2], "pad": [1, 1], "pool_type": "avg", "pooling_convention": "full"}
    y = _mx_run("Pooling", at, [x])[0][0, 0]
    np.testing.assert_allclose(y, [[4 / 3, 3, 8 / 3], [7, 12, 9], [8, 13, 28 / 3]], rtol=1e-6)
    y = _mx_run("Pooling", {**at, "count_include_pad": False}, [x])[0][0, 0]
    np.testing.assert_allclose(y, [[3, 4.5, 6], [10.5, 12, 13.5], [18, 19.5, 21]], rtol=1e-6)
    y = _mx_run("Pooling", {**at, "stride": [3, 3]}, [x])[0][0, 0]  # (the last windows: padding alone)
    np.testing.assert_allclose(y, [[4 / 3, 11 / 3, 0], [31 / 3, 18, 0], [0, 0, 0]], rtol=1e-6)
    # (the gradient of a cut average divides as its forward does: MXNet 1.9.1's 1-D and 3-D
    # ones divide by the whole kernel there, half of this for the window of x[6] alone)
    _, (gx,) = _mx_run(
        "Pooling",
        {"kernel": [2], "stride": [2], "pool_type": "avg", "pooling_convention": "full"},
        [np.arange(7, dtype=np.float32).reshape(1, 1, 7)],
    )
    assert gx.ravel().tolist() == [0.5] * 6 + [1.0]


def test_lp_pooling_is_mxnets():
    """MXNet 1.9.1 (recorded): p=1 the windows' sums (signed), p=2 the root of the sum of
    squares, p=3 the signed cube root of the sum of cubes; a window of zeros takes no gradient."""
    x = ((np.arange(16.0) - 7) * 0.5).reshape(1, 1, 4, 4)
    at = {"kernel": [2, 2], "stride": [2, 2], "pool_type": "lp"}
    y, (gx,) = _mx_run("Pooling", {**at, "p_value": 1}, [x])
    assert y.ravel().tolist() == [-9, -5, 7, 11] and (gx == 1).all()
    y, (gx,) = _mx_run("Pooling", {**at, "p_value": 2}, [x])
    np.testing.assert_allclose(y.ravel(), [4.9497476, 3.2403703, 4.0620193, 5.87367], rtol=1e-6)
    np.testing.assert_allclose(
        gx.ravel()[:8],
        [-0.70710677, -0.6060915, -0.77151674, -0.6172134, -0.30304575, -0.20203051, -0.15430336, 0.0],
        rtol=1e-6,
    )
    y, (gx,) = _mx_run("Pooling", {**at, "p_value": 3}, [x])
    np.testing.assert_allclose(y.ravel(), [-4.203059, -2.8744485, 3.5236492, 4.9083295], rtol=1e-6)
    np.testing.assert_allclose(
        gx.ravel()[:8],
        [0.6934339, 0.50946164, 0.7564338, 0.48411766, 0.12736541, 0.05660685, 0.03025735, 0.0],
        rtol=1e-5,
    )
    y, (gx,) = _mx_run("Pooling", {**at, "p_value": 2}, [np.array([[[[0, 0, 1, 2], [0, 0, 3, -1]]]])])
    np.testing.assert_allclose(y.ravel(), [0, 3.8729835], rtol=1e-6)
    np.testing.assert_allclose(gx.ravel(), [0, 0, 0.2581989, 0.5163978, 0, 0, 0.77459663, -0.2581989], rtol=1e-6)
    full = {"kernel": [3, 3], "stride": [2, 2], "pad": [1, 1], "pool_type": "lp", "p_value": 2}
    y, _ = _mx_run("Pooling", {**full, "pooling_convention": "full"}, [x])
    np.testing.assert_allclose(
        y.ravel(), [4.9497476, 4.527693, 2, 4.444097, 6.7638745, 4.472136, 3.905125, 6.1032777, 4], rtol=1e-6
    )


def test_float16_lp_pooling_gradients_are_computed_in_float32():
    """y ** 2 and x ** 2 pass float16's range (or underflow) here: the gradient, x ** (p - 1) /
    y ** (p - 1), is computed in float32 and rounded once, as the forward (MXNet 1.9.1: 1.0 and
    4.0e-06, 1.0 and 0.0, 0.976 and 0.1085)."""
    op = OPS["Pooling"]
    for vals, p in (([-1000.0, 2.0], 3), ([1e-7, 0.0], 2), ([0.003, 0.001], 3)):
        x = np.array([[vals]], np.float16)
        x64 = x.astype(np.float64).ravel()
        y64 = np.cbrt((x64**3).sum()) if p == 3 else np.sqrt((x64**2).sum())
        want = x64 ** (p - 1) / y64 ** (p - 1)
        at = op.parse_attrs({"kernel": [2], "stride": [2], "pool_type": "lp", "p_value": p})
        y = op.forward(Context(), dict(at), x)
        (gx,) = vjp_of(op)(Eager(Context()), dict(at), np.ones_like(y), y, x)
        assert gx.dtype == np.float16
        np.testing.assert_allclose(gx.ravel(), want, rtol=2e-3, atol=1e-7)
    # (MXNet's float32 refusal of a pad as wide as the kernel is its max and avg pooling's)
    y = op.forward(
        Context(),
        op.parse_attrs({"kernel": [2, 2], "pad": [2, 2], "pool_type": "lp", "p_value": 2}),
        np.ones((1, 1, 3, 3), np.float32),
    )
    assert y.shape == (1, 1, 6, 6) and y[0, 0, 0, 0] == 0 and y[0, 0, 2, 2] == 2


def test_grouped_convolution_as_mxnet():
    """MXNet 1.9.1 (recorded): filters of group G see only the channels of group G."""
    x = np.arange(32).reshape(1, 4, 2, 4)
    at = {"kernel": [1, 2], "num_filter": 4, "num_group": 4, "no_bias": True}
    y, _ = _mx_run("Convolution", at, [x, np.arange(8).reshape(4, 1, 1, 2) - 3])
    assert y[0, :, 0, 0].tolist() == [-2, -8, 50, 172] and y[0, 3].tolist() == [[172, 179, 186], [200, 207, 214]]
    at = {**at, "num_group": 2, "stride": [1, 2]}
    y, (gx, gw) = _mx_run("Convolution", at, [x, np.arange(16).reshape(4, 2, 1, 2) - 3])
    assert y[0, :, :, 0].tolist() == [[-10, -34], [62, 102], [550, 654], [878, 1046]]
    assert gx[0, :, 0].tolist() == [[-2, 0, -2, 0], [2, 4, 2, 4], [14, 16, 14, 16], [18, 20, 18, 20]]
    assert gw.shape == (4, 2, 1, 2) and gw[0, 0, 0].tolist() == [0 + 2 + 4 + 6, 1 + 3 + 5 + 7]


def test_deconvolution_with_a_bilinear_kernel_upsamples_as_mxnet():
    """d2l's fully convolutional network: a transposed convolution (kernel 4, stride 2, pad 1)
    initialised with a bilinear kernel doubles an image's size; MXNet 1.9.1's values."""
    k = np.array([0.25, 0.75, 0.75, 0.25])
    w = np.outer(k, k).reshape(1, 1, 4, 4)
    at = {"kernel": [4, 4], "stride": [2, 2], "pad": [1, 1], "num_filter": 1}
    y, (gx, gw) = _mx_run("Deconvolution", at, [np.arange(9).reshape(1, 1, 3, 3), w])
    np.testing.assert_allclose(
        y[0, 0],
        [
            [0.0, 0.1875, 0.5625, 0.9375, 1.3125, 1.125],
            [0.5625, 1.0, 1.5, 2.0, 2.5, 2.0625],
            [1.6875, 2.5, 3.0, 3.5, 4.0, 3.1875],
            [2.8125, 4.0, 4.5, 5.0, 5.5, 4.3125],
            [3.9375, 5.5, 6.0, 6.5, 7.0, 5.4375],
            [3.375, 4.6875, 5.0625, 5.4375, 5.8125, 4.5],
        ],
    )
    # for a cotangent of ones: each input's weights that land inside the output, summed
    np.testing.assert_allclose(gx[0, 0], [[3.0625, 3.5, 3.0625], [3.5, 4, 3.5], [3.0625, 3.5, 3.0625]])
    np.testing.assert_allclose(gw[0, 0], [[24, 33, 33, 20], [27, 36, 36, 21], [27, 36, 36, 21], [12, 15, 15, 8]])


def test_pad_modes_as_mxnet():
    """MXNet 1.9.1 (recorded): nd.pad's three modes on the last two axes."""
    x = np.arange(1, 13).reshape(1, 1, 3, 4)
    pw = [0, 0, 0, 0, 1, 2, 2, 1]
    y = _mx_run("Pad", {"mode": "constant", "pad_width": pw, "constant_value": -1}, [x])[0][0, 0]
    assert y.tolist()[:2] == [[-1] * 7, [-1, -1, 1, 2, 3, 4, -1]] and y[4:].tolist() == [[-1] * 7] * 2
    y = _mx_run("Pad", {"mode": "edge", "pad_width": pw}, [x])[0][0, 0]
    assert y[:, 0].tolist() == [1, 1, 5, 9, 9, 9] and y[0].tolist() == [1, 1, 1, 2, 3, 4, 4]
    y = _mx_run("Pad", {"mode": "reflect", "pad_width": pw}, [x])[0][0, 0]
    assert y.tolist()[:2] == [[7, 6, 5, 6, 7, 8, 7], [3, 2, 1, 2, 3, 4, 3]] and y[5].tolist() == [3, 2, 1, 2, 3, 4, 3]


def test_pad_gradients_as_mxnet():
    """MXNet 1.9.1 (recorded): pad's gradient for an arange cotangent, each mode."""
    x = np.zeros((1, 1, 3, 4))
    pw = [0, 0, 0, 0, 2, 1, 3, 2]
    g = np.arange(6 * 9, dtype=np.float32).reshape(1, 1, 6, 9)
    want = {
        "constant": [[21, 22, 23, 24], [30, 31, 32, 33], [39, 40, 41, 42]],
        "edge": [[126, 39, 42, 144], [114, 31, 32, 102], [336, 89, 91, 285]],
        "reflect": [[21, 68, 67, 42], [90, 285, 282, 180], [42, 136, 134, 84]],
    }
    for mode, mx in want.items():
        (gx,) = _mx_run("Pad", {"mode": mode, "pad_width": pw, "constant_value": 5}, [x], g)[1]
        assert gx[0, 0].tolist() == mx, mode


def test_max_pooling_gives_the_gradient_to_the_first_of_equal_maxima_as_mxnet():
    """MXNet 1.9.1 (recorded): each window's gradient goes to its first maximum, row by row;
    equal maxima do not each take it (all-ones 2 x 2 windows gave every input the gradient)."""
    cases = [
        (np.ones((1, 1, 4, 4)), {"kernel": [2, 2], "stride": [2, 2]}, [[1, 0, 1, 0], [0] * 4, [1, 0, 1, 0], [0] * 4]),
        (
            np.array([[1, 3, 3, 2], [3, 0, 1, 3], [0, 0, 0, 0], [0, 0, 0, 0]]).reshape(1, 1, 4, 4),
            {"kernel": [2, 2], "stride": [1, 1]},
            [[0, 2, 1, 0], [1, 0, 1, 1], [1, 1, 1, 0], [0, 0, 0, 0]],
        ),
    ]
    from gradserve.engine.session import Session

    for x, at, mxnet in cases:
        reply = Session("pool").run_batch(
            {
                "ops": [
                    {"op": "array", "out": [1], "at": {"value": x.astype(np.float32)}},
                    {"op": "attach_grad", "in": [1]},
                    {"op": "Pooling", "in": [1], "out": [2], "at": at, "mode": 3},
                    {"op": "sum", "in": [2], "out": [3], "mode": 3},
                    {"op": "backward", "in": [3], "mode": 2},
                    {"op": "read", "in": [1], "at": {"grad": True}},
                ]
            }
        )
        assert reply["values"][0][0, 0].tolist() == mxnet


def test_max_pooling_passes_over_nan_as_mxnet():
    """MXNet 1.9.1 (recorded): max pooling passes over NaN (its comparisons are false) and
    starts from the least finite value: [1, NaN, 3, 2] pools to 3 with the gradient at the 3
    (numpy's max gave NaN, the gradient at the NaN); a window of NaN or -inf gives -3.4e38."""
    from gradserve.engine.session import Session

    nan, inf, least = np.nan, np.inf, float(np.finfo(np.float32).min)
    cases = [
        ([[1, nan], [3, 2]], {"kernel": [2, 2]}, [3.0], [0, 0, 1, 0]),
        ([[nan, nan], [nan, nan]], {"kernel": [2, 2]}, [least], [1, 0, 0, 0]),
        ([[-inf, -inf], [-inf, -inf]], {"kernel": [2, 2]}, [least], [1, 0, 0, 0]),
        (
            [[1, nan, 2], [0, 5, nan], [4, 1, 1]],
            {"kernel": [2, 2], "stride": [1, 1], "pad": [1, 1]},
            [1, 1, 2, 2, 1, 5, 5, 2, 4, 5, 5, 1, 4, 4, 1, 1],
            [3, 0, 3, 0, 4, 0, 3, 1, 2],
        ),
    ]
    for x, at, y, grad in cases:
        reply = Session("nan").run_batch(
            {
                "ops": [
                    {"op": "array", "out": [1], "at": {"value": np.array([[x]], np.float32)}},
                    {"op": "attach_grad", "in": [1]},
                    {"op": "Pooling", "in": [1], "out": [2], "at": at, "mode": 3},
                    {"op": "backward", "in": [2], "mode": 2},
                    {"op": "read", "in": [2, 1], "at": {"grad": False}},
                    {"op": "read", "in": [1], "at": {"grad": True}},
                ]
            }
        )
        assert reply["values"][0].ravel().tolist() == y and reply["values"][2].ravel().tolist() == grad


def test_float16_max_pooling_over_windows_past_2048_gives_one_place_the_gradient():
    """argmax gives float16 indices for float16 data (as MXNet's), exact only to 2048: the
    gradient went to two or three places of a 64 x 64 global pool; MXNet gives it to one."""
    from gradserve.engine.session import Session

    for flat in (2048, 2049, 3001):
        x = np.zeros((1, 1, 64, 64), np.float16)
        x[0, 0].flat[flat] = 1
        reply = Session("f16").run_batch(
            {
                "ops": [
                    {"op": "array", "out": [1], "at": {"value": x}},
                    {"op": "attach_grad", "in": [1]},
                    {"op": "Pooling", "in": [1], "out": [2], "at": {"global_pool": True}, "mode": 3},
                    {"op": "backward", "in": [2], "mode": 2},
                    {"op": "read", "in": [1], "at": {"grad": True}},
                ]
            }
        )
        assert np.flatnonzero(reply["values"][0]).tolist() == [flat]


def test_integer_pow_and_div_gradients_are_computed_in_floating_point_and_truncated_as_mxnet():
    """MXNet 1.9.1 (recorded): d(a ** b)/db of int32 5 ** 3 is 201 (125 log 5), not 125 (log 5
    taken as 1); d(a / b)/db of 7 / 2 is -1 (-7 / 4), not 0; d(3 ** x)/dx of 5 is 266."""
    from gradserve.engine.session import Session

    def grads(op: str, at: dict | None = None) -> list:
        ops = [
            {"op": "array", "out": [1], "at": {"value": np.array([5, 7, -3], np.int32)}},
            {"op": "array", "out": [2], "at": {"value": np.array([3, 2, 2], np.int32)}},
            {"op": "attach_grad", "in": [1]},
            {"op": "attach_grad", "in": [2]},
            {"op": op, "in": [1] if at else [1, 2], "out": [3], "mode": 3, **({"at": at} if at else {})},
            {"op": "backward", "in": [3], "mode": 2},
            {"op": "read", "in": [1] if at else [1, 2], "at": {"grad": True}},
        ]
        reply = Session("int").run_batch({"ops": ops})
        assert "error" not in reply, reply
        return [v.tolist() for v in reply["values"]]

    assert grads("pow") == [[75, 14, -6], [201, 95, -(2**31)]]  # (log -3 is NaN: int32's least, as MXNet)
    assert grads("div") == [[0, 0, 0], [0, -1, 0]]
    assert grads("rpow_scalar", {"scalar": 3.0}) == [[266, 2402, 0]]


# --------------------------------------------------------------------------
# third derivatives through a Session: grad_of with create_graph, three times


def d123(name: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first three derivatives of the elementwise ops, by hand."""
    if name == "exp":
        e = np.exp(x)
        return e, e, e
    if name == "tanh":
        t = np.tanh(x)
        d = 1 - t * t
        return d, -2 * t * d, d * (6 * t * t - 2)
    if name == "sigmoid":
        s = 1 / (1 + np.exp(-x))
        d = s * (1 - s)
        return d, d * (1 - 2 * s), d * (1 - 6 * s + 6 * s * s)
    if name == "pow_scalar":  # scalar 2.5
        return 2.5 * x**1.5, 3.75 * x**0.5, 1.875 * x**-0.5
    if name == "log":
        return 1 / x, -1 / x**2, 2 / x**3
    if name == "rsqrt":
        return -0.5 * x**-1.5, 0.75 * x**-2.5, -1.875 * x**-3.5
    if name == "sin":
        return np.cos(x), -np.sin(x), -np.cos(x)
    raise KeyError(name)


THIRD = [
    ("exp", {}, U(-2, 2)),
    ("tanh", {}, U(-2, 2)),
    ("sigmoid", {}, U(-4, 4)),
    ("pow_scalar", {"scalar": 2.5}, POS),
    ("log", {}, POS),
    ("rsqrt", {}, POS),
    ("sin", {}, U(-3, 3)),
]


def grad_of(head: int, out: int, var: int, create: bool, head_grad: int | None = None) -> dict:
    at: dict[str, Any] = {"variables": [var], "create_graph": create}
    if head_grad is not None:
        at["head_grads"] = [head_grad]
    return {"op": "grad_of", "in": [head], "out": [out], "at": at, "mode": 1}


@pytest.mark.parametrize("name, at, dom", THIRD, ids=[t[0] for t in THIRD])
def test_third_order_elementwise(name, at, dom):
    x = dom(np.random.default_rng(16), (2, 3))
    run = Batches()
    got = run(
        {"op": "array", "in": [], "out": [1], "at": {"value": x}},
        {"op": "attach_grad", "in": [1]},
        {"op": name, "in": [1], "out": [2], "at": at, "mode": 1},
        grad_of(2, 3, 1, True),
        grad_of(3, 4, 1, True),
        grad_of(4, 5, 1, False),
        {"op": "read", "in": [3, 4, 5]},
    )
    for k, (g, want) in enumerate(zip(got, d123(name, x)), 1):
        np.testing.assert_allclose(g, want, rtol=1e-12, atol=1e-12, err_msg=f"{name}: derivative {k}")


def test_third_order_softmax():
    """g1 = J^T w, g2 = grad <g1, u1>, g3 = grad <g2, u2> of softmax along its last axis."""
    rng = np.random.default_rng(17)
    x, w, u1, u2 = (rng.standard_normal((2, 4)) for _ in range(4))

    def ds(z, u):  # the derivative of softmax along u
        s = softmax_ref(z)
        return s * (u - (s * u).sum(-1, keepdims=True))

    def dds(z):  # along u1, then along u2
        s, a = softmax_ref(z), ds(z, u2)
        return a * (u1 - (s * u1).sum(-1, keepdims=True)) - s * (a * u1).sum(-1, keepdims=True)

    run = Batches()
    g1, g2, g3 = run(
        *[{"op": "array", "in": [], "out": [i + 1], "at": {"value": a}} for i, a in enumerate([x, w, u1, u2])],
        {"op": "attach_grad", "in": [1]},
        {"op": "softmax", "in": [1], "out": [5], "mode": 1},
        grad_of(5, 6, 1, True, head_grad=2),
        grad_of(6, 7, 1, True, head_grad=3),
        grad_of(7, 8, 1, False, head_grad=4),
        {"op": "read", "in": [6, 7, 8]},
    )
    np.testing.assert_allclose(g1, ds(x, w), rtol=1e-12, atol=1e-12)  # J is symmetric
    np.testing.assert_allclose(g2, numeric_grad(lambda z: float((w * ds(z, u1)).sum()), x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(g3, numeric_grad(lambda z: float((w * dds(z)).sum()), x), rtol=1e-6, atol=1e-8)
    assert np.abs(g3).max() > 1e-3  # not vacuous


SHAPES = st.lists(st.integers(0, 4), max_size=4).map(tuple)


@given(SHAPES, SHAPES)
@settings(max_examples=300, deadline=None)
def test_broadcast_shapes_is_numpys(a, b):
    try:
        want: Any = tuple(np.broadcast_shapes(a, b))
    except ValueError:
        want = ShapeError
    try:
        got: Any = ops.broadcast_shapes("t", a, b)
    except ShapeError:
        got = ShapeError
    assert got == want


WIRE_KEYS = st.lists(  # keys as they travel: integers, [start, stop, step], null, "..."
    st.one_of(
        st.integers(-6, 6),
        st.tuples(
            st.one_of(st.none(), st.integers(-6, 6)),
            st.one_of(st.none(), st.integers(-6, 6)),
            st.sampled_from([None, 1, 2, -1, -3]),
        ),
        st.none(),
        st.just("..."),
    ),
    max_size=5,
).filter(lambda key: key.count("...") <= 1)  # (two are refused: see test_a_key_holds_one_ellipsis_at_most)


def test_a_key_holds_one_ellipsis_at_most():
    """Two were refused by numpy's indexing, as an index out of range (an IndexError): the key
    is malformed, InvalidInput."""
    with pytest.raises(InvalidInput, match=r"at most one \.\.\. \(ellipsis\)"):
        ops.parse_key("getitem", ["...", 0, "..."])


@given(SHAPES, WIRE_KEYS)
@settings(max_examples=500, deadline=None)
def test_key_shape_is_numpys(shape, raw):
    """The arithmetic path for int and slice keys gives numpy's shape, and its errors."""
    key = ops.parse_key("getitem", [list(k) if isinstance(k, tuple) else k for k in raw])
    try:
        want: Any = np.empty(shape)[key].shape
    except IndexError as e:
        want = str(e)
    try:
        got: Any = ops.key_shape("getitem", shape, key)
    except MXNetError as e:
        got = str(e).removeprefix("getitem: ")
    assert got == want


@given(SHAPES, WIRE_KEYS, st.booleans())
@settings(max_examples=1000, deadline=None)
def test_a_key_is_a_view_where_it_selects_one_run_of_memory(shape, raw, numpy_ints):
    """``is_view_key`` (its quick path for integers and slices, a minibatch's rows, and the
    general one for new axes and an ellipsis) is true where numpy's selection is one run of
    the array's elements in memory order, as MXNet's view is; ``parse_key`` builds the key a
    hand would, numpy's integers included. (Empty selections: the next test.)"""
    if numpy_ints:
        raw = [np.int64(k) if type(k) is int else k for k in raw]
    key = ops.parse_key("getitem", [list(k) if isinstance(k, tuple) else k for k in raw])
    want = tuple(slice(*k) if isinstance(k, tuple) else Ellipsis if isinstance(k, str) else k for k in raw)
    assert key == want and [type(k) for k in key] == [int if isinstance(k, np.integer) else type(k) for k in want]
    whole = np.arange(math.prod(shape)).reshape(shape)
    try:
        got = np.asarray(whole[key]).ravel()
    except IndexError:
        return  # (refused by the indexing itself)
    if got.size == 0:
        return
    run = bool((got == np.arange(got[0], got[0] + got.size)).all())
    assert ops.is_view_key(key, shape) == run
    assert ops.general_view_key(key, shape) == run


@pytest.mark.parametrize(
    ("shape", "key", "view"),
    [
        ((5, 3, 0), (1,), True),  # the empty axis after the whole ones that follow the key
        ((5, 3, 0), (slice(1, 3),), True),  # after the range
        ((2, 0, 3), (1,), False),  # before any range: an empty block
        ((0,), (), False),
        ((4, 0), (slice(1, 1),), False),
    ],
)
def test_an_empty_selection_is_a_view_where_its_empty_axis_follows_the_block(shape, key, view):
    """Of the empty selections (which share no element either way: nothing a program sees),
    the rule takes those whose empty axis comes after its range, or after the whole axes that
    follow the key; the quick path and the general one agree on them."""
    assert ops.is_view_key(key, shape) == view
    assert ops.general_view_key((None, *key), shape) == view


@pytest.mark.parametrize("name", sorted(CASES))
def test_integer_inputs_give_what_infer_says(name):
    """Where an op takes int32 inputs, its forward gives the shape and dtype its inference
    promises (numpy widens integer sums to int64 unless told not to)."""
    op, case = OPS[name], CASES[name]
    if not op.inputs:
        pytest.skip("no inputs")
    rng = np.random.default_rng(3)
    xs = [(x * 3).round().astype("int32") for x in make_inputs(case, "float64", rng)]
    at = op.parse_attrs(case.at)
    try:
        spec = op.infer(at, *[Spec(tuple(x.shape), x.dtype.name) for x in xs])
        with np.errstate(all="ignore"):  # as a batch runs (log1p(-1) on int32 is INT_MIN, as in MXNet)
            y, _ = run_forward(op, at, xs, case.training)
    except MXNetError:
        pytest.skip(f"{name} refuses int32 inputs")
    assert (y.shape, y.dtype.name) == spec, f"{name}: infer says {spec}, forward gives {y.shape} {y.dtype}"


def test_non_finite_scalars_on_integer_arrays_are_cast_as_mxnet_casts_them():
    """MXNet casts a scalar operand to the array's dtype as C does: NaN, infinities and values
    out of int32's range become its minimum on x86 (checked with MXNet 1.9.1), no error."""
    import platform

    s = Session("t")
    s.arrays[1] = np.arange(3, dtype=np.int32)
    for v in (float("inf"), float("nan"), 1e20):
        ops = [
            {"op": "add_scalar", "in": [1], "out": [2], "at": {"scalar": v}},
            {"op": "mul_scalar", "in": [1], "out": [3], "at": {"scalar": v}},
            {"op": "greater_scalar", "in": [1], "out": [4], "at": {"scalar": v}},
            {"op": "clip", "in": [1], "out": [5], "at": {"a_min": -v if v == v else 0.0, "a_max": 1e30}},
            {"op": "read", "in": [2, 3, 4]},
            {"op": "free", "in": [2, 3, 4, 5]},
        ]
        r = s.run_batch({"ops": ops})
        assert "error" not in r, r
        if platform.machine() in ("x86_64", "AMD64"):
            low = -(2**31)
            assert [a.tolist() for a in r["values"]] == [[low, low + 1, low + 2], [0, low, 0], [1, 1, 1]]
    r = s.run_batch({"ops": [{"op": "update", "in": [1], "at": {"fn": "add", "scalar": float("inf")}}]})
    assert "error" not in r, r


def test_integer_powers_are_mxnets():
    """Computed in floating point and truncated, as MXNet 1.9.1 does (checked with it)."""
    s = Session("t")
    r = s.run_batch(
        {
            "ops": [
                {"op": "array", "out": [1], "at": {"value": {"dtype": "int32", "shape": [4], "data": [2, 3, -2, 0]}}},
                {"op": "pow_scalar", "in": [1], "out": [2], "at": {"scalar": -1}},
                {"op": "rpow_scalar", "in": [1], "out": [3], "at": {"scalar": 2}},
                {"op": "pow_scalar", "in": [1], "out": [4], "at": {"scalar": 2}},
                {"op": "read", "in": [2, 3, 4]},
            ]
        }
    )
    assert "error" not in r, r
    got = [v.tolist() for v in r["values"]]
    assert got == [[0, 0, 0, -(2**31)], [4, 8, 0, 1], [4, 9, 4, 0]]
    assert all(v.dtype == np.int32 for v in r["values"])


SCALAR_OPS = [op.name for op in OPS.ops() if op.name.endswith("_scalar")]
SCALAR_REFS: dict[str, Callable[[np.ndarray, float], Any]] = {  # numpy with a Python float
    "add_scalar": lambda x, s: x + s,
    "sub_scalar": lambda x, s: x - s,
    "rsub_scalar": lambda x, s: s - x,
    "mul_scalar": lambda x, s: x * s,
    "div_scalar": lambda x, s: x / s,
    "rdiv_scalar": lambda x, s: s / x,
    "pow_scalar": lambda x, s: x**s,
    "rpow_scalar": lambda x, s: s**x,
    "maximum_scalar": np.maximum,
    "minimum_scalar": np.minimum,
}
TRICKY_SCALARS = [0.0, -0.0, 1.0001, -2.5, 1e-45, 1e-8, 7e4, 1e39, 1e300, float("inf"), -float("inf"), float("nan")]


@pytest.mark.parametrize("name", SCALAR_OPS)
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_scalar_ops_cast_their_scalar_as_numpy_does(name, dtype):
    """Scalar ops take the scalar as a cached rank-0 array of the input's dtype: the result
    is bit for bit numpy's with a Python float (signed zeros, NaN, overflow included)."""
    op = OPS[name]
    x = np.array([-3.0, -0.5, -0.0, 0.0, 0.25, 2.0, 1e-3, 6e4], dtype)
    with np.errstate(all="ignore"):
        for s in TRICKY_SCALARS * 2:  # the second time round from the cache
            got = op.forward(ctx(0, False), op.parse_attrs({"scalar": s}), x)
            assert isinstance(got, np.ndarray) and (got.shape, got.dtype) == (x.shape, x.dtype)
            ref = SCALAR_REFS.get(name)
            if ref is None:  # the comparisons: 1 or 0 in x's dtype
                continue
            r = np.asarray(ref(x, s)).astype(dtype)
            np.testing.assert_array_equal(got.view(f"u{x.itemsize}"), r.view(f"u{x.itemsize}"), err_msg=f"{s!r}")
    cached = ops.scalar_array(1.0001, np.dtype(dtype))
    assert cached.ndim == 0 and cached.dtype == dtype and not cached.flags.writeable
    assert ops.scalar_array(-0.0, np.dtype(dtype)) == 0.0 and np.signbit(ops.scalar_array(-0.0, np.dtype(dtype)))


ARRAY_SAMPLERS = [
    # op, parameter arrays, mean and variance of each element's draws
    ("sample_normal", ([0.0, 10.0], [1.0, 0.5]), [0.0, 10.0], [1.0, 0.25]),
    ("sample_uniform", ([0.0, -3.0], [1.0, 1.0]), [0.5, -1.0], [1 / 12, 16 / 12]),
    ("sample_exponential", ([0.5, 4.0],), [2.0, 0.25], [4.0, 1 / 16]),
    ("sample_poisson", ([3.0, 0.0],), [3.0, 0.0], [3.0, 0.0]),
    ("sample_gamma", ([2.0, 9.0], [0.5, 1.0]), [1.0, 9.0], [0.5, 9.0]),
    ("sample_negative_binomial", ([3.0, 1.0], [0.4, 1.0]), [4.5, 0.0], [11.25, 0.0]),
    ("sample_generalized_negative_binomial", ([2.0, 5.0], [0.5, 0.0]), [2.0, 5.0], [4.0, 5.0]),
]


@pytest.mark.parametrize("name, params, mean, var", ARRAY_SAMPLERS)
def test_array_samplers_draw_each_elements_distribution(name, params, mean, var):
    """param.shape + shape, float32 whatever the parameters' dtype (float16/64 by dtype);
    each element's 20,000 draws have its mean and variance (about 5 standard errors); a seed
    repeats them."""
    op = OPS[name]
    xs = [np.array(p, dtype=np.float64) for p in params]

    def draw(seed, **at):
        a = op.parse_attrs(at)
        y = op.forward(Context(seed), a, *xs)
        assert op.infer(a, *[Spec(x.shape, "float64") for x in xs]) == (y.shape, y.dtype.name)
        return y

    y = draw(2, shape=[20000], dtype="float64")
    assert y.shape == (2, 20000)
    for row, m, v in zip(y, mean, var):
        assert abs(row.mean() - m) <= 5 * np.sqrt(v / row.size) + 1e-12, name
        assert (v == 0 and row.var() == 0) or abs(row.var() / v - 1) < 0.1, name
    assert np.array_equal(y, draw(2, shape=[20000], dtype="float64"))
    assert (draw(0, shape=[3, 4]).shape, draw(0).dtype) == ((2, 3, 4), np.float32)
    assert draw(0).shape == (2,) and draw(0, dtype="float16").dtype == np.float16


@pytest.mark.parametrize(
    "name, params, at, words",
    [
        (
            "sample_normal",
            ([0.0, 1.0], [1.0, -1.0]),
            {},
            r"sigma must be non-negative and finite, got -1.0 at index \[1\]",
        ),
        ("sample_normal", ([np.nan], [1.0]), {}, "mu must be finite"),
        ("sample_exponential", ([0.0],), {}, "lam must be positive"),
        ("sample_poisson", ([-1.0],), {}, "lam must be non-negative"),
        (
            "sample_gamma",
            ([[1.0, -2.0]], [[1.0, 1.0]]),
            {},
            r"alpha must be positive and finite, got -2.0 at index \[0, 1\]",
        ),
        ("sample_negative_binomial", ([1.0], [1.5]), {}, r"p must be in \(0, 1\]"),
        ("sample_generalized_negative_binomial", ([1.0], [-0.5]), {}, "alpha must be non-negative"),
        ("sample_normal", ([0.0], [1.0]), {"dtype": "int32"}, "dtype must be one of float16, float32, float64"),
    ],
)
def test_array_samplers_refuse_parameters_out_of_range(name, params, at, words):
    """MXNet draws nonsense there (or loops for good: a negative gamma shape): refused, saying
    which parameter, its value and where."""
    op = OPS[name]
    xs = [np.array(p, dtype=np.float32) for p in params]
    with pytest.raises(InvalidInput, match=words):
        a = op.parse_attrs(at)
        op.infer(a, *[Spec(x.shape, "float32") for x in xs])
        op.forward(Context(0), a, *xs)


def test_array_samplers_check_their_parameters_shapes_and_dtypes():
    op = OPS["sample_gamma"]
    at = op.parse_attrs({"shape": [2]})
    with pytest.raises(ShapeError, match=r"one shape: alpha has \(3,\), beta has \(2,\)"):
        op.infer(at, Spec((3,), "float32"), Spec((2,), "float32"))
    with pytest.raises(InvalidInput, match="one dtype: alpha is float64, beta is float32"):
        op.infer(at, Spec((3,), "float64"), Spec((3,), "float32"))
    # integer parameters are taken (MXNet's too); the draws are float32
    assert op.infer(at, Spec((3,), "int32"), Spec((3,), "int32")) == ((3, 2), "float32")


def test_multinomial_draws_each_rows_distribution():
    """Indices of data.shape[:-1] + shape (shape (1,) for one 1-D distribution, as MXNet's),
    with the row's frequencies, never a category of probability 0; int32 by default."""
    op = OPS["sample_multinomial"]
    p = np.array([[0.1, 0.2, 0.7, 0.0], [0.0, 0.5, 0.0, 0.5], [0.0, 0.0, 0.0, 1.0]])
    at = op.parse_attrs({"shape": [20000]})
    y = op.forward(Context(4), at, p)
    assert (y.shape, y.dtype) == ((3, 20000), np.int32)
    for row, probs in zip(y, p):
        freq = np.bincount(row, minlength=4) / row.size
        assert np.all(freq[probs == 0] == 0)
        assert np.all(np.abs(freq - probs) <= 5 * np.sqrt(probs * (1 - probs) / row.size) + 1e-12)
    assert np.array_equal(y, op.forward(Context(4), at, p))
    one = op.parse_attrs({})
    assert op.forward(Context(0), one, p[0]).shape == (1,) and op.forward(Context(0), one, p).shape == (3,)
    assert op.infer(op.parse_attrs({"shape": [2, 5]}), Spec((4, 3, 6), "float16")) == ((4, 3, 2, 5), "int32")
    assert op.infer(op.parse_attrs({"shape": [2], "dtype": "uint8"}), Spec((6,), "float32")) == ((2,), "uint8")
    f = op.forward(Context(0), op.parse_attrs({"shape": [7], "dtype": "float64"}), p.astype(np.float16))
    assert f.dtype == np.float64 and set(np.unique(f)) <= {0.0, 1.0, 2.0, 3.0}


@pytest.mark.parametrize(
    "data, at, words",
    [
        ([[0.5, 0.6]], {}, "must sum to 1, got 1.1 "),
        ([0.5, np.nan, 0.5], {}, "non-negative and finite, got nan"),
        ([1.5, -0.5], {}, "non-negative and finite, got -0.5"),
        ([0.5, 0.5], {"dtype": "int64"}, "dtype must be one of float16, float32, float64, int32, uint8"),
    ],
)
def test_multinomial_refuses_what_is_not_a_distribution(data, at, words):
    """MXNet gives indices past the last category there, or the first one: refused."""
    op = OPS["sample_multinomial"]
    x = np.array(data, dtype=np.float32)
    with pytest.raises(InvalidInput, match=words):
        a = op.parse_attrs(at)
        op.infer(a, Spec(x.shape, "float32"))
        op.forward(Context(0), a, x)


def test_multinomial_refuses_inputs_of_no_categories():
    op = OPS["sample_multinomial"]
    at = op.parse_attrs({})
    with pytest.raises(ShapeError, match="0-d"):
        op.infer(at, Spec((), "float32"))
    with pytest.raises(ShapeError, match="last axis is empty"):
        op.infer(at, Spec((2, 0), "float32"))
    with pytest.raises(InvalidInput, match="must be float16, float32 or float64, got int32"):
        op.infer(at, Spec((2,), "int32"))
    with pytest.raises(InvalidInput, match="300 categories do not fit dtype uint8"):
        op.infer(op.parse_attrs({"dtype": "uint8"}), Spec((300,), "float32"))


# --------------------------------------------------------------------------
# special functions


def _run(name: str, x, **at) -> np.ndarray:
    op = OPS[name]
    return op.forward(ctx(), op.parse_attrs(at), np.asarray(x))


def test_special_functions_give_mxnets_values_at_poles_and_edges():
    """MXNet 1.9.1's answers (float32): +-inf at erfinv's ends, NaN past them; gamma NaN at the
    negative integers and +-inf at +-0; gammaln inf at every pole; overflow is inf."""
    x = np.array([-3, -2.5, -0.0, 0, 1, 171, 172, np.nan], np.float32)
    # (MXNet's float32 arithmetic is 2 units of the last place off at -2.5: -0.9453086, where
    # the rounded value is -0.9453087)
    with np.errstate(invalid="ignore"):
        np.testing.assert_allclose(
            _run("gamma", x),
            np.array([np.nan, -0.9453086, -np.inf, np.inf, 1, np.inf, np.inf, np.nan], np.float32),
            rtol=2.5e-7,
        )
        np.testing.assert_allclose(
            _run("gammaln", x),
            np.array([np.inf, -0.056243714, np.inf, np.inf, 0, 706.5731, 711.71473, np.nan], np.float32),
            rtol=1.2e-7,
        )
    np.testing.assert_allclose(_run("gammaln", np.array([1e10], np.float32)), [2.2025850e11], rtol=1.2e-7)
    np.testing.assert_array_equal(
        _run("erfinv", np.array([-1, 1, 1.5, -2, 0, np.nan], np.float32)),
        np.array([-np.inf, np.inf, np.nan, np.nan, 0, np.nan], np.float32),
    )
    np.testing.assert_array_equal(
        _run("erf", np.array([-3, -0.5, 0, 0.3, 4, np.inf], np.float32)),
        np.array([-0.9999779, -0.5204999, 0, 0.32862678, 1, 1], np.float32),
    )
    # digamma: inf at the poles, as MXNet's gammaln gradient
    np.testing.assert_array_equal(_run("digamma", np.array([0, -3, np.inf, -np.inf])), [np.inf, np.inf, np.inf, np.nan])


def test_special_functions_on_integers_truncate_as_mxnets():
    """Computed in float64 and cast back: erf of int32 1 and 2 is 0, gamma's is 1."""
    x = np.array([1, 2, 3], np.int32)
    # (erfinv's 1 is inf, cast as MXNet casts it: int32's minimum)
    for name, want in (("erf", [0, 0, 0]), ("gamma", [1, 1, 2]), ("gammaln", [0, 0, 0]), ("erfinv", [-(2**31), 0, 0])):
        y = _run(name, x)
        assert y.dtype == np.int32 and y.tolist() == want, name
    y = _run("erf", np.array([0.5, 2], np.float16))
    assert y.dtype == np.float16 and y.tolist() == [np.float16(0.5205), np.float16(0.995)]


def test_erfinv_and_polygamma_are_accurate_in_float64():
    from gradserve.engine.ops_math import erfinv64, polygamma64

    known = {0.5: 0.4769362762044699, 0.999: 2.326753765513525}
    np.testing.assert_allclose(erfinv64(np.array(list(known))), list(known.values()), rtol=2e-15)
    y = np.array([1e-4, -3e-5])  # its series: sqrt(pi)/2 (y + pi/12 y^3 + 7 pi^2/480 y^5 + ...)
    series = np.sqrt(np.pi) / 2 * (y + np.pi / 12 * y**3 + 7 * np.pi**2 / 480 * y**5)
    np.testing.assert_allclose(erfinv64(y), series, rtol=2e-16)
    y = np.concatenate([np.linspace(-0.999999, 0.999999, 4001), [1 - 1e-12, -1 + 1e-15, 1e-300]])
    np.testing.assert_allclose(np.vectorize(math.erf)(erfinv64(y)), y, rtol=4e-15, atol=0)
    # within 1e-12 of +-1 the fit starts far off: erfc of the root gives 1 - |y| back, and the
    # inverse rises (it gave 5.46 at the last float64 below 1, where the root is 5.8636)
    q = np.array([1e-12, 1e-13, 1e-14, 1e-15, 1.1102230246251565e-16])
    x = erfinv64(1.0 - q)
    np.testing.assert_allclose(np.vectorize(math.erfc)(x), 1.0 - (1.0 - q), rtol=2e-14)
    assert np.all(np.diff(x) > 0) and x[-1] == pytest.approx(5.8635847487551676, rel=1e-15)
    np.testing.assert_array_equal(erfinv64(q - 1.0), -x)
    zeta3 = 1.2020569031595942
    np.testing.assert_allclose(
        polygamma64(0, np.array([1.0, 0.5, -1.5, 1e-3])),
        [-0.5772156649015329, -1.9635100260214235, 0.7031566406452432, -1000.5755719318103],
        rtol=1e-14,
    )
    np.testing.assert_allclose(polygamma64(1, np.array([1.0, 0.5])), [np.pi**2 / 6, np.pi**2 / 2], rtol=1e-14)
    np.testing.assert_allclose(polygamma64(2, np.array([1.0])), [-2 * zeta3], rtol=1e-14)
    xs = np.linspace(-7.3, 30.0, 2001)
    xs = xs[np.abs(xs - np.round(xs)) > 0.01]
    for n in range(4):
        np.testing.assert_allclose(polygamma64(n, xs), polygamma_ref(xs, n), rtol=1e-11, atol=1e-11, err_msg=str(n))


def test_special_function_gradients_at_mxnets_points():
    """The gradients MXNet 1.9.1 gives at these points (float32). Its float32 digamma is off
    in the 6th digit at negative points (0.03648992 at -0.5, where psi(-0.5) = 0.036489974):
    ours is the rounded value."""
    x = np.array([-1.5, -0.5, 0.3, 1, 2.5, 4], np.float32)
    g = np.ones_like(x)
    want = {
        "erf": [0.11893028, 0.87878257, 1.0312608, 0.41510749, 2.1782841e-03, 1.2698234e-07],
        "gamma": [1.6617506, -0.12935339, -10.478042, -0.5772157, 0.9347348, 7.5367079],
        "gammaln": [0.70315677, 0.03648992, -3.502524, -0.5772157, 0.70315677, 1.2561177],
    }
    for name, w in want.items():
        op = OPS[name]
        y = op.forward(ctx(), {}, x)
        (gx,) = vjp_of(op)(Eager(ctx()), {}, g, y, x)
        assert gx.dtype == np.float32
        np.testing.assert_allclose(gx, w, rtol=2e-6, err_msg=name)


# --------------------------------------------------------------------------
# LeakyReLU's gelu, prelu and rrelu


def _leaky(x, *gamma, training=False, seed=0, **at):
    op = OPS["LeakyReLU"]
    at = op.parse_attrs(at)
    assert op.infer(at, *[Spec(a.shape, a.dtype.name) for a in (x, *gamma)]) == (x.shape, x.dtype.name)
    node_at = dict(at)
    return op.forward(ctx(seed, training), node_at, x, *gamma), node_at


def test_prelu_matches_gamma_to_axes_1_and_0_as_mxnet():
    """MXNet's expand_shape: gamma's last axis on data's axis 1 (a slope per channel) unless
    the lengths differ, then on axis 0: a (2,) gamma on (2, 3, 4) data is one slope per sample."""
    x = (np.arange(-12, 12).reshape(2, 3, 4) * 0.5).astype(np.float32)
    y, _ = _leaky(x, np.array([0.1, 0.2, 0.3], np.float32), act_type="prelu")
    np.testing.assert_allclose(y[0, :, 0], [-0.6, -0.8, -0.6], rtol=1e-6)
    y, _ = _leaky(x, np.array([0.1, 0.2], np.float32), act_type="prelu")
    np.testing.assert_allclose(y[0, :, 0], [-0.6, -0.4, -0.2], rtol=1e-6)  # 0.1 for all of sample 0
    y, _ = _leaky(np.array([-2.0, 3.0], np.float32), np.array([0.5, 0.25], np.float32), act_type="prelu")
    assert y.tolist() == [-1.0, 3.0]  # 1-d data: one slope per element


def test_leaky_signs_of_zero_are_mxnets():
    """MXNet's float32 LeakyReLU with slope 0 runs oneDNN's relu: +0 left of 0, where x * 0
    gives -0 (printed "-0."); its other dtypes, other slopes and prelu keep x * slope's sign
    (values from MXNet 1.9.1)."""
    x = np.array([-1.0, 2.0, -3.0, -0.0, 0.0])
    for dtype, slope, signs in [
        (np.float32, 0.0, [False, False, False, False, False]),
        (np.float32, -0.0, [False, False, False, False, False]),
        (np.float32, 0.25, [True, False, True, True, False]),
        (np.float64, 0.0, [True, False, True, True, False]),
        (np.float16, 0.0, [True, False, True, True, False]),
    ]:
        y, _ = _leaky(x.astype(dtype), act_type="leaky", slope=slope)
        assert y.dtype == dtype and np.signbit(y).tolist() == signs, (dtype, slope)
    y, _ = _leaky(x.astype(np.float32), np.array([0.0], np.float32), act_type="prelu")
    assert np.signbit(y).tolist() == [True, False, True, True, False]


def test_prelu_gradients_are_mxnets():
    op = OPS["LeakyReLU"]
    x = (np.arange(-12, 12).reshape(2, 3, 4) * 0.5).astype(np.float32)
    gamma = np.array([0.1, 0.2, 0.3], np.float32)
    y, at = _leaky(x, gamma, act_type="prelu")
    g = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    gx, gg = vjp_of(op)(Eager(ctx()), at, g, y, x, gamma)
    np.testing.assert_allclose(gx[0], [[0, 0.1, 0.2, 0.3], [0.8, 1, 1.2, 1.4], [2.4, 2.7, 3, 3.3]], rtol=1e-6)
    assert gx[1, 0].tolist() == [1.2000000476837158, 13, 14, 15]  # x = 0 takes gamma's slope
    assert gg.dtype == np.float32 and gg.tolist() == [-29, -69, -45]


def test_prelu_and_gamma_errors_are_clear():
    op = OPS["LeakyReLU"]
    with pytest.raises(InvalidInput, match="prelu takes 2 inputs"):
        op.infer(op.parse_attrs({"act_type": "prelu"}), Spec((2, 3), "float32"))
    with pytest.raises(InvalidInput, match="gamma is prelu's"):
        op.infer(op.parse_attrs({"act_type": "elu"}), Spec((2, 3), "float32"), Spec((3,), "float32"))
    with pytest.raises(ShapeError, match=r"cannot broadcast gamma \(4,\) to data \(2, 3, 4\)"):
        op.infer(op.parse_attrs({"act_type": "prelu"}), Spec((2, 3, 4), "float32"), Spec((4,), "float32"))
    with pytest.raises(MXNetError, match="gamma is float64, data float32"):
        op.infer(op.parse_attrs({"act_type": "prelu"}), Spec((2, 3), "float32"), Spec((3,), "float64"))
    with pytest.raises(InvalidInput, match="act_type must be one of"):
        op.infer(op.parse_attrs({"act_type": "swish"}), Spec((2, 3), "float32"))


def test_gelu_is_the_erf_form_as_mxnets():
    """MXNet 1.9.1's gelu is x Phi(x) with erf, not the tanh approximation (-0.0036374 at -3).
    Its float32 arithmetic loses digits in the left tail (-0.00404987 at -3, 1 + erf
    cancelling): ours is computed with erfc, accurate there."""
    x = np.array([-3, -1.5, -0.5, 0, 0.3, 1, 2.5, 4], np.float32)
    y, _ = _leaky(x, act_type="gelu")
    mx32 = [-0.00404987, -0.10021085, -0.15426877, 0, 0.18537343, 0.84134465, 2.4844759, 3.9998732]
    np.testing.assert_allclose(y, mx32, rtol=5e-5)
    np.testing.assert_allclose(y[0], -0.0040496940948903, rtol=1e-7)
    g = vjp_of(OPS["LeakyReLU"])(
        Eager(ctx()), OPS["LeakyReLU"].parse_attrs({"act_type": "gelu"}), np.ones_like(x), y, x
    )
    want = [-0.011945643, -0.12746918, 0.13250488, 0.5, 0.7323278, 1.0833155, 1.0376111, 1.0005037]  # MXNet, float64
    np.testing.assert_allclose(g[0], want, rtol=1e-6)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_elu_selu_and_expm1_gradients_stay_finite_far_from_0(dtype):
    """exp(x) overflows right of 0 (float32 past 88.7, float16 past 11): elu's and selu's
    gradients there are their slopes (MXNet's 1 and lambda), not inf * 0; expm1's far left is
    exp(x), not y + 1 (which rounds to 0)."""
    x = np.array([-100.0, -30.0, -5.0, 5.0, 12.0, 20.0, 50.0, 89.0, 100.0], dtype)
    op = OPS["LeakyReLU"]
    for kind, right in [("elu", 1.0), ("selu", 1.0507009873554805)]:
        at = op.parse_attrs({"act_type": kind, "slope": 0.25})
        y = op.forward(ctx(), dict(at), x)
        got = vjp_of(op)(Eager(ctx()), at, np.ones_like(x), y, x)[0]
        assert np.isfinite(got).all(), (kind, got)
        np.testing.assert_allclose(got[3:], right, rtol=1e-3)
        assert (got[:3] >= 0).all()
    op = OPS["expm1"]
    at = op.parse_attrs({})
    x = np.array([-100.0, -30.0, -5.0], dtype)
    g = vjp_of(op)(Eager(ctx()), at, np.ones_like(x), op.forward(ctx(), at, x), x)[0]
    np.testing.assert_allclose(g, np.exp(x.astype(np.float64)).astype(dtype), rtol=1e-3)


def test_rrelu_uses_the_middle_slope_in_prediction_and_draws_in_training():
    x = np.array([[-3, -1.5, -0.5, 0], [0.3, 1, 2.5, 4]], np.float32)
    y, at = _leaky(x, act_type="rrelu")
    assert at["_kept"] is None
    np.testing.assert_allclose(y[0], [-0.6885, -0.34425, -0.11475, 0], rtol=1e-6)  # MXNet's: slope 0.2295
    assert y[1].tolist() == x[1].tolist()
    big = np.full((50, 40), -2.0, np.float32)
    y, at = _leaky(big, training=True, seed=3, act_type="rrelu", lower_bound=0.1, upper_bound=0.5)
    slopes = y / big
    assert at["_kept"].dtype == np.float32 and np.array_equal(at["_kept"], slopes)
    assert 0.1 <= slopes.min() < 0.12 and 0.48 < slopes.max() <= 0.5 and len(np.unique(slopes)) > 1000
    again, _ = _leaky(big, training=True, seed=3, act_type="rrelu", lower_bound=0.1, upper_bound=0.5)
    assert np.array_equal(again, y)  # the session's generator: a seed repeats the draws
    op = OPS["LeakyReLU"]
    (gx,) = vjp_of(op)(Eager(ctx()), at, np.ones_like(big), y, big)
    assert np.array_equal(gx, slopes)  # the gradient uses the slope drawn


# --------------------------------------------------------------------------
# softmax's length


def test_softmax_with_length_gives_mxnets_values_and_gradient():
    """MXNet 1.9.1's: 0 past each length (every position for a length of 0), gradient 0 there."""
    op = OPS["softmax"]
    x = (np.arange(12).reshape(3, 4) * 0.3 - 1).astype(np.float32)
    at = op.parse_attrs({"use_length": True})
    length = np.array([2, 4, 0], np.int32)
    y = op.forward(ctx(), at, x, length)
    want = [[0.42555746, 0.5744425, 0, 0], [0.15079361, 0.20355009, 0.27476388, 0.37089244], [0, 0, 0, 0]]
    np.testing.assert_allclose(y, want, rtol=2e-7)
    assert y.dtype == np.float32 and (y[2] == 0).all() and (y[0, 2:] == 0).all()
    g = (np.arange(12).reshape(3, 4) * 0.1 + 0.5).astype(np.float32)
    gx, gl = vjp_of(op)(Eager(ctx()), at, g, y, x, length)
    assert gl is None
    want = [[-0.02444584, 0.02444583, 0, 0], [-0.02813442, -0.01762248, 0.00368854, 0.04206826], [0, 0, 0, 0]]
    np.testing.assert_allclose(gx, want, rtol=1e-5, atol=1e-8)
    x3 = (np.arange(24).reshape(2, 3, 4) * 0.1).astype(np.float32)
    y = op.forward(ctx(), op.parse_attrs({"use_length": True, "axis": 1}), x3, np.array([[1, 2, 3, 3], [0, 3, 2, 1]]))
    np.testing.assert_allclose(y[1, :, 1], [0.21198271, 0.3162411, 0.4717762], rtol=3e-7)
    assert y[1, :, 0].tolist() == [0, 0, 0] and y[1, 1:, 3].tolist() == [0, 0]
    y = op.forward(ctx(), op.parse_attrs({"use_length": True, "dtype": "float64"}), x, np.array([1, 2, 3]))
    assert y.dtype == np.float64
    np.testing.assert_allclose(y[2], [0.23969446, 0.32355371, 0.43675181, 0], rtol=1e-7)


@pytest.mark.parametrize("length", [[1, 2, 5], [-1, 2, 3], [1, np.nan, 2], [1, 2.5, 3]])
def test_softmax_refuses_lengths_out_of_range(length):
    """MXNet reads past the axis (and crashes) for these: refused with the length."""
    op = OPS["softmax"]
    with pytest.raises(InvalidInput, match="length"):
        op.forward(ctx(), op.parse_attrs({"use_length": True}), np.ones((3, 4), np.float32), np.array(length))


def test_deconvolution_takes_a_target_shape_of_zeros_as_not_set():
    """MXNet's default target_shape is (0, 0), "not set" (MXNet 1.9.1: data (1, 3, 5, 5),
    kernel 3, stride 2 -> (1, 3, 11, 11)); it was taken as a target and refused."""
    x = np.ones((1, 3, 5, 5), np.float32)
    w = np.ones((3, 3, 3, 3), np.float32)
    at = {"kernel": [3, 3], "stride": [2, 2], "num_filter": 3, "target_shape": [0, 0]}
    y = OPS["Deconvolution"].forward(ctx(), OPS["Deconvolution"].parse(at), x, w)
    assert y.shape == (1, 3, 11, 11)
    assert OPS["Deconvolution"].infer(
        OPS["Deconvolution"].parse(at), Spec(x.shape, "float32"), Spec(w.shape, "float32")
    ).shape == (1, 3, 11, 11)


def test_special_functions_go_a_chunk_at_a_time_over_any_layout():
    """erf and the others compute in float64 a chunk at a time (their temporaries were 50
    times the result, uncounted): an array of several chunks, strided, gives every value."""
    from gradserve.engine.ops_math import CHUNK

    x = np.random.default_rng(0).standard_normal((3, CHUNK + 7)).astype(np.float32).T  # (strided)
    y = OPS["erf"].forward(ctx(), {}, x)
    assert y.shape == x.shape and y.dtype == np.float32
    np.testing.assert_array_equal(y, np.vectorize(math.erf)(x.astype(np.float64)).astype(np.float32))


# --------------------------------------------------------------------------
# MXNet 1.9.1's values (checked with it): integer and float16 arithmetic, pooling's pads,
# argmax_channel's gradient, masked gradients' zeros


def test_float32_max_and_avg_pooling_refuse_a_pad_as_wide_as_the_kernel_as_mxnet():
    """MXNet's float32 max and avg pooling refuse pad >= kernel on an axis ("Check failed:
    pad_l[0] < kernel[0] (2 vs. 2)"); we gave a 5 x 5 result bordered with -3.4e38. Its float16
    and float64 pooling and its sum pooling take such a pad (and give what ours gives)."""
    op = OPS["Pooling"]
    for pool_type in ("max", "avg"):
        for shape, at in (
            ((1, 1, 2, 2), {"kernel": [2, 2], "pad": [2, 2]}),
            ((1, 1, 4, 4), {"kernel": [2, 2], "pad": [1, 2]}),
            ((1, 1, 4), {"kernel": [2], "pad": [2]}),
        ):
            parsed = op.parse_attrs({**at, "pool_type": pool_type})
            with pytest.raises(InvalidInput, match=r"pad_l\[\d\] < kernel"):
                op.infer(parsed, Spec(shape, "float32"))
            with pytest.raises(InvalidInput, match="float32"):
                op.forward(ctx(), parsed, np.ones(shape, np.float32))
            for dtype in ("float16", "float64"):
                assert op.infer(parsed, Spec(shape, dtype)).shape[:2] == (1, 1)
        ok = op.parse_attrs({"kernel": [2, 2], "pad": [1, 1], "pool_type": pool_type})
        assert op.infer(ok, Spec((1, 1, 2, 2), "float32")).shape == (1, 1, 3, 3)
        glob = op.parse_attrs({"kernel": [2, 2], "pad": [2, 2], "pool_type": pool_type, "global_pool": True})
        assert op.infer(glob, Spec((1, 1, 2, 2), "float32")).shape == (1, 1, 1, 1)
    y = op.forward(ctx(), op.parse_attrs({"kernel": [2, 2], "pad": [2, 2], "pool_type": "sum"}), np.ones((1, 1, 2, 2)))
    assert y[0, 0].tolist() == [[0, 0, 0, 0, 0], [0, 1, 2, 1, 0], [0, 2, 4, 2, 0], [0, 1, 2, 1, 0], [0, 0, 0, 0, 0]]


INT_MIN32, INT_MIN64 = -(2**31), -(2**63)
INTEGER_UNARY = [  # (op, dtype, x, MXNet 1.9.1's result): float64 unless noted, cast back as C casts
    ("exp", "uint8", [1, 7, 20, 100], [2, 72, 139, 0]),  # 485165195 mod 256 is 139
    ("exp", "int8", [-1, 7, 20], [0, 72, -117]),
    ("expm1", "uint8", [7, 20], [71, 138]),
    ("tanh", "uint8", [1, 7, 20], [0, 0, 1]),
    ("tanh", "int8", [-7, -20, 7], [0, -1, 0]),
    ("sigmoid", "uint8", [1, 20, 100, 255], [0, 0, 1, 1]),
    ("sigmoid", "int8", [-128, 100, 127], [0, 1, 1]),
    ("sigmoid", "int32", [20, 100], [0, 1]),
    ("sinh", "uint8", [7, 20], [36, 69]),
    ("cosh", "int8", [-7, 20], [36, 69]),
    ("softsign", "int8", [-128, 127], [0, 0]),  # (|-128| is 128, not int8's -128)
    ("degrees", "uint8", [20, 100, 255], [121, 97, 18]),
    ("degrees", "int64", [2**40], [62997372338176]),  # float32
    ("radians", "int64", [2**40, 100000], [19190097920, 1745]),  # float32
    ("square", "int32", [46341, 10**5, 7], [INT_MIN32, INT_MIN32, 49]),  # float32, past int32: its minimum
    ("square", "uint8", [20, 255], [144, 1]),
    ("exp", "int32", [20, 100], [485165195, INT_MIN32]),
    ("log", "int64", [0, -1, 2**40], [INT_MIN64, INT_MIN64, 27]),
    ("gamma", "int32", [0, -1, 20, 1000], [INT_MIN32] * 4),
    ("gamma", "uint8", [0, 7], [0, 208]),  # (inf: int32's minimum, low byte 0; 720 mod 256)
    ("gammaln", "int64", [0, -3, 20], [INT_MIN64, INT_MIN64, 39]),
    ("erfinv", "int32", [-7, -1, 0, 1, 2], [0, INT_MIN32, 0, INT_MIN32, 0]),  # (past +-1: 0)
    ("abs", "int64", [2**53 + 1, -7], [2**53, 7]),  # through float64, as MXNet's
    ("floor", "int64", [2**53 + 1], [2**53]),
    ("abs", "int8", [-128, -7], [-128, 7]),
    ("negative", "uint8", [1, 0], [255, 0]),
    ("smooth_l1", "int32", [-(10**9) - 1, 3], [1000000000, 2]),  # float32: |x| - 0.5 rounds
]


@pytest.mark.parametrize("name, dtype, x, want", INTEGER_UNARY, ids=[f"{c[0]}-{c[1]}" for c in INTEGER_UNARY])
def test_integer_unary_ops_compute_and_cast_back_as_mxnet(name, dtype, x, want):
    """numpy computes a 1-byte integer's exp, tanh, sigmoid... in float16 (uint8's tanh(7) was 1,
    its exp(20) 0, its sigmoid(100) 0); MXNet computes in float64 (degrees, radians, square and
    smooth_l1 in float32) and casts back as C does: truncated, NaN, infinities and values past
    int32 (int64 for int64) that type's minimum, a 1-byte type int32's low byte."""
    with np.errstate(all="ignore"):  # (as a batch runs: log(0) is -inf before its cast)
        y = _run(name, np.array(x, dtype))
    assert y.dtype == np.dtype(dtype) and y.tolist() == want


def test_float16_composites_are_rounded_once_as_mxnet():
    """MXNet computes float16's sigmoid, rsqrt, rcbrt and softsign in float32 and rounds once;
    numpy rounded each step (sigmoid(2) was 0.88037, MXNet's 0.88086: every result on this grid
    is the float32 one rounded, as MXNet's; ours differed at over a thousand)."""
    x = np.linspace(-12, 12, 4001).astype(np.float16)
    for name, dom in (("sigmoid", x), ("rsqrt", np.abs(x) + np.float16(0.01)), ("rcbrt", x), ("softsign", x)):
        dom = dom.astype(np.float16)
        with np.errstate(divide="ignore"):  # (rcbrt(0) is inf)
            want = _run(name, dom.astype(np.float32)).astype(np.float16)
            got = _run(name, dom)
        assert got.dtype == np.float16
        np.testing.assert_array_equal(got, want, err_msg=name)
    two = np.array([2.0], np.float16)
    assert _run("sigmoid", two).tolist() == [0.880859375]
    assert _run("Activation", two, act_type="sigmoid").tolist() == [0.880859375]
    op = OPS["LogisticRegressionOutput"]
    assert op.forward(ctx(), op.parse_attrs({}), two, np.zeros(1, np.float16)).tolist() == [0.880859375]


def test_float16_sums_add_in_float32_along_every_axis_as_mxnet():
    """MXNet adds float16 in float32 whatever the axis; numpy did only along the last one: the
    columns below summed to 2.6016, MXNet's 2.5996 (as the rows' sums did already)."""
    x = np.array([[1.82, 0], [-0.14, 0], [0.92, 0]], np.float16)
    assert _run("sum", x, axis=0).tolist() == [2.599609375, 0]
    assert _run("sum", x.T.copy(), axis=1).tolist() == [2.599609375, 0]
    assert _run("nansum", x, axis=0).tolist() == [2.599609375, 0]
    assert _run("mean", x, axis=0).tolist() == [0.86669921875, 0]
    assert _run("norm", x, ord=1, axis=0).tolist() == [2.880859375, 0]
    assert _run("norm", x, axis=0).tolist() == [2.044921875, 0]
    assert all(_run(n, x, axis=0).dtype == np.float16 for n in ("sum", "nansum", "norm"))


def test_float16_sum_and_avg_pooling_add_in_float32_as_mxnet():
    """MXNet's float16 sum and avg pooling add (and average) in float32 and round once: the
    first 2 x 2 window of arange(16) / 3 sums to 3.334 and averages to 0.8335 (ours 3.332, 0.833)."""
    op = OPS["Pooling"]
    x = (np.arange(16, dtype=np.float16).reshape(1, 1, 4, 4) / np.float16(3)).astype(np.float16)
    for pool_type, want in (("sum", 3.333984375), ("avg", 0.83349609375)):
        y = op.forward(ctx(), op.parse_attrs({"kernel": [2, 2], "pool_type": pool_type}), x)
        assert y.dtype == np.float16 and y[0, 0, 0, 0] == want, pool_type


def test_argmax_channel_is_not_differentiable_as_mxnet():
    """MXNet: "Operator argmax_channel is non-differentiable because it didn't register
    FGradient attribute." (argmax, argmin and topk's indices give zeros, as ours)."""
    assert not OPS["argmax_channel"].differentiable
    assert all(OPS[n].differentiable for n in ("argmax", "argmin", "topk", "argsort"))
    run = Batches()
    reply = run.s.run_batch(
        {
            "seq": 1,
            "ops": [
                {"op": "array", "out": [1], "at": {"value": np.array([[1.0, 3, 2], [5, 1, 0]], np.float32)}},
                {"op": "attach_grad", "in": [1]},
                {"op": "argmax_channel", "in": [1], "out": [2], "mode": 3},
                {"op": "backward", "in": [2], "mode": 2},
            ],
        }
    )
    assert "error" in reply


def _grad_signs(name: str, at: dict, x: list, head: float = -1.0, extra: tuple = (), place: int = 0) -> list[str]:
    """The gradient of x (the op's input ``place``, the ``extra`` arrays the others) through an op
    for a head of ``head`` everywhere, as MXNet prints its zeros: "0" for +0, "-0" for -0, else
    the value."""
    run = Batches()
    ops = [{"op": "array", "out": [1], "at": {"value": np.array(x, np.float32)}}, {"op": "attach_grad", "in": [1]}]
    ins = []
    for i, e in enumerate(extra, 10):
        ops.append({"op": "array", "out": [i], "at": {"value": np.array(e, np.float32)}})
        ins.append(i)
    ins.insert(place, 1)
    ops += [
        {"op": name, "in": ins, "out": [2], "at": at, "mode": 3},
        {"op": "ones_like", "in": [2], "out": [3]},
        {"op": "mul_scalar", "in": [3], "out": [4], "at": {"scalar": head}},
        {"op": "backward", "in": [2], "at": {"head_grads": [4]}, "mode": 2},
        {"op": "read", "in": [1], "at": {"grad": True}},
    ]
    (g,) = run(*ops)
    return ["-0" if v == 0 and np.signbit(v) else "0" if v == 0 else str(v) for v in g.ravel().tolist()]


def test_masked_gradients_are_positive_zeros_as_mxnet():
    """MXNet 1.9.1 prints a masked-out gradient as 0., where g * mask gave -0. for a negative head
    gradient: where's, clip's, hard_sigmoid's, SequenceLast's. Its relu, max, maximum and the
    like are g * mask and print -0. (as ours), sign's is g * 0, and smooth_l1's with scalar 0
    is g * (0 * x): their zeros keep those signs."""
    assert _grad_signs("where", {}, [1, 2, 3], extra=([1, 0, 1], [0, 0, 0]), place=1) == ["-1.0", "0", "-1.0"]
    assert _grad_signs("where", {}, [1, 2, 3], extra=([1, 0, 1], [0, 0, 0]), place=2) == ["0", "-1.0", "0"]
    x = [[1, 2], [3, 4]]
    assert _grad_signs("where", {}, x, extra=([0, 1], [[0, 0], [0, 0]]), place=1) == ["0", "0", "-1.0", "-1.0"]
    assert _grad_signs("clip", {"a_min": -1, "a_max": 1}, [-3, -1, 0, 1, 3]) == ["0", "-1.0", "-1.0", "-1.0", "0"]
    assert _grad_signs("clip", {"a_min": 1, "a_max": -1}, [-3, 0, 3]) == ["0", "0", "0"]
    assert _grad_signs("hard_sigmoid", {"alpha": 0.5}, [-5, 0, 5]) == ["0", "-0.5", "0"]
    at = {"use_sequence_length": True}
    got = _grad_signs("SequenceLast", at, [[1, 2], [3, 4], [5, 6]], extra=([1, 2],))
    assert got == ["-1.0", "0", "0", "-1.0", "0", "0"]
    got = _grad_signs("SequenceLast", {**at, "axis": 1}, [[1, 2], [3, 4], [5, 6]], extra=([1, 2, 1],))
    assert got == ["-1.0", "0", "0", "-1.0", "-1.0", "0"]
    assert _grad_signs("sign", {}, [-3, 0, 3]) == ["-0", "-0", "-0"]
    assert _grad_signs("sign", {}, [-3, 0, 3], head=1.0) == ["0", "0", "0"]
    got = _grad_signs("smooth_l1", {"scalar": 0.0}, [-3, -1, 0, 1, 3])
    assert got == ["0", "0", "-0", "-0", "-0"]
    assert _grad_signs("relu", {}, [-3, 0, 3]) == ["-0", "-0", "-1.0"]
    assert _grad_signs("SequenceMask", at, [[1, 2], [3, 4]], extra=([1, 2],)) == ["-1.0", "-1.0", "0", "-1.0"]


def test_hard_sigmoid_rounds_as_mxnet():
    """MXNet takes alpha and beta as float32 and rounds alpha x to x's dtype before adding
    beta: a float16 result rounded once from float32 differed from MXNet's on a tenth of a
    grid, a float64 one (with 0.3, not 0.3f) on four tenths (values from MXNet 1.9.1)."""
    op = OPS["hard_sigmoid"]
    x = np.array([-2.49609375, -2.076171875, -1.671875, -1.0556640625, 0.84814453125, 1.9599609375], np.float16)
    y = op.forward(ctx(), op.parse_attrs({}), x)
    assert y.dtype == np.float16
    assert y.tolist() == [0.000732421875, 0.084716796875, 0.16552734375, 0.288818359375, 0.669921875, 0.89208984375]
    x = np.array([-1.9996, -1.5995999999999997, -1.1995999999999998, -0.7995999999999999])
    y = op.forward(ctx(), op.parse_attrs({"alpha": 0.3, "beta": 0.6}), x)
    assert y.tolist() == [0.00012000000476830586, 0.12012000477314005, 0.24012000954151158, 0.36012001430988316]
