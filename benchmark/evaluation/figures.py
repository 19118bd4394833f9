"""The paper's figures for one trial: a reconstruction grid (Figures 1-2) and a t-SNE plot (Figure 3)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from sklearn.manifold import TSNE  # noqa: E402


def save_reconstruction_grid(originals: torch.Tensor, reconstructions: torch.Tensor, title: str, path: Path) -> Path:
    """Originals in the top row, their reconstructions below, as in the paper; labelled, so the PNG reads alone."""
    columns = originals.shape[0]
    fig, axes = plt.subplots(2, columns, figsize=(0.9 * columns + 0.8, 2.5), dpi=110, squeeze=False)
    for row, (images, label) in enumerate(((originals, "original"), (reconstructions, "reconstruction"))):
        for column, image in enumerate(images):
            ax = axes[row][column]
            ax.imshow(image.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row][0].set_ylabel(label, fontsize=8)
    fig.suptitle(f"{title}: test images (top) and their reconstructions", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def tsne_embedding(latents: torch.Tensor, seed: int) -> torch.Tensor:
    perplexity = min(30.0, max(2.0, (latents.shape[0] - 1) / 3))
    points = TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed).fit_transform(latents.double().numpy())
    return torch.from_numpy(points)


def save_tsne(latents: torch.Tensor, labels: torch.Tensor, seed: int, title: str, path: Path, names: tuple[str, ...] | None = None) -> Path:
    points = tsne_embedding(latents, seed)
    classes = int(labels.max().item()) + 1
    fig, ax = plt.subplots(figsize=(6, 5.5), dpi=110)
    scatter = ax.scatter(
        points[:, 0], points[:, 1], c=labels.numpy(), cmap="tab20" if classes > 10 else "tab10", s=6, vmin=0, vmax=max(classes - 1, 1)
    )
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    bar = fig.colorbar(scatter, ax=ax, ticks=range(classes), label="class" if classes <= 10 or names else "superclass")
    if names and len(names) >= classes:
        bar.ax.set_yticklabels(names[:classes], fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
