"""Deterministic variant assignment: the same user sees the same arm of an experiment forever."""

from __future__ import annotations

import hashlib
from typing import Final, Literal

Variant = Literal["control", "variant"]

BUCKET_COUNT: Final = 10_000
"""Buckets a user hashes into; the traffic split (percent) maps to split * 100 buckets."""


def assignment_bucket(*, experiment_id: str, user_id: str) -> int:
    """Return the user's bucket in [0, 10000) for this experiment.

    The bucket is ``int(sha256(experiment_id + ":" + user_id).hexdigest(), 16) % 10000``.
    The ``":"`` keeps ("ab", "c") and ("a", "bc") apart; the whole digest is read as one
    big-endian integer so that SQL or another language can reproduce the bucket exactly.
    """
    key = f"{experiment_id}:{user_id}".encode()
    digest = hashlib.sha256(key).digest()
    return int.from_bytes(digest, "big") % BUCKET_COUNT


def assign_variant(*, experiment_id: str, user_id: str, traffic_split: int) -> Variant:
    """Return "variant" when the user's bucket is below traffic_split * 100, else "control"."""
    _check_traffic_split(traffic_split)
    bucket = assignment_bucket(experiment_id=experiment_id, user_id=user_id)
    return "variant" if bucket < traffic_split * (BUCKET_COUNT // 100) else "control"


def _check_traffic_split(traffic_split: int) -> None:
    # bool is an int subclass; True would silently mean 1 %.
    if isinstance(traffic_split, bool) or not isinstance(traffic_split, int):
        raise TypeError(f"traffic_split must be an int percentage, got {traffic_split!r}")
    if not 0 <= traffic_split <= 100:
        raise ValueError(f"traffic_split must be within 0..100, got {traffic_split}")
