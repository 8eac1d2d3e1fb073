"""Image and normalization ops: LRN, UpSampling, GroupNorm, Crop, SoftmaxActivation, SVMOutput;
spatial sampling: GridGenerator, BilinearSampler, SpatialTransformer, ROIPooling, Correlation.

MXNet 1.9.1's legacy image layers, with its shapes, defaults and checks. Their VJPs are
written with the table's ops, as ``ops_nn``'s are. LRN, GroupNorm and SoftmaxActivation compute
float16 data in float32 and round once (MXNet 1.9.1's CPU kernels for them fail on float16, or
overflow on a normalisation's sums of squares), their float32 copies declared as working memory.
The samplers' gradients are table ops too (take and take_grad of the four pixels around each
point); ROIPooling's and Correlation's go through helper ops of their own: ``roi_pooling_argmax``
(where each bin's maximum is, for take_grad), ``correlation_grad`` and ``correlation_sign_dot``
(differentiable in turn, for second order).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import DTypeError, InvalidInput, ShapeError
from .ops import same_dtype
from .ops_array import NUM_ARGS
from .ops_index import UFUNC_BUFFER
from .ops_math import STEP_WORK
from .ops_nn import _normalised_grad, _normalized_vjp, floating
from .optable import OPS, REQUIRED, Attr, Spec, defop, prod


def _in_float32(x: Any) -> Any:
    """``x`` as it is computed: float16 in float32, any other dtype as it is."""
    return x.astype(np.float32) if x.dtype == np.float16 else x


def _up32(F: Any, *xs: Any) -> tuple[Any, ...]:
    """A VJP's arrays in the dtype it computes in: float16 ones in float32 (as its forward)."""
    return tuple(F.astype(x, dtype="float32") if x.dtype == np.float16 else x for x in xs)


def _back_to(F: Any, gx: Any, x: Any) -> Any:
    """A cotangent in its input's dtype."""
    return gx if gx.dtype == x.dtype else F.astype(gx, dtype=x.dtype.name)


# --------------------------------------------------------------------------
# LRN: local response normalisation across channels

LRN_ATTRS = (
    Attr("alpha", "float", 1e-4),
    Attr("beta", "float", 0.75),
    Attr("knorm", "float", 2.0),
    Attr("nsize", "int", REQUIRED),
)


def _lrn_infer(at: dict, x: Spec) -> Spec:
    floating("LRN", x)
    if len(x.shape) not in (2, 4):
        raise ShapeError(f"LRN: needs data (N, C, H, W) or (N, C), got shape {x.shape}")
    if at["nsize"] < 1:
        raise InvalidInput(f"LRN: nsize must be at least 1, got {at['nsize']}")
    return x


