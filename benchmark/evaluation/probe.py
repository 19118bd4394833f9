"""Probing classifiers: every choice made on a seeded held-out part of the train split, scored once on the test split.

Batched torch on the trial's device (scikit-learn's MLP takes minutes on 60,000 x 1,024 features here).

- **linear** (since protocol 3): multinomial logistic regression, a convex problem, solved by full-batch
  L-BFGS (float32) until the largest gradient entry is below `lbfgs_tol` (x l2 where l2 > 1); a fit that ends without
  reaching it (the iteration cap, or a float32 stall) is flagged (`linear_capped`). Its L2 strength
  comes from a log grid (strongest first, each fit warm-started from the previous solution, the path
  cut two steps past its best), refined half a decade around the best, each scored on the held-out
  10%; then refit on the whole train split from the chosen solution and scored once on the test split.
  So "converged" means the optimum of a stated objective, which no schedule can argue with (SimCLR,
  CLIP: the same protocol). The same probe on 100 / 1,000 / 10,000 labelled, class-balanced, seeded
  train images (`balanced_subsets`: the same images for every model of a seed) is the label-efficiency
  endpoint.
- **mlp** (the paper's, one hidden layer of 256): Adam on mini-batches over a fixed budget, `mlp_epochs` of a
  cosine schedule, the last epoch kept (since protocol 5: a stopping rule on held-out plateaus stopped code-index
  probes 0.6-1.0 points short, perf/README.md). Its learning rate and weight decay come from a grid (`mlp_lrs` x
  `mlp_weight_decays`) by held-out accuracy, a grid of one member validated on saved models
  (`perf.probe_convergence --grid`).
- **knn**: on the unstandardised features (see `knn_predict`).

Dense features are standardised with train statistics only. Code indices are probed as one-hot codes
without materialising them (not standardised: that would make them dense): the MLP's first layer is an
EmbeddingBag over (position, code) pairs, exactly a linear layer on the one-hot vector; the linear probe
multiplies by a sparse CSR one-hot matrix. The linear probe's cost on a CPU (MNIST, 1,024 features) is
its L-BFGS iterations: it fits dense features in their eigenbasis, preconditioned (`Basis`), and keeps
float32 denormals out of its backward pass (`fit_logistic`).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmark.result_keys import PREDICTIONS_FILE, versioned_predictions_file
from benchmark.result_keys import PROBE_PARAM_PREFIX as PARAM_PREFIX

MLP_HIDDEN = 256
# The probe protocol: bump it whenever a change moves the numbers. Runs log it as param `probe.protocol`
# (absent: the protocols before it, with an Adam-trained linear probe); `benchmark.reprobe` logs a later
# protocol's metrics beside a run's own under `versioned_prefix(protocol)`.
PROTOCOL = "5"  # 4: MLP lr 1e-3, stopped on held-out plateaus; 3: a 2 x 2 MLP grid per trial, every (position, code) pair weighted
# Protocol 3's MLP grid (learning rates, weight decays): `perf.probe_convergence --grid` checks the one member against it.
REFERENCE_MLP_GRID = ((1e-3, 3e-3), (1e-4, 1e-3))


@dataclass(frozen=True)
class ProbeSettings:
    """How every probe is trained; logged to each run's params so runs probed differently can be told apart."""

    protocol: str = PROTOCOL
    # The linear probe. L2 strengths of the mean cross-entropy + l2/2 |W|^2 (bias free), strongest first;
    # scikit-learn's C is 1 / (l2 * n).
    l2_grid: tuple[float, ...] = tuple(10.0**e for e in range(2, -7, -1))
    # Stop when max |gradient| of that objective is below lbfgs_tol * max(1, l2): at l2 >= 1 that bounds the distance
    # to the optimum (|W - W*| <= |g| / l2) by lbfgs_tol, where float32 cannot resolve a smaller gradient.
    lbfgs_tol: float = 1e-4
    # One tolerance for the path and the refit: a looser one on the path stops a warm-started weaker strength at
    # once (its start already meets it: measured, MNIST pixels at 1e-3), so weak strengths would never be tried.
    lbfgs_max_iter: int = 1000
    label_budgets: tuple[int, ...] = (100, 1000, 10_000)  # label-efficiency train subsets (linear probe)
    # The MLP probe: a grid of Adam learning rates and weight decays, the best held-out accuracy wins. One member
    # since protocol 4: `perf.probe_convergence --grid` measures this member against REFERENCE_MLP_GRID on saved
    # models (perf/README.md), and a grid per trial cost 4x the MLP fits for held-out differences within their noise;
    # lr 3e-3 since protocol 5, the grid's held-out pick on 5 of 7 representations there.
    mlp_lrs: tuple[float, ...] = (3e-3,)
    mlp_weight_decays: tuple[float, ...] = (1e-4,)
    mlp_epochs: int = 60  # its fixed budget: a cosine schedule of this many epochs, the last one kept
    # Seeded restarts of the chosen member whose test accuracies are averaged (`mlp_acc`), and whose predictions
    # are kept one row each; restart 0 is the grid's own fit.
    mlp_restarts: int = 1
    # `train_classifier`'s own schedule, for the probes that are stopped early (the per-epoch probe):
    # at most max_epochs; after `patience` epochs without a better held-out accuracy the learning rate is
    # multiplied by lr_factor; the plateau after lr_cuts cuts ends training, and the best epoch is kept.
    # patience 0 turns all of it off: a fixed cosine schedule of max_epochs that keeps the last epoch.
    max_epochs: int = 60
    patience: int = 3
    lr_factor: float = 0.2
    lr_cuts: int = 2
    val_fraction: float = 0.1
    batch_size: int = 512
    lr: float = 2e-3  # Adam's, where no grid chooses it (`train_classifier` alone: the per-epoch probe)
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
    seen[_inputs(codes, num_codes).reshape(-1)] = True
    return seen


