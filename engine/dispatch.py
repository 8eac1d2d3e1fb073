"""What ops run with and how VJPs call the op table. ``Context`` is what an op's forward
sees. ``Eager`` calls ops on plain arrays (a first-order backward pass) and ``Recorder`` on
``Traced`` arrays, recording what it calls (a backward pass with ``create_graph``, whose
gradients can be differentiated again): each is an ``F`` that VJPs are written against,
where ``F.mul(a, b)`` calls the table's ``mul``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from . import tape
from .optable import OPS
from .tape import Node


class Context:
    """What an op's forward sees: the array module, generator, training flag."""

    __slots__ = ("xp", "rng", "training")
    xp: Any
    rng: np.random.Generator
    training: bool

    def __init__(self, seed: int | None = None) -> None:
        self.xp = np
        self.rng = np.random.default_rng(seed)
        self.training = False


LITERAL_SHAPES = frozenset(["reshape", "broadcast_to"])
"""Ops whose ``shape`` takes MXNet's 0 as "this axis of the input's": a VJP's shapes are the
arrays' own, where a 0 is an empty axis."""


def empty_result(at: dict, xs: tuple) -> np.ndarray | None:
    """What a VJP's reshape or broadcast_to to a shape with an empty axis gives: an empty array
    of that shape (not the input's axis, MXNet's 0); None for any other shape."""
    shape = at.get("shape")
    if not shape or 0 not in shape or min(shape) < 0:
        return None
    x = xs[0]
    return np.zeros(tuple(shape), getattr(x, "value", x).dtype)


class Eager:
    """Calls table ops directly on arrays: the ``F`` of first-order VJPs."""

    def __init__(self, cx: Context) -> None:
        self._cx = cx

    @property
    def training(self) -> bool:
        """Whether the backward pass runs in training mode (BatchNorm's VJP reads it)."""
        return self._cx.training

    def __getattr__(self, name: str) -> Callable[..., Any]:
        op = OPS[name]
        cx = self._cx
        forward, defaults = op.forward, op.defaults
        names = set(defaults)

        def call(*xs: Any, **at: Any) -> Any:
            # the keyword dict is fresh per call: fill it in rather than copy the defaults
            if len(at) != len(names):
                for k in names.difference(at):
                    at[k] = defaults[k]
            return forward(cx, at, *xs)

        if name in LITERAL_SHAPES:
            plain = call

            def call(*xs: Any, **at: Any) -> Any:
                empty = empty_result(at, xs)
                return plain(*xs, **at) if empty is None else empty

        setattr(self, name, call)
        return call


class Traced:
    """An array with its graph node: what a recorded backward pass computes on."""

    __slots__ = ("value", "node")

    def __init__(self, value: np.ndarray, node: Node | None) -> None:
        self.value = value
        self.node = node

    @property
    def shape(self) -> tuple[int, ...]:
        return self.value.shape

    @property
    def ndim(self) -> int:
        return self.value.ndim

    @property
    def dtype(self) -> np.dtype:
        return self.value.dtype


class Recorder:
    """Calls table ops on Traced arrays and records them: the ``F`` of a backward
    pass with ``create_graph``, so gradients can themselves be differentiated."""

    def __init__(self, cx: Context) -> None:
        self._cx = cx

    @property
    def training(self) -> bool:
        """Whether the backward pass runs in training mode (BatchNorm's VJP reads it)."""
        return self._cx.training

    def __getattr__(self, name: str) -> Callable[..., Traced]:
        op = OPS[name]
        cx = self._cx

        def call(*xs: Any, **at: Any) -> Traced:
            if name in LITERAL_SHAPES:
                empty = empty_result(at, xs)
                if empty is not None:
                    return Traced(empty, None)  # (no values: nothing to differentiate)
            full = {**op.defaults, **at}
            vals = tuple(x.value if isinstance(x, Traced) else x for x in xs)
            y = op.forward(cx, full, *vals)
            node = None
            if op.vjp is not None:
                parents = tape.parents_of(x.node if isinstance(x, Traced) else None for x in xs)
                if parents is not None:
                    node = Node(op, full, parents, vals, y)
            return Traced(y, node)

        setattr(self, name, call)
        return call


def traced_args(node: Node) -> tuple[Traced, tuple[Traced, ...]]:
    """A node's output and inputs with their nodes, for a recorded VJP."""
    xs = node.xs or ()
    return Traced(node.y, node), tuple(Traced(x, p) for x, p in zip(xs, node.parents))
