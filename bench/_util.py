"""Shared helpers for the benchmarks: a real server in its own process, interleaved timing, reports."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Url(str):
    """A server's URL, with the process id of the server."""

    pid: int = 0


@contextlib.contextmanager
def server(
    env: dict[str, str] | None = None, extra: list[str] | None = None, entry: list[str] | None = None
) -> Iterator[str]:
    """``gradserve serve`` (uvicorn, httptools, uvloop) in a child process on a free loopback port.
    ``entry``: the command that stands for ``python -m gradserve`` (a script that wraps it)."""
    port = free_port()
    cmd = [*(entry or [sys.executable, "-m", "gradserve"]), "serve", "--host", "127.0.0.1", "--port", str(port)]
    cmd += extra or []
    proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, cwd=ROOT)
    url = Url(f"http://127.0.0.1:{port}")
    url.pid = proc.pid
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the server did not start") from None
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


class Seconds(float):
    """What a self-timed benchmark case returns (see ``interleave``)."""


def interleave(
    cases: dict[str, Callable[[], Any]], rounds: int, inner: int = 1, warmup: int = 1
) -> dict[str, list[float]]:
    """Seconds per call of each case, run in turn round after round (so drift hits all alike),
    in reverse order every other round (so no case always follows the same one: a case after
    one that left a core idle or the caches cold pays for it). A case that returns ``Seconds``
    has timed itself (a case run in another process, or one that sets up each call untimed)."""
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    out: dict[str, list[float]] = {k: [] for k in cases}
    order = list(cases.items())
    for r in range(rounds):
        for name, fn in order if r % 2 == 0 else order[::-1]:
            t = time.perf_counter()
            own: float | None = None
            for _ in range(inner):
                r = fn()
                if isinstance(r, Seconds):
                    own = (own or 0.0) + r
            out[name].append((time.perf_counter() - t if own is None else own) / inner)
    return out


class Worker:
    """A benchmark script run again as a child process (``--worker``, with its own environment):
    each call asks it for one round and gives the seconds it measured."""

    def __init__(self, script: str, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, script, "--worker"],
            env={**os.environ, **env},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def __call__(self) -> Seconds:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        return Seconds(self.proc.stdout.readline())

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def machine() -> str:
    import numpy as np

    from gradserve.engine import NATIVE

    blas = os.environ.get("OPENBLAS_CORETYPE", "unset")
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, engine {NATIVE}, "
        f"numpy {np.__version__}, OPENBLAS_CORETYPE={blas}, OPENBLAS_NUM_THREADS="
        f"{os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}"
    )


def report(title: str, rows: list[tuple[str, str]], data: dict[str, Any] | None = None) -> None:
    """Print a small Markdown table (and JSON when BENCH_JSON is set)."""
    print(f"\n### {title}\n\n{machine()}\n")
    print("| case | result |\n| --- | --- |")
    for k, v in rows:
        print(f"| {k} | {v} |")
    if data is not None and os.environ.get("BENCH_JSON"):
        print(json.dumps(data))
