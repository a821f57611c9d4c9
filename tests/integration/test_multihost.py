"""More than one machine, small: data, api and two worker hosts in network namespaces, load
through them, one worker host cut off mid-transaction and brought back; the other takes its
messages after the heartbeat timeout, and nothing is lost, doubled or miscounted."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import pytest
from conftest import ROOT

from bench.multihost.network import unavailable_reason

REASON = unavailable_reason()


@pytest.mark.skipif(REASON is not None, reason=f"no network namespaces here: {REASON}")
def test_a_worker_host_cut_off_loses_nothing_and_the_other_host_takes_its_messages() -> None:
    command = [sys.executable, "-m", "bench.multihost", "--events", "4000", "--rate", "150"]
    process = subprocess.Popen(
        [*command, "--drain-limit", "90"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        # SIGTERM: the bench tears its namespaces, servers and processes down on the way out.
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
        pytest.fail(f"the bench did not finish in 300 s:\n{stdout}\n{stderr[-3000:]}")
    output = stdout + stderr[-3000:]
    figures = dict(re.findall(r"^  ([a-z -]+): (\d+)$", stdout, flags=re.MULTILINE))
    assert set(figures) == {
        "lost",
        "duplicated",
        "unacknowledged stored",
        "projections mismatched",
        "experiment counts mismatched",
        "dead letters",
    }, output
    assert all(value == "0" for value in figures.values()), output
    taken = re.search(
        r"worker-b took over worker-a's (\d+) messages \((\d+) events\) ([\d.]+) s after the cut, "
        r"processing ([\d,]+) messages meanwhile",
        stdout,
    )
    assert taken is not None, output
    messages, events, seconds, meanwhile = taken.groups()
    assert int(messages) > 0 and int(events) > 0, output
    # Not before its heartbeat went stale (10 s), and well before the link came back.
    assert 10.0 <= float(seconds) < 60, output
    assert int(meanwhile.replace(",", "")) > 0, output
    assert re.search(r"worker-a held \d+ messages \(\d+ events\) and [1-9]\d* open", stdout)
    per_host = dict(re.findall(r"(worker-[ab]) processed (\d+) messages", stdout))
    assert int(per_host["worker-a"]) > 0 and int(per_host["worker-b"]) > 0, output
    assert "4,000 acknowledged" in stdout, output
    assert process.returncode == 0, output
