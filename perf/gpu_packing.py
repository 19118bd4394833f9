"""Aggregate training images/s of 1, 2, 4, 8 paper-config trials sharing one GPU.

    python -m perf.gpu_packing                    # on a machine with a GPU: ~3 min
    python -m perf.gpu_packing --trials 1,2,4,8,16 --seconds 60

Is `--gpus-per-trial 0.25` (four trials per GPU) worth it? Each trial is its own process, as
Ray runs them, training `benchmark.train.train_epoch` in bf16 on synthetic MNIST-sized data held
on the GPU. Every process warms up, waits at a barrier, then trains whole epochs for `--seconds`
and reports its images/s; the aggregate is their sum. Without a GPU it says so and exits 0
(`--device cpu` runs the same packing on CPU cores, to test the script itself).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmark.train import init_state, to_device, train_epoch
from perf.measure import sync
from perf.record import REPO, Options, available_cores, write_record
from perf.workload import SHAPES, paper_config, synthetic_dataset


def worker(args) -> int:
    """One packed trial: warm up, say ready, wait for go, train for the window, print its rate."""
    device = torch.device(args.device)
    data = to_device(synthetic_dataset(args.images, args.shape), device)
    config = paper_config(args.model, args.shape, precision=args.precision)
    state = init_state(config, data, device)
    train_epoch(state, data, config)
    sync(device)
    print("ready", flush=True)
    sys.stdin.readline()
    images, start = 0, time.perf_counter()
    while True:
        train_epoch(state, data, config)
        sync(device)
        images += data.train_x.shape[0]
        elapsed = time.perf_counter() - start
        if elapsed >= args.seconds:
            break
    report = {"images": images, "seconds": elapsed}
    if device.type == "cuda":
        report["max_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    print(json.dumps(report), flush=True)
    return 0


def worker_command(args) -> list[str]:
    return [
        sys.executable,
        "-m",
        "perf.gpu_packing",
        "--worker",
        "--device",
        args.device,
        "--seconds",
        str(args.seconds),
        "--images",
        str(args.images),
        "--model",
        args.model,
        "--shape",
        args.shape,
        "--precision",
        args.precision,
        "--trials",
        "1",
    ]


def run_packed(args, n: int, folder: Path) -> list[dict[str, float]]:
    """n worker processes released together; what each reports."""
    threads = max(1, available_cores() // n)  # the CPU side of each process; the GPU is what is shared
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    logs = [folder / f"worker-{n}-{i}.log" for i in range(n)]
    processes = [
        subprocess.Popen(
            worker_command(args), cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(log, "w"), text=True
        )
        for log in logs
    ]

    def fail(i: int) -> RuntimeError:
        for p in processes:
            p.kill()
        return RuntimeError(f"packed trial {i} of {n} failed:\n{logs[i].read_text()[-3000:]}")

    for i, p in enumerate(processes):
        if p.stdout.readline().strip() != "ready":
            raise fail(i)
    for p in processes:
        p.stdin.write("go\n")
        p.stdin.flush()
    reports = []
    for i, p in enumerate(processes):
        line = p.stdout.readline()
        if p.wait() != 0 or not line.startswith("{"):
            raise fail(i)
        reports.append(json.loads(line))
    return reports


def main(argv: list[str] | None = None) -> int:
    options = Options("gpu_packing", __doc__)
    options.sized("--trials", (1, 2, 4, 8), (1, 2), "numbers of trials packed on the GPU at once")
    options.sized("--seconds", 30.0, 1.0, "timed window each packed trial trains for, in whole epochs")
    options.sized("--images", 6400, 128, "synthetic training images per trial (one epoch), held on the device")
    options.add_argument("--model", default="vqvae", choices=("vae", "vqvae"), help="model (default: vqvae)")
    options.add_argument("--shape", default="mnist", choices=tuple(SHAPES), help="synthetic image shape (default: mnist)")
    options.add_argument("--precision", default="bf16", choices=("fp32", "bf16"), help="training precision (default: bf16)")
    options.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="cuda; cpu only tests the script (default: cuda)")
    options.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = options.parse(argv)
    if args.worker:
        return worker(args)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no GPU present (torch.cuda.is_available() is False): GPU packing not measured, no figures written")
        return 0
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.trials:
            reports = run_packed(args, n, Path(tmp))
            rates = [r["images"] / r["seconds"] for r in reports]
            figures[f"{n}_trials/aggregate_img_s"] = sum(rates)
            figures[f"{n}_trials/per_trial_img_s"] = sum(rates) / n
            if args.device == "cuda":
                figures[f"{n}_trials/max_memory_mib"] = max(r["max_memory_mib"] for r in reports)
    base = args.trials[0]
    for n in args.trials:
        figures[f"{n}_trials/vs_{base}_trials"] = figures[f"{n}_trials/aggregate_img_s"] / figures[f"{base}_trials/aggregate_img_s"]
    device = f"{args.device}:0" if args.device == "cuda" else "cpu"
    print(
        f"{args.model} ({args.shape}, {args.precision}) trials packed on {torch.cuda.get_device_name() if args.device == 'cuda' else 'the CPU'}"
    )
    print(f"{'trials':>6} {'aggregate img/s':>16} {'per trial':>10} {f'vs {base}':>7} {'max MiB':>8}")
    for n in args.trials:
        k = f"{n}_trials"
        memory = f"{figures[k + '/max_memory_mib']:8.0f}" if args.device == "cuda" else f"{'-':>8}"
        print(
            f"{n:6d} {figures[k + '/aggregate_img_s']:16.0f} {figures[k + '/per_trial_img_s']:10.0f} {figures[f'{k}/vs_{base}_trials']:7.2f} {memory}"
        )
    write_record(args, figures, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
