"""The projections stored events feed in Redis (counters, histories, trending, attributed
revenue), applied at most once per event by one guarded script."""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson
from redis.asyncio import Redis

from domain.event_message import MessageEvent
from domain.events import DERIVED_ID_PREFIX, dedupe_digest
from store import keys
from store.counters import (
    COUNTER_TTL_SECONDS,
    Op,
    attribution_counter_ops,
    day_of,
    event_counter_ops,
)
from store.history import event_history_ops, ttl_of
from store.redis import run_script
from store.usage import METER_TTL_SECONDS, event_meter_ops

SEEN_TTL_SECONDS = 8 * 24 * 3600
CLIENT_ID_TTL_SECONDS = 2 * 24 * 3600

# Applies each event's operations only if its guard member was new to its guard set, in one
# atomic script: a crash can never leave an event half applied, and a redelivered event whose
# guard is already set changes nothing. The operations of the new events are merged before
# they run, since Redis spends its time per command: integer increments of one field are summed
# into one HINCRBY/ZINCRBY, set and HyperLogLog members go in one SADD/PFADD per key, history
# entries in one ZADD GT per key (highest time per member) followed by one trim. Float
# increments (revenue) stay one HINCRBYFLOAT each, so that the stored sums are exactly those of
# applying them one by one.
# ARGV[1] is JSON (one argument: packing thousands costs more than the script) of flat lists,
# every index 0-based: "p" the prefix of every key, "k" each key without it and "kt" its TTL
# in seconds; "go" the command of each group of targets and "gk" its key (groups in order,
# trims last); "f" the field or member of each distinct target and "tg" its group; "eg",
# "em" and "en" the guard key, guard member and operation count of each event, in order;
# "t" the target of each operation of each event, in order, and "a" its amount, as text. A
# guard member given as a number is the offset of its 16 bytes in ARGV[2] (binary digests do
# not fit JSON strings). Guards are tested with one SMISMEMBER and set with one SADD per guard
# key; an event repeated in the batch applies once. Flat lists of numbers and strings are what
# cjson decodes fastest, and what the worker builds fastest.
_APPLY_GUARDED = """
local b = cjson.decode(ARGV[1])
local blob = ARGV[2]
local k, prefix = {}, b.p
for i, suffix in ipairs(b.k) do k[i] = prefix .. suffix end
local fields, group_of, group_op, group_key = b.f, b.tg, b.go, b.gk
local members = {}
for g = 1, #group_op do members[g] = {} end
for ti, g in ipairs(group_of) do
  local list = members[g + 1]
  list[#list + 1] = ti
end
local guard_members, by_guard = b.em, {}
for i, gk in ipairs(b.eg) do
  local member = guard_members[i]
  if type(member) == 'number' then
    member = string.sub(blob, member + 1, member + 16)
    guard_members[i] = member
  end
  local list = by_guard[gk + 1]
  if list == nil then list = {}; by_guard[gk + 1] = list end
  list[#list + 1] = i
end
local new, applied = {}, 0
for key, list in pairs(by_guard) do
  local args, fresh, added = {}, {}, {}
  for j, i in ipairs(list) do args[j] = guard_members[i] end
  -- unpack has a stack limit; a large import sends thousands of events
  for first = 1, #args, 1000 do
    local last = math.min(first + 999, #args)
    local found = redis.call('SMISMEMBER', k[key], unpack(args, first, last))
    for j = first, last do
      local member = args[j]
      if found[j - first + 1] == 0 and not fresh[member] then
        fresh[member] = true
        new[list[j]] = true
        applied = applied + 1
        added[#added + 1] = member
      end
    end
  end
  for first = 1, #added, 1000 do
    redis.call('SADD', k[key], unpack(added, first, math.min(first + 999, #added)))
  end
end
if applied == 0 then return 0 end
local acc, targets, amounts, position = {}, b.t, b.a, 0
for i, count in ipairs(b.en) do
  if new[i] then
    for j = position + 1, position + count do
      local ti, amount = targets[j] + 1, amounts[j]
      local g = group_of[ti] + 1
      local op = group_op[g]
      if op == 'hincrby' or op == 'zincrby' then
        acc[ti] = (acc[ti] or 0) + tonumber(amount)
      elseif op == 'zaddgt' then
        local old = acc[ti]
        if old == nil or tonumber(amount) > tonumber(old) then acc[ti] = amount end
      elseif op == 'hincrbyfloat' then
        redis.call('HINCRBYFLOAT', k[group_key[g] + 1], fields[ti], amount)
      else
        acc[ti] = true
      end
    end
  end
  position = position + count
end
for g, op in ipairs(group_op) do
  local key, args = k[group_key[g] + 1], {}
  for _, ti in ipairs(members[g]) do
    local value, field = acc[ti], fields[ti]
    if value ~= nil then
      if op == 'hincrby' then redis.call('HINCRBY', key, field, value)
      elseif op == 'zincrby' then redis.call('ZINCRBY', key, value, field)
      elseif op == 'ztrim' then redis.call('ZREMRANGEBYRANK', key, 0, -(tonumber(field) + 1))
      elseif op == 'zaddgt' then
        args[#args + 1] = value
        args[#args + 1] = field
      else
        args[#args + 1] = field
      end
    end
  end
  for first = 1, #args, 1000 do
    local last = math.min(first + 999, #args)
    if op == 'zaddgt' then redis.call('ZADD', key, 'GT', unpack(args, first, last))
    elseif op == 'pfadd' then redis.call('PFADD', key, unpack(args, first, last))
    else redis.call('SADD', key, unpack(args, first, last))
    end
  end
end
for i, seconds in ipairs(b.kt) do redis.call('EXPIRE', k[i], seconds) end
return applied
"""


