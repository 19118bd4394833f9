"""The report of a sweep: report.md and PNG figures, written locally and logged to the sweep's parent run.

    python -m analysis.report --experiment paper --tracking-uri sqlite:////abs/path/mlflow.db
    python -m analysis.report --runs results/paper-repro/runs.csv --out results/paper-repro --plan analysis/plans/paper.toml

Reads the trials of the latest sweep run of the experiment (or --parent-run-id; every
sweep with --all-sweeps), or the runs CSVs written by `python -m analysis.export`, writes
<out>/report.md and <out>/figures/*.png, and (from a store) logs them under `report/` of
the sweep run, so the MLflow UI shows them beside the sweep. From CSVs nothing is logged,
and the per-run figures (reconstructions, t-SNE) are those already in <out>/figures, since
a CSV carries no artifacts. The verdicts follow the analysis plan (--plan, default
analysis/plans/paper.toml): its endpoints, families, margins, minimum n and pooling rule; the
header names the plan and its hash and flags every deviation (runs registered under another plan
or none, a plan edited since, margins overridden here, cells pooled with --allow-pooling). Bad
input (a bad plan, unknown experiment, unreachable store, unreadable CSV, no finished runs, runs
the plan refuses to pool) prints one message and exits 2 before anything is written.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pandas as pd

from analysis import claims, claims_text, formatting, knobs_text, leakage, measures, pareto, plots, rates, selection, tables
from analysis.plan import DEFAULT_PLAN, PRIMARY, SECONDARY, Plan, PlanError
from analysis.plan_file import load_plan
from analysis.report_header import header
from analysis.report_inputs import Inputs, check_pooling, gather, gather_csv
from analysis.report_options import option_problem, parse_args
from analysis.runs import RunsError, download_artifact
from analysis.stats import CONFIDENCE
from benchmark.config import PAPER_TRAINING, paper_vq_text
from benchmark.error_text import first_line
from benchmark.outputs import folder_problem

ARTIFACT_DIR = "report"
RUN_FIGURES = ("reconstructions.png", "tsne.png")
MAX_LISTED_FAILURES = 20


def write_report(inputs: Inputs, out: Path) -> list[Path]:
    """Write report.md and its figures under `out`; returns every file written."""
    out.mkdir(parents=True, exist_ok=True)
    figures = out / "figures"
    written: list[Path] = []
    plan = inputs.plan or load_plan(DEFAULT_PLAN)
    sections = [header(inputs, plan), _runs_section(inputs.runs), _intervals_section()]
    sections += _table1_section(inputs.runs)
    sections += _claims_section(inputs, plan)
    sections += _label_section(inputs.runs)
    sensitivity, made = knobs_text.section(inputs.runs, figures, out, plan)
    sections += sensitivity
    written += made
    at_rate, made = rates.section(inputs.runs, figures, out, plan)
    sections += at_rate
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


def _runs_section(runs: pd.DataFrame) -> str:
    counts = selection.status_counts(runs)
    done = int(counts.loc[counts["status"] == selection.FINISHED, "runs"].iloc[0])
    text = [
        "## Runs",
        "",
        formatting.markdown(counts.astype(str)),
        "",
        f"Only the {done} FINISHED run(s) enter the numbers below; runs stopped early by the scheduler (no final evaluation), "
        "failed, killed and still-running runs are counted here and left out.",
    ]
    repeats = selection.finished(runs)["config_id"].dropna().duplicated().sum()
    if repeats:
        text.append(
            f"\n{repeats} finished run(s) repeat a config (same config_id, so the same seed) of another run; "
            "they are averaged within their seed first, so n counts seeds, not runs."
        )
    bad = runs.drop(selection.finished(runs).index)
    if len(bad):
        listed = bad.head(MAX_LISTED_FAILURES)
        frame = pd.DataFrame(
            {
                "run": [f"`{r}`" for r in listed["run_name"].fillna(listed["run_id"])],
                "status": selection.outcome(listed),
                "model": listed["model"].fillna("?"),
                "dataset": listed["dataset"].fillna("?"),
                "seed": listed["seed"].astype(str),
                "error": [first_line(e, 160) if isinstance(e, str) else "" for e in listed["error"]],
            }
        )
        text += ["", formatting.markdown(frame)]
        if len(bad) > len(listed):
            text.append(f"\n... and {len(bad) - len(listed)} more.")
    return "\n".join(text)


def _intervals_section() -> str:
    """The project's one rule for what an interval in this report is, said once."""
    return "\n".join(["## Intervals", "", plots.INTERVAL_RULE])


