"""Programs: a list of instructions a session keeps (``define``) and runs again as one
instruction (``call``), the engine's side of the client's ``hybridize`` (MXNet's cached op).

A program names arrays by handle: a negative one is a slot of the call (``-1 .. -nargs`` its
arguments, then what its steps make, freed when the call ends), any other a handle of the
session (a parameter it reads or updates in place). A call runs its steps as a batch runs
instructions, until one fails. After a call that ran every step, the program keeps a plan:
its steps with their attributes parsed, with ``p -= lr * p.grad`` as one pass over memory,
and what that call's checks depended on; a later call that matches runs the plan without the
checks. Importing this module registers the commands (``engine/__init__.py`` does).
"""

from __future__ import annotations

import json
import time
import weakref
from typing import Any, Final

import numpy as np

from . import kernels
from .errors import InvalidInput, MXNetError, QuotaExceeded, echo
from .optable import OPS, REQUIRED, Attr, Spec, dtype_name
from .session import (
    COMMANDS,
    MAX_HANDLE,
    NODE_BYTES,
    PARSED_COMMANDS,
    RECORDING,
    TRAINING,
    Session,
    check_instruction,
    command,
)
from .tape import SHARE_EVERY, in_graph, share_gil

_OPS_GET = OPS.get

# What a program may not hold: reads and frees act on the batch and its reply, uploads carry
# data, and nested programs or Functions hold handles that outlive the call.
_NOT_IN_PROGRAMS = frozenset({"define", "call", "forget", "read", "free", "array", "record_function"})
# the attributes of commands that name handles (a program's slots may appear there too)
_HANDLE_ATTRS = {"backward": ("head_grads",), "grad_of": ("variables", "head_grads")}


class Program:
    """A defined program. Its instructions name arrays by handle: a negative one is a slot of
    the call (``-1 .. -nargs`` its arguments, the rest what its instructions make), any other
    a handle of the session (a parameter the program reads or updates in place)."""

    __slots__ = (
        "nargs",
        "steps",
        "outputs",
        "slots",
        "source",
        "reads",
        "plan",
        "sig",
        "made",
        "largest",
        "scratch",
        "last_s",
        "nbytes",
    )

    def __init__(
        self, nargs: int, steps: list[dict], outputs: list[int], slots: int, source: dict, reads: list[int]
    ) -> None:
        self.nargs = nargs
        self.steps = steps
        self.outputs = outputs
        self.slots = slots  # the most negative slot
        self.source = source  # the definition as given (snapshots keep it)
        self.reads = reads  # the session's handles it reads
        self.nbytes = 0  # what keeping it costs the server (``make_program``), counted as held
        # After a call that ran every step: its plan (``_plan``), and what that call's checks
        # depended on: the shapes and dtypes of the arguments and of the handles read, and the
        # bytes its slots took. A later call that matches them runs the plan, without the
        # checks (they would pass again).
        self.plan: list[Any] | None = None
        self.sig: tuple | None = None
        self.made = 0
        self.largest = 0
        self.scratch = 0  # the largest working array of its steps (Convolution's windows)
        self.last_s = -1.0  # how long its last call that ran every step took (-1: none yet), for a server's event loop

    def signature(self, s: Session, xs: list[np.ndarray]) -> tuple | None:
        """The shapes and dtypes a call's checks depend on; None if a handle read is gone."""
        arrays = s.arrays
        sig = [(x.shape, x.dtype) for x in xs]
        for h in self.reads:
            x = arrays.get(h)
            if x is None:
                return None
            sig.append((x.shape, x.dtype))
        return tuple(sig)

    def checked(self, s: Session, sig: tuple | None, grown: int) -> None:
        """Note a call that ran every step (its slots still held; ``grown``: the bytes the
        session's count grew by in it)."""
        if self.plan is None:
            self.plan = _plan(self)
        made = largest = 0
        for h in range(-1 - self.nargs, self.slots - 1, -1):  # the slots its steps made
            x = s.arrays.get(h)
            if x is not None and h not in s.aliases:
                made += x.nbytes
                largest = max(largest, x.nbytes)
        scratch = 0
        for e in self.plan:
            for entry in e.steps if isinstance(e, ScaledUpdate) else (e,):
                if entry[0] == _OP and entry[2].scratch is not None:
                    xs = [s.arrays.get(k) for k in entry[4]]
                    if all(x is not None for x in xs):
                        specs = [Spec(x.shape, dtype_name(x.dtype)) for x in xs if x is not None]
                        scratch = max(scratch, entry[2].scratch(entry[3], *specs))
        self.sig, self.made, self.largest, self.scratch = sig, max(made, grown), largest, scratch


