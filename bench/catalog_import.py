"""Time `recomengine import catalog` on generated products against throwaway servers.

    .venv/bin/python -m bench.catalog_import [--items 100000] [--format csv|jsonl]

Starts its own PostgreSQL and Redis on free ports in a temporary folder (like the tests), writes
the file, runs the real command as a subprocess and prints the wall time and the rate. Then it
checks that every product landed in PostgreSQL and in the Redis projections.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import random
import sys
import time
from pathlib import Path

from bench.harness import local_platform, make_bench_tenant
from store import keys
from store.db import create_pool
from store.redis import create_redis
from store.settings import Settings

WORDS = (
    "oak walnut steel linen wool cotton ceramic glass leather bamboo copper marble velvet "
    "lamp chair table mug vase rug shelf bowl pillow blanket kettle clock mirror basket"
).split()
CATEGORIES = ["kitchen", "living", "bedroom", "garden", "office", "bath", "kids", "outdoor"]


def write_items(path: Path, count: int, file_format: str, seed: int = 7) -> None:
    """`count` realistic products: names, descriptions, attributes, ~10% unavailable."""
    rng = random.Random(seed)
    fields = [
        "productId",
        "name",
        "category",
        "price",
        "currency",
        "imageUrl",
        "url",
        "description",
        "available",
        "attributes",
    ]
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle) if file_format == "csv" else None
        if writer is not None:
            writer.writerow(fields)
        for n in range(count):
            words = rng.sample(WORDS, 3)
            row = {
                "productId": f"sku-{n:07d}",
                "name": " ".join(words).title(),
                "category": rng.choice(CATEGORIES),
                "price": round(rng.uniform(1, 500), 2),
                "currency": "EUR",
                "imageUrl": f"https://cdn.example.com/img/{n}.jpg",
                "url": f"https://shop.example.com/p/{n}",
                "description": " ".join(rng.choices(WORDS, k=30)),
                "available": rng.random() > 0.1,
                "attributes": {"material": words[0], "colour": rng.choice(WORDS), "n": n},
            }
            if writer is not None:
                writer.writerow(
                    [
                        json.dumps(row[f])
                        if f == "attributes"
                        else str(row[f]).lower()
                        if f == "available"
                        else row[f]
                        for f in fields
                    ]
                )
            else:
                handle.write(json.dumps(row) + "\n")


async def make_tenant(settings: Settings) -> str:
    """A bench admin and tenant."""
    pool = await create_pool(settings, min_size=1, max_size=1)
    try:
        return (await make_bench_tenant(pool, settings)).tenant_id
    finally:
        await pool.close()


async def check(settings: Settings, tenant_id: str) -> tuple[int, int, int]:
    """(rows in PostgreSQL, cards in Redis, available ids in Redis)."""
    pool = await create_pool(settings, min_size=1, max_size=1)
    redis = create_redis(settings)
    try:
        rows = await pool.fetchval(
            "SELECT count(*) FROM catalog_items WHERE tenant_id = $1::uuid", tenant_id
        )
        cards = await redis.hlen(keys.catalog_cards(tenant_id))
        available = await redis.scard(keys.catalog_available(tenant_id))
        return int(rows), int(cards), int(available)
    finally:
        await redis.aclose()
        await pool.close()


def main() -> int:
    """Run the benchmark and print the figure."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--format", choices=["csv", "jsonl"], default="csv")
    args = parser.parse_args()

    with local_platform("recomengine-bench-") as platform:
        settings = platform.settings
        tenant_id = asyncio.run(make_tenant(settings))
        path = platform.workdir / f"catalog.{args.format}"
        write_items(path, args.items, args.format)
        command = ["import", "catalog", str(path), "--tenant", tenant_id, "--no-progress"]
        started = time.perf_counter()
        result = platform.run_cli(command)
        seconds = time.perf_counter() - started
        if result.returncode != 0:
            print(result.stdout, result.stderr, file=sys.stderr)
            return 1
        rows, cards, available = asyncio.run(check(settings, tenant_id))
        size_mb = path.stat().st_size / 1e6
        print(f"file: {args.items} items, {args.format}, {size_mb:.1f} MB")
        print(f"command said: {result.stdout.strip()}")
        print(f"wall time (process start to exit): {seconds:.1f} s = {args.items / seconds:,.0f}/s")
        print(f"landed: {rows} rows, {cards} cards, {available} available ids")
        return 0 if rows == cards == args.items else 1


if __name__ == "__main__":
    sys.exit(main())
