"""The per-epoch probe: a cheap, train-split-only signal of label information and reconstruction, for searches.

The final probes (`benchmark.evaluation.probe`) need the whole train split and score on the test split: too
slow for every epoch, and a search that ranked trials on them would let the test split choose.
This one fits a linear probe on a fixed, seeded subsample of the train split (`FIT` images) and
scores it on `HELD` other train images, whose first `SSIM_IMAGES` also give the reconstruction SSIM
(decoding and scikit-image's SSIM cost more per image than encoding; over a 12-config grid on digits
it stayed within 0.005 of the test SSIM: perf/README.md, "Ranking agreement"). It never reads the test split,
so ASHA and Optuna may rank trials on it. Measured cost: perf/README.md ("The per-epoch probe").
"""

from __future__ import annotations

import time

import torch
from torch import nn

from benchmark.config import TrialConfig
from benchmark.data import Dataset
from benchmark.evaluation.evaluate import represent_split
from benchmark.evaluation.mlp_probe import train_classifier
from benchmark.evaluation.probe_inputs import accuracy, predict_scores, standardise
from benchmark.evaluation.probe_settings import ProbeSettings
from benchmark.evaluation.reconstruction import ssim_per_image
from benchmark.train import scale

FIT, HELD = 5_000, 2_000  # a dataset with fewer train images keeps this 5:2 ratio
SSIM_IMAGES = 500
PREFIX = "train_probe/"
LINEAR_ACC = f"{PREFIX}linear_acc"
SSIM = f"{PREFIX}ssim"
SECONDS = f"{PREFIX}seconds"
# What a failed trial reports, so that searchers and schedulers that maximise these rank it last.
WORST = {LINEAR_ACC: 0.0, SSIM: -1.0}


def subsample(n: int, seed: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded (fit, held) indices into the train split; the same for every epoch of a trial, and for every trial of a seed."""
    used = min(n, FIT + HELD)
    held = max(1, round(used * HELD / (FIT + HELD)))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:used].to(device)
    return order[held:], order[:held]


def is_due(config: TrialConfig, epoch: int) -> bool:
    """Every `train_probe_every` epochs and after the last one, so that a trial's final result carries it; never when 0."""
    every = config.train_probe_every
    return every > 0 and (epoch % every == 0 or epoch == config.epochs)


def train_probe(model: nn.Module, data: Dataset, config: TrialConfig) -> dict[str, float]:
    """Linear-probe accuracy and reconstruction SSIM on held-out train images, and the seconds it took.

    Reads `data.train_x` and `data.train_y` only. It seeds torch's global generator (the probe's
    initialisation) and leaves the model in eval mode; `train_epoch` reseeds and sets train mode
    at its start, so training computes the same with or without it.
    """
    start = time.perf_counter()
    fit, held = subsample(data.train_x.shape[0], config.seed, data.train_x.device)
    fit_x = represent_split(model, data.train_x[fit], data.train_y[fit], config, decode=False)["latent"]
    held_x = represent_split(model, data.train_x[held], data.train_y[held], config, decode=False)["latent"]
    shown = held[:SSIM_IMAGES]
    recon = represent_split(model, data.train_x[shown], data.train_y[shown], config, decode=True)["recon"]
    fit_x, held_x = standardise(fit_x.float(), held_x.float())
    probe = train_classifier(fit_x, data.train_y[fit], data.num_classes, None, config.seed, ProbeSettings())
    return {
        LINEAR_ACC: accuracy(predict_scores(probe.net, held_x), data.train_y[held]),
        SSIM: float(ssim_per_image(scale(data.train_x[shown]), recon.clamp(0, 1)).mean()),
        SECONDS: time.perf_counter() - start,
    }
