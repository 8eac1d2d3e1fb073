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

from . import (  # noqa: F401  (ops_*: the rest of the table)
    alloc,
    kernels,
    ops_array,
    ops_contrib,
    ops_index,
    ops_linalg,
    ops_math,
    ops_nn,
    ops_optim,
    ops_seq,
    ops_vision,
    parallel,
    tape,
)
from . import ops as _ops  # (fills the table)
from .dispatch import Context, Eager, Recorder
from .errors import (
    AutogradError,
    InternalError,
    InvalidInput,
    MXNetError,
    QuotaExceeded,
    SequenceError,
    ServerStopped,
    ShapeError,
    UnknownHandle,
    echo,
)
from .optable import (
    MAX_NDIM,
    OPS,
    REQUIRED,
    Attr,
    Op,
    Spec,
    attr_parser,
    dtype_name,
    new_spec,
    over_rank,
    past_int64,
)
from .slices import (
    PROGRAM_OPS,
    SIZED_COMMANDS,
    SLICE_ARRAY_BYTES,
    SLICE_WORK,
    TIMED_BYTES,
    VALUE_COSTLY,
    SliceEnds,
    judge_in_slice,
    large_inputs,
    long_program_op,
    record_rate,
    timing,
)
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


def command(
    name: str, inputs: str, attrs: tuple[Attr, ...], doc: str, outputs: bool = False
) -> Callable[[Command], Command]:
    """Register a session command; its attributes are parsed as an op's are
    (declared types, defaults, unknown names refused) before it runs, so the
    command reads ``ins["at"]``: every declared attribute, typed. A command that makes no
    arrays (``outputs`` false) refuses output handles, and one of no ``inputs`` input
    handles: a client that expects a new array (MXNet's ``sgd_update`` returns one) would
    otherwise be told nothing of the one it changed in place."""

    def wrap(fn: Command) -> Command:
        parse = attr_parser(name, attrs)

        def run(s: Session, ins: dict, values: list) -> None:
            raw = ins.get("at")
            if raw is None and "at" in ins:
                raise _null_attributes(name)
            mode = _mode(name, ins)
            if len(ins) > 1 + (raw is not None) + (mode != 0):  # (op, at, mode: a lower bound of those present)
                _check_fields(name, ins)
                if not outputs and ins.get("out"):
                    raise InvalidInput(
                        f"{name} makes no arrays (it changes its inputs in place or none): 'out' must be empty"
                    )
                if not inputs and ins.get("in"):
                    raise InvalidInput(f"{name} takes no input handles: 'in' must be empty")
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


def _null_attributes(name: str) -> InvalidInput:
    return InvalidInput(f"{name}: 'at' must be a map of attributes (or left out), got null")


def _bad_mode(name: str, mode: Any) -> InvalidInput:
    return InvalidInput(f"{name}: mode is 0, 1 (recording), 2 (training) or 3 (both), got {echo(mode)}")


def _unknown_keys(name: str, ins: dict) -> InvalidInput:
    extra = sorted(echo(k) for k in ins if k not in KEYS)
    return InvalidInput(f"{name}: unknown instruction fields {', '.join(extra)} (an instruction has {sorted(KEYS)})")


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


MAX_DIM: Final = 1 << 40
"""The longest axis of an array: an empty array's others are bounded too (a repeat of nothing
2**62 times has no bytes for a quota to refuse)."""


