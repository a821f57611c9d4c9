#!/usr/bin/env bash
# The whole test suite: lint, types (Python and the dashboard's TypeScript), the dashboard's
# component tests, then pytest (unit, integration, e2e). The tests start their
# own throwaway PostgreSQL and Redis on free ports, so a running `make up` is never touched.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh --browser
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
# The storefront SDK: lint, types and unit tests (the browser tests run under pytest).
(cd sdk && npm run --silent lint && npm run --silent typecheck && npm run --silent test)
# The dashboard: types, lint and component tests (the browser tests run under pytest).
(cd dashboard && npx --no-install tsc -b --noEmit && npx --no-install eslint . && npx --no-install vitest run)
.venv/bin/python -m pytest "$@"
