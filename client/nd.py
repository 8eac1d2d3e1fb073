"""The ``nd`` namespace, generated from the engine's op table (as MXNet
generates its own from its operator registry), plus the creation functions
whose MXNet signatures take a context.

>>> from gradserve import nd
>>> nd.dot(nd.ones((2, 3)), nd.ones((3, 1))).shape
(2, 1)
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import zipfile
from collections.abc import Sequence
from typing import Any

import numpy as _np

from . import random
from .engine import tape
from .engine.errors import AutogradError, DTypeError, InvalidInput, ShapeError
from .engine.kernels import FTML_EPSILON
from .engine.optable import OPS, PARSERS, REQUIRED, Op
from .engine.optimizers import OPTIMIZERS, check_optimizer_attrs
from .engine.session import INPLACE_IN_GRAPH
from .ndarray import NDArray, array, context_of, dense_storage, invoke, mxnet_string, parse_given, write_into
from .runtime import current
from .state import flags


def _slots(op: Op) -> tuple[str, ...]:
    """The attributes a generated function takes positionally after its arrays, in order: its
    attributes, and for a creation op (no array inputs: eye, linspace, random_normal...) ``ctx``
    before ``dtype``, as MXNet's generated functions take them."""
    names = tuple(a.name for a in op.attrs)
    if op.inputs:
        return names
    if "dtype" in names:
        i = names.index("dtype")
        return (*names[:i], "ctx", *names[i:])
    return (*names, "ctx")


def _signature(op: Op) -> inspect.Signature:
    params = [
        inspect.Parameter(n[1:], inspect.Parameter.VAR_POSITIONAL)
        if n.startswith("*")
        else inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        for n in op.inputs
    ]
    kind = inspect.Parameter.KEYWORD_ONLY if op.variadic else inspect.Parameter.POSITIONAL_OR_KEYWORD
    attrs = {a.name: a for a in op.attrs}
    for n in _slots(op):
        a = attrs.get(n)
        default = None if a is None else inspect.Parameter.empty if a.default is REQUIRED else a.default
        if default is inspect.Parameter.empty and params and params[-1].default is not inspect.Parameter.empty:
            kind = inspect.Parameter.KEYWORD_ONLY  # a required attribute after optional ones
        params.append(inspect.Parameter(n, kind, default=default))
    return inspect.Signature(params)


_REFLECTED = {  # op(scalar, x) as a scalar op of x
    "add": "add_scalar",
    "mul": "mul_scalar",
    "sub": "rsub_scalar",
    "div": "rdiv_scalar",
    "pow": "rpow_scalar",
    "mod": "rmod_scalar",
    "maximum": "maximum_scalar",
    "minimum": "minimum_scalar",
    "equal": "equal_scalar",
    "not_equal": "not_equal_scalar",
    "greater": "lesser_scalar",
    "greater_equal": "lesser_equal_scalar",
    "lesser": "greater_scalar",
    "lesser_equal": "greater_equal_scalar",
}


_ON_NUMBERS = {  # MXNet's nd ufuncs given two numbers give a number (its lambdas)
    "add": lambda x, y: x + y,
    "subtract": lambda x, y: x - y,
    "multiply": lambda x, y: x * y,
    "divide": lambda x, y: x / y,
    "true_divide": lambda x, y: x / y,
    "modulo": lambda x, y: x % y,
    "power": lambda x, y: x**y,
    "maximum": lambda x, y: x if x > y else y,
    "minimum": lambda x, y: x if x < y else y,
    "equal": lambda x, y: 1 if x == y else 0,
    "not_equal": lambda x, y: 1 if x != y else 0,
    "greater": lambda x, y: 1 if x > y else 0,
    "greater_equal": lambda x, y: 1 if x >= y else 0,
    "lesser": lambda x, y: 1 if x < y else 0,
    "lesser_equal": lambda x, y: 1 if x <= y else 0,
    "logical_and": lambda x, y: 1 if x and y else 0,
    "logical_or": lambda x, y: 1 if x or y else 0,
    "logical_xor": lambda x, y: 1 if bool(x) != bool(y) else 0,
}

_LOGICAL_WITH = {  # logical op of an array and a number: by the number's truth, x's dtype (as MXNet's)
    ("logical_and", True): ("not_equal_scalar", {"scalar": 0.0}),
    ("logical_and", False): ("zeros_like", {}),
    ("logical_or", True): ("ones_like", {}),
    ("logical_or", False): ("not_equal_scalar", {"scalar": 0.0}),
    ("logical_xor", True): ("equal_scalar", {"scalar": 0.0}),
    ("logical_xor", False): ("not_equal_scalar", {"scalar": 0.0}),
}


def _arrays(v: Any) -> bool:
    """Whether ``v`` is arrays for a variadic input: one, or a list of them (not a shape
    given by position after them: Convolution(x, w, b, (3, 3)))."""
    return isinstance(v, NDArray) or isinstance(v, (list, tuple)) and all(isinstance(a, NDArray) for a in v)


def _leading_arrays(args: tuple, nfixed: int) -> int:
    """How many of a variadic op's positional arguments are its arrays (None for an absent
    optional one; past its ``nfixed`` fixed inputs, lists of arrays too): the rest are its
    attributes, then ``out`` and ``name``."""
    k = 0
    while k < len(args) and (k >= nfixed and _arrays(args[k]) or isinstance(args[k], NDArray) or args[k] is None):
        k += 1
    return k


def _numbers(arrays: list[Any]) -> bool:
    return all(isinstance(a, numbers.Real) and not isinstance(a, NDArray) for a in arrays)


def _generate(op: Op, name: str) -> Any:
    fixed = [n for n in op.inputs if not n.startswith("*")]
    star = op.inputs[-1][1:] if op.variadic else None
    scalar_op = OPS.get(op.name + "_scalar") if len(op.inputs) == 2 else None
    reflected = OPS.get(_REFLECTED[op.name]) if op.name in _REFLECTED else None

    nfixed = len(fixed)
    slots = _slots(op)
    on_numbers = _ON_NUMBERS.get(name)
    # MXNet's samplers draw in out's dtype where none is given (their dtype's default is None)
    dtype_of_out = op.random and "dtype" in slots

    def fn(*args: Any, **kwargs: Any) -> NDArray:
        if not kwargs and star is None and len(args) == nfixed:  # the common call: arrays only
            for a in args:
                if not isinstance(a, NDArray):
                    break
            else:
                return invoke(op, args)
        # MXNet's generated functions take ``out`` (then ``name``) by position after their attributes
        k = (nfixed if star is None else _leading_arrays(args, nfixed)) + len(slots)
        if k < len(args) <= k + 2 and (args[k] is None or isinstance(args[k], NDArray)):
            if "out" in kwargs:
                raise TypeError(f"{name}() got multiple values for argument 'out'")
            if args[k] is None:
                return fn(*args[:k], **kwargs)
            if star is not None:  # (no variadic op takes its dtype from out: LeakyReLU, the one that draws, has none)
                return fn(*args[:k], **kwargs, out=args[k])
            named = dict(zip(slots, args[nfixed:k]))  # (by name: out may give the dtype)
            for a in named:
                if a in kwargs:
                    raise TypeError(f"{name}() got multiple values for argument {a!r}")
            return fn(*args[:nfixed], **named, **kwargs, out=args[k])
        out = kwargs.pop("out", None)
        if out is not None:
            if dtype_of_out and isinstance(out, NDArray):
                k = nfixed + slots.index("dtype")
                if len(args) > k:  # (given by position: None is not given)
                    if args[k] is None:
                        args = (*args[:k], out._spec.dtype, *args[k + 1 :])
                elif kwargs.get("dtype") is None:
                    kwargs["dtype"] = out._spec.dtype
            return write_into(out, fn(*args, **kwargs), name)
        kwargs.pop("name", None)
        if star is None:
            arrays = list(args[: len(fixed)])
            rest = args[len(fixed) :]
        else:  # leading arrays (None for an absent optional one), then attributes
            k = _leading_arrays(args, nfixed)
            arrays = []
            for a in args[:k]:
                arrays.extend(a if isinstance(a, (list, tuple)) else [a])
            rest = args[k:]
        for n in fixed[len(arrays) :]:
            if n in kwargs:
                arrays.append(kwargs.pop(n))
        if star is not None and star in kwargs:
            extra = kwargs.pop(star)
            arrays.extend(extra if isinstance(extra, (list, tuple)) else [extra])
        arrays = [a for a in arrays if a is not None]
        if len(rest) > len(slots):  # (they were dropped silently: eye(2, 3, 1, ctx) read ctx as dtype)
            taken = ", ".join((*fixed, *((f"*{star}",) if star else ()), *slots))
            raise TypeError(
                f"{name}() takes at most {len(args) - len(rest) + len(slots)} positional arguments "
                f"({taken}), {len(args)} given"
            )
        for n, v in zip(slots, rest):
            if n in kwargs:
                raise TypeError(f"{name}() got multiple values for argument {n!r}")
            kwargs[n] = v
        ctx = kwargs.pop("ctx", None)
        if len(arrays) == 2 and on_numbers is not None and _numbers(arrays):
            return on_numbers(*arrays)
        if op.name in ("logical_and", "logical_or", "logical_xor") and len(arrays) == 2:
            k = 0 if isinstance(arrays[0], NDArray) else 1
            if isinstance(arrays[k], NDArray) and _numbers([arrays[1 - k]]):
                via, at = _LOGICAL_WITH[(op.name, bool(arrays[1 - k]))]
                return invoke(OPS[via], (arrays[k],), at)
        if scalar_op is not None and len(arrays) == 2 and not isinstance(arrays[1], NDArray):
            if isinstance(arrays[0], NDArray):
                return invoke(scalar_op, arrays[:1], {"scalar": float(arrays[1]), **kwargs})
        elif reflected is not None and len(arrays) == 2 and isinstance(arrays[1], NDArray):
            if isinstance(arrays[0], numbers.Real):  # nd.subtract(1, x), nd.greater(0, x)
                return invoke(reflected, arrays[1:], {"scalar": float(arrays[0]), **kwargs})
        for a in arrays:
            if not isinstance(a, NDArray):
                raise TypeError(f"{name}: expected NDArray inputs, got {type(a).__name__}")
        if not arrays:  # a creation op (eye, linspace...): in ctx, as MXNet's
            return invoke(op, arrays, kwargs, ctx=context_of(ctx))
        return invoke(op, arrays, kwargs)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = op.doc
    fn.__signature__ = _signature(op)  # type: ignore[attr-defined]
    return fn


