"""A tracking server that asks for a login (a real `mlflow server --app-name basic-auth` on 127.0.0.1),
and a Ray cluster that asks for a token.

A sweep with the right login logs every run, its trials included (they get the login from the
driver, not from their environment); with a wrong or missing one it stops in one line, exit 2,
before Ray starts or any run exists. A Ray cluster that refuses the sweep's token is one line too.
The whole cluster, both authentications on, is `tests/test_cluster.py`'s cycle.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO

LOGIN_ENV = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


def sweep_in_a_process(tmp_path: Path, uri: str, login: dict[str, str]) -> subprocess.CompletedProcess:
    """The sweep as a user starts it, with `login` as its only credentials (no ~/.mlflow/credentials: a fresh HOME)."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in LOGIN_ENV}
    env.update(login, HOME=str(home), RAY_TMPDIR=str(tmp_path / "ray-tmp"), PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "benchmark.sweep", "--space", "smoke", "--tracking-uri", uri, "--storage-path", str(tmp_path / "ray")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_a_wrong_or_missing_login_stops_the_sweep_before_ray_starts(tmp_path, mlflow_auth_server, monkeypatch):
    uri = mlflow_auth_server.uri
    wrong = sweep_in_a_process(tmp_path, uri, {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": "not-the-password"})
    missing = sweep_in_a_process(tmp_path, uri, {})
    assert (wrong.returncode, missing.returncode) == (2, 2), wrong.stderr[-2000:] + missing.stderr[-2000:]
    assert wrong.stderr.strip().splitlines() == [
        f"error: the tracking server {uri} refused the credentials in MLFLOW_TRACKING_USERNAME/PASSWORD (401): "
        "set the right ones (a cluster's head keeps the admin's in ~/.mlflow/credentials)"
    ]
    assert missing.stderr.strip().splitlines() == [
        f"error: the tracking server {uri} asks for a login (401): set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD "
        "(a cluster's head keeps the admin's in ~/.mlflow/credentials)"
    ]
    assert not (tmp_path / "ray-tmp").exists(), "Ray started before the refusal"
    assert not (tmp_path / "ray").exists(), "the sweep's storage was made before the refusal"
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", mlflow_auth_server.admin_password)
    assert [e.name for e in MlflowClient(uri).search_experiments()] == ["Default"], "a refused sweep created an experiment"


@pytest.mark.slow
def test_a_sweep_with_the_login_logs_its_runs_from_workers_that_lack_it(tmp_path, mlflow_auth_server, monkeypatch):
    """The Ray nodes start before the login is in the driver's environment, so the trials cannot inherit it:
    it reaches them through the sweep (`worker_credentials`), as on a cluster's workers."""
    import ray
    from ray.cluster_utils import Cluster

    from benchmark.sweep import cli

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", mlflow_auth_server.admin_password)
    try:
        rc = cli.main(
            [
                "--space",
                "smoke",
                "--address",
                cluster.address,
                "--cpus-per-trial",
                "1",
                "--no-log-model",
                "--tracking-uri",
                mlflow_auth_server.uri,
                "--storage-path",
                str(tmp_path / "ray"),
                "--experiment",
                "t",
            ]
        )
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert rc == 0
    client = MlflowClient(mlflow_auth_server.uri)
    experiment = client.get_experiment_by_name("t").experiment_id
    parent = client.search_runs([experiment], "tags.`vqbench.role` = 'sweep'")
    kids = client.search_runs([experiment], "tags.`vqbench.role` = 'trial'")
    assert [p.info.status for p in parent] == ["FINISHED"]
    assert sorted(k.data.params["model"] for k in kids) == ["vae", "vqvae"] and all(k.info.status == "FINISHED" for k in kids)
    assert all("probe/latent/mlp_acc" in k.data.metrics for k in kids)
    password = mlflow_auth_server.admin_password
    assert password not in str([k.data.params for k in kids] + [parent[0].data.params]), "the login was logged as a param"
    stored = [p for p in (tmp_path / "ray").rglob("*") if p.is_file() and password.encode() in p.read_bytes()]
    assert stored == [], "the login was written with Ray Tune's state"


def test_a_ray_cluster_that_refuses_the_token_is_named_with_the_fix(monkeypatch):
    """`ray.init` reports InvalidAuthToken as a ConnectionError caused by an AuthenticationError (seen with Ray 2.60)."""
    import ray
    from ray.exceptions import AuthenticationError

    from benchmark.config import ConfigError
    from benchmark.sweep.preflight import connect_ray

    def refuse(**_: object) -> None:
        try:
            raise AuthenticationError("RPC error: InvalidAuthToken: Authentication token is missing or incorrect.")
        except AuthenticationError as err:
            raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.1:6379") from err

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    with pytest.raises(ConfigError) as refused:
        connect_ray(argparse.Namespace(address="auto", verbose=False))
    assert str(refused.value) == (
        "--address auto: the Ray cluster refused this client's token (InvalidAuthToken): "
        "export RAY_AUTH_MODE=token with the cluster's token in ~/.ray/auth_token (or RAY_AUTH_TOKEN)"
    )


# The cycle's refusal checks (`cluster.outsider`) are only worth their verdict if they see an open door as open: each
# one against the same service with its authentication on and off.


@pytest.mark.slow
@pytest.mark.parametrize("login", [True, False], ids=["login", "no-login"])
def test_the_mlflow_refusal_check_tells_a_server_with_a_login_from_one_without(request, login):
    from cluster import outsider

    server = request.getfixturevalue("mlflow_auth_server" if login else "mlflow_server")
    expected = 401 if login else 200
    assert outsider.mlflow_without_login(server.uri, "0") == {"search": expected, "create_run": expected}


# A local Ray in a process of its own: Ray reads its authentication settings once per process.
RAY_PROBE = (
    "import ray; from cluster import outsider; ray.init(address='local', num_cpus=1, include_dashboard=False, log_to_driver=False); "
    "print('seen:', outsider.ray_client(ray.get_runtime_context().gcs_address, None)); ray.shutdown()"
)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["token", "disabled"])
def test_the_ray_refusal_check_tells_a_cluster_with_a_token_from_one_without(tmp_path, mode):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=str(tmp_path), RAY_AUTH_MODE=mode, PYTHONPATH=str(REPO))  # no ~/.ray/auth_token of the user's
    if mode == "token":
        env["RAY_AUTH_TOKEN"] = secrets.token_hex(16)
    done = subprocess.run([sys.executable, "-c", RAY_PROBE], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    seen = next((line.removeprefix("seen: ") for line in done.stdout.splitlines() if line.startswith("seen: ")), done.stderr[-2000:])
    assert ("InvalidAuthToken" in seen) == (mode == "token") and (seen == "ran: 1") == (mode == "disabled"), seen
