"""Fixed cost per trial outside training and evaluation, measured on a real sweep.

    python -m perf.sweep_overhead                 # smoke space, 4 seeds (8 trials on digits): ~2 min
    python -m perf.sweep_overhead --seeds 8

Runs `python -m benchmark.sweep --space smoke` into a temporary sqlite store and storage path,
then reads the trial runs back from MLflow (children of the sweep's parent run) and Ray Tune's
result.json files (the `pid` Ray adds to every report). A trial's overhead is its run's
end - start minus `time/train_s` + `time/eval_s`: the t-SNE and grid figures, MLflow calls and
uploads, the model file. Its fixed cost is that minus the figures (`time/figures_s`, mostly the
t-SNE, which `perf.eval_cost` counts as evaluation): what a trial pays whatever its size.
`time/train_s` itself includes each epoch's checkpoint and report, counted apart as
train_s - sum of `train/epoch_s` and `train_probe/seconds` (the per-epoch probe is work, not
overhead). The share outside training/evaluation is
1 - sum(train + eval) / (concurrent slots x sweep wall time).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from perf.record import REPO, Options, available_cores, write_record

EXPERIMENT = "perf-overhead"


def import_seconds() -> float:
    """What a fresh Ray actor pays before its first trial: importing the trainable."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import benchmark.sweep.trainable"], cwd=REPO, check=True)
    return time.perf_counter() - start


def run_sweep(folder: Path, args) -> tuple[str, float, float]:
    """The sweep as a user runs it; its tracking URI and its start and end (epoch seconds)."""
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    command = [
        sys.executable,
        "-m",
        "benchmark.sweep",
        "--space",
        "smoke",
        "--seeds",
        str(args.seeds),
        "--tracking-uri",
        uri,
        "--storage-path",
        str(folder / "ray"),
        "--experiment",
        EXPERIMENT,
        "--name",
        "overhead",
        "--cpus-per-trial",
        str(args.cpus_per_trial),
    ]
    start = time.time()
    with open(folder / "sweep.log", "w") as log:
        code = subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT).returncode
    end = time.time()
    if code != 0:
        raise RuntimeError(f"the sweep exited with code {code}:\n{(folder / 'sweep.log').read_text()[-3000:]}")
    return uri, start, end


def trial_runs(uri: str) -> tuple[object, list]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    parent = client.search_runs([experiment], "tags.`vqbench.role` = 'sweep'")[0]
    kids = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent.info.run_id}'", max_results=10_000)
    epochs = {
        k.info.run_id: sum(
            m.value for metric in ("train/epoch_s", "train_probe/seconds") for m in client.get_metric_history(k.info.run_id, metric)
        )
        for k in kids
    }
    return parent, [(k, epochs[k.info.run_id]) for k in kids]


def worker_pids(storage: Path) -> set[int]:
    """Processes that ran trials, from the `pid` of every result Ray Tune recorded."""
    pids = set()
    for path in storage.rglob("result.json"):
        for line in path.read_text().splitlines():
            if line.strip():
                pids.add(json.loads(line)["pid"])
    return pids


def main(argv: list[str] | None = None) -> int:
    options = Options("sweep_overhead", __doc__)
    options.sized("--seeds", 4, 1, "seeds of the smoke space (2 trials each: a VAE and a VQ-VAE on digits, 1 epoch)")
    options.add_argument("--cpus-per-trial", type=float, default=1.0, help="passed to the sweep (default: 1, its default)")
    args = options.parse(argv)
    imports = import_seconds()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        uri, start, end = run_sweep(folder, args)
        parent, kids = trial_runs(uri)
        pids = worker_pids(folder / "ray")
    wall = end - start
    finished = [(k, epochs) for k, epochs in kids if k.info.status == "FINISHED"]
    if not finished:
        raise RuntimeError("the sweep logged no finished trial runs")
    busy = [k.data.metrics["time/train_s"] + k.data.metrics["time/eval_s"] for k, _ in finished]
    spans = [(k.info.end_time - k.info.start_time) / 1000 for k, _ in finished]
    drawing = [k.data.metrics["time/figures_s"] for k, _ in finished]
    reports = [k.data.metrics["time/train_s"] - epochs for k, epochs in finished]
    slots = min(len(finished), int(available_cores() // args.cpus_per_trial) or 1)
    first_trial = min(k.info.start_time for k, _ in finished) / 1000
    last_trial = max(k.info.end_time for k, _ in finished) / 1000
    figures = {
        "trials": float(len(finished)),
        "sweep_wall_s": wall,
        "driver_start_s": parent.info.start_time / 1000 - start,
        "ray_start_to_first_trial_s": first_trial - parent.info.start_time / 1000,
        "after_last_trial_s": end - last_trial,
        "trainable_import_s": imports,
        "trial_overhead_median_s": statistics.median(s - b for s, b in zip(spans, busy)),
        "figures_median_s": statistics.median(drawing),
        "trial_fixed_median_s": statistics.median(s - b - d for s, b, d in zip(spans, busy, drawing)),
        "epoch_report_median_s": statistics.median(reports),
        "train_eval_median_s": statistics.median(busy),
        "concurrent_slots": float(slots),
        "outside_train_eval_share": 1 - sum(busy) / (slots * wall),
        "worker_processes": float(len(pids)),
    }
    reused = len(pids) < len(finished)
    print(f"smoke sweep, {len(finished)} trials on {slots} slot(s): {wall:.1f} s wall")
    print(f"  driver start (imports, plan, MLflow store): {figures['driver_start_s']:.1f} s")
    print(f"  parent run -> first trial run (ray.init, actor start, imports): {figures['ray_start_to_first_trial_s']:.1f} s")
    print(f"  last trial run -> sweep exit (summary, shutdown): {figures['after_last_trial_s']:.1f} s")
    print(f"  fresh process importing the trainable: {imports:.1f} s")
    print(
        f"per trial (median): train+eval {figures['train_eval_median_s']:.1f} s, overhead outside them {figures['trial_overhead_median_s']:.1f} s "
        f"= figures (t-SNE, grid) {figures['figures_median_s']:.1f} s + fixed cost {figures['trial_fixed_median_s']:.2f} s; "
        f"checkpoints+reports inside train_s {figures['epoch_report_median_s']:.2f} s"
    )
    print(f"share of the sweep's slot time outside training/evaluation: {figures['outside_train_eval_share']:.1%}")
    print(f"worker processes: {len(pids)} for {len(finished)} trials -> actors {'reused' if reused else 'NOT reused'}")
    write_record(args, figures, conclusions={"actors_reused": reused})
    return 0


if __name__ == "__main__":
    sys.exit(main())
