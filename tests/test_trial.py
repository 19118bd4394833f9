"""A trial end to end on the embedded digits: training, evaluation, reproducibility, resume, figures, CLI."""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmark.config import TrialConfig
from benchmark.data import Dataset, load_dataset
from benchmark.fault_injection import InjectedFault
from benchmark.train import TrialDiverged, init_state, train_epoch
from benchmark.trial import main, run_trial, save_figures

REPO = Path(__file__).resolve().parents[1]
MODELS = ("vae", "vqvae")
EPOCHS = 3
TIMING_KEYS = ("train/images_per_s", "train/epoch_s", "train_probe/seconds")
cpu_only = pytest.mark.skipif(torch.cuda.is_available(), reason="bit-identical reruns are promised on the CPU only")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def comparable(metrics: dict[str, float]) -> dict[str, float]:
    """Every metric but the timings."""
    return {k: v for k, v in metrics.items() if not k.startswith("time/") and k not in TIMING_KEYS}


def tiny_dataset(n: int = 48) -> Dataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 1, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.arange(n) % 10
    return Dataset("tiny", x, y, x[:16], y[:16], 10)


@pytest.fixture(scope="module")
def trials(tmp_path_factory, one_torch_thread):
    """One digits trial per model, with a deep copy of the training state after each epoch. Its own empty
    pixel-probe cache, so its pixel probes are computed here, on one thread, as a rerun's are: a cached
    file another test wrote under other threads differs in the last bits of the solver's gradient norm."""
    from benchmark.evaluation.pixel_probes import CACHE_ENV

    out = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(tmp_path_factory.mktemp("trials-pixel-probes")))
        for model in MODELS:
            checkpoints = {}

            def keep(state, metrics, checkpoints=checkpoints):
                assert math.isfinite(metrics["train/loss"])
                checkpoints[state.epoch] = copy.deepcopy(state.state_dict())

            config = TrialConfig(model=model, dataset="digits", epochs=EPOCHS)
            out[model] = (run_trial(config, on_epoch=keep), checkpoints)
    return out


@pytest.mark.parametrize("model", MODELS)
def test_digits_trial_learns_label_information(trials, model):
    result, checkpoints = trials[model]
    m = result.metrics
    assert result.device == "cpu" or torch.cuda.is_available()
    assert result.config == TrialConfig(model=model, dataset="digits", epochs=EPOCHS)
    for probe in ("mlp", "linear", "knn"):
        assert m[f"probe/latent/{probe}_acc"] > 0.5, (probe, m[f"probe/latent/{probe}_acc"])  # chance: 0.1
        assert m[f"probe/pixels/{probe}_acc"] > 0.5
    if model == "vqvae":
        assert m["probe/codes/linear_acc"] > 0.3 and m["probe/codes/mlp_acc"] > 0.3
        assert 0 < m["codebook/usage"] <= 1
        assert m["codebook/dead_codes"] == pytest.approx(512 * (1 - m["codebook/usage"]))
        assert 1 <= m["codebook/perplexity"] <= 512 * m["codebook/usage"] + 1e-3
        assert {"train/vq_loss", "train/perplexity"} <= set(m)
    else:
        assert "train/kl" in m and not any(k.startswith(("codebook/", "probe/codes/")) for k in m)
    # reconstruction metrics are finite and in range; a trained model beats a flat grey guess
    assert all(math.isfinite(v) for v in m.values())
    assert 0 < m["recon/mse"] < 1 and 0 < m["recon/ssim"] <= 1 and m["recon/psnr"] > 0
    test_pixels = load_dataset("digits").test_x.float() / 255
    assert m["recon/mse"] < (test_pixels - test_pixels.mean()).pow(2).mean().item()
    assert m["recon/psnr"] >= 10 * math.log10(1 / m["recon/mse"]) - 1e-4  # mean of logs >= log of mean (Jensen)
    assert m["train/loss"] > 0 and m["train/images_per_s"] > 0 and m["time/train_s"] > 0 and m["time/eval_s"] > 0
    # one callback per epoch, in order
    assert sorted(checkpoints) == list(range(1, EPOCHS + 1))
    # figure data
    ev = result.evaluation
    assert ev.originals.shape == ev.reconstructions.shape == (8, 1, 32, 32)
    assert ev.latents.shape == (450, 16 * 64) and ev.latent_labels.shape == (450,)


@cpu_only
@pytest.mark.parametrize("model", MODELS)
def test_same_config_and_seed_give_the_same_numbers(trials, model):
    first, _ = trials[model]
    again = run_trial(TrialConfig(model=model, dataset="digits", epochs=EPOCHS))
    assert comparable(again.metrics) == comparable(first.metrics)
    assert torch.equal(again.evaluation.reconstructions, first.evaluation.reconstructions)
    assert torch.equal(again.evaluation.latents, first.evaluation.latents)


def test_another_seed_gives_another_model_and_batch_order():
    data = tiny_dataset(n=64)
    states = [
        init_state(TrialConfig(model="vqvae", seed=seed, batch_size=64, num_codes=16, code_dim=8), data, torch.device("cpu"))
        for seed in (0, 0, 1)
    ]
    weights = [s.model.encoder[0].weight.detach().clone() for s in states]
    assert torch.equal(weights[0], weights[1]) and not torch.equal(weights[0], weights[2])
    losses = [
        train_epoch(s, data, TrialConfig(model="vqvae", seed=seed, batch_size=64, num_codes=16, code_dim=8))["train/loss"]
        for s, seed in zip(states, (0, 0, 1))
    ]
    assert losses[0] == losses[1] != losses[2]


