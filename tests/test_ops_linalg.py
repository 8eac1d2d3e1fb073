"""The ``linalg_*`` ops against MXNet 1.9.1: values, gradients, shapes, dtypes and errors.

Every expected value here was printed by MXNet 1.9.1 (``mx.nd.linalg.*``, float64, gradients by
``autograd`` with the head gradient given) and is recorded as a literal. ``tests/test_ops.py``
holds the table-driven checks (references, finite differences, second order).
"""

from __future__ import annotations

import numpy as np
import pytest

from gradserve import autograd, nd
from gradserve.engine.dispatch import Context, Eager
from gradserve.engine.errors import DTypeError, InvalidInput, ShapeError
from gradserve.engine.optable import OPS, Spec
from gradserve.engine.tape import resolve

NAN = float("nan")
S = [[4.0, 1.0, 0.5], [1.0, 3.0, 0.2], [0.5, 0.2, 2.0]]  # symmetric positive definite
LU = [[2.0, 5.0, 5.0], [1.0, 3.0, 5.0], [0.5, -1.0, 1.5]]  # a triangle either way; the other one unread
B = [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]
BT = np.array(B).T.tolist()
G3 = np.arange(9.0).reshape(3, 3).tolist()
X4 = np.arange(1.0, 17.0).reshape(4, 4).tolist()
V6 = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]

LINALG = sorted(op.name for op in OPS.ops() if op.name.startswith("linalg_"))


def forward(name: str, *xs, dtype: str = "float64", **at) -> np.ndarray:
    op = OPS[name]
    arrays = [np.asarray(x, dtype) for x in xs]
    a = op.parse_attrs(at)
    y = op.forward(Context(0), a, *arrays)
    assert op.infer(a, *[Spec(x.shape, x.dtype.name) for x in arrays]) == (y.shape, y.dtype.name)
    return y


def vjp(name: str, xs, g, **at) -> list[np.ndarray]:
    op = OPS[name]
    arrays = [np.asarray(x, np.float64) for x in xs]
    a = op.parse_attrs(at)
    y = op.forward(Context(0), dict(a), *arrays)
    return [resolve(c) for c in op.vjp(Eager(Context(0)), a, np.asarray(g, np.float64), y, *arrays)]


# --------------------------------------------------------------------------
# values

