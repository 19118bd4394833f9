"""What a sweep ended with, read back from MLflow: the table, the trials that went wrong, the next step.

Every child run of the sweep counts, whatever its status, so a sweep whose trials all failed
still says why. A trial ends one of five ways:
- finished: FINISHED, with its final evaluation;
- stopped early: FINISHED with the `vqbench.stopped_at_epoch` tag (the scheduler stopped it);
- diverged: FAILED with a `TrialDiverged` error, a result about its config, not a fault;
- failed: FAILED otherwise, or KILLED when the sweep was not interrupted (its worker died);
- interrupted: KILLED because the sweep was interrupted; `--resume` continues it.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

import pandas as pd
from mlflow.entities import Metric, Run
from mlflow.tracking import MlflowClient

from benchmark.config import codebook_size
from benchmark.tracking.runs import ERROR_TAG, STOPPED_TAG
from benchmark.tracking.store import TrackingTarget

# A setting is a trial's name less its seed (`TrialConfig.name`): every knob, quantizer arm and label embedding apart.
SETTING = "setting"
ORDER = ["dataset", "model", "K", SETTING]  # how rows are listed: K as a number, the VAE (no K) first
METRICS = {
    "probe_acc": "probe/latent/mlp_acc",
    "pixels_acc": "probe/pixels/mlp_acc",
    "mse": "recon/mse",
    "ssim": "recon/ssim",
    "code_usage": "codebook/usage",
}
EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130


@dataclass
class Outcome:
    """How each trial of one sweep ended; `problems` holds one line per trial that did not finish."""

    runs: pd.DataFrame  # one row per child run: ORDER, label_emb, ending, run name and id, error, METRICS
    interrupted: bool
    problems: list[str] = field(default_factory=list)
    missing: int = 0  # planned trials with no run at all: they failed before opening one, and count as failed

    def count(self, ending: str) -> int:
        found = int((self.runs["ending"] == ending).sum()) if not self.runs.empty else 0
        return found + (self.missing if ending == "failed" else 0)

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_FAILED if self.count("failed") else EXIT_OK


def read_outcome(target: TrackingTarget, interrupted: bool, planned: int = 0) -> Outcome:
    """The sweep's child runs; fewer than the `planned` trials (not interrupted) means some failed before their run opened."""
    client = MlflowClient(target.uri)
    runs = client.search_runs([target.experiment_id], f"tags.mlflow.parentRunId = '{target.parent_run_id}'", max_results=10_000)
    frame = pd.DataFrame([_row(run, interrupted) for run in runs])
    problems = []
    if not frame.empty:
        frame = frame.sort_values(ORDER + ["run_name"], key=_numeric_k, ignore_index=True)
        for row in frame[frame.ending.isin(["failed", "diverged"])].itertuples():
            problems.append(f"{row.ending} {row.run_name}: {row.error or 'no error recorded'} (run {row.run_id})")
    missing = 0 if interrupted else max(0, planned - len(frame))
    if missing:
        problems.append(f"failed: {missing} trial(s) ended before opening an MLflow run; their errors are in Ray Tune's trial folders")
    return Outcome(frame, interrupted, problems, missing)


def _row(run: Run, interrupted: bool) -> dict[str, object]:
    p, m, tags, status = run.data.params, run.data.metrics, run.data.tags, run.info.status
    model = p.get("model") or tags.get("vqbench.model")
    error = tags.get(ERROR_TAG, "")
    if status == "FINISHED":
        ending = "stopped early" if STOPPED_TAG in tags else "finished"
    elif status == "FAILED":
        ending = "diverged" if error.startswith("TrialDiverged") else "failed"
    else:  # KILLED, or RUNNING if the store could not be updated
        ending = "interrupted" if interrupted else "failed"
    return {
        "dataset": p.get("dataset") or tags.get("vqbench.dataset"),
        "model": model,
        "K": codebook_size(int(p["num_codes"]), p.get("quantizer", "plain")) if model == "vqvae" and "num_codes" in p else None,
        SETTING: re.sub(r"-s\d+$", "", run.info.run_name or ""),
        "label_emb": p.get("label_embedding") or tags.get("vqbench.label_embedding"),
        "ending": ending,
        "run_name": run.info.run_name,
        "run_id": run.info.run_id,
        "error": error,
        **{name: m.get(key) for name, key in METRICS.items()},
    }


