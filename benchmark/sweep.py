"""Run a search space as Ray Tune trials, each logged to MLflow under one parent run.

    python -m benchmark.sweep                      # quick space on digits, local Ray, ./mlflow.db
    python -m benchmark.sweep --space paper --datasets mnist --data-dir ../shared/data
    python -m benchmark.sweep --address auto --tracking-uri http://HEAD:5000   # on a cluster
    python -m benchmark.sweep --resume NAME        # finish a sweep whose driver died

Everything is validated before Ray starts or a run is created: bad input exits with code 2.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from benchmark.config import DATASETS, PRECISIONS, ConfigError, TrialConfig, check_dataset, normalise_dataset
from benchmark.data import DATA_DIR_ENV, DEFAULT_DATA_DIR, DataError, check_readable, fetch, resolve_data_dir
from benchmark.dry_run import describe
from benchmark.preflight import check_options, connect_ray
from benchmark.progress import SweepProgress, plural, ray_output, trial_dirname, trial_name
from benchmark.selection import OVERRIDES, SCHEDULERS, check_ranking, only, scheduler_for, with_overrides
from benchmark.space import SpaceOptions, Study, available_spaces, describe_spaces, load_space, space_studies, validate
from benchmark.storage import RemoteFolder, check_shared, storage_folder
from benchmark.summary import EXIT_INTERRUPTED, log_outcome, read_outcome, render
from benchmark.sweep_state import SWEEP_FILE, read_state, resumed_args, write_state
from benchmark.tracking import (
    DEFAULT_EXPERIMENT,
    INTERRUPTED,
    INTERRUPTED_TAG,
    TrackingError,
    TrackingTarget,
    check_reachable,
    close_interrupted,
    close_orphans,
    ensure_experiment,
    mark_interrupted,
    resolve_tracking_uri,
    start_sweep_run,
)

DEFAULT_PLAN = Path(__file__).resolve().parents[1] / "analysis" / "plans" / "paper.toml"


def read_plan(path: str) -> tuple[dict[str, str], str]:
    """The analysis plan's registration tags (name, SHA-256 of the file's bytes) and its text; ConfigError if unusable.
    Read with the standard library only: the sweep never imports `analysis` (which validates the plan in full)."""
    import hashlib

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    try:
        raw = Path(path).expanduser().read_bytes()
        name = tomllib.loads(raw.decode("utf-8")).get("name")
    except OSError as err:
        raise ConfigError(
            f"--plan {path}: cannot read it ({err.strerror or err}); pass a plan file such as analysis/plans/paper.toml"
        ) from None
    except (ValueError, UnicodeDecodeError) as err:
        raise ConfigError(f"--plan {path}: not a TOML plan ({err}); fix it or pass another") from None
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"--plan {path}: the plan has no `name`; give it one")
    return {"vqbench.plan": name.strip(), "vqbench.plan_hash": hashlib.sha256(raw).hexdigest()}, raw.decode("utf-8")


@dataclass(frozen=True)
class SweepPlan:
    name: str
    space: str
    studies: list[Study]
    trials: list[TrialConfig]  # validated; for searches, the bounds that were checked
    plan_tags: dict[str, str] | None = None  # the analysis plan registered on the runs
    plan_text: str = ""


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
        "refused with --address: a cluster's data is staged on every node (see the README's cluster section)",
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


def plan(args: argparse.Namespace) -> SweepPlan:
    check_options(args)
    chosen = (
        tuple(dict.fromkeys(normalise_dataset(d.strip()) for d in args.datasets.split(",") if d.strip()))
        if args.datasets is not None
        else None
    )
    if chosen == ():
        raise ConfigError(f"--datasets {args.datasets!r} names no dataset: choose from {', '.join(DATASETS)}, or name an image folder")
    for dataset in chosen or ():
        try:
            check_dataset(dataset)
        except ConfigError as err:
            raise ConfigError(f"--datasets: {err}") from None
    module = load_space(args.space)
    options = SpaceOptions(chosen, args.seeds, args.epochs, args.num_samples)
    found = space_studies(module, args.space, options)
    for key in ("seeds", "epochs"):  # the space must change when the option does, or the option would be ignored
        other = (
            space_studies(module, args.space, replace(options, **{key: getattr(options, key) + 1}))
            if getattr(options, key) is not None
            else None
        )
        if other is not None and [replace(s, search=sorted(s.search)) for s in other] == [
            replace(s, search=sorted(s.search)) for s in found
        ]:
            raise ConfigError(f"--{key}: space {args.space!r} does not use it (its trials stay the same whatever the value); leave it out")
    studies = [with_overrides(only(s, args.only), {key: getattr(args, key) for key in OVERRIDES}) for s in found]
    if args.num_samples is not None and not any(s.is_search for s in studies):
        raise ConfigError(f"--num-samples applies to searched spaces such as optuna; space {args.space!r} has fixed trials: leave it out")
    trials = []
    for study in studies:
        checked = validate(study)
        check_ranking(study, scheduler_for(study, args.scheduler), checked)
        trials += checked
    if not sum(s.trial_count() for s in studies):
        raise ConfigError(f"space {args.space!r} with --only {args.only!r} and --datasets {args.datasets!r} selects no trials")
    check_download_here(args, sorted({t.dataset for t in trials}))
    if not args.dry_run:  # a dry run reports the data instead of requiring it
        for dataset in sorted({t.dataset for t in trials}):
            if args.download:
                fetch(dataset, args.data_dir)  # once, here: a download that cannot work fails before Ray starts
            check_readable(dataset, args.data_dir)
    # a space file's stem, not its path: the name is a folder under --storage-path
    name = args.resume or args.name or f"{Path(args.space).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    plan_file = getattr(args, "plan", None)
    if plan_file == str(DEFAULT_PLAN) and not DEFAULT_PLAN.is_file():  # an install without the analysis plans
        print(
            f"warning: the default analysis plan {DEFAULT_PLAN} is not here: the runs are registered under no plan (pass --plan FILE)",
            file=sys.stderr,
        )
        plan_file = None
    plan_tags, plan_text = read_plan(plan_file) if plan_file else (None, "")
    return SweepPlan(name, args.space, studies, trials, plan_tags, plan_text)


def check_download_here(args: argparse.Namespace, datasets: list[str]) -> None:
    """--download fetches once, on this machine, before Ray starts: with a cluster the trials also run
    on nodes that would lack the data, so it is refused there with the ways to stage the data instead."""
    if not args.download or args.address in (None, "local"):
        return
    names = " ".join(d for d in datasets if d != "digits")
    if not names:
        raise ConfigError(
            "--download with --address: this sweep's only dataset, digits, is embedded in scikit-learn "
            "and every node has it: leave out --download"
        )
    raise ConfigError(
        "--download fetches data on this machine only, and with --address the trials run on the cluster's other nodes too, "
        "where they would fail without it: stage the data on every node, then leave out --download. Copy it at launch "
        f"(cluster.yaml's file_mounts copy ./data to ~/data on each node; fill it first with `python -m benchmark.data {names} "
        f"--data-dir data --download`), fetch it on each node as it starts (`python -m benchmark.data {names} --data-dir ~/data "
        "--download` in cluster.yaml's setup_commands), or mount shared storage (EFS, NFS) at the same path on every node "
        "and pass that path as --data-dir"
    )


def resolved_params(args: argparse.Namespace, sweep: SweepPlan, uri: str) -> dict[str, Any]:
    """The parent run's params: the values the sweep used, not the command line's Nones."""

    def values(key: str) -> str:
        return ",".join(str(v) for v in sorted({getattr(t, key) for t in sweep.trials}))

    return {
        "space": args.space,
        "datasets": values("dataset"),
        "models": values("model"),
        "seeds": values("seed"),
        "epochs": values("epochs"),
        "precision": values("precision"),
        "num_trials": sum(s.trial_count() for s in sweep.studies),
        "studies": ",".join(
            f"{s.label}:{scheduler_for(s, args.scheduler)}" + (f":{s.num_samples} samples" if s.is_search else "") for s in sweep.studies
        ),
        "only": args.only or "all",
        "data_dir": str(resolve_data_dir(args.data_dir)),
        "download": args.download,
        "address": args.address or "local",
        "tracking_uri": uri,
        "experiment": args.experiment,
        "name": sweep.name,
        "cpus_per_trial": args.cpus_per_trial,
        "gpus_per_trial": args.gpus_per_trial,
        "max_concurrent": args.max_concurrent or "as resources allow",
        "max_failures": args.max_failures,
        "storage_path": str(storage_folder(args.storage_path)),
        "log_model": not args.no_log_model,
        "plan": getattr(args, "plan", None) or "none",
    }


def tuner_for(
    study: Study, args: argparse.Namespace, common: dict[str, Any], storage: Path | RemoteFolder, restore: bool, progress: SweepProgress
):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    from benchmark.interrupt import MarkInterrupt
    from benchmark.tune_trial import tune_trial

    trainable = tune.with_resources(tune_trial, {"cpu": args.cpus_per_trial, "gpu": args.gpus_per_trial})
    if restore:
        return tune.Tuner.restore(str(storage / study.label), trainable=trainable, resume_errored=True)
    common = {**common, "study_tags": {**common.get("plan_tags", {}), **study.tags()}}
    if study.is_search:
        param_space = {**common, "trial": {**study.base, **study.search}}
        # lists make it a multi-objective Optuna study (its default TPE sampler handles several objectives)
        search_alg = OptunaSearch(
            metric=list(study.metric) if study.is_multi_objective else study.metric,
            mode=list(study.mode) if study.is_multi_objective else study.mode,
            seed=0,
        )
    else:
        param_space = {**common, "trial": tune.grid_search(list(study.configs))}
        search_alg = None
    use_asha = scheduler_for(study, args.scheduler) == "asha"
    scheduler = ASHAScheduler(time_attr="training_iteration", grace_period=2, max_t=10_000) if use_asha else FIFOScheduler()
    ranks = (use_asha or study.is_search) and not study.is_multi_objective  # Tune's own metric is one name; OptunaSearch holds the lists
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=study.metric if ranks else None,
            mode=study.mode if ranks else None,
            search_alg=search_alg,
            scheduler=scheduler,
            num_samples=study.num_samples if study.is_search else 1,
            max_concurrent_trials=args.max_concurrent or None,
            reuse_actors=True,
            trial_name_creator=trial_name,
            trial_dirname_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=study.label,
            storage_path=str(storage),
            failure_config=tune.FailureConfig(max_failures=args.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            verbose=1 if args.verbose else 0,
            callbacks=[progress, MarkInterrupt(partial(mark_interrupted, common["tracking"]["uri"], common["tracking"]["parent_run_id"]))],
        ),
    )


def unfinished_trials(study_folder: Path) -> list[str]:
    """Config ids of the trials an interrupt left unfinished, from the experiment state Ray saved on it."""
    from ray.tune import ExperimentAnalysis

    trials = ExperimentAnalysis(str(study_folder)).trials
    return [TrialConfig.from_dict(t.config["trial"]).config_id for t in trials if t.status in ("PENDING", "RUNNING", "PAUSED")]


def resume_command(sweep: SweepPlan, storage: Path | RemoteFolder) -> str:
    return f"python -m benchmark.sweep --resume {shlex.quote(sweep.name)} --storage-path {shlex.quote(str(storage.parent))}"


def run_sweep(args: argparse.Namespace, sweep: SweepPlan) -> tuple[TrackingTarget, bool]:
    """Run every study; returns where it logged and whether it was interrupted."""
    from mlflow.tracking import MlflowClient
    from ray import tune

    from benchmark.interrupt import fit_was_interrupted

    storage = storage_folder(args.storage_path) / sweep.name
    if args.resume:
        target, _ = read_state(storage)
        try:
            check_reachable(target.uri)
        except TrackingError as err:
            raise TrackingError(f"{err} (--resume {sweep.name} logs where the sweep began: make that store reachable again)") from None
        connect_ray(args)
        if args.address:  # a storage path some node of the cluster cannot see is refused
            check_shared(args.storage_path)
    else:
        if (storage / SWEEP_FILE).exists():
            raise ConfigError(f"--name {sweep.name}: a sweep of that name already exists in {storage}; pick another name or --resume it")
        uri = resolve_tracking_uri(args.tracking_uri)
        check_reachable(uri)
        started = connect_ray(args)
        try:
            if args.address:  # joined before any run exists: a storage path some node cannot see is refused
                check_shared(args.storage_path)
            storage.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            if started:
                import ray

                ray.shutdown()
            raise ConfigError(
                f"--storage-path {args.storage_path}: cannot create {storage} ({err.strerror}); pass a writable folder"
            ) from None
        client = MlflowClient(uri)
        experiment_id = ensure_experiment(client, args.experiment, uri)
        parent = start_sweep_run(
            client, experiment_id, sweep.name, resolved_params(args, sweep, uri), {"vqbench.space": sweep.space, **(sweep.plan_tags or {})}
        )
        if sweep.plan_text:
            client.log_text(parent, sweep.plan_text, f"plan/{Path(args.plan).name}")
        target = TrackingTarget(uri, experiment_id, parent)
        write_state(storage, target, args)
    client = MlflowClient(target.uri)
    print(
        f"sweep {sweep.name}: {plural(sum(s.trial_count() for s in sweep.studies), 'trial')}, MLflow {target.uri} "
        f"(experiment {target.experiment_id}, parent run {target.parent_run_id}); "
        f"if it dies: {resume_command(sweep, storage)}",
        flush=True,
    )
    if args.resume:
        closed = close_orphans(client, target.experiment_id, target.parent_run_id)
        print(f"resuming {sweep.name}: closed {closed} run(s) its driver left RUNNING as KILLED")
        client.update_run(target.parent_run_id, status="RUNNING")
        if INTERRUPTED_TAG in client.get_run(target.parent_run_id).data.tags:  # its trials may now stop early again
            client.delete_tag(target.parent_run_id, INTERRUPTED_TAG)

    common = {
        "tracking": asdict(target),
        "data_dir": str(resolve_data_dir(args.data_dir)),
        "log_model": not args.no_log_model,
        "plan_tags": sweep.plan_tags or {},
    }
    name_width = max(len(t.name) for t in sweep.trials)
    logging.getLogger("ray.tune.tune").addFilter(lambda record: "Tuner.restore" not in record.getMessage())  # ours is --resume
    status, interrupted = "FAILED", False
    try:
        for study in sweep.studies:
            restore = bool(args.resume) and tune.Tuner.can_restore(str(storage / study.label))
            with ray_output(args.verbose):
                stopped = fit_was_interrupted(tuner_for(study, args, common, storage, restore, SweepProgress(study.label, name_width)))
            if stopped:
                close_interrupted(client, target, unfinished_trials(storage / study.label))
                interrupted = True
                break
        status = "KILLED" if interrupted else "FINISHED"
    except KeyboardInterrupt:  # outside Ray Tune's own SIGINT handling, e.g. while it starts
        status, interrupted = "KILLED", True
    finally:
        close_orphans(
            client,
            target.experiment_id,
            target.parent_run_id,
            INTERRUPTED if status == "KILLED" else "orphaned: its worker died while it ran",
        )
        client.set_terminated(target.parent_run_id, status)
    return target, interrupted


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
    outcome = read_outcome(target, interrupted)
    from mlflow.tracking import MlflowClient

    log_outcome(MlflowClient(target.uri), target.parent_run_id, outcome, wall_s)
    storage = storage_folder(args.storage_path) / sweep.name
    print("\n" + render(outcome, sweep.name, wall_s, target, args.experiment, resume_command(sweep, storage)), flush=True)
    return outcome.exit_code


if __name__ == "__main__":
    sys.exit(main())
