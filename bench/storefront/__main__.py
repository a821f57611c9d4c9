"""Storefront traffic benchmark (issue 19): shoppers' events and recommendation requests mixed.

    .venv/bin/python -m bench.storefront [--duration 20] [--connections 50] [--compare main]

Starts its own PostgreSQL and Redis on free ports in a temporary folder, the api (one process)
and an ingest worker, creates a tenant with a read key and a read_write key, loads a synthetic
shop (the read-path benchmark's catalog and event history, posted through the api) and trains
it. Then wrk replays storefront sessions (bench/storefront/sessions.py): each shopper asks for
home-page recommendations, views products (an event, then the product page's recommendations:
frequently bought together, similar items, collaborative), sometimes adds one to the cart (an
event, then the cart's recommendations) and sometimes buys it, many shoppers at once, a tenth
of them new. Events get fresh ids each time the list comes round, so every one is stored and
bumps its shopper's answers.

Measured in the same run: the ceiling (a bare Sanic app doing one Redis GET, before and after),
then the mix: requests/s, p50/p95/p99 over all requests, the share of recommendation answers
served without computing them (`X-Recommendation-Cache` other than miss/off), CPU per request
of the api, the worker and Redis, and events' freshness under load: PROBE_SHOPPERS probes each
post a view (by a shopper of its own) about every half second and ask for that shopper's
content-based recommendations right away and every 20 ms, timed until the view is in the
history, until an answer names it in `reason.because` and until the shopper's projection (the
worker's rewrite) does.

`--compare REF` first runs the same scenario (same seed) on the code of git REF (exported with
`git archive` into the run's folder, on its own fresh servers), then on this checkout, and
prints both side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import ujson

from bench.harness import (
    ROOT,
    Platform,
    export_tree,
    ingest_queues,
    local_platform,
    stop_process,
    wait_ready,
)
from bench.read_path.__main__ import (
    CEILING_KEY,
    _make_tenant,
    cpu_seconds,
    load_shop,
    redis_cpu_seconds,
    synthetic_catalog,
    synthetic_events,
)
from bench.read_path.load import PATHS_SCRIPT
from bench.storefront.load import run_storefront_wrk
from bench.storefront.profile import Breakdown, breakdown, print_breakdown, profile_command
from bench.storefront.sessions import interleaved, popular_products
from bench.wrk import run_wrk, wrk_available
from cli.localservices import free_port
from store import keys
from store.db import create_pool
from store.redis import create_redis

SEED = 19
COMPUTED = {"miss", "off"}


@dataclass
class Figures:
    """What one scenario measured."""

    label: str
    ceiling: dict[str, Any]
    ceiling_after: dict[str, Any]
    mix: dict[str, Any]
    api_cpu_us: float
    worker_cpu_us: float
    redis_cpu_us: float
    freshness: Freshness
    memory: dict[str, Any]
    breakdown: Breakdown | None = None


def group_cpu_seconds(session_id: int) -> float:
    """CPU time of every live process of a session (Dramatiq's worker processes)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session_id:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _rate(result: dict[str, Any]) -> float:
    return float(result["requests"] / result["seconds"])


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


# Probe shoppers viewing at once: enough views in one run for a p95 that means something
# (30 and more), few enough that their requests stay a small part of the mix.
PROBE_SHOPPERS = 3
PROBE_POLL_SECONDS = 0.02


@dataclass
class Freshness:
    """What the probe measured: ms from each view's POST until it was in the history, until
    the shopper's content-based answer named it, and until an answer served from the
    shopper's projection (the worker's rewrite) named it; views never named within 5 s."""

    stored_ms: list[float]
    answered_ms: list[float]
    projected_ms: list[float]
    unanswered: int = 0


async def _probe_shopper(
    http: httpx.AsyncClient,
    *,
    redis: Any,
    tenant_id: str,
    name: str,
    products: list[str],
    until: float,
    rng: random.Random,
    found: Freshness,
) -> None:
    """One probe: each view by a shopper of its own, whose product page asks for content-based
    recommendations right away and again every PROBE_POLL_SECONDS, as a storefront does.
    A shopper's first view is their only one: a later view of a returning shopper may rightly
    rank below their heavier, older events (a cart, a purchase), and its absence from the
    answer would then measure the ranking, not the freshness."""
    views = 0
    while time.monotonic() < until:
        views += 1
        user = f"{name}-{views}"
        product = rng.choice(products)
        history = keys.user_history(tenant_id, user)
        params = {"userId": user, "strategy": "content_based", "limit": 10}
        started = time.monotonic()
        posted = await http.post(
            "/api/v1/events",
            json={"eventType": "product_viewed", "userId": user, "productId": product},
        )
        if posted.status_code not in (200, 202):
            raise RuntimeError(f"probe event: {posted.status_code} {posted.text[:300]}")
        stored = answered = projected = False
        tries = 0
        while time.monotonic() - started < 5 and not projected:
            if not stored and await redis.zcard(history):
                stored = True
                found.stored_ms.append((time.monotonic() - started) * 1000)
            query: dict[str, Any] = params
            if answered:
                # Named already: now the projection, with an unknown product excluded so that
                # the answer cache (which keeps the named answer) cannot answer.
                tries += 1
                query = {**params, "exclude": f"probe-unknown-{tries}"}
            answer = await http.get("/api/v1/recommendations", params=query)
            named = any(product in item["reason"]["because"] for item in answer.json()["data"])
            if named and not answered:
                answered = True
                found.answered_ms.append((time.monotonic() - started) * 1000)
            if named and answer.headers.get("X-Recommendation-Projection") == "hit":
                projected = True
                found.projected_ms.append((time.monotonic() - started) * 1000)
            else:
                await asyncio.sleep(PROBE_POLL_SECONDS)
        if not answered:
            found.unanswered += 1
        await asyncio.sleep(max(0.0, 0.5 - (time.monotonic() - started)))


async def freshness_probe(
    *,
    base: str,
    write_key: str,
    redis: Any,
    tenant_id: str,
    products: list[str],
    until: float,
    rng: random.Random,
) -> Freshness:
    """PROBE_SHOPPERS probes at once, each a view every half second or so (see
    `_probe_shopper`)."""
    found = Freshness([], [], [])
    headers = {"X-API-Key": write_key}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10) as http:
        await asyncio.gather(
            *(
                _probe_shopper(
                    http,
                    redis=redis,
                    tenant_id=tenant_id,
                    name=f"probe{n}",
                    products=products,
                    until=until,
                    rng=random.Random(rng.random()),
                    found=found,
                )
                for n in range(PROBE_SHOPPERS)
            )
        )
    return found


