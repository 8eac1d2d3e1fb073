"""Server settings, from arguments or ``GRADSERVE_*`` environment variables."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _one_user_a_key(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Key -> user, refusing a key given to two users (the last would have had it silently,
    the first locked out of their sessions)."""
    out: dict[str, Any] = {}
    first: dict[str, int] = {}
    for i, (key, user) in enumerate(pairs, 1):
        if out.setdefault(key, user) != user:
            raise ValueError(
                f"an API key is listed for both entry {first[key]} and entry {i} (counting from 1), two users; "
                "give each user their own"
            )
        first.setdefault(key, i)
    return out


MAX_SECONDS = 1e9
"""The longest time a setting takes (about 30 years)."""


class Settings(BaseSettings):
    """What a gradserve server runs with. Insecure combinations are refused."""

    # (an error's text, as a traceback prints it, does not show the value: API keys are secrets;
    # ``gradserve serve`` shows the value of the settings that are not)
    model_config = SettingsConfigDict(env_prefix="GRADSERVE_", extra="ignore", hide_input_in_errors=True)

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535, description="the port to listen on (0: any free one)")
    api_keys: Annotated[dict[str, str], NoDecode] = Field(  # (NoDecode: _parse_keys reads the variable)
        default_factory=dict,
        description="API key -> user name. Empty: no authentication (loopback only).",
    )
    metrics_key: str | None = Field(
        None,
        description="a key that reads GET /metrics and nothing else (for a scraper); "
        "any user's API key reads them too. With no API keys, /metrics is open (loopback only).",
    )
    max_body_bytes: int = Field(256 << 20, ge=1)
    max_batch_ops: int = Field(100_000, ge=1)
    max_batch_steps: int = Field(1_000_000, ge=1)  # instructions a batch runs, each call counting its program's
    max_program_steps: int = Field(100_000, ge=1)  # instructions of all programs one session keeps
    max_session_bytes: int = Field(2 << 30, ge=1)
    max_user_bytes: int = Field(8 << 30, ge=1)
    max_array_bytes: int = Field(1 << 30, ge=1)
    max_session_arrays: int = Field(100_000, ge=1)  # handles a session holds (an empty array costs memory too)
    max_sessions_per_user: int = Field(64, ge=1)
    max_user_threads: int = Field(
        8,
        ge=1,
        description="worker threads one user's requests hold at once (a session's take them one at a "
        "time); the others wait on the event loop, so one user's sessions cannot hold every thread",
    )
    # (times are finite, and at most about 30 years: a reply carries the TTL, and JSON has no inf; a
    # wait past threading.TIMEOUT_MAX raises, and the shutdown's snapshot waits send_stall_s)
    session_ttl_s: float = Field(3600.0, gt=0, le=MAX_SECONDS, allow_inf_nan=False)
    data_dir: Path | None = Field(
        None, description="where sessions are snapshotted and restored from at start; None keeps them in memory only"
    )
    snapshot_interval_s: float = Field(30.0, gt=0, le=MAX_SECONDS, allow_inf_nan=False)
    send_stall_s: float = Field(
        30.0,
        gt=0,
        le=MAX_SECONDS,
        allow_inf_nan=False,
        description="a client that takes no part of a reply for this long is cut off (its session freed)",
    )
    ssl_certfile: Path | None = Field(
        None,
        description="serve https with this certificate chain (PEM; its key too, or in ssl_keyfile); "
        "the Python client carries batches over TLS as over http",
    )
    ssl_keyfile: Path | None = Field(None, description="the certificate's private key (PEM), when not in ssl_certfile")
    helpers: int | None = Field(
        None,
        ge=0,
        description="helper threads of the backward pass, shared by all sessions "
        "(None: the CPUs less one, at most 4; 0: none)",
    )

    @field_validator("api_keys", mode="before")
    @classmethod
    def _parse_keys(cls, v: object) -> object:
        """Accept ``"alice:key1,bob:key2"`` (user:key pairs) as well as a mapping (or its
        JSON, ``{"key1": "alice"}``). A bad entry is named by its place: never by its text,
        which may be a key (or hold one: an entry written key:user names the key as its user)."""
        if isinstance(v, str) and v.lstrip().startswith("{"):
            try:
                keys = json.loads(v, object_pairs_hook=_one_user_a_key)
            except ValueError as e:  # (json's own errors give a place, not the text)
                raise ValueError(f"api keys are not a JSON object of key -> user: {e}") from None
            if not isinstance(keys, dict):
                raise ValueError("api keys are not a JSON object of key -> user")
            for i, user in enumerate(keys.values(), 1):  # (pydantic's error would name the key)
                if not isinstance(user, str) or not user:
                    raise ValueError(f"api keys: entry {i} of the JSON object maps its key to no user name")
            return keys
        if isinstance(v, str):
            pairs = []
            for i, pair in enumerate((p.strip() for p in v.split(",")), 1):
                if not pair:
                    continue
                user, sep, key = pair.partition(":")
                if not sep:
                    raise ValueError(f"api key entry {i} (counting from 1, comma-separated) is not user:key")
                if not user:
                    raise ValueError(f"api key entry {i} (counting from 1, comma-separated) is not user:key: no user")
                if not key:
                    raise ValueError(f"api key entry {i} (counting from 1, comma-separated) is not user:key: no key")
                pairs.append((key, user))
            return _one_user_a_key(pairs)
        return v

    @model_validator(mode="after")
    def _refuse_open_network(self) -> Settings:
        if not self.api_keys and not is_loopback(self.host):
            raise ValueError(
                f"refusing to serve on {self.host} without API keys: "
                "set GRADSERVE_API_KEYS (user:key,...) or --api-key, or bind to 127.0.0.1"
            )
        if self.metrics_key is not None and len(self.metrics_key) < 16:
            raise ValueError("the metrics key must be at least 16 characters long")
        if self.metrics_key is not None and self.metrics_key in self.api_keys:
            raise ValueError("the metrics key must not be a user's API key")
        for i, key in enumerate(self.api_keys, 1):
            if len(key) < 16:
                raise ValueError(
                    f"API keys must be at least 16 characters long (key {i} of the distinct keys, in the order given, "
                    "is not)"
                )
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise ValueError("ssl_keyfile needs ssl_certfile")
        for name in ("ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{name} {str(path)!r} is not a file")
        return self
