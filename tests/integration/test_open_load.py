"""Open-model load, small: both paths at half their measured maximum, on a fixed schedule,
report their latency, errors, queue lag and memory, and no request gets a 500. (A saturated api
may shed reads with 503 and Retry-After; the figures count those as errors.)"""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import ROOT


def test_reads_and_writes_at_half_their_maximum_report_their_figures_and_never_a_500() -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.load",
            *("--minutes", "0.1", "--max-seconds", "3", "--shares", "0.5"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=420,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    maxima = re.findall(r"^(read|write): maximum ([\d,]+)/s", run.stdout, flags=re.MULTILINE)
    assert [name for name, _ in maxima] == ["read", "write"], run.stdout
    assert all(int(rate.replace(",", "")) > 0 for _, rate in maxima)
    phases = re.findall(r"p50 [\d.]+ ms, p95 [\d.]+ ms, p99 [\d.]+ ms", run.stdout)
    assert len(phases) == 2 and run.stdout.count("resident MB before -> after") == 2, run.stdout
    assert not re.search(r"failed answers by status[^:]*: .*\b500\b", run.stdout), run.stdout
