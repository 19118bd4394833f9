"""quantizers: quantizers that use their codebook, and the VAE held at the rates they reach (issue 30).

The paper's plain quantizer collapses to about 75 used codes whatever K is above 128 (sensitivity study, MNIST), so
its effective rate is about 72 bits per image against a nominal 144 at K = 512. This space runs every arm of the
`quantizer` key at the paper's K, D and beta (FSQ at the level set nearest K = 512: (8, 5, 5, 5), 1,000 codes;
residual VQ: 4 quantizers of K codes at each position), and rate-matched VAEs (`target_rate`) at 48, 72, 108 and
162 bits, a geometric ladder (x1.5) from below the plain quantizer's measured effective rate to FSQ's nominal one
(16 x log2 1000 = 159 bits), declared here before any arm was run; plus the KL-weight VAE, the sensitivity study's
centre. 11 configs per dataset and seed; the report compares each VQ arm with the VAE whose achieved rate is nearest
its own effective rate (`rate/effective_bits`), paired by seed.
"""

from itertools import product

from benchmark.config import DEFAULT_KL_WEIGHT, PAPER_TRAINING, PAPER_VQ, QUANTIZERS
from benchmark.space import SpaceOptions, Study, datasets, seeds, with_epochs

DESCRIPTION = "every quantizer arm at the paper's K, D, beta and the VAE at 4 target rates (48-162 bits), plus the KL-weight VAE"
TARGET_RATES = (48.0, 72.0, 108.0, 162.0)
TRAINING = {"lr": PAPER_TRAINING["lr"], "batch_size": PAPER_TRAINING["batch_size"], "label_embedding": "none"}


def studies(options: SpaceOptions) -> list[Study]:
    """Seeds innermost, as in the sensitivity space: a sweep cut short leaves whole configs with every seed."""
    points = [{"model": "vqvae", **PAPER_VQ, "quantizer": arm} for arm in QUANTIZERS]
    points += [{"model": "vae", "code_dim": PAPER_VQ["code_dim"], "target_rate": bits} for bits in TARGET_RATES]
    points.append({"model": "vae", "code_dim": PAPER_VQ["code_dim"], "kl_weight": DEFAULT_KL_WEIGHT})
    configs = [
        with_epochs(options, {**TRAINING, "dataset": dataset, **point, "seed": seed}, PAPER_TRAINING["epochs"])
        for dataset, point, seed in product(datasets(options, ("mnist", "CIFAR-10-images")), points, seeds(options, 5))
    ]
    return [Study("quantizers", tuple(configs))]
