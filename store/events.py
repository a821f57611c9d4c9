"""Events in PostgreSQL (dedupe on insert, attribution, viewer, partitions) and the projections
they feed in Redis, applied at most once per event."""

from __future__ import annotations

import base64
import itertools
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

import asyncpg
import orjson
from redis.asyncio import Redis

from domain.events import (
    ATTRIBUTION_WINDOW,
    DERIVED_ID_PREFIX,
    Click,
    Event,
    Purchase,
    attribute,
    dedupe_digest,
)
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

SEEN_TTL_SECONDS = 8 * 24 * 3600
CLIENT_ID_TTL_SECONDS = 2 * 24 * 3600
# Stands for a key a script does not use this time.
_NO_KEY = "reco:none"

_ROW_COLUMNS = """
    event_id, event_type, user_id, product_id, occurred_at, price::float8 AS price, placement_id,
    metadata->>'strategy' AS strategy, metadata->>'experimentId' AS experiment_id,
    metadata->>'variant' AS variant
"""

_INSERT_EVENTS = f"""
INSERT INTO events (tenant_id, event_id, event_type, user_id, product_id, session_id, metadata,
                    placement_id, recommendation_id, price, flags, occurred_at)
SELECT $1, e.id, e.type, e.user_id, e.product_id, e.session_id, e.meta::jsonb, e.placement,
       e.rec, e.price::numeric,
       CASE WHEN e.flags = '' THEN '{{}}'::text[] ELSE string_to_array(e.flags, ',') END, e.ts
FROM unnest($2::ingest_event[]) AS e
ON CONFLICT DO NOTHING
RETURNING {_ROW_COLUMNS}
"""

# One index probe (tenant, product, time) per distinct purchased pair, within that pair's own
# window: a single time range over every pair would scan all of the tenant's recent events.
_CANDIDATE_CLICKS = """
SELECT c.event_id, c.user_id, c.product_id, c.occurred_at
FROM unnest($2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[])
     AS p(user_id, product_id, earliest, latest)
CROSS JOIN LATERAL (
    SELECT e.event_id, e.user_id, e.product_id, e.occurred_at
    FROM events e
    WHERE e.tenant_id = $1 AND e.product_id = p.product_id
      AND e.occurred_at BETWEEN p.earliest AND p.latest
      AND e.user_id = p.user_id AND e.event_type = 'recommendation_clicked'
      AND NOT EXISTS (SELECT 1 FROM revenue_attributions r
                      WHERE r.tenant_id = $1 AND r.click_event_id = e.event_id)
) c
"""

_INSERT_ATTRIBUTIONS = """
INSERT INTO revenue_attributions (tenant_id, user_id, product_id, click_event_id,
    purchase_event_id, revenue, clicked_at, purchased_at, placement_id, strategy,
    recommendation_id, experiment_id, variant)
SELECT $1, p.user_id, p.product_id, c.event_id, p.event_id, coalesce(p.price, 0),
       c.occurred_at, p.occurred_at, c.placement_id, c.metadata->>'strategy',
       c.recommendation_id,
       CASE WHEN c.metadata->>'experimentId' ~* '^[0-9a-f-]{36}$'
            THEN (c.metadata->>'experimentId')::uuid END,
       c.metadata->>'variant'
FROM unnest($2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[]) AS x(purchase_id,
     click_id, purchased_at, clicked_at)
JOIN events p ON p.tenant_id = $1 AND p.event_id = x.purchase_id AND p.occurred_at = x.purchased_at
JOIN events c ON c.tenant_id = $1 AND c.event_id = x.click_id AND c.occurred_at = x.clicked_at
ON CONFLICT DO NOTHING
RETURNING user_id, purchase_event_id, click_event_id, revenue::float8 AS revenue, purchased_at,
          placement_id, strategy, experiment_id::text AS experiment_id, variant
"""

