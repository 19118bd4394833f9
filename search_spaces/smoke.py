"""smoke: the smallest real sweep, a VAE and a VQ-VAE on digits for one epoch.

Checks an installation or a cluster end to end in about a minute; the tests use it.
"""

from benchmark.space import SpaceOptions, Study, datasets, seeds, with_epochs

DESCRIPTION = "install check: digits, one VAE and one VQ-VAE (K=16) per seed, 1 epoch, 1 seed"


def studies(options: SpaceOptions) -> list[Study]:
    configs = []
    for dataset in datasets(options, ("digits",)):
        for seed in seeds(options, 1):
            for model in ("vae", "vqvae"):
                configs.append(with_epochs(options, {"model": model, "dataset": dataset, "seed": seed, "num_codes": 16}, 1))
    return [Study("smoke", tuple(configs))]
