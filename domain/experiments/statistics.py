"""User-level statistics for A/B experiments between two recommendation strategies.

Users, not impressions, are randomised (see ``assignment``), so every test treats the user as
the unit of analysis. Impressions of one user are correlated (a user who likes the widget clicks
on many of its impressions), and the textbook per-impression z-test ignores that, overstating
significance. Here:

- CTR is a ratio of per-user sums, sum(clicks_u) / sum(impressions_u), tested with a
  delta-method variance;
- conversion rate (buyers / users) uses the pooled two-proportion z-test, with an unpooled
  (Wald) interval for the difference;
- revenue per visitor and purchases per user use Welch's t-test, optionally on values capped at
  a threshold fixed before the experiment started (reported next to the uncapped test);
- a sample ratio mismatch (chi-square against the configured split, p < 0.001) blocks a winner;
- an optional sequential mode replaces p-values and intervals by always-valid ones (normal
  mixture sequential probability ratio test, as in Johari et al. 2017 and Howard et al. 2021),
  so an admin may look every day without inflating false positives.

Inputs come either as per-user arrays (``UserArrays``) or as sufficient statistics that SQL can
aggregate (``VariantSums``); both give the same results up to rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
from scipy import stats

from domain.experiments.assignment import Variant

PrimaryMetric = Literal["ctr", "conversion_rate", "revenue_per_visitor"]
# SQL drivers return sum(bigint) as Decimal; integral values are then used exactly.
Number = int | float | Decimal

DEFAULT_ALPHA: Final = 0.05
SRM_P_THRESHOLD: Final = 0.001
MIN_USERS_PER_VARIANT: Final = 500
MIN_CONVERSIONS_PER_VARIANT: Final = 25  # conversions = buyers (users with a purchase)


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MetricCaps:
    """Per-user caps fixed before the experiment starts; None means uncapped.

    A per-user value above the cap counts as the cap (winsorising one side), which tames the
    variance a single whale adds to revenue. Fixing the cap in advance keeps it from being
    tuned until a result looks significant.
    """

    revenue: float | None = None
    purchases: float | None = None

    def __post_init__(self) -> None:
        for name in ("revenue", "purchases"):
            cap = getattr(self, name)
            if cap is not None and not (math.isfinite(cap) and cap > 0):
                raise ValueError(f"{name} cap must be a positive finite number, got {cap!r}")


@dataclass(frozen=True, slots=True)
class SequentialDesign:
    """Settings of the always-valid (sequential) mode.

    ``planned_users_per_variant`` tunes the mixture so intervals are narrowest around that
    sample size. Any value keeps the false-positive guarantee; a good guess only adds power.
    """

    planned_users_per_variant: int

    # The p-value reported is 1 / Lambda at the current look. The running minimum over past
    # looks is valid too (and sharper), but needs stored history; the stateless value is
    # never smaller, so it keeps the guarantee.

    def __post_init__(self) -> None:
        if self.planned_users_per_variant < 2:
            raise ValueError("planned_users_per_variant must be at least 2")


@dataclass(frozen=True, eq=False)
class UserArrays:
    """Per-user metrics of one variant; every array has shape (n_users,), one row per user.

    ``buyer`` defaults to ``purchases > 0``; pass it when buyers are defined otherwise
    (e.g. an order without a counted purchase event).
    """

    impressions: npt.NDArray[Any]
    clicks: npt.NDArray[Any]
    purchases: npt.NDArray[Any]
    revenue: npt.NDArray[Any]
    buyer: npt.NDArray[Any] | None = None

    def __post_init__(self) -> None:
        n_users = np.shape(self.impressions)
        for name in ("impressions", "clicks", "purchases", "revenue", "buyer"):
            values = getattr(self, name)
            if values is None:
                continue
            if np.ndim(values) != 1 or np.shape(values) != n_users:
                raise ValueError(f"{name} must be 1-D with shape {n_users}")
            if name != "buyer" and not (
                np.all(np.isfinite(values)) and np.all(np.asarray(values) >= 0)
            ):
                raise ValueError(f"{name} must be finite and non-negative")

    @property
    def users(self) -> int:
        """Number of users in the variant."""
        return int(np.shape(self.impressions)[0])

    def buyer_mask(self) -> npt.NDArray[np.bool_]:
        """Return the boolean buyer flag of each user, shape (n_users,)."""
        if self.buyer is None:
            return np.asarray(self.purchases) > 0
        return np.asarray(self.buyer, dtype=bool)


@dataclass(frozen=True, slots=True)
class VariantSums:
    """Sufficient statistics of one variant, aggregated over users (e.g. in SQL).

    With one row per (experiment, variant, user) holding ``impressions, clicks, purchases,
    revenue``, one query gives every field::

        SELECT count(*)                          AS users,
               sum(impressions)                  AS sum_impressions,
               sum(clicks)                       AS sum_clicks,
               sum(impressions * impressions)    AS sum_impressions_sq,
               sum(clicks * clicks)              AS sum_clicks_sq,
               sum(impressions * clicks)         AS sum_impr_clicks,
               count(*) FILTER (WHERE purchases > 0) AS buyers,
               sum(purchases)                    AS sum_purchases,
               sum(purchases * purchases)        AS sum_purchases_sq,
               sum(revenue)                      AS sum_revenue,
               sum(revenue * revenue)            AS sum_revenue_sq,
               sum(least(revenue, :revenue_cap)) AS sum_revenue_capped,   -- when capped
               sum(least(revenue, :revenue_cap) ^ 2) AS sum_revenue_capped_sq,
               ...                               -- purchases cap likewise
        FROM experiment_user_metrics WHERE tenant_id = :t AND experiment_id = :e
        GROUP BY variant

    Integer sums (counts) are used exactly; variances are formed as
    ``(n * sum_sq - sum**2) / (n * (n - 1))`` in integer arithmetic before one rounding.
    """

    users: int
    sum_impressions: Number
    sum_clicks: Number
    sum_impressions_sq: Number
    sum_clicks_sq: Number
    sum_impr_clicks: Number
    buyers: int
    sum_purchases: Number
    sum_purchases_sq: Number
    sum_revenue: Number
    sum_revenue_sq: Number
    sum_revenue_capped: Number | None = None
    sum_revenue_capped_sq: Number | None = None
    sum_purchases_capped: Number | None = None
    sum_purchases_capped_sq: Number | None = None

    def __post_init__(self) -> None:
        if self.users < 0 or not 0 <= self.buyers <= self.users:
            raise ValueError("need users >= 0 and 0 <= buyers <= users")

    @classmethod
    def from_users(cls, *, users: UserArrays, caps: MetricCaps | None = None) -> VariantSums:
        """Aggregate per-user arrays into sums, as the SQL above would."""
        caps = caps or MetricCaps()
        impressions = _as_counts(users.impressions)
        clicks = _as_counts(users.clicks)
        purchases = _as_counts(users.purchases)
        revenue = np.asarray(users.revenue, dtype=np.float64)
        capped_revenue = None if caps.revenue is None else np.minimum(revenue, caps.revenue)
        capped_purchases = (
            None
            if caps.purchases is None
            else np.minimum(purchases.astype(np.float64), caps.purchases)
        )
        return cls(
            users=users.users,
            sum_impressions=int(impressions.sum()),
            sum_clicks=int(clicks.sum()),
            sum_impressions_sq=int((impressions * impressions).sum()),
            sum_clicks_sq=int((clicks * clicks).sum()),
            sum_impr_clicks=int((impressions * clicks).sum()),
            buyers=int(users.buyer_mask().sum()),
            sum_purchases=int(purchases.sum()),
            sum_purchases_sq=int((purchases * purchases).sum()),
            sum_revenue=float(revenue.sum()),
            sum_revenue_sq=float((revenue * revenue).sum()),
            sum_revenue_capped=None if capped_revenue is None else float(capped_revenue.sum()),
            sum_revenue_capped_sq=(
                None if capped_revenue is None else float((capped_revenue**2).sum())
            ),
            sum_purchases_capped=(
                None if capped_purchases is None else float(capped_purchases.sum())
            ),
            sum_purchases_capped_sq=(
                None if capped_purchases is None else float((capped_purchases**2).sum())
            ),
        )


def _as_counts(values: npt.ArrayLike) -> npt.NDArray[np.int64]:
    array = np.asarray(values)
    if not np.all(array == np.round(array)):
        raise ValueError("impressions, clicks and purchases must be whole numbers")
    return array.astype(np.int64)


# --------------------------------------------------------------------------------------------
# Moments: what every test needs, built from values (two-pass) or from sums (one-pass)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SampleMoments:
    """Size, mean and unbiased variance (ddof=1) of one per-user metric in one variant."""

    n: int
    mean: float
    var: float

    @classmethod
    def from_values(cls, *, values: npt.ArrayLike) -> SampleMoments:
        """Return the moments of values, shape (n,), computed in two passes like scipy."""
        x = np.asarray(values, dtype=np.float64)
        if x.ndim != 1:
            raise ValueError("values must be 1-D")
        n = int(x.size)
        mean = float(np.mean(x)) if n else 0.0
        var = float(np.var(x, ddof=1)) if n > 1 else 0.0
        return cls(n=n, mean=mean, var=var)

    @classmethod
    def from_sums(cls, *, n: int, total: Number, total_sq: Number) -> SampleMoments:
        """Return the moments from n, sum(x) and sum(x**2)."""
        mean = _exact(total) / n if n else 0.0
        var = _centred_cross(n=n, sum_xy=total_sq, sum_x=total, sum_y=total)
        return cls(n=n, mean=float(mean), var=max(var, 0.0))

    @property
    def variance_of_mean(self) -> float:
        """Return var / n, the squared standard error of the mean."""
        return self.var / self.n if self.n else math.inf


@dataclass(frozen=True, slots=True)
class RatioMoments:
    """Moments of a per-user numerator y_u and denominator x_u (e.g. clicks and impressions).

    ``var_*`` and ``cov`` are unbiased (ddof=1) over the n users.
    """

    n: int
    mean_num: float
    mean_den: float
    var_num: float
    var_den: float
    cov: float

    @classmethod
    def from_values(cls, *, numerator: npt.ArrayLike, denominator: npt.ArrayLike) -> RatioMoments:
        """Return the moments of two per-user arrays, each of shape (n,), in two passes."""
        y = np.asarray(numerator, dtype=np.float64)
        x = np.asarray(denominator, dtype=np.float64)
        if y.ndim != 1 or y.shape != x.shape:
            raise ValueError("numerator and denominator must be 1-D of the same shape")
        n = int(y.size)
        if n < 2:
            mean_y = float(y.mean()) if n else 0.0
            mean_x = float(x.mean()) if n else 0.0
            return cls(n=n, mean_num=mean_y, mean_den=mean_x, var_num=0.0, var_den=0.0, cov=0.0)
        mean_y, mean_x = float(y.mean()), float(x.mean())
        dy, dx = y - mean_y, x - mean_x
        return cls(
            n=n,
            mean_num=mean_y,
            mean_den=mean_x,
            var_num=float(dy @ dy) / (n - 1),
            var_den=float(dx @ dx) / (n - 1),
            cov=float(dy @ dx) / (n - 1),
        )

    @classmethod
    def from_sums(
        cls,
        *,
        n: int,
        sum_num: Number,
        sum_den: Number,
        sum_num_sq: Number,
        sum_den_sq: Number,
        sum_cross: Number,
    ) -> RatioMoments:
        """Return the moments from n and the sums of y, x, y**2, x**2 and x*y over users."""
        return cls(
            n=n,
            mean_num=_exact(sum_num) / n if n else 0.0,
            mean_den=_exact(sum_den) / n if n else 0.0,
            var_num=max(_centred_cross(n=n, sum_xy=sum_num_sq, sum_x=sum_num, sum_y=sum_num), 0.0),
            var_den=max(_centred_cross(n=n, sum_xy=sum_den_sq, sum_x=sum_den, sum_y=sum_den), 0.0),
            cov=_centred_cross(n=n, sum_xy=sum_cross, sum_x=sum_num, sum_y=sum_den),
        )

    @property
    def ratio(self) -> float | None:
        """Return sum(y) / sum(x), or None when there is no denominator."""
        return self.mean_num / self.mean_den if self.mean_den > 0 else None

    @property
    def variance_of_ratio(self) -> float:
        """Return the delta-method variance of the ratio of means.

        Var(ybar / xbar) ~= (var_y - 2 R cov + R**2 var_x) / (n * xbar**2), the first-order
        Taylor expansion of y/x around the means; it keeps each user's impressions together.
        """
        ratio = self.ratio
        if ratio is None or self.n < 2:
            return math.inf
        spread = self.var_num - 2.0 * ratio * self.cov + ratio * ratio * self.var_den
        return max(spread, 0.0) / (self.n * self.mean_den * self.mean_den)


def _centred_cross(*, n: int, sum_xy: Number, sum_x: Number, sum_y: Number) -> float:
    """Return sum((x - xbar)(y - ybar)) / (n - 1) from raw sums (0 when n < 2)."""
    if n < 2:
        return 0.0
    s_xy, s_x, s_y = _exact(sum_xy), _exact(sum_x), _exact(sum_y)
    if isinstance(s_xy, int) and isinstance(s_x, int) and isinstance(s_y, int):
        # Exact integer numerator: no cancellation for counts, one rounding at the division.
        return (n * s_xy - s_x * s_y) / (n * (n - 1))
    return (float(s_xy) - float(s_x) * float(s_y) / n) / (n - 1)


def _exact(value: Number | np.number[Any]) -> int | float:
    """Return value as a Python int when it is integral (int, numpy int, Decimal), else float."""
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    return float(value)


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------

Interval = tuple[float, float]


@dataclass(frozen=True, slots=True)
class ComparisonResult:
    """One metric compared between arms: variant minus control.

    Any field that cannot be computed (too few users, zero variance, a zero control value for
    the relative lift) is None, so the JSON never carries NaN.
    """

    method: str
    statistic: float | None
    p_value: float | None
    significant: bool
    absolute_diff: float | None
    relative_lift: float | None
    ci: Interval | None
    relative_lift_ci: Interval | None
    sequential: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Return the API.md test shape (camelCase) plus the relative-lift interval."""
        return {
            "pValue": self.p_value,
            "significant": self.significant,
            "absoluteDiff": self.absolute_diff,
            "relativeLift": self.relative_lift,
            "ci": None if self.ci is None else list(self.ci),
            "relativeLiftCi": (
                None if self.relative_lift_ci is None else list(self.relative_lift_ci)
            ),
        }


