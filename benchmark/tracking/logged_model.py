"""A trial's trained model as its MLflow run holds it (`model.pt`, written by `benchmark.saved_model`), loaded back.

torch is imported when a model is loaded, not with this module: tracking must not need it."""

from __future__ import annotations

import tempfile
from typing import TYPE_CHECKING

from mlflow.tracking import MlflowClient

from benchmark.result_keys import MODEL_FILE
from benchmark.tracking.store import resolve_tracking_uri

if TYPE_CHECKING:
    import torch
    from torch import nn

    from benchmark.config import TrialConfig


def load_model(run_id: str, tracking_uri: str | None = None, device: str | torch.device = "cpu") -> tuple[nn.Module, TrialConfig]:
    """The trained model of a trial's MLflow run and its config; the store defaults to ./mlflow.db, as the sweep's."""
    from benchmark.saved_model import read_model

    client = MlflowClient(resolve_tracking_uri(tracking_uri))
    if MODEL_FILE not in {a.path for a in client.list_artifacts(run_id)}:
        raise FileNotFoundError(f"run {run_id} has no {MODEL_FILE}: its trial failed before the end, or its sweep ran with --no-log-model")
    with tempfile.TemporaryDirectory() as folder:
        return read_model(client.download_artifacts(run_id, MODEL_FILE, folder), device)