@cpu_only
def test_resumed_vqvae_trial_matches_the_uninterrupted_one(trials):
    first, checkpoints = trials["vqvae"]
    calls = []
    resumed = run_trial(
        TrialConfig(model="vqvae", dataset="digits", epochs=EPOCHS),
        resume=copy.deepcopy(checkpoints[EPOCHS - 1]),
        on_epoch=lambda state, metrics: calls.append(state.epoch),
    )
    assert calls == [EPOCHS]  # only the missing epoch is trained
    assert comparable(resumed.metrics) == comparable(first.metrics)


def test_resumed_vae_trial_matches_the_uninterrupted_one(trials):
    first, checkpoints = trials["vae"]
    resumed = run_trial(TrialConfig(model="vae", dataset="digits", epochs=EPOCHS), resume=copy.deepcopy(checkpoints[EPOCHS - 1]))
    assert comparable(resumed.metrics) == comparable(first.metrics)


def test_fail_at_epoch_fails_once_after_its_checkpoint_and_a_retry_succeeds():
    config = TrialConfig(model="vqvae", dataset="digits", epochs=2, fail_at_epoch=1, num_codes=16, code_dim=8)
    checkpoints = {}
    with pytest.raises(InjectedFault, match="fail_at_epoch=1"):
        run_trial(config, on_epoch=lambda state, metrics: checkpoints.setdefault(state.epoch, copy.deepcopy(state.state_dict())))
    assert sorted(checkpoints) == [1]  # the failing epoch was checkpointed first
    resumed_epochs = []
    result = run_trial(config, resume=checkpoints[1], on_epoch=lambda state, metrics: resumed_epochs.append(state.epoch))
    assert resumed_epochs == [2]
    assert math.isfinite(result.metrics["recon/mse"])


@pytest.mark.parametrize("model", MODELS)
def test_nan_loss_stops_the_trial(model):
    config = TrialConfig(model=model, batch_size=16, num_codes=16, code_dim=8)
    data = tiny_dataset()
    state = init_state(config, data, torch.device("cpu"))
    with torch.no_grad():
        state.model.decoder[-1].bias.fill_(float("nan"))
    with pytest.raises(TrialDiverged, match="epoch 1"):
        train_epoch(state, data, config)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("model", MODELS)
def test_train_epoch_reports_its_terms_and_counts_epochs(model, precision):
    config = TrialConfig(model=model, batch_size=16, num_codes=16, code_dim=8, precision=precision)
    data = tiny_dataset()
    state = init_state(config, data, torch.device("cpu"))
    before = [p.detach().clone() for p in state.model.parameters()]
    metrics = train_epoch(state, data, config)
    assert state.epoch == 1
    terms = {"kl"} if model == "vae" else {"vq_loss", "perplexity"}
    assert set(metrics) == {f"train/{k}" for k in {"loss", "recon_loss", *terms}} | {"train/images_per_s", "train/epoch_s"}
    assert all(math.isfinite(v) for v in metrics.values())
    changed = [not torch.equal(b, p.detach()) for b, p in zip(before, state.model.parameters())]
    assert sum(changed) >= len(changed) - 1  # everything trains (an EMA codebook would be the exception)


def test_save_figures_writes_two_pngs(trials, tmp_path):
    from PIL import Image

    result, _ = trials["vqvae"]
    paths = save_figures(result, tmp_path / "figures")
    assert [p.name for p in paths] == ["reconstructions.png", "tsne.png"]
    for path in paths:
        assert path.is_file() and path.stat().st_size > 1000
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(paths[0]) as grid:
        # 8 originals over 8 reconstructions, each image drawn larger than its 32 px, with room for labels and a title
        assert grid.size[0] > 8 * 64 and grid.size[1] > 2 * 64 + 40
    with Image.open(paths[1]) as tsne:
        assert tsne.size[0] > 300 and tsne.size[1] > 300


def test_cli_prints_the_metrics_as_json():
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmark.trial",
            "--model",
            "vqvae",
            "--dataset",
            "digits",
            "--epochs",
            "1",
            "--num-codes",
            "32",
            "--code-dim",
            "16",
            "--seed",
            "3",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},  # see the one_torch_thread fixture
    )
    assert proc.returncode == 0, proc.stderr
    assert "epoch 1/1: loss " in proc.stderr and "perplexity" in proc.stderr  # progress goes to stderr, the JSON alone to stdout
    out = json.loads(proc.stdout)
    assert set(out) == {"config", "dataset", "device", "metrics"}
    assert out["dataset"]["name"] == out["config"]["dataset"] and len(out["dataset"]["hash"]) == 64  # the card, as the runs carry it
    assert TrialConfig.from_dict(out["config"]) == TrialConfig(model="vqvae", dataset="digits", epochs=1, num_codes=32, code_dim=16, seed=3)
    metrics = out["metrics"]
    for key in (
        "probe/latent/mlp_acc",
        "probe/codes/linear_acc",
        "probe/pixels/knn_acc",
        "recon/mse",
        "recon/ssim",
        "recon/psnr",
        "codebook/usage",
        "train/loss",
    ):
        assert isinstance(metrics[key], float) and math.isfinite(metrics[key]), key


def test_cli_rejects_bad_config_with_exit_code_2(capsys):
    assert main(["--dataset", "digits", "--epochs", "0"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error:") and "epochs" in captured.err and len(captured.err.strip().splitlines()) == 1
    assert main(["--model", "gan"]) == 2
    assert "model" in capsys.readouterr().err


def test_the_fault_hook_is_no_option_of_the_trial_cli():
    """`fail_at_epoch` is a test hook set in a space file, not something `python -m benchmark.trial --help` offers."""
    import argparse

    from benchmark.trial import add_config_arguments

    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    assert "--fail-at-epoch" not in parser.format_help() and "--kl-weight" in parser.format_help()
