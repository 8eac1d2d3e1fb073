"""CTCLoss (engine/ops_seq.py) against MXNet 1.9.1.

Every expected loss, gradient and refusal here is what MXNet 1.9.1 gave for the same call
(recorded as literals: MXNet is not needed to run these; MXNet computes in float32, so its
numbers are matched within float32's rounding), except where a test says gradserve differs on
purpose: MXNet reads past its arrays, crashes, or gives a gradient that is not its loss's. The
table-driven checks (forward against ``ctc_ref``, inference, VJPs against finite differences,
second order) are the cases in tests/test_ops.py.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from gradserve import autograd, nd
from gradserve.engine.dispatch import Context, Eager, Recorder, Traced
from gradserve.engine.errors import DTypeError, InvalidInput, MXNetError, ShapeError
from gradserve.engine.optable import OPS, Spec
from gradserve.engine.tape import Node, backward, resolve

from .test_quota import check_working_arrays

INF = float("inf")


def ctc_ref(x, label, data_lengths=None, label_lengths=None, blank="first"):
    """The loss (N,) and its gradient (T, N, C) by the textbook recursions, one sample, step
    and position at a time, in float64: log P(label | x) over every alignment (Graves et al.).
    Labels and lengths are rounded as MXNet rounds them (halves away from zero). MXNet's rules
    for the rest: a label longer than its data allows has loss 0 and gradient 0, a sample of
    length 0 a loss of 0 (MXNet: inf where its label is empty too)."""

    def rnd(v):
        return int(math.floor(abs(v) + 0.5)) * (1 if v >= 0 else -1)

    def lse(*a):
        m = max(a)
        return m if m == -INF else m + math.log(sum(math.exp(v - m) for v in a))

    x = np.asarray(x, np.float64)
    t_len, n, c = x.shape
    lp = x - x.max(-1, keepdims=True)
    lp = lp - np.log(np.exp(lp).sum(-1, keepdims=True))
    b = 0 if blank == "first" else c - 1
    pad = 0 if blank == "first" else -1
    loss, grad = np.zeros(n), np.zeros_like(x)
    for i in range(n):
        lab = [rnd(v) for v in np.asarray(label)[i]]
        ln = lab.index(pad) if label_lengths is None and pad in lab else len(lab)
        if label_lengths is not None:
            ln = rnd(label_lengths[i])
        lab = lab[:ln]
        tn = t_len if data_lengths is None else rnd(data_lengths[i])
        if tn == 0:  # (no steps: loss 0, as an impossible label's; MXNet's is inf for an empty label)
            continue
        if ln + sum(lab[k] == lab[k - 1] for k in range(1, ln)) > tn:
            continue
        ext = [b]
        for v in lab:
            ext += [v, b]
        s_len = len(ext)
        a = np.full((tn, s_len), -INF)
        be = np.full((tn, s_len), -INF)
        a[0, : min(2, s_len)] = [lp[0, i, e] for e in ext[:2]]
        for t in range(1, tn):
            for s in range(s_len):
                prev = [a[t - 1, s]] + ([a[t - 1, s - 1]] if s else [])
                if s >= 2 and ext[s] != b and ext[s] != ext[s - 2]:
                    prev.append(a[t - 1, s - 2])
                a[t, s] = lse(*prev) + lp[t, i, ext[s]]
        for s in range(max(s_len - 2, 0), s_len):
            be[tn - 1, s] = lp[tn - 1, i, ext[s]]
        for t in range(tn - 2, -1, -1):
            for s in range(s_len):
                nxt = [be[t + 1, s]] + ([be[t + 1, s + 1]] if s + 1 < s_len else [])
                if s + 2 < s_len and ext[s + 2] != b and ext[s + 2] != ext[s]:
                    nxt.append(be[t + 1, s + 2])
                be[t, s] = lse(*nxt) + lp[t, i, ext[s]]
        log_z = lse(*a[tn - 1, max(s_len - 2, 0) :])
        loss[i] = -log_z
        occ = np.zeros((tn, c))
        for s in range(s_len):
            occ[:, ext[s]] += np.exp(a[:, s] + be[:, s] - lp[:tn, i, ext[s]] - log_z)
        grad[:tn, i] = np.exp(lp[:tn, i]) - occ
    return loss, grad


# the data of most cases: (T, N, C) = (4, 2, 3)
X = np.array(
    [
        [[0.27, -0.46, -0.92], [-0.97, 0.63, 0.83]],
        [[0.21, 0.46, 0.09], [0.87, 0.63, -0.99]],
        [[0.71, -0.93, 0.46], [-0.65, 0.73, 0.08]],
        [[-0.4, -0.15, -0.94], [-0.75, 0.34, 0.29]],
    ]
)


def run(at: dict, *xs: np.ndarray) -> np.ndarray:
    """The forward, checked against what inference promises."""
    op = OPS["CTCLoss"]
    parsed = op.parse_attrs(at)
    spec = op.infer(parsed, *[Spec(tuple(x.shape), x.dtype.name) for x in xs])
    y = op.forward(Context(0), dict(parsed), *[x.copy() for x in xs])
    assert (y.shape, y.dtype.name) == spec
    return y


def grads(at: dict, head: np.ndarray, *xs: np.ndarray) -> np.ndarray:
    """The data's gradient for a head gradient, by the eager VJP and by the table's (the same
    values); none for the labels and lengths."""
    op = OPS["CTCLoss"]
    parsed = op.parse_attrs(at)
    y = run(at, *xs)
    fast = op.eager_vjp(parsed, head, y, *xs)
    table = [resolve(c) for c in op.vjp(Eager(Context()), parsed, head, y, *xs)]
    assert all(c is None for c in fast[1:]) and all(c is None for c in table[1:])
    assert fast[0].dtype == table[0].dtype == xs[0].dtype
    np.testing.assert_allclose(fast[0], table[0], rtol=1e-6, atol=1e-7)
    return fast[0]


def f32(*vs):
    return [np.asarray(v, np.float32) for v in vs]


# (label, attributes, lengths, MXNet's losses)
LOSSES = [
    ([[1, 2], [1, 1]], {}, [], [1.741875410079956, 2.3475284576416016]),
    ([[1, 0], [2, 0]], {}, [], [1.8663458824157715, 3.7369601726531982]),  # 0: padding
    ([[1, 0, 2], [2, 2, 0]], {}, [], [1.8663458824157715, 2.795689821243286]),  # (what follows it is not read)
    ([[0, 0], [1, 0]], {}, [], [3.466712474822998, 2.3907370567321777]),  # no labels: all blanks
    ([[0, 1], [1, -1]], {"blank_label": "last"}, [], [1.6660898923873901, 1.3756687641143799]),  # -1: padding
    ([[2, 1], [1, 1]], {"blank_label": "last"}, [], [2.6643627, 2.689215]),  # (2: the blank, a label here)
    ([[1, 1, 1], [1, 2, 1]], {}, [], [0.0, 2.6537721157073975]),  # 1 _ 1 _ 1 needs 5 steps: 0
    ([[1, 2], [1, 0]], {"use_data_lengths": True}, [[3, 2]], [1.4513033628463745, 0.8835121393203735]),
    ([[1, 2], [1, 0]], {"use_data_lengths": True}, [[2.7, 1.2]], [1.4513033628463745, 0.8851299285888672]),
    ([[1, 2], [1, 0]], {"use_data_lengths": True}, [[2.5, 1.5]], [1.4513033628463745, 0.8835121393203735]),
    ([[0, 0], [1, 0]], {"use_data_lengths": True}, [[0, 2]], [0.0, 0.88351214]),  # length 0 (MXNet: inf)
    ([[1, 2], [1, 0]], {"use_data_lengths": True}, [[0, 2]], [0.0, 0.88351214]),  # length 0, a label: 0, MXNet's
    ([[1, 0], [2, 2]], {"use_label_lengths": True}, [[2, 1]], [2.2581894397735596, 3.7369601726531982]),
    ([[1, 2], [2, 1]], {"use_label_lengths": True}, [[1.5, 0.5]], [1.741875410079956, 3.7369601726531982]),
    ([[0, 1], [1, 1]], {"use_label_lengths": True}, [[2, 2]], [1.0792131, 2.3475285]),  # (0: the blank)
    (
        [[1, 0], [2, 2]],
        {"use_data_lengths": True, "use_label_lengths": True},
        [[3, 4], [2, 1]],
        [3.1435253620147705, 3.7369601726531982],
    ),
    ([[1.5, 0.5], [0.4, 1.49]], {}, [], [1.809697151184082, 7.019463539123535]),  # rounded: [2, 1], [0, 1]
    ([[-0.4, 1], [1, -1]], {"blank_label": "last"}, [], [1.6660898923873901, 1.3756687641143799]),  # -0.4: 0
]


def _lengths(at: dict, lengths: list) -> dict:
    """ctc_ref's keyword arguments of a case's length inputs."""
    names = [k for k in ("data_lengths", "label_lengths") if at.get("use_" + k)]
    return dict(zip(names, lengths))


@pytest.mark.parametrize("label, at, lengths, want", LOSSES)
def test_ctc_loss_as_mxnet(label, at, lengths, want):
    y = run(at, *f32(X, label, *lengths))
    assert y.dtype == np.float32 and y.shape == (2,)
    np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-7)
    ref, _ = ctc_ref(X, label, blank=at.get("blank_label", "first"), **_lengths(at, lengths))
    np.testing.assert_allclose(y, ref, rtol=1e-6)


def test_integer_and_float64_labels_give_the_same_loss_as_mxnet():
    for dt in ("int32", "int64", "float64", "uint8"):
        y = run({}, np.float32(X), np.array([[1, 2], [1, 1]], dt))
        np.testing.assert_allclose(y, [1.741875410079956, 2.3475284576416016], rtol=1e-6)


# MXNet's gradients (head gradient of ones unless given)
GRAD_A = [
    [[0.09846848, -0.26879254, 0.17032422], [0.06142933, -0.56545395, 0.50402474]],
    [[0.13931815, -0.24896795, 0.10965005], [-0.35486192, 0.27471358, 0.08014859]],
    [[0.18308681, 0.03985336, -0.22293997], [-0.12624243, -0.168096, 0.29433843]],
    [[-0.11762086, 0.44789913, -0.33027813], [-0.03717937, -0.3786685, 0.41584787]],
]
GRAD_LAST = [
    [[-0.2499125, 0.26980618, -0.01989375], [0.08331474, -0.00243899, -0.08087564]],
    [[-0.2547537, 0.23185608, 0.02289754], [0.5148534, -0.48151395, -0.03333934]],
    [[0.17301956, -0.10955714, -0.06346238], [0.14184433, -0.21974242, 0.07789829]],
    [[0.34882423, -0.39093783, 0.04211368], [0.14698336, 0.01502386, -0.16200706]],
]
GRAD_LENGTHS = [  # data lengths [3, 2], head [2, -0.5]: zero past each length
    [[3.5565305e-01, -6.9630152e-01, 3.4064844e-01], [-8.3960965e-04, 2.5285199e-01, -2.5201237e-01]],
    [[3.4395665e-01, -3.2243693e-01, -2.1519601e-02], [-4.1612983e-04, 4.0490389e-02, -4.0074293e-02]],
    [[6.8721563e-01, 1.9665645e-01, -8.8387203e-01], [0, 0, 0]],
    [[0, 0, 0], [0, 0, 0]],
]
GRAD_IMPOSSIBLE_1 = [  # sample 1 of [[1, 1, 1], [1, 2, 1]] (sample 0's is zero: MXNet's, within 1e-26)
    [2.1628320e-02, -5.2565324e-01, 5.0402474e-01],
    [1.2644264e-01, 3.7776798e-02, -1.6421971e-01],
    [1.1270573e-01, 4.0905255e-01, -5.2175844e-01],
    [1.0804173e-01, -5.2388960e-01, 4.1584787e-01],
]


def test_ctc_gradients_as_mxnet():
    ones = np.ones(2, np.float32)
    np.testing.assert_allclose(grads({}, ones, *f32(X, [[1, 2], [1, 1]])), GRAD_A, rtol=1e-5, atol=1e-6)
    g = grads({"blank_label": "last"}, ones, *f32(X, [[0, 1], [1, -1]]))
    np.testing.assert_allclose(g, GRAD_LAST, rtol=1e-5, atol=1e-6)
    head = np.array([2, -0.5], np.float32)
    g = grads({"use_data_lengths": True}, head, *f32(X, [[1, 2], [1, 0]], [3, 2]))
    np.testing.assert_allclose(g, GRAD_LENGTHS, rtol=1e-5, atol=1e-6)
    assert not g[2:, 1].any() and not g[3:, 0].any()
    g = grads({}, ones, *f32(X, [[1, 1, 1], [1, 2, 1]]))
    assert not g[:, 0].any()
    np.testing.assert_allclose(g[:, 1], GRAD_IMPOSSIBLE_1, rtol=1e-5, atol=1e-6)
    for label, at, lengths, _ in LOSSES:  # every case: the reference's gradient, in float64
        xs = [np.asarray(v, np.float64) for v in (X, label, *lengths)]
        got = grads(at, np.array([1.0, -2.0]), *xs)
        _, want = ctc_ref(X, label, blank=at.get("blank_label", "first"), **_lengths(at, lengths))
        np.testing.assert_allclose(got, want * np.array([1.0, -2.0])[None, :, None], rtol=1e-9, atol=1e-12)


def test_a_sample_of_length_0_has_a_loss_and_a_gradient_of_0():
    """Its empty label's probability is 1 (MXNet 1.9.1's loss: inf), a label's 0 (MXNet's: 0,
    as an impossible alignment's): a padded sample of no steps adds nothing to a batch's loss."""
    for label in ([[0, 0], [1, 0]], [[1, 2], [1, 0]]):
        y = run({"use_data_lengths": True}, *f32(X, label, [0, 2]))
        assert y[0] == 0 and np.isfinite(y[1])
        g = grads({"use_data_lengths": True}, np.ones(2, np.float32), *f32(X, label, [0, 2]))
        assert not g[:, 0].any() and not g[2:, 1].any() and g[:2, 1].any()


def test_a_label_that_is_the_blank_has_its_losss_true_gradient_where_mxnets_is_not():
    """With label lengths, a label may be the blank's class (MXNet's loss: 2.2581894 for
    [1, 0] with the blank first); MXNet 1.9.1's gradient there is not its loss's (its rows do
    not sum to zero: -0.72282, -1.1839148, 0.17032422 at the first step); ours is, checked
    against finite differences."""
    xs = [np.asarray(v, np.float64) for v in (X, [[1, 0], [2, 2]], [2, 1])]
    at = {"use_label_lengths": True}
    g = grads(at, np.ones(2), *xs)
    np.testing.assert_allclose(g.sum(axis=2), 0, atol=1e-12)
    np.testing.assert_allclose(g[0, 0], [0.17641081, -0.34673504, 0.17032423], rtol=1e-6)
    v = np.random.default_rng(0).standard_normal(X.shape)
    eps = 1e-6
    fd = (run(at, X + eps * v, *xs[1:]) - run(at, X - eps * v, *xs[1:])) / (2 * eps)
    np.testing.assert_allclose((g * v).sum(axis=(0, 2)), fd, rtol=1e-6)


def test_a_batch_without_labels_has_its_loss_where_mxnet_gives_whatever_its_memory_held():
    """Labels all padding (or a label array of width 0): MXNet 1.9.1 packs no labels and gives
    what its output held (-1.8e-12 and 4.6e-41 once); the loss is -log P(all blanks)."""
    y = run({}, *f32(X, [[0, 0], [0, 0]]))
    np.testing.assert_allclose(y, [3.466712474822998, 7.019464], rtol=1e-6)
    y = run({}, np.float32(X), np.zeros((2, 0), np.float32))
    np.testing.assert_allclose(y, [3.466712474822998, 7.019464], rtol=1e-6)


def _long(scale: float) -> tuple[np.ndarray, np.ndarray]:
    t_len, n, c = 1500, 2, 6
    x = (scale * 4 * np.sin(0.37 * np.arange(t_len * n * c))).reshape(t_len, n, c).astype(np.float32)
    label = (np.arange(n * 300).reshape(n, 300) * 7 % 5 + 1).astype(np.float32)
    return x, label


def test_a_long_sequence_neither_underflows_nor_overflows():
    """1500 steps, 300 labels: probabilities of e^-2367, far past float64's range; MXNet's
    losses and gradient (its first steps), within float32's rounding of its own sums."""
    x, label = _long(1.0)
    y = run({}, x, label)
    np.testing.assert_allclose(y, [2367.213134765625, 2366.578369140625], rtol=1e-6)
    g = grads({}, np.ones(2, np.float32), x, label)
    want = [
        [-0.39002666, -0.57555366, 0.09479032, 0.22982322, 0.34310588, 0.29875284],
        [-0.50814742, -0.44769573, 0.02001499, 0.03408033, 0.17175312, 0.73093963],
    ]
    np.testing.assert_allclose(g[:2, 0], want, atol=1e-3)  # (sample 0, its first two steps)
    assert np.isfinite(g).all()
    np.testing.assert_allclose(g.sum(axis=2), 0, atol=1e-5)


