"""Pareto fronts of a search: per dataset and model family, the trials no other trial beats on both probe accuracy and SSIM.

A search (the `pareto` and `optuna` spaces) ranks trials on the train split only; the fronts here
are drawn from every finished trial's test-split evaluation (MLP probe on the latents, SSIM), the
numbers the rest of the report uses, so they describe the trade-off rather than choose a model.
Trials ASHA stopped early have no final evaluation and are on no front; the section counts them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis import plots
from analysis.formatting import markdown
from analysis.measures import MLP, SSIM
from analysis.plots import COLOURS, legend_below, probe_vs_ssim_axes, save
from analysis.selection import finished, outcome
from analysis.tables import DATASET_NAMES, MODEL_NAMES, dataset_rank

FAMILY = ["dataset", "model", "label_embedding"]
OBJECTIVES = (MLP.column, SSIM.column)  # both maximised


def pareto_mask(points: np.ndarray) -> np.ndarray:
    """True for each row of `points` (n, objectives) that no other row dominates, every column maximised.

    A row dominates another when it is at least as good in every column and better in one, so
    equal rows do not dominate each other: ties are on the front together. A row with a NaN is
    on no front and dominates nothing.
    """
    points = np.asarray(points, dtype=float)
    valid = ~np.isnan(points).any(axis=1)
    p = points[valid]
    at_least = (p[:, None, :] >= p[None, :, :]).all(axis=2)  # [i, j]: i at least as good as j everywhere
    better = (p[:, None, :] > p[None, :, :]).any(axis=2)
    mask = np.zeros(len(points), dtype=bool)
    mask[valid] = ~(at_least & better).any(axis=0)
    return mask


def search_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Trial runs of searched studies (tagged with what they were ranked on), every status."""
    return runs[runs["objectives"].notna()]


def fronts(runs: pd.DataFrame) -> pd.DataFrame:
    """The finished search runs with both objectives, and `on_front` per dataset, model and label setting."""
    done = finished(search_runs(runs))
    done = done[done[MLP.column].notna() & done[SSIM.column].notna()] if set(OBJECTIVES) <= set(done) else done.iloc[0:0]
    parts = [group.assign(on_front=pareto_mask(group[list(OBJECTIVES)].to_numpy())) for _, group in done.groupby(FAMILY, sort=False)]
    return pd.concat(parts) if parts else done.assign(on_front=pd.Series(dtype=bool))


def counts_sentence(runs: pd.DataFrame, table: pd.DataFrame) -> str:
    """How many search runs the fronts rest on, and which were left out and why."""
    searched = search_runs(runs)
    left = outcome(searched).drop(table.index, errors="ignore").value_counts()
    objectives = ", ".join(sorted(searched["objectives"].dropna().unique()))
    text = (
        f"{len(searched)} trial run(s) of searches ranked on {objectives}; {len(table)} finished with both a test-split "
        f"MLP probe and an SSIM, and {int(table['on_front'].sum())} of them are on a front."
    )
    if len(left):
        text += " Left out: " + ", ".join(f"{n} {status}" for status, n in left.items()) + " (no final evaluation)."
    return text


def front_figure(table: pd.DataFrame, runs: pd.DataFrame, path: Path) -> Path | None:
    """A panel per dataset: each family's trials (dominated ones faded), its front joined by a line,
    and the raw-pixel MLP probe as a dashed line. None (nothing written) where there are no trials."""
    if table.empty:
        return None
    datasets = sorted(table["dataset"].unique(), key=dataset_rank)
    fig, axes = plots.dataset_panels(datasets, 5.0, 5.5, 4.4)
    for ax, dataset in zip(axes, datasets):
        here = table[table["dataset"] == dataset]
        for (model, label), family in here.groupby(["model", "label_embedding"], sort=True):
            name = plots.family_name(model, label)
            colour = COLOURS.get(model)
            dominated, front = family[~family["on_front"]], family[family["on_front"]].sort_values(SSIM.column)
            if len(dominated):
                ax.scatter(
                    dominated[SSIM.column],
                    100 * dominated[MLP.column],
                    color=colour,
                    alpha=0.25,
                    s=18,
                    edgecolors="none",
                    label=f"{name}, dominated",
                )
            ax.plot(
                front[SSIM.column], 100 * front[MLP.column], color=colour, marker="o", markersize=6, linewidth=1.4, label=f"{name}, front"
            )
        probe_vs_ssim_axes(
            ax,
            runs[runs["dataset"] == dataset],
            f"{DATASET_NAMES.get(dataset, dataset)}: MLP probe against SSIM",
            "SSIM (test reconstructions)",
            "raw pixels, MLP probe",
        )
    legend_below(fig, axes, max_columns=3)
    plots.suptitle(fig, "Pareto fronts of the search: label information against reconstruction\none point per finished trial (no interval)")
    return save(fig, path)


def front_markdown(table: pd.DataFrame) -> str:
    """The front's configs, per dataset and family, by SSIM."""
    front = table[table["on_front"]].sort_values(
        ["dataset", "model", SSIM.column], key=lambda c: c.map(dataset_rank) if c.name == "dataset" else c
    )
    rows = [
        {
            "dataset": DATASET_NAMES.get(r["dataset"], r["dataset"]),
            "model": MODEL_NAMES.get(r["model"], r["model"]),
            "K": _shown(r["num_codes"], "d"),
            "D": _shown(r["code_dim"], "d"),
            "beta": _shown(r["beta"], ".3g"),
            "KL weight": _shown(r["kl_weight"], ".3g"),
            "lr": _shown(r["lr"], ".2g"),
            "epochs": _shown(r["epochs"], "d"),
            "probe MLP (%)": f"{100 * r[MLP.column]:.2f}",
            "SSIM": f"{r[SSIM.column]:.3f}",
            "train probe linear (%)": _shown(100 * r.get("train_probe/linear_acc", np.nan), ".2f"),
            "train SSIM": _shown(r.get("train_probe/ssim", np.nan), ".3f"),
            "run": f"`{r['run_name'] or r['run_id']}`",
        }
        for r in front.to_dict("records")
    ]
    return markdown(pd.DataFrame(rows))


def _shown(value: object, spec: str) -> str:
    if value is None or pd.isna(value):
        return "-"
    return format(int(value) if spec == "d" else float(value), spec)


def section(runs: pd.DataFrame, figures: Path, out: Path) -> tuple[list[str], list[Path]]:
    """The report's Pareto-front section and the figure it drew."""
    section = ["## Pareto fronts of the search", ""]
    if search_runs(runs).empty:
        section.append(
            "Skipped: these runs are not a search (no trial run is tagged `vqbench.objectives`); "
            "`python -m benchmark.sweep --space pareto` runs one."
        )
        return section, []
    table = fronts(runs)
    section += [
        "Per dataset and model family, the finished trials that no other trial of the family beats on both the MLP probe "
        "on the test latents and the test SSIM; dominated trials are faded, the dashed line is the raw pixels' MLP probe. "
        "The search itself ranked trials on held-out train images only (its objectives below); these test-split numbers "
        "describe the trade-off it found. " + counts_sentence(runs, table)
    ]
    path = front_figure(table, runs, figures / "pareto_fronts.png")
    if path is None:
        section += ["", "No finished search trial has both objectives, so there is no front to draw."]
        return section, []
    section += ["", f"![Pareto fronts]({path.relative_to(out).as_posix()})", "", "### The fronts' configs", "", front_markdown(table)]
    return section, [path]
