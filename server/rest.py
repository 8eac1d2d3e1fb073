"""Convenience REST routes for clients in any language: upload and download an
array, run one op, attach a gradient, backward, read a gradient. Each is a thin
layer that builds a batch of an instruction or two (an op and the read of its
result) and runs it like any other.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..engine import wire
from ..engine.errors import InvalidInput, error_from_kind
from ..engine.session import COMMANDS, BatchRun, Session
from . import fast
from .deps import Handle, SessionDep, encode_as, encode_tensors, read_body, tensor_form, wants_msgpack

arrays = APIRouter(prefix="/v1/sessions/{sid}", tags=["arrays"])


class OneOp(BaseModel):
    """One op with client-named output handles."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)

    in_: list[int] = Field(default_factory=list, alias="in")
    out: list[int] = Field(
        default_factory=list, description="handles for the results (none for a command that makes none)"
    )
    at: dict[str, Any] = Field(default_factory=dict)
    mode: int = Field(0, ge=0, le=3)
    read: bool = Field(False, description="also return the results' values")


class Backward(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    heads: list[int]
    head_grads: list[int | None] | None = None
    retain_graph: bool = False
    train_mode: bool = True


class AttachGrad(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    grad_req: str = "write"


def _parse(model: type[BaseModel], body: Any) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise InvalidInput(f"invalid request at {where}: {first['msg']}") from None


class BatchFailed(Exception):
    """A route's batch failed: answered with the batch's own error (its kind, message, op)."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error["message"])
        self.error = error
        self.status = error_from_kind(error["kind"], "").status


async def _run(request: Request, session: Session, ops: list[dict[str, Any]]) -> list[Any]:
    """Run instructions as an unsequenced batch; raise the first error."""
    reply = await fast.in_thread(request.app, session, session.run_batch, {"ops": ops})
    err = reply.get("error")
    if err:
        raise BatchFailed(err)
    return reply["values"]


async def _tensor(request: Request, arr: Any) -> Response:
    return await encode_tensors(
        request, wire.encode_tensor(arr, tensor_form(request.headers.get("accept", ""))), arr.nbytes
    )


@arrays.put("/arrays/{h}", status_code=201)
async def upload_array(h: Handle, request: Request, session: SessionDep) -> Response:
    """Store a tensor (``{dtype, shape, data}``) under handle ``h``."""
    body = await read_body(request)
    # the engine's tensor decoder checks every field (a pydantic pass over a large list costs more than the upload)
    await _run(request, session, [{"op": "array", "out": [h], "at": {"value": body}}])
    return Response(status_code=201)


@arrays.get("/arrays/{h}")
async def download_array(h: Handle, request: Request, session: SessionDep) -> Response:
    """The value of handle ``h`` as a tensor."""
    (value,) = await _run(request, session, [{"op": "read", "in": [h]}])
    return await _tensor(request, value)


@arrays.delete("/arrays/{h}", status_code=204)
async def delete_array(h: Handle, request: Request, session: SessionDep) -> Response:
    """Free handle ``h``."""
    await _run(request, session, [{"op": "free", "in": [h]}])
    return Response(status_code=204)


MAKES_OUT = frozenset({"grad", "alias", "call", "grad_of"})
"""The commands that give every handle of their ``out`` an array (as every op of the table does):
the only ones whose results a ``read`` may ask for."""


def _op_and_read(session: Session, ins: dict[str, Any], form: str, as_msgpack: bool) -> Response:
    """Run ``ins`` and read its ``out`` in one batch, the reply encoded before the session is
    free again: the read gives the arrays themselves (no copy), so it cannot fail once the op
    has made them (a read that failed after the op ran would leave its effect unanswered)."""
    run = session.begin({"ops": [ins, {"op": "read", "in": ins["out"]}]}, copy_reads=False)
    assert isinstance(run, BatchRun)  # (unsequenced: never a stored reply)
    try:
        run.run()
    except BaseException:
        run.abort()
        raise
    try:
        err = run.reply.get("error")
        if err:
            raise BatchFailed(err)
        values = [wire.encode_tensor(v, form) for v in run.values]
        return encode_as(as_msgpack, {"out": ins["out"], "values": values})
    finally:
        run.finish()


@arrays.post("/ops/{name}")
async def run_op(name: str, request: Request, session: SessionDep) -> Response:
    """Run one op (or command) of the catalog; its results get the handles in ``out``."""
    req = _parse(OneOp, await read_body(request))
    if name == "read":  # (its values would have nowhere to go: the route answers its op's out handles)
        raise InvalidInput("read through /ops gives nothing back: GET /arrays/{h} (or /arrays/{h}/grad), or a batch")
    ins = {"op": name, "in": req.in_, "out": req.out, "at": req.at, "mode": req.mode}
    if not req.read:
        await _run(request, session, [ins])
        return await encode_tensors(request, {"out": req.out}, 0)
    if name in COMMANDS and name not in MAKES_OUT:  # refused before it runs: a failed request changes nothing
        raise InvalidInput(f"{name}: read asks for the values of its out handles, and it makes none")
    if not req.out:
        raise InvalidInput(f"{name}: read asks for the values of its out handles, and none are given")
    form = tensor_form(request.headers.get("accept", ""))
    return await fast.in_thread(request.app, session, _op_and_read, session, ins, form, wants_msgpack(request))


@arrays.post("/arrays/{h}/attach_grad", status_code=204)
async def attach_grad(h: Handle, request: Request, session: SessionDep) -> Response:
    """Make ``h`` a variable with a zeroed gradient (``grad_req`` write, add or null)."""
    req = _parse(AttachGrad, await read_body(request))  # (an empty body reads as {})
    await _run(request, session, [{"op": "attach_grad", "in": [h], "at": {"grad_req": req.grad_req}}])
    return Response(status_code=204)


@arrays.get("/arrays/{h}/grad")
async def read_grad(h: Handle, request: Request, session: SessionDep) -> Response:
    """The gradient of variable ``h`` as a tensor."""
    (value,) = await _run(request, session, [{"op": "read", "in": [h], "at": {"grad": True}}])
    return await _tensor(request, value)


@arrays.post("/backward", status_code=204)
async def run_backward(request: Request, session: SessionDep) -> Response:
    """Backpropagate from ``heads`` into the variables' gradients."""
    req = _parse(Backward, await read_body(request))
    at: dict[str, Any] = {"retain_graph": req.retain_graph}
    if req.head_grads is not None:
        at["head_grads"] = req.head_grads
    await _run(
        request,
        session,
        [{"op": "backward", "in": req.heads, "at": at, "mode": 2 if req.train_mode else 0}],
    )
    return Response(status_code=204)
