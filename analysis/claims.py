"""The plan's endpoints tested with the verdict rule of `analysis.verdicts`, and VQ-VAE minus VAE per dataset.

Only FINISHED runs count. Each side contributes one value per seed (configs repeated within a
seed, or several K/D/beta where the paper's are absent, averaged first); the two sides are
paired by seed and by every training setting they share.
"""

from __future__ import annotations

import math

import pandas as pd

from analysis.measures import DIFFERENCE_MEASURES
from analysis.paper import PAPER_DATASETS
from analysis.plan import PRIMARY, SECONDARY, Plan
from analysis.predictions import Predictions, image_differences
from analysis.selection import finished, reference_description, reference_runs
from analysis.tables import MODEL_NAMES, PAIR_KEYS, dataset_rank, paired
from analysis.verdicts import (
    CONTRADICTED,
    NOT_RESOLVED,
    PairedTest,
    decide,
    holm_family,
    paired_test,
    two_level_test,
    with_tost,
)

TEST_COLUMNS = ["n", "difference", "low", "high", "p", "p_sign_flip", "p_holm", "methods_disagree"]
NO_TEST = PairedTest(0, math.nan, math.nan, math.nan, math.nan, math.nan)


def _test_fields(test: PairedTest) -> dict[str, object]:
    return {
        "n": test.n,
        "difference": test.mean,
        "low": test.low,
        "high": test.high,
        "p": test.p,
        "p_sign_flip": test.p_sign_flip,
        "p_holm": test.p_holm,
        "methods_disagree": test.methods_disagree,
    }


def model_differences(runs: pd.DataFrame) -> pd.DataFrame:
    """VQ-VAE minus VAE per dataset and label setting, over matched seeds, for each probe and SSIM.

    Columns: dataset, label_embedding, metric, vae, vqvae (means over the matched seeds),
    n, difference, low, high (paired t 95%), p, p_sign_flip, p_holm (NaN: these are not
    claims, so not adjusted), methods_disagree, vq_runs, vae_runs, stand_in.
    """
    ref = reference_runs(finished(runs))
    rows = []
    groups = sorted(ref.groupby(["dataset", "label_embedding"], dropna=False), key=lambda kv: (dataset_rank(kv[0][0]), str(kv[0][1])))
    for (dataset, label), group in groups:
        vae, vq = group[group["model"] == "vae"], group[group["model"] == "vqvae"]
        if vae.empty or vq.empty:
            continue
        for measure in DIFFERENCE_MEASURES:
            test, pairs = paired(vae, vq, measure.column, PAIR_KEYS)
            rows.append(
                {
                    "dataset": dataset,
                    "label_embedding": label,
                    "metric": measure.column,
                    "vae": pairs["a"].mean() if len(pairs) else math.nan,
                    "vqvae": pairs["b"].mean() if len(pairs) else math.nan,
                    **_test_fields(test),
                    "vq_runs": reference_description(group, "vqvae"),
                    "vae_runs": reference_description(group, "vae"),
                    "stand_in": dataset not in PAPER_DATASETS,
                }
            )
    columns = ["dataset", "label_embedding", "metric", "vae", "vqvae", *TEST_COLUMNS, "vq_runs", "vae_runs", "stand_in"]
    return pd.DataFrame(rows, columns=columns)


def _label_order(labels) -> list[str]:
    """The paper's setting ("add") first."""
    return sorted({str(v) for v in labels if not pd.isna(v)}, key=lambda v: (v != "add", v))


def _runs_for(done: pd.DataFrame, dataset: str, label: str) -> pd.DataFrame:
    return reference_runs(done[(done["dataset"] == dataset) & (done["label_embedding"] == label)])


