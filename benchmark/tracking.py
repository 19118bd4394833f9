"""MLflow: a parent run per sweep, one child run per trial, logged from inside the trial.

Everything goes through an explicit `MlflowClient(uri)`: no fluent global state, which a
reused Ray actor would carry from one trial into the next. The tracking URI and the parent
run id travel in the trial's config, so workers on other nodes log to the same place.
"""
from __future__ import annotations

import json
import platform
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable, TypeVar

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from benchmark.config import TrialConfig
from benchmark.probe import ProbeSettings

DEFAULT_STORE = "mlflow.db"
DEFAULT_EXPERIMENT = "vqbench"  # the sweep's, and so the report's and the export's
PACKAGES = ("torch", "torchvision", "ray", "mlflow", "optuna", "scikit-learn", "scikit-image", "numpy")
T = TypeVar("T")


class TrackingError(RuntimeError):
    """The tracking store cannot be reached or used: the message says which and how to fix it."""


@dataclass(frozen=True)
class TrackingTarget:
    """What a trial needs to find its place in MLflow; plain strings, so it travels in a Tune config."""

    uri: str
    experiment_id: str
    parent_run_id: str


def resolve_tracking_uri(uri: str | None, workdir: Path | None = None) -> str:
    """Default: an absolute sqlite store in the working directory; relative sqlite paths made absolute."""
    workdir = (workdir or Path.cwd()).resolve()
    if not uri:
        return f"sqlite:///{workdir / DEFAULT_STORE}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{(workdir / uri[len('sqlite:///'):]).resolve()}"
    if "://" not in uri:
        raise TrackingError(
            f"--tracking-uri {uri!r} is not a URI: use sqlite:////abs/path/mlflow.db for a local store "
            "or http://HOST:PORT for an mlflow server (mlflow 3.17 refuses the plain file store)"
        )
    return uri


def artifact_root(uri: str) -> str | None:
    """Local stores keep artifacts beside the database; a server decides for itself."""
    if uri.startswith("sqlite:///"):
        return str(Path(uri[len("sqlite:///"):]).parent / "mlartifacts")
    return None


def check_reachable(uri: str, timeout_s: float = 10.0) -> None:
    if uri.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s).read()
        except Exception as err:
            raise TrackingError(
                f"tracking server {uri} cannot be reached ({err}): start it (`mlflow server --host 127.0.0.1 --port 5000 ...`) "
                "or pass a reachable --tracking-uri"
            ) from None
        return
    if uri.startswith("sqlite:///"):
        folder = Path(uri[len("sqlite:///"):]).parent
        if not folder.is_dir():
            raise TrackingError(f"tracking store folder {folder} does not exist: create it or pass another --tracking-uri")


def ensure_experiment(client: MlflowClient, name: str, uri: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    root = artifact_root(uri)
    return client.create_experiment(name, artifact_location=f"{root}/{name}" if root else None)


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "absent"
    return versions


def with_retries(call: Callable[[], T], attempts: int = 6, first_wait_s: float = 1.0) -> T:
    """A tracking server restarting mid-sweep must not cost a trial its results."""
    for attempt in range(attempts):
        try:
            return call()
        except Exception:
            if attempt == attempts - 1:
                raise
            time.sleep(first_wait_s * 2**attempt)
    raise AssertionError("unreachable")


def start_sweep_run(client: MlflowClient, experiment_id: str, run_name: str, params: dict[str, Any], tags: dict[str, str]) -> str:
    run = client.create_run(experiment_id, run_name=run_name, tags={"vqbench.role": "sweep", "vqbench.git_commit": git_commit(), **tags})
    client.log_batch(run.info.run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
    return run.info.run_id


@dataclass
class TrialRun:
    """One trial's child run; reopened, not duplicated, when a trial resumes from its checkpoint."""

    client: MlflowClient
    run_id: str

    @classmethod
    def open(cls, target: TrackingTarget, config: TrialConfig, device: str, run_id: str | None = None) -> "TrialRun":
        client = MlflowClient(target.uri)
        if run_id is not None:
            with_retries(lambda: client.update_run(run_id, status="RUNNING"))
            client.set_tag(run_id, "vqbench.resumed", "true")
            return cls(client, run_id)
        tags = {
            "mlflow.parentRunId": target.parent_run_id,
            "vqbench.role": "trial",
            "vqbench.model": config.model,
            "vqbench.dataset": config.dataset,
            "vqbench.label_embedding": config.label_embedding,
            "vqbench.leaks_label": str(config.leaks_label).lower(),
            "vqbench.config_id": config.config_id,
            "vqbench.device": device,
            "vqbench.git_commit": git_commit(),
            "vqbench.versions": json.dumps(package_versions()),
        }
        run = with_retries(lambda: client.create_run(target.experiment_id, run_name=config.name, tags=tags))
        logged = {**config.to_dict(), **ProbeSettings().to_params()}
        params = [Param(k, str(v)) for k, v in logged.items()]
        with_retries(lambda: client.log_batch(run.info.run_id, params=params))
        return cls(client, run.info.run_id)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        stamp = int(time.time() * 1000)
        batch = [Metric(k, float(v), stamp, step) for k, v in metrics.items()]
        with_retries(lambda: self.client.log_batch(self.run_id, metrics=batch))

    def log_artifacts(self, files: list[Path]) -> None:
        for path in files:
            with_retries(lambda: self.client.log_artifact(self.run_id, str(path)))

    def finish(self, metrics: dict[str, float], step: int, files: list[Path], config: TrialConfig) -> None:
        self.log_metrics(metrics, step)
        with tempfile.TemporaryDirectory() as tmp:
            config_file = Path(tmp) / "config.json"
            config_file.write_text(json.dumps(config.to_dict(), indent=2))
            self.log_artifacts([*files, config_file])
        with_retries(lambda: self.client.set_terminated(self.run_id, "FINISHED"))

    def fail(self, error: BaseException, status: str = "FAILED") -> None:
        message = f"{type(error).__name__}: {error}"[:5000]
        with_retries(lambda: self.client.set_tag(self.run_id, "vqbench.error", message))
        with_retries(lambda: self.client.set_terminated(self.run_id, status))


def close_orphans(client: MlflowClient, experiment_id: str, parent_run_id: str, status: str = "KILLED") -> int:
    """Runs left RUNNING by a killed driver or worker; a resumed trial reopens its own."""
    runs = client.search_runs(
        [experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}' and attributes.status = 'RUNNING'", max_results=10_000
    )
    for run in runs:
        client.set_tag(run.info.run_id, "vqbench.error", "orphaned: its sweep driver or worker died while it ran")
        client.set_terminated(run.info.run_id, status)
    return len(runs)
