"""MXNet's ``linalg_*`` ops: factorizations, triangular solves and products on the last two
axes, batched over the leading ones."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .errors import DTypeError, InvalidInput, ShapeError
from .ops import same_dtype
from .ops_array import TRANSPOSES, _bmm_shapes, _bmm_vjp_for, _bmm_work
from .optable import Attr, Spec, defop, prod

# --------------------------------------------------------------------------
# shapes, dtypes and triangles


def _floats(name: str, *specs: Spec) -> str:
    """The inputs' one dtype, float32 or float64 (MXNet's linalg ops refuse every other)."""
    dt = same_dtype(name, *specs)
    if dt not in ("float32", "float64"):
        raise DTypeError(f"{name}: This operation only supports 32-bit and 64-bit floating point, not {dt}")
    return dt


def _matrices(name: str, x: Spec, what: str = "input") -> None:
    if len(x.shape) < 2:
        raise ShapeError(f"{name}: the {what} must be a tensor of matrices (rank >= 2), got shape {x.shape}")


def _square(name: str, x: Spec, what: str = "input") -> int:
    """The side of the square matrices ``x`` holds on its last two axes."""
    _matrices(name, x, what)
    if x.shape[-1] != x.shape[-2]:
        raise ShapeError(f"{name}: the {what} must be a tensor of square matrices, got shape {x.shape}")
    return x.shape[-1]


def _same_batch(name: str, a: Spec, b: Spec) -> None:
    if len(a.shape) != len(b.shape) or a.shape[:-2] != b.shape[:-2]:
        raise ShapeError(
            f"{name}: the inputs must have the same rank and the same leading (batch) axes, got {a.shape} and {b.shape}"
        )


def _per_matrix(name: str, x: Spec) -> Spec:
    """One value per matrix: the leading axes, or (1,) for one matrix (MXNet has no rank 0)."""
    _square(name, x)
    return Spec(x.shape[:-2] or (1,), _floats(name, x))


def _t(xp: Any, x: Any) -> Any:
    return xp.swapaxes(x, -1, -2)


def _triangle(xp: Any, x: Any, lower: bool) -> Any:
    return xp.tril(x) if lower else xp.triu(x)


def _mask(x: Any, lower: bool, diag: float = 1.0) -> np.ndarray:
    """A constant of x's dtype that keeps, multiplied in, the lower (upper) triangle of x's
    matrices, its diagonal times ``diag``: a VJP's way of masking with the table's ``mul``."""
    n = x.shape[-1]
    m = np.tri(n, dtype=x.dtype)
    if not lower:
        m = m.T.copy()
    m[np.diag_indices(n)] = diag
    return m


def _tri_mul(F: Any, x: Any, lower: bool, diag: float = 1.0) -> Any:
    return F.mul(x, _mask(x, lower, diag))


def _swap(F: Any, x: Any) -> Any:
    return F.swapaxes(x, dim1=-1, dim2=-2)


def _matrix_work(at: dict, x: Spec, *_: Spec) -> int:
    """Multiply-adds of an O(n^3) factorization or inversion of each matrix of ``x``."""
    return prod(x.shape) * x.shape[-1] if len(x.shape) >= 2 else 0


SUBSTITUTION_BLOCK = 64
"""Rows of a triangular solve substituted one by one; the rows below (above) a block take its
part in one matrix product."""


def _substitute(name: str, t: Any, b: Any, lower: bool) -> Any:
    """X with T X = B, for the triangular matrices T (..., n, n), of which only the lower
    (upper) triangle is read: substitution, a block of rows at a time, as LAPACK's trsm. (An
    LU solve, numpy's, swaps the rows of a triangle whose diagonal is small against the rest,
    and loses the digits substitution keeps: 1e-4 of a random 200 x 200 triangle's solution.)
    X is a new C-ordered array of B's shape and dtype."""
    if not np.diagonal(t, axis1=-2, axis2=-1).all():
        raise InvalidInput(f"{name}: a matrix is singular (a zero on the diagonal of a triangular one)")
    n = t.shape[-1]
    x = np.array(b, order="C")
    bs = SUBSTITUTION_BLOCK
    for k in range(0, n, bs):
        if lower:
            k0, k1 = k, min(n, k + bs)
            if k0:
                x[..., k0:k1, :] -= t[..., k0:k1, :k0] @ x[..., :k0, :]
            rows = range(k0, k1)
        else:
            k0, k1 = max(0, n - k - bs), n - k
            if k1 < n:
                x[..., k0:k1, :] -= t[..., k0:k1, k1:] @ x[..., k1:, :]
            rows = range(k1 - 1, k0 - 1, -1)
        for i in rows:
            done = slice(k0, i) if lower else slice(i + 1, k1)
            if done.start != done.stop:
                x[..., i : i + 1, :] -= t[..., i : i + 1, done] @ x[..., done, :]
            x[..., i, :] /= t[..., i, i, None]
    return x


# --------------------------------------------------------------------------
# working arrays (``scratch``, ``vjp_scratch``): bytes, from the inputs' specs


def _itemsize(x: Spec) -> int:
    return np.dtype(x.dtype).itemsize


def _one_matrix(x: Spec) -> int:
    """The bytes of one of x's (square) matrices, in x's dtype: a VJP's triangle mask."""
    return x.shape[-1] * x.shape[-2] * _itemsize(x)