def test_a_long_sequence_of_sharp_activations_is_exact_in_float64():
    """Activations 40 apart: losses of 18250 and 20499 (MXNet's, float32: 18250.479 and
    20499.344); MXNet's float32 sums lose the gradient's small terms there (-0.0118 where the
    finite differences give 0.00055), ours meets finite differences in float64."""
    x, label = _long(10.0)
    label[1, 250:] = 0
    y = run({}, x, label)
    np.testing.assert_allclose(y, [18250.478515625, 20499.34375], rtol=1e-6)
    x64, lab64 = x.astype(np.float64), label.astype(np.float64)
    g = grads({}, np.ones(2), x64, lab64)
    v = np.random.default_rng(1).standard_normal(x.shape)
    eps = 1e-5
    fd = (run({}, x64 + eps * v, lab64) - run({}, x64 - eps * v, lab64)) / (2 * eps)
    np.testing.assert_allclose((g * v).sum(axis=(0, 2)), fd, rtol=1e-6)


@pytest.mark.parametrize("dtype", ["float16", "float64"])
def test_float16_and_float64_data_are_computed_in_float64_where_mxnet_refuses_them(dtype):
    """MXNet 1.9.1's CTCLoss takes float32 data only ("data type do not match specified type.
    Expected: half v.s. given float"); here float16 and float64 are computed in float64, the
    loss and gradient rounded to the data's dtype."""
    x = X.astype(dtype)
    label = np.array([[1, 2], [1, 1]], dtype)
    y = run({}, x, label)
    assert y.dtype == dtype
    want, gwant = ctc_ref(x.astype(np.float64), label)
    np.testing.assert_allclose(y, want.astype(dtype), rtol=1e-3 if dtype == "float16" else 1e-12)
    g = grads({}, np.ones(2, dtype), x, label)
    np.testing.assert_allclose(g, gwant, atol=1e-3 if dtype == "float16" else 1e-12)


