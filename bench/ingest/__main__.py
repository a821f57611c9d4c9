"""Event ingestion benchmark against the real api, worker, Redis and PostgreSQL.

    .venv/bin/python -m bench.ingest [--duration 60] [--processes 2] [--threads 8]
        [--batch-clients 12] [--single-clients 32] [--generator wrk|asyncio]
        [--paced-fractions 0.5,0.8] [--phases batches,singles,paced,latency]
        [--statements] [--profile DIR] [--compare REF]

Starts its own PostgreSQL and Redis on free ports in a temporary folder, the api (one process)
and a worker pool on the `ingest` queue, then measures, in this order:

1. raw asyncpg COPY into `events` (the ceiling: no HTTP, no queue, no dedupe, no projections);
2. batches of 100 posted by concurrent clients for --duration s: events/s accepted by the api,
   and events/s landed in PostgreSQL end to end (until the last accepted event is a row). The
   clients post faster than the workers store, so that the workers, not the clients' pace,
   set the end-to-end rate (with 8 clients each waiting for its answer they did not);
3. single events for --duration s from --single-clients connections, each posting again as
   soon as it is answered (wrk when installed: `apt-get install -y wrk`): the most one api
   process accepts, POST latency, and the backlog left on the queue when posting stops (no
   growing backlog = the workers keep up);
4. single events paced at each --paced-fractions of the rate of (3), --duration/2 s each: POST
   latency counted from each event's scheduled moment, as a merchant's backend posting
   whenever a shopper acts would see it (a slow answer that delays the next post counts);
5. batches at half the rate of (2) for --duration/2 s: enqueue-to-row latency p50/p95/p99
   (event timestamp = the client's send time, row `received_at` = the insert transaction).

`--compare REF` first runs the same phases on the code of git REF (exported with `git archive`,
on its own fresh servers), then on this checkout: before and after, side by side in one run.

Every side effect of ingestion is on: dedupe, counters, history, trending, attribution.

After phases 2 to 4 it prints the CPU time each process used per event (api, worker pool,
PostgreSQL, Redis, and the load generator, which shares the machine). Before each phase it
lets the previous one's after-effects finish (a CHECKPOINT, then until the cores are idle) and
times a fixed pure-Python loop: on a virtual machine whose host gets slower, that time and every
figure of the phase move together. --statements loads
pg_stat_statements and prints the statements PostgreSQL and the commands Redis spent most time
on; --profile DIR
samples the api and the worker pool with py-spy (pip install py-spy) during phases 2 and 3 and
prints where each spends its time, the raw stacks staying in DIR.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import orjson
import uvloop
from redis.asyncio import Redis

from bench.harness import KeepAliveAnswers, Platform, export_tree, local_platform, make_bench_tenant
from bench.wrk import run_wrk, wrk_available
from cli.localservices import PostgresServer
from store.counters import day_of, read_counters
from store.db import create_pool
from store.redis import create_redis
from store.settings import Settings

COPY_COLUMNS = ["tenant_id", "event_id", "event_type", "user_id", "product_id", "occurred_at"]
UNLIMITED = {"rateLimits": {"writesPerMinute": 100_000_000}}
_TICKS = os.sysconf("SC_CLK_TCK")


async def _make_tenant(pool: asyncpg.Pool, settings: Settings) -> tuple[str, str]:
    tenant = await make_bench_tenant(pool, settings, config=UNLIMITED, permissions=["read_write"])
    return tenant.tenant_id, tenant.keys["read_write"]


def host_reference_ms() -> float:
    """Milliseconds of a fixed pure-Python loop, best of five: the same code on a busier or
    slower host (a virtual machine's neighbours) takes longer, and every figure moves with it."""
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        total = 0
        for number in range(200_000):
            total += number
        best = min(best, time.perf_counter() - started)
    return best * 1000


LATENCY_QUANTILES = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99, "p999": 0.999}


