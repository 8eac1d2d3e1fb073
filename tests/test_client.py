"""The client as MXNet code uses it: autograd semantics, errors raised where
MXNet raises them, the lazy queue, frees, and a training loop's round trips."""

from __future__ import annotations

import gc
import sys

import numpy as np
import pytest

import gradserve
from gradserve import MXNetError, NDArray, autograd, nd
from gradserve.engine.errors import AutogradError, DTypeError, InvalidInput, QuotaExceeded, ShapeError
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
    with pytest.raises(DTypeError, match="head gradient dtype float64 does not match head dtype float32"):
        y.backward(nd.ones((2, 2), dtype="float64"))  # (MXNet refuses it too)
    with pytest.raises(DTypeError, match="head gradient dtype float64"):
        y.backward(np.ones((2, 2)))  # a numpy array keeps its dtype
    y.backward([[1, 1], [1, 1]])  # numbers take the head's
    assert x.grad.asnumpy().tolist() == [[2, 4], [6, 8]]


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


def test_seeds_are_any_integer_modulo_2_64_on_both_paths(live_server, monkeypatch):
    """MXNet seeds with any integer. A seed past 64 bits broke a server's batch (it cannot be
    encoded), and a negative one was refused on both paths; numpy integers worked for
    nd.random.seed and not for connect(seed=) in-process. Now both paths take any integer,
    modulo 2**64, and refuse anything else before opening a session."""
    draws = []
    for url in (None, live_server.url):
        for s in (-1, 2**64 - 1, 2**64 + 5, np.int64(5), 5):
            gradserve.connect(url, seed=s)
            first = nd.random.uniform(shape=(2,)).asnumpy()
            nd.random.seed(s)
            assert np.array_equal(nd.random.uniform(shape=(2,)).asnumpy(), first)
            draws.append(first.tolist())
        with pytest.raises(InvalidInput, match="connect: the seed must be an integer, got 5.0"):
            gradserve.connect(url, seed=5.0)
        with pytest.raises(InvalidInput, match="random.seed: the seed must be an integer"):
            nd.random.seed("5")
        gradserve.current().close()
        gradserve.set_current(None)
    assert draws[0] == draws[1] and draws[2] == draws[3] == draws[4]  # (-1 is 2**64 - 1; 2**64 + 5 is 5)
    assert draws[:5] == draws[5:]  # (the same in-process and on the server)
    monkeypatch.setenv("GRADSERVE_SEED", "-1")  # (the environment's seed too)
    for url in (None, live_server.url):
        client = gradserve.connect(url)
        assert nd.random.uniform(shape=(2,)).asnumpy().tolist() == draws[0]
        client.close()
        gradserve.set_current(None)


def test_integers_past_64_bits_fail_their_own_instruction(mode):
    """A Python integer no message carries (2**64 and past) made the whole batch fail to encode
    on its way to a server, with a TypeError, losing the valid instructions queued before it.
    Slice bounds and indices that large mean what they do at 2**63 - 1 (a bound clipped, an index
    out of range) and travel; another attribute fails its own instruction, as a server fails one:
    what was queued before it runs (in-process the engine computes, or refuses, the value)."""
    x = nd.arange(6)
    assert x[1 : 2**64].asnumpy().tolist() == [1, 2, 3, 4, 5]
    assert x[:: 2**70].asnumpy().tolist() == [0] and x[-(2**70) : 2].asnumpy().tolist() == [0, 1]
    with pytest.raises(IndexError, match="index 18446744073709551616 is out of bounds"):
        x[2**64]
    y = nd.zeros(6)
    y[2 : 2**64] = 1
    assert y.asnumpy().tolist() == [0, 0, 1, 1, 1, 1]
    w = nd.zeros(2)
    nd.waitall()
    w += 1
    big = nd.one_hot(nd.array([1]), 2**64)  # (in-process: over the session's bytes)
    after = w * 2
    with pytest.raises(MXNetError, match=r"\[op one_hot, queued at"):
        after.asnumpy()
    assert w.asnumpy().tolist() == [1, 1]  # (queued before it: it ran)
    with pytest.raises(MXNetError):
        big.asnumpy()
    assert (w + 1).asnumpy().tolist() == [2, 2]  # (the session goes on)


# -- the queue: errors at sync points, dead handles, frees ------------------------


def test_engine_error_surfaces_at_the_sync_point_naming_op_and_line():
    client = gradserve.Client(InProcess(limits=Limits(max_array_bytes=1000)))
    gradserve.set_current(client)
    try:
        ok = nd.ones((10,))
        line = sys._getframe().f_lineno + 1
        big = nd.zeros((1000,))  # over the session's per-array limit, found by the engine
        after = ok + 1  # queued after the failing op: never runs
        with pytest.raises(QuotaExceeded, match=rf"op zeros, queued at .*test_client.py:{line}\]") as e:
            print(big)
        with pytest.raises(QuotaExceeded) as again:
            after.asnumpy()
        assert str(again.value) == str(e.value)
        assert ok.asnumpy().tolist() == [1] * 10  # ops before the failure took effect
    finally:
        gradserve.set_current(None)


def test_an_error_kept_for_dead_arrays_holds_no_frames_and_grows_no_traceback(mode):
    """The error a dead array raises at each use is a fresh copy of one kept with no
    traceback: the kept one held the frames that first raised it, and with them the batch's
    uploads, for as long as the array lived (4 MB a failed notebook cell), and raising one
    object again and again made its traceback longer at every use."""
    import traceback

    x = nd.arange(3)
    nd.waitall()
    held = mode.info()["bytes"]
    for _ in range(3):  # a notebook cell that uploads 1 MB and fails, run three times
        up = nd.array(np.ones(1 << 18, np.float32))
        bad = x[nd.array([5], dtype="int64")] + up.sum()
        with pytest.raises(IndexError, match="getitem"):
            bad.asnumpy()
        del up, bad
        gc.collect()
    nd.waitall()
    assert mode.info()["bytes"] == held  # (in-process the batch's upload is the session's array)
    assert all(e.__traceback__ is None for e in mode._dead.values())
    bad = x[nd.array([5], dtype="int64")]
    lengths = []
    for _ in range(5):
        try:
            bad.asnumpy()
        except IndexError as e:
            assert "getitem" in str(e)
            lengths.append(len(traceback.extract_tb(e.__traceback__)))
    assert len(set(lengths)) == 1, lengths


