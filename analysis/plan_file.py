"""Reading a plan file: TOML parsed, every section checked, the bytes hashed, before any run is looked at.

One reader per section, each raising PlanError with the file, the key and the fix; `load_plan` joins them.
"""

from __future__ import annotations

import hashlib

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as a package (pyproject declares it)
    import tomli as tomllib
from pathlib import Path

from analysis.plan import MATCHED_RATE, METRIC_KINDS, POOLING_KEYS, PRIMARY, SECONDARY, SENSITIVITY, Endpoint, Margin, Plan, PlanError

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
WIDEST_MARGIN = {"accuracy": 1.0, "ssim": 2.0, "clustering": 2.0}  # a margin stays inside its metric's range; ARI lies in [-1, 1]


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
    test = _test(data, path)
    representation, probe, label = _primary(data, path)
    margins = _margins(data, path)
    thresholds = _thresholds(data, path)
    pooling = _pooling(data, path)
    families = _families(data, path)
    endpoints = _endpoints(data, thresholds, path)
    sens = data.get("sensitivity", {})
    knobs = _sensitivity(sens, path)
    secondary = data.get("secondary", {})
    _unknown(secondary, {"metrics", "cluster_comparators"}, "[secondary]", path)
    default_metric = f"probe/{representation}/{probe}_acc"
    return Plan(
        name=name,
        description=str(data.get("description", "")),
        sha256=hashlib.sha256(raw).hexdigest(),
        path=path,
        **test,
        representation=representation,
        probe=probe,
        label_embedding=label,
        margins=margins,
        thresholds=thresholds,
        pooling=pooling,
        families=families,
        endpoints=endpoints,
        sensitivity_metric=str(sens.get("metric", default_metric)),
        sensitivity_expect=int(sens.get("expect", -1)),
        **knobs,
        secondary_metrics=tuple(secondary.get("metrics", [])),
        cluster_comparators=tuple(secondary.get("cluster_comparators", [])),
        **_matched_rate(data.get(MATCHED_RATE, {}), default_metric, path),
    )


def _test(data: dict, path: Path) -> dict[str, object]:
    """[test]: the level, the interval, the minimum n and the bootstrap."""
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
    return {
        "alpha": alpha,
        "confidence": confidence,
        "min_n": min_n,
        "bootstrap_reps": reps,
        "bootstrap_seed": int(test.get("bootstrap_seed", 0)),
    }


def _primary(data: dict, path: Path) -> tuple[str, str, str]:
    """[primary]: which representation and probe the claims read, and the label embedding."""
    primary = _need(data, "primary", dict, "the plan", path)
    _unknown(primary, {"representation", "probe", "label_embedding"}, "[primary]", path)
    representation = _need(primary, "representation", str, "[primary]", path)
    probe = _need(primary, "probe", str, "[primary]", path)
    label = _need(primary, "label_embedding", str, "[primary]", path)
    if representation not in ("latent", "codes"):
        raise PlanError(f"plan {path}: [primary].representation = {representation!r}: choose latent or codes")
    if probe not in ("mlp", "linear", "knn"):
        raise PlanError(f"plan {path}: [primary].probe = {probe!r}: choose mlp, linear or knn")
    return representation, probe, label


def _margins(data: dict, path: Path) -> dict[str, Margin]:
    """[margins]: one equivalence margin per metric kind, each with its justification."""
    table = _need(data, "margins", dict, "the plan", path)
    _unknown(table, set(METRIC_KINDS), "[margins]", path)
    margins = {}
    for kind in METRIC_KINDS:
        entry = _need(table, kind, dict, "[margins]", path)
        _unknown(entry, {"value", "why"}, f"[margins.{kind}]", path)
        value = float(_need(entry, "value", (int, float), f"[margins.{kind}]", path))
        why = _need(entry, "why", str, f"[margins.{kind}]", path).strip()
        if not 0 < value < WIDEST_MARGIN[kind]:
            raise PlanError(
                f"plan {path}: [margins.{kind}].value = {value} must lie above 0 and below {WIDEST_MARGIN[kind]:g}, the metric's range"
            )
        if not why:
            raise PlanError(f"plan {path}: [margins.{kind}].why is empty: a margin needs its justification")
        margins[kind] = Margin(value, why)
    return margins


def _thresholds(data: dict, path: Path) -> dict[str, float]:
    table = data.get("thresholds", {})
    thresholds = {k: float(v) for k, v in table.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if len(thresholds) != len(table):
        raise PlanError(f"plan {path}: every entry of [thresholds] must be a number")
    return thresholds


def _pooling(data: dict, path: Path) -> tuple[str, ...]:
    pooling = tuple(_need(data, "pooling", dict, "the plan", path).get("refuse", []))
    bad = [p for p in pooling if p not in POOLING_KEYS]
    if bad:
        raise PlanError(f"plan {path}: [pooling].refuse names {', '.join(map(repr, bad))}; allowed: {', '.join(POOLING_KEYS)}")
    return pooling


def _families(data: dict, path: Path) -> dict[str, str]:
    """[families]: the three Holm families every plan declares, and matched_rate where the plan has that table."""
    table = _need(data, "families", dict, "the plan", path)
    for family in (PRIMARY, SENSITIVITY, SECONDARY):
        entry = _need(table, family, dict, "[families]", path)
        _need(entry, "description", str, f"[families.{family}]", path)
    if MATCHED_RATE in data:
        _need(_need(table, MATCHED_RATE, dict, "[families]", path), "description", str, f"[families.{MATCHED_RATE}]", path)
    _unknown(table, {PRIMARY, SENSITIVITY, SECONDARY, MATCHED_RATE}, "[families]", path)
    return {k: v["description"] for k, v in table.items()}


def _endpoints(data: dict, thresholds: dict[str, float], path: Path) -> tuple[Endpoint, ...]:
    """[[endpoints]]: the primary family, at least one, with unique ids."""
    listed = _need(data, "endpoints", list, "the plan", path)
    if not listed:
        raise PlanError(f"plan {path}: no [[endpoints]]: declare at least one primary endpoint")
    endpoints = tuple(_endpoint(entry, f"[[endpoints]] #{i + 1}", thresholds, path) for i, entry in enumerate(listed))
    ids = [e.id for e in endpoints]
    if len(set(ids)) != len(ids):
        raise PlanError(f"plan {path}: endpoint ids repeat ({', '.join(sorted({i for i in ids if ids.count(i) > 1}))}): make each unique")
    return endpoints


def _endpoint(entry: object, where: str, thresholds: dict[str, float], path: Path) -> Endpoint:
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
            f"plan {path}: {where} compares a level but its threshold {threshold!r} is not in [thresholds] ({', '.join(thresholds) or 'none'})"
        )
    dataset = _need(entry, "dataset", str, where, path).strip()
    if not dataset:
        raise PlanError(f"plan {path}: {where}.dataset is empty")
    return Endpoint(
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


def _sensitivity(sens: dict, path: Path) -> dict[str, object]:
    """[sensitivity]: the KL weights and VQ knob values declared per dataset."""
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
    return {"kl_weights": kl_weights, "vq_axes": vq_axes}


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
