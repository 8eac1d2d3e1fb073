"""``hybridize``: a function of NDArrays traced once and run again as one instruction.

The first call with given argument shapes and dtypes (and autograd flags) runs the
function's Python as usual, collecting the instructions it queues; they go to the
engine as they would have, together with a ``define`` of the same instructions as a
program. Later calls with the same shapes queue one ``call`` of that program and run
no Python of the function: a training step costs the engine's work and one
instruction of the client's, in-process or against a server (MXNet's ``hybridize``
and cached op).

What a trace fixes, as MXNet's hybridized blocks do: Python values the function reads
(a learning rate, a slice's bounds, a branch on a Python flag) are those of the first
call; arrays it reads from outside its arguments (parameters) are read by handle at
each call, so they must change in place (``p -= lr * p.grad``, ``nd.sgd_update(...,
out=p)``), not be rebound. A function that reads a value (``asscalar``, ``print``,
``bool``: control flow on array data) cannot be traced: call it without hybridizing.
"""

from __future__ import annotations

import functools
import warnings
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from .engine import tape
from .engine.errors import InvalidInput
from .ndarray import CPU, NDArray, _back_if_lost
from .runtime import Client, NotTraceable, current
from .state import flags

NO_READS = (
    "a hybridized function cannot read array values (asscalar, asnumpy, print, bool, float: "
    "control flow on array data): call it without hybridize"
)
NOT_TRACED = {"array": "it uploads an array (pass it as an argument instead)"}
MAX_TRACES = 64
"""The traces a hybridized function keeps per session, the least recently used dropped past it
(with its program in the session): a function called with a new constant at every call would
otherwise fill the session with programs until its quota refused the next."""


_UNKEPT: Any = object()
"""A signature whose program the session could not keep: the function runs as it is written."""

_NOTHING: type = type(None)
"""A traced function's ``container`` when it returned None (it returns None at every call)."""


class _Traced:
    """One trace of a function: its program, its outputs' structure, specs and graph links."""

    __slots__ = (
        "pid",
        "container",
        "specs",
        "parents",
        "changes",
        "updates",
        "given_back",
        "shares",
        "nsteps",
        "reads",
        "ctxs",
        "released",
        "__weakref__",
    )

    def __init__(
        self,
        pid: int | None,
        container: type | None,
        specs: list[Any],
        parents: list[Any],
        changes: list[Any],
        updates: list[Any],
        given_back: list[Any],
        shares: list[Any],
        nsteps: int,
        reads: tuple[int, ...] = (),
        ctxs: list[Any] | None = None,
        released: tuple[int, ...] = (),
    ) -> None:
        self.pid = pid
        self.container = container  # tuple or list as the function returned them; None: one array
        self.specs = specs  # per output the program makes
        self.parents = parents  # per output it makes: None, or (argument indices, outside nodes) it depends on
        self.changes = changes  # what the program changes in place (``_changes``)
        # per output it makes: what a training backward through it changes in place (the
        # moving statistics of the BatchNorms on its way: as ``changes``)
        self.updates = updates
        # per output of the function: ("made", k) the program's k-th, ("arg", i) argument i
        # itself, ("array", a) an array from outside itself
        self.given_back = given_back
        self.shares = shares  # per output it makes: None, or whose memory it is a view of (as ``changes``)
        self.nsteps = nsteps  # the program's instructions (a batch's limit counts them)
        self.reads = reads  # the session's arrays the program reads by handle (parameters)
        # the arguments whose graph a backward pass of the function lets go (as it does at each call)
        self.released = released
        # per output it makes: its context, None for its first argument's (as an op's result)
        self.ctxs = ctxs or [None] * len(specs)

    def call(self, c: Client, arrays: list[NDArray]) -> Any:
        if self.pid is None:  # it queued nothing: what it returned, its arguments or outside arrays
            return _given_back(self, [], arrays)
        if c._dead:  # a parameter a failed batch left stale is refused here, as the function's own read would be
            for h in self.reads:
                c.check_alive(h)
        outs = [c.handle() for _ in self.specs]
        ins = {"op": "call", "in": [a._h for a in arrays], "out": outs, "at": {"id": self.pid}}
        if self.changes:
            c.note_changes(ins, _resolved(self.changes, c, arrays))
        for h, share in zip(outs, self.shares):
            if share is not None:
                c.share(h, _resolved([share], c, arrays)[0])
        # a backward pass of the function lets its argument's graph go at each call, as the
        # plain function's does: here too, so that a second pass raises at its call
        order = tape.toposort([arrays[i]._node for i in self.released]) if self.released else None
        if order:
            _back_if_lost(c, ins, order)
        c.enqueue(ins, steps=self.nsteps)
        if order:
            tape.release(order)
        made: list[NDArray] = []
        for h, spec, deps, updates in zip(outs, self.specs, self.parents, self.updates):
            node = None
            if deps is not None:  # recorded at the trace: recorded again
                idx, outside = deps
                ps = tape.parents_of([arrays[i]._node for i in idx] + outside)
                if ps is not None:
                    node = tape.Node(HybridCall, tuple(_resolved(updates, c, arrays)) or None, ps)
            ctx = self.ctxs[len(made)]
            made.append(NDArray(c, h, spec, node, ctx if ctx is not None or not arrays else arrays[0]._ctx))
        return _given_back(self, made, arrays)


