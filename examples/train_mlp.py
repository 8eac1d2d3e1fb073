"""A training loop whose step is hybridized: one instruction a step, one request when the loss is read.

Runs in-process with no server, or against a server when GRADSERVE_URL is set:

    python examples/train_mlp.py [steps]
    GRADSERVE_URL=http://127.0.0.1:8000 python examples/train_mlp.py
"""

import sys
import time

import numpy as np

import gradserve
from gradserve import autograd, nd

steps = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
batch, lr = 64, 0.1

# synthetic data, uploaded once: minibatches are slices taken where the arrays live
rng = np.random.default_rng(0)
features = rng.standard_normal((4096, 20)).astype("float32")
labels = (features @ rng.standard_normal((20, 5))).argmax(axis=1).astype("float32")
X, Y = nd.array(features), nd.array(labels)

params = [nd.random.normal(scale=0.1, shape=s) for s in [(20, 64), (64,), (64, 5), (5,)]]
for p in params:
    p.attach_grad()


@gradserve.hybridize
def train_step(x, y):
    W1, b1, W2, b2 = params
    with autograd.record():
        loss = nd.softmax_cross_entropy(nd.dot(nd.relu(nd.dot(x, W1) + b1), W2) + b2, y) / batch
    loss.backward()
    for p in params:
        p -= lr * p.grad  # in place: the traced step updates the same arrays every call
    return loss


start = time.perf_counter()
for step in range(steps):
    i = step * batch % len(features)
    loss = train_step(X[i : i + batch], Y[i : i + batch])
    if step % 500 == 0 or step == steps - 1:
        print(f"step {step:5d}  loss {loss.asscalar():.4f}")  # the only requests of the loop
elapsed = time.perf_counter() - start
predicted = nd.dot(nd.relu(nd.dot(X, params[0]) + params[1]), params[2]) + params[3]
accuracy = (predicted.argmax(axis=1) == Y).mean().asscalar()
print(f"{steps / elapsed:.0f} steps/s, training accuracy {accuracy:.3f}, traced {train_step.traces} time(s)")
