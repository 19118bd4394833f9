"""The verdict rule: paired Student t over matched seeds, Holm across a report, a declared equivalence margin.

With 3-10 seeds a Student t interval on the paired differences stays close to its nominal
coverage and a percentile bootstrap does not (at n = 3 its 95% interval is the range of the
three differences). An exact sign-flip permutation test is reported beside it as a
distribution-free check; it cannot go below p = 2/2^n (0.25 at n = 3), so at these sizes it
can confirm a t test, not decide. "No difference found" is not "no difference": *equivalent*
needs the whole interval inside a margin declared before looking.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Iterable, Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
ALPHA = 0.05
MIN_SEEDS = 3
SUPPORTED, CONTRADICTED, EQUIVALENT, NOT_RESOLVED = "supported", "contradicted", "equivalent", "not resolved"
VERDICTS = (SUPPORTED, CONTRADICTED, EQUIVALENT, NOT_RESOLVED)
# Declared margins, in the metric's own units (accuracies are fractions): options of the report.
DEFAULT_ACCURACY_MARGIN = 0.005
DEFAULT_SSIM_MARGIN = 0.03

RULE = (
    f"Each comparison is a paired difference over matched seeds (configs repeated within a seed are averaged first, "
    f"so n counts seeds). Interval: the paired Student t {CONFIDENCE:.0%} interval; p: the two-sided paired t test "
    f"(`scipy.stats.ttest_rel`), Holm-adjusted across every claim test in this report; beside it, the exact sign-flip "
    f"permutation p (`scipy.stats.permutation_test`), which cannot go below 2/2^n (0.25 at n = 3, 0.0625 at n = 5) and so "
    f"can confirm, not decide, at these sizes; '†' marks where the two disagree at {ALPHA}. Verdicts: *supported* / "
    f"*contradicted* when the Holm-adjusted p < {ALPHA} and the interval lies on the claimed / the other side of 0; "
    f"*equivalent* when the whole interval lies inside the declared margin (±{{accuracy_margin}} accuracy points, "
    f"±{{ssim_margin}} SSIM); *not resolved* otherwise, and always when n < {MIN_SEEDS}."
)


@dataclass(frozen=True)
class Margins:
    """Equivalence margins, declared before looking: accuracy as a fraction, SSIM in its own units."""

    accuracy: float = DEFAULT_ACCURACY_MARGIN
    ssim: float = DEFAULT_SSIM_MARGIN

    def for_metric(self, metric: str) -> float:
        return self.ssim if metric.endswith("ssim") else self.accuracy

    def rule(self) -> str:
        return RULE.format(accuracy_margin=f"{100 * self.accuracy:g}", ssim_margin=f"{self.ssim:g}")


@dataclass(frozen=True)
class PairedTest:
    """Mean of paired differences (b - a) with its t interval and p-values; NaN where n is too small."""

    n: int
    mean: float
    low: float
    high: float
    p: float  # two-sided paired t test
    p_sign_flip: float  # exact two-sided sign-flip permutation test
    p_holm: float = math.nan  # p adjusted across the report's tests (holm); NaN until then

    @property
    def methods_disagree(self) -> bool:
        """The t test and the sign-flip test fall on different sides of ALPHA."""
        if math.isnan(self.p) or math.isnan(self.p_sign_flip):
            return False
        return (self.p < ALPHA) != (self.p_sign_flip < ALPHA)


def _clean(values: Iterable[float]) -> np.ndarray:
    array = np.asarray(list(values), dtype=float)
    return array[~np.isnan(array)]


def paired_test(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> PairedTest:
    """b - a over pairs (one value per seed on each side); pairs with a NaN are dropped."""
    a_arr, b_arr = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    keep = ~(np.isnan(a_arr) | np.isnan(b_arr))
    a_arr, b_arr = a_arr[keep], b_arr[keep]
    n = len(a_arr)
    if n == 0:
        return PairedTest(0, math.nan, math.nan, math.nan, math.nan, math.nan)
    d = b_arr - a_arr
    mean = float(d.mean())
    if n == 1:
        return PairedTest(1, mean, math.nan, math.nan, math.nan, math.nan)
    if np.all(d == d[0]):  # no spread: scipy gives NaN; the interval is the point
        p = 1.0 if mean == 0 else 0.0
        return PairedTest(n, mean, mean, mean, p, sign_flip_p(d))
    result = stats.ttest_rel(b_arr, a_arr)
    interval = result.confidence_interval(confidence)
    return PairedTest(n, mean, float(interval.low), float(interval.high), float(result.pvalue), sign_flip_p(d))


def sign_flip_p(differences: np.ndarray) -> float:
    """Exact two-sided p of the mean difference under random sign flips (all 2^n of them)."""
    d = _clean(differences)
    if len(d) < 2:
        return math.nan
    result = stats.permutation_test(
        (d,), np.mean, permutation_type="samples", alternative="two-sided", n_resamples=np.inf, vectorized=True
    )
    return float(min(1.0, result.pvalue))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values; NaN entries stay NaN and do not count as tests."""
    values = np.asarray(pvalues, dtype=float)
    tested = np.flatnonzero(~np.isnan(values))
    adjusted = np.full(len(values), math.nan)
    m = len(tested)
    running = 0.0
    for rank, index in enumerate(tested[np.argsort(values[tested], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * values[index]))
        adjusted[index] = running
    return adjusted.tolist()


def with_holm(tests: Sequence[PairedTest]) -> list[PairedTest]:
    """The tests, each with its Holm-adjusted p across all of them."""
    return [replace(test, p_holm=p) for test, p in zip(tests, holm([t.p for t in tests]))]


def decide(test: PairedTest, expect: int, margin: float) -> tuple[str, str]:
    """(verdict, reason) for a Holm-adjusted test of a claim predicting the sign `expect` (+1 or -1)."""
    if test.n == 0:
        return NOT_RESOLVED, "no runs of the two sides share a seed and setting"
    if test.n < MIN_SEEDS:
        return NOT_RESOLVED, f"{test.n} matched seed{'s' if test.n != 1 else ''}: at least {MIN_SEEDS} are needed"
    p = test.p if math.isnan(test.p_holm) else test.p_holm
    side = 1 if test.low > 0 else -1 if test.high < 0 else 0
    if p < ALPHA and side != 0:
        return (SUPPORTED, "") if side == expect else (CONTRADICTED, "")
    if -margin <= test.low and test.high <= margin:
        return EQUIVALENT, f"the interval lies inside ±{margin:g}"
    if side != 0:
        return NOT_RESOLVED, f"Holm-adjusted p = {p:.3g} is not below {ALPHA}"
    return NOT_RESOLVED, "the interval contains 0 and reaches beyond the equivalence margin"