class GuardedEffects(NamedTuple):
    """Operations to apply once per guard (set key, member)."""

    guard_key: str
    guard_member: bytes | str
    ops: list[Op]


async def apply_guarded(redis: Redis, effects: Sequence[GuardedEffects]) -> int:
    """Apply every guarded batch of operations whose guard is new; returns how many applied."""
    if not effects:
        return 0
    payload, blob = _guarded_payload(effects)
    return int(await run_script(redis, _APPLY_GUARDED, [], payload, blob))


def _guarded_payload(effects: Sequence[GuardedEffects]) -> tuple[bytes, bytes]:
    """The two arguments of the guarded script for `effects` (see _APPLY_GUARDED)."""
    # This runs for every operation of every event a worker stores: every step below is one
    # comprehension over the operations, the distinct targets, the events or the keys.
    targets: dict[tuple[str, str, str], int] = {}
    number = targets.setdefault
    target_of = [
        number((op, key, a), len(targets)) for _, _, ops in effects for op, key, a, _ in ops
    ]
    amounts = [b for _, _, ops in effects for _, _, _, b in ops]
    group_keys = [(op, key) for op, key, _ in targets]
    distinct = dict.fromkeys(group_keys)
    # A history is trimmed only after every entry of the batch was added to it.
    ordered = [g for g in distinct if g[0] != "ztrim"] + [g for g in distinct if g[0] == "ztrim"]
    group_index = {g: i for i, g in enumerate(ordered)}
    guard_keys = [guard_key for guard_key, _, _ in effects]
    names = list(dict.fromkeys([key for _, key in ordered] + guard_keys))
    key_index = {name: i for i, name in enumerate(names)}
    guards = set(guard_keys)
    members = [member for _, member, _ in effects]
    binary = [member for member in members if type(member) is not str]
    if any(len(member) != 16 for member in binary):
        raise ValueError("binary guard members are 16-byte digests")
    offsets = itertools.count(0, 16)
    # Every key shares the tenant prefix: sent once, not once per key.
    prefix = os.path.commonprefix(names)  # noqa: RUF071 (a string prefix, not a path)
    cut = len(prefix)
    payload = {
        "p": prefix,
        "k": [name[cut:] for name in names],
        "kt": [SEEN_TTL_SECONDS if name in guards else _ttl(name) for name in names],
        "go": [op for op, _ in ordered],
        "gk": [key_index[key] for _, key in ordered],
        "f": [field for _, _, field in targets],
        "tg": [group_index[g] for g in group_keys],
        "eg": [key_index[guard_key] for guard_key in guard_keys],
        "em": [member if type(member) is str else next(offsets) for member in members],
        "en": [len(ops) for _, _, ops in effects],
        "t": target_of,
        "a": amounts,
    }
    return orjson.dumps(payload), b"".join(binary)  # type: ignore[arg-type]