FORWARD = [
    (
        "gemm",
        "linalg_gemm",
        ([[1.0, 2.0], [3.0, 4.0]], [[1.0, 0.0], [2.0, 1.0]], [[1.0, 1.0], [1.0, 1.0]]),
        {"transpose_a": True, "transpose_b": True, "alpha": 2.0, "beta": -1.0},
        [[1.0, 9.0], [3.0, 15.0]],
    ),
    (
        "syrk",
        "linalg_syrk",
        ([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]],),
        {"transpose": True, "alpha": 0.5},
        [[8.5, 11.0, 13.5], [11.0, 14.5, 18.0], [13.5, 18.0, 22.5]],
    ),
    ("trsm", "linalg_trsm", (LU, B), {}, [[0.0, 0.5], [0.666666667, 0.833333333], [3.11111111, 3.72222222]]),
    (
        "trsm-upper",
        "linalg_trsm",
        (LU, B),
        {"lower": False},
        [[2.77777778, 3.55555556], [-3.77777778, -4.55555556], [2.66666667, 3.33333333]],
    ),
    (
        "trsm-transpose-alpha",
        "linalg_trsm",
        (LU, B),
        {"transpose": True, "alpha": 2.0},
        [[-2.88888889, -2.77777778], [3.11111111, 4.22222222], [5.33333333, 6.66666667]],
    ),
    (
        "trsm-rightside",
        "linalg_trsm",
        (LU, BT),
        {"rightside": True},
        [[-1.44444444, 1.55555556, 2.66666667], [-1.38888889, 2.11111111, 3.33333333]],
    ),
    ("trmm", "linalg_trmm", (LU, B), {}, [[0.0, 2.0], [6.0, 10.0], [4.0, 5.0]]),
    (
        "trmm-upper-rightside-transpose",
        "linalg_trmm",
        (LU, BT),
        {"lower": False, "rightside": True, "transpose": True, "alpha": 0.5},
        [[15.0, 13.0, 3.0], [21.0, 17.0, 3.75]],
    ),
    ("potrf", "linalg_potrf", (S,), {}, [[2.0, 0.0, 0.0], [0.5, 1.6583124, 0.0], [0.25, 0.0452267017, 1.39120615]]),
    (
        "potrf-batch",
        "linalg_potrf",
        ([S, np.diag([1.0, 4.0, 9.0]).tolist()],),
        {},
        [
            [[2.0, 0.0, 0.0], [0.5, 1.6583124, 0.0], [0.25, 0.0452267017, 1.39120615]],
            [[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]],
        ],
    ),
    (  # the lower triangle of LU alone is read
        "potri",
        "linalg_potri",
        (LU,),
        {},
        [
            [0.354938272, -0.117283951, -0.185185185],
            [-0.117283951, 0.160493827, 0.148148148],
            [-0.185185185, 0.148148148, 0.444444444],
        ],
    ),
    (
        "inverse",
        "linalg_inverse",
        (S,),
        {},
        [
            [0.279943636, -0.0892437764, -0.0610615312],
            [-0.0892437764, 0.364020667, -0.0140911226],
            [-0.0610615312, -0.0140911226, 0.516674495],
        ],
    ),
    ("det-batch", "linalg_det", ([S, [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 2.0]]],), {}, [21.29, -2.0]),
    ("det-2d", "linalg_det", (S,), {}, [21.29]),  # one matrix: shape (1,), as MXNet
    ("det-singular", "linalg_det", ([[1.0, 2.0], [2.0, 4.0]],), {}, [0.0]),  # (no error, as MXNet)
    ("sumlogdiag-batch", "linalg_sumlogdiag", ([S, LU],), {}, [3.17805383, 2.19722458]),
    ("sumlogdiag-negative", "linalg_sumlogdiag", ([[-1.0, 1.0], [1.0, 2.0]],), {}, [NAN]),  # (no error, as MXNet)
    ("extractdiag-2", "linalg_extractdiag", (X4,), {"offset": -2}, [9.0, 14.0]),
    ("extractdiag0", "linalg_extractdiag", (X4,), {}, [1.0, 6.0, 11.0, 16.0]),
    ("extractdiag1", "linalg_extractdiag", (X4,), {"offset": 1}, [2.0, 7.0, 12.0]),
    ("makediag-2", "linalg_makediag", ([1.0, 2.0],), {"offset": -2}, np.diag([1.0, 2.0], -2).tolist()),
    ("makediag1", "linalg_makediag", ([1.0, 2.0],), {"offset": 1}, [[0.0, 1.0, 0.0], [0.0, 0.0, 2.0], [0.0, 0.0, 0.0]]),
    # a lower triangle row by row, an upper one column by column; lower counts only at offset 0
    ("extracttrian0-lower", "linalg_extracttrian", (X4,), {}, [1.0, 5.0, 6.0, 9.0, 10.0, 11.0, 13.0, 14.0, 15.0, 16.0]),
    (
        "extracttrian0-upper",
        "linalg_extracttrian",
        (X4,),
        {"lower": False},
        [1.0, 2.0, 6.0, 3.0, 7.0, 11.0, 4.0, 8.0, 12.0, 16.0],
    ),
    (
        "extracttrian-1-upper",
        "linalg_extracttrian",
        (X4,),
        {"offset": -1, "lower": False},
        [5.0, 9.0, 10.0, 13.0, 14.0, 15.0],
    ),
    ("extracttrian1-lower", "linalg_extracttrian", (X4,), {"offset": 1}, [2.0, 3.0, 7.0, 4.0, 8.0, 12.0]),
    ("extracttrian2", "linalg_extracttrian", (X4,), {"offset": 2, "lower": False}, [3.0, 4.0, 8.0]),
    ("maketrian0-lower", "linalg_maketrian", (V6,), {}, [[1.0, 0.0, 0.0], [2.0, 3.0, 0.0], [4.0, 5.0, 6.0]]),
    (
        "maketrian0-upper",
        "linalg_maketrian",
        (V6,),
        {"lower": False},
        [[1.0, 2.0, 4.0], [0.0, 3.0, 5.0], [0.0, 0.0, 6.0]],
    ),
    (
        "maketrian-1-upper",
        "linalg_maketrian",
        (V6,),
        {"offset": -1, "lower": False},
        [[0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [2.0, 3.0, 0.0, 0.0], [4.0, 5.0, 6.0, 0.0]],
    ),
    (
        "maketrian2-lower",
        "linalg_maketrian",
        (V6,),
        {"offset": 2},
        [
            [0.0, 0.0, 1.0, 2.0, 4.0],
            [0.0, 0.0, 0.0, 3.0, 5.0],
            [0.0, 0.0, 0.0, 0.0, 6.0],
            [0.0, 0.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 0.0, 0.0],
        ],
    ),
]


