"""Run a search space as Ray Tune trials, each logged to MLflow under one parent run.

    python -m benchmark.sweep                      # quick space on digits, local Ray, ./mlflow.db
    python -m benchmark.sweep --space paper --datasets mnist --data-dir ../shared/data
    python -m benchmark.sweep --address auto --tracking-uri http://HEAD:5000   # on a cluster
    python -m benchmark.sweep --resume NAME        # finish a sweep whose driver died

Everything is validated before Ray starts or a run is created: bad input exits with code 2.
"""

from __future__ import annotations

import argparse
import sys
import time

from benchmark.config import DATASETS, PRECISIONS, ConfigError
from benchmark.data_files import DATA_DIR_ENV, DEFAULT_DATA_DIR, DataError
from benchmark.space import available_spaces, describe_spaces
from benchmark.sweep.dry_run import describe
from benchmark.sweep.plan import DEFAULT_PLAN, plan
from benchmark.sweep.runner import resume_command, run_sweep
from benchmark.sweep.selection import SCHEDULERS
from benchmark.sweep.state import resumed_args
from benchmark.sweep.storage import storage_folder
from benchmark.sweep.summary import EXIT_INTERRUPTED, log_outcome, read_outcome, render
from benchmark.tracking.store import DEFAULT_EXPERIMENT, TrackingError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmark.sweep", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--space",
        default="quick",
        help=f"search space: {', '.join(available_spaces())} (see --list-spaces), or a .py file defining studies(options) (default: quick)",
    )
    p.add_argument("--list-spaces", action="store_true", help="list the named spaces with what each runs; start nothing")
    p.add_argument(
        "--datasets",
        default=None,
        help=f"comma-separated datasets overriding the space's ({', '.join(DATASETS)}, or image folders: a folder's name inside --data-dir "
        "such as CIFAR-10-images, or its path) (default: the space's)",
    )
    p.add_argument("--seeds", type=int, default=None, help="number of seeds, 0..N-1 (default: the space's)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs per trial (default: the space's)")
    p.add_argument("--num-samples", type=int, default=None, help="trials per Optuna study (default: the space's, 20 for optuna)")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help="train and encode every trial in this precision; bf16 is autocast (default: the space's, fp32)",
    )
    p.add_argument(
        "--train-probe-every",
        type=int,
        default=None,
        metavar="N",
        help="every trial's per-epoch train-split probe every N epochs and after the last, 0 = never; searches rank on it, "
        "so they need 1 (default: the space's, 1)",
    )
    p.add_argument(
        "--only",
        default=None,
        metavar="KEY=VALUE[,...]",
        help="run only the space's trials whose config matches, e.g. label_embedding=none or model=vae,kl_weight=0.001|0.1 (default: all)",
    )
    p.add_argument(
        "--scheduler",
        choices=SCHEDULERS,
        default=None,
        help="trial scheduler: fifo, or asha early stopping (default: asha for searches, fifo for grids)",
    )
    p.add_argument("--data-dir", default=None, help=f"data root in torchvision's layout (default: ${DATA_DIR_ENV} or {DEFAULT_DATA_DIR})")
    p.add_argument(
        "--download",
        action="store_true",
        help="fetch missing datasets through torchvision once, on this machine, before Ray starts (needs internet); "
        "refused with --address: a cluster's data is staged on every node (see docs/cluster.md)",
    )
    p.add_argument("--address", default=None, help="Ray cluster to join, e.g. auto on a cluster node (default: start a local Ray)")
    p.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow store: sqlite:////abs/mlflow.db or http://HOST:5000 (default: $MLFLOW_TRACKING_URI, else sqlite ./mlflow.db)",
    )
    p.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help=f"MLflow experiment name (default: {DEFAULT_EXPERIMENT})")
    p.add_argument("--name", default=None, help="sweep name: its folder under --storage-path and its parent run (default: SPACE-TIMESTAMP)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs reserved per trial; also its torch threads (default: 1)")
    p.add_argument(
        "--gpus-per-trial", type=float, default=0.0, help="GPUs per trial: 0, 1 or 1/n to pack n trials on a GPU, e.g. 0.25 (default: 0)"
    )
    p.add_argument("--max-concurrent", type=int, default=0, help="most trials at once, 0 = as resources allow (default: 0)")
    p.add_argument(
        "--max-failures",
        type=int,
        default=2,
        help="retries of a trial that crashed (its worker died, out of memory): "
        "it resumes from its last epoch checkpoint, or starts again if it had none, in the same MLflow run. "
        "Diverged trials and deterministic errors (bad data, a bug) fail at once (default: 2)",
    )
    p.add_argument(
        "--storage-path",
        default="ray_results",
        help="Ray Tune results and checkpoints; shared storage on a cluster (default: ./ray_results)",
    )
    p.add_argument("--resume", metavar="NAME", default=None, help="finish the sweep NAME under --storage-path after its driver died")
    p.add_argument("--dry-run", action="store_true", help="list the trials, their count and whether their data is here; start nothing")
    p.add_argument(
        "--plan",
        default=str(DEFAULT_PLAN),
        metavar="FILE",
        help="the analysis plan (TOML) the runs are registered under: its name and SHA-256 go on the parent and trial runs (default: analysis/plans/paper.toml)",
    )
    p.add_argument("--no-log-model", action="store_true", help="do not log each trial's trained model (model.pt) to its MLflow run")
    p.add_argument("--verbose", action="store_true", help="show Ray's own logs and progress tables as well")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list_spaces:
        print(describe_spaces())
        return 0
    try:
        if args.resume:
            args = resumed_args(args, parse_args([]))
        sweep = plan(args)
        if args.dry_run:
            print(describe(sweep.studies, sweep.space, sorted({t.dataset for t in sweep.trials}), args.data_dir, args.download))
            return 0
        start = time.perf_counter()
        target, interrupted = run_sweep(args, sweep)
    except (ConfigError, DataError, TrackingError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted before the sweep started: nothing was run", file=sys.stderr)
        return EXIT_INTERRUPTED
    wall_s = time.perf_counter() - start
    outcome = read_outcome(target, interrupted, sum(s.trial_count() for s in sweep.studies))
    from mlflow.tracking import MlflowClient

    log_outcome(MlflowClient(target.uri), target.parent_run_id, outcome, wall_s)
    storage = storage_folder(args.storage_path) / sweep.name
    print("\n" + render(outcome, sweep.name, wall_s, target, args.experiment, resume_command(sweep, storage)), flush=True)
    return outcome.exit_code
