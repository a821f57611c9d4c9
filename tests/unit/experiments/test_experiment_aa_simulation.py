"""A/A simulations: user-level tests hold their false-positive rate where naive ones do not.

Users are the randomisation unit and their impressions are clustered: each user has their own
click probability (Beta(0.4, 7.6): mean 5 %, intra-user correlation 1/9) and a geometric number
of impressions (mean 15). Both arms come from the same distribution, so every "significant"
result is a false positive. Everything is vectorised over repeats and seeded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pytest

from domain.experiments.statistics import (
    RatioMoments,
    SequentialDesign,
    VariantSums,
    analyse_experiment,
    ratio_delta_test,
    two_proportion_z_test,
)

ALPHA = 0.05
REPEATS = 2_000
USERS_PER_ARM = 2_000
PEEK_REPEATS = 1_000
DAYS = 14
NEW_USERS_PER_ARM_PER_DAY = 150

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class ArmSums:
    """Per-repeat sums over users, each of shape (repeats,) or (repeats, days)."""

    clicks: IntArray
    impressions: IntArray
    clicks_sq: IntArray
    impressions_sq: IntArray
    cross: IntArray
    buyers: IntArray
    purchases: IntArray
    purchases_sq: IntArray
    revenue: npt.NDArray[np.float64]
    revenue_sq: npt.NDArray[np.float64]

    def variant_sums(self, index: tuple[int, ...], users: int) -> VariantSums:
        return VariantSums(
            users=users,
            sum_impressions=int(self.impressions[index]),
            sum_clicks=int(self.clicks[index]),
            sum_impressions_sq=int(self.impressions_sq[index]),
            sum_clicks_sq=int(self.clicks_sq[index]),
            sum_impr_clicks=int(self.cross[index]),
            buyers=int(self.buyers[index]),
            sum_purchases=int(self.purchases[index]),
            sum_purchases_sq=int(self.purchases_sq[index]),
            sum_revenue=float(self.revenue[index]),
            sum_revenue_sq=float(self.revenue_sq[index]),
        )

    def ctr_moments(self, index: tuple[int, ...], users: int) -> RatioMoments:
        return RatioMoments.from_sums(
            n=users,
            sum_num=int(self.clicks[index]),
            sum_den=int(self.impressions[index]),
            sum_num_sq=int(self.clicks_sq[index]),
            sum_den_sq=int(self.impressions_sq[index]),
            sum_cross=int(self.cross[index]),
        )


def simulate_arm(rng: np.random.Generator, shape: tuple[int, ...]) -> ArmSums:
    """Draw users of shape (..., users) and sum over the last axis."""
    ctr = rng.beta(0.4, 7.6, size=shape)
    impressions = rng.geometric(1 / 15, size=shape)
    clicks = rng.binomial(impressions, ctr)
    purchases = rng.binomial(clicks, 0.2)
    revenue = purchases * rng.lognormal(3.5, 1.0, size=shape)
    return ArmSums(
        clicks=clicks.sum(-1),
        impressions=impressions.sum(-1),
        clicks_sq=(clicks * clicks).sum(-1),
        impressions_sq=(impressions * impressions).sum(-1),
        cross=(clicks * impressions).sum(-1),
        buyers=(purchases > 0).sum(-1),
        purchases=purchases.sum(-1),
        purchases_sq=(purchases * purchases).sum(-1),
        revenue=revenue.sum(-1),
        revenue_sq=(revenue * revenue).sum(-1),
    )


@dataclass(frozen=True)
class FixedHorizonRates:
    ctr_delta: float
    ctr_naive_per_impression: float
    conversion: float
    revenue_per_visitor: float


@pytest.fixture(scope="module")
def fixed_horizon_rates() -> FixedHorizonRates:
    rng = np.random.default_rng(20_240_601)
    control = simulate_arm(rng, (REPEATS, USERS_PER_ARM))
    variant = simulate_arm(rng, (REPEATS, USERS_PER_ARM))
    hits = np.zeros((4, REPEATS), dtype=bool)
    for r in range(REPEATS):
        results = analyse_experiment(
            control=control.variant_sums((r,), USERS_PER_ARM),
            variant=variant.variant_sums((r,), USERS_PER_ARM),
            traffic_split=50,
        )
        # The spec's textbook test: every impression as an independent Bernoulli trial.
        naive = two_proportion_z_test(
            control_successes=int(control.clicks[r]),
            control_trials=int(control.impressions[r]),
            variant_successes=int(variant.clicks[r]),
            variant_trials=int(variant.impressions[r]),
        )
        hits[:, r] = (
            results.ctr.significant,
            naive.significant,
            results.conversion_rate.significant,
            results.revenue_per_visitor.significant,
        )
    return FixedHorizonRates(*(float(rate) for rate in hits.mean(axis=1)))


def test_ctr_delta_method_false_positive_rate_lies_within_3_5_to_6_5_percent(
    fixed_horizon_rates: FixedHorizonRates,
) -> None:
    assert 0.035 <= fixed_horizon_rates.ctr_delta <= 0.065, fixed_horizon_rates


def test_naive_per_impression_z_test_inflates_false_positives_above_6_5_percent(
    fixed_horizon_rates: FixedHorizonRates,
) -> None:
    # Documented failure of the textbook test under clustering (measured ~32 %): why CTR is
    # tested on users with the delta method instead.
    assert fixed_horizon_rates.ctr_naive_per_impression > 0.065, fixed_horizon_rates


def test_conversion_and_revenue_false_positive_rates_stay_near_nominal(
    fixed_horizon_rates: FixedHorizonRates,
) -> None:
    assert 0.035 <= fixed_horizon_rates.conversion <= 0.065, fixed_horizon_rates
    assert 0.035 <= fixed_horizon_rates.revenue_per_visitor <= 0.065, fixed_horizon_rates


@dataclass(frozen=True)
class PeekingRates:
    sequential: float
    naive_peeking: float
    final_look_only: float


@pytest.fixture(scope="module")
def daily_peeking_rates() -> PeekingRates:
    rng = np.random.default_rng(7)
    shape = (PEEK_REPEATS, DAYS, NEW_USERS_PER_ARM_PER_DAY)
    # Each day brings new users; a look on day d sees everyone so far (cumulative sums).
    control, variant = (
        ArmSums(**{k: np.cumsum(v, axis=1) for k, v in vars(simulate_arm(rng, shape)).items()})
        for _ in range(2)
    )
    design = SequentialDesign(planned_users_per_variant=DAYS * NEW_USERS_PER_ARM_PER_DAY)
    sequential = np.zeros(PEEK_REPEATS, dtype=bool)
    naive = np.zeros(PEEK_REPEATS, dtype=bool)
    final = np.zeros(PEEK_REPEATS, dtype=bool)
    for r in range(PEEK_REPEATS):
        for day in range(DAYS):
            users = (day + 1) * NEW_USERS_PER_ARM_PER_DAY
            mc = control.ctr_moments((r, day), users)
            mv = variant.ctr_moments((r, day), users)
            fixed = ratio_delta_test(control=mc, variant=mv, alpha=ALPHA).significant
            naive[r] |= fixed
            sequential[r] |= ratio_delta_test(
                control=mc, variant=mv, alpha=ALPHA, sequential=design
            ).significant
        final[r] = fixed
    return PeekingRates(
        sequential=float(sequential.mean()),
        naive_peeking=float(naive.mean()),
        final_look_only=float(final.mean()),
    )


def test_sequential_mode_keeps_false_positives_at_most_5_percent_under_daily_peeking(
    daily_peeking_rates: PeekingRates,
) -> None:
    # 1 % tolerance: about 1.5 standard errors of a rate measured on 1,000 repeats.
    assert daily_peeking_rates.sequential <= ALPHA + 0.01, daily_peeking_rates


def test_naive_daily_peeking_at_fixed_horizon_p_values_exceeds_5_percent(
    daily_peeking_rates: PeekingRates,
) -> None:
    # The problem the sequential mode solves: 14 looks at a fixed-horizon test (~20 %).
    assert daily_peeking_rates.naive_peeking > ALPHA + 0.05, daily_peeking_rates
    assert daily_peeking_rates.final_look_only <= ALPHA + 0.015, daily_peeking_rates


def test_sequential_mode_still_detects_a_real_ctr_lift_within_the_planned_size() -> None:
    rng = np.random.default_rng(99)
    repeats, users = 200, DAYS * NEW_USERS_PER_ARM_PER_DAY
    control = simulate_arm(rng, (repeats, users))
    lifted = rng.beta(0.4, 7.6, size=(repeats, users)) * 1.35
    impressions = rng.geometric(1 / 15, size=(repeats, users))
    clicks = rng.binomial(impressions, np.clip(lifted, 0.0, 1.0))
    design = SequentialDesign(planned_users_per_variant=users)
    detected = 0
    for r in range(repeats):
        variant = RatioMoments.from_values(numerator=clicks[r], denominator=impressions[r])
        result = ratio_delta_test(
            control=control.ctr_moments((r,), users), variant=variant, sequential=design
        )
        detected += result.significant and (result.absolute_diff or 0.0) > 0
    # Measured ~86 % (the fixed-horizon test at the same size: ~99 %), the price of peeking.
    assert detected / repeats >= 0.75
