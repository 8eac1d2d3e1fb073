"""gradserve's server: the FastAPI app, auth, quotas and sessions over HTTP."""

from __future__ import annotations

from .app import create_app
from .settings import Settings

__all__ = ["Settings", "create_app"]
