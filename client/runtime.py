"""The client runtime: client-named handles, the lazy op queue and its flushes.

Ops queue here and travel in one batch at a sync point (a value is read,
``wait_to_read``, ``nd.waitall()``) or when the queue passes its bounds. An
error found by the engine is raised at that sync point, naming the op and the
line of user code that queued it; the handles of that op and of every later op
of the batch are dead, and using one raises the same error again; an array that
one of those later instructions was to change in place raises ``ChangeLost``.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import itertools
import os
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from types import CodeType, FrameType
from typing import Any, NamedTuple

import numpy as np

from .engine import wire
from .engine.errors import InvalidInput, MXNetError, QuotaExceeded, SequenceError, SessionNotFound, error_from_kind
from .engine.optimizers import OPTIMIZERS
from .transport import ConnectionLost, SessionClosed, Transport, from_env

MAX_QUEUED_OPS = 4096
MAX_QUEUED_BYTES = 64 << 20
FRAME_ALIGN = wire.ALIGN
"""Each tensor of a batch travels in a frame that starts on this boundary: the queue counts
an upload's bytes rounded up to it."""
OP_HEAD_BYTES = 256
"""A bound on one instruction's share of a request besides its tensors' bytes (its msgpack,
a tensor's descriptor included): a server with a small request limit gets fewer per batch."""
FLUSH_EXTRA = 3
"""Instructions a flush may add to what is queued: a free, a forget and a read."""
RNG_KEY = 0
"""The memory key of the session's random generator (handles start at 1, gradient buffers are
negative): a ``seed`` its failed batch never ran is lost, as an array's change would be."""
FREE_NOW_BYTES = 64 << 10
"""Arrays let go are freed in program order, before the next instruction queued, once they
hold this much together (a large one at once): the session holds at most this much more than
an eager program would. Smaller ones go together, before the instruction at which they reach
it or with the batch: a free before each op would be one more instruction for the engine per
statement (a tenth of a small training step written op by op, measured)."""

_HERE = os.path.dirname(os.path.abspath(__file__))
_ENGINE = os.path.dirname(os.path.abspath(sys.modules["gradserve.engine"].__file__ or _HERE))
_OURS = (_HERE + os.sep, _ENGINE + os.sep)  # (with the separator: a sibling gradserve_x.py is the user's)


REBOUND = (
    "an array a hybridized function reads from outside its arguments is gone: it was freed, "
    "rebound to a new array where it should have changed in place (p[:] = ..., p -= ...)"
)


class ChangeLost(MXNetError):
    """An array that an instruction was to change in place (``x += 1``, ``x[:] = v``,
    ``attach_grad``, a backward pass into its gradient, a hybridized call updating it) that
    never ran: an instruction queued before it in the same batch failed. Its value is not the
    one the program says; the earlier failure is the ``__cause__``."""