def _idle_seconds() -> float:
    """CPU seconds all cores have been idle since boot (Linux /proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return (int(fields[4]) + int(fields[5])) / _TICKS  # idle + iowait


async def settle(pool: asyncpg.Pool, *, quiet_share: float = 0.9, limit: float = 60.0) -> str:
    """Let the previous phase's after-effects finish before the next phase: a CHECKPOINT
    (a million inserted rows leave PostgreSQL writing out pages for minutes), then wait until
    the cores are `quiet_share` idle over a second (autovacuum, the workers' tail); what it
    took, as a report line."""
    started = time.perf_counter()
    await pool.execute("CHECKPOINT")
    cores = os.cpu_count() or 1
    idle_share = 0.0
    while time.perf_counter() - started < limit:
        before, at = _idle_seconds(), time.perf_counter()
        await asyncio.sleep(1.0)
        idle_share = (_idle_seconds() - before) / (time.perf_counter() - at) / cores
        if idle_share >= quiet_share:
            break
    return (
        f"  settled before this phase: CHECKPOINT, then {time.perf_counter() - started:.0f} s "
        f"until the cores were {idle_share:.0%} idle"
    )


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def copy_ceiling(pool: asyncpg.Pool, *, rows: int) -> float:
    """Rows/s of a raw COPY into the events table (a throwaway tenant)."""
    tenant = uuid.uuid4()
    now = datetime.now(UTC)
    records = [
        (
            tenant,
            f"copy-{i}",
            "product_viewed",
            f"u{i % 5000}",
            f"sku-{i % 20000}",
            now - timedelta(microseconds=i),
        )
        for i in range(rows)
    ]
    started = time.perf_counter()
    async with pool.acquire() as connection:
        for start in range(0, rows, 50_000):
            await connection.copy_records_to_table(
                "events",
                records=records[start : start + 50_000],
                columns=COPY_COLUMNS,
            )
    return rows / (time.perf_counter() - started)


class Generator:
    """Unique, realistic events: views, carts, clicks, impressions and some purchases."""

    def __init__(self, run: str) -> None:
        self._run = run
        self._n = 0

    def event(self, moment: datetime | None = None) -> dict[str, Any]:
        """One new event (its timestamp is now unless given)."""
        self._n += 1
        n = self._n
        kind = n % 20
        event: dict[str, Any] = {
            "eventType": "product_viewed",
            "userId": f"{self._run}-u{n % 3000}",
            "productId": f"sku-{(n * 7919) % 5000}",
            "timestamp": (moment or datetime.now(UTC)).isoformat(),
            "sessionId": f"s{n % 900}",
        }
        if kind in (1, 2):
            event["eventType"] = "recommendation_impressed"
            event["metadata"] = {"placementId": "home", "strategy": "trending"}
        elif kind == 3:
            event["eventType"] = "recommendation_clicked"
            event["metadata"] = {"placementId": "home", "strategy": "trending"}
        elif kind == 4:
            event["eventType"] = "add_to_cart"
        elif kind == 5:
            event["eventType"] = "purchase"
            event["metadata"] = {"price": 19.99}
        return event

    def batch(self, size: int = 100) -> list[dict[str, Any]]:
        """`size` new events with distinct timestamps."""
        now = datetime.now(UTC)
        return [self.event(now - timedelta(microseconds=i)) for i in range(size)]


# The Generator's mix of single events, made by wrk. Each wrk thread has its own users; the
# timestamps step by a microsecond from the run's start, so that no two events of a thread
# share a dedupe key (a thread posts far fewer than a million events a second).
SINGLES_SCRIPT = """
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("thread_id", counter)
end

function init(args)
  run = args[1] .. thread_id
  start_micros = tonumber(args[2])
  n = 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

local function metadata(kind)
  if kind == 1 or kind == 2 or kind == 3 then
    return ',"metadata":{"placementId":"home","strategy":"trending"}'
  elseif kind == 5 then
    return ',"metadata":{"price":19.99}'
  end
  return ""
end

local TYPES = {[1] = "recommendation_impressed", [2] = "recommendation_impressed",
               [3] = "recommendation_clicked", [4] = "add_to_cart", [5] = "purchase"}

function request()
  n = n + 1
  local kind = n % 20
  local micros = start_micros + n
  local seconds = math.floor(micros / 1000000)
  local timestamp = os.date("!%Y-%m-%dT%H:%M:%S", seconds) ..
    string.format(".%06d+00:00", micros - seconds * 1000000)
  local body = string.format(
    '{"eventType":"%s","userId":"%s-u%d","productId":"sku-%d","timestamp":"%s",' ..
    '"sessionId":"s%d"%s}',
    TYPES[kind] or "product_viewed", run, n % 3000, (n * 7919) % 5000, timestamp,
    n % 900, metadata(kind))
  return wrk.format(nil, "/api/v1/events", nil, body)
end
"""


async def _pushes(broker: Redis) -> int:
    """Messages pushed on queues so far (Redis counts every RPUSH, inside scripts too)."""
    stats = await broker.info("commandstats")
    return int(stats.get("cmdstat_rpush", {}).get("calls", 0))


async def _count(pool: asyncpg.Pool, tenant_id: str) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM events WHERE tenant_id = $1", tenant_id))


async def _counted(redis: Redis, tenant_id: str) -> int:
    """Events the workers have stored and counted for the tenant (today and yesterday)."""
    today = datetime.now(UTC)
    days = {day_of(today), day_of(today - timedelta(days=1))}
    found = [await read_counters(redis, tenant_id=tenant_id, day=day) for day in days]
    return int(sum(counters.get("events", 0) for counters in found))


async def _wait_landed(
    pool: asyncpg.Pool, redis: Redis, tenant_id: str, expected: int, limit: float
) -> float:
    """Seconds until `expected` events are rows (or `limit`). Polled on the real-time counter,
    which a worker bumps only after the rows' commit, so that the wait does not load
    PostgreSQL with a count over the growing table every few milliseconds; then confirmed."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit:
        if await _counted(redis, tenant_id) >= expected:
            break
        await asyncio.sleep(0.02)
    elapsed = time.perf_counter() - started
    while await _count(pool, tenant_id) < expected and time.perf_counter() - started < limit:
        await asyncio.sleep(0.05)  # not counted yet: only the rows say they landed
        elapsed = time.perf_counter() - started
    return elapsed


class RawClient:
    """A minimal keep-alive HTTP/1.1 client: the load generator shares two cores with the
    system under test, so it must spend as little CPU per request as possible (httpx spends
    a few milliseconds, which would cap the measurement rather than the api; bodies are
    written and read with orjson, for the same reason). An answer is
    timed when its last byte is read, not when this loop next gets round to the coroutine that
    waits for it, so that the client's own backlog (32 answers of one flush arriving at once)
    is not counted as api latency."""

    def __init__(self, host: str, port: int, key: str) -> None:
        self._host, self._port, self._key = host, port, key
        self._connection: KeepAliveAnswers | None = None

    async def post(self, path: str, payload: Any) -> tuple[int, Any, float, float]:
        """POST JSON; the status, the decoded JSON answer, and the moments (perf_counter) the
        request was written and its answer read."""
        connection = await self.connect()
        assert connection.transport is not None
        body = orjson.dumps(payload)
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self._host}\r\nContent-Type: application/json\r\n"
            f"X-API-Key: {self._key}\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        answered = connection.expect()
        sent = time.perf_counter()
        connection.transport.write(head.encode() + body)
        status, answer, finished = await answered
        return status, orjson.loads(answer) if answer else None, sent, finished

    async def connect(self) -> KeepAliveAnswers:
        """The open connection (opened now if need be)."""
        if self._connection is None:
            _, self._connection = await asyncio.get_running_loop().create_connection(
                KeepAliveAnswers, self._host, self._port
            )
        return self._connection

    async def close(self) -> None:
        """Close the connection."""
        if self._connection is not None and self._connection.transport is not None:
            self._connection.transport.close()
        self._connection = None


