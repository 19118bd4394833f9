"""quick: the demo. Embedded digits, a VAE and VQ-VAEs with K in {16, 64, 256}, 2 seeds, 15 epochs.

8 trials; about two minutes on a 2-core laptop.
"""

from benchmark.space import SpaceOptions, Study, datasets, seeds, with_epochs

DESCRIPTION = "demo: digits, VAE and VQ-VAE K in {16, 64, 256}, 2 seeds, 15 epochs (8 trials)"


def studies(options: SpaceOptions) -> list[Study]:
    configs = []
    for dataset in datasets(options, ("digits",)):
        for seed in seeds(options, 2):
            configs.append(with_epochs(options, {"model": "vae", "dataset": dataset, "seed": seed}, 15))
            for k in (16, 64, 256):
                configs.append(with_epochs(options, {"model": "vqvae", "dataset": dataset, "seed": seed, "num_codes": k}, 15))
    return [Study("quick", tuple(configs))]
