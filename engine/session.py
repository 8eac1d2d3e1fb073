"""A session: its arrays, gradients, graph and random generator, and the batch
executor that applies a list of instructions like an eager program would.

An instruction is ``{"op": name, "in": [handles], "out": [handles],
"at": {attributes}, "mode": bits}`` where ``mode`` bit 1 means recording and
bit 2 training (MXNet's two flags, as they were when the op was called). Ops
come from the op table; the commands below (``attach_grad``, ``backward``,
``setitem``, ``read``, ...) act on the session itself.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from . import alloc, kernels, ops_array, ops_math, ops_nn, parallel, tape  # noqa: F401  (ops_*: the rest of the table)
from . import ops as _ops  # (fills the table)
from .dispatch import Context, Eager, Recorder, Traced, traced_args
from .errors import (
    NO_INPUTS,
    UNREACHABLE,
    AutogradError,
    DTypeError,
    InternalError,
    InvalidInput,
    MXNetError,
    QuotaExceeded,
    SequenceError,
    ShapeError,
    UnknownHandle,
)
from .optable import MAX_NDIM, OPS, REQUIRED, Attr, Op, Spec, attr_parser, dtype_name, over_rank
from .tape import SHARE_EVERY, Node, share_gil

if TYPE_CHECKING:
    from .programs import Program

_log = logging.getLogger("gradserve.engine")

RECORDING = 1
TRAINING = 2

INPLACE_RECORDING = "Inplace operations (+=, -=, x[:]=, etc) are not supported when recording with autograd."
"""MXNet's words for an in-place write of a recorded value into an array (but ``x[:] = v``)."""
INPLACE_IN_GRAPH = (
    "Assigning to NDArrays that are already in a computational graph will cause "
    "undefined behavior when evaluating gradients. Please call backward first to "
    "clear the graph or do this out side of a record section. Also note that you "
    "cannot use inplace operations like +=, *=, relu(x, out=x), y[idx]=x, etc "
    "inside a record section."
)


@dataclass
class Limits:
    """What one session may hold and send."""

    max_session_bytes: int = 2 << 30
    max_array_bytes: int = 1 << 30
    max_batch_ops: int = 100_000
    max_user_bytes: int = 8 << 30  # all sessions of one user together
    max_batch_steps: int = 1_000_000  # instructions one batch runs, each call counting its program's
    max_program_steps: int = 100_000  # instructions of all programs a session holds
    max_session_arrays: int = 100_000  # handles one session holds (an empty array costs the server too)


Command = Callable[["Session", dict, list], None]
COMMANDS: dict[str, Command] = {}
# each command's own function (it takes parsed attributes) and its attribute parser
PARSED_COMMANDS: dict[str, tuple[Command, Callable[[Any], dict[str, Any]]]] = {}
COMMAND_DOCS: dict[str, dict[str, Any]] = {}


def command(name: str, inputs: str, attrs: tuple[Attr, ...], doc: str) -> Callable[[Command], Command]:
    """Register a session command; its attributes are parsed as an op's are
    (declared types, defaults, unknown names refused) before it runs, so the
    command reads ``ins["at"]``: every declared attribute, typed."""

    def wrap(fn: Command) -> Command:
        parse = attr_parser(name, attrs)

        def run(s: Session, ins: dict, values: list) -> None:
            raw = ins.get("at")
            mode = _mode(name, ins)
            if len(ins) > 1 + (raw is not None) + (mode != 0):  # (op, at, mode: a lower bound of those present)
                _check_fields(name, ins)
            fn(s, {**ins, "at": parse(raw)}, values)

        COMMANDS[name] = run
        PARSED_COMMANDS[name] = (fn, parse)
        COMMAND_DOCS[name] = {
            "name": name,
            "inputs": inputs,
            "attrs": [a.describe() for a in attrs],
            "doc": doc,
        }
        return fn

    return wrap


def _too_many_arrays(s: Session) -> QuotaExceeded:
    return QuotaExceeded(
        f"session holds {len(s.arrays)} arrays, its limit of {s.limits.max_session_arrays}: free some first"
    )


MAX_HANDLE: Final = (1 << 63) - 1
"""The largest handle (an int64, as the REST routes' paths read them)."""
MODES: Final = RECORDING | TRAINING
KEYS: Final = frozenset({"op", "in", "out", "at", "mode"})
"""An instruction's fields (any other is refused: a misspelt one would be passed over)."""


def _bad_mode(name: str, mode: Any) -> InvalidInput:
    return InvalidInput(f"{name}: mode is 0, 1 (recording), 2 (training) or 3 (both), got {_echo(mode)}")


def _unknown_keys(name: str, ins: dict) -> InvalidInput:
    extra = sorted(_echo(k) for k in ins if k not in KEYS)
    return InvalidInput(f"{name}: unknown instruction fields {', '.join(extra)} (an instruction has {sorted(KEYS)})")


def _echo(v: Any) -> str:
    """``repr(v)``, cut short (it may be anything a client sent)."""
    r = repr(v) if type(v) is not str or len(v) <= 100 else repr(v[:100]) + "..."
    return r if len(r) <= 100 else r[:100] + "..."


def _mode(name: str, ins: dict) -> int:
    """An instruction's mode, refused unless an int in 0..3."""
    mode = ins.get("mode", 0)
    if type(mode) is not int:
        raise _bad_mode(name, mode)
    m: int = mode
    if m & ~MODES:
        raise _bad_mode(name, mode)
    return m


def _check_fields(name: str, ins: dict) -> None:
    for k in ins:
        if k not in KEYS:
            raise _unknown_keys(name, ins)


def check_instruction(name: str, ins: dict) -> None:
    """Refuse a mode other than 0..3, and fields an instruction does not have (for the
    instructions that take neither ``execute``'s nor a command's path: a batch's last reads,
    a program's steps when it is defined)."""
    _mode(name, ins)
    _check_fields(name, ins)


LONG_PROGRAM: Final = 64
"""A program of more steps than this, not called yet, may take longer than a slice of the event loop."""
_PROGRAM_OPS = frozenset({"define", "call", "record_function"})
SLICE_ARRAY_BYTES: Final = 8 << 20
"""A batch run in a slice of the event loop stops before an op that would make a larger array
(making one of 1e8 floats takes seconds), or a command whose inputs hold twice as much: the
thread that runs the rest does it. (At 1 MiB, a training step whose weights' update read
1.6 MB went to the thread every step: a thread hop costs a remote step about 10 %.)"""


NODE_BYTES: Final = 1024
"""What one node of a recorded graph costs the server besides its arrays (the node, its
attributes, its inputs' tuple, its output's array object: about 900 bytes measured). Graphs are
counted at this much a node (``graph_bytes``), so that one of empty or tiny arrays cannot grow
past a session's limit uncounted."""


def node_extra(at: dict) -> int:
    """About what a node's attributes keep besides the node, as Python's objects (a client's
    Function keeps its backward program; an op's attributes are short: strings of at most
    ``MAX_STR_ATTR``, keys of at most ``MAX_NDIM`` entries, index arrays as arrays)."""
    total = 0
    stack: list[Any] = list(at.values())
    while stack:
        v = stack.pop()
        if isinstance(v, (list, tuple)):
            total += 56 + 8 * len(v)
            stack += v
        elif isinstance(v, dict):
            total += 64 + 104 * len(v)
            stack += v.values()
        elif isinstance(v, np.ndarray):
            total += 112 + (v.nbytes if v.base is None else 0)
        elif isinstance(v, (str, bytes)):
            total += 49 + len(v)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            total += 32
    return total


GRAPH_RECOUNT_BYTES: Final = NODE_BYTES << 10
"""``graph_bytes`` is counted again from the graph itself once it passes twice its last count
and this much (each recount walks the live graph: amortized, a node is walked about once)."""


_SIZED_COMMANDS: set[str] = {"attach_grad", "read", "update", "setitem", "alias"}  # (and the OPTIMIZERS)
"""Commands whose work grows with their inputs' size (a slice leaves large ones to the thread)."""


def _large_inputs(s: Session, ins: dict) -> bool:
    hs = ins.get("in")
    if type(hs) is not list:
        return False  # the instruction's own error says why
    total = 0
    for h in hs:
        x = s.arrays.get(h) if type(h) is int else None
        if x is not None:
            total += x.nbytes
    return total > 2 * SLICE_ARRAY_BYTES


SLICE_WORK = 1 << 26
"""An op of more multiply-adds (about a slice's 5 ms of one core's BLAS) is not started in a
slice of a server's event loop: the thread that runs the rest of the batch runs it."""


TIMED_BYTES: Final = 32 << 10
"""An op whose output or largest input holds this much is timed as it runs, and in a slice of a
server's event loop it is judged by its time per byte: numpy's elementwise ops take 0.1 to
300 ns an element (a float16 ``polygamma`` of 8 MiB: seconds), so their output's size alone
does not bound them."""
TIMED_WORK: Final = 1 << 16
"""An op of declared multiply-adds (``dot``, ``Convolution``) is timed, and judged, per
multiply-add from this many (a float32 product runs at BLAS's speed, a float16 or integer one
hundreds of times slower)."""
SLICE_NS: Final = 5_000_000
"""An op expected to take longer than this (ns; a slice's length) is left for the thread."""
MAX_DIM: Final = 1 << 40
"""The longest axis of an array: an empty array's others are bounded too (a repeat of nothing
2**62 times has no bytes for a quota to refuse)."""
MAX_RATES = 4096
"""The op keys ``_RATES`` keeps (an attribute's string goes into a key, and any user may send
one): past it, the oldest key is dropped (its op is timed again when it next runs)."""
_RATES: dict[tuple, tuple[float, int]] = {}
"""Op key (``_op_key``) -> (ns per byte or multiply-add, the size it was measured on), for every
session of the process. A run on a size like the last one's sets it, never below half the
time before (one quick run does not make a slow op look quick); a run on a much larger size
sets it; one on a much smaller size leaves it (its time is mostly the op's fixed cost). An op
not timed yet is left for the thread in a slice (its first run there times it)."""


def _op_key(name: str, x: Any, at: Any) -> tuple:
    """What an op's time per unit goes by: its name, its first input's dtype, and the
    attributes that choose its computation (a string, ``act_type``; a small integer,
    polygamma's ``n``), not its float scalars (a learning rate differs every step)."""
    key: list[Any] = [name, x.dtype.num if isinstance(x, np.ndarray) else -1]
    if type(at) is dict:
        for k, v in at.items():
            if k[:1] == "_":
                continue  # (what a forward wrote there for its VJP: BatchNorm's _train)
            if type(v) is str or (type(v) is int and -64 < v < 64) or type(v) is bool:
                key += (k, v)
    return tuple(key)