async def post_batches(
    base: tuple[str, int],
    *,
    key: str,
    generator: Generator,
    seconds: float,
    clients: int,
    per_second: float | None = None,
) -> int:
    """Post batches of 100 from `clients` loops for `seconds` (optionally paced); accepted."""
    accepted = 0
    deadline = time.perf_counter() + seconds
    interval = clients / per_second * 100 if per_second else 0.0

    async def loop() -> None:
        nonlocal accepted
        client = RawClient(*base, key)
        next_at = time.perf_counter()
        while time.perf_counter() < deadline:
            status, answer, _, _ = await client.post(
                "/api/v1/events/batch", {"events": generator.batch()}
            )
            if status != 202:
                raise RuntimeError(f"batch answered {status}: {answer}")
            accepted += answer["accepted"]
            if interval:
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        await client.close()

    await asyncio.gather(*(loop() for _ in range(clients)))
    return accepted


async def post_singles(
    base: tuple[str, int],
    *,
    key: str,
    generator: Generator,
    seconds: float,
    clients: int,
    per_second: float | None = None,
) -> tuple[int, dict[str, float]]:
    """Post single events from `clients` asyncio loops for `seconds`; accepted and the
    latency summary (ms).

    Paced at `per_second`, each loop sends on a fixed schedule and an event's latency runs from
    its scheduled moment, not from when it was sent: an answer late enough to hold up the
    next send counts against the server, as it would for a merchant's backend that posts
    whenever a shopper acts.
    """
    accepted = 0
    latencies: list[float] = []
    connections = [RawClient(*base, key) for _ in range(clients)]
    # Connected before the clock starts: a connection's set-up is not an event's latency.
    await asyncio.gather(*(client.connect() for client in connections))
    started = time.perf_counter()
    deadline = started + seconds
    interval = clients / per_second if per_second else 0.0

    async def loop(number: int) -> None:
        nonlocal accepted
        client = connections[number]
        scheduled = started + interval * number / clients  # the loops take turns
        while time.perf_counter() < deadline:
            if interval:
                await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            status, answer, sent, finished = await client.post("/api/v1/events", generator.event())
            latencies.append((finished - (scheduled if interval else sent)) * 1000)
            if status != 202:
                raise RuntimeError(f"event answered {status}: {answer}")
            accepted += 1
            scheduled += interval
        await client.close()

    await asyncio.gather(*(loop(number) for number in range(clients)))
    summary = {name: _percentile(latencies, q) for name, q in LATENCY_QUANTILES.items()}
    return accepted, {**summary, "max": max(latencies)}


