"""Neural-network ops: softmax family, activations, fully connected, 1-D, 2-D and 3-D
convolution (grouped, dilated), its transpose and pooling (through ``im2col``/``col2im``),
padding, dropout, batch and layer norm.

Every VJP is written with table ops, so these too have gradients of any order.
A forward may leave in ``at`` (a fresh dict per call) what its VJP needs and
the attributes cannot say: Dropout its mask, BatchNorm the mode it ran in.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from . import kernels
from .dispatch import Eager
from .errors import DTypeError, InvalidInput, ShapeError
from .ops import matrix_product, same_dtype, typed_scalar
from .ops_math import float64_scratch, in_float64
from .optable import FLOAT_DTYPES, OPS, REQUIRED, Attr, Spec, defop, like_infer, prod
from .tape import Deferred

# --------------------------------------------------------------------------
# softmax family


def _axis_of(name: str, axis: int, ndim: int) -> int:
    if not -ndim <= axis < ndim:
        raise ShapeError(f"{name}: axis {axis} is out of range for an array of rank {ndim}")
    return axis % ndim


SOFTMAX = (Attr("axis", "int", -1), Attr("temperature", "float", None), Attr("dtype", "dtype", None))
USE_LENGTH = Attr("use_length", "bool", False)


def floating(name: str, x: Spec) -> None:
    """MXNet's neural-network ops take floating point data only (its message, at inference)."""
    if x.dtype not in FLOAT_DTYPES:
        raise DTypeError(f"{name}: This operation only support floating point types, not {x.dtype}")


def _length_shape(at: dict, x: Spec) -> tuple[int, ...]:
    """The shape softmax's ``length`` must have: data's, less the axis."""
    ax = at["axis"] % len(x.shape)
    return x.shape[:ax] + x.shape[ax + 1 :]


def _softmax_infer(name: str):
    def infer(at: dict, x: Spec, *length: Spec) -> Spec:
        floating(name, x)
        _axis_of(name, at["axis"], len(x.shape))
        if at.get("use_length"):
            if len(length) != 1:
                raise InvalidInput(f"{name}: use_length takes 2 inputs (data and length), got 1")
            if length[0].shape != _length_shape(at, x):
                raise ShapeError(
                    f"{name}: length must have data's shape less the axis, {_length_shape(at, x)}, "
                    f"got {length[0].shape}"
                )
            if length[0].dtype == "bool":
                raise DTypeError(f"{name}: length must be of an integer type, not bool")
        elif length:
            raise InvalidInput(f"{name}: a length input needs use_length=True")
        if at["temperature"] == 0:  # (MXNet's divides by it: NaN everywhere; a negative one is softmin's)
            raise InvalidInput(f"{name}: temperature must not be 0")
        dt = at["dtype"]
        if dt is None or dt == x.dtype:
            return x
        if dt not in FLOAT_DTYPES:
            raise DTypeError(f"{name}: dtype must be one of {', '.join(FLOAT_DTYPES)}, got {dt}")
        return Spec(x.shape, dt)

    return infer


def _in_dtype(x: Any, at: dict) -> Any:
    """``x`` in the dtype the result is asked in (``dtype``: a float16 softmax given in
    float32), computed in it: as MXNet's with MXNET_SAFE_ACCUMULATION=1, which it recommends
    (without it MXNet computes in float16 and writes float32)."""
    dt = at["dtype"]
    return x if dt is None or dt == x.dtype.name else x.astype(dt)


def _as_input(F: Any, gx: Any, x: Any) -> Any:
    """A cotangent in its input's dtype (the result's may be another: ``dtype``)."""
    return gx if gx.dtype == x.dtype else F.astype(gx, dtype=x.dtype.name)


def _scaled(x: Any, at: dict) -> Any:
    t = at["temperature"]
    return x if t is None or t == 1.0 else x / x.dtype.type(t)


def _normalised_grad(F, at, g, y):
    """The gradient of y = softmax(z) with respect to z, along ``axis``."""
    return F.mul(y, F.sub(g, F.sum(F.mul(g, y), axis=at["axis"], keepdims=True)))


def _normalised_exp(cx, z, axis: int):
    """softmax(z) along ``axis``, computed stably; an empty z as it is (a max over no
    elements would fail, and there is nothing to normalise)."""
    if z.size == 0:
        return z.copy()
    e = cx.xp.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _softmax_vjp(F, at, g, y, x, *length):
    gx = _normalised_grad(F, at, g, y)  # (0 where masked: y is)
    t = at["temperature"]
    return (_as_input(F, gx if t is None or t == 1.0 else F.div_scalar(gx, scalar=t), x),) + (None,) * len(length)


def _length_mask(xp, at: dict, x: Any, length: Any) -> Any:
    """True at the positions along ``axis`` before each length (checked: 0 to the axis's length)."""
    ax = at["axis"] % x.ndim
    n = x.shape[ax]
    lens = np.asarray(length)
    if lens.dtype.kind == "f" and not (np.isfinite(lens) & (lens == np.floor(lens))).all():
        raise InvalidInput("softmax: length must hold whole numbers")
    bad = (lens < 0) | (lens > n)
    if bad.any():
        raise InvalidInput(f"softmax: length {lens[bad].flat[0]} is out of range for an axis of length {n}")
    pos = xp.arange(n).reshape((1,) * ax + (n,) + (1,) * (x.ndim - ax - 1))
    return pos < xp.expand_dims(lens.astype(np.int64), ax)


@defop(
    "softmax",
    ("data", "*length"),
    (*SOFTMAX, USE_LENGTH),
    most=2,
    infer=_softmax_infer("softmax"),
    vjp=_softmax_vjp,
)
def _softmax(cx, at, x, *length):
    """exp(x/T) normalised to sum to 1 along ``axis`` (in ``dtype`` when given). With
    ``use_length``, only the first ``length`` positions along the axis (a second input, of
    data's shape less the axis) take part, and the others are 0 (all 0 for a length of 0)."""
    z = _scaled(_in_dtype(x, at), at)
    if not at["use_length"]:
        return _normalised_exp(cx, z, at["axis"])
    xp, ax = cx.xp, at["axis"]
    keep = _length_mask(xp, at, z, length[0])
    if z.size == 0:
        return z.copy()
    zm = xp.where(keep, z, -np.inf)
    m = zm.max(axis=ax, keepdims=True)
    e = xp.exp(zm - xp.where(xp.isfinite(m), m, 0))  # (masked: exp(-inf), 0)
    s = e.sum(axis=ax, keepdims=True)
    return (e / xp.where(s == 0, 1, s)).astype(z.dtype, copy=False)


def _log_softmax_vjp(F, at, g, y, x):
    ax = at["axis"]
    gx = F.sub(g, F.mul(F.exp(y), F.sum(g, axis=ax, keepdims=True)))
    t = at["temperature"]
    return (_as_input(F, gx if t is None or t == 1.0 else F.div_scalar(gx, scalar=t), x),)


# (use_length: MXNet's declares it, and has no length input to use it with)
@defop("log_softmax", ("data",), (*SOFTMAX, USE_LENGTH), infer=_softmax_infer("log_softmax"), vjp=_log_softmax_vjp)
def _log_softmax(cx, at, x):
    """log(softmax(x)), computed stably (in ``dtype`` when given)."""
    x = _in_dtype(x, at)
    if x.size == 0:  # nothing to normalise (a max over no elements would fail)
        return x.copy()
    z = _scaled(x, at)
    z = z - z.max(axis=at["axis"], keepdims=True)
    return z - cx.xp.log(cx.xp.exp(z).sum(axis=at["axis"], keepdims=True))


def _softmin_vjp(F, at, g, y, x):
    t = at["temperature"]
    return (_as_input(F, F.mul_scalar(_normalised_grad(F, at, g, y), scalar=-1.0 / (1.0 if t is None else t)), x),)


@defop("softmin", ("data",), (*SOFTMAX, USE_LENGTH), infer=_softmax_infer("softmin"), vjp=_softmin_vjp)
def _softmin(cx, at, x):
    """exp(-x/T) normalised to sum to 1 along ``axis``: softmax of -x (in ``dtype`` when given)."""
    return _normalised_exp(cx, -_scaled(_in_dtype(x, at), at), at["axis"])


L2N = (Attr("eps", "float", 1e-10), Attr("mode", "str", "instance"))


def _l2n_axes(at: dict, ndim: int) -> tuple[int, ...]:
    mode = at["mode"]
    if mode == "instance":
        return tuple(range(1, ndim))
    if mode not in ("channel", "spatial"):
        raise InvalidInput(f"L2Normalization: mode must be instance, channel or spatial, got {mode!r}")
    if ndim < 3:
        raise ShapeError(f"L2Normalization: {mode} mode needs data of rank 3 or more, got rank {ndim}")
    return (1,) if mode == "channel" else tuple(range(2, ndim))


def _l2n_infer(at: dict, x: Spec) -> Spec:
    floating("L2Normalization", x)
    _l2n_axes(at, len(x.shape))
    return x


def _l2n_vjp(F, at, g, y, x):
    axes = _l2n_axes(at, x.ndim)
    if not axes:  # each element its own instance: y = x / sqrt(x^2 + eps)
        norm = F.sqrt(F.add_scalar(F.square(x), scalar=at["eps"]))
        return (F.div(F.sub(g, F.mul(y, F.mul(g, y))), norm),)
    norm = F.sqrt(F.add_scalar(F.sum(F.square(x), axis=axes, keepdims=True), scalar=at["eps"]))
    return (F.div(F.sub(g, F.mul(y, F.sum(F.mul(g, y), axis=axes, keepdims=True))), norm),)


@defop("L2Normalization", ("data",), L2N, infer=_l2n_infer, vjp=_l2n_vjp)
def _l2_normalization(cx, at, x):
    """x divided by its L2 norm (plus ``eps`` under the root) over each sample
    (``instance``), over axis 1 (``channel``) or over axes 2 and on (``spatial``)."""
    axes = _l2n_axes(at, x.ndim)
    sq = (x * x).sum(axis=axes, keepdims=True) if axes else x * x
    return (x / cx.xp.sqrt(sq + x.dtype.type(at["eps"]))).astype(x.dtype, copy=False)


def _sce_infer(at: dict, x: Spec, label: Spec) -> Spec:
    floating("softmax_cross_entropy", x)
    if len(x.shape) != 2 or label.shape != x.shape[:1] or x.shape[1] == 0:
        raise ShapeError(
            f"softmax_cross_entropy: needs data (N, C) with C >= 1 and label (N,), got {x.shape} and {label.shape}"
        )
    return Spec((1,), x.dtype)


def _sce_vjp(F, at, g, y, x, label):
    p = F.softmax(x, axis=-1)
    c = int(x.shape[1])
    # labels clipped to [0, C) as in the forward
    hot = F.one_hot(F.clip(label, a_min=0.0, a_max=float(c - 1)), depth=c, dtype=x.dtype.name)
    return F.mul(F.sub(p, hot), g), None


def _label_index(xp, label, c: int):
    """Labels as row indices, clipped to [0, C) (maximum and minimum: np.clip's Python-level
    dispatch costs 3 us more on a batch of labels)."""
    return xp.minimum(xp.maximum(label.astype(np.int64), 0), c - 1)


def _sce_eager(at, g, y, x, label):
    if x.dtype.kind != "f":
        return None
    return kernels.softmax_ce_grad(x, _label_index(np, label, x.shape[1]), g), None


def _sce_cap(dtype: np.dtype) -> float:
    """The most one sample's loss may be: MXNet's -log(max(p, 1e-8)), its 1e-8 a float32
    constant in the data's dtype (float16 has none that small: no cap)."""
    floor = float(dtype.type(np.float32(1e-8)))
    return -math.log(floor) if floor > 0 else math.inf


@defop("softmax_cross_entropy", ("data", "label"), infer=_sce_infer, vjp=_sce_vjp, eager_vjp=_sce_eager)
def _softmax_cross_entropy(cx, at, x, label):
    """The summed cross-entropy of softmax(data) against integer labels (clipped to the
    classes), shape (1,). As MXNet's, each sample's is -log(max(p, 1e-8)): at most 18.420681
    where its label's probability is under 1e-8 (a confidently wrong prediction); the gradient
    is softmax(data) - one_hot(label) all the same, MXNet's."""
    idx = _label_index(cx.xp, label, x.shape[1])
    return cx.xp.array([kernels.softmax_ce_loss(x, idx, _sce_cap(x.dtype))], dtype=x.dtype)


# --------------------------------------------------------------------------
# MXNet's loss outputs: the forward gives the prediction, the backward the loss's gradient by
# design, whatever the head gradient (``y.backward()`` on them trains: MXNet's symbolic heads)

SOFTMAX_OUTPUT = (
    Attr("grad_scale", "float", 1.0),
    Attr("ignore_label", "float", -1.0),
    Attr("multi_output", "bool", False),
    Attr("use_ignore", "bool", False),
    Attr("preserve_shape", "bool", False),
    Attr("normalization", "str", "null"),
    Attr("out_grad", "bool", False),
    Attr("smooth_alpha", "float", 0.0),
)


def _normalization(name: str, at: dict) -> str:
    """A loss output's ``normalization``: null, batch or valid (MXNet's)."""
    norm = at["normalization"]
    if norm not in ("null", "batch", "valid"):
        raise InvalidInput(f"{name}: normalization must be null, batch or valid, got {norm!r}")
    return norm


def _so_axis(name: str, at: dict, x: Spec) -> int:
    """The class axis: 1 with multi_output (labels (N, d1, ...)), else the last."""
    nd = len(x.shape)
    _normalization(name, at)
    if at["out_grad"]:
        raise InvalidInput(f"{name}: out_grad is not supported (the head gradient is not used)")
    if at["multi_output"]:
        if nd < 3:
            raise ShapeError(f"{name}: multi_output needs data (N, C, d1, ...), got {x.shape}")
        return 1
    if nd != 2 and not at["preserve_shape"]:
        raise ShapeError(f"{name}: data must be (N, C) (or multi_output, preserve_shape), got {x.shape}")
    return nd - 1


def _so_infer(at: dict, x: Spec, label: Spec) -> Spec:
    floating("SoftmaxOutput", x)
    ax = _so_axis("SoftmaxOutput", at, x)
    want = x.shape[:ax] + x.shape[ax + 1 :]
    if label.shape not in (want, x.shape) or x.shape[ax] == 0:
        raise ShapeError(
            f"SoftmaxOutput: label must have shape {want} (classes) or {x.shape} (probabilities) "
            f"for data {x.shape}, got {label.shape}"
        )
    return Spec(x.shape, x.dtype)


