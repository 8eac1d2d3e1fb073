"""What gradserve prints against what MXNet 1.9.1 printed for the same code
(recorded once with the reference install; MXNet is not needed here)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent / "mxnet"
NUMBER = re.compile(r"-?\d+\.?\d*(?:e[-+]?\d+)?")


def _same(ours: str, theirs: str) -> bool:
    """Equal text, but for float values that differ in their last digit (an integer must be
    printed as one, as MXNet printed it)."""
    if ours == theirs:
        return True
    if NUMBER.sub("#", ours).replace(" ", "") != NUMBER.sub("#", theirs).replace(" ", ""):
        return False
    ta, tb = NUMBER.findall(ours), NUMBER.findall(theirs)
    if any(("." in x or "e" in x) != ("." in y or "e" in y) for x, y in zip(ta, tb)):
        return False  # an integer printed where MXNet printed a float, or the other way round
    a = np.array([float(v) for v in ta])
    b = np.array([float(v) for v in tb])
    return a.shape == b.shape and np.allclose(a, b, rtol=1e-5, atol=1e-6)


def test_nd_tour_prints_what_mxnet_prints(mode):
    code = (HERE / "nd_tour.py").read_text()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(HERE / "nd_tour.py"), "exec"), {"__name__": "tour"})
    ours = out.getvalue().splitlines()
    theirs = (HERE / "nd_tour.mxnet.txt").read_text().splitlines()
    assert len(ours) == len(theirs)
    bad = [(i, o, t) for i, (o, t) in enumerate(zip(ours, theirs)) if not _same(o, t)]
    assert not bad, bad[:5]