@pytest.mark.parametrize("how", ["argument", "environment", "attribute"])
def test_sync_mode_raises_at_the_line(how, monkeypatch):
    if how == "environment":
        monkeypatch.setenv("GRADSERVE_SYNC", "1")
    client = gradserve.Client(InProcess(limits=Limits(max_array_bytes=1000)), sync=how == "argument")
    if how == "attribute":
        client.sync = True  # (a session already open: the README's switch)
    gradserve.set_current(client)
    try:
        with pytest.raises(QuotaExceeded):
            nd.zeros((1000,))
        assert client.transport.requests == 1  # each op at once, not at the next sync point
        nd.ones((2,))
        assert client.transport.requests == 2
    finally:
        gradserve.set_current(None)
    monkeypatch.setenv("GRADSERVE_SYNC", "0")
    assert not gradserve.Client(InProcess()).sync


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
        client = gradserve.connect(srv.url + "\n", api_key="alice-secret-key-0123\n")  # (read from files)
        try:
            assert (nd.ones(2) * 3).asnumpy().tolist() == [3, 3]
        finally:
            gradserve.set_current(None)
            client.close()
        # mistakes, said at once (they were retried for seconds as a lost connection)
        with pytest.raises(gradserve.InvalidInput, match="is not the http:// or https:// URL"):
            gradserve.connect(srv.url.removeprefix("http://"), api_key="alice-secret-key-0123")
        with pytest.raises(gradserve.InvalidInput, match="API key holds characters"):
            gradserve.connect(srv.url, api_key="alice-secret\tkey")
        for url in ("http://127.0.0.1:99999", "http://127.0.0.1:port", "http://[::1"):
            with pytest.raises(gradserve.InvalidInput, match="is not a URL"):
                gradserve.connect(url)
    # a key with spaces, as a server's settings take it
    with LiveServer(Settings(api_keys="bob:correct horse battery staple")) as srv:
        client = gradserve.connect(srv.url, api_key="correct horse battery staple")
        try:
            assert (nd.ones(2) * 2).asnumpy().tolist() == [2, 2]
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


# -- in-place changes queued after a failing instruction ---------------------------


HUGE = (1 << 33,)  # zeros of this shape fail on the engine's quota (over its per-array limit)


def test_a_failures_dead_and_lost_arrays_are_forgotten_once_their_proxies_are_gone(mode):
    """So that the checks a failure turns on for every later op (``_dead``) end with it; an
    array lost while a view of it lives stays lost for the view."""
    x, w = nd.zeros((4,)), nd.ones((2,))
    view = x[1:3]
    w.attach_grad()
    with autograd.record():
        loss = (w * w).sum()
    nd.waitall()
    big = nd.zeros(HUGE)
    x += 1
    loss.backward()
    made = x * 2
    with pytest.raises(QuotaExceeded):
        big.wait_to_read()
    assert mode._dead
    del big, made, w, loss
    gc.collect()
    nd.waitall()
    nd.ones((1,)).wait_to_read()  # (a batch that carries the frees)
    assert set(mode._dead) == {x._h}  # the view's memory
    with pytest.raises(gradserve.ChangeLost):
        view.asnumpy()
    del x, view
    gc.collect()
    nd.ones((1,)).wait_to_read()
    nd.ones((1,)).wait_to_read()
    assert not mode._dead
    # the other order, in two batches: the array first, its view (or gradient proxy) after
    x, w = nd.zeros((4,)), nd.ones((2,))
    view = x[1:3]
    w.attach_grad()
    g = w.grad
    with autograd.record():
        loss = (w * w).sum()
    nd.waitall()
    big = nd.zeros(HUGE)
    x += 1
    loss.backward()
    with pytest.raises(QuotaExceeded):
        big.wait_to_read()
    del big, x, w, loss
    gc.collect()
    nd.ones((1,)).wait_to_read()
    assert mode._dead  # (the view and the gradient proxy still go by them)
    with pytest.raises(gradserve.ChangeLost):
        g.asnumpy()
    del view, g
    gc.collect()
    nd.ones((1,)).wait_to_read()
    nd.ones((1,)).wait_to_read()
    assert not mode._dead and not mode._dead_orphans


def test_in_place_changes_queued_after_a_failure_are_lost_and_say_so(mode):
    """A batch stops at its failing instruction; an array that a later instruction of it was
    to change in place (and every view of its memory) raises ChangeLost when used, naming
    that change and caused by the failure, instead of reading as if the change had run."""
    from gradserve.runtime import ChangeLost

    x = nd.zeros((4,))
    view = x[1:3]  # shares x's memory
    flat = nd.zeros((2, 2))
    rows = flat.reshape((4,))  # so does a reshape
    w = nd.ones((2,))
    w.attach_grad()
    with autograd.record():
        loss = (w * w).sum()
    loss.backward()
    fresh = nd.ones((2,))
    var = nd.ones((2,))
    untouched = nd.ones((3,))
    read_only = nd.ones((2,))
    nd.waitall()
    big = nd.zeros(HUGE)  # fails...
    x += 1  # ...so none of these runs
    flat[:] = 5
    w -= 0.5 * w.grad
    var.attach_grad()
    total = read_only + 1  # made after the failure: dead (not lost: read_only was only read)
    with pytest.raises(QuotaExceeded):
        big.wait_to_read()
    for lost in (x, view, flat, rows, w, var):
        with pytest.raises(ChangeLost, match="never applied") as e:
            lost.asnumpy()
        assert isinstance(e.value.__cause__, QuotaExceeded)
        assert "test_client.py:" in str(e.value)  # the line that queued the lost change
    with pytest.raises(ChangeLost, match=r"\(update queued at .*test_client.py"):
        x.asnumpy()
    with pytest.raises(ChangeLost):
        x + 1  # as an input, at the call
    with pytest.raises(ChangeLost):
        x[0] = 3  # changed in place again
    with pytest.raises(QuotaExceeded):
        total.asnumpy()
    assert untouched.asnumpy().tolist() == [1, 1, 1]
    assert read_only.asnumpy().tolist() == [1, 1]
    assert fresh.asnumpy().tolist() == [1, 1]
    assert w.grad is not None  # (the gradient of w: what the backward before the failure wrote)
    assert w.grad.asnumpy().tolist() == [2, 2]


