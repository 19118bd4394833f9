"""The keys the trainable reports to Ray Tune beside its metrics: a contract between
`benchmark.sweep.trainable`, which reports them, and every callback that reads them (`benchmark.sweep.progress`).
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
PREDICTIONS_FILE = "predictions.npz"  # a trial's per-image test predictions, under the protocol it was trained with
# A trial's trained model, the artifact of its run: written by the trial (`benchmark.saved_model`), read back by
# `benchmark.load_model`, which lists a run's artifacts without torch.
MODEL_FILE = "model.pt"


def versioned_prefix(protocol: str) -> str:
    """`probe_v5/`: where a run keeps the metrics of one probe protocol, whichever protocol it was trained under."""
    return f"probe_v{protocol}/"


def versioned_params(protocol: str) -> str:
    """`probe_v5.`: the prefix of the params holding that protocol's probe settings (`benchmark.reprobe` writes them)."""
    return f"probe_v{protocol}."


def versioned_predictions_file(protocol: str) -> str:
    """`predictions_v5.npz`: one protocol's per-image test predictions, beside `predictions.npz`."""
    return f"predictions_v{protocol}.npz"


def protocol_view(metrics: dict[str, float], params: dict[str, str], protocol: str) -> tuple[dict[str, float], dict[str, str]] | None:
    """A run's probe metrics and probe settings as protocol `protocol` left them, under the plain names (`probe/...`,
    `probe.*`): from `probe_vP/` and `probe_vP.*` where it holds them (re-probed, or trained since versioned names
    exist), else its own `probe/` and `probe.*` where it was trained under that protocol; None where it holds neither."""
    prefix, param_prefix = versioned_prefix(protocol), versioned_params(protocol)
    own = params.get(f"{PROBE_PARAM_PREFIX}protocol") == protocol
    held = {"probe/" + k[len(prefix) :]: v for k, v in metrics.items() if k.startswith(prefix)}
    if not held and own:
        held = {k: v for k, v in metrics.items() if k.startswith("probe/")}
    settings = {PROBE_PARAM_PREFIX + k[len(param_prefix) :]: v for k, v in params.items() if k.startswith(param_prefix)}
    if not settings and own:
        settings = {k: v for k, v in params.items() if k.startswith(PROBE_PARAM_PREFIX)}
    return (held, settings) if held and settings else None