def _lrn_half(at: dict, channels: int) -> int:
    """How many channels either side of its own a channel's window takes: (nsize - 1) // 2, as
    MXNet 1.9.1's CPU kernel (oneDNN) has it (an even nsize sums nsize - 1 channels, still
    divided by nsize), no more than there are."""
    return max(min((at["nsize"] - 1) // 2, channels - 1), 0)


def _window_sum(v: Any, half: int) -> Any:
    """Each channel's sum of ``v`` over the channels ``half`` either side of it (axis 1; half
    less than the channels): a new array, the shifts added into it in place."""
    out = v.copy()
    for k in range(1, half + 1):
        out[:, k:] += v[:, :-k]
        out[:, :-k] += v[:, k:]
    return out


def _window_sum_f(F: Any, v: Any, half: int) -> Any:
    """``_window_sum`` with the table's ops (a VJP's): the channels padded with ``half`` zeros
    either side, then their 2 * half + 1 shifts added one at a time (each shift a copy, let
    go as the next is taken: ``_lrn_vjp_scratch`` counts them)."""
    if not half:
        return v
    c = int(v.shape[1])
    edge = F.zeros(shape=(int(v.shape[0]), half) + tuple(v.shape[2:]), dtype=v.dtype.name)
    p = F.concat(edge, v, edge, dim=1)
    del edge
    s = F.slice_axis(p, axis=1, begin=0, end=c)
    for k in range(1, 2 * half + 1):
        s = F.add(s, F.slice_axis(p, axis=1, begin=k, end=k + c))
    return s


def _lrn_vjp(F, at, g, y, x):
    """y = x d^-beta with d = knorm + alpha/nsize * (the window's sum of x^2); the windows are
    symmetric, so dL/dx = g d^-beta - 2 alpha beta / nsize * x * (the window's sum of g y / d).
    Each array is let go as soon as it is used (``_lrn_vjp_scratch`` counts what is held at
    once)."""
    xc, gc = _up32(F, x, g)
    half = _lrn_half(at, int(x.shape[1]))
    a_n = at["alpha"] / at["nsize"]
    d = F.add_scalar(F.mul_scalar(_window_sum_f(F, F.square(xc), half), scalar=a_n), scalar=at["knorm"])
    scale = F.pow_scalar(d, scalar=-at["beta"])
    q = F.div(F.mul(gc, F.mul(xc, scale)), d)
    del d
    inner = _window_sum_f(F, q, half)
    del q
    gs = F.mul(gc, scale)
    del scale
    gx = F.sub(gs, F.mul(F.mul_scalar(xc, scalar=2.0 * a_n * at["beta"]), inner))
    del gs, inner
    return (_back_to(F, gx, x),)


def _lrn_scratch(at: dict, x: Spec) -> int:
    """The squares besides their window sums (which become the result, in place): one array
    of the computing dtype; float16's three in float32 (its copy, the squares, the sums), the
    result rounded from the sums. With a window, numpy's buffers too: a shifted add over
    strided channels may be buffered (three operands of ``UFUNC_BUFFER`` elements)."""
    n = prod(x.shape)
    size = 4 if x.dtype == "float16" else np.dtype(x.dtype).itemsize
    window = _lrn_half(at, x.shape[1]) if len(x.shape) > 1 else 0
    return size * (n * (3 if x.dtype == "float16" else 1) + (3 * UFUNC_BUFFER if window else 0))


def _lrn_vjp_scratch(at: dict, x: Spec) -> int:
    """What ``_lrn_vjp`` holds at once, in data-sized arrays of the computing dtype (float32
    for float16): at most d^-beta, g y / d, the channels padded (1 + 2 half / C of them), the
    running sum, the shift being added and their sum; 4 when there is no window (half 0), and
    float16's copies of x and g in float32 besides."""
    n, c = prod(x.shape), x.shape[1] if len(x.shape) > 1 else 1
    half = _lrn_half(at, c)
    f16 = x.dtype == "float16"
    size = 4 if f16 else np.dtype(x.dtype).itemsize
    return size * (n * ((6 if half else 4) + (2 if f16 else 0)) + (2 * half * n) // max(c, 1))


def _lrn_work(at: dict, x: Spec) -> int:
    """The window's sums: 2 * half + 1 additions an element."""
    return prod(x.shape) * (2 * _lrn_half(at, x.shape[1]) + 1)


@defop(
    "LRN",
    ("data",),
    LRN_ATTRS,
    infer=_lrn_infer,
    vjp=_lrn_vjp,
    work=_lrn_work,
    scratch=_lrn_scratch,
    vjp_scratch=_lrn_vjp_scratch,
)
def _lrn(cx, at, x):
    """Local response normalisation across channels (axis 1 of (N, C, H, W) or (N, C) data):
    x / (knorm + alpha/nsize * the sum of x^2 over the channels (nsize - 1) // 2 either side)^beta."""
    xc = _in_float32(x)
    half = _lrn_half(at, x.shape[1])
    t = xc.dtype.type
    d = _window_sum(xc * xc, half)  # (a new array: scaled, raised and multiplied in place)
    d *= t(at["alpha"] / at["nsize"])
    d += t(at["knorm"])
    d **= t(-at["beta"])
    d *= xc
    return d.astype(x.dtype, copy=False)


# --------------------------------------------------------------------------
# UpSampling: nearest neighbour, of one image or several; bilinear, a Deconvolution

UPSAMPLING = (
    Attr("scale", "int", REQUIRED),
    Attr("num_filter", "int", 0),
    Attr("sample_type", "str", REQUIRED),
    Attr("multi_input_mode", "str", "concat"),
    NUM_ARGS,
    Attr("workspace", "int", 512),
)


def _up_check(at: dict, xs: tuple[Spec, ...]) -> None:
    """The checks of both sample types: the attributes, the arity, dtypes and 4-D inputs."""
    kind, mode = at["sample_type"], at["multi_input_mode"]
    if kind not in ("nearest", "bilinear"):
        raise InvalidInput(f"UpSampling: sample_type must be nearest or bilinear, got {kind!r}")
    if mode not in ("concat", "sum"):
        raise InvalidInput(f"UpSampling: multi_input_mode must be concat or sum, got {mode!r}")
    if at["scale"] < 1:
        raise InvalidInput(f"UpSampling: scale must be at least 1, got {at['scale']}")
    if not xs:
        raise InvalidInput("UpSampling: needs at least one array")
    if at["num_args"] is not None and at["num_args"] != len(xs):  # (MXNet's check)
        raise InvalidInput(f"UpSampling: num_args is {at['num_args']}, but {len(xs)} arrays were given")
    floating("UpSampling", xs[0])
    same_dtype("UpSampling", *xs)
    for x in xs:
        if len(x.shape) != 4:
            raise ShapeError(f"UpSampling: inputs must be 4-D (N, C, H, W), got shape {x.shape}")


def _nearest_scales(at: dict, xs: tuple[Spec, ...]) -> list[int]:
    """Each input's own scale: the output's (H, W) is the first input's times ``scale``, and
    every input must fill it by a whole factor, one for both axes (MXNet's)."""
    n, _, h, w = xs[0].shape
    oh, ow = h * at["scale"], w * at["scale"]
    scales = []
    for i, x in enumerate(xs):
        if x.shape[0] != n:
            raise ShapeError(f"UpSampling: input {i} has {x.shape[0]} samples, the first {n}")
        if at["multi_input_mode"] == "sum" and x.shape[1] != xs[0].shape[1]:
            raise ShapeError(
                f"UpSampling: multi_input_mode sum needs inputs of one channel count, got {xs[0].shape[1]} "
                f"and {x.shape[1]} (input {i})"
            )
        xh, xw = x.shape[2], x.shape[3]
        if not xh or not xw or oh % xh or ow % xw or oh // xh != ow // xw:
            raise ShapeError(
                f"UpSampling: input {i} of (H, W) {(xh, xw)} does not scale to the output's {(oh, ow)} "
                "by one whole factor"
            )
        scales.append(oh // xh)
    return scales


def _bilinear_deconv(at: dict, x: Spec, w: Spec) -> dict:
    """The Deconvolution a bilinear UpSampling is (MXNet's): one filter of each channel
    (num_group = num_filter = C), kernel 2 * scale - scale % 2, stride scale, pad
    ceil((scale - 1) / 2), no bias; its (C, 1, k, k) weight is the second input."""
    s, c = at["scale"], x.shape[1]
    if at["num_filter"] != c:
        raise InvalidInput(
            f"UpSampling: bilinear needs num_filter equal to the data's channels ({c}), got {at['num_filter']}"
        )
    k = 2 * s - s % 2
    if w.shape != (c, 1, k, k):
        raise ShapeError(f"UpSampling: bilinear weight of scale {s} must have shape {(c, 1, k, k)}, got {w.shape}")
    win = {"kernel": (k, k), "stride": (s, s), "pad": (s // 2, s // 2)}  # (s // 2: ceil((s - 1) / 2))
    return OPS["Deconvolution"].parse_attrs({**win, "num_filter": c, "num_group": c, "no_bias": True})


def _bilinear_at(at: dict, xs: tuple[Spec, ...]) -> dict:
    if len(xs) != 2:
        raise InvalidInput(f"UpSampling: bilinear takes 2 inputs (data and weight), got {len(xs)}")
    return _bilinear_deconv(at, xs[0], xs[1])


def _up_infer(at: dict, *xs: Spec) -> Spec:
    _up_check(at, xs)
    if at["sample_type"] == "bilinear":
        return OPS["Deconvolution"].infer(_bilinear_at(at, xs), *xs)
    _nearest_scales(at, xs)
    n, c, h, w = xs[0].shape
    if at["multi_input_mode"] == "concat":
        c = sum(x.shape[1] for x in xs)
    return Spec((n, c, h * at["scale"], w * at["scale"]), xs[0].dtype)


def _specs(xs: tuple[Any, ...]) -> tuple[Spec, ...]:
    return tuple(Spec(tuple(x.shape), x.dtype.name) for x in xs)


def _up_vjp(F, at, g, y, *xs):
    """Bilinear: the Deconvolution's. Nearest: each input's share of g (its channels, with
    concat), summed over the block of the output each of its elements fills."""
    if at["sample_type"] == "bilinear":
        return OPS["Deconvolution"].vjp(F, _bilinear_at(at, _specs(xs)), g, y, *xs)
    out, start = [], 0
    for x, s in zip(xs, _nearest_scales(at, _specs(xs))):
        n, c, h, w = (int(d) for d in x.shape)
        part = g
        if at["multi_input_mode"] == "concat":
            part = F.slice_axis(g, axis=1, begin=start, end=start + c)
            start += c
        out.append(part if s == 1 else F.sum(F.reshape(part, shape=(n, c, h, s, w, s)), axis=(3, 5)))
    return tuple(out)


def _accumulated(dtype: str) -> int:
    """The bytes an element of a table ``sum`` of this dtype is added up in, when that is
    another dtype (float32 in float64, float16 in float32: ``accumulator``), and rounded from."""
    return {"float32": 8, "float16": 4}.get(dtype, 0)


def _nearest_vjp_scratch(at: dict, *xs: Spec) -> int:
    """A nearest VJP's working arrays, one input at a time (each cotangent is a result): its
    share of g copied (a slice of its channels, or g reshaped when g is not contiguous, a
    broadcast head gradient) and its block sums in the dtype they are added up in. An input
    of scale 1 makes none (its cotangent is g, or the slice)."""
    out = _up_infer(at, *xs)
    oh, ow = out.shape[2], out.shape[3]
    item, acc = np.dtype(out.dtype).itemsize, _accumulated(out.dtype)
    need = 0
    for x, s in zip(xs, _nearest_scales(at, xs)):
        if s > 1:
            need = max(need, x.shape[0] * x.shape[1] * oh * ow * item + prod(x.shape) * acc)
    return need


def _up_hook(hook: str):
    """A bilinear UpSampling's ``scratch``, ``vjp_scratch`` or ``work``: its Deconvolution's;
    a nearest one's work is its output's elements, its forward writes each input into the
    result (no working arrays but numpy's buffers of a broadcast add, with ``sum``), its VJP's
    ``_nearest_vjp_scratch``."""

    def f(at: dict, *xs: Spec) -> int:
        if at["sample_type"] == "bilinear":
            return getattr(OPS["Deconvolution"], hook)(_bilinear_at(at, xs), *xs)
        if hook == "work":
            return prod(_up_infer(at, *xs).shape)
        if hook == "vjp_scratch":
            return _nearest_vjp_scratch(at, *xs)
        sums = at["multi_input_mode"] == "sum" and len(xs) > 1
        return 3 * UFUNC_BUFFER * np.dtype(xs[0].dtype).itemsize if sums else 0

    return f


@defop(
    "UpSampling",
    ("*data",),
    UPSAMPLING,
    infer=_up_infer,
    vjp=_up_vjp,
    scratch=_up_hook("scratch"),
    vjp_scratch=_up_hook("vjp_scratch"),
    work=_up_hook("work"),
)
def _upsampling(cx, at, *xs):
    """(N, C, H, W) data scaled up ``scale`` times on H and W. ``nearest``: each element
    repeated in a scale x scale block; further inputs, each scaled up to the first's output
    size by a whole factor of its own, are joined to it on the channels (multi_input_mode
    ``concat``) or added (``sum``, of one channel count). ``bilinear``: a Deconvolution of the
    data (one filter of each channel) with the second input, a (C, 1, k, k) weight (k = 2 *
    scale - scale % 2; MXNet's, which a Bilinear initializer fills for bilinear
    interpolation), num_filter the data's channels C."""
    if at["sample_type"] == "bilinear":
        return OPS["Deconvolution"].forward(cx, _bilinear_at(at, _specs(xs)), *xs)
    out = cx.xp.empty(_up_infer(at, *_specs(xs)).shape, xs[0].dtype)
    n, c, oh, ow = out.shape
    start = 0
    for i, (x, s) in enumerate(zip(xs, _nearest_scales(at, _specs(xs)))):
        # the result as blocks of s x s (a view: out is contiguous), each input written or
        # added in place, broadcast along the blocks (no repeated copy of it)
        blocks = out.reshape(n, c, oh // s, s, ow // s, s)
        src = x[:, :, :, None, :, None]
        if at["multi_input_mode"] == "concat":
            blocks[:, start : start + x.shape[1]] = src
            start += x.shape[1]
        elif i == 0:
            blocks[...] = src
        else:
            blocks += src
    return out


# --------------------------------------------------------------------------
# GroupNorm

GROUP_NORM = (Attr("num_groups", "int", 1), Attr("eps", "float", 1e-5), Attr("output_mean_var", "bool", False))


def _gn_infer(at: dict, x: Spec, gamma: Spec, beta: Spec) -> Spec:
    floating("GroupNorm", x)
    same_dtype("GroupNorm", x, gamma, beta)
    if len(x.shape) < 3:
        raise ShapeError(f"GroupNorm: needs data (N, C, d1, ...), got {x.shape}")
    grp = at["num_groups"]
    if grp < 1:
        raise InvalidInput(f"GroupNorm: num_groups must be positive, got {grp}")
    if x.shape[1] % grp:
        raise ShapeError(f"GroupNorm: the data's channels ({x.shape[1]}) must be a multiple of num_groups ({grp})")
    for name, s in (("gamma", gamma), ("beta", beta)):
        if s.shape != (grp,):  # (one per group, MXNet 1.9.1's: not one per channel)
            raise ShapeError(f"GroupNorm: {name} must have shape ({grp},), one value per group, got {s.shape}")
    if at["output_mean_var"]:
        raise InvalidInput(
            "GroupNorm: the op gives one output; output_mean_var is nd.GroupNorm's (its mean and "
            "sqrt(var + eps) made of the table's ops)"
        )
    return x


def _grouped_shape(at: dict, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(N, G, the elements of a group): the shape a group's statistics are taken over."""
    grp = at["num_groups"]
    return (shape[0], grp, prod(shape[1:]) // grp)


def _gn_vjp(F, at, g, y, x, gamma, beta):
    """LayerNorm's over each sample's each group; gamma's and beta's summed over a group's
    channels and positions too. float16 in float32, as the forward."""
    shape = _grouped_shape(at, tuple(x.shape))
    xc, gc, gam = _up32(F, x, g, gamma)
    x3, g3 = F.reshape(xc, shape=shape), F.reshape(gc, shape=shape)
    gx, xhat = _normalized_vjp(F, g3, x3, F.reshape(gam, shape=(1, shape[1], 1)), 2, at["eps"])
    dgamma = F.sum(F.mul(g3, xhat), axis=(0, 2))
    dbeta = F.sum(g3, axis=(0, 2))
    return (
        _back_to(F, F.reshape(gx, shape=tuple(x.shape)), x),
        _back_to(F, dgamma, gamma),
        _back_to(F, dbeta, beta),
    )


def _gn_scratch(at: dict, x: Spec, *rest: Spec) -> int:
    """The squares of the centred data, which is normalised into the result in place: one
    array of the computing dtype; float16's float32 copy and the centred data in float32 (the
    result is rounded from it). Its statistics, one of each group, and numpy's buffers of a
    group's broadcast values (``UFUNC_BUFFER``) besides."""
    n = prod(x.shape)
    size = 4 if x.dtype == "float16" else np.dtype(x.dtype).itemsize
    groups = x.shape[0] * at["num_groups"] if x.shape else 0
    return size * (n * (2 if x.dtype == "float16" else 1) + 4 * groups + 3 * UFUNC_BUFFER)


def _gn_vjp_scratch(at: dict, x: Spec, *rest: Spec) -> int:
    """What ``_gn_vjp`` (``_normalized_vjp``'s table ops) holds at once, in data-sized arrays of
    the computing dtype: g reshaped (a copy when g is not contiguous), the centred data, x
    normalised, g times gamma, the two terms of the gradient and their difference: 7; float16's
    copies of x and g in float32 besides. Its statistics, one of each group: a few arrays of
    them (means summed in float64 and rounded, the deviation's inverse), 8 counted."""
    n = prod(x.shape)
    f16 = x.dtype == "float16"
    size = 4 if f16 else np.dtype(x.dtype).itemsize
    groups = x.shape[0] * at["num_groups"] if x.shape else 0
    return size * n * (9 if f16 else 7) + 8 * 8 * groups


@defop(
    "GroupNorm",
    ("data", "gamma", "beta"),
    GROUP_NORM,
    infer=_gn_infer,
    vjp=_gn_vjp,
    scratch=_gn_scratch,
    vjp_scratch=_gn_vjp_scratch,
)
def _group_norm(cx, at, x, gamma, beta):
    """Each sample's channels split into ``num_groups`` groups, each group normalised over its
    channels and positions (mean 0, variance 1, ``eps`` added to the variance), then scaled by
    gamma and shifted by beta, one value of each per group (MXNet 1.9.1's: shape
    (num_groups,)). float16 is computed in float32 and rounded once."""
    shape = _grouped_shape(at, x.shape)
    if x.size == 0:  # (no statistics to take)
        return x.copy()
    x3 = _in_float32(x).reshape(shape)
    t = x3.dtype.type
    y = x3 - x3.mean(axis=2, keepdims=True)  # (a new array: normalised, scaled and shifted in place)
    del x3  # (float16's float32 copy)
    var = (y * y).mean(axis=2, keepdims=True)
    bshape = (1, shape[1], 1)
    y /= cx.xp.sqrt(var + t(at["eps"]))
    y *= gamma.reshape(bshape).astype(t)
    y += beta.reshape(bshape).astype(t)
    return y.reshape(x.shape).astype(x.dtype, copy=False)


# --------------------------------------------------------------------------
# Crop: MXNet's legacy crop of (N, C, H, W) data

CROP = (
    NUM_ARGS,
    Attr("offset", "shape", (0, 0)),
    Attr("h_w", "shape", (0, 0)),
    Attr("center_crop", "bool", False),
)


def _crop_window(at: dict, x: Spec, like: tuple[Spec, ...]) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the crop: the size h_w, or crop_like's axes 2 and 3 when it
    is given; at ``offset``, or in the middle (rounded down) with center_crop."""
    if len(x.shape) != 4:
        raise ShapeError(f"Crop: data must be 4-D (N, C, H, W), got shape {x.shape}")
    if len(like) > 1:
        raise InvalidInput(f"Crop: takes 1 or 2 inputs (data, and crop_like), got {1 + len(like)}")
    if at["num_args"] is not None and at["num_args"] != 1 + len(like):  # (MXNet's check)
        raise InvalidInput(f"Crop: num_args is {at['num_args']}, but {1 + len(like)} arrays were given")
    for name in ("offset", "h_w"):
        if len(at[name]) != 2:
            raise InvalidInput(f"Crop: {name} must have 2 values, (y, x) or (h, w), got {tuple(at[name])}")
    big = x.shape[2:]
    if like:
        if len(like[0].shape) < 4:
            raise ShapeError(
                f"Crop: crop_like must have 4 axes or more (its 2 and 3 are the size), got {like[0].shape}"
            )
        size = like[0].shape[2:4]
    else:
        size = tuple(at["h_w"])
        if min(size) < 1:
            raise InvalidInput(f"Crop: h_w must be at least (1, 1) with one input, got {size}")
    if size[0] > big[0] or size[1] > big[1]:
        raise ShapeError(f"Crop: the crop {size} is larger than the data's (H, W) {big}")
    if at["center_crop"]:
        return (big[0] - size[0]) // 2, (big[1] - size[1]) // 2, size[0], size[1]
    top, left = at["offset"]
    if top < 0 or left < 0 or top > big[0] - size[0] or left > big[1] - size[1]:
        raise ShapeError(
            f"Crop: offset {(top, left)} puts the crop {size} outside the data's (H, W) {big} "
            f"(at most {(big[0] - size[0], big[1] - size[1])})"
        )
    return top, left, size[0], size[1]


def _crop_infer(at: dict, x: Spec, *like: Spec) -> Spec:
    floating("Crop", x)
    same_dtype("Crop", x, *like)
    _, _, h, w = _crop_window(at, x, like)
    return Spec(x.shape[:2] + (h, w), x.dtype)


def _crop_vjp(F, at, g, y, x, *like):
    """g in the crop's place, zeros around it (crop_like, a shape, takes none)."""
    n, c, hh, ww = (int(d) for d in x.shape)
    top, left, h, w = _crop_window(at, Spec((n, c, hh, ww), x.dtype.name), _specs(like))
    pad = (0, 0, 0, 0, top, hh - h - top, left, ww - w - left)
    return (F.Pad(g, mode="constant", pad_width=pad),) + (None,) * len(like)


@defop("Crop", ("data", "*crop_like"), CROP, infer=_crop_infer, vjp=_crop_vjp, most=2)
def _crop(cx, at, x, *like):
    """A (h, w) window of (N, C, H, W) data: of size ``h_w``, or of crop_like's axes 2 and 3
    when a second input is given; at ``offset`` (y, x), or in the middle (rounded down) with
    ``center_crop`` (MXNet's legacy Crop; ``slice`` is its successor)."""
    top, left, h, w = _crop_window(at, Spec(x.shape, x.dtype.name), _specs(like))
    return x[:, :, top : top + h, left : left + w].copy()  # (a copy even of the whole: never x itself)


# --------------------------------------------------------------------------
# SoftmaxActivation: MXNet's deprecated softmax of a layer


def _sa_axis(at: dict, ndim: int) -> int:
    """instance: the last axis (MXNet flattens the data to 2-D, (all axes but the last, the
    last)); channel: axis 1, of data of rank 3 or more."""
    mode = at["mode"]
    if mode not in ("instance", "channel"):
        raise InvalidInput(f"SoftmaxActivation: mode must be instance or channel, got {mode!r}")
    if mode == "channel":
        if ndim < 3:
            raise ShapeError(f"SoftmaxActivation: mode channel needs data of rank 3 or more, got rank {ndim}")
        return 1
    if ndim < 1:
        raise ShapeError("SoftmaxActivation: needs data of rank 1 or more, got a scalar")
    return ndim - 1


def _sa_infer(at: dict, x: Spec) -> Spec:
    floating("SoftmaxActivation", x)
    _sa_axis(at, len(x.shape))
    return x


def _sa_vjp(F, at, g, y, x):
    yc, gc = _up32(F, y, g)
    return (_back_to(F, _normalised_grad(F, {"axis": _sa_axis(at, x.ndim)}, gc, yc), x),)


def _sa_rows(at: dict, x: Spec) -> int:
    """The elements of a softmax's reduction (its maxima, its sums): the data's less its axis."""
    n = prod(x.shape)
    return n // x.shape[_sa_axis(at, len(x.shape))] if n else 0


def _sa_scratch(at: dict, x: Spec) -> int:
    """The exponentials are the result, made in place: none of the data's size but float16's
    float32 copy and its float32 result (rounded from); the maxima and the sums besides, and
    numpy's buffers of their broadcast (``UFUNC_BUFFER``)."""
    size = 4 if x.dtype == "float16" else np.dtype(x.dtype).itemsize
    f16 = 2 * prod(x.shape) if x.dtype == "float16" else 0
    return size * (f16 + 2 * _sa_rows(at, x) + 3 * UFUNC_BUFFER)


def _sa_vjp_scratch(at: dict, x: Spec) -> int:
    """``_normalised_grad``'s table ops: g y, then g less its sum (one data-sized array at a
    time besides the cotangent), and the sums along the axis (in float64 for float32, and
    rounded); float16's copies of y and g and its cotangent in float32 besides."""
    f16 = x.dtype == "float16"
    size = 4 if f16 else np.dtype(x.dtype).itemsize
    return size * prod(x.shape) * (4 if f16 else 1) + 12 * _sa_rows(at, x)


@defop(
    "SoftmaxActivation",
    ("data",),
    (Attr("mode", "str", "instance"),),
    infer=_sa_infer,
    vjp=_sa_vjp,
    scratch=_sa_scratch,
    vjp_scratch=_sa_vjp_scratch,
)
def _softmax_activation(cx, at, x):
    """softmax along the last axis (``instance``, MXNet's: each row of the data flattened to
    2-D) or along axis 1 (``channel``: at each position of each sample, of data of rank 3 or
    more). float16 is computed in float32 and rounded once."""
    if x.size == 0:  # (a max over no elements would fail, and there is nothing to normalise)
        return x.copy()
    axis = _sa_axis(at, x.ndim)
    z = _in_float32(x)
    e = z - z.max(axis=axis, keepdims=True)  # (a new array: exponentiated and normalised in place)
    del z  # (float16's float32 copy)
    cx.xp.exp(e, out=e)
    e /= e.sum(axis=axis, keepdims=True)
    return e.astype(x.dtype, copy=False)


# --------------------------------------------------------------------------
# SVMOutput: the prediction; its backward is the hinge loss's gradient by design

SVM_OUTPUT = (
    Attr("margin", "float", 1.0),
    Attr("regularization_coefficient", "float", 1.0),
    Attr("use_linear", "bool", False),
)


def _svm_infer(at: dict, x: Spec, label: Spec) -> Spec:
    floating("SVMOutput", x)
    same_dtype("SVMOutput", x, label)  # (MXNet's: "This layer requires uniform type")
    if len(x.shape) < 2 or label.shape != x.shape[:-1]:
        raise ShapeError(
            f"SVMOutput: needs data (..., classes) of rank 2 or more and label of its shape less the last "
            f"axis, got {x.shape} and {label.shape}"
        )
    return x


def _svm_vjp(F, at, g, y, x, label):
    """The gradient of the one-vs-rest hinge loss, the class on the last axis (MXNet's; the head
    gradient is not used). With m the margin and c the coefficient, at the label's class (its
    value truncated; a label outside [0, classes) has none) -2c (m - x) where x < m (L2, the
    default) or -c (L1, use_linear), at the others 2c (m + x) or c where x > -m; else zero (-0
    where MXNet's is)."""
    m, c = at["margin"], at["regularization_coefficient"]
    hot = F.one_hot(label, depth=int(x.shape[-1]), dtype=x.dtype.name)
    if at["use_linear"]:
        on = F.mul_scalar(F.lesser_scalar(x, scalar=m), scalar=-c)
        off = F.mul_scalar(F.greater_scalar(x, scalar=-m), scalar=c)
    else:  # (MXNet's: the hinge's value, 0 where it is not positive, times -c)
        on = F.mul_scalar(F.maximum_scalar(F.mul_scalar(F.rsub_scalar(x, scalar=m), scalar=2.0), scalar=0.0), scalar=-c)
        off = F.mul_scalar(
            F.minimum_scalar(F.mul_scalar(F.add_scalar(x, scalar=m), scalar=-2.0), scalar=0.0), scalar=-c
        )
    return F.where(hot, on, off), None


def _svm_vjp_scratch(at: dict, x: Spec, label: Spec) -> int:
    """What ``_svm_vjp`` holds at once, in data-sized arrays of its dtype: the one-hot labels,
    the label's class's term, and the others' two last steps (each step of a term a table op,
    let go as the next is made): 4 (and ``where``'s condition as bools, fewer bytes than one);
    one_hot's of the labels (as int64, its masks and the positions it writes), 48 bytes a label."""
    return 4 * prod(x.shape) * np.dtype(x.dtype).itemsize + 48 * prod(label.shape)


@defop(
    "SVMOutput",
    ("data", "label"),
    SVM_OUTPUT,
    infer=_svm_infer,
    vjp=_svm_vjp,
    vjp_scratch=_svm_vjp_scratch,
)
def _svm_output(cx, at, x, label):
    """The data itself, the scores of the classes on its last axis; its backward is the
    gradient of the hinge loss against ``label`` (integer-valued, of the data's shape less the
    last axis): squared (L2-SVM) or not (``use_linear``, L1-SVM), with ``margin`` and
    ``regularization_coefficient`` (MXNet's SVMOutput: the head gradient is not used)."""
    return x.copy()


# --------------------------------------------------------------------------
# spatial sampling: GridGenerator, BilinearSampler, SpatialTransformer (MXNet's spatial
# transformer network layers), ROIPooling


def _target_hw(name: str, at: dict) -> tuple[int, int]:
    """``target_shape`` (H, W) of an affine grid: two sizes of 2 or more (MXNet refuses 0; a
    size of 1 makes it divide by zero, a grid of NaN)."""
    ts = tuple(at["target_shape"])
    if len(ts) != 2:
        raise InvalidInput(f"{name}: target_shape must be (H, W), 2 values, got {ts}")
    if min(ts) < 2:
        raise InvalidInput(
            f"{name}: target_shape {ts} must be at least (2, 2) (a size of 0 has no grid, one of 1 no spacing "
            "between -1 and 1)"
        )
    return ts[0], ts[1]


def _theta_check(name: str, what: str, loc: Spec) -> None:
    """An affine transform's parameters: (N, 6), each row the 2 x 3 matrix row by row."""
    if len(loc.shape) != 2 or loc.shape[1] != 6:
        raise ShapeError(f"{name}: {what} must have shape (N, 6), a 2 x 3 affine matrix a sample, got {loc.shape}")


def _no_float16(name: str, x: Spec) -> None:
    """MXNet 1.9.1's affine grid takes float32 (and float64 here); float16 it refuses."""
    floating(name, x)
    if x.dtype == "float16":
        raise DTypeError(f"{name}: float16 is not supported (float32 or float64), as MXNet's affine grid")


GRID_GENERATOR = (Attr("transform_type", "str", REQUIRED), Attr("target_shape", "shape", (0, 0)))


def _gg_infer(at: dict, x: Spec) -> Spec:
    kind = at["transform_type"]
    if kind not in ("affine", "warp"):
        raise InvalidInput(f"GridGenerator: transform_type must be affine or warp, got {kind!r}")
    _no_float16("GridGenerator", x)
    if kind == "affine":
        _theta_check("GridGenerator", "affine data", x)
        h, w = _target_hw("GridGenerator", at)
        return Spec((x.shape[0], 2, h, w), x.dtype)
    if len(x.shape) != 4 or x.shape[1] != 2:
        raise ShapeError(f"GridGenerator: warp data must be an optical flow (N, 2, H, W), got shape {x.shape}")
    if x.shape[2] < 2 or x.shape[3] < 2:  # (MXNet's divides by H - 1 and W - 1: inf)
        raise ShapeError(f"GridGenerator: a warp's flow must be at least 2 x 2 in (H, W), got {x.shape[2:]}")
    return x


def _axis_points(xp: Any, n: int, dtype: Any) -> Any:
    """The n points of an affine grid along one axis: -1 + i * 2 / (n - 1), the step rounded to
    the dtype (MXNet's)."""
    return xp.arange(n, dtype=dtype) * dtype.type(2.0 / (n - 1)) - dtype.type(1.0)


def _gg_affine_f(F: Any, g: Any, x: Any) -> Any:
    """The affine grid's gradient: each row of the matrix gets g of its output channel summed
    against the grid's x, its y and 1."""
    n, _, h, w = (int(d) for d in g.shape)
    dt = x.dtype.name

    def points(k: int, shape: tuple[int, ...]) -> Any:
        p = F.add_scalar(F.mul_scalar(F.arange(start=0, stop=k, dtype=dt), scalar=2.0 / (k - 1)), scalar=-1.0)
        return F.reshape(p, shape=shape)

    gx = F.sum(F.mul(g, points(w, (1, 1, 1, w))), axis=(2, 3))
    gy = F.sum(F.mul(g, points(h, (1, 1, h, 1))), axis=(2, 3))
    return F.reshape(F.stack(gx, gy, F.sum(g, axis=(2, 3)), axis=2), shape=(n, 6))


def _gg_vjp(F, at, g, y, x):
    """affine: ``_gg_affine_f``; warp: g divided by the flow's scale, (W - 1) / 2 for x and
    (H - 1) / 2 for y."""
    if at["transform_type"] == "affine":
        return (_gg_affine_f(F, g, x),)
    h, w = int(x.shape[2]), int(x.shape[3])
    gx = F.div_scalar(F.slice_axis(g, axis=1, begin=0, end=1), scalar=(w - 1) / 2.0)
    gy = F.div_scalar(F.slice_axis(g, axis=1, begin=1, end=2), scalar=(h - 1) / 2.0)
    return (F.concat(gx, gy, dim=1),)


def _gg_vjp_scratch(at: dict, x: Spec) -> int:
    """affine: g times a row of the grid's points, one grid-sized array at a time (and the
    sums, of N x 2 elements); warp: each channel's slice and its quotient (their concat is the
    cotangent): the flow's size once."""
    out = _gg_infer(at, x)
    return out.nbytes + 64 * out.shape[0] + 8 * (out.shape[2] + out.shape[3])


def _gg_scratch(at: dict, x: Spec) -> int:
    """The forward's partial products, each a row or a column of the grid (the result is made
    from them in place): (N, 2, 1, W) and (N, 2, H, 1) at most, and the axes' points."""
    n, _, h, w = _gg_infer(at, x).shape
    return np.dtype(x.dtype).itemsize * (2 * n + 4) * (h + w)


@defop(
    "GridGenerator",
    ("data",),
    GRID_GENERATOR,
    infer=_gg_infer,
    vjp=_gg_vjp,
    scratch=_gg_scratch,
    vjp_scratch=_gg_vjp_scratch,
)
def _grid_generator(cx, at, x):
    """The sampling grid of a BilinearSampler, (N, 2, H, W): x coordinates on channel 0, y on
    channel 1, both normalised to [-1, 1] across the input image. ``affine``: data (N, 6), a
    2 x 3 matrix of each sample, applied to the points (x, y, 1) of a regular grid of
    ``target_shape`` (H, W) spanning [-1, 1]^2. ``warp``: data an optical flow (N, 2, H, W) in
    pixels, added to each pixel's own position and normalised (x / ((W - 1) / 2) - 1).
    float32 and float64 (MXNet's takes float32 alone; float16 is refused, as there)."""
    dt = x.dtype
    if at["transform_type"] == "affine":
        h, w = _target_hw("GridGenerator", at)
        theta = x.reshape(x.shape[0], 2, 3)
        px = _axis_points(cx.xp, w, dt)[None, None, None, :]
        py = _axis_points(cx.xp, h, dt)[None, None, :, None]
        out = theta[:, :, 0, None, None] * px + theta[:, :, 1, None, None] * py
        out += theta[:, :, 2, None, None]
        return out
    h, w = x.shape[2], x.shape[3]
    out = x + cx.xp.arange(w, dtype=dt)[None, None, None, :] * cx.xp.array([1, 0], dt)[None, :, None, None]
    out += cx.xp.arange(h, dtype=dt)[None, None, :, None] * cx.xp.array([0, 1], dt)[None, :, None, None]
    out[:, 0] /= dt.type((w - 1) / 2.0)
    out[:, 1] /= dt.type((h - 1) / 2.0)
    out -= dt.type(1.0)
    return out


def _sampler_check(name: str, x: Spec, grid: Spec) -> None:
    """Data (N, C, H, W) and a grid (N, 2, Ho, Wo) of its dtype."""
    floating(name, x)
    same_dtype(name, x, grid)
    if len(x.shape) != 4:
        raise ShapeError(f"{name}: data must be 4-D (N, C, H, W), got shape {x.shape}")
    if len(grid.shape) != 4 or grid.shape[1] != 2:
        raise ShapeError(f"{name}: the grid must be (N, 2, H, W), x and y on axis 1, got shape {grid.shape}")
    if grid.shape[0] != x.shape[0]:
        raise ShapeError(f"{name}: the grid has {grid.shape[0]} samples, the data {x.shape[0]}")
    _some_pixels(name, x)


def _some_pixels(name: str, x: Spec) -> None:
    """A sampler's image must have pixels to read (H and W of 1 or more)."""
    if not x.shape[2] or not x.shape[3]:
        raise ShapeError(f"{name}: the data's (H, W) {x.shape[2:]} has no pixels to sample")


def _bs_infer(at: dict, x: Spec, grid: Spec) -> Spec:
    _sampler_check("BilinearSampler", x, grid)
    return Spec(x.shape[:2] + grid.shape[2:], x.dtype)


CORNERS = ((0, 0), (0, 1), (1, 0), (1, 1))
"""The four pixels around a sample point, (dy, dx) from its top left one."""


def _sample(xp: Any, x: Any, grid: Any) -> Any:
    """``BilinearSampler``'s forward on arrays of one dtype: each output point reads the four
    pixels around (x, y) = ((gx + 1) (W - 1) / 2, (gy + 1) (H - 1) / 2), weighted by their
    nearness; a pixel outside the image reads 0."""
    n, c, h, w = x.shape
    ho, wo = grid.shape[2:]
    dt = x.dtype.type
    xr = (grid[:, 0:1] + dt(1)) * dt(w - 1) / dt(2)
    yr = (grid[:, 1:2] + dt(1)) * dt(h - 1) / dt(2)
    x0, y0 = xp.floor(xr), xp.floor(yr)
    fx, fy = xr - x0, yr - y0
    flat = x.reshape(n * c * h * w)
    base = (xp.arange(n * c, dtype=np.int64) * (h * w)).reshape(n, c, 1, 1)
    out = xp.zeros((n, c, ho, wo), x.dtype)
    for dy, dx in CORNERS:
        xc, yc = x0 + dt(dx), y0 + dt(dy)
        inside = (xc >= 0) & (xc <= w - 1) & (yc >= 0) & (yc <= h - 1)
        at = xp.where(inside, yc * dt(w) + xc, dt(0)).astype(np.int64)
        v = xp.where(inside, flat[base + at], dt(0))  # (N, C, Ho, Wo)
        wt = (fx if dx else dt(1) - fx) * (fy if dy else dt(1) - fy)
        out += v * wt
    return out


def _sample_f(F: Any, x: Any, grid: Any) -> tuple[list[Any], list[Any], list[Any], Any, Any]:
    """What the sampler's VJP needs, with the table's ops: for each corner its flat indices
    into the data (int64 (N, C, Ho, Wo), 0 where it is outside), whether it is inside (as
    the data's dtype, (N, 1, Ho, Wo)) and the value it reads (0 outside); and the fractions
    (fx, fy) of the sample points past their top left pixel (the floor's gradient is zero,
    so these carry the points' own)."""
    n, c, h, w = (int(d) for d in x.shape)
    xr = F.mul_scalar(F.add_scalar(F.slice_axis(grid, axis=1, begin=0, end=1), scalar=1.0), scalar=(w - 1) / 2.0)
    yr = F.mul_scalar(F.add_scalar(F.slice_axis(grid, axis=1, begin=1, end=2), scalar=1.0), scalar=(h - 1) / 2.0)
    x0, y0 = F.floor(xr), F.floor(yr)
    fx, fy = F.sub(xr, x0), F.sub(yr, y0)
    flat = F.reshape(x, shape=(n * c * h * w,))
    base = F.reshape(F.arange(start=0, stop=n * c * h * w, step=h * w, dtype="int64"), shape=(n, c, 1, 1))
    zero = F.zeros_like(x0)
    idx, inside, vals = [], [], []
    for dy, dx in CORNERS:
        xc, yc = F.add_scalar(x0, scalar=float(dx)), F.add_scalar(y0, scalar=float(dy))
        ins = F.mul(
            F.mul(F.greater_equal_scalar(xc, scalar=0.0), F.lesser_equal_scalar(xc, scalar=w - 1.0)),
            F.mul(F.greater_equal_scalar(yc, scalar=0.0), F.lesser_equal_scalar(yc, scalar=h - 1.0)),
        )
        at = F.astype(F.where(ins, F.add(F.mul_scalar(yc, scalar=float(w)), xc), zero), dtype="int64")
        i = F.add(base, at)
        idx.append(i)
        inside.append(ins)
        v = F.take(flat, i)
        vals.append(F.where(ins, v, F.zeros_like(v)))
    return idx, inside, vals, fx, fy


def _weights(F: Any, fx: Any, fy: Any) -> list[Any]:
    """Each corner's bilinear weight, (1 - fx or fx) (1 - fy or fy), in ``CORNERS``' order."""
    gx, gy = F.rsub_scalar(fx, scalar=1.0), F.rsub_scalar(fy, scalar=1.0)
    return [F.mul(fx if dx else gx, fy if dy else gy) for dy, dx in CORNERS]


def _sampler_vjp_f(F: Any, g: Any, x: Any, grid: Any) -> tuple[Any, Any]:
    """The sampler's cotangents of data and grid (MXNet's, to the last term): the data's is g
    times each corner's weight added into the pixel it read (those inside: one take_grad of
    the four corners' shares); the grid's is the derivative of the bilinear weights along x
    and y, summed over the channels, times the grid's scale ((W - 1) / 2, (H - 1) / 2)."""
    n, c, h, w = (int(d) for d in x.shape)
    if not n * c:  # (nothing sampled; and the table's reshape reads a 0 as "this axis as it is")
        return F.zeros_like(x), F.zeros_like(grid)
    idx, inside, vals, fx, fy = _sample_f(F, x, grid)
    shares = [F.mul(g, F.where(ins, wt, F.zeros_like(wt))) for ins, wt in zip(inside, _weights(F, fx, fy))]
    gx = F.take_grad(F.concat(*shares, dim=0), F.concat(*idx, dim=0), axis=0, mode="clip", shape=(n * c * h * w,))
    del shares, idx
    gx = F.reshape(gx, shape=(n, c, h, w))
    v00, v01, v10, v11 = vals
    along_x = F.add(F.mul(F.rsub_scalar(fy, scalar=1.0), F.sub(v01, v00)), F.mul(fy, F.sub(v11, v10)))
    along_y = F.add(F.mul(F.rsub_scalar(fx, scalar=1.0), F.sub(v10, v00)), F.mul(fx, F.sub(v11, v01)))
    del vals, v00, v01, v10, v11
    ggx = F.mul_scalar(F.sum(F.mul(g, along_x), axis=1, keepdims=True), scalar=(w - 1) / 2.0)
    ggy = F.mul_scalar(F.sum(F.mul(g, along_y), axis=1, keepdims=True), scalar=(h - 1) / 2.0)
    return gx, F.concat(ggx, ggy, dim=1)


def _bs_vjp(F, at, g, y, x, grid):
    """``_sampler_vjp_f``; float16 in float32, as the forward."""
    gc, xc, gridc = _up32(F, g, x, grid)
    gx, ggrid = _sampler_vjp_f(F, gc, xc, gridc)
    return _back_to(F, gx, x), _back_to(F, ggrid, grid)


def _sampled(x: Spec, grid: Spec) -> int:
    """The elements of a sampler's output, (N, C, Ho, Wo)."""
    return x.shape[0] * x.shape[1] * grid.shape[2] * grid.shape[3]


def _bs_scratch(at: dict, x: Spec, grid: Spec) -> int:
    """A corner's flat indices (int64) and the values it reads, the products added in, and the
    grid-sized coordinates (seven of them, int64 or the computing dtype), at once; float16's
    copies in float32 besides."""
    size = 4 if x.dtype == "float16" else np.dtype(x.dtype).itemsize
    out, points = _sampled(x, grid), grid.shape[0] * grid.shape[2] * grid.shape[3]
    f16 = 4 * (prod(x.shape) + prod(grid.shape) + out) if x.dtype == "float16" else 0
    return (8 + 3 * size) * out + 8 * 8 * points + f16


def _bs_vjp_scratch(at: dict, x: Spec, grid: Spec) -> int:
    """What ``_sampler_vjp_f`` holds at once, in output-sized arrays: each corner's indices
    (int64) and values, the four shares and their concat (with the indices' concat), the
    take_grad's data-sized result and the grid's terms; float16's copies in float32."""
    size = 4 if x.dtype == "float16" else np.dtype(x.dtype).itemsize
    out, points = _sampled(x, grid), grid.shape[0] * grid.shape[2] * grid.shape[3]
    f16 = 4 * 2 * (prod(x.shape) + prod(grid.shape) + out) if x.dtype == "float16" else 0
    return (4 * 8 + 8 * 8 + 22 * size) * out + prod(x.shape) * size + 40 * 8 * points + f16


@defop(
    "BilinearSampler",
    ("data", "grid"),
    (Attr("cudnn_off", "bool", None),),  # (MXNet's: optional, None)
    infer=_bs_infer,
    vjp=_bs_vjp,
    work=lambda at, x, grid: 4 * _sampled(x, grid),
    scratch=_bs_scratch,
    vjp_scratch=_bs_vjp_scratch,
)
def _bilinear_sampler(cx, at, x, grid):
    """Data (N, C, H, W) sampled at a grid (N, 2, Ho, Wo) of points, x on channel 0 and y on
    channel 1, normalised to [-1, 1] across the image (-1 the first pixel, 1 the last): each
    output point is the bilinear interpolation of the four pixels around it, a pixel outside
    the image reading 0 (a point past the border fades to 0 over one pixel). The gradient
    flows to data and grid. ``cudnn_off`` is accepted and changes nothing. float16 is
    computed in float32 and rounded once."""
    with np.errstate(invalid="ignore"):  # (a grid of infinities: NaN, as MXNet's)
        return _sample(cx.xp, _in_float32(x), _in_float32(grid)).astype(x.dtype, copy=False)


SPATIAL_TRANSFORMER = (
    Attr("target_shape", "shape", (0, 0)),
    Attr("transform_type", "str", REQUIRED),
    Attr("sampler_type", "str", REQUIRED),
    Attr("cudnn_off", "bool", None),  # (MXNet's: optional, None)
)


def _grid_at(at: dict) -> dict:
    """The GridGenerator of a SpatialTransformer: affine, of its target_shape."""
    return OPS["GridGenerator"].parse_attrs({"transform_type": "affine", "target_shape": at["target_shape"]})


def _st_infer(at: dict, x: Spec, loc: Spec) -> Spec:
    if at["transform_type"] != "affine":
        raise InvalidInput(f"SpatialTransformer: transform_type must be affine, got {at['transform_type']!r}")
    if at["sampler_type"] != "bilinear":
        raise InvalidInput(f"SpatialTransformer: sampler_type must be bilinear, got {at['sampler_type']!r}")
    floating("SpatialTransformer", x)
    same_dtype("SpatialTransformer", x, loc)
    if x.dtype == "float16":  # (MXNet 1.9.1's fails on it: no float16 matrix product on the CPU)
        raise DTypeError("SpatialTransformer: float16 is not supported (float32 or float64)")
    if len(x.shape) != 4:
        raise ShapeError(f"SpatialTransformer: data must be 4-D (N, C, H, W), got shape {x.shape}")
    _some_pixels("SpatialTransformer", x)
    _theta_check("SpatialTransformer", "loc", loc)
    if loc.shape[0] != x.shape[0]:
        raise ShapeError(f"SpatialTransformer: loc has {loc.shape[0]} samples, the data {x.shape[0]}")
    h, w = _target_hw("SpatialTransformer", at)
    return Spec(x.shape[:2] + (h, w), x.dtype)


def _st_vjp(F, at, g, y, x, loc):
    """The sampler's cotangents at the affine grid; loc's the grid's through the affine map."""
    grid = F.GridGenerator(loc, **_grid_at(at))
    gx, ggrid = _sampler_vjp_f(F, g, x, grid)
    return gx, _gg_affine_f(F, ggrid, loc)


def _st_specs(at: dict, x: Spec, loc: Spec) -> tuple[Spec, Spec]:
    """The grid a SpatialTransformer samples at, and its output."""
    out = _st_infer(at, x, loc)
    return Spec((x.shape[0], 2) + out.shape[2:], x.dtype), out


def _st_scratch(at: dict, x: Spec, loc: Spec) -> int:
    """The affine grid (and GridGenerator's own arrays) and the sampler's."""
    grid, _ = _st_specs(at, x, loc)
    return 3 * grid.nbytes + _bs_scratch({}, x, grid)


def _st_vjp_scratch(at: dict, x: Spec, loc: Spec) -> int:
    """The affine grid, the sampler's VJP and the affine grid's (of the grid's cotangent)."""
    grid, _ = _st_specs(at, x, loc)
    return 3 * grid.nbytes + _bs_vjp_scratch({}, x, grid) + _gg_vjp_scratch(_grid_at(at), loc)


@defop(
    "SpatialTransformer",
    ("data", "loc"),
    SPATIAL_TRANSFORMER,
    infer=_st_infer,
    vjp=_st_vjp,
    work=lambda at, x, loc: 4 * prod(_st_infer(at, x, loc).shape),
    scratch=_st_scratch,
    vjp_scratch=_st_vjp_scratch,
)
def _spatial_transformer(cx, at, x, loc):
    """A spatial transformer network's sampling layer: data (N, C, H, W) sampled bilinearly
    (``BilinearSampler``'s, a point outside the image reading 0) on the affine grid of each
    sample's 2 x 3 matrix in ``loc`` (N, 6) (``GridGenerator``'s, of ``target_shape`` (H, W)):
    (N, C, H, W) of target_shape. transform_type must be ``affine`` and sampler_type
    ``bilinear`` (MXNet's only ones); ``cudnn_off`` changes nothing. The gradient flows to data
    and loc. float32 and float64."""
    with np.errstate(invalid="ignore", over="ignore"):  # (loc of infinities: NaN, as MXNet's)
        grid = OPS["GridGenerator"].forward(cx, _grid_at(at), loc)
        return _sample(cx.xp, x, grid)


# --------------------------------------------------------------------------
# ROIPooling: max pooling of regions of interest (Fast R-CNN)

ROI_POOLING = (Attr("pooled_size", "shape", REQUIRED), Attr("spatial_scale", "float", REQUIRED))

LOWEST = float(np.finfo(np.float32).min)
"""What MXNet 1.9.1's ROIPooling starts each bin's maximum at (-FLT_MAX, in any dtype): a
non-empty bin with nothing above it (all -inf or NaN) keeps it, as -inf in float16."""


def _roi_check(name: str, at: dict, x: Spec, rois: Spec) -> tuple[int, int]:
    """Data (N, C, H, W), rois (R, 5) of its dtype, pooled_size (h, w) positive and
    spatial_scale in [0, 1] (MXNet's checks): the pooled (h, w)."""
    floating(name, x)
    same_dtype(name, x, rois)
    ps = tuple(at["pooled_size"])
    if len(ps) != 2 or min(ps) < 1:
        raise InvalidInput(f"{name}: pooled_size must be 2 positive sizes (h, w), got {ps}")
    scale = at["spatial_scale"]
    if not 0.0 <= scale <= 1.0:
        raise InvalidInput(
            f"{name}: spatial_scale must be in [0, 1] (the feature map's size over the image's), got {scale}"
        )
    if len(x.shape) != 4:
        raise ShapeError(f"{name}: data must be 4-D (N, C, H, W), got shape {x.shape}")
    if len(rois.shape) != 2 or rois.shape[1] != 5:
        raise ShapeError(
            f"{name}: rois must have shape (R, 5), rows of (batch index, x1, y1, x2, y2), got {rois.shape}"
        )
    return ps[0], ps[1]


def _roi_infer(at: dict, x: Spec, rois: Spec) -> Spec:
    ph, pw = _roi_check("ROIPooling", at, x, rois)
    return Spec((rois.shape[0], x.shape[1], ph, pw), x.dtype)


def _c_round(v: Any) -> int:
    """C's round (half away from zero) of a finite number, exactly, as an int (a size past
    the image's, clipped to +-2^40, ends up clipped to it all the same)."""
    a = abs(float(v))
    r = np.floor(a)
    r += a - r >= 0.5
    return int(min(r, 2.0**40)) * (1 if v >= 0 else -1)


def _roi_bins(name: str, at: dict, x: Any, rois: Any) -> tuple[Any, Any]:
    """Each region's bins' maxima (R, C, ph, pw) and where they are, as flat indices into the
    data (int64; -1 where a bin is empty or has nothing above ``LOWEST``), as MXNet 1.9.1's:
    a region's corners are its coordinates times spatial_scale, rounded (half away from zero;
    in the data's dtype); it spans at least 1 x 1 pixel, inclusive of its corners; bin i of its
    ph rows runs from floor(i * height / ph) to ceil((i + 1) * height / ph), clipped to the
    image; the first maximum in row-major order is taken, NaN passed over."""
    n, c, h, w = x.shape
    ph, pw = tuple(at["pooled_size"])
    dt = x.dtype.type
    r = rois.shape[0]
    out = np.zeros((r, c, ph, pw), x.dtype)
    idx = np.full((r, c, ph, pw), -1, np.int64)
    lowest = dt(-np.inf) if dt is np.float16 else dt(LOWEST)  # (-FLT_MAX rounds to -inf in float16)
    chans = np.arange(c)
    scale = dt(at["spatial_scale"])
    for k in range(r):
        row = rois[k]
        if not np.isfinite(row).all():
            raise InvalidInput(f"{name}: roi {k} is not finite: {row.tolist()}")
        if not -1 < row[0] < n:  # (its index truncated, as MXNet's)
            raise InvalidInput(f"{name}: roi {k} has batch index {row[0].item()}, outside the data's {n} samples")
        b = int(row[0])
        sw, sh, ew, eh = (_c_round(v * scale) for v in row[1:])
        bin_h = dt(max(eh - sh + 1, 1)) / dt(ph)
        bin_w = dt(max(ew - sw + 1, 1)) / dt(pw)
        for i in range(ph):
            hs = min(max(int(np.floor(dt(i) * bin_h)) + sh, 0), h)
            he = min(max(int(np.ceil(dt(i + 1) * bin_h)) + sh, 0), h)
            for j in range(pw):
                ws = min(max(int(np.floor(dt(j) * bin_w)) + sw, 0), w)
                we = min(max(int(np.ceil(dt(j + 1) * bin_w)) + sw, 0), w)
                if he <= hs or we <= ws:
                    continue  # (an empty bin: 0, no gradient)
                win = x[b, :, hs:he, ws:we].reshape(c, (he - hs) * (we - ws))
                win = np.where(np.isnan(win), -np.inf, win)
                at_max = win.argmax(axis=1)
                m = win[chans, at_max]
                found = m > lowest
                out[k, :, i, j] = np.where(found, m, lowest)
                flat = ((b * c + chans) * h + hs + at_max // (we - ws)) * w + ws + at_max % (we - ws)
                idx[k, :, i, j] = np.where(found, flat, -1)
    return out, idx


def _roi_vjp(F, at, g, y, x, rois):
    """g added into the element each bin took its maximum from (``roi_pooling_argmax``); an
    empty bin's goes nowhere. rois get none (MXNet's: zeros)."""
    if not prod(tuple(int(d) for d in x.shape)):  # (no maxima; the table's reshape reads a 0 as "as it is")
        return F.zeros_like(x), None
    idx = F.roi_pooling_argmax(x, rois, **at)
    kept = F.where(F.greater_equal_scalar(idx, scalar=0.0), g, F.zeros_like(g))
    gx = F.take_grad(kept, idx, axis=0, mode="clip", shape=(prod(tuple(int(d) for d in x.shape)),))
    return F.reshape(gx, shape=tuple(int(d) for d in x.shape)), None


def _roi_work(at: dict, x: Spec, rois: Spec) -> int:
    """At most the whole image's channels a bin (a region as large as the image, a bin of it
    all): the elements read, bounded by R * C * H * W * 4 (a bin's span rounds out by a pixel
    at most either side), and a bin's own steps, four numpy calls each (22 us measured)."""
    return rois.shape[0] * (4 * prod(x.shape[1:]) + prod(at["pooled_size"]) * 4 * STEP_WORK)


def _roi_scratch(at: dict, x: Spec, rois: Spec) -> int:
    """The bins' indices (int64, of the output's size) and one bin's window at a time (a copy
    of at most the image's channels, with NaN passed over, and its argmax): the data's own
    C * H * W elements, three times, and the channels' positions."""
    out = prod(_roi_infer(at, x, rois).shape)
    item = np.dtype(x.dtype).itemsize
    return 8 * out + 3 * prod(x.shape[1:]) * (item + 8)


def _roi_vjp_scratch(at: dict, x: Spec, rois: Spec) -> int:
    """The indices (and their mask), g kept where they point, and take_grad's flat result (the
    data's size), with ``_roi_scratch``'s own while the indices are found."""
    out = prod(_roi_infer(at, x, rois).shape)
    item = np.dtype(x.dtype).itemsize
    return _roi_scratch(at, x, rois) + out * (16 + 2 * item) + prod(x.shape) * item


@defop(
    "ROIPooling",
    ("data", "rois"),
    ROI_POOLING,
    infer=_roi_infer,
    vjp=_roi_vjp,
    work=_roi_work,
    scratch=_roi_scratch,
    vjp_scratch=_roi_vjp_scratch,
)
def _roi_pooling(cx, at, x, rois):
    """Max pooling of regions of interest (Fast R-CNN's), (R, C, ph, pw): each row of rois
    (R, 5), (batch index, x1, y1, x2, y2) in the image's pixels, scaled by ``spatial_scale``
    onto the data (N, C, H, W) and rounded, its corners included, split into ``pooled_size``
    (ph, pw) bins, each the maximum of its pixels; a bin outside the data is 0. The gradient
    goes to each bin's maximum (the first, in row-major order), none to rois. A batch index
    is truncated to an integer and must be a sample of the data."""
    return _roi_bins("ROIPooling", at, x, rois)[0]


@defop(
    "roi_pooling_argmax",
    ("data", "rois"),
    ROI_POOLING,
    infer=lambda at, x, rois: Spec(_roi_infer(at, x, rois).shape, "int64"),
    work=_roi_work,
    scratch=lambda at, x, rois: (
        prod(_roi_infer(at, x, rois).shape) * np.dtype(x.dtype).itemsize + _roi_scratch(at, x, rois)
    ),
)
def _roi_pooling_argmax(cx, at, x, rois):
    """Where ROIPooling's bins took their maxima: flat indices into the data (int64, of
    ROIPooling's output shape), -1 where a bin took none (empty, or nothing above
    -FLT_MAX). ROIPooling's gradient scatters into them."""
    return _roi_bins("roi_pooling_argmax", at, x, rois)[1]


# --------------------------------------------------------------------------
# Correlation: FlowNet's correlation of two feature maps

CORRELATION = (
    Attr("kernel_size", "int", 1),
    Attr("max_displacement", "int", 1),
    Attr("stride1", "int", 1),
    Attr("stride2", "int", 1),
    Attr("pad_size", "int", 0),
    Attr("is_multiply", "bool", True),
)
WHICH = Attr("which", "int", 0)
"""A Correlation gradient helper's input: 0 for data1, 1 for data2."""


def _corr_geometry(name: str, at: dict, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """(top_h, top_w, radius, grid width) of a Correlation of data of ``shape``, MXNet's: the
    displacements -max_displacement / stride2 .. + of it, times stride2, on each axis (the
    output's channels: the grid of them, y-major); the output's positions every stride1 pixels
    where the kernel and the largest displacement fit in the padded data."""
    k, d, s1, s2, pad = (at[a] for a in ("kernel_size", "max_displacement", "stride1", "stride2", "pad_size"))
    if k < 1 or k % 2 == 0:
        raise InvalidInput(f"{name}: kernel_size must be a positive odd number, got {k}")
    if d < 0 or pad < 0:
        raise InvalidInput(f"{name}: max_displacement and pad_size must not be negative, got {d} and {pad}")
    if s1 < 1 or s2 < 1:
        raise InvalidInput(f"{name}: stride1 and stride2 must be at least 1, got {s1} and {s2}")
    border = d + (k - 1) // 2
    th = -(-(shape[2] + 2 * pad - 2 * border) // s1)
    tw = -(-(shape[3] + 2 * pad - 2 * border) // s1)
    if th < 1 or tw < 1:
        raise ShapeError(
            f"{name}: the kernel ({k}) and max_displacement ({d}) do not fit in the data's (H, W) {shape[2:]} "
            f"padded by {pad}"
        )
    r = d // s2
    return th, tw, r, 2 * r + 1


def _corr_check(name: str, at: dict, a: Spec, b: Spec) -> tuple[int, int, int, int]:
    floating(name, a)
    same_dtype(name, a, b)
    if len(a.shape) != 4:
        raise ShapeError(f"{name}: data must be 4-D (N, C, H, W), got shape {a.shape}")
    if a.shape != b.shape:  # (MXNet 1.9.1 reads past the smaller one)
        raise ShapeError(f"{name}: data1 and data2 must have one shape, got {a.shape} and {b.shape}")
    if a.shape[1] == 0:  # (a mean over no channels; MXNet 1.9.1 fails)
        raise ShapeError(f"{name}: data must have at least one channel, got shape {a.shape}")
    return _corr_geometry(name, at, a.shape)


def _corr_infer(at: dict, a: Spec, b: Spec) -> Spec:
    th, tw, _, gw = _corr_check("Correlation", at, a, b)
    return Spec((a.shape[0], gw * gw, th, tw), a.dtype)


def _corr_pairs(at: dict, shape: tuple[int, ...]) -> Any:
    """Each (output channel, its data1 window, its data2 window) of a Correlation, one for
    every kernel offset: slices of the padded data, (N, C, top_h, top_w) each."""
    th, tw, r, gw = _corr_geometry("Correlation", at, shape)
    k, d, s1, s2 = (at[a] for a in ("kernel_size", "max_displacement", "stride1", "stride2"))
    for tc in range(gw * gw):
        dy, dx = (tc // gw - r) * s2, (tc % gw - r) * s2
        for h in range(k):
            for w in range(k):
                y, x = d + h, d + w  # (MXNet's CPU kernel: the window starts at the point, not around it)
                one = np.s_[:, :, y : y + (th - 1) * s1 + 1 : s1, x : x + (tw - 1) * s1 + 1 : s1]
                two = np.s_[:, :, y + dy : y + dy + (th - 1) * s1 + 1 : s1, x + dx : x + dx + (tw - 1) * s1 + 1 : s1]
                yield tc, one, two


def _padded(at: dict, x: Any) -> Any:
    p = at["pad_size"]
    return np.pad(_in_float32(x), ((0, 0), (0, 0), (p, p), (p, p)))


def _cropped(at: dict, z: Any, like: Any) -> Any:
    p = at["pad_size"]
    return z[:, :, p : z.shape[2] - p, p : z.shape[3] - p].astype(like.dtype)


def _corr_norm(at: dict, x: Any) -> float:
    """The number of products each output is the mean of: kernel_size^2 C."""
    return float(at["kernel_size"] ** 2 * x.shape[1])


def _sign(d: Any) -> Any:
    """MXNet's sign of an absolute difference's gradient: 1 where data1 >= data2, else -1."""
    return np.where(d >= 0, np.float32(1), np.float32(-1)).astype(d.dtype)


def _corr_vjp(F, at, g, y, a, b):
    """``correlation_grad`` of each input."""
    return (
        F.correlation_grad(g, a, b, which=0, **at),
        F.correlation_grad(g, a, b, which=1, **at),
    )


def _corr_bytes(at: dict, a: Spec, padded: int) -> int:
    """Working arrays of the kernels: ``padded`` padded copies of the data (float32 for float16)
    and a window's products (the output's channel at a time)."""
    n, c, h, w = a.shape
    size = 4 if a.dtype == "float16" else np.dtype(a.dtype).itemsize
    p = at["pad_size"]
    th, tw, _, gw = _corr_geometry("Correlation", at, a.shape)
    f16 = 4 * 2 * prod(a.shape) if a.dtype == "float16" else 0
    return size * (padded * n * c * (h + 2 * p) * (w + 2 * p) + 3 * n * c * th * tw + n * gw * gw * th * tw) + f16


def _corr_work(at: dict, a: Spec, b: Spec) -> int:
    """Each output's products over its window, and a Python step (two numpy calls) for each
    displacement and kernel offset."""
    out = _corr_infer(at, a, b)
    steps = out.shape[1] * at["kernel_size"] ** 2
    return prod(out.shape) * at["kernel_size"] ** 2 * a.shape[1] + 2 * steps * STEP_WORK


@defop(
    "Correlation",
    ("data1", "data2"),
    CORRELATION,
    infer=_corr_infer,
    vjp=_corr_vjp,
    work=_corr_work,
    scratch=lambda at, a, b: _corr_bytes(at, a, 2),
    vjp_scratch=lambda at, a, b: _corr_bytes(at, a, 3),  # (correlation_grad of one input, then the other)
)
def _correlation(cx, at, a, b):
    """FlowNet's correlation layer (MXNet's): for each displacement (dy, dx) of the grid
    -max_displacement .. max_displacement in steps of stride2 (the output's channels, y-major)
    and each position every stride1 pixels, the mean over a kernel_size^2 window and the
    channels of data1 times data2 displaced (``is_multiply``) or of their absolute
    difference; both padded by ``pad_size`` zeros. (N, (2 r + 1)^2, top_h, top_w), r =
    max_displacement // stride2. float16 is computed in float32 and rounded once."""
    p1, p2 = _padded(at, a), _padded(at, b)
    out = np.zeros(_corr_infer(at, Spec(a.shape, a.dtype.name), Spec(b.shape, b.dtype.name)).shape, p1.dtype)
    for tc, one, two in _corr_pairs(at, a.shape):
        if at["is_multiply"]:
            out[:, tc] += (p1[one] * p2[two]).sum(axis=1)
        else:
            out[:, tc] += np.abs(p1[one] - p2[two]).sum(axis=1)
    out /= out.dtype.type(_corr_norm(at, a))
    return out.astype(a.dtype, copy=False)


def _cg_infer(at: dict, g: Spec, a: Spec, b: Spec) -> Spec:
    if at["which"] not in (0, 1):
        raise InvalidInput(f"correlation_grad: which must be 0 (data1) or 1 (data2), got {at['which']}")
    want = _corr_infer(at, a, b)
    if g.shape != want.shape or g.dtype != a.dtype:
        raise ShapeError(f"correlation_grad: the gradient must be {want.shape} {a.dtype}, got {g.shape} {g.dtype}")
    return a


def _cg_vjp(F, at, gg, y, g, a, b):
    """The gradient is linear in g and, multiplied, in the other input: <grad_1(g; b), u> is
    <g, Correlation(u, b)>, so the head gradient's cotangent is a Correlation with u in the
    input's place and the other input's is the other gradient with u in this one's. With
    absolute differences it is ``correlation_sign_dot`` (the signs are constant: nothing to
    data1 and data2)."""
    corr = {k: at[k] for k in at if k != "which"}
    if at["is_multiply"]:
        if at["which"] == 0:  # (data2's: data2's gradient of Correlation(u, data2))
            return F.Correlation(gg, b, **corr), None, F.correlation_grad(g, gg, b, which=1, **corr)
        return F.Correlation(a, gg, **corr), F.correlation_grad(g, a, gg, which=0, **corr), None
    d = F.correlation_sign_dot(gg, a, b, **at)
    return (d if at["which"] == 0 else F.negative(d)), None, None


@defop(
    "correlation_grad",
    ("data", "data1", "data2"),
    CORRELATION + (WHICH,),
    infer=_cg_infer,
    vjp=_cg_vjp,
    work=lambda at, g, a, b: _corr_work(at, a, b),
    scratch=lambda at, g, a, b: _corr_bytes(at, a, 3),
    vjp_scratch=lambda at, g, a, b: _corr_bytes(at, a, 3),  # (one helper or Correlation at a time)
)
def _correlation_grad(cx, at, g, a, b):
    """Correlation's gradient of data1 (``which`` 0) or data2 (1) for head gradient ``data``:
    each output's g over kernel_size^2 C, times the other input's value at the pair
    (is_multiply), or times the sign of data1 - data2 (+1 where they are equal, MXNet's;
    negated for data2), added into the input's padded window and cropped."""
    p1, p2 = _padded(at, a), _padded(at, b)
    gc = _in_float32(g)
    z = np.zeros_like(p1)
    which = at["which"]
    for tc, one, two in _corr_pairs(at, a.shape):
        gt = gc[:, tc : tc + 1]
        if at["is_multiply"]:
            z[one if which == 0 else two] += gt * (p2[two] if which == 0 else p1[one])
        elif which == 0:
            z[one] += gt * _sign(p1[one] - p2[two])
        else:
            z[two] -= gt * _sign(p1[one] - p2[two])
    z /= z.dtype.type(_corr_norm(at, a))
    return _cropped(at, z, a)


def _csd_infer(at: dict, u: Spec, a: Spec, b: Spec) -> Spec:
    if at["which"] not in (0, 1):
        raise InvalidInput(f"correlation_sign_dot: which must be 0 (data1) or 1 (data2), got {at['which']}")
    out = _corr_infer(at, a, b)
    if u.shape != a.shape or u.dtype != a.dtype:
        raise ShapeError(f"correlation_sign_dot: data must be {a.shape} {a.dtype}, got {u.shape} {u.dtype}")
    return out


def _csd_vjp(F, at, gg, y, u, a, b):
    """Linear in u: <sign_dot(u), gg> is <grad_1(gg), u> (which 0), or -<grad_2(gg), u> (1)."""
    d = F.correlation_grad(gg, a, b, **at)
    return (d if at["which"] == 0 else F.negative(d)), None, None


@defop(
    "correlation_sign_dot",
    ("data", "data1", "data2"),
    CORRELATION + (WHICH,),
    infer=_csd_infer,
    vjp=_csd_vjp,
    work=lambda at, u, a, b: _corr_work(at, a, b),
    scratch=lambda at, u, a, b: _corr_bytes(at, a, 3),
    vjp_scratch=lambda at, u, a, b: _corr_bytes(at, a, 3),  # (one helper or Correlation at a time)
)
def _correlation_sign_dot(cx, at, u, a, b):
    """The head gradient's cotangent of an absolute-difference Correlation's gradient: for each
    output, the mean over its windows of ``data`` (at data1's window, ``which`` 0, or data2's,
    1) times the sign of data1 - data2 (+1 where equal), of the Correlation's shape."""
    p1, p2, pu = _padded(at, a), _padded(at, b), _padded(at, u)
    out = np.zeros(_corr_infer(at, Spec(a.shape, a.dtype.name), Spec(b.shape, b.dtype.name)).shape, p1.dtype)
    for tc, one, two in _corr_pairs(at, a.shape):
        out[:, tc] += (pu[one if at["which"] == 0 else two] * _sign(p1[one] - p2[two])).sum(axis=1)
    out /= out.dtype.type(_corr_norm(at, a))
    return out.astype(a.dtype, copy=False)
