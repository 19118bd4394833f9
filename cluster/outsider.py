"""What someone on the cluster's network without Ray's token or MLflow's login gets: the cycle's refusal checks.

Each probe returns what it observed, for the cycle's report; `tests/test_cluster.py` decides what it
must be (refused). Nothing here starts a process that outlives the probe.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request

# A driver that joins the cluster and asks it to run one task: what an attacker's `ray.init` would do.
SUBMIT = "import ray; ray.init(address={address!r}, log_to_driver=False); print('ran:', ray.get(ray.remote(lambda: 1).remote()))"
EXCEPTION_LINE = re.compile(r"^[\w.]+(Error|Exception): ")
RAY_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS")


def ray_client(address: str, token: str | None, timeout_s: float = 90.0) -> str:
    """A driver from a home without ~/.ray/auth_token submits one task: with no token, or with `token`
    (a wrong one). "ran: 1" if the cluster ran it, else the last line it printed."""
    with tempfile.TemporaryDirectory() as home:
        env = {k: v for k, v in os.environ.items() if k not in RAY_ENV}
        env["HOME"] = home
        if token is not None:
            env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
        try:
            done = subprocess.run(
                [sys.executable, "-c", SUBMIT.format(address=address)],
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired:
            return f"no answer within {timeout_s:g} s"
    lines = [line.strip() for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    errors = [line for line in lines if EXCEPTION_LINE.match(line)]  # a chained error's cause comes first
    return next((line for line in lines if line.startswith("ran:")), " <- ".join(reversed(errors)) or f"exit {done.returncode}")


def mlflow_without_login(uri: str, experiment_id: str) -> dict[str, int]:
    """The HTTP status of a read and of a run's creation sent with no credentials."""

    def status(path: str, body: dict | None = None) -> int:
        request = urllib.request.Request(
            f"{uri}/api/2.0/mlflow/{path}",
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status
        except urllib.error.HTTPError as err:
            return err.code

    return {
        "search": status("experiments/search?max_results=10"),
        "create_run": status("runs/create", {"experiment_id": experiment_id, "run_name": "intruder"}),
    }


def listening() -> list[str]:
    """Every listening TCP socket in this network namespace, "address:port process"."""
    lines = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout.splitlines()
    found = []
    for line in lines:
        fields = line.split()
        process = fields[5].split('"')[1] if len(fields) > 5 and '"' in fields[5] else "?"
        found.append(f"{fields[3]} {process}")
    return sorted(found)
