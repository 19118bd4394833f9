"""The pooling rule: runs of different precisions, probe protocols or code versions are never averaged into one cell.

A cell is what one side of a comparison averages over: the finished runs of one model, dataset, label
setting and training configuration (every config knob but the seed and the keys checked here). The report
refuses such a cell (exit 2, naming the runs) unless --allow-pooling, and then says so in its header.
"""

from __future__ import annotations

import pandas as pd

from analysis.run_columns import CONFIG_TYPES
from analysis.selection import NOT_SETTINGS, finished
from benchmark.result_keys import PROBE_PARAM_PREFIX as PROBE_PARAMS

PROTOCOL_PARAM = "probe.protocol"
CHECKED = {"precision": "precision", "probe_protocol": "probe protocol", "code_version": "code version (git commit)"}


def probe_protocol(runs: pd.DataFrame) -> pd.Series:
    """The `probe.protocol` param where recorded, else the probe.* settings the run was probed with, as text."""
    columns = sorted(c for c in runs.columns if c.startswith(PROBE_PARAMS) and c != PROTOCOL_PARAM)
    settings = runs[columns].astype(object).map(lambda v: "?" if pd.isna(v) else f"{v:g}" if isinstance(v, float) else str(v))
    described = (
        settings.apply(lambda row: ",".join(f"{c[len(PROBE_PARAMS) :]}={v}" for c, v in row.items()), axis=1)
        if columns
        else pd.Series("", index=runs.index)
    )
    if PROTOCOL_PARAM in runs:
        return runs[PROTOCOL_PARAM].astype(object).where(runs[PROTOCOL_PARAM].notna(), described)
    return described


def _values(runs: pd.DataFrame, key: str) -> pd.Series:
    if key == "precision":
        return runs["precision"].astype(object).fillna("?")
    if key == "probe_protocol":
        return probe_protocol(runs)
    return runs["git_commit"].astype(object).fillna("unknown")


def cell_keys(runs: pd.DataFrame) -> list[str]:
    return [c for c in CONFIG_TYPES if c not in NOT_SETTINGS and c != "precision" and c in runs]


def violations(runs: pd.DataFrame, refuse: tuple[str, ...]) -> list[str]:
    """One sentence per cell that would pool runs differing in a refused key, naming the key, values and runs."""
    done = finished(runs)
    if done.empty or not refuse:
        return []
    keys = cell_keys(done)
    found = []
    for key in refuse:
        values = _values(done, key)
        frame = done.assign(_value=values)
        for cell, group in frame.groupby(keys, dropna=False, sort=False):
            if group["_value"].nunique() <= 1:
                continue
            where = ", ".join(
                f"{k}={v}"
                for k, v in zip(keys, cell)
                if k in ("model", "dataset", "label_embedding", "num_codes", "code_dim", "beta", "kl_weight", "target_rate")
                and not pd.isna(v)
            )
            parts = "; ".join(
                f"{str(v)[:40]}: {', '.join(g['run_id'].astype(str).head(6))}{' ...' if len(g) > 6 else ''}"
                for v, g in group.groupby("_value", sort=True)
            )
            found.append(f"{CHECKED[key]} differs within one cell ({where}): {parts}")
    return found
