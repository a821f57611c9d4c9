"""Published recommendation models in Redis, and the one-call read of everything a
recommendation request needs.

A training run writes a complete new version under `reco:{t}:m:{version}:*`, then flips
`reco:{t}:model:current` to it; the previous version expires a little later. A reader reads
the current version and that version's keys inside one Lua script, so it sees the old or the
new version, never a mix.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from domain.serving import ServingContext, readiness_from_meta
from store import keys

# A list entry is [productId, score, [because...]].
ListEntry = list[Any]
OLD_VERSION_TTL_SECONDS = 300
_HSET_CHUNK = 2_000
MODEL_PARTS = ("cf", "cfitem", "content", "fbt", "popularity", "trending", "meta")


@dataclass(frozen=True)
class PublishedModel:
    """Everything one training run publishes for a tenant."""

    version: str
    user_lists: Mapping[str, list[ListEntry]]  # collaborative, per user
    collaborative_item_lists: Mapping[str, list[ListEntry]]
    content_item_lists: Mapping[str, list[ListEntry]]
    fbt_item_lists: Mapping[str, list[ListEntry]]
    trending: list[ListEntry]
    product_interactions: Mapping[str, int]
    meta: Mapping[str, Any]


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def _encode(entries: list[ListEntry]) -> str:
    return json.dumps(entries, separators=(",", ":"))


async def _hset_chunks(redis: Redis, key: str, mapping: Mapping[str, str]) -> None:
    items = list(mapping.items())
    for start in range(0, len(items), _HSET_CHUNK):
        await redis.hset(key, mapping=dict(items[start : start + _HSET_CHUNK]))


async def publish_model(redis: Redis, *, tenant_id: str, model: PublishedModel) -> str | None:
    """Write every part of a new version, then make it current; returns the previous one."""
    base = keys.model_prefix(tenant_id) + model.version
    hashes: dict[str, Mapping[str, str]] = {
        "cf": {user: _encode(v) for user, v in model.user_lists.items()},
        "cfitem": {p: _encode(v) for p, v in model.collaborative_item_lists.items()},
        "content": {p: _encode(v) for p, v in model.content_item_lists.items()},
        "fbt": {p: _encode(v) for p, v in model.fbt_item_lists.items()},
        "popularity": {p: str(n) for p, n in model.product_interactions.items()},
        "meta": {name: json.dumps(value) for name, value in model.meta.items()},
    }
    for part, mapping in hashes.items():
        if mapping:
            await _hset_chunks(redis, f"{base}:{part}", mapping)
    await redis.set(f"{base}:trending", _encode(model.trending))
    previous_version = _text(
        await redis.set(keys.model_current(tenant_id), model.version, get=True)
    )
    if previous_version and previous_version != model.version:
        # Readers that fetched the old version a moment ago may still be reading it.
        old_base = keys.model_prefix(tenant_id) + previous_version
        async with redis.pipeline(transaction=False) as pipe:
            for part in MODEL_PARTS:
                pipe.expire(f"{old_base}:{part}", OLD_VERSION_TTL_SECONDS)
            await pipe.execute()
    return previous_version


async def update_user_lists(
    redis: Redis, *, tenant_id: str, user_lists: Mapping[str, list[ListEntry]]
) -> str | None:
    """Replace some users' collaborative lists in the current version (incremental retrain)."""
    version = _text(await redis.get(keys.model_current(tenant_id)))
    if version is None:
        return None
    base = keys.model_prefix(tenant_id) + version
    await _hset_chunks(redis, f"{base}:cf", {u: _encode(v) for u, v in user_lists.items()})
    return version


async def replace_content_lists(
    redis: Redis, *, tenant_id: str, content_item_lists: Mapping[str, list[ListEntry]]
) -> str | None:
    """Swap the current version's content lists after a catalog change (None: no model yet)."""
    version = _text(await redis.get(keys.model_current(tenant_id)))
    if version is None:
        return None
    key = f"{keys.model_prefix(tenant_id)}{version}:content"
    staging = f"{key}:staging"
    await redis.delete(staging)
    await _hset_chunks(redis, staging, {p: _encode(v) for p, v in content_item_lists.items()})
    if content_item_lists:
        await redis.rename(staging, key)  # atomic: readers see the old or the new lists
    else:
        await redis.delete(key)
    return version


