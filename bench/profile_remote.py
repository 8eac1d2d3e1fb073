"""Where the time of a remote MLP step goes: pyinstrument on the client, py-spy
(all threads, native frames off) on the server, during steps that read the loss.

    .venv/bin/python bench/profile_remote.py [--steps 300]

Prints the client's pyinstrument tree (trimmed) and the server's top functions
by own time and by inclusive time, from py-spy's collapsed stacks. The server runs
the engine's Python sources (GRADSERVE_PURE=1): py-spy sees no Python frames inside
the compiled modules, and would put all their time on the function that called them.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile

os.environ["OPENBLAS_NUM_THREADS"] = "1"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._util import server  # noqa: E402


def summarize(collapsed: str, top: int = 25) -> list[str]:
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        k = int(n)
        frames = stack.split(";")
        total += k
        if "idle" in frames[-1] or frames[-1].startswith(("select", "epoll", "wait (threading", "_worker")):
            own["(idle: waiting)"] += k
            continue
        own[frames[-1]] += k
        for f in set(frames):
            incl[f] += k
    lines = [f"{total} samples"]
    lines.append("own time:")
    lines += [f"  {100 * v / total:5.1f}%  {k}" for k, v in own.most_common(top)]
    lines.append("inclusive time:")
    lines += [f"  {100 * v / total:5.1f}%  {k}" for k, v in incl.most_common(top)]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    args = ap.parse_args()
    from pyinstrument import Profiler

    import gradserve
    from bench import _mlp

    spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    x, y = _mlp.data()
    with server(env={"OPENBLAS_NUM_THREADS": "1", "GRADSERVE_PURE": "1"}) as url:
        client = gradserve.Client(gradserve.Http(url))
        gradserve.set_current(client)
        model = _mlp.Gradserve(x, y)
        for _ in range(10):
            model.step().asscalar()
        pid = str(url.pid)
        out = tempfile.mktemp(suffix=".txt")
        rec = subprocess.Popen(
            [spy, "record", "--pid", pid, "--format", "raw", "--rate", "1000", "--threads", "-o", out, "--nonblocking"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        prof = Profiler(interval=0.0002)
        prof.start()
        for _ in range(args.steps):
            model.step().asscalar()
        prof.stop()
        rec.send_signal(2)
        rec.wait(timeout=30)
    print("## client (pyinstrument)\n")
    print(prof.output_text(unicode=False, color=False, show_all=False, timeline=False))
    print("## server (py-spy, all threads)\n")
    try:
        with open(out) as f:
            print("\n".join(summarize(f.read())))
    except OSError as e:
        print(f"py-spy gave no profile ({e}); it needs ptrace rights")


if __name__ == "__main__":
    main()