class BatchRun:
    """A batch being applied to a session (``Session.begin``): run in one go, or in slices
    that end between instructions (a server runs a batch's start on its event loop and
    hands what is left to a thread), then finished once. It holds the session's lock
    from ``begin`` to ``finish`` or ``abort``, whichever thread calls them."""

    __slots__ = ("session", "ops", "seq", "tail", "next", "values", "reply", "started", "ended")

    def __init__(self, session: Session, ops: list, seq: int | None, copy_reads: bool) -> None:
        self.session = session
        session._partial = False  # (what a batch given up part way left there is not this one's)
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
        if deadline is not None:
            s._cap = min(s._cap, SLICE_ARRAY_BYTES)
            s._in_slice = True
        try:
            i = self._run(s, ops, values, tail, execute, n, i, deadline)
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

    def _failed(self, s: Session, e: MXNetError, i: int, ins: Any) -> None:
        """The batch's error: instruction ``i`` raised ``e`` (partial if it had changed state)."""
        if s._partial:
            e.partial = True
            s._partial = False
        self.reply["error"] = error_body(e, i, ins)

    def _run(
        self,
        s: Session,
        ops: list,
        values: list,
        tail: int,
        execute: Any,
        n: int,
        i: int,
        deadline: float | None,
    ) -> int:
        with np.errstate(all="ignore"):
            while i < n:
                if i % SHARE_EVERY == 0:
                    share_gil()
                ins = ops[i]
                if deadline is not None and type(ins) is dict and type(ins.get("op")) is str:
                    name = ins["op"]
                    if name in PROGRAM_OPS:
                        if long_program_op(s, ins, deadline):
                            break  # not started: the caller runs it (and the rest) in a thread
                    elif name in SIZED_COMMANDS and i < tail and large_inputs(s, ins):
                        break
                try:
                    if i < tail:
                        execute(ins, values)
                    else:  # the batch's last reads: the arrays themselves, for an encoder that sends them at once
                        check_instruction("read", ins)
                        read_values(s, ins.get("in", ()), _parse_read(ins.get("at"))["grad"], values, copy=False)
                except SliceEnds:
                    break  # not started: the caller runs it (and the rest) in a thread
                except MXNetError as e:
                    self._failed(s, e, i, ins)
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
                    why = f"it has no field {e}" if isinstance(e, KeyError) else str(e)
                    self._failed(s, InvalidInput(f"malformed instruction: {why}"), i, ins)
                    i = n
                    break
                except MemoryError:  # (past what the checks foresaw: the machine's memory)
                    op = ins.get("op") if type(ins) is dict else None
                    err = QuotaExceeded(f"{op}: the server has not the memory to run it")
                    self._failed(s, err, i, ins)
                    i = n
                    break
                except RecursionError:  # (a value nested past what repr or json can walk)
                    op = ins.get("op") if type(ins) is dict else None
                    self._failed(s, InvalidInput(f"{echo(op)}: a value in it is nested too deeply"), i, ins)
                    i = n
                    break
                except Exception as e:  # a fault of ours: the batch still ends as for any error
                    op = ins.get("op") if type(ins) is dict else None
                    _log.exception("internal error in instruction %d (%r) of a batch", i, op)
                    self._failed(s, InternalError(f"{op}: {type(e).__name__}: {e}"), i, ins)
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

    def stopped(self, why: MXNetError | None = None) -> None:
        """End the batch where it is, before it ran whole (the server is stopping, or failed
        around the batch): the instruction it would run next fails with ``why`` (by default
        ``ServerStopped``); ``finish`` it then. What ran stays done, and the seq is taken, so a
        retry gets this reply and runs nothing twice."""
        if self.next < len(self.ops) and "error" not in self.reply:
            if why is None:
                why = ServerStopped("the server stopped while this batch ran: it ran up to this instruction")
            self._failed(self.session, why, self.next, self.ops[self.next])

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
        raise InvalidInput(f"seq must be an integer, got {echo(seq)}{past_int64(seq)}")


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
        self.graphs_lost: set[int] = set()  # handles whose recorded graph a restart let go (snapshot.load)
        self.pins: dict[int, list] = {}  # id(memory) -> [memory, holders, counted elsewhere, size]
        # freed arrays still counted while something holds them: id(weakref) -> (the weakref,
        # its bytes or its memory's pin); the weakref's callback queues the id when it dies
        self.held: dict[int, tuple[weakref.ref, Any]] = {}
        self._gone: list[int] = []  # ids of ``held`` whose array died (appended from any thread)
        self.grads: dict[int, np.ndarray] = {}  # id(variable's node) -> the gradient buffer made for it
        self._cap = self.limits.max_array_bytes  # the largest array an op may make without a closer look
        self._in_slice = False  # a batch runs in a slice of a server's event loop (see BatchRun.run)
        # Whether its costly ops are timed, for the slices of a server's event loop (``RATES``,
        # engine/slices.py): a session in the user's own process (``InProcess``) runs no slices.
        self.timed = True
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
        # Whether the instruction running has changed state it cannot take back (a backward pass
        # may have written a gradient buffer; a call ran a step): an error it raises, of any
        # kind, says so (``partial``). Set by them while so, read and cleared by the executor.
        self._partial = False

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
                raise InvalidInput(f"a handle is an integer, got {echo(h)}")
            raise UnknownHandle(f"unknown handle {echo(h)}")
        return x

    def put(self, h: Any, value: np.ndarray, alias: bool = False, holders: tuple = ()) -> None:
        """Give handle ``h`` the array ``value``: its own (counted by ``_hold``), or with
        ``alias`` a gradient buffer's second name (counted with the buffer)."""
        if not isinstance(h, int) or isinstance(h, bool) or (h < 0 and not self._calling) or h > MAX_HANDLE:
            raise InvalidInput(f"output handle must be an integer from 0 to 2**63 - 1, got {echo(h)}")
        if h in self.arrays:
            raise InvalidInput(f"handle {h} is already in use")
        # (a second name is a handle too; a call counts its outputs before it starts)
        if len(self.arrays) >= self.limits.max_session_arrays and h >= 0 and not self._calling:
            raise _too_many_arrays(self)
        self.arrays[h] = value
        if alias:
            self.aliases.add(h)
            self._pin(value, (memory_of(value),))  # (counted with its variable)
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
        m = memory_of(y)
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
        if self.graphs_lost:
            self.graphs_lost.discard(h)
        v, refs = _pop_refs(self.arrays, h)
        if v is None:
            return
        if h in self.aliases:  # a ``grad`` handle: the buffer is counted with its variable
            self.aliases.discard(h)
            self._unpin(memory_of(v))
        elif refs > _ALONE:
            self._hold_until_gone(v, memory_of(v) if v.base is not None else v.nbytes)
        else:
            self._unhold(v)

    def _unhold(self, v: np.ndarray) -> None:
        """Stop counting what ``_hold`` counted for ``v``."""
        if v.base is None:
            self.nbytes -= v.nbytes
        else:
            self._unpin(memory_of(v))

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
        counted: set[int] = {id(memory_of(x)) for x in self.arrays.values()}
        counted.update(id(g) for g in self.grads.values())
        for r, _ in self.held.values():
            x = r()
            if x is not None:
                counted.add(id(x))
        for n in tape.toposort([head]):
            for x in (n.y, *(n.xs or ())):
                if isinstance(x, np.ndarray) and id(x) not in counted and id(memory_of(x)) not in counted:
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
                op.other = None
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
        while stack:
            n = stack.pop()
            if id(n) in seen:
                continue
            seen.add(id(n))
            turns += 1
            if turns % SHARE_EVERY == 0:
                share_gil()
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
        except BaseException as e:  # (past the executor's own handlers): what ran stays, seq taken
            run.stopped(InternalError(f"the batch ended at this instruction: {type(e).__name__}: {e}"))
            run.finish()
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
        if hs is None:
            if "in" in ins:  # (given as null: refused, as the JSON schema refuses it)
                raise InvalidInput(f"{name}: 'in' must be a list of handles, got null")
        elif type(hs) is not list and type(hs) is not tuple:  # (a map's keys are no handles)
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
                    raise InvalidInput(f"{name}: a handle is an integer, got {echo(h)}")
                raise UnknownHandle(f"{name}: unknown handle {echo(h)}")
            xs.append(x)
        raw = ins.get("at")
        if raw is None and "at" in ins:
            raise _null_attributes(name)
        at = op.parse(raw)  # type: ignore[misc]  # every op of the table has its parser
        if op.like:  # the output is shaped and typed as the input: nothing to infer
            n = xs[0].nbytes
        else:
            specs = []
            for x in xs:
                specs.append(new_spec(Spec, (x.shape, dtype_name(x.dtype))))
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
        node = NODE_BYTES if mode & RECORDING and op.inputs else 0  # (if an input is in a graph)
        late = False
        if n > self._cap or self.nbytes + self.graph_bytes + n + kept + node > self._budget:
            if n > self._cap and n <= self.limits.max_array_bytes:
                raise SliceEnds  # (in a slice of the event loop: see BatchRun.run)
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
            raise InvalidInput(f"output handle must be an integer from 0 to 2**63 - 1, got {echo(h)}")
        if h in arrays:
            raise InvalidInput(f"handle {h} is already in use (free it first, or name another)")
        if len(arrays) >= self.limits.max_session_arrays and h >= 0:
            raise _too_many_arrays(self)
        key, size = timing(op, at, xs, n, None if op.like else specs) if self.timed else _UNTIMED
        if key is not None:
            judge_in_slice(self, key, size, xs[0] if op.name in VALUE_COSTLY else None)
        cx = self.cx
        cx.training = mode & TRAINING != 0
        if key is None:
            y = op.forward(cx, at, *xs)
        else:
            started = time.perf_counter_ns()
            y = op.forward(cx, at, *xs)
            record_rate(key, size, time.perf_counter_ns() - started)
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
        if mode & RECORDING and op.inputs:  # (an op of no VJP too: a backward through it is refused)
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
                raise SliceEnds

    def keep(self, at: dict) -> None:
        """Count the array a recorded op's forward left in ``at["_kept"]`` (Dropout's mask; its
        node keeps it for the backward pass) until it dies with the graph."""
        kept = at.get("_kept")
        if kept is not None:
            self.nbytes += kept.nbytes
            self._hold_until_gone(kept, kept.nbytes)

    def link(self, op: Op, at: dict, ins_h: Any, xs: list, h: int, y: np.ndarray) -> None:
        """Record ``h`` (made by ``op``) in the graph when an input is in it (an op of no VJP
        keeps no array: its node only says that a backward pass through it is refused)."""
        nodes = self.nodes
        keep = op.vjp is not None
        if len(ins_h) == 1:
            p = nodes.get(ins_h[0])
            if p is not None and p.live:
                nodes[h] = Node(op, at, (p,), (xs[0],) if keep else None, y if keep else None)
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
            nodes[h] = Node(op, at, tuple(parents), tuple(xs) if keep else None, y if keep else None)
            self.made_nodes(1)

    def node(self, h: int) -> Node | None:
        self.get(h)
        return self.nodes.get(h)