async def memory_report(redis: Any, tenant_id: str) -> dict[str, Any]:
    """Bytes of the tenant's answer cache and projected answers, per user and per product."""
    sizes: dict[str, list[int]] = {}
    for pattern, name in (
        (f"{keys.PREFIX}:{tenant_id}:answer:*", "answer cache"),
        (f"{keys.PREFIX}:{tenant_id}:answers:user:*", "user answers"),
        (f"{keys.PREFIX}:{tenant_id}:answers:product:*", "product answers"),
    ):
        async for key in redis.scan_iter(match=pattern, count=1000):
            usage = await redis.memory_usage(key)
            sizes.setdefault(name, []).append(int(usage or 0))
    return {
        name: {"keys": len(v), "bytes": sum(v), "mean": statistics.mean(v), "max": max(v)}
        for name, v in sizes.items()
        if v
    }


async def scenario(args: argparse.Namespace, code: Path, label: str) -> Figures:
    """Bring one code tree up on fresh servers, load, train, measure the ceiling and the mix."""
    rng = random.Random(SEED)
    with local_platform(
        f"recomengine-bench-storefront-{label.replace(' ', '-')}-",
        keep=args.keep,
        read_limit_per_minute=100_000_000,
    ) as platform:
        pool = await create_pool(platform.settings, min_size=1, max_size=4)
        try:
            return await _scenario(args, platform, pool, rng, code, label)
        finally:
            await pool.close()


