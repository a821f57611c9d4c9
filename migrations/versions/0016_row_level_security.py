"""Row-level security: every table with a tenant_id column shows and takes only the rows of the
tenant the transaction is scoped to (store.db.tenant_transaction), or every row in the explicit
cross-tenant scope (store.db.all_tenants); outside both, none.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05
"""

from migrations.helpers import execute_script

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

# The policy's test, shared by the migration and the partitions made later. The settings are
# transaction-local (set_config(..., true)), so they work behind PgBouncer in transaction mode.
# current_setting(..., true) is NULL when never set and '' once a transaction that set it has
# ended; both match no tenant. The scalar subqueries are evaluated once per statement, not per
# row, and `tenant_id = (SELECT ...)` can still drive an index scan.
TENANT_SCOPE = (
    "(SELECT current_setting('app.all_tenants', true) = 'on')"
    " OR tenant_id = (SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid)"
)

UPGRADE = r"""
-- Which role is held to the policies: every role but the tables' owner. The owner (the role
-- that runs these migrations) is exempt because the tables are not FORCEd: it needs every row
-- to migrate, and the platform processes never connect as it (they connect as the DML-only
-- role, whose name is then not written here: a managed PostgreSQL may name it otherwise).
-- Superusers bypass row-level security anyway; the app role must not be one, nor BYPASSRLS.
CREATE FUNCTION protect_tenant_table(target regclass)
RETURNS void LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', target);
    IF NOT EXISTS (SELECT 1 FROM pg_policy WHERE polrelid = target
                   AND polname = 'tenant_isolation') THEN
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %s USING (%s) WITH CHECK (%s)',
            target, '{scope}', '{scope}'
        );
    END IF;
END $$;

-- Every table with a tenant_id column, partitions included: a query names a partition
-- directly (live_events_default does), and only the named table's policies apply.
DO $$
DECLARE
    target regclass;
BEGIN
    FOR target IN
        SELECT c.oid::regclass FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute a ON a.attrelid = c.oid
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND a.attname = 'tenant_id'
            AND NOT a.attisdropped
        ORDER BY c.relname
    LOOP
        PERFORM protect_tenant_table(target);
    END LOOP;
END $$;

-- Monthly partitions made from now on get the same policy when they are made.
CREATE OR REPLACE FUNCTION ensure_event_partitions(first_month date, months integer)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
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
            PERFORM protect_tenant_table(partition_name::regclass);
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END $$;

-- A view runs with its owner's rights unless told otherwise, and the owner is exempt from the
-- policies: these views must check them as the role that queries them.
ALTER VIEW live_events SET (security_invoker = true);
ALTER VIEW live_events_default SET (security_invoker = true);
""".replace("{scope}", TENANT_SCOPE.replace("'", "''"))

DOWNGRADE = r"""
ALTER VIEW live_events_default RESET (security_invoker);
ALTER VIEW live_events RESET (security_invoker);

CREATE OR REPLACE FUNCTION ensure_event_partitions(first_month date, months integer)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
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

DO $$
DECLARE
    target regclass;
BEGIN
    FOR target IN
        SELECT p.polrelid::regclass FROM pg_policy p WHERE p.polname = 'tenant_isolation'
    LOOP
        EXECUTE format('DROP POLICY tenant_isolation ON %s', target);
        EXECUTE format('ALTER TABLE %s DISABLE ROW LEVEL SECURITY', target);
    END LOOP;
END $$;

DROP FUNCTION IF EXISTS protect_tenant_table(regclass);
"""


def upgrade() -> None:
    execute_script(UPGRADE)


def downgrade() -> None:
    execute_script(DOWNGRADE)