def framed(nbytes: int) -> int:
    """The bytes a tensor of ``nbytes`` takes in a batch: rounded up to its frame's alignment."""
    return -(-nbytes // FRAME_ALIGN) * FRAME_ALIGN


class _TooLong(Exception):
    """A batch refused as a whole for its length: the server's limit, learned from its error."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


class _Unencodable(Exception):
    """An instruction of a batch that cannot travel to the server (an integer past 64 bits):
    the batch was not sent. It fails there, as the server fails one: what comes before it is
    sent and runs, and it raises ``InvalidInput``."""

    def __init__(self, index: int, why: str) -> None:
        super().__init__(index, why)
        self.index = index
        self.why = why


def _first_unencodable(ops: list[dict]) -> _Unencodable | None:
    """The first instruction of ``ops`` the wire cannot carry, if one is why a batch could not
    be encoded (each is tried alone: only after the batch failed)."""
    for i, ins in enumerate(ops):
        try:
            wire.pack(ins)
        except (TypeError, OverflowError) as e:
            return _Unencodable(i, str(e))
    return None


class NotTraceable(InvalidInput):
    """Code being traced (a hybridized function, a Function's backward) did what a trace
    cannot hold: read a value, or record an autograd.Function."""


_OUR_FILES: dict[str, bool] = {}  # file name -> whether it is gradserve's (a cache: this runs per op)


def _ours(filename: str) -> bool:
    mine = _OUR_FILES.get(filename)
    if mine is None:
        mine = _OUR_FILES[filename] = filename.startswith(_OURS)
    return mine


Where = tuple[CodeType, int]
"""Where the user's program queued an instruction: a code object and its instruction's offset
(``_user_line``); ``_line`` says which file and line that is."""


def _user_line() -> Where | None:
    """The first frame outside gradserve: the user's code that queued an op, and where in it.
    (Keyed by file name: a str caches its hash, a code object computes it at every lookup. Its
    line is found only for an error (``_line``): a frame's ``f_lineno`` searches the line table,
    at every op.)"""
    f: FrameType | None = sys._getframe(2)
    known = _OUR_FILES.get
    while f is not None:
        code = f.f_code
        mine = known(code.co_filename)
        if mine is None:
            mine = _ours(code.co_filename)
        if not mine:
            return code, f.f_lasti
        f = f.f_back
    return None


def _line(where: Where) -> str:
    """``file:line`` of a ``_user_line``."""
    code, offset = where
    line = code.co_firstlineno
    for start, end, n in code.co_lines():
        if start <= offset < end:
            line = n if n is not None else line
            break
    return f"{code.co_filename}:{line}"


def _scaled(last: dict[str, Any], update: dict[str, Any], product: int) -> bool:
    """Whether ``last`` is the ``mul_scalar`` outside autograd that makes ``product``, which
    ``update`` reads second; if so, ``update`` is made to read its input and scale it by its
    scalar (the engine's one pass over memory, with the bits of the product and then the update)."""
    if last["op"] != "mul_scalar" or last["out"] != [product] or "mode" in last or len(last["in"]) != 1:
        return False
    scalar = last["at"].get("scalar")
    if type(scalar) is not float:
        return False
    update["in"][1] = last["in"][0]
    update["at"]["scale"] = scalar
    return True


class Client:
    """One session's client side: transport, handle counter, queue."""

    def __init__(self, transport: Transport, sync: bool = False) -> None:
        self.transport = transport
        self.sync = sync or os.environ.get("GRADSERVE_SYNC", "") not in ("", "0")
        self._handles = itertools.count(1)
        self._acked = 0  # the last seq whose reply came
        self._lost: SessionClosed | None = None  # (see _lost_state, _forked)
        self._queue: list[dict[str, Any]] = []
        self._where: list[Where | None] = []
        self._qbytes = 0
        self._qsteps = 0  # the instructions the queued calls' programs run
        # Handles of proxies that died, to free on the server. ``release`` appends to it from a
        # proxy's __del__, which runs whenever the garbage collector says: in another thread, or
        # in this one in the middle of ``enqueue`` or ``flush`` (an allocation there can start a
        # collection). So it only appends (no lock, no I/O), and the frees are moved into the
        # queue, by atomic steps (``_queue_frees``), ahead of the next instruction queued (once
        # they hold ``FREE_NOW_BYTES``) or at the flush: in program order, before what was
        # queued after the proxies died.
        self._frees: list[int] = []
        self._free_bytes = 0  # what the pending frees hold (an estimate: ``release`` may race)
        self._freed: list[list[int]] = []  # the frees queued in ``_queue`` (see ``_sent``)
        self._holds: list[int] = []  # floors of ``holding_frees`` blocks running now
        self._program_ids = itertools.count(1)
        self._forgets: list[int] = []  # programs to drop with the next batch
        self.failed_programs: set[int] = set()  # programs whose define did not run (traced again)
        self._program_steps: dict[int, int] = {}  # programs defined, not forgotten: id -> instructions
        # how many times arrays were made variables (attach_grad, mark_variables): a hybridized
        # function's traces hold the graph as it was, and are made again after a change
        self.variables_changed = 0
        # A batch whose fate is not known (its connection was lost, or Ctrl-C came while it
        # waited for its reply): sent again under its seq before anything else (``_resume``).
        self._pending: _Pending | None = None
        # Whose memory each array is, for the in-place changes that never ran (``_lose``): handle
        # -> the key of the memory it shares (a view: its base's handle; a gradient proxy: its
        # variable's buffer's key, ``NDArray.attach_grad``). A handle not here is its own memory.
        self._roots: dict[int, int] = {}
        self._buffers: dict[int, int] = {}  # gradient proxies: handle -> their whole buffer's key
        # instructions that change more than the target named in them (a backward pass: the
        # gradients; a hybridized call: what its program changes): id -> (instruction, keys)
        self._notes: dict[int, tuple[dict[str, Any], tuple[int, ...]]] = {}
        self._undo_lost: dict[int, tuple[dict[str, Any], Callable[[], None]]] = {}
        self._dead: dict[int, MXNetError] = {}  # handle or memory key -> the error using it raises
        self._dead_orphans: set[int] = set()  # keys of _dead whose array is freed, but not all its views
        self._lost_variables: set[int] = set()  # arrays a lost attach_grad or mark_variables was to make variables
        self._lock = threading.RLock()
        self._pid = os.getpid()
        self.closed = False
        self._tls = threading.local()  # .capture: the program a Function's backward is traced into
        self._capturing = 0  # how many threads are tracing one now (no thread-local lookup per op otherwise)
        self._set_limits(getattr(transport, "max_body_bytes", None), getattr(transport, "max_batch_ops", None))
        self.max_batch_steps: int | None = getattr(transport, "max_batch_steps", None)
        # the instructions of all the programs the session may keep (None: the server does not say)
        self.max_program_steps: int | None = getattr(transport, "max_program_steps", None)
        # whether the engine scales an update's value (``update``'s at.scale: ``w -= lr * g`` in one pass)
        self.scaled_updates: bool = "update.scale" in getattr(transport, "features", ())
        # a script that ends frees its session on the server at once, not after the idle timeout
        atexit.register(_close_quietly, weakref.ref(self))
        _clients.add(self)

    def _set_limits(self, body: int | None, ops: int | None) -> None:
        """The queue's bounds for a session that reads request bodies of at most ``body`` bytes
        and runs batches of at most ``ops`` instructions (None: no limit, or not known)."""
        self.max_body_bytes = body
        self.max_batch_ops = ops
        # the tensor bytes one request may carry (None: no limit): the server's request limit,
        # less room for the rest of a batch, and the queue's bound, below it
        self.max_request_bytes: int | None = body - min(1 << 20, body // 4) if body else None
        self.max_batch_bytes = min(MAX_QUEUED_BYTES, self.max_request_bytes or MAX_QUEUED_BYTES)
        most = 1 << 62  # instructions queued at most (besides MAX_QUEUED_OPS)
        if ops:
            most = min(most, ops - FLUSH_EXTRA)
        if body and self.max_request_bytes is not None:
            most = min(most, (body - self.max_request_bytes) // OP_HEAD_BYTES)  # the room left, in instructions
        self._max_ops = max(1, most)

    def handle(self) -> int:
        return next(self._handles)  # atomic: threads sharing a session get distinct handles

    def enqueue(self, ins: dict[str, Any], nbytes: int = 0, steps: int = 0, product: int = 0) -> None:
        """Queue an instruction; ``nbytes``: the bytes of the tensors it carries (an upload's);
        ``steps``: the instructions it runs besides itself (a ``call``'s program's).
        ``product``: ``ins`` is an ``update`` by this handle, a temporary nothing else can read
        (``x -= a * y``): if the ``mul_scalar`` that makes it was queued last, the update takes
        its place and scales ``y`` itself (``_scaled``)."""
        if self._capturing:
            capture = getattr(self._tls, "capture", None)
            if capture is not None:
                capture.append(ins)
                return
        where = _user_line()
        with self._lock:  # threads may share a session: an op must not slip between a flush's steps
            if self.closed or self._lost is not None:
                raise self._closed_error()
            if nbytes:
                nbytes = framed(nbytes)  # as it travels: its frame is aligned
                if self._queue and self._qbytes + nbytes > self.max_batch_bytes:
                    self.flush()  # send what is queued first, so a batch holds at most the bound or one array
                self._qbytes += nbytes
            if steps:
                limit = self.max_batch_steps
                if limit and self._queue and len(self._queue) + FLUSH_EXTRA + 1 + self._qsteps + steps > limit:
                    self.flush()  # the server counts a call's program's steps against its batch
                self._qsteps += steps
            queue, wheres = self._queue, self._where
            if product and queue and _scaled(queue[-1], ins, product):
                queue[-1] = ins  # in the product's place: before the frees of what it read
                wheres[-1] = where
                if self._frees and self._free_bytes >= FREE_NOW_BYTES:
                    self._queue_frees(queue, wheres)
            else:
                if self._frees and self._free_bytes >= FREE_NOW_BYTES:
                    self._queue_frees(queue, wheres)
                queue.append(ins)
                wheres.append(where)
            n = len(queue)  # (the client's bound counts the instructions queued, not their frees)
            if (
                n - len(self._freed) >= MAX_QUEUED_OPS
                or n >= self._max_ops
                or self._qbytes > self.max_batch_bytes
                or self.sync
            ):
                self.flush()

    def capturing(self) -> bool:
        """Whether this thread's ops are being collected (``capture``)."""
        return self._capturing > 0 and getattr(self._tls, "capture", None) is not None

    @contextlib.contextmanager
    def capture(self, no_reads: str) -> Iterator[list[dict[str, Any]]]:
        """Collect the instructions queued inside the block instead of sending them; a read
        inside it raises ``no_reads``."""
        if getattr(self._tls, "capture", None) is not None:
            raise MXNetError("an autograd.Function's backward or a hybridized function is being traced already")
        program: list[dict[str, Any]] = []
        with self._lock:
            self._capturing += 1
        self._tls.capture = program  # this thread's ops only
        self._tls.no_reads = no_reads
        self._tls.undo = []  # (see ``undo_if_dropped``)
        try:
            yield program
        finally:
            self._tls.capture = None
            self._tls.arguments = ()
            with self._lock:
                self._capturing -= 1

    def undo_if_dropped(self, undo: Callable[[], None]) -> None:
        """While capturing: ``undo`` puts back what this client changed for an instruction
        just captured (a proxy's cached handle, a variable's node), for ``drop_captured``."""
        self._tls.undo.append(undo)

    def drop_captured(self) -> None:
        """The instructions of the last capture are dropped, never sent (a trace given up):
        undo what the client changed for them, latest first."""
        undo, self._tls.undo = getattr(self._tls, "undo", []), []
        for fn in reversed(undo):
            fn()

    def check_not_argument(self, h: int, what: str) -> None:
        """Refuse to make a traced function's argument a variable: the trace sees it under a
        name of its own (each call's), so the caller's array would not become one."""
        if self._capturing and h in getattr(self._tls, "arguments", ()):
            raise NotTraceable(
                f"{what} on an argument of a hybridized function: the caller's array would not "
                "become a variable; call it before calling the function"
            )

    @contextlib.contextmanager
    def holding_frees(self) -> Iterator[int]:
        """Keep pending, until the block ends, the frees of the handles made from now on (the
        floor yielded and up): a traced function's proxies die before the instructions that
        make their arrays are queued, and a free must not run before its array is made."""
        floor = self.handle()
        with self._lock:
            self._holds.append(floor)
        try:
            yield floor
        finally:
            with self._lock:
                self._holds.remove(floor)

    def program_id(self) -> int:
        return next(self._program_ids)

    def define_program(self, program: list[dict[str, Any]], nargs: int, outputs: list[int]) -> int | None:
        """Queue the definition of a program; its id, or None where the session could not keep
        it (its programs' instructions would pass the server's limit: the define would be
        refused, and the batch with it)."""
        held = sum(list(self._program_steps.values()))  # (a copy: a forget may come from another thread)
        if self.max_program_steps is not None and held + len(program) > self.max_program_steps:
            return None
        if self._forgets:  # (their room is counted free: they go before the define, not at the flush)
            with self._lock:
                if self._forgets:
                    self._queue_forgets(self._queue, self._where)
        pid = self.program_id()
        self._program_steps[pid] = len(program)
        self.enqueue({"op": "define", "at": {"id": pid, "nargs": nargs, "program": program, "outputs": outputs}})
        return pid

    def forget_program(self, pid: int) -> None:
        """A program nobody can call again: dropped with the next batch (no I/O here)."""
        self._program_steps.pop(pid, None)
        self._forgets.append(pid)

    def release(self, h: int, nbytes: int = FREE_NOW_BYTES) -> None:
        """A proxy of ``nbytes`` died: its handle is freed before the next instruction (or,
        small, with others: ``FREE_NOW_BYTES``). No lock, no I/O here."""
        self._frees.append(h)
        self._free_bytes += nbytes

    def _queue_forgets(self, queue: list[dict[str, Any]], wheres: list[Where | None]) -> None:
        """Move the pending forgets into ``queue`` (as ``_queue_frees`` moves the frees: no call
        between their joining it and their leaving ``_forgets``)."""
        forgets = self._forgets
        n = len(forgets)
        ids = forgets[:n]
        queue += [{"op": "forget", "at": {"ids": ids}}]
        wheres += [None]
        del forgets[:n]

    def _queue_frees(self, queue: list[dict[str, Any]], wheres: list[Where | None]) -> None:
        """Move the pending frees that may go now into ``queue``: frees of handles from a
        ``holding_frees`` floor up stay pending. They join the queue before they leave
        ``_frees``, with no call between (an interrupt runs its handler only at a call or a
        loop's end): one cut short frees them twice at worst, which does nothing, where a free
        lost would keep its array on the server for the session's life. ``_frees`` loses only
        its first ``n``, so a ``release`` meanwhile (which appends, from a collection an
        allocation here may start) loses none."""
        self._free_bytes = 0
        frees = self._frees
        n = len(frees)
        taken = frees[:n]
        kept = None
        if self._holds:
            floor = min(self._holds)
            kept = [h for h in taken if h >= floor]
            taken = [h for h in taken if h < floor]
        if not taken:
            return
        queue += [{"op": "free", "in": taken}]
        wheres += [None]
        self._freed += [taken]
        del frees[:n]
        if kept:
            frees[:0] = kept

    # -- what an array's memory is, for the changes that never ran -----------------------

    def root(self, h: int) -> int:
        """The key of the memory that array ``h`` is (a view: its base's handle)."""
        roots = self._roots
        k = roots.get(h, h)
        while k in roots:  # (a hybridized function's argument names point at the callers' arrays)
            k = roots[k]
        return k

    def share(self, h: int, key: int) -> None:
        """Array ``h`` is (part of) the memory of ``key`` (a ``root``): a view of it, an alias."""
        self._roots[h] = key

    def note_changes(self, ins: dict[str, Any], keys: Any) -> None:
        """``ins``, queued next, changes the memory of ``keys`` (``root``s) besides its target."""
        if keys:
            self._notes[id(ins)] = (ins, tuple(keys))

    def undo_if_lost(self, ins: dict[str, Any], undo: Callable[[], None]) -> None:
        """``ins``, queued next, changed this client's own record at once (a backward pass let
        its graph go, so that a second one raises at its call, as MXNet's): ``undo`` puts it
        back if ``ins`` does not run (a batch that failed before it, or at it)."""
        self._undo_lost[id(ins)] = (ins, undo)

    def _undo(self, ops: list[dict]) -> None:
        if self._undo_lost:
            for ins in reversed(ops):
                kept = self._undo_lost.pop(id(ins), None)
                if kept is not None and kept[0] is ins:
                    kept[1]()

    def check_alive(self, h: int) -> None:
        err = self._dead.get(h)
        if err is None:
            if h not in self._roots:
                return
            err = self._dead.get(self.root(h))
            if err is None:
                return
        raise _again(err)

    def revivable(self, h: int) -> bool:
        """Whether a write of the whole of array ``h`` makes its lost value known again: an
        array of its own memory, or a variable's gradient proxy (the whole of its buffer; a
        view's write leaves the rest of its base unknown), outside a trace (which may be
        given up)."""
        key = self.root(h)
        return (key == h or self._buffers.get(h) == key) and not self.capturing()

    def revive(self, h: int) -> bool:
        """``h``, whose in-place change was lost (``ChangeLost``), was written whole. Whether
        what was lost made it a variable (``attach_grad``, ``mark_variables``): the session
        holds it as a plain array, and so must its proxy (``attach_grad`` makes it one again)."""
        key = self.root(h)
        if isinstance(self._dead.get(key), ChangeLost):
            del self._dead[key]
        if key == h and h in self._lost_variables:
            self._lost_variables.discard(h)
            return True
        return False

    # -- batches --------------------------------------------------------------------------

    def flush(self, reads: tuple[int, ...] = ()) -> list[np.ndarray]:
        """Send what is queued (and reads of ``reads``); return the values read."""
        if getattr(self._tls, "capture", None) is not None:
            raise NotTraceable(self._tls.no_reads)
        if self.closed or self._lost is not None:
            raise self._closed_error()
        with self._lock:
            if self._pending is not None:
                self._resume()
            for h in reads:
                self.check_alive(h)
            ops, where = self._queue, self._where
            if self._frees:
                self._queue_frees(ops, where)
            if self._forgets:
                self._queue_forgets(ops, where)
            if reads:  # (a new list: a read left in the queue by an interrupt would go with the next flush)
                ops, where = [*ops, {"op": "read", "in": list(reads)}], [*where, None]
            if not ops:
                return []
            freed = self._freed
            # kept as the queue is let go, in one statement (no interrupt between): see ``_run``
            kept = _Pending(ops, where, freed, len(reads), 0, self._acked + 1)
            self._pending, self._queue, self._where, self._qbytes, self._freed, self._qsteps = kept, [], [], 0, [], 0
            try:
                return self._run(ops, where, len(reads), freed)
            except BaseException as e:
                if self._pending is not None and self._pending.ops is ops and not self.transport.sequenced:
                    self._settle(e)
                raise
            finally:
                if self._pending is None or self._pending.ops is not ops:
                    self._sent(ops, freed)

    def _run(
        self, ops: list[dict], where: list, nreads: int, freed: list[list[int]], start: int = 0, seq: int = 0
    ) -> list[Any]:
        """Send ``ops`` (from ``start``, the first batch under ``seq``, else the next one) as one
        batch, or, past the server's ``max_batch_ops``, as batches of at most that many in
        order, each sent when the one before ran whole: the same effect.

        To a server, each batch is kept as ``_pending`` until its reply is read and taken in:
        an interrupt (Ctrl-C) may come between any two steps here, and a lost connection
        leaves it unknown whether the batch ran. Either way it is sent again under the same
        seq (``_resume``), and the server replays its reply if it ran, runs it if not.
        In-process, a batch cut short is taken as failed (it may have run in part: ``_settle``)."""
        n = len(ops)
        seq = seq or self._acked + 1
        bad: _Unencodable | None = None  # (its index in ``ops``)
        while True:
            self._pending = _Pending(ops, where, freed, nreads, start, seq)
            limit = self.max_batch_ops
            end = n if limit is None else min(n, start + limit)
            if bad is not None:
                end = min(end, bad.index)
                if start == end:  # what came before it ran: it fails, as the server fails an instruction
                    self._pending = None
                    why = f"{bad.why}; such a value does not travel to a server"
                    raise self._fail(ops, where, {"kind": "InvalidInput", "message": why, "index": start}) from bad
            part, wpart = (ops, where) if start == 0 and end == n else (ops[start:end], where[start:end])
            try:
                reply = self._send(part, wpart, seq)
            except _TooLong as e:  # the server's limit is lower than we knew: learned, and sent again
                self._set_limits(self.max_body_bytes, e.limit)
                continue
            except _Unencodable as e:
                bad = e
                bad.index += start
                continue
            except BaseException as e:
                if self._unsure(e):  # (kept)
                    raise
                self._pending = None
                if end < n:  # (the parts not sent did not run)
                    self._not_applied(ops[end:], where[end:], e)
                if self.closed and isinstance(e, Exception) and not isinstance(e, SessionClosed):
                    raise SessionClosed("this session was closed while a batch waited for its reply") from e
                raise
            err = reply.get("error")
            if err:
                exc = self._fail(ops, where, {**err, "index": start + (err.get("index") or 0)})
                self._pending = None
                raise exc
            if end == n:
                values = reply.get("values")
                self._pending = None
                if not isinstance(values, list) or len(values) != nreads:
                    # (not a reply this batch can have: what it made and changed is not known)
                    exc = MXNetError(f"the server's reply holds no value for each of the {nreads} arrays read")
                    self._not_applied(part, wpart, exc)
                    raise exc
                return values
            start, seq = end, seq + 1

    def _sent(self, ops: list[dict], freed: list[list[int]]) -> None:
        """Forget what was kept for the instructions of a batch that went (or failed)."""
        if self._notes:
            for ins in ops:
                self._notes.pop(id(ins), None)
        if self._undo_lost:
            for ins in ops:
                self._undo_lost.pop(id(ins), None)
        if self._roots:  # a freed handle is in no instruction to come
            for hs in freed:
                for h in hs:
                    self._roots.pop(h, None)
                    self._buffers.pop(h, None)
        dead = self._dead
        if dead and freed:  # a freed handle's error goes once no view alive goes by its key
            rooted = set(self._roots.values())
            orphans = self._dead_orphans
            for hs in freed:
                for h in hs:
                    for key in (h, -h):  # (-h: a variable's gradient buffer)
                        if key in dead:
                            if key in rooted:
                                orphans.add(key)  # (until its last view is freed)
                            else:
                                del dead[key]
            for key in [k for k in orphans if k not in rooted]:
                orphans.discard(key)
                dead.pop(key, None)

    def _unsure(self, e: BaseException) -> bool:
        """Whether a batch that raised ``e`` may have run or not: its connection was lost, or
        an interrupt (Ctrl-C) came while it was sent or waited for its reply. A server keeps
        the reply of a session's last batch, so such a batch is sent again under its seq
        (``_resume``): the server replays the reply if it ran, runs it if not. (In-process
        batches have no seq: an interrupted one may have run in part.)"""
        return isinstance(e, ConnectionLost) or not isinstance(e, Exception)

    def _resume(self) -> None:
        """Send the batch whose fate was not known again, under the seq it took, and what
        followed it; then it is known. If it failed, what was queued after it does not run
        (as the lines after a line that raised): its arrays are dead, its changes lost."""
        p = self._pending
        assert p is not None
        if not self.transport.sequenced:  # (an interrupt that came before ``flush`` could settle it)
            self._settle(KeyboardInterrupt())
            self._abandon(MXNetError("a batch before it was interrupted"))
            return
        try:
            self._run(p.ops, p.where, p.nreads, p.freed, p.start, p.seq)
        except BaseException as e:
            if self._pending is None:  # it is known now
                self._sent(p.ops, p.freed)
                if isinstance(e, Exception):  # it failed (an interrupt after it ran abandons nothing)
                    self._abandon(e)
            raise
        self._sent(p.ops, p.freed)

    def _settle(self, exc: BaseException) -> None:
        """In-process, the batch kept is one cut short (it may have run in part): what it was
        to make is dead, what it was to change is lost."""
        p = self._pending
        assert p is not None
        self._pending = None
        rest = p.ops[p.start :]
        self._not_applied(rest, p.where[p.start :], exc)
        self._sent(p.ops, p.freed)

    def _abandon(self, exc: BaseException) -> None:
        """The queue, after a batch before it failed: none of it runs."""
        ops, where = self._queue, self._where
        if not ops:
            return
        freed = self._freed
        self._queue, self._where, self._qbytes, self._freed, self._qsteps = [], [], 0, [], 0
        self._not_applied(ops, where, exc)
        self._sent(ops, freed)

    def _send(self, ops: list[dict], where: list, seq: int) -> dict[str, Any]:
        """Send a batch as ``seq``. One that comes back as an error status, not a reply (over a
        size limit, say), or cannot be encoded, was applied in no part and did not take its seq
        (the next batch takes it: the seq is the last acknowledged one's next); its arrays are
        dead, with that error, and its frees go with the next batch. A server that lost
        batches whose replies came (restarted from an older snapshot after a crash), or the
        whole session (expired, or not yet in a snapshot at a crash), raises ``SessionLost``,
        now and for every later use of the session."""
        try:
            try:
                reply = self.transport.send({"seq": seq, "ops": ops})
            except SequenceError as e:
                expected = SequenceError.expected(str(e))
                if expected is not None and expected <= self._acked:
                    raise self._lost_state(expected, self._acked) from e
                raise
            except (TypeError, OverflowError) as e:  # (not encoded: nothing was sent)
                bad = None if isinstance(e, MXNetError) else _first_unencodable(ops)
                if bad is None:
                    raise
                raise bad from e
        except _Unencodable:
            raise  # (``_run`` sends what comes before it)
        except QuotaExceeded as e:
            limit = _batch_limit(e, len(ops))
            if limit is None:
                self._not_applied(ops, where, e)
                raise
            # longer than the server takes (a limit it did not tell when the session opened): it
            # ran none of it and did not take its seq
            raise _TooLong(limit) from e
        except SessionNotFound as e:  # (it was there when opened: gone since)
            self._not_applied(ops, where, e)
            self._lost = SessionLost(
                f"the server no longer has this session ({e}): it expired after being idle, or the server "
                "restarted without it (a crash before its first snapshot); its arrays are gone there: "
                "gradserve.connect() opens a new session"
            )
            raise self._lost from e
        except BaseException as e:
            if not self._unsure(e):  # (else kept to be sent again: ``_run``)
                self._not_applied(ops, where, e)
            raise
        self._acked = seq
        return reply

    def _lost_state(self, expected: int, acked: int) -> SessionLost:
        """The server holds the session as it was before batch ``expected``, though the
        batches up to ``acked`` ran and answered: what they did is gone there. The session
        cannot go on as the arrays here say it is."""
        self._lost = SessionLost(
            f"the server lost this session's batches {expected} to {acked} (it restarted from a snapshot "
            "written before them, after a crash): the arrays they made and the changes they made are gone "
            "there; gradserve.connect() opens a new session"
        )
        return self._lost

    def _not_applied(self, ops: list[dict], where: list, exc: BaseException) -> None:
        """Instructions that did not run (or may not have): what they make is dead, what they
        change in place is lost, their frees and forgets go with the next batch (again, if they
        ran: a free or forget of what is gone does nothing)."""
        self._requeue(ops)
        dead = (
            _kept(exc) if isinstance(exc, MXNetError) else MXNetError(f"the batch that made this array failed: {exc!r}")
        )
        for ins in ops:
            if ins.get("op") != "free":
                for h in ins.get("out", ()):
                    self._dead[h] = dead
        self._undefined(ops)
        self._undo(ops)
        self._lose(ops, where, dead)

    def _fail(self, ops: list[dict], where: list, err: dict[str, Any]) -> MXNetError:
        i = err.get("index") or 0
        op = err.get("op") or ops[i].get("op")
        loc = where[i] if 0 <= i < len(where) else None
        at = f", queued at {_line(loc)}" if loc else ""
        message = err.get("message")
        if op == "call" and err.get("kind") == "UnknownHandle":  # (a parameter read by handle, freed)
            message = f"{message} ({REBOUND})"
        exc = error_from_kind(err.get("kind", "MXNetError"), f"{message} [op {op}{at}]")
        kept = _kept(exc)
        for ins in ops[i:]:
            for h in ins.get("out", ()):
                self._dead[h] = kept
        self._undefined(ops[i:])
        self._requeue(ops[i + 1 :])
        # The failing instruction raised, and changed nothing (as in an eager program), unless
        # the engine says it failed part way (a pass, a program's call): what it changes is lost too.
        part_way = 0 <= i < len(ops) and err.get("partial") is True
        self._undo(ops[i + 1 if part_way else i :])  # (what did not run at all)
        # A hybridized call that failed at its first step ran none of the function's lines
        # after it either: what they change is lost, as the plain function's would be.
        call = not part_way and 0 <= i < len(ops) and ops[i].get("op") == "call"
        first = i if part_way or call else i + 1
        self._lose(ops[first:], where[first:], kept, part_way, call)
        return exc

    def _lose(self, ops: list[dict], where: list, exc: MXNetError, part_way: bool = False, call: bool = False) -> None:
        """What these instructions (which did not run) were to change in place is lost: using
        it raises ``ChangeLost``, caused by ``exc``.

        Why not send them again with the next batch: they were queued after an instruction
        that failed, as lines after a line that raised, and may depend on what it was to do
        (``w -= lr * w.grad`` after a backward pass that failed, a value it was to write);
        the arrays made by those lines are dead already, and a program that goes on (a retry
        in a notebook, say) would apply them twice. So every effect after the failure is
        either dead or lost, and either raises when used: the program sees its batch stop at
        the failing instruction, as an eager program would have, and no array reads stale."""
        dead = self._dead
        for k, (ins, loc) in enumerate(zip(ops, where)):
            keys = self._changes(ins)
            lost: ChangeLost | None = None
            for key in keys:
                if key in dead:
                    continue  # (the first loss is the one to tell)
                if lost is None:
                    at = f" queued at {_line(loc)}" if loc else ""
                    what = "the random generator's seed" if key == RNG_KEY else "this array's in-place change"
                    # (a pass or a call that failed part way: what ran of it before it failed stays done)
                    if part_way and k == 0:
                        how = f"may have been applied in part: it failed part way ({exc})"
                    elif call and k == 0:  # (``call``: the first is a call that failed at its first step)
                        how = f"was never applied: the call failed at its first step ({exc})"
                    else:
                        how = f"was never applied: an instruction before it in its batch failed ({exc})"
                    lost = ChangeLost(
                        f"{what} ({ins.get('op')}{at}) {how}; its value is not the one the program gave it: "
                        "make it again" + (" (nd.random.seed)" if key == RNG_KEY else "")
                    )
                    lost.__cause__ = exc
                dead[key] = lost
            if ins.get("op") in ("attach_grad", "mark_variables"):
                self._lost_variables.update(keys)

    def _changes(self, ins: dict[str, Any]) -> list[int]:
        """The memory keys (``root``) of what ``ins`` changes in place."""
        op = ins.get("op")
        keys: list[int] = []
        hs = ins.get("in")
        if hs and type(hs) is list and type(hs[0]) is int:
            written = _IN_PLACE.get(op) if type(op) is str else None
            if written is not None:
                keys += [self.root(hs[i]) for i in written if i < len(hs)]
            elif op == "attach_grad":
                keys += (hs[0], -hs[0])  # the variable and its gradient buffer (``NDArray.attach_grad``)
            elif op == "mark_variables":
                keys += hs[: len(hs) // 2]
        elif op == "seed":
            keys.append(RNG_KEY)
        if self._notes:
            note = self._notes.get(id(ins))
            if note is not None and note[0] is ins:
                keys += note[1]
        return keys

    def _requeue(self, ops: list[dict]) -> None:
        """The frees and forgets among instructions that did not run go with the next batch
        (else the server would keep those arrays and programs for the session's life)."""
        frees: list[int] = []
        forgets: list[int] = []
        for ins in ops:
            if ins.get("op") == "free":
                frees += ins["in"]
            elif ins.get("op") == "forget":
                forgets += ins["at"]["ids"]
        if frees:
            self._frees[:0] = frees  # (one step: a release meanwhile appends)
        if forgets:
            self._forgets[:0] = forgets

    def _undefined(self, ops: list[dict]) -> None:
        """Note the programs these instructions were to define (they did not run)."""
        for ins in ops:
            if ins.get("op") == "define":
                self.failed_programs.add(ins["at"]["id"])
                self._program_steps.pop(ins["at"]["id"], None)

    def info(self) -> dict[str, Any]:
        """The session's id, owner, number of arrays and bytes held (sends the queue)."""
        self.flush()
        return self.transport.info()

    def _closed_error(self) -> SessionClosed:
        if self._lost is not None:
            return type(self._lost)(str(self._lost))
        return SessionClosed("this session was closed; gradserve.connect() opens a new one")

    def _forked(self) -> None:
        """In a process forked from this one's (``os.fork``, multiprocessing's fork): the
        session, its connection and its seq are the parent's, which goes on using them; this
        copy uses none of them, and does not close the session when the process ends."""
        where = getattr(self.transport, "url", "the server")
        self._lost = SessionForked(
            f"this process was forked from the one (pid {self._pid}) whose session on {where} "
            "this is: the session and its arrays stay that process's; gradserve.connect() opens a session "
            "of this process's own"
        )
        self.closed = True
        self._queue, self._where, self._frees, self._forgets, self._pending = [], [], [], [], None

    def close(self) -> None:
        """End the session (on the server too); its arrays can no longer be used. From another
        thread, a batch waiting for its reply stops at once and raises ``SessionClosed``."""
        if not self.closed:
            self.closed = True
            self._queue, self._where, self._frees, self._forgets = [], [], [], []
            self._pending = None
            self.transport.close()


def _kept(exc: MXNetError) -> MXNetError:
    """``exc`` to keep for the arrays it leaves dead: a copy with no traceback (the one it is
    raised with holds the frames it went through, and their arrays, for as long as it is kept)."""
    kept = copy.copy(exc)  # (its class and arguments, not its traceback, cause or context)
    cause = exc.__cause__
    if isinstance(cause, MXNetError):
        kept.__cause__ = _kept(cause)
    return kept


def _again(err: MXNetError) -> MXNetError:
    """A kept error, to raise once more: a new copy each time (a raise adds its frames to the
    traceback of the exception raised, and one object raised at every use kept them all)."""
    again = copy.copy(err)
    again.__cause__ = err.__cause__
    return again


class _Pending(NamedTuple):
    """A batch whose fate is not known until its reply is taken in (``Client._run``):
    ``ops[start:]``, the first batch of them under ``seq``."""

    ops: list[dict[str, Any]]
    where: list[Where | None]
    freed: list[list[int]]
    nreads: int
    start: int
    seq: int


class SessionLost(SessionClosed):
    """The server lost batches of this session that had run and answered (it restarted
    from an older snapshot after a crash): the session cannot go on."""


class SessionForked(SessionClosed):
    """The session is the one of the process this one was forked from."""


_clients: weakref.WeakSet[Client] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    global _current_lock
    _current_lock = threading.Lock()  # (a lock another thread held at the fork stays held in the child)
    for c in list(_clients):
        c._lock = threading.RLock()
        if c.transport.sequenced and not c.closed:
            c._forked()


os.register_at_fork(after_in_child=_after_fork_in_child)


_IN_PLACE = {  # instructions that write some of their inputs: which
    "update": (0,),
    "setitem": (0,),
    # an optimizer update: its weight and its states (``in``: weight, grad, states)
    **{name: (0, *range(2, 2 + len(states))) for name, (states, *_) in OPTIMIZERS.items()},
}


def _batch_limit(e: QuotaExceeded, n: int) -> int | None:
    """The server's limit of instructions per batch, when ``e`` refused a batch of ``n`` for it."""
    limit = QuotaExceeded.batch_limit(str(e))
    return limit if limit is not None and 0 < limit < n else None


def _close_quietly(ref: weakref.ref[Client]) -> None:
    client = ref()
    if client is not None:
        try:
            client.close()
        except Exception:  # at exit a server that is gone is no error worth showing
            pass


_current: Client | None = None
_current_lock = threading.Lock()


def current() -> Client:
    """The client that ``nd`` uses: made from the environment on first use."""
    global _current
    c = _current
    if c is None:
        with _current_lock:
            if _current is None:
                _current = Client(from_env())
            c = _current
    return c


def set_current(client: Client | None) -> Client | None:
    global _current
    old, _current = _current, client
    return old
