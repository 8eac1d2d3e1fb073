"""The seed tutorial, cell by cell, in-process and over HTTP, against the text
MXNet 1.9.1 prints for the same cells; then the example script end to end
against a server started by ``gradserve serve``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

import gradserve
from gradserve import autograd, nd

from .conftest import free_port

ROOT = Path(__file__).resolve().parents[1]

# What MXNet 1.9.1 prints for each cell (recorded with the reference install).
MXNET = {
    "1.1": "\n[[0.]\n [1.]\n [2.]\n [3.]]\n<NDArray 4x1 @cpu(0)>\n",
    "1.2": "\n[[0.]\n [0.]\n [0.]\n [0.]]\n<NDArray 4x1 @cpu(0)>\n",
    "1.3": "\n[[28.]]\n<NDArray 1x1 @cpu(0)>\n",
    "1.5": "True\n\n[[ 0.]\n [ 4.]\n [ 8.]\n [12.]]\n<NDArray 4x1 @cpu(0)>\n",
    "1.6": "(4, 1)\n\n[[ 0.]\n [ 4.]\n [ 8.]\n [12.]]\n<NDArray 4x1 @cpu(0)>\n",
    "1.7": "False\nTrue\n",
    "1.10": "\n[1.]\n<NDArray 1 @cpu(0)>\n",
    "1.11": "\n[[1.]\n [1.]\n [1.]\n [1.]]\n<NDArray 4x1 @cpu(0)>\n",
}


def f(a):
    b = a * 2
    while b.norm().asscalar() < 1000:
        b = b * 2
    if b.sum().asscalar() > 0:
        c = b
    else:
        c = 100 * b
    return c


def _x():
    x = nd.arange(4).reshape((4, 1))
    x.attach_grad()
    return x


def test_1_1_create(mode, capsys):
    x = nd.arange(4).reshape((4, 1))
    print(x)
    assert capsys.readouterr().out == MXNET["1.1"]
    assert x.shape == (4, 1) and x.dtype.__name__ == "float32"


def test_1_2_attach_grad(mode, capsys):
    x = _x()
    print(repr(x.grad))
    assert capsys.readouterr().out == MXNET["1.2"]


def test_1_3_forward(mode, capsys):
    x = _x()
    with autograd.record():
        y = 2 * nd.dot(x.T, x)
    print(repr(y))
    assert capsys.readouterr().out == MXNET["1.3"]


def test_1_4_and_1_5_backward_and_gradient(mode, capsys):
    x = _x()
    with autograd.record():
        y = 2 * nd.dot(x.T, x)
    y.backward()
    print((x.grad - 4 * x).norm().asscalar() == 0)
    print(x.grad)
    assert capsys.readouterr().out == MXNET["1.5"]


def test_1_6_backward_on_non_scalar(mode, capsys):
    x = _x()
    with autograd.record():
        y = 2 * x * x
        print(y.shape)
        y.backward()
        print(x.grad)
    assert capsys.readouterr().out == MXNET["1.6"]


def test_1_7_training_mode(mode, capsys):
    print(autograd.is_training())
    with autograd.record():
        print(autograd.is_training())
    assert capsys.readouterr().out == MXNET["1.7"]
    assert not autograd.is_training() and not autograd.is_recording()


def test_1_8_to_1_10_control_flow(mode, capsys):
    a = nd.random.normal(shape=1)
    a.attach_grad()
    with autograd.record():
        d = f(a)
    d.backward()
    print(a.grad == (d / a))
    assert capsys.readouterr().out == MXNET["1.10"]


@pytest.mark.parametrize("value", [0.3, -0.7, 1e-3, -5.0])
def test_control_flow_gradient_is_the_piecewise_slope(mode, value):
    a = nd.array([value])
    a.attach_grad()
    with autograd.record():
        d = f(a)
    d.backward()
    g = a.grad.asscalar()
    k = 2.0
    while abs(value) * k < 1000:
        k *= 2
    assert g == (k if value > 0 else 100 * k)


def test_1_11_head_gradients(mode, capsys):
    x = _x()
    with autograd.record():
        y = x * 2
        y.attach_grad()
        with autograd.record():
            z = y * x
            z.backward()
            y.backward(y.grad)
            print(repr(x.grad == 2 * x))
    assert capsys.readouterr().out == MXNET["1.11"]
    assert x.grad.asnumpy().ravel().tolist() == [0, 2, 4, 6]
    assert y.grad.asnumpy().ravel().tolist() == [0, 1, 2, 3]


def test_remote_cells_cost_one_request_per_sync_point(live_server):
    client = gradserve.connect(live_server.url)
    try:
        t = client.transport
        assert t.requests == 1  # the one that opened the session
        x = nd.arange(4).reshape((4, 1))
        print(x)  # sync 1
        x.attach_grad()
        repr(x.grad)  # sync 2
        with autograd.record():
            y = 2 * nd.dot(x.T, x)
        repr(y)  # sync 3
        y.backward()
        assert t.requests == 4
        (x.grad - 4 * x).norm().asscalar()  # sync 4
        print(x.grad)  # sync 5
        with autograd.record():
            y = 2 * x * x
            assert y.shape == (4, 1)  # known locally
            y.backward()
            print(x.grad)  # sync 6
        autograd.is_training()
        with autograd.record():
            autograd.is_training()
        assert t.requests == 1 + 6
    finally:
        gradserve.set_current(None)
        client.close()


def _expected_script_output() -> str:
    return "".join(MXNET[k] for k in ("1.1", "1.2", "1.3", "1.5", "1.6", "1.7", "1.10", "1.11"))


def _run_example(env_extra: dict[str, str]) -> str:
    env = {**os.environ, "GRADSERVE_SEED": "0", **env_extra}
    if "GRADSERVE_URL" not in env_extra:
        env.pop("GRADSERVE_URL", None)
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "autograd_tutorial.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    return out.stdout


def test_example_script_in_process_prints_what_mxnet_prints():
    assert _run_example({}) == _expected_script_output()


def test_example_script_against_gradserve_serve_prints_what_mxnet_prints(tmp_path):
    port = free_port()
    exe = Path(sys.executable).with_name("gradserve")
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [str(exe), "serve", "--host", "127.0.0.1", "--port", str(port)],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/v1/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "gradserve serve did not come up"
            time.sleep(0.1)
        assert _run_example({"GRADSERVE_URL": url}) == _expected_script_output()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