def _timing(op: Op, at: dict, xs: Any, out_bytes: int, specs: list | None = None) -> tuple[tuple | None, int]:
    """An op's timing key (None: too small to time or judge) and its size: its multiply-adds
    for an op that declares them (``specs``: its inputs' specs, made from ``xs`` if not
    given), else the bytes of its output and every input (add_n's many inputs are its work).
    The per-op path times by it and the backward pass's estimate looks it up: one key."""
    first = xs[0] if xs else None
    if op.work is not None:
        if specs is None:
            specs = [_new_spec(Spec, (x.shape, dtype_name(x.dtype))) for x in xs if isinstance(x, np.ndarray)]
        work = int(op.work(at, *specs))
        return (_op_key(op.name, first, at) if work >= TIMED_WORK else None), work
    size = out_bytes
    for x in xs:
        if isinstance(x, np.ndarray):
            size += x.nbytes
    return (_op_key(op.name, first, at) if size >= TIMED_BYTES else None), size


def _expected_ns(key: tuple, size: int) -> float:
    """How long an op of ``key`` is expected to take on ``size`` units (inf: not known)."""
    rate = _RATES.get(key)
    return float("inf") if rate is None else rate[0] * size


_VALUE_COSTLY: Final = frozenset({"mod", "mod_scalar", "rmod_scalar"})
"""Ops whose time per element depends on the values (a float fmod of 1e300 by 1e-300 takes 2 us
an element, 1e3 times a plain one): a rate learnt on plain values does not bound them, so in a
slice of the event loop a large float one is the thread's, timed or not."""
VALUE_COSTLY_BYTES: Final = 64 << 10


def _judge_in_slice(s: Session, key: tuple, size: int, values: Any) -> None:
    """In a slice of a server's event loop, leave an op (of ``key`` and ``size``) for the thread,
    not started, when it is expected past the slice or not timed yet, or when it is large and
    its cost depends on ``values`` (a float array of a ``_VALUE_COSTLY`` op; None: not one)."""
    if not s._in_slice or s._calling:
        return
    if _expected_ns(key, size) > SLICE_NS:
        raise _SliceEnds
    if values is not None and size >= VALUE_COSTLY_BYTES and isinstance(values, np.ndarray):
        if values.dtype.kind == "f":
            raise _SliceEnds


SLOW_RUN_NS: Final = 1_000_000
"""A run this long is the op's own time, not its fixed cost: it may raise the rate of any size."""


def _timed(key: tuple, size: int, ns: float) -> None:
    per = ns / size
    old = _RATES.get(key)
    if old is None:
        if len(_RATES) >= MAX_RATES:
            del _RATES[next(iter(_RATES))]
        _RATES[key] = (per, size)
    elif size > 4 * old[1]:
        _RATES[key] = (per, size)
    elif 4 * size >= old[1]:
        _RATES[key] = (max(per, old[0] / 2), max(size, old[1]))
    elif ns >= SLOW_RUN_NS and per > old[0]:  # (a value that costs more: mod of 1e300 by 1e-300)
        _RATES[key] = (per, old[1])


class _SliceEnds(Exception):
    """Raised before an op too large for a slice starts (nothing of it has run)."""


def _long_program_op(s: Session, ins: dict, deadline: float) -> bool:
    """Whether a ``define`` or ``call`` might run past ``deadline`` (a slice of a server's
    event loop, which cannot stop an instruction halfway): a definition of more than
    ``LONG_PROGRAM`` steps (it is checked step by step); a call whose program's last whole
    call, with the same argument shapes, took longer than the time left; a call of that many
    steps with nothing to go by (never run whole, or other shapes)."""
    at = ins.get("at")
    if type(at) is not dict:
        return False  # the instruction's own error says why
    if ins["op"] in ("define", "record_function"):
        steps = at.get("program")
        return type(steps) is list and len(steps) > LONG_PROGRAM
    pid = at.get("id")
    prog = s.programs.get(pid) if type(pid) is int else None
    if prog is None:
        return False
    hs = ins.get("in")
    if type(hs) is not list:
        return False  # the call's own error says why
    if prog.last_s >= 0:  # the last call that ran every step: it had the plan's signature
        xs = []
        for h in hs:
            x = s.arrays.get(h) if type(h) is int else None
            if x is None:
                return False  # the call's own error says why
            xs.append(x)
        if prog.signature(s, xs) == prog.sig:
            return time.perf_counter() + prog.last_s > deadline
    # never ran whole, or other shapes: judged by its length, and by its ops (a Convolution may take seconds)
    return len(prog.steps) > LONG_PROGRAM or prog.costly


class BatchRun:
    """A batch being applied to a session (``Session.begin``): run in one go, or in slices
    that end between instructions (a server runs a batch's start on its event loop and
    hands what is left to a thread), then finished once. It holds the session's lock
    from ``begin`` to ``finish`` or ``abort``, whichever thread calls them."""

    __slots__ = ("session", "ops", "seq", "tail", "next", "values", "reply", "started", "ended")

    def __init__(self, session: Session, ops: list, seq: int | None, copy_reads: bool) -> None:
        self.session = session
        self.ops = ops
        self.seq = seq
        self.values: list[np.ndarray] = []
        self.reply: dict[str, Any] = {"seq": seq, "values": self.values}
        self.next = 0  # the next instruction to run
        self.started = time.perf_counter()
        self.ended = 0.0  # when its last instruction ran (a caller may finish it later)
        tail = len(ops)
        if not copy_reads:
            while tail and type(ops[tail - 1]) is dict and ops[tail - 1].get("op") == "read":
                tail -= 1
        self.tail = tail  # reads from here on give the arrays themselves

    def run(self, deadline: float | None = None) -> bool:
        """Apply instructions until the batch ends or fails, or (checked after each one) the
        ``time.perf_counter`` deadline passes; whether the batch is over."""
        s, ops, values, tail = self.session, self.ops, self.values, self.tail
        execute = s.execute
        n = len(ops)
        i = self.next
        since = time.perf_counter()
        if deadline is not None:
            s._cap = min(s._cap, SLICE_ARRAY_BYTES)
            s._in_slice = True
        try:
            i = self._run(s, ops, values, tail, execute, n, i, since, deadline)
        finally:
            s._cap = s.limits.max_array_bytes
            s._in_slice = False
        self.next = i
        if i >= n:
            if s._gone:
                s.sweep()
            self.ended = time.perf_counter()
            return True
        return False

    def _run(
        self,
        s: Session,
        ops: list,
        values: list,
        tail: int,
        execute: Any,
        n: int,
        i: int,
        since: float,
        deadline: float | None,
    ) -> int:
        with np.errstate(all="ignore"):
            while i < n:
                if i % SHARE_EVERY == 0:
                    since = share_gil(since)
                ins = ops[i]
                if deadline is not None and type(ins) is dict and type(ins.get("op")) is str:
                    name = ins["op"]
                    if name in _PROGRAM_OPS:
                        if _long_program_op(s, ins, deadline):
                            break  # not started: the caller runs it (and the rest) in a thread
                    elif name in _SIZED_COMMANDS and i < tail and _large_inputs(s, ins):
                        break
                try:
                    if i < tail:
                        execute(ins, values)
                    else:  # the batch's last reads: the arrays themselves, for an encoder that sends them at once
                        check_instruction("read", ins)
                        read_values(s, ins.get("in", ()), _parse_read(ins.get("at"))["grad"], values, copy=False)
                except _SliceEnds:
                    break  # not started: the caller runs it (and the rest) in a thread
                except MXNetError as e:
                    self.reply["error"] = error_body(e, i, ins)
                    i = n
                    break
                except (
                    TypeError,
                    ValueError,
                    KeyError,
                    AttributeError,
                    IndexError,
                    OverflowError,
                    ZeroDivisionError,
                ) as e:
                    self.reply["error"] = error_body(InvalidInput(f"malformed instruction: {e}"), i, ins)
                    i = n
                    break
                except MemoryError:  # (past what the checks foresaw: the machine's memory)
                    op = ins.get("op") if type(ins) is dict else None
                    err = QuotaExceeded(f"{op}: the server has not the memory to run it")
                    self.reply["error"] = error_body(err, i, ins)
                    i = n
                    break
                except Exception as e:  # a fault of ours: the batch still ends as for any error
                    op = ins.get("op") if type(ins) is dict else None
                    _log.exception("internal error in instruction %d (%r) of a batch", i, op)
                    self.reply["error"] = error_body(InternalError(f"{op}: {type(e).__name__}: {e}"), i, ins)
                    i = n
                    break
                i += 1
                if deadline is not None and time.perf_counter() > deadline:
                    break
        return i

    def finish(self) -> dict[str, Any]:
        """Record the reply (a retry of this seq gets it again) and free the session."""
        s, reply = self.session, self.reply
        s.last_batch_s = (self.ended or time.perf_counter()) - self.started
        try:
            if self.seq is not None:
                s.seq = self.seq
                s.last_reply = reply
                s.last_reply_lent = self.tail < len(self.ops)
                s.reply_bytes = s._reading  # (the stored reply's copies count while it is kept)
            else:  # not kept: its copies go with it
                s.nbytes -= s._reading
            s._reading = 0
            if s.on_batch is not None:
                err = reply.get("error")
                called = s._steps - len(self.ops)  # what its calls added (engine/programs.py)
                s.on_batch(err["index"] if err else len(self.ops), err["kind"] if err else None, called)
        finally:
            s.lock.release()
        return reply

    def abort(self) -> None:
        """Free the session after an unexpected exception (the seq is not taken)."""
        s = self.session
        s.nbytes -= s._reading
        s._reading = 0
        s.lock.release()


def check_envelope(msg: Any, max_ops: int | None = None) -> None:
    """A batch's envelope, checked before it waits for its session: ``ops`` (at most
    ``max_ops``), ``seq``, no more."""
    if not isinstance(msg, dict) or not isinstance(msg.get("ops"), list):
        raise InvalidInput("a batch must be an object with a list 'ops'")
    if max_ops is not None and len(msg["ops"]) > max_ops:
        raise QuotaExceeded(QuotaExceeded.batch_too_long(len(msg["ops"]), max_ops))
    if len(msg) > 1 + ("seq" in msg):
        extra = sorted(str(k) for k in msg if k not in ("ops", "seq"))
        raise InvalidInput(f"a batch has only 'ops' and 'seq': unknown field(s) {', '.join(extra)}")
    seq = msg.get("seq")
    if seq is not None and (not isinstance(seq, int) or isinstance(seq, bool)):
        raise InvalidInput(f"seq must be an integer, got {seq!r}")