@dataclass(frozen=True, slots=True)
class SrmResult:
    """Sample ratio mismatch check: users per arm against the configured split."""

    chi_square: float
    p_value: float
    mismatch: bool
    expected_split: int
    observed: dict[Variant, int]
    expected: dict[Variant, float]

    def to_dict(self) -> dict[str, Any]:
        """Return the camelCase ``srm`` object of the results answer."""
        return {
            "chiSquare": self.chi_square,
            "pValue": self.p_value,
            "mismatch": self.mismatch,
            "expectedSplit": self.expected_split,
            "observed": dict(self.observed),
            "expected": dict(self.expected),
        }


@dataclass(frozen=True, slots=True)
class VariantMetrics:
    """Descriptive figures of one arm, as shown in the dashboard."""

    users: int
    impressions: int
    clicks: int
    ctr: float | None
    buyers: int
    purchases: int
    conversion_rate: float | None
    revenue: float
    revenue_per_visitor: float | None

    def to_dict(self) -> dict[str, Any]:
        """Return the camelCase variant object of API.md."""
        return {
            "users": self.users,
            "impressions": self.impressions,
            "clicks": self.clicks,
            "ctr": self.ctr,
            "buyers": self.buyers,
            "purchases": self.purchases,
            "conversionRate": self.conversion_rate,
            "revenue": self.revenue,
            "revenuePerVisitor": self.revenue_per_visitor,
        }