def test_ctc_through_a_session_and_its_alias(mode):
    """nd.CTCLoss and nd.ctc_loss (MXNet's two names), recorded and differentiated."""
    for name in ("CTCLoss", "ctc_loss"):
        data = nd.array(X)
        data.attach_grad()
        with autograd.record():
            y = getattr(nd, name)(data, nd.array([[1, 2], [1, 0]]), nd.array([3, 2]), use_data_lengths=True)
        y.backward(nd.array([2, -0.5]))
        np.testing.assert_allclose(y.asnumpy(), [1.4513033628463745, 0.8835121393203735], rtol=1e-6)
        np.testing.assert_allclose(data.grad.asnumpy(), GRAD_LENGTHS, rtol=1e-5, atol=1e-6)
    assert OPS["ctc_loss"] is OPS["CTCLoss"]


def test_ctc_gradient_can_be_differentiated_through_a_session(mode):
    """autograd.grad with create_graph: the gradient of a function of the data's gradient (the
    table VJP, recorded), against central differences of that function."""
    label, lens = nd.array([[1, 2], [1, 0]]), nd.array([4, 3])
    v = np.random.default_rng(2).standard_normal(X.shape)
    x = nd.array(X, dtype="float64")
    x.attach_grad()
    with autograd.record():
        y = nd.CTCLoss(x, label.astype("float64"), lens.astype("float64"), use_data_lengths=True)
        (dx,) = autograd.grad(nd.sum(y), [x], create_graph=True)
        z = nd.sum(dx * nd.array(v, dtype="float64"))
    z.backward()
    op = OPS["CTCLoss"]
    at = op.parse_attrs({"use_data_lengths": True})
    lab, ln = np.array([[1.0, 2], [1, 0]]), np.array([4.0, 3])

    def h(xx):
        yy = op.forward(Context(), dict(at), xx, lab, ln)
        return float((op.eager_vjp(at, np.ones(2), yy, xx, lab, ln)[0] * v).sum())

    u = np.random.default_rng(3).standard_normal(X.shape)
    eps = 1e-5
    fd = (h(X + eps * u) - h(X - eps * u)) / (2 * eps)
    np.testing.assert_allclose(float((x.grad.asnumpy() * u).sum()), fd, rtol=1e-6)


