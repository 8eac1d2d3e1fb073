"""A session to and from one file: its arrays, variables and their gradients,
batch sequence and last reply, and random generator state. Nothing is pickled:
the file is numpy's ``.npz`` container with a JSON header.

Programs (``define``) are kept as they were given, and views as views: the memory
they share is written once, and each view as its place in it. What a snapshot does
not keep: recorded graphs (a ``backward`` after a restart needs the forward pass
again, as after any ``backward`` that frees the graph).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .errors import InvalidInput
from .optable import DTYPES
from .programs import make_program
from .session import Limits, Session, memory_of
from .tape import Node

FORMAT = 1
_UNLIMITED = Limits(**{f.name: 1 << 62 for f in dataclasses.fields(Limits)})
_META = "__meta__"


def save(s: Session, path: Path, wait_s: float = -1) -> int | None:
    """Write ``s`` to ``path`` atomically (a reader never sees half a file): the session's
    ``version`` that the file holds (0 for a session that never ran a batch: test the result
    against None); None, without writing, if the session stays busy for ``wait_s`` seconds
    (-1: wait as long as it is).

    The version is read as the session is copied, not before the copy waits for it: a batch
    that takes the session first is in the file, and the server, which answers a request
    that ran as it stopped by whether the snapshot holds it, must know that.

    The session is held only while its arrays are copied (a 512 MB session: 0.09 s, where
    writing the file takes 1.5 s); the file is written from the copies, the session free to
    go on. The server needs room for one session's arrays once more while it is written."""
    captured = capture(s, wait_s)
    if captured is None:
        return None
    arrays, version = captured
    write_atomically(path, lambda f: np.savez(f, **arrays))  # type: ignore[arg-type]  # numpy's stub takes no **kwargs
    return version