def post_singles_with_wrk(
    base: tuple[str, int], *, key: str, run: str, seconds: float, clients: int, workdir: Path
) -> tuple[int, dict[str, float]]:
    """Post single events from `clients` wrk connections for `seconds`; accepted and the
    latency summary (ms). wrk does not count the requests still on their way when it stops (at
    most one per connection): those events land too, so a few more rows than accepted events
    may show."""
    host, port = base
    result = run_wrk(
        url=f"http://{host}:{port}",
        script=SINGLES_SCRIPT,
        script_args=[run, str(int(time.time() * 1e6))],
        headers={"X-API-Key": key},
        connections=clients,
        duration=seconds,
        threads=1,
        workdir=workdir,
    )
    if result["non2xx"] or result["socketErrors"]:
        raise RuntimeError(f"wrk saw failed requests: {result}")
    return int(result["requests"]), result


_samplers: set[int] = set()


def _process_table() -> dict[int, tuple[int, float, float]]:
    """Every process: its parent and the CPU seconds it used in user and in kernel mode."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        # A process's own CPU time, and that of its children it has waited for (wrk's).
        table[int(entry.name)] = (
            int(fields[1]),
            (int(fields[11]) + int(fields[13])) / _TICKS,
            (int(fields[12]) + int(fields[14])) / _TICKS,
        )
    return table


def cpu_seconds(roots: dict[str, int]) -> dict[str, tuple[float, float]]:
    """CPU seconds (user, kernel) used so far by each named process and its descendants."""
    table = _process_table()
    children: dict[int, list[int]] = {}
    for pid, (parent, _, _) in table.items():
        children.setdefault(parent, []).append(pid)
    used = {}
    for name, root in roots.items():
        user = kernel = 0.0
        stack = [root]
        while stack:
            pid = stack.pop()
            _, in_user, in_kernel = table.get(pid, (0, 0.0, 0.0))
            user += in_user
            kernel += in_kernel
            # Another group's tree (the api under the bench, say) is not counted twice, and
            # neither are the profilers.
            stack.extend(
                child
                for child in children.get(pid, ())
                if child not in roots.values() and child not in _samplers
            )
        used[name] = (user, kernel)
    return used


def cpu_report(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]], events: int
) -> str:
    """CPU time per process group over a phase, per event, with its share in the kernel."""
    parts = []
    for name in before:
        user = after[name][0] - before[name][0]
        kernel = after[name][1] - before[name][1]
        total = user + kernel
        parts.append(
            f"{name} {total:.1f} s ({total / events * 1e6:.0f} us/event, "
            f"{kernel / max(total, 1e-9):.0%} sys)"
        )
    return "  CPU: " + ", ".join(parts)


@contextmanager
def profiled(folder: Path | None, phase: str, pids: dict[str, int]) -> Iterator[None]:
    """Sample each named process (and its children) with py-spy while the block runs, then
    print its heaviest frames; nothing when `folder` is None."""
    if folder is None:
        yield
        return
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    folder.mkdir(parents=True, exist_ok=True)
    samplers = {
        name: subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(pid),
                "--subprocesses",
                "--nonblocking",
                "--gil",
                "--rate",
                "200",
                "--format",
                "raw",
                "--output",
                str(folder / f"{phase}-{name}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, pid in pids.items()
    }
    _samplers.update(sampler.pid for sampler in samplers.values())
    try:
        yield
    finally:
        for sampler in samplers.values():
            sampler.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        for name, sampler in samplers.items():
            sampler.wait(timeout=60)
            print(summarize(folder / f"{phase}-{name}.txt", title=f"{phase} / {name}"))


def summarize(path: Path, *, title: str, top: int = 25) -> str:
    """The frames holding most samples of a py-spy raw file: own time and inclusive time."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    if not path.exists():
        return f"{title}: no samples"
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        n = int(count)
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    lines = [f"== {title}: {total} samples"]
    lines += ["-- own"] + [f"{n / total:6.1%} {f}" for f, n in own.most_common(top)]
    lines += ["-- inclusive"] + [f"{n / total:6.1%} {f}" for f, n in inclusive.most_common(top)]
    return "\n".join(lines)


