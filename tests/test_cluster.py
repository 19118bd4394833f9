"""`ray up` for real: cluster.yaml, its local rendering, the head's MLflow server, and a whole cluster cycle.

The cycle runs inside a sandbox of namespaces (`cluster.sandbox`), so the `ray stop` that `ray up`
and `ray down` run can reach no Ray process outside it; it is skipped, saying why, where that
sandbox cannot be made (not root, no sshd, rsync or unshare).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from benchmark.sweep.summary import ui_command
from benchmark.tracking.store import TrackingTarget
from cluster import sandbox
from cluster.local import MACHINE_KEYS, REPO, load, local_config
from tests.conftest import TRIAL_ARTIFACTS, free_port

COMMAND_KEYS = (
    "initialization_commands",
    "setup_commands",
    "head_setup_commands",
    "worker_setup_commands",
    "head_start_ray_commands",
    "worker_start_ray_commands",
)


def prepared(config: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    ready = prepare_config(config)
    validate_config(ready)
    return ready


def test_cluster_yaml_passes_rays_validation():
    ready = prepared(load())
    assert ready["available_node_types"]["head"]["resources"] == {"CPU": 0}  # the head runs no trials
    assert "docker" not in load(), "commands run on the image's host environment, as the local test runs them"


def test_local_rendering_changes_only_the_machines(tmp_path):
    aws = load()
    local = local_config(aws, "127.0.0.2", ["127.0.0.3"], "root", tmp_path / "key", REPO, {"~/data": tmp_path / "data"})
    prepared(local)  # Ray's local provider accepts it
    differing = {k for k in aws.keys() | local.keys() if aws.get(k) != local.get(k)}
    assert differing == set(MACHINE_KEYS) | {"file_mounts"}
    assert all(local[k] == aws[k] for k in COMMAND_KEYS)
    assert local["provider"] == {"type": "local", "head_ip": "127.0.0.2", "worker_ips": ["127.0.0.3"]}
    assert local["file_mounts"] == {  # same targets, sources made absolute
        "~/vqbench": str(REPO),
        "~/data": str(tmp_path / "data"),
        "~/.ray/auth_token": str(Path.home() / ".ray" / "auth_token"),
    }


def test_local_rendering_cli_writes_valid_yaml(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "cluster.local",
            "--head-ip",
            "10.0.0.1",
            "--worker-ips",
            "10.0.0.2,10.0.0.3",
            "--ssh-user",
            "ubuntu",
            "--ssh-key",
            str(tmp_path / "key"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rendered = yaml.safe_load(out)
    assert rendered["provider"]["worker_ips"] == ["10.0.0.2", "10.0.0.3"] and rendered["auth"]["ssh_user"] == "ubuntu"
    assert rendered["file_mounts"]["~/data"] == str(REPO / "data")
    prepared(rendered)


@pytest.mark.parametrize(
    "uri, shown",
    [
        ("http://10.0.3.7:5001", "browse http://10.0.3.7:5001/#/experiments/4/runs"),
        ("http://127.0.0.2:5000/", "browse http://127.0.0.2:5000/#/experiments/4/runs"),
    ],
)
def test_sweep_prints_the_ui_of_the_server_it_logged_to(uri, shown):
    assert ui_command(TrackingTarget(uri, "4", "parent")).startswith(shown)


def test_sweep_prints_mlflow_ui_for_a_local_store():
    text = ui_command(TrackingTarget("sqlite:////data/mlflow.db", "2", "parent"))
    assert text.startswith("mlflow ui --backend-store-uri sqlite:////data/mlflow.db --host 127.0.0.1 --port 5000")
    assert "http://127.0.0.1:5000/#/experiments/2/runs" in text


def tracking_server(action: str, folder: Path, port: int, *extra: str) -> str:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cluster.tracking_server",
            action,
            *extra,
            "--folder",
            str(folder),
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--workers",
            "1",
            "--credentials",
            str(folder / "credentials"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def mlflow_call(port: int, login: tuple[str, str] | None, path: str, body: dict | None = None) -> tuple[int, dict]:
    """The HTTP status and JSON answer of one MLflow REST call, with `login` as basic auth or none."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/2.0/mlflow/{path}", data=data, headers={"Content-Type": "application/json"}
    )
    if login:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(login).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, {}


