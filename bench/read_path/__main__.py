"""Read-path benchmark of GET /api/v1/recommendations (issue 5).

    .venv/bin/python -m bench.read_path [--duration 20] [--connections 50]

Starts its own PostgreSQL and Redis on free ports in a temporary folder, migrates, starts one
api process (`recomengine api`, log level WARNING, read limit out of the way) and an ingest
worker, creates a tenant with a read key and a read_write key, loads a synthetic shop (5,000
products into the catalog and its projections, ~50,000 events of 2,000 users posted through
POST /events/batch so that histories, purchases and trending are projected as in production),
trains and publishes a model with `recomengine train`, then drives, with the same load generator
(wrk if installed, else an asyncio generator in its own process) and the same connections:

1. the ceiling: a bare Sanic app (bench/read_path/ceiling.py) doing one Redis GET of a 2 KB value
   (measured before and after the api, because other work on the machine moves it);
2. GET /recommendations?userId=<random known user>&strategy=<mix>&limit=10 with the read key,
   cycling `--paths` distinct requests: first on a second api process with the answer cache
   off (every request ranks and hydrates), then on the api with the cache warmed by one pass
   over the list (a repeated request is one Redis call while nothing it depends on changed).

Prints requests/s and p50/p95/p99 for each, the ratios to the ceiling, the cache's hit share,
the strategy mix and a sample of answers (status, non-empty data, strategy served, fallbacks),
then where one request's time goes without the cache, stage by stage
(bench/read_path/breakdown.py). `--profile-seconds N` also records the cached api with py-spy
during its measurement. Targets: >= 50% of the ceiling, p99 <= 20 ms at 50 connections.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.harness import Platform, local_platform, make_bench_tenant, stop_process, wait_ready
from bench.read_path.breakdown import measure_stages, print_stages
from bench.read_path.load import PATHS_SCRIPT, run_asyncio_generator
from bench.wrk import run_wrk, wrk_available
from cli.localservices import free_port
from domain.catalog import parse_item
from store.catalog import upsert_items
from store.db import create_pool
from store.redis import create_redis
from store.settings import Settings

SEED = 5
CATEGORIES = ["Food", "Home", "Garden", "Toys", "Sports", "Books", "Beauty", "Tech"]
WORDS = "red blue green large small organic steel wooden soft classic fresh premium".split()
# Share of requests per strategy (None: no `strategy`, so the tenant default answers).
STRATEGY_MIX: list[tuple[str | None, float]] = [
    ("collaborative", 0.40),
    ("content_based", 0.20),
    ("trending", 0.15),
    ("frequently_bought_together", 0.15),
    (None, 0.10),
]
CEILING_KEY = "bench:read_path:ceiling"
# Writes must not be throttled while the events are loaded; reads are lifted by the settings.
TENANT_CONFIG = {"rateLimits": {"writesPerMinute": 100_000_000}}


async def _make_tenant(pool: asyncpg.Pool, settings: Settings) -> tuple[str, str, str]:
    """A tenant with a read key and a read_write key (created in the store directly)."""
    tenant = await make_bench_tenant(
        pool, settings, config=TENANT_CONFIG, permissions=["read", "read_write"]
    )
    return tenant.tenant_id, tenant.keys["read"], tenant.keys["read_write"]


def synthetic_catalog(n_products: int, rng: random.Random) -> list[dict[str, Any]]:
    """API-shaped products with categories, text, prices, attributes; 3% unavailable."""
    items = []
    for j in range(n_products):
        category = CATEGORIES[j % len(CATEGORIES)]
        first, second = rng.choice(WORDS), rng.choice(WORDS)
        items.append(
            {
                "productId": f"p{j}",
                "name": f"{first.title()} {second} {category.lower()} item {j}",
                "category": f"{category} > Sub {j % 17}",
                "description": f"A {first} and {second} {category.lower()} product for every day.",
                "price": round(rng.lognormvariate(3.0, 0.8), 2),
                "imageUrl": f"https://cdn.example.com/img/p{j}.jpg",
                "url": f"https://shop.example.com/products/p{j}",
                "attributes": {"colour": first, "brand": f"brand-{j % 120}"},
                "available": rng.random() >= 0.03,
            }
        )
    return items


def synthetic_events(
    n_users: int, n_products: int, n_events: int, rng: random.Random
) -> list[dict[str, Any]]:
    """Sessions of skewed shoppers: Zipf-like products, a favourite category per user, views,
    clicks, carts and multi-item purchases, spread over the last 6 days (a quarter in the last
    24 h so that trending is live)."""
    weights = [1.0 / (rank + 10) ** 1.05 for rank in range(n_products)]
    order = list(range(n_products))
    rng.shuffle(order)  # popularity rank -> product index, not aligned with categories
    activity = [rng.lognormvariate(0.0, 1.0) for _ in range(n_users)]
    total = sum(activity)
    now = datetime.now(UTC)
    events: list[dict[str, Any]] = []
    session = 0
    for user in range(n_users):
        budget = max(1, round(activity[user] / total * n_events))
        favourite = rng.randrange(len(CATEGORIES))
        while budget > 0:
            session += 1
            size = min(budget, rng.randint(3, 9))
            budget -= size
            hours_ago = rng.uniform(0, 24) if rng.random() < 0.25 else rng.uniform(24, 144)
            start = now - timedelta(hours=hours_ago)
            products = []
            for _ in range(size):
                if rng.random() < 0.6:  # stay in the favourite category
                    product = rng.randrange(favourite, n_products, len(CATEGORIES))
                else:
                    product = order[rng.choices(range(n_products), weights=weights)[0]]
                products.append(product)
            buys = rng.random() < 0.3
            for i, product in enumerate(products):
                kind = rng.choices(
                    ["product_viewed", "product_clicked", "add_to_cart"], weights=[6, 2, 2]
                )[0]
                if buys and i >= size - 2:
                    kind = "purchase"
                event: dict[str, Any] = {
                    "eventType": kind,
                    "userId": f"u{user}",
                    "productId": f"p{product}",
                    "sessionId": f"s{session}",
                    "timestamp": (start + timedelta(seconds=40 * i)).isoformat(),
                }
                if kind == "purchase":
                    event["metadata"] = {"price": 19.99, "quantity": 1}
                events.append(event)
    return events


def request_paths(
    events: list[dict[str, Any]], *, count: int, limit: int, rng: random.Random
) -> list[tuple[str | None, str]]:
    """`count` request paths: random known users, strategies in STRATEGY_MIX's shares, and for
    frequently_bought_together a product that user bought (else one they saw)."""
    users = sorted({e["userId"] for e in events})
    bought: dict[str, list[str]] = {}
    seen: dict[str, list[str]] = {}
    for e in events:
        seen.setdefault(e["userId"], []).append(e["productId"])
        if e["eventType"] == "purchase":
            bought.setdefault(e["userId"], []).append(e["productId"])
    names = [name for name, _ in STRATEGY_MIX]
    shares = [share for _, share in STRATEGY_MIX]
    paths = []
    for _ in range(count):
        user = rng.choice(users)
        strategy = rng.choices(names, weights=shares)[0]
        path = f"/api/v1/recommendations?userId={user}&limit={limit}"
        if strategy is not None:
            path += f"&strategy={strategy}"
        if strategy == "frequently_bought_together":
            path += f"&productId={rng.choice(bought.get(user) or seen[user])}"
        paths.append((strategy, path))
    return paths


async def load_shop(
    settings: Settings,
    pool: asyncpg.Pool,
    *,
    tenant_id: str,
    write_key: str,
    catalog: list[dict[str, Any]],
    events: list[dict[str, Any]],
) -> None:
    """Catalog straight into the store and its projections; events through the api."""
    redis = create_redis(settings)
    try:
        items = [parse_item(item) for item in catalog]
        for start in range(0, len(items), 1000):
            await upsert_items(pool, redis, tenant_id=tenant_id, items=items[start : start + 1000])
    finally:
        await redis.aclose()
    base = f"http://127.0.0.1:{settings.api_port}"
    headers = {"X-API-Key": write_key}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as http:
        queue = [events[i : i + 100] for i in range(0, len(events), 100)]

        async def post_some() -> None:
            while queue:
                batch = queue.pop()
                answer = await http.post("/api/v1/events/batch", json={"events": batch})
                if answer.status_code != 202 or answer.json()["rejected"]:
                    raise RuntimeError(f"events batch: {answer.status_code} {answer.text[:500]}")

        await asyncio.gather(*(post_some() for _ in range(8)))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        landed = await pool.fetchval("SELECT count(*) FROM events WHERE tenant_id = $1", tenant_id)
        if landed >= len(events):
            break
        await asyncio.sleep(0.5)
    else:
        raise TimeoutError(f"only {landed} of {len(events)} events landed in 300 s")
    # Ingestion's projections (histories, purchases, trending) trail the row insert a little.
    await asyncio.sleep(2)


def train_model(platform: Platform, tenant_id: str) -> None:
    """Train and publish the tenant's model with `recomengine train` (the actor's code)."""
    trained = platform.run_cli(["train", "--tenant", tenant_id])
    if trained.returncode != 0:
        raise RuntimeError(f"training failed:\n{trained.stdout[-2000:]}\n{trained.stderr[-2000:]}")


def start_profiler(pid: int, seconds: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy (installed beside this interpreter) recording `pid` for `seconds`."""
    spy = Path(sys.executable).parent / "py-spy"
    command = [str(spy), "record", "-p", str(pid), "-d", str(seconds), "-f", "speedscope"]
    command += ["-o", str(out), "--nonblocking"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def sample_answers(
    base: str, read_key: str, paths: list[tuple[str | None, str]], n: int
) -> dict[str, Any]:
    """GET the first `n` paths: statuses, non-empty answers, served strategy and fallbacks."""
    statuses: Counter[int] = Counter()
    served: Counter[tuple[str, str, str]] = Counter()
    cache: Counter[str] = Counter()
    empty = 0
    example: dict[str, Any] | None = None
    with httpx.Client(base_url=base, headers={"X-API-Key": read_key}, timeout=10) as http:
        for requested, path in paths[:n]:
            answer = http.get(path)
            statuses[answer.status_code] += 1
            cache[answer.headers.get("X-Recommendation-Cache", "-")] += 1
            if answer.status_code != 200:
                continue
            body = answer.json()
            if not body["data"]:
                empty += 1
            meta = body["meta"]
            served[(requested or "(default)", meta["strategy"], meta["fallbackReason"] or "-")] += 1
            if example is None and requested == "collaborative" and not meta["isFallback"]:
                example = body
    return {
        "statuses": statuses,
        "empty": empty,
        "served": served,
        "example": example,
        "cache": cache,
    }


def measure(
    args: argparse.Namespace,
    *,
    port: int,
    paths_file: Path,
    headers: dict[str, str],
    workdir: Path,
    duration: float,
) -> dict[str, Any]:
    """One load run with the chosen generator."""
    if args.generator == "wrk":
        return run_wrk(
            url=f"http://127.0.0.1:{port}",
            script=PATHS_SCRIPT,
            script_args=[str(paths_file)],
            headers=headers,
            connections=args.connections,
            duration=duration,
            threads=args.wrk_threads,
            workdir=workdir,
        )
    return run_asyncio_generator(
        port=port,
        paths_file=paths_file,
        headers=headers,
        connections=args.connections,
        duration=duration,
    )


def _row(name: str, result: dict[str, Any]) -> str:
    rate = result["requests"] / result["seconds"]
    return (
        f"{name:<34}{rate:>12,.0f}{result['p50']:>10.2f}{result['p95']:>10.2f}"
        f"{result['p99']:>10.2f}{result['non2xx']:>8}{result['socketErrors']:>8}"
        f"{result['server_cpu_us']:>10.0f}{result['redis_cpu_us']:>10.1f}"
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def redis_cpu_seconds(redis: Any) -> float:
    """User + system CPU time the Redis server has used so far."""
    info = await redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def run(args: argparse.Namespace) -> None:
    """Bring everything up, load the shop, measure both targets, print the figures."""
    if args.generator == "wrk" and not wrk_available():
        print("wrk is not installed (apt-get install -y wrk): using the asyncio generator")
        args.generator = "asyncio"
    rng = random.Random(SEED)
    with local_platform(
        "recomengine-bench-read-", keep=args.keep, read_limit_per_minute=100_000_000
    ) as platform:
        pool = await create_pool(platform.settings, min_size=1, max_size=4)
        try:
            await _measure_all(args, platform, pool, rng)
        finally:
            await pool.close()


async def _measure_all(
    args: argparse.Namespace, platform: Platform, pool: asyncpg.Pool, rng: random.Random
) -> None:
    """Load the shop, train, measure the ceiling and the api, print the figures."""
    settings, workdir = platform.settings, platform.workdir
    worker = [
        "cli.main",
        "worker",
        "--queues",
        "ingest,ingest_bulk",
        "--processes",
        "1",
        "--threads",
        "8",
    ]
    worker_process = platform.start(worker, "worker.log")
    api_process = await asyncio.to_thread(platform.start_api)
    base = platform.base_url
    tenant_id, read_key, write_key = await _make_tenant(pool, settings)
    catalog = synthetic_catalog(args.products, rng)
    events = synthetic_events(args.users, args.products, args.events, rng)
    started = time.perf_counter()
    await load_shop(
        settings, pool, tenant_id=tenant_id, write_key=write_key, catalog=catalog, events=events
    )
    loaded = time.perf_counter() - started
    users = len({e["userId"] for e in events})
    print(
        f"shop: {len(catalog):,} products, {len(events):,} events of {users:,} users "
        f"(posted through the api and landed in {loaded:.1f} s)",
        flush=True,
    )
    started = time.perf_counter()
    await asyncio.to_thread(train_model, platform, tenant_id)
    print(f"model trained and published in {time.perf_counter() - started:.1f} s", flush=True)
    # The ingest worker is done; stop it so that it does not compete for the two cores.
    stop_process(worker_process, timeout=30)

    paths = request_paths(events, count=args.paths, limit=args.limit, rng=rng)
    paths_file = workdir / "paths.txt"
    paths_file.write_text("".join(path + "\n" for _, path in paths))
    ceiling_file = workdir / "ceiling_paths.txt"
    ceiling_file.write_text("/value\n")

    readiness = await asyncio.to_thread(
        sample_answers, base, read_key, paths, args.sample
    )  # also warms the api's key cache and Lua script
    redis = create_redis(settings)
    value = json.dumps(
        {"data": [{"productId": f"p{i}", "name": "x" * 150} for i in range(12)]}
    ).encode()
    await redis.set(CEILING_KEY, value)
    await redis.aclose()
    ceiling_port = free_port()
    ceiling_log = workdir / "ceiling.log"
    ceiling_args = ["bench.read_path.ceiling", "--port", str(ceiling_port)]
    ceiling_args += ["--redis-url", settings.redis_url, "--key", CEILING_KEY]
    ceiling_process = platform.start(ceiling_args, "ceiling.log")
    await asyncio.to_thread(
        wait_ready, f"http://127.0.0.1:{ceiling_port}/value", ceiling_process, ceiling_log
    )

    # The same api with its answer cache off: every request ranks and hydrates.
    uncached_port = free_port()
    uncached_process = await asyncio.to_thread(
        platform.start_api,
        port=uncached_port,
        env={"RECOMENGINE_ANSWER_CACHE_SECONDS": "0"},
        log_name="api-uncached.log",
    )
    api_headers = {"X-API-Key": read_key}
    ceiling_target = (ceiling_port, ceiling_file, {}, ceiling_process.pid)
    uncached_target = (uncached_port, paths_file, api_headers, uncached_process.pid)
    cached_target = (settings.api_port, paths_file, api_headers, api_process.pid)
    redis = create_redis(settings)

    async def load(
        target: tuple[int, Path, dict[str, str], int], duration: float
    ) -> dict[str, Any]:
        """One run, with the CPU time the server process and Redis spent on it."""
        port, file, headers, pid = target
        server_before, redis_before = cpu_seconds(pid), await redis_cpu_seconds(redis)
        result = await asyncio.to_thread(
            measure,
            args,
            port=port,
            paths_file=file,
            headers=headers,
            workdir=workdir,
            duration=duration,
        )
        requests = max(1, result["requests"])
        result["server_cpu_us"] = (cpu_seconds(pid) - server_before) / requests * 1e6
        result["redis_cpu_us"] = (await redis_cpu_seconds(redis) - redis_before) / requests * 1e6
        return result

    await load(ceiling_target, args.warmup)
    ceiling = await load(ceiling_target, args.duration)
    await load(uncached_target, args.warmup)
    uncached = await load(uncached_target, args.duration)
    stop_process(uncached_process, timeout=30)
    # One pass over the request list fills the cache (at the uncached rate), then it is measured.
    warm_seconds = max(args.warmup, 1.5 * len(paths) / (uncached["requests"] / uncached["seconds"]))
    await load(cached_target, warm_seconds)
    if args.profile_seconds:
        print(f"profiling the api for {args.profile_seconds} s with py-spy", flush=True)
    spy = None
    if args.profile_seconds:
        spy = await asyncio.to_thread(
            start_profiler, api_process.pid, args.profile_seconds, args.profile_out
        )
    api = await load(cached_target, args.duration)
    if spy is not None:
        spy.wait(timeout=120)
    # The ceiling again after the api: the machine's load may have changed meanwhile.
    ceiling_after = await load(ceiling_target, args.duration)
    hits = await asyncio.to_thread(
        sample_answers, base, read_key, paths[: args.sample], args.sample
    )
    try:
        stages = await measure_stages(
            redis, tenant_id=tenant_id, paths=[p for _, p in paths[: args.breakdown]]
        )
    finally:
        await redis.aclose()

    print()
    print(
        f"read path, {args.connections} connections, {args.duration:.0f} s each, "
        f"generator: {args.generator}"
        + (f" ({args.wrk_threads} thread)" if args.generator == "wrk" else "")
    )
    print(
        f"{'target':<34}{'req/s':>12}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}"
        f"{'non2xx':>8}{'errors':>8}{'cpu us/r':>10}{'redis us':>10}"
    )
    print(_row("ceiling: Sanic + one Redis GET", ceiling))
    print(_row("GET /recommendations, cache off", uncached))
    print(_row("GET /recommendations, warm cache", api))
    print(_row("ceiling again, after the api", ceiling_after))
    ceiling_rate = statistics.mean(r["requests"] / r["seconds"] for r in (ceiling, ceiling_after))
    ratio = (api["requests"] / api["seconds"]) / ceiling_rate
    uncached_ratio = (uncached["requests"] / uncached["seconds"]) / ceiling_rate
    print(
        f"\nthroughput / mean ceiling: {ratio:.0%} warm (target >= 50%: "
        f"{'ok' if ratio >= 0.5 else 'MISSED'}), {uncached_ratio:.0%} with the cache off; "
        f"p99 {api['p99']:.1f} ms warm (target <= 20 ms: "
        f"{'ok' if api['p99'] <= 20 else 'MISSED'}), {uncached['p99']:.1f} ms cache off"
    )
    print(
        "server CPU per request (less sensitive to other load on the machine): ceiling "
        f"{ceiling['server_cpu_us']:.0f} us, warm {api['server_cpu_us']:.0f} us "
        f"({ceiling['server_cpu_us'] / api['server_cpu_us']:.0%} of the ceiling's rate), "
        f"cache off {uncached['server_cpu_us']:.0f} us"
    )
    sampled = sum(hits["cache"].values())
    print(
        f"answer cache after the warm run, {sampled} requests of the list: "
        + ", ".join(f"{name} {n / sampled:.0%}" for name, n in hits["cache"].most_common())
        + f" ({len(set(paths))} distinct requests cycled; no events arrive meanwhile)"
    )
    mix = Counter(name or "(tenant default)" for name, _ in paths)
    print("\nstrategy mix of the request list (cycled in order by the generator):")
    for name, n in mix.most_common():
        print(f"  {name:<30}{n / len(paths):>6.0%}")
    print(f"\nsample of {args.sample} requests before the run:")
    print(f"  statuses {dict(readiness['statuses'])}, empty answers {readiness['empty']}")
    print(f"  {'requested':<28}{'served':<28}{'fallback':<26}{'n':>5}")
    for (requested, served_as, reason), n in sorted(readiness["served"].items()):
        print(f"  {requested:<28}{served_as:<28}{reason:<26}{n:>5}")
    print(
        f"sample of {args.sample} requests after the run: statuses {dict(hits['statuses'])}, "
        f"empty answers {hits['empty']}"
    )
    if readiness["example"] is not None:
        item = readiness["example"]["data"][0]
        print(f"example collaborative item: {json.dumps(item)[:300]}")
    print_stages(stages, n=args.breakdown)
    if args.profile_seconds:
        print(f"py-spy profile of the api written to {args.profile_out}")


def main() -> None:
    """Parse options and run the benchmark."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.read_path",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up per target")
    parser.add_argument("--limit", type=int, default=10, help="the requests' limit")
    parser.add_argument("--paths", type=int, default=4_000, help="request paths cycled")
    parser.add_argument("--products", type=int, default=5_000)
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--sample", type=int, default=200, help="answers checked before the run")
    parser.add_argument(
        "--breakdown", type=int, default=2_000, help="requests timed stage by stage"
    )
    parser.add_argument("--generator", choices=["wrk", "asyncio"], default="wrk")
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument(
        "--profile-seconds", type=int, default=0, help="py-spy the api during its measurement"
    )
    parser.add_argument("--profile-out", type=Path, default=Path("read_path_profile.json"))
    parser.add_argument("--keep", action="store_true", help="keep the logs and data folder")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
