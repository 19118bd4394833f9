"""Are the probes converged? Early-stopped probes against a 4x longer fixed schedule, per representation.

    python -m perf.probe_convergence                       # paper-config VAE and VQ-VAE, 10 epochs, real MNIST
    python -m perf.probe_convergence --tiny                # seconds, for tests: figures mean nothing

Trains each model for `--epochs`, encodes both splits, then probes every representation
(the VAE's posterior means, the VQ-VAE's quantized vectors and code indices, raw pixels)
three times with the MLP and the linear probe: with the default early-stopped schedule; with a
fixed schedule `--factor` times as long as the early-stopped run, last epoch kept ("fixed");
and with that long schedule keeping its best held-out epoch ("long best"). Early vs long best
says whether stopping missed a better epoch later on; fixed vs long best says how much a long
fixed schedule overfits. The seconds say what convergence costs. Only the train split (and its
held-out share) chooses anything.
"""
from __future__ import annotations

import dataclasses
import sys
import time

import torch

from benchmark.config import TrialConfig
from benchmark.data import load_dataset
from benchmark.evaluate import represent_split
from benchmark.probe import MLP_HIDDEN, ProbeSettings, accuracy, predict_scores, standardise, train_classifier
from benchmark.train import init_state, pick_device, to_device, train_epoch
from perf.record import Options, available_cores, write_record
from perf.workload import real_data_dir

PROBES = {"mlp": MLP_HIDDEN, "linear": None}


def probe_once(train_x, train_y, test_x, test_y, classes: int, hidden: int | None, seed: int, settings: ProbeSettings, num_codes: int | None):
    start = time.perf_counter()
    fitted = train_classifier(train_x, train_y, classes, hidden, seed, settings, num_codes)
    return accuracy(predict_scores(fitted.net, test_x), test_y), fitted.epochs_run, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    options = Options("probe_convergence", __doc__)
    options.sized("--dataset", "mnist", "digits", "dataset")
    options.sized("--epochs", 10, 1, "autoencoder training epochs (the paper's 10)")
    options.sized("--models", ("vae", "vqvae"), ("vqvae",), "models to train and probe")
    options.add_argument("--factor", type=int, default=4, help="the fixed schedule's length over the early-stopped run's (default: 4)")
    options.add_argument("--seed", type=int, default=0, help="trial and probe seed (default: 0)")
    options.add_argument("--threads", type=int, default=available_cores(), help="torch threads (default: all cores)")
    options.add_argument("--data-dir", default=real_data_dir(), help="data root in torchvision's layout (default: $VQBENCH_DATA_DIR or ../shared/data)")
    args = options.parse(argv)
    torch.set_num_threads(args.threads)
    device = pick_device()
    data = to_device(load_dataset(args.dataset, args.data_dir), device)
    early = ProbeSettings()
    representations = {}
    for model in args.models:
        config = TrialConfig.from_dict({"model": model, "dataset": args.dataset, "epochs": args.epochs, "seed": args.seed, "num_codes": 512, "code_dim": 64})
        state = init_state(config, data, device)
        for _ in range(args.epochs):
            train_epoch(state, data, config)
        train = represent_split(state.model, data.train_x, data.train_y, config, decode=False)
        test = represent_split(state.model, data.test_x, data.test_y, config, decode=False)
        representations[f"{model}_latent"] = (*standardise(train["latent"], test["latent"]), None)
        if "codes" in train:
            representations[f"{model}_codes"] = (train["codes"], test["codes"], config.num_codes)
    representations["pixels"] = (*standardise(data.train_x.flatten(1).float(), data.test_x.flatten(1).float()), None)

    figures: dict[str, float] = {}
    print(f"{args.dataset}, models trained {args.epochs} epochs, seed {args.seed}, {args.threads} thread(s), {device}")
    print(f"{'representation':16} {'probe':7} {'early':>6} {'epochs':>6} {'s':>6} {'fixed':>6} {'s':>6} {'long best':>9} {'early-fixed':>11} {'early-long best':>15}")
    for name, (train_x, test_x, num_codes) in representations.items():
        for probe, hidden in PROBES.items():
            acc, ran, spent = probe_once(train_x, data.train_y, test_x, data.test_y, data.num_classes, hidden, args.seed, early, num_codes)
            fixed = dataclasses.replace(early, max_epochs=args.factor * ran, patience=0)
            long_acc, long_ran, long_spent = probe_once(train_x, data.train_y, test_x, data.test_y, data.num_classes, hidden, args.seed, fixed, num_codes)
            long_best = dataclasses.replace(early, max_epochs=args.factor * ran, patience=args.factor * ran)
            best_acc, _, _ = probe_once(train_x, data.train_y, test_x, data.test_y, data.num_classes, hidden, args.seed, long_best, num_codes)
            key = f"{name}/{probe}"
            figures.update({f"{key}/early_acc": acc, f"{key}/early_epochs": float(ran), f"{key}/early_s": spent,
                            f"{key}/fixed_acc": long_acc, f"{key}/fixed_epochs": float(long_ran), f"{key}/fixed_s": long_spent,
                            f"{key}/long_best_acc": best_acc, f"{key}/diff_points": 100 * (acc - long_acc),
                            f"{key}/diff_long_best_points": 100 * (acc - best_acc)})
            print(f"{name:16} {probe:7} {100 * acc:6.2f} {ran:6d} {spent:6.1f} {100 * long_acc:6.2f} {long_spent:6.1f} {100 * best_acc:9.2f} "
                  f"{100 * (acc - long_acc):+11.2f} {100 * (acc - best_acc):+15.2f}")
    for suffix, what in (("diff_points", "early - fixed"), ("diff_long_best_points", "early - long best")):
        worst = max(abs(v) for k, v in figures.items() if k.endswith(f"/{suffix}"))
        figures[f"worst_abs_{suffix}"] = worst
        print(f"largest |{what}|: {worst:.2f} points")
    write_record(args, figures, str(device))
    return 0


if __name__ == "__main__":
    sys.exit(main())
