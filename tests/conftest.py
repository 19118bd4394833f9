"""Shared fixtures. Real MNIST/Fashion-MNIST live in ../shared/data beside the checkout (CI has it)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from benchmark.evaluation.probe_settings import PROTOCOL
from benchmark.result_keys import versioned_predictions_file

REPO = Path(__file__).resolve().parents[1]
# What a finished trial's run holds as artifacts (docs/tracking.md), sorted: the end-to-end tests assert it.
TRIAL_ARTIFACTS = sorted(
    ["config.json", "model.pt", "predictions.npz", versioned_predictions_file(PROTOCOL), "reconstructions.png", "tsne.png"]
)
SHARED_DATA = Path(os.environ.get("VQBENCH_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(autouse=True, scope="session")
def no_user_caches(tmp_path_factory):
    """Module- and session-scoped fixtures are set up before the per-test caches below: they get
    these, so nothing a test runs ever reads or writes the user's ~/.cache."""
    from benchmark.evaluation.pixel_probes import CACHE_ENV as PIXELS
    from benchmark.image_folder import CACHE_ENV as IMAGES

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(PIXELS, str(tmp_path_factory.mktemp("session-pixel-probes")))
        patch.setenv(IMAGES, str(tmp_path_factory.mktemp("session-image-folders")))
        yield


@pytest.fixture(autouse=True)
def pixel_probe_cache(tmp_path_factory, monkeypatch) -> Path:
    """Each test its own empty pixel-probe cache: none writes to ~/.cache, none sees another's results.
    Sweeps and Ray workers the test starts inherit it through the environment."""
    from benchmark.evaluation.pixel_probes import CACHE_ENV

    folder = tmp_path_factory.mktemp("pixel-probes")
    monkeypatch.setenv(CACHE_ENV, str(folder))
    return folder


@pytest.fixture(autouse=True)
def image_cache(tmp_path_factory, monkeypatch) -> Path:
    """Each test its own empty cache of decoded image folders, inherited by what it starts, as above."""
    from benchmark.image_folder import CACHE_ENV

    folder = tmp_path_factory.mktemp("image-folders")
    monkeypatch.setenv(CACHE_ENV, str(folder))
    return folder


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data root; tests that need it skip, saying why, where it is absent."""
    if not (SHARED_DATA / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
        pytest.skip(f"real MNIST not found under {SHARED_DATA} (set VQBENCH_SHARED_DATA to a torchvision data root)")
    return SHARED_DATA


@pytest.fixture
def local_ray():
    """A 2-CPU local Ray for one test, shut down after it."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain little from a second thread, and OpenMP threads spinning on a busy
    2-core machine make them many times slower. Restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class MlflowServer:
    """A real `mlflow server` on 127.0.0.1 that a test can stop and start again on the same port."""

    folder: Path
    port: int
    process: subprocess.Popen | None = None
    admin_password: str | None = None  # set: MLflow's basic-auth app, its admin `admin` with this password

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = dict(os.environ)
        if self.admin_password is not None:
            from cluster.tracking_server import ADMIN, auth_env

            env.update(auth_env(self.folder, ADMIN, self.admin_password))
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                *(["--app-name", "basic-auth"] if self.admin_password is not None else []),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{self.folder / 'server.db'}",
                "--artifacts-destination",
                str(self.folder / "server-artifacts"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.folder / "server.log", "a"),
            env=env,
            start_new_session=True,
        )
        deadline = time.time() + 240  # a cold mlflow import on a busy 2-core machine is slow
        while True:
            try:
                urllib.request.urlopen(f"{self.uri}/health", timeout=2)
                return
            except OSError:
                if time.time() > deadline or self.process.poll() is not None:
                    self.stop()
                    pytest.fail(f"mlflow server did not start: {(self.folder / 'server.log').read_text()[-2000:]}")
                time.sleep(0.5)

    def stop(self) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, 15)
        except ProcessLookupError:  # it died on its own (a failed start)
            pass
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)
            self.process.wait()
        self.process = None


@pytest.fixture
def mlflow_server(tmp_path):
    server = MlflowServer(tmp_path, free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def mlflow_auth_server(tmp_path):
    """The same server behind MLflow's basic-auth app, as on a cluster's head."""
    server = MlflowServer(tmp_path, free_port(), admin_password="a-test-password-" + os.urandom(6).hex())
    server.start()
    yield server
    server.stop()