def test_ctc_second_derivative_meets_finite_differences():
    """The table VJP, recorded: d/dx <grad(x), v> against central differences of the eager
    gradient (the case in tests/test_ops.py does this too, on random inputs)."""
    op = OPS["CTCLoss"]
    at = op.parse_attrs({"use_data_lengths": True})
    label, lens = np.array([[1.0, 2.0], [1.0, 0.0]]), np.array([4.0, 3.0])
    rng = np.random.default_rng(3)
    v, u = rng.standard_normal(X.shape), rng.standard_normal(X.shape)
    R = Recorder(Context())
    var = Node(grad=np.zeros_like(X))
    xt = Traced(X.copy(), var)
    yt = R.CTCLoss(xt, Traced(label, None), Traced(lens, None), **at)
    (gx, *_) = [resolve(c) for c in op.vjp(R, yt.node.at, Traced(np.ones(2), None), yt, xt, label, lens)]
    h = R.sum(R.mul(gx, Traced(v, None)))
    hess_v = {id(n): g for n, g in backward(Eager(Context()), [h.node], [np.ones(1)], np.add)}[id(var)]

    def h_eager(x):
        y = op.forward(Context(), dict(at), x, label, lens)
        return float((op.eager_vjp(at, np.ones(2), y, x, label, lens)[0] * v).sum())

    eps = 1e-5
    fd = (h_eager(X + eps * u) - h_eager(X - eps * u)) / (2 * eps)
    np.testing.assert_allclose(float((hess_v * u).sum()), fd, rtol=1e-6)


