"""Tenants: the nonce from which each tenant's storefront user-token secret is derived.

Revision ID: 0011_user_token_secret
Revises: 0010
Create Date: 2026-12-04
"""

from migrations.helpers import execute_script

revision = "0011_user_token_secret"
down_revision = "0010"
branch_labels = None
depends_on = None

UPGRADE = r"""
-- Only a random nonce is stored: the secret is HMAC(server secret, tenant, nonce), so a copy of
-- the database alone cannot sign user tokens. Rotating the secret replaces the nonce.
ALTER TABLE tenants ADD COLUMN user_token_nonce text;
"""

DOWNGRADE = r"""
ALTER TABLE tenants DROP COLUMN IF EXISTS user_token_nonce;
"""


def upgrade() -> None:
    execute_script(UPGRADE)


def downgrade() -> None:
    execute_script(DOWNGRADE)