def mlflow_status(port: int, login: tuple[str, str] | None, path: str, body: dict | None = None) -> int:
    return mlflow_call(port, login, path, body)[0]


@pytest.mark.slow
def test_head_tracking_server_start_is_idempotent_and_stop_ends_it(tmp_path):
    """The start commands of every `ray up`: one server, behind a login, whose users outlive a restart."""
    from cluster.tracking_server import read_login

    port = free_port()
    search = "experiments/search?max_results=1"
    try:
        uri = tracking_server("start", tmp_path, port).removeprefix("mlflow server: ")
        assert uri.endswith(f":{port}") and (tmp_path / "uri").read_text().strip() == uri
        admin = read_login(tmp_path / "credentials")
        assert admin[0] == "admin" and len(admin[1]) >= 24 and (tmp_path / "credentials").stat().st_mode & 0o777 == 0o600
        pid, log = (tmp_path / "server.pid").read_text(), (tmp_path / "server.log").read_text()
        assert all(admin[1] not in command for command in processes_mentioning(f"--port {port}")), "the password is on a command line"
        assert mlflow_status(port, None, search) == 401 and mlflow_status(port, ("admin", "wrong"), search) == 401
        assert mlflow_status(port, None, "experiments/create", {"name": "anyone"}) == 401
        status, created = mlflow_call(port, admin, "experiments/create", {"name": "sweep"})
        assert status == 200
        added = tracking_server("add-user", tmp_path, port, "reviewer")
        reviewer = ("reviewer", added.split("password ", 1)[1].split(" ", 1)[0])
        assert mlflow_status(port, reviewer, search) == 200  # reads
        assert (
            mlflow_status(port, reviewer, "runs/create", {"experiment_id": created["experiment_id"]}) == 403
        )  # changes nothing of the sweep's

        assert tracking_server("start", tmp_path, port) == f"mlflow server: {uri}"  # what a second `ray up` does
        assert (tmp_path / "server.pid").read_text() == pid, "a second server was started"
        assert (tmp_path / "server.log").read_text().startswith(log), "the log was truncated"
        assert read_login(tmp_path / "credentials") == admin, "the second start changed the admin's password"
        assert tracking_server("stop", tmp_path, port) == "mlflow server stopped"
        tracking_server("start", tmp_path, port)  # a new server on the same stores: the same users
        assert mlflow_status(port, reviewer, search) == 200 and mlflow_status(port, admin, search) == 200

        assert tracking_server("rotate", tmp_path, port) == f"mlflow admin password rotated: the new one is in {tmp_path / 'credentials'}"
        rotated = read_login(tmp_path / "credentials")
        assert rotated != admin and mlflow_status(port, admin, search) == 401 and mlflow_status(port, rotated, search) == 200
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5)
    finally:
        assert tracking_server("stop", tmp_path, port) == "mlflow server stopped"
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5)
    assert not (tmp_path / "server.pid").exists()
    assert tracking_server("stop", tmp_path, port) == "no mlflow server was running"