@dataclass(frozen=True, slots=True)
class ExperimentResults:
    """Everything ``GET .../results`` shows, apart from the experiment's status."""

    control: VariantMetrics
    variant: VariantMetrics
    ctr: ComparisonResult
    conversion_rate: ComparisonResult
    revenue_per_visitor: ComparisonResult
    purchases_per_user: ComparisonResult
    revenue_per_visitor_capped: ComparisonResult | None
    purchases_per_user_capped: ComparisonResult | None
    srm: SrmResult
    low_confidence: bool
    winner: Variant | None
    sequential: bool

    def to_dict(self, *, status: str | None = None) -> dict[str, Any]:
        """Return the results answer of API.md with camelCase keys.

        Beyond API.md: ``tests.purchasesPerUser``, the ``...Capped`` tests when a cap is set,
        ``relativeLiftCi`` in each test, ``winner`` (None while SRM is flagged or nothing is
        significant on the primary metric) and ``sequential``.
        """
        tests: dict[str, Any] = {
            "ctr": self.ctr.to_dict(),
            "conversionRate": self.conversion_rate.to_dict(),
            "revenuePerVisitor": self.revenue_per_visitor.to_dict(),
            "purchasesPerUser": self.purchases_per_user.to_dict(),
        }
        if self.revenue_per_visitor_capped is not None:
            tests["revenuePerVisitorCapped"] = self.revenue_per_visitor_capped.to_dict()
        if self.purchases_per_user_capped is not None:
            tests["purchasesPerUserCapped"] = self.purchases_per_user_capped.to_dict()
        answer: dict[str, Any] = {} if status is None else {"status": status}
        answer.update(
            {
                "variants": {"control": self.control.to_dict(), "variant": self.variant.to_dict()},
                "tests": tests,
                "srm": self.srm.to_dict(),
                "lowConfidence": self.low_confidence,
                "winner": self.winner,
                "sequential": self.sequential,
            }
        )
        return answer


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


