"""Analytics: buyers per day (users with a purchase), so conversionRate = buyers / activeUsers
can be read from the daily aggregates, and the users of each funnel step per day.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04
"""

from migrations.helpers import execute_script

revision = "0013"
down_revision = "0012"
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
-- Each numbered user's holdout bucket (domain.holdout: the SHA-256 bucket of
-- 'holdout:{tenant}:{user}' in [0, 10000)), so the holdout's active users are counted over the
-- day bitmaps without hashing every user at read time.
ALTER TABLE analytics_users ADD COLUMN holdout_bucket smallint;
UPDATE analytics_users a SET holdout_bucket = {bucket}
FROM (SELECT tenant_id, user_id,
             sha256(convert_to('holdout:' || tenant_id::text || ':' || user_id, 'UTF8')) AS d
      FROM analytics_users) h
WHERE h.tenant_id = a.tenant_id AND h.user_id = a.user_id;
-- The period's purchases per user (revenue per visitor of the holdout) without a scan of
-- every event; purchases are a small share of the events.
CREATE INDEX events_tenant_purchases ON events (tenant_id, occurred_at)
    WHERE event_type = 'purchase';
"""

DOWNGRADE = r"""
DROP INDEX IF EXISTS events_tenant_purchases;
ALTER TABLE analytics_users DROP COLUMN IF EXISTS holdout_bucket;
ALTER TABLE analytics_daily_users DROP COLUMN IF EXISTS carters;
ALTER TABLE analytics_daily_users DROP COLUMN IF EXISTS clickers;
ALTER TABLE analytics_daily_users DROP COLUMN IF EXISTS viewers;
ALTER TABLE analytics_daily_users DROP COLUMN IF EXISTS buyers;
ALTER TABLE analytics_daily DROP COLUMN IF EXISTS buyers;
"""


def _bucket(digest: str) -> str:
    # int.from_bytes(digest, "big") % 10000, byte by byte: 256**(31 - i) mod 10000 per byte.
    terms = " + ".join(f"get_byte({digest}, {i}) * {pow(256, 31 - i, 10_000)}" for i in range(32))
    return f"(({terms}) % 10000)"


def upgrade() -> None:
    execute_script(UPGRADE.replace("{bucket}", _bucket("h.d")))


def downgrade() -> None:
    execute_script(DOWNGRADE)
