"""MLflow runs -> one tidy DataFrame, one row per trial; and the few other reads the report needs.

    from analysis import load_runs
    runs = load_runs("paper", tracking_uri="sqlite:////abs/path/mlflow.db")
    runs[runs.status == "FINISHED"].groupby(["model", "dataset"])["probe/latent/mlp_acc"].mean()

Params come back from MLflow as strings; `analysis.run_columns` types them; `analysis.runs_csv` reads and writes
the same frame as CSV.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from analysis.run_columns import CONFIG_TYPES, FRONT, LATER_TAGS, ROLE_TAG, TAG_COLUMNS, TAG_FALLBACKS, typed_runs
from benchmark.error_text import first_line
from benchmark.result_keys import protocol_view
from benchmark.tracking.store import TrackingError, check_reachable, resolve_tracking_uri


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