NAN2 = [[NAN, 1.0], [1.0, 1.0]]
FORWARD += [  # as BLAS's: an operand a zero factor multiplies is not read (its NaN stays out)
    ("gemm-beta-0", "linalg_gemm", (np.ones((2, 2)), np.ones((2, 2)), NAN2), {"beta": 0.0}, [[2.0, 2.0], [2.0, 2.0]]),
    ("gemm-alpha-0", "linalg_gemm", (NAN2, np.ones((2, 2)), np.ones((2, 2))), {"alpha": 0.0}, np.ones((2, 2))),
    ("trsm-alpha-0", "linalg_trsm", (NAN2, NAN2), {"alpha": 0.0}, np.zeros((2, 2))),
    ("trmm-alpha-0", "linalg_trmm", (NAN2, NAN2), {"alpha": 0.0}, np.zeros((2, 2))),
    ("syrk-alpha-0", "linalg_syrk", (NAN2,), {"alpha": 0.0}, np.zeros((2, 2))),
    ("trsm-nan-unread", "linalg_trsm", ([[1.0, NAN], [1.0, 1.0]], np.ones((2, 2))), {}, [[1.0, 1.0], [0.0, 0.0]]),
    ("trmm-nan-unread", "linalg_trmm", ([[1.0, NAN], [1.0, 1.0]], np.ones((2, 2))), {}, [[1.0, 1.0], [2.0, 2.0]]),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name, xs, at, want", [f[1:] for f in FORWARD], ids=[f[0] for f in FORWARD])
def test_values_are_mxnets(name, xs, at, want, dtype):
    y = forward(name, *xs, dtype=dtype, **at)
    assert y.dtype == dtype
    rtol = 1e-8 if dtype == "float64" else 2e-6
    np.testing.assert_allclose(y, np.array(want), rtol=rtol, atol=1e-6 if dtype == "float32" else 1e-9)


# --------------------------------------------------------------------------
# gradients

GRADS = [
    (  # symmetric, as MXNet's (half of it above the diagonal); the upper triangle of g is unread
        "potrf",
        "linalg_potrf",
        [S],
        (np.arange(9.0) + 1).reshape(3, 3),
        {},
        [
            [
                [0.0672939663, 0.348471129, 0.764706011],
                [0.348471129, 1.44417833, 2.3238743],
                [0.764706011, 2.3238743, 3.2346033],
            ]
        ],
    ),
    ("potrf-upper-head", "linalg_potrf", [S], np.triu(np.ones((3, 3)), 1), {}, [np.zeros((3, 3)).tolist()]),
    (  # a head gradient that is not symmetric: both triangles of the output count, as MXNet's
        "potri",
        "linalg_potri",
        [LU],
        G3,
        {},
        [[[0.975308642, 0.0, 0.0], [-0.913580247, -0.559670782, 0.0], [-2.07407407, -1.2345679, -5.06995885]]],
    ),
    (
        "syrk",
        "linalg_syrk",
        [[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]],
        [[0.0, 1.0], [2.0, 3.0]],
        {"alpha": 2.0},
        [[[24.0, 30.0, 36.0], [54.0, 72.0, 90.0]]],
    ),
    (
        "trsm",
        "linalg_trsm",
        [LU, B],
        np.ones((3, 2)),
        {},
        [
            [[-0.0277777778, 0.0, 0.0], [-0.277777778, -0.833333333, 0.0], [-0.333333333, -1.0, -4.55555556]],
            [[0.0555555556, 0.0555555556], [0.555555556, 0.555555556], [0.666666667, 0.666666667]],
        ],
    ),
    (
        "trsm-upper-rightside",
        "linalg_trsm",
        [LU, BT],
        [[1.0, -1.0, 2.0], [0.0, 1.0, 3.0]],
        {"lower": False, "rightside": True, "alpha": 2.0},
        [
            [[-2.5, 3.0, -2.0], [0.0, 4.40740741, -2.44444444], [0.0, 0.0, -5.62962963]],
            [[7.11111111, -5.11111111, 2.66666667], [5.0, -6.0, 4.0]],
        ],
    ),
    (
        "trmm",
        "linalg_trmm",
        [LU, B],
        np.ones((3, 2)),
        {},
        [[[1.0, 0.0, 0.0], [1.0, 5.0, 0.0], [1.0, 5.0, 9.0]], [[3.5, 3.5], [2.0, 2.0], [1.5, 1.5]]],
    ),
    (
        "trmm-transpose",
        "linalg_trmm",
        [LU, B],
        [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]],
        {"transpose": True, "alpha": -1.0},
        [[[-2.0, 0.0, 0.0], [-8.0, -18.0, 0.0], [-14.0, -32.0, -50.0]], [[-2.0, -4.0], [-10.0, -14.0], [-5.0, -6.0]]],
    ),
    (
        "gemm",
        "linalg_gemm",
        [[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], [[1.0, 4.0], [2.0, 5.0], [3.0, 6.0]], np.ones((2, 2))],
        np.ones((2, 2)),
        {"alpha": 2.0, "beta": 3.0},
        [
            [[10.0, 14.0, 18.0], [10.0, 14.0, 18.0]],
            [[10.0, 10.0], [14.0, 14.0], [18.0, 18.0]],
            [[3.0, 3.0], [3.0, 3.0]],
        ],
    ),
    (
        "sumlogdiag",
        "linalg_sumlogdiag",
        [S],
        [2.0],
        {},
        [[[0.5, 0.0, 0.0], [0.0, 0.666666667, 0.0], [0.0, 0.0, 1.0]]],
    ),
    ("det", "linalg_det", [S], [1.0], {}, [[[5.96, -1.9, -1.3], [-1.9, 7.75, -0.3], [-1.3, -0.3, 11.0]]]),
    (
        "inverse",
        "linalg_inverse",
        [S],
        G3,
        {},
        [
            [
                [0.109604974, 0.121763449, 0.147834342],
                [-0.0755122676, -0.350193188, -0.710546015],
                [-0.303081581, -0.945398058, -1.80009844],
            ]
        ],
    ),
    (
        "extracttrian-upper",
        "linalg_extracttrian",
        [S],
        np.arange(6.0),
        {"lower": False},
        [[[0.0, 1.0, 3.0], [0.0, 2.0, 4.0], [0.0, 0.0, 5.0]]],
    ),
    ("maketrian-upper", "linalg_maketrian", [np.arange(6.0)], G3, {"lower": False}, [[0.0, 1.0, 4.0, 2.0, 5.0, 8.0]]),
    (
        "extractdiag",
        "linalg_extractdiag",
        [S],
        [1.0, 2.0],
        {"offset": 1},
        [[[0.0, 1.0, 0.0], [0.0, 0.0, 2.0], [0.0, 0.0, 0.0]]],
    ),
    ("makediag", "linalg_makediag", [[1.0, 2.0]], G3, {"offset": -1}, [[3.0, 7.0]]),
]


