"""Options and results of a perf script: full-size or --tiny options, one JSON line per run.

A speed figure means something only beside the machine, its load and the exact command
that produced it, so every line carries them; `--tiny` runs exist so tests keep the
scripts working, and their figures mean nothing.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shlex
import socket
import sys
from pathlib import Path
from typing import Any, Callable

import torch

from benchmark.machine import cpu_model
from benchmark.outputs import file_problem

DEFAULT_OUT = Path(__file__).resolve().parent / "results.jsonl"
REPO = Path(__file__).resolve().parents[1]
_LOAD_AT_START = os.getloadavg()[0]  # perf scripts import this module first thing


def available_cores() -> int:
    """Cores this process may run on (the affinity mask, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def csv(kind: Callable[[str], Any]) -> Callable[[str], tuple]:
    """argparse type for comma-separated values: `--models vae,vqvae`."""
    return lambda text: tuple(kind(part) for part in text.split(",") if part.strip())


class Options(argparse.ArgumentParser):
    """An argument parser whose size options have a full default and a `--tiny` one."""

    def __init__(self, script: str, doc: str | None) -> None:
        super().__init__(prog=f"python -m perf.{script}", description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
        self.script = script
        self.sizes: dict[str, tuple[Any, Any]] = {}
        self.add_argument("--tiny", action="store_true", help="a run of seconds with tiny sizes, for tests: its figures mean nothing")
        self.add_argument(
            "--out", type=Path, default=DEFAULT_OUT, help="JSON-lines file the figures are appended to (default: perf/results.jsonl)"
        )

    def sized(self, flag: str, full: Any, tiny: Any, help: str, kind: Callable[[str], Any] | None = None) -> None:
        dest = flag.lstrip("-").replace("-", "_")
        self.sizes[dest] = (full, tiny)
        if kind is None:
            kind = csv(type(full[0])) if isinstance(full, tuple) else type(full)
        show = lambda v: ",".join(map(str, v)) if isinstance(v, tuple) else v  # noqa: E731
        self.add_argument(flag, dest=dest, type=kind, default=None, help=f"{help} (default: {show(full)}; --tiny: {show(tiny)})")

    def parse(self, argv: list[str] | None) -> argparse.Namespace:
        argv = sys.argv[1:] if argv is None else list(argv)
        args = self.parse_args(argv)
        for dest, (full, tiny) in self.sizes.items():
            if getattr(args, dest) is None:
                setattr(args, dest, tiny if args.tiny else full)
        args.script, args.command = self.script, shlex.join(["python", "-m", f"perf.{self.script}", *argv])
        if problem := file_problem(args.out):
            self.error(f"--out {args.out}: {problem}; pass a file path that can be written")  # exit 2, before anything is measured
        return args


def machine(device: str = "cpu") -> dict[str, Any]:
    """What the figures depend on; the load averages say whether the machine was quiet."""
    gpu = torch.cuda.get_device_name() if device.startswith("cuda") and torch.cuda.is_available() else None
    return {
        "host": socket.gethostname(),
        "cpu": cpu_model(),
        "cores": available_cores(),
        "gpu": gpu,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_1m_at_start": round(_LOAD_AT_START, 2),
        "load_1m_at_end": round(os.getloadavg()[0], 2),
    }


def significant(value: float, digits: int = 6) -> float:
    return float(f"{value:.{digits}g}")


def write_record(
    args: argparse.Namespace, figures: dict[str, float], device: str = "cpu", conclusions: dict[str, Any] | None = None
) -> dict:
    """Append one JSON line to `args.out` and print it; refuse figures that are not finite."""
    bad = {k: v for k, v in figures.items() if not math.isfinite(v)}
    if bad:
        raise ValueError(f"figures that are not finite numbers: {bad}")
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("out", "script", "command", "tiny")}
    record = {
        "script": args.script,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": args.command,
        "tiny": args.tiny,
        "machine": machine(device),
        "options": options,
        "figures": {k: significant(v) for k, v in figures.items()},
        "conclusions": conclusions or {},
    }
    line = json.dumps(record)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as f:
        f.write(line + "\n")
    print(f"\nappended to {args.out}:\n{line}")
    return record