@pytest.mark.slow
def test_head_tracking_server_start_refuses_to_keep_a_server_without_login(tmp_path, mlflow_server):
    """A cluster launched before the login: `ray up` would keep its open server; it stops with the fix instead."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cluster.tracking_server",
            "start",
            "--folder",
            str(tmp_path / "head"),
            "--port",
            str(mlflow_server.port),
            "--credentials",
            str(tmp_path / "credentials"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1 and done.stderr.strip().splitlines()[-1] == (
        f"the mlflow server on port {mlflow_server.port} lets anyone in (started without its login, e.g. before vqbench turned it on): "
        "stop it (python -m cluster.tracking_server stop) and start again"
    )
    assert not (tmp_path / "head" / "uri").exists(), "the sweep would have been pointed at it"


def processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if entry.name.isdigit() and text in command:
            found.append(command[:200])
    return found


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_cluster_cycle_launch_sweep_teardown(tmp_path):
    reason = sandbox.missing_prerequisite()
    if reason:
        pytest.skip(f"the cluster cycle cannot run here: {reason}")
    report_file = tmp_path / "report.json"
    done = subprocess.run(
        ["nice", "-n", "10", sys.executable, "-m", "cluster.cycle", "--workspace", str(tmp_path / "ws"), "--report", str(report_file)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1100,
    )
    assert report_file.is_file(), f"the cycle wrote no report (exit {done.returncode})\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    report = json.loads(report_file.read_text())
    print(json.dumps({k: v for k, v in report.items() if k != "sweep_output"}, indent=2))
    assert "error" not in report, f"{report['error']}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert report["alive_nodes"] == 2
    assert report["parents"] == ["FINISHED"]
    children = report["children"]
    assert sorted(c["model"] for c in children) == ["vae", "vqvae"] and all(c["status"] == "FINISHED" for c in children)
    assert len({c["node"] for c in children}) == 2, "the trials did not run on both nodes"
    assert all(c["artifacts"] == TRIAL_ARTIFACTS for c in children)
    assert sorted(report["artifact_files_on_head"]) == ["reconstructions.png"] * 2 + ["tsne.png"] * 2  # stored by the head's server
    assert f"MLflow UI: browse {report['tracking_uri']}/#/experiments/" in report["sweep_output"]
    assert report["runs_in_experiment"] == report["runs_in_experiment_after"] == 3  # the parent and its two trials
    # only the owner drives it: a Ray driver with no token or a wrong one runs nothing; MLflow asks for the login
    assert "InvalidAuthToken" in report["ray_without_token"] and "InvalidAuthToken" in report["ray_with_a_wrong_token"]
    assert report["mlflow_without_login"] == {"search": 401, "create_run": 401}
    # beyond loopback: Ray's own servers (token), the runtime-env agents, ssh, and MLflow (login); no dashboard, no Ray Client
    exposed = [line for line in report["listening"] if not line.startswith("127.0.0.1:")]
    assert {line.split()[1] for line in exposed} <= {"gcs_server", "raylet", "ray::RuntimeEnv", "sshd", "python"}, exposed
    assert [line for line in exposed if line.split()[1] == "python"] == ["0.0.0.0:5000 python"], exposed
    assert report["mlflow_stop"] == "mlflow server stopped"
    assert report["leftover_processes"] == [] and report["leftover_ports"] == []
    assert done.returncode == 0
    assert processes_mentioning(str(tmp_path / "ws")) == [], "a process of the sandbox outlived it"


@pytest.mark.slow
def test_sweep_refuses_a_storage_path_a_node_cannot_see(tmp_path):
    """The driver sees a tmpfs (in its own mount namespace) at the storage path; the cluster's nodes do not."""
    import ray
    from ray.cluster_utils import Cluster

    from benchmark.sweep.storage import check_shared

    if os.geteuid() != 0 or subprocess.run(["unshare", "--mount", "true"]).returncode != 0:
        pytest.skip("needs root and unshare to give the driver a folder the nodes cannot see")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    private = tmp_path / "private"
    private.mkdir()
    store = tmp_path / "mlflow.db"
    try:
        done = subprocess.run(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                'mount -t tmpfs tmpfs "$0" && exec "$@"',
                str(private),
                sys.executable,
                "-m",
                "benchmark.sweep",
                "--space",
                "smoke",
                "--address",
                cluster.address,
                "--storage-path",
                str(private),
                "--tracking-uri",
                f"sqlite:///{store}",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
        )
        ray.init(address=cluster.address, log_to_driver=False)
        check_shared(str(tmp_path / "shared"))  # a folder both nodes see is accepted
        address = ", ".join(sorted({n["NodeManagerAddress"] for n in ray.nodes()}))
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: --storage-path {private}: {private} is not visible from node(s) {address} of this 2-node cluster; "
        "use s3://BUCKET/PATH or a shared filesystem (NFS, EFS) mounted at the same path on every node"
    ]
    assert not store.exists(), "a run was created before the refusal"