def _method(fn: Any) -> Any:
    def method(self: NDArray, *args: Any, **kwargs: Any) -> NDArray:
        return fn(self, *args, **kwargs)

    method.__name__ = fn.__name__
    method.__doc__ = fn.__doc__
    return method


def _flag(name: str, what: str, v: Any) -> bool:
    """A boolean argument as the ops read theirs: True, False, 1 or 0 (a string is refused,
    where truthiness would take "False" for true)."""
    try:
        return PARSERS["bool"](v)
    except TypeError as e:
        raise InvalidInput(f"{name}: {what}: {e}") from None


_COMPOSED_KINDS = {"int": "int", "bool": "bool", "float": "float"}  # (annotations, as strings)
_NAMED_KINDS = {"shape": "shape", "axes": "axis"}  # (annotated Any)


def _composed(fn: Any) -> Any:
    """A function composed of the table's ops that takes MXNet's ``name`` (a symbol's name:
    nothing here) and ``out`` (the result written into it: an array, or a list for several
    outputs), and refuses any other keyword it does not name, before anything is queued (its
    own ``**kwargs`` get nothing: MXNet's signatures, for completion, keep them)."""
    sig = inspect.signature(fn)
    own = {n for n, p in sig.parameters.items() if p.kind is not p.VAR_KEYWORD}
    name = fn.__name__
    # the kinds of its attributes, for those given as MXNet's strings ("3", "True", "(1,)")
    kinds = {n: k for n, p in sig.parameters.items() if (k := _COMPOSED_KINDS.get(p.annotation) or _NAMED_KINDS.get(n))}

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if kinds and (any(type(a) is str for a in args) or any(type(v) is str for v in kwargs.values())):
            bound = sig.bind_partial(*args, **kwargs)
            for k, v in bound.arguments.items():
                if type(v) is str and k in kinds:
                    bound.arguments[k] = mxnet_string(kinds[k], v)
            args, kwargs = bound.args, bound.kwargs
        if not kwargs.keys() - own:
            return fn(*args, **kwargs)
        extra = {k: kwargs.pop(k) for k in list(kwargs) if k not in own}
        extra.pop("name", None)
        out = extra.pop("out", None)
        if extra:
            raise TypeError(f"{name}() got an unexpected keyword argument {next(iter(extra))!r}")
        result = fn(*args, **kwargs)
        if out is None:
            return result
        if isinstance(result, NDArray):
            return write_into(out, result, name)
        if not isinstance(out, (list, tuple)) or len(out) != len(result):
            raise InvalidInput(f"{name}: out must be a list of {len(result)} NDArrays, one per output")
        return [write_into(o, r, name) for o, r in zip(out, result)]

    return wrapper


def sample_multinomial(
    data: NDArray, shape: Any = None, get_prob: bool = False, out: Any = None, dtype: Any = "int32", **kwargs: Any
) -> Any:
    """MXNet's nd.sample_multinomial: ``nd.random.multinomial`` (with ``get_prob``)."""
    return random.multinomial(data, shape, get_prob, out, dtype, **kwargs)


for _op in OPS.ops():
    for _name in (_op.name, *_op.aliases):
        if _name in globals() or _name.startswith("contrib_"):
            continue  # nd.array: written by hand; contrib_<name>: nd.contrib.<name>
        globals()[_name] = _fn = _generate(_op, _name)  # zeros, ones, ... are redefined below
        if _op.inputs and not hasattr(NDArray, _name):  # x.sum(), x.argmax(axis=1), x.pick(idx), ...
            setattr(NDArray, _name, _method(_fn))


def _shaped(name: str, x: NDArray, at: dict[str, Any], inplace: Any, kwargs: dict[str, Any]) -> NDArray:
    """MXNet's ``x.flatten()``, ``x.expand_dims(axis)``, ``x.squeeze(axis)``: a new array, or with
    ``inplace=True`` a view of x (its memory, its place in the graph) of that shape."""
    kwargs.pop("name", None)
    if not _flag(name, "inplace", inplace):
        return globals()[name](x, **at, **kwargs)
    op = OPS[name]
    shape = op.infer(op.parse_attrs({**at, **kwargs}), x._spec).shape
    return invoke(OPS["reshape"], (x,), {"shape": shape})


def _flatten_method(self: NDArray, inplace: bool = False, **kwargs: Any) -> NDArray:
    return _shaped("flatten", self, {}, inplace, kwargs)


def _expand_dims_method(self: NDArray, axis: int, inplace: bool = False, **kwargs: Any) -> NDArray:
    return _shaped("expand_dims", self, {"axis": axis}, inplace, kwargs)


def _squeeze_method(self: NDArray, axis: Any = None, inplace: bool = False, **kwargs: Any) -> NDArray:
    return _shaped("squeeze", self, {"axis": axis}, inplace, kwargs)


for _name, _m in (("flatten", _flatten_method), ("expand_dims", _expand_dims_method), ("squeeze", _squeeze_method)):
    _m.__name__ = _m.__qualname__ = _name
    _m.__doc__ = f"{globals()[_name].__doc__ or ''}\n\n``inplace=True``: a view of this array, as MXNet's."
    setattr(NDArray, _name, _m)


def _copied(view: Any) -> Any:
    def fn(*args: Any, **kwargs: Any) -> NDArray:
        if kwargs.get("out") is not None:
            return view(*args, **kwargs)  # (written into ``out``: a copy already)
        return invoke(OPS["copy"], (view(*args, **kwargs),))

    fn.__name__, fn.__qualname__ = view.__name__, view.__qualname__
    fn.__doc__ = f"{view.__doc__ or ''}\n\nA new array, as MXNet's nd.reshape (the method ``x.reshape`` is a view)."
    fn.__signature__ = inspect.signature(view)  # type: ignore[attr-defined]
    return fn


