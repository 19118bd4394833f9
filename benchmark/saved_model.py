"""A trial's trained model as one small file, which the trial logs to its MLflow run (`benchmark.tracking.logged_model`
loads it back from there).

`model.pt` holds the state dict, the trial config and the data's shape (channels, classes: an image
folder's are known only from its files) in torch's own format, loadable with `weights_only=True`: no pickled classes, so it loads in any later version of this code that
builds the same architecture. The paper's models are about 1 MB.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from benchmark.config import TrialConfig
from benchmark.data_files import CHANNELS, NUM_CLASSES
from benchmark.result_keys import MODEL_FILE
from benchmark.train import new_model


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
