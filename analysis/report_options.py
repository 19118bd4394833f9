"""The report's command line: its options, and the combinations refused before anything is read."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from analysis.plan import DEFAULT_PLAN
from analysis.plan_file import WIDEST_MARGIN
from analysis.runs import add_protocol_option
from benchmark.tracking.store import DEFAULT_EXPERIMENT

# The margins given here, each refused at its metric's whole range as the plan's are (accuracy here in points).
MARGIN_OPTIONS = {"accuracy_margin": 100.0 * WIDEST_MARGIN["accuracy"], "ssim_margin": WIDEST_MARGIN["ssim"]}


def parse_args(argv: list[str] | None, description: str) -> argparse.Namespace:
    """`python -m analysis.report`'s options."""
    parser = argparse.ArgumentParser(prog="python -m analysis.report", description=description)
    parser.add_argument(
        "--experiment",
        default=DEFAULT_EXPERIMENT,
        help=f"MLflow experiment name (or id) the sweep logged to (default: {DEFAULT_EXPERIMENT}, the sweep's)",
    )
    parser.add_argument(
        "--tracking-uri", default=None, help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db as the sweep)"
    )
    parser.add_argument("--out", type=Path, default=Path("report"), help="folder for report.md and figures/ (default: report/)")
    parser.add_argument("--parent-run-id", default=None, help="the sweep run to report on and log to (default: the latest)")
    parser.add_argument("--all-sweeps", action="store_true", help="include the trials of every sweep in the experiment")
    parser.add_argument(
        "--runs",
        type=Path,
        nargs="+",
        default=None,
        metavar="CSV",
        help="build the report from runs CSVs (`python -m analysis.export`) instead of an MLflow store",
    )
    add_protocol_option(parser)
    parser.add_argument(
        "--plan", type=Path, default=DEFAULT_PLAN, help="the analysis plan (TOML) the report enforces (default: analysis/plans/paper.toml)"
    )
    parser.add_argument(
        "--allow-pooling",
        action="store_true",
        help="average runs of different precisions, probe protocols or code versions into one cell anyway (the header says so)",
    )
    parser.add_argument(
        "--accuracy-margin",
        type=float,
        default=None,
        help="override the plan's equivalence margin for accuracies, in points (a deviation the header names)",
    )
    parser.add_argument(
        "--ssim-margin", type=float, default=None, help="override the plan's equivalence margin for SSIM (a deviation the header names)"
    )
    return parser.parse_args(argv)


def option_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the options, in one line with its fix; None when they can be used."""
    for name, widest in MARGIN_OPTIONS.items():
        value = getattr(args, name)
        if value is not None and not (math.isfinite(value) and 0 < value < widest):
            return (
                f"--{name.replace('_', '-')} {value!r} is not allowed: pass a number above 0 and below {widest:g}, "
                "the metric's whole range (a margin that wide calls everything equivalent)"
            )
    if args.runs and (args.parent_run_id or args.all_sweeps or args.tracking_uri or args.protocol):
        return (
            "--runs reads CSVs only: leave out --tracking-uri, --parent-run-id, --all-sweeps and --protocol "
            "(a CSV holds the protocol it was exported with: `python -m analysis.export --protocol P`)"
        )
    return None
