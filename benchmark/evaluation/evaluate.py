"""The end of every trial, on the trial's device: probes, reconstruction, codebook, figure data."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from benchmark.config import TrialConfig
from benchmark.data import Dataset
from benchmark.evaluation.clustering import cluster_agreement
from benchmark.evaluation.pixel_probes import pixel_probes
from benchmark.evaluation.probe import probe_all
from benchmark.evaluation.probe_predictions import compact
from benchmark.evaluation.probe_settings import ProbeSettings
from benchmark.evaluation.reconstruction import reconstruction_metrics
from benchmark.quantizer import code_perplexity
from benchmark.rate import on_train_split, vae_rates, vq_rates
from benchmark.result_keys import versioned_prefix
from benchmark.train import autocast, scale

GRID_IMAGES = 8
TSNE_POINTS = 1000


@dataclass
class Evaluation:
    metrics: dict[str, float]
    originals: torch.Tensor  # (GRID_IMAGES, C, H, W) in [0, 1], a fixed set of test images (`grid_indices`)
    reconstructions: torch.Tensor
    latents: torch.Tensor  # seeded subsample of test latents for t-SNE, (n, features)
    latent_labels: torch.Tensor  # their labels (CIFAR-100: the 20 superclasses)
    # `labels` and `{rep}/{probe}`: each test image's label and each probe's prediction (predictions.npz)
    predictions: dict[str, np.ndarray] = field(default_factory=dict)
    label_names: tuple[str, ...] | None = None  # what each label is called, where the data says (an image folder's classes)


@torch.no_grad()
def represent_split(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrialConfig, decode: bool, batch: int = 1024
) -> dict[str, torch.Tensor]:
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {}
    for first in range(0, x.shape[0], batch):
        with autocast(config, x.device):
            out = model.represent(scale(x[first : first + batch]), y[first : first + batch], decode)
        for key, value in out.items():
            parts.setdefault(key, []).append(value if key == "codes" else value.float())
    return {key: torch.cat(values) for key, values in parts.items()}


def grid_indices(labels: torch.Tensor, count: int) -> torch.Tensor:
    """The first test image of each class, then the second of each, ...: the same images for every model and
    seed, and more than one class even where the test set is sorted by class (an image folder is)."""
    by_class = [torch.nonzero(labels == c).flatten().cpu() for c in labels.unique()]
    picks: list[int] = []
    for rank in range(max(len(b) for b in by_class)):
        picks += [int(b[rank]) for b in by_class if rank < len(b)][: count - len(picks)]
        if len(picks) == count:
            break
    return torch.tensor(picks, dtype=torch.long)


def evaluate(model: nn.Module, data: Dataset, config: TrialConfig, settings: ProbeSettings = ProbeSettings()) -> Evaluation:
    timings = {}
    start = time.perf_counter()
    train = represent_split(model, data.train_x, data.train_y, config, decode=False)
    test = represent_split(model, data.test_x, data.test_y, config, decode=True)
    timings["encode"] = time.perf_counter() - start

    metrics: dict[str, float] = {}
    start = time.perf_counter()
    probe_metrics, predictions = probe_representations(train, test, data, config, settings)
    metrics.update(probe_metrics)
    timings["probes"] = time.perf_counter() - start

    start = time.perf_counter()
    originals = scale(data.test_x)
    for name, features in (("latent", test["latent"]), ("pixels", originals)):
        found = cluster_agreement(features, data.test_y, data.num_classes, config.seed)
        metrics.update({f"cluster/{name}/{key}": value for key, value in found.items()})
    timings["clustering"] = time.perf_counter() - start

    start = time.perf_counter()
    for key, value in reconstruction_metrics(originals, test["recon"]).items():
        metrics[f"recon/{key}"] = value
    timings["reconstruction"] = time.perf_counter() - start

    if "codes" in test:
        codes = test["codes"]
        used = torch.bincount(codes.reshape(-1), minlength=config.codebook_size) > 0
        metrics["codebook/perplexity"] = code_perplexity(codes, config.codebook_size).item()
        metrics["codebook/usage"] = used.float().mean().item()
        metrics["codebook/dead_codes"] = float((~used).sum().item())
        metrics.update(vq_rates(codes, config.codebook_size))
        metrics.update(on_train_split(vq_rates(train["codes"], config.codebook_size)))
    if "kl_nats" in test:
        metrics.update(vae_rates(test["kl_nats"], config.target_rate))
        metrics.update(on_train_split(vae_rates(train["kl_nats"], config.target_rate)))
    metrics.update({f"time/eval_{k}_s": v for k, v in timings.items()})

    grid = grid_indices(data.test_y, GRID_IMAGES).to(originals.device)
    generator = torch.Generator().manual_seed(config.seed)
    pick = torch.randperm(data.test_x.shape[0], generator=generator)[:TSNE_POINTS].to(data.test_x.device)
    return Evaluation(
        metrics=metrics,
        originals=originals[grid].cpu(),
        reconstructions=test["recon"][grid].clamp(0, 1).cpu(),
        latents=test["latent"][pick].cpu(),
        latent_labels=data.plot_labels()[pick].cpu(),
        predictions=predictions,
        label_names=data.card.class_names if data.card is not None and data.test_coarse is None else None,
    )


def probe_representations(
    train: dict[str, torch.Tensor], test: dict[str, torch.Tensor], data: Dataset, config: TrialConfig, settings: ProbeSettings
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Every probe on each encoded representation and on the raw pixels: metrics `probe/{rep}/{key}`, the same again
    under the protocol's own prefix (`probe_v4/{rep}/{key}`), and the per-image test predictions."""
    metrics: dict[str, float] = {}
    predictions = {"labels": compact(data.test_y, data.num_classes)}
    found = {}
    for name in ("latent", "codes"):
        if name in train:
            num_codes = config.codebook_size if name == "codes" else None
            found[name] = probe_all(train[name], data.train_y, test[name], data.test_y, data.num_classes, config.seed, settings, num_codes)
    found["pixels"] = pixel_probes(data, config.seed, settings)
    for name, probed in found.items():
        for prefix in ("probe/", versioned_prefix(settings.protocol)):
            metrics.update({f"{prefix}{name}/{key}": value for key, value in probed.metrics.items()})
        predictions.update({f"{name}/{probe}": compact(values, data.num_classes) for probe, values in probed.predictions.items()})
    return metrics, predictions
