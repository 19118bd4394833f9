"""The keys the trainable reports to Ray Tune beside its metrics: a contract between
`benchmark.tune_trial`, which reports them, and every callback that reads them (`benchmark.progress`).
Named once here, so that a key renamed on one side cannot leave the other reading a key no one writes."""

from __future__ import annotations

EPOCH = "epoch"  # epochs trained so far (the epoch it failed or stopped at, in a final report)
MLFLOW_RUN_ID = "mlflow_run_id"  # the trial's MLflow run
# The final report only: its presence tells a callback the trial ended.
FAILED = "failed"  # 1.0 when the trial failed without a retry (it diverged, or a deterministic error), else 0.0
DIVERGED = "diverged"  # 1.0 when it failed because its loss became nan or inf (`TrialDiverged`), else 0.0

# A run's probe settings live in its MLflow params under this prefix (`probe.max_epochs`, ...): written by the
# trial, read by the report, which must not need torch to read it.
PROBE_PARAM_PREFIX = "probe."
