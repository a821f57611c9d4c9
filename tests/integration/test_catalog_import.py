"""`recomengine import catalog` as a real subprocess against the test PostgreSQL and Redis."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
from conftest import ROOT, TenantContext, settings_env
from redis.asyncio import Redis

from store import keys
from store.settings import Settings


def run_import(settings: Settings, tenant_id: str, path: Path) -> subprocess.CompletedProcess[str]:
    """Run the import command with the test environment."""
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "import", "catalog", str(path), "--tenant", tenant_id],
        env=settings_env(settings),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def stored(db: asyncpg.Pool, tenant: TenantContext) -> dict[str, asyncpg.Record]:
    """The tenant's products by id."""
    rows = await db.fetch(
        "SELECT * FROM catalog_items WHERE tenant_id = $1", uuid.UUID(tenant.tenant_id)
    )
    return {row["product_id"]: row for row in rows}


CSV = (
    "productId,name,category,price,currency,imageUrl,url,description,available,attributes\n"
    "mug,Blue mug,kitchen,12.50,EUR,https://cdn.example.com/m.png,https://shop.example.com/m,"
    '"A mug, blue",true,"{""color"": ""blue""}"\n'
    "pot,Tea pot,kitchen,30,,,,,false,\n"
    "bad-price,Broken,kitchen,-4,,,,,true,\n"
    'vase,Vase,home,1,,,,"two\nlines",yes,\n'
    "evil,Evil,kitchen,1,,,javascript:alert(1),,true,\n"
    "lamp,Lamp,home,abc,,,,,true,\n"
)


async def test_importing_a_csv_lands_valid_rows_and_reports_rejected_ones_by_line(
    migrated: Settings, tenant: TenantContext, db: asyncpg.Pool, redis: Redis, tmp_path: Path
) -> None:
    path = tmp_path / "catalog.csv"
    path.write_text(CSV, encoding="utf-8")
    result = run_import(migrated, tenant.tenant_id, path)
    assert result.returncode == 1, result.stderr
    assert "imported 3 products, rejected 3 lines" in result.stdout
    assert "line 4: rejected: price: must be zero or more" in result.stderr
    assert "line 7: rejected: url: must be an absolute http(s) URL" in result.stderr
    assert "line 8: rejected: price: must be a number" in result.stderr

    products = await stored(db, tenant)
    assert set(products) == {"mug", "pot", "vase"}
    mug = products["mug"]
    assert (mug["name"], str(mug["price"]), mug["currency"]) == ("Blue mug", "12.5000", "EUR")
    assert mug["attributes"] == {"color": "blue"} and mug["description"] == "A mug, blue"
    assert products["pot"]["currency"] == "USD" and products["pot"]["available"] is False
    assert products["vase"]["available"] is True
    assert products["vase"]["description"] == "two\nlines"
    assert await redis.smembers(keys.catalog_available(tenant.tenant_id)) == {b"mug", b"vase"}
    card = json.loads(await redis.hget(keys.catalog_cards(tenant.tenant_id), "pot") or b"{}")
    assert card["available"] is False and card["name"] == "Tea pot"


async def test_importing_json_lines_upserts_and_later_lines_win(
    migrated: Settings, tenant: TenantContext, db: asyncpg.Pool, redis: Redis, tmp_path: Path
) -> None:
    lines = [
        {"productId": "a", "name": "First A", "price": 1.25, "attributes": {"w": 1.5}},
        {"productId": "b", "name": "B", "price": 2, "available": False},
        "not json at all",
        {"productId": "a", "name": "Second A", "price": 1.5},
        {"productId": "c", "price": 3},
    ]
    path = tmp_path / "catalog.jsonl"
    path.write_text(
        "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n",
        encoding="utf-8",
    )
    result = run_import(migrated, tenant.tenant_id, path)
    assert result.returncode == 1, result.stderr
    assert "line 3: rejected: the line is not valid JSON" in result.stderr
    assert "line 5: rejected: name: is required" in result.stderr
    products = await stored(db, tenant)
    assert set(products) == {"a", "b"}
    assert products["a"]["name"] == "Second A"
    assert await redis.smembers(keys.catalog_available(tenant.tenant_id)) == {b"a"}

    # Importing again updates in place, and a clean file exits 0.
    path.write_text(json.dumps({"productId": "b", "name": "B", "price": 2}) + "\n")
    again = run_import(migrated, tenant.tenant_id, path)
    assert again.returncode == 0, again.stderr
    assert (await stored(db, tenant))["b"]["available"] is True
    assert await redis.sismember(keys.catalog_available(tenant.tenant_id), "b")


def test_importing_for_an_unknown_tenant_fails_and_writes_nothing(
    migrated: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps({"productId": "x", "name": "X", "price": 1}) + "\n")
    result = run_import(migrated, str(uuid.uuid4()), path)
    assert result.returncode == 2
    assert "no tenant" in result.stderr
