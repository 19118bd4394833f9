"""Table 1 rebuilt, the paper's claims tested, the label-embedding leak measured: DataFrames and markdown.

Only FINISHED runs enter the numbers. Means come with Student t intervals over seeds,
differences between models (or label settings) with a paired bootstrap over matched seeds.
Accuracies stay fractions in the DataFrames; the markdown shows them in % like the paper.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.paper import CLAIMS, PAPER_DATASETS, PAPER_VQ, Claim, paper_row, setting_differences
from analysis.runs import CONFIG_TYPES, STATUSES
from analysis.stats import Estimate, paired_bootstrap, t_interval

FINISHED = "FINISHED"
STOPPED_EARLY = "stopped early"
BASE_KEYS = ["model", "dataset", "label_embedding", "num_codes", "code_dim", "beta"]
NOT_SETTINGS = {"seed", "fail_at_epoch"}
# Knobs both models share: a VAE and a VQ-VAE run are compared only where these agree.
PAIR_KEYS = ["dataset", "label_embedding", "seed", "epochs", "batch_size", "lr", "batch_norm", "precision"]
MODEL_ORDER = {"vae": 0, "vqvae": 1, "pixels": 2}
MODEL_NAMES = {"vae": "VAE", "vqvae": "VQ-VAE", "pixels": "raw pixels"}
DATASET_NAMES = {"mnist": "MNIST", "cifar100": "CIFAR-100", "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10", "digits": "digits"}
DEFAULT_KL_WEIGHT = 0.01  # TrialConfig's default: the VAE counterpart of the paper's setting
NOT_RESOLVED = "not resolved by this data"
EXTRA_TITLES = {"kl_weight": "KL weight", "batch_norm": "BatchNorm", "batch_size": "batch", "restart_dead_codes": "restart dead"}


@dataclass(frozen=True)
class Measure:
    """A metric as the tables show it."""

    column: str  # MLflow metric name
    short: str  # column stem in the DataFrames
    title: str
    percent: bool
    digits: int


MLP = Measure("probe/latent/mlp_acc", "mlp_acc", "probe MLP (%)", True, 2)
LINEAR = Measure("probe/latent/linear_acc", "linear_acc", "probe linear (%)", True, 2)
KNN = Measure("probe/latent/knn_acc", "knn_acc", "probe kNN (%)", True, 2)
MSE = Measure("recon/mse", "mse", "MSE", False, 4)
SSIM = Measure("recon/ssim", "ssim", "SSIM", False, 3)
PSNR = Measure("recon/psnr", "psnr", "PSNR (dB)", False, 2)
USAGE = Measure("codebook/usage", "usage", "codebook usage (%)", True, 1)
TABLE1_MEASURES = (MLP, LINEAR, KNN, MSE, SSIM, PSNR)
PROBES = (MLP, LINEAR, KNN)
DIFFERENCE_MEASURES = (MLP, LINEAR, KNN, SSIM)
PIXEL_COLUMNS = {MLP.short: "probe/pixels/mlp_acc", LINEAR.short: "probe/pixels/linear_acc", KNN.short: "probe/pixels/knn_acc"}
MEASURES = {m.column: m for m in (*TABLE1_MEASURES, USAGE)}


# --- selection -------------------------------------------------------------------------

def finished(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs with a final evaluation: FINISHED, and not stopped early by the scheduler."""
    return runs[(runs["status"] == FINISHED) & runs["stopped_at_epoch"].isna()]


def outcome(runs: pd.DataFrame) -> pd.Series:
    """The status, with FINISHED runs the scheduler stopped early counted apart."""
    return runs["status"].where(runs["stopped_at_epoch"].isna(), STOPPED_EARLY)


