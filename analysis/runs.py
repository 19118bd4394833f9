"""MLflow runs -> one tidy DataFrame, one row per trial; and the few other reads the report needs.

    from analysis import load_runs
    runs = load_runs("paper", tracking_uri="sqlite:////abs/path/mlflow.db")
    runs[runs.status == "FINISHED"].groupby(["model", "dataset"])["probe/latent/mlp_acc"].mean()

Params come back from MLflow as strings; they are typed here from `TrialConfig`'s fields.
Knobs that mean nothing for a model are NA in its rows (K, beta and the EMA/restart
switches for a VAE; the KL weight for a VQ-VAE), so grouping never splits on them.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path

import pandas as pd
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from benchmark.config import DEFAULT_CAPACITY_WEIGHT, MODELS, TrialConfig
from benchmark.error_text import first_line
from benchmark.result_keys import protocol_view
from benchmark.tracking.store import TrackingError, check_reachable, resolve_tracking_uri

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


class RunsError(RuntimeError):
    """Bad input for the analysis: the message names the problem and the fix."""


@dataclass(frozen=True)
class Source:
    """An opened store and the experiment read from it."""

    client: MlflowClient
    tracking_uri: str
    experiment_id: str
    experiment_name: str


def open_experiment(experiment: str, tracking_uri: str | None = None) -> Source:
    """Find the experiment by name (or id) without creating anything in the store."""
    try:
        uri = resolve_tracking_uri(tracking_uri)
        if uri.startswith(("http://", "https://")):
            check_reachable(uri)
    except TrackingError as err:
        raise RunsError(str(err)) from None
    if uri.startswith("sqlite:///"):
        # MLflow would silently create an empty database here; a missing file is a wrong path.
        path = Path(uri[len("sqlite:///") :])
        if not path.is_file():
            raise RunsError(f"no MLflow store at {path}: pass --tracking-uri sqlite:////abs/path/mlflow.db pointing at the sweep's store")
    try:
        client = MlflowClient(uri)
        found = client.get_experiment_by_name(experiment)
        if found is None and experiment.isdigit():
            found = _experiment_by_id(client, experiment)
        if found is None:
            names = sorted(e.name for e in client.search_experiments())
    except MlflowException as err:
        raise RunsError(
            f"cannot read the MLflow store {uri} ({first_line(err, 300)}): check --tracking-uri and that the store/server is up"
        ) from None
    except Exception as err:  # network errors, a corrupt database
        raise RunsError(
            f"cannot reach the MLflow store {uri} ({type(err).__name__}: {first_line(err, 300)}): check --tracking-uri"
        ) from None
    if found is None:
        known = ", ".join(names) if names else "none"
        raise RunsError(f"experiment {experiment!r} not found in {uri}: pass --experiment with one of: {known}")
    return Source(client, uri, found.experiment_id, found.name)


def load_runs(experiment: str, tracking_uri: str | None = None, protocol: str | None = None) -> pd.DataFrame:
    """Every trial run of an experiment: typed config, final metrics, status and error.

    Columns: run_id, parent_run_id, run_name, status, error, start_time, end_time, the
    config (model, dataset, seed, num_codes, ...), config_id, leaks_label, device,
    git_commit, then one column per metric under its MLflow name ("recon/ssim", ...).
    Accuracies are fractions. K, beta (and the EMA switches) are NA for VAE rows and the
    KL weight for VQ-VAE rows. With `protocol`, each run's `probe/*` metrics and `probe.*` settings are those of that
    probe protocol (`protocol_rows`). Raises RunsError for an unknown experiment or store.
    """
    return runs_frame(open_experiment(experiment, tracking_uri), protocol)


def runs_frame(source: Source, protocol: str | None = None) -> pd.DataFrame:
    runs = _search(source, f"tags.`{ROLE_TAG}` = 'trial'")
    if protocol is not None:
        check_protocol_held(runs, protocol)
    parents = {run.info.run_id: run for run in sweep_runs(source)}
    sweeps = {run_id: run.info.run_name for run_id, run in parents.items()}
    data = [_data(run, protocol) for run in runs]
    rows = [
        {"experiment": source.experiment_name, "sweep": sweeps.get(run.data.tags.get("mlflow.parentRunId")), **_row(run, *found)}
        for run, found in zip(runs, data)
    ]
    for row in rows:  # a trial without the plan tags inherits its sweep's registration
        parent = parents.get(row["parent_run_id"])
        for tag, column in (("vqbench.plan", "plan"), ("vqbench.plan_hash", "plan_hash")):
            if row.get(column) is None and parent is not None:
                row[column] = parent.data.tags.get(tag)
    metric_names = sorted({name for metrics, _ in data for name in metrics})
    # Params beyond TrialConfig's (the probe settings, or keys a newer TrialConfig may add).
    extra = sorted({key for _, params in data for key in params} - set(CONFIG_TYPES))
    return typed_runs(pd.DataFrame(rows, columns=_columns(extra, metric_names)))


def as_protocol(run: Run, protocol: str) -> tuple[dict[str, float], dict[str, str]] | None:
    """The run's metrics and params as probe protocol `protocol` scored it: that protocol's under the plain names
    (`probe/*`, `probe.*`), every protocol's versioned ones left out; None where it holds no such metrics."""
    view = protocol_view(run.data.metrics, run.data.params, protocol)
    if view is None:
        return None
    metrics, params = _without_probes(run)
    return {**metrics, **view[0]}, {**params, **view[1]}


