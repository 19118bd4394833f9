"""What a runs frame holds, and how its string cells are typed: one home for both the store's and the CSVs' reads.

Params come back from MLflow (and from a CSV) as strings; they are typed here from `TrialConfig`'s fields. Knobs that
mean nothing for a model are NA in its rows (K, beta and the EMA/restart switches for a VAE; the KL weight for a
VQ-VAE), so grouping never splits on them.
"""

from __future__ import annotations

from dataclasses import fields

import pandas as pd

from benchmark.config import DEFAULT_CAPACITY_WEIGHT, TrialConfig

ROLE_TAG = "vqbench.role"
STATUSES = ("FINISHED", "FAILED", "KILLED", "RUNNING")
CONFIG_TYPES = {f.name: f.type for f in fields(TrialConfig)}
VAE_ONLY = ("kl_weight", "target_rate", "capacity_weight")
VQ_ONLY = ("num_codes", "beta", "quantizer", "ema", "ema_decay", "restart_dead_codes")
TAG_COLUMNS = {
    "vqbench.error": "error",
    "vqbench.config_id": "config_id",
    "vqbench.device": "device",
    "vqbench.git_commit": "git_commit",
    "vqbench.leaks_label": "leaks_label",
    "vqbench.stopped_at_epoch": "stopped_at_epoch",  # FINISHED, but stopped early by the scheduler: no final evaluation
    "vqbench.study": "study",
    "vqbench.objectives": "objectives",  # what a search ranked trials on, "metric:mode,..."; absent for fixed trials
    "vqbench.plan": "plan",  # the analysis plan the sweep registered (`--plan`): its name and SHA-256
    "vqbench.plan_hash": "plan_hash",
    "dataset.hash": "dataset.hash",  # what the trial's data was: content hash, a note, class and image counts
    "dataset.note": "dataset.note",
    "dataset.classes": "dataset.classes",
    "dataset.class_names": "dataset.class_names",
    "dataset.channels": "dataset.channels",
    "dataset.root": "dataset.root",
    "dataset.train_images": "dataset.train_images",
    "dataset.test_images": "dataset.test_images",
}
DATASET_TAGS = (
    "dataset.hash",
    "dataset.note",
    "dataset.classes",
    "dataset.class_names",
    "dataset.channels",
    "dataset.root",
    "dataset.train_images",
    "dataset.test_images",
)  # the dataset's card (benchmark.data.DatasetCard)
LATER_TAGS = ("stopped_at_epoch", "study", "objectives", "plan", "plan_hash", *DATASET_TAGS)
TEXT_COLUMNS = (
    "plan",
    "plan_hash",
    "dataset.hash",
    "dataset.note",
    "dataset.class_names",
    "dataset.root",
)  # never typed as numbers (a hash may be all digits)
# Config fields added after runs were published, with the value that describes the runs logged before them.
LATER_CONFIG = {
    "train_probe_every": 0,
    "target_rate": 0.0,
    "capacity_weight": DEFAULT_CAPACITY_WEIGHT,
    "quantizer": "plain",
}  # a runs CSV exported before these existed lacks them
# Config columns the tags also carry, used where a run died before logging its params.
TAG_FALLBACKS = {"vqbench.model": "model", "vqbench.dataset": "dataset", "vqbench.label_embedding": "label_embedding"}
FRONT = ["experiment", "sweep", "run_id", "parent_run_id", "run_name", "status", "error", "start_time", "end_time"]
# What a runs CSV must hold: what `python -m analysis.export` writes, less what older exports lack.
CSV_COLUMNS = [*FRONT, *(c for c in CONFIG_TYPES if c not in LATER_CONFIG), "config_id", "device", "git_commit", "leaks_label"]


def typed_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """Type a frame of string cells: config from TrialConfig, metrics (names with '/') as floats, other params as numbers where all parse."""
    known = set(FRONT) | set(CONFIG_TYPES) | {"config_id", "leaks_label", "device", "git_commit", "study", "objectives", *TEXT_COLUMNS}
    metric_names = [c for c in frame.columns if "/" in c]
    for column in frame.columns:
        if column in known or column in metric_names:
            continue
        numbers = pd.to_numeric(frame[column], errors="coerce")
        if numbers.notna().sum() == frame[column].notna().sum():
            frame[column] = numbers
    for column in LATER_TAGS:
        if column not in frame:
            frame[column] = None
    for column, before in LATER_CONFIG.items():
        frame[column] = frame[column].fillna(str(before)) if column in frame else str(before)
    for column in (
        "experiment",
        "sweep",
        "error",
        "git_commit",
        "device",
        "config_id",
        "run_name",
        "parent_run_id",
        "study",
        "objectives",
        *TEXT_COLUMNS,
    ):
        frame[column] = frame[column].astype("object").where(frame[column].notna(), None)
    return _typed_columns(frame, metric_names)


def _typed_columns(frame: pd.DataFrame, metric_names: list[str]) -> pd.DataFrame:
    for column in ("start_time", "end_time"):
        frame[column] = pd.to_datetime(pd.to_numeric(frame[column], errors="coerce"), unit="ms", utc=True)
    for column, kind in CONFIG_TYPES.items():
        if kind == "int":
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
        elif kind == "float":
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
        elif kind == "bool":
            frame[column] = frame[column].map(_to_bool).astype("boolean")
    frame["leaks_label"] = frame["leaks_label"].map(_to_bool).astype("boolean")
    for column in metric_names:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    is_vae, is_vq = frame["model"] == "vae", frame["model"] == "vqvae"
    for column in VQ_ONLY:
        frame.loc[is_vae, column] = pd.NA
    for column in VAE_ONLY:
        frame.loc[is_vq, column] = pd.NA
    # a VAE has either a KL weight or a target rate (with its gamma): the other knobs mean nothing for it
    rate_matched = is_vae & (frame["target_rate"].fillna(0) > 0)
    frame.loc[rate_matched, "kl_weight"] = pd.NA
    frame.loc[is_vae & ~rate_matched, ["target_rate", "capacity_weight"]] = pd.NA
    return frame.sort_values(["dataset", "model", "label_embedding", "seed", "start_time"], na_position="last", ignore_index=True)


def _to_bool(value: object) -> object:
    if isinstance(value, str):
        return {"true": True, "1": True, "false": False, "0": False}.get(value.lower(), pd.NA)
    return pd.NA if value is None or pd.isna(value) else bool(value)
