"""NDArray: a proxy holding a client-named handle and the inferred shape and dtype.

Shape, dtype, size and ``len`` are known locally from the op table, so they
cost no round trip and a shape error raises at the user's own line. Reading a
value (``asnumpy``, ``asscalar``, printing, ``bool``/``float``) is a sync point.
"""

from __future__ import annotations

import math
import numbers
import re
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any

import numpy as np

from .engine import tape
from .engine.errors import (
    NO_INPUTS,
    NOT_IN_GRAPH,
    UNREACHABLE,
    AutogradError,
    BooleanIndexError,
    DTypeError,
    IndexKindError,
    IndexOutOfRange,
    InvalidInput,
    ShapeError,
    UnknownDType,
)
from .engine.ops import (
    assignable,
    broadcast_shapes,
    check_index_dtypes,
    is_view_key,
    is_whole_key,
    key_shape,
    no_bool_arithmetic,
    not_assignable,
    parse_key,
)
from .engine.optable import DEFAULT_DTYPE, DTYPES, MAX_NDIM, OPS, Op, Spec, over_rank
from .engine.session import INPLACE_IN_GRAPH, INPLACE_RECORDING, RECORDING, TRAINING
from .runtime import FRAME_ALIGN, RNG_KEY, ChangeLost, Client, NotTraceable, current, framed
from .state import flags

_ITEMSIZES = {name: np.dtype(name).itemsize for name in DTYPES}


_CPU_TYPES = ("cpu", "cpu_pinned", "cpu_shared")  # MXNet's host memory kinds: all this session's memory


class Context:
    """A device, printed as MXNet prints it (``cpu(0)``, ``cpu(1)``, ``cpu_pinned(0)``).

    An array keeps the context it was made in, as MXNet's does: a creation function's ``ctx``,
    else the default (``with ctx:`` sets it, as in MXNet), and an op's result has its first
    input's. Every context is this session's memory: which one an array is in changes
    nothing but what ``.context`` says."""

    __slots__ = ("device_type", "device_id")
    device_type: str
    device_id: int

    def __init__(self, device_type: Any = "cpu", device_id: int = 0) -> None:
        if isinstance(device_type, Context):  # Context(ctx): a copy, as MXNet's
            device_type, device_id = device_type.device_type, device_type.device_id
        if device_type not in _CPU_TYPES:
            raise InvalidInput(f"device {device_type!r} is not available; gradserve computes on cpu")
        if isinstance(device_id, bool) or not isinstance(device_id, (int, np.integer)) or device_id < 0:
            raise InvalidInput(f"device_id must be a non-negative integer, got {device_id!r}")
        self.device_type = device_type
        self.device_id = int(device_id)

    def __repr__(self) -> str:
        return f"{self.device_type}({self.device_id})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Context) and other.device_type == self.device_type and other.device_id == self.device_id
        )

    def __hash__(self) -> int:
        return hash((self.device_type, self.device_id))

    def __enter__(self) -> Context:
        stack = _default.__dict__.setdefault("stack", [])
        stack.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _default.stack.pop()


_default = threading.local()  # per thread, as MXNet's: the contexts of the ``with`` blocks entered


def cpu(device_id: int = 0) -> Context:
    """The CPU context, as ``mxnet.cpu()``."""
    return Context("cpu", device_id)


def cpu_pinned(device_id: int = 0) -> Context:
    """Pinned host memory, as ``mxnet.cpu_pinned()`` (this session's memory, as every context)."""
    return Context("cpu_pinned", device_id)


CPU = cpu()


def current_context() -> Context:
    """The default context of new arrays: the innermost ``with ctx:``, else ``cpu(0)``."""
    stack = getattr(_default, "stack", None)
    return stack[-1] if stack else CPU


def dense_storage(name: str, stype: Any) -> None:
    """Refuse a sparse storage type (``stype``): gradserve's arrays are dense."""
    if stype is not None and stype != "default":
        raise InvalidInput(f"{name}: stype {stype!r} is sparse storage, which gradserve has not (use default)")


_CONTEXT_TEXT = re.compile(r"\s*([a-z_]+)\s*(?:\(\s*(\d+)\s*\))?\s*")


def context_of(ctx: Any) -> Context:
    """A creation function's ``ctx`` argument, checked; None is the default context, and a
    string is read as MXNet reads one (``"cpu(0)"``, ``"cpu"``)."""
    if ctx is None:
        return current_context()
    if isinstance(ctx, str):
        m = _CONTEXT_TEXT.fullmatch(ctx)
        if m is None:
            raise InvalidInput(f"ctx {ctx!r} is not a context: cpu(0), cpu_pinned(0), ...")
        return Context(m.group(1), int(m.group(2) or 0))
    if not isinstance(ctx, Context):
        raise TypeError(f"ctx must be a Context (gradserve.cpu(...)) or its name, got {type(ctx).__name__}")
    return ctx


def _mode() -> int:
    f = flags
    return (RECORDING if f.recording else 0) | (TRAINING if f.training else 0)


_STRING_KINDS = frozenset({"str", "dtype", "tensor"})  # (kinds whose values are strings anyway)
_KEYED = {op.name: names for op in OPS.ops() if (names := tuple(a.name for a in op.attrs if a.kind == "key"))}


