"""Load generators: wrk with a Lua script that cycles through a list of request paths, or (when
wrk is missing) an asyncio keep-alive generator run in its own process.

    python -m bench.read_path.load --port P --paths FILE [--key K] --connections 50 --duration 20

Both print one JSON line: requests, seconds, non-2xx answers, socket errors and latency
percentiles in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.wrk import parse_result

# Each wrk thread starts at a different place of the list and walks it in order, so the mix
# sent is the list's mix.
PATHS_SCRIPT = """
local paths, n, position = {}, 0, 0
local threads, counter = {}, 0

function setup(thread)
  counter = counter + 1
  thread:set("offset", counter * 7919)
  table.insert(threads, thread)
end

function init(args)
  for line in io.lines(args[1]) do
    n = n + 1
    paths[n] = line
  end
  position = offset % n
end

function request()
  position = position % n + 1
  return wrk.format("GET", paths[position])
end
"""


def run_asyncio_generator(
    *,
    port: int,
    paths_file: Path,
    headers: dict[str, str],
    connections: int,
    duration: float,
) -> dict[str, Any]:
    """The same measurement with this module's asyncio generator, in a separate process."""
    command = [sys.executable, "-m", "bench.read_path.load", "--port", str(port)]
    command += ["--paths", str(paths_file), "--connections", str(connections)]
    command += ["--duration", str(duration), "--headers", json.dumps(headers)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return parse_result(done.stdout)


def _percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def _generate(
    port: int, paths: list[str], headers: dict[str, str], connections: int, duration: float
) -> dict[str, Any]:
    latencies: list[float] = []
    non2xx = 0
    errors = 0
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    deadline = time.perf_counter() + duration

    async def connection(offset: int) -> None:
        nonlocal non2xx, errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        position = offset
        while time.perf_counter() < deadline:
            position = (position + 1) % len(paths)
            head = f"GET {paths[position]} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n"
            started = time.perf_counter()
            try:
                writer.write(head.encode())
                raw_head = await reader.readuntil(b"\r\n\r\n")
                lines = raw_head.decode("latin-1").split("\r\n")
                length = next(
                    int(line.split(":", 1)[1])
                    for line in lines[1:]
                    if line.lower().startswith("content-length:")
                )
                await reader.readexactly(length)
            except (OSError, asyncio.IncompleteReadError, StopIteration):
                errors += 1
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                continue
            latencies.append((time.perf_counter() - started) * 1000)
            if not lines[0].split(" ", 2)[1].startswith("2"):
                non2xx += 1
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection(i * 7919) for i in range(connections)))
    seconds = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "requests": len(ordered),
        "seconds": seconds,
        "non2xx": non2xx,
        "socketErrors": errors,
        "p50": _percentile(ordered, 0.50),
        "p95": _percentile(ordered, 0.95),
        "p99": _percentile(ordered, 0.99),
        "max": ordered[-1] if ordered else float("nan"),
        "mean": sum(ordered) / len(ordered) if ordered else float("nan"),
    }


def main() -> None:
    """Run the asyncio generator and print its RESULT line."""
    parser = argparse.ArgumentParser(prog="python -m bench.read_path.load")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--paths", type=Path, required=True)
    parser.add_argument("--headers", default="{}", help="JSON object of extra headers")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--duration", type=float, default=20.0)
    args = parser.parse_args()
    paths = args.paths.read_text().split()
    result = asyncio.run(
        _generate(args.port, paths, json.loads(args.headers), args.connections, args.duration)
    )
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
