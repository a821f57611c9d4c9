"""Request metrics of the api (Prometheus) and who may read GET /metrics."""

from __future__ import annotations

import hmac
import ipaddress
import os
import time

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from sanic import Request, Sanic
from sanic.response import HTTPResponse

from domain.errors import Forbidden

# With PROMETHEUS_MULTIPROC_DIR set (several api worker processes), every process writes its
# samples there and /metrics sums them; otherwise the answering process's own are shown.
REGISTRY = CollectorRegistry(auto_describe=True)
REQUESTS = Counter(
    "recomengine_http_requests_total",
    "HTTP requests answered by the api, per route, method and status.",
    ["route", "method", "status"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "recomengine_http_request_seconds",
    "Time from a request's arrival to its answer, per route, method and status.",
    ["route", "method", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)
UNMATCHED = "unmatched"
_children: dict[tuple[str, str, str], tuple[object, object]] = {}


def _route(request: Request) -> str:
    # The route's pattern, never the raw path: ids in paths would explode the label set.
    route = getattr(request, "route", None)
    path = getattr(route, "path", None)
    return f"/{path}" if path is not None else UNMATCHED


def observe(request: Request, response: HTTPResponse) -> None:
    """Count the answer and its latency (per route pattern, method and status)."""
    started = getattr(request.ctx, "started", None)
    label = (_route(request), request.method, str(response.status))
    children = _children.get(label)
    if children is None:
        if len(_children) > 10_000:  # a bound on memory, whatever arrives
            label = (UNMATCHED, request.method, str(response.status))
        children = _children.setdefault(label, (REQUESTS.labels(*label), LATENCY.labels(*label)))
    counter, histogram = children
    counter.inc()  # type: ignore[attr-defined]
    if started is not None:
        histogram.observe(time.perf_counter() - started)  # type: ignore[attr-defined]


def request_metrics() -> bytes:
    """The request metrics in Prometheus text format."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def check_metrics_access(request: Request, *, token: str | None) -> None:
    """Metrics are for the operator: a caller on this machine (not relayed by a proxy), or one
    that sends `Authorization: Bearer <RECOMENGINE_METRICS_TOKEN>`; 403 for anyone else."""
    if token:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), token):
            return
    relayed = any(h in request.headers for h in ("x-forwarded-for", "forwarded", "x-real-ip"))
    try:
        loopback = ipaddress.ip_address(request.ip).is_loopback
    except ValueError:
        loopback = False
    if loopback and not relayed:
        return
    raise Forbidden(
        "Metrics are served to this machine only, or with the metrics token "
        "(Authorization: Bearer)."
    )


def register(app: Sanic) -> None:
    """Count every answer of `app`."""
    app.register_middleware(observe, "response", priority=98)  # type: ignore[arg-type]
