"""gradserve's engine: the op table, the autograd tape and sessions; no HTTP."""

from __future__ import annotations

from . import ops, wire  # noqa: F401  (ops fills the table; wire adds tensor attributes)
from .errors import MXNetError
from .optable import OPS, Op, Spec
from .session import Limits, Session, catalog

__all__ = ["OPS", "Limits", "MXNetError", "Op", "Session", "Spec", "catalog"]
