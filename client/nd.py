"""The ``nd`` namespace, generated from the engine's op table (as MXNet
generates its own from its operator registry), plus the creation functions
whose MXNet signatures take a context.

>>> from gradserve import nd
>>> nd.dot(nd.ones((2, 3)), nd.ones((3, 1))).shape
(2, 1)
"""

from __future__ import annotations

import inspect
from typing import Any

from . import random
from .engine.optable import OPS, REQUIRED, Op
from .ndarray import NDArray, array, invoke
from .runtime import current


def _signature(op: Op) -> inspect.Signature:
    params = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in op.inputs]
    for a in op.attrs:
        default = inspect.Parameter.empty if a.default is REQUIRED else a.default
        params.append(inspect.Parameter(a.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default))
    return inspect.Signature(params)


def _generate(op: Op, name: str) -> Any:
    nin = len(op.inputs)
    scalar_op = OPS.get(op.name + "_scalar") if nin == 2 else None

    def fn(*args: Any, **kwargs: Any) -> NDArray:
        if kwargs.pop("out", None) is not None:
            raise TypeError(f"{name}: out= is not supported; assign the result instead")
        kwargs.pop("name", None)
        arrays = list(args[:nin])
        for n in op.inputs[len(arrays):]:
            if n in kwargs:
                arrays.append(kwargs.pop(n))
        for a, v in zip(op.attrs, args[nin:]):
            kwargs[a.name] = v
        if scalar_op is not None and len(arrays) == 2 and not isinstance(arrays[1], NDArray):
            return invoke(scalar_op, arrays[:1], {"scalar": float(arrays[1]), **kwargs})
        for a in arrays:
            if not isinstance(a, NDArray):
                raise TypeError(f"{name}: expected NDArray inputs, got {type(a).__name__}")
        return invoke(op, arrays, kwargs)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = op.doc
    fn.__signature__ = _signature(op)  # type: ignore[attr-defined]
    return fn


for _op in OPS.ops():
    for _name in (_op.name, *_op.aliases):
        if not _op.inputs and _op.name not in ("zeros_like", "ones_like"):
            continue  # creation ops: written below with MXNet's signatures
        globals()[_name] = _generate(_op, _name)


def zeros(shape: Any, ctx: Any = None, dtype: Any = None, **kwargs: Any) -> NDArray:
    """An array of zeros (float32 unless ``dtype`` says otherwise)."""
    return invoke(OPS["zeros"], (), {"shape": shape, "dtype": dtype})


def ones(shape: Any, ctx: Any = None, dtype: Any = None, **kwargs: Any) -> NDArray:
    """An array of ones (float32 unless ``dtype`` says otherwise)."""
    return invoke(OPS["ones"], (), {"shape": shape, "dtype": dtype})


def full(shape: Any, val: float, ctx: Any = None, dtype: Any = None, **kwargs: Any) -> NDArray:
    """An array filled with ``val``."""
    return invoke(OPS["full"], (), {"shape": shape, "val": val, "dtype": dtype})


def empty(shape: Any, ctx: Any = None, dtype: Any = None) -> NDArray:
    """An uninitialised array (zeros here: the engine never exposes stale memory)."""
    return zeros(shape, ctx, dtype)


def arange(start: float, stop: float | None = None, step: float = 1.0, repeat: int = 1,
           infer_range: Any = None, ctx: Any = None, dtype: Any = None) -> NDArray:
    """Evenly spaced values in [start, stop), float32 unless ``dtype`` is given."""
    return invoke(
        OPS["arange"], (),
        {"start": start, "stop": stop, "step": step, "repeat": repeat, "dtype": dtype},
    )


def waitall() -> None:
    """Wait until every queued op has run (sends the queue)."""
    current().flush()


__all__ = ["NDArray", "arange", "array", "empty", "full", "ones", "random", "waitall", "zeros"]
__all__ += [n for n in list(globals()) if not n.startswith("_") and n not in __all__
            and callable(globals()[n]) and n in OPS]
