"""Claims 1 and 2 at matched information rate: a VQ-VAE against the VAE that lets through as many bits.

The paper compares a continuous and a discrete bottleneck at different, unmeasured rates. Here every quantizer arm
at the paper's K, D and beta is compared with the rate-matched VAE (`target_rate`) whose achieved rate is nearest the
arm's effective rate (|log2 of their ratio|, both on the *train* split: `rate/train_bits`,
`rate/train_effective_bits`, so the test split chooses nothing), VQ-VAE minus VAE on the plan's metric, paired by
seed, with the plan's verdict rule, in the plan's `matched_rate` family (Holm across every declared dataset x arm).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import ScalarFormatter

from analysis import plots
from analysis.claims_text import verdict_text
from analysis.formatting import format_difference, format_p, markdown
from analysis.measures import MLP, SSIM
from analysis.plan import MATCHED_RATE, Plan
from analysis.selection import finished
from analysis.tables import DATASET_NAMES, SHARED_KNOBS, dataset_rank, paired
from analysis.verdicts import PairedTest, decide, holm_family, with_tost
from benchmark.config import PAPER_VQ

VAE_RATE, VQ_RATE = "rate/train_bits", "rate/train_effective_bits"  # what the matching reads
TEST_RATE = {"vae": "rate/bits", "vqvae": "rate/effective_bits"}  # what the figure draws
COLUMNS = [
    "dataset",
    "quantizer",
    "vq_rate",
    "vae_target",
    "vae_rate",
    "vae",
    "vqvae",
    "n",
    "difference",
    "low",
    "high",
    "p",
    "p_sign_flip",
    "methods_disagree",
    "p_tost",
    "p_holm",
    "p_tost_holm",
    "declared",
    "verdict",
    "reason",
]


def _arms(group: pd.DataFrame) -> pd.DataFrame:
    """VQ-VAE runs at the paper's K, D and beta, every quantizer (a frame from before the key: the plain one)."""
    vq = group[group["model"] == "vqvae"]
    for key, value in PAPER_VQ.items():
        vq = vq[np.isclose(vq[key].astype(float), value)]
    quantizer = vq["quantizer"].fillna("plain") if "quantizer" in vq else pd.Series("plain", index=vq.index)
    return vq.assign(quantizer=quantizer)


def _matched_vaes(group: pd.DataFrame) -> pd.DataFrame:
    vae = group[group["model"] == "vae"]
    return vae[vae["target_rate"].fillna(0) > 0] if "target_rate" in vae else vae.iloc[0:0]


def nearest_target(rate: float, achieved: dict[float, float]) -> float:
    """The target whose achieved rate is nearest `rate` by |log2 ratio| (a tie: the lower target)."""
    return min(sorted(achieved), key=lambda target: abs(math.log2(achieved[target] / rate)))


def _raw_rows(runs: pd.DataFrame, plan: Plan) -> list[dict]:
    metric, rows = plan.matched_rate_metric or plan.primary_metric(), []
    done = finished(runs)
    done = done[done["label_embedding"] == plan.label_embedding]
    for dataset, group in done.groupby("dataset", sort=False):
        arms, vaes = _arms(group), _matched_vaes(group)
        if arms.empty or vaes.empty or VAE_RATE not in vaes or VQ_RATE not in arms:
            continue
        achieved = {float(t): float(g[VAE_RATE].mean()) for t, g in vaes.groupby("target_rate") if g[VAE_RATE].notna().any()}
        for arm, arm_runs in arms.groupby("quantizer", sort=True):
            rate = float(arm_runs[VQ_RATE].mean())
            if not achieved or not rate > 0:
                continue
            target = nearest_target(rate, achieved)
            test, pairs = paired(vaes[np.isclose(vaes["target_rate"], target)], arm_runs, metric, SHARED_KNOBS)
            rows.append(
                {
                    "dataset": dataset,
                    "quantizer": arm,
                    "vq_rate": rate,
                    "vae_target": target,
                    "vae_rate": achieved[target],
                    "vae": pairs["a"].mean() if len(pairs) else np.nan,
                    "vqvae": pairs["b"].mean() if len(pairs) else np.nan,
                    "_test": with_tost(test, plan.margin(metric)),
                }
            )
    return rows