class _Bound:
    # A hybridized method bound to its instance, which it holds (as a bound method does): the
    # instance's traces are kept beside the function, which does not (``__get__``). Two are
    # equal where their instance and function are, and a copy is the copied instance's method.

    __slots__ = ("__self__", "_fn", "__weakref__")

    def __init__(self, obj: Any, fn: HybridFunction) -> None:
        self.__self__ = obj
        self._fn = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._fn(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:  # (traces, __name__, ...: the function's)
        if name == "_fn":  # (not set: a copy being made)
            raise AttributeError(name)
        return getattr(self._fn, name)

    @property
    def __doc__(self) -> str | None:  # type: ignore[override]
        return self._fn.__doc__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Bound) and other.__self__ is self.__self__ and other._fn is self._fn

    def __hash__(self) -> int:
        return hash((id(self.__self__), id(self._fn)))

    def __reduce__(self) -> Any:  # (copied or pickled as Python's methods are: the name on the instance)
        return getattr, (self.__self__, self._fn.fn.__name__)

    def __repr__(self) -> str:
        return f"<bound {self._fn!r} of {self.__self__!r}>"


def _given_back(t: _Traced, made: list[NDArray], arrays: list[NDArray]) -> Any:
    """What a call of trace ``t`` returns, of the arrays its program ``made`` and the call's."""
    if t.container is _NOTHING:
        return None
    result = [made[v] if kind == "made" else (arrays[v] if kind == "arg" else v) for kind, v in t.given_back]
    return result[0] if t.container is None else t.container(result)


class HybridCall:
    """Marks a client-side node made by a hybridized function's call."""

    name = "call"


def _key_of(arg: Any) -> Any:
    if isinstance(arg, NDArray):
        return (arg._spec.shape, arg._spec.dtype)
    return _const_key(arg)


def _const_key(v: Any) -> Any:
    """A constant's key: its type and value, the same within tuples and lists (a tuple's
    elements compare by ==, so (1,) and (True,), (0.0,) and (-0.0,) would share a trace)."""
    t = type(v)
    if isinstance(v, NDArray):  # (one inside a tuple or list: an argument itself is keyed above)
        # a constant is part of the signature and kept with the trace: arrays in it would be
        # fixed into the program and held for good
        raise InvalidInput("hybridized functions take arrays as positional arguments, not inside a tuple")
    if t is float or t is complex or isinstance(v, (np.floating, np.complexfloating)):
        return (t, repr(v))  # by repr: NaN equals itself, -0.0 differs from 0.0
    if t is tuple or t is list:
        return (t, tuple(_const_key(x) for x in v))
    if t is frozenset:
        return (t, frozenset(_const_key(x) for x in v))
    try:
        hash(v)
    except TypeError:
        raise InvalidInput(f"hybridized functions take NDArrays and hashable constants, got {t.__name__}") from None
    return (t, v)


