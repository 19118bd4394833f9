"""Re-probing saved models against a real MLflow sqlite store: the unchanged protocol reproduces a run's
metrics exactly; a new protocol is logged beside the old metrics, never over them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from analysis import export
from analysis.report import main as report_main
from analysis.runs_csv import read_runs_csv
from benchmark import reprobe
from benchmark.config import TrialConfig
from benchmark.data import load_dataset
from benchmark.evaluation.evaluate import evaluate
from benchmark.evaluation.probe_predictions import read_predictions, save_predictions
from benchmark.evaluation.probe_settings import PROTOCOL, ProbeSettings
from benchmark.saved_model import save_model
from benchmark.tracking.runs import TrialRun, start_sweep_run
from benchmark.tracking.store import TrackingTarget, ensure_experiment
from benchmark.train import init_state, train_epoch

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CURRENT, NEW = PROTOCOL, str(int(PROTOCOL) + 1)  # the protocol a trial logs, and a later one to re-probe under
SMALL = ProbeSettings(
    max_epochs=3,
    mlp_epochs=3,
    batch_size=128,
    mlp_lrs=(2e-3,),
    mlp_weight_decays=(1e-4,),
    l2_grid=(1.0, 1e-2, 1e-4),
    label_budgets=(100,),
    knn_train_size=500,
)


@dataclasses.dataclass
class Store:
    uri: str
    parent: str
    run_id: str


@pytest.fixture
def store(tmp_path) -> Store:
    """One finished trial run (a 1-epoch VQ-VAE on digits), logged as a sweep logs it, probed with SMALL."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = ensure_experiment(client, "reprobe-test", uri)
    parent = start_sweep_run(client, experiment, "sweep", {}, {})
    config = TrialConfig(model="vqvae", dataset="digits", epochs=1, num_codes=16, code_dim=8, train_probe_every=0)
    data = load_dataset("digits")
    state = init_state(config, data, torch.device("cpu"))
    train_epoch(state, data, config)
    evaluation = evaluate(state.model, data, config, SMALL)
    run = TrialRun.open(TrackingTarget(uri, experiment, parent), config, "cpu", settings=ProbeSettings().to_params())
    folder = tmp_path / "files"
    folder.mkdir()
    files = [*save_predictions(evaluation.predictions, folder), save_model(state.model, config, folder, data.channels, data.num_classes)]
    run.finish(evaluation.metrics, config.epochs, files, config)
    client.set_terminated(parent, "FINISHED")
    return Store(uri, parent, run.run_id)


def test_unchanged_protocol_reproduces_the_run_exactly(store):
    before = MlflowClient(store.uri).get_run(store.run_id).data
    assert before.params["probe.protocol"] == CURRENT
    outcome = reprobe.reprobe_run(store.uri, store.run_id, settings=SMALL, check=True)
    assert outcome.status == "checked"
    expected = {k: v for k, v in before.metrics.items() if k.startswith(f"probe_v{CURRENT}/")}
    assert len(expected) > 30 and outcome.metrics == expected  # exactly, not approximately
    assert {k: before.metrics["probe/" + k[len(f"probe_v{CURRENT}/") :]] for k in outcome.metrics} == outcome.metrics
    assert MlflowClient(store.uri).get_run(store.run_id).data.metrics == before.metrics  # --check logs nothing


def test_a_new_protocol_is_logged_beside_the_old_metrics(store, tmp_path):
    client = MlflowClient(store.uri)
    before = client.get_run(store.run_id).data
    new = dataclasses.replace(SMALL, protocol=NEW, l2_grid=(1e-1, 1e-3))
    outcome = reprobe.reprobe_run(store.uri, store.run_id, settings=new)
    assert outcome.status == "logged"
    after = client.get_run(store.run_id).data
    assert {k: v for k, v in after.metrics.items() if not k.startswith(f"probe_v{NEW}/")} == before.metrics  # the old ones kept
    assert {k for k in after.metrics if k.startswith(f"probe_v{NEW}/")} == {
        f"probe_v{NEW}/" + k[len(f"probe_v{CURRENT}/") :] for k in before.metrics if k.startswith(f"probe_v{CURRENT}/")
    }
    assert after.params[f"probe_v{NEW}.protocol"] == NEW and after.params[f"probe_v{NEW}.l2_grid"] == "(0.1, 0.001)"
    assert after.params["probe.protocol"] == CURRENT and after.params["probe.l2_grid"] == before.params["probe.l2_grid"]
    history = client.get_metric_history(store.run_id, f"probe_v{NEW}/latent/linear_acc")
    assert [m.step for m in history] == [1]
    # the new protocol's predictions beside the run's own
    artifacts = {a.path for a in client.list_artifacts(store.run_id)}
    assert {"predictions.npz", f"predictions_v{CURRENT}.npz", f"predictions_v{NEW}.npz", "model.pt"} <= artifacts
    preds = read_predictions(Path(client.download_artifacts(store.run_id, f"predictions_v{NEW}.npz", str(tmp_path))))
    assert np.array_equal(preds["labels"], load_dataset("digits").test_y.numpy())
    assert {"latent/linear", "latent/mlp", "latent/knn", "codes/linear", "pixels/linear_n100"} <= set(preds)
    # once logged, skipped; --force logs the same again without clashing with the params it holds
    assert reprobe.reprobe_run(store.uri, store.run_id, settings=new).status.startswith(f"skipped: it holds protocol {NEW}")
    assert reprobe.reprobe_run(store.uri, store.run_id, settings=new, force=True).status == "logged"
    assert reprobe.reprobe_run(store.uri, store.run_id, settings=new, check=True).status == "checked"