# A plan's entries: a table op's step with its attributes parsed, (_OP, index, op, at, inputs,
# output, mode); a command's with its attributes parsed, (_COMMAND, index, fn, instruction);
# and a ``ScaledUpdate``.
_OP, _COMMAND = 0, 1


class ScaledUpdate:
    """``[t0 = grad(p);] t = mul_scalar(g, a); update(w, t, fn="sub")`` in a program, where
    nothing else reads t (nor t0): ``w -= g * a`` in one pass over memory (numpy's rounding:
    the same bits), with ``g`` the gradient buffer of ``p`` when the first step is there. The
    steps as written run where the kernel cannot take the arrays. It remembers (weakly) the
    arrays of its last call, so a call with the same ones skips the kernel's checks."""

    __slots__ = ("target", "source", "from_grad", "scalar", "steps", "w", "g", "a")

    def __init__(self, target: int, source: int, from_grad: bool, scalar: float, steps: list[tuple]) -> None:
        self.target = target
        self.source = source  # the array g, or the variable p whose gradient is g
        self.from_grad = from_grad
        self.scalar = scalar
        self.steps = steps
        self.w: Any = None  # weak references to the last call's arrays
        self.g: Any = None
        self.a: Any = None  # the scalar in their dtype

    def run(self, s: Session) -> bool:
        """Whether the kernel ran (else nothing happened)."""
        w = s.arrays.get(self.target)
        if self.from_grad:
            n = s.nodes.get(self.source)
            g = n.grad if n is not None and n.op is None and self.source in s.arrays else None
        else:
            g = s.arrays.get(self.source)
        if w is None or g is None:
            return False
        if self.w is None or self.w() is not w or self.g() is not g:
            if not kernels.scaled_sub_ok(w, g):
                return False
            self.w, self.g, self.a = weakref.ref(w), weakref.ref(g), w.dtype.type(self.scalar)
        kernels.scaled_sub_unchecked(w, g, self.a)
        return True


def _entry(k: int, step: dict) -> tuple:
    op = _OPS_GET(step["op"])
    if op is None:
        fn, parse = PARSED_COMMANDS[step["op"]]
        return (_COMMAND, k, fn, {**step, "at": parse(step.get("at"))})
    at = op.parse_attrs(step.get("at"))
    return (_OP, k, op, at, tuple(step.get("in", ())), step["out"][0], step.get("mode", 0))


def _plan(prog: Program) -> list[Any]:
    steps = prog.steps
    reads: dict[int, int] = {}
    for step in steps:
        for h in _slot_refs(step):
            reads[h] = reads.get(h, 0) + 1
    for h in prog.outputs:
        reads[h] = reads.get(h, 0) + 1
    plan: list[Any] = []
    k = 0
    while k < len(steps):
        step = steps[k]
        e = _entry(k, step)
        if step["op"] == "mul_scalar" and k + 1 < len(steps):
            t = step["out"][0]
            nxt = steps[k + 1]
            ins = nxt.get("in", ())
            quiet = not (step.get("mode", 0) | nxt.get("mode", 0)) & RECORDING
            if nxt["op"] == "update" and len(ins) == 2 and ins[1] == t and ins[0] != t and reads[t] == 1 and quiet:
                u = _entry(k + 1, nxt)
                if u[3]["at"]["fn"] == "sub" and u[3]["at"]["scalar"] is None and u[3]["at"]["scale"] is None:
                    g = step["in"][0]
                    prev = plan[-1] if plan else None
                    # the gradient's own alias, read only here: the buffer is read from the variable
                    if (
                        type(prev) is tuple
                        and prev[0] == _COMMAND
                        and prev[3]["op"] == "grad"
                        and prev[3].get("out", [None])[0] == g
                        and reads[g] == 1
                        and len(prev[3].get("in", ())) == 1
                    ):
                        plan[-1] = ScaledUpdate(ins[0], prev[3]["in"][0], True, e[3]["scalar"], [prev, e, u])
                    else:
                        plan.append(ScaledUpdate(ins[0], g, False, e[3]["scalar"], [e, u]))
                    k += 2
                    continue
        plan.append(e)
        k += 1
    return plan


