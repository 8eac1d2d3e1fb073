"""The FastAPI app: sessions, the batch route and its thin REST conveniences.

Errors from the engine map to one JSON shape ``{"error": {kind, message,
index, op}}`` with a status fixed by the error's class.
"""

from __future__ import annotations

import asyncio
import hmac
import importlib.metadata
import logging
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from ..engine import FEATURES, NATIVE, parallel, wire
from ..engine.errors import InvalidInput, MXNetError, status_of
from ..engine.session import Session, catalog, check_envelope, error_body
from . import fast, protocol
from .deps import CurrentUser, SessionDep, Store, encode, encode_as, read_body, tensor_form, user_of, wants_msgpack
from .metrics import CLIENT_CLOSED, CONTENT_TYPE, Metrics, metered
from .rest import AttachGrad, Backward, BatchFailed, OneOp, arrays
from .settings import Settings
from .store import SessionStore

log = logging.getLogger("gradserve")


INLINE_VALIDATE_OPS = 256
"""A JSON batch of more instructions is validated in a thread, not on the event loop."""


def validated_batch(msg: Any) -> dict[str, Any]:
    """A JSON batch validated against the schema in full (binary batches take the
    raw-ASGI route of ``fast``, which checks their envelope; the engine checks
    every instruction either way)."""
    try:
        protocol.Batch.model_validate(msg)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidInput(f"invalid batch at {where}: {first['msg']}") from None
    return msg


def run(session: Session, msg: dict[str, Any], form: str, as_msgpack: bool) -> Response:
    """Execute a batch and encode its reply (in a thread: the values read may be large); the
    reply's status is the failing error's, else 200."""
    reply = session.run_batch(msg)
    out = dict(reply)
    out["values"] = [wire.encode_tensor(v, form) for v in reply["values"]]
    return encode_as(as_msgpack, out, status_of(reply))


sessions = APIRouter(prefix="/v1/sessions", tags=["sessions"])


@sessions.post("", status_code=201, response_model=protocol.NewSessionInfo)
async def create_session(request: Request, user: CurrentUser, store: Store) -> Response:
    """Open a session owned by the caller; its id names it in every later call."""
    body = await read_body(request)
    try:
        opts = protocol.NewSession.model_validate(body)  # (an empty body reads as {})
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidInput(f"invalid session options{' at ' + where if where else ''}: {first['msg']}") from None
    s = store.create(user, seed=opts.seed, token=opts.token)
    settings = request.app.state.settings
    limits = {
        "max_body_bytes": settings.max_body_bytes,
        "max_batch_ops": settings.max_batch_ops,
        "max_batch_steps": settings.max_batch_steps,
        "max_program_steps": settings.max_program_steps,
        "session_ttl_s": settings.session_ttl_s,
    }
    return encode(request, {**s.info(), **limits, "features": list(FEATURES)}, 201)


@sessions.get("", response_model=list[protocol.SessionInfo])
def list_sessions(request: Request, user: CurrentUser, store: Store) -> Response:
    """The caller's sessions."""
    return encode(request, [s.info() for s in store.list(user)])


@sessions.get("/{sid}", response_model=protocol.SessionInfo)
def read_session(request: Request, session: SessionDep) -> Response:
    """One session's size."""
    return encode(request, session.info())


@sessions.delete("/{sid}", status_code=204)
def delete_session(sid: str, user: CurrentUser, store: Store) -> Response:
    """Close a session and free everything it holds."""
    store.delete(sid, user)
    return Response(status_code=204)


