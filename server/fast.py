"""The hot route as raw ASGI: ``POST /v1/sessions/{sid}/batch`` in msgpack or frames.

The Python client sends every batch here, so this route skips what FastAPI
adds per request (dependency injection, the Request object, middleware, a
threadpool hop for small work) and does only what the FastAPI route does:
authenticate, look up the session, read the body under its size limit,
check the envelope, run the batch, answer in the encoding asked for. JSON
bodies still go through FastAPI, whose pydantic models validate them in full
and document the route. Errors have the same statuses and shape on both
paths; the engine checks every instruction it runs either way.

Bodies are read into one buffer of the declared length (under uvicorn's httptools
protocol a large body's chunks are written there by the protocol's own callback,
``_receive_into``); in the frames encoding a large tensor is used in place from
that buffer, and a large reply is written from the arrays' own memory, its
session held until it is out (``respond``, ``until_free``). A small reply is one write of
its head and body (``_write_whole``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool

from ..engine import wire
from ..engine.errors import InternalError, InvalidInput, MXNetError, QuotaExceeded, ServerStopped, status_of
from ..engine.session import BatchRun, Session, check_envelope, error_body
from .deps import INLINE_CODING_BYTES, accepted, tensor_form, user_of

log = logging.getLogger("gradserve.server")

PREFIX = "/v1/sessions/"
SUFFIX = "/batch"
_MSGPACK = wire.MSGPACK.encode()
_FRAMES = wire.FRAMES.encode()
_JSON = wire.JSON.encode()
_OFFERS = (wire.FRAMES, wire.MSGPACK, wire.JSON)

INLINE_OPS = frozenset({"read", "free"})
"""A batch of only these (and little to read) starts on the event loop even while others are in
flight: a thread hop would cost more than it does. Any batch starts there when it is the only
one in flight (``run_sliced``)."""
INLINE_SLICE_S = 0.005
"""A batch run on the event loop hands what is left of it to a thread after this long (between two
instructions), and a session whose last batch took longer starts its next one in a thread: one
user's long batch must not keep the others' requests (or a health check) waiting."""
INLINE_READ_BYTES = 1 << 20
SMALL_REPLY = 1 << 16
CHALLENGE = b'Bearer realm="gradserve"'
"""The ``WWW-Authenticate`` header of a 401: how to authenticate (RFC 9110, 11.6.1)."""


def batch_session_id(scope: dict[str, Any]) -> str | None:
    """The session id when ``scope`` is a binary POST to the batch route, else None."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    path: str = scope["path"]
    if not (path.startswith(PREFIX) and path.endswith(SUFFIX)):
        return None
    sid = path[len(PREFIX) : -len(SUFFIX)]
    if not sid or "/" in sid:
        return None
    for name, value in scope["headers"]:
        if name == b"content-type":
            value = value.lower()  # (media types are case-insensitive)
            return sid if value.startswith(_MSGPACK) or value.startswith(_FRAMES) else None
    return None


LARGE = 1 << 20


def receive_buffer(n: int) -> Any:
    """A writable buffer of ``n`` bytes: numpy memory for large ones (numpy asks the
    kernel for huge pages, so filling it costs a fraction of the page faults)."""
    return np.empty(n, np.uint8) if n >= LARGE else bytearray(n)


class _IntoBuffer:
    """Stands in for the request body that uvicorn's httptools protocol gathers: its
    ``on_body`` does ``cycle.body += chunk``, which lands here straight in the receive
    buffer. Its length is 0, so the protocol never pauses reading for it (nothing is held
    in between: each chunk is in the buffer when ``on_body`` returns)."""

    __slots__ = ("view", "pos", "over")

    def __init__(self, view: memoryview, pos: int) -> None:
        self.view = view
        self.pos = pos
        self.over = False  # more bytes came than declared (httptools frames by Content-Length)

    def __iadd__(self, chunk: bytes) -> _IntoBuffer:
        n = len(chunk)
        if self.pos + n > len(self.view):
            self.over = True
        else:
            self.view[self.pos : self.pos + n] = chunk
            self.pos += n
        return self

    def __len__(self) -> int:
        return 0


_CYCLE_ATTRS = ("body", "more_body", "disconnected", "response_complete", "message_event", "flow")


def _uvicorn_version() -> tuple[int, ...]:
    import uvicorn

    try:
        return tuple(int(p) for p in uvicorn.__version__.split(".")[:2])
    except ValueError:  # a version we cannot read counts as unchecked
        return (1 << 30,)


