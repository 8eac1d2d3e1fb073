"""The engine's numba kernels (engine/kernels.py) against the numpy code each falls
back to: where a kernel pays, and by how much.

    .venv/bin/python bench/kernels.py [--rounds 30]

Cases: an in-place SGD update of the MLP's largest weight (784x256), the scaled
update a hybridized step's ``p -= lr * p.grad`` runs as (the same weight), relu's
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
    from gradserve.engine import kernels as k

    if not k.HAVE_NUMBA:
        print("numba is not installed (or GRADSERVE_NUMBA=0): nothing to compare (pip install numba)")
        return

    rng = np.random.default_rng(0)
    w = rng.standard_normal((784, 256), dtype=np.float32)
    gw = rng.standard_normal((784, 256), dtype=np.float32)
    lr = 1e-6
    h = rng.standard_normal((128, 256), dtype=np.float32)
    gh = rng.standard_normal((128, 256), dtype=np.float32)
    z = rng.standard_normal((128, 10), dtype=np.float32)
    y = rng.integers(0, 10, 128)
    one = np.ones(1, np.float32)
    table = np.zeros((10_000, 64), np.float32)
    idx = rng.integers(0, 10_000, 65_536)
    gi = rng.standard_normal((65_536, 64), dtype=np.float32)

    # the engine's kernels (engine/kernels.py) against the numpy code each falls back to;
    # tests/test_kernels.py checks that the two agree
    cases = {
        "sgd 784x256: numpy w -= lr * g": lambda: k.sgd_update_numpy(w, gw, lr, 0.0, 1.0, -1.0),
        "sgd 784x256: numba in place": lambda: k.sgd_update(w, gw, lr),
        "scaled update 784x256 (a program's p -= lr * p.grad): numpy": lambda: np.subtract(
            w, np.multiply(gw, np.float32(lr)), out=w
        ),
        "scaled update 784x256 (a program's p -= lr * p.grad): numba": lambda: k.scaled_sub(w, gw, lr),
        "relu backward 128x256: numpy g * (x > 0)": lambda: k.relu_grad_numpy(gh, h),
        "relu backward 128x256: numba": lambda: k.relu_grad(gh, h),
        "softmax CE 128x10 fwd+grad: numpy": lambda: (
            k.softmax_ce_loss_numpy(z, y),
            k.softmax_ce_grad_numpy(z, y, 1.0),
        ),
        "softmax CE 128x10 fwd+grad: numba": lambda: (k.softmax_ce_loss(z, y), k.softmax_ce_grad(z, y, one)),
        "scatter-add 65536x64 -> 10000x64: np.add.at": lambda: k.scatter_add_rows_numpy(table, idx, gi),
        "scatter-add 65536x64 -> 10000x64: numba": lambda: k.scatter_add_rows(table, idx, gi),
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
