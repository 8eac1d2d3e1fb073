"""The compiled kernels agree with the numpy code they replace, and the ops
that use them (indexing gradients, sgd_update) give the same results either way."""

from __future__ import annotations

import numpy as np
import pytest

from gradserve import MXNetError, autograd, nd
from gradserve.engine import kernels


def test_scatter_add_rows_matches_numpy_with_repeats_and_negative_indices():
    rng = np.random.default_rng(0)
    idx = rng.integers(-50, 50, 500)
    g = rng.standard_normal((500, 3, 2)).astype(np.float32)
    want = np.zeros((50, 3, 2), np.float32)
    kernels.scatter_add_rows_numpy(want, idx, g)
    got = np.zeros((50, 3, 2), np.float32)
    kernels.scatter_add_rows(got, idx, g)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("wd", "rescale", "clip"), [(0.0, 1.0, -1.0), (0.01, 0.5, 0.3)])
def test_sgd_update_matches_numpy(wd, rescale, clip):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((40, 7)).astype(np.float32)
    g = rng.standard_normal((40, 7)).astype(np.float32)
    want, got = w.copy(), w.copy()
    kernels.sgd_update_numpy(want, g, 0.1, wd, rescale, clip)
    kernels.sgd_update(got, g, 0.1, wd, rescale, clip)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_relu_grad_matches_numpy_nan_included(dtype):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((33, 17)).astype(dtype)
    g = rng.standard_normal((33, 17)).astype(dtype)
    x[0, :3] = [0.0, -0.0, np.nan]
    g[1, :2] = [np.nan, np.inf]
    got = kernels.relu_grad(g, x)
    assert got.dtype == g.dtype and got.shape == g.shape
    np.testing.assert_array_equal(got, kernels.relu_grad_numpy(g, x))
    np.testing.assert_array_equal(kernels.relu_grad(g.T, x.T), kernels.relu_grad_numpy(g.T, x.T))  # strided


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_softmax_ce_grad_matches_numpy(dtype):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((64, 10)) * 30).astype(dtype)  # large logits: the max shift matters
    idx = rng.integers(0, 10, 64)
    g = np.array([0.25], dtype)
    got = kernels.softmax_ce_grad(x, idx, g)
    want = kernels.softmax_ce_grad_numpy(x, idx, g[0])
    assert got.dtype == x.dtype and got.shape == x.shape
    np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == "float32" else 1e-12, atol=1e-7)
    np.testing.assert_allclose(got.sum(axis=1), 0, atol=1e-6)  # each row of softmax - one_hot sums to 0


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_softmax_ce_loss_matches_numpy(dtype):
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((64, 10)) * 30).astype(dtype)
    idx = rng.integers(0, 10, 64)
    got, want = kernels.softmax_ce_loss(x, idx), kernels.softmax_ce_loss_numpy(x, idx)
    np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == "float32" else 1e-12)
    capped = kernels.softmax_ce_loss(x, idx, 5.0)  # (logits this wide put most samples past it)
    np.testing.assert_allclose(capped, kernels.softmax_ce_loss_numpy(x, idx, 5.0), rtol=1e-6)
    assert 0 < capped < got and capped <= 5.0 * len(idx)
    assert kernels.softmax_ce_loss(x[:0], idx[:0]) == 0.0  # an empty batch
    x[3, 2] = np.nan
    assert np.isnan(kernels.softmax_ce_loss(x, idx)) and np.isnan(kernels.softmax_ce_loss_numpy(x, idx))
    assert np.isnan(kernels.softmax_ce_loss(x, idx, 5.0)) and np.isnan(kernels.softmax_ce_loss_numpy(x, idx, 5.0))


def test_the_compiled_path_is_used_when_installed_and_not_disabled():
    import os

    try:
        import numba  # noqa: F401
    except ImportError:
        assert not kernels.HAVE_NUMBA
    else:
        assert kernels.HAVE_NUMBA == (os.environ.get("GRADSERVE_NUMBA", "1") != "0")