# Adds per-user experiment counts, only for experiments of the tenant that run or are paused
# (events queued while it ran may land after a pause); a completed experiment stays frozen.
_COUNT_EXPERIMENT_USERS = """
INSERT INTO experiment_user_metrics (tenant_id, experiment_id, variant, user_id, impressions,
                                     clicks, purchases, revenue)
SELECT e.tenant_id, e.id, x.variant, x.user_id, x.impressions, x.clicks, x.purchases, x.revenue
FROM unnest($2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::bigint[],
            $8::numeric[]) AS x(experiment_id, variant, user_id, impressions, clicks,
                               purchases, revenue)
JOIN experiments e ON e.tenant_id = $1 AND e.id::text = x.experiment_id
WHERE e.status IN ('running', 'paused') AND x.variant IN ('control', 'variant')
ON CONFLICT (experiment_id, user_id) DO UPDATE SET
    impressions = experiment_user_metrics.impressions + excluded.impressions,
    clicks = experiment_user_metrics.clicks + excluded.clicks,
    purchases = experiment_user_metrics.purchases + excluded.purchases,
    revenue = experiment_user_metrics.revenue + excluded.revenue
"""

_ATTRIBUTION_COLUMNS = """
    purchase_event_id, click_event_id, revenue::float8 AS revenue, purchased_at, placement_id,
    strategy, experiment_id::text AS experiment_id, variant
"""


@dataclass(frozen=True)
class IngestOutcome:
    """What one ingest call stored: rows whose side effects are due, and their attributions."""

    inserted: int
    rows: list[Mapping[str, Any]]
    attributions: list[dict[str, Any]]