def test_a_lost_backward_loses_the_batchnorm_moving_statistics_it_was_to_update(mode):
    """BatchNorm's moving statistics are updated by the backward pass of a training forward
    (MXNet's): a backward that never ran leaves them as they were, and reading them says so
    (ChangeLost) instead of giving the statistics as if the step had run. A prediction-mode
    forward updates nothing, and nothing is lost."""
    from gradserve.runtime import ChangeLost

    x = nd.array(np.arange(12, dtype=np.float32).reshape(4, 3))
    x.attach_grad()
    gamma, beta = nd.ones((3,)), nd.zeros((3,))
    mm, mv = nd.zeros((3,)), nd.ones((3,))
    kept = nd.zeros((3,))
    rows = nd.array(np.array([[0, 0, 0], [1, 1, 1]], dtype=np.float32))  # statistics as views of it
    fixed = nd.zeros((3,))
    with autograd.record():
        y = nd.BatchNorm(x, gamma, beta, mm, mv).sum()
        v = nd.BatchNorm(x, gamma, beta, rows[0], rows[1]).sum()
        u = nd.BatchNorm(x, gamma, beta, fixed, nd.ones((3,)), use_global_stats=True).sum()
    with autograd.record(train_mode=False):
        z = nd.BatchNorm(x, gamma, beta, kept, nd.ones((3,))).sum()
    nd.waitall()  # (the views rows[0] and rows[1] are freed with this batch)
    big = nd.zeros(HUGE)  # fails...
    autograd.backward([y, v, u])  # ...so the moving statistics' update never runs
    z.backward(train_mode=False)
    with pytest.raises(QuotaExceeded):
        big.wait_to_read()
    for lost in (mm, mv, rows):
        with pytest.raises(ChangeLost, match="never applied"):
            lost.asnumpy()
    assert kept.asnumpy().tolist() == [0, 0, 0]
    assert fixed.asnumpy().tolist() == [0, 0, 0]  # use_global_stats: never updated, nothing lost


def test_a_failing_in_place_change_leaves_its_array_as_it_was(mode):
    """The failing instruction itself raises its error and changed nothing, as in an eager
    program: its target stays usable."""
    x = nd.ones((3,))
    x.wait_to_read()
    x[:] = nd.zeros(HUGE)[:3]  # the zeros fail: the assignment after them never runs...
    with pytest.raises(QuotaExceeded):
        nd.waitall()
    from gradserve.runtime import ChangeLost

    with pytest.raises(ChangeLost):
        x.asnumpy()  # ...and x says so
    y = nd.ones((2,))
    y.wait_to_read()
    mode.enqueue({"op": "update", "in": [y._h], "at": {"fn": "bad"}})  # fails on the engine itself
    with pytest.raises(MXNetError, match="fn must be one of"):
        nd.waitall()
    assert y.asnumpy().tolist() == [1, 1]


def test_a_backward_pass_after_a_failure_is_lost_with_the_gradients_it_was_to_write(mode):
    from gradserve.runtime import ChangeLost

    w = nd.array([1.0, 2.0])
    w.attach_grad()
    g = w.grad
    g.wait_to_read()
    big = nd.zeros(HUGE)
    with autograd.record():
        loss = (w * w).sum()
    loss.backward()
    with pytest.raises(QuotaExceeded):
        big.wait_to_read()
    with pytest.raises(ChangeLost, match="backward"):
        g.asnumpy()  # still zeros on the server: not the gradient the program computed
    with pytest.raises(ChangeLost):
        w.grad.asnumpy()
    assert w.asnumpy().tolist() == [1, 2]  # the variable's value was not to change
    w.attach_grad()  # a fresh gradient buffer: usable again
    with autograd.record():
        loss = (w * w).sum()
    loss.backward()
    assert w.grad.asnumpy().tolist() == [2, 4]


def test_a_write_mode_backward_pass_makes_a_lost_gradient_known_again(mode):
    """A notebook's training cell that failed once, run again: its backward pass writes the
    whole gradient (grad_req 'write'), so the gradient is usable; an 'add' one stays lost."""
    from gradserve.runtime import ChangeLost

    w, v = nd.array([1.0, 2.0]), nd.array([1.0, 2.0])
    w.attach_grad()
    v.attach_grad(grad_req="add")

    def cell(n: int) -> None:
        big = nd.zeros(n)
        with autograd.record():
            loss = (w * w + v).sum()
        loss.backward()
        big.wait_to_read()

    with pytest.raises(QuotaExceeded):
        cell(HUGE)
    with pytest.raises(ChangeLost):
        w.grad.asnumpy()
    cell(2)
    assert w.grad.asnumpy().tolist() == [2, 4]
    with pytest.raises(ChangeLost):
        v.grad.asnumpy()  # what it added to is not known
    with pytest.raises(QuotaExceeded):
        cell(HUGE)  # lost again with the next failure
    with pytest.raises(ChangeLost):
        w.grad.asnumpy()


def test_a_hybridized_step_after_a_failure_is_lost_with_the_parameters_it_updates(mode):
    from gradserve.runtime import ChangeLost

    w = nd.array([1.0, 2.0])
    w.attach_grad()
    other = nd.array([5.0, 5.0])

    @gradserve.hybridize
    def step(x):
        with autograd.record():
            loss = (x * w).sum()
        loss.backward()
        w[:] = w - 0.5 * w.grad
        return loss

    data = nd.array([1.0, 1.0])
    assert step(data).asscalar() == 3  # traced
    assert step(data).asscalar() == 2  # a call of its program
    big = nd.zeros(HUGE)
    loss = step(data)  # a call after the failure: never runs
    with pytest.raises(QuotaExceeded):
        big.wait_to_read()
    with pytest.raises(QuotaExceeded):
        loss.asnumpy()
    with pytest.raises(ChangeLost, match="call"):
        w.asnumpy()
    with pytest.raises(ChangeLost):
        w.grad.asnumpy()
    assert data.asnumpy().tolist() == [1, 1]  # the argument was only read
    assert other.asnumpy().tolist() == [5, 5]


# -- frees run in program order ----------------------------------------------------