def parse_given(op: Op, attrs: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``op``'s attributes as given in Python, parsed; and the given ones as they were read.

    MXNet passes every attribute to its engine as a string, so a program may give one as its
    string (``keepdims='True'``, ``axis='1'``, ``shape='(3, 2)'``): where the attributes as given
    are refused and some is a string of a kind that is not one, they are read as MXNet reads
    them (``mxnet_string``) and parsed again. (The REST API takes typed values only.) An
    attribute whose parser takes any value (slice's ``begin``: a key) is read so at once."""
    keyed = _KEYED.get(op.name)
    if keyed and attrs:
        for k in keyed:
            if type(attrs.get(k)) is str:
                attrs = {**attrs, k: mxnet_string("key", attrs[k])}
    try:
        return op.parse_attrs(attrs), attrs
    except InvalidInput:
        if not attrs or not any(type(v) is str for v in attrs.values()):
            raise
        kinds = {a.name: a.kind for a in op.attrs}
        read = {}
        for k, v in attrs.items():
            kind = kinds.get(k)
            read[k] = mxnet_string(kind, v) if type(v) is str and kind is not None and kind not in _STRING_KINDS else v
        return op.parse_attrs(read), read


def mxnet_string(kind: str, text: str) -> Any:
    """An attribute of ``kind`` given as MXNet's string form ('True', '0', '-1', '0.5', '(3, 3)',
    '[0]', '(None, 1)', 'None'), read as MXNet 1.9.1 reads it; the text itself where it is
    none of them (the attribute's parser then says what is wrong with it)."""
    t = text.strip()
    if t == "None":
        return None
    try:
        if kind == "bool":
            low = t.lower()
            return True if low in ("true", "1") else False if low in ("false", "0") else text
        if kind == "int":
            return int(t)
        if kind == "float":
            return float(t)
        if kind in ("shape", "ints", "floats", "axis", "reduce_axis", "key"):
            bracketed = len(t) >= 2 and t[0] + t[-1] in ("()", "[]")
            inner = t[1:-1] if bracketed else t
            parts = [part.strip() for part in inner.split(",")]
            if parts[-1] == "":  # '(3,)', '()'
                parts.pop()
            read = float if kind == "floats" else int
            values = [None if part == "None" and kind == "key" else read(part) for part in parts]
            return values if bracketed or len(values) != 1 else values[0]
    except ValueError:
        return text
    return text


def invoke(
    op: Op,
    arrays: Sequence[NDArray],
    attrs: dict[str, Any] | None = None,
    client: Client | None = None,
    parsed: bool = False,
    nbytes: int = 0,
    ctx: Context | None = None,
) -> NDArray:
    """Queue one op of the table; return its result's proxy at once.

    ``parsed``: ``attrs`` already holds every attribute in its parsed form (the
    operators' scalar ops build it so), and the parse is skipped. ``nbytes``:
    the bytes the instruction carries (an upload's), for the queue's bound. ``ctx``: the
    context of a result made from no arrays (the default when None); a result made from
    arrays is in its first input's, as in MXNet."""
    if len(arrays) == 1:
        a = arrays[0]
        ctx = a._ctx
        c = a._c
        specs = [a._spec]
        hs = [a._h]
        if c._dead:
            c.check_alive(a._h)
    elif arrays:
        if op.most is not None and len(arrays) > op.most:  # (its inference would blame an input)
            op.check_arity(len(arrays))
        specs = []
        hs = []
        c = arrays[0]._c
        ctx = arrays[0]._ctx
        for a in arrays:
            if a._c is not c:
                raise InvalidInput(f"{op.name}: arrays from different sessions cannot be mixed")
            specs.append(a._spec)
            hs.append(a._h)
        if c._dead:
            for a in arrays:
                c.check_alive(a._h)
    else:
        specs, hs = [], []
        c = client or current()
        if ctx is None:
            ctx = current_context()
    if op.random and c._dead:
        c.check_alive(RNG_KEY)  # (a seed its failed batch never set: the draws are not the program's)
    if parsed and attrs is not None:
        at: dict[str, Any] = attrs
    elif not attrs:
        at = op.parse_attrs(attrs)
    else:
        at, attrs = parse_given(op, attrs)
    try:
        if op.like:
            spec = specs[0]
            if op.no_bools and spec.dtype == "bool":  # (as the forward refuses it)
                raise no_bool_arithmetic(op.name)
        else:
            spec = op.infer(at, *specs)
    except (TypeError, IndexError):
        op.check_arity(len(specs))  # (an input left out: the op's words, not its inference's)
        raise
    if len(spec.shape) > MAX_NDIM:  # refused here, as the engine refuses it
        raise ShapeError(over_rank(op.name, len(spec.shape)))
    h = c.handle()
    f = flags
    mode = (RECORDING if f.recording else 0) | (TRAINING if f.training else 0)
    node = None
    if mode & RECORDING and op.inputs:  # (an op of no VJP too: the engine refuses a backward through it)
        parents = tape.parents_of([a._node for a in arrays])
        if parents is not None:
            # (what its VJP will change in place: BatchNorm's moving statistics, in training)
            changes = op.vjp_updates(at) if op.vjp_updates is not None and mode & TRAINING else ()
            node = tape.Node(op, tuple(c.root(hs[i]) for i in changes) if changes else None, parents)
    # only the attributes given travel (parsed); the engine fills in the same defaults
    if not attrs:
        wat: dict[str, Any] = {}
    elif len(attrs) == len(at):
        wat = at
    else:
        wat = {k: at[k] for k in attrs}
    ins: dict[str, Any] = {"op": op.name, "in": hs, "out": [h], "at": wat}
    if mode:
        ins["mode"] = mode
    if op.view and (
        op.name != "getitem" or (len(hs) == 1 and is_view_key(parse_key("getitem", at["key"], 0), specs[0].shape))
    ):
        c.share(h, c.root(hs[0]))  # the same memory (an in-place change of one is a change of the other)
    c.enqueue(ins, nbytes)
    return NDArray(c, h, spec, node, ctx)


def write_into(out: Any, result: Any, name: str) -> NDArray:
    """``out=``: the result written into ``out`` (same shape), which is returned, as in MXNet."""
    check_into(out, result, name)
    out[:] = result
    return out


def check_into(out: Any, result: Any, name: str) -> None:
    """Refuse an ``out`` that cannot take the result: not an array, or another shape or dtype."""
    if not isinstance(out, NDArray):
        raise TypeError(f"{name}: out must be an NDArray, got {type(out).__name__}")
    if not isinstance(result, NDArray):
        raise TypeError(f"{name}: out= is for an op of one output")
    if out.shape != result.shape:
        raise ShapeError(f"{name}: out has shape {out.shape}, the result {result.shape}")
    if out._spec.dtype != result._spec.dtype:  # (MXNet: "type inconsistent"; a cast would be silent)
        raise DTypeError(f"{name}: out has dtype {out._spec.dtype}, the result {result._spec.dtype}")


_CODES: dict[int, tuple[Any, bytes]] = {}
"""id(code) -> (code, its bytecode): ``co_code`` is made anew at each read. (The entry holds the
code object, so no other takes its id while it is there.)"""


def _instruction(f: FrameType) -> tuple[int, int]:
    """The opcode and argument of the instruction frame ``f`` is running."""
    code = f.f_code
    kept = _CODES.get(id(code))
    if kept is None:
        if len(_CODES) > 4096:
            _CODES.clear()
        kept = _CODES[id(code)] = (code, code.co_code)
    i = f.f_lasti
    return kept[1][i], kept[1][i + 1]


def _called_by_operator(fn: str) -> bool:
    """Whether the caller of ``NDArray``'s in-place dunder (``__isub__``) runs the operator's
    instruction (``x -= ...``), not a call of the dunder (see ``_temporaries``)."""
    try:
        f = sys._getframe(3)  # (this function, ``_inplace``, the dunder, its caller)
    except ValueError:  # no Python frame there: called from C
        return False
    return _instruction(f) == _OPERATORS.get(fn)


class _Probe:
    """Does its in-place operators as ``NDArray`` does, to read what ``_inplace`` sees there:
    the references its operand has, and the caller's instruction."""

    seen: tuple[int, tuple[int, int]] = (0, (0, 0))

    def __rmul__(self, o: Any) -> _Probe:
        return _Probe()

    def __isub__(self, o: Any) -> _Probe:
        return self._inplace(o, "sub")

    def __iadd__(self, o: Any) -> _Probe:
        return self._inplace(o, "add")

    def _inplace(self, o: Any, fn: str) -> _Probe:
        _Probe.seen = (sys.getrefcount(o), _instruction(sys._getframe(2)))
        return self


def _temporaries() -> tuple[int, dict[str, tuple[int, int]]]:
    """How ``NDArray._inplace`` tells ``x -= a * y`` (and ``+=``) of a temporary product, which
    nobody can read afterwards: ``sys.getrefcount`` of its operand at most the first value
    (as this Python counts), called by the instruction of the operator (the second, by fn),
    not by a call (``x.__isub__(p)`` hands the callee the caller's reference to a named ``p``,
    and counts as a temporary would). (-1, {}): never, where this Python tells neither apart.

    Measured with no trace function: one that reads frames' locals (a debugger, a tracing
    tool, any on Python 3.10) holds references of its own, and a count taken under it would
    take a named operand for a temporary once it is gone."""
    tracer = sys.gettrace()
    sys.settrace(None)
    try:
        return _measure_temporaries()
    finally:
        sys.settrace(tracer)


def _measure_temporaries() -> tuple[int, dict[str, tuple[int, int]]]:
    p, g = _Probe(), _Probe()
    p -= 0.5 * g
    temporary, sub = _Probe.seen
    p += 0.5 * g
    add = _Probe.seen[1]
    named = 0.5 * g
    p -= named
    named_refs = _Probe.seen[0]
    p.__isub__(0.5 * g)
    called = _Probe.seen[1]
    if named_refs != temporary + 1 or called in (sub, add) or sub == add:
        return -1, {}
    return temporary, {"sub": sub, "add": add}


_TEMPORARY_REFS, _OPERATORS = _temporaries()


def _scalar(x: Any) -> bool:
    return isinstance(x, (numbers.Number, np.generic)) and not isinstance(x, np.ndarray)


def _key_to_wire(key: Any, client: Client) -> tuple[list[Any], list[NDArray]]:
    """A key as it travels, and the index arrays it refers to.

    A list, a range, a numpy array or an NDArray in the key is an integer index array
    (MXNet's advanced indexing); a bare list is one, not a tuple of indices."""
    if not isinstance(key, tuple):
        key = (key,)
    out: list[Any] = []
    arrays: list[NDArray] = []
    for k in key:
        if k is None:
            out.append(None)
        elif type(k) is slice:
            out.append([_index(k.start), _index(k.stop), _index(k.step)])
        elif type(k) is int:
            out.append(k if -_FAR <= k <= _FAR else _far(k))
        elif k is Ellipsis:
            out.append("...")
        elif isinstance(k, slice):
            out.append([_index(k.start), _index(k.stop), _index(k.step)])
        elif isinstance(k, (numbers.Integral, np.integer)) and not isinstance(k, bool):
            i = int(k)
            out.append(i if -_FAR <= i <= _FAR else _far(i))
        elif isinstance(k, (NDArray, list, np.ndarray, range)):
            if not isinstance(k, NDArray):
                a = np.asarray(k)
                if a.dtype == np.bool_:
                    raise BooleanIndexError(
                        "index: a boolean list or numpy array is refused (MXNet 1.9.1 reads it as the integer "
                        "indices 0 and 1, not as a mask); index with integers, such as np.nonzero(mask)"
                    )
                if a.dtype.kind == "f":  # (MXNet's: an NDArray of the floats, read as a float index array is)
                    k = _from_numpy(a.astype(np.float32 if isinstance(k, list) else a.dtype), client, owned=True)
                elif a.dtype.kind not in "iu":
                    raise InvalidInput(f"index arrays must hold integers or floats, got dtype {a.dtype}")
                else:
                    k = _from_numpy(a.astype(np.int64), client, owned=True)
            out.append({"array": len(arrays)})
            arrays.append(k)
        else:
            raise IndexKindError(f"index {k!r}: use integers, slices, None, ... or integer index arrays")
    return out, arrays


_FAR = (1 << 63) - 1
"""Past every axis: an index or slice bound beyond it means what it does at it (an index out of
range, a bound clipped), and travels to a server (whose messages carry 64 bits)."""


def _whole(key: slice) -> bool:
    """Whether ``key`` is ``:`` (its bounds compared by identity: an NDArray's == is an array)."""
    return key.start is None and key.stop is None and key.step is None


def _far(k: int) -> int:
    raise IndexOutOfRange(f"index {k} is out of bounds for every axis")


def _index(v: Any) -> int | None:
    if v is None or type(v) is int and -_FAR <= v <= _FAR:  # the common cases first: the check below is an ABC's (1 us)
        return v
    if isinstance(v, (numbers.Integral, np.integer)) and not isinstance(v, bool):
        v = int(v)
        return v if -_FAR <= v <= _FAR else _FAR if v > 0 else -_FAR
    got = type(v).__name__ if isinstance(v, NDArray) else repr(v)  # (an array's repr takes lines)
    raise InvalidInput(f"slice bounds must be integers or None, got {got}")


def _print_legacy() -> Any:
    """numpy 2.3 and later print float32 from 1e6 on, and float16 from 1e3, in scientific
    notation (``[1.048576e+06]``); MXNet, on numpy 1.x, printed ``[1048576.]``: the printing
    of numpy 2.2, where this numpy can be told to (older ones print so already)."""
    legacy: Any = "2.2"  # (numpy's stubs know only the older ones)
    try:
        with np.printoptions(legacy=legacy):
            pass
    except (ValueError, TypeError):
        return None
    return legacy


_PRINT_LEGACY: Any = _print_legacy()


class NDArray:
    """An n-dimensional array whose data lives in a session (here or remote)."""

    __slots__ = ("_c", "_h", "_spec", "_node", "_gradp", "_ctx", "__weakref__")
    __array_priority__ = 1000.0  # numpy defers to our reflected operators

    def __init__(
        self, client: Client, handle: int, spec: Spec, node: tape.Node | None = None, ctx: Context | None = None
    ) -> None:
        self._c = client
        self._h = handle
        self._spec = spec
        self._node = node
        self._gradp: NDArray | None = None
        self._ctx = ctx  # None: cpu(0) (an array made by no op of invoke's: a hybridized call's made none)

    def __del__(self, _finalizing: Any = sys.is_finalizing) -> None:
        try:
            spec = self._spec
            self._c.release(self._h, _ITEMSIZES[spec.dtype] * math.prod(spec.shape))
        except Exception:
            if not _finalizing():  # (at interpreter shutdown, with modules torn down: nothing left to free)
                raise  # a fault of ours: Python reports it ("Exception ignored in"), not hidden

    # -- what is known locally ------------------------------------------------

    @property
    def shape(self) -> tuple[int, ...]:
        return self._spec.shape

    @property
    def dtype(self) -> type:
        return np.dtype(self._spec.dtype).type

    @property
    def size(self) -> int:
        n = 1
        for d in self._spec.shape:
            n *= d
        return n

    @property
    def ndim(self) -> int:
        return len(self._spec.shape)

    @property
    def context(self) -> Context:
        """The context the array was made in (see ``Context``)."""
        return self._ctx or CPU

    ctx = context

    @property
    def stype(self) -> str:
        return "default"

    @property
    def writable(self) -> bool:
        """Whether its values may be written (MXNet's: every NDArray's may, views too)."""
        return True

    def tostype(self, stype: str) -> NDArray:
        """A copy in storage ``stype``: "default" (dense), the one storage here."""
        dense_storage("tostype", stype)
        return self.copy()

    @property
    def handle(self) -> int:
        """The session-wide integer that names this array on the server."""
        return self._h

    def __len__(self) -> int:
        if not self._spec.shape:
            raise IndexError("tuple index out of range")
        return self._spec.shape[0]

    __hash__ = object.__hash__

    # -- sync points ----------------------------------------------------------

    def asnumpy(self) -> np.ndarray:
        """A numpy copy of the value (a sync point)."""
        return self._c.flush((self._h,))[0]

    def asscalar(self) -> Any:
        """The single value of a size-1 array as a numpy scalar (a sync point)."""
        if self.size != 1:
            raise ValueError("The current array is not a scalar")
        return self.asnumpy().reshape(())[()]

    def tolist(self) -> Any:
        return self.asnumpy().tolist()

    def wait_to_read(self) -> None:
        """Block until the value is computed (sends the queue)."""
        self._c.flush()
        self._c.check_alive(self._h)

    def __repr__(self) -> str:
        shape_info = "x".join(str(d) for d in self.shape)
        value = self.asnumpy()
        if _PRINT_LEGACY is not None and np.get_printoptions()["legacy"] is False:
            with np.printoptions(legacy=_PRINT_LEGACY):
                text = str(value)
        else:
            text = str(value)
        return f"\n{text}\n<NDArray {shape_info} @{self.context}>"

    __str__ = __repr__

    def __bool__(self) -> bool:
        if self.size == 1:
            return bool(self.asscalar())
        if self.size == 0:
            return False
        raise ValueError("The truth value of an NDArray with multiple elements is ambiguous.")

    def __float__(self) -> float:
        if self.size != 1:
            raise TypeError("only size-1 arrays can be converted to Python scalars")
        return float(self.asscalar())

    def __int__(self) -> int:
        if self.size != 1:
            raise TypeError("only size-1 arrays can be converted to Python scalars")
        return int(self.asscalar())

    def __index__(self) -> int:
        if self.size != 1 or np.dtype(self._spec.dtype).kind not in "iu":
            raise TypeError("only integer size-1 arrays can be used as an index")
        return int(self.asscalar())

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        a = self.asnumpy()
        return a if dtype is None else a.astype(dtype)

    def __iter__(self):  # noqa: ANN204
        for i in range(len(self)):
            yield self[i]

    # -- arithmetic -----------------------------------------------------------

    def _binary(self, other: Any, op: str, scalar_op: str, reverse: bool = False) -> NDArray:
        if isinstance(other, NDArray):
            return invoke(OPS[op], (other, self) if reverse else (self, other))
        if type(other) is float or type(other) is int or _scalar(other):
            return invoke(OPS[scalar_op], (self,), {"scalar": float(other)}, parsed=True)
        # a numpy array, a list, None: MXNet's TypeError (not numpy's arithmetic on our values,
        # nor a silent cast: nd.array(...) says which dtype it is)
        raise TypeError(f"type {type(other)} not supported")

    def __add__(self, o: Any) -> NDArray:
        return self._binary(o, "add", "add_scalar")

    def __radd__(self, o: Any) -> NDArray:
        return self._binary(o, "add", "add_scalar", True)

    def __sub__(self, o: Any) -> NDArray:
        return self._binary(o, "sub", "sub_scalar")

    def __rsub__(self, o: Any) -> NDArray:
        return self._binary(o, "sub", "rsub_scalar", True)

    def __mul__(self, o: Any) -> NDArray:
        return self._binary(o, "mul", "mul_scalar")

    def __rmul__(self, o: Any) -> NDArray:
        return self._binary(o, "mul", "mul_scalar", True)

    def __truediv__(self, o: Any) -> NDArray:
        return self._binary(o, "div", "div_scalar")

    def __rtruediv__(self, o: Any) -> NDArray:
        return self._binary(o, "div", "rdiv_scalar", True)

    def __pow__(self, o: Any) -> NDArray:
        return self._binary(o, "pow", "pow_scalar")

    def __rpow__(self, o: Any) -> NDArray:
        return self._binary(o, "pow", "rpow_scalar", True)

    def __mod__(self, o: Any) -> NDArray:
        return self._binary(o, "mod", "mod_scalar")

    def __rmod__(self, o: Any) -> NDArray:
        return self._binary(o, "mod", "rmod_scalar", True)

    def __neg__(self) -> NDArray:
        return invoke(OPS["negative"], (self,))

    def __pos__(self) -> NDArray:
        return self

    def __abs__(self) -> NDArray:
        return invoke(OPS["abs"], (self,))

    def __eq__(self, o: Any) -> NDArray:  # type: ignore[override]
        return self._binary(o, "equal", "equal_scalar")

    def __ne__(self, o: Any) -> NDArray:  # type: ignore[override]
        return self._binary(o, "not_equal", "not_equal_scalar")

    def __lt__(self, o: Any) -> NDArray:
        return self._binary(o, "lesser", "lesser_scalar")

    def __le__(self, o: Any) -> NDArray:
        return self._binary(o, "lesser_equal", "lesser_equal_scalar")

    def __gt__(self, o: Any) -> NDArray:
        return self._binary(o, "greater", "greater_scalar")

    def __ge__(self, o: Any) -> NDArray:
        return self._binary(o, "greater_equal", "greater_equal_scalar")

    def _inplace(self, o: Any, fn: str) -> NDArray:
        """``x += o`` and friends: one in-place update on the engine, as MXNet
        (no new array, and an error inside ``record`` if x is in the graph)."""
        self._c.check_alive(self._h)  # a target its failed batch never made: say so here, not later
        if flags.recording and tape.in_graph(self._node):
            raise AutogradError(INPLACE_IN_GRAPH)
        if flags.recording and isinstance(o, NDArray) and tape.in_graph(o._node):
            raise AutogradError(INPLACE_RECORDING)  # (MXNet's: the gradient would be lost)
        if self._spec.dtype == "bool":  # (as the engine's update refuses it)
            raise no_bool_arithmetic(f"update ({fn})")
        ins: dict[str, Any] = {"op": "update", "in": [self._h], "at": {"fn": fn}}
        if isinstance(o, NDArray):
            if o._c is not self._c:
                raise InvalidInput("arrays from different sessions cannot be mixed")
            self._c.check_alive(o._h)
            if broadcast_shapes(fn, self.shape, o.shape) != self.shape:
                raise ShapeError(
                    f"{fn}: cannot update an array of shape {self.shape} in place with one of shape {o.shape}"
                )
            if o._spec.dtype != self._spec.dtype:
                raise DTypeError(f"{fn}: in-place update of {self._spec.dtype} with {o._spec.dtype}")
            ins["in"].append(o._h)
            if sys.getrefcount(o) <= _TEMPORARY_REFS and self._c.scaled_updates and _called_by_operator(fn):
                self._c.enqueue(ins, product=o._h)  # ``x -= a * y``, the product a temporary: one pass
                return self
        elif _scalar(o):
            ins["at"]["scalar"] = float(o)
        else:
            raise TypeError(f"type {type(o)} not supported")  # (MXNet's; see ``_binary``)
        self._c.enqueue(ins)
        return self

    def __iadd__(self, o: Any) -> NDArray:
        return self._inplace(o, "add")

    def __isub__(self, o: Any) -> NDArray:
        return self._inplace(o, "sub")

    def __imul__(self, o: Any) -> NDArray:
        return self._inplace(o, "mul")

    def __itruediv__(self, o: Any) -> NDArray:
        return self._inplace(o, "div")

    def __imod__(self, o: Any) -> NDArray:
        return self._inplace(o, "mod")

    # -- shape ----------------------------------------------------------------

    @property
    def T(self) -> NDArray:
        """The array transposed; an array of fewer than 2 axes is itself, as MXNet's."""
        if len(self._spec.shape) < 2:
            return self
        return invoke(OPS["transpose"], (self,))

    def reshape(self, *shape: Any, **kwargs: Any) -> NDArray:
        """``x.reshape((2, -1))``, ``x.reshape(2, -1)`` or ``x.reshape(shape=(2, -1))``."""
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        if "shape" in kwargs:
            shape = kwargs.pop("shape")
        return invoke(OPS["reshape"], (self,), {"shape": shape, **kwargs})

    def astype(self, dtype: Any, copy: bool = True) -> NDArray:
        if not copy and np.dtype(dtype).name == self._spec.dtype:
            return self
        return invoke(OPS["astype"], (self,), {"dtype": dtype})

    def copy(self) -> NDArray:
        return invoke(OPS["copy"], (self,))

    def __copy__(self) -> NDArray:
        """``copy.copy``: a new array of the same values, out of the graph, as MXNet's (not a
        second proxy of this handle, which would free the array when either went)."""
        recording = flags.recording
        flags.recording = False
        try:
            return invoke(OPS["copy"], (self,))
        finally:
            flags.recording = recording

    def __deepcopy__(self, memo: dict[int, Any]) -> NDArray:
        return self.__copy__()

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickling (in the user's own process: nothing that comes over the wire is unpickled)
        keeps the values, dtype and context, as MXNet's; unpickled, the array is made in the
        current session. A sync point."""
        ctx = self.context
        return _unpickled, (self.asnumpy(), ctx.device_type, ctx.device_id)

    def copyto(self, other: NDArray | Context) -> NDArray:
        """Copy into ``other`` (an array of the same shape, which is returned) or to a
        context (a new array: every context is this session's memory)."""
        if isinstance(other, Context):
            out = self.copy()
            out._ctx = other
            return out
        if not isinstance(other, NDArray):
            raise TypeError(f"copyto: expected an NDArray or a Context, got {type(other).__name__}")
        if other is self:
            return self
        if other.shape != self.shape:  # (MXNet's copyto neither broadcasts nor reshapes)
            raise ShapeError(f"copyto: the target's shape {other.shape} is not the array's {self.shape}")
        other[...] = self
        return other

    def as_in_context(self, context: Context) -> NDArray:
        """This array when ``context`` is its own, else a copy (as MXNet)."""
        if not isinstance(context, Context):
            raise TypeError(f"as_in_context: expected a Context, got {type(context).__name__}")
        return self if context == self.context else self.copyto(context)

    # -- indexing -------------------------------------------------------------

    def __getitem__(self, key: Any) -> NDArray:
        if type(key) is slice and not self._spec.shape and _whole(key):  # (MXNet's x[:] of a 0-d array: x[()])
            key = ()
        wkey, idx = _key_to_wire(key, self._c)
        return invoke(OPS["getitem"], (self, *idx), {"key": wkey})

    def __setitem__(self, key: Any, value: Any) -> None:
        lost = None
        try:
            self._c.check_alive(self._h)
        except ChangeLost as e:  # (its value is not known: a write of all of it makes it known again)
            lost = e
        if flags.recording and tape.in_graph(self._node):
            raise AutogradError(INPLACE_IN_GRAPH)
        if type(key) is slice and not self._spec.shape and _whole(key):  # (x[:] = v of a 0-d array: all of it)
            key = ()
        wkey, idx = _key_to_wire(key, self._c)
        parsed = parse_key("setitem", wkey, len(idx))
        if lost is not None and (idx or not is_whole_key(parsed) or not self._c.revivable(self._h)):
            raise lost
        check_index_dtypes("setitem", (i._spec.dtype for i in idx))
        sub = key_shape("setitem", self.shape, parsed, tuple(i.shape for i in idx))
        copied = None  # x[:] = v of a recorded v, as MXNet: x becomes a recorded copy of v
        if flags.recording and isinstance(value, NDArray) and tape.in_graph(value._node):
            if not (is_whole_key(parsed) and not idx and assignable(value.shape, self.shape)):
                raise AutogradError(INPLACE_RECORDING)  # (MXNet's: the gradient would be lost)
            if self._c.capturing():  # the trace's name for an outside array: its node would not reach it
                raise NotTraceable(
                    "x[:] = v of a recorded v inside a hybridized function: the caller's array would not "
                    "get the gradient's path; return v instead"
                )
            op = OPS["copy" if value.shape == self.shape else "broadcast_to"]  # (MXNet's: broadcast, then copied)
            copied = tape.Node(op, None, tape.parents_of([value._node]))
        ins: dict[str, Any] = {"op": "setitem", "in": [self._h], "at": {"key": wkey}}
        if isinstance(value, NDArray):
            if value._c is not self._c:
                raise InvalidInput("setitem: arrays from different sessions cannot be mixed")
            self._c.check_alive(value._h)
            vshape = value.shape
            ins["in"].append(value._h)
        elif _scalar(value):
            vshape = ()
            ins["at"]["scalar"] = float(value)
        else:
            arr = np.asarray(value, dtype=self._spec.dtype)
            v = _from_numpy(arr, self._c)
            vshape = v.shape
            ins["in"].append(v._h)
        if not assignable(vshape, sub):
            raise not_assignable("setitem", vshape, sub)
        if idx:
            for i in idx:
                self._c.check_alive(i._h)
            ins["in"].extend(i._h for i in idx)
            ins["at"]["indices"] = len(idx)
        if flags.recording:
            ins["mode"] = _mode()
        self._c.enqueue(ins)
        if lost is not None and self._c.revive(self._h):
            self._node, self._gradp = None, None  # (no longer a variable: see ``Client.revive``)
        if copied is not None:
            self._node = copied

    # -- autograd -------------------------------------------------------------

    def attach_grad(self, grad_req: str = "write", stype: str | None = None) -> None:
        """Make this array a variable: gradients will be written to ``.grad``."""
        if grad_req not in tape.GRAD_REQS:
            raise InvalidInput(f"grad_req must be one of {tape.GRAD_REQS}, got {grad_req!r}")
        self._c.check_alive(self._h)
        self._c.check_not_argument(self._h, "attach_grad")
        c = self._c
        c.enqueue({"op": "attach_grad", "in": [self._h], "at": {"grad_req": grad_req}})
        if c.capturing():  # (a trace given up drops the instruction: this must go with it)
            node, gradp, dead = self._node, self._gradp, c._dead.get(-self._h)
            c.undo_if_dropped(lambda: self._restore(node, gradp, dead))
        self._node = _variable(grad_req, -self._h)  # its gradient buffer's key: -handle
        self._gradp = None
        c._dead.pop(-self._h, None)  # a fresh buffer: no longer what a lost backward left
        c.variables_changed += 1

    def _restore(self, node: tape.Node | None, gradp: NDArray | None, dead: Exception | None) -> None:
        self._node, self._gradp = node, gradp
        if dead is not None:
            self._c._dead[-self._h] = dead

    @property
    def grad(self) -> NDArray | None:
        """The gradient buffer (None until ``attach_grad``)."""
        n = self._node
        if n is None or n.op is not None:
            return None
        if self._h in self._c._lost_variables:  # (the attach_grad or mark_variables that made it one was lost)
            self._c.check_alive(self._h)
        if self._gradp is None or self._gradp._h in self._c._dead:  # (its batch failed: made again)
            c = self._c
            h = c.handle()
            if n.y is not None:
                c.share(h, n.y)  # the buffer itself
                c._buffers[h] = n.y
            c.enqueue({"op": "grad", "in": [self._h], "out": [h]})
            if c.capturing():  # (a trace given up drops the instruction: its proxy must go too)
                old = self._gradp
                c.undo_if_dropped(lambda: setattr(self, "_gradp", old))
            self._gradp = NDArray(c, h, self._spec, None, self._ctx)
        return self._gradp

    def backward(self, out_grad: NDArray | None = None, retain_graph: bool = False, train_mode: bool = True) -> None:
        """Gradients of this array (of its sum when not a scalar) into the variables."""
        backward([self], None if out_grad is None else [out_grad], retain_graph, train_mode)

    def detach(self) -> NDArray:
        """This array cut from the graph, as MXNet's: the same memory (a change of one is a
        change of the other) and no place in the graph (``nd.stop_gradient`` is a copy that
        keeps one, with a zero gradient)."""
        recording = flags.recording
        flags.recording = False
        try:
            return invoke(OPS["reshape"], (self,), {"shape": self._spec.shape})  # (a view)
        finally:
            flags.recording = recording


def _heads(heads: Any, head_grads: Any) -> tuple[list[NDArray], list[int | None], Client]:
    """Check heads and head gradients locally (MXNet's errors, no round trip)."""
    if isinstance(heads, NDArray):
        heads = [heads]
    heads = list(heads)
    if head_grads is None:
        head_grads = [None] * len(heads)
    elif isinstance(head_grads, NDArray):
        head_grads = [head_grads]
    if len(head_grads) != len(heads):
        raise InvalidInput("backward: head_grads must have one entry per head")
    if not heads:  # (MXNet's message: no heads reach no variables)
        raise AutogradError(NO_INPUTS)
    if not all(tape.in_graph(h._node) for h in heads):
        raise AutogradError(NOT_IN_GRAPH)
    c = heads[0]._c
    if c._dead:
        for h in heads:
            c.check_alive(h._h)  # (a head its failed batch never made: say so here, not at the next sync)
    hg: list[int | None] = []
    for h, g in zip(heads, head_grads):
        if g is None:
            hg.append(None)
            continue
        if isinstance(g, NDArray):
            c.check_alive(g._h)
            dtype = g._spec.dtype
        else:  # (checked before it is uploaded: a numpy array keeps its dtype, numbers take the head's)
            g = g if isinstance(g, np.ndarray) else np.asarray(g, dtype=h._spec.dtype)
            dtype = g.dtype.name
        if g.shape != h.shape:
            raise ShapeError(f"backward: head gradient shape {g.shape} does not match head shape {h.shape}")
        if dtype != h._spec.dtype:  # (MXNet refuses it too)
            raise DTypeError(f"backward: head gradient dtype {dtype} does not match head dtype {h._spec.dtype}")
        if not isinstance(g, NDArray):
            g = _from_numpy(g, c)
        hg.append(g._h)
    return heads, hg, c


def _updated_by_vjps(c: Client, order: list[tape.Node]) -> list[Any]:
    """The memory keys (``root``) of what the VJPs of a training pass over ``order`` change in
    place: the moving statistics of the BatchNorms recorded in training (their nodes hold
    their keys as recorded; a key shared since, with a view's base, is its base's now)."""
    return [c.root(h) for n in order if n.op is not None and type(n.at) is tuple for h in n.at]


def backward(heads: Any, head_grads: Any = None, retain_graph: bool = False, train_mode: bool = True) -> None:
    """Backpropagate from ``heads`` into the variables' ``.grad`` (MXNet's ``autograd.backward``)."""
    heads, hg, c = _heads(heads, head_grads)
    order = tape.toposort([h._node for h in heads])  # type: ignore[misc]
    if all(n.grad_req == "null" for n in order if n.op is None):
        raise AutogradError(NO_INPUTS)
    at: dict[str, Any] = {"retain_graph": bool(retain_graph)}
    if any(g is not None for g in hg):
        at["head_grads"] = hg
    ins = {"op": "backward", "in": [h._h for h in heads], "at": at, "mode": TRAINING if train_mode else 0}
    changes = [n.y for n in order if n.op is None and n.y is not None and n.grad_req != "null"]
    c.note_changes(ins, changes + (_updated_by_vjps(c, order) if train_mode else []))
    if not retain_graph:
        _back_if_lost(c, ins, order)
    c.enqueue(ins)
    if c._dead and not c.capturing():
        for n in order:  # a write-mode pass writes the whole of an attach_grad buffer: its lost value is known again
            if n.op is None and n.grad_req == "write" and type(n.y) is int and n.y < 0:
                c.revive(n.y)
    if not retain_graph:
        tape.release(order)


class _GradOf:
    """Marks a client-side node made by ``autograd.grad(create_graph=True)``."""

    name = "grad_of"


def grad(
    heads: Any,
    variables: Any,
    head_grads: Any = None,
    retain_graph: bool | None = None,
    create_graph: bool = False,
    train_mode: bool = True,
) -> list[NDArray]:
    """Gradients of ``heads`` with respect to ``variables``, as new arrays
    (MXNet's ``autograd.grad``). With ``create_graph`` they are recorded, so
    they can be differentiated again: any order, for every op of the table."""
    heads, hg, c = _heads(heads, head_grads)
    if isinstance(variables, NDArray):
        variables = [variables]
    variables = list(variables)
    if not variables:
        raise AutogradError("autograd.grad: variables cannot be an empty list")
    for v in variables:
        if v._node is None or not v._node.is_variable:
            raise AutogradError("autograd.grad: every variable must have a gradient attached (attach_grad)")
    order = tape.toposort([h._node for h in heads])  # type: ignore[misc]
    in_graph = {id(n) for n in order if n.op is None}
    for i, v in enumerate(variables):
        if id(v._node) not in in_graph:
            raise AutogradError(UNREACHABLE.format(i + 1))
    retain = create_graph if retain_graph is None else bool(retain_graph)
    outs = [c.handle() for _ in variables]
    at: dict[str, Any] = {
        "variables": [v._h for v in variables],
        "retain_graph": retain,
        "create_graph": bool(create_graph),
    }
    if any(g is not None for g in hg):
        at["head_grads"] = hg
    ins = {
        "op": "grad_of",
        "in": [h._h for h in heads],
        "out": outs,
        "at": at,
        "mode": (RECORDING if create_graph else 0) | (TRAINING if train_mode else 0),
    }
    if train_mode:
        c.note_changes(ins, _updated_by_vjps(c, order))
    if not retain:
        _back_if_lost(c, ins, order)
    c.enqueue(ins)
    node = None
    if create_graph:
        # The recorded gradients' graph (the engine's) goes back to the variables through the
        # VJPs' own ops; a pass that lets the heads' graph go keeps what leads there outside it
        # (sin's cos(x)), as MXNet's. The variables stay when the heads' nodes go.
        variables_in = tuple(n for n in order if n.op is None)
        node = tape.Node(_GradOf, None, tuple(h._node for h in heads) + variables_in)  # type: ignore[operator]
    result = [NDArray(c, h, v._spec, node, v._ctx) for h, v in zip(outs, variables)]
    if not retain:
        tape.release(order)
    return result


def _back_if_lost(c: Client, ins: dict[str, Any], order: list[tape.Node]) -> None:
    """Before a backward pass ``ins`` that lets its graph go is queued (the graph is let go as it
    is, so that a second pass raises at its call, as MXNet's): have the graph back if ``ins``
    does not run, a batch that fails before it or at it (the graph is then the session's
    still, and a pass may be tried again)."""
    if c.capturing():  # (a trace's instructions run as its calls do: no one instruction to wait for)
        return
    kept = [(n, n.parents, n.xs, n.y, n.at) for n in order if n.op is not None and n.live]

    def restore() -> None:
        for n, parents, xs, y, at in kept:
            n.parents, n.xs, n.y, n.at, n.live = parents, xs, y, at, True

    c.undo_if_lost(ins, restore)


def mark_variables(variables: Any, gradients: Any, grad_reqs: Any = "write") -> None:
    """Make arrays variables whose gradients go to the given arrays (MXNet's ``mark_variables``)."""
    if isinstance(variables, NDArray):
        variables, gradients = [variables], [gradients]
    if isinstance(grad_reqs, str):
        grad_reqs = [grad_reqs] * len(variables)
    if not len(variables) == len(gradients) == len(grad_reqs):
        raise InvalidInput("mark_variables: variables, gradients and grad_reqs must have the same length")
    for v, g, r in zip(variables, gradients, grad_reqs):
        if r not in tape.GRAD_REQS:
            raise InvalidInput(f"grad_req must be one of {tape.GRAD_REQS}, got {r!r}")
        if g.shape != v.shape or g._spec.dtype != v._spec.dtype:
            raise ShapeError(
                f"mark_variables: gradient {g.shape} {g._spec.dtype} does not match variable {v.shape} {v._spec.dtype}"
            )
    c = variables[0]._c
    for v in variables:
        c.check_not_argument(v._h, "mark_variables")
    c.enqueue(
        {
            "op": "mark_variables",
            "in": [v._h for v in variables] + [g._h for g in gradients],
            "at": {"grad_reqs": list(grad_reqs)},
        }
    )
    for v, g, r in zip(variables, gradients, grad_reqs):
        v._node = _variable(r, c.root(g._h))  # its gradient buffer is g
        v._gradp = g
    c.variables_changed += 1


def _variable(grad_req: str, grad_key: int) -> tape.Node:
    """A variable's node on the client. Its ``y`` (the client's nodes hold no values) is the
    key of its gradient buffer's memory (``Client.root``): what a backward pass changes."""
    node = tape.Node(grad_req=grad_req)
    node.y = grad_key
    return node


def _from_numpy(arr: np.ndarray, client: Client | None = None, owned: bool = False) -> NDArray:
    """Upload ``arr``: copied first unless the caller hands over an array nobody else holds
    (the queue keeps it until the batch goes, and the user may change their own meanwhile)."""
    c = client or current()
    if c.max_request_bytes is not None and framed(arr.nbytes) > c.max_request_bytes:
        if c.capturing():  # (the pieces go one request each: no instruction of a trace can go before it ends)
            raise NotTraceable(
                f"array: an upload of {arr.nbytes} bytes, past the server's request size, cannot be part of "
                "a trace (a hybridized function, an autograd.Function's backward): make it before, and pass it in"
            )
        return _upload_in_pieces(arr, c, c.max_batch_bytes)
    value = arr if owned else np.array(arr, copy=True)
    return invoke(OPS["array"], (), {"value": value}, c, nbytes=value.nbytes)


def _upload_in_pieces(arr: np.ndarray, c: Client, piece_bytes: int) -> NDArray:
    """An array too large for one request to the server: zeros of its shape made there, then
    filled a piece at a time, one request each (each piece is on the wire before the next is
    taken from ``arr``, so none is copied here). A piece is a run of whole rows where a row
    fits in one; else a run along the first axis whose slices fit, the ones before it taken
    one index at a time (``out[i, j, a:b]``). The session holds the array once: the one
    made for it (a flat one reshaped would be counted twice), and one piece."""
    arr = np.ascontiguousarray(arr)
    out = invoke(OPS["zeros"], (), {"shape": list(arr.shape), "dtype": arr.dtype.name}, c)
    piece_bytes = max(piece_bytes - piece_bytes % FRAME_ALIGN, FRAME_ALIGN)  # (its frame is aligned: ``framed``)
    shape = arr.shape
    axis = 0
    block = arr.nbytes // shape[0]  # the bytes of one index along ``axis``
    while block > piece_bytes and axis + 1 < arr.ndim:
        axis += 1
        block //= shape[axis]
    step = max(1, piece_bytes // block)
    for lead in np.ndindex(*shape[:axis]):
        for start in range(0, shape[axis], step):
            key = (*lead, slice(start, start + step))
            value = arr[key]  # (contiguous: a view)
            piece = invoke(OPS["array"], (), {"value": value}, c, nbytes=value.nbytes)
            out[key] = piece
            del piece  # freed in the same request, after the piece is written
            c.flush()
    return out


SEND_NOW_BYTES = 8 << 20


def _unpickled(value: np.ndarray, device_type: str, device_id: int) -> NDArray:
    return array(value, ctx=Context(device_type, device_id), dtype=value.dtype)


def array(source_array: Any, ctx: Context | None = None, dtype: Any = None) -> NDArray:
    """An NDArray from a list, a numpy array or another NDArray.

    As in MXNet, the dtype is float32 unless ``dtype`` is given or the source
    is an NDArray (whose dtype is kept).

    >>> array([1, 2, 3])
    <BLANKLINE>
    [1. 2. 3.]
    <NDArray 3 @cpu(0)>
    """
    where = context_of(ctx)  # (an NDArray's own context is not kept: MXNet's default, or ctx)
    if isinstance(source_array, NDArray):
        out = source_array.astype(dtype or source_array.dtype)
        out._ctx = where
        return out
    try:
        dt = np.dtype(dtype or DEFAULT_DTYPE)
    except TypeError:
        raise UnknownDType(f"array: {dtype!r} is not a dtype") from None
    if dt.name not in DTYPES:  # (the same refusal in-process as a server's)
        raise UnknownDType(f"array: dtype {dt.name} is not one of {sorted(DTYPES)}")
    dt = dt.newbyteorder("=")  # the machine's byte order, as every array of a session
    if isinstance(source_array, np.ndarray) and source_array.nbytes >= SEND_NOW_BYTES:
        c = current()
        if c.transport.sends_bytes and not c.capturing():  # (a trace's instructions go when it ends)
            # a large array goes at once, from the caller's own memory: it is on the wire
            # before we return, so there is nothing to copy for it to stay as it was
            with np.errstate(over="ignore"):  # (as below)
                value = np.ascontiguousarray(source_array, dtype=dt)
            out = _from_numpy(value, c, owned=True)
            out._ctx = where
            c.flush()
            return out
    try:
        with np.errstate(over="ignore"):  # (a float past the dtype's range is inf, with no warning, as MXNet's)
            value = np.array(source_array, dtype=dt)  # a copy of our own
    except OverflowError:  # an integer past the dtype's range: it wraps, as MXNet's (-1 as uint8 is 255)
        value = np.array(source_array).astype(dt)
    except ValueError as e:  # ragged lists, strings: MXNet's TypeError
        raise TypeError(f"array: source_array must be array like object ({e})") from None
    out = _from_numpy(value, owned=True)
    out._ctx = where
    return out


def _transpose(self: NDArray, *axes: Any, **kwargs: Any) -> NDArray:
    """``x.transpose()``, ``x.transpose(1, 0)`` or ``x.transpose(axes=(1, 0))``."""
    if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
        axes = tuple(axes[0])
    return invoke(OPS["transpose"], (self,), {"axes": kwargs.pop("axes", axes), **kwargs})


NDArray.transpose = _transpose  # type: ignore[attr-defined]
