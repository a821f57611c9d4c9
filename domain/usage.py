"""Metered usage against a plan: shares of the allowances, overage, alerts and quota refusals.

Usage is counted per tenant and UTC day, live keys and test keys apart: test keys (`rk_test_`)
always run on the Sandbox plan's limits, and their usage is never billed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from domain.plans import (
    ALERT_THRESHOLDS,
    DEFAULT_PLAN,
    PLANS,
    TEST_KEY_PLAN,
    Plan,
    PlanName,
    refuses_writes_past_allowance,
)

EVENTS = "events"
REQUESTS = "recommendationRequests"
METRICS = (EVENTS, REQUESTS)
LIVE = "live"
TEST = "test"
ENVIRONMENTS = (LIVE, TEST)
# YYYY-MM from 0001-01 (a year 0 is no date); the OpenAPI document states the same pattern.
MONTH_PATTERN = r"^(?:[1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])-(?:0[1-9]|1[0-2])$"
_MONTH = re.compile(MONTH_PATTERN)


def plan_named(name: str | None) -> Plan:
    """The plan called `name` (the default plan for an unknown or missing name)."""
    try:
        return PLANS[PlanName(name or DEFAULT_PLAN)]
    except ValueError:
        return PLANS[DEFAULT_PLAN]


def plan_for(*, tenant_plan: str | None, environment: str) -> Plan:
    """The plan whose limits apply to a key of `environment` of a tenant on `tenant_plan`."""
    return PLANS[TEST_KEY_PLAN] if environment == TEST else plan_named(tenant_plan)


def parse_month(text: str) -> date | None:
    """The first day of a `YYYY-MM` month, or None when `text` is not one."""
    if not _MONTH.fullmatch(text):
        return None
    year, month = text.split("-")
    return date(int(year), int(month), 1)


def month_days(first: date) -> list[date]:
    """Every day of the month starting at `first`."""
    following = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return [date.fromordinal(o) for o in range(first.toordinal(), following.toordinal())]


def included(plan: Plan, metric: str) -> int | None:
    """The plan's monthly allowance of `metric` (None: custom, no limit enforced)."""
    return plan.events_included if metric == EVENTS else plan.requests_included


def share_used(used: int, allowance: int | None) -> float | None:
    """Used / included (None without an allowance)."""
    if not allowance:
        return None
    return used / allowance


def thresholds_reached(used: int, allowance: int | None) -> list[int]:
    """The alert thresholds (percent) that `used` has reached of `allowance`."""
    if not allowance:
        return []
    return [round(t * 100) for t in ALERT_THRESHOLDS if used >= math.ceil(t * allowance)]


@dataclass(frozen=True)
class Overage:
    """Usage past the allowances and what it costs on the plan (paid plans only)."""

    events: int
    recommendation_requests: int
    amount_usd: float

    def to_dict(self) -> dict[str, float | int]:
        """The API's camelCase form."""
        return {
            "events": self.events,
            "recommendationRequests": self.recommendation_requests,
            "amountUsd": self.amount_usd,
        }


def overage(plan: Plan, *, events: int, requests: int) -> Overage:
    """What `events` and `requests` in one month cost past the plan's allowances (pro rata per
    million, to the cent); plans without overage pricing accrue none."""
    extra_events = max(0, events - plan.events_included) if plan.events_included else 0
    extra_requests = max(0, requests - plan.requests_included) if plan.requests_included else 0
    cost = 0.0
    if plan.overage_per_million_events_usd is not None:
        cost += extra_events * plan.overage_per_million_events_usd / 1_000_000
    else:
        extra_events = 0  # refused, never billed
    if plan.overage_per_million_requests_usd is not None:
        cost += extra_requests * plan.overage_per_million_requests_usd / 1_000_000
    else:
        extra_requests = 0
    return Overage(extra_events, extra_requests, round(cost, 2))


def write_quota(plan: Plan) -> int | None:
    """Events a month past which writes are refused with 429 quota_exceeded (None: never)."""
    return plan.events_included if refuses_writes_past_allowance(plan) else None


def tenants_allowed(plans: Iterable[str]) -> int | None:
    """How many tenants an admin may hold: the most that any plan of their tenants allows (the
    default plan's limit when they hold none); None is unlimited."""
    best: int | None = plan_named(None).max_tenants
    for name in plans:
        limit = plan_named(name).max_tenants
        if limit is None:
            return None
        best = max(best or 0, limit)
    return best