def test_storage_uri_stays_a_uri_and_its_files_round_trip(tmp_path):
    """s3:// is read through pyarrow as Ray Tune reads it; a file:// URI takes the same road here."""
    from benchmark.sweep.storage import RemoteFolder, storage_folder

    assert (
        str(storage_folder("s3://bucket/vqbench/") / "sweep-1" / "vqbench_sweep.json") == "s3://bucket/vqbench/sweep-1/vqbench_sweep.json"
    )
    assert storage_folder("runs") == Path("runs").resolve()
    folder = storage_folder(f"file://{tmp_path}/store") / "sweep-1"
    assert isinstance(folder, RemoteFolder) and not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    state = folder / "vqbench_sweep.json"
    state.write_text('{"tracking": {}}')
    assert state.is_file() and not folder.is_file() and folder.exists()
    assert state.read_text() == '{"tracking": {}}' == (tmp_path / "store" / "sweep-1" / "vqbench_sweep.json").read_text()
    assert str(state.parent.parent) == f"file://{tmp_path}/store"


# ---------------------------------------------------------------- the sandbox's view of the host


def test_cover_plan_keeps_what_the_sandbox_needs_from_under_a_covered_folder():
    """The mount plan alone, fast and without root: the covered folder's needed paths keep their paths, each once."""
    workspace, clone, venv, base = (
        Path("/tmp/pytest-of-root/ws"),
        Path("/tmp/clone"),
        Path("/tmp/v/venv"),
        Path("/root/.pyenv/versions/3.11"),
    )
    plan = sandbox.cover_plan(Path("/tmp"), workspace / "tmp", [workspace, clone, venv, base])
    cover = plan.index(["mount", "--bind", str(workspace / "tmp"), "/tmp"])
    assert plan[0] == ["mount", "-t", "tmpfs", "tmpfs", "/mnt"] and plan[-1] == ["umount", "/mnt"]
    taken = [(c[2], c[3]) for c in plan[:cover] if c[:2] == ["mount", "--bind"]]
    given_back = [(c[2], c[3]) for c in plan[cover + 1 :] if c[:2] == ["mount", "--bind"]]
    assert taken == [(str(workspace), "/mnt/0"), (str(clone), "/mnt/1"), (str(venv), "/mnt/2")]  # the base is not under /tmp
    assert given_back == [(handle, path) for path, handle in taken]
    assert all(["mkdir", "-p", path] in plan[cover:] for _, path in given_back)  # mount points inside the new /tmp
    # the home covered: the venv's base stays; an environment inside the checkout comes with it
    assert [c[2:] for c in sandbox.cover_plan(Path("/root"), Path("/w/home"), [workspace, base]) if c[:2] == ["mount", "--bind"]] == [
        [str(base), "/mnt/0"],
        ["/w/home", "/root"],
        ["/mnt/0", str(base)],
    ]
    assert sandbox.outermost([clone, clone / ".venv", workspace, clone]) == [clone, workspace]
    assert sandbox.cover_plan(Path("/run"), workspace / "run", [workspace, clone]) == [
        ["mkdir", "-p", "/run"],
        ["mount", "--bind", str(workspace / "run"), "/run"],
    ]
    with pytest.raises(RuntimeError, match="handles in /mnt"):
        sandbox.cover_plan(Path("/mnt/home"), workspace / "home", [Path("/mnt/home/vqbench")])  # its tmpfs would hide the checkout


INSIDE_SANDBOX = """
import json, subprocess, sys
from pathlib import Path
from cluster import sandbox

workspace, host_marker, report = Path(sys.argv[1]), Path(sys.argv[2]), {}
try:
    sandbox.prepare(workspace)
    env = subprocess.run([sys.executable, "-c", "import sys, yaml; print(sys.prefix)"], capture_output=True, text=True)
    (sandbox.ENV_PREFIX / "written-in-the-sandbox").write_text("x")
    report = {"checkout": (sandbox.REPO / "cluster" / "sandbox.py").is_file(), "env": env.stdout.strip() or env.stderr[-1000:],
              "activate": Path("/opt/pytorch/bin/activate").read_text(), "host_tmp_seen": host_marker.exists(),
              "home": sorted(p.name for p in Path.home().iterdir())}
except Exception as err:
    report = {"error": f"{type(err).__name__}: {err}"}
(workspace / "inside.json").write_text(json.dumps(report))
"""


def sandbox_mounts_missing() -> str | None:
    """What `prepare` needs (not the sshd and rsync of the whole cycle), or None."""
    if os.geteuid() != 0:
        return "needs root (namespaces and mounts)"
    if not all(shutil.which(tool, path=sandbox.TOOL_DIRS) for tool in ("unshare", "ssh-keygen", "ip", "mount", "umount")):
        return "needs unshare, ssh-keygen, ip, mount and umount"
    if subprocess.run(sandbox.isolated_command(["true"]), capture_output=True).returncode != 0:
        return "cannot create namespaces here"
    return None