class HybridFunction:
    """``fn`` traced per argument signature (see the module docstring)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        # the instances it is a method of: their bound functions, by id, while they live
        self._bound: dict[int, tuple[weakref.ref[Any], HybridFunction]] = {}
        # per session: the variables' version the traces were made with, and the traces by signature
        self._traces: weakref.WeakKeyDictionary[Client, tuple[int, dict[Any, _Traced]]] = weakref.WeakKeyDictionary()
        self._warned = False
        self._warned_unkept = False
        functools.update_wrapper(self, fn)

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        """A method, traced per instance: each instance's traces are its own and go with it.
        They are kept here by the instance's identity (not its equality, nor in its
        ``__dict__``, where a copy would take them and a subclass's method be hidden behind
        them), without holding it; the bound method given back holds it, as Python's do."""
        if obj is None:
            return self
        k = id(obj)
        held = self._bound.get(k)
        if held is not None and held[0]() is obj:
            return _Bound(obj, held[1])
        bound_by_id = self._bound

        def gone(_: Any) -> None:
            bound_by_id.pop(k, None)

        try:
            ref = weakref.ref(obj, gone)
        except TypeError:
            raise TypeError(
                f"hybridize: {type(obj).__name__} has __slots__ without '__weakref__': add it, so that "
                "a hybridized method's traces can go with each instance"
            ) from None
        fn = self.fn

        @functools.wraps(fn)
        def method(*args: Any, **kwargs: Any) -> Any:
            return fn(ref(), *args, **kwargs)

        bound = HybridFunction(method)
        self._bound[k] = (ref, bound)
        return _Bound(obj, bound)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        arrays = [a for a in args if isinstance(a, NDArray)]
        c = arrays[0]._c if arrays else current()
        for a in arrays:
            if a._c is not c:
                raise InvalidInput("hybridized function: arrays from different sessions cannot be mixed")
            if c._dead:
                c.check_alive(a._h)
        if c.capturing():  # inside another trace: its instructions become part of that one
            return self.fn(*args, **kwargs)
        # the graph the trace saw: which arguments were in one, and the session's variables as
        # they were (a trace links its outputs to the nodes it reached; attach_grad makes new ones)
        key: tuple = (
            flags.recording,
            flags.training,
            tuple(_key_of(a) for a in args),
            tuple(tape.in_graph(a._node) for a in arrays),
        )
        if kwargs:
            for name, v in kwargs.items():
                if isinstance(v, NDArray):
                    raise InvalidInput(f"hybridized function: pass the array {name}= as a positional argument")
            key += tuple(sorted((name, _key_of(v)) for name, v in kwargs.items()))
        held = self._traces.get(c)
        if held is None or held[0] != c.variables_changed:  # none yet, or of another graph: dropped
            held = self._traces[c] = (c.variables_changed, {})
        traces = held[1]
        t = traces.get(key)
        if t is _UNKEPT:
            return self.fn(*args, **kwargs)
        if t is not None:
            if t.pid not in c.failed_programs:
                if len(traces) > 1:
                    traces[key] = traces.pop(key)  # the most recently used goes last (the bound drops the first)
                return t.call(c, arrays)
            c.failed_programs.discard(t.pid)  # its define failed (the error was raised): trace again
        out, t = self._trace(c, args, kwargs, arrays)
        traces.pop(key, None)
        traces[key] = t
        if len(traces) > MAX_TRACES:
            del traces[next(iter(traces))]  # the least recently used: its program is forgotten (``_forget``)
            if not self._warned:
                self._warned = True
                warnings.warn(
                    f"{self!r}: more than {MAX_TRACES} signatures in one session, the least recently "
                    "used dropped: a trace is made per constant, so a Python number that changes at "
                    "every call (a decaying learning rate) makes one per value; pass it as an array "
                    "argument (nd.array([lr])) instead",
                    RuntimeWarning,
                    stacklevel=2,
                )
        return out

    def _unkept(self, c: Client, steps: int) -> None:
        if not self._warned_unkept:
            self._warned_unkept = True
            warnings.warn(
                f"hybridized {getattr(self.fn, '__qualname__', self.fn)!s}: its trace of {steps} instructions "
                f"would pass the {c.max_program_steps} "
                "the session keeps in all its programs (the server's max_program_steps): the function "
                "runs without hybridize for these arguments in this session (fewer hybridized "
                "signatures leave more room)",
                RuntimeWarning,
                stacklevel=5,  # (the caller of the function: _trace_holding, _trace, __call__ between)
            )

    def __repr__(self) -> str:
        n = self.traces
        return f"<hybridized {getattr(self.fn, '__qualname__', self.fn)!s}: {n} trace{'' if n == 1 else 's'}>"

    @property
    def traces(self) -> int:
        """How many signatures have been traced (in all sessions)."""
        return sum(len(t) for _, t in self._traces.values())

    def _trace(
        self, c: Client, args: tuple[Any, ...], kwargs: dict[str, Any], arrays: list[NDArray]
    ) -> tuple[Any, _Traced]:
        # The frees of the arrays made while tracing wait until the instructions that make them
        # are queued (after the capture, below)
        with c.holding_frees() as floor:
            return self._trace_holding(c, args, kwargs, arrays, floor)

    def _trace_holding(
        self, c: Client, args: tuple[Any, ...], kwargs: dict[str, Any], arrays: list[NDArray], floor: int
    ) -> tuple[Any, _Traced]:
        # The function sees each argument under a name of its own (an alias: the same array,
        # the same place in the graph), and only those names become the call's slots: the same
        # array passed twice, or also read directly (a parameter), stays apart in the program.
        live = [tape.in_graph(a._node) for a in arrays]  # (what a backward pass of it lets go, below)
        names = []
        for a in arrays:
            h = c.handle()
            c.enqueue({"op": "alias", "in": [a._h], "out": [h]})
            names.append(NDArray(c, h, a._spec, a._node, a._ctx))  # (its own memory key until traced: see below)
        given = iter(names)
        args = tuple(next(given) if isinstance(a, NDArray) else a for a in args)
        steps: list[dict[str, Any]] = []
        try:
            with c.capture(NO_READS) as captured:
                steps = captured
                c._tls.arguments = {a._h for a in names}
                out = self.fn(*args, **kwargs)
        except NotTraceable:
            c.drop_captured()  # (what the client noted for the steps it dropped goes with them)
            raise  # it cannot be traced: nothing of it is queued (call it without hybridize)
        except BaseException:
            c._tls.undo = []
            for ins in steps:  # what it queued before its error goes, as without hybridize
                c.enqueue(ins)
            raise
        try:
            container: type | None = None
            outs: list[Any] | None = None
            if isinstance(out, NDArray):
                outs = [out]
            elif type(out) in (tuple, list):
                container, outs = type(out), list(out)
            elif out is None:  # (a training step that returns nothing: as without hybridize)
                container, outs = _NOTHING, []
            if outs is None or not all(isinstance(o, NDArray) for o in outs):
                got = type(out).__name__
                if outs is not None:  # (a tuple or list holding something else: say what)
                    others = {type(o).__name__ for o in outs if not isinstance(o, NDArray)}
                    got += " holding " + ", ".join(sorted(others))
                raise InvalidInput(
                    f"a hybridized function returns an NDArray, a tuple or list of them, or None; got {got} "
                    "(call it without hybridize, or return its arrays flat)"
                )
            for o in outs:
                if o._c is not c:
                    raise InvalidInput("hybridized function: it returned an array of another session")
            # An output that is an argument, or an array from outside (a parameter), is that array
            # itself, at every call, as without hybridize: not a program output (which is a copy);
            # an array returned twice is one array
            argument = {a._h: i for i, a in enumerate(names)}
            given_back: list[Any] = []
            made_outs: list[NDArray] = []
            made_index: dict[int, int] = {}
            for o in outs:
                if o._h in argument:
                    given_back.append(("arg", argument[o._h]))
                elif o._h < floor:
                    given_back.append(("array", o))
                else:
                    k = made_index.get(o._h)
                    if k is None:
                        k = made_index[o._h] = len(made_outs)
                        made_outs.append(o)
                    given_back.append(("made", k))
            if any(kind != "made" for kind, _ in given_back):
                result = [
                    made_outs[v] if kind == "made" else (arrays[v] if kind == "arg" else v) for kind, v in given_back
                ]
                out = result[0] if container is None else container(result)
            slot = {a._h: -1 - i for i, a in enumerate(names)}
            nargs = len(arrays)
            program = []
            made = nargs  # slots -1 .. -nargs are the arguments'
            for ins in steps:
                why = NOT_TRACED.get(ins["op"])
                if why is not None:
                    raise InvalidInput(f"hybridize: cannot trace {getattr(self.fn, '__name__', 'the function')}: {why}")
                new = _renamed(ins, slot)
                if "out" in ins:
                    for h in ins["out"]:
                        made += 1
                        slot[h] = -made
                    new["out"] = [slot[h] for h in ins["out"]]
                program.append(new)
            outputs = [slot.get(o._h, o._h) for o in made_outs]
            # what a later call changes, and which of its outputs are views of what, known while
            # the arguments' names are their own memory keys; then they are the callers' arrays'
            changes = _changes(c, steps, names, arrays, floor)
            updates = [_updates(o, names, floor) for o in made_outs]
            shares = [_whose(c, o, argument, floor) for o in made_outs]
            callers = {name._h: c.root(a._h) for name, a in zip(names, arrays)}
            for h, k in list(c._roots.items()):  # views the trace made of the names: of the callers' arrays
                if k in callers:
                    c.share(h, callers[k])
            for h, k in callers.items():
                c.share(h, k)
            # what the trace's own nodes' VJPs will change (BatchNorm's moving statistics): the
            # names' keys are the callers' arrays' now, and stay so after the names are freed
            for n in tape.toposort([o._node for o in made_outs if o._node is not None]):
                if n.op is not None and type(n.at) is tuple:
                    n.at = tuple(c.root(h) for h in n.at)
        except BaseException:
            c.drop_captured()  # refused after all: its steps are dropped, and what was noted for them
            raise
        c._tls.undo = []
        pid: int | None = None  # a trace that queued no instruction (a branch of no op): no program
        if program:
            # the definition first: the instructions of this call then run as the function's would
            pid = c.define_program(program, nargs, outputs)
            if pid is None:  # the session cannot keep it: this call, and the next, run as the function's
                for ins in steps:
                    c.enqueue(ins)
                self._unkept(c, len(program))
                return out, _UNKEPT
        for ins in steps:
            c.enqueue(ins)
        specs = [o._spec for o in made_outs]
        # an output in its first argument's context is in the caller's first argument's at each
        # call; one in another (a creation's ctx, a parameter's) stays in that one
        # (by identity: an op's result has its first input's context object; a creation's, a
        # parameter's, is another, even when it names the same device)
        first = arrays[0]._ctx if arrays else None
        ctxs = [None if arrays and o._ctx is first else (o._ctx or CPU) for o in made_outs]
        links = [_links(o, arrays) for o in made_outs]
        reads = tuple(sorted({h for ins in program for h in ins.get("in", ()) if type(h) is int and h >= 0}))
        released = tuple(i for i, a in enumerate(arrays) if live[i] and not tape.in_graph(a._node))
        t = _Traced(
            pid, container, specs, links, changes, updates, given_back, shares, len(program), reads, ctxs, released
        )
        if pid is not None:
            weakref.finalize(t, _forget, weakref.ref(c), pid)
        return out, t