def _slot_refs(ins: dict) -> list[Any]:
    """Every handle an instruction reads: its inputs and its handle attributes."""
    refs = list(ins.get("in", ()))
    at = ins.get("at")
    for name in _HANDLE_ATTRS.get(ins["op"], ()):
        v = at.get(name) if isinstance(at, dict) else None
        if isinstance(v, list):
            refs.extend(h for h in v if h is not None)
    return refs


PROGRAM_BYTES_PER_CHAR: Final = 24
"""A kept program costs the server about this much per character of its definition as compact
JSON (its instructions as Python dicts, lists and ints, the definition kept for snapshots, and
the plan a call builds: 12 times the text measured after a define of 50,000 steps, 19 with
its plan), counted as held bytes."""


def make_program(s: Session, at: dict) -> Program:
    """Check a definition: instructions as in a batch, each slot made before it is read."""
    nargs, steps, outputs = at["nargs"], at["program"], at["outputs"]
    if not isinstance(steps, list) or not isinstance(outputs, list):
        raise InvalidInput("define: program and outputs must be lists")
    if not 0 <= nargs <= s.limits.max_batch_ops:
        raise InvalidInput(f"define: nargs must be from 0 to {s.limits.max_batch_ops}, got {nargs}")
    if not steps:
        raise InvalidInput("define: a program needs at least one instruction")
    if s.program_steps + len(steps) > s.limits.max_program_steps:
        raise QuotaExceeded(
            f"define: programs of {s.program_steps + len(steps)} instructions in all are over the "
            f"limit of {s.limits.max_program_steps} per session"
        )
    made: set[int] = set()  # the slots made so far (-1 .. -nargs are the arguments)
    # made slots are numbered on from the arguments' (a call frees its slots one by one)
    bound = -nargs - sum(len(ins.get("out", ())) for ins in steps if isinstance(ins, dict))
    lowest = -nargs
    checked = []
    for i, ins in enumerate(steps):
        if not isinstance(ins, dict) or not isinstance(ins.get("op"), str):
            raise InvalidInput(f"define: program step {i} is not an instruction")
        name = ins["op"]
        if name in _NOT_IN_PROGRAMS:
            raise InvalidInput(f"define: program step {i}: {name} cannot be part of a program")
        if name not in COMMANDS:
            OPS[name]  # raises the table's "unknown op" error
        check_instruction(f"define: program step {i} ({name})", ins)
        if not isinstance(ins.get("in", []), list) or not isinstance(ins.get("out", []), list):
            raise InvalidInput(f"define: program step {i} ({name}): in and out must be lists")
        if ins.get("at") is not None and not isinstance(ins["at"], dict):
            raise InvalidInput(f"define: program step {i} ({name}): at must be an object")
        try:  # its attributes as a call will parse them: an unknown or mistyped one is refused now
            if name in COMMANDS:
                PARSED_COMMANDS[name][1](ins.get("at"))
            else:
                OPS[name].parse_attrs(ins.get("at"))
        except MXNetError as e:
            raise type(e)(f"define: program step {i} ({name}): {e}") from None
        for h in _slot_refs(ins):
            if type(h) is not int:
                raise InvalidInput(f"define: program step {i} ({name}) reads {echo(h)}, not an integer handle")
            if h < -nargs and h not in made:
                raise InvalidInput(f"define: program step {i} ({name}) reads slot {h} before it is made")
        for h in ins.get("out", ()):
            if type(h) is not int or h >= 0:
                raise InvalidInput(
                    f"define: program step {i} ({name}) must make slots (negative handles), got {echo(h)}"
                )
            if h >= -nargs or h in made:
                raise InvalidInput(f"define: program step {i} ({name}) makes slot {h}, an argument's or made before")
            if h < bound:
                raise InvalidInput(
                    f"define: program step {i} ({name}) makes slot {h}: number made slots from {-nargs - 1} down"
                )
            made.add(h)
            lowest = min(lowest, h)
        checked.append(ins)
    for h in outputs:
        if type(h) is not int or (h < -nargs and h not in made):
            raise InvalidInput(f"define: output {echo(h)} is not a slot the program makes or a handle")
    reads = sorted({h for ins in checked for h in _slot_refs(ins) if h >= 0})
    prog = Program(nargs, checked, list(outputs), lowest, dict(at), reads)
    prog.nbytes = PROGRAM_BYTES_PER_CHAR * len(json.dumps(at, separators=(",", ":")))
    return prog


