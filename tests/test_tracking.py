"""A trial's MLflow traffic on a sqlite store, without Ray: what it writes and in how many round trips."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from benchmark.config import TrialConfig
from benchmark.evaluation.probe_settings import ProbeSettings
from benchmark.tracking.runs import EPOCH_METRIC, ERROR_TAG, INTERRUPTED, STOPPED_TAG, TrialRun, mark_interrupted, start_sweep_run
from benchmark.tracking.store import TrackingTarget, ensure_experiment

CONFIG = TrialConfig(model="vqvae", dataset="digits", epochs=2, num_codes=16)


@pytest.fixture
def target(tmp_path) -> TrackingTarget:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = ensure_experiment(client, "tracking-test", uri)
    return TrackingTarget(uri, experiment, start_sweep_run(client, experiment, "sweep", {}, {}))


@pytest.fixture
def calls(monkeypatch) -> collections.Counter:
    """Every MlflowClient method a trial calls, counted: each is a round trip to the store or server."""
    counter: collections.Counter = collections.Counter()
    for name in (
        "search_runs",
        "create_run",
        "log_batch",
        "set_tag",
        "delete_tag",
        "update_run",
        "get_run",
        "get_metric_history",
        "log_artifact",
        "set_terminated",
    ):
        method = getattr(MlflowClient, name)

        def counted(self, *args, _name=name, _method=method, **kwargs):
            counter[_name] += 1
            return _method(self, *args, **kwargs)

        monkeypatch.setattr(MlflowClient, name, counted)
    return counter


def a_trial(target: TrackingTarget, files: list[Path], run_id: str | None = None, node: str = "node-a") -> str:
    run = TrialRun.open(target, CONFIG, "cpu", run_id, tags={"vqbench.ray_node_id": node}, settings=ProbeSettings().to_params())
    for epoch in (1, 2):
        run.log_epoch({EPOCH_METRIC: 1.0 / epoch, "train/recon_loss": 0.5}, epoch)
    run.finish({"probe/latent/mlp_acc": 0.9}, 2, files, CONFIG, {"dataset.hash": "f00d", "dataset.note": "a test card"})
    return run.run_id


def test_a_trial_costs_one_round_trip_per_step(target, tmp_path, calls):
    figure = tmp_path / "tsne.png"
    figure.write_bytes(b"png")
    run_id = a_trial(target, [figure])
    # open: look for an unfinished run, create it with every tag, log params; one batch per epoch;
    # finish: the final metrics, one upload per file (and config.json), the end
    assert calls == {"search_runs": 1, "create_run": 1, "log_batch": 1 + 2 + 1, "log_artifact": 2, "set_terminated": 1}
    run = MlflowClient(target.uri).get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["vqbench.ray_node_id"] == "node-a"
    assert run.data.params["model"] == "vqvae" and "probe.patience" in run.data.params
    assert run.data.metrics["probe/latent/mlp_acc"] == 0.9
    assert run.data.tags["dataset.hash"] == "f00d" and run.data.tags["dataset.note"] == "a test card"  # with the final metrics
    from benchmark.tracking.provenance import GIT_COMMIT

    if GIT_COMMIT != "unknown":  # MLflow's own source-version tag, which its UI shows
        assert run.data.tags["mlflow.source.git.commit"] == GIT_COMMIT.removesuffix("-dirty")


def test_a_reopened_run_takes_the_new_node_and_skips_the_epochs_it_holds(target, tmp_path, calls):
    first = TrialRun.open(target, CONFIG, "cpu", tags={"vqbench.ray_node_id": "node-a"})
    first.log_epoch({EPOCH_METRIC: 1.0}, 1)
    first.fail(ConnectionError("worker lost"))
    calls.clear()
    again = TrialRun.open(target, CONFIG, "cpu", first.run_id, tags={"vqbench.ray_node_id": "node-b"})
    assert again.run_id == first.run_id and again.logged_through == 1
    assert calls["set_tag"] == 0 and calls["log_batch"] == 1, "resumed and node tags go in one batch"
    again.log_epoch({EPOCH_METRIC: 9.0}, 1)  # replayed from an older checkpoint: not logged twice
    run = MlflowClient(target.uri).get_run(first.run_id)
    assert run.info.status == "RUNNING" and "vqbench.error" not in run.data.tags
    assert run.data.tags["vqbench.resumed"] == "true" and run.data.tags["vqbench.ray_node_id"] == "node-b"
    assert [m.value for m in MlflowClient(target.uri).get_metric_history(first.run_id, EPOCH_METRIC)] == [1.0]


def test_a_retry_without_checkpoint_finds_its_unfinished_run_by_config(target, tmp_path):
    lost = TrialRun.open(target, CONFIG, "cpu", tags={"vqbench.ray_node_id": "node-a"})
    assert TrialRun.open(target, CONFIG, "cpu", tags={"vqbench.ray_node_id": "node-b"}).run_id == lost.run_id


def test_a_stopped_trial_ends_stopped_early_unless_the_driver_marked_the_sweep_interrupted(target):
    """Ray Tune stops a trial the same way for its scheduler and for Ctrl-C; the parent run's mark tells them apart."""
    client = MlflowClient(target.uri)
    by_scheduler = TrialRun.open(target, CONFIG, "cpu")
    by_scheduler.log_epoch({EPOCH_METRIC: 1.0}, 1)
    by_scheduler.stopped(1)
    run = client.get_run(by_scheduler.run_id)
    assert run.info.status == "FINISHED" and run.data.tags[STOPPED_TAG] == "1" and ERROR_TAG not in run.data.tags

    mark_interrupted(target.uri, target.parent_run_id)
    by_interrupt = TrialRun.open(target, TrialConfig(model="vae", dataset="digits", epochs=2), "cpu")
    by_interrupt.stopped(1)
    run = client.get_run(by_interrupt.run_id)
    assert run.info.status == "KILLED" and run.data.tags[ERROR_TAG] == INTERRUPTED and STOPPED_TAG not in run.data.tags


def test_only_what_can_succeed_on_a_retry_is_retried():
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST, TEMPORARILY_UNAVAILABLE

    from benchmark.tracking.store import with_retries

    def failing(error: Exception):
        calls = []

        def call():
            calls.append(1)
            if len(calls) < 3:
                raise error
            return "ok"

        return call, calls

    for transient in (
        ConnectionError("reset"),
        MlflowException("database is locked", error_code=INTERNAL_ERROR),
        MlflowException("server restarting", error_code=TEMPORARILY_UNAVAILABLE),
    ):
        call, calls = failing(transient)
        assert with_retries(call, first_wait_s=0.001) == "ok" and len(calls) == 3
    for deterministic in (
        MlflowException("bad key", error_code=INVALID_PARAMETER_VALUE),
        MlflowException("no such run", error_code=RESOURCE_DOES_NOT_EXIST),
        TypeError("a bug"),
    ):
        call, calls = failing(deterministic)
        with pytest.raises(type(deterministic)):
            with_retries(call, first_wait_s=0.001)
        assert len(calls) == 1, f"{deterministic!r} was asked again"
