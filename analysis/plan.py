"""The pre-registered analysis plan: a TOML file read, validated and hashed before any run is looked at.

    from analysis.plan_file import load_plan
    plan = load_plan("analysis/plans/paper.toml")   # PlanError (exit 2 in the CLIs) names what is wrong

What a plan is lives here; how its file is read and checked, in `analysis.plan_file`.

The plan declares the primary endpoints (each claim and its parts: dataset, representation,
probe, metric, claimed direction), the test, the margins and why, the families, the minimum n
and the pooling rules. The sweep registers its name and SHA-256 (of the file's bytes) on the
runs; the report enforces it and flags deviations (`deviations`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

DEFAULT_PLAN = Path(__file__).parent / "plans" / "paper.toml"
PLAN_TAG, PLAN_HASH_TAG = "vqbench.plan", "vqbench.plan_hash"
PRIMARY, SENSITIVITY, SECONDARY = "primary", "sensitivity", "secondary"
MATCHED_RATE = "matched_rate"  # optional: claims 1 and 2 at matched information rate (analysis/rates.py)
POOLING_KEYS = ("precision", "probe_protocol", "code_version")
METRIC_KINDS = ("accuracy", "ssim", "clustering")


class PlanError(ValueError):
    """A plan file that cannot be used: the message names the file, the key and the fix."""


@dataclass(frozen=True)
class Margin:
    value: float
    why: str


@dataclass(frozen=True)
class Endpoint:
    """One primary test: VQ-VAE minus VAE (compare="models") or the VQ-VAE's level minus a threshold ("level")."""

    id: str
    claim: int
    text: str
    paper: str
    dataset: str
    metric: str
    compare: str
    expect: int
    threshold: str = ""  # the name of a [thresholds] entry, for compare="level"


@dataclass(frozen=True)
class Plan:
    name: str
    description: str
    sha256: str
    path: Path
    alpha: float
    confidence: float
    min_n: int
    bootstrap_reps: int
    bootstrap_seed: int
    representation: str
    probe: str
    label_embedding: str
    margins: dict[str, Margin]
    thresholds: dict[str, float]
    pooling: tuple[str, ...]
    families: dict[str, str]
    endpoints: tuple[Endpoint, ...]
    sensitivity_metric: str
    sensitivity_expect: int
    kl_weights: dict[str, tuple[float, ...]]  # dataset -> declared KL weights
    vq_axes: dict[str, dict[str, tuple[float, ...]]]  # dataset -> knob -> declared values
    secondary_metrics: tuple[str, ...]
    cluster_comparators: tuple[str, ...]
    # [matched_rate]: each declared quantizer arm against the rate-matched VAE nearest its effective rate, per dataset
    matched_rate_metric: str = ""
    matched_rate_arms: tuple[str, ...] = ()
    matched_rate_expect: dict[str, int] = field(default_factory=dict)  # dataset -> the sign its claim predicts
    overridden: dict[str, float] = field(default_factory=dict)  # margins replaced on the command line
    declared_margins: dict[str, float] = field(default_factory=dict)  # what the file declared, where overridden

    @property
    def short_hash(self) -> str:
        return self.sha256[:12]

    def margin(self, metric: str) -> float:
        return self.margins[metric_kind(metric)].value

    def with_margins(self, accuracy: float | None, ssim: float | None) -> "Plan":
        """The plan with margins overridden on the command line, recorded as a deviation."""
        margins, overridden, declared = dict(self.margins), dict(self.overridden), dict(self.declared_margins)
        for kind, value in (("accuracy", accuracy), ("ssim", ssim)):
            if value is not None and not math.isclose(value, margins[kind].value):
                declared.setdefault(kind, margins[kind].value)
                margins[kind] = Margin(value, f"overridden on the command line (the plan declares {margins[kind].value:g})")
                overridden[kind] = value
        from dataclasses import replace

        return replace(self, margins=margins, overridden=overridden, declared_margins=declared)

    def primary_metric(self) -> str:
        return f"probe/{self.representation}/{self.probe}_acc"


def metric_kind(metric: str) -> str:
    if metric.endswith("ssim"):
        return "ssim"
    if metric.startswith("cluster/"):
        return "clustering"
    return "accuracy"


# --- registration, read back --------------------------------------------------------------------


def deviations(plan: Plan, runs: pd.DataFrame) -> list[str]:
    """Every way the runs and the command line depart from the plan, in words; [] when none."""
    found = []
    names = runs["plan"] if "plan" in runs else pd.Series([None] * len(runs), index=runs.index)
    hashes = runs["plan_hash"] if "plan_hash" in runs else pd.Series([None] * len(runs), index=runs.index)
    unregistered = int(names.isna().sum())
    if unregistered:
        found.append(
            f"{unregistered} run(s) were registered under no plan (logged before plans were registered, or without one): "
            f"the plan `{plan.name}` is applied to them after the fact"
        )
    registered = pd.DataFrame({"plan": names, "hash": hashes}).dropna(subset=["plan"])
    for (name, digest), group in registered.groupby(["plan", "hash"], dropna=False):
        if name != plan.name:
            found.append(f"{len(group)} run(s) were registered under another plan, `{name}` (`{str(digest)[:12]}`), not `{plan.name}`")
        elif str(digest) != plan.sha256:
            found.append(
                f"the plan `{plan.name}` was edited after {len(group)} run(s) were registered under it "
                f"(registered `{str(digest)[:12]}`, now `{plan.short_hash}`)"
            )
    for kind, value in plan.overridden.items():
        found.append(
            f"the {kind} margin was overridden on the command line: ±{value:g} instead of the plan's declared "
            f"±{plan.declared_margins.get(kind, math.nan):g} (metric units; accuracies as fractions)"
        )
    return found
