"""The client installs and runs without the server's dependencies."""

from __future__ import annotations

import subprocess
import sys
import textwrap

BLOCK_SERVER_DEPS = textwrap.dedent(
    """
    import importlib.abc, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"fastapi", "uvicorn", "starlette", "pydantic", "pydantic_settings"}:
                raise ImportError(f"{name} is blocked")
            return None

    sys.meta_path.insert(0, Block())
    """
)


def test_client_imports_and_computes_without_server_packages():
    code = BLOCK_SERVER_DEPS + textwrap.dedent(
        """
        from gradserve import autograd, nd
        x = nd.arange(3)
        x.attach_grad()
        with autograd.record():
            y = (x * x).sum()
        y.backward()
        print(x.grad.asnumpy().tolist())
        assert "fastapi" not in sys.modules and "pydantic" not in sys.modules
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[0.0, 2.0, 4.0]"


def test_serve_without_server_extra_says_what_to_install():
    code = BLOCK_SERVER_DEPS + "from gradserve.cli import main; sys.exit(main(['serve']))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "gradserve[server]" in out.stderr


def test_serve_refuses_an_open_address_without_keys():
    out = subprocess.run(
        [sys.executable, "-m", "gradserve", "serve", "--host", "0.0.0.0", "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "without API keys" in out.stderr