def status_counts(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs per status (every status listed, zeros included; stopped early apart), then any other status seen."""
    counts = outcome(runs).value_counts()
    order = [FINISHED, STOPPED_EARLY, *STATUSES[1:]] + sorted(set(counts.index) - set(STATUSES) - {STOPPED_EARLY})
    return pd.DataFrame({"status": order, "runs": [int(counts.get(s, 0)) for s in order]})


def varying_settings(runs: pd.DataFrame) -> list[str]:
    """Config columns beyond model/dataset/label/K/D/beta that vary within a model and dataset."""
    found = []
    for column in CONFIG_TYPES:
        if column in BASE_KEYS or column in NOT_SETTINGS or column not in runs:
            continue
        if (runs.groupby(["model", "dataset"], dropna=False)[column].nunique(dropna=True) > 1).any():
            found.append(column)
    return found


def group_keys(runs: pd.DataFrame) -> list[str]:
    """One row per model, dataset, label setting, K, D, beta and any other varying knob."""
    return BASE_KEYS + varying_settings(runs)


def _is(values: pd.Series, target: float) -> pd.Series:
    return pd.Series(np.isclose(values.astype("float64"), target), index=values.index) & values.notna()


def reference_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Per model, dataset and label setting: the paper's K/D/beta (VQ-VAE; VAE: D=64, default
    KL weight) where such runs exist, else all runs."""
    parts = []
    for (model, _, _), group in runs.groupby(["model", "dataset", "label_embedding"], dropna=False, sort=False):
        if model == "vqvae":
            pick = _is(group["num_codes"], PAPER_VQ["num_codes"]) & _is(group["code_dim"], PAPER_VQ["code_dim"]) & _is(group["beta"], PAPER_VQ["beta"])
            parts.append(group[pick] if pick.any() else group)
        else:
            pick = _is(group["code_dim"], PAPER_VQ["code_dim"])
            group = group[pick] if pick.any() else group
            pick = _is(group["kl_weight"], DEFAULT_KL_WEIGHT)
            parts.append(group[pick] if pick.any() else group)
    return pd.concat(parts) if parts else runs.iloc[0:0]


def reference_description(runs: pd.DataFrame, model: str) -> str:
    """Which runs of `model` the comparisons use, in words."""
    picked = runs[runs["model"] == model]
    if model == "vqvae":
        settings = picked[["num_codes", "code_dim", "beta"]].drop_duplicates()
        if len(settings) == 1:
            k, d, beta = settings.iloc[0]
            return f"K={_int(k)}, D={_int(d)}, beta={_num(beta)}"
        return f"{len(settings)} K/D/beta settings averaged per seed"
    settings = picked[["code_dim", "kl_weight"]].drop_duplicates()
    if len(settings) == 1:
        d, kl = settings.iloc[0]
        return f"D={_int(d)}, KL weight={_num(kl)}"
    return f"{len(settings)} D/KL-weight settings averaged per seed"


# --- Table 1 ---------------------------------------------------------------------------

def summarise(frame: pd.DataFrame, keys: list[str], measures: dict[str, str]) -> pd.DataFrame:
    """Mean, t-interval bounds and n of each metric per group: columns <short>, _low, _high, _n."""
    rows = []
    for key, group in frame.groupby(keys, dropna=False, sort=False):
        row: dict[str, object] = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        row["n"] = len(group)
        for column, short in measures.items():
            est = t_interval(group[column]) if column in group else t_interval([])
            row.update({short: est.mean, f"{short}_low": est.low, f"{short}_high": est.high, f"{short}_n": est.n})
        rows.append(row)
    out = pd.DataFrame(rows, columns=[*keys, "n", *[f"{s}{t}" for s in measures.values() for t in ("", "_low", "_high", "_n")]])
    for key in keys:
        out[key] = out[key].astype(frame[key].dtype)
    return out


def table1(runs: pd.DataFrame) -> pd.DataFrame:
    """Table 1 rebuilt: one row per model/dataset/label/K/D/beta (and other varying knobs).

    Columns per measure (mlp_acc, linear_acc, knn_acc, mse, ssim, psnr): mean, _low, _high
    (95% t interval over seeds; NaN for one seed) and _n. Then the paper's numbers for the
    model and dataset (paper_acc, paper_mse, paper_ssim), `matches_paper` and what differs.
    One `model == "pixels"` row per dataset: the probes on raw pixels, as a reference.
    """
    done = finished(runs)
    keys = group_keys(done)
    table = summarise(done, keys, {m.column: m.short for m in TABLE1_MEASURES})
    paper = [paper_row(r.model, r.dataset) for r in table.itertuples()]
    table["paper_acc"] = [p.accuracy if p else math.nan for p in paper]
    table["paper_mse"] = [p.mse if p else math.nan for p in paper]
    table["paper_ssim"] = [p.ssim if p else math.nan for p in paper]
    differences = [setting_differences(_settings(done, row)) for row in table.to_dict("records")]
    table["matches_paper"] = [not d and row["dataset"] in PAPER_DATASETS for d, row in zip(differences, table.to_dict("records"))]
    table["differs_from_paper"] = [", ".join(d) for d in differences]
    table = pd.concat([table, pixel_rows(done)], ignore_index=True) if len(done) else table
    return _sorted(table, keys)


def pixel_rows(done: pd.DataFrame) -> pd.DataFrame:
    """The probes on raw pixels per dataset: averaged per seed over that dataset's runs, then over seeds."""
    rows = []
    for dataset, group in done.groupby("dataset"):
        row: dict[str, object] = {"model": "pixels", "dataset": dataset}
        for short, column in PIXEL_COLUMNS.items():
            per_seed = group.groupby("seed")[column].mean() if column in group else pd.Series(dtype=float)
            est = t_interval(per_seed)
            row.update({short: est.mean, f"{short}_low": est.low, f"{short}_high": est.high, f"{short}_n": est.n})
        row["n"] = int(group["seed"].nunique())
        rows.append(row)
    return pd.DataFrame(rows)


def _settings(done: pd.DataFrame, row: dict[str, object]) -> dict[str, object]:
    """The config a table row stands for: its keys plus the knobs constant across its runs."""
    settings = dict(row)
    group = done[(done["model"] == row["model"]) & (done["dataset"] == row["dataset"])]
    for column in ("epochs", "lr", "batch_size"):
        if column not in settings and group[column].nunique() == 1:
            settings[column] = group[column].iloc[0]
    return settings


def dataset_rank(dataset: object) -> tuple[int, str]:
    """The paper's datasets first, in its order, then the rest by name."""
    return (PAPER_DATASETS.index(dataset), "") if dataset in PAPER_DATASETS else (len(PAPER_DATASETS), str(dataset))


def _sorted(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    order = table.assign(_dataset=table["dataset"].map(dataset_rank), _model=table["model"].map(MODEL_ORDER).fillna(9))
    by = ["_dataset", "_model", *[k for k in keys if k not in ("model", "dataset") and k in order]]
    return order.sort_values(by, na_position="first", kind="stable").drop(columns=["_dataset", "_model"]).reset_index(drop=True)


# --- differences between models, and the claims ----------------------------------------

def pair_means(a: pd.DataFrame, b: pd.DataFrame, metric: str, keys: list[str]) -> pd.DataFrame:
    """Per key (seed and setting), the mean of `metric` in a and in b, matched; difference = b - a."""
    if metric not in a or metric not in b or a.empty or b.empty:
        return pd.DataFrame(columns=[*keys, "a", "b", "difference"])
    left = a.groupby(keys, dropna=False)[metric].mean().rename("a").reset_index()
    right = b.groupby(keys, dropna=False)[metric].mean().rename("b").reset_index()
    merged = left.merge(right, on=keys, how="inner").dropna(subset=["a", "b"])
    return merged.assign(difference=merged["b"] - merged["a"])


def model_differences(runs: pd.DataFrame) -> pd.DataFrame:
    """VQ-VAE minus VAE per dataset and label setting, over matched seeds, for each probe and SSIM.

    Columns: dataset, label_embedding, metric, vae, vqvae (means over the matched seeds),
    difference, low, high (percentile bootstrap 95%), n (matched seeds), vq_runs, vae_runs,
    stand_in (a dataset the paper did not use).
    """
    ref = reference_runs(finished(runs))
    rows = []
    for (dataset, label), group in sorted(ref.groupby(["dataset", "label_embedding"], dropna=False), key=lambda kv: (dataset_rank(kv[0][0]), str(kv[0][1]))):
        vae, vq = group[group["model"] == "vae"], group[group["model"] == "vqvae"]
        if vae.empty or vq.empty:
            continue
        for measure in DIFFERENCE_MEASURES:
            pairs = pair_means(vae, vq, measure.column, PAIR_KEYS)
            est = paired_bootstrap(pairs["difference"])
            rows.append({
                "dataset": dataset, "label_embedding": label, "metric": measure.column,
                "vae": pairs["a"].mean() if len(pairs) else math.nan, "vqvae": pairs["b"].mean() if len(pairs) else math.nan,
                "difference": est.mean, "low": est.low, "high": est.high, "n": est.n,
                "vq_runs": reference_description(group, "vqvae"), "vae_runs": reference_description(group, "vae"),
                "stand_in": dataset not in PAPER_DATASETS,
            })
    columns = ["dataset", "label_embedding", "metric", "vae", "vqvae", "difference", "low", "high", "n", "vq_runs", "vae_runs", "stand_in"]
    return pd.DataFrame(rows, columns=columns)


def _label_order(labels) -> list[str]:
    """The paper's setting ("add") first."""
    return sorted({str(v) for v in labels if not pd.isna(v)}, key=lambda v: (v != "add", v))


def claims(runs: pd.DataFrame) -> pd.DataFrame:
    """Each claim tested per label setting and dataset part.

    Columns: claim, label_embedding, part (the dataset, or "mnist - cifar100" for claim 4),
    metric, difference, low, high, n, verdict ("supported", "contradicted" or
    "not resolved by this data"), reason (why not resolved, or "").
    """
    done = finished(runs)
    differences = model_differences(runs)
    labels = _label_order(done["label_embedding"]) or ["none"]
    rows = []
    for claim in CLAIMS:
        for label in labels:
            if claim.number == 4:
                rows.append(_clustering_part(claim, done, label))
            else:
                rows.extend(_model_part(claim, dataset, label, done, differences) for dataset in claim.datasets)
    return pd.DataFrame(rows, columns=["claim", "label_embedding", "part", "metric", "difference", "low", "high", "n", "verdict", "reason"])


def _verdict(est: Estimate, expect: int) -> tuple[str, str]:
    if est.n == 0:
        return NOT_RESOLVED, "no runs of the two sides share a seed and setting"
    if est.n == 1:
        return NOT_RESOLVED, "only one seed, so no interval"
    side = est.excludes_zero()
    if side == 0:
        return NOT_RESOLVED, "the 95% interval contains 0"
    return ("supported", "") if side == expect else ("contradicted", "")


def _absent(done: pd.DataFrame, dataset: str, label: str, models: tuple[str, ...]) -> str:
    """Why a dataset part cannot be tested, or "" if it can."""
    if not (done["dataset"] == dataset).any():
        return f"no runs on {dataset}"
    here = done[(done["dataset"] == dataset) & (done["label_embedding"] == label)]
    if here.empty:
        return f"no runs on {dataset} with label_embedding={label}"
    missing = [m for m in models if not (here["model"] == m).any()]
    return f"no {' or '.join(MODEL_NAMES[m] for m in missing)} runs on {dataset} with label_embedding={label}" if missing else ""


def _model_part(claim: Claim, dataset: str, label: str, done: pd.DataFrame, differences: pd.DataFrame) -> dict[str, object]:
    row = {"claim": claim.number, "label_embedding": label, "part": dataset, "metric": claim.metric,
           "difference": math.nan, "low": math.nan, "high": math.nan, "n": 0}
    absent = _absent(done, dataset, label, ("vae", "vqvae"))
    if absent:
        return {**row, "verdict": NOT_RESOLVED, "reason": absent}
    found = differences[(differences["dataset"] == dataset) & (differences["label_embedding"] == label) & (differences["metric"] == claim.metric)]
    est = Estimate(*found[["difference", "low", "high", "n"]].iloc[0]) if len(found) else Estimate(math.nan, math.nan, math.nan, 0)
    verdict, reason = _verdict(Estimate(est.mean, est.low, est.high, int(est.n)), claim.expect)
    return {**row, "difference": est.mean, "low": est.low, "high": est.high, "n": int(est.n), "verdict": verdict, "reason": reason}


def _clustering_part(claim: Claim, done: pd.DataFrame, label: str) -> dict[str, object]:
    """Claim 4's proxy: kNN probe accuracy on VQ-VAE latents, MNIST minus CIFAR-100, paired by seed."""
    row = {"claim": claim.number, "label_embedding": label, "part": "mnist - cifar100", "metric": claim.metric,
           "difference": math.nan, "low": math.nan, "high": math.nan, "n": 0}
    absent = _absent(done, "mnist", label, ("vqvae",)) or _absent(done, "cifar100", label, ("vqvae",))
    if absent:
        return {**row, "verdict": NOT_RESOLVED, "reason": absent}
    vq = reference_runs(done[(done["model"] == "vqvae") & (done["label_embedding"] == label)])
    pairs = pair_means(vq[vq["dataset"] == "cifar100"], vq[vq["dataset"] == "mnist"], claim.metric, ["seed"])
    est = paired_bootstrap(pairs["difference"])
    verdict, reason = _verdict(est, claim.expect)
    return {**row, "difference": est.mean, "low": est.low, "high": est.high, "n": est.n, "verdict": verdict, "reason": reason}


def combined_verdict(parts: pd.DataFrame) -> str:
    verdicts = set(parts["verdict"])
    if "contradicted" in verdicts:
        return "contradicted"
    return "supported" if verdicts == {"supported"} else NOT_RESOLVED


def claim_sentences(runs: pd.DataFrame, tested: pd.DataFrame | None = None) -> list[str]:
    """One plain sentence per claim: what the paper said and, per label setting, what these runs say."""
    tested = claims(runs) if tested is None else tested
    done = finished(runs)
    sentences = []
    for claim in CLAIMS:
        mine = tested[tested["claim"] == claim.number]
        head = f"**Claim {claim.number}** ({claim.text}; paper: {claim.paper_evidence})"
        proxy = (" Proxy: kNN probe accuracy on the VQ-VAE latents, MNIST minus CIFAR-100 (on 100 classes, not the paper's "
                 "20 superclasses); the paper judged t-SNE plots by eye." if claim.number == 4 else "")
        missing = sorted({r for r in mine["reason"] if _dataset_missing(r)})
        if missing and (len(claim.datasets) == 1 or claim.number == 4 or len(missing) == len(claim.datasets)):
            levels = _claim4_levels(done) if claim.number == 4 else ""
            sentences.append(f"{head}: not resolved: {'; '.join(missing)}.{levels}{proxy}")
            continue
        lines = []
        for label, parts in mine.groupby("label_embedding", sort=False):
            where = f"with label_embedding={label}" + (" (the paper's label setting)" if label == "add" else "")
            verdict = combined_verdict(parts)
            absent = [r for r in parts["reason"] if r.startswith("no ")]
            if verdict == NOT_RESOLVED and absent:
                verdict = "not resolved: " + "; ".join(absent)
            measured = [p for p in parts.to_dict("records") if not p["reason"].startswith("no ")]
            details = "; ".join(_part_phrase(claim, p, with_verdict=len(parts) > 1) for p in measured)
            lines.append(f"{where}: {verdict}" + (f" ({details})" if details else ""))
        sentences.append(f"{head}: " + "; ".join(lines) + "." + proxy)
    return sentences


def _dataset_missing(reason: str) -> bool:
    return reason.startswith("no runs on ") and " with " not in reason


def _part_phrase(claim: Claim, part: dict[str, object], with_verdict: bool) -> str:
    measure = MEASURES[claim.metric]
    if claim.number == 4:
        label = "VQ-VAE kNN accuracy, MNIST minus CIFAR-100"
    else:
        label = f"{DATASET_NAMES.get(str(part['part']), part['part'])}: VQ-VAE minus VAE {measure.title.split(' (')[0]}"
    value = format_difference(part["difference"], part["low"], part["high"], measure) + (" pts" if measure.percent else "")
    seeds = f"over {part['n']} matched seed{'s' if part['n'] != 1 else ''}"
    why = part["verdict"] + (f": {part['reason']}" if part["reason"] else "") if with_verdict else part["reason"]
    return f"{label} = {value} {seeds}" + (f", {why}" if why else "")


def _claim4_levels(done: pd.DataFrame) -> str:
    """Where claim 4 cannot be tested, the MNIST level it would rest on."""
    vq = reference_runs(done[(done["model"] == "vqvae") & (done["dataset"] == "mnist")])
    if vq.empty or KNN.column not in vq:
        return ""
    parts = []
    for label, group in vq.groupby("label_embedding", sort=True):
        est = t_interval(group[KNN.column])
        parts.append(f"{format_estimate(est, KNN)}% (label_embedding={label}, n={est.n})")
    pixels = done[done["dataset"] == "mnist"].get("probe/pixels/knn_acc")
    pixel = f"; raw pixels {100 * pixels.mean():.2f}%" if pixels is not None and pixels.notna().any() else ""
    return f" For reference, the kNN probe (the clustering proxy) on MNIST VQ-VAE latents reaches {', '.join(parts)}{pixel}."


# --- label embedding -------------------------------------------------------------------

def label_embedding_effect(runs: pd.DataFrame) -> pd.DataFrame:
    """Probe accuracies with and without the label embedding, per model/dataset/setting and probe.

    Columns: the group keys (without label_embedding), probe, none/add (mean), none_low,
    none_high, none_n, add_low, add_high, add_n, difference (add - none over seeds matched
    within the group, percentile bootstrap), low, high, n.
    """
    done = finished(runs)
    keys = [k for k in group_keys(done) if k != "label_embedding"]
    rows = []
    for key, group in done.groupby(keys, dropna=False, sort=False):
        none, add = group[group["label_embedding"] == "none"], group[group["label_embedding"] == "add"]
        if none.empty or add.empty:
            continue
        for measure in PROBES:
            if measure.column not in group:
                continue
            a, b = t_interval(none[measure.column]), t_interval(add[measure.column])
            est = paired_bootstrap(pair_means(none, add, measure.column, ["seed"])["difference"])
            rows.append({**dict(zip(keys, key)), "probe": measure.column,
                         "none": a.mean, "none_low": a.low, "none_high": a.high, "none_n": a.n,
                         "add": b.mean, "add_low": b.low, "add_high": b.high, "add_n": b.n,
                         "difference": est.mean, "low": est.low, "high": est.high, "n": est.n})
    out = pd.DataFrame(rows, columns=[*keys, "probe", "none", "none_low", "none_high", "none_n", "add", "add_low", "add_high", "add_n", "difference", "low", "high", "n"])
    for key in keys:
        out[key] = out[key].astype(done[key].dtype)
    return out


def leakage_sentences(effect: pd.DataFrame) -> list[str]:
    """What the add-minus-none difference of the MLP probe says about the leak, per row."""
    sentences = []
    for row in effect[effect["probe"] == MLP.column].to_dict("records"):
        who = f"{MODEL_NAMES[row['model']]} on {DATASET_NAMES.get(row['dataset'], row['dataset'])}{_setting_suffix(row)}"
        value = format_difference(row["difference"], row["low"], row["high"], MLP)
        est = Estimate(row["difference"], row["low"], row["high"], int(row["n"]))
        side = est.excludes_zero()
        if est.n == 0:
            text = "no seed has runs with and without the embedding, so the difference is not measured"
        elif est.n == 1:
            text = f"adding the label embedding changes the MLP-probe accuracy by {value} points on one seed, with no interval: too few runs to say how much comes from the leak"
        elif side > 0:
            text = (f"adding the label embedding raises the MLP-probe accuracy by {value} points over {est.n} seeds: that much of the "
                    "accuracy comes from the label fed into the probed latent, not from the image, so accuracies measured with the "
                    "embedding (the paper's) overstate what the latents learn about the class")
        elif side < 0:
            text = f"adding the label embedding lowers the MLP-probe accuracy by {value} points over {est.n} seeds: the leaked label does not reach the probe here"
        else:
            text = f"adding the label embedding changes the MLP-probe accuracy by {value} points over {est.n} seeds: no leak beyond seed-to-seed variation"
        sentences.append(f"{who}: {text}.")
    return sentences


def _setting_suffix(row: dict[str, object]) -> str:
    parts = [f"{name}={_num(row[key])}" for key, name in (("num_codes", "K"), ("code_dim", "D"), ("beta", "beta")) if key in row and not pd.isna(row[key])]
    return f" ({', '.join(parts)})" if parts else ""


# --- representative runs ---------------------------------------------------------------

def representative_runs(runs: pd.DataFrame, metric: str = MLP.column) -> pd.DataFrame:
    """Per model, dataset and label setting, the finished run with the median probe accuracy
    (the lower median for an even count, so it is a real run)."""
    rows = []
    groups = finished(runs).groupby(["dataset", "model", "label_embedding"], dropna=False)
    for _, group in sorted(groups, key=lambda kv: (dataset_rank(kv[0][0]), MODEL_ORDER.get(kv[0][1], 9), str(kv[0][2]))):
        ranked = group.sort_values(metric, kind="stable") if metric in group else group
        scored = ranked[ranked[metric].notna()] if metric in ranked else ranked
        pick = (scored if len(scored) else ranked).iloc[(max(len(scored), 1) - 1) // 2]
        rows.append(pick)
    return pd.DataFrame(rows).reset_index(drop=True) if rows else finished(runs).iloc[0:0]


# --- markdown --------------------------------------------------------------------------

def _num(value: object) -> str:
    if value is None or pd.isna(value):
        return "—"
    return f"{value:g}" if isinstance(value, (float, np.floating)) else str(value)


def _int(value: object) -> str:
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


def markdown(frame: pd.DataFrame) -> str:
    """A pipe table; every cell already a string."""
    if frame.empty:
        return "_(none)_"
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    body = ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def _cell(row: dict[str, object], measure: Measure) -> str:
    est = Estimate(row[measure.short], row[f"{measure.short}_low"], row[f"{measure.short}_high"], int(row[f"{measure.short}_n"]))
    text = format_estimate(est, measure)
    return text if est.n in (0, row["n"]) else f"{text} (n={est.n})"


def table1_markdown(table: pd.DataFrame) -> str:
    """Table 1 as the report shows it: our measures, then the paper's beside every row of its model and dataset."""
    extra = [c for c in table.columns if c in CONFIG_TYPES and c not in BASE_KEYS and c not in NOT_SETTINGS]
    rows = []
    for row in table.to_dict("records"):
        pixels = row["model"] == "pixels"
        shown = {
            "model": MODEL_NAMES.get(row["model"], row["model"]),
            "dataset": DATASET_NAMES.get(row["dataset"], row["dataset"]),
            "label emb.": "" if pixels else _num(row.get("label_embedding")),
            "K": "" if pixels else _int(row.get("num_codes")),
            "D": "" if pixels else _int(row.get("code_dim")),
            "beta": "" if pixels else _num(row.get("beta")),
            **{EXTRA_TITLES.get(c, c): "" if pixels else _num(row.get(c)) for c in extra},
            "n": str(int(row["n"])),
            **{m.title: _cell(row, m) if not (pixels and m.short not in PIXEL_COLUMNS) else "" for m in TABLE1_MEASURES},
            "paper acc. (%)": "" if pd.isna(row.get("paper_acc")) else f"{100 * row['paper_acc']:.2f}",
            "paper MSE": "" if pd.isna(row.get("paper_mse")) else f"{row['paper_mse']:.3f}",
            "paper SSIM": "" if pd.isna(row.get("paper_ssim")) else f"{row['paper_ssim']:.3f}",
            "vs paper setting": "" if pixels or pd.isna(row.get("paper_acc")) else ("matches" if row["matches_paper"] else f"differs: {row['differs_from_paper']}"),
        }
        rows.append(shown)
    return markdown(pd.DataFrame(rows))


def differences_markdown(differences: pd.DataFrame) -> str:
    rows = []
    for (dataset, label), group in differences.groupby(["dataset", "label_embedding"], sort=False):
        by_metric = {r["metric"]: r for r in group.to_dict("records")}
        first = group.iloc[0]
        row = {"dataset": DATASET_NAMES.get(dataset, dataset) + (" (stand-in)" if first["stand_in"] else ""), "label emb.": label,
               "VQ-VAE runs": first["vq_runs"], "VAE runs": first["vae_runs"], "matched seeds": str(int(first["n"]))}
        for measure in DIFFERENCE_MEASURES:
            r = by_metric.get(measure.column)
            name = f"Δ {measure.title.replace(' (%)', ' (pts)')}"
            row[name] = format_difference(r["difference"], r["low"], r["high"], measure) if r else "—"
        rows.append(row)
    return markdown(pd.DataFrame(rows))


def claims_markdown(tested: pd.DataFrame) -> str:
    rows = []
    for row in tested.to_dict("records"):
        measure = MEASURES[row["metric"]]
        rows.append({
            "claim": str(row["claim"]), "label emb.": row["label_embedding"], "part": row["part"], "metric": row["metric"],
            "difference": format_difference(row["difference"], row["low"], row["high"], measure) + (" pts" if measure.percent and not pd.isna(row["difference"]) else ""),
            "n": str(row["n"]), "verdict": _verdict_text(row["verdict"], row["reason"]),
        })
    return markdown(pd.DataFrame(rows))


def _verdict_text(verdict: str, reason: str) -> str:
    """'not resolved: no runs on cifar100' for an absence; 'not resolved by this data (why)' otherwise."""
    if reason.startswith("no "):
        return f"not resolved: {reason}"
    return verdict + (f" ({reason})" if reason else "")


def label_effect_markdown(effect: pd.DataFrame) -> str:
    rows = []
    for row in effect.to_dict("records"):
        measure = MEASURES[row["probe"]]
        none = Estimate(row["none"], row["none_low"], row["none_high"], int(row["none_n"]))
        add = Estimate(row["add"], row["add_low"], row["add_high"], int(row["add_n"]))
        rows.append({
            "model": MODEL_NAMES[row["model"]], "dataset": DATASET_NAMES.get(row["dataset"], row["dataset"]),
            "K": _int(row.get("num_codes")), "D": _int(row.get("code_dim")), "beta": _num(row.get("beta")),
            "probe": measure.title.replace(" (%)", ""),
            "none (%)": f"{format_estimate(none, measure)} (n={none.n})", "add (%)": f"{format_estimate(add, measure)} (n={add.n})",
            "add − none (pts)": format_difference(row["difference"], row["low"], row["high"], measure), "matched seeds": str(int(row["n"])),
        })
    return markdown(pd.DataFrame(rows))