@pytest.mark.skipif(not kernels.HAVE_NUMBA, reason="numba kernels are not in use")
def test_a_kernel_lets_other_threads_run_while_it_works():
    """As numpy's ufuncs, the compiled kernels release the GIL: another session's batch (here,
    a thread counting its wake-ups) runs while one updates a large weight."""
    import threading
    import time

    w = np.zeros(1 << 25, np.float32)  # 128 MiB: tens of milliseconds a pass
    g = np.ones_like(w)
    kernels.sgd_update(np.zeros(16, np.float32), g[:16], 0.1, 0.0, 1.0, -1.0)  # compiled before it is timed
    done = threading.Event()
    took: list[float] = []

    def work() -> None:
        t0 = time.perf_counter()
        for _ in range(3):
            kernels.sgd_update(w, g, 0.1, 0.0, 1.0, -1.0)
        took.append(time.perf_counter() - t0)
        done.set()

    worker = threading.Thread(target=work)
    ticks = 0
    worker.start()
    while not done.is_set():
        time.sleep(0.0005)
        ticks += 1
    worker.join()
    assert np.allclose(w[:: 1 << 20], -0.3)
    # holding the GIL, a 5 ms switch interval would allow at most one wake-up per 5 ms
    assert ticks >= max(3, took[0] / 0.004), f"{ticks} wake-ups in {took[0] * 1e3:.0f} ms"


def test_nd_sgd_update_in_place_and_into_out(mode):
    w = nd.array([1.0, -2.0, 3.0])
    w.attach_grad()
    with autograd.record():
        loss = (w * w).sum()
    loss.backward()
    same = nd.sgd_update(w, w.grad, lr=0.1, wd=0.0, out=w)
    assert same is w
    np.testing.assert_allclose(w.asnumpy(), [0.8, -1.6, 2.4], rtol=1e-6)
    fresh = nd.sgd_update(w, nd.ones(3), lr=1.0, clip_gradient=0.5)
    np.testing.assert_allclose(fresh.asnumpy(), [0.3, -2.1, 1.9], rtol=1e-6)
    np.testing.assert_allclose(w.asnumpy(), [0.8, -1.6, 2.4], rtol=1e-6)


def test_nd_momentum_and_adam_updates_are_mxnets(mode):
    """nd.sgd_mom_update and nd.adam_update: MXNet 1.9.1's values (recorded with its install),
    in place with out=weight, into a new array without it; the states change in place either way."""
    w, g, m = nd.array([1.0, -2.0, 3.0]), nd.array([0.5, 4.0, -6.0]), nd.array([0.1, 0.2, -0.3])
    same = nd.sgd_mom_update(w, g, m, lr=0.1, momentum=0.9, wd=0.01, rescale_grad=0.5, clip_gradient=1.0, out=w)
    assert same is w
    np.testing.assert_allclose(w.asnumpy(), [1.064, -1.918, 2.827], rtol=1e-6)
    np.testing.assert_allclose(m.asnumpy(), [0.064, 0.08199999, -0.17300001], rtol=1e-6)
    w, m = nd.array([1.0, -2.0, 3.0]), nd.array([0.1, 0.2, -0.3])
    fresh = nd.sgd_mom_update(w, g, m, lr=0.1)
    np.testing.assert_allclose(fresh.asnumpy(), [0.95, -2.4, 3.6], rtol=1e-6)
    assert w.asnumpy().tolist() == [1.0, -2.0, 3.0]
    np.testing.assert_allclose(m.asnumpy(), [-0.05, -0.4, 0.6], rtol=1e-6)

    w, mean, var = nd.array([1.0, -2.0, 3.0]), nd.array([0.1, 0.2, -0.3]), nd.array([0.01, 0.5, 0.2])
    at = {"lr": 0.1, "beta1": 0.8, "beta2": 0.9, "epsilon": 1e-3, "wd": 0.01, "rescale_grad": 0.5, "clip_gradient": 1.0}
    assert nd.adam_update(w, g, mean, var, out=w, **at) is w
    np.testing.assert_allclose(w.asnumpy(), [0.8956842, -2.048477, 3.0829954], rtol=1e-6)
    np.testing.assert_allclose(mean.asnumpy(), [0.132, 0.36, -0.44], rtol=1e-6)
    np.testing.assert_allclose(var.asnumpy(), [0.01576, 0.55, 0.28000003], rtol=1e-6)
    w, mean, var = nd.array([1.0, -2.0, 3.0]), nd.array([0.1, 0.2, -0.3]), nd.array([0.01, 0.5, 0.2])
    fresh = nd.adam_update(w, g, mean, var, lr=0.1)
    np.testing.assert_allclose(fresh.asnumpy(), [0.86165035, -2.080782, 3.1791627], rtol=1e-6)
    assert w.asnumpy().tolist() == [1.0, -2.0, 3.0]
    np.testing.assert_allclose(mean.asnumpy(), [0.14000002, 0.5800001, -0.8700001], rtol=1e-6)


