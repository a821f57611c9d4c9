"""Recommendation answers as projections: each reading user's ranked, hydrated candidates per
strategy (and each asked-about product's, in item context), written where their inputs change
and read with the request's filters in one call.

A user who asks for recommendations gets a HASH `reco:{t}:answers:user:{u}` (field: the
requested strategy, `@default` for requests that name none, `@exp:{placement}` for those on a
placement that runs an experiment), written ahead by a publish for the most recently active
users, by the api after a computed answer, and rewritten by the ingest worker after each group
of that user's events. A field is a text block:

    stamp \n written-at (unix s) \n flag \n head JSON \n item lines...

The flag is 1 (complete: the ranking ended before the list was cut), 0 (cut), T (the answer is
the tenant's trending list: the field holds the head only) or P (asked for by a shopper
without events, not projected yet).

`stamp` is everything the ranking read that can change without the user's key changing (auth
epoch, published model version, the tenant's serving stamp, the user's stamp); an item line is
`productId \t casefolded category \t served item JSON`. ANSWER_LOOKUP (the rate-limit call's
follow-up) first looks for a cached answer of the same query, then takes the field, checks its
stamp and age, and keeps the first `limit` items that are not excluded, are in the category,
available and (unless asked for) not bought. A stale, absent or too short projection answers
nothing: the api then computes the answer as before.

Item-context answers (`productId` given: frequently bought together, similar items, item
collaborative) do not depend on the user: they are projected per product in
`reco:{t}:answers:product:{p}` the same way (the user's purchases are still filtered out at
read time), by a publish for the most popular products and by the api from the first computed
answer of a product that asks for a strategy.

The tenant's trending list is projected in `reco:{t}:answers:tenant` (whole and per category),
rewritten by the ingest worker as events come, a publish and the api when it finds it stale.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import ujson
from redis.asyncio import Redis

from domain.serving import (
    Hydration,
    RankedCandidate,
    ServedItem,
    ServingDecision,
    ServingRequest,
    rank,
)
from domain.strategies.base import (
    TRENDING,
)
from domain.strategies.registry import projected_product_strategies, strategies, strategy_names
from store import keys
from store.models import ServingReader
from store.usage import METER_REQUESTS, Meter

DEFAULT_FIELD = "@default"  # requests naming no strategy, answered by the tenant's default
CONFIG_FIELD = "@config"  # JSON {"defaultStrategy": ...} the `@default` field was ranked with
# Requests naming no strategy on a placement that runs an experiment: `@exp:{placementId}`
# holds the user's answer in their arm (assigned when it was ranked), behind the experiment.
EXPERIMENT_FIELD = "@exp:"
TRENDING_FIELD = TRENDING  # the tenant's own trending list (`trending@{category}` per category)
# Candidates kept per field: a request whose filters leave fewer than its limit of a list that
# was cut here is computed instead (bounded memory: about 300 bytes per item).
PROJECTION_DEPTH = 40
# The tenant's trending projection keeps every ranked candidate (at most this many) and the
# first TRENDING_CATEGORY_DEPTH of each category (of at most TRENDING_CATEGORIES categories).
TRENDING_DEPTH = 400
TRENDING_CATEGORY_DEPTH = 40
TRENDING_CATEGORIES = 200
# How far behind the live counters a trending projection may be served (the ingest worker
# rewrites it at most every TRENDING_REWRITE_SECONDS while events come): within the 2 s
# freshness promised for events.
TRENDING_LAG_SECONDS = 1.5
TRENDING_REWRITE_SECONDS = 0.5
PROJECTION_TTL_SECONDS = 3600  # a user (or product) nobody asks about stops being projected
# Products whose item-context answers a publish writes ahead (the most popular): at most
# this many keys of about 20 KB (three strategies' fields).
PROJECTED_PRODUCTS_AT_PUBLISH = 1_000
# Users whose answers (the default and each strategy with a user answer) a publish writes
# ahead, the most recently active first: at most this many keys of about 30 KB.
PROJECTED_USERS_AT_PUBLISH = 2_000

# Follow-up of the rate-limit script (store.ratelimit) for GET /recommendations: one round trip
# counts the request, meters it, reads the auth epoch, returns a cached answer when still
# valid, else the projected answer filtered for this request: the user's field (a strategy,
# `@default`, or `@exp:{placement}` when an experiment runs there), the product's in item
# context, or the tenant's trending list, which also answers a shopper without events (a
# first request: the cold-start answer is trending) and fields whose answer is trending (flag
# T: the field holds the head, the items are the tenant's).
# Indexes are relative to the limiter's own keys and arguments (`kb`, `ab`: see
# store.ratelimit). KEYS: kb+1 the tenant's usage meter of the month (store.usage), then, only
# when answers are cached: kb+2 the cached answer, kb+3 current model version, kb+4 widget
# config, kb+5 running experiment, kb+6 the tenant's serving stamp, kb+7 the user's stamp,
# kb+8 the trending stamp, kb+9 the user's projected answers (or the product's, in item
# context), kb+10 available products, kb+11 the user's purchases, kb+12 the user's history,
# kb+13 the tenant's projected answers (trending), kb+14 the answer readers.
# ARGV: ab+1 the meter's total field ("" meters nothing), ab+2 its day field; then ab+3 the
# current hour bucket, ab+4 the projection field asked for ("" for none), ab+5 the query's
# limit ("" for the widget's or the default), ab+6 the casefolded category ("" for any), ab+7
# "1" to keep bought products, ab+8 the projection's maximum age in seconds, ab+9 "user" or
# "product" (whose answers kb+9 holds; a product's do not depend on the user's stamp), ab+10
# the placement, ab+11 the anchor product ("" for none), ab+12 the user, ab+13 the
# projections' TTL, ab+14... excluded product ids.
# Metering here costs no round trip: an answered request is counted as it is let through, and
# the rare request that then fails (a bad query, a gate) is taken back by the api
# (store.usage.unmeter), so the meter holds the requests answered with a 200.
# An answer is stored behind the SHA-1 of everything it was computed from that can change
# without its own key changing, so any write to one of those makes the stored stamp differ.
# A trending answer is stored behind the `live` stamp, which also covers the live trending
# counters and their hour; others tolerate trending backfill as old as their TTL (and so do
# projected answers, through their maximum age).
# Reply (`extra`): a flat list of names and values, decoded by `decode_lookup` only (false
# when only the meter ran).
ANSWER_LOOKUP = (
    METER_REQUESTS
    + """
