"""The collaborative strategy's item half and product factors: the local ridge regression of each
product on its neighbourhood, its dense and sparse Gram paths, and the trend factor."""

from __future__ import annotations

import numpy as np
import pytest

from domain.interactions import InteractionData, build_interactions
from domain.strategies import CollaborativeModel
from domain.strategies.collaborative import _solve_positive_definite

NOW = 1_700_000_000.0
DAY = 86_400.0


def random_shop(seed: int = 4, n_users: int = 90, n_products: int = 40) -> InteractionData:
    """Return purchases of users who each favour a random window of products."""
    rng = np.random.default_rng(seed)
    users, products = [], []
    for u in range(n_users):
        centre = rng.integers(0, n_products)
        for _ in range(rng.integers(3, 12)):
            users.append(f"u{u}")
            products.append(f"p{(centre + rng.integers(-6, 7)) % n_products}")
    times = (NOW - rng.uniform(0, 60 * DAY, len(users))).tolist()
    return build_interactions(users, products, ["purchase"] * len(users), times, now=NOW)


def binary_gram(data: InteractionData) -> np.ndarray:
    """Return the users-in-common counts of every pair of products, shape (n, n)."""
    b = (data.matrix.toarray() > 0).astype(np.float64)
    return b.T @ b


def test_each_products_ridge_weights_solve_the_regression_on_its_nearest_products() -> None:
    data = random_shop()
    k, lam = 8, 5.0
    model = CollaborativeModel(ridge_neighbours=k, ridge_lambda=lam).fit(data)
    gram = binary_gram(data)
    norms = np.sqrt(np.diag(gram))
    cosine = gram / np.outer(norms, norms)
    weights = model.item_weights_.toarray()
    for j in range(data.n_products):
        support = np.flatnonzero(weights[:, j])
        assert 0 < support.size <= k and j not in support
        # The neighbourhood is made of the products of highest cosine with j.
        others = np.setdiff1d(np.arange(data.n_products), np.append(support, j))
        assert cosine[support, j].min() >= cosine[others, j].max() - 1e-9
        a = gram[np.ix_(support, support)] + lam * np.eye(support.size)
        expected = np.linalg.solve(a, gram[support, j])
        np.testing.assert_allclose(weights[support, j], expected, rtol=1e-4, atol=1e-6)


def test_the_sparse_gram_path_gives_the_weights_of_the_dense_one() -> None:
    data = random_shop(seed=9)
    dense = CollaborativeModel(ridge_neighbours=10).fit(data)
    sparse = CollaborativeModel(ridge_neighbours=10, dense_gram_mb=0.0).fit(data)
    assert dense.item_weights_.nnz > 0
    np.testing.assert_allclose(
        sparse.item_weights_.toarray(), dense.item_weights_.toarray(), rtol=1e-4, atol=1e-7
    )


def test_without_ridge_neighbours_the_item_half_scores_with_the_cosine_neighbours() -> None:
    model = CollaborativeModel(ridge_neighbours=0).fit(random_shop())
    assert model.item_weights_ is model.item_neighbours_


def test_the_batched_positive_definite_solve_equals_numpys_solve() -> None:
    rng = np.random.default_rng(2)
    x = rng.random((6, 30, 12))
    a = np.einsum("bui,buj->bij", x, x) + 0.5 * np.eye(12)
    y = rng.random((6, 12))
    expected = np.linalg.solve(a, y[:, :, None])[:, :, 0]
    np.testing.assert_allclose(_solve_positive_definite(a, y), expected, rtol=1e-10)


def trend_shop() -> InteractionData:
    """Return a 100-day history: ten users bought "old" 90 days ago, ten "new" two days ago,
    and one user a day bought "steady"."""
    users, products, times = [], [], []
    for u in range(10):
        users += [f"o{u}", f"n{u}"]
        products += ["old", "new"]
        times += [NOW - 90 * DAY, NOW - 2 * DAY]
    for d in range(100):
        users.append(f"s{d}")
        products.append("steady")
        times.append(NOW - d * DAY - 1.0)
    return build_interactions(users, products, ["purchase"] * len(users), times, now=NOW)


def test_the_trend_factor_compares_recent_users_with_a_steady_share_of_the_history() -> None:
    data = trend_shop()
    model = CollaborativeModel(trend_days=28.0).fit(data)
    trend = {str(p): model.trend_[j] for j, p in enumerate(data.product_ids)}
    span = 99.0 + 1.0 / DAY  # days from the first event to now
    assert trend["new"] == pytest.approx(11.0 / (10 * 28.0 / span + 1.0))
    assert trend["old"] == pytest.approx(1.0 / (10 * 28.0 / span + 1.0))
    assert trend["steady"] == pytest.approx(29.0 / (100 * 28.0 / span + 1.0))
    assert trend["new"] > trend["steady"] > trend["old"]


def test_product_factors_are_one_without_popularity_penalty_and_trend() -> None:
    model = CollaborativeModel(popularity_penalty=0.0, trend_power=0.0).fit(trend_shop())
    np.testing.assert_array_equal(model.product_factors_, 1.0)


def test_a_rising_product_overtakes_an_equally_shared_fading_one() -> None:
    # Both products are shared by u0's only neighbour; "rising" was bought recently.
    users = ["u0", "u1", "u1", "u1", "x0", "x1", "x2"]
    products = ["seed", "seed", "fading", "rising", "fading", "rising", "rising"]
    times = [NOW - 5 * DAY, NOW - 5 * DAY, NOW - 80 * DAY, NOW - 80 * DAY]
    times += [NOW - 79 * DAY, NOW - DAY, NOW - 2 * DAY]
    data = build_interactions(users, products, ["purchase"] * len(users), times, now=NOW)
    flat = CollaborativeModel(trend_power=0.0, popularity_penalty=0.0, item_weight=0.0)
    trending = CollaborativeModel(trend_power=1.0, popularity_penalty=0.0, item_weight=0.0)
    flat_recs = flat.fit(data).recommend(user="u0", n=2)
    recs = trending.fit(data).recommend(user="u0", n=2)
    assert flat_recs[0].score == pytest.approx(flat_recs[1].score)
    assert [r.product_id for r in recs] == ["rising", "fading"]
    assert recs[0].score > recs[1].score


def test_a_lone_best_seller_history_is_scored_by_the_cosine_item_neighbours() -> None:
    users, products = [], []
    for u in range(60):
        block = "a" if u < 30 else "b"
        for t in range(6):
            users.append(f"u{u}")
            products.append(f"{block}{(u * 3 + t) % 40}")
        users.append(f"u{u}")
        products.append("bestseller")
    users.append("solo")
    products.append("bestseller")
    times = [NOW - DAY] * len(users)
    data = build_interactions(users, products, ["purchase"] * len(users), times, now=NOW)
    # The best-seller is left out of the user similarities and is no product's neighbour.
    model = CollaborativeModel(ridge_neighbours=3, max_pair_work=3_000.0).fit(data)
    best = data.product_index["bestseller"]
    assert not model.user_columns_kept_[best]
    assert model.item_weights_[best].nnz == 0
    recs = model.recommend(user="solo", n=5)
    assert recs and all(r.because == ("bestseller",) for r in recs)
    expected = model.item_neighbours_[best]
    assert {r.product_id for r in recs} <= {str(data.product_ids[j]) for j in expected.indices}
