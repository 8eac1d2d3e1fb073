"""How the package installs: the client without the server's dependencies, and the engine
compiled or as its Python sources, never a compiled module built from other sources."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from gradserve import engine
from gradserve.engine import session

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


def _engine_copy(tmp_path, edit: bool) -> str:
    """The installed package laid out under tmp_path (compiled modules included), with
    engine/session.py edited or not; its path, for PYTHONPATH."""
    import gradserve

    root = tmp_path / "site"
    shutil.copytree(os.path.dirname(gradserve.__file__), root / "gradserve")
    shutil.copytree(os.path.dirname(gradserve.engine.__file__), root / "gradserve" / "engine")
    if edit:
        with open(root / "gradserve" / "engine" / "session.py", "a") as f:
            f.write("\n# an edit since the last build\n")
    return str(root)


WHICH = "import gradserve.engine as e, gradserve.engine.session as s; print(e.NATIVE, s.__file__.rsplit('.', 1)[-1])"


def _which(path: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-W", "default", "-c", WHICH],
        capture_output=True,
        text=True,
        timeout=60,
        env={**{k: v for k, v in os.environ.items() if k != "GRADSERVE_PURE"}, "PYTHONPATH": path, **env},
    )


needs_native = pytest.mark.skipif(
    not any(f.endswith(".so") or f.endswith(".pyd") for f in os.listdir(os.path.dirname(engine.__file__))),
    reason="this install has no compiled engine (no C compiler or mypyc at build time)",
)


@needs_native
def test_the_compiled_engine_runs_when_it_was_built_from_these_sources(tmp_path):
    out = _which(_engine_copy(tmp_path, edit=False))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["mypyc", "so"], out.stdout + out.stderr
    assert "Python sources" not in out.stderr


@needs_native
def test_an_edited_source_runs_as_python_with_a_warning(tmp_path):
    """A compiled module built from other sources never runs: the engine loads the sources
    of both compiled modules (they share a layout) and says why."""
    out = _which(_engine_copy(tmp_path, edit=True))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["python", "py"]
    assert "session.py changed since it was compiled" in out.stderr


@needs_native
def test_a_compiled_module_that_does_not_load_runs_as_python_with_a_warning(tmp_path):
    root = _engine_copy(tmp_path, edit=False)
    engine_dir = os.path.join(root, "gradserve", "engine")
    for f in os.listdir(engine_dir):
        if f.startswith("_native__mypyc") and f.endswith((".so", ".pyd")):
            with open(os.path.join(engine_dir, f), "wb") as out:
                out.write(b"not a shared library")
    out = _which(root)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["python", "py"]
    assert "compiled modules do not load" in out.stderr


@needs_native
def test_gradserve_pure_runs_the_sources_quietly(tmp_path):
    out = _which(_engine_copy(tmp_path, edit=False), GRADSERVE_PURE="1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["python", "py"] and "Python sources" not in out.stderr


def test_native_reports_what_runs():
    assert engine.NATIVE in ("mypyc", "python")
    assert (engine.NATIVE == "mypyc") == session.__file__.endswith((".so", ".pyd"))
    if os.environ.get("GRADSERVE_PURE"):
        assert engine.NATIVE == "python"


def test_make_reinstalls_after_an_edit_to_any_compiled_module():
    """The Makefile's list of what an install compiles is engine/_native.py's: it named five of
    the eight, so an edit to backprop.py left the engine on its sources until a reinstall."""
    import re

    from gradserve.engine import _native

    root = os.path.dirname(os.path.dirname(os.path.abspath(engine.__file__)))
    with open(os.path.join(root, "Makefile")) as f:
        makefile = f.read()
    listed = re.search(r"^COMPILED := (.*)$", makefile, re.M)
    assert listed is not None and tuple(listed.group(1).split()) == _native.COMPILED
    assert "$(COMPILED:%=engine/%.py)" in makefile


def test_a_machine_that_can_compile_the_engine_did():
    """mypyc's build type-checks the engine and installs it as pure Python when the check
    fails, as it must where there is no compiler; where there is one (and mypyc), a pure
    install is a fault (an optional import once failed the check in fresh installs only,
    and CI went on, slower, on the sources)."""
    import importlib.util
    import shutil
    import sysconfig

    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if not shutil.which(cc) or importlib.util.find_spec("mypyc") is None:
        pytest.skip("no C compiler or no mypyc here: the engine is pure Python by design")
    built = [f for f in os.listdir(os.path.dirname(engine.__file__)) if f.endswith((".so", ".pyd"))]
    assert built, "the engine was installed as pure Python on a machine that can compile it: see setup.py's output"
