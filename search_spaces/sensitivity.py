"""sensitivity: one factor at a time around the paper point, to see whether the answer survives the knobs.

Centre: the paper's VQ-VAE (`benchmark.config.PAPER_VQ`) and the VAE at the same D and the default KL weight,
the paper's training, no label embedding. VQ-VAE axes: K in {32, 128, 512, 2048}, D in {16, 32, 64, 128}, beta in
{0.1, 0.25, 1.0}; VAE axis: the KL weight in {0.001, 0.01, 0.1, 1.0}, which the paper never states
and which decides how far the VAE's latents are pulled toward the prior. The centre is run once
per seed, never once per axis: 13 distinct configs per dataset and seed.

The VAE's KL axis plus the VQ-VAE centre alone (5 per seed), as run on Fashion-MNIST:
    --only code_dim=64,num_codes=512,beta=0.25
"""

from itertools import product

from benchmark.config import DEFAULT_KL_WEIGHT, PAPER_TRAINING, PAPER_VQ
from benchmark.space import SpaceOptions, Study, datasets, seeds, with_epochs

DESCRIPTION = "one factor at a time around the paper point: VQ K, D, beta and the VAE's KL weight (13 per dataset and seed)"
CENTRE_VQ = dict(PAPER_VQ)
CENTRE_VAE = {"code_dim": PAPER_VQ["code_dim"], "kl_weight": DEFAULT_KL_WEIGHT}
VQ_AXES = {"num_codes": (32, 128, 512, 2048), "code_dim": (16, 32, 64, 128), "beta": (0.1, 0.25, 1.0)}
VAE_AXES = {"kl_weight": (0.001, 0.01, 0.1, 1.0)}
TRAINING = {"lr": PAPER_TRAINING["lr"], "batch_size": PAPER_TRAINING["batch_size"], "label_embedding": "none"}


def one_at_a_time(centre: dict, axes: dict) -> list[dict]:
    """The centre, then each axis's other values with every other knob at the centre; no config twice."""
    points = [dict(centre)]
    for key, values in axes.items():
        points += [{**centre, key: value} for value in values if value != centre[key]]
    return points


def studies(options: SpaceOptions) -> list[Study]:
    """Seeds innermost: a sweep cut short leaves whole configs with every seed, which a paired test can use,
    rather than every config short of a seed."""
    points = [{"model": "vqvae", **p} for p in one_at_a_time(CENTRE_VQ, VQ_AXES)] + [
        {"model": "vae", **p} for p in one_at_a_time(CENTRE_VAE, VAE_AXES)
    ]
    configs = [
        with_epochs(options, {**TRAINING, "dataset": dataset, **point, "seed": seed}, PAPER_TRAINING["epochs"])
        for dataset, point, seed in product(datasets(options, ("mnist",)), points, seeds(options, 3))
    ]
    return [Study("sensitivity", tuple(configs))]
