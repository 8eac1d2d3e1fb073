"""NDArray conversions, views, saving and the generated namespace, in both modes."""

from __future__ import annotations

import numpy as np
import pytest

import gradserve
from gradserve import MXNetError, NDArray, autograd, nd
from gradserve.engine.errors import DTypeError, InvalidInput, ShapeError


def test_views_share_memory_as_in_mxnet(mode):
    x = nd.arange(12).reshape((3, 4))
    row, rows, col = x[1], x[1:3], x[:, 1]
    row[:] = 7  # x[1] is a view
    assert x[1].asnumpy().tolist() == [7] * 4
    rows[:] = 9  # x[1:3] is a view
    assert x.asnumpy()[1:].tolist() == [[9] * 4] * 2
    col[:] = -1  # x[:, 1] is a copy
    assert x.asnumpy()[:, 1].tolist() == [1, 9, 9]
    # a key that selects one contiguous block is a view, whatever its axes (it was a copy
    # past the first axis): x.sum() after zeroing each, as MXNet 1.9.1 printed it
    mxnet = [
        ((1, 2), 190), ((1, slice(1, 3)), 120), ((slice(1, 2), 1), 206), ((1, 2, slice(1, 3)), 233),
        ((slice(None),) * 3, 0), ((Ellipsis,), 0), ((None,), 0), ((slice(None, None, 2),), 210),
        ((slice(None), 1), 276), ((1, 2, 3), 253), ((-1, -1, -1), 253), ((1, slice(None), slice(None, None, 2)), 276),
        ((0, slice(1, 3), slice(1, 3)), 276), ((1, Ellipsis, 2), 276), ((slice(0, 2),), 0),
    ]  # fmt: skip
    for key, total in mxnet:
        x = nd.arange(24).reshape((2, 3, 4))
        y = x[key]
        y[:] = 0
        assert x.sum().asscalar() == total, key


def test_advanced_indexing_and_its_gradient(mode):
    x = nd.arange(12).reshape((3, 4))
    x.attach_grad()
    with autograd.record():
        y = x[[0, 2, 2]].sum() + x[nd.array([1]), nd.array([3])].sum() * 10
    y.backward()
    assert x.grad.asnumpy().tolist() == [[1] * 4, [0, 0, 0, 10], [2] * 4]
    z = nd.zeros((3, 2))
    z[[0, 2]] = nd.ones((2, 2)) * 5
    assert z.asnumpy().tolist() == [[5, 5], [0, 0], [5, 5]]
    assert x[[0.5]].asnumpy().tolist() == x[[0]].asnumpy().tolist()  # (MXNet's: toward zero)
    assert x[range(1, 3)].asnumpy().tolist() == x[[1, 2]].asnumpy().tolist()  # (a range: MXNet's too)
    assert nd.concat(x, x, dim=0, num_args=2).shape == (6, 4) and nd.stack(x, x, num_args=2).shape == (2, 3, 4)
    with pytest.raises(MXNetError, match="num_args is 3, but 2 arrays were given"):
        nd.concat(x, x, num_args=3).wait_to_read()


def test_save_and_load_lists_and_dicts(mode, tmp_path):
    a, b = nd.arange(3), nd.array([[1, 2]], dtype="int32")
    nd.save(str(tmp_path / "l"), [a, b])
    la, lb = nd.load(str(tmp_path / "l"))
    assert la.asnumpy().tolist() == [0, 1, 2] and lb.dtype is np.int32 and lb.shape == (1, 2)
    nd.save(str(tmp_path / "d"), {"w": a, "b": b})
    d = nd.load(str(tmp_path / "d"))
    assert sorted(d) == ["b", "w"] and d["w"].asnumpy().tolist() == [0, 1, 2]
    (tmp_path / "bad").write_bytes(b"not an archive")
    with pytest.raises(MXNetError, match="not a file written by"):
        nd.load(str(tmp_path / "bad"))


def test_printing_large_integer_and_0d_arrays(mode):
    assert repr(nd.arange(2000).reshape((1000, 2))).startswith("\n[[0.000e+00 1.000e+00]\n [2.000e+00 3.000e+00]")
    assert "...\n" in repr(nd.arange(2000).reshape((1000, 2)))
    assert repr(nd.ones((2,), dtype="int64")) == "\n[1 1]\n<NDArray 2 @cpu(0)>"
    assert nd.ones((2, 3)).tolist() == [[1.0] * 3] * 2
    assert float(nd.array([2.5])) == 2.5 and int(nd.array([3.7])) == 3


def test_a_0d_arrays_empty_key_gives_itself_as_mxnet(mode):
    """``z[()]`` and ``z[:]`` of a 0-d array are 0-d in MXNet 1.9.1 (a view of it); ``z[()]``
    was (1,) here and ``z[:]`` refused. Other keys keep MXNet's (1,) for one element."""
    z = nd.array(np.float32(3))
    assert z[()].shape == () and z[:].shape == () and z[None].shape == (1,)
    v = z[()]
    v[()] = 7
    assert z.asscalar() == 7  # (a view)
    z.attach_grad()
    with autograd.record():
        y = z[()] * 2 + z[:] * 3
    y.backward()
    assert z.grad.shape == () and z.grad.asscalar() == 5
    with autograd.record():
        (g,) = autograd.grad(z[()] * z[()], [z], create_graph=True)
    g.backward()
    assert g.asscalar() == 14 and z.grad.asscalar() == 2
    x = nd.array([[1.0, 2.0]])
    assert x[()].shape == (1, 2) and x[0, 1].shape == (1,)
    o = nd.array(np.float32(5))  # writes: x[:] = v and out= (which writes out[:]) of a 0-d array
    o[:] = 1
    assert o.asscalar() == 1
    assert nd.relu(nd.array(np.float32(-2)), out=o) is o and o.asscalar() == 0 and o.shape == ()
    with pytest.raises(InvalidInput, match="slice bounds must be integers or None, got NDArray$"):
        nd.arange(5)[nd.array([1]) : 3]  # (an NDArray bound: refused in words, not by its ==)


def test_generated_namespace_and_methods(mode):
    x = nd.array([[3, 1, 2], [0, 5, 4]])
    assert x.argmax(axis=1).asnumpy().tolist() == [0, 1]
    assert nd.argmax(x, axis=1).dtype is np.float32
    assert x.sort().asnumpy().tolist() == [[1, 2, 3], [0, 4, 5]]
    vals, idx = nd.topk(x, k=2, ret_typ="both")
    assert vals.asnumpy().tolist() == [[3, 2], [5, 4]] and idx.asnumpy().tolist() == [[0, 2], [1, 2]]
    assert [p.shape for p in nd.split(x, 3, axis=1)] == [(2, 1)] * 3
    assert nd.concat(x, x, dim=0).shape == (4, 3) and nd.stack(x, x, axis=1).shape == (2, 2, 3)
    assert nd.linalg.gemm2(nd.ones((2, 3)), nd.ones((3, 4)), alpha=2).asnumpy()[0, 0] == 6
    assert nd.eye(3).sum().asscalar() == 3 and nd.linspace(0, 1, 5).shape == (5,)
    assert nd.random.randint(0, 5, shape=(10,)).dtype is np.int32
    assert sorted(nd.random.shuffle(nd.arange(5)).asnumpy().tolist()) == [0, 1, 2, 3, 4]
    assert x.transpose(1, 0).shape == (3, 2) and x.T.shape == (3, 2)
    assert nd.reshape(nd.ones((2, 3, 4)), shape=(-4, 1, 2, -2)).shape == (1, 2, 3, 4)
    z = nd.zeros((2, 2))
    assert nd.dot(x, x.T, out=z) is z and z.asnumpy().tolist() == [[14, 13], [13, 41]]  # (MXNet's out=)
    with pytest.raises(ShapeError):
        nd.dot(x.T, x, out=z)  # a (3, 3) result


def test_the_namespace_lists_its_own_names_not_its_imports():
    """dir(nd), what a notebook completes, is the namespace's functions: it listed its
    imports too (nd.zipfile, nd.inspect, nd.Any...)."""
    names = dir(nd)
    assert {"dot", "array", "NDArray", "random", "linalg", "contrib", "waitall", "softmax", "adam_update"} <= set(names)
    assert not {"zipfile", "inspect", "numbers", "Any", "Sequence", "tape", "current", "annotations"} & set(names)
    assert all(callable(getattr(nd, n)) or n in ("random", "linalg", "contrib") for n in names)


def test_creation_functions_take_ctx_positionally_before_dtype_as_mxnet(mode):
    """MXNet's generated creation functions take their attributes, then ctx, then dtype,
    positionally (checked with MXNet 1.9.1): ctx was read as dtype ("unknown dtype cpu(1)")
    and a dtype after it was dropped (eye(2, 0, 0, None, 'int32') came back float32)."""
    import inspect

    import gradserve

    cpu1 = gradserve.cpu(1)
    y = nd.eye(2, 3, 1, cpu1)
    assert (y.context, y.asnumpy().tolist()) == (cpu1, [[0, 1, 0], [0, 0, 1]])
    y = nd.eye(2, 0, 0, None, "int32")
    assert (y.dtype, y.context, y.asnumpy().tolist()) == (np.int32, gradserve.cpu(0), [[1, 0], [0, 1]])
    y = nd.linspace(0, 1, 3, True, cpu1, "float64")
    assert (y.dtype, y.context, y.asnumpy().tolist()) == (np.float64, cpu1, [0, 0.5, 1])
    y = nd.random_normal(0, 1, (2,), cpu1)
    assert (y.shape, y.dtype, y.context) == ((2,), np.float32, cpu1)
    y = nd.random_uniform(2, 3, (4,), cpu1, "float16")
    assert (y.dtype, y.context) == (np.float16, cpu1) and (y.asnumpy() >= 2).all()
    assert nd.random_randint(0, 4, (3,), None, "int64").dtype is np.int64
    assert nd.random_exponential(2.0, (3,), cpu1).context == cpu1
    assert list(inspect.signature(nd.eye).parameters) == ["N", "M", "k", "ctx", "dtype"]
    assert list(inspect.signature(nd.random_gamma).parameters) == ["alpha", "beta", "shape", "ctx", "dtype"]
    with pytest.raises(TypeError, match="got multiple values for argument 'ctx'"):
        nd.eye(2, 3, 1, cpu1, ctx=cpu1)


# (function, attributes as MXNet's strings, the same attributes typed); each string form was
# checked with MXNet 1.9.1, which passes every attribute to its engine as a string
STRING_ATTRIBUTES = [
    (lambda x, **a: nd.sum(x, **a), {"axis": "(0,1)"}, {"axis": (0, 1)}),
    (lambda x, **a: nd.sum(x, **a), {"axis": "[0]"}, {"axis": [0]}),
    (lambda x, **a: nd.sum(x, **a), {"axis": "1", "keepdims": "True"}, {"axis": 1, "keepdims": True}),
    (lambda x, **a: nd.sum(x, **a), {"axis": "None"}, {"axis": None}),
    (lambda x, **a: nd.sum(x, **a), {"axis": "()"}, {"axis": ()}),
    (lambda x, **a: nd.sum(x, **a), {"axis": "0", "keepdims": "TRUE"}, {"axis": 0, "keepdims": True}),
    (lambda x, **a: nd.mean(x, **a), {"axis": "1", "keepdims": "1"}, {"axis": 1, "keepdims": True}),
    (lambda x, **a: nd.mean(x, **a), {"axis": "1", "keepdims": "false"}, {"axis": 1, "keepdims": False}),
    (lambda x, **a: nd.reshape(x, **a), {"shape": "(3, -1)"}, {"shape": (3, -1)}),
    (lambda x, **a: nd.reshape(x, **a), {"shape": "6"}, {"shape": (6,)}),
    (lambda x, **a: nd.clip(x, **a), {"a_min": "0.5", "a_max": "2"}, {"a_min": 0.5, "a_max": 2.0}),
    (lambda x, **a: nd.clip(x, **a), {"a_min": "1e0", "a_max": "inf"}, {"a_min": 1.0, "a_max": float("inf")}),
    (lambda x, **a: nd.softmax(x, **a), {"axis": "-1"}, {"axis": -1}),
    (lambda x, **a: nd.topk(x, **a), {"k": "2"}, {"k": 2}),
    (lambda x, **a: nd.transpose(x, **a), {"axes": "(1,0)"}, {"axes": (1, 0)}),
    (lambda x, **a: nd.LeakyReLU(x, act_type="leaky", **a), {"slope": "0.1"}, {"slope": 0.1}),
    (lambda x, **a: nd.slice(x, **a), {"begin": "(None,1)", "end": "(2,3)"}, {"begin": (None, 1), "end": (2, 3)}),
    (lambda x, **a: nd.slice(x, begin=(0, 0), end=(2, 3), **a), {"step": "(1,2)"}, {"step": (1, 2)}),
    (lambda x, **a: x.sum(**a), {"axis": "1", "keepdims": "True"}, {"axis": 1, "keepdims": True}),
    (lambda x, **a: nd.ones(**a), {"shape": "(2,3)"}, {"shape": (2, 3)}),
    # the functions composed in the client
    (lambda x, **a: nd.split(x, **a), {"num_outputs": "3", "axis": "1"}, {"num_outputs": 3, "axis": 1}),
    (lambda x, **a: nd.moments(x, **a), {"axes": "(1,)", "keepdims": "True"}, {"axes": (1,), "keepdims": True}),
    (
        lambda x, **a: nd.topk(x, **a),
        {"k": "2", "axis": "0", "ret_typ": "both"},
        {"k": 2, "axis": 0, "ret_typ": "both"},
    ),
    (lambda x, **a: nd.zeros(**a), {"shape": "(2,)"}, {"shape": (2,)}),
]


@pytest.mark.parametrize(("fn", "strings", "typed"), STRING_ATTRIBUTES)
def test_attributes_given_as_mxnets_strings_read_as_mxnet_reads_them(mode, fn, strings, typed):
    x = nd.arange(6).reshape((2, 3))
    got, want = fn(x, **strings), fn(x, **typed)
    got, want = (got, want) if isinstance(got, (list, tuple)) else ([got], [want])
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_array_equal(g.asnumpy(), w.asnumpy())


