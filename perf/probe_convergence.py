"""Are the probes converged? The protocol's probes against longer or tighter versions of themselves, per representation.

    python -m perf.probe_convergence                       # paper-config VAE and VQ-VAE, 10 epochs, real MNIST
    python -m perf.probe_convergence --models-from runs/*/model.pt   # probe trained models (a trial's model.pt), any number
    python -m perf.probe_convergence --tiny                # seconds, for tests: figures mean nothing

Trains each model for `--epochs` (or reads trained ones: every kind the studies produce, several seeds), encodes
both splits, then probes every representation (the VAE's posterior means, the VQ-VAE's quantized vectors and code
indices, raw pixels):
- MLP: the protocol's probe (learning rate and weight decay from its grid on the held-out split, its fixed cosine
  budget, last epoch kept) against the same member on a cosine schedule `--factor` times as long; and `--restarts`
  seeded restarts of the chosen member, whose spread (max - min test accuracy) says whether one restart is enough;
  with `--grid`, every member of protocol 3's 2 x 2 grid on the same budget, to show whether the one member the
  protocol fixes gives up anything against a per-trial grid.
- linear: the L-BFGS probe (convex: converged means its tolerance) against the same L2 strength solved 10x tighter (100x is below what float32 resolves: it stalls)
  with 4x the iteration cap; its iterations, gradient norm and cap flag.
Differences in points; only the train split (and its held-out share) chooses anything. Representations are
named `{run name}/{latent|codes}` (e.g. `vqvae-mnist-K512-D64-b0.25-s0/codes`) and `pixels`.
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
from benchmark.evaluation.evaluate import represent_split
from benchmark.evaluation.linear_probe import fit_logistic, linear_probe, linear_scores
from benchmark.evaluation.mlp_probe import mlp_member, mlp_probe, restart_seed, train_classifier
from benchmark.evaluation.probe_inputs import accuracy, predict_scores, standardise
from benchmark.evaluation.probe_settings import MLP_HIDDEN, REFERENCE_MLP_GRID, ProbeSettings
from benchmark.saved_model import read_model
from benchmark.train import init_state, pick_device, to_device, train_epoch
from perf.record import Options, available_cores, write_record
from perf.workload import real_data_dir


def timed(call):
    start = time.perf_counter()
    return call(), time.perf_counter() - start


def mlp_figures(
    train_x,
    train_y,
    test_x,
    test_y,
    classes,
    seed,
    settings,
    num_codes,
    factor,
    restarts,
    grid: tuple[tuple[float, ...], tuple[float, ...]],
) -> dict[str, float]:
    (fitted, lr, weight_decay), spent = timed(lambda: mlp_probe(train_x, train_y, classes, seed, settings, num_codes))
    acc = accuracy(predict_scores(fitted.net, test_x), test_y)
    chosen = mlp_member(settings, lr, weight_decay)
    longer = dataclasses.replace(chosen, max_epochs=factor * fitted.epochs_run)
    long, long_spent = timed(lambda: train_classifier(train_x, train_y, classes, MLP_HIDDEN, seed, longer, num_codes))
    long_acc = accuracy(predict_scores(long.net, test_x), test_y)
    again = [
        accuracy(
            predict_scores(train_classifier(train_x, train_y, classes, MLP_HIDDEN, restart_seed(seed, r), chosen, num_codes).net, test_x),
            test_y,
        )
        for r in range(1, restarts)
    ]
    runs = [acc, *again]
    figures = {
        "probe_acc": acc,
        "probe_epochs": float(fitted.epochs_run),
        "probe_s": spent,
        "lr": lr,
        "weight_decay": weight_decay,
        "long_acc": long_acc,
        "long_epochs": float(long.epochs_run),
        "long_s": long_spent,
        "diff_points": 100 * (acc - long_acc),
        "restart_spread_points": 100 * (max(runs) - min(runs)),
        "restart_mean_acc": sum(runs) / len(runs),
    }
    # the reference grid, each member on the protocol's budget: which one the held-out split would pick (a tie: the
    # protocol's own member, then the grid's order), and its test accuracy
    members = {(lr, weight_decay): (fitted.held_acc, acc)}
    for member_lr in grid[0]:
        for member_wd in grid[1]:
            if (member_lr, member_wd) not in members:
                member = mlp_member(settings, member_lr, member_wd)
                other = train_classifier(train_x, train_y, classes, MLP_HIDDEN, seed, member, num_codes)
                members[member_lr, member_wd] = (other.held_acc, accuracy(predict_scores(other.net, test_x), test_y))
    for (member_lr, member_wd), (held, test) in members.items():
        figures[f"grid/lr{member_lr:g}-wd{member_wd:g}/held_acc"] = held
        figures[f"grid/lr{member_lr:g}-wd{member_wd:g}/test_acc"] = test
    best = max(members, key=lambda m: members[m][0])
    figures["grid_best_acc"] = members[best][1]
    figures["grid_diff_points"] = 100 * (acc - members[best][1])
    return figures


def linear_figures(train_x, train_y, test_x, test_y, classes, seed, settings, num_codes) -> dict[str, float]:
    probed, spent = timed(lambda: linear_probe(train_x, train_y, classes, seed, settings, num_codes))
    acc = accuracy(linear_scores(probed.fit, test_x, num_codes), test_y)
    tight = dataclasses.replace(settings, lbfgs_tol=settings.lbfgs_tol / 10, lbfgs_max_iter=4 * settings.lbfgs_max_iter)
    solved, tight_spent = timed(lambda: fit_logistic(train_x, train_y, classes, probed.fit.l2, tight, num_codes, probed.fit))
    tight_acc = accuracy(linear_scores(solved, test_x, num_codes), test_y)
    return {
        "acc": acc,
        "s": spent,
        "l2": probed.fit.l2,
        "iters": float(probed.fit.iterations),
        "grad_norm": probed.fit.grad_norm,
        "capped": float(probed.fit.capped),
        "path_capped": float(probed.path_capped),
        "tight_acc": tight_acc,
        "tight_iters": float(solved.iterations),
        "tight_capped": float(solved.capped),
        "tight_s": tight_spent,
        "diff_points": 100 * (acc - tight_acc),
    }


def trained_models(args, saved: list[tuple[nn.Module, TrialConfig]], data, device: torch.device) -> Iterator[tuple[TrialConfig, nn.Module]]:
    """The models to probe: those read from --models-from, or else --models trained here for --epochs."""
    for model, config in saved:
        yield config, model
    for name in () if saved else args.models:
        config = TrialConfig.from_dict(
            {"model": name, "dataset": args.dataset, "epochs": args.epochs, "seed": args.seed, "num_codes": 512, "code_dim": 64}
        )
        state = init_state(config, data, device)
        for _ in range(args.epochs):
            train_epoch(state, data, config)
        yield config, state.model


def main(argv: list[str] | None = None) -> int:
    options = Options("probe_convergence", __doc__)
    options.sized("--dataset", "mnist", "digits", "dataset")
    options.sized("--epochs", 10, 1, "autoencoder training epochs (the paper's 10)")
    options.sized("--models", ("vae", "vqvae"), ("vqvae",), "models to train and probe")
    options.add_argument("--factor", type=int, default=4, help="the longer schedule's length over the protocol's (default: 4)")
    options.sized("--restarts", 3, 2, "seeded restarts of the chosen MLP probe, for their spread")
    options.add_argument(
        "--grid",
        action="store_true",
        help="also fit every member of protocol 3's MLP grid (REFERENCE_MLP_GRID): the held-out choice and its test accuracy",
    )
    options.add_argument(
        "--mlp-epochs",
        type=int,
        help="the MLP's fixed budget to check, in epochs (default: the protocol's); a candidate for the next protocol is checked here first",
    )
    options.add_argument(
        "--no-linear", dest="linear", action="store_false", help="leave the linear probe out (only the MLP's budget is in question)"
    )
    options.add_argument("--no-pixels", dest="pixels", action="store_false", help="leave raw pixels out (another process probes them)")
    options.add_argument("--seed", type=int, default=0, help="trial and probe seed (default: 0)")
    options.add_argument("--threads", type=int, default=available_cores(), help="torch threads (default: all cores)")
    options.add_argument(
        "--models-from", nargs="+", metavar="MODEL_PT", help="probe these trained models (a trial's model.pt) instead of training --models"
    )
    options.add_argument(
        "--data-dir", default=real_data_dir(), help="data root in torchvision's layout (default: $VQBENCH_DATA_DIR or ../shared/data)"
    )
    args = options.parse(argv)
    if args.mlp_epochs is not None and args.mlp_epochs < 1:  # before any model or data is read
        options.error(f"--mlp-epochs {args.mlp_epochs}: a budget is at least 1 epoch")
    torch.set_num_threads(args.threads)
    device = pick_device()
    saved = [read_model(path, device) for path in args.models_from or ()]
    for path, (_, config) in zip(args.models_from or (), saved):
        if config.dataset != args.dataset:
            options.error(f"{path} was trained on {config.dataset}, not --dataset {args.dataset}: pass --dataset {config.dataset}")
    data = to_device(load_dataset(args.dataset, args.data_dir), device)
    settings = ProbeSettings()
    if args.tiny:  # one grid member, short schedules: a run of seconds
        settings = dataclasses.replace(
            settings, max_epochs=4, mlp_epochs=4, mlp_lrs=settings.mlp_lrs[:1], mlp_weight_decays=settings.mlp_weight_decays[:1]
        )
    if args.mlp_epochs is not None:
        settings = dataclasses.replace(settings, mlp_epochs=args.mlp_epochs)
    representations = {}
    for config, model in trained_models(args, saved, data, device):
        train = represent_split(model, data.train_x, data.train_y, config, decode=False)
        test = represent_split(model, data.test_x, data.test_y, config, decode=False)
        representations[f"{config.name}/latent"] = (*standardise(train["latent"], test["latent"]), None)
        if "codes" in train:
            representations[f"{config.name}/codes"] = (train["codes"], test["codes"], config.codebook_size)
    if args.pixels:
        representations["pixels"] = (*standardise(data.train_x.flatten(1).float(), data.test_x.flatten(1).float()), None)

    figures: dict[str, float] = {}
    print(
        f"{args.dataset}, seed {args.seed}, {args.threads} thread(s), {device}; probe protocol {settings.protocol}"
        + (f", MLP budget {settings.mlp_epochs} epochs (not the protocol's)" if args.mlp_epochs is not None else "")
    )
    print(f"{'representation':44} {'probe':6} {'acc':>6} {'epochs/iters':>12} {'s':>6} {'longer':>6} {'s':>6} {'diff':>6} {'spread':>6}")
    for name, (train_x, test_x, num_codes) in representations.items():
        common = (train_x, data.train_y, test_x, data.test_y, data.num_classes, args.seed, settings, num_codes)
        grid = REFERENCE_MLP_GRID if args.grid else ((), ())
        mlp = mlp_figures(*common, args.factor, args.restarts, grid)
        figures.update({f"{name}/mlp/{k}": v for k, v in mlp.items()})
        print(
            f"{name:44} {'mlp':6} {100 * mlp['probe_acc']:6.2f} {mlp['probe_epochs']:12.0f} {mlp['probe_s']:6.1f} "
            f"{100 * mlp['long_acc']:6.2f} {mlp['long_s']:6.1f} {mlp['diff_points']:+6.2f} {mlp['restart_spread_points']:6.2f}"
            + (f"  grid's pick {100 * mlp['grid_best_acc']:.2f} ({mlp['grid_diff_points']:+.2f})" if args.grid else "")
        )
        if not args.linear:
            continue
        linear = linear_figures(*common)
        figures.update({f"{name}/linear/{k}": v for k, v in linear.items()})
        flag = " capped" if linear["capped"] else ""
        print(
            f"{name:44} {'linear':6} {100 * linear['acc']:6.2f} {linear['iters']:12.0f} {linear['s']:6.1f} "
            f"{100 * linear['tight_acc']:6.2f} {linear['tight_s']:6.1f} {linear['diff_points']:+6.2f}  l2 {linear['l2']:.3g}{flag}"
        )
    figures["worst_abs_diff_points"] = max(abs(v) for k, v in figures.items() if k.endswith("/diff_points"))
    figures["worst_restart_spread_points"] = max(v for k, v in figures.items() if k.endswith("/restart_spread_points"))
    figures["worst_abs_grid_diff_points"] = max(abs(v) for k, v in figures.items() if k.endswith("/grid_diff_points"))
    print(
        f"largest |probe - longer or tighter|: {figures['worst_abs_diff_points']:.2f} points; "
        f"largest spread of {args.restarts} MLP restarts: {figures['worst_restart_spread_points']:.2f} points; "
        f"largest |MLP - the reference grid's held-out pick|: {figures['worst_abs_grid_diff_points']:.2f} points"
    )
    write_record(args, figures, str(device))
    return 0


if __name__ == "__main__":
    sys.exit(main())
