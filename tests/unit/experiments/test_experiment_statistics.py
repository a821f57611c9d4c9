"""Experiment statistics: golden equality with scipy/statsmodels, sums vs arrays, API shape."""

from __future__ import annotations

import dataclasses
import json
import math
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

from domain.experiments.statistics import (
    MetricCaps,
    RatioMoments,
    SampleMoments,
    SequentialDesign,
    UserArrays,
    VariantSums,
    analyse_experiment,
    ratio_delta_test,
    sample_ratio_mismatch,
    two_proportion_z_test,
    welch_t_test,
)

GOLDEN = 1e-12


def simulated_users(
    rng: np.random.Generator, *, n: int, ctr_scale: float = 1.0, whale: float | None = None
) -> UserArrays:
    ctr = np.clip(rng.beta(0.5, 9.5, size=n) * ctr_scale, 0.0, 1.0)
    impressions = rng.geometric(1 / 12, size=n)
    clicks = rng.binomial(impressions, ctr)
    purchases = rng.binomial(clicks, 0.2)
    revenue = np.where(purchases > 0, purchases * rng.lognormal(3.5, 1.0, size=n), 0.0)
    if whale is not None:
        revenue[0] = whale
        purchases[0] = max(purchases[0], 1)
    return UserArrays(impressions=impressions, clicks=clicks, purchases=purchases, revenue=revenue)


