"""Time the analytics read paths on a large tenant against throwaway servers.

    .venv/bin/python -m bench.analytics [--events 10000000] [--days 90] [--runs 20]
    .venv/bin/python -m bench.analytics --profile wide    # 24,000-product catalog, 30 days
    .venv/bin/python -m bench.analytics --data DIR [--compare main]

`--data DIR` keeps the servers' data in DIR: the first run loads it, later runs reuse it (the
events are topped up to now at the same pace, the new days refreshed; `--refresh` recomputes
every day's aggregates, as after a change to what they hold). `--compare REF` times the code
of the git revision REF on the same data set just before the working tree's, for a before and
after measured under the same load.

The default profile is the 10M-event tenant (5,000 products, best sellers skewed). The wide
profile is a shop like the demo tenant: 120,000 events over 30 days spread evenly over a
24,000-product catalog (catalog rows included), where top products has many products to rank.

Starts its own PostgreSQL and Redis on free ports in a temporary folder, applies the
migrations, loads `--events` events spread evenly over the last `--days` days for one tenant
(generated inside PostgreSQL with generate_series, two loaders in parallel), adds revenue
attributions for a share of the purchases, runs the daily-aggregate refresh for every day,
counts today's events and attributions into the real-time Redis counters with the ingestion's
own effects, then times each analytics query path for the last 30 days (and for today alone)
through the store functions the endpoints call (p50/p95 over `--runs` runs), the overview also
over HTTP against a real api process, beside the naive query over the raw events for the same
window. Prints a table; writes nothing into the repository.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from redis.asyncio import Redis

from api.security import issue_access_token
from bench.harness import ROOT, Platform, local_platform, make_bench_tenant, stop_process
from domain.analytics import Period, day_start, resolve_period
from store import analytics as analytics_store
from store.db import create_pool
from store.event_projections import apply_guarded, attribution_effects, event_effects
from store.settings import Settings

# Event mix per 1,000 events, by cumulative threshold.
_TYPE_CASE = """
    CASE WHEN r < 550 THEN 'product_viewed'
         WHEN r < 850 THEN 'recommendation_impressed'
         WHEN r < 920 THEN 'recommendation_clicked'
         WHEN r < 960 THEN 'add_to_cart'
         WHEN r < 975 THEN 'purchase'
         WHEN r < 985 THEN 'remove_from_cart'
         ELSE 'product_clicked' END
"""

_LOAD = f"""
INSERT INTO events (tenant_id, event_id, event_type, user_id, product_id, placement_id,
                    price, occurred_at)
SELECT $1, 'b' || g, t,
       -- Users skewed toward a core of regulars; products toward best sellers.
       'u' || floor($5 * power(((hashint8(g * 3 + 1) & 1048575) / 1048576.0), 2))::int,
       'p' || floor($6 * power(((hashint8(g * 5 + 2) & 1048575) / 1048576.0), $8))::int,
       CASE WHEN t IN ('recommendation_impressed', 'recommendation_clicked')
            THEN (ARRAY['home', 'pdp', 'cart'])[1 + (hashint8(g * 7 + 3) & 3) % 3] END,
       CASE WHEN t = 'purchase' THEN 1 + (hashint8(g * 11 + 4) & 65535) / 200.0 END,
       -- Evenly spaced instants: no two rows share the dedupe key.
       $4::timestamptz + (g - $2) * $7::interval
FROM generate_series($2::bigint, $3::bigint) g,
     LATERAL (SELECT (hashint8(g) & 1048575) % 1000 AS r) x,
     LATERAL (SELECT {_TYPE_CASE} AS t) y
"""

_ATTRIBUTE = """
INSERT INTO revenue_attributions (tenant_id, user_id, product_id, click_event_id,
    purchase_event_id, revenue, clicked_at, purchased_at, placement_id, strategy)
SELECT tenant_id, user_id, product_id, 'click-' || event_id, event_id, price,
       occurred_at - interval '10 minutes', occurred_at, 'home', 'collaborative'
FROM events
WHERE tenant_id = $1 AND event_type = 'purchase' AND (hashtext(event_id) & 7) < 3
  AND occurred_at >= $2
