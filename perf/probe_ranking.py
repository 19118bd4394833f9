"""Does the per-epoch train-split probe rank configs as the final test-split MLP probe does? Spearman over a grid.

    python -m perf.probe_ranking                  # 12 configs on digits, 10 epochs, 1 thread: ~5 min on a quiet 2-core machine

Trains each config of a small grid (VAE along the KL weight and D, VQ-VAE along K, D and beta)
with `run_trial`, then compares, over the configs, the last epoch's `train_probe/linear_acc`
(held-out train images; what ASHA and the `pareto` space rank on) with the final
`probe/latent/mlp_acc` (test split; what the report compares), and `train_probe/ssim` with the
test `recon/ssim`. A high Spearman is what justifies stopping trials early on the cheap metric.
"""
from __future__ import annotations

import sys

import torch
from scipy.stats import spearmanr

from benchmark.config import TrialConfig
from benchmark.train_probe import LINEAR_ACC, SSIM
from benchmark.trial import run_trial
from perf.record import Options, write_record

PAIRS = {"probe": (LINEAR_ACC, "probe/latent/mlp_acc"), "ssim": (SSIM, "recon/ssim")}
VAE = [{"kl_weight": kl} for kl in (1e-4, 1e-3, 1e-2, 1e-1, 1.0)] + [{"code_dim": 16}]
VQ = [{"num_codes": k} for k in (16, 64, 256, 1024)] + [{"num_codes": 64, "code_dim": 16}, {"num_codes": 64, "beta": 1.0}]


def grid(dataset: str, epochs: int, size: int) -> list[TrialConfig]:
    """The first `size` configs of each family, around D=64, KL weight 0.01, beta 0.25."""
    return ([TrialConfig.from_dict({"model": "vae", "dataset": dataset, "epochs": epochs, **c}) for c in VAE[:size]]
            + [TrialConfig.from_dict({"model": "vqvae", "dataset": dataset, "epochs": epochs, **c}) for c in VQ[:size]])


def main(argv: list[str] | None = None) -> int:
    options = Options("probe_ranking", __doc__)
    options.sized("--epochs", 10, 1, "epochs per config")
    options.sized("--size", 6, 2, "configs per model family")
    options.add_argument("--dataset", default="digits", help="dataset (default: digits, embedded)")
    options.add_argument("--threads", type=int, default=1, help="torch threads (default: 1, what a sweep trial gets)")
    args = options.parse(argv)
    torch.set_num_threads(args.threads)
    rows = []
    print(f"{'config':36} {'train probe':>11} {'test MLP':>9} {'train SSIM':>10} {'test SSIM':>9}")
    for config in grid(args.dataset, args.epochs, args.size):
        metrics = run_trial(config).metrics
        rows.append(metrics)
        print(f"{config.name:36} {metrics[LINEAR_ACC]:11.4f} {metrics['probe/latent/mlp_acc']:9.4f} {metrics[SSIM]:10.4f} {metrics['recon/ssim']:9.4f}")
    figures = {"configs": float(len(rows))}
    for name, (cheap, final) in PAIRS.items():
        rho, p = spearmanr([r[cheap] for r in rows], [r[final] for r in rows])
        figures.update({f"{name}_spearman": rho, f"{name}_p": p})
        print(f"Spearman, {cheap} (last epoch) against {final}: {rho:.3f} (p = {p:.2g}, {len(rows)} configs)")
    write_record(args, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
