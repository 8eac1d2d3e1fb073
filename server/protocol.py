"""The batch message schema, defined once.

These models validate JSON requests and document both encodings in the
OpenAPI schema. The msgpack path decodes straight to the same shapes without
building a model per op; the engine checks every instruction it runs either way.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

DType = Literal["float16", "float32", "float64", "uint8", "int8", "int32", "int64", "bool"]


class Tensor(BaseModel):
    """An array: row-major ``data`` (a flat list in JSON, raw little-endian bytes in msgpack)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    dtype: DType
    shape: list[int] = Field(max_length=32)
    data: list[Any] | bytes | str = Field(
        description="row-major values: a list of numbers (nested lists in row-major order too; in a float "
        'tensor the strings "NaN", "Infinity", "-Infinity"), or raw little-endian bytes (base64 in JSON)'
    )


class Instruction(BaseModel):
    """One op (or session command) with client-named handles."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)

    op: str = Field(description="an op of GET /v1/ops, or a command (attach_grad, backward, read, ...)")
    in_: list[int] = Field(default_factory=list, alias="in", description="input handles")
    out: list[int] = Field(default_factory=list, description="handles the client names for the results")
    at: dict[str, Any] = Field(default_factory=dict, description="attributes, typed as the catalog says")
    mode: int = Field(0, ge=0, le=3, description="bit 1: recording, bit 2: training")


class Batch(BaseModel):
    """Instructions run in order, as an eager program; ``seq`` makes retries safe."""

    model_config = ConfigDict(extra="forbid", strict=True)

    seq: int | None = Field(None, description="1, 2, 3, ... per session; resending the last one replays its reply")
    ops: list[Instruction]


class ErrorInfo(BaseModel):
    kind: str = Field(description="the error class: InvalidInput, ShapeError, UnknownHandle, ...")
    message: str
    index: int | None = Field(None, description="which instruction of the batch failed")
    op: str | None = None
    partial: bool | None = Field(
        None, description="true: the failing instruction (a backward pass, a call) changed part of what it changes"
    )


class BatchReply(BaseModel):
    """Values read by ``read`` instructions, in order; ``error`` when one failed."""

    seq: int | None
    values: list[Tensor]
    error: ErrorInfo | None = None


class ErrorReply(BaseModel):
    error: ErrorInfo


class SessionInfo(BaseModel):
    id: str
    owner: str
    arrays: int
    bytes: int  # the memory its arrays keep alive (what the session quota counts, but its reply's copies)
    reply_bytes: int = 0  # the copies its last batch's reads keep for a retry, until the next batch (counted too)
    graph_bytes: int = 0  # its recorded graphs' nodes, at 1,024 bytes a node (counted too)
    program_bytes: int = 0  # its kept programs (hybridized functions), at 24 bytes a character of JSON (counted too)


class NewSessionInfo(SessionInfo):
    max_body_bytes: int  # the largest request body the server reads: clients split larger uploads
    max_batch_ops: int  # the most instructions a batch may hold: clients split longer queues
    max_batch_steps: int  # the most a batch may run, each call counting its program's instructions
    max_program_steps: int  # the instructions of all the programs a session keeps (hybridized functions)
    session_ttl_s: float  # a session idle for longer is closed: clients touch theirs while they live
    features: list[str] = []  # what its engine does that older ones did not (update.scale: w -= lr * g in one pass)


class NewSession(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    seed: int | None = Field(None, ge=0, description="seed of the session's random generator")
    token: str | None = Field(
        None,
        min_length=8,
        max_length=64,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="a random string the client picks for this open (8 to 64 letters, digits, - and _): "
        "a retry with the same token, after a lost reply, gets the session the first try opened, "
        "not a second one",
    )