def declared_size(plan: Plan) -> int:
    return len(plan.matched_rate_expect) * len(plan.matched_rate_arms)


def matched_rate(runs: pd.DataFrame, plan: Plan) -> pd.DataFrame:
    """One row per dataset and quantizer arm: the arm's effective rate, the matched VAE's target and achieved rate,
    the means over paired seeds, the test (seed-only t, sign-flip p, TOST) with Holm across the declared family, and
    the verdict (rows the plan does not declare: exploratory)."""
    rows = _raw_rows(runs, plan)
    keys = [(r["dataset"], r["quantizer"]) for r in rows]
    declared = [k[0] in plan.matched_rate_expect and k[1] in plan.matched_rate_arms for k in keys]
    tests: list[PairedTest] = [r["_test"] for r, d in zip(rows, declared) if d]
    adjusted = iter(holm_family(tests, declared_size(plan)))
    metric = plan.matched_rate_metric or plan.primary_metric()
    out = []
    for row, is_declared in zip(rows, declared):
        test = next(adjusted) if is_declared else row["_test"]
        if is_declared:
            verdict, reason = decide(test, plan.matched_rate_expect[row["dataset"]], plan.margin(metric), plan.alpha, plan.min_n)
        else:
            verdict, reason = "exploratory", "not a declared row of the plan: no verdict"
        out.append(
            {
                **{k: v for k, v in row.items() if k != "_test"},
                "n": test.n,
                "difference": test.mean,
                "low": test.low,
                "high": test.high,
                "p": test.p,
                "p_sign_flip": test.p_sign_flip,
                "methods_disagree": test.methods_disagree,
                "p_tost": test.p_tost,
                "p_holm": test.p_holm if is_declared else np.nan,
                "p_tost_holm": test.p_tost_holm if is_declared else np.nan,
                "declared": is_declared,
                "verdict": verdict,
                "reason": reason,
            }
        )
    frame = pd.DataFrame(out, columns=COLUMNS)
    return frame.sort_values(["dataset"], key=lambda c: c.map(dataset_rank), kind="stable", ignore_index=True) if len(frame) else frame


def matched_markdown(table: pd.DataFrame) -> str:
    rows = []
    for _, r in table.iterrows():
        verdict = r["verdict"] if r["verdict"] == "exploratory" else verdict_text(r["verdict"], r["reason"])
        rows.append(
            {
                "dataset": DATASET_NAMES.get(r["dataset"], r["dataset"]),
                "quantizer": r["quantizer"],
                "VQ effective rate (bits, train)": f"{r['vq_rate']:.1f}",
                "VAE target → achieved (bits, train)": f"{r['vae_target']:g} → {r['vae_rate']:.1f}",
                "VAE (%)": f"{100 * r['vae']:.2f}" if pd.notna(r["vae"]) else "—",
                "VQ-VAE (%)": f"{100 * r['vqvae']:.2f}" if pd.notna(r["vqvae"]) else "—",
                "n": str(r["n"]),
                "VQ-VAE − VAE [95% seed-only t] (pts)": format_difference(r["difference"], r["low"], r["high"], MLP),
                "Holm p": format_p(r["p_holm"]),
                "sign-flip p": format_p(r["p_sign_flip"]) + (" †" if r["methods_disagree"] else ""),
                "TOST Holm p": format_p(r["p_tost_holm"]),
                "verdict": verdict,
            }
        )
    return markdown(pd.DataFrame(rows))


