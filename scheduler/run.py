"""The scheduler process: fires the jobs of the schedule; a Redis lock per firing makes
sure that, however many schedulers run, each firing is enqueued once."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
from datetime import UTC, datetime
from typing import Any

import dramatiq
from apscheduler.schedulers.blocking import BlockingScheduler
from redis import Redis

from scheduler.schedule import JOBS, Job
from store import keys
from store.logs import configure_logging
from store.settings import get_settings

log = logging.getLogger("recomengine.scheduler")


def fire(job: Job, redis: Redis, *, slot: datetime | None = None) -> bool:
    """Enqueue `job` unless another scheduler already fired it for this slot."""
    slot = (slot or datetime.now(UTC)).replace(second=0, microsecond=0)
    lock_key = f"{keys.SCHEDULER_LOCK}:{job.name}:{slot.isoformat()}"
    owner = socket.gethostname()
    if not redis.set(lock_key, owner, nx=True, ex=24 * 3600):
        log.info("job already fired elsewhere", extra={"job": job.name, "slot": slot.isoformat()})
        return False
    actor = dramatiq.get_broker().get_actor(job.actor)
    actor.send(**job.kwargs)
    log.info("job fired", extra={"job": job.name, "slot": slot.isoformat()})
    return True


HEARTBEAT_SECONDS = 10


def beat(redis: Redis) -> None:
    """Tell the operators' console this scheduler is alive."""
    alive = {"host": socket.gethostname(), "pid": os.getpid(), "at": datetime.now(UTC).isoformat()}
    redis.set(keys.SCHEDULER_HEARTBEAT, json.dumps(alive), ex=HEARTBEAT_SECONDS * 3)


def run() -> None:
    """Run the scheduler in the foreground until SIGTERM/SIGINT."""
    settings = get_settings()
    configure_logging(settings.log_level)
    import workers.main  # noqa: F401  (registers the actors with the broker)

    redis = Redis.from_url(settings.redis_url)
    scheduler = BlockingScheduler(timezone="UTC")
    for job in JOBS:
        scheduler.add_job(
            fire,
            job.trigger,
            args=[job, redis],
            id=job.name,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=300,
            **job.trigger_args,
        )

    scheduler.add_job(beat, "interval", seconds=HEARTBEAT_SECONDS, args=[redis], id="heartbeat")
    beat(redis)

    def stop(*_: Any) -> None:
        scheduler.shutdown(wait=False)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("scheduler started", extra={"jobs": [job.name for job in JOBS]})
    scheduler.start()
