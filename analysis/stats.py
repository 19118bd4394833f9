"""Intervals over seeds: Student t for a mean (paired differences: `analysis.verdicts`).

The paper reports single runs; these say whether a difference is larger than what
changing the seed does. With one value there is no interval: low/high are NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np
from scipy import stats

CONFIDENCE = 0.95  # every interval the analysis reports, and the verdicts' tests


@dataclass(frozen=True)
class Estimate:
    """A mean with its interval; low/high are NaN where n < 2."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def has_interval(self) -> bool:
        return not (math.isnan(self.low) or math.isnan(self.high))

    def excludes_zero(self) -> int:
        """+1 if the whole interval is above 0, -1 if below, 0 if it contains 0 or is missing."""
        if not self.has_interval:
            return 0
        return 1 if self.low > 0 else -1 if self.high < 0 else 0


def _clean(values: Iterable[float]) -> np.ndarray:
    array = np.asarray(list(values), dtype=float)
    return array[~np.isnan(array)]


def t_interval(values: Iterable[float], confidence: float = CONFIDENCE) -> Estimate:
    """Mean and Student t interval (n - 1 degrees of freedom); NaN values are dropped."""
    x = _clean(values)
    n = len(x)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if n == 1:
        return Estimate(mean, math.nan, math.nan, 1)
    sem = float(x.std(ddof=1) / math.sqrt(n))
    if sem == 0:  # identical values: scipy would give NaN, the interval is the point
        return Estimate(mean, mean, mean, n)
    low, high = stats.t.interval(confidence, n - 1, loc=mean, scale=sem)
    return Estimate(mean, float(low), float(high), n)
