"""Which of a space's trials a sweep runs, with what run-wide settings, and how a study ranks them.

A space defines its trials; the command line narrows them (`--only`), sets properties of the run
rather than of the space (`--precision`, `--train-probe-every`) and picks the scheduler. The
checks here run before Ray starts, so a selection that cannot work exits 2 with nothing started.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from benchmark.config import ConfigError, TrialConfig
from benchmark.evaluation.train_probe import PREFIX as TRAIN_PROBE_PREFIX
from benchmark.space import Study

SCHEDULERS = ("fifo", "asha")
OVERRIDES = ("precision", "train_probe_every")  # trial config keys the command line sets for every trial


def only(study: Study, selector: str | None) -> Study:
    """Keep the fixed trials whose config matches every KEY=VALUE, where VALUE may list alternatives A|B
    (compared as validated values)."""
    if not selector:
        return study
    wanted: dict[str, set] = {}
    for part in selector.split(","):
        key, equals, values = part.partition("=")
        if not key.strip() or not equals or "" in values.split("|"):
            raise ConfigError(
                f"--only {selector}: {part!r} is not KEY=VALUE; write e.g. --only model=vae or --only model=vae,kl_weight=0.001|0.1"
            )
        try:  # validates keys and values, and compares 0.10 with 0.1
            wanted[key] = {TrialConfig.from_dict({key: value}).to_dict()[key] for value in values.split("|")}
        except ConfigError as err:
            raise ConfigError(f"--only {selector}: {err}") from None
    if study.is_search:
        raise ConfigError(f"--only {selector}: searched spaces have no fixed trials to select; use it with grid-style spaces")
    kept = tuple(c for c in study.configs if all(TrialConfig.from_dict(c).to_dict()[k] in v for k, v in wanted.items()))
    return Study(study.label, kept)


def with_overrides(study: Study, given: dict[str, Any]) -> Study:
    """Every trial of a study with the command line's --precision and --train-probe-every (None: the space's):
    properties of the run, not of the space."""
    overrides = {key: value for key, value in given.items() if key in OVERRIDES and value is not None}
    if not overrides:
        return study
    return dataclasses.replace(study, configs=tuple({**c, **overrides} for c in study.configs), base={**study.base, **overrides})


def scheduler_for(study: Study, chosen: str | None) -> str:
    """The scheduler the command line chose, else ASHA for single-objective searches and FIFO otherwise: ASHA ranks trials on one number."""
    return chosen or ("asha" if study.is_search and not study.is_multi_objective else "fifo")


def check_ranking(study: Study, scheduler: str, trials: list[TrialConfig]) -> None:
    """What ranks trials must be able to: ASHA one objective, and a per-epoch probe metric must be there every epoch."""
    if scheduler == "asha" and study.is_multi_objective:
        raise ConfigError(
            f"--scheduler asha: study {study.label} has {len(study.objectives)} objectives and ASHA ranks trials on one; "
            "use --scheduler fifo"
        )
    ranked = [metric for metric, _ in study.objectives if metric.startswith(TRAIN_PROBE_PREFIX)]
    if not ranked or not (study.is_search or scheduler == "asha"):
        return
    for trial in trials:
        if trial.train_probe_every != 1:
            raise ConfigError(
                f"study {study.label} ranks trials on {', '.join(ranked)} at every epoch: it needs train_probe_every=1, "
                f"not {trial.train_probe_every}; leave --train-probe-every out"
            )