class Session:
    """One user's arrays and autograd state; batches are its only door (``run_batch``, or
    ``begin`` for a batch run in slices)."""

    def __init__(
        self, sid: str, owner: str = "anonymous", seed: int | None = None, limits: Limits | None = None
    ) -> None:
        self.id = sid
        self.owner = owner
        self.arrays: dict[int, np.ndarray] = {}
        self.nodes: dict[int, Node] = {}
        self.cx = Context(seed)
        self.F = Eager(self.cx)
        self.R = Recorder(self.cx)
        self.limits = limits or Limits()
        self.seq = 0
        self.last_reply: dict[str, Any] | None = None
        self.last_reply_lent = False  # whether its values are the session's arrays, not copies
        self.reply_bytes = 0  # the copies in the stored reply (counted in ``nbytes``)
        self._reading = 0  # the copies the batch running now read into its reply (counted too)
        self.lock = threading.Lock()
        alloc.tune_malloc()  # once per process: see engine/alloc.py
        # Bytes held, counted by the memory behind the arrays (see ``_hold``): an array a handle
        # owns counts its size; views (a ``getitem``, a ``reshape``, an upload in its request's
        # buffer) count the memory they keep alive once, however many share it; a gradient
        # buffer counts once; an array a live graph still needs after its handle is freed counts
        # until nothing holds it (checked when a limit would be passed, and at a batch's start).
        self.nbytes = 0
        # The nodes of the recorded graphs the session keeps alive, at ``NODE_BYTES`` each: never
        # less than they are. Each node made adds to it, a backward pass that frees its graph
        # takes its nodes off, and a count of the live graph (``recount_graph``) sets it exactly:
        # when it would pass a limit, and when it has doubled since the last count.
        self.graph_bytes = 0
        self._recount_at = GRAPH_RECOUNT_BYTES
        self.aliases: set[int] = set()  # handles given a gradient buffer by ``grad`` (counted with it)
        self.pins: dict[int, list] = {}  # id(memory) -> [memory, holders, counted elsewhere, size]
        # freed arrays still counted while something holds them: id(weakref) -> (the weakref,
        # its bytes or its memory's pin); the weakref's callback queues the id when it dies
        self.held: dict[int, tuple[weakref.ref, Any]] = {}
        self._gone: list[int] = []  # ids of ``held`` whose array died (appended from any thread)
        self.grads: dict[int, np.ndarray] = {}  # id(variable's node) -> the gradient buffer made for it
        self._cap = self.limits.max_array_bytes  # the largest array an op may make without a closer look
        self._in_slice = False  # a batch runs in a slice of a server's event loop (see BatchRun.run)
        self.version = 0  # counts batches run, so a snapshot knows what changed
        self.last_batch_s = 0.0  # how long the last batch held the session (servers schedule by it)
        # told of each batch: (instructions run, error kind, instructions of the programs it called)
        self.on_batch: Callable[[int, str | None, int], None] | None = None
        self.user_bytes: Callable[[], int] | None = None  # bytes of the owner's other sessions
        self.user_reply_bytes: Callable[[], int] | None = None  # of their replies' copies (of user_bytes)
        self._others = 0  # user_bytes() as of this batch's start
        self._budget = self.limits.max_session_bytes  # what self.nbytes may reach in this batch
        self.programs: dict[int, Program] = {}  # defined by ``define``, run by ``call`` (engine/programs.py)
        self.program_steps = 0  # their instructions, all together
        self.program_bytes = 0  # what keeping them costs (``Program.nbytes``), counted as held
        self._steps = 0  # this batch's instructions, each call counting its program's
        self._calling = False  # whether a program runs (its slots are negative handles)

    # -- handles -------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """What ``GET /v1/sessions/{sid}`` says of the session (and the in-process client's ``info()``)."""
        return {
            "id": self.id,
            "owner": self.owner,
            "arrays": len(self.arrays),
            "bytes": self.nbytes - self.reply_bytes,  # what its arrays hold; the stored reply's copies apart
            "reply_bytes": self.reply_bytes,
            "graph_bytes": self.graph_bytes,
            "program_bytes": self.program_bytes,
        }

    def get(self, h: Any) -> np.ndarray:
        x = self.arrays.get(h) if type(h) is int else None
        if x is None:
            if type(h) is not int:
                raise InvalidInput(f"a handle is an integer, got {h!r}")
            raise UnknownHandle(f"unknown handle {h!r}")
        return x

    def put(self, h: Any, value: np.ndarray, alias: bool = False, holders: tuple = ()) -> None:
        """Give handle ``h`` the array ``value``: its own (counted by ``_hold``), or with
        ``alias`` a gradient buffer's second name (counted with the buffer)."""
        if not isinstance(h, int) or isinstance(h, bool) or (h < 0 and not self._calling) or h > MAX_HANDLE:
            raise InvalidInput(f"output handle must be an integer from 0 to 2**63 - 1, got {h!r}")
        if h in self.arrays:
            raise InvalidInput(f"handle {h} is already in use")
        # (a second name is a handle too; a call counts its outputs before it starts)
        if len(self.arrays) >= self.limits.max_session_arrays and h >= 0 and not self._calling:
            raise _too_many_arrays(self)
        self.arrays[h] = value
        if alias:
            self.aliases.add(h)
            self._pin(value, (_memory(value),))  # (counted with its variable)
        else:
            self._hold(value, holders)

    def _hold(self, y: np.ndarray, holders: Any = ()) -> None:
        """Count an array a handle now holds (``holders``: arrays the session holds already,
        such as the op's inputs, whose memory a view may share)."""
        if y.base is None:
            self.nbytes += y.nbytes
        else:
            self._pin(y, holders)

    def _pin(self, y: np.ndarray, holders: Any) -> None:
        """One more holder of the memory behind ``y``, counted once: not at all while an array
        owning that memory itself (one of ``holders``) is counted for it."""
        m = _memory(y)
        e = self.pins.get(id(m))
        if e is not None:
            e[1] += 1
            return
        owned = False
        for x in holders:
            if x is m:
                owned = True
        size = _size(m)
        self.pins[id(m)] = [m, 1, owned, size]
        if not owned:
            self.nbytes += size

    def _unpin(self, m: Any) -> None:
        e = self.pins.get(id(m))
        if e is None:
            return
        e[1] -= 1
        if e[1] == 0:
            del self.pins[id(m)]
            if not e[2]:
                self.nbytes -= e[3]

    def drop(self, h: int) -> None:
        """Forget handle ``h``. What its array (or its variable's gradient buffer) counted
        stays counted while anything else holds it (a recorded graph, a stored reply, views
        of it): until a sweep finds it gone."""
        self._forget_node(h)  # (an op node holds the array: let go before counting who else does)
        v, refs = _pop_refs(self.arrays, h)
        if v is None:
            return
        if h in self.aliases:  # a ``grad`` handle: the buffer is counted with its variable
            self.aliases.discard(h)
            self._unpin(_memory(v))
        elif refs > _ALONE:
            self._hold_until_gone(v, _memory(v) if v.base is not None else v.nbytes)
        else:
            self._unhold(v)

    def _unhold(self, v: np.ndarray) -> None:
        """Stop counting what ``_hold`` counted for ``v``."""
        if v.base is None:
            self.nbytes -= v.nbytes
        else:
            self._unpin(_memory(v))

    def _forget_node(self, h: int) -> None:
        """Take handle ``h``'s place in the graph away; a variable's node is let go."""
        old, refs = _pop_refs(self.nodes, h)
        if old is not None and old.op is None:
            self._let_go(old, refs > _ALONE)

    def _let_go(self, n: Node, shared: bool) -> None:
        """A variable's node is no longer a handle's: its gradient buffer (if the session made
        it) stops counting, or, while something else holds the node or the buffer, once
        nothing does."""
        g, refs = _pop_refs(self.grads, id(n))
        if g is None:
            return
        if shared or refs > _ALONE + 1:  # (+1: n holds it)
            self._hold_until_gone(g, g.nbytes)
        else:
            self.nbytes -= g.nbytes

    def _hold_until_gone(self, v: np.ndarray, what: Any) -> None:
        """Keep counting ``what`` (bytes, or a memory to unpin) until ``v`` dies."""
        gone = self._gone
        r = weakref.ref(v, lambda r: gone.append(id(r)))
        self.held[id(r)] = (r, what)

    def sweep(self) -> None:
        """Stop counting what nothing holds any more (arrays a freed graph needed): what died
        since the last sweep, and what dies of that (a view's memory after the view)."""
        gone, held = self._gone, self.held
        while gone:
            e = held.pop(gone.pop(), None)
            if e is None:
                continue
            what = e[1]
            e = None
            if type(what) is int:
                self.nbytes -= what
            else:
                self._unpin(what)
            what = None

    def count_graph(self, head: Node) -> None:
        """Count the arrays a graph recorded by a backward pass (``create_graph``) holds that
        nothing counts yet (the pass's intermediates), until each dies."""
        counted: set[int] = {id(_memory(x)) for x in self.arrays.values()}
        counted.update(id(g) for g in self.grads.values())
        for r, _ in self.held.values():
            x = r()
            if x is not None:
                counted.add(id(x))
        for n in tape.toposort([head]):
            for x in (n.y, *(n.xs or ())):
                if isinstance(x, np.ndarray) and id(x) not in counted and id(_memory(x)) not in counted:
                    counted.add(id(x))
                    self.nbytes += x.nbytes
                    self._hold_until_gone(x, x.nbytes)

    def set_node(self, h: int, node: Node) -> None:
        """Give handle ``h`` its place in the graph (a variable's node it had is let go)."""
        self._forget_node(h)
        self.nodes[h] = node

    def variable(self, h: int, grad: np.ndarray, req: str) -> None:
        """Make handle ``h`` a variable whose gradient buffer is ``grad``, a new array the
        session counts from now on."""
        n = Node(grad=grad, grad_req=req)
        self.set_node(h, n)
        self.grads[id(n)] = grad
        self.nbytes += grad.nbytes

    def check_alloc(self, nbytes: int, extra: int = 0) -> None:
        """Refuse an allocation that would pass a limit (before it is made); ``extra``: bytes
        held with it that are not an array (a node of the graph)."""
        lim = self.limits
        if nbytes > lim.max_array_bytes:
            raise QuotaExceeded(f"an array of {nbytes} bytes is over the limit of {lim.max_array_bytes} per array")
        nbytes += extra
        if self.room(nbytes):
            return
        held = self.held_bytes()
        graph = f" (its recorded graphs' nodes {self.graph_bytes} of them)" if self.graph_bytes else ""
        if held + nbytes > lim.max_session_bytes:
            raise QuotaExceeded(
                f"session would hold {held + nbytes} bytes{graph}, over its limit of {lim.max_session_bytes}"
            )
        raise QuotaExceeded(
            f"user {self.owner!r} would hold {self._others + held + nbytes} bytes in all sessions{graph}, "
            f"over the limit of {lim.max_user_bytes}"
        )

    def held_bytes(self) -> int:
        """What the quotas count: the arrays' bytes, the recorded graphs' nodes, the programs."""
        return self.nbytes + self.graph_bytes + self.program_bytes

    def hold_program(self, nbytes: int) -> None:
        """Count (or with a negative ``nbytes``, stop counting) a program kept."""
        self.program_bytes += nbytes
        self._refresh_budget()

    def room(self, nbytes: int) -> bool:
        """Whether the session and its owner have room for ``nbytes`` more."""
        if self._gone and self.nbytes + self.graph_bytes + nbytes > self._budget:
            self.sweep()
        if self.graph_bytes and self.nbytes + self.graph_bytes + nbytes > self._budget:
            self.recount_graph()
        self._refresh_budget()
        lim = self.limits
        held = self.nbytes + self.graph_bytes + self.program_bytes + nbytes
        return held <= lim.max_session_bytes and self._others + held <= lim.max_user_bytes

    def made_nodes(self, k: int, extra: int = 0) -> None:
        """Count ``k`` nodes just recorded, and ``extra`` bytes they keep besides (a Function's
        backward program: ``node_extra``); see ``graph_bytes``."""
        self.graph_bytes += k * NODE_BYTES + extra
        if self.graph_bytes >= self._recount_at:
            self.recount_graph()

    def released(self, order: list[Node]) -> None:
        """Free the graph of a backward pass (``tape.release``) and take its nodes off the
        count; a client's Function's node lets its backward program go, and the count is
        made again (what the program held is not known node by node)."""
        functions = False
        for n in order:
            op = n.op
            if isinstance(op, FunctionVJP) and n.live:
                op.program = []
                functions = True
        self.graph_bytes = max(0, self.graph_bytes - tape.release(order) * NODE_BYTES)
        if functions:
            self.recount_graph()

    def recount_graph(self) -> None:
        """Set ``graph_bytes`` from the live graph: the op nodes the handles' nodes reach."""
        seen: set[int] = set()
        programs: set[int] = set()  # (a Function's outputs share its backward program)
        extra = 0
        stack = [n for n in self.nodes.values() if n.op is not None and n.live]
        turns = 0
        since = time.perf_counter()
        while stack:
            n = stack.pop()
            if id(n) in seen:
                continue
            seen.add(id(n))
            turns += 1
            if turns % SHARE_EVERY == 0:
                since = share_gil(since)
            op = n.op
            if isinstance(op, FunctionVJP):
                if id(op.program) not in programs:
                    programs.add(id(op.program))
                    extra += op.nbytes
            for p in n.parents:
                if p is not None and p.op is not None and p.live and id(p) not in seen:
                    stack.append(p)
        self.graph_bytes = len(seen) * NODE_BYTES + extra
        self._recount_at = 2 * self.graph_bytes + GRAPH_RECOUNT_BYTES

    def _refresh_budget(self) -> None:
        """What ``nbytes`` may reach before ``check_alloc`` looks again (the per-op path checks
        only this). The owner's other sessions may run batches at the same time: their bytes are
        read again each time this session's have grown by a 256th of the user's limit, so
        sessions running together pass that limit by at most as much each."""
        lim = self.limits
        progs = self.program_bytes  # (the per-op path compares nbytes and graph_bytes only)
        if self.user_bytes is None:
            self._others = 0
            self._budget = min(lim.max_session_bytes, lim.max_user_bytes) - progs
            return
        self._others = self.user_bytes()
        self._budget = min(
            lim.max_session_bytes - progs,
            lim.max_user_bytes - self._others - progs,
            self.nbytes + self.graph_bytes + lim.max_user_bytes // 256,
        )

    # -- batches -------------------------------------------------------------

    def run_batch(self, msg: Any, copy_reads: bool = True) -> dict[str, Any]:
        """Apply a batch in order until an instruction fails; replay retries.

        The reply is ``{"seq", "values": [tensors read], "error"?: {...}}``.
        Instructions before a failing one have taken effect; it and the ones
        after it have not. With ``copy_reads`` false, the reads that end the
        batch give the session's arrays themselves (nothing after them in the
        batch can change them, but a later batch can): a caller that sends them
        without a copy uses ``begin`` and finishes the run once they are sent.
        """
        run = self.begin(msg, copy_reads)
        if not isinstance(run, BatchRun):
            return run  # type: ignore[return-value]  # a retry, answered with its first reply
        try:
            run.run()
        except BaseException:
            run.abort()
            raise
        return run.finish()

    def begin(self, msg: Any, copy_reads: bool = True, blocking: bool = True) -> BatchRun | dict[str, Any] | None:
        """Check a batch's envelope and take the session for it: a ``BatchRun`` to run and
        finish (it holds the session's lock until then), or the stored reply of a retry.
        With ``blocking`` false, None when another batch or a snapshot holds the session."""
        check_envelope(msg, self.limits.max_batch_ops)
        seq = msg.get("seq")
        ops = msg["ops"]
        if not self.lock.acquire(blocking):
            return None
        try:
            if self.programs and not (seq is not None and seq == self.seq and self.last_reply is not None):
                self._check_steps(ops)
            if seq is not None:
                if seq == self.seq and self.last_reply is not None:
                    if self.last_reply_lent and not blocking:
                        if sum(v.nbytes for v in self.last_reply["values"]) > SLICE_ARRAY_BYTES:
                            self.lock.release()
                            return None  # copied in a thread, not on a server's event loop
                    if self.last_reply_lent:  # its reply is written after the lock is let go: copies
                        self._copy_stored_reply()
                    self.lock.release()
                    return self.last_reply
                if seq != self.seq + 1:
                    raise SequenceError(SequenceError.message(self.seq, seq))
                self.last_reply = None  # its client has it (no retry of it can come now): free it
                self.nbytes -= self.reply_bytes
                self.reply_bytes = 0
            elif self.last_reply_lent and self.last_reply is not None:
                # A batch outside the sequence (another caller) may change the arrays that the
                # stored reply lent: a retry must still get what was read, so keep copies.
                self._copy_stored_reply()
            self._reading = 0
            self.version += 1
            self._steps = len(ops)
            if self._gone:
                self.sweep()
            self._refresh_budget()
            return BatchRun(self, ops, seq, copy_reads)
        except BaseException:
            self.lock.release()
            raise

    def _check_steps(self, ops: list) -> None:
        """Refuse, before any of it runs, a batch whose calls of the programs defined already
        would pass ``max_batch_steps`` (it stopped part way, its first calls run). Calls of a
        program the batch itself defines are checked as they come (engine/programs.py)."""
        n = len(ops)
        programs = self.programs
        changed: set[Any] = set()  # ids the batch defines or forgets: their calls are checked as they come
        for ins in ops:
            if type(ins) is not dict:
                continue
            name = ins.get("op")
            at = ins.get("at")
            if type(at) is not dict:
                continue
            if name == "call":
                pid = at.get("id")
                prog = programs.get(pid) if type(pid) is int and pid not in changed else None
                if prog is not None:
                    n += len(prog.steps)
            elif name == "define":
                pid = at.get("id")
                if type(pid) is int:  # (any other id is the define's own error, as it runs)
                    changed.add(pid)
            elif name == "forget" and type(at.get("ids")) is list:
                changed.update(i for i in at["ids"] if type(i) is int)
        if n > self.limits.max_batch_steps:
            raise QuotaExceeded(
                f"the batch would run {n} instructions with its calls, over the limit of "
                f"{self.limits.max_batch_steps}: split it"
            )

    def _copy_stored_reply(self) -> None:
        """The stored reply's values as copies of the arrays it lent (one per array, however
        often it was read), counted while the reply is kept."""
        last = self.last_reply
        assert last is not None
        lent = {id(a) for a in self.arrays.values()} | {id(n.grad) for n in self.nodes.values() if n.grad is not None}
        copies: dict[int, np.ndarray] = {}
        for v in last["values"]:
            if id(v) not in copies:
                if id(v) in lent:  # (values read before the batch's last instruction are copies already)
                    copies[id(v)] = np.array(v)
                    self.reply_bytes += v.nbytes
                    self.nbytes += v.nbytes
                else:
                    copies[id(v)] = v
        self.last_reply = {**last, "values": [copies[id(v)] for v in last["values"]]}
        self.last_reply_lent = False

    def execute(self, ins: dict, values: list) -> None:
        """Run one instruction (the caller sets numpy's error state once per batch)."""
        name = ins["op"]
        op = _OPS_GET(name) if isinstance(name, str) else None
        hs = ins.get("in")
        if hs is not None and type(hs) is not list and type(hs) is not tuple:  # (a map's keys are no handles)
            raise InvalidInput(f"{name}: 'in' must be a list of handles, got {type(hs).__name__}")
        if op is None:
            cmd = COMMANDS.get(name) if isinstance(name, str) else None
            if cmd is None:
                OPS[name]  # raises the table's "unknown op" error
            cmd(self, ins, values)  # type: ignore[misc]
            return
        ins_h = () if hs is None else hs
        if len(ins_h) != op.nin:  # also true for every variadic op (nin -1)
            op.check_arity(len(ins_h))
        arrays = self.arrays
        xs = []
        for h in ins_h:
            x = arrays.get(h) if type(h) is int else None
            if x is None:
                if type(h) is not int:
                    raise InvalidInput(f"{name}: a handle is an integer, got {h!r}")
                raise UnknownHandle(f"{name}: unknown handle {h!r}")
            xs.append(x)
        raw = ins.get("at")
        at = op.parse(raw)  # type: ignore[misc]  # every op of the table has its parser
        if op.like:  # the output is shaped and typed as the input: nothing to infer
            n = xs[0].nbytes
        else:
            specs = []
            for x in xs:
                specs.append(_new_spec(Spec, (x.shape, dtype_name(x.dtype))))
            spec = op.infer(at, *specs)
            if len(spec.shape) > MAX_NDIM:  # (getitem's new axes, expand_dims, stack, dot...)
                raise ShapeError(over_rank(name, len(spec.shape)))
            n = _ITEMSIZE.get(spec.dtype) or _itemsize(spec.dtype)
            for d in spec.shape:
                n *= d
            if n == 0 and spec.shape and max(spec.shape) > MAX_DIM:  # (an empty array's other axes)
                raise ShapeError(f"{name}: an axis of {max(spec.shape)} in {spec.shape} is over the limit of {MAX_DIM}")
            if op.scratch is not None or op.work is not None:
                self._check_costly(op, at, specs, n)
        mode = _mode(name, ins)
        # the exact check only where there may be more fields than the ones seen (op, out, and
        # in, at, mode where given): a lower bound of the known ones present, at no cost
        if len(ins) > 2 + (len(ins_h) != 0) + (raw is not None) + (mode != 0):
            _check_fields(name, ins)
        kept = 0
        if (
            op.keeps is not None
            and mode & RECORDING
            and op.keeps(at, mode & TRAINING != 0)
            and tape.in_graph(self.nodes.get(ins_h[0]))
        ):
            kept = n  # its node keeps an array (Dropout's mask), at most its output's size, for the VJP
        node = NODE_BYTES if mode & RECORDING and op.vjp is not None else 0  # (if an input is in a graph)
        late = False
        if n > self._cap or self.nbytes + self.graph_bytes + n + kept + node > self._budget:
            if n > self._cap and n <= self.limits.max_array_bytes:
                raise _SliceEnds  # (in a slice of the event loop: see BatchRun.run)
            if op.view and n <= self.limits.max_array_bytes and _gives_view(op, at, xs):
                late = True  # a view adds nothing: its memory is checked once made
            else:
                self.check_alloc(n + kept, node)
        out = ins.get("out")
        if type(out) is not list or len(out) != 1:
            got = f"{len(out)} handles" if type(out) is list else "no 'out' list"
            raise InvalidInput(f"{name} makes 1 output: give its handle as 'out': [h] (got {got})")
        h = out[0]
        if type(h) is not int or (h < 0 and not self._calling) or h > MAX_HANDLE:
            raise InvalidInput(f"output handle must be an integer from 0 to 2**63 - 1, got {h!r}")
        if h in arrays:
            raise InvalidInput(f"handle {h} is already in use (free it first, or name another)")
        if len(arrays) >= self.limits.max_session_arrays and h >= 0:
            raise _too_many_arrays(self)
        key, size = _timing(op, at, xs, n, None if op.like else specs)
        if key is not None:
            _judge_in_slice(self, key, size, xs[0] if op.name in _VALUE_COSTLY else None)
        cx = self.cx
        cx.training = mode & TRAINING != 0
        if key is None:
            y = op.forward(cx, at, *xs)
        else:
            started = time.perf_counter_ns()
            y = op.forward(cx, at, *xs)
            _timed(key, size, time.perf_counter_ns() - started)
        for x in xs:
            if y is x:  # (a forward that gives back its input, round of an int array: a copy of its own)
                y = y.copy()
        arrays[h] = y
        if y.base is None:
            self.nbytes += y.nbytes
        else:
            self._pin(y, xs)
        if late and not self.room(node):  # a copy after all: taken back
            del arrays[h]
            self._unhold(y)
            self.check_alloc(n, node)  # raises, saying which limit
        if mode & RECORDING and op.vjp is not None:
            self.link(op, at, ins_h, xs, h, y)
            if kept:
                self.keep(at)

    def _check_costly(self, op: Op, at: dict, specs: list, n: int) -> None:
        """An op whose working arrays or multiply-adds are large: its working arrays are
        refused past the session's room, as its output would be (they are memory it holds
        while it runs); in a slice of the event loop, it is left for the thread that runs the
        rest of the batch when either would take the loop long. (A hook gives the sum of an
        op's working arrays, not the largest: the per-array limit is its output's only.)"""
        tmp = op.scratch(at, *specs) if op.scratch is not None else 0
        if tmp and not self.room(n + tmp):
            raise QuotaExceeded(
                f"{op.name}: it would hold {self.nbytes + n + tmp} bytes while it runs (its working array of "
                f"{tmp} bytes too), over the session's or its user's limit"
            )
        if self._in_slice and not self._calling:  # (a program's call runs whole wherever it starts)
            if tmp > self._cap or (op.work is not None and op.work(at, *specs) > SLICE_WORK):
                raise _SliceEnds

    def keep(self, at: dict) -> None:
        """Count the array a recorded op's forward left in ``at["_kept"]`` (Dropout's mask; its
        node keeps it for the backward pass) until it dies with the graph."""
        kept = at.get("_kept")
        if kept is not None:
            self.nbytes += kept.nbytes
            self._hold_until_gone(kept, kept.nbytes)

    def link(self, op: Op, at: dict, ins_h: Any, xs: list, h: int, y: np.ndarray) -> None:
        """Record ``h`` (made by ``op``) in the graph when an input is in it."""
        nodes = self.nodes
        if len(ins_h) == 1:
            p = nodes.get(ins_h[0])
            if p is not None and p.live:
                nodes[h] = Node(op, at, (p,), (xs[0],), y)
                self.made_nodes(1)
            return
        parents: list[Node | None] | None = None
        for i, hi in enumerate(ins_h):
            p = nodes.get(hi)
            if p is not None and p.live:
                if parents is None:
                    parents = [None] * len(ins_h)
                parents[i] = p
        if parents is not None:
            nodes[h] = Node(op, at, tuple(parents), tuple(xs), y)
            self.made_nodes(1)

    def node(self, h: int) -> Node | None:
        self.get(h)
        return self.nodes.get(h)


