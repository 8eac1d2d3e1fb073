"""An https server: batches go over TLS on the client's own socket (frames, as over http),
the other routes through httpx; the server's certificate is checked, and an untrusted one
fails at once; close() from another thread stops a batch waiting for its reply."""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator

import numpy as np
import pytest

import gradserve
from gradserve import autograd, nd
from gradserve.transport import ConnectionLost

from .conftest import LiveServer
from .test_client import SilentServer, assert_close_stops_a_waiting_batch

trustme = pytest.importorskip("trustme")


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_server(ca, tmp_path_factory) -> Iterator[LiveServer]:
    pem = tmp_path_factory.mktemp("tls") / "server.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    with LiveServer(ssl_certfile=str(pem)) as s:
        yield s


@pytest.fixture
def trusted(ca) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


def test_batches_run_over_tls_on_the_clients_own_socket(tls_server, trusted):
    client = gradserve.connect(tls_server.url, verify=trusted)
    try:
        x = nd.arange(4).reshape((4, 1))
        x.attach_grad()
        with autograd.record():
            y = 2 * nd.dot(x.T, x)
        y.backward()
        assert x.grad.asnumpy().ravel().tolist() == [0.0, 4.0, 8.0, 12.0]
        a = np.random.default_rng(0).standard_normal((1 << 20) + 3).astype(np.float32)  # 4 MiB
        big = nd.array(a)
        assert np.array_equal((big * 2).asnumpy(), a * 2)
        assert isinstance(client.transport._conn.sock, ssl.SSLSocket)  # frames on its TLS socket, not httpx
        assert client.transport.info()["arrays"] >= 3
    finally:
        gradserve.set_current(None)
        client.close()


def test_an_untrusted_certificate_fails_at_once_with_a_clear_error(tls_server):
    start = time.monotonic()
    with pytest.raises(ConnectionLost, match="CERTIFICATE_VERIFY_FAILED"):
        gradserve.Http(tls_server.url)  # trusts the system's authorities, not the test's
    assert time.monotonic() - start < 10  # not after the retries (about 50 s)
    conn = gradserve.transport.Conn("127.0.0.1", tls_server.port, 5.0, ssl.create_default_context())
    with pytest.raises(ssl.SSLCertVerificationError):
        conn.request(b"POST /v1/sessions/x/batch HTTP/1.1\r\nContent-Length: 0\r\n\r\n", [])
    assert conn.sock is None


def test_close_from_another_thread_stops_a_batch_waiting_for_its_reply_over_tls(ca, trusted):
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    srv = SilentServer(tls=server_ctx)
    client = gradserve.Client(gradserve.Http(srv.url, timeout=10, retries=0, verify=trusted))
    assert_close_stops_a_waiting_batch(srv, client)


def test_gradserve_serve_serves_https_with_its_certificate(ca, trusted, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from .conftest import free_port

    pem = tmp_path / "server.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    port = free_port()
    exe = Path(sys.executable).with_name("gradserve")
    cmd = [str(exe), "serve", "--host", "127.0.0.1", "--port", str(port), "--ssl-certfile", str(pem)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"https://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                client = gradserve.connect(url, verify=trusted)
                break
            except ConnectionLost:
                assert proc.poll() is None and time.monotonic() < deadline, "gradserve serve did not come up"
                time.sleep(0.2)
        try:
            assert (nd.ones((2, 2)) * 3).sum().asscalar() == 12.0
            assert isinstance(client.transport._conn.sock, ssl.SSLSocket)
        finally:
            gradserve.set_current(None)
            client.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
