"""One cursor format for every cursor-paginated list (`?cursor=` -> `{data, nextCursor}`):
opaque to clients, base64url without padding of the JSON `{"k": kind, "a": [position...]}`,
where `kind` names the list (a cursor of one list is refused by another) and the position is
the sort key of the last item served, as strings."""

from __future__ import annotations

import base64
import binascii
import json


def encode_cursor(kind: str, *after: str) -> str:
    """A cursor resuming the `kind` list after the item whose sort key is `after`."""
    raw = json.dumps({"k": kind, "a": list(after)}, ensure_ascii=False, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode("utf-8")).decode("ascii").rstrip("=")


def decode_cursor(cursor: str, kind: str, *, arity: int) -> tuple[str, ...] | None:
    """The sort key a cursor of the `kind` list resumes after (`arity` strings), or None when
    it is not such a cursor."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")).decode("utf-8"))
    except (ValueError, UnicodeError, binascii.Error):
        return None
    if not isinstance(data, dict) or data.get("k") != kind:
        return None
    after = data.get("a")
    if (
        not isinstance(after, list)
        or len(after) != arity
        or not all(isinstance(value, str) for value in after)
    ):
        return None
    return tuple(after)
