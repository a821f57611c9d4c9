"""The served OpenAPI document describes every endpoint fully: a summary and a description, its
error responses as problem+json, and the headers its answers carry (RateLimit-*, Retry-After,
ETag). A new route without them fails here."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from conftest import TenantContext

from cli.commands.openapi import openapi_document

PROBLEM = "application/problem+json"
RATE_HEADERS = {"RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"}


@pytest.fixture(scope="module")
def served(api_url: str) -> dict[str, Any]:
    """The document the running api serves."""
    answer = httpx.get(f"{api_url}/api/v1/openapi.json", timeout=30)
    answer.raise_for_status()
    return answer.json()


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    ]


def _headers(document: dict[str, Any], response: dict[str, Any]) -> set[str]:
    return set(response.get("headers", {}))


def test_every_route_of_the_api_is_in_the_document(served: dict[str, Any]) -> None:
    from api.app import create_app
    from store.settings import Settings

    app = create_app(Settings(environment="development"), name="recomengine_openapi_check")
    app.router.finalize()
    documented = {(m, p) for m, p, _ in _operations(served)}
    missing = []
    for route in app.router.routes:
        path = "/" + route.path
        for name in (param.name for param in route.params.values()):
            path = path.replace(f"<{name}:str>", "{" + name + "}")
            path = path.replace(f"<{name}>", "{" + name + "}")
        for method in route.methods - {"HEAD", "OPTIONS"}:
            if (method, path) not in documented:
                missing.append(f"{method} {path}")
    assert not missing, f"routes missing from the OpenAPI document: {missing}"


def test_the_served_document_is_the_one_the_cli_prints(served: dict[str, Any]) -> None:
    printed = openapi_document()
    assert printed["paths"] == served["paths"]


def test_every_operation_has_a_summary_and_a_description(served: dict[str, Any]) -> None:
    lacking = [
        f"{m} {p}"
        for m, p, op in _operations(served)
        if len(op.get("summary", "").strip()) < 8 or len(op.get("description", "").strip()) < 8
    ]
    assert not lacking, f"operations without a summary or a description: {lacking}"


def test_every_response_is_described_and_every_error_is_a_problem(
    served: dict[str, Any],
) -> None:
    faults = []
    for method, path, op in _operations(served):
        responses = op["responses"]
        if PROBLEM not in responses.get("default", {}).get("content", {}):
            faults.append(f"{method} {path}: no problem+json default response")
        for status, response in responses.items():
            if len(response.get("description", "").strip()) < 2:
                faults.append(f"{method} {path} {status}: no description")
            # /ready answers its own report with 503; every other error is a problem.
            own_answer = (path, status) == ("/ready", "503")
            if status[0] in "45" and not own_answer and PROBLEM not in response.get("content", {}):
                faults.append(f"{method} {path} {status}: not problem+json")
    assert not faults, faults


def test_each_operation_lists_the_errors_its_credentials_body_and_path_imply(
    served: dict[str, Any],
) -> None:
    faults = []
    for method, path, op in _operations(served):
        statuses = set(op["responses"])
        schemes = {name for entry in op.get("security", []) for name in entry}
        wanted = set()
        if schemes:
            wanted.add("401")
        if "apiKey" in schemes:
            wanted |= {"403", "429"}
        if "requestBody" in op:
            wanted |= {"400", "422"}
        if any(p["in"] == "path" for p in op["parameters"]):
            wanted.add("404")
        if any(p["in"] == "query" for p in op["parameters"]):
            wanted.add("422")
        if wanted - statuses:
            faults.append(f"{method} {path}: lacks {sorted(wanted - statuses)}")
    assert not faults, faults


def test_rate_limited_and_cacheable_answers_document_their_headers(
    served: dict[str, Any],
) -> None:
    faults = []
    for method, path, op in _operations(served):
        schemes = {name for entry in op.get("security", []) for name in entry}
        for status, response in op["responses"].items():
            headers = _headers(served, response)
            if status == "429" and not {"Retry-After", *RATE_HEADERS} <= headers:
                faults.append(f"{method} {path} 429: lacks Retry-After or RateLimit-*")
            if "apiKey" in schemes and status.startswith("2") and not RATE_HEADERS <= headers:
                faults.append(f"{method} {path} {status}: lacks RateLimit-*")
            if "304" in op["responses"] and status in ("200", "304") and "ETag" not in headers:
                faults.append(f"{method} {path} {status}: lacks ETag")
    for name in ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "Retry-After"):
        assert served["components"]["headers"][name]["description"]
    assert not faults, faults


def test_the_documented_headers_are_the_ones_the_api_sends(
    served: dict[str, Any], api_url: str, tenant: TenantContext
) -> None:
    widget = httpx.post(
        f"{api_url}/api/v1/tenants/{tenant.tenant_id}/widgets",
        headers=tenant.admin_headers,
        json={"placementId": "docs-home"},
        timeout=30,
    )
    assert widget.status_code == 201, widget.text
    answer = httpx.get(
        f"{api_url}/api/v1/widgets/docs-home", headers=tenant.read_headers, timeout=30
    )
    operation = served["paths"]["/api/v1/widgets/{placement_id}"]["get"]
    documented = _headers(served, operation["responses"]["200"])
    assert answer.status_code == 200
    assert documented == {"ETag", *RATE_HEADERS}
    assert all(name in answer.headers for name in documented)
    again = httpx.get(
        f"{api_url}/api/v1/widgets/docs-home",
        headers={**tenant.read_headers, "If-None-Match": answer.headers["etag"]},
        timeout=30,
    )
    assert again.status_code == 304 and again.headers["etag"] == answer.headers["etag"]
    missing = httpx.get(
        f"{api_url}/api/v1/catalog/no-such-product", headers=tenant.read_headers, timeout=30
    )
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith(PROBLEM)
