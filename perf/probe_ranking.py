"""Does the per-epoch train-split probe rank configs as the final test-split MLP probe does? Spearman over a grid.

    python -m perf.probe_ranking                  # 12 configs on digits, 10 epochs, 1 thread: ~5 min on a quiet 2-core machine

Trains each config of a small grid (VAE along the KL weight and D, VQ-VAE along K, D and beta)
with `run_trial`, then compares, over the configs, the last epoch's `train_probe/linear_acc`
(held-out train images; what ASHA and the `pareto` space rank on) with the final
`probe/latent/mlp_acc` (test split; what the report compares) and, to tell the split from the
probe apart, with the final test `probe/latent/linear_acc`; and `train_probe/ssim` with the test
`recon/ssim`. Over all configs and within each family: a search's study holds one family, so the
within-family figure is the one that justifies stopping trials early on the cheap metric.
"""

from __future__ import annotations

import sys

import torch
from scipy.stats import spearmanr

from benchmark.config import TrialConfig
from benchmark.evaluation.train_probe import LINEAR_ACC, SSIM
from benchmark.trial import run_trial
from perf.record import Options, write_record

PAIRS = {"probe": (LINEAR_ACC, "probe/latent/mlp_acc"), "linear": (LINEAR_ACC, "probe/latent/linear_acc"), "ssim": (SSIM, "recon/ssim")}
VAE = [{"kl_weight": kl} for kl in (1e-4, 1e-3, 1e-2, 1e-1, 1.0)] + [{"code_dim": 16}]
VQ = [{"num_codes": k} for k in (16, 64, 256, 1024)] + [{"num_codes": 64, "code_dim": 16}, {"num_codes": 64, "beta": 1.0}]


def grid(dataset: str, epochs: int, size: int) -> list[TrialConfig]:
    """The first `size` configs of each family, around the config's defaults (the paper's D and beta, the default KL weight)."""
    return [TrialConfig.from_dict({"model": "vae", "dataset": dataset, "epochs": epochs, **c}) for c in VAE[:size]] + [
        TrialConfig.from_dict({"model": "vqvae", "dataset": dataset, "epochs": epochs, **c}) for c in VQ[:size]
    ]


def main(argv: list[str] | None = None) -> int:
    options = Options("probe_ranking", __doc__)
    options.sized("--epochs", 10, 1, "epochs per config")
    options.sized("--size", 6, 2, "configs per model family")
    options.add_argument("--dataset", default="digits", help="dataset (default: digits, embedded)")
    options.add_argument("--threads", type=int, default=1, help="torch threads (default: 1, what a sweep trial gets)")
    args = options.parse(argv)
    torch.set_num_threads(args.threads)
    rows: list[tuple[str, dict[str, float]]] = []
    print(f"{'config':36} {'train probe':>11} {'test MLP':>9} {'test linear':>11} {'train SSIM':>10} {'test SSIM':>9}")
    for config in grid(args.dataset, args.epochs, args.size):
        m = run_trial(config).metrics
        rows.append((config.model, m))
        print(
            f"{config.name:36} {m[LINEAR_ACC]:11.4f} {m['probe/latent/mlp_acc']:9.4f} {m['probe/latent/linear_acc']:11.4f} {m[SSIM]:10.4f} {m['recon/ssim']:9.4f}"
        )
    figures = {"configs": float(len(rows))}
    for scope in ("all", "vae", "vqvae"):
        chosen = [m for model, m in rows if scope in ("all", model)]
        if len(chosen) < 3:  # a rank correlation of two points is +-1 and has no p
            continue
        for name, (cheap, final) in PAIRS.items():
            rho, p = spearmanr([m[cheap] for m in chosen], [m[final] for m in chosen])
            figures.update({f"{scope}_{name}_spearman": rho, f"{scope}_{name}_p": p})
            print(f"Spearman over {scope} ({len(chosen)} configs), {cheap} (last epoch) against {final}: {rho:.3f} (p = {p:.2g})")
    write_record(args, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
