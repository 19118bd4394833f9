"""Where a sweep's runs are stored: the tracking URI's rules, a store checked before any work starts,
the experiment, the login a cluster's trials need, and retries for what a retry can fix.

Everything goes through an explicit `MlflowClient(uri)`: no fluent global state, which a
reused Ray actor would carry from one trial into the next.
"""

from __future__ import annotations

import base64
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

from mlflow.tracking import MlflowClient

from benchmark.error_text import first_line

DEFAULT_STORE = "mlflow.db"  # in the working directory, when neither --tracking-uri nor $MLFLOW_TRACKING_URI is set
DEFAULT_EXPERIMENT = "vqbench"  # the sweep's, and so the report's and the export's
# Stores mlflow 3.17 can use: sqlite and server URLs, and the databases a server sits on.
DATABASE_SCHEMES = ("postgresql", "mysql", "mssql")
SCHEMES = ("sqlite", "http", "https", *DATABASE_SCHEMES, "databricks")
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
        _check_login(uri, timeout_s)
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


def worker_credentials(uri: str) -> dict[str, str]:
    """The login this process would send to a tracking server, as environment variables for the trials:
    on a cluster they run on nodes without the driver's environment or its ~/.mlflow/credentials.
    Never in the URI or the trial's config, which MLflow and Ray Tune store."""
    from mlflow.utils.credentials import read_mlflow_creds

    if not uri.startswith(("http://", "https://")):
        return {}
    login = read_mlflow_creds()
    if not (login.username and login.password):
        return {}
    return {"MLFLOW_TRACKING_USERNAME": login.username, "MLFLOW_TRACKING_PASSWORD": login.password}


def _check_login(uri: str, timeout_s: float) -> None:
    """One authenticated read, as MLflow's client would send it: a server with authentication
    refuses a missing or wrong login here, before Ray starts, not in every trial."""
    request = urllib.request.Request(f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/search?max_results=1")
    login = worker_credentials(uri)
    if login:
        pair = f"{login['MLFLOW_TRACKING_USERNAME']}:{login['MLFLOW_TRACKING_PASSWORD']}".encode()
        request.add_header("Authorization", f"Basic {base64.b64encode(pair).decode()}")
    try:
        urllib.request.urlopen(request, timeout=timeout_s).read()
    except urllib.error.HTTPError as err:
        if err.code != 401:
            return  # not a login problem; what the server really refuses surfaces with its own message
        if login:
            raise TrackingError(
                f"the tracking server {uri} refused the credentials in MLFLOW_TRACKING_USERNAME/PASSWORD (401): "
                "set the right ones (a cluster's head keeps the admin's in ~/.mlflow/credentials)"
            ) from None
        raise TrackingError(
            f"the tracking server {uri} asks for a login (401): set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD "
            "(a cluster's head keeps the admin's in ~/.mlflow/credentials)"
        ) from None
    except OSError:
        return  # answered /health a moment ago: a hiccup here is the retries' business, not a login problem


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
        raise TrackingError(
            f"tracking store {uri} cannot be reached ({type(err).__name__}: {first_line(err)}); start the database or pass a reachable --tracking-uri"
        ) from None


def ensure_experiment(client: MlflowClient, name: str, uri: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    root = artifact_root(uri)
    return client.create_experiment(name, artifact_location=f"{root}/{name}" if root else None)


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