def test_a_clip_gradient_of_0_clips_every_gradient_to_0_as_in_mxnet(mode):
    """MXNet clips at clip_gradient >= 0 (-1, the default, is off): at 0 the step is the
    weight decay's alone. Ours clipped only above 0."""
    g = nd.array([0.5, -4.0])
    w = nd.array([1.0, 2.0])
    nd.sgd_update(w, g, lr=0.1, clip_gradient=0.0, out=w)
    assert w.asnumpy().tolist() == [1.0, 2.0]
    w, m = nd.array([1.0, 2.0]), nd.array([0.5, 0.5])
    nd.sgd_mom_update(w, g, m, lr=0.1, momentum=0.5, clip_gradient=0.0, out=w)
    assert m.asnumpy().tolist() == [0.25, 0.25] and w.asnumpy().tolist() == [1.25, 2.25]
    w, mean, var = nd.array([1.0, 2.0]), nd.array([1.0, 1.0]), nd.array([1.0, 1.0])
    nd.adam_update(w, g, mean, var, lr=0.1, beta1=0.5, beta2=0.5, clip_gradient=0.0, out=w)
    np.testing.assert_allclose(mean.asnumpy(), [0.5, 0.5])
    np.testing.assert_allclose(var.asnumpy(), [0.5, 0.5])


def test_optimizer_updates_refuse_what_does_not_fit(mode):
    from gradserve.engine.errors import AutogradError

    w, g = nd.array([1.0, 2.0]), nd.array([1.0, 1.0])
    with pytest.raises(MXNetError, match="mom .2, 1. float32 does not fit weight"):
        nd.sgd_mom_update(w, g, nd.zeros((2, 1)), lr=0.1)
    with pytest.raises(MXNetError, match="var .3,. float32 does not fit weight"):
        nd.adam_update(w, g, nd.zeros(2), nd.zeros(3), lr=0.1)
    m = nd.zeros(2)
    m.attach_grad()
    with autograd.record():
        state = m * 2
        with pytest.raises(AutogradError, match="already in a computational graph"):
            nd.sgd_mom_update(w, g, state, lr=0.1, out=w)
    i = nd.array([1, 2], dtype="int32")
    with pytest.raises(MXNetError, match="must be a float array"):
        nd.sgd_mom_update(i, i, nd.zeros(2, dtype="int32"), lr=0.1, out=i).wait_to_read()
    with pytest.raises(MXNetError, match="must be arrays of their own"):
        nd.adam_update(w, g, w[:], nd.zeros(2), lr=0.1, out=w).wait_to_read()
    assert w.asnumpy().tolist() == [1.0, 2.0]


def test_embedding_style_gradient_through_take_and_index_arrays(mode):
    table = nd.arange(12).reshape((6, 2))
    table.attach_grad()
    idx = nd.array([0, 5, 5, 2, 0, 0])
    with autograd.record():
        y = (nd.take(table, idx) * 2).sum() + table[idx].sum()
    y.backward()
    assert table.grad.asnumpy()[:, 0].tolist() == [9, 0, 3, 0, 0, 6]


