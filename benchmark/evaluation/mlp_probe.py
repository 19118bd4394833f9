"""The paper's MLP probe (one hidden layer of 256) on a fixed, validated budget; `train_classifier` also trains the
early-stopped per-epoch probe."""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.evaluation.probe_inputs import accuracy, code_rows, holdout_split, predict_scores
from benchmark.evaluation.probe_settings import MLP_HIDDEN, ProbeSettings


@dataclass
class FittedProbe:
    net: nn.Module
    best_epoch: int  # the epoch whose weights are kept (1-based)
    epochs_run: int
    held_acc: float = math.nan  # held-out accuracy of the kept epoch


class CodeFeatures(nn.Module):
    """Linear map of one-hot code indices (N, P) with K codes, without the one-hot.

    Only the (position, code) pairs in `seen` (those the probe's fit rows hold) get a weight row; any other pair
    adds a zero row. A pair no fit row holds gets no gradient but its weight decay, so its optimum is zero anyway,
    and leaving its row out keeps Adam off it: a plain VQ-VAE uses a few dozen of its K codes, and the unused rows
    decayed into float32 denormals that slowed every step (measured: 1.2 s an epoch at epoch 8, 3.9 s at 24)."""

    def __init__(self, positions: int, num_codes: int, out: int, seen: torch.Tensor | None = None) -> None:
        super().__init__()
        seen = torch.ones(positions * num_codes, dtype=torch.bool) if seen is None else seen.cpu()
        rows = int(seen.sum())
        self.bag = nn.EmbeddingBag(rows + 1, out, mode="sum", padding_idx=rows)
        with torch.no_grad():  # the default N(0, 1) summed over positions swamps the logits
            self.bag.weight[:rows].normal_(std=0.01)
        row = torch.full((positions * num_codes,), rows, dtype=torch.long)
        row[seen] = torch.arange(rows)
        self.register_buffer("row", row)  # (position, code) -> its weight row; unseen pairs -> the zero row
        self.register_buffer("offsets", torch.arange(positions) * num_codes)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.bag(self.row[codes + self.offsets])


def seen_pairs(codes: torch.Tensor, num_codes: int) -> torch.Tensor:
    """Which (position, code) pairs occur in these rows: a bool mask over positions x codes."""
    seen = torch.zeros(codes.shape[1] * num_codes, dtype=torch.bool, device=codes.device)
    seen[code_rows(codes, num_codes).reshape(-1)] = True
    return seen


def _first_layer(train_x: torch.Tensor, out: int, num_codes: int | None) -> nn.Module:
    """A linear layer on dense features; on code indices, one over the pairs these (fit) rows hold."""
    if num_codes is not None:
        return CodeFeatures(train_x.shape[1], num_codes, out, seen_pairs(train_x, num_codes))
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
    fit, held = holdout_split(train_x.shape[0], settings.val_fraction, seed, train_x.device)
    if hidden is None:
        net = _first_layer(train_x[fit], num_classes, num_codes)
    else:
        net = nn.Sequential(_first_layer(train_x[fit], hidden, num_codes), nn.ReLU(), nn.Linear(hidden, num_classes))
    net = net.to(train_x.device)
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
    held_x, held_y = train_x[held], train_y[held]  # gathered once
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
        if fixed:  # the last epoch is kept whatever the held-out split says: scored once, at the end
            schedule.step()
            continue
        held_acc = accuracy(predict_scores(net.eval(), held_x), held_y)
        if held_acc > best_acc:
            best_acc, best_epoch, best_state = held_acc, epoch, copy.deepcopy(net.state_dict())
        lr = optimizer.param_groups[0]["lr"]
        schedule.step(held_acc)
        cuts += optimizer.param_groups[0]["lr"] < lr
    if fixed:
        return FittedProbe(net.eval(), epoch, epoch, accuracy(predict_scores(net.eval(), held_x), held_y))
    net.load_state_dict(best_state)
    return FittedProbe(net.eval(), best_epoch, epoch, best_acc)


def restart_seed(seed: int, restart: int) -> int:
    """The seed of an MLP's `restart`-th seeded restart (0: the probe itself), in trials and in `perf.probe_convergence`."""
    return seed + 1000 * restart


def mlp_member(settings: ProbeSettings, lr: float, weight_decay: float) -> ProbeSettings:
    """What `train_classifier` trains one MLP grid member with: its lr and weight decay, the fixed budget `mlp_epochs`."""
    return dataclasses.replace(settings, lr=lr, weight_decay=weight_decay, max_epochs=settings.mlp_epochs, patience=0)


def mlp_probe(
    train_x: torch.Tensor, train_y: torch.Tensor, num_classes: int, seed: int, settings: ProbeSettings, num_codes: int | None = None
) -> tuple[FittedProbe, float, float]:
    """The grid member with the best held-out accuracy (a tie: the first in the declared order), its lr and weight decay."""
    best = None
    for lr in settings.mlp_lrs:
        for weight_decay in settings.mlp_weight_decays:
            member = mlp_member(settings, lr, weight_decay)
            fitted = train_classifier(train_x, train_y, num_classes, MLP_HIDDEN, seed, member, num_codes)
            if best is None or fitted.held_acc > best[0].held_acc:
                best = (fitted, lr, weight_decay)
    return best
