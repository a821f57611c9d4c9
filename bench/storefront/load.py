"""wrk driving the storefront's interleaved request list (bench/storefront/sessions.py).

One wrk thread walks the list in order across its connections, so the list's interleaving is
the order the server sees. Events get a fresh eventId each time the list comes round (run
nonce, thread, counter), so that a repeated list is new traffic, not duplicates. Responses are
counted by kind and by how they were answered (`X-Recommendation-Cache` hit / miss / off,
or `projection` when `X-Recommendation-Projection` says hit), and `done`
prints them beside the latency summary.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from bench.wrk import parse_result

SCRIPT = """
local lines, n, position = {}, 0, 0
local threads, counter = {}, 0
local read_key, write_key, nonce = '', '', ''
local serial, tid = 0, 0
gets, posts, bad_gets, bad_posts = 0, 0, 0, 0
answered = {}

function setup(thread)
  counter = counter + 1
  thread:set('tid', counter)
  table.insert(threads, thread)
end

function init(args)
  for line in io.lines(args[1]) do
    n = n + 1
    lines[n] = line
  end
  read_key, write_key, nonce = args[2], args[3], args[4]
  position = (tid * 7919) % n
end

function request()
  position = position % n + 1
  local line = lines[position]
  local kind, text = string.sub(line, 1, 1), string.sub(line, 3)
  if kind == 'G' then
    return wrk.format('GET', text, {['X-API-Key'] = read_key})
  end
  serial = serial + 1
  local body = text .. ',"eventId":"' .. nonce .. '-' .. tid .. '-' .. serial .. '"}'
  return wrk.format('POST', '/api/v1/events',
    {['X-API-Key'] = write_key, ['Content-Type'] = 'application/json'}, body)
end

function response(status, headers, body)
  local cache = headers['X-Recommendation-Cache'] or headers['x-recommendation-cache']
  local projected = headers['X-Recommendation-Projection'] or headers['x-recommendation-projection']
  if projected == 'hit' then cache = 'projection' end
  if cache then
    gets = gets + 1
    answered[cache] = (answered[cache] or 0) + 1
    if status ~= 200 then bad_gets = bad_gets + 1 end
  elseif status == 202 or status == 200 then
    posts = posts + 1
  else
    posts = posts + 1
    bad_posts = bad_posts + 1
  end
end

local function merged()
  local total = {gets = 0, posts = 0, badGets = 0, badPosts = 0, answered = {}}
  for _, thread in ipairs(threads) do
    total.gets = total.gets + thread:get('gets')
    total.posts = total.posts + thread:get('posts')
    total.badGets = total.badGets + thread:get('bad_gets')
    total.badPosts = total.badPosts + thread:get('bad_posts')
    for name, count in pairs(thread:get('answered')) do
      total.answered[name] = (total.answered[name] or 0) + count
    end
  end
  local parts = {}
  for name, count in pairs(total.answered) do
    parts[#parts + 1] = string.format('"%s":%d', name, count)
  end
  return string.format('{"gets":%d,"posts":%d,"badGets":%d,"badPosts":%d,"answered":{%s}}',
    total.gets, total.posts, total.badGets, total.badPosts, table.concat(parts, ','))
end

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
  io.write('\\nCOUNTS ' .. merged() .. '\\n')
end
"""


def run_storefront_wrk(
    *,
    port: int,
    lines_file: Path,
    read_key: str,
    write_key: str,
    nonce: str,
    connections: int,
    duration: float,
    workdir: Path,
) -> dict[str, Any]:
    """Drive the api with the list for `duration` s: latency summary plus `counts` by kind."""
    script_file = workdir / "storefront.lua"
    script_file.write_text(SCRIPT)
    command = ["wrk", "-t", "1", "-c", str(connections), "-d", f"{int(duration)}s"]
    command += ["--timeout", "5s", "-s", str(script_file), f"http://127.0.0.1:{port}"]
    command += ["--", str(lines_file), read_key, write_key, nonce]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    result = parse_result(done.stdout)
    for line in done.stdout.splitlines():
        if line.startswith("COUNTS "):
            result["counts"] = json.loads(line[len("COUNTS ") :])
    return result
