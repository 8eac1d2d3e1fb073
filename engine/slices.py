"""What a slice of a server's event loop may run.

A server starts each batch on its event loop and runs it there for a slice of time (about
``SLICE_NS``); what cannot finish within the slice is left, not started, to a thread that
runs the rest of the batch (``BatchRun.run``). Instructions cannot be stopped halfway, so
each is judged before it starts: by its size (an array of more than ``SLICE_ARRAY_BYTES``),
by its declared work (``SLICE_WORK`` multiply-adds), by a program's length, and, for ops
large enough to be timed, by the time per byte or multiply-add the process last measured
for the same op on the same dtype (``RATES``). An op not timed yet goes to the thread; its
run there times it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from .optable import Op, Spec, dtype_name, new_spec
from .tape import Node

if TYPE_CHECKING:
    from .session import Session


LONG_PROGRAM: Final = 64
"""A definition of more steps than this may take longer than a slice of the event loop to check
(a call with nothing to go by is left for the thread whatever its length: ``long_program_op``)."""


PROGRAM_OPS = frozenset({"define", "call", "record_function"})


SLICE_ARRAY_BYTES: Final = 8 << 20
"""A batch run in a slice of the event loop stops before an op that would make a larger array
(making one of 1e8 floats takes seconds), or a command whose inputs hold twice as much: the
thread that runs the rest does it. (At 1 MiB, a training step whose weights' update read
1.6 MB went to the thread every step: a thread hop costs a remote step about 10 %.)"""


SIZED_COMMANDS: set[str] = {"attach_grad", "read", "update", "setitem", "alias"}  # (and the OPTIMIZERS)
"""Commands whose work grows with their inputs' size (a slice leaves large ones to the thread)."""


def large_inputs(s: Session, ins: dict) -> bool:
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


MAX_RATES = 4096
"""The op keys ``RATES`` keeps (an attribute's string goes into a key, and any user may send
one): past it, the oldest key is dropped (its op is timed again when it next runs)."""


RATES: dict[tuple, tuple[float, int]] = {}
"""Op key (``op_key``) -> (ns per byte or multiply-add, the size it was measured on), for every
session of the process. A run on a size like the last one's sets it, never below half the
time before (one quick run does not make a slow op look quick); a run on a much larger size
sets it; one on a much smaller size leaves it (its time is mostly the op's fixed cost). An op
not timed yet is left for the thread in a slice (its first run there times it)."""


def op_key(name: str, x: Any, at: Any) -> tuple:
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


def timing(op: Op, at: dict, xs: Any, out_bytes: int, specs: list | None = None) -> tuple[tuple | None, int]:
    """An op's timing key (None: too small to time or judge) and its size: its multiply-adds
    for an op that declares them (``specs``: its inputs' specs, made from ``xs`` if not
    given), else the bytes of its output and every input (add_n's many inputs are its work).
    The per-op path times by it and the backward pass's estimate looks it up: one key."""
    first = xs[0] if xs else None
    if op.work is not None:
        if specs is None:
            specs = [new_spec(Spec, (x.shape, dtype_name(x.dtype))) for x in xs if isinstance(x, np.ndarray)]
        work = int(op.work(at, *specs))
        return (op_key(op.name, first, at) if work >= TIMED_WORK else None), work
    size = out_bytes
    for x in xs:
        if isinstance(x, np.ndarray):
            size += x.nbytes
    return (op_key(op.name, first, at) if size >= TIMED_BYTES else None), size


def expected_ns(key: tuple, size: int) -> float:
    """How long an op of ``key`` is expected to take on ``size`` units (inf: not known)."""
    rate = RATES.get(key)
    return float("inf") if rate is None else rate[0] * size


VALUE_COSTLY: Final = frozenset({"mod", "mod_scalar", "rmod_scalar"})
"""Ops whose time per element depends on the values (a float fmod of 1e300 by 1e-300 takes 2 us
an element, 1e3 times a plain one): a rate learnt on plain values does not bound them, so in a
slice of the event loop a large float one is the thread's, timed or not."""


VALUE_COSTLY_BYTES: Final = 64 << 10


def judge_in_slice(s: Session, key: tuple, size: int, values: Any) -> None:
    """In a slice of a server's event loop, leave an op (of ``key`` and ``size``) for the thread,
    not started, when it is expected past the slice or not timed yet, or when it is large and
    its cost depends on ``values`` (a float array of a ``VALUE_COSTLY`` op; None: not one)."""
    if not s._in_slice or s._calling:
        return
    if expected_ns(key, size) > SLICE_NS:
        raise SliceEnds
    if values is not None and size >= VALUE_COSTLY_BYTES and isinstance(values, np.ndarray):
        if values.dtype.kind == "f":
            raise SliceEnds


SLOW_RUN_NS: Final = 1_000_000
"""A run this long is the op's own time, not its fixed cost: it may raise the rate of any size."""


def record_rate(key: tuple, size: int, ns: float) -> None:
    per = ns / size
    old = RATES.get(key)
    if old is None:
        if len(RATES) >= MAX_RATES:
            del RATES[next(iter(RATES))]
        RATES[key] = (per, size)
    elif size > 4 * old[1]:
        RATES[key] = (per, size)
    elif 4 * size >= old[1]:
        RATES[key] = (max(per, old[0] / 2), max(size, old[1]))
    elif ns >= SLOW_RUN_NS and per > old[0]:  # (a value that costs more: mod of 1e300 by 1e-300)
        RATES[key] = (per, old[1])


class SliceEnds(Exception):
    """Raised before an op too large for a slice starts (nothing of it has run)."""


def long_program_op(s: Session, ins: dict, deadline: float) -> bool:
    """Whether a ``define`` or ``call`` might run past ``deadline`` (a slice of a server's
    event loop, which cannot stop an instruction halfway): a definition of more than
    ``LONG_PROGRAM`` steps (it is checked step by step); a call whose program's last whole
    call, with the same argument shapes, took longer than the time left; any call with nothing
    to go by (never run whole, or on other shapes: its steps are not judged one by one, and a
    few steps over arrays of megabytes, or making them, take seconds)."""
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
    return True  # never ran whole, or other shapes: the thread's, once


BACKWARD_NODE_NS: Final = 3_000
"""A backward pass's bookkeeping per node (its VJP's call, cotangents), besides the VJP's work."""


def backward_ns(order: list[Node]) -> float:
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
        if not isinstance(op, Op):
            return float("inf")
        if op.vjp is None:  # (refused or passed over: no VJP runs)
            total += BACKWARD_NODE_NS
            continue
        if node.xs is None:
            return float("inf")
        key, size = timing(op, node.at, node.xs, node.y.nbytes if isinstance(node.y, np.ndarray) else 0)
        total += (0.0 if key is None else 2 * expected_ns(key, size)) + BACKWARD_NODE_NS
    return total
