"""Is bf16 within seed noise of fp32? Whole trials on real MNIST, both precisions, several seeds.

    python -m perf.precision_check                             # vqvae, 1 epoch, 2 seeds: ~5 min
    python -m perf.precision_check --epochs 10 --seeds 5       # the paper's length: much longer

The verdict per metric: |mean(bf16) - mean(fp32)| <= 2 x seed sd, where the seed sd is the
pooled sample standard deviation over seeds of the two precisions. Seeds run fp32 then bf16
in turn, so drift in the machine's speed hits both; the speedup compares training time only
(the pixel probes are cached on disk per machine, so evaluation times are not comparable).
"""
from __future__ import annotations

import math
import statistics
import sys

import torch

from benchmark.config import TrialConfig
from benchmark.data import DATA_DIR_ENV
from benchmark.trial import run_trial
from perf.record import Options, available_cores, write_record
from perf.workload import real_data_dir

METRICS = ("probe/latent/mlp_acc", "recon/mse", "recon/ssim")
PRECISIONS = ("fp32", "bf16")
SPEED = ("time/train_s", "train/images_per_s")


def summarise(runs: dict[str, list[dict[str, float]]]) -> tuple[dict[str, float], dict[str, bool]]:
    figures: dict[str, float] = {}
    verdicts: dict[str, bool] = {}
    for metric in METRICS + SPEED:
        for precision in PRECISIONS:
            values = [r[metric] for r in runs[precision]]
            figures[f"{precision}/{metric}/mean"] = statistics.fmean(values)
            figures[f"{precision}/{metric}/sd"] = statistics.stdev(values)
    for metric in METRICS:
        noise = math.sqrt((figures[f"fp32/{metric}/sd"] ** 2 + figures[f"bf16/{metric}/sd"] ** 2) / 2)
        diff = figures[f"bf16/{metric}/mean"] - figures[f"fp32/{metric}/mean"]
        figures[f"bf16_minus_fp32/{metric}"] = diff
        figures[f"seed_sd/{metric}"] = noise
        verdicts[f"{metric} within 2 seed sd"] = abs(diff) <= 2 * noise
    figures["bf16_train_speedup"] = figures["fp32/time/train_s/mean"] / figures["bf16/time/train_s/mean"]
    return figures, verdicts


def main(argv: list[str] | None = None) -> int:
    options = Options("precision_check", __doc__)
    options.sized("--dataset", "mnist", "digits", "dataset of the trials")
    options.sized("--epochs", 1, 1, "training epochs per trial (paper: 10)")
    options.sized("--seeds", 2, 2, "seeds 0..N-1 per precision; at least 2, to have a seed sd")
    options.add_argument("--model", default="vqvae", choices=("vae", "vqvae"), help="model (default: vqvae)")
    options.add_argument("--data-dir", default=real_data_dir(), help=f"data root in torchvision's layout (default: ${DATA_DIR_ENV} or ../shared/data)")
    options.sized("--threads", available_cores(), 1, "torch threads; the default is all cores")
    args = options.parse(argv)
    if args.seeds < 2:
        options.error("--seeds must be at least 2: the verdict compares the difference with the seed sd")
    torch.set_num_threads(args.threads)
    runs: dict[str, list[dict[str, float]]] = {p: [] for p in PRECISIONS}
    device = "cpu"
    for seed in range(args.seeds):
        for precision in PRECISIONS:
            config = TrialConfig.from_dict({"model": args.model, "dataset": args.dataset, "seed": seed, "epochs": args.epochs, "precision": precision})
            result = run_trial(config, args.data_dir)
            device = result.device
            runs[precision].append(result.metrics)
            print(f"seed {seed} {precision}: " + ", ".join(f"{m} {result.metrics[m]:.4f}" for m in METRICS + SPEED), flush=True)
    figures, verdicts = summarise(runs)
    print(f"\n{args.model} on {args.dataset}, {args.epochs} epoch(s), {args.seeds} seeds, {device}")
    print(f"{'metric':22} {'fp32 mean ± sd':>18} {'bf16 mean ± sd':>18} {'bf16-fp32':>10}  verdict")
    for metric in METRICS:
        cells = [f"{figures[f'{p}/{metric}/mean']:.4f} ± {figures[f'{p}/{metric}/sd']:.4f}" for p in PRECISIONS]
        verdict = "within seed noise" if verdicts[f"{metric} within 2 seed sd"] else "OUTSIDE 2 seed sd"
        print(f"{metric:22} {cells[0]:>18} {cells[1]:>18} {figures[f'bf16_minus_fp32/{metric}']:+10.4f}  {verdict}")
    print(f"training: fp32 {figures['fp32/time/train_s/mean']:.1f} s, bf16 {figures['bf16/time/train_s/mean']:.1f} s: bf16 speedup {figures['bf16_train_speedup']:.2f}x")
    write_record(args, figures, device, verdicts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