async def track_statements(platform: Platform, pool: asyncpg.Pool) -> asyncpg.Pool:
    """Restart PostgreSQL with pg_stat_statements loaded; a new pool to it."""
    await pool.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
    await pool.close()
    port = urlsplit(platform.settings.database_url).port
    assert port is not None
    server = PostgresServer(data_dir=platform.workdir / "postgres", port=port)
    await asyncio.to_thread(server.stop)
    await asyncio.to_thread(server.start)
    pool = await create_pool(platform.settings, min_size=1, max_size=4)
    await pool.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    return pool


async def statements_report(pool: asyncpg.Pool, redis: Redis, *, top: int = 6) -> str:
    """The statements PostgreSQL and the commands Redis spent most time executing since the
    last call (a script's commands count in its EVALSHA); resets both."""
    rows = await pool.fetch(
        """SELECT calls, total_exec_time AS ms,
                  left(regexp_replace(query, '\\s+', ' ', 'g'), 80) AS query
           FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT $1""",
        top,
    )
    await pool.execute("SELECT pg_stat_statements_reset()")
    commands = sorted(
        (
            (int(stats["usec"]), int(stats["calls"]), name.removeprefix("cmdstat_"))
            for name, stats in (await redis.info("commandstats")).items()
        ),
        reverse=True,
    )[:top]
    await redis.config_resetstat()
    return "\n".join(
        [
            f"  SQL {r['ms']:7.0f} ms {r['calls']:6d} calls "
            f"{r['ms'] / max(1, r['calls']):6.2f} ms/call {r['query']}"
            for r in rows
        ]
        + [
            f"  Redis {usec / 1000:7.0f} ms {calls:6d} calls {usec / max(1, calls):6.0f} us/call "
            f"{name}"
            for usec, calls, name in commands
        ]
    )