def refused(at: dict, *xs: np.ndarray) -> MXNetError:
    with pytest.raises(MXNetError) as e:
        run(at, *xs)
    assert str(e.value).startswith("CTCLoss"), str(e.value)
    return e.value


LAB = [[1, 2], [1, 1]]
REFUSALS = [  # MXNet's checks at inference, in its words where it has them
    ({}, [X[0], LAB], ShapeError, "data must be 3-D"),  # (MXNet: "must be 3")
    ({}, [X, [1, 1]], ShapeError, "label must be 2-D"),
    ({}, [X, [[1, 1]]], ShapeError, "batch sizes of data"),
    ({}, [X[:, :, :0], LAB], ShapeError, "at least one class"),  # (MXNet fails on an empty array)
    ({}, [X, [[1, 1, 1, 1, 1]] * 2], ShapeError, "cannot exceed the data's sequence length 4"),
    ({"use_data_lengths": True}, [X, LAB, [3, 3, 3]], ShapeError, "data_lengths must be a vector"),
    ({"use_label_lengths": True}, [X, LAB, [[1, 1]]], ShapeError, "label_lengths must be a vector"),
    ({"use_data_lengths": True}, [X, LAB], InvalidInput, "expects 3 inputs .* but got 2"),
    ({}, [X, LAB, [4, 4]], InvalidInput, "expects 2 inputs .* but got 3"),
    ({"blank_label": "middle"}, [X, LAB], InvalidInput, "blank_label must be first or last"),
    # values MXNet 1.9.1 reads past its arrays with (garbage losses), or crashes on
    ({}, [X, [[3, 1], [1, 1]]], InvalidInput, r"label 3 of sample 0 is outside the alphabet \[0, 3\)"),
    ({}, [X, [[-2, 1], [1, 1]]], InvalidInput, "label -2 of sample 0 is outside"),
    ({"blank_label": "last"}, [X, [[1, 1], [1, -2]]], InvalidInput, "label -2 of sample 1"),
    ({"use_data_lengths": True}, [X, LAB, [5, 2]], InvalidInput, r"data_lengths must be in \[0, 4\]"),
    ({"use_data_lengths": True}, [X, LAB, [-1, 2]], InvalidInput, r"data_lengths must be in \[0, 4\]"),
    ({"use_label_lengths": True}, [X, LAB, [3, 1]], InvalidInput, r"label_lengths must be in \[0, 2\]"),
    ({"use_label_lengths": True}, [X, LAB, [-1, 1]], InvalidInput, r"label_lengths must be in \[0, 2\]"),
    ({}, [X, [[np.nan, 1], [1, 1]]], InvalidInput, "label must be finite"),
]


