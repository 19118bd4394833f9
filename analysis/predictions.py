"""Per-image test predictions: read from each trial's MLflow artifact or from the file beside a runs CSV, and
turned into per-image paired differences for the two-level interval.

A trial logs `predictions.npz`: `labels` (int, test order) and one int array per probe, `{rep}/{probe}`
(e.g. `latent/mlp`, `codes/linear`, `pixels/mlp`; a probe averaged over R seeded restarts: R rows). An exported batch keeps them beside its CSV as
`<csv-stem>.predictions.npz`, with keys `{run_id}/labels` and `{run_id}/{rep}/{probe}`.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.result_keys import PREDICTIONS_FILE, versioned_predictions_file

METRIC = re.compile(r"^probe/(?P<rep>[a-z]+)/(?P<probe>[a-z]+)_acc$")


def companion(csv: Path) -> Path:
    """The predictions file exported beside a runs CSV."""
    return csv.with_name(f"{csv.stem}.predictions.npz")


def key_for(metric: str) -> str | None:
    """'probe/latent/mlp_acc' -> 'latent/mlp'; None for metrics with no per-image record."""
    found = METRIC.match(metric)
    return f"{found['rep']}/{found['probe']}" if found else None


@dataclass
class Predictions:
    """run_id -> {"labels": array, "latent/mlp": array, ...}; runs absent here have none."""

    by_run: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.by_run)

    def correct(self, run_id: str, key: str) -> np.ndarray | None:
        """1.0 where the probe's prediction equals the label, per test image (a probe of R seeded restarts, one row
        each: the fraction of them that is right); None if not recorded."""
        found = self.by_run.get(run_id, {})
        if key not in found or "labels" not in found or np.shape(found[key])[-1] != len(found["labels"]):
            return None
        right = (found[key] == found["labels"]).astype(float)
        return right.mean(axis=0) if right.ndim == 2 else right

    def add_file(self, path: Path) -> None:
        with np.load(path) as data:
            for name in data.files:
                run_id, _, key = name.partition("/")
                self.by_run.setdefault(run_id, {})[key] = np.asarray(data[name])

    def add_run(self, run_id: str, path: Path) -> None:
        with np.load(path) as data:
            self.by_run[run_id] = {name: np.asarray(data[name]) for name in data.files}

    def save(self, path: Path, run_ids: list[str] | None = None) -> int:
        """Write the batch file (`{run_id}/{key}`), smallest integer type that holds the values; returns runs written."""
        arrays = {}
        for run_id, found in self.by_run.items():
            if run_ids is not None and run_id not in run_ids:
                continue
            for key, values in found.items():
                values = np.asarray(values)
                arrays[f"{run_id}/{key}"] = values.astype(np.int8 if values.size == 0 or values.max() < 128 else np.int16)
        if arrays:
            np.savez_compressed(path, **arrays)
        return len({k.split("/")[0] for k in arrays})


def from_csvs(paths: list[Path]) -> Predictions:
    found = Predictions()
    for path in paths:
        if companion(path).is_file():
            found.add_file(companion(path))
    return found


def from_store(client, run_ids: list[str], protocol: str | None = None) -> Predictions:
    """Each run's `predictions.npz` artifact (with `protocol`: that protocol's, `predictions_vP.npz`), where it has one."""
    found = Predictions()
    artifact = PREDICTIONS_FILE if protocol is None else versioned_predictions_file(protocol)
    with tempfile.TemporaryDirectory() as tmp:
        for run_id in run_ids:
            try:
                local = Path(client.download_artifacts(run_id, artifact, tmp))
            except Exception:  # no artifact (runs logged before predictions existed), or an unreachable artifact store
                continue
            if local.is_file():
                found.add_run(run_id, local)
    return found


def image_differences(
    a: pd.DataFrame, b: pd.DataFrame, seeds: list, metric: str, predictions: Predictions | None, metric_a: str | None = None
) -> np.ndarray | None:
    """d[seed, image] = b's correctness minus a's (runs of a seed averaged), on the same test images; None unless
    every run of both sides at those seeds has predictions for the metric's probe, on test sets of one length."""
    key, key_a = key_for(metric), key_for(metric_a or metric)
    if key is None or key_a is None or predictions is None or not len(predictions):
        return None
    rows = []
    for seed in seeds:
        sides = []
        for runs, key in ((a, key_a), (b, key)):
            here = runs[runs["seed"] == seed]
            arrays = [predictions.correct(r, key) for r in here["run_id"]]
            if not arrays or any(x is None for x in arrays) or len({len(x) for x in arrays}) != 1:
                return None
            sides.append(np.mean(arrays, axis=0))
        if len(sides[0]) != len(sides[1]):
            return None
        rows.append(sides[1] - sides[0])
    if not rows or len({len(r) for r in rows}) != 1:
        return None
    return np.vstack(rows)
