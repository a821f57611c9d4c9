"""Published recommendation models in Redis, and the one-call read of everything a
recommendation request needs.

A training run writes a complete new version under `reco:{t}:m:{version}:*`, then flips
`reco:{t}:model:current` to it when the publish gate lets it; the previous version expires a
little later, a rejected one after some days. `reco:{t}:model:versions` records each
version's metrics and gate decision. A reader reads
the current version and that version's keys inside one Lua script, so it sees the old or the
new version, never a mix.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import ujson
from redis.asyncio import Redis

from domain.serving import Hydration, ServingContext, readiness_from_meta
from domain.strategies.registry import served_lists
from store import keys

# A list entry is [productId, score, [because...]].
ListEntry = list[Any]
OLD_VERSION_TTL_SECONDS = 300
# A version the gate refused is kept this long for inspection and publishing on purpose.
REJECTED_VERSION_TTL_SECONDS = 7 * 86_400
KEEP_VERSION_RECORDS = 20
_HSET_CHUNK = 2_000


def model_parts() -> tuple[str, ...]:
    """The key suffixes of a version: every registered strategy's lists, popularity, meta."""
    return (*dict.fromkeys(lst.suffix for lst in served_lists()), "popularity", "meta")


@dataclass(frozen=True)
class PublishedModel:
    """Everything one training run publishes for a tenant: the strategies' lists by their
    suffix (domain.strategies.registry: a mapping id -> entries, or a tenant's entries)."""

    version: str
    lists: Mapping[str, Any]
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


async def write_model(
    redis: Redis, *, tenant_id: str, model: PublishedModel, ttl_seconds: int | None = None
) -> None:
    """Write every part of a version without making it current (`ttl_seconds`: kept that long)."""
    base = keys.model_prefix(tenant_id) + model.version
    hashes: dict[str, Mapping[str, str]] = {
        "popularity": {p: str(n) for p, n in model.product_interactions.items()},
        "meta": {name: json.dumps(value) for name, value in model.meta.items()},
    }
    whole: dict[str, str] = {}
    for served in served_lists():
        value = model.lists.get(served.suffix)
        if served.key == "tenant":
            whole[served.suffix] = _encode(list(value or []))
        else:
            hashes[served.suffix] = {i: _encode(v) for i, v in (value or {}).items()}
    for part, mapping in hashes.items():
        if mapping:
            await _hset_chunks(redis, f"{base}:{part}", mapping)
    for part, encoded in whole.items():
        await redis.set(f"{base}:{part}", encoded)
    if ttl_seconds is not None:
        await expire_version(redis, tenant_id=tenant_id, version=model.version, seconds=ttl_seconds)


async def expire_version(redis: Redis, *, tenant_id: str, version: str, seconds: int) -> None:
    """Let a version's parts go in `seconds` (readers that just fetched it still finish)."""
    base = keys.model_prefix(tenant_id) + version
    async with redis.pipeline(transaction=False) as pipe:
        for part in model_parts():
            pipe.expire(f"{base}:{part}", seconds)
        await pipe.execute()


async def version_kept(redis: Redis, *, tenant_id: str, version: str) -> bool:
    """Whether a version's lists are still stored (a rejected or previous one expires)."""
    return bool(await redis.exists(f"{keys.model_prefix(tenant_id)}{version}:meta"))


async def make_current(redis: Redis, *, tenant_id: str, version: str) -> str | None:
    """Flip readers to a written version, keep it for good, let the old one expire; returns
    the previous version."""
    previous_version = _text(await redis.set(keys.model_current(tenant_id), version, get=True))
    await _settle_flip(redis, tenant_id=tenant_id, version=version, previous=previous_version)
    return previous_version


# Makes a version current unless the current one is as new or newer (versions sort by the time
# their training read its data); returns {flipped, the version before}.
# KEYS: the current-version key; ARGV: the version.
_SET_IF_NEWER = """
local current = redis.call('GET', KEYS[1])
if current and current >= ARGV[1] then return {0, current} end
redis.call('SET', KEYS[1], ARGV[1])
return {1, current or ''}
"""


async def make_current_unless_superseded(redis: Redis, *, tenant_id: str, version: str) -> bool:
    """Make a trained version current unless a training that read newer data published first
    (two trainings of one tenant may overlap); False, and the version expires, when it was."""
    flipped, previous = await redis.eval(_SET_IF_NEWER, 1, keys.model_current(tenant_id), version)
    if not flipped:
        await expire_version(
            redis, tenant_id=tenant_id, version=version, seconds=OLD_VERSION_TTL_SECONDS
        )
        return False
    await _settle_flip(redis, tenant_id=tenant_id, version=version, previous=_text(previous))
    return True


