"""The client as MXNet code uses it: autograd semantics, errors raised where
MXNet raises them, the lazy queue, frees, and a training loop's round trips."""

from __future__ import annotations

import gc

import numpy as np
import pytest

import gradserve
from gradserve import MXNetError, autograd, nd
from gradserve.engine.errors import AutogradError, DTypeError, QuotaExceeded, ShapeError
from gradserve.engine.session import Limits
from gradserve.transport import InProcess


def requests(client: gradserve.Client) -> int:
    return client.transport.requests


# -- autograd misuse raises at the call, in both modes, with no round trip ----------


def test_second_backward_raises_at_the_call_without_a_round_trip(mode):
    x = nd.ones((2,))
    x.attach_grad()
    with autograd.record():
        y = x * 2
    y.backward()
    before = requests(mode)
    with pytest.raises(MXNetError, match="retain_graph=True") as e:
        y.backward()
    assert isinstance(e.value, RuntimeError)
    assert requests(mode) == before
    assert x.grad.asnumpy().tolist() == [2, 2]


def test_retain_graph_allows_a_second_backward(mode):
    x = nd.array([1.0, 2.0])
    x.attach_grad(grad_req="add")
    with autograd.record():
        y = x * x
    y.backward(retain_graph=True)
    y.backward()
    assert x.grad.asnumpy().tolist() == [4, 8]


def test_backward_of_unrecorded_arrays_raises(mode):
    x = nd.ones((2,))
    x.attach_grad()
    with pytest.raises(MXNetError, match="not in a computational graph"):
        (x * 2).backward()
    a = nd.ones(2)
    with autograd.record():
        b = a * 2  # no input has a gradient: not recorded, as in MXNet
    with pytest.raises(MXNetError):
        b.backward()


def test_inplace_write_to_recorded_array_raises_inside_record_only(mode):
    x = nd.ones((3,))
    x.attach_grad()
    with autograd.record():
        y = x * 2
        with pytest.raises(AutogradError, match="already in a computational graph"):
            y[:] = 1
        with pytest.raises(AutogradError):
            x[0] = 5
        free = nd.zeros(3)
        free[1] = 4  # not in the graph: fine
    y[0] = 7  # outside record: fine
    assert y.asnumpy().tolist() == [7, 2, 2]
    assert free.asnumpy().tolist() == [0, 4, 0]


def test_shape_and_dtype_errors_raise_at_the_call(mode):
    before = requests(mode)
    with pytest.raises(ShapeError, match=r"broadcast together with shapes \(2, 3\) \(4, 5\)"):
        nd.ones((2, 3)) + nd.ones((4, 5))
    with pytest.raises(MXNetError, match="not aligned"):
        nd.dot(nd.ones((2, 3)), nd.ones((2, 3)))
    with pytest.raises(ValueError, match="cannot reshape"):
        nd.ones((2, 3)).reshape((4,))
    with pytest.raises(DTypeError):
        nd.ones(2, dtype="float32") + nd.ones(2, dtype="float64")
    with pytest.raises(IndexError):
        nd.ones((3,))[5]
    assert requests(mode) == before


def test_grad_req_add_accumulates_and_attach_grad_resets(mode):
    x = nd.ones(2)
    x.attach_grad(grad_req="add")
    for _ in range(2):
        with autograd.record():
            y = x * 3
        y.backward()
    assert x.grad.asnumpy().tolist() == [6, 6]
    x.attach_grad()
    assert x.grad.asnumpy().tolist() == [0, 0]


def test_head_gradient_and_non_scalar_heads(mode):
    x = nd.array([[1.0, 2.0], [3.0, 4.0]])
    x.attach_grad()
    with autograd.record():
        y = x * x
    y.backward(nd.array([[1.0, 0.0], [0.5, 2.0]]))
    assert x.grad.asnumpy().tolist() == [[2, 0], [3, 16]]
    with autograd.record():
        y = x * x
    with pytest.raises(ShapeError):
        y.backward(nd.ones((3,)))


