"""The per-epoch probe: train split only, on a fixed subsample, when due, without changing training."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from benchmark.config import ConfigError, TrialConfig
from benchmark.data import load_dataset
from benchmark.evaluation.train_probe import LINEAR_ACC, SECONDS, SSIM, is_due, subsample, train_probe
from benchmark.train import init_state, train_epoch
from benchmark.trial import run_trial

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SMALL = {"dataset": "digits", "num_codes": 16, "code_dim": 8}


@pytest.fixture(scope="module")
def trained():
    """A VQ-VAE trained one epoch on digits, and its data."""
    data = load_dataset("digits")
    config = TrialConfig(model="vqvae", **SMALL)
    state = init_state(config, data, torch.device("cpu"))
    train_epoch(state, data, config)
    return state.model, data, config


def test_subsample_is_fixed_disjoint_and_keeps_five_to_two():
    fit, held = subsample(60_000, 0, torch.device("cpu"))
    assert (fit.numel(), held.numel()) == (5_000, 2_000)
    fit, held = subsample(1_347, 0, torch.device("cpu"))  # digits' train split
    assert (fit.numel(), held.numel()) == (962, 385)
    assert not set(fit.tolist()) & set(held.tolist())
    again = subsample(1_347, 0, torch.device("cpu"))
    assert torch.equal(again[0], fit) and torch.equal(again[1], held)
    assert not torch.equal(subsample(1_347, 1, torch.device("cpu"))[0], fit)


def test_is_due_every_n_epochs_and_after_the_last():
    config = TrialConfig(epochs=5, train_probe_every=2)
    assert [e for e in range(1, 6) if is_due(config, e)] == [2, 4, 5]
    assert all(is_due(TrialConfig(epochs=3), e) for e in (1, 2, 3))
    assert not any(is_due(TrialConfig(epochs=3, train_probe_every=0), e) for e in (1, 2, 3))
    with pytest.raises(ConfigError, match="train_probe_every"):
        TrialConfig(train_probe_every=-1)


def test_never_reads_the_test_split(trained):
    """Scrambled test images and labels, or none at all, leave it exactly as it was."""
    model, data, config = trained
    first = train_probe(model, data, config)
    assert 0.3 < first[LINEAR_ACC] <= 1 and 0 < first[SSIM] <= 1 and first[SECONDS] > 0  # chance: 0.1
    generator = torch.Generator().manual_seed(5)
    scrambled = dataclasses.replace(
        data,
        test_x=torch.randint(0, 256, data.test_x.shape, dtype=torch.uint8, generator=generator),
        test_y=data.test_y[torch.randperm(data.test_y.numel(), generator=generator)],
    )
    empty = dataclasses.replace(data, test_x=data.test_x[:0], test_y=data.test_y[:0])
    for other in (scrambled, empty):
        again = train_probe(model, other, config)
        assert (again[LINEAR_ACC], again[SSIM]) == (first[LINEAR_ACC], first[SSIM])


def test_a_trial_reports_it_when_due_and_trains_the_same(trained):
    """Epochs 2 and 3 of a 3-epoch trial probed every 2; the losses are those of a trial that never probes."""
    _, data, _ = trained
    config = TrialConfig(model="vae", epochs=3, train_probe_every=2, **SMALL)
    seen = {}
    result = run_trial(config, on_epoch=lambda state, metrics: seen.setdefault(state.epoch, dict(metrics)))
    assert [epoch for epoch, metrics in seen.items() if LINEAR_ACC in metrics and SSIM in metrics] == [2, 3]
    assert result.metrics[LINEAR_ACC] == seen[3][LINEAR_ACC] and "probe/latent/mlp_acc" in result.metrics
    silent = dataclasses.replace(config, train_probe_every=0)
    state = init_state(silent, data, torch.device("cpu"))
    losses = [train_epoch(state, data, silent)["train/loss"] for _ in range(3)]
    assert losses == [seen[epoch]["train/loss"] for epoch in (1, 2, 3)]
