"""The report of a sweep: report.md and PNG figures, written locally and logged to the sweep's parent run.

    python -m analysis.report --experiment paper --tracking-uri sqlite:////abs/path/mlflow.db

Reads the trials of the latest sweep run of the experiment (or --parent-run-id; every
sweep with --all-sweeps), writes <out>/report.md and <out>/figures/*.png, and logs them
under `report/` of the sweep run, so the MLflow UI shows them beside the sweep. Bad input
(unknown experiment, unreachable store, no finished runs) prints one message and exits 2
before anything is written.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from mlflow.entities import Run

from analysis import plots, tables
from analysis.runs import RunsError, Source, download_artifact, open_experiment, pick_sweep, runs_frame
from analysis.stats import CONFIDENCE, RESAMPLES

ARTIFACT_DIR = "report"
RUN_FIGURES = ("reconstructions.png", "tsne.png")
MAX_LISTED_FAILURES = 20


@dataclass
class Inputs:
    """Everything read from MLflow before a single file is written."""

    source: Source
    sweep: Run | None
    runs: pd.DataFrame  # the trials in scope, every status
    outside: int  # trial runs of the experiment left out of scope (other sweeps)


def gather(experiment: str, tracking_uri: str | None, parent_run_id: str | None, all_sweeps: bool) -> Inputs:
    """Read and check the input; raises RunsError (naming the fix) for anything unusable."""
    source = open_experiment(experiment, tracking_uri)
    sweep = pick_sweep(source, parent_run_id)
    every = runs_frame(source)
    runs = every if all_sweeps or sweep is None else every[every["parent_run_id"] == sweep.info.run_id]
    where = f"experiment {source.experiment_name!r}" + (f", sweep run {sweep.info.run_id}" if sweep and not all_sweeps else "")
    if runs.empty:
        raise RunsError(f"no trial runs (tag vqbench.role=trial) in {where}: run a sweep into it first, or pick another --experiment / --parent-run-id")
    if tables.finished(runs).empty:
        counts = ", ".join(f"{n} {s}" for s, n in runs["status"].value_counts().items())
        raise RunsError(f"no FINISHED trial runs in {where} ({counts}): wait for the sweep to finish, or look at their vqbench.error tags and rerun it")
    return Inputs(source, sweep, runs.reset_index(drop=True), len(every) - len(runs))


def write_report(inputs: Inputs, out: Path) -> list[Path]:
    """Write report.md and its figures under `out`; returns every file written."""
    out.mkdir(parents=True, exist_ok=True)
    figures = out / "figures"
    written: list[Path] = []
    sections = [_header(inputs), _runs_section(inputs.runs)]
    sections += _table1_section(inputs.runs)
    sections += _claims_section(inputs.runs)
    sections += _label_section(inputs.runs)
    sensitivity, made = _sensitivity_section(inputs.runs, figures, out)
    sections += sensitivity
    written += made
    examples, downloaded = _examples_section(inputs, figures, out)
    sections += examples
    written += downloaded
    report = out / "report.md"
    report.write_text("\n\n".join(block for block in sections if block) + "\n")
    return [report, *written]


def log_report(inputs: Inputs, files: list[Path], out: Path) -> None:
    """Log exactly the files written (never the rest of --out) under report/ of the sweep run."""
    for path in files:
        folder = path.parent.relative_to(out)
        artifact_path = ARTIFACT_DIR if str(folder) == "." else f"{ARTIFACT_DIR}/{folder.as_posix()}"
        inputs.source.client.log_artifact(inputs.sweep.info.run_id, str(path), artifact_path)


# --- sections ------------------------------------------------------------------------------

def _header(inputs: Inputs) -> str:
    lines = [f"# vqbench report: experiment `{inputs.source.experiment_name}`", ""]
    lines.append(f"- Tracking URI: `{inputs.source.tracking_uri}`")
    if inputs.sweep is not None:
        info, params = inputs.sweep.info, inputs.sweep.data.params
        space = inputs.sweep.data.tags.get("vqbench.space") or params.get("space", "?")
        started = pd.to_datetime(info.start_time, unit="ms", utc=True).strftime("%Y-%m-%d %H:%M UTC") if info.start_time else "?"
        lines.append(f"- Sweep run: `{info.run_id}` ({info.run_name or 'unnamed'}; space `{space}`, started {started})")
    else:
        lines.append("- Sweep run: none found (no run tagged vqbench.role=sweep): this report covers every trial and is not logged to MLflow")
    if inputs.outside:
        lines.append(f"- Left out: {inputs.outside} trial run(s) of other sweeps in this experiment (pass --parent-run-id to report on another sweep, --all-sweeps for all)")
    lines.append(f"- Generated {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by `python -m analysis.report`")
    return "\n".join(lines)


def _runs_section(runs: pd.DataFrame) -> str:
    counts = tables.status_counts(runs)
    done = int(counts.loc[counts["status"] == tables.FINISHED, "runs"].iloc[0])
    text = ["## Runs", "", tables.markdown(counts.astype(str)), "",
            f"Only the {done} FINISHED run(s) enter the numbers below; runs stopped early by the scheduler (no final evaluation), "
            "failed, killed and still-running runs are counted here and left out."]
    repeats = tables.finished(runs)["config_id"].dropna().duplicated().sum()
    if repeats:
        text.append(f"\n{repeats} finished run(s) repeat a config (same config_id, so the same seed) of another run; "
                    "each counts as a sample, which narrows the intervals more than new seeds would.")
    bad = runs.drop(tables.finished(runs).index)
    if len(bad):
        listed = bad.head(MAX_LISTED_FAILURES)
        frame = pd.DataFrame({
            "run": [f"`{r}`" for r in listed["run_name"].fillna(listed["run_id"])],
            "status": tables.outcome(listed),
            "model": listed["model"].fillna("?"), "dataset": listed["dataset"].fillna("?"), "seed": listed["seed"].astype(str),
            "error": [str(e).splitlines()[0][:160] if isinstance(e, str) and e else "" for e in listed["error"]],
        })
        text += ["", tables.markdown(frame)]
        if len(bad) > len(listed):
            text.append(f"\n... and {len(bad) - len(listed)} more.")
    return "\n".join(text)


def _seed_note(table: pd.DataFrame) -> str:
    models = table[table["model"] != "pixels"]
    if (models["n"] <= 1).all():
        return ("**Single seed:** every row rests on one run, so the tables give means without intervals "
                "and no difference between models can be resolved by this data. Run more seeds (e.g. `--seeds 3`).")
    notes = []
    if (models["n"] <= 1).any():
        notes.append("Rows with n = 1 rest on a single seed: they show the mean without an interval.")
    if (models["n"] == 2).any():
        notes.append("Rows with n = 2 have very wide intervals (the t quantile with 1 degree of freedom is 12.7): run 3 or more seeds.")
    return " ".join(notes)


def _table1_section(runs: pd.DataFrame) -> list[str]:
    table = tables.table1(runs)
    intro = (f"Mean ± half-width of the {CONFIDENCE:.0%} Student t interval over seeds; n = runs (seeds) per row. "
             "Accuracies in % (probe on the latents: MLP = the paper's feed-forward probe, linear, kNN). "
             "The paper's numbers (one run each, K=512, D=64, beta=0.25, label embedding `add`, 10 epochs) stand beside every "
             "row of their model and dataset; *vs paper setting* says which rows match that setting. VAE rows have no K or beta "
             "(they mean nothing to a VAE). The *raw pixels* rows are the same probes on the flattened pixels, averaged per seed "
             "over all runs on the dataset: the reference any latent should beat.")
    section = ["## Table 1, rebuilt", "", intro]
    note = _seed_note(table)
    if note:
        section += ["", note]
    section += ["", tables.table1_markdown(table)]
    return section


def _claims_section(runs: pd.DataFrame) -> list[str]:
    tested = tables.claims(runs)
    differences = tables.model_differences(runs)
    intro = (f"Each difference is VQ-VAE minus VAE over matched seeds (same dataset, seed, label setting and shared training "
             f"settings), with a percentile bootstrap {CONFIDENCE:.0%} interval ({RESAMPLES:,} resamples, seeded). Where several K/D/beta "
             "were run, the VQ-VAE side uses the paper's K=512, D=64, beta=0.25 if present, else the average over them per seed. "
             "A claim is *supported* if the interval lies on the paper's side of 0, *contradicted* if on the other side, and "
             "*not resolved by this data* if it contains 0, rests on one seed, or its dataset is absent. With 2-3 seeds a bootstrap "
             "interval is rough: read it as a check on seed-to-seed variation, not a precise bound.")
    section = ["## The paper's claims, tested", "", intro, ""]
    section += [f"- {s}" for s in tables.claim_sentences(runs, tested)]
    section += ["", tables.claims_markdown(tested), "", "### VQ-VAE minus VAE, per dataset", ""]
    if differences.empty:
        section.append("No dataset has finished runs of both models, so no difference can be computed.")
    else:
        section.append(tables.differences_markdown(differences))
        stand_ins = sorted(differences.loc[differences["stand_in"], "dataset"].unique())
        if stand_ins:
            names = ", ".join(tables.DATASET_NAMES.get(d, d) for d in stand_ins)
            section += ["", f"{names}: a stand-in the paper did not use; its differences are reported for what they show, "
                            "but they do not test the CIFAR-100 claims."]
    return section


def _label_section(runs: pd.DataFrame) -> list[str]:
    section = ["## Label embedding: how much of the accuracy is the leaked label", "",
               "The paper added a label embedding to the latent before quantization, and then probed that latent for the label. "
               "`add` runs do the same; `none` runs do not. The difference, add minus none over matched seeds (percentile bootstrap "
               f"{CONFIDENCE:.0%} interval), is the accuracy that the leaked label buys."]
    effect = tables.label_embedding_effect(runs)
    if effect.empty:
        used = sorted(tables.finished(runs)["label_embedding"].dropna().unique())
        section += ["", f"Not measured: the finished runs use label_embedding={', '.join(used) or '?'} only. The `paper` space runs both."]
        return section
    section += [""] + [f"- {s}" for s in tables.leakage_sentences(effect)]
    section += ["", tables.label_effect_markdown(effect)]
    return section


def _sensitivity_section(runs: pd.DataFrame, figures: Path, out: Path) -> tuple[list[str], list[Path]]:
    section = ["## Sensitivity to K, D and beta", "",
               "Lines: mean over seeds; bands: 95% t interval over seeds (none where a point has one seed). Where other knobs vary "
               "too (a grid), each seed's runs at a point are averaged over them first. K and beta apply to the VQ-VAE only, and "
               "so does codebook usage. A search with many distinct values (e.g. Optuna) is shown as one point per run."]
    made = []
    for knob, title in plots.KNOBS.items():
        path = plots.sensitivity_figure(runs, knob, figures / f"sensitivity_{knob}.png")
        if path is None:
            values = plots.knob_values(runs, knob)
            shown = ", ".join(f"{v:g}" for v in values) or "none"
            section += ["", f"- {title}: skipped, the finished runs do not vary it (value: {shown})."]
        else:
            made.append(path)
            section += ["", f"### Against {title}", "", f"![sensitivity to {title}]({path.relative_to(out).as_posix()})"]
    path = plots.ssim_vs_probe_figure(runs, figures / "ssim_vs_probe.png")
    section += ["", "### SSIM against probe accuracy", ""]
    if path is None:
        section.append("Skipped: no finished run has both an MLP-probe accuracy and an SSIM.")
    else:
        made.append(path)
        section.append(f"![SSIM against probe accuracy]({path.relative_to(out).as_posix()})")
    return section, made


def _examples_section(inputs: Inputs, figures: Path, out: Path) -> tuple[list[str], list[Path]]:
    section = ["## Figures 1-3: reconstructions and t-SNE of representative runs", "",
               "For each model, dataset and label setting, the finished run with the median MLP-probe accuracy. Reconstructions: "
               "originals on top, reconstructions below (the paper's Fig. 1-2). t-SNE of the test latents, coloured by class "
               "(CIFAR-100: the 20 superclasses; the paper's Fig. 3)."]
    written = []
    picked = tables.representative_runs(inputs.runs)
    for row in picked.to_dict("records"):
        accuracy = row.get(tables.MLP.column)
        shown = "—" if accuracy is None or pd.isna(accuracy) else f"{100 * accuracy:.2f}%"
        section += ["", f"### {tables.MODEL_NAMES.get(row['model'], row['model'])} on {tables.DATASET_NAMES.get(row['dataset'], row['dataset'])}, "
                        f"label_embedding={row['label_embedding']}",
                    "", f"Run `{row['run_name'] or row['run_id']}` (`{row['run_id']}`), seed {row['seed']}, MLP probe {shown}."]
        for name in RUN_FIGURES:
            target = figures / f"{row['model']}_{row['dataset']}_{row['label_embedding']}_{name}"
            if download_artifact(inputs.source, row["run_id"], name, target):
                written.append(target)
                section += ["", f"![{name} of {row['run_id']}]({target.relative_to(out).as_posix()})"]
            else:
                section += ["", f"_{name} is missing from this run's artifacts._"]
    if picked.empty:
        section += ["", "No finished runs."]
    return section, written


# --- command line --------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", required=True, help="MLflow experiment name (or id) the sweep logged to")
    parser.add_argument("--tracking-uri", default=None, help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db as the sweep)")
    parser.add_argument("--out", type=Path, default=Path("report"), help="folder for report.md and figures/ (default: report/)")
    parser.add_argument("--parent-run-id", default=None, help="the sweep run to report on and log to (default: the latest)")
    parser.add_argument("--all-sweeps", action="store_true", help="include the trials of every sweep in the experiment")
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per downloaded figure is noise
    try:
        inputs = gather(args.experiment, args.tracking_uri, args.parent_run_id, args.all_sweeps)
    except RunsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = args.out.resolve()
    files = write_report(inputs, out)
    print(f"wrote {out / 'report.md'} and {len(files) - 1} figure(s)")
    if inputs.sweep is None:
        print("no sweep run (tag vqbench.role=sweep) in this experiment: the report was not logged to MLflow", file=sys.stderr)
        return 0
    try:
        log_report(inputs, files, out)
    except Exception as err:  # the artifact store may be elsewhere than the tracking store
        print(f"error: the report is written but could not be logged to run {inputs.sweep.info.run_id} ({err}): check the artifact store", file=sys.stderr)
        return 1
    run_id = inputs.sweep.info.run_id
    print(f"logged under {ARTIFACT_DIR}/ of sweep run {run_id}: in `mlflow ui`, "
          f"#/experiments/{inputs.source.experiment_id}/runs/{run_id} -> Artifacts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