@pytest.mark.parametrize("at, xs, error, match", REFUSALS)
def test_ctc_refusals(at, xs, error, match):
    e = refused(at, *f32(*xs))
    assert isinstance(e, error)
    assert re.search(match, str(e)), str(e)


def test_ctc_refuses_integer_data_and_bool_labels():
    e = refused({}, X.astype(np.int32), np.array(LAB, np.int32))
    assert isinstance(e, DTypeError) and "floating point" in str(e)
    e = refused({}, np.float32(X), np.array(LAB, bool))
    assert isinstance(e, DTypeError) and "label must be numbers" in str(e)


def test_ctc_an_empty_batch_gives_an_empty_loss():
    """MXNet 1.9.1 fails on a batch of 0 ("zeros_like inferring shapes failed"): here an
    empty loss, and an empty gradient."""
    y = run({}, np.zeros((4, 0, 3), np.float32), np.zeros((0, 2), np.float32))
    assert y.shape == (0,) and y.dtype == np.float32
    g = grads({}, np.zeros(0, np.float32), np.zeros((4, 0, 3), np.float32), np.zeros((0, 2), np.float32))
    assert g.shape == (4, 0, 3)


MEASURED = [
    ("CTCLoss", {}, [((200, 8, 30), "float32"), ((8, 40), "float32")]),
    ("CTCLoss", {"blank_label": "last"}, [((50, 16, 400), "float64"), ((16, 10), "float64")]),
    (
        "CTCLoss",
        {"use_data_lengths": True, "use_label_lengths": True},
        [((300, 4, 20), "float16"), ((4, 60), "float16"), ((4,), "float16"), ((4,), "float16")],
    ),
]