async def read_item_lists(
    redis: Redis, *, tenant_id: str, version: str, product_ids: list[str]
) -> dict[str, list[ListEntry]]:
    """The current version's collaborative neighbour lists of some products."""
    if not product_ids:
        return {}
    key = f"{keys.model_prefix(tenant_id)}{version}:cfitem"
    raw = await redis.hmget(key, product_ids)
    return {p: json.loads(v) for p, v in zip(product_ids, raw, strict=True) if v is not None}


async def current_version(redis: Redis, *, tenant_id: str) -> str | None:
    """The published version, or None before the first training."""
    return _text(await redis.get(keys.model_current(tenant_id)))


async def read_meta(redis: Redis, *, tenant_id: str) -> dict[str, Any]:
    """The current version's meta (readiness, trainedAt, counts), empty before training."""
    version = await current_version(redis, tenant_id=tenant_id)
    if version is None:
        return {}
    raw = await redis.hgetall(f"{keys.model_prefix(tenant_id)}{version}:meta")
    return {str(_text(k)): json.loads(v) for k, v in raw.items()}


# KEYS: 1 current version, 2 widget config, 3 running experiment, 4 user history,
#       5 user purchased, 6 cards, 7 available, 8 live trending (this hour), 9 (last hour)
# ARGV: 1 model prefix, 2 user id, 3 product id or "", 4 history size, 5 recent products
_SERVE = """
local res = {}
local version = redis.call('GET', KEYS[1])
res.version = version
res.widget = redis.call('GET', KEYS[2])
res.experiment = redis.call('GET', KEYS[3])
res.history = redis.call('ZREVRANGE', KEYS[4], 0, tonumber(ARGV[4]) - 1, 'WITHSCORES')
res.historyCount = redis.call('ZCARD', KEYS[4])
res.purchased = redis.call('SMEMBERS', KEYS[5])
res.liveNow = redis.call('ZREVRANGE', KEYS[8], 0, 99, 'WITHSCORES')
res.liveBefore = redis.call('ZREVRANGE', KEYS[9], 0, 99, 'WITHSCORES')
local lists = {}
local product = ARGV[3]
local recent = {}
if version then
  local base = ARGV[1] .. version
  res.meta = redis.call('HGET', base .. ':meta', 'readiness')
  lists.collaborative = redis.call('HGET', base .. ':cf', ARGV[2])
  lists.trending = redis.call('GET', base .. ':trending')
  if product ~= '' then
    lists.contentItem = redis.call('HGET', base .. ':content', product)
    lists.fbtItem = redis.call('HGET', base .. ':fbt', product)
    lists.collaborativeItem = redis.call('HGET', base .. ':cfitem', product)
    res.productInteractions = redis.call('HGET', base .. ':popularity', product)
  end
  -- Content neighbours of the user's most recent products, for fresh content-based answers.
  local seen = {}
  local wanted = tonumber(ARGV[5])
  for i = 1, #res.history, 2 do
    local entry = res.history[i]
    local sep = string.find(entry, '|', 1, true)
    local pid = sep and string.sub(entry, sep + 1) or entry
    if not seen[pid] and #recent < wanted then
      seen[pid] = true
      recent[#recent + 1] = pid
    end
  end
  if #recent > 0 then
    res.recentContent = redis.call('HMGET', base .. ':content', unpack(recent))
  end
end
res.recent = recent
res.lists = lists
-- Hydrate every candidate (cards + availability) in the same call.
local ids, index = {}, {}
local function collect(raw)
  if not raw then return end
  local ok, decoded = pcall(cjson.decode, raw)
  if not ok then return end
  for _, item in ipairs(decoded) do
    local pid = item[1]
    if not index[pid] then index[pid] = true; ids[#ids + 1] = pid end
  end
end
for _, raw in pairs(lists) do collect(raw) end
if res.recentContent then for _, raw in ipairs(res.recentContent) do collect(raw) end end
for i = 1, #res.liveNow, 2 do
  local pid = res.liveNow[i]
  if not index[pid] then index[pid] = true; ids[#ids + 1] = pid end
end
for i = 1, #res.liveBefore, 2 do
  local pid = res.liveBefore[i]
  if not index[pid] then index[pid] = true; ids[#ids + 1] = pid end
end
res.ids = ids
if #ids > 0 then
  res.cards = redis.call('HMGET', KEYS[6], unpack(ids))
  res.available = redis.call('SMISMEMBER', KEYS[7], unpack(ids))
end
return cjson.encode(res)
"""


