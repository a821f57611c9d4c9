#!/usr/bin/env bash
# Prepare this machine for RecomEngine: virtualenv with the pinned dependencies, redis-server,
# the built dashboard, and (with --browser) Chromium for the browser tests. `make test` installs only what the tests
# use (the dev extra); `make up` adds the demo extra (--demo). Safe to run again: it skips what
# is done. As root it installs missing system packages; anyone else is told what to install.
set -euo pipefail
cd "$(dirname "$0")/.."

want_browser=0
want_demo=0
for arg in "$@"; do
  case "$arg" in
    --browser) want_browser=1 ;;
    --demo) want_demo=1 ;;
  esac
done

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -c constraints.txt -e ".[dev]"
  touch "$stamp"
  rm -f .venv/.installed-demo
fi
if [ "$want_demo" = 1 ] && [ ! -f .venv/.installed-demo ]; then
  .venv/bin/python -m pip install --quiet -c constraints.txt -e ".[dev,demo]"
  touch .venv/.installed-demo
fi

# The storefront SDK (TypeScript): the api serves the built sdk/dist/recomengine.js. Node is a
# build tool only; both steps are skipped when the lock file and the sources did not change.
if ! command -v npm >/dev/null 2>&1; then
  echo "missing: Node.js 20 with npm, to build the storefront SDK in sdk/." >&2
  exit 1
fi
sdk_stamp=sdk/node_modules/.installed
if [ ! -f "$sdk_stamp" ] || [ sdk/package-lock.json -nt "$sdk_stamp" ]; then
  (cd sdk && npm ci --no-audit --no-fund --loglevel=error)
  touch "$sdk_stamp"
fi
if [ ! -f sdk/dist/recomengine.js ] \
  || [ -n "$(find sdk/src sdk/build.mjs sdk/package-lock.json -newer sdk/dist/recomengine.js -print -quit)" ]; then
  (cd sdk && npm run --silent build)
fi

# The public pages and docs (web/dist/): `recomengine site` renders them when their sources, the
# api (the API reference is its OpenAPI document) or the rules they quote changed. Skipped in a
# tree without them (the bootstrap's own tests copy only the script).
if [ -f web/site_build.py ]; then
  site_hash=$(find docs web/templates web/static web/site_build.py cli/commands/web.py \
      cli/commands/openapi.py api domain \
      store/events.py store/experiments.py -type f -not -path '*/__pycache__/*' \
      | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -d' ' -f1)
  if [ ! -f web/dist/index.html ] || [ "$(cat web/dist/.source-hash 2>/dev/null)" != "$site_hash" ]; then
    echo "building the public pages and docs (recomengine site)..."
    .venv/bin/recomengine site >/dev/null
    echo "$site_hash" > web/dist/.source-hash
  fi
fi

apt_packages=()
command -v redis-server >/dev/null 2>&1 || apt_packages+=(redis-server)
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  apt_packages+=(postgresql)
fi
if [ "$want_browser" = 1 ] && ! command -v chromium >/dev/null 2>&1; then
  apt_packages+=(chromium)
fi
if [ "${#apt_packages[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${apt_packages[*]} from Debian's packages..."
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_packages[@]}" >/dev/null
  else
    # Not root: say what is missing and go on; whatever needs it says so again when it runs.
    echo "missing: ${apt_packages[*]}. Install them (Debian: sudo apt-get install -y ${apt_packages[*]}); the steps that need them will fail until then." >&2
  fi
fi

# The dashboard: `npm ci` when the lock file changed, `vite build` when its sources did. A stamp
# holds the hash of what the last build was made from (npm was checked for the SDK above).
# Skipped in a tree without dashboard/ (the bootstrap's own tests copy only the script).
if [ -f dashboard/package.json ]; then
  dashboard_hash() {
    (cd dashboard && find src index.html package.json package-lock.json vite.config.ts \
        tsconfig.json tsconfig.app.json tsconfig.node.json -type f | LC_ALL=C sort \
        | xargs sha256sum) | sha256sum | cut -d' ' -f1
  }
  lock_hash=$(sha256sum dashboard/package-lock.json | cut -d' ' -f1)
  if [ ! -d dashboard/node_modules ] || [ "$(cat dashboard/node_modules/.lock-hash 2>/dev/null)" != "$lock_hash" ]; then
    echo "installing the dashboard's Node packages (npm ci)..."
    (cd dashboard && npm ci --no-audit --no-fund --loglevel=error)
    echo "$lock_hash" > dashboard/node_modules/.lock-hash
  fi
  source_hash=$(dashboard_hash)
  if [ ! -f dashboard/dist/index.html ] || [ "$(cat dashboard/.build-stamp 2>/dev/null)" != "$source_hash" ]; then
    echo "building the dashboard (vite build)..."
    (cd dashboard && npx --no-install vite build --logLevel warn)
    echo "$source_hash" > dashboard/.build-stamp
  fi
fi
