from gradserve import nd  # recorded against: from mxnet import autograd, nd

x = nd.array([[3, 1, 2], [0, 5, 4]])
print(repr(nd.topk(x, k=2)), repr(nd.topk(x, k=2, ret_typ="value")), repr(nd.topk(x, axis=0, k=1, ret_typ="mask")))
print(repr(nd.sort(x)), repr(nd.argsort(x, is_ascend=False)))
print(repr(nd.concat(x, x, dim=0)), nd.stack(x, x).shape, [p.shape for p in nd.split(x, 3, axis=1)])
print(repr(x.argmax(axis=1)), repr(x.argmin()), repr(nd.one_hot(nd.array([0, 2]), 3)))
print(repr(nd.take(x, nd.array([1, 0, 1]))), repr(nd.pick(x, nd.array([2, 1]))))
print(repr(x[nd.array([1, 0])]), repr(x[[1, 0], [2, 1]]))
print(repr(nd.clip(x, 1, 3)), repr(nd.where(x > 2, x, nd.zeros_like(x))))
print(repr(nd.tile(nd.array([1, 2]), reps=(2, 2))), repr(nd.repeat(nd.array([1, 2]), repeats=2)))
print(
    repr(nd.flip(x, axis=1)),
    repr(nd.squeeze(nd.ones((1, 3, 1))).shape),
    nd.expand_dims(x, 0).shape,
    nd.swapaxes(nd.ones((2, 3, 4)), 0, 2).shape,
)
print(repr(nd.slice_axis(x, axis=1, begin=1, end=3)), repr(nd.slice(x, begin=(0, 1), end=(2, 3))))
print(repr(nd.softmax(nd.array([[1, 2, 3]]))), repr(nd.log_softmax(nd.array([[1, 2, 3]]))))
print(repr(nd.softmax_cross_entropy(nd.array([[1, 2, 3], [1, 1, 1]]), nd.array([2, 0]))))
print(repr(nd.round(nd.array([-2.5, -1.5, 0.5, 1.5, 2.5]))), repr(nd.sign(nd.array([-2, 0, 3]))))
print(repr(nd.linspace(0, 1, 5)), repr(nd.eye(2, 3, 1)))
print(repr(nd.prod(x, axis=1)), repr(nd.norm(x, ord=1, axis=1)))
print(
    repr(nd.LeakyReLU(nd.array([-1.0, 2.0]), slope=0.1)),
    repr(nd.Activation(nd.array([-1.0, 2.0]), act_type="softrelu")),
)
print(
    repr(nd.reshape(nd.ones((2, 3, 4)), shape=(-4, 1, 2, -2))).split("<")[1],
    nd.ones((2, 3, 4)).reshape((0, -3)).shape,
    nd.ones((2, 3, 4)).reshape((-1, 0), reverse=True).shape if False else "",
)
print(
    repr(nd.broadcast_like(nd.ones((1, 3)), nd.ones((2, 3))).shape),
    repr(nd.batch_dot(nd.ones((2, 2, 3)), nd.ones((2, 3, 4))).shape),
)
print(repr(nd.SequenceMask(nd.ones((3, 2, 1)), nd.array([1, 3]), use_sequence_length=True).reshape((3, 2))))
v = nd.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5, -0.4, 0.6])
print(repr(nd.rint(v)), repr(nd.round(v)))
print(repr(nd.array([0.5, 0.2, 0.5, 0.1]).topk(k=1)), repr(nd.array([1, 3, 3, 1, 2]).argsort(is_ascend=False)))
print(repr(nd.topk(nd.array([[1, 3], [3, 3]]), k=2, axis=0)), repr(nd.sort(nd.array([1, 3, 3, 1]), is_ascend=False)))
n = nd.array([[1, -2, 3], [-4, 5, -6]])
print(repr(n.norm(1)), repr(nd.norm(n, 2, 1)), repr(n.norm(ord=1, axis=0, keepdims=True)))
print(repr(nd.where(nd.array([1, 0]), nd.array([[1, 2], [3, 4]]), nd.array([[5, 6], [7, 8]]))))
print(repr(nd.add(1, n)), repr(nd.subtract(1, n)), repr(nd.greater(0, n)), repr(nd.maximum(0, n)))
print(repr(nd.power(2, nd.array([1, 2]))), repr(nd.lesser_equal(2, nd.array([1, 2, 3]))))
z = nd.zeros((2, 2))
print(repr(nd.dot(n, n.T, out=z)), repr(z), repr(n.sum(axis=1, out=nd.zeros((2,)))))
print(repr(nd.array([1048576.0])), repr(nd.array([1024.0, 3.0], dtype="float16")), repr(nd.array([1e7, 0.5])))
m = nd.array([[1, 3, 2], [4, 0, 5]], dtype="int32")
print(repr(m.argmax(axis=1)), repr(m.argmin()), repr(nd.argmax(m.astype("float64"), axis=0)))
p, q = nd.array([[-7, 7, 5.5, -5.5], [4, -4, 0, 1]]), nd.array([2, -2, 3, -3])
print(repr(p % q), repr(nd.broadcast_mod(p, q)), repr(nd.modulo(p, 2)), repr(nd.modulo(3, q)), repr(-4 % q))
r = m.copy()
r %= nd.array([[2, -2, 3], [-3, 2, 0]], dtype="int32")
print(repr(r), repr(m % 2.5), repr(7 % m), repr(nd.array([1.5, 2.5], dtype="float16") % 0.7))
print(repr(nd.topk(x, axis=None, k=2)), repr(nd.topk(x, axis=None, k=2, ret_typ="mask")), repr(x.sort(axis=None)))
print(repr(nd.argsort(x, axis=None, is_ascend=False, dtype="int32")), repr(nd.topk(x, axis=None, k=0, ret_typ="value")))
print(nd.topk(x, axis=None, k=2, ret_typ="both"), repr(nd.topk(x, k=-1)), nd.sort(nd.ones((2, 3, 4)), axis=None).shape)
img = nd.arange(48).reshape((1, 2, 4, 6))
win = {"kernel": (2, 2), "stride": (1, 2), "dilate": (2, 1), "pad": (1, 0)}
cols = nd.im2col(img, **win)
print(cols.shape, repr(cols[0, :, :4]), repr(nd.col2im(cols, output_size=(4, 6), **win)))
w = nd.arange(8).reshape((2, 1, 2, 2))
conv = {"kernel": (2, 2), "stride": (1, 2), "dilate": (2, 3), "pad": (1, 1), "num_filter": 2, "num_group": 2}
print(repr(nd.Convolution(img, w, nd.array([0.5, -1]), **conv)))
seq = nd.arange(24).reshape((1, 3, 8))
conv1d = {"kernel": (2,), "stride": (2,), "dilate": (2,), "num_filter": 2}
print(repr(nd.Convolution(seq, nd.arange(12).reshape((2, 3, 2)), nd.array([1, -1]), **conv1d)))
avg1d = {"kernel": (3,), "stride": (2,), "pad": (1,), "pool_type": "avg", "count_include_pad": False}
print(repr(nd.Pooling(seq, **avg1d)), repr(nd.Pooling(seq, global_pool=True)))
up = {"kernel": (2,), "stride": (2,), "dilate": (3,), "pad": (1,), "adj": (1,), "num_filter": 1}
print(repr(nd.Deconvolution(nd.arange(6).reshape((1, 2, 3)), nd.arange(4).reshape((2, 1, 2)), **up)))