class ServingReader:
    """Reads a recommendation request's whole context from Redis in one Lua call."""

    HISTORY_SIZE = 100
    RECENT_PRODUCTS = 5

    def __init__(self, redis: Redis) -> None:
        self._script = redis.register_script(_SERVE)

    async def read(
        self,
        *,
        tenant_id: str,
        user_id: str,
        product_id: str | None,
        placement_id: str | None,
        live_hours: Iterable[str],
    ) -> dict[str, Any]:
        """The raw context: version, widget, experiment, history, lists, cards, availability."""
        hour_now, hour_before = list(live_hours)[:2]
        raw = await self._script(
            keys=[
                keys.model_current(tenant_id),
                keys.widget_config(tenant_id, placement_id or ""),
                keys.running_experiment(tenant_id, placement_id or ""),
                keys.user_history(tenant_id, user_id),
                keys.user_purchased(tenant_id, user_id),
                keys.catalog_cards(tenant_id),
                keys.catalog_available(tenant_id),
                keys.trending_hour(tenant_id, hour_now),
                keys.trending_hour(tenant_id, hour_before),
            ],
            args=[
                keys.model_prefix(tenant_id),
                user_id,
                product_id or "",
                self.HISTORY_SIZE,
                self.RECENT_PRODUCTS,
            ],
        )
        return json.loads(raw)


def _as_list(value: Any) -> list[Any]:
    # cjson encodes an empty Lua table as {} and a Redis nil as false.
    return value if isinstance(value, list) else []


def _decode_list(raw: Any) -> list[tuple[str, float, tuple[str, ...]]]:
    if not isinstance(raw, str):
        return []
    return [(str(e[0]), float(e[1]), tuple(e[2]) if len(e) > 2 else ()) for e in json.loads(raw)]


def _pairs(flat: Any) -> list[tuple[str, float]]:
    values = _as_list(flat)
    return [(str(values[i]), float(values[i + 1])) for i in range(0, len(values) - 1, 2)]


def _json_or_none(raw: Any) -> Any:
    return json.loads(raw) if isinstance(raw, str) and raw else None


def to_serving_context(raw: Mapping[str, Any]) -> ServingContext:
    """The Lua script's answer as the domain's ServingContext."""
    history = []
    for member, score in _pairs(raw.get("history")):
        event_type, _, product_id = member.partition("|")
        history.append((event_type, product_id, score))
    lists = {name: _decode_list(value) for name, value in (raw.get("lists") or {}).items()}
    recent = _as_list(raw.get("recent"))
    recent_content = {
        product: _decode_list(value)
        for product, value in zip(recent, _as_list(raw.get("recentContent")), strict=False)
    }
    live: dict[str, float] = {}
    for product_id, score in _pairs(raw.get("liveNow")) + _pairs(raw.get("liveBefore")):
        live[product_id] = live.get(product_id, 0.0) + score
    ids = _as_list(raw.get("ids"))
    cards: dict[str, Any] = {}
    for product_id, card in zip(ids, _as_list(raw.get("cards")), strict=False):
        if isinstance(card, str):
            cards[product_id] = json.loads(card)
    available = frozenset(
        product_id
        for product_id, flag in zip(ids, _as_list(raw.get("available")), strict=False)
        if flag == 1
    )
    interactions = raw.get("productInteractions")
    version = raw.get("version")
    return ServingContext(
        model_version=version if isinstance(version, str) else None,
        readiness=readiness_from_meta(_json_or_none(raw.get("meta"))),
        widget=_json_or_none(raw.get("widget")),
        experiment=_json_or_none(raw.get("experiment")),
        history=history,
        history_count=int(raw.get("historyCount") or 0),
        purchased=frozenset(_as_list(raw.get("purchased"))),
        lists=lists,
        recent_content=recent_content,
        live_trending=sorted(live.items(), key=lambda kv: -kv[1]),
        product_interactions=int(interactions) if isinstance(interactions, str) else 0,
        cards=cards,
        available=available,
    )