def _seed_note(table: pd.DataFrame) -> str:
    models = table[table["model"] != "pixels"]
    if (models["n"] <= 1).all():
        return (
            "**Single seed:** every row rests on one run, so the tables give means without intervals "
            "and no difference between models can be resolved by this data. Run more seeds (e.g. `--seeds 3`)."
        )
    notes = []
    if (models["n"] <= 1).any():
        notes.append("Rows with n = 1 rest on a single seed: they show the mean without an interval.")
    if (models["n"] == 2).any():
        notes.append("Rows with n = 2 have very wide intervals (the t quantile with 1 degree of freedom is 12.7): run 3 or more seeds.")
    return " ".join(notes)


def _table1_section(runs: pd.DataFrame) -> list[str]:
    table = tables.table1(runs)
    intro = (
        f"Each cell: mean ± half-width of the symmetric {CONFIDENCE:.0%} Student t interval over the row's n seeds (the n "
        "column; a cell with fewer seeds says its own n), on the metric's own scale, so it can pass 100% or SSIM 1 at small n "
        "(see Intervals); runs repeating a config within a seed are averaged first. "
        "Accuracies in % (probe on the latents: MLP = the paper's feed-forward probe, linear, kNN). "
        f"The paper's numbers (one run each, {paper_vq_text()}, label embedding `add`, {PAPER_TRAINING['epochs']} epochs) stand beside every "
        "row of their model and dataset; *vs paper setting* says which rows match that setting. VAE rows have no K or beta "
        "(they mean nothing to a VAE). The *raw pixels* rows are the same probes on the flattened pixels, averaged per seed "
        "over all runs on the dataset: the reference any latent should beat."
    )
    section = ["## Table 1, rebuilt", "", intro]
    note = _seed_note(table)
    if note:
        section += ["", note]
    section += ["", tables.table1_markdown(table)]
    return section


def _claims_section(inputs: Inputs, plan: Plan) -> list[str]:
    runs = inputs.runs
    tested = claims.claims(runs, plan, inputs.predictions)
    differences = claims.model_differences(runs)
    primary = tested[tested["family"] == PRIMARY]
    seed_only = int(((primary["interval"] == "seed-only t") & (primary["n"] > 0)).sum())
    intro = (
        f"Each endpoint is declared in the plan `{plan.name}`: VQ-VAE minus VAE over matched seeds (same dataset, seed, "
        "precision and shared training settings), or, for claim 4, the VQ-VAE's clustering ARI minus the plan's threshold "
        f"('well' {plan.thresholds.get('well', float('nan')):g}, 'moderately' {plan.thresholds.get('moderately', float('nan')):g}). "
        f"Runs with label_embedding={plan.label_embedding} only. Test: the paired t over seeds (p, Holm p), the exact sign-flip p "
        f"beside it ('†' where the two disagree at {plan.alpha:g}; its floor is 2/2^n), and TOST for |difference| < margin "
        f"(p < {plan.alpha:g} exactly when the 90% interval lies inside the margin). Both p-values of every endpoint are "
        f"Holm-adjusted together in family **{PRIMARY}** ({len(plan.endpoints)} declared endpoints, so "
        f"{2 * len(plan.endpoints)} hypotheses, whatever runs were passed: an endpoint without runs counts). *supported* / "
        f"*contradicted*: Holm p < {plan.alpha:g} with the interval on the claimed / the other side of 0; *within the margin*: "
        "Holm-adjusted TOST p below it; both are said where both hold; *not resolved* otherwise; *no verdict* below "
        f"n = {plan.min_n}. The primary interval holds seeds and test images (two-level bootstrap over per-image predictions) "
        f"where every run saved them; {seed_only} measured endpoint(s) here rest on runs without per-image predictions (or on a "
        "metric without a per-image record: SSIM, ARI) and so carry the seed-only t interval, which ignores that every seed "
        "shares one test set: each such row says so."
    )
    section = ["## The paper's claims, tested under the plan", "", intro, ""]
    section += [f"- {s}" for s in claims_text.claim_sentences(tested)]
    section += [
        "",
        claims_text.claims_markdown(tested, PRIMARY),
        "",
        "### Secondary: other representations and probes",
        "",
        f"Family **{SECONDARY}** ({claims.secondary_size(plan)} declared tests): {plan.families[SECONDARY]} Holm within this "
        "family only; these describe, they are not the verdict.",
        "",
        claims_text.claims_markdown(tested, SECONDARY),
        "",
        "### VQ-VAE minus VAE, per dataset",
        "",
        "Paired t interval and unadjusted p: these describe, they are not claims.",
    ]
    if differences.empty:
        section.append("No dataset has finished runs of both models, so no difference can be computed.")
    else:
        section.append(claims_text.differences_markdown(differences))
        stand_ins = sorted(differences.loc[differences["stand_in"], "dataset"].unique())
        if stand_ins:
            names = ", ".join(tables.DATASET_NAMES.get(d, d) for d in stand_ins)
            section += [
                "",
                f"{names}: not the paper's datasets; their differences are reported for what they show, "
                "and only a dataset the plan declares enters a verdict.",
            ]
    return section


