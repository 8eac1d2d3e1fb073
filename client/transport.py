"""How a batch reaches an engine session: in-process, or over HTTP.

A transport takes a batch message (see ``gradserve.engine.session``) and
returns the reply ``{"seq", "values", "error"?}`` with values as numpy arrays.
Errors that concern the whole batch (authentication, an unknown session, a
quota) are raised; an error of one op comes back in the reply.
"""

from __future__ import annotations

import operator
import os
import secrets
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
import numpy as np

from .engine import FEATURES, wire
from .engine.errors import InvalidInput, MXNetError, error_from_kind
from .engine.session import Limits, Session


class Transport(Protocol):
    """Carries batches to one session."""

    requests: int
    sends_bytes: bool  # whether a batch's arrays are serialised when it is sent (not kept by reference)
    sequenced: bool  # whether the session keeps its last reply for a batch sent again under its seq

    def send(self, batch: dict[str, Any]) -> dict[str, Any]: ...

    def info(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class SessionClosed(MXNetError):
    """The array's session was closed."""


CLOSED = "this session was closed; gradserve.connect() opens a new one"


class InProcess:
    """The engine in this process: no server, the same batches."""

    sends_bytes = False  # arrays are handed over as they are: the caller's must be copies
    sequenced = False
    max_body_bytes = None  # (no request to carry them)
    features = FEATURES  # (this process's engine)

    def __init__(self, seed: int | None = None, limits: Limits | None = None) -> None:
        self.session = Session("local", seed=seed, limits=limits)
        self.session.timed = False  # (it runs no slices of a server's event loop)
        self.requests = 0
        self.max_batch_ops: int | None = self.session.limits.max_batch_ops
        self.max_batch_steps: int | None = self.session.limits.max_batch_steps
        self.max_program_steps: int | None = self.session.limits.max_program_steps

    def send(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Run a batch; unsequenced (nothing retries in-process: the session keeps no reply,
        and the copies its reads made go with it)."""
        self.requests += 1
        return self.session.run_batch({"ops": batch["ops"]})

    def info(self) -> dict[str, Any]:
        return self.session.info()

    def close(self) -> None:
        """Free the session's arrays (after a batch another thread runs in it now ends)."""
        s = self.session
        with s.lock:
            s.arrays.clear()
            s.nodes.clear()


class ConnectionLost(MXNetError):
    """The server could not be reached, even after retries."""


class Http:
    """A session on a gradserve server, over HTTP/1.1 keep-alive.

    Batches travel in the frames encoding (msgpack with tensors' bytes out of
    band) on one socket kept open between them (TLS for an ``https`` URL): a
    request is one write of its head and buffers, a reply is read into one
    buffer of its declared length, and large arrays are used in place from
    it. The other routes (open, inspect, close a session) go through httpx.

    ``verify``: for ``https``, the certificates to trust, as httpx takes them
    (True: the system's or ``SSL_CERT_FILE``'s, an ``ssl.SSLContext``, or
    False to trust any).
    """

    sends_bytes = True
    sequenced = True

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        timeout: float = 300.0,
        retries: int = 30,  # about 50 s of backoff: a restart restores every session first (16 s for 4 GB)
        seed: int | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        url = url.strip()  # (one read from a file keeps its newline)
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018  (a port that is no number, or past 65535, raises here)
        except ValueError as e:
            raise InvalidInput(f"{url!r} is not a URL: {e}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:  # (a mistake, not a lost connection)
            raise InvalidInput(f"{url!r} is not the http:// or https:// URL of a gradserve server")
        if api_key is not None:
            api_key = api_key.strip()  # (a key read from a file keeps its newline)
            if not api_key.isprintable() or not api_key.isascii():
                raise InvalidInput("the API key holds characters no key has (control or non-ASCII ones)")
        headers = {"accept": wire.MSGPACK, "content-type": wire.MSGPACK}
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        self.url = url.rstrip("/")
        self.retries = retries
        self.requests = 0
        self._closed = False
        parts = urlsplit(self.url)
        tls = httpx.create_ssl_context(verify=verify) if parts.scheme == "https" else None
        # batches have their own socket: httpx's rare calls need no idle connection kept
        self._http = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=timeout,
            limits=httpx.Limits(max_keepalive_connections=0),
            verify=tls or True,
            trust_env=False,  # (batches go straight to the server on their own socket: so does this)
        )
        reply = self._open({} if seed is None else {"seed": seed})
        if not isinstance(reply, dict) or not isinstance(reply.get("id"), str):
            self._http.close()
            raise MXNetError(f"{self.url} did not open a session as a gradserve server does (is it one?)")
        self.session_id: str = reply["id"]
        # the server reads no larger request body: an upload past it goes in pieces (ndarray.py)
        self.max_body_bytes: int | None = reply.get("max_body_bytes")
        # and runs no longer batch (a server that does not say: learned when it refuses one, runtime.py)
        self.max_batch_ops: int | None = reply.get("max_batch_ops")
        self.max_batch_steps: int | None = reply.get("max_batch_steps")  # (with the calls' programs)
        self.max_program_steps: int | None = reply.get("max_program_steps")  # (hybridize's, all together)
        # what the server's engine does that older ones did not (``engine.FEATURES``): a client
        # sends it only to a server that says it does it
        features = reply.get("features")
        self.features: tuple[str, ...] = (
            tuple(f for f in features if isinstance(f, str)) if isinstance(features, list) else ()
        )
        # the server closes a session idle for longer: touched while this program lives
        ttl = reply.get("session_ttl_s")
        self._used = time.monotonic()
        self._stop = threading.Event()
        if isinstance(ttl, (int, float)) and ttl > 0:
            threading.Thread(
                target=_heartbeat,
                args=(weakref.ref(self), self._stop, ttl / 3),
                daemon=True,
                name="gradserve-heartbeat",
            ).start()
        self._batch_path = f"/v1/sessions/{self.session_id}/batch"
        self._conn: Conn | None = None
        if parts.scheme in ("http", "https") and parts.hostname:
            self._conn = Conn(parts.hostname, parts.port or (443 if tls else 80), timeout, tls)
            prefix = parts.path.rstrip("/")
            auth = f"Authorization: Bearer {api_key}\r\n" if api_key else ""
            self._head = (
                f"POST {prefix}{self._batch_path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                f"Content-Type: {wire.FRAMES}\r\nAccept: {wire.FRAMES}\r\n{auth}Content-Length: "
            ).encode("latin-1")

    def _open(self, options: dict[str, Any]) -> Any:
        """Open the session. The open carries a token of its own, so that its retry after a
        lost reply gets the session the first try opened, not a second one (which would count
        against the user's sessions until its TTL); a server older than the token is asked
        again without it."""
        opening = {**options, "token": secrets.token_urlsafe(16)}
        # (opening: a server that is not there is more likely a wrong URL than a restart)
        try:
            return self._call("POST", "/v1/sessions", wire.pack(opening), retries=3)
        except InvalidInput as e:
            if "invalid session options at token:" not in str(e):
                raise
        return self._call("POST", "/v1/sessions", wire.pack(options), retries=3)

    def send(self, batch: dict[str, Any]) -> dict[str, Any]:
        if self._conn is None:
            reply = self._call("POST", self._batch_path, wire.pack(batch), op_errors=True)
        else:
            reply = self._send_frames(batch)
        reply["values"] = [wire.decode_tensor(v) for v in reply.get("values", ())]
        return reply

    def _send_frames(self, batch: dict[str, Any]) -> Any:
        parts, total = wire.pack_frames(batch)
        head = self._head + b"%d\r\n\r\n" % total
        conn: Conn = self._conn  # type: ignore[assignment]
        no_reply = [0]

        def send() -> tuple[int, str, Any]:
            got = conn.request(head, parts)
            if got[0] >= 500 and not _is_batch_reply(got[1], got[2]):
                text = bytes(got[2][:200]).decode("utf-8", "replace")
                no_reply[0] += 1
                if no_reply[0] > NO_REPLY_RETRIES:  # (a server that answers so every time: not a restart)
                    raise ConnectionLost(
                        f"POST {self.url}{self._batch_path}: HTTP {got[0]} without a batch's reply, "
                        f"{no_reply[0]} times ({text!r}); the batch is sent again under its seq when next used"
                    )
                raise NoReply(f"HTTP {got[0]} without a batch's reply: {text!r}")
            return got

        status, ctype, body = self._retrying(
            f"POST {self.url}{self._batch_path}",
            send,
            OSError,  # includes a keep-alive connection the server closed: the first retry is at once
            on_error=lambda e: conn.close(),
            at_once=True,
        )
        return _reply(status, ctype, body, self._batch_path, op_errors=True)

    def info(self) -> dict[str, Any]:
        """The session as the server sees it: id, owner, arrays held, bytes."""
        return self._call("GET", f"/v1/sessions/{self.session_id}")

    def _call(
        self, method: str, path: str, body: bytes | None = None, op_errors: bool = False, retries: int | None = None
    ) -> Any:
        """One request; retried on a broken connection (the server replays by seq)."""
        r = self._retrying(
            f"{method} {self.url}{path}",
            lambda: self._http.request(method, path, content=body),
            httpx.TransportError,
            retries=retries,
        )
        return _reply(r.status_code, r.headers.get("content-type", ""), r.content, path, op_errors)

    def _retrying(
        self,
        what: str,
        send: Callable[[], Any],
        errors: type[Exception],
        on_error: Callable[[Exception], None] | None = None,
        at_once: bool = False,
        retries: int | None = None,
    ) -> Any:
        """``send()``, tried up to ``retries`` more times on ``errors`` with backoff from 50 ms
        to 2 s (``at_once``: the first retry without waiting); ConnectionLost after the last."""
        delay, attempt = 0.05, 0
        while True:
            try:
                if self._closed:
                    raise SessionClosed(CLOSED)
                self.requests += 1
                self._used = time.monotonic()
                return send()
            except errors as e:
                if on_error is not None:
                    on_error(e)
                if self._closed:  # (close() from another thread cut the request short)
                    raise SessionClosed(CLOSED) from e
                if attempt >= (self.retries if retries is None else min(retries, self.retries)) or _untrusted(e):
                    raise ConnectionLost(f"{what}: {e}") from e
                if attempt or not at_once:
                    time.sleep(delay)
                    delay = min(delay * 2, 2.0)
                attempt += 1

    def close(self) -> None:
        """End the session. From another thread, a batch waiting for its reply on the socket
        stops at once (the socket is shut down under it) and raises ``SessionClosed``."""
        self._closed = True
        self._stop.set()
        if self._conn is not None:
            self._conn.shutdown()
        try:
            self._http.delete(f"/v1/sessions/{self.session_id}", timeout=2.0)
        except httpx.HTTPError:
            pass
        self._http.close()


def _heartbeat(ref: weakref.ref[Http], stop: threading.Event, every: float) -> None:
    """Touch a session idle for ``every`` seconds (a third of the server's TTL), until it is
    closed or its transport is gone: a notebook left for lunch keeps its arrays (its user's
    quotas bound what it holds). Holds the transport only while it touches."""
    wait = every
    while not stop.wait(wait):
        t = ref()
        if t is None or t._closed:
            return
        wait = every - (time.monotonic() - t._used)
        if wait <= 0:
            try:
                t._http.get(f"/v1/sessions/{t.session_id}", timeout=min(every, 30.0))
            except httpx.HTTPError:
                pass  # (the next batch says what is wrong, if anything is)
            t._used = time.monotonic()
            wait = every
        del t


NO_REPLY_RETRIES = 3
"""How many times a batch answered by a 5xx that is not its reply is sent again at once (a
server stopping answers so once, then refuses connections while it restarts: those are
retried as a broken connection is)."""


class NoReply(OSError):
    """A batch answered with a server error that is not its reply (a server stopped while the
    batch ran, whose HTTP layer answered 500 for it; a proxy's error page): it may have run or
    not, so it is sent again under its seq, as after a broken connection (the server replays
    the reply if it ran). Taking it for a refusal would give the next batch its seq, and the
    server would answer that one with this one's stored reply."""


def _is_batch_reply(ctype: str, body: Any) -> bool:
    """Whether a 5xx body is a batch's reply (the engine's InternalError: what ran, and the
    error): the batch took its seq."""
    try:
        data = _decode(500, ctype, body)
    except Exception:
        return False
    return isinstance(data, dict) and "values" in data and "error" in data


def _untrusted(e: BaseException | None) -> bool:
    """Whether ``e`` (or what caused it) is a server certificate that was not trusted."""
    while e is not None:
        if isinstance(e, ssl.SSLCertVerificationError):
            return True
        e = e.__cause__ or e.__context__
    return False


KEEPALIVE_IDLE_S, KEEPALIVE_INTERVAL_S, KEEPALIVE_PROBES = 15, 5, 4
UNACKED_LIMIT_MS = 45_000


def _keepalive(sock: socket.socket) -> None:
    """Have the kernel notice a server that is gone without closing the connection (a laptop
    that slept, a network that changed, a NAT that forgot it) within about 35 s, while a
    request waits for a long batch's reply or its bytes go unacknowledged: else the wait lasts
    the whole timeout. Probes and retransmissions need no answer from the server's program,
    only its machine: a batch that runs for hours is no dead peer. (Options this system
    lacks are left out.)"""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    idle = getattr(socket, "TCP_KEEPIDLE", None) or getattr(socket, "TCP_KEEPALIVE", None)  # (macOS's name)
    for opt, value in (
        (idle, KEEPALIVE_IDLE_S),
        (getattr(socket, "TCP_KEEPINTVL", None), KEEPALIVE_INTERVAL_S),
        (getattr(socket, "TCP_KEEPCNT", None), KEEPALIVE_PROBES),
        (getattr(socket, "TCP_USER_TIMEOUT", None), UNACKED_LIMIT_MS),
    ):
        if opt is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, opt, value)
            except OSError:
                pass


class Conn:
    """One HTTP/1.1 keep-alive connection on a socket (TLS when ``tls`` is given): just
    what the batch route needs (a POST with a Content-Length body; a reply with a
    Content-Length or chunked body). Any socket trouble raises OSError; the caller retries."""

    def __init__(self, host: str, port: int, timeout: float, tls: ssl.SSLContext | None = None) -> None:
        self.addr = (host, port)
        self.timeout = timeout
        self.tls = tls
        self.sock: socket.socket | None = None
        self._shut = False  # shut down for good (``shutdown``): no new connection
        self._busy = False  # a request is using the socket
        self._lock = threading.Lock()  # (``shutdown`` comes from another thread than requests)

    def shutdown(self) -> None:
        """Close for good, from any thread: a request waiting for its reply wakes at once
        (its ``recv`` sees the connection end) and no new connection is opened. The socket
        is closed by the request using it, when there is one: closing it under that request
        could let its next ``recv`` wait on a new socket given the same descriptor."""
        with self._lock:
            self._shut = True
            sock, busy = self.sock, self._busy
        if sock is not None:
            try:  # (the socket's own shutdown: a TLS one's would drop its state under the reader)
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:  # (not connected any more)
                pass
            if not busy:
                self.close()

    def close(self) -> None:
        with self._lock:
            sock, self.sock = self.sock, None
        if sock is not None:
            self._closer.detach()
            sock.close()

    def request(self, head: bytes, parts: list[Any]) -> tuple[int, str, Any]:
        with self._lock:
            if self._shut:
                raise ConnectionAbortedError("the connection was shut down")
            self._busy = True
        try:
            return self._request(head, parts)
        except BaseException:
            # a request cut short (a socket error, or Ctrl-C while waiting) may leave its reply,
            # or part of it, on the socket: the next request must not read it as its own
            self.close()
            raise
        finally:
            with self._lock:
                self._busy = False
                shut = self._shut
            if shut:
                self.close()

    def _request(self, head: bytes, parts: list[Any]) -> tuple[int, str, Any]:
        sock = self.sock
        if sock is None:
            sock = socket.create_connection(self.addr, timeout=self.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _keepalive(sock)
            if self.tls is not None:
                try:
                    sock = self.tls.wrap_socket(sock, server_hostname=self.addr[0])
                except BaseException:
                    sock.close()
                    raise
            with self._lock:
                if self._shut:  # (shut down while connecting)
                    sock.close()
                    raise ConnectionAbortedError("the connection was shut down")
                # a client dropped without close() leaves no socket behind (a finalizer,
                # not __del__: it runs before the socket's own, even inside a cycle)
                self._closer = weakref.finalize(self, sock.close)
                self.sock = sock
        if sum(len(p) if isinstance(p, bytes) else p.nbytes for p in parts) <= SMALL_BODY:
            sock.sendall(b"".join([head, *parts]))
        else:
            sock.sendall(head)
            for p in parts:
                sock.sendall(p)
        status, headers, rest = self._read_head(sock)
        body: Any
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = self._read_chunked(sock, rest)
        else:
            length = headers.get("content-length", "0")
            if not length.isdigit():
                raise ConnectionError(f"reply with a bad Content-Length {length[:40]!r}")
            n = int(length)
            body = np.empty(n, np.uint8) if n >= 1 << 20 else bytearray(n)  # numpy: huge pages
            view = memoryview(body)
            k = min(len(rest), n)
            view[:k] = rest[:k]
            while k < n:
                got = sock.recv_into(view[k:], min(n - k, 1 << 22))
                if not got:
                    raise ConnectionResetError("the server closed the connection mid-reply")
                k += got
        if "close" in headers.get("connection", "").lower():
            self.close()
        return status, headers.get("content-type", ""), body

    @staticmethod
    def _read_head(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionResetError("the server closed the connection")
            data += chunk
            end = data.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(data) > 1 << 16:
                raise ConnectionError("reply head is too long")
        lines = data[:end].decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split(" ", 2)[1])
        except (IndexError, ValueError):
            raise ConnectionError(f"not an HTTP reply: {lines[0][:80]!r}") from None
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers, data[end + 4 :]

    @staticmethod
    def _read_chunked(sock: socket.socket, rest: bytes) -> bytearray:
        body = bytearray()
        buf = bytearray(rest)
        while True:
            while b"\r\n" not in buf:
                more = sock.recv(65536)
                if not more:
                    raise ConnectionResetError("the server closed the connection mid-reply")
                buf += more
            line, _, tail = bytes(buf).partition(b"\r\n")
            try:
                size = int(line.split(b";")[0], 16)
            except ValueError:
                raise ConnectionError(f"reply with a bad chunk size {line[:40]!r}") from None
            buf = bytearray(tail)
            while len(buf) < size + 2:
                more = sock.recv(65536)
                if not more:
                    raise ConnectionResetError("the server closed the connection mid-reply")
                buf += more
            if size == 0:
                return body
            body += buf[:size]
            del buf[: size + 2]


SMALL_BODY = 1 << 16


def _reply(status: int, ctype: str, content: bytes | bytearray, path: str, op_errors: bool) -> Any:
    """A decoded reply, or the error it carries raised (an op's error is returned when ``op_errors``)."""
    data = _decode(status, ctype, content)
    if status < 400:
        return data
    if op_errors and isinstance(data, dict) and "values" in data and "error" in data:
        return data  # an op failed: the reply says which, and what ran before it
    err = data.get("error", data) if isinstance(data, dict) else {}
    raise error_from_kind(err.get("kind", "MXNetError"), err.get("message") or f"HTTP {status} from {path}")


def _decode(status: int, ctype: str, content: Any) -> Any:
    if ctype.startswith(wire.FRAMES):
        return wire.unpack_frames(content)
    if ctype.startswith(wire.MSGPACK):
        return wire.unpack(content)
    if ctype.startswith(wire.JSON):
        return wire.loads(memoryview(content))
    text = bytes(content[:200]).decode("utf-8", "replace")
    return {"error": {"kind": "MXNetError", "message": f"HTTP {status}: {text}"}}


SEEDS = 1 << 64
"""Seeds are taken modulo this: MXNet takes any integer, and a server's messages carry 64 bits."""


def seed_value(seed_state: Any, what: str) -> int:
    """``seed_state`` as a session is seeded with it, the same in-process and on a server: any
    integer (a numpy one too) modulo 2**64 (-1 as 2**64 - 1); anything else is refused
    (``connect``'s seed, ``GRADSERVE_SEED`` and ``nd.random.seed`` alike)."""
    try:
        return operator.index(seed_state) % SEEDS
    except TypeError:
        raise InvalidInput(f"{what}: the seed must be an integer, got {seed_state!r}") from None


def from_env(
    url: str | None = None,
    api_key: str | None = None,
    seed: int | None = None,
    verify: ssl.SSLContext | bool = True,
    timeout: float = 300.0,
) -> Transport:
    """HTTP to ``url`` (or ``GRADSERVE_URL``) when there is one, else the engine
    in-process. ``GRADSERVE_API_KEY`` and ``GRADSERVE_SEED`` fill in the rest."""
    url = url or os.environ.get("GRADSERVE_URL")
    api_key = api_key or os.environ.get("GRADSERVE_API_KEY")
    if seed is not None:
        seed = seed_value(seed, "connect")
    elif os.environ.get("GRADSERVE_SEED", "").strip():
        seed = seed_value(int(os.environ["GRADSERVE_SEED"]), "GRADSERVE_SEED")
    if url:
        return Http(url, api_key=api_key, seed=seed, verify=verify, timeout=timeout)
    return InProcess(seed=seed)


__all__ = ["Conn", "ConnectionLost", "Http", "InProcess", "SessionClosed", "Transport", "from_env"]