# --------------------------------------------------------------------------
# the per-op hot path: the table's checks, without its slow generic helpers

_OPS_GET = OPS.get
_ITEMSIZE: dict[str, int] = {}


def _itemsize(dtype: str) -> int:
    n = _ITEMSIZE[dtype] = np.dtype(dtype).itemsize
    return n


_new_spec = tuple.__new__  # Spec(shape, dtype) without the named tuple's Python-level __new__


MAX_ECHO: Final = 1000
"""An error's message and op name are cut to this many characters (they may quote what was sent)."""


def error_body(e: MXNetError, index: int | None, ins: Any) -> dict[str, Any]:
    op = ins.get("op") if isinstance(ins, dict) else None
    if isinstance(op, str) and len(op) > MAX_ECHO:
        op = op[:MAX_ECHO] + "..."
    elif op is not None and not isinstance(op, str):
        op = None  # (not an op's name: the message says what it was)
    message = str(e)
    if len(message) > MAX_ECHO:
        message = message[:MAX_ECHO] + f"... ({len(message)} characters)"
    return {"kind": e.kind, "message": message, "index": index, "op": op}


# --------------------------------------------------------------------------
# commands


def _one(ins: dict, name: str) -> int:
    h = ins.get("in", ())
    if len(h) != 1:
        raise InvalidInput(f"{name} takes exactly one input handle")
    return h[0]


