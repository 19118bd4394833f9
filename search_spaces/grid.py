"""grid: how the answer moves with K, D and beta (VQ-VAE) and with D and the KL weight (VAE).

VQ-VAE: K in {64, 128, 256, 512, 1024} x D in {16, 32, 64, 128} x beta in {0.1, 0.25, 0.5, 1.0}.
VAE: D x KL weight in {0.001, 0.01, 0.1, 1.0}; K and beta mean nothing to a VAE, so VAE
trials are not repeated per (K, beta): the two families are separate branches.
"""

from itertools import product

from benchmark.space import SpaceOptions, Study, datasets, seeds, with_epochs

DESCRIPTION = "sensitivity: VQ K x D x beta (80) and VAE D x KL weight (16) per dataset and seed"
KS, DS, BETAS, KL_WEIGHTS = (64, 128, 256, 512, 1024), (16, 32, 64, 128), (0.1, 0.25, 0.5, 1.0), (0.001, 0.01, 0.1, 1.0)


def studies(options: SpaceOptions) -> list[Study]:
    configs = []
    for dataset, seed in product(datasets(options, ("mnist",)), seeds(options, 3)):
        common = {"dataset": dataset, "seed": seed}
        for k, d, beta in product(KS, DS, BETAS):
            configs.append(with_epochs(options, {**common, "model": "vqvae", "num_codes": k, "code_dim": d, "beta": beta}, 10))
        for d, kl in product(DS, KL_WEIGHTS):
            configs.append(with_epochs(options, {**common, "model": "vae", "code_dim": d, "kl_weight": kl}, 10))
    return [Study("grid", tuple(configs))]