def test_runs_are_selected_by_sweep_experiment_or_id_and_unfinished_ones_skipped(store, capsys):
    client = MlflowClient(store.uri)
    assert reprobe.select_runs(client, None, None, store.parent) == [store.run_id]
    assert reprobe.select_runs(client, None, "reprobe-test", None) == [store.run_id]  # trial runs only, not the sweep's
    assert reprobe.select_runs(client, ["a", "b"], None, None) == ["a", "b"]
    # the CLI: the trial holds the current protocol already (skipped, nothing computed); an unknown experiment is an error
    assert reprobe.main(["--tracking-uri", store.uri, "--sweep", store.parent]) == 0
    assert f"skipped: it holds protocol {CURRENT}" in capsys.readouterr().out
    assert reprobe.main(["--tracking-uri", store.uri, "--experiment", "nope"]) == 2
    running = client.create_run(client.get_run(store.parent).info.experiment_id).info.run_id
    assert reprobe.reprobe_run(store.uri, running, settings=SMALL).status == "skipped: the run is RUNNING, not FINISHED"


def test_export_and_report_read_the_protocol_asked_for(store, tmp_path, capsys):
    new = dataclasses.replace(SMALL, protocol=NEW, l2_grid=(1e-1, 1e-3))
    assert reprobe.reprobe_run(store.uri, store.run_id, settings=new).status == "logged"
    held = MlflowClient(store.uri).get_run(store.run_id).data
    common = ["--experiment", "reprobe-test", "--tracking-uri", store.uri]
    for protocol in (CURRENT, NEW):  # the run's own, and the one it was re-probed under
        out = tmp_path / f"v{protocol}.csv"
        assert export.main([*common, "--out", str(out), "--protocol", protocol]) == 0
        row = read_runs_csv([out]).iloc[0]
        assert (
            str(row["probe.protocol"]) == protocol
            and str(row["probe.l2_grid"]) == held.params[f"probe_v{protocol}.l2_grid" if protocol == NEW else "probe.l2_grid"]
        )
        assert row["probe/latent/linear_acc"] == held.metrics[f"probe_v{protocol}/latent/linear_acc"]
        assert not [c for c in row.index if c.startswith("probe_v")]  # one protocol per CSV, under the plain names
        assert (row["recon/ssim"], row["run_id"]) == (held.metrics["recon/ssim"], store.run_id)
        # and that protocol's per-image predictions beside it
        stored = read_predictions(
            Path(MlflowClient(store.uri).download_artifacts(store.run_id, f"predictions_v{protocol}.npz", str(tmp_path)))
        )
        with np.load(tmp_path / f"v{protocol}.predictions.npz") as exported:
            assert np.array_equal(exported[f"{store.run_id}/latent/mlp"], stored["latent/mlp"])
    capsys.readouterr()
    # a protocol the run was never probed under: refused, naming the fix, and nothing written
    never = str(int(NEW) + 1)
    assert export.main([*common, "--out", str(tmp_path / f"v{never}.csv"), "--protocol", never]) == 2
    err = capsys.readouterr().err
    assert f"1 finished run(s) hold no probe protocol {never} metrics" in err and "python -m benchmark.reprobe" in err
    assert not (tmp_path / f"v{never}.csv").exists()
    # a CSV holds the protocol it was exported with: the report takes no --protocol beside --runs
    assert report_main(["--runs", str(tmp_path / f"v{NEW}.csv"), "--protocol", NEW, "--out", str(tmp_path / "r")]) == 2
    assert "a CSV holds the protocol it was exported with" in capsys.readouterr().err
