"""Is bf16 equivalent to fp32? Whole trials on real MNIST in both precisions, paired by seed.

    python -m perf.precision_check --runs fp32.csv bf16.csv    # trials of two sweeps (--precision), exported
    python -m perf.precision_check --epochs 10 --seeds 5       # or run the trials here, in turn: much longer

An equivalence question, judged with the report's paired t interval over matched seeds
(`analysis.verdicts.paired_test`): bf16 is *equivalent* on a metric when the whole 95%
interval of bf16 - fp32 lies inside the margin declared here, ±0.5 probe points, ±0.03 SSIM,
±10% relative MSE (per seed, bf16 / fp32 - 1); *not shown* otherwise; *not resolved* under 3
seeds. The speed-up is the ratio of mean training seconds: compare it only where both
precisions ran beside each other on the same machine.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from analysis.run_columns import CONFIG_TYPES
from analysis.runs import RunsError
from analysis.runs_csv import read_runs_csv
from analysis.verdicts import MIN_SEEDS, paired_test
from benchmark.config import TEST_HOOKS, TrialConfig
from benchmark.data_files import DATA_DIR_ENV
from benchmark.trial import run_trial
from perf.record import Options, available_cores, write_record
from perf.workload import real_data_dir

PRECISIONS = ("fp32", "bf16")
TRAIN_S = "time/train_s"


@dataclass(frozen=True)
class Check:
    metric: str
    margin: float
    relative: bool  # compare bf16 / fp32 - 1 per seed instead of bf16 - fp32


CHECKS = (Check("probe/latent/mlp_acc", 0.005, False), Check("recon/ssim", 0.03, False), Check("recon/mse", 0.10, True))
# A trial's identity without its precision: the pairs compared.
IDENTITY_KEYS = [key for key in CONFIG_TYPES if key not in ("precision", "train_probe_every", *TEST_HOOKS)]


def compare(runs: pd.DataFrame) -> tuple[dict[str, float], dict[str, str]]:
    """Figures and verdicts per model and check, from one row per finished trial."""
    figures: dict[str, float] = {}
    verdicts: dict[str, str] = {}
    pair = runs[IDENTITY_KEYS].astype(object).map(str).agg("|".join, axis=1)  # NA knobs (K of a VAE) would drop out of an index
    for model, frame in runs.assign(pair=pair).groupby("model"):
        wide = frame.pivot_table(index="pair", columns="precision", values=[c.metric for c in CHECKS] + [TRAIN_S]).dropna(how="any")
        for check in CHECKS:
            fp32, bf16 = wide[(check.metric, "fp32")].to_numpy(), wide[(check.metric, "bf16")].to_numpy()
            diff = bf16 / fp32 - 1 if check.relative else bf16 - fp32
            test = paired_test(np.zeros_like(diff), diff)
            key = f"{model}/{check.metric}"
            found = {
                f"{key}/fp32_mean": fp32.mean(),
                f"{key}/bf16_mean": bf16.mean(),
                f"{key}/n": test.n,
                f"{key}/diff_mean": test.mean,
                f"{key}/diff_low": test.low,
                f"{key}/diff_high": test.high,
            }
            figures.update({name: float(value) for name, value in found.items() if math.isfinite(value)})  # no interval under 2 seeds
            if test.n < MIN_SEEDS:
                verdicts[key] = "not resolved"
            else:
                verdicts[key] = "equivalent" if -check.margin <= test.low and test.high <= check.margin else "not shown"
        speedup = wide[(TRAIN_S, "fp32")].mean() / wide[(TRAIN_S, "bf16")].mean()
        figures[f"{model}/bf16_train_speedup"] = float(speedup)
    return figures, verdicts


def print_table(figures: dict[str, float], verdicts: dict[str, str]) -> None:
    print("| model | metric | n | fp32 mean | bf16 mean | bf16 − fp32 [95% t] | margin | verdict |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for key, verdict in verdicts.items():
        model, metric = key.split("/", 1)
        check = next(c for c in CHECKS if c.metric == metric)
        unit, scale = ("%", 100) if check.relative else ("", 1)
        low, mean, high = (scale * figures.get(f"{key}/diff_{part}", math.nan) for part in ("low", "mean", "high"))
        interval = "n/a" if math.isnan(low) else f"[{low:+.4g}, {high:+.4g}]"
        margin = f"±{scale * check.margin:g}{unit}"
        print(
            f"| {model} | {metric}{' (relative)' if check.relative else ''} | {figures[f'{key}/n']:.0f} | {figures[f'{key}/fp32_mean']:.4f} | "
            f"{figures[f'{key}/bf16_mean']:.4f} | {mean:+.4g}{unit} {interval} | {margin} | {verdict} |"
        )
    for key, value in figures.items():
        if key.endswith("bf16_train_speedup"):
            print(f"{key.split('/')[0]}: bf16 trains {value:.2f}x as fast as fp32 (mean training seconds)")


def run_here(args) -> tuple[pd.DataFrame, str]:
    """Trials in this process, fp32 then bf16 per seed, so drift in the machine's speed hits both."""
    torch.set_num_threads(args.threads)
    rows, device = [], "cpu"
    for seed in range(args.seeds):
        for precision in PRECISIONS:
            config = TrialConfig.from_dict(
                {"model": args.model, "dataset": args.dataset, "seed": seed, "epochs": args.epochs, "precision": precision}
            )
            result = run_trial(config, args.data_dir)
            device = result.device
            rows.append({**config.to_dict(), **result.metrics})
            print(f"seed {seed} {precision}: " + ", ".join(f"{c.metric} {result.metrics[c.metric]:.4f}" for c in CHECKS), flush=True)
    return pd.DataFrame(rows), device


def main(argv: list[str] | None = None) -> int:
    options = Options("precision_check", __doc__)
    options.add_argument(
        "--runs", nargs="+", metavar="CSV", help="compare the finished trials of these runs CSVs instead of running trials"
    )
    options.sized("--dataset", "mnist", "digits", "dataset of the trials")
    options.sized("--epochs", 1, 1, "training epochs per trial (paper: 10)")
    options.sized("--seeds", 3, 2, f"seeds 0..N-1 per precision; at least {MIN_SEEDS} for a verdict")
    options.add_argument("--model", default="vqvae", choices=("vae", "vqvae"), help="model (default: vqvae)")
    options.add_argument(
        "--data-dir", default=real_data_dir(), help=f"data root in torchvision's layout (default: ${DATA_DIR_ENV} or ../shared/data)"
    )
    options.sized("--threads", available_cores(), 1, "torch threads; the default is all cores")
    args = options.parse(argv)
    if args.runs:
        try:
            runs = read_runs_csv([Path(path) for path in args.runs])
        except RunsError as err:
            options.error(str(err))
        runs, device = runs[runs.status == "FINISHED"], ",".join(sorted(set(runs.device.dropna())))
        if set(runs.precision) != set(PRECISIONS):
            options.error(f"the finished runs hold precisions {sorted(set(runs.precision))}: both fp32 and bf16 runs are needed")
    elif args.seeds < 1:
        options.error(f"--seeds must be at least 1 (at least {MIN_SEEDS} for a verdict)")
    else:
        runs, device = run_here(args)
    figures, verdicts = compare(runs)
    print_table(figures, verdicts)
    write_record(args, figures, device or "cpu", verdicts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
