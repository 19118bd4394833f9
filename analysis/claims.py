"""The paper's claims tested with the verdict rule of `analysis.verdicts`, and VQ-VAE minus VAE per dataset.

Only FINISHED runs count. Each side contributes one value per seed (configs repeated within a
seed, or several K/D/beta where the paper's are absent, averaged first); the two sides are
paired by seed and by every training setting they share.
"""
from __future__ import annotations

import math

import pandas as pd

from analysis.paper import CLAIMS, PAPER_DATASETS, Claim
from analysis.tables import (
    DATASET_NAMES, DIFFERENCE_MEASURES, MEASURES, MODEL_NAMES, dataset_rank, finished, format_difference, format_estimate, format_p,
    markdown, paired, per_seed, reference_description, reference_runs,
)
from analysis.verdicts import NOT_RESOLVED, Margins, PairedTest, decide, with_holm

# Knobs both models share: a VAE and a VQ-VAE run are compared only where these agree.
PAIR_KEYS = ["dataset", "label_embedding", "seed", "epochs", "batch_size", "lr", "batch_norm", "precision"]
TEST_COLUMNS = ["n", "difference", "low", "high", "p", "p_sign_flip", "p_holm", "methods_disagree"]
NO_TEST = PairedTest(0, math.nan, math.nan, math.nan, math.nan, math.nan)


def _test_fields(test: PairedTest) -> dict[str, object]:
    return {"n": test.n, "difference": test.mean, "low": test.low, "high": test.high, "p": test.p,
            "p_sign_flip": test.p_sign_flip, "p_holm": test.p_holm, "methods_disagree": test.methods_disagree}


def model_differences(runs: pd.DataFrame) -> pd.DataFrame:
    """VQ-VAE minus VAE per dataset and label setting, over matched seeds, for each probe and SSIM.

    Columns: dataset, label_embedding, metric, vae, vqvae (means over the matched seeds),
    n, difference, low, high (paired t 95%), p, p_sign_flip, p_holm (NaN: these are not
    claims, so not adjusted), methods_disagree, vq_runs, vae_runs, stand_in.
    """
    ref = reference_runs(finished(runs))
    rows = []
    groups = sorted(ref.groupby(["dataset", "label_embedding"], dropna=False), key=lambda kv: (dataset_rank(kv[0][0]), str(kv[0][1])))
    for (dataset, label), group in groups:
        vae, vq = group[group["model"] == "vae"], group[group["model"] == "vqvae"]
        if vae.empty or vq.empty:
            continue
        for measure in DIFFERENCE_MEASURES:
            test, pairs = paired(vae, vq, measure.column, PAIR_KEYS)
            rows.append({
                "dataset": dataset, "label_embedding": label, "metric": measure.column,
                "vae": pairs["a"].mean() if len(pairs) else math.nan, "vqvae": pairs["b"].mean() if len(pairs) else math.nan,
                **_test_fields(test),
                "vq_runs": reference_description(group, "vqvae"), "vae_runs": reference_description(group, "vae"),
                "stand_in": dataset not in PAPER_DATASETS,
            })
    columns = ["dataset", "label_embedding", "metric", "vae", "vqvae", *TEST_COLUMNS, "vq_runs", "vae_runs", "stand_in"]
    return pd.DataFrame(rows, columns=columns)


def _label_order(labels) -> list[str]:
    """The paper's setting ("add") first."""
    return sorted({str(v) for v in labels if not pd.isna(v)}, key=lambda v: (v != "add", v))


def claims(runs: pd.DataFrame, margins: Margins = Margins()) -> pd.DataFrame:
    """Each claim tested per label setting and part, Holm-adjusted across every test made here.

    Columns: claim, label_embedding, part (the dataset, or "mnist - cifar100" for a
    contrast between datasets), metric, n, difference, low, high, p, p_sign_flip, p_holm,
    methods_disagree, margin, verdict (supported / contradicted / equivalent / not
    resolved), reason (why, or "").
    """
    done = finished(runs)
    labels = _label_order(done["label_embedding"]) or ["none"]
    parts = []  # (row, test or None, claim)
    for claim in CLAIMS:
        for label in labels:
            for part, absent, test in _parts(claim, done, label):
                row = {"claim": claim.number, "label_embedding": label, "part": part, "metric": claim.metric,
                       "margin": margins.for_metric(claim.metric)}
                parts.append((row, None if absent else test, absent, claim))
    adjusted = iter(with_holm([test for _, test, _, _ in parts if test is not None]))
    rows = []
    for row, test, absent, claim in parts:
        if test is None:
            rows.append({**row, **_test_fields(NO_TEST), "verdict": NOT_RESOLVED, "reason": absent})
            continue
        test = next(adjusted)
        verdict, reason = decide(test, claim.expect, row["margin"])
        rows.append({**row, **_test_fields(test), "verdict": verdict, "reason": reason})
    columns = ["claim", "label_embedding", "part", "metric", *TEST_COLUMNS, "margin", "verdict", "reason"]
    return pd.DataFrame(rows, columns=columns)


