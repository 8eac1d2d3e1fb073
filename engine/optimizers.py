"""MXNet's optimizer updates as session commands (``sgd_update``, ``adam_update``, ...): each
changes its weight and its states in place, with the kernels of ``kernels`` (numba where it
is installed, numpy otherwise). ``OPTIMIZERS`` lists them for the client, which makes its
``nd`` functions from it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from . import kernels, tape
from . import ops as _ops
from .errors import AutogradError, DTypeError, InvalidInput, ShapeError
from .optable import REQUIRED, Attr
from .session import INPLACE_IN_GRAPH, PARSED_COMMANDS, RECORDING, Session, command
from .slices import SIZED_COMMANDS

SGD = (
    Attr("lr", "float", REQUIRED),
    Attr("wd", "float", 0.0),
    Attr("rescale_grad", "float", 1.0),
    Attr("clip_gradient", "float", -1.0),
)


@command(
    "sgd_update",
    "weight grad",
    SGD,
    "weight -= lr * (clip(rescale_grad * grad) + wd * weight), in place (MXNet's sgd_update).",
)
def _sgd_update(s: Session, ins: dict, values: list) -> None:
    hs = list(ins.get("in", ()))
    if len(hs) != 2:
        raise InvalidInput("sgd_update takes a weight and a gradient")
    w, g = s.get(hs[0]), s.get(hs[1])
    if w.shape != g.shape or w.dtype != g.dtype or w.dtype.kind != "f":
        raise _ops.ShapeError(f"sgd_update: gradient {g.shape} {g.dtype} does not fit weight {w.shape} {w.dtype}")
    if ins.get("mode", 0) & RECORDING and tape.in_graph(s.nodes.get(hs[0])):
        raise AutogradError(INPLACE_IN_GRAPH)
    at = ins["at"]
    kernels.sgd_update(w, g, at["lr"], at["wd"], at["rescale_grad"], at["clip_gradient"])


OPTIMIZERS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {"sgd_update": ((), (), ())}
"""MXNet's optimizer updates, by name: the states that follow the weight and the gradient in
``in``, those of them that are float32 whatever the weight's dtype, and the inputs of one
float32 value that follow the states and are only read (AdamW's ``rescale_grad``). Each
changes its weight and its states in place (the client's ``nd`` functions and its record of
what an instruction changes are made from this)."""


SIZED_COMMANDS.add("sgd_update")


def _updated_in_place(
    s: Session, ins: dict, name: str, names: tuple[str, ...], f32: tuple[str, ...] = (), scalars: tuple[str, ...] = ()
) -> list[np.ndarray]:
    """The arrays of an optimizer update (weight, gradient, states, then the ``scalars``): one
    shape and float dtype, but the states named in ``f32``, float32 (a multi-precision
    update's master copy and momentum), and the scalars, float32 arrays of one value; the
    weight and the states are changed in place, so none may be in a recorded graph."""
    hs = list(ins.get("in", ()))
    names = names + scalars
    if len(hs) != len(names):
        raise InvalidInput(f"{name} takes {', '.join(names)}")
    xs = [s.get(h) for h in hs]
    w = xs[0]
    if w.dtype.kind != "f":
        raise DTypeError(f"{name}: the weight must be a float array, got {w.dtype}")
    for n, x in zip(names[1:], xs[1:]):
        if n in scalars:
            if x.size != 1 or x.dtype != np.float32:
                raise ShapeError(f"{name}: {n} must be a float32 array of one value, got {x.shape} {x.dtype}")
        elif x.shape != w.shape or x.dtype != (np.float32 if n in f32 else w.dtype):
            raise ShapeError(
                f"{name}: {n} {x.shape} {x.dtype} does not fit weight {w.shape} {w.dtype}"
                + (f" (a float32 {n} of its shape)" if n in f32 else "")
            )
    if ins.get("mode", 0) & RECORDING:
        for i, h in enumerate(hs[: len(hs) - len(scalars)]):
            if i != 1 and tape.in_graph(s.nodes.get(h)):
                raise AutogradError(INPLACE_IN_GRAPH)
    if len({id(x) for x in xs}) != len(xs) or any(
        np.may_share_memory(a, b) for i, a in enumerate(xs) for b in xs[i + 1 :]
    ):
        raise InvalidInput(f"{name}: {', '.join(names)} must be arrays of their own (no two share memory)")
    return xs


_UNIT_ATTRS: dict[str, tuple[str, ...]] = {}


def _check_unit(name: str, at: dict[str, Any]) -> None:
    for k in _UNIT_ATTRS.get(name, ()):
        if not 0.0 <= at[k] <= 1.0:
            raise InvalidInput(f"{name}: {k} must be in [0, 1], got {at[k]!r}")


def check_optimizer_attrs(name: str, given: dict[str, Any]) -> None:
    """Refuse an optimizer update's attributes as its command would (InvalidInput): the
    client checks them when it queues the update, so the error comes from the call."""
    _check_unit(name, PARSED_COMMANDS[name][1](given))


UPDATE_CHUNK = 1 << 18
"""Elements an optimizer update's numpy kernel steps at a time, on contiguous arrays: its
temporaries (a dozen arrays of the chunk at most: float16 AdamW's float32 copies, LAMB's
float64 quotients) stay within a few MB whatever the weight's size, where the whole weight's
took up to 12 times its bytes, which no quota counts. The steps are elementwise: the same
result to the bit. (A chunk of this size also stays in cache: a 4M-element adam_update took
11.5 ms in chunks against 20.3 ms whole; an MLP's 200K-element layer is stepped whole.)"""


def _in_chunks(kernel: Callable[..., None], xs: list[np.ndarray], args: list[Any]) -> None:
    """``kernel(*xs, *args)``, a chunk of the arrays at a time where they are contiguous (an
    input of one value, AdamW's rescale_grad, is passed whole to each)."""
    n = xs[0].size
    if n <= UPDATE_CHUNK or not all(x.flags.c_contiguous for x in xs):
        kernel(*xs, *args)
        return
    flat = [x.reshape(-1) for x in xs]
    for i in range(0, n, UPDATE_CHUNK):
        kernel(*[f[i : i + UPDATE_CHUNK] if f.size == n else f for f in flat], *args)


def _optimizer(
    name: str,
    states: tuple[str, ...],
    attrs: tuple[Attr, ...],
    doc: str,
    kernel: Callable[..., None],
    f32: tuple[str, ...] = (),
    unit: tuple[str, ...] = (),
    scalars: tuple[str, ...] = (),
) -> None:
    """Register one of MXNet's optimizer updates as a command: ``in`` the weight, the gradient,
    ``states`` and ``scalars`` (inputs of one value it reads); ``kernel`` takes those arrays,
    then the attributes in their declared order, and changes the weight and the states in
    place. The attributes named in ``unit`` must lie in [0, 1] (where MXNet's op refuses
    others)."""

    def run(s: Session, ins: dict, values: list) -> None:
        xs = _updated_in_place(s, ins, name, ("weight", "grad", *states), f32, scalars)
        at = ins["at"]
        _check_unit(name, at)
        _in_chunks(kernel, xs, [at[a.name] for a in attrs])

    _UNIT_ATTRS[name] = unit
    OPTIMIZERS[name] = (states, f32, scalars)
    SIZED_COMMANDS.add(name)
    command(name, " ".join(("weight", "grad", *states, *scalars)), attrs, doc)(run)


MOMENTUM = (*SGD[:1], Attr("momentum", "float", 0.0), *SGD[1:])


_SGD_MOM = "mom = momentum * mom - lr * (clip(rescale_grad * grad) + wd * weight); weight += mom"


_optimizer(
    "sgd_mom_update",
    ("mom",),
    MOMENTUM,
    f"{_SGD_MOM}, both in place (MXNet's sgd_mom_update).",
    kernels.sgd_mom_update_numpy,
)


_optimizer(
    "mp_sgd_update",
    ("weight32",),
    SGD,
    "weight32 -= lr * (clip(rescale_grad * grad) + wd * weight32); weight = weight32 in its dtype, both in "
    "place (MXNet's mp_sgd_update: a float16 weight with its float32 master copy weight32).",
    kernels.mp_sgd_update_numpy,
    f32=("weight32",),
)


_optimizer(
    "mp_sgd_mom_update",
    ("mom", "weight32"),
    MOMENTUM,
    f"{_SGD_MOM.replace('weight', 'weight32')}; weight = weight32 in its dtype, all in place (MXNet's "
    "mp_sgd_mom_update: a float16 weight with a float32 master copy weight32 and a float32 mom).",
    kernels.mp_sgd_mom_update_numpy,
    f32=("mom", "weight32"),
)


_optimizer(
    "nag_mom_update",
    ("mom",),
    (*MOMENTUM, Attr("out_is_weight", "bool", True)),
    "With step(w) = lr * (clip(rescale_grad * grad) + wd * w) and mom = momentum * mom: weight = weight - mom "
    "+ (momentum + 1) * (mom - step(weight)), then mom -= step of the new weight; both in place (MXNet's "
    "nag_mom_update with out=weight). out_is_weight false: mom -= step of the weight before the update, as "
    "MXNet's with an out that is not the weight (the weight given is then that out, a copy of the weight).",
    kernels.nag_mom_update_numpy,
)


_optimizer(
    "mp_nag_mom_update",
    ("mom", "weight32"),
    MOMENTUM,
    "nag_mom_update's step on weight32 and mom, then weight = weight32 in its dtype, all in place (MXNet's "
    "mp_nag_mom_update: a float16 weight with a float32 master copy weight32 and a float32 mom). The last step "
    "of mom is of the updated weight32, whatever MXNet's out is.",
    kernels.mp_nag_mom_update_numpy,
    f32=("mom", "weight32"),
)


_optimizer(
    "signsgd_update",
    (),
    SGD,
    "weight = (1 - lr * wd) * weight - lr * sign(grad), in place (MXNet's signsgd_update: rescale_grad and "
    "clip_gradient change nothing).",
    kernels.signsgd_update_numpy,
)


_optimizer(
    "signum_update",
    ("mom",),
    (*MOMENTUM, Attr("wd_lh", "float", 0.0)),
    "mom = momentum * mom - (1 - momentum) * (clip(rescale_grad * grad) + wd * weight); weight = (1 - lr * "
    "wd_lh) * weight + lr * sign(mom); both in place (MXNet's signum_update).",
    kernels.signum_update_numpy,
)


_DECAYED = "g = clip(rescale_grad * grad + wd * weight)"


ADAM = (
    *SGD[:1],
    Attr("beta1", "float", 0.9),
    Attr("beta2", "float", 0.999),
    Attr("epsilon", "float", 1e-8),
    *SGD[1:],
)


_optimizer(
    "adam_update",
    ("mean", "var"),
    ADAM,
    f"{_DECAYED}; mean and var the moving averages of g and g^2 (beta1, beta2); weight -= lr * mean / "
    "(sqrt(var) + epsilon); all in place (MXNet's adam_update).",
    kernels.adam_update_numpy,
)


CLIP_WEIGHTS = Attr("clip_weights", "float", -1.0)


RMSPROP = (*SGD[:1], Attr("gamma1", "float", 0.95), Attr("epsilon", "float", 1e-8), *SGD[1:], CLIP_WEIGHTS)


_optimizer(
    "rmsprop_update",
    ("n",),
    RMSPROP,
    f"{_DECAYED}; n the moving average of g^2 (gamma1); weight = clip(weight - lr * g / sqrt(n + epsilon), "
    "clip_weights); both in place (MXNet's rmsprop_update).",
    kernels.rmsprop_update_numpy,
)


_optimizer(
    "rmspropalex_update",
    ("n", "g", "delta"),
    (*RMSPROP[:2], Attr("gamma2", "float", 0.9), *RMSPROP[2:]),
    f"{_DECAYED.replace('g =', 'g1 =')}; n and g the moving averages of g1^2 and g1 (gamma1); delta = gamma2 * "
    "delta - lr * g1 / sqrt(n - g^2 + epsilon); weight = clip(weight + delta, clip_weights); all in place "
    "(MXNet's rmspropalex_update).",
    kernels.rmspropalex_update_numpy,
)


_optimizer(
    "ftrl_update",
    ("z", "n"),
    (*SGD[:1], Attr("lamda1", "float", 0.01), Attr("beta", "float", 1.0), *SGD[1:]),
    "g = clip(rescale_grad * grad); z += g - (sqrt(n + g^2) - sqrt(n)) * weight / lr; n += g^2; weight = "
    "(sign(z) * lamda1 - z) / ((beta + sqrt(n)) / lr + wd) where |z| > lamda1, else 0; all in place (MXNet's "
    "ftrl_update).",
    kernels.ftrl_update_numpy,
)


_optimizer(
    "ftml_update",
    ("d", "v", "z"),
    (
        *SGD[:1],
        Attr("beta1", "float", 0.6),
        Attr("beta2", "float", 0.999),
        Attr("epsilon", "float", kernels.FTML_EPSILON),
        Attr("t", "int", REQUIRED),
        *SGD[1:3],
        Attr("clip_grad", "float", -1.0),
    ),
    f"{_DECAYED.replace('clip_gradient', 'clip_grad')}; v the moving average of g^2 (beta2); d_t = (1 - "
    "beta1^t) / lr * (sqrt(v / (1 - beta2^t)) + epsilon); z = beta1 * z + (1 - beta1) * g - (d_t - beta1 * d) * "
    "weight; d = d_t; weight = -z / d_t; all in place (MXNet's ftml_update at step t; beta1 and beta2 in [0, 1]).",
    kernels.ftml_update_numpy,
    unit=("beta1", "beta2"),
)


LAMB = (
    Attr("beta1", "float", 0.9),
    Attr("beta2", "float", 0.999),
    Attr("epsilon", "float", 1e-6),
    Attr("t", "int", REQUIRED),
    Attr("bias_correction", "bool", True),
    Attr("wd", "float", REQUIRED),
    *SGD[2:],
)


_optimizer(
    "lamb_update_phase1",
    ("mean", "var"),
    LAMB,
    "g = clip(rescale_grad * grad); mean and var the moving averages of g and g^2 (beta1, beta2), in place; "
    "weight = m / (sqrt(v) + epsilon) + wd * weight, where m and v are mean and var divided by 1 - beta1^t and "
    "1 - beta2^t (bias_correction) or as they are (MXNet's lamb_update_phase1, whose output is that direction: "
    "the weight given is the output, a copy of the weight unless it is the weight; lamb_update_phase2 takes it).",
    kernels.lamb_update_phase1_numpy,
)


ADAMW = (
    Attr("lr", "float", REQUIRED),
    Attr("beta1", "float", 0.9),
    Attr("beta2", "float", 0.999),
    Attr("epsilon", "float", 1e-8),
    Attr("wd", "float", 0.0),
    Attr("eta", "float", REQUIRED),
    Attr("clip_gradient", "float", -1.0),
)
_ADAMW = (
    "g = clip(rescale_grad * grad); mean and var the moving averages of g and g^2 (beta1, beta2); weight -= "
    "eta * (lr * mean / (sqrt(var) + epsilon) + wd * weight); all in place, and nothing changed where "
    "rescale_grad (a float32 array of one value) is 0, NaN or infinite"
)


_optimizer(
    "adamw_update",
    ("mean", "var"),
    ADAMW,
    f"{_ADAMW} (MXNet's contrib.adamw_update: the decay apart from the gradient).",
    kernels.adamw_update_numpy,
    scalars=("rescale_grad",),
)


_optimizer(
    "mp_adamw_update",
    ("mean", "var", "weight32"),
    ADAMW,
    f"{_ADAMW.replace('weight', 'weight32')}; weight = weight32 in its dtype (MXNet's contrib.mp_adamw_update: a "
    "float16 weight with its float32 master copy weight32 and float32 mean and var).",
    kernels.mp_adamw_update_numpy,
    f32=("mean", "var", "weight32"),
    scalars=("rescale_grad",),
)
