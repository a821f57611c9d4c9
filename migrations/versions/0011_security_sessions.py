"""Security: a per-admin session version, reset links kept out of the outbox in clear, and an
audit trail of shoppers' erasures.

Revision ID: 0011
Revises: 0009
Create Date: 2026-12-04
"""

from migrations.helpers import execute_script

revision = "0011"
down_revision = "0009"
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
"""

DOWNGRADE = r"""
DROP TABLE IF EXISTS user_erasures;
ALTER TABLE mail_outbox DROP COLUMN IF EXISTS password_reset_id;
ALTER TABLE admins DROP COLUMN IF EXISTS session_version;
"""


def upgrade() -> None:
    execute_script(UPGRADE)


def downgrade() -> None:
    execute_script(DOWNGRADE)