def test_scopes_restore_flags_and_modes(mode):
    assert (autograd.is_recording(), autograd.is_training()) == (False, False)
    with autograd.record():
        assert autograd.is_recording() and autograd.is_training()
        with autograd.pause():
            assert not autograd.is_recording() and not autograd.is_training()
        with autograd.record(train_mode=False):
            assert autograd.is_recording() and not autograd.is_training()
        assert autograd.is_recording() and autograd.is_training()
    with autograd.train_mode():
        assert autograd.is_training() and not autograd.is_recording()
    assert autograd.set_recording(True) is False
    assert autograd.set_recording(False) is True
    assert autograd.set_training(True) is False
    assert autograd.set_training(False) is True


def test_gradient_flows_only_through_recorded_ops(mode):
    x = nd.array([1.0, 2.0, 3.0])
    x.attach_grad()
    with autograd.record():
        y = x * x
        with autograd.pause():
            c = y * 10  # a constant for the graph
        z = (y + c).sum()
    z.backward()
    assert x.grad.asnumpy().tolist() == [2, 4, 6]


# -- values, dtypes and printing as MXNet ------------------------------------------


def test_mxnet_dtype_rules(mode):
    a = nd.arange(4, dtype="int32")
    assert (a * 2.5).asnumpy().tolist() == [0, 2, 4, 6]  # scalar cast to int32
    assert (a / 2).asnumpy().tolist() == [0, 0, 1, 1]  # integer division truncates
    assert (nd.array([-7, 7], dtype="int32") / 2).asnumpy().tolist() == [-3, 3]
    assert (a < 1.5).dtype is np.int32
    assert (nd.arange(3) == 1).asnumpy().tolist() == [0, 1, 0]
    assert nd.array(np.array([1, 2], dtype=np.int64)).dtype is np.float32
    assert nd.array([1.5]).dtype is np.float32
    assert nd.random.normal(shape=1).dtype is np.float32


def test_printing_and_scalars(mode):
    assert repr(nd.array([1, 2, 3], dtype="int32")) == "\n[1 2 3]\n<NDArray 3 @cpu(0)>"
    assert str(nd.arange(2000)).startswith("\n[0.000e+00 1.000e+00 2.000e+00 ... 1.997e+03")
    assert repr(nd.array(5)) == "\n5.0\n<NDArray  @cpu(0)>"
    s = nd.ones(1).asscalar()
    assert type(s) is np.float32 and s == 1
    with pytest.raises(ValueError, match="not a scalar"):
        nd.ones(2).asscalar()
    with pytest.raises(ValueError, match="ambiguous"):
        bool(nd.ones(2))
    assert bool(nd.ones(1)) and not bool(nd.zeros(1))
    assert len(nd.ones((3, 2))) == 3 and nd.ones((3, 2)).size == 6
    assert str(nd.ones(1).context) == "cpu(0)" and nd.ones(1).context == gradserve.cpu()


def test_full_reductions_have_shape_one(mode):
    x = nd.ones((2, 3))
    assert x.sum().shape == (1,) and x.mean().shape == (1,) and x.norm().shape == (1,)
    assert x.sum(axis=1).shape == (2,)
    assert x.sum(axis=1, keepdims=True).shape == (2, 1)
    assert x[1, 2].shape == (1,)
    assert nd.dot(nd.ones(3), nd.ones(3)).asnumpy().tolist() == [3]


def test_slicing_and_slice_assignment(mode):
    x = nd.arange(12).reshape((3, 4))
    assert x[1].asnumpy().tolist() == [4, 5, 6, 7]
    assert x[:, 1].asnumpy().tolist() == [1, 5, 9]
    assert x[1:3, ::2].asnumpy().tolist() == [[4, 6], [8, 10]]
    x[1:3] = 0
    x[0] = nd.array([9, 9, 9, 9])
    x[2, 3] = 5
    assert x.asnumpy().tolist() == [[9, 9, 9, 9], [0, 0, 0, 0], [0, 0, 0, 5]]
    x[:] = nd.ones((3, 4)) * 7
    assert x.sum().asscalar() == 84
    with pytest.raises(ShapeError):
        x[0] = nd.ones(3)


