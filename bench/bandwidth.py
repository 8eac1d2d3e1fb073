"""64 MiB float32 up and down through the client (frames: bytes out of band,
sent from and received into numpy memory), against raw TCP on the same loopback,
and the JSON path (orjson) that other languages use. Interleaved, medians.

    .venv/bin/python bench/bandwidth.py [--mib 64] [--rounds 7]

Upload is ``nd.array(a).wait_to_read()`` (the copy ``nd.array`` makes, as MXNet
does, included); download is ``x.asnumpy()``. JSON: PUT and GET of
``/v1/sessions/{id}/arrays/{h}`` with http.client, decoded into numpy.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing as mp
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from bench._util import free_port, interleave, med, report, server  # noqa: E402


def _sink(port: int, n: int) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", port))
    s.listen()
    c, _ = s.accept()
    buf = np.empty(n, np.uint8)
    view = memoryview(buf)
    while True:
        k = 0
        while k < n:
            got = c.recv_into(view[k:], n - k)
            if not got:
                return
            k += got
        c.sendall(b"k")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--json-rounds", type=int, default=2)
    args = ap.parse_args()
    import httpx
    import orjson
    import pybase64  # the client's base64: SIMD, as a native base64 in another language would be

    try:
        import simdjson
    except ImportError:  # (the server extra installs it)
        simdjson = None

    import gradserve
    from gradserve import nd

    nbytes = args.mib << 20
    a = np.random.default_rng(0).random(nbytes // 4, dtype=np.float32)
    port = free_port()
    ctx = mp.get_context("spawn")
    sink = ctx.Process(target=_sink, args=(port, nbytes), daemon=True)
    sink.start()
    time.sleep(1.0)
    sock = socket.create_connection(("127.0.0.1", port))
    raw = memoryview(a).cast("B")

    def raw_tcp() -> None:
        sock.sendall(raw)
        sock.recv(1)

    with server() as url:
        client = gradserve.Client(gradserve.Http(url))
        gradserve.set_current(client)
        held = nd.array(a)
        held.wait_to_read()

        def upload() -> None:
            x = nd.array(a)
            x.wait_to_read()
            del x

        def download() -> None:
            b = held.asnumpy()
            assert b.shape == a.shape

        res = interleave(
            {"raw TCP send": raw_tcp, "gradserve upload": upload, "gradserve download": download},
            rounds=args.rounds,
            warmup=1,
        )
        b = held.asnumpy()
        assert np.array_equal(a, b)

        # the JSON path: any language, REST conveniences, orjson on both sides. The client is the
        # standard library's http.client on one keep-alive connection (httpx adds ~0.3 s per 85 MiB
        # body by itself: one row below measures it).
        sid = client.transport.session_id
        conn = http.client.HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1]), timeout=600)
        hx = httpx.Client(base_url=url, timeout=600)

        def call(method: str, path: str, body: bytes | None = None, accept: str = "application/json") -> bytes:
            for attempt in (1, 2):
                try:
                    conn.request(
                        method,
                        f"/v1/sessions/{sid}{path}",
                        body=body,
                        headers={"content-type": "application/json", "accept": accept},
                    )
                    resp = conn.getresponse()
                    break
                except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                    # (the server closes a keep-alive connection idle for 5 s, uvicorn's default:
                    # parsing 64 MiB of JSON numbers takes that long in a slow spell)
                    conn.close()
                    if attempt == 2:
                        raise
            data = resp.read()
            assert resp.status < 300, data[:200]
            return data

        def b64_body() -> bytes:
            data = pybase64.b64encode_as_string(memoryview(a).cast("B"))
            return orjson.dumps({"dtype": "float32", "shape": [a.size], "data": data})

        body = b""
        jres: dict[str, list[float]] = {
            "JSON upload (PUT, orjson)": [],
            "JSON download (GET, orjson)": [],
            "JSON download, bytes only (server encode + transfer)": [],
            "JSON download, read by simdjson (GET, as_buffer)": [],
            "JSON upload, base64 data (PUT, orjson)": [],
            "JSON download, base64 data (GET, orjson)": [],
            "JSON upload, base64 data, httpx client": [],
        }
        for r in range(args.json_rounds):
            t = time.perf_counter()
            body = orjson.dumps({"dtype": "float32", "shape": [a.size], "data": a}, option=orjson.OPT_SERIALIZE_NUMPY)
            call("PUT", f"/arrays/{900000 + r}", body)
            jres["JSON upload (PUT, orjson)"].append(time.perf_counter() - t)
            t = time.perf_counter()
            data = call("GET", f"/arrays/{900000 + r}")
            got_bytes = time.perf_counter() - t
            jres["JSON download, bytes only (server encode + transfer)"].append(got_bytes)
            got = np.array(orjson.loads(data)["data"], dtype=np.float32)
            jres["JSON download (GET, orjson)"].append(time.perf_counter() - t)
            assert np.array_equal(got, a)
            if simdjson is not None:  # a client that reads the numbers straight into an array, as the server does
                t = time.perf_counter()
                doc = simdjson.Parser().parse(data)
                got = np.frombuffer(doc["data"].as_buffer(of_type="d"), np.float64).astype(np.float32)
                jres["JSON download, read by simdjson (GET, as_buffer)"].append(got_bytes + time.perf_counter() - t)
                assert np.array_equal(got, a)
                del doc
            call("DELETE", f"/arrays/{900000 + r}")
            # the same JSON API with the tensor's bytes as base64 (any language has base64)
            t = time.perf_counter()
            call("PUT", f"/arrays/{800000 + r}", b64_body())
            jres["JSON upload, base64 data (PUT, orjson)"].append(time.perf_counter() - t)
            t = time.perf_counter()
            data = call("GET", f"/arrays/{800000 + r}", accept="application/json; tensors=base64")
            got = np.frombuffer(pybase64.b64decode(orjson.loads(data)["data"], validate=True), dtype="<f4")
            jres["JSON download, base64 data (GET, orjson)"].append(time.perf_counter() - t)
            assert np.array_equal(got, a)
            call("DELETE", f"/arrays/{800000 + r}")
            t = time.perf_counter()
            resp = hx.put(
                f"/v1/sessions/{sid}/arrays/{700000 + r}",
                content=b64_body(),
                headers={"content-type": "application/json"},
            )
            assert resp.status_code == 201, resp.text[:200]
            jres["JSON upload, base64 data, httpx client"].append(time.perf_counter() - t)
            call("DELETE", f"/arrays/{700000 + r}")
        json_mb = len(body) / 2**20
    sink.terminate()
    jres = {k: v for k, v in jres.items() if v}
    rows = [(k, f"{nbytes / med(v) / 1e9:.2f} GB/s ({med(v) * 1e3:.1f} ms)") for k, v in {**res, **jres}.items()]
    rows.append(("JSON body size", f"{json_mb:.0f} MiB for {args.mib} MiB of float32"))
    report(
        f"{args.mib} MiB float32, medians of {args.rounds} (JSON: {args.json_rounds})",
        rows,
        {k: nbytes / med(v) / 1e9 for k, v in {**res, **jres}.items()},
    )


if __name__ == "__main__":
    main()