def _lapack(ins: tuple[Spec, ...], out: int, one: int) -> int:
    """What numpy's linalg (solve, inv, cholesky, det) makes besides its result: it computes in
    float64, so of float32 it makes float64 copies of the inputs and a float64 result of
    ``out`` entries before the float32 one; and, in every dtype, LAPACK's buffers for one
    matrix at a time, ``one`` float64 (or 64-bit pivot) entries (malloc'd: tracemalloc does
    not see them, the machine does)."""
    b = 8 * one
    if ins[0].dtype == "float32":
        b += 8 * (sum(prod(x.shape) for x in ins) + out)
    return b


def _inv_bytes(a: Spec) -> int:
    """``_lapack`` of the inverses of A's matrices (a solve against the identity)."""
    n = a.shape[-1]
    return _lapack((a,), prod(a.shape), 2 * n * n + n)


# --------------------------------------------------------------------------
# products


def _gemm2_infer(at: dict, a: Spec, b: Spec) -> Spec:
    """As batch_dot's, float32 or float64 only, on the last two axes only (MXNet's ``axis``,
    the rows' axis: -2)."""
    if at["axis"] != -2:
        raise InvalidInput(f"linalg_gemm2: only axis=-2 is supported, got {at['axis']}")
    dt = _floats("linalg_gemm2", a, b)
    sa, sb = _bmm_shapes("linalg_gemm2", at, a, b)
    return Spec(sa[:-1] + (sb[-1],), dt)


@defop(
    "linalg_gemm2",
    ("A", "B"),
    (*TRANSPOSES, Attr("alpha", "float", 1.0), Attr("axis", "int", -2)),
    infer=_gemm2_infer,
    vjp=_bmm_vjp_for("linalg_gemm2"),
    work=_bmm_work,
)
def _linalg_gemm2(cx, at, a, b):
    """alpha * op(A) op(B) on the last two axes (``nd.linalg.gemm2``; A and B not read when
    alpha is 0, as BLAS's: 0 where they hold NaN, and so are the gradients)."""
    xp = cx.xp
    if at["alpha"] == 0:
        rows = a.shape[-1] if at["transpose_a"] else a.shape[-2]
        cols = b.shape[-2] if at["transpose_b"] else b.shape[-1]
        return xp.zeros(a.shape[:-2] + (rows, cols), a.dtype)
    r = xp.matmul(_t(xp, a) if at["transpose_a"] else a, _t(xp, b) if at["transpose_b"] else b)
    if at["alpha"] != 1:
        r *= r.dtype.type(at["alpha"])  # (in place: the product is this op's own, not returned yet)
    return r


def _gemm_infer(at: dict, a: Spec, b: Spec, c: Spec) -> Spec:
    if at["axis"] != -2:
        raise InvalidInput(f"linalg_gemm: only axis=-2 is supported, got {at['axis']}")
    dt = _floats("linalg_gemm", a, b, c)
    sa, sb = _bmm_shapes("linalg_gemm", at, a, b)
    shape = sa[:-1] + (sb[-1],)
    if c.shape != shape:
        raise ShapeError(f"linalg_gemm: C has shape {c.shape}, the product op(A) op(B) has {shape}")
    return Spec(shape, dt)


def _gemm_vjp(F, at, g, y, a, b, c):
    ga, gb = _bmm_vjp_for("linalg_gemm2")(F, at, g, y, a, b)
    return ga, gb, lambda: F.mul_scalar(g, scalar=at["beta"])


@defop(
    "linalg_gemm",
    ("A", "B", "C"),
    (*TRANSPOSES, Attr("alpha", "float", 1.0), Attr("beta", "float", 1.0), Attr("axis", "int", -2)),
    infer=_gemm_infer,
    vjp=_gemm_vjp,
    work=lambda at, a, b, c: prod(c.shape) * (a.shape[-2] if at["transpose_a"] else a.shape[-1]),
    # beta C, unless beta is 0 or 1 (or alpha is 0: then it is the result)
    scratch=lambda at, a, b, c: c.nbytes if at["alpha"] != 0 and at["beta"] not in (0, 1) else 0,
)
def _linalg_gemm(cx, at, a, b, c):
    """alpha * op(A) op(B) + beta * C on the last two axes, op() a transpose or not. As BLAS's
    (and MXNet's), A and B are not read when alpha is 0, nor C when beta is (a NaN there stays
    out)."""
    xp = cx.xp
    dt = c.dtype.type
    alpha, beta = at["alpha"], at["beta"]
    if alpha == 0:
        return c * dt(beta) if beta != 0 else xp.zeros_like(c)
    r = xp.matmul(_t(xp, a) if at["transpose_a"] else a, _t(xp, b) if at["transpose_b"] else b)
    if alpha != 1:  # (in place: the product is this op's own)
        r *= dt(alpha)
    if beta == 1:
        r += c
    elif beta != 0:
        r += c * dt(beta)  # (its one working array)
    return r


def _syrk_infer(at: dict, a: Spec) -> Spec:
    _matrices("linalg_syrk", a)
    n = a.shape[-1] if at["transpose"] else a.shape[-2]
    return Spec(a.shape[:-2] + (n, n), _floats("linalg_syrk", a))


def _syrk_vjp(F, at, g, y, a):
    # (its working arrays: g's transpose and the sum, each the output's size)
    gs = F.add(g, _swap(F, g))  # (the output is symmetric: both of its triangles depend on A)
    if at["transpose"]:
        return (F.linalg_gemm2(a, gs, alpha=at["alpha"]),)
    return (F.linalg_gemm2(gs, a, alpha=at["alpha"]),)


