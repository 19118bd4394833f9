"""rate: the VAE and the VQ-VAE at the same information rate (issue 30), instead of at unmeasured, different ones.

A VQ-VAE with K codes at each of its 16 latent positions has a nominal rate of 16 x log2 K bits per image (the KL
of its one-code posterior under a uniform prior, `benchmark/rate.py`). For each K in {32, 128, 512, 2048} this space
runs that VQ-VAE (the paper's D and beta) and a rate-matched VAE held at the same rate (`target_rate`, the capacity
objective of Burgess et al. 2018): 80, 112, 144 and 176 bits. Each trial logs what it achieved (`rate/bits`; the
VQ-VAE's `rate/effective_bits`, what its used codes can carry), so the report can put both families on one rate
axis. Plus the VAE at the default KL weight, the sensitivity study's centre, for reference: 9 configs per dataset
and seed.
"""

import math
from itertools import product

from benchmark.config import DEFAULT_KL_WEIGHT, PAPER_TRAINING, PAPER_VQ
from benchmark.space import SpaceOptions, Study, datasets, seeds, with_epochs

DESCRIPTION = "VQ-VAE at K in {32, 128, 512, 2048} and a VAE held at each one's nominal rate (16 x log2 K bits), plus the KL-weight VAE"
POSITIONS = 16  # latent positions of a 32 x 32 input: the encoder's three stride-2 convolutions (benchmark/models.py)
CODEBOOK_SIZES = (32, 128, 512, 2048)
TRAINING = {"lr": PAPER_TRAINING["lr"], "batch_size": PAPER_TRAINING["batch_size"], "label_embedding": "none"}


def nominal_bits(num_codes: int) -> float:
    return POSITIONS * math.log2(num_codes)


def studies(options: SpaceOptions) -> list[Study]:
    points = []
    for k in CODEBOOK_SIZES:
        points += [
            {"model": "vqvae", **PAPER_VQ, "num_codes": k},
            {"model": "vae", "code_dim": PAPER_VQ["code_dim"], "target_rate": nominal_bits(k)},
        ]
    points.append({"model": "vae", "code_dim": PAPER_VQ["code_dim"], "kl_weight": DEFAULT_KL_WEIGHT})
    configs = [
        with_epochs(options, {**TRAINING, "dataset": dataset, **point, "seed": seed}, PAPER_TRAINING["epochs"])
        for dataset, point, seed in product(datasets(options, ("mnist",)), points, seeds(options, 3))
    ]
    return [Study("rate", tuple(configs))]
