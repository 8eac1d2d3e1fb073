"""MLP 784-256-256-10 training steps: gradserve in-process and remote against
hand-written numpy and PyTorch, interleaved, medians and ratios in one run.

    .venv/bin/python bench/mlp.py [--rounds 40] [--inner 5] [--no-haswell] [--no-torch] [--pair]

``--no-haswell`` unsets OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE for every side
at once (this process and the server), before numpy loads. BLAS runs one
thread everywhere (OPENBLAS_NUM_THREADS=1, torch.set_num_threads(1)).

In-process, the step also runs without the backward pass's helper thread
(engine/parallel.py) and with ``nd.sgd_update`` for the update. Each timed sample
is ``--inner`` steps in a row: the helper's gain shows in longer runs (``--inner
40``), since a core that idled while another case ran comes back slowly.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

if "--no-haswell" in sys.argv and os.environ.get("OPENBLAS_CORETYPE"):
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    os.execve(sys.executable, [sys.executable, *sys.argv], env)
os.environ["OPENBLAS_NUM_THREADS"] = "1"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import _mlp  # noqa: E402
from bench._util import interleave, med, pct, report, server  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--inner", type=int, default=5, help="steps per timed sample")
    ap.add_argument("--no-haswell", action="store_true")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument(
        "--pair",
        action="store_true",
        help="numpy by hand and the hybridized step only, in-process (in the full run each case "
        "starts with the caches the eight others filled)",
    )
    args = ap.parse_args()

    import gradserve

    x, y = _mlp.data()
    if args.pair:
        pair(args, x, y)
        return
    local = gradserve.Client(gradserve.InProcess())
    gradserve.set_current(local)
    g_local = _mlp.Gradserve(x, y)
    numpy_ = _mlp.Numpy(x, y)
    cases = {"numpy (by hand)": numpy_.step}
    torch_ = None
    if not args.no_torch:
        try:
            torch_ = _mlp.Torch(x, y)
            cases["pytorch eager"] = torch_.step
        except ImportError:
            pass

    def local_step() -> None:
        g_local.step()
        local.flush()  # run it now: the step is timed with its work done

    cases["gradserve in-process"] = local_step

    from gradserve.engine import parallel

    if parallel.count():

        def local_alone() -> None:  # the same, without the backward pass's helper threads
            parallel.enable(False)
            try:
                local_step()
            finally:
                parallel.enable(True)

        cases["gradserve in-process, no helper threads"] = local_alone

    g_fused = _mlp.Gradserve(x, y, fused=True)

    def local_fused() -> None:
        g_fused.step()
        local.flush()

    cases["gradserve in-process, nd.sgd_update"] = local_fused

    g_fc = _mlp.Gradserve(x, y, fc=True)

    def local_fc() -> None:
        g_fc.step()
        local.flush()

    cases["gradserve in-process, nd.FullyConnected"] = local_fc

    g_hybrid = _mlp.Gradserve(x, y, hybrid=True)

    def local_hybrid() -> None:
        g_hybrid.step()
        local.flush()

    cases["gradserve in-process, hybridized"] = local_hybrid

    with server() as url:
        remote = gradserve.Client(gradserve.Http(url))
        gradserve.set_current(remote)
        g_remote = _mlp.Gradserve(x, y)
        remote.flush()
        losses = []

        def remote_read_each() -> None:
            losses.append(g_remote.step().asscalar())  # the one request of the step

        warmup = 2
        # the warm-up calls bring the count to 0, so every timed block of `inner` calls ends
        # with its read: no step of this case is left queued for the next case to pay for
        pipe = {"k": -warmup}

        def remote_pipelined() -> None:
            loss = g_remote.step()
            pipe["k"] += 1
            if pipe["k"] % args.inner == 0:
                loss.asscalar()  # one request per `inner` steps

        cases["gradserve remote, loss read every step"] = remote_read_each
        cases["gradserve remote, loss read every 5th step"] = remote_pipelined

        h_remote = _mlp.Gradserve(x, y, hybrid=True)
        remote.flush()

        def remote_hybrid_each() -> None:
            losses.append(h_remote.step().asscalar())

        cases["gradserve remote, hybridized, loss read every step"] = remote_hybrid_each

        # the same first loss by hand and through the server (same data, init and order)
        a = _mlp.Numpy(x, y).step()
        b = _mlp.Gradserve(x, y).step().asscalar()
        c = _mlp.Gradserve(x, y, hybrid=True).step().asscalar()
        d = _mlp.Gradserve(x, y, fc=True).step().asscalar()
        assert abs(a - b) < 1e-4 and b == c and abs(a - d) < 1e-4, (a, b, c, d)
        gradserve.set_current(local)

        # request counts: one per step that reads the loss, none for the others
        def requests(g: _mlp.Gradserve) -> tuple[int, int]:
            """Requests of 3 steps that read nothing, then of one that reads the loss."""
            before = remote.transport.requests
            for _ in range(3):
                g.step()
            zero = remote.transport.requests - before
            g.step().asscalar()
            return zero, remote.transport.requests - before - zero

        zero, one = requests(g_remote)
        assert (zero, one) == (0, 1), (zero, one)
        h_remote.step().asscalar()  # its first call traces it
        h_zero, h_one = requests(h_remote)
        assert (h_zero, h_one) == (0, 1), (h_zero, h_one)
        assert h_remote.train.traces == 1

        res = interleave(cases, rounds=args.rounds, inner=args.inner, warmup=warmup)
        assert not remote._queue, "a timed block left steps queued"
        info = remote.info()
    base = med(res["numpy (by hand)"])
    local_t = med(res["gradserve in-process"])
    rows = []
    for name, ts in res.items():
        m = med(ts)
        rows.append((name, f"{m * 1e3:.3f} ms/step, x{m / base:.2f} numpy, x{m / local_t:.2f} in-process"))
    if torch_ is not None:
        rows.append(("in-process / pytorch", f"{local_t / med(res['pytorch eager']):.2f}"))

    def spread(a: str, b: str) -> str:
        """The ratio a / b round by round (each round times both, close in time): its median and
        middle half, to tell a difference from the machine's noise."""
        r = [x / y for x, y in zip(res[a], res[b])]
        return f"{med(r):.2f} (middle half of the rounds {pct(r, 0.25):.2f} to {pct(r, 0.75):.2f})"

    rows.append(("in-process / numpy, per round", spread("gradserve in-process", "numpy (by hand)")))
    if torch_ is not None:
        rows.append(("in-process / pytorch, per round", spread("gradserve in-process", "pytorch eager")))
    remote_each = spread("gradserve remote, loss read every step", "gradserve in-process")
    rows.append(("remote read every step / in-process, per round", remote_each))
    fc = spread("gradserve in-process, nd.FullyConnected", "gradserve in-process")
    rows.append(("in-process nd.FullyConnected / nd.dot, per round", fc))
    hybrid = "gradserve in-process, hybridized"
    rows.append(("in-process hybridized / numpy, per round", spread(hybrid, "numpy (by hand)")))
    rows.append(("in-process hybridized / not, per round", spread(hybrid, "gradserve in-process")))
    remote_h = spread("gradserve remote, hybridized, loss read every step", hybrid)
    rows.append(("remote hybridized read every step / in-process hybridized, per round", remote_h))
    rows.append(("helper threads of the backward pass (in this process)", str(parallel.count())))
    rows.append(("requests: 3 steps without a read, then 1 with", f"{zero} and {one}"))
    rows.append(("the same, hybridized", f"{h_zero} and {h_one}"))
    rows.append(("server session after the run", f"{info['arrays']} arrays, {info['bytes'] / 2**20:.1f} MiB"))
    rows.append(
        (
            "BLAS",
            "OPENBLAS_CORETYPE unset for all sides"
            if args.no_haswell
            else f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')} for all sides",
        )
    )
    report(f"MLP step, {args.rounds} rounds x {args.inner} steps, medians", rows, {k: med(v) for k, v in res.items()})


