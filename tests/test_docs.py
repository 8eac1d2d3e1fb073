"""The examples in the package's docstrings run and give what they show."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import gradserve
import gradserve.engine
import gradserve.server


def _modules_with_examples() -> list[str]:
    names = ["gradserve"]
    for pkg in (gradserve, gradserve.engine, gradserve.server):
        names += [
            m.name for m in pkgutil.iter_modules(pkg.__path__, pkg.__name__ + ".") if m.name != "gradserve.__main__"
        ]
    finder = doctest.DocTestFinder()
    return [n for n in names if any(t.examples for t in finder.find(importlib.import_module(n)))]


MODULES = _modules_with_examples()


def test_the_documented_modules_are_found():
    assert {"gradserve", "gradserve.nd", "gradserve.rnn", "gradserve.hybrid", "gradserve.contrib"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    old = gradserve.set_current(None)  # (the examples use the default session: in this process)
    try:
        result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS, report=True)
    finally:
        client = gradserve.set_current(old)
        if client is not None:
            client.close()
    assert result.attempted and not result.failed
