"""Sensitivity plots (probe accuracy, SSIM, codebook usage against K, D and beta) and SSIM vs probe.

Figures are built with matplotlib's object API (no pyplot), so no GUI backend and no
global figure state: safe from a notebook, a test or a headless server.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.stats import t_interval
from analysis.tables import (
    DATASET_NAMES, DEFAULT_KL_WEIGHT, LINEAR, MLP, MODEL_NAMES, PERPLEXITY, PIXEL_COLUMNS, SSIM, USAGE, Measure, dataset_rank, finished,
    per_seed,
)

KNOBS = {"num_codes": "K (codebook size)", "code_dim": "D (code dimension)", "beta": "beta (commitment cost)", "kl_weight": "KL weight (VAE)"}
SENSITIVITY_MEASURES = (MLP, LINEAR, SSIM, USAGE, PERPLEXITY)
COLOURS = {"vae": "tab:blue", "vqvae": "tab:orange"}
MARKERS = {"none": "o", "add": "^"}
# Bands are clipped to what the metric can take: with 2 seeds a t interval is 12.7 standard errors wide.
VALID_RANGE = {MLP.column: (0.0, 1.0), LINEAR.column: (0.0, 1.0), USAGE.column: (0.0, 1.0), SSIM.column: (-1.0, 1.0)}
MAX_LINE_POINTS = 12  # beyond this many distinct values (a random search), plot the runs as points


def knob_values(runs: pd.DataFrame, knob: str) -> list[float]:
    """The distinct values of a knob among finished runs that have it (K and beta: VQ-VAE only)."""
    values = finished(runs)[knob].dropna()
    return sorted(float(v) for v in values.unique())


def sensitivity_figure(runs: pd.DataFrame, knob: str, path: Path) -> Path | None:
    """Probe accuracies, SSIM and codebook usage and perplexity against one knob, a panel per dataset;
    the VAE at the default KL weight and the raw-pixel probe as horizontal reference bands. None
    (nothing written) where the knob takes fewer than two values."""
    every = finished(runs)
    done = every[every[knob].notna()]
    if len(knob_values(done, knob)) < 2:
        return None
    datasets = sorted(done["dataset"].unique(), key=dataset_rank)
    measures = [m for m in SENSITIVITY_MEASURES if m.column in done and done[m.column].notna().any()]
    fig = Figure(figsize=(max(4.2 * len(datasets), 5.0), 3.0 * len(measures)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(measures), len(datasets), squeeze=False))
    for col, dataset in enumerate(datasets):
        for row, measure in enumerate(measures):
            ax = axes[row, col]
            _draw_lines(ax, done[done["dataset"] == dataset], knob, measure)
            _reference_bands(ax, every[every["dataset"] == dataset], knob, measure)
            ax.set_title(f"{DATASET_NAMES.get(dataset, dataset)}: {measure.title.split(' (')[0]}", fontsize=10)
            ax.set_xlabel(KNOBS[knob])
            ax.set_ylabel(measure.title)
            ax.grid(alpha=0.3)
            _scale_axis(ax, knob_values(done, knob), knob)
    legend_below(fig, axes.flat)
    fig.suptitle(f"Sensitivity to {KNOBS[knob]}\nline: mean over seeds, band: 95% t interval", fontsize=11)
    return save(fig, path)


def _draw_lines(ax, frame: pd.DataFrame, knob: str, measure: Measure) -> None:
    scale = 100 if measure.percent else 1
    for (model, label), group in _by_model_and_label(frame):
        group = group[group[measure.column].notna()] if measure.column in group else group.iloc[0:0]
        if group.empty:
            continue
        name = MODEL_NAMES.get(model, model) + (" + label emb." if label == "add" else "")
        style = {"color": COLOURS.get(model), "marker": MARKERS.get(label, "o"), "label": name}
        if group[knob].nunique() > MAX_LINE_POINTS:
            ax.scatter(group[knob].astype(float), group[measure.column] * scale, s=14, alpha=0.7, **style)
            continue
        xs, means, lows, highs = [], [], [], []
        for x, at in group.groupby(knob, sort=True):
            # other knobs of a grid are averaged within a seed first: the band is seed-to-seed variation
            est = t_interval(at.groupby("seed")[measure.column].mean())
            xs.append(float(x))
            means.append(est.mean * scale)
            lows.append(est.low * scale)
            highs.append(est.high * scale)
        ax.plot(xs, means, markersize=5, **style)
        low_bound, high_bound = VALID_RANGE.get(measure.column, (-np.inf, np.inf))
        ax.fill_between(xs, np.clip(lows, low_bound * scale, high_bound * scale), np.clip(highs, low_bound * scale, high_bound * scale),
                        color=style["color"], alpha=0.18, linewidth=0)


def _reference_bands(ax, runs: pd.DataFrame, knob: str, measure: Measure) -> None:
    """Horizontal mean ± 95% t bands: the VAE at the default KL weight (where the knob is not the VAE's own) and raw pixels."""
    scale = 100 if measure.percent else 1
    references = []
    vae = runs[(runs["model"] == "vae") & (runs["label_embedding"] == "none")]
    vae = vae[np.isclose(vae["kl_weight"].astype(float), DEFAULT_KL_WEIGHT)]
    if knob not in ("code_dim", "kl_weight") and not vae.empty:
        references.append((f"VAE, KL weight {DEFAULT_KL_WEIGHT:g}", COLOURS["vae"], per_seed(vae, measure.column)))
    pixel_column = PIXEL_COLUMNS.get(measure.short)
    if pixel_column is not None and pixel_column in runs:
        references.append(("raw pixels", "0.35", per_seed(runs, pixel_column)))
    for name, colour, est in references:
        if np.isnan(est.mean):
            continue
        ax.axhline(est.mean * scale, color=colour, linestyle="--", linewidth=1, label=name)
        if est.has_interval:
            ax.axhspan(est.low * scale, est.high * scale, color=colour, alpha=0.12, linewidth=0)


def _scale_axis(ax, values: list[float], knob: str) -> None:
    """Powers of two (K, D) on a log2 axis, KL weights on a log10 axis, with the values as ticks."""
    if knob in ("num_codes", "code_dim") and values and min(values) > 0 and max(values) / min(values) >= 8:
        ax.set_xscale("log", base=2)
    if knob == "kl_weight" and values and min(values) > 0 and max(values) / min(values) >= 10:
        ax.set_xscale("log")
    if len(values) <= MAX_LINE_POINTS:
        ax.set_xticks(values, [f"{v:g}" for v in values])
        ax.minorticks_off()


def ssim_vs_probe_figure(runs: pd.DataFrame, path: Path) -> Path | None:
    """One point per finished run: SSIM against MLP-probe accuracy, coloured by model, a panel per dataset."""
    done = finished(runs)
    if MLP.column not in done or SSIM.column not in done:
        return None
    done = done[done[MLP.column].notna() & done[SSIM.column].notna()]
    if done.empty:
        return None
    datasets = sorted(done["dataset"].unique(), key=dataset_rank)
    fig = Figure(figsize=(max(4.2 * len(datasets), 5.0), 3.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(datasets), squeeze=False)[0])
    for ax, dataset in zip(axes, datasets):
        here = done[done["dataset"] == dataset]
        for (model, label), group in _by_model_and_label(here):
            name = MODEL_NAMES.get(model, model) + (" + label emb." if label == "add" else "")
            ax.scatter(group[MLP.column] * 100, group[SSIM.column], color=COLOURS.get(model), marker=MARKERS.get(label, "o"),
                       s=22, alpha=0.75, label=name, edgecolors="none")
        ax.set_title(DATASET_NAMES.get(dataset, dataset), fontsize=10)
        ax.set_xlabel(MLP.title)
        ax.set_ylabel("SSIM")
        ax.grid(alpha=0.3)
    legend_below(fig, axes)
    fig.suptitle("Reconstruction (SSIM) against probe accuracy\none point per run", fontsize=11)
    return save(fig, path)


def _by_model_and_label(frame: pd.DataFrame):
    """VAE before VQ-VAE, without the label embedding before with it: a stable legend order."""
    groups = frame.groupby(["model", "label_embedding"])
    return sorted(groups, key=lambda kv: (str(kv[0][0]), kv[0][1] != "none", str(kv[0][1])))


def probe_vs_ssim_axes(ax, runs: pd.DataFrame, title: str, xlabel: str, pixels_label: str) -> None:
    """The raw-pixel MLP probe as a dashed line (where the runs have it), title, labels and grid of a probe-against-SSIM panel."""
    pixels = per_seed(runs, PIXEL_COLUMNS[MLP.short]) if PIXEL_COLUMNS[MLP.short] in runs else None
    if pixels is not None and not np.isnan(pixels.mean):
        ax.axhline(100 * pixels.mean, color="0.35", linestyle="--", linewidth=1, label=pixels_label)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(MLP.title)
    ax.grid(alpha=0.3)


def legend_below(fig: Figure, axes, max_columns: int = 4) -> None:
    """One legend under the panels, each label once, whichever panels drew it."""
    by_label = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            by_label.setdefault(label, handle)
    if by_label:
        fig.legend(by_label.values(), by_label.keys(), loc="outside lower center", ncols=min(len(by_label), max_columns), fontsize=9)


def save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
