"""Initial schema: identity, tenants, keys, catalog, partitioned events, experiments, analytics.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from migrations.helpers import execute_script

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE EXTENSION IF NOT EXISTS pgcrypto;

CREATE TABLE admins (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email text NOT NULL,
    name text NOT NULL,
    password_hash text NOT NULL,
    role text NOT NULL DEFAULT 'admin' CHECK (role IN ('admin', 'superadmin')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX admins_email_key ON admins (lower(email));

CREATE TABLE refresh_tokens (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    admin_id uuid NOT NULL REFERENCES admins (id) ON DELETE CASCADE,
    family_id uuid NOT NULL,
    token_hash bytea NOT NULL UNIQUE,
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    rotated_at timestamptz,
    revoked_at timestamptz
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);

CREATE TABLE password_resets (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    admin_id uuid NOT NULL REFERENCES admins (id) ON DELETE CASCADE,
    token_hash bytea NOT NULL UNIQUE,
    expires_at timestamptz NOT NULL,
    used_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE mail_outbox (
    id bigserial PRIMARY KEY,
    to_address text NOT NULL,
    subject text NOT NULL,
    body text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at timestamptz,
    attempts integer NOT NULL DEFAULT 0,
    last_error text
);
CREATE INDEX mail_outbox_unsent ON mail_outbox (id) WHERE sent_at IS NULL;

CREATE TABLE tenants (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id uuid NOT NULL REFERENCES admins (id) ON DELETE RESTRICT,
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    config jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz
);
CREATE INDEX tenants_owner ON tenants (owner_id, created_at) WHERE deleted_at IS NULL;
CREATE INDEX tenants_deleted ON tenants (deleted_at) WHERE deleted_at IS NOT NULL;

CREATE TABLE api_keys (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name text NOT NULL,
    permission text NOT NULL CHECK (permission IN ('read', 'read_write')),
    environment text NOT NULL CHECK (environment IN ('live', 'test')),
    prefix text NOT NULL,
    key_hash bytea NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at timestamptz
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, created_at);

CREATE TABLE catalog_items (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    product_id text NOT NULL CHECK (length(product_id) BETWEEN 1 AND 256),
    name text NOT NULL,
    category text NOT NULL DEFAULT '',
    price numeric(14, 4) NOT NULL CHECK (price >= 0),
    currency char(3) NOT NULL DEFAULT 'USD',
    image_url text,
    url text,
    description text,
    attributes jsonb NOT NULL DEFAULT '{}'::jsonb,
    available boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    search_vector tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('simple', coalesce(name, '')), 'A') ||
        setweight(to_tsvector('simple', coalesce(category, '')), 'B') ||
        setweight(to_tsvector('simple', coalesce(description, '')), 'C') ||
        setweight(jsonb_to_tsvector('simple', attributes, '["string", "numeric"]'), 'D')
    ) STORED,
    PRIMARY KEY (tenant_id, product_id)
);
CREATE INDEX catalog_items_search ON catalog_items USING gin (search_vector);
CREATE INDEX catalog_items_category ON catalog_items (tenant_id, category, product_id);

CREATE TABLE events (
    tenant_id uuid NOT NULL,
    event_id text NOT NULL,
    event_type text NOT NULL,
    user_id text NOT NULL,
    product_id text NOT NULL,
    session_id text,
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    placement_id text,
    recommendation_id text,
    price numeric(14, 4),
    flags text[] NOT NULL DEFAULT '{}',
    occurred_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT events_dedupe_key UNIQUE (tenant_id, user_id, event_type, product_id, occurred_at)
) PARTITION BY RANGE (occurred_at);
CREATE TABLE events_default PARTITION OF events DEFAULT;
CREATE INDEX events_tenant_time ON events (tenant_id, occurred_at DESC);
CREATE INDEX events_tenant_event_id ON events (tenant_id, event_id);
CREATE INDEX events_tenant_product ON events (tenant_id, product_id, occurred_at);

-- A client eventId is unique per tenant across every partition, which a partitioned table
-- cannot enforce by itself (its unique keys must contain occurred_at).
CREATE TABLE event_ids (
    tenant_id uuid NOT NULL,
    event_id text NOT NULL,
    occurred_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, event_id)
);

CREATE FUNCTION ensure_event_partitions(first_month date, months integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    month_start date;
    created integer := 0;
    partition_name text;
BEGIN
    FOR i IN 0 .. months - 1 LOOP
        month_start := (date_trunc('month', first_month) + make_interval(months => i))::date;
        partition_name := format('events_%s', to_char(month_start, 'YYYY_MM'));
        IF to_regclass(partition_name) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
                partition_name, month_start, (month_start + interval '1 month')::date
            );
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END $$;

SELECT ensure_event_partitions((date_trunc('month', now()) - interval '3 months')::date, 7);

CREATE TABLE widget_configs (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    placement_id text NOT NULL CHECK (length(placement_id) BETWEEN 1 AND 128),
    layout text NOT NULL DEFAULT 'grid' CHECK (layout IN ('grid', 'carousel', 'list')),
    columns integer NOT NULL DEFAULT 4 CHECK (columns BETWEEN 2 AND 6),
    show_price boolean NOT NULL DEFAULT true,
    show_rating boolean NOT NULL DEFAULT false,
    cta_text text NOT NULL DEFAULT 'View Product',
    max_items integer NOT NULL DEFAULT 8 CHECK (max_items BETWEEN 4 AND 20),
    theme jsonb NOT NULL DEFAULT '{"primaryColor": "#2563EB", "fontFamily": null}'::jsonb,
    strategy text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, placement_id)
);

CREATE TABLE experiments (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name text NOT NULL,
    placement_id text NOT NULL,
    control_strategy text NOT NULL,
    variant_strategy text NOT NULL,
    traffic_split integer NOT NULL CHECK (traffic_split BETWEEN 0 AND 100),
    metric text NOT NULL CHECK (metric IN ('ctr', 'conversion_rate', 'revenue_per_visitor')),
    status text NOT NULL DEFAULT 'draft'
        CHECK (status IN ('draft', 'running', 'paused', 'completed')),
    revenue_cap numeric(14, 4),
    sequential boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    completed_at timestamptz
);
CREATE INDEX experiments_tenant ON experiments (tenant_id, created_at);
CREATE UNIQUE INDEX experiments_one_running_per_placement
    ON experiments (tenant_id, placement_id) WHERE status = 'running';

-- Per user and variant, so that statistics can use the user as the unit of analysis.
CREATE TABLE experiment_user_metrics (
    tenant_id uuid NOT NULL,
    experiment_id uuid NOT NULL REFERENCES experiments (id) ON DELETE CASCADE,
    variant text NOT NULL CHECK (variant IN ('control', 'variant')),
    user_id text NOT NULL,
    impressions bigint NOT NULL DEFAULT 0,
    clicks bigint NOT NULL DEFAULT 0,
    purchases bigint NOT NULL DEFAULT 0,
    revenue numeric(14, 4) NOT NULL DEFAULT 0,
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (experiment_id, user_id)
);

CREATE TABLE experiment_results (
    experiment_id uuid NOT NULL REFERENCES experiments (id) ON DELETE CASCADE,
    tenant_id uuid NOT NULL,
    variant text NOT NULL CHECK (variant IN ('control', 'variant')),
    users bigint NOT NULL,
    impressions bigint NOT NULL,
    clicks bigint NOT NULL,
    buyers bigint NOT NULL,
    purchases bigint NOT NULL,
    revenue numeric(14, 4) NOT NULL,
    results jsonb NOT NULL,
    computed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (experiment_id, variant)
);

CREATE TABLE analytics_daily (
    tenant_id uuid NOT NULL,
    day date NOT NULL,
    placement_id text NOT NULL DEFAULT '',
    strategy text NOT NULL DEFAULT '',
    impressions bigint NOT NULL DEFAULT 0,
    clicks bigint NOT NULL DEFAULT 0,
    conversions bigint NOT NULL DEFAULT 0,
    revenue numeric(16, 4) NOT NULL DEFAULT 0,
    attributed_revenue numeric(16, 4) NOT NULL DEFAULT 0,
    events bigint NOT NULL DEFAULT 0,
    active_users bigint NOT NULL DEFAULT 0,
    refreshed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, day, placement_id, strategy)
);

CREATE TABLE revenue_attributions (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL,
    user_id text NOT NULL,
    product_id text NOT NULL,
    click_event_id text NOT NULL,
    purchase_event_id text NOT NULL,
    revenue numeric(14, 4) NOT NULL,
    clicked_at timestamptz NOT NULL,
    purchased_at timestamptz NOT NULL,
    placement_id text,
    strategy text,
    recommendation_id text,
    experiment_id uuid,
    variant text,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT revenue_attributions_one_per_purchase UNIQUE (tenant_id, purchase_event_id),
    CONSTRAINT revenue_attributions_one_per_click UNIQUE (tenant_id, click_event_id)
);
CREATE INDEX revenue_attributions_time ON revenue_attributions (tenant_id, purchased_at);
"""

DOWNGRADE = r"""
DROP TABLE IF EXISTS revenue_attributions;
DROP TABLE IF EXISTS analytics_daily;
DROP TABLE IF EXISTS experiment_results;
DROP TABLE IF EXISTS experiment_user_metrics;
DROP TABLE IF EXISTS experiments;
DROP TABLE IF EXISTS widget_configs;
DROP FUNCTION IF EXISTS ensure_event_partitions(date, integer);
DROP TABLE IF EXISTS event_ids;
DROP TABLE IF EXISTS events;
DROP TABLE IF EXISTS catalog_items;
DROP TABLE IF EXISTS api_keys;
DROP TABLE IF EXISTS tenants;
DROP TABLE IF EXISTS mail_outbox;
DROP TABLE IF EXISTS password_resets;
DROP TABLE IF EXISTS refresh_tokens;
DROP TABLE IF EXISTS admins;
"""


def upgrade() -> None:
    execute_script(UPGRADE)


def downgrade() -> None:
    execute_script(DOWNGRADE)
