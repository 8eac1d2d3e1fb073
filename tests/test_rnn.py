"""``nd.RNN`` (client/rnn.py): MXNet's fused recurrent layers, composed of the table's ops.

Values are checked against ``rnn_ref``, a plain numpy loop written from MXNet's equations and
parameter layout, and against numbers MXNet 1.9.1 printed for the same calls (literals: MXNet
is not needed to run these). Gradients are checked against finite differences in float64.
MXNet 1.9.1's CPU build ignores ``use_sequence_length`` and the LSTM cell clip (its outputs are
those of the call without them) and has no gradient for a projection: those cases are checked
against ``rnn_ref`` alone, which follows MXNet's documentation (cuDNN's behaviour).
"""

from __future__ import annotations

import numpy as np
import pytest

import gradserve
from gradserve import autograd, hybridize, nd
from gradserve.engine.errors import DTypeError, InvalidInput, ShapeError
from gradserve.rnn import GATES, param_count


def _sigmoid(v):
    return 1 / (1 + np.exp(-v))


def rnn_ref(x, p, h0, c0=None, *, mode, layers, dirs=1, proj=None, clip=None, clip_nan=False, lengths=None):
    """[output, final state, final cell state] by one sample, layer, direction and step at a
    time. With ``lengths`` each sample runs on its own steps alone (outputs past them 0)."""
    t_len, n, ins = x.shape
    hidden = h0.shape[2] if proj is None else c0.shape[2]
    g, out_w = GATES[mode] * hidden, proj or hidden
    p, at = np.asarray(p, np.float64), 0
    w = {}
    for layer in range(layers):
        width = ins if layer == 0 else out_w * dirs
        for d in range(dirs):
            for name, shape in (("wi", (g, width)), ("wh", (g, out_w))) + ((("wr", (out_w, hidden)),) if proj else ()):
                size = shape[0] * shape[1]
                w[layer, d, name] = p[at : at + size].reshape(shape)
                at += size
    for layer in range(layers):
        for d in range(dirs):
            for name in ("bi", "bh"):
                w[layer, d, name] = p[at : at + g]
                at += g
    assert at == p.size
    out = np.zeros((t_len, n, dirs * out_w))
    hy = np.zeros((layers * dirs, n, out_w))
    cy = np.zeros((layers * dirs, n, hidden))
    for i in range(n):
        steps = t_len if lengths is None else int(lengths[i])
        seq = np.asarray(x[:steps, i], np.float64)
        for layer in range(layers):
            outs = []
            for d in range(dirs):
                k = layer * dirs + d
                h = np.asarray(h0[k, i], np.float64)
                c = None if c0 is None else np.asarray(c0[k, i], np.float64)
                ys = [None] * steps
                for t in range(steps) if d == 0 else range(steps - 1, -1, -1):
                    xi = w[layer, d, "wi"] @ seq[t] + w[layer, d, "bi"]
                    hh = w[layer, d, "wh"] @ h + w[layer, d, "bh"]
                    if mode == "rnn_tanh":
                        h = np.tanh(xi + hh)
                    elif mode == "rnn_relu":
                        h = np.maximum(xi + hh, 0)
                    elif mode == "gru":
                        r = _sigmoid(xi[:hidden] + hh[:hidden])
                        z = _sigmoid(xi[hidden : 2 * hidden] + hh[hidden : 2 * hidden])
                        new = np.tanh(xi[2 * hidden :] + r * hh[2 * hidden :])
                        h = (1 - z) * new + z * h
                    else:
                        gi, gf, gg, go = np.split(xi + hh, 4)
                        c = _sigmoid(gf) * c + _sigmoid(gi) * np.tanh(gg)
                        if clip is not None:
                            if clip_nan:
                                c = np.where(np.isnan(c), clip[0], c)
                            c = np.clip(c, *clip)
                        h = _sigmoid(go) * np.tanh(c)
                        if proj:
                            h = w[layer, d, "wr"] @ h
                    ys[t] = h
                outs.append(np.array(ys).reshape(steps, out_w))
                hy[k, i] = h
                if c is not None:
                    cy[k, i] = c
            seq = np.concatenate(outs, axis=1)
        out[:steps, i] = seq
    return out, hy, cy