GRAD_REQ = Attr("grad_req", "str", "write")


@command("attach_grad", "data", (GRAD_REQ,), "Make the array a variable with a zeroed gradient buffer.")
def _attach_grad(s: Session, ins: dict, values: list) -> None:
    h = _one(ins, "attach_grad")
    x = s.get(h)
    req = ins["at"]["grad_req"]
    if req not in tape.GRAD_REQS:
        raise InvalidInput(f"attach_grad: grad_req must be one of {tape.GRAD_REQS}, got {req!r}")
    s.check_alloc(x.nbytes)
    s.variable(h, np.zeros_like(x), req)


@command("grad", "data", (), "Give the output handle the array's gradient buffer (shared, not copied).")
def _grad(s: Session, ins: dict, values: list) -> None:
    h = _one(ins, "grad")
    n = s.node(h)
    if n is None or n.op is not None or n.grad is None:
        raise AutogradError(f"grad: handle {h} has no gradient attached (call attach_grad first)")
    s.put(ins["out"][0], n.grad, alias=True)


@command(
    "alias",
    "data",
    (),
    "Give the output handle the array itself (shared, not copied) and its place in the graph: a "
    "second name for it, freed on its own (its memory counts once while either name holds it).",
)
def _alias(s: Session, ins: dict, values: list) -> None:
    h = _one(ins, "alias")
    x = s.get(h)
    out = ins.get("out")
    if type(out) is not list or len(out) != 1:
        raise InvalidInput("alias makes exactly one output handle")
    s.put(out[0], x.view(), holders=(x,))  # counted once with x: the memory lives while either name does
    n = s.nodes.get(h)
    if n is not None:
        s.nodes[out[0]] = n


def _heads_and_grads(s: Session, ins: dict, create_graph: bool) -> tuple[list[Node], list[Any]]:
    heads_h = list(ins.get("in", ()))
    hg_h = ins["at"]["head_grads"] or [None] * len(heads_h)
    if len(hg_h) != len(heads_h):
        raise InvalidInput("backward: head_grads must have one entry per head")
    heads = tape.check_heads(s.node(h) for h in heads_h)
    grads: list[Any] = []
    for h, g in zip(heads_h, hg_h):
        y = s.get(h)
        if g is None:
            gv, gn = np.ones_like(y), None
        else:
            gv, gn = s.get(g), s.nodes.get(g)
            if gv.shape != y.shape:
                raise InvalidInput(f"backward: head gradient shape {gv.shape} does not match head shape {y.shape}")
            if gv.dtype != y.dtype:  # (MXNet refuses it too)
                got, want = dtype_name(gv.dtype), dtype_name(y.dtype)
                raise DTypeError(f"backward: head gradient dtype {got} does not match head dtype {want}")
        grads.append(Traced(gv, gn if tape.in_graph(gn) else None) if create_graph else gv)
    return heads, grads


def _gives_view(op: Op, at: dict, xs: list[Any]) -> bool:
    """Whether a ``view`` op gives a view of ``xs[0]`` here (getitem: for a view key alone)."""
    if op.name != "getitem":
        return True
    return len(xs) == 1 and _ops.is_view_key(_ops.parse_key("getitem", at["key"], 0), xs[0].shape)


def _pop_refs(d: dict, k: Any) -> tuple[Any, int]:
    """``d.pop(k, None)`` and how many references its value has as seen here: more than
    ``_ALONE`` means something besides ``d`` held it."""
    v = d.pop(k, None)
    if v is None:
        return None, 0
    return v, sys.getrefcount(v)


_ALONE: Final = _pop_refs({0: object()}, 0)[1]  # (the same code, compiled or not, counts the same)


def _memory(x: Any) -> Any:
    """The object whose lifetime keeps an array's memory: the array itself, or the root of
    the bases its views share (an array, or the buffer an upload was read into); anything
    that is not an array, itself."""
    b = getattr(x, "base", None)
    if b is None:
        return x
    while True:
        if isinstance(b, np.ndarray) and b.base is not None:
            b = b.base
        elif isinstance(b, memoryview):  # a piece of a request's buffer keeps all of it
            b = b.obj
        else:
            return b


def _size(m: Any) -> int:
    if isinstance(m, np.ndarray):
        return int(m.nbytes)
    try:
        return memoryview(m).nbytes
    except TypeError:
        return 0  # (no such base comes from the table or the wire)


_np_dot = np.dot


class GradSinks:
    """Where a first-order backward pass computes a variable's gradient straight into its
    buffer (grad_req "write"), saving the copy of the weight's size that writing it after the
    pass costs: a ``dot``'s gradient (``Deferred(np.dot, (a, b))``, ``dot``'s eager VJP)
    becomes ``np.dot(a, b, buffer)``, once per buffer; a second contribution is added into a
    new array and copied in after the pass, as before. A buffer whose memory the graph reads
    (an input or output of a recorded op, a head gradient) or another variable's buffer shares
    is left alone, and so is every buffer when a user's Function is in the graph (its backward
    reads the session's arrays). A pass that fails part way (an error in a table VJP: none is
    expected once the forward ran) may have written a buffer so far."""

    __slots__ = ("bufs", "order", "head_grads", "checked")

    def __init__(self, variables: list[Node], order: list[Node], head_grads: list[Any]) -> None:
        seen: set[int] = set()
        shared: set[int] = set()  # buffers that variables share (mark_variables): written after, in order
        for v in variables:
            o = id(_memory(v.grad))
            (shared if o in seen else seen).add(o)
        self.bufs = {v: v.grad for v in variables if v.grad_req == "write" and id(_memory(v.grad)) not in shared}
        self.order = order
        self.head_grads = head_grads
        self.checked = False  # the graph is looked at on the first dot (most passes have none)

    def _check(self) -> None:
        self.checked = True
        read = {id(_memory(g)) for g in self.head_grads}
        turns = 0
        since = time.perf_counter()
        for n in self.order:  # a long graph: let waiting threads run now and then (tape.share_gil)
            turns += 1
            if turns % SHARE_EVERY == 0:
                since = share_gil(since)
            if n.op is None:
                continue
            if isinstance(n.op, FunctionVJP):
                self.bufs.clear()
                return
            read.add(id(_memory(n.y)))  # VJPs read outputs too (exp's: g * y)
            for x in n.xs or ():
                read.add(id(_memory(x)))
        for v in [v for v, buf in self.bufs.items() if id(_memory(buf)) in read]:
            del self.bufs[v]

    def __call__(self, parents: tuple[Node | None, ...], cts: Any) -> Any:
        if not self.bufs:
            return cts
        out = None
        for i in range(min(len(cts), len(parents))):
            ct = cts[i]
            p = parents[i]
            if type(ct) is not tape.Deferred or ct.fn is not _np_dot or p is None or p not in self.bufs:
                continue
            if not self.checked:
                self._check()
                if p not in self.bufs:
                    continue
            buf = self.bufs.pop(p)
            if len(ct.args) != 2:
                continue
            a, b = ct.args
            if (
                a.ndim == 2
                and b.ndim == 2
                and a.dtype == buf.dtype
                and b.dtype == buf.dtype
                and buf.shape == (a.shape[0], b.shape[1])
                and buf.flags.c_contiguous
                and buf.flags.writeable
            ):
                if out is None:
                    out = list(cts)
                out[i] = tape.Deferred(_np_dot, (a, b, buf), ct.cost)
        return cts if out is None else out


