"""The report of a sweep: report.md and PNG figures, written locally and logged to the sweep's parent run.

    python -m analysis.report --experiment paper --tracking-uri sqlite:////abs/path/mlflow.db
    python -m analysis.report --runs results/paper-repro/runs.csv --out results/paper-repro

Reads the trials of the latest sweep run of the experiment (or --parent-run-id; every
sweep with --all-sweeps), or the runs CSVs written by `python -m analysis.export`, writes
<out>/report.md and <out>/figures/*.png, and (from a store) logs them under `report/` of
the sweep run, so the MLflow UI shows them beside the sweep. From CSVs nothing is logged,
and the per-run figures (reconstructions, t-SNE) are those already in <out>/figures, since
a CSV carries no artifacts. Bad input (unknown experiment, unreachable store, unreadable
CSV, no finished runs) prints one message and exits 2 before anything is written.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from mlflow.entities import Run

from analysis import claims, knobs, leakage, pareto, tables
from analysis.runs import RunsError, Source, download_artifact, open_experiment, read_runs_csv, scope_runs
from analysis.stats import CONFIDENCE
from analysis.verdicts import DEFAULT_ACCURACY_MARGIN, DEFAULT_SSIM_MARGIN, Margins
from benchmark.outputs import folder_problem
from benchmark.probe import PARAM_PREFIX as PROBE_PARAMS
from benchmark.tracking import DEFAULT_EXPERIMENT

ARTIFACT_DIR = "report"
RUN_FIGURES = ("reconstructions.png", "tsne.png")
MAX_LISTED_FAILURES = 20


@dataclass
class Inputs:
    """Everything read before a single file is written."""

    source: Source | None  # None: read from runs CSVs
    sweep: Run | None  # the sweep run the report is logged to
    runs: pd.DataFrame  # the trials in scope, every status
    outside: int  # trial runs of the experiment left out of scope (other sweeps)
    origin: str  # where the runs were read from, for the header
    margins: Margins = Margins()


def gather(experiment: str, tracking_uri: str | None, parent_run_id: str | None, all_sweeps: bool) -> Inputs:
    """Read and check a store's runs; raises RunsError (naming the fix) for anything unusable."""
    source = open_experiment(experiment, tracking_uri)
    scope = scope_runs(source, parent_run_id, all_sweeps)
    _check_finished(scope.runs, f"experiment {source.experiment_name!r}")
    return Inputs(source, scope.sweep, scope.runs, scope.outside, f"MLflow store `{source.tracking_uri}`")


def gather_csv(paths: list[Path]) -> Inputs:
    """Read and check runs CSVs; raises RunsError for anything unusable."""
    runs = read_runs_csv(paths)
    _check_finished(runs, ", ".join(str(p) for p in paths))
    return Inputs(None, None, runs, 0, "runs CSV " + ", ".join(f"`{p.name}`" for p in paths))


def _check_finished(runs: pd.DataFrame, where: str) -> None:
    if tables.finished(runs).empty:
        counts = ", ".join(f"{n} {s}" for s, n in runs["status"].value_counts().items())
        raise RunsError(f"no FINISHED trial runs in {where} ({counts}): wait for the sweep to finish, or look at their vqbench.error tags and rerun it")


def write_report(inputs: Inputs, out: Path) -> list[Path]:
    """Write report.md and its figures under `out`; returns every file written."""
    out.mkdir(parents=True, exist_ok=True)
    figures = out / "figures"
    written: list[Path] = []
    sections = [_header(inputs), _runs_section(inputs.runs)]
    sections += _table1_section(inputs.runs)
    sections += _claims_section(inputs.runs, inputs.margins)
    sections += _label_section(inputs.runs)
    sensitivity, made = knobs.section(inputs.runs, figures, out, inputs.margins)
    sections += sensitivity
    written += made
    fronts, made = pareto.section(inputs.runs, figures, out)
    sections += fronts
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
    runs = inputs.runs
    experiments = ", ".join(f"`{e}`" for e in sorted(runs["experiment"].dropna().unique())) or "?"
    lines = [f"# vqbench report: experiment {experiments}", "", f"- Read from: {inputs.origin}"]
    sweeps = runs.groupby(runs["parent_run_id"].fillna("none"), sort=False).agg(sweep=("sweep", "first"), trials=("run_id", "size"))
    listed = [f"`{name or 'unnamed'}` (`{run_id}`, {row_trials} trial run(s))" for run_id, name, row_trials in zip(sweeps.index, sweeps["sweep"], sweeps["trials"])]
    lines.append(f"- Sweeps covered ({len(listed)}): " + "; ".join(listed))
    if inputs.outside:
        lines.append(f"- Left out: {inputs.outside} trial run(s) of other sweeps in this experiment (pass --parent-run-id to report on another sweep, --all-sweeps for all)")
    commits = sorted(runs["git_commit"].dropna().unique())
    lines.append(f"- Code version of the trials (git commit): {', '.join(f'`{c[:10]}`' for c in commits) or 'unknown'}")
    return "\n".join(lines + _settings_lines(tables.finished(runs)))


