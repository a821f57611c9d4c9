"""The mail outbox in PostgreSQL and its SMTP adapter.

A mail is written to `mail_outbox` in the same transaction as what caused it, so it is never lost
when the broker or the SMTP server is down; an actor sends it and marks it sent.
"""

from __future__ import annotations

import smtplib
from dataclasses import dataclass, replace
from email.message import EmailMessage
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg

MAX_ATTEMPTS = 10
# Where a reset mail's link token goes; it is filled in only when the mail is sent.
RESET_TOKEN_PLACEHOLDER = "{reset_token}"  # noqa: S105


@dataclass(frozen=True)
class OutboxMail:
    """One mail waiting in the outbox."""

    id: int
    to_address: str
    subject: str
    body: str
    attempts: int


async def enqueue_mail(
    connection: asyncpg.Pool | asyncpg.Connection,
    *,
    to_address: str,
    subject: str,
    body: str,
    password_reset_id: str | None = None,
) -> int:
    """Put a mail in the outbox; its id is what the sender actor takes."""
    mail_id = await connection.fetchval(
        "INSERT INTO mail_outbox (to_address, subject, body, password_reset_id) "
        "VALUES ($1, $2, $3, $4) RETURNING id",
        to_address,
        subject,
        body,
        password_reset_id,
    )
    return int(mail_id)


async def pending_mail_ids(
    pool: asyncpg.Pool, *, older_than_seconds: int = 60, limit: int = 100
) -> list[int]:
    """Ids of unsent mails with attempts left, oldest first.

    Fresh mails are left out: their own message is still on its way to a worker.
    """
    rows = await pool.fetch(
        "SELECT id FROM mail_outbox WHERE sent_at IS NULL AND attempts < $1 "
        "AND created_at < now() - make_interval(secs => $2) ORDER BY id LIMIT $3",
        MAX_ATTEMPTS,
        float(older_than_seconds),
        limit,
    )
    return [int(row["id"]) for row in rows]


def _mail(row: asyncpg.Record) -> OutboxMail:
    return OutboxMail(
        id=int(row["id"]),
        to_address=row["to_address"],
        subject=row["subject"],
        body=row["body"],
        attempts=int(row["attempts"]),
    )


async def claim_mail(
    connection: asyncpg.Connection, *, mail_id: int, link_secret: str | None = None
) -> OutboxMail | None:
    """The unsent mail `mail_id`, row-locked for this transaction, with its reset link rendered;
    None when sent or taken.

    SKIP LOCKED lets a second delivery of the same message return at once instead of sending
    the mail twice. `link_secret` defaults to this process's JWT secret.
    """
    row = await connection.fetchrow(
        "SELECT id, to_address, subject, body, attempts, password_reset_id FROM mail_outbox "
        "WHERE id = $1 AND sent_at IS NULL FOR UPDATE SKIP LOCKED",
        mail_id,
    )
    if row is None:
        return None
    mail = _mail(row)
    if row["password_reset_id"] is not None:
        from store.auth_tokens import reset_link_token
        from store.settings import get_settings

        secret = link_secret if link_secret is not None else get_settings().jwt_secret
        token = reset_link_token(str(row["password_reset_id"]), secret=secret)
        mail = replace(mail, body=mail.body.replace(RESET_TOKEN_PLACEHOLDER, token))
    return mail


async def mark_sent(connection: asyncpg.Connection, *, mail_id: int) -> None:
    """Record that the mail left."""
    await connection.execute(
        "UPDATE mail_outbox SET sent_at = now(), attempts = attempts + 1, last_error = NULL "
        "WHERE id = $1",
        mail_id,
    )


async def mark_failed(connection: asyncpg.Connection, *, mail_id: int, error: str) -> None:
    """Record a failed attempt and why."""
    await connection.execute(
        "UPDATE mail_outbox SET attempts = attempts + 1, last_error = $2 WHERE id = $1",
        mail_id,
        error[:1000],
    )


def send_smtp(smtp_url: str, *, sender: str, mail: OutboxMail, timeout_seconds: float = 30) -> None:
    """Send one mail through `smtp://[user:pass@]host[:port][?starttls=1]` or `smtps://...`.

    Blocking: async callers run it in a thread.
    """
    url = urlsplit(smtp_url)
    if url.scheme not in {"smtp", "smtps"} or not url.hostname:
        raise ValueError("smtp_url must look like smtp://host:port or smtps://host:port")
    message = EmailMessage()
    message["From"] = sender
    message["To"] = mail.to_address
    message["Subject"] = mail.subject
    message.set_content(mail.body)
    starttls = parse_qs(url.query).get("starttls", ["0"])[-1].lower() in {"1", "true", "yes"}
    client_class = smtplib.SMTP_SSL if url.scheme == "smtps" else smtplib.SMTP
    port = url.port or (465 if url.scheme == "smtps" else 25)
    with client_class(url.hostname, port, timeout=timeout_seconds) as client:
        if starttls:
            client.starttls()
        if url.username:
            client.login(unquote(url.username), unquote(url.password or ""))
        client.send_message(message)
