"""Per-image test predictions of every probe, as a run's artifact (the analysis plan's two-level interval reads them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from benchmark.evaluation.probe_settings import PROTOCOL
from benchmark.result_keys import PREDICTIONS_FILE, versioned_predictions_file


def compact(values: torch.Tensor | np.ndarray, num_classes: int) -> np.ndarray:
    """Class indices in the smallest integer type that holds them (uint8 for up to 256 classes)."""
    kind = np.uint8 if num_classes <= 256 else np.uint16 if num_classes <= 65536 else np.int64
    return np.asarray(values.cpu() if isinstance(values, torch.Tensor) else values).astype(kind)


def write_predictions(predictions: dict[str, np.ndarray], path: Path) -> Path:
    """`labels` (test order) and one array per `{representation}/{probe}`, e.g. `latent/linear`, `pixels/mlp`."""
    with open(path, "wb") as f:
        np.savez_compressed(f, **predictions)
    return path


def save_predictions(predictions: dict[str, np.ndarray], folder: Path, protocol: str = PROTOCOL) -> list[Path]:
    """A trial's artifacts: `predictions.npz` and the same file under its protocol's name, `predictions_v4.npz`."""
    return [write_predictions(predictions, folder / name) for name in (PREDICTIONS_FILE, versioned_predictions_file(protocol))]


def read_predictions(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path) as stored:
        return {key: stored[key] for key in stored.files}
