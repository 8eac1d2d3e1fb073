"""Tiny ops queued and flushed in batches, end to end through the server:
ops per second for y = y + 1 on shape (4,), read back at the end of each batch.

    .venv/bin/python bench/tiny_ops.py [--batch 1000] [--rounds 20]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._util import interleave, med, report, server  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    import gradserve
    from gradserve import nd

    def program(client: gradserve.Client):
        gradserve.set_current(client)
        x = nd.zeros((4,))

        def run() -> None:
            nonlocal x
            gradserve.set_current(client)
            for _ in range(args.batch):
                x = x + 1
            x.asnumpy()  # the one request of the batch

        return run

    local = gradserve.Client(gradserve.InProcess())
    with server() as url:
        remote = gradserve.Client(gradserve.Http(url))
        before = remote.transport.requests
        res = interleave(
            {"in-process": program(local), "remote (loopback)": program(remote)}, rounds=args.rounds, warmup=1
        )
        reqs = remote.transport.requests - before
    rows = [(k, f"{args.batch / med(v):,.0f} ops/s ({med(v) / args.batch * 1e6:.2f} us/op)") for k, v in res.items()]
    rows.append(("remote requests", f"{reqs} for {args.rounds + 1} batches of {args.batch} ops"))
    report(
        f"tiny ops, batches of {args.batch}, {args.rounds} rounds, medians",
        rows,
        {k: args.batch / med(v) for k, v in res.items()},
    )


if __name__ == "__main__":
    main()