def test_slice_takes_one_integer_for_begin_end_and_step_as_mxnet(mode):
    """MXNet 1.9.1 reads ``begin=1`` as ``(1,)``; it raised a Python TypeError from the engine."""
    a = nd.arange(12).reshape((3, 4))
    assert nd.slice(nd.arange(4), begin=1, end=3).asnumpy().tolist() == [1.0, 2.0]
    assert nd.slice(a, begin=1, end=3).asnumpy().tolist() == a[1:3].asnumpy().tolist()
    assert a.slice(begin=1, end=3).shape == (2, 4) and nd.slice(a, begin="1", end="3").shape == (2, 4)
    assert nd.slice(nd.arange(6), begin=1, end=5, step=2).asnumpy().tolist() == [1.0, 3.0]
    assert nd.slice(a, begin=(np.int64(1),), end=(np.int32(3),)).shape == (2, 4)  # numpy's integers too
    assert nd.slice(a, begin=np.int64(1), end=np.int64(3)).shape == (2, 4)
    with pytest.raises(ShapeError, match="one entry per axis"):
        nd.slice(a, begin=1, end=(3, 2))  # (MXNet: begin and end must have the same length)
    for bad in (True, [1.5], "x"):
        with pytest.raises(InvalidInput, match="begin must be a list of integers or None"):
            nd.slice(a, begin=bad, end=(2,))


def test_out_given_by_position_after_the_attributes_as_mxnet(mode):
    """MXNet's generated functions take ``out`` (then ``name``) by position after their
    attributes: ``relu(x, y)``, ``sum(x, None, False, False, z)`` write into y and z and return
    them (checked with MXNet 1.9.1)."""
    x, y, z = nd.array([-1.0, 2.0]), nd.zeros(2), nd.zeros(1)
    assert nd.relu(x, y) is y and y.asnumpy().tolist() == [0.0, 2.0]
    assert nd.sum(x, None, False, False, z) is z and z.asnumpy().tolist() == [1.0]
    assert nd.sum(x, None, False, False, None, "total").asnumpy().tolist() == [1.0]  # (no out; a name)
    with pytest.raises(TypeError, match="multiple values for argument 'out'"):
        nd.relu(x, y, out=y)
    with pytest.raises(TypeError, match="takes at most 1 positional arguments"):
        nd.relu(x, 3)


def test_out_by_position_after_an_absent_optional_input_as_mxnet(mode):
    """An op with an optional array input (FullyConnected's bias) takes ``out`` by position
    after its attributes too: it was refused ("takes at most 6 positional arguments"). Checked
    with MXNet 1.9.1: ``FullyConnected(x, w, None, 3, True, True, out)`` writes out."""
    x, w, b = nd.ones((4, 2)), nd.ones((3, 2)), nd.array([1.0, 2.0, 3.0])
    out = nd.zeros((4, 3))
    assert nd.FullyConnected(x, w, None, 3, True, True, out) is out
    assert out.asnumpy().tolist() == [[2.0, 2.0, 2.0]] * 4
    assert nd.FullyConnected(x, w, b, 3, False, True, out, "fc") is out  # (then a name)
    assert out.asnumpy().tolist() == [[3.0, 4.0, 5.0]] * 4
    assert nd.FullyConnected(x, w, b, 3, False, True, None).asnumpy().tolist() == [[3.0, 4.0, 5.0]] * 4
    with pytest.raises(TypeError, match="multiple values for argument 'out'"):
        nd.FullyConnected(x, w, None, 3, True, True, out, out=out)
    with pytest.raises(ShapeError, match="out has shape"):
        nd.FullyConnected(x, w, None, 3, True, True, nd.zeros((4, 4)))


def test_full_fills_out_whatever_shape_it_is_given_as_mxnet(mode):
    """MXNet's ``full`` fills ``out`` and ignores its ``shape`` (its zeros and ones refuse another
    shape, as they do here)."""
    o = nd.zeros((2, 3), dtype="int32")
    assert nd.full((3, 3), 5, out=o) is o
    assert o.dtype is np.int32 and o.asnumpy().tolist() == [[5, 5, 5], [5, 5, 5]]
    with pytest.raises(ShapeError, match="out has shape"):
        nd.zeros((3, 3), out=nd.zeros((2, 3)))


def test_multinomial_writes_out_as_mxnet(mode):
    """``random.multinomial(out=)`` was refused; MXNet writes the indices there (a list of two
    with ``get_prob``), refusing an out of another dtype or shape before writing any."""
    p = nd.array([[0.0, 1.0], [1.0, 0.0]])
    o = nd.full((2,), 7, dtype="int32")
    assert nd.random.multinomial(p, out=o) is o and o.asnumpy().tolist() == [1, 0]
    o3 = nd.zeros((2, 3), dtype="int32")
    assert nd.sample_multinomial(p, 3, False, o3) is o3 and o3.asnumpy().tolist() == [[1] * 3, [0] * 3]
    i, lp = nd.zeros((2,), dtype="int32"), nd.full((2,), 5.0)
    got = nd.random.multinomial(p, get_prob=True, out=[i, lp])
    assert got[0] is i and got[1] is lp
    assert i.asnumpy().tolist() == [1, 0] and lp.asnumpy().tolist() == [0.0, 0.0]
    f = nd.full((2,), 7.0)
    with pytest.raises(DTypeError, match="out has dtype float32, the result int32"):
        nd.random.multinomial(p, out=f)  # (MXNet: "type inconsistent"; with dtype="float32" it draws there)
    assert nd.random.multinomial(p, out=f, dtype="float32").asnumpy().tolist() == [1.0, 0.0]
    i2, bad = nd.full((2,), 7, dtype="int32"), nd.zeros((3,))
    with pytest.raises(ShapeError, match="out has shape"):
        nd.random.multinomial(p, get_prob=True, out=[i2, bad])
    assert i2.asnumpy().tolist() == [7, 7]  # (neither written)
    for wrong in ([i2], i2, [i2, lp, lp]):
        with pytest.raises(InvalidInput, match="out must be a list of two NDArrays"):
            nd.random.multinomial(p, get_prob=True, out=wrong)
    with pytest.raises(InvalidInput, match="out must be an NDArray"):
        nd.random.multinomial(p, out=[i2, lp])


def test_sequence_lengths_outside_the_steps_are_refused(mode):
    """``SequenceLast`` and ``SequenceReverse`` read memory past the data for lengths longer than
    its steps in MXNet 1.9.1 (and before it for ``SequenceLast``'s 0): refused here, where they
    were clipped silently. ``SequenceMask`` keeps them: masking nothing, or everything, is
    defined."""
    s = nd.arange(12).reshape((3, 2, 2))
    for name, lens, least in (("SequenceLast", [4, 1], 1), ("SequenceLast", [0, 1], 1), ("SequenceReverse", [1, 4], 0)):
        with pytest.raises(InvalidInput, match=f"{name}: sequence_length must be from {least} to 3"):
            getattr(nd, name)(s, nd.array(lens), use_sequence_length=True).asnumpy()
    for bad in (-1.0, float("nan")):
        with pytest.raises(InvalidInput, match="sequence_length must be from 0 to 3"):
            nd.SequenceReverse(s, nd.array([bad, 1.0]), use_sequence_length=True).asnumpy()
    assert nd.SequenceLast(s, nd.array([3, 1.5]), use_sequence_length=True).asnumpy().tolist() == [[8, 9], [2, 3]]
    assert nd.SequenceReverse(s, nd.array([0, 3]), use_sequence_length=True).asnumpy()[:, 0, 0].tolist() == [0, 4, 8]
    masked = nd.SequenceMask(s, nd.array([5, -1]), use_sequence_length=True)
    assert masked.asnumpy()[:, :, 0].tolist() == [[0, 0], [4, 0], [8, 0]]
    assert s.asnumpy().sum() == 66  # (the session as it was)


def test_shapes_and_errors_as_mxnet_gives_them(mode):
    """Differences from MXNet 1.9.1 a differential run found: ``split(squeeze_axis=True)`` kept
    the axis of parts longer than 1 (MXNet refuses); argmax and argmin with ``keepdims`` and no
    axis gave (1,) (MXNet keeps every axis, as 1); index arrays that do not broadcast raised an
    IndexError (MXNet's ValueError); a ragged list raised numpy's ValueError (MXNet's TypeError)."""
    with pytest.raises(ShapeError, match="squeeze_axis needs parts of length 1"):
        nd.split(nd.zeros((4, 3)), num_outputs=2, axis=0, squeeze_axis=True)
    assert [p.shape for p in nd.split(nd.zeros((4, 3)), num_outputs=4, axis=0, squeeze_axis=True)] == [(3,)] * 4
    x = nd.array([[1, 5], [7, 2]])
    assert nd.argmax(x, keepdims=True).shape == (1, 1) and nd.argmax(x, keepdims=True).asscalar() == 2
    assert nd.argmin(nd.zeros((2, 3, 4)), keepdims=True).shape == (1, 1, 1)
    assert nd.argmax(x).shape == (1,) and x.argmin(keepdims=True).asnumpy().tolist() == [[0]]
    z = nd.zeros((3, 4))
    with pytest.raises(ValueError, match=r"index arrays of shapes \(3,\) \(2,\) do not broadcast"):
        z[[0, 1, 2], [0, 1]]
    with pytest.raises(ValueError, match="do not broadcast"):
        z[[0, 1, 2], [0, 1]] = 1
    for ragged in ([[1, 2], [3]], "abc", [1, "a"]):
        with pytest.raises(TypeError, match="source_array must be array like object"):
            nd.array(ragged)


def test_flatten_expand_dims_and_squeeze_methods_take_inplace_as_mxnet(mode):
    """MXNet's methods take ``inplace``: a new array by default, a view with True (refused here
    as an unknown attribute)."""
    cases = (("flatten", (), (1, 6)), ("expand_dims", (0,), (1, 1, 2, 3)), ("squeeze", (None,), (2, 3)))
    for method, args, shape in cases:
        x = nd.ones((1, 2, 3))
        y = getattr(x, method)(*args, inplace=False)
        y[:] = 5
        assert y.shape == shape and x.asnumpy().max() == 1
        v = getattr(x, method)(*args, True)
        v[:] = 7
        assert v.shape == shape and x.asnumpy().min() == 7  # (a view)
    x = nd.arange(6).reshape((1, 2, 3))
    x.attach_grad()
    with autograd.record():
        y = (x.flatten(inplace=True) * 2).sum() + (x.squeeze(0, True) * 3).sum() + x.expand_dims(-1, inplace=True).sum()
    y.backward()
    assert x.grad.asnumpy().ravel().tolist() == [6] * 6
    with pytest.raises(InvalidInput, match="inplace: expected a boolean"):
        x.flatten(inplace="yes")


def test_mxnets_legacy_index_functions(mode):
    """choose_element_0index, fill_element_0index and onehot_encode are in MXNet 1.9.1's nd
    (deprecated; values checked with it): they were missing."""
    a, i = nd.array([[1, 2, 3], [4, 5, 6]]), nd.array([2, 0])
    assert nd.choose_element_0index(a, i).asnumpy().tolist() == [3, 4]
    m = nd.array([9, 8])
    a.attach_grad()
    m.attach_grad()
    with autograd.record():
        filled = nd.fill_element_0index(a, m, i)
        loss = (filled * nd.array([[1, 2, 3], [4, 5, 6]])).sum()
    assert filled.asnumpy().tolist() == [[1, 2, 9], [8, 5, 6]] and a.asnumpy()[0, 2] == 3
    loss.backward()
    assert a.grad.asnumpy().tolist() == [[1, 2, 0], [0, 5, 6]] and m.grad.asnumpy().tolist() == [3, 4]
    o = nd.zeros((2, 4))
    assert nd.onehot_encode(nd.array([1, 3]), o) is o
    assert o.asnumpy().tolist() == [[0, 1, 0, 0], [0, 0, 0, 1]]


def test_attribute_strings_mxnet_refuses_are_refused_saying_why(mode):
    x = nd.arange(6).reshape((2, 3))
    with pytest.raises(InvalidInput, match="keepdims.*expected a boolean, got 'yes'"):
        nd.sum(x, axis=0, keepdims="yes")
    with pytest.raises(InvalidInput, match="axis.*expected an integer, got '1.0'"):
        nd.softmax(x, axis="1.0")  # (MXNet: "expect int but value='1.0'")
    with pytest.raises(InvalidInput, match="act_type"):
        nd.LeakyReLU(x, act_type="nope")  # (a string attribute stays as it is given)
    with pytest.raises(InvalidInput, match="num_outputs must be an integer, got 'x'"):
        nd.split(x, num_outputs="x")


def test_the_rest_api_takes_typed_attributes_only():
    """MXNet's strings are the Python API's: a REST batch gives attributes typed, as the
    catalog says."""
    from gradserve.engine.session import Session

    s = Session("t")
    s.put(1, np.ones((2, 3), np.float32))
    reply = s.run_batch({"ops": [{"op": "sum", "in": [1], "out": [2], "at": {"axis": "1"}}]})
    assert reply["error"]["kind"] == "InvalidInput" and "expected" in reply["error"]["message"]


def test_arithmetic_on_bool_arrays_is_refused_as_in_mxnet(mode):
    """MXNet's NDArrays compute no arithmetic on bool (unary ops, array operands); ours gave
    numpy's message as a "malformed instruction", or bool results. What a bool array takes
    still works: copies, indexing, comparisons' and logical ops, sums, casts."""
    from gradserve.engine.errors import DTypeError

    x = nd.array([1, 0], dtype="bool")
    for f in (lambda: -x, lambda: x - 1, lambda: x + 1, lambda: x * x, lambda: nd.exp(x), lambda: nd.sign(x)):
        with pytest.raises(DTypeError, match="bool arrays take no arithmetic"):
            f()  # at the call, as a shape error (the scalar forms and unary ops raised at the sync point)
    y = nd.array([1, 0], dtype="bool")
    with pytest.raises(DTypeError, match="bool arrays take no arithmetic"):
        y += 1
    assert y.asnumpy().tolist() == [True, False]
    assert x.astype("float32").asnumpy().tolist() == [1.0, 0.0]
    assert nd.logical_not(x).asnumpy().tolist() == [False, True]
    assert x.copy()[0:1].asnumpy().tolist() == [True] and x.sum().asnumpy().tolist() == [True]
    # dot, add_n and clip are arithmetic MXNet refuses too (they gave bool products and sums);
    # its cumsum counts in int64 (it gave bools); its sum and mean stay bool, as MXNet's
    x3 = nd.array([[[1, 0], [0, 1]]], dtype="bool")
    for f in (
        lambda: nd.dot(x, x),
        lambda: nd.add_n(x, x),
        lambda: nd.clip(x, 0, 1),
        lambda: nd.batch_dot(x3, x3),
        lambda: nd.smooth_l1(x),
    ):
        with pytest.raises(DTypeError, match="bool arrays take no arithmetic"):
            f()
    b = nd.array([1, 1, 1, 0], dtype="bool")
    counts = nd.cumsum(b)
    assert counts.dtype is np.int64 and counts.asnumpy().tolist() == [1, 2, 3, 3]
    assert b.mean().asnumpy().tolist() == [True]


