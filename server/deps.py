"""What the routes depend on: the caller's user, the store, the session,
and the body and reply encodings (JSON or msgpack, by the request's headers)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import Response

from ..engine import wire
from ..engine.errors import QuotaExceeded, Unauthorized
from ..engine.session import Session
from .store import SessionStore


def wants_msgpack(request: Request) -> bool:
    return wire.MSGPACK in request.headers.get("accept", "")


def tensor_form(accept: str) -> str:
    """How reply tensors are written: bytes in msgpack; in JSON a list of numbers,
    or base64 with ``Accept: application/json; tensors=base64``."""
    if wire.MSGPACK in accept:
        return "bytes"
    return "base64" if "tensors=base64" in accept else "list"


def encode(request: Request, body: Any, status: int = 200) -> Response:
    """Answer in msgpack when the client accepts it, else JSON."""
    if wants_msgpack(request):
        return Response(wire.pack(body), status_code=status, media_type=wire.MSGPACK)
    return Response(wire.dumps(body), status_code=status, media_type=wire.JSON)


async def read_body(request: Request) -> Any:
    """The request body decoded by its Content-Type (JSON when none is given)."""
    limit = request.app.state.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise QuotaExceeded(f"request body of {declared} bytes is over the limit of {limit}")
    chunks = bytearray()  # read as it comes, refused once past the limit (a chunked body declares no length)
    async for chunk in request.stream():
        chunks += chunk
        if len(chunks) > limit:
            raise QuotaExceeded(f"request body of more than {limit} bytes is over the limit of {limit}")
    data = chunks
    if not data:
        return {}
    if request.headers.get("content-type", "").startswith(wire.MSGPACK):
        return wire.unpack(data)
    return wire.loads(data)


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
