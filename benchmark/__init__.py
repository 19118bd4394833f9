"""vqbench's library. `benchmark.load_model(run_id, tracking_uri)` reloads a trial's trained model."""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    """Lazy, so that `import benchmark.config` does not pay for torch and mlflow."""
    if name == "load_model":
        from benchmark.tracking.logged_model import load_model

        return load_model
    raise AttributeError(f"module 'benchmark' has no attribute {name!r}")