def compare_models(
    done: pd.DataFrame, dataset: str, label: str, metric: str, plan: Plan, predictions: Predictions | None = None
) -> tuple[str, PairedTest]:
    """(why it cannot be tested or "", VQ-VAE minus VAE on `metric`): two-level interval where every run has predictions."""
    absent = _absent(done, dataset, label, ("vae", "vqvae"))
    if absent:
        return absent, NO_TEST
    here = _runs_for(done, dataset, label)
    vae, vq = here[here["model"] == "vae"], here[here["model"] == "vqvae"]
    vae_metric = metric.replace("/codes/", "/latent/")  # a VAE has no codes: the VQ-VAE's code indices against the VAE's latent
    if vae_metric != metric:
        vae = vae.assign(**{metric: vae[vae_metric] if vae_metric in vae else math.nan})
    test, pairs = paired(vae, vq, metric, PAIR_KEYS)
    if test.n >= 2:
        d = image_differences(vae, vq, list(pairs["seed"]), metric, predictions, metric_a=vae_metric)
        if d is not None:
            test = two_level_test(d, plan.confidence, plan.bootstrap_reps, plan.bootstrap_seed, seed_only=test)
    return "", with_tost(test, plan.margin(metric))


def compare_pixels(done: pd.DataFrame, dataset: str, label: str, metric: str) -> tuple[str, PairedTest]:
    """The VQ-VAE's latents minus the raw pixels of the same runs on a clustering metric (cluster/latent/... vs cluster/pixels/...)."""
    absent = _absent(done, dataset, label, ("vqvae",))
    if absent:
        return absent, NO_TEST
    vq = _runs_for(done, dataset, label)
    vq = vq[vq["model"] == "vqvae"]
    pixels = metric.replace("/latent/", "/pixels/")
    if metric not in vq or pixels not in vq:
        return f"no {metric} or {pixels} recorded on {dataset}", NO_TEST
    per_seed = vq.groupby("seed")[[pixels, metric]].mean().dropna()
    return "", paired_test(per_seed[pixels].to_numpy(), per_seed[metric].to_numpy())


def compare_level(done: pd.DataFrame, dataset: str, label: str, metric: str, threshold: float) -> tuple[str, PairedTest]:
    """(why not, the VQ-VAE's per-seed level minus the threshold): a one-sample t test, no equivalence margin."""
    absent = _absent(done, dataset, label, ("vqvae",))
    if absent:
        return absent, NO_TEST
    vq = _runs_for(done, dataset, label)
    vq = vq[vq["model"] == "vqvae"]
    if metric not in vq or vq[metric].isna().all():
        return f"no {metric} recorded on {dataset} (runs logged before the metric existed)", NO_TEST
    values = vq.groupby("seed")[metric].mean().dropna()
    return "", paired_test([threshold] * len(values), values.to_numpy())


def _row(
    endpoint_id: str,
    claim: int,
    text: str,
    dataset: str,
    metric: str,
    compare: str,
    expect: int,
    family: str,
    margin: float,
    absent: str,
    test: PairedTest,
    threshold: float = math.nan,
) -> dict:
    return {
        "id": endpoint_id,
        "claim": claim,
        "text": text,
        "part": dataset,
        "metric": metric,
        "compare": compare,
        "expect": expect,
        "family": family,
        "threshold": threshold,
        "margin": margin,
        "absent": absent,
        "_test": test,
    }


