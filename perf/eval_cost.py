"""Seconds of each end-of-trial evaluation piece, and its share of a 10-epoch trial's training, before and after.

    python -m perf.eval_cost                      # vqvae, paper config, real MNIST
    python -m perf.eval_cost --model vae

"After" is the current probe protocol (`benchmark.evaluation.probe_settings.PROTOCOL`); "before" is protocol 3 on the same
encoded features in the same run (`probes_before`: the same probes with its 2 x 2 MLP grid per trial), so the two
are measured on one machine under one load.

Trains the paper-config model for `--epochs` (its last epoch time, x `--trial-epochs`, is the
training a trial pays), then times the pieces `benchmark.evaluation.evaluate.evaluate` runs, one by one:
encoding the train and test splits, the probes on latents, on code indices (VQ-VAE) and on
raw pixels, the reconstruction metrics, and the t-SNE figure a sweep trial saves. The pixel
probes are computed once per machine (`benchmark.evaluation.pixel_probes`): the total is what every later
trial pays (hashing the dataset, reading the cached file), and the first trial's total, which
computes them, is printed beside it. Probes are trained models, so their cost does not depend
on how well the autoencoder was trained; encoding does not either.
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
from pathlib import Path

import torch

from benchmark.config import TrialConfig
from benchmark.data import load_dataset
from benchmark.evaluation.evaluate import represent_split
from benchmark.evaluation.figures import save_tsne
from benchmark.evaluation.pixel_probes import pixel_probes
from benchmark.evaluation.probe import probe_all
from benchmark.evaluation.probe_settings import REFERENCE_MLP_GRID, ProbeSettings
from benchmark.evaluation.reconstruction import reconstruction_metrics
from benchmark.train import init_state, pick_device, scale, to_device, train_epoch
from perf.measure import seconds, timed
from perf.record import Options, available_cores, write_record
from perf.workload import real_data_dir


def probes_before(train_x, train_y, test_x, test_y, classes: int, seed: int, num_codes: int | None = None) -> None:
    """Protocol 3's probes of one representation (its 2 x 2 MLP grid per trial), for their seconds. Its code-index MLP
    also weighted every (position, code) pair, which this cannot replay: on codes "before" understates protocol 3."""
    lrs, weight_decays = REFERENCE_MLP_GRID
    settings = dataclasses.replace(ProbeSettings(), mlp_lrs=lrs, mlp_weight_decays=weight_decays)
    probe_all(train_x, train_y, test_x, test_y, classes, seed, settings, num_codes)


def main(argv: list[str] | None = None) -> int:
    options = Options("eval_cost", __doc__)
    options.sized("--dataset", "mnist", "digits", "dataset")
    options.sized("--epochs", 1, 1, "epochs trained before evaluating; the last one's time is the epoch time")
    options.sized("--tsne-points", 1000, 100, "test latents in the t-SNE figure (a trial uses 1000)")
    options.sized("--threads", available_cores(), 1, "torch threads; the default is all cores")
    options.add_argument("--model", default="vqvae", choices=("vae", "vqvae"), help="model (default: vqvae)")
    options.add_argument("--trial-epochs", type=int, default=10, help="epochs of the trial the shares refer to (default: 10, the paper's)")
    options.add_argument(
        "--data-dir", default=real_data_dir(), help="data root in torchvision's layout (default: $VQBENCH_DATA_DIR or ../shared/data)"
    )
    args = options.parse(argv)
    torch.set_num_threads(args.threads)
    device = pick_device()
    config = TrialConfig.from_dict({"model": args.model, "dataset": args.dataset, "epochs": args.epochs, "num_codes": 512, "code_dim": 64})
    data = to_device(load_dataset(args.dataset, args.data_dir), device)
    state = init_state(config, data, device)
    for _ in range(args.epochs):
        epoch_s = seconds(lambda: train_epoch(state, data, config), device)
    model, seed, classes = state.model, config.seed, data.num_classes

    times: dict[str, float] = {}
    train, times["encode_train"] = timed(lambda: represent_split(model, data.train_x, data.train_y, config, decode=False), device)
    test, times["encode_test"] = timed(lambda: represent_split(model, data.test_x, data.test_y, config, decode=True), device)
    before = {
        "probe_latent": seconds(lambda: probes_before(train["latent"], data.train_y, test["latent"], data.test_y, classes, seed), device)
    }
    times["probe_latent"] = seconds(lambda: probe_all(train["latent"], data.train_y, test["latent"], data.test_y, classes, seed), device)
    if "codes" in train:
        before["probe_codes"] = seconds(
            lambda: probes_before(train["codes"], data.train_y, test["codes"], data.test_y, classes, seed, config.codebook_size), device
        )
        times["probe_codes"] = seconds(
            lambda: probe_all(train["codes"], data.train_y, test["codes"], data.test_y, classes, seed, num_codes=config.codebook_size),
            device,
        )
    pixels = data.train_x.flatten(1).float(), data.test_x.flatten(1).float()
    before_pixels_first_s = seconds(lambda: probes_before(pixels[0], data.train_y, pixels[1], data.test_y, classes, seed), device)
    with tempfile.TemporaryDirectory() as cache:  # empty: the first call computes, the second reads
        first_pixels_s = seconds(lambda: pixel_probes(data, seed, folder=Path(cache)), device)
        times["probe_pixels_cached"] = seconds(lambda: pixel_probes(data, seed, folder=Path(cache)), device)
    times["reconstruction"] = seconds(lambda: reconstruction_metrics(scale(data.test_x), test["recon"]), device)
    points = torch.randperm(data.test_x.shape[0], generator=torch.Generator().manual_seed(seed))[: args.tsne_points]
    with tempfile.TemporaryDirectory() as folder:
        latents, labels = test["latent"][points.to(device)].cpu(), data.plot_labels()[points.to(data.test_y.device)].cpu()
        times["tsne_figure"] = seconds(lambda: save_tsne(latents, labels, seed, "t-SNE", Path(folder) / "tsne.png"), device)

    training_s = epoch_s * args.trial_epochs
    total = sum(times.values())
    first_total = total - times["probe_pixels_cached"] + first_pixels_s
    before_total = total - sum(times[piece] for piece in before) + sum(before.values())  # the same cached pixel read
    figures = {
        "epoch_s": epoch_s,
        f"training_{args.trial_epochs}_epochs_s": training_s,
        "eval_total_s": total,
        "eval_total_share": total / training_s,
        "probe_pixels_first_s": first_pixels_s,
        "eval_total_first_s": first_total,
        "eval_total_first_share": first_total / training_s,
        "before/eval_total_s": before_total,
        "before/eval_total_share": before_total / training_s,
        "before/probe_pixels_first_s": before_pixels_first_s,
        **{f"before/{piece}_s": spent for piece, spent in before.items()},
    }
    print(
        f"{args.model} on {args.dataset} ({data.train_x.shape[0]} train, {data.test_x.shape[0]} test), {args.threads} thread(s), {device}"
    )
    print(f"epoch: {epoch_s:.1f} s; {args.trial_epochs}-epoch training: {training_s:.1f} s\n")
    print(f"{'piece':20} {'seconds':>8} {'of training':>12}")
    for piece, spent in times.items():
        figures[f"{piece}_s"] = spent
        figures[f"{piece}_share"] = spent / training_s
        print(f"{piece:20} {spent:8.2f} {spent / training_s:12.1%}")
    print(f"{'all evaluation':20} {total:8.2f} {total / training_s:12.1%}")
    for piece, spent in before.items():
        print(f"{piece + ' (before)':20} {spent:8.2f} {spent / training_s:12.1%}")
    print(f"{'all (before)':20} {before_total:8.2f} {before_total / training_s:12.1%}   (protocol 3's MLP grid, same features)")
    print(
        f"the first trial on a machine computes the pixel probes ({first_pixels_s:.2f} s): {first_total:.2f} s, {first_total / training_s:.1%}"
    )
    write_record(args, figures, str(device))
    return 0


if __name__ == "__main__":
    sys.exit(main())
