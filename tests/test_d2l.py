"""Dive into Deep Learning's from-scratch chapters, written as the book writes
them (only the import changed), on small synthetic data, in both modes: each
must learn (its loss falls, its accuracy rises)."""

from __future__ import annotations

import numpy as np

from gradserve import autograd, nd


def sgd(params, lr, batch_size):
    for param in params:
        param[:] = param - lr * param.grad / batch_size


def data_iter(batch_size, features, labels):
    num_examples = len(features)
    indices = list(range(num_examples))
    for i in range(0, num_examples, batch_size):
        j = nd.array(indices[i : min(i + batch_size, num_examples)])
        yield features.take(j), labels.take(j)


def blobs(n=256, classes=3, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=3.0, size=(classes, dim))
    y = rng.integers(0, classes, n)
    x = centers[y] + rng.normal(size=(n, dim))
    return nd.array(x), nd.array(y)


def accuracy(y_hat, y):
    return (y_hat.argmax(axis=1) == y.astype("float32")).mean().asscalar()


def test_linear_regression_from_scratch(mode):
    num_inputs, num_examples = 2, 1000
    true_w, true_b = [2, -3.4], 4.2
    features = nd.random.normal(scale=1, shape=(num_examples, num_inputs))
    labels = true_w[0] * features[:, 0] + true_w[1] * features[:, 1] + true_b
    labels += nd.random.normal(scale=0.01, shape=labels.shape)
    w = nd.random.normal(scale=0.01, shape=(num_inputs, 1))
    b = nd.zeros(shape=(1,))
    w.attach_grad()
    b.attach_grad()

    def linreg(X, w, b):
        return nd.dot(X, w) + b

    def squared_loss(y_hat, y):
        return (y_hat - y.reshape(y_hat.shape)) ** 2 / 2

    losses = []
    for _epoch in range(3):
        for X, y in data_iter(10, features, labels):
            with autograd.record():
                lo = squared_loss(linreg(X, w, b), y)
            lo.backward()
            sgd([w, b], 0.03, 10)
        losses.append(squared_loss(linreg(features, w, b), labels).mean().asscalar())
    assert losses[-1] < 1e-3
    np.testing.assert_allclose(w.asnumpy().ravel(), true_w, atol=0.02)


def test_softmax_regression_from_scratch(mode):
    features, labels = blobs()
    num_inputs, num_outputs = 8, 3
    W = nd.random.normal(scale=0.01, shape=(num_inputs, num_outputs))
    b = nd.zeros(num_outputs)
    W.attach_grad()
    b.attach_grad()

    def softmax(X):
        X_exp = X.exp()
        partition = X_exp.sum(axis=1, keepdims=True)
        return X_exp / partition

    def net(X):
        return softmax(nd.dot(X.reshape((-1, num_inputs)), W) + b)

    def cross_entropy(y_hat, y):
        return -nd.pick(y_hat, y).log()

    first = cross_entropy(net(features), labels).mean().asscalar()
    for _epoch in range(5):
        for X, y in data_iter(32, features, labels):
            with autograd.record():
                lo = cross_entropy(net(X), y)
            lo.backward()
            sgd([W, b], 0.1, 32)
    last = cross_entropy(net(features), labels).mean().asscalar()
    assert last < first * 0.3
    assert accuracy(net(features), labels) > 0.9


def test_mlp_with_dropout_and_weight_decay(mode):
    features, labels = blobs(classes=4, dim=10, seed=1)
    num_inputs, num_hiddens, num_outputs = 10, 32, 4
    W1 = nd.random.normal(scale=0.1, shape=(num_inputs, num_hiddens))
    b1 = nd.zeros(num_hiddens)
    W2 = nd.random.normal(scale=0.1, shape=(num_hiddens, num_outputs))
    b2 = nd.zeros(num_outputs)
    params = [W1, b1, W2, b2]
    for p in params:
        p.attach_grad()

    def relu(X):
        return nd.maximum(X, 0)

    def dropout(X, drop_prob):
        keep_prob = 1 - drop_prob
        if keep_prob == 0:
            return X.zeros_like()
        mask = nd.random.uniform(0, 1, X.shape) < keep_prob
        return mask * X / keep_prob

    def net(X):
        H1 = relu(nd.dot(X.reshape((-1, num_inputs)), W1) + b1)
        if autograd.is_training():
            H1 = dropout(H1, 0.2)
        return nd.dot(H1, W2) + b2

    def l2_penalty(w):
        return (w**2).sum() / 2

    def loss(y_hat, y):
        return -nd.pick(nd.log_softmax(y_hat), y)

    first = loss(net(features), labels).mean().asscalar()
    for _epoch in range(6):
        for X, y in data_iter(32, features, labels):
            with autograd.record():
                lo = loss(net(X), y) + 1e-3 * l2_penalty(W1)
            lo.backward()
            sgd(params, 0.2, 32)
    last = loss(net(features), labels).mean().asscalar()
    assert last < first * 0.3
    assert accuracy(net(features), labels) > 0.9


