"""The op record, its typed attributes, and the registry every layer derives from.

An op is defined once: its array inputs, typed attributes with defaults, a pure
``infer`` (shapes and dtypes in, shape and dtype out, no data), a ``forward``
on the array module, and a ``vjp`` written with the table's own ops (so a
backward pass can itself be recorded). The client's ``nd`` namespace, its
local shape inference, the server's execution and quota checks and the
``GET /v1/ops`` catalog all read this table.
"""

from __future__ import annotations

import ast
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

import numpy as np

from .errors import InvalidInput, UnknownDType, echo

MAX_NDIM: Final = 32
"""The most axes an array may have (numpy's own limit is higher, but some of its functions
stop at 32: an op whose result would have more is refused when its shape is inferred)."""


def over_rank(name: str, ndim: int) -> str:
    """The message refusing a result of ``ndim`` axes (past ``MAX_NDIM``)."""
    return f"{name}: the result would have {ndim} axes, over the limit of {MAX_NDIM}"


class Spec(NamedTuple):
    """What is known of an array without its data."""

    shape: tuple[int, ...]
    dtype: str

    @property
    def nbytes(self) -> int:
        n = np.dtype(self.dtype).itemsize
        for d in self.shape:
            n *= d
        return n


new_spec = tuple.__new__
"""``new_spec(Spec, (shape, dtype))``: a Spec without the named tuple's Python-level ``__new__``
(the engine makes one for every input of every op it checks)."""


_DTYPE_NAMES: dict[np.dtype, str] = {}


def dtype_name(dt: np.dtype) -> str:
    """``dt.name``, memoised (numpy computes it in Python on every access: about 1.5 us)."""
    name = _DTYPE_NAMES.get(dt)
    if name is None:
        name = _DTYPE_NAMES[dt] = dt.name
    return name


DTYPES = frozenset(["float16", "float32", "float64", "uint8", "int8", "int32", "int64", "bool"])
FLOAT_DTYPES = ("float16", "float32", "float64")
DEFAULT_DTYPE = "float32"
REQUIRED: Any = object()


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"expected an integer, got {echo(v)}{past_int64(v)}")
    return int(v)


def past_int64(v: Any) -> str:
    """Why a float came where an integer was expected, when it is an integer past int64's range
    (JSON decoders read those as floats): a clause for the error, else nothing."""
    if type(v) is float and abs(v) >= 2.0**63 and v == v and abs(v) != float("inf") and v == int(v):
        return " (an integer past int64's range: JSON integers that large are read as floats)"
    return ""


NON_FINITE = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}
"""How JSON, which has no such numbers, writes them (in tensors' data and in attributes)."""


def _float(v: Any) -> float:
    if type(v) is float:
        return v
    if type(v) is str and v in NON_FINITE:
        return NON_FINITE[v]
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise TypeError(f'expected a number (or "NaN", "Infinity", "-Infinity"), got {echo(v)}')
    return float(v)


def _bool(v: Any) -> bool:
    """True or False, or the integers 1 and 0 (not 1.0: a flag is no number)."""
    if isinstance(v, (bool, np.bool_)) or isinstance(v, (int, np.integer)) and v in (0, 1):
        return bool(v)
    raise TypeError(f"expected a boolean, got {echo(v)}")


def _shape(v: Any) -> tuple[int, ...]:
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        v = (v,)
    if not isinstance(v, (list, tuple)):
        raise TypeError(f"expected a shape (an int or a list of ints), got {echo(v)}")
    out = tuple(_int(d) for d in v)
    if len(out) > MAX_NDIM:
        raise TypeError(f"rank {len(out)} is over the limit of {MAX_NDIM}")
    return out


def _axis(v: Any) -> tuple[int, ...] | None:
    """None (all axes), an int, or a list of ints; normalised to a tuple or None."""
    if v is None:
        return None
    if isinstance(v, (list, tuple)):
        return tuple(_int(a) for a in v)
    return (_int(v),)


def _reduce_axis(v: Any) -> tuple[int, ...] | None:
    """A reduction's ``axis``: as ``axis``, and an empty list is all axes too (MXNet's)."""
    return _axis(v) or None


def _dtype(v: Any) -> str | None:
    if v is None:
        return None
    try:
        name = np.dtype(v).name
    except TypeError:
        raise TypeError(f"unknown dtype {echo(v)}") from None
    if name not in DTYPES:
        raise TypeError(f"unsupported dtype {name!r}; use one of {sorted(DTYPES)}")
    return name


