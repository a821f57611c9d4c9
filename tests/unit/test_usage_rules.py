"""The usage rules of the plans: which plan applies, shares, thresholds, overage, quotas and
tenants per admin (pure domain, no I/O)."""

from __future__ import annotations

from datetime import date

import pytest

from domain import usage
from domain.plans import PLANS, PlanName


def test_test_keys_run_on_sandbox_limits_whatever_the_tenants_plan() -> None:
    assert usage.plan_for(tenant_plan="scale", environment="test").name is PlanName.SANDBOX
    assert usage.plan_for(tenant_plan="scale", environment="live").name is PlanName.SCALE


def test_an_unknown_or_missing_plan_name_falls_back_to_the_default_plan() -> None:
    assert usage.plan_named(None).name is PlanName.SANDBOX
    assert usage.plan_named("platinum").name is PlanName.SANDBOX


@pytest.mark.parametrize(
    ("text", "first"),
    [("2026-12", date(2026, 12, 1)), ("2027-01", date(2027, 1, 1)), ("2026-13", None), ("x", None)],
)
def test_a_month_is_parsed_only_as_yyyy_mm(text: str, first: date | None) -> None:
    assert usage.parse_month(text) == first


def test_a_month_has_each_of_its_days_leap_years_included() -> None:
    assert len(usage.month_days(date(2028, 2, 1))) == 29
    assert usage.month_days(date(2026, 12, 1))[-1] == date(2026, 12, 31)


def test_thresholds_are_reached_at_80_and_100_percent_exactly() -> None:
    assert usage.thresholds_reached(79_999, 100_000) == []
    assert usage.thresholds_reached(80_000, 100_000) == [80]
    assert usage.thresholds_reached(100_000, 100_000) == [80, 100]
    assert usage.thresholds_reached(10**9, None) == []


def test_overage_is_billed_pro_rata_only_on_plans_that_price_it() -> None:
    growth = PLANS[PlanName.GROWTH]
    billed = usage.overage(growth, events=10_500_000, requests=6_000_000)
    assert (billed.events, billed.recommendation_requests) == (500_000, 1_000_000)
    assert billed.amount_usd == pytest.approx(0.5 * 20 + 1 * 30)
    starter = PLANS[PlanName.STARTER]
    assert usage.overage(starter, events=9_000_000, requests=9_000_000).amount_usd == 0
    assert usage.overage(PLANS[PlanName.ENTERPRISE], events=10**12, requests=10**12).events == 0


def test_only_plans_without_overage_refuse_writes_past_their_events() -> None:
    assert usage.write_quota(PLANS[PlanName.SANDBOX]) == 100_000
    assert usage.write_quota(PLANS[PlanName.STARTER]) == 2_000_000
    assert usage.write_quota(PLANS[PlanName.GROWTH]) is None
    assert usage.write_quota(PLANS[PlanName.ENTERPRISE]) is None


def test_an_admin_holds_as_many_tenants_as_their_most_generous_plan_allows() -> None:
    assert usage.tenants_allowed([]) == 1
    assert usage.tenants_allowed(["sandbox"]) == 1
    assert usage.tenants_allowed(["sandbox", "starter"]) == 3
    assert usage.tenants_allowed(["growth", "starter"]) == 20
    assert usage.tenants_allowed(["sandbox", "scale"]) is None