def make(rng, mode, layers, dirs=1, proj=None, t_len=4, n=3, ins=3, hidden=4, scale=0.5):
    """Random inputs of an RNN so shaped: x, parameters, state, cell state (float64)."""
    size = param_count(mode, hidden, layers, ins, dirs == 2, proj)
    return (
        rng.standard_normal((t_len, n, ins)),
        rng.standard_normal(size) * scale,
        rng.standard_normal((layers * dirs, n, proj or hidden)) * scale,
        rng.standard_normal((layers * dirs, n, hidden)) * scale,
    )


def call(x, p, h0, c0, mode, layers, dirs=1, dtype="float64", **kw):
    arrays = [nd.array(x, dtype=dtype), nd.array(p, dtype=dtype), nd.array(h0, dtype=dtype)]
    if mode == "lstm":
        arrays.append(nd.array(c0, dtype=dtype))
    hidden = c0.shape[2]
    return nd.RNN(
        *arrays, state_size=hidden, num_layers=layers, bidirectional=dirs == 2, mode=mode, state_outputs=True, **kw
    )


SHAPES = [(mode, layers, dirs) for mode in GATES for layers in (1, 2) for dirs in (1, 2)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("mode,layers,dirs", SHAPES)
def test_values_are_the_equations_of_each_mode_layer_and_direction(mode, layers, dirs, dtype):
    rng = np.random.default_rng(len(mode) * 10 + layers * 3 + dirs)
    x, p, h0, c0 = make(rng, mode, layers, dirs)
    got = call(x, p, h0, c0, mode, layers, dirs, dtype)
    want = rnn_ref(x, p, h0, c0 if mode == "lstm" else None, mode=mode, layers=layers, dirs=dirs)
    assert len(got) == (3 if mode == "lstm" else 2)
    tol = 1e-5 if dtype == "float32" else 1e-12
    for a, b in zip(got, want):
        assert a.dtype == np.dtype(dtype)
        np.testing.assert_allclose(a.asnumpy(), b, rtol=tol, atol=tol)


def _det(shape, k):
    """The inputs MXNet 1.9.1 was given for the literals below."""
    return (np.sin(np.arange(int(np.prod(shape))) * k + 1).reshape(shape) * 0.5).astype(np.float32)


MXNET = {  # bidirectional, one layer, T=3, N=2, input 2, state 2: loss sum(out**2) + sum(hy)
    "lstm": {
        "out": [
            [0.19480472803115845, 0.16685275733470917, 0.06725388765335083, -0.11092835664749146],
            [0.21744871139526367, 0.06873338669538498, 0.05398528650403023, -0.11826706677675247],
            [0.14612668752670288, 0.1443270593881607, -0.0630354955792427, -0.11452784389257431],
        ],
        "hy": [[0.08124228566884995, 0.1559724062681198], [0.10641764849424362, -0.053593408316373825]],
        "cy": [[0.3267892599105835, 0.3164540231227875], [0.1470225304365158, -0.2929022014141083]],
        "gx": [
            [-0.05517665296792984, -0.01912987232208252],
            [-0.03267237916588783, 0.03949480503797531],
            [-0.06950998306274414, 0.046386588364839554],
        ],
        "gp": [
            -0.00798801425844431,
            -0.006254889070987701,
            0.0621524378657341,
            0.0668427124619484,
            0.018135514110326767,
            0.021274201571941376,
        ],
        "gh0": [[0.07285729050636292, 0.052261289209127426], [-0.020585235208272934, -0.011536367237567902]],
        "gc0": [[0.19995613396167755, 0.08167378604412079], [0.020938746631145477, -0.03788653016090393]],
    },
    "gru": {
        "out": [
            [0.16424481570720673, 0.5612924098968506, 0.16720782220363617, -0.2182898223400116],
            [0.13216117024421692, 0.3469964563846588, 0.2714017927646637, -0.2859894931316376],
            [0.07249155640602112, 0.492637574672699, 0.20463606715202332, -0.06578879058361053],
        ],
        "hy": [[0.017271343618631363, 0.525887668132782], [0.01183345727622509, -0.32318606972694397]],
        "gx": [
            [0.06629076600074768, 0.2559148669242859],
            [-0.1446952074766159, 0.08473870158195496],
            [-0.19326463341712952, 0.23472042381763458],
        ],
        "gp": [
            0.02514394000172615,
            0.027200575917959213,
            0.012283043935894966,
            0.02108238823711872,
            0.07236630469560623,
            0.05130939930677414,
        ],
        "gh0": [[0.029938146471977234, 0.36904364824295044], [1.0566675662994385, -0.12824039161205292]],
    },
}


@pytest.mark.parametrize("rnn_mode", ["lstm", "gru"])
def test_values_and_gradients_are_mxnets(rnn_mode, mode):
    want = MXNET[rnn_mode]
    n = 2 * param_count(rnn_mode, 2, 1, 2, False)
    x, p = nd.array(_det((3, 2, 2), 0.7)), nd.array(_det((n,), 1.3))
    h0, c0 = nd.array(_det((2, 2, 2), 0.4)), nd.array(_det((2, 2, 2), 0.9))
    inputs = [x, p, h0] + ([c0] if rnn_mode == "lstm" else [])
    for a in inputs:
        a.attach_grad()
    with autograd.record():
        o = nd.RNN(*inputs, state_size=2, num_layers=1, bidirectional=True, mode=rnn_mode, state_outputs=True)
        loss = (o[0] * o[0]).sum() + o[1].sum()
    loss.backward()
    close = {"rtol": 2e-5, "atol": 1e-6}
    np.testing.assert_allclose(o[0].asnumpy()[:, 0, :], want["out"], **close)
    np.testing.assert_allclose(o[1].asnumpy()[:, 1, :], want["hy"], **close)
    np.testing.assert_allclose(x.grad.asnumpy()[:, 0, :], want["gx"], **close)
    np.testing.assert_allclose(p.grad.asnumpy()[:6], want["gp"], **close)
    np.testing.assert_allclose(h0.grad.asnumpy()[:, 0, :], want["gh0"], **close)
    if rnn_mode == "lstm":
        np.testing.assert_allclose(o[2].asnumpy()[:, 0, :], want["cy"], **close)
        np.testing.assert_allclose(c0.grad.asnumpy()[:, 0, :], want["gc0"], **close)


GRAD_CASES = {
    "rnn_tanh, 2 layers, bidirectional": ("rnn_tanh", 2, 2, {}),
    "rnn_relu, 2 layers": ("rnn_relu", 2, 1, {}),
    "lstm, 2 layers, bidirectional": ("lstm", 2, 2, {}),
    "gru, 2 layers, bidirectional": ("gru", 2, 2, {}),
    "lstm with a projection, bidirectional": ("lstm", 2, 2, {"projection_size": 2}),
    "lstm with a cell clip": ("lstm", 1, 2, {"lstm_state_clip_min": -0.3, "lstm_state_clip_max": 0.35}),
    "gru with sequence lengths": ("gru", 1, 2, {"use_sequence_length": True}),
    "lstm with sequence lengths": ("lstm", 2, 2, {"use_sequence_length": True}),
}


def _loss(args, mode, layers, dirs, weights, kw):
    x, p, h0, c0 = args
    arrays = [x, p, h0] + ([c0] if mode == "lstm" else [])
    if kw.get("use_sequence_length"):
        arrays.append(nd.array([4, 2, 1]))
    o = nd.RNN(*arrays, state_size=4, num_layers=layers, bidirectional=dirs == 2, mode=mode, state_outputs=True, **kw)
    return sum((a * nd.array(w, dtype="float64")).sum() for a, w in zip(o, weights))


@pytest.mark.parametrize("case", list(GRAD_CASES))
def test_gradients_meet_finite_differences(case):
    mode, layers, dirs, kw = GRAD_CASES[case]
    rng = np.random.default_rng(sorted(GRAD_CASES).index(case))
    proj = kw.get("projection_size")
    values = make(rng, mode, layers, dirs, proj)
    out_w = proj or 4
    shapes = [(4, 3, dirs * out_w), (layers * dirs, 3, out_w), (layers * dirs, 3, 4)]
    weights = [rng.standard_normal(s) for s in shapes]
    arrays = [nd.array(v, dtype="float64") for v in values]
    for a in arrays:
        a.attach_grad()
    with autograd.record():
        loss = _loss(arrays, mode, layers, dirs, weights, kw)
    loss.backward()
    eps = 1e-6
    for i, a in enumerate(arrays):
        if mode != "lstm" and i == 3:
            continue
        v = rng.standard_normal(values[i].shape)

        def at(sign, i=i, v=v):
            moved = [nd.array(val + sign * eps * v if j == i else val, dtype="float64") for j, val in enumerate(values)]
            return _loss(moved, mode, layers, dirs, weights, kw).asscalar()

        numeric = (at(1) - at(-1)) / (2 * eps)
        analytic = float(np.vdot(a.grad.asnumpy(), v))
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8, err_msg=f"{case}: input {i}")


