"""Run a search space as Ray Tune trials, each logged to MLflow under one parent run.

    python -m benchmark.sweep                      # quick space on digits, local Ray, ./mlflow.db
    python -m benchmark.sweep --space paper --datasets mnist --data-dir ../shared/data
    python -m benchmark.sweep --address auto --tracking-uri http://HEAD:5000   # on a cluster
    python -m benchmark.sweep --resume NAME        # finish a sweep whose driver died

Everything is validated before Ray starts or a run is created: bad input exits with code 2.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.config import DATASETS, ConfigError, TrialConfig
from benchmark.data import DATA_DIR_ENV, DEFAULT_DATA_DIR, DataError, check_available, resolve_data_dir
from benchmark.space import SpaceOptions, Study, available_spaces, load_space, validate
from benchmark.storage import RemoteFolder, check_shared, storage_folder
from benchmark.tracking import (
    TrackingError,
    TrackingTarget,
    check_reachable,
    close_orphans,
    ensure_experiment,
    resolve_tracking_uri,
    start_sweep_run,
)

SWEEP_FILE = "vqbench_sweep.json"
SCHEDULERS = ("fifo", "asha")


@dataclass(frozen=True)
class SweepPlan:
    name: str
    space: str
    studies: list[Study]
    trials: list[TrialConfig]  # validated; for searches, the bounds that were checked


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmark.sweep", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default="quick", help=f"search space: {', '.join(available_spaces())}, or a .py file defining studies(options) (default: quick)")
    p.add_argument("--datasets", default=None, help=f"comma-separated datasets overriding the space's ({', '.join(DATASETS)}) (default: the space's)")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds, 0..N-1 (default: the space's)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs per trial (default: the space's)")
    p.add_argument("--num-samples", type=int, default=None, help="trials per Optuna study (default: the space's, 20 for optuna)")
    p.add_argument("--only", default=None, metavar="KEY=VALUE[,...]", help="run only the space's trials whose config matches, e.g. label_embedding=none (default: all)")
    p.add_argument("--scheduler", choices=SCHEDULERS, default=None, help="trial scheduler: fifo, or asha early stopping (default: asha for searches, fifo for grids)")
    p.add_argument("--data-dir", default=None, help=f"data root in torchvision's layout (default: ${DATA_DIR_ENV} or {DEFAULT_DATA_DIR})")
    p.add_argument("--download", action="store_true", help="let each trial fetch missing datasets through torchvision (needs internet)")
    p.add_argument("--address", default=None, help="Ray cluster to join, e.g. auto on a cluster node (default: start a local Ray)")
    p.add_argument("--tracking-uri", default=None, help="MLflow store: sqlite:////abs/mlflow.db or http://HOST:5000 (default: sqlite ./mlflow.db)")
    p.add_argument("--experiment", default="vqbench", help="MLflow experiment name (default: vqbench)")
    p.add_argument("--name", default=None, help="sweep name: its folder under --storage-path and its parent run (default: SPACE-TIMESTAMP)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs reserved per trial; also its torch threads (default: 1)")
    p.add_argument("--gpus-per-trial", type=float, default=0.0, help="GPUs per trial: 0, 1 or 1/n to pack n trials on a GPU, e.g. 0.25 (default: 0)")
    p.add_argument("--max-concurrent", type=int, default=0, help="most trials at once, 0 = as resources allow (default: 0)")
    p.add_argument("--max-failures", type=int, default=2, help="retries of a crashing trial, resumed from its last epoch (default: 2)")
    p.add_argument("--storage-path", default="ray_results", help="Ray Tune results and checkpoints; shared storage on a cluster (default: ./ray_results)")
    p.add_argument("--resume", metavar="NAME", default=None, help="finish the sweep NAME under --storage-path after its driver died")
    p.add_argument("--dry-run", action="store_true", help="list the trials and their count; start nothing")
    return p.parse_args(argv)


def check_gpus_per_trial(gpus: float) -> None:
    """Ray packs fractions that divide one GPU evenly; 0.3 would strand a tenth of every GPU."""
    if gpus < 0 or gpus > 1:
        raise ConfigError(f"--gpus-per-trial={gpus} is not allowed: use 0, 1, or 1/n such as 0.5 or 0.25 (multi-GPU trials are not supported)")
    if 0 < gpus < 1 and abs(1 / round(1 / gpus) - gpus) > 1e-9:
        raise ConfigError(f"--gpus-per-trial={gpus} does not pack: use 1/n for n trials per GPU, e.g. 0.5, 0.25 or 0.125")


def only(study: Study, selector: str | None) -> Study:
    """Keep the fixed trials whose config matches every KEY=VALUE (compared as validated values)."""
    if not selector:
        return study
    wanted = dict(part.split("=", 1) if "=" in part else (part, "") for part in selector.split(","))
    reference = TrialConfig.from_dict(wanted).to_dict()  # validates keys and values
    if study.is_search:
        raise ConfigError(f"--only {selector}: searched spaces have no fixed trials to select; use it with grid-style spaces")
    kept = tuple(c for c in study.configs if all(TrialConfig.from_dict(c).to_dict()[k] == reference[k] for k in wanted))
    return Study(study.label, kept)


def plan(args: argparse.Namespace) -> SweepPlan:
    if args.cpus_per_trial <= 0:
        raise ConfigError(f"--cpus-per-trial={args.cpus_per_trial} is not allowed: it must be > 0")
    check_gpus_per_trial(args.gpus_per_trial)
    for key in ("seeds", "epochs", "num_samples"):
        value = getattr(args, key)
        if value is not None and value < 1:
            raise ConfigError(f"--{key.replace('_', '-')}={value} is not allowed: it must be >= 1")
    chosen = tuple(d.strip() for d in args.datasets.split(",") if d.strip()) if args.datasets else None
    for dataset in chosen or ():
        if dataset not in DATASETS:
            raise ConfigError(f"--datasets: dataset={dataset!r} is not allowed: choose from {', '.join(DATASETS)}")
    module = load_space(args.space)
    studies = [only(s, args.only) for s in module.studies(SpaceOptions(chosen, args.seeds, args.epochs, args.num_samples))]
    trials = [config for study in studies for config in validate(study)]
    if not sum(s.trial_count() for s in studies):
        raise ConfigError(f"space {args.space!r} with --only {args.only!r} and --datasets {args.datasets!r} selects no trials")
    for dataset in sorted({t.dataset for t in trials}):
        check_available(dataset, args.data_dir, args.download)
    name = args.resume or args.name or f"{args.space}-{time.strftime('%Y%m%d-%H%M%S')}"
    return SweepPlan(name, args.space, studies, trials)


def describe(sweep: SweepPlan) -> str:
    lines = []
    for study in sweep.studies:
        if study.is_search:
            space = ", ".join(f"{k}~{v}" for k, v in study.search.items())
            lines.append(f"{study.label}: {study.num_samples} Optuna trials of {study.base} over {space}")
        else:
            lines += [f"{study.label}: {json.dumps(c, sort_keys=True)}" for c in study.configs]
    total = sum(s.trial_count() for s in sweep.studies)
    return "\n".join(lines + [f"{total} trials in space {sweep.space!r}"])


def tuner_for(study: Study, args: argparse.Namespace, common: dict[str, Any], storage: Path | RemoteFolder, restore: bool):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    from benchmark.tune_trial import tune_trial

    trainable = tune.with_resources(tune_trial, {"cpu": args.cpus_per_trial, "gpu": args.gpus_per_trial})
    if restore:
        return tune.Tuner.restore(str(storage / study.label), trainable=trainable, resume_errored=True)
    if study.is_search:
        param_space = {**common, "trial": {**study.base, **study.search}}
        search_alg = OptunaSearch(metric=study.metric, mode=study.mode, seed=0)
    else:
        param_space = {**common, "trial": tune.grid_search(list(study.configs))}
        search_alg = None
    use_asha = (args.scheduler or ("asha" if study.is_search else "fifo")) == "asha"
    scheduler = ASHAScheduler(time_attr="training_iteration", grace_period=2, max_t=10_000) if use_asha else FIFOScheduler()
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=study.metric if use_asha or study.is_search else None,
            mode=study.mode if use_asha or study.is_search else None,
            search_alg=search_alg,
            scheduler=scheduler,
            num_samples=study.num_samples if study.is_search else 1,
            max_concurrent_trials=args.max_concurrent or None,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=study.label,
            storage_path=str(storage),
            failure_config=tune.FailureConfig(max_failures=args.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            verbose=1,
        ),
    )


def summary(uri: str, experiment_id: str, parent_run_id: str) -> pd.DataFrame:
    """Mean final metrics per setting, read back from MLflow: what a reviewer sees first."""
    from mlflow.tracking import MlflowClient

    runs = MlflowClient(uri).search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'", max_results=10_000)
    rows = []
    for run in runs:
        p, m = run.data.params, run.data.metrics
        rows.append({
            "dataset": p.get("dataset"), "model": p.get("model"),
            "K": p["num_codes"] if p.get("model") == "vqvae" else "-",
            "label_emb": p.get("label_embedding"), "status": run.info.status,
            "probe_acc": m.get("probe/latent/mlp_acc"), "pixels_acc": m.get("probe/pixels/mlp_acc"),
            "mse": m.get("recon/mse"), "ssim": m.get("recon/ssim"), "code_usage": m.get("codebook/usage"),
        })
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    keys = ["dataset", "model", "K", "label_emb"]
    finished = frame[frame.status == "FINISHED"]
    table = finished.groupby(keys, dropna=False)[["probe_acc", "pixels_acc", "mse", "ssim", "code_usage"]].mean()
    table["n"] = finished.groupby(keys, dropna=False).size()
    table["failed"] = frame[frame.status != "FINISHED"].groupby(keys, dropna=False).size().reindex(table.index).fillna(0).astype(int)
    return table.reset_index()


def ui_command(uri: str, experiment_id: str) -> str:
    """A local store needs `mlflow ui` started; a server is browsed at its own address."""
    runs = f"/#/experiments/{experiment_id}/runs (expand the parent run to see its trials)"
    if uri.startswith("sqlite"):
        return f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000\n  then browse http://127.0.0.1:5000{runs}"
    return f"browse {uri.rstrip('/')}{runs}"


def run_sweep(args: argparse.Namespace, sweep: SweepPlan) -> tuple[TrackingTarget, int]:
    import ray
    from mlflow.tracking import MlflowClient

    storage = storage_folder(args.storage_path) / sweep.name
    state_file = storage / SWEEP_FILE
    if args.address:  # joined before any run exists: a storage path some node cannot see is refused
        if not ray.is_initialized():
            ray.init(address=args.address, include_dashboard=False, log_to_driver=False)
        check_shared(args.storage_path)
    if args.resume:
        target = TrackingTarget(**json.loads(state_file.read_text())["tracking"])
        check_reachable(target.uri)
    else:
        if state_file.exists():
            raise ConfigError(f"--name {sweep.name}: a sweep of that name already exists in {storage}; pick another name or --resume it")
        uri = resolve_tracking_uri(args.tracking_uri)
        check_reachable(uri)
        client = MlflowClient(uri)
        experiment_id = ensure_experiment(client, args.experiment, uri)
        params = {k: v for k, v in vars(args).items() if k not in ("dry_run", "resume")}
        params["num_trials"] = sum(s.trial_count() for s in sweep.studies)
        parent = start_sweep_run(client, experiment_id, sweep.name, params, {"vqbench.space": sweep.space})
        target = TrackingTarget(uri, experiment_id, parent)
        storage.mkdir(parents=True, exist_ok=True)
        state_file.write_text(json.dumps({"tracking": asdict(target), "args": vars(args)}, indent=2))
    client = MlflowClient(target.uri)
    print(f"sweep {sweep.name}: {sum(s.trial_count() for s in sweep.studies)} trials, MLflow {target.uri} "
          f"(experiment {target.experiment_id}, parent run {target.parent_run_id}); "
          f"if it dies: python -m benchmark.sweep --resume {sweep.name} --storage-path {storage.parent}", flush=True)
    if args.resume:
        closed = close_orphans(client, target.experiment_id, target.parent_run_id)
        print(f"resuming {sweep.name}: closed {closed} run(s) its driver left RUNNING as KILLED")
        client.update_run(target.parent_run_id, status="RUNNING")
    from ray import tune

    common = {"tracking": asdict(target), "data_dir": str(resolve_data_dir(args.data_dir)), "download": args.download}
    errors = 0
    status = "FAILED"
    try:
        if not ray.is_initialized():
            ray.init(address=args.address or "local", include_dashboard=False, log_to_driver=False)
        for study in sweep.studies:
            restore = bool(args.resume) and tune.Tuner.can_restore(str(storage / study.label))
            results = tuner_for(study, args, common, storage, restore).fit()
            errors += sum(1 for r in results if r.error is not None)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        close_orphans(client, target.experiment_id, target.parent_run_id)
        client.set_tag(target.parent_run_id, "vqbench.trials_errored", str(errors))
        client.set_terminated(target.parent_run_id, status)
    return target, errors


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.resume:
            saved_file = storage_folder(args.storage_path) / args.resume / SWEEP_FILE
            if not saved_file.is_file():
                raise ConfigError(f"--resume {args.resume}: no sweep at {saved_file.parent}; check the name and --storage-path")
            saved = json.loads(saved_file.read_text())["args"]
            args = argparse.Namespace(**{**saved, "resume": args.resume, "dry_run": args.dry_run, "address": args.address or saved["address"]})
        sweep = plan(args)
        if args.dry_run:
            print(describe(sweep))
            return 0
        start = time.perf_counter()
        target, errors = run_sweep(args, sweep)
    except (ConfigError, DataError, TrackingError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    table = summary(target.uri, target.experiment_id, target.parent_run_id)
    with pd.option_context("display.width", 160, "display.max_columns", 20, "display.float_format", "{:.4f}".format):
        print(f"\nsweep {sweep.name} finished in {time.perf_counter() - start:.0f} s; {errors} trial(s) errored")
        print(table.to_string(index=False) if not table.empty else "no trial runs were logged")
    print(f"\nMLflow UI:\n  {ui_command(target.uri, target.experiment_id)}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
