"""Experiments over real HTTP: CRUD, the state machine, the one-running rule (HTTP and the
database index), results from experiment_user_metrics, frozen results, isolation and the
running-experiment projection in Redis."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import numpy as np
import pytest
from conftest import TenantContext
from redis.asyncio import Redis

from domain.experiments.statistics import (
    MetricCaps,
    SequentialDesign,
    UserArrays,
    analyse_experiment,
)
from store import keys
from store.experiments import (
    SEQUENTIAL_PLANNED_USERS_PER_VARIANT,
    read_running_experiment,
    record_experiment_exposure,
    reproject_running_experiments,
)

EXPERIMENT = {
    "name": "Trending vs collaborative on home",
    "placementId": "home",
    "controlStrategy": "trending",
    "variantStrategy": "collaborative",
    "trafficSplit": 50,
    "metric": "ctr",
}
# How to reach each status from a fresh draft.
PATH_TO = {
    "draft": [],
    "running": ["running"],
    "paused": ["running", "paused"],
    "completed": ["running", "completed"],
}
ALLOWED = {
    ("draft", "running"),
    ("running", "paused"),
    ("running", "completed"),
    ("paused", "running"),
    ("paused", "completed"),
}
STATUSES = ["draft", "running", "paused", "completed"]


@pytest.fixture
async def aclient(api_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """An asynchronous HTTP client for tests that also await Redis or PostgreSQL."""
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as http:
        yield http


def _base(tenant: TenantContext) -> str:
    return f"/api/v1/tenants/{tenant.tenant_id}/experiments"


def _create(client: httpx.Client, tenant: TenantContext, **changes: Any) -> dict[str, Any]:
    response = client.post(
        _base(tenant), json={**EXPERIMENT, **changes}, headers=tenant.admin_headers
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def _patch(client: httpx.Client, tenant: TenantContext, exp_id: str, status: str) -> httpx.Response:
    return client.patch(
        f"{_base(tenant)}/{exp_id}", json={"status": status}, headers=tenant.admin_headers
    )


def _drive(client: httpx.Client, tenant: TenantContext, exp_id: str, status: str) -> None:
    for step in PATH_TO[status]:
        response = _patch(client, tenant, exp_id, step)
        assert response.status_code == 200, response.text


def test_a_new_experiment_is_a_draft_with_its_settings(
    client: httpx.Client, tenant: TenantContext
) -> None:
    created = _create(client, tenant)
    assert created["status"] == "draft"
    assert {k: created[k] for k in EXPERIMENT} == EXPERIMENT
    assert created["revenueCap"] is None and created["sequential"] is False
    assert created["startedAt"] is None and created["completedAt"] is None
    uuid.UUID(created["id"])


def test_experiment_crud_round_trips_while_draft(
    client: httpx.Client, tenant: TenantContext
) -> None:
    headers = tenant.admin_headers
    created = _create(client, tenant, revenueCap=250.0, sequential=True)
    url = f"{_base(tenant)}/{created['id']}"
    assert client.get(url, headers=headers).json() == created

    changed = {**EXPERIMENT, "name": "Renamed", "trafficSplit": 20, "metric": "conversion_rate"}
    replaced = client.put(url, json=changed, headers=headers)
    assert replaced.status_code == 200, replaced.text
    body = replaced.json()
    assert body["name"] == "Renamed" and body["trafficSplit"] == 20
    assert body["metric"] == "conversion_rate"
    # PUT replaces the whole settings: the cap and the sequential mode were left out.
    assert body["revenueCap"] is None and body["sequential"] is False
    assert client.get(url, headers=headers).json() == body

    assert client.delete(url, headers=headers).status_code == 204
    assert client.get(url, headers=headers).status_code == 404
    assert client.delete(url, headers=headers).status_code == 404


def test_the_experiment_list_pages_and_filters(client: httpx.Client, tenant: TenantContext) -> None:
    made = [_create(client, tenant, name=f"e{i}", placementId=f"p{i}")["id"] for i in range(3)]
    _drive(client, tenant, made[1], "running")
    headers = tenant.admin_headers
    first = client.get(_base(tenant), params={"limit": 2}, headers=headers).json()
    assert [e["id"] for e in first["data"]] == made[:2]
    second = client.get(
        _base(tenant), params={"limit": 2, "cursor": first["nextCursor"]}, headers=headers
    ).json()
    assert [e["id"] for e in second["data"]] == made[2:] and second["nextCursor"] is None
    running = client.get(_base(tenant), params={"status": "running"}, headers=headers).json()
    assert [e["id"] for e in running["data"]] == [made[1]]
    on_p2 = client.get(_base(tenant), params={"placementId": "p2"}, headers=headers).json()
    assert [e["id"] for e in on_p2["data"]] == [made[2]]
    bad = client.get(_base(tenant), params={"cursor": "!!"}, headers=headers)
    assert bad.status_code == 422


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"placementId": "home page"}, "placementId"),
        ({"controlStrategy": "random"}, "controlStrategy"),
        ({"variantStrategy": "popular"}, "variantStrategy"),
        ({"variantStrategy": "trending"}, ""),
        ({"trafficSplit": -1}, "trafficSplit"),
        ({"trafficSplit": 101}, "trafficSplit"),
        ({"trafficSplit": "50"}, "trafficSplit"),
        ({"trafficSplit": 50.5}, "trafficSplit"),
        ({"metric": "revenue"}, "metric"),
        ({"revenueCap": 0}, "revenueCap"),
        ({"revenueCap": -5}, "revenueCap"),
        # Below numeric(14, 4)'s smallest step it would be stored as 0 and break the results.
        ({"revenueCap": 0.00004}, "revenueCap"),
        ({"revenueCap": False}, "revenueCap"),
        ({"sequential": "yes"}, "sequential"),
        ({"winner": "variant"}, "winner"),
    ],
)
def test_every_experiment_rule_is_enforced_and_nothing_is_stored(
    client: httpx.Client, tenant: TenantContext, change: dict[str, Any], field: str
) -> None:
    response = client.post(
        _base(tenant), json={**EXPERIMENT, **change}, headers=tenant.admin_headers
    )
    assert response.status_code == 422, response.text
    assert field in [e["field"] for e in response.json()["errors"]]
    assert client.get(_base(tenant), headers=tenant.admin_headers).json()["data"] == []


def test_missing_settings_are_field_errors(client: httpx.Client, tenant: TenantContext) -> None:
    response = client.post(_base(tenant), json={"name": "x"}, headers=tenant.admin_headers)
    assert response.status_code == 422
    fields = {e["field"] for e in response.json()["errors"]}
    assert {"placementId", "controlStrategy", "variantStrategy", "trafficSplit", "metric"} <= fields


@pytest.mark.parametrize("status", ["running", "paused", "completed"])
def test_only_drafts_can_be_edited_or_deleted(
    client: httpx.Client, tenant: TenantContext, status: str
) -> None:
    created = _create(client, tenant)
    _drive(client, tenant, created["id"], status)
    url = f"{_base(tenant)}/{created['id']}"
    edited = client.put(url, json={**EXPERIMENT, "name": "Changed"}, headers=tenant.admin_headers)
    assert edited.status_code == 409
    assert edited.headers["content-type"].startswith("application/problem+json")
    assert client.delete(url, headers=tenant.admin_headers).status_code == 409
    after = client.get(url, headers=tenant.admin_headers).json()
    assert after["name"] == EXPERIMENT["name"] and after["status"] == status


@pytest.mark.parametrize("target", STATUSES)
@pytest.mark.parametrize("current", STATUSES)
def test_every_status_change_follows_the_state_machine(
    client: httpx.Client, tenant: TenantContext, current: str, target: str
) -> None:
    created = _create(client, tenant)
    _drive(client, tenant, created["id"], current)
    response = _patch(client, tenant, created["id"], target)
    url = f"{_base(tenant)}/{created['id']}"
    if (current, target) in ALLOWED:
        assert response.status_code == 200, response.text
        assert response.json()["status"] == target
    else:
        assert response.status_code == 409, response.text
        assert client.get(url, headers=tenant.admin_headers).json()["status"] == current


def test_starting_stamps_started_at_once_and_completing_stamps_completed_at(
    client: httpx.Client, tenant: TenantContext
) -> None:
    created = _create(client, tenant)
    started = _patch(client, tenant, created["id"], "running").json()
    assert started["startedAt"] is not None and started["completedAt"] is None
    _patch(client, tenant, created["id"], "paused")
    resumed = _patch(client, tenant, created["id"], "running").json()
    assert resumed["startedAt"] == started["startedAt"]
    completed = _patch(client, tenant, created["id"], "completed").json()
    assert completed["completedAt"] is not None


def test_an_unknown_status_is_a_validation_error(
    client: httpx.Client, tenant: TenantContext
) -> None:
    created = _create(client, tenant)
    response = _patch(client, tenant, created["id"], "archived")
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["status"]


def test_a_second_running_experiment_on_a_placement_is_a_conflict(
    client: httpx.Client, tenant: TenantContext
) -> None:
    first = _create(client, tenant)
    second = _create(client, tenant, name="Second")
    elsewhere = _create(client, tenant, name="Elsewhere", placementId="cart")
    assert _patch(client, tenant, first["id"], "running").status_code == 200
    refused = _patch(client, tenant, second["id"], "running")
    assert refused.status_code == 409
    assert first["id"] in refused.json()["detail"]
    # Another placement is independent.
    assert _patch(client, tenant, elsewhere["id"], "running").status_code == 200
    # Pausing the first frees the placement; resuming it is then the conflict.
    assert _patch(client, tenant, first["id"], "paused").status_code == 200
    assert _patch(client, tenant, second["id"], "running").status_code == 200
    assert _patch(client, tenant, first["id"], "running").status_code == 409


async def test_the_database_refuses_two_running_experiments_on_one_placement(
    db: asyncpg.Pool, tenant: TenantContext
) -> None:
    insert = (
        "INSERT INTO experiments (tenant_id, name, placement_id, control_strategy, "
        "variant_strategy, traffic_split, metric, status) "
        "VALUES ($1, $2, 'home', 'trending', 'collaborative', 50, 'ctr', 'running')"
    )
    await db.execute(insert, tenant.tenant_id, "first")
    with pytest.raises(asyncpg.UniqueViolationError):
        await db.execute(insert, tenant.tenant_id, "second")


def test_another_tenants_experiments_are_not_found(
    client: httpx.Client, tenant: TenantContext, other_tenant: TenantContext
) -> None:
    created = _create(client, tenant)
    foreign = other_tenant.admin_headers
    url = f"{_base(tenant)}/{created['id']}"
    assert client.get(_base(tenant), headers=foreign).status_code == 404
    assert client.post(_base(tenant), json=EXPERIMENT, headers=foreign).status_code == 404
    assert client.get(url, headers=foreign).status_code == 404
    assert client.put(url, json=EXPERIMENT, headers=foreign).status_code == 404
    assert client.patch(url, json={"status": "running"}, headers=foreign).status_code == 404
    assert client.delete(url, headers=foreign).status_code == 404
    assert client.get(f"{url}/results", headers=foreign).status_code == 404
    # The experiment id under the other tenant's own path is not found either.
    own = f"{_base(other_tenant)}/{created['id']}"
    assert client.get(own, headers=foreign).status_code == 404
    assert client.patch(own, json={"status": "running"}, headers=foreign).status_code == 404
    assert client.get(f"{own}/results", headers=foreign).status_code == 404
    assert client.get(url, headers=tenant.admin_headers).json()["status"] == "draft"


def test_a_malformed_experiment_id_is_not_found(
    client: httpx.Client, tenant: TenantContext
) -> None:
    assert (
        client.get(f"{_base(tenant)}/not-a-uuid", headers=tenant.admin_headers).status_code == 404
    )


async def test_a_suspended_tenant_cannot_create_or_start_experiments(
    aclient: httpx.AsyncClient, tenant: TenantContext, db: asyncpg.Pool
) -> None:
    created = (
        await aclient.post(_base(tenant), json=EXPERIMENT, headers=tenant.admin_headers)
    ).json()
    await db.execute("UPDATE tenants SET status = 'suspended' WHERE id = $1", tenant.tenant_id)
    headers = tenant.admin_headers
    assert (await aclient.post(_base(tenant), json=EXPERIMENT, headers=headers)).status_code == 403
    url = f"{_base(tenant)}/{created['id']}"
    assert (
        await aclient.patch(url, json={"status": "running"}, headers=headers)
    ).status_code == 403
    assert (await aclient.get(url, headers=headers)).json()["status"] == "draft"


async def test_the_running_experiment_is_projected_on_start_and_resume_and_cleared_otherwise(
    aclient: httpx.AsyncClient, tenant: TenantContext, redis: Redis
) -> None:
    headers = tenant.admin_headers
    created = (await aclient.post(_base(tenant), json=EXPERIMENT, headers=headers)).json()
    url = f"{_base(tenant)}/{created['id']}"
    expected = {
        "experimentId": created["id"],
        "controlStrategy": "trending",
        "variantStrategy": "collaborative",
        "trafficSplit": 50,
    }

    async def projected() -> Any:
        return await read_running_experiment(redis, tenant_id=tenant.tenant_id, placement_id="home")

    assert await projected() is None
    await aclient.patch(url, json={"status": "running"}, headers=headers)
    assert await projected() == expected
    raw = await redis.get(keys.running_experiment(tenant.tenant_id, "home"))
    assert raw is not None and json.loads(raw) == expected
    await aclient.patch(url, json={"status": "paused"}, headers=headers)
    assert await projected() is None
    await aclient.patch(url, json={"status": "running"}, headers=headers)
    assert await projected() == expected
    await aclient.patch(url, json={"status": "completed"}, headers=headers)
    assert await projected() is None


async def test_pausing_an_experiment_never_clears_another_experiments_projection(
    aclient: httpx.AsyncClient, tenant: TenantContext, redis: Redis
) -> None:
    headers = tenant.admin_headers
    created = (await aclient.post(_base(tenant), json=EXPERIMENT, headers=headers)).json()
    url = f"{_base(tenant)}/{created['id']}"
    await aclient.patch(url, json={"status": "running"}, headers=headers)
    # As if another experiment had taken the placement's projection meanwhile.
    newer = {"experimentId": str(uuid.uuid4()), "controlStrategy": "trending"}
    await redis.set(keys.running_experiment(tenant.tenant_id, "home"), json.dumps(newer))
    await aclient.patch(url, json={"status": "paused"}, headers=headers)
    assert (
        await read_running_experiment(redis, tenant_id=tenant.tenant_id, placement_id="home")
        == newer
    )


def _user_data(seed: int, users: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    impressions = rng.integers(1, 12, size=users)
    clicks = rng.binomial(impressions, 0.15)
    purchases = rng.binomial(clicks, 0.3)
    revenue = np.round(purchases * rng.uniform(5, 120, size=users), 2)
    return {
        "impressions": impressions,
        "clicks": clicks,
        "purchases": purchases,
        "revenue": revenue,
    }


async def _seed_metrics(
    db: asyncpg.Pool,
    *,
    tenant_id: str,
    experiment_id: str,
    variant: str,
    data: dict[str, Any],
    prefix: str = "",
) -> None:
    await db.executemany(
        "INSERT INTO experiment_user_metrics (tenant_id, experiment_id, variant, user_id, "
        "impressions, clicks, purchases, revenue) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        [
            (
                tenant_id,
                uuid.UUID(experiment_id),
                variant,
                f"{prefix}{variant}-user-{i}",
                int(data["impressions"][i]),
                int(data["clicks"][i]),
                int(data["purchases"][i]),
                float(data["revenue"][i]),
            )
            for i in range(len(data["impressions"]))
        ],
    )


def _assert_close(actual: Any, expected: Any, path: str = "") -> None:
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and set(actual) == set(expected), path
        for key in expected:
            _assert_close(actual[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, list | tuple):
        assert isinstance(actual, list) and len(actual) == len(expected), path
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            _assert_close(a, e, f"{path}[{i}]")
    elif isinstance(expected, float) and not isinstance(expected, bool):
        assert actual == pytest.approx(expected, rel=1e-9, abs=1e-12), path
    else:
        assert actual == expected, path


@pytest.mark.parametrize(
    ("extra", "caps", "sequential"),
    [
        ({}, MetricCaps(), None),
        (
            {"revenueCap": 60.0, "sequential": True, "metric": "revenue_per_visitor"},
            MetricCaps(revenue=60.0),
            SequentialDesign(planned_users_per_variant=SEQUENTIAL_PLANNED_USERS_PER_VARIANT),
        ),
    ],
)
async def test_results_from_seeded_user_metrics_equal_the_domain_analysis(
    aclient: httpx.AsyncClient,
    tenant: TenantContext,
    db: asyncpg.Pool,
    extra: dict[str, Any],
    caps: MetricCaps,
    sequential: SequentialDesign | None,
) -> None:
    headers = tenant.admin_headers
    body = {**EXPERIMENT, "trafficSplit": 40, **extra}
    created = (await aclient.post(_base(tenant), json=body, headers=headers)).json()
    url = f"{_base(tenant)}/{created['id']}"
    await aclient.patch(url, json={"status": "running"}, headers=headers)
    control, variant = _user_data(1, 180), _user_data(2, 120)
    for arm, data in (("control", control), ("variant", variant)):
        await _seed_metrics(
            db, tenant_id=tenant.tenant_id, experiment_id=created["id"], variant=arm, data=data
        )

    response = await aclient.get(f"{url}/results", headers=headers)
    assert response.status_code == 200, response.text
    answer = response.json()
    expected = analyse_experiment(
        control=UserArrays(**control),
        variant=UserArrays(**variant),
        traffic_split=40,
        primary_metric=body["metric"],
        caps=caps,
        sequential=sequential,
    ).to_dict(status="running")
    assert answer["experimentId"] == created["id"] and answer["frozen"] is False
    _assert_close({k: answer[k] for k in expected}, expected)
    assert answer["variants"]["control"]["users"] == 180
    assert answer["variants"]["variant"]["buyers"] == int((variant["purchases"] > 0).sum())


async def test_results_of_an_experiment_without_data_are_empty_not_an_error(
    aclient: httpx.AsyncClient, tenant: TenantContext
) -> None:
    headers = tenant.admin_headers
    created = (await aclient.post(_base(tenant), json=EXPERIMENT, headers=headers)).json()
    response = await aclient.get(f"{_base(tenant)}/{created['id']}/results", headers=headers)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["status"] == "draft" and answer["lowConfidence"] is True
    assert answer["variants"]["control"]["users"] == 0
    assert answer["tests"]["ctr"]["pValue"] is None
    assert set(answer["tests"]) >= {"ctr", "conversionRate", "revenuePerVisitor"}
    assert set(answer["srm"]) >= {"pValue", "mismatch"}


async def test_completing_freezes_the_results_so_later_metrics_do_not_change_them(
    aclient: httpx.AsyncClient, tenant: TenantContext, db: asyncpg.Pool
) -> None:
    headers = tenant.admin_headers
    created = (await aclient.post(_base(tenant), json=EXPERIMENT, headers=headers)).json()
    url = f"{_base(tenant)}/{created['id']}"
    await aclient.patch(url, json={"status": "running"}, headers=headers)
    for arm, seed in (("control", 3), ("variant", 4)):
        await _seed_metrics(
            db,
            tenant_id=tenant.tenant_id,
            experiment_id=created["id"],
            variant=arm,
            data=_user_data(seed, 50),
        )
    live = (await aclient.get(f"{url}/results", headers=headers)).json()
    await aclient.patch(url, json={"status": "completed"}, headers=headers)
    frozen = (await aclient.get(f"{url}/results", headers=headers)).json()
    assert frozen["status"] == "completed" and frozen["frozen"] is True
    assert frozen["variants"] == live["variants"] and frozen["tests"] == live["tests"]

    rows = await db.fetch(
        "SELECT variant, users, clicks, results FROM experiment_results "
        "WHERE experiment_id = $1 ORDER BY variant",
        uuid.UUID(created["id"]),
    )
    assert [r["variant"] for r in rows] == ["control", "variant"]
    assert [r["users"] for r in rows] == [50, 50]
    assert rows[0]["clicks"] == live["variants"]["control"]["clicks"]
    assert rows[0]["results"] == frozen

    await _seed_metrics(
        db,
        tenant_id=tenant.tenant_id,
        experiment_id=created["id"],
        variant="variant",
        prefix="late-",
        data={"impressions": [100], "clicks": [90], "purchases": [9], "revenue": [999.0]},
    )
    await db.execute(
        "UPDATE experiment_user_metrics SET clicks = clicks + 1 WHERE experiment_id = $1",
        uuid.UUID(created["id"]),
    )
    assert (await aclient.get(f"{url}/results", headers=headers)).json() == frozen


async def test_exposure_counts_add_up_per_user_only_for_the_tenants_live_experiment(
    aclient: httpx.AsyncClient, tenant: TenantContext, other_tenant: TenantContext, db: asyncpg.Pool
) -> None:
    headers = tenant.admin_headers
    created = (await aclient.post(_base(tenant), json=EXPERIMENT, headers=headers)).json()
    exp_id = created["id"]
    count = {"tenant_id": tenant.tenant_id, "experiment_id": exp_id, "user_id": "u1"}
    # A draft receives no traffic, so nothing is counted yet.
    assert not await record_experiment_exposure(db, variant="control", impressions=1, **count)
    await aclient.patch(f"{_base(tenant)}/{exp_id}", json={"status": "running"}, headers=headers)

    assert await record_experiment_exposure(db, variant="control", impressions=3, **count)
    assert await record_experiment_exposure(db, variant="control", clicks=1, **count)
    assert await record_experiment_exposure(
        db, variant="control", purchases=1, revenue=19.99, **count
    )
    foreign = {**count, "tenant_id": other_tenant.tenant_id}
    assert not await record_experiment_exposure(db, variant="control", impressions=5, **foreign)
    assert not await record_experiment_exposure(db, variant="other", impressions=5, **count)

    row = await db.fetchrow(
        "SELECT variant, impressions, clicks, purchases, revenue FROM experiment_user_metrics "
        "WHERE experiment_id = $1 AND user_id = 'u1'",
        uuid.UUID(exp_id),
    )
    assert row is not None
    assert dict(row) == {
        "variant": "control",
        "impressions": 3,
        "clicks": 1,
        "purchases": 1,
        "revenue": Decimal("19.9900"),
    }
    results = (await aclient.get(f"{_base(tenant)}/{exp_id}/results", headers=headers)).json()
    assert results["variants"]["control"]["impressions"] == 3
    assert results["variants"]["control"]["revenue"] == pytest.approx(19.99)


def test_the_openapi_document_lists_every_experiment_route(client: httpx.Client) -> None:
    paths = client.get("/api/v1/openapi.json").json()["paths"]
    assert {"get", "post"} <= paths["/api/v1/tenants/{tenant_id}/experiments"].keys()
    assert {"get", "put", "patch", "delete"} <= paths[
        "/api/v1/tenants/{tenant_id}/experiments/{experiment_id}"
    ].keys()
    assert "get" in paths["/api/v1/tenants/{tenant_id}/experiments/{experiment_id}/results"]


async def test_reprojecting_a_tenant_restores_only_its_running_experiments(
    aclient: httpx.AsyncClient, tenant: TenantContext, redis: Redis, db: asyncpg.Pool
) -> None:
    headers = tenant.admin_headers
    running = (await aclient.post(_base(tenant), json=EXPERIMENT, headers=headers)).json()
    paused = (
        await aclient.post(
            _base(tenant), json={**EXPERIMENT, "placementId": "cart"}, headers=headers
        )
    ).json()
    for exp, steps in ((running, ["running"]), (paused, ["running", "paused"])):
        for step in steps:
            await aclient.patch(
                f"{_base(tenant)}/{exp['id']}", json={"status": step}, headers=headers
            )
    await redis.delete(keys.running_experiment(tenant.tenant_id, "home"))
    assert await reproject_running_experiments(db, redis, tenant_id=tenant.tenant_id) == 1
    home = await read_running_experiment(redis, tenant_id=tenant.tenant_id, placement_id="home")
    assert home is not None and home["experimentId"] == running["id"]
    assert (
        await read_running_experiment(redis, tenant_id=tenant.tenant_id, placement_id="cart")
        is None
    )
