"""The usage-based plans: what each one includes, what happens past it, and what it costs.

One table, read by the server that enforces the limits and by the public pricing page.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class PlanName(StrEnum):
    """The plans a tenant can be on."""

    SANDBOX = "sandbox"
    STARTER = "starter"
    GROWTH = "growth"
    SCALE = "scale"
    ENTERPRISE = "enterprise"


@dataclass(frozen=True)
class Plan:
    """One plan; None for an allowance or a price means custom (agreed per contract)."""

    name: PlanName
    title: str
    monthly_price_usd: int | None
    events_included: int | None
    requests_included: int | None
    # Past an allowance: None refuses writes with 429 quota_exceeded (reads keep working);
    # a price accrues overage per extra million instead.
    overage_per_million_events_usd: int | None
    overage_per_million_requests_usd: int | None
    # How many tenants one admin may hold on this plan; None is unlimited.
    max_tenants: int | None
    notes: str


PLANS: dict[PlanName, Plan] = {
    plan.name: plan
    for plan in (
        Plan(PlanName.SANDBOX, "Sandbox", 0, 100_000, 50_000, None, None, 1, "Test keys, 1 tenant"),
        Plan(
            PlanName.STARTER,
            "Starter",
            149,
            2_000_000,
            1_000_000,
            None,
            None,
            3,
            "Up to 3 tenants",
        ),
        Plan(
            PlanName.GROWTH,
            "Growth",
            499,
            10_000_000,
            5_000_000,
            20,
            30,
            20,
            "Up to 20 tenants",
        ),
        Plan(
            PlanName.SCALE,
            "Scale",
            1_999,
            100_000_000,
            50_000_000,
            10,
            15,
            None,
            "Unlimited tenants, priority support",
        ),
        Plan(
            PlanName.ENTERPRISE,
            "Enterprise",
            None,
            None,
            None,
            None,
            None,
            None,
            "Dedicated worker pools, SSO, SLA",
        ),
    )
}

# Test keys (rk_test_) always run on these limits, whatever the tenant's plan.
TEST_KEY_PLAN = PlanName.SANDBOX
# A new tenant starts here until an operator moves it.
DEFAULT_PLAN = PlanName.SANDBOX
# Admins are told when usage reaches these shares of an allowance.
ALERT_THRESHOLDS = (0.8, 1.0)


def refuses_writes_past_allowance(plan: Plan) -> bool:
    """Whether writes past the events allowance get 429 quota_exceeded (no overage to accrue)."""
    return plan.events_included is not None and plan.overage_per_million_events_usd is None
