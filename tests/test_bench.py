"""The benchmarks of bench/ run, at their smallest, and their own checks hold (request counts,
the same first loss by every path, round trips counted): a benchmark that no longer runs is
found here, not when someone next measures. No timing is asserted. They run once, on the
compiled engine (the suite's second pass, on the engine's sources, skips them)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")

pytestmark = pytest.mark.skipif(
    os.environ.get("GRADSERVE_PURE", "") not in ("", "0"), reason="benchmarks run on the compiled engine's pass"
)


@pytest.mark.parametrize(
    "args",
    [
        ["mlp.py", "--rounds", "1", "--inner", "1", "--no-torch"],
        ["mlp.py", "--pair", "--rounds", "1", "--inner", "1"],
        ["tiny_ops.py", "--batch", "50", "--rounds", "1"],
        ["bandwidth.py", "--mib", "1", "--rounds", "1", "--json-rounds", "1"],
        ["roundtrip.py", "--n", "40"],
        ["kernels.py", "--rounds", "1"],
        ["engine_chain.py", "--rounds", "1"],
        ["rnn.py", "--rounds", "1", "--steps", "3", "--batch", "2", "--hidden", "8"],
        ["slices.py", "--rounds", "1", "--lengths", "4,8"],
    ],
    ids=lambda a: " ".join(a),
)
@pytest.mark.timeout(180)
def test_a_benchmark_runs_and_reports(args):
    r = subprocess.run(
        [sys.executable, os.path.join(BENCH, args[0]), *args[1:]],
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert "| case | result |" in r.stdout or "nothing to compare" in r.stdout, r.stdout[-2000:]


@pytest.mark.timeout(180)
def test_the_ab_benchmark_runs_against_another_build(tmp_path):
    """bench/ab_roundtrip.py with this tree standing in for the other build (a package laid
    out as its docstring says)."""
    import shutil

    root = os.path.dirname(BENCH)
    pkg = tmp_path / "gradserve"
    pkg.mkdir()
    for name in os.listdir(os.path.join(root, "client")):
        if name.endswith(".py"):
            shutil.copy(os.path.join(root, "client", name), pkg / name)
    for sub in ("engine", "server"):
        (pkg / sub).symlink_to(os.path.join(root, sub))
    r = subprocess.run(
        [sys.executable, os.path.join(BENCH, "ab_roundtrip.py"), "--other", str(tmp_path), "--rounds", "1"],
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert "this tree / other build, per round" in r.stdout, r.stdout[-2000:]