async def _settle_flip(redis: Redis, *, tenant_id: str, version: str, previous: str | None) -> None:
    """After a flip: keep the new version for good, let the one before it expire."""
    base = keys.model_prefix(tenant_id) + version
    async with redis.pipeline(transaction=False) as pipe:
        for part in model_parts():
            pipe.persist(f"{base}:{part}")
        await pipe.execute()
    if previous and previous != version:
        # Readers that fetched the old version a moment ago may still be reading it.
        await expire_version(
            redis, tenant_id=tenant_id, version=previous, seconds=OLD_VERSION_TTL_SECONDS
        )


async def publish_model(redis: Redis, *, tenant_id: str, model: PublishedModel) -> str | None:
    """Write every part of a new version, then make it current; returns the previous one."""
    await write_model(redis, tenant_id=tenant_id, model=model)
    return await make_current(redis, tenant_id=tenant_id, version=model.version)


async def save_version_record(
    redis: Redis, *, tenant_id: str, record: Mapping[str, Any], keep: int = KEEP_VERSION_RECORDS
) -> None:
    """Store what is known of a version (metrics, gate, sizes), keeping the `keep` newest."""
    key = keys.model_versions(tenant_id)
    await redis.hset(key, str(record["version"]), json.dumps(record))
    versions = sorted((str(_text(v)) for v in await redis.hkeys(key)), reverse=True)
    current = await current_version(redis, tenant_id=tenant_id)
    stale = [v for v in versions[keep:] if v != current]
    if stale:
        await redis.hdel(key, *stale)


async def read_version_record(
    redis: Redis, *, tenant_id: str, version: str
) -> dict[str, Any] | None:
    """One version's stored record, or None."""
    raw = await redis.hget(keys.model_versions(tenant_id), version)
    return json.loads(raw) if raw is not None else None


async def list_version_records(redis: Redis, *, tenant_id: str) -> list[dict[str, Any]]:
    """The tenant's versions, newest first, each with its status now: published (current),
    rejected (refused by the gate and never published since) or previous."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.model_versions(tenant_id))
        pipe.get(keys.model_current(tenant_id))
        raw, current_raw = await pipe.execute()
    current = _text(current_raw)
    records = [json.loads(value) for value in raw.values()]
    for record in records:
        if record["version"] == current:
            record["status"] = "published"
        elif record.get("status") != "rejected":
            record["status"] = "previous"
    return sorted(records, key=lambda r: str(r["version"]), reverse=True)


async def publish_kept_version(redis: Redis, *, tenant_id: str, version: str) -> str | None:
    """Make a stored version current on purpose (an admin overruling the gate); None when its
    record or lists are gone, else the version it replaced ("" when there was none)."""
    record = await read_version_record(redis, tenant_id=tenant_id, version=version)
    if record is None or not await version_kept(redis, tenant_id=tenant_id, version=version):
        return None
    record["status"] = "published"
    record["publishedByHandAt"] = datetime.now(UTC).isoformat()
    await save_version_record(redis, tenant_id=tenant_id, record=record)
    return await make_current(redis, tenant_id=tenant_id, version=version) or ""


async def read_user_lists(
    redis: Redis, *, tenant_id: str, version: str, user_ids: list[str]
) -> dict[str, list[str]]:
    """The product ids a version ranks for some users (users without a list left out)."""
    if not user_ids:
        return {}
    raw = await redis.hmget(f"{keys.model_prefix(tenant_id)}{version}:cf", user_ids)
    return {
        u: [str(e[0]) for e in json.loads(v)]
        for u, v in zip(user_ids, raw, strict=True)
        if v is not None
    }


async def top_products(redis: Redis, *, tenant_id: str, version: str, n: int) -> list[str]:
    """A version's `n` products with the most interacting users, most first."""
    raw = await redis.hgetall(f"{keys.model_prefix(tenant_id)}{version}:popularity")
    ranked = sorted(((int(c), str(_text(p))) for p, c in raw.items()), key=lambda x: (-x[0], x[1]))
    return [p for _, p in ranked[:n]]


async def update_user_lists(
    redis: Redis, *, tenant_id: str, user_lists: Mapping[str, list[ListEntry]]
) -> str | None:
    """Replace some users' collaborative lists in the current version (incremental retrain)."""
    version = _text(await redis.get(keys.model_current(tenant_id)))
    if version is None:
        return None
    base = keys.model_prefix(tenant_id) + version
    await _hset_chunks(redis, f"{base}:cf", {u: _encode(v) for u, v in user_lists.items()})
    await redis.incr(keys.serving_stamp(tenant_id))
    return version