@command(
    "define",
    "",
    (
        Attr("id", "int", REQUIRED),
        Attr("nargs", "int", REQUIRED),
        Attr("program", "key", REQUIRED),
        Attr("outputs", "key", REQUIRED),
    ),
    "Keep a program (a list of instructions whose negative handles are slots: -1 .. -nargs "
    "its arguments, the rest made by its instructions) under the id, for call. Defining an "
    "id again with the same program does nothing.",
)
def _define(s: Session, ins: dict, values: list) -> None:
    at = ins["at"]
    pid = at["id"]
    try:  # kept as plain data: snapshots write it, and a second define compares with it
        plain = json.loads(json.dumps(at))
    except (TypeError, ValueError) as e:
        plain = None
        why = f"define: a program must be plain data ({e})"
    except RecursionError:
        plain = None
        why = "define: a program must be plain data, nested less deeply"
    old = s.programs.get(pid)
    if old is not None:
        if old.source == plain:
            return  # a client that lost a reply may define again
        raise InvalidInput(f"define: program {pid} is already defined (forget it first)")
    if plain is None:
        raise InvalidInput(why)
    at = plain
    prog = make_program(s, at)
    s.check_alloc(0, prog.nbytes)
    s.programs[pid] = prog
    s.program_steps += len(prog.steps)
    s.hold_program(prog.nbytes)


@command("forget", "", (Attr("ids", "ints", REQUIRED),), "Drop programs (unknown ids are ignored).")
def _forget(s: Session, ins: dict, values: list) -> None:
    for pid in ins["at"]["ids"]:
        prog = s.programs.pop(pid, None)
        if prog is not None:
            s.program_steps -= len(prog.steps)
            s.hold_program(-prog.nbytes)


@command(
    "call",
    "arguments...",
    (Attr("id", "int", REQUIRED),),
    "Run a defined program on the arguments; out names its outputs. Like a batch, it stops at "
    "a failing instruction, whose error names the program step; what ran before it stays done.",
    outputs=True,
)
def _call(s: Session, ins: dict, values: list) -> None:
    pid = ins["at"]["id"]  # (its own mode is not read: its steps run in theirs, as they were defined)
    prog = s.programs.get(pid)
    if prog is None:
        raise InvalidInput(f"call: no program {pid} is defined in this session")
    args = list(ins.get("in", ()))
    out = list(ins.get("out", ()))
    if len(args) != prog.nargs:
        raise InvalidInput(f"call: program {pid} takes {prog.nargs} arguments, got {len(args)}")
    if len(out) != len(prog.outputs):
        raise InvalidInput(f"call: program {pid} makes {len(prog.outputs)} outputs, got {len(out)} handles")
    for h in out:
        if type(h) is not int or h < 0 or h > MAX_HANDLE or h in s.arrays:
            raise InvalidInput(f"call: output handle {echo(h)} is not a free integer handle from 0 to 2**63 - 1")
    if len(set(out)) != len(out):
        raise InvalidInput("call: output handles must be distinct")
    xs = [s.get(h) for h in args]
    if len(s.arrays) + len(out) > s.limits.max_session_arrays:
        raise QuotaExceeded(
            f"call: its {len(out)} outputs would give the session {len(s.arrays) + len(out)} arrays, over its "
            f"limit of {s.limits.max_session_arrays}: free some first"
        )
    if s._steps + len(prog.steps) > s.limits.max_batch_steps:
        raise QuotaExceeded(
            f"call: the batch would run {s._steps + len(prog.steps)} instructions with its calls, "
            f"over the limit of {s.limits.max_batch_steps}"
        )
    s._steps += len(prog.steps)
    arrays, nodes = s.arrays, s.nodes
    partial = s._partial  # (a call's steps set it; it is the caller's again when the call ends)
    s._calling = True
    cap, s._cap = s._cap, s.limits.max_array_bytes  # a call runs whole (see long_program_op)
    started = time.perf_counter()
    try:
        for i, (h, x) in enumerate(zip(args, xs)):
            slot = -1 - i
            arrays[slot] = x  # the caller's array under a second name: counted as the caller's
            n = nodes.get(h)
            if n is not None:
                nodes[slot] = n
        sig = prog.signature(s, xs)
        lim = s.limits
        nodes_made = len(prog.steps) * NODE_BYTES  # (at most: the nodes a recorded call makes)
        if (
            prog.plan is not None
            and sig == prog.sig
            and (
                s.nbytes + s.graph_bytes + prog.made + prog.scratch + nodes_made <= s._budget
                or s.room(prog.made + prog.scratch + nodes_made)
            )
            and prog.largest <= lim.max_array_bytes
        ):
            _run_plan(s, pid, prog, values)
        else:
            before = s.nbytes
            execute = s.execute
            for i, step in enumerate(prog.steps):
                if i % SHARE_EVERY == 0:
                    share_gil()
                try:
                    execute(step, values)
                except MXNetError as e:
                    raise _in_step(e, pid, prog, i) from None
                s._partial = True  # (a step ran: an error after it says the call changed state)
            prog.checked(s, sig, s.nbytes - before)
        prog.last_s = time.perf_counter() - started  # a call that ran every step (see long_program_op)
        moved: dict[int, int] = {}
        placed: list[int] = []
        try:
            for src, dst in zip(prog.outputs, out):
                first = moved.get(src)
                if src < -prog.nargs and first is None:  # a slot the program made: it becomes the output
                    moved[src] = dst
                    arrays[dst] = arrays.pop(src)
                    if src in s.aliases:
                        s.aliases.discard(src)
                        s.aliases.add(dst)
                    n = nodes.pop(src, None)
                    if n is not None:
                        nodes[dst] = n
                else:  # an argument, a handle of the session or an output given already: a copy
                    x = s.get(src if first is None else first)
                    s.check_alloc(x.nbytes)
                    s.put(dst, np.array(x, copy=True))
                placed.append(dst)
        except MXNetError:
            for dst in placed:  # a call that fails gives no outputs (those moved go with it)
                s.drop(dst)
            raise
        s._partial = partial
    finally:
        s._calling = False
        s._cap = cap
        for i, slot in enumerate(range(-1, -1 - prog.nargs, -1)):  # the arguments' second names: not counted
            arrays.pop(slot, None)
            n = nodes.pop(slot, None)
            if n is not None and n.op is None and n is not nodes.get(args[i]):  # made a variable in the call
                s._let_go(n, True)
        for slot in range(-1 - prog.nargs, prog.slots - 1, -1):
            s.drop(slot)


