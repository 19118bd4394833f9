"""The verdict rule: exact against scipy, Holm on a known case, each verdict from a constructed case, and calibration.

The calibration is a seeded simulation: under a null effect the interval must cover the
true mean about as often as it says, and Holm must keep a report's false *supported*
verdicts rare; a real effect must still be found.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from analysis.verdicts import (
    ALPHA,
    CONTRADICTED,
    EQUIVALENT,
    NO_VERDICT,
    NOT_RESOLVED,
    SUPPORTED,
    Margins,
    PairedTest,
    decide,
    holm,
    paired_test,
    sign_flip_p,
    with_holm,
)


def test_paired_test_matches_scipy():
    a = np.array([0.91, 0.90, 0.93, 0.92, 0.905])
    b = np.array([0.89, 0.895, 0.90, 0.915, 0.88])
    test = paired_test(a, b)
    ref = stats.ttest_rel(b, a)
    interval = ref.confidence_interval(0.95)
    assert test.n == 5 and math.isclose(test.mean, (b - a).mean())
    assert math.isclose(test.low, interval.low) and math.isclose(test.high, interval.high)
    assert math.isclose(test.p, ref.pvalue)
    # the same interval from the t distribution by hand
    d = b - a
    half = stats.t.ppf(0.975, 4) * d.std(ddof=1) / math.sqrt(5)
    assert math.isclose(test.low, d.mean() - half) and math.isclose(test.high, d.mean() + half)


def test_sign_flip_p_is_exact():
    d = np.array([0.3, -0.1, 0.2, 0.4])
    # all 16 sign patterns, counted by hand: |mean| at least the observed one
    observed = abs(d.mean())
    flips = [abs((d * np.array(signs)).mean()) for signs in np.array(np.meshgrid(*[[-1, 1]] * 4)).T.reshape(-1, 4)]
    expected = np.mean([f >= observed - 1e-12 for f in flips])
    assert math.isclose(sign_flip_p(d), expected)
    # its floor: 2 / 2^n when every difference has the same sign
    assert math.isclose(sign_flip_p(np.array([1.0, 2.0, 3.0])), 0.25)
    assert math.isclose(sign_flip_p(np.array([1.0, 2.0, 3.0, 4.0, 5.0])), 2 / 32)


def test_small_and_degenerate_inputs():
    assert paired_test([], []).n == 0
    one = paired_test([1.0], [2.0])
    assert one.n == 1 and one.mean == 1.0 and math.isnan(one.low) and math.isnan(one.p)
    same = paired_test([1.0, 2.0, 3.0], [1.5, 2.5, 3.5])  # constant difference: no spread
    assert same.low == same.high == same.mean == 0.5 and same.p == 0.0
    dropped = paired_test([1.0, math.nan, 3.0, 4.0], [1.1, 2.0, math.nan, 4.3])  # pairs with a NaN are dropped
    assert dropped.n == 2


def test_holm_on_a_known_case():
    # sorted p: 0.005, 0.01, 0.03, 0.04 with m = 4 -> 0.02, 0.03, 0.06, then max(0.04, 0.06) = 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, math.nan, 0.01]) == pytest.approx([0.5, math.nan, 0.02], nan_ok=True)  # NaN is not a test
    assert holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])  # capped at 1, monotone
    assert holm([0.2, 0.01]) == pytest.approx([0.2, 0.02])
    assert holm([]) == []


def _test(mean: float, half: float, n: int = 5, p: float = 0.01, p_holm: float = math.nan) -> PairedTest:
    return PairedTest(n, mean, mean - half, mean + half, p, 0.0625, p_holm)


def test_each_verdict_from_a_constructed_case():
    margin = 0.005
    assert decide(_test(-0.03, 0.01, p_holm=0.02), expect=-1, margin=margin) == (SUPPORTED, "")
    assert decide(_test(0.03, 0.01, p_holm=0.02), expect=-1, margin=margin) == (CONTRADICTED, "")
    verdict, reason = decide(_test(0.001, 0.003, p=0.5, p_holm=0.9), expect=-1, margin=margin)
    assert verdict == EQUIVALENT and "margin" in reason
    verdict, reason = decide(_test(-0.01, 0.02, p=0.3, p_holm=0.6), expect=-1, margin=margin)
    assert verdict == NOT_RESOLVED and "contains 0" in reason
    # the interval is on one side, but the adjusted p is not small enough
    verdict, reason = decide(_test(-0.03, 0.01, p=0.01, p_holm=0.08), expect=-1, margin=margin)
    assert verdict == NOT_RESOLVED and "Holm" in reason
    # below the minimum n there is no verdict, whatever the numbers say
    assert decide(_test(-0.03, 0.001, n=2, p=1e-6, p_holm=1e-6), expect=-1, margin=margin) == (NO_VERDICT, "n = 2 < 3")
    assert decide(_test(-0.03, 0.001, n=4, p=1e-6, p_holm=1e-6), expect=-1, margin=margin, min_n=5) == (NO_VERDICT, "n = 4 < 5")


def test_equivalence_needs_a_declared_margin_and_a_narrow_interval():
    d_small = np.array([0.001, -0.0005, 0.0008, 0.0, 0.0003, -0.0002])
    test = with_holm([paired_test(np.zeros(6), d_small)])[0]
    assert decide(test, -1, Margins().for_metric("probe/latent/mlp_acc"))[0] == EQUIVALENT
    assert decide(test, -1, 0.0001)[0] == NOT_RESOLVED  # a tighter margin is not shown
    assert Margins().for_metric("recon/ssim") == 0.03 and Margins(ssim=0.01).for_metric("recon/ssim") == 0.01
    assert "±0.5 accuracy points" in Margins().rule() and "±0.03 SSIM" in Margins().rule()


def _null_differences(rng: np.random.Generator, kind: str, n: int, reps: int) -> np.ndarray:
    if kind == "normal":
        return rng.normal(0.0, 1.0, size=(reps, n))
    return rng.standard_t(3, size=(reps, n))  # heavy tails, still mean 0


@pytest.mark.parametrize("kind", ["normal", "heavy"])
@pytest.mark.parametrize("n", [3, 5, 10])
def test_calibration_under_a_null_effect(kind, n):
    rng = np.random.default_rng(1000 * n + (kind == "heavy"))
    reps = 2000
    draws = _null_differences(rng, kind, n, reps)
    tests = [paired_test(np.zeros(n), d) for d in draws]
    coverage = np.mean([t.low <= 0.0 <= t.high for t in tests])
    assert coverage >= 0.93, coverage
    # One report makes ten claim tests; under the null none should come out supported after Holm.
    reports = [with_holm(tests[i : i + 10]) for i in range(0, reps, 10)]
    false_per_report = [sum(decide(t, -1, 1e-9)[0] == SUPPORTED for t in report) for report in reports]
    assert np.mean([f > 0 for f in false_per_report]) <= 0.05
    assert np.mean([decide(t, -1, 1e-9)[0] == SUPPORTED for report in reports for t in report]) <= 0.05


def test_a_true_effect_of_two_standard_deviations_is_found_at_n5():
    rng = np.random.default_rng(7)
    draws = rng.normal(-2.0, 1.0, size=(1000, 5))
    found = np.mean([decide(with_holm([paired_test(np.zeros(5), d)])[0], -1, 0.1)[0] == SUPPORTED for d in draws])
    assert found > 0.8, found
    # and it is never called contradicted
    assert not any(decide(paired_test(np.zeros(5), d), -1, 0.1)[0] == CONTRADICTED for d in draws[:200])


def test_methods_disagree_flag():
    at_n3 = paired_test(np.zeros(3), np.array([-0.10, -0.09, -0.11]))  # t test significant, sign flips cannot be
    assert at_n3.p < ALPHA and at_n3.p_sign_flip == 0.25 and at_n3.methods_disagree
    at_n8 = paired_test(np.zeros(8), np.array([-0.10, -0.09, -0.11, -0.10, -0.12, -0.08, -0.1, -0.095]))
    assert at_n8.p < ALPHA and at_n8.p_sign_flip < ALPHA and not at_n8.methods_disagree