async def singles_phase(
    args: argparse.Namespace,
    platform: Platform,
    pool: asyncpg.Pool,
    projections: Redis,
    roots: dict[str, int],
    pids: dict[str, int],
    *,
    per_second: float | None,
    host_line: Callable[[], Awaitable[str]],
) -> float:
    """Post single events for --duration s as fast as --single-clients connections go, or for
    half of it paced at `per_second` from --paced-clients loops; print the figures; return the
    accepted rate."""
    settings = platform.settings
    address = ("127.0.0.1", settings.api_port)
    host = await host_line()
    tenant_id, key = await _make_tenant(pool, settings)
    broker = Redis.from_url(settings.broker_url)
    pushes_before = await _pushes(broker)
    started = time.perf_counter()
    cpu_before = cpu_seconds(roots)
    if per_second is not None:
        clients, how = args.paced_clients, f"paced at {per_second:,.0f}/s"
        accepted, latency = await post_singles(
            address,
            key=key,
            generator=Generator(f"p{per_second:.0f}"),
            seconds=max(5.0, args.duration / 2),
            clients=clients,
            per_second=per_second,
        )
    else:
        clients, how = args.single_clients, args.generator
        with profiled(args.profile, "singles", pids):
            if args.generator == "wrk":
                accepted, latency = await asyncio.to_thread(
                    post_singles_with_wrk,
                    address,
                    key=key,
                    run=f"s{uuid.uuid4().hex[:6]}",
                    seconds=args.duration,
                    clients=clients,
                    workdir=platform.workdir,
                )
            else:
                accepted, latency = await post_singles(
                    address,
                    key=key,
                    generator=Generator("s"),
                    seconds=args.duration,
                    clients=clients,
                )
    posting = time.perf_counter() - started
    backlog = int(await broker.llen("dramatiq:ingest"))
    landed_at_stop = await _count(pool, tenant_id)
    drain = await _wait_landed(pool, projections, tenant_id, accepted, limit=600)
    cpu_after = cpu_seconds(roots)
    messages = await _pushes(broker) - pushes_before
    await broker.aclose()
    print(
        f"single events ({clients} clients, {how}): accepted {accepted / posting:,.0f} "
        f"events/s; POST p50 {latency['p50']:.1f} ms, p99 {latency['p99']:.1f} ms; when posting "
        f"stopped {landed_at_stop:,} of {accepted:,} had landed, {backlog} messages queued, "
        f"drained {drain:.1f} s later",
        flush=True,
    )
    print(
        "  POST latency ms: "
        + ", ".join(f"{name} {latency[name]:.1f}" for name in LATENCY_QUANTILES)
        + f", max {latency['max']:.1f}; {messages:,} queue messages "
        f"({accepted / max(1, messages):.1f} events each)",
        flush=True,
    )
    print(cpu_report(cpu_before, cpu_after, accepted), host, sep="\n", flush=True)
    if args.statements:
        print(await statements_report(pool, projections), flush=True)
    return accepted / posting


