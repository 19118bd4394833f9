"""The quantizer arms (issue 30): each one on a small known case, trained on digits, and the paper's own left as it was."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from benchmark.config import FSQ_LEVELS, QUANTIZERS, RESIDUAL_DEPTH, ConfigError, TrialConfig
from benchmark.data import load_dataset
from benchmark.evaluation.evaluate import evaluate
from benchmark.evaluation.probe_settings import ProbeSettings
from benchmark.models import build_model, decoder, encoder
from benchmark.quantizer import VectorQuantizer
from benchmark.train import init_state, pick_device, to_device, train_epoch

pytestmark = pytest.mark.usefixtures("one_torch_thread")
LIBRARY_ARMS = [q for q in QUANTIZERS if q != "plain"]
SMALL = dict(model="vqvae", num_codes=32, code_dim=8)
CHEAP = ProbeSettings(mlp_epochs=1, batch_size=64, l2_grid=(1.0, 1e-2), label_budgets=(100,), knn_train_size=500)


def positions(config: TrialConfig) -> int:
    return 16 * (RESIDUAL_DEPTH if config.quantizer == "residual" else 1)  # a 32 x 32 input: 4 x 4 positions


@pytest.mark.parametrize("arm", QUANTIZERS)
def test_each_arm_quantizes_with_gradients_to_the_encoder(arm):
    config = TrialConfig(**SMALL, quantizer=arm)
    torch.manual_seed(0)
    model = build_model(config, 1, 10).train()
    x, y = torch.rand(8, 1, 32, 32), torch.zeros(8, dtype=torch.long)
    out = model(x, y)
    assert out.recon.shape == x.shape and torch.isfinite(out.loss)
    out.loss.backward()
    first = model.encoder[0].weight.grad
    assert first is not None and first.abs().sum() > 0  # straight through (or rotated) to the encoder's first layer
    rep = model.eval().represent(x, y)
    assert rep["latent"].shape == (8, config.code_dim * 16)
    codes = rep["codes"]
    assert codes.shape == (8, positions(config)) and codes.dtype == torch.long
    assert 0 <= int(codes.min()) and int(codes.max()) < config.codebook_size


def test_fsq_takes_the_level_set_nearest_k_and_its_codes_are_its_size():
    assert TrialConfig(**{**SMALL, "num_codes": 512}, quantizer="fsq").fsq_levels == (8, 5, 5, 5)
    assert TrialConfig(**{**SMALL, "num_codes": 512}, quantizer="fsq").codebook_size == 1000
    assert TrialConfig(**{**SMALL, "num_codes": 256}, quantizer="fsq").codebook_size == math.prod(FSQ_LEVELS[0]) == 240
    assert TrialConfig(**{**SMALL, "num_codes": 512}).codebook_size == 512  # K itself for every other arm
    assert (
        TrialConfig(**{**SMALL, "num_codes": 512}, quantizer="fsq").name == "vqvae-digits-fsq-K1000-D8-s0"
    )  # FSQ has no commitment cost: no beta in its name
    # every index FSQ emits is one of its levels' product, and encoder outputs that spread use many of them
    quantizer = build_model(TrialConfig(**{**SMALL, "num_codes": 512}, quantizer="fsq"), 1, 10).quantizer.eval()
    codes = quantizer(3 * torch.randn(64, SMALL["code_dim"], 4, 4, generator=torch.Generator().manual_seed(0))).indices
    assert codes.shape == (64, 4, 4) and int(codes.max()) < 1000 and codes.unique().numel() > 100


@pytest.mark.parametrize("arm", LIBRARY_ARMS)
def test_each_arm_trains_on_digits_and_logs_usage_perplexity_and_rate(arm):
    config = TrialConfig(**SMALL, quantizer=arm, epochs=3, train_probe_every=0)
    device = pick_device()
    data = to_device(load_dataset("digits"), device)
    state = init_state(config, data, device)
    losses = [train_epoch(state, data, config)["train/loss"] for _ in range(config.epochs)]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    metrics = evaluate(state.model, data, config, CHEAP).metrics
    k, p = config.codebook_size, positions(config)
    assert 0 < metrics["codebook/usage"] <= 1 and metrics["codebook/dead_codes"] == round((1 - metrics["codebook/usage"]) * k)
    assert 1 <= metrics["codebook/perplexity"] <= k
    assert metrics["rate/nominal_bits"] == pytest.approx(p * math.log2(k))
    assert 0 < metrics["rate/effective_bits"] <= metrics["rate/nominal_bits"] + 1e-6
    assert 0 < metrics["probe/codes/linear_acc"] <= 1 and 0 < metrics["probe/latent/linear_acc"] <= 1


def test_the_paper_quantizer_is_the_hand_written_one_unchanged():
    """quantizer=plain builds what the VQ-VAE built before the key existed: the same module, drawing the same numbers."""
    config = TrialConfig(**SMALL)
    assert config.quantizer == "plain" and config == TrialConfig.from_dict({k: v for k, v in config.to_dict().items() if k != "quantizer"})
    torch.manual_seed(3)
    model = build_model(config, 1, 10)
    torch.manual_seed(3)
    encoder(1, config.code_dim, config.batch_norm), decoder(config.code_dim, 1, config.batch_norm)
    direct = VectorQuantizer(config.num_codes, config.code_dim, config.beta)
    assert type(model.quantizer) is VectorQuantizer
    assert model.quantizer.state_dict().keys() == direct.state_dict().keys()
    assert all(torch.equal(v, direct.state_dict()[k]) for k, v in model.quantizer.state_dict().items())
    # a config without the key keeps the id it had before the key existed: stored runs and resumes still match
    assert config.config_id != dataclasses.replace(config, quantizer="ema").config_id


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ({"model": "vae", "quantizer": "fsq"}, "only a VQ-VAE quantizes"),
        ({"quantizer": "ema", "ema": True}, "options of quantizer=plain"),
        ({"quantizer": "gumbel"}, "choose one of plain, ema, cosine, rotation, fsq, residual"),
    ],
)
def test_a_bad_quantizer_setting_names_the_problem(raw, problem):
    with pytest.raises(ConfigError, match=problem):
        TrialConfig.from_dict(raw)


def test_a_missing_library_is_named_with_the_install_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vector_quantize_pytorch" else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install 'vqbench\[quantizers\]'"):
        TrialConfig(quantizer="fsq")
    TrialConfig()  # the paper's quantizer needs no library


def test_the_quantizers_space_runs_every_arm_and_vaes_spanning_their_rates():
    from benchmark.space import SpaceOptions, load_space

    space = load_space("quantizers")
    (study,) = space.studies(SpaceOptions(seeds=2))
    configs = [TrialConfig.from_dict(c) for c in study.configs]
    assert len(configs) == 2 * 2 * 11 and {c.dataset for c in configs} == {"mnist", "CIFAR-10-images"}
    vq = [c for c in configs if c.model == "vqvae"]
    assert {c.quantizer for c in vq} == set(QUANTIZERS) and {(c.num_codes, c.code_dim, c.beta) for c in vq} == {(512, 64, 0.25)}
    rates = sorted({c.target_rate for c in configs if c.model == "vae"})
    assert rates == [0.0, *space.TARGET_RATES]
    # the ladder spans the plain quantizer's measured effective rate (about 72 bits) and FSQ's nominal one
    fsq = next(c for c in vq if c.quantizer == "fsq")
    assert min(space.TARGET_RATES) < 72 < max(space.TARGET_RATES) and max(space.TARGET_RATES) >= 16 * math.log2(fsq.codebook_size)
