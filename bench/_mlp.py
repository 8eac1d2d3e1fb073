"""The MLP of the benchmarks (784-256-256-10, batch 128, softmax cross-entropy, SGD),
written four ways: gradserve's nd (in-process or remote), hand-written numpy, PyTorch."""

from __future__ import annotations

from typing import Any

import numpy as np

SIZES = (784, 256, 256, 10)
BATCH = 128
N = 4096
LR = 0.1


def data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic, learnable: labels from a random linear map of the features."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, SIZES[0]), dtype=np.float32)
    w = rng.standard_normal((SIZES[0], SIZES[-1]), dtype=np.float32)
    y = (x @ w).argmax(axis=1).astype(np.float32)
    return x, y


def init(seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    params = []
    for a, b in zip(SIZES[:-1], SIZES[1:]):
        params.append(rng.standard_normal((a, b), dtype=np.float32) * np.float32(np.sqrt(2.0 / a)))
        params.append(np.zeros(b, np.float32))
    return params


class Gradserve:
    """The step in gradserve's nd, as a user writes it (MXNet style). ``fused``: the
    update as MXNet's optimizers make it, ``nd.sgd_update`` (one pass, in place).
    ``hybrid``: the step after the minibatch is taken, hybridized (``gradserve.hybridize``:
    traced once, then one instruction a step). ``fc``: the layers as ``nd.FullyConnected``
    (Gluon's ``Dense``), their weights stored transposed, (out, in)."""

    def __init__(
        self, x: np.ndarray, y: np.ndarray, fused: bool = False, hybrid: bool = False, fc: bool = False
    ) -> None:
        import gradserve
        from gradserve import nd

        self.nd = nd
        self.X, self.Y = nd.array(x), nd.array(y)  # uploaded once; minibatches are slices on the server
        self.fc = fc
        self.params = [nd.array(p.T.copy() if fc and p.ndim == 2 else p) for p in init()]
        for p in self.params:
            p.attach_grad()
        self.i = 0
        self.fused = fused
        self.train = gradserve.hybridize(self._train) if hybrid else self._train

    def step(self) -> Any:
        i = self.i
        self.i = (i + BATCH) % N
        return self.train(self.X[i : i + BATCH], self.Y[i : i + BATCH])

    def _train(self, X: Any, y: Any) -> Any:
        from gradserve import autograd

        nd = self.nd
        W1, b1, W2, b2, W3, b3 = self.params
        with autograd.record():
            if self.fc:
                h1 = nd.relu(nd.FullyConnected(X, W1, b1, num_hidden=SIZES[1]))
                h2 = nd.relu(nd.FullyConnected(h1, W2, b2, num_hidden=SIZES[2]))
                z = nd.FullyConnected(h2, W3, b3, num_hidden=SIZES[3])
            else:
                h1 = nd.relu(nd.dot(X, W1) + b1)
                h2 = nd.relu(nd.dot(h1, W2) + b2)
                z = nd.dot(h2, W3) + b3
            loss = nd.softmax_cross_entropy(z, y) / BATCH
        loss.backward()
        if self.fused:
            for p in self.params:
                nd.sgd_update(p, p.grad, lr=LR, out=p)
        else:
            for p in self.params:
                p -= LR * p.grad
        return loss


class Numpy:
    """The same step by hand in numpy, written with care (in-place where it is natural)."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y = x, y.astype(np.int64)
        self.params = init()
        self.i = 0
        self.rows = np.arange(BATCH)

    def step(self) -> float:
        i = self.i
        self.i = (i + BATCH) % N
        X, y = self.x[i : i + BATCH], self.y[i : i + BATCH]
        W1, b1, W2, b2, W3, b3 = self.params
        h1 = X @ W1
        h1 += b1
        np.maximum(h1, 0, out=h1)
        h2 = h1 @ W2
        h2 += b2
        np.maximum(h2, 0, out=h2)
        z = h2 @ W3
        z += b3
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        s = e.sum(axis=1, keepdims=True)
        loss = float((np.log(s[:, 0]) - z[self.rows, y]).mean())
        dz = e / s
        dz[self.rows, y] -= 1
        dz /= BATCH
        dW3, db3 = h2.T @ dz, dz.sum(axis=0)
        dh2 = dz @ W3.T
        dh2 *= h2 > 0
        dW2, db2 = h1.T @ dh2, dh2.sum(axis=0)
        dh1 = dh2 @ W2.T
        dh1 *= h1 > 0
        dW1, db1 = X.T @ dh1, dh1.sum(axis=0)
        for p, g in zip(self.params, (dW1, db1, dW2, db2, dW3, db3)):
            p -= LR * g
        return loss


class Torch:
    """The same step in PyTorch eager (CPU, one thread)."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        import torch

        torch.set_num_threads(1)
        self.torch = torch
        self.x, self.y = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
        self.params = [torch.from_numpy(p.copy()).requires_grad_() for p in init()]
        self.i = 0

    def step(self) -> Any:
        torch = self.torch
        i = self.i
        self.i = (i + BATCH) % N
        X, y = self.x[i : i + BATCH], self.y[i : i + BATCH]
        W1, b1, W2, b2, W3, b3 = self.params
        h1 = torch.relu(X @ W1 + b1)
        h2 = torch.relu(h1 @ W2 + b2)
        loss = torch.nn.functional.cross_entropy(h2 @ W3 + b3, y)
        loss.backward()
        with torch.no_grad():
            for p in self.params:
                p -= LR * p.grad
                p.grad = None
        return loss
