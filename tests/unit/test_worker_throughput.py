"""The per-minute throughput counts of the operators' console: the current rate and the hour."""

from __future__ import annotations

from workers.metrics import THROUGHPUT_MINUTES, _throughput, recent_rate, throughput_key


def test_the_rate_is_this_minute_plus_the_part_of_the_last_still_in_the_window() -> None:
    assert recent_rate([0, 60, 10], elapsed=0.25) == 10 + 60 * 0.75
    assert recent_rate([60, 0], elapsed=0.0) == 0 + 60
    assert recent_rate([60, 0], elapsed=1.0) == 0
    assert recent_rate([7], elapsed=0.5) == 7
    assert recent_rate([], elapsed=0.5) == 0


def test_each_queue_reads_its_own_fields_of_each_minute_and_missing_minutes_are_zero() -> None:
    first = 29_000_000
    rows: list[dict[bytes, bytes]] = [{} for _ in range(THROUGHPUT_MINUTES)]
    rows[-2] = {b"ingest:processed": b"40", b"catalog:processed": b"3"}
    rows[-1] = {b"ingest:processed": b"6", b"ingest:failed": b"2"}
    now = (first + THROUGHPUT_MINUTES - 1) * 60 + 30  # half-way through the last minute
    ingest, catalog = _throughput(["ingest", "catalog"], first, rows, now)
    assert ingest.queue == "ingest" and len(ingest.minutes) == THROUGHPUT_MINUTES
    assert ingest.minutes[0] == first and ingest.minutes[-1] == first + THROUGHPUT_MINUTES - 1
    assert sum(ingest.processed) == 46 and sum(ingest.failed) == 2
    assert ingest.processed_per_minute == 6 + 40 * 0.5 and ingest.failed_per_minute == 2
    assert sum(catalog.processed) == 3 and sum(catalog.failed) == 0
    assert catalog.processed_per_minute == 1.5


def test_a_minute_s_counts_live_under_a_key_named_by_the_minute() -> None:
    assert throughput_key(29_000_000) == "recomengine:throughput:29000000"
