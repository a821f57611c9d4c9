"""The ingest queue in the broker: two lanes, each served fairly per tenant.

Lanes: live traffic (single events, small batches) and bulk traffic (large batches: backfills,
history sent again) are two Dramatiq queues, `ingest` and `ingest_bulk`, each with its own
worker pools, so bulk work never sits in front of live work.

Fair share inside a lane: a lane's messages wait in one sub-queue per tenant, and consumers
take them by deficit round robin over the tenants that have some (LANE_FETCH): each turn a
tenant may take up to QUANTUM_EVENTS events' worth of messages, so a tenant with a deep
backlog gets its share and no more while others wait, and a tenant alone gets everything.

Layout, beside Dramatiq's own (which stays as Dramatiq writes it: bodies in the hash
`<ns>:<queue>.msgs`, fetched ids in the acks sets, `<ns>:<queue>` the list Dramatiq requeues
to; the lane's fetch takes that list first):
    <ns>:<queue>.t.<tenant>   LIST  "<events>:<redis message id>", oldest first
    <ns>:<queue>.active       SET   tenants with a sub-queue
    <ns>:<queue>.rotation     LIST  those tenants, in turn order
    <ns>:<queue>.deficit      HASH  tenant -> events it may still take before its turn ends

Messages are written through the broker (workers.broker.LaneBroker, a Dramatiq RedisBroker
whose enqueue and fetch know the lanes), except where the ingest gate's script queues the fresh
events of the call that checked them (`QueueFrame`): it writes Dramatiq's body hash (the
layout of the version below, which tests/integration/test_event_queue.py checks against the
installed Dramatiq) and the lane's sub-queue with LANE_PUSH, the function the broker runs.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import dramatiq

from domain.event_message import EventMessage, MessageEvent

# The Dramatiq release whose Redis layout this module writes beside (see the docstring).
DRAMATIQ_LAYOUT_VERSION = "2.2.1"
NAMESPACE = "dramatiq"
LIVE_QUEUE = "ingest"
BULK_QUEUE = "ingest_bulk"
LANES = (LIVE_QUEUE, BULK_QUEUE)
Lane = Literal["live", "bulk"]
LANE_QUEUES: Mapping[Lane, str] = {"live": LIVE_QUEUE, "bulk": BULK_QUEUE}
# A batch of more events than this is bulk traffic (a backfill, an export replayed); the
# storefront SDK's and most integrations' batches are smaller.
LIVE_BATCH_MAX_EVENTS = 20
# Events a tenant may take per turn of a lane's round robin (a message is taken whole: a
# larger one waits for the deficit of several turns).
QUANTUM_EVENTS = 100


def sub_queue_key(queue: str, tenant_id: str) -> str:
    """LIST: the tenant's messages waiting in the lane `queue`."""
    return f"{NAMESPACE}:{queue}.t.{tenant_id}"


def active_key(queue: str) -> str:
    """SET: tenants with messages waiting in the lane."""
    return f"{NAMESPACE}:{queue}.active"


def rotation_key(queue: str) -> str:
    """LIST: the lane's tenants with messages, in turn order."""
    return f"{NAMESPACE}:{queue}.rotation"


def deficit_key(queue: str) -> str:
    """HASH: tenant -> events it may still take in its turn."""
    return f"{NAMESPACE}:{queue}.deficit"


# lane_push(msgs, sub, active, rotation, tenant, id, body, events): the message's body under
# its id (Dramatiq's hash), its entry at the tail of the tenant's sub-queue, and the tenant in
# the rotation unless it is there already.
LANE_PUSH = """
local function lane_push(msgs, sub, active, rotation, tenant, id, body, events)
  redis.call('HSET', msgs, id, body)
  redis.call('RPUSH', sub, events .. ':' .. id)
  if redis.call('SADD', active, tenant) == 1 then redis.call('RPUSH', rotation, tenant) end
end
"""
# KEYS: msgs, sub-queue, active, rotation. ARGV: tenant, id, body, events.
LANE_ENQUEUE = (
    LANE_PUSH + "lane_push(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[2], ARGV[3], ARGV[4])"
)

