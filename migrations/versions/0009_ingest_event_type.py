"""Events: a row type for the ingest insert, which sends one array of rows per group.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28
"""

from migrations.helpers import execute_script

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

UPGRADE = r"""
-- The worker sends a group's events as one array of these rather than eleven arrays of
-- scalars: asyncpg type-checks every element of an array parameter in Python (two abstract
-- class checks for each text), so one row per event costs it a few checks instead of about
-- eighteen. Price and flags travel as text and are cast in the insert.
CREATE TYPE ingest_event AS (
    id text, type text, user_id text, product_id text, session_id text, meta text,
    placement text, rec text, price text, flags text, ts timestamptz
);
"""

DOWNGRADE = r"""
DROP TYPE IF EXISTS ingest_event;
"""


def upgrade() -> None:
    execute_script(UPGRADE)


def downgrade() -> None:
    execute_script(DOWNGRADE)
