"""The ingest queue's message: one tenant's events in message form, versioned. The one
definition the api builds, the broker carries and the ingest actor reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict

# Version 1: positional (tenant_id, events); a message without a version is a version 1
# message written before the field existed.
EVENT_MESSAGE_VERSION = 1
_REQUIRED = ("id", "type", "user", "product", "ts")


class MessageEvent(TypedDict):
    """One event as a queue message carries it: short names, optional fields only when set,
    `flags` last (the ingest gate's script adds a warning to the end of the encoded form)."""

    id: str
    type: str
    user: str
    product: str
    ts: str  # ISO 8601, the text the dedupe digest hashed
    client: NotRequired[bool]  # the id is the client's eventId
    session: NotRequired[str]
    meta: NotRequired[dict[str, Any]]
    price: NotRequired[float]
    placement: NotRequired[str]
    rec: NotRequired[str]
    flags: list[str]


class MalformedMessage(ValueError):
    """The message is not a list of message-form events of a known version; retrying cannot
    help."""


@dataclass(frozen=True, slots=True)
class EventMessage:
    """What one ingest message asks: store these events of this tenant."""

    tenant_id: str
    events: list[MessageEvent]
    version: int = EVENT_MESSAGE_VERSION

    def actor_args(self) -> tuple[str, list[MessageEvent]]:
        """The actor's positional arguments (the events last: see store.ingest_gate)."""
        return (self.tenant_id, self.events)

    def actor_kwargs(self) -> dict[str, int]:
        """The actor's keyword arguments."""
        return {"version": self.version}

    @classmethod
    def read(
        cls, tenant_id: Any, events: Any, version: Any = EVENT_MESSAGE_VERSION
    ) -> EventMessage:
        """The message from a delivery's arguments; MalformedMessage when it is not one."""
        if version != EVENT_MESSAGE_VERSION:
            raise MalformedMessage(f"unknown event message version {version!r}")
        # Comprehensions over every event of every message: this runs for all of them.
        if (
            type(tenant_id) is not str
            or type(events) is not list
            or {type(e) for e in events} - {dict}
            or {type(v) for e in events for v in map(e.get, _REQUIRED)} - {str}
        ):
            raise MalformedMessage(
                "events must be a list of objects with id, type, user, product, ts"
            )
        return cls(tenant_id, events, version)
