"""Does the answer depend on the knobs? Claim 1 at each VAE KL weight, and the accuracy-for-reconstruction frontier.

The paper compared one VAE with one VQ-VAE. Its VAE's KL weight is not stated, and it decides
how far the VAE's latents are pulled toward the prior, so claim 1 (VAE latents probe better) is
re-tested here against the VQ-VAE at the paper's K, D and beta, once per KL weight, with the
verdict rule of `analysis.verdicts` (Holm across the weights of one dataset and label setting).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis import frontier, plots
from analysis.claims_text import verdict_text
from analysis.formatting import format_difference, format_p, markdown
from analysis.measures import MLP
from analysis.plan import SENSITIVITY, Plan
from analysis.selection import finished, plain_quantizer
from analysis.stats import CONFIDENCE
from analysis.tables import DATASET_NAMES, SHARED_KNOBS, dataset_rank, paired
from analysis.verdicts import PairedTest, decide, holm_family, with_tost
from benchmark.config import DEFAULT_KL_WEIGHT, PAPER_VQ, paper_vq_text


def _vq_centre(runs: pd.DataFrame) -> pd.DataFrame:
    """VQ-VAE runs at the paper's K, D and beta."""
    vq = runs[runs["model"] == "vqvae"]
    pick = np.ones(len(vq), dtype=bool)
    for key, value in PAPER_VQ.items():
        pick &= np.isclose(vq[key].astype(float), value)
    return vq[pick]


