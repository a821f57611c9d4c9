"""The scheduler process: fires the jobs of the schedule.

However many schedulers run, each firing is enqueued once: only the holder of a leader lease in
Redis fires, every job is aligned on the wall clock (so a new leader keeps the same slots), and
a Redis lock per job and slot guards the hand-over between two leaders.
"""

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
from redis.exceptions import RedisError

from scheduler.lease import LeaderLease
from scheduler.schedule import JOBS, Job
from store import keys
from store.logs import configure_logging
from store.settings import get_settings

log = logging.getLogger("recomengine.scheduler")
LEASE_SECONDS = 15.0
RENEW_EVERY_SECONDS = 5


def fire(
    job: Job, redis: Redis, *, slot: datetime | None = None, lease: LeaderLease | None = None
) -> bool:
    """Enqueue `job` unless this scheduler does not lead (`lease`) or another one already fired
    it for this slot."""
    slot = (slot or datetime.now(UTC)).replace(second=0, microsecond=0)
    if lease is not None and not lease.hold():
        log.debug("not the leader; job left to it", extra={"job": job.name})
        return False
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


def renew(lease: LeaderLease) -> None:
    """Keep (or take over) the lease between firings."""
    try:
        leading = lease.hold()
    except RedisError:
        log.warning("could not renew the scheduler lease", exc_info=True)
        return
    log.debug("scheduler lease", extra={"leading": leading})


def run() -> None:
    """Run the scheduler in the foreground until SIGTERM/SIGINT."""
    settings = get_settings()
    configure_logging(settings.log_level)
    import workers.main  # noqa: F401  (registers the actors with the broker)

    redis = Redis.from_url(settings.redis_url)
    lease = LeaderLease(redis, key=keys.SCHEDULER_LEADER, ttl_seconds=LEASE_SECONDS)
    scheduler = BlockingScheduler(timezone="UTC")
    for job in JOBS:
        scheduler.add_job(
            fire,
            job.trigger,
            args=[job, redis],
            kwargs={"lease": lease},
            id=job.name,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=300,
            **job.trigger_args,
        )
    scheduler.add_job(renew, "interval", args=[lease], seconds=RENEW_EVERY_SECONDS, id="lease")
    renew(lease)

    scheduler.add_job(beat, "interval", seconds=HEARTBEAT_SECONDS, args=[redis], id="heartbeat")
    beat(redis)

    def stop(*_: Any) -> None:
        scheduler.shutdown(wait=False)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("scheduler started", extra={"jobs": [job.name for job in JOBS]})
    try:
        scheduler.start()
    finally:
        try:
            lease.release()
        except RedisError:
            pass
