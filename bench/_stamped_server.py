"""``python -m gradserve`` with clock stamps on the batch route, for bench/timeline_remote.py.

Wraps four functions of server/fast.py (the route, its body read, its run, its reply) to note
``time.perf_counter()`` as each begins or ends; on SIGTERM the stamps go as JSON to the file named
by ``GRADSERVE_STAMPS``. ``perf_counter`` is CLOCK_MONOTONIC on Linux, one clock for every
process of the machine: the client's stamps and these fall on one time line.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Any

from gradserve.cli import main
from gradserve.server import fast

STAMPS: list[tuple[str, float]] = []


def _wrap(name: str, before: str | None, after: str | None) -> None:
    fn = getattr(fast, name)

    async def stamped(*args: Any, **kwargs: Any) -> Any:
        if before:
            STAMPS.append((before, time.perf_counter()))
        out = await fn(*args, **kwargs)
        if after:
            STAMPS.append((after, time.perf_counter()))
        return out

    setattr(fast, name, stamped)  # _batch looks these up in the module at each call


_wrap("batch", "server: request in", "server: route done")
_wrap("_read_body", None, "server: body read")
_wrap("run_sliced", "server: batch decoded", "server: batch run")
_wrap("respond", None, "server: reply written")


def _dump(signum: int, frame: Any) -> None:
    """SIGTERM: uvicorn catches it, shuts down, then raises it again with this handler in place."""
    with open(os.environ["GRADSERVE_STAMPS"], "w") as f:
        json.dump(STAMPS, f)
    sys.exit(0)


signal.signal(signal.SIGTERM, _dump)


if __name__ == "__main__":
    sys.exit(main())