MAX_STR_ATTR: Final = 256
"""The longest string attribute (a mode's name, a layout): a recorded node keeps its attributes."""


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError(f"expected a string, got {echo(v)}")
    if len(v) > MAX_STR_ATTR:
        raise TypeError(f"expected a string of at most {MAX_STR_ATTR} characters, got {len(v)}")
    return v


def _ints(v: Any) -> tuple[int, ...]:
    if not isinstance(v, (list, tuple)):
        raise TypeError(f"expected a list of ints, got {echo(v)}")
    return tuple(_int(a) for a in v)


def _floats(v: Any) -> tuple[float, ...]:
    if not isinstance(v, (list, tuple)):
        raise TypeError(f"expected a list of numbers, got {echo(v)}")
    return tuple(_float(a) for a in v)


def _any(v: Any) -> Any:
    return v


PARSERS: dict[str, Callable[[Any], Any]] = {
    "int": _int,
    "float": _float,
    "bool": _bool,
    "shape": _shape,
    "axis": _axis,
    "reduce_axis": _reduce_axis,
    "dtype": _dtype,
    "str": _str,
    "key": _any,  # validated by the indexing ops themselves
    "tensor": _any,  # decoded by the wire layer before the op sees it
    "ints": _ints,
    "floats": _floats,
}


@dataclass(frozen=True, slots=True)
class Attr:
    """A typed attribute with its default (REQUIRED when it has none)."""

    name: str
    kind: str
    default: Any = None
    nullable: bool = False  # null is a value of its own (sort's axis: all axes, flattened)

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "type": "axis" if self.kind == "reduce_axis" else self.kind}
        if self.default is REQUIRED:
            d["required"] = True
        else:
            d["default"] = list(self.default) if isinstance(self.default, tuple) else self.default
        if self.nullable:
            d["nullable"] = True
        return d


def _parser(kind: str) -> Callable[[Any], Any]:
    """The parser of a kind, looked up at call time (wire.py adds "tensor" later)."""
    if kind == "tensor":
        return lambda v: PARSERS["tensor"](v)
    return PARSERS[kind]


def attr_parser(name: str, attrs: tuple[Attr, ...]) -> Callable[[dict[str, Any] | None], dict[str, Any]]:
    """The parser of a fixed list of attributes, the one parser of ops and session commands:
    attributes as the wire gave them, checked against their declared types, with defaults
    filled in. A closure over its tables, as it runs once per instruction of a batch."""
    defaults = {a.name: a.default for a in attrs}
    parsers = {a.name: (_parser(a.kind), a.default is None or a.nullable) for a in attrs}  # (parser, None allowed)
    # a dtype given as None is its default, as MXNet's (x.astype(None), Embedding(dtype=None): float32)
    none_dtypes = {a.name: DEFAULT_DTYPE if a.default is REQUIRED else a.default for a in attrs if a.kind == "dtype"}
    required = tuple(a.name for a in attrs if a.default is REQUIRED)

    def parse(given: dict[str, Any] | None) -> dict[str, Any]:
        at = defaults.copy()
        if given:
            if type(given) is not dict:
                raise InvalidInput(f"{name}: attributes must be a map, got {type(given).__name__}")
            for k, v in given.items():
                p = parsers.get(k)
                if p is None:
                    known = ", ".join(a.name for a in attrs) or "none"
                    raise InvalidInput(f"{name}: unknown attribute {echo(k)} (attributes: {known})")
                if v is None:
                    if p[1]:
                        at[k] = None
                    elif k in none_dtypes:
                        at[k] = none_dtypes[k]
                    else:
                        raise InvalidInput(f"{name}: attribute {k!r} cannot be null")
                    continue
                try:
                    at[k] = p[0](v)
                except (TypeError, ValueError) as e:
                    error = UnknownDType if p[0] is _dtype else InvalidInput
                    raise error(f"{name}: attribute {k!r}: {e}") from None
        for k in required:
            if at[k] is REQUIRED:
                raise InvalidInput(f"{name}: missing required attribute {k!r}")
        return at

    return parse


Infer = Callable[..., Spec]


def like_infer(at: dict, x: Spec) -> Spec:
    """The inference of an op whose output has its one input's shape and dtype."""
    return x


Forward = Callable[..., Any]
Vjp = Callable[..., tuple[Any, ...]]
EagerVjp = Callable[..., tuple[Any, ...] | None]