BACKWARD_NODE_NS: Final = 3_000
"""A backward pass's bookkeeping per node (its VJP's call, cotangents), besides the VJP's work."""


def _backward_ns(order: list[Node]) -> float:
    """How long a backward pass over ``order`` is expected to take: twice its ops' forward
    times as last measured (a VJP makes about two of its op's outputs), or inf when one
    large op of it has not been timed, or it holds a client's Function (its backward is a
    program of any length)."""
    total = 0.0
    for node in order:
        op = node.op
        if op is None:
            total += BACKWARD_NODE_NS
            continue
        if not isinstance(op, Op) or node.xs is None:
            return float("inf")
        key, size = _timing(op, node.at, node.xs, node.y.nbytes if isinstance(node.y, np.ndarray) else 0)
        total += (0.0 if key is None else 2 * _expected_ns(key, size)) + BACKWARD_NODE_NS
    return total


def check_backward_room(s: Session, order: list[Node], create_graph: bool = False) -> None:
    """Refuse, before it starts, a backward pass whose largest working arrays would pass the
    session's room: an op's VJP that makes arrays many times its graph's (Pooling's and
    Convolution's windows: a 48 x 48 pool's are 2,304 times its input; an integer pow's float64
    temporaries) says how large in the op table (``vjp_scratch``); a recorded pass
    (create_graph) holds about twice as much. A pass's cotangents (each the size of an array
    its graph holds, counted already) are not counted again. (Each working array is no larger
    than the forward's, which the per-array limit allowed when it was recorded.)"""
    need = 0
    for node in order:
        hook = getattr(node.op, "vjp_scratch", None)  # (a client's autograd.Function has none)
        if hook is not None and node.xs is not None:
            specs = [_new_spec(Spec, (x.shape, dtype_name(x.dtype))) for x in node.xs]
            need = max(need, int(hook(node.at, *specs)))
    if create_graph:
        need *= 2
    if need and not s.room(need):
        raise QuotaExceeded(
            f"backward: its working arrays of {need} bytes would pass the session's limit of "
            f"{s.limits.max_session_bytes} (or its user's of {s.limits.max_user_bytes}) with {s.nbytes} held: "
            "free arrays first"
        )


def _run_backward(
    s: Session,
    heads: list[Node],
    grads: list[Any],
    create_graph: bool,
    training: bool,
    order: list[Node],
    into: GradSinks | None = None,
) -> list[tuple[Node, Any]]:
    if s._in_slice and not s._calling and _backward_ns(order) > SLICE_NS:
        raise _SliceEnds  # (nothing computed yet: the thread that runs the rest of the batch runs it)
    check_backward_room(s, order, create_graph)
    s.cx.training = training
    with np.errstate(all="ignore"):
        if create_graph:
            return tape.backward(s.R, heads, grads, s.R.add, traced_args, order=order)
        # eager VJPs are numpy code (and numba kernels): another array module uses the table's
        eager = s.cx.xp is np
        helpers = parallel.helpers() if eager else None
        if not eager:
            into = None
        return tape.backward(s.F, heads, grads, np.add, eager=eager, order=order, helpers=helpers, into=into)


def _large_graph(s: Session) -> None:
    """In a slice, leave a backward pass to the thread before its graph is walked when the
    session's live graph alone (``graph_bytes``, never less than it) has more nodes than a
    slice has time for (walking 200,000 took 270 ms)."""
    if s._in_slice and not s._calling and s.graph_bytes > SLICE_NS // BACKWARD_NODE_NS * NODE_BYTES:
        raise _SliceEnds


@command(
    "backward",
    "heads...",
    (Attr("head_grads", "key", None), Attr("retain_graph", "bool", False)),
    "Backpropagate from the heads (gradient of their sum, or of head_grads), into the variables' buffers.",
)
def _backward(s: Session, ins: dict, values: list) -> None:
    _large_graph(s)
    heads, grads = _heads_and_grads(s, ins, False)
    order = tape.toposort(heads)
    variables = [n for n in order if n.op is None]
    if all(v.grad_req == "null" for v in variables):
        raise AutogradError(NO_INPUTS)  # as MXNet: before anything is computed or freed
    sinks = GradSinks(variables, order, grads)
    into = sinks if sinks.bufs else None  # (no buffer to write: the pass runs without the hook)
    pairs = _run_backward(s, heads, grads, False, bool(ins.get("mode", 0) & TRAINING), order, into)
    for var, g in pairs:
        if var.grad_req == "write":
            if g is not var.grad:  # else computed into it (GradSinks)
                var.grad[...] = g
        elif var.grad_req == "add":
            var.grad += g
    if len(pairs) < len(variables):  # in the graph, but no gradient flowed there: zero, as MXNet writes
        reached = {id(v) for v, _ in pairs}
        for var in variables:
            if id(var) not in reached and var.grad_req == "write":
                var.grad[...] = 0
    if not ins["at"]["retain_graph"]:
        s.released(order)


@command(
    "grad_of",
    "heads...",
    (
        Attr("variables", "ints", REQUIRED),
        Attr("head_grads", "key", None),
        Attr("retain_graph", "bool", None),
        Attr("create_graph", "bool", False),
    ),
    "Gradients of the heads with respect to variables, as new arrays in out (autograd.grad); "
    "with create_graph they are in the graph themselves.",
)
def _grad_of(s: Session, ins: dict, values: list) -> None:
    _large_graph(s)
    at = ins["at"]
    var_h = list(at["variables"])
    out = list(ins.get("out", ()))
    if len(out) != len(var_h):
        raise InvalidInput("grad_of: one output handle per variable is needed")
    for h in out:
        if not isinstance(h, int) or isinstance(h, bool) or h in s.arrays:
            raise InvalidInput(f"grad_of: output handle {h!r} is not a free integer handle")
    if len(set(out)) != len(out):
        raise InvalidInput("grad_of: output handles must be distinct")
    var_nodes = []
    for h in var_h:
        n = s.node(h)
        if n is None or n.op is not None:
            raise AutogradError(f"grad_of: handle {h} is not a variable (call attach_grad first)")
        var_nodes.append(n)
    create = at["create_graph"]
    retain = create if at["retain_graph"] is None else at["retain_graph"]
    heads, grads = _heads_and_grads(s, ins, create)
    order = tape.toposort(heads)
    in_graph = {id(n) for n in order if n.op is None}
    for i, n in enumerate(var_nodes):
        if id(n) not in in_graph:
            raise AutogradError(UNREACHABLE.format(i + 1))
    got = {id(n): g for n, g in _run_backward(s, heads, grads, create, bool(ins.get("mode", 0) & TRAINING), order)}
    s.check_alloc(sum(s.get(vh).nbytes for vh in var_h))  # the gradients it gives (each a variable's size)
    for h, vh, n in zip(out, var_h, var_nodes):
        g = got.get(id(n))
        if g is None:
            s.put(h, np.zeros_like(s.get(vh)))
        elif isinstance(g, Traced):
            s.put(h, g.value.copy())  # a copy: a VJP may pass an input through
            if g.node is not None:
                s.nodes[h] = g.node
                s.count_graph(g.node)
        else:
            s.put(h, np.array(g, copy=True))
    if create:
        s.recount_graph()  # (the recorded pass made nodes of its own)
        if not s.room(0):  # the recorded pass holds more than there is room for: taken back
            over = QuotaExceeded(
                f"grad_of: its recorded pass would leave the session holding {s.held_bytes()} bytes, over its "
                f"limit of {s.limits.max_session_bytes} (or its user's of {s.limits.max_user_bytes} in all sessions)"
            )
            for h in out:
                s.drop(h)
            s.recount_graph()
            raise over
    if not retain:
        s.released(order)


@command(
    "mark_variables",
    "variables... gradients...",
    (Attr("grad_reqs", "key", None),),
    "Make the first half of the inputs variables whose gradient buffers are the second half.",
)
def _mark_variables(s: Session, ins: dict, values: list) -> None:
    hs = list(ins.get("in", ()))
    n = len(hs) // 2
    if not hs or len(hs) % 2:
        raise InvalidInput("mark_variables takes variables followed by as many gradient arrays")
    reqs = ins["at"]["grad_reqs"] or ["write"] * n
    if len(reqs) != n or any(r not in tape.GRAD_REQS for r in reqs):
        raise InvalidInput(f"mark_variables: grad_reqs must be {n} of {tape.GRAD_REQS}")
    pairs = [(s.get(v), s.get(g)) for v, g in zip(hs[:n], hs[n:])]
    for x, g in pairs:
        if x.shape != g.shape or x.dtype != g.dtype:
            raise ShapeError(
                f"mark_variables: gradient {g.shape} {g.dtype} does not match variable {x.shape} {x.dtype}"
            )
    for (_, g), v, r in zip(pairs, hs[:n], reqs):
        s.set_node(v, Node(grad=g, grad_req=r))  # (g counts as its handle's array, and after it while held)


class FunctionVJP:
    """The VJP of a user's ``autograd.Function``: its backward, traced by the
    client into table ops (no code crosses the wire), run on the cotangent of
    output ``k`` (the others zero: a backward is linear in its cotangents)."""

    name = "Function"
    eager_vjp = None  # its backward runs through the table

    def __init__(
        self, session: Session, program: list, cotangents: list[int], gradients: list, outputs: list[np.ndarray], k: int
    ) -> None:
        self.session = session
        self.program = program
        self.cotangents = cotangents
        self.gradients = gradients
        self.outputs = outputs
        self.k = k
        self.nbytes = 0  # what its program keeps (node_extra), counted with its nodes

    def vjp(self, F: Any, at: dict, g: Any, y: Any, *xs: Any) -> tuple[Any, ...]:
        env: dict[int, Any] = {
            h: g if j == self.k else np.zeros_like(self.outputs[j]) for j, h in enumerate(self.cotangents)
        }
        arrays = self.session.arrays

        def arg(h: int) -> Any:
            if h in env:
                return env[h]
            if h not in arrays:
                raise UnknownHandle(f"Function backward: handle {h} was freed")
            return arrays[h]

        for op, ins_h, out_h, op_at in self.program:
            env[out_h] = getattr(F, op.name)(*[arg(h) for h in ins_h], **op_at)
        return tuple(None if h is None else arg(h) for h in self.gradients)