_OPS_GET = OPS.get


_ITEMSIZE: dict[str, int] = {}
_UNTIMED: Final[tuple[tuple | None, int]] = (None, 0)  # (an untimed session's ops)


def _itemsize(dtype: str) -> int:
    n = _ITEMSIZE[dtype] = np.dtype(dtype).itemsize
    return n


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
    body: dict[str, Any] = {"kind": e.kind, "message": message, "index": index, "op": op}
    if e.partial:
        body["partial"] = True
    return body


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
        raise InvalidInput(f"attach_grad: grad_req must be one of {tape.GRAD_REQS}, got {echo(req)}")
    s.check_alloc(x.nbytes)
    s.variable(h, np.zeros_like(x), req)


@command("grad", "data", (), "Give the output handle the array's gradient buffer (shared, not copied).", outputs=True)
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
    outputs=True,
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


def memory_of(x: Any) -> Any:
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
        # a backward that reads the training flag is traced in both modes: ``program`` with the
        # flag ``training``, ``other`` (program, gradients) with the other value
        self.training: bool | None = None
        self.other: tuple[list, list] | None = None

    def vjp(self, F: Any, at: dict, g: Any, y: Any, *xs: Any) -> tuple[Any, ...]:
        program, gradients = self.program, self.gradients
        if self.other is not None and self.session.cx.training != self.training:
            program, gradients = self.other
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

        for op, ins_h, out_h, op_at in program:
            env[out_h] = getattr(F, op.name)(*[arg(h) for h in ins_h], **op_at)
        return tuple(None if h is None else arg(h) for h in gradients)


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
    if len(hs) == 2 and at["scalar"] is not None:
        raise InvalidInput("setitem takes a value handle or a scalar, not both")
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


