"""The sweep, validated in full before Ray starts or a run is created: its studies (the space, cut by --only and
the overriding options), every trial config, its data, the analysis plan it registers, and the parent run's params.
Bad input raises ConfigError, DataError or TrackingError, which the CLI turns into exit code 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from benchmark.config import DATASETS, ConfigError, TrialConfig, check_dataset, normalise_dataset
from benchmark.data import check_readable
from benchmark.data_files import fetch, resolve_data_dir
from benchmark.space import SpaceOptions, Study, load_space, space_studies, validate
from benchmark.sweep.preflight import check_options
from benchmark.sweep.selection import OVERRIDES, check_ranking, only, scheduler_for, with_overrides
from benchmark.sweep.storage import storage_folder

DEFAULT_PLAN = Path(__file__).resolve().parents[2] / "analysis" / "plans" / "paper.toml"


def read_plan(path: str) -> tuple[dict[str, str], str]:
    """The analysis plan's registration tags (name, SHA-256 of the file's bytes) and its text; ConfigError if unusable.
    Read with the standard library only: the sweep never imports `analysis` (which validates the plan in full)."""
    import hashlib

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    try:
        raw = Path(path).expanduser().read_bytes()
        name = tomllib.loads(raw.decode("utf-8")).get("name")
    except OSError as err:
        raise ConfigError(
            f"--plan {path}: cannot read it ({err.strerror or err}); pass a plan file such as analysis/plans/paper.toml"
        ) from None
    except (ValueError, UnicodeDecodeError) as err:
        raise ConfigError(f"--plan {path}: not a TOML plan ({err}); fix it or pass another") from None
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"--plan {path}: the plan has no `name`; give it one")
    return {"vqbench.plan": name.strip(), "vqbench.plan_hash": hashlib.sha256(raw).hexdigest()}, raw.decode("utf-8")


@dataclass(frozen=True)
class SweepPlan:
    name: str
    space: str
    studies: list[Study]
    trials: list[TrialConfig]  # validated; for searches, the bounds that were checked
    plan_tags: dict[str, str] | None = None  # the analysis plan registered on the runs
    plan_text: str = ""


def plan(args: argparse.Namespace) -> SweepPlan:
    """The sweep, validated in full before Ray starts: its studies, every trial config, its data and its analysis plan."""
    check_options(args)
    studies = selected_studies(args, chosen_datasets(args))
    trials = validated_trials(args, studies)
    ready_data(args, sorted({t.dataset for t in trials}))
    # a space file's stem, not its path: the name is a folder under --storage-path
    name = args.resume or args.name or f"{Path(args.space).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    plan_tags, plan_text = registered_plan(args)
    return SweepPlan(name, args.space, studies, trials, plan_tags, plan_text)


def chosen_datasets(args: argparse.Namespace) -> tuple[str, ...] | None:
    """--datasets as names, each checked; None where the space's own datasets apply."""
    if args.datasets is None:
        return None
    chosen = tuple(dict.fromkeys(normalise_dataset(d.strip()) for d in args.datasets.split(",") if d.strip()))
    if chosen == ():
        raise ConfigError(f"--datasets {args.datasets!r} names no dataset: choose from {', '.join(DATASETS)}, or name an image folder")
    for dataset in chosen:
        try:
            check_dataset(dataset)
        except ConfigError as err:
            raise ConfigError(f"--datasets: {err}") from None
    return chosen


def selected_studies(args: argparse.Namespace, chosen: tuple[str, ...] | None) -> list[Study]:
    """The space's studies under the options, cut by --only and with the overriding options applied."""
    module = load_space(args.space)
    options = SpaceOptions(chosen, args.seeds, args.epochs, args.num_samples)
    found = space_studies(module, args.space, options)
    for key in ("seeds", "epochs"):  # the space must change when the option does, or the option would be ignored
        if getattr(options, key) is None:
            continue
        other = space_studies(module, args.space, replace(options, **{key: getattr(options, key) + 1}))
        if [replace(s, search=sorted(s.search)) for s in other] == [replace(s, search=sorted(s.search)) for s in found]:
            raise ConfigError(f"--{key}: space {args.space!r} does not use it (its trials stay the same whatever the value); leave it out")
    studies = [with_overrides(only(s, args.only), {key: getattr(args, key) for key in OVERRIDES}) for s in found]
    if args.num_samples is not None and not any(s.is_search for s in studies):
        raise ConfigError(f"--num-samples applies to searched spaces such as optuna; space {args.space!r} has fixed trials: leave it out")
    return studies


