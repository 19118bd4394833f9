"""Sweeps end to end: real Ray, a real MLflow store or server, real trials on digits."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import ray
import yaml
from mlflow.tracking import MlflowClient

from benchmark import load_model
from benchmark.config import TrialConfig
from benchmark.evaluation.probe_settings import PROTOCOL
from benchmark.result_keys import versioned_predictions_file
from benchmark.sweep import cli
from benchmark.sweep import plan as sweep_plan
from tests.conftest import REPO, TRIAL_ARTIFACTS


def run_sweep(tmp_path: Path, *extra: str, uri: str | None = None, name: str = "s") -> tuple[int, MlflowClient, str]:
    uri = uri or f"sqlite:///{tmp_path / 'mlflow.db'}"
    rc = cli.main(
        ["--space", "smoke", "--tracking-uri", uri, "--storage-path", str(tmp_path / "ray"), "--experiment", "t", "--name", name, *extra]
    )
    client = MlflowClient(uri)
    return rc, client, client.get_experiment_by_name("t").experiment_id


def children(client: MlflowClient, experiment_id: str) -> tuple:
    parent = client.search_runs([experiment_id], "tags.`vqbench.role` = 'sweep'")
    assert len(parent) == 1
    kids = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent[0].info.run_id}'")
    return parent[0], kids


@pytest.mark.slow
def test_sweep_logs_parent_and_child_runs_to_sqlite(tmp_path, local_ray):
    rc, client, exp = run_sweep(tmp_path, "--epochs", "2")
    assert rc == 0
    parent, kids = children(client, exp)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["space"] == "smoke" and parent.data.params["num_trials"] == "2"
    # the values used, not the command line's Nones; and the outcome as metrics
    assert {k: parent.data.params[k] for k in ("datasets", "models", "seeds", "epochs", "studies")} == {
        "datasets": "digits",
        "models": "vae,vqvae",
        "seeds": "0",
        "epochs": "2",
        "studies": "smoke:fifo",
    }
    assert (
        parent.data.metrics["trials_finished"] == 2 and parent.data.metrics["trials_failed"] == 0 and parent.data.metrics["wall_time_s"] > 0
    )
    assert sorted(k.data.params["model"] for k in kids) == ["vae", "vqvae"]
    for run in kids:
        assert run.info.status == "FINISHED"
        config = TrialConfig.from_params(run.data.params)  # a run is re-created from its params alone
        assert run.data.tags["vqbench.config_id"] == config.config_id
        assert config.epochs == 2 and config.dataset == "digits"
        history = client.get_metric_history(run.info.run_id, "train/loss")
        assert [m.step for m in history] == [1, 2]
        metrics = run.data.metrics
        assert 0.1 < metrics["probe/latent/mlp_acc"] <= 1.0
        assert 0 < metrics["recon/mse"] < 1 and -1 < metrics["recon/ssim"] <= 1
        assert ("codebook/usage" in metrics) == (config.model == "vqvae")
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert sorted(artifacts) == TRIAL_ARTIFACTS
        local = Path(client.download_artifacts(run.info.run_id, "reconstructions.png", str(tmp_path)))
        assert local.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        for tag in ("vqbench.device", "vqbench.git_commit", "vqbench.versions", "vqbench.model", "vqbench.dataset"):
            assert run.data.tags[tag]


@pytest.mark.slow
def test_sweep_logs_over_http_to_a_real_mlflow_server(tmp_path, local_ray, mlflow_server):
    rc, client, exp = run_sweep(tmp_path, "--no-log-model", uri=mlflow_server.uri)
    assert rc == 0
    parent, kids = children(client, exp)
    assert len(kids) == 2 and all(k.info.status == "FINISHED" for k in kids)
    for run in kids:
        assert {a.path for a in client.list_artifacts(run.info.run_id)} == {
            "reconstructions.png",
            "tsne.png",
            "config.json",
            "predictions.npz",
            versioned_predictions_file(PROTOCOL),
        }
        assert "probe/latent/mlp_acc" in run.data.metrics
        with pytest.raises(FileNotFoundError, match="--no-log-model"):
            load_model(run.info.run_id, mlflow_server.uri)
    assert any((tmp_path / "server-artifacts").rglob("tsne.png"))  # the server stored what workers uploaded


@pytest.mark.slow
def test_two_node_cluster_runs_trials_on_both_nodes(tmp_path):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        rc, client, exp = run_sweep(tmp_path, "--max-concurrent", "2")
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert rc == 0
    _, kids = children(client, exp)
    assert len(kids) == 2 and all(k.info.status == "FINISHED" for k in kids)
    assert len({k.data.tags["vqbench.ray_node_id"] for k in kids}) == 2


@pytest.mark.slow
def test_quarter_gpus_pack_four_trials_at_once(tmp_path):
    ray.init(address="local", num_cpus=4, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        rc, client, exp = run_sweep(tmp_path, "--seeds", "2", "--epochs", "3", "--gpus-per-trial", "0.25")
    finally:
        ray.shutdown()
    assert rc == 0
    _, kids = children(client, exp)
    assert len(kids) == 4
    starts = [k.info.start_time for k in kids]
    ends = [k.info.end_time for k in kids]
    assert max(starts) < min(ends), "the four trials did not all run at the same time on the one logical GPU"


def dry_run(capsys, *args: str) -> list[str]:
    assert cli.main(["--dry-run", *args]) == 0
    return capsys.readouterr().out.strip().splitlines()


@pytest.mark.parametrize(
    "args, count",
    [
        (("--space", "smoke"), 2),
        (("--space", "quick"), 8),
        (("--space", "paper", "--datasets", "digits"), 12),
        (("--space", "paper", "--datasets", "digits", "--only", "label_embedding=none"), 6),
        (("--space", "grid", "--datasets", "digits"), 288),
        (("--space", "grid", "--datasets", "digits", "--seeds", "1"), 96),
        (("--space", "optuna", "--datasets", "digits", "--num-samples", "5"), 10),
        (("--space", "sensitivity", "--datasets", "digits"), 39),
        (("--space", "sensitivity", "--datasets", "digits", "--only", "code_dim=64,num_codes=512,beta=0.25"), 15),
        (("--space", "sensitivity", "--datasets", "digits", "--only", "model=vae,kl_weight=0.001|0.10|1"), 9),
    ],
)
def test_dry_run_counts_every_space(capsys, args, count):
    assert dry_run(capsys, *args)[-1].startswith(f"{count} trials")


def test_grid_has_no_duplicate_vae_trials(capsys):
    lines = [line for line in dry_run(capsys, "--space", "grid", "--datasets", "digits", "--seeds", "1") if line.startswith("grid: ")]
    configs = [TrialConfig.from_dict(json.loads(line.split(": ", 1)[1])) for line in lines]
    assert len({c.config_id for c in configs}) == len(configs) == 96
    vae = [c for c in configs if c.model == "vae"]
    assert len(vae) == 16 and all(c.num_codes == 512 and c.beta == 0.25 for c in vae)  # K and beta left at defaults


def test_sensitivity_varies_one_knob_at_a_time_and_runs_the_centre_once(capsys):
    lines = [
        line
        for line in dry_run(capsys, "--space", "sensitivity", "--datasets", "digits", "--seeds", "1")
        if line.startswith("sensitivity: ")
    ]
    configs = [TrialConfig.from_dict(json.loads(line.split(": ", 1)[1])) for line in lines]
    assert len({c.config_id for c in configs}) == len(configs) == 13
    centre = {"num_codes": 512, "code_dim": 64, "beta": 0.25}
    vq = [c for c in configs if c.model == "vqvae"]
    assert sum(all(getattr(c, k) == v for k, v in centre.items()) for c in vq) == 1
    assert all(
        sum(getattr(c, k) != v for k, v in centre.items()) == 1 for c in vq if not all(getattr(c, k) == v for k, v in centre.items())
    )
    assert sorted(c.kl_weight for c in configs if c.model == "vae") == [0.001, 0.01, 0.1, 1.0]
    assert all(c.label_embedding == "none" and c.epochs == 10 for c in configs)


def test_precision_applies_to_every_trial_and_reaches_the_parent_params(capsys):
    lines = [
        line for line in dry_run(capsys, "--space", "paper", "--datasets", "digits", "--precision", "bf16") if line.startswith("paper: ")
    ]
    assert len(lines) == 12 and all(json.loads(line.split(": ", 1)[1])["precision"] == "bf16" for line in lines)
    args = cli.parse_args(["--space", "paper", "--datasets", "digits", "--precision", "bf16", "--dry-run"])
    assert sweep_plan.resolved_params(args, sweep_plan.plan(args), "sqlite:///x.db")["precision"] == "bf16"


def test_dry_run_starts_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dry_run(capsys, "--space", "quick")
    assert list(tmp_path.iterdir()) == []
    assert not ray.is_initialized()


def test_cluster_yaml_passes_rays_offline_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    validate_config(prepare_config(config))
    broken = {**config, "available_node_types": {**config["available_node_types"], "gpu_worker": {"min_workers": 0}}}
    with pytest.raises(Exception):
        validate_config(prepare_config(broken))


def test_git_commit_names_head_and_marks_a_dirty_checkout(tmp_path):
    from benchmark.tracking.provenance import read_git_commit

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True, capture_output=True, text=True
        ).stdout.strip()

    assert read_git_commit(tmp_path) == "unknown"  # not a checkout
    git("init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", "code.py")
    git("commit", "-qm", "first")
    head = git("rev-parse", "HEAD")
    assert read_git_commit(tmp_path) == head
    (tmp_path / "notes.txt").write_text("untracked files do not change the code that runs\n")
    assert read_git_commit(tmp_path) == head
    (tmp_path / "code.py").write_text("x = 2\n")
    assert read_git_commit(tmp_path) == f"{head}-dirty"


def test_sensitivity_runs_every_seed_of_a_config_before_the_next_config(capsys):
    lines = [line for line in dry_run(capsys, "--space", "sensitivity", "--datasets", "digits") if line.startswith("sensitivity: ")]
    configs = [TrialConfig.from_dict(json.loads(line.split(": ", 1)[1])) for line in lines]
    assert [c.seed for c in configs[:6]] == [0, 1, 2, 0, 1, 2]
    assert (
        len({c.config_id for c in configs[:3]}) == 3
        and len({(c.model, c.num_codes, c.code_dim, c.beta, c.kl_weight) for c in configs[:3]}) == 1
    )