FEATURES: Final = ("update.scale",)
"""What this engine does that older ones did not, named in a server's reply to a new session:
a client uses one only where its server says so (``update``'s ``scale``, sent for ``w -= lr * g``)."""

_UPDATES = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "mod": np.mod}
_MUL_SCALAR = OPS["mul_scalar"]


@command(
    "update",
    "target [value]",
    (Attr("fn", "str", REQUIRED), Attr("scalar", "float", None), Attr("scale", "float", None)),
    "target = target fn value, in place (fn: add, sub, mul, div, mod; value an array or a scalar). "
    "scale: the value array is multiplied by it first, as mul_scalar multiplies (the same result); "
    "w -= lr * g is then one pass over memory, with no product held.",
)
def _update(s: Session, ins: dict, values: list) -> None:
    hs = list(ins.get("in", ()))
    at = ins["at"]
    ufunc = _UPDATES.get(at["fn"])
    if ufunc is None:
        raise InvalidInput(f"update: fn must be one of {sorted(_UPDATES)}, got {echo(at['fn'])}")
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
    if len(hs) == 2 and at["scalar"] is not None:
        raise InvalidInput("update takes a value handle or a scalar, not both")
    scale = at["scale"]
    if scale is not None and len(hs) != 2:
        raise InvalidInput("update: scale multiplies a value array: give its handle")
    fn = at["fn"]
    # with scale: target -= v * a in one pass (kernels.scaled_sub: the bits of mul_scalar and then
    # the update), target + v * b as target - v * (-b), but for a NaN b (its sign would flip)
    scaled = None
    if len(hs) == 2:
        v = s.get(hs[1])
        if not _ops.broadcastable(v.shape, target.shape):
            raise _ops.ShapeError(f"update: cannot update shape {target.shape} in place with shape {v.shape}")
        if scale is not None:
            if (fn == "sub" or (fn == "add" and scale == scale)) and kernels.scaled_sub_ok(target, v):
                scaled = target.dtype.type(scale if fn == "sub" else -scale)
            else:
                if s._in_slice and not s._calling and v.nbytes >= TIMED_BYTES:
                    raise SliceEnds  # the product is made before the update can be judged: the thread's
                s.check_alloc(v.nbytes)  # the product, while it lives (as mul_scalar's would be counted)
                v = _MUL_SCALAR.forward(s.cx, _MUL_SCALAR.parse_attrs({"scalar": scale}), v)
    elif at["scalar"] is not None:
        v = _ops.typed_scalar(at["scalar"], target.dtype)
    else:
        raise InvalidInput("update needs a value handle or a scalar")
    # timed as an op is (a mod of 1e300 by 1e-300 takes 2 us an element): in a slice of a
    # server's event loop, one expected past it, or not timed yet, is left for the thread
    size = target.nbytes + (v.nbytes if isinstance(v, np.ndarray) else 0)
    key = ("update", fn if scaled is None else "scaled", target.dtype.num) if size >= TIMED_BYTES and s.timed else None
    if key is not None:
        judge_in_slice(s, key, size, target if ufunc is np.mod else None)
    started = time.perf_counter_ns()
    if scaled is not None:
        kernels.scaled_sub_unchecked(target, v, scaled)
    elif ufunc is np.mod:  # (MXNet's mod, not numpy's: see ops._mod)
        target[...] = _ops._mod(np, target, v)
    elif target.dtype.kind in "iu" and ufunc is np.divide:
        target[...] = _ops._int_div(np, target, v)
    else:
        ufunc(target, v, out=target, casting="unsafe")
    if key is not None:
        record_rate(key, size, time.perf_counter_ns() - started)


@command("seed", "", (Attr("seed", "int", 0),), "Reseed this session's random generator.")
def _seed(s: Session, ins: dict, values: list) -> None:
    seed = ins["at"]["seed"]
    if seed < 0:
        raise InvalidInput(f"seed must be a non-negative integer, got {echo(seed)}")
    s.cx.rng = np.random.default_rng(seed)


def catalog() -> dict[str, Any]:
    """The op table and commands as data, for ``GET /v1/ops``."""
    return {
        "ops": [op.describe() for op in OPS.ops()],
        "commands": list(COMMAND_DOCS.values()),
    }


__all__ = ["COMMANDS", "Limits", "Op", "Session", "catalog"]
