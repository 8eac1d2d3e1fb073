"""The client runtime: client-named handles, the lazy op queue and its flushes.

Ops queue here and travel in one batch at a sync point (a value is read,
``wait_to_read``, ``nd.waitall()``) or when the queue passes its bounds. An
error found by the engine is raised at that sync point, naming the op and the
line of user code that queued it; the handles of that op and of every later op
of the batch are dead, and using one raises the same error again.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import sys
import threading
import weakref
from collections.abc import Iterator
from types import FrameType
from typing import Any

import numpy as np

from .engine.errors import InvalidInput, MXNetError, SequenceError, error_from_kind
from .transport import ConnectionLost, Transport, from_env

MAX_QUEUED_OPS = 4096
MAX_QUEUED_BYTES = 64 << 20

_HERE = os.path.dirname(os.path.abspath(__file__))
_ENGINE = os.path.dirname(os.path.abspath(sys.modules["gradserve.engine"].__file__ or _HERE))
_OURS = (_HERE + os.sep, _ENGINE + os.sep)  # (with the separator: a sibling gradserve_x.py is the user's)


class SessionClosed(MXNetError):
    """The array's session was closed."""


class NotTraceable(InvalidInput):
    """Code being traced (a hybridized function, a Function's backward) did what a trace
    cannot hold: read a value, or record an autograd.Function."""


_OUR_FILES: dict[str, bool] = {}  # file name -> whether it is gradserve's (a cache: this runs per op)


def _ours(filename: str) -> bool:
    mine = _OUR_FILES.get(filename)
    if mine is None:
        mine = _OUR_FILES[filename] = filename.startswith(_OURS)
    return mine


def _user_line() -> tuple[str, int] | None:
    """The first frame outside gradserve: the user's line that queued an op. (Keyed by file
    name: a str caches its hash, a code object computes it at every lookup.)"""
    f: FrameType | None = sys._getframe(2)
    known = _OUR_FILES.get
    while f is not None:
        filename = f.f_code.co_filename
        mine = known(filename)
        if mine is None:
            mine = _ours(filename)
        if not mine:
            return filename, f.f_lineno
        f = f.f_back
    return None


