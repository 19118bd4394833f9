"""Hundreds of trials on a multi-node Ray cluster against one MLflow server: what grows with the trial count.

    python -m perf.cluster_scale                  # 200 trials on 3 nodes
    python -m perf.cluster_scale --trials 1000

A `ray.cluster_utils.Cluster` (a head and two more nodes, 1 CPU each) runs trials that train
nothing but make a real trial's tracking traffic through `benchmark.tracking.runs.TrialRun` (a child
run with its tags and params, one metrics batch and a Tune report with a checkpoint per epoch,
final metrics and three artifacts) against one `mlflow server` on 127.0.0.1 (sqlite, artifacts
proxied), as on a cluster's head. Each trial times its own calls; trials are grouped by start
order into buckets, so a latency or a per-trial cost that grows with the number of runs already
on the server, or with Tune's experiment state, shows from one bucket to the next.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from perf.record import Options, write_record

EPOCHS = 3
EXPERIMENT = "perf-scale"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def scale_trial(config: dict[str, Any]) -> None:
    """A trial's tracking traffic without its training; appends its timings to `config['log']`."""
    from ray import tune

    from benchmark.config import TrialConfig
    from benchmark.tracking.runs import TrialRun
    from benchmark.tracking.store import TrackingTarget

    trial = TrialConfig.from_dict({"model": "vqvae", "dataset": "digits", "seed": config["i"], "epochs": EPOCHS})
    started = time.time()
    t0 = time.perf_counter()
    run = TrialRun.open(TrackingTarget(**config["tracking"]), trial, "cpu")
    timings: dict[str, Any] = {"open_s": time.perf_counter() - t0, "log_metrics_s": []}
    with tempfile.TemporaryDirectory() as folder:
        files = [Path(folder) / "reconstructions.png", Path(folder) / "tsne.png"]
        for path in files:
            path.write_bytes(os.urandom(30_000))  # about a real figure's size
        checkpoint = Path(folder) / "checkpoint"
        checkpoint.mkdir()
        for epoch in range(1, EPOCHS + 1):
            t0 = time.perf_counter()
            run.log_metrics({"train/loss": 1.0 / epoch, "train/recon_loss": 0.5 / epoch, "train/epoch_s": 0.0}, epoch)
            timings["log_metrics_s"].append(time.perf_counter() - t0)
            (checkpoint / "state.json").write_text(json.dumps({"epoch": epoch, "mlflow_run_id": run.run_id}))
            tune.report({"epoch": epoch}, checkpoint=tune.Checkpoint.from_directory(checkpoint))
        t0 = time.perf_counter()
        run.finish({"probe/latent/mlp_acc": 0.5, "recon/mse": 0.01}, EPOCHS, files, trial)
        timings["finish_s"] = time.perf_counter() - t0
    timings.update(i=config["i"], start=started, end=time.time())
    with open(config["log"], "a") as f:
        f.write(json.dumps(timings) + "\n")


