"""The information rate of a latent, in bits per image: what a bottleneck lets through, whatever its kind.

The paper compares a continuous bottleneck with a discrete one without measuring how much either carries; these
put both on one axis, the rate term of the ELBO (Alemi et al. 2018, "Fixing a broken ELBO"):
- VAE: KL(q(z|x) || N(0, I)) of each test image, summed over the latent, averaged over images.
- VQ-VAE: its posterior is one code per position with a uniform prior over K codes, so its KL is the *nominal*
  rate, positions x log2 K, whatever the codes. What the codes can carry at most, given how the encoder uses them,
  is the *effective* rate: the sum over positions of the empirical entropy of that position's codes (an upper bound
  on their joint entropy; it equals the nominal rate only when every position uses all K codes evenly).
"""

from __future__ import annotations

import math

import torch

RATE_PREFIX = "rate/"


def gaussian_kl_nats(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) of each row (image), in nats: (N, ...) -> (N,)."""
    mean, logvar = mean.float().flatten(1), logvar.float().flatten(1)
    return 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).sum(1)


def position_entropy_bits(codes: torch.Tensor, num_codes: int) -> torch.Tensor:
    """The empirical entropy of each position's codes over the rows, in bits: (N, P) -> (P,)."""
    codes = codes.flatten(1).long()
    counts = torch.zeros(codes.shape[1], num_codes, device=codes.device)
    counts.scatter_add_(1, codes.T, torch.ones_like(codes.T, dtype=torch.float))
    probs = counts / codes.shape[0]
    return -(probs * torch.log2(probs.clamp_min(1e-30))).sum(1)


def vae_rates(kl_nats: torch.Tensor, target_bits: float = 0.0) -> dict[str, float]:
    """`rate/bits`: the mean KL per image in bits (from `gaussian_kl_nats`); for a rate-matched VAE (`target_bits` > 0)
    also `rate/gap_bits`, how far the test images' rate landed from the target it was trained to."""
    bits = float(kl_nats.double().mean()) / math.log(2)
    return {f"{RATE_PREFIX}bits": bits, **({f"{RATE_PREFIX}gap_bits": bits - target_bits} if target_bits > 0 else {})}


def vq_rates(codes: torch.Tensor, num_codes: int) -> dict[str, float]:
    """`rate/bits` (= `rate/nominal_bits`, the KL under the uniform prior) and `rate/effective_bits`."""
    nominal = codes.flatten(1).shape[1] * math.log2(num_codes)
    effective = float(position_entropy_bits(codes, num_codes).double().sum())
    return {f"{RATE_PREFIX}bits": nominal, f"{RATE_PREFIX}nominal_bits": nominal, f"{RATE_PREFIX}effective_bits": effective}


def on_train_split(rates: dict[str, float]) -> dict[str, float]:
    """The same rates measured on the train split, `rate/train_*`: what an analysis may choose with (a matched VAE, in
    `analysis.rates`), since the test split never chooses anything. The nominal rate is the same on every split."""
    return {f"{RATE_PREFIX}train_{key[len(RATE_PREFIX) :]}": value for key, value in rates.items() if key != f"{RATE_PREFIX}nominal_bits"}