@defop(
    "linalg_syrk",
    ("A",),
    (Attr("transpose", "bool", False), Attr("alpha", "float", 1.0)),
    infer=_syrk_infer,
    vjp=_syrk_vjp,
    work=lambda at, a: prod(a.shape) * (a.shape[-1] if at["transpose"] else a.shape[-2]) if len(a.shape) >= 2 else 0,
    vjp_scratch=lambda at, a: 2 * _syrk_infer(at, a).nbytes,
)
def _linalg_syrk(cx, at, a):
    """alpha * A A^T (alpha * A^T A when ``transpose``) on the last two axes (A not read when
    alpha is 0, as BLAS's)."""
    xp = cx.xp
    if at["alpha"] == 0:
        k = a.shape[-1] if at["transpose"] else a.shape[-2]
        return xp.zeros(a.shape[:-2] + (k, k), a.dtype)
    r = xp.matmul(_t(xp, a), a) if at["transpose"] else xp.matmul(a, _t(xp, a))
    if at["alpha"] != 1:
        r *= r.dtype.type(at["alpha"])  # (in place: the product is this op's own)
    return r


# --------------------------------------------------------------------------
# triangular matrices: solves and products

TRIANGULAR = (
    Attr("transpose", "bool", False),
    Attr("rightside", "bool", False),
    Attr("lower", "bool", True),
    Attr("alpha", "float", 1.0),
)


def _triangular_infer_for(name: str):
    def infer(at: dict, a: Spec, b: Spec) -> Spec:
        dt = _floats(name, a, b)
        n = _square(name, a, "first input (A)")
        _matrices(name, b, "second input (B)")
        _same_batch(name, a, b)
        side = b.shape[-1] if at["rightside"] else b.shape[-2]
        if side != n:
            where = "columns" if at["rightside"] else "rows"
            raise ShapeError(f"{name}: B of shape {b.shape} must have {n} {where}, as A of shape {a.shape}")
        return Spec(b.shape, dt)

    return infer


def _op_triangle(xp: Any, at: dict, a: Any) -> Any:
    """op(A): A's lower (upper) triangle, transposed when ``transpose``."""
    t = _triangle(xp, a, at["lower"])
    return _t(xp, t) if at["transpose"] else t


def _outer(F, at, u, v, alpha):
    """alpha u v^T (alpha v^T u when ``rightside``), transposed when ``transpose``: the cotangent
    of A's triangle, from the products of op(A) with B and the output's."""
    right = at["rightside"]
    first, second = (u, v) if right == at["transpose"] else (v, u)
    return F.linalg_gemm2(first, second, transpose_a=right, transpose_b=not right, alpha=alpha)


def _trsm_bytes(right: bool, a: Spec, b: Spec) -> int:
    """A solve's working arrays besides its result (alpha not 0): a block's product (at most
    B's size) and a row's (``_substitute``); on the right, the transposed solution too (B's
    size), from which the result is copied."""
    return (2 if right else 1) * b.nbytes + b.nbytes // max(1, a.shape[-1])


def _trsm_vjp_bytes(at: dict, a: Spec, b: Spec) -> int:
    """dA's: W's solve and W (B's size), then W, the product W Y^T (A's size) and the mask (and
    its transpose) of one matrix; dB's: a solve (its result the cotangent)."""
    return b.nbytes + max(_trsm_bytes(at["rightside"], a, b), a.nbytes + 2 * _one_matrix(a))


def _trsm_vjp(F, at, g, y, a, b):
    if at["alpha"] == 0:  # (Y is 0 whatever A and B are: neither is read)
        return (lambda: F.zeros_like(a)), (lambda: F.zeros_like(b))
    # Y = alpha op(T)^-1 B (or alpha B op(T)^-1): dB = alpha op(T)^-T g (g op(T)^-T), and with
    # W = -op(T)^-T g (-g op(T)^-T), d op(T) = W Y^T (Y^T W), transposed when op transposes
    flip = {**at, "transpose": not at["transpose"]}

    def ga():
        w = F.linalg_trsm(a, g, **{**flip, "alpha": -1.0})
        return _tri_mul(F, _outer(F, at, w, y, 1.0), at["lower"])

    return ga, lambda: F.linalg_trsm(a, g, **flip)


@defop(
    "linalg_trsm",
    ("A", "B"),
    TRIANGULAR,
    infer=_triangular_infer_for("linalg_trsm"),
    vjp=_trsm_vjp,
    work=lambda at, a, b: prod(b.shape) * b.shape[-1 if at["rightside"] else -2] if len(b.shape) >= 2 else 0,
    scratch=lambda at, a, b: _trsm_bytes(at["rightside"], a, b) if at["alpha"] != 0 else 0,
    vjp_scratch=_trsm_vjp_bytes,
)
def _linalg_trsm(cx, at, a, b):
    """X with op(A) X = alpha B (X op(A) = alpha B when ``rightside``), A triangular: only its
    lower (upper, when not ``lower``) triangle is read, and nothing of it when alpha is 0 (as
    BLAS's: X is 0)."""
    xp = cx.xp
    if at["alpha"] == 0:
        return xp.zeros_like(b)
    m = _t(xp, a) if at["transpose"] else a  # op(A), a view: substitution reads its triangle only
    lower = at["lower"] != at["transpose"]  # (op(A)'s triangle)
    if at["rightside"]:  # X op(A) = B is op(A)^T X^T = B^T
        xt = _substitute("linalg_trsm", _t(xp, m), _t(xp, b), not lower)
        x = xp.ascontiguousarray(_t(xp, xt))
        del xt
    else:
        x = _substitute("linalg_trsm", m, b, lower)
    if at["alpha"] != 1:
        x *= x.dtype.type(at["alpha"])  # (in place: the solve's result is this op's own)
    return x


