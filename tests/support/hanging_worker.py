"""Loaded into a Dramatiq worker process beside workers.main: its worker threads hang before
each message, blocked on a lock as threads stuck in a log handler were, while its consumers
keep fetching and heartbeating. They go on once the file named by
RECOMENGINE_TEST_RELEASE_FILE exists."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from dramatiq.middleware import Middleware

from workers.broker import broker

_released = threading.Event()


def _watch_release() -> None:
    release = Path(os.environ["RECOMENGINE_TEST_RELEASE_FILE"])
    while not release.exists():
        time.sleep(0.1)
    _released.set()


class HangBeforeEachMessage(Middleware):
    """Blocks every worker thread before it runs a message, until released."""

    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        """Watch for the release file."""
        threading.Thread(target=_watch_release, daemon=True).start()

    def before_process_message(self, broker: Any, message: Any) -> None:
        """Wait, uninterruptibly (a time limit cannot break into a lock wait)."""
        _released.wait()


broker.add_middleware(HangBeforeEachMessage())