def _without_probes(run: Run) -> tuple[dict[str, float], dict[str, str]]:
    metrics = {k: v for k, v in run.data.metrics.items() if not k.startswith(("probe/", "probe_v"))}
    params = {k: v for k, v in run.data.params.items() if not k.startswith(("probe.", "probe_v"))}
    return metrics, params


def add_protocol_option(parser: argparse.ArgumentParser) -> None:
    """`--protocol P`, the same for every command that reads a store."""
    parser.add_argument(
        "--protocol",
        default=None,
        metavar="P",
        help="read every run's probe metrics and predictions as probe protocol P scored them (trained under it, or re-probed "
        "by `python -m benchmark.reprobe`); a finished run without them is an error (default: each run's own protocol)",
    )


def check_protocol_held(runs: list[Run], protocol: str) -> None:
    """Refuse, rather than drop, finished runs that hold no metrics of `protocol`: a table that silently lost its
    un-reprobed runs would change its n without a word."""
    missing = [
        run.info.run_name or run.info.run_id
        for run in runs
        if run.info.status == "FINISHED" and "vqbench.stopped_at_epoch" not in run.data.tags and as_protocol(run, protocol) is None
    ]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise RunsError(
            f"{len(missing)} finished run(s) hold no probe protocol {protocol} metrics ({shown}): re-probe them under it with "
            "`python -m benchmark.reprobe --experiment NAME --tracking-uri URI`, or leave out --protocol"
        )


def read_runs_csv(paths: list[Path]) -> pd.DataFrame:
    """The frame `load_runs` returns, rebuilt from runs CSVs (`python -m analysis.export`); no MLflow store needed."""
    frames = []
    for path in paths:
        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise RunsError(
                f"cannot read runs CSV {path} ({type(err).__name__}: {first_line(err, 300)}): pass a file written by `python -m analysis.export`"
            ) from None
        check_runs_csv(frame, path)
        frames.append(frame)
    if not frames:
        raise RunsError("no runs CSV given: pass --runs FILE.csv [FILE.csv ...]")
    frame = pd.concat(frames, ignore_index=True)
    duplicated = frame["run_id"].duplicated()
    if duplicated.any():
        raise RunsError(
            f"run {frame.loc[duplicated, 'run_id'].iloc[0]} appears in more than one row of the runs CSVs: pass each export once"
        )
    return typed_runs(frame)


def check_runs_csv(frame: pd.DataFrame, path: Path) -> None:
    """Every column the analysis reads, and values it can use: a hand-edited or foreign CSV fails here, not as a traceback."""
    missing = [c for c in CSV_COLUMNS if c not in frame]
    if missing:
        raise RunsError(
            f"{path} is not a runs CSV: it lacks the column(s) {', '.join(missing)}; write one with `python -m analysis.export`"
        )
    blank = frame["dataset"].notna() & (frame["dataset"].astype(str).str.strip() == "")
    if blank.any():
        raise RunsError(f"{path}: run {frame.loc[blank, 'run_id'].iloc[0]} has an empty dataset name; fix the row or export the runs again")
    for column, allowed in (("model", MODELS), ("status", STATUSES)):  # any dataset name: image folders name their own
        bad = frame[column].notna() & ~frame[column].isin(allowed)
        if bad.any():
            raise RunsError(
                f"{path}: run {frame.loc[bad, 'run_id'].iloc[0]} has {column}={frame.loc[bad, column].iloc[0]!r}; "
                f"allowed: {', '.join(allowed)}. Fix the row or export the runs again"
            )
    numeric = [c for c, kind in CONFIG_TYPES.items() if kind in ("int", "float") and c in frame] + [c for c in frame.columns if "/" in c]
    for column in numeric:
        bad = frame[column].notna() & pd.to_numeric(frame[column], errors="coerce").isna()
        if bad.any():
            raise RunsError(
                f"{path}: run {frame.loc[bad, 'run_id'].iloc[0]} has {column}={frame.loc[bad, column].iloc[0]!r}, not a number; "
                "fix the row or export the runs again"
            )


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
    return _typed(frame, metric_names)