async def replace_refreshed_lists(
    redis: Redis, *, tenant_id: str, lists: Mapping[str, Any]
) -> str | None:
    """Swap the current version's lists rebuilt after a catalog change (by suffix, as training
    returns them: id -> entries, or the entries of a tenant list); returns the version (None:
    no model yet)."""
    version = _text(await redis.get(keys.model_current(tenant_id)))
    if version is None:
        return None
    whole = {served.suffix for served in served_lists() if served.key == "tenant"}
    for suffix, value in lists.items():
        key = f"{keys.model_prefix(tenant_id)}{version}:{suffix}"
        if suffix in whole:
            await redis.set(key, _encode(list(value or [])))
            continue
        staging = f"{key}:staging"
        await redis.delete(staging)
        await _hset_chunks(redis, staging, {p: _encode(v) for p, v in (value or {}).items()})
        if value:
            await redis.rename(staging, key)  # atomic: readers see the old or the new lists
        else:
            await redis.delete(key)
    await redis.incr(keys.serving_stamp(tenant_id))
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
#       5 live trending (this hour), 6 (last hour)
# ARGV: 1 model prefix, 2 user id, 3 product id or "", 4 history size, 5 recent products,
#       6 live trending size
# The reply is a flat array of stored strings (no JSON re-encoding in Lua): only the lists,
# never the cards; those are fetched for the few candidates that get served.
# A recommendation request's context in one call. KEYS: 1 the current version, 2 the widget
# config, 3 the running experiment, 4 the user's history, 5 and 6 the live trending counters of
# this hour and the one before. ARGV: 1 the tenant's model prefix, 2 the user, 3 the product
# ('' for none), 4 history size, 5 recent products, 6 live trending size, then one triple per
# list the strategy registry serves (name, the version's key suffix, what it is keyed by).
# Reply: a flat list of names and values, decoded by `to_serving_context` only.
_CONTEXT = """
local version = redis.call('GET', KEYS[1])
local history = redis.call('ZREVRANGE', KEYS[4], 0, tonumber(ARGV[4]) - 1, 'WITHSCORES')
local reply = {
  'version', version or '',
  'widget', redis.call('GET', KEYS[2]) or '',
  'experiment', redis.call('GET', KEYS[3]) or '',
  'historyCount', redis.call('ZCARD', KEYS[4]),
  'history', history,
  'liveNow', redis.call('ZREVRANGE', KEYS[5], 0, tonumber(ARGV[6]) - 1, 'WITHSCORES'),
  'liveBefore', redis.call('ZREVRANGE', KEYS[6], 0, tonumber(ARGV[6]) - 1, 'WITHSCORES'),
}
local function add(name, value)
  reply[#reply + 1] = name
  reply[#reply + 1] = value
end
if not version then return reply end
local base = ARGV[1] .. version
local user, product = ARGV[2], ARGV[3]
add('readiness', redis.call('HGET', base .. ':meta', 'readiness') or '')
for i = 7, #ARGV - 2, 3 do
  local key, by = base .. ':' .. ARGV[i + 1], ARGV[i + 2]
  local value = false
  if by == 'tenant' then value = redis.call('GET', key)
  elseif by == 'user' then value = redis.call('HGET', key, user)
  elseif product ~= '' then value = redis.call('HGET', key, product)
  end
  if value then add(ARGV[i], value) end
end
if product ~= '' then
  add('productInteractions', redis.call('HGET', base .. ':popularity', product) or '')
end
-- Content neighbours of the user's most recent products, for fresh content-based answers.
local seen, recent = {}, {}
for i = 1, #history, 2 do
  local entry = history[i]
  local sep = string.find(entry, '|', 1, true)
  local pid = sep and string.sub(entry, sep + 1) or entry
  if not seen[pid] and #recent < tonumber(ARGV[5]) then
    seen[pid] = true
    recent[#recent + 1] = pid
  end
end
add('recent', recent)
if #recent > 0 then
  add('recentContent', redis.call('HMGET', base .. ':content', unpack(recent)))
else
  add('recentContent', {})
end
return reply
"""


def _texts(values: Any) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values or []]


def _decode_list(raw: Any) -> list[tuple[str, float, tuple[str, ...]]]:
    if not raw:
        return []
    return [(str(e[0]), float(e[1]), tuple(e[2]) if len(e) > 2 else ()) for e in ujson.loads(raw)]


