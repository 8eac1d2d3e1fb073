"""The autograd flags of the calling thread (MXNet keeps them per thread)."""

from __future__ import annotations

import threading


class Flags(threading.local):
    recording: bool = False
    training: bool = False


flags = Flags()
