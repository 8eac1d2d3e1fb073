"""Fixtures: a real uvicorn on a free loopback port, and clients in every mode."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

import gradserve
from gradserve.server import Settings, create_app


def pytest_report_header(config: pytest.Config) -> str:
    from gradserve.engine import NATIVE

    return f"gradserve engine: {NATIVE} (GRADSERVE_PURE=1 runs its Python sources)"


class LiveServer:
    """uvicorn serving a gradserve app from a thread, on 127.0.0.1:<free port>."""

    def __init__(self, settings: Settings | None = None, port: int = 0, **config: Any) -> None:
        self.settings = settings or Settings()
        self.app = create_app(self.settings)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        self.url = f"{'https' if config.get('ssl_certfile') else 'http'}://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="on", **config))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


@pytest.fixture(scope="session")
def live_server() -> Iterator[LiveServer]:
    with LiveServer() as s:
        yield s


@pytest.fixture(params=["inprocess", "http"])
def mode(request: pytest.FixtureRequest, live_server: LiveServer) -> Iterator[gradserve.Client]:
    """A fresh session, made the current one: in-process, or over HTTP."""
    url = live_server.url if request.param == "http" else None
    client = gradserve.connect(url, seed=0)
    try:
        yield client
    finally:
        gradserve.set_current(None)
        client.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