def _updates(o: NDArray, names: list[NDArray], floor: int) -> list[Any]:
    """What a training backward through the traced output ``o`` changes in place (the moving
    statistics of the BatchNorms recorded on its way), as ``_changes`` writes it: ("arg", i)
    for argument i's array, ("key", k) for one from outside."""
    if o._node is None:
        return []
    args = {a._h: i for i, a in enumerate(names)}
    out: list[Any] = []
    for n in tape.toposort([o._node]):
        if n.op is not None and type(n.at) is tuple:  # (keys as recorded: the names' own, in the trace)
            for k in n.at:
                if k in args:
                    out.append(("arg", args[k]))
                elif abs(k) < floor:
                    out.append(("key", k))
    return out


def _changes(
    c: Client, steps: list[dict[str, Any]], names: list[NDArray], arrays: list[NDArray], floor: int
) -> list[Any]:
    """What a program changes in place, for a call that never runs (``Client._lose``): per
    memory key its steps change, ("arg", i) for argument i's array (its name in the trace),
    ("grad", i) for its gradient, or ("key", k) for an array from outside (a parameter, its
    gradient). Arrays made by the trace itself (handles from ``floor`` on) are the call's own:
    dead with it."""
    args = {a._h: i for i, a in enumerate(names)}
    grads = {a._node.y: i for i, a in enumerate(arrays) if a._node is not None and a._node.op is None}
    out: list[Any] = []
    seen: set[int] = set()
    for ins in steps:
        for k in c._changes(ins):
            if k in seen:
                continue
            seen.add(k)
            if k in args:
                out.append(("arg", args[k]))
            elif k in grads:
                out.append(("grad", grads[k]))
            elif abs(k) < floor:
                out.append(("key", k))
    return out


