"""How a batch reaches an engine session: in-process, or over HTTP.

A transport takes a batch message (see ``gradserve.engine.session``) and
returns the reply ``{"seq", "values", "error"?}`` with values as numpy arrays.
Errors that concern the whole batch (authentication, an unknown session, a
quota) are raised; an error of one op comes back in the reply.
"""

from __future__ import annotations

import os
import time
from typing import Any, Protocol

import httpx

from .engine import wire
from .engine.errors import MXNetError, error_from_kind
from .engine.session import Limits, Session


class Transport(Protocol):
    """Carries batches to one session."""

    requests: int

    def send(self, batch: dict[str, Any]) -> dict[str, Any]: ...

    def info(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class InProcess:
    """The engine in this process: no server, the same batches."""

    def __init__(self, seed: int | None = None, limits: Limits | None = None) -> None:
        self.session = Session("local", seed=seed, limits=limits)
        self.requests = 0

    def send(self, batch: dict[str, Any]) -> dict[str, Any]:
        self.requests += 1
        return self.session.run_batch(batch)

    def info(self) -> dict[str, Any]:
        s = self.session
        return {"id": s.id, "owner": s.owner, "arrays": len(s.arrays), "bytes": s.nbytes}

    def close(self) -> None:
        self.session.arrays.clear()
        self.session.nodes.clear()


class ConnectionLost(MXNetError):
    """The server could not be reached, even after retries."""


class Http:
    """A session on a gradserve server, over HTTP/1.1 keep-alive, in msgpack."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        timeout: float = 300.0,
        retries: int = 5,
        seed: int | None = None,
    ) -> None:
        headers = {"accept": wire.MSGPACK, "content-type": wire.MSGPACK}
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        self.url = url.rstrip("/")
        self.retries = retries
        self.requests = 0
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        reply = self._call("POST", "/v1/sessions", wire.pack({} if seed is None else {"seed": seed}))
        self.session_id: str = reply["id"]
        self._batch_path = f"/v1/sessions/{self.session_id}/batch"

    def send(self, batch: dict[str, Any]) -> dict[str, Any]:
        reply = self._call("POST", self._batch_path, wire.pack(batch), op_errors=True)
        reply["values"] = [wire.decode_tensor(v) for v in reply.get("values", ())]
        return reply

    def info(self) -> dict[str, Any]:
        """The session as the server sees it: id, owner, arrays held, bytes."""
        return self._call("GET", f"/v1/sessions/{self.session_id}")

    def _call(self, method: str, path: str, body: bytes | None = None, op_errors: bool = False) -> Any:
        """One request; retried on a broken connection (the server replays by seq)."""
        delay = 0.05
        for attempt in range(self.retries + 1):
            try:
                self.requests += 1
                r = self._http.request(method, path, content=body)
                break
            except httpx.TransportError as e:
                if attempt == self.retries:
                    raise ConnectionLost(f"{method} {self.url}{path}: {e}") from e
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        data = _decode(r)
        if r.status_code < 400:
            return data
        if op_errors and isinstance(data, dict) and "values" in data and "error" in data:
            return data  # an op failed: the reply says which, and what ran before it
        err = data.get("error", data) if isinstance(data, dict) else {}
        raise error_from_kind(
            err.get("kind", "MXNetError"), err.get("message") or f"HTTP {r.status_code} from {path}"
        )

    def close(self) -> None:
        try:
            self._http.delete(f"/v1/sessions/{self.session_id}")
        except httpx.HTTPError:
            pass
        self._http.close()


def _decode(r: httpx.Response) -> Any:
    ctype = r.headers.get("content-type", "")
    if ctype.startswith(wire.MSGPACK):
        return wire.unpack(r.content)
    if ctype.startswith(wire.JSON):
        return wire.loads(r.content)
    return {"error": {"kind": "MXNetError", "message": f"HTTP {r.status_code}: {r.text[:200]}"}}


def from_env(url: str | None = None, api_key: str | None = None, seed: int | None = None) -> Transport:
    """HTTP to ``url`` (or ``GRADSERVE_URL``) when there is one, else the engine
    in-process. ``GRADSERVE_API_KEY`` and ``GRADSERVE_SEED`` fill in the rest."""
    url = url or os.environ.get("GRADSERVE_URL")
    api_key = api_key or os.environ.get("GRADSERVE_API_KEY")
    if seed is None and os.environ.get("GRADSERVE_SEED", "").strip():
        seed = int(os.environ["GRADSERVE_SEED"])
    if url:
        return Http(url, api_key=api_key, seed=seed)
    return InProcess(seed=seed)


__all__ = ["ConnectionLost", "Http", "InProcess", "Transport", "from_env"]