def _trmm_vjp(F, at, g, y, a, b):
    # Y = alpha op(T) B (alpha B op(T)): dB = alpha op(T)^T g (g op(T)^T),
    # d op(T) = alpha g B^T (B^T g), transposed when op transposes
    def ga():
        return _tri_mul(F, _outer(F, at, g, b, at["alpha"]), at["lower"])

    return ga, lambda: F.linalg_trmm(a, g, **{**at, "transpose": not at["transpose"]})


def _trmm_vjp_bytes(at: dict, a: Spec, b: Spec) -> int:
    """dA's: the product (A's size) and the mask (and its transpose) of one matrix; dB's: the
    copy of A's triangle (a trmm's ``scratch``)."""
    return a.nbytes + 2 * _one_matrix(a)


@defop(
    "linalg_trmm",
    ("A", "B"),
    TRIANGULAR,
    infer=_triangular_infer_for("linalg_trmm"),
    vjp=_trmm_vjp,
    work=lambda at, a, b: prod(b.shape) * b.shape[-1 if at["rightside"] else -2] if len(b.shape) >= 2 else 0,
    scratch=lambda at, a, b: a.nbytes if at["alpha"] != 0 else 0,  # the copy of A's triangle
    vjp_scratch=_trmm_vjp_bytes,
)
def _linalg_trmm(cx, at, a, b):
    """alpha op(A) B (alpha B op(A) when ``rightside``), A triangular: only its lower (upper,
    when not ``lower``) triangle is read (none of it, nor B, when alpha is 0, as BLAS's)."""
    xp = cx.xp
    if at["alpha"] == 0:
        return xp.zeros_like(b)
    m = _op_triangle(xp, at, a)
    r = xp.matmul(b, m) if at["rightside"] else xp.matmul(m, b)
    if at["alpha"] != 1:
        r *= r.dtype.type(at["alpha"])  # (in place: the product is this op's own)
    return r


# --------------------------------------------------------------------------
# Cholesky factorization and the inverse from it


def _square_infer_for(name: str):
    def infer(at: dict, a: Spec) -> Spec:
        _square(name, a)
        return Spec(a.shape, _floats(name, a))

    return infer


def _potrf_vjp(F, at, g, y, a):
    # MXNet's: dA = 1/2 L^-T copyltu(L^T dL) L^-1, copyltu(P) = Phi(P) + Phi(P)^T with Phi the
    # lower triangle and half the diagonal; symmetric (Murray 2016), the derivative of the
    # forward's chol((A + A^T) / 2)
    # (each intermediate let go as soon as the next is made: see _potrf_vjp_bytes)
    p = _tri_mul(F, F.linalg_trmm(y, g, transpose=True), True, 0.5)
    s = F.add(p, _swap(F, p))
    del p
    s = F.linalg_trsm(y, s, transpose=True)
    return (F.linalg_trsm(y, s, rightside=True, alpha=0.5),)


def _potrf_vjp_bytes(at: dict, a: Spec) -> int:
    """Arrays of A's size, at most: the trmm's triangle and product (2), then the product,
    the mask (and its transpose) of one matrix and P; P, P^T and their sum (3); the sum, a
    left solve's working arrays and its result; that result and a right solve's."""
    return max(
        2 * a.nbytes + 2 * _one_matrix(a),
        3 * a.nbytes,
        2 * a.nbytes + _trsm_bytes(False, a, a),
        a.nbytes + _trsm_bytes(True, a, a),
    )


def _potrf_bytes(at: dict, a: Spec) -> int:
    """The symmetric part (A's size), with its other half while it is added (A's size), then
    numpy's Cholesky (``_lapack``)."""
    n = a.shape[-1]
    return a.nbytes + max(a.nbytes, _lapack((a,), prod(a.shape), n * n))


@defop(
    "linalg_potrf",
    ("A",),
    infer=_square_infer_for("linalg_potrf"),
    vjp=_potrf_vjp,
    work=_matrix_work,
    scratch=_potrf_bytes,
    vjp_scratch=_potrf_vjp_bytes,
)
def _linalg_potrf(cx, at, a):
    """L, lower triangular with a positive diagonal, with L L^T = A, A symmetric positive
    definite. Of a matrix that is not symmetric, the factor of its symmetric part
    (A + A^T) / 2, whose derivative is the symmetric gradient MXNet gives (MXNet reads the lower
    triangle alone)."""
    xp = cx.xp
    half = a.dtype.type(0.5)
    s = a * half  # (halves first: the sum of two halves of the dtype's largest does not overflow)
    s += _t(xp, a) * half
    try:
        return xp.linalg.cholesky(s)
    except np.linalg.LinAlgError:
        raise InvalidInput(
            "linalg_potrf: a matrix is not positive definite (the Cholesky factorization failed)"
        ) from None


