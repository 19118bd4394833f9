"""A whole cluster cycle on this machine, as a user runs it on AWS: launch, check, sweep, read back, tear down.

    python -m cluster.cycle --workspace /tmp/cycle --report /tmp/cycle/report.json

`cluster.yaml` rendered for the local provider (head 127.0.0.2, one worker 127.0.0.3) drives
stand-in machines in a sandbox (`cluster.sandbox`): Ray's token made on the launcher, `ray up`,
wait for both nodes, a smoke sweep submitted with `ray exec` and logged to the head's MLflow server,
what a client without the token or the login gets (`cluster.outsider`), the runs checked from the
launcher's side, the server stopped, `ray down`, and then whatever Ray or MLflow process or
listening port is left. The report (JSON) holds the timings and every observation; the test
(`tests/test_cluster.py`) decides what they must be. Needs root, sshd, rsync and `unshare`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cluster import outsider, sandbox
from cluster.local import REPO, load, local_config

# Not 127.0.0.1: `ray start --address=127.0.0.1:...` on a worker means "this machine" to Ray.
HEAD, WORKER = "127.0.0.2", "127.0.0.3"
RAY = str(Path(sys.executable).parent / "ray")
V1_AUTOSCALER = {"RAY_UP_enable_autoscaler_v2": "0"}  # v2 never launched a `worker_ips` node here
NODES_TIMEOUT_S = 240
LEFTOVER_WAIT_S = 20  # ray's ssh control masters persist 10 s after their last use
RAY_OR_MLFLOW = re.compile(r"raylet|gcs_server|ray::|ray[/.]|mlflow|uvicorn|gunicorn|huey")


def sweep_command(cpus_per_trial: int) -> str:
    """The README's submission with the smoke space; ~/ray_results is shared here (one filesystem)."""
    return (
        "cd ~/vqbench && python -m benchmark.sweep --address auto --tracking-uri $(cat ~/mlflow/uri) "
        f"--space smoke --experiment cycle --name cycle --cpus-per-trial {cpus_per_trial} --storage-path ~/ray_results"
    )


