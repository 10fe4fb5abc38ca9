"""Test-only instrumentation of the service process the chaos suite starts (``python -m tickgate serve``).

Python imports ``sitecustomize`` at start-up from ``sys.path``; the suite puts this directory on the child's
``PYTHONPATH`` and names a file in ``TICKGATE_CHAOS_PROBE``. Every second the running event loop writes its
live asyncio task count there, so a task leak is visible from outside without an API for it. Without the
variable this module does nothing.
"""

from __future__ import annotations

import os

_PATH = os.environ.get("TICKGATE_CHAOS_PROBE")

if _PATH:
    import asyncio
    import contextlib
    import json
    import threading
    import time

    _loops: list[asyncio.AbstractEventLoop] = []
    _set_running_loop = asyncio.events._set_running_loop

    def _tracking_set_running_loop(loop: asyncio.AbstractEventLoop | None) -> None:
        """Every loop (asyncio's or uvloop's, which looks this up when it is imported) announces itself
        here when it starts running."""
        if loop is not None and loop not in _loops:
            _loops.append(loop)
        _set_running_loop(loop)

    asyncio.events._set_running_loop = _tracking_set_running_loop
    asyncio._set_running_loop = _tracking_set_running_loop

    def _write(loop: asyncio.AbstractEventLoop, path: str) -> None:
        """Runs on the loop itself: ``all_tasks`` is not safe from another thread."""
        body = {"tasks": len(asyncio.all_tasks(loop)), "at": time.time()}
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            json.dump(body, f)
        os.replace(tmp, path)

    def _poll(path: str) -> None:
        while True:
            time.sleep(1.0)
            for loop in list(_loops):
                if loop.is_running():
                    with contextlib.suppress(RuntimeError):  # closed between the check and the call
                        loop.call_soon_threadsafe(_write, loop, path)

    threading.Thread(target=_poll, args=(_PATH,), name="chaos-probe", daemon=True).start()
