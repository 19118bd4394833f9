"""optuna: hyper-parameter search with Ray Tune's OptunaSearch under ASHA, per dataset and family.

VQ-VAE: K log-uniform in [16, 2048], D in {16, 32, 64, 128}, beta in [0.05, 1], lr log-uniform.
VAE: D, KL weight log-uniform in [1e-4, 1], lr. OptunaSearch rejects grid_search, so the
categorical axes (dataset, model family) are separate studies, not part of the search.
ASHA stops trials early on the per-epoch reconstruction loss; probes run on the survivors.
"""
from ray import tune

from benchmark.space import SpaceOptions, Study, datasets, with_epochs

DESCRIPTION = "Optuna TPE + ASHA on the per-epoch reconstruction loss, one study per dataset and model family"


def studies(options: SpaceOptions) -> list[Study]:
    samples = options.num_samples or 20
    seed = 0
    found = []
    for dataset in datasets(options, ("mnist",)):
        base = {"dataset": dataset, "seed": seed}
        lr = tune.loguniform(1e-4, 3e-3)
        code_dim = tune.choice([16, 32, 64, 128])
        vq = {"num_codes": tune.lograndint(16, 2048), "code_dim": code_dim, "beta": tune.uniform(0.05, 1.0), "lr": lr}
        vae = {"code_dim": code_dim, "kl_weight": tune.loguniform(1e-4, 1.0), "lr": lr}
        for model, search in (("vqvae", vq), ("vae", vae)):
            found.append(Study(f"optuna-{dataset}-{model}", base=with_epochs(options, {**base, "model": model}, 10), search=search, num_samples=samples))
    return found