def corr2d(X, K):
    h, w = K.shape
    Y = nd.zeros((X.shape[0] - h + 1, X.shape[1] - w + 1))
    for i in range(Y.shape[0]):
        for j in range(Y.shape[1]):
            Y[i, j] = (X[i : i + h, j : j + w] * K).sum()
    return Y


def test_corr2d_and_learning_an_edge_kernel(mode):
    X = nd.array([[0, 1, 2], [3, 4, 5], [6, 7, 8]])
    K = nd.array([[0, 1], [2, 3]])
    assert corr2d(X, K).asnumpy().tolist() == [[19, 25], [37, 43]]
    X = nd.ones((6, 8))
    X[:, 2:6] = 0
    Y = corr2d(X, nd.array([[1, -1]]))
    X, Y = X.reshape((1, 1, 6, 8)), Y.reshape((1, 1, 6, 7))
    weight = nd.random.normal(scale=0.1, shape=(1, 1, 1, 2))
    weight.attach_grad()
    for _ in range(20):
        with autograd.record():
            Y_hat = nd.Convolution(X, weight, kernel=(1, 2), num_filter=1, no_bias=True)
            lo = (Y_hat - Y) ** 2
        lo.backward()
        weight[:] = weight - 3e-2 * weight.grad
    np.testing.assert_allclose(weight.asnumpy().ravel(), [1, -1], atol=0.05)


def test_lenet_style_cnn_learns(mode):
    rng = np.random.default_rng(2)
    n = 64
    images = rng.normal(scale=0.3, size=(n, 1, 14, 14))
    labels = rng.integers(0, 2, n)
    for i, c in enumerate(labels):  # class 0: a horizontal bar, class 1: a vertical one
        k = rng.integers(2, 12)
        if c == 0:
            images[i, 0, k, :] += 2
        else:
            images[i, 0, :, k] += 2
    X, y = nd.array(images), nd.array(labels)
    W1, b1 = nd.random.normal(scale=0.3, shape=(4, 1, 3, 3)), nd.zeros(4)
    W2, b2 = nd.random.normal(scale=0.3, shape=(8, 4, 3, 3)), nd.zeros(8)
    W3, b3 = nd.random.normal(scale=0.1, shape=(2, 8 * 2 * 2)), nd.zeros(2)
    params = [W1, b1, W2, b2, W3, b3]
    for p in params:
        p.attach_grad()

    def lenet(X):
        h1 = nd.Pooling(
            nd.relu(nd.Convolution(X, W1, b1, kernel=(3, 3), num_filter=4)),
            pool_type="max",
            kernel=(2, 2),
            stride=(2, 2),
        )
        h2 = nd.Pooling(
            nd.relu(nd.Convolution(h1, W2, b2, kernel=(3, 3), num_filter=8)),
            pool_type="avg",
            kernel=(2, 2),
            stride=(2, 2),
        )
        return nd.FullyConnected(h2.flatten(), W3, b3, num_hidden=2)

    first = nd.softmax_cross_entropy(lenet(X), y).asscalar() / n
    for _epoch in range(8):
        for Xb, yb in data_iter(16, X, y):
            with autograd.record():
                lo = nd.softmax_cross_entropy(lenet(Xb), yb)
            lo.backward()
            sgd(params, 0.1, 16)
    last = nd.softmax_cross_entropy(lenet(X), y).asscalar() / n
    assert last < first * 0.5
    assert accuracy(lenet(X), y) > 0.9