STARTS_A_SANDBOX = (
    "import subprocess, sys; from cluster import sandbox; "
    "subprocess.run(sandbox.isolated_command(['sleep', sys.argv[1]]), preexec_fn=sandbox.dies_with_parent)"
)


def test_a_sandbox_dies_with_the_process_that_started_it():
    """A cycle killed from outside (the test's timeout kills only its own child) must not leave its machines running."""
    reason = sandbox_mounts_missing()
    if reason:
        pytest.skip(f"the sandbox cannot be made here: {reason}")
    marker = str(3_600 + secrets.randbelow(100_000))  # `sleep <marker>` names this test's process
    starter = subprocess.Popen([sys.executable, "-c", STARTS_A_SANDBOX, marker], cwd=REPO)
    deadline = time.monotonic() + 60
    while not processes_mentioning(f"sleep {marker}"):
        assert time.monotonic() < deadline and starter.poll() is None, "the sandbox did not start"
        time.sleep(0.2)
    starter.kill()  # SIGKILL: nothing of the starter's own runs
    starter.wait()
    deadline = time.monotonic() + 30
    while processes_mentioning(f"sleep {marker}") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_mentioning(f"sleep {marker}") == [], "the sandbox outlived the process that started it"


@pytest.mark.parametrize(
    ("checkout_in_tmp", "env_in_tmp"),
    [(False, False), (True, False), (False, True), (True, True)],
    ids=["checkout-and-env-here", "checkout-under-tmp", "env-under-tmp", "both-under-tmp"],
)
def test_sandbox_keeps_the_checkout_and_the_environment_wherever_they_live(tmp_path, checkout_in_tmp, env_in_tmp):
    """The sandbox gets a private /tmp and a fresh home: what it needs from the host (the checkout, the Python
    environment and, for a venv, the installation its interpreter links to) must stay at its path, the
    environment copy-on-write. A fresh clone and a venv under /tmp (`python -m venv /tmp/.../venv`) are a new user's setup."""
    reason = sandbox_mounts_missing()
    if reason:
        pytest.skip(f"the sandbox cannot be made here: {reason}")
    checkout = REPO
    if checkout_in_tmp:  # the sandbox's part of a fresh clone: REPO follows the file
        checkout = tmp_path / "clone"
        shutil.copytree(REPO / "cluster", checkout / "cluster", ignore=shutil.ignore_patterns("__pycache__"))
    python = sys.executable
    if env_in_tmp:
        venv = tmp_path / "venv"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)], check=True)
        python = str(venv / "bin" / "python")
    prefix = Path(
        subprocess.run([python, "-c", "import sys; print(sys.prefix)"], capture_output=True, text=True, check=True).stdout.strip()
    )
    (tmp_path / "host-marker").write_text("on the host's /tmp")
    workspace = tmp_path / "ws"
    workspace.mkdir()
    leak = prefix.resolve() / "written-in-the-sandbox"
    try:
        done = subprocess.run(
            sandbox.isolated_command([python, "-c", INSIDE_SANDBOX, str(workspace), str(tmp_path / "host-marker")]),
            cwd=checkout,
            env={**os.environ, "PYTHONPATH": str(checkout)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert not leak.exists(), "a write to the environment inside the sandbox reached the host's"
    finally:
        leak.unlink(missing_ok=True)
    assert (workspace / "inside.json").is_file(), f"exit {done.returncode}: {done.stderr[-3000:]}"
    inside = json.loads((workspace / "inside.json").read_text())
    assert "error" not in inside, f"{inside['error']}\n{done.stderr[-3000:]}"
    assert inside["checkout"], f"the checkout {checkout} is not visible inside"
    assert inside["env"] == str(prefix), "the environment's interpreter does not run inside"
    assert inside["activate"] == f"export PATH={prefix / 'bin'}:$PATH\n"
    assert not inside["host_tmp_seen"], "the sandbox sees the host's /tmp"
    assert ".ssh" in inside["home"] and ".bashrc" in inside["home"]
