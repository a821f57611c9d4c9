"""Where the api's time goes under the storefront mix, measured with cProfile.

The api is restarted under `python -m cProfile` (one Sanic process, as in the measured run),
the same mix is replayed for a few seconds, the api is stopped (the profile is written as it
exits); an api started and stopped the same way without traffic gives the start-up's profile,
taken off function by function. The profile's own time per function (`tottime`: CPU time
on the event loop, not time spent waiting for Redis) is summed into the steps a request
takes, per request served in that phase. cProfile slows the process down (each function
call costs a little), so the figures are scaled to the api CPU per request measured without
the profiler: the shares are the profile's, the total is the real one.
"""

from __future__ import annotations

import pstats
from dataclasses import dataclass
from pathlib import Path

# (step, where its code lives: path fragments of the function's file, or built-in names)
STEPS: list[tuple[str, tuple[str, ...]]] = [
    (
        "Sanic: HTTP parsing, routing, query string, response writing",
        ("/sanic/", "/sanic_routing/", "httptools", "/inspect.py", "/urllib/parse.py"),
    ),
    ("event loop (asyncio, uvloop, sockets)", ("/asyncio/", "uvloop", "socket", "select")),
    (
        "Redis client: packing the call, reading the reply",
        ("/redis/", "hiredis", "/store/redis.py"),
    ),
    (
        "auth, rate limit, metering (api.security, store.ratelimit, usage, keys)",
        (
            "/api/security.py",
            "/api/user_tokens.py",
            "/store/ratelimit.py",
            "/store/usage.py",
            "/store/api_keys.py",
            "/domain/apikeys.py",
            "/domain/usertokens.py",
        ),
    ),
    (
        "recommendations: answer logic (api.recommending, route, projection meta)",
        ("/api/recommending.py", "/api/blueprints/recommendations.py", "/domain/storefront.py"),
    ),
    (
        "recommendations computed: ranking, hydration, projection writes",
        ("/domain/serving.py", "/domain/cold_start.py", "/store/models.py", "/store/answers.py"),
    ),
    (
        "events: validation and enqueue (api.ingestion, ingest gate, queue)",
        (
            "/api/ingestion.py",
            "/api/blueprints/events.py",
            "/store/ingest_gate.py",
            "/store/event_queue.py",
            "/domain/events.py",
            "/domain/event_message.py",
            "/dramatiq/",
        ),
    ),
    ("JSON and validation (ujson, json, pydantic)", ("ujson", "json", "pydantic")),
    ("api middleware, problems, metrics, CORS", ("/api/", "prometheus_client")),
]
OTHER = "other (built-ins, logging, the rest)"


@dataclass
class Breakdown:
    """Profiled CPU per request, by step."""

    requests: int
    profiled_us: float  # profiled CPU per request (inflated by the profiler)
    steps: dict[str, float]  # step -> share of the profiled time (0..1)


def profile_command(out: Path) -> list[str]:
    """The module arguments that run the api under cProfile, writing `out` at exit."""
    return ["cProfile", "-o", str(out), "-m", "cli.main", "api"]


def _step_of(filename: str, function: str) -> str:
    if filename != "~" and "/" not in filename and not filename.startswith("<"):
        return STEPS[0][0]  # Sanic compiles its HTTP and routing functions (no file)
    where = filename if filename != "~" else function
    for step, fragments in STEPS:
        if any(fragment in where for fragment in fragments):
            return step
    return OTHER


Key = tuple[str, int, str]


def _edges(profile: Path) -> dict[Key, dict[Key | None, float]]:
    """Own time of each function split by its caller (None: no caller recorded)."""
    stats = pstats.Stats(str(profile))
    edges: dict[Key, dict[Key | None, float]] = {}
    for key, (_cc, _nc, tottime, _ct, callers) in stats.stats.items():  # type: ignore[attr-defined]
        split: dict[Key | None, float] = {c: row[2] for c, row in callers.items()}
        rest = tottime - sum(split.values())
        if rest > 0:
            split[None] = rest
        edges[key] = split
    return edges


def breakdown(profile: Path, *, baseline: Path, requests: int) -> Breakdown:
    """Sum a profile's own time per step, per request, less the `baseline` profile's (the
    api started and stopped without traffic: imports and start-up). The time of a built-in
    or other unplaced function goes to the step of the function that called it (up to three
    callers up)."""
    before, after = _edges(baseline), _edges(profile)
    totals: dict[str, float] = {}

    def place(key: Key, seconds: float, depth: int) -> None:
        step = _step_of(key[0], key[2])
        callers = after.get(key, {})
        if step != OTHER or depth >= 3 or not callers:
            totals[step] = totals.get(step, 0.0) + seconds
            return
        whole = sum(callers.values()) or 1.0
        for caller, share in callers.items():
            part = seconds * share / whole
            if caller is None:
                totals[OTHER] = totals.get(OTHER, 0.0) + part
            else:
                place(caller, part, depth + 1)

    for key, split in after.items():
        own = sum(split.values()) - sum(before.get(key, {}).values())
        if own > 0:
            place(key, own, 0)
    total = sum(totals.values()) or 1.0
    return Breakdown(
        requests=requests,
        profiled_us=total / max(1, requests) * 1e6,
        steps={step: seconds / total for step, seconds in totals.items()},
    )


def print_breakdown(found: Breakdown, *, api_cpu_us: float) -> None:
    """The steps, largest first, as a share and as real CPU per request."""
    print(
        f"where the api's CPU goes (cProfile, {found.requests:,} requests of the mix; profiled "
        f"{found.profiled_us:,.0f} us per request, scaled to the {api_cpu_us:,.0f} us measured "
        "without the profiler):"
    )
    for step, share in sorted(found.steps.items(), key=lambda kv: -kv[1]):
        print(f"  {step:<76}{share:>6.1%}{share * api_cpu_us:>8,.0f} us")