@pytest.mark.parametrize("name, xs, g, at, want", [g[1:] for g in GRADS], ids=[g[0] for g in GRADS])
def test_gradients_are_mxnets(name, xs, g, at, want):
    cts = vjp(name, xs, g, **at)
    assert len(cts) == len(want)
    for ct, w in zip(cts, want):
        np.testing.assert_allclose(ct, np.array(w), rtol=1e-8, atol=1e-12)


def test_potrf_reads_a_symmetric_input_and_gives_its_symmetric_gradient():
    """MXNet reads the lower triangle of potrf's input alone, but its gradient is symmetric (the
    derivative along symmetric directions, half of each off-diagonal entry's on either side).
    We match the gradient and factor (A + A^T) / 2, whose derivative it is: the two agree on
    every symmetric input; of one that is not, MXNet factors the lower triangle mirrored
    ([[4, 100], [2, 5]] gave [[2, 0], [1, 2]]) where we factor the symmetric part (here not
    positive definite: an error)."""
    ct = vjp("linalg_potrf", [S], (np.arange(9.0) + 1).reshape(3, 3))[0]
    np.testing.assert_allclose(ct, ct.T, rtol=1e-14)  # (up to rounding, as MXNet's)
    sym = forward("linalg_potrf", [[4.0, 1.0], [3.0, 5.0]])
    np.testing.assert_allclose(sym, np.linalg.cholesky([[4.0, 2.0], [2.0, 5.0]]), rtol=1e-15)
    with pytest.raises(InvalidInput, match="linalg_potrf: a matrix is not positive definite"):
        forward("linalg_potrf", [[4.0, 100.0], [2.0, 5.0]])


def test_log_determinant_through_the_cholesky_factor(mode):
    """sumlogdiag(potrf(K)) = log det(K) / 2, whose gradient is K^-1 / 2, symmetric: a Gaussian
    process's likelihood, through the client, with the flat names as MXNet spells them too."""
    k = nd.array([S, np.diag([1.0, 4.0, 9.0]).tolist()], dtype="float64")
    k.attach_grad()
    with autograd.record():
        y = nd.linalg.sumlogdiag(nd.linalg_potrf(k))
    y.backward()
    assert y.shape == (2,)
    np.testing.assert_allclose(y.asnumpy(), [np.log(21.29) / 2, np.log(36.0) / 2], rtol=1e-12)
    np.testing.assert_allclose(k.grad.asnumpy(), np.linalg.inv(k.asnumpy()) / 2, rtol=1e-12, atol=1e-15)


def test_second_derivative_of_the_log_determinant(mode):
    """d/dK <grad log det K, V> = -K^-1 V K^-1 (here V = I), through a recorded backward pass
    (VJPs written with the table's ops)."""
    k = nd.array(S, dtype="float64")
    k.attach_grad()
    with autograd.record():
        y = nd.linalg.sumlogdiag(nd.linalg.potrf(k)) * 2
        (gk,) = autograd.grad(y, [k], create_graph=True)
        z = nd.linalg.extractdiag(gk).sum()
    z.backward()
    inv = np.linalg.inv(np.array(S))
    np.testing.assert_allclose(k.grad.asnumpy(), -inv @ inv, rtol=1e-10)


# --------------------------------------------------------------------------
# shapes, dtypes and errors


@pytest.mark.parametrize("name", LINALG)
@pytest.mark.parametrize("dtype", ["int32", "int64", "uint8", "float16", "bool"])
def test_only_float32_and_float64_are_taken_as_in_mxnet(name, dtype):
    """MXNet's linalg ops refuse every other dtype ("This operation only supports 32-bit and
    64-bit floating point"), makediag and maketrian too."""
    op = OPS[name]
    shape = (6,) if name in ("linalg_makediag", "linalg_maketrian") else (3, 3)
    specs = [Spec(shape, dtype)] * op.nin
    with pytest.raises(DTypeError, match=f"{name}: This operation only supports 32-bit and 64-bit floating point"):
        op.infer(op.parse_attrs({}), *specs)


