"""Request metrics of the api, who may read them, and logs that stay quiet and clean."""

from __future__ import annotations

import re
import time
from types import SimpleNamespace

import httpx
import pytest
from conftest import Process, TenantContext

from api.metrics import check_metrics_access
from domain.errors import Forbidden


def _sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the Prometheus text `text` (labels in any order)."""
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} {labels} in the metrics")


def test_the_api_counts_requests_and_their_latency_per_route_and_status(
    client: httpx.Client, tenant: TenantContext
) -> None:
    for _ in range(3):
        assert client.get("/api/v1/catalog/sku-x", headers=tenant.read_headers).status_code == 404
    assert client.get("/api/v1/catalog", headers=tenant.read_headers).status_code == 200
    text = client.get("/metrics").text
    route = "/api/v1/catalog/<product_id:str>"
    assert (
        _sample(text, "recomengine_http_requests_total", route=route, method="GET", status="404")
        >= 3
    )
    assert (
        _sample(
            text,
            "recomengine_http_request_seconds_bucket",
            route=route,
            method="GET",
            status="404",
            le="+Inf",
        )
        >= 3
    )
    assert (
        _sample(text, "recomengine_http_requests_total", route="/api/v1/catalog", status="200") >= 1
    )
    assert 'route="/api/v1/catalog/sku-x"' not in text  # patterns, never raw paths
    assert "recomengine_queue_depth" in text


def test_metrics_relayed_by_a_proxy_need_the_token(client: httpx.Client) -> None:
    refused = client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.5"})
    assert refused.status_code == 403


def _request(ip: str, **headers: str) -> SimpleNamespace:
    return SimpleNamespace(ip=ip, headers={k.lower(): v for k, v in headers.items()})


def test_metrics_access_is_loopback_or_the_bearer_token() -> None:
    check_metrics_access(_request("127.0.0.1"), token=None)  # type: ignore[arg-type]
    with pytest.raises(Forbidden):
        check_metrics_access(_request("10.1.2.3"), token=None)  # type: ignore[arg-type]
    with pytest.raises(Forbidden):
        check_metrics_access(
            _request("10.1.2.3", Authorization="Bearer wrong"),  # type: ignore[arg-type]
            token="the-metrics-token",
        )
    check_metrics_access(
        _request("10.1.2.3", Authorization="Bearer the-metrics-token"),  # type: ignore[arg-type]
        token="the-metrics-token",
    )


def test_a_csv_export_logs_no_error(
    client: httpx.Client, tenant: TenantContext, api_process: Process
) -> None:
    before = len(api_process.log())
    exported = client.get(
        f"/api/v1/tenants/{tenant.tenant_id}/analytics/export", headers=tenant.admin_headers
    )
    assert exported.status_code == 200
    assert exported.text.startswith("day,")
    assert exported.headers["cache-control"] == "no-store"
    time.sleep(0.3)
    assert '"level": "ERROR"' not in api_process.log()[before:]