def ratio_delta_test(
    *,
    control: RatioMoments,
    variant: RatioMoments,
    alpha: float = DEFAULT_ALPHA,
    sequential: SequentialDesign | None = None,
) -> ComparisonResult:
    """Compare ratios of per-user sums (e.g. CTR) with delta-method variances.

    Parameters
    ----------
    control, variant : RatioMoments
        Moments of per-user numerators and denominators, each over that arm's n users.
    alpha : float
        Two-sided significance level; intervals have coverage 1 - alpha.
    sequential : SequentialDesign or None
        When given, the p-value and intervals are always valid under continuous monitoring.

    Returns
    -------
    ComparisonResult
        z statistic, p-value, variant - control difference, relative lift and intervals.
    """
    method = "delta-method z-test on the ratio of per-user sums"
    ratio_c, ratio_v = control.ratio, variant.ratio
    if ratio_c is None or ratio_v is None:
        return _not_computable(method, None, sequential)
    return _normal_comparison(
        method=method,
        control_value=ratio_c,
        variant_value=ratio_v,
        control_var=control.variance_of_ratio,
        variant_var=variant.variance_of_ratio,
        null_var=None,
        n_control=control.n,
        n_variant=variant.n,
        alpha=alpha,
        sequential=sequential,
    )


def two_proportion_z_test(
    *,
    control_successes: int,
    control_trials: int,
    variant_successes: int,
    variant_trials: int,
    alpha: float = DEFAULT_ALPHA,
    sequential: SequentialDesign | None = None,
) -> ComparisonResult:
    """Compare two proportions with the pooled z-test and an unpooled (Wald) interval.

    Parameters
    ----------
    control_successes, variant_successes : int
        Successes per arm (buyers for the conversion rate).
    control_trials, variant_trials : int
        Trials per arm (users for the conversion rate).
    alpha : float
        Two-sided significance level.
    sequential : SequentialDesign or None
        When given, use the always-valid p-value and intervals (unpooled variance).

    Returns
    -------
    ComparisonResult
        The statistic equals statsmodels ``proportions_ztest([x_v, x_c], [n_v, n_c])``.

    Notes
    -----
    The p-value uses the pooled variance (valid under H0) and the interval the unpooled one,
    so at the very edge of significance the two can disagree; the p-value decides.
    """
    method = "pooled two-proportion z-test"
    arms = ((control_successes, control_trials), (variant_successes, variant_trials))
    for successes, trials in arms:
        if trials < 0 or not 0 <= successes <= trials:
            raise ValueError("need 0 <= successes <= trials")
    if control_trials == 0 or variant_trials == 0:
        return _not_computable(method, None, sequential)
    p_c = control_successes / control_trials
    p_v = variant_successes / variant_trials
    pooled = (control_successes + variant_successes) / (control_trials + variant_trials)
    # The test assumes H0 (one common rate), hence pooled; the interval does not, hence unpooled.
    null_var = pooled * (1.0 - pooled) * (1.0 / control_trials + 1.0 / variant_trials)
    return _normal_comparison(
        method=method,
        control_value=p_c,
        variant_value=p_v,
        control_var=p_c * (1.0 - p_c) / control_trials,
        variant_var=p_v * (1.0 - p_v) / variant_trials,
        null_var=null_var,
        n_control=control_trials,
        n_variant=variant_trials,
        alpha=alpha,
        sequential=sequential,
    )