"""


async def _setup(settings: Settings) -> tuple[str, str]:
    pool = await create_pool(settings, min_size=1, max_size=1)
    try:
        tenant = await make_bench_tenant(pool, settings)
        return tenant.admin_id, tenant.tenant_id
    finally:
        await pool.close()


_CATALOG = """
INSERT INTO catalog_items (tenant_id, product_id, name, category, price)
SELECT $1, 'p' || i, 'Product ' || i, 'c' || (i % 40), 1 + (i % 500)
FROM generate_series(0, $2 - 1) i
"""


async def _load(
    settings: Settings,
    tenant_id: str,
    *,
    events: int,
    days: int,
    users: int,
    products: int,
    skew: float,
    catalog: bool,
    first: int = 0,
    start: datetime | None = None,
    step: timedelta | None = None,
) -> float:
    """Load the events (numbers `first`.. at `step` apart from `start`, by default `events`
    over the last `days`) and their attributions; returns seconds taken."""
    now = datetime.now(UTC)
    start = start or now - timedelta(days=days)
    step = step or timedelta(days=days) / events
    chunks = 40 if events > 100_000 else 1
    size = -(-events // chunks)
    pending = [(first + i * size, first + min(events, (i + 1) * size) - 1) for i in range(chunks)]
    pending_base = first
    pool = await create_pool(settings, min_size=2, max_size=2, command_timeout=3600)
    started = time.perf_counter()

    async def loader() -> None:
        while pending:
            low, high = pending.pop(0)
            if low > high:
                continue
            async with pool.acquire() as connection:
                await connection.execute(
                    _LOAD,
                    tenant_id,
                    low,
                    high,
                    start + (low - pending_base) * step,
                    users,
                    products,
                    step,
                    skew,
                )
            done = events - sum(b - a + 1 for a, b in pending)
            print(f"  loaded ~{done:,} events", file=sys.stderr, flush=True)

    try:
        await asyncio.gather(loader(), loader())
        if catalog:
            await pool.execute(_CATALOG, tenant_id, products)
            await pool.execute("ANALYZE catalog_items")
        await pool.execute(_ATTRIBUTE, tenant_id, start)
        await pool.execute("VACUUM ANALYZE events")
        await pool.execute("ANALYZE revenue_attributions")
    finally:
        await pool.close()
    return time.perf_counter() - started


async def _refresh(settings: Settings, tenant_id: str, days: int) -> float:
    """Refresh the aggregates of today and the `days` before; returns seconds taken."""
    pool = await create_pool(settings, min_size=1, max_size=2, command_timeout=3600)
    today = datetime.now(UTC).date()
    started = time.perf_counter()
    try:
        await analytics_store.refresh_tenant_days(
            pool,
            tenant_id=tenant_id,
            days=[today - timedelta(days=n) for n in range(days, -1, -1)],
        )
        # As autovacuum leaves them on a live server (the newer tables when they exist).
        tables = await pool.fetch(
            """SELECT tablename FROM pg_tables WHERE tablename LIKE 'analytics%'
               ORDER BY tablename"""
        )
        for row in tables:
            await pool.execute(f"VACUUM ANALYZE {row['tablename']}")
    finally:
        await pool.close()
    return time.perf_counter() - started


_TODAYS_ROWS = """
SELECT event_id, event_type, user_id, product_id, occurred_at, price::float8 AS price,
       placement_id, metadata->>'strategy' AS strategy,
       metadata->>'experimentId' AS experiment_id, metadata->>'variant' AS variant
FROM events WHERE tenant_id = $1 AND occurred_at >= $2 ORDER BY occurred_at
"""
_TODAYS_ATTRIBUTIONS = """
SELECT purchase_event_id, revenue::float8 AS revenue, purchased_at, placement_id, strategy,
       experiment_id::text AS experiment_id, variant