def _parts(claim: Claim, done: pd.DataFrame, label: str) -> list[tuple[str, str, PairedTest]]:
    """(part, why it cannot be tested or "", the test) for each part of a claim."""
    if claim.compare == "datasets":
        first, second = claim.datasets
        absent = _absent(done, first, label, ("vqvae",)) or _absent(done, second, label, ("vqvae",))
        if absent:
            return [(f"{first} - {second}", absent, NO_TEST)]
        vq = reference_runs(done[(done["model"] == "vqvae") & (done["label_embedding"] == label)])
        test, _ = paired(vq[vq["dataset"] == second], vq[vq["dataset"] == first], claim.metric, ["seed"])
        return [(f"{first} - {second}", "", test)]
    found = []
    for dataset in claim.datasets:
        absent = _absent(done, dataset, label, ("vae", "vqvae"))
        if absent:
            found.append((dataset, absent, NO_TEST))
            continue
        here = reference_runs(done[(done["dataset"] == dataset) & (done["label_embedding"] == label)])
        test, _ = paired(here[here["model"] == "vae"], here[here["model"] == "vqvae"], claim.metric, PAIR_KEYS)
        found.append((dataset, "", test))
    return found


def _absent(done: pd.DataFrame, dataset: str, label: str, models: tuple[str, ...]) -> str:
    """Why a dataset part cannot be tested, or "" if it can."""
    if not (done["dataset"] == dataset).any():
        return f"no runs on {dataset}"
    here = done[(done["dataset"] == dataset) & (done["label_embedding"] == label)]
    if here.empty:
        return f"no runs on {dataset} with label_embedding={label}"
    missing = [m for m in models if not (here["model"] == m).any()]
    return f"no {' or '.join(MODEL_NAMES[m] for m in missing)} runs on {dataset} with label_embedding={label}" if missing else ""


def combined_verdict(parts: pd.DataFrame) -> str:
    """A claim over several parts: contradicted if any part is, supported (or equivalent) only if all are."""
    verdicts = set(parts["verdict"])
    if "contradicted" in verdicts:
        return "contradicted"
    return verdicts.pop() if len(verdicts) == 1 else NOT_RESOLVED


def claim_sentences(runs: pd.DataFrame, tested: pd.DataFrame) -> list[str]:
    """One plain sentence per claim: what the paper said and, per label setting, what these runs say."""
    done = finished(runs)
    sentences = []
    for claim in CLAIMS:
        mine = tested[tested["claim"] == claim.number]
        head = f"**Claim {claim.number}** ({claim.text}; paper: {claim.paper_evidence})"
        proxy = f" Proxy: {claim.proxy}." if claim.proxy else ""
        missing = sorted({r for r in mine["reason"] if _dataset_missing(r)})
        if missing and (claim.compare == "datasets" or len(missing) == len(claim.datasets)):
            levels = _levels(done, claim) if claim.compare == "datasets" else ""
            sentences.append(f"{head}: not resolved: {'; '.join(missing)}.{levels}{proxy}")
            continue
        lines = []
        for label, parts in mine.groupby("label_embedding", sort=False):
            where = f"with label_embedding={label}" + (" (the paper's label setting)" if label == "add" else "")
            verdict = combined_verdict(parts)
            absent = [r for r in parts["reason"] if r.startswith("no ")]
            if verdict == NOT_RESOLVED and absent:
                verdict = "not resolved: " + "; ".join(absent)
            measured = [p for p in parts.to_dict("records") if not p["reason"].startswith("no ")]
            details = "; ".join(_part_phrase(claim, p, with_verdict=len(parts) > 1) for p in measured)
            lines.append(f"{where}: {verdict}" + (f" ({details})" if details else ""))
        sentences.append(f"{head}: " + "; ".join(lines) + "." + proxy)
    return sentences