def pair(args: argparse.Namespace, x: Any, y: Any) -> None:
    """The hybridized step against numpy by hand, the two alone, interleaved."""
    import gradserve

    local = gradserve.Client(gradserve.InProcess())
    gradserve.set_current(local)
    hybrid = _mlp.Gradserve(x, y, hybrid=True)

    def hybrid_step() -> None:
        hybrid.step()
        local.flush()

    cases = {"numpy (by hand)": _mlp.Numpy(x, y).step, "gradserve in-process, hybridized": hybrid_step}
    from gradserve.engine import parallel

    alone = "gradserve in-process, hybridized, no helper threads"
    if parallel.count():
        hybrid_alone = _mlp.Gradserve(x, y, hybrid=True)

        def alone_step() -> None:  # one core, as numpy by hand: the backward pass's helper off
            parallel.enable(False)
            try:
                hybrid_alone.step()
                local.flush()
            finally:
                parallel.enable(True)

        cases[alone] = alone_step
    res = interleave(cases, rounds=args.rounds, inner=args.inner, warmup=2)
    assert hybrid.train.traces == 1
    base = med(res["numpy (by hand)"])
    rows = [(name, f"{med(ts) * 1e3:.3f} ms/step, x{med(ts) / base:.2f} numpy") for name, ts in res.items()]

    def spread(case: str) -> str:
        r = [a / b for a, b in zip(res[case], res["numpy (by hand)"])]
        return f"{med(r):.3f} (middle half {pct(r, 0.25):.3f} to {pct(r, 0.75):.3f})"

    rows.append(("hybridized / numpy, per round", spread("gradserve in-process, hybridized")))
    if alone in res:
        rows.append(("hybridized without the helper / numpy, per round", spread(alone)))
    rows.append(("BLAS", f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')} for both"))
    report(f"MLP step, hybridized against numpy alone, {args.rounds} rounds x {args.inner} steps", rows)


if __name__ == "__main__":
    main()
