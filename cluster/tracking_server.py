"""The MLflow tracking server on a cluster's head node, started by `cluster.yaml` and stopped before teardown.

    python -m cluster.tracking_server start             # idempotent: a running server is kept
    python -m cluster.tracking_server add-user NAME     # a read-only login, e.g. for a reviewer
    python -m cluster.tracking_server rotate            # a new admin password
    python -m cluster.tracking_server stop

`ray stop` and `ray down` leave it running, and `ray up` re-runs the start commands: so `start`
keeps a server that answers, appends to its log, and records its pid for `stop`. The URL that
workers use (the head's address as Ray sees it) is written to ~/mlflow/uri for the sweep.

The server runs MLflow's basic-auth app: every request but /health needs a login. The admin's
password is generated at the first start into ~/.mlflow/credentials (0600), the file MLflow's own
clients read, so the sweep run on the head authenticates with no flag; the sweep hands the login to
its trials on the workers (`benchmark.tracking.store.worker_credentials`). Users and permissions live in
~/mlflow/auth.db beside the runs' store, so a second start keeps them.
"""

from __future__ import annotations

import argparse
import configparser
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

FOLDER = Path.home() / "mlflow"
CREDENTIALS = Path.home() / ".mlflow" / "credentials"  # where MLflow's clients look for a login
ADMIN = "admin"
PORT = 5000
# What an authenticated user may do where nobody granted more: read every experiment, change none
# but the ones they create. The admin (the sweep) can do everything.
DEFAULT_PERMISSION = "READ"
START_TIMEOUT_S = 180.0  # about 14 s when the machine is quiet


def answers(port: int = PORT) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
        return True
    except OSError:
        return False


def asks_for_login(port: int = PORT) -> bool:
    """A kept server must be the authenticated one: a read without credentials gets 401."""
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=1", timeout=10).read()
        return False
    except urllib.error.HTTPError as err:
        return err.code == 401


def running_pid(folder: Path = FOLDER) -> int | None:
    """The recorded server's pid if that process still exists."""
    try:
        pid = int((folder / "server.pid").read_text())
        os.kill(pid, 0)
        return pid
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None


def read_login(credentials: Path = CREDENTIALS) -> tuple[str, str] | None:
    """(user, password) from an MLflow credentials file, or None if there is none."""
    parser = configparser.ConfigParser()
    if not parser.read(credentials) or "mlflow" not in parser:
        return None
    section = parser["mlflow"]
    return section.get("mlflow_tracking_username", ""), section.get("mlflow_tracking_password", "")


def write_login(user: str, password: str, credentials: Path = CREDENTIALS) -> None:
    """The file appears whole, readable by its owner only (mode 0600, folder 0700), or not at all."""
    credentials.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = credentials.with_name(f".{credentials.name}.tmp")
    tmp.unlink(missing_ok=True)
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write(f"[mlflow]\nmlflow_tracking_username = {user}\nmlflow_tracking_password = {password}\n")
    os.replace(tmp, credentials)


def admin_login(credentials: Path = CREDENTIALS) -> tuple[str, str]:
    """The admin's login, generated (and written) the first time: never in the repository or on a command line."""
    login = read_login(credentials)
    if login is None:
        login = (ADMIN, secrets.token_urlsafe(24))
        write_login(*login, credentials)
    return login


def auth_config(folder: Path, admin: str) -> Path:
    """The auth app's settings file; no secret in it (the admin's first password comes by environment)."""
    path = folder / "basic_auth.ini"
    path.write_text(
        "[mlflow]\n"
        f"default_permission = {DEFAULT_PERMISSION}\n"
        f"database_uri = sqlite:///{folder / 'auth.db'}\n"
        f"admin_username = {admin}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    return path


def auth_env(folder: Path, admin: str, password: str) -> dict[str, str]:
    """The auth app's environment: by environment, not on the command line, where `ps` would show it.
    The admin's password creates the admin in an empty auth.db and is ignored once it exists; the key
    signs the UI's forms (CSRF) and must be one for all the server's workers, for this server's life."""
    return {
        "MLFLOW_AUTH_CONFIG_PATH": str(auth_config(folder, admin)),
        "MLFLOW_AUTH_ADMIN_PASSWORD": password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32),
    }


