"""Probe saved models again under the current probe protocol, so that a protocol change never forces a retrain.

    python -m benchmark.reprobe --sweep PARENT_RUN_ID            # every trial run of a sweep
    python -m benchmark.reprobe --experiment vqbench             # every trial run of an experiment
    python -m benchmark.reprobe --run-id ID [ID ...] --check     # recompute, compare, log nothing

For each finished trial run with a `model.pt` it reloads the model (`benchmark.load_model`), encodes
both splits, runs every probe of protocol `benchmark.evaluation.probe_settings.PROTOCOL` exactly as a trial's evaluation
does (`benchmark.evaluation.evaluate.probe_representations`) and logs to the same run, keeping everything it held:

- metrics `probe_v{P}/{rep}/{key}` (e.g. `probe_v4/latent/linear_acc`) at the run's last epoch;
- params `probe_v{P}.{setting}` (that protocol's settings; the run's own `probe.*` params stay those it was
  trained with, and `probe.protocol`, where present, names the protocol of its unprefixed `probe/...` metrics);
- artifact `predictions_v{P}.npz` (the layout of `predictions.npz`).

A run already holding `probe_v{P}/` metrics is skipped unless --force. With --check nothing is logged: the
recomputed metrics are compared with those the run holds for the protocol, and the exit status is 1 where
one differs. Numbers are reproduced exactly on the same device type with the same torch threads as the trial
(`--threads`, 1 for a sweep's default `--cpus-per-trial 1`): float32 sums depend on both.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from benchmark.data import load_dataset
from benchmark.data_files import DATA_DIR_ENV, DEFAULT_DATA_DIR, DataError
from benchmark.evaluation.evaluate import probe_representations, represent_split
from benchmark.evaluation.probe_predictions import write_predictions
from benchmark.evaluation.probe_settings import PARAM_PREFIX, PROTOCOL, ProbeSettings
from benchmark.result_keys import protocol_view, versioned_params, versioned_predictions_file, versioned_prefix
from benchmark.tracking.logged_model import load_model
from benchmark.tracking.store import TrackingError, resolve_tracking_uri, with_retries
from benchmark.train import pick_device, to_device

TRIAL_ROLE = "tags.`vqbench.role` = 'trial'"


@dataclass
class Reprobed:
    run_id: str
    status: str  # "logged", "checked", "differs", "skipped: ..."
    metrics: dict[str, float]


def protocol_metrics(run_metrics: dict[str, float], run_params: dict[str, str], protocol: str = PROTOCOL) -> dict[str, float]:
    """What a run holds for `protocol`, under the versioned names (`probe_vP/...`); empty where it holds nothing."""
    view = protocol_view(run_metrics, run_params, protocol)
    prefix = versioned_prefix(protocol)
    return {prefix + k[len("probe/") :]: v for k, v in view[0].items()} if view else {}


def reprobe_run(
    uri: str,
    run_id: str,
    data_dir: str | None = None,
    settings: ProbeSettings = ProbeSettings(),
    device: torch.device | None = None,
    check: bool = False,
    force: bool = False,
) -> Reprobed:
    """Probe one run's saved model under `settings` (its protocol) and log, or with `check` compare, the metrics."""
    client = MlflowClient(uri)
    run = with_retries(lambda: client.get_run(run_id))
    prefix = versioned_prefix(settings.protocol)
    held = protocol_metrics(run.data.metrics, run.data.params, settings.protocol)
    if run.info.status != "FINISHED":
        return Reprobed(run_id, f"skipped: the run is {run.info.status}, not FINISHED", {})
    if held and not (check or force):
        return Reprobed(run_id, f"skipped: it holds protocol {settings.protocol}'s metrics already (--force to probe again)", {})
    device = device or pick_device()
    try:
        model, config = load_model(run_id, uri, device)
    except FileNotFoundError as err:
        return Reprobed(run_id, f"skipped: {err}", {})
    data = to_device(load_dataset(config.dataset, data_dir), device)
    train = represent_split(model, data.train_x, data.train_y, config, decode=False)
    test = represent_split(model, data.test_x, data.test_y, config, decode=False)
    metrics, predictions = probe_representations(train, test, data, config, settings)
    found = {key: value for key, value in metrics.items() if key.startswith(prefix)}
    if check:
        same = held.keys() == found.keys() and all(held[k] == found[k] for k in found)
        return Reprobed(run_id, "checked" if same else "differs", found)
    stamp = int(run.info.end_time or run.info.start_time or 0)
    params = {versioned_params(settings.protocol) + key[len(PARAM_PREFIX) :]: value for key, value in settings.to_params().items()}
    with_retries(
        lambda: client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), stamp, config.epochs) for k, v in found.items()],
            params=[Param(k, v) for k, v in params.items() if run.data.params.get(k) != v],
        )
    )
    with tempfile.TemporaryDirectory() as folder:
        path = write_predictions(predictions, Path(folder) / versioned_predictions_file(settings.protocol))
        with_retries(lambda: client.log_artifact(run_id, str(path)))
    return Reprobed(run_id, "logged", found)


def select_runs(client: MlflowClient, run_ids: list[str] | None, experiment: str | None, sweep: str | None) -> list[str]:
    """The trial runs named: by id, every trial run of an experiment (by name), or of a sweep (its parent run's id)."""
    if run_ids:
        return list(run_ids)
    if experiment is not None:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            raise TrackingError(f"--experiment {experiment!r}: no such experiment in this store")
        return [r.info.run_id for r in client.search_runs([found.experiment_id], TRIAL_ROLE, max_results=50_000)]
    parent = with_retries(lambda: client.get_run(sweep))
    query = f"{TRIAL_ROLE} and tags.mlflow.parentRunId = '{sweep}'"
    return [r.info.run_id for r in client.search_runs([parent.info.experiment_id], query, max_results=50_000)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmark.reprobe", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--run-id", nargs="+", help="trial run ids")
    which.add_argument("--experiment", help="every trial run of this MLflow experiment (by name)")
    which.add_argument("--sweep", metavar="PARENT_RUN_ID", help="every trial run of this sweep (its parent run's id)")
    parser.add_argument("--tracking-uri", default=None, help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite ./mlflow.db)")
    parser.add_argument(
        "--data-dir", default=None, help=f"data root in torchvision's layout (default: ${DATA_DIR_ENV} or {DEFAULT_DATA_DIR})"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads; the trial's own count reproduces its numbers (default: 1)")
    parser.add_argument(
        "--check", action="store_true", help="recompute and compare with what each run holds for this protocol; log nothing"
    )
    parser.add_argument("--force", action="store_true", help="probe runs that hold this protocol's metrics already, and log again")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        uri = resolve_tracking_uri(args.tracking_uri)
        run_ids = select_runs(MlflowClient(uri), args.run_id, args.experiment, args.sweep)
        outcomes = []
        for run_id in run_ids:
            outcome = reprobe_run(uri, run_id, args.data_dir, check=args.check, force=args.force)
            print(f"{run_id}: {outcome.status}", flush=True)
            outcomes.append(outcome)
    except (TrackingError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(
        f"protocol {PROTOCOL}: {len(run_ids)} run(s); "
        + ", ".join(
            f"{status} {sum(o.status.split(':')[0] == status for o in outcomes)}" for status in ("logged", "checked", "differs", "skipped")
        )
    )
    return 1 if any(o.status == "differs" for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