def rate_plot(runs: pd.DataFrame) -> Figure | None:
    """Probe accuracy and SSIM against the test split's rate, one column per dataset: the rate-matched VAEs joined
    along their target, the KL-weight VAEs joined along their weight, each quantizer arm a point at its effective rate;
    seed-level 95% intervals. None where no dataset holds both an arm and a VAE with a rate."""
    done = finished(runs)
    done = done[done["label_embedding"] == "none"]
    datasets = sorted(
        (d for d, g in done.groupby("dataset") if not _arms(g).empty and (g["model"] == "vae").any() and "rate/bits" in g),
        key=dataset_rank,
    )
    if not datasets:
        return None
    fig = Figure(figsize=(max(4.2 * len(datasets), 6.0), 7.0), layout="constrained")
    axes = fig.subplots(2, len(datasets), squeeze=False)
    for column, dataset in enumerate(datasets):
        group = done[done["dataset"] == dataset]
        for row, measure in enumerate((MLP, SSIM)):
            ax = axes[row][column]
            vae = group[group["model"] == "vae"]
            lines = {"rate-matched VAE": _matched_vaes(group), "VAE (KL weight)": vae[vae["kl_weight"].notna()]}
            for (label, family), along in zip(lines.items(), ("target_rate", "kl_weight")):
                points = _points(family, along, TEST_RATE["vae"], measure.column)
                if len(points):
                    ax.errorbar(
                        points["rate"], points["mean"], yerr=points[["below", "above"]].T.to_numpy(), marker="o", label=label, capsize=2
                    )
            for arm, arm_runs in _arms(group).groupby("quantizer", sort=True):
                points = _points(arm_runs.assign(arm=0), "arm", TEST_RATE["vqvae"], measure.column)
                ax.errorbar(
                    points["rate"],
                    points["mean"],
                    yerr=points[["below", "above"]].T.to_numpy(),
                    marker="s",
                    ls="none",
                    label=f"VQ-VAE {arm}",
                    capsize=2,
                )
            ax.set_xscale("log", base=2)
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.set_xlabel("rate on the test split (bits per image; VQ: effective)")
            ax.set_ylabel(measure.title)
            ax.set_title(DATASET_NAMES.get(dataset, dataset) if row == 0 else "")
            ax.grid(alpha=0.3)
    plots.legend_below(fig, axes.ravel())
    plots.suptitle(fig, "Probe accuracy and SSIM against the information rate")
    return fig


def _points(runs: pd.DataFrame, along: str, rate: str, column: str) -> pd.DataFrame:
    rows = []
    for _, at in runs.groupby(along, sort=True):
        if rate not in at or at[rate].isna().all():
            continue
        est = plots.per_seed_interval(at, column)
        scale = 100 if column.endswith("_acc") else 1
        rows.append(
            {
                "rate": float(at[rate].mean()),
                "mean": scale * est.mean,
                "below": scale * (est.mean - est.low) if np.isfinite(est.low) else 0.0,
                "above": scale * (est.high - est.mean) if np.isfinite(est.high) else 0.0,
            }
        )
    return pd.DataFrame(rows, columns=["rate", "mean", "below", "above"]).sort_values("rate", ignore_index=True)  # a line along the x axis


def section(runs: pd.DataFrame, figures: Path, out: Path, plan: Plan) -> tuple[list[str], list[Path]]:
    """The report's "At matched rate" section and the figure it drew; nothing where the runs hold neither a quantizer
    arm beyond the paper's nor a rate-matched VAE (the paper's studies)."""
    done = finished(runs)
    arms_beyond = "quantizer" in done and (done["quantizer"].fillna("plain") != "plain").any()
    if not arms_beyond and _matched_vaes(done).empty:
        return [], []
    family = (
        f"Family **{MATCHED_RATE}** ({declared_size(plan)} declared tests, 2 hypotheses each; Holm across all of them): "
        f"{plan.families[MATCHED_RATE]}"
        if MATCHED_RATE in plan.families
        else f"The plan `{plan.name}` declares no `{MATCHED_RATE}` family: every row below is exploratory."
    )
    section = [
        "## At matched rate",
        "",
        "Each row: a VQ-VAE arm at the paper's K, D and beta minus the rate-matched VAE whose achieved rate (train split) is "
        "nearest the arm's effective rate (train split), paired by seed. " + family,
    ]
    table = matched_rate(runs, plan)
    if table.empty:
        section += ["", f"Skipped: no dataset holds both a VQ-VAE at the paper's K, D and beta and a rate-matched VAE with `{VAE_RATE}`."]
    else:
        section += ["", matched_markdown(table)]
    made = []
    fig = rate_plot(runs)
    if fig is not None:
        path = plots.save(fig, figures / "rate.png")
        made.append(path)
        section += ["", f"![probe accuracy and SSIM against rate]({path.relative_to(out).as_posix()})"]
    return section, made