def welch_t_test(
    *,
    control: SampleMoments,
    variant: SampleMoments,
    alpha: float = DEFAULT_ALPHA,
    sequential: SequentialDesign | None = None,
) -> ComparisonResult:
    """Compare two means with Welch's unequal-variance t-test.

    Parameters
    ----------
    control, variant : SampleMoments
        Per-user moments of the metric (e.g. revenue per visitor) in each arm.
    alpha : float
        Two-sided significance level.
    sequential : SequentialDesign or None
        When given, use the always-valid (normal-mixture) p-value and intervals.

    Returns
    -------
    ComparisonResult
        The statistic, p-value and ``ci`` equal ``scipy.stats.ttest_ind(variant_values,
        control_values, equal_var=False)`` and its ``confidence_interval(1 - alpha)``.
    """
    method = "Welch's t-test"
    if control.n < 2 or variant.n < 2:
        return _not_computable(method, variant.mean - control.mean, sequential)
    vm_c, vm_v = control.variance_of_mean, variant.variance_of_mean
    se_sq = vm_c + vm_v
    if sequential is not None or se_sq <= 0:
        return _normal_comparison(
            method=method,
            control_value=control.mean,
            variant_value=variant.mean,
            control_var=vm_c,
            variant_var=vm_v,
            null_var=None,
            n_control=control.n,
            n_variant=variant.n,
            alpha=alpha,
            sequential=sequential,
        )
    # Welch-Satterthwaite degrees of freedom.
    df = se_sq * se_sq / (vm_c * vm_c / (control.n - 1) + vm_v * vm_v / (variant.n - 1))
    se = math.sqrt(se_sq)
    diff = variant.mean - control.mean
    t_stat = diff / se
    p_value = float(2.0 * stats.t.sf(abs(t_stat), df))
    half_width = float(stats.t.ppf(1.0 - alpha / 2.0, df)) * se
    lift, lift_ci = _relative_lift(
        control_value=control.mean,
        variant_value=variant.mean,
        control_var=vm_c,
        variant_var=vm_v,
        radius_factor=_z_critical(alpha),
    )
    return ComparisonResult(
        method=method,
        statistic=t_stat,
        p_value=p_value,
        significant=p_value < alpha,
        absolute_diff=diff,
        relative_lift=lift,
        ci=(diff - half_width, diff + half_width),
        relative_lift_ci=lift_ci,
    )