def _json(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # integers past 64 bits
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _rows(events: Sequence[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Message-form events as `ingest_event` rows."""
    return [
        (
            e["id"],
            e["type"],
            e["user"],
            e["product"],
            e.get("session"),
            _json(e["meta"]) if e.get("meta") else "{}",
            e.get("placement"),
            e.get("rec"),
            None if e.get("price") is None else repr(float(e["price"])),
            ",".join(e.get("flags") or ()),
            datetime.fromisoformat(e["ts"]),
        )
        for e in events
    ]


async def insert_events(
    pool: asyncpg.Pool, *, tenant_id: str, events: Sequence[dict[str, Any]]
) -> IngestOutcome:
    """Store message-form events once (dedupe key and client eventId) and attribute the new
    purchases, in one transaction. `rows` also holds this message's events stored earlier (a
    redelivery), so that side effects lost to a crash can still be applied; the Redis guard
    makes applying them twice harmless."""
    # One id once: the same event may come in two messages stored together, and two events
    # with one client eventId must not both pass its claim below.
    by_id: dict[str, dict[str, Any]] = {}
    for event in events:
        by_id.setdefault(event["id"], event)
    events = list(by_id.values())
    async with pool.acquire() as connection, connection.transaction():
        with_client_id = [e for e in events if e.get("client")]
        fresh = events
        if with_client_id:
            claimed = await connection.fetch(
                """INSERT INTO event_ids (tenant_id, event_id, occurred_at)
                   SELECT $1, i, t FROM unnest($2::text[], $3::timestamptz[]) AS x(i, t)
                   ON CONFLICT DO NOTHING RETURNING event_id""",
                tenant_id,
                [e["id"] for e in with_client_id],
                [datetime.fromisoformat(e["ts"]) for e in with_client_id],
            )
            new_ids = {r["event_id"] for r in claimed}
            fresh = [e for e in events if not e.get("client") or e["id"] in new_ids]
        # Records read like the dicts the side effects expect (row["x"], row.get("x")).
        inserted: list[Mapping[str, Any]] = (
            await connection.fetch(_INSERT_EVENTS, tenant_id, _rows(fresh)) if fresh else []
        )
        rows = list(inserted)
        missing = by_id.keys() - {r["event_id"] for r in inserted}
        if missing:
            stored = await connection.fetch(
                f"SELECT {_ROW_COLUMNS} FROM events WHERE tenant_id = $1 AND event_id = ANY($2)",
                tenant_id,
                sorted(missing),
            )
            rows.extend(stored)
        purchases = [r for r in inserted if r["event_type"] == "purchase"]
        attributed = (
            await _attribute(connection, tenant_id=tenant_id, purchases=purchases)
            if purchases
            else []
        )
        await _count_for_experiments(
            connection, tenant_id=tenant_id, events=inserted, attributions=attributed
        )
    if missing:
        # A redelivery: attributions made by an earlier delivery may still need their effects.
        attributions = await _attributions_of(
            pool, tenant_id=tenant_id, rows=[r for r in rows if r["event_type"] == "purchase"]
        )
    else:
        # Every purchase is new, so its only attributions are the ones just made.
        attributions = [dict(r) for r in attributed]
    return IngestOutcome(inserted=len(inserted), rows=rows, attributions=attributions)


async def _count_for_experiments(
    connection: asyncpg.Connection,
    *,
    tenant_id: str,
    events: Sequence[Mapping[str, Any]],
    attributions: Sequence[asyncpg.Record],
) -> None:
    """Per-user experiment counts of newly stored impressions and clicks, and of newly
    attributed purchases; in the transaction that stored them, so each counts once."""
    totals: dict[tuple[str, str], list[Any]] = {}

    def add(experiment_id: Any, variant: Any, user_id: str, column: int, amount: float) -> None:
        if experiment_id and variant:
            row = totals.setdefault((str(experiment_id), user_id), [str(variant), 0, 0, 0, 0.0])
            row[column] += amount

    for event in events:
        if event["event_type"] == "recommendation_impressed":
            add(event["experiment_id"], event["variant"], event["user_id"], 1, 1)
        elif event["event_type"] == "recommendation_clicked":
            add(event["experiment_id"], event["variant"], event["user_id"], 2, 1)
    for attribution in attributions:
        user = attribution["user_id"]
        add(attribution["experiment_id"], attribution["variant"], user, 3, 1)
        add(attribution["experiment_id"], attribution["variant"], user, 4, attribution["revenue"])
    if not totals:
        return
    (experiments, users), values = zip(*totals.keys(), strict=True), list(totals.values())
    await connection.execute(
        _COUNT_EXPERIMENT_USERS,
        tenant_id,
        list(experiments),
        [v[0] for v in values],
        list(users),
        [v[1] for v in values],
        [v[2] for v in values],
        [v[3] for v in values],
        [Decimal(str(v[4])) for v in values],
    )


async def _attribute(
    connection: asyncpg.Connection, *, tenant_id: str, purchases: Sequence[Mapping[str, Any]]
) -> list[asyncpg.Record]:
    """Attribute purchases to their last free click (the domain rule); returns the rows made."""
    windows: dict[tuple[str, str], list[datetime]] = {}
    for p in purchases:
        window = windows.setdefault((p["user_id"], p["product_id"]), [p["occurred_at"]] * 2)
        window[0] = min(window[0], p["occurred_at"])
        window[1] = max(window[1], p["occurred_at"])
    clicks = await connection.fetch(
        _CANDIDATE_CLICKS,
        tenant_id,
        [user for user, _ in windows],
        [product for _, product in windows],
        [first - ATTRIBUTION_WINDOW for first, _ in windows.values()],
        [last for _, last in windows.values()],
    )
    if not clicks:
        return []
    pairs = attribute(
        [
            Purchase(p["event_id"], p["user_id"], p["product_id"], p["occurred_at"])
            for p in purchases
        ],
        [Click(c["event_id"], c["user_id"], c["product_id"], c["occurred_at"]) for c in clicks],
    )
    if not pairs:
        return []
    return await connection.fetch(
        _INSERT_ATTRIBUTIONS,
        tenant_id,
        [p.event_id for p, _ in pairs],
        [c.event_id for _, c in pairs],
        [p.purchased_at for p, _ in pairs],
        [c.clicked_at for _, c in pairs],
    )


async def _attributions_of(
    pool: asyncpg.Pool, *, tenant_id: str, rows: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    if not rows:
        return []
    found = await pool.fetch(
        f"""SELECT {_ATTRIBUTION_COLUMNS} FROM revenue_attributions
            WHERE tenant_id = $1 AND purchase_event_id = ANY($2)""",
        tenant_id,
        [r["event_id"] for r in rows],
    )
    return [dict(r) for r in found]


async def reconcile_attributions(
    pool: asyncpg.Pool, *, since: datetime, limit: int = 5000
) -> list[tuple[str, dict[str, Any]]]:
    """Attribute purchases since `since` that have a free click now (it arrived late); returns
    (tenant id, attribution) of every attribution made."""
    async with pool.acquire() as connection, connection.transaction():
        waiting = await connection.fetch(
            f"""SELECT tenant_id::text AS tenant_id, {_ROW_COLUMNS} FROM events p
                WHERE p.event_type = 'purchase' AND p.occurred_at >= $1::timestamptz
                  AND NOT EXISTS (SELECT 1 FROM revenue_attributions r
                                  WHERE r.tenant_id = p.tenant_id
                                    AND r.purchase_event_id = p.event_id)
                  AND EXISTS (SELECT 1 FROM events c
                              WHERE c.tenant_id = p.tenant_id
                                AND c.event_type = 'recommendation_clicked'
                                AND c.user_id = p.user_id AND c.product_id = p.product_id
                                AND c.occurred_at
                                    BETWEEN p.occurred_at - $2::interval AND p.occurred_at)
                ORDER BY p.occurred_at LIMIT $3""",
            since,
            ATTRIBUTION_WINDOW,
            limit,
        )
        by_tenant: dict[str, list[dict[str, Any]]] = {}
        for row in waiting:
            by_tenant.setdefault(row["tenant_id"], []).append(dict(row))
        made: list[tuple[str, dict[str, Any]]] = []
        for tenant_id, purchases in by_tenant.items():
            attributed = await _attribute(connection, tenant_id=tenant_id, purchases=purchases)
            await _count_for_experiments(
                connection, tenant_id=tenant_id, events=[], attributions=attributed
            )
            if attributed:
                found = await connection.fetch(
                    f"""SELECT {_ATTRIBUTION_COLUMNS} FROM revenue_attributions
                        WHERE tenant_id = $1 AND purchase_event_id = ANY($2)""",
                    tenant_id,
                    [p["event_id"] for p in purchases],
                )
                made.extend((tenant_id, dict(r)) for r in found)
    return made


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
    if ":events:ids:" in key:
        return CLIENT_ID_TTL_SECONDS
    return ttl_of(key)


def derived_digests(events: Sequence[Mapping[str, Any]]) -> dict[str, str]:
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
    """Counter, history and trending effects of stored events, guarded by their dedupe digest
    (taken from `digests` by event id when known, else computed from the row)."""
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
        ops = event_counter_ops(tenant_id=tenant_id, row=row)
        ops.extend(event_history_ops(tenant_id=tenant_id, row=row))
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


async def ingest_and_project(
    pool: asyncpg.Pool, redis: Redis, *, tenant_id: str, events: Sequence[dict[str, Any]]
) -> int:
    """Store message-form events once, then apply their projections at most once each; returns
    how many rows were new. Safe to repeat with the same events (redelivery, resumed import)."""
    outcome = await insert_events(pool, tenant_id=tenant_id, events=events)
    client_ids = {e["id"] for e in events if e.get("client")}
    effects = event_effects(
        tenant_id=tenant_id,
        rows=outcome.rows,
        client_ids=client_ids,
        digests=derived_digests(events),
    )
    effects += attribution_effects(tenant_id=tenant_id, attributions=outcome.attributions)
    await apply_guarded(redis, effects)
    return outcome.inserted


@dataclass(frozen=True)
class Precheck:
    """What Redis knows of events about to be queued, one entry per event."""

    known_product: list[bool]
    seen: list[bool]
    seen_client_id: list[bool]  # False for an event without a client eventId


@dataclass(frozen=True)
class QueueFrame:
    """A broker message the pre-check script fills with the fresh events and queues itself.

    `head` and `tail` are the message encoded around its (empty) events list; the broker's
    hash and list are in database `db` of the projections' Redis server.
    """

    db: int
    messages_key: str
    queue_key: str
    message_id: str
    head: bytes
    tail: bytes


# The fast dedupe and catalog check of a group of events in one command and one short reply (a
# pipeline of one HEXISTS/SISMEMBER per event costs the api more in packing and parsing replies
# than everything else it does), and, given a queue frame, the enqueue of the fresh events in
# the same call.
# `screen(k, a, count)` reads its keys and arguments from the tables `k` and `a` (so that it
# can follow another script's own): k = the catalog hash, the client-id sets (today,
# yesterday), the broker's message hash and queue list (or dummies), then the seen sets.
# a[1]: one byte per event, the `k` index of its seen set; a[2]: product ids joined by NUL (ids
# never hold NUL: validation refuses it); a[3]: the 16-byte digests concatenated; a[4]: client
# ids joined by NUL ('' for none); a[5..8]: broker db, message id, head and tail of the message
# ('' when not queueing); a[9..]: per event its message-form JSON, ending in its flags list
# ('' to leave it out). Only the first `count` events are screened. Returns one digit per
# screened event: 1 known product + 2 seen + 4 client id seen.
_SCREEN = """
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
    local body = a[8 + i]
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
    redis.call('HSET', k[4], a[6], a[7] .. table.concat(fresh, ',') .. a[8])
    redis.call('RPUSH', k[5], a[6])
  end
  return table.concat(answer)
end
"""
_PRECHECK = _SCREEN + "return screen(KEYS, ARGV, #ARGV[1])"
# A follow-up of the rate limiter's script (store.ratelimit): the admitted first `allowed`
# events of a group are screened and queued in the call that counts them, unless the tenant's
# auth epoch is no longer the one (ARGV[9]) under which the api cached the key: then nothing is
# screened, and the api reloads the key before it queues anything.
ADMITTED_SCREEN = (
    _SCREEN
    + "if epoch == ARGV[9] then extra = screen({unpack(KEYS, 5)}, {unpack(ARGV, 10)}, allowed)"
    + " end"
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
        frame.queue_key if frame else _NO_KEY,
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
        [frame.db, frame.message_id, frame.head, frame.tail, *bodies] if frame else ["", "", "", ""]
    )
    script_args = [
        bytes(where),
        "\0".join(e.product_id for e in events),
        b"".join(bytes.fromhex(e.digest) for e in events),
        "\0".join(e.event_id if e.client_event_id else "" for e in events),
        *queue_args,
    ]
    return script_keys, script_args


def read_screen(answer: bytes) -> Precheck:
    """What `screen` answered, per screened event."""
    found = [c - 48 for c in answer]  # digits
    return Precheck(
        known_product=[bool(f & 1) for f in found],
        seen=[bool(f & 2) for f in found],
        seen_client_id=[bool(f & 4) for f in found],
    )


async def precheck(
    redis: Redis,
    *,
    tenant_id: str,
    events: Sequence[Event],
    frame: QueueFrame | None = None,
    bodies: Sequence[bytes] = (),
) -> Precheck:
    """In one round trip: whether each event's product is in the catalog projection, and
    whether the event (digest) and its client eventId were already ingested (the fast dedupe).

    With a `frame`, the same call queues as one message the `bodies` (each event's encoded
    message form, b"" to leave it out) of the events found neither seen nor by client id,
    adding the `unknown_product` flag to those whose product is unknown.
    """
    script_keys, script_args = screen_arguments(
        tenant_id=tenant_id, events=events, frame=frame, bodies=bodies
    )
    return read_screen(await run_script(redis, _PRECHECK, script_keys, *script_args))


def encode_cursor(occurred_at: datetime, event_id: str) -> str:
    """An opaque cursor after one event of the newest-first listing."""
    raw = json.dumps([occurred_at.isoformat(), event_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str] | None:
    """The position a cursor points after, or None when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        moment, event_id = json.loads(raw)
        parsed = datetime.fromisoformat(moment)
    except (ValueError, TypeError):
        return None
    if parsed.tzinfo is None or not isinstance(event_id, str):
        return None
    return parsed, event_id


async def list_events(
    pool: asyncpg.Pool,
    *,
    tenant_id: str,
    event_type: str | None = None,
    user_id: str | None = None,
    product_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after: tuple[datetime, str] | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """The tenant's events matching the filters, newest first, after a cursor position."""
    conditions = ["tenant_id = $1"]
    params: list[Any] = [tenant_id]

    def bind(value: Any) -> str:
        params.append(value)
        return f"${len(params)}"

    if event_type is not None:
        conditions.append(f"event_type = {bind(event_type)}")
    if user_id is not None:
        conditions.append(f"user_id = {bind(user_id)}")
    if product_id is not None:
        conditions.append(f"product_id = {bind(product_id)}")
    if since is not None:
        conditions.append(f"occurred_at >= {bind(since)}")
    if until is not None:
        conditions.append(f"occurred_at < {bind(until)}")
    if after is not None:
        conditions.append(f"(occurred_at, event_id) < ({bind(after[0])}, {bind(after[1])})")
    rows = await pool.fetch(
        f"""SELECT event_id, event_type, user_id, product_id, session_id, metadata, flags,
                   occurred_at, received_at
            FROM events WHERE {" AND ".join(conditions)}
            ORDER BY occurred_at DESC, event_id DESC LIMIT {bind(limit)}""",
        *params,
    )
    return [dict(r) for r in rows]


async def ensure_partitions(pool: asyncpg.Pool, *, first_month: datetime, months: int) -> int:
    """Create the monthly events partitions from `first_month` on; returns how many were new."""
    created = await pool.fetchval(
        "SELECT ensure_event_partitions(date_trunc('month', $1::timestamptz)::date, $2)",
        first_month,
        months,
    )
    return int(created or 0)
