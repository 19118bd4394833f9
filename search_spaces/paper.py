"""paper: the paper's four settings exactly, with seeds and the label embedding as axes.

VAE and VQ-VAE on MNIST and CIFAR-100; K=512, D=64, beta=0.25, Adam 1e-3, batch 64,
10 epochs, BatchNorm on CIFAR (and on any colour image folder, e.g. `--datasets CIFAR-10-images`). The paper added label embeddings before quantization
(`add`), which feeds the label into the probed latent; `none` measures without that leak.
"""

from benchmark.space import SpaceOptions, Study, datasets, seeds, with_epochs

DESCRIPTION = "the paper's settings: VAE/VQ-VAE x MNIST/CIFAR-100 x label embedding none/add, K=512 D=64 beta=0.25, 3 seeds"
PAPER = {"num_codes": 512, "code_dim": 64, "beta": 0.25, "lr": 1e-3, "batch_size": 64}


def studies(options: SpaceOptions) -> list[Study]:
    configs = []
    for dataset in datasets(options, ("mnist", "cifar100")):
        for label_embedding in ("none", "add"):
            for model in ("vae", "vqvae"):
                for seed in seeds(options, 3):
                    # BatchNorm follows the dataset (TrialConfig: on for CIFAR and image folders, as the paper on CIFAR)
                    config = {**PAPER, "model": model, "dataset": dataset, "seed": seed, "label_embedding": label_embedding}
                    configs.append(with_epochs(options, config, 10))
    return [Study("paper", tuple(configs))]
