"""The one-worker-per-home lock: only the process holding an exclusive ``fcntl`` lock on
``DGX_MUSIC_HOME/worker.lock`` runs the worker loop and loads models (see ``mcp_server.worker``)."""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO

# The worker's lines keep one logger name, whichever of its modules writes them: operators filter by it.
log = logging.getLogger("mcp_server.worker")


def acquire(lock_file: Path, stop: threading.Event, on_standby: Callable[[], None]) -> IO[str] | None:
    """Hold ``lock_file`` for the life of the worker; wait as a standby while another process holds it.

    ``on_standby`` is called once, when the lock is first found held elsewhere. Returns the open handle
    (closing it releases the lock), or None when ``stop`` was set before the lock was free.
    """
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    handle = lock_file.open("a+")
    announced = False
    while not stop.is_set():
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not announced:
                log.info("another process holds %s; this one queues and reads only", lock_file)
                on_standby()
                announced = True
            stop.wait(1.0)
            continue
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        return handle
    handle.close()
    return None
