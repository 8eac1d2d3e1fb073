"""Every benchmark of bench/, one after the other, with its command (for RESULTS.md).

.venv/bin/python bench/run_all.py
"""

from __future__ import annotations

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
BENCHES = [
    ["engine_chain.py"],
    ["kernels.py"],
    ["mlp.py"],
    ["mlp.py", "--no-haswell"],
    ["mlp.py", "--pair", "--rounds", "20", "--inner", "40"],
    ["mlp.py", "--pair", "--rounds", "20", "--inner", "40", "--no-haswell"],
    ["roundtrip.py"],
    ["tiny_ops.py"],
    ["bandwidth.py"],
    ["many_clients.py"],
    ["profile_remote.py"],
    ["timeline_remote.py"],
    ["slices.py"],
    ["rnn.py"],
]

if __name__ == "__main__":
    for args in BENCHES:
        cmd = [sys.executable, os.path.join(HERE, args[0]), *args[1:]]
        print(f"\n$ .venv/bin/python bench/{' '.join(args)}", flush=True)
        subprocess.run(cmd, check=False)