@dataclass(frozen=True)
class Scope:
    """The trial runs a report (or an export) covers, and what was left out."""

    runs: pd.DataFrame  # every status
    sweep: Run | None  # the sweep run reported on (with --all-sweeps: the latest); None where there is none
    outside: int  # trial runs of the experiment in other sweeps


def scope_runs(source: Source, parent_run_id: str | None, all_sweeps: bool, protocol: str | None = None) -> Scope:
    """The latest sweep's trials (or the given sweep's, or every sweep's), under `protocol` where given; RunsError
    when there are none."""
    sweep = pick_sweep(source, parent_run_id)
    every = runs_frame(source, protocol)
    runs = every if all_sweeps or sweep is None else every[every["parent_run_id"] == sweep.info.run_id]
    if runs.empty:
        where = f"experiment {source.experiment_name!r}" + (f", sweep run {sweep.info.run_id}" if sweep and not all_sweeps else "")
        raise RunsError(
            f"no trial runs (tag vqbench.role=trial) in {where}: run a sweep into it first, or pick another --experiment / --parent-run-id"
        )
    return Scope(runs.reset_index(drop=True), sweep, len(every) - len(runs))


def write_runs_csv(runs: pd.DataFrame, path: Path) -> None:
    """One row per trial run: config, status, every final metric, run id; times as epoch milliseconds (exact round trip)."""
    out = runs.copy()
    for column in ("start_time", "end_time"):
        out[column] = pd.array([None if pd.isna(t) else t.value // 10**6 for t in out[column]], dtype="Int64")
    path.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(path, index=False)


def sweep_runs(source: Source) -> list[Run]:
    """The experiment's sweep (parent) runs, latest first."""
    return sorted(_search(source, f"tags.`{ROLE_TAG}` = 'sweep'"), key=lambda r: r.info.start_time or 0, reverse=True)


def pick_sweep(source: Source, parent_run_id: str | None) -> Run | None:
    """The given sweep run (checked to be a sweep of this experiment), else the latest, else None."""
    sweeps = sweep_runs(source)
    if parent_run_id is None:
        return sweeps[0] if sweeps else None
    for run in sweeps:
        if run.info.run_id == parent_run_id:
            return run
    known = ", ".join(r.info.run_id for r in sweeps) or "none"
    raise RunsError(
        f"run {parent_run_id!r} is not a sweep run (tag {ROLE_TAG}=sweep) of experiment {source.experiment_name!r}: "
        f"pass --parent-run-id with one of: {known}, or leave it out to use the latest"
    )


def download_artifact(source: Source, run_id: str, name: str, destination: Path) -> bool:
    """Copy one artifact of a run to `destination`; False (nothing written) if it is missing."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = Path(source.client.download_artifacts(run_id, name, tmp))
        except Exception:  # MlflowException, OSError: the report says "missing" instead
            return False
        if not local.is_file():
            return False
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, destination)
    return True


def _search(source: Source, filter_string: str) -> list[Run]:
    found: list[Run] = []
    token = None
    while True:
        page = source.client.search_runs([source.experiment_id], filter_string, max_results=5000, page_token=token)
        found.extend(page)
        token = page.token
        if not token:
            return found


def _experiment_by_id(client: MlflowClient, experiment_id: str):
    try:
        return client.get_experiment(experiment_id)
    except MlflowException:
        return None


def _columns(extra_params: list[str], metric_names: list[str]) -> list[str]:
    return FRONT + list(CONFIG_TYPES) + extra_params + ["config_id", "leaks_label", "device", "git_commit", *LATER_TAGS] + metric_names


def _data(run: Run, protocol: str | None) -> tuple[dict[str, float], dict[str, str]]:
    """The run's metrics and params; with `protocol`, as that protocol scored it, and without probe metrics where it
    holds none of that protocol's (a run that never finished: finished ones are refused first)."""
    if protocol is None:
        return run.data.metrics, run.data.params
    return as_protocol(run, protocol) or _without_probes(run)


def _row(run: Run, metrics: dict[str, float], params: dict[str, str]) -> dict[str, object]:
    tags, info = run.data.tags, run.info
    row: dict[str, object] = {
        "run_id": info.run_id,
        "parent_run_id": tags.get("mlflow.parentRunId"),
        "run_name": info.run_name,
        "status": info.status,
        "start_time": info.start_time,
        "end_time": info.end_time,
    }
    row.update({column: tags.get(tag) for tag, column in TAG_COLUMNS.items()})
    row.update(params)
    for tag, column in TAG_FALLBACKS.items():
        if row.get(column) is None:
            row[column] = tags.get(tag)
    row.update(metrics)
    return row


def _typed(frame: pd.DataFrame, metric_names: list[str]) -> pd.DataFrame:
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