def test_numpy_arrays_lists_and_none_as_operands_are_refused_as_in_mxnet(mode):
    """MXNet's TypeError: not cast silently to the NDArray's dtype (an int32 array plus
    [0.5, 0.5] gave int32), nor computed by numpy from the array's values."""
    x = nd.array([1, 2], dtype="int32")
    for other in (np.array([0.5, 0.5]), [0.5, 0.5], (1, 2), np.array(2.0), None):
        for f in (
            lambda o: x + o,
            lambda o: o + x,
            lambda o: x * o,
            lambda o: x**o,
            lambda o: x == o,
            lambda o: x < o,
        ):
            with pytest.raises(TypeError, match="not supported"):
                f(other)
        y = x.copy()
        with pytest.raises(TypeError, match="not supported"):
            y += other
        assert y.asnumpy().tolist() == [1, 2]
    assert (x + np.int32(1)).asnumpy().tolist() == [2, 3]  # numpy scalars are numbers


def test_more_of_mxnets_nd_functions_as_mxnet(mode):
    """Shapes and values checked against MXNet 1.9.1."""
    x = nd.arange(24).reshape((2, 3, 4))
    assert nd.slice_like(x, nd.ones((1, 2, 3))).shape == (1, 2, 3)
    assert nd.slice_like(x, nd.ones((1, 2, 2)), axes=(0, 2)).shape == (1, 3, 2)
    assert nd.argmax_channel(nd.array([[1, 3, 2], [5, 1, 0]])).asnumpy().tolist() == [1, 0]
    assert nd.argmax_channel(x).shape == (2, 4)
    y = nd.arange(32).reshape((1, 8, 2, 2))
    d = nd.depth_to_space(y, 2)
    assert d.shape == (1, 2, 4, 4) and d.asnumpy().ravel()[:8].tolist() == [0, 8, 1, 9, 16, 24, 17, 25]
    assert (nd.space_to_depth(d, 2).asnumpy() == y.asnumpy()).all()
    s = nd.arange(24).reshape((4, 2, 3))
    assert nd.SequenceLast(s).asnumpy().tolist() == [[18, 19, 20], [21, 22, 23]]
    last = nd.SequenceLast(s, nd.array([2, 4]), use_sequence_length=True)
    assert last.asnumpy().tolist() == [[6, 7, 8], [21, 22, 23]]
    rev = nd.SequenceReverse(s, nd.array([2, 3]), use_sequence_length=True)
    assert rev.asnumpy()[:, 0, 0].tolist() == [6, 0, 12, 18]
    assert nd.SequenceReverse(s).asnumpy()[:, 1, 0].tolist() == [21, 15, 9, 3]
    np.testing.assert_allclose(
        nd.broadcast_hypot(nd.array([[3.0], [6.0]]), nd.array([4.0, 8.0])).asnumpy(),
        [[5, 8.5440035], [7.2111025, 10]],
        rtol=1e-6,
    )
    a = nd.array([0.0, 3.0])
    a.attach_grad()
    with autograd.record():
        h = nd.broadcast_hypot(a, nd.zeros((2,)))
    h.backward()
    assert a.grad.asnumpy().tolist() == [0, 1]  # (0 where both are 0)
    assert [p.shape for p in nd.split_v2(x, 2, axis=2)] == [(2, 3, 2), (2, 3, 2)]
    assert [p.shape for p in nd.split_v2(x, (1, 3), axis=2)] == [(2, 3, 1), (2, 3, 2), (2, 3, 1)]
    assert [p.shape for p in nd.split_v2(x, (0, 2), axis=2)] == [(2, 3, 0), (2, 3, 2), (2, 3, 2)]
    assert [p.shape for p in nd.split_v2(x, 3, axis=1, squeeze_axis=True)] == [(2, 4)] * 3
    assert nd.split_v2(x, 1, axis=2).shape == (2, 3, 4)
    for bad in (lambda: nd.split_v2(x, 3, axis=2), lambda: nd.split_v2(x, (3, 1), axis=2)):
        with pytest.raises(ShapeError):
            bad()
    inorm = nd.InstanceNorm(nd.array(np.arange(12.0).reshape(2, 2, 3)), nd.array([1.0, 2.0]), nd.array([0.0, 1.0]))
    np.testing.assert_allclose(inorm.asnumpy()[0], [[-1.2238274, 0, 1.2238274], [-1.4476547, 1, 3.4476547]], rtol=1e-6)
    assert nd.normal(shape=(2,)).shape == (2,) and nd.uniform(shape=(3,)).shape == (3,)


def test_integers_past_the_dtypes_range_wrap_as_in_mxnet(mode):
    """numpy 2 refuses them (OverflowError); MXNet 1.9.1 casts them as C does."""
    assert nd.array([-1, 256], dtype="uint8").asnumpy().tolist() == [255, 0]
    assert nd.array([[1, 300]], dtype="int8").asnumpy().tolist() == [[1, 44]]
    assert nd.array([2**31], dtype="int32").asnumpy().tolist() == [-(2**31)]


def test_mxnets_other_names_for_ops(mode):
    x = nd.array([[1, 2], [3, 4]])
    assert nd.broadcast_plus(x, nd.array([10, 20])).asnumpy().tolist() == [[11, 22], [13, 24]]
    assert nd.broadcast_minus(x, nd.array([1, 1])).asnumpy().tolist() == [[0, 1], [2, 3]]
    assert nd.Reshape(x, shape=(4,)).asnumpy().tolist() == [1, 2, 3, 4]
    assert [p.asnumpy().tolist() for p in nd.SliceChannel(x, 2, axis=0)] == [[[1, 2]], [[3, 4]]]
    assert nd.concatenate([x, x]).asnumpy().tolist() == [[1, 2], [3, 4], [1, 2], [3, 4]]
    assert nd.concatenate([x, x], axis=1).shape == (2, 4)
    one = nd.concatenate([x])
    one[0, 0] = 9  # (always_copy: a new array)
    assert x.asnumpy()[0, 0] == 1 and nd.concatenate([x], always_copy=False) is x


def test_generated_functions_refuse_more_positional_arguments_than_they_take(mode):
    """Extra positional arguments were dropped silently; Python's (and MXNet's) TypeError now."""
    x = nd.array([[1, 2], [3, 4]])
    calls = [
        lambda: nd.eye(2, 3, 1, None, "int32", 5),
        lambda: nd.linspace(0, 1, 3, True, None, "float32", 1),
        lambda: nd.random_normal(0, 1, (2,), None, "float32", 1),
        lambda: nd.sum(x, 0, False, False, 1),
        lambda: x.sum(0, False, False, 1),
        lambda: nd.relu(x, 1),
        lambda: nd.concat(x, x, 0, 2, 1),  # (dim, num_args, then one too many)
    ]
    for call in calls:
        with pytest.raises(TypeError, match="takes at most"):
            call()
    with pytest.raises(TypeError, match="multiple values for argument 'axis'"):
        nd.sum(x, 0, axis=1)
    assert nd.sum(x, 0, True, False).asnumpy().tolist() == [[4, 6]]