@command(
    "record_function",
    "inputs...",
    (
        Attr("outputs", "ints", REQUIRED),
        Attr("program", "key", REQUIRED),
        Attr("cotangents", "ints", REQUIRED),
        Attr("gradients", "key", REQUIRED),
    ),
    "Attach outputs (computed without recording) to the inputs' graph through a "
    "user Function whose backward is the given list of op instructions.",
)
def _record_function(s: Session, ins: dict, values: list) -> None:
    at = ins["at"]
    in_h = list(ins.get("in", ()))
    outs, cots, grads, prog = list(at["outputs"]), list(at["cotangents"]), at["gradients"], at["program"]
    if not (isinstance(grads, list) and isinstance(prog, list)):
        raise InvalidInput("record_function: outputs, cotangents, gradients and program must be lists")
    if len(cots) != len(outs) or len(grads) != len(in_h):
        raise InvalidInput("record_function: one cotangent per output and one gradient per input are needed")
    if len(prog) > s.limits.max_batch_ops:
        raise QuotaExceeded(f"record_function: program of {len(prog)} ops is over the limit")
    xs = [s.get(h) for h in in_h]
    ys = [s.get(h) for h in outs]
    known = {h for h in cots if isinstance(h, int)}
    if len(known) != len(cots):
        raise InvalidInput("record_function: cotangents must be distinct integer handles")
    compiled = []
    for i, p in enumerate(prog):
        if not isinstance(p, dict) or not isinstance(p.get("op"), str):
            raise InvalidInput(f"record_function: program step {i} is not an instruction")
        op = OPS[p["op"]]  # table ops only: no commands inside a backward
        p_in, p_out = list(p.get("in", ())), list(p.get("out", ()))
        op.check_arity(len(p_in))
        if len(p_out) != 1 or not isinstance(p_out[0], int):
            raise InvalidInput(f"record_function: program step {i} ({op.name}) must name one output")
        for h in p_in:
            if h not in known and h not in s.arrays:
                raise UnknownHandle(f"record_function: program step {i} ({op.name}) reads unknown handle {h!r}")
        compiled.append((op, p_in, p_out[0], op.parse_attrs(p.get("at"))))
        known.add(p_out[0])
    for h in grads:
        if h is not None and h not in known and h not in s.arrays:
            raise UnknownHandle(f"record_function: gradient handle {h!r} is never made")
    parents = tape.parents_of(s.nodes.get(h) for h in in_h)
    if parents is None:
        return
    nbytes = node_extra({"program": compiled})
    s.check_alloc(0, nbytes + len(outs) * NODE_BYTES)  # (its nodes keep the program)
    for k, (h, y) in enumerate(zip(outs, ys)):
        vjp = FunctionVJP(s, compiled, cots, grads, ys, k)
        vjp.nbytes = nbytes
        s.set_node(h, Node(vjp, {}, parents, tuple(xs), y))
    s.made_nodes(len(outs), nbytes)


@command("free", "handles...", (), "Forget handles (unknown ones are ignored, so a retry is harmless).")
def _free(s: Session, ins: dict, values: list) -> None:
    hs = ins.get("in", ())
    if type(hs) is not list or any(type(h) is not int for h in hs):
        raise InvalidInput("free: in must be a list of integer handles")  # before any is freed
    for h in hs:
        s.drop(h)


READ = (Attr("grad", "bool", False),)
_parse_read = attr_parser("read", READ)


@command(
    "read",
    "handles...",
    READ,
    "Return the arrays' values (their gradients when grad is true) in the reply, in order.",
)
def _read(s: Session, ins: dict, values: list) -> None:
    read_values(s, ins.get("in", ()), ins["at"]["grad"], values, copy=True)


def read_values(s: Session, handles: Any, want_grad: bool, values: list, copy: bool) -> None:
    """The arrays of ``handles`` (or their gradients) appended to ``values``, copied or not:
    all of them, or (an error) none."""
    if type(handles) is not list and type(handles) is not tuple:  # (the tail's reads come here directly)
        raise InvalidInput(f"read: 'in' must be a list of handles, got {type(handles).__name__}")
    got = []
    for h in handles:
        x = s.get(h)
        if want_grad:
            n = s.nodes.get(h)
            if n is None or n.op is not None or n.grad is None:
                raise AutogradError(f"read: handle {h} has no gradient attached (call attach_grad first)")
            x = n.grad
        got.append(x)
    if not copy:
        values.extend(got)
        return
    copies: dict[int, np.ndarray] = {}  # one copy of an array read twice by one instruction
    nbytes = 0
    for x in got:
        if id(x) not in copies:
            copies[id(x)] = x
            nbytes += x.nbytes
    # The reply keeps its copies for a retry until the next batch: they may pass the limit of
    # the arrays held (a session at its limit can still read), by as much as that limit once
    # for the session's owner, all its sessions' replies together.
    others = s.user_reply_bytes() if s.user_reply_bytes is not None else 0
    if others + s._reading + nbytes > s.limits.max_session_bytes:
        mine = f"the batch's reply would hold {s._reading + nbytes} bytes of copies"
        theirs = f" (and the user's other replies {others})" if others else ""
        raise QuotaExceeded(f"read: {mine}{theirs}, over the session's limit of {s.limits.max_session_bytes}")
    for k, x in copies.items():
        copies[k] = x.copy()
    s.nbytes += nbytes
    s._reading += nbytes
    values.extend(copies[id(x)] for x in got)


@command(
    "setitem",
    "target [value]",
    (Attr("key", "key", None), Attr("scalar", "float", None), Attr("indices", "int", 0)),
    "Write a value (array input or scalar) into target[key] in place; the last "
    "``indices`` inputs are the key's index arrays.",
)
def _setitem(s: Session, ins: dict, values: list) -> None:
    at = ins["at"]
    n_idx = at["indices"]
    hs = list(ins.get("in", ()))
    if not 0 <= n_idx <= len(hs) - 1:
        raise InvalidInput("setitem: 'indices' must count the index arrays at the end of the inputs")
    idx_h = hs[len(hs) - n_idx :]
    hs = hs[: len(hs) - n_idx]
    if len(hs) not in (1, 2):
        raise InvalidInput("setitem takes a target, at most one value handle, then its index arrays")
    target = s.get(hs[0])
    idx = tuple(s.get(h) for h in idx_h)
    key = _ops.parse_key("setitem", at["key"] or [], n_idx)
    _ops.check_index_dtypes("setitem", (i.dtype for i in idx))
    recording = ins.get("mode", 0) & RECORDING
    if recording and tape.in_graph(s.nodes.get(hs[0])):
        raise AutogradError(INPLACE_IN_GRAPH)
    sub = _ops.key_shape("setitem", target.shape, key, tuple(i.shape for i in idx))
    copied: Node | None = None  # x[:] = v of a recorded v, as MXNet: x becomes a recorded copy of v
    if len(hs) == 2:
        v = s.get(hs[1])
        if recording and tape.in_graph(s.nodes.get(hs[1])):
            if not (_ops.is_whole_key(key) and not idx and _ops.assignable(v.shape, target.shape)):
                raise AutogradError(INPLACE_RECORDING)
            parent: Node = s.nodes[hs[1]]
            value: Any = v  # (Any: numpy's stubs type a reshape's shape as the empty tuple)
            if v.ndim > target.ndim:  # leading axes of length 1 dropped: a recorded reshape first
                kept: Any = tuple(v.shape)[v.ndim - target.ndim :]
                value = v.reshape(kept)
                parent = Node(OPS["reshape"], OPS["reshape"].parse_attrs({"shape": kept}), (parent,), (v,), value)
            if value.shape == target.shape:
                copied = Node(OPS["copy"], {}, (parent,), (value,), target)
            else:  # a broadcast copy, as MXNet's (broadcast_to, then copyto: both recorded)
                wide = OPS["broadcast_to"].parse_attrs({"shape": target.shape})
                copied = Node(OPS["broadcast_to"], wide, (parent,), (value,), target)
        if v.dtype != target.dtype:
            v = v.astype(target.dtype)
    elif at["scalar"] is not None:
        v = _ops.typed_scalar(at["scalar"], target.dtype)
    else:
        raise InvalidInput("setitem needs a value handle or a scalar")
    if not _ops.assignable(np.shape(v), sub):
        raise _ops.not_assignable("setitem", np.shape(v), sub)
    if np.ndim(v) > len(sub):  # leading axes of length 1 (numpy takes none into one element)
        v = np.reshape(v, np.shape(v)[np.ndim(v) - len(sub) :])
    try:
        target[_ops.bind_key(key, idx)] = v
    except IndexError as e:
        raise _ops.IndexOutOfRange(f"setitem: {e}") from None
    if copied is not None:
        made = 1 if copied.parents[0] is s.nodes.get(hs[1]) else 2  # (and a recorded reshape)
        s.set_node(hs[0], copied)
        s.made_nodes(made)


_UPDATES = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "mod": np.mod}


@command(
    "update",
    "target [value]",
    (Attr("fn", "str", REQUIRED), Attr("scalar", "float", None)),
    "target = target fn value, in place (fn: add, sub, mul, div, mod; value an array or a scalar).",
)
def _update(s: Session, ins: dict, values: list) -> None:
    hs = list(ins.get("in", ()))
    at = ins["at"]
    ufunc = _UPDATES.get(at["fn"])
    if ufunc is None:
        raise InvalidInput(f"update: fn must be one of {sorted(_UPDATES)}, got {at['fn']!r}")
    if len(hs) not in (1, 2):
        raise InvalidInput("update takes a target and at most one value handle")
    target = s.get(hs[0])
    if target.dtype.kind == "b":
        raise _ops.no_bool_arithmetic(f"update ({at['fn']})")
    if ins.get("mode", 0) & RECORDING:
        if tape.in_graph(s.nodes.get(hs[0])):
            raise AutogradError(INPLACE_IN_GRAPH)
        if len(hs) == 2 and tape.in_graph(s.nodes.get(hs[1])):
            raise AutogradError(INPLACE_RECORDING)
    if len(hs) == 2:
        v = s.get(hs[1])
        if not _ops.broadcastable(v.shape, target.shape):
            raise _ops.ShapeError(f"update: cannot update shape {target.shape} in place with shape {v.shape}")
    elif at["scalar"] is not None:
        v = _ops.typed_scalar(at["scalar"], target.dtype)
    else:
        raise InvalidInput("update needs a value handle or a scalar")
    # timed as an op is (a mod of 1e300 by 1e-300 takes 2 us an element): in a slice of a
    # server's event loop, one expected past it, or not timed yet, is left for the thread
    size = target.nbytes + (v.nbytes if isinstance(v, np.ndarray) else 0)
    key = ("update", at["fn"], target.dtype.num) if size >= TIMED_BYTES else None
    if key is not None:
        _judge_in_slice(s, key, size, target if ufunc is np.mod else None)
    started = time.perf_counter_ns()
    if ufunc is np.mod:  # (MXNet's mod, not numpy's: see ops._mod)
        target[...] = _ops._mod(np, target, v)
    elif target.dtype.kind in "iu" and ufunc is np.divide:
        target[...] = _ops._int_div(np, target, v)
    else:
        ufunc(target, v, out=target, casting="unsafe")
    if key is not None:
        _timed(key, size, time.perf_counter_ns() - started)


SGD = (
    Attr("lr", "float", REQUIRED),
    Attr("wd", "float", 0.0),
    Attr("rescale_grad", "float", 1.0),
    Attr("clip_gradient", "float", -1.0),
)


