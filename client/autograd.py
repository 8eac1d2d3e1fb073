"""MXNet's ``autograd`` module: recording scopes, modes and backward.

>>> from gradserve import autograd, nd
>>> x = nd.array([1.0, 2.0]); x.attach_grad()
>>> with autograd.record():
...     y = (x * x).sum()
>>> y.backward(); x.grad
<BLANKLINE>
[2. 4.]
<NDArray 2 @cpu(0)>
"""

from __future__ import annotations

from types import TracebackType

from .ndarray import backward, grad, mark_variables
from .state import flags

__all__ = [
    "backward",
    "grad",
    "mark_variables",
    "is_recording",
    "is_training",
    "pause",
    "predict_mode",
    "record",
    "set_recording",
    "set_training",
    "train_mode",
]


def is_recording() -> bool:
    """Whether ops are being recorded for backward."""
    return flags.recording


def is_training() -> bool:
    """Whether layers behave as in training (dropout, batch norm)."""
    return flags.training


def set_recording(is_recording: bool) -> bool:  # noqa: A002
    """Set the recording flag; return its previous value."""
    prev, flags.recording = flags.recording, bool(is_recording)
    return prev


def set_training(train_mode: bool) -> bool:
    """Set the training flag; return its previous value."""
    prev, flags.training = flags.training, bool(train_mode)
    return prev


class _Scope:
    """Sets the flags on entry and restores what they were on exit."""

    def __init__(self, recording: bool | None, training: bool | None) -> None:
        self._want = (recording, training)
        self._prev: tuple[bool, bool] = (False, False)

    def __enter__(self) -> _Scope:
        self._prev = (flags.recording, flags.training)
        rec, train = self._want
        if rec is not None:
            flags.recording = rec
        if train is not None:
            flags.training = train
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        flags.recording, flags.training = self._prev


def record(train_mode: bool = True) -> _Scope:
    """Record ops for backward inside the ``with`` block (training mode by default)."""
    return _Scope(True, train_mode)


def pause(train_mode: bool = False) -> _Scope:
    """Stop recording inside the ``with`` block."""
    return _Scope(False, train_mode)


def train_mode() -> _Scope:
    """Training behaviour inside the block, recording unchanged."""
    return _Scope(None, True)


def predict_mode() -> _Scope:
    """Prediction behaviour inside the block, recording unchanged."""
    return _Scope(None, False)