def test_a_large_upload_is_a_copy_even_when_sent_at_once(mode):
    a = np.arange(3 << 20, dtype=np.float32)  # 12 MiB: sent at once over HTTP, from the caller's memory
    x = nd.array(a)
    a[:] = -1
    got = x.asnumpy()
    assert got[0] == 0 and got[-1] == (3 << 20) - 1
    y = nd.array(a[::2])  # not contiguous: made so before it goes
    assert y.shape == ((3 << 20) // 2,) and float(y[5].asscalar()) == -1


def test_copyto_and_as_in_context_as_in_mxnet(mode):
    import gradserve

    x, z = nd.array([1, 2]), nd.zeros((2,), dtype="int32")
    assert x.copyto(z) is z and z.asnumpy().tolist() == [1, 2] and z.dtype is np.int32
    other = x.copyto(gradserve.cpu(1))  # another context: a new array (all live in the session)
    assert other is not x and other.asnumpy().tolist() == [1, 2]
    assert x.as_in_context(gradserve.cpu()) is x and x.as_in_context(x.context) is x
    assert x.as_in_context(gradserve.cpu(1)) is not x
    with pytest.raises(MXNetError, match="shape"):
        x.copyto(nd.zeros((3,)))
    with pytest.raises(TypeError):
        x.copyto(3)  # type: ignore[arg-type]


ASSIGNED = [  # key, value shape, whether MXNet 1.9.1 takes it (checked with it), into arange(12) as (3, 4)
    (slice(None), (12,), False),  # its size, another shape: MXNet refuses it (ours copied row by row)
    (slice(None), (12, 1), False),
    (slice(None), (4, 3), False),
    (slice(None), (3, 1, 4), False),
    (Ellipsis, (12,), False),
    (1, (2, 2), False),
    (1, (4, 1), False),
    ((slice(None), 1), (3, 1), False),
    (slice(1, None), (8,), False),
    (slice(1, None), (4, 2), False),
    (slice(1, 2), (4, 1), False),
    ((slice(None), slice(1, 3)), (6,), False),
    ([0, 2], (8,), False),
    (slice(None), (), True),  # broadcasting values
    (slice(None), (4,), True),
    (slice(None), (1, 4), True),
    (slice(None), (3, 1), True),
    (slice(None), (1, 1), True),
    (slice(None), (1, 3, 4), True),  # (leading axes of length 1 past the region's rank)
    (1, (1, 4), True),
    (1, (1,), True),
    ((slice(None), 1), (1, 3), True),
    (slice(1, None), (2, 1), True),
    (slice(1, None), (1, 2, 4), True),
    ((1, 2), (1,), True),
    ((1, 2), (1, 1), True),
    ([0, 2], (4,), True),
]


@pytest.mark.parametrize("key, shape, taken", ASSIGNED, ids=[f"{k}<-{s}" for k, s, _ in ASSIGNED])
def test_assigned_values_broadcast_as_in_mxnet_never_reshape(mode, key, shape, taken):
    """x[key] = v takes a v that broadcasts to the region, as numpy's and MXNet's; one of the
    region's size and another shape is refused (a ValueError, MXNet's kind), nothing written."""
    x = nd.arange(12).reshape((3, 4))
    v = np.arange(1, 1 + int(np.prod(shape)), dtype=np.float32).reshape(shape) * 100
    want = np.arange(12, dtype=np.float32).reshape(3, 4)
    k = np.array(key) if isinstance(key, list) else key
    for value in (nd.array(v) if shape else float(v), v):  # an NDArray (a number) and a numpy array
        if not taken:
            with pytest.raises(ValueError, match="could not be broadcast") as e:
                x[nd.array(key) if isinstance(key, list) else key] = value
            assert isinstance(e.value, MXNetError)
            assert x.asnumpy().tolist() == want.tolist()
            continue
        x[nd.array(key) if isinstance(key, list) else key] = value
        want[k] = v.reshape(v.shape[max(0, v.ndim - want[k].ndim) :])
        assert x.asnumpy().tolist() == want.tolist()


def test_copyto_takes_an_array_of_the_same_shape_only(mode):
    """MXNet's copyto neither broadcasts nor reshapes (checked with MXNet 1.9.1); ours wrote a
    (3, 4) array into a (12,) one in row-major order."""
    x = nd.arange(12).reshape((3, 4))
    for shape in ((12,), (4, 3), (1, 3, 4), (2, 2)):
        z = nd.zeros(shape)
        with pytest.raises(ShapeError, match="shape"):
            x.copyto(z)
        assert not z.asnumpy().any()
    with pytest.raises(ShapeError, match="shape"):
        nd.ones((1, 4)).copyto(nd.zeros((3, 4)))
    assert x.copyto(nd.zeros((3, 4))).asnumpy().tolist() == x.asnumpy().tolist()


def test_embedding_gather_nd_and_exclude_through_the_client(mode):
    """Checked against MXNet 1.9.1: values, gradients and errors."""
    w = nd.arange(6).reshape((3, 2))
    w.attach_grad()
    d = nd.array([[0, 2], [2, 7]])  # 7 is clipped to the last row
    with autograd.record():
        y = nd.Embedding(d, w, input_dim=3, output_dim=2) * nd.array([1, 2])
    y.backward()
    assert y.asnumpy().tolist() == [[[0, 2], [4, 10]], [[4, 10], [4, 10]]]
    assert w.grad.asnumpy().tolist() == [[1, 2], [0, 0], [3, 6]]
    with pytest.raises(MXNetError, match=r"weight shape \(3, 2\) should be \(4, 2\)"):
        nd.Embedding(d, w, input_dim=4, output_dim=2)

    a = nd.arange(12).reshape((3, 4))
    a.attach_grad()
    with autograd.record():
        g = nd.gather_nd(a, nd.array([[0, 0, -1], [1, 1, 3]]))
    g.backward()
    assert g.asnumpy().tolist() == [1, 1, 11]
    assert a.grad.asnumpy().tolist() == [[0, 2, 0, 0], [0] * 4, [0, 0, 0, 1]]
    assert nd.gather_nd(a, nd.array([[0, 2]])).asnumpy().tolist() == [[0, 1, 2, 3], [8, 9, 10, 11]]
    with pytest.raises(IndexError, match="index 5 is out of bounds for axis 0 with size 3"):
        nd.gather_nd(a, nd.array([[5], [1]])).asnumpy()
    with pytest.raises(MXNetError, match="at least 2 dimensions"):
        nd.gather_nd(a, nd.array([0, 1]))

    x = nd.ones((2, 3, 4))
    assert nd.sum(x, axis=1, exclude=True).asnumpy().tolist() == [8, 8, 8]
    assert x.mean(axis=(0, 2), exclude=True, keepdims=True).shape == (2, 1, 4)


def test_math_ops_and_aliases_through_the_client(mode):
    """Values and gradients checked against MXNet 1.9.1."""
    x = nd.array([0.5, 2.0, -0.3])
    x.attach_grad()
    with autograd.record():
        y = nd.rcbrt(x) + nd.arctan(x) + nd.degrees(x)
    y.backward()
    np.testing.assert_allclose(
        y.asnumpy(),
        [1.25992 + 0.46365 + 28.64789, 0.7937 + 1.10715 + 114.59155, -1.4938 - 0.29146 - 17.18873],
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        x.grad.asnumpy(),
        [-0.83995 + 0.8 + 57.29578, -0.13228 + 0.2 + 57.29578, -1.65978 + 0.91743 + 57.29578],
        rtol=1e-5,
    )
    a, b = nd.array([1, 2]), nd.array([3, 4])
    assert nd.add_n(a, b, a).asnumpy().tolist() == [5, 8] == nd.ElementWiseSum(a, b, a).asnumpy().tolist()
    assert nd.true_divide(nd.array([3, 5], dtype="int32"), nd.array([2, 2], dtype="int32")).asnumpy().tolist() == [1, 2]
    assert nd.sum_axis(nd.ones((2, 3)), axis=1, keepdims=True).shape == (2, 1)
    assert nd.max_axis(nd.ones((2, 3))).shape == (1,)
    assert nd.nansum(nd.array([[1, float("nan")], [3, 4]])).asnumpy().tolist() == [8.0]
    with pytest.raises(MXNetError, match="one shape"):
        nd.add_n(nd.ones((2,)), nd.ones((3,)))


def test_layer_norm_as_mxnet(mode):
    """Values and gradients (with a head gradient) checked against MXNet 1.9.1."""
    x, g, b = nd.array([[1, 2, 4], [3, 3, 9]]), nd.array([1, 2, 3]), nd.array([0.5, 0, -1])
    for a in (x, g, b):
        a.attach_grad()
    with autograd.record():
        y = nd.LayerNorm(x, g, b)
    y.backward(nd.array([[1, 0, 2], [0.5, 1, -1]]))
    np.testing.assert_allclose(y.asnumpy(), [[-0.56904, -0.53452, 3.00891], [-0.20711, -1.41421, 3.24264]], atol=1e-4)
    np.testing.assert_allclose(x.grad.asnumpy(), [[0.91631, -1.37449, 0.45818], [-0.26516, 0.26517, 0.0]], atol=1e-4)
    np.testing.assert_allclose(g.grad.asnumpy(), [-1.42259, -0.70711, 1.25839], atol=1e-4)
    assert b.grad.asnumpy().tolist() == [1.5, 1.0, 1.0]
    with pytest.raises(MXNetError, match=r"gamma shape \(4,\) should be \(3,\)"):
        nd.LayerNorm(nd.ones((2, 3, 4)), nd.ones((4,)), nd.zeros((4,)), axis=1)


def test_more_mxnet_ops_through_the_client(mode):
    """Values and gradients checked against MXNet 1.9.1."""

    def grad_of(f, value):
        x = nd.array(value)
        x.attach_grad()
        with autograd.record():
            y = f(x)
        y.backward()
        return x.grad.asnumpy()

    x = [[1.0, -2.0, 0.5], [3.0, 0.2, -0.7]]
    head = nd.array([[1, 2, 3], [4, 5, 6]])
    np.testing.assert_allclose(
        grad_of(lambda a: nd.softmin(a) * head, x),
        [[0.04524, 0.02521, -0.07045], [0.02904, 0.19356, -0.2226]],
        atol=1e-5,
    )
    np.testing.assert_allclose(grad_of(lambda a: nd.smooth_l1(a, scalar=2.0), x), [[1, -1, 1], [1, 0.8, -1]], atol=1e-6)
    np.testing.assert_allclose(grad_of(nd.hard_sigmoid, [-5, -1, 0, 1, 5.0]), [0, 0.2, 0.2, 0.2, 0], atol=1e-6)
    l2 = grad_of(lambda a: nd.L2Normalization(a) * nd.array([[1, 2], [3, 4]]), [[3.0, 4.0], [1.0, 1.0]])
    np.testing.assert_allclose(l2, [[-0.064, 0.048], [-0.35355, 0.35355]], atol=1e-5)
    assert nd.diag(nd.arange(8).reshape((2, 2, 2)), axis1=1, axis2=2).asnumpy().tolist() == [[0, 3], [4, 7]]
    assert nd.diag(nd.array([1, 2]), k=-1).asnumpy().tolist() == [[0, 0, 0], [1, 0, 0], [0, 2, 0]]
    assert grad_of(lambda a: nd.diag(a) * nd.array([1, 2]), [[1.0, 2], [3, 4]]).tolist() == [[1, 0], [0, 2]]
    assert nd.broadcast_axis(nd.array([[1], [2]]), axis=1, size=3).asnumpy().tolist() == [[1, 1, 1], [2, 2, 2]]
    assert nd.moveaxis(nd.ones((2, 3, 4)), [0, 1], [2, 0]).shape == (3, 4, 2)
    c = nd.cumsum(nd.array([[1, 2], [3, 4]], dtype="int32"), axis=0)
    assert c.dtype is np.int32 and c.asnumpy().tolist() == [[1, 2], [4, 6]]
    assert nd.cumsum(nd.array([[1, 2], [3, 4]])).asnumpy().tolist() == [1, 3, 6, 10]
    s = nd.shape_array(nd.ones((2, 3)))
    assert s.dtype is np.int64 and s.asnumpy().tolist() == [2, 3]
    assert nd.logical_xor(nd.array([1, 0, 2]), nd.array([1, 1, 0])).asnumpy().tolist() == [0, 1, 1]
    with pytest.raises(MXNetError, match="empty"):
        nd.diag(nd.ones((3, 3)), k=5)
    with pytest.raises(MXNetError, match="rank 3"):
        nd.L2Normalization(nd.ones((2, 3)), mode="channel")


def test_large_floats_print_as_mxnet_printed_them(mode):
    """numpy 2.3 and later write float32 from 1e6 (float16 from 1e3) in scientific notation;
    MXNet 1.9.1 printed them as numpy 1.x did (the tutorial's control-flow gradient is one)."""
    assert repr(nd.array([1048576.0])) == "\n[1048576.]\n<NDArray 1 @cpu(0)>"
    assert repr(nd.array([1024.0, 3.0], dtype="float16")) == "\n[1024.    3.]\n<NDArray 2 @cpu(0)>"
    assert repr(nd.array([1e7, 0.5])) == "\n[1.e+07 5.e-01]\n<NDArray 2 @cpu(0)>"
    with np.printoptions(precision=2):  # the user's options still apply, as in MXNet
        assert repr(nd.array([1.23456])) == "\n[1.23]\n<NDArray 1 @cpu(0)>"


def test_mod_operators_and_gradients_as_mxnet(mode):
    """``%``, ``%=``, ``nd.modulo`` and ``nd.broadcast_mod``: values and gradients MXNet 1.9.1
    gave (d/da = 1, d/db = -floor(a / b)), recorded and hybridized."""
    import gradserve

    a = nd.array([[-7, 7, 5.5, -5.5], [3, -3, 0.5, 1]])
    b = nd.array([2, -2, 3, -3])
    want = [[1, -1, 2.5, -2.5], [1, -1, 0.5, -2]]
    for y in (a % b, nd.modulo(a, b), nd.broadcast_mod(a, b)):
        assert y.shape == (2, 4) and y.dtype is np.float32 and y.asnumpy().tolist() == want
    assert (a % 2).asnumpy().tolist() == nd.modulo(a, 2).asnumpy().tolist() == [[1, 1, 1.5, 0.5], [1, 1, 0.5, 1]]
    assert (2 % a).asnumpy().tolist() == nd.modulo(2, a).asnumpy().tolist() == [[-5, 2, 2, -3.5], [2, -1, 0, 0]]
    assert (a % 0).asnumpy().tolist() == [[0] * 4] * 2
    a.attach_grad()
    b.attach_grad()
    with autograd.record():
        y = a % b
    y.backward()
    assert a.grad.asnumpy().tolist() == [[1] * 4] * 2 and b.grad.asnumpy().tolist() == [3, 3, -1, 0]
    with autograd.record():
        y = 2.5 % a
    y.backward()
    assert a.grad.asnumpy().tolist() == [[1, 0, 0, 1], [0, 1, -5, -2]]
    c = a.copy()
    c %= b
    assert c.asnumpy().tolist() == want
    c %= -1.5
    assert c.asnumpy().tolist() == [[-0.5, -1, -0.5, -1], [-0.5, -1, -1, -0.5]]
    i = nd.array([-7, 7, 5], dtype="int32")
    i %= nd.array([2, -2, 0], dtype="int32")
    assert i.dtype is np.int32 and i.asnumpy().tolist() == [1, -1, 0]
    with pytest.raises(MXNetError, match="dtype"):
        a % nd.array([1, 2, 3, 4], dtype="float64")
    with pytest.raises(MXNetError, match="broadcast"):
        a % nd.array([1, 2, 3])

    @gradserve.hybridize
    def f(u, v):
        with autograd.record():
            z = (u % v) * (1.5 % v)
        z.backward()
        return z

    u, v = nd.array([5.5, -4.0]), nd.array([2.0, -3.0])
    v.attach_grad()
    for _ in range(2):  # traced, then called as a program
        assert f(u, v).asnumpy().tolist() == [1.5 * 1.5, -1 * -1.5]
        # d/dv (u % v)(1.5 % v) = -floor(u / v)(1.5 % v) - (u % v) floor(1.5 / v)
        assert v.grad.asnumpy().tolist() == [-2 * 1.5 - 1.5 * 0, -1 * -1.5 - -1 * -1]


def test_sort_argsort_and_topk_with_axis_none_flatten_as_mxnet(mode):
    """Shapes, dtypes, values and gradients MXNet 1.9.1 gave for axis=None."""
    x = nd.array([[3, 1, 2], [0, 5, 4]])
    assert nd.sort(x, axis=None).asnumpy().tolist() == [0, 1, 2, 3, 4, 5]
    i = x.argsort(axis=None, is_ascend=False, dtype="int32")
    assert i.dtype is np.int32 and i.shape == (6,) and i.asnumpy().tolist() == [4, 5, 0, 2, 1, 3]
    v, j = nd.topk(x, axis=None, k=2, ret_typ="both")
    assert v.asnumpy().tolist() == [5, 4] and j.dtype is np.float32 and j.asnumpy().tolist() == [4, 5]
    m = x.topk(axis=None, k=2, ret_typ="mask")
    assert m.shape == (2, 3) and m.asnumpy().tolist() == [[0, 0, 0], [0, 1, 1]]
    assert nd.topk(x, axis=None, k=0).asnumpy().tolist() == [4, 5, 0, 2, 1, 3]  # k below 1: all
    assert nd.topk(nd.ones((2, 3, 4)), axis=None, k=3).shape == (3,)
    x.attach_grad()
    with autograd.record():
        y = nd.sort(x, axis=None) * nd.arange(6)
    y.backward()
    assert x.grad.asnumpy().tolist() == [[3, 1, 2], [0, 5, 4]]
    with autograd.record():
        y = nd.topk(x, axis=None, k=2, ret_typ="value") * nd.array([1, 10])
    y.backward()
    assert x.grad.asnumpy().tolist() == [[0, 0, 0], [0, 1, 10]]
    with pytest.raises(MXNetError, match="k=7"):
        nd.topk(x, axis=None, k=7)


def test_arrays_keep_their_context_as_mxnet_prints_it(mode):
    """What MXNet 1.9.1 printed: an array made in cpu(1) says so, and so does every op's result
    made from it (its first input's context; a mix of contexts computes, on CPU), its gradient
    and its copies; ``with ctx:`` sets the default; ``nd.array`` of an NDArray takes the default
    or ``ctx``, not the source's."""
    import gradserve

    cpu1 = gradserve.cpu(1)
    a = nd.array([1, 2], ctx=cpu1)
    assert repr(a) == "\n[1. 2.]\n<NDArray 2 @cpu(1)>" and a.context == cpu1 and a.ctx == cpu1
    assert repr(a.context) == "cpu(1)" and str(gradserve.cpu_pinned()) == "cpu_pinned(0)"
    b = a.as_in_context(gradserve.cpu(0))
    assert b is not a and b.context == gradserve.cpu(0) and a.as_in_context(cpu1) is a
    assert repr(a.copyto(gradserve.cpu(0))).endswith("@cpu(0)>") and a.copy().context == cpu1
    for y in (a + 1, a * nd.array([1, 2]), nd.dot(a, nd.array([1, 2])), a[0], a.reshape((2, 1)), a.T, a.sum(), 2 - a):
        assert y.context == cpu1, y
    assert (nd.array([1, 2]) + a).context == gradserve.cpu(0)
    for y in (
        nd.zeros((2,), ctx=gradserve.cpu(2)),
        nd.ones((1,), ctx=gradserve.cpu(2)),
        nd.full((1,), 5, ctx=gradserve.cpu(2)),
        nd.arange(2, ctx=gradserve.cpu(2)),
        nd.empty((1,), ctx=gradserve.cpu(2)),
        nd.eye(2, ctx=gradserve.cpu(2)),
        nd.random.normal(shape=(1,), ctx=gradserve.cpu(2)),
        nd.random.uniform(shape=(1,), ctx=gradserve.cpu(2)),
    ):
        assert y.context == gradserve.cpu(2), y
    assert nd.array(a).context == gradserve.cpu(0) and nd.array(a, ctx=gradserve.cpu(3)).context == gradserve.cpu(3)
    f = nd.zeros((2,))
    a.copyto(f)
    assert f.context == gradserve.cpu(0)
    a.attach_grad()
    with autograd.record():
        y = (a * a).sum()
    y.backward()
    assert a.grad.context == cpu1 and a.grad.asnumpy().tolist() == [2, 4]
    with autograd.record():
        y = (a * a).sum()
    assert autograd.grad(y, [a])[0].context == cpu1
    with cpu1:
        assert nd.zeros((1,)).context == cpu1 and gradserve.current_context() == cpu1
        assert nd.zeros((1,), ctx=gradserve.cpu(0)).context == gradserve.cpu(0)
    assert gradserve.current_context() == gradserve.cpu(0) and nd.zeros((1,)).context == gradserve.cpu(0)
    assert gradserve.Context(cpu1) == cpu1 and gradserve.Context("cpu", 1) == cpu1
    with pytest.raises(MXNetError, match="not available"):
        gradserve.Context("gpu", 0)
    with pytest.raises(MXNetError, match="device_id"):
        gradserve.cpu(-1)
    assert nd.zeros((1,), ctx="cpu(1)").context == gradserve.cpu(1)  # (a context by name, as MXNet reads one)
    with pytest.raises(InvalidInput, match="is not a context"):
        nd.zeros((1,), ctx="cpu(one)")
    with pytest.raises(TypeError, match="ctx must be a Context"):
        nd.zeros((1,), ctx=1)

    @gradserve.hybridize
    def double(u):
        return u * 2

    for _ in range(2):  # traced, then called as a program
        assert double(a).context == cpu1 and double(nd.ones((2,))).context == gradserve.cpu(0)


def test_boolean_index_arrays_are_refused_as_mxnet_refuses_them(mode):
    """MXNet 1.9.1's NDArrays refuse a boolean NDArray as an index, in reads and writes, alone
    or in a tuple (a ValueError: 'Cannot perform boolean indexing in legacy mode'); a float or
    uint8 0/1 array is read as integer indices there, and here. A boolean list or numpy array,
    which MXNet reads as the indices 0 and 1, is refused too (see README)."""
    from gradserve.engine.errors import BooleanIndexError

    x = nd.array([[1, 2, 3], [4, 5, 6]])
    mask = nd.array([1, 0], dtype="bool")
    for f in (
        lambda: x[mask],
        lambda: x[nd.array([[1, 0, 1], [0, 1, 0]], dtype="bool")],
        lambda: x[mask, 1],
        lambda: x.__setitem__(mask, 0),
        lambda: x[np.array([True, False])],
        lambda: x[[True, False]],
    ):
        with pytest.raises(BooleanIndexError, match="boolean") as e:
            f()
        assert isinstance(e.value, ValueError) and isinstance(e.value, MXNetError)
    assert x.asnumpy().tolist() == [[1, 2, 3], [4, 5, 6]]  # nothing written
    assert x[nd.array([1, 0])].asnumpy().tolist() == [[4, 5, 6], [1, 2, 3]]
    assert x[nd.array([1, 0], dtype="uint8")].asnumpy().tolist() == [[4, 5, 6], [1, 2, 3]]
    assert x[x > 2].shape == (2, 3, 3)  # (x > 2 is float32 0/1: integer indices, as in MXNet)


def test_float_index_lists_and_numpy_arrays_index_as_mxnet(mode):
    """MXNet 1.9.1 makes a float list or numpy array an NDArray, read as a float index array
    is (toward zero); they were refused ("index arrays must hold integers")."""
    x = nd.arange(12).reshape((4, 3))
    rows = x.asnumpy()
    assert x[[0.0, 1.0]].asnumpy().tolist() == rows[[0, 1]].tolist()
    assert x[[0.5, 1.7]].asnumpy().tolist() == rows[[0, 1]].tolist()
    assert x[[-1.5]].asnumpy().tolist() == rows[[-1]].tolist()
    assert x[np.array([2.9], np.float16)].asnumpy().tolist() == rows[[2]].tolist()
    assert x[[0.0, 1.0], [1.0, 2.0]].asnumpy().tolist() == [1.0, 5.0]
    assert x[[[0.0], [3.0]]].shape == (2, 1, 3)
    x[[0.0, 1.0]] = 5
    assert x.asnumpy()[:2].tolist() == [[5.0] * 3] * 2
    with pytest.raises(IndexError):
        x[[4.0]].asnumpy()
    with pytest.raises(InvalidInput, match="integers or floats"):
        x[np.array(["a"])]


def test_bad_index_kinds_and_unknown_dtypes_raise_mxnets_python_errors(mode):
    """MXNet 1.9.1 raises a ValueError for an index of a kind it does not take, and numpy's
    TypeError for an unknown dtype: here they are those too (and MXNetErrors)."""
    a = nd.arange(4)
    for key in (1.0, "a", (0, 1.0)):
        with pytest.raises(ValueError, match="use integers"):
            a[key]
    for make in (
        lambda: a.astype("int33"),
        lambda: nd.cast(a, "int33"),
        lambda: nd.zeros(2, dtype="foo"),
        lambda: nd.array([1], dtype="foo"),
    ):
        with pytest.raises(TypeError, match="dtype") as e:
            make()
        assert isinstance(e.value, MXNetError)
    assert a.asnumpy().tolist() == [0, 1, 2, 3]


def test_zeros_like_and_ones_like_take_the_datas_dtype_by_name_and_arrays_say_they_are_writable(mode):
    """MXNet 1.9.1 takes zeros_like(x, dtype=...) and gives x's dtype whatever it says: the
    data's is taken here, another refused (it would not be what was asked). ``writable``:
    True, MXNet's for every NDArray."""
    a = nd.array([1.5, 2.5])
    assert nd.zeros_like(a, dtype="float32").asnumpy().tolist() == [0, 0]
    assert nd.ones_like(a, dtype=None).asnumpy().tolist() == [1, 1]
    for fn in (nd.zeros_like, nd.ones_like):
        with pytest.raises(DTypeError, match="not int32"):
            fn(a, dtype="int32")
    assert a.writable and a[0:1].writable


def test_a_float_past_float16_is_inf_with_no_warning_as_mxnet(mode):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert nd.array([65504, 70000], dtype="float16").asnumpy().tolist() == [65504, float("inf")]
        big = nd.array(np.full(1 << 21, 7e4), dtype="float16")  # (16 MiB of float64: sent at once, remote)
        assert big.shape == (1 << 21,) and float(big[0].asscalar()) == float("inf")


def test_more_samplers_through_the_client(mode):
    """randn, exponential, poisson, gamma and the negative binomials, with MXNet's signatures,
    defaults, shapes and dtypes (float32, counts too), drawn from the session's own generator
    (a seed repeats them); NDArray parameters are refused, not misread."""
    import gradserve

    r = nd.random
    assert r.randn(2, 3).shape == (2, 3) and r.randn(2, 3).dtype is np.float32
    assert r.randn(4, loc=1, scale=2, dtype="float64").dtype is np.float64
    for y in (r.exponential(), r.poisson(), r.gamma(), r.negative_binomial(), r.generalized_negative_binomial()):
        assert y.shape == (1,) and y.dtype is np.float32
    big = {
        "exponential": (r.exponential(2, shape=(100, 100)), 2.0, 4.0),
        "poisson": (r.poisson(3, shape=(10000,)), 3.0, 3.0),
        "gamma": (r.gamma(2, 0.5, shape=(10000,), dtype="float64"), 1.0, 0.5),
        "negative_binomial": (r.negative_binomial(3, 0.4, shape=(10000,)), 4.5, 11.25),
        "generalized_negative_binomial": (r.generalized_negative_binomial(2, 0.5, shape=(10000,)), 2.0, 4.0),
    }
    for name, (y, mean, var) in big.items():
        v = y.asnumpy().astype(np.float64)
        assert abs(v.mean() - mean) < 5 * np.sqrt(var / v.size), name
        assert abs(v.var() / var - 1) < 0.15, name
    assert big["gamma"][0].dtype is np.float64 and big["exponential"][0].shape == (100, 100)
    counts = big["poisson"][0].asnumpy()
    assert np.array_equal(counts, np.round(counts))
    assert r.poisson(2, shape=(1,), ctx=gradserve.cpu(1)).context == gradserve.cpu(1)
    r.seed(5)
    a = r.negative_binomial(2, 0.5, shape=(50,)).asnumpy()
    r.seed(5)
    assert np.array_equal(a, r.negative_binomial(2, 0.5, shape=(50,)).asnumpy())
    with pytest.raises(MXNetError, match="p must be in"):
        r.negative_binomial(3, 1.5)
    with pytest.raises(MXNetError, match="dtype"):
        r.poisson(3, dtype="int32")
    with pytest.raises(MXNetError, match="shape"):
        r.randn()


def test_samplers_take_ndarray_parameters(mode):
    """MXNet's: NDArray parameters (all of one shape) draw ``shape`` for each element,
    param.shape + shape (the param's shape with none), float32 whatever their dtype, in their
    context; a mixture with numbers, different shapes or dtypes are refused, as is randint's."""
    import gradserve

    r = nd.random
    loc, scale = nd.array([1, 2, 3], ctx=gradserve.cpu(1)), nd.array([2, 3, 4])
    y = r.normal(loc, scale, shape=2)
    assert (y.shape, y.dtype, y.context) == ((3, 2), np.float32, gradserve.cpu(1))
    assert r.normal(loc, scale).shape == (3,) and r.normal(loc, scale, shape=(2, 3)).shape == (3, 2, 3)
    assert r.normal(loc.astype("float64"), scale.astype("float64"), shape=2).dtype is np.float32
    assert r.normal(loc, scale, shape=2, dtype="float64").dtype is np.float64
    assert r.randn(2, loc=loc, scale=scale).shape == (3, 2) and r.randn(loc=loc, scale=scale).shape == (3,)
    assert nd.sample_normal(loc, scale, shape=(4,)).shape == (3, 4)
    two = nd.array([[1.0, 100.0]])
    draws = {
        "uniform": (r.uniform(two, two + 1, shape=5000), [1.5, 100.5], [1 / 12, 1 / 12]),
        "exponential": (r.exponential(two, shape=5000), [1.0, 100.0], [1.0, 1e4]),  # (scale: the mean)
        "poisson": (r.poisson(two, shape=5000), [1.0, 100.0], [1.0, 100.0]),
        "gamma": (r.gamma(two, two / 10, shape=5000), [0.1, 1000.0], [0.01, 1e4]),
        "negative_binomial": (r.negative_binomial(two, two / 200, shape=5000), [199.0, 100.0], [39601.0, 200.0]),
        "generalized_negative_binomial": (
            r.generalized_negative_binomial(two, two / 100, shape=5000),
            [1.0, 100.0],
            [1.01, 10100.0],
        ),
    }
    for name, (d, mean, var) in draws.items():
        v = d.asnumpy().astype(np.float64)
        assert (d.shape, d.dtype) == ((1, 2, 5000), np.float32), name
        for row, m, s2 in zip(v[0], mean, var):
            assert abs(row.mean() - m) < 5 * np.sqrt(s2 / row.size), name
            assert abs(row.var() / s2 - 1) < 0.15, name
    r.seed(3)
    a = r.gamma(two, two, shape=10).asnumpy()
    r.seed(3)
    assert np.array_equal(a, r.gamma(two, two, shape=10).asnumpy())
    with pytest.raises(MXNetError, match="all NDArrays or all numbers, got loc NDArray, scale float"):
        r.normal(loc, 1.0)
    with pytest.raises(MXNetError, match=r"one shape: mu has \(3,\), sigma has \(2,\)"):
        r.normal(loc, nd.array([1, 2]))
    with pytest.raises(MXNetError, match="one dtype"):
        r.normal(loc, scale.astype("float64"))
    with pytest.raises(MXNetError, match="low must be a number"):
        r.randint(loc, 5)
    with pytest.raises(MXNetError, match=r"alpha must be positive and finite, got -1.0 at index \[0\]"):
        r.gamma(-loc, scale).asnumpy()


def test_sampler_parameters_get_a_zero_gradient(mode):
    """MXNet's samplers are not reparametrised: their parameters' gradients are zeros."""
    x, s = nd.array([1.0, 2.0]), nd.array([1.0, 2.0])
    x.attach_grad()
    s.attach_grad()
    with autograd.record():
        y = nd.random.normal(x, s, shape=3) * 2 + nd.random.exponential(s, shape=3)
    y.backward()
    assert x.grad.asnumpy().tolist() == [0, 0] and s.grad.asnumpy().tolist() == [0, 0]


def test_multinomial_through_the_client(mode):
    """Indices of data.shape[:-1] + shape (1,) for one 1-D distribution) in ``dtype``; with
    get_prob, [indices, their log-probabilities] in data's dtype; nd.sample_multinomial too."""
    p = nd.array([[0.1, 0.2, 0.7], [0.5, 0.5, 0.0]])
    assert nd.random.multinomial(nd.array([0.2, 0.8])).shape == (1,)
    s = nd.random.multinomial(p, shape=(2, 2))
    assert (s.shape, s.dtype) == ((2, 2, 2), np.int32)
    assert nd.random.multinomial(p, dtype="float16").dtype is np.float16
    idx, lp = nd.random.multinomial(p.astype("float64"), shape=6, get_prob=True)
    assert (idx.shape, idx.dtype, lp.shape, lp.dtype) == ((2, 6), np.int32, (2, 6), np.float64)
    probs = p.asnumpy().astype(np.float64)
    np.testing.assert_allclose(lp.asnumpy(), np.log(np.take_along_axis(probs, idx.asnumpy(), axis=1)))
    one, lp1 = nd.sample_multinomial(nd.array([0.2, 0.8]), get_prob=True)
    assert one.shape == lp1.shape == (1,)
    many = nd.random.multinomial(p, shape=10000).asnumpy()
    assert abs((many[0] == 2).mean() - 0.7) < 0.03 and not (many[1] == 2).any()
    nd.random.seed(9)
    a = nd.random.multinomial(p, shape=20).asnumpy()
    nd.random.seed(9)
    assert np.array_equal(a, nd.random.multinomial(p, shape=20).asnumpy())
    with pytest.raises(MXNetError, match="must sum to 1"):
        nd.random.multinomial(nd.array([1.0, 3.0])).asnumpy()
    with pytest.raises(MXNetError, match="dtype must be one of"):
        nd.random.multinomial(p, dtype="int64")


def test_multinomial_log_probability_gradient(mode):
    """d sum(w * log p[idx]) / dp: what MXNet gives (w / p at each drawn index, summed), held
    to central differences with the draws fixed by the seed."""
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 1.0, (2, 4))
    base /= base.sum(axis=1, keepdims=True)
    w = rng.standard_normal((2, 5))

    def f(probs):
        nd.random.seed(11)
        idx, lp = nd.random.multinomial(nd.array(probs, dtype="float64"), shape=5, get_prob=True)
        return idx.asnumpy(), float((lp.asnumpy() * w).sum())

    x = nd.array(base, dtype="float64")
    x.attach_grad()
    nd.random.seed(11)
    with autograd.record():
        idx, lp = nd.random.multinomial(x, shape=5, get_prob=True)
        z = (lp * nd.array(w, dtype="float64")).sum()
    z.backward()
    want = np.zeros_like(base)
    np.add.at(want, (np.arange(2)[:, None], idx.asnumpy()), w / np.take_along_axis(base, idx.asnumpy(), axis=1))
    np.testing.assert_allclose(x.grad.asnumpy(), want, rtol=1e-10)
    eps = 1e-6
    numeric = np.zeros_like(base)
    for i in np.ndindex(base.shape):
        d = np.zeros_like(base)
        d[i] = eps
        (i_plus, up), (i_minus, down) = f(base + d), f(base - d)
        assert np.array_equal(i_plus, idx.asnumpy()) and np.array_equal(i_minus, idx.asnumpy())
        numeric[i] = (up - down) / (2 * eps)
    np.testing.assert_allclose(x.grad.asnumpy(), numeric, rtol=1e-6, atol=1e-8)
    with autograd.record():
        s = nd.random.multinomial(x, shape=2)
    s.backward()
    assert not x.grad.asnumpy().any()  # (the indices carry a zero gradient, as MXNet's)