SHAPE_ERRORS = [
    ("linalg_potrf", [(3,)], {}, "rank >= 2"),
    ("linalg_potrf", [(2, 3)], {}, "square"),
    ("linalg_potri", [(3, 2)], {}, "square"),
    ("linalg_inverse", [(2, 2, 3)], {}, "square"),
    ("linalg_det", [(3,)], {}, "rank >= 2"),
    ("linalg_det", [(2, 3)], {}, "square"),
    ("linalg_sumlogdiag", [(2, 3)], {}, "square"),
    ("linalg_syrk", [(3,)], {}, "rank >= 2"),
    ("linalg_extractdiag", [(3,)], {}, "rank >= 2"),
    ("linalg_extractdiag", [(2, 3)], {}, "square"),
    ("linalg_extractdiag", [(3, 3)], {"offset": 3}, "offset 3 is out of range"),
    ("linalg_extractdiag", [(3, 3)], {"offset": -3}, "offset -3 is out of range"),
    ("linalg_extracttrian", [(1, 1)], {"offset": 1}, "offset 1 is out of range"),
    ("linalg_extracttrian", [(3, 2)], {}, "square"),
    ("linalg_makediag", [()], {}, "rank >= 1"),
    ("linalg_maketrian", [()], {}, "rank >= 1"),
    ("linalg_maketrian", [(3, 2)], {}, "does not fill a triangle"),
    ("linalg_maketrian", [(4,)], {"offset": 1}, "does not fill a triangle"),
    ("linalg_gemm", [(2,), (2,), (2,)], {}, "rank >= 2"),
    ("linalg_gemm", [(2, 2, 2), (3, 2, 2), (2, 2, 2)], {}, "do not fit"),
    ("linalg_gemm", [(2, 2, 2), (2, 3), (2, 2, 3)], {}, "rank >= 2"),
    ("linalg_gemm", [(2, 2), (3, 3), (2, 3)], {}, "do not fit"),
    ("linalg_gemm", [(2, 2), (2, 3), (2, 2)], {}, "C has shape"),
    ("linalg_gemm", [(2, 2, 3), (2, 3, 2), (2, 2)], {}, "C has shape"),  # C does not broadcast
    ("linalg_trsm", [(2, 3), (2, 3)], {}, "square"),
    ("linalg_trsm", [(3, 3), (2, 3)], {}, "must have 3 rows"),
    ("linalg_trsm", [(2, 2), (2, 3)], {"rightside": True}, "must have 2 columns"),
    ("linalg_trsm", [(2, 2, 2), (3, 2, 3)], {}, "same leading"),
    ("linalg_trmm", [(2, 2), (3, 2, 3)], {}, "same rank"),
    ("linalg_trmm", [(2, 2), (3,)], {}, "rank >= 2"),
]


@pytest.mark.parametrize("name, shapes, at, match", SHAPE_ERRORS)
def test_shapes_mxnet_refuses_are_refused_naming_the_op(name, shapes, at, match):
    op = OPS[name]
    with pytest.raises(ShapeError, match=match) as e:
        op.infer(op.parse_attrs(at), *[Spec(s, "float32") for s in shapes])
    assert str(e.value).startswith(name)


def test_gemm_takes_axis_minus_2_alone():
    op = OPS["linalg_gemm"]
    specs = [Spec((2, 2), "float32")] * 3
    assert op.infer(op.parse_attrs({"axis": -2}), *specs) == ((2, 2), "float32")
    with pytest.raises(InvalidInput, match="only axis=-2"):
        op.infer(op.parse_attrs({"axis": -3}), *specs)


@pytest.mark.parametrize(
    "name, xs, match",
    [
        ("linalg_potrf", [[[1.0, 2.0], [2.0, 1.0]]], "linalg_potrf: a matrix is not positive definite"),
        ("linalg_potrf", [[[1.0, 0.0], [0.0, 1.0]], [[1.0, 2.0], [2.0, 1.0]]], "linalg_potrf: a matrix is not"),
        ("linalg_potri", [[0.0, 0.0], [1.0, 3.0]], "linalg_potri: a matrix is singular"),
        ("linalg_inverse", [[1.0, 2.0], [2.0, 4.0]], "linalg_inverse: a matrix is singular"),
        # (MXNet's trsm gives inf and nan here, BLAS's division by the zero)
        ("linalg_trsm", [[0.0, 0.0], [1.0, 3.0]], "linalg_trsm: a matrix is singular"),
    ],
)
def test_matrices_without_a_factor_or_inverse_raise_naming_the_op(name, xs, match):
    args = [xs, [[1.0], [1.0]]] if name == "linalg_trsm" else [xs]
    with pytest.raises(InvalidInput, match=match):
        forward(name, *args, dtype="float32")


def test_det_has_no_gradient_at_a_singular_matrix(mode):
    """MXNet 1.9.1 gives 0 there (the derivative is the adjugate, [[4, -2], [-2, 1]] here); our
    VJP takes the inverse, and says so."""
    a = nd.array([[1.0, 2.0], [2.0, 4.0]])
    a.attach_grad()
    with autograd.record():
        y = nd.linalg.det(a)
    assert y.asnumpy().tolist() == [0.0]
    with pytest.raises(InvalidInput, match="linalg_det: no gradient at a singular matrix"):
        y.backward()
        a.grad.asnumpy()


def test_a_matrix_that_is_not_positive_definite_raises_at_the_sync_point(mode):
    y = nd.linalg.potrf(nd.array([[1.0, 2.0], [2.0, 1.0]]))
    assert y.shape == (2, 2)  # (known without the data)
    with pytest.raises(InvalidInput, match="linalg_potrf: a matrix is not positive definite"):
        y.asnumpy()