def _so_vjp(F, at, g, y, x, label):
    """(softmax - target) * grad_scale / the normaliser: 1 (null; with multi_output the
    positions per sample), every row (batch: N, N times the positions with multi_output, the
    rows of all but the last axis with preserve_shape) or the labels other than
    ``ignore_label`` (valid, whether or not use_ignore). The target is the label's one-hot,
    smoothed by ``smooth_alpha`` (not with multi_output, as MXNet); a label outside [0, C) has
    none. A row whose label is ``ignore_label`` gets 0 with use_ignore. A label of the data's
    shape is the target itself (probabilities): (softmax - label) * grad_scale, normalised,
    smoothed and ignored in no way. (MXNet's, each.)"""
    ax = _so_axis("SoftmaxOutput", at, x)
    dt = x.dtype.name
    if label.shape == x.shape:
        target = F.astype(label, dtype=dt)
        return F.mul_scalar(F.sub(F.softmax(x, axis=ax), target), scalar=at["grad_scale"]), None
    c = int(x.shape[ax])
    hot = F.one_hot(label, depth=c, dtype=dt)  # (the class axis last)
    if ax != x.ndim - 1:
        hot = F.transpose(hot, axes=(0, x.ndim - 1, *range(1, x.ndim - 1)))
    a = at["smooth_alpha"]
    if a and not at["multi_output"]:
        off = a / (c - 1) if c > 1 else 0.0
        hot = F.add_scalar(F.mul_scalar(hot, scalar=1 - a - off), scalar=off)
    grad = F.sub(F.softmax(x, axis=ax), hot)
    norm = at["normalization"]
    keep = None
    if at["use_ignore"] or norm == "valid":
        keep = F.astype(F.not_equal_scalar(label, scalar=at["ignore_label"]), dtype=dt)
    if at["use_ignore"]:
        wide = F.broadcast_to(F.expand_dims(keep, axis=ax), shape=tuple(x.shape))
        grad = F.where(wide, grad, F.zeros_like(grad))  # (0, not the -0 of a product)
    if norm == "valid":
        count = F.reshape(F.maximum_scalar(F.sum(keep), scalar=1.0), shape=(1,) * x.ndim)
        return F.broadcast_div(F.mul_scalar(grad, scalar=at["grad_scale"]), count), None
    positions = prod(tuple(label.shape[1:])) if at["multi_output"] else 1
    n = prod(tuple(label.shape)) if norm == "batch" else positions
    return F.mul_scalar(grad, scalar=at["grad_scale"] / max(n, 1)), None


@defop("SoftmaxOutput", ("data", "label"), SOFTMAX_OUTPUT, infer=_so_infer, vjp=_so_vjp, aliases=("Softmax",))
def _softmax_output(cx, at, x, label):
    """softmax along the class axis; its backward is the cross-entropy's gradient against
    ``label`` (MXNet's SoftmaxOutput: the head gradient is not used)."""
    ax = _so_axis("SoftmaxOutput", at, Spec(x.shape, x.dtype.name))
    return _normalised_exp(cx, x, ax)


REGRESSION = (Attr("grad_scale", "float", 1.0),)


def _regression_infer(name: str):
    def infer(at: dict, x: Spec, label: Spec) -> Spec:
        floating(name, x)
        if prod(label.shape) != prod(x.shape) or label.shape[:1] != x.shape[:1]:
            raise ShapeError(f"{name}: label {label.shape} does not fit data {x.shape}")
        return Spec(x.shape, x.dtype)

    return infer


def _regression_vjp(link: str | None, grad: str):
    """d loss / d data: ``grad`` of (prediction - label), over the outputs of a sample, times
    grad_scale (MXNet's; the head gradient is not used)."""

    def vjp(F, at, g, y, x, label):
        pred = getattr(F, link)(x) if link else x
        diff = F.sub(pred, F.reshape(F.astype(label, dtype=x.dtype.name), shape=tuple(x.shape)))
        if grad == "sign":  # MXNet's: 1 above the label, -1 at or below it
            diff = F.add_scalar(
                F.mul_scalar(F.astype(F.greater_scalar(diff, scalar=0.0), dtype=x.dtype.name), scalar=2.0), scalar=-1.0
            )
        per_sample = prod(tuple(x.shape[1:]))
        return F.mul_scalar(diff, scalar=at["grad_scale"] / max(per_sample, 1)), None

    return vjp


for _name, _link, _grad in (
    ("LinearRegressionOutput", None, "diff"),
    ("LogisticRegressionOutput", "sigmoid", "diff"),
    ("MAERegressionOutput", None, "sign"),
):

    def _regression(cx, at, x, label, _link=_link):
        return OPS[_link].forward(cx, {}, x) if _link else x.copy()

    _regression.__doc__ = (
        f"The prediction ({_link or 'the data'}); its backward is the gradient of "
        + ("the absolute error" if _grad == "sign" else "the squared error" if not _link else "the log loss")
        + f" against ``label`` (MXNet's {_name}: the head gradient is not used)."
    )
    defop(_name, ("data", "label"), REGRESSION, infer=_regression_infer(_name), vjp=_regression_vjp(_link, _grad))(
        _regression
    )


MAKE_LOSS = (
    Attr("grad_scale", "float", 1.0),
    Attr("valid_thresh", "float", 0.0),
    Attr("normalization", "str", "null"),
)


def _make_loss_infer(at: dict, x: Spec) -> Spec:
    floating("MakeLoss", x)
    _normalization("MakeLoss", at)
    return x


def _make_loss_vjp(F, at, g, y, x):
    """grad_scale everywhere, over the rows (batch: all axes but the last) or the elements above valid_thresh
    (valid): the data is a loss to minimise (the head gradient is not used)."""
    norm = at["normalization"]
    rows = prod(tuple(x.shape[:-1])) if norm == "batch" else 1  # (MXNet's: every row, the axes but the last)
    ones = F.mul_scalar(F.ones_like(x), scalar=at["grad_scale"] / max(rows, 1))
    if norm == "valid":
        count = F.sum(F.astype(F.greater_scalar(x, scalar=at["valid_thresh"]), dtype=x.dtype.name))
        return (F.broadcast_div(ones, F.reshape(F.maximum_scalar(count, scalar=1.0), shape=(1,) * x.ndim)),)
    return (ones,)


@defop("MakeLoss", ("data",), MAKE_LOSS, infer=_make_loss_infer, vjp=_make_loss_vjp)
def _make_loss(cx, at, x):
    """The data itself, marked as a loss: its backward is grad_scale (MXNet's MakeLoss)."""
    return x.copy()


@defop(
    "make_loss",
    ("data",),
    MAKE_LOSS,
    infer=like_infer,
    vjp=lambda F, at, g, y, x: (F.ones_like(x),),
)
def _make_loss_plain(cx, at, x):
    """The data itself, marked as a loss: its backward is ones, whatever the head gradient
    (MXNet's make_loss, an op of its own: MakeLoss's attributes are taken and not read)."""
    return x.copy()


# --------------------------------------------------------------------------
# activations

ACTS = ("relu", "sigmoid", "tanh", "softrelu", "softsign")


def _act_infer(at: dict, x: Spec) -> Spec:
    floating("Activation", x)
    if at["act_type"] not in ACTS:
        raise InvalidInput(f"Activation: act_type must be one of {ACTS}, got {at['act_type']!r}")
    return x


def _activation_vjp(F, at, g, y, x):
    return OPS[at["act_type"]].vjp(F, {}, g, y, x)


def _activation_eager(at, g, y, x):
    fast = OPS[at["act_type"]].eager_vjp
    return fast({}, g, y, x) if fast is not None else None


@defop(
    "Activation",
    ("data",),
    (Attr("act_type", "str", REQUIRED),),
    infer=_act_infer,
    vjp=_activation_vjp,
    eager_vjp=_activation_eager,
)
def _activation(cx, at, x):
    """relu, sigmoid, tanh, softrelu or softsign, by ``act_type``."""
    return OPS[at["act_type"]].forward(cx, {}, x)


LEAKY = ("elu", "gelu", "leaky", "prelu", "rrelu", "selu")
SELU_ALPHA, SELU_SCALE = 1.6732632423543772, 1.0507009873554805
_SQRT1_2 = float(np.sqrt(0.5))
_INV_SQRT_2PI = float(1.0 / np.sqrt(2.0 * np.pi))


def _prelu_shape(gamma: tuple[int, ...], data: tuple[int, ...]) -> tuple[int, ...]:
    """The shape gamma broadcasts as, MXNet's ``expand_shape``: its axes, from the last,
    matched to data's axes 1 and 0 (one per channel, on axis 1: (C,); one for all: (1,)),
    every other axis 1."""
    out = [1] * len(data)
    s = len(gamma) - 1
    for i in range(len(data) - 1, -1, -1):
        if s >= 0 and i <= 1 and (data[i] == gamma[s] or gamma[s] == 1):
            out[i] = gamma[s]
            s -= 1
    if s != -1:
        per_channel = (data[1],) if len(data) > 1 else data
        raise ShapeError(
            f"LeakyReLU: cannot broadcast gamma {gamma} to data {data} "
            f"(one slope per channel: {per_channel}, or one for all: (1,))"
        )
    return tuple(out)


def _leaky_infer(at: dict, x: Spec, *gamma: Spec) -> Spec:
    floating("LeakyReLU", x)
    kind = at["act_type"]
    if kind not in LEAKY:
        raise InvalidInput(f"LeakyReLU: act_type must be one of {LEAKY}, got {kind!r}")
    if kind == "prelu":
        if len(gamma) != 1:
            raise InvalidInput("LeakyReLU: act_type prelu takes 2 inputs (data and gamma), got 1")
        if gamma[0].dtype != x.dtype:
            raise DTypeError(f"LeakyReLU: gamma is {gamma[0].dtype}, data {x.dtype}: they must be of one dtype")
        _prelu_shape(gamma[0].shape, x.shape)
    elif gamma:
        raise InvalidInput(f"LeakyReLU: act_type {kind} takes 1 input (data), got {1 + len(gamma)} (gamma is prelu's)")
    return x


def _rrelu_slope(at: dict) -> float:
    """rrelu's slope in prediction: the middle of [lower_bound, upper_bound]."""
    return (at["lower_bound"] + at["upper_bound"]) / 2.0


def _rrelu_draws(at: dict, training: bool) -> bool:
    """Whether LeakyReLU draws slopes (rrelu in training): its node keeps them for the VJP."""
    return at["act_type"] == "rrelu" and training


_GELU_SCRATCH = float64_scratch(5)
_GELU_VJP_SCRATCH = float64_scratch(4, 6)  # (the table ops of _gelu_grad: their results, erf's chunk)


def _gelu_grad(F, x):
    """d gelu / dx = Phi(x) + x phi(x), Phi and phi the normal distribution's cdf and pdf."""
    cdf = F.mul_scalar(F.add_scalar(F.erf(F.mul_scalar(x, scalar=_SQRT1_2)), scalar=1.0), scalar=0.5)
    pdf = F.mul_scalar(F.exp(F.mul_scalar(F.square(x), scalar=-0.5)), scalar=_INV_SQRT_2PI)
    return F.add(cdf, F.mul(x, pdf))


def _leaky_vjp(F, at, g, y, x, *gamma):
    kind, slope = at["act_type"], at["slope"]
    if kind == "gelu":
        return (F.mul(g, _gelu_grad(F, x)),)
    pos = F.greater_scalar(x, scalar=0.0)
    neg = F.rsub_scalar(pos, scalar=1.0)
    if kind == "prelu":
        shape = _prelu_shape(tuple(gamma[0].shape), tuple(x.shape))
        gb = F.reshape(gamma[0], shape=shape)
        gx = F.mul(g, F.add(pos, F.mul(neg, gb)))
        gg = F.sum_to(F.mul(g, F.mul(neg, x)), shape=shape)
        return gx, F.reshape(gg, shape=tuple(gamma[0].shape))
    if kind == "leaky":
        d = F.add(pos, F.mul_scalar(neg, scalar=slope))
    elif kind == "rrelu":
        drawn = at.get("_kept")
        slopes = F.mul_scalar(neg, scalar=_rrelu_slope(at)) if drawn is None else F.mul(neg, drawn)
        d = F.add(pos, slopes)
    else:  # elu, selu: exp(x) left of 0 only (right of it, an overflow to inf times 0 is NaN)
        left = F.exp(F.minimum_scalar(x, scalar=0.0))
        if kind == "elu":
            d = F.add(pos, F.mul(neg, F.mul_scalar(left, scalar=slope)))
        else:
            d = F.mul_scalar(F.add(pos, F.mul(neg, F.mul_scalar(left, scalar=SELU_ALPHA))), scalar=SELU_SCALE)
    return (F.mul(g, d),)


@defop(
    "LeakyReLU",
    ("data", "*gamma"),
    (
        Attr("act_type", "str", "leaky"),
        Attr("slope", "float", 0.25),
        Attr("lower_bound", "float", 0.125),
        Attr("upper_bound", "float", 0.334),
    ),
    most=2,
    infer=_leaky_infer,
    vjp=_leaky_vjp,
    random=True,
    keeps=_rrelu_draws,
    scratch=lambda at, x, *gamma: _GELU_SCRATCH(at, x) if at["act_type"] == "gelu" else 0,
    vjp_scratch=lambda at, x, *gamma: _GELU_VJP_SCRATCH(at, x) if at["act_type"] == "gelu" else 0,
)
def _leaky_relu(cx, at, x, *gamma):
    """leaky: x or slope*x; elu: x or slope*(exp(x)-1); selu: scaled elu; gelu: x Phi(x) (the
    normal cdf, with erf); prelu: x or gamma*x, gamma a second input (one slope per channel
    on axis 1, or one for all); rrelu: x or a*x, a drawn uniformly from [lower_bound,
    upper_bound] for each element in training (its gradient uses the draw), their middle in
    prediction."""
    xp, t = cx.xp, x.dtype.type
    kind, slope = at["act_type"], t(at["slope"])
    at["_kept"] = None
    if kind == "leaky":
        if slope == 0 and x.dtype == np.float32:  # MXNet's float32 (oneDNN's relu): +0, not -0, left of 0
            return xp.where(x > 0, x, t(0))
        return xp.where(x > 0, x, slope * x)
    if kind == "prelu":
        gb = gamma[0].reshape(_prelu_shape(gamma[0].shape, x.shape))
        return xp.where(x > 0, x, gb * x).astype(x.dtype, copy=False)
    if kind == "rrelu":
        if cx.training:
            lo, hi = at["lower_bound"], at["upper_bound"]
            drawn = (lo + (hi - lo) * cx.rng.random(x.shape)).astype(x.dtype)
            at["_kept"] = drawn
            return xp.where(x > 0, x, drawn * x)
        return xp.where(x > 0, x, t(_rrelu_slope(at)) * x)
    if kind == "gelu":  # 0.5 x erfc(-x / sqrt 2): no cancellation in the left tail, as 1 + erf has
        return in_float64(lambda v: 0.5 * v * kernels.special("erfc", -_SQRT1_2 * v), x)
    left = xp.expm1(xp.minimum(x, t(0)))  # (right of 0 not used: no overflow there)
    if kind == "elu":
        return xp.where(x > 0, x, slope * left).astype(x.dtype)
    return (t(SELU_SCALE) * xp.where(x > 0, x, t(SELU_ALPHA) * left)).astype(x.dtype)