# Up to ARGV[3] messages of the lane, by deficit round robin. KEYS: msgs, active, rotation,
# deficit, the consumer's acks set (Dramatiq's). ARGV: 1 the sub-queues' key prefix, 2 the
# quantum in events, 3 how many. Each visit pops the rotation's head tenant, adds the quantum
# to its deficit and takes whole messages while they fit (all it has, when no other tenant
# waits); a tenant left with messages goes to
# the rotation's tail, one without leaves it (and its deficit goes). Fetched ids join the acks
# set, as Dramatiq's own fetch does, so that ack, nack, requeue on shutdown and the requeue of
# a dead worker's messages are Dramatiq's. Returns the bodies (a body already gone is skipped).
LANE_FETCH = """
local want, quantum, prefix = tonumber(ARGV[3]), tonumber(ARGV[2]), ARGV[1]
local ids = {}
local visits = 4 * redis.call('LLEN', KEYS[3]) + 4
while #ids < want and visits > 0 do
  visits = visits - 1
  local tenant = redis.call('LPOP', KEYS[3])
  if not tenant then break end
  local sub = prefix .. tenant
  local deficit = tonumber(redis.call('HGET', KEYS[4], tenant) or '0') + quantum
  -- Nobody else waits: the tenant gets everything, whatever its deficit.
  local alone = redis.call('LLEN', KEYS[3]) == 0
  while #ids < want do
    local head = redis.call('LINDEX', sub, 0)
    if not head then break end
    local colon = string.find(head, ':', 1, true)
    local events = tonumber(string.sub(head, 1, colon - 1))
    if events > deficit and not alone then break end
    redis.call('LPOP', sub)
    deficit = math.max(deficit - events, 0)
    ids[#ids + 1] = string.sub(head, colon + 1)
  end
  if redis.call('LLEN', sub) == 0 then
    redis.call('SREM', KEYS[2], tenant)
    redis.call('HDEL', KEYS[4], tenant)
  else
    redis.call('HSET', KEYS[4], tenant, deficit)
    redis.call('RPUSH', KEYS[3], tenant)
  end
end
if #ids == 0 then return {} end
local bodies = redis.call('HMGET', KEYS[1], unpack(ids))
local found, claimed = {}, {}
for i = 1, #bodies do
  if bodies[i] then
    found[#found + 1] = bodies[i]
    claimed[#claimed + 1] = ids[i]
  end
end
if #claimed > 0 then redis.call('SADD', KEYS[5], unpack(claimed)) end
return found
"""


def lane_enqueue_args(
    queue: str, *, tenant_id: str, redis_id: str, body: bytes, events: int
) -> tuple[list[str], list[Any]]:
    """The keys and arguments of LANE_ENQUEUE."""
    return (
        [
            f"{NAMESPACE}:{queue}.msgs",
            sub_queue_key(queue, tenant_id),
            active_key(queue),
            rotation_key(queue),
        ],
        [tenant_id, redis_id, body, events],
    )


def lane_fetch_args(
    queue: str, *, acks_key: str, count: int, quantum: int = QUANTUM_EVENTS
) -> tuple[list[str], list[Any]]:
    """The keys and arguments of LANE_FETCH."""
    return (
        [
            f"{NAMESPACE}:{queue}.msgs",
            active_key(queue),
            rotation_key(queue),
            deficit_key(queue),
            acks_key,
        ],
        [sub_queue_key(queue, ""), quantum, count],
    )


def message_tenant_and_size(message: dramatiq.Message[Any]) -> tuple[str, int] | None:
    """The tenant and event count of an ingest message (None for anything else: it goes to the
    lane's shared list)."""
    args = message.args
    if len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], list):
        return args[0], max(1, len(args[1]))
    return None


@dataclass(frozen=True)
class QueueFrame:
    """A broker message the ingest gate's script fills with the fresh events and queues itself.

    `head` and `tail` are the message encoded around its (empty) events list; the broker's
    keys are in database `db` of the projections' Redis server.
    """

    db: int
    messages_key: str
    sub_queue_key: str
    active_key: str
    rotation_key: str
    tenant_id: str
    message_id: str
    head: bytes
    tail: bytes