def test_like_samplers_draw_datas_shape_and_dtype(mode):
    """MXNet's ``*_like`` samplers: draws of data's shape and dtype, in its context, from the
    session's generator; exponential_like takes the rate (lam 4: mean 0.25); 0-d data and
    NDArray parameters are refused."""
    import gradserve

    r = nd.random
    x = nd.ones((2, 3), dtype="float64", ctx=gradserve.cpu(1))
    for name in (
        "normal_like",
        "uniform_like",
        "exponential_like",
        "poisson_like",
        "gamma_like",
        "negative_binomial_like",
        "generalized_negative_binomial_like",
    ):
        y = getattr(r, name)(x)
        assert (y.shape, y.dtype, y.context) == ((2, 3), np.float64, gradserve.cpu(1)), name
    big = nd.zeros((20000,))
    cases = {
        "normal_like": (r.normal_like(big, loc=1, scale=2), 1.0, 4.0),
        "uniform_like": (r.uniform_like(big, low=2, high=4), 3.0, 4 / 12),
        "exponential_like": (r.exponential_like(big, lam=4.0), 0.25, 0.0625),
        "poisson_like": (r.poisson_like(big, lam=3), 3.0, 3.0),
        "gamma_like": (r.gamma_like(big, alpha=2, beta=0.5), 1.0, 0.5),
    }
    for name, (y, mean, var) in cases.items():
        v = y.asnumpy().astype(np.float64)
        assert y.dtype is np.float32 and abs(v.mean() - mean) < 5 * np.sqrt(var / v.size), name
        assert abs(v.var() / var - 1) < 0.15, name
    r.seed(3)
    a = r.normal_like(big).asnumpy()
    r.seed(3)
    assert np.array_equal(a, r.normal_like(big).asnumpy())
    with pytest.raises(MXNetError, match="at least one axis"):
        r.normal_like(nd.ones((1,)).reshape(()))
    with pytest.raises(MXNetError, match="must be a number"):
        r.normal_like(x, loc=nd.ones((2, 3), dtype="float64"))
    with pytest.raises(MXNetError, match="float16, float32 or float64"):  # (MXNet's: floating point only)
        r.uniform_like(nd.ones((3,), dtype="int32"))
    with pytest.raises(MXNetError, match="unknown argument 'bogus'"):
        r.poisson_like(x, bogus=1)
    out = nd.zeros((2, 3), dtype="float64")
    assert r.uniform_like(x, low=5, high=6, out=out) is out  # written into out, as MXNet's
    assert (out.asnumpy() >= 5).all()


