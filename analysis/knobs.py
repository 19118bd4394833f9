"""Does the answer depend on the knobs? Claim 1 at each VAE KL weight, and the accuracy-for-reconstruction frontier.

The paper compared one VAE with one VQ-VAE. Its VAE's KL weight is not stated, and it decides
how far the VAE's latents are pulled toward the prior, so claim 1 (VAE latents probe better) is
re-tested here against the VQ-VAE at the paper's K, D and beta, once per KL weight, with the
verdict rule of `analysis.verdicts` (Holm across the weights of one dataset and label setting).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.plan import Plan
from analysis.selection import finished, plain_quantizer
from analysis.tables import SHARED_KNOBS, dataset_rank, paired
from analysis.verdicts import PairedTest, decide, holm_family, with_tost
from benchmark.config import DEFAULT_KL_WEIGHT, PAPER_VQ


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