FROM revenue_attributions WHERE tenant_id = $1 AND purchased_at >= $2
"""


async def _count_today(settings: Settings, tenant_id: str) -> tuple[int, float]:
    """Apply today's loaded events and attributions to the real-time counters, as the ingest
    actor does for each message; returns (events counted, seconds taken)."""
    pool = await create_pool(settings, min_size=1, max_size=1)
    redis = Redis.from_url(settings.redis_url)
    midnight = day_start(datetime.now(UTC).date())
    started = time.perf_counter()
    try:
        rows = [dict(r) for r in await pool.fetch(_TODAYS_ROWS, tenant_id, midnight)]
        attributions = [
            dict(r) for r in await pool.fetch(_TODAYS_ATTRIBUTIONS, tenant_id, midnight)
        ]
        for first in range(0, len(rows), 500):
            await apply_guarded(
                redis, event_effects(tenant_id=tenant_id, rows=rows[first : first + 500])
            )
        await apply_guarded(
            redis, attribution_effects(tenant_id=tenant_id, attributions=attributions)
        )
    finally:
        await redis.aclose()
        await pool.close()
    return len(rows), time.perf_counter() - started


def _figures(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered) * 1000, p95 * 1000


async def _time(call: Callable[[], Awaitable[Any]], runs: int) -> tuple[float, float]:
    await call()  # warm-up: plans and caches, as a running api has them
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - started)
    return _figures(samples)


_NAIVE = {
    "overview": """
        SELECT count(*) FILTER (WHERE event_type = 'recommendation_impressed'),
               count(*) FILTER (WHERE event_type = 'recommendation_clicked'),
               count(*) FILTER (WHERE event_type = 'purchase'),
               sum(price) FILTER (WHERE event_type = 'purchase'), count(*),
               count(DISTINCT user_id),
               (SELECT sum(revenue) FROM revenue_attributions
                WHERE tenant_id = $1 AND purchased_at >= $2 AND purchased_at < $3)
        FROM events WHERE tenant_id = $1 AND occurred_at >= $2 AND occurred_at < $3""",
    "timeseries (day)": """
        SELECT date_trunc('day', occurred_at AT TIME ZONE 'UTC'),
               count(*) FILTER (WHERE event_type = 'recommendation_impressed')
        FROM events WHERE tenant_id = $1 AND occurred_at >= $2 AND occurred_at < $3
        GROUP BY 1""",
    "top-products (clicks)": """
        SELECT product_id, count(*) FILTER (WHERE event_type = 'recommendation_clicked') AS c
        FROM events WHERE tenant_id = $1 AND occurred_at >= $2 AND occurred_at < $3
        GROUP BY product_id ORDER BY c DESC, product_id LIMIT 10""",
    "export (daily rows)": """
        SELECT date_trunc('day', occurred_at AT TIME ZONE 'UTC'),
               count(*) FILTER (WHERE event_type = 'recommendation_impressed'),
               count(*) FILTER (WHERE event_type = 'recommendation_clicked'),
               count(*) FILTER (WHERE event_type = 'purchase'),
               sum(price) FILTER (WHERE event_type = 'purchase'), count(*),
               count(DISTINCT user_id)
        FROM events WHERE tenant_id = $1 AND occurred_at >= $2 AND occurred_at < $3
        GROUP BY 1""",
}


def _print_table(title: str, results: list[tuple[str, tuple[float, float], Any]]) -> None:
    print()
    print(f"{title:<34}{'p50 ms':>10}{'p95 ms':>10}{'naive p50':>12}{'naive p95':>12}", flush=True)
    for name, (p50, p95), naive in results:
        naive_text = f"{naive[0]:>12.1f}{naive[1]:>12.1f}" if naive else f"{'-':>12}{'-':>12}"
        print(f"{name:<34}{p50:>10.1f}{p95:>10.1f}{naive_text}", flush=True)


async def _measure_window(
    pool: asyncpg.Pool,
    redis: Redis,
    *,
    tenant_id: str,
    admin_id: str,
    period: Period,
    now: datetime,
    runs: int,
    naive_runs: int,
) -> list[tuple[str, tuple[float, float], tuple[float, float] | None]]:
    paths: dict[str, Callable[[], Awaitable[Any]]] = {
        "overview": lambda: analytics_store.tenant_overview(
            pool, redis, tenant_id=tenant_id, period=period, now=now
        ),
        "overview (placement filter)": lambda: analytics_store.tenant_overview(
            pool,
            redis,
            tenant_id=tenant_id,
            period=period,
            now=now,
            scope=analytics_store.Scope(placement_id="home"),
        ),
        "timeseries (day)": lambda: analytics_store.series(
            pool, redis, tenant_id=tenant_id, period=period, interval="day", now=now
        ),
        "top-products (clicks)": lambda: analytics_store.top_products(
            pool, redis, tenant_id=tenant_id, period=period, sort="clicks", limit=10, now=now
        ),
        "top-products (revenue)": lambda: analytics_store.top_products(
            pool, redis, tenant_id=tenant_id, period=period, sort="revenue", limit=10, now=now
        ),
        "export (daily rows)": lambda: _export(pool, redis, tenant_id, period, now),
        "all-tenants overview": lambda: analytics_store.owner_overview(
            pool, redis, owner_id=admin_id, period=period, now=now
        ),
    }
    # Paths of issue 22, timed when the store has them (the bench also runs on older code).
    if hasattr(analytics_store, "breakdown"):
        for by in ("placement", "strategy"):
            paths[f"breakdown ({by})"] = lambda by=by: analytics_store.breakdown(
                pool, redis, tenant_id=tenant_id, period=period, by=by, now=now
            )
        paths["funnel"] = lambda: analytics_store.funnel(pool, tenant_id=tenant_id, period=period)
        paths["overview (10% holdout)"] = lambda: analytics_store.tenant_overview(
            pool, redis, tenant_id=tenant_id, period=period, now=now, holdout_percent=10
        )
    results = []
    for name, call in paths.items():
        ours = await _time(call, runs)
        naive = None
        if name in _NAIVE and naive_runs > 0:
            sql = _NAIVE[name]

            async def raw(sql: str = sql) -> None:
                await pool.fetch(sql, tenant_id, period.start, period.end)

            naive = await _time(raw, naive_runs)
        results.append((name, ours, naive))
    overview = await analytics_store.tenant_overview(
        pool, redis, tenant_id=tenant_id, period=period, now=now
    )
    truth = await pool.fetchrow(_NAIVE["overview"], tenant_id, period.start, period.end)
    assert overview["events"] == truth[4] and overview["activeUsers"] == truth[5], (
        overview,
        truth,
    )
    print(
        f"\n[{period.start:%Y-%m-%d %H:%M} .. {period.end:%Y-%m-%d %H:%M:%S}) "
        f"{overview['events']:,} events, {overview['activeUsers']:,} users "
        "(equal to the naive count)"
    )
    return results


async def _measure(
    settings: Settings, tenant_id: str, admin_id: str, runs: int, naive_runs: int
) -> None:
    pool = await create_pool(settings, min_size=1, max_size=4, command_timeout=600)
    redis = Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
    now = datetime.now(UTC)
    today = now.date()
    windows = {
        # Today from the real-time counters, the 29 days before from the aggregates.
        "last 30 days (default)": resolve_period(from_raw=None, to_raw=None, now=now),
        "today (real-time counters)": resolve_period(from_raw=str(today), to_raw=None, now=now),
        # The costliest shape: the last day is a partial edge, so a whole day of raw events
        # is counted beside the 29 aggregated ones.
        "30 days, a full day raw": Period(
            day_start(today - timedelta(days=30)), day_start(today) - timedelta(microseconds=1)
        ),
    }
    try:
        for title, period in windows.items():
            results = await _measure_window(
                pool,
                redis,
                tenant_id=tenant_id,
                admin_id=admin_id,
                period=period,
                now=now,
                runs=runs,
                naive_runs=naive_runs,
            )
            _print_table(title, results)
    finally:
        await redis.aclose()
        await pool.close()


async def _export(
    pool: asyncpg.Pool, redis: Redis, tenant_id: str, period: Any, now: datetime
) -> None:
    for piece in analytics_store.daily_chunks(period):
        await analytics_store.series(
            pool, redis, tenant_id=tenant_id, period=piece, interval="day", now=now
        )


def _http(platform: Platform, admin_id: str, tenant_id: str, runs: int, cwd: Path = ROOT) -> tuple:
    settings, base = platform.settings, platform.base_url
    process = platform.start_api(cwd=cwd)
    try:
        token, _ = issue_access_token(admin_id=admin_id, settings=settings)
        request = urllib.request.Request(  # noqa: S310
            f"{base}/api/v1/tenants/{tenant_id}/analytics/overview",
            headers={"Authorization": f"Bearer {token}"},
        )
        samples = []
        for n in range(runs + 1):
            started = time.perf_counter()
            with urllib.request.urlopen(request, timeout=60) as answer:  # noqa: S310
                answer.read()
            if n:
                samples.append(time.perf_counter() - started)
        return _figures(samples)
    finally:
        stop_process(process, timeout=30)


def _top_up(settings: Settings, state: dict[str, Any]) -> None:
    """Load events from where the kept data set ends up to now at its pace, then refresh the
    days they fall on."""
    step = timedelta(seconds=state["step_seconds"])
    until = datetime.fromisoformat(state["loaded_until"])
    count = int((datetime.now(UTC) - until) / step)
    if count <= 0:
        return
    seconds = asyncio.run(
        _load(
            settings,
            state["tenant_id"],
            events=count,
            days=0,
            users=state["users"],
            products=state["products"],
            skew=state["skew"],
            catalog=False,
            first=state["events"],
            start=until,
            step=step,
        )
    )
    state["events"] += count
    state["loaded_until"] = (until + count * step).isoformat()
    print(f"topped up {count:,} events in {seconds:.1f} s")


def _measure_tree(
    platform: Platform, state: dict[str, Any], args: argparse.Namespace, tree: Path | None
) -> None:
    """Time the paths with the code of `tree` (a child process), or of this tree."""
    if tree is None:
        asyncio.run(
            _measure(
                platform.settings, state["tenant_id"], state["admin_id"], args.runs, args.naive_runs
            )
        )
        http = _http(platform, state["admin_id"], state["tenant_id"], args.runs)
    else:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.analytics",
                "--measure-only",
                json.dumps(state),
                "--runs",
                str(args.runs),
                "--naive-runs",
                str(args.naive_runs),
            ],
            env={**platform.env, "PYTHONPATH": str(tree)},
            cwd=tree,
            check=True,
        )
        http = _http(platform, state["admin_id"], state["tenant_id"], args.runs, cwd=tree)
    print(f"\n{'overview over HTTP, 30 days':<34}{http[0]:>10.1f}{http[1]:>10.1f}", flush=True)


def _export_tree(ref: str, into: Path) -> Path:
    """The files of git revision `ref` in `into`, with this benchmark's own code beside them."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "archive", ref], cwd=ROOT, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    shutil.copy(Path(__file__), into / "bench" / "analytics" / "__main__.py")
    return into