def _whose(c: Client, o: NDArray, argument: dict[int, int], floor: int) -> Any:
    """Whose memory a made output is a view of, as ``_changes`` writes it (None: its own)."""
    k = c.root(o._h)
    if k == o._h:
        return None
    if k in argument:
        return ("arg", argument[k])
    return ("key", k) if k < floor else None


def _resolved(changes: list[Any], c: Client, arrays: list[NDArray]) -> list[int]:
    """A program's ``_changes`` for a call with ``arrays``: memory keys."""
    keys = []
    for kind, v in changes:
        if kind == "arg":
            keys.append(c.root(arrays[v]._h))
        elif kind == "grad":
            n = arrays[v]._node
            if n is not None and n.op is None and n.y is not None:
                keys.append(n.y)
        else:
            keys.append(v)
    return keys


def _renamed(ins: dict[str, Any], slot: dict[int, int]) -> dict[str, Any]:
    """An instruction with the arguments' and made arrays' handles turned into slots."""
    new = dict(ins)
    if "in" in ins:
        new["in"] = [slot.get(h, h) for h in ins["in"]]
    at = ins.get("at")
    if at and (ins["op"] in ("backward", "grad_of")):
        at = dict(at)
        for name in ("head_grads", "variables"):
            if isinstance(at.get(name), list):
                at[name] = [None if h is None else slot.get(h, h) for h in at[name]]
        new["at"] = at
    return new


