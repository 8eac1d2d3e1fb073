"""How the process allocates the engine's arrays.

The engine makes many fresh arrays of a few hundred KiB to a few MiB per step
(activations, cotangents, temporaries). Past glibc's default mmap threshold
(128 KiB) each of them is a new mapping whose pages fault in one by one and
are unmapped again on free: measured on the MLP benchmark, that made an
in-process step 1.6 to 1.8 times a hand-written numpy step instead of 1.25 to
1.35 times. Serving them from the heap, and keeping some freed heap for the
next step, removes it. Linux/glibc only; ``GRADSERVE_TUNE_MALLOC=0`` leaves
the process's settings alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

MMAP_THRESHOLD = 8 << 20  # arrays below this come from the heap
TRIM_THRESHOLD = 128 << 20  # freed heap kept for reuse before it is returned to the system

_done: bool | None = None


def tune_malloc() -> bool:
    """Apply the settings above once per process; return whether they are in force."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if os.environ.get("GRADSERVE_TUNE_MALLOC", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    _done = bool(mallopt(m_mmap_threshold, MMAP_THRESHOLD)) and bool(mallopt(m_trim_threshold, TRIM_THRESHOLD))
    return _done