def test_second_order_gradients_go_through_an_lstm():
    """The Hessian of the loss along u, from a recorded gradient, against finite differences
    of the gradient."""
    rng = np.random.default_rng(3)
    x, p, h0, c0 = make(rng, "lstm", 1, 1, t_len=3, n=2, ins=2, hidden=3)
    u = rng.standard_normal(p.shape)

    def grad_p(pv, create_graph=False):
        pa = nd.array(pv, dtype="float64")
        pa.attach_grad()
        with autograd.record():
            arrays = [nd.array(x, dtype="float64"), pa, nd.array(h0, dtype="float64"), nd.array(c0, dtype="float64")]
            out = nd.RNN(*arrays, state_size=3, num_layers=1, mode="lstm")
            loss = (out**2).sum()
        (g,) = autograd.grad([loss], [pa], create_graph=create_graph, retain_graph=create_graph)
        return pa, g

    pa, g = grad_p(p, create_graph=True)
    with autograd.record():
        gu = (g * nd.array(u, dtype="float64")).sum()
    gu.backward()
    hvp = pa.grad.asnumpy()
    eps = 1e-6
    numeric = (grad_p(p + eps * u)[1].asnumpy() - grad_p(p - eps * u)[1].asnumpy()) / (2 * eps)
    np.testing.assert_allclose(hvp, numeric, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("mode,layers,dirs", [("rnn_tanh", 1, 1), ("lstm", 2, 2), ("gru", 1, 2), ("rnn_relu", 2, 2)])
def test_sequence_lengths_run_each_sample_on_its_own_steps(mode, layers, dirs):
    """As MXNet documents (its CPU build ignores them): outputs past a sample's length are 0,
    the final states are those of its last step, and the backward direction starts there."""
    rng = np.random.default_rng(11)
    x, p, h0, c0 = make(rng, mode, layers, dirs, t_len=5, n=4)
    lengths = [5, 3, 1, 0]
    arrays = [nd.array(x, dtype="float64"), nd.array(p, dtype="float64"), nd.array(h0, dtype="float64")]
    if mode == "lstm":
        arrays.append(nd.array(c0, dtype="float64"))
    arrays.append(nd.array(lengths, dtype="int32"))  # (the fourth array is the lengths but for LSTM, as MXNet's)
    got = nd.RNN(
        *arrays,
        state_size=4,
        num_layers=layers,
        bidirectional=dirs == 2,
        mode=mode,
        state_outputs=True,
        use_sequence_length=True,
    )
    want = rnn_ref(x, p, h0, c0 if mode == "lstm" else None, mode=mode, layers=layers, dirs=dirs, lengths=lengths)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a.asnumpy(), b, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(got[1].asnumpy()[:, 3], h0[:, 3])  # (no steps: the initial state)


def test_the_cell_clip_bounds_the_cell_state_and_stops_nan():
    rng = np.random.default_rng(12)
    x, p, h0, c0 = make(rng, "lstm", 2, 2, scale=1.5)
    kw = {"lstm_state_clip_min": -0.25, "lstm_state_clip_max": 0.3}
    got = call(x, p, h0, c0, "lstm", 2, 2, **kw)
    want = rnn_ref(x, p, h0, c0, mode="lstm", layers=2, dirs=2, clip=(-0.25, 0.3))
    for a, b in zip(got, want):
        np.testing.assert_allclose(a.asnumpy(), b, rtol=1e-12, atol=1e-12)
    assert got[2].asnumpy().min() == -0.25 and got[2].asnumpy().max() == 0.3
    c0[0, 1, 2] = np.nan
    spread = call(x, p, h0, c0, "lstm", 2, 2, **kw)
    assert np.isnan(spread[0].asnumpy()).any()
    stopped = call(x, p, h0, c0, "lstm", 2, 2, lstm_state_clip_nan=True, **kw)
    want = rnn_ref(x, p, h0, c0, mode="lstm", layers=2, dirs=2, clip=(-0.25, 0.3), clip_nan=True)
    assert not np.isnan(stopped[0].asnumpy()).any()
    for a, b in zip(stopped, want):
        np.testing.assert_allclose(a.asnumpy(), b, rtol=1e-12, atol=1e-12)


def test_a_projection_is_mxnets_lstmp():
    """MXNet 1.9.1 computes it forward only on a CPU: these are its values (gradients: above)."""
    rng = np.random.default_rng(13)
    x, p, h0, c0 = make(rng, "lstm", 2, 2, proj=3)
    got = call(x, p, h0, c0, "lstm", 2, 2, projection_size=3)
    want = rnn_ref(x, p, h0, c0, mode="lstm", layers=2, dirs=2, proj=3)
    assert [a.shape for a in got] == [(4, 3, 6), (4, 3, 3), (4, 3, 4)]
    for a, b in zip(got, want):
        np.testing.assert_allclose(a.asnumpy(), b, rtol=1e-12, atol=1e-12)
    mx_out = nd.RNN(
        nd.ones((4, 3, 3)),
        nd.ones((param_count("lstm", 4, 1, 3, False, 2),)) * 0.1,
        nd.zeros((1, 3, 2)),
        nd.zeros((1, 3, 4)),
        state_size=4,
        num_layers=1,
        mode="lstm",
        projection_size=2,
        state_outputs=True,
    )
    np.testing.assert_allclose(
        [a.asnumpy().ravel()[0] for a in mx_out], [0.06970789, 0.14889623, 0.6807577], rtol=1e-6
    )  # (MXNet 1.9.1's)


def test_dropout_falls_between_layers_in_training_only():
    rng = np.random.default_rng(14)
    x, p, h0, c0 = make(rng, "rnn_tanh", 2, 1, t_len=6, n=8, hidden=16)
    x, p, h0 = (nd.array(v) for v in (x, p, h0))

    def run(**kw):
        return nd.RNN(x, p, h0, state_size=16, num_layers=2, mode="rnn_tanh", **kw).asnumpy()

    plain = run()
    np.testing.assert_array_equal(run(p=0.5), plain)  # (prediction: no dropout)
    with autograd.record():
        dropped = run(p=0.5)
    assert not np.allclose(dropped, plain)
    p1 = nd.array(p.asnumpy()[: param_count("rnn_tanh", 16, 1, 3)])

    def one_layer(**kw):
        return nd.RNN(x[:, :, :3], p1, h0[:1], state_size=16, num_layers=1, mode="rnn_tanh", **kw)

    one = one_layer()
    with autograd.record():
        once = one_layer(p=0.9)
    np.testing.assert_array_equal(once.asnumpy(), one.asnumpy())  # (one layer: nothing between)


def test_without_state_outputs_the_output_alone():
    rng = np.random.default_rng(15)
    x, p, h0, c0 = make(rng, "gru", 1, 2)
    out = nd.RNN(nd.array(x), nd.array(p), nd.array(h0), state_size=4, num_layers=1, bidirectional=True, mode="gru")
    assert isinstance(out, nd.NDArray) and out.shape == (4, 3, 8)
    np.testing.assert_allclose(out.asnumpy(), rnn_ref(x, p, h0, mode="gru", layers=1, dirs=2)[0], rtol=1e-5, atol=1e-6)


def _refusals():
    x, p1, h = nd.zeros((4, 3, 2)), nd.zeros((param_count("rnn_tanh", 5, 1, 2),)), nd.zeros((1, 3, 5))
    pl = nd.zeros((param_count("lstm", 5, 1, 2),))
    base = {"state_size": 5, "num_layers": 1, "mode": "rnn_tanh"}
    return [
        ((x, p1, h), {**base, "mode": "lstm_x"}, InvalidInput, "mode must be one of"),
        ((x, p1[:-1], h), base, ShapeError, "parameters must be one vector of 45 values"),
        ((x, pl, h), {**base, "mode": "lstm"}, InvalidInput, "needs state_cell"),
        ((x, p1, nd.zeros((2, 3, 5))), base, ShapeError, r"state must have shape \(1, 3, 5\)"),
        ((x, pl, h, nd.zeros((1, 3, 4))), {**base, "mode": "lstm"}, ShapeError, "state_cell must have shape"),
        ((x[0], p1, h), base, ShapeError, "data must be"),
        ((x.astype("int32"), p1, h), base, DTypeError, "float dtype"),
        ((x, p1.astype("float64"), h), base, DTypeError, "parameters is float64 but data is float32"),
        ((x, p1, h), {**base, "state_size": 0}, InvalidInput, "state_size must be a positive integer"),
        ((x, p1, h), {**base, "num_layers": 1.5}, InvalidInput, "num_layers must be a positive integer"),
        ((x, p1, h), {**base, "p": 1.0}, InvalidInput, r"p must be in \[0, 1\)"),
        ((x, p1, h), {**base, "projection_size": 2}, InvalidInput, "for mode 'lstm' only"),
        ((x, pl, h, h), {**base, "mode": "lstm", "projection_size": 5}, InvalidInput, "smaller than state_size"),
        ((x, pl, h, h), {**base, "mode": "lstm", "lstm_state_clip_min": 1.0}, InvalidInput, "given together"),
        (
            (x, pl, h, h),
            {**base, "mode": "lstm", "lstm_state_clip_min": 1, "lstm_state_clip_max": 0},
            InvalidInput,
            "min <= max",
        ),
        ((x, p1, h), {**base, "use_sequence_length": True}, InvalidInput, "needs sequence_length"),
        ((x, p1, h, nd.zeros(4)), {**base, "use_sequence_length": True}, ShapeError, r"sequence_length must have"),
        ((x, p1, h, None, nd.zeros(3)), base, InvalidInput, "use_sequence_length is False"),
        ((x, p1, h, h), base, InvalidInput, "takes no state_cell"),
        ((x, p1, h), {**base, "layout": "NTC"}, InvalidInput, "unknown argument 'layout'"),
        ((x, p1, h), {**base, "mode": ["lstm"]}, InvalidInput, "mode must be one of"),
        (
            (x, p1, h, None, [4, 4, 4]),
            {**base, "use_sequence_length": True},
            InvalidInput,
            "must be an NDArray, got list",
        ),
        ((nd.zeros((4, 0, 2)), p1, nd.zeros((1, 0, 5))), base, ShapeError, r"at least, got shape \(4, 0, 2\)"),
        ((nd.zeros((0, 3, 2)), p1, h), base, ShapeError, "a step, a sample and an input value"),
        ((nd.zeros((4, 3, 0)), nd.zeros((35,)), h), base, ShapeError, "a step, a sample and an input value"),
        ((x, p1, h), {**base, "out": nd.zeros((4, 3, 4))}, ShapeError, r"out has shape \(4, 3, 4\)"),
        ((x, p1, h), {**base, "out": nd.zeros((4, 3, 5)), "state_outputs": True}, InvalidInput, "a list of 2 NDArrays"),
    ]


def test_refusals_say_what_is_wrong_and_queue_nothing(mode):
    for args, kw, error, message in _refusals():
        queued = len(mode._queue)
        with pytest.raises(error, match=message):
            nd.RNN(*args, **kw)
        assert len(mode._queue) == queued, message


def test_a_training_step_costs_one_request_when_it_reads_the_loss(mode):
    rng = np.random.default_rng(16)
    x, p, h0, c0 = (nd.array(v) for v in make(rng, "lstm", 2, 1, t_len=5))
    p.attach_grad()
    mode.flush()
    before = mode.transport.requests if mode.transport is not None else 0
    for _ in range(3):
        with autograd.record():
            out, hy, cy = nd.RNN(x, p, h0, c0, state_size=4, num_layers=2, mode="lstm", state_outputs=True)
            loss = (out**2).mean() + (hy * cy).mean()
        loss.backward()
        nd.sgd_update(p, p.grad, lr=0.1, out=p)
    value = loss.asscalar()
    if mode.transport is not None:
        assert mode.transport.requests - before == 1
    assert np.isfinite(value)


def test_a_hybridized_rnn_computes_what_the_eager_one_does():
    rng = np.random.default_rng(17)
    x, p, h0, c0 = (nd.array(v) for v in make(rng, "gru", 1, 2))

    def f(x, p, h0):
        with autograd.record():
            out = nd.RNN(x, p, h0, state_size=4, num_layers=1, bidirectional=True, mode="gru")
            loss = (out * out).sum()
        loss.backward()
        return loss

    p.attach_grad()
    eager = f(x, p, h0).asscalar()
    eager_grad = p.grad.asnumpy()
    fast = hybridize(f)
    for _ in range(2):
        assert fast(x, p, h0).asscalar() == pytest.approx(eager, rel=1e-6)
        np.testing.assert_allclose(p.grad.asnumpy(), eager_grad, rtol=1e-5, atol=1e-7)
    assert fast.traces == 1


def test_the_layout_helper_counts_mxnets_parameters():
    """gluon's LSTM(100, num_layers=2, bidirectional=True, input_size=50) has 363,200 (MXNet 1.9.1 counts them so)."""
    assert param_count("lstm", 100, 2, 50, True) == 363200
    assert param_count("gru", 8, 1, 3) == 3 * 8 * (3 + 8 + 2)
    assert gradserve.nd.RNN is nd.RNN


def test_out_and_name_are_taken_as_mxnets():
    rng = np.random.default_rng(18)
    x, p, h0, c0 = (nd.array(v) for v in make(rng, "lstm", 1, 1))
    want = nd.RNN(x, p, h0, c0, state_size=4, num_layers=1, mode="lstm", state_outputs=True)
    out = nd.zeros((4, 3, 4))
    got = nd.RNN(x, p, h0, c0, state_size=4, num_layers=1, mode="lstm", out=out, name="rnn0")
    assert got is out
    np.testing.assert_array_equal(out.asnumpy(), want[0].asnumpy())
    outs = [nd.zeros((4, 3, 4)), nd.zeros((1, 3, 4)), nd.zeros((1, 3, 4))]
    got = nd.RNN(x, p, h0, c0, state_size=4, num_layers=1, mode="lstm", state_outputs=True, out=outs)
    assert all(a is b for a, b in zip(got, outs))
    for a, b in zip(outs, want):
        np.testing.assert_array_equal(a.asnumpy(), b.asnumpy())


def test_float16_data_masks_steps_past_2048_by_their_lengths():
    """The lengths are compared in float32: float16 holds whole numbers exactly to 2048 only."""
    x = nd.ones((2052, 2, 1), dtype="float16")
    p, h0 = nd.ones((4,), dtype="float16") * 0.1, nd.zeros((1, 2, 1), dtype="float16")
    y = nd.RNN(
        x,
        p,
        h0,
        nd.array([2049, 2051], dtype="int32"),
        state_size=1,
        num_layers=1,
        mode="rnn_tanh",
        use_sequence_length=True,
    )
    steps = (y.asnumpy()[:, :, 0] != 0).sum(axis=0)
    assert steps.tolist() == [2049, 2051]