def welch_samples() -> list[tuple[str, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(11)
    zero_inflated = [
        np.where(rng.random(n) < 0.07, rng.lognormal(3.8, 1.2, size=n), 0.0) for n in (3_000, 2_400)
    ]
    return [
        ("zero-inflated revenue, unequal sizes", zero_inflated[0], zero_inflated[1]),
        ("normal, unequal variances", rng.normal(10, 1, 40), rng.normal(10.6, 4, 25)),
        ("purchase counts", rng.poisson(0.3, 5_000).astype(float), rng.poisson(0.33, 5_100) * 1.0),
        ("tiny samples", np.array([1.0, 2.0, 4.0]), np.array([2.0, 7.0, 8.0, 30.0])),
    ]


@pytest.mark.parametrize(("label", "control", "variant"), welch_samples())
def test_welch_equals_scipy_ttest_ind_unequal_var_to_1e_12(
    label: str, control: np.ndarray, variant: np.ndarray
) -> None:
    ours = welch_t_test(
        control=SampleMoments.from_values(values=control),
        variant=SampleMoments.from_values(values=variant),
    )
    theirs = stats.ttest_ind(variant, control, equal_var=False)
    interval = theirs.confidence_interval(confidence_level=0.95)
    assert ours.statistic == pytest.approx(theirs.statistic, rel=GOLDEN, abs=GOLDEN)
    assert ours.p_value == pytest.approx(theirs.pvalue, rel=GOLDEN, abs=GOLDEN)
    assert ours.ci == pytest.approx((interval.low, interval.high), rel=GOLDEN, abs=GOLDEN)
    assert ours.absolute_diff == pytest.approx(variant.mean() - control.mean(), rel=GOLDEN)
    assert ours.significant == (theirs.pvalue < 0.05)


@pytest.mark.parametrize(
    ("control_buyers", "control_users", "variant_buyers", "variant_users"),
    [(120, 4_000, 151, 4_100), (30, 600, 29, 610), (0, 50, 3, 48), (999, 1_000, 1_000, 1_000)],
)
def test_pooled_z_equals_statsmodels_proportions_ztest_to_1e_12(
    control_buyers: int, control_users: int, variant_buyers: int, variant_users: int
) -> None:
    ours = two_proportion_z_test(
        control_successes=control_buyers,
        control_trials=control_users,
        variant_successes=variant_buyers,
        variant_trials=variant_users,
    )
    z, p = proportions_ztest([variant_buyers, control_buyers], [variant_users, control_users])
    assert ours.statistic == pytest.approx(z, rel=GOLDEN, abs=GOLDEN)
    assert ours.p_value == pytest.approx(p, rel=GOLDEN, abs=GOLDEN)


def test_conversion_interval_is_the_unpooled_wald_interval_of_statsmodels() -> None:
    ours = two_proportion_z_test(
        control_successes=120, control_trials=4_000, variant_successes=151, variant_trials=4_100
    )
    low, high = confint_proportions_2indep(151, 4_100, 120, 4_000, method="wald", compare="diff")
    assert ours.ci == pytest.approx((low, high), rel=GOLDEN, abs=GOLDEN)


@pytest.mark.parametrize(
    ("control_users", "variant_users", "traffic_split"),
    [(5_000, 5_000, 50), (5_210, 4_790, 50), (7_100, 2_900, 30), (10, 3, 20), (1, 0, 50)],
)
def test_srm_equals_scipy_chisquare_to_1e_12(
    control_users: int, variant_users: int, traffic_split: int
) -> None:
    ours = sample_ratio_mismatch(
        control_users=control_users, variant_users=variant_users, traffic_split=traffic_split
    )
    total = control_users + variant_users
    expected = [total * (100 - traffic_split) / 100, total * traffic_split / 100]
    theirs = stats.chisquare([control_users, variant_users], f_exp=expected)
    assert ours.chi_square == pytest.approx(theirs.statistic, rel=GOLDEN, abs=GOLDEN)
    assert ours.p_value == pytest.approx(theirs.pvalue, rel=GOLDEN, abs=GOLDEN)
    assert ours.mismatch == (theirs.pvalue < 0.001)


def test_srm_on_a_0_percent_split_flags_any_user_in_the_variant() -> None:
    assert sample_ratio_mismatch(control_users=100, variant_users=1, traffic_split=0).mismatch
    assert not sample_ratio_mismatch(control_users=100, variant_users=0, traffic_split=0).mismatch


def test_delta_method_variance_equals_the_variance_of_the_linearised_per_user_metric() -> None:
    users = simulated_users(np.random.default_rng(3), n=3_000)
    moments = RatioMoments.from_values(numerator=users.clicks, denominator=users.impressions)
    ratio = users.clicks.sum() / users.impressions.sum()
    # Linearisation: (y_u - R x_u) / xbar has the same first-order variance as the ratio.
    linearised = (users.clicks - ratio * users.impressions) / users.impressions.mean()
    assert moments.ratio == pytest.approx(ratio, rel=1e-14)
    assert moments.variance_of_ratio == pytest.approx(
        np.var(linearised, ddof=1) / users.users, rel=1e-10
    )


def test_ctr_test_is_a_normal_test_on_the_delta_method_standard_error() -> None:
    rng = np.random.default_rng(5)
    control, variant = simulated_users(rng, n=4_000), simulated_users(rng, n=4_000, ctr_scale=1.1)
    mc = RatioMoments.from_values(numerator=control.clicks, denominator=control.impressions)
    mv = RatioMoments.from_values(numerator=variant.clicks, denominator=variant.impressions)
    result = ratio_delta_test(control=mc, variant=mv)
    assert mc.ratio is not None and mv.ratio is not None
    se = math.sqrt(mc.variance_of_ratio + mv.variance_of_ratio)
    z = (mv.ratio - mc.ratio) / se
    assert result.statistic == pytest.approx(z, rel=GOLDEN)
    assert result.p_value == pytest.approx(2 * stats.norm.sf(abs(z)), rel=GOLDEN)
    assert result.ci == pytest.approx(
        (mv.ratio - mc.ratio - 1.959963984540054 * se, mv.ratio - mc.ratio + 1.959963984540054 * se)
    )
    assert result.relative_lift == pytest.approx(mv.ratio / mc.ratio - 1, rel=GOLDEN)
    assert result.relative_lift is not None and result.relative_lift_ci is not None
    assert result.relative_lift_ci[0] < result.relative_lift < result.relative_lift_ci[1]


def results_close(ours: Any, theirs: Any, *, rel: float) -> bool:
    if isinstance(ours, dict):
        return ours.keys() == theirs.keys() and all(
            results_close(ours[k], theirs[k], rel=rel) for k in ours
        )
    if isinstance(ours, list | tuple):
        return len(ours) == len(theirs) and all(
            results_close(a, b, rel=rel) for a, b in zip(ours, theirs, strict=True)
        )
    if isinstance(ours, float) and isinstance(theirs, float):
        return ours == pytest.approx(theirs, rel=rel, abs=1e-12)
    return bool(ours == theirs)


@pytest.mark.parametrize("sequential", [None, SequentialDesign(planned_users_per_variant=5_000)])
def test_sufficient_sums_give_the_same_results_as_per_user_arrays(
    sequential: SequentialDesign | None,
) -> None:
    rng = np.random.default_rng(17)
    control, variant = simulated_users(rng, n=5_000), simulated_users(rng, n=5_100, ctr_scale=1.08)
    caps = MetricCaps(revenue=400.0, purchases=3)
    options: dict[str, Any] = {"traffic_split": 50, "caps": caps, "sequential": sequential}
    from_arrays = analyse_experiment(control=control, variant=variant, **options)
    from_sums = analyse_experiment(
        control=VariantSums.from_users(users=control, caps=caps),
        variant=VariantSums.from_users(users=variant, caps=caps),
        **options,
    )
    assert results_close(from_sums.to_dict(), from_arrays.to_dict(), rel=1e-9)


def test_welch_from_sums_matches_scipy_closely() -> None:
    control, variant = welch_samples()[0][1:]
    ours = welch_t_test(
        control=SampleMoments.from_sums(
            n=control.size, total=control.sum(), total_sq=(control**2).sum()
        ),
        variant=SampleMoments.from_sums(
            n=variant.size, total=variant.sum(), total_sq=(variant**2).sum()
        ),
    )
    assert ours.p_value == pytest.approx(stats.ttest_ind(variant, control, equal_var=False).pvalue)


def test_results_answer_has_exactly_the_api_md_shape() -> None:
    rng = np.random.default_rng(23)
    results = analyse_experiment(
        control=simulated_users(rng, n=1_500),
        variant=simulated_users(rng, n=1_500),
        traffic_split=50,
        caps=MetricCaps(revenue=500.0),
    )
    answer = results.to_dict(status="running")
    json.dumps(answer, allow_nan=False)
    assert answer["status"] == "running"
    assert {"status", "variants", "tests", "srm", "lowConfidence"} <= answer.keys()
    for arm in ("control", "variant"):
        assert list(answer["variants"][arm]) == [
            "users",
            "impressions",
            "clicks",
            "ctr",
            "buyers",
            "purchases",
            "conversionRate",
            "revenue",
            "revenuePerVisitor",
        ]
    assert {"ctr", "conversionRate", "revenuePerVisitor"} <= answer["tests"].keys()
    assert "revenuePerVisitorCapped" in answer["tests"]
    for test in answer["tests"].values():
        assert {"pValue", "significant", "absoluteDiff", "relativeLift", "ci"} <= test.keys()
        assert len(test["ci"]) == 2
    assert {"pValue", "chiSquare", "mismatch"} <= answer["srm"].keys()


def test_capped_and_uncapped_revenue_are_reported_side_by_side() -> None:
    rng = np.random.default_rng(29)
    control = simulated_users(rng, n=3_000)
    variant = simulated_users(rng, n=3_000, whale=250_000.0)
    results = analyse_experiment(
        control=control, variant=variant, traffic_split=50, caps=MetricCaps(revenue=1_000.0)
    )
    capped = results.revenue_per_visitor_capped
    assert capped is not None and capped.absolute_diff is not None
    assert results.revenue_per_visitor.absolute_diff is not None
    # One whale moves the uncapped mean by ~83 per visitor; the capped mean barely notices.
    assert results.revenue_per_visitor.absolute_diff > 50
    assert abs(capped.absolute_diff) < 5


def test_a_cap_without_capped_sums_is_refused() -> None:
    users = simulated_users(np.random.default_rng(1), n=100)
    sums = VariantSums.from_users(users=users)
    with pytest.raises(ValueError, match="capped revenue"):
        analyse_experiment(
            control=sums, variant=sums, traffic_split=50, caps=MetricCaps(revenue=100.0)
        )


def test_low_confidence_below_500_users_or_25_buyers_in_a_variant() -> None:
    rng = np.random.default_rng(31)
    big = simulated_users(rng, n=2_000)
    assert not analyse_experiment(control=big, variant=big, traffic_split=50).low_confidence
    small = simulated_users(rng, n=499)
    assert analyse_experiment(control=big, variant=small, traffic_split=50).low_confidence
    few_buyers = UserArrays(
        impressions=big.impressions,
        clicks=big.clicks,
        purchases=np.where(np.arange(2_000) < 24, 1, 0),
        revenue=np.where(np.arange(2_000) < 24, 10.0, 0.0),
    )
    assert analyse_experiment(control=big, variant=few_buyers, traffic_split=50).low_confidence


def test_a_significant_primary_metric_declares_the_winner() -> None:
    rng = np.random.default_rng(37)
    control, variant = simulated_users(rng, n=20_000), simulated_users(rng, n=20_000, ctr_scale=1.3)
    results = analyse_experiment(control=control, variant=variant, traffic_split=50)
    assert results.ctr.significant and results.winner == "variant"


def test_sample_ratio_mismatch_blocks_declaring_a_winner() -> None:
    rng = np.random.default_rng(37)
    control, variant = simulated_users(rng, n=20_000), simulated_users(rng, n=17_000, ctr_scale=1.3)
    results = analyse_experiment(control=control, variant=variant, traffic_split=50)
    assert results.ctr.significant
    assert results.srm.mismatch
    assert results.winner is None


def test_undefined_statistics_are_none_never_nan() -> None:
    nobody = UserArrays(
        impressions=np.zeros(3, int),
        clicks=np.zeros(3, int),
        purchases=np.zeros(3, int),
        revenue=np.zeros(3),
    )
    answer = analyse_experiment(control=nobody, variant=nobody, traffic_split=50).to_dict()
    json.dumps(answer, allow_nan=False)
    assert answer["variants"]["control"]["ctr"] is None
    assert answer["tests"]["ctr"]["pValue"] is None
    assert answer["tests"]["revenuePerVisitor"]["significant"] is False


def test_sequential_mode_is_more_conservative_than_a_fixed_horizon_test() -> None:
    rng = np.random.default_rng(41)
    control, variant = simulated_users(rng, n=6_000), simulated_users(rng, n=6_000, ctr_scale=1.1)
    fixed = analyse_experiment(control=control, variant=variant, traffic_split=50)
    always_valid = analyse_experiment(
        control=control,
        variant=variant,
        traffic_split=50,
        sequential=SequentialDesign(planned_users_per_variant=6_000),
    )
    assert always_valid.sequential
    for name in ("ctr", "conversion_rate", "revenue_per_visitor", "purchases_per_user"):
        seq, fix = getattr(always_valid, name), getattr(fixed, name)
        assert seq.sequential and not fix.sequential
        assert seq.p_value >= fix.p_value
        assert seq.ci[0] < fix.ci[0] and fix.ci[1] < seq.ci[1]


def test_decimal_sums_from_a_sql_driver_give_the_same_results_as_ints() -> None:
    rng = np.random.default_rng(43)
    sums = [VariantSums.from_users(users=simulated_users(rng, n=800)) for _ in range(2)]
    # asyncpg returns sum(bigint) and sum(numeric) as Decimal.
    as_decimal = []
    for s in sums:
        decimals: dict[str, Any] = {
            f.name: Decimal(str(getattr(s, f.name)))
            for f in dataclasses.fields(s)
            if f.name.startswith("sum_") and getattr(s, f.name) is not None
        }
        as_decimal.append(dataclasses.replace(s, **decimals))
    plain = analyse_experiment(control=sums[0], variant=sums[1], traffic_split=50)
    decimal = analyse_experiment(control=as_decimal[0], variant=as_decimal[1], traffic_split=50)
    assert results_close(decimal.to_dict(), plain.to_dict(), rel=1e-12)
