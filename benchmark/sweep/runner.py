"""A planned sweep run: Ray joined, the parent run begun (or, on --resume, reconnected and reopened), each study's
Ray Tune Tuner set up (its space, scheduler, callbacks) and fitted in turn, and every run closed whatever happens.
"""

from __future__ import annotations

import argparse
import logging
import shlex
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from benchmark.config import ConfigError, TrialConfig
from benchmark.data_files import resolve_data_dir
from benchmark.result_keys import EPOCH, MLFLOW_RUN_ID
from benchmark.space import Study
from benchmark.sweep.plan import SweepPlan, resolved_params
from benchmark.sweep.preflight import connect_ray
from benchmark.sweep.progress import SweepProgress, outcome, plural, ray_output, trial_dirname, trial_name
from benchmark.sweep.selection import scheduler_for
from benchmark.sweep.state import SWEEP_FILE, read_state, write_state
from benchmark.sweep.storage import RemoteFolder, check_shared, storage_folder
from benchmark.tracking.runs import (
    INTERRUPTED,
    INTERRUPTED_TAG,
    close_interrupted,
    close_orphans,
    close_stopped,
    mark_interrupted,
    start_sweep_run,
)
from benchmark.tracking.store import (
    TrackingError,
    TrackingTarget,
    check_reachable,
    ensure_experiment,
    resolve_tracking_uri,
    worker_credentials,
)

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient
    from ray.tune import Result


def tuner_for(
    study: Study, args: argparse.Namespace, common: dict[str, Any], storage: Path | RemoteFolder, restore: bool, progress: SweepProgress
):
    """The study's Ray Tune Tuner: restored from its folder on --resume, else new, with its space, schedule and callbacks."""
    from ray import tune

    from benchmark.sweep.trainable import tune_trial

    trainable = tune.with_resources(tune_trial, {"cpu": args.cpus_per_trial, "gpu": args.gpus_per_trial})
    if restore:
        return restore_tuner(str(storage / study.label), trainable)
    common = {**common, "study_tags": {**common.get("plan_tags", {}), **study.tags()}}
    param_space, search_alg = space_for(study, common)
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune_config_for(study, args, search_alg),
        run_config=run_config_for(study, args, storage, progress, common["tracking"]),
    )


def restore_tuner(folder: str, trainable: Any):
    """Ray Tune's saved Tuner, or one clear error when it names code that is no longer there: its state pickles the
    callbacks and searchers by module path, so a sweep started before a module moved cannot be restored by this code."""
    from ray import tune

    try:
        return tune.Tuner.restore(folder, trainable=trainable, resume_errored=True)
    except (ModuleNotFoundError, AttributeError) as err:
        raise ConfigError(
            f"--resume: the sweep's Ray state in {folder} was written by another version of vqbench ({type(err).__name__}: {err}). "
            "Resume it with the version that started it (its commit is the parent run's `vqbench.git_commit` tag), "
            "or run the sweep again under a new --name: its finished trials stay in MLflow"
        ) from None