# --------------------------------------------------------------------------
# fully connected

FC = (Attr("num_hidden", "int", REQUIRED), Attr("no_bias", "bool", False), Attr("flatten", "bool", True))


def _fc_in(shape: tuple[int, ...], flatten: bool) -> tuple[tuple[int, ...], int]:
    if flatten:
        return shape[:1], prod(shape[1:])
    return shape[:-1], shape[-1]


def _fc_infer(at: dict, x: Spec, w: Spec, *b: Spec) -> Spec:
    floating("FullyConnected", x)
    dt = same_dtype("FullyConnected", x, w, *b)
    lead, k = _fc_in(x.shape, at["flatten"])
    n = at["num_hidden"]
    if len(b) != (0 if at["no_bias"] else 1):
        raise InvalidInput("FullyConnected: give a bias unless no_bias is true")
    if w.shape != (n, k):
        raise ShapeError(f"FullyConnected: weight shape {w.shape} should be {(n, k)} for data {x.shape}")
    if b and b[0].shape != (n,):
        raise ShapeError(f"FullyConnected: bias shape {b[0].shape} should be {(n,)}")
    return Spec(lead + (n,), dt)


def _fc_vjp(F, at, g, y, x, w, *b):
    lead, k = _fc_in(tuple(x.shape), at["flatten"])
    m = prod(lead)
    n = at["num_hidden"]
    g2 = F.reshape(g, shape=(m, n))

    def gx():  # lazy: data seldom needs a gradient
        return F.reshape(F.dot(g2, w), shape=tuple(x.shape))

    def gw():
        return F.dot(g2, F.reshape(x, shape=(m, k)), transpose_a=True)

    return (gx, gw) + ((F.sum(g2, axis=0),) if b else ())


def _product_shaped(a: Any, b: Any, shape: tuple[int, ...]) -> Any:
    return matrix_product(a, b).reshape(shape)


def _weight_product(g2: Any, x: Any, m: int, k: int) -> Any:
    return matrix_product(g2.T, x.reshape(m, k))  # (a copy of x where it is not contiguous: made only if wanted)


def _fc_eager(at, g, y, x, w, *b):
    """The gradients of data and weight deferred as ``dot``'s are: computed only where they lead
    to a variable, side by side in a helper thread when both are wanted, the weight's straight
    into its gradient buffer (backprop.GradSinks)."""
    lead, k = _fc_in(tuple(x.shape), at["flatten"])
    m = prod(lead)  # (not -1: numpy cannot infer it when k or the batch is 0)
    n = at["num_hidden"]
    g2 = g.reshape(m, n)
    cost = m * n * k  # multiply-adds of each
    if x.ndim == 2:
        gx = Deferred(matrix_product, (g2, w), cost)
    else:
        gx = Deferred(_product_shaped, (g2, w, tuple(x.shape)), cost)
    if x.ndim == 2 or x.flags.c_contiguous:  # (x as a matrix is a view of it)
        gw = Deferred(matrix_product, (g2.T, x.reshape(m, k)), cost)
    else:
        gw = Deferred(_weight_product, (g2, x, m, k), cost)
    return (gx, gw) + ((g2.sum(axis=0, dtype=g2.dtype),) if b else ())


@defop(
    "FullyConnected",
    ("data", "weight", "*bias"),
    FC,
    most=3,
    infer=_fc_infer,
    vjp=_fc_vjp,
    eager_vjp=_fc_eager,
    work=lambda at, x, w, *b: prod(x.shape) * at["num_hidden"],
)
def _fully_connected(cx, at, x, w, *b):
    """data · weightᵀ + bias, with data flattened to 2-D unless ``flatten`` is false."""
    lead, k = _fc_in(x.shape, at["flatten"])
    y = matrix_product(x.reshape(prod(lead), k), w.T)  # (not -1: numpy cannot infer it when k is 0)
    if b:
        y += b[0]
    return y.reshape(lead + (at["num_hidden"],))


# --------------------------------------------------------------------------
# windows of 2-D (N, C, H, W) and 3-D (N, C, D, H, W) data: im2col / col2im, and the
# convolution and pooling built on them. Every window attribute has one value per spatial axis
# (or one value for all of them); the code is written for any number of axes, ``_SPATIAL``
# says which data ranks it takes. What a window's attributes work out to for a shape (its
# geometry, the index that takes its windows, the one that sums them back) is kept, as a
# convolution asks for it a dozen times a step, with the same attributes and shape.

Axes = tuple[int, ...]

_SPATIAL = {4: 2, 5: 3}  # data rank: spatial axes
_LAYOUTS = {2: "NCHW", 3: "NCDHW"}  # spatial axes: the one layout taken


def _spatial(name: str, shape: tuple[int, ...]) -> int:
    """The spatial axes of (N, C, H, W) or (N, C, D, H, W) data: 2 or 3."""
    nd = _SPATIAL.get(len(shape))
    if nd is None:
        raise ShapeError(
            f"{name}: needs 3-D data (N, C, W), 4-D data (N, C, H, W) or 5-D data (N, C, D, H, W), got shape {shape}"
        )
    return nd


def _axes(v: tuple[int, ...], default: int, name: str, what: str, nd: int) -> Axes:
    """A window attribute as one value per spatial axis of ``nd``-D data: ``default`` on each
    when it is not given, its one value on each when it has one."""
    if not v:
        return (default,) * nd
    if len(v) == 1:
        return (v[0],) * nd
    if len(v) != nd:
        raise InvalidInput(f"{name}: {what} must have {nd} values for {nd}-D data, got {v}")
    return tuple(v)


def _window(name: str, at: dict, shape: tuple[int, ...]) -> tuple[Axes, Axes, Axes, Axes]:
    """(kernel, stride, pad, out) for (N, C, H, W) or (N, C, D, H, W) data (with ``dilate``
    when ``at`` has it), one value per spatial axis each."""
    return _memo(_geometry, name, at, shape)


def _memo(fn: Any, name: str, at: dict, shape: tuple[int, ...], cache: bool = True) -> Any:
    """``fn``, a cached function of a window's attributes (those in ``at``) and the data's
    ``shape``, for these (not kept in its cache unless ``cache``)."""
    args = (name, at["kernel"], at["stride"], at["pad"], at.get("dilate") or (), shape)
    if cache:
        try:
            return fn(*args)
        except TypeError:  # (a list among them, which the cache cannot key on)
            pass
    return fn.__wrapped__(*(a if isinstance(a, str) else tuple(a) for a in args))