def _potri_vjp(F, at, g, y, a):
    # A = (L L^T)^-1 (y), L the input's lower triangle: dL = -tril(A (g + g^T) L^-T)
    m = F.linalg_gemm2(y, F.add(g, _swap(F, g)))
    t = F.linalg_trsm(a, m, rightside=True, transpose=True, alpha=-1.0)
    del m
    return (_tri_mul(F, t, True),)


def _potri_vjp_bytes(at: dict, a: Spec) -> int:
    """Arrays of A's size, at most: g^T and the sum (2), the sum and M (2); M, a right solve's
    working arrays and its result; that result and the mask (and its transpose) of one
    matrix."""
    return max(2 * a.nbytes + _trsm_bytes(True, a, a), a.nbytes + 2 * _one_matrix(a))


@defop(
    "linalg_potri",
    ("A",),
    infer=_square_infer_for("linalg_potri"),
    vjp=_potri_vjp,
    work=_matrix_work,
    # L^-1 (A's size, as the result, which is made after it) and its solve's (``_trsm_bytes``)
    scratch=lambda at, a: a.nbytes + _trsm_bytes(False, a, a),
    vjp_scratch=_potri_vjp_bytes,
)
def _linalg_potri(cx, at, a):
    """(L L^T)^-1 from a Cholesky factor L (``linalg_potrf``'s): only the input's lower triangle
    is read."""
    xp = cx.xp
    inv = _substitute("linalg_potri", a, np.broadcast_to(np.eye(a.shape[-1], dtype=a.dtype), a.shape), True)
    return xp.matmul(_t(xp, inv), inv)


def _inverse_vjp(F, at, g, y, a):
    # d(A^-1) = -A^-1 dA A^-1: dA = -Y^T g Y^T
    return (F.linalg_gemm2(F.linalg_gemm2(y, g, transpose_a=True, alpha=-1.0), y, transpose_b=True),)


@defop(
    "linalg_inverse",
    ("A",),
    infer=_square_infer_for("linalg_inverse"),
    vjp=_inverse_vjp,
    work=_matrix_work,
    scratch=lambda at, a: _inv_bytes(a),
    vjp_scratch=lambda at, a: a.nbytes,  # -Y^T g
)
def _linalg_inverse(cx, at, a):
    """The inverse of each square matrix."""
    try:
        return cx.xp.linalg.inv(a)
    except np.linalg.LinAlgError:
        raise InvalidInput("linalg_inverse: a matrix is singular (it has no inverse)") from None


# --------------------------------------------------------------------------
# one value per matrix


def _per_matrix_cotangent(F, g, a):
    """g, one value per matrix, shaped to broadcast against a's matrices."""
    if a.ndim == 2:
        return g  # (1,): broadcasts as it is
    return F.expand_dims(F.expand_dims(g, axis=-1), axis=-1)


def _det_vjp(F, at, g, y, a):
    # d det(A) = det(A) tr(A^-1 dA): dA = g det(A) A^-T
    try:
        inv = F.linalg_inverse(a)
    except InvalidInput:  # (MXNet's gradient there is 0, not the adjugate's)
        raise InvalidInput("linalg_det: no gradient at a singular matrix (it takes the inverse)") from None
    r = F.mul(_per_matrix_cotangent(F, F.mul(g, y), a), inv)
    del inv  # (transposed last: the inverse let go before the cotangent is made)
    return (_swap(F, r),)


def _det_vjp_bytes(at: dict, a: Spec) -> int:
    """g det(A), expanded (3 of one value per matrix); the inverse (A's size) and numpy's, then
    with the product (A's size); the product and the cotangent, its transpose."""
    per = 3 * prod(a.shape[:-2]) * _itemsize(a)
    return per + a.nbytes + max(_inv_bytes(a), a.nbytes)


@defop(
    "linalg_det",
    ("A",),
    infer=lambda at, a: _per_matrix("linalg_det", a),
    vjp=_det_vjp,
    work=_matrix_work,
    # numpy's LU (``_lapack``): float64 copies and result, the pivots
    scratch=lambda at, a: _lapack((a,), prod(a.shape[:-2]), a.shape[-1] * (a.shape[-1] + 1)),
    vjp_scratch=_det_vjp_bytes,
)
def _linalg_det(cx, at, a):
    """The determinant of each square matrix: shape A.shape[:-2], (1,) for one matrix."""
    xp = cx.xp
    r = xp.linalg.det(a)
    return xp.asarray(r, dtype=a.dtype).reshape(a.shape[:-2] or (1,))


def _slogdet_infer(at: dict, a: Spec) -> Spec:
    one = _per_matrix("linalg_slogdet", a)
    return Spec((2,) + one.shape, one.dtype)


def _slogdet_vjp(F, at, g, y, a):
    # d log|det A| = tr(A^-1 dA): dA = g A^-T, g the log's cotangent (the sign's takes none). A
    # singular matrix (sign 0) takes none either, as MXNet's: the identity is inverted in its place
    regular = F.abs(F.squeeze(F.slice_axis(y, axis=0, begin=0, end=1), axis=0))  # 1, or 0 where singular
    g_log = F.mul(F.squeeze(F.slice_axis(g, axis=0, begin=1, end=2), axis=0), regular)
    r = _per_matrix_cotangent(F, regular, a)
    eye = np.eye(int(a.shape[-1]), dtype=a.dtype)
    inv = F.linalg_inverse(F.add(F.mul(a, r), F.mul(F.rsub_scalar(r, scalar=1.0), eye)))
    out = F.mul(_per_matrix_cotangent(F, g_log, a), inv)
    del inv
    return (_swap(F, out),)


