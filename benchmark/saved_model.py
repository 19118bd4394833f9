"""A trial's trained model, logged to its MLflow run as one small file, and the one way to get it back.

`model.pt` holds the state dict, the trial config and the data's shape (channels, classes: an image
folder's are known only from its files) in torch's own format, loadable with `weights_only=True`: no pickled classes, so it loads in any later version of this code that
builds the same architecture. The paper's models are about 1 MB.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from mlflow.tracking import MlflowClient
from torch import nn

from benchmark.config import TrialConfig
from benchmark.data import CHANNELS, NUM_CLASSES
from benchmark.tracking import resolve_tracking_uri
from benchmark.train import new_model

MODEL_FILE = "model.pt"


def save_model(model: nn.Module, config: TrialConfig, folder: Path, channels: int, num_classes: int) -> Path:
    path = folder / MODEL_FILE
    state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    torch.save({"config": config.to_dict(), "state_dict": state, "channels": channels, "num_classes": num_classes}, path)
    return path


def read_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, TrialConfig]:
    """A model from a model.pt file, in eval mode on `device`."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    config = TrialConfig.from_dict(saved["config"])
    # files saved before the data's shape was stored are of built-in datasets, whose shapes are known
    channels = saved.get("channels") or CHANNELS[config.dataset]
    num_classes = saved.get("num_classes") or NUM_CLASSES[config.dataset]
    model = new_model(config, channels, num_classes, torch.device(device))
    model.load_state_dict(saved["state_dict"])
    return model.eval(), config


def load_model(run_id: str, tracking_uri: str | None = None, device: str | torch.device = "cpu") -> tuple[nn.Module, TrialConfig]:
    """The trained model of a trial's MLflow run and its config; the store defaults to ./mlflow.db, as the sweep's."""
    client = MlflowClient(resolve_tracking_uri(tracking_uri))
    if MODEL_FILE not in {a.path for a in client.list_artifacts(run_id)}:
        raise FileNotFoundError(f"run {run_id} has no {MODEL_FILE}: its trial failed before the end, or its sweep ran with --no-log-model")
    with tempfile.TemporaryDirectory() as folder:
        return read_model(client.download_artifacts(run_id, MODEL_FILE, folder), device)
