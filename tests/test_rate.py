"""The rate of a latent in bits: the formulas against cases whose answer is known in closed form."""

from __future__ import annotations

import math

import pytest
import torch

from benchmark.rate import gaussian_kl_nats, position_entropy_bits, vae_rates, vq_rates


def test_gaussian_kl_is_zero_at_the_prior_and_matches_torch_distributions():
    assert torch.equal(gaussian_kl_nats(torch.zeros(3, 4, 2, 2), torch.zeros(3, 4, 2, 2)), torch.zeros(3))
    mean, logvar = torch.randn(5, 3, 2, 2), torch.randn(5, 3, 2, 2)
    q = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
    expected = torch.distributions.kl_divergence(q, p).flatten(1).sum(1)
    assert torch.allclose(gaussian_kl_nats(mean, logvar), expected, atol=1e-5)


def test_vae_rate_is_the_mean_kl_in_bits():
    assert vae_rates(torch.tensor([math.log(2), 3 * math.log(2)])) == {"rate/bits": pytest.approx(2.0)}


def test_position_entropy_of_known_code_distributions():
    # position 0: all four codes evenly (2 bits); position 1: one code (0 bits); position 2: two codes evenly (1 bit)
    codes = torch.tensor([[0, 3, 1], [1, 3, 2], [2, 3, 1], [3, 3, 2]])
    assert torch.allclose(position_entropy_bits(codes, 4), torch.tensor([2.0, 0.0, 1.0]))


def test_vq_rates_nominal_and_effective():
    codes = torch.randint(0, 8, (20_000, 16), generator=torch.Generator().manual_seed(0))
    rates = vq_rates(codes.reshape(20_000, 4, 4), 512)
    assert rates["rate/bits"] == rates["rate/nominal_bits"] == 16 * 9  # 16 positions x log2 512
    # eight codes used evenly at each position: 3 bits each, up to sampling noise
    assert rates["rate/effective_bits"] == pytest.approx(16 * 3, abs=0.01)
    assert vq_rates(torch.zeros(10, 16, dtype=torch.long), 512)["rate/effective_bits"] == 0.0


def test_the_rate_space_pairs_each_vq_vae_with_a_vae_held_at_its_nominal_rate():
    from benchmark.config import TrialConfig
    from benchmark.models import build_model
    from benchmark.space import SpaceOptions, load_space

    space = load_space("rate")
    # the space's positions are the model's: 16 codes for a 32 x 32 input
    model = build_model(TrialConfig(num_codes=32, code_dim=8), 1, 10).eval()
    assert model.represent(torch.rand(2, 1, 32, 32), torch.zeros(2, dtype=torch.long))["codes"].shape[1] == space.POSITIONS
    (study,) = space.studies(SpaceOptions(datasets=("digits",), seeds=2))
    configs = [TrialConfig.from_dict(c) for c in study.configs]
    assert len(configs) == 2 * 9
    vq = {c.num_codes for c in configs if c.model == "vqvae"}
    matched = {c.target_rate for c in configs if c.model == "vae" and c.target_rate > 0}
    assert vq == {32, 128, 512, 2048} and matched == {16 * math.log2(k) for k in vq} == {80.0, 112.0, 144.0, 176.0}
    assert sum(c.model == "vae" and c.target_rate == 0 for c in configs) == 2  # the KL-weight VAE, once per seed
