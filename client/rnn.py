"""``nd.RNN``: MXNet's fused recurrent layers (vanilla RNN with tanh or relu, LSTM, GRU),
multi-layer and bidirectional, with MXNet's packed parameter vector.

The layer is composed of the table's ops: one ``FullyConnected`` for a layer's input
projection over every time step at once, then a dozen small ops a step. It is recorded op by
op as any Python code is, so its gradients come from those ops' (of any order), and a remote
call queues its ops in one batch with the rest of the step.

>>> from gradserve import nd
>>> x, h0 = nd.ones((2, 1, 1)), nd.zeros((1, 1, 1))
>>> y = nd.RNN(x, nd.array([0.5, 1.0, 0.0, 0.0]), h0, state_size=1, num_layers=1, mode="rnn_relu")
>>> y.asnumpy().ravel().tolist()
[0.5, 1.0]
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from .engine.errors import DTypeError, InvalidInput, ShapeError
from .engine.optable import FLOAT_DTYPES, OPS
from .ndarray import NDArray, invoke, write_into

GATES = {"rnn_relu": 1, "rnn_tanh": 1, "lstm": 4, "gru": 3}
"""Each mode's gates: the rows of its weights are that many blocks of ``state_size``, in
MXNet's order (LSTM: input, forget, cell, output; GRU: reset, update, new)."""


def param_count(
    mode: str,
    state_size: int,
    num_layers: int,
    input_size: int,
    bidirectional: bool = False,
    projection_size: int | None = None,
) -> int:
    """The length of the ``parameters`` vector of an RNN layer so shaped (MXNet's layout: every
    layer's and direction's ``i2h`` and ``h2h`` weights (and ``h2r`` with a projection), then
    every ``i2h`` and ``h2h`` bias)."""
    g, h, d = GATES[mode] * state_size, state_size, 2 if bidirectional else 1
    out = projection_size or h
    n = 0
    for layer in range(num_layers):
        ins = input_size if layer == 0 else out * d
        n += d * (g * ins + g * out + 2 * g + (out * h if projection_size else 0))
    return n


def _op(name: str, *arrays: NDArray, **attrs: Any) -> NDArray:
    return invoke(OPS[name], arrays, attrs)