UVICORN_CHECKED_FROM = (0, 54)
UVICORN_CHECKED_BELOW = (0, 55)
"""``_receive_into`` and ``_write_whole`` know uvicorn's request cycle as it is in these
releases (0.54 is tested): another uvicorn reads bodies through ``receive`` and writes replies
through ``send`` until it is checked (the test suite's
``test_a_large_body_is_written_straight_into_the_receive_buffer`` then fails, saying so)."""
_DIRECT = UVICORN_CHECKED_FROM <= _uvicorn_version() < UVICORN_CHECKED_BELOW


def _httptools_cycle(receive: Any, attrs: tuple[str, ...] = _CYCLE_ATTRS) -> Any:
    """The request cycle of uvicorn's httptools protocol whose ``receive`` this is, or None
    (another server or protocol, or a uvicorn whose cycle is not as ``_receive_into`` and
    ``_write_whole`` know it)."""
    cycle = getattr(receive, "__self__", None)
    if not _DIRECT or type(cycle).__module__ != "uvicorn.protocols.http.httptools_impl":
        return None
    key = (type(cycle), attrs)
    fits = _FITS.get(key)
    if fits is None:  # (once per process: every cycle of the class has them, set by its __init__)
        fits = _FITS[key] = all(hasattr(cycle, a) for a in attrs)
    return cycle if fits and isinstance(cycle.body, bytearray) else None


_FITS: dict[tuple[type, tuple[str, ...]], bool] = {}


_REPLY_ATTRS = (
    *_CYCLE_ATTRS,
    "transport",
    "default_headers",
    "access_log",
    "keep_alive",
    "response_started",
    "waiting_for_100_continue",
    "expected_content_length",
    "chunked_encoding",
    "on_response",
)


def _status_lines() -> dict[int, bytes]:
    try:
        from uvicorn.protocols.http.httptools_impl import STATUS_LINE
    except ImportError:  # (no httptools: that protocol is not the one serving)
        return {}
    return dict(STATUS_LINE)


_STATUS_LINE = _status_lines()


def _write_whole(receive: Any, status: int, kind: bytes, data: bytes) -> bool:
    """Write a small reply as uvicorn's httptools protocol would, but in one write of its head
    and body, where its ``send`` makes two: the second is another send on the socket, about
    a twentieth of a small batch's round trip on loopback (``bench/roundtrip.py``). Does what
    ``send`` does once the body is out (the cycle complete, keep-alive or close, the next
    pipelined request started). False (nothing written) where the protocol is another, or in a
    state where ``send`` would do more: writes paused, a response begun, an access log to write."""
    cycle = _httptools_cycle(receive, _REPLY_ATTRS)
    if cycle is None or status not in _STATUS_LINE:
        return False
    if cycle.response_started or cycle.disconnected or cycle.flow.write_paused or cycle.access_log:
        return False
    content = [_STATUS_LINE[status]]
    for name, value in cycle.default_headers:
        content += [name.lower(), b": ", value, b"\r\n"]
    content += [b"content-type: ", kind, b"\r\ncontent-length: %d\r\n" % len(data)]
    if not cycle.keep_alive:
        content.append(b"connection: close\r\n")
    content += [b"\r\n", data]
    cycle.transport.write(b"".join(content))
    cycle.response_started = cycle.response_complete = True
    cycle.waiting_for_100_continue = False
    cycle.chunked_encoding = False
    cycle.expected_content_length = 0
    cycle.message_event.set()
    if not cycle.keep_alive:
        cycle.transport.close()
    cycle.on_response()
    return True


async def _receive_into(cycle: Any, view: memoryview, pos: int) -> int | None:
    """The rest of a body, from ``pos``, written into ``view`` as it arrives, where
    uvicorn's ``receive`` would copy each chunk twice more (into the cycle's bytearray,
    then into the bytes of a message) before ours; the end position, None if the client
    went away. Does what ``receive`` does between two chunks (resume reading, wait)."""
    sink = _IntoBuffer(view, pos)
    if cycle.body:  # bytes that came since the last receive
        sink += bytes(cycle.body)
    cycle.body = sink
    try:
        while cycle.more_body and not (cycle.disconnected or cycle.response_complete):
            cycle.flow.resume_reading()
            await cycle.message_event.wait()
            cycle.message_event.clear()
    finally:
        cycle.body = bytearray()
    if cycle.disconnected:
        return None
    if sink.over:
        raise InvalidInput("request body is longer than its Content-Length")
    return sink.pos


