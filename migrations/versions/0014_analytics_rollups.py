"""Analytics rollups kept exact between refreshes: the events stored since their day's last
refresh (pending), per-day product figures packed for ranking, per-day purchases per buyer
and the holdout's lookups.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04
"""

from migrations.helpers import execute_script

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

UPGRADE = r"""
-- Events stored since their day's aggregates were last computed: ingestion adds a row in the
-- transaction that stores the event (a redelivered event is not stored again, so it adds none),
-- and the refresh deletes those it counted in the same snapshot. Whole days, today and days
-- that receive late events are then read as their aggregate plus these few events.
CREATE TABLE analytics_pending (
    tenant_id uuid NOT NULL,
    day date NOT NULL,
    event_id text NOT NULL,
    occurred_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, day, event_id)
);
-- True: the day's aggregates were computed with the pending rows above, so the aggregate plus
-- the day's pending events are all of its events, whenever the refresh ran.
ALTER TABLE analytics_daily ADD COLUMN covers_pending boolean NOT NULL DEFAULT false;
-- One row per tenant and day with analytics_product_daily's figures packed (numbers over
-- analytics_products, see store.analytics), so ranking a month of a wide catalog reads 30
-- rows instead of grouping 100,000s.
CREATE TABLE analytics_products (
    tenant_id uuid NOT NULL,
    product_id text NOT NULL,
    idx integer NOT NULL,
    PRIMARY KEY (tenant_id, product_id),
    CONSTRAINT analytics_products_idx UNIQUE (tenant_id, idx)
);
-- Beside it the day's analytics_daily_buyers rows packed likewise, for the holdout.
CREATE TABLE analytics_packed (
    tenant_id uuid NOT NULL,
    day date NOT NULL,
    products bytea NOT NULL,
    buyers bytea NOT NULL,
    PRIMARY KEY (tenant_id, day)
);
-- Per day and numbered user with a purchase: purchases and their revenue, so the holdout's
-- per-user sums over any days (and their squares) come from the rollups, not raw events.
CREATE TABLE analytics_daily_buyers (
    tenant_id uuid NOT NULL,
    day date NOT NULL,
    idx integer NOT NULL,
    purchases bigint NOT NULL,
    revenue numeric(16, 4) NOT NULL,
    holdout_bucket smallint,
    PRIMARY KEY (tenant_id, day, idx)
);
-- The holdout's users by bucket without reading every user of the tenant.
CREATE INDEX analytics_users_holdout ON analytics_users (tenant_id, holdout_bucket) INCLUDE (idx);
"""

DOWNGRADE = r"""
DROP INDEX IF EXISTS analytics_users_holdout;
DROP TABLE IF EXISTS analytics_daily_buyers;
DROP TABLE IF EXISTS analytics_packed;
DROP TABLE IF EXISTS analytics_products;
ALTER TABLE analytics_daily DROP COLUMN IF EXISTS covers_pending;
DROP TABLE IF EXISTS analytics_pending;
"""


def upgrade() -> None:
    execute_script(UPGRADE)


def downgrade() -> None:
    execute_script(DOWNGRADE)
