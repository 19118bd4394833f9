"""The pre-registered analysis plan: a TOML file read, validated and hashed before any run is looked at.

    from analysis.plan import load_plan
    plan = load_plan("analysis/plans/paper.toml")   # PlanError (exit 2 in the CLIs) names what is wrong

The plan declares the primary endpoints (each claim and its parts: dataset, representation,
probe, metric, claimed direction), the test, the margins and why, the families, the minimum n
and the pooling rules. The sweep registers its name and SHA-256 (of the file's bytes) on the
runs; the report enforces it and flags deviations (`deviations`).
"""

from __future__ import annotations

import hashlib
import math

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as a package (pyproject declares it)
    import tomli as tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

DEFAULT_PLAN = Path(__file__).parent / "plans" / "paper.toml"
PLAN_TAG, PLAN_HASH_TAG = "vqbench.plan", "vqbench.plan_hash"
PRIMARY, SENSITIVITY, SECONDARY = "primary", "sensitivity", "secondary"
MATCHED_RATE = "matched_rate"  # optional: claims 1 and 2 at matched information rate (analysis/rates.py)
POOLING_KEYS = ("precision", "probe_protocol", "code_version")
METRIC_KINDS = ("accuracy", "ssim", "clustering")
TOP_KEYS = {
    "name",
    "description",
    "test",
    "primary",
    "margins",
    "thresholds",
    "pooling",
    "families",
    "endpoints",
    "sensitivity",
    "secondary",
    MATCHED_RATE,
}
ENDPOINT_KEYS = {"id", "claim", "text", "paper", "dataset", "metric", "compare", "expect", "threshold"}


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


