"""``nd.contrib``: MXNet's contrib ops of plain arrays and its control flow.

The ops are the table's ``contrib_<name>`` (``isnan``, ``arange_like``, ``index_copy``,
``quadratic``, ``round_ste``, ...). ``foreach``, ``while_loop`` and ``cond`` are MXNet's
NDArray versions: Python loops and branches over the arrays, recorded op by op as any Python
code is, so gradients go through them.

>>> from gradserve import nd
>>> outs, state = nd.contrib.foreach(lambda x, s: (x + s, x), nd.array([[1.0], [2.0]]), nd.zeros(1))
>>> outs.asnumpy().tolist(), state.asnumpy().tolist()
([[1.0], [3.0]], [2.0])
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import numpy as np

from .engine.errors import InvalidInput, ShapeError
from .engine.optable import OPS
from .nd import CTCLoss as _nd_ctc_loss
from .nd import _generate, _one_float32, _optimizer_step, _queue_each, zeros
from .ndarray import NDArray, _from_numpy, invoke, write_into

# --------------------------------------------------------------------------
# nested lists of arrays, as MXNet's control flow takes and gives them


def _flatten(tree: Any, what: str) -> tuple[list[NDArray], Any]:
    """The arrays of a nested list (or one array), in order, and its shape to regroup them
    (MXNet's ``_flatten``)."""
    if isinstance(tree, NDArray):
        return [tree], 0
    if not isinstance(tree, (list, tuple)):
        raise InvalidInput(f"{what} must be an NDArray or a nested list of NDArrays, got {type(tree).__name__}")
    flat: list[NDArray] = []
    fmt: list[Any] = []
    for item in tree:
        arrays, f = _flatten(item, what)
        flat.extend(arrays)
        fmt.append(f)
    return flat, fmt


def _regroup(flat: list[Any], fmt: Any) -> Any:
    """``_flatten``'s inverse: the nested list ``fmt`` describes, holding ``flat``'s items."""

    def build(f: Any, at: int) -> tuple[Any, int]:
        if isinstance(f, int):
            return flat[at], at + 1
        out = []
        for sub in f:
            item, at = build(sub, at)
            out.append(item)
        return out, at

    return build(fmt, 0)[0]


def _as_bool(value: Any, what: str) -> bool:
    """A Python truth value of ``value`` (an NDArray of one element is read: a round trip)."""
    if isinstance(value, NDArray):
        if value.size != 1:
            raise InvalidInput(f"{what} must be one value, got an array of shape {value.shape}")
        value = value.asscalar()
    try:
        return bool(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"{what} must be a truth value, got {type(value).__name__}") from None


# --------------------------------------------------------------------------
# control flow


def foreach(body: Callable[[Any, Any], tuple[Any, Any]], data: Any, init_states: Any) -> tuple[Any, Any]:
    """Run ``body(x, states) -> (outputs, new_states)`` over ``data``'s first axis (an NDArray,
    or a list of NDArrays stepped together: ``x`` is then the list of their slices). Gives
    ``(outputs, states)``: each output stacked over the steps (as ``body`` nests them), and the
    last states. As MXNet's NDArray version: a Python loop, recorded op by op."""
    arrays, _ = _flatten(data, "foreach's data")
    _flatten(init_states, "foreach's init_states")
    if not arrays:
        raise InvalidInput("foreach's data must hold at least one NDArray")
    steps = arrays[0].shape[0] if arrays[0].shape else 0
    for a in arrays:
        if not a.shape or a.shape[0] != steps:
            raise InvalidInput(
                f"foreach's data must share a first axis, got shapes {', '.join(str(x.shape) for x in arrays)}"
            )
    states = init_states
    per_step: list[list[NDArray]] = []
    fmt: Any = None
    for i in range(steps):
        x = data[i] if isinstance(data, NDArray) else [d[i] for d in data]
        outs, states = body(x, states)
        flat, fmt = _flatten(outs, "foreach's outputs")
        if per_step and len(flat) != len(per_step[0]):
            raise InvalidInput(f"foreach's body gave {len(flat)} outputs at step {i}, {len(per_step[0])} before")
        per_step.append(flat)
    if fmt is None:
        return [], states
    return _regroup([invoke(OPS["stack"], column, {"axis": 0}) for column in zip(*per_step)], fmt), states


def while_loop(
    cond: Callable[..., Any], func: Callable[..., tuple[Any, Any]], loop_vars: Any, max_iterations: Any = None
) -> tuple[Any, Any]:
    """While ``cond(*loop_vars)`` is true, and at most ``max_iterations`` times (required),
    ``func(*loop_vars) -> (step_output, new_loop_vars)``. Gives ``(outputs, loop_vars)``: each
    step output stacked over ``max_iterations`` rows (those past the last step are zeros;
    MXNet's are left unset), and the last loop variables (an NDArray when one was given).
    Each test of ``cond`` reads its value: one round trip per step on a server."""
    if max_iterations is None:
        raise InvalidInput("while_loop: max_iterations must be given")
    if isinstance(max_iterations, NDArray):
        max_iterations = max_iterations.asscalar()
    try:
        limit = int(max_iterations)  # (MXNet's: a float is truncated)
    except (TypeError, ValueError, OverflowError):
        raise InvalidInput(f"while_loop: max_iterations must be an integer, got {max_iterations!r}") from None
    one = isinstance(loop_vars, NDArray)
    variables = [loop_vars] if one else list(loop_vars)
    if not variables:
        raise InvalidInput("while_loop: loop_vars must hold at least one NDArray")
    per_step: list[list[NDArray]] = []
    fmt: Any = None
    while len(per_step) < limit and _as_bool(cond(*variables), "while_loop's cond"):
        out, new = func(*variables)
        new = [] if new is None else [new] if isinstance(new, NDArray) else list(new)
        if len(new) != len(variables):
            raise InvalidInput(f"while_loop: func gave {len(new)} loop variables for {len(variables)}")
        variables = new
        flat, fmt = _flatten(
            [] if out is None else list(out) if isinstance(out, tuple) else out, "while_loop's outputs"
        )
        if per_step and len(flat) != len(per_step[0]):
            raise InvalidInput(
                f"while_loop: func gave {len(flat)} step outputs at step {len(per_step)}, {len(per_step[0])} before"
            )
        per_step.append(flat)
    stacked = []
    for column in zip(*per_step):
        rows = [x.expand_dims(0) for x in column]
        if len(rows) < limit:
            rows.append(zeros((limit - len(rows), *column[0].shape), dtype=column[0].dtype))
        stacked.append(invoke(OPS["concat"], rows, {"dim": 0}))
    outputs = _regroup(stacked, fmt) if fmt is not None and per_step else []
    return outputs, variables[0] if one else variables


def cond(pred: Any, then_func: Callable[[], Any], else_func: Callable[[], Any]) -> Any:
    """``then_func()`` when ``pred`` is true, else ``else_func()`` (an NDArray ``pred`` is
    read: one round trip on a server)."""
    return then_func() if _as_bool(pred, "cond's pred") else else_func()


def boolean_mask(data: NDArray, index: NDArray, axis: int = 0, out: Any = None, name: Any = None) -> NDArray:
    """The rows of ``data`` (along axis 0, as MXNet's) where ``index`` (one value a row) is not
    0; its gradient goes back to those rows. How many there are is known once ``index`` is: it
    is read, a sync point (one round trip on a server), as MXNet's output shape is known only
    once it ran."""
    if not isinstance(data, NDArray) or not isinstance(index, NDArray):
        raise InvalidInput("boolean_mask: data and index must be NDArrays")
    if axis != 0:
        raise InvalidInput(f"boolean_mask: only axis 0 is supported (as MXNet's), got {axis!r}")
    if len(index.shape) != 1 or not data.shape or index.shape[0] != data.shape[0]:
        raise ShapeError(f"boolean_mask: index must be 1-D, one value per row of data {data.shape}, got {index.shape}")
    rows = _from_numpy(np.flatnonzero(index.asnumpy()).astype(np.int64), data._c, owned=True)
    made = invoke(OPS["take"], (data, rows), {"axis": 0})
    return made if out is None else write_into(out, made, "contrib.boolean_mask")


# --------------------------------------------------------------------------
# AdamW (the session's commands adamw_update and mp_adamw_update)


def adamw_update(
    weight: NDArray,
    grad: NDArray,
    mean: NDArray,
    var: NDArray,
    rescale_grad: Any,
    lr: float,
    eta: float,
    beta1: float = 0.9,
    beta2: float = 0.999,
    epsilon: float = 1e-8,
    wd: float = 0.0,
    clip_gradient: float = -1.0,
    out: NDArray | None = None,
    **kwargs: Any,
) -> NDArray:
    """MXNet's AdamW step: with ``g = clip(rescale_grad * grad)``, ``mean`` and ``var`` its
    moving averages (in place), ``out = weight - eta * (lr * mean / (sqrt(var) + epsilon) + wd
    * weight)``, the decay apart from the gradient. ``rescale_grad``: a number or a float32
    NDArray of one value (a dynamic loss scale's); where it is 0, NaN or infinite nothing
    changes (``out`` is the weight as it was)."""
    return _optimizer_step("adamw_update", locals())


def mp_adamw_update(
    weight: NDArray,
    grad: NDArray,
    mean: NDArray,
    var: NDArray,
    weight32: NDArray,
    rescale_grad: Any,
    lr: float,
    eta: float,
    beta1: float = 0.9,
    beta2: float = 0.999,
    epsilon: float = 1e-8,
    wd: float = 0.0,
    clip_gradient: float = -1.0,
    out: NDArray | None = None,
    **kwargs: Any,
) -> NDArray:
    """``adamw_update``'s step on ``weight32``, the float32 master copy of a (float16) weight,
    with float32 ``mean`` and ``var``; ``out`` is ``weight32`` in the weight's dtype."""
    return _optimizer_step("mp_adamw_update", locals())


def _multi_adamw(
    single: str,
    per: tuple[str, ...],
    lists: tuple[Any, ...],
    rescale_grad: Any,
    rates: tuple,
    out: Any,
    size: int,
    at: dict,
) -> Any:
    """MXNet's ``multi_`` AdamW forms: one list per input (weights, grads, means, vars[,
    weights32]), ``lrs``, ``wds`` and ``etas`` one value per weight; all checked before any
    is queued."""
    name = f"multi_{single.removesuffix('_update')}_update"
    n = size or len(lists[0])
    for what, v in (*zip(per, lists), *zip(("lrs", "wds", "etas"), rates)):
        if not isinstance(v, (list, tuple)) or len(v) != n:
            raise InvalidInput(f"{name}: {what} must be a list of {n} (one per weight), got {v!r}")
    if n and isinstance(rescale_grad, numbers.Real) and isinstance(lists[0][0], NDArray):
        rescale_grad = _one_float32(name, "rescale_grad", rescale_grad, lists[0][0])  # (one array for all)
    groups = [
        {**{k: v[i] for k, v in zip(per, lists)}, "rescale_grad": rescale_grad, **at}
        | {"lr": rates[0][i], "wd": rates[1][i], "eta": rates[2][i]}
        for i in range(n)
    ]
    return _queue_each(name, single, groups, out)


def multi_adamw_update(
    weights: Any, grads: Any, mean: Any, var: Any, rescale_grad: Any, lrs: Any, wds: Any, etas: Any,
    out: Any = None, name: Any = None, size: int = 0, **kwargs: Any,
) -> Any:  # fmt: skip
    """``adamw_update`` of several weights at once: lists of the weights, gradients, means and
    variances, one ``rescale_grad`` for all, and ``lrs``, ``wds``, ``etas`` per weight."""
    return _multi_adamw("adamw_update", ("weight", "grad", "mean", "var"), (weights, grads, mean, var),
                        rescale_grad, (lrs, wds, etas), out, size, kwargs)  # fmt: skip


def multi_mp_adamw_update(
    weights: Any, grads: Any, mean: Any, var: Any, weights32: Any, rescale_grad: Any, lrs: Any, wds: Any,
    etas: Any, out: Any = None, name: Any = None, size: int = 0, **kwargs: Any,
) -> Any:  # fmt: skip
    """``mp_adamw_update`` of several weights at once (lists, as ``multi_adamw_update``'s,
    with the float32 ``weights32``)."""
    per = ("weight", "grad", "mean", "var", "weight32")
    return _multi_adamw("mp_adamw_update", per, (weights, grads, mean, var, weights32), rescale_grad,
                        (lrs, wds, etas), out, size, kwargs)  # fmt: skip


# --------------------------------------------------------------------------
# the table's contrib ops

_PREFIX = "contrib_"
OP_NAMES = sorted(n[len(_PREFIX) :] for op in OPS.ops() for n in (op.name, *op.aliases) if n.startswith(_PREFIX))

for _name in OP_NAMES:
    globals()[_name] = _generate(OPS[_PREFIX + _name], f"contrib.{_name}")
CTCLoss = ctc_loss = _nd_ctc_loss  # (its lengths by name too)

__all__ = [
    "adamw_update",
    "boolean_mask",
    "cond",
    "foreach",
    "mp_adamw_update",
    "multi_adamw_update",
    "multi_mp_adamw_update",
    "while_loop",
    *OP_NAMES,
]


def __dir__() -> list[str]:
    return sorted(__all__)