async def _scenario(
    args: argparse.Namespace,
    platform: Platform,
    pool: asyncpg.Pool,
    rng: random.Random,
    code: Path,
    label: str,
) -> Figures:
    settings, workdir = platform.settings, platform.workdir
    worker_args = ["cli.main", "worker", "--queues", ingest_queues(code), "--processes", "1"]
    worker = platform.start([*worker_args, "--threads", "8"], "worker.log", cwd=code)
    api = await asyncio.to_thread(platform.start_api, cwd=code)
    tenant_id, read_key, write_key = await _make_tenant(pool, settings)
    catalog = synthetic_catalog(args.products, rng)
    events = synthetic_events(args.users, args.products, args.events, rng)
    started = time.perf_counter()
    await load_shop(
        settings, pool, tenant_id=tenant_id, write_key=write_key, catalog=catalog, events=events
    )
    print(f"[{label}] shop loaded in {time.perf_counter() - started:.1f} s", flush=True)
    started = time.perf_counter()
    trained = await asyncio.to_thread(platform.run_cli, ["train", "--tenant", tenant_id], cwd=code)
    if trained.returncode != 0:
        raise RuntimeError(f"training failed:\n{trained.stdout[-2000:]}\n{trained.stderr[-2000:]}")
    print(f"[{label}] trained in {time.perf_counter() - started:.1f} s", flush=True)

    users = sorted({e["userId"] for e in events})
    products = popular_products(events, rng, 2_000)
    steps = interleaved(
        users=users,
        products=products,
        sessions=args.sessions,
        concurrent=args.concurrent_sessions,
        new_user_share=0.1,
        rng=rng,
    )
    lines_file = workdir / "storefront.txt"
    lines_file.write_text("".join(step.line() + "\n" for step in steps))

    redis = create_redis(settings)
    await redis.set(CEILING_KEY, ujson.dumps({"data": [{"name": "x" * 150}] * 12}))
    ceiling_port = free_port()
    ceiling_file = workdir / "ceiling.txt"
    ceiling_file.write_text("/value\n")
    ceiling_args = ["bench.read_path.ceiling", "--port", str(ceiling_port)]
    ceiling_args += ["--redis-url", settings.redis_url, "--key", CEILING_KEY]
    ceiling_process = platform.start(ceiling_args, "ceiling.log")
    await asyncio.to_thread(
        wait_ready,
        f"http://127.0.0.1:{ceiling_port}/value",
        ceiling_process,
        workdir / "ceiling.log",
    )

    def ceiling_run(duration: float) -> dict[str, Any]:
        return run_wrk(
            url=f"http://127.0.0.1:{ceiling_port}",
            script=PATHS_SCRIPT,
            script_args=[str(ceiling_file)],
            headers={},
            connections=args.connections,
            duration=duration,
            threads=1,
            workdir=workdir,
        )

    def mix_run(duration: float) -> dict[str, Any]:
        return run_storefront_wrk(
            port=settings.api_port,
            lines_file=lines_file,
            read_key=read_key,
            write_key=write_key,
            nonce=uuid.uuid4().hex[:8],
            connections=args.connections,
            duration=duration,
            workdir=workdir,
        )

    try:
        await asyncio.to_thread(ceiling_run, args.warmup)
        ceiling = await asyncio.to_thread(ceiling_run, args.duration)
        stop_process(ceiling_process, timeout=10)
        await asyncio.to_thread(mix_run, args.warmup)
        await asyncio.sleep(2)  # the warm-up's events drain
        api_before, worker_before = cpu_seconds(api.pid), group_cpu_seconds(worker.pid)
        redis_before = await redis_cpu_seconds(redis)
        probe = asyncio.create_task(
            freshness_probe(
                base=platform.base_url,
                write_key=write_key,
                redis=redis,
                tenant_id=tenant_id,
                products=products,
                until=time.monotonic() + args.duration - 5,
                rng=random.Random(SEED + 1),
            )
        )
        mix = await asyncio.to_thread(mix_run, args.duration)
        freshness = await probe
        requests = max(1, mix["requests"])
        api_cpu = (cpu_seconds(api.pid) - api_before) / requests * 1e6
        worker_cpu = (group_cpu_seconds(worker.pid) - worker_before) / requests * 1e6
        redis_cpu = (await redis_cpu_seconds(redis) - redis_before) / requests * 1e6
        ceiling_process = platform.start(ceiling_args, "ceiling.log")
        await asyncio.to_thread(
            wait_ready,
            f"http://127.0.0.1:{ceiling_port}/value",
            ceiling_process,
            workdir / "ceiling.log",
        )
        ceiling_after = await asyncio.to_thread(ceiling_run, args.duration)
        memory = await memory_report(redis, tenant_id)
        found = None
        if args.profile_seconds > 0:
            stop_process(api, timeout=30)
            found = await asyncio.to_thread(
                profile_mix, platform, code, lambda: mix_run(args.profile_seconds)
            )
    finally:
        await redis.aclose()
    return Figures(
        label,
        ceiling,
        ceiling_after,
        mix,
        api_cpu,
        worker_cpu,
        redis_cpu,
        freshness,
        memory,
        found,
    )


def profile_mix(platform: Platform, code: Path, mix: Any) -> Breakdown | None:
    """The api's CPU per request by step under the mix (bench.storefront.profile)."""
    workdir, env = platform.workdir, {"RECOMENGINE_API_PORT": str(platform.settings.api_port)}
    ready = f"{platform.base_url}/ready"
    profiles = []
    for name, traffic in (("idle", False), ("mix", True)):
        out = workdir / f"api-{name}.prof"
        log = f"api-profile-{name}.log"
        process = platform.start(profile_command(out), log, env=env, cwd=code)
        wait_ready(ready, process, workdir / log)
        result = mix() if traffic else None
        stop_process(process, timeout=60)
        if not out.exists():
            print(f"no profile written ({log})", flush=True)
            return None
        profiles.append((out, result))
    (baseline, _), (profile, result) = profiles
    return breakdown(profile, baseline=baseline, requests=int(result["requests"]))