def standardise(train: torch.Tensor, test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)
    return (train - mean) / std, (test - mean) / std


def holdout_split(n: int, fraction: float, seed: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded (fit, held-out) indices of the train split; the held-out part picks the probe's epoch."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(device)
    held = max(1, int(round(n * fraction)))
    return order[held:], order[:held]


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


# ---------------------------------------------------------------- the linear probe: a convex problem


@dataclass
class LinearFit:
    """One solution of the L2-regularised multinomial logistic regression."""

    weight: torch.Tensor  # (features, classes); for code indices, features = positions x codes
    bias: torch.Tensor  # (classes,)
    l2: float
    iterations: int  # L-BFGS iterations of this fit
    grad_norm: float  # max |gradient| of the objective at the returned solution
    capped: bool  # ended without reaching the tolerance: the iteration cap, or a float32 stall


def _inputs(x: torch.Tensor, num_codes: int | None) -> torch.Tensor:
    """Dense features as floats; code indices (N, P) shifted to rows of a (P * K)-row weight."""
    if num_codes is None:
        return x.float()
    return x.long() + torch.arange(x.shape[1], device=x.device) * num_codes


def _logits(inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, num_codes: int | None) -> torch.Tensor:
    if num_codes is None:
        return torch.addmm(bias, inputs, weight)
    return F.embedding_bag(inputs, weight, mode="sum") + bias


@dataclass
class Basis:
    """The eigenbasis of the standardised features' second moment X'X / n, and the features in it (Z = X U).

    Fitting in it is the same problem (W = U W', |W| = |W'|, XW = ZW'), and scaling each direction by
    (s + l2)^-1/2 preconditions L-BFGS: VQ latents' correlated features otherwise cost it hundreds of iterations."""

    u: torch.Tensor  # (d, r), orthonormal columns; r = min(n, d)
    s: torch.Tensor  # (r,), eigenvalues >= 0
    z: torch.Tensor  # (n, r)

    def rows(self, index: torch.Tensor) -> "Basis":
        return Basis(self.u, self.s, self.z[index])


def feature_basis(x: torch.Tensor) -> Basis:
    """With fewer rows than features, the basis of the rows' span (thin SVD): the optimum lies in it, as every
    gradient of the data term does, and the penalty's gradient there too."""
    x = x.float()
    n, d = x.shape
    if n >= d:
        s, u = torch.linalg.eigh((x.t() @ x).double() / n)
    else:
        _, sv, vh = torch.linalg.svd(x.double(), full_matrices=False)
        s, u = sv.pow(2) / n, vh.t()
    u = u.float()
    return Basis(u, s.clamp_min(0).float(), x @ u)


class _OneHotProduct(torch.autograd.Function):
    """X W for a sparse one-hot X (CSR), with its transpose kept for the backward pass: EmbeddingBag's backward
    is 14x slower on a CPU (MNIST code indices, 54,000 x 16 of 512)."""

    @staticmethod
    def forward(ctx, weight, x, x_t):
        ctx.x_t = x_t
        return x @ weight

    @staticmethod
    def backward(ctx, grad):
        return ctx.x_t @ grad, None, None


def _one_hot_csr(codes: torch.Tensor, num_codes: int) -> tuple[torch.Tensor, torch.Tensor]:
    n, positions = codes.shape
    columns = _inputs(codes, num_codes).reshape(-1)
    rows = torch.arange(n, device=codes.device).repeat_interleave(positions)
    ones = torch.ones(n * positions, device=codes.device)
    size = (n, positions * num_codes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
        x = torch.sparse_coo_tensor(torch.stack([rows, columns]), ones, size).coalesce().to_sparse_csr()
        x_t = torch.sparse_coo_tensor(torch.stack([columns, rows]), ones, size[::-1]).coalesce().to_sparse_csr()
    return x, x_t


def fit_logistic(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    l2: float,
    settings: ProbeSettings,
    num_codes: int | None = None,
    init: LinearFit | None = None,
    basis: Basis | None = None,
) -> LinearFit:
    """argmin of mean cross-entropy + l2/2 |W|^2 by full-batch L-BFGS (strong Wolfe line search), from zero or `init`.

    Dense features are fitted in their eigenbasis (`basis`, computed here if not given), preconditioned; code
    indices as a sparse one-hot matrix. Every 10 iterations it checks max |gradient| with respect to W and b, in
    the features' own basis, and stops at the tolerance (`tolerance`), at the iteration cap, or where L-BFGS makes
    no step (float32 resolves no better point); the last two are `capped`."""
    if num_codes is None:
        basis = basis or feature_basis(x)
        design = basis.z
        scale = (basis.s + l2).rsqrt()[:, None]  # W' = scale * V
        to_weight = lambda v: basis.u @ (scale * v)  # noqa: E731
        start = None if init is None else (basis.u.t() @ init.weight) / scale
        product = lambda v: design @ (scale * v)  # noqa: E731
        penalty = lambda v: (scale.double() * v.double()).pow(2).sum()  # noqa: E731
        weight_grad = lambda g: basis.u @ (g / scale)  # d/dW = U d/dW' = U (d/dV / scale)  # noqa: E731
        features = basis.u.shape[1]
    else:
        one_hot, one_hot_t = _one_hot_csr(x, num_codes)
        to_weight = lambda v: v  # noqa: E731
        start = None if init is None else init.weight
        product = lambda v: _OneHotProduct.apply(v, one_hot, one_hot_t)  # noqa: E731
        penalty = lambda v: v.double().pow(2).sum()  # noqa: E731
        weight_grad = lambda g: g  # noqa: E731
        features = x.shape[1] * num_codes
    v = torch.zeros(features, num_classes, device=x.device) if start is None else start.detach().clone()
    bias = torch.zeros(num_classes, device=x.device) if init is None else init.bias.detach().clone()
    v.requires_grad_(True)
    bias.requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [v, bias], lr=1.0, max_iter=10, tolerance_grad=0.0, tolerance_change=0.0, history_size=20, line_search_fn="strong_wolfe"
    )

    def objective() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=False)
        # float32 arithmetic, float64 sums: the line search compares objective values whose float32 rounding
        # (1e-7 of the loss) would hide the last decade of the gradient; summed in float64 the per-image errors average out.
        # Shifted by the row maximum (cross-entropy does not change) and floored at -80: a confident fit's tiny
        # probabilities would otherwise be float32 denormals, which made the backward matmul 15-30x slower on this CPU;
        # what the floor drops is below e^-80 of the loss.
        logits = product(v) + bias
        logits = (logits - logits.detach().max(1, keepdim=True).values).clamp_min(-80.0)
        loss = F.cross_entropy(logits, y, reduction="none").double().mean() + 0.5 * l2 * penalty(v)
        loss.backward()
        return loss

    def grad_norm() -> float:
        objective()
        return max(weight_grad(v.grad).abs().max().item(), bias.grad.abs().max().item())

    limit, iterations = tolerance(l2, settings), 0
    norm = grad_norm()
    while norm > limit and iterations < settings.lbfgs_max_iter:
        optimizer.param_groups[0].update(max_iter=min(10, settings.lbfgs_max_iter - iterations))
        optimizer.param_groups[0].update(max_eval=2 * optimizer.param_groups[0]["max_iter"])
        before = int(optimizer.state[v].get("n_iter", 0))
        optimizer.step(objective)
        done = int(optimizer.state[v]["n_iter"]) - before
        iterations += done
        norm = grad_norm()
        if done == 0 or not optimizer.state[v]["d"].abs().max().item() * abs(optimizer.state[v]["t"]) > 0:
            break  # no step: float32 resolves no better point
    with torch.no_grad():
        weight = to_weight(v.detach())
    return LinearFit(weight, bias.detach(), l2, iterations, norm, not norm <= limit)


