"""Prometheus metrics of one app: requests, batches, ops, errors, sessions, bytes.

Each app has its own registry (several apps can live in one process, as in
the tests); ``GET /metrics`` serves it in Prometheus's text format.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.requests import ClientDisconnect
from starlette.routing import Mount

from ..engine import parallel
from .store import SessionStore

_SESSION_PATH = re.compile(r"^/v1/sessions/[^/]+")
_HANDLE = re.compile(r"/arrays/[^/]+")  # (one that is not an integer is the route's 400: its series too)


_OP_NAME = re.compile(r"/ops/[^/]+$")
_SESSION_ROUTES = frozenset(
    "/v1/sessions/{id}" + r
    for r in ("", "/batch", "/backward", "/ops/{name}", "/arrays/{h}", "/arrays/{h}/attach_grad", "/arrays/{h}/grad")
)


def route_of(path: str, route: Any = None, folders: tuple[str, ...] = ()) -> str:
    """A path with its ids (and op names) replaced, so that label values stay few: the session
    routes by their shapes here; another path by the template of ``route``, the route that
    served it (``scope["route"]``, set by the router on a match), or as ``folder/{file}``
    under one of the ``folders`` whose files the app serves; a path none of these took is
    ``(unmatched)``, whatever the method or status, so that probing adds no series."""
    if path.startswith("/v1/sessions/"):
        path = _HANDLE.sub("/arrays/{h}", _SESSION_PATH.sub("/v1/sessions/{id}", path))
        path = _OP_NAME.sub("/ops/{name}", path)
        return path if path in _SESSION_ROUTES else "(unmatched)"
    for folder in folders:
        if path.startswith(folder + "/"):
            return folder + "/{file}"
    template = getattr(route, "path", None)
    if isinstance(template, str) and template.startswith("/") and not isinstance(route, Mount):
        return template
    return "(unmatched)"


class Metrics:
    """The counters and gauges of one app."""

    def __init__(self, folders: tuple[str, ...] = ()) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("gradserve_http_requests", "HTTP requests", ["method", "route", "status"], registry=r)
        self.request_seconds = Histogram(
            "gradserve_http_request_seconds",
            "HTTP request latency",
            ["route"],
            registry=r,
            buckets=(1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1, 0.5, 2.5, 10),
        )
        self.batches = Counter("gradserve_batches", "batches run", registry=r)
        self.ops = Counter("gradserve_ops", "instructions run", registry=r)
        self.program_steps = Counter(
            "gradserve_program_steps", "instructions of the programs that batches called", registry=r
        )
        self.errors = Counter("gradserve_batch_errors", "batches stopped by a failing op", ["kind"], registry=r)
        self.sessions = Gauge("gradserve_sessions", "live sessions", registry=r)
        self.session_bytes = Gauge("gradserve_session_bytes", "bytes held by all sessions' arrays", registry=r)
        self.helpers = Gauge("gradserve_backward_helpers", "helper threads of the backward pass", registry=r)
        self.helper_jobs = Gauge(
            "gradserve_backward_helper_jobs", "products computed by the helper threads since they started", registry=r
        )
        self.snapshot_seconds = Histogram("gradserve_snapshot_seconds", "time to write changed sessions", registry=r)
        self.snapshot_failures = Counter(
            "gradserve_snapshot_failures", "sessions whose snapshot could not be written (a full disk)", registry=r
        )
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}  # few: routes have their ids replaced
        self.folders = folders  # where the app serves files (counted as ``folder/{file}``)

    def observe_batch(self, n_ops: int, error_kind: str | None, program_steps: int = 0) -> None:
        self.batches.inc()
        self.ops.inc(n_ops)
        if program_steps:
            self.program_steps.inc(program_steps)
        if error_kind is not None:
            self.errors.labels(error_kind).inc()

    def render(self, store: SessionStore) -> bytes:
        self.sessions.set(len(store))
        self.session_bytes.set(store.total_bytes())
        self.helpers.set(parallel.count())  # a scrape starts no threads
        self.helper_jobs.set(parallel.jobs_run())
        return generate_latest(self.registry)

    def observe_request(self, method: str, path: str, status: int, seconds: float, route: Any = None) -> None:
        """Count a request (``route``: the route that served it, if one did)."""
        route = route_of(path, route, self.folders)
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:  # labels() validates and locks on each call: look each series up once
            children = self._children[key] = (
                self.requests.labels(method, route, str(status)),
                self.request_seconds.labels(route),
            )
        children[0].inc()
        children[1].observe(seconds)


CONTENT_TYPE = CONTENT_TYPE_LATEST

CLIENT_CLOSED = 499
"""The status a request is counted under when its client went away before the server read its
whole body (nginx's code for it): no reply was sent, and no fault of the server's is counted (a
500 would be). One that leaves later counts under its reply's status (README, metrics)."""


async def metered(metrics: Metrics, app: Callable[..., Awaitable[None]], scope: dict, receive: Any, send: Any) -> None:
    """Run one HTTP request through ``app``, counting it by route and status."""
    start = time.perf_counter()
    status = 500

    async def send_status(message: dict) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        await send(message)

    try:
        await app(scope, receive, send_status)
    except ClientDisconnect:  # (its body not read whole: nothing to answer, nothing to log)
        status = CLIENT_CLOSED
    finally:
        metrics.observe_request(scope["method"], scope["path"], status, time.perf_counter() - start, scope.get("route"))