def test_exponentials_take_mxnets_scale_or_rate(mode):
    """As MXNet 1.9.1's (checked with it): nd.random_exponential (the op) and exponential_like
    take the rate ``lam`` (lam 4: mean 0.25); nd.random.exponential takes the scale (the mean)
    and draws with the rate 1/scale: a scale of 0 is Python's ZeroDivisionError, an infinite
    one a rate of 0, refused as a rate of 0 or below is; an infinite rate draws zeros."""
    r = nd.random
    means = {
        "op": (nd.random_exponential(4.0, shape=(100000,)), 0.25),
        "op lam=": (nd.random_exponential(lam=4.0, shape=(100000,)), 0.25),
        "scale": (r.exponential(4.0, shape=(100000,)), 4.0),
        "scale=": (r.exponential(scale=0.5, shape=(100000,)), 0.5),
        "like": (r.exponential_like(nd.zeros((100000,)), 4.0), 0.25),
    }
    for name, (y, mean) in means.items():
        v = y.asnumpy().astype(np.float64)
        assert y.shape == (100000,) and abs(v.mean() - mean) < 5 * mean / np.sqrt(v.size), name
    assert nd.random_exponential().shape == (1,)
    assert r.exponential_like(nd.zeros((3,)), float("inf")).asnumpy().tolist() == [0.0, 0.0, 0.0]
    assert nd.random_exponential(float("inf"), shape=(2,)).asnumpy().tolist() == [0.0, 0.0]
    with pytest.raises(ZeroDivisionError):
        r.exponential(0, shape=(3,))
    for bad in (
        lambda: r.exponential(float("inf"), shape=(3,)),
        lambda: r.exponential(-2.0, shape=(3,)),
        lambda: nd.random_exponential(0.0, shape=(3,)),
        lambda: nd.random_exponential(lam=-1.0, shape=(3,)),
        lambda: r.exponential_like(nd.zeros((3,)), 0.0),
        lambda: r.exponential_like(nd.zeros((3,)), lam=-1.0),
    ):
        with pytest.raises(MXNetError, match="lam must be positive"):
            bad()
    with pytest.raises(MXNetError, match="unknown attribute 'scale'"):
        nd.random_exponential(scale=4.0, shape=(3,))
    with pytest.raises(MXNetError, match="unknown argument 'lam'"):
        r.exponential(scale=2.0, lam=3.0)


def test_samplers_write_into_out_and_refuse_unknown_arguments(mode):
    """MXNet's: ``out=`` takes the draws (its shape and dtype when none is given) and is
    returned; an argument the sampler does not have is refused (it was passed over)."""
    r = nd.random
    out = nd.zeros((2, 3), dtype="float64")
    assert r.normal(5, 1, shape=(2, 3), out=out) is out and out.asnumpy().mean() > 3
    assert r.uniform(7, 8, out=out) is out and (out.asnumpy() >= 7).all()  # out's shape and dtype
    ints = nd.zeros((4,), dtype="int32")
    assert r.randint(3, 4, out=ints) is ints and ints.asnumpy().tolist() == [3, 3, 3, 3]
    assert r.poisson(2, shape=(2, 3), name="p", out=out) is out
    with pytest.raises(MXNetError, match="out has shape"):
        r.normal(shape=(5,), out=out)
    for sampler in (r.normal, r.uniform, r.poisson, r.gamma, r.exponential):
        with pytest.raises(MXNetError, match="unknown argument 'bogus'"):
            sampler(bogus=1)


def test_samplers_draw_the_dtypes_mxnet_draws_and_refuse_others(mode):
    """MXNet 1.9.1: normal and uniform draw float16/32/64 only, randint int32/int64 only. An
    integer normal wrapped its negative draws (uint8: 233) and a bool uniform was all True."""
    r = nd.random
    assert r.uniform(shape=(2,), dtype="float16").dtype == np.float16
    assert r.randint(0, 5, shape=(2,), dtype="int64").dtype == np.int64
    for draw, dtype in ((r.normal, "uint8"), (r.normal, "int32"), (r.uniform, "bool"), (r.uniform, "int64")):
        with pytest.raises(InvalidInput, match="dtype must be one of float16, float32, float64"):
            draw(0, 10, shape=(4,), dtype=dtype)
    for dtype in ("float32", "int8"):
        with pytest.raises(InvalidInput, match="dtype must be int32 or int64"):
            r.randint(0, 5, shape=(2,), dtype=dtype)


@pytest.mark.parametrize(
    "call",
    [
        lambda a, o: nd.elemwise_add(a, a, out=o("int32")),
        lambda a, o: nd.exp(a, out=o("float64")),
        lambda a, o: nd.exp(a, o("float16")),  # (out by position)
        lambda a, o: nd.cast(a, "int32", out=o("float32")),
        lambda a, o: nd.zeros((2,), out=o("int32")),
        lambda a, o: nd.sum(nd.stack(a, a), axis=0, out=o("float64")),
    ],
)
def test_out_of_another_dtype_is_refused_as_in_mxnet(mode, call):
    """MXNet raises "type inconsistent" (1.9.1); the result was cast into out with no word."""
    a = nd.array([1.5, 2.5])
    made = []

    def out(dtype):
        made.append(nd.full((2,), 7, dtype=dtype))
        return made[-1]

    with pytest.raises(DTypeError, match="out has dtype"):
        call(a, out)
    assert made[0].asnumpy().tolist() == [7, 7]  # left as it was


@pytest.mark.parametrize(
    "call, dtype",
    [
        (lambda o: nd.random_normal(shape=(2,), out=o), "float64"),
        (lambda o: nd.random_uniform(0, 1, (2,), None, None, o), "float64"),  # (out by position)
        (lambda o: nd.random_uniform(0, 1, (2,), None, None, out=o), "float64"),  # (dtype by position)
        (lambda o: nd.random_normal(0, 1, (2,), None, "float32", out=o), "float32"),
        (lambda o: nd.sample_normal(nd.zeros((2,)), nd.ones((2,)), (), "float32", out=o), "float32"),
        (lambda o: nd.random_randint(0, 5, (2,), None, "int32", out=o), "int32"),
        (lambda o: nd.sample_normal(nd.zeros((2,)), nd.ones((2,)), out=o), "float64"),
        (lambda o: nd.random_randint(0, 5, shape=(2,), out=o), "int64"),
        (lambda o: nd.random.normal(shape=(2,), out=o), "float64"),
        (lambda o: nd.full((2,), 3, out=o), "int32"),
        (lambda o: nd.full((2,), 3, dtype="float16", out=o), "int64"),
    ],
)
def test_samplers_and_full_take_outs_dtype_as_mxnet(mode, call, dtype):
    """MXNet 1.9.1's samplers draw in out's dtype where none is given, and full fills out in
    its own dtype whatever dtype says; the refusal of another dtype's out is for the rest."""
    out = nd.zeros((2,), dtype=dtype)
    assert call(out) is out and out.dtype == np.dtype(dtype)
    assert out.asnumpy().dtype == np.dtype(dtype)


def test_leaky_relu_prelu_gelu_and_rrelu_through_nd(mode):
    """nd.LeakyReLU as MXNet's: gamma by keyword (Gluon's PReLU) with its gradient, gelu, and
    rrelu recorded in training: the gradient is the slope each element drew."""
    x = nd.array(np.arange(-12, 12).reshape(2, 3, 4) * 0.5)
    gamma = nd.array([0.1, 0.2, 0.3])
    x.attach_grad()
    gamma.attach_grad()
    with autograd.record():
        y = nd.LeakyReLU(x, gamma=gamma, act_type="prelu")
    y.backward(nd.array(np.arange(24).reshape(2, 3, 4)))
    assert gamma.grad.asnumpy().tolist() == [-29, -69, -45]
    np.testing.assert_allclose(
        nd.LeakyReLU(nd.array([-3.0, 1.0]), act_type="gelu").asnumpy(), [-0.0040496941, 0.8413447], rtol=1e-6
    )
    z = nd.array(np.full((4, 5), -2.0))
    z.attach_grad()
    with autograd.record(train_mode=True):
        y = nd.LeakyReLU(z, act_type="rrelu")
    y.backward()
    slopes = y.asnumpy() / -2.0
    assert ((0.125 <= slopes) & (slopes <= 0.334)).all() and len(np.unique(slopes)) > 1
    assert np.array_equal(z.grad.asnumpy(), slopes)
    with autograd.record(train_mode=False):
        y = nd.LeakyReLU(z, act_type="rrelu")
    assert np.allclose(y.asnumpy(), -2.0 * 0.2295)


def test_moments_gives_mxnets_mean_and_variance_with_gradients(mode):
    x = nd.array(np.arange(24).reshape(2, 3, 4) * 0.37 - 2)
    mean, var = nd.moments(x, axes=(0, 2))
    np.testing.assert_allclose(mean.asnumpy(), [0.775, 2.255, 3.7350001], rtol=2e-7)  # MXNet 1.9.1's
    np.testing.assert_allclose(var.asnumpy(), [5.099525] * 3, rtol=2e-7)
    mean, var = nd.moments(x, axes=[-1], keepdims=True)
    assert mean.shape == var.shape == (2, 3, 1)
    np.testing.assert_allclose(var.asnumpy().ravel(), [0.171125] * 6, rtol=3e-7)
    m, v = nd.moments(x.astype("int32"), axes=1)  # MXNet's integer arithmetic: truncated
    assert m.asnumpy().tolist() == [[0, 0, 0, 0], [3, 3, 4, 4]]
    assert v.asnumpy().tolist() == [[1, 0, 0, 1], [1, 2, 1, 2]]
    x.attach_grad()
    with autograd.record():
        mean, var = nd.moments(x, axes=(0, 2))
        z = (mean * nd.array([1, 2, 3])).sum() + (var * nd.array([0.5, -1, 2])).sum()
    z.backward()
    xs = x.asnumpy().astype(np.float64)
    centred = xs - xs.mean(axis=(0, 2), keepdims=True)
    want = np.array([1, 2, 3]).reshape(1, 3, 1) / 8 + np.array([0.5, -1, 2]).reshape(1, 3, 1) * 2 * centred / 8
    np.testing.assert_allclose(x.grad.asnumpy(), want, rtol=1e-5, atol=1e-6)
    assert abs(x.grad.asnumpy()[0, 0, 0] - -0.22187501) < 1e-6  # MXNet's


@pytest.mark.parametrize(
    "axes, error",
    [(None, "Empty axes"), ((), "Empty axes"), ((3,), "out of range"), ((1, -2), "twice"), ("a", "list of ints")],
)
def test_moments_refuses_what_mxnet_refuses(mode, axes, error):
    with pytest.raises(MXNetError, match=error):
        nd.moments(nd.ones((2, 3, 4)), axes=axes)
    with pytest.raises(MXNetError, match="length 0"):
        nd.moments(nd.zeros((2, 0)), axes=(1,))
    with pytest.raises(MXNetError, match="moments: bool arrays"):  # (it named sub, an op of its own)
        nd.moments(nd.ones(2, dtype="bool"), axes=(0,))