def _slogdet_vjp_bytes(at: dict, a: Spec) -> int:
    """One value per matrix (the sign, its mask, the log's cotangent, expanded: 8 of them); the
    identity; the matrices to invert (three of A's size as they are made), then their inverse
    and numpy's; the product and the cotangent, its transpose."""
    per = 8 * prod(a.shape[:-2]) * _itemsize(a)
    return per + _one_matrix(a) + max(3 * a.nbytes, a.nbytes + max(_inv_bytes(a), a.nbytes))


@defop(
    "linalg_slogdet",
    ("A",),
    infer=_slogdet_infer,
    vjp=_slogdet_vjp,
    work=_matrix_work,
    # numpy's LU (``_lapack``): float64 copies and two results, the pivots
    scratch=lambda at, a: _lapack((a,), 2 * prod(a.shape[:-2]), a.shape[-1] * (a.shape[-1] + 1)),
    vjp_scratch=_slogdet_vjp_bytes,
)
def _linalg_slogdet(cx, at, a):
    """The sign and the log of the absolute value of each square matrix's determinant, stacked
    on a first axis of 2: (2,) + A.shape[:-2], (2, 1) for one matrix (MXNet's two outputs, which
    ``nd.linalg.slogdet`` gives as two arrays). A singular matrix's are 0 and -inf."""
    xp = cx.xp
    sign, log = xp.linalg.slogdet(a)
    per = a.shape[:-2] or (1,)
    out = xp.empty((2,) + per, a.dtype)
    out[0] = xp.reshape(sign, per)
    out[1] = xp.reshape(log, per)
    return out


def _sumlogdiag_vjp(F, at, g, y, a):
    gd = g if a.ndim == 2 else F.expand_dims(g, axis=-1)
    return (F.linalg_makediag(F.div(gd, F.linalg_extractdiag(a))),)


def _diagonals_bytes(a: Spec) -> int:
    """The bytes of the diagonals of A's matrices."""
    return prod(a.shape[:-1]) * _itemsize(a)


@defop(
    "linalg_sumlogdiag",
    ("A",),
    infer=lambda at, a: _per_matrix("linalg_sumlogdiag", a),
    vjp=_sumlogdiag_vjp,
    scratch=lambda at, a: _diagonals_bytes(a),  # their logarithms
    # g expanded (one value per matrix), the diagonals and g over them
    vjp_scratch=lambda at, a: 2 * _diagonals_bytes(a) + prod(a.shape[:-2]) * _itemsize(a),
)
def _linalg_sumlogdiag(cx, at, a):
    """The sum of the logarithms of each square matrix's diagonal (NaN where one is negative):
    shape A.shape[:-2], (1,) for one matrix."""
    xp = cx.xp
    with np.errstate(divide="ignore", invalid="ignore"):
        r = xp.log(xp.diagonal(a, 0, -2, -1)).sum(axis=-1)
    return xp.asarray(r, dtype=a.dtype).reshape(a.shape[:-2] or (1,))


# --------------------------------------------------------------------------
# diagonals and triangles to and from vectors

OFFSET = Attr("offset", "int", 0)


def _offset_side(name: str, at: dict, x: Spec) -> int:
    """The side of the square matrices of ``x`` less |offset|: how long its diagonal is."""
    n = _square(name, x)
    k = n - abs(at["offset"])
    if k <= 0:
        raise ShapeError(f"{name}: offset {at['offset']} is out of range for matrices of side {n}")
    return k


def _extractdiag_infer(at: dict, a: Spec) -> Spec:
    k = _offset_side("linalg_extractdiag", at, a)
    return Spec(a.shape[:-2] + (k,), _floats("linalg_extractdiag", a))


@defop(
    "linalg_extractdiag",
    ("A",),
    (OFFSET,),
    infer=_extractdiag_infer,
    vjp=lambda F, at, g, y, a: (F.linalg_makediag(g, offset=at["offset"]),),
)
def _linalg_extractdiag(cx, at, a):
    """The ``offset``-th diagonal of each square matrix (above the main one when positive)."""
    return cx.xp.diagonal(a, at["offset"], -2, -1).copy()


def _makediag_infer(at: dict, a: Spec) -> Spec:
    if not a.shape:
        raise ShapeError("linalg_makediag: the input must have rank >= 1, got a scalar")
    n = a.shape[-1] + abs(at["offset"])
    return Spec(a.shape[:-1] + (n, n), _floats("linalg_makediag", a))


@defop(
    "linalg_makediag",
    ("A",),
    (OFFSET,),
    infer=_makediag_infer,
    vjp=lambda F, at, g, y, a: (F.linalg_extractdiag(g, offset=at["offset"]),),
)
def _linalg_makediag(cx, at, a):
    """Square matrices, zero but for the ``offset``-th diagonal, which holds the last axis."""
    xp = cx.xp
    k, m = at["offset"], a.shape[-1]
    n = m + abs(k)
    out = xp.zeros(a.shape[:-1] + (n, n), a.dtype)
    # the diagonal as a strided view of the matrices' entries (no index arrays): it starts at
    # (0, k) or (-k, 0), each next entry n + 1 further
    start = k if k >= 0 else -k * n
    out.reshape(a.shape[:-1] + (n * n,))[..., start : start + (m - 1) * (n + 1) + 1 : n + 1] = a
    return out