def _numeric_k(column: pd.Series) -> pd.Series:
    """K sorts as a number, VAE rows (no K) first."""
    return column.fillna(-1) if column.name == "K" else column


def table(outcome: Outcome) -> pd.DataFrame:
    """Per setting (never pooled across K, D, beta, KL weight, arm or label embedding): mean ± sd over the finished
    trials and their n, then the other endings counted apart."""
    runs = outcome.runs
    if runs.empty:
        return runs
    rows = []
    for setting, group in runs.groupby(SETTING, sort=False):
        done = group[group.ending == "finished"]
        row = {SETTING: setting}
        for name in METRICS:
            row[name] = _mean_sd(done[name].dropna())
        row["n"] = len(done)
        for ending in ("stopped early", "diverged", "failed", "interrupted"):
            row[ending.replace(" ", "_")] = int((group.ending == ending).sum())
        rows.append(row)
    found = pd.DataFrame(rows)
    return found.loc[:, (found != 0).any(axis=0) | ~found.columns.isin(["stopped_early", "diverged", "failed", "interrupted"])]


SPREAD_CAPTION = (
    "each cell: mean ± sd over the n finished trials (sd: their sample standard deviation, a spread, not a "
    "confidence interval; accuracies and SSIM as fractions); analysis.report gives the intervals"
)


def _mean_sd(values: pd.Series) -> str:
    if values.empty:
        return "-"
    if len(values) == 1:
        return f"{values.iloc[0]:.4f}"
    return f"{values.mean():.4f} ± {values.std(ddof=1):.4f}"


def render(outcome: Outcome, name: str, wall_s: float, target: TrackingTarget, experiment: str, resume_command: str) -> str:
    """The lines printed at the end of a sweep; the last one says what to do next."""
    counts = ", ".join(
        f"{outcome.count(e)} {e}" for e in ("finished", "stopped early", "diverged", "failed", "interrupted") if outcome.count(e)
    )
    lines = [
        f"sweep {name} {'interrupted' if outcome.interrupted else 'ended'} after {wall_s:.0f} s: {counts or 'no trial runs were logged'}"
    ]
    found = table(outcome)
    if not found.empty:
        lines += ["", SPREAD_CAPTION, found.to_string(index=False)]
    if outcome.problems:
        lines += ["", "trials that did not finish (the error is also the run's vqbench.error tag):", *[f"  {p}" for p in outcome.problems]]
    lines += ["", f"MLflow UI: {ui_command(target)}"]
    report = f"python -m analysis.report --experiment {shlex.quote(experiment)} --tracking-uri {shlex.quote(target.uri)}"
    if outcome.interrupted:
        lines.append(f"interrupted with {outcome.count('finished')} trial(s) finished; finish the sweep with: {resume_command}")
    elif outcome.count("failed"):
        lines.append(f"{outcome.count('failed')} trial(s) failed (listed above), so the sweep exits 1; the report of the others: {report}")
    else:
        lines.append(f"next: {report}")
    return "\n".join(lines)


def ui_command(target: TrackingTarget) -> str:
    page = f"#/experiments/{target.experiment_id}/runs (expand the parent run to see its trials)"
    if target.uri.startswith("sqlite"):
        return f"mlflow ui --backend-store-uri {target.uri} --host 127.0.0.1 --port 5000, then browse http://127.0.0.1:5000/{page}"
    return f"browse {target.uri.rstrip('/')}/{page}"


def log_outcome(client: MlflowClient, parent_run_id: str, outcome: Outcome, wall_s: float) -> None:
    """The sweep's outcome as metrics of its parent run, so the MLflow UI can sort and compare sweeps."""
    values = {f"trials_{e.replace(' ', '_')}": outcome.count(e) for e in ("finished", "stopped early", "diverged", "failed", "interrupted")}
    values["wall_time_s"] = wall_s
    stamp = pd.Timestamp.now().value // 1_000_000
    client.log_batch(parent_run_id, metrics=[Metric(k, float(v), stamp, 0) for k, v in values.items()])
