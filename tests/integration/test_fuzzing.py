"""Schemathesis over the served OpenAPI document, small: with real credentials in a throwaway
tenant, no generated request (valid or not) gets a server error."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import ROOT


def test_no_request_generated_from_the_openapi_document_gets_a_server_error() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench.fuzz", "--examples", "3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    generated = re.search(r"(\d+) generated, (\d+) passed", run.stdout)
    assert generated, run.stdout[-3000:]
    # Thousands of requests, every one answered without a 5xx.
    assert int(generated[1]) >= 1000 and generated[1] == generated[2], run.stdout[-3000:]