def test_shape_errors_raise_at_the_call(mode):
    with pytest.raises(ShapeError, match="linalg_trsm: the inputs must have the same rank"):
        nd.linalg.trsm(nd.ones((2, 2, 2)), nd.ones((3, 2, 3)))


@pytest.mark.parametrize(
    "name, shape, at, want",
    [
        ("linalg_det", (3, 3), {}, (1,)),
        ("linalg_det", (2, 4, 3, 3), {}, (2, 4)),
        ("linalg_sumlogdiag", (3, 3), {}, (1,)),
        ("linalg_sumlogdiag", (5, 3, 3), {}, (5,)),
        ("linalg_extractdiag", (5, 4, 4), {"offset": -1}, (5, 3)),
        ("linalg_makediag", (5, 3), {"offset": 2}, (5, 5, 5)),
        ("linalg_extracttrian", (5, 4, 4), {"offset": 1}, (5, 6)),
        ("linalg_maketrian", (5, 10), {"offset": -1}, (5, 5, 5)),
        ("linalg_syrk", (2, 3, 4), {}, (2, 3, 3)),
        ("linalg_syrk", (2, 3, 4), {"transpose": True}, (2, 4, 4)),
        ("linalg_potrf", (0, 3, 3), {}, (0, 3, 3)),
    ],
)
def test_shapes_are_mxnets(name, shape, at, want):
    op = OPS[name]
    assert op.infer(op.parse_attrs(at), Spec(shape, "float64")) == (want, "float64")


# --------------------------------------------------------------------------
# the client's names

SHORT = [n.removeprefix("linalg_") for n in LINALG]


@pytest.mark.parametrize("short", SHORT)
def test_nd_linalg_and_the_flat_names_are_the_same_op(short, mode):
    """nd.linalg.potrf(A) and nd.linalg_potrf(A), as MXNet spells both."""
    a = nd.array([[4.0, 1.0, 0.5], [1.0, 3.0, 0.2], [0.5, 0.2, 2.0]])
    b = nd.array(B)
    n = OPS[f"linalg_{short}"].nin
    args = {1: (a,), 2: (a, b), 3: (a, a, a)}[n]
    if short == "maketrian":
        args = (nd.array(V6),)
    namespaced, flat = getattr(nd.linalg, short), getattr(nd, f"linalg_{short}")
    got, want = namespaced(*args), flat(*args)
    if short in ("slogdet", "gelqf", "syevd"):  # (two arrays)
        assert len(got) == len(want) == 2
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g.asnumpy(), w.asnumpy())
        return
    np.testing.assert_array_equal(got.asnumpy(), want.asnumpy())


MXNET_ATTRS = {  # (name, default) of each op's attributes, as MXNet 1.9.1 declares them
    "linalg_gemm": [("transpose_a", False), ("transpose_b", False), ("alpha", 1.0), ("beta", 1.0), ("axis", -2)],
    "linalg_gemm2": [("transpose_a", False), ("transpose_b", False), ("alpha", 1.0), ("axis", -2)],
    "linalg_trsm": [("transpose", False), ("rightside", False), ("lower", True), ("alpha", 1.0)],
    "linalg_trmm": [("transpose", False), ("rightside", False), ("lower", True), ("alpha", 1.0)],
    "linalg_syrk": [("transpose", False), ("alpha", 1.0)],
    "linalg_extractdiag": [("offset", 0)],
    "linalg_makediag": [("offset", 0)],
    "linalg_extracttrian": [("offset", 0), ("lower", True)],
    "linalg_maketrian": [("offset", 0), ("lower", True)],
}


@pytest.mark.parametrize("name", LINALG)
def test_inputs_and_attributes_are_mxnets(name):
    op = OPS[name]
    assert [(a.name, a.default) for a in op.attrs] == MXNET_ATTRS.get(name, [])
    assert op.inputs == ("A", "B", "C")[: op.nin]


def test_trsm_and_trmm_with_keyword_attributes_in_the_client(mode):
    lu = nd.array(LU)
    x = nd.linalg.trsm(lu, nd.array(B), transpose=True, alpha=2.0)
    np.testing.assert_allclose(
        x.asnumpy(), [[-2.88888889, -2.77777778], [3.11111111, 4.22222222], [5.33333333, 6.66666667]], rtol=2e-6
    )
    back = nd.linalg_trmm(lu, x, transpose=True, alpha=0.5)  # undoes it
    np.testing.assert_allclose(back.asnumpy(), B, rtol=1e-5, atol=1e-6)


def _substituted(t, b):
    """T X = B for a lower triangular T by substitution in long double: the reference."""
    t, x = t.astype(np.longdouble), b.astype(np.longdouble).copy()
    for i in range(len(t)):
        x[i] = (x[i] - t[i, :i] @ x[:i]) / t[i, i]
    return x


