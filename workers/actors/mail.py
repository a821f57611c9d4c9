"""Mail actors: send what the outbox holds."""

from __future__ import annotations

import asyncio
import logging
import smtplib

import dramatiq

from store.mail import OutboxMail, claim_mail, mark_failed, mark_sent, pending_mail_ids, send_smtp
from store.settings import Settings, get_settings
from workers import broker as _broker  # noqa: F401  (binds actors to the configured broker)
from workers.runtime import db_pool

log = logging.getLogger("recomengine.mail")

# Refusals that another attempt will not change: a bad smtp_url or an address the server rejects.
PERMANENT_ERRORS = (ValueError, smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused)


async def _deliver(settings: Settings, mail: OutboxMail) -> None:
    if settings.smtp_url:
        await asyncio.to_thread(send_smtp, settings.smtp_url, sender=settings.mail_from, mail=mail)
        return
    # Bodies carry one-time links: the log says that a mail left, never what it said.
    log.info("mail logged without SMTP", extra={"mail_id": mail.id, "subject": mail.subject})


@dramatiq.actor(queue_name="maintenance", max_retries=5, time_limit=60_000, throws=PERMANENT_ERRORS)
async def send_mail(mail_id: int) -> bool:
    """Send outbox mail `mail_id` once; True when this call sent it (idempotent)."""
    settings = get_settings()
    pool = await db_pool()
    failure: Exception | None = None
    async with pool.acquire() as connection, connection.transaction():
        # The row lock is held while sending, so a duplicate delivery skips instead of resending.
        mail = await claim_mail(connection, mail_id=mail_id)
        if mail is None:
            return False
        try:
            await _deliver(settings, mail)
        except (smtplib.SMTPException, OSError, ValueError) as exc:
            failure = exc
            await mark_failed(connection, mail_id=mail_id, error=f"{type(exc).__name__}: {exc}")
        else:
            await mark_sent(connection, mail_id=mail_id)
    if failure is not None:
        raise failure
    return True


@dramatiq.actor(queue_name="maintenance", max_retries=0, time_limit=60_000)
async def send_pending_mail() -> int:
    """Enqueue a send for every unsent outbox mail (catches mails whose enqueue was lost)."""
    pool = await db_pool()
    mail_ids = await pending_mail_ids(pool)
    for mail_id in mail_ids:
        send_mail.send(mail_id)
    return len(mail_ids)
