"""The Ray Tune function trainable: one trial, reported per epoch, logged to its own MLflow run.

Each epoch reports its metrics and a checkpoint (model, optimizer, epoch and the MLflow run
id), so a retried or restored trial resumes where it stopped and continues its own run.
A diverging trial is not an error to retry: its run ends FAILED and the trial ends normally.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from benchmark.config import TrialConfig
from benchmark.saved_model import save_model
from benchmark.tracking import TrackingTarget, TrialRun
from benchmark.train import TrainState, TrialDiverged, pick_device
from benchmark.trial import run_trial, save_figures

CHECKPOINT_FILE = "state.pt"


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
    run = TrialRun.open(target, config, str(pick_device()), resume["mlflow_run_id"] if resume else None)
    run.client.set_tag(run.run_id, "vqbench.ray_node_id", ray.get_runtime_context().get_node_id())

    def on_epoch(state: TrainState, metrics: dict[str, float]) -> None:
        run.log_metrics(metrics, step=state.epoch)
        with tempfile.TemporaryDirectory() as folder:
            torch.save({**state.state_dict(), "mlflow_run_id": run.run_id}, Path(folder) / CHECKPOINT_FILE)
            tune.report({**metrics, "epoch": state.epoch, "mlflow_run_id": run.run_id}, checkpoint=tune.Checkpoint.from_directory(folder))

    try:
        result = run_trial(config, params["data_dir"], params["download"], resume, on_epoch)
        with tempfile.TemporaryDirectory() as folder:
            final = {k: v for k, v in result.metrics.items() if not k.startswith("train/")}  # those are logged per epoch
            files = save_figures(result, Path(folder))
            if params["log_model"]:
                files.append(save_model(result.model, config, Path(folder)))
            run.finish(final, config.epochs, files, config)
    except TrialDiverged as err:
        run.fail(err)
        # inf keeps schedulers and searchers that rank on the loss working, and ranks it last.
        tune.report({"epoch": config.epochs, "diverged": 1.0, "train/loss": float("inf"), "train/recon_loss": float("inf"), "mlflow_run_id": run.run_id})
        return
    except BaseException as err:
        run.fail(err)
        raise
    tune.report({**result.metrics, "epoch": config.epochs, "diverged": 0.0, "mlflow_run_id": run.run_id})
