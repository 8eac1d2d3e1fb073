"""16 clients at once, each a separate process with its own session running MLP
steps (reading the loss every step), against one client alone: aggregate steps
per second, p50/p99 step latency, errors.

    .venv/bin/python bench/many_clients.py [--clients 16] [--steps 40]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time

os.environ["OPENBLAS_NUM_THREADS"] = "1"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._util import med, pct, report, server  # noqa: E402


def worker(url: str, steps: int, start: float, out: mp.Queue) -> None:
    try:
        import gradserve
        from bench import _mlp

        x, y = _mlp.data()
        client = gradserve.Client(gradserve.Http(url))
        gradserve.set_current(client)
        model = _mlp.Gradserve(x, y)
        model.step().asscalar()
        while time.time() < start:
            time.sleep(0.001)
        lat = []
        for _ in range(steps):
            t = time.perf_counter()
            model.step().asscalar()
            lat.append(time.perf_counter() - t)
        client.close()
        out.put(("ok", lat, time.time()))
    except Exception as e:  # reported, and counted as an error
        out.put(("error", repr(e), time.time()))


def run(url: str, clients: int, steps: int) -> tuple[list[float], float, list[str]]:
    ctx = mp.get_context("spawn")
    q: mp.Queue = ctx.Queue()
    start = time.time() + 8.0 + 0.5 * clients  # all started and uploaded before the clock starts
    procs = [ctx.Process(target=worker, args=(url, steps, start, q)) for _ in range(clients)]
    for p in procs:
        p.start()
    lat: list[float] = []
    errors: list[str] = []
    end = start
    for _ in procs:
        kind, data, t = q.get(timeout=900)
        end = max(end, t)
        if kind == "ok":
            lat.extend(data)
        else:
            errors.append(data)
    for p in procs:
        p.join()
    return lat, end - start, errors


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--steps", type=int, default=40)
    args = ap.parse_args()
    rows = []
    with server(env={"OPENBLAS_NUM_THREADS": "1"}) as url:
        for n in (1, args.clients):
            lat, wall, errors = run(url, n, args.steps)
            rows.append(
                (
                    f"{n} client(s)",
                    f"{len(lat) / wall:.0f} steps/s aggregate, p50 {med(lat) * 1e3:.1f} ms, "
                    f"p99 {pct(lat, 0.99) * 1e3:.1f} ms, {len(errors)} errors",
                )
            )
            for e in errors[:3]:
                rows.append(("error", e))
    report(f"concurrent MLP clients, {args.steps} steps each, loss read every step", rows)


if __name__ == "__main__":
    main()
