"""One trial end to end: data -> model -> train -> evaluate.

    python -m benchmark.trial --model vqvae --dataset digits --epochs 5

prints one JSON object with every metric. The Ray Tune trainable (`benchmark.sweep.trainable`)
runs the same `run_trial`, adding checkpoints and MLflow logging through `on_epoch`.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
import time
from pathlib import Path
from typing import Callable

from torch import nn

from benchmark import fault_injection
from benchmark.config import PAPER_TRAINING, PAPER_VQ, TEST_HOOKS, ConfigError, TrialConfig, dataset_label, normalise_dataset
from benchmark.data import DatasetCard, load_dataset
from benchmark.data_files import DATA_DIR_ENV, DEFAULT_DATA_DIR, DataError
from benchmark.evaluation.evaluate import Evaluation, evaluate
from benchmark.evaluation.figures import save_reconstruction_grid, save_tsne
from benchmark.evaluation.train_probe import LINEAR_ACC, SSIM, is_due, train_probe
from benchmark.outputs import folder_problem
from benchmark.train import TrainState, TrialDiverged, init_state, pick_device, to_device, train_epoch

EpochCallback = Callable[[TrainState, dict[str, float]], None]

HELP = {
    "model": "vae (continuous Gaussian latent) or vqvae (discrete codes)",
    "dataset": "digits (embedded), mnist, fashion_mnist, cifar10, cifar100, or an image folder: its name inside --data-dir "
    "(e.g. CIFAR-10-images) or its path",
    "seed": "seeds torch, numpy, Python and the batch order",
    "epochs": f"training epochs (paper: {PAPER_TRAINING['epochs']})",
    "batch_size": f"training batch size (paper: {PAPER_TRAINING['batch_size']})",
    "lr": f"Adam learning rate (paper: {PAPER_TRAINING['lr']:g})",
    "num_codes": f"K, codebook size (VQ-VAE; paper: {PAPER_VQ['num_codes']})",
    "code_dim": f"D, latent channels per position (paper: {PAPER_VQ['code_dim']})",
    "beta": f"commitment cost (VQ-VAE; paper: {PAPER_VQ['beta']:g})",
    "quantizer": "the VQ-VAE's quantizer: plain (the paper's), or from vector-quantize-pytorch: ema, cosine, rotation, fsq "
    "(levels nearest K), residual",
    "kl_weight": "KL weight on the per-pixel scale (VAE; the paper does not state it)",
    "target_rate": "bits per image a rate-matched VAE holds its KL at, in place of the KL weight (VAE; 0 = off)",
    "capacity_weight": "gamma of a rate-matched VAE's recon + gamma * |KL - target| (per-pixel scale)",
    "batch_norm": "BatchNorm in encoder and decoder (the paper's setting for complex colour images)",
    "label_embedding": "none, or add: the paper's label embedding, which leaks the label into the latent",
    "ema": "EMA codebook updates instead of the codebook loss (quantizer plain)",
    "ema_decay": "decay of the EMA codebook (quantizer plain)",
    "restart_dead_codes": "re-seed unused codes from encoder outputs (quantizer plain)",
    "precision": "fp32 or bf16 (autocast)",
    "train_probe_every": "the per-epoch linear probe and SSIM on held-out train images every N epochs and after the last (0 = never)",
}


@dataclasses.dataclass
class TrialResult:
    config: TrialConfig
    metrics: dict[str, float]
    evaluation: Evaluation
    device: str
    model: nn.Module  # trained, as evaluated
    card: DatasetCard  # the data it was trained and evaluated on


def run_trial(
    config: TrialConfig,
    data_dir: str | None = None,
    download: bool = False,
    resume: dict | None = None,
    on_epoch: EpochCallback | None = None,
) -> TrialResult:
    device = pick_device()
    loaded = load_dataset(config.dataset, data_dir, download)
    data = to_device(loaded, device)
    state = init_state(config, data, device)
    if resume is not None:
        state.load_state_dict(resume)
    train_start = time.perf_counter()
    epoch_metrics: dict[str, float] = {}
    while state.epoch < config.epochs:
        epoch_metrics = train_epoch(state, data, config)
        if is_due(config, state.epoch):
            epoch_metrics.update(train_probe(state.model, data, config))
        if on_epoch is not None:
            on_epoch(state, epoch_metrics)
        fault_injection.after_epoch(config, state.epoch, resumed=resume is not None)  # a test hook; never without fail_at_epoch
    train_s = time.perf_counter() - train_start
    eval_start = time.perf_counter()
    evaluation = evaluate(state.model, data, config)
    metrics = {**epoch_metrics, **evaluation.metrics, "time/train_s": train_s, "time/eval_s": time.perf_counter() - eval_start}
    return TrialResult(config, metrics, evaluation, str(device), state.model, loaded.card)


def save_figures(result: TrialResult, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    c, ev = result.config, result.evaluation
    title = f"{c.model} on {dataset_label(c.dataset)}, test latents" + (f" (K={c.codebook_size})" if c.model == "vqvae" else "")
    return [
        save_reconstruction_grid(ev.originals, ev.reconstructions, c.name, folder / "reconstructions.png"),
        save_tsne(ev.latents, ev.latent_labels, c.seed, title, folder / "tsne.png", ev.label_names),
    ]


def print_epoch(config: TrialConfig, state: TrainState, metrics: dict[str, float]) -> None:
    """A person running one trial sees it move; stdout stays the JSON alone."""
    extra = f", perplexity {metrics['train/perplexity']:.1f}" if "train/perplexity" in metrics else ""
    if LINEAR_ACC in metrics:
        extra += f", train probe {metrics[LINEAR_ACC]:.3f}, SSIM {metrics[SSIM]:.3f}"
    then = "; evaluating (probes, reconstruction, codebook)" if state.epoch == config.epochs else ""
    print(
        f"epoch {state.epoch}/{config.epochs}: loss {metrics['train/loss']:.4f}, recon {metrics['train/recon_loss']:.4f}"
        f"{extra}, {metrics['train/epoch_s']:.1f} s{then}",
        file=sys.stderr,
        flush=True,
    )


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = TrialConfig()
    for field in dataclasses.fields(TrialConfig):
        if field.name in TEST_HOOKS:  # not an option: the reliability tests set it in a space file
            continue
        default = "on except for digits, mnist and fashion_mnist" if field.name == "batch_norm" else getattr(defaults, field.name)
        parser.add_argument(
            f"--{field.name.replace('_', '-')}", dest=field.name, default=None, help=f"{HELP[field.name]} (default: {default})"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmark.trial", description="Train and evaluate one VAE or VQ-VAE; print every metric as JSON."
    )
    add_config_arguments(parser)
    parser.add_argument(
        "--data-dir", default=None, help=f"data root in torchvision's layout (default: ${DATA_DIR_ENV} or {DEFAULT_DATA_DIR})"
    )
    parser.add_argument("--download", action="store_true", help="let torchvision fetch a missing dataset (needs internet)")
    parser.add_argument("--figures", type=Path, default=None, help="folder for reconstructions.png and tsne.png (default: none)")
    args = parser.parse_args(argv)
    raw = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrialConfig) if getattr(args, f.name, None) is not None}
    if "dataset" in raw:
        raw["dataset"] = normalise_dataset(raw["dataset"])
    try:
        if args.figures and (problem := folder_problem(args.figures)):
            raise ConfigError(f"--figures {args.figures}: {problem}; pass a folder that can be written")
        config = TrialConfig.from_dict(raw)
        result = run_trial(config, args.data_dir, args.download, on_epoch=functools.partial(print_epoch, config))
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except TrialDiverged as err:
        print(f"error: the trial diverged: {err}", file=sys.stderr)
        return 1
    if args.figures:
        save_figures(result, args.figures)
    card = {key.removeprefix("dataset."): value for key, value in result.card.tags().items()}
    print(json.dumps({"config": config.to_dict(), "dataset": card, "device": result.device, "metrics": result.metrics}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