def sample_ratio_mismatch(
    *,
    control_users: int,
    variant_users: int,
    traffic_split: int,
    threshold: float = SRM_P_THRESHOLD,
) -> SrmResult:
    """Test users per arm against the configured split with Pearson's chi-square (1 df).

    Parameters
    ----------
    control_users, variant_users : int
        Users observed in each arm.
    traffic_split : int
        Percent of users configured to go to the variant (0..100).
    threshold : float
        Flag a mismatch when the p-value is below it (0.001: with daily looks, a looser
        threshold would cry wolf on healthy experiments).

    Returns
    -------
    SrmResult
        chi-square and p-value equal ``scipy.stats.chisquare([c, v], f_exp=[e_c, e_v])``.
    """
    if control_users < 0 or variant_users < 0:
        raise ValueError("user counts must be non-negative")
    if not 0 <= traffic_split <= 100:
        raise ValueError("traffic_split must be within 0..100")
    total = control_users + variant_users
    share = traffic_split / 100.0
    expected: dict[Variant, float] = {"control": total * (1.0 - share), "variant": total * share}
    observed: dict[Variant, int] = {"control": control_users, "variant": variant_users}
    if total == 0:
        chi_square, p_value = 0.0, 1.0
    elif expected["control"] == 0 or expected["variant"] == 0:
        # A 0 % or 100 % split: any user in the empty arm is a certain mismatch.
        stray = control_users if expected["control"] == 0 else variant_users
        chi_square, p_value = (math.inf, 0.0) if stray else (0.0, 1.0)
    else:
        chi_square = sum(
            (observed[arm] - expected[arm]) ** 2 / expected[arm] for arm in ("control", "variant")
        )
        p_value = float(stats.chi2.sf(chi_square, 1))
    return SrmResult(
        chi_square=chi_square,
        p_value=p_value,
        mismatch=p_value < threshold,
        expected_split=traffic_split,
        observed=observed,
        expected=expected,
    )


