"""The paper's VAE and VQ-VAE: one encoder/decoder shape, two latent families.

Encoder: three stride-2, padded convolutions with kernel 4 (32 -> 16 -> 8 -> 4), LeakyReLU,
channels 32, 64, then the latent's D (2D for a VAE: mean and log-variance). The decoder
mirrors it with transposed convolutions. BatchNorm is optional (on for the CIFAR presets).
The paper's label embedding, when on, adds a learned embedding of the true label to the
encoder output before sampling/quantization, at train and test time, as the paper did.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.config import TrialConfig
from benchmark.quantizer_arms import build_quantizer
from benchmark.rate import gaussian_kl_nats

HIDDEN = (32, 64)


@dataclass
class Output:
    recon: torch.Tensor
    loss: torch.Tensor
    terms: dict[str, torch.Tensor]  # logged per epoch: recon_loss, kl or vq_loss, perplexity


def _block(layer: nn.Module, channels: int, batch_norm: bool) -> list[nn.Module]:
    return [layer] + ([nn.BatchNorm2d(channels)] if batch_norm else []) + [nn.LeakyReLU(0.2)]


def encoder(in_channels: int, out_channels: int, batch_norm: bool) -> nn.Sequential:
    a, b = HIDDEN
    return nn.Sequential(
        *_block(nn.Conv2d(in_channels, a, 4, 2, 1), a, batch_norm),
        *_block(nn.Conv2d(a, b, 4, 2, 1), b, batch_norm),
        nn.Conv2d(b, out_channels, 4, 2, 1),
    )


def decoder(latent_channels: int, out_channels: int, batch_norm: bool) -> nn.Sequential:
    a, b = HIDDEN
    return nn.Sequential(
        *_block(nn.ConvTranspose2d(latent_channels, b, 4, 2, 1), b, batch_norm),
        *_block(nn.ConvTranspose2d(b, a, 4, 2, 1), a, batch_norm),
        nn.ConvTranspose2d(a, out_channels, 4, 2, 1),
    )


class VAE(nn.Module):
    def __init__(self, channels: int, num_classes: int, config: TrialConfig) -> None:
        super().__init__()
        self.code_dim, self.kl_weight = config.code_dim, config.kl_weight
        self.capacity_nats, self.capacity_weight = config.target_rate * math.log(2), config.capacity_weight
        self.encoder = encoder(channels, 2 * config.code_dim, config.batch_norm)
        self.decoder = decoder(config.code_dim, channels, config.batch_norm)
        self.label_embedding = nn.Embedding(num_classes, config.code_dim) if config.leaks_label else None

    def posterior(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        if self.label_embedding is not None:
            mean = mean + self.label_embedding(y)[:, :, None, None]
        return mean, logvar.clamp(-30, 20)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> Output:
        mean, logvar = self.posterior(x, y)
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
        recon = self.decoder(z)
        recon_loss = F.mse_loss(recon.float(), x.float())
        kl = gaussian_kl_nats(mean, logvar).sum() / x.numel()  # per pixel, as the reconstruction loss
        if self.capacity_nats > 0:  # rate-matched: the KL held at the capacity (Burgess et al. 2018), per pixel too
            penalty = self.capacity_weight * (kl - self.capacity_nats / x[0].numel()).abs()
        else:
            penalty = self.kl_weight * kl
        return Output(recon, recon_loss + penalty, {"recon_loss": recon_loss, "kl": kl})

    @torch.no_grad()
    def represent(self, x: torch.Tensor, y: torch.Tensor, decode: bool = True) -> dict[str, torch.Tensor]:
        """The posterior mean is the VAE's representation, and decodes to its reconstruction; `kl_nats`: each image's rate."""
        mean, logvar = self.posterior(x, y)
        out = {"latent": mean.flatten(1), "kl_nats": gaussian_kl_nats(mean, logvar)}
        return {**out, "recon": self.decoder(mean)} if decode else out


class VQVAE(nn.Module):
    def __init__(self, channels: int, num_classes: int, config: TrialConfig) -> None:
        super().__init__()
        self.encoder = encoder(channels, config.code_dim, config.batch_norm)
        self.decoder = decoder(config.code_dim, channels, config.batch_norm)
        self.quantizer = build_quantizer(config)
        self.label_embedding = nn.Embedding(num_classes, config.code_dim) if config.leaks_label else None

    def encode(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z = self.encoder(x)
        if self.label_embedding is not None:
            z = z + self.label_embedding(y)[:, :, None, None]
        return z

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> Output:
        q = self.quantizer(self.encode(x, y))
        recon = self.decoder(q.z_q)
        recon_loss = F.mse_loss(recon.float(), x.float())
        return Output(recon, recon_loss + q.loss.float(), {"recon_loss": recon_loss, "vq_loss": q.loss, "perplexity": q.perplexity})

    @torch.no_grad()
    def represent(self, x: torch.Tensor, y: torch.Tensor, decode: bool = True) -> dict[str, torch.Tensor]:
        """Quantized vectors and, as a second discrete representation, the code indices."""
        q = self.quantizer(self.encode(x, y))
        out = {"latent": q.z_q.flatten(1), "codes": q.indices.flatten(1)}
        return {**out, "recon": self.decoder(q.z_q)} if decode else out


def build_model(config: TrialConfig, channels: int, num_classes: int) -> nn.Module:
    cls = VAE if config.model == "vae" else VQVAE
    return cls(channels, num_classes, config)
