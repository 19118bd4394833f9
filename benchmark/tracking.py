"""MLflow: a parent run per sweep, one child run per trial, logged from inside the trial.

Everything goes through an explicit `MlflowClient(uri)`: no fluent global state, which a
reused Ray actor would carry from one trial into the next. The tracking URI and the parent
run id travel in the trial's config, so workers on other nodes log to the same place.
"""

from __future__ import annotations

import functools
import json
import os
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

DEFAULT_STORE = "mlflow.db"  # in the working directory, when neither --tracking-uri nor $MLFLOW_TRACKING_URI is set
DEFAULT_EXPERIMENT = "vqbench"  # the sweep's, and so the report's and the export's
# Stores mlflow 3.17 can use: sqlite and server URLs, and the databases a server sits on.
DATABASE_SCHEMES = ("postgresql", "mysql", "mssql")
SCHEMES = ("sqlite", "http", "https", *DATABASE_SCHEMES, "databricks")
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
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else an absolute sqlite store in the working
    directory; relative sqlite paths made absolute. The sweep and the analysis both resolve here."""
    workdir = (workdir or Path.cwd()).resolve()
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return f"sqlite:///{workdir / DEFAULT_STORE}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{(workdir / uri[len('sqlite:///') :]).resolve()}"
    scheme = uri.split("://", 1)[0] if "://" in uri else None
    if scheme not in SCHEMES or uri == f"{scheme}://" or (scheme == "sqlite" and not uri.startswith("sqlite:///")):
        what = "is not a URI" if scheme is None else f"is not a tracking store mlflow can use (scheme {scheme!r})"
        raise TrackingError(
            f"--tracking-uri {uri!r} {what}: use sqlite:////abs/path/mlflow.db for a local store "
            "or http://HOST:PORT for an mlflow server (mlflow 3.17 refuses the plain file store)"
        )
    return uri


def artifact_root(uri: str) -> str | None:
    """Local stores keep artifacts beside the database; a server decides for itself."""
    if uri.startswith("sqlite:///"):
        return str(Path(uri[len("sqlite:///") :]).parent / "mlartifacts")
    return None


def check_reachable(uri: str, timeout_s: float = 10.0) -> None:
    """Fail in seconds, not after mlflow's minutes of retries, when no server answers; a sqlite
    store needs an existing, writable folder."""
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
        path = Path(uri[len("sqlite:///") :])
        if not path.parent.is_dir():
            raise TrackingError(f"tracking store folder {path.parent} does not exist: create it or pass another --tracking-uri")
        if path.exists() and not path.is_file():
            raise TrackingError(f"tracking store {path} is not a file: pass --tracking-uri sqlite:////abs/path/mlflow.db")
        if not os.access(path if path.exists() else path.parent, os.W_OK):
            raise TrackingError(f"tracking store {path} is not writable: pass another --tracking-uri")
        if path.is_file() and path.stat().st_size:
            with path.open("rb") as db:
                if db.read(16) != b"SQLite format 3\x00":
                    raise TrackingError(
                        f"tracking store {path} is not an SQLite database: pass another --tracking-uri (a new file name creates one)"
                    )
        return
    if uri.split("://", 1)[0] in DATABASE_SCHEMES:
        _check_database(uri)


def _check_database(uri: str) -> None:
    """A database store answers, with its driver installed, before Ray starts or any folder is made."""
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(uri)
        with engine.connect():
            pass
        engine.dispose()
    except ModuleNotFoundError as err:
        raise TrackingError(
            f"tracking store {uri}: its database driver is not installed ({err}); "
            "install the package that provides it, or pass another --tracking-uri"
        ) from None
    except Exception as err:
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        raise TrackingError(
            f"tracking store {uri} cannot be reached ({type(err).__name__}: {first}); start the database or pass a reachable --tracking-uri"
        ) from None


def ensure_experiment(client: MlflowClient, name: str, uri: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    root = artifact_root(uri)
    return client.create_experiment(name, artifact_location=f"{root}/{name}" if root else None)


def read_git_commit(folder: Path) -> str:
    """HEAD of the checkout holding `folder`, with "-dirty" when tracked files differ from it; "unknown" outside git."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, timeout=5, cwd=folder).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        return f"{commit}-dirty" if commit and git("status", "--porcelain", "--untracked-files=no") else commit or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# Read once, when this process imports the code: a reused Ray actor keeps running what it imported
# even if the checkout moves on, and its runs must name that version, not the checkout's later HEAD.
GIT_COMMIT = read_git_commit(Path(__file__).parent)
# MLflow's own tag, which its UI shows as the run's source version: the bare commit, where there is one.
SOURCE_TAGS = {"mlflow.source.git.commit": GIT_COMMIT.removesuffix("-dirty")} if GIT_COMMIT != "unknown" else {}


@functools.cache
def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "absent"
    return versions


# MLflow's answers that say the request itself is wrong: asking again gets the same answer.
DETERMINISTIC_CODES = frozenset(
    {
        "INVALID_PARAMETER_VALUE",
        "RESOURCE_DOES_NOT_EXIST",
        "RESOURCE_ALREADY_EXISTS",
        "INVALID_STATE",
        "BAD_REQUEST",
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
        "ENDPOINT_NOT_FOUND",
        "FEATURE_DISABLED",
        "NOT_IMPLEMENTED",
    }
)


def is_transient(error: Exception) -> bool:
    """A server restarting, a dropped connection, a locked database: yes. A bad request or a bug: no."""
    from mlflow.exceptions import MlflowException

    if isinstance(error, MlflowException):
        return error.error_code not in DETERMINISTIC_CODES
    return not isinstance(error, (TypeError, ValueError, KeyError, AttributeError, NotImplementedError))


def with_retries(call: Callable[[], T], attempts: int = 6, first_wait_s: float = 1.0) -> T:
    """A tracking server restarting mid-sweep must not cost a trial its results; a request MLflow refuses
    fails at once, not after half a minute of asking again."""
    for attempt in range(attempts):
        try:
            return call()
        except Exception as error:
            if attempt == attempts - 1 or not is_transient(error):
                raise
            time.sleep(first_wait_s * 2**attempt)
    raise AssertionError("unreachable")


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
            "mlflow.parentRunId": target.parent_run_id,
            "vqbench.role": "trial",
            "vqbench.model": config.model,
            "vqbench.dataset": config.dataset,
            "vqbench.label_embedding": config.label_embedding,
            "vqbench.leaks_label": str(config.leaks_label).lower(),
            "vqbench.config_id": config.config_id,
            "vqbench.device": device,
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
        """Ray Tune stopped the trial. Its scheduler: a normal ending, without the final evaluation.
        Ctrl-C on the sweep (the parent run holds the driver's mark): KILLED, for --resume to continue."""
        parent = with_retries(lambda: self.client.get_run(self.parent_run_id))
        if INTERRUPTED_TAG in parent.data.tags:
            with_retries(lambda: self.client.set_tag(self.run_id, ERROR_TAG, INTERRUPTED))
            with_retries(lambda: self.client.set_terminated(self.run_id, "KILLED"))
            return
        with_retries(lambda: self.client.set_tag(self.run_id, STOPPED_TAG, str(epoch)))
        with_retries(lambda: self.client.set_terminated(self.run_id, "FINISHED"))

    def fail(self, error: BaseException, status: str = "FAILED") -> None:
        message = f"{type(error).__name__}: {error}"[:5000]
        with_retries(lambda: self.client.set_tag(self.run_id, ERROR_TAG, message))
        with_retries(lambda: self.client.set_terminated(self.run_id, status))


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
