"""paper: the paper's four settings exactly, with seeds and the label embedding as axes.

VAE and VQ-VAE on MNIST and CIFAR-100 at the paper's setting (`benchmark.config.PAPER_VQ` and `PAPER_TRAINING`:
K, D, beta, Adam's learning rate, batch size, epochs), BatchNorm on CIFAR (and on any colour image folder, e.g. `--datasets CIFAR-10-images`). The paper added label embeddings before quantization
(`add`), which feeds the label into the probed latent; `none` measures without that leak.
"""

from benchmark.config import PAPER_TRAINING, PAPER_VQ, paper_vq_text
from benchmark.space import SpaceOptions, Study, datasets, seeds, with_epochs

DESCRIPTION = f"the paper's settings: VAE/VQ-VAE x MNIST/CIFAR-100 x label embedding none/add, {paper_vq_text()}, 3 seeds"
PAPER = {**PAPER_VQ, **PAPER_TRAINING}


def studies(options: SpaceOptions) -> list[Study]:
    configs = []
    for dataset in datasets(options, ("mnist", "cifar100")):
        for label_embedding in ("none", "add"):
            for model in ("vae", "vqvae"):
                for seed in seeds(options, 3):
                    # BatchNorm follows the dataset (TrialConfig: on for CIFAR and image folders, as the paper on CIFAR)
                    config = {**PAPER, "model": model, "dataset": dataset, "seed": seed, "label_embedding": label_embedding}
                    configs.append(with_epochs(options, config, PAPER_TRAINING["epochs"]))
    return [Study("paper", tuple(configs))]
