"""The verdict rule: paired Student t over matched seeds, TOST for equivalence, Holm within a declared family.

With 3-10 seeds a Student t interval on the paired differences stays close to its nominal
coverage and a percentile bootstrap does not (at n = 3 its 95% interval is the range of the
three differences). An exact sign-flip permutation test is reported beside it as a
distribution-free check; it cannot go below p = 2/2^n (0.25 at n = 3), so at these sizes it
can confirm a t test, not decide. "No difference found" is not "no difference": *within the
margin* needs the TOST (the 90% interval inside a margin declared before looking), and its p is
Holm-adjusted with the difference p in the same family (`holm_family`, of the size the plan
declares). A comparison can be both different and within the margin; below the plan's minimum n
there is no verdict. Where per-image test predictions exist, `two_level_test` puts the test-set
variance into the interval too (seeds, then test images, paired on the same images).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Iterable, Sequence

import numpy as np
from scipy import stats

from analysis.stats import CONFIDENCE

ALPHA = 0.05
MIN_SEEDS = 3
MIN_N = 5  # the paper plan's minimum n for a verdict (`analysis.plan`); MIN_SEEDS is perf.precision_check's
SUPPORTED, CONTRADICTED, EQUIVALENT, NOT_RESOLVED = "supported", "contradicted", "within the margin", "not resolved"
NO_VERDICT = "no verdict"
VERDICTS = (SUPPORTED, CONTRADICTED, EQUIVALENT, NOT_RESOLVED, NO_VERDICT)
SEED_ONLY, TWO_LEVEL = "seed-only t", "two-level bootstrap"
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
    se: float = math.nan  # standard error of the mean difference behind the interval
    df: int = 0  # degrees of freedom of the t quantile
    p_tost: float = math.nan  # TOST p for |difference| < margin (NaN until `with_tost`)
    p_tost_holm: float = math.nan
    interval: str = SEED_ONLY  # what the interval accounts for: seeds only, or seeds and test images
    seed_low: float = math.nan  # the seed-only t interval, kept beside a two-level one
    seed_high: float = math.nan

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
        return PairedTest(n, mean, mean, mean, p, sign_flip_p(d), se=0.0, df=n - 1, seed_low=mean, seed_high=mean)
    result = stats.ttest_rel(b_arr, a_arr)
    interval = result.confidence_interval(confidence)
    low, high = float(interval.low), float(interval.high)
    se = float(d.std(ddof=1) / math.sqrt(n))
    return PairedTest(n, mean, low, high, float(result.pvalue), sign_flip_p(d), se=se, df=n - 1, seed_low=low, seed_high=high)


def tost_p(mean: float, se: float, df: int, margin: float) -> float:
    """Two one-sided t tests of |true difference| < margin: the larger of the two one-sided p-values.
    p < alpha exactly when the (1 - 2 alpha) interval, mean -/+ t(1 - alpha, df) se, lies inside (-margin, +margin)."""
    if math.isnan(mean) or math.isnan(se) or df < 1 or not margin > 0:
        return math.nan
    if se == 0:
        return 0.0 if abs(mean) < margin else 1.0
    lower = float(stats.t.sf((mean + margin) / se, df))  # H0: difference <= -margin
    upper = float(stats.t.cdf((mean - margin) / se, df))  # H0: difference >= +margin
    return max(lower, upper)


def with_tost(test: PairedTest, margin: float) -> PairedTest:
    return replace(test, p_tost=tost_p(test.mean, test.se, test.df, margin))


def two_level_test(
    d: np.ndarray, confidence: float = CONFIDENCE, reps: int = 2000, seed: int = 0, seed_only: PairedTest | None = None
) -> PairedTest:
    """Mean of per-image paired differences d[seed, image] (b - a, on the same test images for every seed) with
    a two-level bootstrap: resample seeds, then test images (the same images for both models and every seed),
    so the interval holds the seed-to-seed and the test-set variance. The bootstrap standard error (seed level
    inflated by n/(n-1), the bootstrap's known shrinkage) sets a t interval with n - 1 degrees of freedom. It errs wide:
    resampling both crossed levels counts the seed-by-image noise more than once, and the image part gets the seed
    level's degrees of freedom, so in `tests/test_two_level.py`'s simulation it covers 98-100% at nominal 95%."""
    d = np.asarray(d, dtype=float)
    n, images = d.shape
    base = seed_only or paired_test(np.zeros(n), d.mean(axis=1), confidence)
    if n < 2 or images < 2:
        return base
    rng = np.random.default_rng(seed)
    estimates = []
    chunk = max(1, min(reps, 2_000_000 // images))
    done = 0
    while done < reps:
        size = min(chunk, reps - done)
        seeds = rng.multinomial(n, np.full(n, 1 / n), size=size).astype(float)  # (size, n) counts
        weights = rng.multinomial(images, np.full(images, 1 / images), size=size).astype(float)  # (size, images)
        estimates.append(((seeds @ d) * weights).sum(axis=1) / (n * images))
        done += size
    se = float(np.std(np.concatenate(estimates), ddof=1) * math.sqrt(n / (n - 1)))
    mean = float(d.mean())
    if se == 0:
        return replace(base, interval=TWO_LEVEL)
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * se
    p = float(2 * stats.t.sf(abs(mean) / se, n - 1))
    return replace(
        base, mean=mean, low=mean - half, high=mean + half, p=p, se=se, df=n - 1, interval=TWO_LEVEL, seed_low=base.low, seed_high=base.high
    )


def sign_flip_p(differences: np.ndarray) -> float:
    """Exact two-sided p of the mean difference under random sign flips (all 2^n of them)."""
    d = _clean(differences)
    if len(d) < 2:
        return math.nan
    result = stats.permutation_test((d,), np.mean, permutation_type="samples", alternative="two-sided", n_resamples=np.inf, vectorized=True)
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


def holm_family(tests: Sequence[PairedTest], declared: int | None = None) -> list[PairedTest]:
    """Holm across one declared family: the difference p and the TOST p of every test together (2 hypotheses
    per test), counting `declared` tests whatever was measured (a declared test without data counts as p = 1),
    so passing fewer runs cannot shrink the family."""
    size = max(len(tests), declared or 0)
    diff = [1.0 if math.isnan(t.p) else t.p for t in tests]
    tost = [1.0 if math.isnan(t.p_tost) else t.p_tost for t in tests]
    adjusted = holm(diff + tost + [1.0] * (2 * (size - len(tests))))
    k = len(tests)
    return [
        replace(t, p_holm=math.nan if math.isnan(t.p) else adjusted[i], p_tost_holm=math.nan if math.isnan(t.p_tost) else adjusted[k + i])
        for i, t in enumerate(tests)
    ]


def decide(test: PairedTest, expect: int, margin: float, alpha: float = ALPHA, min_n: int = MIN_SEEDS) -> tuple[str, str]:
    """(verdict, reason) for a Holm-adjusted test of a claim predicting the sign `expect` (+1 or -1).

    *different* (supported / contradicted: Holm p < alpha, the interval on one side of 0) and *within the
    margin* (Holm-adjusted TOST p < alpha) are decided apart, and both are said where both hold. Below
    min_n seeds: "no verdict"."""
    if test.n == 0:
        return NOT_RESOLVED, "no runs of the two sides share a seed and setting"
    if test.n < min_n:
        return NO_VERDICT, f"n = {test.n} < {min_n}"
    p = test.p if math.isnan(test.p_holm) else test.p_holm
    side = 1 if test.low > 0 else -1 if test.high < 0 else 0
    different = p < alpha and side != 0
    if math.isnan(test.p_tost):  # no TOST made: the interval inside the margin, unadjusted
        within = -margin <= test.low and test.high <= margin
    else:
        within = (test.p_tost if math.isnan(test.p_tost_holm) else test.p_tost_holm) < alpha
    if different:
        word = SUPPORTED if side == expect else CONTRADICTED
        return (f"{word}; {EQUIVALENT}", "different from 0 and within the margin") if within else (word, "")
    if within:
        return EQUIVALENT, "the TOST rejects a difference as large as the margin"
    if side != 0:
        return NOT_RESOLVED, f"Holm-adjusted p = {p:.3g} is not below {alpha}"
    return NOT_RESOLVED, "the interval contains 0 and the TOST does not reject the margin"