def test_a_free_runs_before_the_ops_queued_after_it():
    """An array let go before a large one is made is freed first, as in an eager program: a
    session with room for one of them makes the second (the free went after it, and failed).
    (Small arrays let go are freed together once they hold ``runtime.FREE_NOW_BYTES``.)"""
    mib = 1 << 20
    client = gradserve.Client(InProcess(limits=Limits(max_session_bytes=mib + mib // 2)))
    gradserve.set_current(client)
    try:
        x = nd.zeros((mib // 4,))
        x.wait_to_read()
        for i in range(4):
            if i % 2:  # let go inside a reference cycle: freed by the collector
                box: list = [x]
                box.append(box)
                del box
                gc.collect()
            del x
            x = nd.zeros((mib // 4,))  # room for it once x is freed
            x.wait_to_read()
        assert client.info()["bytes"] == mib
    finally:
        gradserve.set_current(None)
        client.close()


def test_frees_from_a_collection_inside_the_queue_are_neither_lost_nor_early(mode, monkeypatch):
    """A proxy's __del__ runs whenever the collector does: here at almost every allocation,
    inside enqueue and flush. Every free still arrives, and none before its array is made."""
    from gradserve import runtime

    monkeypatch.setattr(runtime, "FREE_NOW_BYTES", 0)  # every free before the next instruction
    keep = nd.ones((3,))
    nd.waitall()
    base = mode.info()["arrays"]
    old = gc.get_threshold()
    gc.set_threshold(1, 1, 1)
    try:
        for _ in range(100):
            a = nd.ones((3,)) + 1
            box: list = [a]
            box.append(box)  # collected by the next collection, wherever it runs
            del a, box
            keep = keep + 1
    finally:
        gc.set_threshold(*old)
    gc.collect()
    nd.waitall()
    assert mode.info()["arrays"] == base
    assert keep.asnumpy().tolist() == [101] * 3


def test_frees_of_arrays_a_trace_made_wait_for_the_instructions_that_make_them(mode):
    """A traced function's temporaries die while it is traced, before the instructions that
    make them are queued: their frees go after those (a free before would leave them held)."""
    n = 1 << 15  # (128 kB: freed before the next instruction)
    w = nd.ones((n,))

    @gradserve.hybridize
    def f(x):
        t = x * 2
        t = t + w  # (the first t dies here, inside the trace)
        return t.sum()

    x = nd.ones((n,))
    nd.waitall()
    base = mode.info()["arrays"]
    out = f(x)
    assert out.asscalar() == 3 * n
    del out
    gc.collect()
    nd.waitall()
    assert mode.info()["arrays"] == base


def test_threads_dropping_arrays_lose_no_frees(mode, monkeypatch):
    import threading

    from gradserve import runtime

    monkeypatch.setattr(runtime, "FREE_NOW_BYTES", 0)  # every free before the next instruction
    nd.waitall()
    base = mode.info()["arrays"]

    def work(i: int) -> None:
        x = nd.ones(3) * i
        for _ in range(200):
            x = x + 1
        x.wait_to_read()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    gc.collect()
    nd.waitall()
    assert mode.info()["arrays"] == base


# -- w -= a * g: the product a temporary, one update that scales g ------------------


def _queued(client: gradserve.Client) -> list[tuple[str, list, dict]]:
    return [(ins["op"], ins.get("in", []), ins.get("at", {})) for ins in client._queue if ins["op"] != "free"]


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "int32"])
def test_an_update_by_a_temporary_product_is_one_instruction_of_the_same_bits(mode, dtype):
    """``w -= a * g`` and ``w += g * a``, the product a temporary nothing else can read: one
    ``update`` that scales g (no product made), changing w as the product and the update
    written apart do, bit for bit; a named product is made and stays readable."""
    rng = np.random.default_rng(0)
    w0 = (rng.standard_normal((5, 7)) * 50).astype(dtype)
    g0 = (rng.standard_normal((5, 7)) * 5).astype(dtype)
    w, g, same = nd.array(w0, dtype=dtype), nd.array(g0, dtype=dtype), nd.array(w0, dtype=dtype)
    nd.waitall()
    w -= 0.1 * g
    w += g * -2.5
    assert _queued(mode) == [
        ("update", [w._h, g._h], {"fn": "sub", "scale": 0.1}),
        ("update", [w._h, g._h], {"fn": "add", "scale": -2.5}),
    ]
    t = 0.1 * g  # named: the product is made, and the update reads it
    same -= t
    u = g * -2.5
    same += u
    assert [op for op, _, _ in _queued(mode)][2:] == ["mul_scalar", "update", "mul_scalar", "update"]
    assert w.asnumpy().tobytes() == same.asnumpy().tobytes()
    np.testing.assert_array_equal(t.asnumpy(), (0.1 * g).asnumpy())
    if dtype in ("float32", "float64"):  # and numpy's, written the same way
        want = w0.copy()
        want -= g0 * np.asarray(0.1, dtype)
        want += g0 * np.asarray(-2.5, dtype)
        assert w.asnumpy().tobytes() == want.tobytes()


def test_updates_by_temporary_products_of_every_kind_give_the_same_values(mode, monkeypatch):
    """A broadcast product and the target's own product (which the one-pass kernel cannot
    take), and products of arrays let go before the update is queued (whose frees then go at
    once, after the update that reads them)."""
    from gradserve import runtime

    monkeypatch.setattr(runtime, "FREE_NOW_BYTES", 0)  # every free before the next instruction
    w0 = np.arange(12, dtype=np.float32).reshape(3, 4)
    row = np.array([1.0, -2.0, 0.5, 4.0], np.float32)
    w = nd.array(w0)
    w -= 0.5 * nd.array(row)  # the row, let go as the update is queued
    w -= 0.25 * w
    w += 2.0 * nd.relu(nd.array(w0) - 5)
    assert sum(op == "update" for op, _, _ in _queued(mode)) == 3
    assert not any(op == "mul_scalar" for op, _, _ in _queued(mode))
    want = w0.copy()
    want -= row * np.float32(0.5)
    want -= want * np.float32(0.25)
    want += np.maximum(w0 - 5, 0) * np.float32(2.0)
    assert w.asnumpy().tobytes() == want.tobytes()


def test_a_named_product_passed_to_an_in_place_method_is_made(mode):
    """``w.__isub__(p)`` (or through the class, or operator.isub) hands the method the caller's
    own reference to a named ``p``, which then counts as a temporary would: only the operator's
    instruction (``w -= ...``) lets the update scale in the product's place."""
    import operator

    g = nd.array([1.0, 2.0])
    w = nd.zeros((2,))
    nd.waitall()
    p = 0.5 * g
    w.__isub__(p)
    q = 0.25 * g
    NDArray.__isub__(w, q)
    r = 2.0 * g
    w = operator.iadd(w, r)
    assert [op for op, _, _ in _queued(mode)] == ["mul_scalar", "update"] * 3
    assert p.asnumpy().tolist() == [0.5, 1.0] and q.asnumpy().tolist() == [0.25, 0.5]
    assert r.asnumpy().tolist() == [2.0, 4.0] and w.asnumpy().tolist() == [1.25, 2.5]


def test_the_probe_of_temporaries_counts_as_without_a_trace_function():
    """The references a temporary has are measured at import with no trace function: one that
    reads frames' locals (a debugger stepping through the import) holds references of its
    own, and a count taken under it would later take a named product for a temporary."""
    from gradserve import ndarray

    def tracer(frame, event, arg):  # type: ignore[no-untyped-def]
        frame.f_locals  # noqa: B018  (as debuggers and tracing tools read them)
        return tracer

    want = ndarray._temporaries()
    assert want[0] > 0 and set(want[1]) == {"sub", "add"}
    before = sys.gettrace()
    sys.settrace(tracer)
    try:
        got = ndarray._temporaries()
    finally:
        sys.settrace(before)
    assert got == want


def test_a_transport_that_names_no_features_gets_no_fused_updates():
    """A server that does not list ``update.scale`` (an older one says nothing of features)."""

    class Older:
        sequenced = True

        def close(self) -> None:
            pass

    for transport, fused in ((Older(), False), (InProcess(), True)):
        client = gradserve.Client(transport)  # type: ignore[arg-type]
        try:
            assert client.scaled_updates is fused
        finally:
            client.close()


def test_a_server_that_does_not_scale_updates_is_sent_the_product(mode):
    """A client fuses ``w -= a * g`` only for an engine that says it takes ``update``'s scale
    (a server names it among its features when it opens a session; an older one does not)."""
    assert mode.scaled_updates
    mode.scaled_updates = False  # (as against an older server)
    g = nd.array([1.0, 2.0])
    w = nd.zeros((2,))
    nd.waitall()
    w -= 0.5 * g
    assert [op for op, _, _ in _queued(mode)] == ["mul_scalar", "update"]
    assert w.asnumpy().tolist() == [-0.5, -1.0]


def test_an_update_by_a_product_recorded_or_traced_is_left_as_written(mode):
    """Inside ``record`` the product is recorded (an op of the graph): not fused; in a trace,
    the program's plan does its own fusing."""
    w, g = nd.ones((4,)), nd.ones((4,))
    nd.waitall()
    with autograd.record():
        w -= 0.5 * g
    assert [op for op, _, _ in _queued(mode)] == ["mul_scalar", "update"]
    assert w.asnumpy().tolist() == [0.5] * 4

    @gradserve.hybridize
    def step(v):
        w2 = v * 1  # a fresh array of the trace
        w2 -= 0.5 * v
        return w2

    assert step(g).asnumpy().tolist() == [0.5] * 4
    assert step(g).asnumpy().tolist() == [0.5] * 4
    if isinstance(mode.transport, InProcess):  # the program as traced: the product, then the update
        (program,) = mode.transport.session.programs.values()
        assert [(st["op"], "scale" in (st.get("at") or {})) for st in program.steps][1:] == [
            ("mul_scalar", False),
            ("update", False),
        ]


# -- close() from another thread -----------------------------------------------------


class SilentServer:
    """Answers the session routes as a gradserve server does, and never a batch (over TLS
    with ``tls``, a server's context)."""

    def __init__(self, tls=None) -> None:
        import socket
        import threading

        self.tls = tls
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.sock.getsockname()[1]}"
        self.batch = threading.Event()  # a batch came (and waits for its reply)
        self.conns: list = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import threading

        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn) -> None:
        data = b""
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            while True:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, data = data.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path = lines[0].split(" ")[:2]
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                while len(data) < length:
                    data += conn.recv(65536)
                data = data[length:]
                if path.endswith("/batch"):
                    self.batch.set()
                    while conn.recv(65536):  # never answered: until the client goes
                        pass
                    return
                status, body = ("201 Created", b'{"id": "s1", "owner": "u", "arrays": 0, "bytes": 0}')
                if method == "DELETE":
                    status, body = "204 No Content", b""
                conn.sendall(
                    f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
                    f"content-length: {len(body)}\r\n\r\n".encode()
                    + body
                )
        except OSError:
            return
        finally:
            conn.close()

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


def assert_close_stops_a_waiting_batch(srv: SilentServer, client: gradserve.Client) -> None:
    """``client.close()`` from another thread stops a batch that waits on ``srv`` for a reply
    that never comes: at once, with SessionClosed (then ``srv`` is closed)."""
    import threading
    import time

    from gradserve.runtime import SessionClosed

    got: dict = {}

    def wait() -> None:
        try:
            nd.ones((2,)).asnumpy()
        except BaseException as e:
            got["error"], got["at"] = e, time.monotonic()

    gradserve.set_current(client)
    try:
        t = threading.Thread(target=wait, daemon=True)
        t.start()
        assert srv.batch.wait(5)
        start = time.monotonic()
        client.close()
        t.join(5)
        assert not t.is_alive(), "the batch still waits for its reply"
        assert isinstance(got["error"], SessionClosed), got
        assert got["at"] - start < 2  # at once, not at the socket's timeout (10 s)
    finally:
        gradserve.set_current(None)
        srv.close()


def test_close_from_another_thread_stops_a_batch_waiting_for_its_reply():
    srv = SilentServer()
    assert_close_stops_a_waiting_batch(srv, gradserve.Client(gradserve.Http(srv.url, timeout=10, retries=0)))


# -- the server's limits: request bytes (frames padded), instructions per batch -------


def test_the_queue_counts_an_uploads_frame_padding(mode, monkeypatch):
    """Each tensor travels in a frame aligned to 64 bytes: the queue's byte bound holds for
    the bytes the tensors take in the request, padding included."""
    from gradserve.engine import wire

    monkeypatch.setattr(mode, "max_batch_bytes", 1000)
    sent: list[int] = []
    send = mode.transport.send

    def spy(batch):
        parts, total = wire.pack_frames(batch)
        sent.append(total - len(parts[0]))  # the tensors' frames (after the header)
        return send(batch)

    monkeypatch.setattr(mode.transport, "send", spy)
    xs = [nd.array(np.ones(25, "float32")) for _ in range(20)]  # 100 bytes each, 128 framed
    assert sum(x.sum().asscalar() for x in xs) == 500
    assert max(sent) <= 1000 and sent[0] == 6 * 128 + 100  # 7 of them (the last one unpadded)


def test_requests_stay_under_a_small_servers_body_limit():
    """Against a server that reads request bodies of 64 KiB at most, a queue of many small
    uploads goes in requests under it: the tensors with their padding, and room for the
    instructions' own bytes."""
    from gradserve.server import Settings
    from gradserve.transport import Conn

    from .conftest import LiveServer

    limit = 64 << 10
    with LiveServer(Settings(max_body_bytes=limit)) as srv:
        client = gradserve.connect(srv.url)
        sizes: list[int] = []
        real = Conn.request

        def spy(self, head, parts):
            sizes.append(sum(len(p) if isinstance(p, bytes) else p.nbytes for p in parts))
            return real(self, head, parts)

        try:
            Conn.request = spy  # type: ignore[method-assign]
            xs = [nd.array([float(i)]) for i in range(1500)]
            total = nd.add_n(*xs[:100]) + sum(float(x.asscalar()) for x in xs[100:101])
            assert total.asscalar() == sum(range(100)) + 100
        finally:
            Conn.request = real  # type: ignore[method-assign]
            gradserve.set_current(None)
            client.close()
        assert max(sizes) <= limit


def _batch_lengths(client: gradserve.Client, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of instructions of each batch ``client`` sends from now on."""
    lengths: list[int] = []
    send = client.transport.send

    def spy(batch):
        lengths.append(len(batch["ops"]))
        return send(batch)

    monkeypatch.setattr(client.transport, "send", spy)
    return lengths


def _count_up(n: int) -> NDArray:
    """ones(2) plus 1, n times: n + 1 queued ops."""
    y = nd.ones((2,))
    for _ in range(n):
        y = y + 1
    return y


def test_a_queue_longer_than_the_sessions_batch_limit_goes_in_parts_in_process(monkeypatch):
    client = gradserve.Client(InProcess(limits=Limits(max_batch_ops=8)))
    gradserve.set_current(client)
    lengths = _batch_lengths(client, monkeypatch)
    try:
        assert _count_up(30).asnumpy().tolist() == [31, 31]
        assert max(lengths) <= 8
    finally:
        gradserve.set_current(None)
        client.close()


def test_a_queue_longer_than_the_servers_batch_limit_goes_in_batches_under_it(monkeypatch):
    """A server tells its limit of instructions per batch when the session opens: the queue
    goes before it passes it."""
    from gradserve.server import Settings

    from .conftest import LiveServer

    with LiveServer(Settings(max_batch_ops=8)) as srv:
        client = gradserve.connect(srv.url)
        lengths = _batch_lengths(client, monkeypatch)
        try:
            assert client.max_batch_ops == 8
            assert _count_up(30).asnumpy().tolist() == [31, 31]
            assert max(lengths) <= 8
        finally:
            gradserve.set_current(None)
            client.close()


def test_a_server_that_does_not_tell_its_batch_limit_teaches_it_by_refusing(monkeypatch):
    """A server whose limit of instructions per batch is lower than the client's queue, and
    that did not say so when the session opened (an older one): its refusal (nothing run, no
    seq taken) tells the limit, and the batch goes again in parts of at most that many, in
    order; an error in a later part stops there, as in one batch."""
    from gradserve.server import Settings

    from .conftest import LiveServer

    with LiveServer(Settings(max_batch_ops=8, max_array_bytes=1000)) as srv:
        client = gradserve.connect(srv.url)
        lengths = _batch_lengths(client, monkeypatch)
        try:
            assert client.max_batch_ops == 8  # (this server tells it when the session opens)
            client._set_limits(client.max_body_bytes, None)  # as one that does not tell it
            assert _count_up(20).asnumpy().tolist() == [21, 21]
            assert client.max_batch_ops == 8 and lengths[0] > 8 and max(lengths[1:]) <= 8
            first = _count_up(9)  # past the first part
            bad = nd.zeros((1000,))  # over the per-array limit: fails in the second part
            after = first + 1
            with pytest.raises(QuotaExceeded, match=r"op zeros, queued at .*test_client.py"):
                bad.wait_to_read()
            with pytest.raises(QuotaExceeded):
                after.asnumpy()
            assert first.asnumpy().tolist() == [10, 10]  # what came before it ran
        finally:
            gradserve.set_current(None)
            client.close()


# -- an upload in pieces whose row is larger than a piece ----------------------------


def test_an_upload_whose_row_is_larger_than_a_piece_is_held_once():
    """A row larger than a request's room goes in pieces along a later axis, into the array
    made for it: a session with room for the array (and a piece), not for two, takes it."""
    from gradserve.server import Settings

    from .conftest import LiveServer

    sources = [
        np.random.default_rng(0).standard_normal((3, 50_000)).astype(np.float32),  # rows of 200 kB
        np.arange(2 * 2 * 40_000, dtype=np.float32).reshape(2, 2, 40_000),  # sub-rows of 160 kB
        np.arange(120_000, dtype=np.float64)[::-1],  # one axis, not contiguous
    ]
    largest = max(a.nbytes for a in sources)
    with LiveServer(Settings(max_body_bytes=64 << 10, max_session_bytes=largest + (64 << 10))) as srv:
        client = gradserve.connect(srv.url)
        try:
            for a in sources:
                before = client.transport.requests
                x = nd.array(a, dtype=a.dtype)
                assert client.transport.requests - before > a.nbytes // (64 << 10)  # in pieces
                assert x.shape == a.shape
                np.testing.assert_array_equal(x.asnumpy(), a)
                assert client.info()["bytes"] == a.nbytes  # the array, and no piece left
                del x
                nd.waitall()
        finally:
            gradserve.set_current(None)
            client.close()


def test_the_clients_view_ops_are_every_op_whose_result_shares_its_inputs_memory():
    """The client marks a lost in-place change on every array of the same memory: it must
    know each op whose result the engine gives as a view of an input (for some shapes). As
    in MXNet, those are reshape and basic indexing only; every result can be written."""
    from gradserve.engine.optable import OPS
    from gradserve.engine.session import Session

    attrs = {
        "reshape": [{"shape": [-1]}],
        "expand_dims": [{"axis": 0}],
        "broadcast_to": [{"shape": [2, 3, 4]}],
        "broadcast_axis": [{"axis": 0, "size": 1}],
        "slice": [{"begin": [0], "end": [1]}],
        "slice_axis": [{"axis": 0, "begin": 0, "end": None}],
        "getitem": [{"key": [0]}, {"key": [[0, None, None]]}],
        "tile": [{"reps": [1]}],
        "repeat": [{"repeats": 1}],
        "flip": [{"axis": 0}],
        "moveaxis": [{"source": 0, "destination": -1}],
        "astype": [{"dtype": "float32"}],
        "split": [{"num_outputs": 1}],
        "clip": [{"a_min": 0, "a_max": 1}],
    }
    shared = set()
    for op in OPS.ops():
        if op.nin == 0:
            continue
        n = max(op.nin, 1)
        for shape in [(2, 3, 4), (4,), (1, 3, 1), (3, 1)]:
            for at in attrs.get(op.name, [{}]):
                s = Session("probe")
                xs = [np.random.default_rng(i).random(shape).astype(np.float32) + 0.5 for i in range(n)]
                ops = [{"op": "array", "out": [i + 1], "at": {"value": x}} for i, x in enumerate(xs)]
                ops.append({"op": op.name, "in": list(range(1, n + 1)), "out": [100], "at": at})
                with np.errstate(all="ignore"):
                    reply = s.run_batch({"ops": ops})
                if "error" in reply:
                    continue
                assert s.arrays[100].flags.writeable, (op.name, shape, at)
                if any(np.shares_memory(s.arrays[100], s.arrays[i + 1]) for i in range(n)):
                    shared.add(op.name)
    assert shared == {op.name for op in OPS.ops() if op.view} == {"reshape", "getitem"}


def test_only_reshape_and_basic_indexing_share_memory_as_in_mxnet(mode):
    """MXNet copies for transpose, flip, expand_dims, squeeze, flatten, swapaxes and
    broadcast_axis, even where a view would do (an axis of length 1): writing into the
    result leaves the input as it was. x.reshape and x[0:1] share it."""
    cases = [
        (lambda x: x.T, (1, 3)),
        (lambda x: nd.transpose(x), (1, 3)),
        (lambda x: nd.flip(x, axis=0), (1, 3)),
        (lambda x: nd.swapaxes(x, 0, 1), (1, 3)),
        (lambda x: x.expand_dims(0), (1, 3)),
        (lambda x: nd.squeeze(x), (1, 3)),
        (lambda x: nd.flatten(x), (3, 1)),
        (lambda x: nd.broadcast_axis(x, axis=0, size=1), (1, 3)),
    ]
    for f, shape in cases:
        x = nd.ones(shape)
        y = f(x)
        y[:] = 5
        y += 1
        assert x.asnumpy().tolist() == np.ones(shape).tolist() and (y.asnumpy() == 6).all()
    x = nd.ones((2, 3))
    y = x.reshape((3, 2))
    y[:] = 5
    z = x[0:1]
    z += 1
    assert x.asnumpy().tolist() == [[6, 6, 6], [5, 5, 5]]


def _fail_batch() -> None:
    """Queue an op the engine refuses (over the per-array limit), so that what is queued after
    it in the same batch never runs; the caller's next sync raises."""
    nd.zeros((1 << 29,))


def test_lost_changes_follow_hybridized_calls_views_and_arguments():
    from gradserve import hybridize
    from gradserve.engine.errors import QuotaExceeded
    from gradserve.runtime import ChangeLost

    client = gradserve.connect()
    try:
        w = nd.zeros((2, 2))

        @hybridize
        def flat(x):
            return x.reshape((-1,)), w.reshape((-1,))

        flat(nd.zeros((2, 2)))  # traced
        a = nd.zeros((2, 2))
        va, vw = flat(a)  # a call: va is a's memory, vw is w's
        nd.waitall()
        _fail_batch()
        a += 1
        w += 1
        with pytest.raises(QuotaExceeded):
            nd.waitall()
        for v in (a, va, w, vw):
            with pytest.raises(ChangeLost):
                v.asnumpy()

        @hybridize
        def f(x, y):
            x += 1  # changes its first argument only
            return y * 2

        p = nd.ones((2,))
        f(p, p)  # traced with the same array twice
        a2, b2 = nd.ones((2,)), nd.ones((2,))
        nd.waitall()
        _fail_batch()
        f(a2, b2)
        with pytest.raises(QuotaExceeded):
            nd.waitall()
        with pytest.raises(ChangeLost):
            a2.asnumpy()
        assert b2.asnumpy().tolist() == [1.0, 1.0]  # only read: as it was
    finally:
        gradserve.set_current(None)
        client.close()


def test_a_trace_that_sends_the_queue_still_knows_what_its_backward_changes():
    """The server's batch limit makes the queue go out in the middle of a trace: what the
    program's backward writes must still be known for a later call that fails."""
    from gradserve import hybridize
    from gradserve.engine.errors import QuotaExceeded
    from gradserve.engine.session import Limits
    from gradserve.runtime import ChangeLost
    from gradserve.transport import InProcess

    client = gradserve.Client(InProcess(limits=Limits(max_batch_ops=12)))
    gradserve.set_current(client)
    try:
        w = nd.array([1.0, 2.0])
        w.attach_grad()

        @hybridize
        def step(x):
            with autograd.record():
                loss = (x * w).sum()
            loss.backward()
            return loss * 2

        data = nd.array([1.0, 1.0])
        step(data)
        nd.waitall()
        _fail_batch()
        step(data)
        with pytest.raises(QuotaExceeded):
            nd.waitall()
        with pytest.raises(ChangeLost):
            w.grad.asnumpy()
    finally:
        gradserve.set_current(None)
        client.close()


def test_a_session_the_server_no_longer_has_is_lost_for_good(live_server):
    """An expired session, or one a crash took before its first snapshot: the client said
    SessionNotFound, a plain MXNetError, where code that reconnects catches SessionLost."""
    import httpx

    from gradserve.runtime import SessionLost

    client = gradserve.connect(live_server.url)
    try:
        x = nd.ones((2,))
        x.wait_to_read()
        assert httpx.delete(f"{live_server.url}/v1/sessions/{client.transport.session_id}").status_code == 204
        with pytest.raises(SessionLost, match="no longer has this session"):
            (x + 1).asnumpy()
        with pytest.raises(SessionLost, match="no longer has this session"):
            nd.zeros((2,)).wait_to_read()
    finally:
        gradserve.set_current(None)
        client.close()


def test_inputs_a_failed_batch_left_stale_are_refused_where_they_are_used():
    from gradserve.engine.errors import QuotaExceeded
    from gradserve.runtime import ChangeLost

    client = gradserve.connect()
    try:
        w = nd.array([1.0, 2.0])
        w.attach_grad()
        with autograd.record():
            loss = (w * w).sum()
        _fail_batch()
        loss.backward()  # never runs: w.grad is lost
        with pytest.raises(QuotaExceeded):
            nd.waitall()
        with pytest.raises(ChangeLost):
            nd.sgd_update(w, w.grad, lr=0.5, out=w)  # (took the stale gradient silently)
        x, idx = nd.zeros((4,)), nd.array([0, 1], dtype="int32")
        nd.waitall()
        _fail_batch()
        idx += 2
        with pytest.raises(QuotaExceeded):
            nd.waitall()
        with pytest.raises(ChangeLost):
            x[idx] = 7
        nd.random.seed(1)
        nd.waitall()
        _fail_batch()
        nd.random.seed(7)
        with pytest.raises(QuotaExceeded):
            nd.waitall()
        with pytest.raises(ChangeLost, match="seed"):
            nd.random.uniform(shape=(2,))
        nd.random.seed(7)  # seeded again: draws are the program's again
        assert nd.random.uniform(shape=(2,)).shape == (2,)
        # an optimizer step changes its states in place too: a lost one leaves them stale
        w, g, mean, var = nd.ones(2), nd.ones(2), nd.zeros(2), nd.zeros(2)
        nd.waitall()
        _fail_batch()
        nd.adam_update(w, g, mean, var, lr=0.1, out=w)
        with pytest.raises(QuotaExceeded):
            nd.waitall()
        for stale in (w, mean, var):
            with pytest.raises(ChangeLost, match="adam_update"):
                stale.asnumpy()
        assert g.asnumpy().tolist() == [1.0, 1.0]  # (read, not changed)
    finally:
        gradserve.set_current(None)
        client.close()


def test_frees_in_a_batch_lost_with_its_connection_are_sent_again():
    import gc

    from gradserve.transport import ConnectionLost

    client = gradserve.connect()
    try:
        keep = [nd.ones((100, 100)) for _ in range(5)]
        nd.waitall()
        real = client.transport.send

        def flaky(batch):
            client.transport.send = real
            raise ConnectionLost("simulated: the request never reached the server")

        client.transport.send = flaky
        del keep
        gc.collect()
        y = nd.ones((2,))
        with pytest.raises(ConnectionLost):
            y.wait_to_read()
        z = nd.ones((3,))
        z.wait_to_read()
        assert len(client.transport.session.arrays) == 1  # z alone: the five were freed after all
    finally:
        gradserve.set_current(None)
        client.close()


def test_one_element_of_a_vector_is_a_view_and_an_array_returned_twice_is_one(mode):
    from gradserve import hybridize

    x = nd.zeros(3)
    s = x[1]
    s += 5
    t = x[-1]
    t += 2
    assert x.asnumpy().tolist() == [0, 5, 2]  # as MXNet: x[i] shares x's memory

    @hybridize
    def f(a):
        z = a * 2
        return z, a + 1, z

    for _ in range(3):
        r = f(nd.ones((2,)))
        assert r[0] is r[2]


def test_an_in_process_session_keeps_no_reply_and_no_copies_of_its_reads():
    """Nothing retries in-process: batches go unsequenced, and the copies a read made (the
    caller's now) are not held or counted by the session after it."""
    client = gradserve.Client(gradserve.InProcess())
    gradserve.set_current(client)
    try:
        x = nd.ones((1000,))
        assert x.asnumpy().sum() == 1000
        s = client.transport.session
        assert s.last_reply is None and s.reply_bytes == 0 and s.nbytes == x.asnumpy().nbytes
    finally:
        gradserve.set_current(None)


def test_writing_the_whole_of_an_array_whose_change_was_lost_makes_it_usable_again(mode):
    """An array whose in-place change was lost (an op before it failed) raises ChangeLost
    until it is made again; ``w[:] = v`` makes it again (it was refused, though the message
    said "make it again"). A write of part of it, or of a view of it, leaves it unknown."""
    x = nd.arange(3)
    w = nd.zeros(3)
    nd.waitall()
    bad = x[nd.array([5], dtype="int64")]
    w += 1  # queued after the failure: lost
    with pytest.raises(IndexError):
        bad.asnumpy()
    with pytest.raises(gradserve.ChangeLost):
        w.asnumpy()
    with pytest.raises(gradserve.ChangeLost):
        w[1:] = 0
    with pytest.raises(gradserve.ChangeLost):
        w[1] = 0
    w[:] = nd.array([7.0, 8.0, 9.0])
    assert w.asnumpy().tolist() == [7, 8, 9]
    w += 1
    assert w.asnumpy().tolist() == [8, 9, 10]
    base = nd.zeros((2, 3))
    view = base[1]
    nd.waitall()
    bad = x[nd.array([5], dtype="int64")]
    base += 1
    with pytest.raises(IndexError):
        bad.asnumpy()
    with pytest.raises(gradserve.ChangeLost):
        view[:] = 5  # the rest of its base is still unknown
    base[:] = 2
    assert view.asnumpy().tolist() == [2, 2, 2] and base.asnumpy().tolist() == [[2, 2, 2]] * 2


def test_a_whole_write_of_an_array_whose_attach_grad_was_lost_leaves_it_a_plain_array(mode):
    """An attach_grad lost with a failed batch left the session holding a plain array and
    the proxy a variable: after ``w[:] = v`` a recorded pass failed as if nothing had been
    recorded. The write makes the proxy a plain array too; attach_grad makes it a variable."""
    x = nd.arange(3)
    w = nd.zeros(3)
    nd.waitall()
    bad = x[nd.array([5], dtype="int64")]
    w.attach_grad()  # lost
    with pytest.raises(IndexError):
        bad.asnumpy()
    w[:] = nd.array([1.0, 2.0, 3.0])
    assert w.grad is None
    w.attach_grad()
    with autograd.record():
        y = (w * x).sum()
    y.backward()
    assert w.grad.asnumpy().tolist() == [0, 1, 2]
    assert w.asnumpy().tolist() == [1, 2, 3]


def test_grad_of_an_array_whose_attach_grad_or_mark_variables_was_lost_raises_at_once(mode):
    """``w.grad`` after a lost attach_grad queued a ``grad`` of a plain array: it raised later,
    with the next read, and took the valid ``w[:] = v`` after it down with it. After a lost
    mark_variables it gave the gradient buffer of an array that is no variable. Both raise
    ChangeLost at ``.grad`` now, queuing nothing, and the whole write makes the array plain."""
    for lose in (lambda w, g: w.attach_grad(), lambda w, g: autograd.mark_variables([w], [g])):
        w, g = nd.ones(2), nd.zeros(2)
        nd.waitall()
        bad = nd.take(nd.ones(2), nd.array([9]), mode="raise")
        lose(w, g)
        with pytest.raises(IndexError):
            bad.asnumpy()
        with pytest.raises(gradserve.ChangeLost, match="was never applied"):
            w.grad  # noqa: B018
        w[:] = 2
        assert w.asnumpy().tolist() == [2, 2] and w.grad is None


def test_writing_the_whole_gradient_after_a_lost_backward_makes_it_usable_again(mode):
    """A backward pass lost with a failed batch leaves its gradient buffers unknown
    (ChangeLost); ``w.grad[:] = 0`` writes all of one and makes it known again (it was refused:
    only attach_grad did). A view of the gradient leaves the rest unknown."""
    x = nd.arange(3)
    w = nd.ones(3)
    w.attach_grad()
    nd.waitall()
    bad = x[nd.array([5], dtype="int64")]
    with autograd.record():
        y = (w * x).sum()
    y.backward()  # lost
    with pytest.raises(IndexError):
        bad.asnumpy()
    with pytest.raises(gradserve.ChangeLost):
        w.grad.asnumpy()
    with pytest.raises(gradserve.ChangeLost):
        w.grad[1:] = 0
    w.grad[:] = 0
    assert w.grad.asnumpy().tolist() == [0, 0, 0]
    with autograd.record():
        y = (w * x).sum()
    y.backward()
    assert w.grad.asnumpy().tolist() == [0, 1, 2]