def _pairs(flat: Any) -> list[tuple[str, float]]:
    values = _texts(flat)
    return [(values[i], float(values[i + 1])) for i in range(0, len(values) - 1, 2)]


def _json_or_none(raw: Any) -> Any:
    return ujson.loads(raw) if raw else None


class LazyLists(Mapping[str, list[tuple[str, float, tuple[str, ...]]]]):
    """Candidate lists decoded on first use: a request reads one or two of the five."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self._raw = raw
        self._decoded: dict[str, list[tuple[str, float, tuple[str, ...]]]] = {}

    def __getitem__(self, name: str) -> list[tuple[str, float, tuple[str, ...]]]:
        if name not in self._decoded:
            self._decoded[name] = _decode_list(self._raw[name])
        return self._decoded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)


def to_serving_context(reply: Sequence[Any]) -> ServingContext:
    """The context script's name/value reply as the domain's ServingContext."""
    values: dict[str, Any] = {
        name.decode(): value for name, value in zip(reply[0::2], reply[1::2], strict=True)
    }
    history = []
    for member, score in _pairs(values["history"]):
        event_type, _, product_id = member.partition("|")
        history.append((event_type, product_id, score))
    live: dict[str, float] = {}
    for product_id, score in _pairs(values["liveNow"]) + _pairs(values["liveBefore"]):
        live[product_id] = live.get(product_id, 0.0) + score
    recent = _texts(values.get("recent") or [])
    recent_content = {
        product: _decode_list(raw)
        for product, raw in zip(recent, values.get("recentContent") or [], strict=False)
    }
    lists = LazyLists(
        {lst.name: values[lst.name] for lst in served_lists() if values.get(lst.name)}
    )
    version = _text(values["version"])
    interactions = values.get("productInteractions")
    return ServingContext(
        model_version=version or None,
        readiness=readiness_from_meta(_json_or_none(values.get("readiness"))),
        widget=_json_or_none(values["widget"]),
        experiment=_json_or_none(values["experiment"]),
        history=history,
        history_count=int(values["historyCount"] or 0),
        lists=lists,
        recent_content=recent_content,
        live_trending=sorted(live.items(), key=lambda kv: -kv[1]),
        product_interactions=int(interactions) if interactions else 0,
    )


def _served_list_args() -> list[str]:
    """The lists the registry's strategies serve, as the context script's trailing arguments."""
    return [part for lst in served_lists() for part in (lst.name, lst.suffix, lst.key)]


class ServingReader:
    """Reads a recommendation request's context in one Lua call, and hydrates candidates."""

    HISTORY_SIZE = 20
    RECENT_PRODUCTS = 5
    LIVE_TRENDING_SIZE = 50

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._script = redis.register_script(_CONTEXT)

    async def read(
        self,
        *,
        tenant_id: str,
        user_id: str,
        product_id: str | None,
        placement_id: str | None,
        live_hours: Iterable[str],
    ) -> ServingContext:
        """Version, widget, experiment, history and the candidate lists, in one round trip."""
        hour_now, hour_before = list(live_hours)[:2]
        reply = await self._script(
            keys=[
                keys.model_current(tenant_id),
                keys.widget_config(tenant_id, placement_id or ""),
                keys.running_experiment(tenant_id, placement_id or ""),
                keys.user_history(tenant_id, user_id),
                keys.trending_hour(tenant_id, hour_now),
                keys.trending_hour(tenant_id, hour_before),
            ],
            args=[
                keys.model_prefix(tenant_id),
                user_id,
                product_id or "",
                self.HISTORY_SIZE,
                self.RECENT_PRODUCTS,
                self.LIVE_TRENDING_SIZE,
                *_served_list_args(),
            ],
        )
        return to_serving_context(reply)

    async def hydrate(
        self, *, tenant_id: str, user_id: str, product_ids: Sequence[str]
    ) -> Hydration:
        """Cards, availability and the user's purchases of some candidates, in one round trip."""
        if not product_ids:
            return Hydration()
        ids = list(product_ids)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hmget(keys.catalog_cards(tenant_id), ids)
            pipe.smismember(keys.catalog_available(tenant_id), ids)
            pipe.smismember(keys.user_purchased(tenant_id, user_id), ids)
            cards, available, purchased = await pipe.execute()
        return Hydration(
            cards={p: ujson.loads(c) for p, c in zip(ids, cards, strict=True) if c is not None},
            available=frozenset(p for p, flag in zip(ids, available, strict=True) if flag),
            purchased=frozenset(p for p, flag in zip(ids, purchased, strict=True) if flag),
        )