def test_softmax_cross_entropy_caps_each_samples_loss_as_mxnet(mode):
    """MXNet's loss is -log(max(p, 1e-8)) per sample: a confidently wrong one adds 18.420681,
    not its whole log-loss, and its gradient stays softmax - one_hot (MXNet 1.9.1's values)."""
    x = nd.array([[0.0, 30.0], [30.0, 0.0], [1.0, 2.0]])
    x.attach_grad()
    with autograd.record():
        loss = nd.softmax_cross_entropy(x, nd.array([0, 0, 1]))
    loss.backward()
    assert loss.asnumpy().tolist() == [np.float32(18.73394203186035)]
    np.testing.assert_allclose(
        x.grad.asnumpy().ravel(), [-1.0, 1.0, 0.0, 9.357623e-14, 0.26894143, -0.2689414], rtol=1e-6, atol=1e-7
    )
    assert nd.softmax_cross_entropy(nd.array([[0.0, 18.0]]), nd.array([0])).asscalar() == np.float32(18.0)
    assert nd.softmax_cross_entropy(nd.array([[0.0, 19.0]]), nd.array([0])).asscalar() == np.float32(18.420681)
    big = nd.array([[0.0, 1000.0]], dtype="float64")
    assert nd.softmax_cross_entropy(big, nd.array([0], dtype="float64")).asscalar() == 18.420680750029838
    half = nd.softmax_cross_entropy(nd.array([[0.0, 30.0]], dtype="float16"), nd.array([0], dtype="float16"))
    assert half.asscalar() == np.float16(30.0)  # (float16 has no 1e-8: no cap; MXNet's p is 0 there, its loss inf)


def test_softmax_with_length_through_nd(mode):
    x = nd.array(np.arange(12).reshape(3, 4) * 0.3 - 1)
    length = nd.array([2, 4, 0], dtype="int32")
    x.attach_grad()
    with autograd.record():
        y = nd.softmax(x, length=length, use_length=True)
    y.backward(nd.array(np.arange(12).reshape(3, 4) * 0.1 + 0.5))
    assert y.asnumpy()[2].tolist() == [0, 0, 0, 0] and y.asnumpy()[0, 2:].tolist() == [0, 0]
    np.testing.assert_allclose(x.grad.asnumpy()[0], [-0.02444584, 0.02444583, 0, 0], rtol=1e-5)
    positional = nd.softmax(x, length, use_length=True)  # (MXNet takes it by position too)
    assert np.array_equal(positional.asnumpy(), y.asnumpy())
    with pytest.raises(MXNetError, match="use_length"):
        nd.softmax(x, length=length)
    with pytest.raises(MXNetError, match="length"):
        nd.softmax(x, use_length=True)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_round_is_half_away_from_zero_exactly(mode, dtype):
    """As MXNet 1.9.1 gives them: the values next to a half and past 2**23 are not rounded
    up by an addition of 0.5 first."""
    below = float(np.nextafter(np.array(0.5, dtype), np.array(0, dtype)))  # the largest value under a half
    big = {"float16": 1025.0, "float32": 8388609.0, "float64": 4503599627370497.0}[dtype]
    x = nd.array([below, -below, big, -big, 0.5, -0.5, 1.5, -2.5, 2.25, -0.0, 3.0, -7.5], dtype=dtype)
    got = nd.round(x).asnumpy()
    assert got.dtype == np.dtype(dtype)
    assert got.tolist() == [0, 0, big, -big, 1, -1, 2, -3, 2, 0, 3, -8]
    assert np.signbit(got[[1, 5, 9]]).all()  # -0.0 keeps its sign, as MXNet's
    np.testing.assert_array_equal(nd.round(nd.array([np.nan, np.inf, -np.inf])).asnumpy(), [np.nan, np.inf, -np.inf])
    assert nd.round(nd.array([3, -4], dtype="int32")).asnumpy().tolist() == [3, -4]


def test_split_along_an_axis_the_array_has_not_is_an_mxnet_error(mode):
    with pytest.raises(MXNetError, match="axis 1 is out of range for an array of rank 1"):
        nd.split(nd.arange(6), 3)  # (MXNet's default axis is 1)
    with pytest.raises(MXNetError, match="axis -2 is out of range"):
        nd.arange(6).split(num_outputs=2, axis=-2)
    assert [p.asnumpy().tolist() for p in nd.split(nd.arange(6), 3, axis=-1)] == [[0, 1], [2, 3], [4, 5]]


def test_float32_sums_and_means_print_mxnets_values(mode):
    """MXNet sums float32 with a compensated sum and divides a mean's sum by its count in
    float32: these are its values (1.9.1), where a float32 sum along an axis gave 47.000004
    and 47.999996, and numpy's float64 mean 0.45000002."""
    y = nd.arange(100).reshape((10, 10)) * 0.1
    assert y.sum(axis=0).asnumpy().tolist() == [45.0, 46.0, 47.0, 48.0, 49.0, 50.0, 51.0, 52.0, 53.0, 54.0]
    means = y.mean(axis=1).asnumpy()
    assert means.dtype == np.float32
    assert means.tolist()[:2] == [0.44999998807907104, 1.4500000476837158]
    assert means.tolist()[4] == 4.449999809265137
    z = (nd.arange(1000) / 7) ** 2
    assert z.sum().asnumpy().tolist() == [6792520.5] and z.mean().asnumpy().tolist() == [6792.5205078125]
    assert nd.nansum(y, axis=1).asnumpy().tolist() == [4.5, 14.5, 24.5, 34.5, 44.5, 54.5, 64.5, 74.5, 84.5, 94.5]
    assert str(y.sum(axis=0)).startswith("\n[45. 46. 47. 48.")


def test_nd_reshape_is_a_copy_and_the_method_a_view_as_in_mxnet(mode):
    x = nd.arange(6)
    r = nd.reshape(x, (3, 2))
    r[0] = 7
    assert x.asnumpy().tolist() == [0, 1, 2, 3, 4, 5]  # (MXNet's nd.reshape copies)
    assert nd.Reshape(x, shape=(2, 3)).shape == (2, 3)
    v = x.reshape((3, 2))
    v[0] = 7
    assert x.asnumpy().tolist() == [7, 7, 2, 3, 4, 5]  # the method shares, as MXNet's
    out = nd.zeros((2, 3))
    assert nd.reshape(x, shape=(2, 3), out=out) is out and out.asnumpy()[0].tolist() == [7, 7, 2]
    w = nd.arange(6)
    w.attach_grad()
    with autograd.record():
        y = (nd.reshape(w, (2, 3)) * nd.array([[1, 2, 3], [4, 5, 6]])).sum()
    y.backward()
    assert w.grad.asnumpy().tolist() == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize(
    "given, want",
    [  # MXNet 1.9.1's shapes, from (2, 3, 4)
        ({"target_shape": (0, 4)}, (6, 4)),
        ({"target_shape": (6, 0)}, (6, 4)),
        ({"target_shape": (4, 6)}, (4, 6)),
        ({"target_shape": (0,)}, (24,)),
        ({"target_shape": (9, 0), "keep_highest": True}, (2, 12)),
        ({"target_shape": (1, 0), "keep_highest": True}, (2, 12)),
        ({"target_shape": (9, 3, 4), "keep_highest": True}, (2, 3, 4)),
        ({"shape": (4, -1), "target_shape": (2, 12)}, (4, 6)),  # shape given: target_shape unread
        ({"shape": (4, -1), "keep_highest": True}, (4, 6)),
    ],
)
def test_reshape_reads_mxnets_deprecated_target_shape(mode, given, want):
    x = nd.arange(24).reshape((2, 3, 4))
    y = nd.Reshape(x, **given)
    assert y.shape == want and y.asnumpy().ravel().tolist() == list(range(24))


@pytest.mark.parametrize(
    "target",
    [(0, 0), (5, 0), (-1, 4), (7, 3)],  # MXNet 1.9.1 gives (0, 0), (5, 4), an error, an error
)
def test_a_target_shape_of_another_size_is_refused(mode, target):
    """MXNet 1.9.1 gives shapes of another size than the data's for some: refused here."""
    x = nd.arange(24).reshape((2, 3, 4))
    with pytest.raises(ShapeError, match="target_shape"):
        nd.Reshape(x, target_shape=target)
    assert x.shape == (2, 3, 4) and float(x.sum().asscalar()) == 276.0


def test_a_gradient_flows_through_a_target_shape_reshape(mode):
    w = nd.arange(6)
    w.attach_grad()
    with autograd.record():
        y = (nd.Reshape(w, target_shape=(2, 0)) * nd.array([[1, 2, 3], [4, 5, 6]])).sum()
    y.backward()
    assert w.grad.asnumpy().tolist() == [1, 2, 3, 4, 5, 6]


def test_norm_takes_out_dtype_in_mxnets_place_and_only_the_datas_dtype(mode):
    """MXNet's order is norm(data, ord, axis, out_dtype, keepdims); its CPU norm fails inside
    for any out_dtype but the data's (1.9.1), refused here in words."""
    x = nd.array([[3, 4], [6, 8]])
    assert nd.norm(x, 2, 1, "float32", True).asnumpy().tolist() == [[5.0], [10.0]]
    assert nd.norm(x, out_dtype="float32").dtype == np.float32
    with pytest.raises(MXNetError, match="out_dtype float64"):
        nd.norm(x, out_dtype="float64")
    h = nd.array([3, 4], dtype="float16")
    assert nd.norm(h, out_dtype="float16").asnumpy().tolist() == [5.0]


def test_ufuncs_of_numbers_and_logical_ops_with_a_number_as_mxnet(mode):
    """MXNet's values (1.9.1): two numbers give a number; a logical op of an array and a
    number goes by the number's truth, in the array's dtype (NaN counts as true)."""
    assert (nd.maximum(1, 2), nd.add(1, 2.5), nd.equal(1, 1), nd.logical_xor(1, 0)) == (2, 3.5, 1, 1)
    assert (nd.power(2, 3), nd.divide(1, 2), nd.subtract(1, 2), nd.modulo(5, 3)) == (8, 0.5, -1, 2)
    x = nd.array([0, 2, float("nan")])
    want = {
        ("logical_and", 0): [0, 0, 0],
        ("logical_and", 0.5): [0, 1, 1],
        ("logical_or", 0): [0, 1, 1],
        ("logical_or", 1): [1, 1, 1],
        ("logical_xor", 0): [0, 1, 1],
        ("logical_xor", 1): [1, 0, 0],
    }
    for (name, s), values in want.items():
        for got in (getattr(nd, name)(x, s), getattr(nd, name)(s, x)):
            assert got.dtype == np.float32 and got.asnumpy().tolist() == values, (name, s)
    assert nd.logical_or(nd.array([1, 2], dtype="int32"), 1).dtype == np.int32


def test_round_and_rint_of_an_integer_array_are_arrays_of_their_own(mode):
    x = nd.array([1, 2, 3], dtype="int32")
    for fn in (nd.round, nd.rint):
        y = fn(x)
        y += 10
        assert y.asnumpy().tolist() == [11, 12, 13] and x.asnumpy().tolist() == [1, 2, 3]


def test_amp_casts_touch_float16_and_float32_only(mode):
    """MXNet 1.9.1's amp_cast and amp_multicast (mixed precision): float64 and integer arrays
    pass as they are; the gradient is cast back."""
    x, i = nd.array([1.5, 2.5]), nd.array([1, 2], dtype="int32")
    h, d = nd.array([1, 2], dtype="float16"), nd.array([1, 2], dtype="float64")
    targets = ("float16", "float32", "float64", "int32")
    casts = {a.dtype.__name__: [nd.amp_cast(a, dtype=t).dtype.__name__ for t in targets] for a in (x, i, h, d)}
    assert casts == {
        "float32": ["float16", "float32", "float64", "int32"],
        "int32": ["int32"] * 4,
        "float16": ["float16", "float32", "float64", "int32"],
        "float64": ["float64"] * 4,
    }
    assert [a.dtype.__name__ for a in nd.amp_multicast(x, h, num_outputs=2)] == ["float32", "float32"]
    assert [a.dtype.__name__ for a in nd.amp_multicast(x, h, num_outputs=2, cast_narrow=True)] == ["float16", "float16"]
    assert [a.dtype.__name__ for a in nd.amp_multicast(x, h, d, num_outputs=3)] == ["float32", "float32", "float64"]
    assert nd.amp_multicast(h, num_outputs=1).dtype == np.float16
    x.attach_grad()
    h.attach_grad()
    with autograd.record():
        a, b = nd.amp_multicast(x, h, num_outputs=2)
        (a * b).sum().backward()
    assert x.grad.asnumpy().tolist() == [1, 2] and h.grad.asnumpy().tolist() == [1.5, 2.5]
    assert h.grad.dtype == np.float16
    with pytest.raises(MXNetError, match="num_outputs is 3 but 2 arrays were given"):
        nd.amp_multicast(x, h, num_outputs=3)