def _dataset_missing(reason: str) -> bool:
    return reason.startswith("no runs on ") and " with " not in reason


def _part_phrase(claim: Claim, part: dict[str, object], with_verdict: bool) -> str:
    measure = MEASURES[claim.metric]
    if claim.compare == "datasets":
        label = f"VQ-VAE {measure.title.split(' (')[0]}, {part['part']}"
    else:
        label = f"{DATASET_NAMES.get(str(part['part']), part['part'])}: VQ-VAE minus VAE {measure.title.split(' (')[0]}"
    value = format_difference(part["difference"], part["low"], part["high"], measure) + (" pts" if measure.percent else "")
    stats_text = f"n = {part['n']}"
    if part["n"] >= 2:
        stats_text += f", p = {format_p(part['p'])}, Holm p = {format_p(part['p_holm'])}, sign-flip p = {format_p(part['p_sign_flip'])}"
        stats_text += " †" if part["methods_disagree"] else ""
    why = part["verdict"] + (f": {part['reason']}" if part["reason"] else "") if with_verdict else part["reason"]
    return f"{label} = {value} ({stats_text})" + (f", {why}" if why else "")


def _levels(done: pd.DataFrame, claim: Claim) -> str:
    """Where a contrast between datasets cannot be tested, the level on the first dataset it would rest on."""
    first = claim.datasets[0]
    vq = reference_runs(done[(done["model"] == "vqvae") & (done["dataset"] == first)])
    if vq.empty or claim.metric not in vq:
        return ""
    measure = MEASURES[claim.metric]
    parts = []
    for label, group in vq.groupby("label_embedding", sort=True):
        est = per_seed(group, claim.metric)
        parts.append(f"{format_estimate(est, measure)}% (label_embedding={label}, n={est.n})")
    pixel_column = claim.metric.replace("/latent/", "/pixels/")
    pixels = done[done["dataset"] == first].get(pixel_column)
    pixel = f"; raw pixels {100 * pixels.mean():.2f}%" if pixels is not None and pixels.notna().any() else ""
    name = DATASET_NAMES.get(first, first)
    return f" For reference, the {measure.title.split(' (')[0]} on {name} VQ-VAE latents reaches {', '.join(parts)}{pixel}."


# --- markdown --------------------------------------------------------------------------

def differences_markdown(differences: pd.DataFrame) -> str:
    rows = []
    for (dataset, label), group in differences.groupby(["dataset", "label_embedding"], sort=False):
        by_metric = {r["metric"]: r for r in group.to_dict("records")}
        first = group.iloc[0]
        row = {"dataset": DATASET_NAMES.get(dataset, dataset) + (" (stand-in)" if first["stand_in"] else ""), "label emb.": label,
               "VQ-VAE runs": first["vq_runs"], "VAE runs": first["vae_runs"], "matched seeds": str(int(first["n"]))}
        for measure in DIFFERENCE_MEASURES:
            r = by_metric.get(measure.column)
            name = f"Δ {measure.title.replace(' (%)', ' (pts)')}"
            row[name] = (format_difference(r["difference"], r["low"], r["high"], measure) + f" (p {format_p(r['p'])})") if r else "—"
        rows.append(row)
    return markdown(pd.DataFrame(rows))


def claims_markdown(tested: pd.DataFrame) -> str:
    rows = []
    for row in tested.to_dict("records"):
        measure = MEASURES[row["metric"]]
        margin = f"±{100 * row['margin']:g} pts" if measure.percent else f"±{row['margin']:g}"
        rows.append({
            "claim": str(row["claim"]), "label emb.": row["label_embedding"], "part": row["part"], "metric": row["metric"],
            "n": str(row["n"]),
            "difference [95% t]": format_difference(row["difference"], row["low"], row["high"], measure) + (" pts" if measure.percent and not pd.isna(row["difference"]) else ""),
            "p": format_p(row["p"]), "Holm p": format_p(row["p_holm"]),
            "sign-flip p": format_p(row["p_sign_flip"]) + (" †" if row["methods_disagree"] else ""),
            "margin": margin, "verdict": _verdict_text(row["verdict"], row["reason"]),
        })
    return markdown(pd.DataFrame(rows))


def _verdict_text(verdict: str, reason: str) -> str:
    """'not resolved: no runs on cifar100' for an absence; 'not resolved (why)' otherwise."""
    if reason.startswith("no "):
        return f"not resolved: {reason}"
    return verdict + (f" ({reason})" if reason else "")