def tolerance(l2: float, settings: ProbeSettings) -> float:
    """The gradient tolerance at this strength (see `ProbeSettings.lbfgs_tol`)."""
    return settings.lbfgs_tol * max(1.0, l2)


@torch.no_grad()
def linear_scores(fit: LinearFit, x: torch.Tensor, num_codes: int | None = None, batch: int = 8192) -> torch.Tensor:
    inputs = _inputs(x, num_codes)
    return torch.cat([_logits(inputs[i : i + batch], fit.weight, fit.bias, num_codes) for i in range(0, x.shape[0], batch)])


@dataclass
class LinearProbe:
    fit: LinearFit  # refit on the whole train split (or subset) at the chosen strength
    held_acc: dict[float, float]  # the path: held-out accuracy of each strength tried
    path_capped: int  # fits on the path that ended without reaching the tolerance


def choose_l2(held_acc: dict[float, float]) -> float:
    """The best held-out accuracy; a tie goes to the stronger regularisation."""
    return max(held_acc, key=lambda l2: (held_acc[l2], l2))


def linear_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    num_classes: int,
    seed: int,
    settings: ProbeSettings,
    num_codes: int | None = None,
) -> LinearProbe:
    """L2 from the grid on the seeded held-out share of these train rows, refit on all of them. Never sees a test split."""
    fit_rows, held_rows = holdout_split(train_x.shape[0], settings.val_fraction, seed, train_x.device)
    fit_x, fit_y, held_x, held_y = train_x[fit_rows], train_y[fit_rows], train_x[held_rows], train_y[held_rows]
    held_acc: dict[float, float] = {}
    fits: dict[float, LinearFit] = {}
    # one eigenbasis (of all these rows' features: no labels, and it changes the path to the optimum, not the optimum)
    basis = feature_basis(train_x) if num_codes is None else None
    fit_basis = basis.rows(fit_rows) if basis is not None else None

    def tried(l2: float, init: LinearFit | None) -> LinearFit:
        fits[l2] = fit_logistic(fit_x, fit_y, num_classes, l2, settings, num_codes, init, fit_basis)
        held_acc[l2] = accuracy(linear_scores(fits[l2], held_x, num_codes), held_y)
        return fits[l2]

    previous, worse = None, 0
    for l2 in sorted(settings.l2_grid, reverse=True):  # strongest first: each solution starts the next, weaker one
        best_before = max(held_acc.values(), default=-1.0)
        previous = tried(l2, previous)
        worse = worse + 1 if held_acc[l2] < best_before else 0
        if worse == 2:  # two steps past the best: weaker strengths only cost more iterations
            break
    coarse = choose_l2(held_acc)
    for l2 in (coarse * 10**0.5, coarse * 10**-0.5):  # half a decade either side, from the best's solution
        tried(l2, fits[coarse])
    chosen = choose_l2(held_acc)
    final = fit_logistic(train_x, train_y, num_classes, chosen, settings, num_codes, fits[chosen], basis)
    return LinearProbe(final, held_acc, sum(f.capped for f in fits.values()))


