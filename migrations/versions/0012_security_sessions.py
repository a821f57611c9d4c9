"""Security: a per-admin session version, reset links kept out of the outbox in clear, an audit
trail of shoppers' erasures, and the two DDL steps the workers take run as the schema owner.

Revision ID: 0012
Revises: 0011_user_token_secret
Create Date: 2026-12-04
"""

from migrations.helpers import execute_script

revision = "0012"
down_revision = "0011_user_token_secret"
branch_labels = None
depends_on = None

UPGRADE = r"""
-- Every access token carries the version it was issued under; logout, a password reset or a
-- password change bumps it, so the admin's older access tokens stop working at once.
ALTER TABLE admins ADD COLUMN session_version integer NOT NULL DEFAULT 0;

-- A reset mail names its reset row; the link's token is derived from that id with a server
-- secret when the mail is sent, so neither the outbox nor password_resets holds it in clear.
ALTER TABLE mail_outbox
    ADD COLUMN password_reset_id uuid REFERENCES password_resets (id) ON DELETE SET NULL;

-- One row per erasure of a shopper (DELETE /api/v1/users/{userId}): who asked, when, and what
-- was removed. The shopper is named only by a keyed digest, so the audit trail keeps nothing
-- that points back at them without the server secret.
CREATE TABLE user_erasures (
    id bigserial PRIMARY KEY,
    tenant_id uuid NOT NULL,
    user_digest text NOT NULL,
    api_key_id uuid,
    request_id text,
    removed jsonb NOT NULL,
    erased_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX user_erasures_tenant ON user_erasures (tenant_id, erased_at DESC);

-- The api and workers connect as a role that may only read and write rows. The two schema
-- changes a worker makes (a month's events partition ahead of time, dropping one past the
-- retention) run with the rights of the functions' owner, the schema owner, and touch nothing
-- but partitions of events.
ALTER FUNCTION ensure_event_partitions(date, integer)
    SECURITY DEFINER SET search_path = public, pg_temp;

CREATE FUNCTION drop_event_partition(partition_name text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_class p ON p.oid = i.inhparent
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE p.relname = 'events' AND c.relname = partition_name AND n.nspname = 'public'
            AND partition_name ~ '^events_[0-9]{4}_[0-9]{2}$'
    ) THEN
        RAISE EXCEPTION 'not a monthly partition of events: %', partition_name;
    END IF;
    EXECUTE format('ALTER TABLE events DETACH PARTITION %I', partition_name);
    EXECUTE format('DROP TABLE %I', partition_name);
END $$;
"""

DOWNGRADE = r"""
DROP FUNCTION IF EXISTS drop_event_partition(text);
ALTER FUNCTION ensure_event_partitions(date, integer) SECURITY INVOKER RESET search_path;
DROP TABLE IF EXISTS user_erasures;
ALTER TABLE mail_outbox DROP COLUMN IF EXISTS password_reset_id;
ALTER TABLE admins DROP COLUMN IF EXISTS session_version;
"""


def upgrade() -> None:
    execute_script(UPGRADE)


def downgrade() -> None:
    execute_script(DOWNGRADE)