@sessions.post(
    "/{sid}/batch",
    response_model=protocol.BatchReply,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/Batch"}},
                "application/msgpack": {"schema": {"$ref": "#/components/schemas/Batch"}},
                wire.FRAMES: {"schema": {"$ref": "#/components/schemas/Batch"}},
            },
        }
    },
    responses={400: {"model": protocol.BatchReply}, 409: {"model": protocol.ErrorReply}},
)
async def run_batch(request: Request, session: SessionDep) -> Response:
    """Run a batch of ops in order, as an eager program would, until one fails.

    The ops before a failing one have taken effect; it and the later ones have
    not. Sending the same ``seq`` again replays the stored reply.
    """
    msg = await read_body(request)
    check_envelope(msg, session.limits.max_batch_ops)  # before each instruction is validated
    if len(msg["ops"]) > INLINE_VALIDATE_OPS:
        msg = await run_in_threadpool(validated_batch, msg)  # (a million instructions: seconds)
    else:
        msg = validated_batch(msg)
    form = tensor_form(request.headers.get("accept", ""))
    return await fast.in_thread(request.app, session, run, session, msg, form, wants_msgpack(request))


BODIES: dict[str, type[BaseModel]] = {
    "POST /v1/sessions/{sid}/batch": protocol.Batch,
    "POST /v1/sessions": protocol.NewSession,
    "PUT /v1/sessions/{sid}/arrays/{h}": protocol.Tensor,
    "POST /v1/sessions/{sid}/ops/{name}": OneOp,
    "POST /v1/sessions/{sid}/arrays/{h}/attach_grad": AttachGrad,
    "POST /v1/sessions/{sid}/backward": Backward,
    "error": protocol.ErrorReply,
}
"""The bodies routes read themselves (not through FastAPI's parameters), for the schema."""

meta = APIRouter(prefix="/v1", tags=["meta"])


@meta.get("/health", response_model=dict[str, str])
def read_health(request: Request) -> Response:
    """Liveness, and which engine interpreter runs ("mypyc" compiled, or "python")."""
    return encode(request, {"status": "ok", "engine": NATIVE})


meta.add_api_route("/health", read_health, methods=["HEAD"], include_in_schema=False)  # (probes that send HEAD)


ops_router = APIRouter(tags=["meta"])


@ops_router.get("/metrics")
def read_metrics(request: Request, store: Store) -> Response:
    """Prometheus metrics: requests by route and status, batches, ops, errors, sessions, bytes
    (totals of all users: read with any user's key, or the metrics key)."""
    settings = request.app.state.settings
    if settings.api_keys:
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        key = settings.metrics_key
        if not (key and scheme.lower() == "bearer" and hmac.compare_digest(token.encode(), key.encode())):
            user_of(settings.api_keys, auth)  # raises Unauthorized without a user's key
    return Response(request.app.state.metrics.render(store), media_type=CONTENT_TYPE)


@meta.get("/ops", response_model=dict[str, Any])
def list_ops(request: Request) -> Response:
    """The op table: each op's inputs, typed attributes and defaults, and the commands."""
    return encode(request, catalog())