@dataclass(frozen=True, slots=True)
class Op:
    """One op of the table. See the module docstring."""

    name: str
    inputs: tuple[str, ...]
    attrs: tuple[Attr, ...]
    infer: Infer
    forward: Forward
    vjp: Vjp | None
    doc: str
    random: bool = False
    aliases: tuple[str, ...] = ()
    defaults: dict[str, Any] = field(default_factory=dict, compare=False)
    nin: int = 0  # the number of array inputs; -1 when the last one is variadic
    # the same VJP on plain arrays, for first-order backward passes (no dispatch through the
    # table per cotangent); it may return None to leave a case (an integer dtype) to ``vjp``
    eager_vjp: EagerVjp | None = None
    like: bool = False  # infer is like_infer: one input, whose shape and dtype the output has
    # (an op of like_infer) a bool input is refused (arithmetic): its forward raises, and the
    # client at the call, where like_infer is not called
    no_bools: bool = False
    # the output may share its input's memory, as MXNet's x.reshape and basic indexing do (an
    # in-place change of one changes the other); every other op's output is an array of its own
    view: bool = False
    parse: Callable[[dict[str, Any] | None], dict[str, Any]] | None = None  # attr_parser(name, attrs)
    # what the op costs beyond its output, from its attributes and input specs: the bytes of
    # the working arrays it makes while it runs (convolution's and pooling's windows), and
    # its multiply-adds (a product whose result is small may still take seconds)
    scratch: Callable[..., int] | None = None
    work: Callable[..., int] | None = None
    # the bytes of the working arrays its VJP makes (from the forward's attributes and input
    # specs), where they are more than a few times the graph's arrays (windows)
    vjp_scratch: Callable[..., int] | None = None
    # ``keeps(at, training)``: whether the forward, so called, leaves in ``at["_kept"]`` an
    # array (at most its output's size) that its node keeps for the VJP: Dropout's mask,
    # memory a recorded op holds beyond its output (the session counts it)
    keeps: Callable[[dict[str, Any], bool], Any] | None = None
    # the forward writes into its attributes for its VJP (Dropout's mask, BatchNorm's batch
    # statistics): a program's call gives it attributes of its own
    writes_at: bool = False
    # ``vjp_updates(at)``: the inputs its VJP changes in place when the op was recorded in
    # training (BatchNorm's moving statistics, as MXNet's, unless use_global_stats): a client
    # counts them among what a backward changes
    vjp_updates: Callable[[dict[str, Any]], tuple[int, ...]] | None = None
    # the most inputs a variadic op takes (an optional one: FullyConnected's bias), None for any
    most: int | None = None

    @property
    def differentiable(self) -> bool:
        return self.vjp is not None

    @property
    def variadic(self) -> bool:
        """Whether the last input (``*name``) takes any number of arrays."""
        return self.nin < 0

    def check_arity(self, n: int) -> None:
        fixed = len(self.inputs) - self.variadic
        most = self.most if self.variadic else fixed
        if n < fixed or (most is not None and n > most):
            if not self.variadic:
                want = str(fixed)
            elif n < fixed:
                want = f"at least {fixed}"
            else:
                want = f"at most {most}"
            raise InvalidInput(f"{self.name} takes {want} inputs ({', '.join(self.inputs)}), got {n}")

    def parse_attrs(self, given: dict[str, Any] | None) -> dict[str, Any]:
        """Validate attribute values against their types, filling defaults."""
        parse = self.parse if self.parse is not None else attr_parser(self.name, self.attrs)
        return parse(given)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "inputs": list(self.inputs),
            "attrs": [a.describe() for a in self.attrs],
            "differentiable": self.differentiable,
            "doc": self.doc,
            "aliases": list(self.aliases),
            "view": self.view,
            "max_inputs": self.most if self.variadic else len(self.inputs),
        }


_SOURCE_DOCS: dict[str, dict[str, str]] = {}


def source_doc(fn: Callable[..., Any]) -> str:
    """``fn``'s docstring as its module's source has it: a function compiled by mypyc keeps
    none (the catalog's and ``help(nd.dot)``'s text), and the sources ship beside the
    compiled modules. Each source is read once; an empty string when there is none."""
    name = getattr(fn, "__module__", None) or ""
    package, _, module = name.rpartition(".")
    path = getattr(sys.modules.get(package), "__file__", None)  # (a module being compiled-imported has none yet)
    if not path:
        return ""
    src = os.path.join(os.path.dirname(path), module + ".py")
    docs = _SOURCE_DOCS.get(src)
    if docs is None:
        try:
            with open(src, encoding="utf-8") as f:
                tree = ast.parse(f.read())
        except (OSError, SyntaxError, ValueError):
            tree = None
        docs = {}
        if tree is not None:
            for node in tree.body:
                if isinstance(node, ast.FunctionDef):
                    docs[node.name] = ast.get_docstring(node) or ""
        _SOURCE_DOCS[src] = docs
    return docs.get(getattr(fn, "__name__", ""), "")


