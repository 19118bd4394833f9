"""What a report reads, and checks, before a single file is written: a store's sweep or runs CSVs, their predictions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from mlflow.entities import Run

from analysis import pooling, predictions, selection
from analysis.plan import Plan
from analysis.runs import RunsError, Source, open_experiment, scope_runs
from analysis.runs_csv import read_runs_csv


@dataclass
class Inputs:
    """Everything read before a single file is written."""

    source: Source | None  # None: read from runs CSVs
    sweep: Run | None  # the sweep run the report is logged to
    runs: pd.DataFrame  # the trials in scope, every status
    outside: int  # trial runs of the experiment left out of scope (other sweeps)
    origin: str  # where the runs were read from, for the header
    plan: Plan | None = None  # set by main (or a caller) before write_report
    predictions: predictions.Predictions | None = None
    pooled: tuple[str, ...] = ()  # pooling violations let through by --allow-pooling
    figure_folders: tuple[Path, ...] = ()  # from CSVs: the figures/ folders beside them, where the per-run figures are carried


def gather(experiment: str, tracking_uri: str | None, parent_run_id: str | None, all_sweeps: bool, protocol: str | None = None) -> Inputs:
    """Read and check a store's runs (under probe `protocol` where given); raises RunsError (naming the fix) for anything unusable."""
    source = open_experiment(experiment, tracking_uri)
    scope = scope_runs(source, parent_run_id, all_sweeps, protocol)
    check_finished(scope.runs, f"experiment {source.experiment_name!r}")
    found = predictions.from_store(source.client, list(selection.finished(scope.runs)["run_id"]), protocol)
    return Inputs(source, scope.sweep, scope.runs, scope.outside, f"MLflow store `{source.tracking_uri}`", predictions=found)


def gather_csv(paths: list[Path]) -> Inputs:
    """Read and check runs CSVs; raises RunsError for anything unusable."""
    runs = read_runs_csv(paths)
    check_finished(runs, ", ".join(str(p) for p in paths))
    folders = tuple(dict.fromkeys(p.resolve().parent / "figures" for p in paths))
    return Inputs(
        None,
        None,
        runs,
        0,
        "runs CSV " + ", ".join(f"`{p.name}`" for p in paths),
        predictions=predictions.from_csvs(paths),
        figure_folders=folders,
    )


def check_pooling(inputs: Inputs, plan: Plan, allow: bool) -> None:
    """RunsError naming the runs where a cell would pool what the plan refuses; with `allow`, recorded for the header."""
    found = pooling.violations(inputs.runs, plan.pooling)
    if found and not allow:
        listed = "\n  ".join(found[:10]) + (f"\n  ... and {len(found) - 10} more" if len(found) > 10 else "")
        raise RunsError(
            f"the plan `{plan.name}` refuses to pool these runs into one cell:\n  {listed}\n"
            "report on one precision, probe protocol and code version at a time, or pass --allow-pooling (the header will say so)"
        )
    inputs.pooled = tuple(found)


def check_finished(runs: pd.DataFrame, where: str) -> None:
    if selection.finished(runs).empty:
        counts = ", ".join(f"{n} {s}" for s, n in runs["status"].value_counts().items())
        raise RunsError(
            f"no FINISHED trial runs in {where} ({counts}): wait for the sweep to finish, or look at their vqbench.error tags and rerun it"
        )
