"""The MLflow tracking server on a cluster's head node, started by `cluster.yaml` and stopped before teardown.

    python -m cluster.tracking_server start    # idempotent: a running server is kept
    python -m cluster.tracking_server stop

`ray stop` and `ray down` leave it running, and `ray up` re-runs the start commands: so `start`
keeps a server that answers, appends to its log, and records its pid for `stop`. The URL that
workers use (the head's address as Ray sees it) is written to ~/mlflow/uri for the sweep.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

FOLDER = Path.home() / "mlflow"
PORT = 5000
START_TIMEOUT_S = 180.0  # about 14 s when the machine is quiet


def answers(port: int = PORT) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
        return True
    except OSError:
        return False


def running_pid(folder: Path = FOLDER) -> int | None:
    """The recorded server's pid if that process still exists."""
    try:
        pid = int((folder / "server.pid").read_text())
        os.kill(pid, 0)
        return pid
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None


def start(folder: Path = FOLDER, port: int = PORT, host: str = "0.0.0.0", workers: int = 4) -> str:
    """Start the server unless one runs; wait until it answers; return the URL workers use.

    0.0.0.0: workers reach it at the head's address and `ray attach -p` at 127.0.0.1; the security
    group (in the local test, a private network namespace) keeps it inside the cluster. Several
    workers serve many trials at once; uvicorn kills a worker that does not answer its health check
    within 5 s, which on a busy head is every worker still importing mlflow: hence the longer check."""
    import ray.util

    folder.mkdir(parents=True, exist_ok=True)
    uri = f"http://{ray.util.get_node_ip_address()}:{port}"
    if running_pid(folder) is None and not answers(port):
        log = open(folder / "server.log", "a")
        # mlflow's Host header check admits exactly the names it is reached by (its default misses 127.0.0.2).
        hosts = f"{uri.split('//')[1]},localhost:{port},127.0.0.1:{port}"
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
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
            start_new_session=True,
        )
        (folder / "server.pid").write_text(str(process.pid))
    deadline = time.monotonic() + START_TIMEOUT_S
    while not answers(port):
        if time.monotonic() > deadline or running_pid(folder) is None:
            raise SystemExit(f"mlflow server did not answer on port {port}; see {folder / 'server.log'}")
        time.sleep(1)
    (folder / "uri").write_text(uri + "\n")
    return uri


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
    parser.add_argument("action", choices=("start", "stop"))
    parser.add_argument("--folder", type=Path, default=FOLDER, help=f"its store, artifacts, log, pid and uri files (default: {FOLDER})")
    parser.add_argument("--port", type=int, default=PORT, help=f"(default: {PORT})")
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (default: 0.0.0.0, every interface of the head)")
    parser.add_argument("--workers", type=int, default=4, help="server processes (default: 4)")
    args = parser.parse_args(argv)
    if args.action == "start":
        print(f"mlflow server: {start(args.folder, args.port, args.host, args.workers)}")
    else:
        print("mlflow server stopped" if stop(args.folder) else "no mlflow server was running")
    return 0


if __name__ == "__main__":
    sys.exit(main())