class Cycle:
    def __init__(self, config: Path, log: Path) -> None:
        self.config = str(config)
        self.log = open(log, "a")
        self.seconds: dict[str, float] = {}

    def ray(self, step: str, *args: str, check: bool = True) -> str:
        """One `ray` CLI call on the rendered config, timed and logged; its output."""
        start = time.perf_counter()
        self.log.write(f"\n$ ray {' '.join(args)}\n")
        self.log.flush()
        done = subprocess.run(
            [RAY, *args], env={**os.environ, **V1_AUTOSCALER}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.log.write(done.stdout)
        self.seconds[step] = round(self.seconds.get(step, 0.0) + time.perf_counter() - start, 1)
        if check and done.returncode != 0:
            raise RuntimeError(f"`ray {' '.join(args)}` failed ({done.returncode}): {done.stdout[-3000:]}")
        return done.stdout

    def wait_for_nodes(self, count: int) -> int:
        """Polls `ray status` on the head, as the README's check does, until `count` nodes are active."""
        deadline = time.monotonic() + NODES_TIMEOUT_S
        while True:
            alive = active_nodes(self.ray("wait for nodes", "exec", self.config, "ray status", check=False))
            if alive >= count or time.monotonic() > deadline:
                return alive
            time.sleep(5)


def active_nodes(status: str) -> int:
    """The node count under "Active:" in `ray status` output (" 2 local.cluster.node")."""
    section = status.split("Active:", 1)[-1].split("Pending:", 1)[0] if "Active:" in status else ""
    return sum(int(m) for m in re.findall(r"^\s*(\d+) \S", section, flags=re.MULTILINE))


def runs_on_server(uri: str, artifacts: Path) -> dict[str, Any]:
    """What the head's server holds for the sweep, read over HTTP as a user's laptop would."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)  # logged in by ~/.mlflow/credentials: the sandbox's machines share one home
    experiment = client.get_experiment_by_name("cycle")
    parents = client.search_runs([experiment.experiment_id], "tags.`vqbench.role` = 'sweep'")
    children = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parents[0].info.run_id}'") if parents else []
    return {
        "experiment_id": experiment.experiment_id,
        "runs_in_experiment": len(client.search_runs([experiment.experiment_id])),
        "parents": [p.info.status for p in parents],
        "children": [
            {
                "status": c.info.status,
                "node": c.data.tags.get("vqbench.ray_node_id"),
                "model": c.data.params.get("model"),
                "artifacts": sorted(a.path for a in client.list_artifacts(c.info.run_id)),
            }
            for c in children
        ],
        "artifact_files_on_head": sorted(p.name for p in artifacts.rglob("*.png")),
    }


def make_token() -> None:
    """The launcher's Ray token, made as docs/cluster-auth.md says (its value stays out of the log)."""
    subprocess.run([RAY, "get-auth-token", "--generate"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    (Path.home() / ".ray" / "auth_token").chmod(0o600)


def stop_ray_on(ip: str, ssh_key: Path) -> str:
    """`ray stop` on a worker, over ssh as Ray runs commands. `ray down` with the local provider
    stops Ray on the head only and leaves a worker's agents and log monitor running for good
    (seen with Ray 2.60); on AWS the instances are terminated."""
    done = subprocess.run(
        [
            "ssh",
            "-i",
            str(ssh_key),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            f"root@{ip}",
            "bash --login -c -i 'source ~/.bashrc; ray stop'",
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    return next((line.strip() for line in (done.stdout + done.stderr).splitlines() if "stopped" in line or "Did not find" in line), "")


def leftovers() -> tuple[list[str], list[str]]:
    """Ray or MLflow processes and listening ports (other than the machines' sshd) in the sandbox."""
    deadline = time.monotonic() + LEFTOVER_WAIT_S
    while True:
        processes = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if "State:\tZ" in (entry / "status").read_text():
                    continue
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            except OSError:
                continue
            if RAY_OR_MLFLOW.search(command) and "cluster.sandbox" not in command:
                processes.append(f"{entry.name}: {command[:200]}")
        listening = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True, check=True).stdout.splitlines()
        ports = [line.split()[3] for line in listening if not line.split()[3].endswith(":22")]
        if not (processes or ports) or time.monotonic() > deadline:
            return processes, ports
        time.sleep(1)


def run_cycle(workspace: Path, cpus_per_trial: int) -> dict[str, Any]:
    """Inside a sandbox: the whole cycle; every observation goes into the returned report."""
    started = time.perf_counter()
    box = sandbox.prepare(workspace)
    machines = [sandbox.start_machine(box, HEAD, "vq-head"), sandbox.start_machine(box, WORKER, "vq-worker")]
    (workspace / "data").mkdir()
    config = workspace / "local.yaml"
    rendered = local_config(load(), HEAD, [WORKER], "root", box.ssh_key, REPO, {"~/data": workspace / "data"})
    config.write_text(json.dumps(rendered, indent=2))  # JSON is YAML
    cycle = Cycle(config, workspace / "cycle.log")
    report: dict[str, Any] = {"seconds": cycle.seconds}
    try:
        make_token()
        cycle.ray("ray up", "up", "-y", str(config))
        report["alive_nodes"] = cycle.wait_for_nodes(2)
        report["listening"] = outsider.listening()
        report["sweep_output"] = cycle.ray("sweep", "exec", str(config), sweep_command(cpus_per_trial), check=False)[-4000:]
        uri = (box.home / "mlflow" / "uri").read_text().strip()
        report["tracking_uri"] = uri
        report.update(runs_on_server(uri, box.home / "mlflow" / "artifacts"))
        probing = time.perf_counter()
        report["ray_without_token"] = outsider.ray_client(f"{HEAD}:6379", None)
        report["ray_with_a_wrong_token"] = outsider.ray_client(f"{HEAD}:6379", secrets.token_hex(16))
        report["mlflow_without_login"] = outsider.mlflow_without_login(uri, report["experiment_id"])
        report["runs_in_experiment_after"] = runs_on_server(uri, box.home / "mlflow" / "artifacts")["runs_in_experiment"]
        report["seconds"]["refusal checks"] = round(time.perf_counter() - probing, 1)
    except Exception as err:  # recorded; teardown and the leftover check still run
        report["error"] = f"{type(err).__name__}: {err}"
    finally:
        stopped = cycle.ray("mlflow stop", "exec", str(config), "cd ~/vqbench && python -m cluster.tracking_server stop", check=False)
        report["mlflow_stop"] = next((line for line in stopped.splitlines() if "mlflow server" in line), "")
        cycle.ray("ray down", "down", "-y", str(config), check=False)
        down = time.perf_counter()
        report["stopped_on_worker"] = stop_ray_on(WORKER, box.ssh_key)
        report["leftover_processes"], report["leftover_ports"] = leftovers()
        report["seconds"]["ray down until nothing is left"] = round(time.perf_counter() - down, 1)
        for machine in machines:
            sandbox.stop_machine(machine)
        report["seconds"]["total"] = round(time.perf_counter() - started, 1)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cluster.cycle", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workspace", type=Path, required=True, help="an empty folder for the sandbox's files (removable afterwards)")
    parser.add_argument("--report", type=Path, required=True, help="where the JSON report goes")
    parser.add_argument(
        "--cpus-per-trial",
        type=int,
        default=os.cpu_count() or 1,
        help="a whole machine per trial spreads the two trials over both (default: all CPUs)",
    )
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.inside:
        reason = sandbox.missing_prerequisite()
        if reason:
            print(f"error: cannot run the cluster cycle here: {reason}", file=sys.stderr)
            return 2
        args.workspace.mkdir(parents=True, exist_ok=True)
        inner = [
            sys.executable,
            "-m",
            "cluster.cycle",
            "--inside",
            "--workspace",
            str(args.workspace.resolve()),
            "--report",
            str(args.report),
            "--cpus-per-trial",
            str(args.cpus_per_trial),
        ]
        code = subprocess.run(sandbox.isolated_command(inner), cwd=REPO, preexec_fn=sandbox.dies_with_parent).returncode
        if (args.workspace / "report.json").is_file():  # the sandbox's /tmp is its own: the report comes out through the workspace
            shutil.copy(args.workspace / "report.json", args.report)
        return code
    report = run_cycle(args.workspace, args.cpus_per_trial)
    (args.workspace / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "sweep_output"}, indent=2))
    return 0 if "error" not in report else 1


if __name__ == "__main__":
    sys.exit(main())
