"""A sweep's state file: where it logs and the options it was started with, for `--resume`.

Paths are saved absolute, so the resume command the sweep prints works from any folder; a
resumed sweep runs as it was started, so options that would change it are refused rather than
silently ignored.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmark.config import ConfigError
from benchmark.data_files import resolve_data_dir
from benchmark.sweep.storage import RemoteFolder, storage_folder
from benchmark.tracking.store import TrackingTarget

SWEEP_FILE = "vqbench_sweep.json"
# What --resume may be given besides the name: where the sweep is, the Ray to run on, and how much to print.
RESUME_OPTIONS = ("resume", "storage_path", "address", "dry_run", "verbose", "list_spaces")


def write_state(folder: Path | RemoteFolder, target: TrackingTarget, args: argparse.Namespace) -> None:
    saved = {
        **vars(args),
        "storage_path": str(storage_folder(args.storage_path)),
        "data_dir": str(resolve_data_dir(args.data_dir)),
        "space": str(Path(args.space).expanduser().resolve()) if args.space.endswith(".py") else args.space,
    }
    (folder / SWEEP_FILE).write_text(json.dumps({"tracking": asdict(target), "args": saved}, indent=2))


def read_state(folder: Path | RemoteFolder) -> tuple[TrackingTarget, dict[str, Any]]:
    """The saved target and options; a missing or damaged file is bad input to --resume."""
    path = folder / SWEEP_FILE
    if not path.is_file():
        raise ConfigError(f"--resume: no sweep at {folder}; check the name and --storage-path")
    try:
        state = json.loads(path.read_text())
        return TrackingTarget(**state["tracking"]), dict(state["args"])
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(
            f"--resume: the sweep's state file {path} is damaged ({type(err).__name__}: {err}); start the sweep again under a new --name"
        ) from None


def resumed_args(given: argparse.Namespace, defaults: argparse.Namespace) -> argparse.Namespace:
    """The options the sweep was started with, and from the command line only what --resume may change."""
    changed = [key for key, value in vars(given).items() if key not in RESUME_OPTIONS and value != getattr(defaults, key)]
    if changed:
        flags = ", ".join(f"--{key.replace('_', '-')}" for key in changed)
        raise ConfigError(
            f"--resume continues sweep {given.resume} with the options it was started with; leave out {flags} "
            "(to change them, start a new sweep)"
        )
    folder = storage_folder(given.storage_path) / given.resume
    _, saved = read_state(folder)
    return argparse.Namespace(
        **{
            **vars(defaults),
            **saved,
            "storage_path": str(folder.parent),
            "resume": given.resume,
            "dry_run": given.dry_run,
            "verbose": given.verbose,
            "list_spaces": False,
            "address": given.address or saved.get("address"),
        }
    )
