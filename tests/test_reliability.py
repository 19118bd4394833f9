"""Bad input, failing trials, a killed sweep, a lost node, a restarting server: nothing lost or duplicated."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import ray
import torch
from mlflow.tracking import MlflowClient

from benchmark.config import TrialConfig
from benchmark.fault_injection import FAULT_MODE_ENV
from benchmark.sweep import cli
from benchmark.sweep.state import SWEEP_FILE
from benchmark.trial import run_trial
from tests.conftest import REPO, TRIAL_ARTIFACTS

# ---------------------------------------------------------------- bad input: exit 2, nothing written


def write_space(folder: Path, configs: list[dict]) -> Path:
    path = folder / "my_space.py"
    path.write_text(
        "from benchmark.space import Study\n"
        "DESCRIPTION = 'test space'\n"
        f"def studies(options):\n    return [Study('mine', tuple({configs!r}))]\n"
    )
    return path


BAD_INPUT = [
    (["--space", "nope"], "space='nope' is not known"),
    (["--datasets", "image net"], "dataset='image net' is not allowed"),  # not a name; a bare word would be an image folder
    (["--epochs", "0"], "--epochs=0"),
    (["--seeds", "0"], "--seeds=0"),
    (["--gpus-per-trial", "1.5"], "--gpus-per-trial=1.5"),
    (["--gpus-per-trial", "0.3"], "does not pack"),
    (["--datasets", "mnist", "--data-dir", "EMPTY"], "train-images-idx3-ubyte"),
    (["--tracking-uri", "http://127.0.0.1:9"], "cannot be reached"),
    (["--tracking-uri", "mlruns"], "is not a URI"),
    (["--resume", "never-ran"], "never-ran"),
    (["--only", "colour=red"], "unknown config key(s) ['colour']"),
]
BAD_SPACES = [
    ([{"model": "transformer"}], "model='transformer' is not allowed"),
    ([{"num_codes": 0}], "num_codes=0"),
    ([{"code_dim": 0}], "code_dim=0"),
    ([{"batch_size": 0}], "batch_size=0"),
    ([{"epochs": 0}], "epochs=0"),
    ([{"beta": -0.1}], "beta=-0.1"),
    ([{"lr": 0}], "lr=0"),
    ([{"model": "vae", "learning_rate": 0.1}], "unknown config key(s) ['learning_rate']"),
]


def refused(tmp_path: Path, monkeypatch, capsys, argv: list[str], expected: str) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "EMPTY").mkdir(exist_ok=True)
    before = set(tmp_path.iterdir())
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and expected in err and "Traceback" not in err
    assert len(err.splitlines()) == 1
    assert set(tmp_path.iterdir()) == before, "bad input left files behind (an MLflow store or Ray results)"
    assert not ray.is_initialized()


@pytest.mark.parametrize("argv, expected", BAD_INPUT)
def test_bad_sweep_options_are_refused_before_anything_starts(tmp_path, monkeypatch, capsys, argv, expected):
    refused(tmp_path, monkeypatch, capsys, argv, expected)


@pytest.mark.parametrize("configs, expected", BAD_SPACES)
def test_bad_values_in_a_space_are_refused_before_anything_starts(tmp_path, monkeypatch, capsys, configs, expected):
    space = write_space(tmp_path, configs)
    refused(tmp_path, monkeypatch, capsys, ["--space", str(space)], expected)


def test_trial_cli_refuses_bad_values_with_exit_2():
    for args, expected in (
        (["--num-codes", "0"], "num_codes=0"),
        (["--model", "gan"], "model='gan'"),
        (["--lr", "-1"], "lr=-1"),
        (["--figures", str(REPO / "README.md")], "README.md is a file, not a folder"),  # before training, not after
        (["--data-dir", str(REPO / "README.md")], "README.md is a file: pass the data root folder"),
    ):
        out = subprocess.run([sys.executable, "-m", "benchmark.trial", *args], capture_output=True, text=True, cwd=REPO)
        assert out.returncode == 2 and expected in out.stderr and "Traceback" not in out.stderr


# ---------------------------------------------------------------- failing trials inside a sweep


def runs_by_config(client: MlflowClient, experiment: str) -> dict[str, list]:
    exp = client.get_experiment_by_name(experiment)
    found: dict[str, list] = {}
    for run in client.search_runs([exp.experiment_id], "tags.`vqbench.role` = 'trial'", max_results=1000):
        found.setdefault(run.data.tags["vqbench.config_id"], []).append(run)
    return found


@pytest.fixture
def local_ray_with_env(monkeypatch, request):
    """Workers inherit the driver's environment at ray.init: set fault modes before it."""
    for key, value in getattr(request, "param", {}).items():
        monkeypatch.setenv(key, value)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_diverging_trial_fails_alone_and_the_sweep_goes_on(tmp_path, local_ray_with_env):
    good = {"model": "vae", "dataset": "digits", "epochs": 2}
    bad = {"model": "vqvae", "dataset": "digits", "epochs": 2, "lr": 1e9, "num_codes": 16}
    space = write_space(tmp_path, [good, bad])
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    rc = cli.main(["--space", str(space), "--tracking-uri", uri, "--experiment", "t", "--storage-path", str(tmp_path / "ray")])
    assert rc == 0
    runs = runs_by_config(MlflowClient(uri), "t")
    by_id = {TrialConfig.from_params(rs[0].data.params).lr: rs for rs in runs.values()}
    assert [r.info.status for r in by_id[1e-3]] == ["FINISHED"]
    (failed,) = by_id[1e9]
    assert failed.info.status == "FAILED"
    assert "TrialDiverged" in failed.data.tags["vqbench.error"] and "nan" in failed.data.tags["vqbench.error"]
    # it stopped at once: the diverging epoch is the last one it ran
    assert len(MlflowClient(uri).get_metric_history(failed.info.run_id, "train/loss")) == 0


