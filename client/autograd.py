"""MXNet's ``autograd`` module: recording scopes, modes and backward.

>>> from gradserve import autograd, nd
>>> x = nd.array([1.0, 2.0]); x.attach_grad()
>>> with autograd.record():
...     y = (x * x).sum()
>>> y.backward(); x.grad
<BLANKLINE>
[2. 4.]
<NDArray 2 @cpu(0)>
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from .engine import tape
from .engine.errors import AutogradError, InvalidInput, ShapeError
from .engine.ops import assignable
from .engine.optable import OPS
from .engine.session import INPLACE_IN_GRAPH
from .ndarray import NDArray, backward, grad, invoke, mark_variables
from .runtime import NotTraceable, framed
from .state import flags

__all__ = [
    "Function",
    "backward",
    "grad",
    "mark_variables",
    "is_recording",
    "is_training",
    "pause",
    "predict_mode",
    "record",
    "set_recording",
    "set_training",
    "train_mode",
]


def is_recording() -> bool:
    """Whether ops are being recorded for backward."""
    return flags.recording


def is_training() -> bool:
    """Whether layers behave as in training (dropout, batch norm)."""
    flags.training_read = True  # (a Function's backward that reads it is traced in both modes)
    return flags.training


def set_recording(is_recording: bool) -> bool:  # noqa: A002
    """Set the recording flag; return its previous value."""
    prev, flags.recording = flags.recording, bool(is_recording)
    return prev


def set_training(train_mode: bool) -> bool:
    """Set the training flag; return its previous value."""
    prev, flags.training = flags.training, bool(train_mode)
    return prev


class _Scope:
    """Sets the flags on entry and restores what they were on exit."""

    def __init__(self, recording: bool | None, training: bool | None) -> None:
        self._want = (recording, training)
        self._prev: tuple[bool, bool] = (False, False)

    def __enter__(self) -> _Scope:
        self._prev = (flags.recording, flags.training)
        rec, train = self._want
        if rec is not None:
            flags.recording = rec
        if train is not None:
            flags.training = train
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        flags.recording, flags.training = self._prev


def record(train_mode: bool = True) -> _Scope:
    """Record ops for backward inside the ``with`` block (training mode by default)."""
    return _Scope(True, train_mode)


def pause(train_mode: bool = False) -> _Scope:
    """Stop recording inside the ``with`` block."""
    return _Scope(False, train_mode)


def train_mode() -> _Scope:
    """Training behaviour inside the block, recording unchanged."""
    return _Scope(None, True)


def predict_mode() -> _Scope:
    """Prediction behaviour inside the block, recording unchanged."""
    return _Scope(None, False)


class _FunctionMark:
    """Marks a client-side node made by a Function call."""

    name = "Function"


def _uploaded(program: list[dict[str, Any]]) -> int:
    """The bytes of the arrays a traced program uploads (its ``array`` instructions)."""
    return sum(framed(ins["at"]["value"].nbytes) for ins in program if ins.get("op") == "array")


class Function:
    """A differentiable function with a hand-written gradient (MXNet's
    ``autograd.Function``): subclass it with ``forward`` and ``backward``, both
    written with ``nd`` ops.

    ``backward`` is traced once, when the function is called while recording:
    its ops are sent as data and stored with the graph, so it runs on the server
    too and no code crosses the wire. It must be written with ``nd`` ops only
    (no ``asnumpy`` or other reads inside) and be linear in its arguments.

    >>> class Sigmoid(Function):
    ...     def forward(self, x):
    ...         y = 1 / (1 + nd.exp(-x))
    ...         self.save_for_backward(y)
    ...         return y
    ...     def backward(self, dy):
    ...         (y,) = self.saved_tensors
    ...         return dy * y * (1 - y)
    """

    def __init__(self) -> None:
        self._saved: tuple[Any, ...] = ()

    def save_for_backward(self, *args: Any) -> None:
        self._saved = args

    @property
    def saved_tensors(self) -> tuple[Any, ...]:
        return self._saved

    def _traced_backward(
        self, c: Any, backward_fn: Any, cots: list[NDArray], inputs: tuple[NDArray, ...], training: bool
    ) -> tuple[list[dict[str, Any]], list[Any]]:
        """``backward`` run on the cotangents' proxies with the training flag ``training`` and
        recording off: its instructions (queued nowhere) and its gradients' proxies."""
        with (
            c.capture("an autograd.Function's backward cannot read values: write it with nd ops only") as program,
            _Scope(False, training),
        ):
            grads = backward_fn(*cots)
            grads = [grads] if isinstance(grads, NDArray) or grads is None else list(grads)
            if len(grads) != len(inputs):
                raise InvalidInput(
                    f"{type(self).__name__}.backward returned {len(grads)} gradients for {len(inputs)} inputs"
                )
            for i, (x, g) in enumerate(zip(inputs, grads)):
                if g is None or g.shape == x.shape:
                    continue
                if not assignable(g.shape, x.shape):
                    raise ShapeError(
                        f"{type(self).__name__}.backward: gradient shape {g.shape} does not match input shape {x.shape}"
                    )
                # MXNet writes it with igrad[:] = ret, which broadcasts (leading axes of length 1
                # dropped): so does the traced backward
                if g.ndim > x.ndim:
                    g = invoke(OPS["reshape"], (g,), {"shape": g.shape[g.ndim - x.ndim :]})
                grads[i] = g if g.shape == x.shape else invoke(OPS["broadcast_to"], (g,), {"shape": x.shape})
        return program, grads

    def __call__(self, *inputs: NDArray) -> Any:
        forward = getattr(self, "forward", None)
        backward_fn = getattr(self, "backward", None)
        if forward is None or backward_fn is None:
            raise TypeError(f"{type(self).__name__} must define forward and backward")
        with _Scope(False, None):
            outputs = forward(*inputs)
        single = isinstance(outputs, NDArray)
        outs = [outputs] if single else list(outputs)
        if not flags.recording or not any(tape.in_graph(x._node) for x in inputs):
            return outputs
        for o in outs:
            if tape.in_graph(o._node):  # (an input given back, a variable: its node would be lost)
                raise AutogradError(INPLACE_IN_GRAPH)
        c = outs[0]._c
        if c.capturing():
            raise NotTraceable(
                f"{type(self).__name__}: an autograd.Function recording inside a hybridized function or "
                "another Function's backward cannot be traced: call it outside them"
            )
        cots = [NDArray(c, c.handle(), o._spec, None, o._ctx) for o in outs]
        training = flags.training
        flags.training_read = False
        program, grads = self._traced_backward(c, backward_fn, cots, inputs, training)
        at: dict[str, Any] = {
            "outputs": [o._h for o in outs],
            "program": program,
            "cotangents": [p._h for p in cots],
            "gradients": [None if g is None else g._h for g in grads],
        }
        if flags.training_read:  # (MXNet runs backward at the backward call, in its train_mode)
            other, other_grads = self._traced_backward(c, backward_fn, cots, inputs, not training)
            at["training"] = training
            at["other"] = {"program": other, "gradients": [None if g is None else g._h for g in other_grads]}
        # (the uploads its backward makes travel with it: the queue's bound counts them)
        carried = _uploaded(program) + (_uploaded(at["other"]["program"]) if "other" in at else 0)
        if c.max_request_bytes is not None and carried > c.max_request_bytes:
            raise NotTraceable(
                f"{type(self).__name__}: its backward uploads {carried} bytes, past the server's request size "
                f"({c.max_request_bytes}): make those arrays before, and keep them on the Function"
            )
        c.enqueue({"op": "record_function", "in": [x._h for x in inputs], "at": at}, nbytes=carried)
        parents = tape.parents_of(x._node for x in inputs) or ()  # an input is in the graph: never ()
        for o in outs:
            # the node's attributes are the Function: it keeps saved tensors (and their handles) alive with the graph
            o._node = tape.Node(_FunctionMark, self, parents)
        self._keep = inputs  # the traced backward may read them (saved tensors are kept by self)
        return outputs
