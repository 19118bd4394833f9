"""Which runs a table reads: finished ones, by status, grouped by what was trained, and the paper's reference setting."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.formatting import format_int, format_value
from analysis.run_columns import CONFIG_TYPES, STATUSES
from benchmark.config import DEFAULT_KL_WEIGHT, PAPER_VQ, TEST_HOOKS

FINISHED = "FINISHED"
STOPPED_EARLY = "stopped early"
BASE_KEYS = ["model", "dataset", "label_embedding", "num_codes", "code_dim", "beta"]
NOT_SETTINGS = {"seed", "train_probe_every", *TEST_HOOKS}  # not what was trained: the seed, or test and evaluation switches


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


def plain_quantizer(runs: pd.DataFrame) -> pd.DataFrame:
    """The VAEs and the VQ-VAEs with the paper's quantizer: the families the paper's claims and knobs are about
    (a library arm is another model, compared in `analysis.rates`). A frame from before the key: all of it."""
    if "quantizer" not in runs:
        return runs
    return runs[(runs["model"] != "vqvae") | (runs["quantizer"].fillna("plain") == "plain")]


def reference_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Per model, dataset and label setting: the paper's K/D/beta and quantizer (VQ-VAE; VAE: the paper's D,
    the default KL weight) where such runs exist, else all runs."""
    parts = []
    for (model, _, _), group in plain_quantizer(runs).groupby(["model", "dataset", "label_embedding"], dropna=False, sort=False):
        if model == "vqvae":
            pick = (
                _is(group["num_codes"], PAPER_VQ["num_codes"])
                & _is(group["code_dim"], PAPER_VQ["code_dim"])
                & _is(group["beta"], PAPER_VQ["beta"])
            )
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
            return f"K={format_int(k)}, D={format_int(d)}, beta={format_value(beta)}"
        return f"{len(settings)} K/D/beta settings averaged per seed"
    settings = picked[["code_dim", "kl_weight"]].drop_duplicates()
    if len(settings) == 1:
        d, kl = settings.iloc[0]
        return f"D={format_int(d)}, KL weight={format_value(kl)}"
    return f"{len(settings)} D/KL-weight settings averaged per seed"