@pytest.mark.parametrize("dtype, tol", [("float64", 1e-13), ("float32", 1e-5)])
def test_triangular_solves_substitute_as_lapacks_trsm(dtype, tol):
    """An LU solve (numpy's) swapped the rows of a triangle whose diagonal is small against
    the rest: trsm lost every digit on a 20 x 20 one (relative error 0.99, MXNet 5e-16) and 4
    of 15 on a random 200 x 200 one; potri, whose L^-1 is such a solve, as many."""
    rng = np.random.RandomState(3)
    small = np.tril(rng.randn(20, 20))
    small[np.diag_indices(20)] = rng.uniform(0.05, 0.1, 20)
    big = np.tril(rng.randn(200, 200))
    big[np.diag_indices(200)] = rng.uniform(1, 2, 200)
    for t, b in [(small, np.ones((20, 1))), (big, rng.randn(200, 30))]:
        want = _substituted(t, b)
        scale = float(np.abs(want).max())
        x = nd.linalg.trsm(nd.array(t, dtype=dtype), nd.array(b, dtype=dtype)).asnumpy()
        assert float(np.abs(x - want).max()) / scale < tol
        upper = nd.linalg.trsm(nd.array(t.T, dtype=dtype), nd.array(b.T, dtype=dtype), rightside=True, lower=False)
        assert float(np.abs(upper.asnumpy().T - want).max()) / scale < tol  # (X U = B^T, U = T^T)
    inv = _substituted(big, np.eye(200))
    want = inv.T @ inv
    got = nd.linalg.potri(nd.array(big, dtype=dtype)).asnumpy()
    assert float(np.abs(got - want).max() / np.abs(want).max()) < tol


def test_alpha_0_reads_neither_operand_as_blas_and_mxnet():
    """With alpha 0, BLAS (and MXNet) read neither A nor B: gemm2 gave NaN where A held one, and
    the gradients of gemm2, gemm and syrk NaN too (values from MXNet 1.9.1)."""
    nan = np.nan
    a = nd.array([[nan, 1.0], [2.0, 3.0]], dtype="float64")
    b = nd.array([[1.0, 2.0], [3.0, 4.0]], dtype="float64")
    c = nd.array([[1.0, 2.0], [3.0, 4.0]], dtype="float64")
    for x in (a, b, c):
        x.attach_grad()
    for f, want_c in [
        (lambda: nd.linalg.gemm2(a, b, alpha=0.0), None),
        (lambda: nd.linalg.gemm(a, b, c, alpha=0.0) - c, [[0.0, 0.0], [0.0, 0.0]]),
        (lambda: nd.linalg.syrk(a, alpha=0.0), None),
        (lambda: nd.linalg.trsm(a, b, alpha=0.0), None),
    ]:
        with autograd.record():
            y = f()
        y.backward()
        assert y.asnumpy().tolist() == [[0.0, 0.0], [0.0, 0.0]]
        assert a.grad.asnumpy().tolist() == [[0.0, 0.0], [0.0, 0.0]]
        assert b.grad.asnumpy().tolist() == [[0.0, 0.0], [0.0, 0.0]]
        if want_c is not None:
            assert c.grad.asnumpy().tolist() == want_c


def test_potrf_of_values_past_half_the_dtypes_largest_does_not_overflow():
    """The symmetric part was (A + A^T) / 2: the sum overflowed to inf (MXNet 1.9.1's values)."""
    x = nd.linalg.potrf(nd.array([[3e38, 1e38], [1e38, 3e38]], dtype="float32")).asnumpy()
    np.testing.assert_allclose(x, [[1.7320508e19, 0.0], [5.7735026e18, 1.6329931e19]], rtol=1e-6)


def test_slogdet_gives_mxnets_two_arrays_and_gradient(mode):
    """nd.linalg.slogdet and nd.linalg_slogdet give [sign, log |det|], as MXNet's (values from
    MXNet 1.9.1); the op itself stacks them on a first axis of 2 (what a REST client reads)."""
    a = nd.array([[2.0, 1.0], [1.0, 3.0]])
    a.attach_grad()
    with autograd.record():
        sign, log = nd.linalg.slogdet(a)
        y = log * 1
    y.backward()
    assert sign.asnumpy().tolist() == [1.0] and log.shape == (1,)
    np.testing.assert_allclose(log.asnumpy(), [1.609438], rtol=1e-6)
    np.testing.assert_allclose(a.grad.asnumpy(), [[0.6, -0.2], [-0.2, 0.4]], rtol=1e-6)
    sign, log = nd.linalg_slogdet(nd.array([[[2.0, 1.0], [1.0, 3.0]], [[-1.0, 0.0], [0.0, 2.0]]]))
    assert sign.asnumpy().tolist() == [1.0, -1.0]
    np.testing.assert_allclose(log.asnumpy(), [1.609438, 0.6931472], rtol=1e-6)
    sign, log = nd.linalg.slogdet(nd.array([[1.0, 1.0], [1.0, 1.0]], dtype="float64"))
    assert sign.asnumpy().tolist() == [0.0] and log.asnumpy().tolist() == [-np.inf]
    assert OPS["linalg_slogdet"].infer({}, Spec((4, 5, 3, 3), "float32")) == Spec((2, 4, 5), "float32")


