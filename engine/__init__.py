"""gradserve's engine: the op table, the autograd tape and sessions; no HTTP."""

from __future__ import annotations

from . import _native

_native.load_sources_if_needed()  # before anything imports the compiled modules
NATIVE = _native.NATIVE  # "mypyc" or "python": which interpreter runs batches

# ops fills the table; backprop, optimizers and programs add their commands; wire adds tensor attributes
from . import backprop, ops, optimizers, programs, wire  # noqa: E402, F401
from .errors import MXNetError  # noqa: E402
from .optable import OPS, Op, Spec  # noqa: E402
from .session import FEATURES, Limits, Session, catalog  # noqa: E402

__all__ = ["FEATURES", "NATIVE", "OPS", "Limits", "MXNetError", "Op", "Session", "Spec", "catalog"]
