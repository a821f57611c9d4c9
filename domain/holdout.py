"""The holdout: a stable slice of each tenant's shoppers kept on a non-personalised baseline, so
the analytics can tell what recommendations added (incrementality) rather than what was bought
after a click.

A user is held out when their bucket, the experiments' SHA-256 assignment
(``domain.experiments.assignment.assignment_bucket``) salted with ``holdout:{tenantId}`` instead
of an experiment id, lies below ``holdoutPercent * 100``. Experiment ids are UUIDs, never that
salt, so the slice is independent of every experiment's split, and the same in every process.
The holdout is compared with everyone else through the experiments' statistics (holdout =
control, everyone else = variant), with their low-confidence rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal

from domain.experiments.assignment import BUCKET_COUNT, assignment_bucket
from domain.experiments.statistics import (
    ComparisonResult,
    ExperimentResults,
    UserArrays,
    VariantSums,
    analyse_experiment,
)

Baseline = Literal["trending", "none"]
SALT: Final = "holdout"
MAX_PERCENT: Final = 20
DEFAULT_BASELINE: Final[Baseline] = "trending"
BASELINE_STRATEGY: Final = "trending"


def salt(tenant_id: str) -> str:
    """The assignment salt of the tenant's holdout (where an experiment puts its id)."""
    return f"{SALT}:{tenant_id}"


def holdout_percent(config: Mapping[str, Any] | None) -> int:
    """The tenant's `holdoutPercent` (0 when absent or malformed; at most MAX_PERCENT)."""
    value = (config or {}).get("holdoutPercent")
    if isinstance(value, bool) or not isinstance(value, int):
        return 0
    return max(0, min(MAX_PERCENT, value))


def baseline_of(config: Mapping[str, Any] | None) -> Baseline:
    """What the holdout is served: `trending` (default) or `none` (no widget)."""
    return "none" if (config or {}).get("holdoutBaseline") == "none" else DEFAULT_BASELINE


def in_holdout(*, tenant_id: str, user_id: str, percent: int) -> bool:
    """Whether the user belongs to the tenant's holdout of `percent` percent of users."""
    if percent <= 0:
        return False
    bucket = assignment_bucket(experiment_id=salt(tenant_id), user_id=user_id)
    return bucket < percent * (BUCKET_COUNT // 100)


def holdout_baseline(
    *, tenant_id: str, user_id: str, config: Mapping[str, Any] | None
) -> Baseline | None:
    """The baseline to serve this user when they are held out, else None."""
    percent = holdout_percent(config)
    if not in_holdout(tenant_id=tenant_id, user_id=user_id, percent=percent):
        return None
    return baseline_of(config)


def _test(result: ComparisonResult, *, low_confidence: bool) -> dict[str, Any]:
    return {
        "absoluteDiff": result.absolute_diff,
        "relativeLift": result.relative_lift,
        "ci": None if result.ci is None else list(result.ci),
        "pValue": result.p_value,
        "significant": result.significant,
        "lowConfidence": low_confidence,
    }


def analyse(
    *, holdout: VariantSums | UserArrays, exposed: VariantSums | UserArrays, percent: int
) -> ExperimentResults:
    """The experiments' analysis with the holdout as control and everyone else as variant."""
    return analyse_experiment(control=holdout, variant=exposed, traffic_split=100 - percent)


def incremental(
    *, holdout: VariantSums | UserArrays, exposed: VariantSums | UserArrays, percent: int
) -> dict[str, Any]:
    """The overview's `incremental` object: revenue per visitor and conversion rate (buyers /
    users) of everyone else minus the holdout's, each with its interval, p-value and the
    experiments' low-confidence rule (fewer than 500 users or 25 buyers on a side)."""
    results = analyse(holdout=holdout, exposed=exposed, percent=percent)
    low = results.low_confidence
    return {
        "revenuePerVisitor": _test(results.revenue_per_visitor, low_confidence=low),
        "conversionRate": _test(results.conversion_rate, low_confidence=low),
        "holdoutPercent": percent,
        "holdoutUsers": results.control.users,
        "exposedUsers": results.variant.users,
        "holdoutRevenuePerVisitor": results.control.revenue_per_visitor,
        "exposedRevenuePerVisitor": results.variant.revenue_per_visitor,
        "holdoutConversionRate": results.control.conversion_rate,
        "exposedConversionRate": results.variant.conversion_rate,
        "sampleRatioMismatch": results.srm.mismatch,
    }
