"""The backward pass of a loop over an array's slices, ``sum_t (x[t] * w).sum()`` for x of
(T, 128, 128) float32, in-process: its time per slice for several T. A pass that builds each
slice's gradient as an array of x's size costs T times x's size (quadratic in T); one that
adds the slices' blocks into one array costs x's size once. Interleaved rounds, medians.

    .venv/bin/python bench/slices.py [--rounds 7] [--lengths 16,64,256]

To compare with another build, run it with that build's package first on ``PYTHONPATH``
(see bench/ab_roundtrip.py for how to make one).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from bench._util import Seconds, interleave, med, report  # noqa: E402


def case(t_len: int):
    from gradserve import autograd, nd

    x = nd.array(np.random.default_rng(0).standard_normal((t_len, 128, 128)).astype(np.float32))
    w = nd.ones((128, 128))
    x.attach_grad()

    def run() -> Seconds:
        with autograd.record():
            y = (x[0] * w).sum()
            for t in range(1, t_len):
                y = y + (x[t] * w).sum()
        y.wait_to_read()
        start = time.perf_counter()
        y.backward()
        x.grad.wait_to_read()
        return Seconds(time.perf_counter() - start)

    return run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--lengths", default="16,64,256")
    args = ap.parse_args()
    import gradserve

    gradserve.set_current(gradserve.Client(gradserve.InProcess()))
    lengths = [int(v) for v in args.lengths.split(",")]
    res = interleave({f"T={t}": case(t) for t in lengths}, rounds=args.rounds, warmup=1)
    rows = [
        (k, f"{med(v) * 1e3:.2f} ms backward, {med(v) / t * 1e6:.1f} us per slice")
        for (k, v), t in zip(res.items(), lengths)
    ]
    report(f"backward of a loop over x[t], x of (T, 128, 128) float32, {args.rounds} rounds, medians", rows)


if __name__ == "__main__":
    main()