class App(FastAPI):
    """FastAPI, with the binary batch route served as raw ASGI (see ``fast``)."""

    def openapi(self) -> dict[str, Any]:
        """FastAPI's schema, completed: the bodies the routes read themselves (a batch, a
        tensor, one op, ...), and the error shape every refusal has (no 422: a 400)."""
        if self.openapi_schema is not None:
            return self.openapi_schema
        schema = super().openapi()
        defs = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in BODIES.values():
            one = model.model_json_schema(ref_template="#/components/schemas/{model}")
            defs.update(one.pop("$defs", {}))
            defs[model.__name__] = one
        defs.pop("HTTPValidationError", None)
        defs.pop("ValidationError", None)
        error = {
            "description": "refused",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorReply"}}},
        }
        # the routes with a user's data take an API key, when the server has keys
        schema["components"]["securitySchemes"] = {
            "apiKey": {"type": "http", "scheme": "bearer", "description": "a key of GRADSERVE_API_KEYS"}
        }
        for path, ops in schema["paths"].items():
            for method, op in ops.items():
                responses = op.setdefault("responses", {})
                responses.pop("422", None)
                if path.startswith("/v1/sessions") or path == "/metrics":
                    op["security"] = [{"apiKey": []}]
                    responses.setdefault("400", error)
                    responses.setdefault("401", error)
                if "{sid}" in path:
                    responses.setdefault("404", error)
                if path.startswith("/v1/sessions") and method in ("post", "put"):
                    # over a size limit or a quota (body, array, session, sessions per user)
                    responses.setdefault("413", {**error, "description": "over a limit"})
                if path.endswith("/batch"):  # a failed op (its reply: the status is its error's) or a refused envelope
                    # anyOf, not oneOf: a failed op's reply (seq, values, error) is an ErrorReply too
                    any_of = [{"$ref": "#/components/schemas/BatchReply"}, {"$ref": "#/components/schemas/ErrorReply"}]
                    for status in ("400", "404", "413"):
                        responses[status] = {
                            "description": "an op failed (the reply, with error and the values read before it) "
                            "or the batch was refused",
                            "content": {"application/json": {"schema": {"anyOf": any_of}}},
                        }
                if path.endswith("/ops/{name}") and method == "post":
                    tensors = {"type": "array", "items": {"$ref": "#/components/schemas/Tensor"}}
                    made = {"out": {"type": "array", "items": {"type": "integer"}}, "values": tensors}
                    responses["200"] = {
                        "description": "the op's out handles, and their values with read",
                        "content": {"application/json": {"schema": {"type": "object", "properties": made}}},
                    }
                if method == "put" and path.endswith("/arrays/{h}"):
                    responses["201"] = {"description": "stored (no body)"}
                if method == "get" and (path.endswith("/arrays/{h}") or path.endswith("/grad")):
                    tensor = {"schema": {"$ref": "#/components/schemas/Tensor"}}
                    responses["200"] = {"description": "the array's values", "content": {"application/json": tensor}}
                if path == "/metrics":
                    ok = responses.setdefault("200", {"description": "Prometheus text format"})
                    ok["content"] = {"text/plain": {"schema": {"type": "string"}}}
                body = BODIES.get(f"{method.upper()} {path}")
                if body is not None and "requestBody" not in op:
                    ref = {"schema": {"$ref": f"#/components/schemas/{body.__name__}"}}
                    op["requestBody"] = {"content": {"application/json": ref, wire.MSGPACK: ref}}
        self.openapi_schema = schema
        return schema

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        sid = fast.batch_session_id(scope)
        if sid is None:
            app = self._as_get if scope["method"] == "HEAD" else super().__call__
            await metered(self.state.metrics, app, scope, receive, send)
            return
        # the hot route says what it answered (its small replies do not go through ``send``),
        # or None when its client went away first
        start, status = time.perf_counter(), 500
        try:
            status = await fast.batch(self, scope, receive, send, sid) or CLIENT_CLOSED
        except fast.SendStalled as e:  # (the reply's head went out: counted with its status)
            status = e.status
            raise
        finally:
            self.state.metrics.observe_request("POST", scope["path"], status, time.perf_counter() - start)

    async def _as_get(self, scope: Any, receive: Any, send: Any) -> None:
        """A HEAD request answered as its GET, without the body (RFC 9110 asks it of every GET
        route; FastAPI's answer only GET)."""
        get = {**scope, "method": "GET"}

        async def head_only(message: dict) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        try:
            await super().__call__(get, receive, head_only)
        finally:
            scope["route"] = get.get("route")  # (for the metrics' label)


async def _housekeeping(store: SessionStore, settings: Settings, metrics: Metrics) -> None:
    """Expire idle sessions, and write changed ones every ``snapshot_interval_s`` seconds
    (so a crash loses at most that much)."""
    interval = min(settings.snapshot_interval_s, max(settings.session_ttl_s / 4, 0.05))
    while True:
        await asyncio.sleep(interval)
        try:
            store.expire()
            if store.folder is None:
                continue
            with metrics.snapshot_seconds.time():
                await run_in_threadpool(store.snapshot, 1.0, interval)
        except Exception:  # whatever it is, expiry and snapshots go on: the next round retries
            log.exception("housekeeping round failed")


