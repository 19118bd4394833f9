"""How numbers read in the reports: values, estimates with their intervals, differences, p values, pipe tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.measures import Measure
from analysis.stats import Estimate


def format_value(value: object) -> str:
    if value is None or pd.isna(value):
        return "—"
    return f"{value:g}" if isinstance(value, (float, np.floating)) else str(value)


def format_int(value: object) -> str:
    return "—" if value is None or pd.isna(value) else str(int(value))


def format_estimate(est: Estimate, measure: Measure, with_interval: bool = True) -> str:
    """'80.05 ± 1.23' (accuracies in %); the mean alone where there is no interval."""
    if math.isnan(est.mean):
        return "—"
    scale = 100 if measure.percent else 1
    text = f"{est.mean * scale:.{measure.digits}f}"
    if with_interval and est.has_interval:
        text += f" ± {(est.high - est.low) / 2 * scale:.{measure.digits}f}"
    return text


def format_difference(mean: float, low: float, high: float, measure: Measure) -> str:
    """'−10.45 [−12.10, −8.30]': percentage points for accuracies; the mean alone with no interval."""
    if mean is None or pd.isna(mean):
        return "—"
    scale = 100 if measure.percent else 1
    digits = measure.digits
    text = f"{mean * scale:+.{digits}f}"
    if not (pd.isna(low) or pd.isna(high)):
        text += f" [{low * scale:+.{digits}f}, {high * scale:+.{digits}f}]"
    return text


def format_p(value: float) -> str:
    return "—" if value is None or pd.isna(value) else f"{value:.2g}" if value < 0.001 else f"{value:.3f}"


def markdown(frame: pd.DataFrame) -> str:
    """A pipe table (pandas' `to_markdown`); every cell already a string."""
    if frame.empty:
        return "_(none)_"
    return frame.map(lambda v: str(v).replace("|", "\\|")).to_markdown(index=False, disable_numparse=True)