async def run(args: argparse.Namespace) -> None:
    """Bring the stack up, run the phases, print the figures."""
    if args.generator == "wrk" and not wrk_available():
        print("wrk is not installed (apt-get install -y wrk): using the asyncio client")
        args.generator = "asyncio"
    with local_platform("recomengine-bench-ingest-", keep=args.keep) as platform:
        settings = platform.settings
        pool = await create_pool(settings, min_size=1, max_size=4)
        if args.statements:
            pool = await track_statements(platform, pool)
        projections = create_redis(settings)
        try:
            worker_args = [
                "worker",
                "--queues",
                "ingest,ingest_bulk",
                "--processes",
                str(args.processes),
            ]
            worker_args += ["--threads", str(args.threads)]
            worker = platform.start(["cli.main", *worker_args], "worker.log")
            api = await asyncio.to_thread(platform.start_api)
            pids = {"api": api.pid, "worker": worker.pid}
            roots = {
                **pids,
                "postgres": int(
                    (platform.workdir / "postgres" / "postmaster.pid").read_text().split()[0]
                ),
                "redis": int((platform.workdir / "redis" / "redis.pid").read_text().split()[0]),
                "bench": os.getpid(),
            }
            address = ("127.0.0.1", settings.api_port)
            copy_rate = await copy_ceiling(pool, rows=args.copy_rows)
            print(f"COPY ceiling: {copy_rate:,.0f} rows/s ({args.copy_rows:,} rows)", flush=True)
            reference = host_reference_ms()

            async def host_line() -> str:
                settled = await settle(pool)
                return (
                    f"{settled}\n  host: reference loop {host_reference_ms():.1f} ms before "
                    f"this phase, {reference:.1f} ms at the start (longer: a slower host)"
                )

            phases = {phase.strip() for phase in args.phases.split(",")}
            e2e_rate = args.latency_rate * 2
            if "batches" in phases:
                host = await host_line()
                tenant_id, key = await _make_tenant(pool, settings)
                if args.statements:
                    await statements_report(pool, projections)
                started = time.perf_counter()
                cpu_before = cpu_seconds(roots)
                with profiled(args.profile, "batches", pids):
                    batch_accepted = await post_batches(
                        address,
                        key=key,
                        generator=Generator("b"),
                        seconds=args.duration,
                        clients=args.batch_clients,
                    )
                    posting = time.perf_counter() - started
                    await _wait_landed(pool, projections, tenant_id, batch_accepted, limit=600)
                    end_to_end = time.perf_counter() - started
                landed = await _count(pool, tenant_id)
                batch_rate = batch_accepted / posting
                e2e_rate = landed / end_to_end
                print(
                    f"batches of 100: accepted {batch_rate:,.0f} events/s; landed {landed:,} of "
                    f"{batch_accepted:,} in {end_to_end:.1f} s = {e2e_rate:,.0f} events/s end to "
                    f"end ({e2e_rate / copy_rate:.0%} of COPY)",
                    flush=True,
                )
                print(cpu_report(cpu_before, cpu_seconds(roots), landed), host, sep="\n")
                if args.statements:
                    print(await statements_report(pool, projections), flush=True)

            single_rate = args.single_rate
            if "singles" in phases:
                single_rate = await singles_phase(
                    args,
                    platform,
                    pool,
                    projections,
                    roots,
                    pids,
                    per_second=None,
                    host_line=host_line,
                )
            if "paced" in phases:
                for fraction in (float(f) for f in args.paced_fractions.split(",")):
                    await singles_phase(
                        args,
                        platform,
                        pool,
                        projections,
                        roots,
                        pids,
                        per_second=single_rate * fraction,
                        host_line=host_line,
                    )

            if "latency" in phases:
                host = await host_line()
                tenant_id, key = await _make_tenant(pool, settings)
                half = e2e_rate / 2
                seconds = max(5.0, args.duration / 2)
                paced = await post_batches(
                    address,
                    key=key,
                    generator=Generator("l"),
                    seconds=seconds,
                    clients=4,
                    per_second=half,
                )
                await _wait_landed(pool, projections, tenant_id, paced, limit=600)
                delays = await pool.fetch(
                    """SELECT extract(epoch FROM received_at - occurred_at) * 1000 AS ms
                       FROM events WHERE tenant_id = $1""",
                    tenant_id,
                )
                values = [float(r["ms"]) for r in delays]
                print(
                    f"enqueue-to-row at {paced / seconds:,.0f} events/s (half of end to end): "
                    f"p50 {_percentile(values, 0.50):.0f} ms, p95 "
                    f"{_percentile(values, 0.95):.0f} ms, p99 {_percentile(values, 0.99):.0f} ms",
                    flush=True,
                )
                print(host, flush=True)
        finally:
            await projections.aclose()
            await pool.close()


