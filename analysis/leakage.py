"""The paper's label embedding measured: how much probe accuracy comes from the label fed into the latent.

The paper added a learned embedding of the true label to the encoder output at train and test time;
runs with `label_embedding=add` beside `none` at matched seeds show what that leak is worth.
"""

from __future__ import annotations

import pandas as pd

from analysis.formatting import format_difference, format_estimate, format_int, format_value, markdown
from analysis.measures import MEASURES, MLP, PROBES
from analysis.selection import finished, group_keys
from analysis.stats import Estimate
from analysis.tables import DATASET_NAMES, MODEL_NAMES, paired, per_seed


def label_embedding_effect(runs: pd.DataFrame) -> pd.DataFrame:
    """Probe accuracies with and without the label embedding, per model/dataset/setting and probe.

    Columns: the group keys (without label_embedding), probe, none/add (mean), none_low,
    none_high, none_n, add_low, add_high, add_n, difference (add - none over seeds matched
    within the group, paired t interval), low, high, n, p (paired t, unadjusted).
    """
    done = finished(runs)
    keys = [k for k in group_keys(done) if k != "label_embedding"]
    rows = []
    for key, group in done.groupby(keys, dropna=False, sort=False):
        none, add = group[group["label_embedding"] == "none"], group[group["label_embedding"] == "add"]
        if none.empty or add.empty:
            continue
        for measure in PROBES:
            if measure.column not in group:
                continue
            a, b = per_seed(none, measure.column), per_seed(add, measure.column)
            test, _ = paired(none, add, measure.column, ["seed"])
            rows.append(
                {
                    **dict(zip(keys, key)),
                    "probe": measure.column,
                    "none": a.mean,
                    "none_low": a.low,
                    "none_high": a.high,
                    "none_n": a.n,
                    "add": b.mean,
                    "add_low": b.low,
                    "add_high": b.high,
                    "add_n": b.n,
                    "difference": test.mean,
                    "low": test.low,
                    "high": test.high,
                    "n": test.n,
                    "p": test.p,
                }
            )
    out = pd.DataFrame(
        rows,
        columns=[
            *keys,
            "probe",
            "none",
            "none_low",
            "none_high",
            "none_n",
            "add",
            "add_low",
            "add_high",
            "add_n",
            "difference",
            "low",
            "high",
            "n",
            "p",
        ],
    )
    for key in keys:
        out[key] = out[key].astype(done[key].dtype)
    return out


def leakage_sentences(effect: pd.DataFrame) -> list[str]:
    """What the add-minus-none difference of the MLP probe says about the leak, per row."""
    sentences = []
    for row in effect[effect["probe"] == MLP.column].to_dict("records"):
        who = f"{MODEL_NAMES[row['model']]} on {DATASET_NAMES.get(row['dataset'], row['dataset'])}{_setting_suffix(row)}"
        value = format_difference(row["difference"], row["low"], row["high"], MLP)
        est = Estimate(row["difference"], row["low"], row["high"], int(row["n"]))
        side = est.excludes_zero()
        if est.n == 0:
            text = "no seed has runs with and without the embedding, so the difference is not measured"
        elif est.n == 1:
            text = f"adding the label embedding changes the MLP-probe accuracy by {value} points on one seed, with no interval: too few runs to say how much comes from the leak"
        elif side > 0:
            text = (
                f"adding the label embedding raises the MLP-probe accuracy by {value} points over {est.n} seeds: that much of the "
                "accuracy comes from the label fed into the probed latent, not from the image, so accuracies measured with the "
                "embedding (the paper's) overstate what the latents learn about the class"
            )
        elif side < 0:
            text = f"adding the label embedding lowers the MLP-probe accuracy by {value} points over {est.n} seeds: the leaked label does not reach the probe here"
        else:
            text = f"adding the label embedding changes the MLP-probe accuracy by {value} points over {est.n} seeds: no leak beyond seed-to-seed variation"
        sentences.append(f"{who}: {text}.")
    return sentences


def _setting_suffix(row: dict[str, object]) -> str:
    parts = [
        f"{name}={format_value(row[key])}"
        for key, name in (("num_codes", "K"), ("code_dim", "D"), ("beta", "beta"))
        if key in row and not pd.isna(row[key])
    ]
    return f" ({', '.join(parts)})" if parts else ""


# --- representative runs ---------------------------------------------------------------


def label_effect_markdown(effect: pd.DataFrame) -> str:
    rows = []
    for row in effect.to_dict("records"):
        measure = MEASURES[row["probe"]]
        none = Estimate(row["none"], row["none_low"], row["none_high"], int(row["none_n"]))
        add = Estimate(row["add"], row["add_low"], row["add_high"], int(row["add_n"]))
        rows.append(
            {
                "model": MODEL_NAMES[row["model"]],
                "dataset": DATASET_NAMES.get(row["dataset"], row["dataset"]),
                "K": format_int(row.get("num_codes")),
                "D": format_int(row.get("code_dim")),
                "beta": format_value(row.get("beta")),
                "probe": measure.title.replace(" (%)", ""),
                "none (%) mean ± 95% t": f"{format_estimate(none, measure)} (n={none.n})",
                "add (%) mean ± 95% t": f"{format_estimate(add, measure)} (n={add.n})",
                "add − none [95% paired t] (pts)": format_difference(row["difference"], row["low"], row["high"], measure),
                "matched seeds": str(int(row["n"])),
            }
        )
    return markdown(pd.DataFrame(rows))
