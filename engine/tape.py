"""The autograd graph as data: nodes, their order, and the backward pass.

A node records one op applied while recording (the op, its attributes, the
parent nodes and the input and output values its VJP needs) or a variable (an
array with ``attach_grad``: its gradient buffer and grad_req). The client
keeps the same nodes without values, to know autograd misuse at the call.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import numpy as np

from .errors import FREED, NON_DIFFERENTIABLE, NOT_IN_GRAPH, AutogradError
from .gil import breathe
from .optable import ZERO_VJPS

GRAD_REQS = ("write", "add", "null")

SHARE_EVERY: Final = 32  # loop turns between a long compiled loop's pause points (``share_gil``)


def share_gil() -> None:
    """A pause point of a long compiled loop: a thread that has waited the switch interval for
    the GIL takes it here, as it would between two lines of interpreted Python
    (engine/gil.py). With none waiting, a function call."""
    breathe()


class Node:
    """One vertex of the recorded graph (a variable when ``op`` is None)."""

    __slots__ = ("op", "at", "parents", "xs", "y", "grad", "grad_req", "live")

    def __init__(
        self,
        op: Any = None,
        at: Any = None,  # the op's attributes (a client's autograd.Function node: the Function)
        parents: tuple[Node | None, ...] = (),
        xs: tuple[Any, ...] | None = None,
        y: Any = None,
        grad: Any = None,
        grad_req: str = "write",
    ) -> None:
        self.op = op
        self.at = at
        self.parents = parents
        self.xs = xs
        self.y = y
        self.grad = grad
        self.grad_req = grad_req
        self.live = True

    @property
    def is_variable(self) -> bool:
        return self.op is None

    def __repr__(self) -> str:
        what = "variable" if self.op is None else getattr(self.op, "name", str(self.op))
        return f"<Node {what}{'' if self.live else ' (freed)'}>"


class Deferred:
    """A cotangent computed only when its input leads to a variable: ``fn(*args)``.
    ``cost`` (multiply-adds) tells the backward pass whether to compute it in a helper
    thread beside the node's other costly cotangents (engine/parallel.py)."""

    __slots__ = ("fn", "args", "cost")

    def __init__(self, fn: Any, args: tuple[Any, ...], cost: int) -> None:
        self.fn = fn
        self.args = args
        self.cost = cost

    def __call__(self) -> Any:
        return self.fn(*self.args)


class Patch:
    """A cotangent that is zeros but for one block: ``g`` added at the basic ``key`` (integers,
    slices, new axes) of an array of ``shape`` (the eager VJP of a slice, ``x[t]``). A
    first-order pass adds it in place into a sum of cotangents it owns (``Sum``), so a loop
    over ``x``'s slices costs each slice's size, not ``x``'s; called, it is the dense array."""

    __slots__ = ("shape", "key", "g")

    def __init__(self, shape: tuple[int, ...], key: tuple, g: Any) -> None:
        self.shape = shape
        self.key = key
        self.g = g

    def add_into(self, z: np.ndarray) -> None:
        """Add the block into ``z`` (of ``shape``), in place."""
        block = z[self.key]
        if type(block) is np.ndarray:
            block += self.g.reshape(block.shape)
        else:  # one element: numpy gives a scalar, not a view
            z[self.key] = block + self.g.reshape(())

    def __call__(self) -> np.ndarray:
        z = np.zeros(self.shape, self.g.dtype)
        self.add_into(z)
        return z


class Sum:
    """A sum of cotangents held by a first-order pass in an array it made, so nothing else
    reads it: the next cotangent for the same node is added into it in place."""

    __slots__ = ("a",)

    def __init__(self, a: np.ndarray) -> None:
        self.a = a


def _summed(prev: Any, ct: Any) -> Sum:
    """``prev + ct`` in a first-order pass where either is a ``Patch`` or ``prev`` a ``Sum``:
    into ``prev``'s array where it is a ``Sum``, else into a new one."""
    if type(prev) is Sum:
        acc = prev
    else:
        acc = Sum(prev() if type(prev) is Patch else np.array(prev, copy=True))
    a = acc.a
    if type(ct) is Patch:
        ct.add_into(a)
    elif type(ct) is np.ndarray and ct.shape == a.shape and ct.dtype == a.dtype:
        np.add(a, ct, out=a)
    else:  # (another dtype or a broadcast: np.add's result, as the pass without sums gives)
        acc.a = np.add(a, ct)
    return acc


PARALLEL_COST: Final = 1 << 20  # multiply-adds below which a helper thread's hand-off costs more than it saves


class Pending:
    """A variable's cotangent that a helper thread is computing (``side_by_side``)."""

    __slots__ = ("helper", "done", "value")

    def __init__(self, helper: Any) -> None:
        self.helper = helper
        self.done = False
        self.value: Any = None

    def take(self) -> Any:
        """The cotangent: waits for the helper (or computes it, if the helper has not started)."""
        if not self.done:
            self.done = True  # taken once, even when it raises
            self.value = self.helper.take()
        return self.value