async def _read_body(receive: Any, declared: int | None, limit: int) -> Any:
    """The whole body in one buffer (None if the client went away)."""
    if declared is not None:
        if declared > limit:
            raise QuotaExceeded(QuotaExceeded.body_too_long(declared, limit))
        buf = receive_buffer(declared)
        view = memoryview(buf)
        pos = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            n = len(chunk)
            if pos + n > declared:
                raise InvalidInput("request body is longer than its Content-Length")
            view[pos : pos + n] = chunk
            pos += n
            if not message.get("more_body", False):
                break
            # the first receive has answered an "Expect: 100-continue"; a large body's rest
            # goes straight into the buffer where the protocol is uvicorn's httptools
            cycle = _httptools_cycle(receive) if declared >= LARGE else None
            if cycle is not None:
                end = await _receive_into(cycle, view, pos)
                if end is None:
                    return None
                pos = end
                break
        if pos != declared:
            raise InvalidInput("request body is shorter than its Content-Length")
        return buf
    chunks = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks += message.get("body", b"")
        if len(chunks) > limit:
            raise QuotaExceeded(QuotaExceeded.body_too_long(limit, limit, more=True))
        if not message.get("more_body", False):
            return chunks


def _inline(session: Session, ops: list[Any]) -> bool:
    """A batch that only reads or frees little: cheaper on the event loop than in a thread."""
    if session.lock.locked() or len(ops) > 16:
        return False
    nbytes = 0
    for ins in ops:  # (a malformed instruction is the batch's to refuse: not inline then)
        if type(ins) is not dict or type(ins.get("op")) is not str or ins["op"] not in INLINE_OPS:
            return False
        if ins["op"] == "read":
            hs = ins.get("in", ())
            if type(hs) is not list:
                return False
            for h in hs:
                x = session.arrays.get(h) if type(h) is int else None
                nbytes += x.nbytes if x is not None else 0
    return nbytes <= INLINE_READ_BYTES


def run(session: Session, msg: dict[str, Any]) -> dict[str, Any]:
    """Execute a batch in a thread; the arrays read are copies (the session is free again
    before the reply is written)."""
    return session.run_batch(msg, copy_reads=True)


class _Rest:
    """The rest of a batch, run in a worker thread. A server forced to stop (a second Ctrl-C)
    cancels the task that waits for it while the thread may still run it (anyio's shield does
    not hold then), or before a thread took it. Ended then, the batch would take its seq with
    its reply cut short and the session half changed under it (the shutdown's snapshot would
    keep both): ``settle`` waits for the thread, or makes sure none will run it."""

    __slots__ = ("job", "done", "claim", "phase")

    def __init__(self, job: BatchRun) -> None:
        self.job = job
        self.done = threading.Event()
        self.claim = threading.Lock()
        self.phase = "queued"  # -> "running" (a thread took it) or "dropped" (none will)

    def run(self) -> bool:
        with self.claim:
            if self.phase == "dropped":
                return False
            self.phase = "running"
        try:
            return self.job.run()
        finally:
            self.done.set()

    def settle(self) -> None:
        with self.claim:
            if self.phase == "queued":
                self.phase = "dropped"
        if self.phase == "running":
            self.done.wait()


async def run_sliced(app: Any, session: Session, msg: dict[str, Any]) -> BatchRun | dict[str, Any]:
    """Execute a batch, starting on the event loop when that is cheaper than a thread hop:
    when it is the only batch in flight (or only reads and frees a little), its session is
    free and was quick last time. After ``INLINE_SLICE_S`` the rest runs in a thread.

    A batch started on the loop comes back run but not finished: its reads are the session's
    arrays themselves, and the session stays locked until the caller has written them and
    finishes it (a batch on another connection must not change them halfway through the
    reply). A batch run in a thread comes back as its reply, its reads copied."""
    job = None
    not_stopping(app.state)
    if (app.state.busy == 1 and session.last_batch_s <= INLINE_SLICE_S and not session.lock.locked()) or _inline(
        session, msg["ops"]
    ):
        job = session.begin(msg, copy_reads=False, blocking=False)  # (the loop must not wait for a lock)
    if job is None:
        return await in_thread(app, session, run, session, msg)
    if not isinstance(job, BatchRun):
        return job  # a retry's stored reply
    rest: _Rest | None = None
    try:
        if not job.run(time.perf_counter() + INLINE_SLICE_S):
            rest = _Rest(job)
            await run_in_threadpool(rest.run)
    except BaseException as e:
        if rest is not None:
            rest.settle()
        if isinstance(e, asyncio.CancelledError):
            job.stopped()  # (ran whole, or up to where a stopping server left it)
        else:  # (no thread to hand it to, an error past the executor's own): what ran stays
            log.exception("batch of session %s ended at instruction %d by an error around it", session.id, job.next)
            job.stopped(InternalError(f"the server failed while running this batch: {type(e).__name__}: {e}"))
        job.finish()
        raise
    return job