@command(
    "sgd_update",
    "weight grad",
    SGD,
    "weight -= lr * (clip(rescale_grad * grad) + wd * weight), in place (MXNet's sgd_update).",
)
def _sgd_update(s: Session, ins: dict, values: list) -> None:
    hs = list(ins.get("in", ()))
    if len(hs) != 2:
        raise InvalidInput("sgd_update takes a weight and a gradient")
    w, g = s.get(hs[0]), s.get(hs[1])
    if w.shape != g.shape or w.dtype != g.dtype or w.dtype.kind != "f":
        raise _ops.ShapeError(f"sgd_update: gradient {g.shape} {g.dtype} does not fit weight {w.shape} {w.dtype}")
    if ins.get("mode", 0) & RECORDING and tape.in_graph(s.nodes.get(hs[0])):
        raise AutogradError(INPLACE_IN_GRAPH)
    at = ins["at"]
    kernels.sgd_update(w, g, at["lr"], at["wd"], at["rescale_grad"], at["clip_gradient"])


OPTIMIZERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {"sgd_update": ((), ())}
"""MXNet's optimizer updates, by name: the states that follow the weight and the gradient in
``in``, and those of them that are float32 whatever the weight's dtype. Each changes its
weight and its states in place (the client's ``nd`` functions and its record of what an
instruction changes are made from this)."""
_SIZED_COMMANDS.add("sgd_update")


def _updated_in_place(
    s: Session, ins: dict, name: str, names: tuple[str, ...], f32: tuple[str, ...] = ()
) -> list[np.ndarray]:
    """The arrays of an optimizer update (weight, gradient, states): one shape and float
    dtype, but the states named in ``f32``, float32 (a multi-precision update's master copy
    and momentum); the weight and the states are changed in place, so none may be in a
    recorded graph."""
    hs = list(ins.get("in", ()))
    if len(hs) != len(names):
        raise InvalidInput(f"{name} takes {', '.join(names)}")
    xs = [s.get(h) for h in hs]
    w = xs[0]
    if w.dtype.kind != "f":
        raise DTypeError(f"{name}: the weight must be a float array, got {w.dtype}")
    for n, x in zip(names[1:], xs[1:]):
        if x.shape != w.shape or x.dtype != (np.float32 if n in f32 else w.dtype):
            raise ShapeError(
                f"{name}: {n} {x.shape} {x.dtype} does not fit weight {w.shape} {w.dtype}"
                + (f" (a float32 {n} of its shape)" if n in f32 else "")
            )
    if ins.get("mode", 0) & RECORDING:
        for i, h in enumerate(hs):
            if i != 1 and tape.in_graph(s.nodes.get(h)):
                raise AutogradError(INPLACE_IN_GRAPH)
    if len({id(x) for x in xs}) != len(xs) or any(
        np.may_share_memory(a, b) for i, a in enumerate(xs) for b in xs[i + 1 :]
    ):
        raise InvalidInput(f"{name}: {', '.join(names)} must be arrays of their own (no two share memory)")
    return xs


_UNIT_ATTRS: dict[str, tuple[str, ...]] = {}


def _check_unit(name: str, at: dict[str, Any]) -> None:
    for k in _UNIT_ATTRS.get(name, ()):
        if not 0.0 <= at[k] <= 1.0:
            raise InvalidInput(f"{name}: {k} must be in [0, 1], got {at[k]!r}")


def check_optimizer_attrs(name: str, given: dict[str, Any]) -> None:
    """Refuse an optimizer update's attributes as its command would (InvalidInput): the
    client checks them when it queues the update, so the error comes from the call."""
    _check_unit(name, PARSED_COMMANDS[name][1](given))


def _optimizer(
    name: str,
    states: tuple[str, ...],
    attrs: tuple[Attr, ...],
    doc: str,
    kernel: Callable[..., None],
    f32: tuple[str, ...] = (),
    unit: tuple[str, ...] = (),
) -> None:
    """Register one of MXNet's optimizer updates as a command: ``in`` the weight, the gradient
    and ``states``; ``kernel`` takes those arrays, then the attributes in their declared
    order, and changes the weight and the states in place. The attributes named in ``unit``
    must lie in [0, 1] (where MXNet's op refuses others)."""

    def run(s: Session, ins: dict, values: list) -> None:
        xs = _updated_in_place(s, ins, name, ("weight", "grad", *states), f32)
        at = ins["at"]
        _check_unit(name, at)
        kernel(*xs, *(at[a.name] for a in attrs))

    _UNIT_ATTRS[name] = unit
    OPTIMIZERS[name] = (states, f32)
    _SIZED_COMMANDS.add(name)
    command(name, " ".join(("weight", "grad", *states)), attrs, doc)(run)


MOMENTUM = (*SGD[:1], Attr("momentum", "float", 0.0), *SGD[1:])
_SGD_MOM = "mom = momentum * mom - lr * (clip(rescale_grad * grad) + wd * weight); weight += mom"
_optimizer(
    "sgd_mom_update",
    ("mom",),
    MOMENTUM,
    f"{_SGD_MOM}, both in place (MXNet's sgd_mom_update).",
    kernels.sgd_mom_update_numpy,
)
_optimizer(
    "mp_sgd_update",
    ("weight32",),
    SGD,
    "weight32 -= lr * (clip(rescale_grad * grad) + wd * weight32); weight = weight32 in its dtype, both in "
    "place (MXNet's mp_sgd_update: a float16 weight with its float32 master copy weight32).",
    kernels.mp_sgd_update_numpy,
    f32=("weight32",),
)
_optimizer(
    "mp_sgd_mom_update",
    ("mom", "weight32"),
    MOMENTUM,
    f"{_SGD_MOM.replace('weight', 'weight32')}; weight = weight32 in its dtype, all in place (MXNet's "
    "mp_sgd_mom_update: a float16 weight with a float32 master copy weight32 and a float32 mom).",
    kernels.mp_sgd_mom_update_numpy,
    f32=("mom", "weight32"),
)
_optimizer(
    "nag_mom_update",
    ("mom",),
    (*MOMENTUM, Attr("out_is_weight", "bool", True)),
    "With step(w) = lr * (clip(rescale_grad * grad) + wd * w) and mom = momentum * mom: weight = weight - mom "
    "+ (momentum + 1) * (mom - step(weight)), then mom -= step of the new weight; both in place (MXNet's "
    "nag_mom_update with out=weight). out_is_weight false: mom -= step of the weight before the update, as "
    "MXNet's with an out that is not the weight (the weight given is then that out, a copy of the weight).",
    kernels.nag_mom_update_numpy,
)
_optimizer(
    "signsgd_update",
    (),
    SGD,
    "weight = (1 - lr * wd) * weight - lr * sign(grad), in place (MXNet's signsgd_update: rescale_grad and "
    "clip_gradient change nothing).",
    kernels.signsgd_update_numpy,
)
_optimizer(
    "signum_update",
    ("mom",),
    (*MOMENTUM, Attr("wd_lh", "float", 0.0)),
    "mom = momentum * mom - (1 - momentum) * (clip(rescale_grad * grad) + wd * weight); weight = (1 - lr * "
    "wd_lh) * weight + lr * sign(mom); both in place (MXNet's signum_update).",
    kernels.signum_update_numpy,
)
_DECAYED = "g = clip(rescale_grad * grad + wd * weight)"
ADAM = (
    *SGD[:1],
    Attr("beta1", "float", 0.9),
    Attr("beta2", "float", 0.999),
    Attr("epsilon", "float", 1e-8),
    *SGD[1:],
)
_optimizer(
    "adam_update",
    ("mean", "var"),
    ADAM,
    f"{_DECAYED}; mean and var the moving averages of g and g^2 (beta1, beta2); weight -= lr * mean / "
    "(sqrt(var) + epsilon); all in place (MXNet's adam_update).",
    kernels.adam_update_numpy,
)
CLIP_WEIGHTS = Attr("clip_weights", "float", -1.0)
RMSPROP = (*SGD[:1], Attr("gamma1", "float", 0.95), Attr("epsilon", "float", 1e-8), *SGD[1:], CLIP_WEIGHTS)
_optimizer(
    "rmsprop_update",
    ("n",),
    RMSPROP,
    f"{_DECAYED}; n the moving average of g^2 (gamma1); weight = clip(weight - lr * g / sqrt(n + epsilon), "
    "clip_weights); both in place (MXNet's rmsprop_update).",
    kernels.rmsprop_update_numpy,
)
_optimizer(
    "rmspropalex_update",
    ("n", "g", "delta"),
    (*RMSPROP[:2], Attr("gamma2", "float", 0.9), *RMSPROP[2:]),
    f"{_DECAYED.replace('g =', 'g1 =')}; n and g the moving averages of g1^2 and g1 (gamma1); delta = gamma2 * "
    "delta - lr * g1 / sqrt(n - g^2 + epsilon); weight = clip(weight + delta, clip_weights); all in place "
    "(MXNet's rmspropalex_update).",
    kernels.rmspropalex_update_numpy,
)
_optimizer(
    "ftrl_update",
    ("z", "n"),
    (*SGD[:1], Attr("lamda1", "float", 0.01), Attr("beta", "float", 1.0), *SGD[1:]),
    "g = clip(rescale_grad * grad); z += g - (sqrt(n + g^2) - sqrt(n)) * weight / lr; n += g^2; weight = "
    "(sign(z) * lamda1 - z) / ((beta + sqrt(n)) / lr + wd) where |z| > lamda1, else 0; all in place (MXNet's "
    "ftrl_update).",
    kernels.ftrl_update_numpy,
)
_optimizer(
    "ftml_update",
    ("d", "v", "z"),
    (
        *SGD[:1],
        Attr("beta1", "float", 0.6),
        Attr("beta2", "float", 0.999),
        Attr("epsilon", "float", kernels.FTML_EPSILON),
        Attr("t", "int", REQUIRED),
        *SGD[1:3],
        Attr("clip_grad", "float", -1.0),
    ),
    f"{_DECAYED.replace('clip_gradient', 'clip_grad')}; v the moving average of g^2 (beta2); d_t = (1 - "
    "beta1^t) / lr * (sqrt(v / (1 - beta2^t)) + epsilon); z = beta1 * z + (1 - beta1) * g - (d_t - beta1 * d) * "
    "weight; d = d_t; weight = -z / d_t; all in place (MXNet's ftml_update at step t; beta1 and beta2 in [0, 1]).",
    kernels.ftml_update_numpy,
    unit=("beta1", "beta2"),
)


@command("seed", "", (Attr("seed", "int", 0),), "Reseed this session's random generator.")
def _seed(s: Session, ins: dict, values: list) -> None:
    seed = ins["at"]["seed"]
    if seed < 0:
        raise InvalidInput(f"seed must be a non-negative integer, got {seed!r}")
    s.cx.rng = np.random.default_rng(seed)


def catalog() -> dict[str, Any]:
    """The op table and commands as data, for ``GET /v1/ops``."""
    return {
        "ops": [op.describe() for op in OPS.ops()],
        "commands": list(COMMAND_DOCS.values()),
    }


__all__ = ["COMMANDS", "Limits", "Op", "Session", "catalog"]
