"""optuna: hyper-parameter search with Ray Tune's OptunaSearch under ASHA, per dataset and family.

VQ-VAE: K log-uniform in [16, 2048], D in {16, 32, 64, 128}, beta in [0.05, 1], lr log-uniform.
VAE: D, KL weight log-uniform in [1e-4, 1], lr. OptunaSearch rejects grid_search, so the
categorical axes (dataset, model family) are separate studies, not part of the search.
TPE and ASHA rank trials on the per-epoch linear probe on held-out train images
(`train_probe/linear_acc`, benchmark/evaluation/train_probe.py): the paper asks which latent carries label
information, and the test split never chooses. The final probes run on the survivors.
"""

from __future__ import annotations

from typing import Any

from ray import tune

from benchmark.evaluation.train_probe import LINEAR_ACC
from benchmark.space import SpaceOptions, Study, datasets, with_epochs

DESCRIPTION = "Optuna TPE + ASHA on the per-epoch train-split linear probe, one study per dataset and model family"


def searched() -> dict[str, dict[str, Any]]:
    """Each family's searched knobs as Ray Tune domains."""
    lr = tune.loguniform(1e-4, 3e-3)
    code_dim = tune.choice([16, 32, 64, 128])
    return {
        "vqvae": {"num_codes": tune.lograndint(16, 2048), "code_dim": code_dim, "beta": tune.uniform(0.05, 1.0), "lr": lr},
        "vae": {"code_dim": code_dim, "kl_weight": tune.loguniform(1e-4, 1.0), "lr": lr},
    }


def family_studies(options: SpaceOptions, name: str, metric: str | tuple[str, ...], mode: str | tuple[str, ...]) -> list[Study]:
    """One study per dataset and model family, named NAME-DATASET-MODEL, seed 0, 10 epochs, 20 samples by default."""
    found = []
    for dataset in datasets(options, ("mnist",)):
        for model, search in searched().items():
            base = with_epochs(options, {"dataset": dataset, "seed": 0, "model": model}, 10)
            found.append(
                Study(
                    f"{name}-{dataset}-{model}", base=base, search=search, num_samples=options.num_samples or 20, metric=metric, mode=mode
                )
            )
    return found


def studies(options: SpaceOptions) -> list[Study]:
    return family_studies(options, "optuna", LINEAR_ACC, "max")
