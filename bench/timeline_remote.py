"""Where a remote MLP step's time goes, on one clock across client and server.

    .venv/bin/python bench/timeline_remote.py [--steps 300]

The server is ``gradserve serve`` with stamps on its batch route (bench/_stamped_server.py);
the client stamps the step's phases. ``time.perf_counter`` is CLOCK_MONOTONIC, shared by the
processes, so each step is a sequence of stamps on one time line: the medians of the gaps
between them say what the round trip adds to the engine's work. The in-process step runs in
the same run, interleaved with the remote one in blocks of ten steps, for the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

os.environ["OPENBLAS_NUM_THREADS"] = "1"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import _mlp  # noqa: E402
from bench._util import med, report, server  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ORDER = [
    "client: step begins",
    "client: step recorded",
    "client: request sent",  # (encoded; the stamp is taken before the first sendmsg)
    "server: request in",
    "server: body read",
    "server: batch decoded",
    "server: batch run",
    "server: reply written",
    "server: route done",
    "client: reply read",
    "client: loss in hand",
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    args = ap.parse_args()

    import gradserve
    from gradserve import transport

    x, y = _mlp.data()
    stamps: list[tuple[str, float]] = []
    request = transport.Conn._request

    def stamped_request(self, head, parts):  # type: ignore[no-untyped-def]
        stamps.append(("client: request sent", time.perf_counter()))
        out = request(self, head, parts)
        stamps.append(("client: reply read", time.perf_counter()))
        return out

    local = gradserve.Client(gradserve.InProcess())
    gradserve.set_current(local)  # the arrays a Gradserve makes live in the current client's session
    g_local = _mlp.Gradserve(x, y)
    entry = [sys.executable, os.path.join(HERE, "_stamped_server.py")]
    with tempfile.TemporaryDirectory(prefix="gradserve-stamps-") as tmp:
        path = os.path.join(tmp, "server.json")
        with server(env={"GRADSERVE_STAMPS": path}, entry=entry) as url:
            gradserve.set_current(gradserve.Client(gradserve.Http(url)))
            g_remote = _mlp.Gradserve(x, y)
            for _ in range(20):
                g_remote.step().asscalar()
                g_local.step().asscalar()
            transport.Conn._request = stamped_request  # type: ignore[method-assign]
            t_local: list[float] = []
            try:
                for _ in range(max(1, args.steps // 10)):
                    for _ in range(10):
                        stamps.append(("client: step begins", time.perf_counter()))
                        loss = g_remote.step()
                        stamps.append(("client: step recorded", time.perf_counter()))
                        loss.asscalar()
                        stamps.append(("client: loss in hand", time.perf_counter()))
                    t = time.perf_counter()
                    for _ in range(10):
                        g_local.step().asscalar()
                    t_local.append((time.perf_counter() - t) / 10)
            finally:
                transport.Conn._request = request  # type: ignore[method-assign]
        with open(path) as f:  # written by the server as server() stopped it
            theirs = [tuple(s) for s in json.load(f)]
    steps: list[dict[str, float]] = []
    step: dict[str, float] | None = None
    for name, t in sorted(stamps + theirs, key=lambda s: s[1]):
        if name == "client: step begins":
            step = {name: t}
        elif step is not None:
            step.setdefault(name, t)
            if name == "client: loss in hand":
                steps.append(step)
                step = None
    whole = [s["client: loss in hand"] - s["client: step begins"] for s in steps]
    rows = []
    for a, b in zip(ORDER, ORDER[1:]):
        gaps = [s[b] - s[a] for s in steps if a in s and b in s]
        rows.append((f"{a} -> {b}", f"{med(gaps) * 1e6:.1f} us (of {len(gaps)} steps)"))
    remote_s, local_s = med(whole), med(t_local)
    rows.append(("remote step, reading the loss (stamped)", f"{remote_s * 1e3:.3f} ms"))
    rows.append(("in-process step, reading the loss", f"{local_s * 1e3:.3f} ms"))
    rows.append(("remote / in-process", f"{remote_s / local_s:.2f}"))
    report(f"Remote MLP step on one clock, {len(steps)} steps, medians", rows)


if __name__ == "__main__":
    main()
