"""The dashboard's API types are generated from the document the api serves, and a check fails
as soon as the committed types drift from it."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import httpx
from conftest import ROOT

GENERATOR = ROOT / "dashboard" / "scripts" / "gen-api.mjs"


def _check(document: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["node", str(GENERATOR), "-", "--check"],
        input=json.dumps(document),
        capture_output=True,
        text=True,
        cwd=ROOT / "dashboard",
        timeout=120,
    )


def test_the_openapi_command_prints_the_document_the_api_serves(api_url: str) -> None:
    served = httpx.get(f"{api_url}/api/v1/openapi.json", timeout=30).json()
    printed = subprocess.run(
        [sys.executable, "-m", "cli.main", "openapi"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=True,
    )
    assert json.loads(printed.stdout) == served


def test_the_committed_dashboard_types_match_the_served_document(api_url: str) -> None:
    served = httpx.get(f"{api_url}/api/v1/openapi.json", timeout=30).json()
    outcome = _check(served)
    assert outcome.returncode == 0, (
        "dashboard/src/api/schema.d.ts is stale; regenerate it with "
        "`.venv/bin/recomengine openapi | node dashboard/scripts/gen-api.mjs -`\n" + outcome.stderr
    )


def test_the_type_check_fails_when_the_document_gains_an_endpoint(api_url: str) -> None:
    served = httpx.get(f"{api_url}/api/v1/openapi.json", timeout=30).json()
    drifted = dict(served)
    drifted["paths"] = {
        **served["paths"],
        "/api/v1/new-thing": {"get": {"responses": {"200": {"description": "ok"}}}},
    }
    outcome = _check(drifted)
    assert outcome.returncode == 1
    assert "differs" in outcome.stderr
