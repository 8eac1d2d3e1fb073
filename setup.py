"""Builds the engine's interpreter as C extensions with mypyc, where it can.

``engine/session.py`` (the batch executor) and the commands of ``engine/backprop.py`` and
``engine/optimizers.py``, ``engine/slices.py`` (what a slice of a server's event loop may run),
``engine/tape.py`` (graph nodes and the backward pass), ``engine/optable.py`` (op records and
attribute parsers), ``engine/ops.py`` (the elementwise, reduction and indexing ops' forwards
and VJPs) and ``engine/programs.py`` (a hybridized function's kept program and its calls) run
once per instruction and once per node: compiled, an op of a recorded chain takes about
0.7 of the time (bench/engine_chain.py). They are plain, type-checked Python and stay
importable as such: without mypyc or a C compiler, or with GRADSERVE_PURE=1 at build
time, the package installs as pure Python; a build that fails leaves it so too.

The build also records a hash of each compiled source (``engine/_native.json``): at
import the engine loads the sources instead of extensions built from other ones (an
edited checkout), or when GRADSERVE_PURE=1 is set: engine/_native.py, whose list of
compiled modules and source hashes this file uses.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
GROUP = "gradserve.engine._native"


def _load_native() -> object:
    """engine/_native.py on its own (it needs only the standard library): the engine's
    runtime side of this build, loaded without importing the package."""
    spec = importlib.util.spec_from_file_location("_gradserve_native", os.path.join(HERE, "engine", "_native.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


NATIVE = _load_native()
COMPILED: tuple[str, ...] = NATIVE.COMPILED  # type: ignore[attr-defined]  # modules of engine/, in import order


def stage() -> list[str]:
    """mypyc names a module after its place in a package tree, and the engine's sources
    live in engine/ while the package is gradserve.engine: compile a copy laid out as
    the package is."""
    root = os.path.join(HERE, "build", "mypyc-src")
    pkg = os.path.join(root, "gradserve", "engine")
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(pkg)
    open(os.path.join(root, "gradserve", "__init__.py"), "w").close()
    for f in os.listdir(os.path.join(HERE, "engine")):
        if f.endswith(".py"):
            shutil.copy2(os.path.join(HERE, "engine", f), pkg)
    return [os.path.relpath(os.path.join(pkg, name + ".py"), HERE) for name in COMPILED]


def remove_stale_build() -> None:
    """A pure build removes the compiled modules an earlier build left beside the sources
    (an editable install's), so the engine loads its sources without a warning."""
    engine = os.path.join(HERE, "engine")
    for f in os.listdir(engine):
        if f == "_native.json" or (f.endswith((".so", ".pyd")) and f.split(".")[0] in (*COMPILED, "_native__mypyc")):
            os.remove(os.path.join(engine, f))


def native_extensions() -> list:
    if len(sys.argv) > 1 and sys.argv[1] in ("egg_info", "dist_info", "sdist"):
        return []  # metadata or a source archive: nothing is compiled (pip asks for these first)
    exts = _native_extensions()
    if not exts:
        remove_stale_build()
    return exts


def _native_extensions() -> list:
    if os.environ.get("GRADSERVE_PURE"):
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("gradserve: mypyc is not installed; the engine stays pure Python", file=sys.stderr)
        return []
    sources = stage()
    # a cache of its own: what a development checkout's .mypy_cache says of other environments does not apply
    os.environ["MYPY_CACHE_DIR"] = os.path.join(HERE, "build", "mypyc-cache")
    try:
        exts = mypycify(sources, opt_level="3", group_name=GROUP)
    except (Exception, SystemExit) as e:  # mypy's type check failed: ship what runs
        print(f"gradserve: the engine stays pure Python (mypyc: {e})", file=sys.stderr)
        return []
    for e in exts:
        e.optional = True  # no compiler: pure Python, not a failed install
    return exts


class BuildNative(build_ext):
    """build_ext that writes the hashes of the sources it compiled beside the extensions."""

    def run(self) -> None:
        super().run()
        if not self.extensions:
            return
        built = [self.get_ext_fullpath(e.name) for e in self.extensions]
        target = os.path.join(os.path.dirname(self.get_ext_fullpath(f"gradserve.engine.{COMPILED[0]}")), "_native.json")
        if all(os.path.exists(p) for p in built):
            with open(target, "w") as f:
                json.dump({"group": GROUP, "sources": NATIVE.source_hashes()}, f, indent=1)  # type: ignore[attr-defined]
        elif os.path.exists(target):
            os.remove(target)  # a failed build: the engine loads its sources

    def get_outputs(self) -> list[str]:
        out = super().get_outputs()
        if self.extensions:
            out.append(os.path.join(os.path.dirname(out[0]), "_native.json"))
        return out


setup(ext_modules=native_extensions(), cmdclass={"build_ext": BuildNative})
