"""What a search space is: named studies of fixed trials or of Optuna-sampled ones.

A space is a module in `search_spaces/` with a one-line `DESCRIPTION` (what
`python -m benchmark.sweep --list-spaces` shows) and `studies(options) -> list[Study]`.
Adding a space means adding one file.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from benchmark.config import ConfigError, TrialConfig


@dataclass(frozen=True)
class SpaceOptions:
    """Command-line overrides a space honours; None keeps the space's own default."""

    datasets: tuple[str, ...] | None = None
    seeds: int | None = None
    epochs: int | None = None
    num_samples: int | None = None


@dataclass(frozen=True)
class Study:
    """One Tune run: a fixed list of trial configs, or `base` plus an Optuna-searched `search`.

    `metric` and `mode` are what ASHA and Optuna rank trials on; tuples of them make the search
    a multi-objective Optuna study, which ASHA cannot serve (it ranks on one number)."""

    label: str
    configs: tuple[dict[str, Any], ...] = ()
    base: dict[str, Any] = field(default_factory=dict)
    search: dict[str, Any] = field(default_factory=dict)  # ray.tune domains, e.g. tune.lograndint
    num_samples: int = 1
    metric: str | tuple[str, ...] = "train/recon_loss"
    mode: str | tuple[str, ...] = "min"

    @property
    def is_search(self) -> bool:
        return bool(self.search)

    @property
    def is_multi_objective(self) -> bool:
        return not isinstance(self.metric, str)

    @property
    def objectives(self) -> tuple[tuple[str, str], ...]:
        """(metric, mode) pairs, one for a single objective."""
        if not self.is_multi_objective:
            return ((self.metric, self.mode),)
        return tuple(zip(self.metric, self.mode, strict=True))

    def tags(self) -> dict[str, str]:
        """What each trial run of the study is tagged with: its study and, for a search, what the search ranked on."""
        tags = {"vqbench.study": self.label}
        if self.is_search:
            tags["vqbench.objectives"] = ",".join(f"{metric}:{mode}" for metric, mode in self.objectives)
        return tags

    def trial_count(self) -> int:
        return self.num_samples if self.is_search else len(self.configs)


def available_spaces() -> list[str]:
    import search_spaces

    return sorted(m.name for m in pkgutil.iter_modules(search_spaces.__path__))


def describe_spaces() -> str:
    """One line per named space: its name and its DESCRIPTION."""
    return "\n".join(f"{name:8s} {getattr(load_space(name), 'DESCRIPTION', '(no description)')}" for name in available_spaces())


def load_space(name: str) -> ModuleType:
    """A space by name, or a user's own space file (`--space my_space.py`)."""
    if name.endswith(".py"):
        path = Path(name).expanduser().resolve()
        if not path.is_file():
            raise ConfigError(f"space file {path} does not exist")
        spec = importlib.util.spec_from_file_location(f"vqbench_user_space_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as err:  # a syntax error or a failing import in the user's file
            raise ConfigError(f"space file {path} cannot be loaded ({type(err).__name__}: {err}): fix it and run again") from None
    elif name in available_spaces():
        module = importlib.import_module(f"search_spaces.{name}")
    else:
        raise ConfigError(f"space={name!r} is not known: choose one of {', '.join(available_spaces())}, or pass a .py file")
    if not callable(getattr(module, "studies", None)):
        raise ConfigError(f"space {name!r} defines no studies(options) function")
    return module


def space_studies(module: ModuleType, name: str, options: SpaceOptions) -> list[Study]:
    """A space's studies, checked as far as a user's space file can get them wrong before Ray would."""
    try:
        found = module.studies(options)
    except ConfigError:
        raise
    except Exception as err:
        raise ConfigError(f"space {name!r}: studies(options) raised {type(err).__name__}: {err}; fix the space") from None
    if not isinstance(found, (list, tuple)) or not all(isinstance(s, Study) for s in found):
        raise ConfigError(f"space {name!r}: studies(options) must return a list of benchmark.space.Study, not {found!r:.100}")
    labels = [s.label for s in found]
    for study in found:
        if not isinstance(study.label, str) or not study.label.strip() or "/" in study.label or labels.count(study.label) > 1:
            raise ConfigError(
                f"space {name!r}: study label {study.label!r} must be a unique, non-empty name without '/' "
                "(it names the study's folder under --storage-path)"
            )
        for key, domain in study.search.items():
            if not callable(getattr(domain, "sample", None)):
                raise ConfigError(
                    f"space {name!r}: study {study.label} searches {key}={domain!r}, which is not a Ray Tune domain; "
                    "use e.g. tune.choice([...]) or tune.loguniform(a, b)"
                )
    return list(found)


def seeds(options: SpaceOptions, default: int) -> range:
    return range(options.seeds if options.seeds is not None else default)


def datasets(options: SpaceOptions, default: tuple[str, ...]) -> tuple[str, ...]:
    return options.datasets or default


def with_epochs(options: SpaceOptions, config: dict[str, Any], default: int) -> dict[str, Any]:
    return {**config, "epochs": options.epochs if options.epochs is not None else default}


def validate(study: Study) -> list[TrialConfig]:
    """Every trial config of a study, validated: the fixed ones, and for a search its bounds."""
    if study.is_multi_objective and (isinstance(study.mode, str) or len(study.mode) != len(study.metric)):
        raise ConfigError(f"study {study.label}: metric {study.metric} needs one mode per metric, got {study.mode!r}")
    for metric, mode in study.objectives:
        if mode not in ("min", "max"):
            raise ConfigError(f"study {study.label}: mode={mode!r} for {metric} is not allowed: choose min or max")
    if not study.is_search:
        return [TrialConfig.from_dict(c) for c in study.configs]
    checked = [TrialConfig.from_dict(study.base)]
    for key, domain in study.search.items():
        for value in getattr(domain, "categories", None) or (domain.lower, domain.upper):
            checked.append(TrialConfig.from_dict({**study.base, key: value}))
    if study.num_samples < 1:
        raise ConfigError(f"num_samples={study.num_samples} is not allowed: it must be >= 1")
    return checked