_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")


def _allowed(request: Request) -> list[str]:
    """The methods some route of the app serves at the request's path (a 405's ``Allow``)."""
    allowed = []
    for method in _METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    if "GET" in allowed and "HEAD" not in allowed:  # (answered as its GET: App._as_get)
        allowed.insert(1, "HEAD")
    return allowed


DOCS_ASSETS = "/docs-assets"


def _serve_docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI) and ``/redoc`` with their scripts served by the server itself, from
    the files fastapi-offline packages: a lab server with no way out still shows them."""
    import fastapi_offline

    folder = Path(fastapi_offline.__file__).parent / "static"
    app.mount(DOCS_ASSETS, StaticFiles(directory=folder), name="docs-assets")

    def prefix(request: Request) -> str:
        """A proxy's prefix (``root_path``): the document and the pages name it, as FastAPI's own."""
        return str(request.scope.get("root_path", "")).rstrip("/")

    @app.get("/openapi.json", include_in_schema=False)
    def openapi_document(request: Request) -> JSONResponse:
        schema = app.openapi()
        root_path = prefix(request)
        servers = schema.get("servers", [])
        if root_path and app.root_path_in_servers and root_path not in {s.get("url") for s in servers}:
            schema = {**schema, "servers": [{"url": root_path}, *servers]}
        return JSONResponse(schema)

    @app.get("/docs", include_in_schema=False)
    def swagger_ui(request: Request) -> HTMLResponse:
        root = prefix(request)
        return get_swagger_ui_html(
            openapi_url=f"{root}/openapi.json",
            title="gradserve - Swagger UI",
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        root = prefix(request)
        return get_redoc_html(
            openapi_url=f"{root}/openapi.json",
            title="gradserve - ReDoc",
            redoc_js_url=f"{root}{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )


SWITCH_INTERVAL_S = 0.002
"""The interpreter's switch interval while a server serves (at most; Python's default is 5 ms):
how long the event loop waits for the GIL while a thread runs a batch before it asks for it.
The engine's compiled loops hand it over when asked (engine/gil.py), so this bounds what other
users' requests wait behind one user's long batch; a thread holding the GIL with none waiting
pays nothing for it."""


def create_app(settings: Settings | None = None) -> FastAPI:
    """A gradserve app; its lifespan builds the session store."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # the helpers are the process's (the engine's sessions share them): set while it serves
        changed = settings.helpers is not None
        before = parallel.set_helpers(settings.helpers) if changed else None
        interval = sys.getswitchinterval()
        sys.setswitchinterval(min(interval, SWITCH_INTERVAL_S))
        try:
            async with _serving(app, settings):
                yield
        finally:
            sys.setswitchinterval(interval)
            if changed:
                parallel.set_helpers(before)

    @asynccontextmanager
    async def _serving(app: FastAPI, settings: Settings) -> AsyncIterator[None]:
        metrics = app.state.metrics
        store = app.state.store = SessionStore(
            settings, on_batch=metrics.observe_batch, on_snapshot_failure=metrics.snapshot_failures.inc
        )
        store.open()
        try:
            await run_in_threadpool(store.restore)
            saver = asyncio.create_task(_housekeeping(store, settings, app.state.metrics))
            try:
                yield
            finally:
                saver.cancel()
                app.state.stopping = True  # (no request starts from now on: fast.not_stopping)
                try:
                    # (a session busy past send_stall_s, a long batch, is waited for: a batch whose
                    # reply came before it must not be lost; SIGKILL gives it up)
                    await run_in_threadpool(store.snapshot, settings.send_stall_s, -1)
                finally:
                    app.state.written.set()  # (requests that ran meanwhile learn whether they are in it)
        finally:
            store.close()

    app = App(
        title="gradserve",
        version=importlib.metadata.version("gradserve"),
        summary="MXNet-style NDArrays and autograd as a service",
        lifespan=lifespan,
        docs_url=None,  # (FastAPI's pages load their scripts from a CDN: these are served here, below)
        redoc_url=None,
        openapi_url=None,  # (served below as a route of the app's, which the metrics see by name)
        redirect_slashes=False,  # (a path with a trailing slash is unknown: a JSON 404, not an empty 307)
    )
    _serve_docs(app)
    app.state.settings = settings
    app.state.busy = 0  # batch requests in flight (see fast.batch)
    app.state.stopping = False  # set as the sessions are written at shutdown
    app.state.written = asyncio.Event()  # set once they are
    app.state.lent = {}  # session id -> set when a reply written from its arrays is out (fast.until_free)
    app.state.gates = {}  # session id -> its turn at the worker threads, and how many wait for it (fast.in_thread)
    app.state.user_gates = {}  # user -> the worker threads their requests may hold, and how many wait
    app.state.user_threads = lambda: asyncio.Semaphore(settings.max_user_threads)
    app.state.metrics = Metrics(folders=(DOCS_ASSETS,))
    app.include_router(meta)
    app.include_router(ops_router)
    app.include_router(sessions)
    app.include_router(arrays)

    @app.exception_handler(MXNetError)
    async def _mxnet_error(request: Request, e: MXNetError) -> Response:
        reply = encode(request, {"error": error_body(e, None, None)}, e.status)
        if e.status == 401:
            reply.headers["www-authenticate"] = fast.CHALLENGE.decode()
        return reply

    # the framework's own refusals (no such route or method, a path parameter of the wrong
    # type) in the same error shape as every other
    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException) -> Response:
        e2 = InvalidInput(f"{request.method} {request.url.path}: {e.detail}")
        reply = encode(request, {"error": error_body(e2, None, None)}, e.status_code)
        reply.headers.update(e.headers or {})
        allowed = _allowed(request) if e.status_code == 405 else []
        if allowed:  # every method of the path (the router names its first route's; a mount's files keep theirs)
            reply.headers["allow"] = ", ".join(allowed)
        return reply

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, e: RequestValidationError) -> Response:
        where = "; ".join(f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg')}" for err in e.errors())
        e2 = InvalidInput(where or "invalid request")
        return encode(request, {"error": error_body(e2, None, None)}, e2.status)

    @app.exception_handler(BatchFailed)
    async def _batch_failed(request: Request, e: BatchFailed) -> Response:
        return encode(request, {"error": e.error}, e.status)

    return app


class Server(uvicorn.Server):
    """uvicorn's server, but one forced to stop still writes its sessions.

    A second signal while it stops (Ctrl-C after Ctrl-C or after SIGTERM) makes uvicorn stop
    at once: it waits for no connection and skips the app's shutdown, where the sessions are
    written. Skipped, they were written only by chance: after two Ctrl-C, by the cancellation
    of the app's tasks as the event loop closed, with a traceback; after SIGTERM then Ctrl-C,
    not at all (uvicorn raises the two signals again as it returns, and the second, SIGTERM,
    ended the process first). Here the shutdown runs all the same, once uvicorn has dropped
    the connections: it waits for the sessions running a batch (``fast._Rest``, the snapshot's
    wait), then writes what changed. Requests still waiting for their turn are refused then,
    having run nothing (``fast.not_stopping``, and ``fast.in_thread`` for those the event
    loop's close cancels): their clients send them again to the server restarted."""

    async def shutdown(self, sockets: Any = None) -> None:
        await super().shutdown(sockets)
        done = getattr(self.lifespan, "shutdown_event", None)  # (set once the app's shutdown ran)
        if self.force_exit and not (done is not None and done.is_set()):
            log.warning("forced to stop: writing the sessions before it does")
            await self.lifespan.shutdown()