def balanced_subsets(labels: torch.Tensor, num_classes: int, budgets: tuple[int, ...], seed: int) -> dict[int, torch.Tensor]:
    """Seeded, class-balanced, nested train subsets, one per budget it can fill: {n: sorted indices}.

    They depend on the train labels and the seed only, so every model of a seed is probed on the same
    images. n // C images of each class (the n % C left over: one more from each of the first classes in a
    seeded order of classes), each class's the first in a seeded order of the train split; a budget that
    some class cannot fill, or the whole split, is left out.
    """
    labels = labels.cpu()
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(labels.numel(), generator=generator)
    class_order = torch.randperm(num_classes, generator=generator)
    rank = torch.empty_like(order)  # each image's place among its class in `order`
    counts = torch.bincount(labels, minlength=num_classes)
    for c in range(num_classes):
        members = order[labels[order] == c]
        rank[members] = torch.arange(members.numel())
    subsets = {}
    for n in budgets:
        quota = torch.full((num_classes,), n // num_classes)
        quota[class_order[: n % num_classes]] += 1
        if n >= labels.numel() or bool((quota > counts).any()):
            continue
        subsets[n] = (rank < quota[labels]).nonzero()[:, 0]
    return subsets


# ---------------------------------------------------------------- the MLP probe: a validated grid


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


# ---------------------------------------------------------------- all probes of one representation


@dataclass(eq=False)
class Probed:
    metrics: dict[str, float]  # `mlp_acc`, `linear_l2`, ...: see `probe_all`
    predictions: dict[str, torch.Tensor]  # probe name -> predicted class of each test image, in test order (R, N for R MLP restarts)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Probed)
            and self.metrics == other.metrics
            and self.predictions.keys() == other.predictions.keys()
            and all(torch.equal(v, other.predictions[k]) for k, v in self.predictions.items())
        )