class Client:
    """One session's client side: transport, handle counter, queue."""

    def __init__(self, transport: Transport, sync: bool = False) -> None:
        self.transport = transport
        self.sync = sync or os.environ.get("GRADSERVE_SYNC", "") not in ("", "0")
        self._handles = itertools.count(1)
        self._seq = 0
        self._queue: list[dict[str, Any]] = []
        self._where: list[tuple[str, int] | None] = []
        self._qbytes = 0
        self._frees: list[int] = []
        self._program_ids = itertools.count(1)
        self._forgets: list[int] = []  # programs to drop with the next batch
        self.failed_programs: set[int] = set()  # programs whose define did not run (traced again)
        # how many times arrays were made variables (attach_grad, mark_variables): a hybridized
        # function's traces hold the graph as it was, and are made again after a change
        self.variables_changed = 0
        self._unsure = False  # whether the last batch was lost with its connection (it may have run)
        # the tensor bytes one request may carry (the server's request limit, less room for the
        # rest of a batch; None: no limit), and the queue's bound, below it
        limit = getattr(transport, "max_body_bytes", None)
        self.max_request_bytes: int | None = limit - min(1 << 20, limit // 4) if limit else None
        self.max_batch_bytes = min(MAX_QUEUED_BYTES, self.max_request_bytes or MAX_QUEUED_BYTES)
        self._dead: dict[int, MXNetError] = {}
        self._lock = threading.RLock()
        self.closed = False
        self._tls = threading.local()  # .capture: the program a Function's backward is traced into
        self._capturing = 0  # how many threads are tracing one now (no thread-local lookup per op otherwise)
        # a script that ends frees its session on the server at once, not after the idle timeout
        atexit.register(_close_quietly, weakref.ref(self))

    def handle(self) -> int:
        return next(self._handles)  # atomic: threads sharing a session get distinct handles

    def enqueue(self, ins: dict[str, Any], nbytes: int = 0) -> None:
        if self._capturing:
            capture = getattr(self._tls, "capture", None)
            if capture is not None:
                capture.append(ins)
                return
        where = _user_line()
        with self._lock:  # threads may share a session: an op must not slip between a flush's steps
            if self.closed:
                raise SessionClosed("this session was closed; gradserve.connect() opens a new one")
            if nbytes:
                if self._queue and self._qbytes + nbytes > self.max_batch_bytes:
                    self.flush()  # send what is queued first, so a batch holds at most the bound or one array
                self._qbytes += nbytes
            queue = self._queue
            queue.append(ins)
            self._where.append(where)
            if len(queue) >= MAX_QUEUED_OPS or self._qbytes >= self.max_batch_bytes or self.sync:
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
        try:
            yield program
        finally:
            self._tls.capture = None
            with self._lock:
                self._capturing -= 1

    def program_id(self) -> int:
        return next(self._program_ids)

    def forget_program(self, pid: int) -> None:
        """A program nobody can call again: dropped with the next batch (no I/O here)."""
        self._forgets.append(pid)

    def release(self, h: int) -> None:
        """A proxy died: its handle is freed with the next batch (no I/O here)."""
        self._frees.append(h)

    def check_alive(self, h: int) -> None:
        err = self._dead.get(h)
        if err is not None:
            raise err

    def flush(self, reads: tuple[int, ...] = ()) -> list[np.ndarray]:
        """Send what is queued (and reads of ``reads``); return the values read."""
        if getattr(self._tls, "capture", None) is not None:
            raise NotTraceable(self._tls.no_reads)
        if self.closed:
            raise SessionClosed("this session was closed; gradserve.connect() opens a new one")
        with self._lock:
            for h in reads:
                self.check_alive(h)
            ops, where = self._queue, self._where
            if self._frees:
                ops.append({"op": "free", "in": self._frees})
                where.append(None)
                self._frees = []
            if self._forgets:
                ops.append({"op": "forget", "at": {"ids": self._forgets}})
                where.append(None)
                self._forgets = []
            if reads:
                ops.append({"op": "read", "in": list(reads)})
                where.append(None)
            if not ops:
                return []
            self._queue, self._where, self._qbytes = [], [], 0
            reply = self._send(ops)
            err = reply.get("error")
            if err:
                raise self._fail(ops, where, err)
            values = reply.get("values")
            if not isinstance(values, list) or len(values) != len(reads):
                raise MXNetError(f"the server's reply holds no value for each of the {len(reads)} arrays read")
            return values

    def _send(self, ops: list[dict]) -> dict[str, Any]:
        """Send a batch as the next seq. After a lost connection the server may not have the
        previous one: if it says so (out of order), this batch takes that seq instead."""
        self._seq += 1
        try:
            try:
                reply = self.transport.send({"seq": self._seq, "ops": ops})
            except SequenceError as e:
                expected = SequenceError.expected(str(e))
                if not self._unsure or expected is None:
                    raise
                self._unsure = False
                # the batches lost before it ran or not (their arrays are dead either way): this
                # one takes the seq the session expects, however many were lost
                self._seq = expected
                reply = self.transport.send({"seq": self._seq, "ops": ops})
        except BaseException as e:
            self._refused(ops, e)
            raise
        self._unsure = False
        return reply

    def _refused(self, ops: list[dict], exc: BaseException) -> None:
        """A batch that came back as an error status, not a reply (over a size limit, say),
        or could not be encoded: the server applied none of it and did not take its seq, so
        the next batch reuses the seq and carries its frees; its arrays are dead, with this
        error. After a lost connection or an interrupt (Ctrl-C while waiting) it may have
        run: the seq stays taken, until the server says otherwise (see ``_send``)."""
        if isinstance(exc, ConnectionLost) or not isinstance(exc, Exception):
            self._unsure = True
        else:
            self._seq -= 1
            self._requeue(ops)
        dead = exc if isinstance(exc, MXNetError) else MXNetError(f"the batch that made this array failed: {exc!r}")
        for ins in ops:
            if ins.get("op") != "free":
                for h in ins.get("out", ()):
                    self._dead[h] = dead
        self._undefined(ops)

    def _fail(self, ops: list[dict], where: list, err: dict[str, Any]) -> MXNetError:
        i = err.get("index", 0)
        op = err.get("op") or ops[i].get("op")
        loc = where[i] if 0 <= i < len(where) else None
        at = f", queued at {loc[0]}:{loc[1]}" if loc else ""
        exc = error_from_kind(err.get("kind", "MXNetError"), f"{err.get('message')} [op {op}{at}]")
        for ins in ops[i:]:
            for h in ins.get("out", ()):
                self._dead[h] = exc
        self._undefined(ops[i:])
        self._requeue(ops[i + 1 :])
        return exc

    def _requeue(self, ops: list[dict]) -> None:
        """The frees and forgets among instructions that did not run go with the next batch
        (else the server would keep those arrays and programs for the session's life)."""
        for ins in ops:
            if ins.get("op") == "free":
                self._frees = list(ins["in"]) + self._frees
            elif ins.get("op") == "forget":
                self._forgets = list(ins["at"]["ids"]) + self._forgets

    def _undefined(self, ops: list[dict]) -> None:
        """Note the programs these instructions were to define (they did not run)."""
        for ins in ops:
            if ins.get("op") == "define":
                self.failed_programs.add(ins["at"]["id"])

    def info(self) -> dict[str, Any]:
        """The session's id, owner, number of arrays and bytes held (sends the queue)."""
        self.flush()
        return self.transport.info()

    def close(self) -> None:
        """End the session (on the server too); its arrays can no longer be used."""
        if not self.closed:
            self.closed = True
            self._queue, self._where, self._frees, self._forgets = [], [], [], []
            self.transport.close()


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