ZERO_VJPS: set[Any] = set()
"""The VJPs that give zeros by design (a stopped gradient, an index, a rounding: MXNet's zero
gradients), registered by the op modules before their ops are defined. A backward pass sends
nothing through them, as MXNet's drops a zero gradient with the ops that only it reaches: the
ops before one are not run for nothing, and an infinite derivative there (sqrt at 0) is not
made NaN by it. A first-order pass learns it from their eager VJP (``no_cotangents``), at no
cost to the others; a recorded one from this set."""


def no_cotangents(at: Any, g: Any, y: Any, *xs: Any) -> tuple[Any, ...]:
    """The eager VJP of an op of ``ZERO_VJPS``: no cotangent at all (not zeros)."""
    return ()


class Registry:
    """The op table; refuses a second op of the same name."""

    def __init__(self) -> None:
        self._ops: dict[str, Op] = {}

    def add(self, op: Op) -> Op:
        for n in (op.name, *op.aliases):
            if n in self._ops:
                raise ValueError(f"op {n!r} is defined twice")
            self._ops[n] = op
        return op

    def __getitem__(self, name: str) -> Op:
        try:
            return self._ops[name]
        except KeyError:
            raise InvalidInput(f"unknown op {echo(name)}") from None

    def get(self, name: str) -> Op | None:
        return self._ops.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._ops

    def ops(self) -> list[Op]:
        """Each op once (aliases folded)."""
        seen: dict[str, Op] = {}
        for op in self._ops.values():
            seen.setdefault(op.name, op)
        return list(seen.values())


OPS = Registry()


def _drawn_in_64_bits(infer: Callable[..., Spec]) -> Callable[..., int]:
    def scratch(at: dict[str, Any], *specs: Spec) -> int:
        return 16 * prod(infer(at, *specs).shape)  # (two at once: a gamma-poisson mixture's)

    return scratch


def defop(
    name: str,
    inputs: tuple[str, ...] | str,
    attrs: tuple[Attr, ...] = (),
    *,
    infer: Infer,
    vjp: Vjp | None = None,
    random: bool = False,
    aliases: tuple[str, ...] = (),
    eager_vjp: EagerVjp | None = None,
    view: bool = False,
    scratch: Callable[..., int] | None = None,
    work: Callable[..., int] | None = None,
    vjp_scratch: Callable[..., int] | None = None,
    keeps: Callable[[dict[str, Any], bool], Any] | None = None,
    writes_at: bool = False,
    vjp_updates: Callable[[dict[str, Any]], tuple[int, ...]] | None = None,
    no_bools: bool = False,
    most: int | None = None,
) -> Callable[[Forward], Op]:
    """Decorator: define an op from its forward function (docstring = op doc).

    ``most``: for a variadic op (``*name`` last), the most inputs it takes (None: any number;
    one more than its fixed ones for an optional input, FullyConnected's bias).

    ``vjp`` is written with the table's ops (``F``), so a backward pass can be
    recorded and differentiated again. ``eager_vjp``, optional, is the same
    VJP on numpy arrays, ``(at, g, y, *xs)``: first-order backward passes use
    it where an op has one, skipping a dispatch per cotangent. The tests hold
    both to finite differences and to each other."""
    if eager_vjp is not None and vjp is None:
        raise ValueError(f"op {name!r}: an eager_vjp needs a vjp")
    if vjp is not None and vjp in ZERO_VJPS:  # (zeros by design: a first-order pass sends nothing back)
        eager_vjp = no_cotangents
    if isinstance(inputs, str):
        inputs = tuple(inputs.split())
    if random and scratch is None and not inputs:  # numpy draws float64 (or int64), then the dtype's copy
        scratch = _drawn_in_64_bits(infer)

    def wrap(forward: Forward) -> Op:
        return OPS.add(
            Op(
                name,
                inputs,
                attrs,
                infer,
                forward,
                vjp,
                (forward.__doc__ or source_doc(forward)).strip(),
                random,
                aliases,
                defaults={a.name: a.default for a in attrs},
                nin=-1 if inputs and inputs[-1].startswith("*") else len(inputs),
                eager_vjp=eager_vjp,
                like=infer is like_infer,
                no_bools=no_bools,
                parse=attr_parser(name, attrs),
                view=view,
                scratch=scratch,
                work=work,
                vjp_scratch=vjp_scratch,
                keeps=keeps,
                writes_at=writes_at or keeps is not None,
                vjp_updates=vjp_updates,
                most=most,
            )
        )

    return wrap


def prod(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