reshape = Reshape = _copied(globals()["reshape"])  # (MXNet's function copies; its method shares)


@_composed
def zeros(shape: Any, ctx: Any = None, dtype: Any = None, stype: Any = None, **kwargs: Any) -> NDArray:
    """An array of zeros (float32 unless ``dtype`` says otherwise; ``stype`` "default", dense:
    the one storage here)."""
    dense_storage("zeros", stype)
    return invoke(OPS["zeros"], (), {"shape": shape, "dtype": dtype}, ctx=context_of(ctx))


@_composed
def ones(shape: Any, ctx: Any = None, dtype: Any = None, **kwargs: Any) -> NDArray:
    """An array of ones (float32 unless ``dtype`` says otherwise)."""
    return invoke(OPS["ones"], (), {"shape": shape, "dtype": dtype}, ctx=context_of(ctx))


@_composed
def full(shape: Any, val: float, ctx: Any = None, dtype: Any = None, out: Any = None, **kwargs: Any) -> NDArray:
    """An array filled with ``val`` (True and False are 1 and 0, as MXNet's); with ``out``,
    out filled, in its shape and dtype whatever ``shape`` and ``dtype`` say, as MXNet's."""
    if isinstance(val, (bool, _np.bool_)):
        val = int(val)
    if isinstance(out, NDArray):
        shape, dtype = out.shape, out._spec.dtype
    made = invoke(OPS["full"], (), {"shape": shape, "val": val, "dtype": dtype}, ctx=context_of(ctx))
    return made if out is None else write_into(out, made, "full")


def empty(shape: Any, ctx: Any = None, dtype: Any = None, stype: Any = None) -> NDArray:
    """An uninitialised array (zeros here: the engine never exposes stale memory)."""
    dense_storage("empty", stype)
    return zeros(shape, ctx, dtype)


def from_numpy(ndarray: Any, zero_copy: bool = True) -> NDArray:
    """An NDArray of a numpy array's values and dtype. ``zero_copy`` is MXNet's (sharing the
    numpy array's memory): here the values are always copied, to the engine's memory."""
    if not isinstance(ndarray, _np.ndarray):
        raise TypeError(f"from_numpy: expected a numpy array, got {type(ndarray).__name__}")
    return array(ndarray, dtype=ndarray.dtype)


def arange(
    start: float,
    stop: float | None = None,
    step: float = 1.0,
    repeat: int = 1,
    infer_range: Any = None,
    ctx: Any = None,
    dtype: Any = None,
) -> NDArray:
    """Evenly spaced values in [start, stop), float32 unless ``dtype`` is given."""
    return invoke(
        OPS["arange"],
        (),
        {"start": start, "stop": stop, "step": step, "repeat": repeat, "dtype": dtype},
        ctx=context_of(ctx),
    )


@_composed
def topk(
    data: NDArray,
    axis: int = -1,
    k: int = 1,
    ret_typ: str = "indices",
    is_ascend: bool = False,
    dtype: Any = "float32",
    **kwargs: Any,
) -> Any:
    """The k largest (or smallest) along ``axis``: ``ret_typ`` indices, value,
    mask, or both (a list [values, indices])."""
    at = {"axis": axis, "k": k, "is_ascend": is_ascend, "dtype": dtype}
    if ret_typ == "both":
        return [
            invoke(OPS["topk"], (data,), {**at, "ret_typ": "value"}),
            invoke(OPS["topk"], (data,), {**at, "ret_typ": "indices"}),
        ]
    return invoke(OPS["topk"], (data,), {**at, "ret_typ": ret_typ})


def histogram(a: NDArray, bins: Any = 10, range: Any = None) -> list[NDArray] | tuple[NDArray, NDArray]:  # noqa: A002
    """[counts (int64), bin edges] of ``a``'s values: ``bins`` equal bins over ``range``, or
    the bins between the values of an array of increasing edges (``range`` not read: numpy's
    ``histogram``, each bin holds its left edge, the last its right edge too). Without
    ``range``, numpy's ``histogram`` over the values' least and greatest, as a tuple of float32
    counts and edges (MXNet's fallback to numpy). The ops ``histogram`` and
    ``histogram_edges`` give the two."""
    if isinstance(bins, NDArray):
        return [invoke(OPS["histogram"], (a, bins)), invoke(OPS["copy"], (bins,))]
    if isinstance(bins, bool) or not isinstance(bins, numbers.Integral):
        raise InvalidInput(f"histogram: bins must be a number of bins or an NDArray of edges, got {bins!r}")
    at = {"bin_cnt": int(bins), "range": None if range is None else list(range)}
    counts, edges = invoke(OPS["histogram"], (a,), at), invoke(OPS["histogram_edges"], (a,), at)
    return (counts, edges) if range is None else [counts, edges]


@_composed
def split(data: NDArray, num_outputs: int, axis: int = 1, squeeze_axis: bool = False, **kwargs: Any) -> Any:
    """``num_outputs`` equal parts along ``axis`` (a list; one array when 1)."""
    squeeze = _flag("split", "squeeze_axis", squeeze_axis)
    ndim = len(data.shape)
    if not isinstance(num_outputs, numbers.Integral) or isinstance(num_outputs, bool):
        raise InvalidInput(f"split: num_outputs must be an integer, got {num_outputs!r}")
    if not isinstance(axis, numbers.Integral) or not -ndim <= axis < ndim:
        raise ShapeError(f"split: axis {axis!r} is out of range for an array of rank {ndim}")
    n = data.shape[axis]
    if num_outputs < 1 or n % num_outputs:
        raise ShapeError(f"split: axis {axis} of length {n} does not split into {num_outputs} equal parts")
    step = n // num_outputs
    if squeeze and step != 1:  # (MXNet's check: it was ignored here, the parts kept the axis)
        raise ShapeError(
            f"split: squeeze_axis needs parts of length 1: axis {axis} of length {n} into {num_outputs} parts"
        )
    parts = [
        invoke(OPS["slice_axis"], (data,), {"axis": axis, "begin": i * step, "end": (i + 1) * step})
        for i in range(num_outputs)
    ]
    if squeeze:
        parts = [invoke(OPS["squeeze"], (p,), {"axis": axis}) for p in parts]
    return parts[0] if num_outputs == 1 else parts


SliceChannel = split  # (MXNet's operator name for it)

_pow = globals()["power"]  # (the table's pow, whose inputs are lhs and rhs)


def power(base: Any, exp: Any, out: Any = None, name: Any = None) -> Any:
    """``base ** exp`` elementwise: two arrays (broadcast), an array and a number, or two
    numbers (a number), by MXNet's names for them."""
    return _pow(base, exp) if out is None else _pow(base, exp, out=out)


