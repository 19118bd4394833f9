"""MLflow: a parent run per sweep, one child run per trial, logged from inside the trial.

The tracking URI and the parent run id travel in the trial's config, so workers on other nodes log
to the same place (`benchmark.tracking.store`).
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from benchmark.config import TrialConfig
from benchmark.tracking.provenance import GIT_COMMIT, SOURCE_TAGS, package_versions
from benchmark.tracking.store import TrackingTarget, with_retries


def start_sweep_run(client: MlflowClient, experiment_id: str, run_name: str, params: dict[str, Any], tags: dict[str, str]) -> str:
    run = client.create_run(
        experiment_id, run_name=run_name, tags={"vqbench.role": "sweep", "vqbench.git_commit": GIT_COMMIT, **SOURCE_TAGS, **tags}
    )
    client.log_batch(run.info.run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
    return run.info.run_id


ERROR_TAG = "vqbench.error"
INTERRUPTED = "interrupted: the sweep was stopped (Ctrl-C) while this trial ran; --resume continues it"
STOPPED_TAG = "vqbench.stopped_at_epoch"  # set on a run the scheduler stopped early; it ends FINISHED
INTERRUPTED_TAG = "vqbench.interrupted"  # set on a sweep's parent run by Ctrl-C, before Ray Tune stops its trials


def mark_interrupted(uri: str, parent_run_id: str) -> None:
    """Called by the driver on Ctrl-C; --resume deletes the mark."""
    MlflowClient(uri).set_tag(parent_run_id, INTERRUPTED_TAG, "true")


def trial_tags(config: TrialConfig, parent_run_id: str, device: str) -> dict[str, str]:
    """What a trial's run is, as tags: the sweep finds a retried trial's run by them and the analysis reads them back."""
    return {
        "mlflow.parentRunId": parent_run_id,
        "vqbench.role": "trial",
        "vqbench.model": config.model,
        "vqbench.dataset": config.dataset,
        "vqbench.label_embedding": config.label_embedding,
        "vqbench.leaks_label": str(config.leaks_label).lower(),
        "vqbench.config_id": config.config_id,
        "vqbench.device": device,
    }


EPOCH_METRIC = "train/loss"  # logged once per epoch: its history says which epochs a run already holds


@dataclass
class TrialRun:
    """One trial's child run: one config, one run, whatever happens to it. A retried, resumed or
    restored trial reopens its own run (by the checkpoint's run id, else by its config id) and
    logs only the epochs the run does not hold yet."""

    client: MlflowClient
    run_id: str
    parent_run_id: str
    logged_through: int = 0  # the last epoch already in the run's history

    @classmethod
    def open(
        cls,
        target: TrackingTarget,
        config: TrialConfig,
        device: str,
        run_id: str | None = None,
        tags: dict[str, str] | None = None,
        settings: dict[str, Any] | None = None,
    ) -> "TrialRun":
        """`tags` (where the trial runs; its study and objectives in a search) are set on a new run at its
        creation and on a reopened one in the same call as its resumed tag: one round trip each, not one per tag.
        `settings`: params beside the config's, such as the probe's (`probe.*`), which the caller knows and
        tracking need not (so that tracking, and the analysis reading it, never import torch)."""
        client = MlflowClient(target.uri)
        extra = tags or {}
        run_id = run_id or with_retries(lambda: cls._unfinished_run(client, target, config))
        if run_id is not None:
            return cls._reopen(client, run_id, target.parent_run_id, extra)
        run_tags = {
            **trial_tags(config, target.parent_run_id, device),
            "vqbench.git_commit": GIT_COMMIT,
            **SOURCE_TAGS,
            "vqbench.versions": json.dumps(package_versions()),
            **extra,
        }
        run = with_retries(lambda: client.create_run(target.experiment_id, run_name=config.name, tags=run_tags))
        logged = {**config.to_dict(), **(settings or {})}
        params = [Param(k, str(v)) for k, v in logged.items()]
        with_retries(lambda: client.log_batch(run.info.run_id, params=params))
        return cls(client, run.info.run_id, target.parent_run_id)

    @staticmethod
    def final_metrics(target: TrackingTarget, run_id: str) -> dict[str, float] | None:
        """The run's metrics if it holds its final evaluation already (FINISHED, not stopped early), else None."""
        run = with_retries(lambda: MlflowClient(target.uri).get_run(run_id))
        return run.data.metrics if run.info.status == "FINISHED" and STOPPED_TAG not in run.data.tags else None

    @staticmethod
    def _unfinished_run(client: MlflowClient, target: TrackingTarget, config: TrialConfig) -> str | None:
        """A run of this config under this sweep that a failure before its first checkpoint left behind."""
        runs = client.search_runs(
            [target.experiment_id],
            f"tags.mlflow.parentRunId = '{target.parent_run_id}' and tags.`vqbench.config_id` = '{config.config_id}' "
            "and attributes.status != 'FINISHED'",
            max_results=1,
        )
        return runs[0].info.run_id if runs else None

    @classmethod
    def _reopen(cls, client: MlflowClient, run_id: str, parent_run_id: str, tags: dict[str, str]) -> "TrialRun":
        run = with_retries(lambda: client.get_run(run_id))
        for key in (ERROR_TAG, STOPPED_TAG):  # what the last attempt ended with no longer holds
            if key in run.data.tags:
                with_retries(lambda: client.delete_tag(run_id, key))
        with_retries(lambda: client.update_run(run_id, status="RUNNING"))
        resumed = [RunTag(k, v) for k, v in {"vqbench.resumed": "true", **tags}.items()]
        with_retries(lambda: client.log_batch(run_id, tags=resumed))
        history = with_retries(lambda: client.get_metric_history(run_id, EPOCH_METRIC))
        return cls(client, run_id, parent_run_id, max((m.step for m in history), default=0))

    def log_epoch(self, metrics: dict[str, float], epoch: int) -> None:
        """An epoch the run already holds (logged before a crash that beat its checkpoint) is not logged twice."""
        if epoch > self.logged_through:
            self.log_metrics(metrics, epoch)
            self.logged_through = epoch

    def log_metrics(self, metrics: dict[str, float], step: int, tags: dict[str, str] | None = None) -> None:
        stamp = int(time.time() * 1000)
        batch = [Metric(k, float(v), stamp, step) for k, v in metrics.items()]
        labels = [RunTag(k, v) for k, v in (tags or {}).items()]
        with_retries(lambda: self.client.log_batch(self.run_id, metrics=batch, tags=labels))

    def log_artifacts(self, files: list[Path]) -> None:
        for path in files:
            with_retries(lambda: self.client.log_artifact(self.run_id, str(path)))

    def finish(
        self, metrics: dict[str, float], step: int, files: list[Path], config: TrialConfig, tags: dict[str, str] | None = None
    ) -> None:
        """`tags`: what only the trial knows once it has read its data (the dataset's card), in the final metrics' batch."""
        self.log_metrics(metrics, step, tags)
        with tempfile.TemporaryDirectory() as tmp:
            config_file = Path(tmp) / "config.json"
            config_file.write_text(json.dumps(config.to_dict(), indent=2))
            self.log_artifacts([*files, config_file])
        with_retries(lambda: self.client.set_terminated(self.run_id, "FINISHED"))

    def stopped(self, epoch: int) -> None:
        """Ray Tune stopped the trial: `end_stopped`."""
        end_stopped(self.client, self.run_id, self.parent_run_id, epoch)

    def fail(self, error: BaseException, status: str = "FAILED") -> None:
        message = f"{type(error).__name__}: {error}"[:5000]
        with_retries(lambda: self.client.set_tag(self.run_id, ERROR_TAG, message))
        with_retries(lambda: self.client.set_terminated(self.run_id, status))


def end_stopped(client: MlflowClient, run_id: str, parent_run_id: str, epoch: int) -> None:
    """A trial Ray Tune stopped. Its scheduler: a normal ending, without the final evaluation.
    Ctrl-C on the sweep (the parent run holds the driver's mark): KILLED, for --resume to continue."""
    parent = with_retries(lambda: client.get_run(parent_run_id))
    if INTERRUPTED_TAG in parent.data.tags:
        with_retries(lambda: client.set_tag(run_id, ERROR_TAG, INTERRUPTED))
        with_retries(lambda: client.set_terminated(run_id, "KILLED"))
        return
    with_retries(lambda: client.set_tag(run_id, STOPPED_TAG, str(epoch)))
    with_retries(lambda: client.set_terminated(run_id, "FINISHED"))


def close_stopped(client: MlflowClient, parent_run_id: str, stopped_at: dict[str, int]) -> int:
    """The driver ends the runs of trials the scheduler stopped (run id -> last epoch) that are still RUNNING:
    Ray Tune does not wait for a stopped trial's thread before it tears its worker down (it waits only to reuse
    the actor), so the trial may die before it ends its own run, which would then read as orphaned."""
    closed = 0
    for run_id, epoch in stopped_at.items():
        if with_retries(lambda run_id=run_id: client.get_run(run_id)).info.status == "RUNNING":
            end_stopped(client, run_id, parent_run_id, epoch)
            closed += 1
    return closed


def close_orphans(
    client: MlflowClient, experiment_id: str, parent_run_id: str, reason: str = "orphaned: its sweep driver or worker died while it ran"
) -> int:
    """Runs left RUNNING by a killed or interrupted driver or worker end KILLED; a resumed trial reopens its own."""
    runs = client.search_runs(
        [experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}' and attributes.status = 'RUNNING'", max_results=10_000
    )
    for run in runs:
        client.set_tag(run.info.run_id, ERROR_TAG, reason)
        client.set_terminated(run.info.run_id, "KILLED")
    return len(runs)


def close_interrupted(client: MlflowClient, target: TrackingTarget, config_ids: list[str]) -> None:
    """Trials an interrupt stopped raised the same SystemExit as those the scheduler stops: KILLED, not stopped early.
    A run that finished meanwhile stays FINISHED."""
    for config_id in config_ids:
        runs = client.search_runs(
            [target.experiment_id], f"tags.mlflow.parentRunId = '{target.parent_run_id}' and tags.`vqbench.config_id` = '{config_id}'"
        )
        for run in runs:
            if run.info.status == "FINISHED" and STOPPED_TAG not in run.data.tags:
                continue
            if STOPPED_TAG in run.data.tags:
                client.delete_tag(run.info.run_id, STOPPED_TAG)
            client.set_tag(run.info.run_id, ERROR_TAG, INTERRUPTED)
            client.set_terminated(run.info.run_id, "KILLED")
