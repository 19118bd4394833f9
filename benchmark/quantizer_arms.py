"""The VQ-VAE's quantizer, by the config's `quantizer` key: the paper's hand-written one, or the field's library.

The library's arms (vector-quantize-pytorch) are wrapped to speak `Quantized`, as the paper's quantizer does, so the
model, the probes and the rate logging treat every arm alike: quantized vectors (B, D, H, W) with gradients to the
encoder, code indices (B, H, W) (residual VQ: (B, H, W, RESIDUAL_DEPTH)), the quantizer's own loss and the batch's
code perplexity. What each arm is (the library's defaults would hide some: its decay is 0.8 and the rotation trick
is on wherever it is not turned off):
- `ema`: codebook by exponential moving averages (decay 0.99), codes unused for a while (EMA count below 2) replaced
  by encoder outputs, straight-through gradients;
- `cosine`: as `ema`, codes compared by cosine similarity in an 8-dimensional projection (Yu et al. 2022, ViT-VQGAN);
- `rotation`: as `ema`, gradients through the rotation trick (Fifty et al. 2024) instead of straight through;
- `fsq`: finite scalar quantization (Mentzer et al. 2023): D projected to len(levels) bounded scalars, each rounded
  to its levels; no codebook and no auxiliary loss;
- `residual`: RESIDUAL_DEPTH `ema` quantizers, each coding what the previous ones left (Zeghidour et al. 2021).
The commitment weight is the config's beta throughout (FSQ has none).
"""

from __future__ import annotations

import torch
from torch import nn

from benchmark.config import RESIDUAL_DEPTH, TrialConfig
from benchmark.quantizer import Quantized, VectorQuantizer, code_perplexity

EMA_DECAY = 0.99
DEAD_CODE_THRESHOLD = 2  # the library's `threshold_ema_dead_code`: an EMA count below it expires the code
LOOKUP_DIM = 8  # the cosine arm's low-dimensional codebook


class LibraryQuantizer(nn.Module):
    """One of vector-quantize-pytorch's quantizers on (B, D, H, W) maps, returning `Quantized`."""

    def __init__(self, module: nn.Module, codebook_size: int) -> None:
        super().__init__()
        self.module, self.codebook_size = module, codebook_size

    def forward(self, z: torch.Tensor) -> Quantized:
        b, d, h, w = z.shape
        out = self.module(z.permute(0, 2, 3, 1).reshape(b, h * w, d))
        quantized, indices = out[0], out[1].long()
        loss = out[2].sum() if len(out) > 2 else z.new_zeros(())
        z_q = quantized.reshape(b, h, w, d).permute(0, 3, 1, 2)
        return Quantized(z_q, indices.reshape(b, h, w, *indices.shape[2:]), loss, code_perplexity(indices, self.codebook_size))


def build_quantizer(config: TrialConfig) -> nn.Module:
    """The quantizer `config.quantizer` names (validated by the config: the library is installed where it is needed)."""
    if config.quantizer == "plain":
        return VectorQuantizer(config.num_codes, config.code_dim, config.beta, config.ema, config.ema_decay, config.restart_dead_codes)
    import vector_quantize_pytorch as vq  # the optional `quantizers` extra; TrialConfig said so if it is missing

    if config.quantizer == "fsq":
        return LibraryQuantizer(vq.FSQ(levels=list(config.fsq_levels), dim=config.code_dim), config.codebook_size)
    common = dict(
        dim=config.code_dim,
        codebook_size=config.num_codes,
        decay=EMA_DECAY,
        commitment_weight=config.beta,
        threshold_ema_dead_code=DEAD_CODE_THRESHOLD,
        rotation_trick=config.quantizer == "rotation",
    )
    if config.quantizer == "residual":
        return LibraryQuantizer(vq.ResidualVQ(num_quantizers=RESIDUAL_DEPTH, **common), config.num_codes)
    if config.quantizer == "cosine":
        common.update(use_cosine_sim=True, codebook_dim=LOOKUP_DIM)
    return LibraryQuantizer(vq.VectorQuantize(**common), config.num_codes)