def _positive(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
        raise InvalidInput(f"RNN: {name} must be a positive integer, got {v!r}")
    return int(v)


def _check(data: Any, parameters: Any, state: Any, state_cell: Any, sequence_length: Any, at: dict) -> None:
    """Every refusal before any op is queued: the session stays as it was."""
    for what, a in (("data", data), ("parameters", parameters), ("state", state)):
        if not isinstance(a, NDArray):
            raise InvalidInput(f"RNN: {what} must be an NDArray, got {type(a).__name__}")
    if len(data.shape) != 3:
        raise ShapeError(f"RNN: data must be (sequence length, batch, input size), got shape {data.shape}")
    if 0 in data.shape:
        raise ShapeError(f"RNN: data must have a step, a sample and an input value at least, got shape {data.shape}")
    dt = data._spec.dtype
    if dt not in FLOAT_DTYPES:
        raise DTypeError(f"RNN: data must be of a float dtype, got {dt}")
    mode, h, layers, d, proj = at["mode"], at["state_size"], at["num_layers"], at["dirs"], at["proj"]
    t_len, n, ins = data.shape
    want = param_count(mode, h, layers, ins, d == 2, proj)
    if parameters.shape != (want,):
        raise ShapeError(
            f"RNN: parameters must be one vector of {want} values for mode {mode!r}, state_size {h}, "
            f"num_layers {layers}{', bidirectional' if d == 2 else ''}"
            f"{f', projection_size {proj}' if proj else ''} and input size {ins}; got shape {parameters.shape}"
        )
    states = [("state", state, proj or h)]
    if mode == "lstm":
        if not isinstance(state_cell, NDArray):
            raise InvalidInput("RNN: mode 'lstm' needs state_cell, the initial cell state")
        states.append(("state_cell", state_cell, h))
    for what, a, width in states:
        if a.shape != (layers * d, n, width):
            raise ShapeError(f"RNN: {what} must have shape {(layers * d, n, width)}, got {a.shape}")
    for what, a in (("parameters", parameters), *((w, a) for w, a, _ in states)):
        if a._spec.dtype != dt:
            raise DTypeError(f"RNN: {what} is {a._spec.dtype} but data is {dt}")
    if sequence_length is not None and not isinstance(sequence_length, NDArray):
        raise InvalidInput(f"RNN: sequence_length must be an NDArray, got {type(sequence_length).__name__}")
    if at["use_sequence_length"]:
        if not isinstance(sequence_length, NDArray):
            raise InvalidInput("RNN: use_sequence_length needs sequence_length, each sample's steps (batch,)")
        if sequence_length.shape != (n,):
            raise ShapeError(f"RNN: sequence_length must have shape {(n,)}, got {sequence_length.shape}")
        if sequence_length._spec.dtype == "bool":
            raise DTypeError("RNN: sequence_length must be of a numeric dtype, got bool")
    elif sequence_length is not None:
        raise InvalidInput("RNN: sequence_length is given but use_sequence_length is False")


class _Weights:
    """Slices of the packed parameter vector, in its order (views: their gradients add into
    the vector's)."""

    def __init__(self, parameters: NDArray) -> None:
        self.p, self.at = parameters, 0

    def take(self, *shape: int) -> NDArray:
        size = math.prod(shape)
        part = _op("slice_axis", self.p, axis=0, begin=self.at, end=self.at + size)
        self.at += size
        return _op("reshape", part, shape=shape) if len(shape) > 1 else part


def _step(
    mode: str,
    xt: NDArray,
    h: NDArray,
    c: NDArray | None,
    wh: NDArray,
    bh: NDArray,
    wr: NDArray | None,
    hidden: int,
    at: dict,
) -> tuple[NDArray, NDArray | None]:
    """One time step of one direction: the new state (and cell state) from the input's
    projection ``xt`` (N, gates * hidden) and the state ``h``."""
    hh = _op("FullyConnected", h, wh, bh, num_hidden=wh.shape[0])
    if mode == "rnn_tanh":
        return _op("tanh", xt + hh), None
    if mode == "rnn_relu":
        return _op("relu", xt + hh), None
    if mode == "gru":
        xr, xz, xn = (_op("slice_axis", xt, axis=1, begin=k * hidden, end=(k + 1) * hidden) for k in range(3))
        hr, hz, hn = (_op("slice_axis", hh, axis=1, begin=k * hidden, end=(k + 1) * hidden) for k in range(3))
        r = _op("sigmoid", xr + hr)
        z = _op("sigmoid", xz + hz)
        new = _op("tanh", xn + r * hn)
        return new + z * (h - new), None
    assert c is not None
    gates = xt + hh
    i, f, g, o = (_op("slice_axis", gates, axis=1, begin=k * hidden, end=(k + 1) * hidden) for k in range(4))
    c = _op("sigmoid", f) * c + _op("sigmoid", i) * _op("tanh", g)
    lo, hi = at["clip_min"], at["clip_max"]
    if lo is not None and hi is not None:
        if at["clip_nan"]:
            c = _op("where", c == c, c, _op("zeros_like", c) + lo)
        c = _op("clip", c, a_min=lo, a_max=hi)
    h = _op("sigmoid", o) * _op("tanh", c)
    if wr is not None:
        h = _op("FullyConnected", h, wr, no_bias=True, num_hidden=wr.shape[0])
    return h, c


def RNN(
    data: NDArray,
    parameters: NDArray,
    state: NDArray,
    state_cell: NDArray | None = None,
    sequence_length: NDArray | None = None,
    state_size: int | None = None,
    num_layers: int | None = None,
    bidirectional: bool = False,
    mode: str | None = None,
    p: float = 0.0,
    state_outputs: bool = False,
    projection_size: int | None = None,
    lstm_state_clip_min: float | None = None,
    lstm_state_clip_max: float | None = None,
    lstm_state_clip_nan: bool = False,
    use_sequence_length: bool = False,
    **kwargs: Any,
) -> Any:
    """MXNet's recurrent layer over ``data`` (T, N, input size), layout TNC: ``mode``
    ``rnn_relu``, ``rnn_tanh``, ``lstm`` or ``gru``, ``num_layers`` of ``state_size`` units,
    each ``bidirectional`` or not, with MXNet's packed ``parameters`` (``param_count`` gives
    their number), the initial ``state`` (layers * directions, N, state_size) and, for LSTM,
    ``state_cell``. ``p``: dropout between layers, in training. ``use_sequence_length``: each
    sample's steps in ``sequence_length`` (N,); outputs past them are 0 and the states are
    those of the last step. LSTM only: ``projection_size`` (LSTMP: the state is the projected
    output, no bias), the cell state clipped to [``lstm_state_clip_min``,
    ``lstm_state_clip_max``] (and NaN in it made the minimum with ``lstm_state_clip_nan``).

    The output (T, N, directions * state_size); with ``state_outputs``, the list [output,
    final state] (LSTM: [output, final state, final cell state]); ``out``: where to write them
    (an array, or a list of them)."""
    out = kwargs.pop("out", None)
    kwargs.pop("name", None)  # (MXNet's symbol name: nothing here)
    if kwargs:
        raise InvalidInput(f"RNN: unknown argument {next(iter(kwargs))!r}")
    if not isinstance(mode, str) or mode not in GATES:
        raise InvalidInput(f"RNN: mode must be one of {sorted(GATES)}, got {mode!r}")
    if mode != "lstm" and sequence_length is None and state_cell is not None and use_sequence_length:
        state_cell, sequence_length = None, state_cell  # (MXNet's inputs: the fourth array is the lengths)
    if mode != "lstm" and state_cell is not None:
        raise InvalidInput(f"RNN: mode {mode!r} takes no state_cell")
    h = _positive("state_size", state_size)
    layers = _positive("num_layers", num_layers)
    proj = None if projection_size is None else _positive("projection_size", projection_size)
    if proj is not None and mode != "lstm":
        raise InvalidInput("RNN: projection_size is for mode 'lstm' only")
    if proj is not None and proj >= h:
        raise InvalidInput(f"RNN: projection_size ({proj}) must be smaller than state_size ({h})")
    if not isinstance(p, numbers.Real) or not 0 <= p < 1:
        raise InvalidInput(f"RNN: p must be in [0, 1), got {p!r}")
    clip = (lstm_state_clip_min, lstm_state_clip_max)
    if (clip[0] is None) != (clip[1] is None):
        raise InvalidInput("RNN: lstm_state_clip_min and lstm_state_clip_max are given together")
    if clip[0] is not None:
        if mode != "lstm":
            raise InvalidInput("RNN: lstm_state_clip_min and _max are for mode 'lstm' only")
        if not all(isinstance(v, numbers.Real) for v in clip) or not clip[0] <= clip[1]:
            raise InvalidInput(f"RNN: the cell state's clip range must be two numbers, min <= max; got {clip}")
    at = {
        "mode": mode,
        "state_size": h,
        "num_layers": layers,
        "dirs": 2 if bidirectional else 1,
        "proj": proj,
        "use_sequence_length": bool(use_sequence_length),
        "clip_min": None if clip[0] is None else float(clip[0]),
        "clip_max": None if clip[1] is None else float(clip[1]),
        "clip_nan": bool(lstm_state_clip_nan),
    }
    _check(data, parameters, state, state_cell, sequence_length, at)
    if out is not None:
        _check_out(out, data, at, bool(state_outputs))
    result = _run(data, parameters, state, state_cell, sequence_length, at, float(p), bool(state_outputs))
    if out is None:
        return result
    if isinstance(result, NDArray):
        return write_into(out, result, "RNN")
    return [write_into(o, r, "RNN") for o, r in zip(out, result)]


def _check_out(out: Any, data: NDArray, at: dict, state_outputs: bool) -> None:
    """``out=``: an array of the output's shape, or with ``state_outputs`` a list of one per output."""
    t_len, n, _ = data.shape
    width, k = at["proj"] or at["state_size"], at["num_layers"] * at["dirs"]
    shapes = [(t_len, n, at["dirs"] * width)]
    if state_outputs:
        shapes.append((k, n, width))
        if at["mode"] == "lstm":
            shapes.append((k, n, at["state_size"]))
    outs = [out] if isinstance(out, NDArray) and not state_outputs else out
    if not isinstance(outs, (list, tuple)) or len(outs) != len(shapes):
        want = f"a list of {len(shapes)} NDArrays (state_outputs)" if state_outputs else "an NDArray"
        raise InvalidInput(f"RNN: out must be {want}, got {type(out).__name__}")
    for o, shape in zip(outs, shapes):
        if not isinstance(o, NDArray):
            raise InvalidInput(f"RNN: out must hold NDArrays, got {type(o).__name__}")
        if o.shape != shape:
            raise ShapeError(f"RNN: out has shape {o.shape}, the result {shape}")


def _run(
    data: NDArray,
    parameters: NDArray,
    state: NDArray,
    state_cell: NDArray | None,
    sequence_length: NDArray | None,
    at: dict,
    p: float,
    state_outputs: bool,
) -> Any:
    mode, hidden, layers, dirs, proj = at["mode"], at["state_size"], at["num_layers"], at["dirs"], at["proj"]
    t_len, n, ins = data.shape
    g, out = GATES[mode] * hidden, proj or hidden
    w = _Weights(parameters)
    weights = []
    for layer in range(layers):
        width = ins if layer == 0 else out * dirs
        weights.append([(w.take(g, width), w.take(g, out), w.take(out, hidden) if proj else None) for _ in range(dirs)])
    biases = [[(w.take(g), w.take(g)) for _ in range(dirs)] for _ in range(layers)]
    masks = None
    if sequence_length is not None:  # (N, 1) per step: 1 where the step is within the sample's length
        lengths = _op("reshape", sequence_length, shape=(n, 1))
        if lengths._spec.dtype not in ("float32", "float64"):  # (float16 holds whole numbers exactly to 2048 only)
            lengths = _op("astype", lengths, dtype="float32")
        masks = [lengths > t for t in range(t_len)]
    x = data
    finals: list[NDArray] = []
    cells: list[NDArray] = []
    for layer in range(layers):
        if layer and p:
            x = _op("Dropout", x, p=p)
        flat = _op("reshape", x, shape=(t_len * n, x.shape[2]))
        outs = []
        for d in range(dirs):
            wi, wh, wr = weights[layer][d]
            bi, bh = biases[layer][d]
            # the input's share of every step at once, one product; each step takes its slice
            # (a first-order backward pass adds the slices' gradients into one array)
            proj_x = _op("reshape", _op("FullyConnected", flat, wi, bi, num_hidden=g), shape=(t_len, n, g))
            k = layer * dirs + d
            hk = state[k]
            ck = state_cell[k] if state_cell is not None else None
            ys: list[Any] = [None] * t_len
            for t in range(t_len) if d == 0 else range(t_len - 1, -1, -1):
                h_new, c_new = _step(mode, proj_x[t], hk, ck, wh, bh, wr, hidden, at)
                if masks is None:
                    hk, ck, ys[t] = h_new, c_new, h_new
                    continue
                m = masks[t]
                ys[t] = _op("where", m, h_new, _op("zeros_like", h_new))
                hk = _op("where", m, h_new, hk)
                if c_new is not None and ck is not None:
                    ck = _op("where", m, c_new, ck)
            outs.append(_op("stack", *ys, axis=0))
            finals.append(hk)
            if ck is not None:
                cells.append(ck)
        x = outs[0] if dirs == 1 else _op("concat", *outs, dim=2)
    if not state_outputs:
        return x
    result = [x, _op("stack", *finals, axis=0)]
    if mode == "lstm":
        result.append(_op("stack", *cells, axis=0))
    return result
