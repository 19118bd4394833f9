"""The raw-pixel probes, computed once per machine: they depend on the data, never on the model.

Every trial of a sweep reports the probes on raw pixels as its baseline (their accuracies, and their
per-image test predictions for `predictions.npz`), and with probes trained to convergence they cost as
much as a trial's own probes. What they depend on is the dataset's
content, the seed, the probe settings and the code that trains them, so their results are kept
on disk under a key made of exactly those (a content hash, not the dataset's name: two copies
of a dataset in different folders, or an edited one, must not share results). One JSON file per
key, written to a temporary file and renamed, so a trial never reads another's half-written file;
a file that cannot be read is computed again. Two trials that miss at once both compute and both
write the same numbers.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import asdict
from pathlib import Path

import torch

from benchmark import machine
from benchmark.data import Dataset
from benchmark.evaluation import linear_probe, mlp_probe, probe, probe_inputs, probe_settings
from benchmark.evaluation.probe import Probed, probe_all
from benchmark.evaluation.probe_settings import ProbeSettings
from benchmark.outputs import write_atomically

CACHE_ENV = "VQBENCH_PIXEL_PROBE_CACHE"
DEFAULT_CACHE_DIR = "~/.cache/vqbench/pixel-probes"


def cache_dir() -> Path:
    """$VQBENCH_PIXEL_PROBE_CACHE, else ~/.cache/vqbench/pixel-probes."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR).expanduser()


def fingerprint(data: Dataset) -> str:
    """Hash of every image and label of both splits, with their shapes (about 0.1 s for MNIST)."""
    digest = hashlib.sha256()
    for tensor in (data.train_x, data.train_y, data.test_x, data.test_y):
        digest.update(str((tuple(tensor.shape), str(tensor.dtype))).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy())
    return digest.hexdigest()


def _code_version() -> str:
    """A change to how probes are trained or fed changes their numbers: it must miss the cache."""
    digest = hashlib.sha256()
    for source in (probe.__file__, probe_settings.__file__, probe_inputs.__file__, linear_probe.__file__, mlp_probe.__file__, __file__):
        digest.update(Path(source).read_bytes())
    return digest.hexdigest()[:16]


def cache_key(data: Dataset, seed: int, settings: ProbeSettings) -> dict[str, object]:
    """Everything the pixel probes' numbers depend on; stored in the file beside them."""
    key = {
        "data": fingerprint(data),
        "num_classes": data.num_classes,
        "seed": seed,
        "settings": asdict(settings),
        "code": _code_version(),
        "torch": torch.__version__,
        "device": data.train_x.device.type,
        # L-BFGS's last bits differ across thread counts and CPUs (its final gradient norm did, accuracies did not):
        # a cache shared by different machines must not hand one machine's rounding to another's rerun.
        "threads": torch.get_num_threads(),
        "cpu": machine.cpu_model(),
    }
    return json.loads(json.dumps(key))  # as a file gives it back (tuples as lists)


def _read(path: Path, key: dict[str, object]) -> Probed | None:
    try:
        stored = json.loads(path.read_text())
        if stored["key"] != key:
            return None
        metrics = {str(name): float(value) for name, value in stored["metrics"].items()}
        predictions = {str(name): torch.tensor(values, dtype=torch.long) for name, values in stored["predictions"].items()}
        return Probed(metrics, predictions)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError):
        return None


def _write(path: Path, key: dict[str, object], found: Probed) -> None:
    """Atomic: the file appears whole or not at all. A cache that cannot be written costs time, not the trial."""
    predictions = {name: values.tolist() for name, values in found.predictions.items()}
    text = json.dumps({"key": key, "metrics": found.metrics, "predictions": predictions}).encode()
    if (err := write_atomically(path, lambda f: f.write(text))) is not None:
        warnings.warn(f"pixel-probe cache {path} is not writable ({err}): set ${CACHE_ENV} to a writable folder")


def compute_pixel_probes(data: Dataset, seed: int, settings: ProbeSettings) -> Probed:
    """`probe_all` on the flattened uint8 pixels as floats: what a cached file holds."""
    return probe_all(
        data.train_x.flatten(1).float(), data.train_y, data.test_x.flatten(1).float(), data.test_y, data.num_classes, seed, settings
    )


def pixel_probes(data: Dataset, seed: int, settings: ProbeSettings = ProbeSettings(), folder: Path | None = None) -> Probed:
    """The pixel probes' metrics and test predictions from the cache (`folder`, else `cache_dir()`), computed and stored there on a miss."""
    key = cache_key(data, seed, settings)
    path = (folder or cache_dir()) / (hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32] + ".json")
    found = _read(path, key)
    if found is None:
        found = compute_pixel_probes(data, seed, settings)
        _write(path, key, found)
    return found
