"""Admins: the operator role, which opens the operators' console and its endpoints.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

from migrations.helpers import execute_script

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

UPGRADE = r"""
ALTER TABLE admins ADD COLUMN is_operator boolean NOT NULL DEFAULT false;
"""

DOWNGRADE = r"""
ALTER TABLE admins DROP COLUMN IF EXISTS is_operator;
"""


def upgrade() -> None:
    """Apply the revision."""
    execute_script(UPGRADE)


def downgrade() -> None:
    """Revert the revision."""
    execute_script(DOWNGRADE)
