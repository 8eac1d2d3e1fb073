"""The session's autograd commands: ``backward``, ``grad_of`` (``autograd.grad``),
``mark_variables`` and ``record_function`` (a client's ``autograd.Function``), and what a
backward pass needs around ``tape.backward``: its heads' gradients, the room its working
arrays take, and the buffers it may compute a weight's gradient straight into
(``GradSinks``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import parallel, tape
from .dispatch import Traced, traced_args
from .errors import (
    FREED,
    NO_INPUTS,
    NOT_IN_GRAPH,
    UNREACHABLE,
    AutogradError,
    DTypeError,
    InvalidInput,
    QuotaExceeded,
    ShapeError,
    UnknownHandle,
    echo,
)
from .ops import matrix_product
from .optable import OPS, REQUIRED, Attr, Spec, dtype_name, new_spec
from .session import NODE_BYTES, TRAINING, FunctionVJP, Session, command, memory_of, node_extra
from .slices import BACKWARD_NODE_NS, SLICE_NS, SliceEnds, backward_ns
from .tape import SHARE_EVERY, Node, share_gil


def heads_and_grads(s: Session, ins: dict, create_graph: bool) -> tuple[list[Node], list[Any]]:
    heads_h = list(ins.get("in", ()))
    hg_h = ins["at"]["head_grads"]
    if hg_h is None:
        hg_h = [None] * len(heads_h)
    elif not isinstance(hg_h, list) or len(hg_h) != len(heads_h):
        raise InvalidInput(
            f"{ins.get('op')}: head_grads must be null or a list of one entry per head (a handle or null), "
            f"got {echo(hg_h)}"
        )
    if s.graphs_lost and any(h in s.graphs_lost and s.nodes.get(h) is None for h in heads_h):
        raise AutogradError(
            f"{NOT_IN_GRAPH} (This array was recorded before the server restarted: recorded graphs are not "
            "kept across a restart. Record its forward pass again.)"
        )
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


class GradSinks:
    """Where a first-order backward pass computes a variable's gradient straight into its buffer
    (grad_req "write"), saving the copy of the weight's size that writing it after the pass
    costs: a ``dot``'s or ``FullyConnected``'s gradient (``Deferred(matrix_product, (a, b))``,
    their eager VJPs) becomes ``matrix_product(a, b, buffer)``, once per buffer; a second
    contribution is added into a new array and copied in after the pass, as before. A buffer
    whose memory the graph reads (an input or output of a recorded op, a head gradient) or
    another variable's buffer shares is left alone, and so is every buffer when a user's
    Function is in the graph (its backward reads the session's arrays). A pass that fails part
    way (an error in a table VJP: none is expected once the forward ran) may have written a
    buffer so far."""

    __slots__ = ("bufs", "order", "head_grads", "checked")

    def __init__(self, variables: list[Node], order: list[Node], head_grads: list[Any]) -> None:
        seen: set[int] = set()
        shared: set[int] = set()  # buffers that variables share (mark_variables): written after, in order
        for v in variables:
            o = id(memory_of(v.grad))
            (shared if o in seen else seen).add(o)
        self.bufs = {v: v.grad for v in variables if v.grad_req == "write" and id(memory_of(v.grad)) not in shared}
        self.order = order
        self.head_grads = head_grads
        self.checked = False  # the graph is looked at on the first dot (most passes have none)

    def _check(self) -> None:
        self.checked = True
        read = {id(memory_of(g)) for g in self.head_grads}
        turns = 0
        for n in self.order:  # a long graph: let waiting threads run now and then (tape.share_gil)
            turns += 1
            if turns % SHARE_EVERY == 0:
                share_gil()
            if n.op is None:
                continue
            if isinstance(n.op, FunctionVJP):
                self.bufs.clear()
                return
            read.add(id(memory_of(n.y)))  # VJPs read outputs too (exp's: g * y)
            for x in n.xs or ():
                read.add(id(memory_of(x)))
        for v in [v for v, buf in self.bufs.items() if id(memory_of(buf)) in read]:
            del self.bufs[v]

    def __call__(self, parents: tuple[Node | None, ...], cts: Any) -> Any:
        if not self.bufs:
            return cts
        out = None
        for i in range(min(len(cts), len(parents))):
            ct = cts[i]
            p = parents[i]
            if type(ct) is not tape.Deferred or ct.fn is not matrix_product or p is None or p not in self.bufs:
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
                out[i] = tape.Deferred(matrix_product, (a, b, buf), ct.cost)
        return cts if out is None else out


def check_backward(s: Session, order: list[Node], create_graph: bool = False) -> bool:
    """Refuse, before it starts, a backward pass whose largest working arrays would pass the
    session's room: an op's VJP that makes arrays many times its graph's (Pooling's and
    Convolution's windows: a 48 x 48 pool's are 2,304 times its input; an integer pow's float64
    temporaries) says how large in the op table (``vjp_scratch``); a recorded pass
    (create_graph) holds about twice as much. A pass's cotangents (each the size of an array
    its graph holds, counted already) are not counted again. (Each working array is no larger
    than the forward's, which the per-array limit allowed when it was recorded.)

    A graph with a node recorded on a part an earlier backward freed is refused here, before
    any VJP runs (BatchNorm's changes its moving statistics), as MXNet refuses it.

    Whether the graph holds an op of no gradient: a pass that brings it a cotangent other than
    zeros is refused there (``tape.backward``), as MXNet refuses it; one that reaches it only
    through inputs that take none (indices) is not."""
    need = 0
    cut = False
    for node in order:
        op = node.op
        if op is not None and getattr(op, "vjp", True) is None:  # (a client's autograd.Function has its own)
            cut = True
        for p in node.parents:
            if p is not None and not p.live:
                raise AutogradError(FREED)
        hook = getattr(op, "vjp_scratch", None)
        if hook is not None and node.xs is not None:
            specs = [new_spec(Spec, (x.shape, dtype_name(x.dtype))) for x in node.xs]
            need = max(need, int(hook(node.at, *specs)))
    if create_graph:
        need *= 2
    if need and not s.room(need):
        raise QuotaExceeded(
            f"backward: its working arrays of {need} bytes would pass the session's limit of "
            f"{s.limits.max_session_bytes} (or its user's of {s.limits.max_user_bytes}) with {s.nbytes} held: "
            "free arrays first"
        )
    return cut


def run_backward(
    s: Session,
    heads: list[Node],
    grads: list[Any],
    create_graph: bool,
    training: bool,
    order: list[Node],
    into: GradSinks | None = None,
) -> list[tuple[Node, Any]]:
    if s._in_slice and not s._calling and backward_ns(order) > SLICE_NS:
        raise SliceEnds  # (nothing computed yet: the thread that runs the rest of the batch runs it)
    if check_backward(s, order, create_graph):
        into = None  # (a pass refused part way must have written no gradient buffer)
    s.cx.training = training
    with np.errstate(all="ignore"):
        if create_graph:
            return tape.backward(s.R, heads, grads, s.R.add, traced_args, order=order)
        # eager VJPs are numpy code (and numba kernels): another array module uses the table's
        eager = s.cx.xp is np
        helpers = parallel.helpers() if eager else None
        if not eager:
            into = None
        before = s._partial
        if into is not None:
            s._partial = True  # (a weight's gradient may be computed into its buffer: an error after says so)
        pairs = tape.backward(s.F, heads, grads, np.add, eager=eager, order=order, helpers=helpers, into=into)
        s._partial = before
        return pairs


def large_graph(s: Session) -> None:
    """In a slice, leave a backward pass to the thread before its graph is walked when the
    session's live graph alone (``graph_bytes``, never less than it) has more nodes than a
    slice has time for (walking 200,000 took 270 ms)."""
    if s._in_slice and not s._calling and s.graph_bytes > SLICE_NS // BACKWARD_NODE_NS * NODE_BYTES:
        raise SliceEnds


@command(
    "backward",
    "heads...",
    (Attr("head_grads", "key", None), Attr("retain_graph", "bool", False)),
    "Backpropagate from the heads (gradient of their sum, or of head_grads), into the variables' buffers.",
)
def _backward(s: Session, ins: dict, values: list) -> None:
    large_graph(s)
    heads, grads = heads_and_grads(s, ins, False)
    order = tape.toposort(heads)
    variables = [n for n in order if n.op is None]
    if all(v.grad_req == "null" for v in variables):
        raise AutogradError(NO_INPUTS)  # as MXNet: before anything is computed or freed
    sinks = GradSinks(variables, order, grads)
    into = sinks if sinks.bufs else None  # (no buffer to write: the pass runs without the hook)
    pairs = run_backward(s, heads, grads, False, bool(ins.get("mode", 0) & TRAINING), order, into)
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
    outputs=True,
)
def _grad_of(s: Session, ins: dict, values: list) -> None:
    large_graph(s)
    at = ins["at"]
    var_h = list(at["variables"])
    out = list(ins.get("out", ()))
    if len(out) != len(var_h):
        raise InvalidInput("grad_of: one output handle per variable is needed")
    for h in out:
        if not isinstance(h, int) or isinstance(h, bool) or h in s.arrays:
            raise InvalidInput(f"grad_of: output handle {echo(h)} is not a free integer handle")
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
    heads, grads = heads_and_grads(s, ins, create)
    order = tape.toposort(heads)
    in_graph = {id(n) for n in order if n.op is None}
    for i, n in enumerate(var_nodes):
        if id(n) not in in_graph:
            raise AutogradError(UNREACHABLE.format(i + 1))
    got = {id(n): g for n, g in run_backward(s, heads, grads, create, bool(ins.get("mode", 0) & TRAINING), order)}
    s.check_alloc(sum(s.get(vh).nbytes for vh in var_h))  # the gradients it gives (each a variable's size)
    constants = 0
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
        if create and h not in s.nodes:
            # A recorded gradient that depends on no variable (of x * 2, or none flowed) is, in
            # MXNet, a graph of the head gradient's ops: a backward of it finds no input that
            # requires a gradient (NO_INPUTS), not a value outside any graph.
            s.nodes[h] = Node(grad_req="null")
            constants += 1
    if constants:
        s.made_nodes(constants)
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


@command(
    "record_function",
    "inputs...",
    (
        Attr("outputs", "ints", REQUIRED),
        Attr("program", "key", REQUIRED),
        Attr("cotangents", "ints", REQUIRED),
        Attr("gradients", "key", REQUIRED),
        Attr("training", "bool", None),
        Attr("other", "key", None),
    ),
    "Attach outputs (computed without recording) to the inputs' graph through a "
    "user Function whose backward is the given list of op instructions. A backward that reads "
    "the training flag is traced in both modes: program and gradients are its trace with the "
    "flag ``training``, other ({program, gradients}) with the other value, and a backward pass "
    "runs the one of its own mode.",
)
def _record_function(s: Session, ins: dict, values: list) -> None:
    at = ins["at"]
    in_h = list(ins.get("in", ()))
    outs, cots = list(at["outputs"]), list(at["cotangents"])
    if len(cots) != len(outs):
        raise InvalidInput("record_function: one cotangent per output is needed")
    xs = [s.get(h) for h in in_h]
    ys = [s.get(h) for h in outs]
    if len({h for h in cots if isinstance(h, int) and not isinstance(h, bool)}) != len(cots):
        raise InvalidInput("record_function: cotangents must be distinct integer handles")
    traces = [_backward_trace(s, at["program"], at["gradients"], cots, len(in_h))]
    other = at["other"]
    if other is not None:
        if at["training"] is None or not isinstance(other, dict) or set(other) != {"program", "gradients"}:
            raise InvalidInput("record_function: other is {program, gradients}, with training set")
        traces.append(_backward_trace(s, other["program"], other["gradients"], cots, len(in_h)))
    parents = tape.parents_of(s.nodes.get(h) for h in in_h)
    if parents is None:
        return
    nbytes = node_extra({"program": [t[0] for t in traces]})
    s.check_alloc(0, nbytes + len(outs) * NODE_BYTES)  # (its nodes keep the programs)
    for k, (h, y) in enumerate(zip(outs, ys)):
        vjp = FunctionVJP(s, traces[0][0], cots, traces[0][1], ys, k)
        if other is not None:
            vjp.training = at["training"]
            vjp.other = traces[1]
        vjp.nbytes = nbytes
        s.set_node(h, Node(vjp, {}, parents, tuple(xs), y))
    s.made_nodes(len(outs), nbytes)


def _backward_trace(s: Session, prog: Any, grads: Any, cots: list, n_inputs: int) -> tuple[list, list]:
    """A Function's traced backward, checked: its steps (op, inputs, output, attributes), each
    reading only the cotangents, what an earlier step made or the session's arrays, and its
    gradients (one per input, None or a handle made)."""
    if not (isinstance(grads, list) and isinstance(prog, list)):
        raise InvalidInput("record_function: outputs, cotangents, gradients and program must be lists")
    if len(grads) != n_inputs:
        raise InvalidInput("record_function: one gradient per input is needed")
    if len(prog) > s.limits.max_batch_ops:
        raise QuotaExceeded(f"record_function: program of {len(prog)} ops is over the limit")
    known = set(cots)
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
                raise UnknownHandle(f"record_function: program step {i} ({op.name}) reads unknown handle {echo(h)}")
        compiled.append((op, p_in, p_out[0], op.parse_attrs(p.get("at"))))
        known.add(p_out[0])
    for h in grads:
        if h is not None and h not in known and h not in s.arrays:
            raise UnknownHandle(f"record_function: gradient handle {echo(h)} is never made")
    return compiled, grads
