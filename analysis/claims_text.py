"""How the tested claims read: the plain sentence per claim, the claims and differences tables, and the verdict words.

Kept apart from `analysis.claims`, which decides the verdicts: this module only formats what that one computed.
"""

from __future__ import annotations

import pandas as pd

from analysis.formatting import format_difference, format_p, markdown
from analysis.measures import DIFFERENCE_MEASURES, MEASURES, Measure
from analysis.plan import PRIMARY
from analysis.tables import DATASET_NAMES
from analysis.verdicts import NO_VERDICT, SEED_ONLY


def claim_sentences(tested: pd.DataFrame) -> list[str]:
    """One plain sentence per claim of the primary family: each part and what these runs support."""
    sentences = []
    primary = tested[tested["family"] == PRIMARY]
    for claim, parts in primary.groupby("claim", sort=True):
        measured = [p for p in parts.to_dict("records") if not p["reason"].startswith("no ")]
        missing = list(dict.fromkeys(f"{p['part']}: {p['reason']}" for p in parts.to_dict("records") if p["reason"].startswith("no ")))
        details = "; ".join(_part_phrase(p) for p in measured)
        text = f"**Claim {claim}**: " + (details or "nothing measured")
        if missing:
            text += f" (not resolved: {'; '.join(missing)})"
        sentences.append(text + ".")
    return sentences


def _part_phrase(part: dict[str, object]) -> str:
    measure = _measure(str(part["metric"]))
    name = dataset_title(str(part["part"]))
    if part["compare"] == "level":
        label = f"{name}: VQ-VAE {measure.title} minus {part['threshold']:g}"
    else:
        label = f"{name}: VQ-VAE minus VAE {measure.title.split(' (')[0]}"
    value = format_difference(part["difference"], part["low"], part["high"], measure) + (" pts" if measure.percent else "")
    stats_text = f"n = {part['n']}"
    if part["n"] >= 2:
        stats_text += f", Holm p = {format_p(part['p_holm'])}, sign-flip p = {format_p(part['p_sign_flip'])}" + (
            " †" if part["methods_disagree"] else ""
        )
    return f"{label} = {value} ({stats_text}): {verdict_text(part['verdict'], part['reason'])}"


def dataset_title(dataset: str) -> str:
    return DATASET_NAMES.get(dataset, dataset)


def _measure(metric: str):
    if metric in MEASURES:
        return MEASURES[metric]
    percent = metric.startswith("probe/") and metric.endswith("_acc")
    return Measure(metric, metric.replace("/", "_"), metric, percent, 2 if percent else 3)


def differences_markdown(differences: pd.DataFrame) -> str:
    rows = []
    for (dataset, label), group in differences.groupby(["dataset", "label_embedding"], sort=False):
        by_metric = {r["metric"]: r for r in group.to_dict("records")}
        first = group.iloc[0]
        row = {
            "dataset": DATASET_NAMES.get(dataset, dataset) + (" (stand-in)" if first["stand_in"] else ""),
            "label emb.": label,
            "VQ-VAE runs": first["vq_runs"],
            "VAE runs": first["vae_runs"],
            "matched seeds": str(int(first["n"])),
        }
        for measure in DIFFERENCE_MEASURES:
            r = by_metric.get(measure.column)
            name = f"Δ {measure.title.replace(' (%)', ' (pts)')} [95% paired t]"
            row[name] = (format_difference(r["difference"], r["low"], r["high"], measure) + f" (p {format_p(r['p'])})") if r else "—"
        rows.append(row)
    return markdown(pd.DataFrame(rows))


def claims_markdown(tested: pd.DataFrame, family: str = PRIMARY) -> str:
    rows = []
    for row in tested[tested["family"] == family].to_dict("records"):
        measure = _measure(row["metric"])
        pts = " pts" if measure.percent and not pd.isna(row["difference"]) else ""
        if pd.isna(row["margin"]):
            margin = "— (level)"
        else:
            margin = f"±{100 * row['margin']:g} pts" if measure.percent else f"±{row['margin']:g}"
        seed_only = format_difference(row["difference"], row["seed_low"], row["seed_high"], measure) + pts
        interval = (
            format_difference(row["difference"], row["low"], row["high"], measure) + pts + f" ({row['interval']})"
            if row["interval"] != SEED_ONLY
            else "seed-only: no per-image predictions"
            if row["n"]
            else "—"
        )
        what = {"level": f"VQ-VAE {measure.title} − {row['threshold']:g}", "pixels": f"VQ-VAE latents − raw pixels, {row['metric']}"}.get(
            row["compare"], f"VQ-VAE − VAE, {row['metric']}" + (" (VAE: its latent)" if "/codes/" in row["metric"] else "")
        )
        rows.append(
            {
                "claim": str(row["claim"]),
                "part": dataset_title(str(row["part"])),
                "tested": what,
                "n": str(row["n"]),
                "difference [95% seed-only t]": seed_only,
                "[95% seeds + test images]": interval,
                "p": format_p(row["p"]),
                "Holm p": format_p(row["p_holm"]),
                "sign-flip p": format_p(row["p_sign_flip"]) + (" †" if row["methods_disagree"] else ""),
                "margin": margin,
                "TOST Holm p": format_p(row["p_tost_holm"]),
                "verdict": verdict_text(row["verdict"], row["reason"]),
            }
        )
    return markdown(pd.DataFrame(rows))


def verdict_text(verdict: str, reason: str) -> str:
    """'not resolved: no runs on cifar100' for an absence; 'not resolved (why)' otherwise."""
    if reason.startswith("no "):
        return f"not resolved: {reason}"
    if verdict == NO_VERDICT:
        return f"{NO_VERDICT}: {reason}"
    return verdict + (f" ({reason})" if reason else "")
