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
its L-BFGS iterations: it fits dense features in their eigenbasis, preconditioned (`linear_probe.Basis`), and keeps
float32 denormals out of its backward pass (`linear_probe.fit_logistic`).

The pieces: `probe_settings` (the protocol), `probe_inputs`, `linear_probe`, `mlp_probe`, `probe_predictions`; this
module runs them all on one representation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from benchmark.evaluation.linear_probe import balanced_subsets, linear_probe, linear_scores
from benchmark.evaluation.mlp_probe import mlp_member, mlp_probe, restart_seed, train_classifier
from benchmark.evaluation.probe_inputs import accuracy, predict_scores, standardise
from benchmark.evaluation.probe_settings import MLP_HIDDEN, ProbeSettings


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