def write_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """``write`` a file into a temporary one beside ``path``, then put it in ``path``'s place:
    a reader sees the old file or the new one whole, and after a crash or a power cut too (the
    file's bytes, then the folder's entry, reach the disk before this returns)."""
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if hasattr(os, "O_DIRECTORY"):  # (a folder opens for fsync on POSIX only)
        dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def capture(s: Session, wait_s: float = -1) -> tuple[dict[str, np.ndarray], int] | None:
    """What ``save`` writes: copies of the session's arrays, and its header, as one moment
    of it, with the session's ``version`` at that moment; None if the session stays busy for
    ``wait_s`` seconds."""
    if not s.lock.acquire(timeout=wait_s):
        return None
    try:
        version = s.version  # (under the lock: a batch that took it while this waited is in the copy)
        arrays: dict[str, np.ndarray] = {}
        handle_of = {id(v): h for h, v in s.arrays.items() if h not in s.aliases}
        memories: dict[int, str] = {}  # id(memory) -> its key in the file (views are written as places in it)
        variables: list[dict[str, Any]] = []
        first: dict[int, int] = {}  # id(variable's node) -> the handle it is kept under
        # buffers the session made for variables, by the first handle of their variable
        made = {id(n.grad): h for h, n in reversed(list(s.nodes.items())) if n.op is None and id(n) in s.grads}
        for h, n in s.nodes.items():
            if n.op is not None or n.grad is None:
                continue  # recorded graph nodes are not kept
            if id(n) in first:  # a second name for the variable (``alias``)
                variables.append({"handle": h, "same_as": first[id(n)]})
                continue
            first[id(n)] = h
            var: dict[str, Any] = {"handle": h, "grad_req": n.grad_req}
            owner = handle_of.get(id(n.grad))
            if owner is not None:
                var["grad_handle"] = owner  # mark_variables: the gradient is another array
            elif id(n) not in s.grads and id(n.grad) in made:
                var["grad_of"] = made[id(n.grad)]  # mark_variables with another variable's buffer
            else:
                arrays[f"g:{h}"] = n.grad
                memories.setdefault(id(n.grad), f"g:{h}")
            variables.append(var)
        grad_var = {id(s.nodes[h].grad): h for h in first.values()}
        aliases = {a: grad_var[id(s.arrays[a])] for a in s.aliases if id(s.arrays[a]) in grad_var}
        for a in s.aliases:
            if a not in aliases:  # the buffer of a variable made again since: an array of its own now
                arrays[f"a:{a}"] = s.arrays[a]
                memories.setdefault(id(s.arrays[a]), f"a:{a}")
        views = []
        for h, v in s.arrays.items():
            if h in s.aliases:
                continue
            if v.base is None:
                arrays[f"a:{h}"] = v
                memories.setdefault(id(v), f"a:{h}")
        for h, v in s.arrays.items():
            if h in s.aliases or v.base is None:
                continue
            m = memory_of(v)
            key = memories.get(id(m))
            if key is None:  # memory no handle owns: written once, as bytes
                key = memories[id(m)] = f"m:{len(memories)}"
                arrays[key] = m if isinstance(m, np.ndarray) else np.frombuffer(m, dtype=np.uint8)
            root = arrays[key]
            views.append(
                {
                    "handle": h,
                    "memory": key,
                    "offset": v.__array_interface__["data"][0] - root.__array_interface__["data"][0],
                    "shape": list(v.shape),
                    "strides": list(v.strides),
                    "dtype": v.dtype.str,
                }
            )
        reply = None
        if s.last_reply is not None:
            reply = {k: v for k, v in s.last_reply.items() if k != "values"}
            read_at: dict[int, int] = {}  # an array read twice is written once
            same: dict[str, int] = {}
            for i, v in enumerate(s.last_reply.get("values", ())):
                j = read_at.setdefault(id(v), i)
                if j == i:
                    arrays[f"r:{i}"] = np.asarray(v)
                else:
                    same[str(i)] = j
            reply["n_values"] = len(s.last_reply.get("values", ()))
            if same:
                reply["same_values"] = same
        meta = {
            "format": FORMAT,
            "id": s.id,
            "owner": s.owner,
            "seq": s.seq,
            "last_reply": reply,
            "variables": variables,
            "aliases": {str(a): v for a, v in aliases.items()},
            "views": views,
            "rng": s.cx.rng.bit_generator.state,
            "programs": [p.source for p in s.programs.values()],
            # handles in a recorded graph, which is not kept: a backward of one after a restart says why
            "recorded": [h for h, n in s.nodes.items() if n.op is not None and n.live and h >= 0],
        }
        copies: dict[int, np.ndarray] = {}  # an array under two keys is copied once
        for key, v in arrays.items():
            c = copies.get(id(v))
            if c is None:
                # (order "K": a memory's copy keeps its layout, so its views' places hold)
                c = copies[id(v)] = v.copy(order="K")
            arrays[key] = c
        arrays[_META] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        return arrays, version
    finally:
        s.lock.release()


def load(path: Path, limits: Limits | None = None) -> Session:
    """A session as ``save`` left it."""
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.keys()}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise InvalidInput(f"{path}: not a gradserve snapshot ({e})") from None
    for key, v in data.items():
        if key != _META and (v.dtype.name not in DTYPES or not v.dtype.isnative):
            raise InvalidInput(f"{path}: array {key} is {v.dtype}, not a session's dtype")
    try:
        return _load(path, data, limits)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise InvalidInput(f"{path}: not a gradserve snapshot ({type(e).__name__}: {e})") from None


