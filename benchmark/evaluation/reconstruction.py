"""Reconstruction quality on [0, 1] pixels: MSE, SSIM (Wang et al., 2004) and PSNR, means over images."""

from __future__ import annotations

import numpy as np
import torch
from skimage.metrics import structural_similarity


def mse_per_image(original: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    return (original.float() - recon.float()).pow(2).flatten(1).mean(1)


def psnr_per_image(original: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB for data range 1; a perfect image is capped at 100 dB."""
    return 10 * torch.log10(1.0 / mse_per_image(original, recon).clamp_min(1e-10))


def ssim_per_image(original: torch.Tensor, recon: torch.Tensor) -> np.ndarray:
    """scikit-image's SSIM (7x7 window, data_range 1), over the channel axis for colour."""
    a = original.detach().float().cpu().numpy()
    b = recon.detach().float().cpu().numpy()
    colour = a.shape[1] > 1
    return np.array(
        [
            structural_similarity(x, y, data_range=1.0, channel_axis=0 if colour else None)
            for x, y in zip(a if colour else a[:, 0], b if colour else b[:, 0])
        ]
    )


def reconstruction_metrics(original: torch.Tensor, recon: torch.Tensor) -> dict[str, float]:
    recon = recon.clamp(0, 1)
    return {
        "mse": mse_per_image(original, recon).mean().item(),
        "ssim": float(ssim_per_image(original, recon).mean()),
        "psnr": psnr_per_image(original, recon).mean().item(),
    }