@pytest.mark.parametrize("dtype", ["float16", "int32", "bool"])
def test_kernels_take_every_dtype_the_engine_has(dtype):
    """numba compiles no float16 kernel: those arrays (and any the kernels do not take) go
    to the numpy code, with the same results, instead of failing."""
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((4, 3)) * 3).astype(dtype)
    g = (rng.standard_normal((4, 3)) * 3).astype(dtype)
    np.testing.assert_array_equal(kernels.relu_grad(g, x), kernels.relu_grad_numpy(g, x))
    idx = np.array([0, 2, 2, 1])
    want, got = np.zeros((3, 3), dtype), np.zeros((3, 3), dtype)
    kernels.scatter_add_rows_numpy(want, idx, g)
    kernels.scatter_add_rows(got, idx, g)
    np.testing.assert_array_equal(got, want)
    if dtype == "float16":
        w1, w2 = x.copy(), x.copy()
        kernels.sgd_update_numpy(w1, g, 0.1, 0.0, 1.0, -1.0)
        kernels.sgd_update(w2, g, 0.1, 0.0, 1.0, -1.0)
        np.testing.assert_array_equal(w2, w1)
        labels = np.array([0, 1, 2, 0])
        np.testing.assert_allclose(
            kernels.softmax_ce_loss(x, labels), kernels.softmax_ce_loss_numpy(x, labels), rtol=1e-3
        )
        one = np.ones(1, dtype)
        np.testing.assert_array_equal(
            kernels.softmax_ce_grad(x, labels, one), kernels.softmax_ce_grad_numpy(x, labels, one[0])
        )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("a", [0.1, -3.7, 0.0, 1e-30])
def test_scaled_sub_gives_numpys_bits(dtype, a):
    rng = np.random.default_rng(2)
    w = rng.standard_normal((33, 17)).astype(dtype) * 1e3
    g = rng.standard_normal((33, 17)).astype(dtype)
    want = w.copy()
    want -= g * np.asarray(a, dtype)  # what mul_scalar then update(fn="sub") compute
    got = w.copy()
    ran = kernels.scaled_sub(got, g, a)
    assert ran == kernels.HAVE_NUMBA
    if ran:
        assert np.array_equal(got.view(np.uint8), want.view(np.uint8))
    else:
        assert np.array_equal(got, w)  # left for the caller's numpy


def test_scaled_sub_declines_what_it_cannot_take():
    w = np.ones((4, 4), np.float32)
    assert not kernels.scaled_sub(w[:, ::2], np.ones((4, 2), np.float32), 0.5)  # not contiguous
    assert not kernels.scaled_sub(np.ones(4, np.int64), np.ones(4, np.int64), 2.0)  # integers
    assert not kernels.scaled_sub(w, np.ones((4, 4), np.float64), 0.5)  # mixed dtypes
    assert not kernels.scaled_sub(w[:2].reshape(-1), w[1:3].reshape(-1), 0.5)  # overlapping
    assert (w == 1).all()


@pytest.mark.parametrize("name", ["erf", "erfc", "gamma", "lgamma"])
def test_special_functions_compiled_match_the_math_module(name):
    """numba's erf, erfc, gamma and lgamma against Python's math module (the fallback), poles,
    overflows, infinities and NaN included (numba's gamma and lgamma may differ in the last bit)."""
    x = np.concatenate(
        [np.linspace(-6.3, 30, 997), [0.0, -0.0, -1.0, -3.0, 171.0, 172.0, 1e306, np.inf, -np.inf, np.nan]]
    )
    np.testing.assert_allclose(kernels.special(name, x), kernels.special_numpy(name, x), rtol=1e-14, atol=1e-15)
    assert kernels.special(name, np.zeros((0, 3))).shape == (0, 3)


