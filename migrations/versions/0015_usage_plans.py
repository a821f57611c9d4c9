"""Usage-based plans: each tenant's plan, its metered usage per day, the allowance alerts sent.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04
"""

from migrations.helpers import execute_script

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

UPGRADE = r"""
-- domain.plans.PlanName; a new tenant starts on the free plan until an operator moves it.
ALTER TABLE tenants ADD COLUMN plan text NOT NULL DEFAULT 'sandbox'
    CHECK (plan IN ('sandbox', 'starter', 'growth', 'scale', 'enterprise'));

-- What was metered per tenant and UTC day, copied from the Redis meters by a job: events
-- accepted after dedupe (rows stored) and recommendation requests answered (HTTP 200), live
-- keys and test keys apart (test usage runs on Sandbox limits and is never billed).
CREATE TABLE usage_daily (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    day date NOT NULL,
    events bigint NOT NULL DEFAULT 0,
    recommendation_requests bigint NOT NULL DEFAULT 0,
    test_events bigint NOT NULL DEFAULT 0,
    test_recommendation_requests bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, day)
);

-- One row per allowance threshold reached in a month: the primary key is what makes the
-- banner and the mail happen once per threshold per month.
CREATE TABLE usage_alerts (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    month date NOT NULL,
    environment text NOT NULL CHECK (environment IN ('live', 'test')),
    metric text NOT NULL CHECK (metric IN ('events', 'recommendationRequests')),
    threshold integer NOT NULL CHECK (threshold IN (80, 100)),
    used bigint NOT NULL,
    included bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, month, environment, metric, threshold)
);

-- Events of test keys (rk_test_) carry the `test` flag: sandbox traffic that analytics never
-- counts. Analytics reads these views instead of the tables (simple views: the planner inlines
-- them, indexes and partition pruning included). `SELECT *` is expanded when a view is made:
-- a column added to events later needs the views made again to appear in them.
CREATE VIEW live_events AS SELECT * FROM events WHERE 'test' <> ALL (flags);
CREATE VIEW live_events_default AS SELECT * FROM events_default WHERE 'test' <> ALL (flags);
"""

DOWNGRADE = r"""
DROP VIEW IF EXISTS live_events_default;
DROP VIEW IF EXISTS live_events;
DROP TABLE IF EXISTS usage_alerts;
DROP TABLE IF EXISTS usage_daily;
ALTER TABLE tenants DROP COLUMN IF EXISTS plan;
"""


def upgrade() -> None:
    execute_script(UPGRADE)


def downgrade() -> None:
    execute_script(DOWNGRADE)
