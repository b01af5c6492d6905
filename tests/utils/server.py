"""The app served by a real uvicorn in a thread of the test process, for tests that need
concurrent connections (races, long polls held open) while still seeing the process's state."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import uvicorn
from starlette.applications import Starlette

from bot import wake

#: Checks of whether the server started, STARTUP_PAUSE seconds apart.
STARTUP_ATTEMPTS = 400

#: Seconds between two checks.
STARTUP_PAUSE = 0.05

#: Seconds the server may take to stop.
STOP_TIMEOUT = 30.0


@contextmanager
def serving(app: Starlette) -> Iterator[str]:
    """Serves `app` on a free local port; yields its base URL, then stops it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # log_config=None: the test process's logging stays as pytest set it (uvicorn's own
    # config would stop its loggers propagating, hiding their records from later tests).
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", log_config=None
        )
    )
    thread = threading.Thread(target=server.run, name="test-server", daemon=True)
    thread.start()
    for _ in range(STARTUP_ATTEMPTS):
        if server.started or not thread.is_alive():
            break
        time.sleep(STARTUP_PAUSE)
    assert server.started, "the test server did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        app.state.stopping = True
        wake.wake_all()
        server.should_exit = True
        thread.join(STOP_TIMEOUT)


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Waits (a bounded number of checks) until `condition()` is true."""
    for _ in range(STARTUP_ATTEMPTS):
        if condition():
            return
        time.sleep(STARTUP_PAUSE)
    raise AssertionError(f"never happened: {what}")