# A triangle's entries in MXNet's order: a lower one (offset < 0, or 0 and lower) row by row,
# an upper one column by column (the lower triangle of the transpose, row by row)


def _reads_lower(at: dict) -> bool:
    return at["offset"] < 0 or (at["offset"] == 0 and at["lower"])


def _trian_rows(n: int, at: dict) -> list[tuple[int, int, int]]:
    """(row, its first entry's place in the vector, how many) of each row of the triangle's
    entries in an n x n matrix (its transpose for an upper one), in order: row i's are its
    columns 0 to i + d, d = -|offset|. (A row at a time, not with index arrays: those take 16
    bytes an entry.)"""
    d = -abs(at["offset"])
    rows, at_ = [], 0
    for i in range(-d, n):
        rows.append((i, at_, i + d + 1))
        at_ += i + d + 1
    return rows


def _extracttrian_infer(at: dict, a: Spec) -> Spec:
    k = _offset_side("linalg_extracttrian", at, a)
    return Spec(a.shape[:-2] + (k * (k + 1) // 2,), _floats("linalg_extracttrian", a))


TRIAN = (OFFSET, Attr("lower", "bool", True))


@defop(
    "linalg_extracttrian",
    ("A",),
    TRIAN,
    infer=_extracttrian_infer,
    vjp=lambda F, at, g, y, a: (F.linalg_maketrian(g, offset=at["offset"], lower=at["lower"]),),
)
def _linalg_extracttrian(cx, at, a):
    """The entries of each square matrix's triangle as a vector: the lower one (lower=True) or
    the upper one, with the main diagonal when offset is 0; below the ``offset``-th diagonal
    when offset < 0, above it when offset > 0. Lower ones row by row, upper ones column by
    column, as MXNet."""
    xp = cx.xp
    rows = _trian_rows(a.shape[-1], at)
    src = a if _reads_lower(at) else _t(xp, a)
    k = a.shape[-1] - abs(at["offset"])
    out = xp.empty(a.shape[:-2] + (k * (k + 1) // 2,), a.dtype)
    for i, j, m in rows:
        out[..., j : j + m] = src[..., i, :m]
    return out


def _trian_side(name: str, m: int) -> int:
    """n with n (n + 1) / 2 = m, the side of the triangle m entries fill."""
    n = (math.isqrt(8 * m + 1) - 1) // 2
    if n * (n + 1) // 2 != m:
        raise ShapeError(f"{name}: a last axis of {m} entries does not fill a triangle (1, 3, 6, 10, ... entries)")
    return n


def _maketrian_infer(at: dict, a: Spec) -> Spec:
    if not a.shape:
        raise ShapeError("linalg_maketrian: the input must have rank >= 1, got a scalar")
    n = _trian_side("linalg_maketrian", a.shape[-1]) + abs(at["offset"])
    return Spec(a.shape[:-1] + (n, n), _floats("linalg_maketrian", a))


@defop(
    "linalg_maketrian",
    ("A",),
    TRIAN,
    infer=_maketrian_infer,
    vjp=lambda F, at, g, y, a: (F.linalg_extracttrian(g, offset=at["offset"], lower=at["lower"]),),
)
def _linalg_maketrian(cx, at, a):
    """Square matrices, zero but for a triangle filled from the last axis in
    ``linalg_extracttrian``'s order (its inverse)."""
    xp = cx.xp
    n = _trian_side("linalg_maketrian", a.shape[-1]) + abs(at["offset"])
    out = xp.zeros(a.shape[:-1] + (n, n), a.dtype)
    dst = out if _reads_lower(at) else _t(xp, out)
    for i, j, m in _trian_rows(n, at):
        dst[..., i, :m] = a[..., j : j + m]
    return out


# --------------------------------------------------------------------------
# factorizations of two outputs, packed in one (as slogdet's): gelqf, syevd


def _gelqf_infer(at: dict, a: Spec) -> Spec:
    _matrices("linalg_gelqf", a)
    dt = _floats("linalg_gelqf", a)
    m, n = a.shape[-2:]
    if m > n:
        raise ShapeError(f"linalg_gelqf: the matrices must have no more rows than columns, got shape {a.shape}")
    return Spec(a.shape[:-1] + (n + m,), dt)


def _gelqf_vjp(F, at, g, y, a):
    # A = L Q (Q's rows orthonormal): with M = L^T dL - dQ Q^T, dA = L^-T (dQ + copyltu(M) Q),
    # copyltu(M) the symmetric matrix of M's lower triangle (MXNet's, Walter and Lehmann 2018)
    n = int(a.shape[-1])
    q, low = F.slice_axis(y, axis=-1, begin=0, end=n), F.slice_axis(y, axis=-1, begin=n, end=None)
    dq, dlow = F.slice_axis(g, axis=-1, begin=0, end=n), F.slice_axis(g, axis=-1, begin=n, end=None)
    m = F.sub(F.linalg_gemm2(low, dlow, transpose_a=True), F.linalg_gemm2(dq, q, transpose_b=True))
    sym = F.add(_tri_mul(F, m, True), _swap(F, _tri_mul(F, m, True, 0.0)))
    return (F.linalg_trsm(low, F.add(dq, F.linalg_gemm2(sym, q)), transpose=True),)


def _gelqf_vjp_bytes(at: dict, a: Spec) -> int:
    """The slices of Q, L and their cotangents (A's and two m x m), the two products, M, its
    masks and triangles (m x m each, six), the sum, its product with Q and the solve's."""
    m = prod(a.shape[:-1]) * a.shape[-2] * _itemsize(a)
    return 2 * a.nbytes + 10 * m + 2 * a.nbytes + _trsm_bytes(False, Spec(a.shape[:-1] + (a.shape[-2],), a.dtype), a)


def _gelqf_bytes(a: Spec) -> int:
    """numpy's QR of A^T, in float64 whatever the dtype: A's copy, Q and R (m x m each), then
    float32's Q and R in float32; LAPACK's buffers for one matrix."""
    m, n = a.shape[-2:]
    squares = prod(a.shape[:-2]) * m * m
    b = 8 * (2 * prod(a.shape) + squares) + 8 * n * (m + 1)
    return b + (a.nbytes + 4 * squares if a.dtype == "float32" else 0)


@defop(
    "linalg_gelqf",
    ("A",),
    infer=_gelqf_infer,
    vjp=_gelqf_vjp,
    work=lambda at, a: prod(a.shape) * a.shape[-2] if len(a.shape) >= 2 else 0,
    scratch=lambda at, a: _gelqf_bytes(a),
    vjp_scratch=_gelqf_vjp_bytes,
)
def _linalg_gelqf(cx, at, a):
    """The LQ factorization of each matrix of A (m x n, m <= n): A = L Q with L (m x m) lower
    triangular and Q (m x n) of orthonormal rows, LAPACK's signs (MXNet's). The table holds one
    output per op: Q and L joined on the last axis, (..., m, n + m); ``nd.linalg.gelqf`` gives
    MXNet's two arrays [Q, L]."""
    xp = cx.xp
    q, r = xp.linalg.qr(_t(xp, a))  # (A^T = Q^T L^T: the LQ of A is the QR of its transpose)
    return xp.concatenate([_t(xp, q), _t(xp, r)], axis=-1).astype(a.dtype, copy=False)


def _syevd_infer(at: dict, a: Spec) -> Spec:
    n = _square("linalg_syevd", a)
    return Spec(a.shape[:-2] + (n + 1, n), _floats("linalg_syevd", a))


def _syevd_vjp(F, at, g, y, a):
    # A = U^T diag(lam) U (U's rows the eigenvectors): with G = U dU^T and K its off-diagonal
    # part over lam_col - lam_row, dA = sym(U^T (diag(dlam) + K) U)
    n = int(a.shape[-1])
    u, lam = F.slice_axis(y, axis=-2, begin=0, end=n), F.slice_axis(y, axis=-2, begin=n, end=None)
    du, dlam = F.slice_axis(g, axis=-2, begin=0, end=n), F.slice_axis(g, axis=-2, begin=n, end=None)
    eye = np.eye(n, dtype=a.dtype)
    gap = F.broadcast_add(F.broadcast_sub(lam, _swap(F, lam)), eye)  # lam_c - lam_r, 1 on the diagonal
    k = F.div(F.mul(F.linalg_gemm2(u, du, transpose_b=True), 1 - eye), gap)
    mid = F.add(k, F.broadcast_mul(_swap(F, dlam), eye))
    bar = F.linalg_gemm2(F.linalg_gemm2(u, mid, transpose_a=True), u)
    return (F.mul_scalar(F.add(bar, _swap(F, bar)), scalar=0.5),)


def _syevd_vjp_bytes(at: dict, a: Spec) -> int:
    """Arrays of A's size, at most a dozen: the slices, the gaps, G, its masked part, K, the
    middle matrix, the two products and the symmetric sum; and the identity."""
    return 12 * a.nbytes + 2 * _one_matrix(a)


@defop(
    "linalg_syevd",
    ("A",),
    infer=_syevd_infer,
    vjp=_syevd_vjp,
    work=_matrix_work,
    # the symmetric part, numpy's eigh (LAPACK's buffers, the vectors), U and its signs
    scratch=lambda at, a: 5 * a.nbytes + 8 * a.shape[-1] * (2 * a.shape[-1] + 10),
    vjp_scratch=_syevd_vjp_bytes,
)
def _linalg_syevd(cx, at, a):
    """The eigendecomposition of each symmetric matrix of A: A = U^T diag(lam) U, the rows of U
    the eigenvectors (each signed so that its largest entry in absolute value is positive, as
    MXNet's), lam ascending. Of a matrix that is not symmetric, that of its symmetric part
    (A + A^T) / 2, whose derivative is the symmetric gradient MXNet gives (MXNet reads the lower
    triangle alone). The table holds one output per op: U with lam as one more row, (..., n + 1,
    n); ``nd.linalg.syevd`` gives MXNet's two arrays [U, lam]."""
    xp = cx.xp
    half = a.dtype.type(0.5)
    s = a * half
    s += _t(xp, a) * half
    lam, v = xp.linalg.eigh(s)
    u = _t(xp, v)
    if u.size:  # (0 x 0 matrices: nothing to sign)
        big = xp.take_along_axis(u, xp.abs(u).argmax(axis=-1)[..., None], axis=-1)
        u = u * xp.where(big < 0, -1, 1).astype(a.dtype)
    return xp.concatenate([u, lam[..., None, :]], axis=-2).astype(a.dtype, copy=False)
