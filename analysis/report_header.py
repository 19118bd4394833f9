"""The report's header: where the runs came from, their code, data, plan (with its deviations), precisions and probes."""

from __future__ import annotations

import pandas as pd

from analysis import claims, knobs, rates, selection, tables
from analysis.plan import MATCHED_RATE, PRIMARY, SECONDARY, SENSITIVITY, Plan, deviations
from analysis.report_inputs import Inputs
from benchmark.result_keys import PROBE_PARAM_PREFIX as PROBE_PARAMS


def header(inputs: Inputs, plan: Plan) -> str:
    """What a reader needs before any number: the runs' origin, sweeps, code, data, plan and probe settings."""
    runs = inputs.runs
    experiments = ", ".join(f"`{e}`" for e in sorted(runs["experiment"].dropna().unique())) or "?"
    lines = [f"# vqbench report: experiment {experiments}", "", f"- Read from: {inputs.origin}"]
    sweeps = runs.groupby(runs["parent_run_id"].fillna("none"), sort=False).agg(sweep=("sweep", "first"), trials=("run_id", "size"))
    listed = [
        f"`{name or 'unnamed'}` (`{run_id}`, {row_trials} trial run(s))"
        for run_id, name, row_trials in zip(sweeps.index, sweeps["sweep"], sweeps["trials"])
    ]
    lines.append(f"- Sweeps covered ({len(listed)}): " + "; ".join(listed))
    if inputs.outside:
        lines.append(
            f"- Left out: {inputs.outside} trial run(s) of other sweeps in this experiment (pass --parent-run-id to report on another sweep, --all-sweeps for all)"
        )
    commits = sorted(runs["git_commit"].dropna().unique())
    lines.append(f"- Code version of the trials (git commit): {', '.join(f'`{c[:10]}`' for c in commits) or 'unknown'}")
    lines += dataset_lines(selection.finished(runs))
    lines += plan_lines(inputs, plan)
    return "\n".join(lines + settings_lines(selection.finished(runs)))


def dataset_lines(finished: pd.DataFrame) -> list[str]:
    """Each dataset with its content hash and note, where the trials recorded them."""
    parts = []
    for dataset, group in sorted(finished.groupby("dataset"), key=lambda kv: tables.dataset_rank(kv[0])):
        hashes = sorted(group["dataset.hash"].dropna().astype(str).unique()) if "dataset.hash" in group else []
        notes = sorted(group["dataset.note"].dropna().astype(str).unique()) if "dataset.note" in group else []
        text = f"`{dataset}` ({tables.DATASET_NAMES.get(dataset, dataset)})"
        text += f", hash {', '.join(f'`{h[:12]}`' for h in hashes)}" if hashes else ", hash not recorded"
        if "dataset.classes" in group and group["dataset.classes"].notna().any():
            text += f", {int(pd.to_numeric(group['dataset.classes'], errors='coerce').max())} classes"
        text += f": {'; '.join(notes)}" if notes else ""
        parts.append(text)
    lines = [f"- Datasets: {'; '.join(parts) or 'none'}"]
    channels = pd.to_numeric(finished["dataset.channels"], errors="coerce") if "dataset.channels" in finished else pd.Series(dtype=float)
    if (channels == 3).any() or finished["dataset"].isin(["cifar10", "cifar100"]).any():
        lines.append(
            "- SSIM on colour images: scikit-image's `structural_similarity` with `channel_axis` (7x7 window, data range 1), "
            "the mean of the three channels' SSIM per image, then the mean over images"
        )
    return lines


def plan_lines(inputs: Inputs, plan: Plan) -> list[str]:
    sizes = {PRIMARY: len(plan.endpoints), SENSITIVITY: knobs.declared_size(plan), SECONDARY: claims.secondary_size(plan)}
    if MATCHED_RATE in plan.families:  # optional in a plan: listed where it is declared
        sizes[MATCHED_RATE] = rates.declared_size(plan)
    lines = [
        f"- Analysis plan: `{plan.name}` (`{plan.path.name}`, SHA-256 `{plan.short_hash}`): {plan.description}",
        "- Families (Holm within each, difference and TOST p together): "
        + "; ".join(f"**{name}** ({size} declared tests)" for name, size in sizes.items()),
        f"- Minimum n for a verdict: {plan.min_n} seeds; alpha {plan.alpha:g}; equivalence margins (declared bounds, not "
        "statistics): " + "; ".join(f"{kind} ±{m.value:g}" for kind, m in plan.margins.items()),
    ]
    for text in deviations(plan, inputs.runs):
        lines.append(f"- **Deviation from the plan:** {text}")
    if inputs.pooled:
        lines.append(
            f"- **Pooled with --allow-pooling ({len(inputs.pooled)} cell(s)), against the plan's pooling rule:** "
            + "; ".join(inputs.pooled[:5])
            + (" ..." if len(inputs.pooled) > 5 else "")
        )
    return lines


def settings_lines(finished: pd.DataFrame) -> list[str]:
    """The precisions and probe settings the numbers come from; a warning where runs were probed differently."""
    lines = [
        f"- Precision: {', '.join(f'{p} ({n} run(s))' for p, n in finished['precision'].value_counts().sort_index().items()) or 'none'}"
    ]
    columns = sorted(c for c in finished.columns if c.startswith(PROBE_PARAMS))
    settings = finished[columns].astype(object).map(lambda v: "?" if pd.isna(v) else f"{v:g}" if isinstance(v, float) else str(v))
    described = settings.apply(lambda row: ", ".join(f"{c[len(PROBE_PARAMS) :]}={v}" for c, v in row.items()), axis=1)
    counts = described.value_counts()
    listed = "; ".join(f"{text or 'not recorded'} ({n} run(s))" for text, n in counts.items())
    lines.append(f"- Probe settings: {listed or 'none'}")
    if len(counts) > 1:
        lines.append(
            f"- **Warning:** these runs were probed in {len(counts)} different ways; probe accuracies from different "
            "settings are not comparable, and the paired comparisons below mix them. Report on one setting at a time."
        )
    return lines
