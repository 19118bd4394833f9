"""The paper's Table 1, its setting and its four claims, as data the report tests against.

Radman, "Image Classification Using Discrete Representations": one run per setting, no
intervals. Accuracies are kept as fractions, like the metrics the trials log.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from benchmark.config import PAPER_TRAINING, PAPER_VQ

# The setting Table 1 was measured in. The VAE's latent size is not stated, so only the
# VQ-VAE is held to K, D and beta (PAPER_VQ); both models added the label embedding ("add").
PAPER_SHARED = {"label_embedding": "add", **PAPER_TRAINING}
PAPER_DATASETS = ("mnist", "cifar100")


@dataclass(frozen=True)
class PaperRow:
    model: str
    dataset: str
    accuracy: float  # feed-forward probe on the latents, fraction
    mse: float
    ssim: float


TABLE1 = (
    PaperRow("vae", "mnist", 0.8005, 0.002, 0.981),
    PaperRow("vqvae", "mnist", 0.6960, 0.018, 0.906),
    PaperRow("vae", "cifar100", 0.2434, 0.001, 0.950),
    PaperRow("vqvae", "cifar100", 0.4013, 0.064, 0.598),
)


@dataclass(frozen=True)
class Claim:
    """One claim: `expect` is the sign the paper predicts for the difference tested.

    compare="models": VQ-VAE minus VAE on each of `datasets`. compare="datasets": the VQ-VAE
    alone, datasets[0] minus datasets[1] (a one-sided contrast between datasets).
    """

    number: int
    text: str
    datasets: tuple[str, ...]
    metric: str
    expect: int  # +1: the first side higher (VQ-VAE, or the first dataset); -1: lower
    paper_evidence: str
    compare: str = "models"
    proxy: str = ""  # how the claim is measured, where that is not what the paper measured


CLAIMS = (
    Claim(
        1, "On MNIST the continuous VAE latents probe better than the VQ-VAE's", ("mnist",), "probe/latent/mlp_acc", -1, "80.05% vs 69.60%"
    ),
    Claim(
        2,
        "On CIFAR-100 the discrete VQ-VAE latents probe better than the VAE's",
        ("cifar100",),
        "probe/latent/mlp_acc",
        +1,
        "40.13% vs 24.34%",
    ),
    Claim(
        3,
        "The VAE reconstructs better than the VQ-VAE on both datasets",
        ("mnist", "cifar100"),
        "recon/ssim",
        -1,
        "SSIM 0.981 vs 0.906 (MNIST), 0.950 vs 0.598 (CIFAR-100)",
    ),
    Claim(
        4,
        "VQ-VAE latents cluster well by class on MNIST, only moderately (by superclass) on CIFAR-100",
        ("mnist", "cifar100"),
        "probe/latent/knn_acc",
        +1,
        "t-SNE plots (Fig. 3)",
        compare="datasets",
        proxy="kNN probe accuracy on the VQ-VAE latents, MNIST minus CIFAR-100 (on 100 classes, not the paper's 20 "
        "superclasses); the paper judged t-SNE plots by eye",
    ),
)


def paper_table() -> pd.DataFrame:
    """Table 1 as a DataFrame: model, dataset, accuracy (fraction), mse, ssim."""
    return pd.DataFrame([row.__dict__ for row in TABLE1])


def paper_row(model: str, dataset: str) -> PaperRow | None:
    return next((row for row in TABLE1 if row.model == model and row.dataset == dataset), None)


def setting_differences(settings: dict[str, object]) -> list[str]:
    """What keeps a run's setting from the paper's, e.g. ["label_embedding=none", "epochs=3"]; [] if it matches."""
    wanted = dict(PAPER_SHARED)
    if settings.get("model") == "vqvae":
        wanted.update(PAPER_VQ)
    differences = []
    for key, value in wanted.items():
        have = settings.get(key)
        if have is None or pd.isna(have):
            continue
        if (isinstance(value, float) and abs(float(have) - value) > 1e-12) or (not isinstance(value, float) and have != value):
            differences.append(f"{key}={have:g}" if isinstance(have, float) else f"{key}={have}")
    return differences