def analyse_experiment(
    *,
    control: VariantSums | UserArrays,
    variant: VariantSums | UserArrays,
    traffic_split: int,
    primary_metric: PrimaryMetric = "ctr",
    caps: MetricCaps | None = None,
    alpha: float = DEFAULT_ALPHA,
    sequential: SequentialDesign | None = None,
) -> ExperimentResults:
    """Compute the results of an experiment from per-user arrays or per-variant sums.

    Parameters
    ----------
    control, variant : VariantSums or UserArrays
        Each arm either as SQL sums or as per-user arrays of shape (n_users,).
    traffic_split : int
        Percent of users configured to go to the variant, for the SRM check.
    primary_metric : {"ctr", "conversion_rate", "revenue_per_visitor"}
        The experiment's decision metric; ``winner`` is read from it (the capped revenue test
        when a revenue cap is set).
    caps : MetricCaps or None
        Caps fixed before the start. Applied to ``UserArrays``; ``VariantSums`` must then
        carry the matching ``*_capped`` sums.
    alpha : float
        Two-sided significance level for every test.
    sequential : SequentialDesign or None
        Always-valid p-values and intervals, for experiments looked at repeatedly.

    Returns
    -------
    ExperimentResults
        Use ``to_dict(status=...)`` for the API answer.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError("alpha must be within (0, 1)")
    caps = caps or MetricCaps()
    c = _summarise(arm=control, caps=caps)
    v = _summarise(arm=variant, caps=caps)
    options: dict[str, Any] = {"alpha": alpha, "sequential": sequential}

    ctr = ratio_delta_test(control=c.ctr, variant=v.ctr, **options)
    conversion = two_proportion_z_test(
        control_successes=c.metrics.buyers,
        control_trials=c.metrics.users,
        variant_successes=v.metrics.buyers,
        variant_trials=v.metrics.users,
        **options,
    )
    revenue = welch_t_test(control=c.revenue, variant=v.revenue, **options)
    purchases = welch_t_test(control=c.purchases, variant=v.purchases, **options)
    revenue_capped = (
        welch_t_test(control=c.revenue_capped, variant=v.revenue_capped, **options)
        if c.revenue_capped is not None and v.revenue_capped is not None
        else None
    )
    purchases_capped = (
        welch_t_test(control=c.purchases_capped, variant=v.purchases_capped, **options)
        if c.purchases_capped is not None and v.purchases_capped is not None
        else None
    )
    srm = sample_ratio_mismatch(
        control_users=c.metrics.users, variant_users=v.metrics.users, traffic_split=traffic_split
    )
    low_confidence = any(
        arm.users < MIN_USERS_PER_VARIANT or arm.buyers < MIN_CONVERSIONS_PER_VARIANT
        for arm in (c.metrics, v.metrics)
    )
    decisive = {
        "ctr": ctr,
        "conversion_rate": conversion,
        "revenue_per_visitor": revenue_capped or revenue,
    }[primary_metric]
    return ExperimentResults(
        control=c.metrics,
        variant=v.metrics,
        ctr=ctr,
        conversion_rate=conversion,
        revenue_per_visitor=revenue,
        purchases_per_user=purchases,
        revenue_per_visitor_capped=revenue_capped,
        purchases_per_user_capped=purchases_capped,
        srm=srm,
        low_confidence=low_confidence,
        winner=_winner(test=decisive, srm=srm),
        sequential=sequential is not None,
    )


# --------------------------------------------------------------------------------------------
# Internals
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _ArmSummary:
    metrics: VariantMetrics
    ctr: RatioMoments
    revenue: SampleMoments
    purchases: SampleMoments
    revenue_capped: SampleMoments | None
    purchases_capped: SampleMoments | None


def _summarise(*, arm: VariantSums | UserArrays, caps: MetricCaps) -> _ArmSummary:
    if isinstance(arm, UserArrays):
        return _summarise_users(users=arm, caps=caps)
    return _summarise_sums(sums=arm, caps=caps)


def _summarise_users(*, users: UserArrays, caps: MetricCaps) -> _ArmSummary:
    # Two-pass moments straight from the arrays, the numerically safest form.
    revenue = np.asarray(users.revenue, dtype=np.float64)
    purchases = np.asarray(users.purchases, dtype=np.float64)
    metrics = _variant_metrics(
        users=users.users,
        impressions=int(np.sum(_as_counts(users.impressions))),
        clicks=int(np.sum(_as_counts(users.clicks))),
        buyers=int(users.buyer_mask().sum()),
        purchases=int(np.sum(_as_counts(users.purchases))),
        revenue=float(revenue.sum()),
    )
    return _ArmSummary(
        metrics=metrics,
        ctr=RatioMoments.from_values(numerator=users.clicks, denominator=users.impressions),
        revenue=SampleMoments.from_values(values=revenue),
        purchases=SampleMoments.from_values(values=purchases),
        revenue_capped=(
            None
            if caps.revenue is None
            else SampleMoments.from_values(values=np.minimum(revenue, caps.revenue))
        ),
        purchases_capped=(
            None
            if caps.purchases is None
            else SampleMoments.from_values(values=np.minimum(purchases, caps.purchases))
        ),
    )


def _summarise_sums(*, sums: VariantSums, caps: MetricCaps) -> _ArmSummary:
    n = sums.users
    if caps.revenue is not None and (
        sums.sum_revenue_capped is None or sums.sum_revenue_capped_sq is None
    ):
        raise ValueError("a revenue cap is set but the sums carry no capped revenue")
    if caps.purchases is not None and (
        sums.sum_purchases_capped is None or sums.sum_purchases_capped_sq is None
    ):
        raise ValueError("a purchases cap is set but the sums carry no capped purchases")
    metrics = _variant_metrics(
        users=n,
        impressions=int(sums.sum_impressions),
        clicks=int(sums.sum_clicks),
        buyers=int(sums.buyers),
        purchases=int(sums.sum_purchases),
        revenue=float(sums.sum_revenue),
    )
    return _ArmSummary(
        metrics=metrics,
        ctr=RatioMoments.from_sums(
            n=n,
            sum_num=sums.sum_clicks,
            sum_den=sums.sum_impressions,
            sum_num_sq=sums.sum_clicks_sq,
            sum_den_sq=sums.sum_impressions_sq,
            sum_cross=sums.sum_impr_clicks,
        ),
        revenue=SampleMoments.from_sums(n=n, total=sums.sum_revenue, total_sq=sums.sum_revenue_sq),
        purchases=SampleMoments.from_sums(
            n=n, total=sums.sum_purchases, total_sq=sums.sum_purchases_sq
        ),
        revenue_capped=(
            None
            if caps.revenue is None
            or sums.sum_revenue_capped is None
            or sums.sum_revenue_capped_sq is None
            else SampleMoments.from_sums(
                n=n, total=sums.sum_revenue_capped, total_sq=sums.sum_revenue_capped_sq
            )
        ),
        purchases_capped=(
            None
            if caps.purchases is None
            or sums.sum_purchases_capped is None
            or sums.sum_purchases_capped_sq is None
            else SampleMoments.from_sums(
                n=n, total=sums.sum_purchases_capped, total_sq=sums.sum_purchases_capped_sq
            )
        ),
    )


def _variant_metrics(
    *, users: int, impressions: int, clicks: int, buyers: int, purchases: int, revenue: float
) -> VariantMetrics:
    return VariantMetrics(
        users=users,
        impressions=impressions,
        clicks=clicks,
        ctr=clicks / impressions if impressions else None,
        buyers=buyers,
        purchases=purchases,
        conversion_rate=buyers / users if users else None,
        revenue=revenue,
        revenue_per_visitor=revenue / users if users else None,
    )


def _normal_comparison(
    *,
    method: str,
    control_value: float,
    variant_value: float,
    control_var: float,
    variant_var: float,
    null_var: float | None,
    n_control: int,
    n_variant: int,
    alpha: float,
    sequential: SequentialDesign | None,
) -> ComparisonResult:
    """Compare two independent, asymptotically normal estimates (variances of the estimates)."""
    diff = variant_value - control_value
    var = control_var + variant_var
    test_var = var if null_var is None else null_var
    if not (math.isfinite(var) and var > 0 and math.isfinite(test_var) and test_var > 0):
        return _not_computable(method, diff, sequential)
    statistic = diff / math.sqrt(test_var)
    if sequential is None:
        p_value = float(2.0 * stats.norm.sf(abs(statistic)))
        radius_factor = _z_critical(alpha)
        half_width = radius_factor * math.sqrt(var)
    else:
        tau_sq = _mixture_variance(
            var=var, n_control=n_control, n_variant=n_variant, design=sequential, alpha=alpha
        )
        p_value = _mixture_p_value(estimate=diff, var=var, tau_sq=tau_sq)
        half_width = _mixture_radius(var=var, tau_sq=tau_sq, alpha=alpha)
        radius_factor = half_width / math.sqrt(var)
    lift, lift_ci = _relative_lift(
        control_value=control_value,
        variant_value=variant_value,
        control_var=control_var,
        variant_var=variant_var,
        radius_factor=radius_factor,
    )
    return ComparisonResult(
        method=method if sequential is None else f"{method}, always-valid (normal mixture)",
        statistic=statistic,
        p_value=p_value,
        significant=p_value < alpha,
        absolute_diff=diff,
        relative_lift=lift,
        ci=(diff - half_width, diff + half_width),
        relative_lift_ci=lift_ci,
        sequential=sequential is not None,
    )


def _relative_lift(
    *,
    control_value: float,
    variant_value: float,
    control_var: float,
    variant_var: float,
    radius_factor: float,
) -> tuple[float | None, Interval | None]:
    """Return variant / control - 1 and its delta-method interval (arms independent).

    Var(v / c) ~= var_v / c**2 + v**2 var_c / c**4. ``radius_factor`` is the critical value
    (z or the sequential radius per standard error) so both intervals share one rule.
    """
    if control_value <= 0:
        return None, None
    lift = variant_value / control_value - 1.0
    var = variant_var / control_value**2 + variant_value**2 * control_var / control_value**4
    if not math.isfinite(var):
        return lift, None
    half_width = radius_factor * math.sqrt(var)
    return lift, (lift - half_width, lift + half_width)


def _not_computable(
    method: str, diff: float | None, sequential: SequentialDesign | None
) -> ComparisonResult:
    return ComparisonResult(
        method=method,
        statistic=None,
        p_value=None,
        significant=False,
        absolute_diff=diff,
        relative_lift=None,
        ci=None,
        relative_lift_ci=None,
        sequential=sequential is not None,
    )


@lru_cache(maxsize=32)
def _z_critical(alpha: float) -> float:
    return float(stats.norm.ppf(1.0 - alpha / 2.0))


@lru_cache(maxsize=32)
def _optimal_mixture_ratio(alpha: float) -> float:
    """Return x = tau**2 / V that makes the mixture interval narrowest when V is reached.

    The half-width squared is V (1 + x) / x * (log(1 + x) - 2 log alpha); setting its
    derivative in x to zero gives x = log(1 + x) - 2 log alpha, a contraction (slope
    1 / (1 + x) < 1), so plain fixed-point iteration converges.
    """
    x = 1.0
    for _ in range(200):
        updated = math.log1p(x) - 2.0 * math.log(alpha)
        if abs(updated - x) < 1e-12:
            break
        x = updated
    return x


def _mixture_variance(
    *, var: float, n_control: int, n_variant: int, design: SequentialDesign, alpha: float
) -> float:
    """Return the mixing variance tau**2 of the normal prior on the difference."""
    # var ~= s**2 (1/n_c + 1/n_v); rescaling to the planned sizes keeps tau (nearly) fixed as
    # users arrive. The guarantee is for a fixed tau; only the plug-in estimate of s**2 moves,
    # and it settles within the first days.
    per_user = var / (1.0 / n_control + 1.0 / n_variant)
    planned_var = per_user * 2.0 / design.planned_users_per_variant
    return _optimal_mixture_ratio(alpha) * planned_var


def _mixture_p_value(*, estimate: float, var: float, tau_sq: float) -> float:
    """Return the always-valid p-value min(1, 1 / Lambda) of the normal-mixture SPRT.

    With theta_hat ~ N(theta, V) and a N(0, tau**2) mixture over theta under H1,
    Lambda = sqrt(V / (V + tau**2)) * exp(theta_hat**2 tau**2 / (2 V (V + tau**2))).
    Lambda is a nonnegative martingale under H0, so by Ville's inequality
    P(Lambda ever exceeds 1 / alpha) <= alpha: looking after every day is safe.
    """
    total = var + tau_sq
    log_lambda = 0.5 * math.log(var / total) + estimate * estimate * tau_sq / (2.0 * var * total)
    return math.exp(min(0.0, -log_lambda))


def _mixture_radius(*, var: float, tau_sq: float, alpha: float) -> float:
    """Return the half-width of the always-valid interval: {theta : Lambda(theta) < 1/alpha}."""
    total = var + tau_sq
    return math.sqrt(var * total / tau_sq * (math.log(total / var) - 2.0 * math.log(alpha)))


def _winner(*, test: ComparisonResult, srm: SrmResult) -> Variant | None:
    # A broken split means the arms are not comparable populations: no winner, whatever p says.
    if srm.mismatch or not test.significant or test.absolute_diff is None:
        return None
    return "variant" if test.absolute_diff > 0 else "control"