def space_for(study: Study, common: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """Ray Tune's param space and search algorithm: Optuna over the study's domains, or a grid of its fixed configs."""
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    if not study.is_search:
        return {**common, "trial": tune.grid_search(list(study.configs))}, None
    # lists make it a multi-objective Optuna study (its default TPE sampler handles several objectives)
    search_alg = OptunaSearch(
        metric=list(study.metric) if study.is_multi_objective else study.metric,
        mode=list(study.mode) if study.is_multi_objective else study.mode,
        seed=0,
    )
    return {**common, "trial": {**study.base, **study.search}}, search_alg


def tune_config_for(study: Study, args: argparse.Namespace, search_alg: Any):
    """How Tune schedules the study: ASHA or FIFO, the metric it ranks on, samples, concurrency, reused actors."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    use_asha = scheduler_for(study, args.scheduler) == "asha"
    scheduler = ASHAScheduler(time_attr="training_iteration", grace_period=2, max_t=10_000) if use_asha else FIFOScheduler()
    ranks = (use_asha or study.is_search) and not study.is_multi_objective  # Tune's own metric is one name; OptunaSearch holds the lists
    return tune.TuneConfig(
        metric=study.metric if ranks else None,
        mode=study.mode if ranks else None,
        search_alg=search_alg,
        scheduler=scheduler,
        num_samples=study.num_samples if study.is_search else 1,
        max_concurrent_trials=args.max_concurrent or None,
        reuse_actors=True,
        trial_name_creator=trial_name,
        trial_dirname_creator=trial_dirname,
    )


def run_config_for(study: Study, args: argparse.Namespace, storage: Path | RemoteFolder, progress: SweepProgress, tracking: dict[str, str]):
    """Where the study's trials keep their checkpoints, how often a crashed one is retried, and the callbacks."""
    from ray import tune

    from benchmark.sweep.interrupt import MarkInterrupt

    return tune.RunConfig(
        name=study.label,
        storage_path=str(storage),
        failure_config=tune.FailureConfig(max_failures=args.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        verbose=1 if args.verbose else 0,
        callbacks=[progress, MarkInterrupt(partial(mark_interrupted, tracking["uri"], tracking["parent_run_id"]))],
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

    storage = storage_folder(args.storage_path) / sweep.name
    target = reconnect(args, sweep, storage) if args.resume else begin(args, sweep, storage)
    client = MlflowClient(target.uri)
    print(
        f"sweep {sweep.name}: {plural(sum(s.trial_count() for s in sweep.studies), 'trial')}, MLflow {target.uri} "
        f"(experiment {target.experiment_id}, parent run {target.parent_run_id}); "
        f"if it dies: {resume_command(sweep, storage)}",
        flush=True,
    )
    if args.resume:
        reopen_parent(client, sweep, target)
    status, interrupted = "FAILED", False
    try:
        interrupted = run_studies(args, sweep, target, storage, client)
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


def reconnect(args: argparse.Namespace, sweep: SweepPlan, storage: Path | RemoteFolder) -> TrackingTarget:
    """--resume: the store the sweep began in, reachable again, and Ray joined."""
    target, _ = read_state(storage)
    try:
        check_reachable(target.uri)
    except TrackingError as err:
        raise TrackingError(f"{err} (--resume {sweep.name} logs where the sweep began: make that store reachable again)") from None
    connect_ray(args, worker_credentials(target.uri))
    if args.address:  # a storage path some node of the cluster cannot see is refused
        check_shared(args.storage_path)
    return target


def begin(args: argparse.Namespace, sweep: SweepPlan, storage: Path | RemoteFolder) -> TrackingTarget:
    """A new sweep: Ray joined and its folder made before its parent run exists, then the run and the saved state."""
    from mlflow.tracking import MlflowClient

    if (storage / SWEEP_FILE).exists():
        raise ConfigError(f"--name {sweep.name}: a sweep of that name already exists in {storage}; pick another name or --resume it")
    uri = resolve_tracking_uri(args.tracking_uri)
    check_reachable(uri)
    make_storage(args, storage, started_ray=connect_ray(args, worker_credentials(uri)))
    client = MlflowClient(uri)
    experiment_id = ensure_experiment(client, args.experiment, uri)
    parent = start_sweep_run(
        client, experiment_id, sweep.name, resolved_params(args, sweep, uri), {"vqbench.space": sweep.space, **(sweep.plan_tags or {})}
    )
    if sweep.plan_text:
        client.log_text(parent, sweep.plan_text, f"plan/{Path(args.plan).name}")
    target = TrackingTarget(uri, experiment_id, parent)
    write_state(storage, target, args)
    return target


def make_storage(args: argparse.Namespace, storage: Path | RemoteFolder, started_ray: bool) -> None:
    """The sweep's folder, seen from every node of a cluster; where it cannot be made, the Ray this sweep started stops."""
    try:
        if args.address:  # joined before any run exists: a storage path some node cannot see is refused
            check_shared(args.storage_path)
        storage.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        if started_ray:
            import ray

            ray.shutdown()
        raise ConfigError(f"--storage-path {args.storage_path}: cannot create {storage} ({err.strerror}); pass a writable folder") from None


def reopen_parent(client: MlflowClient, sweep: SweepPlan, target: TrackingTarget) -> None:
    """--resume: the runs a dead driver left RUNNING closed as KILLED, the parent running again and no longer interrupted."""
    closed = close_orphans(client, target.experiment_id, target.parent_run_id)
    print(f"resuming {sweep.name}: closed {closed} run(s) its driver left RUNNING as KILLED")
    client.update_run(target.parent_run_id, status="RUNNING")
    if INTERRUPTED_TAG in client.get_run(target.parent_run_id).data.tags:  # its trials may now stop early again
        client.delete_tag(target.parent_run_id, INTERRUPTED_TAG)


def run_studies(
    args: argparse.Namespace, sweep: SweepPlan, target: TrackingTarget, storage: Path | RemoteFolder, client: MlflowClient
) -> bool:
    """Each study's Tuner in turn (restored where --resume finds it); True if Ctrl-C stopped one, which ends the sweep."""
    from ray import tune

    from benchmark.sweep.interrupt import fit_watching_interrupts

    common = {
        "tracking": asdict(target),
        "data_dir": str(resolve_data_dir(args.data_dir)),
        "log_model": not args.no_log_model,
        "plan_tags": sweep.plan_tags or {},
    }
    name_width = max(len(t.name) for t in sweep.trials)
    logging.getLogger("ray.tune.tune").addFilter(lambda record: "Tuner.restore" not in record.getMessage())  # ours is --resume
    for study in sweep.studies:
        restore = bool(args.resume) and tune.Tuner.can_restore(str(storage / study.label))
        with ray_output(args.verbose):
            results, stopped = fit_watching_interrupts(
                tuner_for(study, args, common, storage, restore, SweepProgress(study.label, name_width))
            )
        if stopped:
            close_interrupted(client, target, unfinished_trials(storage / study.label))
            return True
        close_stopped(client, target.parent_run_id, stopped_early(results))
    return False


def stopped_early(results: Iterable[Result]) -> dict[str, int]:
    """Run id -> last epoch of each trial the scheduler stopped: it reported epochs, then no final result
    (which carries FAILED) and no error."""
    stopped = {}
    for result in results:
        metrics = result.metrics or {}
        if result.error is None and MLFLOW_RUN_ID in metrics:
            if outcome(metrics, TrialConfig.from_dict(result.config["trial"]).epochs) == "stopped":
                stopped[metrics[MLFLOW_RUN_ID]] = int(metrics.get(EPOCH, 0))
    return stopped
