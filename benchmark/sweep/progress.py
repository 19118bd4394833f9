"""What a person watching a sweep sees: trials named for what they are, one row per event.

Ray Tune's own tables (boxed, config dicts cut short, a 35-line box per result) and its
start-up logs are silenced unless `--verbose`. Tune ignores a custom `ProgressReporter`
under its default output engine (ray-project/ray#38202), so the reporter is a Tune
`Callback`: a trial prints a row with its first result, at most every `every_s` seconds
while it trains, and when it ends; an overall line follows every ended trial and every
`every_s` seconds: trials done / failed / running of the total, elapsed, time left.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import Counter
from typing import Any, Iterator

from ray.tune import Callback
from ray.tune.experiment import Trial

from benchmark.config import TrialConfig
from benchmark.result_keys import DIVERGED, EPOCH, FAILED, MLFLOW_RUN_ID
from benchmark.sweep.preflight import ray_log_level

HEADER_EVERY_ROWS = 40
# (header, width); the trial name's width is set per sweep
COLUMNS = (
    ("model", 5),
    ("dataset", 13),
    ("K", 5),
    ("D", 4),
    ("beta/kl", 7),
    ("seed", 4),
    ("epoch", 7),
    ("recon_loss", 10),
    ("perplexity", 10),
    ("status", 10),
    ("mlflow_run_id", 32),
)
LEFT_ALIGNED = {"trial", "model", "dataset", "status", "mlflow_run_id"}


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


@contextlib.contextmanager
def ray_output(verbose: bool) -> Iterator[None]:
    """Ray's own logs and tables only with --verbose; Tune's warnings (a trial waiting for resources
    it cannot get) always, but for those a sweep of short epochs triggers over and over: the
    experiment-snapshot warning (Ray's own switch) and "operation took 0.9 s" on a busy machine.
    Tune's default output engine prints a configuration box and a TensorBoard hint even at
    verbose=0, its legacy engine nothing."""
    quiet = {} if verbose else {"RAY_AIR_NEW_OUTPUT": "0", "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0"}
    levels = {
        "ray": ray_log_level(verbose),
        "ray.tune": logging.INFO if verbose else logging.WARNING,
        "ray.tune.utils.util": ray_log_level(verbose),
    }
    saved_env = {key: os.environ.get(key) for key in quiet}
    saved_levels = {name: logging.getLogger(name).level for name in levels}
    os.environ.update(quiet)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    try:
        yield
    finally:
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        for name, level in saved_levels.items():
            logging.getLogger(name).setLevel(level)


def trial_config(trial: Trial) -> TrialConfig:
    return TrialConfig.from_dict(trial.config["trial"])


def trial_name(trial: Trial) -> str:
    """Ray Tune's name for a trial: its MLflow run name, e.g. vqvae-mnist-K512-D64-b0.25-s0."""
    return trial_config(trial).name


def trial_dirname(trial: Trial) -> str:
    """The trial's folder: its name, and Ray's id because two trials may differ only in keys the name omits (lr, epochs)."""
    return f"{trial_name(trial)}_{trial.trial_id}"


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def outcome(result: dict, epochs: int) -> str:
    """How a trial ended, from its last report: done, stopped (early, by the scheduler), diverged or failed."""
    if result.get(FAILED):
        return "diverged" if result.get(DIVERGED) else "failed"
    return "done" if result.get(EPOCH, 0) >= epochs else "stopped"


class SweepProgress(Callback):
    """Prints the progress of one Tune run (a study) of a sweep; `setup` starts the clock, also on resume."""

    def __init__(self, study: str, name_width: int, every_s: float = 30.0) -> None:
        self.study = study
        self.name_width = max(name_width, len("trial"))
        self.every_s = every_s
        self.total = 0
        self.started = 0.0
        self.last_overall = 0.0
        self.last_row: dict[str, float] = {}  # trial id -> when its row was last printed
        self.ended: dict[str, str] = {}  # trial id -> done, stopped, diverged or failed
        self.rows = 0
        self.left_at_start: float | None = None  # fraction of the study left when this process took it up

    def setup(self, total_num_samples: int | None = None, **info: Any) -> None:
        self.total = total_num_samples or 0
        self.started = self.last_overall = time.monotonic()
        self.last_row, self.ended, self.rows = {}, {}, 0
        self.left_at_start = None  # set at the first step, when the trials are known

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any) -> None:
        if FAILED in result:  # the trial's final report: its row comes with on_trial_complete
            return
        if time.monotonic() - self.last_row.get(trial.trial_id, float("-inf")) >= self.every_s:
            trained = result.get(EPOCH, 0) >= trial_config(trial).epochs
            self.print_row(trial, result, "evaluating" if trained else "running")

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self.end(trials, trial, self.outcome(trial))

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self.end(trials, trial, "failed")
        if trial.error_file:
            print(f"  {trial_name(trial)} failed: see {trial.error_file} and the run's vqbench.error tag", flush=True)

    def on_trial_recover(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self.print_row(trial, trial.last_result, "retrying")

    def on_step_end(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        if self.left_at_start is None:
            self.left_at_start = self.remaining_fraction(trials, max(self.total, len(trials)))
        if time.monotonic() - self.last_overall >= self.every_s:
            self.print_overall(trials)

    def outcome(self, trial: Trial) -> str:
        return outcome(trial.last_result or {}, trial_config(trial).epochs)

    def end(self, trials: list[Trial], trial: Trial, status: str) -> None:
        self.ended[trial.trial_id] = status
        self.print_row(trial, trial.last_result, status)
        self.print_overall(trials)

    def print_row(self, trial: Trial, result: dict | None, status: str) -> None:
        if self.rows % HEADER_EVERY_ROWS == 0:
            print(self.format(("trial",) + tuple(header for header, _ in COLUMNS)), flush=True)
        self.rows += 1
        self.last_row[trial.trial_id] = time.monotonic()
        config = trial_config(trial)
        self.name_width = max(self.name_width, len(config.name))  # a search samples names longer than its bounds'
        print(self.format(self.row(config, result or {}, status)), flush=True)

    def row(self, config: TrialConfig, result: dict, status: str) -> tuple[str, ...]:
        vq = config.model == "vqvae"
        recon, perplexity = result.get("train/recon_loss"), result.get("train/perplexity")
        return (
            config.name,
            config.model,
            config.dataset,
            str(config.codebook_size) if vq else "-",
            str(config.code_dim),
            f"{config.beta if vq else config.kl_weight:g}",
            str(config.seed),
            f"{result.get(EPOCH, 0)}/{config.epochs}",
            f"{recon:.4f}" if recon is not None else "-",
            f"{perplexity:.1f}" if perplexity is not None else "-",
            status,
            result.get(MLFLOW_RUN_ID, "-"),
        )

    def format(self, cells: tuple[str, ...]) -> str:
        widths = (("trial", self.name_width),) + COLUMNS
        return " ".join(
            cell.ljust(width) if header in LEFT_ALIGNED else cell.rjust(width) for cell, (header, width) in zip(cells, widths)
        ).rstrip()

    def status(self, trial: Trial) -> str:
        """done, stopped (early, by the scheduler), diverged, failed, running (evaluating too) or waiting."""
        if trial.trial_id in self.ended:
            return self.ended[trial.trial_id]
        if trial.status == Trial.TERMINATED:  # ended before a resume
            return self.outcome(trial)
        if trial.status == Trial.ERROR:
            return "failed"
        return "running" if trial.status == Trial.RUNNING else "waiting"

    def remaining_fraction(self, trials: list[Trial], total: int) -> float:
        """Epochs left over all trials, counting a trial's evaluation as one more epoch."""
        left = float(total)
        for trial in trials:
            status = self.status(trial)
            if status == "running":
                left -= (trial.last_result or {}).get(EPOCH, 0) / (trial_config(trial).epochs + 1)
            elif status != "waiting":
                left -= 1
        return left / max(total, 1)

    def print_overall(self, trials: list[Trial]) -> None:
        self.last_overall = time.monotonic()
        elapsed = self.last_overall - self.started
        total = max(self.total, len(trials))
        n = Counter(self.status(trial) for trial in trials)
        left = self.remaining_fraction(trials, total)
        done = f"{n['done'] + n['stopped']} of {plural(total, 'trial')} done" + (f" ({n['stopped']} stopped early)" if n["stopped"] else "")
        line = f"[{self.study}] {done}, {n['failed'] + n['diverged']} failed, {n['running']} running; elapsed {duration(elapsed)}"
        made = (1.0 if self.left_at_start is None else self.left_at_start) - left  # a resumed study counts from its resume
        if left > 0:
            line += f", about {duration(elapsed * left / made)} left" if made > 0 else ", time left not known yet"
        print(line, flush=True)
