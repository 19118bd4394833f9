"""How claim 1 along the knobs reads: its tables, the flips in words, and the report's section with the frontier figure.

`analysis.knobs` decides the verdicts; this module only shows them.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis import frontier, plots
from analysis.claims_text import verdict_text
from analysis.formatting import format_difference, format_p, markdown
from analysis.knobs import declared_size, sensitivity
from analysis.measures import MLP
from analysis.plan import SENSITIVITY, Plan
from analysis.stats import CONFIDENCE
from analysis.tables import DATASET_NAMES
from benchmark.config import DEFAULT_KL_WEIGHT, paper_vq_text


def _test_cells(r: dict) -> dict[str, str]:
    """The columns every claim-1 table ends with: seeds, difference, p-values, sign-flip p, verdict."""
    verdict = r["verdict"] if r["verdict"] == "exploratory" else verdict_text(r["verdict"], r["reason"])
    return {
        "n": str(r["n"]),
        "VQ-VAE − VAE [95% seed-only t] (pts)": format_difference(r["difference"], r["low"], r["high"], MLP),
        "p": format_p(r["p"]),
        "Holm p": format_p(r["p_holm"]),
        "sign-flip p": format_p(r["p_sign_flip"]) + (" †" if r["methods_disagree"] else ""),
        "TOST Holm p": format_p(r["p_tost_holm"]),
        "claim 1": verdict,
    }


def kl_markdown(table: pd.DataFrame) -> str:
    rows = [
        {
            "dataset": DATASET_NAMES.get(r["dataset"], r["dataset"]),
            "label emb.": r["label_embedding"],
            "VAE KL weight": f"{r['kl_weight']:g}",
            "VAE probe MLP (%)": f"{100 * r['vae']:.2f}",
            "VQ-VAE probe MLP (%)": f"{100 * r['vqvae']:.2f}",
            **_test_cells(r),
        }
        for r in table.to_dict("records")
    ]
    return markdown(pd.DataFrame(rows))


def flips(table: pd.DataFrame) -> list[str]:
    """Plain sentences: where claim 1's verdict changes along the KL weight."""
    sentences = []
    for (dataset, label), group in table.groupby(["dataset", "label_embedding"], sort=False):
        verdicts = [
            (w, v if v == "exploratory" else verdict_text(v, r)) for w, v, r in zip(group["kl_weight"], group["verdict"], group["reason"])
        ]
        name = f"{DATASET_NAMES.get(dataset, dataset)} (label_embedding={label})"
        if len({v for _, v in verdicts}) == 1:
            sentences.append(
                f"{name}: claim 1 is *{verdicts[0][1]}* at every KL weight tested ({', '.join(f'{w:g}' for w, _ in verdicts)})."
            )
            continue
        steps = "; ".join(f"KL weight {w:g}: {v}" for w, v in verdicts)
        sentences.append(f"{name}: the verdict depends on the VAE's KL weight, which the paper does not state ({steps}).")
    return sentences


VQ_NAMES = {"num_codes": "K", "code_dim": "D", "beta": "beta"}


def vq_setting(row: dict) -> str:
    """'K=32' for a point on an axis; the paper's setting for the centre."""
    if row["knob"] == "centre":
        return f"{paper_vq_text()} (paper)"
    return f"{VQ_NAMES[row['knob']]}={row['value']:g}"


def vq_markdown(table: pd.DataFrame) -> str:
    rows = [
        {
            "dataset": DATASET_NAMES.get(r["dataset"], r["dataset"]),
            "label emb.": r["label_embedding"],
            "VQ-VAE": vq_setting(r),
            "VQ-VAE probe MLP (%)": f"{100 * r['vqvae']:.2f}",
            f"VAE (KL {DEFAULT_KL_WEIGHT:g}) probe MLP (%)": f"{100 * r['vae']:.2f}",
            **_test_cells(r),
        }
        for r in table.to_dict("records")
    ]
    return markdown(pd.DataFrame(rows))