def test_batch_norm_and_layer_norm_give_their_statistics_as_mxnet(mode):
    """output_mean_var=True: MXNet 1.9.1's three outputs (recorded): BatchNorm's batch mean and
    1/sqrt(var + eps) in training, the moving ones in prediction; LayerNorm's mean and
    sqrt(var + eps), keeping the axis; GroupNorm's, (N, groups). Here gradients go through them
    too (MXNet's take none)."""
    x = nd.array(np.arange(12.0).reshape(3, 2, 2) * 0.5)
    g, b, mm, mv = nd.array([2, 3]), nd.array([0.5, 1]), nd.array([1.0, 2.0]), nd.array([4.0, 9.0])
    y, mean, inv = nd.BatchNorm(x, g, b, mm, mv, output_mean_var=True)
    assert y.shape == (3, 2, 2)
    np.testing.assert_allclose(mean.asnumpy(), [1, 2])
    np.testing.assert_allclose(inv.asnumpy(), [0.49993753, 0.3333148], rtol=1e-6)
    with autograd.record():
        y, mean, inv = nd.BatchNorm(x, g, b, mm, mv, output_mean_var=True)
    np.testing.assert_allclose(mean.asnumpy(), [2.25, 3.25])
    np.testing.assert_allclose(inv.asnumpy(), [0.60520905, 0.60520905], rtol=1e-6)
    with autograd.record():
        alone = nd.BatchNorm(x, g, b, mm, mv)
    np.testing.assert_array_equal(y.asnumpy(), alone.asnumpy())
    positional = nd.BatchNorm(x, g, b, mm, mv, 1e-3, 0.9, True, False, True)
    assert len(positional) == 3 and positional[1].asnumpy().tolist() == [1, 2]
    y, mean, std = nd.LayerNorm(x, nd.ones(2), nd.zeros(2), output_mean_var=True)
    assert (y.shape, mean.shape, std.shape) == ((3, 2, 2), (3, 2, 1), (3, 2, 1))
    np.testing.assert_allclose(mean.asnumpy().ravel(), [0.25, 1.25, 2.25, 3.25, 4.25, 5.25])
    np.testing.assert_allclose(std.asnumpy().ravel(), [0.25002] * 6, rtol=1e-5)
    x.attach_grad()
    with autograd.record():
        _, mean, std = nd.LayerNorm(x, nd.ones(2), nd.zeros(2), axis=1, output_mean_var=True)
        loss = (mean * mean).sum() + std.sum()
    loss.backward()
    xv = x.asnumpy().astype(np.float64)
    m = xv.mean(axis=1, keepdims=True)
    s = np.sqrt(((xv - m) ** 2).mean(axis=1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(x.grad.asnumpy(), 2 * m / 2 + (xv - m) / (2 * s), rtol=1e-4, atol=1e-6)
    with pytest.raises(InvalidInput, match="a list of 3 NDArrays"):
        nd.LayerNorm(x, nd.ones(2), nd.zeros(2), output_mean_var=True, out=nd.zeros((3, 2, 2)))
    outs = [nd.zeros((3, 2, 2)), nd.zeros((3, 1, 2)), nd.zeros((3, 1, 2))]
    got = nd.LayerNorm(x, nd.ones(2), nd.zeros(2), axis=1, output_mean_var=True, out=outs)
    assert all(a is b for a, b in zip(got, outs)) and outs[1].asnumpy().ravel().tolist() == [
        0.5,
        1.0,
        2.5,
        3.0,
        4.5,
        5.0,
    ]
    alone = nd.LayerNorm(x, nd.ones(2), nd.zeros(2), output_mean_var="False")  # (MXNet's string: False)
    assert isinstance(alone, NDArray) and alone.shape == (3, 2, 2)
    assert len(nd.LayerNorm(x, nd.ones(2), nd.zeros(2), output_mean_var="True")) == 3
    with pytest.raises(InvalidInput, match="expected a boolean"):
        nd.LayerNorm(x, nd.ones(2), nd.zeros(2), output_mean_var="nope")
    with pytest.raises(InvalidInput, match=r"BatchNorm takes 5 inputs \(data, gamma, .*\), got 3"):
        nd.BatchNorm(x, g, b)
    assert nd.LayerNorm(x, nd.ones(2), nd.zeros(2), name="ln").shape == (3, 2, 2)
    x = nd.array(np.arange(24.0).reshape(2, 4, 3) * 0.5)
    for dt in ("float32", "float16"):
        gamma, beta = nd.ones(2, dtype=dt), nd.zeros(2, dtype=dt)
        y, mean, std = nd.GroupNorm(x.astype(dt), gamma, beta, num_groups=2, output_mean_var=True)
        assert (y.shape, mean.shape, std.shape, mean.dtype) == ((2, 4, 3), (2, 2), (2, 2), np.dtype(dt))
        np.testing.assert_allclose(mean.asnumpy().ravel(), [1.25, 4.25, 7.25, 10.25])
        np.testing.assert_allclose(std.asnumpy().ravel(), [0.85391843] * 4, rtol=1e-3 if dt == "float16" else 1e-6)


def test_fully_connected_of_data_with_no_features_is_its_bias(mode):
    x, w, b = nd.zeros((2, 0)), nd.zeros((3, 0)), nd.array([1.0, 2.0, 3.0])
    for a in (x, w, b):
        a.attach_grad()
    with autograd.record():
        y = nd.FullyConnected(x, w, b, num_hidden=3)
    y.backward()
    assert y.asnumpy().tolist() == [[1.0, 2.0, 3.0]] * 2
    assert x.grad.shape == (2, 0) and w.grad.shape == (3, 0) and b.grad.asnumpy().tolist() == [2.0, 2.0, 2.0]
    assert nd.FullyConnected(nd.zeros((0, 4)), nd.ones((3, 4)), num_hidden=3, no_bias=True).shape == (0, 3)


def test_float16_layer_and_instance_norm_compute_in_float32(mode):
    """Deviations past 256 square past float16's range: computed in float32 and rounded once,
    as MXNet's (its output max |y| about 3.9 and std [97.8, 98.56] here)."""
    v = (np.random.RandomState(0).randn(2, 2000) * 100 + 300).astype(np.float16)
    x = nd.array(v, dtype="float16")
    x.attach_grad()
    gamma, beta = nd.ones(2000, dtype="float16"), nd.zeros(2000, dtype="float16")
    with autograd.record():
        y, mean, std = nd.LayerNorm(x, gamma, beta, output_mean_var=True)
        loss = (y * nd.array(np.linspace(-1, 1, 2000), dtype="float16")).sum()
    loss.backward()
    v64 = v.astype(np.float64)
    want_std = np.sqrt(v64.var(axis=1) + 1e-5)
    np.testing.assert_allclose(std.asnumpy().ravel(), want_std, rtol=1e-3)
    np.testing.assert_allclose(y.asnumpy(), (v64 - v64.mean(1, keepdims=True)) / want_std[:, None], atol=1e-2)
    assert np.isfinite(x.grad.asnumpy()).all() and np.abs(x.grad.asnumpy()).max() > 0
    z = nd.InstanceNorm(nd.array(v.reshape(2, 1, 2000), dtype="float16"), gamma[:1], beta[:1])
    np.testing.assert_allclose(z.asnumpy().reshape(2, 2000), y.asnumpy(), atol=2e-2)


def test_composed_functions_take_name_and_out_and_refuse_other_keywords(mode):
    """As MXNet's generated functions: a misspelt keyword is an error, not ignored, and nothing
    is queued; ``out=`` takes the result (a list for several), ``name=`` is taken and unused."""
    x, ones, eye = nd.array([3.0, 1.0, 2.0]), nd.ones((2, 4)), nd.eye(2)
    queued = len(mode._queue)
    for call in (
        lambda: nd.topk(x, kk=2),
        lambda: nd.split(ones, 2, axiss=0),
        lambda: nd.zeros((2,), dtyp="int32"),
        lambda: nd.moments(x, axes=0, keepdim=True),
        lambda: nd.linalg_slogdet(eye, foo=1),
        lambda: nd.amp_cast(x, "float16", foo=1),
    ):
        with pytest.raises(TypeError, match="got an unexpected keyword argument"):
            call()
    assert len(mode._queue) == queued
    out = nd.zeros(3)
    assert nd.topk(x, k=3, ret_typ="value", out=out, name="t") is out
    assert out.asnumpy().tolist() == [3.0, 2.0, 1.0]
    a, b = nd.zeros(2), nd.zeros(2)
    got = nd.split(nd.array([[1.0, 2.0], [3.0, 4.0]]), 2, axis=1, squeeze_axis=True, out=[a, b])
    assert got[0] is a and a.asnumpy().tolist() == [1.0, 3.0] and b.asnumpy().tolist() == [2.0, 4.0]
    with pytest.raises(InvalidInput, match="a list of 2 NDArrays"):
        nd.moments(x, axes=0, out=nd.zeros(1))
    with pytest.raises(InvalidInput, match="stype 'row_sparse' is sparse storage"):  # (dense only: said, not ignored)
        nd.zeros((2,), stype="row_sparse")


def test_composed_functions_read_their_flags_as_the_ops_do():
    """A flag given as MXNet's string is read as MXNet reads it ("False" is false, where
    truthiness would take it for true; shapes and dtypes as MXNet 1.9.1 gives them); any other
    string is refused, before anything is queued."""
    x = nd.ones((2, 2))
    calls = {
        "moments": lambda flag: nd.moments(x, axes=(0,), keepdims=flag),
        "split": lambda flag: nd.split(x, 2, axis=1, squeeze_axis=flag),
        "split_v2": lambda flag: nd.split_v2(x, 2, axis=1, squeeze_axis=flag),
        "amp_multicast": lambda flag: nd.amp_multicast(x, x.astype("float16"), num_outputs=2, cast_narrow=flag),
    }
    mxnets = {  # (shapes, dtypes) of the outputs with the flag "False", from MXNet 1.9.1
        "moments": [((2,), "float32")] * 2,
        "split": [((2, 1), "float32")] * 2,
        "split_v2": [((2, 1), "float32")] * 2,
        "amp_multicast": [((2, 2), "float32")] * 2,
    }
    for name, call in calls.items():
        assert [(p.shape, np.dtype(p.dtype).name) for p in call("False")] == mxnets[name], name
        with pytest.raises(InvalidInput, match="expected a boolean"):
            call("nope")
    assert [p.shape for p in x.split_v2(2, axis=1, squeeze_axis=1)] == [(2,), (2,)]
    with pytest.raises(InvalidInput, match=r"Pooling takes 1 inputs \(data\), got 0"):
        nd.Pooling(kernel=(2, 2))


def test_batch_norm_takes_mxnets_calibration_range_and_does_not_read_it():
    x, g, b, mm, mv = nd.ones((2, 3)), nd.ones(3), nd.zeros(3), nd.zeros(3), nd.ones(3)
    plain = nd.BatchNorm(x, g, b, mm, mv).asnumpy()
    calibrated = nd.BatchNorm(x, g, b, mm, mv, min_calib_range=-1.0, max_calib_range=1.0).asnumpy()
    np.testing.assert_array_equal(calibrated, plain)


def test_mxnets_argument_forms_a_review_found_refused(mode):
    """Calls MXNet 1.9.1 takes (its values, from MXNet): attributes by position in its order,
    the attributes it declares for its GPU or sparse paths, its names for power's inputs, a
    context by name, bool fill values, and the numpy and storage helpers."""
    x = nd.ones((1, 1, 5, 5))
    assert nd.Pooling(x, (2, 2), "max", False, False, "valid", (2, 2)).shape == (1, 1, 2, 2)
    conv = nd.Convolution(x, nd.ones((2, 1, 3, 3)), nd.zeros(2), (3, 3), (2, 2), (1, 1), (1, 1), 2)
    assert conv.shape == (1, 2, 3, 3)  # (kernel, stride, dilate, pad, num_filter)
    assert nd.Dropout(x, p=0.5, cudnn_off=True).shape == x.shape
    a = nd.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    assert nd.dot(a, a.T, forward_stype="default").asnumpy().tolist() == [[14.0, 32.0], [32.0, 77.0]]
    assert nd.batch_dot(a.reshape((1, 2, 3)), a.reshape((1, 3, 2)), forward_stype=None).shape == (1, 2, 2)
    with pytest.raises(InvalidInput, match="forward_stype 'csr' is sparse storage"):
        nd.dot(a, a.T, forward_stype="csr")
    np.testing.assert_allclose(
        nd.log_softmax(a, use_length=False).asnumpy()[0], [-2.407606, -1.407606, -0.407606], rtol=1e-6
    )
    assert nd.softmin(a, use_length=False).shape == (2, 3)
    with pytest.raises(InvalidInput, match="use_length takes 2 inputs"):
        nd.log_softmax(a, use_length=True)
    got = nd.broadcast_like(nd.array([[1.0, 2.0]]), nd.ones((3, 4)), lhs_axes=(0,), rhs_axes=(-1,))
    assert got.asnumpy().tolist() == [[1.0, 2.0]] * 4
    assert nd.reshape_like(
        nd.ones((30, 7)), nd.ones((15, 2, 4)), lhs_begin=0, lhs_end=1, rhs_begin=0, rhs_end=2
    ).shape == (
        15,
        2,
        7,
    )
    assert nd.power(base=a, exp=2).asnumpy().tolist() == [[1.0, 4.0, 9.0], [16.0, 25.0, 36.0]]
    assert nd.power(2, 3) == 8 and nd.power(2, nd.array([1.0, 3.0])).asnumpy().tolist() == [2.0, 8.0]
    assert nd.full((2,), True).asnumpy().tolist() == [1.0, 1.0]
    assert nd.zeros(2, ctx="cpu(0)").context == gradserve.cpu(0) and nd.ones(1, ctx="cpu").shape == (1,)
    with pytest.raises(InvalidInput, match="not available"):
        nd.zeros(2, ctx="gpu(0)")
    assert nd.empty((2,), stype="default").shape == (2,)
    with pytest.raises(InvalidInput, match="stype 'csr' is sparse storage"):
        nd.zeros((2,), stype="csr")
    assert isinstance(a, nd.ndarray.NDArray)
    v = nd.arange(4)
    assert v.T is v and nd.array(1.0).T.shape == ()  # (fewer than 2 axes: itself, as MXNet's)
    b = nd.from_numpy(np.arange(3, dtype=np.int32))
    assert b.dtype == np.int32 and b.asnumpy().tolist() == [0, 1, 2]
    t = a.tostype("default")
    assert t.asnumpy().tolist() == a.asnumpy().tolist() and t is not a
    with pytest.raises(InvalidInput, match="sparse storage"):
        a.tostype("row_sparse")


def test_sign_of_nan_is_0_and_a_negative_temperature_is_taken_as_mxnets(mode):
    nan = float("nan")
    assert nd.sign(nd.array([nan, -2.0, 0.0, 3.0])).asnumpy().tolist() == [0.0, -1.0, 0.0, 1.0]
    assert nd.sign(nd.array([nan], dtype="float16")).asnumpy().tolist() == [0.0]
    assert nd.contrib.sign_ste(nd.array([nan, -2.0])).asnumpy().tolist() == [0.0, -1.0]
    got = nd.softmax(nd.array([1.0, 2.0, 3.0]), temperature=-1.0).asnumpy()
    np.testing.assert_allclose(got, [0.66524094, 0.24472848, 0.09003057], rtol=1e-6)  # (MXNet's: softmin's)
    with pytest.raises(InvalidInput, match="temperature must not be 0"):
        nd.softmax(nd.array([1.0, 2.0]), temperature=0.0)
