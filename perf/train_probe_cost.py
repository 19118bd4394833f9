"""Seconds of the per-epoch probe (benchmark/evaluation/train_probe.py) against one training epoch, on MNIST-sized tensors.

    python -m perf.train_probe_cost               # both models, 60,000 synthetic images, 1 thread: ~3 min
    python -m perf.train_probe_cost --threads 2

Synthetic 32x32 uint8 images (as `perf.workload`), labelled by a fixed random linear teacher on
the pixels so that the probe has something to learn and trains as long as on real data (random
labels would stop it after its first plateaus). The epoch is extrapolated from `--batches`
training batches to the whole train split; the probe's cost does not depend on the split's size
beyond its fixed 5,000 + 2,000 subsample. Repeats are interleaved (epoch slice, probe, ...).
The share decides the default of `train_probe_every`: every epoch while it stays under 5%.
"""

from __future__ import annotations

import dataclasses
import sys

import torch

from benchmark.evaluation.train_probe import train_probe
from benchmark.train import init_state, pick_device, to_device, train_epoch
from perf.measure import interleaved, median
from perf.record import Options, write_record
from perf.workload import paper_config, synthetic_dataset


def teacher_labelled(images: int) -> torch.Tensor:
    """Labels 0..9 from a fixed random linear map of the pixels: learnable, unlike random ones."""
    data = synthetic_dataset(images)
    weights = torch.randn(32 * 32, 10, generator=torch.Generator().manual_seed(1))
    pixels = data.train_x.flatten(1).float()
    return dataclasses.replace(data, train_y=((pixels - pixels.mean(0)) @ weights).argmax(1))


def main(argv: list[str] | None = None) -> int:
    options = Options("train_probe_cost", __doc__)
    options.sized("--train-images", 60_000, 7_000, "train split size (MNIST: 60,000)")
    options.sized("--batches", 60, 2, "training batches timed per repeat; the epoch is extrapolated from them")
    options.sized("--repeats", 3, 1, "interleaved repeats")
    options.sized("--models", ("vae", "vqvae"), ("vqvae",), "models")
    options.add_argument("--threads", type=int, default=1, help="torch threads (default: 1, what a sweep trial gets)")
    args = options.parse(argv)
    torch.set_num_threads(args.threads)
    device = pick_device()
    data = to_device(teacher_labelled(args.train_images), device)
    head = args.batches * 64
    part = dataclasses.replace(data, train_x=data.train_x[:head], train_y=data.train_y[:head])
    figures = {}
    print(f"{args.train_images} synthetic train images, {args.threads} thread(s), {device}\n")
    print(f"{'model':6} {'epoch s':>8} {'probe s':>8} {'share':>7}")
    for model in args.models:
        config = paper_config(model)
        state = init_state(config, data, device)
        times = interleaved(
            {"part": lambda: train_epoch(state, part, config), "probe": lambda: train_probe(state.model, data, config)},
            args.repeats,
            device,
        )
        epoch_s = median(times["part"]) * args.train_images / head
        probe_s = median(times["probe"])
        figures.update({f"{model}_epoch_s": epoch_s, f"{model}_probe_s": probe_s, f"{model}_share": probe_s / epoch_s})
        print(f"{model:6} {epoch_s:8.1f} {probe_s:8.2f} {probe_s / epoch_s:7.1%}")
    write_record(args, figures, str(device))
    return 0


if __name__ == "__main__":
    sys.exit(main())
