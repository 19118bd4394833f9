"""Paper-config trials per hour, fp32 and bf16: one trial on all cores, or one single-thread trial per core at once?

    python -m perf.trials_per_hour                # MNIST, 1 epoch per measured trial: ~10 min on 2 cores

Each trial is a fresh `python -m benchmark.trial ... --precision P --figures DIR` process, as a
sweep trial is (imports, data, training, evaluation, figures; no Ray, no MLflow), with its torch
threads set through OMP_NUM_THREADS. Its time is extrapolated to `--trial-epochs` epochs:
process wall time - training time + training time x trial_epochs / epochs. Trials per hour
of a layout = sum over its concurrent processes of 3600 / extrapolated seconds.
Both precisions run in the same run, fp32 as the reference, taking turns within each layout
so that a machine whose load drifts slows both alike; the pixel probes are computed into this
machine's cache (`benchmark.evaluation.pixel_probes`) before anything is timed, as a sweep finds them
after its first trials. The layout answer is what `python -m benchmark.sweep --cpus-per-trial`
should default to.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmark.config import PRECISIONS
from benchmark.data import load_dataset
from benchmark.evaluation.pixel_probes import pixel_probes
from benchmark.train import pick_device, to_device
from perf.record import REPO, Options, available_cores, write_record
from perf.workload import real_data_dir

REFERENCE = "fp32"


def trial_command(args, seed: int, precision: str, figures: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "benchmark.trial",
        "--model",
        args.model,
        "--dataset",
        args.dataset,
        "--epochs",
        str(args.epochs),
        "--seed",
        str(seed),
        "--num-codes",
        "512",
        "--code-dim",
        "64",
        "--precision",
        precision,
        "--data-dir",
        args.data_dir,
        "--figures",
        str(figures),
    ]


def run_together(args, processes: int, threads: int, precision: str) -> list[dict[str, float]]:
    """Start `processes` trials at once, each on `threads` threads; their wall, train and eval seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with tempfile.TemporaryDirectory() as folder:
        started = []
        for i in range(processes):
            command = trial_command(args, i, precision, Path(folder) / f"figures-{i}")
            started.append(
                (
                    time.perf_counter(),
                    subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
                )
            )
        trials = []
        for start, process in started:
            out, err = process.communicate()
            wall = time.perf_counter() - start
            if process.returncode != 0:
                raise RuntimeError(f"trial process failed with code {process.returncode}:\n{err[-3000:]}")
            metrics = json.loads(out)["metrics"]
            trials.append({"wall_s": wall, "train_s": metrics["time/train_s"], "eval_s": metrics["time/eval_s"]})
    return trials


def layout_figures(name: str, trials: list[dict[str, float]], args) -> dict[str, float]:
    extrapolated = [t["wall_s"] - t["train_s"] + t["train_s"] * args.trial_epochs / args.epochs for t in trials]
    n = len(trials)
    return {
        f"{name}/epoch_s": sum(t["train_s"] / args.epochs for t in trials) / n,
        f"{name}/eval_s": sum(t["eval_s"] for t in trials) / n,
        f"{name}/fixed_s": sum(t["wall_s"] - t["train_s"] - t["eval_s"] for t in trials) / n,  # imports, data, figures
        f"{name}/trial_s": sum(extrapolated) / n,
        f"{name}/trials_per_hour": sum(3600 / s for s in extrapolated),
    }


def warm_pixel_probes(args) -> None:
    """Every measured trial reads its pixel probes from the machine cache, as all but a sweep's first do."""
    data = to_device(load_dataset(args.dataset, args.data_dir), pick_device())  # the trials' device is part of the key
    for seed in range(args.cores):
        pixel_probes(data, seed)


def main(argv: list[str] | None = None) -> int:
    cores = available_cores()
    options = Options("trials_per_hour", __doc__)
    options.sized("--dataset", "mnist", "digits", "dataset of the measured trials")
    options.sized("--epochs", 1, 1, "epochs each measured trial trains")
    options.add_argument("--model", default="vqvae", choices=("vae", "vqvae"), help="model (default: vqvae)")
    options.add_argument(
        "--cores",
        type=int,
        default=cores,
        help=f"cores to fill: one trial on this many threads vs this many 1-thread trials (default: {cores})",
    )
    options.add_argument("--trial-epochs", type=int, default=10, help="epochs of the trial extrapolated to (default: 10, the paper's)")
    options.add_argument(
        "--data-dir", default=real_data_dir(), help="data root in torchvision's layout (default: $VQBENCH_DATA_DIR or ../shared/data)"
    )
    args = options.parse(argv)
    warm_pixel_probes(args)
    layouts = {f"1_trial_x_{args.cores}_threads": (1, args.cores), f"{args.cores}_trials_x_1_thread": (args.cores, 1)}
    figures: dict[str, float] = {}
    for layout, (processes, threads) in layouts.items():
        for precision in PRECISIONS:
            figures.update(layout_figures(f"{precision}/{layout}", run_together(args, processes, threads, precision), args))
    single, parallel = layouts
    best: dict[str, int] = {}
    for precision in PRECISIONS:
        ratio = figures[f"{precision}/{parallel}/trials_per_hour"] / figures[f"{precision}/{single}/trials_per_hour"]
        figures[f"{precision}/parallel_vs_single"] = ratio
        best[precision] = 1 if ratio >= 1 else args.cores
    for precision in PRECISIONS:
        if precision != REFERENCE:
            for layout in layouts:
                figures[f"{precision}_vs_{REFERENCE}/{layout}"] = (
                    figures[f"{precision}/{layout}/trials_per_hour"] / figures[f"{REFERENCE}/{layout}/trials_per_hour"]
                )

    print(f"{args.model} on {args.dataset}, {args.epochs}-epoch trials extrapolated to {args.trial_epochs} epochs, on {args.cores} cores")
    print(f"{'precision':9} {'layout':24} {'epoch s':>8} {'eval s':>7} {'fixed s':>8} {'trial s':>8} {'trials/h':>9}")
    for layout in layouts:
        for precision in PRECISIONS:
            name = f"{precision}/{layout}"
            print(
                f"{precision:9} {layout:24} "
                + " ".join(
                    f"{figures[f'{name}/{k}']:{w}.1f}"
                    for k, w in (("epoch_s", 8), ("eval_s", 7), ("fixed_s", 8), ("trial_s", 8), ("trials_per_hour", 9))
                )
            )
    for precision in PRECISIONS:
        if precision != REFERENCE:
            print(
                f"{precision} / {REFERENCE} trials per hour: "
                + ", ".join(f"{figures[f'{precision}_vs_{REFERENCE}/{layout}']:.2f}x ({layout})" for layout in layouts)
            )
    for precision in PRECISIONS:
        print(
            f"{precision}: {parallel} / {single}: {figures[f'{precision}/parallel_vs_single']:.2f}x -> --cpus-per-trial {best[precision]}"
        )
    write_record(args, figures, conclusions={f"recommended_cpus_per_trial/{p}": best[p] for p in PRECISIONS})
    return 0


if __name__ == "__main__":
    sys.exit(main())