def test_batch_norm_uses_batch_statistics_only_in_training(mode):
    x = nd.random.normal(loc=5, scale=2, shape=(64, 3, 4, 4))
    gamma, beta = nd.ones(3), nd.zeros(3)
    mm, mv = nd.zeros(3), nd.ones(3)
    gamma.attach_grad()
    with autograd.record():
        y = nd.BatchNorm(x, gamma, beta, mm, mv, fix_gamma=False)
    out = y.asnumpy()
    assert abs(out.mean()) < 1e-3 and abs(out.std() - 1) < 1e-2
    assert mm.asnumpy().tolist() == [0, 0, 0]  # as MXNet: the backward pass updates them, not the forward
    y.backward()
    assert np.all(mm.asnumpy() > 0.3)  # moving statistics were updated in place
    pred = nd.BatchNorm(x, gamma, beta, mm, mv).asnumpy()  # predict mode: moving statistics
    assert pred.mean() > 1


def bilinear_kernel(in_channels, out_channels, kernel_size):
    factor = (kernel_size + 1) // 2
    if kernel_size % 2 == 1:
        center = factor - 1
    else:
        center = factor - 0.5
    og = np.ogrid[:kernel_size, :kernel_size]
    filt = (1 - abs(og[0] - center) / factor) * (1 - abs(og[1] - center) / factor)
    weight = np.zeros((in_channels, out_channels, kernel_size, kernel_size), dtype="float32")
    weight[range(in_channels), range(out_channels), :, :] = filt
    return nd.array(weight)


def test_fcn_upsamples_by_a_bilinear_transposed_convolution(mode):
    """d2l's fully convolutional network doubles an image's size with a transposed convolution
    (Gluon's Conv2DTranspose calls nd.Deconvolution) initialised with a bilinear kernel: the
    values MXNet 1.9.1 gives; then a kernel learnt from zeros towards its output."""
    X = nd.arange(18).reshape((1, 2, 3, 3))
    W = bilinear_kernel(2, 2, 4)
    Y = nd.Deconvolution(X, W, kernel=(4, 4), stride=(2, 2), pad=(1, 1), num_filter=2)
    assert Y.shape == (1, 2, 6, 6) and abs(Y.sum().asscalar() - 514.25) < 1e-3
    np.testing.assert_allclose(Y[0, 1, 0].asnumpy(), [5.0625, 6.9375, 7.3125, 7.6875, 8.0625, 6.1875])
    np.testing.assert_allclose(Y[0, 1, 5].asnumpy(), [8.4375, 11.4375, 11.8125, 12.1875, 12.5625, 9.5625])
    weight = nd.zeros(W.shape)
    weight.attach_grad()
    losses = []
    for _ in range(100):
        with autograd.record():
            Y_hat = nd.Deconvolution(X, weight, kernel=(4, 4), stride=(2, 2), pad=(1, 1), num_filter=2)
            lo = ((Y_hat - Y) ** 2).mean()
        lo.backward()
        weight[:] = weight - 1e-2 * weight.grad
        losses.append(lo.asscalar())
    assert losses[-1] < 1e-2 * losses[0]


def test_pad_and_its_capitalised_name_through_the_client(mode):
    """nd.pad and nd.Pad are one op (as in MXNet), with gradients."""
    x = nd.arange(6).reshape((1, 1, 2, 3))
    x.attach_grad()
    with autograd.record():
        y = nd.pad(x, mode="edge", pad_width=(0, 0, 0, 0, 1, 0, 0, 2))
    y.backward()
    assert y.shape == (1, 1, 3, 5) and y[0, 0, 0].asnumpy().tolist() == [0, 1, 2, 2, 2]
    assert x.grad[0, 0].asnumpy().tolist() == [[2, 2, 6], [1, 1, 3]]
    z = nd.Pad(x, mode="constant", pad_width=(0, 0, 0, 0, 0, 0, 1, 1), constant_value=-1)
    assert z[0, 0].asnumpy().tolist() == [[-1, 0, 1, 2, -1], [-1, 3, 4, 5, -1]]
