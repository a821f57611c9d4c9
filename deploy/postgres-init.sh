#!/bin/sh
# First start of the compose PostgreSQL: the schema owner (POSTGRES_USER) runs the migrations;
# the api and workers connect as recomengine_app, which may only read and write rows.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<SQL
CREATE ROLE recomengine_app LOGIN PASSWORD '${RECOMENGINE_APP_DB_PASSWORD}';
GRANT CONNECT ON DATABASE "$POSTGRES_DB" TO recomengine_app;
GRANT USAGE ON SCHEMA public TO recomengine_app;
ALTER DEFAULT PRIVILEGES FOR ROLE "$POSTGRES_USER" IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO recomengine_app;
ALTER DEFAULT PRIVILEGES FOR ROLE "$POSTGRES_USER" IN SCHEMA public
    GRANT USAGE, SELECT ON SEQUENCES TO recomengine_app;
ALTER DEFAULT PRIVILEGES FOR ROLE "$POSTGRES_USER" IN SCHEMA public
    GRANT EXECUTE ON FUNCTIONS TO recomengine_app;
SQL