def test_slice_gradient(mode):
    x = nd.arange(12).reshape((3, 4))
    x.attach_grad()
    with autograd.record():
        y = x[1:3, 1].sum() + (x[0] * 2).sum()
    y.backward()
    assert x.grad.asnumpy().tolist() == [[2, 2, 2, 2], [0, 1, 0, 0], [0, 1, 0, 0]]


def test_sessions_seed_their_own_generators(live_server):
    a = gradserve.connect(live_server.url, seed=7)
    first = nd.random.normal(shape=(3,)).asnumpy()
    b = gradserve.connect(None, seed=7)
    second = nd.random.normal(shape=(3,)).asnumpy()
    gradserve.set_current(None)
    b.close()
    np.testing.assert_array_equal(first, second)
    with pytest.raises(MXNetError):
        print(nd.ones(1) + 0)  # connect() closed the first session, not this one
        a.flush()


# -- the queue: errors at sync points, dead handles, frees ------------------------


def test_engine_error_surfaces_at_the_sync_point_naming_op_and_line():
    client = gradserve.Client(InProcess(limits=Limits(max_array_bytes=1000)))
    gradserve.set_current(client)
    try:
        ok = nd.ones((10,))
        big = nd.zeros((1000,))  # over the session's per-array limit, found by the engine
        after = ok + 1  # queued after the failing op: never runs
        with pytest.raises(QuotaExceeded, match=r"op zeros, queued at .*test_client.py:\d+") as e:
            print(big)
        with pytest.raises(QuotaExceeded) as again:
            after.asnumpy()
        assert again.value is e.value
        assert ok.asnumpy().tolist() == [1] * 10  # ops before the failure took effect
    finally:
        gradserve.set_current(None)


def test_sync_mode_raises_at_the_line():
    client = gradserve.Client(InProcess(limits=Limits(max_array_bytes=1000)), sync=True)
    gradserve.set_current(client)
    try:
        with pytest.raises(QuotaExceeded):
            nd.zeros((1000,))
    finally:
        gradserve.set_current(None)


def test_garbage_collected_proxies_free_their_handles(mode):
    x = nd.ones((100,))
    for _ in range(200):
        x = x + 1
    x.wait_to_read()
    gc.collect()
    nd.waitall()
    assert mode.info()["arrays"] < 5
    assert x.asnumpy()[0] == 201


def test_queue_flushes_by_itself_past_its_bound(mode, monkeypatch):
    from gradserve import runtime

    monkeypatch.setattr(runtime, "MAX_QUEUED_OPS", 50)
    before = requests(mode)
    x = nd.zeros(3)
    for _ in range(120):
        x = x + 1
    assert requests(mode) - before == 2
    assert x.asnumpy().tolist() == [120] * 3


# -- a training loop: loss falls, one request per step that reads the loss ----------


def synthetic_regression(n: int = 256):
    true_w, true_b = nd.array([[2.0], [-3.4]]), 4.2
    features = nd.random.normal(scale=1, shape=(n, 2))
    labels = nd.dot(features, true_w) + true_b
    labels = labels + nd.random.normal(scale=0.01, shape=labels.shape)
    return features, labels


def test_linear_regression_learns_with_one_request_per_logged_step(mode):
    features, labels = synthetic_regression()
    w = nd.random.normal(scale=0.01, shape=(2, 1))
    b = nd.zeros(shape=(1,))
    w.attach_grad()
    b.attach_grad()
    lr, batch, epochs = 0.3, 32, 5
    losses = []
    start = requests(mode)
    for _epoch in range(epochs):
        for i in range(0, 256, batch):
            X, y = features[i : i + batch], labels[i : i + batch]
            with autograd.record():
                loss = ((nd.dot(X, w) + b - y.reshape((batch, 1))) ** 2 / 2).mean()
            loss.backward()
            w[:] = w - lr * w.grad
            b[:] = b - lr * b.grad
        before = requests(mode)
        losses.append(loss.asscalar())  # one read per epoch
        assert requests(mode) - before == 1
    assert requests(mode) - start == epochs  # the steps that read nothing cost nothing
    assert losses[-1] < 1e-3 < losses[0]
    np.testing.assert_allclose(w.asnumpy().ravel(), [2.0, -3.4], atol=0.05)


