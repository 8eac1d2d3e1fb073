"""gradserve: MXNet-style NDArrays and autograd, in-process or on a server.

>>> from gradserve import autograd, nd
>>> x = nd.arange(4).reshape((4, 1))
>>> x.attach_grad()
>>> with autograd.record():
...     y = 2 * nd.dot(x.T, x)
>>> y.backward()
>>> x.grad.T
<BLANKLINE>
[[ 0.  4.  8. 12.]]
<NDArray 1x4 @cpu(0)>

With no URL the engine runs in this process; ``GRADSERVE_URL`` (or
``connect(url)``) sends the same batches to a gradserve server.
"""

from __future__ import annotations

import importlib.metadata
import ssl

from . import autograd, nd, random
from .engine.errors import (
    AutogradError,
    BooleanIndexError,
    DTypeError,
    IndexKindError,
    IndexOutOfRange,
    InvalidInput,
    MXNetError,
    QuotaExceeded,
    ShapeError,
    Unauthorized,
    UnknownDType,
)
from .hybrid import HybridFunction, hybridize
from .ndarray import Context, NDArray, cpu, cpu_pinned, current_context
from .runtime import ChangeLost, Client, NotTraceable, SessionForked, SessionLost, current, set_current
from .transport import ConnectionLost, Http, InProcess, SessionClosed, from_env

__version__ = importlib.metadata.version("gradserve")


def connect(
    url: str | None = None,
    api_key: str | None = None,
    sync: bool = False,
    seed: int | None = None,
    verify: ssl.SSLContext | bool = True,
    timeout: float = 300.0,
) -> Client:
    """Open a session and make it the one ``nd`` uses.

    ``url`` None means ``GRADSERVE_URL`` when set, else the engine in this
    process (no server). ``seed`` seeds the session's generator (any integer, modulo
    2**64, as ``nd.random.seed``). ``sync=True``
    sends every op at once (for debugging: errors surface at their line).
    ``verify``: for an ``https`` URL, the certificates to trust (see ``Http``).
    ``timeout``: seconds a request may wait without a byte of its reply before
    it is sent again on a new connection (the server replays a batch that ran);
    a server whose machine is gone is noticed sooner (TCP keepalive).
    """
    client = Client(from_env(url, api_key, seed, verify, timeout), sync=sync)
    old = set_current(client)
    if old is not None:
        try:
            old.close()
        except MXNetError:
            pass
    return client


__all__ = [
    "AutogradError",
    "BooleanIndexError",
    "ChangeLost",
    "Client",
    "ConnectionLost",
    "Context",
    "DTypeError",
    "Http",
    "HybridFunction",
    "InProcess",
    "IndexKindError",
    "IndexOutOfRange",
    "InvalidInput",
    "MXNetError",
    "NDArray",
    "NotTraceable",
    "QuotaExceeded",
    "SessionClosed",
    "SessionForked",
    "SessionLost",
    "ShapeError",
    "Unauthorized",
    "UnknownDType",
    "autograd",
    "connect",
    "cpu",
    "cpu_pinned",
    "current",
    "current_context",
    "hybridize",
    "nd",
    "random",
]