def _links(o: NDArray, arrays: list[NDArray]) -> Any:
    """What a call's output ``o`` hangs from in the graph: the arguments (by index) and the
    nodes from outside (variables) that its trace reached; None when it is not recorded."""
    if not tape.in_graph(o._node):
        return None
    index = {id(a._node): i for i, a in enumerate(arrays) if a._node is not None}
    idx: list[int] = []
    outside: list[Any] = []
    for n in tape.toposort([o._node]):
        i = index.get(id(n))
        if i is not None:
            idx.append(i)
        elif n.op is None:
            outside.append(n)
    return (idx, outside)


def _forget(ref: weakref.ref[Client], pid: int) -> None:
    c = ref()
    if c is not None and not c.closed:
        c.forget_program(pid)


def hybridize(fn: Callable[..., Any] | None = None) -> Any:
    """Trace ``fn`` once per argument signature and run it again as one instruction.

    >>> from gradserve import autograd, hybridize, nd
    >>> w = nd.ones((2, 2)); w.attach_grad()
    >>> @hybridize
    ... def step(x):
    ...     with autograd.record():
    ...         loss = (nd.dot(x, w) ** 2).sum()
    ...     loss.backward()
    ...     w[:] = w - 0.1 * w.grad
    ...     return loss
    >>> x = nd.ones((1, 2))
    >>> print(step(x).asscalar(), step(x).asscalar(), step.traces)
    8.0 2.88 1
    """
    if fn is None:
        return hybridize
    if isinstance(fn, HybridFunction):
        return fn
    if not callable(fn):
        raise TypeError(f"hybridize takes a function, got {type(fn).__name__}")
    return HybridFunction(fn)


__all__ = ["HybridFunction", "hybridize"]