def stop_server(server: subprocess.Popen) -> None:
    """The server and the uvicorn and job processes it started: one process group."""
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def start_server(folder: Path, port: int, workers: int) -> subprocess.Popen:
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--backend-store-uri",
            f"sqlite:///{folder / 'mlflow.db'}",
            "--artifacts-destination",
            str(folder / "artifacts"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(folder / "server.log", "w"),
        start_new_session=True,
    )
    deadline = time.monotonic() + 240
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return server
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                stop_server(server)
                raise RuntimeError(f"mlflow server did not start: {(folder / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(folder: Path, trials: int, nodes: int, server_workers: int) -> tuple[float, list[dict[str, Any]], int, int]:
    """The sweep's wall time, each trial's timings, the size of Tune's experiment state, the runs FINISHED on the server."""
    import ray
    from mlflow.tracking import MlflowClient
    from ray import tune
    from ray.cluster_utils import Cluster

    from benchmark.tracking.runs import start_sweep_run
    from benchmark.tracking.store import ensure_experiment

    port = free_port()
    server = start_server(folder, port, server_workers)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address, log_to_driver=False)
        uri = f"http://127.0.0.1:{port}"
        client = MlflowClient(uri)
        experiment = ensure_experiment(client, EXPERIMENT, uri)
        parent = start_sweep_run(client, experiment, "scale", {"trials": trials}, {})
        log = folder / "trials.jsonl"
        tracking = {"uri": uri, "experiment_id": experiment, "parent_run_id": parent}
        tuner = tune.Tuner(
            tune.with_resources(scale_trial, {"cpu": 1}),
            param_space={"i": tune.grid_search(list(range(trials))), "tracking": tracking, "log": str(log)},
            tune_config=tune.TuneConfig(reuse_actors=True),
            run_config=tune.RunConfig(
                name="scale", storage_path=str(folder / "ray"), verbose=0, checkpoint_config=tune.CheckpointConfig(num_to_keep=1)
            ),
        )
        start = time.perf_counter()
        results = tuner.fit()
        wall = time.perf_counter() - start
        errors = sum(r.error is not None for r in results)
        if errors:
            raise RuntimeError(f"{errors} of {trials} trials errored")
        client.set_terminated(parent, "FINISHED")
        finished = client.search_runs(
            [experiment], f"tags.mlflow.parentRunId = '{parent}' and attributes.status = 'FINISHED'", max_results=50_000
        )
        state = sum(p.stat().st_size for p in (folder / "ray" / "scale").glob("experiment_state*.json"))
        return wall, [json.loads(line) for line in log.read_text().splitlines()], state, len(finished)
    finally:
        ray.shutdown()
        cluster.shutdown()
        stop_server(server)


def main(argv: list[str] | None = None) -> int:
    options = Options("cluster_scale", __doc__)
    options.sized("--trials", 200, 8, "trials, each 3 epochs of tracking traffic and no training")
    options.sized("--buckets", 4, 2, "groups of trials, by start order, whose figures are compared")
    # uvicorn restarts workers that start too slowly for its health check: on a starved machine, use 1.
    options.sized("--server-workers", 4, 1, "mlflow server processes (4 is mlflow's default, as on the cluster's head)")
    options.add_argument("--nodes", type=int, default=3, help="Ray nodes of 1 CPU each, the head included (default: 3)")
    args = options.parse(argv)
    with tempfile.TemporaryDirectory() as tmp:
        wall, timings, state_bytes, finished = run(Path(tmp), args.trials, args.nodes, args.server_workers)
    timings.sort(key=lambda t: t["start"])
    size = max(1, len(timings) // args.buckets)
    figures: dict[str, float] = {
        "trials": float(len(timings)),
        "nodes": float(args.nodes),
        "sweep_wall_s": wall,
        "trials_per_minute": 60 * len(timings) / wall,
        "experiment_state_bytes": float(state_bytes),
        "finished_runs_on_server": float(finished),
    }
    print(
        f"{len(timings)} trials on {args.nodes} nodes in {wall:.0f} s ({figures['trials_per_minute']:.0f}/min); Tune experiment state {state_bytes / 1e3:.0f} kB"
    )
    print("| trials | per trial p50 s | open p50 ms | log_metrics p50 / p95 ms | finish p50 ms |")
    print("| --- | --- | --- | --- | --- |")
    for b in range(args.buckets):
        chunk = timings[b * size : (b + 1) * size] if b < args.buckets - 1 else timings[b * size :]
        if not chunk:
            continue
        writes = [s for t in chunk for s in t["log_metrics_s"]]
        row = {
            "trial_s_p50": statistics.median(t["end"] - t["start"] for t in chunk),
            "open_ms_p50": 1000 * statistics.median(t["open_s"] for t in chunk),
            "log_metrics_ms_p50": 1000 * percentile(writes, 0.5),
            "log_metrics_ms_p95": 1000 * percentile(writes, 0.95),
            "finish_ms_p50": 1000 * statistics.median(t["finish_s"] for t in chunk),
        }
        figures.update({f"bucket{b + 1}_{k}": v for k, v in row.items()})
        print(
            f"| {b * size + 1}-{b * size + len(chunk)} | {row['trial_s_p50']:.2f} | {row['open_ms_p50']:.0f} | "
            f"{row['log_metrics_ms_p50']:.0f} / {row['log_metrics_ms_p95']:.0f} | {row['finish_ms_p50']:.0f} |"
        )
    write_record(args, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
