"""Probing classifiers: fitted on the train split, stopped early on a held-out part of it, scored on the test split.

Batched torch on the trial's device: scikit-learn's MLP takes minutes on 60,000 x 1,024
features here, this takes seconds. The MLP and linear probes hold out a seeded share of the
train split; when its accuracy stops improving they cut the learning rate, and after the
last cut the next plateau ends training (under an epoch cap); they keep their best epoch.
So every representation is probed to convergence (at a constant rate the held-out accuracy
wanders and stopping lands up to 0.7 points from a long schedule) and the test split is never
used to choose anything. Dense features are standardised with train statistics only for
those probes; kNN sees the features unstandardised (see `knn_predict`). Code indices are
probed as one-hot codes without materialising them: an EmbeddingBag over (position, code)
pairs is exactly a linear layer on the one-hot vector.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

MLP_HIDDEN = 256
from benchmark.result_keys import PROBE_PARAM_PREFIX as PARAM_PREFIX  # noqa: E402


@dataclass(frozen=True)
class ProbeSettings:
    """How every probe is trained; logged to each run's params so runs probed differently can be told apart."""

    max_epochs: int = 60
    # Epochs without a better held-out accuracy before the learning rate is multiplied by
    # lr_factor; the plateau after lr_cuts cuts ends training, and the best epoch is kept.
    # 0 turns all of it off: a fixed cosine schedule of max_epochs that keeps the last epoch.
    patience: int = 3
    lr_factor: float = 0.2
    lr_cuts: int = 2
    val_fraction: float = 0.1
    batch_size: int = 512
    lr: float = 2e-3
    weight_decay: float = 1e-4
    knn_k: int = 5
    # kNN compares each test point with this many train points (a seeded subsample):
    # the full 60,000 costs a 1-TFLOP distance matrix per representation on a CPU.
    knn_train_size: int = 10_000

    def to_params(self) -> dict[str, str]:
        return {f"{PARAM_PREFIX}{key}": str(value) for key, value in asdict(self).items()}


@dataclass
class FittedProbe:
    net: nn.Module
    best_epoch: int  # the epoch whose weights are kept (1-based)
    epochs_run: int


class CodeFeatures(nn.Module):
    """Linear map of one-hot code indices (N, P) with K codes, without the one-hot."""

    def __init__(self, positions: int, num_codes: int, out: int) -> None:
        super().__init__()
        self.num_codes = num_codes
        self.bag = nn.EmbeddingBag(positions * num_codes, out, mode="sum")
        nn.init.normal_(self.bag.weight, std=0.01)  # the default N(0, 1) summed over positions swamps the logits
        self.register_buffer("offsets", torch.arange(positions) * num_codes)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.bag(codes + self.offsets)


def standardise(train: torch.Tensor, test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)
    return (train - mean) / std, (test - mean) / std


