"""The Ray Tune function trainable: one trial, reported per epoch, logged to its own MLflow run.

Each epoch reports its metrics and a checkpoint (model, optimizer, epoch and the MLflow run
id), so a retried or restored trial resumes where it stopped and continues its own run.
How a trial ends decides what Ray and MLflow are told:
- finished: the run ends FINISHED with the final evaluation;
- stopped by the scheduler (Ray raises SystemExit in `tune.report`): FINISHED, tagged with
  the epoch it stopped at; KILLED instead if the driver marked the sweep interrupted
  (`benchmark.sweep.interrupt`);
- diverged, or a deterministic error (bad data, a bug): FAILED at once, and the trial
  returns normally so that Ray does not retry what would fail the same way again;
- a crash worth retrying (`RETRYABLE`, or the worker process dying): FAILED, and Ray retries
  it into the same run.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from benchmark.config import TrialConfig
from benchmark.evaluation import train_probe
from benchmark.evaluation.probe_predictions import save_predictions
from benchmark.evaluation.probe_settings import ProbeSettings
from benchmark.fault_injection import InjectedFault, before_checkpoint
from benchmark.result_keys import DIVERGED, EPOCH, FAILED, MLFLOW_RUN_ID
from benchmark.saved_model import save_model
from benchmark.tracking.runs import TrialRun
from benchmark.tracking.store import TrackingTarget
from benchmark.train import TrainState, TrialDiverged, pick_device
from benchmark.trial import run_trial, save_figures

CHECKPOINT_FILE = "state.pt"
# A reused actor waits TUNE_FUNCTION_THREAD_TIMEOUT_S (Ray's default: 2 s) for a stopped trial's thread before it
# gives the actor up and kills it. That thread is still closing the trial's MLflow run (tags, status), which took longer
# than 2 s on a loaded machine: the run was left RUNNING and then closed as orphaned. Read in this actor's process.
os.environ.setdefault("TUNE_FUNCTION_THREAD_TIMEOUT_S", "60")
# Failures that may not happen again: out of memory (other trials share the device), a network
# hiccup, and the fault injected to test retries. Anything else is reported once and not retried.
RETRYABLE = (MemoryError, torch.OutOfMemoryError, ConnectionError, TimeoutError, InjectedFault)
# inf (the losses) and the worst values (the per-epoch probe) keep schedulers and searchers that rank
# on them working, and rank a failed trial last.
FAILED_RESULT = {"train/loss": float("inf"), "train/recon_loss": float("inf"), **train_probe.WORST}
PER_EPOCH = ("train/", train_probe.PREFIX)  # logged with each epoch, so not again with the final evaluation


def load_checkpoint() -> dict | None:
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        return torch.load(Path(folder) / CHECKPOINT_FILE, map_location="cpu", weights_only=False)


def tune_trial(params: dict[str, Any]) -> None:
    config = TrialConfig.from_dict(params["trial"])
    target = TrackingTarget(**params["tracking"])
    resume = load_checkpoint()
    cpus = tune.get_context().get_trial_resources().required_resources.get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))
    finished = TrialRun.final_metrics(target, resume["mlflow_run_id"]) if resume else None
    if finished is not None:
        # It finished while an interrupted sweep was stopping; Ray saw it unfinished and restored it.
        tune.report({**finished, EPOCH: config.epochs, FAILED: 0.0, DIVERGED: 0.0, MLFLOW_RUN_ID: resume["mlflow_run_id"]})
        return
    tags = {"vqbench.ray_node_id": ray.get_runtime_context().get_node_id(), **params.get("study_tags", {})}
    run = TrialRun.open(
        target, config, str(pick_device()), resume["mlflow_run_id"] if resume else None, tags=tags, settings=ProbeSettings().to_params()
    )

    def on_epoch(state: TrainState, metrics: dict[str, float]) -> None:
        run.log_epoch(metrics, state.epoch)
        before_checkpoint(config, state.epoch, resumed=resume is not None)  # a test hook: logged, not yet checkpointed
        with tempfile.TemporaryDirectory() as folder:
            torch.save({**state.state_dict(), "mlflow_run_id": run.run_id}, Path(folder) / CHECKPOINT_FILE)
            tune.report({**metrics, EPOCH: state.epoch, MLFLOW_RUN_ID: run.run_id}, checkpoint=tune.Checkpoint.from_directory(folder))

    try:
        result = run_trial(config, params["data_dir"], resume=resume, on_epoch=on_epoch)
        with tempfile.TemporaryDirectory() as folder:
            final = {k: v for k, v in result.metrics.items() if not k.startswith(PER_EPOCH)}
            start = time.perf_counter()
            files = save_figures(result, Path(folder))
            files += save_predictions(result.evaluation.predictions, Path(folder))
            final["time/figures_s"] = time.perf_counter() - start  # the t-SNE: evaluation work, counted apart from the fixed cost
            if params["log_model"]:
                files.append(save_model(result.model, config, Path(folder), result.card.channels, len(result.card.class_names)))
            run.finish(final, config.epochs, files, config, result.card.tags())
    except SystemExit:
        run.stopped(run.logged_through)
        raise
    except RETRYABLE as err:
        run.fail(err)
        raise
    except Exception as err:
        run.fail(err)
        diverged = float(isinstance(err, TrialDiverged))
        tune.report({**FAILED_RESULT, EPOCH: run.logged_through, FAILED: 1.0, DIVERGED: diverged, MLFLOW_RUN_ID: run.run_id})
        return
    except BaseException as err:  # KeyboardInterrupt and the like: not the trial's fault
        run.fail(err, "KILLED")
        raise
    tune.report({**result.metrics, EPOCH: config.epochs, FAILED: 0.0, DIVERGED: 0.0, MLFLOW_RUN_ID: run.run_id})
