"""Events: an index of recommendation clicks per user and product, for attribution look-ups.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28
"""

from migrations.helpers import execute_script

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

UPGRADE = r"""
-- Attribution looks for the clicks of one user on one product in the 30 minutes before a
-- purchase. The dedupe key could serve it, but when the planner's row estimates bottom out
-- (a partition or a tenant it has no statistics for yet) it picks the smallest index that
-- matches (tenant and product, or tenant and time) and scans every event of the product or of
-- the tenant in the window, for every purchase: the ingest transaction then slows down as
-- traffic grows. This index holds the clicks alone, so it is both the smallest and the most
-- selective: one probe per purchase.
CREATE INDEX events_recommendation_clicks ON events (tenant_id, user_id, product_id, occurred_at)
    WHERE event_type = 'recommendation_clicked';
"""

DOWNGRADE = r"""
DROP INDEX IF EXISTS events_recommendation_clicks;
"""


def upgrade() -> None:
    execute_script(UPGRADE)


def downgrade() -> None:
    execute_script(DOWNGRADE)
