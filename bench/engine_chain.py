"""Per-op cost of a recorded 1000-op elementwise chain on shape (4,), forward +
backward: gradserve's engine (a batch run by a session, as the server runs it),
gradserve's client in-process (nd calls, queue and engine), PyTorch eager, and
numpy forward alone; with a compiled engine, its Python sources too (a child process run
with GRADSERVE_PURE=1). Interleaved rounds, medians, ratios in one run.

    .venv/bin/python bench/engine_chain.py [--rounds 30]

The chain is y = y * 1.0001, repeated; backward from its sum.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from bench._util import Seconds, Worker, interleave, med, report  # noqa: E402

N = 1000


def numpy_forward() -> None:
    x = np.ones(4, np.float32)
    s = np.float32(1.0001)
    for _ in range(N):
        x = x * s


def engine_batch() -> list:
    ops = [{"op": "ones", "out": [1], "at": {"shape": [4]}}, {"op": "attach_grad", "in": [1]}]
    for i in range(N):
        ops.append({"op": "mul_scalar", "in": [i + 1], "out": [i + 2], "at": {"scalar": 1.0001}, "mode": 3})
    ops.append({"op": "backward", "in": [N + 1]})
    return ops


def engine() -> Seconds:
    """One engine round: the chain's batch run by a new session, timed from a batch just
    decoded, as a server runs one (not from one of many kept from the start, which the
    garbage collector would walk again and again)."""
    from gradserve.engine import Session

    batch = engine_batch()
    t = time.perf_counter()
    Session("bench").run_batch({"ops": batch})
    return Seconds(time.perf_counter() - t)


def worker() -> None:
    """``--worker``: one engine round per line read, its seconds printed (the Python-sources case)."""
    for _ in sys.stdin:
        print(engine(), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker()

    import gradserve
    from gradserve import autograd, nd
    from gradserve.engine import NATIVE

    pure = Worker(__file__, {"GRADSERVE_PURE": "1"}) if NATIVE != "python" else None

    client = gradserve.Client(gradserve.InProcess())
    gradserve.set_current(client)

    def client_inprocess() -> None:
        x = nd.ones((4,))
        x.attach_grad()
        with autograd.record():
            y = x
            for _ in range(N):
                y = y * 1.0001
        y.backward()
        client.flush()

    cases: dict[str, Any] = {
        "numpy forward only": numpy_forward,
        "gradserve engine (batch)": engine,
        "gradserve client in-process (nd)": client_inprocess,
    }
    if pure is not None:  # the engine's Python sources, in a child process, interleaved the same
        cases["gradserve engine, Python sources (GRADSERVE_PURE=1)"] = pure
    try:
        import torch

        torch.set_num_threads(1)

        def torch_eager() -> None:
            x = torch.ones(4, requires_grad=True)
            y = x
            for _ in range(N):
                y = y * 1.0001
            y.sum().backward()

        cases["pytorch eager"] = torch_eager
    except ImportError:
        pass
    res = interleave(cases, rounds=args.rounds, inner=1, warmup=2)
    if pure is not None:
        pure.close()
    per = {k: med(v) / N * 1e6 for k, v in res.items()}
    rows = [(k, f"{v:.2f} us/op") for k, v in per.items()]
    if "pytorch eager" in per:
        t = per["pytorch eager"]
        rows.append(("engine / pytorch", f"{per['gradserve engine (batch)'] / t:.2f}"))
        rows.append(("client in-process / pytorch", f"{per['gradserve client in-process (nd)'] / t:.2f}"))
    if pure is not None:
        rows.append(
            (
                f"engine ({NATIVE}) / its Python sources",
                f"{per['gradserve engine (batch)'] / per['gradserve engine, Python sources (GRADSERVE_PURE=1)']:.2f}",
            )
        )
    rows.append(("engine / numpy forward", f"{per['gradserve engine (batch)'] / per['numpy forward only']:.2f}"))
    report(f"1000-op recorded chain, forward + backward, {args.rounds} rounds, medians", rows, per)


if __name__ == "__main__":
    main()