LENT_CHUNK = 8 << 20
"""A lent buffer is written in slices of this size: the stall timeout bounds each slice."""
LENT_TAIL = 256 << 10
"""The last bytes of a tensor sent from a session's own memory go as a copy of this size,
over the transport's high-water mark (64 KiB in uvloop and asyncio): see ``respond``."""


def _copied_tails(parts: list[Any]) -> list[Any]:
    """``parts`` with the last ``LENT_TAIL`` bytes of each large buffer split off as a copy,
    and the rest in slices of at most ``LENT_CHUNK`` (views, not copies)."""
    out: list[Any] = []
    for p in parts:
        if isinstance(p, memoryview):
            if p.nbytes > LENT_TAIL:
                body = p.nbytes - LENT_TAIL
                out += [p[i : min(i + LENT_CHUNK, body)] for i in range(0, body, LENT_CHUNK)]
                out.append(bytes(p[body:]))
            else:
                out.append(bytes(p))
        else:
            out.append(p)
    return out


def _encoded(kind: bytes, body: dict[str, Any], form: str) -> bytes:
    """``body`` in msgpack or JSON (its values as tensors of ``form``), in one buffer."""
    values = body.get("values")
    if values is not None:
        body = dict(body)
        body["values"] = [wire.encode_tensor(v, "bytes" if kind == _MSGPACK else form) for v in values]
    return wire.pack(body) if kind == _MSGPACK else wire.dumps(body)