def _taken(ct: Any) -> Any:
    return ct.take() if isinstance(ct, Pending) else ct


def _any(ct: Any) -> bool:
    """Whether a cotangent (an array, or a recorded pass's value with its node) is not all zeros."""
    return bool(np.any(getattr(ct, "value", ct)))


def side_by_side(helpers: Any, parents: tuple[Node | None, ...], cts: Any, pending: list[Pending]) -> Any:
    """A node's cotangents, its costly needed ones (``Deferred`` of at least ``PARALLEL_COST``)
    given to free helper threads (engine/parallel.py) where this thread has other work:

    - one that goes to a variable is needed only when the pass ends: a helper computes it
      while this thread goes on with the pass (a ``Pending`` in its place, also in ``pending``);
    - of those left, two or more are computed at once: helpers take all but the first, this
      thread computes the first, then takes theirs.

    Where the node has no other needed cotangent (``dot`` of data and a weight: only the
    weight's), this thread computes it at once: a helper would only add its hand-off."""
    big = []
    needed = 0
    for i in range(len(cts)):
        ct = cts[i]
        p = parents[i] if i < len(parents) else None
        if ct is None or p is None or not p.live:
            continue
        needed += 1
        if isinstance(ct, Deferred) and ct.cost >= PARALLEL_COST:
            big.append(i)
    if not big or needed < 2:
        return cts
    out = list(cts)
    inner = []
    for i in big:
        p = parents[i]
        h = helpers.pick() if p is not None and p.op is None else None
        if h is None:
            inner.append(i)
            continue
        h.give(out[i])
        out[i] = Pending(h)
        pending.append(out[i])
    if len(inner) < 2:
        return out
    given = []
    for i in inner[1:]:
        h = helpers.pick()
        if h is None:
            break
        h.give(out[i])
        given.append((i, h))
    try:
        out[inner[0]] = out[inner[0]]()
    finally:
        for i, h in given:
            out[i] = h.take()
    return out


def in_graph(node: Node | None) -> bool:
    return node is not None and node.live


def parents_of(nodes: Iterable[Node | None]) -> tuple[Node | None, ...] | None:
    """The live parents of a new op, or None when no input is in a graph."""
    ps = tuple([n if n is not None and n.live else None for n in nodes])
    for p in ps:
        if p is not None:
            return ps
    return None


def toposort(heads: Iterable[Node]) -> list[Node]:
    """Nodes reachable from ``heads``, parents before children (iterative)."""
    order: list[Node] = []
    seen: set[Node] = set()  # nodes hash by identity
    add = seen.add
    turns = 0
    for head in heads:
        if head in seen:
            continue
        add(head)
        # each stack entry is a node and an iterator over its parents
        stack = [(head, iter(head.parents))]
        while stack:
            turns += 1
            if turns % SHARE_EVERY == 0:
                share_gil()
            node, it = stack[-1]
            for p in it:
                if p is not None and p.live and p not in seen:
                    add(p)
                    stack.append((p, iter(p.parents)))
                    break
            else:
                stack.pop()
                order.append(node)
    return order


def check_heads(heads: Iterable[Node | None]) -> list[Node]:
    """The heads' nodes, or MXNet's error when one is not in a graph."""
    out = []
    for h in heads:
        if h is None or not h.live:
            raise AutogradError(NOT_IN_GRAPH)
        out.append(h)
    return out


def release(order: Iterable[Node]) -> int:
    """Free a graph after backward: op nodes die, variables stay; how many nodes died."""
    turns = 0
    freed = 0
    for n in order:
        turns += 1
        if turns % SHARE_EVERY == 0:
            share_gil()
        if n.op is not None and n.live:
            freed += 1
            n.live = False
            n.parents = ()
            n.xs = None
            n.y = None
            n.at = None  # (Dropout's mask)
    return freed


ZERO: Final = object()
"""A node's cotangent when only ops of zero gradient by design (``ZERO_VJPS``) sent it one: its
VJP is not run and it passes the mark on, as MXNet's gradient pass passes its zero nodes,
unless its VJP changes its inputs (BatchNorm's moving statistics in training: MXNet's op of
several outputs runs on zeros). A real cotangent replaces the mark."""


def _zero_parents(cot: dict, parents: tuple[Node | None, ...]) -> None:
    """Mark the live parents no cotangent has reached yet with ``ZERO``."""
    for p in parents:
        if p is not None and p.live and p not in cot:
            cot[p] = ZERO


def eager_args(node: Node) -> tuple[Any, tuple[Any, ...]]:
    """A node's output and inputs as plain arrays, for a first-order VJP."""
    return node.y, node.xs  # type: ignore[return-value]


