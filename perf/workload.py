"""What the perf scripts train: the paper's models (`benchmark.config.PAPER_VQ`, `PAPER_TRAINING`) on synthetic data.

Random uint8 images of a real dataset's shape cost what real ones cost (every layer is
dense), and need no download; scripts that measure accuracy or evaluation use real data.
"""

from __future__ import annotations

import os

import torch

from benchmark.config import PAPER_TRAINING, PAPER_VQ, TrialConfig
from benchmark.data import Dataset
from benchmark.data_files import DATA_DIR_ENV
from perf.record import REPO

# Synthetic shapes by name; the dataset each stands for decides the project's presets (CIFAR: BatchNorm on).
SHAPES = {"mnist": (1, "mnist"), "cifar": (3, "cifar10")}


def paper_config(model: str, shape: str = "mnist", **overrides: object) -> TrialConfig:
    """The paper's configuration; `from_dict` applies the project's per-dataset presets."""
    return TrialConfig.from_dict(
        {
            "model": model,
            "dataset": SHAPES[shape][1],
            **PAPER_VQ,
            "batch_size": PAPER_TRAINING["batch_size"],
            "lr": PAPER_TRAINING["lr"],
            **overrides,
        }
    )


def synthetic_dataset(images: int, shape: str = "mnist", test_images: int = 0, seed: int = 0) -> Dataset:
    """Random 32x32 uint8 images and labels 0..9, laid out as the project's loader lays out real ones."""
    channels = SHAPES[shape][0]
    generator = torch.Generator().manual_seed(seed)
    total = images + test_images
    x = torch.randint(0, 256, (total, channels, 32, 32), dtype=torch.uint8, generator=generator)
    y = torch.randint(0, 10, (total,), generator=generator)
    return Dataset(f"synthetic-{shape}", x[:images], y[:images], x[images:], y[images:], 10)


def real_data_dir() -> str:
    """$VQBENCH_DATA_DIR, else the shared data beside the checkout (where real MNIST lives here)."""
    return os.environ.get(DATA_DIR_ENV) or str(REPO.parent / "shared" / "data")
