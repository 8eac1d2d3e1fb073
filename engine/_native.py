"""Which engine interpreter runs: the mypyc-compiled one, or its Python sources.

setup.py compiles the modules of ``COMPILED`` (the op table, the tape, the ops of ``ops.py``,
the session's batch executor, its commands and programs) when it can and records the hashes
of the sources it compiled in ``_native.json``. The compiled modules are used
only when they were built from the sources beside them; otherwise (a checkout edited since its last
install, a build that failed half way, or GRADSERVE_PURE=1) all are loaded from their
sources, which behave the same, slower. ``NATIVE`` says which: "mypyc" or "python".
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
import warnings

# in import order: each imports only the ones before it (a later one only for its types)
COMPILED = ("optable", "tape", "ops", "slices", "session", "backprop", "optimizers", "programs")
HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE = __name__.rpartition(".")[0]

NATIVE = "python"


def source_hashes() -> dict[str, str]:
    """The SHA-256 of each compiled module's source (what setup.py records at build time)."""
    out = {}
    for name in COMPILED:
        with open(os.path.join(HERE, name + ".py"), "rb") as f:
            out[name] = hashlib.sha256(f.read()).hexdigest()
    return out


def _why_not_native() -> str | None:
    """None when the compiled modules are there and built from these sources; else why not
    (an empty string when no compiled module is there at all: nothing to say)."""
    if not any(_extension(name) for name in COMPILED):
        return ""
    if os.environ.get("GRADSERVE_PURE"):
        return "GRADSERVE_PURE is set"
    try:
        with open(os.path.join(HERE, "_native.json")) as f:
            built = json.load(f)["sources"]
    except (OSError, ValueError, KeyError):
        return "its build record _native.json is missing"
    for name, digest in source_hashes().items():
        if digest != built.get(name):
            return f"{name}.py changed since it was compiled (reinstall to compile it again)"
    return None


def _extension(name: str) -> str | None:
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = os.path.join(HERE, name + suffix)
        if os.path.exists(path):
            return path
    return None


def load_sources_if_needed() -> None:
    """Import the compiled modules' Python sources in their place where they must not run."""
    global NATIVE
    loaded = [sys.modules.get(f"{PACKAGE}.{name}") for name in COMPILED]
    if any(loaded):  # already imported (a reload of the package)
        NATIVE = "python" if any(str(getattr(m, "__file__", "")).endswith(".py") for m in loaded if m) else "mypyc"
        return
    why = _why_not_native()
    if why is None:
        try:
            for name in COMPILED:
                importlib.import_module(f"{PACKAGE}.{name}")
            NATIVE = "mypyc"
            return
        except Exception as e:  # a half-built extension, or one built against another Python
            why = f"its compiled modules do not load ({type(e).__name__}: {e})"
            for name in COMPILED:
                sys.modules.pop(f"{PACKAGE}.{name}", None)
    if why == "":
        return  # nothing compiled here: plain imports find the sources
    if not os.environ.get("GRADSERVE_PURE"):  # asked for: nothing to warn about
        warnings.warn(f"gradserve: the engine runs its Python sources: {why}", RuntimeWarning, stacklevel=3)
    for name in COMPILED:
        spec = importlib.util.spec_from_file_location(f"{PACKAGE}.{name}", os.path.join(HERE, name + ".py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        setattr(sys.modules[PACKAGE], name, module)
