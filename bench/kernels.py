"""Candidate numba kernels against their numpy equivalents, to decide where a
kernel pays (and so whether the engine should carry one, with numpy as fallback).

    .venv/bin/python bench/kernels.py [--rounds 30]

Cases: an in-place SGD update of the MLP's largest weight (784x256), relu's
backward on a hidden layer (128x256), softmax cross-entropy forward + gradient
on the logits (128x10), and the scatter-add of an indexing gradient (a
gather's backward: 65,536 rows of 64 into a 10,000-row table).
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from bench._util import interleave, med, report  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    try:
        import numba
    except ImportError:
        print("numba is not installed: nothing to compare (pip install numba)")
        return

    @numba.njit(cache=True, fastmath=False)
    def sgd_(w, g, lr):
        wf, gf = w.ravel(), g.ravel()
        for i in range(wf.size):
            wf[i] -= lr * gf[i]

    @numba.njit(cache=True)
    def relu_bwd(g, x):
        out = np.empty_like(g)
        gf, xf, of = g.ravel(), x.ravel(), out.ravel()
        for i in range(gf.size):
            of[i] = gf[i] if xf[i] > 0 else 0.0
        return out

    @numba.njit(cache=True)
    def softmax_ce(z, y):
        n, k = z.shape
        grad = np.empty_like(z)
        loss = 0.0
        for i in range(n):
            m = z[i, 0]
            for j in range(1, k):
                m = max(m, z[i, j])
            s = 0.0
            for j in range(k):
                e = np.exp(z[i, j] - m)
                grad[i, j] = e
                s += e
            loss += np.log(s) + m - z[i, y[i]]
            for j in range(k):
                grad[i, j] /= s
            grad[i, y[i]] -= 1.0
        return loss, grad

    @numba.njit(cache=True)
    def scatter_add(out, idx, g):
        for i in range(idx.size):
            r = idx[i]
            for j in range(g.shape[1]):
                out[r, j] += g[i, j]

    rng = np.random.default_rng(0)
    w = rng.standard_normal((784, 256), dtype=np.float32)
    gw = rng.standard_normal((784, 256), dtype=np.float32)
    lr = np.float32(1e-6)
    h = rng.standard_normal((128, 256), dtype=np.float32)
    gh = rng.standard_normal((128, 256), dtype=np.float32)
    z = rng.standard_normal((128, 10), dtype=np.float32)
    y = rng.integers(0, 10, 128)
    rows = np.arange(128)
    table = np.zeros((10_000, 64), np.float32)
    idx = rng.integers(0, 10_000, 65_536)
    gi = rng.standard_normal((65_536, 64), dtype=np.float32)

    def np_softmax_ce():
        m = z.max(axis=1, keepdims=True)
        e = np.exp(z - m)
        s = e.sum(axis=1, keepdims=True)
        loss = float((np.log(s[:, 0]) + m[:, 0] - z[rows, y]).sum())
        g = e / s
        g[rows, y] -= 1
        return loss, g

    # the kernels agree with numpy before they are timed
    a, b = w.copy(), w.copy()
    a -= lr * gw
    sgd_(b, gw, lr)
    assert np.allclose(a, b)
    assert np.array_equal(relu_bwd(gh, h), gh * (h > 0))
    la, ga = np_softmax_ce()
    lb, gb = softmax_ce(z, y)
    assert abs(la - lb) < 1e-3 * abs(la) and np.allclose(ga, gb, atol=1e-6)
    ta, tb = np.zeros_like(table), np.zeros_like(table)
    np.add.at(ta, idx, gi)
    scatter_add(tb, idx, gi)
    assert np.allclose(ta, tb, atol=1e-4)

    cases = {
        "sgd 784x256: numpy w -= lr * g": lambda: w.__isub__(lr * gw),
        "sgd 784x256: numba in place": lambda: sgd_(w, gw, lr),
        "relu backward 128x256: numpy g * (x > 0)": lambda: gh * (h > 0),
        "relu backward 128x256: numba": lambda: relu_bwd(gh, h),
        "softmax CE 128x10 fwd+grad: numpy": np_softmax_ce,
        "softmax CE 128x10 fwd+grad: numba": lambda: softmax_ce(z, y),
        "scatter-add 65536x64 -> 10000x64: np.add.at": lambda: np.add.at(table, idx, gi),
        "scatter-add 65536x64 -> 10000x64: numba": lambda: scatter_add(table, idx, gi),
    }
    res = interleave(cases, rounds=args.rounds, inner=5, warmup=2)
    out = []
    names = list(res)
    for i in range(0, len(names), 2):
        a_, b_ = med(res[names[i]]), med(res[names[i + 1]])
        out.append((names[i], f"{a_ * 1e6:.1f} us"))
        out.append((names[i + 1], f"{b_ * 1e6:.1f} us (x{a_ / b_:.2f} faster than numpy)"))
    report(f"numba kernels against numpy, {args.rounds} rounds, medians", out, {k: med(v) for k, v in res.items()})


if __name__ == "__main__":
    main()
