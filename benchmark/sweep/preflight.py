"""Checks that run before anything is written: every option's value, and the Ray to run on.

Bad input is a ConfigError naming the option, the value and the fix; the sweep prints it and
exits 2 with no MLflow store, run or Ray results created.
"""

from __future__ import annotations

import argparse
import logging
import math
import socket
from pathlib import Path

from benchmark.config import ConfigError
from benchmark.data_files import check_data_dir
from benchmark.error_text import first_line
from benchmark.outputs import folder_problem
from benchmark.tracking.store import resolve_tracking_uri

RAY_RESOURCE_UNIT = 1e-4  # Ray refuses fractions of a CPU or GPU below this
MAX_SEEDS = 1000  # far beyond any honest interval's needs; a typo of 10**8 would build its configs for minutes


def ray_log_level(verbose: bool) -> int:
    """Ray's start-up lines (a local instance started, token authentication) only with --verbose."""
    return logging.INFO if verbose else logging.ERROR


def check_gpus_per_trial(gpus: float) -> None:
    """Ray packs fractions that divide one GPU evenly; 0.3 would strand a tenth of every GPU."""
    if gpus < 0 or gpus > 1:
        raise ConfigError(
            f"--gpus-per-trial={gpus} is not allowed: use 0, 1, or 1/n such as 0.5 or 0.25 (multi-GPU trials are not supported)"
        )
    if 0 < gpus < 1 and abs(1 / round(1 / gpus) - gpus) > 1e-9:
        raise ConfigError(f"--gpus-per-trial={gpus} does not pack: use 1/n for n trials per GPU, e.g. 0.5, 0.25 or 0.125")


def check_options(args: argparse.Namespace) -> None:
    """Every option's value, before anything is read or started; each message names the fix."""
    _check_resources(args)
    _check_counts(args)
    _check_names(args)
    _check_places(args)


def _check_resources(args: argparse.Namespace) -> None:
    """What each trial reserves: finite, a CPU share above 0, nothing below Ray's smallest unit."""
    for key in ("cpus_per_trial", "gpus_per_trial"):
        if not math.isfinite(getattr(args, key)):
            raise ConfigError(f"--{key.replace('_', '-')}={getattr(args, key)} is not allowed: it must be a finite number")
    if args.cpus_per_trial <= 0:
        raise ConfigError(f"--cpus-per-trial={args.cpus_per_trial} is not allowed: it must be > 0")
    for key in ("cpus_per_trial", "gpus_per_trial"):
        if 0 < getattr(args, key) < RAY_RESOURCE_UNIT:
            raise ConfigError(
                f"--{key.replace('_', '-')}={getattr(args, key)} is below the smallest share of a resource Ray can reserve "
                f"({RAY_RESOURCE_UNIT}): use at least that"
            )
    check_gpus_per_trial(args.gpus_per_trial)


def _check_counts(args: argparse.Namespace) -> None:
    """Seeds, epochs, samples, concurrency and retries: whole numbers in their range."""
    for key in ("seeds", "epochs", "num_samples"):
        value = getattr(args, key)
        if value is not None and value < 1:
            raise ConfigError(f"--{key.replace('_', '-')}={value} is not allowed: it must be >= 1")
    if args.seeds is not None and args.seeds > MAX_SEEDS:
        raise ConfigError(f"--seeds={args.seeds} is not allowed: at most {MAX_SEEDS} (each seed adds a trial per config)")
    for key in ("max_concurrent", "max_failures"):
        if getattr(args, key) < 0:
            raise ConfigError(f"--{key.replace('_', '-')}={getattr(args, key)} is not allowed: it must be >= 0")


def _check_names(args: argparse.Namespace) -> None:
    """The experiment and the sweep's name: the sweep's name is a folder, so no path in it."""
    if not args.experiment.strip():
        raise ConfigError("--experiment is empty: name the MLflow experiment, e.g. --experiment vqbench")
    name = args.resume or args.name
    if name is not None and (not name.strip() or "/" in name or name in (".", "..")):
        raise ConfigError(f"--name {name!r} is not allowed: it names a folder under --storage-path, so use letters, digits, - and _")


def _check_places(args: argparse.Namespace) -> None:
    """Where the sweep reads and writes: the tracking store, the storage folder, the data root."""
    for key in ("tracking_uri", "storage_path"):
        if getattr(args, key) is not None and not getattr(args, key).strip():
            raise ConfigError(f"--{key.replace('_', '-')} is empty: pass a value, or leave the option out for its default")
    if "://" not in args.storage_path and (problem := folder_problem(Path(args.storage_path))):  # a URI (s3://...) is Ray Tune's to read
        raise ConfigError(f"--storage-path {args.storage_path}: {problem}; pass a folder that can be written")
    check_data_dir(args.data_dir)
    resolve_tracking_uri(args.tracking_uri)


def check_address(address: str | None) -> None:
    """A HOST:PORT that does not answer fails in seconds here; ray.init would retry for minutes."""
    if address in (None, "auto", "local") or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except (ValueError, OSError) as err:
        reason = "not HOST:PORT" if isinstance(err, ValueError) else str(err)
        raise ConfigError(
            f"--address {address}: no Ray head answers there ({reason}); pass the head's HOST:PORT, auto on a cluster node, "
            "or leave it out to start a local Ray"
        ) from None


def refused_token(error: BaseException) -> bool:
    """Whether Ray's token authentication is behind `error`: `ray.init` wraps it in a ConnectionError."""
    from ray.exceptions import AuthenticationError

    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, AuthenticationError):
        cause = cause.__cause__ or cause.__context__
    return cause is not None


def connect_ray(args: argparse.Namespace, worker_env: dict[str, str] | None = None) -> bool:
    """Join or start Ray before any run is created: a wrong --address, or trials asking for more
    than a local Ray has (they would wait forever), is bad input. True if it started Ray.
    `worker_env` reaches every trial on every node (the tracking server's login)."""
    import ray

    if ray.is_initialized():
        started = False
    else:
        started = True
        check_address(args.address)
        try:
            ray.init(
                address=args.address or "local",
                include_dashboard=False,
                log_to_driver=False,
                logging_level=ray_log_level(args.verbose),
                runtime_env={"env_vars": worker_env} if worker_env else None,
            )
        except Exception as err:
            if refused_token(err):
                raise ConfigError(
                    f"--address {args.address}: the Ray cluster refused this client's token (InvalidAuthToken): "
                    "export RAY_AUTH_MODE=token with the cluster's token in ~/.ray/auth_token (or RAY_AUTH_TOKEN)"
                ) from None
            raise ConfigError(
                f"--address {args.address}: cannot connect to Ray ({type(err).__name__}: {first_line(err)}); "
                "use auto on a cluster node, or leave it out to start a local Ray"
            ) from None
    if args.address is None:
        have = ray.cluster_resources()
        for key, option in (("CPU", "--cpus-per-trial"), ("GPU", "--gpus-per-trial")):
            wanted = getattr(args, option[2:].replace("-", "_"))
            if wanted > have.get(key, 0):
                if started:
                    ray.shutdown()
                raise ConfigError(
                    f"{option}={wanted}: this machine's Ray has {have.get(key, 0):g} {key}(s), so no trial could ever start; lower it"
                )
    return started
