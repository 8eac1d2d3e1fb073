"""A 2-layer LSTM's training step (forward, backward, the loss read) through ``nd.RNN``:
gradserve in-process and remote (a server in its own process, loopback) against PyTorch's
``nn.LSTM`` with the same weights (the losses are checked equal first). Interleaved rounds,
medians and ratios in one run.

    .venv/bin/python bench/rnn.py [--rounds 15] [--steps 35] [--batch 32] [--hidden 200]
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from bench._util import interleave, med, report, server  # noqa: E402

LAYERS = 2


def gradserve_step(client, x, p, h0, c0, hidden):
    import gradserve
    from gradserve import autograd, nd

    gradserve.set_current(client)
    xs, ps, hs, cs = (nd.array(v) for v in (x, p, h0, c0))
    ps.attach_grad()

    def step() -> float:
        gradserve.set_current(client)  # (the arrays are the session's: its ops go there)
        with autograd.record():
            out = nd.RNN(xs, ps, hs, cs, state_size=hidden, num_layers=LAYERS, mode="lstm")
            loss = (out * out).mean()
        loss.backward()
        return loss.asscalar()

    return step


def torch_step(x, p, h0, c0, hidden):
    import torch

    torch.set_num_threads(1)
    m = torch.nn.LSTM(x.shape[2], hidden, LAYERS)
    with torch.no_grad():  # MXNet's packed layout: every weight, then every bias (the gates in torch's order)
        at = 0
        names = [f"{kind}_{side}_l{k}" for k in range(LAYERS) for kind in ("weight",) for side in ("ih", "hh")]
        names += [f"{kind}_{side}_l{k}" for k in range(LAYERS) for kind in ("bias",) for side in ("ih", "hh")]
        for name in names:
            w = getattr(m, name)
            w.copy_(torch.from_numpy(p[at : at + w.numel()].reshape(w.shape)))
            at += w.numel()
        assert at == p.size
    xt, state = torch.from_numpy(x), (torch.from_numpy(h0), torch.from_numpy(c0))

    def step() -> float:
        m.zero_grad()
        out, _ = m(xt, state)
        loss = (out * out).mean()
        loss.backward()
        return loss.item()

    return step


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--steps", type=int, default=35)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=200)
    args = ap.parse_args()
    import gradserve
    from gradserve.rnn import param_count

    t_len, n, h = args.steps, args.batch, args.hidden
    rng = np.random.default_rng(0)
    x = rng.standard_normal((t_len, n, h)).astype(np.float32)
    p = (rng.standard_normal(param_count("lstm", h, LAYERS, h)) * 0.05).astype(np.float32)
    h0 = (rng.standard_normal((LAYERS, n, h)) * 0.1).astype(np.float32)
    c0 = (rng.standard_normal((LAYERS, n, h)) * 0.1).astype(np.float32)
    with server() as url:
        local = gradserve.Client(gradserve.InProcess())
        remote = gradserve.Client(gradserve.Http(url))
        cases = {
            "gradserve in-process": gradserve_step(local, x, p, h0, c0, h),
            "gradserve remote": gradserve_step(remote, x, p, h0, c0, h),
        }
        try:
            cases["PyTorch nn.LSTM"] = torch_step(x, p, h0, c0, h)
        except ImportError:
            print("(PyTorch not installed: pip install -e '.[bench]')")
        losses = {k: f() for k, f in cases.items()}
        ref = losses["gradserve in-process"]
        for k, v in losses.items():
            assert abs(v - ref) <= 1e-5 * abs(ref), f"{k}: loss {v}, in-process {ref}"
        before = remote.transport.requests
        cases["gradserve remote"]()
        per_step = remote.transport.requests - before
        res = interleave(cases, rounds=args.rounds, warmup=1)
        remote.close()
        local.close()
    base = med(res["gradserve in-process"])
    rows = [(k, f"{med(v) * 1e3:.1f} ms per step ({med(v) / base:.2f} x in-process)") for k, v in res.items()]
    if "PyTorch nn.LSTM" in res:
        rows.append(("in-process / PyTorch", f"{base / med(res['PyTorch nn.LSTM']):.2f}"))
    rows.append(("requests per remote step", str(per_step)))
    report(
        f"LSTM {LAYERS} x {h}, T={t_len}, N={n}: forward, backward, loss read; {args.rounds} rounds, medians",
        rows,
        {k: v for k, v in res.items()},
    )


if __name__ == "__main__":
    main()