def validated_trials(args: argparse.Namespace, studies: list[Study]) -> list[TrialConfig]:
    """Every trial config (a search's bounds) validated and ranked as its scheduler needs; at least one trial."""
    trials = []
    for study in studies:
        checked = validate(study)
        check_ranking(study, scheduler_for(study, args.scheduler), checked)
        trials += checked
    if not sum(s.trial_count() for s in studies):
        raise ConfigError(f"space {args.space!r} with --only {args.only!r} and --datasets {args.datasets!r} selects no trials")
    return trials


def ready_data(args: argparse.Namespace, datasets: list[str]) -> None:
    """Each dataset here and readable (fetched first with --download); a dry run reports the data instead of requiring it."""
    check_download_here(args, datasets)
    if args.dry_run:
        return
    for dataset in datasets:
        if args.download:
            fetch(dataset, args.data_dir)  # once, here: a download that cannot work fails before Ray starts
        check_readable(dataset, args.data_dir)


def registered_plan(args: argparse.Namespace) -> tuple[dict[str, str] | None, str]:
    """The analysis plan the runs are registered under (tags and text), or none where the default plan is not installed."""
    plan_file = getattr(args, "plan", None)
    if plan_file == str(DEFAULT_PLAN) and not DEFAULT_PLAN.is_file():  # an install without the analysis plans
        print(
            f"warning: the default analysis plan {DEFAULT_PLAN} is not here: the runs are registered under no plan (pass --plan FILE)",
            file=sys.stderr,
        )
        plan_file = None
    return read_plan(plan_file) if plan_file else (None, "")


def check_download_here(args: argparse.Namespace, datasets: list[str]) -> None:
    """--download fetches once, on this machine, before Ray starts: with a cluster the trials also run
    on nodes that would lack the data, so it is refused there with the ways to stage the data instead."""
    if not args.download or args.address in (None, "local"):
        return
    names = " ".join(d for d in datasets if d != "digits")
    if not names:
        raise ConfigError(
            "--download with --address: this sweep's only dataset, digits, is embedded in scikit-learn "
            "and every node has it: leave out --download"
        )
    raise ConfigError(
        "--download fetches data on this machine only, and with --address the trials run on the cluster's other nodes too, "
        "where they would fail without it: stage the data on every node, then leave out --download. Copy it at launch "
        f"(cluster.yaml's file_mounts copy ./data to ~/data on each node; fill it first with `python -m benchmark.data {names} "
        f"--data-dir data --download`), fetch it on each node as it starts (`python -m benchmark.data {names} --data-dir ~/data "
        "--download` in cluster.yaml's setup_commands), or mount shared storage (EFS, NFS) at the same path on every node "
        "and pass that path as --data-dir"
    )


def resolved_params(args: argparse.Namespace, sweep: SweepPlan, uri: str) -> dict[str, Any]:
    """The parent run's params: the values the sweep used, not the command line's Nones."""

    def values(key: str) -> str:
        return ",".join(str(v) for v in sorted({getattr(t, key) for t in sweep.trials}))

    return {
        "space": args.space,
        "datasets": values("dataset"),
        "models": values("model"),
        "seeds": values("seed"),
        "epochs": values("epochs"),
        "precision": values("precision"),
        "num_trials": sum(s.trial_count() for s in sweep.studies),
        "studies": ",".join(
            f"{s.label}:{scheduler_for(s, args.scheduler)}" + (f":{s.num_samples} samples" if s.is_search else "") for s in sweep.studies
        ),
        "only": args.only or "all",
        "data_dir": str(resolve_data_dir(args.data_dir)),
        "download": args.download,
        "address": args.address or "local",
        "tracking_uri": uri,
        "experiment": args.experiment,
        "name": sweep.name,
        "cpus_per_trial": args.cpus_per_trial,
        "gpus_per_trial": args.gpus_per_trial,
        "max_concurrent": args.max_concurrent or "as resources allow",
        "max_failures": args.max_failures,
        "storage_path": str(storage_folder(args.storage_path)),
        "log_model": not args.no_log_model,
        "plan": getattr(args, "plan", None) or "none",
    }
