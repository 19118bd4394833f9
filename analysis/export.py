"""A sweep's trial runs as one tidy CSV: the file results are published from, and rebuilt from.

    python -m analysis.export --experiment paper-repro --tracking-uri sqlite:////abs/mlflow.db --all-sweeps --out runs.csv
    python -m analysis.report --runs runs.csv --out report/      # the same report, no MLflow store needed

One row per trial run (every status): experiment and sweep, run id, status and error, the full
trial config, the probe settings (`probe.*`), every final metric under its MLflow name and the
run's tags that the report reads. Runs with per-image test predictions (the `predictions.npz` artifact) also
get them in `<csv-stem>.predictions.npz` beside the CSV (keys `{run_id}/labels`, `{run_id}/{rep}/{probe}`). The runs in scope are the report's: the latest sweep, the
one given by --parent-run-id, or all of them with --all-sweeps.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis import predictions, selection
from analysis.runs import RunsError, add_protocol_option, open_experiment, scope_runs
from analysis.runs_csv import write_runs_csv
from benchmark.outputs import file_problem
from benchmark.tracking.store import DEFAULT_EXPERIMENT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.export", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--experiment", default=DEFAULT_EXPERIMENT, help=f"MLflow experiment name or id (default: {DEFAULT_EXPERIMENT}, the sweep's)"
    )
    parser.add_argument(
        "--tracking-uri", default=None, help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db as the sweep)"
    )
    parser.add_argument("--out", type=Path, required=True, help="the CSV file to write")
    parser.add_argument("--parent-run-id", default=None, help="the sweep run to export (default: the latest)")
    parser.add_argument("--all-sweeps", action="store_true", help="export the trials of every sweep in the experiment")
    add_protocol_option(parser)
    args = parser.parse_args(argv)
    if args.out.suffix.lower() != ".csv" or args.out.is_dir():
        print(f"error: --out {args.out} is not a .csv file path: pass e.g. --out results/runs.csv", file=sys.stderr)
        return 2
    if problem := file_problem(args.out):
        print(f"error: --out {args.out}: {problem}; pass a .csv path that can be written", file=sys.stderr)
        return 2
    try:
        source = open_experiment(args.experiment, args.tracking_uri)
        scope = scope_runs(source, args.parent_run_id, args.all_sweeps, args.protocol)
    except RunsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    write_runs_csv(scope.runs, args.out)
    counts = ", ".join(f"{n} {status}" for status, n in selection.outcome(scope.runs).value_counts().items())  # stopped early apart
    print(f"wrote {len(scope.runs)} trial run(s) ({counts}) to {args.out}")
    found = predictions.from_store(source.client, list(scope.runs["run_id"]), args.protocol)
    target = predictions.companion(args.out)
    if found.save(target):
        print(f"wrote the per-image test predictions of {len(found)} run(s) to {target}")
    else:
        print("no run has per-image test predictions (predictions.npz): the report will use seed-only intervals")
    return 0


if __name__ == "__main__":
    sys.exit(main())
