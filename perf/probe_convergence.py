"""Are the probes converged? Early-stopped probes against a 4x longer fixed schedule, per representation.

    python -m perf.probe_convergence                       # paper-config VAE and VQ-VAE, 10 epochs, real MNIST
    python -m perf.probe_convergence --models-from vae.pt vqvae.pt   # probe trained models (a trial's model.pt)
    python -m perf.probe_convergence --tiny                # seconds, for tests: figures mean nothing

Trains each model for `--epochs` (or reads trained ones), encodes both splits, then probes every
representation (the VAE's posterior means, the VQ-VAE's quantized vectors and code indices, raw
pixels) twice with the MLP and the linear probe: with the default schedule (learning-rate cuts at
held-out plateaus, stop at the plateau after the last cut, best held-out epoch kept), and with a
fixed cosine schedule `--factor` times as long as the default run, last epoch kept. Their
difference says whether stopping missed accuracy a long schedule finds; the seconds say what
convergence costs. Only the train split (and its held-out share) chooses anything.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Iterator

import torch
from torch import nn

from benchmark.config import TrialConfig
from benchmark.data import load_dataset
from benchmark.evaluate import represent_split
from benchmark.probe import MLP_HIDDEN, ProbeSettings, accuracy, predict_scores, standardise, train_classifier
from benchmark.saved_model import read_model
from benchmark.train import init_state, pick_device, to_device, train_epoch
from perf.record import Options, available_cores, write_record
from perf.workload import real_data_dir

PROBES = {"mlp": MLP_HIDDEN, "linear": None}


def probe_once(train_x, train_y, test_x, test_y, classes: int, hidden: int | None, seed: int, settings: ProbeSettings, num_codes: int | None):
    start = time.perf_counter()
    fitted = train_classifier(train_x, train_y, classes, hidden, seed, settings, num_codes)
    return accuracy(predict_scores(fitted.net, test_x), test_y), fitted.epochs_run, time.perf_counter() - start


def trained_models(args, saved: list[tuple[nn.Module, TrialConfig]], data, device: torch.device) -> Iterator[tuple[TrialConfig, nn.Module]]:
    """The models to probe: those read from --models-from, or else --models trained here for --epochs."""
    for model, config in saved:
        yield config, model
    for name in () if saved else args.models:
        config = TrialConfig.from_dict({"model": name, "dataset": args.dataset, "epochs": args.epochs, "seed": args.seed, "num_codes": 512, "code_dim": 64})
        state = init_state(config, data, device)
        for _ in range(args.epochs):
            train_epoch(state, data, config)
        yield config, state.model


def main(argv: list[str] | None = None) -> int:
    options = Options("probe_convergence", __doc__)
    options.sized("--dataset", "mnist", "digits", "dataset")
    options.sized("--epochs", 10, 1, "autoencoder training epochs (the paper's 10)")
    options.sized("--models", ("vae", "vqvae"), ("vqvae",), "models to train and probe")
    options.add_argument("--factor", type=int, default=4, help="the fixed schedule's length over the early-stopped run's (default: 4)")
    options.add_argument("--seed", type=int, default=0, help="trial and probe seed (default: 0)")
    options.add_argument("--threads", type=int, default=available_cores(), help="torch threads (default: all cores)")
    options.add_argument("--models-from", nargs="+", metavar="MODEL_PT", help="probe these trained models (a trial's model.pt) instead of training --models")
    options.add_argument("--data-dir", default=real_data_dir(), help="data root in torchvision's layout (default: $VQBENCH_DATA_DIR or ../shared/data)")
    args = options.parse(argv)
    torch.set_num_threads(args.threads)
    device = pick_device()
    saved = [read_model(path, device) for path in args.models_from or ()]
    for path, (_, config) in zip(args.models_from or (), saved):
        if config.dataset != args.dataset:
            options.error(f"{path} was trained on {config.dataset}, not --dataset {args.dataset}: pass --dataset {config.dataset}")
    data = to_device(load_dataset(args.dataset, args.data_dir), device)
    early = ProbeSettings()
    representations = {}
    for config, model in trained_models(args, saved, data, device):
        train = represent_split(model, data.train_x, data.train_y, config, decode=False)
        test = represent_split(model, data.test_x, data.test_y, config, decode=False)
        representations[f"{config.model}_latent"] = (*standardise(train["latent"], test["latent"]), None)
        if "codes" in train:
            representations[f"{config.model}_codes"] = (train["codes"], test["codes"], config.num_codes)
    representations["pixels"] = (*standardise(data.train_x.flatten(1).float(), data.test_x.flatten(1).float()), None)

    figures: dict[str, float] = {}
    print(f"{args.dataset}, models trained {config.epochs} epochs, seed {args.seed}, {args.threads} thread(s), {device}")
    print(f"{'representation':16} {'probe':7} {'early':>6} {'epochs':>6} {'s':>6} {'fixed':>6} {'epochs':>6} {'s':>6} {'early-fixed':>11}")
    for name, (train_x, test_x, num_codes) in representations.items():
        for probe, hidden in PROBES.items():
            acc, ran, spent = probe_once(train_x, data.train_y, test_x, data.test_y, data.num_classes, hidden, args.seed, early, num_codes)
            fixed = dataclasses.replace(early, max_epochs=args.factor * ran, patience=0)
            long_acc, long_ran, long_spent = probe_once(train_x, data.train_y, test_x, data.test_y, data.num_classes, hidden, args.seed, fixed, num_codes)
            key = f"{name}/{probe}"
            figures.update({f"{key}/early_acc": acc, f"{key}/early_epochs": float(ran), f"{key}/early_s": spent,
                            f"{key}/fixed_acc": long_acc, f"{key}/fixed_epochs": float(long_ran), f"{key}/fixed_s": long_spent,
                            f"{key}/diff_points": 100 * (acc - long_acc)})
            print(f"{name:16} {probe:7} {100 * acc:6.2f} {ran:6d} {spent:6.1f} {100 * long_acc:6.2f} {long_ran:6d} {long_spent:6.1f} {100 * (acc - long_acc):+11.2f}")
    figures["worst_abs_diff_points"] = max(abs(v) for k, v in figures.items() if k.endswith("/diff_points"))
    print(f"largest |early - fixed|: {figures['worst_abs_diff_points']:.2f} points")
    write_record(args, figures, str(device))
    return 0


if __name__ == "__main__":
    sys.exit(main())