def claims(runs: pd.DataFrame, plan: Plan, predictions: Predictions | None = None) -> pd.DataFrame:
    """Every primary endpoint of the plan, one Holm family of its declared size, and the secondary family.

    Columns: id, claim, text, part (the dataset), metric, compare, expect, family (primary / secondary),
    threshold, margin, n, difference, low, high (primary interval), seed_low, seed_high (the seed-only t
    interval), interval (what it accounts for), p, p_sign_flip, p_tost, p_holm, p_tost_holm,
    methods_disagree, verdict, reason.
    """
    done = finished(runs)
    label = plan.label_embedding
    primary = []
    for e in plan.endpoints:
        if e.compare == "models":
            absent, test = compare_models(done, e.dataset, label, e.metric, plan, predictions)
            primary.append(
                _row(e.id, e.claim, e.text, e.dataset, e.metric, e.compare, e.expect, PRIMARY, plan.margin(e.metric), absent, test)
            )
        else:
            value = plan.thresholds[e.threshold]
            absent, test = compare_level(done, e.dataset, label, e.metric, value)
            primary.append(_row(e.id, e.claim, e.text, e.dataset, e.metric, e.compare, e.expect, PRIMARY, math.nan, absent, test, value))
    secondary = []
    for e in plan.endpoints:
        if e.compare != "models" or not e.metric.startswith("probe/"):
            continue
        for metric in plan.secondary_metrics:
            absent, test = compare_models(done, e.dataset, label, metric, plan, predictions)
            secondary.append(
                _row(
                    f"{e.id}:{metric}", e.claim, e.text, e.dataset, metric, "models", e.expect, SECONDARY, plan.margin(metric), absent, test
                )
            )
    for dataset in dict.fromkeys(e.dataset for e in plan.endpoints if e.metric.startswith("cluster/")):
        for metric in plan.cluster_comparators:
            absent, test = compare_models(done, dataset, label, metric, plan, predictions)
            secondary.append(
                _row(
                    f"4-{dataset}:{metric}",
                    4,
                    "VQ-VAE minus VAE clustering",
                    dataset,
                    metric,
                    "models",
                    1,
                    SECONDARY,
                    plan.margin(metric),
                    absent,
                    test,
                )
            )
            absent, test = compare_pixels(done, dataset, label, metric)
            secondary.append(
                _row(
                    f"4-{dataset}:{metric}:pixels",
                    4,
                    "VQ-VAE latents minus raw pixels clustering",
                    dataset,
                    metric,
                    "pixels",
                    1,
                    SECONDARY,
                    plan.margin(metric),
                    absent,
                    with_tost(test, plan.margin(metric)),
                )
            )
    rows = []
    for family in (primary, secondary):
        adjusted = iter(holm_family([r["_test"] for r in family], len(family)))
        for row in family:
            test = next(adjusted)
            if row["absent"]:
                verdict, reason = NOT_RESOLVED, row["absent"]
            else:
                verdict, reason = decide(
                    test, row["expect"], row["margin"] if not math.isnan(row["margin"]) else 0.0, plan.alpha, plan.min_n
                )
            rows.append(
                {
                    **{k: v for k, v in row.items() if not k.startswith("_") and k != "absent"},
                    **_test_fields(test),
                    "seed_low": test.seed_low,
                    "seed_high": test.seed_high,
                    "interval": test.interval,
                    "p_tost": test.p_tost,
                    "p_tost_holm": test.p_tost_holm,
                    "verdict": verdict,
                    "reason": reason,
                }
            )
    columns = [
        "id",
        "claim",
        "text",
        "part",
        "metric",
        "compare",
        "expect",
        "family",
        "threshold",
        "margin",
        *TEST_COLUMNS,
        "seed_low",
        "seed_high",
        "interval",
        "p_tost",
        "p_tost_holm",
        "verdict",
        "reason",
    ]
    return pd.DataFrame(rows, columns=columns)


def secondary_size(plan: Plan) -> int:
    """How many tests the secondary family declares: each probe endpoint read with every secondary metric, and each
    clustering comparator (VQ-VAE minus VAE, and minus raw pixels) on every claim-4 dataset."""
    probes = sum(1 for e in plan.endpoints if e.compare == "models" and e.metric.startswith("probe/")) * len(plan.secondary_metrics)
    datasets = len(dict.fromkeys(e.dataset for e in plan.endpoints if e.metric.startswith("cluster/")))
    return probes + 2 * datasets * len(plan.cluster_comparators)


def _absent(done: pd.DataFrame, dataset: str, label: str, models: tuple[str, ...]) -> str:
    """Why a dataset part cannot be tested, or "" if it can."""
    if not (done["dataset"] == dataset).any():
        return f"no runs on {dataset}"
    here = done[(done["dataset"] == dataset) & (done["label_embedding"] == label)]
    if here.empty:
        return f"no runs on {dataset} with label_embedding={label}"
    missing = [m for m in models if not (here["model"] == m).any()]
    return f"no {' or '.join(MODEL_NAMES[m] for m in missing)} runs on {dataset} with label_embedding={label}" if missing else ""


def combined_verdict(parts: pd.DataFrame) -> str:
    """A claim over several parts: contradicted if any part is, supported (or within the margin) only if all are."""
    verdicts = set(parts["verdict"])
    if any(v.startswith(CONTRADICTED) for v in verdicts):
        return CONTRADICTED
    return verdicts.pop() if len(verdicts) == 1 else NOT_RESOLVED