def holdout_split(n: int, fraction: float, seed: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded (fit, held-out) indices of the train split; the held-out part picks the probe's epoch."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(device)
    held = max(1, int(round(n * fraction)))
    return order[held:], order[:held]


def _first_layer(train_x: torch.Tensor, out: int, num_codes: int | None) -> nn.Module:
    if num_codes is not None:
        return CodeFeatures(train_x.shape[1], num_codes, out)
    return nn.Linear(train_x.shape[1], out)


def train_classifier(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    num_classes: int,
    hidden: int | None,
    seed: int,
    settings: ProbeSettings,
    num_codes: int | None = None,
) -> FittedProbe:
    """A linear probe (hidden=None) or the paper's one-hidden-layer feed-forward probe, stopped early."""
    torch.manual_seed(seed)
    if hidden is None:
        net = _first_layer(train_x, num_classes, num_codes)
    else:
        net = nn.Sequential(_first_layer(train_x, hidden, num_codes), nn.ReLU(), nn.Linear(hidden, num_classes))
    net = net.to(train_x.device)
    fit, held = holdout_split(train_x.shape[0], settings.val_fraction, seed, train_x.device)
    # fused: one kernel per step instead of one per operation; the code-index probe's 2M-weight first layer
    # made the unfused step most of its time (9x slower on 1 CPU thread); results equal up to rounding.
    optimizer = torch.optim.Adam(net.parameters(), lr=settings.lr, weight_decay=settings.weight_decay, fused=True)
    fixed = settings.patience == 0
    if fixed:
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings.max_epochs)
    else:  # torch cuts after `patience` + 1 bad epochs; ours after `patience`
        schedule = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=settings.lr_factor, patience=settings.patience - 1, threshold=0.0, threshold_mode="abs"
        )
    held_x, held_y = train_x[held], train_y[held]  # gathered once, scored every epoch
    generator = torch.Generator().manual_seed(seed)
    best_acc, best_epoch, best_state, cuts, epoch = -1.0, 0, None, 0, 0
    while epoch < settings.max_epochs and cuts <= settings.lr_cuts:
        net.train()
        order = fit[torch.randperm(fit.numel(), generator=generator).to(train_x.device)]
        for first in range(0, order.numel(), settings.batch_size):
            idx = order[first : first + settings.batch_size]
            loss = F.cross_entropy(net(train_x[idx]), train_y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        epoch += 1
        held_acc = accuracy(predict_scores(net.eval(), held_x), held_y)
        if held_acc > best_acc or fixed:
            best_acc, best_epoch, best_state = held_acc, epoch, copy.deepcopy(net.state_dict())
        if fixed:
            schedule.step()
        else:
            lr = optimizer.param_groups[0]["lr"]
            schedule.step(held_acc)
            cuts += optimizer.param_groups[0]["lr"] < lr
    net.load_state_dict(best_state)
    return FittedProbe(net.eval(), best_epoch, epoch)


@torch.no_grad()
def predict_scores(net: nn.Module, x: torch.Tensor, batch: int = 4096) -> torch.Tensor:
    return torch.cat([net(x[i : i + batch]) for i in range(0, x.shape[0], batch)])


@torch.no_grad()
def knn_predict(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, k: int, num_classes: int) -> torch.Tensor:
    """Majority vote of the k nearest train points (Euclidean); ties go to the nearer neighbours.

    Give it unstandardised features: a VAE's inactive latent dimensions sit near the prior mean
    with tiny spread, and standardising them turns each into unit-variance noise that swamps the
    distances (67% instead of 92% on MNIST posterior means). Left as they are, they add almost nothing.
    """
    train_sq = train_x.pow(2).sum(1)
    votes = []
    for first in range(0, test_x.shape[0], 1024):
        chunk = test_x[first : first + 1024]
        dist = train_sq - 2 * chunk @ train_x.t()  # + |chunk|^2, constant per row
        nearest = dist.topk(k, dim=1, largest=False).indices
        # 1 + 2^-rank/1000: a vote is a vote, and among tied classes the one with the nearest neighbour wins.
        weights = (1 + 1e-3 * 2.0 ** -torch.arange(k, device=train_x.device, dtype=torch.float32)).expand(chunk.shape[0], k)
        counts = torch.zeros(chunk.shape[0], num_classes, device=train_x.device)
        votes.append(counts.scatter_add_(1, train_y[nearest], weights))
    return torch.cat(votes)


def accuracy(scores: torch.Tensor, labels: torch.Tensor, top: int = 1) -> float:
    best = scores.topk(top, dim=1).indices
    return (best == labels[:, None]).any(1).float().mean().item()


def probe_all(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    num_classes: int,
    seed: int,
    settings: ProbeSettings = ProbeSettings(),
    num_codes: int | None = None,
) -> dict[str, float]:
    """Accuracy of each probe, `mlp` (the paper's), `linear` and `knn` (dense features only),
    and the epoch each trained probe kept (`mlp_epochs`, `linear_epochs`)."""
    results: dict[str, float] = {}
    scores = {}
    if num_codes is None:
        generator = torch.Generator().manual_seed(seed)
        subset = torch.randperm(train_x.shape[0], generator=generator)[: settings.knn_train_size].to(train_x.device)
        scores["knn"] = knn_predict(train_x[subset].float(), train_y[subset], test_x.float(), settings.knn_k, num_classes)
        train_x, test_x = standardise(train_x.float(), test_x.float())
    for name, hidden in (("mlp", MLP_HIDDEN), ("linear", None)):
        fitted = train_classifier(train_x, train_y, num_classes, hidden, seed, settings, num_codes)
        scores[name] = predict_scores(fitted.net, test_x)
        results[f"{name}_epochs"] = float(fitted.best_epoch)
    for name, score in scores.items():
        results[f"{name}_acc"] = accuracy(score, test_y)
        if num_classes >= 100:
            results[f"{name}_top5"] = accuracy(score, test_y, 5)
    return results
