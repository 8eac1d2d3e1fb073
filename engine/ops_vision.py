"""Image and normalization ops: LRN, UpSampling, GroupNorm, Crop, SoftmaxActivation, SVMOutput.

MXNet 1.9.1's legacy image layers, with its shapes, defaults and checks. Their VJPs are
written with the table's ops, as ``ops_nn``'s are. LRN, GroupNorm and SoftmaxActivation compute
float16 data in float32 and round once (MXNet 1.9.1's CPU kernels for them fail on float16, or
overflow on a normalisation's sums of squares), their float32 copies declared as working memory.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import InvalidInput, ShapeError
from .ops import same_dtype
from .ops_array import NUM_ARGS
from .ops_index import UFUNC_BUFFER
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
        raise InvalidInput("GroupNorm: output_mean_var is not supported (one output)")
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


@defop("Crop", ("data", "*crop_like"), CROP, infer=_crop_infer, vjp=_crop_vjp)
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