COLUMNS = [
    "dataset",
    "label_embedding",
    "knob",
    "value",
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


def _raw(dataset: str, label: str, comparisons: list[tuple[str, float, pd.DataFrame, pd.DataFrame]], plan: Plan) -> list[dict]:
    """Claim 1 (VQ-VAE minus VAE, the plan's sensitivity metric, matched seeds) for each (knob, value, VAE runs, VQ-VAE runs)."""
    metric = plan.sensitivity_metric
    rows = []
    for knob, value, vae, vq in comparisons:
        test, pairs = paired(vae, vq, metric, SHARED_KNOBS)
        test = with_tost(test, plan.margin(metric))
        rows.append(
            {
                "dataset": dataset,
                "label_embedding": label,
                "knob": knob,
                "value": float(value),
                "vae": pairs["a"].mean() if len(pairs) else np.nan,
                "vqvae": pairs["b"].mean() if len(pairs) else np.nan,
                "_test": test,
            }
        )
    return rows


def _key(row: dict, plan: Plan) -> tuple | None:
    """The row's place in the declared sensitivity family (the centre is one test, in both tables), or None if undeclared."""
    if row["label_embedding"] != plan.label_embedding:
        return None
    dataset, knob, value = row["dataset"], row["knob"], row["value"]
    weights = plan.kl_weights.get(dataset, ())
    if knob == "kl_weight" or knob == "centre":
        value = DEFAULT_KL_WEIGHT if knob == "centre" else value
        if any(np.isclose(value, w) for w in weights):
            return ("kl_weight", dataset, round(value, 12))
        return ("centre", dataset) if knob == "centre" and dataset in plan.vq_axes else None
    declared = plan.vq_axes.get(dataset, {}).get(knob, ())
    return (knob, dataset, round(value, 12)) if any(np.isclose(value, v) for v in declared) else None


def declared_size(plan: Plan) -> int:
    keys = {("kl_weight", d, round(w, 12)) for d, ws in plan.kl_weights.items() for w in ws}
    for dataset, axes in plan.vq_axes.items():
        if ("kl_weight", dataset, round(DEFAULT_KL_WEIGHT, 12)) not in keys:
            keys.add(("centre", dataset))
        keys |= {(k, dataset, round(v, 12)) for k, vs in axes.items() for v in vs}
    return len(keys)


def _decided(kl_rows: list[dict], vq_rows: list[dict], plan: Plan) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One Holm family over every declared row of both tables (each test once); undeclared rows are exploratory."""
    unique: dict[tuple, PairedTest] = {}
    for row in kl_rows + vq_rows:
        key = _key(row, plan)
        if key is not None:
            unique.setdefault(key, row["_test"])
    adjusted = dict(zip(unique, holm_family(list(unique.values()), declared_size(plan))))
    frames = []
    for rows in (kl_rows, vq_rows):
        out = []
        for row in rows:
            key = _key(row, plan)
            test = adjusted.get(key, row["_test"]) if key is not None else row["_test"]
            if key is None:
                verdict, reason = "exploratory", "not a declared row of the plan: no verdict"
            else:
                verdict, reason = decide(test, plan.sensitivity_expect, plan.margin(plan.sensitivity_metric), plan.alpha, plan.min_n)
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
                    "p_holm": test.p_holm if key else np.nan,
                    "p_tost_holm": test.p_tost_holm if key else np.nan,
                    "declared": key is not None,
                    "verdict": verdict,
                    "reason": reason,
                }
            )
        frames.append(out)
    return _ordered(frames[0], ["dataset", "label_embedding", "value"]), _ordered(frames[1], ["dataset", "label_embedding"])


def _ordered(rows: list[dict], by: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return (
        frame.sort_values(by, key=lambda c: c.map(dataset_rank) if c.name == "dataset" else c, ignore_index=True, kind="stable")
        if len(frame)
        else frame
    )


def _kl_rows(runs: pd.DataFrame, plan: Plan) -> list[dict]:
    rows = []
    for (dataset, label), group in finished(runs).groupby(["dataset", "label_embedding"], sort=False):
        vae, vq = group[group["model"] == "vae"], _vq_centre(group)
        weights = sorted(vae["kl_weight"].dropna().unique())
        if len(weights) >= 2 and not vq.empty:
            rows += _raw(dataset, label, [("kl_weight", w, vae[np.isclose(vae["kl_weight"], w)], vq) for w in weights], plan)
    return rows


def _vq_rows(runs: pd.DataFrame, plan: Plan) -> list[dict]:
    rows = []
    for (dataset, label), group in finished(runs).groupby(["dataset", "label_embedding"], sort=False):
        vae = group[(group["model"] == "vae") & np.isclose(group["kl_weight"].astype(float), DEFAULT_KL_WEIGHT)]
        vq = group[group["model"] == "vqvae"]
        centre = _vq_centre(group)
        comparisons = [("centre", 0.0, vae, centre)] if not centre.empty else []
        for knob, paper_value in PAPER_VQ.items():
            others = np.ones(len(vq), dtype=bool)
            for key, value in PAPER_VQ.items():
                if key != knob:
                    others &= np.isclose(vq[key].astype(float), value)
            along = vq[others]
            comparisons += [
                (knob, v, vae, along[np.isclose(along[knob].astype(float), v)])
                for v in sorted(along[knob].dropna().unique())
                if not np.isclose(v, paper_value)
            ]
        if len(comparisons) >= 2 and not vae.empty:
            rows += _raw(dataset, label, comparisons, plan)
    return rows


def sensitivity(runs: pd.DataFrame, plan: Plan) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(KL table, VQ table): claim 1 at each KL weight and each VQ-VAE setting one knob from the centre, decided
    in the plan's one sensitivity family."""
    runs = plain_quantizer(runs)
    kl, vq = _decided(_kl_rows(runs, plan), _vq_rows(runs, plan), plan)
    return kl.rename(columns={"value": "kl_weight"}).drop(columns="knob"), vq


def kl_verdicts(runs: pd.DataFrame, plan: Plan) -> pd.DataFrame:
    """Claim 1 (VQ-VAE centre minus VAE, MLP probe) at each KL weight, per dataset and label setting.

    Columns: dataset, label_embedding, kl_weight, vae, vqvae (means over matched seeds), n, difference,
    low, high, p, p_sign_flip, p_tost, p_holm, p_tost_holm (the sensitivity family), declared, verdict, reason.
    """
    return sensitivity(runs, plan)[0]


def vq_axis_verdicts(runs: pd.DataFrame, plan: Plan) -> pd.DataFrame:
    """Claim 1 at each VQ-VAE setting one knob away from the paper's (K, D, beta), against the VAE at the
    default KL weight: knob (`centre` once, then num_codes, code_dim or beta), value, and `kl_verdicts`' columns."""
    return sensitivity(runs, plan)[1]


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
