"""The sparse block machinery that lets training scale: top-k from stored entries, work budgets,
and models that stay exact under their budget and keep working above it."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from domain.interactions import _index, build_interactions
from domain.strategies import CollaborativeModel, ContentModel, FrequentlyBoughtTogetherModel
from domain.strategies.base import budget_mask, sparse_top_k, top_k_per_row

NOW = 1_700_000_000.0


def random_sparse(seed: int, shape: tuple[int, int] = (40, 60)) -> sp.csr_matrix:
    """Return a random float32 CSR matrix with distinct positive values."""
    rng = np.random.default_rng(seed)
    m = sp.random(*shape, density=0.3, random_state=rng, format="csr", dtype=np.float32)
    m.data = rng.permutation(m.data.size).astype(np.float32) + 1.0
    return m


def test_sparse_top_k_equals_the_dense_top_k_of_the_same_rows() -> None:
    m = random_sparse(1)
    dense = m.toarray()
    dense[dense == 0] = -np.inf
    for k in (1, 5, 60):
        d_idx, d_val = top_k_per_row(dense, k)
        s_idx, s_val = sparse_top_k(m, k)
        np.testing.assert_array_equal(s_val, d_val.astype(np.float32))
        found = np.isfinite(d_val)
        np.testing.assert_array_equal(s_idx[found], d_idx[found])


def test_sparse_top_k_pads_short_rows_and_ignores_stored_minus_infinity() -> None:
    m = sp.csr_matrix(np.array([[0, 3, 0, 1], [0, 0, 0, 0], [2, 0, 5, 0]], dtype=np.float32))
    m.data[m.data == 1] = -np.inf
    idx, val = sparse_top_k(m, 3)
    assert idx[0, 0] == 1 and val[0, 0] == 3 and np.isneginf(val[0, 1:]).all()
    assert np.isneginf(val[1]).all()
    assert idx[2, :2].tolist() == [2, 0] and val[2, :2].tolist() == [5, 2]


def test_a_budget_that_fits_keeps_every_column() -> None:
    counts = np.array([50, 3, 7])
    assert budget_mask(counts, float((counts**2).sum()), n_rows=100).all()
    assert budget_mask(counts, np.inf, n_rows=100).all()
    # A result of at most n_rows ** 2 pairs is small enough whatever the columns cost.
    assert budget_mask(counts, 100.0, n_rows=10).all()


def test_a_tight_budget_drops_the_most_widely_held_columns_first() -> None:
    counts = np.array([5, 40, 3, 30, 2])
    keep = budget_mask(counts, 100.0, n_rows=1_000)
    assert keep.tolist() == [True, False, True, False, True]
    assert (counts[keep] ** 2).sum() <= 100


def block_shop(n_users: int = 60) -> tuple[list[str], list[str], list[str], list[float]]:
    """Return events of two user blocks browsing windows of their own 40 products, plus one
    best-seller everybody buys."""
    users, products, types, times = [], [], [], []
    for u in range(n_users):
        block = "a" if u < n_users // 2 else "b"
        for t in range(6):
            users.append(f"u{u}")
            products.append(f"{block}{(u * 3 + t) % 40}")
            types.append("product_viewed")
            times.append(NOW - 86_400.0 + u)
        users.append(f"u{u}")
        products.append("bestseller")
        types.append("purchase")
        times.append(NOW - 3_600.0)
    return users, products, types, times


def test_collaborative_under_a_tight_budget_drops_the_best_seller_and_stays_in_the_block() -> None:
    users, products, types, times = block_shop()
    data = build_interactions(users, products, types, times, now=NOW)
    exact = CollaborativeModel(item_weight=0.0).fit(data)
    # 60 users: at most 3,600 pairs; the best-seller alone costs 60 ** 2 of them.
    tight = CollaborativeModel(item_weight=0.0, max_pair_work=3_000.0).fit(data)
    assert exact.user_columns_kept_.all()
    assert data.product_ids[~tight.user_columns_kept_].tolist() == ["bestseller"]
    for u in range(60):
        recs = [r.product_id for r in tight.recommend(user=f"u{u}", n=5)]
        block = "a" if u < 30 else "b"
        assert recs and all(r.startswith(block) for r in recs), (u, recs)


def test_content_neighbours_keep_exact_cosines_when_common_features_stop_making_candidates() -> (
    None
):
    rng = np.random.default_rng(3)
    catalog = [
        {
            "productId": f"p{j}",
            "name": f"thing {j % 40} {['red', 'blue'][j % 2]}",
            "category": f"Cat{j % 3} > Sub{j % 30}",
            "price": float(rng.uniform(1, 100)),
            "attributes": {"brand": f"b{j % 25}"},
        }
        for j in range(600)
    ]
    exact = ContentModel(max_pairs_per_product=10**9).fit(catalog)
    pruned = ContentModel(max_pairs_per_product=100).fit(catalog)
    assert pruned.candidate_features_.sum() < exact.candidate_features_.sum()
    full = (exact.features_ @ exact.features_.T).toarray()
    coo = pruned.neighbours_.tocoo()
    np.testing.assert_allclose(coo.data, full[coo.row, coo.col], rtol=1e-5)
    # A product's own leaf category still brings its nearest products.
    assert (np.diff(pruned.neighbours_.indptr) > 0).all()


def test_fbt_sparse_counts_give_the_same_partners_at_any_block_size() -> None:
    rng = np.random.default_rng(5)
    n = 400
    users = [f"u{rng.integers(0, 80)}" for _ in range(n)]
    products = [f"p{rng.integers(0, 30)}" for _ in range(n)]
    times = (NOW - rng.uniform(0, 20 * 86_400.0, n)).tolist()
    sessions = [f"s{rng.integers(0, 120)}" for _ in range(n)]
    data = build_interactions(users, products, ["purchase"] * n, times, session_ids=sessions)
    small = FrequentlyBoughtTogetherModel(block_size=7).fit(data)
    large = FrequentlyBoughtTogetherModel(block_size=10_000).fit(data)
    assert small.neighbours_.nnz > 0
    np.testing.assert_allclose(small.neighbours_.toarray(), large.neighbours_.toarray())


def test_indexing_ids_by_hash_gives_the_sorted_ids_and_codes_of_np_unique() -> None:
    rng = np.random.default_rng(11)
    alphabet = np.array(list("abcé日0123"))
    ids = ["".join(rng.choice(alphabet, rng.integers(0, 6))) for _ in range(3_000)]
    distinct, codes = _index(ids, None)
    expected, inverse = np.unique(np.array(ids), return_inverse=True)
    assert distinct.tolist() == expected.tolist()
    np.testing.assert_array_equal(codes, inverse.ravel())


def test_indexing_puts_known_ids_first_then_new_ones_in_order_of_appearance() -> None:
    distinct, codes = _index(np.array([30, 10, 30, 20]), ["20", "99"])
    assert distinct.tolist() == ["20", "99", "30", "10"]
    assert codes.tolist() == [2, 3, 2, 0]