@pytest.mark.slow
@pytest.mark.parametrize(
    "local_ray_with_env",
    [{}, {FAULT_MODE_ENV: "exit"}, {FAULT_MODE_ENV: "exit-before-checkpoint"}],
    indirect=True,
    ids=["exception", "killed-worker", "killed-between-logging-and-checkpointing"],
)
def test_crashing_trial_is_retried_from_its_checkpoint_in_the_same_run(tmp_path, local_ray_with_env):
    space = write_space(tmp_path, [{"model": "vqvae", "dataset": "digits", "epochs": 3, "num_codes": 16, "fail_at_epoch": 2}])
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    rc = cli.main(
        ["--space", str(space), "--tracking-uri", uri, "--experiment", "t", "--storage-path", str(tmp_path / "ray"), "--max-failures", "1"]
    )
    assert rc == 0
    client = MlflowClient(uri)
    (runs,) = runs_by_config(client, "t").values()
    assert [r.info.status for r in runs] == ["FINISHED"], "the retry opened a second run instead of continuing its own"
    run = runs[0]
    assert run.data.tags.get("vqbench.resumed") == "true"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert steps == [1, 2, 3], "the retry did not resume after its last checkpoint, or logged an epoch twice"
    assert "probe/latent/mlp_acc" in run.data.metrics


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.time() + timeout_s
    while not condition():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(1)


def sweep_process(tmp_path: Path, *args: str, log: str = "driver.log") -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "benchmark.sweep", *args],
        cwd=tmp_path,
        stdout=open(tmp_path / log, "a"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_for_sweep_start(storage: Path, name: str, driver: subprocess.Popen) -> None:
    """The driver creates the sqlite store; a second process opening it mid-creation can deadlock both."""
    wait_for(lambda: (storage / name / SWEEP_FILE).is_file() or driver.poll() is not None, 600, "the sweep to start")
    assert driver.poll() is None, f"the sweep driver exited early with {driver.returncode}"


def finished_steps(client: MlflowClient, experiment: str) -> list[tuple[str, int]]:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], "tags.`vqbench.role` = 'trial'")
    return [(r.info.status, len(client.get_metric_history(r.info.run_id, "train/loss"))) for r in runs]


def assert_each_config_finished_once(client: MlflowClient, experiment: str, expected: int) -> Counter:
    runs = runs_by_config(client, experiment)
    assert len(runs) == expected
    statuses = Counter(r.info.status for rs in runs.values() for r in rs)
    for config_id, rs in runs.items():
        assert [r.info.status for r in rs].count("FINISHED") == 1, f"config {config_id}: {[r.info.status for r in rs]}"
    assert statuses["RUNNING"] == 0
    return statuses