def start(folder: Path = FOLDER, port: int = PORT, host: str = "0.0.0.0", workers: int = 4, credentials: Path = CREDENTIALS) -> str:
    """Start the server unless one runs; wait until it answers; return the URL workers use.

    0.0.0.0: workers reach it at the head's address and `ray attach -p` at 127.0.0.1; the security
    group (in the local test, a private network namespace) keeps it inside the cluster. Several
    workers serve many trials at once; uvicorn kills a worker that does not answer its health check
    within 5 s, which on a busy head is every worker still importing mlflow: hence the longer check."""
    import ray.util

    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    uri = f"http://{ray.util.get_node_ip_address()}:{port}"
    if running_pid(folder) is None and not answers(port):
        admin, password = admin_login(credentials)
        env = {**os.environ, **auth_env(folder, admin, password)}
        log = open(folder / "server.log", "a")
        # mlflow's Host header check admits exactly the names it is reached by (its default misses 127.0.0.2).
        hosts = f"{uri.split('//')[1]},localhost:{port},127.0.0.1:{port}"
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--app-name",
                "basic-auth",
                "--host",
                host,
                "--port",
                str(port),
                "--workers",
                str(workers),
                "--allowed-hosts",
                hosts,
                "--uvicorn-opts",
                f"--timeout-worker-healthcheck {int(START_TIMEOUT_S)}",
                "--backend-store-uri",
                f"sqlite:///{folder / 'mlflow.db'}",
                "--artifacts-destination",
                str(folder / "artifacts"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
            start_new_session=True,
        )
        (folder / "server.pid").write_text(str(process.pid))
    deadline = time.monotonic() + START_TIMEOUT_S
    while not answers(port):
        if time.monotonic() > deadline or running_pid(folder) is None:
            raise SystemExit(f"mlflow server did not answer on port {port}; see {folder / 'server.log'}")
        time.sleep(1)
    if not asks_for_login(port):
        raise SystemExit(
            f"the mlflow server on port {port} lets anyone in (started without its login, e.g. before vqbench turned it on): "
            "stop it (python -m cluster.tracking_server stop) and start again"
        )
    (folder / "uri").write_text(uri + "\n")
    return uri


def auth_client(port: int, credentials: Path):
    """MLflow's client for the auth app's users, logged in as the admin of the server on this machine."""
    from mlflow.server import get_app_client

    admin, password = admin_login(credentials)
    os.environ.update(MLFLOW_TRACKING_USERNAME=admin, MLFLOW_TRACKING_PASSWORD=password)
    return get_app_client("basic-auth", tracking_uri=f"http://127.0.0.1:{port}")


def add_user(name: str, port: int = PORT, credentials: Path = CREDENTIALS) -> str:
    """A new login with a generated password; it may read every experiment (DEFAULT_PERMISSION) and change none of them."""
    password = secrets.token_urlsafe(18)
    auth_client(port, credentials).create_user(name, password)
    return password


def rotate(port: int = PORT, credentials: Path = CREDENTIALS) -> None:
    """A new admin password, set on the server first and written to the credentials file once it holds."""
    admin, current = admin_login(credentials)
    password = secrets.token_urlsafe(24)
    auth_client(port, credentials).update_user_password(admin, password, current_password=current)
    write_login(admin, password, credentials)


def stop(folder: Path = FOLDER, timeout_s: float = 30.0) -> bool:
    """Stop the recorded server and its workers (one process group); False if none ran."""
    pid = running_pid(folder)
    if pid is None:
        return False
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while running_pid(folder) is not None and time.monotonic() < deadline:
        time.sleep(0.5)
    try:
        os.killpg(pid, signal.SIGKILL)  # whatever of its group outlived it or the wait: uvicorn, job runner, huey consumers
    except ProcessLookupError:
        pass
    (folder / "server.pid").unlink()
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cluster.tracking_server", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", choices=("start", "add-user", "rotate", "stop"))
    parser.add_argument("user", nargs="?", help="add-user: the new login's name")
    parser.add_argument("--folder", type=Path, default=FOLDER, help=f"its store, artifacts, log, pid and uri files (default: {FOLDER})")
    parser.add_argument("--port", type=int, default=PORT, help=f"(default: {PORT})")
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (default: 0.0.0.0, every interface of the head)")
    parser.add_argument("--workers", type=int, default=4, help="server processes (default: 4)")
    parser.add_argument("--credentials", type=Path, default=CREDENTIALS, help=f"the admin's login (default: {CREDENTIALS})")
    args = parser.parse_args(argv)
    if (args.action == "add-user") != (args.user is not None):
        parser.error("add-user takes the new user's name, and only add-user does: python -m cluster.tracking_server add-user NAME")
    if args.action == "start":
        print(f"mlflow server: {start(args.folder, args.port, args.host, args.workers, args.credentials)}")
    elif args.action == "add-user":
        password = add_user(args.user, args.port, args.credentials)
        print(f"mlflow user {args.user}: password {password} (reads every experiment, changes none; keep it, it is not stored)")
    elif args.action == "rotate":
        rotate(args.port, args.credentials)
        print(f"mlflow admin password rotated: the new one is in {args.credentials}")
    else:
        print("mlflow server stopped" if stop(args.folder) else "no mlflow server was running")
    return 0


if __name__ == "__main__":
    sys.exit(main())
