"""Helper threads for the backward pass: costly cotangents computed beside it.

A recorded ``dot`` or ``FullyConnected`` has two costly gradients (of each operand) that
do not depend on each other. The one for a variable (a weight) is wanted only when the pass ends:
a helper thread computes it while the pass goes on down the graph. Two that the
pass needs at once are computed side by side. BLAS releases the GIL, so with a
second core both threads compute at once (bench/mlp.py compares the in-process
MLP step with and without helpers; tape.side_by_side decides what to hand over).

The pass never waits for a helper to become free: with none free (other sessions
of a server use them), or a job that its helper has not started by the time the
pass needs it, the pass computes it itself. It does wait for a job a helper has
started: where no core is idle (a loaded server), that job may end later than the
pass would have computed it; the server's many-clients benchmark measures that case.

A helper is a thread with two raw locks (no executor, futures or conditions: a
hand-off costs a few microseconds of Python, not tens). ``GRADSERVE_HELPERS``
sets how many (default: one less than the CPUs this process may use, at most 4;
``0`` turns them off).
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np

_IDLE, _QUEUED, _RUNNING, _DONE, _CANCELLED = range(5)


class Helper:
    """One helper thread; ``give`` a job, then ``take`` its result (or compute it)."""

    def __init__(self, free: list[Helper], start: bool = True) -> None:
        self._free = free  # where an idle helper waits to be picked
        self._state = _IDLE
        self._mutex = threading.Lock()
        self._go = threading.Lock()
        self._go.acquire()  # released once per job given
        self._done = threading.Lock()
        self._done.acquire()  # released once per job run
        self._job: Any = None
        self._result: Any = None
        self._error: BaseException | None = None
        self.stopped = False
        self.ran = 0  # jobs this helper ran (not those taken back)
        self.thread = threading.Thread(target=self._loop, name="gradserve-helper", daemon=True)
        if start:
            self.thread.start()

    def give(self, job: Any) -> None:
        """Start ``job()`` in this helper (which the caller took from the free list)."""
        self._job = job
        self._state = _QUEUED
        self._go.release()

    def take(self) -> Any:
        """The job's result: the helper's, or the caller's own if the helper had not started."""
        with self._mutex:
            started = self._state != _QUEUED
            if not started:  # taken back: the helper puts itself back when it wakes and sees that
                job, self._job = self._job, None
                self._state = _CANCELLED
        if not started:
            return job()
        self._done.acquire()
        result, error = self._result, self._error
        self._job = self._result = self._error = None
        self._state = _IDLE
        self._back()
        if error is not None:
            raise error
        return result

    def _back(self) -> None:
        """Idle again: back in the free list, or (stopped) its thread let go."""
        if self.stopped:
            self._go.release()
        else:
            self._free.append(self)

    def _loop(self) -> None:
        while True:
            self._go.acquire()
            if self.stopped:
                return
            with self._mutex:
                if self._state == _CANCELLED:
                    self._state = _IDLE
                    cancelled = True
                else:
                    self._state = _RUNNING
                    cancelled = False
            if cancelled:
                self._back()
                continue
            try:
                with np.errstate(all="ignore"):  # the backward pass's error state (it is per thread)
                    self._result = self._job()
            except BaseException as e:  # handed to the caller, who raises it
                self._error = e
            self.ran += 1
            self._state = _DONE
            self._done.release()

    def stop(self) -> None:
        """Let the thread end: at once if idle, else once its job is taken."""
        self.stopped = True
        try:
            self._free.remove(self)  # atomic: whoever takes it from the list owns its next wake-up
        except ValueError:
            return  # picked or away: it is let go when it comes back (``_back``)
        self._go.release()


class Helpers:
    """A set of helper threads; ``pick`` returns a free one or None."""

    def __init__(self, n: int) -> None:
        self.free: list[Helper] = []
        self.all = [Helper(self.free) for _ in range(n)]
        self.free.extend(self.all)

    def pick(self) -> Helper | None:
        try:
            return self.free.pop()  # atomic: two callers never get the same helper
        except IndexError:
            return None

    def stop(self) -> None:
        for h in self.all:
            h.stop()


_lock = threading.Lock()
_helpers: Helpers | None = None
_count: int | None = None  # None: not decided yet
_enabled = True


def _default() -> int:
    env = os.environ.get("GRADSERVE_HELPERS", "").strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            n = -1
        if n < 0:
            raise ValueError(f"GRADSERVE_HELPERS must be a whole number, 0 or more, got {env!r}")
        return n
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(0, min(cpus - 1, 4))


def helpers() -> Helpers | None:
    """The process's helpers, started on first use; None when there are none."""
    global _helpers, _count
    if _helpers is not None or _count == 0 or not _enabled:
        return _helpers if _enabled else None
    with _lock:
        if _count is None:
            _count = _default()
        if _helpers is None and _count > 0:
            _helpers = Helpers(_count)
    return _helpers


def set_helpers(n: int | None) -> int | None:
    """Use ``n`` helper threads from now on (0: none; None: as many as ``GRADSERVE_HELPERS``
    or the CPUs say, decided at first use); jobs already given finish. Returns the setting it
    replaces (None: not decided yet), for the caller to put back."""
    global _helpers, _count
    if n is not None and n < 0:
        raise ValueError("the number of helper threads cannot be negative")
    with _lock:
        old, _helpers, before, _count = _helpers, None, _count, n
    if old is not None:
        old.stop()
    return before


def _forget_in_child() -> None:
    """A forked child has the helpers' objects but not their threads (and maybe a lock a
    helper held at the fork): it starts its own on first use."""
    global _helpers, _lock
    _helpers = None
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


def enable(on: bool) -> None:
    """Turn the helpers off (``False``) and on again without stopping their threads: a
    benchmark compares both in one process this way."""
    global _enabled
    _enabled = on


def jobs_run() -> int:
    """Products the current helpers have computed (none started yet: 0; starts none)."""
    h = _helpers
    return sum(x.ran for x in h.all) if h is not None else 0


def count() -> int:
    """How many helper threads the backward pass uses (when enabled)."""
    global _count
    with _lock:
        if _count is None:
            _count = _default()
        return _count
