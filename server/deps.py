"""What the routes depend on: the caller's user, the store, the session,
and the body and reply encodings (JSON or msgpack, by the request's headers)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Path, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from ..engine import wire
from ..engine.errors import InvalidInput, QuotaExceeded, Unauthorized
from ..engine.session import Session
from .store import SessionStore


def accepted(accept: str, offers: tuple[str, ...]) -> str:
    """Which of ``offers`` (in the server's order of preference) an ``Accept`` header asks
    for: the first it names; where it gives weights (``q=``), the first of the highest
    weight above 0. JSON (the last offer) when it names none of them."""
    accept = accept.lower()  # (media types are case-insensitive)
    if "q=" not in accept:  # (the common case, and the hot route's: no weights to read)
        return next((o for o in offers[:-1] if o in accept), offers[-1])
    weights: dict[str, float] = {}
    for part in accept.split(","):
        media, *params = part.split(";")
        q = 1.0
        for p in params:
            name, _, value = p.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 1.0  # (a weight it cannot read is passed over)
                q = q if 0.0 <= q <= 1.0 else 1.0
        media = media.strip().lower()
        weights[media] = max(weights.get(media, 0.0), q)
    best, best_q = offers[-1], 0.0
    for o in offers:
        if weights.get(o, 0.0) > best_q:
            best, best_q = o, weights[o]
    return best


_REPLY = (wire.MSGPACK, wire.JSON)


def wants_msgpack(request: Request) -> bool:
    return accepted(request.headers.get("accept", ""), _REPLY) == wire.MSGPACK


def tensor_form(accept: str) -> str:
    """How reply tensors are written: bytes in msgpack; in JSON a list of numbers,
    or base64 with ``Accept: application/json; tensors=base64``."""
    accept = accept.lower()
    if accepted(accept, _REPLY) == wire.MSGPACK:
        return "bytes"
    return "base64" if "tensors=base64" in accept else "list"


def encode(request: Request, body: Any, status: int = 200) -> Response:
    """Answer in msgpack when the client accepts it, else JSON."""
    return encode_as(wants_msgpack(request), body, status)


def encode_as(as_msgpack: bool, body: Any, status: int = 200) -> Response:
    if as_msgpack:
        return Response(wire.pack(body), status_code=status, media_type=wire.MSGPACK)
    return Response(wire.dumps(body), status_code=status, media_type=wire.JSON)


INLINE_CODING_BYTES = 1 << 16
"""A body or reply larger than this is decoded or encoded in a thread, not on the event loop
(where every other request waits): 64 MiB of float32 as JSON numbers take about half a second
to write and a second to read."""


async def encode_tensors(request: Request, body: Any, nbytes: int) -> Response:
    """``encode``, in a thread when the tensors in ``body`` hold more than ``INLINE_CODING_BYTES``."""
    if nbytes > INLINE_CODING_BYTES:
        return await run_in_threadpool(encode_as, wants_msgpack(request), body)
    return encode(request, body)


async def read_body(request: Request) -> Any:
    """The request body decoded by its Content-Type (JSON when none is given)."""
    limit = request.app.state.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise QuotaExceeded(QuotaExceeded.body_too_long(int(declared), limit))
    chunks = bytearray()  # read as it comes, refused once past the limit (a chunked body declares no length)
    async for chunk in request.stream():
        chunks += chunk
        if len(chunks) > limit:
            raise QuotaExceeded(QuotaExceeded.body_too_long(limit, limit, more=True))
    data = chunks
    if not data:
        return {}
    kind = request.headers.get("content-type", "").lower()
    decode = wire.unpack if kind.startswith(wire.MSGPACK) else wire.loads
    try:
        if len(data) > INLINE_CODING_BYTES:
            return await run_in_threadpool(decode, data)
        return decode(data)
    except InvalidInput as e:
        if decode is wire.loads and not kind.startswith("application/json"):  # (read as JSON: say why)
            raise InvalidInput(
                f"{e} (a body not sent as Content-Type: {wire.MSGPACK} is read as JSON; "
                f"Content-Type here: {kind or 'none'})"
            ) from None
        raise


def user_of(api_keys: dict[str, str], authorization: str) -> str:
    """The user of an ``Authorization: Bearer <key>`` header ("anonymous" when the server has no keys)."""
    if not api_keys:
        return "anonymous"
    scheme, _, token = authorization.partition(" ")
    user = api_keys.get(token) if scheme.lower() == "bearer" else None
    if user is None:
        raise Unauthorized("a valid API key is required: Authorization: Bearer <key>")
    return user


def current_user(request: Request) -> str:
    return user_of(request.app.state.settings.api_keys, request.headers.get("authorization", ""))


CurrentUser = Annotated[str, Depends(current_user)]


def get_store(request: Request) -> SessionStore:
    return request.app.state.store


Store = Annotated[SessionStore, Depends(get_store)]


def get_session(sid: str, user: CurrentUser, store: Store) -> Session:
    return store.get(sid, user)


SessionDep = Annotated[Session, Depends(get_session)]


def path_handle(
    h: Annotated[str, Path(description="a handle: decimal digits, a - before them for a negative one")],
) -> int:
    """A handle in a route's path: plain decimal digits (optionally after a -) within int64, as a
    handle in a body is an integer (``int()`` would also take ``1_0``, `` 10`` and ``+11``)."""
    digits = h[1:] if h.startswith("-") else h
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 19 or not -(1 << 63) <= int(h) < 1 << 63:
        shown = h if len(h) <= 40 else h[:40] + "..."
        raise InvalidInput(f"handle {shown!r} in the path is not an integer (decimal digits, within int64)")
    return int(h)


Handle = Annotated[int, Depends(path_handle)]