def report(figures: Figures, connections: int, duration: float) -> None:
    """Print one scenario's figures."""
    f = figures
    counts = f.mix.get("counts", {})
    answered = counts.get("answered", {})
    gets = max(1, counts.get("gets", 0))
    served = sum(n for name, n in answered.items() if name not in COMPUTED)
    ceiling_rate = statistics.mean(_rate(r) for r in (f.ceiling, f.ceiling_after))
    rate = _rate(f.mix)
    print(f"\n== {f.label}: storefront mix, {connections} connections, {duration:.0f} s")
    print(f"{'target':<36}{'req/s':>10}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'non2xx':>8}")
    for name, r in (
        ("ceiling: Sanic + one Redis GET", f.ceiling),
        ("storefront mix (GET + POST)", f.mix),
        ("ceiling again, after", f.ceiling_after),
    ):
        print(
            f"{name:<36}{_rate(r):>10,.0f}{r['p50']:>9.2f}{r['p95']:>9.2f}{r['p99']:>9.2f}"
            f"{r['non2xx']:>8}"
        )
    print(
        f"mix / mean ceiling: {rate / ceiling_rate:.0%} (target >= 50%), p99 {f.mix['p99']:.1f} ms"
        f" (target <= 20 ms); {counts.get('gets', 0):,} GET, {counts.get('posts', 0):,} POST "
        f"(bad: {counts.get('badGets', 0)} GET, {counts.get('badPosts', 0)} POST)"
    )
    print(
        f"answers served without computing: {served / gets:.1%} ("
        + ", ".join(f"{name} {n:,}" for name, n in sorted(answered.items()))
        + ")"
    )
    print(
        f"CPU per request (all requests): api {f.api_cpu_us:.0f} us, worker {f.worker_cpu_us:.0f} "
        f"us, Redis {f.redis_cpu_us:.0f} us"
    )
    fresh = f.freshness
    for what, values in (
        ("history", fresh.stored_ms),
        ("named in the next content-based answer", fresh.answered_ms),
        ("named by the projection (worker's rewrite)", fresh.projected_ms),
    ):
        print(
            f"freshness (probe view -> {what}): p50 {_percentile(values, 0.5):.0f} ms, "
            f"p95 {_percentile(values, 0.95):.0f} ms, max {max(values, default=0):.0f} ms, "
            f"within 2 s {sum(v <= 2000 for v in values)}/{len(values)} views"
        )
    print(f"freshness: views not named within 5 s: {fresh.unanswered} (target <= 2 s)")
    for name, m in sorted(f.memory.items()):
        print(
            f"memory, {name}: {m['keys']:,} keys, {m['bytes'] / 1e6:.1f} MB, "
            f"mean {m['mean']:,.0f} B, max {m['max']:,} B per key"
        )
    if f.breakdown is not None:
        print_breakdown(f.breakdown, api_cpu_us=f.api_cpu_us)


async def run(args: argparse.Namespace) -> None:
    """Run the scenario on each code tree and print the figures."""
    if not wrk_available():
        raise SystemExit("wrk is required (apt-get install -y wrk)")
    trees: list[tuple[Path, str]] = []
    scratch = Path(tempfile.mkdtemp(prefix="recomengine-storefront-code-")) / "tree"
    if args.compare:
        trees.append((export_tree(args.compare, scratch), args.compare))
    trees.append((ROOT, "this checkout"))
    results = []
    try:
        for code, label in trees:
            results.append(await scenario(args, code, label))
    finally:
        shutil.rmtree(scratch.parent, ignore_errors=True)
    for figures in results:
        report(figures, args.connections, args.duration)


def main() -> None:
    """Parse options and run the benchmark."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.storefront",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per measurement")
    parser.add_argument(
        "--warmup", type=float, default=15.0, help="seconds of the mix before measuring"
    )
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--products", type=int, default=5_000)
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--sessions", type=int, default=6_000, help="sessions in the list")
    parser.add_argument("--concurrent-sessions", type=int, default=300)
    parser.add_argument(
        "--profile-seconds",
        type=float,
        default=10.0,
        help="seconds of the mix replayed on an api under cProfile, for the breakdown (0: none)",
    )
    parser.add_argument("--compare", metavar="REF", help="also run git REF's code, first")
    parser.add_argument("--keep", action="store_true", help="keep the logs and data folders")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
