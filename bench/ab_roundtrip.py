"""A change to the server against the build before it: ``x.asscalar()`` round trips to two
servers running at once, this tree's and another build's, from one client, interleaved in
rounds of 100 (each server warm, every round on the same machine state). Per-round ratio.

    .venv/bin/python bench/ab_roundtrip.py --other /tmp/old-shim [--rounds 40]

``--other``: a directory holding a ``gradserve`` package of the other build (put first on that
server's ``PYTHONPATH``). The build of an earlier commit, made for it:

    git archive <sha> | tar -x -C /tmp/old && (cd /tmp/old && .venv/bin/python setup.py build_ext --inplace)
    mkdir -p /tmp/old-shim/gradserve && cp /tmp/old/client/*.py /tmp/old-shim/gradserve/
    ln -s /tmp/old/engine /tmp/old/server /tmp/old-shim/gradserve/

(with this tree's ``.venv/bin/python`` for the build). The client is this tree's for both.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._util import Seconds, interleave, med, pct, report, server  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--other", required=True, help="a directory with the other build's gradserve package")
    ap.add_argument("--rounds", type=int, default=40)
    args = ap.parse_args()
    if not os.path.isdir(os.path.join(args.other, "gradserve")):
        ap.error(f"{args.other} holds no gradserve package")

    import gradserve
    from gradserve import nd

    def median_of_100(x: Any) -> Callable[[], Seconds]:
        def run() -> Seconds:
            times = []
            for _ in range(100):
                t = time.perf_counter()
                x.asscalar()
                times.append(time.perf_counter() - t)
            return Seconds(med(times))

        return run

    with contextlib.ExitStack() as stack:
        cases = {}
        for name, env in (("this tree", {}), ("other build", {"PYTHONPATH": args.other})):
            url = stack.enter_context(server(env=env))
            gradserve.set_current(gradserve.Client(gradserve.Http(url)))
            cases[name] = median_of_100(nd.array([1.0]) * 2)  # (computed: each asscalar is a read alone)
        res = interleave(cases, rounds=args.rounds, warmup=3)
    ratios = [a / b for a, b in zip(res["this tree"], res["other build"])]
    rows = [(k, f"median of the rounds' medians {med(v) * 1e6:.1f} us") for k, v in res.items()]
    rows.append(
        (
            "this tree / other build, per round",
            f"{med(ratios):.3f} (middle half {pct(ratios, 0.25):.3f} to {pct(ratios, 0.75):.3f})",
        )
    )
    report(f"asscalar against two servers at once, {args.rounds} rounds x 100", rows)


if __name__ == "__main__":
    main()
