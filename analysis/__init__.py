"""Reads a sweep's MLflow runs and rebuilds the paper's Table 1, tests its claims, and writes the report.

    from analysis import load_runs
    runs = load_runs("paper", tracking_uri="sqlite:////abs/path/mlflow.db")

`python -m analysis.report --experiment NAME` writes report.md and figures and logs them to the sweep run.
"""

from analysis.runs import RunsError, load_runs

__all__ = ["RunsError", "load_runs"]
