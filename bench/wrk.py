"""wrk as the benchmarks' load generator: a Lua script makes the requests, and a shared `done`
prints one JSON summary line.

wrk is written in C: on a two-core machine shared with the system under test it spends a
fraction of the CPU per request of any Python client, so the figures measure the server.
Install it with `apt-get install -y wrk`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

# `done` runs once, after every thread, with the merged latency histogram (microseconds).
DONE = """
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\nRESULT {"requests":%d,"seconds":%.3f,"non2xx":%d,"socketErrors":%d,' ..
    '"p50":%.3f,"p90":%.3f,"p95":%.3f,"p99":%.3f,"p999":%.3f,"max":%.3f,"mean":%.3f}\\n',
    summary.requests, summary.duration / 1e6, e.status,
    e.connect + e.read + e.write + e.timeout,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(95) / 1000, latency:percentile(99) / 1000,
    latency:percentile(99.9) / 1000, latency.max / 1000, latency.mean / 1000))
end
"""


def wrk_available() -> bool:
    """Whether the wrk binary is on the PATH."""
    return shutil.which("wrk") is not None


def run_wrk(
    *,
    url: str,
    script: str,
    script_args: list[str],
    headers: dict[str, str],
    connections: int,
    duration: float,
    threads: int,
    workdir: Path,
) -> dict[str, Any]:
    """Drive `url` with wrk for `duration` s, requests made by the Lua `script` (which gets
    `script_args`); the summary: requests, seconds, non2xx, socketErrors and latency
    percentiles p50 ... p999, max and mean in milliseconds."""
    script_file = workdir / f"wrk-{abs(hash(script))}.lua"
    script_file.write_text(script + DONE)
    command = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{int(duration)}s"]
    command += ["--timeout", "5s", "-s", str(script_file)]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    command += [url, "--", *script_args]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return parse_result(done.stdout)


def parse_result(stdout: str) -> dict[str, Any]:
    """The summary a generator printed as its `RESULT {json}` line."""
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line[len("RESULT ") :]))
    raise RuntimeError(f"the load generator printed no result:\n{stdout[-2000:]}")
