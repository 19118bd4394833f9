"""Training throughput (images/s) of the project's loop against the usual published VAE loop.

    python -m perf.train_throughput                 # both models, MNIST- and CIFAR-sized, a few minutes
    python -m perf.train_throughput --threads 1     # one core, as a sweep trial with --cpus-per-trial 1

Project: `benchmark.train.train_epoch` as trials run it (device-resident uint8, per-batch
scaling, channels-last), fp32 and bf16 autocast. Reference: a per-sample float `Dataset`,
a shuffling `DataLoader` (num_workers=0), `.to(device)` per batch, fp32, contiguous memory,
`loss.item()` per batch, plain Adam. Same model, batch 64, same synthetic images.
The limit: FLOPs per training image (FlopCounterMode, one forward+backward) against the
measured fp32 matmul rate on the same threads.
"""

from __future__ import annotations

import dataclasses
import sys

import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from benchmark.config import TrialConfig
from benchmark.data import Dataset
from benchmark.models import build_model
from benchmark.train import init_state, pick_device, scale, seed_everything, to_device, train_epoch
from perf.measure import interleaved, matmul_gflops, median, train_flops_per_image
from perf.record import Options, available_cores, write_record
from perf.workload import paper_config, synthetic_dataset

VARIANTS = ("reference", "fp32", "bf16")


class PerSampleImages(TorchDataset):
    """How most published code feeds a VAE: one float image per `__getitem__`."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index].float() / 255.0, self.labels[index]


def reference_epoch(config: TrialConfig, data: Dataset, device: torch.device):
    """The naive loop as a callable of one epoch; its data stays on the host, as a DataLoader's does."""
    seed_everything(config.seed)
    model = build_model(config, data.channels, data.num_classes).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    loader = DataLoader(PerSampleImages(data.train_x.cpu(), data.train_y.cpu()), batch_size=config.batch_size, shuffle=True, num_workers=0)

    def epoch() -> float:
        model.train()
        total = 0.0
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            loss = model(x, y).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item()
        return total

    return epoch


def project_epoch(config: TrialConfig, data: Dataset, device: torch.device):
    """`train_epoch` exactly as a trial calls it, on the device-resident uint8 split."""
    data = to_device(data, device)
    state = init_state(config, data, device)
    return lambda: train_epoch(state, data, config)


def flops_per_image(config: TrialConfig, data: Dataset, device: torch.device) -> float:
    model = build_model(config, data.channels, data.num_classes).to(device)
    x = scale(data.train_x[: config.batch_size].to(device))
    return train_flops_per_image(model, x, data.train_y[: config.batch_size].to(device))


def measure(model: str, shape: str, args, device: torch.device, gflops: float) -> dict[str, float]:
    data = synthetic_dataset(args.images, shape)
    warm = dataclasses.replace(data, train_x=data.train_x[: args.warmup_images], train_y=data.train_y[: args.warmup_images])
    configs = {v: paper_config(model, shape, batch_size=args.batch_size, precision="fp32" if v == "reference" else v) for v in VARIANTS}
    loops = {v: reference_epoch if v == "reference" else project_epoch for v in VARIANTS}
    for variant, loop in loops.items():  # kernel choices and allocator caches are per process, keyed by shape
        loop(configs[variant], warm, device)()
    times = interleaved({v: loop(configs[v], data, device) for v, loop in loops.items()}, args.repeats, device, warmup=0)
    flop = flops_per_image(configs["fp32"], data, device)
    limit = gflops * 1e9 / flop
    key = f"{model}/{shape}"
    figures = {f"{key}/flop_per_image": flop, f"{key}/limit_img_s": limit}
    for variant in VARIANTS:
        rate = args.images / median(times[variant])
        figures[f"{key}/{variant}_img_s"] = rate
        figures[f"{key}/{variant}_of_limit"] = rate / limit
    for variant in VARIANTS[1:]:
        figures[f"{key}/{variant}_vs_reference"] = figures[f"{key}/{variant}_img_s"] / figures[f"{key}/reference_img_s"]
    return figures


def print_table(figures: dict[str, float], models: tuple[str, ...], shapes: tuple[str, ...]) -> None:
    print(f"{'model':6} {'data':6} {'MFLOP/img':>9} {'limit img/s':>11}  {'loop':9} {'img/s':>8} {'x ref':>6} {'of limit':>8}")
    for model in models:
        for shape in shapes:
            key = f"{model}/{shape}"
            for i, variant in enumerate(VARIANTS):
                head = (
                    f"{model:6} {shape:6} {figures[key + '/flop_per_image'] / 1e6:9.1f} {figures[key + '/limit_img_s']:11.0f}"
                    if i == 0
                    else " " * 35
                )
                ratio = figures.get(f"{key}/{variant}_vs_reference", 1.0)
                print(
                    f"{head}  {variant:9} {figures[f'{key}/{variant}_img_s']:8.0f} {ratio:6.2f} {figures[f'{key}/{variant}_of_limit']:8.1%}"
                )


def main(argv: list[str] | None = None) -> int:
    options = Options("train_throughput", __doc__)
    options.sized("--models", ("vae", "vqvae"), ("vae", "vqvae"), "models to time")
    options.sized("--shapes", ("mnist", "cifar"), ("mnist", "cifar"), "synthetic image shapes: mnist (1x32x32), cifar (3x32x32)")
    options.sized("--images", 6400, 64, "synthetic training images per timed epoch")
    options.sized("--warmup-images", 640, 64, "images of the untimed warm-up epoch of each loop")
    options.sized("--repeats", 3, 1, "timed epochs per loop, interleaved; the median is reported")
    options.sized("--batch-size", 64, 64, "training batch size (paper: 64)")
    options.sized("--matmul-size", 2048, 256, "side of the square fp32 matmul that measures the FLOP rate")
    options.sized("--threads", available_cores(), 1, "torch threads; the default is all cores")
    args = options.parse(argv)
    torch.set_num_threads(args.threads)
    device = pick_device()
    gflops = matmul_gflops(device, args.matmul_size)
    print(f"fp32 matmul {args.matmul_size}^3: {gflops:.1f} GFLOP/s on {device} with {args.threads} thread(s)")
    figures = {"matmul_gflops": gflops}
    for model in args.models:
        for shape in args.shapes:
            figures.update(measure(model, shape, args, device, gflops))
    print_table(figures, args.models, args.shapes)
    write_record(args, figures, str(device))
    return 0


if __name__ == "__main__":
    sys.exit(main())