def _load(path: Path, data: dict[str, np.ndarray], limits: Limits | None) -> Session:
    if _META not in data:
        raise InvalidInput(f"{path}: not a gradserve snapshot (no header)")
    meta = json.loads(data.pop(_META).tobytes())
    if meta.get("format") != FORMAT:
        raise InvalidInput(f"{path}: snapshot format {meta.get('format')} is not {FORMAT}")
    # loaded as it was saved, under no limits: a session admitted under limits lowered since
    # (a restart with a new configuration) comes back over them, its data kept; it can free
    # arrays and read those a reply's copies fit under the new limit, but makes nothing new
    # until it is under them again
    s = Session(meta["id"], owner=meta["owner"], limits=_UNLIMITED)
    for key, v in data.items():
        if key.startswith("a:"):
            s.put(int(key[2:]), v)
    for var in meta["variables"]:  # gradient buffers the session made: views may be of them
        h = var["handle"]
        if not {"grad_handle", "same_as", "grad_of"} & var.keys():
            g = data[f"g:{h}"]
            if g.base is not None:  # (as read from the file: a view of the memory read)
                g = data[f"g:{h}"] = g.copy()
            s.variable(h, g, var["grad_req"])
    for view in meta.get("views", ()):
        root = data[view["memory"]]
        dtype = np.dtype(view["dtype"])
        if dtype.name not in DTYPES or not dtype.isnative:
            raise InvalidInput(f"{path}: a view is {dtype}, not a session's dtype")
        try:
            arr = np.ndarray(
                tuple(view["shape"]),
                dtype,
                buffer=root,
                offset=view["offset"],
                strides=tuple(view["strides"]),
            )
        except (TypeError, ValueError) as e:
            raise InvalidInput(f"{path}: a view does not fit its memory ({e})") from None
        counted = view["memory"][:2] in ("a:", "g:")  # (a handle's array, a gradient buffer: counted as such)
        s.put(view["handle"], arr, holders=(memory_of(root),) if counted else ())
    for var in meta["variables"]:
        if "grad_handle" in var:  # mark_variables: another handle's array
            s.nodes[var["handle"]] = Node(grad=s.arrays[var["grad_handle"]], grad_req=var["grad_req"])
        elif "grad_of" in var:  # mark_variables: another variable's buffer
            s.nodes[var["handle"]] = Node(grad=s.nodes[var["grad_of"]].grad, grad_req=var["grad_req"])
    for var in meta["variables"]:
        if "same_as" in var:
            s.nodes[var["handle"]] = s.nodes[var["same_as"]]
    for a, v in meta["aliases"].items():
        s.put(int(a), s.nodes[v].grad, alias=True)
    s.seq = meta["seq"]
    recorded = meta.get("recorded", ())
    if not isinstance(recorded, list) or not all(type(h) is int for h in recorded):
        raise InvalidInput(f"{path}: recorded handles are not a list of integers")
    s.graphs_lost = set(recorded)
    reply = meta["last_reply"]
    if reply is not None:
        n = reply.pop("n_values")
        same = {int(i): j for i, j in reply.pop("same_values", {}).items()}
        if any(not 0 <= j < i for i, j in same.items()):
            raise InvalidInput("snapshot: a reply value is the same as a later one")
        values: list[np.ndarray] = []
        for i in range(n):
            values.append(values[same[i]] if i in same else data[f"r:{i}"])
        reply["values"] = values
        s.last_reply = reply
        s.reply_bytes = sum({id(v): v.nbytes for v in values}.values())  # (copies now: counted while kept)
        s.nbytes += s.reply_bytes
    s.cx.rng.bit_generator.state = meta["rng"]
    for source in meta.get("programs", ()):
        prog = make_program(s, source)
        s.programs[source["id"]] = prog
        s.program_steps += len(prog.steps)
        s.program_bytes += prog.nbytes
    s.limits = limits or Limits()
    s._cap, s._budget = s.limits.max_array_bytes, s.limits.max_session_bytes
    return s


def over_limits(s: Session) -> list[str]:
    """The limits a restored session is over (they were lowered since it was saved)."""
    lim, over = s.limits, []
    if s.held_bytes() > lim.max_session_bytes:
        over.append(f"{s.held_bytes()} bytes, over max_session_bytes {lim.max_session_bytes}")
    if len(s.arrays) > lim.max_session_arrays:
        over.append(f"{len(s.arrays)} arrays, over max_session_arrays {lim.max_session_arrays}")
    if s.program_steps > lim.max_program_steps:
        over.append(f"programs of {s.program_steps} instructions, over max_program_steps {lim.max_program_steps}")
    return over