def _run_plan(s: Session, pid: int, prog: Program, values: list) -> None:
    """A call's steps from its plan, without the checks (see ``Program.checked``)."""
    for i, e in enumerate(prog.plan or ()):
        if i % SHARE_EVERY == 0:
            share_gil()
        if type(e) is tuple:
            _run_entry(s, pid, prog, e, values)
        elif not e.run(s):
            for step in e.steps:
                _run_entry(s, pid, prog, step, values)
        s._partial = True  # (as in a checked call)


def _run_entry(s: Session, pid: int, prog: Program, e: tuple, values: list) -> None:
    try:
        if e[0] == _COMMAND:
            e[2](s, e[3], values)
            return
        _, _, op, at, ins_h, h, mode = e
        if op.writes_at:
            at = dict(at)  # (its node keeps what the forward wrote there: one per call)
        arrays = s.arrays
        xs = [arrays[k] for k in ins_h]
        cx = s.cx
        cx.training = mode & TRAINING != 0
        y = op.forward(cx, at, *xs)
        for x in xs:
            if y is x:  # (as Session.execute: a result of its own)
                y = y.copy()
        arrays[h] = y
        if y.base is None:
            s.nbytes += y.nbytes
        else:
            s._pin(y, xs)
        if mode & RECORDING and op.inputs:
            s.link(op, at, ins_h, xs, h, y)
            if op.keeps is not None and op.keeps(at, mode & TRAINING != 0) and in_graph(s.nodes.get(h)):
                s.keep(at)  # (counted in the checked call's growth, which the plan's check takes)
    except MXNetError as err:
        raise _in_step(err, pid, prog, e[1]) from None


def _in_step(err: MXNetError, pid: int, prog: Program, i: int) -> MXNetError:
    """``err`` (of the same kind) naming the program and step that raised it (whether it is
    partial, the executor reads from the session)."""
    return type(err)(f"program {pid}, step {i} ({prog.steps[i]['op']}): {err}")