def _settings_lines(finished: pd.DataFrame) -> list[str]:
    """The precisions and probe settings the numbers come from; a warning where runs were probed differently."""
    lines = [f"- Precision: {', '.join(f'{p} ({n} run(s))' for p, n in finished['precision'].value_counts().sort_index().items()) or 'none'}"]
    columns = sorted(c for c in finished.columns if c.startswith(PROBE_PARAMS))
    settings = finished[columns].astype(object).map(lambda v: "?" if pd.isna(v) else f"{v:g}" if isinstance(v, float) else str(v))
    described = settings.apply(lambda row: ", ".join(f"{c[len(PROBE_PARAMS):]}={v}" for c, v in row.items()), axis=1)
    counts = described.value_counts()
    listed = "; ".join(f"{text or 'not recorded'} ({n} run(s))" for text, n in counts.items())
    lines.append(f"- Probe settings: {listed or 'none'}")
    if len(counts) > 1:
        lines.append(f"- **Warning:** these runs were probed in {len(counts)} different ways; probe accuracies from different "
                     "settings are not comparable, and the paired comparisons below mix them. Report on one setting at a time.")
    return lines


def _runs_section(runs: pd.DataFrame) -> str:
    counts = tables.status_counts(runs)
    done = int(counts.loc[counts["status"] == tables.FINISHED, "runs"].iloc[0])
    text = ["## Runs", "", tables.markdown(counts.astype(str)), "",
            f"Only the {done} FINISHED run(s) enter the numbers below; runs stopped early by the scheduler (no final evaluation), "
            "failed, killed and still-running runs are counted here and left out."]
    repeats = tables.finished(runs)["config_id"].dropna().duplicated().sum()
    if repeats:
        text.append(f"\n{repeats} finished run(s) repeat a config (same config_id, so the same seed) of another run; "
                    "they are averaged within their seed first, so n counts seeds, not runs.")
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
    intro = (f"Mean ± half-width of the {CONFIDENCE:.0%} Student t interval over seeds; n = seeds per row (runs repeating a config within a seed are averaged first). "
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


def _claims_section(runs: pd.DataFrame, margins: Margins) -> list[str]:
    tested = claims.claims(runs, margins)
    differences = claims.model_differences(runs)
    intro = ("Each claim is tested as VQ-VAE minus VAE over matched seeds (same dataset, seed, label setting and shared training "
             "settings; claim 4: the VQ-VAE on MNIST minus CIFAR-100). Where several K/D/beta were run, the VQ-VAE side uses the "
             "paper's K=512, D=64, beta=0.25 if present, else the average over them per seed; the VAE side D=64 and the default "
             "KL weight. " + margins.rule())
    section = ["## The paper's claims, tested", "", intro, ""]
    section += [f"- {s}" for s in claims.claim_sentences(runs, tested)]
    section += ["", claims.claims_markdown(tested), "", "### VQ-VAE minus VAE, per dataset", "",
                "Paired t interval and unadjusted p: these describe, they are not claims."]
    if differences.empty:
        section.append("No dataset has finished runs of both models, so no difference can be computed.")
    else:
        section.append(claims.differences_markdown(differences))
        stand_ins = sorted(differences.loc[differences["stand_in"], "dataset"].unique())
        if stand_ins:
            names = ", ".join(tables.DATASET_NAMES.get(d, d) for d in stand_ins)
            section += ["", f"{names}: a stand-in the paper did not use; its differences are reported for what they show, "
                            "but they do not test the CIFAR-100 claims."]
    return section


def _label_section(runs: pd.DataFrame) -> list[str]:
    section = ["## Label embedding: how much of the accuracy is the leaked label", "",
               "The paper added a label embedding to the latent before quantization, and then probed that latent for the label. "
               "`add` runs do the same; `none` runs do not. The difference, add minus none over matched seeds (paired t "
               f"{CONFIDENCE:.0%} interval), is the accuracy that the leaked label buys."]
    effect = leakage.label_embedding_effect(runs)
    if effect.empty:
        used = sorted(tables.finished(runs)["label_embedding"].dropna().unique())
        section += ["", f"Not measured: the finished runs use label_embedding={', '.join(used) or '?'} only. The `paper` space runs both."]
        return section
    section += [""] + [f"- {s}" for s in leakage.leakage_sentences(effect)]
    section += ["", leakage.label_effect_markdown(effect)]
    return section


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
            if inputs.source is not None and download_artifact(inputs.source, row["run_id"], name, target):
                written.append(target)
            if target.is_file():
                section += ["", f"![{name} of {row['run_id']}]({target.relative_to(out).as_posix()})"]
            else:  # worded for both sources, so a report and its rebuild from the CSV agree
                section += ["", f"_{name} is missing: not among the run's MLflow artifacts, or, from a runs CSV (which carries no artifacts), "
                                f"not at {target.relative_to(out).as_posix()}._"]
    if picked.empty:
        section += ["", "No finished runs."]
    return section, written


# --- command line --------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help=f"MLflow experiment name (or id) the sweep logged to (default: {DEFAULT_EXPERIMENT}, the sweep's)")
    parser.add_argument("--tracking-uri", default=None, help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db as the sweep)")
    parser.add_argument("--out", type=Path, default=Path("report"), help="folder for report.md and figures/ (default: report/)")
    parser.add_argument("--parent-run-id", default=None, help="the sweep run to report on and log to (default: the latest)")
    parser.add_argument("--all-sweeps", action="store_true", help="include the trials of every sweep in the experiment")
    parser.add_argument("--runs", type=Path, nargs="+", default=None, metavar="CSV",
                        help="build the report from runs CSVs (`python -m analysis.export`) instead of an MLflow store")
    parser.add_argument("--accuracy-margin", type=float, default=100 * DEFAULT_ACCURACY_MARGIN,
                        help=f"equivalence margin for accuracies, in points (default: {100 * DEFAULT_ACCURACY_MARGIN:g})")
    parser.add_argument("--ssim-margin", type=float, default=DEFAULT_SSIM_MARGIN, help=f"equivalence margin for SSIM (default: {DEFAULT_SSIM_MARGIN:g})")
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per downloaded figure is noise
    for name, widest in (("accuracy_margin", 100.0), ("ssim_margin", 2.0)):  # the width of each metric's whole range
        value = getattr(args, name)
        if not (math.isfinite(value) and 0 < value < widest):
            print(f"error: --{name.replace('_', '-')} {value!r} is not allowed: pass a number above 0 and below {widest:g}, "
                  "the metric's whole range (a margin that wide calls everything equivalent)", file=sys.stderr)
            return 2
    if args.runs and (args.parent_run_id or args.all_sweeps or args.tracking_uri):
        print("error: --runs reads CSVs only: leave out --tracking-uri, --parent-run-id and --all-sweeps", file=sys.stderr)
        return 2
    out = args.out.resolve()
    try:
        if problem := folder_problem(out):
            raise RunsError(f"--out {args.out}: {problem}; pass a folder that can be written")
        inputs = gather_csv(args.runs) if args.runs else gather(args.experiment, args.tracking_uri, args.parent_run_id, args.all_sweeps)
        out.mkdir(parents=True, exist_ok=True)
    except RunsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"error: --out {args.out}: cannot create it ({err.strerror}); pass a folder that can be written", file=sys.stderr)
        return 2
    inputs.margins = Margins(args.accuracy_margin / 100, args.ssim_margin)
    files = write_report(inputs, out)
    print(f"wrote {out / 'report.md'} and {len(files) - 1} figure(s)")
    if inputs.source is None:
        return 0
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