def test_slogdet_of_a_batch_holding_a_singular_matrix_has_its_gradient(mode):
    """Its VJP inverted every matrix, so one singular matrix refused the whole batch's gradient,
    even of the sign alone; MXNet gives the singular one 0 (values from MXNet 1.9.1)."""
    a = nd.array([[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]]])
    a.attach_grad()
    for head, want in [
        (lambda s, log: log.sum(), [[[-2.0, 1.5], [1.0, -0.5]], [[0.0, 0.0], [0.0, 0.0]]]),
        (lambda s, log: s.sum(), [[[0.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]]),
    ]:
        with autograd.record():
            y = head(*nd.linalg.slogdet(a))
        y.backward()
        np.testing.assert_allclose(a.grad.asnumpy(), want, rtol=1e-6, atol=0)


def test_gelqf_and_syevd_give_mxnets_two_arrays_and_gradients(mode):
    """LQ and symmetric eigendecomposition (MXNet 1.9.1's values and gradients, float32)."""
    a = nd.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.5]])
    a.attach_grad()
    with autograd.record():
        q, low = nd.linalg.gelqf(a)
        z = (q * nd.array([[1, 2, 3], [4, 5, 6]])).sum() + (low * nd.array([[1, 0], [2, 3]])).sum()
    z.backward()
    np.testing.assert_allclose(
        q.asnumpy(), [[-0.26726115, -0.5345225, -0.8017837], [0.91437715, 0.12191702, -0.3860704]], rtol=2e-6
    )
    np.testing.assert_allclose(low.asnumpy(), [[-3.7416575, 0.0], [-8.953251, 1.7576364]], rtol=2e-6)
    np.testing.assert_allclose(
        a.grad.asnumpy(), [[-9.685811, -2.0626113, 3.3564563], [2.1691458, -0.5947663, -2.8209748]], rtol=2e-5
    )
    s = nd.array([[2.0, 1.0, 0.5], [1.0, 3.0, 0.2], [0.5, 0.2, 1.0]])
    s.attach_grad()
    with autograd.record():
        u, lam = nd.linalg.syevd(s)
        z = (u * nd.array(np.arange(1.0, 10.0).reshape(3, 3))).sum() + (lam * nd.array([1, 2, 3])).sum()
    z.backward()
    want_u = [
        [-0.4597114, 0.12717491, 0.87891525],
        [0.70673573, -0.5469117, 0.4487896],
        [0.5377639, 0.82747465, 0.1615425],
    ]
    np.testing.assert_allclose(u.asnumpy(), want_u, rtol=1e-5, atol=1e-6)  # (each row's largest entry positive)
    np.testing.assert_allclose(lam.asnumpy(), [0.767417, 1.5436528, 3.6889317], rtol=1e-6)
    want = [
        [0.05015767, 0.84619194, 1.3097391],
        [0.84619194, 3.0573251, -0.61353934],
        [1.3097391, -0.6135393, 2.8925183],
    ]
    np.testing.assert_allclose(s.grad.asnumpy(), want, rtol=1e-5, atol=1e-6)
    u, lam = nd.linalg_syevd(nd.array([[[2.0, 1.0], [1.0, 3.0]], [[1.0, 0.0], [0.0, 1.0]]]))  # (a batch)
    np.testing.assert_allclose(u.asnumpy()[0], [[0.85065, -0.52573], [0.52573, 0.85065]], rtol=1e-5)
    np.testing.assert_allclose(lam.asnumpy(), [[1.381966, 3.618034], [1.0, 1.0]], rtol=1e-6)
    q, low = nd.linalg.gelqf(nd.array([[1.0, 2.0], [3.0, 4.0]], dtype="float64"))
    assert q.dtype == np.float64
    np.testing.assert_allclose(low.asnumpy(), [[-2.23606798, 0.0], [-4.91934955, -0.89442719]], rtol=1e-8)


def test_gelqf_and_syevd_refuse_what_mxnet_refuses():
    for name, shape, dtype, message in (
        ("linalg_gelqf", (3, 2), "float32", r"no more rows than columns, got shape \(3, 2\)"),
        ("linalg_gelqf", (2,), "float32", "rank >= 2"),
        ("linalg_gelqf", (2, 2), "float16", "only supports 32-bit and 64-bit floating point, not float16"),
        ("linalg_syevd", (1, 3), "float32", "square matrices"),
        ("linalg_syevd", (2, 2), "int32", "only supports 32-bit and 64-bit floating point, not int32"),
    ):
        with pytest.raises((ShapeError, DTypeError, InvalidInput), match=message):
            OPS[name].infer({}, Spec(shape, dtype))
    assert OPS["linalg_gelqf"].infer({}, Spec((5, 2, 3), "float32")) == Spec((5, 2, 5), "float32")
    assert OPS["linalg_syevd"].infer({}, Spec((5, 3, 3), "float64")) == Spec((5, 4, 3), "float64")


def test_syevd_and_gelqf_of_empty_matrices(mode):
    u, lam = nd.linalg.syevd(nd.ones((2, 0, 0)))
    assert u.shape == (2, 0, 0) and lam.shape == (2, 0)
    q, low = nd.linalg.gelqf(nd.ones((3, 0, 2)))
    assert q.shape == (3, 0, 2) and low.shape == (3, 0, 0)
    assert nd.ones(2).asnumpy().tolist() == [1, 1]  # (the session goes on)
