"""The training run's lists: a full run on a small shop, and the incremental rescoring."""

from __future__ import annotations

from domain.training import EventColumns, refresh_user_lists, train


def test_incremental_rescoring_follows_the_users_products_neighbours() -> None:
    item_lists = {
        "a": [["b", 0.9, ["a"]], ["c", 0.1, ["a"]]],
        "x": [["y", 0.8, ["x"]], ["a", 0.5, ["x"]]],
    }
    lists = refresh_user_lists(
        histories={"u1": {"a": 5.0}, "u2": {"x": 1.0, "a": 2.0}, "u3": {}},
        item_lists=item_lists,
    )
    assert [entry[0] for entry in lists["u1"]] == ["b", "c"]
    assert lists["u1"][0][1] == 1.0 and lists["u1"][0][2] == ["a"]
    # Products the user already has are never recommended back.
    assert "a" not in [entry[0] for entry in lists["u2"]]
    assert "u3" not in lists


def test_a_full_run_publishes_lists_for_every_strategy_and_readiness() -> None:
    users, products, types, times, sessions = [], [], [], [], []
    for u in range(40):
        block = "a" if u % 2 else "b"
        for k in range(3):
            users.append(f"user{u}")
            products.append(f"{block}{(u + k) % 6}")
            types.append("purchase")
            times.append(1_000_000.0 + u * 60 + k)
            sessions.append(f"s{u}")
    catalog = [
        {
            "productId": f"{block}{i}",
            "name": f"{block} thing {i}",
            "category": block,
            "price": 1.0 + i,
            "description": "",
            "attributes": {},
            "available": True,
        }
        for block in "ab"
        for i in range(6)
    ]
    result = train(
        events=EventColumns(users, products, types, times, sessions),
        catalog=catalog,
        now=1_000_000.0 + 3600,
    )
    assert set(result.user_lists) == {f"user{u}" for u in range(40)}
    for user, entries in result.user_lists.items():
        block = "a" if int(user[4:]) % 2 else "b"
        assert all(entry[0].startswith(block) for entry in entries)
    assert all(e[0].startswith("a") for e in result.fbt_item_lists["a0"])
    assert set(result.content_item_lists) == {item["productId"] for item in catalog}
    assert result.trending and result.product_interactions["a1"] > 0
    assert result.readiness["content_based"]["ready"] is False  # 12 products < 50
    assert result.counts == {"events": 120, "users": 40, "products": 12, "catalogProducts": 12}
