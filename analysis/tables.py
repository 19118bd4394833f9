"""Table 1 rebuilt and the paired comparisons the claims rest on: DataFrames, and their markdown.

Only FINISHED runs enter the numbers. Means come with Student t intervals over seeds,
differences between models (or label settings) with a paired t interval over matched seeds.
Accuracies stay fractions in the DataFrames; the markdown shows them in % like the paper.
"""

from __future__ import annotations

import math

import pandas as pd

from analysis.formatting import format_estimate, format_int, format_value, markdown
from analysis.measures import MLP, PIXEL_COLUMNS, TABLE1_MEASURES, Measure
from analysis.paper import PAPER_DATASETS, paper_row, setting_differences
from analysis.run_columns import CONFIG_TYPES
from analysis.selection import BASE_KEYS, NOT_SETTINGS, finished, group_keys
from analysis.stats import Estimate, t_interval
from analysis.verdicts import PairedTest, paired_test

MODEL_ORDER = {"vae": 0, "vqvae": 1, "pixels": 2}
MODEL_NAMES = {"vae": "VAE", "vqvae": "VQ-VAE", "pixels": "raw pixels"}
DATASET_NAMES = {
    "mnist": "MNIST",
    "cifar100": "CIFAR-100",
    "fashion_mnist": "Fashion-MNIST",
    "cifar10": "CIFAR-10",
    "digits": "digits",
    "CIFAR-10-images": "CIFAR-10 (JPEG copy)",
}
# Knobs both models share: a VAE and a VQ-VAE run are compared only where these agree (the knob tables compare
# within one dataset and label setting; the claims across them, so they pair on those too).
SHARED_KNOBS = ["seed", "epochs", "batch_size", "lr", "batch_norm", "precision"]
PAIR_KEYS = ["dataset", "label_embedding", *SHARED_KNOBS]
EXTRA_TITLES = {"kl_weight": "KL weight", "batch_norm": "BatchNorm", "batch_size": "batch", "restart_dead_codes": "restart dead"}


# --- Table 1 ---------------------------------------------------------------------------


def summarise(frame: pd.DataFrame, keys: list[str], measures: dict[str, str]) -> pd.DataFrame:
    """Mean, t-interval bounds and n of each metric per group: columns <short>, _low, _high, _n.

    The seed is the unit: runs repeating a config within a seed are averaged first, so n counts seeds.
    """
    rows = []
    for key, group in frame.groupby(keys, dropna=False, sort=False):
        row: dict[str, object] = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        row["n"] = int(group["seed"].nunique())
        for column, short in measures.items():
            est = per_seed(group, column)
            row.update({short: est.mean, f"{short}_low": est.low, f"{short}_high": est.high, f"{short}_n": est.n})
        rows.append(row)
    out = pd.DataFrame(rows, columns=[*keys, "n", *[f"{s}{t}" for s in measures.values() for t in ("", "_low", "_high", "_n")]])
    for key in keys:
        out[key] = out[key].astype(frame[key].dtype)
    return out


def per_seed(runs: pd.DataFrame, column: str) -> Estimate:
    """Mean and t interval over seeds of `column`, each seed's runs averaged first."""
    if column not in runs:
        return t_interval([])
    return t_interval(runs.groupby("seed")[column].mean())


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
            est = per_seed(group, column)
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


# --- pairing ---------------------------------------------------------------------------


def seed_pairs(a: pd.DataFrame, b: pd.DataFrame, metric: str, keys: list[str]) -> pd.DataFrame:
    """One (a, b) pair per seed: runs averaged per key on each side, matched on the keys, then averaged per seed."""
    if metric not in a or metric not in b or a.empty or b.empty:
        return pd.DataFrame(columns=["seed", "a", "b"])
    keys = [k for k in keys if k in a and k in b]
    left = a.groupby(keys, dropna=False)[metric].mean().rename("a").reset_index()
    right = b.groupby(keys, dropna=False)[metric].mean().rename("b").reset_index()
    merged = left.merge(right, on=keys, how="inner").dropna(subset=["a", "b"])
    return merged.groupby("seed", as_index=False)[["a", "b"]].mean()


def paired(a: pd.DataFrame, b: pd.DataFrame, metric: str, keys: list[str]) -> tuple[PairedTest, pd.DataFrame]:
    """b minus a over matched seeds, tested (paired t, sign-flip p)."""
    pairs = seed_pairs(a, b, metric, keys)
    return paired_test(pairs["a"], pairs["b"]), pairs


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


def _cell(row: dict[str, object], measure: Measure) -> str:
    est = Estimate(row[measure.short], row[f"{measure.short}_low"], row[f"{measure.short}_high"], int(row[f"{measure.short}_n"]))
    text = format_estimate(est, measure)
    return text if est.n in (0, row["n"]) else f"{text} (n={est.n})"


TABLE_INTERVAL = "95% t, n seeds"  # what a Table 1 cell's ± is: the half-width of the t interval over the row's n seeds


def table1_markdown(table: pd.DataFrame) -> str:
    """Table 1 as the report shows it: our measures, then the paper's beside every row of its model and dataset."""
    extra = [c for c in table.columns if c in CONFIG_TYPES and c not in BASE_KEYS and c not in NOT_SETTINGS]
    suffix = f" mean ± {TABLE_INTERVAL}" if (table["n"] >= 2).any() else ""  # single seeds: means only, no ± to name
    rows = []
    for row in table.to_dict("records"):
        pixels = row["model"] == "pixels"
        shown = {
            "model": MODEL_NAMES.get(row["model"], row["model"]),
            "dataset": DATASET_NAMES.get(row["dataset"], row["dataset"]),
            "label emb.": "" if pixels else format_value(row.get("label_embedding")),
            "K": "" if pixels else format_int(row.get("num_codes")),
            "D": "" if pixels else format_int(row.get("code_dim")),
            "beta": "" if pixels else format_value(row.get("beta")),
            **{EXTRA_TITLES.get(c, c): "" if pixels else format_value(row.get(c)) for c in extra},
            "n": str(int(row["n"])),
            **{f"{m.title}{suffix}": _cell(row, m) if not (pixels and m.short not in PIXEL_COLUMNS) else "" for m in TABLE1_MEASURES},
            "paper acc. (%)": "" if pd.isna(row.get("paper_acc")) else f"{100 * row['paper_acc']:.2f}",
            "paper MSE": "" if pd.isna(row.get("paper_mse")) else f"{row['paper_mse']:.3f}",
            "paper SSIM": "" if pd.isna(row.get("paper_ssim")) else f"{row['paper_ssim']:.3f}",
            "vs paper setting": ""
            if pixels or pd.isna(row.get("paper_acc"))
            else ("matches" if row["matches_paper"] else f"differs: {row['differs_from_paper']}"),
        }
        rows.append(shown)
    return markdown(pd.DataFrame(rows))