@pytest.mark.parametrize("name, at, inputs", MEASURED, ids=[f"{m[0]}-{i}" for i, m in enumerate(MEASURED)])
def test_declared_working_arrays_bound_what_ctc_makes(name, at, inputs):
    """``scratch`` and ``vjp_scratch`` bound what a forward and a backward make (labels drawn in
    [1, 5], lengths too: inside the alphabet and the data)."""
    rng = np.random.default_rng(0)
    values = [(rng.random(s) * 4 + 1).astype(d) for s, d in inputs]
    check_working_arrays(name, at, values, variables=1)


def test_the_lengths_are_taken_by_name(mode):
    """MXNet's CTCLoss takes data_lengths and label_lengths as keywords (its values)."""
    d = nd.array(np.cos(np.arange(40.0)).reshape(5, 2, 4))
    lab = nd.array([[1, 2], [3, 0]])
    by_name = nd.CTCLoss(d, lab, data_lengths=nd.array([4, 5]), use_data_lengths=True)
    by_place = nd.CTCLoss(d, lab, nd.array([4, 5]), use_data_lengths=True)
    assert by_name.asnumpy().tolist() == by_place.asnumpy().tolist()
    labels = nd.contrib.CTCLoss(d, lab, label_lengths=nd.array([1, 1]), use_label_lengths=True)
    assert (
        labels.asnumpy().tolist()
        == nd.ctc_loss(d, lab, None, nd.array([1, 1]), use_label_lengths=True).asnumpy().tolist()
    )
    assert labels.asnumpy().tolist() != nd.CTCLoss(d, lab).asnumpy().tolist()


def test_huge_lengths_and_labels_are_named_as_given():
    for at, args, message in (
        ({"use_data_lengths": True}, (X, [[1, 2], [1, 0]], [1e19, 2]), r"data_lengths 9.99+\d*e\+18 is out of range"),
        ({}, (X, [[1e20, 2], [1, 0]]), r"label 1.00+\d*e\+20 is out of range"),
    ):
        with pytest.raises(InvalidInput, match=message):
            run(at, *f32(*args))


def test_its_time_steps_count_as_work():
    """A long sequence of one class is 20,000 steps of a Python loop, whatever its arithmetic."""
    from gradserve.engine.slices import SLICE_WORK

    op = OPS["CTCLoss"]
    assert op.work(op.parse_attrs({}), Spec((20000, 1, 1), "float32"), Spec((1, 1), "float32")) > 10 * SLICE_WORK