def main() -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--products", type=int, default=5_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--naive-runs", type=int, default=5, help="0 skips the naive queries")
    parser.add_argument(
        "--product-skew",
        type=float,
        default=3.0,
        help="product id = products * u**skew: 3 favours best sellers, 1 spreads evenly",
    )
    parser.add_argument("--catalog", action="store_true", help="also load catalog rows")
    parser.add_argument("--profile", choices=("large", "wide"), default="large")
    parser.add_argument("--data", type=Path, help="keep (or reuse) the data set in this folder")
    parser.add_argument(
        "--refresh", action="store_true", help="with --data: refresh every day again"
    )
    parser.add_argument("--compare", metavar="REF", help="also time git revision REF, first")
    parser.add_argument("--measure-only", metavar="STATE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_only:
        # A child of --compare: time this tree's code against the running servers.
        state = json.loads(args.measure_only)
        settings = Settings()
        asyncio.run(
            _measure(settings, state["tenant_id"], state["admin_id"], args.runs, args.naive_runs)
        )
        return 0
    if args.profile == "wide":
        args.events, args.days, args.users = 120_000, 30, 8_000
        args.products, args.product_skew, args.catalog = 24_000, 1.0, True

    marker = args.data / "bench.json" if args.data else None
    with local_platform("recomengine-bench-", workdir=args.data) as platform:
        settings = platform.settings
        if marker is not None and marker.exists():
            state = json.loads(marker.read_text())
            print(f"reusing {state['events']:,} events of {args.data}")
            before = datetime.fromisoformat(state["loaded_until"]).date()
            _top_up(settings, state)
            marker.write_text(json.dumps(state))
            days = state["days"] if args.refresh else (datetime.now(UTC).date() - before).days
            refresh_seconds = asyncio.run(_refresh(settings, state["tenant_id"], days))
            print(f"refreshed {days + 1} daily aggregates in {refresh_seconds:.1f} s")
        else:
            admin_id, tenant_id = asyncio.run(_setup(settings))
            load_seconds = asyncio.run(
                _load(
                    settings,
                    tenant_id,
                    events=args.events,
                    days=args.days,
                    users=args.users,
                    products=args.products,
                    skew=args.product_skew,
                    catalog=args.catalog,
                )
            )
            print(f"loaded {args.events:,} events over {args.days} days in {load_seconds:.1f} s")
            refresh_seconds = asyncio.run(_refresh(settings, tenant_id, args.days))
            print(f"refreshed {args.days + 1} daily aggregates in {refresh_seconds:.1f} s")
            step = timedelta(days=args.days) / args.events
            state = {
                "admin_id": admin_id,
                "tenant_id": tenant_id,
                "events": args.events,
                "days": args.days,
                "users": args.users,
                "products": args.products,
                "skew": args.product_skew,
                "step_seconds": step.total_seconds(),
                "loaded_until": (
                    datetime.now(UTC) - timedelta(days=args.days) + args.events * step
                ).isoformat(),
            }
        if marker is not None:
            marker.write_text(json.dumps(state))
        counted, count_seconds = asyncio.run(_count_today(settings, state["tenant_id"]))
        print(f"counted today's {counted:,} events into Redis in {count_seconds:.1f} s")
        if args.compare:
            with tempfile.TemporaryDirectory(prefix="recomengine-bench-ref-") as folder:
                tree = _export_tree(args.compare, Path(folder))
                print(f"\n==== {args.compare} ====", flush=True)
                _measure_tree(platform, state, args, tree)
                print("\n==== working tree ====", flush=True)
                _measure_tree(platform, state, args, None)
        else:
            _measure_tree(platform, state, args, None)
        print(f"\n{args.runs} runs per path (naive: {args.naive_runs}), after one warm-up run")
        return 0


if __name__ == "__main__":
    sys.exit(main())
