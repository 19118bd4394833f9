"""Test hooks, not settings: the crashes the reliability tests inject to show that a sweep survives them.

A trial whose config has `fail_at_epoch = N` (0, the default, never) crashes once, after epoch N, on its first
attempt; a retry resumed from its checkpoint does not crash again. How it crashes is the environment's
`VQBENCH_TEST_FAULT_MODE` (Ray's workers inherit the driver's environment at `ray.init`):
- unset (or any other value): it raises `InjectedFault`, an error Ray Tune retries;
- `exit`: the process dies at once, without any clean-up, as a killed worker does;
- `exit-before-checkpoint`: the sweep's trainable dies after logging epoch N to MLflow and before checkpointing it,
  the window in which the run's history must survive a retry.
The key stays in `TrialConfig` because every stored run carries it as a param and in its config id.
"""

from __future__ import annotations

import os

from benchmark.config import TrialConfig

FAULT_MODE_ENV = "VQBENCH_TEST_FAULT_MODE"
EXIT_CODE = 17


class InjectedFault(RuntimeError):
    """Raised on purpose by `fail_at_epoch`, to test how sweeps survive failing trials."""


def _due(config: TrialConfig, epoch: int, resumed: bool) -> bool:
    return config.fail_at_epoch == epoch and not resumed


def after_epoch(config: TrialConfig, epoch: int, resumed: bool) -> None:
    """Where a trial crashes after its epoch `fail_at_epoch` (after the epoch's callback: logged and checkpointed)."""
    if not _due(config, epoch, resumed):
        return
    if os.environ.get(FAULT_MODE_ENV) == "exit":
        os._exit(EXIT_CODE)
    raise InjectedFault(f"fail_at_epoch={config.fail_at_epoch}: failing on purpose after epoch {epoch}")


def before_checkpoint(config: TrialConfig, epoch: int, resumed: bool) -> None:
    """Where the sweep's trainable dies between logging epoch `fail_at_epoch` and checkpointing it."""
    if _due(config, epoch, resumed) and os.environ.get(FAULT_MODE_ENV) == "exit-before-checkpoint":
        os._exit(EXIT_CODE)
