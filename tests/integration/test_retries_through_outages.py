"""A message that failed because Redis died keeps its retry: the retry waits for Redis."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import dramatiq
import pytest
from dramatiq.broker import MessageProxy

from cli.localservices import RedisServer, free_port
from workers import broker as broker_module
from workers.broker import RetriesThroughOutages, build_broker


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own, which it kills and starts again."""
    server = RedisServer(data_dir=tmp_path / "redis", port=free_port())
    server.start()
    yield server
    server.stop()


def test_a_retry_that_meets_redis_down_is_queued_once_redis_is_back(
    own_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(broker_module, "RETRY_ENQUEUE_PAUSE_SECONDS", 0.1)
    broker = build_broker(own_redis.url())

    @dramatiq.actor(broker=broker, queue_name="outage_probe", max_retries=5)
    def probe() -> None:
        """Never run: only its retry is queued."""

    message = MessageProxy(probe.message())
    retries = next(m for m in broker.middleware if isinstance(m, RetriesThroughOutages))
    os.kill(int((own_redis.data_dir / "redis.pid").read_text()), signal.SIGKILL)
    # The worker thread's view: the actor failed (Redis died under it), the retry is queued.
    failed = ConnectionError("Redis went away while the message's projections were applied")
    retrying = threading.Thread(
        target=retries.after_process_message, args=(broker, message), kwargs={"exception": failed}
    )
    retrying.start()
    time.sleep(1)
    assert retrying.is_alive(), "the retry was given up while Redis was down"
    own_redis.start()
    retrying.join(timeout=30)
    assert not retrying.is_alive()
    assert not message.failed and message.options["retries"] == 1
    queued = cast(list[bytes], broker.client.hvals("dramatiq:outage_probe.DQ.msgs"))
    assert [dramatiq.Message.decode(raw).message_id for raw in queued] == [message.message_id]
    broker.close()
