"""The exception tree shared by engine, server and client.

    MXNetError (RuntimeError)       anything gradserve raises for a user's mistake
    ├── InvalidInput                malformed op, attribute, key or tensor
    │   ├── ShapeError              shapes that do not fit the op
    │   ├── DTypeError              dtypes that do not fit the op
    │   │   └── BooleanIndexError   a boolean index array (a ValueError too, as MXNet's)
    │   └── IndexOutOfRange         an index past an axis's end (an IndexError too)
    ├── UnknownHandle               a handle the session does not hold
    ├── AutogradError               misuse of autograd (backward twice, ...)
    ├── QuotaExceeded               a byte or size limit would be passed
    ├── SequenceError               a batch out of order
    ├── Unauthorized                a missing or wrong API key
    ├── SessionNotFound             no such session for this key's user
    └── InternalError               a fault of gradserve's own, not the user's (HTTP 500)

Every error carries a stable ``kind`` (its class name) that travels in the JSON
error body, so the client re-raises the same class the server raised.
"""

from __future__ import annotations

import re
import reprlib
from typing import Any

_ECHO = reprlib.Repr()
_ECHO.maxlevel = 3
_ECHO.maxlist = _ECHO.maxtuple = _ECHO.maxdict = _ECHO.maxset = 8
_ECHO.maxstring = _ECHO.maxother = 100
_ECHO.maxlong = 40
ECHO_CHARS = 200


def echo(v: Any) -> str:
    """``repr(v)`` for an error's message, cut short in length and depth: a value a client sent
    may be anything, a string of a megabyte or a list nested a thousand deep (whose ``repr``
    itself fails, past Python's recursion limit)."""
    r = _ECHO.repr(v)
    return r if len(r) <= ECHO_CHARS else r[:ECHO_CHARS] + "..."


ERRORS: dict[str, type[MXNetError]] = {}
"""Each error class of this module by its ``kind`` (what a server may answer): each registers
itself as it is defined."""


class MXNetError(RuntimeError):
    """Base of every gradserve error; named as MXNet's so MXNet code catches it."""

    status = 400
    partial = False
    """Whether the instruction that raised it had taken effect in part (a program's call
    stopped after some steps, a backward pass after writing a gradient buffer): an error's
    instruction otherwise changed nothing."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__module__ == __name__:  # (the client's own errors never cross the wire)
            ERRORS[cls.__name__] = cls

    @property
    def kind(self) -> str:
        return type(self).__name__


class InvalidInput(MXNetError):
    """A request that is malformed: unknown op, bad attribute, bad tensor."""


class ShapeError(InvalidInput, ValueError):
    """Input shapes the op cannot take (a ValueError too, as numpy's are)."""


class DTypeError(InvalidInput):
    """Input dtypes the op cannot take."""


class UnknownDType(DTypeError, TypeError):
    """A dtype that is none of the engine's (a TypeError too, as MXNet's and numpy's)."""


class IndexKindError(InvalidInput, ValueError):
    """An index of a kind NDArrays do not take (a float, a string): a ValueError too, as MXNet's."""


class UnknownHandle(MXNetError):
    """A handle that the session does not hold (never made, or freed)."""

    status = 404


class AutogradError(MXNetError):
    """Autograd misuse, with MXNet's wording where MXNet has one."""


class QuotaExceeded(MXNetError):
    """A size or byte limit of the session, the user or the server."""

    status = 413

    @staticmethod
    def body_too_long(n: int, limit: int, more: bool = False) -> str:
        """A request body of ``n`` bytes (``more``: at least, a chunked one still coming)."""
        return f"request body of {'more than ' if more else ''}{n} bytes is over the limit of {limit}"

    @staticmethod
    def batch_too_long(n: int, limit: int) -> str:
        return f"batch of {n} ops is over the limit of {limit}"

    @staticmethod
    def batch_limit(message: str) -> int | None:
        """The limit of instructions per batch, from a ``message`` ``batch_too_long`` wrote."""
        m = _BATCH_LIMIT.match(message)
        return int(m.group(1)) if m else None


_BATCH_LIMIT = re.compile(r"batch of \d+ ops is over the limit of (\d+)$")


class SequenceError(MXNetError):
    """A batch whose sequence number is neither the next one nor a retry."""

    status = 409

    @staticmethod
    def message(last: int, got: Any) -> str:
        retry = f" (or {last} to retry)" if last > 0 else ""  # (a new session has nothing to retry)
        return f"expected batch seq {last + 1}{retry}, got {got}"

    @staticmethod
    def expected(message: str) -> int | None:
        """The seq the session expects, from a ``message`` this class wrote (None if not one)."""
        m = _EXPECTED.match(message)
        return int(m.group(1)) if m else None


_EXPECTED = re.compile(r"expected batch seq (\d+)(?: \(or -?\d+ to retry\))?, got")


class Unauthorized(MXNetError):
    """A missing or wrong API key."""

    status = 401


class SessionNotFound(MXNetError):
    """No such session for this user (others' sessions are not revealed)."""

    status = 404


class InternalError(MXNetError):
    """A fault of gradserve's own while running a valid-looking instruction (a bug: the
    server logs its traceback). The instructions before it took effect, as for any error."""

    status = 500


class ServerStopped(MXNetError):
    """The server was stopped (forced) while a batch ran: the batch ends at the instruction it
    would have run next, as at a failing one (those before it took effect). A request that had
    not started when the server began to stop is refused whole, in a reply that is no batch's
    (the client sends it again)."""

    status = 503


ERRORS[MXNetError.__name__] = MXNetError


def status_of(reply: dict) -> int:
    """The HTTP status of a batch reply: its failing op's error's, else 200."""
    err = reply.get("error")
    return ERRORS.get(err["kind"], MXNetError).status if err else 200


def error_from_kind(kind: str, message: str) -> MXNetError:
    """Rebuild an error that crossed the wire; unknown kinds become MXNetError."""
    return ERRORS.get(kind, MXNetError)(message)


NO_INPUTS = "There are no inputs in computation graph that require gradients."
UNREACHABLE = "Cannot differentiate with respect to the {}-th variable because it is unreachable from the outputs."
NON_DIFFERENTIABLE = "Operator {} is non-differentiable because it didn't register FGradient attribute."
FREED = (
    "Cannot differentiate through a part of the graph that an earlier backward freed (it "
    "computed a gradient through it without retain_graph=True): pass retain_graph=True to "
    "that backward, or record the forward pass again."
)
NOT_IN_GRAPH = (
    "Cannot differentiate node because it is not in a computational graph. "
    "You need to set is_recording to true or use autograd.record() to save "
    "computational graphs for backward. If you want to differentiate the same "
    "graph twice, you need to pass retain_graph=True to backward."
)


class IndexOutOfRange(InvalidInput, IndexError):
    """An index past an axis's end (an IndexError too, as in MXNet and numpy)."""


class BooleanIndexError(DTypeError, ValueError):
    """A boolean index array: MXNet's NDArrays refuse boolean indexing outside its numpy
    interface (with a ValueError), so gradserve refuses it too rather than read the mask's
    0s and 1s as integer indices."""