def main() -> None:
    """Parse options and run the benchmark."""
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per phase")
    parser.add_argument("--processes", type=int, default=2, help="worker processes")
    parser.add_argument("--threads", type=int, default=8, help="worker threads per process")
    parser.add_argument("--copy-rows", type=int, default=200_000)
    parser.add_argument("--batch-clients", type=int, default=12, help="concurrent batch posters")
    parser.add_argument(
        "--single-clients", type=int, default=32, help="concurrent single-event posters"
    )
    parser.add_argument(
        "--generator",
        choices=["wrk", "asyncio"],
        default="wrk",
        help="the single-event client: wrk (C, least CPU) or this process's asyncio loops",
    )
    parser.add_argument("--keep", action="store_true", help="keep the logs and data folder")
    parser.add_argument(
        "--phases",
        default="batches,singles,paced,latency",
        help="which of batches, singles, paced, latency to run (comma-separated)",
    )
    parser.add_argument(
        "--paced-fractions",
        default="0.5,0.8",
        help="the paced phases' rates, as fractions of the singles phase's accepted rate",
    )
    parser.add_argument(
        "--paced-clients", type=int, default=64, help="loops sending paced single events"
    )
    parser.add_argument(
        "--single-rate",
        type=float,
        default=5000.0,
        help="events/s the paced fractions apply to when the singles phase does not run",
    )
    parser.add_argument(
        "--latency-rate",
        type=float,
        default=7500.0,
        help="events/s of the latency phase when the batches phase does not run",
    )
    parser.add_argument(
        "--statements",
        action="store_true",
        help="load pg_stat_statements and print the costliest statements of each phase",
    )
    parser.add_argument(
        "--profile", type=Path, default=None, help="sample api and worker with py-spy into DIR"
    )
    parser.add_argument("--compare", metavar="REF", help="also run git REF's code, first")
    args = parser.parse_args()
    if args.compare:
        compare(args.compare)
        print("\n=== this checkout ===", flush=True)
    # The load generator shares the two cores with the system it measures: uvloop (which the
    # api runs on too) spends less of them per request than the standard loop.
    uvloop.run(run(args))


def compare(ref: str) -> None:
    """Run this benchmark, with the same options, on the code of git `ref` (its own copy of
    this module measures it, on its own servers)."""
    scratch = Path(tempfile.mkdtemp(prefix="recomengine-ingest-code-")) / "tree"
    try:
        tree = export_tree(ref, scratch)
        argv = sys.argv[1:]
        at = argv.index("--compare")
        del argv[at : at + 2]
        print(f"=== {ref} ===", flush=True)
        env = {**os.environ, "PYTHONPATH": str(tree)}
        subprocess.run([sys.executable, "-m", "bench.ingest", *argv], cwd=tree, env=env, check=True)
    finally:
        shutil.rmtree(scratch.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