@functools.lru_cache(maxsize=1024)
def _geometry(
    name: str, kernel: Axes, stride: Axes, pad: Axes, dilate: Axes, shape: tuple[int, ...]
) -> tuple[Axes, Axes, Axes, Axes]:
    """``_window``'s work (its errors are raised, not kept)."""
    nd = _spatial(name, shape)
    k = _axes(kernel, 1, name, "kernel", nd)
    s = _axes(stride, 1, name, "stride", nd)
    p = _axes(pad, 0, name, "pad", nd)
    d = _dilation(name, dilate, nd)
    if min(k) < 1 or min(s) < 1 or min(p) < 0:
        raise InvalidInput(f"{name}: kernel and stride must be positive and pad not negative")
    padded = tuple(n + 2 * q for n, q in zip(shape[2:], p))
    e = _spanned(k, d)
    if any(n < m for n, m in zip(padded, e)):
        what = f"kernel {k}" if max(d) == 1 else f"kernel {k} dilated by {d} (spanning {e})"
        raise ShapeError(f"{name}: {what} is larger than the padded input {padded}")
    out = tuple((n - m) // t + 1 for n, m, t in zip(padded, e, s))
    return k, s, p, out


def _dilation(name: str, dilate: Axes, nd: int) -> Axes:
    d = _axes(dilate, 1, name, "dilate", nd)
    if min(d) < 1:
        raise InvalidInput(f"{name}: dilate must be positive, got {d}")
    return d


def _spanned(k: Axes, d: Axes) -> Axes:
    """The input positions, per axis, a kernel ``k`` dilated by ``d`` spans."""
    return tuple((n - 1) * m + 1 for n, m in zip(k, d))


def _spatial_axes(nd: int) -> Axes:
    """The spatial axes (2, ..., nd + 1) of data with ``nd`` of them."""
    return tuple(range(2, 2 + nd))


def _swap_n_c(nd: int) -> Axes:
    """The axes of (N, C, *spatial) data as (C, N, *spatial) (and back)."""
    return (1, 0, *range(2, 2 + nd))


WINDOW = (Attr("kernel", "shape", REQUIRED), Attr("stride", "shape", ()), Attr("pad", "shape", ()))
IM2COL = (
    Attr("kernel", "shape", REQUIRED),
    Attr("stride", "shape", ()),
    Attr("dilate", "shape", ()),
    Attr("pad", "shape", ()),
)


def _win(at: dict) -> dict:
    """The window attributes of ``at``, as im2col and col2im take them."""
    return {"kernel": at["kernel"], "stride": at["stride"], "dilate": at["dilate"], "pad": at["pad"]}


# --------------------------------------------------------------------------
# 1-D windows: (N, C, W) data is taken as (N, C, 1, W), as MXNet's 1-D ops take it

_UNITS = {"kernel": 1, "stride": 1, "dilate": 1, "pad": 0, "adj": 0}


def _lifted(name: str, at: dict) -> dict:
    """The attributes of an op on 1-D data (N, C, W) for the 2-D data (N, C, 1, W): each
    window attribute gets a first value that leaves the new axis as it is."""
    out = dict(at)
    for a, unit in _UNITS.items():
        v = at.get(a)
        if v is None:
            continue
        if len(v) > 1:
            raise InvalidInput(f"{name}: {a} must have one value for 1-D data (N, C, W), got {tuple(v)}")
        if v or a != "kernel":  # (Pooling's kernel may be left out for a global pooling)
            out[a] = (unit, v[0] if v else unit)
    t = at.get("target_shape")
    if t and any(t):
        if len(t) > 1:
            raise InvalidInput(f"{name}: target_shape must have one value for 1-D data (N, C, W), got {tuple(t)}")
        out["target_shape"] = (1, t[0])
    if "layout" in at:
        if at["layout"] not in (None, "NCW"):
            raise InvalidInput(f"{name}: layout {at['layout']!r} is not one for 1-D data (N, C, W): NCW")
        out["layout"] = None
    return out


def _as_1d(name: str, shape: tuple[int, ...], fn: Any, *args: Any) -> Any:
    """``fn(*args)`` on 1-D data lifted to 2-D: its errors say how the data was taken."""
    try:
        return fn(*args)
    except (ShapeError, InvalidInput) as e:
        raise type(e)(
            f"{e} (1-D data {shape} is taken as {_up(shape)}, each window attribute as (1 or 0, its value))"
        ) from None


def _up(shape: tuple[int, ...]) -> tuple[int, ...]:
    return shape[:2] + (1,) + shape[2:]


def _down(shape: tuple[int, ...]) -> tuple[int, ...]:
    return shape[:2] + shape[3:]


def _specs_up(name: str, xs: tuple[Spec, ...], lift: tuple[str, ...]) -> list[Spec]:
    out = []
    for what, x in zip(lift, xs):
        if len(x.shape) != 3:
            raise ShapeError(f"{name}: {what} must be 3-D with 1-D data (N, C, W), got shape {x.shape}")
        out.append(Spec(_up(x.shape), x.dtype))
    return out + list(xs[len(lift) :])


def _one_d(name: str, lift: tuple[str, ...], squeeze: bool = True) -> Callable[[Any], Any]:
    """An op's ``infer``, ``scratch``, ``work`` and ``vjp_scratch`` (``(at, *specs)``) for 1-D
    data too: its first inputs, named in ``lift`` (the data, and a convolution's filters),
    get a unit axis 2, and its result loses it (unless not ``squeeze``: im2col's has none)."""

    def wrap(fn: Any) -> Any:
        @functools.wraps(fn)
        def f(at: dict, *xs: Spec) -> Any:
            if len(xs[0].shape) != 3:
                return fn(at, *xs)
            got = _as_1d(name, xs[0].shape, fn, _lifted(name, at), *_specs_up(name, xs, lift))
            if not isinstance(got, Spec):
                return got
            return Spec(_down(got.shape), got.dtype) if squeeze else got

        return f

    return wrap


def _forward_1d(name: str, lift: tuple[str, ...], squeeze: bool = True) -> Callable[[Any], Any]:
    """An op's forward for 1-D data too (see ``_one_d``): its first ``lift`` inputs reshaped."""

    def wrap(fn: Any) -> Any:
        @functools.wraps(fn)
        def f(cx: Any, at: dict, *xs: Any) -> Any:
            if xs[0].ndim != 3:
                return fn(cx, at, *xs)
            ys = [x.reshape(_up(x.shape)) if i < len(lift) else x for i, x in enumerate(xs)]
            y = _as_1d(name, xs[0].shape, fn, cx, _lifted(name, at), *ys)
            return y.reshape(_down(y.shape)) if squeeze else y

        return f

    return wrap


def _vjp_1d(name: str, lift: tuple[str, ...]) -> Callable[[Any], Any]:
    """An op's VJP for 1-D data too (see ``_one_d``): the gradients of its first ``lift``
    inputs lose the unit axis (a lazy one when it is computed)."""

    def wrap(vjp: Any) -> Any:
        def f(F: Any, at: dict, g: Any, y: Any, *xs: Any) -> Any:
            if len(xs[0].shape) != 3:
                return vjp(F, at, g, y, *xs)

            def up(a: Any) -> Any:
                return None if a is None else F.reshape(a, shape=_up(tuple(a.shape)))

            got = vjp(F, _lifted(name, at), up(g), up(y), *(up(x) if i < len(lift) else x for i, x in enumerate(xs)))
            return tuple(_back(F, r, tuple(xs[i].shape)) if i < len(lift) else r for i, r in enumerate(got))

        return f

    return wrap


def _back(F: Any, r: Any, shape: tuple[int, ...]) -> Any:
    if r is None:
        return None
    if callable(r):  # a gradient computed only if it is needed
        return lambda: F.reshape(r(), shape=shape)
    return F.reshape(r, shape=shape)


def _defop_1d(
    name: str,
    inputs: tuple[str, ...],
    attrs: tuple[Attr, ...],
    lift: tuple[str, ...],
    channels_last: bool = False,
    **hooks: Any,
) -> Any:
    """``defop`` of an op on windows of 2-D or 3-D data that takes 1-D data too: its forward,
    its VJP and its hooks of specs (``infer``, ``scratch``, ``vjp_scratch``, ``work``) lift the
    inputs named in ``lift`` of 1-D data (see ``_one_d``), and pass others on as they are.
    ``channels_last``: a one-input op that takes the layouts NWC, NHWC and NDHWC too (see
    ``_LAST``)."""
    sized = _one_d(name, lift)
    for hook in ("infer", "scratch", "vjp_scratch", "work"):
        if hooks.get(hook) is not None:
            hooks[hook] = sized(hooks[hook])
            if channels_last:
                hooks[hook] = _last_specs(name, hooks[hook])
    hooks["vjp"] = _vjp_1d(name, lift)(hooks["vjp"])
    if channels_last:
        hooks["vjp"] = _last_vjp(name, hooks["vjp"])
    register = defop(name, inputs, attrs, **hooks)
    if channels_last:
        return lambda forward: register(_last_forward(name, _forward_1d(name, lift)(forward)))
    return lambda forward: register(_forward_1d(name, lift)(forward))


# --------------------------------------------------------------------------
# channels-last layouts: the data's channels moved to axis 1, the op run, and moved back

_LAST = {"NWC": 3, "NHWC": 4, "NDHWC": 5}  # layout: the data's rank


def _channels_last(name: str, at: dict, rank: int) -> bool:
    """Whether ``at`` names a channels-last layout (of data of ``rank``: else refused)."""
    want = _LAST.get(at["layout"])
    if want is None:
        return False
    if rank != want:
        raise ShapeError(f"{name}: layout {at['layout']} is for data of rank {want}, got rank {rank}")
    return True


def _to_first(rank: int) -> tuple[int, ...]:
    return (0, rank - 1, *range(1, rank - 1))


def _to_last(rank: int) -> tuple[int, ...]:
    return (0, *range(2, rank), 1)


def _channels_first(at: dict) -> dict:
    return {**at, "layout": None}


def _last_specs(name: str, fn: Any) -> Any:
    @functools.wraps(fn)
    def f(at: dict, x: Spec) -> Any:
        if not _channels_last(name, at, len(x.shape)):
            return fn(at, x)
        got = fn(_channels_first(at), Spec(tuple(x.shape[i] for i in _to_first(len(x.shape))), x.dtype))
        if not isinstance(got, Spec):
            return got
        return Spec(tuple(got.shape[i] for i in _to_last(len(got.shape))), got.dtype)

    return f


def _last_forward(name: str, fn: Any) -> Any:
    @functools.wraps(fn)
    def f(cx: Any, at: dict, x: Any) -> Any:
        if not _channels_last(name, at, x.ndim):
            return fn(cx, at, x)
        y = fn(cx, _channels_first(at), x.transpose(_to_first(x.ndim)))
        return cx.xp.ascontiguousarray(y.transpose(_to_last(y.ndim)))

    return f


def _last_vjp(name: str, vjp: Any) -> Any:
    @functools.wraps(vjp)
    def f(F: Any, at: dict, g: Any, y: Any, x: Any) -> Any:
        rank = len(x.shape)
        if not _channels_last(name, at, rank):
            return vjp(F, at, g, y, x)
        first = _to_first(rank)
        (gx,) = vjp(
            F,
            _channels_first(at),
            F.transpose(g, axes=first),
            F.transpose(y, axes=first),
            F.transpose(x, axes=first),
        )
        return (F.transpose(gx, axes=_to_last(rank)),)

    return f


@functools.lru_cache(maxsize=1024)
def _taking(name: str, kernel: Axes, stride: Axes, pad: Axes, dilate: Axes, shape: tuple[int, ...]) -> tuple:
    """How ``_windows`` takes the windows of data of ``shape``: the pad widths (None without
    padding), the spans and axes of its sliding windows, the index that keeps every
    stride-th window and every dilate-th tap, and the axes' order that puts the taps first."""
    k, s, p, out = _geometry(name, kernel, stride, pad, dilate, shape)
    nd = len(k)
    d = _dilation(name, dilate, nd)
    widths = ((0, 0), (0, 0), *((q, q) for q in p)) if any(p) else None
    starts = (slice(None, (o - 1) * t + 1, t) for o, t in zip(out, s))
    picks = (slice(None), slice(None), *starts, *(slice(None, None, m) for m in d))
    axes = _spatial_axes(nd)
    return widths, _spanned(k, d), axes, picks, (0, 1, *range(2 + nd, 2 + 2 * nd), *axes)


def _windows(cx, at, x):
    """Windows of a (N, C, H, W) array: shape (N, C, kh, kw, OH, OW) (of a (N, C, D, H, W)
    one: (N, C, kd, kh, kw, OD, OH, OW)); padding takes ``pad_value``."""
    widths, spans, axes, picks, order = _memo(_taking, "im2col", at, x.shape)
    xp = cx.xp
    if widths is not None:
        x = xp.pad(x, widths, constant_values=at["pad_value"])
    win = np.lib.stride_tricks.sliding_window_view(x, spans, axis=axes)  # N, C, padded, spans
    return xp.ascontiguousarray(win[picks].transpose(order))


CACHED_MOVES = 4096
"""The most moves (index pairs) of a ``_giving`` plan its cache keeps: a larger plan (a big
kernel over a big image) is made for each call, so the cache stays within a few MB."""


@functools.lru_cache(maxsize=1024)
def _giving(name: str, kernel: Axes, stride: Axes, pad: Axes, dilate: Axes, shape: tuple[int, ...]) -> tuple:
    """How ``_summed_windows`` sums windows back into data of ``shape``: the padded data's
    shape, the moves (where each block of the windows goes), and the index that crops the
    padding. The moves are one per tap of the kernel (its values go every stride-th place from
    the tap's offset, on each axis), or one per window where there are fewer windows than taps
    (a window's taps go to its span: a global pooling's gradient is one move)."""
    k, s, p, out = _geometry(name, kernel, stride, pad, dilate, shape)
    d = _dilation(name, dilate, len(k))
    every = (slice(None), slice(None))
    if prod(out) < prod(k):
        taps = (slice(None),) * len(k)
        spans = [[slice(o * t, o * t + (n - 1) * m + 1, m) for o in range(w)] for n, m, t, w in zip(k, d, s, out)]
        moves = tuple(
            (every + taps + pos, every + span)
            for pos, span in zip(itertools.product(*map(range, out)), itertools.product(*spans))
        )
    else:
        spots = [[slice(i * m, i * m + t * o, t) for i in range(n)] for n, m, t, o in zip(k, d, s, out)]
        moves = tuple(
            (every + tap, every + spot)
            for tap, spot in zip(itertools.product(*map(range, k)), itertools.product(*spots))
        )
    padded = shape[:2] + tuple(n + 2 * q for n, q in zip(shape[2:], p))
    return padded, moves, every + tuple(slice(q, q + n) for q, n in zip(p, shape[2:]))


def _summed_windows(cx, at, c, shape):
    """(N, C, kh, kw, OH, OW) windows summed back into a (N, C, H, W) array of ``shape`` (or
    (N, C, kd, kh, kw, OD, OH, OW) ones into a (N, C, D, H, W) array): a new array."""
    k, _, p, out = _window("col2im", at, shape)
    small = min(prod(k), prod(out)) <= CACHED_MOVES
    padded, moves, crop = _memo(_giving, "col2im", at, shape, cache=small)
    z = cx.xp.zeros(padded, c.dtype)
    for tap, spot in moves:
        z[spot] += c[tap]
    return z[crop] if not any(p) else z[crop].copy()  # (a crop of the padding: its own memory)


def _im2col_infer(at: dict, x: Spec) -> Spec:
    k, _, _, out = _window("im2col", at, x.shape)
    return Spec((x.shape[0], x.shape[1] * prod(k), prod(out)), x.dtype)


@_forward_1d("im2col", ("data",), squeeze=False)
def _im2col(cx, at, x):
    """MXNet's im2col: the sliding windows of (N, C, H, W) data as the columns of an
    (N, C*kh*kw, OH*OW) array (a window's values in C, then kh, then kw order); padding takes
    ``pad_value`` (0 in MXNet's). (N, C, D, H, W) data gives (N, C*kd*kh*kw, OD*OH*OW)."""
    cols = _windows(cx, at, x)  # (N, C, kh, kw, OH, OW)
    nd = (cols.ndim - 2) // 2
    n, c = cols.shape[:2]
    # (no -1: an empty batch has no size to infer it from)
    return cols.reshape(n, c * prod(cols.shape[2 : 2 + nd]), prod(cols.shape[2 + nd :]))


def _col2im_shape(at: dict, c: tuple[int, ...]) -> tuple[tuple[int, ...], Axes, Axes]:
    """The (N, C, H, W) image of (N, C*kh*kw, L) columns (or of (N, C, kh, kw, OH, OW)
    windows), its kernel and its windows' (OH, OW); with a 3-D ``output_size``, the
    (N, C, D, H, W) image."""
    size = tuple(at["output_size"])
    if len(size) not in _LAYOUTS or min(size) < 1:
        raise InvalidInput(f"col2im: output_size must be 1, 2 or 3 positive values, got {at['output_size']}")
    nd = len(size)
    k = _axes(at["kernel"], 1, "col2im", "kernel", nd)
    taps = prod(k)
    if not (len(c) == 3 and c[1] % taps == 0 or len(c) == 2 + 2 * nd and c[2 : 2 + nd] == k):
        raise ShapeError(f"col2im: data of shape {c} is not (N, C*{'*'.join(map(str, k))}, L) for kernel {k}")
    shape = (c[0], c[1] // taps if len(c) == 3 else c[1]) + size
    k, _, _, out = _window("col2im", at, shape)
    if (c[2] if len(c) == 3 else prod(c[2 + nd :])) != prod(out) or len(c) > 3 and c[2 + nd :] != out:
        got = f"{c[2]} columns" if len(c) == 3 else f"windows {c[2 + nd :]}"
        raise ShapeError(f"col2im: data has {got}; an image of {size} has {prod(out)} windows {out}")
    return shape, k, out


def _col2im_1d(at: dict) -> dict | None:
    """col2im's attributes for a 1-D image (``output_size`` of one value: (N, C, W)) lifted to
    the 2-D image (N, C, 1, W), or None for a 2-D or 3-D one."""
    size = at["output_size"]
    if len(size) != 1:
        return None
    if len(at["kernel"]) != 1:
        raise InvalidInput(f"col2im: a 1-D output_size {tuple(size)} needs a 1-D kernel, got {tuple(at['kernel'])}")
    return {**_lifted("col2im", at), "output_size": (1, size[0])}


def _col2im_infer(at: dict, c: Spec) -> Spec:
    lifted = _col2im_1d(at)
    if lifted is None:
        return Spec(_col2im_shape(at, c.shape)[0], c.dtype)
    shape = _as_1d("col2im", c.shape, _col2im_shape, lifted, c.shape)[0]
    return Spec(_down(shape), c.dtype)


def _col2im(cx, at, c):
    """MXNet's col2im: (N, C*kh*kw, L) columns (im2col's) summed back into the (N, C, H, W)
    image of ``output_size`` (H, W) they came from, each value where its window took it (a 1-D
    ``output_size`` (W,): the (N, C, W) image of (N, C*k, L) columns; a 3-D one (D, H, W): the
    (N, C, D, H, W) image of (N, C*kd*kh*kw, L) columns). Also takes the windows as
    (N, C, kh, kw, OH, OW) (3-D: (N, C, kd, kh, kw, OD, OH, OW)), which Pooling's gradient
    hands over as a broadcast view (as columns, it would be a copy)."""
    lifted = _col2im_1d(at)
    shape, k, out = _col2im_shape(lifted or at, c.shape)
    image = _summed_windows(cx, lifted or at, c.reshape(shape[:2] + k + out), shape)
    return image if lifted is None else image.reshape(_down(shape))


def _padded_bytes(name: str, at: dict, shape: tuple[int, ...], dtype: str) -> int:
    """The bytes of data of ``shape`` padded by ``at``'s pad (0 without padding: no copy)."""
    _, _, p, _ = _window(name, at, shape)
    if not any(p):
        return 0
    return prod(shape[:2]) * prod(tuple(n + 2 * q for n, q in zip(shape[2:], p))) * np.dtype(dtype).itemsize


def _col2im_image(at: dict, c: Spec) -> tuple[dict, tuple[int, ...]]:
    """col2im's attributes and image shape (1-D images lifted to 2-D)."""
    lifted = _col2im_1d(at) or at
    return lifted, _col2im_shape(lifted, c.shape)[0]


def _col2im_padded(at: dict, c: Spec) -> int:
    """The padded image col2im sums into (the crop it gives is a copy: the output)."""
    lifted, shape = _col2im_image(at, c)
    return _padded_bytes("col2im", lifted, shape, c.dtype)


_im2col_padded = _one_d("im2col", ("data",), squeeze=False)(
    lambda at, x: _padded_bytes("im2col", at, x.shape, x.dtype)  # (the padded copy the windows view)
)


defop(
    "im2col",
    ("data",),
    (*IM2COL, Attr("pad_value", "float", 0.0)),
    infer=_one_d("im2col", ("data",), squeeze=False)(_im2col_infer),
    vjp=lambda F, at, g, y, x: (F.col2im(g, output_size=tuple(x.shape[2:]), **_win(at)),),
    scratch=_im2col_padded,
    vjp_scratch=_im2col_padded,  # (col2im's padded image is the data's padded)
)(_im2col)
defop(
    "col2im",
    ("data",),
    (Attr("output_size", "shape", REQUIRED), *IM2COL),
    infer=_col2im_infer,
    vjp=lambda F, at, g, y, c: (F.reshape(F.im2col(g, **_win(at)), shape=tuple(c.shape)),),
    scratch=_col2im_padded,
    vjp_scratch=_col2im_padded,  # (im2col pads the image as col2im does)
)(_col2im)


_KERNEL, _STRIDE, _PAD = WINDOW  # (the window attributes, placed in each op's order)
CONV = (  # (in MXNet's order: its nd.Convolution takes them by position too)
    _KERNEL,
    _STRIDE,
    Attr("dilate", "shape", ()),
    _PAD,
    Attr("num_filter", "int", REQUIRED),
    Attr("num_group", "int", 1),
    Attr("workspace", "int", 1024),
    Attr("no_bias", "bool", False),
    Attr("cudnn_tune", "str", None),
    Attr("cudnn_off", "bool", False),
    Attr("layout", "str", None),
)


CUDNN_TUNE = (None, "off", "limited_workspace", "fastest")


def _conv_common(name: str, at: dict, shape: tuple[int, ...]) -> int:
    """The checks Convolution and Deconvolution of data of ``shape`` share; their group count."""
    layout = _LAYOUTS.get(len(shape) - 2, "NCHW")
    if at["layout"] not in (None, layout):
        raise InvalidInput(f"{name}: only the {layout} layout is supported")
    if at["cudnn_tune"] not in CUDNN_TUNE:  # (MXNet's choices; it tunes nothing on a CPU)
        tune = at["cudnn_tune"]
        raise InvalidInput(f"{name}: cudnn_tune must be off, limited_workspace, fastest or None, got {tune!r}")
    grp = at["num_group"]
    if grp < 1 or at["num_filter"] < 1:
        raise InvalidInput(f"{name}: num_filter and num_group must be positive")
    return grp


def _grouped(name: str, what: str, n: int, grp: int) -> int:
    """``n`` channels split into ``grp`` groups: the size of each."""
    if n % grp:
        raise ShapeError(f"{name}: {what} ({n}) must be a multiple of num_group ({grp})")
    return n // grp


def _conv_infer(at: dict, x: Spec, w: Spec, *b: Spec) -> Spec:
    floating("Convolution", x)
    dt = same_dtype("Convolution", x, w, *b)
    grp = _conv_common("Convolution", at, x.shape)
    k, _, _, out = _window("Convolution", at, x.shape)
    f = at["num_filter"]
    want = (f, _grouped("Convolution", "the data's channels", x.shape[1], grp)) + k
    _grouped("Convolution", "num_filter", f, grp)
    if w.shape != want:
        raise ShapeError(f"Convolution: weight shape {w.shape} should be {want}")
    if len(b) != (0 if at["no_bias"] else 1) or (b and b[0].shape != (f,)):
        raise ShapeError(f"Convolution: bias must be of shape {(f,)} unless no_bias is true")
    return Spec((x.shape[0], f) + out, dt)


# A convolution of (N, C, H, W) data with (F, C/G, kh, kw) filters in G groups is, per group, a
# product of the filters (F/G, C/G*kh*kw) with the windows (C/G*kh*kw, N*OH*OW) (3-D data:
# kd*kh*kw taps, OD*OH*OW windows an image); the three helpers below are its forward and its
# two gradients, written with the table's ops (one ``dot`` when G is 1, a ``batch_dot`` over
# the groups otherwise). Deconvolution is the same three products in other roles: its forward
# is a convolution's data gradient.


def _shaped(F: Any, a: Any, shape: tuple[int, ...]) -> Any:
    """``a`` reshaped to ``shape``, which may hold a 0 (an empty batch): the table's reshape
    reads 0 as MXNet's "this axis as it is", so an empty result is made, not reshaped."""
    if 0 in shape:
        return F.zeros(shape=shape, dtype=a.dtype.name)
    return F.reshape(a, shape=shape)


def _as_groups(F: Any, a: Any, shape: tuple[int, ...], grp: int) -> Any:
    return _shaped(F, a, shape if grp == 1 else (grp, shape[0] // grp, shape[1]))


def _gdot(F: Any, grp: int, a: Any, b: Any, **tr: bool) -> Any:
    return F.dot(a, b, **tr) if grp == 1 else F.batch_dot(a, b, **tr)


def _conv_fwd(F: Any, x: Any, w: Any, win: dict, grp: int) -> Any:
    """The (N, F, OH, OW) (3-D: (N, F, OD, OH, OW)) convolution of ``x`` with ``w``, no bias."""
    n, c = int(x.shape[0]), int(x.shape[1])
    f = int(w.shape[0])
    k, _, _, out = _window("Convolution", win, tuple(x.shape))
    ckk, cols_n = c * prod(k), n * prod(out)
    cols = _shaped(F, F.transpose(F.im2col(x, **win), axes=(1, 0, 2)), (ckk, cols_n))
    y = _gdot(F, grp, _as_groups(F, w, (f, ckk // grp), grp), _as_groups(F, cols, (ckk, cols_n), grp))
    return F.transpose(_shaped(F, y, (f, n) + out), axes=_swap_n_c(len(out)))


def _conv_data_grad(F: Any, g: Any, w: Any, shape: tuple[int, ...], win: dict, grp: int) -> Any:
    """The gradient, of shape ``shape``, of a convolution's data given ``g`` (its output's)."""
    n, c = shape[0], shape[1]
    f = int(w.shape[0])
    k, _, _, out = _window("Convolution", win, shape)
    ckk, cols_n = c * prod(k), n * prod(out)
    g2 = _as_groups(F, F.transpose(g, axes=_swap_n_c(len(out))), (f, cols_n), grp)
    w2 = _as_groups(F, w, (f, ckk // grp), grp)
    dcols = _shaped(F, _gdot(F, grp, w2, g2, transpose_a=True), (ckk, n, prod(out)))
    return F.col2im(F.transpose(dcols, axes=(1, 0, 2)), output_size=shape[2:], **win)


def _conv_weight_grad(F: Any, g: Any, x: Any, wshape: tuple[int, ...], win: dict, grp: int) -> Any:
    """The gradient of a convolution's filters (of shape ``wshape``) given ``g``, its output's."""
    n, c = int(x.shape[0]), int(x.shape[1])
    f = wshape[0]
    k, _, _, out = _window("Convolution", win, tuple(x.shape))
    ckk, cols_n = c * prod(k), n * prod(out)
    g2 = _as_groups(F, F.transpose(g, axes=_swap_n_c(len(out))), (f, cols_n), grp)
    cols = _shaped(F, F.transpose(F.im2col(x, **win), axes=(1, 0, 2)), (ckk, cols_n))
    return F.reshape(_gdot(F, grp, g2, _as_groups(F, cols, (ckk, cols_n), grp), transpose_b=True), shape=wshape)


def _conv_vjp(F, at, g, y, x, w, *b):
    win, grp = _win(at), at["num_group"]
    # lazy: the first layer's data needs no gradient
    return (
        lambda: _conv_data_grad(F, g, w, tuple(x.shape), win, grp),
        lambda: _conv_weight_grad(F, g, x, tuple(w.shape), win, grp),
    ) + ((F.sum(g, axis=(0, *_spatial_axes(len(x.shape) - 2))),) if b else ())


def _windows_bytes(win: dict, x: Spec) -> int:
    """The bytes of the windows im2col makes of ``x`` (a padded copy first when padded)."""
    k, _, p, out = _window("im2col", win, x.shape)
    size = np.dtype(x.dtype).itemsize
    padded = x.shape[0] * x.shape[1] * prod(tuple(n + 2 * q for n, q in zip(x.shape[2:], p))) if any(p) else 0
    return (x.shape[0] * x.shape[1] * prod(k) * prod(out) + padded) * size


def _conv_windows(at: dict, x: Spec, w: Spec, *b: Spec) -> int:
    """Convolution's working arrays: the windows, then their matrix (a copy)."""
    return 2 * _windows_bytes(_win(at), x)


def _conv_work(at: dict, x: Spec, w: Spec, *b: Spec) -> int:
    k, _, _, out = _window("Convolution", at, x.shape)
    return x.shape[0] * at["num_filter"] * prod(out) * x.shape[1] * prod(k) // max(at["num_group"], 1)


def _grouped_dot(xp: Any, w: Any, cols2: Any, grp: int) -> Any:
    """(F, K) filters times (G*K, L) windows, group by group: (F, L)."""
    if grp == 1:
        return matrix_product(w, cols2)
    gw: Any = w.reshape(grp, w.shape[0] // grp, -1)
    gc: Any = cols2.reshape(grp, cols2.shape[0] // grp, -1)
    return xp.matmul(gw, gc).reshape(w.shape[0], -1)


_CONV_1D = ("data", "weight")


@_defop_1d(
    "Convolution",
    ("data", "weight", "*bias"),
    CONV,
    _CONV_1D,
    most=3,
    infer=_conv_infer,
    vjp=_conv_vjp,
    scratch=_conv_windows,
    vjp_scratch=_conv_windows,  # (measured: 1.1 to 1.2 x the windows)
    work=_conv_work,
)
def _convolution(cx, at, x, w, *b):
    """2-D cross-correlation of (N, C, H, W) data with (F, C/num_group, kh, kw) filters
    (their taps ``dilate`` apart), plus bias; with ``num_group`` G, the channels and the
    filters split into G groups, each group of filters seeing its group of channels. 1-D
    data (N, C, W) takes (F, C/num_group, k) filters, 3-D data (N, C, D, H, W) takes
    (F, C/num_group, kd, kh, kw) ones."""
    n, c = x.shape[:2]
    f = at["num_filter"]
    k, _, _, out = _window("Convolution", at, x.shape)
    nd = len(k)
    cols = _windows(cx, {**_win(at), "pad_value": 0.0}, x)  # (N, C, *taps, *out)
    cols2 = cols.transpose((1, *range(2, 2 + nd), 0, *range(2 + nd, 2 + 2 * nd))).reshape(c * prod(k), -1)
    y = _grouped_dot(cx.xp, w.reshape(f, -1), cols2, at["num_group"]).reshape((f, n) + out).transpose(_swap_n_c(nd))
    if b:
        y = y + b[0].reshape((1, f) + (1,) * nd)
    return cx.xp.ascontiguousarray(y)


DECONV = (  # (in MXNet's order)
    _KERNEL,
    _STRIDE,
    Attr("dilate", "shape", ()),
    _PAD,
    Attr("adj", "shape", ()),
    Attr("target_shape", "shape", ()),
    Attr("num_filter", "int", REQUIRED),
    Attr("num_group", "int", 1),
    Attr("workspace", "int", 512),
    Attr("no_bias", "bool", True),
    Attr("cudnn_tune", "str", None),
    Attr("cudnn_off", "bool", False),
    Attr("layout", "str", None),
)


def _deconv_geometry(at: dict, shape: tuple[int, ...]) -> tuple[dict, Axes]:
    """The window of the convolution whose data gradient a Deconvolution of (N, C, H, W)
    data is (its pad: ``target_shape``'s when given, as MXNet's), and the output's (OH, OW):
    (H - 1) * stride - 2 * pad + the kernel's span ((kernel - 1) * dilate + 1) + adj; the
    same per axis for (N, C, D, H, W) data, which takes no ``dilate`` (as MXNet's)."""
    name = "Deconvolution"
    nd = _spatial(name, shape)
    k = _axes(at["kernel"], 1, name, "kernel", nd)
    s = _axes(at["stride"], 1, name, "stride", nd)
    p = _axes(at["pad"], 0, name, "pad", nd)
    a = _axes(at["adj"], 0, name, "adj", nd)
    d = _dilation(name, at.get("dilate") or (), nd)
    if min(k) < 1 or min(s) < 1 or min(p) < 0 or min(a) < 0:
        raise InvalidInput(f"{name}: kernel and stride must be positive, pad and adj not negative")
    if nd == 3 and max(d) > 1:
        raise InvalidInput(f"{name}: dilate {d} is not supported for 3-D data (MXNet's 3-D deconvolution has none)")
    e = _spanned(k, d)
    full = tuple((n - 1) * t + m for n, t, m in zip(shape[2:], s, e))
    if any(at["target_shape"]):  # (MXNet's (0, 0) is not set)
        t = _axes(at["target_shape"], 0, name, "target_shape", nd)
        if any(n > m for n, m in zip(t, full)):
            raise ShapeError(f"{name}: target_shape {t} is larger than the largest output {full}")
        a = tuple((m - n) % 2 for n, m in zip(t, full))
        p = tuple((m - n + 1) // 2 for n, m in zip(t, full))
    if any(n >= m for n, m in zip(a, s)):
        raise InvalidInput(f"{name}: adj {a} must be smaller than stride {s}")
    out = tuple(m - 2 * q + n for m, q, n in zip(full, p, a))
    if min(out) < 1:
        raise ShapeError(f"{name}: pad {p} leaves an empty output {out} for data of shape {shape}")
    return {"kernel": k, "stride": s, "dilate": d, "pad": p}, out


def _deconv_infer(at: dict, x: Spec, w: Spec, *b: Spec) -> Spec:
    floating("Deconvolution", x)
    dt = same_dtype("Deconvolution", x, w, *b)
    grp = _conv_common("Deconvolution", at, x.shape)
    win, out = _deconv_geometry(at, x.shape)
    f = at["num_filter"]
    _grouped("Deconvolution", "the data's channels", x.shape[1], grp)
    want = (x.shape[1], _grouped("Deconvolution", "num_filter", f, grp)) + win["kernel"]
    if w.shape != want:
        raise ShapeError(f"Deconvolution: weight shape {w.shape} should be {want}")
    if len(b) != (0 if at["no_bias"] else 1) or (b and b[0].shape != (f,)):
        raise ShapeError(f"Deconvolution: bias must be of shape {(f,)} when no_bias is false, none otherwise")
    return Spec((x.shape[0], f) + out, dt)


def _deconv_vjp(F, at, g, y, x, w, *b):
    win, _ = _deconv_geometry(at, tuple(x.shape))
    grp = at["num_group"]
    # y is the data gradient of the convolution of y-shaped data with w that gives x's shape:
    # its gradients are that convolution of g, and that convolution's filter gradient
    return (
        lambda: _conv_fwd(F, g, w, win, grp),
        lambda: _conv_weight_grad(F, x, g, tuple(w.shape), win, grp),
    ) + ((F.sum(g, axis=(0, *_spatial_axes(len(x.shape) - 2))),) if b else ())


def _deconv_windows(at: dict, x: Spec, w: Spec, *b: Spec) -> int:
    """Deconvolution's working arrays: the windows of its output (twice: the product, then
    their transposed copy) and the padded output col2im sums them into."""
    win, out = _deconv_geometry(at, x.shape)
    n, f = x.shape[0], at["num_filter"]
    k, p = win["kernel"], win["pad"]
    cols = n * f * prod(k) * prod(x.shape[2:])
    return (2 * cols + n * f * prod(tuple(o + 2 * q for o, q in zip(out, p)))) * np.dtype(x.dtype).itemsize


def _deconv_work(at: dict, x: Spec, w: Spec, *b: Spec) -> int:
    k = _axes(at["kernel"], 1, "Deconvolution", "kernel", len(x.shape) - 2)
    return prod(x.shape) * at["num_filter"] * prod(k) // max(at["num_group"], 1)


@_defop_1d(
    "Deconvolution",
    ("data", "weight", "*bias"),
    DECONV,
    _CONV_1D,
    most=3,
    infer=_deconv_infer,
    vjp=_deconv_vjp,
    scratch=_deconv_windows,
    vjp_scratch=_deconv_windows,  # the windows of g, and a product as large as x's
    work=_deconv_work,
)
def _deconvolution(cx, at, x, w, *b):
    """2-D transposed convolution of (N, C, H, W) data with (C, num_filter/num_group, kh, kw)
    filters, plus bias (none unless ``no_bias`` is false): the gradient of a Convolution with
    respect to its data, of shape (N, num_filter, (H-1)*stride - 2*pad + (kernel-1)*dilate + 1
    + adj, ...);
    with ``target_shape``, the pad and adj that give it (``pad`` and ``adj`` ignored). 1-D data
    (N, C, W) takes (C, num_filter/num_group, k) filters, 3-D data (N, C, D, H, W) takes
    (C, num_filter/num_group, kd, kh, kw) ones."""
    win, out = _deconv_geometry(at, x.shape)
    y = _conv_data_grad(Eager(cx), x, w, (x.shape[0], at["num_filter"]) + out, win, at["num_group"])
    if b:
        y = y + b[0].reshape((1, -1) + (1,) * len(out))
    return cx.xp.ascontiguousarray(y)


POOL = (  # (in MXNet's order)
    Attr("kernel", "shape", ()),
    Attr("pool_type", "str", "max"),
    Attr("global_pool", "bool", False),
    Attr("cudnn_off", "bool", False),
    Attr("pooling_convention", "str", "valid"),
    _STRIDE,
    _PAD,
    Attr("p_value", "int", None),
    Attr("count_include_pad", "bool", True),
    Attr("layout", "str", None),
)
LP_POWERS = (1, 2, 3)
"""The ``p_value`` of an ``lp`` pooling MXNet computes: (sum of x ** p) ** (1 / p) a window,
with x ** p and its root signed for odd p (p=1 is the sum, p=3 a cube root)."""


def _pool_window(at: dict, shape: tuple[int, ...]) -> dict:
    nd = _spatial("Pooling", shape)
    if at["pool_type"] not in ("max", "avg", "sum", "lp"):
        raise InvalidInput(f"Pooling: pool_type must be max, avg, sum or lp, got {at['pool_type']!r}")
    if at["pool_type"] == "lp" and at["p_value"] not in LP_POWERS:
        raise InvalidInput(f"Pooling: lp pooling needs p_value 1, 2 or 3, got {at['p_value']!r}")
    if at["pooling_convention"] not in ("valid", "full"):
        raise InvalidInput(
            f"Pooling: pooling_convention must be 'valid' or 'full', got {at['pooling_convention']!r} "
            "('same' is not supported)"
        )
    if at["layout"] not in (None, _LAYOUTS[nd]):
        raise InvalidInput(f"Pooling: only the {_LAYOUTS[nd]} layout is supported")
    if at["global_pool"]:
        return {"kernel": shape[2:], "stride": (1,) * nd, "pad": (0,) * nd}
    if not at["kernel"]:
        raise InvalidInput("Pooling: kernel is required unless global_pool is true")
    return {"kernel": at["kernel"], "stride": at["stride"], "pad": at["pad"]}  # stride: 1 unless given, as MXNet


def _full_extra(at: dict, win: dict, shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """Pooling's ``full`` convention (MXNet's ceil): the padding past each spatial axis's end
    that makes its valid pooling give 1 + ceil((n + 2 pad - kernel) / stride) windows; None
    for the valid convention (and a global pooling, the same in both)."""
    if at["pooling_convention"] != "full" or at["global_pool"]:
        return None
    nd = len(shape) - 2
    k = _axes(win["kernel"], 1, "Pooling", "kernel", nd)
    s = _axes(win["stride"], 1, "Pooling", "stride", nd)
    p = _axes(win["pad"], 0, "Pooling", "pad", nd)
    extra = []
    for n, kk, ss, pp in zip(shape[2:], k, s, p):
        span = n + 2 * pp - kk
        if span < 0 or ss < 1:  # (refused by the valid geometry, in its words)
            return None
        extra.append(-span % ss)  # (1 + ceil(span / s) windows: the last one's end past the padded data)
    return tuple(extra) if any(extra) else None  # (none: the valid convention's windows)


def _pool_shape(at: dict, win: dict, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of the data the valid pooling runs on: ``full``'s extra padding included."""
    extra = _full_extra(at, win, shape)
    return shape if extra is None else shape[:2] + tuple(n + e for n, e in zip(shape[2:], extra))


def _divisors(at: dict, win: dict, shape: tuple[int, ...]) -> np.ndarray:
    """The divisors of an average pooling of data of ``shape`` (MXNet's), each (OH, OW) (3-D:
    (OD, OH, OW)) window's: its elements up to the padded data's end (a ``full`` window past
    it is cut there), or, without ``count_include_pad``, inside the data (at least 1: a window
    of padding alone averages to 0)."""
    k, s, p, out = _window("Pooling", win, _pool_shape(at, win, shape))
    counts = np.ones((), dtype=np.int64)
    for d in range(len(k)):  # (the product of the counts along each axis)
        start = np.arange(out[d]) * s[d] - p[d]
        n = shape[2 + d]
        if at["count_include_pad"]:
            c = np.minimum(start + k[d], n + p[d]) - start
        else:
            c = np.minimum(start + k[d], n) - np.maximum(start, 0)
        counts = np.multiply.outer(counts, c)
    return np.maximum(counts, 1)


def _counts_pad(at: dict, win: dict) -> bool:
    """Whether an average pooling divides by the elements of each window inside the data
    (``count_include_pad`` false with padding) rather than by the kernel's size."""
    return at["pool_type"] == "avg" and not at["count_include_pad"] and any(win["pad"])


def _pad_within_kernel(at: dict, win: dict, dtype: Any, nd: int) -> None:
    """MXNet's float32 max and average pooling (its MKL-DNN kernels) refuse a pad as wide as the
    kernel on an axis ("Check failed: pad_l[0] < kernel[0]"), where a window could be all
    padding; its float16 and float64 ones, and sum pooling, take it (such a window gives the
    least value or 0)."""
    if dtype != "float32" or at["pool_type"] in ("sum", "lp") or at["global_pool"]:
        return
    k = _axes(win["kernel"], 1, "Pooling", "kernel", nd)
    p = _axes(win["pad"], 0, "Pooling", "pad", nd)
    for d in range(nd):
        if p[d] >= k[d]:
            raise InvalidInput(
                f"Pooling: pad {p} must be less than the kernel {k} on each axis for {at['pool_type']} "
                f"pooling of float32 data (MXNet's check pad_l[{d}] < kernel[{d}], {p[d]} vs. {k[d]})"
            )


def _pool_infer(at: dict, x: Spec) -> Spec:
    floating("Pooling", x)
    win = _pool_window(at, x.shape)
    _, _, _, out = _window("Pooling", win, _pool_shape(at, win, x.shape))
    _pad_within_kernel(at, win, x.dtype, len(out))
    return Spec(x.shape[:2] + out, x.dtype)


def _has_nan(x: Any) -> bool:
    """Whether float array ``x`` holds a NaN (its min is NaN where any is: one pass, no mask)."""
    return x.dtype.kind == "f" and x.size > 0 and bool(np.isnan(x.min()))


def _nan_as_least(xp, x):
    """``x`` with its NaNs as -inf: MXNet's max pooling passes over them (its comparisons with
    NaN are false), where numpy's max returns NaN. ``x`` itself when it has none."""
    return xp.where(xp.isnan(x), x.dtype.type(-np.inf), x) if _has_nan(x) else x


def _pool_windows(at: dict, x: Spec) -> int:
    """The bytes of Pooling's windows (its forward's working array); with the ``full``
    convention, the data with its extra padding too (in float32 for a float16 average)."""
    win = _pool_window(at, x.shape)
    shape = _pool_shape(at, win, x.shape)
    lp = at["pool_type"] == "lp"
    wide = "float32" if at["pool_type"] in ("avg", "lp") and x.dtype == "float16" else x.dtype
    powers = 2 * Spec(x.shape, wide).nbytes if lp else 0  # (x ** p, and its float32 copy)
    if shape == x.shape:
        return _windows_bytes(win, Spec(x.shape, wide)) + powers
    bigger = Spec(shape, wide)
    return _windows_bytes(win, bigger) + 2 * bigger.nbytes + powers


def _pool_vjp_windows(at: dict, x: Spec) -> int:
    """How many window-sized arrays Pooling's VJP holds at once (measured: max and avg 2.1,
    sum 1.2; a float16 max over windows of more than 2048 finds its maxima in float32)."""
    if at["pool_type"] == "sum":
        return 1
    if at["pool_type"] == "max" and x.dtype == "float16":
        k, _, _, _ = _window("Pooling", _pool_window(at, x.shape), x.shape)
        return 4 if prod(k) > 2048 else 2
    return 2


def _pool_full_vjp(F, at, win, g, y, x):
    """The ``full`` convention's VJP: the valid pooling's of the data with its extra padding
    (made of the table's ops, so it is differentiable again), cut back to the data."""
    shape = tuple(int(d) for d in x.shape)
    extra = _full_extra(at, win, shape)
    assert extra is not None
    fill = float("-inf") if at["pool_type"] == "max" else 0.0
    xe = x
    for d, e in enumerate(extra):
        if e:
            edge = tuple(xe.shape[: 2 + d]) + (e,) + tuple(xe.shape[3 + d :])
            xe = F.concat(xe, np.full(edge, fill, dtype=x.dtype), dim=2 + d)
    valid = {**at, "pooling_convention": "valid"}
    if at["pool_type"] == "avg":
        valid["pool_type"] = "sum"
        counts = _divisors(at, win, shape)
        g = F.div(g, counts.reshape((1, 1) + counts.shape).astype(g.dtype))
    (gx,) = _pool_vjp(F, valid, g, y, xe)
    for d, e in enumerate(extra):
        if e:
            gx = F.slice_axis(gx, axis=2 + d, begin=0, end=shape[2 + d])
    return (gx,)


def _pool_lp_vjp(F, at, g, y, x):
    """``lp``'s: the sum pooling's VJP of g / y ** (p - 1), times x ** (p - 1) (a window of
    zeros, y = 0, gives 0, as MXNet's)."""
    p = at["p_value"]
    summed = {**at, "pool_type": "sum"}
    if x.dtype == np.float16 and p > 1:  # (as the forward: in float32, rounded once; y ** 2 and x ** 2 overflow)
        (gx,) = _pool_lp_vjp(F, at, *(F.astype(a, dtype="float32") for a in (g, y, x)))
        return (F.astype(gx, dtype="float16"),)
    if p > 1:
        power = y if p == 2 else F.square(y)
        zero = F.equal(power, F.zeros_like(power))
        g = F.where(zero, F.zeros_like(g), F.div(g, F.where(zero, F.ones_like(power), power)))
    (gx,) = _pool_vjp(F, summed, g, y, x)
    return (gx if p == 1 else F.mul(gx, x if p == 2 else F.square(x)),)


def _pool_vjp(F, at, g, y, x):
    win = _pool_window(at, tuple(x.shape))
    if _full_extra(at, win, tuple(int(d) for d in x.shape)) is not None:
        return _pool_full_vjp(F, at, win, g, y, x)
    if at["pool_type"] == "lp":
        return _pool_lp_vjp(F, at, g, y, x)
    k, _, _, out = _window("Pooling", win, tuple(x.shape))
    n, c = int(x.shape[0]), int(x.shape[1])
    nd, size = len(k), prod(k)
    colshape = (n, c) + k + out
    flat = (n, c * size, prod(out))  # (im2col's and col2im's columns)
    if at["pool_type"] == "max":
        # to the first maximum of each window (row by row), as MXNet's: equal maxima do not
        # each take the gradient. (At most two window-sized arrays at once: the windows go
        # once their maxima are found.)
        if _has_nan(getattr(x, "value", x)):  # the forward's maxima passed over NaNs (a Traced input: its array)
            x = F.where(F.equal(x, x), x, F.mul_scalar(F.ones_like(x), scalar=float("-inf")))
        cols = F.reshape(F.im2col(x, pad_value=float("-inf"), **win), shape=(n, c, size) + out)
        # argmax gives indices in the data's dtype: float16 holds them exactly only to 2048
        at_index = "float32" if x.dtype.name == "float16" and size > 2048 else x.dtype.name
        if at_index != x.dtype.name:
            cols = F.astype(cols, dtype=at_index)
        first = F.reshape(F.argmax(cols, axis=2), shape=(n, c, 1) + out)
        del cols
        place = F.reshape(F.arange(start=0.0, stop=float(size), dtype=at_index), shape=(1, 1, size) + (1,) * nd)
        mask = F.equal(place, first)
        if at_index != x.dtype.name:
            mask = F.astype(mask, dtype=x.dtype.name)
        gb = F.mul(F.reshape(g, shape=(n, c, 1) + out), mask)
        return (F.col2im(F.reshape(gb, shape=flat), output_size=tuple(x.shape[2:]), **win),)
    if _counts_pad(at, win):
        # the divisors are a constant of the shapes: a sum pooling of ones
        ones = F.ones(shape=(1, 1) + tuple(int(d) for d in x.shape[2:]), dtype=x.dtype.name)
        g = F.div(g, F.maximum_scalar(F.Pooling(ones, pool_type="sum", **win), scalar=1.0))
    gb = F.broadcast_to(F.reshape(g, shape=(n, c) + (1,) * nd + out), shape=colshape)
    if at["pool_type"] == "avg" and not _counts_pad(at, win):
        gb = F.div_scalar(gb, scalar=float(size))
    return (F.col2im(gb, output_size=tuple(x.shape[2:]), **win),)  # (windows: gb is a broadcast)


@_defop_1d(
    "Pooling",
    ("data",),
    POOL,
    ("data",),
    channels_last=True,
    infer=_pool_infer,
    vjp=_pool_vjp,
    scratch=_pool_windows,
    vjp_scratch=lambda at, x: _pool_vjp_windows(at, x) * _pool_windows(at, x),
)
def _pooling(cx, at, x):
    """2-D max, average or sum pooling of (N, C, H, W) data, 1-D of (N, C, W) or 3-D of
    (N, C, D, H, W) (stride defaults to 1, as in MXNet). ``pooling_convention``: ``valid``,
    windows inside the padded data (floor((n + 2 pad - kernel) / stride) + 1 of them), or
    ``full``, one more where a window past the padded data's end would hold some of it
    (ceil): it is cut there (an average divides by what is left)."""
    return _pool_run(cx, at, x)


def _pool_run(cx, at, x):
    """``_pooling`` of (N, C, H, W) or (N, C, D, H, W) data."""
    win = _pool_window(at, x.shape)
    _pad_within_kernel(at, win, x.dtype.name, x.ndim - 2)
    extra = _full_extra(at, win, x.shape)
    if extra is not None:
        return _pool_full(cx, at, win, extra, x)
    kind = at["pool_type"]
    if kind == "lp":
        return _pool_lp(cx, at, x)
    if kind == "max":
        x = _nan_as_least(cx.xp, x)
    cols = _windows(cx, {**win, "pad_value": float("-inf") if kind == "max" else 0.0}, x)
    taps = _spatial_axes(x.ndim - 2)  # (the windows' (kh, kw) axes, or (kd, kh, kw))
    if kind == "max":
        r = cols.max(axis=taps)
        # MXNet's max starts from the least finite value: a window of -inf (or NaN) gives it
        return cx.xp.maximum(r, cx.xp.finfo(r.dtype).min, out=r)
    # float16 windows added (and averaged) in float32 and rounded once, as MXNet's
    r = cols.sum(axis=taps, dtype=np.float32 if cols.dtype == np.float16 else cols.dtype)
    if _counts_pad(at, win):  # (in place: a second output-sized array is not in the declared scratch)
        r /= _divisors(at, win, x.shape).astype(r.dtype)
    elif kind == "avg":
        r /= r.dtype.type(prod(cols.shape[2 : 2 + len(taps)]))
    return r.astype(x.dtype, copy=False)


def _pool_lp(cx, at, x):
    """``lp`` pooling: the sum pooling of x ** p, then its p-th root (signed for odd p;
    float16 in float32, rounded once)."""
    p = at["p_value"]
    wide = x.astype(np.float32) if x.dtype == np.float16 else x
    r = _pool_run(cx, {**at, "pool_type": "sum"}, wide if p == 1 else wide**p)
    if p == 2:
        r = np.sqrt(r, out=r)
    elif p == 3:
        r = np.cbrt(r, out=r)
    return r.astype(x.dtype, copy=False)


def _pool_full(cx, at, win, extra, x):
    """The ``full`` convention: the valid pooling of the data with ``extra`` padding past each
    axis's end (-inf for max, 0 for sum and average); an average is a sum divided by each
    window's count (float16 in float32, rounded once)."""
    kind = at["pool_type"]
    valid = {**at, "pooling_convention": "valid"}
    wide = kind == "avg" and x.dtype == np.float16
    widths = ((0, 0), (0, 0), *((0, e) for e in extra))
    xe = cx.xp.pad(x.astype(np.float32) if wide else x, widths, constant_values=-np.inf if kind == "max" else 0.0)
    if kind != "avg":
        return _pool_run(cx, valid, xe)
    r = _pool_run(cx, {**valid, "pool_type": "sum"}, xe)
    r /= _divisors(at, win, x.shape).astype(r.dtype)
    return r.astype(x.dtype, copy=False)


# --------------------------------------------------------------------------
# padding (MXNet's Pad: 4-D and 5-D data, the last two or three axes)

PAD = (Attr("mode", "str", REQUIRED), Attr("pad_width", "shape", REQUIRED), Attr("constant_value", "float", 0.0))
PAD_MODES = ("constant", "edge", "reflect")


def _pad_pairs(name: str, at: dict, shape: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """``pad_width`` (MXNet's flat before/after list) as one pair per axis of ``shape``, the
    unpadded one of the array Pad pads: checked as MXNet checks them, and none negative."""
    if at["mode"] not in PAD_MODES:
        raise InvalidInput(f"{name}: mode must be one of {', '.join(PAD_MODES)}, got {at['mode']!r}")
    if len(shape) not in (4, 5):
        raise ShapeError(f"{name}: only 4-D or 5-D data can be padded, got shape {shape}")
    pw = at["pad_width"]
    if len(pw) != 2 * len(shape):
        raise ShapeError(f"{name}: pad_width needs {2 * len(shape)} values (before and after each axis), got {len(pw)}")
    if any(pw[:4]):
        raise InvalidInput(f"{name}: padding on the first two axes must be zero, got pad_width {pw}")
    if min(pw) < 0:
        raise InvalidInput(f"{name}: pad_width must not be negative, got {pw}")
    pairs = tuple((pw[2 * d], pw[2 * d + 1]) for d in range(len(shape)))
    for n, (b, a) in zip(shape, pairs, strict=True):
        if at["mode"] == "reflect" and max(b, a) >= n:
            raise ShapeError(
                f"{name}: reflect padding must be smaller than the axis it pads, got {(b, a)} for length {n}"
            )
        if at["mode"] == "edge" and n == 0 and b + a:
            raise ShapeError(f"{name}: an empty axis has no edge to pad with")
    return pairs


def _pad_infer(at: dict, x: Spec) -> Spec:
    floating("Pad", x)
    pairs = _pad_pairs("Pad", at, x.shape)
    return Spec(tuple(n + b + a for n, (b, a) in zip(x.shape, pairs, strict=True)), x.dtype)


def _pad_vjp(F, at, g, y, x):
    return (F.pad_grad(g, mode=at["mode"], pad_width=at["pad_width"]),)


@defop(
    "Pad",
    ("data",),
    PAD,
    infer=_pad_infer,
    vjp=_pad_vjp,
    aliases=("pad",),
    vjp_scratch=lambda at, x: _pad_infer(at, x).nbytes,  # pad_grad's copies, axis by axis
)
def _pad(cx, at, x):
    """``data`` padded on its last two (4-D) or three (5-D) axes by ``pad_width``, MXNet's flat
    (before_1, after_1, ..., before_N, after_N) with zeros for the first two axes: with
    ``constant_value`` (mode 'constant'), the edge values ('edge') or their reflections about
    the edge ('reflect', numpy's: the edge not repeated; each pad shorter than its axis)."""
    pairs = _pad_pairs("Pad", at, x.shape)
    if at["mode"] == "constant":
        return cx.xp.pad(x, pairs, mode="constant", constant_values=at["constant_value"])
    return cx.xp.pad(x, pairs, mode=at["mode"])


def _unpadded(at: dict, shape: tuple[int, ...]) -> tuple[int, ...]:
    pw = at["pad_width"]
    if len(pw) != 2 * len(shape):
        raise ShapeError(f"pad_grad: pad_width needs {2 * len(shape)} values, got {len(pw)}")
    return tuple(n - pw[2 * d] - pw[2 * d + 1] for d, n in enumerate(shape))


def _pad_grad_infer(at: dict, g: Spec) -> Spec:
    shape = _unpadded(at, g.shape)
    if min(shape, default=0) < 0:
        raise ShapeError(f"pad_grad: pad_width {at['pad_width']} is wider than data of shape {g.shape}")
    _pad_pairs("pad_grad", at, shape)
    return Spec(shape, g.dtype)


@defop(
    "pad_grad",
    ("data",),
    PAD[:2],
    infer=_pad_grad_infer,
    scratch=lambda at, g: g.nbytes,  # its copies, axis by axis
    vjp=lambda F, at, gg, y, g: (F.Pad(gg, mode=at["mode"], pad_width=at["pad_width"]),),
)
def _pad_grad(cx, at, g):
    """Pad's gradient: the middle of ``data``, each padded element added to the element it
    copies (nothing of them in mode 'constant')."""
    pw = at["pad_width"]
    for d in range(2, g.ndim):  # axis by axis, as Pad's padding is one axis's after another's
        b, a = pw[2 * d], pw[2 * d + 1]
        if not b and not a:
            continue
        n = g.shape[d] - b - a
        g = cx.xp.moveaxis(g, d, 0)
        out = g[b : b + n].copy()
        if at["mode"] == "edge":
            out[0] += g[:b].sum(axis=0)
            out[n - 1] += g[b + n :].sum(axis=0)
        elif at["mode"] == "reflect":  # the before pad reflects 1..b, the after pad n-2..n-1-a
            out[1 : b + 1] += g[:b][::-1]
            out[n - 1 - a : n - 1] += g[b + n :][::-1]
        g = cx.xp.moveaxis(out, 0, d)
    return cx.xp.ascontiguousarray(g)


# --------------------------------------------------------------------------
# dropout and batch norm: they behave differently in training and prediction


def _dropout_infer(at: dict, x: Spec) -> Spec:
    floating("Dropout", x)
    if not 0 <= at["p"] < 1:
        raise InvalidInput(f"Dropout: p must be in [0, 1), got {at['p']}")
    if at["mode"] not in ("training", "always"):
        raise InvalidInput(f"Dropout: mode must be training or always, got {at['mode']!r}")
    return x


def _dropout_vjp(F, at, g, y, x):
    mask = at.get("_kept")
    return (g if mask is None else F.mul(g, mask),)


def _dropout_scratch(at: dict, x: Spec) -> int:
    """The draws of a mask, in float64, and their test (a mask's element a shared axis apart)."""
    shared = {a % len(x.shape) for a in at["axes"]} if x.shape else set()
    return 9 * prod(tuple(1 if i in shared else d for i, d in enumerate(x.shape)))


def _dropout_masks(at: dict, training: bool) -> bool:
    """Whether Dropout draws a mask (its node keeps it for the backward pass)."""
    return bool(at["p"]) and (training or at["mode"] == "always")


@defop(
    "Dropout",
    ("data",),
    (
        Attr("p", "float", 0.5),
        Attr("mode", "str", "training"),
        Attr("axes", "shape", ()),
        Attr("cudnn_off", "bool", False),
    ),
    infer=_dropout_infer,
    scratch=_dropout_scratch,
    vjp_scratch=_dropout_scratch,
    vjp=_dropout_vjp,
    random=True,
    keeps=_dropout_masks,
)
def _dropout(cx, at, x):
    """In training (or mode='always'): zero each element with probability p and
    scale the rest by 1/(1-p); otherwise x unchanged."""
    if not _dropout_masks(at, cx.training):
        at["_kept"] = None
        return x.copy()
    shared = {a % x.ndim for a in at["axes"]}  # axes along which one mask value is shared
    shape = tuple(1 if i in shared else d for i, d in enumerate(x.shape))
    mask = (cx.rng.random(shape) >= at["p"]).astype(x.dtype) / x.dtype.type(1 - at["p"])
    at["_kept"] = mask
    return x * mask


BN = (
    Attr("eps", "float", 1e-3),
    Attr("momentum", "float", 0.9),
    Attr("fix_gamma", "bool", True),
    Attr("use_global_stats", "bool", False),
    Attr("output_mean_var", "bool", False),
    Attr("axis", "int", 1),
    Attr("cudnn_off", "bool", False),
    # (MXNet's calibration range of a quantized graph: taken, as MXNet's float BatchNorm takes it, and not read)
    Attr("min_calib_range", "float", None),
    Attr("max_calib_range", "float", None),
)


def _bn_infer(at: dict, x: Spec, gamma: Spec, beta: Spec, mm: Spec, mv: Spec) -> Spec:
    floating("BatchNorm", x)
    pdt = same_dtype("BatchNorm", gamma, beta, mm, mv)
    if pdt != x.dtype and not (x.dtype == "float16" and pdt == "float32"):
        raise DTypeError(
            f"BatchNorm: gamma, beta and the moving statistics of {x.dtype} data must be {x.dtype}"
            + (" or float32" if x.dtype == "float16" else "")
            + f", got {pdt}"
        )
    dt = x.dtype
    ax = _axis_of("BatchNorm", at["axis"], len(x.shape))
    c = (x.shape[ax],)
    for name, s in (("gamma", gamma), ("beta", beta), ("moving_mean", mm), ("moving_var", mv)):
        if s.shape != c:
            raise ShapeError(f"BatchNorm: {name} shape {s.shape} should be {c}")
    if at["output_mean_var"]:
        raise InvalidInput(
            "BatchNorm: the op gives one output; output_mean_var is nd.BatchNorm's (its mean and "
            "1/sqrt(var + eps) made of the table's ops: moments, rsqrt)"
        )
    return Spec(x.shape, dt)


def _bn_axes(at: dict, ndim: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    ax = at["axis"] % ndim
    return tuple(i for i in range(ndim) if i != ax), tuple(-1 if i == ax else 1 for i in range(ndim))


def _update_moving(at: dict, mm: Any, mv: Any) -> None:
    """moving = momentum * moving + (1 - momentum) * the forward's batch statistic, in place."""
    mean, var = at["_stats"]
    for moving, batch in ((mm, mean), (mv, var)):
        moving = getattr(moving, "value", moving)  # (a recorded pass's Traced input: its array)
        m = moving.dtype.type(np.float32(at["momentum"]))  # (MXNet's momentum is a float32)
        moving *= m
        moving += (1 - m) * batch


def _bn_vjp(F, at, g, y, x, gamma, beta, mm, mv):
    """As MXNet's backward: in a training pass (and without use_global_stats) the gradient
    through the statistics too, of the batch's statistics when the forward was in training
    (and then the moving statistics are updated, once per backward pass through the op: MXNet
    updates them in its backward, not its forward, so a recorded forward alone leaves them as
    they were), of the moving ones the forward used when it was in prediction; in a pass in
    prediction mode, the moving statistics as constants. float16 data with float32
    parameters: computed in float32, as the forward is."""
    axes, bshape = _bn_axes(at, x.ndim)
    eps = at["eps"]
    data_dtype = x.dtype.name
    if gamma.dtype != x.dtype:
        x, g = F.astype(x, dtype=gamma.dtype.name), F.astype(g, dtype=gamma.dtype.name)
    gam = F.ones_like(gamma) if at["fix_gamma"] else gamma
    gam_b = F.reshape(gam, shape=bshape)
    dbeta = F.sum(g, axis=axes)
    if F.training and not at["use_global_stats"]:
        if at.get("_train"):
            _update_moving(at, mm, mv)
            gx, xhat = _normalized_vjp(F, g, x, gam_b, axes, eps)
        else:  # a forward in prediction: MXNet's training pass takes the moving statistics it used as the batch's
            xc = F.sub(x, F.reshape(mm, shape=bshape))
            inv = F.reshape(F.rsqrt(F.add_scalar(mv, scalar=eps)), shape=bshape)
            gx, xhat = _normalized_grad(F, g, xc, inv, gam_b, axes)
    else:
        inv = F.reshape(F.rsqrt(F.add_scalar(mv, scalar=eps)), shape=bshape)
        xhat = F.mul(F.sub(x, F.reshape(mm, shape=bshape)), inv)
        gx = F.mul(g, F.mul(gam_b, inv))
    dgamma = F.zeros_like(gamma) if at["fix_gamma"] else F.sum(F.mul(g, xhat), axis=axes)
    if gx.dtype.name != data_dtype:
        gx = F.astype(gx, dtype=data_dtype)
    return gx, dgamma, dbeta, None, None


@defop(
    "BatchNorm",
    ("data", "gamma", "beta", "moving_mean", "moving_var"),
    BN,
    infer=_bn_infer,
    vjp=_bn_vjp,
    writes_at=True,  # the batch's statistics, for the moving ones' update at the backward pass
    vjp_updates=lambda at: () if at["use_global_stats"] else (3, 4),  # moving_mean and moving_var
)
def _batch_norm(cx, at, x, gamma, beta, mm, mv):
    """Normalise over every axis but ``axis``: with the batch's statistics in
    training, with the moving ones in prediction or with use_global_stats. As in
    MXNet, moving_mean and moving_var are updated in place by the backward pass
    of a recorded training forward (``autograd.backward`` in training mode), not
    by the forward."""
    axes, bshape = _bn_axes(at, x.ndim)
    out_dtype = x.dtype
    if gamma.dtype != x.dtype:  # float16 data, float32 parameters (MXNet's mixed precision): in float32
        x = x.astype(gamma.dtype)
    t = x.dtype.type
    train = cx.training and not at["use_global_stats"]
    at["_train"] = train
    if train:
        mean = x.mean(axis=axes)
        var = x.var(axis=axes)
        at["_stats"] = (mean, var)  # for the moving statistics' update, at the backward pass
    else:
        mean, var = mm, mv
    g = cx.xp.ones_like(gamma) if at["fix_gamma"] else gamma
    inv = 1 / cx.xp.sqrt(var + t(at["eps"]))
    return ((x - mean.reshape(bshape)) * (inv * g).reshape(bshape) + beta.reshape(bshape)).astype(out_dtype)


def _in_infer(at: dict, x: Spec, gamma: Spec, beta: Spec) -> Spec:
    floating("InstanceNorm", x)
    same_dtype("InstanceNorm", x, gamma, beta)
    if len(x.shape) < 3:
        raise ShapeError(f"InstanceNorm: needs data (N, C, d1, ...), got {x.shape}")
    c = (x.shape[1],)
    if gamma.shape != c or beta.shape != c:
        raise ShapeError(f"InstanceNorm: gamma and beta must have shape {c}, got {gamma.shape} and {beta.shape}")
    return x


def _normalized_vjp(F, g, x, gamma_b, axes, eps):
    """The data's gradient of (x - mean) / sqrt(var + eps) * gamma over ``axes`` (LayerNorm's,
    InstanceNorm's, BatchNorm's in training), and the normalised x for gamma's."""
    xc = F.sub(x, F.mean(x, axis=axes, keepdims=True))
    inv = F.rsqrt(F.add_scalar(F.mean(F.square(xc), axis=axes, keepdims=True), scalar=eps))
    return _normalized_grad(F, g, xc, inv, gamma_b, axes)


def _normalized_grad(F, g, xc, inv, gamma_b, axes):
    """As ``_normalized_vjp``, given the centred data and 1 / the deviation (BatchNorm's in a
    training pass after a forward in prediction takes the moving statistics for them)."""
    xhat = F.mul(xc, inv)
    dxhat = F.mul(g, gamma_b)
    gx = F.mul(
        inv,
        F.sub(
            F.sub(dxhat, F.mean(dxhat, axis=axes, keepdims=True)),
            F.mul(xhat, F.mean(F.mul(dxhat, xhat), axis=axes, keepdims=True)),
        ),
    )
    return gx, xhat


def _normalized(xp, at, x, gamma, beta, axes, bshape):
    """(x - mean) / sqrt(var + eps) * gamma + beta over ``axes``; float16 in float32, rounded
    once (a float16 deviation past 256 squares past float16's range)."""
    dt = x.dtype
    if dt == np.float16:
        x, gamma, beta = (a.astype(np.float32) for a in (x, gamma, beta))
    xc = x - x.mean(axis=axes, keepdims=True)
    var = (xc * xc).mean(axis=axes, keepdims=True)
    y = xc / xp.sqrt(var + x.dtype.type(at["eps"])) * gamma.reshape(bshape) + beta.reshape(bshape)
    return y.astype(dt, copy=False)


def _float16_in_float32(vjp: Any) -> Any:
    """A normalisation's VJP, of float16 arrays computed in float32 and rounded once, as its
    forward (it reads neither its output nor beta's value)."""

    def f(F, at, g, y, x, gamma, beta):
        if x.dtype != np.float16:
            return vjp(F, at, g, y, x, gamma, beta)
        up = [F.astype(a, dtype="float32") for a in (g, x, gamma)]
        cts = vjp(F, at, up[0], None, up[1], up[2], beta)
        return tuple(None if c is None else F.astype(c, dtype="float16") for c in cts)

    return f


@_float16_in_float32
def _in_vjp(F, at, g, y, x, gamma, beta):
    axes = tuple(range(2, x.ndim))
    gamma_b = F.reshape(gamma, shape=(1, -1) + (1,) * (x.ndim - 2))
    gx, xhat = _normalized_vjp(F, g, x, gamma_b, axes, at["eps"])
    return gx, F.sum(F.mul(g, xhat), axis=(0, *axes)), F.sum(g, axis=(0, *axes))


def _norm_scratch(at: dict, x: Spec, *rest: Spec) -> int:
    """A normalisation's working arrays: the deviations, their squares and the scaled result
    before it is rounded (in float32 for float16 data, with the data's float32 copy)."""
    if x.dtype == "float16":
        return 4 * 2 * x.nbytes
    return 3 * x.nbytes


def _norm_vjp_scratch(at: dict, x: Spec, *rest: Spec) -> int:
    """Its VJP's: the deviations, the normalised data, the gradient's terms (float16: in
    float32, with the float32 copies of the data and the gradient)."""
    return (2 * 8 if x.dtype == "float16" else 6) * x.nbytes


@defop(
    "InstanceNorm",
    ("data", "gamma", "beta"),
    (Attr("eps", "float", 1e-3),),
    infer=_in_infer,
    vjp=_in_vjp,
    scratch=_norm_scratch,
    vjp_scratch=_norm_vjp_scratch,
)
def _instance_norm(cx, at, x, gamma, beta):
    """Each sample's each channel normalised over its other axes (mean 0, variance 1, ``eps``
    added to the variance), then scaled by gamma and shifted by beta, per channel."""
    axes = tuple(range(2, x.ndim))
    return _normalized(cx.xp, at, x, gamma, beta, axes, (1, -1) + (1,) * (x.ndim - 2))


LN = (Attr("axis", "int", -1), Attr("eps", "float", 1e-5), Attr("output_mean_var", "bool", False))


def _ln_infer(at: dict, x: Spec, gamma: Spec, beta: Spec) -> Spec:
    floating("LayerNorm", x)
    dt = same_dtype("LayerNorm", x, gamma, beta)
    ax = _axis_of("LayerNorm", at["axis"], len(x.shape))
    c = (x.shape[ax],)
    for name, s in (("gamma", gamma), ("beta", beta)):
        if s.shape != c:
            raise ShapeError(f"LayerNorm: {name} shape {s.shape} should be {c}")
    if at["output_mean_var"]:
        raise InvalidInput(
            "LayerNorm: the op gives one output; output_mean_var is nd.LayerNorm's (its mean and "
            "sqrt(var + eps) made of the table's ops)"
        )
    return Spec(x.shape, dt)


@_float16_in_float32
def _ln_vjp(F, at, g, y, x, gamma, beta):
    ax = at["axis"] % x.ndim
    others = tuple(i for i in range(x.ndim) if i != ax)
    bshape = tuple(-1 if i == ax else 1 for i in range(x.ndim))
    gx, xhat = _normalized_vjp(F, g, x, F.reshape(gamma, shape=bshape), ax, at["eps"])
    gxhat = F.mul(g, xhat)
    dgamma = F.sum(gxhat, axis=others) if others else gxhat
    dbeta = F.sum(g, axis=others) if others else g
    return gx, dgamma, dbeta


@defop(
    "LayerNorm",
    ("data", "gamma", "beta"),
    LN,
    infer=_ln_infer,
    vjp=_ln_vjp,
    scratch=_norm_scratch,
    vjp_scratch=_norm_vjp_scratch,
)
def _layer_norm(cx, at, x, gamma, beta):
    """Normalise along ``axis`` (each position of the other axes on its own: mean 0,
    variance 1, ``eps`` added to the variance), then scale by gamma and shift by beta."""
    ax = at["axis"] % x.ndim
    return _normalized(cx.xp, at, x, gamma, beta, ax, tuple(-1 if i == ax else 1 for i in range(x.ndim)))


def _seqmask_infer(at: dict, x: Spec, *lengths: Spec) -> Spec:
    _seq_lengths("SequenceMask", at, x, lengths)
    return x


def _seqmask_vjp(F, at, g, y, x, *lengths):
    return (F.SequenceMask(g, *lengths, **{**at, "value": 0.0}),) + (None,) * len(lengths)


SEQUENCE = (Attr("use_sequence_length", "bool", False), Attr("axis", "int", 0))


def _seq_lengths(name: str, at: dict, x: Spec, lengths: tuple, axes: tuple[int, ...] = (0, 1)) -> int:
    ax = at["axis"]
    if ax not in axes or len(x.shape) < 2:
        raise InvalidInput(f"{name}: axis must be {' or '.join(map(str, axes))} on data of rank >= 2")
    if at["use_sequence_length"]:
        if len(lengths) != 1 or lengths[0].shape != (x.shape[1 - ax],):
            raise ShapeError(f"{name}: sequence_length must have shape {(x.shape[1 - ax],)}")
    elif lengths:
        raise InvalidInput(f"{name}: sequence_length given but use_sequence_length is false")
    return ax


def _seq_last_infer(at: dict, x: Spec, *lengths: Spec) -> Spec:
    ax = _seq_lengths("SequenceLast", at, x, lengths)
    if x.shape[ax] == 0:
        raise ShapeError(f"SequenceLast: sequences of no steps have no last one (data {x.shape}, axis {ax})")
    return Spec(x.shape[:ax] + x.shape[ax + 1 :], x.dtype)


def _last_steps(xp, at, x, lengths) -> Any:
    """Each sequence's last step: its length less one (the whole axis without lengths), in [0, T)."""
    ax, n = at["axis"], x.shape[1 - at["axis"]]
    t = x.shape[ax]
    if not at["use_sequence_length"]:
        return xp.full(n, t - 1, dtype=np.int64)
    return _steps_of("SequenceLast", lengths[0], 1, t) - 1


def _steps_of(name: str, lengths: Any, least: int, t: int) -> Any:
    """Sequence lengths as integers (truncated, as MXNet reads them), refused outside
    [least, t]: MXNet 1.9.1 reads memory past the data's steps there."""
    with np.errstate(invalid="ignore"):
        steps = lengths.astype(np.int64)
    bad = (steps < least) | (steps > t) | ~np.isfinite(lengths)
    if bad.any():
        raise InvalidInput(
            f"{name}: sequence_length must be from {least} to {t} (the data's steps), got {lengths[bad][0].item()}"
        )
    return steps


def _seq_last_vjp(F, at, g, y, x, *lengths):
    ax, t = at["axis"], int(x.shape[at["axis"]])
    if at["use_sequence_length"]:
        last = F.clip(F.add_scalar(lengths[0], scalar=-1.0), a_min=0.0, a_max=float(t - 1))
    else:
        last = F.full(shape=(int(x.shape[1 - ax]),), val=float(t - 1), dtype=x.dtype.name)
    hot = F.one_hot(last, depth=t, dtype=x.dtype.name)  # (N, T): 1 at each sequence's last step
    if ax == 0:
        hot = F.transpose(hot)
    hot = F.reshape(hot, shape=tuple(hot.shape) + (1,) * (x.ndim - 2))
    # where, not g * hot: the other steps' gradients are +0 (MXNet's), where -g * 0 is -0
    zeros = F.zeros(shape=tuple(x.shape), dtype=x.dtype.name)
    return (F.where(hot, F.expand_dims(g, axis=ax), zeros),) + (None,) * len(lengths)


@defop("SequenceLast", ("data", "*sequence_length"), SEQUENCE, infer=_seq_last_infer, vjp=_seq_last_vjp, most=2)
def _sequence_last(cx, at, x, *lengths):
    """Each sequence's last step (at its length less one with use_sequence_length) along ``axis``."""
    if x.size == 0:  # (nothing to index: no index arrays of an empty array's long axis)
        ax = at["axis"]
        return cx.xp.empty(x.shape[:ax] + x.shape[ax + 1 :], x.dtype)
    last = _last_steps(cx.xp, at, x, lengths)
    rows = cx.xp.arange(x.shape[1 - at["axis"]])
    return cx.xp.array(x[last, rows] if at["axis"] == 0 else x[rows, last])


def _seq_reverse_infer(at: dict, x: Spec, *lengths: Spec) -> Spec:
    _seq_lengths("SequenceReverse", at, x, lengths, axes=(0,))
    return x


def _seq_reverse_scratch(at: dict, x: Spec, *lengths: Spec) -> int:
    """The step each (step, sequence) takes, its test and terms, in int64, and numpy's index
    arrays."""
    return 26 * prod(x.shape[:2])


@defop(
    "SequenceReverse",
    ("data", "*sequence_length"),
    SEQUENCE,
    most=2,
    infer=_seq_reverse_infer,
    scratch=_seq_reverse_scratch,
    vjp_scratch=_seq_reverse_scratch,  # (its gradient is the same reverse)
    vjp=lambda F, at, g, y, x, *lengths: (F.SequenceReverse(g, *lengths, **at),) + (None,) * len(lengths),
)
def _sequence_reverse(cx, at, x, *lengths):
    """Each sequence's steps (its first length of them with use_sequence_length) in reverse
    order along axis 0; the steps past its length stay where they are."""
    xp = cx.xp
    if x.size == 0:  # (nothing to reverse: no index arrays of an empty array's long axis)
        return x.copy()
    t, n = x.shape[0], x.shape[1]
    steps = xp.arange(t)[:, None]
    if at["use_sequence_length"]:
        lens = _steps_of("SequenceReverse", lengths[0], 0, t)[None, :]
    else:
        lens = xp.full((1, n), t, dtype=np.int64)
    src = xp.where(steps < lens, lens - 1 - steps, steps)  # (T, N): the step each position takes
    return cx.xp.array(x[src, xp.arange(n)[None, :]])


@defop(
    "SequenceMask",
    ("data", "*sequence_length"),
    (Attr("use_sequence_length", "bool", False), Attr("value", "float", 0.0), Attr("axis", "int", 0)),
    most=2,
    infer=_seqmask_infer,
    vjp=_seqmask_vjp,
)
def _sequence_mask(cx, at, x, *lengths):
    """Positions at or past each sequence's length (along ``axis``) set to ``value``."""
    if not at["use_sequence_length"]:
        return x.copy()
    ax = at["axis"]
    t = cx.xp.arange(x.shape[ax])
    lens = lengths[0].astype(np.int64)
    keep = t[:, None] < lens[None, :] if ax == 0 else (t[:, None] < lens[None, :]).T
    keep = keep.reshape(keep.shape + (1,) * (x.ndim - 2))
    return cx.xp.where(keep, x, typed_scalar(at["value"], x.dtype)).astype(x.dtype)
