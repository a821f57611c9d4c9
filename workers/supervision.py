"""What keeps a worker process honest: it dies with its pool's parent, and its logging can
never block its work.

Dramatiq's worker processes log through a pipe that their parent reads. When the parent dies,
nobody reads it any more (each child also holds the pipe's read end, so writes never fail):
once the pipe's buffer is full, the first thread that logs blocks inside the handler's lock
and every other thread that logs queues up behind it, while the consumer threads keep
fetching and heartbeating. So each worker process writes its own JSON lines instead, through a
bounded queue that drops lines rather than wait, and exits as soon as its parent is gone.
"""

from __future__ import annotations

import ctypes
import io
import logging
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
from logging.handlers import QueueHandler, QueueListener
from typing import Any

import dramatiq
from dramatiq.middleware import CurrentMessage, Middleware
from prometheus_client import CollectorRegistry, Counter

from store.logs import JsonFormatter
from store.settings import get_settings

# prctl(2) option: the signal this process gets when the thread that created it exits.
_PR_SET_PDEATHSIG = 1
# How often the fallback watch looks at the parent (where prctl is missing, and for the window
# between the fork and the prctl call, when the parent may already have died).
PARENT_WATCH_SECONDS = 1.0
# Log lines that may wait for a slow log reader before new ones are dropped.
LOG_QUEUE_LINES = 10_000


def die_with_parent(parent_pid: int) -> None:
    """Make this process exit when `parent_pid` is no longer its parent: SIGKILL from the
    kernel on Linux, and a watch thread everywhere (checked once a second)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the watch below does the work

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_WATCH_SECONDS)
        # Unacked messages go back to the queue once this process's heartbeat is stale; a
        # graceful stop could wait forever on a thread that is stuck.
        os._exit(1)

    if os.getppid() != parent_pid:
        os._exit(1)
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class DroppingQueueHandler(QueueHandler):
    """Hands records to a bounded queue and drops them when it is full, counting the drops."""

    def __init__(self, lines: queue.Queue[Any], dropped: Counter | None = None) -> None:
        super().__init__(lines)
        self.dropped = dropped

    def enqueue(self, record: logging.LogRecord) -> None:
        """Queue the record, or drop it without waiting."""
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            if self.dropped is not None:
                self.dropped.inc()


class MessageContext(logging.Filter):
    """Adds the message id, actor, queue and tenant of the message being processed."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Annotate the record; never drops it."""
        message = CurrentMessage.get_current_message()
        if message is not None:
            record.message_id = message.message_id
            record.actor = message.actor_name
            record.queue = message.queue_name
            tenant = message.kwargs.get("tenant_id")
            if tenant is None and message.args and isinstance(message.args[0], str):
                tenant = message.args[0]  # every actor that serves a tenant takes it first
            if tenant is not None:
                record.tenant_id = tenant
        return True


class _LineWriter(io.TextIOBase):
    """A text stream whose lines become log records (what reaches sys.stdout or sys.stderr)."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._pending = ""

    def writable(self) -> bool:
        """Always."""
        return True

    def write(self, text: str) -> int:
        """Log each complete line."""
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            if line.strip():
                self._logger.warning(line)
        return len(text)


class _LineSink(logging.Handler):
    """Writes each formatted record as one line to a file descriptor in non-blocking mode: a
    line the descriptor cannot take at once (a full pipe) is dropped and counted. A line of up
    to 4 KB reaches a pipe whole or not at all."""

    def __init__(self, fd: int, dropped: Counter | None) -> None:
        super().__init__()
        os.set_blocking(fd, False)
        self.fd = fd
        self.dropped = dropped

    def emit(self, record: logging.LogRecord) -> None:
        """Write the line, or drop it."""
        try:
            os.write(self.fd, (self.format(record) + "\n").encode("utf-8", "replace"))
        except OSError:  # full (EAGAIN) or broken (EPIPE)
            if self.dropped is not None:
                self.dropped.inc()


def configure_worker_logging(*, level: str, dropped: Counter | None = None) -> QueueListener:
    """Send this process's records as JSON lines to its own stderr: threads hand them to a
    bounded queue, one thread writes them without ever waiting for the reader.

    Returns the running listener (the thread that writes).
    """
    lines: queue.Queue[Any] = queue.Queue(maxsize=LOG_QUEUE_LINES)
    handler = DroppingQueueHandler(lines, dropped)
    handler.addFilter(MessageContext())
    handler.setFormatter(JsonFormatter())
    sink = _LineSink(os.dup(2), dropped)
    sink.setFormatter(logging.Formatter("%(message)s"))  # already JSON
    listener = QueueListener(lines, sink)
    listener.start()
    # A broken stream must not print a traceback per line (to a stream that may be broken too).
    logging.raiseExceptions = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("dramatiq", "recomengine"):
        logging.getLogger(name).handlers[:] = []
    # Dramatiq points both at the parent's pipe: whatever is printed goes through the queue too.
    sys.stdout = _LineWriter(logging.getLogger("recomengine.stdout"))
    sys.stderr = _LineWriter(logging.getLogger("recomengine.stderr"))
    return listener


class ProcessSupervision(Middleware):
    """In each worker process: die with the pool's parent, and log on our own terms."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.dropped = Counter(
            "recomengine_log_lines_dropped",
            "Log lines dropped because the log reader fell behind",
            registry=registry,
        )
        self._listener: QueueListener | None = None

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        """Runs in the worker process only (the api imports the broker too, but never boots)."""
        parent = multiprocessing.parent_process()
        die_with_parent(parent.pid if parent is not None and parent.pid else os.getppid())
        self._listener = configure_worker_logging(level=get_settings().log_level)

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        """Write out the lines still queued."""
        if self._listener is not None:
            try:
                self._listener.stop()
            except queue.Full:  # the writer is far behind: what it has not written is dropped
                pass
            self._listener = None