class EventQueue:
    """Sends event messages to the ingest actor of a lane."""

    def __init__(
        self,
        actors: Mapping[Lane, dramatiq.Actor[Any, Any]],
        *,
        frame_db: int | None,
    ) -> None:
        """`actors`: the ingest actor of each lane; `frame_db`: the broker's database when it
        is on the projections' Redis server (the gate's script may then queue in the call
        that checks), else None."""
        self._actors = actors
        self._frame_db = frame_db
        self._encoder = dramatiq.get_encoder()

    def _message(self, message: EventMessage, lane: Lane) -> dramatiq.Message[Any]:
        return self._actors[lane].message_with_options(
            args=message.actor_args(), kwargs=message.actor_kwargs()
        )

    async def send(self, message: EventMessage, *, lane: Lane = "live") -> None:
        """Queue `message` in `lane`; returns once the broker holds it. Dramatiq's broker is
        synchronous: it runs in a thread, so the api's loop goes on meanwhile."""
        actor = self._actors[lane]
        await asyncio.to_thread(
            actor.send_with_options, args=message.actor_args(), kwargs=message.actor_kwargs()
        )

    def encode_event(self, event: MessageEvent) -> bytes:
        """`event` encoded as it is inside a message (what a frame's script joins)."""
        return self._encoder.encode(event)  # type: ignore[arg-type]

    def frame(self, tenant_id: str, *, lane: Lane = "live") -> QueueFrame | None:
        """A message of the tenant for the gate's script to fill and queue in `lane`, or None
        when the broker is on another server (then `send` queues the fresh events after the
        check)."""
        if self._frame_db is None:
            return None
        marker = os.urandom(16).hex()
        redis_id = str(uuid.uuid4())
        empty = self._message(EventMessage(tenant_id, []), lane)
        filled = empty.copy(args=(tenant_id, [marker]), options={"redis_message_id": redis_id})
        head, tail = filled.encode().split(f'"{marker}"'.encode())
        queue = empty.queue_name
        return QueueFrame(
            db=self._frame_db,
            messages_key=f"{NAMESPACE}:{queue}.msgs",
            sub_queue_key=sub_queue_key(queue, tenant_id),
            active_key=active_key(queue),
            rotation_key=rotation_key(queue),
            tenant_id=tenant_id,
            message_id=redis_id,
            head=head,
            tail=tail,
        )


@dataclass(frozen=True)
class TenantBacklog:
    """What waits for one tenant in one lane."""

    queue: str
    tenant_id: str
    messages: int
    events: int
    oldest_seconds: float  # age of its oldest waiting message


def _age(body: Any, now: float) -> float:
    if not body:
        return 0.0
    try:
        return max(0.0, now - dramatiq.Message.decode(body).message_timestamp / 1000)
    except Exception:  # a body this cannot read says nothing of the age
        return 0.0


def _backlog(queue: str, tenant_id: str, entries: list[Any], head_body: Any) -> TenantBacklog:
    events = 0
    for entry in entries:
        text = entry.decode() if isinstance(entry, bytes) else str(entry)
        events += int(text.partition(":")[0] or 0)
    return TenantBacklog(queue, tenant_id, len(entries), events, _age(head_body, time.time()))


def _head_id(entries: list[Any]) -> str | None:
    if not entries:
        return None
    head = entries[0].decode() if isinstance(entries[0], bytes) else str(entries[0])
    return head.partition(":")[2]


def lane_backlogs(client: Any, queues: tuple[str, ...] = LANES) -> list[TenantBacklog]:
    """Backlog and oldest message age of every tenant with messages in the lanes, read with a
    synchronous Redis client."""
    found = []
    for queue in queues:
        tenants = sorted(t.decode() for t in client.smembers(active_key(queue)))
        for tenant_id in tenants:
            entries = client.lrange(sub_queue_key(queue, tenant_id), 0, -1)
            head = _head_id(entries)
            body = client.hget(f"{NAMESPACE}:{queue}.msgs", head) if head else None
            found.append(_backlog(queue, tenant_id, entries, body))
    return found


async def lane_backlogs_async(client: Any, queues: tuple[str, ...] = LANES) -> list[TenantBacklog]:
    """The same as `lane_backlogs`, with an asyncio Redis client."""
    found = []
    for queue in queues:
        tenants = sorted(t.decode() for t in await client.smembers(active_key(queue)))
        for tenant_id in tenants:
            entries = await client.lrange(sub_queue_key(queue, tenant_id), 0, -1)
            head = _head_id(entries)
            body = await client.hget(f"{NAMESPACE}:{queue}.msgs", head) if head else None
            found.append(_backlog(queue, tenant_id, entries, body))
    return found
