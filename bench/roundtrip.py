"""One synchronous round trip: ``x.asscalar()`` of an already computed value
through gradserve's client and server, against raw TCP and httpx to a plain
FastAPI route with a pydantic body (each server in its own process, loopback).

    .venv/bin/python bench/roundtrip.py [--n 2000]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._util import free_port, interleave, med, pct, report, server  # noqa: E402


def _echo(port: int) -> None:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen()
    c, _ = s.accept()
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        d = c.recv(65536)
        if not d:
            return
        c.sendall(d)


def _fastapi(port: int) -> None:
    import uvicorn
    from fastapi import FastAPI
    from pydantic import BaseModel

    class Body(BaseModel):
        seq: int
        ops: list[dict]

    app = FastAPI()

    @app.post("/batch")
    def batch(body: Body) -> dict:
        return {"seq": body.seq, "values": []}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", http="httptools", loop="uvloop")


def _wait(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server did not start")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000, help="round trips per case (interleaved in 20 rounds)")
    args = ap.parse_args()
    import httpx

    import gradserve
    from gradserve import nd

    ctx = mp.get_context("spawn")
    p_echo, p_api = free_port(), free_port()
    procs = [
        ctx.Process(target=_echo, args=(p_echo,), daemon=True),
        ctx.Process(target=_fastapi, args=(p_api,), daemon=True),
    ]
    for p in procs:
        p.start()
    _wait(p_api)
    sock = socket.create_connection(("127.0.0.1", p_echo))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    payload = b"x" * 64

    def raw_tcp() -> None:
        sock.sendall(payload)
        n = 0
        while n < len(payload):
            n += len(sock.recv(65536))

    hx = httpx.Client(base_url=f"http://127.0.0.1:{p_api}")

    def httpx_fastapi() -> None:
        hx.post("/batch", json={"seq": 1, "ops": [{"op": "read", "in": [1]}]}).json()

    with server() as url:
        client = gradserve.Client(gradserve.Http(url))
        gradserve.set_current(client)
        x = nd.ones((1,)) * 3
        x.asscalar()
        before = client.transport.requests

        def gradserve_asscalar() -> None:
            x.asscalar()

        cases = {
            "raw TCP echo (64 B)": raw_tcp,
            "httpx -> FastAPI def route, pydantic body": httpx_fastapi,
            "gradserve x.asscalar() (client + server)": gradserve_asscalar,
        }
        rounds = 20
        res = interleave(cases, rounds=rounds * (args.n // rounds), inner=1, warmup=50)
        reqs = client.transport.requests - before
    for p in procs:
        p.terminate()
    rows = [(k, f"median {med(v) * 1e6:.0f} us, p90 {pct(v, 0.9) * 1e6:.0f} us") for k, v in res.items()]
    calls = len(res["gradserve x.asscalar() (client + server)"]) + 50
    rows.append(("requests made by the asscalar calls", f"{reqs} for {calls}"))
    report(f"sync round trip, {args.n} each, interleaved", rows, {k: med(v) for k, v in res.items()})


if __name__ == "__main__":
    main()
