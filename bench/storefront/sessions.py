"""Shopper sessions as a storefront produces them, flattened into one interleaved request list.

Each session: the home page asks for recommendations, then the shopper views a few products
(a `product_viewed` event, then the product page's recommendations), sometimes adds one to the
cart (an event, then the cart page's recommendations), and sometimes buys it. Many sessions run
at once, so one shopper's steps are spread among other shoppers' requests, and each shopper's
request right after their own event is what a real storefront sends.

A line of the list is `G <path>` (a recommendations request, read key) or `E <json>` (one
event posted to /events with the read_write key; the JSON lacks its closing brace so that the
load generator can add a unique eventId each time the list comes round).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

# (strategy or None for the tenant's default, share) per placement.
HOME_MIX: list[tuple[str | None, float]] = [
    (None, 0.50),
    ("trending", 0.25),
    ("content_based", 0.25),
]
PRODUCT_MIX: list[tuple[str | None, float]] = [
    ("frequently_bought_together", 0.40),
    ("content_based", 0.35),
    ("collaborative", 0.25),
]
CART_MIX: list[tuple[str | None, float]] = [
    ("frequently_bought_together", 0.60),
    ("collaborative", 0.40),
]
PLACEMENTS = {"home": HOME_MIX, "product-page": PRODUCT_MIX, "cart": CART_MIX}


@dataclass(frozen=True)
class Step:
    """One request of a session: a recommendations GET or an event POST."""

    kind: str  # "G" or "E"
    text: str  # the path, or the event's JSON without its closing brace
    placement: str | None = None
    strategy: str | None = None

    def line(self) -> str:
        """The step as a line of the request list."""
        return f"{self.kind} {self.text}"


def _pick(mix: list[tuple[str | None, float]], rng: random.Random) -> str | None:
    return rng.choices([name for name, _ in mix], weights=[share for _, share in mix])[0]


def _get(
    user: str,
    placement: str,
    rng: random.Random,
    *,
    product: str | None = None,
    limit: int = 8,
    exclude: list[str] | None = None,
) -> Step:
    strategy = _pick(PLACEMENTS[placement], rng)
    path = f"/api/v1/recommendations?userId={user}&placementId={placement}&limit={limit}"
    if strategy is not None:
        path += f"&strategy={strategy}"
    if product is not None:
        path += f"&productId={product}"
    if exclude:
        path += "&exclude=" + ",".join(exclude)
    return Step("G", path, placement, strategy)


def _event(user: str, product: str, kind: str, session: str) -> Step:
    body: dict[str, Any] = {
        "eventType": kind,
        "userId": user,
        "productId": product,
        "sessionId": session,
    }
    if kind == "purchase":
        body["metadata"] = {"price": 24.5, "quantity": 1}
    return Step("E", json.dumps(body, separators=(",", ":"))[:-1], None, kind)


def session_steps(
    *, user: str, session: str, products: list[str], rng: random.Random
) -> list[Step]:
    """One shopper's visit: home, a few product pages, maybe a cart, maybe a purchase."""
    steps = [_get(user, "home", rng)]
    viewed: list[str] = []
    for _ in range(rng.randint(2, 5)):
        product = rng.choice(products)
        viewed.append(product)
        steps.append(_event(user, product, "product_viewed", session))
        steps.append(_get(user, "product-page", rng, product=product, limit=6))
    if rng.random() < 0.35:
        product = viewed[-1]
        steps.append(_event(user, product, "add_to_cart", session))
        steps.append(_get(user, "cart", rng, product=product, limit=4, exclude=[product]))
        if rng.random() < 0.4:
            steps.append(_event(user, product, "purchase", session))
            steps.append(_get(user, "home", rng))
    return steps


def interleaved(
    *,
    users: list[str],
    products: list[str],
    sessions: int,
    concurrent: int,
    new_user_share: float,
    rng: random.Random,
) -> list[Step]:
    """`sessions` sessions, `concurrent` of them open at any moment, their steps interleaved."""
    open_sessions: list[list[Step]] = []
    started = 0
    steps: list[Step] = []

    def start() -> None:
        nonlocal started
        started += 1
        user = f"new{started}" if rng.random() < new_user_share else rng.choice(users)
        open_sessions.append(
            session_steps(user=user, session=f"bench-s{started}", products=products, rng=rng)
        )

    while started < min(concurrent, sessions):
        start()
    while open_sessions:
        index = rng.randrange(len(open_sessions))
        session = open_sessions[index]
        steps.append(session.pop(0))
        if not session:
            open_sessions.pop(index)
            if started < sessions:
                start()
    return steps


def popular_products(events: list[dict[str, Any]], rng: random.Random, n: int) -> list[str]:
    """Products as shoppers meet them: drawn from the history's views (popular ones more)."""
    viewed = [e["productId"] for e in events]
    return [rng.choice(viewed) for _ in range(n)]