def _need(table: dict, key: str, kind, where: str, path: Path):
    if key not in table:
        raise PlanError(f"plan {path}: {where} lacks `{key}`: add it (see analysis/plans/paper.toml)")
    value = table[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise PlanError(f"plan {path}: {where}.{key} = {value!r} is not a {names}")
    return value


def _unknown(table: dict, allowed: set[str], where: str, path: Path) -> None:
    extra = sorted(set(table) - allowed)
    if extra:
        raise PlanError(f"plan {path}: unknown key(s) {', '.join(extra)} in {where}; allowed: {', '.join(sorted(allowed))}")


def _numbers(values, where: str, path: Path) -> tuple[float, ...]:
    if not isinstance(values, list) or not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise PlanError(f"plan {path}: {where} must be a non-empty list of numbers")
    return tuple(float(v) for v in values)


def load_plan(path: str | Path) -> Plan:
    """Read and validate a plan file; PlanError for anything unusable."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise PlanError(f"cannot read plan {path} ({err.strerror or err}): pass --plan FILE.toml, e.g. analysis/plans/paper.toml") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise PlanError(f"plan {path} is not valid TOML ({err}): fix it or pass another --plan") from None
    _unknown(data, TOP_KEYS, "the plan", path)
    name = _need(data, "name", str, "the plan", path).strip()
    if not name:
        raise PlanError(f"plan {path}: `name` is empty: give the plan a name")
    test = _need(data, "test", dict, "the plan", path)
    _unknown(test, {"alpha", "confidence", "min_n", "bootstrap_reps", "bootstrap_seed"}, "[test]", path)
    alpha = float(_need(test, "alpha", (int, float), "[test]", path))
    confidence = float(_need(test, "confidence", (int, float), "[test]", path))
    min_n = _need(test, "min_n", int, "[test]", path)
    if not 0 < alpha < 0.5:
        raise PlanError(f"plan {path}: [test].alpha = {alpha} must lie between 0 and 0.5")
    if not 0.5 < confidence < 1:
        raise PlanError(f"plan {path}: [test].confidence = {confidence} must lie between 0.5 and 1")
    if min_n < 2:
        raise PlanError(f"plan {path}: [test].min_n = {min_n}: a t test needs at least 2 seeds")
    reps = int(test.get("bootstrap_reps", 2000))
    if reps < 100:
        raise PlanError(f"plan {path}: [test].bootstrap_reps = {reps}: use at least 100")
    primary = _need(data, "primary", dict, "the plan", path)
    _unknown(primary, {"representation", "probe", "label_embedding"}, "[primary]", path)
    representation = _need(primary, "representation", str, "[primary]", path)
    probe = _need(primary, "probe", str, "[primary]", path)
    label = _need(primary, "label_embedding", str, "[primary]", path)
    if representation not in ("latent", "codes"):
        raise PlanError(f"plan {path}: [primary].representation = {representation!r}: choose latent or codes")
    if probe not in ("mlp", "linear", "knn"):
        raise PlanError(f"plan {path}: [primary].probe = {probe!r}: choose mlp, linear or knn")
    margins_table = _need(data, "margins", dict, "the plan", path)
    _unknown(margins_table, set(METRIC_KINDS), "[margins]", path)
    margins = {}
    widest = {"accuracy": 1.0, "ssim": 2.0, "clustering": 2.0}  # ARI lies in [-1, 1]
    for kind in METRIC_KINDS:
        entry = _need(margins_table, kind, dict, "[margins]", path)
        _unknown(entry, {"value", "why"}, f"[margins.{kind}]", path)
        value = float(_need(entry, "value", (int, float), f"[margins.{kind}]", path))
        why = _need(entry, "why", str, f"[margins.{kind}]", path).strip()
        if not 0 < value < widest[kind]:
            raise PlanError(
                f"plan {path}: [margins.{kind}].value = {value} must lie above 0 and below {widest[kind]:g}, the metric's range"
            )
        if not why:
            raise PlanError(f"plan {path}: [margins.{kind}].why is empty: a margin needs its justification")
        margins[kind] = Margin(value, why)
    thresholds = {k: float(v) for k, v in data.get("thresholds", {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if len(thresholds) != len(data.get("thresholds", {})):
        raise PlanError(f"plan {path}: every entry of [thresholds] must be a number")
    pooling = tuple(_need(data, "pooling", dict, "the plan", path).get("refuse", []))
    bad = [p for p in pooling if p not in POOLING_KEYS]
    if bad:
        raise PlanError(f"plan {path}: [pooling].refuse names {', '.join(map(repr, bad))}; allowed: {', '.join(POOLING_KEYS)}")
    families_table = _need(data, "families", dict, "the plan", path)
    for family in (PRIMARY, SENSITIVITY, SECONDARY):
        entry = _need(families_table, family, dict, "[families]", path)
        _need(entry, "description", str, f"[families.{family}]", path)
    if MATCHED_RATE in data:
        _need(_need(families_table, MATCHED_RATE, dict, "[families]", path), "description", str, f"[families.{MATCHED_RATE}]", path)
    _unknown(families_table, {PRIMARY, SENSITIVITY, SECONDARY, MATCHED_RATE}, "[families]", path)
    families = {k: v["description"] for k, v in families_table.items()}
    endpoints = []
    listed = _need(data, "endpoints", list, "the plan", path)
    if not listed:
        raise PlanError(f"plan {path}: no [[endpoints]]: declare at least one primary endpoint")
    for i, entry in enumerate(listed):
        where = f"[[endpoints]] #{i + 1}"
        if not isinstance(entry, dict):
            raise PlanError(f"plan {path}: {where} is not a table")
        _unknown(entry, ENDPOINT_KEYS, where, path)
        compare = _need(entry, "compare", str, where, path)
        if compare not in ("models", "level"):
            raise PlanError(f"plan {path}: {where}.compare = {compare!r}: choose models or level")
        expect = _need(entry, "expect", int, where, path)
        if expect not in (-1, 1):
            raise PlanError(f"plan {path}: {where}.expect = {expect}: choose 1 (VQ-VAE higher / above) or -1")
        metric = _need(entry, "metric", str, where, path)
        if "/" not in metric:
            raise PlanError(f"plan {path}: {where}.metric = {metric!r} is not a metric name such as probe/latent/mlp_acc")
        threshold = entry.get("threshold", "")
        if compare == "level" and threshold not in thresholds:
            raise PlanError(
                f"plan {path}: {where} compares a level but its threshold {threshold!r} is not in [thresholds] "
                f"({', '.join(thresholds) or 'none'})"
            )
        dataset = _need(entry, "dataset", str, where, path).strip()
        if not dataset:
            raise PlanError(f"plan {path}: {where}.dataset is empty")
        endpoints.append(
            Endpoint(
                _need(entry, "id", str, where, path),
                _need(entry, "claim", int, where, path),
                _need(entry, "text", str, where, path),
                str(entry.get("paper", "")),
                dataset,
                metric,
                compare,
                expect,
                str(threshold),
            )
        )
    ids = [e.id for e in endpoints]
    if len(set(ids)) != len(ids):
        raise PlanError(f"plan {path}: endpoint ids repeat ({', '.join(sorted({i for i in ids if ids.count(i) > 1}))}): make each unique")
    sens = data.get("sensitivity", {})
    _unknown(sens, {"metric", "expect", "kl_weight", "vq"}, "[sensitivity]", path)
    kl_weights = {}
    for entry in sens.get("kl_weight", []):
        kl_weights[_need(entry, "dataset", str, "[[sensitivity.kl_weight]]", path)] = _numbers(
            entry.get("values"), "[[sensitivity.kl_weight]].values", path
        )
    vq_axes = {}
    for entry in sens.get("vq", []):
        _unknown(entry, {"dataset", "num_codes", "code_dim", "beta"}, "[[sensitivity.vq]]", path)
        dataset = _need(entry, "dataset", str, "[[sensitivity.vq]]", path)
        vq_axes[dataset] = {k: _numbers(entry[k], f"[[sensitivity.vq]].{k}", path) for k in ("num_codes", "code_dim", "beta") if k in entry}
    secondary = data.get("secondary", {})
    _unknown(secondary, {"metrics", "cluster_comparators"}, "[secondary]", path)
    matched = _matched_rate(data.get(MATCHED_RATE, {}), f"probe/{representation}/{probe}_acc", path)
    return Plan(
        name=name,
        description=str(data.get("description", "")),
        sha256=hashlib.sha256(raw).hexdigest(),
        path=path,
        alpha=alpha,
        confidence=confidence,
        min_n=min_n,
        bootstrap_reps=reps,
        bootstrap_seed=int(test.get("bootstrap_seed", 0)),
        representation=representation,
        probe=probe,
        label_embedding=label,
        margins=margins,
        thresholds=thresholds,
        pooling=pooling,
        families=families,
        endpoints=tuple(endpoints),
        sensitivity_metric=str(sens.get("metric", f"probe/{representation}/{probe}_acc")),
        sensitivity_expect=int(sens.get("expect", -1)),
        kl_weights=kl_weights,
        vq_axes=vq_axes,
        secondary_metrics=tuple(secondary.get("metrics", [])),
        cluster_comparators=tuple(secondary.get("cluster_comparators", [])),
        **matched,
    )


def _matched_rate(table: dict, default_metric: str, path: Path) -> dict[str, object]:
    """The optional [matched_rate] table: its metric, its quantizer arms and, per dataset, the claimed sign."""
    from benchmark.config import QUANTIZERS

    where = f"[{MATCHED_RATE}]"
    _unknown(table, {"metric", "arms", "dataset"}, where, path)
    if not table:
        return {}
    arms = _need(table, "arms", list, where, path)
    bad = [a for a in arms if a not in QUANTIZERS]
    if bad or not arms:
        raise PlanError(f"plan {path}: {where}.arms = {arms!r}: name one or more of {', '.join(QUANTIZERS)}")
    expect = {}
    for entry in _need(table, "dataset", list, where, path):
        _unknown(entry, {"dataset", "expect"}, f"[[{MATCHED_RATE}.dataset]]", path)
        sign = _need(entry, "expect", int, f"[[{MATCHED_RATE}.dataset]]", path)
        if sign not in (-1, 1):
            raise PlanError(f"plan {path}: [[{MATCHED_RATE}.dataset]].expect = {sign}: write -1 (VAE better) or 1 (VQ-VAE better)")
        expect[_need(entry, "dataset", str, f"[[{MATCHED_RATE}.dataset]]", path)] = sign
    return {
        "matched_rate_metric": str(table.get("metric", default_metric)),
        "matched_rate_arms": tuple(arms),
        "matched_rate_expect": expect,
    }


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