class SendStalled(Exception):
    """The client took no part of a reply for ``send_stall_s``: the connection is dropped
    (``status``: the reply's, whose head went out)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


async def until_free(app: Any, sid: str) -> None:
    """Wait (on the event loop, not in a thread) while a reply is written from the session's
    arrays; a batch or call for it that went to a thread would hold the thread that long."""
    lent = app.state.lent
    while (done := lent.get(sid)) is not None:
        await done.wait()


async def in_thread(app: Any, session: Session, fn: Any, *args: Any) -> Any:
    """``fn(*args)`` in one of the server's worker threads, one request of a session at a
    time, and at most ``max_user_threads`` of its user's at once: the others wait for their
    turn on the event loop. A thread waiting for a busy session's lock would hold one of the
    threads every user shares (40): a user sending dozens of requests to a session running a
    long batch (or long batches on many sessions) would keep the other users' requests, and
    the health check, from any thread until they ended.

    A forced stop closes the event loop on the requests still in flight once the sessions are
    written, which cancels them: one still waiting for its turn, or for a thread to take it,
    did not start, and is refused as ``not_stopping`` refuses it, not answered with the
    server's bare 500 (a plain-text body, a traceback in the log), which says nothing of
    whether it ran."""
    state = app.state
    call = _Call(fn, args)
    try:
        async with _turn(state.gates, session.id, asyncio.Lock):
            while True:
                await until_free(app, session.id)  # (holding none of its user's threads meanwhile)
                async with _turn(state.user_gates, session.owner, state.user_threads):
                    if session.id not in state.lent:  # (a reply lent while it waited for a thread: again)
                        result = await run_in_threadpool(_unless_stopping, state, call.run)
                        if state.stopping:
                            await _kept_at_stop(state, session)
                        return result
    except asyncio.CancelledError:
        if not call.drop():  # (a thread runs it: whether it is kept is not known here)
            not_stopping(state)
        raise


class _Call:
    """``fn(*args)`` as ``in_thread`` hands it to a worker thread. Cancelled while it waits for
    one, the request did not start only if no thread takes it afterwards: ``drop`` makes sure."""

    __slots__ = ("fn", "args", "claim", "phase")

    def __init__(self, fn: Any, args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
        self.claim = threading.Lock()
        self.phase = "queued"  # -> "running" (a thread took it) or "dropped" (none will)

    def run(self) -> Any:
        with self.claim:
            if self.phase == "dropped":
                raise _did_not_start()  # (no one waits for the answer)
            self.phase = "running"
        return self.fn(*self.args)

    def drop(self) -> bool:
        """Make sure no thread starts it from now on; whether one had."""
        with self.claim:
            if self.phase == "queued":
                self.phase = "dropped"
            return self.phase == "running"


def _did_not_start() -> ServerStopped:
    return ServerStopped(
        "the server is stopping: this request did not start; send it again once the server is back "
        "(the Python client does)"
    )


def not_stopping(state: Any) -> None:
    """Refuse to start a request once the server writes its sessions to stop: a forced stop
    waits for no connection, so requests that waited for their turn (a busy session, their
    user's threads) would run after their session was written, and a restart would lose what
    they did though the client had its reply. The refusal is a 503 that is no batch's reply:
    the client sends the batch again, under its seq, to the server restarted."""
    if state.stopping:
        raise _did_not_start()


async def _kept_at_stop(state: Any, session: Session) -> None:
    """A request that ended while the server stopped: what it did must be in its session's
    snapshot (it ran before the session was written, which waited for it), or it is refused
    as one that did not start (it started as the stop began, and the session was written
    before it ran): the client sends it again, under its seq, and the server restarted from
    that snapshot runs it (or, had it been written after all, replays its reply)."""
    await state.written.wait()
    if not state.store.kept(session):
        raise ServerStopped(
            "the server stopped as this request ran, after its session was written: send it again once "
            "the server is back (the Python client does)"
        )


def _unless_stopping(state: Any, fn: Any, *args: Any) -> Any:
    """``fn(*args)`` in a worker thread, unless the server began to stop while it waited for one."""
    not_stopping(state)
    return fn(*args)


class _turn:
    """Hold ``gates[key]`` (made by ``make`` when no one holds or waits for it, dropped when
    no one does any more)."""

    __slots__ = ("gates", "key", "make", "gate")

    def __init__(self, gates: dict[Any, list[Any]], key: Any, make: Any) -> None:
        self.gates, self.key, self.make = gates, key, make

    async def __aenter__(self) -> None:
        gate = self.gates.get(self.key)
        if gate is None:
            gate = self.gates[self.key] = [self.make(), 0]
        gate[1] += 1
        self.gate = gate
        try:
            await gate[0].acquire()
        except BaseException:
            self._leave()
            raise

    async def __aexit__(self, *exc: Any) -> None:
        self.gate[0].release()
        self._leave()

    def _leave(self) -> None:
        self.gate[1] -= 1
        if not self.gate[1]:
            del self.gates[self.key]


async def respond(
    send: Any,
    kind: bytes,
    status: int,
    body: dict[str, Any],
    form: str = "list",
    lent: float = 0.0,
    packed: tuple[list[Any], int] | None = None,
    receive: Any = None,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Send ``body`` as frames, msgpack or JSON; large tensors straight from their arrays;
    a small reply in one write where the server is uvicorn's httptools protocol (its
    ``receive`` given: ``_write_whole``).

    ``lent`` (seconds, when not 0): the tensors are a session's own arrays, which must not be
    read after this returns (the caller then frees the session for batches that may change
    them). The transport keeps what it could not send yet by reference, and the server's
    ``send`` waits for the transport to drain only before a write, down to its low-water
    mark. So each buffer's last bytes go as a copy larger than the high-water mark, and an
    empty last message follows: when that returns, the transport holds only copied bytes.
    A write that waits longer than ``lent`` seconds raises ``SendStalled``. ``packed``: the
    frames of ``body``, when the caller has them already."""
    values = body.get("values")
    if kind == _FRAMES:
        parts, total = packed if packed is not None else wire.pack_frames(body)
        if lent:
            parts = _copied_tails(parts)
    else:
        if values is not None and sum(v.nbytes for v in values) > SMALL_REPLY:
            data = await run_in_threadpool(_encoded, kind, body, form)  # (seconds for JSON numbers)
        else:
            data = _encoded(kind, body, form)
        parts, total = [data], len(data)
    small = total <= SMALL_REPLY or len(parts) == 1
    if small:
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        if receive is not None and _write_whole(receive, status, kind, data):
            return
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", kind), (b"content-length", str(total).encode()), *(headers or ())],
        }
    )
    if small:
        await send({"type": "http.response.body", "body": data})
        return
    last = {"type": "http.response.body", "body": b"", "more_body": False}
    for message in [*({"type": "http.response.body", "body": p, "more_body": True} for p in parts), last]:
        if not lent:
            await send(message)
            continue
        try:
            await asyncio.wait_for(send(message), lent)
        except asyncio.TimeoutError:
            raise SendStalled(f"no part of a reply taken for {lent} s", status) from None