def _ttl(key: str) -> int:
    if ":counters:" in key or ":users:" in key:
        return COUNTER_TTL_SECONDS
    if ":usage:" in key:
        return METER_TTL_SECONDS
    if ":events:ids:" in key:
        return CLIENT_ID_TTL_SECONDS
    return ttl_of(key)


def derived_digests(events: Sequence[MessageEvent]) -> dict[str, str]:
    """The dedupe digest of each message-form event that came without a client eventId: its id
    is made from that digest (domain.events.derived_event_id), so it need not be hashed again."""
    cut = len(DERIVED_ID_PREFIX)
    return {
        e["id"]: e["id"][cut:]
        for e in events
        if not e.get("client") and e["id"].startswith(DERIVED_ID_PREFIX)
    }


def event_effects(
    *,
    tenant_id: str,
    rows: Sequence[Mapping[str, Any]],
    client_ids: set[str] | None = None,
    digests: Mapping[str, str] | None = None,
) -> list[GuardedEffects]:
    """Counter, history, trending and usage-meter effects of stored events, guarded by their
    dedupe digest (taken from `digests` by event id when known, else computed from the row).

    The guard makes the usage meter count each stored row once, whatever the redeliveries, on
    the day it was received: it equals a count of the rows. Test keys' events are metered apart
    and left out of the analytics counters and the trending lists."""
    today = datetime.now(UTC).strftime("%Y%m%d")
    seen_keys: dict[str, str] = {}
    known = digests or {}
    found = []
    for row in rows:
        occurred_at = row["occurred_at"]
        digest = known.get(row["event_id"]) or dedupe_digest(
            tenant_id=tenant_id,
            user_id=row["user_id"],
            event_type=row["event_type"],
            product_id=row["product_id"],
            occurred_at=occurred_at,
        )
        test = bool(row.get("test"))
        ops = [] if test else event_counter_ops(tenant_id=tenant_id, row=row)
        history = event_history_ops(tenant_id=tenant_id, row=row)
        # A test event shapes its own user's history, never the tenant's trending lists.
        ops.extend([op for op in history if ":trending" not in op[1]] if test else history)
        if row.get("received_at") is not None:
            ops.extend(
                event_meter_ops(tenant_id=tenant_id, test=test, received_at=row["received_at"])
            )
        if client_ids and row["event_id"] in client_ids:
            ops.append(("sadd", keys.event_client_ids(tenant_id, today), row["event_id"], ""))
        day = day_of(occurred_at)
        guard_key = seen_keys.get(day)
        if guard_key is None:
            guard_key = seen_keys[day] = keys.events_seen(tenant_id, day)
        found.append(GuardedEffects(guard_key, bytes.fromhex(digest), ops))
    return found


def attribution_effects(
    *, tenant_id: str, attributions: Sequence[dict[str, Any]]
) -> list[GuardedEffects]:
    """Attributed-revenue counter effects, guarded by the purchase event id."""
    return [
        GuardedEffects(
            guard_key=keys.attributions_applied(tenant_id, day_of(a["purchased_at"])),
            guard_member=a["purchase_event_id"],
            ops=attribution_counter_ops(tenant_id=tenant_id, attribution=a),
        )
        for a in attributions
    ]
