"""Vector quantizer of van den Oord et al. (2017): nearest code, straight-through gradients.

Options beyond the paper, off by default: EMA codebook updates (no codebook loss) and
restarting dead codes from random encoder outputs, the standard cures for codebook collapse.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Quantized:
    z_q: torch.Tensor  # (B, D, H, W), straight-through: gradients flow to the encoder output
    indices: torch.Tensor  # (B, H, W) int64
    loss: torch.Tensor  # codebook + beta * commitment
    perplexity: torch.Tensor


class VectorQuantizer(nn.Module):
    def __init__(
        self,
        num_codes: int,
        code_dim: int,
        beta: float = 0.25,
        ema: bool = False,
        ema_decay: float = 0.99,
        restart_dead_codes: bool = False,
        dead_threshold: float = 1e-3,
    ) -> None:
        super().__init__()
        self.num_codes, self.code_dim, self.beta = num_codes, code_dim, beta
        self.ema, self.ema_decay = ema, ema_decay
        self.restart_dead_codes, self.dead_threshold = restart_dead_codes, dead_threshold
        self.codebook = nn.Parameter(torch.empty(num_codes, code_dim).uniform_(-1 / num_codes, 1 / num_codes), requires_grad=not ema)
        self.register_buffer("ema_size", torch.ones(num_codes))
        self.register_buffer("ema_sum", self.codebook.detach().clone())

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code by squared Euclidean distance, for (N, D) vectors."""
        codebook = self.codebook.detach().to(flat.dtype)
        dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ codebook.t() + codebook.pow(2).sum(1)
        return dist.argmin(1)

    def forward(self, z: torch.Tensor) -> Quantized:
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        with torch.no_grad():
            indices = self.nearest(flat.float())
        z_q_flat = F.embedding(indices, self.codebook).to(z.dtype)
        if self.training and self.ema:
            self._ema_update(flat.detach().float(), indices)
        commitment = F.mse_loss(flat, z_q_flat.detach())
        loss = self.beta * commitment if self.ema else F.mse_loss(z_q_flat, flat.detach()) + self.beta * commitment
        if self.training and self.restart_dead_codes:
            self._restart_dead(flat.detach().float(), indices)
        z_q_flat = flat + (z_q_flat - flat).detach()
        z_q = z_q_flat.reshape(b, h, w, d).permute(0, 3, 1, 2)
        return Quantized(z_q, indices.reshape(b, h, w), loss, code_perplexity(indices, self.num_codes))

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, indices: torch.Tensor) -> None:
        counts = torch.bincount(indices, minlength=self.num_codes).float()
        sums = torch.zeros_like(self.ema_sum).index_add_(0, indices, flat)
        self.ema_size.mul_(self.ema_decay).add_(counts, alpha=1 - self.ema_decay)
        self.ema_sum.mul_(self.ema_decay).add_(sums, alpha=1 - self.ema_decay)
        n = self.ema_size.sum()
        size = (self.ema_size + 1e-5) / (n + self.num_codes * 1e-5) * n  # Laplace smoothing
        self.codebook.data.copy_(self.ema_sum / size.unsqueeze(1))

    @torch.no_grad()
    def _restart_dead(self, flat: torch.Tensor, indices: torch.Tensor) -> None:
        if not self.ema:  # with EMA, ema_size already tracks usage
            usage = torch.bincount(indices, minlength=self.num_codes).float()
            self.ema_size.mul_(0.99).add_(usage, alpha=0.01)
        dead = (self.ema_size < self.dead_threshold).nonzero().squeeze(1)
        if dead.numel():
            pick = torch.randint(0, flat.shape[0], (dead.numel(),), device=flat.device)
            self.codebook.data[dead] = flat[pick].to(self.codebook.dtype)
            self.ema_sum[dead] = flat[pick]
            self.ema_size[dead] = 1.0


def code_perplexity(indices: torch.Tensor, num_codes: int) -> torch.Tensor:
    """exp(entropy) of code usage: K when all codes are used evenly, 1 when one code is used."""
    probs = torch.bincount(indices.reshape(-1), minlength=num_codes).float() / indices.numel()
    return torch.exp(-(probs * torch.log(probs + 1e-10)).sum())