def probe_all(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    num_classes: int,
    seed: int,
    settings: ProbeSettings = ProbeSettings(),
    num_codes: int | None = None,
) -> Probed:
    """Every probe of one representation: test accuracy (`{probe}_acc`, and `_top5` for 100 classes) and per-image
    predictions of `mlp`, `linear`, `knn` (dense features only) and `linear_n{n}` (label efficiency), with what each chose:
    `mlp_epochs`, `mlp_lr`, `mlp_weight_decay` (and `mlp_restart_spread`, max - min accuracy, where restarts are
    averaged); `linear_l2`, `linear_iters`, `linear_grad_norm`, `linear_capped`
    (1: the final fit ended without reaching the tolerance), `linear_path_capped` (how many fits on the L2 path did);
    `linear_n{n}_l2`, `linear_n{n}_capped`."""
    results: dict[str, float] = {}
    scores = {}
    if num_codes is None:
        generator = torch.Generator().manual_seed(seed)
        subset = torch.randperm(train_x.shape[0], generator=generator)[: settings.knn_train_size].to(train_x.device)
        scores["knn"] = knn_predict(train_x[subset].float(), train_y[subset], test_x.float(), settings.knn_k, num_classes)
        train_x, test_x = standardise(train_x.float(), test_x.float())
    if settings.mlp_lrs and settings.mlp_weight_decays:
        fitted, lr, weight_decay = mlp_probe(train_x, train_y, num_classes, seed, settings, num_codes)
        member = mlp_member(settings, lr, weight_decay)
        restarts = [fitted.net] + [
            train_classifier(train_x, train_y, num_classes, MLP_HIDDEN, restart_seed(seed, r), member, num_codes).net
            for r in range(1, settings.mlp_restarts)
        ]
        scores["mlp"] = [predict_scores(net, test_x) for net in restarts]
        results.update(mlp_epochs=float(fitted.best_epoch), mlp_lr=lr, mlp_weight_decay=weight_decay)
    linear = linear_probe(train_x, train_y, num_classes, seed, settings, num_codes)
    scores["linear"] = linear_scores(linear.fit, test_x, num_codes)
    results.update(
        linear_l2=linear.fit.l2,
        linear_iters=float(linear.fit.iterations),
        linear_grad_norm=linear.fit.grad_norm,
        linear_capped=float(linear.fit.capped),
        linear_path_capped=float(linear.path_capped),
    )
    for n, rows in balanced_subsets(train_y, num_classes, settings.label_budgets, seed).items():
        rows = rows.to(train_x.device)
        few = linear_probe(train_x[rows], train_y[rows], num_classes, seed, settings, num_codes)
        scores[f"linear_n{n}"] = linear_scores(few.fit, test_x, num_codes)
        results.update({f"linear_n{n}_l2": few.fit.l2, f"linear_n{n}_capped": float(few.fit.capped or few.path_capped > 0)})
    runs = {name: score if isinstance(score, list) else [score] for name, score in scores.items()}
    for name, restarts in runs.items():  # a probe of several seeded restarts scores their mean accuracy
        results[f"{name}_acc"] = sum(accuracy(score, test_y) for score in restarts) / len(restarts)
        if num_classes >= 100:
            results[f"{name}_top5"] = sum(accuracy(score, test_y, 5) for score in restarts) / len(restarts)
    if settings.mlp_restarts > 1 and "mlp" in runs:
        accs = [accuracy(score, test_y) for score in runs["mlp"]]
        results["mlp_restart_spread"] = max(accs) - min(accs)
    predictions = {name: _predicted(restarts) for name, restarts in runs.items()}
    return Probed(results, predictions)


def _predicted(restarts: list[torch.Tensor]) -> torch.Tensor:
    """Each test image's predicted class, (N,); of several restarts, one row each, (R, N)."""
    classes = torch.stack([score.argmax(1).cpu() for score in restarts])
    return classes[0] if len(restarts) == 1 else classes


# ---------------------------------------------------------------- per-image predictions, as a run's artifact


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