def _update_by(s, w: int, g: int, scale: float, fn: str = "sub") -> dict:
    return s.run_batch({"ops": [{"op": "update", "in": [w, g], "at": {"fn": fn, "scale": scale}}]})


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "int32"])
@pytest.mark.parametrize("fn", ["sub", "add", "mul"])
@pytest.mark.parametrize("scale", [0.1, -3.7, 1e39, float("nan"), -float("nan"), -0.0])
def test_an_update_by_a_scaled_array_gives_the_bits_of_mul_scalar_then_update(dtype, fn, scale):
    """``update`` with ``scale`` (what the client sends for ``w -= a * g``) changes the target as
    ``mul_scalar`` and then ``update`` do, bit for bit: in one pass where the kernel takes the
    arrays (float32 and float64 add and sub), by the product elsewhere; a broadcast value and a
    value that is the target itself included."""
    from gradserve.engine.session import Session

    rng = np.random.default_rng(5)
    w0 = (rng.standard_normal((6, 5)) * 50).astype(dtype)
    g0 = (rng.standard_normal((6, 5)) * 5).astype(dtype)
    for value in (g0, g0[0], None, g0.T.copy().T):  # the same shape, a broadcast row, the target itself, strided
        fused, plain = Session("fused"), Session("plain")
        for s in (fused, plain):
            s.put(1, w0.copy())
            s.put(2, w0.copy() if value is None else np.array(value, order="K"))
        g = 1 if value is None else 2
        reply = _update_by(fused, 1, g, scale, fn)
        assert "error" not in reply, reply
        ops = [
            {"op": "mul_scalar", "in": [g], "out": [3], "at": {"scalar": scale}},
            {"op": "update", "in": [1, 3], "at": {"fn": fn}},
            {"op": "free", "in": [3]},
        ]
        reply = plain.run_batch({"ops": ops})
        assert "error" not in reply, reply
        got, want = fused.get(1), plain.get(1)
        assert got.dtype == want.dtype and got.view(np.uint8).tobytes() == want.view(np.uint8).tobytes()
        assert sorted(fused.arrays) == [1, 2] and fused.nbytes == plain.nbytes  # no product kept


def test_an_update_by_a_scaled_array_refuses_what_it_cannot_do():
    from gradserve.engine.session import Session

    s = Session("t")
    s.put(1, np.ones(3, np.float32))
    s.put(2, np.ones(3, np.float32))
    s.put(3, np.ones(4, np.float32))
    cases = [
        ({"op": "update", "in": [1], "at": {"fn": "sub", "scale": 2.0}}, "scale multiplies a value array"),
        ({"op": "update", "in": [1, 2], "at": {"fn": "sub", "scale": 2.0, "scalar": 1.0}}, "not both"),
        ({"op": "update", "in": [1, 3], "at": {"fn": "sub", "scale": 2.0}}, "cannot update shape"),
        ({"op": "update", "in": [1, 2], "at": {"fn": "sub", "scale": "x"}}, "scale"),
    ]
    for ins, says in cases:
        reply = s.run_batch({"ops": [ins]})
        assert reply["error"]["kind"] in ("InvalidInput", "ShapeError") and says in reply["error"]["message"], reply
        assert s.get(1).tolist() == [1.0, 1.0, 1.0]  # left as it was


def test_a_programs_update_by_a_scaled_array_keeps_its_scale_when_planned():
    """A program's ``mul_scalar`` and then an ``update`` that scales again: the plan (a later
    call's steps without their checks) must not take the pair for ``w -= a * g`` and drop the
    update's own scale."""
    from gradserve.engine.session import Session

    s = Session("t")
    s.put(1, np.zeros(2, np.float32))
    s.put(2, np.array([10.0, 20.0], np.float32))
    prog = {
        "id": 1,
        "nargs": 1,
        "program": [
            {"op": "mul_scalar", "in": [-1], "out": [-2], "at": {"scalar": 2.0}},
            {"op": "update", "in": [1, -2], "at": {"fn": "sub", "scale": 3.0}},
        ],
        "outputs": [1],  # (the product is read by the update alone, as the plan's fusing wants)
    }
    assert "error" not in s.run_batch({"ops": [{"op": "define", "at": prog}]})
    for k in range(4):  # the first call checked, the others from the plan
        reply = s.run_batch({"ops": [{"op": "call", "in": [2], "out": [10 + k], "at": {"id": 1}}]})
        assert "error" not in reply, reply
        assert s.get(1).tolist() == [-60.0 * (k + 1), -120.0 * (k + 1)]
