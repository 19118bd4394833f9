"""What every probe shares: the seeded held-out split, standardisation, scoring, and code indices as weight rows."""

from __future__ import annotations

import torch
from torch import nn


def standardise(train: torch.Tensor, test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)
    return (train - mean) / std, (test - mean) / std


def holdout_split(n: int, fraction: float, seed: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded (fit, held-out) indices of the train split; the held-out part picks the probe's epoch."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(device)
    held = max(1, int(round(n * fraction)))
    return order[held:], order[:held]


@torch.no_grad()
def predict_scores(net: nn.Module, x: torch.Tensor, batch: int = 4096) -> torch.Tensor:
    return torch.cat([net(x[i : i + batch]) for i in range(0, x.shape[0], batch)])


def accuracy(scores: torch.Tensor, labels: torch.Tensor, top: int = 1) -> float:
    best = scores.topk(top, dim=1).indices
    return (best == labels[:, None]).any(1).float().mean().item()


def code_rows(x: torch.Tensor, num_codes: int | None) -> torch.Tensor:
    """Dense features as floats; code indices (N, P) shifted to rows of a (P * K)-row weight."""
    if num_codes is None:
        return x.float()
    return x.long() + torch.arange(x.shape[1], device=x.device) * num_codes
