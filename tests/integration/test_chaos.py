"""The chaos suite, small: events posted while a worker is killed, a worker stopped past its
heartbeat, Redis killed, PostgreSQL and the api restarted; nothing lost, doubled or miscounted."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import ROOT


def test_nothing_acknowledged_is_lost_doubled_or_miscounted_through_five_faults() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench.chaos", "--events", "6000", "--drain-limit", "120"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=420,
        check=False,
    )
    figures = dict(re.findall(r"^  ([a-z -]+): (\d+)$", run.stdout, flags=re.MULTILINE))
    assert set(figures) == {
        "lost",
        "duplicated",
        "unacknowledged stored",
        "projections mismatched",
        "experiment counts mismatched",
        "dead letters not poison",
        "poison not dead-lettered",
    }, run.stdout + run.stderr[-3000:]
    assert all(value == "0" for value in figures.values()), run.stdout
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    # Every fault was met and recovered from.
    assert len(re.findall(r"recovery after .*: \d+\.\d s", run.stdout)) == 5, run.stdout
