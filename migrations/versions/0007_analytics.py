"""Analytics: per-product daily aggregates, exact per-day user bitmaps, refresh indexes.

Revision ID: 0007
Revises: 0001
Create Date: 2026-11-28
"""

from migrations.helpers import execute_script

revision = "0007"
down_revision = "0001"
branch_labels = None
depends_on = None

UPGRADE = r"""
-- Per tenant and product and UTC day, for top products without scanning raw events.
CREATE TABLE analytics_product_daily (
    tenant_id uuid NOT NULL,
    day date NOT NULL,
    product_id text NOT NULL,
    impressions bigint NOT NULL DEFAULT 0,
    clicks bigint NOT NULL DEFAULT 0,
    conversions bigint NOT NULL DEFAULT 0,
    revenue numeric(16, 4) NOT NULL DEFAULT 0,
    attributed_revenue numeric(16, 4) NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, day, product_id)
);

-- A dense number per tenant and user id, so one day's active users fit in a bitmap whose
-- union over any days counts distinct users exactly.
CREATE TABLE analytics_users (
    tenant_id uuid NOT NULL,
    user_id text NOT NULL,
    idx integer NOT NULL,
    PRIMARY KEY (tenant_id, user_id),
    CONSTRAINT analytics_users_idx UNIQUE (tenant_id, idx)
);

-- Placement '' and strategy '' hold every user of the day; other rows the users who saw or
-- clicked recommendations of one placement and strategy (as in analytics_daily).
CREATE TABLE analytics_daily_users (
    tenant_id uuid NOT NULL,
    day date NOT NULL,
    placement_id text NOT NULL DEFAULT '',
    strategy text NOT NULL DEFAULT '',
    users bytea NOT NULL,
    PRIMARY KEY (tenant_id, day, placement_id, strategy)
);

-- Finding days touched by late arrivals: received_at grows with insertion order, so a BRIN
-- index is tiny and does not slow ingestion down.
CREATE INDEX events_received_brin ON events USING brin (received_at);
CREATE INDEX revenue_attributions_created ON revenue_attributions (created_at);
"""

DOWNGRADE = r"""
DROP INDEX IF EXISTS revenue_attributions_created;
DROP INDEX IF EXISTS events_received_brin;
DROP TABLE IF EXISTS analytics_daily_users;
DROP TABLE IF EXISTS analytics_users;
DROP TABLE IF EXISTS analytics_product_daily;
"""


def upgrade() -> None:
    execute_script(UPGRADE)


def downgrade() -> None:
    execute_script(DOWNGRADE)