def backward(
    F: Any,
    heads: list[Node],
    head_grads: list[Any],
    add: Any,
    vjp_args: Any = eager_args,
    eager: bool = False,
    order: list[Node] | None = None,
    helpers: Any = None,
    into: Any = None,
) -> list[tuple[Node, Any]]:
    """Run the chain rule from ``heads``; return (variable, gradient) pairs.

    ``F`` calls ops for the VJPs, ``add`` sums two cotangents and ``vjp_args``
    gives a node's output and inputs as ``F`` wants them (plain arrays, or
    arrays with their nodes when the backward pass is itself recorded).
    A VJP may return a function in place of a costly cotangent: it is called
    only when that input leads to a variable (``dot`` skips the data's
    gradient that way). Writing gradients into the variables' buffers is the
    caller's business. With ``eager`` (a first-order pass on plain arrays),
    an op's ``eager_vjp`` runs in place of its table VJP where it has one.
    ``order`` is ``toposort(heads)`` when the caller has it already. With ``helpers``
    (threads, engine/parallel.py), costly cotangents go to them (``side_by_side``).
    ``into(parents, cts)``, optional, may rewrite a node's cotangents before they are
    computed (the caller's ``GradSinks``: a weight's gradient computed straight into its
    buffer); it is given every node's.
    """
    if order is None:
        order = toposort(heads)
    # A parent that is not live was freed by a backward since its child was recorded: a
    # cotangent for it is refused, as MXNet refuses it (the session's passes are refused before
    # they start, by ``backprop.check_backward``).
    cot: dict[Node, Any] = {}  # nodes hash by identity
    for h, g in zip(heads, head_grads):
        cot[h] = g if h not in cot else add(cot[h], g)
    out: list[tuple[Node, Any]] = []
    pending: list[Pending] = []  # variables' cotangents that helpers are computing
    pop = cot.pop
    get = cot.get
    turns = 0
    try:
        for node in reversed(order):
            turns += 1
            if turns % SHARE_EVERY == 0:
                share_gil()
            g = pop(node, None)
            if g is None:
                continue
            if g is ZERO:  # only zeros by design reach it (MXNet's zero gradient nodes)
                op = node.op
                if op is None:
                    continue  # (a variable: no gradient, a zero one where it is written)
                updates = getattr(op, "vjp_updates", None)
                if updates is None or not updates(node.at):
                    _zero_parents(cot, node.parents)  # its VJP is not run: nothing of it is needed
                    continue
                # a VJP that changes its inputs (BatchNorm's moving statistics in training) runs
                # on zeros, as MXNet's op of several outputs does
                y, _xs = vjp_args(node)
                g = F.zeros_like(y)
            kind = type(g)
            if kind is Sum:
                g = g.a
            elif kind is Patch:
                g = g()
            op = node.op
            if op is None:
                out.append((node, g))
                continue
            fast = op.eager_vjp if eager else None
            if fast is not None:
                xs: Any = node.xs
                cts = fast(node.at, g, node.y, *xs)
                if cts is None:  # a case the op leaves to its table VJP
                    cts = op.vjp(F, node.at, g, node.y, *xs)
                elif not cts:  # (no_cotangents: zeros by design)
                    _zero_parents(cot, node.parents)
                    continue
            else:
                vjp = op.vjp
                if vjp in ZERO_VJPS:
                    _zero_parents(cot, node.parents)
                    continue
                if vjp is None:  # (recorded for this: a gradient through it is refused, as MXNet's)
                    if not _any(_taken(g)):
                        _zero_parents(cot, node.parents)  # (zeros: no gradient, as MXNet takes them)
                        continue
                    raise AutogradError(NON_DIFFERENTIABLE.format(op.name))
                y, xs = vjp_args(node)
                cts = vjp(F, node.at, g, y, *xs)
            if into is not None:
                cts = into(node.parents, cts)
            if helpers is not None and len(cts) > 1:
                cts = side_by_side(helpers, node.parents, cts, pending)
            for p, ct in zip(node.parents, cts):
                if p is None or ct is None:
                    continue
                if not p.live:
                    raise AutogradError(FREED)
                patch = type(ct) is Patch
                if callable(ct) and not patch:
                    ct = ct()
                prev = get(p)
                if prev is None or prev is ZERO:
                    cot[p] = ct
                elif patch or type(prev) is Sum or type(prev) is Patch:
                    cot[p] = _summed(_taken(prev), _taken(ct))
                elif eager:
                    cot[p] = Sum(add(_taken(prev), _taken(ct)))
                else:
                    cot[p] = add(_taken(prev), _taken(ct))
    except BaseException:
        for job in pending:  # every helper back before the pass's own error is raised
            try:
                job.take()
            except BaseException:
                pass
        raise
    if pending:
        for job in pending:
            job.take()  # a helper's error is raised here
        out = [(n, _taken(g)) for n, g in out]
    return out


def resolve(ct: Any) -> Any:
    """A cotangent that a VJP may have returned as a function, computed."""
    return ct() if callable(ct) else ct
