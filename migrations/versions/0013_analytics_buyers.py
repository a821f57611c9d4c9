"""Analytics: buyers per day (users with a purchase), so conversionRate = buyers / activeUsers
can be read from the daily aggregates, and the users of each funnel step per day.

Revision ID: 0013
Revises: 0011_user_token_secret
Create Date: 2026-12-04
"""

from migrations.helpers import execute_script

revision = "0013"
down_revision = "0011_user_token_secret"
branch_labels = None
depends_on = None

UPGRADE = r"""
-- NULL: the day was aggregated before buyers were counted. Such a day is read from the raw
-- events while they are kept, and the refresh recounts it (see store.analytics).
ALTER TABLE analytics_daily ADD COLUMN buyers bigint;
-- The day's buyers as a bitmap over analytics_users.idx (totals row only), so distinct buyers
-- over any days are an exact union.
ALTER TABLE analytics_daily_users ADD COLUMN buyers bytea;
-- Likewise the day's users who viewed a product, clicked a recommendation and added to cart:
-- the funnel's steps over any days are intersections of unions of these.
ALTER TABLE analytics_daily_users ADD COLUMN viewers bytea;
ALTER TABLE analytics_daily_users ADD COLUMN clickers bytea;
ALTER TABLE analytics_daily_users ADD COLUMN carters bytea;
"""

DOWNGRADE = r"""
ALTER TABLE analytics_daily_users DROP COLUMN IF EXISTS carters;
ALTER TABLE analytics_daily_users DROP COLUMN IF EXISTS clickers;
ALTER TABLE analytics_daily_users DROP COLUMN IF EXISTS viewers;
ALTER TABLE analytics_daily_users DROP COLUMN IF EXISTS buyers;
ALTER TABLE analytics_daily DROP COLUMN IF EXISTS buyers;
"""


def upgrade() -> None:
    execute_script(UPGRADE)


def downgrade() -> None:
    execute_script(DOWNGRADE)
