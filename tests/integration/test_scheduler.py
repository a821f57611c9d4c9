"""The scheduler's lock: however many schedulers fire a job for one slot, it is enqueued once."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
import uuid

from conftest import ROOT, Process, Services, settings_env
from redis import Redis

from scheduler.lease import LeaderLease
from scheduler.schedule import JOBS
from store.settings import Settings

# One scheduler process: declares a probe actor on its own queue (no worker consumes it, so the
# enqueued messages stay countable) and fires the probe job for each slot given.
_SCHEDULER = textwrap.dedent(
    """
    import json, sys
    from datetime import datetime

    import dramatiq
    from redis import Redis

    import workers.main  # noqa: F401  (the real broker and actors, as the scheduler loads them)
    from scheduler.run import fire
    from scheduler.schedule import Job
    from store.settings import get_settings

    queue, actor_name, *slots = sys.argv[1:]

    @dramatiq.actor(queue_name=queue, actor_name=actor_name, max_retries=0, time_limit=1000)
    def probe(**kwargs):
        pass

    redis = Redis.from_url(get_settings().redis_url)
    job = Job("lock-probe-" + queue, actor_name, "interval", {"minutes": 1}, {"marker": queue})
    print(json.dumps([fire(job, redis, slot=datetime.fromisoformat(s)) for s in slots]))
    """
)


def _scheduler(settings: Settings, queue: str, actor: str, *slots: str) -> list[bool]:
    done = subprocess.run(
        [sys.executable, "-c", _SCHEDULER, queue, actor, *slots],
        env=settings_env(settings),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_two_fires_of_one_job_and_slot_enqueue_once_across_schedulers(
    migrated: Settings,
) -> None:
    queue = f"schedtest{uuid.uuid4().hex[:10]}"
    actor = f"probe_{queue}"
    first_slot, second_slot = "2026-01-01T03:17:00+00:00", "2026-01-01T03:18:00+00:00"
    # Seconds within the minute are the same slot.
    assert _scheduler(migrated, queue, actor, first_slot, "2026-01-01T03:17:40+00:00") == [
        True,
        False,
    ]
    # A second scheduler process: the slot already fired stays fired; the next one fires.
    assert _scheduler(migrated, queue, actor, first_slot, second_slot) == [False, True]
    broker = Redis.from_url(migrated.broker_url)
    try:
        messages = [json.loads(m) for m in broker.hvals(f"dramatiq:{queue}.msgs")]
    finally:
        broker.close()
    assert len(messages) == 2
    assert {m["actor_name"] for m in messages} == {actor}
    assert all(m["kwargs"] == {"marker": queue} for m in messages)


def test_the_housekeeping_jobs_are_scheduled() -> None:
    scheduled = {job.name: job.actor for job in JOBS}
    assert scheduled["flush-api-key-last-used"] == "flush_api_key_last_used"
    assert scheduled["purge-deleted-tenants"] == "purge_deleted_tenants"


def test_every_job_is_aligned_on_the_wall_clock() -> None:
    assert all(job.trigger == "cron" for job in JOBS), [j.name for j in JOBS if j.trigger != "cron"]


def test_one_leader_holds_the_lease_until_it_lapses_or_is_released(migrated: Settings) -> None:
    redis = Redis.from_url(migrated.redis_url)
    key = f"test:lease:{uuid.uuid4().hex}"
    try:
        first = LeaderLease(redis, key=key, ttl_seconds=0.3)
        second = LeaderLease(redis, key=key, ttl_seconds=0.3)
        assert first.hold() and first.hold()
        assert not second.hold()
        time.sleep(0.4)  # the first stopped renewing: the lease lapses
        assert second.hold() and not first.hold()
        second.release()
        assert first.hold()
    finally:
        redis.delete(key)
        redis.close()


def test_two_scheduler_processes_fire_each_job_once(migrated: Settings, services: Services) -> None:
    # A broker database no worker reads and a Redis database of their own for lease and locks.
    settings = migrated.model_copy(
        update={
            "broker_url": services.redis.url(7),
            "redis_url": services.redis.url(8),
            "log_level": "INFO",
        }
    )
    broker = Redis.from_url(settings.broker_url)
    broker.flushdb()
    schedulers = [
        Process(["scheduler"], settings_env(settings), services.workdir / f"scheduler-{i}.log")
        for i in range(2)
    ]
    try:
        for process in schedulers:
            process.start()
        deadline = time.monotonic() + 60
        while not all("scheduler started" in p.log() for p in schedulers):
            assert time.monotonic() < deadline, [p.log()[-2000:] for p in schedulers]
            time.sleep(0.2)
        # Wait past the next minute boundary. When it is too close to call, let its firings
        # happen, forget them, and count the boundary after.
        now = time.time()
        boundary = (now // 60 + 1) * 60
        if boundary - now < 3:
            time.sleep(boundary - now + 2)
            broker.flushdb()
            boundary += 60
        time.sleep(boundary - time.time() + 4)
        fired: dict[str, int] = {}
        for key in broker.scan_iter("dramatiq:*.msgs"):
            for body in broker.hvals(key):
                actor = json.loads(body)["actor_name"]
                fired[actor] = fired.get(actor, 0) + 1
    finally:
        for process in schedulers:
            process.stop()
        broker.flushdb()
        broker.close()
    # Every minute's jobs fired, each once, though two schedulers ran.
    assert fired.get("send_pending_mail") == 1, fired
    assert fired.get("flush_api_key_last_used") == 1, fired
    assert all(count == 1 for count in fired.values()), fired
