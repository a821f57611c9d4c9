"""The ingest gate: one named Redis script checks a group of events before they are queued
(catalog, fast dedupe by digest and client eventId) and, given a queue frame, queues the fresh
ones in the same call. It also rides on the rate limiter's call (ADMITTED_SCREEN)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from redis.asyncio import Redis

from domain.events import Event
from store import keys
from store.counters import day_of
from store.event_queue import LANE_PUSH, QueueFrame
from store.redis import run_script

# Stands for a key a script does not use this time.
_NO_KEY = "reco:none"


@dataclass(frozen=True)
class GateResult:
    """What Redis knows of events about to be queued, one entry per checked event."""

    known_product: list[bool]
    seen: list[bool]
    seen_client_id: list[bool]  # False for an event without a client eventId

    @classmethod
    def decode(cls, answer: bytes) -> GateResult:
        """The script's answer (one digit per checked event: 1 known product + 2 seen + 4
        client id seen) as a GateResult; decoded here only."""
        found = [c - 48 for c in answer]  # digits
        return cls(
            known_product=[bool(f & 1) for f in found],
            seen=[bool(f & 2) for f in found],
            seen_client_id=[bool(f & 4) for f in found],
        )


# The fast dedupe and catalog check of a group of events in one command and one short reply (a
# pipeline of one HEXISTS/SISMEMBER per event costs the api more in packing and parsing replies
# than everything else it does), and, given a queue frame, the enqueue of the fresh events in
# the same call.
# `screen(k, a, count)` reads its keys and arguments from the tables `k` and `a` (so that it
# can follow another script's own): k = the catalog hash, the client-id sets (today,
# yesterday), the broker's message hash, the tenant's sub-queue of the lane, the lane's active
# set and rotation (store.event_queue; dummies when not queueing), then the seen sets.
# a[1]: one byte per event, the `k` index of its seen set; a[2]: product ids joined by NUL (ids
# never hold NUL: validation refuses it); a[3]: the 16-byte digests concatenated; a[4]: client
# ids joined by NUL ('' for none); a[5..9]: broker db, message id, head and tail of the
# message, tenant ('' when not queueing); a[10..]: per event its message-form JSON, ending in
# its flags list ('' to leave it out). Only the first `count` events are screened. Returns one
# digit per screened event: 1 known product + 2 seen + 4 client id seen.
_SCREEN = (
    LANE_PUSH
    + """
local function screen(k, a, count)
  local where = a[1]
  local n = #where
  local function split(joined)
    local parts, start = {}, 1
    for i = 1, n - 1 do
      local stop = string.find(joined, '\\0', start, true)
      parts[i] = string.sub(joined, start, stop - 1)
      start = stop + 1
    end
    parts[n] = string.sub(joined, start)
    return parts
  end
  local products, digests, clients = split(a[2]), a[3], split(a[4])
  local queueing = a[7] ~= ''
  local answer, fresh = {}, {}
  for i = 1, count do
    local known = redis.call('HEXISTS', k[1], products[i])
    local member = string.sub(digests, 16 * i - 15, 16 * i)
    local seen = redis.call('SISMEMBER', k[string.byte(where, i)], member)
    local by_client = 0
    if clients[i] ~= '' then
      by_client = redis.call('SISMEMBER', k[2], clients[i])
      if by_client == 0 then by_client = redis.call('SISMEMBER', k[3], clients[i]) end
    end
    answer[i] = known + 2 * seen + 4 * by_client
    local body = a[9 + i]
    if queueing and seen + by_client == 0 and body ~= '' then
      if known == 0 then
        -- The body ends with its flags list: add the warning inside it.
        local open = string.sub(body, 1, -3)
        local comma = string.sub(open, -1) == '[' and '' or ','
        body = open .. comma .. '"unknown_product"]}'
      end
      fresh[#fresh + 1] = body
    end
  end
  if #fresh > 0 then
    -- Only for this script: the caller's connection stays on the projections' database.
    redis.call('SELECT', a[5])
    lane_push(k[4], k[5], k[6], k[7], a[9], a[6], a[7] .. table.concat(fresh, ',') .. a[8], #fresh)
  end
  return table.concat(answer)
end
"""
)
_PRECHECK = _SCREEN + "return screen(KEYS, ARGV, #ARGV[1])"
# A follow-up of the rate limiter's script (store.ratelimit): the admitted first `allowed`
# events of a group are screened and queued in the call that counts them, unless the tenant's
# auth epoch is no longer the one (its first argument) under which the api cached the key:
# then nothing is screened, and the api reloads the key before it queues anything.
ADMITTED_SCREEN = (
    _SCREEN
    + "if epoch == ARGV[ab + 1] then"
    + " extra = screen({unpack(KEYS, kb + 1)}, {unpack(ARGV, ab + 2)}, allowed) end"
)


def screen_arguments(
    *,
    tenant_id: str,
    events: Sequence[Event],
    frame: QueueFrame | None = None,
    bodies: Sequence[bytes] = (),
) -> tuple[list[str], list[Any]]:
    """The keys and arguments of `screen` for `events` (see precheck)."""
    now = datetime.now(UTC)
    script_keys = [
        keys.catalog_cards(tenant_id),
        keys.event_client_ids(tenant_id, day_of(now)),
        keys.event_client_ids(tenant_id, day_of(now - timedelta(days=1))),
        frame.messages_key if frame else _NO_KEY,
        frame.sub_queue_key if frame else _NO_KEY,
        frame.active_key if frame else _NO_KEY,
        frame.rotation_key if frame else _NO_KEY,
    ]
    slot: dict[str, int] = {}
    where = bytearray()
    for event in events:
        day = day_of(event.occurred_at)
        if day not in slot:
            script_keys.append(keys.events_seen(tenant_id, day))
            slot[day] = len(script_keys)  # Lua indexes from 1
        where.append(slot[day])
    queue_args: list[Any] = (
        [frame.db, frame.message_id, frame.head, frame.tail, frame.tenant_id, *bodies]
        if frame
        else ["", "", "", "", ""]
    )
    script_args = [
        bytes(where),
        "\0".join(e.product_id for e in events),
        b"".join(bytes.fromhex(e.digest) for e in events),
        "\0".join(e.event_id if e.client_event_id else "" for e in events),
        *queue_args,
    ]
    return script_keys, script_args


async def precheck(
    redis: Redis,
    *,
    tenant_id: str,
    events: Sequence[Event],
    frame: QueueFrame | None = None,
    bodies: Sequence[bytes] = (),
) -> GateResult:
    """In one round trip: whether each event's product is in the catalog projection, and
    whether the event (digest) and its client eventId were already ingested (the fast dedupe).

    With a `frame`, the same call queues as one message the `bodies` (each event's encoded
    message form, b"" to leave it out) of the events found neither seen nor by client id,
    adding the `unknown_product` flag to those whose product is unknown.
    """
    script_keys, script_args = screen_arguments(
        tenant_id=tenant_id, events=events, frame=frame, bodies=bodies
    )
    return GateResult.decode(await run_script(redis, _PRECHECK, script_keys, *script_args))