@pytest.mark.slow
def test_killed_sweep_resumes_to_exactly_one_finished_run_per_trial(tmp_path):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = ["--address", cluster.address, "--storage-path", str(tmp_path / "ray")]
    try:
        driver = sweep_process(
            tmp_path,
            "--space",
            "quick",
            "--seeds",
            "1",
            "--epochs",
            "3",
            "--tracking-uri",
            uri,
            "--experiment",
            "t",
            "--name",
            "k",
            *common,
        )
        wait_for_sweep_start(tmp_path / "ray", "k", driver)
        client = MlflowClient(uri)
        # kill once one trial has finished and another is part-way through its epochs
        wait_for(
            lambda: (s := finished_steps(client, "t")) and ("FINISHED", 3) in s and any(st == "RUNNING" and n >= 1 for st, n in s),
            600,
            "a finished trial and one mid-training",
        )
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        finished_before = {r.info.run_id for rs in runs_by_config(client, "t").values() for r in rs if r.info.status == "FINISHED"}
        resumed = sweep_process(tmp_path, "--resume", "k", *common)
        assert resumed.wait(timeout=900) == 0, (tmp_path / "driver.log").read_text()[-3000:]
    finally:
        cluster.shutdown()
    statuses = assert_each_config_finished_once(client, "t", expected=4)
    runs = runs_by_config(client, "t")
    for rs in runs.values():
        for r in rs:
            if r.info.run_id in finished_before:  # finished trials were not re-run
                assert "vqbench.resumed" not in r.data.tags
                assert len(client.get_metric_history(r.info.run_id, "train/loss")) == 3
    parent = client.search_runs([client.get_experiment_by_name("t").experiment_id], "tags.`vqbench.role` = 'sweep'")
    assert [p.info.status for p in parent] == ["FINISHED"]
    print("runs by status after kill + resume:", dict(statuses))


@pytest.mark.slow
def test_lost_node_mid_sweep_still_finishes_every_trial_once(tmp_path):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    worker = cluster.add_node(num_cpus=1)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    try:
        driver = sweep_process(
            tmp_path,
            "--space",
            "smoke",
            "--seeds",
            "2",
            "--epochs",
            "4",
            "--tracking-uri",
            uri,
            "--name",
            "n",
            "--experiment",
            "t",
            "--address",
            cluster.address,
            "--storage-path",
            str(tmp_path / "ray"),
            "--max-failures",
            "3",
        )
        wait_for_sweep_start(tmp_path / "ray", "n", driver)
        client = MlflowClient(uri)

        def worker_trial_checkpointed() -> bool:
            exp = client.get_experiment_by_name("t")
            if exp is None:
                return False
            runs = client.search_runs([exp.experiment_id], f"tags.`vqbench.ray_node_id` = '{worker.node_id}'")
            return any(len(client.get_metric_history(r.info.run_id, "train/loss")) >= 1 for r in runs)

        wait_for(worker_trial_checkpointed, 600, "a trial on the worker node to finish an epoch")
        cluster.remove_node(worker)
        assert driver.wait(timeout=900) == 0, (tmp_path / "driver.log").read_text()[-3000:]
    finally:
        cluster.shutdown()
    statuses = assert_each_config_finished_once(MlflowClient(uri), "t", expected=4)
    print("runs by status after losing a node:", dict(statuses))


@pytest.mark.slow
def test_tracking_server_restart_mid_sweep_loses_no_final_metrics(tmp_path, mlflow_server):
    driver = sweep_process(
        tmp_path,
        "--space",
        "smoke",
        "--epochs",
        "6",
        "--tracking-uri",
        mlflow_server.uri,
        "--experiment",
        "t",
        "--storage-path",
        str(tmp_path / "ray"),
    )
    client = MlflowClient(mlflow_server.uri)
    try:
        wait_for(lambda: any(n >= 1 for _, n in finished_steps(client, "t")), 600, "the first epoch to be logged")
        mlflow_server.stop()
        time.sleep(3)
        mlflow_server.start()
        assert driver.wait(timeout=900) == 0, (tmp_path / "driver.log").read_text()[-3000:]
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert_each_config_finished_once(client, "t", expected=2)
    for rs in runs_by_config(client, "t").values():
        run = rs[0]
        assert {"probe/latent/mlp_acc", "recon/ssim", "recon/mse"} <= set(run.data.metrics)
        assert sorted(a.path for a in client.list_artifacts(run.info.run_id)) == TRIAL_ARTIFACTS


# ---------------------------------------------------------------- reproducibility


@pytest.mark.slow
def test_logged_params_alone_rebuild_the_logged_metrics(tmp_path, local_ray_with_env):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert cli.main(["--space", "smoke", "--tracking-uri", uri, "--experiment", "t", "--storage-path", str(tmp_path / "ray")]) == 0
    client = MlflowClient(uri)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the trial ran: one CPU per trial
    try:
        for rs in runs_by_config(client, "t").values():
            run = rs[0]
            result = run_trial(TrialConfig.from_params(run.data.params))
            logged = {k: v for k, v in run.data.metrics.items() if not k.startswith(("time/", "train/", "train_probe/seconds"))}
            rebuilt = {k: result.metrics[k] for k in logged}
            assert rebuilt == pytest.approx(logged, rel=1e-6, abs=1e-9), json.dumps({"logged": logged, "rebuilt": rebuilt})
    finally:
        torch.set_num_threads(threads)