async def batch(app: Any, scope: dict[str, Any], receive: Any, send: Any, sid: str) -> int | None:
    """The batch route (see the module docstring); the status of its reply (None: the client
    went away before it was read).

    ``app.state.busy`` counts the batch requests in flight. A batch that is the
    only one runs on the event loop: a thread hop costs a few hundred
    microseconds, and there is no other request to keep waiting."""
    state = app.state
    state.busy += 1
    try:
        return await _batch(app, scope, receive, send, sid)
    finally:
        state.busy -= 1


async def _batch(app: Any, scope: dict[str, Any], receive: Any, send: Any, sid: str) -> int | None:
    auth = b""
    accept = b""
    declared: int | None = None
    frames_in = False
    for name, value in scope["headers"]:
        if name == b"authorization":
            auth = value
        elif name == b"accept":
            accept = value.lower()
        elif name == b"content-length":
            declared = int(value) if value.isdigit() else None
        elif name == b"content-type":
            frames_in = value.lower().startswith(_FRAMES)
    kind = _FRAMES if _FRAMES in accept else _MSGPACK if _MSGPACK in accept else _JSON
    if b"q=" in accept:  # weights: read in full (rare; a client names one type)
        kind = accepted(accept.decode("latin-1"), _OFFERS).encode()
    try:
        settings = app.state.settings
        session = app.state.store.get(sid, user_of(settings.api_keys, auth.decode("latin-1")))
        body = await _read_body(receive, declared, settings.max_body_bytes)
        if body is None:
            return None
        # a header of many instructions takes milliseconds to decode: not on the event loop
        coded = wire.frames_header_size(body) if frames_in else len(body)
        if len(body) == 0:
            msg: Any = {}
        elif coded > INLINE_CODING_BYTES:  # (a frames header: its tensors' bytes are not decoded)
            msg = await run_in_threadpool(wire.unpack_frames if frames_in else wire.unpack, body)
        elif frames_in:
            msg = wire.unpack_frames(body)
        else:
            msg = wire.unpack(body)
        check_envelope(msg)  # (a malformed one does not wait for its session)
        try:
            await until_free(app, sid)
        except asyncio.CancelledError:  # (a forced stop's, as in ``in_thread``)
            not_stopping(app.state)
            raise
        done = await run_sliced(app, session, msg)
    except MXNetError as e:
        done = {"error": error_body(e, None, None)}
        form = tensor_form(accept.decode("latin-1"))
        if e.status == 401:  # (with its challenge: through ``send``, whose headers are ours to give)
            await respond(send, kind, e.status, done, form, headers=[(b"www-authenticate", CHALLENGE)])
        else:
            await respond(send, kind, e.status, done, form, receive=receive)
        return e.status
    form = tensor_form(accept.decode("latin-1"))
    if not isinstance(done, BatchRun):
        status = status_of(done)
        await respond(send, kind, status, done, form, receive=receive)
        return status
    # the reply is written from the session's arrays: the session is held until it is out. A
    # small one is one write of a copy, at once; while a large one (or many small values) is
    # written, requests for the session wait on the event loop (until_free), and a client that
    # stops reading it is cut off after send_stall_s
    packed = wire.pack_frames(done.reply) if kind == _FRAMES else None
    # (by the frames' length: values of few bytes each still take a header entry and padding)
    size = packed[1] if packed is not None else sum(v.nbytes for v in done.values)
    freed = asyncio.Event() if size > SMALL_REPLY else None
    if freed is not None:
        app.state.lent[sid] = freed
    try:
        stall = settings.send_stall_s if freed else 0.0
        status = status_of(done.reply)
        await respond(send, kind, status, done.reply, form, lent=stall, packed=packed, receive=receive)
    except SendStalled as e:
        log.warning("session %s: %s; connection dropped", sid, e)
        raise
    finally:
        done.finish()
        if freed is not None:
            app.state.lent.pop(sid, None)
            freed.set()
    return status
