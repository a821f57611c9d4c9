"""Usage actor: copy the usage meters to PostgreSQL and raise the allowance alerts."""

from __future__ import annotations

from datetime import UTC, datetime

import dramatiq

from store.usage import meter_all
from workers import broker as _broker  # noqa: F401  (binds actors to the configured broker)
from workers.actors.mail import send_mail
from workers.runtime import db_pool, redis_client


@dramatiq.actor(queue_name="maintenance", max_retries=3, time_limit=300_000)
async def meter_usage() -> int:
    """Copy every tenant's metered days of this month to usage_daily, record the thresholds
    reached (once each per month) and send their mails; returns the rows written."""
    written, mail_ids = await meter_all(await db_pool(), redis_client(), now=datetime.now(UTC))
    for mail_id in mail_ids:
        send_mail.send(mail_id)
    return written