if #KEYS >= kb + 8 then
local found = redis.call(
  'MGET', KEYS[kb + 2], KEYS[kb + 3], KEYS[kb + 4], KEYS[kb + 5], KEYS[kb + 6])
local user_stamp = redis.call('HGET', KEYS[kb + 7], 'n') or ''
local base = table.concat({
  epoch, found[2] or '', found[3] or '', found[4] or '', found[5] or '', user_stamp}, '\\n')
local stamp = redis.sha1hex(base)
local trending = redis.call('HGET', KEYS[kb + 8], 'n') or ''
local live = redis.sha1hex(base .. '\\n' .. ARGV[ab + 3] .. '\\n' .. trending)
extra = {'stamp', stamp, 'live', live}
local cached = found[1]
if cached then
  local head = string.sub(cached, 1, 40)
  if head == stamp or head == live then extra[5], extra[6] = 'cached', string.sub(cached, 41) end
end
if not extra[5] and ARGV[ab + 4] ~= '' and #KEYS >= kb + 14 then
  -- No valid cached answer: the projection (the user's, the product's, or the tenant's
  -- trending list), filtered.
  local field = ARGV[ab + 4]
  local widget = {}
  if found[3] then
    local ok, decoded = pcall(cjson.decode, found[3])
    if ok and type(decoded) == 'table' then widget = decoded end
  end
  if field == '@default' then
    if found[4] then
      field = '@exp:' .. ARGV[ab + 10]  -- the user's answer in their arm of the experiment
    elseif type(widget.strategy) == 'string' then
      field = widget.strategy
    end
  end
  local now_s = tonumber(ARGV[1]) / 1000
  local max_age = tonumber(ARGV[ab + 8])
  local of_user = ARGV[ab + 9] == 'user' and user_stamp or ''
  local tenant_current = table.concat({epoch, found[2] or '', found[5] or ''}, '|')
  local current = tenant_current .. '|' .. of_user
  if string.sub(field, 1, 5) == '@exp:' then
    current = current .. '|' .. redis.sha1hex(found[4])
  end
  -- A stored field: stamp, written-at, flag, head, then item lines from `start`.
  local function parse(raw)
    local p1 = string.find(raw, '\\n', 1, true)
    local p2 = string.find(raw, '\\n', p1 + 1, true)
    local p3 = string.find(raw, '\\n', p2 + 1, true)
    local p4 = string.find(raw, '\\n', p3 + 1, true) or (#raw + 1)
    return string.sub(raw, 1, p1 - 1), tonumber(string.sub(raw, p1 + 1, p2 - 1)),
      string.sub(raw, p2 + 1, p3 - 1), string.sub(raw, p3 + 1, p4 - 1), p4 + 1
  end
  local status, source, head, trending_status = 'none', '', '', ''
  local items_raw, items_from, complete = nil, 0, false
  -- The tenant's trending projection (the category's own list when one is asked for): valid
  -- for its model and catalog, and behind the live counters (their stamp and hour) by at
  -- most TRENDING_LAG s.
  local live_now = trending .. '@' .. ARGV[ab + 3]
  local function from_trending()
    local category = ARGV[ab + 6]
    local raw = category ~= '' and redis.call('HGET', KEYS[kb + 13], 'trending@' .. category)
    if not raw then raw = redis.call('HGET', KEYS[kb + 13], 'trending') end
    if not raw then
      trending_status = 'absent'
      return false
    end
    local stamp, written, flag, thead, start = parse(raw)
    local age = now_s - written
    local n = #tenant_current
    if string.sub(stamp, 1, n + 1) ~= tenant_current .. '|' or age > max_age
        or (string.sub(stamp, n + 2) ~= live_now and age > TRENDING_LAG) then
      trending_status = 'stale'
      return false
    end
    trending_status = 'fresh'
    items_raw, items_from, complete = raw, start, flag == '1'
    return thead
  end
  local function trending_missing()
    return trending_status == 'absent' and 'absent' or 'stale'
  end
  local raw = redis.call('HGET', KEYS[kb + 9], field)
  local flag = raw and string.sub(select(3, parse(raw)), 1, 1) or ''
  if field == 'trending' then
    local thead = from_trending()
    if thead then source, head = 'tenant', thead else status = trending_missing() end
  elseif raw and flag ~= 'P' then
    local stamp, written, _, fhead, start = parse(raw)
    if stamp ~= current or now_s - written > max_age then
      status = 'stale'
    elseif flag == 'T' then  -- answered by trending: the field holds the head only
      if from_trending() then source, head = 'field', fhead else status = trending_missing() end
    else
      source, head, items_raw, items_from, complete = 'field', fhead, raw, start, flag == '1'
    end
  elseif ARGV[ab + 9] == 'user' and redis.call('ZCARD', KEYS[kb + 12]) == 0 then
    -- A shopper without events (a first request): the cold-start answer is trending.
    local thead = from_trending()
    if thead then source, head = 'tenant', thead else status = trending_missing() end
    if not raw then
      -- Asked for: the worker projects this field once the shopper's events come.
      redis.call('HSET', KEYS[kb + 9], field, 'pending\\n0\\nP\\n{}')
      redis.call('EXPIRE', KEYS[kb + 9], tonumber(ARGV[ab + 13]))
      redis.call('SADD', KEYS[kb + 14], ARGV[ab + 12])
    end
  else
    status = 'absent'
  end
  local chosen = {}
  if items_raw then
    local most = tonumber(widget.maxItems)
    local limit = tonumber(ARGV[ab + 5]) or (most and most > 0 and most) or 10
    limit = math.min(math.max(math.floor(limit), 1), 50)
    local excluded = {}
    for i = ab + 14, #ARGV do excluded[ARGV[i]] = true end
    if ARGV[ab + 11] ~= '' then excluded[ARGV[ab + 11]] = true end  -- the anchor product
    local category, keep_bought = ARGV[ab + 6], ARGV[ab + 7] == '1'
    local position = items_from
    while #chosen < limit and position <= #items_raw do
      local stop = string.find(items_raw, '\\n', position, true) or (#items_raw + 1)
      local t1 = string.find(items_raw, '\\t', position, true)
      local t2 = string.find(items_raw, '\\t', t1 + 1, true)
      local product = string.sub(items_raw, position, t1 - 1)
      if not excluded[product]
          and (category == '' or string.sub(items_raw, t1 + 1, t2 - 1) == category)
          and redis.call('SISMEMBER', KEYS[kb + 10], product) == 1
          and (keep_bought or redis.call('SISMEMBER', KEYS[kb + 11], product) == 0) then
        chosen[#chosen + 1] = string.sub(items_raw, t2 + 1, stop - 1)
      end
      position = stop + 1
    end
    status = (#chosen < limit and not complete) and 'short' or 'hit'
  end
  extra[5], extra[6], extra[7], extra[8] = 'projection', status, 'field', field
  extra[9], extra[10], extra[11], extra[12] = 'current', current, 'trending', trending_status
  if status == 'hit' then
    extra[13], extra[14], extra[15], extra[16] = 'head', head, 'items', table.concat(chosen, ',')
    extra[17], extra[18] = 'source', source
    if source == 'tenant' and found[4] then extra[19], extra[20] = 'experiment', found[4] end
  end
end
end
""".replace("TRENDING_LAG", str(TRENDING_LAG_SECONDS))
)


@dataclass(frozen=True)
class ProjectedArgs:
    """What a request asked the projection for (checked against the validated query)."""

    field: str
    product_id: str | None  # item context: the product's projection, not the user's
    limit: int | None
    category: str | None
    include_purchased: bool
    exclude: frozenset[str]


@dataclass(frozen=True)
class AnswerLookup:
    """The follow-up's reply: the stamps, a cached answer or a projected one."""

    stamp: bytes
    live: bytes
    cached: bytes | None = None
    projection: str = "none"  # none | absent | stale | short | hit
    field: str = ""
    current: str = ""  # the stamp a projection written from this request's reads gets
    head: bytes = b""  # the projection's meta JSON
    items: bytes = b""  # the served items' JSON, comma-separated
    # field: the items and meta are the field's; tenant: the tenant's trending list answered
    # (a trending request, or a shopper without events): the api decides the meta.
    source: str = ""
    trending: str = ""  # the tenant's trending projection: "" (not read) | fresh | stale | absent
    experiment: bytes | None = None  # the running experiment, when `source` is tenant


def decode_lookup(reply: Sequence[Any]) -> AnswerLookup:
    """ANSWER_LOOKUP's flat name/value reply as an AnswerLookup."""
    values = dict(zip(reply[0::2], reply[1::2], strict=True))

    def text(name: bytes) -> str:
        value = values.get(name, b"")
        return value.decode() if isinstance(value, bytes) else str(value)

    return AnswerLookup(
        stamp=values[b"stamp"],
        live=values[b"live"],
        cached=values.get(b"cached"),
        projection=text(b"projection") or "none",
        field=text(b"field"),
        current=text(b"current"),
        head=values.get(b"head", b""),
        items=values.get(b"items", b""),
        source=text(b"source"),
        trending=text(b"trending"),
        experiment=values.get(b"experiment"),
    )


def answer_lookup_keys(
    *,
    tenant_id: str,
    user_id: str,
    placement_id: str,
    query_digest: str,
    product_id: str | None = None,
    meter: Meter | None = None,
) -> list[str]:
    """The keys ANSWER_LOOKUP reads for one request (the meter's first)."""
    return [
        meter.key if meter else keys.NO_KEY,
        keys.answer_cache(tenant_id, user_id, query_digest),
        keys.model_current(tenant_id),
        keys.widget_config(tenant_id, placement_id),
        keys.running_experiment(tenant_id, placement_id),
        keys.serving_stamp(tenant_id),
        keys.user_stamp(tenant_id, user_id),
        keys.trending_stamp(tenant_id),
        keys.product_answers(tenant_id, product_id)
        if product_id
        else keys.user_answers(tenant_id, user_id),
        keys.catalog_available(tenant_id),
        keys.user_purchased(tenant_id, user_id),
        keys.user_history(tenant_id, user_id),
        keys.tenant_answers(tenant_id),
        keys.answer_readers(tenant_id),
    ]


def meter_args(meter: Meter | None) -> list[str]:
    """The ARGV of ANSWER_LOOKUP's meter (nothing metered for None)."""
    return [meter.total, meter.daily] if meter else ["", ""]


def lookup_args(
    hour: int,
    args: ProjectedArgs | None,
    max_age_seconds: int,
    meter: Meter | None = None,
    *,
    user_id: str = "",
    placement_id: str = "",
) -> list[str]:
    """The ARGV ANSWER_LOOKUP takes after the limiter's."""
    if args is None:
        return [*meter_args(meter), str(hour), ""]
    return [
        *meter_args(meter),
        str(hour),
        args.field,
        str(args.limit or ""),
        args.category or "",
        "1" if args.include_purchased else "0",
        str(max_age_seconds),
        "product" if args.product_id else "user",
        placement_id,
        args.product_id or "",
        user_id,
        str(PROJECTION_TTL_SECONDS),
        *sorted(args.exclude),
    ]


async def cache_answer(
    redis: Redis, *, answer_key: str, stamp: bytes, body: bytes, ttl_seconds: int
) -> None:
    """Store a finished answer behind the stamp read before it was computed."""
    await redis.set(answer_key, stamp + body, ex=ttl_seconds)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else ("" if value is None else str(value))


async def _projection_stamp(
    redis: Redis, *, tenant_id: str, user_id: str | None, placement_id: str | None = None
) -> str:
    """What ANSWER_LOOKUP compares a projection with (a product's has no user part; a user's
    answer in an experiment's arm also carries the experiment's SHA-1)."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.get(keys.auth_epoch(tenant_id))
        pipe.get(keys.model_current(tenant_id))
        pipe.get(keys.serving_stamp(tenant_id))
        pipe.hget(keys.user_stamp(tenant_id, user_id or ""), "n")
        pipe.get(keys.running_experiment(tenant_id, placement_id or ""))
        epoch, version, serving, user, experiment = await pipe.execute()
    # The limiter reads a missing epoch as '0' (store.ratelimit).
    user_part = _text(user) if user_id is not None else ""
    stamp = "|".join([_text(epoch) or "0", _text(version), _text(serving), user_part])
    if placement_id is not None:
        if experiment is None:
            return ""  # no experiment runs there any more: nothing to project
        stamp += "|" + hashlib.sha1(experiment).hexdigest()  # noqa: S324 - Redis's sha1hex
    return stamp


def _clean(text: str) -> bool:
    return "\n" not in text and "\t" not in text


def encode_field(
    *,
    stamp: str,
    written_at: int,
    complete: bool,
    head: Mapping[str, Any],
    items: list[ServedItem],
    trending: bool = False,
) -> bytes | None:
    """One projected field as stored (None when an id or category cannot be framed).
    `trending`: the answer is the tenant's trending list (flag T, the head only)."""
    flag = "T" if trending else ("1" if complete else "0")
    lines = [stamp, str(written_at), flag]
    lines.append(ujson.dumps(head, escape_forward_slashes=False, ensure_ascii=False))
    for item in [] if trending else items:
        category = str(item.card.get("category") or "").casefold()
        if not (_clean(item.product_id) and _clean(category)):
            return None
        body = ujson.dumps(item.to_dict(), escape_forward_slashes=False, ensure_ascii=False)
        lines.append(f"{item.product_id}\t{category}\t{body}")
    return "\n".join(lines).encode()


def _placement_of(field: str) -> str | None:
    """The placement of an experiment's field (None for the others)."""
    return field[len(EXPERIMENT_FIELD) :] if field.startswith(EXPERIMENT_FIELD) else None


def projectable(field: str) -> bool:
    """Whether a user's field can be projected (a projected strategy, the default or an
    experiment's)."""
    return field in strategy_names() or field == DEFAULT_FIELD or field.startswith(EXPERIMENT_FIELD)


class AnswerProjector:
    """Ranks and hydrates answers (a user's, a product's, the tenant's trending list) and
    stores them as projected fields."""

    def __init__(self, redis: Redis, reader: ServingReader) -> None:
        self._redis = redis
        self._reader = reader

    async def project(
        self,
        *,
        tenant_id: str,
        user_id: str,
        fields: Sequence[str],
        default_strategy: str | None,
    ) -> int:
        """Write the user's `fields` (strategies, `@default`, `@exp:{placement}`); returns how
        many were written. A field answered by trending holds its head only (flag T)."""
        by_placement: dict[str | None, list[str]] = {}
        for field in fields:
            if projectable(field):
                by_placement.setdefault(_placement_of(field), []).append(field)
        written = 0
        now = datetime.now(UTC)
        hours = [(now - timedelta(hours=h)).strftime("%Y%m%d%H") for h in (0, 1)]
        for placement, wanted in by_placement.items():
            stamp = await _projection_stamp(
                self._redis, tenant_id=tenant_id, user_id=user_id, placement_id=placement
            )
            if not stamp:
                continue
            context = await self._reader.read(
                tenant_id=tenant_id,
                user_id=user_id,
                product_id=None,
                placement_id=placement,
                live_hours=hours,
            )
            ranked_by_field = {}
            for field in wanted:
                request = ServingRequest(
                    user_id=user_id,
                    strategy=field if field in strategy_names() else None,
                    placement_id=placement,
                    tenant_default_strategy=default_strategy,
                )
                ranked_by_field[field] = rank(request, context, depth=PROJECTION_DEPTH)
            key = keys.user_answers(tenant_id, user_id)
            written += await self._write(
                tenant_id, user_id, key, stamp, context, ranked_by_field, default_strategy, user_id
            )
        return written

    async def _write(
        self,
        tenant_id: str,
        user_id: str,
        key: str,
        stamp: str,
        context: Any,
        ranked_by_field: Mapping[str, tuple[ServingDecision, Sequence[RankedCandidate]]],
        default_strategy: str | None,
        reader: str | None,
    ) -> int:
        """Hydrate the ranked fields and store them under `key` (`reader`: see `store`)."""
        if not ranked_by_field:
            return 0
        ids = list(
            dict.fromkeys(
                c.product_id
                for d, r in ranked_by_field.values()
                if d.choice.strategy != TRENDING
                for c in r
            )
        )
        hydration = await self._reader.hydrate(
            tenant_id=tenant_id, user_id=user_id, product_ids=ids
        )
        return await self.store(
            tenant_id=tenant_id,
            key=key,
            stamp=stamp,
            ranked_by_field={f: (d, r, PROJECTION_DEPTH) for f, (d, r) in ranked_by_field.items()},
            hydration=hydration,
            model_version=context.model_version,
            default_strategy=default_strategy,
            reader=reader,
        )

    async def store(
        self,
        *,
        tenant_id: str,
        key: str,
        stamp: str,
        ranked_by_field: Mapping[str, tuple[ServingDecision, Sequence[RankedCandidate], int]],
        hydration: Hydration,
        model_version: str | None,
        default_strategy: str | None,
        reader: str | None = None,
    ) -> int:
        """Store ranked fields (decision, candidates, the depth they were ranked to) whose
        candidates are all hydrated under `key` (TTL'd); returns how many were written.
        A field answered by trending keeps its head only: its items are the tenant's.
        `reader`: the user whose answers these are (their events will rewrite them)."""
        mapping: dict[str, bytes] = {}
        for field, (decision, ranked, depth) in ranked_by_field.items():
            head = {
                **decision.choice.to_meta(),
                "requestedStrategy": decision.requested,
                "modelVersion": model_version,
                "experimentId": decision.experiment_id,
                "variant": decision.variant,
            }
            by_trending = decision.choice.strategy == TRENDING
            items = [
                ServedItem(c.product_id, c.score, c.strategy, c.because, card)
                for c in ([] if by_trending else ranked[:PROJECTION_DEPTH])
                if (card := hydration.cards.get(c.product_id)) is not None
            ]
            encoded = encode_field(
                stamp=stamp,
                written_at=int(time.time()),
                complete=len(ranked) < min(depth, PROJECTION_DEPTH),
                head=head,
                items=items,
                trending=by_trending,
            )
            if encoded is not None:
                mapping[field] = encoded
        if not mapping:
            return 0
        if DEFAULT_FIELD in mapping:
            mapping[CONFIG_FIELD] = ujson.dumps({"defaultStrategy": default_strategy}).encode()
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hset(key, mapping=mapping)  # type: ignore[arg-type]
            pipe.expire(key, PROJECTION_TTL_SECONDS)
            if reader is not None:
                pipe.sadd(keys.answer_readers(tenant_id), reader)
            await pipe.execute()
        return len(mapping) - (CONFIG_FIELD in mapping)

    async def project_trending(self, *, tenant_id: str) -> int:
        """Rank and hydrate the tenant's trending list (trained velocity plus the live
        counters) and store it whole and per category; returns the items written."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.get(keys.auth_epoch(tenant_id))
            pipe.get(keys.model_current(tenant_id))
            pipe.get(keys.serving_stamp(tenant_id))
            # Read before the counters: a count that moves meanwhile only looks newer.
            pipe.hget(keys.trending_stamp(tenant_id), "n")
            epoch, version, serving, counter = await pipe.execute()
        now = datetime.now(UTC)
        # The live counters' hour beside their stamp: when the hour turns, the counters read
        # change without a new event, and the list is written again as if one had come.
        hour = int(now.timestamp()) // 3600
        stamp = "|".join(
            [_text(epoch) or "0", _text(version), _text(serving), f"{_text(counter)}@{hour}"]
        )
        context = await self._reader.read(
            tenant_id=tenant_id,
            user_id="",
            product_id=None,
            placement_id=None,
            live_hours=[(now - timedelta(hours=h)).strftime("%Y%m%d%H") for h in (0, 1)],
        )
        request = ServingRequest(user_id="", strategy=TRENDING)
        _, ranked = rank(request, context, depth=TRENDING_DEPTH)
        hydration = await self._reader.hydrate(
            tenant_id=tenant_id, user_id="", product_ids=[c.product_id for c in ranked]
        )
        items, dropped = [], False
        for c in ranked:
            card = hydration.cards.get(c.product_id)
            if card is None:
                continue
            if not (_clean(c.product_id) and _clean(str(card.get("category") or ""))):
                dropped = True
                continue
            items.append(ServedItem(c.product_id, c.score, c.strategy, c.because, card))
        complete = len(ranked) < TRENDING_DEPTH and not dropped
        head = {"modelVersion": context.model_version}
        written_at = int(time.time())
        mapping: dict[str, bytes] = {}
        whole = encode_field(
            stamp=stamp, written_at=written_at, complete=complete, head=head, items=items
        )
        if whole is not None:
            mapping[TRENDING_FIELD] = whole
        by_category: dict[str, list[ServedItem]] = {}
        for item in items:
            category = str(item.card.get("category") or "").casefold()
            if category and (category in by_category or len(by_category) < TRENDING_CATEGORIES):
                by_category.setdefault(category, []).append(item)
        for category, members in by_category.items():
            encoded = encode_field(
                stamp=stamp,
                written_at=written_at,
                complete=complete and len(members) <= TRENDING_CATEGORY_DEPTH,
                head=head,
                items=members[:TRENDING_CATEGORY_DEPTH],
            )
            if encoded is not None:
                mapping[f"{TRENDING_FIELD}@{category}"] = encoded
        if len(by_category) >= TRENDING_CATEGORIES and whole is not None:
            # Categories left out must not read as empty: the whole list is no longer complete.
            mapping[TRENDING_FIELD] = encode_field(  # type: ignore[assignment]
                stamp=stamp, written_at=written_at, complete=False, head=head, items=items
            )
        key = keys.tenant_answers(tenant_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)  # categories that left the list go with their fields
            if mapping:
                pipe.hset(key, mapping=mapping)  # type: ignore[arg-type]
                pipe.expire(key, PROJECTION_TTL_SECONDS)
            await pipe.execute()
        return len(items)

    async def project_products(self, *, tenant_id: str, product_ids: Sequence[str]) -> int:
        """Write the item-context answers of `product_ids` for every strategy projected per
        product (the same for every shopper); returns the products written."""
        stamp = await _projection_stamp(self._redis, tenant_id=tenant_id, user_id=None)
        now = datetime.now(UTC)
        hours = [(now - timedelta(hours=h)).strftime("%Y%m%d%H") for h in (0, 1)]
        written = 0
        for product_id in product_ids:
            # A shopper without history: only answers that do not depend on one are kept.
            context = await self._reader.read(
                tenant_id=tenant_id,
                user_id="",
                product_id=product_id,
                placement_id=None,
                live_hours=hours,
            )
            ranked_by_field: dict[str, tuple[ServingDecision, Sequence[RankedCandidate]]] = {}
            for strategy in projected_product_strategies():
                request = ServingRequest(user_id="", strategy=strategy, product_id=product_id)
                decision, ranked = rank(request, context, depth=PROJECTION_DEPTH)
                if decision.choice.mode == "product":
                    ranked_by_field[strategy] = (decision, ranked)
            key = keys.product_answers(tenant_id, product_id)
            if await self._write(tenant_id, "", key, stamp, context, ranked_by_field, None, None):
                written += 1
        return written

    async def reproject_readers(self, *, tenant_id: str, user_ids: Sequence[str]) -> int:
        """Rewrite the fields of those of `user_ids` who read projected answers (after their
        events were stored); returns the number of users projected."""
        candidates = list(dict.fromkeys(user_ids))
        if not candidates:
            return 0
        # One command for the whole group: most users who send events never ask.
        flags = await self._redis.smismember(keys.answer_readers(tenant_id), candidates)
        users = [user for user, flag in zip(candidates, flags, strict=True) if flag]
        if not users:
            return 0
        async with self._redis.pipeline(transaction=False) as pipe:
            for user in users:
                pipe.hkeys(keys.user_answers(tenant_id, user))
                pipe.hget(keys.user_answers(tenant_id, user), CONFIG_FIELD)
            replies = await pipe.execute()
        projected, gone = 0, []
        for index, user in enumerate(users):
            fields = [_text(f) for f in replies[2 * index] if _text(f) != CONFIG_FIELD]
            if not fields:
                gone.append(user)  # their projections expired: no longer a reader
                continue
            config = ujson.loads(replies[2 * index + 1] or b"{}")
            await self.project(
                tenant_id=tenant_id,
                user_id=user,
                fields=fields,
                default_strategy=config.get("defaultStrategy"),
            )
            projected += 1
        if gone:
            await self._redis.srem(keys.answer_readers(tenant_id), *gone)
        return projected


def fields_ahead() -> list[str]:
    """The fields a user's answers are written ahead with: the default and every strategy
    that answers a user by ranking (not a tenant-wide list, not item context only)."""
    names = [s.name for s in strategies() if not (s.projected_for_tenant or s.needs_product)]
    return [DEFAULT_FIELD, *names]


async def reproject_all_readers(
    redis: Redis,
    *,
    tenant_id: str,
    at_most: int = 10_000,
    products: Sequence[str] = (),
    active_users: Sequence[str] = (),
    default_strategy: str | None = None,
) -> int:
    """After a publish: rewrite the tenant's trending list, the item-context answers of
    `products` (the most popular), the projected answers of its reading users (up to
    `at_most`; the others are projected again by their next request), then write ahead the
    answers of `active_users` who are not readers yet (their first requests are then not
    computed either, and their events rewrite them). Other products' answers go stale and are
    rewritten by their next request."""
    projector = AnswerProjector(redis, ServingReader(redis))
    await projector.project_trending(tenant_id=tenant_id)
    await projector.project_products(tenant_id=tenant_id, product_ids=products)
    users: list[str] = []
    async for member in redis.sscan_iter(keys.answer_readers(tenant_id), count=1000):
        users.append(_text(member))
        if len(users) >= at_most:
            break
    projected = 0
    for start in range(0, len(users), 200):
        projected += await projector.reproject_readers(
            tenant_id=tenant_id, user_ids=users[start : start + 200]
        )
    readers = set(users)
    ahead = fields_ahead()
    for user in active_users:
        if user not in readers:
            await projector.project(
                tenant_id=tenant_id, user_id=user, fields=ahead, default_strategy=default_strategy
            )
            projected += 1
    return projected