def vq_flips(table: pd.DataFrame) -> list[str]:
    """Plain sentences: claim 1's verdicts along the VQ-VAE's K, D and beta, the settings grouped by verdict."""
    sentences = []
    for (dataset, label), group in table.groupby(["dataset", "label_embedding"], sort=False):
        by_verdict: dict[str, list[str]] = {}
        for row in group.to_dict("records"):
            verdict = row["verdict"] if row["verdict"] == "exploratory" else verdict_text(row["verdict"], row["reason"])
            by_verdict.setdefault(verdict, []).append(vq_setting(row))
        parts = "; ".join(f"*{verdict}* at {', '.join(settings)}" for verdict, settings in by_verdict.items())
        sentences.append(f"{DATASET_NAMES.get(dataset, dataset)} (label_embedding={label}), {len(group)} VQ-VAE settings: {parts}.")
    return sentences


def section(runs: pd.DataFrame, figures: Path, out: Path, plan: Plan) -> tuple[list[str], list[Path]]:
    """The report's "Does the answer depend on the knobs?" section and the figures it drew."""
    kl, vq = sensitivity(runs, plan)
    section = [
        "## Does the answer depend on the knobs?",
        "",
        f"Family **{SENSITIVITY}** ({declared_size(plan)} declared tests, 2 hypotheses each: difference and TOST; "
        f"Holm across all of them, both tables together, the centre counted once): {plan.families[SENSITIVITY]} "
        f"Rows the plan does not declare are *exploratory*: shown, never given a verdict. Below n = {plan.min_n} seeds a row "
        "reads *no verdict*: the numbers are shown, and an unresolved row is not evidence of no effect.",
        "",
        "### Claim 1 at each VAE KL weight",
        "",
        "The VAE's KL weight is not stated in the paper and decides how far its latents are pulled toward the prior. "
        f"Each row: the VQ-VAE at the paper's {paper_vq_text()} minus the VAE at that KL weight, MLP probe, over "
        "matched seeds (seed-only t interval: the knob tables do not read per-image predictions).",
    ]
    if kl.empty:
        section += [
            "",
            "Skipped: the finished runs do not vary the VAE's KL weight, or have no VQ-VAE at the paper's K, D and beta "
            "beside them (the `sensitivity` space runs both).",
        ]
    else:
        section += [""] + [f"- {s}" for s in flips(kl)] + ["", kl_markdown(kl)]
    section += [
        "",
        "### Claim 1 along the VQ-VAE's K, D and beta",
        "",
        f"Each row: the VQ-VAE one knob away from the paper's {paper_vq_text()} minus the VAE at the default KL weight "
        f"({DEFAULT_KL_WEIGHT:g}), MLP probe, over matched seeds, in the same family.",
    ]
    if vq.empty:
        section += [
            "",
            "Skipped: the finished runs do not vary the VQ-VAE's K, D or beta around the paper's setting, or have no VAE "
            f"at KL weight {DEFAULT_KL_WEIGHT:g} beside them.",
        ]
    else:
        section += [""] + [f"- {s}" for s in vq_flips(vq)] + ["", vq_markdown(vq)]
    made = []
    path = frontier.frontier_figure(runs, figures / "frontier.png")
    section += ["", "### Label information for reconstruction quality", ""]
    if path is None:
        section.append(
            f"Skipped: neither the VAE's KL weight nor the VQ-VAE's K (at {frontier.AT_PAPER_D_BETA}) takes two values in the finished runs."
        )
    else:
        made.append(path)
        section += [
            "Which family buys more label information (MLP probe, y) for the same reconstruction quality (SSIM, x): "
            "a point per config, the VAE's joined along the KL weight, the VQ-VAE's along K; point: the mean over seeds, bars: "
            f"{CONFIDENCE:.0%} t interval over seeds on the metric's bounded scale (see Intervals), the seed count n in the legend.",
            "",
            f"![frontier]({path.relative_to(out).as_posix()})",
        ]
    section += [
        "",
        "### Each knob",
        "",
        f"Lines: mean over seeds; bands: {CONFIDENCE:.0%} t interval over seeds on the metric's bounded scale (see Intervals; "
        "none where a point has one seed), n seeds per point in each figure's title. Where other knobs vary "
        "too (a grid), each seed's runs at a point are averaged over them first. K and beta apply to the VQ-VAE only, and "
        "so do codebook usage and perplexity; the KL weight to the VAE only. Dashed: the VAE at the default KL weight and "
        "the raw-pixel probe, with their bands. A search with many distinct values (e.g. Optuna) is one point per run.",
    ]
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