def _label_section(runs: pd.DataFrame) -> list[str]:
    section = [
        "## Label embedding: how much of the accuracy is the leaked label",
        "",
        "The paper added a label embedding to the latent before quantization, and then probed that latent for the label. "
        "`add` runs do the same; `none` runs do not. The difference, add minus none over matched seeds (paired t "
        f"{CONFIDENCE:.0%} interval), is the accuracy that the leaked label buys.",
    ]
    effect = leakage.label_embedding_effect(runs)
    if effect.empty:
        used = sorted(selection.finished(runs)["label_embedding"].dropna().unique())
        section += ["", f"Not measured: the finished runs use label_embedding={', '.join(used) or '?'} only. The `paper` space runs both."]
        return section
    section += [""] + [f"- {s}" for s in leakage.leakage_sentences(effect)]
    section += ["", leakage.label_effect_markdown(effect)]
    return section


def _examples_section(inputs: Inputs, figures: Path, out: Path) -> tuple[list[str], list[Path]]:
    section = [
        "## Figures 1-3: reconstructions and t-SNE of representative runs",
        "",
        "For each model, dataset and label setting, the finished run with the median MLP-probe accuracy. Reconstructions: "
        "originals on top, reconstructions below (the paper's Fig. 1-2). t-SNE of the test latents, coloured by class "
        "(CIFAR-100: the 20 superclasses; the paper's Fig. 3).",
    ]
    written = []
    absent = []
    picked = tables.representative_runs(inputs.runs)
    for row in picked.to_dict("records"):
        accuracy = row.get(measures.MLP.column)
        shown = "—" if accuracy is None or pd.isna(accuracy) else f"{100 * accuracy:.2f}%"
        section += [
            "",
            f"### {tables.MODEL_NAMES.get(row['model'], row['model'])} on {tables.DATASET_NAMES.get(row['dataset'], row['dataset'])}, "
            f"label_embedding={row['label_embedding']}",
            "",
            f"Run `{row['run_name'] or row['run_id']}` (`{row['run_id']}`), seed {row['seed']}, MLP probe {shown}.",
        ]
        for name in RUN_FIGURES:
            target = figures / f"{row['model']}_{row['dataset']}_{row['label_embedding']}_{name}"
            if inputs.source is not None and download_artifact(inputs.source, row["run_id"], name, target):
                written.append(target)
            if inputs.source is None and _carry(target, inputs.figure_folders):
                written.append(target)
            if target.is_file():
                section += ["", f"![{name} of {row['run_id']}]({target.relative_to(out).as_posix()})"]
            else:
                section += ["", f"_{name}: absent (see below)._"]
                absent.append(f"{name} of run `{row['run_id']}`")
    if absent:
        if inputs.source is not None:
            why = "not among the run's MLflow artifacts (the trial logged no such figure)"
        else:
            why = (
                "a runs CSV carries no artifacts, and neither this report's `figures/` nor the `figures/` folder beside the runs "
                "CSV (where a results folder carries its runs' figures) has the file"
            )
        section += ["", f"**Absent figures ({len(absent)}):** {'; '.join(absent)}: {why}."]
    if picked.empty:
        section += ["", "No finished runs."]
    return section, written


def _carry(target: Path, folders: tuple[Path, ...]) -> bool:
    """Copy a per-run figure missing from the report's figures/ from the figures/ folder beside a runs CSV; True if copied."""
    if target.is_file():
        return False
    for folder in folders:
        found = folder / target.name
        if found.is_file() and found.resolve() != target.resolve():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(found, target)
            return True
    return False


# --- command line --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv, __doc__.split("\n\n")[0])
    if problem := option_problem(args):
        print(f"error: {problem}", file=sys.stderr)
        return 2
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per downloaded figure is noise
    out = args.out.resolve()
    try:
        plan = load_plan(args.plan).with_margins(None if args.accuracy_margin is None else args.accuracy_margin / 100, args.ssim_margin)
    except PlanError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        if problem := folder_problem(out):
            raise RunsError(f"--out {args.out}: {problem}; pass a folder that can be written")
        inputs = (
            gather_csv(args.runs)
            if args.runs
            else gather(args.experiment, args.tracking_uri, args.parent_run_id, args.all_sweeps, args.protocol)
        )
        check_pooling(inputs, plan, args.allow_pooling)
        out.mkdir(parents=True, exist_ok=True)
    except RunsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"error: --out {args.out}: cannot create it ({err.strerror}); pass a folder that can be written", file=sys.stderr)
        return 2
    inputs.plan = plan
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
        print(
            f"error: the report is written but could not be logged to run {inputs.sweep.info.run_id} ({err}): check the artifact store",
            file=sys.stderr,
        )
        return 1
    run_id = inputs.sweep.info.run_id
    print(
        f"logged under {ARTIFACT_DIR}/ of sweep run {run_id}: in `mlflow ui`, "
        f"#/experiments/{inputs.source.experiment_id}/runs/{run_id} -> Artifacts"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
