"""The linear probe as a convex problem: L2-regularised multinomial logistic regression by full-batch L-BFGS, its
strength chosen on the held-out split; and the label-efficiency subsets it is also fitted on."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from benchmark.evaluation.probe_inputs import accuracy, code_rows, holdout_split
from benchmark.evaluation.probe_settings import ProbeSettings


@dataclass
class LinearFit:
    """One solution of the L2-regularised multinomial logistic regression."""

    weight: torch.Tensor  # (features, classes); for code indices, features = positions x codes
    bias: torch.Tensor  # (classes,)
    l2: float
    iterations: int  # L-BFGS iterations of this fit
    grad_norm: float  # max |gradient| of the objective at the returned solution
    capped: bool  # ended without reaching the tolerance: the iteration cap, or a float32 stall


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
    columns = code_rows(codes, num_codes).reshape(-1)
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
    inputs = code_rows(x, num_codes)
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
