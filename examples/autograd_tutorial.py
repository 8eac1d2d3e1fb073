"""The autograd tutorial, unchanged but for its import line.

Runs in-process with no server, or against a server when GRADSERVE_URL is set:

    python examples/autograd_tutorial.py
    GRADSERVE_URL=http://127.0.0.1:8000 python examples/autograd_tutorial.py
"""

from gradserve import autograd, nd

# 1.1 Import autograd and create a variable
x = nd.arange(4).reshape((4, 1))
print(x)

# 1.2 Attach gradient to x
x.attach_grad()
print(repr(x.grad))

# 1.3 Forward
with autograd.record():
    y = 2 * nd.dot(x.T, x)
print(repr(y))

# 1.4 Backward
y.backward()

# 1.5 Get the gradient
print((x.grad - 4 * x).norm().asscalar() == 0)
print(x.grad)

# 1.6 Backward on non-scalar
with autograd.record():
    y = 2 * x * x
    print(y.shape)
    y.backward()
    print(x.grad)

# 1.7 Training mode and prediction mode
print(autograd.is_training())
with autograd.record():
    print(autograd.is_training())


# 1.8 Computing the gradient of Python control flow
def f(a):
    b = a * 2
    while b.norm().asscalar() < 1000:
        b = b * 2
    if b.sum().asscalar() > 0:
        c = b
    else:
        c = 100 * b
    return c


# 1.9 Function behaviors depends on inputs
a = nd.random.normal(shape=1)
a.attach_grad()
with autograd.record():
    d = f(a)
d.backward()

# 1.10 Verify the results
print(a.grad == (d / a))

# 1.11 Head gradients and the chain rule
with autograd.record():
    y = x * 2
    y.attach_grad()
    with autograd.record():
        z = y * x
        z.backward()  # y.grad = dz/dy
        y.backward(y.grad)
        print(repr(x.grad == 2 * x))  # x.grad = dz/dx