def test_a_wrong_key_raises_unauthorized_in_the_client():
    from gradserve.engine.errors import Unauthorized
    from gradserve.server import Settings

    from .conftest import LiveServer

    with LiveServer(Settings(api_keys="alice:alice-secret-key-0123")) as srv:
        with pytest.raises(Unauthorized, match="API key"):
            gradserve.connect(srv.url, api_key="wrong")
        client = gradserve.connect(srv.url, api_key="alice-secret-key-0123")
        try:
            assert (nd.ones(2) * 3).asnumpy().tolist() == [3, 3]
        finally:
            gradserve.set_current(None)
            client.close()


def test_threads_sharing_a_session_lose_no_ops_and_get_distinct_handles(mode):
    import threading

    results: dict[int, float] = {}

    def work(i: int) -> None:
        x = nd.ones(3) * i
        for _ in range(300):
            x = x + 1
        results[i] = float(x.sum().asscalar())

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: 3.0 * (i + 300) for i in range(4)}


def test_frees_after_a_failing_instruction_go_with_the_next_batch(mode):
    """A batch that fails keeps none of the frees (or program forgets) queued after the
    failing instruction: they are sent again, so the arrays let go are freed."""
    for _ in range(3):
        a = nd.ones((1000,))
        a.wait_to_read()
        del a  # its free goes with the next batch...
        with pytest.raises(MXNetError):
            nd.zeros((1 << 33,)).wait_to_read()  # ...which fails on the engine's quota
    info = mode.info()
    assert info["arrays"] == 0 and info["bytes"] == 0, info


def test_a_gradient_proxy_of_a_failed_batch_is_made_again(mode):
    w = nd.array([1.0, 2.0, 3.0])
    w.attach_grad()
    z = nd.zeros((1 << 33,))  # fails on the engine's quota...
    g = w.grad  # ...so this, queued after it, is dead with it
    with pytest.raises(MXNetError):
        z.wait_to_read()
    with pytest.raises(MXNetError):
        g.asnumpy()
    with autograd.record():
        loss = (w * w).sum()
    loss.backward()
    assert w.grad.asnumpy().tolist() == [2.0, 4.0, 6.0]


def test_a_file_beside_the_package_is_the_users_for_error_lines():
    import os

    from gradserve import runtime

    assert runtime._ours(os.path.join(runtime._HERE, "ndarray.py"))
    assert not runtime._ours(runtime._HERE + "_models.py")  # a sibling module, not a file of ours


def test_an_array_its_failed_batch_never_made_cannot_be_changed_in_place(mode):
    """Updating in place an array whose batch failed raises its error at the call, instead of
    queueing an instruction that would fail the next batch and the arrays in it."""
    y = nd.zeros((1 << 33,))
    with pytest.raises(MXNetError):
        y.wait_to_read()
    good = nd.ones((2,))
    for change in (lambda: y.__iadd__(1), lambda: y.__setitem__(0, 5), lambda: y.attach_grad()):
        with pytest.raises(MXNetError, match="over the limit"):
            change()
    assert good.asnumpy().tolist() == [1.0, 1.0]


def test_array_takes_the_dtypes_a_session_holds_in_every_mode(mode):
    from gradserve.engine.errors import DTypeError

    for bad in ("uint16", "complex64", "datetime64[s]", "no-such-dtype"):
        with pytest.raises(DTypeError):
            nd.array(np.ones(3), dtype=bad)
    x = nd.array(np.arange(3, dtype=">f4"), dtype=">f4")  # big-endian in, the machine's order out
    got = x.asnumpy()
    assert got.dtype == np.dtype("float32") and got.dtype.isnative and got.tolist() == [0, 1, 2]
