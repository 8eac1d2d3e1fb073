"""The autograd flags of the calling thread (MXNet keeps them per thread)."""

from __future__ import annotations

import threading


class Flags(threading.local):
    recording: bool = False
    training: bool = False
    training_read: bool = False  # whether is_training() was called since it was last cleared


flags = Flags()