@_composed
def split_v2(ary: NDArray, indices_or_sections: Any, axis: int = 0, squeeze_axis: bool = False, **kwargs: Any) -> Any:
    """Parts along ``axis``: that many equal ones (an integer), or cut before each index of a
    tuple, as numpy's ``split`` (a list; one array when one part)."""
    squeeze = _flag("split_v2", "squeeze_axis", squeeze_axis)
    ndim = len(ary.shape)
    if not isinstance(axis, numbers.Integral) or not -ndim <= axis < ndim:
        raise ShapeError(f"split_v2: axis {axis} is out of range for an array of rank {ndim}")
    n = ary.shape[axis]
    if isinstance(indices_or_sections, numbers.Integral):
        k = int(indices_or_sections)
        if k < 1 or n % k:
            raise ShapeError(f"split_v2: axis {axis} of length {n} does not split into {k} equal parts")
        cuts = [i * (n // k) for i in range(k)] + [n]
    else:
        cuts = [0, *(int(i) for i in indices_or_sections), n]
        for a, b in zip(cuts, cuts[1:]):
            if not 0 <= a <= b <= n:
                raise ShapeError(f"split_v2: indices {tuple(indices_or_sections)} must rise within [0, {n}]")
    parts = [invoke(OPS["slice_axis"], (ary,), {"axis": axis, "begin": a, "end": b}) for a, b in zip(cuts, cuts[1:])]
    if squeeze:
        for p in parts:
            if p.shape[axis] != 1:
                raise ShapeError(f"split_v2: squeeze_axis needs parts of length 1 on axis {axis}, got {p.shape[axis]}")
        parts = [invoke(OPS["squeeze"], (p,), {"axis": axis}) for p in parts]
    return parts[0] if len(parts) == 1 else parts


# MXNet's legacy functions (its nd keeps them, deprecated)


@_composed
def choose_element_0index(lhs: NDArray, rhs: NDArray, **kwargs: Any) -> NDArray:
    """``lhs[i, rhs[i]]`` for each row i (MXNet's legacy name of ``pick``, clipping)."""
    return invoke(OPS["pick"], (lhs, rhs), {"axis": -1})


@_composed
def fill_element_0index(lhs: NDArray, mhs: NDArray, rhs: NDArray, **kwargs: Any) -> NDArray:
    """A copy of ``lhs`` with ``lhs[i, rhs[i]]`` set to ``mhs[i]`` in each row i (MXNet's legacy
    function; lhs stays as it is)."""
    if len(lhs.shape) != 2:
        raise ShapeError(f"fill_element_0index: lhs must be 2-D, got shape {lhs.shape}")
    hot = invoke(OPS["one_hot"], (rhs,), {"depth": lhs.shape[1], "dtype": "bool"})
    values = invoke(OPS["expand_dims"], (mhs,), {"axis": 1})
    return invoke(OPS["where"], (hot, invoke(OPS["broadcast_like"], (values, lhs)), lhs))


def onehot_encode(indices: NDArray, out: NDArray) -> NDArray:
    """``out`` (N, depth) made the one-hot rows of ``indices`` (N,) (MXNet's legacy function:
    ``one_hot``), and returned."""
    if not isinstance(out, NDArray) or len(out.shape) != 2:
        raise InvalidInput("onehot_encode: out must be a 2-D NDArray (N, depth)")
    made = invoke(OPS["one_hot"], (indices,), {"depth": out.shape[1], "dtype": out._spec.dtype})
    return write_into(out, made, "onehot_encode")


_AMP = ("float16", "float32")  # (the dtypes MXNet's mixed precision casts; others pass as they are)


@_composed
def amp_cast(data: NDArray, dtype: Any, **kwargs: Any) -> NDArray:
    """MXNet's mixed-precision cast: a float16 or float32 array cast to ``dtype``, any other
    (float64, integers) as it is (a copy); the gradient is cast back."""
    if not isinstance(data, NDArray):
        raise TypeError(f"amp_cast: expected an NDArray, got {type(data).__name__}")
    target = _np.dtype(dtype).name
    return invoke(OPS["astype"], (data,), {"dtype": target if data._spec.dtype in _AMP else data._spec.dtype})


@_composed
def amp_multicast(*data: NDArray, num_outputs: int, cast_narrow: bool = False, **kwargs: Any) -> Any:
    """MXNet's mixed-precision cast of several arrays to one dtype: the float16 and float32
    ones to the widest of them (float16 with ``cast_narrow``), the others as they are (copies);
    a list, or one array for one input."""
    if num_outputs != len(data):
        raise InvalidInput(f"amp_multicast: num_outputs is {num_outputs} but {len(data)} arrays were given")
    for a in data:
        if not isinstance(a, NDArray):
            raise TypeError(f"amp_multicast: expected NDArray inputs, got {type(a).__name__}")
    mixed = {a._spec.dtype for a in data} & set(_AMP)
    narrow = _flag("amp_multicast", "cast_narrow", cast_narrow)
    target = ("float16" if narrow else "float32") if len(mixed) > 1 else next(iter(mixed), None)
    outs = [invoke(OPS["astype"], (a,), {"dtype": target if a._spec.dtype in _AMP else a._spec.dtype}) for a in data]
    return outs if len(outs) > 1 else outs[0]


@_composed
def moments(data: NDArray, axes: Any = None, keepdims: bool = False, **kwargs: Any) -> list[NDArray]:
    """[mean, variance] of ``data`` over ``axes`` (a list of axes; MXNet's moments: the
    population variance, the mean of the squared deviations), as table ops, so both have
    gradients of any order."""
    if axes is None or (isinstance(axes, (list, tuple)) and not axes):
        raise InvalidInput(
            "moments: Empty axes is not supported, if you would like to do global moments, "
            "please pass all axes to axes argument"
        )
    if isinstance(axes, numbers.Integral):
        axes = (axes,)
    if not isinstance(axes, (list, tuple)) or not all(
        isinstance(a, numbers.Integral) and not isinstance(a, bool) for a in axes
    ):
        raise InvalidInput(f"moments: axes must be a list of ints, got {axes!r}")
    if data.dtype == _np.bool_:
        raise DTypeError("moments: bool arrays take no arithmetic, as MXNet's NDArrays (cast them with astype first)")
    shape = data.shape
    for a in axes:
        if not -len(shape) <= a < len(shape):
            raise ShapeError(f"moments: axis {a} is out of range for an array of rank {len(shape)}")
    norm = sorted(int(a) % len(shape) for a in axes)
    if len(set(norm)) != len(norm):
        raise ShapeError(f"moments: axes {tuple(axes)} name an axis twice")
    if any(shape[a] == 0 for a in norm):
        raise ShapeError(f"moments: cannot reduce an axis of length 0 (shape {shape}, axes {tuple(axes)})")
    at = {"axis": tuple(norm), "keepdims": _flag("moments", "keepdims", keepdims)}
    mean = invoke(OPS["mean"], (data,), at)
    centred = invoke(OPS["sub"], (data, invoke(OPS["mean"], (data,), {**at, "keepdims": True})))
    var = invoke(OPS["mean"], (invoke(OPS["square"], (centred,)),), at)
    return [mean, var]


def _with_statistics(name: str, stats: Any) -> Any:
    """The generated function of op ``name`` (BatchNorm, LayerNorm), and with
    ``output_mean_var=True`` the list [output, *stats(arguments)], MXNet's three outputs: the
    op gives the output, table ops the statistics (so gradients go through them too)."""
    plain = _generate(OPS[name], name)
    sig = _signature(OPS[name])
    slot = list(sig.parameters).index("output_mean_var")

    def fn(*args: Any, **kwargs: Any) -> Any:
        if len(args) <= slot and not kwargs.get("output_mean_var"):
            return plain(*args, **kwargs)
        kwargs.pop("name", None)
        out = kwargs.pop("out", None)
        try:
            bound = sig.bind(*args, **kwargs)
        except TypeError as e:
            raise InvalidInput(f"{name}: {e}") from None
        given = bound.arguments
        at, _ = parse_given(OPS[name], {k: v for k, v in given.items() if k not in OPS[name].inputs})
        if not at["output_mean_var"]:  # (as the op reads it: "False" is False, as in MXNet)
            return plain(*args, **({"out": out} if out is not None else {}), **kwargs)
        if out is not None and (not isinstance(out, (list, tuple)) or len(out) != 3):
            raise InvalidInput(f"{name}: out= with output_mean_var is a list of 3 NDArrays, one per output")
        given["output_mean_var"] = False
        y = plain(**given)  # (checks every input and attribute first)
        result = [y, *stats(at, *(given[k] for k in OPS[name].inputs))]
        if out is None:
            return result
        return [write_into(o, r, name) for o, r in zip(out, result)]

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"{OPS[name].doc}\n\nWith output_mean_var=True: [output, {stats.__doc__}] (MXNet's three outputs)."
    fn.__signature__ = sig  # type: ignore[attr-defined]
    return fn


def _batch_norm_stats(at: dict[str, Any], x: NDArray, gamma: NDArray, *rest: NDArray) -> list[NDArray]:
    """the mean and 1 / sqrt(var + eps) of each channel: the batch's in training, the moving
    ones in prediction or with use_global_stats"""
    moving_mean, moving_var = rest[1], rest[2]
    wide = gamma._spec.dtype
    eps = {"scalar": at["eps"]}
    if flags.training and not at["use_global_stats"]:
        if x._spec.dtype != wide:
            x = invoke(OPS["astype"], (x,), {"dtype": wide})
        ax = at["axis"] % len(x.shape)
        axes = tuple(a for a in range(len(x.shape)) if a != ax)
        mean, var = moments(x, axes=axes)
    else:
        mean, var = invoke(OPS["copy"], (moving_mean,)), moving_var
    return [mean, invoke(OPS["rsqrt"], (invoke(OPS["add_scalar"], (var,), eps),))]


def _mean_and_std(x: NDArray, axes: tuple[int, ...], keepdims: bool, eps: float) -> list[NDArray]:
    """The mean and sqrt(var + eps) of ``x`` over ``axes``; float16 in float32, rounded once,
    as the norms compute it."""
    dt = x._spec.dtype
    if dt == "float16":
        x = invoke(OPS["astype"], (x,), {"dtype": "float32"})
    mean, var = moments(x, axes=axes, keepdims=keepdims)
    std = invoke(OPS["sqrt"], (invoke(OPS["add_scalar"], (var,), {"scalar": eps}),))
    if dt == "float16":
        mean, std = (invoke(OPS["astype"], (a,), {"dtype": dt}) for a in (mean, std))
    return [mean, std]


def _layer_norm_stats(at: dict[str, Any], x: NDArray, *rest: NDArray) -> list[NDArray]:
    """the mean and sqrt(var + eps) over ``axis``, which they keep as an axis of 1"""
    return _mean_and_std(x, (at["axis"],), True, at["eps"])


def _group_norm_stats(at: dict[str, Any], x: NDArray, *rest: NDArray) -> list[NDArray]:
    """the mean and sqrt(var + eps) of each sample's groups of channels, (N, num_groups)"""
    n, groups = x.shape[0], at["num_groups"]
    grouped = invoke(OPS["reshape"], (x,), {"shape": (n, groups, math.prod(x.shape[1:]) // groups)})
    return _mean_and_std(grouped, (2,), False, at["eps"])


BatchNorm = _with_statistics("BatchNorm", _batch_norm_stats)
LayerNorm = _with_statistics("LayerNorm", _layer_norm_stats)
GroupNorm = _with_statistics("GroupNorm", _group_norm_stats)


def concatenate(arrays: Sequence[NDArray], axis: int = 0, always_copy: bool = True) -> NDArray:
    """MXNet's nd.concatenate: the arrays joined along ``axis`` (a new array, even of one)."""
    arrays = list(arrays)
    if not arrays:
        raise InvalidInput("concatenate: needs at least one array")
    if len(arrays) == 1 and not always_copy:
        return arrays[0]
    return invoke(OPS["concat"], arrays, {"dim": axis})


@_composed
def linalg_slogdet(A: NDArray, **kwargs: Any) -> list[NDArray]:
    """[sign, log |det|] of each square matrix on A's last two axes (MXNet's two outputs; the
    op ``linalg_slogdet`` gives them stacked on a first axis of 2)."""
    both = invoke(OPS["linalg_slogdet"], (A,))
    return [both[0], both[1]]


_ctc = _generate(OPS["CTCLoss"], "CTCLoss")


def CTCLoss(
    data: NDArray,
    label: NDArray,
    data_lengths: NDArray | None = None,
    label_lengths: NDArray | None = None,
    **kwargs: Any,
) -> NDArray:
    """MXNet's CTCLoss (the op's): ``data_lengths`` and ``label_lengths`` given by name too,
    each read where ``use_data_lengths`` / ``use_label_lengths`` says so."""
    return _ctc(data, label, data_lengths, label_lengths, **kwargs)


CTCLoss.__doc__ = f"{OPS['CTCLoss'].doc}\n\n{CTCLoss.__doc__}"
ctc_loss = CTCLoss


@_composed
def linalg_gelqf(A: NDArray, **kwargs: Any) -> list[NDArray]:
    """[Q, L] with A = L Q, L lower triangular and Q of orthonormal rows (MXNet's two outputs;
    the op ``linalg_gelqf`` gives them joined on the last axis)."""
    both = invoke(OPS["linalg_gelqf"], (A,))
    n = A.shape[-1]
    return [both[..., :n], both[..., n:]]


@_composed
def linalg_syevd(A: NDArray, **kwargs: Any) -> list[NDArray]:
    """[U, lam] with A = U^T diag(lam) U, U's rows the eigenvectors of the symmetric A (MXNet's
    two outputs; the op ``linalg_syevd`` gives lam as U's last row)."""
    both = invoke(OPS["linalg_syevd"], (A,))
    n = A.shape[-1]
    return [both[..., :n, :], both[..., n, :]]


class _Linalg:
    """``nd.linalg``: MXNet's linear algebra on the last two axes, batched over the leading
    ones. Each is also ``nd.linalg_<name>``, the same op of the table.

    >>> from gradserve import nd
    >>> nd.linalg.potrf(nd.array([[4.0, 2.0], [2.0, 5.0]])).asnumpy().tolist()
    [[2.0, 0.0], [1.0, 2.0]]
    """

    gemm = staticmethod(_generate(OPS["linalg_gemm"], "linalg.gemm"))
    syrk = staticmethod(_generate(OPS["linalg_syrk"], "linalg.syrk"))
    trsm = staticmethod(_generate(OPS["linalg_trsm"], "linalg.trsm"))
    trmm = staticmethod(_generate(OPS["linalg_trmm"], "linalg.trmm"))
    potrf = staticmethod(_generate(OPS["linalg_potrf"], "linalg.potrf"))
    potri = staticmethod(_generate(OPS["linalg_potri"], "linalg.potri"))
    inverse = staticmethod(_generate(OPS["linalg_inverse"], "linalg.inverse"))
    det = staticmethod(_generate(OPS["linalg_det"], "linalg.det"))
    sumlogdiag = staticmethod(_generate(OPS["linalg_sumlogdiag"], "linalg.sumlogdiag"))
    extractdiag = staticmethod(_generate(OPS["linalg_extractdiag"], "linalg.extractdiag"))
    makediag = staticmethod(_generate(OPS["linalg_makediag"], "linalg.makediag"))
    extracttrian = staticmethod(_generate(OPS["linalg_extracttrian"], "linalg.extracttrian"))
    maketrian = staticmethod(_generate(OPS["linalg_maketrian"], "linalg.maketrian"))
    gemm2 = staticmethod(_generate(OPS["linalg_gemm2"], "linalg.gemm2"))
    slogdet = staticmethod(linalg_slogdet)
    gelqf = staticmethod(linalg_gelqf)
    syevd = staticmethod(linalg_syevd)


linalg = _Linalg()
NDArray.topk = _method(topk)  # type: ignore[attr-defined]
NDArray.split = _method(split)  # type: ignore[attr-defined]
NDArray.split_v2 = _method(split_v2)  # type: ignore[attr-defined]


def save(fname: str, data: Any) -> None:
    """Write an NDArray, a list or a dict of NDArrays to a file on this machine
    (numpy's .npz container: no pickle)."""
    if isinstance(data, NDArray):
        data = [data]
    if isinstance(data, dict):
        names = list(data)
        if not all(isinstance(k, str) for k in names):
            raise InvalidInput("save: dict keys must be strings")
        arrays = {f"d:{k}": v.asnumpy() for k, v in data.items()}
    elif isinstance(data, (list, tuple)):
        arrays = {f"l:{i}": v.asnumpy() for i, v in enumerate(data)}
    else:
        raise InvalidInput("save: data must be an NDArray, a list or a dict of NDArrays")
    with open(fname, "wb") as f:
        _np.savez(f, **arrays)


def load(fname: str) -> Any:
    """Read what ``save`` wrote: a list, or a dict, of NDArrays."""
    try:
        with _np.load(fname, allow_pickle=False) as z:
            data = {k: z[k] for k in z.keys()}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise InvalidInput(f"load: {fname} is not a file written by gradserve.nd.save ({e})") from None
    keys = list(data)
    if keys and all(k.startswith("d:") for k in keys):
        return {k[2:]: array(v, dtype=v.dtype) for k, v in data.items()}
    if all(k.startswith("l:") and k[2:].isdigit() for k in keys):
        return [array(data[k], dtype=data[k].dtype) for k in sorted(keys, key=lambda k: int(k[2:]))]
    raise InvalidInput(f"load: {fname} was not written by gradserve.nd.save")


def _same_memory(a: Any, b: NDArray) -> bool:
    """Whether ``a`` is ``b``'s memory as far as the client can tell: ``b`` itself, or arrays
    of one shape where one is an array of its own and the other a view of it (``w[:]``). (Two
    views of one base are taken as apart: which part of it each is, the server alone knows.)"""
    if a is b:
        return True
    if not isinstance(a, NDArray) or a._c is not b._c or a.shape != b.shape:
        return False
    ra, rb = a._c.root(a._h), b._c.root(b._h)
    return ra == rb and (ra == a._h or rb == b._h)


def _optimizer_step(name: str, args: dict[str, Any], says_out: bool = False) -> NDArray:
    """One of MXNet's optimizer updates, from its function's arguments (``locals()``: weight,
    grad, the states the engine's ``OPTIMIZERS`` names, the hyperparameters, ``out``; the
    float32 ones, a multi-precision update's): ``out`` (a copy of the weight unless it is the weight) and the
    states changed in place, in one instruction. Hyperparameters are checked here, as the
    command checks them, so a bad one is refused by the call. ``says_out``: the command is
    told whether ``out`` is the weight (``out_is_weight``: its result depends on it)."""
    return _queue_step(_checked_step(name, args, says_out))


def _checked_step(name: str, args: dict[str, Any], says_out: bool = False) -> tuple[Any, ...]:
    """An optimizer update's arrays and attributes, checked (``_optimizer_step``'s first half:
    nothing is queued, so a refused one leaves every array as it was)."""
    states, f32, scalars = OPTIMIZERS[name]
    weight, grad, out = args["weight"], args["grad"], args["out"]
    arrays = {"gradient": grad, **{k: args[k] for k in states}}
    skip = ("weight", "grad", "out", "lazy_update", "kwargs", *states, *scalars)
    at = {k: v for k, v in args.items() if k not in skip and v is not REQUIRED}  # (ftml's t: no default)
    at.update((k, v) for k, v in args.get("kwargs", {}).items() if k != "name")  # (unknown ones are refused)
    if says_out:
        if "out_is_weight" in at:  # (the command's, not the call's: MXNet's has no such argument)
            known = ", ".join(k for k in at if k != "out_is_weight")
            raise InvalidInput(f"{name}: unknown attribute 'out_is_weight' (attributes: {known})")
        at["out_is_weight"] = _same_memory(out, weight)
    for a in (weight, *arrays.values()):
        if not isinstance(a, NDArray):
            raise TypeError(f"{name}: expected NDArray inputs, got {type(a).__name__}")
        if a._c is not weight._c:  # (a handle is a number of its own session's: another's names another array)
            raise InvalidInput(f"{name}: arrays from different sessions cannot be mixed")
        a._c.check_alive(a._h)  # (a stale gradient a lost backward left would go in silently)
    if out is not None and not isinstance(out, NDArray):
        raise TypeError(f"{name}: out must be an NDArray, got {type(out).__name__}")
    if out is not None and out._c is not weight._c:
        raise InvalidInput(f"{name}: arrays from different sessions cannot be mixed (out)")
    check_optimizer_attrs(name, at)
    for what, a in arrays.items():
        want = "float32" if what in f32 else weight._spec.dtype
        if a.shape != weight.shape or a._spec.dtype != want:
            raise ShapeError(
                f"{name}: {what} {a.shape} {a._spec.dtype} does not fit weight {weight.shape} {weight._spec.dtype}"
                + (f" (a float32 {what} of its shape)" if what in f32 else "")
            )
    if out is not None and out is not weight:  # (checked here: out is written before the command runs)
        if out.shape != weight.shape or out._spec.dtype != weight._spec.dtype:
            raise ShapeError(
                f"{name}: out {out.shape} {out._spec.dtype} does not fit weight {weight.shape} {weight._spec.dtype}"
            )
        for (
            what,
            a,
        ) in arrays.items():  # (two views of one base may overlap: which part each is, the server alone knows)
            if out._c.root(out._h) == a._c.root(a._h):
                raise InvalidInput(
                    f"{name}: out must not be the {what} or share its memory (give the weight, or an array of its own)"
                )
    if flags.recording:  # (the gradient is only read: it may be in a graph)
        for a in (out, *(args[k] for k in states)):
            if a is not None and tape.in_graph(a._node):
                raise AutogradError(INPLACE_IN_GRAPH)
    read = [_one_float32(name, k, args[k], weight) for k in scalars]
    return name, weight, grad, out, at, [*(args[k] for k in states), *read]


def _one_float32(name: str, what: str, value: Any, like: NDArray) -> NDArray:
    """An update's input of one value (AdamW's rescale_grad): a float32 NDArray of one
    element, or a number, made one (as MXNet's frontend makes it)."""
    if isinstance(value, NDArray):
        if value._c is not like._c:
            raise InvalidInput(f"{name}: arrays from different sessions cannot be mixed ({what})")
        value._c.check_alive(value._h)
        if value.size != 1 or value._spec.dtype != "float32":
            raise ShapeError(
                f"{name}: {what} must be a float32 array of one value, got {value.shape} {value._spec.dtype}"
            )
        return value
    if not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: {what} must be a number or an NDArray, got {type(value).__name__}")
    return full((1,), float(value), ctx=like.context, dtype="float32")  # (an op: a hybridized step traces it)


def _queue_step(checked: tuple[Any, ...]) -> NDArray:
    """Queue an update ``_checked_step`` passed: ``out`` made the weight's copy, then the
    instruction that changes it and the states in place."""
    name, weight, grad, out, at, rest = checked  # (rest: the states, then the inputs of one value)
    from .autograd import _Scope

    with _Scope(False, None):  # (not recorded: out is the weight's copy, not a recorded one)
        if out is None:
            out = weight.copy()
        elif out is not weight:
            out[:] = weight
    if flags.recording and tape.in_graph(out._node):
        raise AutogradError(INPLACE_IN_GRAPH)
    out._c.enqueue({"op": name, "in": [out._h, grad._h, *(a._h for a in rest)], "at": at})
    return out


def sgd_update(
    weight: NDArray,
    grad: NDArray,
    lr: float,
    wd: float = 0.0,
    rescale_grad: float = 1.0,
    clip_gradient: float = -1.0,
    lazy_update: bool = True,
    out: NDArray | None = None,
    **kwargs: Any,
) -> NDArray:
    """MXNet's SGD step: ``out = weight - lr * (clip(rescale_grad * grad) + wd * weight)``.

    With ``out=weight`` (the usual call) the weight is updated in place in one
    pass over its memory."""
    return _optimizer_step("sgd_update", locals())


def sgd_mom_update(
    weight: NDArray,
    grad: NDArray,
    mom: NDArray,
    lr: float,
    momentum: float = 0.0,
    wd: float = 0.0,
    rescale_grad: float = 1.0,
    clip_gradient: float = -1.0,
    lazy_update: bool = True,
    out: NDArray | None = None,
    **kwargs: Any,
) -> NDArray:
    """MXNet's SGD step with momentum: ``mom = momentum * mom - lr * (clip(rescale_grad * grad)
    + wd * weight)``, then ``out = weight + mom``; ``mom`` is updated in place (``out=weight``:
    the weight too)."""
    return _optimizer_step("sgd_mom_update", locals())


def mp_sgd_update(
    weight: NDArray,
    grad: NDArray,
    weight32: NDArray,
    lr: float,
    wd: float = 0.0,
    rescale_grad: float = 1.0,
    clip_gradient: float = -1.0,
    lazy_update: bool = True,
    out: NDArray | None = None,
    **kwargs: Any,
) -> NDArray:
    """MXNet's multi-precision SGD step: ``sgd_update``'s step on ``weight32``, the float32
    master copy of a (float16) weight, in place; ``out`` is ``weight32`` in the weight's dtype."""
    return _optimizer_step("mp_sgd_update", locals())


def mp_sgd_mom_update(
    weight: NDArray,
    grad: NDArray,
    mom: NDArray,
    weight32: NDArray,
    lr: float,
    momentum: float = 0.0,
    wd: float = 0.0,
    rescale_grad: float = 1.0,
    clip_gradient: float = -1.0,
    lazy_update: bool = True,
    out: NDArray | None = None,
    **kwargs: Any,
) -> NDArray:
    """MXNet's multi-precision SGD step with momentum: ``sgd_mom_update``'s step on
    ``weight32``, the float32 master copy of a (float16) weight, and the float32 ``mom``, both
    in place; ``out`` is ``weight32`` in the weight's dtype."""
    return _optimizer_step("mp_sgd_mom_update", locals())


def nag_mom_update(
    weight: NDArray,
    grad: NDArray,
    mom: NDArray,
    lr: float,
    momentum: float = 0.0,
    wd: float = 0.0,
    rescale_grad: float = 1.0,
    clip_gradient: float = -1.0,
    out: NDArray | None = None,
    **kwargs: Any,
) -> NDArray:
    """MXNet's Nesterov momentum step: with ``step(w) = lr * (clip(rescale_grad * grad) + wd *
    w)`` and ``mom = momentum * mom``, ``out = weight - mom + (momentum + 1) * (mom -
    step(weight))``, then ``mom -= step(w)``, ``mom`` in place. As in MXNet, ``w`` is the new
    weight with ``out=weight`` (its kernel reads the weight after writing the output), the
    weight before the step otherwise."""
    return _optimizer_step("nag_mom_update", locals(), says_out=True)


def signsgd_update(
    weight: NDArray,
    grad: NDArray,
    lr: float,
    wd: float = 0.0,
    rescale_grad: float = 1.0,
    clip_gradient: float = -1.0,
    out: NDArray | None = None,
    **kwargs: Any,
) -> NDArray:
    """MXNet's SignSGD step: ``out = (1 - lr * wd) * weight - lr * sign(grad)`` (as in MXNet,
    ``rescale_grad`` and ``clip_gradient`` change nothing)."""
    return _optimizer_step("signsgd_update", locals())


def signum_update(
    weight: NDArray,
    grad: NDArray,
    mom: NDArray,
    lr: float,
    momentum: float = 0.0,
    wd: float = 0.0,
    rescale_grad: float = 1.0,
    clip_gradient: float = -1.0,
    wd_lh: float = 0.0,
    out: NDArray | None = None,
    **kwargs: Any,
) -> NDArray:
    """MXNet's Signum step: ``mom = momentum * mom - (1 - momentum) * (clip(rescale_grad *
    grad) + wd * weight)`` in place, ``out = (1 - lr * wd_lh) * weight + lr * sign(mom)``."""
    return _optimizer_step("signum_update", locals())


def adam_update(
    weight: NDArray,
    grad: NDArray,
    mean: NDArray,
    var: NDArray,
    lr: float,
    beta1: float = 0.9,
    beta2: float = 0.999,
    epsilon: float = 1e-8,
    wd: float = 0.0,
    rescale_grad: float = 1.0,
    clip_gradient: float = -1.0,
    lazy_update: bool = True,
    out: NDArray | None = None,
    **kwargs: Any,
) -> NDArray:
    """MXNet's Adam step: ``g = clip(rescale_grad * grad + wd * weight)``, ``mean`` and ``var``
    their moving averages of g and g^2 (updated in place), ``out = weight - lr * mean /
    (sqrt(var) + epsilon)`` (``out=weight``: in place). As MXNet's, no bias correction: its
    Adam optimizer folds that into ``lr``."""
    return _optimizer_step("adam_update", locals())


def rmsprop_update(
    weight: NDArray,
    grad: NDArray,
    n: NDArray,
    lr: float,
    gamma1: float = 0.95,
    epsilon: float = 1e-8,
    wd: float = 0.0,
    rescale_grad: float = 1.0,
    clip_gradient: float = -1.0,
    clip_weights: float = -1.0,
    out: NDArray | None = None,
    **kwargs: Any,
) -> NDArray:
    """MXNet's RMSProp step (Tieleman and Hinton): ``g = clip(rescale_grad * grad + wd *
    weight)``, ``n`` its moving average of g^2 (``gamma1``, in place), ``out = clip(weight -
    lr * g / sqrt(n + epsilon), clip_weights)`` (-1: not clipped)."""
    return _optimizer_step("rmsprop_update", locals())


def rmspropalex_update(
    weight: NDArray,
    grad: NDArray,
    n: NDArray,
    g: NDArray,
    delta: NDArray,
    lr: float,
    gamma1: float = 0.95,
    gamma2: float = 0.9,
    epsilon: float = 1e-8,
    wd: float = 0.0,
    rescale_grad: float = 1.0,
    clip_gradient: float = -1.0,
    clip_weights: float = -1.0,
    out: NDArray | None = None,
    **kwargs: Any,
) -> NDArray:
    """MXNet's RMSProp step of Graves: with ``g1 = clip(rescale_grad * grad + wd * weight)``,
    ``n`` and ``g`` its moving averages of g1^2 and g1 (``gamma1``), ``delta = gamma2 * delta
    - lr * g1 / sqrt(n - g^2 + epsilon)``, all three in place; ``out = clip(weight + delta,
    clip_weights)``."""
    return _optimizer_step("rmspropalex_update", locals())


def ftrl_update(
    weight: NDArray,
    grad: NDArray,
    z: NDArray,
    n: NDArray,
    lr: float,
    lamda1: float = 0.01,
    beta: float = 1.0,
    wd: float = 0.0,
    rescale_grad: float = 1.0,
    clip_gradient: float = -1.0,
    out: NDArray | None = None,
    **kwargs: Any,
) -> NDArray:
    """MXNet's FTRL-Proximal step: with ``g = clip(rescale_grad * grad)``, ``z += g - (sqrt(n +
    g^2) - sqrt(n)) * weight / lr`` and ``n += g^2`` in place, ``out = (sign(z) * lamda1 - z)
    / ((beta + sqrt(n)) / lr + wd)`` where ``|z| > lamda1``, else 0."""
    return _optimizer_step("ftrl_update", locals())


def ftml_update(
    weight: NDArray,
    grad: NDArray,
    d: NDArray,
    v: NDArray,
    z: NDArray,
    lr: float,
    beta1: float = 0.6,
    beta2: float = 0.999,
    epsilon: float = FTML_EPSILON,
    t: int = REQUIRED,
    wd: float = 0.0,
    rescale_grad: float = 1.0,
    clip_grad: float = -1.0,
    out: NDArray | None = None,
    **kwargs: Any,
) -> NDArray:
    """MXNet's FTML step at update ``t`` (1 for the first): with ``g = clip(rescale_grad * grad +
    wd * weight, clip_grad)``, ``v`` its moving average of g^2 (``beta2``), ``d_t = (1 -
    beta1^t) / lr * (sqrt(v / (1 - beta2^t)) + epsilon)``, ``z = beta1 * z + (1 - beta1) * g -
    (d_t - beta1 * d) * weight``, ``d = d_t`` (all in place), ``out = -z / d_t``. ``beta1`` and
    ``beta2`` must lie in [0, 1]. ``epsilon``'s default is MXNet's, the float32 1e-8."""
    return _optimizer_step("ftml_update", locals())


def mp_nag_mom_update(
    weight: NDArray,
    grad: NDArray,
    mom: NDArray,
    weight32: NDArray,
    lr: float,
    momentum: float = 0.0,
    wd: float = 0.0,
    rescale_grad: float = 1.0,
    clip_gradient: float = -1.0,
    out: NDArray | None = None,
    **kwargs: Any,
) -> NDArray:
    """MXNet's multi-precision Nesterov momentum step: ``nag_mom_update``'s step on
    ``weight32``, the float32 master copy of a (float16) weight, and the float32 ``mom``, both
    in place (``mom``'s last step is of the new ``weight32``); ``out`` is ``weight32`` in the
    weight's dtype."""
    return _optimizer_step("mp_nag_mom_update", locals())


def lamb_update_phase1(
    weight: NDArray,
    grad: NDArray,
    mean: NDArray,
    var: NDArray,
    beta1: float = 0.9,
    beta2: float = 0.999,
    epsilon: float = 1e-6,
    t: int = REQUIRED,
    bias_correction: bool = True,
    wd: float = REQUIRED,
    rescale_grad: float = 1.0,
    clip_gradient: float = -1.0,
    out: NDArray | None = None,
    **kwargs: Any,
) -> NDArray:
    """LAMB's first phase (MXNet's): with ``g = clip(rescale_grad * grad)``, ``mean`` and ``var``
    its moving averages (``beta1``, ``beta2``, in place), and ``m``, ``v`` those divided by
    ``1 - beta1^t`` and ``1 - beta2^t`` (``bias_correction``), the update direction ``m /
    (sqrt(v) + epsilon) + wd * weight`` (a new array unless ``out`` is given). Then
    ``lamb_update_phase2(weight, g, weight.norm(), g.norm(), lr=lr, out=weight)``."""
    return _optimizer_step("lamb_update_phase1", locals())


def _multi_update(
    single: str, per: tuple[str, ...], data: tuple[Any, ...], lrs: Any, wds: Any, num_weights: int, out: Any, at: dict
) -> Any:
    """MXNet's ``multi_*`` form of an optimizer update: ``data`` holds each weight's arrays in
    ``per``'s order, one after another; weight i steps with ``lrs[i]`` and ``wds[i]``. Every
    group is checked before any is queued, so a refused call changes nothing. One instruction
    per weight, queued together (sent in one request). Gives ``out`` (a list of the updated
    weights, their copies unless ``out`` names them) or, for one weight and no ``out``, that
    weight's array."""
    name = f"multi_{single.removesuffix('_update')}_update"
    if not isinstance(num_weights, numbers.Integral) or num_weights < 1:
        raise InvalidInput(f"{name}: num_weights must be a positive integer, got {num_weights!r}")
    n = int(num_weights)
    if len(data) != len(per) * n:
        raise InvalidInput(
            f"{name}: num_weights {n} needs {len(per) * n} arrays ({', '.join(per)} for each weight), got {len(data)}"
        )
    for what, v in (("lrs", lrs), ("wds", wds)):
        if not isinstance(v, Sequence) or isinstance(v, str) or len(v) != n:
            raise InvalidInput(f"{name}: {what} must be a sequence of {n} numbers (one per weight), got {v!r}")
    groups = [
        {**dict(zip(per, data[i * len(per) : (i + 1) * len(per)])), "lr": lrs[i], "wd": wds[i], **at} for i in range(n)
    ]
    results = _queue_each(name, single, groups, out)
    return results if isinstance(out, (list, tuple)) or n > 1 else results[0]


def _queue_each(name: str, single: str, groups: list[dict[str, Any]], out: Any) -> list[NDArray]:
    """The ``multi_*`` forms' queuing: update ``single`` of each weight, ``groups`` its
    arguments, ``out`` one NDArray per weight (a list, one NDArray for one weight) or None for
    new arrays. Every weight's update is checked before any is queued, so a refused call
    changes nothing; the error names the weight."""
    n = len(groups)
    outs = [out] if isinstance(out, NDArray) else out
    if outs is not None and (not isinstance(outs, (list, tuple)) or len(outs) != n):
        raise InvalidInput(f"{name}: out must be a list of {n} NDArrays (one per weight), got {out!r}")
    checked = []
    for i, args in enumerate(groups):
        try:
            checked.append(_checked_step(single, {**args, "out": None if outs is None else outs[i]}))
        except (InvalidInput, ShapeError, DTypeError, TypeError) as e:
            raise type(e)(f"{name}: weight {i}: {e}") from None
    return [_queue_step(c) for c in checked]


def multi_sgd_update(
    *data: NDArray,
    lrs: Sequence[float],
    wds: Sequence[float],
    rescale_grad: float = 1.0,
    clip_gradient: float = -1.0,
    num_weights: int = 1,
    out: Any = None,
    **kwargs: Any,
) -> Any:
    """``sgd_update`` of ``num_weights`` weights at once: ``data`` is weight, grad for each in
    turn, ``lrs`` and ``wds`` their learning rates and weight decays (MXNet's)."""
    at = {"rescale_grad": rescale_grad, "clip_gradient": clip_gradient, "kwargs": kwargs}
    return _multi_update("sgd_update", ("weight", "grad"), data, lrs, wds, num_weights, out, at)


def multi_sgd_mom_update(
    *data: NDArray,
    lrs: Sequence[float],
    wds: Sequence[float],
    momentum: float = 0.0,
    rescale_grad: float = 1.0,
    clip_gradient: float = -1.0,
    num_weights: int = 1,
    out: Any = None,
    **kwargs: Any,
) -> Any:
    """``sgd_mom_update`` of ``num_weights`` weights at once: ``data`` is weight, grad, mom
    for each in turn (MXNet's)."""
    at = {"momentum": momentum, "rescale_grad": rescale_grad, "clip_gradient": clip_gradient, "kwargs": kwargs}
    return _multi_update("sgd_mom_update", ("weight", "grad", "mom"), data, lrs, wds, num_weights, out, at)


def multi_mp_sgd_update(
    *data: NDArray,
    lrs: Sequence[float],
    wds: Sequence[float],
    rescale_grad: float = 1.0,
    clip_gradient: float = -1.0,
    num_weights: int = 1,
    out: Any = None,
    **kwargs: Any,
) -> Any:
    """``mp_sgd_update`` of ``num_weights`` weights at once: ``data`` is weight, grad,
    weight32 for each in turn (MXNet's)."""
    at = {"rescale_grad": rescale_grad, "clip_gradient": clip_gradient, "kwargs": kwargs}
    return _multi_update("mp_sgd_update", ("weight", "grad", "weight32"), data, lrs, wds, num_weights, out, at)


def multi_mp_sgd_mom_update(
    *data: NDArray,
    lrs: Sequence[float],
    wds: Sequence[float],
    momentum: float = 0.0,
    rescale_grad: float = 1.0,
    clip_gradient: float = -1.0,
    num_weights: int = 1,
    out: Any = None,
    **kwargs: Any,
) -> Any:
    """``mp_sgd_mom_update`` of ``num_weights`` weights at once: ``data`` is weight, grad,
    mom, weight32 for each in turn (MXNet's)."""
    at = {"momentum": momentum, "rescale_grad": rescale_grad, "clip_gradient": clip_gradient, "kwargs": kwargs}
    per = ("weight", "grad", "mom", "weight32")
    return _multi_update("mp_sgd_mom_update", per, data, lrs, wds, num_weights, out, at)


def waitall() -> None:
    """Wait until every queued op has run (sends the queue)."""
    current().flush()


__all__ = [
    "NDArray",
    "arange",
    "array",
    "empty",
    "full",
    "linalg",
    "load",
    "moments",
    "amp_cast",
    "amp_multicast",
    "ones",
    "random",
    "SliceChannel",
    "concatenate",
    "sample_multinomial",
    "save",
    "sgd_update",
    "sgd_mom_update",
    "adam_update",
    "mp_sgd_update",
    "mp_sgd_mom_update",
    "nag_mom_update",
    "signsgd_update",
    "signum_update",
    "rmsprop_update",
    "rmspropalex_update",
    "ftrl_update",
    "ftml_update",
    "mp_nag_mom_update",
    "lamb_update_phase1",
    "multi_sgd_update",
    "multi_sgd_mom_update",
    "multi_mp_sgd_update",
    "multi_mp_sgd_mom_update",
    "split",
    "split_v2",
    "choose_element_0index",
    "fill_element_0index",
    "onehot_encode",
    "histogram",
    "topk",
    "waitall",
    "zeros",
]
__all__ += [
    n for n in list(globals()) if not n.startswith("_") and n not in __all__ and callable(globals()[n]) and n in OPS
]


def __dir__() -> list[str]:
    """The namespace's own names (completion in a notebook lists these, not its imports)."""
    return sorted(__all__)


from . import contrib  # noqa: E402  (nd.contrib: made from the functions above)
from . import ndarray as ndarray  # noqa: E402  (nd.ndarray.NDArray, as MXNet's module)
from .rnn import RNN  # noqa: E402  (composed of the functions above)

__all__ += ["contrib", "RNN"]
